"""Loaders: BEIR folders, ViDoRe v1 / v2 local copies (images included), offline Hub names, malformed input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lir_robust.data import DataError, HubUnreachableError, RetrievalSet, data_root, load_beir, load_retrieval_set
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
        load_retrieval_set("somecollection")  # under ../shared/data beside the checkout, or no root at all
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")  # no ../shared/data from here
    with pytest.raises(DataError, match=r"no data root is set .*\.\./shared/data relative to the current folder"):
        load_retrieval_set("somecollection")


def test_shared_data_beside_the_current_folder_is_the_default(monkeypatch, tmp_path):
    """Without LIR_ROBUST_DATA_ROOT, ../shared/data relative to the current folder (not to the package's files)."""
    monkeypatch.delenv("LIR_ROBUST_DATA_ROOT", raising=False)
    write_beir(tmp_path / "shared" / "data" / "toy")
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert load_retrieval_set("toy").name == "toy"
    assert data_root() == (tmp_path / "shared" / "data").resolve()
    monkeypatch.setenv("LIR_ROBUST_DATA_ROOT", str(tmp_path / "elsewhere"))  # the setting wins over the default
    assert data_root() == tmp_path / "elsewhere"
    assert data_root(tmp_path / "given") == tmp_path / "given"  # and --data-root / data_root= over both


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


# ------------------------------------------------------------------ what a spec names: folder or Hub name


def test_a_relative_existing_folder_is_a_folder(tmp_path, monkeypatch):
    write_beir(tmp_path / "data" / "mycoll")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = load_retrieval_set("data/mycoll")
    assert data.name == "mycoll" and len(data.corpus) == 18


def test_a_missing_relative_folder_names_both_readings_offline(tmp_path, monkeypatch):
    from lir_robust.data import locate_data

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError) as error:
        locate_data("data/mycoll")
    message = str(error.value)
    assert "'data/mycoll' not found here" in message and str(tmp_path / "data" / "mycoll") in message
    assert "read as a Hub name" in message and "HF_HUB_OFFLINE" in message


@pytest.mark.parametrize("spec", ["./data/mycoll", "data/sub/mycoll", "/nonexistent/mycoll"])
def test_a_missing_path_that_cannot_be_a_hub_name_is_not_found(spec, tmp_path, monkeypatch):
    from lir_robust.data import DataNotFoundError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError, match="not found: there is no folder"):
        load_retrieval_set(spec)


def _hub_error(monkeypatch, error: BaseException):
    """Online (HF_HUB_OFFLINE=0) with datasets.load_dataset raising ``error``."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the one offline check reads both
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def load_dataset(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_a_misspelled_hub_name_is_not_found_not_unreachable(tmp_path, monkeypatch):
    from datasets.exceptions import DatasetNotFoundError

    from lir_robust.data import DataNotFoundError

    monkeypatch.chdir(tmp_path)
    _hub_error(monkeypatch, DatasetNotFoundError("Dataset 'vidore/docvqa_test_subsampld' doesn't exist on the Hub or cannot be accessed."))
    with pytest.raises(DataNotFoundError) as error:
        load_retrieval_set("vidore/docvqa_test_subsampld")
    message = str(error.value)
    assert not isinstance(error.value, HubUnreachableError)
    assert "not found" in message and "no data set of that name" in message and "there is no folder" in message
    assert "unreachable" not in message


def test_a_missing_revision_is_not_found(tmp_path, monkeypatch):
    import httpx2
    from huggingface_hub.errors import RevisionNotFoundError

    from lir_robust.data import DataNotFoundError

    monkeypatch.chdir(tmp_path)
    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/datasets/vidore/x"))
    wrapped = OSError("could not load")
    wrapped.__cause__ = RevisionNotFoundError("Revision Not Found", response=response)
    _hub_error(monkeypatch, wrapped)
    with pytest.raises(DataNotFoundError):
        load_retrieval_set("vidore/x_v2")


@pytest.mark.parametrize("error", [ConnectionError("Couldn't reach 'vidore/x' on the Hub (ConnectError)"), TimeoutError("timed out")])
def test_an_unreachable_hub_is_unreachable(error, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _hub_error(monkeypatch, error)
    with pytest.raises(HubUnreachableError, match="Hub is unreachable.*" + type(error).__name__):
        load_retrieval_set("vidore/x")


def test_front_door_checks_of_a_beir_folder(tmp_path):
    from lir_robust.data import locate_data

    folder = write_beir(tmp_path / "tiny")
    assert locate_data(folder).data_format == "beir" and locate_data(folder).folder == folder
    with pytest.raises(DataError, match=r"missing file\(s\) .*dev.tsv.*qrels files present: \['test.tsv'\]"):
        locate_data(folder, split="dev")
    assert locate_data(folder, split=None).folder == folder  # training reads the corpus only
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the format"):
        locate_data(tmp_path / "empty")
