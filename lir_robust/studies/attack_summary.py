"""The text-attack study's summary (issue 19.1d): per collection, model and head, every text-attack number beside the
embedding-level proxy, and the rank correlation between them over variants.

Rows (:func:`attack_rows`): clean nDCG@10; success@1/10/100 per passage kind (cluster-text, hotflip) and N;
retained nDCG@10 and hijack@10 per insertion L, stuffing T and the query-text ceiling; the proxy from the retraining
study's summary.json (spike and hard K = 4 retained of the same variant and head: protocol ``retrained`` for a
retrained model, ``raw`` for raw MiniLM; a mean over the study's seeds, as its summary holds it).

Earlier summaries (:func:`merge_earlier`): ``summary.json`` files of the same attack settings whose run folders are
gone (another machine, an earlier session) kept in ``<out>/earlier/*summary.json``. Their rows fill in the
measures this folder's runs do not have (a run here always wins); each merged row lists those measures under
``earlier_measures`` and the table marks them. Their proxies are read again from this study's summary.

Correlations (:func:`correlations`): Spearman's rho (ties get their mean rank) between each proxy and each text-attack
number, over the retrained variants of a collection (each with its own head) and, separately, over raw MiniLM's
heads. The proxies are shares kept (higher = more robust): a proxy that predicts the text attacks correlates
negatively with success@k and hijack@10 and positively with retained nDCG@10. Fewer than 3 points, or a constant
column: no value (None).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from lir_robust.core.errors import UserError
from lir_robust.core.files import write_json_atomic, write_text_atomic
from lir_robust.reporting.format import number, percent, table_header, table_row
from lir_robust.studies.retraining import part_seconds, step_timings

__all__ = ["PROXIES", "spearman", "study_proxy", "attack_rows", "read_earlier", "merge_earlier", "correlations", "summarize_attacks",
           "earlier_part_seconds", "render_table", "plot_proxy", "EarlierSummaryError", "PLOTTED_MEASURE"]

#: the plan settings two summaries must share to be merged (the study folder may differ: the same models elsewhere)
MERGE_KEYS = ("iterations", "candidates", "max_queries", "seed")


class EarlierSummaryError(UserError):
    """An earlier summary that cannot be merged (unreadable, or of other attack settings)."""

PROXIES = ("spike_k4_retained", "hard_k4_retained")
PLOTTED_MEASURE = "hotflip N=10 success@10"  # the text attack plot_proxy sets against the proxies
PASSAGE_KINDS = ("cluster-text", "hotflip")
EDIT_KINDS = ("insertion", "stuffing", "query-text")


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda index: values[index])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(xs: Sequence[Any], ys: Sequence[Any]) -> float | None:
    """Spearman's rho of the pairs where both values are finite numbers; None with fewer than 3 such pairs or a
    constant side."""
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys) if _real(x) and _real(y)]
    if len(pairs) < 3:
        return None
    rx, ry = _ranks([x for x, _ in pairs]), _ranks([y for _, y in pairs])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def study_proxy(study_summary: dict[str, Any] | None, collection: str, protocol: str, variant: str, head: str) -> dict[str, Any]:
    """The embedding-level proxy of one (collection, protocol, variant, head) row of the retraining study's summary:
    spike and hard K = 4 retained (means over its seeds), None where the summary has no such row."""
    for row in (study_summary or {}).get("rows", []):
        if (row["collection"], row["protocol"], row["variant"], row["head"]) == (collection, protocol, variant, head):
            retained = row["retained"]
            return {"spike_k4_retained": retained.get("spike", {}).get("4", {}).get("mean"),
                    "hard_k4_retained": retained.get("hard", {}).get("4", {}).get("mean"), "proxy_seeds": row.get("seeds")}
    return {"spike_k4_retained": None, "hard_k4_retained": None, "proxy_seeds": None}


def _measures(config: dict[str, Any], metrics: dict[str, float]) -> dict[str, float]:
    """The text-attack numbers one run gives one head, keyed ``<kind> N=<n> <metric>`` / ``<kind> L=<l> <metric>``."""
    kind = config["attack"]
    if kind in PASSAGE_KINDS:
        label = f"{kind} N={config['n']}"
        return {f"{label} success@{k}": metrics[f"success@{k}"] for k in (1, 10, 100)}
    label = {"insertion": f"insertion L={config['length']}", "stuffing": f"stuffing T={config['length']}"}.get(kind, kind)
    return {f"{label} retained": metrics["ndcg@10_retained"], f"{label} hijack@10": metrics["hijack@10"]}


def _measure_order(name: str) -> tuple:
    """Columns in the suite's order: kind, then N / L / T as numbers, then the metric."""
    kinds = ("cluster-text", "hotflip", "insertion", "stuffing", "query-text")
    words = name.split()
    setting = words[1].split("=")[1] if len(words) > 2 and "=" in words[1] else "0"
    return (kinds.index(words[0]) if words[0] in kinds else len(kinds), int(setting) if setting.isdigit() else 0, words[-1])


def attack_rows(runs_folder: str | os.PathLike, study_summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per (collection, model, head) from every finished run under ``runs/<collection>/<model>/``."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for results_path in sorted(Path(runs_folder).glob("*/*/**/results.json")):
        relative = results_path.relative_to(runs_folder).parts
        if "partial" in relative:
            continue
        collection, model = relative[0], relative[1]
        report = json.loads(results_path.read_text())
        for head, entry in report["results"].items():
            row = rows.setdefault((collection, model, head), {
                "collection": collection, "model": model, "head": head, "clean_ndcg10": entry["metrics"]["ndcg@10_clean"],
                "held_out_queries": report["split"]["held_out_queries"], "measures": {}, "hotflip_seconds_per_iteration": {},
                **study_proxy(study_summary, collection, "raw" if model == "raw" else "retrained", model, head)})
            row["measures"].update(_measures(report["config"], entry["metrics"]))
            if entry.get("hotflip"):
                stats = entry["hotflip"]
                row["hotflip_seconds_per_iteration"][relative[2]] = sum(s.get("seconds_per_iteration", 0) for s in stats) / len(stats)
    return list(rows.values())


def read_earlier(out: str | os.PathLike) -> list[tuple[Path, dict[str, Any]]]:
    """``(path, summary)`` of every ``<out>/earlier/*summary.json``, each read once; an unreadable one is refused."""
    found = []
    for path in sorted((Path(out) / "earlier").glob("*summary.json")):
        try:
            summary = json.loads(path.read_text())
            if not isinstance(summary.get("rows"), list):
                raise ValueError("no list of rows")
        except (OSError, ValueError, AttributeError) as error:
            raise EarlierSummaryError(f"cannot read the earlier attack summary {path} ({error}); move it out of the "
                                      "earlier/ folder or restore it") from None
        found.append((path, summary))
    return found


def merge_earlier(rows: list[dict[str, Any]], earlier: Sequence[tuple[Path, dict[str, Any]]], plan: dict[str, Any] | None,
                  study_summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``rows`` with every measure of the ``earlier`` summaries (:func:`read_earlier`) that they lack (rows of this
    folder's runs win); refuses a summary of other attack settings (:data:`MERGE_KEYS`)."""
    merged = {(row["collection"], row["model"], row["head"]): row for row in rows}
    for path, summary in earlier:
        their_rows, their_plan = summary["rows"], summary.get("plan") or {}
        differing = [key for key in MERGE_KEYS if plan is not None and their_plan.get(key) != plan.get(key)]
        if differing:
            raise EarlierSummaryError(f"the earlier attack summary {path} used other settings ({', '.join(differing)}: "
                                      f"{[their_plan.get(key) for key in differing]} here {[plan.get(key) for key in differing]}); "
                                      "its numbers do not belong in this table: move it out of the earlier/ folder")
        for old in their_rows:
            key = (old["collection"], old["model"], old["head"])
            row = merged.get(key)
            if row is None:
                row = merged[key] = {**{name: old[name] for name in ("collection", "model", "head", "clean_ndcg10",
                                                                    "held_out_queries")},
                                     "measures": {}, "hotflip_seconds_per_iteration": {},
                                     **study_proxy(study_summary, old["collection"],
                                                   "raw" if old["model"] == "raw" else "retrained", old["model"], old["head"])}
            taken = [name for name in old["measures"] if name not in row["measures"]]
            row["measures"].update({name: old["measures"][name] for name in taken})
            for run, seconds in old.get("hotflip_seconds_per_iteration", {}).items():
                row["hotflip_seconds_per_iteration"].setdefault(run, seconds)
            if taken:
                row.setdefault("earlier_measures", {})[str(path)] = taken
    return list(merged.values())


def correlations(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spearman's rho between each proxy and each text-attack number, per collection, over the retrained variants
    (``group`` retrained) and over raw MiniLM's heads (``group`` raw)."""
    out = []
    for collection in dict.fromkeys(row["collection"] for row in rows):
        for group in ("retrained", "raw"):
            members = [row for row in rows if row["collection"] == collection and (row["model"] == "raw") == (group == "raw")]
            measures = sorted(dict.fromkeys(name for row in members for name in row["measures"]), key=_measure_order)
            for proxy in PROXIES:
                for measure in measures:
                    xs = [row[proxy] for row in members]
                    ys = [row["measures"].get(measure) for row in members]
                    points = sum(_real(x) and _real(y) for x, y in zip(xs, ys))
                    out.append({"collection": collection, "group": group, "proxy": proxy, "measure": measure,
                                "spearman": spearman(xs, ys), "points": points})
    return out


def summarize_attacks(out: str | os.PathLike, study: str | os.PathLike, plan: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read every finished run under ``out/runs`` and write ``summary.json`` + ``table.md`` into ``out``."""
    out = Path(out)
    study_summary_path = Path(study) / "summary.json"
    study_summary = json.loads(study_summary_path.read_text()) if study_summary_path.is_file() else None
    earlier = read_earlier(out)
    rows = merge_earlier(attack_rows(out / "runs", study_summary), earlier, plan, study_summary)
    summary = {"plan": plan, "study": str(study), "rows": rows, "correlations": correlations(rows),
               "timings": _timings(out, earlier), "earlier": [str(path) for path, _ in earlier],
               "notes": {
                   "proxy": "spike / hard K = 4 retained nDCG@10 from the retraining study's summary.json (same variant "
                            "and head; protocol retrained, or raw for raw MiniLM), mean over the study's seeds "
                            "(proxy_seeds); the attacked model is seed 0",
                   "spearman": "over retrained variants (each with its own head) or over raw MiniLM's heads, per "
                               "collection; a predictive proxy is negative against success@k / hijack@10, positive "
                               "against retained; None: fewer than 3 points or a constant column",
                   "measures": "success@k: share of held-out queries with an adversarial passage in the top k; "
                               "retained: attacked / clean nDCG@10; hijack@10: share of held-out queries whose top 10 "
                               "gains an edited document"}}
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "table.md", render_table(summary))
    return summary


def earlier_part_seconds(earlier: Sequence[tuple[Path, dict[str, Any]]]) -> dict[str, tuple[Path, float]]:
    """``{part: (summary path, seconds)}`` of the parts the earlier summaries timed (the first summary wins)."""
    found: dict[str, tuple[Path, float]] = {}
    for path, summary in earlier:
        for part, seconds in (summary.get("timings") or {}).get("parts_s", {}).items():
            found.setdefault(part, (path, seconds))
    return found


def _timings(out: Path, earlier: Sequence[tuple[Path, dict[str, Any]]] = ()) -> dict[str, Any]:
    """Seconds per part: this folder's, then the parts only an earlier summary ran (marked ``earlier_parts``)."""
    parts = part_seconds(step_timings(out))
    before = {part: seconds for part, (_, seconds) in earlier_part_seconds(earlier).items() if part not in parts}
    if before:
        parts = {**parts, **before}
        return {"parts_s": parts, "total_s": sum(parts.values()), "earlier_parts": sorted(before)}
    return {"parts_s": parts, "total_s": sum(parts.values())} if parts else {}


def render_table(summary: dict[str, Any], level: int = 1, intro: Sequence[str] = ()) -> str:
    """table.md: per collection, the rows (clean, proxies, every measure) and the correlations; ``level``: the
    title's heading level (docs/RESULTS.md nests it at 2), ``intro``: lines under the title."""
    title, sub = "#" * level, "#" * (level + 1)
    lines = [f"{title} Text attacks on the retraining study's models", "", *intro]
    rows = summary["rows"]
    for collection in dict.fromkeys(row["collection"] for row in rows):
        members = [row for row in rows if row["collection"] == collection]
        measures = sorted(dict.fromkeys(name for row in members for name in row["measures"]), key=_measure_order)
        lines += [f"{sub} {collection}", "",
                  *table_header(["model", "head", "clean nDCG@10", "spike K=4 kept", "hard K=4 kept", *measures])]
        for row in members:
            before = {name for names in row.get("earlier_measures", {}).values() for name in names}
            lines.append(table_row([row["model"], row["head"], number(row["clean_ndcg10"]), percent(row["spike_k4_retained"]),
                                    percent(row["hard_k4_retained"]),
                                    *(percent(row["measures"].get(name)) + ("*" if name in before else "")
                                      for name in measures)]))
        if any(row.get("earlier_measures") for row in members):
            lines += ["", "\\* from an earlier run of the same settings whose run folders are not here: "
                      + ", ".join(dict.fromkeys(path for row in members for path in row.get("earlier_measures", {}))) + "."]
        found = [c for c in summary["correlations"] if c["collection"] == collection and c["spearman"] is not None]
        if found:
            lines += ["", "Spearman's rho, proxy against text attack (negative against success / hijack = the proxy "
                      "predicts):", "", *table_header(["group", "measure", *PROXIES])]
            for group in ("retrained", "raw"):
                for measure in dict.fromkeys(c["measure"] for c in found if c["group"] == group):
                    values = {c["proxy"]: c for c in found if c["group"] == group and c["measure"] == measure}
                    lines.append(table_row([group, measure, *(f"{values[p]['spearman']:+.2f} (n={values[p]['points']})"
                                                              if p in values else "-" for p in PROXIES)]))
        lines.append("")
    timings = summary.get("timings", {}).get("parts_s", {})
    if timings:
        before = set(summary["timings"].get("earlier_parts", ()))
        lines += [f"{sub} Time per part", "", *table_header(["part", "seconds"]),
                  *(table_row([part + (" *" if part in before else ""), f"{seconds:.0f}"]) for part, seconds in timings.items()),
                  *(["", "\\* measured in an earlier run (earlier/)."] if before else []), ""]
    return "\n".join(lines)


def plot_proxy(summary: dict[str, Any], path: str | os.PathLike, measure: str = PLOTTED_MEASURE) -> Path | None:
    """PNG: per collection and proxy, each (model, head) row as a point, proxy kept against ``measure`` (retrained
    models and raw MiniLM's heads told apart); None where no row has both."""
    from lir_robust.reporting.figures import plot_scatter_panels

    names = {"spike_k4_retained": "spike K=4 kept", "hard_k4_retained": "hard K=4 kept"}
    panels = []
    for collection in dict.fromkeys(row["collection"] for row in summary["rows"]):
        for proxy in PROXIES:
            points = [(row["head"] if row["model"] == "raw" else row["model"], "raw MiniLM" if row["model"] == "raw" else "retrained",
                       row[proxy], row["measures"][measure]) for row in summary["rows"]
                      if row["collection"] == collection and _real(row[proxy]) and _real(row["measures"].get(measure))]
            panels.append((f"{collection}: {names[proxy]}", points))
    return plot_scatter_panels(panels, "embedding-level proxy: share of nDCG@10 kept (%)", f"{measure} (%)",
                               "Does the embedding-level proxy predict the text attack? (make attack)", path)
