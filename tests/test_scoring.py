"""The scorer: padding and chunking never change a score, masks, accepted inputs, clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lir_robust.scoring.pooling import parse_head
from lir_robust.scoring.scorer import (
    as_multi_vectors,
    late_interaction_scores,
    pad_with_mask,
    padding_mask_from_values,
    paired_scores,
    score,
)

HEADS = ["maxsim", "topk:k=4", "softmax:tau=1.0", "softmax:tau=0.1", "lse:tau=0.1", "lse:tau=0.1,length_corrected=true", "exclusive",
         "mean", "blend:tau=0.5,weight=0.5"]
DIM = 16


def unit_vectors(count, dim=DIM, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, dim, generator=generator), dim=-1)


@pytest.fixture(scope="module")
def corpus():
    """3 queries of 3-6 tokens, 10 documents of 2-40 patches (lists of [L, D])."""
    queries = [unit_vectors(length, seed=index) for index, length in enumerate([3, 6, 5])]
    documents = [unit_vectors(length, seed=100 + index) for index, length in enumerate([7, 2, 40, 3, 12, 1, 25, 9, 4, 30])]
    return queries, documents


def reference_scores(queries, documents, head):
    """One (query, document) pair at a time, no padding at all."""
    head = parse_head(head)
    out = torch.empty(len(queries), len(documents))
    for i, query in enumerate(queries):
        for j, document in enumerate(documents):
            per_token = head((query @ document.T).unsqueeze(0), torch.ones(1, document.shape[0], dtype=torch.bool))
            out[i, j] = per_token.sum()
    return out


@pytest.mark.parametrize("head", HEADS)
def test_padding_and_chunking_never_change_a_score(corpus, head):
    queries, documents = corpus
    expected = reference_scores(queries, documents, head)
    for extra in (0, 1, 37, 500):
        for fill in (0.0, math.nan):
            length = max(d.shape[0] for d in documents) + extra
            padded = torch.full((len(documents), length, DIM), fill)
            for index, document in enumerate(documents):
                padded[index, : document.shape[0]] = document
            mask = torch.arange(length).unsqueeze(0) < torch.tensor([d.shape[0] for d in documents]).unsqueeze(1)
            for chunk in (1, 7, 128):
                given_mask = score(queries, padded, head, document_mask=mask, document_batch_size=chunk)
                torch.testing.assert_close(given_mask, expected, atol=1e-5, rtol=0)
                # Without a mask, zero rows (colpali-engine's padding) and NaN rows are padding too.
                inferred = score(queries, padded, head, document_batch_size=chunk)
                torch.testing.assert_close(inferred, expected, atol=1e-5, rtol=0)
                assert torch.isfinite(inferred).all()


@pytest.mark.parametrize("head", HEADS)
def test_query_padding_and_query_chunks(corpus, head):
    queries, documents = corpus
    expected = reference_scores(queries, documents, head)
    padded, mask = pad_with_mask(queries)
    padded = torch.cat([padded, torch.zeros(len(queries), 5, DIM)], dim=1)
    padded[:, -5:] = math.nan
    mask = torch.cat([mask, torch.zeros(len(queries), 5, dtype=torch.bool)], dim=1)
    for chunk in (1, 2, 64):
        got = score(padded, documents, head, query_mask=mask, query_batch_size=chunk, document_batch_size=3)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_output_is_float32_cpu_of_shape_queries_by_documents(corpus):
    queries, documents = corpus
    got = score([q.to(torch.bfloat16) for q in queries], [d.half() for d in documents], "softmax:tau=0.1")
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == (3, 10)
    torch.testing.assert_close(got, reference_scores(queries, documents, "softmax:tau=0.1"), atol=0.05, rtol=0.02)


def test_list_items_keep_exact_zero_rows_their_length_says_are_real():
    """Masks come from lengths: a zero row inside a list item is a real (if odd) patch."""
    query = [torch.ones(1, 2)]
    document = [torch.tensor([[-1.0, -1.0], [0.0, 0.0]])]
    assert score(query, document, "maxsim").item() == 0.0  # the zero patch (similarity 0) wins over -2
    padded = torch.stack(document)
    assert score(query, padded, "maxsim").item() == -2.0  # in a padded tensor without mask, a zero row is padding


def test_padding_mask_from_values_zero_and_nan_rows():
    padded = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [math.nan, 1.0]]])
    assert padding_mask_from_values(padded).tolist() == [[True, False, False]]


def test_late_interaction_and_paired_scores_agree_and_are_differentiable(corpus):
    queries, documents = corpus
    query_block, query_mask = pad_with_mask(queries)
    document_block, document_mask = pad_with_mask(documents[:3])
    document_block.requires_grad_()
    for head in map(parse_head, HEADS):
        all_pairs = late_interaction_scores(query_block, query_mask, document_block, document_mask, head)
        aligned = paired_scores(query_block, query_mask, document_block, document_mask, head)
        torch.testing.assert_close(aligned, all_pairs.diagonal(), atol=1e-5, rtol=0)
        (gradient,) = torch.autograd.grad(all_pairs.sum(), document_block)
        assert torch.isfinite(gradient).all()
        assert gradient[~document_mask].abs().sum() == 0  # padding gets no gradient


def test_as_multi_vectors_drops_padding():
    padded, mask = pad_with_mask([torch.ones(2, 3), torch.ones(4, 3)])
    vectors = as_multi_vectors(padded, mask)
    assert vectors.lengths.tolist() == [2, 4] and vectors.dim == 3


@pytest.mark.parametrize(
    "queries, documents, words",
    [
        ([torch.ones(2, 8)], [torch.ones(3, 16)], ["query embedding dimension 8", "document embedding dimension 16"]),
        ([torch.ones(2, 4), torch.zeros(0, 4)], [torch.ones(3, 4)], ["queries [1]", "no valid tokens / patches"]),
        (torch.cat([torch.ones(1, 3, 4), torch.zeros(1, 3, 4)]), [torch.ones(3, 4)], ["queries [1]", "no valid"]),
        ([torch.full((2, 4), float("nan"))], [torch.ones(3, 4)], ["queries [0]", "no valid"]),
        (torch.ones(4), [torch.ones(3, 4)], ["queries is a 1-D tensor", "expected 3-D"]),
        ([torch.ones(4)], [torch.ones(3, 4)], ["queries[0] has shape (4,)", "expected a 2-D [tokens, dim] tensor"]),
        ([torch.ones(2, 4)], [torch.ones(3, 4), torch.ones(4)], ["documents[1] has shape (4,)", "2-D"]),
        ([torch.ones(2, 4)], [], ["documents is empty"]),
    ],
)
def test_bad_inputs_give_clear_errors(queries, documents, words):
    with pytest.raises(ValueError) as error:
        score(queries, documents, "maxsim")
    for word in words:
        assert word in str(error.value)


def test_bad_head_and_batch_size_errors(corpus):
    queries, documents = corpus
    with pytest.raises(ValueError, match="unknown pooling head 'maxx'.*valid heads: maxsim"):
        score(queries, documents, "maxx")
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        score(queries, documents, document_batch_size=0)


@pytest.mark.parametrize("head", ["maxsim", "topk:k=4", "topk:k=3", "softmax:tau=0.1", "lse:tau=0.1",
                                  "lse:tau=0.1,length_corrected=true", "mean", "exclusive",
                                  "blend:tau=0.5,weight=0.5"])
def test_one_rule_for_nan_rows_and_documents_without_patches(head):
    """NaN rows are dropped in both input forms; a document without any valid patch scores -inf (never NaN), so it
    ranks below every real document, whatever the head."""
    torch.manual_seed(0)
    queries = [F.normalize(torch.randn(5, 8), dim=-1)]
    real = F.normalize(torch.randn(6, 8), dim=-1)
    with_nan_row = torch.cat([real, torch.full((1, 8), float("nan"))])
    documents = [real, torch.zeros(0, 8), torch.full((2, 8), float("nan")), with_nan_row]
    as_list = score(queries, documents, head)
    as_padded = score(queries, torch.nn.utils.rnn.pad_sequence(documents, batch_first=True), head)
    expected_real = score(queries, [real], head)[0, 0]
    for scores in (as_list, as_padded):
        assert not torch.isnan(scores).any()
        assert scores[0, 1] == -math.inf and scores[0, 2] == -math.inf
        torch.testing.assert_close(scores[0, 0], expected_real)
        torch.testing.assert_close(scores[0, 3], expected_real)  # the NaN row is dropped, the rest scores as usual
        assert scores[0].argsort(descending=True)[:2].tolist() in ([0, 3], [3, 0])


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_blend_at_inference_reads_each_row_once_and_gives_the_values_of_its_shared_state(monkeypatch, tau):
    """blend's inference path (exclusive's candidates and softmax's sums from one compiled read of each row of the
    scorer's strided [Nq, Nd, Tq, Td] view, the greedy once) equals finalize(partial(...)): padded documents whose
    masked patches hold inf and NaN (read in place, never copied), a document without patches, padded query tokens;
    a mask that is not a prefix (one masked copy); no mask."""
    from lir_robust.scoring.pooling import shared

    torch.manual_seed(0)
    storage = torch.randn(2, 4, 7, 1, 9)  # the scorer's layout [Nq, Tq, Nd, 1, Td], then its permuted view
    similarities = storage.squeeze(3).permute(0, 2, 1, 3)
    document_mask = torch.ones(7, 9, dtype=torch.bool)
    document_mask[1, 5:] = False
    document_mask[4, :] = False  # no patch at all
    document_mask[6, 2:] = False
    storage[:, :, 1, 0, 7] = float("inf")  # masked similarities may hold anything
    storage[:, :, 6, 0, 8] = float("nan")
    query_mask = torch.tensor([[True, True, True, True], [True, True, False, False]]).unsqueeze(1)
    head = parse_head(f"blend:tau={tau},weight=0.5")
    whole = head.finalize(head.partial(similarities, document_mask), query_mask)
    copies = []
    original = shared.SharedWork.filled
    monkeypatch.setattr(shared.SharedWork, "filled", property(lambda work: copies.append(1) or original.fget(work)))
    fast = head(similarities, document_mask, query_mask)
    assert not copies  # the padded block is read in place
    assert fast.shape == whole.shape == (2, 7, 4)
    assert torch.isneginf(fast[:, 4]).all() and torch.isneginf(whole[:, 4]).all()
    torch.testing.assert_close(fast, whole)
    holes = document_mask.clone()
    holes[0, 3] = holes[2, ::2] = False  # not a prefix: masked patches inside the document
    storage[:, :, 0, 0, 3] = float("nan")
    fast = head(similarities, holes, query_mask)
    assert copies
    torch.testing.assert_close(fast, head.finalize(head.partial(similarities, holes), query_mask))
    every = torch.ones(7, 9, dtype=torch.bool)
    clean = similarities.nan_to_num(posinf=3.0)
    torch.testing.assert_close(head(clean, every, query_mask), head.finalize(head.partial(clean, every), query_mask))


@pytest.mark.parametrize("spec", ["topk:k=4", "softmax:tau=0.1", "lse:tau=0.1,length_corrected=true"])
def test_compiled_heads_pool_the_whole_matrix_when_the_padding_is_a_prefix(monkeypatch, spec):
    """Heads that read the similarities in place through the compiled kernels (``compiled_at_inference``) get the
    scorer's whole matrix at once (its rows split over the threads) when each document's real patches come first, and
    cache-sized blocks otherwise (no whole-matrix masked copy); the scores are those of the differentiable path."""
    from lir_robust.scoring import scorer

    head = parse_head(spec)
    assert head.compiled_at_inference
    queries = torch.randn(3, 5, DIM, generator=torch.Generator().manual_seed(1))
    documents = torch.randn(6, 40, DIM, generator=torch.Generator().manual_seed(2))
    prefix = torch.arange(40) < torch.tensor([40, 3, 17, 40, 1, 25]).unsqueeze(-1)
    holes = prefix.clone()
    holes[0, ::3] = False
    query_mask = torch.ones(3, 5, dtype=torch.bool)
    calls = []
    original = type(head).__call__
    monkeypatch.setattr(type(head), "__call__", lambda self, s, m: calls.append(tuple(s.shape)) or original(self, s, m))
    monkeypatch.setattr(scorer, "HEAD_BLOCK_ELEMENTS", 5 * 40 * 2)  # blocks of two documents
    for mask, whole in ((prefix, True), (holes, False)):
        calls.clear()
        with torch.no_grad():
            fast = late_interaction_scores(queries, query_mask, documents, mask, head)
        assert (calls == [(3, 5, 6, 1, 40)]) == whole and len(calls) == (1 if whole else 9)
        reference = late_interaction_scores(queries, query_mask, documents.clone().requires_grad_(), mask, head).detach()
        torch.testing.assert_close(fast, reference)
