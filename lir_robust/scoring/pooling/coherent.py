"""Coherence-aware matching (``coherent``): a document patch counts less when it is atypical of its own document.

Injected spikes and patches copied from other documents are outliers among the host document's patches, while a
document's real key terms sit among related ones. Each valid patch ``j`` of a document gets a typicality ``t_j``
computed from that document's valid patches only, and every similarity to it is lowered before an inner head pools::

    S'_ij = S_ij - beta * (1 - t_j)

``typicality``:

- ``loo``: the cosine of ``d_j`` with the mean of the document's other valid patches (leave-one-out);
- ``topm``: the mean of ``d_j``'s ``m`` largest cosines to the document's other valid patches.

A document with a single valid patch has nothing to compare it with: ``t = 1`` (no change). ``beta = 0`` is the
inner head exactly.

The typicality needs the document's own vectors (injected patches included: the defender cannot tell them apart),
which a head does not see. So this head keeps the contract of :mod:`lir_robust.scoring.pooling.base` by delegation:
``needs_documents`` is True, :meth:`CoherentHead.document_bias` gives the per-patch offsets ``[..., Td]``, and the
scorer (:func:`lir_robust.scoring.scorer.late_interaction_scores`, ``paired_scores``, ``score``; hence the losses
and the sweep) adds them to the similarities and pools with :attr:`CoherentHead.inner_head`. Called on similarities
alone, the head refuses (it cannot be right without the vectors). It is not mergeable: adding patches changes the
typicality of the document's original ones, so the sweep scores it on the concatenated documents (brute force).

Text form: ``coherent:inner=maxsim,beta=0.1,typicality=loo,m=4``; an inner head's own parameters are separated by
``+`` (``inner=exclusive:capacity=1+candidates=8``), since ``,`` separates this head's parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lir_robust.scoring.pooling.base import PoolingHead, parse_head, register_head

__all__ = ["CoherentHead", "patch_typicality"]

TYPICALITIES = ("loo", "topm")


def patch_typicality(documents: torch.Tensor, document_mask: torch.Tensor, kind: str = "loo", m: int = 4, *,
                     padding_is_zero: bool = False) -> torch.Tensor:
    """Typicality ``[..., Td]`` (float32) of each patch of ``documents [..., Td, D]`` among its document's valid
    patches (``document_mask [..., Td]``, True = real). Masked patches get 1 and never influence a valid one's value;
    a patch with no valid neighbour gets 1. ``padding_is_zero``: the masked rows are known to be zero (the scorer
    zeroes them), which saves a copy of the documents; otherwise they may hold anything, NaN included."""
    mask = document_mask.to(torch.bool)
    vectors = documents.float()
    if not padding_is_zero and not bool(mask.all()):
        vectors = vectors.masked_fill(~mask.unsqueeze(-1), 0.0)
    norms = torch.linalg.vector_norm(vectors, dim=-1)  # [..., Td]
    inverse = torch.where(mask & (norms > 0), 1.0 / norms.clamp_min(1e-12), 0.0)  # unit_j = vectors_j * inverse_j
    count = mask.sum(dim=-1, keepdim=True)  # [..., 1]
    lonely = ~mask | (count <= 1)
    if kind == "loo":
        # cos(u_j, S - u_j) with S the sum of the valid unit vectors, without building S - u_j for every j:
        # u_j . (S - u_j) = u_j . S - 1 and |S - u_j|^2 = |S|^2 - 2 u_j . S + 1 (unit u_j)
        total = (inverse.unsqueeze(-2) @ vectors).squeeze(-2)  # [..., D]
        along = (vectors @ total.unsqueeze(-1)).squeeze(-1) * inverse  # [..., Td]
        squared = (total * total).sum(dim=-1, keepdim=True)
        value = (along - 1.0) / torch.sqrt(torch.clamp(squared - 2.0 * along + 1.0, min=1e-12))
    elif kind == "topm":
        cosines = (vectors @ vectors.transpose(-1, -2)) * inverse.unsqueeze(-1) * inverse.unsqueeze(-2)  # [..., Td, Td]
        eye = torch.eye(cosines.shape[-1], dtype=torch.bool, device=cosines.device)
        cosines = cosines.masked_fill_(eye | ~mask.unsqueeze(-2), -math.inf)
        width = min(int(m), cosines.shape[-1])
        top = cosines.topk(width, dim=-1).values  # [..., Td, width]: -inf where fewer than width others
        available = torch.clamp(count - 1, min=1, max=width)  # [..., 1]
        value = torch.where(torch.isfinite(top), top, 0.0).sum(dim=-1) / available
    else:
        raise ValueError(f"pooling head 'coherent': typicality must be one of {TYPICALITIES}, got {kind!r}")
    return torch.where(lonely, torch.ones_like(value), value)


@register_head("coherent")
@dataclass(frozen=True)
class CoherentHead(PoolingHead):
    """Similarities lowered by ``beta * (1 - typicality)`` of each document patch, then pooled by ``inner``."""

    inner: str = "maxsim"
    beta: float = 0.1
    typicality: str = "loo"
    m: int = 4

    def __post_init__(self):
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"pooling head 'coherent': beta must be a finite number >= 0, got {self.beta!r}")
        if self.typicality not in TYPICALITIES:
            raise ValueError(f"pooling head 'coherent': typicality must be one of {TYPICALITIES}, got {self.typicality!r}")
        if isinstance(self.m, bool) or not isinstance(self.m, int) or self.m < 1:
            raise ValueError(f"pooling head 'coherent': m must be an integer >= 1, got {self.m!r}")
        inner = self.inner_head
        if inner.needs_documents:
            raise ValueError("pooling head 'coherent': the inner head cannot itself be 'coherent'; give a plain head, e.g. inner=maxsim")
        object.__setattr__(self, "inner", inner.spec().replace(",", "+"))  # one text form per head

    needs_documents = True

    @property
    def inner_head(self) -> PoolingHead:
        """The head that pools the lowered similarities."""
        return parse_head(self.inner.replace("+", ","))

    @property
    def joint(self) -> bool:  # type: ignore[override]
        return self.inner_head.joint

    @property
    def mergeable(self) -> bool:
        return False  # injected patches change the typicality of the document's own patches

    def document_bias(self, documents: torch.Tensor, document_mask: torch.Tensor, *, padding_is_zero: bool = False) -> torch.Tensor:
        """Offsets ``[..., Td]`` added to every similarity to each patch: ``-beta * (1 - t_j)`` (0 on masked patches)."""
        if self.beta == 0:
            return torch.zeros(document_mask.shape, dtype=torch.float32, device=document_mask.device)
        typical = patch_typicality(documents, document_mask, self.typicality, self.m, padding_is_zero=padding_is_zero)
        return torch.where(document_mask.to(torch.bool), -self.beta * (1.0 - typical), 0.0)

    def __call__(self, similarities, document_mask, query_mask=None):
        raise ValueError(
            f"pooling head {self.spec()!r} needs the documents' vectors, not only similarities: score it through "
            "lir_robust.scoring.scorer (score / late_interaction_scores / paired_scores)")
