"""Search behind a PyLate index with a pooling head, measured against exhaustive scoring (clean and attacked).

    lir-robust search --model minilm --data cranfield --head maxsim exclusive --candidates 100
    lir-robust search --data med --candidates 50 100 200 --kinds spike hard --budget 4 --out results/search-med

The index (PyLate's Voyager) holds the corpus from the embedding cache; each query's candidates are reranked by each
head (lir_robust.patches.pylate_search). Under attack, K spike / hard patches per non-gold document (seeded as the
sweep seeds them) enter the index too, and the retained nDCG@10 is set beside the exhaustive sweep's. Writes
results.json and table.md (the logic: lir_robust.studies.index_search).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lir_robust.attacks.kinds import QUERY_LEVEL_KINDS
from lir_robust.commands import cli
from lir_robust.patches.pylate_search import INDEX_KINDS
from lir_robust.studies.index_search import IndexSearchConfig, run_index_search


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm", help="minilm | a model folder | a PyLate model folder or Hub id")
    parser.add_argument("--data", default="cranfield", help="bare name under the data root, or a BEIR folder")
    parser.add_argument("--data-root", type=cli.existing_folder, default=None, help="folder of collections (default $LIR_ROBUST_DATA_ROOT)")
    parser.add_argument("--head", nargs="+", type=cli.head_spec, default=["maxsim", "blend"], help="pooling heads that rerank (default: maxsim and blend, the head the fine-tuned default scores with)")
    parser.add_argument("--candidates", nargs="+", type=cli.positive_int, default=[100], help="documents per query from the index")
    parser.add_argument("--index", choices=INDEX_KINDS, default="voyager")
    parser.add_argument("--index-m", type=cli.positive_int, default=64, help="Voyager M (graph links per vector; PyLate's default 64)")
    parser.add_argument("--ef-construction", type=cli.positive_int, default=200, help="Voyager build depth (PyLate's default 200)")
    parser.add_argument("--ef-search", type=cli.positive_int, default=200, help="Voyager search depth (PyLate's default 200)")
    parser.add_argument("--k-token", type=cli.positive_int, default=None, help="stored vectors per query token (default PyLate's 100, at least --candidates)")
    parser.add_argument("--kinds", nargs="*", choices=QUERY_LEVEL_KINDS, default=list(QUERY_LEVEL_KINDS),
                        help="attacks through the index (none: clean only)")
    parser.add_argument("--budget", type=cli.positive_int, default=4, help="K injected patches per non-gold document")
    parser.add_argument("--attack-queries", type=cli.positive_int, default=None, help="attack the first N judged queries only (each needs its own attacked index)")
    parser.add_argument("--max-queries", type=cli.positive_int, default=None, help="evaluate only the first N judged queries")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0)
    parser.add_argument("--cache-dir", type=cli.output_folder, default=None, help="embedding cache (default $LIR_ROBUST_CACHE or .cache/lir-robust/embeddings)")
    parser.add_argument("--out", type=cli.output_folder, default="results/search")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The options, every one checked before anything loads (a bad one raises cli.UserError or a DataError)."""
    args = build_parser().parse_args(argv)
    cli.check_data(args.data, root=args.data_root)
    cli.check_model(args.model)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = IndexSearchConfig(
        model=args.model, data=args.data, data_root=args.data_root, heads=args.head, candidates=sorted(set(args.candidates)),
        index=args.index, index_options={"M": args.index_m, "ef_construction": args.ef_construction, "ef_search": args.ef_search},
        k_token=args.k_token, kinds=args.kinds, budget=args.budget, attack_queries=args.attack_queries,
        max_queries=args.max_queries, seed=args.seed, cache_dir=args.cache_dir,
    )
    results = run_index_search(config, args.out, show_progress=not args.quiet)
    logging.getLogger("search").info("timings (s): %s", {k: round(v, 1) for k, v in results["timings_s"].items()})
    print((Path(args.out) / "table.md").read_text())
