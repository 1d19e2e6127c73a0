"""On-disk embedding cache and the one call that encodes a data set: a corpus is encoded once, every sweep reuses it.

Key = sha256 of (encoder config, data fingerprint, role "queries" / "documents", format version). The encoder config
holds a content fingerprint of the weights (:mod:`lir_robust.encoders.fingerprint`), so weights changed in place give a new
key: a retrained model can never be answered with its predecessor's embeddings.

One folder per key, ``<cache dir>/<key>/``, written atomically (a temporary folder renamed into place):

    vectors.npy    float32 [N_rows, D]: every item's rows, one after the other (memory-mapped when read)
    offsets.npy    int64 [N_items + 1]: item i owns rows offsets[i]:offsets[i+1]
    meta.json      format, shapes, what made it

Reading memory-maps ``vectors.npy``: a corpus larger than memory is read page by page, never copied whole. A missing
entry is encoded; a corrupt one (truncated, wrong shapes, unreadable metadata) is encoded again with a warning;
any other failure (permissions, I/O errors) is an error naming the file.
Default cache dir: ``$LIR_ROBUST_CACHE`` or ``.cache/lir-robust/embeddings``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lir_robust.data import RetrievalSet
from lir_robust.encoders.base import MultiVectorEncoder, barrier, is_main_process
from lir_robust.core.files import atomic_folder, json_default
from lir_robust.encoders.flat_corpus import FlatCorpus

__all__ = ["EmbeddingCache", "CacheCorruptError", "default_cache_dir", "encode_retrieval_set", "CACHE_FORMAT"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2
CACHE_ENV = "LIR_ROBUST_CACHE"


class CacheCorruptError(ValueError):
    """A cache entry exists but cannot be what was stored (truncated or inconsistent): it is encoded again."""


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(".cache") / "lir-robust" / "embeddings")


def _open_array(path: Path, what: str) -> np.ndarray:
    """``np.load`` memory-mapped; a truncated or foreign file is CacheCorruptError, I/O errors propagate."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as error:  # numpy's own "cannot reshape / bad header / pickled" family
        raise CacheCorruptError(f"{what} {path} is unreadable ({error})") from None


class EmbeddingCache:
    """Multi-vector embeddings stored under a key derived from what made them."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    @staticmethod
    def key(encoder_config: dict[str, Any], data_fingerprint: str, role: str, settings: dict[str, Any] | None = None) -> str:
        payload = {"encoder": encoder_config, "data": data_fingerprint, "role": role, "settings": settings or {},
                   "format": CACHE_FORMAT}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def path(self, key: str) -> Path:
        return self.directory / key

    def load(self, key: str) -> FlatCorpus | None:
        """The stored embeddings (memory-mapped), None when there is no entry or it is corrupt (a warning says which)."""
        folder = self.path(key)
        if not folder.exists():
            return None
        try:
            return self._read(folder)
        except CacheCorruptError as error:
            logger.warning("cache entry %s is corrupt and will be encoded again: %s", folder, error)
            return None

    def _read(self, folder: Path) -> FlatCorpus:
        if not folder.is_dir():
            raise CacheCorruptError(f"{folder} is not a cache folder")
        meta_file = folder / "meta.json"
        try:
            meta = json.loads(meta_file.read_text())
        except FileNotFoundError:
            raise CacheCorruptError(f"{meta_file} is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CacheCorruptError(f"{meta_file} is not JSON ({error})") from None
        if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
            raise CacheCorruptError(f"{meta_file} has format {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                                    f"expected {CACHE_FORMAT}")
        for name in ("vectors.npy", "offsets.npy"):
            if not (folder / name).is_file():
                raise CacheCorruptError(f"{folder / name} is missing")
        vectors = _open_array(folder / "vectors.npy", "vectors")
        offsets = np.array(_open_array(folder / "offsets.npy", "offsets"))
        rows, dim, items = meta.get("rows"), meta.get("dim"), meta.get("items")
        if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in (rows, dim, items)):
            raise CacheCorruptError(f"{meta_file}: rows / dim / items must be integers >= 0, got {rows!r} / {dim!r} / {items!r}")
        if (vectors.dtype != np.float32 or vectors.ndim != 2 or list(vectors.shape) != [rows, dim]
                or offsets.dtype != np.int64 or offsets.shape != (items + 1,) or offsets[0] != 0 or offsets[-1] != rows
                or bool((np.diff(offsets) < 0).any())):
            raise CacheCorruptError(
                f"{folder}: arrays {vectors.dtype} {vectors.shape} / {offsets.dtype} {offsets.shape} do not match "
                f"meta.json (rows {rows}, dim {dim}, items {items})"
            )
        with warnings.catch_warnings():  # a read-only memory map: the tensor must not be written to (nothing does)
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(vectors)
        return FlatCorpus(tensor, torch.from_numpy(offsets))

    def save(self, key: str, items: "list[torch.Tensor] | FlatCorpus", meta: dict[str, Any] | None = None) -> Path:
        """Store ``items`` (``[L_i, D]`` tensors, or a FlatCorpus) under ``key``; atomic (temporary folder, rename)."""
        corpus = FlatCorpus.from_documents(items)
        folder = self.path(key)
        with atomic_folder(folder) as temporary:  # replaces a corrupt entry, if any, only once the new one is whole
            np.save(temporary / "vectors.npy", corpus.vectors.float().contiguous().numpy(), allow_pickle=False)
            np.save(temporary / "offsets.npy", corpus.starts.to(torch.int64).numpy(), allow_pickle=False)
            info = {"format": CACHE_FORMAT, "rows": int(corpus.vectors.shape[0]), "dim": corpus.dim,
                    "items": len(corpus), **(meta or {})}
            (temporary / "meta.json").write_text(json.dumps(info, indent=1, default=json_default) + "\n")
        return folder


def encode_retrieval_set(
    encoder: MultiVectorEncoder,
    data: RetrievalSet,
    cache: EmbeddingCache | None = None,
    use_cache: bool = True,
) -> tuple[list[torch.Tensor], FlatCorpus]:
    """(query embeddings in ``data.queries`` order as ``[Tq, D]`` tensors, document embeddings in ``data.corpus``
    order as a FlatCorpus), from the cache when there (documents memory-mapped), else encoded (split across processes
    when several run) and stored."""
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
        stored = cache.load(key) if use_cache else None  # documents: read back memory-mapped, the list is freed
        results.append(stored if stored is not None else FlatCorpus.from_documents(embeddings))
    queries = [results[0].document(index) for index in range(len(results[0]))]
    return queries, results[1]
