"""The MultiVectorEncoder interface over colpali-engine models (ColPali, ColQwen2, ColQwen2.5, ColSmol).

Loading goes through :func:`lir_robust.patches.colpali.load_colpali` (the only code that imports colpali-engine):
pages through ``processor.process_images``, queries through ``processor.process_queries``; the model's output rows
are kept where the processor's attention mask is set (the models zero the others).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from lir_robust.encoders.base import MultiVectorEncoder
from lir_robust.encoders.fingerprint import model_fingerprint

__all__ = ["ColpaliEncoder", "checkpoint_fingerprint"]


def checkpoint_fingerprint(name_or_path: str) -> str:
    """Content fingerprint of a colpali-engine checkpoint (:func:`lir_robust.encoders.fingerprint.model_fingerprint`): every
    file of a local folder by content, a Hub id by revision; for a LoRA adapter, its base model's too."""
    fingerprint = model_fingerprint(name_or_path)
    adapter_config = Path(name_or_path) / "adapter_config.json"
    if adapter_config.is_file():
        try:
            base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        except ValueError:
            base = None
        if base:
            fingerprint += "+base:" + model_fingerprint(base)
    return fingerprint


class ColpaliEncoder(MultiVectorEncoder):
    """A colpali-engine model and its (patched) processor."""

    def __init__(self, model: Any, processor: Any, name: str = "colpali", batch_size: int = 4, show_progress: bool = True):
        super().__init__(batch_size=batch_size, show_progress=show_progress)
        self.model, self.processor, self.name = model.eval(), processor, name
        self._fingerprint = checkpoint_fingerprint(name)

    @classmethod
    def from_spec(cls, name_or_path: str, device: str | None = None, **kwargs: Any) -> "ColpaliEncoder":
        from lir_robust.patches.colpali import load_colpali

        model, processor = load_colpali(name_or_path, device=device)
        return cls(model, processor, name=str(name_or_path), **kwargs)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "model": self.name,
            "model_class": type(self.model).__name__,
            "weights": self._fingerprint,
            "dtype": str(next(self.model.parameters()).dtype),
        }

    @property
    def modality(self) -> str:
        return "image"

    @property
    def pooling(self):
        return getattr(self.processor, "pooling_head", None)

    def _sizes(self, items: Sequence[Any], is_query: bool) -> list[int]:
        if is_query:
            return [len(str(text)) for text in items]
        return [image.size[0] * image.size[1] for image in items]

    def _encode_batch(self, items: Sequence[Any], is_query: bool) -> list[torch.Tensor]:
        if is_query:
            batch = self.processor.process_queries(list(items))
        else:
            if any(isinstance(item, str) for item in items):
                raise TypeError("colpali-engine models encode page images; this data set holds text documents")
            batch = self.processor.process_images([image.convert("RGB") for image in items])
        device = next(self.model.parameters()).device
        batch = {key: value.to(device) for key, value in batch.items()}
        vectors = self.model(**batch)  # [B, L, D], zero at padded positions
        mask = batch["attention_mask"].to(torch.bool)
        return [vectors[row][mask[row]] for row in range(vectors.shape[0])]
