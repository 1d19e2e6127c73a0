"""The MultiVectorEncoder interface over :class:`~lir_robust.encoders.text_colbert.TextColBERT`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from lir_robust.encoders.base import MultiVectorEncoder
from lir_robust.encoders.text_colbert import CONFIG_NAME, TextColBERT

__all__ = ["TextEncoder", "load_text_checkpoint"]


def load_text_checkpoint(directory: str | os.PathLike) -> TextColBERT:
    """A fine-tuned TextColBERT checkpoint folder (colbert_config.json); one on a PyLate model (``base_format:
    "pylate"``) gets that model, read by lir_robust.patches.pylate, as its backbone, tokenizer and projection."""
    config_file = Path(directory) / CONFIG_NAME
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if config.get("base_format") == "pylate":
        from lir_robust.patches.pylate import load_pylate

        return TextColBERT.from_pretrained(directory, base=load_pylate(config["base_model"]))
    return TextColBERT.from_pretrained(directory)


class TextEncoder(MultiVectorEncoder):
    """Text ColBERT (markers, punctuation masking, projection, L2 norm live in TextColBERT).

    ``model``: a TextColBERT, or build one with :meth:`from_spec` ("minilm", a base model folder, a fine-tuned
    checkpoint folder with colbert_config.json, or a PyLate model folder / Hub id).
    """

    def __init__(self, model: TextColBERT, batch_size: int = 32, show_progress: bool = True, device: str | None = None):
        super().__init__(batch_size=batch_size, show_progress=show_progress)
        self.model = model.eval()
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model.to(self.device)

    @classmethod
    def from_spec(cls, spec: str | None = None, **kwargs: Any) -> "TextEncoder":
        """``None`` / "minilm": MiniLM-L6 (raw 384-d); a folder with colbert_config.json: a fine-tuned checkpoint;
        a PyLate model folder or Hub id: that model (its prefixes, lengths, query expansion and skiplist; its
        pooling.json head); another folder or name: a base Hugging Face encoder with the identity projection."""
        if spec is not None and (Path(spec) / CONFIG_NAME).is_file():
            return cls(load_text_checkpoint(spec), **kwargs)
        from lir_robust.core.huggingface import is_pylate_model
        from lir_robust.patches.pylate import load_pylate

        if spec is not None and is_pylate_model(spec):
            return cls(load_pylate(spec), **kwargs)
        return cls(TextColBERT.from_base(spec), **kwargs)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.model.config)

    @property
    def pooling(self):
        return self.model.pooling

    def _sizes(self, items: Sequence[str], is_query: bool) -> list[int]:
        return [len(ids) for ids in self.model.tokenizer(list(items), truncation=False)["input_ids"]]

    def _encode_batch(self, items: Sequence[str], is_query: bool) -> list[torch.Tensor]:
        batch = self.model.tokenize(list(items), is_query)
        vectors, mask = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device), is_query)
        return [vectors[row][mask[row]] for row in range(vectors.shape[0])]
