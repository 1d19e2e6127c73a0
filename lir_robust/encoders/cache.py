"""On-disk embedding cache and the one call that encodes a data set: a corpus is encoded once, every sweep reuses it.

Key = sha256 of (encoder config, data fingerprint, role "queries" / "documents", format version). One file per key,
``<cache dir>/<key>.pt`` holding ``vectors [N_rows, D]`` (float32, all items concatenated) and ``lengths [N_items]``;
written atomically by the main process. Default cache dir: ``$LIR_ROBUST_CACHE`` or ``.cache/lir-robust/embeddings``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from lir_robust.data import RetrievalSet
from lir_robust.encoders.base import MultiVectorEncoder, barrier, is_main_process

__all__ = ["EmbeddingCache", "default_cache_dir", "encode_retrieval_set", "CACHE_FORMAT"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_ENV = "LIR_ROBUST_CACHE"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(".cache") / "lir-robust" / "embeddings")


class EmbeddingCache:
    """Lists of ``[L_i, D]`` tensors stored under a key derived from what made them."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    @staticmethod
    def key(encoder_config: dict[str, Any], data_fingerprint: str, role: str, settings: dict[str, Any] | None = None) -> str:
        payload = {"encoder": encoder_config, "data": data_fingerprint, "role": role, "settings": settings or {},
                   "format": CACHE_FORMAT}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.pt"

    def load(self, key: str) -> list[torch.Tensor] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            return list(torch.split(stored["vectors"], stored["lengths"].tolist()))
        except Exception as error:  # a truncated or foreign file: re-encode
            logger.warning("ignoring unreadable cache file %s (%s)", path, error)
            return None

    def save(self, key: str, items: list[torch.Tensor], meta: dict[str, Any] | None = None) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(
            {"vectors": torch.cat(items), "lengths": torch.tensor([item.shape[0] for item in items]),
             "meta": json.dumps(meta or {}, default=str)},
            temporary,
        )
        os.replace(temporary, path)
        return path


def encode_retrieval_set(
    encoder: MultiVectorEncoder,
    data: RetrievalSet,
    cache: EmbeddingCache | None = None,
    use_cache: bool = True,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(query embeddings in ``data.queries`` order, document embeddings in ``data.corpus`` order), from the cache
    when there, else encoded (split across processes when several run) and stored."""
    cache = cache or EmbeddingCache()
    if data.modality != encoder.modality:
        raise ValueError(f"{data.name} holds {data.modality} documents but the encoder encodes {encoder.modality}")
    results = []
    for role, items in (("queries", lambda: list(data.queries.values())),
                        ("documents", lambda: data.document_texts() if data.modality == "text" else data.document_images())):
        key = EmbeddingCache.key(encoder.config, data.fingerprint(), role)
        cached = cache.load(key) if use_cache else None
        if cached is not None:
            logger.info("%s of %s: %d items from cache %s", role, data.name, len(cached), cache.path(key))
            results.append(cached)
            continue
        values = items()
        embeddings = encoder.encode_queries(values) if role == "queries" else encoder.encode_documents(values)
        if use_cache and is_main_process():
            cache.save(key, embeddings, meta={"encoder": encoder.config, "data": data.summary(), "role": role})
        barrier()
        results.append(embeddings)
    return results[0], results[1]
