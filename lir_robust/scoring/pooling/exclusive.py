"""The joint capacity-limited pooling head (``exclusive``): greedy matching of query tokens to document patches, one
patch serving at most ``capacity`` tokens, computed per row by a compiled (numba) kernel."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from lir_robust.scoring.pooling.base import PoolingHead, register_head
from lir_robust.scoring.pooling.shared import SharedWork

__all__ = ["ExclusiveMatchHead"]


def _best_candidates(values: torch.Tensor, ids: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` best entries of concatenated candidate lists ``[..., W]`` whose ids rise along each list among equal
    values: similarity descending, equal ones in list order (so by patch id), -inf / -1 padded."""
    width = values.shape[-1]
    if width < count:
        values = torch.cat([values, values.new_full((*values.shape[:-1], count - width), -math.inf)], dim=-1)
        ids = torch.cat([ids, ids.new_full((*ids.shape[:-1], count - width), -1)], dim=-1)
    best, order = values.sort(dim=-1, descending=True, stable=True)
    return best[..., :count], ids.gather(-1, order[..., :count])


def _greedy_assignment(values: torch.Tensor, ids: torch.Tensor, query_mask: torch.Tensor, capacity: int) -> torch.Tensor:
    """Greedy capacity-limited matching on candidate lists: the list position each query token takes ``[N, Tq]``.

    ``values [N, Tq, m]`` (each token's best similarities, descending, -inf padded), ``ids [N, Tq, m]`` (the patch of
    each, -1 padded), ``query_mask [N, Tq]``. Pairs are taken in descending similarity (ties: lower token, then better
    candidate); a pair is kept when its token is still free and its patch serves fewer than ``capacity`` tokens. A
    token whose candidates are all taken takes its best one anyway (position 0); so does a masked token.

    Each row is a small sequential problem, so it runs compiled (numba): every free token holds its best candidate
    not yet refused, the best of those is taken or refused, and a refused token moves to its next candidate. That is
    the global descending order restricted to the pairs that can still matter.
    """
    n, tokens, m = values.shape
    if n == 0 or tokens == 0:
        return torch.zeros(n, tokens, dtype=torch.long, device=values.device)
    kernel = _greedy_kernel()  # runs on the CPU: the lists are small; the result goes back to the values' device
    choice = kernel(
        values.detach().float().cpu().contiguous().numpy(),
        ids.to(torch.int64).cpu().contiguous().numpy(),
        query_mask.to(torch.bool).cpu().contiguous().numpy(),
        int(capacity),
        int(max(0, int(ids.max()) + 1)),
    )
    return torch.from_numpy(choice).to(values.device)


_GREEDY_KERNEL = None


def _greedy_kernel():
    """The compiled per-row greedy (built on first use, cached on disk by numba)."""
    global _GREEDY_KERNEL
    if _GREEDY_KERNEL is None:
        import numba
        import numpy as np

        @numba.njit(cache=True, nogil=True)
        def greedy(values, ids, live, capacity, patches):  # pragma: no cover - compiled
            rows, tokens, m = values.shape
            choice = np.zeros((rows, tokens), dtype=np.int64)
            used = np.zeros(max(patches, 1), dtype=np.int64)
            front = np.zeros(tokens, dtype=np.int64)
            free = np.zeros(tokens, dtype=np.bool_)
            for row in range(rows):
                remaining = 0
                for token in range(tokens):
                    front[token] = 0
                    free[token] = live[row, token] and ids[row, token, 0] >= 0 and values[row, token, 0] > -np.inf
                    if free[token]:
                        remaining += 1
                while remaining > 0:
                    best, best_value = -1, -np.inf
                    for token in range(tokens):  # the best front pair (ties: the lower token)
                        if free[token]:
                            value = values[row, token, front[token]]
                            if best < 0 or value > best_value:
                                best, best_value = token, value
                    patch = ids[row, best, front[best]]
                    if used[patch] < capacity:
                        used[patch] += 1
                        choice[row, best] = front[best]
                        free[best] = False
                        remaining -= 1
                    else:
                        front[best] += 1
                        if front[best] >= m or ids[row, best, front[best]] < 0 or not values[row, best, front[best]] > -np.inf:
                            choice[row, best] = 0  # every candidate taken: the token takes its best patch
                            free[best] = False
                            remaining -= 1
                for token in range(tokens):  # reset the room table for the next row (only what this row touched)
                    for position in range(m):
                        patch = ids[row, token, position]
                        if patch >= 0:
                            used[patch] = 0
            return choice

        _GREEDY_KERNEL = greedy
    return _GREEDY_KERNEL


@register_head("exclusive")
@dataclass(frozen=True)
class ExclusiveMatchHead(PoolingHead):
    """Capacity-limited matching: phi_i = S_i,a(i), where a is the greedy matching of query tokens to document patches
    in which one patch serves at most ``capacity`` query tokens: (token, patch) pairs are taken in descending
    similarity among each token's ``candidates`` best patches (equal similarities: the lower token, then the earlier
    patch), a pair kept when its token is still free and its patch serves fewer than ``capacity`` tokens. A token whose candidates are all taken (by tokens that match them better,
    or because the document has too few patches) takes its best patch, as maxsim would.

    With capacity 1 a planted patch can take at most one query token, so K injected patches can hijack at most about
    K tokens (maxsim: every token). With capacity >= Tq, or candidates = 1, the head is maxsim. Joint: a token's value
    depends on the query's other tokens.

    Differentiable as maxsim is: the matching is piecewise constant in the similarities, so the gradient of
    ``S_i,a(i)`` flows to the matched patch (exact almost everywhere, no relaxation needed); unlike maxsim's, it reaches
    as many distinct patches as there are query tokens.

    Computed in parts: the state keeps each token's ``candidates`` best similarities with their patch ids; merging
    keeps the best of both lists (the second part's ids shifted past the first part's patches), so every path (the
    scorer, training, the sweep) matches on the same candidates and gives the same value. When no token runs out of
    candidates (almost always with the default 8) this is exactly greedy matching over all patches.
    State: (values ``[..., Tq, candidates]`` descending, patch ids (-1: none), patches seen ``[..., Tq]``).
    """

    capacity: int = 1
    candidates: int = 8
    joint: ClassVar[bool] = True

    def __post_init__(self):
        for name in ("capacity", "candidates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"pooling head 'exclusive': {name} must be an integer >= 1, got {value!r}")

    def partial(self, similarities, document_mask):
        return self.partial_shared(SharedWork(similarities, document_mask.unsqueeze(-2)))

    def partial_shared(self, work):
        values, positions = work.top_candidates(self.candidates)
        width = torch.full(values.shape[:-1], float(work.similarities.shape[-1]), device=values.device)
        return values, positions, width

    def merge(self, a, b):
        shifted = torch.where(b[1] >= 0, b[1] + a[2].unsqueeze(-1).long(), b[1])
        values, ids = _best_candidates(torch.cat([a[0], b[0]], dim=-1), torch.cat([a[1], shifted], dim=-1), self.candidates)
        return values, ids, a[2] + b[2]

    def finalize(self, state, query_mask=None):
        values, ids, _ = state
        *batch, tokens, m = values.shape
        mask = (torch.ones(*batch, tokens, dtype=torch.bool, device=values.device) if query_mask is None
                else query_mask.to(torch.bool).expand(*batch, tokens))
        with torch.no_grad():
            choice = _greedy_assignment(values.detach().reshape(-1, tokens, m), ids.reshape(-1, tokens, m),
                                        mask.reshape(-1, tokens), self.capacity)
        return values.gather(-1, choice.view(*batch, tokens, 1)).squeeze(-1)

    def __call__(self, similarities, document_mask, query_mask=None):
        return self.finalize(self.partial(similarities, document_mask), query_mask)
