"""A length / injection sweep measured on the checkpoint (eval/length_sweep.py's results.json), as the card uses it:
found beside the checkpoint, checked to be measured on its weights, turned into model-index entries.

    path = find_results(checkpoint)                      # <run>/results.json, <run>/length-sweep/results.json, ...
    results = load_sweep_results(path)                    # {"metrics", "heads", "ks", "config", ...}
    check_results_match(results, checkpoint, path)        # HubError when measured on other weights
    eval_results_from_sweep(results)                      # [EvalResult, ...]: ndcg_at_10, retained_ndcg_at_10
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from lir_robust.core.files import is_finite_number
from lir_robust.hub.checkpoint import PYLATE_DIR, TEXT, Checkpoint
from lir_robust.core.huggingface import HubError
from lir_robust.encoders.resolve import is_hub_id

__all__ = ["find_results", "load_sweep_results", "check_results_match", "check_measured_on", "checkpoint_weights_keys", "report_k", "eval_results_from_sweep",
           "public_results", "dataset_identifier", "is_dataset_identifier", "evaluated_subset", "TASK_TYPE"]

logger = logging.getLogger(__name__)

TASK_TYPE = "retrieval"
_SWEEP_KEYS = {"metrics", "heads", "ks", "config"}


def _is_sweep_results(path: Path) -> bool:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and _SWEEP_KEYS <= set(payload)


def find_results(checkpoint: Checkpoint) -> Path | None:
    """The sweep ``results.json`` beside the checkpoint: ``<run>/results.json``, ``<run>/length-sweep/results.json``,
    else the one ``<run>/*/results.json`` that a sweep wrote (several: HubError asking for --results)."""
    for candidate in (checkpoint.run_dir / "results.json", checkpoint.run_dir / "length-sweep" / "results.json"):
        if candidate.is_file() and _is_sweep_results(candidate):
            return candidate
    found = sorted(path for path in checkpoint.run_dir.glob("*/results.json") if _is_sweep_results(path))
    if len(found) > 1:
        raise HubError(
            f"several sweep results beside the checkpoint ({', '.join(str(path) for path in found)}): pass the one "
            "measured on this checkpoint with --results PATH"
        )
    return found[0] if found else None


def load_sweep_results(path: str | os.PathLike) -> dict[str, Any]:
    """A sweep's results.json (lir_robust.sweep.pipeline.run_length_sweep), checked for the keys the card reads."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HubError(f"--results {path}: no such file; pass a results.json written by eval/length_sweep.py")
    try:
        results = json.loads(path.read_text())
    except ValueError as error:
        raise HubError(f"--results {path}: not JSON ({error})") from None
    if not (isinstance(results, dict) and _SWEEP_KEYS <= set(results)):
        raise HubError(f"--results {path}: not a length-sweep results.json (needs metrics, heads, ks, config)")
    return results


def _weights_key(model_dir: Path, family: str) -> str | None:
    """The weights key a sweep records for the model in ``model_dir`` (``results['encoder']['weights']``)."""
    if family != TEXT:
        from lir_robust.encoders.colpali import checkpoint_fingerprint

        return checkpoint_fingerprint(str(model_dir))
    from lir_robust.encoders.load import load_encoder

    return load_encoder(str(model_dir), show_progress=False, device="cpu").config.get("weights")


def checkpoint_weights_keys(checkpoint: Checkpoint) -> set[str]:
    """The weights keys a sweep measured on this checkpoint records: its own, and for a run's PyLate folder
    (``<run>/pylate``, the run's ``model/`` with LoRA merged, written by the same save) also the ``model/``'s, so a
    sweep of the run matches the PyLate folder published from it."""
    keys = {_weights_key(checkpoint.model_dir, checkpoint.family)}
    run_model = checkpoint.run_dir / "model"
    if checkpoint.model_dir.name == PYLATE_DIR and checkpoint.run_dir != checkpoint.model_dir and run_model.is_dir():
        keys.add(_weights_key(run_model, checkpoint.family))
    return {str(key) for key in keys if key is not None}


def check_measured_on(results: dict[str, Any], checkpoint: Checkpoint, source: Any, what: str, fix: str) -> None:
    """HubError ``<what> was measured on other weights (...): <fix>`` when the weights fingerprint ``results``
    record is not the checkpoint's (a card never shows numbers of other weights); a warning naming ``source`` when
    they record none."""
    recorded = (results.get("encoder") or {}).get("weights")
    if recorded is None:
        logger.warning("%s records no weights fingerprint: cannot check it was measured on this checkpoint", source)
        return
    actual = checkpoint_weights_keys(checkpoint)
    if actual and str(recorded) not in actual:
        raise HubError(f"{what} was measured on other weights (fingerprint {recorded}, this checkpoint "
                       f"{' / '.join(sorted(actual))}): {fix}")


def check_results_match(results: dict[str, Any], checkpoint: Checkpoint, source: Path) -> None:
    """HubError when ``results`` were measured on other weights than the checkpoint's (a card never shows old numbers)."""
    check_measured_on(results, checkpoint, source, str(source),
                      f"rerun the sweep on it (`make eval-length-sweep MODEL={checkpoint.run_dir} OUT={checkpoint.run_dir}`) "
                      "or pass --results none to publish without results")


def public_results(results: dict[str, Any], repo_id: str) -> dict[str, Any]:
    """The sweep results as the card shows them: the model named by its repo id, not by a local path."""
    return {**results, "config": {**results["config"], "model": repo_id}}


def report_k(results: dict[str, Any]) -> int:
    """The K the card reports: the sweep's REPORT_K when measured, else the largest K > 0 (0 when there is none)."""
    from lir_robust.sweep.pipeline import REPORT_K

    ks = [int(k) for k in results["ks"]]
    return REPORT_K if REPORT_K in ks else max(k for k in ks if k > 0) if any(k > 0 for k in ks) else 0


_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def is_dataset_identifier(text: Any) -> bool:
    """True for what a card's ``datasets:`` and a model-index ``dataset.type`` hold: a Hub data set id (owner/name)
    or a plain name (letters, digits, ``.``, ``_``, ``-``), never a subset written into it (``cranfield[:50q]``)."""
    return isinstance(text, str) and bool(_IDENTIFIER.match(text))


def dataset_identifier(spec: Any) -> str | None:
    """The identifier of a data set spec: a Hub data set id as it is, a local folder or collection by its name (a
    subset suffix such as ``[:50q]`` dropped, other characters as ``-``); None for nothing usable."""
    if not isinstance(spec, str) or not spec.strip():
        return None
    spec = spec.strip()
    if spec.count("/") == 1 and is_hub_id(spec) and is_dataset_identifier(spec):
        return spec
    name = re.sub(r"\[[^\]]*\]$", "", Path(spec.rstrip("/")).name)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")
    return name or None


def evaluated_subset(results: dict[str, Any]) -> str | None:
    """How the sweep's queries are a subset of the collection's (``"first 50 judged queries (--max-queries 50)"``),
    None when every judged query was evaluated."""
    max_queries = (results.get("config") or {}).get("max_queries")
    if max_queries:
        return f"first {results.get('evaluated_queries', max_queries)} judged queries (--max-queries {max_queries})"
    return None


def _dataset_fields(results: dict[str, Any]) -> dict[str, Any]:
    """EvalResult's dataset fields for the sweep's collection: ``{dataset_type, dataset_name, dataset_split,
    dataset_config}``: the type an identifier (a Hub data set by its id, a local folder by its name), the subset
    (``--max-queries``) and language stated in the name."""
    data = results.get("data") or {}
    config = results.get("config") or {}
    dataset_type = dataset_identifier(config.get("data")) or dataset_identifier(data.get("name")) or "unknown"
    name = dataset_identifier(data.get("name")) or dataset_type
    language = config.get("language")
    details = [part for part in (language, evaluated_subset(results)) if part]
    return {
        "dataset_type": dataset_type,
        "dataset_name": f"{name} ({', '.join(details)})" if details else name,
        "dataset_split": config.get("split") or "test",
        "dataset_config": language,
    }


def eval_results_from_sweep(results: dict[str, Any], task_type: str = TASK_TYPE) -> list:
    """Model-index entries of a sweep measured on the checkpoint (the only entries a card's model-index holds): per
    head, nDCG@10 at K = 0 (``ndcg_at_10``) and, per kind, the retained nDCG@10 at the report K
    (``retained_ndcg_at_10``, ``metric_args`` {head, kind, K, target, clean_ndcg_at_10, queries})."""
    from huggingface_hub import EvalResult

    at = report_k(results)
    fields = _dataset_fields(results)
    queries = results.get("evaluated_queries")
    entries = []
    for head in results["heads"]:
        by_kind = results["metrics"][head]
        kinds = list(by_kind)
        clean = by_kind[kinds[0]]["by_k"]["0"]["mean"]["ndcg@10"] if kinds else None
        if is_finite_number(clean):
            entries.append(EvalResult(
                task_type=task_type, metric_type="ndcg_at_10", metric_value=round(float(clean), 4),
                metric_name=f"nDCG@10 ({head}, no injection)", metric_config=head, metric_args={"head": head, "K": 0, "queries": queries},
                **fields,
            ))
        for kind in kinds:
            at_k = by_kind[kind]["by_k"].get(str(at))
            retained = (at_k or {}).get("retained", {}).get("ndcg@10")
            if not is_finite_number(retained):
                continue
            entries.append(EvalResult(
                task_type=task_type, metric_type="retained_ndcg_at_10", metric_value=round(float(retained), 4),
                metric_name=f"retained nDCG@10 ({head}, {kind}, K={at})",
                metric_config=f"{head} {kind} K={at}",
                metric_args={"head": head, "kind": kind, "K": at, "target": by_kind[kind].get("target"),
                             "clean_ndcg_at_10": round(float(clean), 4) if is_finite_number(clean) else None,
                             "queries": queries},
                **fields,
            ))
    return entries
