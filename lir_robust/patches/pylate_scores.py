"""PyLate's score contracts with a pooling head: :class:`PooledScores` is one callable for PyLate's losses
(stacked ``[Qd, N, Dt, H]``), its distillation loss (``.kd``), its evaluator (``[Q, D]``) and pairs (``.pairwise``).

Needs no ``pylate`` import (the contracts are tensor shapes); :mod:`lir_robust.patches.pylate` builds one with
:func:`~lir_robust.patches.pylate.pooled_scores` (after its version check) and documents their use with PyLate's losses and evaluator.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from lir_robust.scoring.pooling import PoolingHead, parse_head
from lir_robust.scoring.scorer import late_interaction_scores, pad_with_mask, padding_mask_from_values, paired_scores, score

__all__ = ["Embeddings", "PooledScores"]

Embeddings = Union[torch.Tensor, np.ndarray, Sequence[Any]]


# ---------------------------------------------------------------------------------------------------------------
# Scores: a pooling head in every PyLate score contract
# ---------------------------------------------------------------------------------------------------------------


def _as_tensor(embeddings: Embeddings, what: str) -> torch.Tensor:
    """A padded tensor from what PyLate passes: a tensor, a numpy array, or a list of ``[L_i, H]`` items (padded)."""
    if isinstance(embeddings, torch.Tensor):
        return embeddings
    if isinstance(embeddings, np.ndarray):
        return torch.from_numpy(embeddings)
    items = [torch.as_tensor(item) for item in embeddings]
    if not items:
        raise ValueError(f"{what} is empty")
    if items[0].dim() != 2:
        return torch.stack(items)
    return pad_with_mask(items)[0]


def _valid(embeddings: torch.Tensor, mask: Optional[Embeddings]) -> torch.Tensor:
    """Bool ``[..., L]``: rows that are real tokens: the given mask (if any) and not all zero (PyLate's padding)."""
    valid = padding_mask_from_values(embeddings.detach())
    if mask is not None:
        valid = valid & torch.as_tensor(mask, device=embeddings.device).to(torch.bool)
    return valid


class PooledScores:
    """A pooling head as a PyLate score function (PyLate 1.6's contracts; see the module docstring).

    ``head``: a head's text form ("topk:k=4"), a dict (pooling.json) or a PoolingHead. Scores are float32 on the
    inputs' device, differentiable when the inputs require gradients (training) and computed in memory-bounded chunks
    otherwise (evaluation). Zero rows are padding and are masked, as is everything a given mask marks False;
    ``backend`` (PyLate's kernel choice) is accepted and ignored.
    """

    def __init__(self, head: Union[str, PoolingHead, dict] = "maxsim"):
        self.head = parse_head(head)

    def __repr__(self) -> str:
        return f"pooled_scores({self.head.spec()!r})"

    def __call__(
        self,
        queries_embeddings: Embeddings,
        documents_embeddings: Embeddings,
        queries_mask: Optional[Embeddings] = None,
        documents_mask: Optional[Embeddings] = None,
        backend: Optional[str] = None,
    ) -> torch.Tensor:
        """Queries ``[Q, Tq, H]`` against documents ``[D, Td, H]`` -> ``[Q, D]`` (``colbert_scores``), or against
        stacked documents ``[Qd, N, Td, H]`` -> ``[Q, Qd * N]`` with column ``d * N + k`` = group d's k-th document
        (``ColBERTScores``, the contrastive losses' default). Masks: ``[Q, Tq]``, ``[D, Td]`` / ``[Qd, N, Td]``."""
        queries = _as_tensor(queries_embeddings, "queries_embeddings")
        documents = _as_tensor(documents_embeddings, "documents_embeddings")
        if queries.dim() != 3 or documents.dim() not in (3, 4):
            raise ValueError(
                f"expected queries [Q, Tq, H] and documents [D, Td, H] or [Qd, N, Td, H], got {tuple(queries.shape)} "
                f"and {tuple(documents.shape)}"
            )
        query_mask = _valid(queries, queries_mask)
        document_mask = _valid(documents, documents_mask)
        if documents.dim() == 4:  # [Qd, N, Td, H] -> [Qd * N, Td, H]: row d * N + k, the column order PyLate expects
            documents, document_mask = documents.flatten(0, 1), document_mask.flatten(0, 1)
        if torch.is_grad_enabled() and (queries.requires_grad or documents.requires_grad):
            return late_interaction_scores(queries, query_mask, documents, document_mask, self.head)
        return score(queries, documents, self.head, query_mask=query_mask, document_mask=document_mask).to(queries.device)

    def pairwise(self, queries_embeddings: Embeddings, documents_embeddings: Embeddings, backend: Optional[str] = None) -> torch.Tensor:
        """Query i against document i (``colbert_scores_pairwise``): ``[N, Tq, H] x [N, Td, H] -> [N]``; lists of
        ``[L_i, H]`` tensors are accepted too."""
        queries = _as_tensor(queries_embeddings, "queries_embeddings")
        documents = _as_tensor(documents_embeddings, "documents_embeddings")
        if queries.shape[0] != documents.shape[0]:
            raise ValueError(f"pairwise scores need as many queries as documents, got {queries.shape[0]} and {documents.shape[0]}")
        return paired_scores(queries, _valid(queries, None), documents, _valid(documents, None), self.head)

    def kd(
        self,
        queries_embeddings: Embeddings,
        documents_embeddings: Embeddings,
        queries_mask: Optional[Embeddings] = None,
        documents_mask: Optional[Embeddings] = None,
        backend: Optional[str] = None,
    ) -> torch.Tensor:
        """Each query against its own candidates (``colbert_kd_scores``, the Distillation loss's contract):
        queries ``[B, Tq, H]``, documents ``[B, n, Td, H]`` (masks ``[B, Tq]``, ``[B, n, Td]``) -> ``[B, n]``."""
        queries = _as_tensor(queries_embeddings, "queries_embeddings")
        documents = _as_tensor(documents_embeddings, "documents_embeddings")
        if documents.dim() != 4 or queries.shape[0] != documents.shape[0]:
            raise ValueError(f"expected queries [B, Tq, H] and documents [B, n, Td, H], got {tuple(queries.shape)} and {tuple(documents.shape)}")
        batch, candidates = documents.shape[:2]
        query_mask = _valid(queries, queries_mask)
        document_mask = _valid(documents, documents_mask)
        repeated = queries.unsqueeze(1).expand(-1, candidates, -1, -1).flatten(0, 1)  # [B * n, Tq, H]
        repeated_mask = query_mask.unsqueeze(1).expand(-1, candidates, -1).flatten(0, 1)
        scores = paired_scores(repeated, repeated_mask, documents.flatten(0, 1), document_mask.flatten(0, 1), self.head)
        return scores.view(batch, candidates)

