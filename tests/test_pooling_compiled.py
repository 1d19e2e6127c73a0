"""The compiled candidate search (lir_robust.scoring.pooling.compiled) against a full stable sort, and against torch's
path of SharedWork.top_candidates (the one training takes)."""

from __future__ import annotations

import math

import pytest
import torch

from lir_robust.scoring.pooling import SharedWork, compiled, parse_head


def _reference(values: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A full stable descending sort (NaN first), the first ``count``, positions -1 where not finite, -inf / -1 pad."""
    ordered, positions = values.sort(dim=-1, descending=True, stable=True)
    take = min(count, values.shape[-1])
    ordered, positions = ordered[..., :take], positions[..., :take]
    positions = torch.where(torch.isfinite(ordered), positions, -1)
    pad = count - take
    if pad:
        ordered = torch.cat([ordered, ordered.new_full((*ordered.shape[:-1], pad), -math.inf)], dim=-1)
        positions = torch.cat([positions, positions.new_full((*positions.shape[:-1], pad), -1)], dim=-1)
    return ordered, positions


def _assert_same(found, expected):
    values, positions = found
    expected_values, expected_positions = expected
    assert values.shape == expected_values.shape and values.dtype == torch.float32 and positions.dtype == torch.long
    assert torch.equal(torch.isnan(values), torch.isnan(expected_values))
    assert torch.equal(values.nan_to_num(0.5), expected_values.nan_to_num(0.5))
    assert torch.equal(positions, expected_positions)


def _hard_rows(width: int, seed: int) -> torch.Tensor:
    """``[6, 5, width]`` rows the bound can get wrong: many exact ties (also at the count-th place), NaN, +-inf, rows
    of -inf only, rows whose best values share a lane (positions 16 apart), rows rising and falling."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(6, 5, width, generator=generator)
    rows[1] = torch.randint(-3, 4, (5, width), generator=generator).float()  # ties everywhere
    rows[2] = torch.randint(0, 2, (5, width), generator=generator).float()  # two values only: ties at every boundary
    noise = torch.rand(5, width, generator=generator)
    rows[3] = rows[3].masked_fill(noise < 0.05, math.nan).masked_fill((noise > 0.05) & (noise < 0.15), -math.inf)
    rows[3] = rows[3].masked_fill((noise > 0.15) & (noise < 0.17), math.inf)
    rows[4, 0] = -math.inf  # nothing to take
    rows[4, 1] = math.nan
    rows[4, 2] = torch.arange(width, dtype=torch.float32)  # rising: the best at the end
    rows[4, 3] = -torch.arange(width, dtype=torch.float32)  # falling: the best at the start
    rows[4, 4, ::16] = 9.0  # the best values in one lane
    rows[5] = torch.where(noise < 0.5, 1.0, rows[5])  # the same value in half the row
    return rows


@pytest.mark.parametrize("width", [1, 7, 16, 17, 40, 131, 1030])
def test_compiled_candidates_equal_a_full_stable_sort(width):
    rows = _hard_rows(width, seed=width)
    for count in (1, 2, 3, 8, 16, 17, 40):
        _assert_same(compiled.compiled_top_candidates(rows, count), _reference(rows, count))
        # the scorer's view: a permutation of a contiguous tensor (no copy), and a broadcast one (copied)
        view = rows.permute(1, 0, 2)
        _assert_same(compiled.compiled_top_candidates(view, count), _reference(view, count))
        expanded = rows[:, :1].expand(6, 3, width)
        _assert_same(compiled.compiled_top_candidates(expanded, count), _reference(expanded, count))


@pytest.mark.parametrize("width", [5, 40, 1030])
def test_compiled_candidates_read_only_each_rows_length(width):
    """lengths: a row's real patches are its first ones; what lies after (NaN, +inf, large values) is never taken."""
    rows = _hard_rows(width, seed=width + 1)
    lengths = torch.randint(0, width + 1, (6, 5), generator=torch.Generator().manual_seed(3))
    lengths[0, 0], lengths[0, 1], lengths[0, 2] = 0, width, min(width, 3)
    beyond = torch.arange(width) >= lengths.unsqueeze(-1)
    padded = rows.masked_fill(beyond, math.nan)
    padded[1] = padded[1].masked_fill(beyond[1], 1e9)
    for count in (1, 8, 17):
        expected = _reference(rows.masked_fill(beyond, -math.inf), count)
        _assert_same(compiled.compiled_top_candidates(padded, count, lengths), expected)
        view = padded.permute(1, 0, 2)  # lengths broadcast and permuted with the rows
        found = compiled.compiled_top_candidates(view, count, lengths.T)
        _assert_same(found, tuple(part.permute(1, 0, 2) for part in expected))
    per_document = lengths[:, :1]  # one length per document, broadcast over its query tokens
    beyond = torch.arange(width) >= per_document.unsqueeze(-1)
    expected = _reference(padded.masked_fill(beyond, -math.inf), 8)
    _assert_same(compiled.compiled_top_candidates(padded, 8, per_document), expected)


def test_compiled_candidates_split_over_threads_equal_one_thread(monkeypatch):
    rows = _hard_rows(100, seed=5).repeat(40, 1, 1)  # 1,200 rows
    single = compiled.compiled_top_candidates(rows, 8)
    monkeypatch.setattr(compiled, "PARALLEL_ROWS", 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        _assert_same(compiled.compiled_top_candidates(rows, 8), single)
    finally:
        torch.set_num_threads(threads)
    _assert_same(single, _reference(rows, 8))


def test_shared_work_candidates_are_the_same_with_and_without_gradients():
    """Inference takes the compiled search, training torch's topk: same values and positions, masked patches
    never taken."""
    similarities = _hard_rows(131, seed=9)
    mask = torch.rand(6, 1, 131, generator=torch.Generator().manual_seed(2)) > 0.3
    mask[0] = False  # a document without patches
    inference = SharedWork(similarities, mask).top_candidates(8)
    training = SharedWork(similarities.clone().requires_grad_(), mask).top_candidates(8)
    assert compiled.can_compile(similarities) and not compiled.can_compile(similarities.clone().requires_grad_())
    _assert_same((training[0].detach(), training[1]), inference)
    _assert_same(inference, _reference(similarities.masked_fill(~mask, -math.inf), 8))
    # the scorer's padding (each document's real patches first): no masked copy, the same candidates
    lengths = torch.tensor([0, 131, 1, 7, 64, 100])
    prefix = (torch.arange(131) < lengths.view(6, 1, 1))
    padded = similarities.masked_fill(~prefix, math.nan)
    work = SharedWork(padded, prefix)
    assert torch.equal(work.prefix_lengths(), lengths.view(6, 1)) and SharedWork(padded, mask).prefix_lengths() is None
    inference = work.top_candidates(8)
    assert "filled" not in work._cache
    training = SharedWork(padded.clone().requires_grad_(), prefix).top_candidates(8)
    _assert_same((training[0].detach(), training[1]), inference)
    _assert_same(inference, _reference(similarities.masked_fill(~prefix, -math.inf), 8))


def test_exclusive_scores_the_same_with_the_compiled_search_and_with_torch():
    """The head end to end on the scorer's layout ([Nq, Nd, Tq, Td] view): the compiled path at inference equals the
    torch path (gradients recorded), ties included."""
    generator = torch.Generator().manual_seed(4)
    similarities = (torch.randn(3, 8, 4, 70, generator=generator) * 4).round().permute(0, 2, 1, 3)  # ties
    document_mask = torch.rand(4, 70, generator=generator) > 0.2
    query_mask = torch.rand(3, 1, 8, generator=generator) > 0.1
    head = parse_head("exclusive:capacity=1,candidates=8")
    inference = head.pool(similarities, document_mask, query_mask)
    training = head.pool(similarities.clone().requires_grad_(), document_mask, query_mask)
    assert torch.equal(inference, training.detach())


@pytest.mark.parametrize("width", [1, 17, 131, 1030])
def test_compiled_exponential_sums_equal_torch_from_the_same_read(width):
    """compiled_candidates_and_exponentials: the same candidates as compiled_top_candidates, and the softmax sums
    (shift by the row's max, 0 when it is not finite; -inf patches add 0; NaN and +inf propagate as in torch) over
    each row's real patches only (what lies past a row's length is never read)."""
    rows = _hard_rows(width, seed=width + 1)
    lengths = torch.randint(0, width + 1, (6, 5), generator=torch.Generator().manual_seed(width))
    padded = torch.where(torch.arange(width) < lengths.unsqueeze(-1), rows, math.nan)
    for scale in (1.0, 2.0, 10.0):
        found, positions, total, weighted = compiled.compiled_candidates_and_exponentials(padded, 8, scale, lengths)
        _assert_same((found, positions), compiled.compiled_top_candidates(padded, 8, lengths))
        valid = torch.arange(width) < lengths.unsqueeze(-1)
        filled = rows.masked_fill(~valid, -math.inf)
        shift = filled.amax(dim=-1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, 0.0)
        exponentials = ((filled - shift) * scale).exp().double()
        expected_total = exponentials.sum(dim=-1)
        expected_weighted = (exponentials * filled.masked_fill(torch.isneginf(filled), 0.0).double()).sum(dim=-1)
        torch.testing.assert_close(total, expected_total.float(), equal_nan=True)
        torch.testing.assert_close(weighted, expected_weighted.float(), equal_nan=True)
        assert (total[lengths == 0] == 0).all()
    with pytest.raises(ValueError, match="count >= 1"):
        compiled.compiled_candidates_and_exponentials(rows, 0, 1.0)


def test_blocks_of_the_scorer_are_read_in_place():
    """The scorer's views are read without a copy: the joint [Nq, Nd, Tq, Td] view folds into one block of rows, a
    block of documents cut out of [Nq, Tq, Nd, 1, Td] into query tokens x documents; a view whose axes do not fold
    is copied. Candidates and sums are the same either way."""
    storage = torch.randn(3, 4, 10, 1, 40)
    joint = storage.squeeze(3).permute(0, 2, 1, 3)
    cut = storage[1:3, :, 2:7]
    scattered = storage[:, 1:3, 2:7, :, :30]  # three cuts: the leading axes fold into three groups
    for view, in_place in ((joint, True), (cut, True), (scattered, False)):
        blocks, _ = compiled._as_blocks(view)
        assert (blocks.untyped_storage().data_ptr() == storage.untyped_storage().data_ptr()) == in_place
        found = compiled.compiled_candidates_and_exponentials(view, 4, 1.0)
        copied = compiled.compiled_candidates_and_exponentials(view.contiguous(), 4, 1.0)
        for a, b in zip(found, copied):
            assert torch.equal(a, b)
        _assert_same(found[:2], _reference(view, 4))
