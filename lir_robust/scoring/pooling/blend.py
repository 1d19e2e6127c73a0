"""The joint blend of capacity-limited matching and a soft maximum (``blend``): a query token's value is
``weight * exclusive + (1 - weight) * softmax(tau)``, both computed on the same similarities."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from lir_robust.scoring.pooling.base import PoolingHead, _check_positive, _records_gradient, register_head
from lir_robust.scoring.pooling.compiled import can_compile, compiled_top_candidates
from lir_robust.scoring.pooling.exclusive import ExclusiveMatchHead
from lir_robust.scoring.pooling.heads import SoftmaxHead, _exponentiate_in_place
from lir_robust.scoring.pooling.shared import SharedWork

__all__ = ["BlendHead"]

# Elements of one block at inference (as lir_robust.scoring.scorer.HEAD_BLOCK_ELEMENTS for the heads it blocks).
BLOCK_ELEMENTS = 1 << 20


def _parts_in_blocks(exclusive: ExclusiveMatchHead, softmax: SoftmaxHead, similarities: torch.Tensor,
                     document_mask: torch.Tensor, query_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(exclusive, softmax)`` values ``[..., Tq]`` at inference. Similarities as a joint head gets them from the
    scorer on the CPU (``[Nq, Nd, Tq, Td]``, a strided view of one large block) are read in blocks of at most
    :data:`BLOCK_ELEMENTS`, each block once into one masked copy while it is in the CPU's cache: exclusive's compiled
    candidate search reads it, then softmax's exponentials are computed in it in place; the greedy matching runs once
    on all candidates. Instead of two passes over the whole block, two copies of each piece and an exponential
    temporary as large as the block (1.3 GB for 128 x 128 documents of 1,030 patches). Same values as each head on the
    whole block, row by row (up to the order of a sum)."""
    if similarities.dim() != 4 or similarities.numel() <= BLOCK_ELEMENTS or not can_compile(similarities):
        return exclusive(similarities, document_mask, query_mask), softmax(similarities, document_mask)
    n_queries, n_documents, query_tokens, document_tokens = similarities.shape
    mask = document_mask.to(torch.bool).expand(n_queries, n_documents, document_tokens)
    step = max(1, min(n_documents, BLOCK_ELEMENTS // max(1, query_tokens * document_tokens)))
    count, scale = exclusive.candidates, 1.0 / softmax.tau
    values = similarities.new_empty(n_queries, n_documents, query_tokens, count)
    ids = torch.empty(values.shape, dtype=torch.long)
    weighted = similarities.new_empty(n_queries, n_documents, query_tokens)
    totals = similarities.new_empty(n_queries, n_documents, query_tokens)
    for query in range(n_queries):
        for first in range(0, n_documents, step):
            block, hidden = similarities[query, first : first + step], ~mask[query, first : first + step].unsqueeze(-2)
            work = block.masked_fill(hidden, -math.inf)  # contiguous: the search reads it without another copy
            values[query, first : first + step], ids[query, first : first + step] = compiled_top_candidates(work, count)
            if scale != 1.0:
                work.mul_(scale)
            totals[query, first : first + step] = _exponentiate_in_place(work)[1]  # exactly 0 at masked patches
            dot = torch.linalg.vecdot(work, block)
            if bool(torch.isnan(dot).any()):  # a masked similarity held inf or NaN (0 x inf): the sum without them
                dot = torch.linalg.vecdot(work, block.masked_fill(hidden, 0.0))
            weighted[query, first : first + step] = dot
    width = torch.full(values.shape[:-1], float(document_tokens))
    return exclusive.finalize((values, ids, width), query_mask), softmax.finalize((None, totals, weighted))


@register_head("blend")
@dataclass(frozen=True)
class BlendHead(PoolingHead):
    """phi_i = weight * exclusive_i + (1 - weight) * softmax_i(tau): a capacity limit and a soft maximum together.

    The exclusive part (``capacity``, ``candidates``: as the ``exclusive`` head) limits how many query tokens one
    patch can take, so K planted patches reach about K tokens; the softmax part spreads a token's value over every
    patch of the document, so a few planted patches - even the corpus patches nearest to the query's tokens, which
    a capacity limit does not stop - move it little. ``weight = 1`` is ``exclusive``, ``weight = 0`` is
    ``softmax:tau=tau``. Joint (through the exclusive part), mergeable and differentiable as both parts are.

    State: the exclusive state (candidate values, their patch ids, patches seen) then the softmax state (shift, sum
    of exponentials, weighted sum).
    """

    tau: float = 1.0
    weight: float = 0.5
    capacity: int = 1
    candidates: int = 8
    joint: ClassVar[bool] = True

    def __post_init__(self):
        _check_positive("blend", "tau", self.tau)
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"pooling head 'blend': weight must be a number in [0, 1], got {self.weight!r}")
        self._parts()  # capacity and candidates are checked by the exclusive head

    def _parts(self) -> tuple[ExclusiveMatchHead, SoftmaxHead]:
        return (ExclusiveMatchHead(capacity=self.capacity, candidates=self.candidates), SoftmaxHead(tau=self.tau))

    def partial(self, similarities, document_mask):
        return self.partial_shared(SharedWork(similarities, document_mask.unsqueeze(-2)))

    def partial_shared(self, work):
        exclusive, softmax = self._parts()
        return (*exclusive.partial_shared(work), *softmax.partial_shared(work))

    def merge(self, a, b):
        exclusive, softmax = self._parts()
        return (*exclusive.merge(a[:3], b[:3]), *softmax.merge(a[3:], b[3:]))

    def finalize(self, state, query_mask=None):
        exclusive, softmax = self._parts()
        matched, soft = exclusive.finalize(state[:3], query_mask), softmax.finalize(state[3:])
        if self.weight >= 1.0:
            return matched
        if self.weight <= 0.0:
            return soft
        value = self.weight * matched + (1.0 - self.weight) * soft
        # no valid patch: both parts are -inf, and so is the blend (never NaN)
        return torch.where(torch.isneginf(soft), torch.full_like(value, -math.inf), value)

    def __call__(self, similarities, document_mask, query_mask=None):
        if _records_gradient(similarities) or not 0.0 < self.weight < 1.0:
            return self.finalize(self.partial(similarities, document_mask), query_mask)
        # Inference: both parts block by block (see _parts_in_blocks) instead of one shared state that keeps a
        # similarity-sized exponential alive beside the candidates (make bench-scoring: 2.3-2.45x maxsim's time and
        # 2.6x exclusive's peak memory before, 1.9-2.0x and 1.0x after).
        exclusive, softmax = self._parts()
        matched, soft = _parts_in_blocks(exclusive, softmax, similarities, document_mask, query_mask)
        value = self.weight * matched + (1.0 - self.weight) * soft
        return torch.where(torch.isneginf(soft), torch.full_like(value, -math.inf), value)
