"""Injection kinds (shapes, sources, nearest hard patches, untouched gold documents) and the merged-state sweep."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from lir_robust.scoring.diagnostics import hijack_rates
from lir_robust.attacks.generators import corpus_patches, gaussian_patches, hard_negative_patches, inject, spike_patches
from lir_robust.attacks.kinds import InjectionSettings, parse_injection
from lir_robust.attacks.sources import PatchSource
from lir_robust.commands.cli import pool_blocks_count
from lir_robust.encoders.flat_corpus import FlatCorpus
from lir_robust.sweep.engine import InjectionSweep, sweep_scores
from lir_robust.sweep.merging import shared_partials
from lir_robust.sweep.ranked import RankedScores
from lir_robust.scoring.pooling import PoolingHead, parse_head, top_k_values
from lir_robust.scoring.scorer import pad_with_mask
from reference import brute_force_scores, injected_patches_by_definition, scores_of_injected_documents


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


@pytest.mark.parametrize("kind", ["gaussian", "corpus", "hard", "spike", "hard@2", "spike@3"])
@pytest.mark.parametrize("target", ["non-gold", "all"])
@pytest.mark.parametrize("tile_elements,pool_blocks", [(1 << 19, 64), (50, 3), (50, None)])  # tiles of a few tokens too
def test_merged_sweep_equals_the_injected_documents_scored_one_by_one(toy, kind, target, tile_elements, pool_blocks):
    queries, documents, gold = toy
    if "@" in kind and (target == "all" or pool_blocks != 64):
        pytest.skip("a few-document attack has its own target and no pools")
    settings = InjectionSettings(seed=3, targets={parse_injection(kind)[0]: target}, pool_blocks=pool_blocks)
    ks = [0, 1, 3, 6]
    result = sweep_scores(queries, documents, gold, HEADS, [kind], ks, settings, document_batch_size=4, show_progress=False,
                          token_tile_elements=tile_elements, merge_tile_elements=tile_elements)
    # the patches every document must receive, by the kinds' definitions (not PatchSource's code), then scored plainly
    source = PatchSource(kind, ks, settings, queries, FlatCorpus.from_documents(documents), gold)
    patches = injected_patches_by_definition(kind, ks, settings, queries, documents, gold, source)
    for head in HEADS:
        spec = parse_head(head).spec()
        for k in ks:
            expected = scores_of_injected_documents(queries, documents, patches, head, k)
            assert torch.allclose(result.scores[spec][kind][k], expected, atol=1e-5), (head, k)
        if target == "non-gold":
            for query, indices in enumerate(gold):
                assert torch.equal(result.scores[spec][kind][6][query, indices], result.scores[spec][kind][0][query, indices])
        if "@" in kind:  # only the attacked documents change
            changed = (result.scores[spec][kind][6] != result.scores[spec][kind][0]).sum(dim=1)
            assert (changed <= parse_injection(kind)[1]).all() and changed.sum() > 0


def test_few_document_attacks_give_each_document_its_own_patches(toy):
    queries, documents, gold = toy
    corpus = FlatCorpus.from_documents(documents)
    settings = InjectionSettings(seed=1)
    for kind in ("hard@3", "spike@3"):
        source = PatchSource(kind, [0, 2], settings, queries, corpus, gold)
        for query in range(len(queries)):
            attacked = source.attacked_documents[query].tolist()
            assert len(attacked) == 3 and not set(attacked) & set(gold[query])
            patches = [source.patches_for(query, document) for document in attacked]
            rows = torch.cat(patches)
            if kind.startswith("hard"):  # no hard patch shared between attacked documents
                assert torch.unique(rows, dim=0).shape[0] == rows.shape[0]
            elif queries[query].shape[0] >= 5:  # spikes drawn for each document (a 3-token query has one possible spike)
                assert not all(torch.equal(patches[0], other) for other in patches[1:])
            others = [d for d in range(len(documents)) if d not in attacked]
            assert all(source.patches_for(query, d) is None for d in others)
    wider = PatchSource("spike@5", [0, 2], settings, queries, corpus, gold)
    assert wider.attacked_documents[0][:3].tolist() == PatchSource("spike@3", [0, 2], settings, queries, corpus, gold).attacked_documents[0].tolist()
    for bad, words in (("gaussian@3", "few-document attack"), ("spike@0", "integer >= 1"), ("spike@x", "integer >= 1"),
                       ("spikes", "unknown injection kind")):
        with pytest.raises(ValueError, match=words):
            parse_injection(bad)


def test_hijack_share_matches_diagnostics(toy):
    queries, documents, gold = toy
    settings = InjectionSettings(seed=1)
    result = sweep_scores(queries, documents, gold, ["maxsim"], ["hard", "gaussian"], [0, 2, 5], settings, show_progress=False,
                          token_tile_elements=40)
    corpus = FlatCorpus.from_documents(documents)
    for kind in ("hard", "gaussian"):
        source = PatchSource(kind, [0, 2, 5], settings, queries, corpus, gold)
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


@dataclass(frozen=True)
class _Median(PoolingHead):
    """A mergeable head that is not built in (exercises shared_partials' fallback to head.partial)."""

    def partial(self, similarities, document_mask):
        filled = similarities.masked_fill(~document_mask.unsqueeze(-2), float("nan"))
        return (filled,)

    def merge(self, a, b):
        return (torch.cat([a[0], b[0]], dim=-1),)

    def finalize(self, state):
        return state[0].nanmedian(dim=-1).values


def test_shared_partials_equal_each_heads_own_partial():
    """Every head's summary through the shared work (partial_shared) equals its own partial: same finalised value."""
    generator = torch.Generator().manual_seed(5)
    similarities = torch.randn(3, 4, 7, generator=generator)
    mask = torch.rand(4, 7, generator=generator) > 0.3
    mask[0] = False  # a document with no real patch
    mask[1, :2] = True
    mask[1, 2:] = False  # fewer real patches than k
    heads = [parse_head(head) for head in HEADS + ["topk:k=3", "topk:k=1", "softmax:tau=0.1", "topk:k=9"]] + [_Median()]
    zeroed = similarities.masked_fill(~mask, 0.0)
    for given, values, zero in ((mask.unsqueeze(0), similarities, False), (None, similarities, False), (mask.unsqueeze(0), zeroed, True)):
        states, peak = shared_partials(heads, values, given, masked_are_zero=zero)
        own_mask = torch.ones(7, dtype=torch.bool) if given is None else mask
        for head, state in zip(heads, states):
            # head.partial's layout: [documents, tokens, patches] with a mask per document
            expected = head(similarities.transpose(0, 1), own_mask if given is not None else own_mask.expand(4, 7)).T
            assert torch.allclose(head.finalize(state), expected, atol=1e-6, equal_nan=True), head.spec()
        filled = similarities if given is None else similarities.masked_fill(~mask, -float("inf"))
        assert torch.equal(peak, filled.amax(dim=-1))


def test_pooled_document_patches(toy):
    queries, documents, gold = toy
    corpus = FlatCorpus.from_documents(documents)
    owner = corpus.owner()
    ks = [0, 1, 3, 6]
    for pool_blocks in (2, 5, None):
        settings = InjectionSettings(seed=0, pool_blocks=pool_blocks)
        for kind in ("gaussian", "corpus"):
            source = PatchSource(kind, ks, settings, queries, corpus, gold)
            patches = [source.document_patches(d) for d in range(len(documents))]
            assert all(p.shape == (6, 16) for p in patches)
            assert all(torch.allclose(p.norm(dim=-1), torch.ones(6)) for p in patches)
            shared = (source.assignment < (pool_blocks or 0))
            if pool_blocks is None:
                assert not shared.any()  # private draws only: no two documents share a patch
            if kind == "gaussian" and pool_blocks is not None:
                assert shared.all() and (source.assignment < pool_blocks).all()
                # documents taking the same block of an interval get the same patches there
                taken = source.assignment[:, 1]
                same = [(a, b) for a in range(len(documents)) for b in range(a) if taken[a] == taken[b]]
                assert same  # 9 documents, 2 or 5 blocks: some share
                a, b = same[0]
                assert torch.equal(patches[a][1:3], patches[b][1:3])
            if kind == "corpus":
                rows = corpus.vectors
                for d, drawn in enumerate(patches):
                    own = rows[owner == d]
                    assert not any(torch.equal(row, own_row) for row in drawn for own_row in own), (pool_blocks, d)
    with pytest.raises(ValueError, match="pool_blocks"):
        InjectionSettings(pool_blocks=0)
    assert pool_blocks_count("none") is None and pool_blocks_count("16") == 16
    with pytest.raises(argparse.ArgumentTypeError, match="integer >= 1 or 'none'"):
        pool_blocks_count("0")


def test_pooled_block_states_are_reused_across_document_subsets(toy):
    queries, documents, gold = toy
    sweep = InjectionSweep(queries, documents, gold, ["maxsim", "topk:k=2"], ["gaussian", "corpus"], [0, 2, 5],
                           InjectionSettings(pool_blocks=2), show_progress=False)
    whole = sweep.score()
    cached = dict(sweep._block_cache)
    parts = [sweep.score([0, 3, 5]), sweep.score([1, 2, 4, 6, 7, 8])]
    assert sweep._block_cache.keys() == cached.keys()  # computed once: the same objects are reused
    assert all(sweep._block_cache[key] is cached[key] for key in cached)
    with pytest.raises(ValueError, match="document_subset"):
        sweep.score([0, 0])
    with pytest.raises(ValueError, match="document_subset"):
        sweep.score([9])
    for spec in ("maxsim", "topk:k=2"):
        for kind in ("gaussian", "corpus"):
            for k in (0, 2, 5):
                joined = parts[0].scores[spec][kind][k] + parts[1].scores[spec][kind][k]
                assert torch.allclose(joined, whole.scores[spec][kind][k], atol=1e-6)


def test_heads_that_cannot_be_merged_run_by_brute_force(toy, caplog):
    from lir_robust.scoring.pooling import PoolingHead, masked_fill_float32

    @dataclass(frozen=True)
    class Median(PoolingHead):
        name = "test_sweep_median"

        def __call__(self, similarities, document_mask):
            return masked_fill_float32(similarities, document_mask, float("nan")).nanmedian(dim=-1).values

    queries, documents, gold = toy
    ks = [0, 1, 3]
    caplog.set_level("WARNING")
    result = sweep_scores(queries, documents, gold, [Median(), "maxsim"], ["gaussian", "spike", "hard@2"], ks, show_progress=False)
    assert "cannot be computed in parts" in caplog.text and "concatenated documents" in caplog.text
    for kind in ("gaussian", "spike", "hard@2"):
        for k in ks:
            expected = brute_force_scores(queries, documents, gold, Median(), kind, k, ks)
            assert torch.allclose(result.scores["test_sweep_median"][kind][k], expected, atol=1e-6), (kind, k)
            assert torch.allclose(result.scores["maxsim"][kind][k], brute_force_scores(queries, documents, gold, "maxsim", kind, k, ks), atol=1e-6)


def test_ranked_lists_equal_the_dense_scores_and_merge_in_any_order(toy, tmp_path):
    queries, documents, gold = toy
    heads, kinds, ks = ["maxsim", "softmax:tau=0.5"], ["gaussian", "hard", "spike@2"], [0, 1, 3]
    sweep = InjectionSweep(queries, documents, gold, heads, kinds, ks, show_progress=False, merge_tile_elements=20)
    dense = sweep.score()
    whole = sweep.rank(depth=4)
    parts = [sweep.rank([0, 4, 8], depth=4), sweep.rank([1, 2, 3], depth=4), sweep.rank([5, 6, 7], depth=4)]
    forward = RankedScores(3, 3, 4)
    for part in parts:
        forward.merge(part)
    backward = RankedScores(3, 3, 4)
    for part in reversed(parts):
        backward.merge(part)
    path = tmp_path / "segment.safetensors"
    forward.save(path)
    reloaded = RankedScores.load(path)
    for key in whole.values:
        head, injection, k = key.split("|")
        scores = dense.scores[head][injection or kinds[0]][int(k)]
        best = scores.topk(4, dim=1)
        assert torch.allclose(whole.values[key], best.values, atol=1e-6), key
        for other in (forward, backward, reloaded):
            assert torch.allclose(other.values[key], whole.values[key], atol=1e-6) and torch.equal(other.indices[key], whole.indices[key])
            assert torch.equal(other.hijack[key], whole.hijack[key])
        gold_scores = torch.stack([torch.cat([scores[row, g], torch.full((3 - len(g),), float("nan"))]) for row, g in enumerate(gold)])
        assert torch.allclose(forward.gold[key], gold_scores, atol=1e-6, equal_nan=True)
        if injection:
            assert torch.equal(whole.hijack[key], dense.hijack[injection][int(k)].gather(1, whole.indices[key]))
    for key, total in whole.hijack_total.items():
        assert torch.equal(forward.hijack_total[key], total) and torch.equal(backward.hijack_total[key], total)
    for injection, k in (("gaussian", 3), ("hard", 1)):  # mean share over the injected (query, document) pairs
        shares = dense.hijack[injection][k].double()
        touched = torch.ones_like(shares, dtype=torch.bool)
        if injection == "hard":
            for row, g in enumerate(gold):
                touched[row, g] = False
        total, pairs = whole.hijack_total[f"{injection}|{k}"].tolist()
        assert pairs == int(touched.sum()) and total == pytest.approx(float(shares[touched].sum()))


@pytest.mark.parametrize("bad, words", [
    ("dimension", "16-d tokens but the documents have 8-d"),
    ("gold index", "outside [0, 9)"),
    ("gold length", "gold lists the relevant documents of 2 queries"),
    ("empty query", ">= 1 token"),
])
def test_sweep_inputs_get_clear_errors(toy, bad, words):
    queries, documents, gold = toy
    if bad == "dimension":
        documents = [document[:, :8] for document in documents]
    elif bad == "gold index":
        gold = [[0], [9], [1]]
    elif bad == "gold length":
        gold = gold[:2]
    else:
        queries = [queries[0], queries[1][:0], queries[2]]
    with pytest.raises(ValueError, match=re.escape(words)):
        sweep_scores(queries, documents, gold, ["maxsim"], ["gaussian"], [0, 1], show_progress=False)


@pytest.mark.parametrize("shape", [(3, 5, 174), (4, 9), (2, 16), (6, 3, 100), (5, 8)])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_top_k_values_equal_torch_topk(shape, k):
    if shape[-1] < k:
        pytest.skip("fewer columns than k")
    values = torch.randn(*shape, generator=torch.Generator().manual_seed(k))
    values[..., ::7] = -float("inf")  # padding
    values[..., 1::5] = values[..., :1]  # ties
    expected = values.topk(k, dim=-1).values
    assert torch.equal(top_k_values(values, k), expected)


def test_a_document_scoring_minus_inf_keeps_its_place_before_padding_in_every_order():
    """A document without a valid patch scores -inf; in the kept lists it ranks after every real score and before
    padding (-1: the slots a query tile has not filled yet), in a block or through a merge."""
    from lir_robust.sweep.ranked import RankedScores

    minus_inf = -float("inf")

    def ranked(blocks):
        kept = RankedScores(2, 1, depth=3)
        for rows, columns, scores in blocks:
            kept.add_block("maxsim||0", rows, torch.tensor(columns), torch.tensor(scores), None,
                           torch.full((len(scores), 1), -1))
        return kept

    first_query = (slice(0, 1), [2, 3, 4], [[0.5, 0.1, 0.2]])  # query 1's row is padded to width 3 meanwhile
    empty_document = (slice(1, 2), [7], [[minus_inf]])
    in_blocks = ranked([first_query, empty_document])
    merged = ranked([first_query]).merge(ranked([empty_document]))
    for kept in (in_blocks, merged):
        assert kept.indices["maxsim||0"].tolist() == [[2, 4, 3], [7, -1, -1]], kept.indices


def test_coherent_matching_runs_by_brute_force_on_the_injected_documents(toy):
    """The typicality of a document's patches depends on the injected ones, so the sweep scores ``coherent`` on the
    concatenated documents; the K = 0 pass scores a whole tile of queries in one call and must agree too."""
    queries, documents, gold = toy
    ks, head = [0, 1, 3], "coherent:inner=exclusive,beta=0.4,typicality=topm,m=2"
    result = sweep_scores(queries, documents, gold, [head, "maxsim"], ["spike", "hard"], ks, show_progress=False)
    spec = parse_head(head).spec()
    for kind in ("spike", "hard"):
        for k in ks:
            expected = brute_force_scores(queries, documents, gold, head, kind, k, ks)
            assert torch.allclose(result.scores[spec][kind][k], expected, atol=1e-6), (kind, k)
