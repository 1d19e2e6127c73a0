"""The joint blend of capacity-limited matching and a soft maximum (``blend``): a query token's value is
``weight * exclusive + (1 - weight) * softmax(tau)``, both computed on the same similarities."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from lir_robust.scoring.pooling.base import PoolingHead, _check_positive, _records_gradient, register_head
from lir_robust.scoring.pooling.exclusive import ExclusiveMatchHead
from lir_robust.scoring.pooling.heads import SoftmaxHead
from lir_robust.scoring.pooling.shared import SharedWork

__all__ = ["BlendHead"]

# Elements of one block at inference (as lir_robust.scoring.scorer.HEAD_BLOCK_ELEMENTS for the heads it blocks).
BLOCK_ELEMENTS = 1 << 20


def _parts_in_blocks(exclusive: ExclusiveMatchHead, softmax: SoftmaxHead, similarities: torch.Tensor,
                     document_mask: torch.Tensor, query_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(exclusive, softmax)`` values ``[..., Tq]`` at inference. Similarities as a joint head gets them from the
    scorer (``[Nq, Nd, Tq, Td]``, a strided view of one large block) are read in blocks of at most
    :data:`BLOCK_ELEMENTS`: each block's candidates (exclusive's compiled search) and exponentials (softmax) while it
    is in the CPU's cache, instead of two passes over the whole block and one exponential temporary as large as it
    (1.3 GB for 128 x 128 documents of 1,030 patches); the greedy matching then runs once on all candidates. Same
    values as each head on the whole block, row by row."""
    if similarities.dim() != 4 or similarities.numel() <= BLOCK_ELEMENTS:
        return exclusive(similarities, document_mask, query_mask), softmax(similarities, document_mask)
    n_queries, n_documents, query_tokens, document_tokens = similarities.shape
    mask = document_mask.to(torch.bool).expand(n_queries, n_documents, document_tokens)
    step = max(1, min(n_documents, BLOCK_ELEMENTS // max(1, query_tokens * document_tokens)))
    count = exclusive.candidates
    values = similarities.new_empty(n_queries, n_documents, query_tokens, count, dtype=torch.float32)
    ids = torch.empty(values.shape, dtype=torch.long, device=similarities.device)
    soft = similarities.new_empty(n_queries, n_documents, query_tokens, dtype=torch.float32)
    for query in range(n_queries):
        for first in range(0, n_documents, step):
            block, block_mask = similarities[query, first : first + step], mask[query, first : first + step]
            found, where = SharedWork(block, block_mask.unsqueeze(-2)).top_candidates(count)
            values[query, first : first + step], ids[query, first : first + step] = found, where
            soft[query, first : first + step] = softmax(block, block_mask)
    width = torch.full(values.shape[:-1], float(document_tokens), device=values.device)
    return exclusive.finalize((values, ids, width), query_mask), soft


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
