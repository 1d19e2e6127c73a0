"""Content fingerprints of model weights, so that anything keyed by a model (the embedding cache, a sweep's resume
key, a published card) changes when the weights change, even in place and at the same size.

- A local folder: sha256 over every file's relative path and content. Files under ``FULL_HASH_BYTES`` are read every
  time (adapters, projections, configs, tokenizers); larger ones (base weights) are hashed once and remembered by
  (absolute path, size, modification time, inode) in a small JSON memo, so a base model of several GB costs one read.
- A Hugging Face Hub id: ``hub:<id>@<commit>``, the revision of the snapshot in the local Hub cache (offline), or the
  Hub's current revision when it can be asked; the id alone only when neither is known (then the model cannot be
  loaded either).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from lir_robust.core.huggingface import hub_offline

__all__ = ["folder_fingerprint", "file_digest", "model_fingerprint", "FULL_HASH_BYTES"]

logger = logging.getLogger(__name__)

FULL_HASH_BYTES = 64 << 20
MEMO_ENV = "LIR_ROBUST_FINGERPRINTS"
_memo_in_process: dict[str, str] = {}


def _memo_path() -> Path:
    return Path(os.environ.get(MEMO_ENV) or Path.home() / ".cache" / "lir-robust" / "content-hashes.json")


def _read_memo() -> dict[str, str]:
    try:
        memo = json.loads(_memo_path().read_text())
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):  # absent or damaged: it is only a memo, recomputed
        return {}


def _write_memo(entry: str, digest: str) -> None:
    from lir_robust.core.files import write_json_atomic

    memo = _read_memo()
    memo[entry] = digest
    try:
        write_json_atomic(_memo_path(), memo, indent=None)
    except OSError as error:  # a read-only home: keep it in this process only
        logger.debug("could not store the content-hash memo (%s)", error)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: "str | os.PathLike") -> str:
    """sha256 of a file's content (large files: remembered by path, size, mtime and inode)."""
    path = Path(path).resolve()
    status = path.stat()
    if status.st_size < FULL_HASH_BYTES:
        return _sha256_file(path)
    entry = f"{path}\x00{status.st_size}\x00{status.st_mtime_ns}\x00{status.st_ino}"
    if entry in _memo_in_process:
        return _memo_in_process[entry]
    digest = _read_memo().get(entry)
    if digest is None:
        logger.info("hashing %s (%.0f MB) once for the embedding cache key", path, status.st_size / 2**20)
        digest = _sha256_file(path)
        _write_memo(entry, digest)
    _memo_in_process[entry] = digest
    return digest


def folder_fingerprint(folder: "str | os.PathLike") -> str:
    """Content hash of every file under ``folder`` (relative paths and contents; symlinks followed)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = file.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in file.relative_to(folder).parts):
            continue  # hidden files (.gitattributes, editor or cache droppings) do not change the weights
        digest.update(f"{relative}\x00{file_digest(file)}\x00".encode())
    return digest.hexdigest()[:16]


def _hub_revision(repo_id: str) -> str | None:
    """The commit of ``repo_id``'s snapshot in the local Hub cache, else the Hub's (when reachable), else None."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    refs = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    if refs.is_file():
        return refs.read_text().strip()
    if hub_offline():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(repo_id, timeout=10).sha
    except Exception:  # unreachable or unknown: the load itself reports that clearly
        return None


def model_fingerprint(name_or_path: "str | os.PathLike") -> str:
    """A local folder's content fingerprint, or ``hub:<id>@<revision>`` for a Hub id."""
    path = Path(name_or_path)
    if path.is_dir():
        return folder_fingerprint(path)
    if path.is_file():
        return file_digest(path)[:16]
    revision = _hub_revision(str(name_or_path))
    return f"hub:{name_or_path}@{revision or 'unknown revision'}"
