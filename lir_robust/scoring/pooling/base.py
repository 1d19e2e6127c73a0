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

Document-aware heads (``needs_documents = True``, e.g. ``coherent``) also see each document's vectors: the scorer
asks them for per-patch offsets (``document_bias``) and pools the shifted similarities with their ``inner_head``.

Adding a head takes a few lines::

    @register_head("median")
    @dataclass(frozen=True)
    class MedianHead(PoolingHead):
        def __call__(self, similarities, document_mask):
            s = masked_fill_float32(similarities, document_mask, float("nan"))
            return s.nanmedian(dim=-1).values

This module holds the contract (:class:`PoolingHead`), the registry, the text forms and the ``pooling.json`` round
trip; the package :mod:`lir_robust.scoring.pooling` re-exports every public name (the heads are in ``heads.py`` and
``exclusive.py``, the work the sweep shares between heads in ``shared.py``).
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
    #: True when the head also needs each document's own vectors (``coherent``): it then gives per-patch offsets
    #: ``document_bias(documents [..., Td, D], document_mask, *, padding_is_zero) -> [..., Td]`` that the scorer adds
    #: to the similarities before pooling them with its ``inner_head``. Such a head is scored through the scorer only.
    needs_documents: ClassVar[bool] = False
    #: True when the head's inference on the CPU reads the similarities in place through the compiled kernels
    #: (:mod:`lir_robust.scoring.pooling.compiled`, no similarity-sized temporary): the scorer then gives it its whole
    #: matrix at once, whose rows the kernels split over torch's threads, instead of cache-sized blocks.
    compiled_at_inference: ClassVar[bool] = False

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

    def partial_shared(self, work: "SharedWork") -> State:  # noqa: F821 (SharedWork: lir_robust.scoring.pooling.shared)
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
