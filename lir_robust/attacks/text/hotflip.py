"""Adversarial passages by HotFlip (Zhong et al., "Poisoning Retrieval Corpora by Injecting Adversarial Passages",
EMNLP 2023), through the model AND the pooling head under test.

A passage is ``L`` tokens between the document's [CLS] + marker and [SEP]. Its objective is the mean pooled score
(:func:`lir_robust.scoring.scorer.late_interaction_scores` with the head under test) of a cluster of TRAINING
queries against it (or, ``objective="margin"``, the mean of each query's score minus its 10th-best clean document's,
capped). It starts from the cluster's own query tokens that cover its queries best (:func:`covering_tokens`: the
black-box cluster text fitted to L tokens), so the optimisation starts where the black-box attack stands. Each
iteration:

1. picks a position at random (seeded);
2. takes the gradient of the objective with respect to the input token embeddings ``e [L, H]`` (the one-hot
   gradient through the input embedding matrix ``W [V, H]``: ``d objective / d onehot_i = W @ grad_i``);
3. keeps the ``candidates`` tokens of highest ``W @ grad_i`` at that position (only tokens that survive a text round
   trip, see :func:`candidate_vocabulary`);
4. re-scores every candidate passage exactly (one batched forward) and keeps the best swap if it raises the objective.

The passage is returned as TEXT (its tokens joined by spaces); the caller re-encodes it through the model's own
document encoder (:mod:`lir_robust.attacks.text.evaluate`), so what is measured is what an attacker can publish.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from lir_robust.encoders.text_colbert import TextColBERT
from lir_robust.scoring.pooling import PoolingHead, parse_head
from lir_robust.scoring.scorer import late_interaction_scores, pad_with_mask

__all__ = ["HotFlipSettings", "HotFlipResult", "candidate_vocabulary", "passage_text", "covering_tokens", "initial_tokens",
           "hotflip_passage", "INITS", "OBJECTIVES"]

logger = logging.getLogger(__name__)

INITS = ("queries", "words", "mask")
OBJECTIVES = ("mean", "margin")


@dataclass(frozen=True)
class HotFlipSettings:
    """``length``: passage tokens L; ``iterations``: swaps tried (one position each); ``candidates``: top tokens per
    position re-scored exactly; ``init``: ``"queries"`` (the cluster's training query texts fitted to L tokens, see
    :func:`covering_tokens`), ``"words"`` (the cluster's most frequent content words, cycled to L tokens) or
    ``"mask"`` (the paper's [MASK] tokens); ``objective``: ``"mean"`` (the mean pooled score over the training
    queries) or ``"margin"`` (the mean over the training queries of ``min(score - threshold, margin)``, threshold =
    the query's 10th-best clean document score: what success@10 needs, a query won by ``margin`` stops pulling);
    ``seed``: the positions drawn."""

    length: int = 32
    iterations: int = 100
    candidates: int = 32
    init: str = "queries"
    objective: str = "mean"
    margin: float = 1.0
    positions: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.length < 1 or self.iterations < 0 or self.candidates < 1 or self.positions < 1:
            raise ValueError(f"HotFlip needs length >= 1, iterations >= 0, candidates >= 1, positions >= 1; got {self}")
        if self.init not in INITS:
            raise ValueError(f"HotFlip init must be one of {INITS}, got {self.init!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"HotFlip objective must be one of {OBJECTIVES}, got {self.objective!r}")


@dataclass
class HotFlipResult:
    """The passage (text and token ids), its objective before / after, and what it cost."""

    text: str
    token_ids: list[int]
    initial_objective: float
    objective: float
    iterations: int
    swaps: int
    seconds: float
    history: list[float] = field(default_factory=list)  # objective after each iteration
    last_swap: int = 0  # the iteration (1-based) of the last swap kept: the iterations that were of use; 0 = none

    def to_dict(self) -> dict:
        return {"text": self.text, "initial_objective": self.initial_objective, "objective": self.objective,
                "iterations": self.iterations, "swaps": self.swaps, "last_swap": self.last_swap, "seconds": self.seconds,
                "seconds_per_iteration": self.seconds / max(1, self.iterations)}


def candidate_vocabulary(model: TextColBERT) -> torch.Tensor:
    """bool ``[V]``: tokens a passage may use - whole words (no ``##`` piece), not special, not ``[unused]``, not
    masked out of documents (punctuation), and tokenised back to themselves, so the passage's text re-encodes to the
    very tokens that were optimised."""
    tokenizer = model.tokenizer
    vocabulary = tokenizer.get_vocab()
    size = len(tokenizer)
    allowed = torch.zeros(size, dtype=torch.bool)
    special = set(tokenizer.all_special_ids) | set(model.punctuation_ids.tolist())
    tokens = [(token, index) for token, index in vocabulary.items() if index < size and index not in special
              and not token.startswith("##") and not (token.startswith("[") and token.endswith("]")) and token.strip() == token
              and token]
    if not tokens:
        raise ValueError("the tokenizer has no whole-word token a passage could use")
    encoded = tokenizer([token for token, _ in tokens], add_special_tokens=False)["input_ids"]
    for (token, index), ids in zip(tokens, encoded):
        if list(ids) == [index]:
            allowed[index] = True
    if model.colbert_config.lowercase:  # texts are lowercased before tokenising: uppercase tokens never come back
        for token, index in tokens:
            if token != token.lower():
                allowed[index] = False
    return allowed


def passage_text(model: TextColBERT, token_ids: Sequence[int]) -> str:
    """The passage's text: its tokens joined by spaces (whole-word tokens, so it tokenises back to ``token_ids``)."""
    return " ".join(model.tokenizer.convert_ids_to_tokens(list(token_ids)))


@torch.no_grad()
def covering_tokens(model: TextColBERT, texts: Sequence[str], queries: Sequence[torch.Tensor], length: int,
                    allowed: torch.Tensor) -> list[int]:
    """``length`` tokens of ``texts`` (the cluster's training query texts) that cover ``queries`` (their ``[Tq, D]``
    embeddings) best, in their order of appearance: the texts are encoded as documents, and tokens are picked
    greedily, each the one that raises the most ``sum over query tokens of max over picked tokens of similarity``
    (MaxSim's sum over the queries; facility location). Only ``allowed`` tokens are picked; fewer than ``length``
    candidates are cycled. Empty when no text holds an allowed token."""
    device = next(model.parameters()).device
    batch = model.tokenize(list(texts), is_query=False)
    ids = batch["input_ids"].to(device)
    vectors, mask = model(ids, batch["attention_mask"].to(device), is_query=False)
    keep = mask & allowed.to(device)[ids]
    if not bool(keep.any()):
        return []
    where = keep.nonzero()  # (text, position), in reading order
    candidates, candidate_ids = vectors[keep], ids[keep]
    query_vectors = torch.cat([query.to(device).float() for query in queries])
    similarity = query_vectors @ candidates.T  # [T, C]
    best = torch.zeros(similarity.shape[0], device=device)
    picked: list[int] = []
    for _ in range(min(length, candidates.shape[0])):
        gain = (similarity - best.unsqueeze(1)).clamp(min=0).sum(dim=0)
        gain[picked] = -1.0
        choice = int(gain.argmax())
        picked.append(choice)
        best = torch.maximum(best, similarity[:, choice])
    picked.sort(key=lambda index: (int(where[index, 0]), int(where[index, 1])))
    tokens = candidate_ids[picked].tolist()
    return [tokens[position % len(tokens)] for position in range(length)]


def initial_tokens(model: TextColBERT, settings: HotFlipSettings, words: Sequence[str], allowed: torch.Tensor,
                   texts: Sequence[str] = (), queries: Sequence[torch.Tensor] = ()) -> list[int]:
    """``L`` starting tokens: [MASK] x L (``init="mask"``; [UNK] without a mask token); the tokens of ``words``
    that are allowed whole words, cycled to L (``"words"``); or :func:`covering_tokens` of ``texts`` against
    ``queries`` (``"queries"``). [MASK]s where nothing usable is given."""
    tokenizer = model.tokenizer
    filler = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    if settings.init == "mask":
        return [int(filler)] * settings.length
    if settings.init == "queries":
        ids = covering_tokens(model, texts, queries, settings.length, allowed) if texts else []
        return ids or [int(filler)] * settings.length
    ids = [token for word in words for token in tokenizer(word, add_special_tokens=False)["input_ids"] if bool(allowed[token])]
    if not ids:
        return [int(filler)] * settings.length
    return [ids[position % len(ids)] for position in range(settings.length)]


class _Objective:
    """The objective (see :class:`HotFlipSettings`) of fixed training queries against candidate passages ``[B, L]``
    of token ids: their mean pooled score, or with ``thresholds [Nq]`` the mean of ``min(score - threshold, margin)``."""

    def __init__(self, model: TextColBERT, queries: Sequence[torch.Tensor], head: PoolingHead,
                 thresholds: torch.Tensor | None = None, margin: float = 1.0):
        self.model, self.head, self.margin = model, head, margin
        self.device = next(model.parameters()).device
        self.queries, self.query_mask = pad_with_mask(list(queries), device=self.device)
        self.thresholds = None if thresholds is None else thresholds.to(self.device).float().view(-1, 1)
        tokenizer = model.tokenizer
        marker = model._marker_ids[False]
        self.prefix = [tokenizer.cls_token_id] + ([marker] if marker is not None else [])
        self.suffix = [tokenizer.sep_token_id]
        self.embedding_matrix = model.backbone.get_input_embeddings().weight  # [V, H]

    def inputs(self, passages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L]`` passage ids -> document ``input_ids`` and ``attention_mask`` ``[B, L + 3]`` (as ``tokenize``)."""
        batch = passages.shape[0]
        prefix = torch.tensor(self.prefix, device=self.device).expand(batch, -1)
        suffix = torch.tensor(self.suffix, device=self.device).expand(batch, -1)
        input_ids = torch.cat([prefix, passages.to(self.device), suffix], dim=1)
        return input_ids, torch.ones_like(input_ids)

    def values(self, passages: torch.Tensor, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """``[B]``: the objective of each passage."""
        input_ids, attention = self.inputs(passages)
        vectors, mask = self.model(input_ids, attention, is_query=False, inputs_embeds=inputs_embeds)
        scores = late_interaction_scores(self.queries, self.query_mask, vectors, mask, self.head)  # [Nq, B]
        if self.thresholds is not None:
            scores = (scores - self.thresholds).clamp(max=self.margin)
        return scores.mean(dim=0)

    def token_gradient(self, passage: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(objective, ``[L, V]`` one-hot gradient ``W @ d objective / d e_i`` at each passage position)."""
        input_ids, _ = self.inputs(passage.unsqueeze(0))
        embeds = self.embedding_matrix[input_ids].detach().requires_grad_(True)
        value = self.values(passage.unsqueeze(0), inputs_embeds=embeds)[0]
        (gradient,) = torch.autograd.grad(value, embeds)
        positions = gradient[0, len(self.prefix) : len(self.prefix) + passage.shape[0]]  # [L, H]
        return float(value.detach()), positions @ self.embedding_matrix.detach().T


def hotflip_passage(
    model: TextColBERT,
    queries: Sequence[torch.Tensor],
    head: "str | PoolingHead",
    settings: HotFlipSettings,
    words: Sequence[str] = (),
    allowed: torch.Tensor | None = None,
    show_progress: bool = True,
    description: str = "hotflip",
    texts: Sequence[str] = (),
    thresholds: torch.Tensor | None = None,
    start_tokens: Sequence[int] | None = None,
) -> HotFlipResult:
    """One adversarial passage against ``queries`` (training queries' ``[Tq, D]`` embeddings from this model) under
    ``head``; ``words``: the cluster's content words for ``init="words"``; ``texts``: the queries' texts for
    ``init="queries"``; ``thresholds [Nq]``: each query's 10th-best clean document score under ``head``, needed by
    ``objective="margin"``; ``allowed``: :func:`candidate_vocabulary` (computed when None); ``start_tokens``: L token
    ids to start from instead of ``settings.init`` (a passage optimised before, continued: e.g. against a model that
    has trained since, as the adversarial-passage negatives of fine-tuning do)."""
    if settings.objective == "margin" and thresholds is None:
        raise ValueError("HotFlip objective 'margin' needs each training query's threshold score (thresholds=...)")
    head = parse_head(head)
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    allowed = candidate_vocabulary(model) if allowed is None else allowed
    objective = _Objective(model, queries, head, thresholds if settings.objective == "margin" else None, settings.margin)
    if start_tokens is not None and len(start_tokens) != settings.length:
        raise ValueError(f"start_tokens holds {len(start_tokens)} tokens; the passage length is {settings.length}")
    start = list(start_tokens) if start_tokens is not None else initial_tokens(model, settings, words, allowed, texts, queries)
    passage = torch.tensor(start, dtype=torch.long)
    rng = random.Random(settings.seed)
    candidates = min(settings.candidates, int(allowed.sum()))
    with torch.no_grad():
        current = float(objective.values(passage.unsqueeze(0))[0])
    initial, history, swaps, last_swap = current, [], 0, 0
    progress = tqdm(range(settings.iterations), desc=description, disable=not show_progress, leave=False)
    spread = min(settings.positions, settings.length)
    per_position = max(1, -(-candidates // spread))
    for _ in progress:
        positions = rng.sample(range(settings.length), spread) if spread > 1 else [rng.randrange(settings.length)]
        _, gradient = objective.token_gradient(passage)
        ranking = gradient[positions].masked_fill(~allowed.to(gradient.device), float("-inf"))
        if spread > 1:  # each position's current token is no candidate, so every position keeps ceil(c / P) swaps
            ranking[torch.arange(spread), passage[positions].to(ranking.device)] = float("-inf")
        ranked = ranking.topk(per_position, dim=1)  # [P, ceil(c / P)]
        swaps_at = torch.tensor(positions).repeat(per_position)  # rank-major: every position's best first, so the
        tokens = ranked.indices.T.reshape(-1).cpu()  # cut to ``candidates`` drops the lowest ranks, never a position
        useful = (tokens != passage[swaps_at]) & torch.isfinite(ranked.values.T.reshape(-1)).cpu()  # never a masked token
        swaps_at, tokens = swaps_at[useful][:candidates], tokens[useful][:candidates]
        if tokens.numel():
            trial = passage.repeat(tokens.numel(), 1)
            trial[torch.arange(tokens.numel()), swaps_at] = tokens
            with torch.no_grad():
                values = objective.values(trial)
            best = int(values.argmax())
            if float(values[best]) > current:
                passage, current, swaps = trial[best].clone(), float(values[best]), swaps + 1
                last_swap = len(history) + 1
        history.append(current)
        progress.set_postfix(objective=f"{current:.3f}", refresh=False)
    model.train(was_training)
    seconds = time.perf_counter() - started
    ids = passage.tolist()
    return HotFlipResult(text=passage_text(model, ids), token_ids=ids, initial_objective=initial, objective=current,
                         iterations=settings.iterations, swaps=swaps, seconds=seconds, history=history,
                         last_swap=last_swap)
