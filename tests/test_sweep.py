"""The length-sweep command end to end: tiny models (text ColBERT and colpali) and resuming; a real Cranfield subset
checked number by number against a brute-force path; segments, kill -9 and resume, one process against two; damaged
segment files; weights changed in place."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from retrieval_fixtures import write_beir, write_vidore_v2
from tiny_text import save_tiny_bert

from lir_robust.commands import sweep as sweep_command

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "eval" / "length_sweep.py"  # the wrapper users run (python / torchrun): run as a subprocess only


def test_cli_end_to_end_text_and_resume(tmp_path, caplog):
    bert, data = save_tiny_bert(tmp_path / "bert"), write_beir(tmp_path / "tiny")
    out = tmp_path / "out"
    argv = ["--model", str(bert), "--data", str(data), "--ks", "0", "1", "4", "--kinds", "gaussian", "corpus", "hard", "spike",
            "--poolings", "maxsim", "softmax:tau=1.0", "--segments", "2", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--quiet"]
    sweep_command.main(argv)
    results = json.loads((out / "results.json").read_text())
    assert (out / "table.md").read_text().count("| maxsim |") == 1 + 4  # summary row + one row per kind
    assert (out / "retained_ndcg10.png").stat().st_size > 1000
    assert results["heads"] == ["maxsim", "softmax:tau=1.0"] and results["ks"] == [0, 1, 4]
    assert results["injection"]["targets"]["hard"] == "non-gold" and results["injection"]["targets"]["gaussian"] == "all"
    hard = results["metrics"]["maxsim"]["hard"]
    assert set(hard["by_k"]) == {"0", "1", "4"} and len(hard["by_k"]["4"]["per_query"]["ndcg@10"]) == 6
    assert hard["by_k"]["0"]["retained"]["ndcg@10"] == pytest.approx(1.0)
    assert 0.0 <= results["gradient_concentration_gold_pairs"]["maxsim"]["gini"] <= 1.0
    assert "torch" in results["versions"] and results["timings_s"]["total"] > 0

    # resume: drop one segment and the report; the other segment is reused and the numbers are unchanged
    partial = next((out / "partial").iterdir())
    segments = sorted(partial.glob("segment_*.safetensors"))
    assert len(segments) == 2
    segments[1].unlink()
    (out / "results.json").unlink()
    caplog.set_level("INFO")
    sweep_command.main(argv)
    assert "resumed" in caplog.text
    again = json.loads((out / "results.json").read_text())
    assert again["metrics"]["maxsim"]["hard"]["by_k"]["4"]["mean"] == hard["by_k"]["4"]["mean"]


def test_cli_end_to_end_tiny_colpali(tiny_colqwen2_dir, tmp_path):
    data = write_vidore_v2(tmp_path / "pages_v2", pages=4)
    out = tmp_path / "out"
    sweep_command.main(["--model", str(tiny_colqwen2_dir), "--data", str(data), "--language", "english", "--ks", "0", "2",
                       "--kinds", "gaussian", "hard", "--poolings", "maxsim", "topk:k=2", "--out", str(out),
                       "--cache-dir", str(tmp_path / "cache"), "--batch-size", "2", "--quiet"])
    results = json.loads((out / "results.json").read_text())
    assert results["evaluated_queries"] == 4 and results["embedding_dim"] == 128
    assert results["encoder"]["class"] == "ColpaliEncoder"


# ----------------------------------------------------------------------------------------------------------------
# The real sweep on a real subset of Cranfield, every number checked against an independent computation
# ----------------------------------------------------------------------------------------------------------------

EVERY_HEAD = ["maxsim", "topk:k=4", "softmax:tau=1.0", "softmax:tau=0.1", "lse:tau=0.1", "exclusive", "blend:tau=0.5,weight=0.5"]
EVERY_KIND = ["gaussian", "corpus", "hard", "spike", "spike@10"]
SMALL_KS = [0, 4, 25]


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside the block: on a shared 2-core machine, threads waiting on each other cost more
    than they bring (the numbers do not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_cranfield_subset(source: Path, folder: Path, queries: int = 20, documents: int = 300) -> Path:
    """A BEIR folder: the first ``queries`` judged Cranfield queries, their qrels, and ``documents`` documents (every
    gold document of those queries, then the first others), in Cranfield's document order."""
    qrels: dict[str, dict[str, int]] = {}
    for line in (source / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, docid, grade = line.split("\t")
        qrels.setdefault(qid, {})[docid] = int(grade)
    all_queries = _rows(source / "queries.jsonl")
    chosen = [row["_id"] for row in all_queries if any(grade > 0 for grade in qrels.get(row["_id"], {}).values())][:queries]
    gold = {docid for qid in chosen for docid in qrels[qid]}
    corpus = _rows(source / "corpus.jsonl")
    others = [row["_id"] for row in corpus if row["_id"] not in gold][: documents - len(gold)]
    keep = gold | set(others)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus if row["_id"] in keep))
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in all_queries if row["_id"] in chosen))
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{qid}\t{docid}\t{grade}\n" for qid in chosen for docid, grade in qrels[qid].items())
    )
    return folder


@pytest.fixture(scope="module")
def cranfield_sweeps(tmp_path_factory):
    """The real command (lir_robust.commands.sweep main) on 300 Cranfield documents and 20 queries, every head, every kind,
    K in {0, 4, 25}: ``(results with the default segments, results with --segments 3, data folder, cache dir)``.
    MiniLM encodes once; both runs read the embedding cache."""
    from lir_robust.data import data_root

    root = data_root()
    if root is None or not (root / "cranfield" / "corpus.jsonl").is_file():
        pytest.skip("the Cranfield collection is not on this machine (set LIR_ROBUST_DATA_ROOT)")
    base = tmp_path_factory.mktemp("cranfield-sweep")
    folder = write_cranfield_subset(root / "cranfield", base / "cranfield-300")
    from lir_robust.data import load_retrieval_set
    from lir_robust.encoders.cache import EmbeddingCache, encode_retrieval_set
    from lir_robust.encoders.load import load_encoder

    # encoded here (every thread: the big matrix products of MiniLM use them well), read from the cache by both runs
    encode_retrieval_set(load_encoder("minilm", show_progress=False), load_retrieval_set(str(folder)), EmbeddingCache(base / "cache"))
    common = ["--model", "minilm", "--data", str(folder), "--poolings", *EVERY_HEAD, "--kinds", *EVERY_KIND,
              "--ks", *map(str, SMALL_KS), "--cache-dir", str(base / "cache"), "--quiet"]
    with one_thread():
        sweep_command.main([*common, "--out", str(base / "default")])
        sweep_command.main([*common, "--out", str(base / "three"), "--segments", "3"])
    default = json.loads((base / "default" / "results.json").read_text())
    three = json.loads((base / "three" / "results.json").read_text())
    return default, three, folder, base / "cache"


def _concatenated_scores(query: torch.Tensor, own: list[torch.Tensor], injected: list[torch.Tensor | None], heads, k: int):
    """Scores ``[len(heads), Nd]`` of ``query [Tq, D]`` against every document with its first ``k`` injected patches
    appended after its own: ``own[d] [L_d, Tq]`` are the similarities to the document's own patches, ``injected[d]
    [k_max, D]`` its injected patches (None: left alone). Each head pools the whole concatenated row at once (its
    plain formula, no partial / merge), in chunks of documents of similar length."""
    rows = [own_rows if extra is None or k == 0 else torch.cat([own_rows, extra[:k].float() @ query.T])
            for own_rows, extra in zip(own, injected)]
    lengths = torch.tensor([row.shape[0] for row in rows])
    out = torch.empty(len(heads), len(rows))
    order = lengths.argsort().tolist()
    for start in range(0, len(order), 64):
        chunk = order[start : start + 64]
        similarities = torch.nn.utils.rnn.pad_sequence([rows[d] for d in chunk], batch_first=True).transpose(1, 2).contiguous()
        document_mask = torch.arange(similarities.shape[-1]) < lengths[chunk].unsqueeze(1)  # [n, L]
        query_mask = torch.ones(len(chunk), query.shape[0], dtype=torch.bool)
        for h, head in enumerate(heads):
            out[h, chunk] = head.pool(similarities, document_mask, query_mask).sum(dim=-1)
    return out


@pytest.mark.slow
def test_every_sweep_number_equals_an_independent_computation(cranfield_sweeps):
    """Every nDCG@10 (mean and per query) and every hijack budget of the real sweep equals the brute-force path: the
    injected documents built explicitly (PatchSource.patches_for()[:K] after the document's own patches), scored with
    each head's plain formula (tied to lir_robust.scoring.scorer.score below), evaluated by pytrec_eval directly, budgets by
    their definition."""
    results, _, folder, cache = cranfield_sweeps
    with one_thread():
        _check_against_brute_force(results, folder, cache)


def _check_against_brute_force(results: dict, folder: Path, cache: Path) -> None:
    import pytrec_eval

    from lir_robust.data import load_retrieval_set
    from lir_robust.encoders.cache import EmbeddingCache, encode_retrieval_set
    from lir_robust.encoders.load import load_encoder
    from lir_robust.attacks.kinds import InjectionSettings
    from lir_robust.attacks.sources import PatchSource
    from lir_robust.scoring.pooling import parse_head
    from lir_robust.scoring.scorer import score

    assert results["heads"] == [parse_head(head).spec() for head in EVERY_HEAD] and results["ks"] == SMALL_KS
    data = load_retrieval_set(str(folder))
    encoder = load_encoder("minilm", show_progress=False)
    query_embeddings, corpus = encode_retrieval_set(encoder, data, EmbeddingCache(cache))
    assert encoder.items_encoded == 0  # the sweep's own embeddings, from its cache
    query_ids, document_ids = results["query_ids"], list(data.corpus)
    assert len(query_ids) == 20 and len(document_ids) == 300
    queries = [query_embeddings[list(data.queries).index(qid)] for qid in query_ids]
    documents = [corpus.document(index).clone() for index in range(len(corpus))]
    qrels = {qid: data.qrels[qid] for qid in query_ids}
    gold = [sorted(document_ids.index(docid) for docid, grade in qrels[qid].items() if grade > 0) for qid in query_ids]
    heads = [parse_head(head) for head in results["heads"]]
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})

    def ndcg_at_10(scores: torch.Tensor) -> list[float]:
        run = {qid: {docid: float(scores[row, column]) for column, docid in enumerate(document_ids)}
               for row, qid in enumerate(query_ids)}
        evaluated = evaluator.evaluate(run)
        return [evaluated[qid]["ndcg_cut_10"] for qid in query_ids]

    def gold_in_top_10(scores: torch.Tensor) -> list[bool]:  # ties at the cut count for the gold document
        cut = scores.sort(dim=1, descending=True).values[:, 9]
        return [bool((scores[row, gold[row]] >= cut[row]).any()) for row in range(len(query_ids))]

    own = [[document @ query.T for document in documents] for query in queries]  # [L_d, Tq] per (query, document)
    clean = torch.stack([score(queries, documents, head) for head in heads])  # K = 0: [H, Nq, Nd]
    assert torch.allclose(_concatenated_scores(queries[0], own[0], [None] * len(documents), heads, 0), clean[:, 0], atol=1e-5, rtol=0)

    settings = InjectionSettings()
    compared = 0
    for kind in EVERY_KIND:
        source = PatchSource(kind, SMALL_KS, settings, queries, corpus, gold)
        injected = [[source.patches_for(row, document) for document in range(len(documents))] for row in range(len(queries))]
        scores = {0: clean}
        for k in SMALL_KS[1:]:
            scores[k] = torch.stack([_concatenated_scores(queries[row], own[row], injected[row], heads, k)
                                     for row in range(len(queries))], dim=1)
        if kind == "hard":  # the shortcut over similarity rows is score() on the explicitly concatenated documents
            concatenated = [document if extra is None else torch.cat([document, extra[:25]]) for document, extra in zip(documents, injected[0])]
            for h, head in enumerate(heads):
                assert torch.allclose(scores[25][h, 0], score(queries[:1], concatenated, head)[0], atol=1e-5, rtol=0)
        for h, head in enumerate(results["heads"]):
            swept = results["metrics"][head][kind]
            budget = [math.inf] * len(query_ids)
            for k in reversed(SMALL_KS):
                for row, inside in enumerate(gold_in_top_10(scores[k][h])):
                    if not inside:
                        budget[row] = k
                expected = ndcg_at_10(scores[k][h])
                assert swept["by_k"][str(k)]["per_query"]["ndcg@10"] == pytest.approx(expected, abs=1e-12), (head, kind, k)
                assert swept["by_k"][str(k)]["mean"]["ndcg@10"] == pytest.approx(sum(expected) / len(expected), abs=1e-12)
                compared += len(expected)
            assert swept["hijack_budget"]["per_query"] == budget, (head, kind)
            assert swept["hijack_budget"]["median"] == sorted(budget)[(len(budget) - 1) // 2]
    assert compared == len(EVERY_HEAD) * len(EVERY_KIND) * len(SMALL_KS) * 20
    # the numbers are not degenerate: injection moved some of them, some budgets are finite, some infinite
    hard = results["metrics"]["maxsim"]["hard"]
    assert hard["by_k"]["25"]["mean"]["ndcg@10"] < hard["by_k"]["0"]["mean"]["ndcg@10"]
    budgets = [b for head in results["heads"] for kind in EVERY_KIND for b in results["metrics"][head][kind]["hijack_budget"]["per_query"]]
    assert any(math.isinf(b) for b in budgets) and any(b in (4, 25) for b in budgets)


def test_segments_do_not_change_any_number(cranfield_sweeps):
    """The default segments (one, for 300 documents) and --segments 3 give identical metrics, to the last bit."""
    default, three, _, _ = cranfield_sweeps
    assert default["segments"] == 1 and three["segments"] == 3
    assert three["metrics"] == default["metrics"]
    assert three["gradient_concentration_gold_pairs"] == default["gradient_concentration_gold_pairs"]


def test_ranked_lists_do_not_depend_on_the_segments_even_when_ties_straddle_the_cut():
    """Many documents with exactly the same score (a hard patch that wins every query token of every injected
    document does that): the kept lists are the lowest document indices among the ties, whatever the segments."""
    from lir_robust.sweep.ranked import RankedScores

    generator = torch.Generator().manual_seed(0)
    n_documents, depth = 120, 8  # wider than 2 * depth + 32: the list is first cut with topk
    scores = torch.rand(3, n_documents, generator=generator)
    scores[:, 10:100] = 2.0  # 90 documents tie at the top, more than depth + 32
    hijack = torch.rand(3, n_documents, generator=generator)
    no_gold = torch.full((3, 1), -1)

    def ranked(segments):
        total = RankedScores(3, 1, depth)
        for columns in segments:
            part = RankedScores(3, 1, depth)
            part.add_block("maxsim|hard|25", slice(0, 3), columns, scores[:, columns], hijack[:, columns], no_gold)
            total.merge(part)
        return total

    whole = ranked([torch.arange(n_documents)])
    for segments in ([torch.arange(0, n_documents, 3), torch.arange(1, n_documents, 3), torch.arange(2, n_documents, 3)],
                     [torch.arange(60, n_documents), torch.arange(0, 60)]):
        split = ranked(segments)
        for field in ("values", "indices", "hijack"):
            assert torch.equal(getattr(split, field)["maxsim|hard|25"], getattr(whole, field)["maxsim|hard|25"]), field
    assert whole.indices["maxsim|hard|25"].tolist() == [list(range(10, 18))] * 3
    assert torch.equal(whole.hijack["maxsim|hard|25"], hijack[:, 10:18].half())


# ----------------------------------------------------------------------------------------------------------------
# Kill and resume, one process against two: the command itself, run as a user runs it
# ----------------------------------------------------------------------------------------------------------------

TINY_GRID = ["--poolings", "maxsim", "topk:k=2", "softmax:tau=0.1", "exclusive", "--kinds", "gaussian", "corpus", "hard",
             "spike@2", "--ks", "0", "1", "4", "--segments", "24", "--quiet"]
TINY_SEGMENTS = 24


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """A tiny BERT, a 72-document BEIR folder, and their uninterrupted one-process sweep in 24 segments (run here, on
    one thread, as the subprocesses below run): ``(options without --out / --cache-dir, folder, results)``."""
    base = tmp_path_factory.mktemp("tiny-sweep")
    bert, data = save_tiny_bert(base / "bert"), write_beir(base / "tiny", documents_per_topic=12)
    options = ["--model", str(bert), "--data", str(data), *TINY_GRID]
    with one_thread():
        sweep_command.main([*options, "--cache-dir", str(base / "cache"), "--out", str(base / "uninterrupted")])
    return options, base, json.loads((base / "uninterrupted" / "results.json").read_text())


def _without(results: dict, *names: str) -> dict:
    """results.json without the entries that may differ between runs of the same sweep (timings, ...)."""
    out = {key: value for key, value in results.items() if key not in names and key != "timings_s"}
    out["config"] = {key: value for key, value in results["config"].items() if key not in names}
    return out


def _subprocess_environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_results_of_an_uninterrupted_one(tiny_sweep):
    options, base, expected = tiny_sweep
    out = base / "killed"
    command = [sys.executable, str(SCRIPT), *options, "--cache-dir", str(base / "cache"), "--out", str(out)]
    process = subprocess.Popen(command, env=_subprocess_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not list(out.glob("partial/*/segment_0000.safetensors")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the sweep ended before it could be killed part-way"
    done = sorted(out.glob("partial/*/segment_*.safetensors"))
    assert 1 <= len(done) < TINY_SEGMENTS and not (out / "results.json").exists()

    rerun = subprocess.run(command, env=_subprocess_environment(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stderr.count("resumed from") >= len(done) and "from cache" in rerun.stderr
    assert len(list(out.glob("partial/*/segment_*.safetensors"))) == TINY_SEGMENTS
    assert _without(json.loads((out / "results.json").read_text())) == _without(expected)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_results_of_one(tiny_sweep):
    """torchrun --nproc_per_node 2: the corpus encoded in shares (a fresh cache), segments dealt to the two processes,
    their lists merged on rank 0: results.json equals the one-process run's, to the last bit (timings aside)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    options, base, expected = tiny_sweep
    out = base / "two-processes"
    command = [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()), str(SCRIPT), *options,
               "--cache-dir", str(base / "cache-two-processes"), "--out", str(out)]
    run = subprocess.run(command, env=_subprocess_environment(), capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["processes"] == 2 and expected["processes"] == 1
    assert "rank 1 of 2" in run.stderr  # both processes joined
    assert _without(results, "processes", "cache_dir") == _without(expected, "processes", "cache_dir")


# ----------------------------------------------------------------------------------------------------------------
# No stale or unsafe state: damaged segment files, weights changed in place
# ----------------------------------------------------------------------------------------------------------------


class _Unpickled:
    """Unpickling this creates a file: a pickle planted as a segment file must never get that far."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_damaged_segment_file_is_scored_again_and_never_unpickled(tmp_path, caplog, monkeypatch):
    import pickle

    from safetensors import safe_open

    bert, data = save_tiny_bert(tmp_path / "bert"), write_beir(tmp_path / "tiny")
    out = tmp_path / "out"
    argv = ["--model", str(bert), "--data", str(data), "--ks", "0", "1", "4", "--kinds", "gaussian", "hard", "--poolings",
            "maxsim", "lse:tau=0.1", "--segments", "3", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    sweep_command.main(argv)
    expected = json.loads((out / "results.json").read_text())
    segments = sorted(out.glob("partial/*/segment_*.safetensors"))
    assert len(segments) == 3
    for segment in segments:  # safetensors: plain tensors
        with safe_open(str(segment), framework="pt") as handle:
            assert "shape" in handle.keys()
    segments[0].write_bytes(segments[0].read_bytes()[: segments[0].stat().st_size // 2])  # truncated
    marker = tmp_path / "code-ran"
    segments[1].write_bytes(pickle.dumps(_Unpickled(marker)))  # a pickle where a segment file should be
    (out / "results.json").unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("a segment file was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    caplog.set_level("INFO")
    sweep_command.main(argv)
    assert not marker.exists()
    damaged = [record.getMessage() for record in caplog.records if "is damaged" in record.getMessage()]
    assert len(damaged) == 2 and str(segments[0]) in damaged[0] + damaged[1] and str(segments[1]) in damaged[0] + damaged[1]
    assert f"resumed from {segments[2]}" in caplog.text
    assert _without(json.loads((out / "results.json").read_text())) == _without(expected)


def _rewrite_in_place(weights: Path, seed: int = 0) -> None:
    """Perturb every tensor of a safetensors file and write it back into the same file: same size, inode, metadata and
    modification time (so that only the content tells the new weights from the old)."""
    from safetensors import safe_open
    from safetensors.torch import save

    before = weights.stat()
    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name).clone() for name in handle.keys()}  # not a view of the file
    generator = torch.Generator().manual_seed(seed)
    changed = {name: (tensor.float() + 0.5 * torch.randn(tensor.shape, generator=generator)).to(tensor.dtype) if tensor.is_floating_point()
               else tensor for name, tensor in tensors.items()}
    payload = save(changed, metadata=metadata)
    with open(weights, "r+b") as handle:
        handle.write(payload)
        handle.truncate()
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = weights.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert any(not torch.equal(changed[name], tensors[name]) for name in tensors)


def _sweep_reads_cache(caplog, argv) -> tuple[dict, bool]:
    """Run the sweep; return its results and whether it took the document embeddings from the cache."""
    caplog.clear()
    caplog.set_level("INFO")
    sweep_command.main(argv)
    out = Path(argv[argv.index("--out") + 1])
    return json.loads((out / "results.json").read_text()), "items from cache" in caplog.text


def _numbers(results: dict) -> dict:
    return {"metrics": results["metrics"], "gini": results["gradient_concentration_gold_pairs"]}


def test_a_fine_tuned_text_adapter_changed_in_place_is_encoded_again(tmp_path, caplog, fresh_accelerate_state):
    from finetune_fixtures import save_dropout_bert, write_tiny_beir
    from lir_robust.commands import finetune
    bert, data = save_dropout_bert(tmp_path / "bert", dropout=0.0), write_tiny_beir(tmp_path / "beir", documents=8)
    run = tmp_path / "run"
    finetune.train(finetune.parse_args([
        "--model", str(bert), "--data", str(data), "--output-dir", str(run), "--projection-dim", "16", "--lora-r", "4",
        "--lora-alpha", "8", "--batch-size", "4", "--validation-pairs", "0", "--save-every", "0", "--max-steps", "1",
        "--query-max-length", "12", "--train-document-max-length", "24", "--document-max-length", "24",
        "--pseudo-queries", "title", "--pooling", "maxsim", "--projection-init", "svd", "--lr", "5e-3",
    ]))
    argv = ["--model", str(run), "--data", str(data), "--poolings", "maxsim", "--kinds", "hard", "--ks", "0", "1",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "sweep"), "--quiet"]
    first, cached = _sweep_reads_cache(caplog, argv)
    assert not cached
    again, cached = _sweep_reads_cache(caplog, argv)
    assert cached and _numbers(again) == _numbers(first)  # unchanged weights: the cache answers, same numbers

    adapters = list((run / "model").rglob("adapter_model.safetensors"))
    assert len(adapters) == 1
    _rewrite_in_place(adapters[0])
    changed, cached = _sweep_reads_cache(caplog, argv)
    assert not cached, "weights changed in place were answered from the embedding cache"
    assert changed["encoder"]["weights"] != first["encoder"]["weights"]
    assert _numbers(changed) != _numbers(first)


def test_a_colpali_adapter_or_base_model_changed_in_place_is_encoded_again(tmp_path, caplog):
    pytest.importorskip("colpali_engine")
    from peft import LoraConfig, get_peft_model

    from lir_robust.patches.colpali import load_colpali, lora_target_modules
    from lir_robust.scoring.pooling import parse_head
    from lir_robust.training.runs import save_checkpoint
    from tiny_colpali import save_tiny_colqwen2

    base = save_tiny_colqwen2(tmp_path / "base")
    model, processor = load_colpali(base, device="cpu")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_modules("colqwen2"), init_lora_weights="gaussian")
    save_checkpoint(get_peft_model(model, lora), processor, tmp_path / "run" / "model", parse_head("maxsim"),
                    {"family": "colqwen2", "model": str(base), "head": "maxsim"})
    data = write_vidore_v2(tmp_path / "pages", pages=4)
    argv = ["--model", str(tmp_path / "run"), "--data", str(data), "--language", "english", "--poolings", "maxsim",
            "--kinds", "hard", "--ks", "0", "2", "--batch-size", "2", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "sweep"), "--quiet"]
    first, cached = _sweep_reads_cache(caplog, argv)
    assert not cached and first["encoder"]["class"] == "ColpaliEncoder"
    again, cached = _sweep_reads_cache(caplog, argv)
    assert cached and _numbers(again) == _numbers(first)

    _rewrite_in_place(tmp_path / "run" / "model" / "adapter_model.safetensors")  # the adapter retrained into its folder
    adapter_changed, cached = _sweep_reads_cache(caplog, argv)
    assert not cached and _numbers(adapter_changed) != _numbers(first)

    base_weights = sorted(base.glob("*.safetensors"))
    assert base_weights
    _rewrite_in_place(base_weights[0], seed=1)  # the base model rewritten in place
    base_changed, cached = _sweep_reads_cache(caplog, argv)
    assert not cached and _numbers(base_changed) != _numbers(adapter_changed)
