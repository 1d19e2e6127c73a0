"""The retraining study (thin entry; the logic is lir_robust.studies.retraining): fine-tune one model per head and seed (and per
defended head), sweep each, summarise. Resumable: rerun the same command after a kill.

    python eval/study.py                          # everything: make study
    python eval/study.py --list-parts             # the named parts and what each holds
    python eval/study.py --parts raw:cranfield cranfield:seed0
    python eval/study.py --summarize-only         # rebuild summary.json from the finished sweeps
    python -m lir_robust.commands.study ...       # the same, without a checkout

Then `make results-doc` turns results/study/summary.json (and the synthetic study's results) into docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from lir_robust.commands import cli
from lir_robust.studies.retraining import (
    DEFENCE, STUDY_HEADS, STUDY_KINDS, STUDY_KS, StudyPlan, StudyPlanError, parts_of, plan_steps, run_study, summarize_study,
)


def collection_seeds(text: str) -> tuple[str, list[int]]:
    """``cranfield:0,1,2`` -> ("cranfield", [0, 1, 2]) (an argparse type)."""
    name, sep, seeds = text.partition(":")
    try:
        values = [int(seed) for seed in seeds.split(",")] if sep else [0]
    except ValueError:
        values = []
    if not name or not values or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected COLLECTION:SEED[,SEED...] such as cranfield:0,1,2, got {text!r}")
    return name, values


def build_parser() -> cli.ArgumentParser:
    """The options; each ``type=`` checks its value (cross-checks in parse_args)."""
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=cli.output_folder, default="results/study")
    parser.add_argument("--parts", nargs="+", default=None, help="named parts to run (default: all); see --list-parts")
    parser.add_argument("--list-parts", action="store_true", help="print the parts and their steps, run nothing")
    parser.add_argument("--summarize-only", action="store_true", help="only (re)write summary.json from finished sweeps")
    parser.add_argument("--model", default="minilm", help="base encoder every variant is fine-tuned from")
    parser.add_argument("--collections", nargs="+", type=collection_seeds, default=[("cranfield", [0, 1, 2]), ("med", [0])],
                        metavar="NAME:SEEDS", help="collections under the data root and their seeds (default cranfield:0,1,2 med:0)")
    parser.add_argument("--heads", nargs="+", type=cli.head_spec, default=list(STUDY_HEADS))
    parser.add_argument("--defended-heads", nargs="*", type=cli.head_spec, default=["maxsim", "exclusive"],
                        help="heads also trained with injected negatives (none: no defended variants)")
    parser.add_argument("--defence", nargs="+", type=cli.injected_negative, default=list(DEFENCE),
                        help="train/finetune.py --injected-negatives for the defended variants")
    parser.add_argument("--kinds", nargs="+", type=cli.injection_name, default=list(STUDY_KINDS))
    parser.add_argument("--ks", nargs="+", type=cli.non_negative_int, default=list(STUDY_KS))
    parser.add_argument("--finetune-args", default="", help='extra train/finetune.py options, e.g. "--max-steps 10"')
    parser.add_argument("--finetune-threads", type=cli.positive_int, default=1,
                        help="CPU threads per fine-tuning process (OMP_NUM_THREADS), 1 as accelerate launch gives")
    parser.add_argument("--data-root", type=cli.existing_folder, default=None, help="default $LIR_ROBUST_DATA_ROOT")
    parser.add_argument("--threads", type=cli.positive_int, default=None,
                        help="torch threads of this process's sweeps (default: torch's choice); two study processes on "
                        "different --parts with --threads 1 use a 2-core machine best")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    try:
        args.plan = StudyPlan(model=args.model, collections=dict(args.collections), heads=args.heads,
                              defended_heads=args.defended_heads, defence=args.defence, kinds=args.kinds, ks=args.ks,
                              finetune_args=shlex.split(args.finetune_args), data_root=args.data_root,
                              finetune_threads=args.finetune_threads)
    except StudyPlanError as error:
        raise cli.UserError(str(error)) from None
    for collection in args.plan.collections:
        cli.check_data(collection, root=args.data_root)
    cli.check_model(args.model)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("study")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    steps = plan_steps(args.plan, out, show_progress=not args.quiet)
    if args.list_parts:
        for part in parts_of(steps):
            names = [step.name for step in steps if step.part == part]
            print(f"{part}: {len(names)} steps ({'; '.join(names)})")
        return
    if args.parts:
        unknown = [part for part in args.parts if part not in parts_of(steps)]
        if unknown:
            raise cli.UserError(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(parts_of(steps))} (see --list-parts)")
    try:
        if not args.summarize_only:
            spent = run_study(args.plan, out, args.parts, show_progress=not args.quiet)
            for part, seconds in spent.items():
                log.info("part %s: %.0f s in this run", part, seconds)
        summary = summarize_study(args.plan, out)
    except StudyPlanError as error:  # only the plan's own errors are the user's; anything else keeps its traceback
        raise cli.UserError(str(error)) from None
    log.info("wrote %s (%d rows); study time so far by part: %s", out / "summary.json", len(summary["rows"]),
             {part: round(seconds) for part, seconds in summary["timings"].get("parts_s", {}).items()})


if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
