"""The built-in pooling heads computed token by token: maxsim, topk, softmax, lse, mean.

Each formula lives here and nowhere else (the joint capacity-limited head is in ``exclusive.py``); the contract
every head keeps is in ``base.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from lir_robust.scoring.pooling.base import (
    PoolingHead,
    _all_valid,
    _check_positive,
    _no_patch_is_minus_inf,
    _records_gradient,
    _safe_max,
    masked_fill_float32,
    register_head,
)
from lir_robust.scoring.pooling.compiled import can_compile, compiled_candidates_and_exponentials
from lir_robust.scoring.pooling.shared import SharedWork, _bitonic_merge

__all__ = ["MaxSimHead", "TopKHead", "SoftmaxHead", "LogSumExpHead", "MeanHead"]


def _compiled_sums(similarities: torch.Tensor, document_mask: torch.Tensor, tau: float):
    """Inference helper of the exponential heads on the CPU: ``(max, sum of exp((S - shift) / tau), sum of
    exp(...) * S)``, each ``[..., Tq]``, over the valid patches, from one compiled read of each row (in place when the
    valid patches are a prefix; :func:`compiled_candidates_and_exponentials`; shift: the max, 0 when not finite);
    None where the kernels do not run (off the CPU)."""
    similarities = similarities.float()
    if not can_compile(similarities):
        return None
    rows, lengths = SharedWork(similarities, document_mask.unsqueeze(-2)).compiled_rows()
    peak, _, total, weighted = compiled_candidates_and_exponentials(rows, 1, 1.0 / tau, lengths)
    return peak.squeeze(-1), total, weighted


# --------------------------------------------------------------------------------------------------------------
# Built-in heads. Each formula lives here and nowhere else.
# --------------------------------------------------------------------------------------------------------------


@register_head("maxsim")
@dataclass(frozen=True)
class MaxSimHead(PoolingHead):
    """phi = max_j S_ij: ColBERT / ColPali's MaxSim."""

    def partial(self, similarities, document_mask):
        return (masked_fill_float32(similarities, document_mask, -math.inf).amax(dim=-1),)

    def partial_shared(self, work):
        return (work.peak,)

    def merge(self, a, b):
        return (torch.maximum(a[0], b[0]),)

    def finalize(self, state):
        return state[0]


@register_head("topk")
@dataclass(frozen=True)
class TopKHead(PoolingHead):
    """phi = mean of the k largest S_ij; a document with fewer than k valid patches uses all of them.

    State: the k largest similarities ``[..., k]`` in descending order, padded with -inf.
    """

    k: int = 4
    compiled_at_inference: ClassVar[bool] = True

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"pooling head 'topk': k must be an integer >= 1, got {self.k!r}")

    def partial(self, similarities, document_mask):
        if not _records_gradient(similarities) and can_compile(similarities.float()):
            # inference on the CPU: the compiled candidate search (SharedWork.top_values), reading the scorer's padded
            # block in place; torch.topk costs ~1.3 ns per value, 7x an amax (`make bench-scoring`)
            return self.partial_shared(SharedWork(similarities, document_mask.unsqueeze(-2)))
        filled = masked_fill_float32(similarities, document_mask, -math.inf)
        width = filled.shape[-1]
        if self.k == 1:
            return (filled.amax(dim=-1, keepdim=True),)
        if width < self.k:
            filled = torch.cat([filled, filled.new_full((*filled.shape[:-1], self.k - width), -math.inf)], dim=-1)
        return (filled.topk(self.k, dim=-1, sorted=True).values,)

    def partial_shared(self, work):
        return (work.top_values(self.k),)

    def merge(self, a, b):
        k = self.k
        if k >= 2 and not k & (k - 1):  # sorted k-lists: a bitonic merge (element-wise max / min, no per-row sort)
            return (torch.stack(_bitonic_merge(list(a[0].unbind(-1)), list(b[0].unbind(-1))), dim=-1),)
        return (torch.cat([a[0], b[0]], dim=-1).topk(k, dim=-1, sorted=True).values,)

    def finalize(self, state):
        values = state[0]
        total = values.sum(dim=-1)
        if bool(torch.isfinite(total).all()):  # no padding among the kept values: their plain mean
            return total / values.shape[-1]
        valid = torch.isfinite(values)
        count = valid.sum(dim=-1)
        total = torch.where(valid, values, torch.zeros_like(values)).sum(dim=-1)
        return _no_patch_is_minus_inf(total / count.clamp_min(1), count == 0)


def _exponentials_in_place(similarities: torch.Tensor, document_mask: torch.Tensor, tau: float):
    """Inference helper of the exponential heads: ``(exp((S - max) / tau) [..., Tq, Td], max / tau [..., Tq, 1],
    its sum [..., Tq], the mask [..., 1, Td] or None when every patch is real)``, 0 at masked patches; a pair
    without any valid patch has a sum of 0.

    One similarity-sized temporary, rewritten in place: a head that frees two or three such temporaries at once
    leaves more free memory at the top of the heap than glibc's trim threshold (twice the largest recently freed
    block), so every call gave it back and page-faulted it in again (about 1,000 page faults and twice the time per
    4 MiB block of `lir_robust.scoring.scorer`; `make bench-scoring`)."""
    valid = _all_valid(document_mask)
    mask = None if valid else document_mask.to(torch.bool).unsqueeze(-2)
    work = similarities.float() * (1.0 / tau) if valid else similarities.float().masked_fill(~mask, -math.inf).mul_(1.0 / tau)
    shift = _safe_max(work)  # no valid patch: shift by 0, the row stays -inf, its exponentials 0
    total = work.sub_(shift).exp_().sum(dim=-1)  # >= 1 wherever a patch is valid (the max gives exp(0))
    return work, shift, total, mask


@register_head("softmax")
@dataclass(frozen=True)
class SoftmaxHead(PoolingHead):
    """phi = sum_j w_ij S_ij, w_ij = softmax_j(S_ij / tau): a weighted mean (PAPER.md). tau -> 0 gives maxsim."""

    tau: float = 1.0
    compiled_at_inference: ClassVar[bool] = True

    def __post_init__(self):
        _check_positive("softmax", "tau", self.tau)

    def partial(self, similarities, document_mask):
        work = SharedWork(similarities, document_mask.unsqueeze(-2))
        return self.partial_shared(work)

    def partial_shared(self, work):
        exp, total = work.exponentials(self.tau)
        return work.shift, total, torch.linalg.vecdot(exp, work.zero_filled)  # a dot product per row, no temporary

    def __call__(self, similarities, document_mask):
        if not _records_gradient(similarities):
            return self._no_grad_value(similarities, document_mask)
        # Same value as finalize(partial(...)), in fewer passes over the similarities: a fused softmax (with its
        # fused backward), then one batched dot product per query token (the weights are exactly 0 at masked patches).
        filled = masked_fill_float32(similarities, document_mask, -math.inf)
        weights = torch.softmax(filled / self.tau, dim=-1)
        values = filled if _all_valid(document_mask) else masked_fill_float32(similarities, document_mask, 0.0)
        value = torch.linalg.vecdot(weights, values)
        return value if _all_valid(document_mask) else _no_patch_is_minus_inf(value, ~document_mask.any(dim=-1, keepdim=True).expand_as(value))

    def _no_grad_value(self, similarities, document_mask):
        """The same value at inference: on the CPU the compiled sums (one read of each row, in place, split over
        torch's threads: the scorer gives this head its whole matrix, ``compiled_at_inference``); elsewhere one
        similarity-sized temporary rewritten in place (see :func:`_exponentials_in_place`)."""
        sums = _compiled_sums(similarities, document_mask, self.tau)
        if sums is not None:
            return self.finalize((None, *sums[1:]))
        work, _, total, mask = _exponentials_in_place(similarities, document_mask, self.tau)
        work.mul_(similarities)
        if mask is not None:
            work.masked_fill_(~mask, 0.0)  # masked similarities may hold anything (inf * 0 = NaN)
        return self.finalize((None, total, work.sum(dim=-1)))  # finalize reads the sums, not the shift

    def merge(self, a, b):
        shift = torch.maximum(a[0], b[0])
        scale_a, scale_b = torch.exp((a[0] - shift) / self.tau), torch.exp((b[0] - shift) / self.tau)
        return shift, a[1] * scale_a + b[1] * scale_b, a[2] * scale_a + b[2] * scale_b

    def finalize(self, state):
        return _no_patch_is_minus_inf(state[2] / state[1], state[1] == 0)


@register_head("lse")
@dataclass(frozen=True)
class LogSumExpHead(PoolingHead):
    """phi = tau * logsumexp_j(S_ij / tau) (colpali-engine's smooth max), minus tau * log(n_valid) if length_corrected.

    Uncorrected, the value grows with the number of patches (by up to tau * log n); the correction makes it a
    smooth max that lies between the mean and the max of the similarities.
    """

    tau: float = 0.1
    length_corrected: bool = False
    compiled_at_inference: ClassVar[bool] = True

    def __post_init__(self):
        _check_positive("lse", "tau", self.tau)
        if not isinstance(self.length_corrected, bool):
            raise ValueError(f"pooling head 'lse': length_corrected must be true or false, got {self.length_corrected!r}")

    def partial(self, similarities, document_mask):
        work = SharedWork(similarities, document_mask.unsqueeze(-2))
        return self.partial_shared(work)

    def partial_shared(self, work):
        return work.shift, work.exponentials(self.tau)[1], work.counts

    def __call__(self, similarities, document_mask):
        if _records_gradient(similarities):
            return self.finalize(self.partial(similarities, document_mask))
        # inference, the same state; log 0 = -inf: no valid patch, -inf. On the CPU the compiled sums (as softmax);
        # elsewhere one temporary (see _exponentials_in_place)
        count = None  # read by finalize only when length_corrected
        if self.length_corrected:
            valid = document_mask.to(torch.bool).unsqueeze(-2)
            count = valid.sum(dim=-1, dtype=torch.float32).expand(similarities.shape[:-1])
        sums = _compiled_sums(similarities, document_mask, self.tau)
        if sums is not None:
            peak, total, _ = sums
            return self.finalize((torch.where(torch.isfinite(peak), peak, 0.0), total, count))
        _, shift, total, _ = _exponentials_in_place(similarities, document_mask, self.tau)
        return self.finalize((self.tau * shift.squeeze(-1), total, count))

    def merge(self, a, b):
        shift = torch.maximum(a[0], b[0])
        total = a[1] * torch.exp((a[0] - shift) / self.tau) + b[1] * torch.exp((b[0] - shift) / self.tau)
        return shift, total, a[2] + b[2]

    def finalize(self, state):
        shift, total, count = state
        value = shift + self.tau * torch.log(total)
        if self.length_corrected:
            value = _no_patch_is_minus_inf(value - self.tau * torch.log(count), count == 0)
        return value


@register_head("mean")
@dataclass(frozen=True)
class MeanHead(PoolingHead):
    """phi = mean_j S_ij over valid patches (softmax with tau -> infinity)."""

    def partial(self, similarities, document_mask):
        work = SharedWork(similarities, document_mask.unsqueeze(-2))
        return self.partial_shared(work)

    def partial_shared(self, work):
        return work.zero_filled.sum(dim=-1), work.counts

    def merge(self, a, b):
        return a[0] + b[0], a[1] + b[1]

    def finalize(self, state):
        return _no_patch_is_minus_inf(state[0] / state[1].clamp_min(1), state[1] == 0)

