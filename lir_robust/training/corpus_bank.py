"""The corpus bank behind ``--injected-negatives hard-corpus:K``: hard patches from the whole training corpus.

The evaluation's ``hard`` attack (lir_robust.attacks.generators.hard_negative_patches) appends to non-gold documents
the corpus patches nearest to the query's tokens, searched over every non-gold document of the collection with the
final encoder. The defence's ``hard:K`` can only take them from the documents of the batch (32 of Cranfield's 1,400),
so its patches are far less similar to the query than the evaluation's. ``hard-corpus:K`` takes them where the
evaluation does:

- the bank: every distinct document of the training pairs (by ``document_id``, the text the pairs hold, tokenised as
  training documents are, ``--train-document-max-length``), encoded by the CURRENT encoder in eval mode (no dropout)
  without gradient, its valid token vectors kept flat (float32, ``[M, D]``, with the document of each row). It is
  rebuilt every ``refresh`` optimizer steps, at step 0 and whenever a run starts or resumes (a resumed run resumes
  from a checkpoint whose step is a multiple of ``refresh``, so it rebuilds the bank an uninterrupted run built at
  that step; the command checks that ``--save-every`` is a multiple of it);
- a query's gold: the bank documents of every pair with the same query text (its own positive and any other
  positive the data gives it); their patches are never taken;
- a query's patches: for each valid query token (the query's current embeddings, detached) its nearest allowed bank
  patch (inner product), in token order, then each token's second nearest, ...; a patch already taken is skipped; the
  first K (round robin, as the evaluation's hard kind). The search runs over the bank in chunks of ``chunk_rows``
  rows, so its memory is ``[B, Tq, chunk_rows]`` whatever the corpus size.

The patches are constants (detached), like the spike patches: they are bank rows computed up to ``refresh - 1`` steps
ago outside any graph, so the gradient moves the query tokens (and the host and positive documents) away from them,
not the patches themselves. The defence appends the same K patches to each host of the query (the evaluation appends
one query's patches to every non-gold document); a patch may come from the host itself, as in the evaluation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from lir_robust.training.defence import round_robin_first
from lir_robust.training.pairs import TrainingPair

__all__ = ["DEFAULT_REFRESH", "CHUNK_ROWS", "BankSource", "CorpusBank", "encode_bank", "nearest_bank_patches"]

logger = logging.getLogger(__name__)

DEFAULT_REFRESH = 10  # optimizer steps between two rebuilds of the bank (4 builds in the recipe's 40 steps)
CHUNK_ROWS = 8192  # bank rows compared with a batch's query tokens at once


@dataclass
class CorpusBank:
    """Token vectors of the training corpus: ``vectors [M, D]`` float32 (detached), ``owner [M]`` the bank document
    of each row, ``built_at`` the optimizer step whose weights encoded them."""

    vectors: torch.Tensor
    owner: torch.Tensor
    built_at: int


class BankSource:
    """The bank's documents (each distinct ``document_id`` of ``pairs`` once, in order of first appearance) and each
    query text's gold documents; :meth:`collator` adds the gold of each pair to its batch."""

    def __init__(self, pairs: Sequence[TrainingPair]):
        self.index: dict[str, int] = {}
        self.texts: list[str] = []
        for pair in pairs:
            if not isinstance(pair.document, str):
                raise ValueError("hard-corpus injected negatives need text documents (a text model's pairs)")
            key = pair.document_id or pair.document
            if key not in self.index:
                self.index[key] = len(self.texts)
                self.texts.append(pair.document)
        self.gold_of_query: dict[str, set[int]] = {}
        for pair in pairs:
            self.gold_of_query.setdefault(pair.query, set()).add(self.index[pair.document_id or pair.document])

    def gold(self, pairs: Sequence[TrainingPair]) -> torch.Tensor:
        """Bank documents each pair's query may not take patches from: long ``[B, G]``, -1 padding."""
        rows = [sorted(self.gold_of_query.get(pair.query, set()) | {self.index[pair.document_id or pair.document]})
                for pair in pairs]
        width = max(len(row) for row in rows)
        return torch.tensor([row + [-1] * (width - len(row)) for row in rows], dtype=torch.long)

    def collator(self, collate: Callable) -> Callable:
        """``collate`` whose batches also hold ``"bank_gold"`` (:meth:`gold`)."""

        def with_gold(pairs: list[TrainingPair]) -> dict:
            return {**collate(pairs), "bank_gold": self.gold(pairs)}

        return with_gold


def encode_bank(encode: Callable[[dict], tuple[torch.Tensor, torch.Tensor]], inputs: Sequence[dict], step: int,
                device: torch.device | str = "cpu", show_progress: bool = False) -> CorpusBank:
    """The bank of documents already tokenised in ``inputs`` (batches of ``{input_ids, attention_mask}``), encoded by
    ``encode(batch) -> (embeddings [b, T, D], mask [b, T])`` without gradient. The caller puts the model in eval mode."""
    started = time.perf_counter()
    vectors, owner, first = [], [], 0
    with torch.no_grad():
        for batch in tqdm(inputs, desc=f"corpus bank (step {step})", disable=not show_progress, leave=False):
            embeddings, mask = encode({key: value.to(device) for key, value in batch.items()})
            mask = mask.to(torch.bool)
            vectors.append(embeddings.detach().float()[mask])
            owner.append(torch.arange(first, first + mask.shape[0], device=mask.device).repeat_interleave(mask.sum(dim=1)))
            first += mask.shape[0]
    bank = CorpusBank(torch.cat(vectors), torch.cat(owner), step)
    logger.info("corpus bank at step %d: %d documents, %d token vectors, %.1f s", step, first, bank.vectors.shape[0],
                time.perf_counter() - started)
    return bank


def nearest_bank_patches(bank: CorpusBank, queries: torch.Tensor, query_mask: torch.Tensor, gold: torch.Tensor,
                         count: int, chunk_rows: int = CHUNK_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's ``count`` hard patches from the bank: ``(patches [B, count, D] float32, valid [B, count] bool)``.

    queries ``[B, Tq, D]`` (detached here) with ``query_mask [B, Tq]``; ``gold [B, G]`` bank documents excluded per
    query (-1: padding). Round robin over the valid tokens' nearest allowed rows (see the module docstring); fewer
    than ``count`` allowed rows leave the rest invalid (zero)."""
    batch, tokens, dim = queries.shape
    total = bank.vectors.shape[0]
    depth = min(count, total)  # depth K per token holds at least K distinct rows: the round robin's first K are exact
    device = bank.vectors.device  # the search runs where the bank is
    flat = queries.detach().float().to(device).reshape(batch * tokens, dim)
    gold = gold.to(device)
    best_values = torch.full((batch, tokens, 0), -torch.inf, device=device)
    best_rows = torch.zeros(batch, tokens, 0, dtype=torch.long, device=device)
    with torch.no_grad():
        for start in range(0, total, chunk_rows):
            rows = bank.vectors[start : start + chunk_rows]
            similarities = (flat @ rows.T).view(batch, tokens, -1)  # [B, Tq, C]
            banned = (bank.owner[start : start + chunk_rows].view(1, -1, 1) == gold.unsqueeze(1)).any(dim=2)  # [B, C]
            similarities.masked_fill_(banned.unsqueeze(1), -torch.inf)
            values, found = similarities.topk(min(depth, rows.shape[0]), dim=-1)
            values = torch.cat([best_values, values], dim=-1)
            found = torch.cat([best_rows, found + start], dim=-1)
            order = values.argsort(dim=-1, descending=True, stable=True)[..., :depth]  # ties: the lower row first
            best_values, best_rows = values.gather(-1, order), found.gather(-1, order)
    valid = torch.isfinite(best_values) & query_mask.to(device=device, dtype=torch.bool).unsqueeze(-1)
    chosen = round_robin_first(best_rows, valid, count)  # [B, count], -1: none
    patches = bank.vectors[chosen.clamp_min(0)].masked_fill((chosen < 0).unsqueeze(-1), 0)
    return patches.to(queries.device), (chosen >= 0).to(queries.device)
