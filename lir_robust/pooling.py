"""Pooling heads: how one query token's similarities to a document's patches become one number.

A late-interaction score is ``score(q, d) = sum_i phi(S_i1 .. S_iM)`` with ``S_ij = q_i . d_j``. The pooling head is
``phi``. Every head here

- maps similarities ``[..., Tq, Td]`` and a document mask ``[..., Td]`` (True = a real patch) to per-query-token
  values ``[..., Tq]``;
- ignores masked (padded) patches completely, whatever they contain (NaN included);
- computes in float32 whatever the input dtype, and is differentiable;
- has a text form that round-trips: ``parse_head("topk:k=4").spec() == "topk:k=4"``.

Heads that can be computed over a document in parts (all built-in ones) also implement ``partial`` / ``merge`` /
``finalize``: ``partial`` summarises a subset of the patches, ``merge`` combines two summaries, ``finalize`` gives
the per-token value. ``head(S, mask) == head.finalize(head.partial(S, mask))``, and scoring the original document
and appended (injected) patches separately then merging equals scoring the concatenation. The length sweep relies on
this to avoid re-scoring the original document for every injection budget.

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
    "HEADS",
    "register_head",
    "parse_head",
    "available_heads",
    "masked_fill_float32",
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


def _all_valid(document_mask: torch.Tensor) -> bool:
    """True when no patch is masked (a pass over the small mask, never over the similarities)."""
    return bool(document_mask.all()) if document_mask.numel() else True


@dataclass(frozen=True)
class PoolingHead:
    """Base class. Subclasses are frozen dataclasses whose fields are the head's parameters."""

    name: ClassVar[str] = "?"

    # -- the three parts that make a head mergeable (override all three, or override __call__ only) --
    def partial(self, similarities: torch.Tensor, document_mask: torch.Tensor) -> State:
        """Summary of the given patches: a tuple of tensors with leading shape ``[..., Tq]``."""
        raise NotImplementedError(f"pooling head {self.name!r} cannot be computed in parts")

    def merge(self, a: State, b: State) -> State:
        """Combine the summaries of two disjoint sets of patches of the same documents."""
        raise NotImplementedError(f"pooling head {self.name!r} cannot be computed in parts")

    def finalize(self, state: State) -> torch.Tensor:
        """Per-query-token value ``[..., Tq]`` from a summary."""
        raise NotImplementedError(f"pooling head {self.name!r} cannot be computed in parts")

    def __call__(self, similarities: torch.Tensor, document_mask: torch.Tensor) -> torch.Tensor:
        """similarities ``[..., Tq, Td]``, document_mask ``[..., Td]`` (bool, True = real patch) -> ``[..., Tq]``."""
        return self.finalize(self.partial(similarities, document_mask))

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
    fields = {f.name: f for f in dataclasses.fields(cls)}
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in param_text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"pooling head {head!r}: parameters are written key=value, got {item!r}")
        if key not in fields:
            raise ValueError(
                f"pooling head {name!r} has no parameter {key!r}; its parameters: {sorted(fields) or 'none'}"
            )
        params[key] = _parse_value(fields[key], value, name)
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


# --------------------------------------------------------------------------------------------------------------
# Built-in heads. Each formula lives here and nowhere else.
# --------------------------------------------------------------------------------------------------------------


@register_head("maxsim")
@dataclass(frozen=True)
class MaxSimHead(PoolingHead):
    """phi = max_j S_ij: ColBERT / ColPali's MaxSim."""

    def partial(self, similarities, document_mask):
        return (masked_fill_float32(similarities, document_mask, -math.inf).amax(dim=-1),)

    def merge(self, a, b):
        return (torch.maximum(a[0], b[0]),)

    def finalize(self, state):
        return state[0]


@register_head("topk")
@dataclass(frozen=True)
class TopKHead(PoolingHead):
    """phi = mean of the k largest S_ij; a document with fewer than k valid patches uses all of them."""

    k: int = 4

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"pooling head 'topk': k must be an integer >= 1, got {self.k!r}")

    def partial(self, similarities, document_mask):
        filled = masked_fill_float32(similarities, document_mask, -math.inf)
        k = min(self.k, filled.shape[-1])
        if k == 1:
            return (filled.amax(dim=-1, keepdim=True),)
        return (filled.topk(k, dim=-1, sorted=False).values,)

    def merge(self, a, b):
        both = torch.cat([a[0], b[0]], dim=-1)
        return (both.topk(min(self.k, both.shape[-1]), dim=-1, sorted=False).values,)

    def finalize(self, state):
        values = state[0]
        total = values.sum(dim=-1)
        if bool(torch.isfinite(total).all()):  # no padding among the kept values: their plain mean
            return total / values.shape[-1]
        valid = torch.isfinite(values)
        total = torch.where(valid, values, torch.zeros_like(values)).sum(dim=-1)
        return total / valid.sum(dim=-1).clamp_min(1)


@register_head("softmax")
@dataclass(frozen=True)
class SoftmaxHead(PoolingHead):
    """phi = sum_j w_ij S_ij, w_ij = softmax_j(S_ij / tau): a weighted mean (PAPER.md). tau -> 0 gives maxsim."""

    tau: float = 1.0

    def __post_init__(self):
        _check_positive("softmax", "tau", self.tau)

    def partial(self, similarities, document_mask):
        filled = masked_fill_float32(similarities, document_mask, -math.inf)
        shift = _safe_max(filled)
        # One new tensor, then in place: exp((S - shift) / tau), exactly 0 at masked patches.
        weights = (filled - shift).mul_(1.0 / self.tau).exp_()
        values = filled if _all_valid(document_mask) else masked_fill_float32(similarities, document_mask, 0.0)
        weighted = torch.linalg.vecdot(weights, values)  # dot product per query token, no temporary
        return shift.squeeze(-1), weights.sum(dim=-1), weighted

    def __call__(self, similarities, document_mask):
        # Same value as finalize(partial(...)), in fewer passes over the similarities: a fused softmax, then one
        # batched dot product per query token (the weights are exactly 0 at masked patches).
        filled = masked_fill_float32(similarities, document_mask, -math.inf)
        weights = torch.softmax(filled / self.tau, dim=-1)
        values = filled if _all_valid(document_mask) else masked_fill_float32(similarities, document_mask, 0.0)
        return torch.linalg.vecdot(weights, values)

    def merge(self, a, b):
        shift = torch.maximum(a[0], b[0])
        scale_a, scale_b = torch.exp((a[0] - shift) / self.tau), torch.exp((b[0] - shift) / self.tau)
        return shift, a[1] * scale_a + b[1] * scale_b, a[2] * scale_a + b[2] * scale_b

    def finalize(self, state):
        return state[2] / state[1]


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
        filled = masked_fill_float32(similarities, document_mask, -math.inf)
        shift = _safe_max(filled)
        total = (filled - shift).mul_(1.0 / self.tau).exp_().sum(dim=-1)
        count = document_mask.to(torch.float32).sum(dim=-1, keepdim=True).expand_as(total)
        return shift.squeeze(-1), total, count

    def merge(self, a, b):
        shift = torch.maximum(a[0], b[0])
        total = a[1] * torch.exp((a[0] - shift) / self.tau) + b[1] * torch.exp((b[0] - shift) / self.tau)
        return shift, total, a[2] + b[2]

    def finalize(self, state):
        shift, total, count = state
        value = shift + self.tau * torch.log(total)
        if self.length_corrected:
            value = value - self.tau * torch.log(count)
        return value


@register_head("mean")
@dataclass(frozen=True)
class MeanHead(PoolingHead):
    """phi = mean_j S_ij over valid patches (softmax with tau -> infinity)."""

    def partial(self, similarities, document_mask):
        filled = masked_fill_float32(similarities, document_mask, 0.0)
        count = document_mask.to(torch.float32).sum(dim=-1, keepdim=True).expand(filled.shape[:-1])
        return filled.sum(dim=-1), count

    def merge(self, a, b):
        return a[0] + b[0], a[1] + b[1]

    def finalize(self, state):
        return state[0] / state[1]


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
    path = os.path.join(os.fspath(directory), POOLING_FILE)
    with open(path, "w") as handle:
        handle.write(json.dumps(payload, indent=2, default=str) + "\n")


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
