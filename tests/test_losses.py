"""Pooled losses: colpali-engine's loss_func signature, masks, offsets, negatives, clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lir_robust.scoring.losses import PooledInfoNCELoss, PooledPairwiseCELoss, pooled_logits
from lir_robust.scoring.pooling import parse_head
from lir_robust.scoring.scorer import pad_with_mask, score

HEADS = ["maxsim", "topk:k=4", "softmax:tau=1.0", "lse:tau=0.1", "mean"]


def batch(size=4, dim=8, seed=0, query_lengths=(3, 5, 2, 4), document_lengths=(6, 2, 9, 4)):
    generator = torch.Generator().manual_seed(seed)
    make = lambda n: F.normalize(torch.randn(n, dim, generator=generator), dim=-1)  # noqa: E731
    queries = [make(n) for n in query_lengths[:size]]
    documents = [make(n) for n in document_lengths[:size]]
    return queries, documents


@pytest.mark.parametrize("head", HEADS)
def test_logits_match_the_scorer_and_ignore_zero_padding(head):
    queries, documents = batch()
    query_block, _ = pad_with_mask(queries)
    document_block, _ = pad_with_mask(documents)
    document_block = torch.cat([torch.zeros(4, 3, 8), document_block], dim=1)  # left padding, as pad_first=True
    logits = pooled_logits(parse_head(head), query_block, document_block, normalize_scores=False)
    torch.testing.assert_close(logits, score(queries, documents, head), atol=1e-5, rtol=0)


@pytest.mark.parametrize("loss_class", [PooledInfoNCELoss, PooledPairwiseCELoss])
@pytest.mark.parametrize("head", HEADS)
def test_keyword_and_positional_calls_agree_and_backpropagate(loss_class, head):
    queries, documents = batch()
    query_block = pad_with_mask(queries)[0].requires_grad_()
    document_block = pad_with_mask(documents)[0].requires_grad_()
    loss_func = loss_class(head)
    keyword = loss_func(query_embeddings=query_block, doc_embeddings=document_block, offset=0)
    positional = loss_func(query_block, document_block, None, 0)
    torch.testing.assert_close(keyword, positional)
    assert keyword.ndim == 0 and torch.isfinite(keyword)
    keyword.backward()
    assert torch.isfinite(document_block.grad).all() and document_block.grad.abs().sum() > 0


def test_infonce_is_cross_entropy_over_normalised_scores():
    queries, documents = batch()
    query_block = pad_with_mask(queries)[0]
    document_block = pad_with_mask(documents)[0]
    scores = score(queries, documents, "topk:k=2") / torch.tensor([3.0, 5, 2, 4]).unsqueeze(1)
    expected = F.cross_entropy(scores / 0.02, torch.arange(4))
    got = PooledInfoNCELoss("topk:k=2", temperature=0.02)(query_block, document_block)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_offset_picks_the_gathered_positive():
    """Documents gathered from 2 processes: this process's queries have positives at offset 2."""
    queries, documents = batch()
    query_block = pad_with_mask(queries[2:])[0]
    document_block = pad_with_mask(documents)[0]
    scores = score(queries[2:], documents, "maxsim") / torch.tensor([2.0, 4]).unsqueeze(1)
    expected = F.cross_entropy(scores / 0.02, torch.tensor([2, 3]))
    torch.testing.assert_close(PooledInfoNCELoss("maxsim")(query_block, document_block, offset=2), expected)


@pytest.mark.parametrize("head", HEADS)
def test_hard_negatives_join_the_candidates(head):
    queries, documents = batch()
    negatives, _ = batch(seed=1)
    query_block = pad_with_mask(queries)[0]
    document_block = pad_with_mask(documents)[0]
    negative_block = pad_with_mask(negatives)[0]  # [B, Td', D]: one negative per query
    logits = pooled_logits(parse_head(head), query_block, document_block, negative_block, normalize_scores=False)
    assert logits.shape == (4, 5)
    own_negative = torch.stack([score([q], [n], head)[0, 0] for q, n in zip(queries, negatives)])
    torch.testing.assert_close(logits[:, 4], own_negative, atol=1e-5, rtol=0)
    for loss_class in (PooledInfoNCELoss, PooledPairwiseCELoss):
        value = loss_class(head)(query_block, document_block, negative_block.unsqueeze(1).repeat(1, 2, 1, 1))
        assert torch.isfinite(value)


def test_pairwise_is_softplus_of_hardest_negative_minus_positive():
    queries, documents = batch()
    scores = score(queries, documents, "mean") / torch.tensor([3.0, 5, 2, 4]).unsqueeze(1)
    positives = scores.diagonal()
    hardest = scores.masked_fill(torch.eye(4, dtype=torch.bool), -math.inf).amax(dim=1)
    expected = F.softplus(hardest - positives).mean()
    got = PooledPairwiseCELoss("mean")(pad_with_mask(queries)[0], pad_with_mask(documents)[0])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="loss temperature must be > 0"):
        PooledInfoNCELoss("maxsim", temperature=0)
    with pytest.raises(ValueError, match="unknown pooling head 'best'"):
        PooledInfoNCELoss("best")
    loss_func = PooledInfoNCELoss("maxsim")
    with pytest.raises(ValueError, match=r"query dimension 8 != document dimension 4"):
        loss_func(torch.ones(2, 3, 8), torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match=r"doc_embeddings must be \[batch, tokens, dim\]"):
        loss_func(torch.ones(2, 3, 8), torch.ones(3, 8))
    documents = torch.ones(2, 3, 8)
    documents[1] = 0.0
    with pytest.raises(ValueError, match=r"doc_embeddings \[1\] have no valid tokens / patches"):
        loss_func(torch.ones(2, 3, 8), documents)
