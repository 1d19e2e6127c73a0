"""Each query's best documents, kept across parts of a corpus: what the sweep's metrics need, in memory that does not
grow with the corpus.

A sweep scores a corpus in segments (and across processes); for every (head, injection, K) it keeps, per query, the
``depth`` best documents with their hijack shares, the gold documents' scores (for the hijack budget) and the hijack
totals. :meth:`RankedScores.merge` is exact and order-free (one total order: score descending, then document index
ascending), so any grouping of the segments gives the same lists. Stored as safetensors: plain tensors, loading
cannot run code.
"""

from __future__ import annotations

import math

import torch

__all__ = ["RANKED_DEPTH", "RankedScores", "ranked_key"]


# Candidates kept per query: the run depth any metric needs (100) and a margin for ties at the cut (as
# metrics.run_from_scores keeps).
RANKED_DEPTH = 132


def ranked_key(head: str, injection: str, k: int) -> str:
    """``head|injection|K`` (injection "" at K = 0): the key of one list."""
    return f"{head}|{injection}|{k}"


def _top_candidates(values: torch.Tensor, indices: torch.Tensor, extra: torch.Tensor, depth: int):
    """Each row's ``depth`` best ``(value, index, extra)`` in one total order (value descending, then document index
    ascending), so merging per-segment lists in any grouping gives the same list. ``[q, n]`` -> ``[q, min(n, depth)]``."""
    width = values.shape[1]
    if width > 2 * depth + 32:  # cut to a few more than depth first: sorting every column would cost more
        top = values.topk(depth + 32, dim=1, sorted=False)
        # topk takes any of the values equal to its last one; when it left some out, only sorting every column keeps
        # the order total (ties by document index), so that segments give the same lists however they are grouped
        if not bool(((values >= top.values.amin(dim=1, keepdim=True)).sum(dim=1) > depth + 32).any()):
            keep = top.indices
            values, indices, extra = values.gather(1, keep), indices.gather(1, keep), extra.gather(1, keep)
    by_index = indices.argsort(dim=1, stable=True)
    values, indices, extra = values.gather(1, by_index), indices.gather(1, by_index), extra.gather(1, by_index)
    order = values.argsort(dim=1, descending=True, stable=True)[:, :depth]
    return values.gather(1, order), indices.gather(1, order), extra.gather(1, order)


_PADDING = 1 << 62  # padding's document index while ranking: after every real document of equal (-inf) score


def _padding_last(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``indices`` with padding (-1) moved past every document, so that a real document scoring -inf (one without a
    valid patch) keeps its place before padding, in every merge order."""
    return torch.where(torch.isinf(values) & (indices < 0), torch.full_like(indices, _PADDING), indices)


def _padding_back(indices: torch.Tensor) -> torch.Tensor:
    return torch.where(indices == _PADDING, torch.full_like(indices, -1), indices)


class RankedScores:
    """Each query's best ``depth`` documents for every (head, injection, K), the gold documents' scores, and hijack
    totals: what the metrics need, in memory that does not grow with the corpus.

    ``values[key]`` float32 ``[Nq, depth]`` (-inf padded), ``indices[key]`` long (-1 padded), ``hijack[key]`` float16
    (the hijack share of each listed document), ``gold[key]`` float32 ``[Nq, G]`` (the score of each query's gold
    documents, NaN until their segment is scored; G = most gold documents of a query); ``hijack_total[(injection,
    K)]`` float64 ``[2]`` = (sum of hijack shares, number of injected (query, document) pairs). Keys: ``head|injection|K``
    with injection "" at K = 0. Merging is exact and order-free, so segments can be scored by any process in any order.
    """

    def __init__(self, n_queries: int, gold_width: int, depth: int = RANKED_DEPTH):
        self.n_queries, self.gold_width, self.depth = n_queries, gold_width, depth
        self.values: dict[str, torch.Tensor] = {}
        self.indices: dict[str, torch.Tensor] = {}
        self.hijack: dict[str, torch.Tensor] = {}
        self.gold: dict[str, torch.Tensor] = {}
        self.hijack_total: dict[str, torch.Tensor] = {}

    def _ensure(self, key: str) -> None:
        if key not in self.values:
            self.values[key] = torch.full((self.n_queries, 0), -math.inf)
            self.indices[key] = torch.zeros(self.n_queries, 0, dtype=torch.long)
            self.hijack[key] = torch.zeros(self.n_queries, 0, dtype=torch.float16)
            self.gold[key] = torch.full((self.n_queries, self.gold_width), math.nan)

    def add_block(self, key: str, rows: slice, columns: torch.Tensor, scores: torch.Tensor, hijack: torch.Tensor | None,
                  gold_positions: torch.Tensor) -> None:
        """Merge scores ``[q, n]`` of queries ``rows`` against documents ``columns [n]`` (and their hijack shares).
        ``gold_positions [q, G]``: each gold document's position in ``columns`` (-1: not among them)."""
        self._ensure(key)
        shares = torch.zeros(scores.shape, dtype=torch.float16) if hijack is None else hijack.to(torch.float16)
        values = torch.cat([self.values[key][rows], scores.float()], dim=1)
        indices = torch.cat([self.indices[key][rows], columns.unsqueeze(0).expand(scores.shape[0], -1)], dim=1)
        extra = torch.cat([self.hijack[key][rows], shares], dim=1)
        top = _top_candidates(values, _padding_last(values, indices), extra, self.depth)
        top = (top[0], _padding_back(top[1]), top[2])
        self._write_rows(key, rows, top)
        present = gold_positions >= 0
        if bool(present.any()):
            found = scores.gather(1, gold_positions.clamp_min(0)).float()
            self.gold[key][rows] = torch.where(present, found, self.gold[key][rows])

    def _write_rows(self, key: str, rows: slice, top) -> None:
        width = top[0].shape[1]
        if width > self.values[key].shape[1]:  # grow every row to the new width (padding: -inf / -1 / 0)
            grow = width - self.values[key].shape[1]
            self.values[key] = torch.cat([self.values[key], torch.full((self.n_queries, grow), -math.inf)], dim=1)
            self.indices[key] = torch.cat([self.indices[key], torch.full((self.n_queries, grow), -1, dtype=torch.long)], dim=1)
            self.hijack[key] = torch.cat([self.hijack[key], torch.zeros(self.n_queries, grow, dtype=torch.float16)], dim=1)
        pad = self.values[key].shape[1] - width
        values, indices, extra = top
        if pad:
            values = torch.cat([values, values.new_full((values.shape[0], pad), -math.inf)], dim=1)
            indices = torch.cat([indices, indices.new_full((indices.shape[0], pad), -1)], dim=1)
            extra = torch.cat([extra, extra.new_zeros(extra.shape[0], pad)], dim=1)
        self.values[key][rows], self.indices[key][rows], self.hijack[key][rows] = values, indices, extra

    def add_hijack_total(self, injection: str, k: int, total: float, pairs: int) -> None:
        key = f"{injection}|{k}"
        self.hijack_total[key] = self.hijack_total.get(key, torch.zeros(2, dtype=torch.float64)) + torch.tensor(
            [float(total), float(pairs)], dtype=torch.float64)

    def merge(self, other: "RankedScores") -> "RankedScores":
        """Fold another part (other documents, same queries) into this one; returns self."""
        everything = slice(0, self.n_queries)
        for key in other.values:
            self._ensure(key)
            keep = other.indices[key] >= 0
            values = torch.cat([self.values[key], torch.where(keep, other.values[key], -math.inf)], dim=1)
            indices = torch.cat([self.indices[key], other.indices[key]], dim=1)
            extra = torch.cat([self.hijack[key], other.hijack[key]], dim=1)
            top = _top_candidates(values, _padding_last(values, indices), extra, self.depth)
            top = (top[0], _padding_back(top[1]), top[2])
            self._write_rows(key, everything, top)
            seen = ~torch.isnan(other.gold[key])
            self.gold[key] = torch.where(seen, other.gold[key], self.gold[key])
        for key, value in other.hijack_total.items():
            self.hijack_total[key] = self.hijack_total.get(key, torch.zeros(2, dtype=torch.float64)) + value
        return self

    # -- safe storage: plain tensors in a safetensors file (loading cannot run code) --
    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for key in self.values:
            out[f"values|{key}"] = self.values[key].contiguous()
            out[f"indices|{key}"] = self.indices[key].contiguous()
            out[f"hijack|{key}"] = self.hijack[key].contiguous()
            out[f"gold|{key}"] = self.gold[key].contiguous()
        for key, value in self.hijack_total.items():
            out[f"hijack_total|{key}"] = value
        out["shape"] = torch.tensor([self.n_queries, self.gold_width, self.depth])
        return out

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "RankedScores":
        n_queries, gold_width, depth = (int(v) for v in state["shape"].tolist())
        ranked = cls(n_queries, gold_width, depth)
        for name, tensor in state.items():
            field_name, _, key = name.partition("|")
            if field_name in ("values", "indices", "hijack", "gold"):
                getattr(ranked, field_name)[key] = tensor
            elif field_name == "hijack_total":
                ranked.hijack_total[key] = tensor
        return ranked

    def save(self, path) -> None:
        from safetensors.torch import save_file

        from lir_robust.core.files import atomic_path

        with atomic_path(path) as temporary:
            save_file(self.state_dict(), str(temporary))

    @classmethod
    def load(cls, path) -> "RankedScores":
        from safetensors.torch import load_file

        return cls.from_state_dict(load_file(str(path)))
