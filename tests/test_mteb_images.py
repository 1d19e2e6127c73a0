"""lir_robust.patches.mteb on page images: a tiny random colpali-engine model (ColQwen2) through mteb on a local
in-memory image retrieval task of ViDoRe's schema (PIL pages, text queries, graded qrels), offline; mteb's nDCG@10 is
the project's, and similarity is the head's masked score (padding changes nothing). Skipped without mteb or
colpali-engine."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("mteb")
pytest.importorskip("colpali_engine")

from lir_robust.data import load_retrieval_set  # noqa: E402
from lir_robust.encoders.load import load_encoder  # noqa: E402
from lir_robust.patches.mteb import HeadScoredModel, retrieval_task  # noqa: E402
from lir_robust.scoring.metrics import evaluate, run_from_scores  # noqa: E402
from lir_robust.scoring.scorer import score  # noqa: E402

from retrieval_fixtures import write_vidore_v2  # noqa: E402

HEADS = ["maxsim", "topk:k=2", "exclusive:capacity=1,candidates=8"]


@pytest.fixture(scope="module")
def pages(tiny_colqwen2_dir, tmp_path_factory):
    data = load_retrieval_set(str(write_vidore_v2(tmp_path_factory.mktemp("vidore") / "v2", pages=4)))
    encoder = load_encoder(str(tiny_colqwen2_dir), batch_size=2, show_progress=False)
    queries = encoder.encode_queries([data.queries[qid] for qid in data.judged_query_ids])
    documents = encoder.encode_documents(data.document_images())
    return {"data": data, "encoder": encoder, "queries": queries, "documents": documents}


def test_the_image_task_has_vidores_schema(pages):
    task = retrieval_task(pages["data"])
    task.load_data()
    split = task.dataset["default"]["test"]
    assert task.metadata.category == "t2i" and set(task.metadata.modalities) == {"text", "image"}
    assert split["corpus"].features["image"].__class__.__name__ == "Image" and split["corpus"]["id"] == ["0", "1", "2", "3"]
    assert len(split["queries"]) == len(pages["data"].judged_query_ids) == 8


@pytest.mark.parametrize("head", HEADS)
def test_a_colpali_model_runs_an_image_task_offline_with_the_projects_ndcg(pages, head, tmp_path, monkeypatch):
    import mteb

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = pages["data"]
    model = HeadScoredModel(pages["encoder"], head, name="tiny-colqwen2")
    assert model.mteb_model_meta.modalities == ["text", "image"]
    task = retrieval_task(data)
    mteb.evaluate(model, task, cache=mteb.ResultCache(tmp_path), show_progress_bar=False)
    path = mteb.ResultCache(tmp_path).get_task_result_path(task.metadata.name, model.mteb_model_meta)
    ndcg = json.loads(path.read_text())["scores"]["test"][0]["ndcg_at_10"]
    expected, _ = evaluate(data.qrels, run_from_scores(score(pages["queries"], pages["documents"], head),
                                                       data.judged_query_ids, data.document_ids))
    assert abs(ndcg - expected["ndcg@10"]) < 1e-4


@pytest.mark.parametrize("head", HEADS)
def test_similarity_on_pages_is_the_heads_masked_score(pages, head):
    model = HeadScoredModel(pages["encoder"], head)
    queries, documents = pages["queries"], pages["documents"]
    expected = score(queries, documents, head)
    assert torch.allclose(model.similarity(queries, documents), expected, atol=1e-5)
    padded = torch.nn.utils.rnn.pad_sequence(documents, batch_first=True)  # colpali-engine's padding: zero rows
    padded = torch.cat([padded, padded.new_zeros(len(documents), 5, padded.shape[2])], dim=1)
    assert torch.allclose(model.similarity(torch.nn.utils.rnn.pad_sequence(queries, batch_first=True), padded),
                          expected, atol=1e-5)


def test_the_command_runs_a_local_vidore_copy_and_refuses_conditions_on_pages(pages, tiny_colqwen2_dir, tmp_path,
                                                                               monkeypatch, capsys):
    from lir_robust.commands import cli
    from lir_robust.commands.mteb import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = write_vidore_v2(tmp_path / "v2", pages=4)
    summary = main(["--model", str(tiny_colqwen2_dir), "--tasks", str(folder), "--head", "topk:k=2", "--out",
                    str(tmp_path / "out")])
    (task, by_head), = summary["ndcg@10"].items()
    expected, _ = evaluate(pages["data"].qrels, run_from_scores(score(pages["queries"], pages["documents"], "topk:k=2"),
                                                                pages["data"].judged_query_ids, pages["data"].document_ids))
    assert abs(by_head["topk:k=2"] - expected["ndcg@10"]) < 1e-4
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    capsys.readouterr()
    status = cli.run_command(main, ["--model", str(tiny_colqwen2_dir), "--tasks", str(folder), "--inject", "spike:2",
                                    "--out", str(tmp_path / "no")], prog="mteb.py")
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "--inject applies to local text BEIR tasks only" in err[0]
