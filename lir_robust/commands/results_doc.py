"""docs/RESULTS.md from the committed results files (the logic is lir_robust.studies.results_doc).

    python eval/results_doc.py          # = make results-doc
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lir_robust.commands import cli


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=Path("results/study/summary.json"), help="the study's summary.json")
    parser.add_argument("--synthetic", type=Path, default=Path("results/synthetic/results.json"), help="the synthetic study's results.json")
    parser.add_argument("--recipe-search", type=Path, default=Path("results/recipe-search/summary.json"),
                        help="the recipe search's summary.json (issue 20; its section is left out when absent)")
    parser.add_argument("--out", type=cli.output_file, default=Path("docs/RESULTS.md"))
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if not args.study.is_file() and not args.synthetic.is_file():
        raise cli.UserError(f"neither {args.study} nor {args.synthetic} exists: run `make study` and / or `make synth` first")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from lir_robust.studies.results_doc import write_results_doc

    path = write_results_doc(args.study, args.synthetic, args.out, args.recipe_search)
    logging.getLogger("results_doc").info("wrote %s", path)
