"""Properties of every pooling head: masking, limits (k = 1, tau -> 0, tau -> inf), gradients, parts, text form."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from lir_robust.scoring.pooling import HEADS, PoolingHead, available_heads, parse_head, register_head

ALL_HEADS = ["maxsim", "topk:k=4", "topk:k=1", "softmax:tau=1.0", "softmax:tau=0.1", "lse:tau=0.1",
             "lse:tau=0.1,length_corrected=true", "mean", "exclusive", "exclusive:capacity=2,candidates=3",
             "blend:tau=0.5,weight=0.5", "blend:tau=0.1,weight=0.3,capacity=2,candidates=3"]


def random_similarities(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator) * 0.5


@pytest.mark.parametrize("spec", ALL_HEADS)
def test_padded_patches_never_count_even_nan(spec):
    head = parse_head(spec)
    similarities = random_similarities(3, 5, 11)  # [B, Tq, Td]
    mask = torch.ones(3, 11, dtype=torch.bool)
    reference = head(similarities, mask)
    for fill in (0.0, 1e4, -1e4, math.nan, math.inf):
        padded = torch.cat([similarities, torch.full((3, 5, 9), fill)], dim=-1)
        padded_mask = torch.cat([mask, torch.zeros(3, 9, dtype=torch.bool)], dim=-1)
        value = head(padded, padded_mask)
        assert torch.isfinite(value).all(), (spec, fill)
        torch.testing.assert_close(value, reference, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("spec", ALL_HEADS)
def test_float32_and_differentiable_from_half_inputs(spec):
    head = parse_head(spec)
    similarities = random_similarities(2, 3, 7).to(torch.bfloat16).requires_grad_()
    value = head(similarities, torch.ones(2, 7, dtype=torch.bool))
    assert value.dtype == torch.float32 and value.shape == (2, 3)
    value.sum().backward()
    assert similarities.grad is not None and torch.isfinite(similarities.grad.float()).all()


def test_topk_with_k_1_equals_maxsim():
    similarities, mask = random_similarities(4, 6, 30), torch.rand(4, 30, generator=torch.Generator().manual_seed(1)) > 0.3
    torch.testing.assert_close(parse_head("topk:k=1")(similarities, mask), parse_head("maxsim")(similarities, mask))


def test_topk_uses_all_valid_patches_when_k_exceeds_length():
    similarities = torch.tensor([[[0.1, 0.5, 0.3, 9.0]]])
    mask = torch.tensor([[True, True, True, False]])
    torch.testing.assert_close(parse_head("topk:k=10")(similarities, mask), torch.tensor([[0.3]]))


def test_softmax_with_tiny_tau_equals_maxsim():
    similarities, mask = random_similarities(4, 6, 30), torch.rand(4, 30, generator=torch.Generator().manual_seed(2)) > 0.3
    torch.testing.assert_close(
        parse_head("softmax:tau=1e-4")(similarities, mask), parse_head("maxsim")(similarities, mask), atol=1e-5, rtol=0
    )


def test_mean_equals_softmax_with_huge_tau():
    similarities, mask = random_similarities(4, 6, 30), torch.rand(4, 30, generator=torch.Generator().manual_seed(3)) > 0.3
    torch.testing.assert_close(
        parse_head("softmax:tau=1e6")(similarities, mask), parse_head("mean")(similarities, mask), atol=1e-5, rtol=0
    )


def test_softmax_is_a_weighted_mean_as_in_the_paper():
    similarities = torch.tensor([[[0.2, -0.4, 0.9]]])
    weights = torch.softmax(similarities / 0.5, dim=-1)
    expected = (weights * similarities).sum(-1)
    torch.testing.assert_close(parse_head("softmax:tau=0.5")(similarities, torch.ones(1, 3, dtype=torch.bool)), expected)


def test_lse_is_colpali_smooth_max_and_length_correction():
    similarities = random_similarities(1, 2, 9)
    mask = torch.ones(1, 9, dtype=torch.bool)
    expected = 0.1 * torch.logsumexp(similarities / 0.1, dim=-1)
    torch.testing.assert_close(parse_head("lse:tau=0.1")(similarities, mask), expected)
    corrected = parse_head("lse:tau=0.1,length_corrected=true")(similarities, mask)
    torch.testing.assert_close(corrected, expected - 0.1 * math.log(9))


def test_maxsim_gradient_lands_on_exactly_one_patch_per_query_token():
    queries = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)  # [Tq, D]
    patches = torch.nn.functional.normalize(torch.randn(40, 16), dim=-1).requires_grad_()  # [Td, D]
    value = parse_head("maxsim")((queries @ patches.T).unsqueeze(0), torch.ones(1, 40, dtype=torch.bool))
    for token in range(6):
        (gradient,) = torch.autograd.grad(value[0, token], patches, retain_graph=True)
        assert int((gradient.norm(dim=-1) > 0).sum()) == 1


@pytest.mark.parametrize("spec", ALL_HEADS)
def test_partial_merge_finalize_over_a_split_document_equals_the_whole(spec):
    head = parse_head(spec)
    assert head.mergeable
    similarities = random_similarities(3, 5, 40)
    mask = torch.rand(3, 40, generator=torch.Generator().manual_seed(4)) > 0.2
    mask[:, 0] = True
    whole = head(similarities, mask)
    for cut in (1, 13, 39):
        first = head.partial(similarities[..., :cut], mask[..., :cut])
        second = head.partial(similarities[..., cut:], mask[..., cut:])
        torch.testing.assert_close(head.finalize(head.merge(first, second)), whole, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(head.finalize(head.merge(second, first)), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", ["softmax:tau=0.1", "softmax:tau=1.0", "lse:tau=0.1", "lse:tau=0.1,length_corrected=true"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_inference_path_gives_the_values_of_the_differentiable_one(spec, dtype):
    """softmax and lse compute inference with one temporary rewritten in place; same values as with gradients, on
    masked patches holding garbage, on documents without any valid patch (-inf), on padded documents (garbage past
    each one's length), whole and in blocks of a view."""
    head = parse_head(spec)
    similarities = random_similarities(4, 6, 30, seed=5)
    mask = torch.rand(4, 30, generator=torch.Generator().manual_seed(6)) > 0.3
    mask[1] = False  # no valid patch
    similarities[~mask.unsqueeze(1).expand_as(similarities)] = math.inf
    similarities[0, 0, ~mask[0]] = math.nan
    similarities = similarities.to(dtype)
    clean = random_similarities(4, 6, 30, seed=7).to(dtype)
    padding = torch.arange(30) < torch.tensor([30, 0, 1, 17]).unsqueeze(-1)  # the scorer's padded documents
    padded = clean.masked_fill(~padding.unsqueeze(1), math.nan)
    padded[3, :, 20:] = math.inf
    for inputs, document_mask in ((similarities, mask), (clean, torch.ones_like(mask)), (padded, padding)):
        with torch.no_grad():
            fast = head(inputs, document_mask)
        reference = head(inputs.clone().requires_grad_(), document_mask).detach()
        torch.testing.assert_close(fast, reference, atol=1e-6, rtol=1e-5)
        assert fast.dtype == torch.float32 and not torch.isnan(fast).any()
        empty = ~document_mask.any(dim=-1)  # document 1 in the masked case
        assert (fast[empty] == -math.inf).all() and torch.isfinite(fast[~empty]).all()
        block = inputs.unsqueeze(0).expand(2, -1, -1, -1)[:, 1:4]  # a strided view, as the scorer passes
        with torch.no_grad():
            torch.testing.assert_close(head(block, document_mask[1:4]), reference[1:4].expand(2, -1, -1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("spec", ["maxsim", "topk:k=4", "softmax:tau=0.05", "lse:tau=0.1,length_corrected=true", "mean"])
def test_text_and_dict_forms_round_trip(spec):
    head = parse_head(spec)
    assert parse_head(head.spec()) == head
    assert parse_head(head.to_dict()) == head
    assert parse_head(str(head)) == head


def test_overrides_and_none_passthrough():
    assert parse_head("topk", k=8) == parse_head("topk:k=8")
    assert parse_head("topk:k=2", k=None) == parse_head("topk:k=2")


@pytest.mark.parametrize(
    "spec, words",
    [
        ("median", ["unknown pooling head 'median'", "maxsim", "topk", "softmax", "lse", "mean"]),
        ("topk:k=0", ["k must be an integer >= 1", "0"]),
        ("topk:k=1.5", ["k must be int"]),
        ("blend:weight=1.5", ["weight must be a number in [0, 1]", "1.5"]),
        ("blend:tau=0", ["tau must be a finite number > 0"]),
        ("blend:capacity=0", ["capacity must be an integer >= 1"]),
        ("softmax:tau=0", ["tau must be a finite number > 0", "0.0"]),
        ("softmax:tau=-1", ["tau must be a finite number > 0"]),
        ("lse:tau=0", ["tau must be a finite number > 0"]),
        ("topk:q=3", ["no parameter 'q'", "k"]),
        ("topk:4", ["key=value"]),
    ],
)
def test_bad_heads_give_clear_errors(spec, words):
    with pytest.raises(ValueError) as error:
        parse_head(spec)
    for word in words:
        assert word in str(error.value)


def test_a_user_head_registers_in_a_few_lines():
    @register_head("test_median")
    @dataclass(frozen=True)
    class MedianHead(PoolingHead):
        def __call__(self, similarities, document_mask):
            filled = similarities.float().masked_fill(~document_mask.unsqueeze(-2), float("nan"))
            return filled.nanmedian(dim=-1).values

    try:
        head = parse_head("test_median")
        assert head.spec() == "test_median" and not head.mergeable and "test_median" in available_heads()
        similarities = torch.tensor([[[1.0, 5.0, 2.0, 100.0]]])
        torch.testing.assert_close(head(similarities, torch.tensor([[True, True, True, False]])), torch.tensor([[2.0]]))
    finally:
        HEADS.pop("test_median", None)


@pytest.mark.parametrize("width", [1024, 1030, 1087, 2100])
def test_the_inference_top_k_gives_the_values_of_torch_topk(width):
    """topk's inference path on the CPU (the compiled candidate search, SharedWork.top_values) against torch.topk
    (its path while gradients are recorded), value for value: random rows, rows whose largest values share a chunk of
    16, ties, -inf (fewer than k valid patches), NaN, +inf, the largest values in the columns past 16 x (width // 16),
    masked patches, and the scorer's padded block read in place."""
    generator = torch.Generator().manual_seed(width)
    values = torch.randn(3, 40, width, generator=generator)
    values[0, 0, [5, 6, 7, 8]] = 10.0 + torch.arange(4.0)  # the four largest in one chunk
    values[0, 1, [7, 71]] = 9.0  # two of them tied
    values[0, 2] = values[0, 2].round()  # many ties
    values[0, 3] = -math.inf
    values[0, 3, [3, 67]] = 1.0  # two valid patches, the rest -inf
    values[0, 4] = -math.inf
    values[0, 5, 100] = math.nan
    values[0, 6, [3, 4, 67]] = math.nan
    values[0, 10, 5], values[0, 10, 6] = math.nan, 20.0  # NaN and the largest number in one chunk
    values[0, 7, [8, 72]] = math.inf
    values[0, 8, -1] = 50.0  # the largest among the last columns
    values[0, 9, [-1, -2, 1000]] = 50.0
    values[1, :, :] = values[1, :, :].round(decimals=1)
    mask = torch.rand(3, width, generator=generator) > 0.5
    mask[2, 10:] = False  # a document with fewer than k valid patches
    padded = torch.arange(width) < torch.tensor([width, width - 7, 3]).unsqueeze(-1)  # the scorer's padding: a prefix
    for k in (2, 3, 4, 8):
        head = parse_head(f"topk:k={k}")
        for document_mask in (torch.ones(3, width, dtype=torch.bool), mask, padded):
            with torch.no_grad():
                fast = head.partial(values, document_mask)[0]
            slow = head.partial(values.clone().requires_grad_(), document_mask)[0].detach()
            torch.testing.assert_close(fast, slow, rtol=0, atol=0, equal_nan=True)
            torch.testing.assert_close(head(values, document_mask),
                                       head(values.clone().requires_grad_(), document_mask).detach(), equal_nan=True)


def test_topk_between_1_and_the_length_is_the_mean_of_the_k_largest_valid_similarities():
    """An independent formula: sort every row's valid similarities by hand, average the first k (all of them when the
    document has fewer than k). Masked patches hold the largest similarities, so a head that reads them fails."""
    similarities = random_similarities(3, 4, 12, seed=7)
    mask = torch.rand(3, 12, generator=torch.Generator().manual_seed(8)) > 0.25
    similarities = similarities.masked_fill(~mask.unsqueeze(1), 5.0)  # padding above every real similarity
    valid_patches = [[j for j in range(12) if mask[b, j]] for b in range(3)]
    ks = (2, 3, 5, 7)
    # the data covers what the formula distinguishes: every document has padding and real patches; some have at
    # least k real patches, one has fewer than k (its value is the mean of all of them, not a sum over k)
    assert all(0 < len(valid) < 12 for valid in valid_patches)
    assert any(len(valid) < k for valid in valid_patches for k in ks)
    assert any(len(valid) >= max(ks) for valid in valid_patches)
    for k in ks:
        value = parse_head(f"topk:k={k}")(similarities, mask)
        for b, valid in enumerate(valid_patches):
            for t in range(4):
                row = sorted((float(similarities[b, t, j]) for j in valid), reverse=True)
                expected = sum(row[:k]) / min(k, len(row))
                assert value[b, t].item() == pytest.approx(expected, abs=1e-6), (k, b, t)


def _greedy_reference(similarities, document_mask, query_mask, capacity, candidates):
    """Exclusive matching written out plainly: every (token, candidate) pair in descending similarity (ties: lower
    token, then better candidate), kept while the token is free and the patch has room; a token with no room left
    among its candidates takes its best patch."""
    tokens, patches = similarities.shape
    lists = {}
    for t in range(tokens):
        ranked = sorted(((float(similarities[t, j]), j) for j in range(patches) if document_mask[j]), key=lambda p: (-p[0], p[1]))
        lists[t] = ranked[:candidates]
    pairs = sorted(((value, t, rank, j) for t in range(tokens) if query_mask[t] for rank, (value, j) in enumerate(lists[t])),
                   key=lambda p: (-p[0], p[1], p[2]))
    value_of, used = {}, {}
    for value, t, _, j in pairs:
        if t not in value_of and used.get(j, 0) < capacity:
            value_of[t], used[j] = value, used.get(j, 0) + 1
    return torch.tensor([value_of.get(t, lists[t][0][0] if lists[t] else -math.inf) for t in range(tokens)])


@pytest.mark.parametrize("capacity, candidates", [(1, 8), (1, 2), (2, 3), (3, 8), (1, 64)])
def test_exclusive_matching_equals_a_plain_greedy_reference_whole_and_in_parts(capacity, candidates):
    head = parse_head(f"exclusive:capacity={capacity},candidates={candidates}")
    generator = torch.Generator().manual_seed(capacity * 100 + candidates)
    for trial in range(30):
        tokens, patches = int(torch.randint(1, 9, (), generator=generator)), int(torch.randint(1, 14, (), generator=generator))
        similarities = torch.randn(2, tokens, patches, generator=generator)
        similarities[..., :2] += 1.0  # two patches every token likes: competition
        if trial % 4 == 0:
            similarities = similarities.round()  # ties
        document_mask = torch.rand(2, patches, generator=generator) > 0.2
        query_mask = torch.rand(2, tokens, generator=generator) > 0.2
        value = head(similarities, document_mask, query_mask)
        cut = int(torch.randint(0, patches + 1, (), generator=generator))
        merged = head.merge(head.partial(similarities[..., :cut], document_mask[..., :cut]),
                            head.partial(similarities[..., cut:], document_mask[..., cut:]))
        in_parts = head.finalize(merged, query_mask)
        for b in range(2):
            expected = _greedy_reference(similarities[b], document_mask[b], query_mask[b], capacity, candidates)
            keep = query_mask[b]
            torch.testing.assert_close(value[b][keep], expected[keep])
            torch.testing.assert_close(in_parts[b][keep], expected[keep])


def test_exclusive_matching_limits_what_one_planted_patch_can_take():
    """One spike that every token prefers: maxsim gives it to every token, capacity 1 to one token, capacity 2 to two."""
    similarities = torch.tensor([[[0.9, 0.5, 0.1, 0.0], [0.8, 0.1, 0.6, 0.0], [0.95, 0.2, 0.3, 0.4]]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    assert parse_head("maxsim")(similarities, mask)[0].tolist() == pytest.approx([0.9, 0.8, 0.95])
    assert parse_head("exclusive")(similarities, mask)[0].tolist() == pytest.approx([0.5, 0.6, 0.95])
    assert parse_head("exclusive:capacity=2")(similarities, mask)[0].tolist() == pytest.approx([0.9, 0.6, 0.95])
    # capacity >= tokens, or a single candidate, is maxsim
    for spec in ("exclusive:capacity=3", "exclusive:candidates=1"):
        assert parse_head(spec)(similarities, mask)[0].tolist() == pytest.approx([0.9, 0.8, 0.95])


def test_exclusive_gradient_lands_on_one_distinct_patch_per_query_token():
    similarities = random_similarities(3, 5, 9, seed=4).requires_grad_()
    similarities.data[..., 0] += 2.0  # every token's best patch is patch 0
    parse_head("exclusive").pool(similarities, torch.ones(3, 9, dtype=torch.bool), torch.ones(3, 5, dtype=torch.bool)).sum().backward()
    gradient = similarities.grad
    assert ((gradient != 0).sum(dim=-1) == 1).all()  # one patch per token, as maxsim
    assert ((gradient != 0).any(dim=1).sum(dim=-1) == 5).all()  # but five distinct patches (maxsim: one)


def test_exclusive_is_joint_and_ignores_masked_query_tokens():
    head = parse_head("exclusive")
    assert head.joint and head.mergeable
    similarities = torch.tensor([[[0.9, 0.1], [0.8, 0.7]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert head.pool(similarities, mask, torch.tensor([[True, True]]))[0].tolist() == pytest.approx([0.9, 0.7])
    # the first token masked (padding): it takes nothing, so the second keeps patch 0
    assert head.pool(similarities, mask, torch.tensor([[False, True]]))[0, 1].item() == pytest.approx(0.8)


@pytest.mark.parametrize("count", [1, 3, 8, 40])
def test_top_candidates_equal_a_full_stable_sort_with_ties_and_padding(count):
    """SharedWork.top_candidates (topk, then equal values in patch order; rows tied at the boundary sorted in full)
    equals the reference: a full stable descending sort, -inf / -1 where padded."""
    from lir_robust.scoring.pooling import SharedWork

    generator = torch.Generator().manual_seed(3)
    similarities = torch.randint(-4, 5, (3, 5, 7, 30), generator=generator).float() / 4  # many exact ties
    similarities[0, 0] = torch.randn(7, 30, generator=generator)  # rows without ties
    mask = torch.rand(3, 5, 1, 30, generator=generator) > 0.3
    mask[1, 2] = False  # a document without patches
    mask[2, 1, :, 5:] = False  # fewer patches than candidates
    values, positions = SharedWork(similarities, mask).top_candidates(count)
    filled = similarities.masked_fill(~mask, -math.inf)
    expected_values, expected_positions = filled.sort(dim=-1, descending=True, stable=True)
    take = min(count, 30)
    expected_values, expected_positions = expected_values[..., :take], expected_positions[..., :take]
    expected_positions = torch.where(torch.isfinite(expected_values), expected_positions, -1)
    assert torch.equal(values[..., :take], expected_values)
    assert torch.equal(positions[..., :take], expected_positions)
    assert (positions[..., take:] == -1).all() and torch.isneginf(values[..., take:]).all()


@pytest.mark.parametrize("weight", [0.0, 0.25, 0.5, 1.0])
def test_blend_is_the_weighted_sum_of_exclusive_and_softmax(weight):
    """blend = weight * exclusive + (1 - weight) * softmax(tau), token by token, the query mask reaching the exclusive
    part; weight 1 is exclusive, weight 0 is softmax; a document without any valid patch is -inf (never NaN)."""
    head = parse_head(f"blend:tau=0.3,weight={weight},capacity=1,candidates=4")
    similarities = random_similarities(3, 6, 20, seed=8)
    similarities[..., 0] += 1.5  # one patch every token prefers: the capacity limit matters
    document_mask = torch.rand(3, 20, generator=torch.Generator().manual_seed(9)) > 0.3
    document_mask[2] = False  # no valid patch
    query_mask = torch.tensor([True, True, False, True, True, True]).expand(3, 6)
    matched = parse_head("exclusive:capacity=1,candidates=4").pool(similarities, document_mask, query_mask)
    soft = parse_head("softmax:tau=0.3")(similarities, document_mask)
    value = head.pool(similarities, document_mask, query_mask)
    torch.testing.assert_close(value[:2], weight * matched[:2] + (1 - weight) * soft[:2])
    assert (value[2] == -math.inf).all() and not value.isnan().any()
    if 0 < weight < 1:  # the exclusive part is joint: masking a token changes what the others get
        assert not torch.allclose(value[:2], head.pool(similarities, document_mask, torch.ones(3, 6, dtype=torch.bool))[:2])


def test_blend_gradient_reaches_every_patch_and_a_planted_patch_takes_one_token_fully():
    """The softmax part spreads the gradient over every valid patch; the exclusive part gives one patch that every
    token prefers to one token only, so a planted patch lifts the blend less than it lifts maxsim."""
    similarities = random_similarities(2, 5, 9, seed=10).requires_grad_()
    head = parse_head("blend:tau=0.5,weight=0.5")
    head.pool(similarities, torch.ones(2, 9, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)).sum().backward()
    assert (similarities.grad != 0).all()
    clean = random_similarities(1, 5, 9, seed=11)
    planted = torch.cat([clean, torch.full((1, 5, 1), 3.0)], dim=-1)  # a spike every token matches at 3.0
    mask, tokens = torch.ones(1, 10, dtype=torch.bool), torch.ones(1, 5, dtype=torch.bool)
    gain = {spec: (parse_head(spec).pool(planted, mask, tokens) - parse_head(spec).pool(clean, mask[:, :9], tokens)).sum()
            for spec in ("maxsim", "exclusive", "blend:tau=0.5,weight=0.5")}
    assert gain["blend:tau=0.5,weight=0.5"] < gain["maxsim"] and gain["exclusive"] < gain["maxsim"]
