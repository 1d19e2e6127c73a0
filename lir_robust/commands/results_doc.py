"""docs/RESULTS.md from the committed results files (the logic is lir_robust.studies.results_doc).

    python eval/results_doc.py          # = make results-doc
    python eval/results_doc.py --add-text-attack runs/attack/hotflip-n10   # commit a text attack run's compact
                                        # results under results/text-attacks/hotflip-n10/, then regenerate
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
    parser.add_argument("--corpus-hard", type=Path, default=Path("results/recipe-search/corpus-hard"),
                        help="folder of the hard-corpus defence's summary.json and docs4-summary.json (issue 20; rows "
                             "of an absent file are left out)")
    parser.add_argument("--coherence", type=Path, default=Path("results/recipe-search/coherence"),
                        help="folder of the coherent head's screen (summary.json) and retrained / swap rows "
                             "(retrained.json) (issue 20; rows of an absent file are left out)")
    parser.add_argument("--text-defence", type=Path, default=Path("results/text-defence/summary.json"),
                        help="the text defence's summary.json (issue 19; its part is left out when absent)")
    parser.add_argument("--text-attacks", type=Path, default=Path("results/text-attacks"),
                        help="folder of text-attack runs' compact results.json, one folder per run (issue 19; its "
                             "section is left out when absent)")
    parser.add_argument("--add-text-attack", nargs="+", type=cli.existing_folder, default=[], metavar="RUN",
                        help="first copy the compact results of these `lir-robust attack` --out folders into "
                             "--text-attacks/<folder name>/ (texts, scores and local paths left out); a folder of runs "
                             "(`make attack`'s runs/) adds each under its path below it")
    parser.add_argument("--attack-study", type=Path, default=Path("results/attack-study/summary.json"),
                        help="make attack's summary.json (issue 19; its section is left out when absent)")
    parser.add_argument("--out", type=cli.output_file, default=Path("docs/RESULTS.md"))
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if not args.study.is_file() and not args.synthetic.is_file():
        raise cli.UserError(f"neither {args.study} nor {args.synthetic} exists: run `make study` and / or `make synth` first")
    names = [Path(run).name for run in args.add_text_attack]
    if len(set(names)) != len(names):
        raise cli.UserError(f"--add-text-attack {' '.join(map(str, args.add_text_attack))}: two runs share a folder name "
                            "(each is kept under --text-attacks/<folder name>); rename one folder")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from lir_robust.studies.results_doc import write_results_doc
    from lir_robust.studies.text_attack_doc import add_text_attacks, text_attack_runs

    runs = [found for run in args.add_text_attack for found in text_attack_runs(run)]  # all checked, then written
    for path in add_text_attacks(runs, args.text_attacks):
        logging.getLogger("results_doc").info("added %s", path)
    directions = {"corpus_hard": args.corpus_hard / "summary.json", "corpus_hard_docs4": args.corpus_hard / "docs4-summary.json",
                  "coherence_screen": args.coherence / "summary.json", "coherence_retrained": args.coherence / "retrained.json",
                  "probes": args.recipe_search.parent / "probes" / "summary.json", "text_defence": args.text_defence}
    path = write_results_doc(args.study, args.synthetic, args.out, args.recipe_search, args.text_attacks, directions,
                             args.attack_study)
    logging.getLogger("results_doc").info("wrote %s", path)
