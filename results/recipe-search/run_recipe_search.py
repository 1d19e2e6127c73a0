"""Issue 20 recipe search (soft maximum + capacity heads): the retraining study's own steps for a few heads, and a
summary against the study's retrained maxsim.

The study runner (lir_robust.studies.retraining) always trains maxsim beside the other heads; on a shared 2-core
machine that triples the cost, and results/study/summary.json already holds retrained maxsim with the same recipe and
seeds. So this driver builds the study's plan (StudyPlan, plan_steps: the same fine-tuning command, the same sweep
configuration) and runs only the steps asked for; `summarize` reads the finished sweeps (summarize_study's records),
adds the study's retrained maxsim rows and applies the study's own target check (_targets).

    python results/recipe-search/run_recipe_search.py run --out runs/recipe-search --heads blend:... \
        --collections cranfield:0,1,2 --only 'blend'
    python results/recipe-search/run_recipe_search.py summarize --out runs/recipe-search --heads blend:... \
        --collections cranfield:0,1,2 med:0 --write results/recipe-search/summary.json

A defended variant (HEAD+defence, fine-tuned with --injected-negatives DEFENCE; one --defence per --out):

    python results/recipe-search/run_recipe_search.py run --out runs/corpus-hard --heads exclusive \
        --defended-heads exclusive --defence spike:4 hard-corpus:4 --collections cranfield:0 --only defence
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

from lir_robust.core.files import write_json_atomic
from lir_robust.studies import retraining
from lir_robust.studies.retraining import StudyPlan, plan_steps

KINDS = ["spike", "hard"]
KS = [0, 1, 2, 4, 8, 16, 25, 50]


def _plan(args) -> StudyPlan:
    collections = {}
    for item in args.collections:
        name, _, seeds = item.partition(":")
        collections[name] = [int(seed) for seed in seeds.split(",")]
    defence = {"defence": list(args.defence)} if args.defence else {}
    return StudyPlan(model="minilm", collections=collections, heads=["maxsim", *args.heads],
                     defended_heads=list(args.defended_heads), **defence, kinds=list(KINDS), ks=list(KS),
                     finetune_args=list(args.finetune_args), data_root=args.data_root)


def run(args) -> None:
    plan = _plan(args)
    out = Path(args.out)
    steps = [step for step in plan_steps(plan, out, show_progress=False)
             if not step.part.startswith("raw:") and re.search(args.only, step.name)]
    timings_path = out / f"timings-{args.stream}.json"  # one file per process: streams run side by side
    for step in steps:
        if step.done():
            logging.info("%s: done already", step.name)
            continue
        logging.info("%s ...", step.name)
        started = time.perf_counter()
        step.action()
        seconds = time.perf_counter() - started
        logging.info("%s: %.0f s", step.name, seconds)
        timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
        timings[step.name] = seconds
        write_json_atomic(timings_path, timings, indent=2)


def _paired_baseline(args, collection: str, seed: int) -> dict | None:
    """The retrained maxsim sweep of ``--paired-with COLLECTION:SEED=results.json`` for this collection and seed."""
    for item in args.paired_with:
        key, _, path = item.partition("=")
        if key == f"{collection}:{seed}":
            return json.loads(Path(path).read_text())
    return None


def _paired_difference(results: dict, head: str, baseline: dict, kind: str, k: int) -> dict:
    """Per-query nDCG@10 (this head - maxsim on its own retrained model), same queries: mean and standard error."""
    if results["query_ids"] != baseline["query_ids"]:
        raise SystemExit("--paired-with: the sweeps hold different queries")
    mine = results["metrics"][head][kind]["by_k"][str(k)]["per_query"]["ndcg@10"]
    theirs = baseline["metrics"]["maxsim"][kind]["by_k"][str(k)]["per_query"]["ndcg@10"]
    differences = [a - b for a, b in zip(mine, theirs)]
    n = len(differences)
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1)
    return {"mean": mean, "se": (variance / n) ** 0.5, "n": n}


def summarize(args) -> None:
    plan = _plan(args)
    out = Path(args.out)
    summary = retraining.summarize_study(plan, out)  # writes out/summary.json: this search's rows only
    reference = json.loads(Path(args.reference).read_text())
    rows = [row for row in summary["rows"] if row["variant"] != "maxsim" or row["protocol"] != "retrained"]
    reused = [row for row in reference["rows"] if row["protocol"] == "retrained" and row["variant"] == "maxsim"
              and row["collection"] in plan.collections]
    for row in reused:
        row["source"] = args.reference
    rerun = [row for row in summary["rows"] if row["variant"] == "maxsim" and row["protocol"] == "retrained"]
    for row in rerun:
        row["variant"] = "maxsim-rerun"  # the reproduction check, kept beside the reused baseline
    rows = rows + reused + rerun
    targets = retraining._targets([row for row in rows if row["variant"] != "maxsim-rerun"], plan)
    for target in targets:  # issue 20's spike bar is 60 % (the study checks issue 10's 50 %)
        checks = target["checks"]
        checks.pop("spike_k4_retained_at_least_50pct")
        checks["spike_k4_retained_at_least_60pct"] = target["spike_k4_retained"] >= 0.6
        target["reached"] = all(checks.values())
    per_seed = []
    for collection, seeds in plan.collections.items():
        for seed in seeds:
            for head, defended in [(head, False) for head in plan.heads] + [(head, True) for head in plan.defended_heads]:
                name = retraining.variant_name(head, defended)
                path = out / "sweeps" / collection / name / f"seed{seed}" / "results.json"
                if not path.is_file():
                    continue
                results = json.loads(path.read_text())
                baseline = _paired_baseline(args, collection, seed)
                for scored in results["heads"]:
                    metrics = results["metrics"][scored]
                    paired = {}
                    if baseline is not None:
                        paired = {f"paired_ndcg10_vs_maxsim_{kind}_k{k}": _paired_difference(results, scored, baseline, kind, k)
                                  for kind, k in (("hard", 0), ("spike", 4), ("hard", 4))}
                    per_seed.append({
                        "collection": collection, "seed": seed, "trained_with": head, "scored_with": scored,
                        "injected_negatives": plan.defence if defended else [],
                        "weights": results["encoder"].get("weights"),
                        "ndcg10_k0": metrics["hard"]["by_k"]["0"]["mean"]["ndcg@10"],
                        "retained_spike_k4": metrics["spike"]["by_k"]["4"]["retained"]["ndcg@10"],
                        "retained_hard_k4": metrics["hard"]["by_k"]["4"]["retained"]["ndcg@10"],
                        "budget_median_spike": metrics["spike"]["hijack_budget"]["median"],
                        "budget_median_hard": metrics["hard"]["hijack_budget"]["median"],
                        **paired,
                    })
    screen = []
    for path in args.screen:
        results = json.loads(Path(path).read_text())
        for head in results["heads"]:
            if any(row["head"] == head for row in screen):
                continue
            metrics = results["metrics"][head]
            screen.append({"head": head, "ndcg10_k0": metrics["hard"]["by_k"]["0"]["mean"]["ndcg@10"],
                           "retained_spike_k4": metrics["spike"]["by_k"]["4"]["retained"]["ndcg@10"],
                           "retained_hard_k4": metrics["hard"]["by_k"]["4"]["retained"]["ndcg@10"]})
    timings = {}
    for path in sorted(out.glob("timings-*.json")):
        timings.update(json.loads(path.read_text()))
    result = {
        "plan": {**plan.to_dict(), "reference": args.reference,
                 "note": "retrained maxsim reused from the reference (same recipe, seeds, code path); maxsim-rerun rows "
                         "are this search's own re-run, as a reproduction check"},
        "reference_models": {key: value for key, value in reference.get("models", {}).items()
                             if key.split("/")[1] == "maxsim"},
        "models": summary["models"],
        "raw_screen": screen,
        "targets": targets,
        "per_seed": per_seed,
        "rows": [{key: row[key] for key in ("collection", "protocol", "variant", "head", "seeds", "ndcg10", "retained",
                                            "budget_median", "budget_median_per_seed", "paired_vs_maxsim", "source")
                  if key in row} for row in rows],
        "timings_s": timings,
    }
    write_json_atomic(Path(args.write), result, indent=1)
    for target in targets:
        print(target["collection"], target["variant"], f"gap {target['clean_ndcg10_gap']:+.4f}",
              f"spike4 {100 * target['spike_k4_retained']:.1f}%", f"hard4 {100 * target['hard_k4_retained']:.1f}%",
              f"(maxsim {100 * target['hard_k4_retained_maxsim']:.1f}%)", target["budgets"], target["reached"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "summarize"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--heads", nargs="+", required=True)
    parser.add_argument("--collections", nargs="+", default=["cranfield:0,1,2"])
    parser.add_argument("--defended-heads", nargs="*", default=[],
                        help="heads also trained with --defence (variant HEAD+defence; one --defence per --out)")
    parser.add_argument("--defence", nargs="+", default=None,
                        help="the defended variants' --injected-negatives (default: the study's spike:4 hard:4), e.g. "
                             "spike:4 hard-corpus:4")
    parser.add_argument("--finetune-args", default="", type=str.split,
                        help="extra fine-tuning options for every trained variant, one string: '--corpus-bank-refresh 10'")
    parser.add_argument("--only", default=".", help="regular expression on the step names to run")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--stream", default="main", help="name of this process's timings file (timings-NAME.json)")
    parser.add_argument("--reference", default="results/study/summary.json")
    parser.add_argument("--screen", nargs="*", default=[], help="results.json of the untrained screen sweeps")
    parser.add_argument("--paired-with", nargs="*", default=[], metavar="COLLECTION:SEED=RESULTS",
                        help="retrained maxsim sweeps (results.json) to pair per-seed rows with, per query")
    parser.add_argument("--write", default="results/recipe-search/summary.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    (run if args.action == "run" else summarize)(args)


if __name__ == "__main__":
    main(sys.argv[1:])
