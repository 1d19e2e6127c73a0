"""Pooling heads: how one query token's similarities to a document's patches become one number.

The contract every head keeps (shapes, masking, float32, text form, parts) is the docstring of
:mod:`lir_robust.scoring.pooling.base`. The package is laid out as

- ``base``: :class:`PoolingHead` (``partial`` / ``merge`` / ``finalize``), the registry (``register_head``,
  ``parse_head``), text forms and the ``pooling.json`` round trip;
- ``shared``: :class:`SharedWork`, what the sweep computes once for all heads, and the top-k sorting networks;
- ``compiled``: the compiled (numba) candidate search ``SharedWork.top_candidates`` uses at inference;
- ``heads``: maxsim, topk (with its grouped inference top-k), softmax, lse, mean;
- ``exclusive``: the joint capacity-limited head;
- ``blend``: the joint blend of capacity-limited matching and a softmax;
- ``coherent``: coherence-aware matching (a patch atypical of its own document counts less), any inner head.

Every public name is importable from here: ``from lir_robust.scoring.pooling import parse_head``.
"""

from lir_robust.scoring.pooling.base import (
    HEADS,
    POOLING_FILE,
    PoolingHead,
    available_heads,
    load_pooling_json,
    masked_fill_float32,
    parse_head,
    register_head,
    save_pooling_json,
)
from lir_robust.scoring.pooling.shared import SharedWork, top_k_values

# the heads register in import order, the order available_heads() lists them: maxsim, topk, softmax, lse, mean, exclusive, blend, coherent
from lir_robust.scoring.pooling.heads import LogSumExpHead, MaxSimHead, MeanHead, SoftmaxHead, TopKHead
from lir_robust.scoring.pooling.exclusive import ExclusiveMatchHead
from lir_robust.scoring.pooling.blend import BlendHead
from lir_robust.scoring.pooling.coherent import CoherentHead

__all__ = [
    "PoolingHead",
    "MaxSimHead",
    "TopKHead",
    "SoftmaxHead",
    "LogSumExpHead",
    "MeanHead",
    "ExclusiveMatchHead",
    "BlendHead",
    "CoherentHead",
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
