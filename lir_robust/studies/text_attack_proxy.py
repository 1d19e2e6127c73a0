"""The embedding-level proxy beside docs/RESULTS.md's text attacks (issue 19 item 1d): where each proxy value comes
from, and the rank correlation over variants between each proxy and text-attack success@10 (and success@100).

Proxy rows (:func:`proxy_summary`): rows shaped like the retraining study's summary (``collection``, ``protocol``,
``variant``, ``head``, ``retained`` spike / hard K = 4 means, ``seeds``), gathered in this order, the first match
winning: the study's summary.json; the recipe search's summary.json (its rows, and its untrained screen, which ran on
Cranfield: results/recipe-search/README.md); the coherence direction's files (the untrained screen on each
collection's full query set; each retrained coherent model scored with the head it was trained with, the mean over
its seeds, as the study keeps a retrained row).

Which model a run attacked (:func:`study_row`): a run kept as ``<collection>/<variant>/<run>`` (``make attack``'s
layout; ``raw`` = the untrained model) attacked that variant of the study's recipe; otherwise a run on the untrained
weights is ``raw``, and any other run is unknown (no proxy).

Correlation (:func:`correlation_lines`): per collection, per text attack (HotFlip N = 10 at the suite's settings:
:data:`HOTFLIP_SETTINGS`; cluster-text N = 10; the edit attacks at the model cards' settings: an optimised snippet of
L = 16 appended to 10 documents, :data:`INSERTION_SETTINGS`, and keyword stuffing T = 32), per measure (:data:`MEASURES`
for the passages: success@10, the issue's; success@100, finer where few queries are held out: MED's 15 make success@10
move in steps of 6.7 points; :data:`EDIT_MEASURES` for the edits: hijack@10) and per proxy: Spearman's rho
(:func:`lir_robust.studies.attack_summary.spearman`) over the (model, head) variants that have both numbers, the
untrained model's heads and the retrained models (each through its own head) together; fewer than 3 variants say
'too few'. The proxies are shares kept (higher = more robust): a proxy that predicts the text attack has rho < 0.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any, Mapping, Sequence

from lir_robust.reporting.format import percent, real_value, table_header, table_row
from lir_robust.studies.attack_summary import PROXIES, spearman, study_proxy
from lir_robust.studies.retraining import variant_name

__all__ = ["MEASURES", "EDIT_MEASURES", "HOTFLIP_SETTINGS", "INSERTION_SETTINGS", "STUFFING_SETTINGS", "SCREEN_COLLECTION", "study_row", "proxy_summary", "correlation_points", "correlation_lines"]

MEASURES = ("success@10", "success@100")
HOTFLIP_SETTINGS = {"n": 10, "length": 32, "iterations": 20, "init": "queries", "objective": "mean", "candidates": 32,
                    "positions": 1}
SCREEN_COLLECTION = "cranfield"  # the recipe search's untrained screen (its summary's raw_screen) ran on Cranfield only
# Edit attacks at the settings the model cards report (issue 19 item 4: retained at L = 16): an optimised snippet of 16
# tokens appended to 10 non-gold documents, and keyword stuffing with the 32 most frequent training-query words.
INSERTION_SETTINGS = {"n": 10, "length": 16, "position": "end", "iterations": 20, "positions": 1}
STUFFING_SETTINGS = {"n": 10, "length": 32}
EDIT_MEASURES = ("hijack@10",)  # higher = more exposed, as success@k (retained nDCG@10 would flip the sign)
# (kind, label, settings a run must have, its measures)
_KINDS = (("hotflip", "HotFlip N = {n}, L = {length}, {iterations} iterations, init {init}, {candidates} candidates".format(**HOTFLIP_SETTINGS),
           HOTFLIP_SETTINGS, MEASURES),
          ("cluster-text", "cluster-text N = 10", {"n": 10}, MEASURES),
          ("insertion", "insertion L = 16, appended to 10 documents, {iterations} iterations".format(**INSERTION_SETTINGS),
           INSERTION_SETTINGS, EDIT_MEASURES),
          ("stuffing", "keyword stuffing T = 32, 10 documents", STUFFING_SETTINGS, EDIT_MEASURES))
_SETTINGS = {kind: settings for kind, _, settings, _ in _KINDS}
_MEASURES_OF = {kind: measures for kind, _, _, measures in _KINDS}
STRONG = 0.5  # |rho| at which the findings name a row
_PROXY_NAMES = {"spike_k4_retained": "spike K=4 kept", "hard_k4_retained": "hard K=4 kept"}


def study_row(name: str, report: Mapping[str, Any]) -> tuple[str, str] | None:
    """(protocol, variant) of the study's row that matches the run: from a ``<collection>/<variant>/...`` path
    (``raw`` is the untrained model), else ("raw", "raw") for the untrained model's weights; None when neither tells."""
    parts, collection = name.split("/"), report["data"]["name"]
    if collection in parts[:-2]:
        variant = parts[parts.index(collection) + 1]
        return ("raw", "raw") if variant == "raw" else ("retrained", variant)
    return ("raw", "raw") if (report.get("encoder") or {}).get("weights") == "base" else None


def _row(collection: str, protocol: str, variant: str, head: str, spike: Any, hard: Any, seeds: list) -> dict[str, Any]:
    return {"collection": collection, "protocol": protocol, "variant": variant, "head": head, "seeds": seeds,
            "retained": {"spike": {"4": {"mean": spike}}, "hard": {"4": {"mean": hard}}}}


def proxy_summary(study: Mapping[str, Any] | None, recipe_search: Mapping[str, Any] | None = None,
                  directions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"rows": [...]}`` in the study summary's shape (what :func:`~lir_robust.studies.attack_summary.study_proxy`
    reads): the study's rows, then the recipe search's and the coherence direction's (see the module's doc)."""
    rows = list((study or {}).get("rows", [])) + list((recipe_search or {}).get("rows", []))
    rows += [_row(SCREEN_COLLECTION, "raw", "raw", row["head"], row["retained_spike_k4"], row["retained_hard_k4"], [None])
             for row in (recipe_search or {}).get("raw_screen", [])]
    screen = (directions or {}).get("coherence_screen") or {}
    most: dict[str, int] = {}
    for row in screen.get("rows", []):
        most[row["data"]] = max(most.get(row["data"], 0), row["queries"])
    rows += [_row(row["data"], "raw", "raw", row["head"], row["retained_spike_k4"], row["retained_hard_k4"], [None])
             for row in screen.get("rows", []) if row["queries"] == most[row["data"]]]
    own: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in ((directions or {}).get("coherence_retrained") or {}).get("per_seed", []):
        if row.get("protocol") != "swap" and row["trained_with"] == row["scored_with"]:
            own.setdefault((row["collection"], row["scored_with"]), []).append(row)
    rows += [_row(collection, "retrained", variant_name(head), head, fmean([r["retained_spike_k4"] for r in members]),
                  fmean([r["retained_hard_k4"] for r in members]), sorted(r["seed"] for r in members))
             for (collection, head), members in own.items()]
    return {"rows": rows}


def _standard(config: Mapping[str, Any], kind: str) -> bool:
    if config["attack"] != kind:
        return False
    defaults = {"objective": "mean", "candidates": 32, "positions": 1}  # runs that predate these options ran with these
    return all(config.get(key, defaults.get(key)) == value for key, value in _SETTINGS[kind].items())


def correlation_points(runs: Sequence[tuple[str, Mapping[str, Any]]], proxies: Mapping[str, Any] | None,
                       kind: str) -> dict[str, list[dict[str, Any]]]:
    """Per collection, one point per (model, head) with a ``kind`` run at N = 10 (HotFlip: the suite's settings):
    ``{"model", "head", "run", <MEASURES>, <proxies>}``, the first run by name where several match; the untrained
    model's points first, then each collection's in (model, head) order."""
    points: dict[str, dict[tuple[str, str, str], dict[str, Any]]] = {}
    for name, report in sorted(runs, key=lambda item: item[0]):
        row = study_row(name, report)
        if row is None or not _standard(report["config"], kind):
            continue
        collection = report["data"]["name"]
        for head, entry in report["results"].items():
            if (*row, head) not in points.setdefault(collection, {}):
                values = study_proxy(proxies, collection, row[0], row[1], head)
                # a retrained model is named by its head when it is that head's plain variant (the usual case)
                model = ("untrained" if row[0] == "raw" else
                         "retrained" + ("" if row[1] == variant_name(head) else f" ({row[1]})"))
                points[collection][(*row, head)] = {"model": model, "head": head, "run": name,
                                                    **{measure: entry["metrics"].get(measure) for measure in _MEASURES_OF[kind]},
                                                    **{proxy: values[proxy] for proxy in PROXIES}}
    return {collection: [found[key] for key in sorted(found, key=lambda key: (key[0] != "raw", key[1], key[2]))]
            for collection, found in points.items()}


def _variants(points: Sequence[Mapping[str, Any]]) -> str:
    """``untrained: maxsim; softmax:tau=1.0 / retrained: maxsim`` (each model's heads, in the points' order)."""
    heads: dict[str, list[str]] = {}
    for point in points:
        heads.setdefault(point["model"], []).append(point["head"])
    return " / ".join(f"{model}: {'; '.join(names)}" for model, names in heads.items()) or "-"


def _known(point: Mapping[str, Any], proxy: str, measure: str) -> bool:
    return all(real_value(point[key]) is not None for key in (proxy, measure))


def correlation_lines(runs: Sequence[tuple[str, Mapping[str, Any]]], proxies: Mapping[str, Any] | None) -> list[str]:
    """The "proxy against text attacks" subsection: per collection the points, then rho per proxy and attack."""
    by_kind = {kind: correlation_points(runs, proxies, kind) for kind, *_ in _KINDS}
    collections = sorted({collection for found in by_kind.values() for collection in found})
    if not collections:
        return []
    lines = ["### The embedding-level proxy against the text attacks", "",
             "Spearman's rho (ties share their mean rank) over the variants (model, head) of a collection that have both "
             "the proxy and the attack's measure: the untrained model's heads and the retrained models, each attacked "
             "through the head it was trained with, together. Attacks: " + "; ".join(label for _, label, *_ in _KINDS) + ". "
             "The proxies are shares kept (higher = more robust), so a proxy that predicts the text attack has rho < 0. "
             "A retrained model's proxy is its source's mean over the seeds it ran (the attacked model is seed 0); fewer "
             "than 3 variants: too few. Computed from the runs above (lir_robust/studies/text_attack_proxy.py).", ""]
    lines += table_header(["collection", "text attack", "measure", "proxy", "n", "Spearman's rho", "variants used"])
    strong: dict[bool, list[str]] = {True: [], False: []}  # |rho| >= STRONG: predicts (rho < 0) / the opposite
    for collection in collections:
        for kind, label, _, measures in _KINDS:
            points = by_kind[kind].get(collection, [])
            for measure in measures:
                for proxy in PROXIES:
                    used = [point for point in points if _known(point, proxy, measure)]
                    rho = spearman([point[proxy] for point in used], [point[measure] for point in used])
                    value = "too few" if len(used) < 3 else "undefined (a constant column)" if rho is None else f"{rho:+.2f}"
                    lines.append(table_row([collection, label, measure, _PROXY_NAMES[proxy], len(used), value,
                                            _variants(used)]))
                    if rho is not None and len(used) >= 3 and abs(rho) >= STRONG:
                        strong[rho < 0].append(f"{collection} {kind} {measure} / {_PROXY_NAMES[proxy]} ({rho:+.2f})")
    lines += ["", f"- The proxy ranks the variants as the text attack does (rho <= -{STRONG}): "
              + ("; ".join(strong[True]) or "no row") + ".",
              f"- The opposite (rho >= +{STRONG}: the variants the proxy calls robust are the easier to attack): "
              + ("; ".join(strong[False]) or "no row") + ".", ""]
    for collection in collections:
        lines += [f"Points, {collection}:", ""]
        lines += table_header(["model", "head", "spike K=4 kept", "hard K=4 kept"]
                              + [f"{kind} {measure}" for kind, _, _, measures in _KINDS for measure in measures])
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, _, _, measures in _KINDS:
            for point in by_kind[kind].get(collection, []):
                entry = merged.setdefault((point["model"], point["head"]), {**point})
                entry.update({f"{kind} {measure}": point[measure] for measure in measures})
        for key in sorted(merged, key=lambda key: (key[0] != "untrained", key)):
            point = merged[key]
            lines.append(table_row([*key, percent(point["spike_k4_retained"]), percent(point["hard_k4_retained"])]
                                   + [percent(point.get(f"{kind} {measure}")) for kind, _, _, measures in _KINDS for measure in measures]))
        lines.append("")
    return lines
