"""Compiled (numba) work for the pooling heads at inference: each row's ``count`` best candidates without a sort.

:func:`compiled_top_candidates` computes what ``SharedWork.top_candidates`` promises (a full stable descending sort,
then the first ``count``). ``torch.topk`` costs about ten times a max on rows of a thousand patches, which made the
candidate search most of exclusive's scoring time (`make bench-scoring`). The kernel reads each row from memory once
(the maxima of 16 lanes bound the ``count``-th largest value from below), then, in cache, keeps the few values at or
above the bound and inserts them into a sorted list. A padded row is read only up to its length. Rows are split over
torch's threads (the kernel releases the GIL). No head formula lives here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["can_compile", "compiled_top_candidates"]

LANES = 16  # a row is read in chunks of 16 values; the lane maxima give the lower bound
PARALLEL_ROWS = 4096  # fewer rows than this run on the calling thread

_KERNEL = None


def _kernel():
    """The compiled per-row search (built on first use, cached on disk by numba)."""
    global _KERNEL
    if _KERNEL is None:
        import numba
        import numpy as np

        @numba.njit(cache=True, nogil=True)
        def search(rows_values, lengths, count, values, positions):  # pragma: no cover - compiled
            rows, width = rows_values.shape
            best_values = np.empty(max(count, 1), dtype=rows_values.dtype)
            best_positions = np.empty(max(count, 1), dtype=np.int64)
            lanes = np.empty(LANES, dtype=rows_values.dtype)
            hits = np.zeros(width // LANES + 1, dtype=np.int32)
            kept = np.empty(width + LANES, dtype=np.int64)
            for row_index in range(rows):
                row = rows_values[row_index]
                length = min(max(lengths[row_index], 0), width)  # the row's real patches: the first length
                take = min(count, length)
                chunks = length // LANES
                # 1. A lower bound on the take-th largest value: the take-th largest of the 16 lane maxima (16
                # distinct values of the row; NaN lanes passed over; fewer than take numbers: -inf, no bound).
                floor = -np.inf
                if 0 < take <= LANES and chunks > 0:
                    for lane in range(LANES):
                        lanes[lane] = row[lane]
                    for chunk in range(1, chunks):
                        start = chunk * LANES
                        for lane in range(LANES):
                            value = row[start + lane]
                            lanes[lane] = value if value > lanes[lane] else lanes[lane]
                    for slot in range(take):
                        best_values[slot] = -np.inf
                    for lane in range(LANES):
                        value = lanes[lane]
                        if value > best_values[take - 1]:
                            slot = take - 1
                            while slot > 0 and value > best_values[slot - 1]:
                                best_values[slot] = best_values[slot - 1]
                                slot -= 1
                            best_values[slot] = value
                    floor = best_values[take - 1]
                # 2. The values that can be among the take best (at or above the bound, or NaN), in patch order: a
                # vectorised test per chunk of 16, then the chunks that hold one.
                for chunk in range(chunks):
                    start = chunk * LANES
                    hit = 0
                    for lane in range(LANES):
                        hit += np.int32(not (row[start + lane] < floor))
                    hits[chunk] = hit
                kept_count = 0
                for chunk in range(chunks):
                    if hits[chunk]:
                        start = chunk * LANES
                        for lane in range(LANES):
                            kept[kept_count] = start + lane
                            kept_count += np.int64(not (row[start + lane] < floor))
                for position in range(chunks * LANES, length):
                    kept[kept_count] = position
                    kept_count += np.int64(not (row[position] < floor))
                # 3. The take best of those by insertion, stably (a later equal value goes after). "value sorts
                # before b" (descending, NaN the largest, as torch.sort): value > b, or value is NaN and b is not.
                filled = 0
                for index in range(kept_count):
                    position = kept[index]
                    value = row[position]
                    if filled < take:
                        slot = filled
                        filled += 1
                    elif (value > best_values[take - 1]
                          or (value != value and best_values[take - 1] == best_values[take - 1])):
                        slot = take - 1
                    else:
                        continue
                    while slot > 0 and (value > best_values[slot - 1]
                                        or (value != value and best_values[slot - 1] == best_values[slot - 1])):
                        best_values[slot] = best_values[slot - 1]
                        best_positions[slot] = best_positions[slot - 1]
                        slot -= 1
                    best_values[slot] = value
                    best_positions[slot] = position
                for slot in range(take):
                    value = best_values[slot]
                    values[row_index, slot] = value
                    positions[row_index, slot] = best_positions[slot] if -np.inf < value < np.inf else -1
                for slot in range(take, count):
                    values[row_index, slot] = -np.inf
                    positions[row_index, slot] = -1

        _KERNEL = search
    return _KERNEL


def can_compile(values: torch.Tensor) -> bool:
    """True when :func:`compiled_top_candidates` takes ``values``: a float32 CPU tensor outside autograd (training keeps
    torch's differentiable path), with at least one patch."""
    return (values.device.type == "cpu" and values.dtype == torch.float32 and values.dim() >= 1 and values.shape[-1] > 0
            and not (torch.is_grad_enabled() and values.requires_grad))


def _as_rows(values: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """``values [..., L]`` as rows ``[R, L]`` without a copy when it is a permutation of a contiguous tensor (the
    scorer's ``[Nq, Nd, Tq, Td]`` view is one): the rows in memory order, and the order of the leading axes."""
    leading = list(range(values.dim() - 1))
    order = sorted(leading, key=lambda axis: -values.stride(axis))
    arranged = values.permute(*order, values.dim() - 1)
    if not arranged.is_contiguous():
        arranged, order = values.contiguous(), leading
    return arranged.view(-1, values.shape[-1]), order


def compiled_top_candidates(values: torch.Tensor, count: int,
                            lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` largest of ``values [..., L]`` (float32, CPU) ``[..., count]``, descending, equal ones by position
    (NaN first, as torch.sort), and their positions (long); positions -1 where the value is not finite, -inf / -1
    padding when ``L < count``. Equal to a full stable descending sort, first ``count``.

    ``lengths`` (integer, broadcastable to ``[...]``): each row's real patches are its first ``lengths`` (the rest
    count as -inf and are never read, so a padded block needs no masked copy); None: all ``L``.
    """
    rows, order = _as_rows(values)
    n_rows, width = rows.shape
    leading = values.shape[:-1]
    if lengths is None:
        row_lengths = torch.full((n_rows,), width, dtype=torch.long)
    else:
        row_lengths = lengths.to(torch.long).expand(leading).permute(*order).reshape(n_rows)
    found = torch.empty(n_rows, count, dtype=torch.float32)
    positions = torch.empty(n_rows, count, dtype=torch.long)
    kernel = _kernel()
    arrays = (rows.detach().numpy(), row_lengths.numpy(), found.numpy(), positions.numpy())
    workers = max(1, min(torch.get_num_threads(), n_rows // PARALLEL_ROWS))
    if workers == 1:
        kernel(arrays[0], arrays[1], count, arrays[2], arrays[3])
    else:
        bounds = [n_rows * part // workers for part in range(workers + 1)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            jobs = [pool.submit(kernel, arrays[0][a:b], arrays[1][a:b], count, arrays[2][a:b], arrays[3][a:b])
                    for a, b in zip(bounds[:-1], bounds[1:])]
            for job in jobs:
                job.result()
    shape = [values.shape[axis] for axis in order]
    inverse = [order.index(axis) for axis in range(len(order))]
    found = found.view(*shape, count).permute(*inverse, len(order))
    positions = positions.view(*shape, count).permute(*inverse, len(order))
    return found, positions
