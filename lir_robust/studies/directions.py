"""Every direction of the recipe search (issue 20) as rows of one table: numbers, target checks, per-seed rows.

Inputs, each a committed results file (``make results-doc`` passes them; a missing one is skipped with a logged note):
the recipe search's ``summary.json`` (blend), ``corpus-hard/summary.json`` and ``docs4-summary.json`` (the hard-corpus
defence), ``coherence/summary.json`` (the coherent head on the untrained model, the screen) and
``coherence/retrained.json`` (the coherent head retrained and swapped in: :func:`sweep_seed_rows`), ``probes/summary.json``
(one seed of a direction each, the same schema, each row with its extra fine-tuning options), and the retraining
study's ``summary.json`` (its exclusive rows, and retrained maxsim: the reference of every check).

A row: ``{"direction", "collection", "seed", "head", "ndcg10_k0", "paired", "retained_spike_k4", "retained_hard_k4",
"budget_spike", "budget_hard"}``; ``paired`` is the per-query nDCG@10 difference at K = 0 against maxsim
(``{"mean", "se", "n"}`` or None), budgets None when the sweep's K grid was too short to give one.
The checks (:func:`checks`), against retrained maxsim (the study's, mean over its seeds), as issue 20 states them:
clean nDCG@10 within 0.01; spike K = 4 retained at least 60 %; hard K = 4 retained at least 15 points above maxsim's;
median hijack budgets, hard and spike, at least twice maxsim's.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from lir_robust.core.errors import UserError

__all__ = ["CHECKS", "REFERENCE_KS", "read_directions", "reference_maxsim", "direction_rows", "checks",
           "maxsim_baseline", "sweep_seed_rows", "paired_difference", "head_family"]

logger = logging.getLogger(__name__)

CHECKS = ("clean", "spike", "hard", "budgets")
CLEAN_GAP, SPIKE_BAR, HARD_POINTS, BUDGET_FACTOR = -0.01, 0.60, 0.15, 2.0
REFERENCE_KS = (0, 1, 2, 4, 8, 16, 25, 50)  # a median hijack budget is comparable only over this grid (the study's)
INPUTS = ("recipe_search", "corpus_hard", "corpus_hard_docs4", "coherence_screen", "coherence_retrained", "probes",
          "text_defence")


def read_directions(paths: Mapping[str, Path | None]) -> dict[str, Any]:
    """``{name: parsed JSON or None}`` for the names of :data:`INPUTS`; a name not in ``paths`` is None, a file
    that is absent too, with a logged note."""
    out: dict[str, Any] = {}
    for name in INPUTS:
        path = paths.get(name)
        if name not in paths:
            out[name] = None
        elif path is not None and Path(path).is_file():
            out[name] = json.loads(Path(path).read_text())
        else:
            out[name] = None
            logger.info("%s: no file%s; its rows are left out of docs/RESULTS.md", name, f" at {path}" if path else "")
    return out


def head_family(spec: str) -> str:
    """``blend:tau=1.0,...`` -> ``blend``."""
    return spec.split(":", 1)[0]


def _value(stats: Any) -> float | None:
    value = stats.get("mean") if isinstance(stats, Mapping) else stats
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def reference_maxsim(study: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Retrained maxsim per collection from the study's summary (mean over its seeds): the reference of every check."""
    out = {}
    for row in (study or {}).get("rows", []):
        if row["protocol"] != "retrained" or row["variant"] != "maxsim":
            continue
        seeds = [seed for seed in row["seeds"] if seed is not None]
        out[row["collection"]] = {
            "seeds": seeds, "ndcg10_k0": _value(row["ndcg10"]["hard"]["0"]),
            "retained_spike_k4": _value(row["retained"]["spike"]["4"]), "retained_hard_k4": _value(row["retained"]["hard"]["4"]),
            "budget_spike": _value(row["budget_median"].get("spike")), "budget_hard": _value(row["budget_median"].get("hard"))}
    return out


def _label(row: Mapping[str, Any], plan: Mapping[str, Any]) -> str:
    trained, scored = head_family(row["trained_with"]), head_family(row["scored_with"])
    label = f"{trained} retrained" if row["trained_with"] == row["scored_with"] else f"{trained}-trained, scored with {scored}"
    if row.get("injected_negatives"):
        label += " + " + " ".join(row["injected_negatives"])
    arguments = row.get("finetune_args") or plan.get("finetune_args")  # a probe's own options, else the plan's
    if arguments:
        label += " (`" + " ".join(arguments) + "`)"
    return label


def _seed_rows(summary: Mapping[str, Any] | None, source: str) -> list[dict[str, Any]]:
    """Rows of a summary's ``per_seed`` (the recipe search's schema); maxsim scoring a maxsim-trained model is the
    reference re-run, not a direction, and is left out."""
    if summary is None:
        return []
    plan = summary.get("plan") or {}
    rows = []
    for row in summary.get("per_seed", []):
        if head_family(row["trained_with"]) == "maxsim" and head_family(row["scored_with"]) == "maxsim":
            continue
        rows.append({"direction": _label(row, plan), "source": source, "collection": row["collection"], "seed": str(row["seed"]),
                     "head": row["scored_with"], "ndcg10_k0": row["ndcg10_k0"], "paired": row.get("paired_ndcg10_vs_maxsim_hard_k0"),
                     "retained_spike_k4": row["retained_spike_k4"], "retained_hard_k4": row["retained_hard_k4"],
                     "budget_spike": _value(row.get("budget_median_spike")), "budget_hard": _value(row.get("budget_median_hard"))})
    return rows


def _with_n(stats: Mapping[str, Any] | None, n: int) -> dict[str, Any] | None:
    return None if stats is None else {"n": n, **stats}


def _screen_rows(screen: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The coherent heads of the untrained screen, on each collection's full query set (probes on fewer queries left
    out); its grid is K = 0 and 4, so no budget."""
    if screen is None:
        return []
    rows = screen.get("rows", [])
    most = {}
    for row in rows:
        most[row["data"]] = max(most.get(row["data"], 0), row["queries"])
    return [{"direction": "untrained, scored with coherent (screen)", "source": "coherence_screen", "collection": row["data"],
             "seed": "-", "head": row["head"], "ndcg10_k0": row["ndcg10_k0"], "paired": _with_n(row.get("paired_ndcg10_k0_vs_maxsim"), row["queries"]),
             "retained_spike_k4": row["retained_spike_k4"], "retained_hard_k4": row["retained_hard_k4"],
             "budget_spike": None, "budget_hard": None}
            for row in rows if head_family(row["head"]) == "coherent" and row["queries"] == most[row["data"]]]


def _study_rows(study: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The study's retrained exclusive rows, plain and defended (mean over its seeds)."""
    rows = []
    for row in (study or {}).get("rows", []):
        if row["protocol"] != "retrained" or head_family(row["head"]) != "exclusive":
            continue
        defence = (study.get("plan") or {}).get("defence") or []
        label = "exclusive retrained" + (" + " + " ".join(defence) if row["variant"].endswith("+defence") else "") + " (study)"
        seeds = [seed for seed in row["seeds"] if seed is not None]
        rows.append({"direction": label, "source": "study", "collection": row["collection"],
                     "seed": ", ".join(map(str, seeds)) + (" (mean)" if len(seeds) > 1 else ""), "head": row["head"],
                     "ndcg10_k0": _value(row["ndcg10"]["hard"]["0"]), "paired": row.get("paired_vs_maxsim", {}).get("hard|0"),
                     "retained_spike_k4": _value(row["retained"]["spike"]["4"]),
                     "retained_hard_k4": _value(row["retained"]["hard"]["4"]),
                     "budget_spike": _value(row["budget_median"].get("spike")), "budget_hard": _value(row["budget_median"].get("hard"))})
    return rows


def direction_rows(inputs: Mapping[str, Any], study: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every direction's rows, in the order they were tried: the study's exclusive, blend, the hard-corpus defence,
    the coherent screen, the coherent head retrained / swapped in, then the probes (one seed of a direction each)."""
    return (_study_rows(study) + _seed_rows(inputs.get("recipe_search"), "recipe_search")
            + _seed_rows(inputs.get("corpus_hard"), "corpus_hard") + _seed_rows(inputs.get("corpus_hard_docs4"), "corpus_hard_docs4")
            + _screen_rows(inputs.get("coherence_screen")) + _seed_rows(inputs.get("coherence_retrained"), "coherence_retrained")
            + _seed_rows(inputs.get("probes"), "probes"))


def checks(row: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, bool | None]:
    """Issue 20's four checks for one row against retrained maxsim; None where a number is missing."""
    def known(*values):
        return all(_value(value) is not None for value in values)

    budgets = None
    if known(row["budget_spike"], row["budget_hard"], reference["budget_spike"], reference["budget_hard"]):
        budgets = (row["budget_hard"] >= BUDGET_FACTOR * reference["budget_hard"]
                   and row["budget_spike"] >= BUDGET_FACTOR * reference["budget_spike"])
    return {
        "clean": row["ndcg10_k0"] - reference["ndcg10_k0"] >= CLEAN_GAP if known(row["ndcg10_k0"], reference["ndcg10_k0"]) else None,
        "spike": row["retained_spike_k4"] >= SPIKE_BAR if known(row["retained_spike_k4"]) else None,
        "hard": (row["retained_hard_k4"] - reference["retained_hard_k4"] >= HARD_POINTS
                 if known(row["retained_hard_k4"], reference["retained_hard_k4"]) else None),
        "budgets": budgets,
    }


def paired_difference(results: Mapping[str, Any], head: str, baseline: Mapping[str, Any], kind: str, k: int) -> dict[str, float]:
    """Per-query nDCG@10 of ``head`` minus the baseline sweep's maxsim at (kind, K), same queries: mean, standard error."""
    if list(results["query_ids"]) != list(baseline["query_ids"]):
        raise UserError("the sweep and its maxsim baseline hold different queries: pass the baseline of the same "
                        "collection and query set")
    mine = results["metrics"][head][kind]["by_k"][str(k)]["per_query"]["ndcg@10"]
    theirs = baseline["metrics"]["maxsim"][kind]["by_k"][str(k)]["per_query"]["ndcg@10"]
    differences = [a - b for a, b in zip(mine, theirs)]
    n = len(differences)
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1) if n > 1 else math.nan
    return {"mean": mean, "se": math.sqrt(variance / n), "n": n}


def maxsim_baseline(baselines: Path | None, collection: str, seed: int) -> tuple[Path | None, dict[str, Any] | None]:
    """Retrained maxsim's sweep of a collection and seed, ``baselines/<collection>-maxsim-seed<seed>.json``, for the
    paired differences of :func:`sweep_seed_rows`: ``(its path, its results)``, or ``(None, None)`` where it is absent."""
    path = None if baselines is None else Path(baselines) / f"{collection}-maxsim-seed{seed}.json"
    if path is None or not path.is_file():
        return None, None
    return path, json.loads(path.read_text())


def sweep_seed_rows(results: Mapping[str, Any], collection: str, seed: int, injected_negatives: Sequence[str] | None,
                    baseline: Mapping[str, Any] | None = None, trained_with: str | None = None) -> list[dict[str, Any]]:
    """One length sweep's results.json (kinds spike and hard, K 0 and 4 at least) as per-seed rows in the schema of
    the recipe search's ``per_seed``: one row per scoring head. ``trained_with`` defaults to the head the model was
    fine-tuned with (the encoder's pooling); budgets are None unless the sweep ran the study's whole K grid;
    ``baseline``: retrained maxsim's sweep of the same collection and seed, for the paired differences (None: they
    are None)."""
    trained = trained_with or results.get("encoder", {}).get("pooling") or "unknown"
    full_grid = set(REFERENCE_KS) <= {int(k) for k in results.get("ks", [])}
    rows = []
    for scored in results["heads"]:
        metrics = results["metrics"][scored]
        budgets = {kind: (metrics[kind]["hijack_budget"]["median"] if full_grid else None) for kind in ("spike", "hard")}
        paired = {f"paired_ndcg10_vs_maxsim_{kind}_k{k}": (None if baseline is None else
                                                            paired_difference(results, scored, baseline, kind, k))
                  for kind, k in (("hard", 0), ("spike", 4), ("hard", 4))}
        rows.append({"collection": collection, "seed": seed, "trained_with": trained, "scored_with": scored,
                     "injected_negatives": list(injected_negatives) if injected_negatives is not None else None,
                     "weights": results.get("encoder", {}).get("weights"),
                     "ndcg10_k0": metrics["hard"]["by_k"]["0"]["mean"]["ndcg@10"],
                     "retained_spike_k4": metrics["spike"]["by_k"]["4"]["retained"]["ndcg@10"],
                     "retained_hard_k4": metrics["hard"]["by_k"]["4"]["retained"]["ndcg@10"],
                     "budget_median_spike": budgets["spike"], "budget_median_hard": budgets["hard"], **paired})
    return rows

