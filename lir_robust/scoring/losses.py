"""Pooled contrastive losses for late-interaction training, with the pooling head as a parameter.

The call signature matches colpali-engine's ``loss_func``:
``forward(query_embeddings, doc_embeddings, neg_doc_embeddings=None, offset=0)``, positional or keyword, so an
instance can be passed to colpali-engine's ContrastiveTrainer as it is. Optional keyword masks let text encoders pass
their attention masks; without them, zero (or NaN) rows are padding, as in colpali-engine.

Shapes:
    query_embeddings     [B, Tq, D]            the local batch of queries
    doc_embeddings       [N, Td, D]            positive documents; N >= B when gathered across processes, and the
                                               positive of query i is document ``offset + i``
    neg_doc_embeddings   [B, Td', D] or [B, n_neg, Td', D]   optional hard negatives of each query
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lir_robust.scoring.pooling import PoolingHead, parse_head
from lir_robust.scoring.scorer import late_interaction_scores, paired_scores, padding_mask_from_values

__all__ = ["PooledInfoNCELoss", "PooledPairwiseCELoss", "pooled_logits"]


def _mask(embeddings: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return padding_mask_from_values(embeddings.detach()) if mask is None else mask.to(torch.bool)


def _check_not_empty(name: str, mask: torch.Tensor) -> None:
    """Raise when an item of a ``[N, L]`` mask has no valid row (its scores would be -inf or NaN)."""
    empty = (~mask.any(dim=-1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"{name} {empty[:10]} have no valid tokens / patches (all rows zero, NaN or masked); "
            "every query and document needs at least one"
        )


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"loss temperature must be > 0, got {temperature!r}")


def pooled_logits(
    head: PoolingHead,
    query_embeddings: torch.Tensor,
    doc_embeddings: torch.Tensor,
    neg_doc_embeddings: torch.Tensor | None = None,
    *,
    normalize_scores: bool = True,
    query_mask: torch.Tensor | None = None,
    doc_mask: torch.Tensor | None = None,
    neg_doc_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scores of every query against every positive document, then against its own negatives: ``[B, N + n_neg]``.

    With ``normalize_scores`` each row is divided by the query's number of valid tokens (as colpali-engine does), so
    the logit scale does not depend on query length.
    """
    for name, tensor in (("query_embeddings", query_embeddings), ("doc_embeddings", doc_embeddings)):
        if tensor.dim() != 3:
            raise ValueError(f"{name} must be [batch, tokens, dim], got shape {tuple(tensor.shape)}")
    if query_embeddings.shape[-1] != doc_embeddings.shape[-1]:
        raise ValueError(
            f"query dimension {query_embeddings.shape[-1]} != document dimension {doc_embeddings.shape[-1]}"
        )
    query_mask = _mask(query_embeddings, query_mask)
    doc_mask = _mask(doc_embeddings, doc_mask)
    _check_not_empty("query_embeddings", query_mask)
    _check_not_empty("doc_embeddings", doc_mask)
    logits = late_interaction_scores(query_embeddings, query_mask, doc_embeddings, doc_mask, head)  # [B, N]
    if neg_doc_embeddings is not None:
        if neg_doc_embeddings.dim() == 3:
            neg_doc_embeddings = neg_doc_embeddings.unsqueeze(1)
            neg_doc_mask = None if neg_doc_mask is None else neg_doc_mask.unsqueeze(1)
        batch, n_neg, length, dim = neg_doc_embeddings.shape
        if batch != query_embeddings.shape[0]:
            raise ValueError(f"{batch} groups of negatives for {query_embeddings.shape[0]} queries")
        flat_negatives = neg_doc_embeddings.reshape(batch * n_neg, length, dim)
        flat_mask = _mask(flat_negatives, None if neg_doc_mask is None else neg_doc_mask.reshape(batch * n_neg, length))
        _check_not_empty("neg_doc_embeddings (flattened)", flat_mask)
        # Score each query against its own negatives only: [B, B*n_neg] would waste work, so expand the queries.
        expanded_queries = query_embeddings.repeat_interleave(n_neg, dim=0)
        expanded_mask = query_mask.repeat_interleave(n_neg, dim=0)
        negatives = paired_scores(expanded_queries, expanded_mask, flat_negatives, flat_mask, head).view(batch, n_neg)
        logits = torch.cat([logits, negatives], dim=1)
    if normalize_scores:
        logits = logits / query_mask.sum(dim=1, keepdim=True).clamp_min(1)
    return logits


class _PooledLoss(nn.Module):
    """Shared part of the pooled losses: the head, the logit temperature, the colpali-engine call signature."""

    default_temperature = 1.0

    def __init__(self, head: str | PoolingHead = "maxsim", temperature: float | None = None, normalize_scores: bool = True):
        super().__init__()
        temperature = self.default_temperature if temperature is None else temperature
        _check_temperature(temperature)
        self.head = parse_head(head)
        self.temperature = temperature
        self.normalize_scores = normalize_scores

    def forward(
        self,
        query_embeddings: torch.Tensor,
        doc_embeddings: torch.Tensor,
        neg_doc_embeddings: torch.Tensor | None = None,
        offset: int = 0,
        *,
        query_mask: torch.Tensor | None = None,
        doc_mask: torch.Tensor | None = None,
        neg_doc_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logits = pooled_logits(
            self.head, query_embeddings, doc_embeddings, neg_doc_embeddings,
            normalize_scores=self.normalize_scores, query_mask=query_mask, doc_mask=doc_mask, neg_doc_mask=neg_doc_mask,
        )
        return self.loss_from_logits(logits, offset)

    def loss_from_logits(self, logits: torch.Tensor, offset: int) -> torch.Tensor:
        """``logits [B, N (+ n_neg)]``, positive of row i at column ``offset + i`` -> scalar loss."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"head={self.head.spec()}, temperature={self.temperature}, normalize_scores={self.normalize_scores}"


class PooledInfoNCELoss(_PooledLoss):
    """In-batch InfoNCE (cross-entropy over documents) with any pooling head; hard negatives join the candidates.

    Temperature 0.02 by default, as colpali-engine's ColbertLoss (on length-normalised scores).
    """

    default_temperature = 0.02

    def loss_from_logits(self, logits, offset):
        targets = torch.arange(logits.shape[0], device=logits.device) + offset
        return F.cross_entropy(logits / self.temperature, targets)


class PooledPairwiseCELoss(_PooledLoss):
    """softplus((hardest negative - positive) / temperature), negatives from the batch and any hard negatives.

    Temperature 1.0 by default, as colpali-engine's ColbertPairwiseCELoss.
    """

    default_temperature = 1.0

    def loss_from_logits(self, logits, offset):
        rows = torch.arange(logits.shape[0], device=logits.device)
        positives = logits[rows, rows + offset]
        negatives = logits.index_put((rows, rows + offset), torch.tensor(float("-inf"), device=logits.device))
        return F.softplus((negatives.amax(dim=1) - positives) / self.temperature).mean()
