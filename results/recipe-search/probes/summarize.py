"""Probes of issue 20's directions (run.sh beside this file) -> summary.json + table.md here: per-seed rows in the
recipe search's schema (lir_robust.studies.directions.sweep_seed_rows), one per scoring head, labelled with the
probe's extra fine-tuning options; paired against BASELINES/<collection>-maxsim-seed<seed>.json (retrained maxsim,
the study's whole K grid) where that file exists. A probe folder may also hold sweeps of an earlier probe's model with
other heads (over K = 0 and 4 only: budgets '-'): a head swept twice for the same weights is reported once, from the
whole K grid, and from the probe that fine-tuned the model. `make results-doc` puts the rows into docs/RESULTS.md ("Directions
tried").

    PYTHONPATH=$PWD python results/recipe-search/probes/summarize.py RUNS [--baselines DIR]
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from lir_robust.core.files import write_json_atomic, write_text_atomic
from lir_robust.studies.directions import maxsim_baseline, sweep_seed_rows

HERE = Path(__file__).resolve().parent


def summarize(runs: Path, baselines: Path | None) -> dict:
    rows, sources, unfinished, paired_with = [], [], [], {}
    for folder in sorted(runs.glob("*/sweep-*-s*")):
        match = re.fullmatch(r"sweep-(.+)-s(\d+)", folder.name)
        if not match:
            continue
        collection, seed, probe = match.group(1), int(match.group(2)), folder.parent.name
        path = folder / "results.json"
        if not path.is_file():
            unfinished.append(f"{probe}/{folder.name}")
            continue
        results = json.loads(path.read_text())
        extra_file = folder.parent / "extra.txt"
        extra = extra_file.read_text().split() if extra_file.is_file() else []
        baseline_path, baseline = maxsim_baseline(baselines, collection, seed)
        if baseline is not None:
            paired_with[f"{collection}:{seed}"] = str(baseline_path)
        rows += [dict(row, probe=probe, finetune_args=extra) for row in sweep_seed_rows(results, collection, seed, None, baseline)]
        sources.append(str(path))
    # The same encoder scored with the same head in two probes (a probe that only scores an earlier probe's model with
    # new heads sweeps the old ones beside them) is one measurement: the row from the whole K grid (with budgets)
    # stays, and among those the one of the probe that fine-tuned the model (RUNS/models/<probe>).
    def preference(row):
        return (row["budget_median_spike"] is not None, (runs / "models" / row["probe"]).is_dir())

    kept = {}
    for row in rows:
        key = (row["weights"], row["collection"], row["seed"], row["scored_with"]) if row["weights"] else id(row)
        if key not in kept or preference(row) > preference(kept[key]):
            kept[key] = row
    rows = list(kept.values())
    rows.sort(key=lambda row: (row["probe"], row["collection"], row["seed"], row["scored_with"]))
    return {"plan": {"finetune_args": [], "reference": "results/study/summary.json", "kinds": ["spike", "hard"],
                     "ks": [0, 1, 2, 4, 8, 16, 25, 50], "recipe": "the study's 40 LoRA steps, one thread, no injected negatives"},
            "sources": sources, "unfinished": unfinished, "paired_with": paired_with, "per_seed": rows}


def table(summary: dict) -> str:
    lines = ["| probe | collection | seed | trained with | scored with | nDCG@10 K=0 | vs maxsim K=0 (paired, ±SE) | "
             "retained spike K=4 | retained hard K=4 | budget spike / hard |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary["per_seed"]:
        paired = row["paired_ndcg10_vs_maxsim_hard_k0"]
        paired_text = "" if paired is None else f"{paired['mean']:+.4f} ± {paired['se']:.4f}"
        budgets = " / ".join("-" if row[f"budget_median_{kind}"] is None  # the sweep ran K = 0 and 4 only
                             else "> 50" if row[f"budget_median_{kind}"] == math.inf  # not reached within the K grid
                             else f"{row[f'budget_median_{kind}']:g}" for kind in ("spike", "hard"))
        lines.append(f"| {row['probe']} | {row['collection']} | {row['seed']} | `{row['trained_with']}` | "
                     f"`{row['scored_with']}` | {row['ndcg10_k0']:.3f} | {paired_text} | "
                     f"{100 * row['retained_spike_k4']:.1f} % | {100 * row['retained_hard_k4']:.1f} % | {budgets} |")
    if summary["unfinished"]:
        lines += ["", "Not finished when summarised: " + ", ".join(summary["unfinished"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    baselines = Path(argv[argv.index("--baselines") + 1]) if "--baselines" in argv else None
    summary = summarize(Path(argv[0]), baselines)
    write_json_atomic(HERE / "summary.json", summary)
    text = table(summary)
    write_text_atomic(HERE / "table.md", text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
