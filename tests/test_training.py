"""lir_robust.training (pairs, batching, models, runs): training pairs (title copy stripped, never the evaluation queries), sampler, helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import lir_robust.training as training
from finetune_fixtures import save_dropout_bert, write_tiny_beir

CRANFIELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "cranfield"
# sha1 of the default recipe's Cranfield pairs (inverse cloze, seed 0) as main built them before crops existed
PINNED_CRANFIELD_SENTENCE_PAIRS = "f6cf149c8049f1ff65efd81fa8b6913f60cd3b33"


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

    from lir_robust.training.loop import RECIPE_POOLING, RECIPE_SCORING_POOLING

    parsed = vars(finetune.build_parser().parse_args([]))
    parsed.pop("debug")
    assert parsed["pooling"] is None and parsed["scoring_pooling"] is None  # no --pooling: the checks fill in the recipe
    assert FinetuneConfig.from_dict({**parsed, "pooling": RECIPE_POOLING, "scoring_pooling": RECIPE_SCORING_POOLING}) == FinetuneConfig()
    assert set(parsed) | {"head"} == set(FinetuneConfig().to_dict())
    config = FinetuneConfig(pooling="topk:k=4", head="topk:k=4", injected_negatives=["spike:4"], max_steps=7, lora_target_modules=["query"])
    assert FinetuneConfig.from_dict({**json.loads(json.dumps(config.to_dict())), "training_pairs": 10}) == config


# ------------------------------------------------------------------ independent crops: corpora without titles or sentences


def write_untitled_one_sentence_beir(directory: Path, documents: int = 10) -> Path:
    """A BEIR folder shaped like the collection the recipe could not train on: no titles, each document one
    unpunctuated sentence of 12-29 words; plus an empty document and a 5-word one; evaluation queries hold
    'evalquery secret'."""
    import random

    from finetune_fixtures import CONTENT_WORDS

    (directory / "qrels").mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    corpus = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.choice(CONTENT_WORDS) for _ in range(rng.randrange(12, 30)))}
              for i in range(documents)]
    corpus += [{"_id": "empty", "title": "", "text": ""}, {"_id": "short", "title": "", "text": "shock wave drag on cones"}]
    (directory / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus))
    queries = [{"_id": f"q{i}", "text": f"evalquery secret {CONTENT_WORDS[i]}"} for i in range(3)]
    (directory / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries))
    (directory / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3)))
    return directory


def _contiguous_in(span: list[str], words: list[str]) -> bool:
    return any(words[start:start + len(span)] == span for start in range(len(words) - len(span) + 1))


def test_crop_span_lengths_follow_the_ratio_with_a_floor_and_stay_inside():
    import random

    generator = random.Random(0)
    ratios = []
    for length in [4, 5, 7, 8, 9, 20, 40, 100, 300] * 40:
        start, end = training.crop_span(list(range(length)), generator)
        assert 0 <= start < end <= length
        assert min(length, 4) <= end - start <= max(4, int(0.5 * length))
        ratios.append((end - start) / length)
    long = [ratio for ratio, length in zip(ratios, [4, 5, 7, 8, 9, 20, 40, 100, 300] * 40) if length == 300]
    assert 0.1 <= min(long) < 0.15 and 0.45 < max(long) <= 0.5  # the ratio spans Contriever's 10-50 %


def test_crop_pairs_on_an_untitled_one_sentence_corpus(tmp_path):
    folder = write_untitled_one_sentence_beir(tmp_path / "beir")
    (folder / "queries.jsonl").unlink()  # never read
    data = training.load_training_pairs(str(folder), "crop", seed=0)
    assert data.kind == "independent-crops" and data.documents_seen == 10  # the empty and the 5-word one are skipped
    corpus = {row["_id"]: row for row in map(json.loads, (folder / "corpus.jsonl").read_text().splitlines())}
    for pair in data.pairs:
        words = corpus[pair.document_id]["text"].split()
        for span in (pair.query.split(), pair.document.split()):  # both spans are runs of the document's words
            assert 4 <= len(span) <= len(words) // 2 and _contiguous_in(span, words)
        assert "evalquery" not in pair.query + pair.document and "secret" not in pair.query + pair.document
    again = training.load_training_pairs(str(folder), "crop", seed=0).pairs
    other = training.load_training_pairs(str(folder), "crop", seed=1).pairs
    assert [(p.query, p.document) for p in again] == [(p.query, p.document) for p in data.pairs]
    assert [p.query for p in other] != [p.query for p in data.pairs]
    assert [p.document for p in other] != [p.document for p in data.pairs]


def test_crops_start_from_the_document_as_training_sees_it(tmp_path):
    """A titled document is cropped from title + text with the copy of the title removed (training_document_text)."""
    corpus = {"1": {"title": "shock wave drag .", "text": "shock wave drag . " + " ".join(["heat transfer to a flat plate"] * 4)}}
    spans = {(pair.query, pair.document) for seed in range(30) for pair in training.crop_pairs(corpus, seed)}
    words = training.training_document_text(corpus["1"]).split()
    assert words.count("shock") == 1
    assert all(_contiguous_in(q.split(), words) and _contiguous_in(d.split(), words) for q, d in spans)
    assert any(q.startswith("shock wave drag") for q, _ in spans)  # the title can be cropped


def test_sentence_pairs_fall_back_to_crops_with_a_warning_naming_why(tmp_path, caplog):
    folder = write_untitled_one_sentence_beir(tmp_path / "beir")
    with caplog.at_level("WARNING", logger="lir_robust.training.pairs"):
        data = training.load_training_pairs(str(folder), "sentence", seed=3)
    assert data.kind == "independent-crops"
    assert [(p.query, p.document) for p in data.pairs] == [(p.query, p.document) for p in training.load_training_pairs(str(folder), "crop", seed=3).pairs]
    (message,) = [record.getMessage() for record in caplog.records]
    assert "inverse cloze (--pseudo-queries sentence) builds no training pair" in message
    assert "of its 12 documents: 0 with a title and a text, 0 with two or more sentences, 10 with 8+ words" in message
    assert "independent crops of 10 documents" in message and "--pseudo-queries crop" in message


def test_title_pairs_on_an_untitled_corpus_stop_naming_the_reason_and_the_fix(tmp_path):
    folder = write_untitled_one_sentence_beir(tmp_path / "beir")
    with pytest.raises(training.DataLoadError, match=r"--pseudo-queries title builds no training pair \(of its 12 "
                       r"documents: 0 with a title and a text, 0 with two or more sentences, 10 with 8\+ words\); "
                       r"pass --pseudo-queries crop$"):
        training.load_training_pairs(str(folder), "title")


def test_when_nothing_can_be_built_the_message_names_the_real_reason(tmp_path):
    folder = write_untitled_one_sentence_beir(tmp_path / "beir", documents=0)  # an empty and a 5-word document
    for kind in ("sentence", "title", "crop"):
        with pytest.raises(training.DataLoadError, match=r"no training pair can be built from its corpus without its "
                           r"\(evaluation\) queries: of its 2 documents 1 are empty, none has a title and a text or two "
                           r"sentences, and the longest has 5 words \(cropping needs 8\); add training queries as qrels/train.tsv"):
            training.load_training_pairs(str(folder), kind)
    short_titled = [{"_id": "1", "title": "wing theory .", "text": "lift ."}]  # 5 words
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in short_titled))
    with pytest.raises(training.DataLoadError, match=r"--pseudo-queries crop builds no training pair .*pass --pseudo-queries title or sentence$"):
        training.load_training_pairs(str(folder), "crop")


def test_a_kind_that_covers_few_documents_warns_and_is_kept(tmp_path, caplog):
    folder = write_untitled_one_sentence_beir(tmp_path / "beir")
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    corpus[0]["title"] = "wing theory ."
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus))
    with caplog.at_level("WARNING", logger="lir_robust.training.pairs"):
        data = training.load_training_pairs(str(folder), "sentence")
    assert data.kind == "sentence-text" and len(data.pairs) == 1
    assert "--pseudo-queries sentence builds pairs for 1 documents only" in caplog.text and "crop would use 10" in caplog.text


@pytest.mark.skipif(not CRANFIELD.is_dir(), reason="../shared/data/cranfield is not on this machine")
def test_cranfield_crop_pairs_and_unchanged_sentence_pairs():
    import hashlib

    data = training.load_training_pairs(str(CRANFIELD), "crop", seed=0)
    assert data.kind == "independent-crops" and len(data.pairs) == 1398  # the 2 empty documents are skipped
    queries = {json.loads(line)["text"] for line in (CRANFIELD / "queries.jsonl").read_text().splitlines()}
    assert not queries & {pair.query for pair in data.pairs}
    sentence = training.load_training_pairs(str(CRANFIELD), "sentence", seed=0)
    digest = hashlib.sha1(json.dumps([[p.query, p.document, p.document_id] for p in sentence.pairs]).encode()).hexdigest()
    assert sentence.kind == "sentence-text" and digest == PINNED_CRANFIELD_SENTENCE_PAIRS  # the default recipe's data


def test_two_step_finetune_on_an_untitled_one_sentence_corpus(tmp_path):
    """The recipe's default command (inverse cloze, exclusive head) trains on the collection it used to refuse."""
    from accelerate.state import AcceleratorState, GradientState

    from lir_robust.commands import finetune

    folder = write_untitled_one_sentence_beir(tmp_path / "beir")
    bert = save_dropout_bert(tmp_path / "bert")
    arguments = [
        "--model", str(bert), "--data", str(folder), "--output-dir", str(tmp_path / "run"), "--lora-r", "4",
        "--lora-alpha", "8", "--batch-size", "4", "--validation-pairs", "2", "--log-every", "1", "--max-steps", "2",
        "--query-max-length", "12", "--train-document-max-length", "24", "--document-max-length", "24", "--save-every", "0",
    ]
    try:
        finetune.main(arguments)
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data_kind"] == "independent-crops" and config["pseudo_queries"] == "sentence" and config["head"] == "softmax:tau=1.0"
    assert config["scoring_pooling"].startswith("blend:")  # the recipe: trained through softmax, scored with blend
    assert config["training_pairs"] == 8 and config["validation_pairs_held_out"] == 2
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert [record["step"] for record in steps] == [1, 2] and all(math.isfinite(record["loss"]) for record in steps)
