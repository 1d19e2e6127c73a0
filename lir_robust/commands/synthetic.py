"""The synthetic concept study of PAPER.md, reproduced and extended: `python eval/synthetic_study.py --preset full --out DIR`.

Trains the concept-environment encoder with every pooling head on several seeds, then runs the document-length and
injection sweeps; writes results.json, four PNG figures and table.md under --out. Rerunning resumes: finished
(head, seed) runs in DIR/runs/ are kept. The logic lives in lir_robust.studies.concepts and lir_robust.studies.synthetic.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import torch

from lir_robust.commands import cli
from lir_robust.studies.synthetic import DEFAULT_HEADS, StudySettings, preset, run_study


# SyntheticConfig fields named in its error messages -> the options that set them.
OPTION_OF_FIELD = {"num_train_queries": "--train-queries", "num_eval_queries": "--eval-queries", "eval_every": "--eval-every"}


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["quick", "full"], default="full")
    parser.add_argument("--out", type=cli.output_folder, default="results/synthetic", help="output folder (default: %(default)s)")
    parser.add_argument("--heads", nargs="+", type=cli.head_spec, default=list(DEFAULT_HEADS), help="pooling heads, e.g. maxsim topk:k=4")
    parser.add_argument("--seeds", nargs="+", type=cli.non_negative_int, default=None, help="seeds (default: the preset's)")
    parser.add_argument("--epochs", type=cli.non_negative_int, default=None, help="override the preset's number of epochs (0: untrained)")
    parser.add_argument("--eval-every", type=cli.positive_int, default=None)
    parser.add_argument("--train-queries", type=cli.positive_int, default=None, help="override num_train_queries")
    parser.add_argument("--eval-queries", type=cli.positive_int, default=None, help="override num_eval_queries")
    parser.add_argument("--lengths", nargs="+", type=cli.positive_int, default=None, help="override the length sweep")
    parser.add_argument("--budgets", nargs="+", type=cli.non_negative_int, default=None, help="override the injection budgets K")
    parser.add_argument("--threads", type=cli.positive_int, default=1,
                        help="torch CPU threads (default 1: the tensors are small, more threads mostly add overhead)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options and the study they describe (``args.settings``), checked before anything trains."""
    args = build_parser().parse_args(argv)
    try:
        config, seeds = preset(
            args.preset, epochs=args.epochs, eval_every=args.eval_every, num_train_queries=args.train_queries,
            num_eval_queries=args.eval_queries, lengths=args.lengths, injection_budgets=args.budgets,
        )
    except ValueError as error:  # SyntheticConfig's own checks (lengths vs support, queries vs batch size, ...)
        message = str(error)
        for field, option in OPTION_OF_FIELD.items():
            message = message.replace(field, option)
        raise cli.UserError(f"the options describe no valid study: {message}") from None
    args.settings = StudySettings(config=config, heads=tuple(dict.fromkeys(args.heads)), seeds=tuple(args.seeds or seeds),
                                  out=args.out, progress=not args.no_progress)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    run_study(args.settings)
    logging.getLogger("synthetic_study").info(
        "wrote %s in %.0f s", os.path.join(args.out, "{results.json,table.md,*.png}"), time.perf_counter() - started
    )
