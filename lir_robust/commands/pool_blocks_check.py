"""Check (not a test) that pooled gaussian / corpus patches give the same sweep results as private draws.

    python eval/pool_blocks_check.py                                # = make check-pool-blocks
    python eval/pool_blocks_check.py --pool-blocks none 16 64 --seeds 0 1 2

The sweep draws gaussian and corpus patches from pools of blocks shared between documents (InjectionSettings.
pool_blocks, default 64): each document's patches have exactly the distribution of fresh draws, but two documents
share a block of a budget interval with probability 1 / pool_blocks. This script runs the length-growth part of the
default sweep (MiniLM on $LIR_ROBUST_DATA_ROOT/cranfield, default heads, gaussian and corpus into all documents) with
private draws per document ("none") and with pools, for several seeds, and prints nDCG@10 and its retained share at
every K. The pooled runs should differ from the private ones by no more than private runs of different seeds differ
from each other. Writes results/pool-blocks-check/check.json and table.md.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path

import torch

from lir_robust.commands import cli
from lir_robust.data import load_retrieval_set
from lir_robust.encoders.cache import EmbeddingCache, encode_retrieval_set
from lir_robust.encoders.load import load_encoder
from lir_robust.attacks.kinds import DEFAULT_KS, DEFAULT_POOL_BLOCKS, InjectionSettings
from lir_robust.scoring.metrics import evaluate, run_from_scores
from lir_robust.core.files import write_text_atomic
from lir_robust.sweep.engine import InjectionSweep
from lir_robust.sweep.pipeline import DEFAULT_HEADS, document_segments, judged_queries, write_json_atomic


def build_parser() -> cli.ArgumentParser:
    """The options; each ``type=`` checks its value (cross-checks in parse_args)."""
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data", default="cranfield")
    parser.add_argument("--poolings", nargs="+", type=cli.head_spec, default=list(DEFAULT_HEADS))
    parser.add_argument("--kinds", nargs="+", default=["gaussian", "corpus"], choices=["gaussian", "corpus"])
    parser.add_argument("--ks", nargs="+", type=cli.non_negative_int, default=list(DEFAULT_KS))
    parser.add_argument("--pool-blocks", nargs="+", type=cli.pool_blocks_count, default=[None, DEFAULT_POOL_BLOCKS])
    parser.add_argument("--seeds", nargs="+", type=cli.non_negative_int, default=[0, 1])
    parser.add_argument("--segments", type=cli.positive_int, default=8, help="documents scored in this many parts (bounds memory)")
    parser.add_argument("--out", type=cli.output_folder, default="results/pool-blocks-check")
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
    log = logging.getLogger("pool_blocks_check")

    data = load_retrieval_set(args.data)
    encoder = load_encoder(args.model, show_progress=False)
    query_embeddings, documents = encode_retrieval_set(encoder, data, EmbeddingCache())
    query_ids, queries, document_ids, gold = judged_queries(data, query_embeddings)
    qrels = {qid: data.qrels[qid] for qid in query_ids}
    ks = sorted(set(args.ks) | {0})
    runs = {}
    for pool_blocks, seed in itertools.product(args.pool_blocks, args.seeds):
        name = f"{'private' if pool_blocks is None else pool_blocks}/seed{seed}"
        tick = time.perf_counter()
        targets = {kind: "all" for kind in args.kinds}
        sweep = InjectionSweep(queries, documents, gold, args.poolings, args.kinds, ks,
                               InjectionSettings(seed=seed, targets=targets, pool_blocks=pool_blocks), show_progress=False)
        scores = {head: {kind: {k: torch.zeros(len(queries), len(documents)) for k in ks} for kind in args.kinds}
                  for head in sweep.specs}
        for segment in document_segments(documents, args.segments):
            part = sweep.score(segment)
            for head, by_kind in part.scores.items():
                for kind, by_k in by_kind.items():
                    for k, values in by_k.items():
                        scores[head][kind][k][:, segment] = values[:, segment]
        seconds = time.perf_counter() - tick
        runs[name] = {"pool_blocks": pool_blocks, "seed": seed, "seconds": seconds, "ndcg@10": {
            head: {kind: {str(k): evaluate(qrels, run_from_scores(scores[head][kind][k], query_ids, document_ids))[0]["ndcg@10"]
                          for k in ks} for kind in args.kinds} for head in sweep.specs}}
        log.info("%s: %.1f s", name, seconds)

    lines = ["| head | kind | K | " + " | ".join(runs) + " |", "|---|---|---|" + "---|" * len(runs)]
    for head in runs[next(iter(runs))]["ndcg@10"]:
        for kind in args.kinds:
            for k in [k for k in ks if k in (0, 25, 100, 400)]:
                cells = [f"{run['ndcg@10'][head][kind][str(k)]:.4f}" for run in runs.values()]
                lines.append(f"| {head} | {kind} | {k} | " + " | ".join(cells) + " |")
    # Largest gap between two private seeds, and between pooled and private runs of the same seed, over every cell.
    def gap(a, b):
        return max(abs(runs[a]["ndcg@10"][h][kd][str(k)] - runs[b]["ndcg@10"][h][kd][str(k)])
                   for h in runs[a]["ndcg@10"] for kd in args.kinds for k in ks)
    private = [name for name, run in runs.items() if run["pool_blocks"] is None]
    summary = {}
    if len(private) >= 2:
        summary["max |private seed a - private seed b|"] = max(gap(a, b) for a, b in itertools.combinations(private, 2))
    for name, run in runs.items():
        twin = f"private/seed{run['seed']}"
        if run["pool_blocks"] is not None and twin in runs:
            summary[f"max |{name} - {twin}|"] = gap(name, twin)
    lines += ["", "nDCG@10 gaps over every head x kind x K:"] + [f"- {key}: {value:.4f}" for key, value in summary.items()]
    table = "\n".join(lines) + "\n"
    out = Path(args.out)
    write_json_atomic(out / "check.json", {"runs": runs, "summary": summary, "queries": len(query_ids), "ks": ks})
    write_text_atomic(out / "table.md", table)
    print(table)

