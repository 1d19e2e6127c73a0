"""Pooling heads: how one query token's similarities to a document's patches become one number.

A late-interaction score is ``score(q, d) = sum_i phi(S_i1 .. S_iM)`` with ``S_ij = q_i . d_j``. The pooling head is
``phi``. Every head here

- maps similarities ``[..., Tq, Td]`` and a document mask ``[..., Td]`` (True = a real patch) to per-query-token
  values ``[..., Tq]``;
- ignores masked (padded) patches completely, whatever they contain (NaN included);
- gives -inf to a query token when the document has no valid patch at all, whatever the head (never NaN), so such
  a document scores -inf and ranks below every real one;
- computes in float32 whatever the input dtype, and is differentiable;
- has a text form that round-trips: ``parse_head("topk:k=4").spec() == "topk:k=4"``.

Heads that can be computed over a document in parts (all built-in ones) also implement ``partial`` / ``merge`` /
``finalize``: ``partial`` summarises a subset of the patches, ``merge`` combines two summaries, ``finalize`` gives
the per-token value. ``head(S, mask) == head.finalize(head.partial(S, mask))``, and scoring the original document
and appended (injected) patches separately then merging equals scoring the concatenation. The length sweep relies on
this to avoid re-scoring the original document for every injection budget; it asks every head for its summary of
the same similarities through ``partial_shared(SharedWork)``, where heads share the max, the exponentials of one tau
and the top-k. A head that is not mergeable still runs everywhere (the sweep scores it on the concatenated
documents, slower, and says so).

Joint heads (``joint = True``) give a query token a value that depends on the query's other tokens, e.g.
capacity-limited matching where a patch can serve only so many query tokens. They take the query mask
(``head(S, document_mask, query_mask)``; call any head as ``head.pool(S, document_mask, query_mask)``) and their
``finalize`` sees all tokens of a query at once.

Adding a head takes a few lines::

    @register_head("median")
    @dataclass(frozen=True)
    class MedianHead(PoolingHead):
        def __call__(self, similarities, document_mask):
            s = masked_fill_float32(similarities, document_mask, float("nan"))
            return s.nanmedian(dim=-1).values
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

__all__ = [
    "PoolingHead",
    "MaxSimHead",
    "TopKHead",
    "SoftmaxHead",
    "LogSumExpHead",
    "MeanHead",
    "ExclusiveMatchHead",
    "HEADS",
    "register_head",
    "parse_head",
    "available_heads",
    "masked_fill_float32",
    "SharedWork",
    "top_k_values",
    "POOLING_FILE",
    "save_pooling_json",
    "load_pooling_json",
]

POOLING_FILE = "pooling.json"

State = tuple[torch.Tensor, ...]

HEADS: dict[str, type["PoolingHead"]] = {}


def register_head(name: str) -> Callable[[type["PoolingHead"]], type["PoolingHead"]]:
    """Class decorator: make a PoolingHead subclass available under ``name`` (text form ``name:param=value``)."""

    def decorate(cls: type[PoolingHead]) -> type[PoolingHead]:
        if not (isinstance(cls, type) and issubclass(cls, PoolingHead)):
            raise TypeError(f"@register_head({name!r}) must decorate a PoolingHead subclass, got {cls!r}")
        if name in HEADS and HEADS[name] is not cls:
            raise ValueError(f"a pooling head named {name!r} is already registered ({HEADS[name].__name__})")
        if not name.isidentifier():
            raise ValueError(f"pooling head names must be identifiers, got {name!r}")
        cls.name = name
        HEADS[name] = cls
        return cls

    return decorate


def available_heads() -> str:
    """Human-readable list of registered heads and their parameters, e.g. ``maxsim, topk(k=4), ...``."""
    parts = []
    for name, cls in HEADS.items():
        fields = dataclasses.fields(cls)
        params = ", ".join(f"{f.name}={f.default}" for f in fields)
        parts.append(f"{name}({params})" if params else name)
    return ", ".join(parts)


def masked_fill_float32(similarities: torch.Tensor, document_mask: torch.Tensor, value: float) -> torch.Tensor:
    """Similarities ``[..., Tq, Td]`` in float32 with masked patches (``document_mask [..., Td]`` False) set to value."""
    similarities = similarities.float()
    if _all_valid(document_mask):  # nothing to fill: no copy (the heads never write into their input)
        return similarities
    mask = document_mask.to(torch.bool).unsqueeze(-2)
    return similarities.masked_fill(~mask, value)


def _records_gradient(similarities: torch.Tensor) -> bool:
    """True while autograd records a graph through ``similarities`` (training); False at inference, where heads may
    take paths without a backward (in-place temporaries, no indices)."""
    return torch.is_grad_enabled() and similarities.requires_grad


def _all_valid(document_mask: torch.Tensor) -> bool:
    """True when no patch is masked (a pass over the small mask, never over the similarities)."""
    return bool(document_mask.all()) if document_mask.numel() else True


@dataclass(frozen=True)
class PoolingHead:
    """Base class. Subclasses are frozen dataclasses whose fields are the head's parameters."""

    name: ClassVar[str] = "?"
    #: True when a query token's value depends on the query's other tokens (capacity-limited matching, ...). A joint
    #: head receives the query mask (``__call__`` / ``finalize`` take ``query_mask [..., Tq]``) and its ``finalize``
    #: sees all tokens of a query at once, on the last leading axis of the state.
    joint: ClassVar[bool] = False

    # -- the three parts that make a head mergeable (override all three, or override __call__ only) --
    def partial(self, similarities: torch.Tensor, document_mask: torch.Tensor) -> State:
        """Summary of the given patches: a tuple of tensors with leading shape ``[..., Tq]``."""
        raise NotImplementedError(f"pooling head {self.name!r} cannot be computed in parts")

    def merge(self, a: State, b: State) -> State:
        """Combine the summaries of two disjoint sets of patches of the same documents (``a``'s patches first)."""
        raise NotImplementedError(f"pooling head {self.name!r} cannot be computed in parts")

    def finalize(self, state: State) -> torch.Tensor:
        """Per-query-token value ``[..., Tq]`` from a summary (joint heads also take ``query_mask [..., Tq]``)."""
        raise NotImplementedError(f"pooling head {self.name!r} cannot be computed in parts")

    def __call__(self, similarities: torch.Tensor, document_mask: torch.Tensor) -> torch.Tensor:
        """similarities ``[..., Tq, Td]``, document_mask ``[..., Td]`` (bool, True = real patch) -> ``[..., Tq]``."""
        return self.finalize(self.partial(similarities, document_mask))

    # -- what the sweep and the scorer call: the same for every head, joint or not --
    def pool(self, similarities: torch.Tensor, document_mask: torch.Tensor, query_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., Tq, Td]``, ``[..., Td]`` (and ``query_mask [..., Tq]``, used by joint heads only) -> ``[..., Tq]``."""
        if self.joint:
            return self(similarities, document_mask, query_mask)
        return self(similarities, document_mask)

    def finalize_tokens(self, state: State, query_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``finalize`` for any head: joint heads get the query mask ``[..., Tq]``, the others do not need it."""
        return self.finalize(state, query_mask) if self.joint else self.finalize(state)

    def partial_shared(self, work: "SharedWork") -> State:
        """``partial`` over the last axis of ``work.similarities [..., L]``, each leading position one (query token,
        document) pair; the state has leading shape ``[...]``.

        The sweep calls this once for all its heads on the same similarities, so that heads can share the work
        ``work`` caches (the masked copy, the max, one exponential per tau, the top-k). The default runs
        ``partial`` on ``[..., 1, L]`` views, so any mergeable head works (a joint head too: a state keeps one row
        per query token); built-in heads override it to share.
        """
        similarities = work.similarities
        state = self.partial(similarities.unsqueeze(-2), work.full_mask())
        return tuple(part.float().squeeze(similarities.dim() - 1) for part in state)

    @property
    def mergeable(self) -> bool:
        """True when partial / merge / finalize are implemented (the sweep can then score documents in parts)."""
        return type(self).partial is not PoolingHead.partial

    # -- text and dict forms --
    def spec(self) -> str:
        """Text form, e.g. ``topk:k=4``; ``parse_head(head.spec()) == head``.

        Numeric parameters are always written (``topk:k=4``); switches only when they differ from their default
        (``lse:tau=0.1``, ``lse:tau=0.1,length_corrected=true``).
        """
        params = ",".join(
            f"{f.name}={_format_value(getattr(self, f.name))}"
            for f in dataclasses.fields(self)
            if not (isinstance(getattr(self, f.name), bool) and getattr(self, f.name) == f.default)
        )
        return f"{self.name}:{params}" if params else self.name

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``, the form saved in pooling.json."""
        return {"name": self.name, "params": dataclasses.asdict(self)}

    def __str__(self) -> str:
        return self.spec()


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _parse_value(field: dataclasses.Field, text: str, head_name: str) -> Any:
    kind = field.type if isinstance(field.type, type) else {"int": int, "float": float, "bool": bool}.get(
        str(field.type), str
    )
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if kind is int:
            as_float = float(text)
            if not as_float.is_integer():
                raise ValueError(text)
            return int(as_float)
        return kind(text)
    except ValueError:
        raise ValueError(
            f"pooling head {head_name!r}: parameter {field.name} must be {kind.__name__}, got {text!r}"
        ) from None


def parse_head(head: "str | PoolingHead | dict[str, Any]", **overrides: Any) -> PoolingHead:
    """Build a head from its text form (``"softmax:tau=0.1"``), a dict (pooling.json) or an existing head.

    ``overrides`` set parameters by name (``parse_head("topk", k=8)``); ``None`` values are ignored, so command-line
    options that were not given can be passed straight through.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if isinstance(head, PoolingHead):
        return dataclasses.replace(head, **overrides) if overrides else head
    if isinstance(head, dict):
        if "name" not in head:
            raise ValueError(f"a pooling head dict needs a 'name' key, got keys {sorted(head)}")
        return _build(str(head["name"]), {**dict(head.get("params") or {}), **overrides})
    if not isinstance(head, str):
        raise TypeError(f"a pooling head is given as text, dict or PoolingHead, got {type(head).__name__}")
    name, _, param_text = head.strip().partition(":")
    name = name.strip().lower()
    cls = _lookup(name)
    fields = {f.name.lower(): f for f in dataclasses.fields(cls)}  # names and keys are case-insensitive
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in param_text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(f"pooling head {head!r}: parameters are written key=value, got {item!r}")
        if key not in fields:
            raise ValueError(
                f"pooling head {name!r} has no parameter {key!r}; its parameters: {sorted(fields) or 'none'}"
            )
        if fields[key].name in params:
            raise ValueError(f"pooling head {head!r}: parameter {key!r} is given twice; give each parameter once")
        params[fields[key].name] = _parse_value(fields[key], value, name)
    return _build(name, {**params, **overrides})


def _lookup(name: str) -> type[PoolingHead]:
    if name not in HEADS:
        raise ValueError(f"unknown pooling head {name!r}; valid heads: {available_heads()}")
    return HEADS[name]


def _build(name: str, params: dict[str, Any]) -> PoolingHead:
    cls = _lookup(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(params) - fields
    if unknown:
        raise ValueError(f"pooling head {name!r} has no parameter(s) {sorted(unknown)}; its parameters: {sorted(fields)}")
    return cls(**params)


def _check_positive(head: str, name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"pooling head {head!r}: {name} must be a finite number > 0, got {value!r}")


def _safe_max(values: torch.Tensor) -> torch.Tensor:
    """Max over the last dim with -inf (no valid patch) replaced by 0, for use as a shift inside exp."""
    peak = values.detach().amax(dim=-1, keepdim=True)  # the heads' values do not depend on the shift
    return torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))


def _no_patch_is_minus_inf(values: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    """The one rule for a (query token, document) pair without any valid patch: its value is -inf, whatever the head
    (so such a document scores -inf and ranks below every real one, never NaN)."""
    if not bool(empty.any()):
        return values
    return torch.where(empty, torch.full_like(values, -math.inf), values)


# --------------------------------------------------------------------------------------------------------------
# Work shared between heads (the sweep summarises the same similarities for every head at once)
# --------------------------------------------------------------------------------------------------------------


class SharedWork:
    """Similarities ``[..., L]`` of (query token, document) pairs to L patches, and what several heads compute from
    them, each computed once on first use: the masked copy, the max, one exponential per tau, the top-k per k.

    ``document_mask``: bool, broadcastable to the similarities (True = a real patch); None = every patch is real.
    ``masked_are_zero``: the similarities are exactly 0 at masked patches (zero-padded documents), which saves a
    copy.
    """

    def __init__(self, similarities: torch.Tensor, document_mask: torch.Tensor | None = None, *,
                 masked_are_zero: bool = False):
        self.similarities = similarities.float()
        self.document_mask = None if document_mask is None else document_mask.to(torch.bool)
        self.all_valid = self.document_mask is None or _all_valid(self.document_mask)
        self.masked_are_zero = masked_are_zero
        self._cache: dict[Any, Any] = {}

    def _cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def full_mask(self) -> torch.Tensor:
        """The document mask expanded to the similarities' shape ``[..., L]``."""
        if self.document_mask is None:
            return torch.ones(self.similarities.shape, dtype=torch.bool, device=self.similarities.device)
        return self.document_mask.expand(self.similarities.shape)

    @property
    def filled(self) -> torch.Tensor:
        """Similarities with masked patches at -inf."""
        if self.all_valid:
            return self.similarities
        return self._cached("filled", lambda: self.similarities.masked_fill(~self.document_mask, -math.inf))

    @property
    def zero_filled(self) -> torch.Tensor:
        """Similarities with masked patches at 0."""
        if self.all_valid or self.masked_are_zero:
            return self.similarities
        return self._cached("zero", lambda: self.similarities.masked_fill(~self.document_mask, 0.0))

    @property
    def peak(self) -> torch.Tensor:
        """Max over the patches ``[...]`` (-inf where no patch is real)."""
        return self._cached("peak", lambda: self.filled.amax(dim=-1))

    @property
    def shift(self) -> torch.Tensor:
        """The max with -inf replaced by 0 ``[...]``, detached: the shift inside exponentials (no head's value depends
        on it, so no gradient needs to flow through it)."""
        def compute():
            peak = self.peak.detach()
            return peak if self.all_valid else torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        return self._cached("shift", compute)

    @property
    def counts(self) -> torch.Tensor:
        """Number of real patches ``[...]`` (float32)."""
        def compute():
            shape = self.similarities.shape[:-1]
            if self.document_mask is None:
                return torch.full(shape, float(self.similarities.shape[-1]), device=self.similarities.device)
            return self.document_mask.to(torch.float32).sum(dim=-1).expand(shape)
        return self._cached("counts", compute)

    def exponentials(self, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(exp((S - shift) / tau) [..., L], its sum [...])``, exactly 0 at masked patches."""
        def compute():
            exp = (self.filled - self.shift.unsqueeze(-1)).mul_(1.0 / tau).exp_()
            return exp, exp.sum(dim=-1)
        return self._cached(("exp", float(tau)), compute)

    def top_values(self, k: int) -> torch.Tensor:
        """The k largest similarities ``[..., k]`` in descending order, padded with -inf when there are fewer than k
        patches (masked patches count as -inf)."""
        def compute():
            filled = self.filled
            width = filled.shape[-1]
            if k == 1:
                return self.peak.unsqueeze(-1)
            if k <= width:
                return top_k_values(filled, k)
            pad = filled.new_full((*filled.shape[:-1], k - width), -math.inf)
            return torch.cat([filled, pad], dim=-1).sort(dim=-1, descending=True).values
        return self._cached(("top", int(k)), compute)

    def top_candidates(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``count`` largest similarities ``[..., count]`` (descending; equal ones by patch position) and their
        patch positions (long; -inf / -1 where padded or masked)."""
        def compute():
            filled = self.filled
            width = filled.shape[-1]
            take = min(count, width)
            if take == width:
                values, positions = filled.sort(dim=-1, descending=True, stable=True)
            else:  # topk (a full sort costs ~20x more on the CPU), then equal values put in patch order
                values, positions = filled.topk(take + 1, dim=-1, sorted=True)
                # a value equal to the take-th one left outside: which of the equal patches is in depends on topk's
                # internals, so those rows (rare: exactly equal similarities) are sorted in full, stably
                tied = (values[..., take] == values[..., take - 1]) & torch.isfinite(values[..., take - 1])
                values, positions = values[..., :take], positions[..., :take]
                positions, order = positions.sort(dim=-1)
                values, order = values.gather(-1, order).sort(dim=-1, descending=True, stable=True)
                positions = positions.gather(-1, order)
                if bool(tied.any()):
                    tied_values, tied_positions = filled[tied].sort(dim=-1, descending=True, stable=True)
                    values = values.index_put((tied,), tied_values[:, :take])
                    positions = positions.index_put((tied,), tied_positions[:, :take])
            values, positions = values[..., :take], positions[..., :take]
            positions = torch.where(torch.isfinite(values), positions, torch.full_like(positions, -1))
            if take < count:
                values = torch.cat([values, values.new_full((*values.shape[:-1], count - take), -math.inf)], dim=-1)
                positions = torch.cat([positions, positions.new_full((*positions.shape[:-1], count - take), -1)], dim=-1)
            return values, positions
        return self._cached(("candidates", int(count)), compute)


# Sorting networks over same-shape tensors (element-wise max / min): the top-k of short rows without torch.topk's
# per-row cost. Used by SharedWork.top_values and TopKHead.merge; no head formula lives here.


def _compare_exchange(columns: list[torch.Tensor], i: int, j: int, descending: bool = True) -> None:
    high, low = torch.maximum(columns[i], columns[j]), torch.minimum(columns[i], columns[j])
    columns[i], columns[j] = (high, low) if descending else (low, high)


def _bitonic_sort(columns: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sort k (a power of two) same-shape tensors element-wise into descending order (a bitonic sorting network)."""
    k, size = len(columns), 2
    while size <= k:
        stride = size // 2
        while stride >= 1:
            for i in range(k):
                j = i ^ stride
                if j > i:
                    _compare_exchange(columns, i, j, descending=(i & size) == 0)
            stride //= 2
        size *= 2
    return columns


def _bitonic_merge(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
    """The k largest of two element-wise descending k-lists, descending: max(a_i, b_(k-1-i)) is bitonic; clean it."""
    k = len(a)
    columns = [torch.maximum(a[i], b[k - 1 - i]) for i in range(k)]
    stride = k // 2
    while stride >= 1:
        for i in range(k):
            j = i ^ stride
            if j > i:
                _compare_exchange(columns, i, j)
        stride //= 2
    return columns


def top_k_values(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest values over the last dim, ``[..., k]`` in descending order (k <= width).

    For k a power of two, a network of element-wise max / min over slices of columns (sort k slices, then halve the
    slices by bitonic merges): about 2.5x faster than ``torch.topk``, whose cost on short rows is per row. Other k:
    ``torch.topk``.
    """
    width = values.shape[-1]
    if k < 2 or k & (k - 1) or width < 2 * k:
        return values.topk(min(k, width), dim=-1, sorted=True).values
    groups = width // k
    columns = _bitonic_sort([values[..., i * groups : (i + 1) * groups] for i in range(k)])
    pending = []
    if width > groups * k:  # fewer than k columns left over: a -inf padded k-list of their own
        tail = [values[..., column : column + 1] for column in range(groups * k, width)]
        pending.append(_bitonic_sort(tail + [torch.full_like(tail[0], -math.inf)] * (k - len(tail))))
    while columns[0].shape[-1] > 1:
        count = columns[0].shape[-1]
        if count % 2:
            pending.append([column[..., -1:] for column in columns])
            count -= 1
        half = count // 2
        columns = _bitonic_merge([c[..., :half] for c in columns], [c[..., half:count] for c in columns])
    for extra in pending:
        columns = _bitonic_merge(columns, extra)
    return torch.cat(columns, dim=-1)


# Groups of the inference top-k (`_top_k_by_groups`): rows of at least 16 x 64 values, k <= 4 (k(k-1)/128, 9% at most, of
# the rows, with random similarities, have two of their k largest values in one group and take the slower route).
_TOP_K_GROUPS = 64


def _groups_pay_off(values: torch.Tensor, k: int) -> bool:
    """Whether `_top_k_by_groups` is worth its extra steps on ``values`` (on the CPU only: a GPU's topk is fast, and
    `again.any()` would wait for the GPU at every block)."""
    return values.device.type == "cpu" and 2 <= k <= 4 and values.shape[-1] >= 16 * _TOP_K_GROUPS


def _top_k_by_groups(values: torch.Tensor, k: int) -> torch.Tensor:
    """``values.topk(k, dim=-1, sorted=True).values`` (the same numbers, NaN and ties included) for long rows, at
    inference: torch.topk costs ~1.3 ns per value on the CPU, 7x an ``amax``, and dominates a top-k head's scoring.

    Split each row into 64 interleaved groups (column c + 64 j, plus the left-over columns), take each group's max
    (one vectorised pass) and the k largest group maxes. Every value above the k-th of them, t, lies in those k
    groups (the others' max is at most t). So when those k groups and the left-over columns hold exactly k values
    >= t, the k group maxes are the row's k largest; in the other rows (two of the k largest in one group) the k
    largest are found among those groups' values and the left-over columns (only they can exceed t).
    """
    width = values.shape[-1]
    size = width // _TOP_K_GROUPS
    main = size * _TOP_K_GROUPS
    groups = values[..., :main].unflatten(-1, (size, _TOP_K_GROUPS))  # [..., size, 64]: group c holds c, c + 64, ...
    group_max = groups.amax(dim=-2)
    rest = values[..., main:]  # fewer than 64 left-over columns: column main + c joins group c
    if main < width:
        torch.maximum(group_max[..., : width - main], rest, out=group_max[..., : width - main])
    top, chosen = group_max.topk(k, dim=-1, sorted=True)
    members = groups.gather(-1, chosen.unsqueeze(-2).expand(*chosen.shape[:-1], size, k))  # [..., size, k]
    threshold = top[..., k - 1 :]
    count = torch.ge(members, threshold.unsqueeze(-1)).sum(dim=(-2, -1)) + torch.ge(rest, threshold).sum(dim=-1)
    again = (count != k) | top[..., 0].isnan()  # NaN: topk ranks it above every number; settled by topk below
    if bool(again.any()):
        candidates = torch.cat([members[again].flatten(-2), rest[again]], dim=-1)
        top[again] = candidates.topk(k, dim=-1, sorted=True).values
    return top


# --------------------------------------------------------------------------------------------------------------
# Built-in heads. Each formula lives here and nowhere else.
# --------------------------------------------------------------------------------------------------------------


@register_head("maxsim")
@dataclass(frozen=True)
class MaxSimHead(PoolingHead):
    """phi = max_j S_ij: ColBERT / ColPali's MaxSim."""

    def partial(self, similarities, document_mask):
        return (masked_fill_float32(similarities, document_mask, -math.inf).amax(dim=-1),)

    def partial_shared(self, work):
        return (work.peak,)

    def merge(self, a, b):
        return (torch.maximum(a[0], b[0]),)

    def finalize(self, state):
        return state[0]


@register_head("topk")
@dataclass(frozen=True)
class TopKHead(PoolingHead):
    """phi = mean of the k largest S_ij; a document with fewer than k valid patches uses all of them.

    State: the k largest similarities ``[..., k]`` in descending order, padded with -inf.
    """

    k: int = 4

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"pooling head 'topk': k must be an integer >= 1, got {self.k!r}")

    def partial(self, similarities, document_mask):
        filled = masked_fill_float32(similarities, document_mask, -math.inf)
        width = filled.shape[-1]
        if self.k == 1:
            return (filled.amax(dim=-1, keepdim=True),)
        if width < self.k:
            filled = torch.cat([filled, filled.new_full((*filled.shape[:-1], self.k - width), -math.inf)], dim=-1)
        if not _records_gradient(filled) and _groups_pay_off(filled, self.k):
            return (_top_k_by_groups(filled, self.k),)  # inference: the same values, faster in the scorer (CPU)
        return (filled.topk(self.k, dim=-1, sorted=True).values,)

    def partial_shared(self, work):
        return (work.top_values(self.k),)

    def merge(self, a, b):
        k = self.k
        if k >= 2 and not k & (k - 1):  # sorted k-lists: a bitonic merge (element-wise max / min, no per-row sort)
            return (torch.stack(_bitonic_merge(list(a[0].unbind(-1)), list(b[0].unbind(-1))), dim=-1),)
        return (torch.cat([a[0], b[0]], dim=-1).topk(k, dim=-1, sorted=True).values,)

    def finalize(self, state):
        values = state[0]
        total = values.sum(dim=-1)
        if bool(torch.isfinite(total).all()):  # no padding among the kept values: their plain mean
            return total / values.shape[-1]
        valid = torch.isfinite(values)
        count = valid.sum(dim=-1)
        total = torch.where(valid, values, torch.zeros_like(values)).sum(dim=-1)
        return _no_patch_is_minus_inf(total / count.clamp_min(1), count == 0)


def _exponentials_in_place(similarities: torch.Tensor, document_mask: torch.Tensor, tau: float):
    """Inference helper of the exponential heads: ``(exp((S - max) / tau) [..., Tq, Td], max / tau [..., Tq, 1],
    its sum [..., Tq], the mask [..., 1, Td] or None when every patch is real)``, 0 at masked patches; a pair
    without any valid patch has a sum of 0.

    One similarity-sized temporary, rewritten in place: a head that frees two or three such temporaries at once
    leaves more free memory at the top of the heap than glibc's trim threshold (twice the largest recently freed
    block), so every call gave it back and page-faulted it in again (about 1,000 page faults and twice the time per
    4 MiB block of `lir_robust.scoring.scorer`; `make bench-scoring`)."""
    valid = _all_valid(document_mask)
    mask = None if valid else document_mask.to(torch.bool).unsqueeze(-2)
    work = similarities.float() * (1.0 / tau) if valid else similarities.float().masked_fill(~mask, -math.inf).mul_(1.0 / tau)
    shift = _safe_max(work)  # no valid patch: shift by 0, the row stays -inf, its exponentials 0
    total = work.sub_(shift).exp_().sum(dim=-1)  # >= 1 wherever a patch is valid (the max gives exp(0))
    return work, shift, total, mask


@register_head("softmax")
@dataclass(frozen=True)
class SoftmaxHead(PoolingHead):
    """phi = sum_j w_ij S_ij, w_ij = softmax_j(S_ij / tau): a weighted mean (PAPER.md). tau -> 0 gives maxsim."""

    tau: float = 1.0

    def __post_init__(self):
        _check_positive("softmax", "tau", self.tau)

    def partial(self, similarities, document_mask):
        work = SharedWork(similarities, document_mask.unsqueeze(-2))
        return self.partial_shared(work)

    def partial_shared(self, work):
        exp, total = work.exponentials(self.tau)
        return work.shift, total, torch.linalg.vecdot(exp, work.zero_filled)  # a dot product per row, no temporary

    def __call__(self, similarities, document_mask):
        if not _records_gradient(similarities):
            return self._no_grad_value(similarities, document_mask)
        # Same value as finalize(partial(...)), in fewer passes over the similarities: a fused softmax (with its
        # fused backward), then one batched dot product per query token (the weights are exactly 0 at masked patches).
        filled = masked_fill_float32(similarities, document_mask, -math.inf)
        weights = torch.softmax(filled / self.tau, dim=-1)
        values = filled if _all_valid(document_mask) else masked_fill_float32(similarities, document_mask, 0.0)
        value = torch.linalg.vecdot(weights, values)
        return value if _all_valid(document_mask) else _no_patch_is_minus_inf(value, ~document_mask.any(dim=-1, keepdim=True).expand_as(value))

    def _no_grad_value(self, similarities, document_mask):
        """The same value at inference, with one similarity-sized temporary rewritten in place (see
        :func:`_exponentials_in_place`)."""
        work, _, total, mask = _exponentials_in_place(similarities, document_mask, self.tau)
        work.mul_(similarities)
        if mask is not None:
            work.masked_fill_(~mask, 0.0)  # masked similarities may hold anything (inf * 0 = NaN)
        return self.finalize((None, total, work.sum(dim=-1)))  # finalize reads the sums, not the shift

    def merge(self, a, b):
        shift = torch.maximum(a[0], b[0])
        scale_a, scale_b = torch.exp((a[0] - shift) / self.tau), torch.exp((b[0] - shift) / self.tau)
        return shift, a[1] * scale_a + b[1] * scale_b, a[2] * scale_a + b[2] * scale_b

    def finalize(self, state):
        return _no_patch_is_minus_inf(state[2] / state[1], state[1] == 0)


@register_head("lse")
@dataclass(frozen=True)
class LogSumExpHead(PoolingHead):
    """phi = tau * logsumexp_j(S_ij / tau) (colpali-engine's smooth max), minus tau * log(n_valid) if length_corrected.

    Uncorrected, the value grows with the number of patches (by up to tau * log n); the correction makes it a
    smooth max that lies between the mean and the max of the similarities.
    """

    tau: float = 0.1
    length_corrected: bool = False

    def __post_init__(self):
        _check_positive("lse", "tau", self.tau)
        if not isinstance(self.length_corrected, bool):
            raise ValueError(f"pooling head 'lse': length_corrected must be true or false, got {self.length_corrected!r}")

    def partial(self, similarities, document_mask):
        work = SharedWork(similarities, document_mask.unsqueeze(-2))
        return self.partial_shared(work)

    def partial_shared(self, work):
        return work.shift, work.exponentials(self.tau)[1], work.counts

    def __call__(self, similarities, document_mask):
        if _records_gradient(similarities):
            return self.finalize(self.partial(similarities, document_mask))
        # inference: one temporary (see _exponentials_in_place), the same state; log 0 = -inf: no valid patch, -inf
        _, shift, total, mask = _exponentials_in_place(similarities, document_mask, self.tau)
        count = None  # read by finalize only when length_corrected
        if self.length_corrected:
            count = torch.full_like(total, float(similarities.shape[-1])) if mask is None else mask.sum(dim=-1, dtype=torch.float32).expand_as(total)
        return self.finalize((self.tau * shift.squeeze(-1), total, count))

    def merge(self, a, b):
        shift = torch.maximum(a[0], b[0])
        total = a[1] * torch.exp((a[0] - shift) / self.tau) + b[1] * torch.exp((b[0] - shift) / self.tau)
        return shift, total, a[2] + b[2]

    def finalize(self, state):
        shift, total, count = state
        value = shift + self.tau * torch.log(total)
        if self.length_corrected:
            value = _no_patch_is_minus_inf(value - self.tau * torch.log(count), count == 0)
        return value


@register_head("mean")
@dataclass(frozen=True)
class MeanHead(PoolingHead):
    """phi = mean_j S_ij over valid patches (softmax with tau -> infinity)."""

    def partial(self, similarities, document_mask):
        work = SharedWork(similarities, document_mask.unsqueeze(-2))
        return self.partial_shared(work)

    def partial_shared(self, work):
        return work.zero_filled.sum(dim=-1), work.counts

    def merge(self, a, b):
        return a[0] + b[0], a[1] + b[1]

    def finalize(self, state):
        return _no_patch_is_minus_inf(state[0] / state[1].clamp_min(1), state[1] == 0)


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


# --------------------------------------------------------------------------------------------------------------
# pooling.json: the head a checkpoint was trained with, saved beside its weights
# --------------------------------------------------------------------------------------------------------------


def save_pooling_json(directory: "str | os.PathLike", head: PoolingHead | None, training: dict[str, Any] | None = None) -> None:
    """Write ``directory/pooling.json``: ``{"head": {"name", "params"}, "spec": "topk:k=4", "training": {...}}``."""
    payload = {
        "head": None if head is None else head.to_dict(),
        "spec": None if head is None else head.spec(),
        "training": training or {},
    }
    from lir_robust.core.files import write_text_atomic

    write_text_atomic(os.path.join(os.fspath(directory), POOLING_FILE), json.dumps(payload, indent=2, default=str) + "\n")


def load_pooling_json(directory: "str | os.PathLike") -> PoolingHead | None:
    """The head saved in ``directory/pooling.json`` (None when the file is absent or names no head).

    Accepts what :func:`save_pooling_json` writes, and also a bare ``{"spec": ...}`` or head dict.
    """
    path = os.path.join(os.fspath(directory), POOLING_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        saved = json.load(handle)
    if isinstance(saved, dict) and saved.get("head"):
        return parse_head(saved["head"])
    if isinstance(saved, dict) and saved.get("spec"):
        return parse_head(saved["spec"])
    if isinstance(saved, dict) and "name" in saved:
        return parse_head(saved)
    if isinstance(saved, dict) and "head" in saved:
        return None  # a checkpoint saved without a head
    raise ValueError(f"{path} does not describe a pooling head (expected {{\"head\": {{\"name\": ..., \"params\": ...}}}})")
