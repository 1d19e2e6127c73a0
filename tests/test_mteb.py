"""lir_robust.patches.mteb and `lir-robust mteb`: a checkpoint in mteb's encoder protocol, scored with its head.

Tiny random BERT, tiny BEIR folder, offline; skipped when mteb is not installed.
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("mteb")

from lir_robust.commands import cli  # noqa: E402
from lir_robust.data import load_retrieval_set  # noqa: E402
from lir_robust.encoders.load import load_encoder  # noqa: E402
from lir_robust.patches.mteb import HeadScoredModel, retrieval_task  # noqa: E402
from lir_robust.scoring.metrics import evaluate, run_from_scores  # noqa: E402
from lir_robust.scoring.scorer import score  # noqa: E402

from retrieval_fixtures import write_beir  # noqa: E402
from tiny_text import save_tiny_bert  # noqa: E402

HEADS = ["maxsim", "topk:k=2", "softmax:tau=1.0", "exclusive:capacity=1,candidates=8"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("mteb")
    data = load_retrieval_set(str(write_beir(base / "beir")))
    encoder = load_encoder(str(save_tiny_bert(base / "bert")), show_progress=False)
    queries = encoder.encode_queries([data.queries[qid] for qid in data.judged_query_ids])
    documents = encoder.encode_documents(data.document_texts())
    return {"base": base, "data": data, "encoder": encoder, "queries": queries, "documents": documents}


@pytest.mark.parametrize("head", HEADS)
def test_similarity_is_the_heads_score_and_padding_changes_nothing(setup, head):
    model = HeadScoredModel(setup["encoder"], head)
    queries, documents = setup["queries"], setup["documents"]
    expected = score(queries, documents, head)
    assert torch.allclose(model.similarity(queries, documents), expected, atol=1e-5)
    # colpali-engine / mteb padding: zero rows to a common length, and 3 more
    padded_documents = torch.nn.utils.rnn.pad_sequence(documents, batch_first=True)
    padded_documents = torch.cat([padded_documents, padded_documents.new_zeros(len(documents), 3, padded_documents.shape[2])], 1)
    padded_queries = torch.nn.utils.rnn.pad_sequence(queries, batch_first=True)
    assert torch.allclose(model.similarity(padded_queries, padded_documents), expected, atol=1e-5)
    pairs = model.similarity_pairwise(queries, documents[: len(queries)])
    assert torch.allclose(pairs, expected.diagonal()[: len(queries)] if len(queries) <= len(documents) else pairs, atol=1e-5)
    assert model.mteb_model_meta.experiment_kwargs == {"head": str(model.head)}


def test_the_checkpoints_own_head_is_the_default(setup):
    assert str(HeadScoredModel(setup["encoder"]).head) == "maxsim"  # a base encoder has no pooling.json
    assert str(HeadScoredModel(setup["encoder"]).with_head("topk:k=2").head) == "topk:k=2"


@pytest.mark.parametrize("head", ["maxsim", "topk:k=2"])
def test_an_mteb_run_writes_mtebs_result_file_with_the_projects_ndcg(setup, head, tmp_path):
    import mteb

    data = setup["data"]
    model = HeadScoredModel(setup["encoder"], head, name="tiny")
    task = retrieval_task(data)
    mteb.evaluate(model, task, cache=mteb.ResultCache(tmp_path), show_progress_bar=False)
    path = mteb.ResultCache(tmp_path).get_task_result_path(task.metadata.name, model.mteb_model_meta)
    written = json.loads(path.read_text())
    ndcg = written["scores"]["test"][0]["ndcg_at_10"]
    scores = score(setup["queries"], setup["documents"], head)
    mean, _ = evaluate(data.qrels, run_from_scores(scores, data.judged_query_ids, data.document_ids))
    assert abs(ndcg - mean["ndcg@10"]) < 1e-4
    assert f"head_{head.replace(':', '_')}" in str(path)


def test_the_command_writes_a_summary_and_result_files(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lir_robust.commands.mteb import main

    bert = setup["base"] / "bert"
    summary = main(["--model", str(bert), "--tasks", str(setup["base"] / "beir"), "--head", "maxsim", "topk:k=2",
                    "--inject", "spike:2", "gaussian:2", "--out", str(tmp_path / "out")])
    assert set(summary["ndcg@10"]["LocalBeirRetrieval"]) == {"maxsim", "topk:k=2"}
    assert set(summary["injection"]["ndcg@10"]["LocalBeirRetrieval"]["topk:k=2"]) == {"spike:2", "gaussian:2"}
    assert len(summary["result_files"]) == 6 and summary["injection"]["grids"] == {"spike": [0, 2], "gaussian": [0, 2]}
    assert all(__import__("pathlib").Path(path).is_file() for path in summary["result_files"])
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["heads"] == ["maxsim", "topk:k=2"]


@pytest.mark.parametrize("task, expected", [
    ("VidoreArxivQARetrieval", "MTEB task VidoreArxivQARetrieval reads its data set"),
    ("NoSuchTaskAnywhere", "--tasks NoSuchTaskAnywhere: neither a local BEIR folder"),
])
def test_a_named_task_offline_or_unknown_ends_in_one_line(task, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    from lir_robust.commands.mteb import main

    status = cli.run_command(main, ["--tasks", task, "--out", str(tmp_path / "out")], prog="mteb.py")
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "out").exists()


CONDITION_HEADS = ["maxsim", "exclusive:capacity=1,candidates=8", "mean"]  # mean: every patch counts (gaussian)
CONDITION_K = 3


@pytest.fixture(scope="module")
def sweep(setup, tmp_path_factory):
    """The sweep over the fixture at K = 0 and CONDITION_K, every kind, the condition heads."""
    from lir_robust.sweep.pipeline import SweepConfig, run_length_sweep

    base, folder = setup["base"], tmp_path_factory.mktemp("sweep")
    config = SweepConfig(model=str(base / "bert"), data=str(base / "beir"), heads=CONDITION_HEADS,
                         kinds=["spike", "hard", "gaussian", "corpus"], ks=[0, CONDITION_K],
                         cache_dir=str(folder / "cache"), segments=1)
    return run_length_sweep(config, folder / "sweep", show_progress=False)


def _sweep_ndcg(sweep, head, kind, k):
    by_k = sweep["metrics"][head][kind]["by_k"]
    return by_k[str(k) if str(k) in by_k else k]["mean"]["ndcg@10"]


@pytest.mark.parametrize("kind", ["spike", "hard", "gaussian", "corpus"])
def test_each_injection_condition_in_mteb_equals_the_sweep_at_the_same_k(setup, sweep, kind, tmp_path):
    """K patches of each kind (the sweep's PatchSource, seed and targets), through mteb: the sweep's nDCG@10, for a
    head and the exclusive head, and the clean K = 0."""
    import mteb

    from lir_robust.attacks.mteb_conditions import InjectedModel

    data, task = setup["data"], retrieval_task(setup["data"])
    base = HeadScoredModel(setup["encoder"], name="tiny")
    injected = InjectedModel.from_model(base, data, kind, CONDITION_K, CONDITION_HEADS[0])
    for head in CONDITION_HEADS:
        for k, model in ((0, InjectedModel.from_model(base, data, kind, 0, head)), (CONDITION_K, injected.with_head(head))):
            mteb.evaluate(model, task, cache=mteb.ResultCache(tmp_path), show_progress_bar=False)
            path = mteb.ResultCache(tmp_path).get_task_result_path(task.metadata.name, model.mteb_model_meta)
            assert f"injection_{kind}__k_{k}" in str(path)
            ndcg = json.loads(path.read_text())["scores"]["test"][0]["ndcg_at_10"]
            expected = _sweep_ndcg(sweep, head, kind, k)
            assert abs(ndcg - expected) < 1e-4, (head, k, ndcg, expected)


@pytest.mark.parametrize("condition, expected", [
    ("spike@10:4", "the few-document attacks (KIND@N) are not MTEB conditions"),
    ("hard", "an injection condition is KIND:K"),
    ("hard:0", "an injection condition is KIND:K"),
    ("loud:4", "unknown injection kind 'loud'"),
])
def test_a_bad_condition_is_one_line(condition, expected):
    from lir_robust.attacks.mteb_conditions import parse_condition

    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        parse_condition(condition)
