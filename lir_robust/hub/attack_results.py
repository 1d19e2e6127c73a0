"""Text-attack results measured on the checkpoint (``lir-robust attack`` runs), as publishing uses them: found beside
the checkpoint (``<run>/attack``, what ``make attack-one OUT=<run>`` writes) or named (``--attacks FOLDER``), checked
to be measured on its weights, copied in compact form into the uploaded folder under ``attacks/``, and rows in the
card's robustness section: success@10 with N = 10 adversarial passages, retained nDCG@10 with snippets of L = 16
tokens inserted, per head, whichever runs are present (nothing else is derived or filled in). They are never
model-index entries, as the mteb results are not: the model-index holds the checkpoint's sweep.

    results = load_checkpoint_attacks("runs/finetune-topk/attack")  # HubError (one line) for a folder that is not one
    check_attacks_match(results, checkpoint)                          # HubError when measured on other weights
    copy_attack_results(results, staging, repo_id)                    # staging/attacks/<run>/results.json, summary.json
    attack_section(results, head, nested=True)                        # the card's Markdown rows
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lir_robust.attacks.text.results import (PASSAGE_KINDS, RESULTS_FILE, AttackResultsError, attack_settings,
                                             compact_results, find_attack_results, read_attack_results)
from lir_robust.core.files import write_json_atomic
from lir_robust.core.huggingface import HubError
from lir_robust.hub.checkpoint import Checkpoint
from lir_robust.hub.sweep_results import check_measured_on
from lir_robust.reporting.format import percent, table_header, table_row
from lir_robust.scoring.pooling import PoolingHead

__all__ = ["ATTACK_DIR", "ATTACKS_DIR", "CARD_PASSAGES", "CARD_SNIPPET_LENGTH", "AttackResults", "find_checkpoint_attacks",
           "load_checkpoint_attacks", "check_attacks_match", "copy_attack_results", "card_rows", "attack_section"]

ATTACK_DIR = "attack"  # beside the checkpoint: `make attack-one OUT=<run>` writes <run>/attack/<kind>/results.json
ATTACKS_DIR = "attacks"  # in the uploaded folder
CARD_PASSAGES = 10  # success@10 of runs with N = 10 passages
CARD_SNIPPET_LENGTH = 16  # retained nDCG@10 of insertion runs with L = 16
_FIX = "pass a folder holding `lir-robust attack --out` folders (their results.json), or --attacks none"


@dataclass(frozen=True)
class AttackResults:
    """Text-attack runs under ``folder``: ``[(run folder relative to it, its results.json), ...]``."""

    folder: Path
    runs: list[tuple[str, dict[str, Any]]]


def find_checkpoint_attacks(checkpoint: Checkpoint) -> Path | None:
    """``<run>/attack`` when it holds a text attack's results.json, else None."""
    folder = checkpoint.run_dir / ATTACK_DIR
    return folder if folder.is_dir() and find_attack_results(folder) else None


def load_checkpoint_attacks(folder: str | os.PathLike) -> AttackResults:
    """Every run under ``folder`` (a ``partial/`` folder's files left out); HubError (one line) for a folder that is
    missing or holds no results.json, or a results.json that is not a text attack's."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise HubError(f"--attacks {folder}: no such folder; " + _FIX)
    paths = find_attack_results(folder)
    if not paths:
        raise HubError(f"--attacks {folder}: no results.json under it; " + _FIX)
    runs = []
    for path in paths:
        try:
            runs.append((path.parent.relative_to(folder).as_posix(), read_attack_results(path, "--attacks", _FIX)))
        except AttackResultsError as error:
            raise HubError(str(error)) from None
    return AttackResults(folder, runs)


def check_attacks_match(results: AttackResults, checkpoint: Checkpoint) -> None:
    """HubError when any run was measured on other weights than the checkpoint's (the sweep's check)."""
    for name, report in results.runs:
        path = results.folder / name / RESULTS_FILE
        check_measured_on(report, checkpoint, path, f"--attacks {path}",
                          f"rerun `lir-robust attack --model {checkpoint.run_dir} ...` or pass --attacks none")


def card_rows(results: AttackResults) -> list[dict[str, Any]]:
    """The card's rows: per run and head, success@10 of a passage attack with N = 10, and retained nDCG@10 and
    hijack@10 of an insertion with L = 16 (other runs give no rows; a missing number stays missing)."""
    rows = []
    for name, report in results.runs:
        config = report["config"]
        kind = config["attack"]
        wanted = (kind in PASSAGE_KINDS and config["n"] == CARD_PASSAGES) or (
            kind == "insertion" and config["length"] == CARD_SNIPPET_LENGTH)
        if not wanted:
            continue
        for head, entry in report["results"].items():
            metrics = entry["metrics"]
            rows.append({"run": name, "head": head, "attack": kind, "settings": attack_settings(config, report["split"]),
                         "queries": report["split"].get("held_out_queries"),
                         "success@10": metrics.get("success@10") if kind in PASSAGE_KINDS else None,
                         "ndcg@10_retained": metrics.get("ndcg@10_retained") if kind == "insertion" else None,
                         "hijack@10": metrics.get("hijack@10") if kind == "insertion" else None})
    return rows


def copy_attack_results(results: AttackResults, target: Path, repo_id: str) -> Path:
    """Each run's compact results (no texts, scores or local paths; the model named by ``repo_id``) into
    ``target/attacks/<run>/results.json``, and ``attacks/summary.json`` listing them with the card's rows."""
    out = target / ATTACKS_DIR
    files = []
    for name, report in results.runs:
        relative = Path(name) / RESULTS_FILE if name != "." else Path(RESULTS_FILE)
        write_json_atomic(out / relative, compact_results(report, model=repo_id), indent=1)
        files.append({"file": relative.as_posix(), "attack": report["config"]["attack"],
                      "settings": attack_settings(report["config"], report["split"]), "heads": list(report["results"])})
    write_json_atomic(out / "summary.json", {"model": repo_id, "runs": files, "card_rows": card_rows(results)}, indent=2)
    return out


def _cell(value: Any) -> str:
    return "-" if value is None else percent(value)


def attack_section(results: AttackResults, head: PoolingHead, nested: bool) -> str:
    """The card's text-attack rows (``nested``: a subsection of the sweep's robustness section, else a section of
    its own); empty when no run has N = 10 passages or L = 16 snippets."""
    rows = card_rows(results)
    if not rows:
        return ""
    lines = ["### Text attacks" if nested else "## Robustness to text attacks", "",
             f"Measured on this checkpoint with `lir-robust attack` (files under `{ATTACKS_DIR}/`): text an adversary "
             "can write, encoded by this model. The judged queries are split 50/50; the attacks read only the "
             "training half and every number is on the held-out half. success@10: share of held-out queries with one "
             f"of N = {CARD_PASSAGES} adversarial passages in their top 10 (cluster-text: training queries "
             "concatenated, no gradients; hotflip: passages optimised against the row's head). Retained: nDCG@10 with "
             f"snippets of L = {CARD_SNIPPET_LENGTH} tokens inserted into non-gold documents / clean nDCG@10; hijack@10: "
             f"share of held-out queries whose top 10 gains an edited document. The row `{head.spec()}` is this "
             "checkpoint's own head. These numbers are in the text only; the model-index holds the sweep's.", "",
             *table_header(["head", "attack", "settings", "held-out queries", "success@10", "retained nDCG@10", "hijack@10"])]
    lines += [table_row([row["head"], row["attack"], row["settings"], row["queries"], _cell(row["success@10"]),
                         _cell(row["ndcg@10_retained"]), _cell(row["hijack@10"])]) for row in rows]
    return "\n".join(lines + [""])
