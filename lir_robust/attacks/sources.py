"""Where the sweep gets injected patches: :class:`PatchSource`, one per injection, deterministic per (seed, kind,
budget interval, block / query / document).

``gaussian`` and ``corpus`` are drawn for each document from pools of blocks shared between documents (a document's
patches have exactly the distribution of fresh draws; two documents share a block of a budget interval with
probability 1 / ``pool_blocks``); ``hard`` and ``spike`` depend on the query only; ``KIND@N`` gives N non-gold
documents of each query their own patches.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch

from lir_robust.attacks.generators import corpus_patches, gaussian_patches, hard_negative_patches, spike_patches
from lir_robust.attacks.kinds import DOCUMENT_LEVEL_KINDS, QUERY_LEVEL_KINDS, InjectionSettings, budget_intervals, parse_injection
from lir_robust.encoders.flat_corpus import FlatCorpus

__all__ = ["PatchSource"]


def _generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from the given parts (stable across runs and processes)."""
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


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
        self.intervals = budget_intervals(ks)
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
