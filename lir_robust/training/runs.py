"""A fine-tuning run's folder: its training state and checkpoints (saved atomically), what it holds compared with
the run about to start, its log, and the fine-tuned model it ends with.

    runs/finetune-topk/
        config.json         the options and what the run found out (compared when the same command runs again)
        log.jsonl           one record per logged step (JsonlLog), truncated to the checkpoint on resume
        checkpoints/step-N  accelerator.save_state, renamed into place once complete (save_state_atomic)
        model/              the fine-tuned model (save_checkpoint), pylate/ beside it for PyLate-format text runs
        summary.json        written last: its presence marks a finished run
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from torch import nn

from lir_robust.core.files import atomic_folder, replace_folder
from lir_robust.scoring.pooling import PoolingHead, save_pooling_json

__all__ = [
    "PYLATE_DIR",
    "TrainState",
    "CHECKPOINT_LAST_FILE",
    "is_complete_checkpoint",
    "latest_checkpoint",
    "atomic_folder",
    "save_state_atomic",
    "RESULT_NEUTRAL_KEYS",
    "RUN_FILES",
    "config_differences",
    "RunFolder",
    "inspect_run_folder",
    "clear_run_folder",
    "truncate_log",
    "save_checkpoint",
    "JsonlLog",
    "peak_memory_mb",
    "package_environment",
]

PYLATE_DIR = "pylate"  # a text run's PyLate model folder, beside its model/ checkpoint


class TrainState:
    """Where the loop is: optimizer steps done, epoch, micro-batches done in that epoch (saved with save_state)."""

    def __init__(self):
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.epoch, self.batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])


CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
# accelerator.save_state writes this file last (the registered TrainState); a folder without it is unfinished.
CHECKPOINT_LAST_FILE = "custom_checkpoint_0.pkl"


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """True for a ``step-N`` folder that :func:`save_state_atomic` finished (renamed into place, state file inside)."""
    folder = Path(folder)
    return bool(CHECKPOINT_PATTERN.match(folder.name)) and folder.is_dir() and (folder / CHECKPOINT_LAST_FILE).is_file()


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete ``checkpoints/step-N`` folder with the largest N under ``output_dir`` (None if there is none).

    Unfinished saves (``.step-N.partial`` folders of a run killed while saving, or a ``step-N`` folder without its
    state file, left by versions that saved in place) are ignored."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    found = [(int(CHECKPOINT_PATTERN.match(path.name).group(1)), path) for path in folder.iterdir() if is_complete_checkpoint(path)]
    return max(found)[1] if found else None


def save_state_atomic(accelerator, output_dir: str | os.PathLike, step: int) -> Path:
    """``accelerator.save_state`` into ``output_dir/checkpoints/.step-N.partial``, renamed to ``step-N`` once every
    process has written its part: a run killed while saving leaves no ``step-N`` folder to resume from by mistake.

    Call it on every process (each writes its own RNG state into the same folder)."""
    import shutil

    checkpoints = Path(output_dir) / "checkpoints"
    final, temporary = checkpoints / f"step-{step}", checkpoints / f".step-{step}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        checkpoints.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_folder(temporary, final)
    accelerator.wait_for_everyone()
    return final


# Options that never change a run's numbers: a rerun that differs only in these continues (or reports) the same run.
# pooling / pool_k / pool_tau are folded into "head", which is compared.
RESULT_NEUTRAL_KEYS = frozenset(
    {"output_dir", "log_every", "eval_every", "save_every", "resume", "overwrite", "stop_after_steps", "debug",
     "pooling", "pool_k", "pool_tau"}
)
# What a fine-tuning run writes into its folder (removed by --overwrite).
RUN_FILES = ("checkpoints", "model", PYLATE_DIR, "log.jsonl", "summary.json", "config.json", "tensorboard",
             "adversarial-passages")  # lir_robust.training.adversarial_passages.PASSAGE_FOLDER


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def config_differences(saved: dict[str, Any], current: dict[str, Any], keys: Iterable[str] | None = None,
                       ignore: Iterable[str] = RESULT_NEUTRAL_KEYS) -> list[str]:
    """Sorted keys whose values differ between two run configurations (compared as JSON; a key missing on one side
    differs). ``keys`` limits the comparison (default: every key of both); keys in ``ignore`` are skipped."""
    saved, current = _as_json(saved), _as_json(current)
    names = set(saved) | set(current) if keys is None else set(keys)
    missing = object()
    return sorted(
        key for key in names - set(ignore) if saved.get(key, missing) != current.get(key, missing)
    )


@dataclass
class RunFolder:
    """What an output folder holds, compared with the run about to start (see :func:`inspect_run_folder`).

    ``status``: ``"new"`` (nothing of ours), ``"started"`` (same configuration, no checkpoint yet: start over),
    ``"resumable"`` (same configuration, ``checkpoint`` to continue from), ``"finished"`` (same configuration,
    summary.json written), ``"other-config"`` (``differences`` lists the keys), ``"unknown-files"`` (run files
    without config.json)."""

    status: str
    checkpoint: Path | None = None
    differences: list[str] = field(default_factory=list)


def inspect_run_folder(output_dir: str | os.PathLike, requested: dict[str, Any]) -> RunFolder:
    """Compare ``output_dir`` with the options of the run about to start (reads file names and config.json only).

    Only the keys of ``requested`` are compared (derived values such as the training-pair count are compared again
    once the data is loaded, with :func:`config_differences`), ignoring :data:`RESULT_NEUTRAL_KEYS`."""
    output = Path(output_dir)
    present = [name for name in RUN_FILES if (output / name).exists()]
    if not present:
        return RunFolder("new")
    if not (output / "config.json").is_file():
        return RunFolder("unknown-files")
    try:
        saved = json.loads((output / "config.json").read_text())
    except ValueError:
        return RunFolder("unknown-files")
    differences = config_differences(saved, requested, keys=requested)
    if differences:
        return RunFolder("other-config", differences=differences)
    if (output / "summary.json").is_file():
        return RunFolder("finished")
    checkpoint = latest_checkpoint(output)
    return RunFolder("resumable", checkpoint=checkpoint) if checkpoint is not None else RunFolder("started")


def clear_run_folder(output_dir: str | os.PathLike) -> None:
    """Remove what a fine-tuning run wrote into ``output_dir`` (:data:`RUN_FILES`); other files are left alone."""
    import shutil

    output = Path(output_dir)
    for name in RUN_FILES:
        path = output / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def truncate_log(path: str | os.PathLike, step: int) -> None:
    """Keep the records of ``log.jsonl`` up to optimizer step ``step`` (not the final record), atomically: a run
    resumed from the checkpoint of step N logs steps N+1... once, as an uninterrupted run does."""
    from lir_robust.core.files import write_text_atomic

    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step and not record.get("final"):
            kept.append(json.dumps(record))
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def save_checkpoint(model: nn.Module, processor, directory: str | os.PathLike, head: PoolingHead, config: dict[str, Any]) -> Path:
    """Write the fine-tuned model so that the eval side reloads all of it from ``directory``.

    TextColBERT: its own ``save_pretrained`` (adapter/, projection, tokenizer/, colbert_config.json, pooling.json);
    and, when the model came from a PyLate model or ``config["save_pylate"]`` is set, a PyLate model folder (LoRA
    merged, pooling.json, card) in ``PYLATE_DIR`` beside ``directory`` (see lir_robust.patches.pylate.save_pylate).
    colpali-engine model: the PEFT adapter (adapter_config.json + weights, loadable by ``load_colpali(directory)``),
    the processor and pooling.json ``{"head", "spec", "training"}``.
    """
    directory = Path(directory)
    if hasattr(model, "colbert_config"):
        model.pooling = head
        saved = model.save_pretrained(directory, training_config=config)
        if config.get("save_pylate") or model.colbert_config.base_format == "pylate":
            from lir_robust.patches.pylate import save_pylate

            save_pylate(model, directory.parent / PYLATE_DIR, training_config=config)
        return saved
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    processor.save_pretrained(str(directory))
    save_pooling_json(directory, head, config)
    return directory


class JsonlLog:
    """Append one JSON object per line to a file (written by the main process only), flushed every record."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")



def peak_memory_mb() -> float:
    """This process's peak resident memory (ru_maxrss) in MiB."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def package_environment() -> dict[str, str]:
    """This process's environment with this copy of lir_robust first on PYTHONPATH, so that a subprocess running
    ``-m lir_robust.commands.finetune`` fine-tunes with the same package (installed or a checkout)."""
    import lir_robust

    package_parent = str(Path(lir_robust.__file__).resolve().parents[1])
    paths = [package_parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
