"""Summarise the text-defence comparison (issue 19 item 3) into summary.json + table.md beside this file.

    python results/text-defence/summarize.py --runs cranfield=/work/runs/h3 med=/work/runs/p/defence-med

Reads, per collection (COLLECTION=FOLDER; a bare FOLDER is Cranfield's) and for each model (baseline: fine-tuned without the defence; defended: with --adversarial-passages cluster-text:10
hotflip:10; defended-hotflip: hotflip:10 alone; maxsim: retrained maxsim, the reference of issue 19's second target;
recipe: the default recipe's encoder, trained through softmax:tau=1.0; recipe-hotflip: the same with hotflip:10), the
fine-tune's summary.json / config.json / log.jsonl / adversarial-passages/*.json and the results.json of
eval/attack.py --attack hotflip and --attack cluster-text run against that model and its head.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("baseline", "defended", "defended-hotflip", "maxsim", "recipe", "recipe-hotflip")  # run folders under --runs
ATTACKS = ("hotflip", "cluster-text")


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def summarize(folders: dict[str, Path]) -> dict:
    out = {"models": {}}
    for collection, runs in folders.items():
        for name in MODELS:
            if (runs / name).is_dir():
                out["models"][f"{collection}/{name}"] = {"collection": collection, **_model(runs, name)}
    return out


def _model(runs: Path, name: str) -> dict:
    """One model's fine-tune, clean nDCG@10 and judging attacks, from ``runs/<name>``, ``runs/clean/<name>``, ``runs/attack/<name>/<attack>``."""
    run = runs / name
    summary, config = _read(run / "summary.json"), _read(run / "config.json")
    entry = {"run": str(run), "finished": summary is not None}
    if config:
        entry["finetune"] = {key: config.get(key) for key in ("pooling", "seed", "max_steps", "injected_negatives",
                                                                "adversarial_passages", "adversarial_passage_refresh",
                                                                "adversarial_passage_iterations", "adversarial_passage_length")}
    if summary:
        entry["finetune"].update(median_step_time_s=summary.get("median_step_time_s"), val_loss=summary.get("val_loss"),
                                 val_top1=summary.get("val_top1"))
    builds = sorted((run / "adversarial-passages").glob("step-*.json"))
    if builds:
        entry["passage_builds"] = [{"step": _read(path)["step"], "seconds": _read(path)["seconds"]} for path in builds]
    for attack in ATTACKS:
        report = _read(runs / "attack" / name / attack / "results.json")
        if report is None:
            continue
        (head, result), = report["results"].items()
        item = {"head": head, **{key: result["metrics"][key] for key in result["metrics"]},
                "held_out_queries": report["split"]["held_out_queries"], "seconds_total": report["timings_s"]["total"]}
        if result.get("hotflip"):
            stats = result["hotflip"]
            item["hotflip_seconds_per_iteration"] = sum(s["seconds_per_iteration"] for s in stats) / len(stats)
            item["hotflip_settings"] = {key: report["config"].get(key, 1 if key == "positions" else None)
                                        for key in ("length", "iterations", "positions")}
        entry[attack] = item
    clean = _read(runs / "clean" / name / "results.json")  # eval/length_sweep.py: every judged query, K = 0
    if clean:  # through the head the attacks used (a sweep of several heads), else the sweep's one head
        head = (entry.get("hotflip") or entry.get("cluster-text") or {}).get("head")
        by_kind = clean["metrics"][head] if head in clean["metrics"] else next(iter(clean["metrics"].values()))
        entry["clean_ndcg@10_all_queries"] = next(iter(by_kind.values()))["by_k"]["0"]["mean"]["ndcg@10"]
        entry["clean_queries"] = clean["evaluated_queries"]
    return entry


def markdown(summary: dict) -> str:
    lines = ["# Text defence: adversarial passages as fine-tuning negatives (seed 0, 40 steps)", "",
             "Judged only by NEW attacks optimised against each trained model and its head (held-out half of the "
             "judged queries, seed-0 split; the defence saw only its own pseudo-queries).", "",
             "| model | head | HotFlip L / iterations / positions | clean nDCG@10 (all judged queries) | clean nDCG@10 (held-out) | HotFlip success@1 | success@10 | success@100 | nDCG@10 retained | "
             "cluster-text success@10 | cluster-text retained | median step (s) |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, entry in summary["models"].items():
        hot, black = entry.get("hotflip", {}), entry.get("cluster-text", {})
        cell = lambda d, k, pct=True: ("-" if k not in d else (f"{100 * d[k]:.1f} %" if pct else f"{d[k]:.4f}"))  # noqa: E731
        step = entry.get("finetune", {}).get("median_step_time_s")
        head = (hot or black).get("head", "-")
        setting = " / ".join(str(value) for value in hot["hotflip_settings"].values()) if hot.get("hotflip_settings") else "-"
        lines.append(f"| {name} | `{head}` | {setting} | {cell(entry, 'clean_ndcg@10_all_queries', False)} | {cell(hot or black, 'ndcg@10_clean', False)} | {cell(hot, 'success@1')} | "
                     f"{cell(hot, 'success@10')} | {cell(hot, 'success@100')} | {cell(hot, 'ndcg@10_retained')} | "
                     f"{cell(black, 'success@10')} | {cell(black, 'ndcg@10_retained')} | "
                     f"{'-' if step is None else f'{step:.1f}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, metavar="[COLLECTION=]FOLDER")
    args = parser.parse_args()
    summary = summarize({(item.split("=", 1)[0] if "=" in item else "cranfield"): Path(item.split("=", 1)[-1])
                         for item in args.runs})
    (HERE / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (HERE / "table.md").write_text(markdown(summary))


if __name__ == "__main__":
    main()
