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

``gaussian`` and ``corpus`` are drawn for each document (a document's patches do not depend on the query), from
pools of blocks shared between documents (:class:`PatchSource`: a document's patches have exactly the distribution
of fresh draws; two documents share a block of a budget interval with probability 1 / ``pool_blocks``);
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
budget (K = 1, 4, 16, ... adds only the new columns). Query-level kinds (hard, spike) have one summary per query
token and budget interval, broadcast over that query's documents; gaussian and corpus have one per query token and
block, gathered for the documents that take the block. So the injected patches cost a merge per (query token,
document, kind, K) instead of a pass over their similarities.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lir_robust.pooling import (
    LogSumExpHead,
    MaxSimHead,
    MeanHead,
    PoolingHead,
    SoftmaxHead,
    TopKHead,
    _all_valid,
    parse_head,
)
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
    "DEFAULT_POOL_BLOCKS",
    "parse_pool_blocks",
    "SweepScores",
    "InjectionSweep",
    "shared_partials",
    "top_k_values",
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
# Blocks per budget interval in the pools of gaussian / corpus patches (see PatchSource); None = private draws.
DEFAULT_POOL_BLOCKS = 64
# An injected patch hijacks a query token when it beats the document's best patch by more than this: a hard patch
# copied from the document itself ties with the original, and ties go to the original (as in diagnostics.hijack_rates)
# even when the two similarities come out of different matrix products one rounding step apart.
TIE_TOLERANCE = 1e-6


def parse_pool_blocks(text: str) -> int | None:
    """``--pool-blocks`` (argparse type): an integer >= 1, or ``none`` / ``private`` (private draws per document)."""
    if text.strip().lower() in ("none", "private"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--pool-blocks takes an integer >= 1 or 'none', got {text!r}")
    return value


@dataclass(frozen=True)
class InjectionSettings:
    """How distractor patches are made; part of every results file and resume key."""

    seed: int = 0
    spike_tokens: int = 3  # query tokens averaged into one spike patch
    targets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    pool_blocks: int | None = DEFAULT_POOL_BLOCKS  # gaussian / corpus: blocks per budget interval (None: private)

    def __post_init__(self):
        if self.pool_blocks is not None and (isinstance(self.pool_blocks, bool) or not isinstance(self.pool_blocks, int)
                                             or self.pool_blocks < 1):
            raise ValueError(f"pool_blocks must be an integer >= 1 or None (private draws per document), got {self.pool_blocks!r}")

    def target(self, kind: str) -> str:
        value = self.targets.get(kind, DEFAULT_TARGETS[kind])
        if value not in TARGETS:
            raise ValueError(f"injection target for {kind!r} must be one of {TARGETS}, got {value!r}")
        return value

    def to_dict(self) -> dict:
        return {"seed": self.seed, "spike_tokens": self.spike_tokens, "targets": dict(sorted(self.targets.items())),
                "pool_blocks": self.pool_blocks}


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
# Patch sources used by the sweep (deterministic per (seed, kind, budget interval, block / query))
# --------------------------------------------------------------------------------------------------------------


def _budget_intervals(ks: int | Sequence[int]) -> list[tuple[int, int]]:
    """``[(0, k1), (k1, k2), ...]`` over the positive budgets; an int ``k`` means the single budget ``k``."""
    ks = [ks] if isinstance(ks, int) else list(ks)
    positive = sorted({int(k) for k in ks if int(k) > 0})
    return list(zip([0] + positive[:-1], positive))


class PatchSource:
    """Gives the injected patches of one kind: per document (``document_patches``) or per query (``query_patches``).

    ``ks``: the budget grid (or one budget). Every budget uses the first K patches of one list of ``max(ks)``.

    Document-level kinds (gaussian, corpus) assemble a document's list from *blocks*, one per budget interval
    (``0-1, 1-4, 4-16, ...`` for the default grid): with ``settings.pool_blocks = B`` every interval has a pool of B
    blocks of fresh patches and each document takes one block per interval, chosen at random (a corpus document only
    takes blocks holding none of its own patches; when every block holds some, it gets a private block). A document's
    patches then have exactly the distribution of fresh draws (independent unit vectors, or independent uniform
    draws from the other documents), and two documents share a block of an interval with probability 1/B. The
    pooling state of every block is computed once for all the documents that take it, which is what makes the
    sweep cheap. ``pool_blocks = None`` gives every document private blocks (fully independent draws; slower).
    """

    def __init__(
        self,
        kind: str,
        ks: int | Sequence[int],
        settings: InjectionSettings,
        queries: Sequence[torch.Tensor],
        corpus: FlatCorpus,
        gold: Sequence[Sequence[int]],
        hard_indices: torch.Tensor | None = None,
        show_progress: bool = False,
    ):
        self.kind, self.settings, self.corpus = _check_kind(kind), settings, corpus
        self.intervals = _budget_intervals(ks)
        self.k_max = self.intervals[-1][1] if self.intervals else 0
        self.query_level = kind in QUERY_LEVEL_KINDS
        self.dim = corpus.vectors.shape[1]
        self.queries = queries
        self.n_documents = len(corpus.starts) - 1
        if kind == "hard":
            if hard_indices is not None and hard_indices.shape[1] < self.k_max:
                raise ValueError(f"hard_indices hold {hard_indices.shape[1]} patches per query, fewer than K = {self.k_max}")
            self.hard_indices = (
                hard_indices if hard_indices is not None
                else hard_negative_patches(queries, corpus, gold, self.k_max, show_progress=show_progress)
            )
        if not self.query_level:
            self._make_pool()

    # -- query-level kinds --
    def query_patches(self, query: int) -> torch.Tensor:
        """``[k_max, D]`` patches of query ``query`` (hard, spike)."""
        if self.kind == "hard":
            return self.corpus.vectors[self.hard_indices[query, : self.k_max]]
        generator = _generator(self.settings.seed, "spike", query)
        return spike_patches(self.queries[query], self.k_max, self.settings.spike_tokens, generator)

    # -- document-level kinds: pools of blocks --
    def _make_pool(self) -> None:
        shared = self.settings.pool_blocks or 0
        self.shared_blocks = shared
        n_documents = self.n_documents
        self._shared_vectors: list[torch.Tensor] = []  # per interval: [shared, width, D] (gaussian)
        self._shared_indices: list[torch.Tensor] = []  # per interval: [shared, width] rows of corpus.vectors (corpus)
        self.assignment = torch.empty(n_documents, len(self.intervals), dtype=torch.long)
        private = shared + torch.arange(n_documents)
        owner = self.corpus.owner() if self.kind == "corpus" else None
        for interval, (start, stop) in enumerate(self.intervals):
            width = stop - start
            generator = _generator(self.settings.seed, self.kind, "pool", interval)
            if shared == 0:
                self.assignment[:, interval] = private
                continue
            if self.kind == "gaussian":
                self._shared_vectors.append(gaussian_patches(shared * width, self.dim, generator).view(shared, width, self.dim))
                touched = None
            else:
                indices = torch.randint(0, self.corpus.vectors.shape[0], (shared, width), generator=generator)
                self._shared_indices.append(indices)
                touched = torch.zeros(n_documents, shared, dtype=torch.bool)
                touched[owner[indices], torch.arange(shared).unsqueeze(1).expand_as(indices)] = True
            draw = torch.rand(n_documents, shared, generator=_generator(self.settings.seed, self.kind, "assign", interval))
            if touched is not None:
                draw[touched] = -1.0
            best = draw.max(dim=1)
            self.assignment[:, interval] = torch.where(best.values >= 0, best.indices, private)

    def block_patches(self, interval: int, blocks: torch.Tensor) -> torch.Tensor:
        """Patches ``[len(blocks), width, D]`` of the given blocks of one budget interval (document-level kinds)."""
        start, stop = self.intervals[interval]
        width, shared = stop - start, self.shared_blocks
        out = torch.empty(len(blocks), width, self.dim)
        is_shared = blocks < shared
        if is_shared.any():
            chosen = blocks[is_shared]
            out[is_shared] = (
                self._shared_vectors[interval][chosen] if self.kind == "gaussian"
                else self.corpus.vectors[self._shared_indices[interval][chosen]]
            )
        for position in torch.nonzero(~is_shared).flatten().tolist():
            block = int(blocks[position])
            generator = _generator(self.settings.seed, self.kind, "private", interval, block - shared)
            out[position] = (
                gaussian_patches(width, self.dim, generator) if self.kind == "gaussian"
                else corpus_patches(self.corpus, block - shared, width, generator)
            )
        return out

    def document_patches(self, document: int) -> torch.Tensor:
        """``[k_max, D]`` patches of document ``document`` (gaussian, corpus), the same for every query."""
        if not self.intervals:
            return torch.zeros(0, self.dim)
        return torch.cat([
            self.block_patches(interval, self.assignment[document, interval : interval + 1])[0]
            for interval in range(len(self.intervals))
        ])

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


def _compare_exchange(columns: list[torch.Tensor], i: int, j: int, descending: bool = True) -> None:
    high, low = torch.maximum(columns[i], columns[j]), torch.minimum(columns[i], columns[j])
    columns[i], columns[j] = (high, low) if descending else (low, high)


def _bitonic_sort(columns: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sort k (a power of two) same-shape tensors element-wise into descending order (a bitonic sorting network)."""
    k, size = len(columns), 2
    while size <= k:
        stride = size // 2
        while stride >= 1:
            for i in range(k):
                j = i ^ stride
                if j > i:
                    _compare_exchange(columns, i, j, descending=(i & size) == 0)
            stride //= 2
        size *= 2
    return columns


def _bitonic_merge(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
    """The k largest of two element-wise descending k-lists, descending: max(a_i, b_(k-1-i)) is bitonic; clean it."""
    k = len(a)
    columns = [torch.maximum(a[i], b[k - 1 - i]) for i in range(k)]
    stride = k // 2
    while stride >= 1:
        for i in range(k):
            j = i ^ stride
            if j > i:
                _compare_exchange(columns, i, j)
        stride //= 2
    return columns


def top_k_values(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest values over the last dim, ``[..., k]`` in descending order (k <= width).

    For k a power of two, a network of element-wise max / min over slices of columns (sort k slices, then halve the
    slices by bitonic merges): about 2.5x faster than ``torch.topk``, whose cost on short rows is per row. Other k:
    ``torch.topk``.
    """
    width = values.shape[-1]
    if k < 2 or k & (k - 1) or width < 2 * k:
        return values.topk(min(k, width), dim=-1, sorted=True).values
    groups = width // k
    columns = _bitonic_sort([values[..., i * groups : (i + 1) * groups] for i in range(k)])
    pending = []
    if width > groups * k:  # fewer than k columns left over: a -inf padded k-list of their own
        tail = [values[..., column : column + 1] for column in range(groups * k, width)]
        pending.append(_bitonic_sort(tail + [torch.full_like(tail[0], -math.inf)] * (k - len(tail))))
    while columns[0].shape[-1] > 1:
        count = columns[0].shape[-1]
        if count % 2:
            pending.append([column[..., -1:] for column in columns])
            count -= 1
        half = count // 2
        columns = _bitonic_merge([c[..., :half] for c in columns], [c[..., half:count] for c in columns])
    for extra in pending:
        columns = _bitonic_merge(columns, extra)
    return torch.cat(columns, dim=-1)


def shared_partials(
    heads: Sequence[PoolingHead], similarities: torch.Tensor, mask: torch.Tensor | None, masked_are_zero: bool = False
) -> tuple[list[tuple], torch.Tensor]:
    """``head.partial`` of every head over the last dim of ``similarities [..., L]``, sharing the work between heads.

    ``mask`` (bool, broadcastable to the similarities; None = every patch is real); ``masked_are_zero``: the
    similarities are exactly 0 at masked patches (zero-padded documents), which saves a copy. One masked copy, one max
    (maxsim, and the shift of softmax / lse), one exponential per distinct tau (softmax and lse of the same tau share it), one
    top-k per distinct k. Built-in heads give exactly the states of their own ``partial``, except that top-k states are
    sorted in descending order (which :func:`merge_states` relies on) and padded with -inf to k columns when there are
    fewer than k patches; other mergeable heads fall back to ``head.partial``.
    Returns (states in head order, the max ``[...]``, -inf where no patch is real).
    """
    similarities = similarities.float()
    all_valid = mask is None or _all_valid(mask)
    filled = similarities if all_valid else similarities.masked_fill(~mask, -math.inf)
    peak = filled.amax(dim=-1)
    shift = peak if all_valid else torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    zeroed = None
    count = None
    weights: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
    tops: dict[int, torch.Tensor] = {}

    def zero_filled():
        nonlocal zeroed
        if zeroed is None:
            zeroed = filled if all_valid else similarities if masked_are_zero else similarities.masked_fill(~mask, 0.0)
        return zeroed

    def counts():
        nonlocal count
        if count is None:
            shape = similarities.shape[:-1]
            count = (torch.full(shape, float(similarities.shape[-1])) if mask is None
                     else mask.to(torch.float32).sum(dim=-1).expand(shape))
        return count

    def exponentials(tau: float):
        if tau not in weights:
            exp = (filled - shift.unsqueeze(-1)).mul_(1.0 / tau).exp_()
            weights[tau] = (exp, exp.sum(dim=-1))
        return weights[tau]

    states = []
    for head in heads:
        kind = type(head)
        if kind is MaxSimHead:
            states.append((peak,))
        elif kind is TopKHead:
            if head.k not in tops:
                width = filled.shape[-1]
                if head.k == 1:
                    tops[1] = peak.unsqueeze(-1)
                elif head.k <= width:
                    tops[head.k] = top_k_values(filled, head.k)
                else:
                    pad = filled.new_full((*filled.shape[:-1], head.k - width), -math.inf)
                    tops[head.k] = torch.cat([filled, pad], dim=-1).sort(dim=-1, descending=True).values
            states.append((tops[head.k],))
        elif kind is SoftmaxHead:
            exp, total = exponentials(head.tau)
            states.append((shift, total, torch.linalg.vecdot(exp, zero_filled())))
        elif kind is LogSumExpHead:
            states.append((shift, exponentials(head.tau)[1], counts()))
        elif kind is MeanHead:
            states.append((zero_filled().sum(dim=-1), counts()))
        else:  # head.partial wants [..., Tq, L] and a mask [..., L]: one query token per row
            full_mask = torch.ones(similarities.shape, dtype=torch.bool) if mask is None else mask.expand(similarities.shape)
            position = similarities.dim() - 1
            states.append(tuple(part.float().squeeze(position) for part in head.partial(similarities.unsqueeze(-2), full_mask)))
    return states, peak


def merge_states(head: PoolingHead, a: tuple, b: tuple) -> tuple:
    """``head.merge(a, b)``; top-k states from :func:`shared_partials` (sorted, k a power of two) merge by a bitonic
    network instead of ``torch.topk`` over the 2k values.

    This lives here, not in TopKHead, because only the sweep's states are sorted: TopKHead.partial keeps
    ``torch.topk`` since training differentiates through it, and the max / min network's forward + backward is ~6.7x
    slower than topk's on training shapes ([32, 32, 32, 96], k = 4).
    """
    if type(head) is TopKHead and head.k >= 2 and not head.k & (head.k - 1) and a[0].shape[-1] == b[0].shape[-1] == head.k:
        merged = _bitonic_merge(list(a[0].unbind(-1)), list(b[0].unbind(-1)))
        return (torch.stack(merged, dim=-1),)
    return head.merge(a, b)


class InjectionSweep:
    """The merged-state sweep, prepared once (patch sources, per-query and per-block states) and run per document set.

    Phase 1 (per chunk of documents, per tile of query tokens): one matrix product gives the similarities of the
    query tokens to the documents' own patches, and :func:`shared_partials` summarises them for every head: the
    state at K = 0 of every (query token, document). Phase 2 (per tile of query tokens, all the documents at once):
    for every kind, the injected patches' states (per query for hard / spike, per block for gaussian / corpus,
    computed once) are merged in budget after budget, finalised and summed over each query's tokens.
    """

    def __init__(
        self,
        queries: Sequence[torch.Tensor],
        documents: Sequence[torch.Tensor],
        gold: Sequence[Sequence[int]],
        heads: Sequence[str | PoolingHead],
        kinds: Sequence[str],
        ks: Sequence[int] = DEFAULT_KS,
        settings: InjectionSettings | None = None,
        *,
        hard_indices: torch.Tensor | None = None,
        document_batch_size: int = 8,
        token_tile_elements: int = 1 << 20,
        merge_tile_elements: int = 1 << 20,
        show_progress: bool = True,
    ):
        self.settings = settings or InjectionSettings()
        unique = {}
        for head in heads:
            head = parse_head(head)
            unique.setdefault(head.spec(), head)  # a head given twice is scored once
        self.heads = list(unique.values())
        for head in self.heads:
            if not head.mergeable:
                raise ValueError(
                    f"the injection sweep needs pooling heads that can be computed in parts (partial / merge / "
                    f"finalize, see lir_robust/pooling.py); {head.spec()} cannot"
                )
        self.specs = list(unique)
        self.kinds = [_check_kind(kind) for kind in kinds]
        ks = sorted(set(int(k) for k in ks) | {0})
        if ks[0] < 0:
            raise ValueError(f"budgets K must be >= 0, got {ks}")
        if document_batch_size < 1 or token_tile_elements < 1 or merge_tile_elements < 1:
            raise ValueError("document_batch_size, token_tile_elements and merge_tile_elements must be >= 1")
        self.ks, self.intervals = ks, _budget_intervals(ks)
        self.queries, self.documents, self.gold = queries, documents, gold
        self.document_batch_size, self.token_tile_elements = document_batch_size, token_tile_elements
        self.merge_tile_elements, self.show_progress = merge_tile_elements, show_progress
        self.n_queries, self.n_documents = len(queries), len(documents)

        self.query_tokens = torch.cat([query.float() for query in queries])  # [T, D]
        token_counts = torch.tensor([query.shape[0] for query in queries])
        self.token_owner = torch.repeat_interleave(torch.arange(self.n_queries), token_counts)  # [T]
        self.token_share = 1.0 / token_counts.float()[self.token_owner]  # [T]: a token's share of its query
        self.corpus = FlatCorpus.from_documents(documents)
        self.gold_mask = torch.zeros(self.n_queries, self.n_documents, dtype=torch.bool)
        for row, indices in enumerate(gold):
            self.gold_mask[row, list(indices)] = True

        self.sources = {
            kind: PatchSource(kind, ks, self.settings, queries, self.corpus, gold,
                              hard_indices=hard_indices if kind == "hard" else None, show_progress=show_progress)
            for kind in self.kinds
        } if self.intervals else {}
        # Query-level kinds: per interval, the states [T, ...] of each token against its own query's patches.
        self.query_states: dict[str, list[tuple[list[tuple], torch.Tensor]]] = {}
        for kind, source in self.sources.items():
            if source.query_level:
                similarities = torch.cat([
                    queries[query].float() @ source.query_patches(query).T for query in range(self.n_queries)
                ])  # [T, k_max]
                self.query_states[kind] = [
                    shared_partials(self.heads, similarities[:, start:stop], None) for start, stop in self.intervals
                ]
        self._block_cache: dict[tuple[str, int], tuple[list[tuple], torch.Tensor]] = {}

    # -- states of the injected blocks (document-level kinds) --
    def _block_states(self, kind: str, interval: int, blocks: torch.Tensor) -> tuple[list[tuple], torch.Tensor]:
        """States ``[T, len(blocks), ...]`` of every head and the max ``[T, len(blocks)]`` over the given blocks."""
        source = self.sources[kind]
        vectors = source.block_patches(interval, blocks)  # [U, width, D]
        count, width = vectors.shape[0], vectors.shape[1]
        flat = vectors.reshape(count * width, -1).T.contiguous()
        n_tokens = self.query_tokens.shape[0]
        tile = max(1, min(n_tokens, self.token_tile_elements // max(1, count * width)))
        parts = []
        for token_start in range(0, n_tokens, tile):
            similarities = (self.query_tokens[token_start : token_start + tile] @ flat).view(-1, count, width)
            parts.append(shared_partials(self.heads, similarities, None))
        states = [tuple(torch.cat([part[0][h][c] for part in parts]) for c in range(len(parts[0][0][h])))
                  for h in range(len(self.heads))]
        return states, torch.cat([part[1] for part in parts])

    def _block_table(self, kind: str, interval: int, documents: torch.Tensor):
        """(states, max) of the blocks the given documents take, and each document's position in them."""
        source = self.sources[kind]
        taken = source.assignment[documents, interval]
        shared = source.shared_blocks
        key = (kind, interval)
        if shared and key not in self._block_cache:
            self._block_cache[key] = self._block_states(kind, interval, torch.arange(shared))
        private = torch.unique(taken[taken >= shared])
        if len(private) == 0:
            return self._block_cache[key], taken
        states, peak = self._block_states(kind, interval, private)
        if shared:
            cached_states, cached_peak = self._block_cache[key]
            states = [tuple(torch.cat([a, b], dim=1) for a, b in zip(old, new)) for old, new in zip(cached_states, states)]
            peak = torch.cat([cached_peak, peak], dim=1)
        position = taken.clone()
        is_private = taken >= shared
        position[is_private] = shared + torch.searchsorted(private, taken[is_private])
        return (states, peak), position

    # -- phase 1: the documents' own patches --
    def _base_states(self, documents: list[int]) -> tuple[list[tuple], torch.Tensor]:
        """K = 0 states ``[T, n, ...]`` of every head and the max ``[T, n]`` for the given documents (in that order)."""
        n_tokens, n = self.query_tokens.shape[0], len(documents)
        lengths = torch.tensor([self.documents[index].shape[0] for index in documents])
        order = torch.argsort(lengths, stable=True)  # chunks of similar length: less padding
        states: list[list[torch.Tensor]] | None = None  # columns in `order` until the end, so chunks write slices
        peak = torch.empty(n_tokens, n)
        starts = range(0, n, self.document_batch_size)
        for start in tqdm(starts, desc="sweep: documents", disable=not self.show_progress, leave=False):
            chunk = order[start : start + self.document_batch_size].tolist()
            block, mask = pad_with_mask([self.documents[documents[position]].float() for position in chunk])  # [c, L, D]
            count, length = block.shape[0], block.shape[1]
            columns = slice(start, start + count)
            flat = block.reshape(count * length, -1).T.contiguous()  # [D, c * L]
            tile = max(1, min(n_tokens, self.token_tile_elements // max(1, count * length)))
            chunk_mask = mask.unsqueeze(0)  # [1, c, L]
            for token_start in range(0, n_tokens, tile):
                rows = slice(token_start, min(n_tokens, token_start + tile))
                similarities = (self.query_tokens[rows] @ flat).view(-1, count, length)  # [t, c, L]
                # zero-padded rows give similarities of exactly 0 at masked patches
                tile_states, tile_peak = shared_partials(self.heads, similarities, chunk_mask, masked_are_zero=True)
                if states is None:
                    states = [[torch.empty(n_tokens, n, *part.shape[2:]) for part in state] for state in tile_states]
                for stored, state in zip(states, tile_states):
                    for target, part in zip(stored, state):
                        target[rows, columns] = part
                peak[rows, columns] = tile_peak
        assert states is not None
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n)
        return [tuple(part.index_select(1, inverse) for part in state) for state in states], peak.index_select(1, inverse)

    # -- phase 2: merge the injected states in, budget after budget --
    def score(self, document_subset: Sequence[int] | None = None) -> SweepScores:
        """Scores ``[Nq, Nd]`` of every head / kind / K for the given documents (all by default; other columns 0)."""
        documents = list(range(self.n_documents)) if document_subset is None else [int(d) for d in document_subset]
        if len(set(documents)) != len(documents) or any(not 0 <= d < self.n_documents for d in documents):
            raise ValueError(f"document_subset must list distinct document indices in [0, {self.n_documents})")
        shape = (self.n_queries, self.n_documents)
        zero_scores = {spec: torch.zeros(shape) for spec in self.specs}
        scores = {spec: {kind: {0: zero_scores[spec], **{k: torch.zeros(shape) for k in self.ks[1:]}} for kind in self.kinds}
                  for spec in self.specs}
        hijack = {kind: {k: torch.zeros(shape) for k in self.ks[1:]} for kind in self.kinds}  # float16 at the end
        if not documents:
            return SweepScores(scores=scores, hijack=_half(hijack))
        columns = torch.tensor(documents)
        n, n_tokens = len(documents), self.query_tokens.shape[0]
        with torch.no_grad():
            base, base_peak = self._base_states(documents)
            for spec, head, state in zip(self.specs, self.heads, base):
                zero_scores[spec][:, columns] = self._per_query(head.finalize(state))
            tables = {
                (kind, interval): self._block_table(kind, interval, columns)
                for kind, source in self.sources.items() if not source.query_level
                for interval in range(len(self.intervals))
            }
            tile = max(1, min(n_tokens, self.merge_tile_elements // n))
            steps = [(kind, start) for kind in self.sources for start in range(0, n_tokens, tile)]
            for kind, token_start in tqdm(steps, desc="sweep: injected", disable=not self.show_progress, leave=False):
                rows = slice(token_start, min(n_tokens, token_start + tile))
                t = rows.stop - rows.start
                running = [tuple(part[rows] for part in state) for state in base]
                original_peak = base_peak[rows]
                injected_peak = torch.full_like(original_peak, -math.inf)
                for interval, (_, stop) in enumerate(self.intervals):
                    if kind in self.query_states:
                        part_states, part_peak = self.query_states[kind][interval]
                        parts = [tuple(p[rows].unsqueeze(1).expand(t, n, *p.shape[1:]) for p in state) for state in part_states]
                        part_peak = part_peak[rows].unsqueeze(1)
                    else:
                        (table_states, table_peak), position = tables[kind, interval]
                        parts = [tuple(p[rows].index_select(1, position) for p in state) for state in table_states]
                        part_peak = table_peak[rows].index_select(1, position)
                    injected_peak = torch.maximum(injected_peak, part_peak)
                    hijacked = (injected_peak > original_peak + TIE_TOLERANCE).float().mul_(self.token_share[rows].unsqueeze(1))
                    hijack[kind][stop][:, columns] += self._per_query(hijacked, rows)
                    for h, (spec, head) in enumerate(zip(self.specs, self.heads)):
                        running[h] = merge_states(head, running[h], parts[h])
                        scores[spec][kind][stop][:, columns] += self._per_query(head.finalize(running[h]), rows)

        # Targets: documents left untouched keep their K = 0 scores and have no hijacked token.
        for kind in self.kinds:
            if self.settings.target(kind) == "non-gold":
                for k in self.ks[1:]:
                    hijack[kind][k][self.gold_mask] = 0
                    for spec in self.specs:
                        scores[spec][kind][k][self.gold_mask] = zero_scores[spec][self.gold_mask]
        return SweepScores(scores=scores, hijack=_half(hijack))

    def _per_query(self, values: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """Sum per-token values ``[t, n]`` into their queries: ``[Nq, n]``."""
        owner = self.token_owner if rows is None else self.token_owner[rows]
        return torch.zeros(self.n_queries, values.shape[1]).index_add_(0, owner, values.float())


def _half(hijack: dict[str, dict[int, torch.Tensor]]) -> dict[str, dict[int, torch.Tensor]]:
    return {kind: {k: values.half() for k, values in by_k.items()} for kind, by_k in hijack.items()}


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
    token_tile_elements: int = 1 << 20,
    merge_tile_elements: int = 1 << 20,
) -> SweepScores:
    """Scores of every query against every document, for every head, kind and budget K, in one pass.

    queries: ``Nq`` tensors ``[Tq_i, D]``; documents: ``Nd`` tensors ``[L_j, D]`` (valid rows only, unit norm);
    gold: ``gold[i]`` = indices of query i's gold (relevant) documents. ``document_subset`` restricts the pass to
    some documents (their columns are filled, others left 0): the unit of resumption (to score several subsets, build
    one :class:`InjectionSweep` and call its ``score`` per subset, so the injected states are computed once).
    ``token_tile_elements`` / ``merge_tile_elements`` bound the temporaries (speed only, same result). Returns
    :class:`SweepScores` (scores ``[Nq, Nd]`` per head / kind / K). Equals scoring the concatenated documents head by
    head (tested against :func:`brute_force_scores`).
    """
    sweep = InjectionSweep(
        queries, documents, gold, heads, kinds, ks, settings, hard_indices=hard_indices,
        document_batch_size=document_batch_size, token_tile_elements=token_tile_elements,
        merge_tile_elements=merge_tile_elements, show_progress=show_progress,
    )
    return sweep.score(document_subset)


def brute_force_scores(
    queries: Sequence[torch.Tensor],
    documents: Sequence[torch.Tensor],
    gold: Sequence[Sequence[int]],
    head: str | PoolingHead,
    kind: str,
    k: int,
    ks: int | Sequence[int],
    settings: InjectionSettings | None = None,
    hard_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference: build every injected document explicitly and score it with ``head``: ``[Nq, Nd]`` (slow; tests).

    ``ks``: the sweep's budget grid (it fixes the blocks of gaussian / corpus patches); ``k``: the budget scored.
    """
    from lir_robust.scoring import score

    settings = settings or InjectionSettings()
    corpus = FlatCorpus.from_documents(documents)
    source = PatchSource(kind, ks, settings, queries, corpus, gold, hard_indices=hard_indices)
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
