"""The pieces the merged-state sweep (:mod:`lir_robust.sweep.engine`) is built from: every head's summary of a set of
similarity columns (:func:`shared_partials`), ranges of whole queries that bound its temporaries
(:func:`query_tiles`), the checks on its inputs, and its dense result (:class:`SweepScores`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from lir_robust.encoders.flat_corpus import FlatCorpus
from lir_robust.scoring.pooling import PoolingHead, SharedWork

__all__ = ["SweepScores", "shared_partials", "query_tiles", "check_sweep_inputs"]


@dataclass
class SweepScores:
    """Scores of every (head, injection, K) and hijack shares of every (injection, K), dense.

    ``scores[head_spec][injection][K]``: float32 ``[Nq, Nd]``; K = 0 is the same tensor under every injection.
    ``hijack[injection][K]``: float16 ``[Nq, Nd]``, the share of the query's tokens whose best-matching patch in the
    injected document is an injected one (0 for documents left untouched).
    """

    scores: dict[str, dict[str, dict[int, torch.Tensor]]]
    hijack: dict[str, dict[int, torch.Tensor]]


def shared_partials(
    heads: Sequence[PoolingHead], similarities: torch.Tensor, mask: torch.Tensor | None, masked_are_zero: bool = False,
) -> tuple[list[tuple], torch.Tensor]:
    """Every head's summary of the last axis of ``similarities [..., L]`` (through ``head.partial_shared``, which
    shares the max, the exponentials of one tau and the top-k between heads), and the max ``[...]`` (-inf where no
    patch is real), which the hijack share needs."""
    work = SharedWork(similarities, mask, masked_are_zero=masked_are_zero)
    return [head.partial_shared(work) for head in heads], work.peak


def query_tiles(token_counts: torch.Tensor, columns: int, budget: int) -> list[tuple[int, int]]:
    """Ranges of whole queries ``(first, stop)`` whose tokens x columns stay within ``budget`` elements (at least one
    query per range)."""
    tiles, start, tokens = [], 0, 0
    for query, count in enumerate(token_counts.tolist()):
        if query > start and (tokens + count) * columns > budget:
            tiles.append((start, query))
            start, tokens = query, 0
        tokens += count
    tiles.append((start, len(token_counts)))
    return tiles


def check_sweep_inputs(queries: Sequence[torch.Tensor], corpus: FlatCorpus, gold: Sequence[Sequence[int]]) -> None:
    """Clear errors for what would otherwise become raw torch errors deep inside the sweep."""
    if not len(queries):
        raise ValueError("the sweep needs at least one query")
    if not len(corpus):
        raise ValueError("the sweep needs at least one document")
    if len(gold) != len(queries):
        raise ValueError(f"gold lists the relevant documents of {len(gold)} queries, but there are {len(queries)} queries")
    for index, query in enumerate(queries):
        if not isinstance(query, torch.Tensor) or query.dim() != 2 or query.shape[0] == 0:
            shape = tuple(query.shape) if isinstance(query, torch.Tensor) else type(query).__name__
            raise ValueError(f"query {index} has shape {shape}; every query must be a [tokens, dim] tensor with >= 1 token")
        if query.shape[1] != corpus.dim:
            raise ValueError(f"query {index} has {query.shape[1]}-d tokens but the documents have {corpus.dim}-d patches: "
                             "queries and documents must come from the same model / projection")
    for row, indices in enumerate(gold):
        bad = [index for index in indices if not hasattr(index, "__index__") or not 0 <= int(index) < len(corpus)]
        if bad:
            raise ValueError(f"gold[{row}] lists documents {bad[:5]} outside [0, {len(corpus)}): gold holds document "
                             "positions in the corpus list")
