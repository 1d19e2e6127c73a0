"""Work shared between pooling heads: the sweep summarises the same similarities for every head at once.

:class:`SharedWork` computes once, on first use, what several heads' ``partial_shared`` need (the masked copy, the
max, one exponential per tau, the top-k, the candidate lists); :func:`top_k_values` and the sorting networks give the
top-k of short rows without torch.topk's per-row cost. No head formula lives here.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from lir_robust.scoring.pooling.compiled import can_compile, compiled_top_candidates
from lir_robust.scoring.pooling.base import _all_valid

__all__ = ["SharedWork", "prefix_lengths", "top_k_values"]


def prefix_lengths(mask: torch.Tensor) -> torch.Tensor | None:
    """The number of real patches ``[...]`` (long) of each row of ``mask [..., L]`` (bool, True = real) when they are
    its first ones (padding at the end, as the scorer pads); otherwise None."""
    lengths = mask.sum(dim=-1)
    prefix = torch.arange(mask.shape[-1], device=mask.device) < lengths.unsqueeze(-1)
    return lengths if torch.equal(mask.to(torch.bool), prefix) else None


class SharedWork:
    """Similarities ``[..., L]`` of (query token, document) pairs to L patches, and what several heads compute from
    them, each computed once on first use: the masked copy, the max, one exponential per tau, the top-k per k.

    ``document_mask``: bool, broadcastable to the similarities (True = a real patch); None = every patch is real.
    ``masked_are_zero``: the similarities are exactly 0 at masked patches (zero-padded documents), which saves a
    copy.
    """

    def __init__(self, similarities: torch.Tensor, document_mask: torch.Tensor | None = None, *,
                 masked_are_zero: bool = False):
        self.similarities = similarities.float()
        self.document_mask = None if document_mask is None else document_mask.to(torch.bool)
        self.all_valid = self.document_mask is None or _all_valid(self.document_mask)
        self.masked_are_zero = masked_are_zero
        self._cache: dict[Any, Any] = {}

    def _cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def full_mask(self) -> torch.Tensor:
        """The document mask expanded to the similarities' shape ``[..., L]``."""
        if self.document_mask is None:
            return torch.ones(self.similarities.shape, dtype=torch.bool, device=self.similarities.device)
        return self.document_mask.expand(self.similarities.shape)

    def prefix_lengths(self) -> torch.Tensor | None:
        """When every row's real patches are its first ones (the scorer's padded blocks), their number ``[...]``
        (long, broadcastable to the similarities' leading shape); otherwise None."""
        mask, leading = self.document_mask, self.similarities.shape[:-1]
        if mask is None or mask.shape[-1] != self.similarities.shape[-1]:
            return None
        try:
            if torch.broadcast_shapes(mask.shape[:-1], leading) != leading:
                return None
        except RuntimeError:
            return None
        return prefix_lengths(mask)

    @property
    def filled(self) -> torch.Tensor:
        """Similarities with masked patches at -inf."""
        if self.all_valid:
            return self.similarities
        return self._cached("filled", lambda: self.similarities.masked_fill(~self.document_mask, -math.inf))

    @property
    def zero_filled(self) -> torch.Tensor:
        """Similarities with masked patches at 0."""
        if self.all_valid or self.masked_are_zero:
            return self.similarities
        return self._cached("zero", lambda: self.similarities.masked_fill(~self.document_mask, 0.0))

    @property
    def peak(self) -> torch.Tensor:
        """Max over the patches ``[...]`` (-inf where no patch is real)."""
        return self._cached("peak", lambda: self.filled.amax(dim=-1))

    @property
    def shift(self) -> torch.Tensor:
        """The max with -inf replaced by 0 ``[...]``, detached: the shift inside exponentials (no head's value depends
        on it, so no gradient needs to flow through it)."""
        def compute():
            peak = self.peak.detach()
            return peak if self.all_valid else torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        return self._cached("shift", compute)

    @property
    def counts(self) -> torch.Tensor:
        """Number of real patches ``[...]`` (float32)."""
        def compute():
            shape = self.similarities.shape[:-1]
            if self.document_mask is None:
                return torch.full(shape, float(self.similarities.shape[-1]), device=self.similarities.device)
            return self.document_mask.to(torch.float32).sum(dim=-1).expand(shape)
        return self._cached("counts", compute)

    def exponentials(self, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(exp((S - shift) / tau) [..., L], its sum [...])``, exactly 0 at masked patches."""
        def compute():
            exp = (self.filled - self.shift.unsqueeze(-1)).mul_(1.0 / tau).exp_()
            return exp, exp.sum(dim=-1)
        return self._cached(("exp", float(tau)), compute)

    def top_values(self, k: int) -> torch.Tensor:
        """The k largest similarities ``[..., k]`` in descending order, padded with -inf when there are fewer than k
        patches (masked patches count as -inf). At inference on the CPU the compiled candidate search (same values as
        torch.topk, NaN and ties included: tests/test_pooling.py)."""
        def compute():
            if can_compile(self.similarities):
                return self.top_candidates(k)[0]
            filled = self.filled
            width = filled.shape[-1]
            if k == 1:
                return self.peak.unsqueeze(-1)
            if k <= width:
                return top_k_values(filled, k)
            pad = filled.new_full((*filled.shape[:-1], k - width), -math.inf)
            return torch.cat([filled, pad], dim=-1).sort(dim=-1, descending=True).values
        return self._cached(("top", int(k)), compute)

    def compiled_rows(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What the compiled kernels read at inference: ``(rows, lengths)`` - the similarities themselves with each
        row's real length when every patch is real or the real ones are a prefix (the scorer's padded blocks: no
        masked copy), else the masked copy (:attr:`filled`) read whole."""
        lengths = None if self.all_valid else self.prefix_lengths()
        if self.all_valid or lengths is not None:
            return self.similarities, lengths
        return self.filled, None

    def top_candidates(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``count`` largest similarities ``[..., count]`` (descending; equal ones by patch position) and their
        patch positions (long; -inf / -1 where padded or masked). At inference on the CPU a compiled search
        (:mod:`lir_robust.scoring.pooling.compiled`); with gradients or on a GPU, torch's topk (same values)."""
        def compute():
            if can_compile(self.similarities):
                rows, lengths = self.compiled_rows()
                return compiled_top_candidates(rows, count, lengths)
            filled = self.filled
            width = filled.shape[-1]
            take = min(count, width)
            if take == width:
                values, positions = filled.sort(dim=-1, descending=True, stable=True)
            else:  # topk (a full sort costs ~20x more on the CPU), then equal values put in patch order
                values, positions = filled.topk(take + 1, dim=-1, sorted=True)
                # a value equal to the take-th one left outside: which of the equal patches is in depends on topk's
                # internals, so those rows (rare: exactly equal similarities) are sorted in full, stably
                tied = (values[..., take] == values[..., take - 1]) & torch.isfinite(values[..., take - 1])
                values, positions = values[..., :take], positions[..., :take]
                # equal values inside the list come in topk's order: put them in patch order (only those rows)
                inner = (values[..., 1:] == values[..., :-1]).any(dim=-1)
                if bool(inner.any()):
                    row_positions, order = positions[inner].sort(dim=-1)
                    row_values, order = values[inner].gather(-1, order).sort(dim=-1, descending=True, stable=True)
                    values = values.index_put((inner,), row_values)
                    positions = positions.index_put((inner,), row_positions.gather(-1, order))
                if bool(tied.any()):
                    tied_values, tied_positions = filled[tied].sort(dim=-1, descending=True, stable=True)
                    values = values.index_put((tied,), tied_values[:, :take])
                    positions = positions.index_put((tied,), tied_positions[:, :take])
            values, positions = values[..., :take], positions[..., :take]
            positions = torch.where(torch.isfinite(values), positions, torch.full_like(positions, -1))
            if take < count:
                values = torch.cat([values, values.new_full((*values.shape[:-1], count - take), -math.inf)], dim=-1)
                positions = torch.cat([positions, positions.new_full((*positions.shape[:-1], count - take), -1)], dim=-1)
            return values, positions
        return self._cached(("candidates", int(count)), compute)


# Sorting networks over same-shape tensors (element-wise max / min): the top-k of short rows without torch.topk's
# per-row cost. Used by SharedWork.top_values and TopKHead.merge; no head formula lives here.


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
