"""The merged-state injection sweep: scores of every (pooling head, injection, budget K) in one pass.

How the sweep avoids re-scoring: appended patches only add columns to the similarity matrix, and every mergeable
head (all built-in ones) summarises a set of columns by ``partial`` and combines summaries with ``merge``. The
original documents are summarised once; the injected columns' summaries are merged in, budget after budget (K = 1, 4,
16, ... adds only the new columns). Query-level kinds (hard, spike) have one summary per query token and budget
interval, broadcast over that query's documents; gaussian and corpus have one per query token and block, gathered
for the documents that take the block (:class:`~lir_robust.attacks.sources.PatchSource`). So the injected patches
cost a merge per (query token, document, kind, K) instead of a pass over their similarities.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
from tqdm.auto import tqdm

from lir_robust.attacks.kinds import DEFAULT_KS, DOCUMENT_LEVEL_KINDS, InjectionSettings, budget_intervals, parse_injection
from lir_robust.attacks.sources import PatchSource
from lir_robust.encoders.flat_corpus import FlatCorpus
from lir_robust.scoring.pooling import PoolingHead, parse_head
from lir_robust.scoring.scorer import pad_with_mask
from lir_robust.sweep.merging import SweepScores, check_sweep_inputs, query_tiles, shared_partials
from lir_robust.sweep.ranked import RANKED_DEPTH, RankedScores, ranked_key

__all__ = ["SweepScores", "InjectionSweep", "shared_partials", "sweep_scores", "TIE_TOLERANCE"]

logger = logging.getLogger(__name__)

# An injected patch hijacks a query token when it beats the document's best patch by more than this: a hard patch
# copied from the document itself ties with the original, and ties go to the original (as in diagnostics.hijack_rates)
# even when the two similarities come out of different matrix products one rounding step apart.
TIE_TOLERANCE = 1e-6


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
        check_sweep_inputs(queries, self.corpus, gold)
        self.ks, self.intervals = ks, budget_intervals(ks)
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
            tiles = query_tiles(self.token_counts, n, self.merge_tile_elements)
            for first, stop in tqdm(tiles, desc="sweep: injected", disable=not self.show_progress, leave=False):
                rows = slice(int(self.token_starts[first]), int(self.token_starts[stop]))
                clean = {}
                for spec, head, state in zip(self._mergeable_specs(), self.mergeable, base):
                    clean[spec] = self._finalize(head, tuple(part[rows] for part in state), first, stop)
                clean.update(self._brute_force(None, 0, first, stop, documents))
                for spec in self.specs:
                    yield spec, "", 0, (first, stop), clean[spec], None
                for injection, source in self.sources.items():
                    if source.attacked is not None:
                        yield from self._attacked_blocks(injection, source, base, base_peak, columns, first, stop, clean)
                        continue
                    # each `yield from` runs to its end before the loop moves on, so the lambdas see this injection
                    untouched = gold_here[first:stop] if self.settings.target(injection) == "non-gold" else None
                    yield from self._merged_budgets(
                        injection, first, stop, [tuple(part[rows] for part in state) for state in base], base_peak[rows],
                        lambda interval: self._injected_parts(injection, source, interval, rows, n, tables), documents,
                        hijack_of=lambda hijack: hijack if untouched is None else hijack.masked_fill(untouched, 0.0),
                        scores_of=lambda spec, values: values if untouched is None else torch.where(untouched, clean[spec], values),
                    )

    def _mergeable_specs(self) -> list[str]:
        return [head.spec() for head in self.mergeable]

    def _injected_parts(self, injection: str, source: PatchSource, interval: int, rows: slice, n: int, tables: dict):
        """States ``[t, n, ...]`` and max ``[t, n]`` of one budget interval's injected patches for the token ``rows``
        and the ``n`` documents (an injection into every document, or every non-gold one)."""
        if source.query_level:
            part_states, part_peak = self.query_states[injection][interval]
            t = rows.stop - rows.start
            parts = [tuple(p[rows].unsqueeze(1).expand(t, n, *p.shape[1:]) for p in state) for state in part_states]
            return parts, part_peak[rows].unsqueeze(1)
        (table_states, table_peak), position = tables[injection, interval]
        parts = [tuple(p[rows].index_select(1, position) for p in state) for state in table_states]
        return parts, table_peak[rows].index_select(1, position)

    def _merged_budgets(self, injection, first, stop, running, original_peak, parts_of, documents, hijack_of, scores_of):
        """The merge -> finalize -> yield loop every injection shares. Budget interval after budget interval, the
        injected patches' states and max ``parts_of(interval)`` are merged into ``running`` (the states ``[t, w, ...]``
        of the tokens of queries first:stop against w documents, from ``original_peak [t, w]`` at K = 0), every head is
        finalised (a head that cannot be merged is scored on ``documents`` by brute force) and the blocks are yielded
        as :meth:`blocks` does. ``hijack_of`` turns the hijack shares ``[q, w]`` into the block's ``[q, n]``,
        ``scores_of(spec, values)`` a head's scores into the block's ``[q, n]``."""
        injected_peak = torch.full_like(original_peak, -math.inf)
        for interval, (_, k) in enumerate(self.intervals):
            part_states, part_peak = parts_of(interval)
            injected_peak = torch.maximum(injected_peak, part_peak)
            hijack = hijack_of(self._hijack_per_query(injected_peak > original_peak + TIE_TOLERANCE, first, stop))
            scored = {}
            for h, (spec, head) in enumerate(zip(self._mergeable_specs(), self.mergeable)):
                running[h] = head.merge(running[h], part_states[h])
                scored[spec] = self._finalize(head, running[h], first, stop)
            scored.update(self._brute_force(injection, k, first, stop, documents))
            for spec in self.specs:
                yield spec, injection, k, (first, stop), scores_of(spec, scored[spec]), hijack

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
        mergeable = set(self._mergeable_specs())

        def spread_hijack(hijacked: torch.Tensor) -> torch.Tensor:  # [q, width] -> [q, n], 0 outside the attacked
            hijack = hijack_zero.clone()
            hijack[slot_rows, valid_columns] = hijacked[slot_valid]
            return hijack

        def spread_scores(spec: str, values: torch.Tensor) -> torch.Tensor:  # [q, width] -> [q, n], K = 0 elsewhere
            if spec not in mergeable:  # scored by brute force on every column already
                return values
            spread = clean[spec].clone()
            spread[slot_rows, valid_columns] = values[slot_valid]
            return spread

        yield from self._merged_budgets(
            injection, first, stop, running, base_peak[rows].gather(1, token_columns),
            lambda interval: self._shared_partials(similarities[:, :, slice(*self.intervals[interval])], None),
            columns.tolist(), hijack_of=spread_hijack, scores_of=spread_scores,
        )

    def _brute_force(self, injection: str | None, k: int, first: int, stop: int, documents: list[int]) -> dict[str, torch.Tensor]:
        """Scores ``{spec: [q, n]}`` of the heads that cannot be merged: every (query, document) scored on the
        concatenation. The injected documents of a query are built once for all those heads (the corpus and the
        generated patches hold no NaN rows: no check per head)."""
        from lir_robust.scoring.scorer import MultiVectors, score

        if not self.brute_force:
            return {}
        source = self.sources.get(injection) if injection else None
        own = [self.corpus.document(document) for document in documents]
        if source is None or k == 0:  # the same documents for every query: one call per head for the whole tile
            queries = [self.queries[query] for query in range(first, stop)]
            return {head.spec(): score(queries, MultiVectors(own), head) for head in self.brute_force}
        out = {head.spec(): torch.empty(stop - first, len(documents)) for head in self.brute_force}
        for local, query in enumerate(range(first, stop)):
            items = []
            for document, vectors in zip(documents, own):
                extra = source.patches_for(query, document)
                items.append(vectors if extra is None else torch.cat([vectors, extra[:k]]))
            injected = MultiVectors(items)
            for head in self.brute_force:
                out[head.spec()][local] = score([self.queries[query]], injected, head)[0]
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
    result). Equals scoring the concatenated documents head by head (tested against ``brute_force_scores`` in tests/reference.py).
    """
    sweep = InjectionSweep(
        queries, documents, gold, heads, kinds, ks, settings, hard_indices=hard_indices,
        document_batch_size=document_batch_size, token_tile_elements=token_tile_elements,
        merge_tile_elements=merge_tile_elements, show_progress=show_progress,
    )
    return sweep.score(document_subset)
