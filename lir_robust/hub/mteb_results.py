"""MTEB results measured on the checkpoint (the ``--out`` folder of ``lir-robust mteb``), as publishing uses them:
found beside the checkpoint (``<run>/mteb``) or named (``--mteb FOLDER``), checked to be measured on its weights,
mteb's own result files copied into the uploaded folder under ``mteb/``, and a labelled table in the card's text
(task, head, condition, nDCG@10). They are never model-index entries: the model-index holds the checkpoint's sweep.

    results = load_mteb_results("runs/finetune-topk/mteb")     # HubError (one line) for a folder that is not one
    check_mteb_match(results, checkpoint)                       # HubError when measured on other weights
    copy_mteb_results(results, staging, repo_id)                # staging/mteb/results/..., staging/mteb/summary.json
    mteb_section(results)                                       # the card's Markdown section
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lir_robust.core.files import is_finite_number, write_json_atomic
from lir_robust.core.huggingface import HubError
from lir_robust.hub.checkpoint import Checkpoint
from lir_robust.hub.sweep_results import check_measured_on
from lir_robust.reporting.format import number, table_header, table_row

__all__ = ["MTEB_DIR", "MtebResults", "find_mteb_results", "load_mteb_results", "check_mteb_match",
           "copy_mteb_results", "mteb_section"]


MTEB_DIR = "mteb"  # beside the checkpoint (what `make mteb OUT=<run>` writes) and in the uploaded folder
SUMMARY_FILE = "summary.json"
_FIX = "pass the --out folder of `lir-robust mteb` (its summary.json and results/), or --mteb none"


@dataclass(frozen=True)
class MtebResults:
    """A ``lir-robust mteb`` output folder: its summary and one row per result file (task, head, condition, nDCG@10,
    file relative to the folder)."""

    folder: Path
    summary: dict[str, Any]
    rows: list[dict[str, Any]]


def find_mteb_results(checkpoint: Checkpoint) -> Path | None:
    """``<run>/mteb`` when it holds a ``lir-robust mteb`` summary, else None."""
    folder = checkpoint.run_dir / MTEB_DIR
    return folder if (folder / SUMMARY_FILE).is_file() else None


def _score(path: Path, folder: Path) -> float:
    """nDCG@10 of mteb's result file ``path`` (its ``scores.test[0].ndcg_at_10``)."""
    try:
        written = json.loads(path.read_text())
        value = written["scores"]["test"][0]["ndcg_at_10"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        raise HubError(f"--mteb {folder}: {path.relative_to(folder)} is not an mteb result file with a test nDCG@10; "
                       + _FIX) from None
    if not is_finite_number(value):
        raise HubError(f"--mteb {folder}: {path.relative_to(folder)} holds nDCG@10 {value!r}, not a number; " + _FIX)
    return float(value)


def load_mteb_results(folder: str | os.PathLike) -> MtebResults:
    """The folder's summary and rows, each row's nDCG@10 read from mteb's own result file; HubError (one line) for a
    folder that is missing, not written by ``lir-robust mteb``, or whose result files are missing or damaged."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise HubError(f"--mteb {folder}: no such folder; " + _FIX)
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except OSError:
        raise HubError(f"--mteb {folder}: no {SUMMARY_FILE}; " + _FIX) from None
    except ValueError as error:
        raise HubError(f"--mteb {folder}: {SUMMARY_FILE} is not JSON ({error}); " + _FIX) from None
    runs = summary.get("runs") if isinstance(summary, dict) else None
    if not isinstance(runs, list) or not runs or not all(isinstance(run, dict) and {"task", "head", "condition", "file"}
                                                         <= set(run) for run in runs):
        raise HubError(f"--mteb {folder}: {SUMMARY_FILE} lists no runs (task, head, condition, file; an older "
                       "`lir-robust mteb` wrote none: rerun it); " + _FIX)
    rows = []
    for run in runs:
        path = (folder / str(run["file"])).resolve()
        if folder.resolve() not in path.parents or not path.is_file():
            raise HubError(f"--mteb {folder}: result file {run['file']} is missing; " + _FIX)
        rows.append({"task": str(run["task"]), "head": str(run["head"]), "condition": str(run["condition"]),
                     "ndcg@10": _score(path, folder.resolve()), "file": Path(str(run["file"])).as_posix()})
    return MtebResults(folder, summary, rows)


def check_mteb_match(results: MtebResults, checkpoint: Checkpoint) -> None:
    """HubError when the results were measured on other weights than the checkpoint's."""
    check_measured_on(results.summary, checkpoint, results.folder, f"--mteb {results.folder}",
                      f"rerun `lir-robust mteb --model {checkpoint.run_dir} ...` or pass --mteb none")


def copy_mteb_results(results: MtebResults, target: Path, repo_id: str) -> Path:
    """mteb's files of every run (its result JSON, and the model_meta.json / run_settings.jsonl beside it) into
    ``target/mteb`` at the same relative paths, with a summary naming the model by ``repo_id`` (no local paths)."""
    out = target / MTEB_DIR
    for folder in sorted({Path(row["file"]).parent for row in results.rows}):
        for path in sorted((results.folder / folder).iterdir()):
            if path.is_file() and path.suffix in (".json", ".jsonl") and ".tmp-" not in path.name:
                (out / folder).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, out / folder / path.name)
    summary = results.summary
    public = {"model": repo_id, "mteb_version": summary.get("mteb_version"), "heads": summary.get("heads"),
              "injection": {key: value for key, value in (summary.get("injection") or {}).items() if key != "ndcg@10"},
              "runs": [{key: row[key] for key in ("task", "head", "condition", "ndcg@10", "file")} for row in results.rows]}
    write_json_atomic(out / SUMMARY_FILE, public, indent=2)
    return out


def _condition(condition: str) -> str:
    if condition == "clean":
        return "clean"
    kind, _, k = condition.partition(":")
    return f"{kind}, K = {k}"


def mteb_section(results: MtebResults) -> str:
    """The card's MTEB section: one row per result file, labelled as this checkpoint's mteb runs."""
    version = results.summary.get("mteb_version") or "?"
    lines = [
        "## MTEB", "",
        f"Measured on this checkpoint with `lir-robust mteb` (mteb {version}, scoring with the named pooling head); "
        f"mteb's own result files are under `{MTEB_DIR}/`, listed in [{MTEB_DIR}/{SUMMARY_FILE}]({MTEB_DIR}/{SUMMARY_FILE}). Condition *clean* is the task as it is; "
        "*KIND, K = N* is the length sweep's injection condition inside mteb (N patches of that kind appended to the "
        "documents, the sweep's own patches and targets). These numbers are in the text only; the model-index holds "
        "the sweep's.", "",
        *table_header(["task", "head", "condition", "nDCG@10"]),
    ]
    lines += [table_row([row["task"], row["head"], _condition(row["condition"]), number(row["ndcg@10"], digits=4)])
              for row in results.rows]
    return "\n".join(lines + [""])
