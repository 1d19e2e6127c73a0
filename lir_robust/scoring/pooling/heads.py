"""The built-in pooling heads computed token by token: maxsim, topk, softmax, lse, mean.

Each formula lives here and nowhere else (the joint capacity-limited head is in ``exclusive.py``); the contract
every head keeps is in ``base.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
from lir_robust.scoring.pooling.shared import SharedWork, _bitonic_merge

__all__ = ["MaxSimHead", "TopKHead", "SoftmaxHead", "LogSumExpHead", "MeanHead"]


# Groups of the inference top-k (`_top_k_by_groups`): rows of at least 16 x 64 values, k <= 4 (k(k-1)/128, 9% at most, of
# the rows, with random similarities, have two of their k largest values in one group and take the slower route).
_TOP_K_GROUPS = 64


def _groups_pay_off(values: torch.Tensor, k: int) -> bool:
    """Whether `_top_k_by_groups` is worth its extra steps on ``values`` (on the CPU only: a GPU's topk is fast, and
    `again.any()` would wait for the GPU at every block)."""
    return values.device.type == "cpu" and 2 <= k <= 4 and values.shape[-1] >= 16 * _TOP_K_GROUPS


def _top_k_by_groups(values: torch.Tensor, k: int) -> torch.Tensor:
    """``values.topk(k, dim=-1, sorted=True).values`` (the same numbers, NaN and ties included) for long rows, at
    inference: torch.topk costs ~1.3 ns per value on the CPU, 7x an ``amax``, and dominates a top-k head's scoring.

    Split each row into 64 interleaved groups (column c + 64 j, plus the left-over columns), take each group's max
    (one vectorised pass) and the k largest group maxes. Every value above the k-th of them, t, lies in those k
    groups (the others' max is at most t). So when those k groups and the left-over columns hold exactly k values
    >= t, the k group maxes are the row's k largest; in the other rows (two of the k largest in one group) the k
    largest are found among those groups' values and the left-over columns (only they can exceed t).
    """
    width = values.shape[-1]
    size = width // _TOP_K_GROUPS
    main = size * _TOP_K_GROUPS
    groups = values[..., :main].unflatten(-1, (size, _TOP_K_GROUPS))  # [..., size, 64]: group c holds c, c + 64, ...
    group_max = groups.amax(dim=-2)
    rest = values[..., main:]  # fewer than 64 left-over columns: column main + c joins group c
    if main < width:
        torch.maximum(group_max[..., : width - main], rest, out=group_max[..., : width - main])
    top, chosen = group_max.topk(k, dim=-1, sorted=True)
    members = groups.gather(-1, chosen.unsqueeze(-2).expand(*chosen.shape[:-1], size, k))  # [..., size, k]
    threshold = top[..., k - 1 :]
    count = torch.ge(members, threshold.unsqueeze(-1)).sum(dim=(-2, -1)) + torch.ge(rest, threshold).sum(dim=-1)
    again = (count != k) | top[..., 0].isnan()  # NaN: topk ranks it above every number; settled by topk below
    if bool(again.any()):
        candidates = torch.cat([members[again].flatten(-2), rest[again]], dim=-1)
        top[again] = candidates.topk(k, dim=-1, sorted=True).values
    return top


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

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"pooling head 'topk': k must be an integer >= 1, got {self.k!r}")

    def partial(self, similarities, document_mask):
        filled = masked_fill_float32(similarities, document_mask, -math.inf)
        width = filled.shape[-1]
        if self.k == 1:
            return (filled.amax(dim=-1, keepdim=True),)
        if width < self.k:
            filled = torch.cat([filled, filled.new_full((*filled.shape[:-1], self.k - width), -math.inf)], dim=-1)
        if not _records_gradient(filled) and _groups_pay_off(filled, self.k):
            return (_top_k_by_groups(filled, self.k),)  # inference: the same values, faster in the scorer (CPU)
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
        """The same value at inference, with one similarity-sized temporary rewritten in place (see
        :func:`_exponentials_in_place`). Not the compiled sums blend uses: this head's blocks, cut out of the scorer's
        matrix, are strided rows (which the kernel reads about 3x slower than contiguous ones) too few to split over
        threads; through them `make bench-scoring` gave softmax:tau=0.1 1.78x maxsim at two threads, 1.44x on torch's."""
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
        # inference: one temporary (see _exponentials_in_place), the same state; log 0 = -inf: no valid patch, -inf
        _, shift, total, mask = _exponentials_in_place(similarities, document_mask, self.tau)
        count = None  # read by finalize only when length_corrected
        if self.length_corrected:
            count = torch.full_like(total, float(similarities.shape[-1])) if mask is None else mask.sum(dim=-1, dtype=torch.float32).expand_as(total)
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

