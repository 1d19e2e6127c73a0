"""The joint blend of capacity-limited matching and a soft maximum (``blend``): a query token's value is
``weight * exclusive + (1 - weight) * softmax(tau)``, both computed on the same similarities."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from lir_robust.scoring.pooling.base import PoolingHead, _check_positive, _records_gradient, register_head
from lir_robust.scoring.pooling.compiled import can_compile, compiled_candidates_and_exponentials
from lir_robust.scoring.pooling.exclusive import ExclusiveMatchHead
from lir_robust.scoring.pooling.heads import SoftmaxHead
from lir_robust.scoring.pooling.shared import SharedWork

__all__ = ["BlendHead"]


def _parts_at_inference(exclusive: ExclusiveMatchHead, softmax: SoftmaxHead, similarities: torch.Tensor,
                        document_mask: torch.Tensor, query_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(exclusive, softmax)`` values ``[..., Tq]`` at inference on the CPU: one compiled read of each row
    (:func:`compiled_candidates_and_exponentials`) gives exclusive's candidates and softmax's sums, then the greedy
    matching runs once. The scorer's padded blocks (each document's real patches first) are read in place, through
    the strided ``[Nq, Nd, Tq, Td]`` view, without a copy; any other mask costs one masked copy. Same values as each
    head on its own, row by row (up to the order of a sum)."""
    if not can_compile(similarities):
        return exclusive(similarities, document_mask, query_mask), softmax(similarities, document_mask)
    rows, lengths = SharedWork(similarities, document_mask.unsqueeze(-2)).compiled_rows()
    values, ids, totals, weighted = compiled_candidates_and_exponentials(rows, exclusive.candidates,
                                                                         1.0 / softmax.tau, lengths)
    width = torch.full(values.shape[:-1], float(similarities.shape[-1]))
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
        return self._combine(matched, soft)

    def _combine(self, matched: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        value = self.weight * matched + (1.0 - self.weight) * soft
        # no valid patch: both parts are -inf, and so is the blend (never NaN)
        return torch.where(torch.isneginf(soft), torch.full_like(value, -math.inf), value)

    def __call__(self, similarities, document_mask, query_mask=None):
        if _records_gradient(similarities) or not 0.0 < self.weight < 1.0:
            return self.finalize(self.partial(similarities, document_mask), query_mask)
        # Inference: both parts from one compiled read of each row (see _parts_at_inference) instead of one shared
        # state that keeps a similarity-sized exponential alive beside the candidates (make bench-scoring: 2.3-2.45x
        # maxsim's time and 2.6x exclusive's peak memory), or torch passes over cache-sized blocks (1.84-2.0x).
        exclusive, softmax = self._parts()
        return self._combine(*_parts_at_inference(exclusive, softmax, similarities, document_mask, query_mask))
