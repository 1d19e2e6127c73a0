"""Text attacks (lir_robust.attacks.text): re-encoded documents score as their text does, HotFlip is adaptive to the
head, the split and clusters are seeded, and black-box stuffing never reads a held-out query."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune_fixtures import CONTENT_WORDS, save_dropout_bert, write_tiny_beir
from lir_robust.attacks.text.hotflip import HotFlipSettings, candidate_vocabulary, covering_tokens, hotflip_passage
from lir_robust.attacks.text.insertion import insert_snippet, inserted_documents, sentence_boundaries
from lir_robust.attacks.text.pipeline import TextAttackConfig, make_split, run_text_attack
from lir_robust.attacks.text.queries import content_words, kmeans, split_queries
from lir_robust.data.collection import document_text
from lir_robust.encoders.text_colbert import TextColBERT
from lir_robust.scoring.scorer import score


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return save_dropout_bert(tmp_path_factory.mktemp("attack-bert") / "bert")


@pytest.fixture(scope="module")
def model(bert):
    return TextColBERT.from_base(str(bert)).eval()


def _write_collection(folder: Path, held_out_words: dict[str, str] | None = None) -> Path:
    """The tiny BEIR corpus with 12 judged queries 'q<i>'; ``held_out_words`` replaces some queries' texts."""
    write_tiny_beir(folder, documents=16)
    queries = {f"q{i}": f"{CONTENT_WORDS[i]} {CONTENT_WORDS[i + 12]} {CONTENT_WORDS[(3 * i) % 40]} flow ?" for i in range(12)}
    queries.update(held_out_words or {})
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": qid, "text": text}) + "\n" for qid, text in queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{i + 1}\t1\n" for i in range(12)))
    return folder


def _maxsim(query: torch.Tensor, document: torch.Tensor) -> float:
    """The plain-torch MaxSim score of one [Tq, D] query and one [Td, D] document."""
    return float((query @ document.T).max(dim=1).values.sum())


@pytest.mark.parametrize("attack", ["query-text", "stuffing", "cluster-text", "insertion"])
def test_an_attacked_document_scores_exactly_as_its_text_encoded_alone(attack, bert, model, tmp_path):
    """Every attacked score the pipeline reports equals the MaxSim score of the attacked TEXT encoded on its own (one
    text per call, no cache), so documents are re-encoded, not patched, and each score belongs to its document."""
    data = _write_collection(tmp_path / "beir")
    config = TextAttackConfig(model=str(bert), data=str(data), attack=attack, n=2, length=4, heads=["maxsim"],
                              iterations=3 if attack == "insertion" else 100, candidates=4 if attack == "insertion" else 32,
                              position="sentence", cache_dir=str(tmp_path / "cache"))
    report = run_text_attack(config, tmp_path / "out", show_progress=False)
    entry = report["results"]["maxsim"]
    texts = {row["_id"]: document_text(row) for row in map(json.loads, (data / "corpus.jsonl").read_text().splitlines())}
    queries = {row["_id"]: row["text"] for row in map(json.loads, (data / "queries.jsonl").read_text().splitlines())}
    assert report["held_out_query_ids"] and all(len(row) == 2 for row in entry["scores"])
    for qid, row in zip(report["held_out_query_ids"], entry["scores"]):
        query = model.encode([queries[qid]], is_query=True, show_progress=False)[0]
        if attack == "cluster-text":
            attacked = entry["passages"]
        elif attack == "insertion":  # each snippet inside its own document's text
            attacked = entry["edited_texts"]
            assert all(snippet in edited and texts[docid] != edited
                       for snippet, edited, docid in zip(entry["snippets"], attacked, entry["targets"][0]))
        else:
            extra = queries[qid] if attack == "query-text" else entry["appended"]
            attacked = [f"{texts[docid]} {extra}" for docid in entry["targets"][report["held_out_query_ids"].index(qid)]]
        for text, reported in zip(attacked, row):
            alone = model.encode([text], is_query=False, batch_size=1, show_progress=False)[0]
            assert reported == pytest.approx(_maxsim(query, alone), abs=1e-4), (qid, text)
    assert (tmp_path / "out" / "results.json").is_file() and (tmp_path / "out" / "table.md").is_file()
    if attack == "cluster-text":  # success@10 with the first n passages: the last point is the run's success@10
        assert len(entry["success@10_by_n"]) == 2 and entry["success@10_by_n"][-1] == entry["metrics"]["success@10"]
        assert (tmp_path / "out" / "success_at_10.png").stat().st_size > 0


def test_hotflip_is_adaptive_to_the_head_under_attack(model):
    """A passage optimised against maxsim and one against softmax:tau=1.0 differ, and each scores higher under its own
    head than the other's passage does, when both are re-encoded from their text."""
    texts = [f"{CONTENT_WORDS[i]} {CONTENT_WORDS[i + 7]} {CONTENT_WORDS[i + 20]} flow" for i in range(6)]
    queries = model.encode(texts, is_query=True, show_progress=False)
    allowed = candidate_vocabulary(model)
    settings = HotFlipSettings(length=8, iterations=40, candidates=16, init="mask", seed=0)
    heads = ("maxsim", "softmax:tau=1.0")
    passages = {head: hotflip_passage(model, queries, head, settings, allowed=allowed, show_progress=False) for head in heads}
    assert passages[heads[0]].text != passages[heads[1]].text
    encoded = {head: model.encode([passages[head].text], is_query=False, show_progress=False) for head in heads}
    for own, other in (heads, heads[::-1]):
        mine = float(score(queries, encoded[own], own).mean())
        theirs = float(score(queries, encoded[other], own).mean())
        assert mine > theirs, (own, mine, theirs)
        assert mine == pytest.approx(passages[own].objective, abs=1e-4)  # the text re-encodes to what was optimised
        assert passages[own].objective > passages[own].initial_objective


def test_hotflip_continues_from_given_start_tokens(model):
    """``start_tokens`` replaces the init: with no iteration the passage is those tokens; the search continues from
    them (a start that is already optimised ends at least as high as it started); a start of another length is refused."""
    texts = [f"{CONTENT_WORDS[i]} {CONTENT_WORDS[i + 7]} flow" for i in range(4)]
    queries = model.encode(texts, is_query=True, show_progress=False)
    allowed = candidate_vocabulary(model)
    first = hotflip_passage(model, queries, "maxsim", HotFlipSettings(length=6, iterations=6, candidates=8, seed=0),
                            allowed=allowed, show_progress=False, texts=texts)
    kept = hotflip_passage(model, queries, "maxsim", HotFlipSettings(length=6, iterations=0, seed=1), allowed=allowed,
                           show_progress=False, texts=texts, start_tokens=first.token_ids)
    assert kept.token_ids == first.token_ids and kept.initial_objective == pytest.approx(first.objective, abs=1e-5)
    fresh = hotflip_passage(model, queries, "maxsim", HotFlipSettings(length=6, iterations=0, seed=1), allowed=allowed,
                            show_progress=False, texts=texts)
    assert fresh.token_ids != first.token_ids or first.swaps == 0
    with pytest.raises(ValueError, match="start_tokens holds 3 tokens; the passage length is 6"):
        hotflip_passage(model, queries, "maxsim", HotFlipSettings(length=6, iterations=1), allowed=allowed,
                        show_progress=False, start_tokens=first.token_ids[:3])


def test_the_split_and_the_clusters_are_seeded():
    ids = [f"q{i}" for i in range(21)]
    training, held_out = split_queries(ids, seed=0)
    assert split_queries(ids, seed=0) == (training, held_out)
    assert split_queries(ids, seed=1) != (training, held_out)
    assert len(training) == 11 and len(held_out) == 10 and sorted(training + held_out, key=ids.index) == ids
    generator = torch.Generator().manual_seed(3)
    blobs = torch.cat([torch.randn(10, 4, generator=generator) * 0.05 + 3, torch.randn(10, 4, generator=generator) * 0.05 - 3])
    labels = kmeans(blobs, 2, seed=5)
    assert torch.equal(labels, kmeans(blobs, 2, seed=5))
    assert len(set(labels[:10].tolist())) == 1 and len(set(labels[10:].tolist())) == 1 and labels[0] != labels[10]
    points = torch.randn(40, 8, generator=generator)
    assert torch.equal(kmeans(points, 5, seed=1), kmeans(points, 5, seed=1))
    assert not torch.equal(kmeans(points, 5, seed=1), kmeans(points, 5, seed=2))
    split = make_split(ids, lambda chosen: [points[ids.index(qid)].view(1, -1) for qid in chosen], 3, seed=0)
    again = make_split(ids, lambda chosen: [points[ids.index(qid)].view(1, -1) for qid in chosen], 3, seed=0)
    assert split == again and sorted(i for members in split.members for i in members) == list(range(len(training)))


def test_more_passages_than_training_queries_are_capped_with_a_warning(caplog):
    """N above the training half's size (MED: 15 training queries, N 50) gives one passage per training query, and
    says so."""
    ids = [f"q{i}" for i in range(21)]
    points = torch.randn(21, 8, generator=torch.Generator().manual_seed(0))
    with caplog.at_level("WARNING", logger="lir_robust.attacks.text.pipeline"):
        split = make_split(ids, lambda chosen: [points[ids.index(qid)].view(1, -1) for qid in chosen], 50, seed=0)
    assert len(split.members) == len(split.training) == 11 and all(len(members) == 1 for members in split.members)
    assert "50 adversarial passages asked for, but the training half holds 11 queries" in caplog.text


def test_stuffing_never_reads_held_out_queries(bert, tmp_path):
    """Rewriting every held-out query's text changes nothing the attacker appends; the words come from training
    queries only."""
    first = _write_collection(tmp_path / "a")
    config = TextAttackConfig(model=str(bert), data=str(first), attack="stuffing", n=2, length=6, heads=["maxsim"],
                              cache_dir=str(tmp_path / "cache"))
    report = run_text_attack(config, tmp_path / "out-a", show_progress=False)
    held_out = report["held_out_query_ids"]
    rewritten = {qid: "wing wing wing wing lift lift lift lift drag drag drag ?" for qid in held_out}
    second = _write_collection(tmp_path / "b", rewritten)
    config.data = str(second)
    again = run_text_attack(config, tmp_path / "out-b", show_progress=False)
    assert again["held_out_query_ids"] == held_out
    appended = report["results"]["maxsim"]["appended"]
    assert again["results"]["maxsim"]["appended"] == appended
    queries = {row["_id"]: row["text"] for row in map(json.loads, (first / "queries.jsonl").read_text().splitlines())}
    training_words = set(" ".join(text for qid, text in queries.items() if qid not in held_out).split())
    assert set(appended.split()) <= training_words and len(appended.split()) == 6
    assert appended.split() == content_words([text for qid, text in queries.items() if qid not in held_out], 6)


def test_an_interrupted_hotflip_run_resumes_from_its_saved_passages(bert, tmp_path, monkeypatch):
    """HotFlip passages are saved one by one; a rerun whose head result is missing re-optimises none of them, and an
    insertion run with the same HotFlip settings in the same folder inserts them."""
    from lir_robust.attacks.text import pipeline

    data = _write_collection(tmp_path / "beir")
    config = TextAttackConfig(model=str(bert), data=str(data), attack="hotflip", n=2, length=4, iterations=3,
                              candidates=4, heads=["maxsim"], cache_dir=str(tmp_path / "cache"))
    first = run_text_attack(config, tmp_path / "out", show_progress=False)
    (head_result,) = (tmp_path / "out" / "partial").glob("*/maxsim.json")
    head_result.unlink()  # interrupted after the passages, before the head's metrics

    def optimised_again(*args, **kwargs):
        raise AssertionError("a saved passage was optimised again")

    monkeypatch.setattr(pipeline, "hotflip_passage", optimised_again)
    again = run_text_attack(config, tmp_path / "out", show_progress=False)
    assert again["results"]["maxsim"]["passages"] == first["results"]["maxsim"]["passages"]
    assert again["results"]["maxsim"]["metrics"] == first["results"]["maxsim"]["metrics"]
    config.attack, config.position = "insertion", "sentence"  # the same HotFlip settings: the saved passages, inserted
    inserted = run_text_attack(config, tmp_path / "out", show_progress=False)
    assert inserted["results"]["maxsim"]["snippets"] == first["results"]["maxsim"]["passages"]


def test_a_snippet_goes_between_sentences_and_the_draw_is_seeded():
    document = "first sentence . second one ! third ? last words"
    assert sentence_boundaries(document) == [0, 16, 29, 37, len(document)]
    assert insert_snippet(document, "x y", "end", None) == f"{document} x y"
    placed = {insert_snippet(document, "x y", "sentence", __import__("random").Random(seed)) for seed in range(40)}
    assert placed == {f"x y {document}", "first sentence . x y second one ! third ? last words",
                      "first sentence . second one ! x y third ? last words",
                      "first sentence . second one ! third ? x y last words", f"{document} x y"}
    documents, snippets = [document] * 6, [f"s{i}" for i in range(6)]
    assert inserted_documents(documents, snippets, "sentence", seed=3) == inserted_documents(documents, snippets, "sentence", seed=3)
    assert inserted_documents(documents, snippets, "sentence", seed=3) != inserted_documents(documents, snippets, "sentence", seed=4)
    with pytest.raises(ValueError, match="one snippet per document"):
        inserted_documents(documents, snippets[:2], "end", seed=0)
    with pytest.raises(ValueError, match="insertion position must be one of"):
        insert_snippet(document, "x", "middle", None)


def test_the_queries_init_picks_the_query_tokens_that_cover_the_queries_best(model):
    """The "queries" start: L of the cluster's query tokens (allowed ones only), in reading order; the first pick is
    the token, encoded in its text as a document, with the highest sum over query tokens of its positive similarity."""
    texts = [f"{CONTENT_WORDS[i]} {CONTENT_WORDS[i + 7]} {CONTENT_WORDS[i + 20]}" for i in range(6)]  # no shared word
    queries = model.encode(texts, is_query=True, show_progress=False)
    allowed = candidate_vocabulary(model)
    documents = model.encode(texts, is_query=False, show_progress=False)  # [CLS] marker tokens [SEP] of each text
    ids = [model.tokenize([text], is_query=False)["input_ids"][0] for text in texts]
    gains = [(float((torch.cat(queries) @ vector).clamp(min=0).sum()), int(token))
             for document, row in zip(documents, ids) for vector, token in zip(document, row) if bool(allowed[token])]
    assert covering_tokens(model, texts, queries, 1, allowed) == [max(gains)[1]]
    picked = covering_tokens(model, texts, queries, 6, allowed)
    in_order = [token for _, token in gains]
    assert len(picked) == 6 and all(bool(allowed[token]) for token in picked)
    positions = [in_order.index(token) for token in picked]
    assert positions == sorted(positions)  # reading order (each token appears once here)
    settings = HotFlipSettings(length=6, iterations=0, init="queries")
    result = hotflip_passage(model, queries, "maxsim", settings, allowed=allowed, show_progress=False, texts=texts)
    assert result.token_ids == picked


def test_the_margin_objective_needs_thresholds(model):
    queries = model.encode(["flow wing"], is_query=True, show_progress=False)
    with pytest.raises(ValueError, match="needs each training query's threshold"):
        hotflip_passage(model, queries, "maxsim", HotFlipSettings(length=2, iterations=1, objective="margin"),
                        show_progress=False)
    with pytest.raises(ValueError, match="objective must be one of"):
        HotFlipSettings(objective="best")


def test_hotflip_spreads_its_candidates_over_the_positions_asked_for(model, monkeypatch):
    """With ``positions`` P, each iteration re-scores one-token swaps at P distinct positions (the candidates shared
    out among them); P = 1 is the paper's one position per iteration."""
    from lir_robust.attacks.text import hotflip as module

    texts = [f"{CONTENT_WORDS[i]} {CONTENT_WORDS[i + 7]} flow" for i in range(4)]
    queries = model.encode(texts, is_query=True, show_progress=False)
    allowed = candidate_vocabulary(model)
    seen: list[set[int]] = []
    original = module._Objective.values

    def recording(self, passages, inputs_embeds=None):
        if passages.shape[0] > 1:  # a batch of trial swaps: where rows differ from each column's most common token
            start = torch.mode(passages, dim=0).values
            changed = (passages != start).nonzero()[:, 1].tolist()
            seen.append(set(changed))
            assert all(int((row != start).sum()) <= 1 for row in passages)  # one swap per row
        return original(self, passages, inputs_embeds)

    monkeypatch.setattr(module._Objective, "values", recording)
    for spread, candidates in ((1, 8), (4, 8), (6, 8)):  # 6 positions, 8 candidates: every position keeps its best
        seen.clear()
        result = hotflip_passage(model, queries, "maxsim", HotFlipSettings(length=8, iterations=3, candidates=candidates,
                                                                            positions=spread, init="mask", seed=0),
                                 allowed=allowed, show_progress=False)
        assert seen and all(len(positions) == spread for positions in seen), (spread, seen)
        assert result.objective >= result.initial_objective
    with pytest.raises(ValueError, match="positions >= 1"):
        HotFlipSettings(positions=0)
