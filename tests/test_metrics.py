"""Metric values on hand-checked examples (trec_eval's linear-gain nDCG), MRR cut-off, budgets."""

from __future__ import annotations

import math

import pytest
import torch

from lir_robust.scoring.metrics import evaluate, gold_in_top, hijack_budget, median_budget, retained_share, run_from_scores


def test_hand_checked_values():
    qrels = {"q1": {"a": 2, "b": 1}, "q2": {"k": 1}, "q3": {"z": 0}}
    documents = ["x", "a", "y", "b"] + [f"n{i}" for i in range(10)] + ["k"]
    scores = torch.tensor([
        [4.0, 3.0, 2.0, 1.0] + [0.0] * 10 + [-1.0],  # q1: x a y b ...
        [0.0, 0.0, 0.0, 0.0] + [float(20 - i) for i in range(10)] + [1.0],  # q2: k at rank 11
        [0.0] * 15,
    ])
    run = run_from_scores(scores, ["q1", "q2", "q3"], documents)
    mean, per_query = evaluate(qrels, run)
    assert set(per_query) == {"q1", "q2"}  # q3 has no relevant document: not judged
    dcg5 = 2 / math.log2(3) + 1 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert per_query["q1"]["ndcg@5"] == pytest.approx(dcg5 / ideal, abs=1e-4)
    assert per_query["q1"]["ndcg@10"] == pytest.approx(dcg5 / ideal, abs=1e-4)
    assert per_query["q1"]["recall@1"] == 0.0 and per_query["q1"]["recall@5"] == 1.0
    assert per_query["q1"]["mrr@10"] == pytest.approx(0.5)
    # q2's only relevant document is at rank 11: MRR@10 = 0 (plain recip_rank would be 1/11), recall@100 = 1
    assert per_query["q2"]["mrr@10"] == 0.0 and per_query["q2"]["recall@10"] == 0.0
    assert per_query["q2"]["recall@100"] == 1.0
    assert mean["mrr@10"] == pytest.approx(0.25)


def test_against_pytrec_eval_directly():
    import pytrec_eval

    generator = torch.Generator().manual_seed(0)
    documents = [f"d{i}" for i in range(40)]
    queries = [f"q{i}" for i in range(5)]
    scores = torch.randn(5, 40, generator=generator)
    qrels = {q: {f"d{(3 * i + j) % 40}": 1 + j % 3 for j in range(4)} for i, q in enumerate(queries)}
    full = {q: {d: float(scores[i, j]) for j, d in enumerate(documents)} for i, q in enumerate(queries)}
    reference = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.5"}).evaluate(full)
    _, per_query = evaluate(qrels, run_from_scores(scores, queries, documents, depth=100))
    for q in queries:
        assert per_query[q]["ndcg@10"] == pytest.approx(reference[q]["ndcg_cut_10"])
        assert per_query[q]["recall@5"] == pytest.approx(reference[q]["recall_5"])


def test_ties_follow_trec_eval_order():
    # equal scores: trec_eval ranks by document id descending, so "b" before "a"
    run = run_from_scores(torch.tensor([[1.0, 1.0, 0.0]]), ["q"], ["a", "b", "c"], depth=1)
    assert list(run["q"]) == ["b"]


def test_budget_and_retained_share():
    scores0 = torch.tensor([[5.0, 1.0, 0.0], [0.0, 1.0, 5.0]])
    assert gold_in_top(scores0, [[0], [0]], depth=1).tolist() == [True, False]
    by_k = {0: torch.tensor([True, False, True]), 4: torch.tensor([True, False, False]), 16: torch.tensor([False, False, False])}
    assert hijack_budget(by_k).tolist() == [16.0, 0.0, 4.0]
    assert median_budget(torch.tensor([16.0, 0.0, math.inf])) == 16.0
    assert retained_share(0.6, 0.3) == pytest.approx(2.0)  # not capped
    assert math.isnan(retained_share(0.1, 0.0))
