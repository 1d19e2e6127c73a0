"""Length / injection sweep on a real collection (thin entry; the logic is lir_robust.sweep.pipeline).

    python eval/length_sweep.py                       # MiniLM ColBERT on $LIR_ROBUST_DATA_ROOT/cranfield, default heads
    python eval/length_sweep.py --model path/to/finetuned --kinds hard spike --ks 0 25 100
    torchrun --nproc_per_node 2 eval/length_sweep.py ...   # corpus encoding split over processes
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lir_robust.commands import cli
from lir_robust.encoders.base import init_distributed
from lir_robust.attacks.kinds import DEFAULT_KINDS, DEFAULT_KS, DEFAULT_POOL_BLOCKS, DEFAULT_TARGETS, TARGETS
from lir_robust.sweep.pipeline import DEFAULT_HEADS, SweepConfig, run_length_sweep


def build_parser() -> cli.ArgumentParser:
    """The options; each ``type=`` checks its value (add an option here, and a cross-check to check_args)."""
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="minilm | a train/finetune.py output or model folder | a PyLate model folder or Hub id | a colpali-engine model id or folder | a published lir-robust Hub id")
    parser.add_argument("--data", default="cranfield", help="bare name under the data root, a folder, or a ViDoRe Hub name")
    parser.add_argument("--data-root", type=cli.existing_folder, default=None, help="folder of collections (default $LIR_ROBUST_DATA_ROOT)")
    parser.add_argument("--data-format", default="auto", choices=["auto", "beir", "vidore-v1", "vidore-v2"])
    parser.add_argument("--split", default="test")
    parser.add_argument("--language", default=None, help="ViDoRe v2 query language filter, e.g. english")
    parser.add_argument("--poolings", nargs="+", type=cli.head_spec, default=list(DEFAULT_HEADS), help="pooling heads, e.g. maxsim topk:k=4")
    parser.add_argument("--kinds", nargs="+", type=cli.injection_name, default=list(DEFAULT_KINDS), metavar="KIND",
                        help="injections: gaussian corpus hard spike, or a few-document attack hard@N / spike@N (N non-gold "
                        "documents per query, each with its own patches)")
    parser.add_argument("--ks", nargs="+", type=cli.non_negative_int, default=list(DEFAULT_KS), help="injection budgets K (>= 0)")
    parser.add_argument("--target", action="append", type=cli.injection_target, default=[], metavar="KIND=TARGET",
                        help=f"override a kind's target ({'/'.join(TARGETS)}), e.g. --target gaussian=non-gold")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0)
    parser.add_argument("--spike-tokens", type=cli.positive_int, default=3, help="query tokens averaged into one spike patch")
    parser.add_argument("--pool-blocks", type=cli.pool_blocks_count, default=DEFAULT_POOL_BLOCKS, metavar="B|none",
                        help="gaussian / corpus patches: blocks per budget interval shared between documents "
                        f"(default {DEFAULT_POOL_BLOCKS}); 'none' = private draws for every document (slower)")
    parser.add_argument("--max-queries", type=cli.positive_int, default=None, help="evaluate only the first N judged queries")
    parser.add_argument("--batch-size", type=cli.positive_int, default=None, help="encoding batch size")
    parser.add_argument("--document-batch-size", type=cli.positive_int, default=8, help="documents per scoring chunk")
    parser.add_argument("--segments", type=cli.segments_count, default="auto",
                        help="resumable document segments: an integer >= 1, or auto (at most 2048 documents each)")
    parser.add_argument("--cache-dir", type=cli.output_folder, default=None, help="embedding cache (default $LIR_ROBUST_CACHE or .cache/lir-robust/embeddings)")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--out", type=cli.output_folder, default="results/length-sweep")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Cross-checks that read nothing but file names: the data and the model exist, targets name swept kinds.
    Fills ``args.targets`` (the default targets with --target applied)."""
    cli.check_data(args.data, data_format=args.data_format, split=args.split, language=args.language, root=args.data_root)
    cli.check_model(args.model)
    args.targets = dict(DEFAULT_TARGETS)
    for kind, target in args.target:
        if kind not in args.kinds:
            raise cli.UserError(
                f"--target {kind}={target} names the kind {kind}, which --kinds ({' '.join(args.kinds)}) does not sweep; "
                f"add {kind} to --kinds or drop the --target"
            )
        args.targets[kind] = target


def parse_args(argv=None) -> argparse.Namespace:
    """The options, every one checked before anything loads (a bad one raises cli.UserError or a DataError)."""
    args = build_parser().parse_args(argv)
    check_args(args)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    init_distributed()
    config = SweepConfig(
        model=args.model, data=args.data, data_format=args.data_format, split=args.split, language=args.language,
        data_root=args.data_root, heads=args.poolings, kinds=args.kinds, ks=args.ks, targets=args.targets, seed=args.seed,
        spike_tokens=args.spike_tokens, pool_blocks=args.pool_blocks, max_queries=args.max_queries, encode_batch_size=args.batch_size,
        document_batch_size=args.document_batch_size, segments=args.segments, cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
    )
    results = run_length_sweep(config, args.out, show_progress=not args.quiet)
    if results is not None:
        logging.getLogger("length_sweep").info("timings (s): %s", {k: round(v, 1) for k, v in results["timings_s"].items()})
        print((Path(args.out) / "table.md").read_text())

