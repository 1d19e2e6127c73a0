"""The text-attack study (thin entry; the logic is lir_robust.studies.attack_study): every model of the retraining study
(seed 0) attacked with text through its own head, raw MiniLM with every head; resumable, in named parts.

    python eval/attack_study.py --study results/study                   # everything: make attack
    python eval/attack_study.py --list-parts                            # the parts, their steps, an estimated cost
    python eval/attack_study.py --parts cranfield:raw cranfield:maxsim:hotflip
    python eval/attack_study.py --summarize-only                        # rebuild summary.json + table.md
    python -m lir_robust.commands.attack_study ...                      # the same, without a checkout
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lir_robust.commands import cli
from lir_robust.core.errors import DataError
from lir_robust.studies.attack_study import (SECONDS_PER_ITERATION_L32, SETUP_SECONDS, AttackPlan, check_plan, estimate_seconds,
                                            measured_like, parts_of, plan_steps, run_attacks)
from lir_robust.studies.attack_summary import earlier_part_seconds, plot_proxy, read_earlier, summarize_attacks
from lir_robust.studies.retraining import step_timings


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="results/study",
                        help="the retraining study's output folder (make study), whose models are attacked")
    parser.add_argument("--models", type=cli.existing_folder, default=None,
                        help="the study's models folder when not <study>/models (a seed-0 study trained with "
                             "`make study OUT=runs`, attacked with the proxies of --study's summary)")
    parser.add_argument("--out", type=cli.output_folder, default="results/attack-study")
    parser.add_argument("--parts", nargs="+", default=None, help="named parts to run (default: all); see --list-parts")
    parser.add_argument("--list-parts", action="store_true", help="print the parts, their steps and estimated cost; run nothing")
    parser.add_argument("--summarize-only", action="store_true", help="only (re)write summary.json + table.md from finished runs (and OUT/earlier/*summary.json)")
    parser.add_argument("--collections", nargs="+", default=None, help="default: every collection of the study with seed 0")
    parser.add_argument("--iterations", type=cli.positive_int, default=100, help="HotFlip iterations per passage")
    parser.add_argument("--candidates", type=cli.positive_int, default=32, help="HotFlip candidate tokens re-scored per iteration")
    parser.add_argument("--robust-variant", default=None,
                        help="the retrained variant that also gets N = 50 passages (default: the one the study's summary marks most robust)")
    parser.add_argument("--queries", type=cli.positive_int, default=None, help="at most this many held-out queries")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0, help="query split and clusters")
    parser.add_argument("--data-root", type=cli.existing_folder, default=None, help="default $LIR_ROBUST_DATA_ROOT")
    parser.add_argument("--threads", type=cli.positive_int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.parts and (args.list_parts or args.summarize_only):
        raise cli.UserError("--parts chooses what to run; drop it with --list-parts or --summarize-only")
    args.plan = AttackPlan(study=args.study, collections=args.collections, iterations=args.iterations,
                           candidates=args.candidates, robust_variant=args.robust_variant, max_queries=args.queries,
                           seed=args.seed, data_root=args.data_root,
                           models=None if args.models is None else str(args.models))
    args.steps = plan_steps(args.plan, Path(args.out), show_progress=not args.quiet)  # refuses a study not there
    for collection in args.plan.chosen_collections():
        cli.check_data(collection, root=args.data_root)
    if args.parts:
        unknown = [part for part in args.parts if part not in parts_of(args.steps)]
        if unknown:
            raise cli.UserError(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(parts_of(args.steps))} (see --list-parts)")
    return args


def _training_queries(collection: str, data_root, seed: int) -> int | None:
    from lir_robust.attacks.text.queries import split_queries
    from lir_robust.data import load_retrieval_set

    try:
        return len(split_queries(load_retrieval_set(collection, root=data_root).judged_query_ids, seed)[0])
    except (DataError, OSError, ValueError):  # an estimate only: without the data, N as asked
        return None


def _list_parts(args: argparse.Namespace) -> None:
    """Each part with its measured seconds, or an estimate; parts an earlier summary ran (OUT/earlier/) are marked
    and left out of what is still to run."""
    training = {c: _training_queries(c, args.data_root, args.seed) for c in args.plan.chosen_collections()}
    measured = {name: entry["seconds"] for name, entry in step_timings(args.out).items()}
    like = measured_like(args.steps, measured)
    earlier = earlier_part_seconds(read_earlier(args.out))
    total = measured_total = to_run = 0.0
    for part in parts_of(args.steps):
        steps = [step for step in args.steps if step.part == part]
        timed = [measured[step.name] for step in steps if step.name in measured]
        seconds = sum(timed) + sum(like.get(step.name) or estimate_seconds(step, training[step.collection])
                                   for step in steps if step.name not in measured)
        how = "measured" if len(timed) == len(steps) else f"{len(timed)} of {len(steps)} steps measured" if timed else "estimated"
        if len(timed) < len(steps) and part in earlier:
            path, seconds = earlier[part]
            how = f"measured earlier, earlier/{path.name}"
        elif len(timed) < len(steps):
            to_run += seconds - sum(timed)
        total, measured_total = total + seconds, measured_total + sum(timed)
        print(f"{part}: ~{seconds / 60:.0f} min ({how}), {len(steps)} steps ({'; '.join(step.name for step in steps)})")
    print(f"total: ~{total / 3600:.1f} h, {measured_total / 3600:.1f} h of it measured in {args.out}; still to run: "
          f"~{to_run / 3600:.1f} h. Estimates come from the measured seconds of the same run on other models ({len(like)} "
          "steps; the median of the same collection's, else of any), else from the cost model of "
          f"lir_robust.studies.attack_study (HotFlip measured on this 2-core machine at {SECONDS_PER_ITERATION_L32:.2f} s "
          f"per iteration at L = 32 with maxsim, {args.plan.iterations} iterations, {SETUP_SECONDS:.0f} s of setup per run)")


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("attack-study")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.list_parts:
        _list_parts(args)
        return
    if args.summarize_only:
        check_plan(args.plan, Path(args.out), write=False)  # never a summary of another plan's runs under this plan
    else:
        spent = run_attacks(args.plan, args.out, args.parts, show_progress=not args.quiet)
        for part, seconds in spent.items():
            log.info("part %s: %.0f s in this run", part, seconds)
    summary = summarize_attacks(args.out, args.study, args.plan.to_dict())
    plot_proxy(summary, Path(args.out) / "proxy.png")
    log.info("wrote %s (%d rows); time so far by part: %s", Path(args.out) / "summary.json", len(summary["rows"]),
             {part: round(seconds) for part, seconds in summary["timings"].get("parts_s", {}).items()})


if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
