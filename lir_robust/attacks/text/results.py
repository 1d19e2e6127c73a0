"""A text attack's ``results.json`` (:func:`~lir_robust.attacks.text.pipeline.run_text_attack`) as other parts read
it: found under a folder, checked, made compact, described.

    paths = find_attack_results("runs/finetune-topk/attack")   # every results.json under it (partial/ left out)
    report = read_attack_results(paths[0], "--attacks")          # AttackResultsError (one line) for anything else
    small = compact_results(report, model="alice/robust-topk")   # metrics and settings only: no texts, no scores
    attack_settings(report["config"])                            # "N = 10, L = 32, 30 iterations, init queries"

The compact form keeps, per head, the metrics, ``success@10_by_n`` (when the run wrote it) and the HotFlip cost as
means over the passages; it drops the passages' and edited documents' texts, the per-query scores and local paths.
docs/RESULTS.md (``results/text-attacks/``) and published model cards (``attacks/``) carry this form.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from lir_robust.core.errors import UserError

__all__ = ["RESULTS_FILE", "PASSAGE_KINDS", "EDIT_KINDS", "AttackResultsError", "find_attack_results",
           "read_attack_results", "compact_results", "attack_settings", "is_compact"]

RESULTS_FILE = "results.json"
PASSAGE_KINDS = ("cluster-text", "hotflip")  # success@k of N new passages
EDIT_KINDS = ("insertion", "stuffing", "query-text")  # retained nDCG@10 and hijack@10 of edited documents
_KINDS = PASSAGE_KINDS + EDIT_KINDS
_HOTFLIP_MEANS = ("seconds_per_iteration", "swaps", "last_swap", "initial_objective", "objective")


class AttackResultsError(UserError):
    """A file given as a text attack's results that is not one."""


def find_attack_results(folder: str | os.PathLike) -> list[Path]:
    """Every ``results.json`` under ``folder`` (the folder itself included), sorted, none inside a ``partial/``
    folder (run_text_attack's resume files); ``folder`` may also be one results.json."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    return sorted(path for path in folder.rglob(RESULTS_FILE)
                  if "partial" not in path.relative_to(folder).parts and ".tmp-" not in path.name)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem(report: Any) -> str | None:
    """What makes ``report`` not a text attack's results (None when it is one)."""
    if not isinstance(report, dict):
        return "not a JSON object"
    config, results = report.get("config"), report.get("results")
    if not isinstance(config, dict) or config.get("attack") not in _KINDS:
        return f"its config names no text attack ({', '.join(_KINDS)})"
    if not all(isinstance(config.get(key), int) for key in ("n", "length")):
        return "its config has no integer n and length"
    if not isinstance(results, dict) or not results:
        return "it holds no head's results"
    wanted = ("success@10", "ndcg@10_clean") if config["attack"] in PASSAGE_KINDS else ("hijack@10", "ndcg@10_retained")
    for head, entry in results.items():
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, dict) or not all(_real(metrics.get(name)) for name in wanted):
            return f"head {head} has no numeric {' and '.join(wanted)}"
    if not isinstance(report.get("split"), dict) or not isinstance(report.get("data"), dict):
        return "it has no split or data section"
    return None


def read_attack_results(path: str | os.PathLike, what: str, fix: str = "pass the --out folder of `lir-robust attack`") -> dict[str, Any]:
    """The report in ``path``; :class:`AttackResultsError` ``<what> <path>: ...; <fix>`` (one line) for a file that
    is missing, not JSON, or not a text attack's results (full or compact)."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except OSError:
        raise AttackResultsError(f"{what} {path}: no such file; {fix}") from None
    except ValueError as error:
        raise AttackResultsError(f"{what} {path}: not JSON ({str(error).splitlines()[0]}); {fix}") from None
    problem = _problem(report)
    if problem:
        raise AttackResultsError(f"{what} {path}: not a text attack's results.json ({problem}); {fix}")
    return report


def is_compact(report: dict[str, Any]) -> bool:
    return bool(report.get("compact"))


def _public(value: Any) -> Any:
    """An absolute local path as its last part (a committed or published file names no local folder)."""
    return Path(value).name if isinstance(value, str) and os.path.isabs(value) else value


def _hotflip_summary(stats: list[dict[str, Any]], iterations: Any) -> dict[str, Any]:
    means = {name: sum(float(stat.get(name, 0)) for stat in stats) / len(stats) for name in _HOTFLIP_MEANS
             if any(name in stat for stat in stats)}
    return {"passages": len(stats), "iterations": iterations, **{f"mean_{name}": value for name, value in means.items()}}


def compact_results(report: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """The small form of ``report`` (already compact: returned as it is, ``model`` applied): settings, data and
    encoder summaries, split sizes, and per head the metrics, success@10_by_n and HotFlip cost means; ``model``
    replaces the config's model name (a repo id instead of a local folder)."""
    config = {key: _public(value) for key, value in {**report["config"], "data_root": None, "cache_dir": None}.items()}
    if model is not None:
        config["model"] = model
    if is_compact(report):
        return {**report, "config": config}
    results = {}
    for head, entry in report["results"].items():
        small: dict[str, Any] = {"metrics": entry["metrics"]}
        if "success@10_by_n" in entry:
            small["success@10_by_n"] = entry["success@10_by_n"]
        if entry.get("hotflip"):
            small["hotflip"] = _hotflip_summary(entry["hotflip"], config.get("iterations"))
        if "position" in entry:
            small["position"] = entry["position"]
        results[head] = small
    data = {key: value for key, value in report["data"].items() if key != "source"}
    encoder = {key: _public(value) for key, value in (report.get("encoder") or {}).items()}
    return {"compact": True, "config": config, "heads": list(report.get("heads") or results), "data": data,
            "encoder": encoder, "split": report["split"], "results": results,
            "timings_s": report.get("timings_s"), "notes": report.get("notes")}


def attack_settings(config: dict[str, Any], split: dict[str, Any] | None = None) -> str:
    """The settings that define a run, in words: ``N = 10, L = 32, 30 iterations, init queries``; for cluster-text
    and query-text only N (their texts are whole queries); stuffing's length is its word count T. Given the run's
    ``split``, a passage or snippet count cut to the training queries' clusters is said (``N = 10 (3 clusters)``)."""
    kind = config["attack"]
    clusters = len((split or {}).get("cluster_sizes") or []) if kind in ("cluster-text", "hotflip", "insertion") else 0
    parts = [f"N = {config['n']}" + (f" ({clusters} clusters)" if 0 < clusters < config["n"] else "")]
    if kind == "stuffing":
        parts.append(f"T = {config['length']}")
    elif kind in ("hotflip", "insertion"):
        parts += [f"L = {config['length']}", f"{config.get('iterations')} iterations", f"init {config.get('init')}"]
        if config.get("objective") not in (None, "mean"):
            parts.append(f"objective {config['objective']}")
        if config.get("positions", 1) != 1:
            parts.append(f"{config['positions']} positions per iteration")
    if kind == "insertion":
        parts.append("appended" if config.get("position", "end") == "end" else "at a sentence boundary")
    if config.get("max_queries"):
        parts.append(f"first {config['max_queries']} held-out queries")
    return ", ".join(parts)
