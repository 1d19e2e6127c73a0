"""Screen numbers of coherence-aware matching from length-sweep results.json files -> summary.json + table.md.

    python results/recipe-search/coherence/summarize.py OUT_DIR NAME=RESULTS_JSON [NAME=RESULTS_JSON ...]

The coherent head retrained (sweep-<collection>-s<seed>/) and swapped in (swap-<collection>-s<seed>/: the
recipe search's retrained-maxsim encoder scored with it) -> retrained.json + retrained.md beside this file, per-seed
rows in the recipe search's schema (lir_robust.studies.directions.sweep_seed_rows; needs PYTHONPATH=$PWD), paired
against <baselines>/<collection>-maxsim-seed<seed>.json where it exists:

    python results/recipe-search/coherence/summarize.py --retrained RUNS_DIR [--baselines DIR]

Per head: nDCG@10 at K = 0, retained nDCG@10 at spike / hard K = 4, median hijack budgets (null: above the largest K),
and the paired difference of clean nDCG@10 to maxsim on the same queries (from any given file; mean and standard
error over queries).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


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


def retrained(runs: Path, baselines: Path | None) -> None:
    """retrained.json + retrained.md from every finished sweep / swap folder under ``runs``."""
    import re

    from lir_robust.core.files import write_json_atomic, write_text_atomic
    from lir_robust.studies.directions import maxsim_baseline, sweep_seed_rows

    rows, found, missing, paired_with = [], [], [], {}
    for folder in sorted(runs.glob("*-s*")):
        match = re.fullmatch(r"(sweep|swap)-(.+)-s(\d+)", folder.name)
        if not match or not folder.is_dir():
            continue
        protocol, collection, seed = match.group(1), match.group(2), int(match.group(3))
        path = folder / "results.json"
        if not path.is_file():
            missing.append(folder.name)
            continue
        results = json.loads(path.read_text())
        model_config = Path(results["config"]["model"]) / "config.json"
        injected = json.loads(model_config.read_text()).get("injected_negatives") if model_config.is_file() else None
        baseline_path, baseline = maxsim_baseline(baselines, collection, seed)
        if baseline is not None:
            paired_with[f"{collection}:{seed}"] = str(baseline_path)
        rows += [dict(row, protocol=protocol) for row in sweep_seed_rows(results, collection, seed, injected, baseline)]
        found.append(str(path))
    rows.sort(key=lambda row: (row["collection"], row["protocol"], row["seed"], row["scored_with"]))
    summary = {"plan": {"finetune_args": [], "reference": "results/study/summary.json", "kinds": ["spike", "hard"],
                        "ks": [0, 4], "note": "budgets null: the sweeps ran K = 0 and 4 only; paired differences null "
                        "where no maxsim baseline of that collection and seed was given"},
               "sources": found, "unfinished": missing, "paired_with": paired_with, "per_seed": rows}
    write_json_atomic(HERE / "retrained.json", summary)
    lines = ["| collection | seed | trained with | scored with | nDCG@10 K=0 | vs maxsim K=0 (paired, ±SE) | retained spike K=4 | retained hard K=4 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        paired = row["paired_ndcg10_vs_maxsim_hard_k0"]
        paired_text = "" if paired is None else f"{paired['mean']:+.4f} ± {paired['se']:.4f}"
        lines.append(f"| {row['collection']} | {row['seed']} | `{row['trained_with']}` | `{row['scored_with']}` | "
                     f"{row['ndcg10_k0']:.3f} | {paired_text} | "
                     f"{100 * row['retained_spike_k4']:.1f} % | {100 * row['retained_hard_k4']:.1f} % |")
    if missing:
        lines += ["", "Not finished when summarised: " + ", ".join(missing) + "."]
    write_text_atomic(HERE / "retrained.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--retrained":
        rest = argv[1:]
        baselines = Path(rest[rest.index("--baselines") + 1]) if "--baselines" in rest else None
        retrained(Path(rest[0]), baselines)
        return
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
