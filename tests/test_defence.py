"""lir_robust.training.defence: injected negatives (hosts, spike and hard patches, gradients, determinism, the loss by hand)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lir_robust.training import defence
from lir_robust.scoring.losses import PooledInfoNCELoss
from lir_robust.scoring.scorer import score

B, TQ, N, TD, D = 4, 5, 6, 7, 8  # N > B: documents gathered from other processes too


def _batch(seed: int = 0, requires_grad: bool = False):
    """Unit-norm queries / documents with some padding (padded rows hold garbage, as a collator's may)."""
    generator = torch.Generator().manual_seed(seed)
    queries = F.normalize(torch.randn(B, TQ, D, generator=generator), dim=-1)
    documents = F.normalize(torch.randn(N, TD, D, generator=generator), dim=-1)
    query_mask = torch.ones(B, TQ, dtype=torch.bool)
    query_mask[1, 3:] = False
    query_mask[3, 4:] = False
    document_mask = torch.ones(N, TD, dtype=torch.bool)
    document_mask[2, 5:] = False
    document_mask[4, 3:] = False
    queries = queries.masked_fill(~query_mask.unsqueeze(-1), 7.0)
    documents = documents.masked_fill(~document_mask.unsqueeze(-1), 7.0)
    if requires_grad:
        queries.requires_grad_(True)
        documents.requires_grad_(True)
    return queries, query_mask, documents, document_mask


PLAN = defence.InjectedNegatives.parse(["spike:2", "hard:3"], documents=2)
OFFSET = 1  # this process's queries are documents 1..4 of the gathered batch


def _host_of(negative: torch.Tensor, documents, document_mask) -> int:
    """The batch document an injected negative was copied from (found by brute force: its first TD rows)."""
    found = [d for d in range(N) if torch.equal(negative[:TD][document_mask[d]], documents[d][document_mask[d]])]
    assert len(found) == 1
    return found[0]


def _appended(negative, mask, document_mask, host) -> torch.Tensor:
    """The injected patches of a negative: its valid rows after the host's TD rows."""
    assert torch.equal(mask[:TD], document_mask[host])
    return negative[TD:][mask[TD:]]


def test_shapes_masks_hosts_and_the_positive_never_receives_patches():
    queries, query_mask, documents, document_mask = _batch()
    negatives, mask = defence.injected_negatives(queries, query_mask, documents, document_mask, OFFSET, PLAN, (0, 0, 0))
    assert negatives.shape == (B, 4, TD + 3, D) and mask.shape == (B, 4, TD + 3) and mask.dtype == torch.bool
    for i in range(B):
        hosts = [_host_of(negatives[i, j], documents, document_mask) for j in range(4)]
        assert OFFSET + i not in hosts  # the positive is never a host
        assert hosts[:2] == hosts[2:] and hosts[0] != hosts[1]  # kind-major; each kind attacks the same 2 hosts
        counts = [int(mask[i, j, TD:].sum()) for j in range(4)]
        assert counts == [2, 2, 3, 3]
        assert not mask[i, :2, TD + 2:].any()  # spike:2 in a row of 3 patch slots: the third is padding
    # every document other than the positive is drawn as a host at some point
    seen = {(i, _host_of(n, documents, document_mask)) for key in range(30)
            for i, row in enumerate(defence.injected_negatives(queries, query_mask, documents, document_mask, OFFSET, PLAN, (0, 0, key))[0])
            for n in row}
    assert seen == {(i, d) for i in range(B) for d in range(N) if d != OFFSET + i}


def test_spike_patches_are_normalised_means_of_the_querys_own_tokens():
    queries, query_mask, documents, document_mask = _batch()
    plan = defence.InjectedNegatives.parse(["spike:4"], documents=1)
    negatives, mask = defence.injected_negatives(queries, query_mask, documents, document_mask, 0, plan, (3, 1, 2))
    for i in range(B):
        tokens = queries[i][query_mask[i]]
        means = {subset: F.normalize(tokens[list(subset)].mean(dim=0), dim=-1)
                 for subset in itertools.combinations(range(tokens.shape[0]), 3)}
        spikes = _appended(negatives[i, 0], mask[i, 0], document_mask, _host_of(negatives[i, 0], documents, document_mask))
        assert spikes.shape == (4, D)
        for spike in spikes:  # the mean of 3 distinct valid tokens of query i (never a padded row)
            assert any(torch.allclose(spike, mean, atol=1e-6) for mean in means.values())
        assert len({tuple(spike.tolist()) for spike in spikes}) > 1  # drawn apart


def _round_robin_by_brute_force(query, query_mask, documents, document_mask, banned, count):
    """Each valid token's allowed patches by descending similarity, taken rank after rank, token after token,
    repeats skipped: the first ``count`` (document, position) pairs."""
    lists = []
    for token in range(query.shape[0]):
        if not query_mask[token]:
            continue
        candidates = [(float(query[token] @ documents[d, p]), d, p) for d in range(N) if d not in banned
                      for p in range(TD) if document_mask[d, p]]
        lists.append([(d, p) for _, d, p in sorted(candidates, reverse=True)])
    taken = []
    for rank in range(max(map(len, lists))):
        for ranked in lists:
            if rank < len(ranked) and ranked[rank] not in taken:
                taken.append(ranked[rank])
    return taken[:count]


def test_hard_patches_are_the_round_robin_nearest_patches_of_other_batch_documents():
    queries, query_mask, documents, document_mask = _batch(seed=1)
    plan = defence.InjectedNegatives.parse(["hard:6"], documents=2)
    negatives, mask = defence.injected_negatives(queries, query_mask, documents, document_mask, OFFSET, plan, (0, 0, 0))
    for i in range(B):
        for j in range(2):
            host = _host_of(negatives[i, j], documents, document_mask)
            got = _appended(negatives[i, j], mask[i, j], document_mask, host)
            expected = _round_robin_by_brute_force(queries[i], query_mask[i], documents, document_mask, {OFFSET + i, host}, 6)
            assert torch.equal(got, torch.stack([documents[d, p] for d, p in expected]))


def test_hard_patches_are_masked_when_the_batch_has_too_few():
    queries, query_mask, documents, document_mask = _batch()
    plan = defence.InjectedNegatives.parse(["hard:40"], documents=1)
    negatives, mask = defence.injected_negatives(queries, query_mask, documents, document_mask, 0, plan, (0, 0, 0))
    for i in range(B):
        host = _host_of(negatives[i, 0], documents, document_mask)
        available = int(document_mask.sum()) - int(document_mask[i].sum()) - int(document_mask[host].sum())
        assert int(mask[i, 0, TD:].sum()) == min(40, available)
        assert torch.equal(negatives[i, 0, TD:][~mask[i, 0, TD:]], torch.zeros(40 - min(40, available), D))


def test_spikes_are_detached_and_hard_patches_keep_their_gradient():
    queries, query_mask, documents, document_mask = _batch(requires_grad=True)
    negatives, mask = defence.injected_negatives(queries, query_mask, documents, document_mask, OFFSET, PLAN, (0, 0, 0))
    # the spikes are built from the queries but detached: nothing of the negatives leads back to the queries
    assert torch.autograd.grad(negatives[:, :2, TD:].sum(), queries, allow_unused=True, retain_graph=True)[0] is None
    assert torch.autograd.grad(negatives.sum(), queries, allow_unused=True, retain_graph=True)[0] is None
    (gradient,) = torch.autograd.grad((negatives[:, 2:, TD:] * mask[:, 2:, TD:].unsqueeze(-1)).sum(), documents, retain_graph=True)
    taken = gradient.abs().sum(dim=-1) > 0  # [N, TD]: the document patches taken as hard patches receive gradient
    assert taken.any() and not (taken & ~document_mask).any()
    (host_gradient,) = torch.autograd.grad(negatives[:, :, :TD].sum(), documents)
    assert host_gradient.abs().sum() > 0  # so do the hosts' own patches


def test_deterministic_per_key_and_the_same_however_the_queries_are_split():
    queries, query_mask, documents, document_mask = _batch()
    first = defence.injected_negatives(queries, query_mask, documents, document_mask, OFFSET, PLAN, (5, 0, 3))
    again = defence.injected_negatives(queries, query_mask, documents, document_mask, OFFSET, PLAN, (5, 0, 3))
    other = defence.injected_negatives(queries, query_mask, documents, document_mask, OFFSET, PLAN, (5, 0, 4))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    # two processes holding two queries each (offsets 1 and 3 in the gathered batch) get the same negatives
    halves = [defence.injected_negatives(queries[s], query_mask[s], documents, document_mask, OFFSET + s.start, PLAN, (5, 0, 3))
              for s in (slice(0, 2), slice(2, 4))]
    assert torch.equal(torch.cat([h[0] for h in halves]), first[0]) and torch.equal(torch.cat([h[1] for h in halves]), first[1])
    state = torch.get_rng_state()
    defence.injected_negatives(queries, query_mask, documents, document_mask, OFFSET, PLAN, (5, 0, 3))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG (dropout) is untouched


def _loss_by_hand(queries, query_mask, documents, document_mask, negatives, negative_mask, temperature):
    """InfoNCE written out: maxsim logits by loops over (query token, patch), / valid query tokens, candidates = the
    gathered documents then the query's own negatives, cross-entropy as log-sum-exp minus the positive's logit."""

    def logit(i, patches, patch_mask):
        total = 0.0
        for t in range(TQ):
            if query_mask[i, t]:
                total += max(float(queries[i, t] @ patches[p]) for p in range(patches.shape[0]) if patch_mask[p])
        return total / int(query_mask[i].sum())

    losses = []
    for i in range(B):
        logits = [logit(i, documents[d], document_mask[d]) for d in range(N)]
        logits += [logit(i, negatives[i, j], negative_mask[i, j]) for j in range(negatives.shape[1])]
        scaled = [value / temperature for value in logits]
        peak = max(scaled)
        losses.append(peak + math.log(sum(math.exp(value - peak) for value in scaled)) - scaled[OFFSET + i])
    return sum(losses) / B


def test_the_loss_with_injected_negatives_is_higher_and_equals_a_hand_computation():
    queries, query_mask, documents, document_mask = _batch(seed=2)
    queries = queries.clone()
    queries[:, :, 0] += 2.0  # make the positives win the plain in-batch loss: every query near its positive
    for i in range(B):
        documents[OFFSET + i, 0] = queries[i, 0]
    queries, documents = F.normalize(queries, dim=-1), F.normalize(documents, dim=-1)
    negatives, negative_mask = defence.injected_negatives(queries, query_mask, documents, document_mask, OFFSET, PLAN, (0, 0, 0))
    loss_fn = PooledInfoNCELoss("maxsim", temperature=0.05)
    plain = float(loss_fn(queries, documents, None, OFFSET, query_mask=query_mask, doc_mask=document_mask))
    defended = float(loss_fn(queries, documents, negatives, OFFSET, query_mask=query_mask, doc_mask=document_mask,
                             neg_doc_mask=negative_mask))
    empty = torch.zeros(B, 0, TD, D), torch.zeros(B, 0, TD, dtype=torch.bool)
    assert plain == pytest.approx(_loss_by_hand(queries, query_mask, documents, document_mask, *empty, 0.05), rel=1e-5)
    assert defended == pytest.approx(_loss_by_hand(queries, query_mask, documents, document_mask, negatives, negative_mask, 0.05), rel=1e-5)
    assert defended > plain + 0.1


@pytest.mark.parametrize("head", ["exclusive", "softmax:tau=0.1", "topk:k=2"])
def test_every_head_scores_the_injected_negatives_as_the_scorer_does(head):
    """The loss's logits for the injected negatives equal lir_robust.scoring.scorer.score on the documents rebuilt by hand
    (host's valid patches + injected patches), for joint heads too; gradients are finite."""
    queries, query_mask, documents, document_mask = _batch(seed=3, requires_grad=True)
    negatives, negative_mask = defence.injected_negatives(queries, query_mask, documents, document_mask, OFFSET, PLAN, (0, 0, 0))
    loss_fn = PooledInfoNCELoss(head, temperature=0.05)
    loss = loss_fn(queries, documents, negatives, OFFSET, query_mask=query_mask, doc_mask=document_mask, neg_doc_mask=negative_mask)
    with torch.no_grad():
        logits = []
        for i in range(B):
            candidates = [documents[d][document_mask[d]] for d in range(N)]
            candidates += [negatives[i, j][negative_mask[i, j]] for j in range(PLAN.per_query)]
            logits.append(score([queries[i][query_mask[i]]], candidates, head)[0] / int(query_mask[i].sum()))
        targets = torch.arange(B) + OFFSET
        expected = F.cross_entropy(torch.stack(logits) / 0.05, targets)
        plain = loss_fn(queries, documents, None, OFFSET, query_mask=query_mask, doc_mask=document_mask)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() > plain.item()
    loss.backward()
    assert torch.isfinite(queries.grad).all() and torch.isfinite(documents.grad).all()


def test_with_injected_negatives_appends_to_hard_negatives_and_is_off_without_a_plan():
    queries, query_mask, documents, document_mask = _batch()
    mined = torch.randn(B, 2, 4, D)
    mined_mask = torch.ones(B, 2, 4, dtype=torch.bool)
    assert defence.with_injected_negatives(mined, mined_mask, queries, query_mask, documents, document_mask, 0, None, (0,)) == (mined, mined_mask)
    assert defence.with_injected_negatives(None, None, queries, query_mask, documents, document_mask, 0, None, (0,)) == (None, None)
    joined, joined_mask = defence.with_injected_negatives(mined, mined_mask, queries, query_mask, documents, document_mask, 0, PLAN, (0,))
    injected, injected_mask = defence.injected_negatives(queries, query_mask, documents, document_mask, 0, PLAN, (0,))
    assert joined.shape == (B, 2 + 4, TD + 3, D) and joined_mask.shape == (B, 6, TD + 3)
    assert torch.equal(joined[:, :2, :4], mined) and not joined_mask[:, :2, 4:].any() and joined_mask[:, :2, :4].all()
    assert torch.equal(joined[:, 2:], injected) and torch.equal(joined_mask[:, 2:], injected_mask)


@pytest.mark.parametrize("text, message", [
    ("gaussian:4", "KIND one of spike, hard"), ("spike", "K an integer >= 1"), ("hard:0", "K an integer >= 1"),
    ("spike:x", "K an integer >= 1"), ("spike:-1", "K an integer >= 1"),
])
def test_bad_injected_negatives_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        defence.parse_injected_negative(text)


def test_plan_checks():
    assert defence.parse_injected_negative(" Spike:4 ") == ("spike", 4)
    plan = defence.InjectedNegatives.parse(["spike:4", "hard:2"], documents=3)
    assert plan.spec() == ("spike:4", "hard:2") and plan.per_query == 6 and plan.max_patches == 4 and plan.spike_tokens == 3
    with pytest.raises(ValueError, match="each injected-negative kind once"):
        defence.InjectedNegatives.parse(["spike:4", "spike:2"])
    with pytest.raises(ValueError, match="documents must be an integer >= 1"):
        defence.InjectedNegatives.parse(["spike:4"], documents=0)
    queries, query_mask, documents, document_mask = _batch()
    with pytest.raises(ValueError, match="need at least 7 documents"):
        defence.injected_negatives(queries, query_mask, documents, document_mask, 0,
                                   defence.InjectedNegatives.parse(["spike:1"], documents=6), (0,))
