"""Diagnostics of late-interaction pooling: where the gradient goes, and which patches win the query tokens.

Gradient concentration (PAPER.md, "Gradient concentration"): for a (query, document) pair and a loss L, the gradient
norm of every document patch ``g_j = || dL / d d_j ||`` (``d_j`` the patch's embedding) is summarised by

- the standard Gini coefficient of ``(g_1 .. g_M)``: 0 when every patch gets the same gradient, ``1 - 1/M`` (-> 1)
  when one patch gets all of it. The paper's printed formula equals the standard Gini minus ``1/M`` (a uniform g
  gives ``-1/M``); it is available with ``printed_gini=True`` and never the default;
- the top-1 share ``max_j g_j / sum_j g_j``;
- the effective number of patches ``exp(entropy(g / sum g))``: M for uniform, 1 for one-hot.

Hijack rate: the share of a query's valid tokens whose best-matching patch (highest similarity ``q_i . d_j`` among the
document's valid patches) is an injected patch. It only needs embeddings, so it works for any encoder.

Everything here works on embeddings: ``query [Tq, D]``, ``document [Td, D]`` or batched ``[N, T, D]``, with optional
boolean masks (True = a real token / patch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from lir_robust.scoring.losses import PooledInfoNCELoss, pooled_logits
from lir_robust.scoring.pooling import PoolingHead, parse_head
from lir_robust.scoring.scorer import paired_scores

__all__ = [
    "GradientConcentration",
    "gini",
    "top1_share",
    "effective_patches",
    "gradient_concentration",
    "pair_patch_gradient_norms",
    "pair_gradient_concentration",
    "gold_patch_gradient_norms",
    "gold_pair_gradient_concentration",
    "hijack_rate",
    "hijack_rates",
]


def _valid(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones(values.shape, dtype=torch.bool, device=values.device)
    if mask.shape != values.shape:
        mask = mask.expand(values.shape)
    return mask.to(torch.bool)


def gini(values: torch.Tensor, mask: torch.Tensor | None = None, *, printed: bool = False) -> torch.Tensor:
    """Gini coefficient of non-negative values along the last dim: ``[..., M] -> [...]`` (float32).

    Standard form ``sum_ij |x_i - x_j| / (2 M^2 mean(x))`` over the M valid entries (``mask [..., M]``, True =
    counted): 0 for equal values, ``1 - 1/M`` for one-hot. ``printed=True`` subtracts ``1/M`` (the paper's printed
    formula). All-zero rows (no gradient at all) count as equal: standard 0. Rows without valid entries give NaN.
    """
    values = values.float()
    if bool((values < 0).any()):
        raise ValueError("gini expects non-negative values (gradient norms)")
    valid = _valid(values, mask)
    count = valid.sum(dim=-1).float()
    # Sort ascending with masked entries pushed to the front as zeros-with-no-rank: rank only the valid ones.
    filled = values.masked_fill(~valid, -1.0)
    ordered, _ = filled.sort(dim=-1)
    ordered_valid = ordered >= 0
    # rank among valid entries, 1..n (masked entries sort first, so subtract the number of masked ones)
    position = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=torch.float32)
    rank = position - (values.shape[-1] - count).unsqueeze(-1)
    ordered = ordered.clamp_min(0.0) * ordered_valid
    total = ordered.sum(dim=-1)
    weighted = (rank * ordered).sum(dim=-1)
    n = count.clamp_min(1.0)
    standard = (2.0 * weighted) / (n * total.clamp_min(torch.finfo(torch.float32).tiny)) - (n + 1.0) / n
    standard = torch.where(total > 0, standard, torch.zeros_like(standard))
    result = standard - 1.0 / n if printed else standard
    return torch.where(count > 0, result, torch.full_like(result, math.nan))


def _shares(values: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    values = values.float()
    valid = _valid(values, mask)
    masked = values.masked_fill(~valid, 0.0)
    total = masked.sum(dim=-1, keepdim=True)
    return masked, total, valid


def top1_share(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Largest value's share of the total along the last dim: ``[..., M] -> [...]``; all-zero rows give ``1/M``."""
    masked, total, valid = _shares(values, mask)
    count = valid.sum(dim=-1).float()
    share = masked.amax(dim=-1) / total.squeeze(-1).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(total.squeeze(-1) > 0, share, 1.0 / count.clamp_min(1.0))


def effective_patches(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``exp(entropy(values / sum))`` along the last dim: ``[..., M] -> [...]``; M for uniform (and all-zero), 1 for one-hot."""
    masked, total, valid = _shares(values, mask)
    count = valid.sum(dim=-1).float()
    p = masked / total.clamp_min(torch.finfo(torch.float32).tiny)
    entropy = -(torch.where(p > 0, p * p.clamp_min(1e-38).log(), torch.zeros_like(p))).sum(dim=-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), count)


@dataclass
class GradientConcentration:
    """Concentration of per-patch gradient norms; each field has the leading shape of the input (``[]`` or ``[N]``)."""

    gini: torch.Tensor
    top1_share: torch.Tensor
    effective_patches: torch.Tensor
    gradient_norms: torch.Tensor  # [..., M], masked patches 0

    def mean(self) -> dict[str, float]:
        """Averages over pairs (NaN ignored): ``{"gini": .., "top1_share": .., "effective_patches": ..}``."""
        return {
            "gini": float(self.gini.float().nanmean()),
            "top1_share": float(self.top1_share.float().nanmean()),
            "effective_patches": float(self.effective_patches.float().nanmean()),
        }


def gradient_concentration(
    gradient_norms: torch.Tensor, mask: torch.Tensor | None = None, *, printed_gini: bool = False
) -> GradientConcentration:
    """Summarise per-patch gradient norms ``[..., M]`` (``mask [..., M]`` True = real patch)."""
    norms = gradient_norms.detach().float()
    if mask is not None:
        norms = norms.masked_fill(~_valid(norms, mask), 0.0)
    return GradientConcentration(
        gini=gini(norms, mask, printed=printed_gini),
        top1_share=top1_share(norms, mask),
        effective_patches=effective_patches(norms, mask),
        gradient_norms=norms,
    )


def _default_mask(embeddings: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones(embeddings.shape[:-1], dtype=torch.bool, device=embeddings.device)
    return mask.to(torch.bool)


def pair_patch_gradient_norms(
    query: torch.Tensor,
    document: torch.Tensor,
    head: str | PoolingHead = "maxsim",
    *,
    query_mask: torch.Tensor | None = None,
    document_mask: torch.Tensor | None = None,
    loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``g_j = || dL / d d_j ||`` for one pair: query ``[Tq, D]``, document ``[Td, D]`` -> ``[Td]`` (masked patches 0).

    ``loss`` maps the pair's score (a 0-d tensor) to a scalar loss; the default is ``-score``. For a single pair any
    loss that depends on the score only rescales every ``g_j`` by the same factor, so the concentration does not
    depend on it. Also accepts a batch of aligned pairs ``[N, Tq, D]``, ``[N, Td, D]`` -> ``[N, Td]`` (then ``loss``
    maps the ``[N]`` scores to a scalar; default ``-scores.sum()``, which keeps the pairs independent).
    """
    head = parse_head(head)
    single = document.dim() == 2
    if single:
        query, document = query.unsqueeze(0), document.unsqueeze(0)
        query_mask = None if query_mask is None else query_mask.unsqueeze(0)
        document_mask = None if document_mask is None else document_mask.unsqueeze(0)
    query_mask = _default_mask(query, query_mask)
    document_mask = _default_mask(document, document_mask)
    with torch.enable_grad():
        leaf = document.detach().float().requires_grad_(True)
        scores = paired_scores(query.detach().float(), query_mask, leaf, document_mask, head)
        value = (-scores.sum()) if loss is None else loss(scores[0] if single else scores)
        (gradient,) = torch.autograd.grad(value, leaf)
    norms = gradient.norm(dim=-1).masked_fill(~document_mask, 0.0)
    return norms[0] if single else norms


def pair_gradient_concentration(
    query: torch.Tensor,
    document: torch.Tensor,
    head: str | PoolingHead = "maxsim",
    *,
    query_mask: torch.Tensor | None = None,
    document_mask: torch.Tensor | None = None,
    loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    printed_gini: bool = False,
) -> GradientConcentration:
    """Gini / top-1 share / effective patches of one pair's patch gradients (shapes as :func:`pair_patch_gradient_norms`)."""
    norms = pair_patch_gradient_norms(
        query, document, head, query_mask=query_mask, document_mask=document_mask, loss=loss
    )
    mask = None if document_mask is None else document_mask.to(torch.bool)
    return gradient_concentration(norms, mask, printed_gini=printed_gini)


def gold_patch_gradient_norms(
    queries: torch.Tensor,
    documents: torch.Tensor,
    head: str | PoolingHead = "maxsim",
    *,
    query_mask: torch.Tensor | None = None,
    document_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    normalize_scores: bool = False,
    scope: str = "pair",
) -> torch.Tensor:
    """Gradient norms on every gold document's patches under in-batch InfoNCE: ``[B, Tq, D] x [B, Td, D] -> [B, Td]``.

    Query i's gold document is ``documents[i]``; the loss is :class:`~lir_robust.scoring.losses.PooledInfoNCELoss` over the
    ``[B, B]`` scores (logits ``score / temperature``, divided by query length first if ``normalize_scores``), i.e.
    the loss the synthetic study trains with. ``scope`` says which part of the loss is differentiated:

    - ``"pair"`` (default; PAPER.md's "for one (query, document) pair"): query i's own InfoNCE term ``L_i`` with
      respect to its gold document ``d_i``. Since ``d_i`` enters ``L_i`` only through ``score(q_i, d_i)``, this is the
      pair's score gradient scaled by ``-(1 - p_ii) / temperature``: the concentration is the head's.
    - ``"batch"``: the whole batch loss with respect to ``d_i``, which adds ``d_i``'s role as an in-batch negative of
      every other query (what an optimiser step applies to ``d_i``).

    Masked patches get 0.
    """
    if scope not in ("pair", "batch"):
        raise ValueError(f"scope must be 'pair' or 'batch', got {scope!r}")
    head = parse_head(head)
    query_mask = _default_mask(queries, query_mask)
    document_mask = _default_mask(documents, document_mask)
    queries = queries.detach().float()
    with torch.enable_grad():
        leaf = documents.detach().float().requires_grad_(True)
        if scope == "batch":
            loss_fn = PooledInfoNCELoss(head, temperature=temperature, normalize_scores=normalize_scores)
            loss = loss_fn(queries, leaf, query_mask=query_mask, doc_mask=document_mask)
        else:
            # Off-diagonal logits see detached documents, so sum_i L_i only differentiates L_i w.r.t. d_i.
            logits = pooled_logits(head, queries, leaf.detach(), normalize_scores=normalize_scores,
                                   query_mask=query_mask, doc_mask=document_mask)
            diagonal = paired_scores(queries, query_mask, leaf, document_mask, head)
            if normalize_scores:
                diagonal = diagonal / query_mask.sum(dim=1).clamp_min(1)
            eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
            logits = torch.where(eye, diagonal.unsqueeze(1), logits)
            targets = torch.arange(logits.shape[0], device=logits.device)
            loss = F.cross_entropy(logits / temperature, targets, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, leaf)
    return gradient.norm(dim=-1).masked_fill(~document_mask, 0.0)


def gold_pair_gradient_concentration(
    queries: torch.Tensor,
    documents: torch.Tensor,
    head: str | PoolingHead = "maxsim",
    *,
    query_mask: torch.Tensor | None = None,
    document_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    normalize_scores: bool = False,
    scope: str = "pair",
    printed_gini: bool = False,
) -> GradientConcentration:
    """Concentration of the gold documents' patch gradients under in-batch InfoNCE (what the paper measured).

    ``scope``: ``"pair"`` (query i's loss term w.r.t. its gold document) or ``"batch"`` (the whole batch loss); see
    :func:`gold_patch_gradient_norms`.

    Shapes: queries ``[B, Tq, D]``, documents ``[B, Td, D]`` (document i is query i's gold), masks ``[B, Tq]`` /
    ``[B, Td]``; every field of the result is ``[B]`` (``gradient_norms`` is ``[B, Td]``). Average with ``.mean()``.
    """
    norms = gold_patch_gradient_norms(
        queries, documents, head, query_mask=query_mask, document_mask=document_mask,
        temperature=temperature, normalize_scores=normalize_scores, scope=scope,
    )
    mask = None if document_mask is None else document_mask.to(torch.bool)
    return gradient_concentration(norms, mask, printed_gini=printed_gini)


def hijack_rates(
    queries: torch.Tensor,
    documents: torch.Tensor,
    injected: torch.Tensor,
    *,
    query_mask: torch.Tensor | None = None,
    document_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hijack rate of aligned pairs: ``[N, Tq, D] x [N, Td, D]``, injected ``[N, Td]`` (bool) -> ``[N]`` float32.

    For each pair, the share of the query's valid tokens whose best-matching valid patch (largest ``q_i . d_j``;
    ties go to the first patch) is marked injected. A query without valid tokens gives NaN. Masked (padded) patches
    never win. Embeddings are compared as given (normalise them first if the model does).
    """
    if queries.dim() != 3 or documents.dim() != 3:
        raise ValueError(
            f"hijack_rates expects [N, Tq, D] queries and [N, Td, D] documents, got {tuple(queries.shape)} and "
            f"{tuple(documents.shape)} (use hijack_rate for a single pair)"
        )
    if injected.shape != documents.shape[:2]:
        raise ValueError(f"injected mask {tuple(injected.shape)} does not match documents {tuple(documents.shape[:2])}")
    query_mask = _default_mask(queries, query_mask)
    document_mask = _default_mask(documents, document_mask)
    with torch.no_grad():
        queries = torch.where(query_mask.unsqueeze(-1), queries, 0).float()
        documents = torch.where(document_mask.unsqueeze(-1), documents, 0).float()
        similarities = torch.einsum("ntd,nsd->nts", queries, documents)
        similarities = similarities.masked_fill(~document_mask.unsqueeze(1), -math.inf)
        best = similarities.argmax(dim=-1)  # [N, Tq]
        hijacked = injected.to(torch.bool).gather(1, best) & query_mask
        count = query_mask.sum(dim=-1).float()
        rate = hijacked.sum(dim=-1).float() / count.clamp_min(1.0)
    return torch.where(count > 0, rate, torch.full_like(rate, math.nan))


def hijack_rate(
    query: torch.Tensor,
    document: torch.Tensor,
    injected: torch.Tensor,
    *,
    query_mask: torch.Tensor | None = None,
    document_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hijack rate of one pair: query ``[Tq, D]``, document ``[Td, D]``, injected ``[Td]`` bool -> 0-d float32 tensor.

    The share of valid query tokens whose best-matching valid patch is an injected one (see :func:`hijack_rates`).
    """
    return hijack_rates(
        query.unsqueeze(0), document.unsqueeze(0), injected.unsqueeze(0),
        query_mask=None if query_mask is None else query_mask.unsqueeze(0),
        document_mask=None if document_mask is None else document_mask.unsqueeze(0),
    )[0]
