"""lir_robust.training.corpus_bank: the hard-corpus defence's bank (built from an encoder, brute-force nearest
patches, the evaluation's hard kind, gold never a source, detached patches, one-line refusals)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lir_robust.attacks.generators import hard_negative_patches
from lir_robust.training import corpus_bank, defence
from lir_robust.training.pairs import TrainingPair

B, TQ, D = 3, 4, 8
LENGTHS = [5, 3, 6, 4, 2, 5, 7]  # seven bank documents


def _bank_and_queries(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    documents = [F.normalize(torch.randn(length, D, generator=generator), dim=-1) for length in LENGTHS]
    queries = F.normalize(torch.randn(B, TQ, D, generator=generator), dim=-1)
    query_mask = torch.ones(B, TQ, dtype=torch.bool)
    query_mask[1, 2:] = False
    queries = queries.masked_fill(~query_mask.unsqueeze(-1), 5.0)  # padding holds garbage, never searched with
    width = max(LENGTHS)
    padded = torch.zeros(len(LENGTHS), width, D)
    mask = torch.zeros(len(LENGTHS), width, dtype=torch.long)
    for index, document in enumerate(documents):
        padded[index, : document.shape[0]] = document
        mask[index, : document.shape[0]] = 1
    padded = padded.masked_fill(~mask.bool().unsqueeze(-1), 9.0)
    # two "tokenised" batches; the encoder looks the rows up (a stand-in for the model)
    inputs = [{"input_ids": torch.arange(0, 4), "attention_mask": mask[:4]},
              {"input_ids": torch.arange(4, 7), "attention_mask": mask[4:]}]
    bank = corpus_bank.encode_bank(lambda batch: (padded[batch["input_ids"]], batch["attention_mask"]), inputs, step=0)
    return bank, documents, queries, query_mask


def _brute_force(documents, query, gold, count):
    """The round robin written out: each valid token's allowed rows sorted by similarity, rank-major."""
    rows = torch.cat(documents)
    owner = torch.cat([torch.full((d.shape[0],), i) for i, d in enumerate(documents)])
    ranked = []
    for token in query:
        similarities = rows @ token
        ranked.append([int(r) for r in similarities.argsort(descending=True) if int(owner[r]) not in gold])
    chosen = []
    for rank in range(len(rows)):
        for per_token in ranked:
            if rank < len(per_token) and per_token[rank] not in chosen:
                chosen.append(per_token[rank])
    return chosen[:count]


@pytest.mark.parametrize("chunk_rows", [corpus_bank.CHUNK_ROWS, 5, 1])
def test_bank_patches_equal_a_brute_force_search_and_the_evaluations_hard_kind(chunk_rows):
    bank, documents, queries, query_mask = _bank_and_queries()
    assert bank.vectors.shape == (sum(LENGTHS), D) and torch.equal(bank.vectors, torch.cat(documents))
    assert bank.owner.tolist() == [i for i, length in enumerate(LENGTHS) for _ in range(length)]
    gold = torch.tensor([[0, -1], [2, 5], [6, -1]])
    count = 6
    patches, valid = corpus_bank.nearest_bank_patches(bank, queries, query_mask, gold, count, chunk_rows=chunk_rows)
    assert patches.shape == (B, count, D) and valid.all()
    for b in range(B):
        golds = [int(g) for g in gold[b] if g >= 0]
        expected = _brute_force(documents, queries[b][query_mask[b]], golds, count)
        assert torch.equal(patches[b], bank.vectors[expected])
        # the sweep's own hard kind (lir_robust.attacks.generators) picks the same rows
        sweep_rows = hard_negative_patches([queries[b][query_mask[b]]], documents, [golds], count)[0]
        assert sweep_rows.tolist() == expected


def test_gold_documents_are_never_the_source_and_too_few_rows_are_masked():
    bank, documents, queries, query_mask = _bank_and_queries(1)
    everything_but_4 = torch.tensor([[0, 1, 2, 3, 5, 6]] * B)  # only document 4 (2 rows) may give patches
    patches, valid = corpus_bank.nearest_bank_patches(bank, queries, query_mask, everything_but_4, 3)
    assert valid[:, :2].all() and not valid[:, 2].any() and torch.equal(patches[:, 2], torch.zeros(B, D))
    allowed = {tuple(row.tolist()) for row in documents[4]}
    assert all(tuple(patches[b, k].tolist()) in allowed for b in range(B) for k in range(2))
    for seed in range(5):  # random gold: no chosen row belongs to it
        bank, _, queries, query_mask = _bank_and_queries(seed)
        gold = torch.randint(0, len(LENGTHS), (B, 2), generator=torch.Generator().manual_seed(seed))
        patches, valid = corpus_bank.nearest_bank_patches(bank, queries, query_mask, gold, 4)
        for b in range(B):
            rows = [int((bank.vectors == patch).all(dim=1).nonzero()[0]) for patch in patches[b][valid[b]]]
            assert not set(bank.owner[rows].tolist()) & set(gold[b].tolist())


def test_bank_source_gold_holds_every_positive_of_the_query_text():
    pairs = [TrainingPair("q a", "doc one", "1"), TrainingPair("q b", "doc two", "2"), TrainingPair("q a", "doc three", "3"),
             TrainingPair("q c", "doc two", "2")]
    source = corpus_bank.BankSource(pairs)
    assert source.texts == ["doc one", "doc two", "doc three"]
    assert source.gold(pairs).tolist() == [[0, 2], [1, -1], [0, 2], [1, -1]]
    batch = source.collator(lambda chunk: {"query": len(chunk)})(pairs[:2])
    assert batch["query"] == 2 and batch["bank_gold"].tolist() == [[0, 2], [1, -1]]
    with pytest.raises(ValueError, match="need text documents"):
        corpus_bank.BankSource([TrainingPair("q", object(), "1")])


def test_hard_corpus_patches_are_detached_and_every_host_gets_them():
    generator = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(B, TQ, D, generator=generator), dim=-1).requires_grad_(True)
    documents = F.normalize(torch.randn(5, 6, D, generator=generator), dim=-1).requires_grad_(True)
    query_mask, document_mask = torch.ones(B, TQ, dtype=torch.bool), torch.ones(5, 6, dtype=torch.bool)
    taken = torch.randn(B, 2, D, requires_grad=True)
    valid = torch.tensor([[True, True], [True, False], [True, True]])
    plan = defence.InjectedNegatives.parse(["spike:1", "hard-corpus:2"], documents=2)
    assert plan.corpus_patches == 2 and defence.InjectedNegatives.parse(["spike:1"]).corpus_patches == 0
    with pytest.raises(ValueError, match="need corpus_patches"):
        defence.injected_negatives(queries, query_mask, documents, document_mask, 0, plan, (0,))
    negatives, mask = defence.injected_negatives(queries, query_mask, documents, document_mask, 0, plan, (0,), (taken, valid))
    assert negatives.shape == (B, 4, 6 + 2, D)
    for host in (2, 3):  # kind-major: spike copies 0-1, hard-corpus copies 2-3
        assert torch.equal(negatives[:, host, 6:].detach(), taken.detach().masked_fill(~valid.unsqueeze(-1), 0))
        assert torch.equal(mask[:, host, 6:], valid)
    negatives[:, 2:, 6:].sum().backward()
    assert taken.grad is None  # constants, like the spikes


@pytest.mark.parametrize("text, message", [("hard-corpus:0", "K an integer >= 1"), ("hard-corpus", "K an integer >= 1"),
                                           ("corpus:4", "KIND one of spike, hard, hard-corpus")])
def test_bad_hard_corpus_specs_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        defence.parse_injected_negative(text)
