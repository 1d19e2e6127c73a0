"""Distractor patches appended to documents at the embedding level, and the merged-state injection sweep.

Kinds of injected patches (all unit vectors of the embedding dimension D):

- ``gaussian``: random unit vectors (the paper's control);
- ``corpus``: patches drawn uniformly from the *other* documents of the corpus (neutral length growth);
- ``hard``: token-targeted hard negatives: for each query, the corpus patches of its non-gold documents nearest to
  its tokens (faiss ``IndexFlatIP``; a GPU index when faiss-gpu and a GPU are there), taken round-robin over the
  query's tokens (each token's nearest, then each token's second nearest, ...). The same K patches go into every
  injected document of that query;
- ``spike``: the L2-normalised average of a few (``spike_tokens``) random query tokens, K such spikes per query (the
  paper's spike patch). The same K patches go into every injected document of that query.

``gaussian`` and ``corpus`` are drawn afresh for each document (a document's patches do not depend on the query);
``hard`` and ``spike`` depend on the query only. For every kind, budget K uses the first K patches of one list of
``max(ks)`` (nested budgets), which is what lets :func:`sweep_scores` score every K in one pass.

Targets: ``non-gold`` (the paper's attack protocol: gold documents keep K = 0) or ``all`` (pure length growth).
Default regimes (:data:`DEFAULT_TARGETS`): attack = hard and spike into non-gold documents; length growth = gaussian
and corpus into all documents. Injecting low-similarity patches into non-gold documents only would dilute their
scores under mean-like heads and make those heads "retain" more than 100 %; the non-gold option stays available and
the report does not cap the retained share, so that artefact stays visible when asked for.

How the sweep avoids re-scoring (:func:`sweep_scores`): appended patches only add columns to the similarity matrix,
and every mergeable head (all built-in ones) summarises a set of columns by ``partial`` and combines summaries with
``merge``. The original documents are summarised once; the injected columns' summaries are merged in, budget after
budget (K = 1, 4, 16, ... adds only the new columns). Query-level kinds (hard, spike) have one summary per query per
K, broadcast over that query's documents.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lir_robust.pooling import PoolingHead, parse_head
from lir_robust.scoring import pad_with_mask

__all__ = [
    "KINDS",
    "DEFAULT_KS",
    "DEFAULT_KINDS",
    "DEFAULT_TARGETS",
    "QUERY_LEVEL_KINDS",
    "DOCUMENT_LEVEL_KINDS",
    "TARGETS",
    "InjectionSettings",
    "FlatCorpus",
    "gaussian_patches",
    "corpus_patches",
    "hard_negative_patches",
    "spike_patches",
    "inject",
    "SweepScores",
    "sweep_scores",
]

logger = logging.getLogger(__name__)

KINDS = ("gaussian", "corpus", "hard", "spike")
QUERY_LEVEL_KINDS = ("hard", "spike")
DOCUMENT_LEVEL_KINDS = ("gaussian", "corpus")
TARGETS = ("non-gold", "all")
DEFAULT_KS = (0, 1, 4, 16, 25, 50, 100, 200, 400)
DEFAULT_KINDS = ("gaussian", "corpus", "hard")
DEFAULT_TARGETS = {"hard": "non-gold", "spike": "non-gold", "gaussian": "all", "corpus": "all"}
# An injected patch hijacks a query token when it beats the document's best patch by more than this: a hard patch
# copied from the document itself ties with the original, and ties go to the original (as in diagnostics.hijack_rates)
# even when the two similarities come out of different matrix products one rounding step apart.
TIE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class InjectionSettings:
    """How distractor patches are made; part of every results file and resume key."""

    seed: int = 0
    spike_tokens: int = 3  # query tokens averaged into one spike patch
    targets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TARGETS))

    def target(self, kind: str) -> str:
        value = self.targets.get(kind, DEFAULT_TARGETS[kind])
        if value not in TARGETS:
            raise ValueError(f"injection target for {kind!r} must be one of {TARGETS}, got {value!r}")
        return value

    def to_dict(self) -> dict:
        return {"seed": self.seed, "spike_tokens": self.spike_tokens, "targets": dict(sorted(self.targets.items()))}


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown injection kind {kind!r}; kinds: {', '.join(KINDS)}")
    return kind


def _generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from the given parts (stable across runs and processes)."""
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


# --------------------------------------------------------------------------------------------------------------
# Patch generators
# --------------------------------------------------------------------------------------------------------------


@dataclass
class FlatCorpus:
    """All document patches in one matrix: ``vectors [N_patches, D]``; document i owns rows ``starts[i]:starts[i+1]``."""

    vectors: torch.Tensor
    starts: torch.Tensor  # [Nd + 1] long

    @classmethod
    def from_documents(cls, documents: Sequence[torch.Tensor]) -> "FlatCorpus":
        lengths = torch.tensor([document.shape[0] for document in documents], dtype=torch.long)
        starts = torch.zeros(len(documents) + 1, dtype=torch.long)
        starts[1:] = lengths.cumsum(0)
        return cls(torch.cat([document.float() for document in documents]), starts)

    def owner(self) -> torch.Tensor:
        """Document index of every patch ``[N_patches]``."""
        lengths = self.starts[1:] - self.starts[:-1]
        return torch.repeat_interleave(torch.arange(len(lengths)), lengths)


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
    return corpus.vectors[index]


def spike_patches(query: torch.Tensor, count: int, tokens_per_spike: int = 3, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` spikes ``[count, D]``: each the L2-normalised mean of ``tokens_per_spike`` random tokens of ``query [Tq, D]``."""
    size = max(1, min(tokens_per_spike, query.shape[0]))
    choice = torch.stack([torch.randperm(query.shape[0], generator=generator)[:size] for _ in range(count)]) if count else (
        torch.zeros(0, size, dtype=torch.long)
    )
    return F.normalize(query.float()[choice].mean(dim=1), dim=-1)


def _faiss_index(vectors: torch.Tensor):
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    if torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(vectors.float().contiguous().numpy())
    return index


def hard_negative_patches(
    queries: Sequence[torch.Tensor],
    corpus: FlatCorpus,
    gold: Sequence[Sequence[int]],
    count: int,
    show_progress: bool = False,
) -> torch.Tensor:
    """Row indices into ``corpus.vectors`` of each query's ``count`` hard patches: long ``[Nq, count]``.

    For query i, the patches of documents outside ``gold[i]`` nearest (inner product) to each of its tokens, taken
    round-robin: token 1's nearest, token 2's nearest, ..., then every token's second nearest, ...; a patch already
    taken is skipped. Fewer candidates than ``count`` (a tiny corpus) raises ValueError.
    """
    if count == 0:
        return torch.zeros(len(queries), 0, dtype=torch.long)
    owner = corpus.owner()
    total = corpus.vectors.shape[0]
    index = _faiss_index(corpus.vectors)
    result = torch.empty(len(queries), count, dtype=torch.long)
    depth_of = {query: min(total, math.ceil(count / max(1, queries[query].shape[0])) + 16) for query in range(len(queries))}
    pending = list(range(len(queries)))
    progress = tqdm(total=len(queries), desc="hard negatives", disable=not show_progress)
    while pending:
        depth = max(depth_of[query] for query in pending)
        flat = torch.cat([queries[query].float() for query in pending]).contiguous().numpy()
        _, found = index.search(flat, depth)
        found = torch.from_numpy(found)
        offset, still = 0, []
        for query in pending:
            rows = found[offset : offset + queries[query].shape[0]]  # [Tq, depth], nearest first
            offset += queries[query].shape[0]
            banned = torch.zeros(len(corpus.starts) - 1, dtype=torch.bool)
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
    :func:`lir_robust.diagnostics.hijack_rates`). The brute-force reference the sweep is tested against.
    """
    out, marks = [], []
    for document, extra in zip(documents, patches):
        extra = document.new_zeros(0, document.shape[1]) if extra is None else extra.to(document.dtype)
        out.append(torch.cat([document, extra]))
        marks.append(torch.cat([torch.zeros(document.shape[0], dtype=torch.bool), torch.ones(extra.shape[0], dtype=torch.bool)]))
    return out, marks


# --------------------------------------------------------------------------------------------------------------
# Patch sources used by the sweep (deterministic per (seed, kind, document / query))
# --------------------------------------------------------------------------------------------------------------


class PatchSource:
    """Gives the injected patches of one kind: per document (``document_patches``) or per query (``query_patches``)."""

    def __init__(
        self,
        kind: str,
        k_max: int,
        settings: InjectionSettings,
        queries: Sequence[torch.Tensor],
        corpus: FlatCorpus,
        gold: Sequence[Sequence[int]],
        hard_indices: torch.Tensor | None = None,
        show_progress: bool = False,
    ):
        self.kind, self.k_max, self.settings, self.corpus = _check_kind(kind), k_max, settings, corpus
        self.query_level = kind in QUERY_LEVEL_KINDS
        self.dim = corpus.vectors.shape[1]
        self.queries = queries
        if kind == "hard":
            self.hard_indices = (
                hard_indices if hard_indices is not None
                else hard_negative_patches(queries, corpus, gold, k_max, show_progress=show_progress)
            )

    def query_patches(self, query: int) -> torch.Tensor:
        """``[k_max, D]`` patches of query ``query`` (hard, spike)."""
        if self.kind == "hard":
            return self.corpus.vectors[self.hard_indices[query]]
        generator = _generator(self.settings.seed, "spike", query)
        return spike_patches(self.queries[query], self.k_max, self.settings.spike_tokens, generator)

    def document_patches(self, document: int) -> torch.Tensor:
        """``[k_max, D]`` patches of document ``document`` (gaussian, corpus), the same for every query."""
        generator = _generator(self.settings.seed, self.kind, document)
        if self.kind == "gaussian":
            return gaussian_patches(self.k_max, self.dim, generator)
        return corpus_patches(self.corpus, document, self.k_max, generator)

    def patches_for(self, query: int, document: int) -> torch.Tensor:
        return self.query_patches(query) if self.query_level else self.document_patches(document)


# --------------------------------------------------------------------------------------------------------------
# The merged-state sweep
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SweepScores:
    """Scores of every (head, kind, K) and hijack shares of every (kind, K).

    ``scores[head_spec][kind][K]``: float32 ``[Nq, Nd]``; K = 0 is the same tensor under every kind.
    ``hijack[kind][K]``: float16 ``[Nq, Nd]``, the share of the query's tokens whose best-matching patch in the
    injected document is an injected one (0 for documents left untouched).
    """

    scores: dict[str, dict[str, dict[int, torch.Tensor]]]
    hijack: dict[str, dict[int, torch.Tensor]]


def _intervals(ks: Sequence[int]) -> list[tuple[int, int]]:
    positive = sorted(k for k in set(ks) if k > 0)
    return list(zip([0] + positive[:-1], positive))


def _expand(state: tuple[torch.Tensor, ...], leading: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(part.expand(*leading, *part.shape[len(leading) - 1 :]) for part in state)


class _Merged:
    """Per-head helper: partial / merge / finalize, or brute force for heads that cannot be computed in parts."""

    def __init__(self, head: PoolingHead):
        self.head = head
        self.mergeable = head.mergeable

    def partial(self, similarities, mask):
        if self.mergeable:
            return self.head.partial(similarities, mask)
        return (similarities.float(), mask.expand(similarities.shape[:-2] + mask.shape[-1:]).unsqueeze(-2).expand_as(similarities))

    def merge(self, a, b):
        if self.mergeable:
            return self.head.merge(a, b)
        if a[0].shape[:-1] != b[0].shape[:-1]:
            b = (b[0].expand(*a[0].shape[:-1], b[0].shape[-1]), b[1].expand(*a[1].shape[:-1], b[1].shape[-1]))
        return torch.cat([a[0], b[0]], dim=-1), torch.cat([a[1], b[1]], dim=-1)

    def finalize(self, state):
        if self.mergeable:
            return self.head.finalize(state)
        return self.head(state[0], state[1][..., 0, :])


def sweep_scores(
    queries: Sequence[torch.Tensor],
    documents: Sequence[torch.Tensor],
    gold: Sequence[Sequence[int]],
    heads: Sequence[str | PoolingHead],
    kinds: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    settings: InjectionSettings | None = None,
    *,
    document_batch_size: int = 8,
    document_subset: Sequence[int] | None = None,
    hard_indices: torch.Tensor | None = None,
    show_progress: bool = True,
    on_chunk: Callable[[list[int]], None] | None = None,
    token_tile_elements: int = 1 << 19,
) -> SweepScores:
    """Scores of every query against every document, for every head, kind and budget K, in one pass.

    queries: ``Nq`` tensors ``[Tq_i, D]``; documents: ``Nd`` tensors ``[L_j, D]`` (valid rows only, unit norm);
    gold: ``gold[i]`` = indices of query i's gold (relevant) documents. ``document_subset`` restricts the pass to
    some documents (their columns are filled, others left 0): the unit of resumption. ``token_tile_elements`` bounds
    the similarity blocks ``[documents in chunk, query tokens in tile, patches]`` (speed only, same result). Returns :class:`SweepScores`
    (scores ``[Nq, Nd]`` per head / kind / K). Equals scoring the concatenated documents head by head (tested).
    """
    settings = settings or InjectionSettings()
    heads = [parse_head(head) for head in heads]
    kinds = [_check_kind(kind) for kind in kinds]
    ks = sorted(set(int(k) for k in ks) | {0})
    if ks[0] < 0:
        raise ValueError(f"budgets K must be >= 0, got {ks}")
    k_max = ks[-1]
    intervals = _intervals(ks)
    merged = {head.spec(): _Merged(head) for head in heads}
    n_queries, n_documents = len(queries), len(documents)
    dim = queries[0].shape[-1]

    query_tokens = torch.cat([query.float() for query in queries])  # [T, D]
    token_counts = torch.tensor([query.shape[0] for query in queries])
    owner = torch.repeat_interleave(torch.arange(n_queries), token_counts)  # [T]
    per_query = torch.zeros(query_tokens.shape[0], n_queries)
    per_query[torch.arange(query_tokens.shape[0]), owner] = 1.0  # [T, Nq]: sums tokens into queries
    share = per_query / token_counts.float().unsqueeze(0)  # token -> share of its query's tokens

    corpus = FlatCorpus.from_documents(documents)
    gold_mask = torch.zeros(n_queries, n_documents, dtype=torch.bool)
    for row, indices in enumerate(gold):
        gold_mask[row, list(indices)] = True

    sources = {
        kind: PatchSource(kind, k_max, settings, queries, corpus, gold, hard_indices=hard_indices if kind == "hard" else None,
                          show_progress=show_progress)
        for kind in kinds
    } if k_max > 0 else {}

    # Query-level kinds: one summary per query token and K, and the injected max for the hijack share.
    query_states: dict[str, dict[str, dict[int, tuple]]] = {}
    query_peaks: dict[str, dict[int, torch.Tensor]] = {}
    for kind, source in sources.items():
        if not source.query_level:
            continue
        similarities = torch.cat([
            queries[query].float() @ source.query_patches(query).T for query in range(n_queries)
        ])  # [T, k_max]: each token against its own query's patches
        query_peaks[kind] = {}
        peak = torch.full((similarities.shape[0],), -math.inf)
        for start, stop in intervals:
            peak = torch.maximum(peak, similarities[:, start:stop].amax(dim=-1))
            query_peaks[kind][stop] = peak
        query_states[kind] = {}
        for spec, helper in merged.items():
            query_states[kind][spec] = {}
            state = None
            for start, stop in intervals:
                part = helper.partial(similarities[:, start:stop], torch.ones(stop - start, dtype=torch.bool))
                state = part if state is None else helper.merge(state, part)
                query_states[kind][spec][stop] = state

    scores = {spec: {kind: {} for kind in kinds} for spec in merged}
    zero_scores = {spec: torch.zeros(n_queries, n_documents) for spec in merged}
    for spec in merged:
        for kind in kinds:
            scores[spec][kind][0] = zero_scores[spec]
            for k in ks[1:]:
                scores[spec][kind][k] = torch.zeros(n_queries, n_documents)
    hijack = {kind: {k: torch.zeros(n_queries, n_documents, dtype=torch.float16) for k in ks[1:]} for kind in kinds}

    chosen = list(range(n_documents)) if document_subset is None else list(document_subset)
    lengths = torch.tensor([documents[index].shape[0] for index in chosen])
    order = [chosen[i] for i in torch.argsort(lengths, stable=True).tolist()]
    chunks = [order[start : start + document_batch_size] for start in range(0, len(order), document_batch_size)]
    n_tokens = query_tokens.shape[0]
    value_slot = {(spec, None, 0): slot for slot, spec in enumerate(merged)}
    for kind in sources:
        for k in ks[1:]:
            for spec in merged:
                value_slot[spec, kind, k] = len(value_slot)
    hijack_slot = {(kind, k): slot for slot, (kind, k) in enumerate((kind, k) for kind in sources for k in ks[1:])}
    with torch.no_grad():
        for chunk in tqdm(chunks, desc="sweep (documents)", disable=not show_progress):
            columns = torch.tensor(chunk)
            n = len(chunk)
            block, mask = pad_with_mask([documents[index].float() for index in chunk])  # [n, L, D], [n, L]
            document_patches = {
                kind: torch.stack([source.document_patches(index) for index in chunk])  # [n, k_max, D]
                for kind, source in sources.items() if not source.query_level
            }
            # Per-token values of every (head, kind, K) are summed into their queries with one product per tile.
            value_sums = torch.zeros(len(value_slot), n, n_queries)
            hijack_sums = torch.zeros(len(hijack_slot), n, n_queries)
            # Query tokens are processed in tiles small enough that every [n, tile, columns] block stays in cache:
            # large temporaries cost more in fresh pages than in arithmetic.
            columns_max = max(block.shape[1], k_max)
            tile = max(1, min(n_tokens, token_tile_elements // max(1, n * columns_max)))
            for token_start in range(0, n_tokens, tile):
                tokens = slice(token_start, min(n_tokens, token_start + tile))
                values: list[torch.Tensor | None] = [None] * len(value_slot)  # each [n, t]
                hijacked: list[torch.Tensor | None] = [None] * len(hijack_slot)
                similarities = torch.einsum("td,nld->ntl", query_tokens[tokens], block)  # [n, t, L]
                original_peak = similarities.masked_fill(~mask.unsqueeze(1), -math.inf).amax(dim=-1)  # [n, t]
                base = {spec: helper.partial(similarities, mask) for spec, helper in merged.items()}
                del similarities
                for spec, helper in merged.items():
                    values[value_slot[spec, None, 0]] = helper.finalize(base[spec])
                for kind, source in sources.items():
                    if source.query_level:
                        for k in ks[1:]:
                            peak = query_peaks[kind][k][tokens].unsqueeze(0)
                            hijacked[hijack_slot[kind, k]] = peak > original_peak + TIE_TOLERANCE
                            for spec, helper in merged.items():
                                own = tuple(part[tokens] for part in query_states[kind][spec][k])
                                state = helper.merge(base[spec], _expand(own, (n, tokens.stop - tokens.start)))
                                values[value_slot[spec, kind, k]] = helper.finalize(state)
                        continue
                    injected = torch.einsum("td,nkd->ntk", query_tokens[tokens], document_patches[kind])  # [n, t, k_max]
                    running = dict(base)
                    injected_peak = torch.full_like(original_peak, -math.inf)
                    for start, stop in intervals:
                        part_similarities = injected[..., start:stop]
                        part_mask = torch.ones(n, stop - start, dtype=torch.bool)
                        injected_peak = torch.maximum(injected_peak, part_similarities.amax(dim=-1))
                        hijacked[hijack_slot[kind, stop]] = injected_peak > original_peak + TIE_TOLERANCE
                        for spec, helper in merged.items():
                            running[spec] = helper.merge(running[spec], helper.partial(part_similarities, part_mask))
                            values[value_slot[spec, kind, stop]] = helper.finalize(running[spec])
                    del injected
                value_sums += torch.stack(values) @ per_query[tokens]  # [G, n, t] @ [t, Nq]
                if hijacked:
                    hijack_sums += torch.stack(hijacked).float() @ share[tokens]
            for (spec, kind, k), slot in value_slot.items():
                target = zero_scores[spec] if kind is None else scores[spec][kind][k]
                target[:, columns] = value_sums[slot].T
            for (kind, k), slot in hijack_slot.items():
                hijack[kind][k][:, columns] = hijack_sums[slot].T.half()
            if on_chunk is not None:
                on_chunk(chunk)

    # Targets: documents left untouched keep their K = 0 scores and have no hijacked token.
    for kind in kinds:
        if settings.target(kind) == "non-gold":
            for k in ks[1:]:
                hijack[kind][k][gold_mask] = 0
                for spec in merged:
                    scores[spec][kind][k][gold_mask] = zero_scores[spec][gold_mask]
    return SweepScores(scores=scores, hijack=hijack)


def brute_force_scores(
    queries: Sequence[torch.Tensor],
    documents: Sequence[torch.Tensor],
    gold: Sequence[Sequence[int]],
    head: str | PoolingHead,
    kind: str,
    k: int,
    k_max: int,
    settings: InjectionSettings | None = None,
    hard_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference: build every injected document explicitly and score it with ``head``: ``[Nq, Nd]`` (slow; tests)."""
    from lir_robust.scoring import score

    settings = settings or InjectionSettings()
    corpus = FlatCorpus.from_documents(documents)
    source = PatchSource(kind, k_max, settings, queries, corpus, gold, hard_indices=hard_indices)
    out = torch.empty(len(queries), len(documents))
    for query in range(len(queries)):
        targets = [
            k > 0 and (settings.target(kind) == "all" or document not in set(gold[query]))
            for document in range(len(documents))
        ]
        patches = [source.patches_for(query, document)[:k] if chosen else None for document, chosen in enumerate(targets)]
        injected, _ = inject(documents, patches)
        out[query] = score([queries[query]], injected, head)[0]
    return out
