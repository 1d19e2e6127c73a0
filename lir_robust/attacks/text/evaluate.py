"""Scoring under a text attack and its metrics on the held-out queries.

Attacked documents are TEXT encoded by the model's own document encoder (``encoder.encode_documents``): only the
documents an attack changes or adds are encoded here; the untouched corpus is the cached clean embeddings, whose
scores (``clean [Nq, Nd]``) are computed once per head.

- new passages (corpus poisoning): success@k = share of queries with at least one passage in the top k, a passage
  ranking below every clean document that scores at least as high (ties go to the real document);
- edited documents (stuffing, insertion): the edited documents' scores replace their clean ones; hijack@10 = share of
  queries whose top 10 holds an edited document that was not in the clean top 10;
- both: nDCG@10 under attack / clean nDCG@10 (trec_eval through :mod:`lir_robust.scoring.metrics`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from lir_robust.scoring.metrics import evaluate, retained_share, run_from_scores
from lir_robust.scoring.scorer import score

__all__ = ["SUCCESS_DEPTHS", "passage_ranks", "passage_metrics", "success_by_count", "edited_scores", "edit_metrics", "ndcg10", "score_each"]

SUCCESS_DEPTHS = (1, 10, 100)
PASSAGE_PREFIX = "adversarial-passage-"


def ndcg10(scores: torch.Tensor, query_ids: Sequence[str], document_ids: Sequence[str],
           qrels: Mapping[str, Mapping[str, int]]) -> float:
    """Mean nDCG@10 of the ranking ``scores [Nq, Nd]`` (trec_eval)."""
    return evaluate({qid: qrels[qid] for qid in query_ids}, run_from_scores(scores, query_ids, document_ids))[0]["ndcg@10"]


def passage_ranks(clean: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
    """The best adversarial passage's rank per query: ``clean [Nq, Nd]``, ``passages [Nq, N]`` -> int ``[Nq]`` (1 = top).

    rank = 1 + number of clean documents scoring >= the passage's score (ties go to the real document)."""
    best = passages.max(dim=1).values
    return 1 + (clean >= best.unsqueeze(1)).sum(dim=1)


def success_by_count(clean: torch.Tensor, passages: torch.Tensor, depth: int = 10) -> list[float]:
    """success@depth with the first n of the N passages, n = 1..N (``passages [Nq, N]``): the curve against N."""
    return [float((passage_ranks(clean, passages[:, :count]) <= depth).float().mean())
            for count in range(1, passages.shape[1] + 1)]


def passage_metrics(clean: torch.Tensor, passages: torch.Tensor, query_ids: Sequence[str], document_ids: Sequence[str],
                    qrels: Mapping[str, Mapping[str, int]], clean_ndcg: float | None = None) -> dict[str, float]:
    """success@1/10/100, the median best-passage rank, and nDCG@10 clean / attacked / retained."""
    ranks = passage_ranks(clean, passages)
    result = {f"success@{depth}": float((ranks <= depth).float().mean()) for depth in SUCCESS_DEPTHS}
    result["median_passage_rank"] = float(ranks.float().median())
    ids = list(document_ids) + [f"{PASSAGE_PREFIX}{index}" for index in range(passages.shape[1])]
    clean_ndcg = ndcg10(clean, query_ids, document_ids, qrels) if clean_ndcg is None else clean_ndcg
    attacked = ndcg10(torch.cat([clean, passages], dim=1), query_ids, ids, qrels)
    result.update({"ndcg@10_clean": clean_ndcg, "ndcg@10_attacked": attacked,
                   "ndcg@10_retained": retained_share(attacked, clean_ndcg)})
    return result


def edited_scores(clean: torch.Tensor, targets: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """``clean [Nq, Nd]`` with ``edited [Nq, M]`` written at each query's edited documents ``targets [Nq, M]``."""
    return clean.scatter(1, targets, edited)


def edit_metrics(clean: torch.Tensor, targets: torch.Tensor, edited: torch.Tensor, query_ids: Sequence[str],
                 document_ids: Sequence[str], qrels: Mapping[str, Mapping[str, int]],
                 clean_ndcg: float | None = None) -> dict[str, float]:
    """hijack@10, the share of queries with an edited document in the top 10, and nDCG@10 clean / attacked /
    retained, for edits of ``targets [Nq, M]`` whose re-encoded documents score ``edited [Nq, M]``."""
    attacked = edited_scores(clean, targets, edited)
    depth = min(10, clean.shape[1])
    clean_top = clean.topk(depth, dim=1).indices
    attacked_top = attacked.topk(depth, dim=1).indices
    is_target = torch.zeros_like(clean, dtype=torch.bool).scatter(1, targets, True)
    was_top = torch.zeros_like(clean, dtype=torch.bool).scatter(1, clean_top, True)
    edited_in_top = is_target.gather(1, attacked_top)
    promoted = edited_in_top & ~was_top.gather(1, attacked_top)
    clean_ndcg = ndcg10(clean, query_ids, document_ids, qrels) if clean_ndcg is None else clean_ndcg
    after = ndcg10(attacked, query_ids, document_ids, qrels)
    return {"hijack@10": float(promoted.any(dim=1).float().mean()),
            "edited_in_top10": float(edited_in_top.any(dim=1).float().mean()),
            "ndcg@10_clean": clean_ndcg, "ndcg@10_attacked": after, "ndcg@10_retained": retained_share(after, clean_ndcg)}


def score_each(queries: Sequence[torch.Tensor], documents: Sequence[Sequence[torch.Tensor]], head) -> torch.Tensor:
    """Query i against its own documents ``documents[i]`` (M each): ``[Nq, M]``."""
    return torch.stack([score([query], list(own), head)[0] for query, own in zip(queries, documents)])

