"""Benchmark (not a test): the full length / injection sweep against one plain evaluation, in the same run.

    python eval/bench_sweep.py                    # MiniLM on $LIR_ROBUST_DATA_ROOT/cranfield, default heads / kinds / K
    python eval/bench_sweep.py --max-queries 50   # quicker
    python eval/bench_sweep.py --threads 1        # both sides on one thread

Measured, on the same embeddings and machine:
- encode: queries + corpus, no cache (done once; both costs below include it);
- plain evaluation = encode + score K = 0 with one head (maxsim, lir_robust.scoring.scorer.score) + pytrec_eval metrics;
  also reported: plain evaluation of every head (encode + one score pass per head + metrics);
- full sweep = encode + what `make eval-length-sweep` runs after encoding: the merged-state sweep of every head x kind
  x K over the default segments, keeping each query's top documents (lir_robust.sweep.pipeline.ranked_segments' path:
  InjectionSweep.rank, including the faiss hard-negative search and the pooled gaussian / corpus blocks) + metrics of
  every (head, kind, K) (lir_robust.sweep.pipeline.sweep_metrics).
Ratios: full sweep / plain evaluation (target <= 1.5) and full sweep / plain evaluation of every head.
Writes results/bench-sweep/bench.json.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from lir_robust.commands import cli
from lir_robust.data import load_retrieval_set
from lir_robust.encoders.cache import EmbeddingCache, encode_retrieval_set
from lir_robust.encoders.load import load_encoder
from lir_robust.attacks.kinds import DEFAULT_KINDS, DEFAULT_KS, DEFAULT_POOL_BLOCKS, InjectionSettings
from lir_robust.scoring.metrics import evaluate, run_from_scores
from lir_robust.scoring.scorer import score
from lir_robust.sweep.engine import InjectionSweep
from lir_robust.sweep.pipeline import (
    DEFAULT_HEADS,
    SweepConfig,
    document_segments,
    judged_queries,
    library_versions,
    segment_count,
    sweep_metrics,
    write_json_atomic,
)
from lir_robust.sweep.ranked import RankedScores


def build_parser() -> cli.ArgumentParser:
    """The options; each ``type=`` checks its value (cross-checks in parse_args)."""
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data", default="cranfield")
    parser.add_argument("--poolings", nargs="+", type=cli.head_spec, default=list(DEFAULT_HEADS))
    parser.add_argument("--kinds", nargs="+", type=cli.injection_name, default=list(DEFAULT_KINDS), metavar="KIND",
                        help="injections: gaussian corpus hard spike, or a few-document attack hard@N / spike@N (N non-gold "
                        "documents per query, each with its own patches)")
    parser.add_argument("--ks", nargs="+", type=cli.non_negative_int, default=list(DEFAULT_KS))
    parser.add_argument("--max-queries", type=cli.positive_int, default=None)
    parser.add_argument("--pool-blocks", type=cli.pool_blocks_count, default=DEFAULT_POOL_BLOCKS,
                        help="gaussian / corpus blocks per budget interval ('none': private draws per document)")
    parser.add_argument("--threads", type=cli.positive_int, default=None, help="torch and faiss threads (default: their choice)")
    parser.add_argument("--out", type=cli.output_folder, default="results/bench-sweep")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The options, every one checked before anything loads."""
    args = build_parser().parse_args(argv)
    args.poolings = list(dict.fromkeys(args.poolings))
    cli.check_data(args.data)
    cli.check_model(args.model)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("bench_sweep")
    if args.threads:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)  # the hard-negative search

    data = load_retrieval_set(args.data).subset(args.max_queries)
    encoder = load_encoder(args.model, show_progress=False)
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache_dir:
        query_embeddings, documents = encode_retrieval_set(encoder, data, EmbeddingCache(cache_dir), use_cache=False)
    timings["encode"] = time.perf_counter() - tick
    query_ids, queries, document_ids, gold = judged_queries(data, query_embeddings)
    qrels = {qid: data.qrels[qid] for qid in query_ids}

    per_head: dict[str, float] = {}
    for head in args.poolings:
        tick = time.perf_counter()
        scores = score(queries, documents, head)
        evaluate(qrels, run_from_scores(scores, query_ids, document_ids))
        per_head[head] = time.perf_counter() - tick
        log.info("plain score + metrics, %s: %.1f s", head, per_head[head])
    timings["plain_score_per_head"] = per_head

    tick = time.perf_counter()
    settings = InjectionSettings(pool_blocks=args.pool_blocks)
    ks = sorted(set(args.ks) | {0})
    sweep = InjectionSweep(queries, documents, gold, args.poolings, args.kinds, ks, settings, show_progress=False)
    ranked = RankedScores(len(queries), max(len(g) for g in gold))
    for segment in document_segments(documents, segment_count(SweepConfig(), len(documents))):
        ranked.merge(sweep.rank(segment))
    timings["sweep_score"] = time.perf_counter() - tick
    tick = time.perf_counter()
    sweep_metrics(ranked, qrels, query_ids, document_ids, args.poolings, args.kinds, ks, settings)
    timings["sweep_metrics"] = time.perf_counter() - tick

    first = args.poolings[0]
    plain = timings["encode"] + per_head[first]
    plain_all = timings["encode"] + sum(per_head.values())
    full = timings["encode"] + timings["sweep_score"] + timings["sweep_metrics"]
    report = {
        "model": args.model, "data": data.summary(), "queries": len(query_ids), "heads": args.poolings, "kinds": args.kinds,
        "ks": args.ks, "pool_blocks": args.pool_blocks, "threads": torch.get_num_threads(), "timings_s": timings,
        "plain_evaluation_s": plain, "plain_evaluation_every_head_s": plain_all, "full_sweep_s": full,
        "ratio_full_sweep_to_plain": full / plain, "ratio_full_sweep_to_plain_every_head": full / plain_all,
        "evaluations_in_sweep": len(args.poolings) * (1 + len(args.kinds) * (len(set(args.ks) - {0}))),
        "versions": library_versions(),
    }
    write_json_atomic(Path(args.out) / "bench.json", report)
    log.info(
        "encode %.1f s | plain (%s) %.1f s | plain, every head %.1f s | full sweep %.1f s (score %.1f, metrics %.1f) | "
        "ratio %.2fx (vs every head %.2fx)", timings["encode"], first, plain, plain_all, full, timings["sweep_score"],
        timings["sweep_metrics"], full / plain, full / plain_all,
    )

