"""Test-only references: what the merged-state sweep must equal, computed the slow, explicit way."""

from __future__ import annotations

import itertools
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


def round_robin_hard_rows(query: torch.Tensor, corpus: FlatCorpus, gold: Sequence[int], count: int) -> list[int]:
    """By definition, in plain torch: rows of ``corpus.vectors`` of the ``count`` hard patches of ``query [Tq, D]``:
    every token's nearest non-gold patch, then every token's second nearest, ..., a patch already taken skipped."""
    owner = torch.repeat_interleave(torch.arange(len(corpus)), corpus.lengths)
    similarities = query.float() @ corpus.vectors.float().T  # [Tq, N]
    similarities[:, torch.isin(owner, torch.tensor(list(gold), dtype=torch.long))] = -torch.inf  # ranks among non-gold
    ranking = similarities.argsort(dim=1, descending=True, stable=True)  # [Tq, N], nearest first
    taken: list[int] = []
    for row in ranking.T.reshape(-1).tolist():  # rank-major: round robin over the tokens
        if int(owner[row]) not in gold and row not in taken:
            taken.append(row)
    return taken[:count]


def _is_spike(patch: torch.Tensor, query: torch.Tensor, tokens: int) -> bool:
    """Whether ``patch [D]`` is the L2-normalised mean of ``tokens`` distinct tokens of ``query [Tq, D]``."""
    size = max(1, min(tokens, query.shape[0]))
    return any(torch.allclose(torch.nn.functional.normalize(query[list(chosen)].float().mean(0), dim=-1), patch, atol=1e-6)
               for chosen in itertools.combinations(range(query.shape[0]), size))


def injected_patches_by_definition(
    injection: str, ks: Sequence[int], settings: InjectionSettings, queries: Sequence[torch.Tensor],
    documents: Sequence[torch.Tensor], gold: Sequence[Sequence[int]], source: PatchSource,
) -> list[list[torch.Tensor | None]]:
    """``patches[query][document]``: the ``[max(ks), D]`` patches a document must receive for a query (None: left
    alone), from the definitions of the kinds, not from :class:`PatchSource`'s code.

    Deterministic parts are computed here in plain torch: which documents are injected (the target: every document,
    the non-gold ones, or N distinct non-gold ones per query for ``KIND@N``), the hard patches (round-robin nearest
    non-gold patches; attacked slot j takes the list's entries j, j + N, ...). Random draws cannot be recomputed
    without the seeding code, so ``source``'s draws are taken and checked against their definitions: a spike is the
    normalised mean of ``spike_tokens`` distinct query tokens, the same for every injected document of a query unless
    the attack gives each document its own; gaussian patches are unit vectors and corpus patches rows of *other*
    documents, both the same for every query; every kind nests its budgets (K uses the first K of one list).
    """
    corpus = FlatCorpus.from_documents(documents)
    owner = torch.repeat_interleave(torch.arange(len(corpus)), corpus.lengths)
    kind, attacked = (injection.split("@")[0], int(injection.split("@")[1])) if "@" in injection else (injection, None)
    k_max = max(ks)
    target = settings.targets.get(kind, "non-gold" if kind in ("hard", "spike") else "all")
    patches: list[list[torch.Tensor | None]] = []
    for query in range(len(queries)):
        row: list[torch.Tensor | None] = []
        if attacked is not None:
            chosen = source.attacked_documents[query].tolist()
            non_gold = [d for d in range(len(corpus)) if d not in gold[query]]
            assert len(chosen) == min(attacked, len(non_gold)) == len(set(chosen)) and set(chosen) <= set(non_gold)
        hard_rows = round_robin_hard_rows(queries[query], corpus, gold[query], k_max * (attacked or 1)) if kind == "hard" else None
        for document in range(len(corpus)):
            if attacked is not None:
                injected = document in chosen
            else:
                injected = target == "all" or document not in gold[query]
            if not injected:
                row.append(None)
                continue
            if kind == "hard":
                rows = hard_rows[chosen.index(document) :: attacked][:k_max] if attacked else hard_rows
                row.append(corpus.vectors[rows].float())
                continue
            drawn = source.patches_for(query, document)
            assert drawn is not None and drawn.shape == (k_max, corpus.dim)
            if kind == "spike":
                assert all(_is_spike(patch, queries[query], settings.spike_tokens) for patch in drawn)
                if attacked is None and any(r is not None for r in row):  # one list per query
                    assert torch.equal(drawn, next(r for r in row if r is not None))
            elif kind == "gaussian":
                assert torch.allclose(drawn.norm(dim=-1), torch.ones(k_max), atol=1e-5)
            else:  # corpus: each patch a row of another document
                matches = (drawn.unsqueeze(1) == corpus.vectors.float().unsqueeze(0)).all(dim=-1)  # [k_max, N]
                assert matches.any(dim=1).all() and not (matches & (owner == document)).any()
            if kind in ("gaussian", "corpus") and query:  # a document's patches do not depend on the query
                assert patches[0][document] is None or torch.equal(drawn, patches[0][document])
            row.append(drawn)
        patches.append(row)
    return patches


def scores_of_injected_documents(
    queries: Sequence[torch.Tensor], documents: Sequence[torch.Tensor], patches: list[list[torch.Tensor | None]],
    head: str | PoolingHead, k: int,
) -> torch.Tensor:
    """``[Nq, Nd]``: each query scored by ``head`` against every document with its first ``k`` patches appended."""
    out = torch.empty(len(queries), len(documents))
    for query in range(len(queries)):
        injected = [document.float() if extra is None or k == 0 else torch.cat([document.float(), extra[:k]])
                    for document, extra in zip(documents, patches[query])]
        out[query] = score([queries[query]], injected, head)[0]
    return out
