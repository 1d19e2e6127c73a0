"""Compiled (numba) work for the pooling heads at inference: each row's ``count`` best candidates without a sort, and
(optionally, in the same visit of the row) the sums a soft maximum needs.

:func:`compiled_top_candidates` computes what ``SharedWork.top_candidates`` promises (a full stable descending sort,
then the first ``count``). ``torch.topk`` costs about ten times a max on rows of a thousand patches, which made the
candidate search most of exclusive's scoring time (`make bench-scoring`). The kernel reads each row from memory once,
taking the maximum of each chunk of 16 values (LLVM's maxnum, which the compiler turns into vector instructions, where
``a if a > b else b`` stays one value at a time), bounds the ``count``-th largest value from below by the ``count``-th
largest maximum of pairs of chunks, and then, in cache, inserts into a sorted list only the values at or above the
bound in the chunks whose maximum reaches it (about ``count`` of them). A padded row is read only up to its length.
Rows are split over torch's threads (the kernel releases the GIL). :func:`compiled_candidates_and_exponentials` adds,
while the row is still in cache, the sum of ``exp((S - max) * scale)`` and of ``exp(...) * S`` over its real patches
(the state of the softmax head): ``blend`` needs both parts, the ``softmax`` head the sums. No head formula lives here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["can_compile", "compiled_candidates_and_exponentials", "compiled_top_candidates"]

CHUNK = 16  # a row is read in chunks of 16 values; their maxima give the lower bound and which chunks to search
PARALLEL_ROWS = 4096  # fewer rows than this run on the calling thread

_KERNEL = None


def _kernel():
    """The compiled per-row search (built on first use, cached on disk by numba)."""
    global _KERNEL
    if _KERNEL is None:
        import numba
        import numpy as np

        from numba.extending import intrinsic

        @intrinsic
        def power_of_two(typing_context, exponent):  # pragma: no cover - compiled
            """2.0 ** exponent as float32, the exponent (int32, -126..127) written into the exponent bits."""
            def generate(context, builder, signature, arguments):
                from llvmlite import ir
                biased = builder.add(arguments[0], ir.Constant(ir.IntType(32), 127))
                return builder.bitcast(builder.shl(biased, ir.Constant(ir.IntType(32), 23)), ir.FloatType())
            return numba.types.float32(numba.types.int32), generate

        # The sums of one row, in any order (vectorised), never assuming finite values (no 'nnan' / 'ninf').
        @numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
        def exponential_sums(row, length, shift, scale):  # pragma: no cover - compiled
            factor = np.float32(scale)
            total, weighted = np.float32(0.0), np.float32(0.0)
            if not -np.inf < shift < np.inf:  # a row holding NaN or +inf, or nothing finite: shifted by 0 and libm's
                for position in range(length):  # exp, as the torch heads (_safe_max)
                    value = row[position]
                    exponential = np.exp(value * factor)
                    total += exponential
                    weighted += exponential * value if value != -np.inf else np.float32(0.0)  # NaN stays NaN
                return total, weighted
            # Every value finite or -inf, shift its max: exp(t), t <= 0, as 2^n * exp(g) (n = round(t / ln 2),
            # |g| <= ln(2) / 2, Cephes' expf polynomial; relative error < 3e-7), a form the compiler vectorises where
            # libm's exp is a call per value. t is clamped at -60: exp(-60) * (a row's length) is below float32's
            # resolution of a total >= 1 (the max gives exp(0)), and no product with a similarity becomes subnormal
            # (which costs a microcode assist per value).
            for position in range(length):
                value = row[position]
                t = max((value - shift) * factor, np.float32(-60.0))
                n = np.float32(np.int32(t * np.float32(1.4426950408889634) - np.float32(0.5)))  # t <= 0: round
                g = t - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
                p = np.float32(1.9875691500e-4)
                p = p * g + np.float32(1.3981999507e-3)
                p = p * g + np.float32(8.3334519073e-3)
                p = p * g + np.float32(4.1665795894e-2)
                p = p * g + np.float32(1.6666665459e-1)
                p = p * g + np.float32(5.0000001201e-1)
                exponential = (p * g * g + g + np.float32(1.0)) * power_of_two(np.int32(n))
                total += exponential
                weighted += exponential * value if value != -np.inf else np.float32(0.0)  # -inf: weight 0
            return total, weighted

        @intrinsic
        def larger(typing_context, a, b):  # pragma: no cover - compiled
            """The larger of two float32 (LLVM's maxnum: a NaN operand gives the other): unlike ``a if a > b else b``,
            a maximum over a chunk the compiler turns into vector instructions."""
            def generate(context, builder, signature, arguments):
                from llvmlite import ir
                kind = ir.FunctionType(ir.FloatType(), [ir.FloatType(), ir.FloatType()])
                return builder.call(builder.module.declare_intrinsic("llvm.maxnum.f32", fnty=kind), arguments)
            return numba.types.float32(numba.types.float32, numba.types.float32), generate

        @numba.njit(cache=True, nogil=True, inline="always")
        def insert(value, position, take, filled, best_values, best_positions):  # pragma: no cover - compiled
            """Insert one value into the sorted list of the take best (filled so far), stably (a later equal value
            goes after); returns the new fill. "value sorts before b" (descending, NaN the largest, as torch.sort):
            value > b, or value is NaN and b is not."""
            if filled < take:
                slot = filled
                filled += 1
            elif value > best_values[take - 1] or (value != value and best_values[take - 1] == best_values[take - 1]):
                slot = take - 1
            else:
                return filled
            while slot > 0 and (value > best_values[slot - 1]
                                or (value != value and best_values[slot - 1] == best_values[slot - 1])):
                best_values[slot] = best_values[slot - 1]
                best_positions[slot] = best_positions[slot - 1]
                slot -= 1
            best_values[slot] = value
            best_positions[slot] = position
            return filled

        @numba.njit(cache=True, nogil=True)
        def search(rows_values, lengths, count, values, positions, scale, totals, weighteds):  # pragma: no cover
            rows, width = rows_values.shape
            best_values = np.empty(max(count, 1), dtype=rows_values.dtype)
            best_positions = np.empty(max(count, 1), dtype=np.int64)
            chunk_maxima = np.empty(width // CHUNK + 1, dtype=rows_values.dtype)
            hit_chunks = np.empty(width // CHUNK + 1, dtype=np.int64)
            kept = np.empty(width + CHUNK, dtype=np.int64)
            for row_index in range(rows):
                row = rows_values[row_index]
                length = min(max(lengths[row_index], 0), width)  # the row's real patches: the first length
                take = min(count, length)
                chunks = length // CHUNK
                # 1. The maximum of each chunk of 16 values (vector instructions; NaN passed over), in the one read of
                # the row from memory, then (from cache) whether the row holds a NaN.
                for chunk in range(chunks):
                    start = chunk * CHUNK
                    top = row[start]
                    for lane in range(1, CHUNK):
                        top = larger(top, row[start + lane])
                    chunk_maxima[chunk] = top
                unordered = False  # (a loop of its own: inside the one above, neither is vectorised)
                for position in range(length):
                    unordered |= row[position] != row[position]
                # 2. A lower bound on the take-th largest value: the take-th largest of the maxima of pairs of chunks
                # (take distinct pairs hold a value at least as large), kept in a sorted list without a branch (a
                # compare-and-swap down the list: an insertion's branches would be mispredicted, and pairs, not
                # chunks, halve the work for a bound about as tight). A row with a NaN (which sorts first) or fewer
                # pairs than take: -inf, every value a candidate.
                floor = -np.inf
                pairs = (chunks + 1) // 2
                if not unordered and 0 < take <= pairs:
                    for slot in range(take):
                        best_values[slot] = -np.inf
                    for pair in range(pairs):
                        value = larger(chunk_maxima[2 * pair], chunk_maxima[min(2 * pair + 1, chunks - 1)])
                        for slot in range(take):
                            held = best_values[slot]
                            best_values[slot] = value if value > held else held
                            value = held if value > held else value
                    floor = best_values[take - 1]
                # 3. The take best of the values at or above the bound (or NaN), inserted in patch order, reading only
                # the chunks whose maximum reaches the bound (in cache): those chunks, then their values that reach it
                # (positions), then the insertions; the first two without a branch (it would be mispredicted).
                reached = 0
                for chunk in range(chunks):
                    hit_chunks[reached] = chunk
                    reached += np.int64(floor == -np.inf or chunk_maxima[chunk] >= floor)
                kept_count = 0
                for index in range(reached):
                    start = hit_chunks[index] * CHUNK
                    for position in range(start, start + CHUNK):
                        kept[kept_count] = position
                        kept_count += np.int64(not row[position] < floor)
                for position in range(chunks * CHUNK, length):
                    kept[kept_count] = position
                    kept_count += np.int64(not row[position] < floor)
                filled = 0
                for index in range(kept_count):
                    filled = insert(row[kept[index]], kept[index], take, filled, best_values, best_positions)
                for slot in range(take):
                    value = best_values[slot]
                    values[row_index, slot] = value
                    positions[row_index, slot] = best_positions[slot] if -np.inf < value < np.inf else -1
                for slot in range(take, count):
                    values[row_index, slot] = -np.inf
                    positions[row_index, slot] = -1
                # 4. The softmax sums (when asked: totals has a slot per row), shifted by the row's max (the first
                # candidate: NaN when the row holds one; not finite: the torch heads' _safe_max shifts by 0).
                if totals.shape[0] > 0:
                    shift = best_values[0] if take > 0 else np.float32(-np.inf)
                    totals[row_index], weighteds[row_index] = exponential_sums(row, length, shift, scale)

        _KERNEL = search
    return _KERNEL


def can_compile(values: torch.Tensor) -> bool:
    """True when :func:`compiled_top_candidates` takes ``values``: a float32 CPU tensor outside autograd (training keeps
    torch's differentiable path), with at least one patch."""
    return (values.device.type == "cpu" and values.dtype == torch.float32 and values.dim() >= 1 and values.shape[-1] > 0
            and not (torch.is_grad_enabled() and values.requires_grad))


def _as_blocks(values: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """``values [..., L]`` as ``[O, I, L]`` rows without a copy when its rows are contiguous and its leading axes, in
    memory order, fold into two (the scorer's joint ``[Nq, Nd, Tq, Td]`` view into one, a block of documents cut out
    of its ``[Nq, Tq, Nd, 1, Td]`` matrix into two: query tokens x documents); otherwise a contiguous copy. Returns
    the view and the order of the leading axes (the rows follow it)."""
    leading = list(range(values.dim() - 1))
    order = sorted(leading, key=lambda axis: -values.stride(axis))
    arranged = values.permute(*order, values.dim() - 1)
    groups = []  # [size, stride] of the folded leading axes, outermost first
    for axis in range(arranged.dim() - 1):
        size, stride = arranged.shape[axis], arranged.stride(axis)
        if size == 1:
            continue
        if groups and groups[-1][1] == size * stride:
            groups[-1] = [groups[-1][0] * size, stride]
        else:
            groups.append([size, stride])
    if arranged.stride(-1) != 1 and arranged.shape[-1] > 1 or len(groups) > 2:
        arranged, order = values.contiguous(), leading
        groups = [[arranged.numel() // max(1, arranged.shape[-1]), arranged.shape[-1]]]
    while len(groups) < 2:
        groups.insert(0, [1, 0])
    shape = (groups[0][0], groups[1][0], arranged.shape[-1])
    return arranged.as_strided(shape, (groups[0][1], groups[1][1], 1), arranged.storage_offset()), order


def _run(values: torch.Tensor, count: int, lengths: torch.Tensor | None, scale: float | None):
    blocks, order = _as_blocks(values)
    n_outer, n_inner, width = blocks.shape
    n_rows = n_outer * n_inner
    leading = values.shape[:-1]
    if lengths is None:
        row_lengths = torch.full((n_rows,), width, dtype=torch.long)
    else:
        row_lengths = lengths.to(torch.long).expand(leading).permute(*order).reshape(n_rows)
    found = torch.empty(n_rows, count, dtype=torch.float32)
    positions = torch.empty(n_rows, count, dtype=torch.long)
    sums = torch.empty(2, n_rows if scale is not None else 0, dtype=torch.float32)
    kernel = _kernel()
    rows = blocks.detach().numpy()
    arrays = (row_lengths.numpy(), found.numpy(), positions.numpy(), sums[0].numpy(), sums[1].numpy())
    factor = float(scale) if scale is not None else 1.0

    def part(outer: int, a: int, b: int):  # rows a..b of block outer
        first, last = outer * n_inner + a, outer * n_inner + b
        kernel(rows[outer, a:b], arrays[0][first:last], count, arrays[1][first:last], arrays[2][first:last], factor,
               arrays[3][first:last], arrays[4][first:last])

    workers = max(1, min(torch.get_num_threads(), n_rows // PARALLEL_ROWS))
    if workers == 1:
        for outer in range(n_outer):
            part(outer, 0, n_inner)
    else:  # each block's rows in `workers` parts
        bounds = [n_inner * index // workers for index in range(workers + 1)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            jobs = [pool.submit(part, outer, a, b) for outer in range(n_outer) for a, b in zip(bounds[:-1], bounds[1:])
                    if b > a]
            for job in jobs:
                job.result()
    shape = [values.shape[axis] for axis in order]
    inverse = [order.index(axis) for axis in range(len(order))]

    def back(flat: torch.Tensor, *trailing: int) -> torch.Tensor:
        return flat.view(*shape, *trailing).permute(*inverse, *range(len(order), len(order) + len(trailing)))

    found, positions = back(found, count), back(positions, count)
    if scale is None:
        return found, positions
    return found, positions, back(sums[0]), back(sums[1])


def compiled_top_candidates(values: torch.Tensor, count: int,
                            lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` largest of ``values [..., L]`` (float32, CPU) ``[..., count]``, descending, equal ones by position
    (NaN first, as torch.sort), and their positions (long); positions -1 where the value is not finite, -inf / -1
    padding when ``L < count``. Equal to a full stable descending sort, first ``count``.

    ``lengths`` (integer, broadcastable to ``[...]``): each row's real patches are its first ``lengths`` (the rest
    count as -inf and are never read, so a padded block needs no masked copy); None: all ``L``.
    """
    return _run(values, count, lengths, None)


def compiled_candidates_and_exponentials(values: torch.Tensor, count: int, scale: float,
                                         lengths: torch.Tensor | None = None):
    """:func:`compiled_top_candidates` (``count`` >= 1) and, from the same read of each row, ``(total, weighted)``
    ``[...]``: the sums over the row's real patches of ``e = exp((S - shift) * scale)`` and of ``e * S`` (a -inf
    patch adds 0 to the weighted sum and at most exp(-60) to the total), ``shift`` the row's max (0 when it is not
    finite). ``weighted / total`` is the softmax head's value at ``tau = 1 / scale``; a row without real patches has
    ``total = 0``. float32 sums in any order (vectorised); the exponentials of a finite row to a relative 3e-7.
    """
    if count < 1:
        raise ValueError(f"compiled_candidates_and_exponentials needs count >= 1 (the row's max), got {count}")
    return _run(values, count, lengths, scale)
