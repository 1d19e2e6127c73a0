"""Patch generators: the injected patches of each kind (gaussian, corpus, spike, hard), the exact nearest-patch search
behind the hard ones, and :func:`inject`, which appends patches to documents (the explicit form the sweep is tested
against). See :mod:`lir_robust.attacks.kinds` for what each kind is."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lir_robust.encoders.flat_corpus import FlatCorpus

__all__ = [
    "gaussian_patches",
    "corpus_patches",
    "spike_patches",
    "nearest_patches",
    "hard_negative_patches",
    "inject",
    "SEARCH_CHUNK_BYTES",
]


def gaussian_patches(count: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` random unit vectors ``[count, dim]`` (normalised standard Gaussian draws)."""
    return F.normalize(torch.randn(count, dim, generator=generator), dim=-1)


def corpus_patches(corpus: FlatCorpus, document: int, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` patches drawn uniformly (with replacement) from every document but ``document``: ``[count, D]``."""
    start, stop = int(corpus.starts[document]), int(corpus.starts[document + 1])
    others = corpus.vectors.shape[0] - (stop - start)
    if others <= 0:
        raise ValueError("corpus injection needs at least two documents with patches")
    index = torch.randint(0, others, (count,), generator=generator)
    index = torch.where(index >= start, index + (stop - start), index)
    return corpus.vectors[index].float()


def spike_patches(query: torch.Tensor, count: int, tokens_per_spike: int = 3, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` spikes ``[count, D]``: each the L2-normalised mean of ``tokens_per_spike`` random tokens of ``query [Tq, D]``."""
    size = max(1, min(tokens_per_spike, query.shape[0]))
    # `count` independent draws of `size` distinct tokens at once: the first columns of random permutations
    choice = torch.rand(count, query.shape[0], generator=generator).argsort(dim=1)[:, :size]
    return F.normalize(query.float()[choice].mean(dim=1), dim=-1)


# Corpus rows indexed by faiss at once (float32, 2^21 x 128-d = 1 GiB): hard-negative search memory does not grow
# with the corpus.
SEARCH_CHUNK_BYTES = 1 << 30


def _faiss_index(vectors: torch.Tensor):
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    if torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(vectors.float().contiguous().numpy())
    return index


def nearest_patches(corpus: FlatCorpus, tokens: torch.Tensor, depth: int, chunk_bytes: int = SEARCH_CHUNK_BYTES) -> torch.Tensor:
    """Exact inner-product search: row indices ``[T, depth]`` (nearest first) of the corpus patches nearest to each of
    ``tokens [T, D]``. The corpus is indexed one chunk at a time (memory bounded by ``chunk_bytes``), the per-chunk
    top lists merged."""
    total = corpus.vectors.shape[0]
    depth = min(depth, total)
    chunk = max(depth, chunk_bytes // max(1, 4 * corpus.dim))
    queries = tokens.float().contiguous().numpy()
    best_scores, best_rows = None, None
    for start in range(0, total, chunk):
        index = _faiss_index(corpus.vectors[start : start + chunk])
        scores, rows = index.search(queries, min(depth, index.ntotal))
        scores, rows = torch.from_numpy(scores), torch.from_numpy(rows) + start
        if best_scores is not None:
            scores, rows = torch.cat([best_scores, scores], dim=1), torch.cat([best_rows, rows], dim=1)
            order = scores.argsort(dim=1, descending=True, stable=True)[:, :depth]  # ties keep the lower row first
            scores, rows = scores.gather(1, order), rows.gather(1, order)
        best_scores, best_rows = scores, rows
    return best_rows


def hard_negative_patches(
    queries: Sequence[torch.Tensor],
    corpus: "FlatCorpus | Sequence[torch.Tensor]",
    gold: Sequence[Sequence[int]],
    count: int,
    show_progress: bool = False,
) -> torch.Tensor:
    """Row indices into ``corpus.vectors`` of each query's ``count`` hard patches: long ``[Nq, count]``.

    For query i, the patches of documents outside ``gold[i]`` nearest (inner product) to each of its tokens, taken
    round-robin: token 1's nearest, token 2's nearest, ..., then every token's second nearest, ...; a patch already
    taken is skipped. Fewer candidates than ``count`` (a tiny corpus) raises ValueError.
    """
    corpus = FlatCorpus.from_documents(corpus)
    if count == 0:
        return torch.zeros(len(queries), 0, dtype=torch.long)
    owner = corpus.owner()
    total = corpus.vectors.shape[0]
    result = torch.empty(len(queries), count, dtype=torch.long)
    depth_of = {query: min(total, math.ceil(count / max(1, queries[query].shape[0])) + 16) for query in range(len(queries))}
    pending = list(range(len(queries)))
    progress = tqdm(total=len(queries), desc="hard negatives", disable=not show_progress)
    while pending:
        depth = max(depth_of[query] for query in pending)
        found = nearest_patches(corpus, torch.cat([queries[query].float() for query in pending]), depth)
        offset, still = 0, []
        for query in pending:
            rows = found[offset : offset + queries[query].shape[0]]  # [Tq, depth], nearest first
            offset += queries[query].shape[0]
            banned = torch.zeros(len(corpus), dtype=torch.bool)
            banned[list(gold[query])] = True
            allowed = (rows >= 0) & ~banned[owner[rows.clamp_min(0)]]  # [Tq, depth]
            rank = allowed.long().cumsum(dim=1) - 1  # rank of each token's allowed neighbours
            # Exact prefix: every token's allowed neighbours are known down to the shallowest token's count.
            known = int(allowed.sum(dim=1).min()) if depth < total else depth
            keep = allowed & (rank < known)
            token = torch.arange(rows.shape[0]).unsqueeze(1).expand_as(rows)
            key = (rank * rows.shape[0] + token)[keep]  # round-robin: every token's nearest, then second, ...
            candidates = rows[keep][key.argsort()]
            unique, inverse = torch.unique(candidates, return_inverse=True)
            first = torch.full((unique.numel(),), candidates.numel(), dtype=torch.long)
            first.scatter_reduce_(0, inverse, torch.arange(candidates.numel()), reduce="amin")
            ordered = candidates[first.sort().values]
            if ordered.numel() >= count:
                result[query] = ordered[:count]
                progress.update(1)
            elif depth_of[query] >= total:
                raise ValueError(f"query {query}: only {ordered.numel()} non-gold patches, fewer than K = {count}")
            else:
                depth_of[query] = min(total, depth_of[query] * 4)
                still.append(query)
        pending = still
    progress.close()
    return result


def inject(
    documents: Sequence[torch.Tensor], patches: Sequence[torch.Tensor | None]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Append ``patches[i] [K_i, D]`` (None = nothing) to ``documents[i] [L_i, D]``.

    Returns the new documents ``[L_i + K_i, D]`` and bool masks ``[L_i + K_i]`` marking the injected rows (for
    :func:`lir_robust.scoring.diagnostics.hijack_rates`). The brute-force reference the sweep is tested against.
    """
    out, marks = [], []
    for document, extra in zip(documents, patches):
        extra = document.new_zeros(0, document.shape[1]) if extra is None else extra.to(document.dtype)
        out.append(torch.cat([document, extra]))
        marks.append(torch.cat([torch.zeros(document.shape[0], dtype=torch.bool), torch.ones(extra.shape[0], dtype=torch.bool)]))
    return out, marks
