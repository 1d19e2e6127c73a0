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

from lir_robust.scoring.pooling import PoolingHead, SharedWork, parse_head
from lir_robust.sweep.ranked import RANKED_DEPTH, RankedScores, ranked_key
from lir_robust.scoring.scorer import pad_with_mask

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
    "parse_injection",
    "hard_patches_needed",
    "nearest_patches",
    "PatchSource",
    "SweepScores",
    "RankedScores",
    "RANKED_DEPTH",
    "InjectionSweep",
    "shared_partials",
    "sweep_scores",
    "brute_force_scores",
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
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'none', got {text!r}")
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
        if isinstance(self.spike_tokens, bool) or not isinstance(self.spike_tokens, int) or self.spike_tokens < 1:
            raise ValueError(f"spike_tokens (query tokens averaged into one spike patch) must be an integer >= 1, got {self.spike_tokens!r}")
        for kind, target in self.targets.items():
            _check_kind(kind)
            if target not in TARGETS:
                raise ValueError(f"injection target for {kind!r} must be one of {TARGETS}, got {target!r}")

    def target(self, injection: str) -> str:
        """``non-gold``, ``all`` or ``attacked:N`` (the few-document attack ``KIND@N``)."""
        kind, attacked = parse_injection(injection)
        if attacked is not None:
            return f"attacked:{attacked}"
        return self.targets.get(kind, DEFAULT_TARGETS[kind])

    def to_dict(self) -> dict:
        return {"seed": self.seed, "spike_tokens": self.spike_tokens, "targets": dict(sorted(self.targets.items())),
                "pool_blocks": self.pool_blocks}


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown injection kind {kind!r}; kinds: {', '.join(KINDS)} (attacks on a few documents: "
                         f"{'@N, '.join(QUERY_LEVEL_KINDS)}@N)")
    return kind


def parse_injection(name: str) -> tuple[str, int | None]:
    """``"spike"`` -> ``("spike", None)``; ``"spike@10"`` -> ``("spike", 10)``: the few-document attack, where N
    non-gold documents of each query (drawn with the seed) each receive their own patches and the others none.

    Raises ValueError naming the problem (unknown kind, N not an integer >= 1, @N on a document-level kind).
    """
    if not isinstance(name, str):
        raise ValueError(f"an injection is named by text such as 'hard' or 'spike@10', got {name!r}")
    kind, at, count = name.strip().partition("@")
    _check_kind(kind)
    if not at:
        return kind, None
    if kind not in QUERY_LEVEL_KINDS:
        raise ValueError(f"{name!r}: the few-document attack KIND@N exists for {', '.join(QUERY_LEVEL_KINDS)}, not {kind} "
                         "(gaussian / corpus patches already differ per document)")
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{name!r}: N in KIND@N is the number of attacked documents per query, an integer >= 1")
    return kind, int(count)


def _generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from the given parts (stable across runs and processes)."""
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


# --------------------------------------------------------------------------------------------------------------
# Patch generators
# --------------------------------------------------------------------------------------------------------------


@dataclass
class FlatCorpus:
    """All document patches in one matrix: ``vectors [N_patches, D]``; document i owns rows ``starts[i]:starts[i+1]``.

    ``vectors`` may be memory-mapped (the embedding cache stores a corpus this way): nothing here copies the whole
    matrix; documents are views, read in float32.
    """

    vectors: torch.Tensor
    starts: torch.Tensor  # [Nd + 1] long

    @classmethod
    def from_documents(cls, documents: "Sequence[torch.Tensor] | FlatCorpus") -> "FlatCorpus":
        """One matrix from a list of ``[L_i, D]`` tensors (a copy); a FlatCorpus is returned as it is."""
        if isinstance(documents, FlatCorpus):
            return documents
        lengths = torch.tensor([document.shape[0] for document in documents], dtype=torch.long)
        starts = torch.zeros(len(documents) + 1, dtype=torch.long)
        starts[1:] = lengths.cumsum(0)
        dim = documents[0].shape[-1] if len(documents) else 0
        vectors = torch.cat([document.float() for document in documents]) if len(documents) else torch.zeros(0, dim)
        return cls(vectors, starts)

    def __len__(self) -> int:
        return len(self.starts) - 1

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        """Patches per document ``[Nd]``."""
        return self.starts[1:] - self.starts[:-1]

    def document(self, index: int) -> torch.Tensor:
        """Document ``index`` as ``[L, D]`` float32."""
        return self.vectors[int(self.starts[index]) : int(self.starts[index + 1])].float()

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"document {index} of {len(self)}")
        return self.document(index % len(self))

    def __iter__(self):
        return (self.document(index) for index in range(len(self)))

    def owner(self) -> torch.Tensor:
        """Document index of every patch ``[N_patches]``."""
        return torch.repeat_interleave(torch.arange(len(self)), self.lengths)


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


# --------------------------------------------------------------------------------------------------------------
# Patch sources used by the sweep (deterministic per (seed, kind, budget interval, block / query / document))
# --------------------------------------------------------------------------------------------------------------


def _budget_intervals(ks: int | Sequence[int]) -> list[tuple[int, int]]:
    """``[(0, k1), (k1, k2), ...]`` over the positive budgets; an int ``k`` means the single budget ``k``."""
    ks = [ks] if isinstance(ks, int) else list(ks)
    positive = sorted({int(k) for k in ks if int(k) > 0})
    return list(zip([0] + positive[:-1], positive))


def hard_patches_needed(injections: Sequence[str], ks: Sequence[int]) -> int:
    """Hard patches per query the injections need: ``max(ks)``, times N for a few-document attack ``hard@N``."""
    k_max = max([int(k) for k in ks] + [0])
    counts = [attacked or 1 for kind, attacked in map(parse_injection, injections) if kind == "hard"]
    return k_max * max(counts) if counts else 0


class PatchSource:
    """Gives the injected patches of one injection (a kind, or ``KIND@N``): per document (``document_patches``),
    per query (``query_patches``) or per attacked document of a query (``attacked_patches``).

    ``ks``: the budget grid (or one budget). Every budget uses the first K patches of one list of ``max(ks)``.

    Document-level kinds (gaussian, corpus) assemble a document's list from *blocks*, one per budget interval
    (``0-1, 1-4, 4-16, ...`` for the default grid): with ``settings.pool_blocks = B`` every interval has a pool of B
    blocks of fresh patches and each document takes one block per interval, chosen at random (a corpus document only
    takes blocks holding none of its own patches; when every block holds some, it gets a private block). A document's
    patches then have exactly the distribution of fresh draws (independent unit vectors, or independent uniform
    draws from the other documents), and two documents share a block of an interval with probability 1/B. The
    pooling state of every block is computed once for all the documents that take it, which is what makes the
    sweep cheap. ``pool_blocks = None`` gives every document private blocks (fully independent draws; slower).

    Few-document attacks (``hard@N``, ``spike@N``): N non-gold documents of each query, drawn with the seed (the
    same documents for every kind, and the first 10 of ``@50`` are those of ``@10``), each receive their own
    patches; no patch is shared between them. The j-th attacked document of a query takes spikes drawn for it alone,
    or the hard patches j, j + N, j + 2N, ... of the query's round-robin list of N x max(ks) hard patches.
    """

    def __init__(
        self,
        injection: str,
        ks: int | Sequence[int],
        settings: InjectionSettings,
        queries: Sequence[torch.Tensor],
        corpus: FlatCorpus,
        gold: Sequence[Sequence[int]],
        hard_indices: torch.Tensor | None = None,
        show_progress: bool = False,
    ):
        self.injection = injection
        self.kind, self.attacked = parse_injection(injection)
        self.settings, self.corpus, self.gold = settings, corpus, gold
        self.intervals = _budget_intervals(ks)
        self.k_max = self.intervals[-1][1] if self.intervals else 0
        self.query_level = self.kind in QUERY_LEVEL_KINDS and self.attacked is None
        self.dim = corpus.vectors.shape[1]
        self.queries = queries
        self.n_documents = len(corpus)
        if self.kind == "hard":
            needed = self.k_max * (self.attacked or 1)
            if hard_indices is not None and hard_indices.shape[1] < needed:
                raise ValueError(f"hard_indices hold {hard_indices.shape[1]} patches per query, fewer than the {needed} "
                                 f"{injection} needs")
            self.hard_indices = (
                hard_indices if hard_indices is not None
                else hard_negative_patches(queries, corpus, gold, needed, show_progress=show_progress)
            )
        if self.kind in DOCUMENT_LEVEL_KINDS:
            self._make_pool()
        if self.attacked is not None:
            self._choose_attacked()

    # -- query-level kinds --
    def query_patches(self, query: int) -> torch.Tensor:
        """``[k_max, D]`` patches of query ``query`` (hard, spike), the same for every injected document."""
        if self.kind == "hard":
            return self.corpus.vectors[self.hard_indices[query, : self.k_max]].float()
        generator = _generator(self.settings.seed, "spike", query)
        return spike_patches(self.queries[query], self.k_max, self.settings.spike_tokens, generator)

    # -- few-document attacks --
    def _choose_attacked(self) -> None:
        self.attacked_documents: list[torch.Tensor] = []  # per query: the attacked document indices, in slot order
        for query in range(len(self.queries)):
            order = torch.randperm(self.n_documents, generator=_generator(self.settings.seed, "attacked", query))
            non_gold = order[~torch.isin(order, torch.tensor(list(self.gold[query]), dtype=torch.long))]
            self.attacked_documents.append(non_gold[: self.attacked])

    def attacked_patches(self, query: int, slots: "int | Sequence[int]") -> torch.Tensor:
        """Patches of the ``slots``-th attacked documents of ``query`` (each its own, shared with no other):
        ``[k_max, D]`` for one slot, ``[len(slots), k_max, D]`` for several.

        Spikes: one list of N x max(ks) spikes is drawn per query (seeded by the query alone), slot j taking the j-th
        run of max(ks), so a document attacked in ``spike@10`` carries the same patches in ``spike@50``."""
        chosen = torch.tensor([slots] if isinstance(slots, int) else list(slots), dtype=torch.long)
        if self.kind == "hard":
            rows = torch.stack([self.hard_indices[query, int(slot) :: self.attacked][: self.k_max] for slot in chosen])
            patches = self.corpus.vectors[rows].float()
        else:
            if getattr(self, "_spike_query", None) != query:  # one draw per query, reused for all its slots
                generator = _generator(self.settings.seed, "spike", query, "attacked")
                count = self.attacked * self.k_max
                self._spike_list = spike_patches(self.queries[query], count, self.settings.spike_tokens, generator)
                self._spike_query = query
            patches = self._spike_list.view(self.attacked, self.k_max, -1)[chosen]
        return patches[0] if isinstance(slots, int) else patches

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
                else self.corpus.vectors[self._shared_indices[interval][chosen]].float()
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

    def patches_for(self, query: int, document: int) -> torch.Tensor | None:
        """``[k_max, D]`` patches document ``document`` receives for ``query``, None when the injection leaves it alone
        (gold documents under ``non-gold``, documents outside the attacked ones)."""
        target = self.settings.target(self.injection)
        if target == "non-gold" and document in set(self.gold[query]):
            return None
        if self.attacked is not None:
            slots = (self.attacked_documents[query] == document).nonzero().flatten().tolist()
            return self.attacked_patches(query, slots[0]) if slots else None
        return self.query_patches(query) if self.query_level else self.document_patches(document)


# --------------------------------------------------------------------------------------------------------------
# What the sweep produces: dense scores (small runs, tests) or each query's top documents (any corpus size)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SweepScores:
    """Scores of every (head, injection, K) and hijack shares of every (injection, K), dense.

    ``scores[head_spec][injection][K]``: float32 ``[Nq, Nd]``; K = 0 is the same tensor under every injection.
    ``hijack[injection][K]``: float16 ``[Nq, Nd]``, the share of the query's tokens whose best-matching patch in the
    injected document is an injected one (0 for documents left untouched).
    """

    scores: dict[str, dict[str, dict[int, torch.Tensor]]]
    hijack: dict[str, dict[int, torch.Tensor]]


# --------------------------------------------------------------------------------------------------------------
# The merged-state sweep
# --------------------------------------------------------------------------------------------------------------


def shared_partials(
    heads: Sequence[PoolingHead], similarities: torch.Tensor, mask: torch.Tensor | None, masked_are_zero: bool = False,
) -> tuple[list[tuple], torch.Tensor]:
    """Every head's summary of the last axis of ``similarities [..., L]`` (through ``head.partial_shared``, which
    shares the max, the exponentials of one tau and the top-k between heads), and the max ``[...]`` (-inf where no
    patch is real), which the hijack share needs."""
    work = SharedWork(similarities, mask, masked_are_zero=masked_are_zero)
    return [head.partial_shared(work) for head in heads], work.peak


def _query_tiles(token_counts: torch.Tensor, columns: int, budget: int) -> list[tuple[int, int]]:
    """Ranges of whole queries ``(first, stop)`` whose tokens x columns stay within ``budget`` elements (at least one
    query per range)."""
    tiles, start, tokens = [], 0, 0
    for query, count in enumerate(token_counts.tolist()):
        if query > start and (tokens + count) * columns > budget:
            tiles.append((start, query))
            start, tokens = query, 0
        tokens += count
    tiles.append((start, len(token_counts)))
    return tiles


class InjectionSweep:
    """The merged-state sweep, prepared once (patch sources, per-query and per-block states) and run per document set.

    Phase 1 (per chunk of documents, per tile of query tokens): one matrix product gives the similarities of the
    query tokens to the documents' own patches, and every head summarises them (``partial_shared``): the state at
    K = 0 of every (query token, document). Phase 2 (per range of whole queries, all the documents at once): for every
    injection, the injected patches' states (per query for hard / spike, per block for gaussian / corpus, per attacked
    document for ``KIND@N``, computed once) are merged in budget after budget and finalised, a query's tokens together
    (so joint heads work too). A head that cannot be computed in parts is scored on the concatenated documents
    instead (slow; logged). ``score`` returns dense scores, ``rank`` each query's top documents.
    """

    def __init__(
        self,
        queries: Sequence[torch.Tensor],
        documents: "Sequence[torch.Tensor] | FlatCorpus",
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
        self.specs = list(unique)
        self.heads = list(unique.values())
        self.mergeable = [head for head in self.heads if head.mergeable]
        self.brute_force = [head for head in self.heads if not head.mergeable]
        self.injections = list(dict.fromkeys(kinds))
        for injection in self.injections:
            parse_injection(injection)
        ks = sorted(set(int(k) for k in ks) | {0})
        if ks[0] < 0:
            raise ValueError(f"budgets K must be >= 0, got {ks}")
        if document_batch_size < 1 or token_tile_elements < 1 or merge_tile_elements < 1:
            raise ValueError("document_batch_size, token_tile_elements and merge_tile_elements must be >= 1")
        self.corpus = FlatCorpus.from_documents(documents)
        self.n_queries, self.n_documents = len(queries), len(self.corpus)
        _check_inputs(queries, self.corpus, gold)
        self.ks, self.intervals = ks, _budget_intervals(ks)
        self.queries, self.gold = queries, gold
        self.document_batch_size, self.token_tile_elements = document_batch_size, token_tile_elements
        self.merge_tile_elements, self.show_progress = merge_tile_elements, show_progress

        self.query_tokens = torch.cat([query.float() for query in queries])  # [T, D]
        self.token_counts = torch.tensor([query.shape[0] for query in queries])
        self.token_starts = torch.zeros(self.n_queries + 1, dtype=torch.long)
        self.token_starts[1:] = self.token_counts.cumsum(0)
        self.token_owner = torch.repeat_interleave(torch.arange(self.n_queries), self.token_counts)  # [T]
        self.token_position = torch.arange(len(self.token_owner)) - self.token_starts[self.token_owner]  # [T]
        self.token_share = 1.0 / self.token_counts.float()[self.token_owner]  # [T]: a token's share of its query
        self.gold_width = max([len(indices) for indices in gold] + [1])
        self.gold_matrix = torch.full((self.n_queries, self.gold_width), -1, dtype=torch.long)
        for row, indices in enumerate(gold):
            self.gold_matrix[row, : len(indices)] = torch.tensor(sorted(indices), dtype=torch.long)

        self.sources = {
            injection: PatchSource(injection, ks, self.settings, queries, self.corpus, gold,
                                   hard_indices=hard_indices if parse_injection(injection)[0] == "hard" else None,
                                   show_progress=show_progress)
            for injection in self.injections
        } if self.intervals else {}
        # Query-level kinds: per interval, the states [T, ...] of each token against its own query's patches.
        self.query_states: dict[str, list[tuple[list[tuple], torch.Tensor]]] = {}
        for injection, source in self.sources.items():
            if source.query_level:
                similarities = torch.cat([
                    queries[query].float() @ source.query_patches(query).T for query in range(self.n_queries)
                ])  # [T, k_max]
                self.query_states[injection] = [
                    self._shared_partials(similarities[:, start:stop], None) for start, stop in self.intervals
                ]
        self._block_cache: dict[tuple[str, int], tuple[list[tuple], torch.Tensor]] = {}
        if self.brute_force:
            logger.warning(
                "pooling head(s) %s cannot be computed in parts: scored on the concatenated documents, %d queries x %d "
                "injections x %d budgets scoring passes (slow; a head with partial / merge / finalize runs much faster)",
                ", ".join(head.spec() for head in self.brute_force), self.n_queries, len(self.injections), len(ks) - 1,
            )

    def _shared_partials(self, similarities, mask, masked_are_zero=False):
        return shared_partials(self.mergeable, similarities, mask, masked_are_zero)

    # -- states of the injected blocks (document-level kinds) --
    def _block_states(self, injection: str, interval: int, blocks: torch.Tensor) -> tuple[list[tuple], torch.Tensor]:
        """States ``[T, len(blocks), ...]`` of every head and the max ``[T, len(blocks)]`` over the given blocks."""
        source = self.sources[injection]
        vectors = source.block_patches(interval, blocks)  # [U, width, D]
        count, width = vectors.shape[0], vectors.shape[1]
        flat = vectors.reshape(count * width, -1).T.contiguous()
        n_tokens = self.query_tokens.shape[0]
        tile = max(1, min(n_tokens, self.token_tile_elements // max(1, count * width)))
        parts = []
        for token_start in range(0, n_tokens, tile):
            similarities = (self.query_tokens[token_start : token_start + tile] @ flat).view(-1, count, width)
            parts.append(self._shared_partials(similarities, None))
        states = [tuple(torch.cat([part[0][h][c] for part in parts]) for c in range(len(parts[0][0][h])))
                  for h in range(len(self.mergeable))]
        return states, torch.cat([part[1] for part in parts])

    def _block_table(self, injection: str, interval: int, documents: torch.Tensor):
        """(states, max) of the blocks the given documents take, and each document's position in them."""
        source = self.sources[injection]
        taken = source.assignment[documents, interval]
        shared = source.shared_blocks
        key = (injection, interval)
        if shared and key not in self._block_cache:
            self._block_cache[key] = self._block_states(injection, interval, torch.arange(shared))
        private = torch.unique(taken[taken >= shared])
        if len(private) == 0:
            return self._block_cache[key], taken
        states, peak = self._block_states(injection, interval, private)
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
        """K = 0 states ``[T, n, ...]`` of every mergeable head and the max ``[T, n]`` for the given documents."""
        n_tokens, n = self.query_tokens.shape[0], len(documents)
        lengths = self.corpus.lengths[torch.tensor(documents, dtype=torch.long)]
        order = torch.argsort(lengths, stable=True)  # chunks of similar length: less padding
        states: list[list[torch.Tensor]] | None = None  # columns in `order` until the end, so chunks write slices
        peak = torch.empty(n_tokens, n)
        starts = range(0, n, self.document_batch_size)
        for start in tqdm(starts, desc="sweep: documents", disable=not self.show_progress, leave=False):
            chunk = order[start : start + self.document_batch_size].tolist()
            block, mask = pad_with_mask([self.corpus.document(documents[position]) for position in chunk])  # [c, L, D]
            count, length = block.shape[0], block.shape[1]
            columns = slice(start, start + count)
            flat = block.reshape(count * length, -1).T.contiguous()  # [D, c * L]
            tile = max(1, min(n_tokens, self.token_tile_elements // max(1, count * length)))
            chunk_mask = mask.unsqueeze(0)  # [1, c, L]
            for token_start in range(0, n_tokens, tile):
                rows = slice(token_start, min(n_tokens, token_start + tile))
                similarities = (self.query_tokens[rows] @ flat).view(-1, count, length)  # [t, c, L]
                # zero-padded rows give similarities of exactly 0 at masked patches
                tile_states, tile_peak = self._shared_partials(similarities, chunk_mask, masked_are_zero=True)
                if states is None:
                    states = [[torch.empty(n_tokens, n, *part.shape[2:], dtype=part.dtype) for part in state]
                              for state in tile_states]
                for stored, state in zip(states, tile_states):
                    for target, part in zip(stored, state):
                        target[rows, columns] = part
                peak[rows, columns] = tile_peak
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n)
        states = states or [[] for _ in self.mergeable]
        return [tuple(part.index_select(1, inverse) for part in state) for state in states], peak.index_select(1, inverse)

    # -- finalising a range of whole queries --
    def _finalize(self, head: PoolingHead, state: tuple, first: int, stop: int) -> torch.Tensor:
        """Per-query scores ``[q, n]`` of queries ``first:stop`` from states ``[t, n, ...]`` of their tokens."""
        rows = slice(int(self.token_starts[first]), int(self.token_starts[stop]))
        owner = self.token_owner[rows] - first
        if not head.joint:
            values = head.finalize(state)  # [t, n]
            return torch.zeros(stop - first, values.shape[1]).index_add_(0, owner, values.float())
        # joint heads see each query's tokens together: [q, n, Tq_max, ...], with the query mask [q, 1, Tq_max]
        position = self.token_position[rows]
        width = int(self.token_counts[first:stop].max())
        grouped = []
        for part in state:
            out = part.new_zeros(stop - first, width, *part.shape[1:])
            out[owner, position] = part
            grouped.append(out.movedim(1, 2))
        query_mask = (torch.arange(width).unsqueeze(0) < self.token_counts[first:stop].unsqueeze(1)).unsqueeze(1)
        values = head.finalize(tuple(grouped), query_mask)  # [q, n, Tq_max]
        return torch.where(query_mask, values, 0).sum(dim=-1).float()

    def _hijack_per_query(self, hijacked: torch.Tensor, first: int, stop: int) -> torch.Tensor:
        rows = slice(int(self.token_starts[first]), int(self.token_starts[stop]))
        shares = hijacked.float().mul_(self.token_share[rows].unsqueeze(1))
        return torch.zeros(stop - first, shares.shape[1]).index_add_(0, self.token_owner[rows] - first, shares)

    # -- phase 2 --
    def blocks(self, document_subset: Sequence[int] | None = None):
        """Finished scores, block by block: yields ``(head spec, injection, K, queries first:stop, scores [q, n],
        hijack [q, n] or None)`` for the documents ``document_subset`` (all by default), in that order. At K = 0 the
        injection is "" and hijack None."""
        documents = list(range(self.n_documents)) if document_subset is None else [int(d) for d in document_subset]
        if len(set(documents)) != len(documents) or any(not 0 <= d < self.n_documents for d in documents):
            raise ValueError(f"document_subset must list distinct document indices in [0, {self.n_documents})")
        if not documents:
            return
        columns = torch.tensor(documents)
        n = len(documents)
        with torch.no_grad():
            base, base_peak = self._base_states(documents)
            tables = {
                (injection, interval): self._block_table(injection, interval, columns)
                for injection, source in self.sources.items()
                if source.kind in DOCUMENT_LEVEL_KINDS for interval in range(len(self.intervals))
            }
            gold_here = torch.zeros(self.n_queries, n, dtype=torch.bool)
            position_of = torch.full((self.n_documents,), -1, dtype=torch.long)
            position_of[columns] = torch.arange(n)
            gold_positions = torch.where(self.gold_matrix >= 0, position_of[self.gold_matrix.clamp_min(0)], -1)
            for row in range(self.n_queries):
                present = gold_positions[row][gold_positions[row] >= 0]
                gold_here[row, present] = True
            tiles = _query_tiles(self.token_counts, n, self.merge_tile_elements)
            for first, stop in tqdm(tiles, desc="sweep: injected", disable=not self.show_progress, leave=False):
                rows = slice(int(self.token_starts[first]), int(self.token_starts[stop]))
                clean = {}
                for spec, head, state in zip(self._mergeable_specs(), self.mergeable, base):
                    clean[spec] = self._finalize(head, tuple(part[rows] for part in state), first, stop)
                for head in self.brute_force:
                    clean[head.spec()] = self._brute_force(head, None, 0, first, stop, documents)
                for spec in self.specs:
                    yield spec, "", 0, (first, stop), clean[spec], None
                for injection, source in self.sources.items():
                    target = self.settings.target(injection)
                    if source.attacked is not None:
                        yield from self._attacked_blocks(injection, source, base, base_peak, columns, first, stop, clean)
                        continue
                    untouched = gold_here[first:stop] if target == "non-gold" else None
                    running = [tuple(part[rows] for part in state) for state in base]
                    original_peak = base_peak[rows]
                    injected_peak = torch.full_like(original_peak, -math.inf)
                    t = rows.stop - rows.start
                    for interval, (_, k) in enumerate(self.intervals):
                        if source.query_level:
                            part_states, part_peak = self.query_states[injection][interval]
                            parts = [tuple(p[rows].unsqueeze(1).expand(t, n, *p.shape[1:]) for p in state) for state in part_states]
                            part_peak = part_peak[rows].unsqueeze(1)
                        else:
                            (table_states, table_peak), position = tables[injection, interval]
                            parts = [tuple(p[rows].index_select(1, position) for p in state) for state in table_states]
                            part_peak = table_peak[rows].index_select(1, position)
                        injected_peak = torch.maximum(injected_peak, part_peak)
                        hijack = self._hijack_per_query(injected_peak > original_peak + TIE_TOLERANCE, first, stop)
                        if untouched is not None:
                            hijack = hijack.masked_fill(untouched, 0.0)
                        scored = {}
                        for h, (spec, head) in enumerate(zip(self._mergeable_specs(), self.mergeable)):
                            running[h] = head.merge(running[h], parts[h])
                            scored[spec] = self._finalize(head, running[h], first, stop)
                        for head in self.brute_force:
                            scored[head.spec()] = self._brute_force(head, injection, k, first, stop, documents)
                        for spec in self.specs:
                            values = scored[spec]
                            if untouched is not None:
                                values = torch.where(untouched, clean[spec], values)
                            yield spec, injection, k, (first, stop), values, hijack

    def _mergeable_specs(self) -> list[str]:
        return [head.spec() for head in self.mergeable]

    def _attacked_blocks(self, injection, source, base, base_peak, columns, first, stop, clean):
        """Blocks of a few-document attack: documents outside the attacked ones keep their K = 0 scores; each attacked
        document merges its own patches' states."""
        n = len(columns)
        position_of = {int(document): position for position, document in enumerate(columns.tolist())}
        # per query of the range: (slot, position in columns) of its attacked documents among these columns
        chosen = [[(slot, position_of[int(document)]) for slot, document in enumerate(source.attacked_documents[query].tolist())
                   if int(document) in position_of] for query in range(first, stop)]
        width = max([len(pairs) for pairs in chosen] + [0])
        rows = slice(int(self.token_starts[first]), int(self.token_starts[stop]))
        t = rows.stop - rows.start
        owner = self.token_owner[rows] - first
        hijack_zero = torch.zeros(stop - first, n)
        if width == 0:
            for k in self.ks[1:]:
                for spec in self.specs:
                    yield spec, injection, k, (first, stop), clean[spec], hijack_zero
            return
        # [t, width]: for each token row, the columns of its query's attacked documents (padding repeats column 0)
        slot_columns = torch.zeros(stop - first, width, dtype=torch.long)
        slot_valid = torch.zeros(stop - first, width, dtype=torch.bool)
        similarities = torch.full((t, width, source.k_max), -math.inf)
        for local, pairs in enumerate(chosen):
            if not pairs:
                continue
            query = first + local
            token_rows = slice(int(self.token_starts[query]) - rows.start, int(self.token_starts[query + 1]) - rows.start)
            slots, positions = zip(*pairs)
            slot_columns[local, : len(pairs)], slot_valid[local, : len(pairs)] = torch.tensor(positions), True
            patches = source.attacked_patches(query, list(slots))  # [slots, k_max, D]
            similarities[token_rows, : len(pairs)] = torch.einsum("td,skd->tsk", self.queries[query].float(), patches)
        token_columns = slot_columns[owner]  # [t, width]
        slot_rows = torch.arange(stop - first).unsqueeze(1).expand(-1, width)[slot_valid]  # the valid (query, slot) pairs
        valid_columns = slot_columns[slot_valid]
        running = [tuple(part[rows].gather(1, token_columns.view(t, width, *([1] * (part.dim() - 2))).expand(t, width, *part.shape[2:]))
                         for part in state) for state in base]
        original_peak = base_peak[rows].gather(1, token_columns)
        injected_peak = torch.full_like(original_peak, -math.inf)
        for interval, (start, k) in enumerate(self.intervals):
            part_states, part_peak = self._shared_partials(similarities[:, :, start:k], None)
            injected_peak = torch.maximum(injected_peak, part_peak)
            hijacked = self._hijack_per_query(injected_peak > original_peak + TIE_TOLERANCE, first, stop)  # [q, width]
            hijack = hijack_zero.clone()
            hijack[slot_rows, valid_columns] = hijacked[slot_valid]
            scored = {}
            for h, (spec, head) in enumerate(zip(self._mergeable_specs(), self.mergeable)):
                running[h] = head.merge(running[h], part_states[h])
                scored[spec] = self._finalize(head, running[h], first, stop)  # [q, width]
            for head in self.brute_force:
                scored[head.spec()] = self._brute_force(head, injection, k, first, stop, columns.tolist())
            for spec in self.specs:
                values = clean[spec]
                if spec in self._mergeable_specs():
                    values = values.clone()
                    values[slot_rows, valid_columns] = scored[spec][slot_valid]
                else:
                    values = scored[spec]
                yield spec, injection, k, (first, stop), values, hijack

    def _brute_force(self, head: PoolingHead, injection: str | None, k: int, first: int, stop: int, documents: list[int]) -> torch.Tensor:
        """Scores ``[q, n]`` of a head that cannot be merged: every (query, document) scored on the concatenation."""
        from lir_robust.scoring.scorer import score

        out = torch.empty(stop - first, len(documents))
        for local, query in enumerate(range(first, stop)):
            source = self.sources.get(injection) if injection else None
            items = []
            for document in documents:
                vectors = self.corpus.document(document)
                extra = source.patches_for(query, document) if source is not None and k > 0 else None
                items.append(vectors if extra is None else torch.cat([vectors, extra[:k]]))
            out[local] = score([self.queries[query]], items, head)[0]
        return out

    # -- what callers use --
    def score(self, document_subset: Sequence[int] | None = None) -> SweepScores:
        """Dense scores ``[Nq, Nd]`` of every head / injection / K for the given documents (all by default; other
        columns 0). Memory grows with heads x injections x K x Nq x Nd: for large corpora use :meth:`rank`."""
        shape = (self.n_queries, self.n_documents)
        documents = list(range(self.n_documents)) if document_subset is None else [int(d) for d in document_subset]
        columns = torch.tensor(documents, dtype=torch.long)
        zero = {spec: torch.zeros(shape) for spec in self.specs}
        scores = {spec: {injection: {0: zero[spec], **{k: torch.zeros(shape) for k in self.ks[1:]}} for injection in self.injections}
                  for spec in self.specs}
        hijack = {injection: {k: torch.zeros(shape) for k in self.ks[1:]} for injection in self.injections}
        for spec, injection, k, (first, stop), values, shares in self.blocks(document_subset):
            if k == 0:
                zero[spec][first:stop, columns] = values
                continue
            scores[spec][injection][k][first:stop, columns] = values
            if shares is not None:
                hijack[injection][k][first:stop, columns] = shares
        return SweepScores(scores=scores, hijack=_half(hijack))

    def rank(self, document_subset: Sequence[int] | None = None, depth: int = RANKED_DEPTH) -> RankedScores:
        """Each query's best ``depth`` documents among ``document_subset`` (all by default) for every head / injection
        / K, their hijack shares, the gold documents' scores and hijack totals: memory independent of the corpus."""
        documents = list(range(self.n_documents)) if document_subset is None else [int(d) for d in document_subset]
        columns = torch.tensor(documents, dtype=torch.long)
        ranked = RankedScores(self.n_queries, self.gold_width, depth)
        position_of = torch.full((self.n_documents,), -1, dtype=torch.long)
        position_of[columns] = torch.arange(len(documents))
        gold_positions = torch.where(self.gold_matrix >= 0, position_of[self.gold_matrix.clamp_min(0)], -1)
        totals: dict[tuple[str, int], list[float]] = {}
        for spec, injection, k, (first, stop), values, shares in self.blocks(document_subset):
            rows = slice(first, stop)
            ranked.add_block(ranked_key(spec, injection, k), rows, columns, values, shares, gold_positions[rows])
            if shares is not None and spec == self.specs[0]:
                pairs = self._injected_pairs(injection, first, stop, columns, gold_positions[rows])
                total = totals.setdefault((injection, k), [0.0, 0.0])
                total[0] += float(shares.to(torch.float16).double().sum())
                total[1] += pairs
        for (injection, k), (total, pairs) in totals.items():
            ranked.add_hijack_total(injection, k, total, int(pairs))
        return ranked

    def _injected_pairs(self, injection: str, first: int, stop: int, columns: torch.Tensor, gold_positions: torch.Tensor) -> int:
        """(query, document) pairs of queries first:stop and these columns that the injection touches."""
        target = self.settings.target(injection)
        n = len(columns)
        if target == "all":
            return (stop - first) * n
        if target == "non-gold":
            return (stop - first) * n - int((gold_positions >= 0).sum())
        attacked = self.sources[injection].attacked_documents
        return sum(int(torch.isin(attacked[query], columns).sum()) for query in range(first, stop))


def _check_inputs(queries: Sequence[torch.Tensor], corpus: FlatCorpus, gold: Sequence[Sequence[int]]) -> None:
    """Clear errors for what would otherwise become raw torch errors deep inside the sweep."""
    if not len(queries):
        raise ValueError("the sweep needs at least one query")
    if not len(corpus):
        raise ValueError("the sweep needs at least one document")
    if len(gold) != len(queries):
        raise ValueError(f"gold lists the relevant documents of {len(gold)} queries, but there are {len(queries)} queries")
    for index, query in enumerate(queries):
        if not isinstance(query, torch.Tensor) or query.dim() != 2 or query.shape[0] == 0:
            shape = tuple(query.shape) if isinstance(query, torch.Tensor) else type(query).__name__
            raise ValueError(f"query {index} has shape {shape}; every query must be a [tokens, dim] tensor with >= 1 token")
        if query.shape[1] != corpus.dim:
            raise ValueError(f"query {index} has {query.shape[1]}-d tokens but the documents have {corpus.dim}-d patches: "
                             "queries and documents must come from the same model / projection")
    for row, indices in enumerate(gold):
        bad = [index for index in indices if not hasattr(index, "__index__") or not 0 <= int(index) < len(corpus)]
        if bad:
            raise ValueError(f"gold[{row}] lists documents {bad[:5]} outside [0, {len(corpus)}): gold holds document "
                             "positions in the corpus list")


def _half(hijack: dict[str, dict[int, torch.Tensor]]) -> dict[str, dict[int, torch.Tensor]]:
    return {kind: {k: values.half() for k, values in by_k.items()} for kind, by_k in hijack.items()}


def sweep_scores(
    queries: Sequence[torch.Tensor],
    documents: "Sequence[torch.Tensor] | FlatCorpus",
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
    """Dense scores of every query against every document, for every head, injection and budget K, in one pass.

    queries: ``Nq`` tensors ``[Tq_i, D]``; documents: ``Nd`` tensors ``[L_j, D]`` (valid rows only, unit norm) or a
    :class:`FlatCorpus`; gold: ``gold[i]`` = indices of query i's gold (relevant) documents; kinds: injections
    (``hard``, ``spike@10``, ...). ``document_subset`` restricts the pass to some documents (their columns are filled,
    others left 0). ``token_tile_elements`` / ``merge_tile_elements`` bound the temporaries (speed only, same
    result). Equals scoring the concatenated documents head by head (tested against :func:`brute_force_scores`).
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
    from lir_robust.scoring.scorer import score

    settings = settings or InjectionSettings()
    corpus = FlatCorpus.from_documents(documents)
    source = PatchSource(kind, ks, settings, queries, corpus, gold, hard_indices=hard_indices)
    out = torch.empty(len(queries), len(corpus))
    for query in range(len(queries)):
        patches = [source.patches_for(query, document) if k > 0 else None for document in range(len(corpus))]
        patches = [None if extra is None else extra[:k] for extra in patches]
        injected, _ = inject([corpus.document(d) for d in range(len(corpus))], patches)
        out[query] = score([queries[query]], injected, head)[0]
    return out
