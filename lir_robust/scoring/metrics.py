"""Retrieval metrics from pytrec_eval (trec_eval's own code), plus the sweep's derived measures.

- :func:`evaluate`: nDCG@5, nDCG@10, Recall@1/5/10/100 and MRR@10 per query and on average. MRR@10 is trec_eval's
  ``recip_rank`` on the run cut to each query's top 10 (trec_eval has no cut-off for it), so a query whose first
  relevant document is below rank 10 scores 0. Runs are ordered as trec_eval orders them: score descending, ties
  by document id descending.
- :func:`retained_share`: metric at K / metric at K = 0 (not capped: above 1 when injection *helps*).
- :func:`hijack_budget`: per query, the smallest K of the grid at which no gold document is left in the top 10.
- Hijack rate and gradient concentration live in :mod:`lir_robust.scoring.diagnostics`.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

__all__ = [
    "METRIC_NAMES",
    "run_from_scores",
    "run_from_candidates",
    "gold_in_top_from_candidates",
    "evaluate",
    "retained_share",
    "gold_in_top",
    "hijack_budget",
    "median_budget",
]

METRIC_NAMES = ("ndcg@5", "ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100", "mrr@10")
_RENAME = {  # trec_eval measure -> our names
    "ndcg_cut_5": "ndcg@5",
    "ndcg_cut_10": "ndcg@10",
    "recall_1": "recall@1",
    "recall_5": "recall@5",
    "recall_10": "recall@10",
    "recall_100": "recall@100",
}
RUN_DEPTH = 100  # deepest cut-off any metric needs


def run_from_scores(
    scores: torch.Tensor, query_ids: Sequence[str], document_ids: Sequence[str], depth: int = RUN_DEPTH
) -> dict[str, dict[str, float]]:
    """Scores ``[Nq, Nd]`` -> a trec run ``{qid: {docid: score}}`` holding each query's top ``depth`` documents.

    The top is taken in trec_eval's order (score descending, ties by document id descending), so cutting the run
    changes no metric at a cut-off <= depth.
    """
    scores = scores.float()
    if scores.shape != (len(query_ids), len(document_ids)):
        raise ValueError(f"scores {tuple(scores.shape)} do not match {len(query_ids)} queries x {len(document_ids)} documents")
    margin = min(scores.shape[1], depth + 32)  # candidates; exact unless > 32 ties straddle the cut
    values, indices = scores.topk(margin, dim=1)
    run: dict[str, dict[str, float]] = {}
    for row, qid in enumerate(query_ids):
        pairs = [(float(value), document_ids[index]) for value, index in zip(values[row].tolist(), indices[row].tolist())]
        pairs.sort(key=lambda pair: (pair[0], pair[1]), reverse=True)
        run[qid] = {docid: value for value, docid in pairs[:depth]}
    return run


def run_from_candidates(
    values: torch.Tensor, indices: torch.Tensor, query_ids: Sequence[str], document_ids: Sequence[str], depth: int = RUN_DEPTH
) -> dict[str, dict[str, float]]:
    """Each query's candidate documents (``values [Nq, C]`` best first, ``indices [Nq, C]`` into ``document_ids``, -1 =
    none) -> a trec run of its top ``depth`` in trec_eval's order (score descending, ties by document id descending).

    Equals :func:`run_from_scores` on the full score matrix when the candidates are each query's best C > depth."""
    if values.shape != indices.shape or values.shape[0] != len(query_ids):
        raise ValueError(f"candidates {tuple(values.shape)} / {tuple(indices.shape)} do not match {len(query_ids)} queries")
    run: dict[str, dict[str, float]] = {}
    for row, qid in enumerate(query_ids):
        pairs = [(float(value), document_ids[index]) for value, index in zip(values[row].tolist(), indices[row].tolist())
                 if index >= 0]
        pairs.sort(key=lambda pair: (pair[0], pair[1]), reverse=True)
        run[qid] = {docid: value for value, docid in pairs[:depth]}
    return run


def gold_in_top_from_candidates(values: torch.Tensor, gold_scores: torch.Tensor, depth: int = 10) -> torch.Tensor:
    """:func:`gold_in_top` from each query's best scores ``values [Nq, C]`` (descending, C >= depth or every document)
    and its gold documents' scores ``gold_scores [Nq, G]`` (NaN = no gold document there): bool ``[Nq]``."""
    depth = min(depth, values.shape[1])
    cut = values[:, depth - 1].unsqueeze(1)  # the depth-th best score (-inf when there are fewer documents)
    return (torch.nan_to_num(gold_scores, nan=-math.inf) >= cut).any(dim=1) & ~torch.isnan(gold_scores).all(dim=1)


def _top(run_row: Mapping[str, float], depth: int) -> dict[str, float]:
    ordered = sorted(run_row.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return dict(ordered[:depth])


def evaluate(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(mean over the qrels' judged queries, per query) of :data:`METRIC_NAMES`, computed by pytrec_eval.

    A judged query missing from the run scores 0 on everything (trec_eval's ``-c``); run queries without qrels are
    ignored. Judged = at least one document with grade > 0.
    """
    import pytrec_eval

    judged = {qid: {docid: int(grade) for docid, grade in row.items()} for qid, row in qrels.items()
              if any(grade > 0 for grade in row.values())}
    if not judged:
        raise ValueError("no judged query (grade > 0) in the qrels")
    cut_run = {qid: {docid: float(value) for docid, value in run[qid].items()} for qid in judged if run.get(qid)}
    main = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.5,10", "recall.1,5,10,100"}).evaluate(cut_run)
    top10 = {qid: _top(row, 10) for qid, row in cut_run.items()}
    reciprocal = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10)
    per_query: dict[str, dict[str, float]] = {}
    for qid in judged:
        values = {name: 0.0 for name in METRIC_NAMES}
        for measure, value in main.get(qid, {}).items():
            if measure in _RENAME:
                values[_RENAME[measure]] = float(value)
        values["mrr@10"] = float(reciprocal.get(qid, {}).get("recip_rank", 0.0))
        per_query[qid] = values
    mean = {name: sum(row[name] for row in per_query.values()) / len(per_query) for name in METRIC_NAMES}
    return mean, per_query


def retained_share(value: float, baseline: float) -> float:
    """``value / baseline`` (NaN when the baseline is 0); deliberately not capped at 1."""
    return value / baseline if baseline > 0 else math.nan


def gold_in_top(
    scores: torch.Tensor, gold: Sequence[Sequence[int]], depth: int = 10
) -> torch.Tensor:
    """Whether any gold document is among each query's top ``depth``: scores ``[Nq, Nd]`` -> bool ``[Nq]``.

    ``gold[i]`` lists query i's gold document indices. Ties at the cut count for the gold document (optimistic), so a
    budget is never reported smaller than it is.
    """
    depth = min(depth, scores.shape[1])
    cut = scores.topk(depth, dim=1).values[:, -1]  # [Nq]
    found = torch.zeros(scores.shape[0], dtype=torch.bool)
    for row, indices in enumerate(gold):
        if len(indices):
            found[row] = bool((scores[row, list(indices)] >= cut[row]).any())
    return found


def hijack_budget(gold_in_top_by_k: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """Per query, the smallest K whose top 10 holds no gold document: ``{K: bool [Nq]}`` -> float ``[Nq]``.

    ``inf`` when every K of the grid leaves a gold document in the top 10; 0 when none is there even at K = 0.
    """
    ks = sorted(gold_in_top_by_k)
    budget = torch.full(gold_in_top_by_k[ks[0]].shape, math.inf)
    for k in reversed(ks):
        budget = torch.where(~gold_in_top_by_k[k], torch.tensor(float(k)), budget)
    return budget


def median_budget(budget: torch.Tensor) -> float:
    """Median over queries (lower median; ``inf`` when more than half never lose their gold documents)."""
    if budget.numel() == 0:
        return math.nan
    return float(budget.sort().values[(budget.numel() - 1) // 2])
