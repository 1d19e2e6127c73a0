"""Test-only references: what the merged-state sweep must equal, computed the slow, explicit way."""

from __future__ import annotations

from typing import Sequence

import torch

from lir_robust.attacks.generators import inject
from lir_robust.attacks.kinds import InjectionSettings
from lir_robust.attacks.sources import PatchSource
from lir_robust.encoders.flat_corpus import FlatCorpus
from lir_robust.scoring.pooling import PoolingHead
from lir_robust.scoring.scorer import score


def brute_force_scores(
    queries: Sequence[torch.Tensor],
    documents: Sequence[torch.Tensor],
    gold: Sequence[Sequence[int]],
    head: str | PoolingHead,
    kind: str,
    k: int,
    ks: int | Sequence[int],
    settings: InjectionSettings | None = None,
    hard_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference: build every injected document explicitly and score it with ``head``: ``[Nq, Nd]`` (slow; tests).

    ``ks``: the sweep's budget grid (it fixes the blocks of gaussian / corpus patches); ``k``: the budget scored.
    """
    settings = settings or InjectionSettings()
    corpus = FlatCorpus.from_documents(documents)
    source = PatchSource(kind, ks, settings, queries, corpus, gold, hard_indices=hard_indices)
    out = torch.empty(len(queries), len(corpus))
    for query in range(len(queries)):
        patches = [source.patches_for(query, document) if k > 0 else None for document in range(len(corpus))]
        patches = [None if extra is None else extra[:k] for extra in patches]
        injected, _ = inject([corpus.document(d) for d in range(len(corpus))], patches)
        out[query] = score([queries[query]], injected, head)[0]
    return out
