"""Text attacks on one model over one collection, every head (thin entry; the logic is lir_robust.attacks.text).

    lir-robust attack --attack cluster-text --n 10                      # the black-box baseline, raw MiniLM, maxsim
    lir-robust attack --attack hotflip --n 10 --iterations 30 --heads maxsim exclusive softmax:tau=1.0
    lir-robust attack --attack insertion --n 10 --length 16 --position sentence   # HotFlip snippets inside 10 documents
    lir-robust attack --attack stuffing --n 10 --length 32              # 32 content words appended to 10 documents
    lir-robust attack --attack query-text --n 10                        # the ceiling: each query's own text

Queries are split 50/50 by --seed; attacks read only the training half; numbers are on the held-out half.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lir_robust.attacks.text.hotflip import INITS, OBJECTIVES
from lir_robust.attacks.text.insertion import POSITIONS
from lir_robust.attacks.text.pipeline import ATTACKS, OPTIMISED_ATTACKS, TextAttackConfig, run_text_attack
from lir_robust.commands import cli


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="minilm | a fine-tuned text checkpoint folder | a PyLate model")
    parser.add_argument("--data", default="cranfield", help="bare name under the data root, or a BEIR folder")
    parser.add_argument("--data-root", type=cli.existing_folder, default=None, help="folder of collections (default $LIR_ROBUST_DATA_ROOT)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--attack", default="cluster-text", choices=ATTACKS)
    parser.add_argument("--n", type=cli.positive_int, default=10,
                        help="adversarial passages (cluster-text, hotflip) or attacked documents (insertion, stuffing, query-text)")
    parser.add_argument("--length", type=cli.positive_int, default=32,
                        help="HotFlip passage / insertion snippet tokens L; stuffing: words T")
    parser.add_argument("--heads", nargs="+", type=cli.head_spec, default=["maxsim"], help="pooling heads, e.g. maxsim exclusive")
    parser.add_argument("--queries", type=cli.positive_int, default=None, help="at most this many held-out queries")
    parser.add_argument("--iterations", type=cli.non_negative_int, default=100, help="HotFlip iterations per passage")
    parser.add_argument("--candidates", type=cli.positive_int, default=32, help="HotFlip candidate tokens re-scored per iteration")
    parser.add_argument("--positions", type=cli.positive_int, default=1,
                        help="HotFlip positions per iteration: the candidates are the top tokens of this many random "
                             "positions, shared out (1: the paper's one position per iteration)")
    parser.add_argument("--init", default="queries", choices=INITS,
                        help="HotFlip start: the cluster's query texts fitted to L tokens, its content words, or [MASK]s")
    parser.add_argument("--objective", default="mean", choices=OBJECTIVES,
                        help="HotFlip objective: mean score over the cluster's training queries, or margin over each one's 10th-best document")
    parser.add_argument("--position", default="end", choices=POSITIONS,
                        help="insertion: append the snippet, or insert it at a random sentence boundary (seeded)")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0, help="query split, clusters, positions, documents")
    parser.add_argument("--cache-dir", type=cli.output_folder, default=None, help="embedding cache (default $LIR_ROBUST_CACHE or .cache/lir-robust/embeddings)")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--out", type=cli.output_folder, default=None, help="default results/attack/<attack>-n<N>[-l<L>-<position> | -t<T>]")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Cross-checks that read nothing but file names."""
    cli.check_data(args.data, split=args.split, root=args.data_root)
    cli.check_model(args.model)
    if args.attack not in OPTIMISED_ATTACKS:
        for option, value, default in (("--iterations", args.iterations, 100), ("--candidates", args.candidates, 32),
                                       ("--positions", args.positions, 1),
                                       ("--init", args.init, "queries"), ("--objective", args.objective, "mean")):
            if value != default:
                raise cli.UserError(f"{option} {value} tunes HotFlip, but --attack is {args.attack}; drop {option} or pass "
                                    "--attack hotflip or insertion")
    if args.attack != "insertion" and args.position != "end":
        raise cli.UserError(f"--position {args.position} places insertion snippets, but --attack is {args.attack}; drop it "
                            "or pass --attack insertion")
    if args.attack in ("cluster-text", "query-text") and args.length != 32:
        raise cli.UserError(f"--length {args.length} has no effect on --attack {args.attack} (its texts are whole queries); drop it")
    if len(set(args.heads)) != len(args.heads):
        raise cli.UserError(f"--heads {' '.join(args.heads)} names a head twice; give each head once")
    if args.out is None:
        suffix = {"insertion": f"-l{args.length}-{args.position}", "stuffing": f"-t{args.length}"}.get(args.attack, "")
        args.out = f"results/attack/{args.attack}-n{args.n}{suffix}"


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    check_args(args)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = TextAttackConfig(
        model=args.model, data=args.data, attack=args.attack, n=args.n, length=args.length, heads=args.heads,
        max_queries=args.queries, iterations=args.iterations, candidates=args.candidates, positions=args.positions,
        init=args.init, objective=args.objective, position=args.position, seed=args.seed,
        data_root=args.data_root, split=args.split, cache_dir=args.cache_dir, use_cache=not args.no_cache,
    )
    run_text_attack(config, args.out, show_progress=not args.quiet)
    print((Path(args.out) / "table.md").read_text())
