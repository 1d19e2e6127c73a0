"""Kinds of injected patches, where they go, and the settings that make them reproducible.

Kinds of injected patches (all unit vectors of the embedding dimension D; made in :mod:`lir_robust.attacks.generators`):

- ``gaussian``: random unit vectors (the paper's control);
- ``corpus``: patches drawn uniformly from the *other* documents of the corpus (neutral length growth);
- ``hard``: token-targeted hard negatives: for each query, the corpus patches of its non-gold documents nearest to
  its tokens (faiss ``IndexFlatIP``; a GPU index when faiss-gpu and a GPU are there), taken round-robin over the
  query's tokens (each token's nearest, then each token's second nearest, ...). The same K patches go into every
  injected document of that query;
- ``spike``: the L2-normalised average of a few (``spike_tokens``) random query tokens, K such spikes per query (the
  paper's spike patch). The same K patches go into every injected document of that query.

``gaussian`` and ``corpus`` are drawn for each document (a document's patches do not depend on the query); ``hard``
and ``spike`` depend on the query only. ``KIND@N`` (hard, spike) is the few-document attack: N non-gold documents of
each query, each with its own patches. For every kind, budget K uses the first K patches of one list of ``max(ks)``
(nested budgets), which is what lets the sweep (:mod:`lir_robust.sweep.engine`) score every K in one pass.

Targets: ``non-gold`` (the paper's attack protocol: gold documents keep K = 0) or ``all`` (pure length growth).
Default regimes (:data:`DEFAULT_TARGETS`): attack = hard and spike into non-gold documents; length growth = gaussian
and corpus into all documents. Injecting low-similarity patches into non-gold documents only would dilute their
scores under mean-like heads and make those heads "retain" more than 100 %; the non-gold option stays available and
the report does not cap the retained share, so that artefact stays visible when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

__all__ = [
    "KINDS",
    "QUERY_LEVEL_KINDS",
    "DOCUMENT_LEVEL_KINDS",
    "TARGETS",
    "DEFAULT_KS",
    "DEFAULT_KINDS",
    "DEFAULT_TARGETS",
    "DEFAULT_POOL_BLOCKS",
    "InjectionSettings",
    "parse_injection",
    "budget_intervals",
    "hard_patches_needed",
]

KINDS = ("gaussian", "corpus", "hard", "spike")
QUERY_LEVEL_KINDS = ("hard", "spike")
DOCUMENT_LEVEL_KINDS = ("gaussian", "corpus")
TARGETS = ("non-gold", "all")
DEFAULT_KS = (0, 1, 4, 16, 25, 50, 100, 200, 400)
DEFAULT_KINDS = ("gaussian", "corpus", "hard", "spike")  # length growth, then the two attacks on non-gold documents
DEFAULT_TARGETS = {"hard": "non-gold", "spike": "non-gold", "gaussian": "all", "corpus": "all"}
# Blocks per budget interval in the pools of gaussian / corpus patches (see PatchSource); None = private draws.
DEFAULT_POOL_BLOCKS = 64


@dataclass(frozen=True)
class InjectionSettings:
    """How distractor patches are made; part of every results file and resume key."""

    seed: int = 0
    spike_tokens: int = 3  # query tokens averaged into one spike patch
    targets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    pool_blocks: int | None = DEFAULT_POOL_BLOCKS  # gaussian / corpus: blocks per budget interval (None: private)

    def __post_init__(self):
        if self.pool_blocks is not None and (isinstance(self.pool_blocks, bool) or not isinstance(self.pool_blocks, int)
                                             or self.pool_blocks < 1):
            raise ValueError(f"pool_blocks must be an integer >= 1 or None (private draws per document), got {self.pool_blocks!r}")
        if isinstance(self.spike_tokens, bool) or not isinstance(self.spike_tokens, int) or self.spike_tokens < 1:
            raise ValueError(f"spike_tokens (query tokens averaged into one spike patch) must be an integer >= 1, got {self.spike_tokens!r}")
        for kind, target in self.targets.items():
            _check_kind(kind)
            if target not in TARGETS:
                raise ValueError(f"injection target for {kind!r} must be one of {TARGETS}, got {target!r}")

    def target(self, injection: str) -> str:
        """``non-gold``, ``all`` or ``attacked:N`` (the few-document attack ``KIND@N``)."""
        kind, attacked = parse_injection(injection)
        if attacked is not None:
            return f"attacked:{attacked}"
        return self.targets.get(kind, DEFAULT_TARGETS[kind])

    def to_dict(self) -> dict:
        return {"seed": self.seed, "spike_tokens": self.spike_tokens, "targets": dict(sorted(self.targets.items())),
                "pool_blocks": self.pool_blocks}


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown injection kind {kind!r}; kinds: {', '.join(KINDS)} (attacks on a few documents: "
                         f"{'@N, '.join(QUERY_LEVEL_KINDS)}@N)")
    return kind


def parse_injection(name: str) -> tuple[str, int | None]:
    """``"spike"`` -> ``("spike", None)``; ``"spike@10"`` -> ``("spike", 10)``: the few-document attack, where N
    non-gold documents of each query (drawn with the seed) each receive their own patches and the others none.

    Raises ValueError naming the problem (unknown kind, N not an integer >= 1, @N on a document-level kind).
    """
    if not isinstance(name, str):
        raise ValueError(f"an injection is named by text such as 'hard' or 'spike@10', got {name!r}")
    kind, at, count = name.strip().partition("@")
    _check_kind(kind)
    if not at:
        return kind, None
    if kind not in QUERY_LEVEL_KINDS:
        raise ValueError(f"{name!r}: the few-document attack KIND@N exists for {', '.join(QUERY_LEVEL_KINDS)}, not {kind} "
                         "(gaussian / corpus patches already differ per document)")
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"{name!r}: N in KIND@N is the number of attacked documents per query, an integer >= 1")
    return kind, int(count)


def budget_intervals(ks: int | Sequence[int]) -> list[tuple[int, int]]:
    """``[(0, k1), (k1, k2), ...]`` over the positive budgets; an int ``k`` means the single budget ``k``."""
    ks = [ks] if isinstance(ks, int) else list(ks)
    positive = sorted({int(k) for k in ks if int(k) > 0})
    return list(zip([0] + positive[:-1], positive))


def hard_patches_needed(injections: Sequence[str], ks: Sequence[int]) -> int:
    """Hard patches per query the injections need: ``max(ks)``, times N for a few-document attack ``hard@N``."""
    k_max = max([int(k) for k in ks] + [0])
    counts = [attacked or 1 for kind, attacked in map(parse_injection, injections) if kind == "hard"]
    return k_max * max(counts) if counts else 0
