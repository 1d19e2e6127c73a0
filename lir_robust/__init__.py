"""lir-robust: pooling heads that make late-interaction retrieval robust to long documents and injected patches."""

from lir_robust.scoring.pooling import HEADS, PoolingHead, available_heads, parse_head, register_head
from lir_robust.scoring.scorer import score

__version__ = "0.1.0"
__all__ = ["HEADS", "PoolingHead", "available_heads", "parse_head", "register_head", "score", "__version__"]
