"""Coherence-aware matching (``coherent``): typicality against a plain reference, beta = 0 is the inner head, an
injected outlier counts less, masks respected, the scorer / losses / sweep paths agree."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lir_robust.scoring.pooling import parse_head
from lir_robust.scoring.pooling.coherent import patch_typicality
from lir_robust.scoring.scorer import late_interaction_scores, pad_with_mask, paired_scores, score


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _typicality_by_definition(document: torch.Tensor, kind: str, m: int) -> list[float]:
    """Plain Python over one document's valid patches ``[L, D]``."""
    unit = [row / row.norm() for row in document.double()]
    out = []
    for j, patch in enumerate(unit):
        others = [other for i, other in enumerate(unit) if i != j]
        if not others:
            out.append(1.0)
        elif kind == "loo":
            mean = sum(others) / len(others)
            out.append(float(patch @ mean / mean.norm()))
        else:
            cosines = sorted((float(patch @ other) for other in others), reverse=True)[:m]
            out.append(sum(cosines) / len(cosines))
    return out


def _maxsim_by_definition(query: torch.Tensor, document: torch.Tensor, beta: float, kind: str, m: int) -> float:
    typical = _typicality_by_definition(document, kind, m)
    total = 0.0
    for token in query.double():
        total += max(float(token @ patch) - beta * (1 - t) for patch, t in zip(document.double(), typical))
    return total


@pytest.mark.parametrize("kind,m", [("loo", 4), ("topm", 2), ("topm", 20)])
def test_typicality_and_scores_equal_a_plain_reference_with_padding(kind, m):
    documents = [_unit(n, 8, seed=n) * (1 + n) for n in (1, 2, 5, 9)]  # not unit length: cosines, not dot products
    padded, mask = pad_with_mask(documents)
    padded[~mask] = math.nan  # padding never counts, whatever it holds
    typical = patch_typicality(padded, mask, kind, m)
    for d, document in enumerate(documents):
        expected = torch.tensor(_typicality_by_definition(document, kind, m), dtype=torch.float32)
        torch.testing.assert_close(typical[d, : len(document)], expected, atol=1e-5, rtol=1e-5)
    queries = [_unit(3, 8, seed=10), _unit(4, 8, seed=11)]
    head = f"coherent:beta=0.3,typicality={kind},m={m}"
    got = score(queries, documents, head)
    expected = torch.tensor([[_maxsim_by_definition(q, d, 0.3, kind, m) for d in documents] for q in queries])
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(score(queries, padded, head, document_mask=mask), got)  # padded form, NaN rows
    q, q_mask = pad_with_mask(queries)
    trained = late_interaction_scores(q, q_mask, padded.clone().requires_grad_(), mask, parse_head(head))  # training path
    torch.testing.assert_close(trained.detach(), got)


def test_masked_patches_are_not_neighbours():
    """Two opposite patches and three padded rows: with m = 1 each patch's typicality is its one real neighbour's
    cosine (-1), never a padded row's."""
    patch = _unit(1, 8, seed=3)[0]
    padded, mask = torch.stack([patch, -patch, patch, patch, patch]).unsqueeze(0), torch.tensor([[True, True, False, False, False]])
    for kind in ("loo", "topm"):
        torch.testing.assert_close(patch_typicality(padded, mask, kind, 1)[0, :2], torch.tensor([-1.0, -1.0]))


@pytest.mark.parametrize("inner", ["maxsim", "exclusive", "softmax:tau=0.1"])
def test_beta_zero_is_the_inner_head_exactly_on_every_path(inner):
    queries, documents = [_unit(4, 8, seed=1), _unit(2, 8, seed=2)], [_unit(n, 8, seed=n + 3) for n in (3, 6, 1)]
    head = parse_head(f"coherent:inner={inner.replace(',', '+')},beta=0")
    assert torch.equal(score(queries, documents, head), score(queries, documents, inner))
    q, q_mask = pad_with_mask(queries)
    d, d_mask = pad_with_mask(documents)
    assert torch.equal(late_interaction_scores(q, q_mask, d, d_mask, head), late_interaction_scores(q, q_mask, d, d_mask, parse_head(inner)))
    pairs = (q, q_mask, d[:2], d_mask[:2])
    assert torch.equal(paired_scores(*pairs, head), paired_scores(*pairs, parse_head(inner)))


@pytest.mark.parametrize("kind", ["loo", "topm"])
def test_an_injected_outlier_patch_is_down_weighted(kind):
    """A document of related patches (around one topic) gets a patch equal to a query token: the outlier is the least
    typical patch, and it raises the score much less under coherent matching than under maxsim."""
    topic = _unit(1, 16, seed=0)
    document = F.normalize(topic + 0.1 * torch.randn(12, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    query = _unit(3, 16, seed=5)
    attacked = torch.cat([document, query[:1]])
    typical = patch_typicality(attacked.unsqueeze(0), torch.ones(1, 13, dtype=torch.bool), kind, 4)[0]
    assert int(typical.argmin()) == 12 and float(typical[12]) < float(typical[:12].min()) - 0.3
    gain = {head: float(score([query], [attacked], head) - score([query], [document], head))
            for head in ("maxsim", f"coherent:beta=0.5,typicality={kind}")}
    assert gain["maxsim"] > 0.5 and gain[f"coherent:beta=0.5,typicality={kind}"] < gain["maxsim"] - 0.2


def test_text_form_errors_and_direct_calls():
    head = parse_head("coherent:inner=exclusive,beta=0.2")
    assert head.spec() == "coherent:inner=exclusive:capacity=1+candidates=8,beta=0.2,typicality=loo,m=4"
    assert parse_head(head.spec()) == head and head.joint and not head.mergeable and head.needs_documents
    assert parse_head("coherent:inner=exclusive:capacity=2+candidates=3").inner_head == parse_head("exclusive:capacity=2,candidates=3")
    for spec, words in [("coherent:beta=-1", "beta"), ("coherent:typicality=knn", "typicality"), ("coherent:m=0", "m must"),
                        ("coherent:inner=coherent", "cannot itself"), ("coherent:inner=nope", "unknown pooling head")]:
        with pytest.raises(ValueError, match=words):
            parse_head(spec)
    with pytest.raises(ValueError, match="needs the documents' vectors"):
        head(torch.zeros(1, 2, 3), torch.ones(1, 3, dtype=torch.bool))


def test_gradients_reach_the_documents_through_the_typicality():
    queries = _unit(2, 3, 8, seed=1)
    documents = _unit(2, 5, 8, seed=2).requires_grad_()
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    value = paired_scores(queries, torch.ones(2, 3, dtype=torch.bool), documents, mask, parse_head("coherent:beta=0.5,typicality=topm"))
    value.sum().backward()
    assert torch.isfinite(documents.grad).all() and float(documents.grad[1, 3:].abs().sum()) == 0.0
    assert float(documents.grad[0].abs().sum()) > 0
