"""Content fingerprints of weights (lir_robust.encoders.fingerprint): what keys the embedding cache, so weights changed in place
can never be answered with old embeddings."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


from lir_robust.encoders import fingerprint
from lir_robust.encoders.colpali import checkpoint_fingerprint


def _overwrite_keeping_size_inode_and_time(path: Path, data: bytes) -> None:
    before = path.stat()
    assert len(data) == before.st_size
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def _model_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 8}))
    (folder / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4)
    (folder / "sub").mkdir()
    (folder / "sub" / "projection.safetensors").write_bytes(b"\x01" * 512)
    return folder


def test_a_folder_fingerprint_follows_content_only(tmp_path):
    folder = _model_folder(tmp_path / "model")
    original = fingerprint.folder_fingerprint(folder)
    assert fingerprint.folder_fingerprint(folder) == original  # stable
    weights = folder / "adapter_model.safetensors"
    content = weights.read_bytes()
    _overwrite_keeping_size_inode_and_time(weights, content[:-1] + bytes([content[-1] ^ 1]))  # one bit, in place
    assert fingerprint.folder_fingerprint(folder) != original
    _overwrite_keeping_size_inode_and_time(weights, content)
    assert fingerprint.folder_fingerprint(folder) == original
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")  # hidden files are not weights
    assert fingerprint.folder_fingerprint(folder) == original
    (folder / "sub" / "projection.safetensors").rename(folder / "sub" / "projection-old.safetensors")  # names count
    assert fingerprint.folder_fingerprint(folder) != original


def test_a_large_file_is_hashed_once_then_remembered_until_it_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "FULL_HASH_BYTES", 1024)
    monkeypatch.setattr(fingerprint, "_memo_in_process", {})
    monkeypatch.setenv(fingerprint.MEMO_ENV, str(tmp_path / "memo.json"))
    reads = []
    real_hash = fingerprint._sha256_file
    monkeypatch.setattr(fingerprint, "_sha256_file", lambda path: reads.append(path) or real_hash(path))
    base = tmp_path / "base.safetensors"
    base.write_bytes(os.urandom(4096))
    small = tmp_path / "small.json"
    small.write_text("{}")

    assert fingerprint.file_digest(base) == hashlib.sha256(base.read_bytes()).hexdigest()
    assert len(reads) == 1 and (tmp_path / "memo.json").is_file()
    fingerprint._memo_in_process.clear()  # another process: the memo file answers
    assert fingerprint.file_digest(base) == hashlib.sha256(base.read_bytes()).hexdigest() and len(reads) == 1
    fingerprint.file_digest(small)
    fingerprint.file_digest(small)
    assert len(reads) == 3  # small files are read every time

    modified = base.stat().st_mtime_ns
    base.write_bytes(os.urandom(4096))  # rewritten (a new modification time): hashed again
    os.utime(base, ns=(modified + 10**9, modified + 10**9))  # even where the clock is coarser than two writes
    assert fingerprint.file_digest(base) == hashlib.sha256(base.read_bytes()).hexdigest() and len(reads) == 4
    (tmp_path / "memo.json").write_text("{broken")  # a damaged memo is only a memo: recomputed
    fingerprint._memo_in_process.clear()
    assert fingerprint.file_digest(base) == hashlib.sha256(base.read_bytes()).hexdigest() and len(reads) == 5


def test_a_hub_id_is_keyed_by_its_revision(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refs = tmp_path / "hub" / "models--owner--robust-model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40 + "\n")
    assert fingerprint.model_fingerprint("owner/robust-model") == f"hub:owner/robust-model@{'a' * 40}"
    (refs / "main").write_text("b" * 40)  # a new revision downloaded: a new key
    assert fingerprint.model_fingerprint("owner/robust-model") == f"hub:owner/robust-model@{'b' * 40}"
    assert fingerprint.model_fingerprint("owner/not-cached") == "hub:owner/not-cached@unknown revision"


def test_an_adapter_fingerprint_covers_its_base_model(tmp_path):
    base = _model_folder(tmp_path / "base")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\x02" * 256)
    original = checkpoint_fingerprint(str(adapter))
    assert "+base:" in original
    weights = base / "adapter_model.safetensors"
    _overwrite_keeping_size_inode_and_time(weights, weights.read_bytes()[::-1])
    assert checkpoint_fingerprint(str(adapter)) != original
