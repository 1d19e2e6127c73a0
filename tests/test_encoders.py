"""Encoders: one interface over TextColBERT and colpali-engine models, the embedding cache, multi-process encoding."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lir_robust.data import load_beir
from lir_robust.encoders.cache import EmbeddingCache, encode_retrieval_set
from lir_robust.encoders.load import load_encoder
from retrieval_fixtures import write_beir, write_vidore_v2
from tiny_text import save_tiny_bert

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_text_encoder_interface(tiny_bert):
    encoder = load_encoder(str(tiny_bert), show_progress=False)
    queries = encoder.encode_queries(["what is known about the wing ?", "heat"])
    documents = encoder.encode_documents(["the wing , lift and drag .", "heat transfer in the boundary layer"])
    assert [q.shape[1] for q in queries] == [32, 32] and all(q.dtype == torch.float32 for q in queries)
    assert torch.allclose(documents[0].norm(dim=-1), torch.ones(documents[0].shape[0]))
    # punctuation is masked in documents: [CLS] [D] the wing lift and drag [SEP] -> 8 rows
    assert documents[0].shape[0] == 8
    reference = encoder.model.encode(["what is known about the wing ?", "heat"], True, show_progress=False)
    assert all(torch.allclose(a, b) for a, b in zip(queries, reference))


def test_finetune_output_folder_loads_through_its_model_subfolder(tiny_bert, tmp_path):
    from lir_robust.encoders.text_colbert import TextColBERT

    run = tmp_path / "finetune-topk-k4"
    TextColBERT.from_base(str(tiny_bert), projection_dim=8, pooling="topk:k=4").save_pretrained(run / "model")
    (run / "config.json").write_text("{}")  # the training configuration train/finetune.py writes beside model/
    encoder = load_encoder(str(run), show_progress=False)
    assert encoder.pooling.spec() == "topk:k=4" and encoder.encode_queries(["heat"])[0].shape[1] == 8


def test_cache_is_reused(tiny_bert, tmp_path):
    data = load_beir(write_beir(tmp_path / "tiny"))
    cache = EmbeddingCache(tmp_path / "cache")
    first = load_encoder(str(tiny_bert), show_progress=False)
    queries, documents = encode_retrieval_set(first, data, cache)
    assert first.items_encoded == len(data.queries) + len(data.corpus)
    second = load_encoder(str(tiny_bert), show_progress=False)
    again_queries, again_documents = encode_retrieval_set(second, data, cache)
    assert second.items_encoded == 0  # second run encodes nothing
    assert all(torch.equal(a, b) for a, b in zip(documents, again_documents))
    assert all(torch.equal(a, b) for a, b in zip(queries, again_queries))
    # other data -> other key
    other = load_beir(write_beir(tmp_path / "other", documents_per_topic=2))
    encode_retrieval_set(second, other, cache)
    assert second.items_encoded == len(other.queries) + len(other.corpus)


def test_colpali_encoder_on_pages(tiny_colqwen2_dir, tmp_path):
    data = __import__("lir_robust.data", fromlist=["x"]).load_retrieval_set(write_vidore_v2(tmp_path / "v2", pages=3))
    encoder = load_encoder(str(tiny_colqwen2_dir), batch_size=2, show_progress=False)
    assert encoder.modality == "image"
    queries, pages = encode_retrieval_set(encoder, data, EmbeddingCache(tmp_path / "cache"))
    assert len(queries) == 6 and len(pages) == 3
    assert all(page.dim() == 2 and page.shape[1] == 128 and page.shape[0] > 4 for page in pages)
    assert not any(torch.isnan(page).any() for page in pages)


@pytest.mark.slow
def test_two_processes_give_the_same_embeddings(tiny_bert, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    worker = str(TESTS / "distributed_encode_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    subprocess.run([sys.executable, worker, str(tiny_bert), str(tmp_path / "one.pt")], check=True, env=env, timeout=120)
    subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", "29517", worker, str(tiny_bert), str(tmp_path / "two.pt")],
        check=True, env=env, timeout=180,
    )
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one["world"] == 1 and two["world"] == 2
    assert two["encoded_here"] < one["encoded_here"]  # rank 0 encoded only its share
    assert len(one["embeddings"]) == len(two["embeddings"]) == 23
    assert all(torch.equal(a, b) for a, b in zip(one["embeddings"], two["embeddings"]))


def _encoded_twice(tiny_bert, data, cache):
    """Encode ``data`` into ``cache`` with a fresh encoder; return (queries, documents, items the encoder encoded)."""
    encoder = load_encoder(str(tiny_bert), show_progress=False)
    queries, documents = encode_retrieval_set(encoder, data, cache)
    return queries, documents, encoder.items_encoded


def _document_entry(cache: EmbeddingCache, tiny_bert, data) -> Path:
    encoder = load_encoder(str(tiny_bert), show_progress=False)
    return cache.path(EmbeddingCache.key(encoder.config, data.fingerprint(), "documents"))


CORRUPTIONS = {
    "truncated vectors": lambda entry: (entry / "vectors.npy").write_bytes((entry / "vectors.npy").read_bytes()[:200]),
    "vectors not an array": lambda entry: (entry / "vectors.npy").write_bytes(b"\x93NUMPY garbage" * 8),
    "garbage metadata": lambda entry: (entry / "meta.json").write_bytes(b"\xff\x00{not json"),
    "metadata of other shapes": lambda entry: (entry / "meta.json").write_text(
        json.dumps({**json.loads((entry / "meta.json").read_text()), "rows": 3})),
    "metadata without sizes": lambda entry: (entry / "meta.json").write_text(
        json.dumps({key: value for key, value in json.loads((entry / "meta.json").read_text()).items() if key != "items"})),
    "metadata with text sizes": lambda entry: (entry / "meta.json").write_text(
        json.dumps({**json.loads((entry / "meta.json").read_text()), "dim": "32"})),
    "offsets missing": lambda entry: (entry / "offsets.npy").unlink(),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_cache_entry_is_encoded_again_with_a_warning(corruption, tiny_bert, tmp_path, caplog):
    data = load_beir(write_beir(tmp_path / "tiny"))
    cache = EmbeddingCache(tmp_path / "cache")
    queries, documents, encoded = _encoded_twice(tiny_bert, data, cache)
    assert encoded == len(data.queries) + len(data.corpus)
    documents = [document.clone() for document in documents]  # they are a view of the file about to be damaged
    entry = _document_entry(cache, tiny_bert, data)
    CORRUPTIONS[corruption](entry)
    caplog.set_level("WARNING")
    again_queries, again_documents, encoded = _encoded_twice(tiny_bert, data, cache)
    assert encoded == len(data.corpus)  # the documents again, the intact queries from the cache
    assert f"cache entry {entry} is corrupt" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(documents, again_documents))
    assert all(torch.equal(a, b) for a, b in zip(queries, again_queries))
    assert _encoded_twice(tiny_bert, data, cache)[2] == 0  # the rewritten entry is whole again


def test_an_unreadable_cache_entry_is_an_error_naming_the_file(tiny_bert, tmp_path, monkeypatch):
    """Permissions or I/O errors are not corruption: the command stops and names the file, nothing is re-encoded."""
    import errno

    import numpy

    data = load_beir(write_beir(tmp_path / "tiny"))
    cache = EmbeddingCache(tmp_path / "cache")
    _encoded_twice(tiny_bert, data, cache)
    entry = _document_entry(cache, tiny_bert, data)
    real_load = numpy.load
    for code in (errno.EACCES, errno.EIO):
        def failing_load(path, *args, code=code, **kwargs):
            if Path(path) == entry / "vectors.npy":
                raise OSError(code, os.strerror(code), str(path))
            return real_load(path, *args, **kwargs)

        monkeypatch.setattr(numpy, "load", failing_load)
        encoder = load_encoder(str(tiny_bert), show_progress=False)
        with pytest.raises(OSError, match=str(entry / "vectors.npy")):
            encode_retrieval_set(encoder, data, cache)
        assert encoder.items_encoded == 0  # the queries came from the cache, the documents were not re-encoded
    monkeypatch.undo()
    assert (entry / "vectors.npy").is_file()  # nothing was thrown away


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="chmod 000 does not stop root from reading")
def test_a_cache_file_without_read_permission_is_an_error_naming_it(tiny_bert, tmp_path):
    data = load_beir(write_beir(tmp_path / "tiny"))
    cache = EmbeddingCache(tmp_path / "cache")
    _encoded_twice(tiny_bert, data, cache)
    meta = _document_entry(cache, tiny_bert, data) / "meta.json"
    meta.chmod(0)
    try:
        with pytest.raises(PermissionError, match=str(meta)):
            _encoded_twice(tiny_bert, data, cache)
    finally:
        meta.chmod(0o644)
