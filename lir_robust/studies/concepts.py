"""The controlled concept environment of the synthetic concept study (PAPER.md, "Synthetic environment"), its
encoder and training; :mod:`lir_robust.studies.synthetic` runs it over heads and seeds.

The world:

- ``C`` concept vectors in ``R^dim`` (standard Gaussian, L2-normalised).
- A query is ``T`` tokens ``normalize(concept + N(0, sigma^2))``, its concepts drawn uniformly (distinct within a
  query).
- Its positive (gold) document has ``M`` patches: the first ``support`` carry ``support`` of the query's concepts
  ("distributed support"), the rest carry concepts drawn uniformly from all ``C``; every patch gets the same noise.
- Each query has ``hard_negatives`` hard negative documents: the first ``hard_shared_concepts`` patches carry query
  concepts, the next one is a "spike", ``normalize(mean of spike_concepts other query concepts + noise)``, the rest
  are random concepts.
- Documents are generated once at the longest length of the sweep; a document of length ``M`` is the first ``M``
  patches, so queries, concept assignments and noise stay fixed across the length sweep.

Everything is in the encoder's input space; the 3-layer feed-forward encoder (applied to every token / patch alone,
outputs L2-normalised) maps inputs to embeddings. Training is in-batch InfoNCE over ``Z_ij = score(q_i, d_j+)`` with a
pooling head, Adam, a fixed training set.

Retrieval evaluation: the evaluation queries are fresh queries of the same dictionary. The candidate pool of every
evaluation query is the whole evaluation corpus: the gold documents of all evaluation queries plus all their hard
negatives (``N_eval * (1 + hard_negatives)`` documents), so each query competes against its own hard negatives,
other queries' hard negatives and other queries' gold documents. Recall@k = share of queries whose gold document is
ranked in the top k (ties count against the gold document).

Injection: for every evaluation query, ``K`` patches targeted at that query are appended to every NON-gold document of
the pool (the gold document is left alone). Kinds: ``hard`` (token-targeted near-copies of the query's concepts:
patch k is ``normalize(concept of query token k mod T + noise)``), ``spike`` (averages of ``spike_concepts`` query
concepts, like the hard negatives' spike) and ``gaussian`` (the control: random directions, ``normalize(N(0, I))``,
unit norm like every other input patch). Injected patches go through the encoder like any patch. Budgets are nested (the first 25 of the 400).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lir_robust.scoring.diagnostics import gold_pair_gradient_concentration
from lir_robust.scoring.losses import PooledInfoNCELoss
from lir_robust.scoring.pooling import PoolingHead, parse_head
from lir_robust.scoring.scorer import late_interaction_scores

__all__ = [
    "SyntheticConfig",
    "SyntheticEnvironment",
    "make_environment",
    "ConceptEncoder",
    "make_encoder",
    "train_and_evaluate",
    "evaluate_retrieval",
    "evaluate_gradient_concentration",
    "evaluate_injection",
    "INJECTION_KINDS",
]

logger = logging.getLogger(__name__)

INJECTION_KINDS = ("hard", "spike", "gaussian")


@dataclass
class SyntheticConfig:
    """Every knob of the environment and its training. Values stated by PAPER.md are marked (paper)."""

    # --- stated by the paper ---
    num_concepts: int = 100  # (paper) C
    dim: int = 16  # (paper) concept / embedding dimension
    query_tokens: int = 16  # (paper) T
    noise_std: float = 0.1  # (paper) sigma for query tokens and sigma_d for document patches
    batch_size: int = 64  # (paper) B
    epochs: int = 100  # (paper)
    eval_every: int = 5  # (paper) evaluate every N epochs (epoch 0 = before training is evaluated too)
    lengths: tuple[int, ...] = (32, 64, 128, 256)  # (paper) document-length sweep M
    injection_budgets: tuple[int, ...] = (0, 25, 50, 100, 200, 400)  # (paper) injected patches K
    # --- not stated by the paper: our defaults ---
    train_length: int = 32  # document length M used for training and the per-epoch evaluation
    support: int = 8  # query concepts carried by the gold document (T / 2)
    hard_negatives: int = 4  # hard negative documents per query
    hard_shared_concepts: int = 4  # query concepts a hard negative carries
    spike_concepts: int = 3  # query concepts averaged into a spike patch
    num_train_queries: int = 1024  # training set: 1024 (query, gold document) pairs = 16 batches per epoch
    num_eval_queries: int = 128  # evaluation queries; pool = 128 * (1 + hard_negatives) = 640 documents
    hidden_width: int = 64  # encoder: Linear(dim, w) - ReLU - Linear(w, w) - ReLU - Linear(w, dim)
    learning_rate: float = 1e-3  # Adam, default betas
    temperature: float = 1.0  # the paper states none: logits are the raw scores Z_ij
    normalize_scores: bool = False  # divide scores by query length before the temperature (colpali-engine does)
    hard_negatives_in_loss: bool = False  # the paper's loss uses in-batch positives only
    injection_length: int | None = None  # document length for the injection sweep; None = train_length
    injection_kinds: tuple[str, ...] = INJECTION_KINDS
    scoring_chunk_elements: int = 1 << 22  # similarities held at once while scoring (memory bound)

    def __post_init__(self):
        self.lengths = tuple(int(m) for m in self.lengths)
        self.injection_budgets = tuple(int(k) for k in self.injection_budgets)
        self.injection_kinds = tuple(self.injection_kinds)
        unknown = set(self.injection_kinds) - set(INJECTION_KINDS)
        if unknown:
            raise ValueError(f"unknown injection kinds {sorted(unknown)}; valid: {INJECTION_KINDS}")
        if self.query_tokens > self.num_concepts:
            raise ValueError("a query's concepts are distinct: query_tokens must be <= num_concepts")
        if self.support > self.query_tokens:
            raise ValueError(f"support ({self.support}) must be <= query_tokens ({self.query_tokens})")
        if self.hard_shared_concepts + self.spike_concepts > self.query_tokens:
            raise ValueError("hard_shared_concepts + spike_concepts must be <= query_tokens")
        needed = max(self.support, self.hard_shared_concepts + 1)
        if min(self.all_lengths) < needed:
            raise ValueError(f"every document length must be >= {needed} (support / hard negative patches)")
        if self.eval_every < 1 or self.epochs < 0 or self.batch_size < 2:
            raise ValueError("eval_every >= 1, epochs >= 0 and batch_size >= 2 are required")
        if self.num_train_queries < self.batch_size:
            raise ValueError(f"num_train_queries ({self.num_train_queries}) must be >= batch_size ({self.batch_size})")

    @property
    def injection_document_length(self) -> int:
        return self.train_length if self.injection_length is None else int(self.injection_length)

    @property
    def all_lengths(self) -> tuple[int, ...]:
        return tuple(sorted({*self.lengths, self.train_length, self.injection_document_length}))

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SyntheticConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown SyntheticConfig fields {sorted(unknown)}")
        return cls(**values)


@dataclass
class SyntheticEnvironment:
    """One seed's data, all in the encoder's input space (float32).

    Shapes (N = num_train_queries, E = num_eval_queries, H = hard_negatives, T = query_tokens, D = dim):
        concepts                 [C, D]
        train_query_concepts     [N, T] long      train_queries     [N, T, D]
        train_documents          [N, M_train, D]  (gold document of train query i)
        train_negatives          [N, H, M_train, D]  (only when hard_negatives_in_loss, else None)
        eval_query_concepts      [E, T] long      eval_queries      [E, T, D]
        eval_documents           [E, M_max, D]    (gold documents; length M = first M patches)
        eval_negatives           [E, H, M_max, D]
        injection_banks          kind -> [E, K_max, D]   patches targeted at each evaluation query
    """

    config: SyntheticConfig
    concepts: torch.Tensor
    train_query_concepts: torch.Tensor
    train_queries: torch.Tensor
    train_documents: torch.Tensor
    train_negatives: torch.Tensor | None
    eval_query_concepts: torch.Tensor
    eval_queries: torch.Tensor
    eval_documents: torch.Tensor
    eval_negatives: torch.Tensor
    injection_banks: dict[str, torch.Tensor] = field(default_factory=dict)

    def eval_corpus(self, length: int) -> torch.Tensor:
        """Evaluation pool at document length M: ``[E * (1 + H), M, D]``; gold of query i is document i."""
        negatives = self.eval_negatives[:, :, :length].reshape(-1, length, self.config.dim)
        return torch.cat([self.eval_documents[:, :length], negatives])


def _noisy(vectors: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``normalize(vectors + N(0, std^2))`` along the last dim."""
    noise = torch.randn(vectors.shape, generator=generator) * std
    return F.normalize(vectors + noise, dim=-1)


def _query_concepts(count: int, config: SyntheticConfig, generator: torch.Generator) -> torch.Tensor:
    """``[count, T]`` distinct concept ids per query, uniformly drawn."""
    return torch.rand(count, config.num_concepts, generator=generator).argsort(dim=1)[:, : config.query_tokens]


def _choose(query_concepts: torch.Tensor, how_many: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of each query's concepts ``[n, T]`` (first ``how_many`` used by the caller)."""
    order = torch.rand(query_concepts.shape, generator=generator).argsort(dim=1)
    return query_concepts.gather(1, order)[:, :how_many]


def _gold_documents(query_concepts: torch.Tensor, length: int, concepts: torch.Tensor, config: SyntheticConfig,
                    generator: torch.Generator) -> torch.Tensor:
    """``[n, length, D]``: ``support`` query concepts first, then random concepts; all noisy."""
    count = query_concepts.shape[0]
    supported = _choose(query_concepts, config.support, generator)
    filler = torch.randint(config.num_concepts, (count, length - config.support), generator=generator)
    ids = torch.cat([supported, filler], dim=1)
    return _noisy(concepts[ids], config.noise_std, generator)


def _hard_negatives(query_concepts: torch.Tensor, length: int, concepts: torch.Tensor, config: SyntheticConfig,
                    generator: torch.Generator) -> torch.Tensor:
    """``[n, H, length, D]``: shared query concepts, one spike patch, random concepts; all noisy."""
    count, heads = query_concepts.shape[0], config.hard_negatives
    repeated = query_concepts.repeat_interleave(heads, dim=0)  # [n*H, T]
    picked = _choose(repeated, config.hard_shared_concepts + config.spike_concepts, generator)
    shared = picked[:, : config.hard_shared_concepts]
    spike = F.normalize(concepts[picked[:, config.hard_shared_concepts :]].mean(dim=1), dim=-1)  # [n*H, D]
    filler = torch.randint(
        config.num_concepts, (count * heads, length - config.hard_shared_concepts - 1), generator=generator
    )
    patches = torch.cat([concepts[shared], spike.unsqueeze(1), concepts[filler]], dim=1)
    return _noisy(patches, config.noise_std, generator).view(count, heads, length, config.dim)


def _injection_banks(query_concepts: torch.Tensor, concepts: torch.Tensor, config: SyntheticConfig,
                     generator: torch.Generator) -> dict[str, torch.Tensor]:
    """kind -> ``[E, K_max, D]`` injected input patches per evaluation query (every kind drawn, so seeds align)."""
    count, tokens = query_concepts.shape
    budget = max(config.injection_budgets, default=0)
    target = query_concepts[:, torch.arange(budget) % tokens]  # [E, K] token-targeted: patch k -> token k mod T
    hard = _noisy(concepts[target], config.noise_std, generator)
    order = torch.rand(count, budget, tokens, generator=generator).argsort(dim=-1)[..., : config.spike_concepts]
    spike_ids = query_concepts.unsqueeze(1).expand(count, budget, tokens).gather(2, order)
    spike = _noisy(F.normalize(concepts[spike_ids].mean(dim=2), dim=-1), config.noise_std, generator)
    gaussian = F.normalize(torch.randn(count, budget, config.dim, generator=generator), dim=-1)
    return {"hard": hard, "spike": spike, "gaussian": gaussian}


def make_environment(config: SyntheticConfig, seed: int) -> SyntheticEnvironment:
    """Generate one seed's environment deterministically (same config and seed -> identical tensors)."""
    generator = torch.Generator().manual_seed(int(seed))
    concepts = F.normalize(torch.randn(config.num_concepts, config.dim, generator=generator), dim=-1)

    train_concepts = _query_concepts(config.num_train_queries, config, generator)
    train_queries = _noisy(concepts[train_concepts], config.noise_std, generator)
    train_documents = _gold_documents(train_concepts, config.train_length, concepts, config, generator)
    train_negatives = None
    if config.hard_negatives_in_loss and config.hard_negatives > 0:
        train_negatives = _hard_negatives(train_concepts, config.train_length, concepts, config, generator)

    longest = max(config.all_lengths)
    eval_concepts = _query_concepts(config.num_eval_queries, config, generator)
    eval_queries = _noisy(concepts[eval_concepts], config.noise_std, generator)
    eval_documents = _gold_documents(eval_concepts, longest, concepts, config, generator)
    eval_negatives = _hard_negatives(eval_concepts, longest, concepts, config, generator)
    banks = _injection_banks(eval_concepts, concepts, config, generator)
    return SyntheticEnvironment(
        config, concepts, train_concepts, train_queries, train_documents, train_negatives,
        eval_concepts, eval_queries, eval_documents, eval_negatives, banks,
    )


class ConceptEncoder(nn.Module):
    """3-layer feed-forward encoder applied to every token / patch alone: ``[..., D] -> [..., D_out]``, L2-normalised."""

    def __init__(self, dim: int, hidden_width: int, out_dim: int | None = None):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, hidden_width), nn.ReLU(),
            nn.Linear(hidden_width, hidden_width), nn.ReLU(),
            nn.Linear(hidden_width, out_dim or dim),
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(inputs), dim=-1)


def make_encoder(config: SyntheticConfig, seed: int) -> ConceptEncoder:
    """The encoder with weights initialised from ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return ConceptEncoder(config.dim, config.hidden_width)


def _ones(*shape: int) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.bool)


def _chunk_size(config: SyntheticConfig, queries: int, tokens: int, length: int) -> int:
    return max(1, config.scoring_chunk_elements // max(1, queries * tokens * length))


@torch.no_grad()
def _pool_scores(queries: torch.Tensor, documents: torch.Tensor, head: PoolingHead, config: SyntheticConfig) -> torch.Tensor:
    """Scores ``[E, T, D] x [Nd, M, D] -> [E, Nd]`` in document chunks (all tokens / patches valid)."""
    count, tokens, _ = queries.shape
    length = documents.shape[1]
    chunk = _chunk_size(config, count, tokens, length)
    query_mask = _ones(count, tokens)
    parts = []
    for start in range(0, documents.shape[0], chunk):
        block = documents[start : start + chunk]
        parts.append(late_interaction_scores(queries, query_mask, block, _ones(*block.shape[:2]), head))
    return torch.cat(parts, dim=1)


def _recall(scores: torch.Tensor, gold: torch.Tensor, cutoffs: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k from scores ``[E, Nd]`` and gold indices ``[E]``; ties count against the gold document."""
    gold_scores = scores.gather(1, gold.unsqueeze(1))
    rank = (scores >= gold_scores).sum(dim=1) - 1  # 0 = ranked first
    return {f"recall@{k}": float((rank < k).float().mean()) for k in cutoffs}


@torch.no_grad()
def _encode(encoder: ConceptEncoder, inputs: torch.Tensor) -> torch.Tensor:
    return encoder(inputs)


def evaluate_retrieval(encoder: ConceptEncoder, env: SyntheticEnvironment, head: PoolingHead, length: int) -> dict[str, float]:
    """Recall@1 / Recall@5 of the evaluation queries against the evaluation pool at document length ``length``."""
    queries = _encode(encoder, env.eval_queries)
    documents = _encode(encoder, env.eval_corpus(length))
    scores = _pool_scores(queries, documents, head, env.config)
    return _recall(scores, torch.arange(queries.shape[0]))


def evaluate_gradient_concentration(encoder: ConceptEncoder, env: SyntheticEnvironment, head: PoolingHead,
                                    length: int) -> dict[str, float]:
    """Mean Gini / top-1 share / effective patches of gold documents' patch gradients under the training loss.

    The evaluation queries are split into batches of ``batch_size`` (query, gold document) pairs; the in-batch
    InfoNCE loss is differentiated with respect to the gold documents' patch embeddings. ``gini``, ``top1_share`` and
    ``effective_patches`` use each query's own loss term (scope "pair", PAPER.md's per-pair definition);
    ``gini_batch`` differentiates the whole batch loss (see :func:`~lir_robust.scoring.diagnostics.gold_patch_gradient_norms`).
    """
    config = env.config
    queries = _encode(encoder, env.eval_queries)
    documents = _encode(encoder, env.eval_documents[:, :length])
    totals: dict[str, list[torch.Tensor]] = {"gini": [], "top1_share": [], "effective_patches": [], "gini_batch": []}
    for start in range(0, queries.shape[0] - 1, config.batch_size):
        batch = slice(start, start + config.batch_size)
        if queries[batch].shape[0] < 2:
            break
        result = gold_pair_gradient_concentration(
            queries[batch], documents[batch], head,
            temperature=config.temperature, normalize_scores=config.normalize_scores,
        )
        for key in ("gini", "top1_share", "effective_patches"):
            totals[key].append(getattr(result, key))
        batch_scope = gold_pair_gradient_concentration(
            queries[batch], documents[batch], head, scope="batch",
            temperature=config.temperature, normalize_scores=config.normalize_scores,
        )
        totals["gini_batch"].append(batch_scope.gini)
    return {key: float(torch.cat(values).nanmean()) for key, values in totals.items()}


def _expand_state(state: tuple[torch.Tensor, ...], documents: int) -> tuple[torch.Tensor, ...]:
    """A per-query head summary ``[E, T, ...]`` repeated for every document: ``[E, Nd, T, ...]``."""
    return tuple(part.unsqueeze(1).expand(part.shape[0], documents, *part.shape[1:]) for part in state)


@torch.no_grad()
def evaluate_injection(encoder: ConceptEncoder, env: SyntheticEnvironment, head: PoolingHead) -> dict[str, dict[str, dict[str, float]]]:
    """Recall and hijack rate when every query's non-gold documents carry K patches targeted at it.

    Returns ``{kind: {str(K): {"recall@1", "recall@5", "hijack_rate"}}}``. The hijack rate is the share of a query's
    tokens whose best-matching patch in a non-gold document is injected (the definition of
    :func:`lir_robust.scoring.diagnostics.hijack_rates`), averaged over the query's non-gold documents, then over queries.
    The pooled scores use the head's ``partial`` / ``merge``: the original documents are summarised once and the
    injected patches (the same K for every non-gold document of a query) are merged in per budget.
    """
    config = env.config
    if not head.mergeable:
        raise ValueError(f"the injection sweep needs a mergeable pooling head; {head.spec()} is not")
    length = config.injection_document_length
    queries = _encode(encoder, env.eval_queries)  # [E, T, D]
    documents = _encode(encoder, env.eval_corpus(length))  # [Nd, M, D]
    count, tokens, _ = queries.shape
    total_documents = documents.shape[0]
    chunk = _chunk_size(config, count, tokens, length)
    states, best = [], []
    for start in range(0, total_documents, chunk):
        block = documents[start : start + chunk]
        similarities = torch.einsum("qtd,nsd->qnts", queries, block)  # [E, n, T, M]
        states.append(head.partial(similarities, _ones(1, block.shape[0], length)))
        best.append(similarities.amax(dim=-1))
    state = tuple(torch.cat(parts, dim=1) for parts in zip(*states))  # each [E, Nd, T, ...]
    best_original = torch.cat(best, dim=1)  # [E, Nd, T]
    original = head.finalize(state).sum(dim=-1)  # [E, Nd]
    gold = torch.arange(count)
    non_gold = torch.ones(count, total_documents, dtype=torch.bool)
    non_gold[gold, gold] = False

    results: dict[str, dict[str, dict[str, float]]] = {}
    for kind in config.injection_kinds:
        bank = _encode(encoder, env.injection_banks[kind])  # [E, K_max, D]
        injected_similarities = torch.einsum("qtd,qkd->qtk", queries, bank)  # [E, T, K_max]
        per_budget: dict[str, dict[str, float]] = {}
        for budget in config.injection_budgets:
            if budget == 0:
                scores, hijack = original, 0.0
            else:
                part = injected_similarities[..., :budget]
                injected_state = _expand_state(head.partial(part, _ones(count, budget)), total_documents)
                merged = head.finalize(head.merge(state, injected_state)).sum(dim=-1)
                scores = torch.where(non_gold, merged, original)
                # argmax ties go to the first patch, and injected patches come after the original ones: strict >.
                hijacked = (part.amax(dim=-1).unsqueeze(1) > best_original).float().mean(dim=-1)  # [E, Nd]
                hijack = float((hijacked * non_gold).sum(dim=1).div(non_gold.sum(dim=1)).mean())
            per_budget[str(budget)] = {**_recall(scores, gold), "hijack_rate": hijack}
        results[kind] = per_budget
    return results


def _evaluate_epoch(encoder: ConceptEncoder, env: SyntheticEnvironment, head: PoolingHead) -> dict[str, float]:
    length = env.config.train_length
    return {**evaluate_retrieval(encoder, env, head, length), **evaluate_gradient_concentration(encoder, env, head, length)}


def train_and_evaluate(
    config: SyntheticConfig,
    head: str | PoolingHead,
    seed: int,
    *,
    progress: bool = False,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train the encoder with ``head`` on one seed's environment, then run the length and injection sweeps.

    Returns a JSON-ready dict::

        {"head": spec, "seed": s, "history": {"epoch": [...], "recall@1": [...], "recall@5": [...], "gini": [...],
                                                "gini_batch": [...], "top1_share": [...], "effective_patches": [...],
                                                "loss": [...]},
         "length_sweep": {str(M): {"recall@1", "recall@5", "gini", "gini_batch", "top1_share", "effective_patches"}},
         "injection": {kind: {str(K): {"recall@1", "recall@5", "hijack_rate", "retained_recall@1"}}}}

    The data, the encoder's initial weights and the batch order depend on ``seed`` only, so heads are compared on
    identical data and initialisation.
    """
    head = parse_head(head)
    env = make_environment(config, seed)
    encoder = make_encoder(config, seed)
    loss_fn = PooledInfoNCELoss(head, temperature=config.temperature, normalize_scores=config.normalize_scores)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.learning_rate)
    order_generator = torch.Generator().manual_seed(int(seed) + 1)
    history: dict[str, list[float]] = {
        key: []
        for key in ("epoch", "loss", "recall@1", "recall@5", "gini", "gini_batch", "top1_share", "effective_patches")
    }

    def record(epoch: int, loss: float) -> None:
        encoder.eval()
        values = _evaluate_epoch(encoder, env, head)
        encoder.train()
        history["epoch"].append(epoch)
        history["loss"].append(loss)
        for key, value in values.items():
            history[key].append(value)
        if on_epoch is not None:
            on_epoch(epoch, values)

    batches = config.num_train_queries // config.batch_size  # the incomplete last batch is dropped
    query_mask = _ones(config.batch_size, config.query_tokens)
    document_mask = _ones(config.batch_size, config.train_length)
    record(0, math.nan)
    bar = tqdm(range(1, config.epochs + 1), desc=f"train {head.spec()} seed {seed}", disable=not progress, leave=False)
    for epoch in bar:
        permutation = torch.randperm(config.num_train_queries, generator=order_generator)
        running = 0.0
        for index in range(batches):
            rows = permutation[index * config.batch_size : (index + 1) * config.batch_size]
            queries = encoder(env.train_queries[rows])
            documents = encoder(env.train_documents[rows])
            negatives = None if env.train_negatives is None else encoder(env.train_negatives[rows])
            loss = loss_fn(queries, documents, negatives, query_mask=query_mask, doc_mask=document_mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += float(loss.detach())
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            record(epoch, running / batches)
            bar.set_postfix(loss=f"{running / batches:.3f}", r1=f"{history['recall@1'][-1]:.3f}")
    bar.close()

    encoder.eval()
    length_sweep = {
        str(length): {**evaluate_retrieval(encoder, env, head, length),
                      **evaluate_gradient_concentration(encoder, env, head, length)}
        for length in config.lengths
    }
    injection = evaluate_injection(encoder, env, head)
    for per_budget in injection.values():
        base = per_budget.get("0", {}).get("recall@1")
        for values in per_budget.values():
            values["retained_recall@1"] = (values["recall@1"] / base) if base else math.nan
    return {"head": head.spec(), "seed": int(seed), "history": history, "length_sweep": length_sweep,
            "injection": injection}
