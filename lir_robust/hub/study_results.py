"""The retraining study's numbers on a card (``--study PATH``), from either of two files:

- the study's own ``summary.json`` (:func:`lir_robust.studies.retraining.summarize_study`): ``{"plan", "rows", "targets",
  "timings"}``, each row ``{collection, protocol, variant, head, seeds, ndcg10[kind][K], retained[kind][K],
  budget_median[kind], paired_vs_maxsim["kind|K"], ...}`` with ``{mean, std, n}`` over seeds (paired: ``{mean, se,
  n}`` over queries). The card shows the rows that concern the published checkpoint: protocol ``retrained`` for its
  head (the variant trained with injected negatives when the checkpoint was), protocol ``swap`` for its head, and
  retrained maxsim as the reference; nDCG@10 at K = 0, retained nDCG@10 at K = 4 and 100 under hard, spike, corpus
  and gaussian patches, the median hijack budget, the paired differences against maxsim and the study's target check.
  They stay in the card's text, labelled as the study's own models: the model-index holds only the checkpoint's own
  measurements (its sweep), so the Hub's evaluation widget never shows the study's models as this one's results.
- a plain table ``{"title": ..., "rows": [{head, protocol, collection, kind, K, retained_mean, retained_std, seeds,
  clean_ndcg_at_10}, ...]}`` (title optional; or a bare list of rows), rendered as it is.

    study = read_study("results/study/summary.json")                  # StudyFile (HubError when unreadable)
    study_section(study, head=checkpoint.head, injected_negatives=True)   # Markdown
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lir_robust.hub.checkpoint import public_value
from lir_robust.core.huggingface import HubError
from lir_robust.reporting.format import (
    budget_stats,
    number,
    number_stats,
    paired,
    percent,
    percent_stats,
    table_row,
    target_cells,
)
from lir_robust.scoring.pooling import PoolingHead, parse_head

__all__ = ["StudyFile", "read_study", "study_rows_for", "study_section", "check_study_for",
           "CARD_KINDS", "CARD_KS", "STUDY_COLUMNS"]

CARD_KINDS = ("hard", "spike", "corpus", "gaussian")  # attacks, then length growth
ATTACK_KINDS = ("hard", "spike")
CARD_KS = (4, 100)
PROTOCOLS = ("retrained", "swap")
STUDY_COLUMNS = ("head", "protocol", "collection", "kind", "K", "retained_mean", "retained_std", "seeds", "clean_ndcg_at_10")
_SUMMARY_ROW_KEYS = {"collection", "protocol", "variant", "head"}


@dataclass(frozen=True)
class StudyFile:
    """A ``--study`` file: ``summary`` is the study's summary.json (None for a plain table); ``rows`` its rows."""

    path: Path
    title: str | None
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None = None


def _is_summary(payload: Any) -> bool:
    return isinstance(payload, dict) and "plan" in payload and "rows" in payload


def read_study(path: str | os.PathLike | StudyFile) -> StudyFile:
    """Read a ``--study`` file (the study's summary.json or a plain table); HubError naming what is wrong."""
    if isinstance(path, StudyFile):
        return path
    path = Path(path).expanduser()
    try:
        payload = json.loads(path.read_text())
    except OSError:
        raise HubError(f"--study {path}: no such file; pass the retraining study's summary.json") from None
    except ValueError as error:
        raise HubError(f"--study {path}: not JSON ({error})") from None
    rows = payload.get("rows") if isinstance(payload, dict) else payload
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise HubError(
            f"--study {path}: expected the study's summary.json (make study), {{\"rows\": [{{...}}, ...]}} or a list "
            "of rows (see lir_robust.hub.study_section)"
        )
    if not _is_summary(payload):
        return StudyFile(path, payload.get("title") if isinstance(payload, dict) else None, rows)
    incomplete = [index for index, row in enumerate(rows) if not _SUMMARY_ROW_KEYS <= set(row)]
    if incomplete:
        raise HubError(
            f"--study {path}: row {incomplete[0]} of the study's summary lacks {sorted(_SUMMARY_ROW_KEYS - set(rows[incomplete[0]]))}; "
            "regenerate it with `make study`"
        )
    return StudyFile(path, payload.get("title"), rows, payload)


# -- which rows concern the checkpoint ------------------------------------------------------------------------------


def _spec(head: Any) -> str | None:
    """The canonical text form of a head (``"topk:k=4"``), None for a name no registered head has."""
    try:
        return parse_head(head).spec()
    except (ValueError, TypeError):
        return None


def _is_defended(row: dict[str, Any]) -> bool:
    """True for a row of a model trained with injected negatives (lir_robust.studies.retraining.variant_name(head, True))."""
    from lir_robust.studies.retraining import variant_name

    try:
        return row["variant"] == variant_name(row["head"], True)
    except (ValueError, TypeError):
        return False


def _collections(summary: dict[str, Any]) -> list[str]:
    """The study's collections, in the plan's order, then any other a row names."""
    planned = list((summary.get("plan") or {}).get("collections") or {})
    return list(dict.fromkeys(planned + [row["collection"] for row in summary["rows"]]))


def study_rows_for(study: StudyFile, head: PoolingHead | str, injected_negatives: bool) -> list[tuple[str, dict[str, Any]]]:
    """``[(label, row), ...]``: per collection, the ``retrained`` row of this head (the defended variant when
    ``injected_negatives``), the ``swap`` row of this head (the maxsim-trained model scored with it), and retrained
    maxsim as the reference (unless the checkpoint is that model)."""
    if study.summary is None:
        raise ValueError("study_rows_for needs the study's summary.json, not a plain table")
    spec = parse_head(head).spec()
    named = f"`{spec}`" + (" + injected negatives" if injected_negatives else "")
    chosen: list[tuple[str, dict[str, Any]]] = []
    for collection in _collections(study.summary):
        here = [row for row in study.summary["rows"] if row["collection"] == collection]
        retrained = [row for row in here if row["protocol"] == "retrained" and _spec(row["head"]) == spec
                     and _is_defended(row) == injected_negatives]
        swapped = [row for row in here if row["protocol"] == "swap" and _spec(row["head"]) == spec]
        chosen += [(f"trained with {named}", row) for row in retrained]
        chosen += [(f"maxsim-trained, scored with `{spec}`", row) for row in swapped]
        if (retrained or swapped) and not (spec == "maxsim" and not injected_negatives):
            reference = [row for row in here if row["protocol"] == "retrained" and _spec(row["head"]) == "maxsim"
                         and not _is_defended(row)]
            chosen += [("maxsim, retrained (reference)", row) for row in reference[:1]]
    return chosen


# -- the numbers (printed by lir_robust.reporting.format, as docs/RESULTS.md prints them) --------------------------------------------------------------


def _stats(row: dict[str, Any], table: str, kind: str, k: int | None = None) -> dict[str, Any] | None:
    entry = (row.get(table) or {}).get(kind)
    if not isinstance(entry, dict):
        return None
    return entry.get(str(k)) if k is not None else entry


def _clean(row: dict[str, Any]) -> dict[str, Any] | None:
    """nDCG@10 at K = 0 (no injection: the same under every kind), ``{mean, std, n}``."""
    tables = row.get("ndcg10") or {}
    for kind in (*CARD_KINDS, *tables):
        stats = _stats(row, "ndcg10", kind, 0)
        if stats is not None:
            return stats
    return None


def _paired_clean(row: dict[str, Any]) -> dict[str, Any] | None:
    paired = row.get("paired_vs_maxsim") or {}
    for key in (*(f"{kind}|0" for kind in CARD_KINDS), *paired):
        if key.endswith("|0") and key in paired:
            return paired[key]
    return None


def _seed_count(row: dict[str, Any]) -> int:
    return len([seed for seed in row.get("seeds") or [] if seed is not None])


def _target_line(target: dict[str, Any]) -> str:
    return table_row([target.get("collection", "n/a"), *target_cells(target)])


# -- the card section -----------------------------------------------------------------------------------------------


def _plan_line(summary: dict[str, Any]) -> str:
    plan = summary.get("plan") or {}
    seeds = ", ".join(f"{collection} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})"
                      for collection, seeds in (plan.get("collections") or {}).items())
    model = public_value(plan.get("model", "?"))
    return (f"Measured by lir-robust's retraining study (`make study`) on its own models, not on this checkpoint's "
            f"weights: {model} fine-tuned with each head (train/finetune.py's defaults) on {seeds or 'its collections'}, "
            "then swept with K distractor patches per document.")


def _summary_section(study: StudyFile, head: PoolingHead | str, injected_negatives: bool) -> str:
    spec = parse_head(head).spec()
    chosen = study_rows_for(study, head, injected_negatives)
    lines = [f"## {study.title or 'Retraining study'}: the study's own models, not this checkpoint", "",
             _plan_line(study.summary), ""]
    if not chosen:
        return "\n".join(lines + [f"The study holds no rows for the head `{spec}`.", ""])
    if injected_negatives and not any(label.startswith("trained") for label, _ in chosen):
        lines += [f"The study trained no model with `{spec}` and injected negatives; the rows below are the others that "
                  "concern this head.", ""]
    kinds_ks = [(kind, k) for kind in CARD_KINDS for k in CARD_KS]
    lines += [
        "Protocol *retrained*: a model trained with the head and scored with it; *swap* (the paper's protocol): the "
        "maxsim-trained model scored with the head at inference only. nDCG@10 at K = 0 has no injected patch; retained "
        "= nDCG@10 at K / nDCG@10 at K = 0 (hard and spike patches go into non-gold documents, corpus and gaussian "
        "patches into every document); mean ± standard deviation over seeds. Hijack budget: median over queries of the "
        "smallest K that pushes the gold document out of the top 10 (mean over seeds; never: not within the study's K).",
        "",
        "| protocol | collection | model | seeds | nDCG@10 K=0 | " + " | ".join(f"{kind} K={k}" for kind, k in kinds_ks)
        + " | " + " | ".join(f"budget {kind}" for kind in ATTACK_KINDS) + " |",
        "|---" * (5 + len(kinds_ks) + len(ATTACK_KINDS)) + "|",
    ]
    for label, row in chosen:
        lines.append(
            f"| {row['protocol']} | {row['collection']} | {label} | {_seed_count(row)} | {number_stats(_clean(row))} | "
            + " | ".join(percent_stats(_stats(row, "retained", kind, k)) for kind, k in kinds_ks) + " | "
            + " | ".join(budget_stats(_stats(row, "budget_median", kind)) for kind in ATTACK_KINDS) + " |"
        )
    paired_points = [(kind, k) for kind in ATTACK_KINDS for k in CARD_KS]
    lines += [
        "", "Paired per-query differences of nDCG@10 against maxsim (same protocol, collection and seed; mean ± "
        "standard error over queries, pooled over seeds):", "",
        "| protocol | collection | model | K=0 | " + " | ".join(f"{kind} K={k}" for kind, k in paired_points) + " |",
        "|---" * (4 + len(paired_points)) + "|",
    ]
    for label, row in chosen:
        if label.startswith("maxsim, retrained"):
            continue
        paired_differences = row.get("paired_vs_maxsim") or {}
        lines.append(f"| {row['protocol']} | {row['collection']} | {label} | {paired(_paired_clean(row))} | "
                     + " | ".join(paired(paired_differences.get(f"{kind}|{k}")) for kind, k in paired_points) + " |")
    retrained = {(row["collection"], row["variant"]) for label, row in chosen if label.startswith("trained")}
    targets = [target for target in study.summary.get("targets") or []
               if (target.get("collection"), target.get("variant")) in retrained]
    if targets:
        lines += [
            "", "The study's target, against retrained maxsim: nDCG@10 at K = 0 within 0.01, at least 50 % retained under "
            "spike K = 4, at least 15 points above maxsim under hard K = 4, and at least twice maxsim's hijack budget "
            "under hard and spike (maxsim's values in brackets):", "",
            "| collection | nDCG@10 gap | spike K=4 retained | hard K=4 retained (maxsim) | budget hard (maxsim) "
            "| budget spike (maxsim) | reached |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [_target_line(target) for target in targets]
    return "\n".join(lines + [""])


def _table_section(study: StudyFile) -> str:
    lines = [f"## {study.title or 'Retraining study'}", ""]
    if not study.rows:
        return "\n".join(lines + ["The study file holds no rows yet.", ""])
    lines += [
        "Retained share of nDCG@10 (mean ± standard deviation over seeds) and nDCG@10 without injection.",
        "",
        "| head | protocol | collection | kind | K | retained nDCG@10 | seeds | clean nDCG@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in study.rows:
        cells = [str(row.get(key, "n/a")) for key in ("head", "protocol", "collection", "kind", "K")]
        cells += [percent(row.get("retained_mean"), row.get("retained_std")), str(row.get("seeds", "n/a")),
                  number(row.get("clean_ndcg_at_10"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""])


def study_section(
    study: str | os.PathLike | StudyFile, head: PoolingHead | str | None = None, injected_negatives: bool = False
) -> str:
    """A card section (Markdown) from a ``--study`` file.

    The study's summary.json: the rows that concern a checkpoint trained with ``head`` (and with injected negatives
    when ``injected_negatives``), see :func:`study_rows_for`; ``head`` is needed. A plain table ``{"title": "...",
    "rows": [row, ...]}`` (title optional) or a bare list of rows: each row may carry ``head``, ``protocol``,
    ``collection``, ``kind``, ``K``, ``retained_mean`` and ``retained_std`` (retained share of nDCG@10, fractions),
    ``seeds`` (how many), ``clean_ndcg_at_10`` (nDCG@10 at K = 0); missing values show as n/a, other keys are ignored,
    rows keep their order.
    """
    study = read_study(study)
    if study.summary is None:
        return _table_section(study)
    if head is None:
        raise ValueError("the study's summary.json is shown for one head: pass the checkpoint's head")
    return _summary_section(study, head, injected_negatives)


def check_study_for(study: str | os.PathLike | StudyFile, head: PoolingHead | str, injected_negatives: bool) -> StudyFile:
    """Read a ``--study`` file and, for the study's summary.json, check that it holds rows for this head: HubError
    naming the heads it has otherwise (a card section with nothing of the checkpoint in it helps nobody)."""
    study = read_study(study)
    if study.summary is not None and not study_rows_for(study, head, injected_negatives):
        spec = parse_head(head).spec()
        heads = sorted({str(row["head"]) for row in study.summary["rows"] if row["protocol"] in PROTOCOLS})
        raise HubError(
            f"--study {study.path}: the study measured no model with the head {spec} (its heads: "
            f"{', '.join(heads) or 'none'}); pass the study that trained this head, or drop --study"
        )
    return study
