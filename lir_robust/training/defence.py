"""A training-side defence for any pooling head: in-batch negatives that carry injected patches.

The evaluation attacks a retriever by appending patches to non-gold documents (lir_robust.attacks): ``spike``
patches (the L2-normalised mean of a few query tokens) and ``hard`` patches (the non-gold corpus patches nearest to
the query's tokens). Fine-tuning with ``--injected-negatives spike:4 hard:4`` shows the encoder such documents while
it trains: for every query of the batch, a few non-gold documents of the batch (other queries' positives) are copied
with K injected patches appended, and the copies join the query's candidates as extra negatives
(``neg_doc_embeddings`` of :class:`lir_robust.scoring.losses.PooledInfoNCELoss`, scored through ``paired_scores``, so every
head works, joint heads included). To rank its positive first, the encoder has to keep its query tokens from being
matched by the injected patches.

Shapes: queries ``[B, Tq, D]`` with a bool mask ``[B, Tq]`` (this process's queries); documents ``[N, Td, D]`` with
a mask ``[N, Td]``, gathered across processes (N >= B); the positive of query i is document ``offset + i``.
The result, ``[B, n, Td + K_max, D]`` and its mask, holds for each query its ``documents`` injected copies per kind,
in the order of :class:`InjectedNegatives` ``kinds`` (kind-major: all spike copies, then all hard copies).

How each injected negative is built (the evaluation's recipe, with the batch as the corpus):

- its host: a document of the batch other than the query's positive, drawn uniformly (``documents`` distinct hosts
  per query, shared by the kinds, so each kind attacks the same documents); the positive never receives patches;
- ``spike:K``: K spikes, each the L2-normalised mean of ``spike_tokens`` random valid tokens of the query's CURRENT
  embeddings (:func:`lir_robust.attacks.generators.spike_patches`), drawn for each host apart. Detached: the attack is
  computed from the encoder and then held fixed, as adversarial training does (the inner maximisation's solution
  enters the outer gradient as a constant, Danskin's theorem). The gradient then moves the query tokens (and the
  documents) so that a planted average of query tokens no longer captures them, which is what the evaluation tests:
  its attacker rebuilds the spikes from the final embeddings, outside any graph. A gradient through the spike would
  add a second path with no counterpart at evaluation: lowering the loss by moving the spike itself (the mean of the
  other tokens) rather than by resisting it;
- ``hard:K``: real patches of the batch's documents other than the positive and the host (so every patch is new to
  the host): for each valid query token its most similar such patch, then each token's second most similar, ...
  (round robin, as :func:`lir_robust.attacks.generators.hard_negative_patches`), a patch already taken skipped, the first K.
  The choice is made on detached similarities (an index is not differentiable); the patches themselves keep their
  gradient, as any in-batch negative document does: the encoder may learn to move those document patches away from
  the query tokens they mimic (the patch is a real document patch, and the evaluation's hard patches are too).
  A batch with fewer than K candidate patches gives fewer (the rest masked);
- ``hard-corpus:K``: the evaluation's hard patches, searched over the whole training corpus instead of the batch
  (:mod:`lir_robust.training.corpus_bank`: a bank of the corpus's token vectors encoded by the current encoder,
  rebuilt every ``--corpus-bank-refresh`` steps; each query's gold documents excluded; round robin, the first K).
  The loop computes them (``corpus_patches`` of :func:`injected_negatives`: ``[B, K, D]`` and their validity) and
  every host of the query receives the same K. Detached, like the spikes: bank rows are constants computed outside
  the step's graph.

Determinism: every draw of query ``offset + i`` comes from a generator seeded by ``(key..., offset + i)``, with
``key`` naming the micro-batch (the loop passes ``(seed, epoch, micro-batch in the epoch)``, which a resumed run
restores). A query gets the same negatives whatever the number of processes that share the global batch, and a
resumed run sees the negatives of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch

from lir_robust.attacks.generators import spike_patches
from lir_robust.attacks.kinds import InjectionSettings

__all__ = [
    "INJECTED_NEGATIVE_KINDS",
    "InjectedNegatives",
    "parse_injected_negative",
    "query_generator",
    "host_documents",
    "query_spike_patches",
    "round_robin_first",
    "hard_patch_indices",
    "injected_negatives",
    "with_injected_negatives",
    "concatenate_negatives",
    "parse_kind_count",
]

INJECTED_NEGATIVE_KINDS = ("spike", "hard", "hard-corpus")


def parse_kind_count(text: str, kinds: Sequence[str], symbol: str, meaning: str, example: str) -> tuple[str, int]:
    """``KIND:<symbol>`` -> ``(kind, count)``, kind one of ``kinds`` and count an integer >= 1 (``meaning`` and
    ``example``, e.g. ``"spike:4"``, word the ValueError): the text form of the training-side defences' options."""
    example_count = example.partition(":")[2]
    kind, sep, count = str(text).strip().lower().partition(":")
    if kind not in kinds:
        raise ValueError(f"expected KIND:{symbol} with KIND one of {', '.join(kinds)}, got {text!r} (e.g. {example})")
    if not sep or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"expected KIND:{symbol} with {symbol} an integer >= 1 ({meaning}), got {text!r} (e.g. {kind}:{example_count})")
    return kind, int(count)


def parse_injected_negative(text: str) -> tuple[str, int]:
    """``"spike:4"`` -> ``("spike", 4)``: an injection kind (spike, hard or hard-corpus) and its number of patches
    K >= 1."""
    return parse_kind_count(text, INJECTED_NEGATIVE_KINDS, "K", "patches per injected negative", "spike:4")


@dataclass(frozen=True)
class InjectedNegatives:
    """What the defence injects: ``kinds`` ((kind, K) pairs, each kind once), ``documents`` injected copies per query
    and kind, ``spike_tokens`` query tokens averaged into one spike (the evaluation's default, 3)."""

    kinds: tuple[tuple[str, int], ...]
    documents: int = 1
    spike_tokens: int = InjectionSettings().spike_tokens

    def __post_init__(self):
        names = [kind for kind, _ in self.kinds]
        if not names:
            raise ValueError("InjectedNegatives needs at least one (kind, K)")
        if len(set(names)) != len(names):
            raise ValueError(f"give each injected-negative kind once, got {list(self.spec())}")
        for kind, count in self.kinds:
            parse_injected_negative(f"{kind}:{count}")
        for name in ("documents", "spike_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"InjectedNegatives.{name} must be an integer >= 1, got {value!r}")

    @classmethod
    def parse(cls, items: Sequence[str], documents: int = 1, spike_tokens: int | None = None) -> "InjectedNegatives":
        """From their text forms: ``InjectedNegatives.parse(["spike:4", "hard:4"], documents=2)``."""
        extra = {} if spike_tokens is None else {"spike_tokens": spike_tokens}
        return cls(tuple(parse_injected_negative(item) for item in items), documents, **extra)

    def spec(self) -> tuple[str, ...]:
        """``("spike:4", "hard:4")``."""
        return tuple(f"{kind}:{count}" for kind, count in self.kinds)

    @property
    def per_query(self) -> int:
        """Injected negatives per query: ``documents`` x number of kinds."""
        return self.documents * len(self.kinds)

    @property
    def max_patches(self) -> int:
        return max(count for _, count in self.kinds)

    @property
    def corpus_patches(self) -> int:
        """K of ``hard-corpus`` (0 when the plan has none): the patches the corpus bank must give each query."""
        return dict(self.kinds).get("hard-corpus", 0)


def query_generator(key: Sequence[object], query: int) -> torch.Generator:
    """A CPU generator for global query ``query`` of the micro-batch named by ``key`` (stable across runs,
    processes and machines: seeded from a hash of the parts)."""
    digest = hashlib.sha256("\x00".join(map(str, (*key, "injected-negatives", query))).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def host_documents(n_documents: int, positive: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct documents of ``range(n_documents)`` other than ``positive``, drawn uniformly: long ``[count]``."""
    if not 1 <= count <= n_documents - 1:
        raise ValueError(f"{count} injected negatives per query need at least {count + 1} documents in the (global) "
                         f"batch, got {n_documents}")
    drawn = torch.randperm(n_documents - 1, generator=generator)[:count]
    return drawn + (drawn >= positive).long()  # skip the positive


def query_spike_patches(query: torch.Tensor, query_mask: torch.Tensor, count: int, spike_tokens: int,
                        generator: torch.Generator) -> torch.Tensor:
    """``count`` spikes ``[count, D]`` (float32, detached) from the valid tokens of ``query [Tq, D]`` (``query_mask
    [Tq]``): each the L2-normalised mean of ``spike_tokens`` random tokens (the evaluation's spike_patches)."""
    return spike_patches(query.detach()[query_mask.to(torch.bool)], count, spike_tokens, generator)


def round_robin_first(indices: torch.Tensor, valid: torch.Tensor, count: int) -> torch.Tensor:
    """The round robin of the hard kinds: ``indices [..., Tq, depth]`` (each query token's candidates, nearest first)
    with ``valid`` of the same shape -> the first ``count`` distinct valid ones, long ``[..., count]`` (-1: none).
    The order is every token's nearest (in token order), then every token's second nearest, ...; a candidate already
    taken is skipped."""
    *lead, tokens, depth = indices.shape
    with torch.no_grad():
        order_ids = indices.transpose(-1, -2).reshape(-1, depth * tokens)  # rank-major, token-minor
        order_valid = valid.transpose(-1, -2).reshape(-1, depth * tokens)
        width = order_ids.shape[1]
        earlier = torch.ones(width, width, dtype=torch.bool, device=order_ids.device).tril(-1)  # [later, earlier]
        repeated = ((order_ids.unsqueeze(2) == order_ids.unsqueeze(1)) & order_valid.unsqueeze(1) & earlier).any(dim=2)
        keep = order_valid & ~repeated
        first = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :count]  # kept ones, in order
        chosen = order_ids.gather(1, first)
        chosen = torch.where(keep.gather(1, first), chosen, torch.full_like(chosen, -1))
        if chosen.shape[1] < count:
            chosen = torch.cat([chosen, chosen.new_full((chosen.shape[0], count - chosen.shape[1]), -1)], dim=1)
    return chosen.view(*lead, count)


def hard_patch_indices(queries: torch.Tensor, query_mask: torch.Tensor, documents: torch.Tensor,
                       document_mask: torch.Tensor, excluded: torch.Tensor, count: int) -> torch.Tensor:
    """Round-robin hard patches: flat indices into ``documents.reshape(N * Td, D)``, long ``[B, H, count]`` (-1: none).

    queries ``[B, Tq, D]`` / ``query_mask [B, Tq]``; documents ``[N, Td, D]`` / ``document_mask [N, Td]``;
    ``excluded [B, H, E]``: for each query and each of its H hosts, the documents whose patches may not be taken
    (its positive and the host). For row (b, h): each valid query token's most similar allowed patch, in token order,
    then each token's second most similar, ...; a patch already taken is skipped; the first ``count``.
    """
    batch, tokens, _ = queries.shape
    n_documents, length, _ = documents.shape
    hosts = excluded.shape[1]
    with torch.no_grad():
        similarities = torch.einsum("bqd,npd->bqnp", queries.detach().float(), documents.detach().float())
        allowed = document_mask.to(torch.bool).expand(batch, hosts, n_documents, length).clone()  # [B, H, N, Td]
        allowed.scatter_(2, excluded.unsqueeze(-1).expand(-1, -1, -1, length), False)
        filled = similarities.unsqueeze(1).masked_fill(~allowed.unsqueeze(2), -torch.inf)  # [B, H, Tq, N, Td]
        filled = filled.reshape(batch, hosts, tokens, n_documents * length)
        depth = min(count, n_documents * length)  # depth K holds at least K distinct patches: the first K are exact
        values, indices = filled.topk(depth, dim=-1)  # [B, H, Tq, depth], nearest first
        valid = torch.isfinite(values) & query_mask.to(torch.bool).view(batch, 1, tokens, 1)
        chosen = round_robin_first(indices, valid.expand_as(indices), count)
    return chosen.view(batch, hosts, count)


def injected_negatives(
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    documents: torch.Tensor,
    document_mask: torch.Tensor,
    offset: int,
    plan: InjectedNegatives,
    key: Sequence[object],
    corpus_patches: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's injected negatives: ``([B, plan.per_query, Td + K_max, D], bool mask [B, plan.per_query,
    Td + K_max])``, kind-major (see the module docstring for how hosts and patches are chosen, and why spikes are
    detached while hard patches keep their gradient). ``key`` names the micro-batch (``(seed, epoch, batch)``).
    ``corpus_patches``: the ``hard-corpus`` patches of each query, ``([B, K, D], valid [B, K])`` (the plan's K;
    lir_robust.training.corpus_bank.nearest_bank_patches), required when the plan has that kind."""
    if plan.corpus_patches and corpus_patches is None:
        raise ValueError("hard-corpus injected negatives need corpus_patches (from lir_robust.training.corpus_bank)")
    batch, _, dim = queries.shape
    n_documents, length, _ = documents.shape
    query_mask, document_mask = query_mask.to(torch.bool), document_mask.to(torch.bool)
    generators = [query_generator(key, offset + i) for i in range(batch)]
    hosts = torch.stack([host_documents(n_documents, offset + i, plan.documents, generators[i]) for i in range(batch)])
    hosts = hosts.to(documents.device)  # [B, H]
    width = plan.max_patches
    patches = documents.new_zeros(batch, len(plan.kinds), plan.documents, width, dim)  # [B, kinds, H, K_max, D]
    patch_mask = torch.zeros(batch, len(plan.kinds), plan.documents, width, dtype=torch.bool, device=documents.device)
    for position, (kind, count) in enumerate(plan.kinds):
        if kind == "spike":
            spikes = torch.stack([
                torch.stack([query_spike_patches(queries[i], query_mask[i], count, plan.spike_tokens, generators[i])
                             for _ in range(plan.documents)])
                for i in range(batch)
            ])  # [B, H, K, D]
            patches[:, position, :, :count] = spikes.to(documents.dtype)
            patch_mask[:, position, :, :count] = True
        elif kind == "hard-corpus":
            taken, valid = corpus_patches
            if taken.shape[:2] != (batch, count):
                raise ValueError(f"corpus_patches must be [{batch}, {count}, D], got {list(taken.shape)}")
            patches[:, position, :, :count] = taken.detach().masked_fill(~valid.to(torch.bool).unsqueeze(-1), 0).to(documents.dtype).unsqueeze(1)
            patch_mask[:, position, :, :count] = valid.to(torch.bool).unsqueeze(1)
        else:
            positives = torch.arange(batch, device=documents.device).add(offset).view(batch, 1, 1).expand(-1, plan.documents, 1)
            excluded = torch.cat([positives, hosts.unsqueeze(-1)], dim=-1)  # [B, H, 2]
            indices = hard_patch_indices(queries, query_mask, documents, document_mask, excluded, count)  # [B, H, K]
            taken = documents.reshape(n_documents * length, dim)[indices.clamp_min(0)]  # keeps the gradient
            patches[:, position, :, :count] = taken.masked_fill((indices < 0).unsqueeze(-1), 0)
            patch_mask[:, position, :, :count] = indices >= 0
    host_vectors = documents[hosts].unsqueeze(1).expand(-1, len(plan.kinds), -1, -1, -1)  # [B, kinds, H, Td, D]
    host_mask = document_mask[hosts].unsqueeze(1).expand(-1, len(plan.kinds), -1, -1)
    negatives = torch.cat([host_vectors, patches], dim=3).reshape(batch, plan.per_query, length + width, dim)
    mask = torch.cat([host_mask, patch_mask], dim=3).reshape(batch, plan.per_query, length + width)
    return negatives, mask


def _pad_length(embeddings: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    extra = length - embeddings.shape[2]
    if extra <= 0:
        return embeddings, mask
    pad = embeddings.new_zeros(*embeddings.shape[:2], extra, embeddings.shape[3])
    return torch.cat([embeddings, pad], dim=2), torch.cat([mask, mask.new_zeros(*mask.shape[:2], extra)], dim=2)


def with_injected_negatives(
    negatives: torch.Tensor | None,
    negative_mask: torch.Tensor | None,
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    documents: torch.Tensor,
    document_mask: torch.Tensor,
    offset: int,
    plan: InjectedNegatives | None,
    key: Sequence[object],
    corpus_patches: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The loop's one call: a query's hard negatives ``[B, n, T, D]`` (or None) followed by its injected negatives,
    padded to one length: ``([B, n + plan.per_query, T', D], [B, n + plan.per_query, T'])``. ``plan`` None: the
    inputs unchanged (the defence is off). ``corpus_patches``: see :func:`injected_negatives`."""
    if plan is None:
        return negatives, negative_mask
    injected, injected_mask = injected_negatives(queries, query_mask, documents, document_mask, offset, plan, key,
                                                 corpus_patches)
    return concatenate_negatives(negatives, negative_mask, injected, injected_mask)


def concatenate_negatives(
    negatives: torch.Tensor | None,
    negative_mask: torch.Tensor | None,
    extra: torch.Tensor,
    extra_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's negatives ``[B, n, T, D]`` (or None) followed by ``extra [B, m, T', D]``, padded to one length:
    ``([B, n + m, max(T, T'), D], bool [B, n + m, max(T, T')])``."""
    extra_mask = extra_mask.to(torch.bool)
    if negatives is None:
        return extra, extra_mask
    negative_mask = negative_mask.to(torch.bool)
    length = max(negatives.shape[2], extra.shape[2])
    negatives, negative_mask = _pad_length(negatives, negative_mask, length)
    extra, extra_mask = _pad_length(extra, extra_mask, length)
    return torch.cat([negatives, extra.to(negatives.dtype)], dim=1), torch.cat([negative_mask, extra_mask], dim=1)
