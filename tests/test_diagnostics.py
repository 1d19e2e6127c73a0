"""Tests for lir_robust.scoring.diagnostics: Gini and friends, patch gradients, hijack rate."""

import math

import pytest
import torch
import torch.nn.functional as F

from lir_robust.scoring.diagnostics import (
    effective_patches,
    gini,
    gold_pair_gradient_concentration,
    hijack_rate,
    hijack_rates,
    pair_gradient_concentration,
    pair_patch_gradient_norms,
    top1_share,
)


def _brute_gini(values: torch.Tensor) -> float:
    n = values.numel()
    return float((values[:, None] - values[None, :]).abs().sum() / (2 * n * values.sum()))


def test_gini_one_hot_is_near_one_and_uniform_is_zero():
    one_hot = torch.zeros(256)
    one_hot[17] = 3.0
    assert gini(one_hot).item() == pytest.approx(1 - 1 / 256, abs=1e-6)
    assert gini(one_hot).item() > 0.99
    assert gini(torch.full((256,), 0.7)).item() == pytest.approx(0.0, abs=1e-6)
    assert gini(torch.zeros(8)).item() == 0.0  # no gradient at all counts as equal


def test_printed_variant_is_standard_minus_one_over_m():
    values = torch.rand(5, 32)
    assert torch.allclose(gini(values, printed=True), gini(values) - 1 / 32, atol=1e-6)
    assert gini(torch.ones(32), printed=True).item() == pytest.approx(-1 / 32, abs=1e-6)


def test_gini_matches_pairwise_definition_and_respects_mask():
    torch.manual_seed(0)
    values = torch.rand(4, 20)
    mask = torch.rand(4, 20) > 0.3
    expected = [_brute_gini(row[keep]) for row, keep in zip(values, mask)]
    assert torch.allclose(gini(values, mask), torch.tensor(expected), atol=1e-5)
    # masked entries do not matter, whatever they hold
    assert torch.allclose(gini(values.masked_fill(~mask, 100.0), mask), gini(values, mask), atol=1e-6)
    # printed variant uses the number of valid entries
    assert torch.allclose(gini(values, mask, printed=True), gini(values, mask) - 1 / mask.sum(-1), atol=1e-6)
    assert math.isnan(gini(torch.rand(3), torch.zeros(3, dtype=torch.bool)).item())


def test_top1_share_and_effective_patches():
    one_hot = torch.tensor([0.0, 2.0, 0.0, 0.0])
    assert top1_share(one_hot).item() == pytest.approx(1.0)
    assert effective_patches(one_hot).item() == pytest.approx(1.0)
    assert top1_share(torch.ones(8)).item() == pytest.approx(1 / 8)
    assert effective_patches(torch.ones(8)).item() == pytest.approx(8.0, rel=1e-5)
    assert effective_patches(torch.ones(8), torch.arange(8) < 5).item() == pytest.approx(5.0, rel=1e-5)


def _random_pair(seed: int, tq: int = 16, td: int = 32, dim: int = 16):
    generator = torch.Generator().manual_seed(seed)
    query = F.normalize(torch.randn(tq, dim, generator=generator), dim=-1)
    document = F.normalize(torch.randn(td, dim, generator=generator), dim=-1)
    return query, document


def test_maxsim_gradient_lands_on_argmax_patches():
    query, document = _random_pair(1)
    norms = pair_patch_gradient_norms(query, document, "maxsim")
    winners = set((query @ document.T).argmax(dim=-1).tolist())
    assert set(torch.nonzero(norms).flatten().tolist()) == winners


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_maxsim_gradient_gini_higher_than_softmax_tau_one(seed):
    query, document = _random_pair(seed)
    maxsim = pair_gradient_concentration(query, document, "maxsim").gini.item()
    softmax = pair_gradient_concentration(query, document, "softmax:tau=1.0").gini.item()
    assert maxsim > softmax + 0.2


def test_pair_gradients_ignore_padding_and_loss_scale():
    query, document = _random_pair(3)
    padded = torch.cat([document, torch.full((5, 16), float("nan"))])
    mask = torch.arange(37) < 32
    plain = pair_patch_gradient_norms(query, document, "topk:k=4")
    masked = pair_patch_gradient_norms(query, padded, "topk:k=4", document_mask=mask)
    assert torch.allclose(masked[:32], plain, atol=1e-6) and bool((masked[32:] == 0).all())
    scaled = pair_gradient_concentration(query, document, "topk:k=4", loss=lambda s: -3.0 * s).gini
    assert scaled.item() == pytest.approx(pair_gradient_concentration(query, document, "topk:k=4").gini.item(), abs=1e-6)


def test_gold_pair_concentration_shapes_and_ordering():
    generator = torch.Generator().manual_seed(4)
    queries = F.normalize(torch.randn(8, 16, 16, generator=generator), dim=-1)
    documents = F.normalize(torch.randn(8, 32, 16, generator=generator), dim=-1)
    maxsim = gold_pair_gradient_concentration(queries, documents, "maxsim")
    softmax = gold_pair_gradient_concentration(queries, documents, "softmax:tau=1.0")
    assert maxsim.gini.shape == (8,) and maxsim.gradient_norms.shape == (8, 32)
    assert maxsim.mean()["gini"] > softmax.mean()["gini"]


def test_hijack_rate_hand_built():
    # 4 query tokens along the axes; the document has 3 original patches and 2 injected ones.
    query = torch.eye(4)
    document = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],  # original: best for token 0 (ties with nothing)
            [0.0, 0.5, 0.0, 0.0],  # original: weak match for token 1
            [0.0, 0.0, 0.0, 0.9],  # original: best for token 3
            [0.0, 0.9, 0.0, 0.0],  # injected: beats patch 1 for token 1
            [0.0, 0.0, 0.8, 0.0],  # injected: only match for token 2
        ]
    )
    injected = torch.tensor([False, False, False, True, True])
    assert hijack_rate(query, document, injected).item() == pytest.approx(0.5)
    # invalid query tokens are not counted; padded patches never win
    query_mask = torch.tensor([True, True, False, True])
    assert hijack_rate(query, document, injected, query_mask=query_mask).item() == pytest.approx(1 / 3)
    document_mask = torch.tensor([True, True, True, False, True])
    assert hijack_rate(query, document, injected, document_mask=document_mask).item() == pytest.approx(0.25)
    batched = hijack_rates(
        torch.stack([query, query]), torch.stack([document, document]), torch.stack([injected, ~injected])
    )
    assert torch.allclose(batched, torch.tensor([0.5, 0.5]))


def test_gold_pair_scope_equals_pair_score_gradient_and_batch_differs():
    generator = torch.Generator().manual_seed(5)
    queries = F.normalize(torch.randn(6, 16, 16, generator=generator), dim=-1)
    documents = F.normalize(torch.randn(6, 32, 16, generator=generator), dim=-1)
    pair = gold_pair_gradient_concentration(queries, documents, "topk:k=4", scope="pair")
    own = pair_gradient_concentration(queries, documents, "topk:k=4")  # aligned pairs: the score gradient alone
    assert torch.allclose(pair.gini, own.gini, atol=1e-5)
    batch = gold_pair_gradient_concentration(queries, documents, "topk:k=4", scope="batch")
    assert not torch.allclose(batch.gradient_norms, pair.gradient_norms)
    with pytest.raises(ValueError, match="scope"):
        gold_pair_gradient_concentration(queries, documents, "maxsim", scope="row")
