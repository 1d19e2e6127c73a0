"""Screen numbers of coherence-aware matching from length-sweep results.json files -> summary.json + table.md.

    python results/recipe-search/coherence/summarize.py OUT_DIR NAME=RESULTS_JSON [NAME=RESULTS_JSON ...]

Per head: nDCG@10 at K = 0, retained nDCG@10 at spike / hard K = 4, median hijack budgets (null: above the largest K),
and the paired difference of clean nDCG@10 to maxsim on the same queries (from any given file; mean and standard
error over queries).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def rows_of(name: str, path: str, references: dict) -> list[dict]:
    results = json.loads(Path(path).read_text())
    metrics = results["metrics"]
    key = (results["data"]["name"], tuple(results["query_ids"]))
    base = metrics.get("maxsim") or references.get(key)  # maxsim of another file with the same queries
    rows = []
    for head, kinds in metrics.items():
        clean = kinds["spike"]["by_k"]["0"]
        row = {"run": name, "data": results["data"]["name"],
               "queries": results["evaluated_queries"], "head": head, "ndcg10_k0": clean["mean"]["ndcg@10"]}
        for kind in ("spike", "hard"):
            row[f"retained_{kind}_k4"] = kinds[kind]["by_k"]["4"]["retained"]["ndcg@10"]
            row[f"ndcg10_{kind}_k4"] = kinds[kind]["by_k"]["4"]["mean"]["ndcg@10"]
            budget = kinds[kind]["hijack_budget"]["median"]  # inf: not reached within the K grid
            row[f"hijack_budget_{kind}"] = None if budget is None or math.isinf(budget) else budget
        if base is not None and head != "maxsim":
            ours, theirs = clean["per_query"]["ndcg@10"], base["spike"]["by_k"]["0"]["per_query"]["ndcg@10"]
            diffs = [a - b for a, b in zip(ours, theirs)]
            mean = sum(diffs) / len(diffs)
            se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
            row["paired_ndcg10_k0_vs_maxsim"] = {"mean": mean, "se": se}
        rows.append(row)
    return rows


def _budget(value: float) -> str:
    return "> 4" if value is None else f"{value:g}"


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    references = {}
    for item in argv[1:]:
        results = json.loads(Path(item.split("=", 1)[1]).read_text())
        if "maxsim" in results["metrics"]:
            references.setdefault((results["data"]["name"], tuple(results["query_ids"])), results["metrics"]["maxsim"])
    rows = [row for item in argv[1:] for row in rows_of(*item.split("=", 1), references)]
    lines = ["| run | head | queries | nDCG@10 K=0 | vs maxsim (paired, ±SE) | retained spike K=4 | retained hard K=4 | budget spike | budget hard |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        paired = row.get("paired_ndcg10_k0_vs_maxsim")
        paired_text = "" if paired is None else f"{paired['mean']:+.4f} ± {paired['se']:.4f}"
        budget = {kind: row[f"hijack_budget_{kind}"] for kind in ("spike", "hard")}
        lines.append(f"| {row['run']} | `{row['head']}` | {row['queries']} | {row['ndcg10_k0']:.3f} | {paired_text} | "
                     f"{100 * row['retained_spike_k4']:.1f} % | {100 * row['retained_hard_k4']:.1f} % | "
                     f"{_budget(budget['spike'])} | {_budget(budget['hard'])} |")
    (out / "summary.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
