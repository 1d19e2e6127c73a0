"""Injection kinds (shapes, sources, nearest hard patches, untouched gold documents) and the merged-state sweep."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lir_robust.diagnostics import hijack_rates
from lir_robust.injection import (
    FlatCorpus,
    InjectionSettings,
    PatchSource,
    brute_force_scores,
    corpus_patches,
    gaussian_patches,
    hard_negative_patches,
    inject,
    spike_patches,
    sweep_scores,
)
from lir_robust.pooling import parse_head
from lir_robust.scoring import pad_with_mask


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture(scope="module")
def toy():
    generator = torch.Generator().manual_seed(0)
    dim = 16
    documents = [F.normalize(torch.randn(int(n), dim, generator=generator), dim=-1) for n in torch.randint(3, 12, (9,), generator=generator)]
    queries = [F.normalize(torch.randn(int(n), dim, generator=generator), dim=-1) for n in (3, 5, 4)]
    gold = [[0, 1], [2], [3, 4, 5]]
    return queries, documents, gold


def test_generators_shapes_and_sources(toy):
    queries, documents, _ = toy
    patches = gaussian_patches(7, 16, torch.Generator().manual_seed(1))
    assert patches.shape == (7, 16) and torch.allclose(patches.norm(dim=-1), torch.ones(7))
    corpus = FlatCorpus.from_documents(documents)
    drawn = corpus_patches(corpus, 2, 200, torch.Generator().manual_seed(0))
    own = documents[2]
    assert drawn.shape == (200, 16)
    assert not any(torch.equal(row, own_row) for row in drawn for own_row in own)
    spikes = spike_patches(queries[1], 6, 3, torch.Generator().manual_seed(0))
    assert spikes.shape == (6, 16) and torch.allclose(spikes.norm(dim=-1), torch.ones(6))
    # every spike is the normalised mean of 3 distinct query tokens
    for spike in spikes:
        similarities = queries[1] @ spike
        assert any(
            torch.allclose(F.normalize(queries[1][list(c)].mean(0), dim=-1), spike, atol=1e-6)
            for c in __import__("itertools").combinations(range(5), 3)
        )


def test_hard_patches_are_the_nearest_non_gold_ones(toy):
    queries, documents, gold = toy
    corpus = FlatCorpus.from_documents(documents)
    owner = corpus.owner()
    for count in (1, 5, 9):
        chosen = hard_negative_patches(queries, corpus, gold, count)
        assert chosen.shape == (3, count)
        for query, indices in enumerate(chosen):
            allowed = ~torch.isin(owner, torch.tensor(gold[query]))
            similarities = queries[query] @ corpus.vectors.T  # [Tq, N]
            similarities[:, ~allowed] = -float("inf")
            ranking = similarities.argsort(dim=1, descending=True)  # [Tq, N]
            expected = []
            for patch in ranking.T.reshape(-1).tolist():  # round-robin over tokens
                if patch not in expected:
                    expected.append(patch)
            assert indices.tolist() == expected[:count]
            assert not torch.isin(owner[indices], torch.tensor(gold[query])).any()


def test_inject_appends_and_marks(toy):
    _, documents, _ = toy
    extra = _unit(4, 16)
    out, marks = inject(documents[:2], [extra, None])
    assert out[0].shape == (documents[0].shape[0] + 4, 16) and marks[0].sum() == 4 and marks[0][-4:].all()
    assert torch.equal(out[1], documents[1]) and not marks[1].any()


HEADS = ["maxsim", "topk:k=2", "softmax:tau=0.5", "lse:tau=0.1", "lse:tau=0.1,length_corrected=true", "mean"]


@pytest.mark.parametrize("kind", ["gaussian", "corpus", "hard", "spike"])
@pytest.mark.parametrize("target", ["non-gold", "all"])
@pytest.mark.parametrize("tile_elements", [1 << 19, 50])  # one tile of query tokens; tiles of a few tokens
def test_merged_sweep_equals_brute_force(toy, kind, target, tile_elements):
    queries, documents, gold = toy
    settings = InjectionSettings(seed=3, targets={kind: target})
    ks = [0, 1, 3, 6]
    result = sweep_scores(queries, documents, gold, HEADS, [kind], ks, settings, document_batch_size=4, show_progress=False,
                          token_tile_elements=tile_elements)
    for head in HEADS:
        spec = parse_head(head).spec()
        for k in ks:
            expected = brute_force_scores(queries, documents, gold, head, kind, k, 6, settings)
            assert torch.allclose(result.scores[spec][kind][k], expected, atol=1e-5), (head, k)
        if target == "non-gold":
            for query, indices in enumerate(gold):
                assert torch.equal(result.scores[spec][kind][6][query, indices], result.scores[spec][kind][0][query, indices])


def test_hijack_share_matches_diagnostics(toy):
    queries, documents, gold = toy
    settings = InjectionSettings(seed=1)
    result = sweep_scores(queries, documents, gold, ["maxsim"], ["hard", "gaussian"], [0, 2, 5], settings, show_progress=False,
                          token_tile_elements=40)
    corpus = FlatCorpus.from_documents(documents)
    for kind in ("hard", "gaussian"):
        source = PatchSource(kind, 5, settings, queries, corpus, gold)
        for query in range(len(queries)):
            for k in (2, 5):
                injected_docs, marks = [], []
                for document in range(len(documents)):
                    touched = settings.target(kind) == "all" or document not in gold[query]
                    out, mark = inject([documents[document]], [source.patches_for(query, document)[:k] if touched else None])
                    injected_docs += out
                    marks += mark
                padded, mask = pad_with_mask(injected_docs)
                injected, _ = pad_with_mask([m.unsqueeze(-1).float() for m in marks])
                expected = hijack_rates(queries[query].expand(len(documents), -1, -1), padded, injected[..., 0].bool(), document_mask=mask)
                assert torch.allclose(result.hijack[kind][k][query].float(), expected, atol=1e-3)


def test_document_subsets_fill_their_columns(toy):
    queries, documents, gold = toy
    full = sweep_scores(queries, documents, gold, ["softmax:tau=1.0"], ["corpus"], [0, 2], show_progress=False)
    part = sweep_scores(queries, documents, gold, ["softmax:tau=1.0"], ["corpus"], [0, 2], document_subset=[1, 4], show_progress=False)
    for k in (0, 2):
        assert torch.allclose(part.scores["softmax:tau=1.0"]["corpus"][k][:, [1, 4]], full.scores["softmax:tau=1.0"]["corpus"][k][:, [1, 4]])
