"""Tiny, randomly initialised colpali-engine models and processors, built without any download.

For tests only: the weights are random, the tokenizer is an in-memory word-level vocabulary (whitespace-split plain
English words plus Qwen's / PaliGemma's special tokens; unknown words become ``[UNK]``), the image processors make
images of at most a few dozen patches. Building one takes well under a second on a CPU.

Import from a test (``tests/conftest.py`` puts this folder on ``sys.path``)::

    from tiny_colpali import build_tiny_colqwen2, save_tiny_colqwen2, tiny_images

or use the fixtures ``tiny_colqwen2`` / ``tiny_colqwen2_dir`` from ``tests/conftest.py``.

Every builder uses ``attn_implementation="eager"``: with sdpa on CPU, left-padded rows of a tiny random ColQwen2
came out NaN.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

__all__ = [
    "QWEN_SPECIAL_TOKENS",
    "PALIGEMMA_SPECIAL_TOKENS",
    "WORDS",
    "build_word_level_tokenizer",
    "build_tiny_colqwen2",
    "save_tiny_colqwen2",
    "build_tiny_colpali",
    "save_tiny_colpali",
    "tiny_images",
]

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
PALIGEMMA_SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<image>", "<unk>"]

# Words that tests' queries and colpali-engine's prompts use; anything else maps to [UNK].
WORDS = """
a an the of and or in on at to for from by with without is are was were be been it this that these those what which
who whom whose where when why how do does did not no yes can could will would should may might must all any some each
every many much more most few less least one two three four five six seven eight nine ten first second last new old
big small large long short high low good bad best worst image images page pages document documents picture figure
table chart graph text query queries answer question user assistant describe describe. image. question: answer:
show shows shown find found search retrieve retrieval score scores patch patches token tokens model models data
paper report reports year years revenue profit growth rate percent price cost sales market energy power water solar
wind battery cell cells protein gene genes disease patient patients drug dose blood heart brain lung cancer study
results method methods value values total average mean max min number numbers list lists name names date dates
red green blue black white gray cat dog car house tree road city country world map time day week month
<|endoftext|>describe question? answer? what's who's ? . , : ; ! - ( ) [ ] 0 1 2 3 4 5 6 7 8 9 10 100 2020 2021 2022
2023 2024 2025 2026 hello world foo bar baz lorem ipsum dolor sit amet
""".split()


def build_word_level_tokenizer(special_tokens: list[str], pad_token: str, eos_token: str, unk_token: str = "[UNK]"):
    """A ``PreTrainedTokenizerFast`` over ``WORDS`` (whitespace split) with ``special_tokens`` kept whole.

    Ids: ``[UNK]`` 0, then the special tokens in order, then the words.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocabulary: dict[str, int] = {}
    for token in [unk_token, *special_tokens, *WORDS]:
        vocabulary.setdefault(token, len(vocabulary))
    backend = Tokenizer(WordLevel(vocab=vocabulary, unk_token=unk_token))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=unk_token,
        pad_token=pad_token,
        eos_token=eos_token,
        additional_special_tokens=[token for token in special_tokens if token not in (pad_token, eos_token, unk_token)],
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    return tokenizer


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def build_tiny_colqwen2(seed: int = 0, hidden_size: int = 64, num_layers: int = 2):
    """A random ColQwen2 (64-wide 2-layer text model, 1-deep vision tower) and its ColQwen2Processor.

    Returns ``(model, processor)``; the model is in float32, eval mode, eager attention. Embeddings are ``[B, L, 128]``.
    """
    from colpali_engine.models import ColQwen2, ColQwen2Processor
    from transformers import Qwen2VLConfig, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    _seed(seed)
    tokenizer = build_word_level_tokenizer(QWEN_SPECIAL_TOKENS, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    num_heads = 4
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=1,
            embed_dim=32,
            hidden_size=hidden_size,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        attn_implementation="eager",
    )
    config._attn_implementation = "eager"
    model = ColQwen2(config).float().eval()
    processor = ColQwen2Processor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )
    return model, processor


def _save(build, directory: str | os.PathLike, seed: int) -> Path:
    """``save_pretrained`` a built model and its processor into ``directory``; loadable by local path."""
    directory = Path(directory)
    model, processor = build(seed=seed)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def save_tiny_colqwen2(directory: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny ColQwen2 and its processor saved into ``directory``."""
    return _save(build_tiny_colqwen2, directory, seed)


def build_tiny_colpali(seed: int = 0, hidden_size: int = 64, num_layers: int = 2, image_size: int = 56):
    """A random ColPali (PaliGemma: 64-wide 2-layer Gemma, 1-layer SigLIP on 56 px images -> 16 patches).

    Returns ``(model, processor)`` (float32, eval mode, eager attention).
    """
    from colpali_engine.models import ColPali, ColPaliProcessor
    from transformers import PaliGemmaConfig, SiglipImageProcessor

    _seed(seed)
    tokenizer = build_word_level_tokenizer(PALIGEMMA_SPECIAL_TOKENS, pad_token="<pad>", eos_token="<eos>")
    tokenizer.bos_token = "<bos>"
    patch_size = 14
    num_patches = (image_size // patch_size) ** 2
    config = PaliGemmaConfig(
        text_config=dict(
            model_type="gemma",
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=hidden_size // 4,
            max_position_embeddings=1024,
            pad_token_id=tokenizer.convert_tokens_to_ids("<pad>"),
            bos_token_id=tokenizer.convert_tokens_to_ids("<bos>"),
            eos_token_id=tokenizer.convert_tokens_to_ids("<eos>"),
        ),
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=hidden_size,
        ),
        projection_dim=hidden_size,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        attn_implementation="eager",
    )
    config._attn_implementation = "eager"
    config.text_config.num_image_tokens = num_patches
    model = ColPali(config).float().eval()
    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    image_processor.image_seq_length = num_patches
    processor = ColPaliProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return model, processor


def save_tiny_colpali(directory: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny ColPali and its processor saved into ``directory``."""
    return _save(build_tiny_colpali, directory, seed)


def tiny_images(count: int, size: tuple[int, int] = (64, 56), seed: int = 0):
    """``count`` small RGB PIL images of random coloured blocks (deterministic in ``seed``)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    images = []
    for _ in range(count):
        image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = rng.randrange(size[0] // 2), rng.randrange(size[1] // 2)
            x1, y1 = x0 + rng.randrange(4, size[0] // 2), y0 + rng.randrange(4, size[1] // 2)
            draw.rectangle([x0, y0, x1, y1], fill=tuple(rng.randrange(256) for _ in range(3)))
        images.append(image)
    return images
