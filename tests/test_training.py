"""lir_robust.training (pairs, batching, models, runs): training pairs (title copy stripped, never the evaluation queries), sampler, helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lir_robust.training as training
from finetune_fixtures import save_dropout_bert, write_tiny_beir

CRANFIELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "cranfield"


@pytest.mark.parametrize(
    "title, text, expected",
    [
        ("simple shear flow .", "simple shear flow . in the study of flow", "in the study of flow"),
        ("Simple  Shear flow .", "simple shear   flow . in the study", "in the study"),  # case, whitespace runs
        # Cranfield's near copies: "3.5" vs "3. 5", "oseen's" vs "oseens's"
        ("drag at mach numbers 3.5 and 8.5 .", "drag at mach numbers 3. 5 and 8 .5 . tests were made", "tests were made"),
        ("steady motion of a sphere., oseen's criticism .", "steady motion of a sphere., oseens's criticism . the formula", "the formula"),
        ("wing theory .", "an abstract about something else entirely", "an abstract about something else entirely"),
        ("wing theory .", "wing theory .", ""),
        ("wing theory .", "wing theory . wing theory . the abstract", "the abstract"),
        ("", "only text", "only text"),
    ],
)
def test_strip_title_copy(title, text, expected):
    assert training.strip_title_copy(title, text) == expected


def test_title_text_pairs_strip_the_copy_skip_empty_and_never_read_queries(tmp_path):
    folder = write_tiny_beir(tmp_path / "beir", documents=12)
    data = training.load_training_pairs(str(folder))
    assert data.kind == "title-text"
    assert len(data.pairs) == 12  # the empty document is skipped
    corpus = {row["_id"]: row for row in map(json.loads, (folder / "corpus.jsonl").read_text().splitlines())}
    for pair in data.pairs:
        assert pair.query == corpus[pair.document_id]["title"]
        assert not pair.document.startswith(pair.query.rstrip(" ."))
        assert corpus[pair.document_id]["text"].endswith(pair.document)
        assert "evalquery" not in pair.query and "secret" not in pair.document
    (folder / "queries.jsonl").unlink()  # the evaluation queries are not needed at all
    assert len(training.load_training_pairs(str(folder)).pairs) == 12


def test_train_split_is_used_when_present_and_must_not_overlap_test(tmp_path):
    folder = write_tiny_beir(tmp_path / "beir", documents=6, with_train_split=True)
    data = training.load_training_pairs(str(folder))
    assert data.kind == "train-split" and len(data.pairs) == 6
    assert all(pair.query.startswith("how ") for pair in data.pairs)
    with (folder / "qrels" / "train.tsv").open("a") as handle:
        handle.write("q0\t1\t1\n")  # an evaluation query sneaks into the train split
    with pytest.raises(training.DataLoadError, match="evaluation queries"):
        training.load_training_pairs(str(folder))


def test_collection_by_name_under_the_data_root(tmp_path, monkeypatch):
    write_tiny_beir(tmp_path / "root" / "tiny", documents=4)
    monkeypatch.setenv("LIR_ROBUST_DATA_ROOT", str(tmp_path / "root"))
    assert len(training.load_training_pairs("tiny").pairs) == 4
    with pytest.raises(training.DataLoadError, match="BEIR folder"):
        training.load_training_pairs("no-such-collection")


def test_vidore_train_set_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(training.DataLoadError, match="HF_HUB_OFFLINE.*save_to_disk"):
        training.load_training_pairs(training.VIDORE_TRAIN_SET)


@pytest.mark.skipif(not CRANFIELD.is_dir(), reason="../shared/data/cranfield is not on this machine")
def test_cranfield_pairs():
    data = training.load_training_pairs(str(CRANFIELD))
    assert data.kind == "title-text" and len(data.pairs) == 1398  # 2 empty documents
    squeezed = lambda text: "".join(text.lower().split())  # noqa: E731
    assert not [pair for pair in data.pairs if squeezed(pair.document).startswith(squeezed(pair.query))]
    queries = {json.loads(line)["text"] for line in (CRANFIELD / "queries.jsonl").read_text().splitlines()}
    assert not queries & {pair.query for pair in data.pairs}


def test_split_validation_holds_out_the_seeded_draw_and_keeps_the_order():
    """The held-out pairs are the seed's draw (pinned: it decides every run's training data), both parts keep the
    input order and together are the input; another seed draws others; 0 holds out nothing."""
    pairs = [training.TrainingPair(f"q{i}", f"d{i}", str(i)) for i in range(20)]
    train, held = training.split_validation(pairs, 5, seed=3)
    assert [pair.document_id for pair in held] == ["1", "3", "6", "7", "12"]
    assert [pair.document_id for pair in train] == [str(i) for i in range(20) if i not in (1, 3, 6, 7, 12)]
    assert [pair.document_id for pair in training.split_validation(pairs, 5, seed=4)[1]] == ["2", "5", "10", "14", "15"]
    assert training.split_validation(pairs, 0, seed=3) == (pairs, [])
    with pytest.raises(ValueError, match="cannot hold out 20"):
        training.split_validation(pairs, 20, seed=3)


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    sampler = training.EpochShuffleSampler(10, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == list(range(10)) and first != second
    again = training.EpochShuffleSampler(10, seed=1)
    again.set_epoch(1)
    assert list(again) == second
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG (dropout) is untouched


def test_hard_negatives_exclude_the_positive():
    pairs = [
        training.TrainingPair("shock wave drag", "shock wave drag on cones", "1"),
        training.TrainingPair("heat transfer plate", "heat transfer to a flat plate", "2"),
        training.TrainingPair("shock layer", "shock layer thickness and drag", "3"),
    ]
    mined = training.mine_hard_negatives(pairs, 1)
    assert mined[0].negatives == ["shock layer thickness and drag"]
    assert all(pair.document not in pair.negatives for pair in mined)


def test_svd_projection_is_orthonormal_and_collator_truncates(tmp_path):
    from lir_robust.scoring.pooling import parse_head

    model = training.build_text_model(str(save_dropout_bert(tmp_path / "bert")), parse_head("maxsim"), 8, 4, 4, 0.0, None)
    texts = ["shock wave drag on a cone at high mach number .", "heat transfer to a flat plate in laminar flow ."]
    kept = training.init_projection_svd(model, texts)
    weight = model.projection.weight
    assert 0 < kept <= 1
    assert torch.allclose(weight @ weight.T, torch.eye(8), atol=1e-5)
    batch = training.TextPairCollator(model, 6, 5)([training.TrainingPair(t, t) for t in texts])
    assert batch["query"]["input_ids"].shape[1] == 6 and batch["document"]["input_ids"].shape[1] == 5
    embeddings, mask = training.embed(model, batch["document"], is_query=False)
    assert embeddings.shape == (2, 5, 8) and mask.shape == (2, 5)


def test_latest_checkpoint(tmp_path):
    assert training.latest_checkpoint(tmp_path) is None
    for step in (5, 10, 50):
        (tmp_path / "checkpoints" / f"step-{step}").mkdir(parents=True)
        (tmp_path / "checkpoints" / f"step-{step}" / training.CHECKPOINT_LAST_FILE).write_bytes(b"")
    assert training.latest_checkpoint(tmp_path).name == "step-50"
    (tmp_path / "checkpoints" / "step-60").mkdir()  # unfinished: no state file
    assert training.latest_checkpoint(tmp_path).name == "step-50"


def test_identity_projection_starts_as_the_raw_model(tmp_path):
    from lir_robust.encoders.text_colbert import TextColBERT
    from lir_robust.scoring.pooling import parse_head

    bert = str(save_dropout_bert(tmp_path / "bert", dropout=0.0))
    model = training.build_text_model(bert, parse_head("maxsim"), 32, 4, 4, 0.0, None)  # hidden size 32
    training.init_projection_identity(model)
    raw = TextColBERT.from_base(bert)  # identity projection, no adapter
    texts = ["shock wave drag on a cone at high mach number .", "heat transfer to a flat plate in laminar flow ."]
    for is_query in (True, False):
        ours, theirs = (m.encode(texts, is_query=is_query, show_progress=False) for m in (model, raw))
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, theirs))
    smaller = training.build_text_model(bert, parse_head("maxsim"), 8, 4, 4, 0.0, None)
    with pytest.raises(ValueError, match="projection_dim = the hidden size 32"):
        training.init_projection_identity(smaller)


def test_split_sentences_keeps_short_pieces_with_their_sentence():
    text = "drag at mach 3. 5 was measured . the wake was seen. fig. 2 shows it ."
    assert training.split_sentences(text) == ["drag at mach 3. 5 was measured .", "the wake was seen. fig. 2 shows it ."]
    assert training.split_sentences("") == []


def test_sentence_pairs_remove_the_sentence_from_its_document(tmp_path):
    folder = write_tiny_beir(tmp_path / "beir", documents=6)
    corpus = {row["_id"]: row for row in map(json.loads, (folder / "corpus.jsonl").read_text().splitlines())}
    corpus["1"]["text"] += " a second sentence about shock waves . and a third one on heat transfer here ."
    corpus["2"]["text"] += " a second sentence about wings and drag here ."
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus.values()))
    data = training.load_training_pairs(str(folder), "sentence", seed=1)
    assert data.kind == "sentence-text" and len(data.pairs) == 6  # the empty document is skipped
    by_id = {pair.document_id: pair for pair in data.pairs}
    for document_id in ("1", "2"):  # several sentences: one is the query, the title and the rest the document
        pair = by_id[document_id]
        assert pair.query != corpus[document_id]["title"] and pair.query in corpus[document_id]["text"]
        assert pair.query not in pair.document and pair.document.startswith(corpus[document_id]["title"])
    assert by_id["3"].query == corpus["3"]["title"]  # a one-sentence abstract: title -> text instead
    assert [p.query for p in data.pairs] == [p.query for p in training.load_training_pairs(str(folder), "sentence", seed=1).pairs]
    assert all("evalquery" not in pair.query for pair in data.pairs)
    with pytest.raises(ValueError, match="pseudo_queries must be one of"):
        training.load_training_pairs(str(folder), "queries")


def test_finetune_config_has_the_command_defaults_and_round_trips_through_json():
    """FinetuneConfig's defaults are the command's (parsed, before the checks fill in derived values), and a config
    survives to_dict -> JSON -> from_dict (extra keys of config.json, such as training_pairs, are ignored)."""
    from lir_robust.commands import finetune
    from lir_robust.training.loop import FinetuneConfig

    parsed = vars(finetune.build_parser().parse_args([]))
    parsed.pop("debug")
    assert FinetuneConfig.from_dict(parsed) == FinetuneConfig()
    assert set(parsed) | {"head"} == set(FinetuneConfig().to_dict())
    config = FinetuneConfig(pooling="topk:k=4", head="topk:k=4", injected_negatives=["spike:4"], max_steps=7, lora_target_modules=["query"])
    assert FinetuneConfig.from_dict({**json.loads(json.dumps(config.to_dict())), "training_pairs": 10}) == config
