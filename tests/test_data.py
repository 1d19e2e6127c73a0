"""Loaders: BEIR folders, ViDoRe v1 / v2 local copies (images included), offline Hub names, malformed input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lir_robust.data import DataError, HubUnreachableError, RetrievalSet, load_beir, load_retrieval_set
from retrieval_fixtures import write_beir, write_vidore_v1, write_vidore_v2

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_beir_folder_loads_graded_qrels(tmp_path):
    folder = write_beir(tmp_path / "tiny")
    data = load_beir(folder)
    assert data.modality == "text" and len(data.corpus) == 18 and len(data.queries) == 6
    assert data.qrels["q0"] == {"d0": 2, "d6": 1, "d12": 1}
    assert data.gold("q0") == {"d0", "d6", "d12"}
    assert data.document_texts()[0].startswith("wing study 0 the wing")
    assert data.fingerprint() == load_beir(folder).fingerprint()


def test_bare_name_resolves_under_the_data_root(tmp_path, monkeypatch):
    write_beir(tmp_path / "tiny")
    monkeypatch.setenv("LIR_ROBUST_DATA_ROOT", str(tmp_path))
    assert len(load_retrieval_set("tiny").corpus) == 18
    with pytest.raises(DataError) as error:
        load_retrieval_set("cranfield", root=tmp_path / "nowhere")
    message = str(error.value)
    assert "cranfield" in message and "corpus.jsonl" in message and "ir.dcs.gla.ac.uk" in message


def test_missing_data_root_is_explained(monkeypatch, tmp_path):
    monkeypatch.delenv("LIR_ROBUST_DATA_ROOT", raising=False)
    with pytest.raises(DataError, match="LIR_ROBUST_DATA_ROOT"):
        load_retrieval_set("somecollection")  # under the project's ../shared/data, or no root at all
    monkeypatch.setattr("lir_robust.data.PROJECT_DATA_ROOT", tmp_path / "absent")
    with pytest.raises(DataError, match="no data root is set"):
        load_retrieval_set("somecollection")


def test_project_data_root_is_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv("LIR_ROBUST_DATA_ROOT", raising=False)
    write_beir(tmp_path / "toy")
    monkeypatch.setattr("lir_robust.data.PROJECT_DATA_ROOT", tmp_path)
    assert load_retrieval_set("toy").name == "toy"


def test_malformed_beir_inputs_give_clear_errors(tmp_path):
    folder = write_beir(tmp_path / "bad")
    lines = (folder / "corpus.jsonl").read_text().splitlines()
    lines[3] = '{"_id": "d3", "title": broken'
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"corpus.jsonl line 4: invalid JSON"):
        load_beir(folder)

    folder = write_beir(tmp_path / "missing")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(DataError, match=r"missing file .*queries.jsonl"):
        load_beir(folder)

    folder = write_beir(tmp_path / "unknown")
    with (folder / "qrels" / "test.tsv").open("a") as qrels:
        qrels.write("q0\tnot-a-doc\t1\n")
    with pytest.raises(DataError, match=r"unknown corpus ids \(e.g. \['not-a-doc'\]\)"):
        load_beir(folder)

    folder = write_beir(tmp_path / "empty")
    (folder / "corpus.jsonl").write_text("")
    with pytest.raises(DataError, match="unknown corpus ids|corpus is empty"):
        load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(DataError, match="corpus is empty"):
        load_beir(folder)

    folder = write_beir(tmp_path / "split")
    with pytest.raises(DataError, match=r"missing file .*dev.tsv.*test.tsv"):
        load_beir(folder, split="dev")


def test_vidore_v1_local_copy(tmp_path):
    folder = write_vidore_v1(tmp_path / "docvqa", pages=5)
    data = load_retrieval_set(folder)
    assert data.modality == "image"
    assert list(data.corpus) == [f"page_{index}.png" for index in range(5)]
    assert data.corpus["page_0.png"]["image"].size == (40, 32)
    assert len(data.queries) == 4  # the repeated query is deduplicated, the page without query adds no query
    assert data.qrels["q0"] == {"page_0.png": 1}
    assert len(data.document_images()) == 5


def test_vidore_v2_local_copy_with_language_filter(tmp_path):
    folder = write_vidore_v2(tmp_path / "biomedical_lectures_v2", pages=4)
    everything = load_retrieval_set(folder)
    assert len(everything.queries) == 8 and len(everything.corpus) == 4
    english = load_retrieval_set(folder, language="english")
    assert len(english.queries) == 4 and set(english.qrels) == set(english.queries)
    assert english.qrels["0"] == {"0": 2} and english.qrels["2"] == {"1": 1}
    with pytest.raises(DataError, match="languages present"):
        load_retrieval_set(folder, language="klingon")


def test_hub_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, how in (("vidore/docvqa_test_subsampled", "save_to_disk"), ("vidore/biomedical_lectures_v2", "'corpus'")):
        start = time.perf_counter()
        with pytest.raises(HubUnreachableError) as error:
            load_retrieval_set(name)
        assert time.perf_counter() - start < 2.0
        assert "Hub is unreachable" in str(error.value) and how in str(error.value) and "--data" in str(error.value)


def test_retrieval_set_rejects_unknown_query_ids():
    with pytest.raises(DataError, match="unknown query ids"):
        RetrievalSet("x", {"d": {"title": "", "text": "t"}}, {"q": "t"}, {"q": {"d": 1}, "zz": {"d": 1}})


@pytest.mark.skipif(not (SHARED / "cranfield" / "corpus.jsonl").exists(), reason="../shared/data is absent")
def test_shared_cranfield_loads():
    data = load_retrieval_set(SHARED / "cranfield")
    assert len(data.corpus) == 1400 and len(data.queries) == 225
    assert sum(len(row) for row in data.qrels.values()) == 1612
