"""lir_robust.patches.pylate_search against the installed pylate and voyager: the head's rerank behind PyLate's
Voyager index equals exhaustive scoring with the head (all documents as candidates), is the head's ranking restricted
to the index's candidates (fewer), differs from PyLate's MaxSim where a head should, and indexed patches are searched.
Tiny random vectors and a tiny PyLate model; offline."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("pylate")
pytest.importorskip("voyager")

from lir_robust.patches import pylate_search  # noqa: E402
from lir_robust.patches.pylate_search import build_index, index_candidates, search, search_embeddings, with_patches  # noqa: E402
from lir_robust.scoring.scorer import score  # noqa: E402

HEADS = ["maxsim", "exclusive", "softmax:tau=1.0"]


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """30 documents of 3..9 unit patches (8-d), 4 queries of 3..5 tokens, and their Voyager index."""
    generator = torch.Generator().manual_seed(1)
    documents = [unit(int(torch.randint(3, 10, (1,), generator=generator)), 8, seed=10 + i) for i in range(30)]
    queries = [unit(3 + i % 3, 8, seed=100 + i) for i in range(4)]
    ids = [f"d{i}" for i in range(30)]
    index = build_index(tmp_path_factory.mktemp("index") / "clean", ids, documents)
    return ids, documents, queries, index


def exhaustive(queries, documents, ids, head):
    values = score(queries, documents, head)
    return [[ids[j] for j in sorted(range(len(ids)), key=lambda j: (float(row[j]), ids[j]), reverse=True)] for row in values]


@pytest.mark.parametrize("head", HEADS)
def test_all_documents_as_candidates_give_the_exhaustive_ranking(corpus, head):
    ids, documents, queries, index = corpus
    total = sum(len(item) for item in documents)  # every stored vector reached: every document is a candidate
    found = search_embeddings(index, queries, head, k=len(ids), candidates=len(ids), k_token=total,
                              documents_embeddings=dict(zip(ids, documents)))
    expected = exhaustive(queries, documents, ids, head)
    assert [[hit["id"] for hit in row] for row in found] == expected
    values = score(queries, documents, head)
    for row, hits in zip(values, found):
        assert [hit["score"] for hit in hits] == pytest.approx([float(row[ids.index(hit["id"])]) for hit in hits], abs=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_fewer_candidates_give_the_heads_ranking_restricted_to_the_index_candidates(corpus, head):
    ids, documents, queries, index = corpus
    candidates = index_candidates(index, queries, 6, k_token=4)
    found = search_embeddings(index, queries, head, k=6, candidates=6, k_token=4)  # the index's stored vectors
    expected = exhaustive(queries, documents, ids, head)
    for query_candidates, hits, order in zip(candidates, found, expected):
        chosen = {hit["id"] for hit in query_candidates}
        assert len(chosen) == 6 and {hit["id"] for hit in hits} == chosen
        assert [hit["id"] for hit in hits] == [docid for docid in order if docid in chosen]


def test_a_robust_head_reorders_what_pylates_maxsim_ranks_first(tmp_path):
    """Two query tokens both near ONE patch of document "spiked" (MaxSim counts it twice); document "matching" has
    one good patch per token. MaxSim (PyLate's and the maxsim head) puts "spiked" first; exclusive (each patch
    serves one token) puts "matching" first."""
    tokens = unit(2, 8, seed=3)
    spike = F.normalize(tokens.sum(0), dim=0)
    spiked = torch.stack([spike, unit(8, seed=4)])
    matching = torch.stack([F.normalize(tokens[0] + 0.9 * unit(8, seed=5), dim=0),
                            F.normalize(tokens[1] + 0.9 * unit(8, seed=6), dim=0)])
    assert score([tokens], [spiked], "maxsim") > score([tokens], [matching], "maxsim")
    index = build_index(tmp_path / "index", ["spiked", "matching"], [spiked, matching])
    first = {head: search_embeddings(index, [tokens], head, k=2, candidates=2)[0][0]["id"] for head in ("maxsim", "exclusive")}
    assert index_candidates(index, [tokens], 2)[0][0]["id"] == "spiked"  # PyLate's own MaxSim ranking
    assert first == {"maxsim": "spiked", "exclusive": "matching"}


def test_indexed_patches_are_found_and_stored_with_their_document(corpus, tmp_path):
    ids, documents, queries, index = corpus
    query = queries[0]
    before = [hit["id"] for hit in index_candidates(index, [query], 3, k_token=3)[0]]
    target = next(docid for docid in reversed(ids) if docid not in before)
    attacked = with_patches(index, tmp_path / "attacked", {target: query.clone()})  # the query's own tokens
    assert index_candidates(attacked, [query], 3, k_token=3)[0][0]["id"] == target
    stored = attacked.get_documents_embeddings([[target]])[0][0]
    assert len(stored) == len(documents[ids.index(target)]) + len(query)
    assert [hit["id"] for hit in index_candidates(index, [query], 3, k_token=3)[0]] == before  # the clean index is as it was


def test_search_encodes_query_texts_with_a_pylate_model(tmp_path):
    from pylate import models
    from tiny_text import save_tiny_bert

    torch.manual_seed(0)
    model = models.ColBERT(model_name_or_path=str(save_tiny_bert(tmp_path / "bert")), device="cpu", embedding_size=16)
    texts = ["the wing lift of an aircraft", "heat transfer in a boundary layer", "jet noise at high speed"]
    index = build_index(tmp_path / "index", ["a", "b", "c"], model.encode(texts, is_query=False, show_progress_bar=False))
    found = search(model, index, ["boundary layer heat"], head="exclusive", k=3, candidates=3)
    queries = model.encode(["boundary layer heat"], is_query=True, show_progress_bar=False)
    assert found == search_embeddings(index, queries, "exclusive", k=3, candidates=3)
    assert len(found[0]) == 3


def test_an_unknown_index_is_refused_in_one_line(tmp_path):
    with pytest.raises(pylate_search.UserError, match="unknown index 'plaid'.*fix: choose one of voyager"):
        build_index(tmp_path / "index", ["a"], [unit(2, 8)], kind="plaid")


def test_the_search_command_matches_exhaustive_scoring_and_runs_the_attack_through_the_index(tmp_path):
    """18 documents, all of them candidates (k_token reaching every stored vector): index + head equals the
    exhaustive head; spike patches go through the index and the sweep's numbers sit beside them."""
    import json

    from pylate import models
    from retrieval_fixtures import write_beir
    from tiny_text import save_tiny_bert

    from lir_robust.commands import search as command

    torch.manual_seed(0)
    folder = tmp_path / "model"
    models.ColBERT(model_name_or_path=str(save_tiny_bert(tmp_path / "bert")), device="cpu", embedding_size=16).save(str(folder))
    out = tmp_path / "out"
    command.main(["--model", str(folder), "--data", str(write_beir(tmp_path / "tiny")), "--head", "maxsim", "exclusive",
                  "--candidates", "18", "--k-token", "100000", "--kinds", "spike", "--budget", "2", "--max-queries", "4", "--out", str(out),
                  "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    results = json.loads((out / "results.json").read_text())
    for head in ("maxsim", "exclusive:capacity=1,candidates=8"):  # the heads' full text forms
        entry = results["clean"]["heads"][head]
        assert entry["index"]["18"]["ndcg@10"] == pytest.approx(entry["exhaustive"]["ndcg@10"], abs=1e-9)
        attacked, sweep = results["attack"]["kinds"]["spike"]["heads"][head]["18"], results["attack"]["sweep"][head]["spike"]
        assert attacked["clean"] == pytest.approx(sweep["clean"], abs=1e-9)
        assert attacked["ndcg@10"] == pytest.approx(sweep["attacked"], abs=1e-9)  # every document a candidate: the sweep's
    assert "| exclusive:capacity=1,candidates=8 | 18 |" in (out / "table.md").read_text()


def test_a_query_vector_that_reaches_fewer_neighbours_keeps_those_it_reaches(caplog):
    """Equal vectors (an injection appends the same patches to many documents) cut Voyager's graph: voyager raises
    RecallError for the whole batch, PyLate with it. The wrapper answers: each short row keeps what it reaches."""
    import numpy as np
    import voyager

    from lir_robust.patches.pylate_search import _ArrayArguments

    rng = np.random.default_rng(0)
    index = voyager.Index(voyager.Space.Cosine, num_dimensions=16, M=4, ef_construction=20, random_seed=1)
    base = rng.standard_normal((2000, 16)).astype(np.float32)
    same = np.repeat(rng.standard_normal((4, 16)).astype(np.float32), 500, axis=0)
    index.add_items(base, num_threads=1)  # one thread: the same graph on every machine
    index.add_items(same, num_threads=1)
    queries = np.concatenate([same[:1] + 0.01, base[:2]])
    with pytest.raises(voyager.RecallError):
        index.query(queries, 100, query_ef=400)
    wrapped = _ArrayArguments(index)
    with caplog.at_level(logging.WARNING, logger="lir_robust.patches.pylate_search"):
        indices, distances = wrapped.query(queries, 100, query_ef=100)
    assert indices.shape == distances.shape == (3, 100) and wrapped.short_rows == 1
    assert "reached only 50 of 100 neighbours" in caplog.text
    assert (indices[0, 50:] == indices[0, 49]).all() and (np.diff(distances[0, :50]) >= 0).all()
    for row in (1, 2):  # the rows voyager can answer are its own answer
        expected, _ = index.query(queries[row : row + 1], 100, query_ef=400)
        assert set(indices[row].tolist()) == set(expected[0].tolist())
