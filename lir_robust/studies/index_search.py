"""Search behind an index, measured: nDCG@10 and time per query of PyLate's index + the head's rerank
(:mod:`lir_robust.patches.pylate_search`) against exhaustive scoring with the head, clean and under attack.

Clean: the corpus (the embedding cache, what the sweep scores) goes into one index; per head, exhaustive scoring
(:func:`lir_robust.scoring.scorer.score` over every document) and the index's ``candidates`` reranked by the head,
both evaluated with :func:`lir_robust.scoring.metrics.evaluate`. PyLate's own MaxSim ranking of the candidates is
reported beside them.

Attack: spike / hard patches made as the sweep makes them (:class:`lir_robust.attacks.sources.PatchSource`, same seed,
K per non-gold document) enter the index with their documents (for each query, a copy of the clean index holding
that query's patches in every non-gold document: they can take candidates before the head sees them). Retained
nDCG@10 = attacked / clean, on the same queries, against the exhaustive sweep's (``run_length_sweep`` over the same
queries, heads, kinds and K).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from lir_robust.attacks.kinds import InjectionSettings
from lir_robust.attacks.sources import PatchSource
from lir_robust.core.files import write_json_atomic, write_text_atomic
from lir_robust.data import load_retrieval_set
from lir_robust.encoders.cache import EmbeddingCache, encode_retrieval_set
from lir_robust.patches.pylate_search import build_index, index_candidates, rerank, with_patches
from lir_robust.reporting.format import number, table_header, table_row
from lir_robust.scoring.metrics import evaluate, retained_share, run_from_scores
from lir_robust.scoring.pooling import parse_head
from lir_robust.scoring.scorer import score
from lir_robust.sweep.pipeline import SweepConfig, judged_queries, library_versions, run_length_sweep

__all__ = ["IndexSearchConfig", "run_index_search"]

logger = logging.getLogger(__name__)


@dataclass
class IndexSearchConfig:
    """Everything that defines an index-search measurement (saved in results.json)."""

    model: str = "minilm"
    data: str = "cranfield"
    data_root: str | None = None
    heads: list[str] = field(default_factory=lambda: ["maxsim", "exclusive"])
    candidates: list[int] = field(default_factory=lambda: [100])
    index: str = "voyager"
    index_options: dict[str, int] = field(default_factory=lambda: {"M": 64, "ef_construction": 200, "ef_search": 200})
    k_token: int | None = None  # nearest stored vectors per query token (PyLate's default 100, at least `candidates`)
    kinds: list[str] = field(default_factory=lambda: ["spike", "hard"])
    budget: int = 4  # K injected patches per non-gold document
    attack_queries: int | None = None  # the attack (and its sweep) on the first N judged queries; None = all
    max_queries: int | None = None
    seed: int = 0
    spike_tokens: int = 3
    cache_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _run(results: Sequence[Sequence[dict]], query_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    return {qid: {hit["id"]: float(hit["score"]) for hit in hits} for qid, hits in zip(query_ids, results)}


def _ndcg(qrels, run) -> float:
    return evaluate(qrels, run)[0]["ndcg@10"]


def _clean(config, index, query_ids, queries, document_ids, documents, qrels) -> dict[str, Any]:
    """Per head: exhaustive and index + rerank (per candidate count) nDCG@10 and seconds per query."""
    store = dict(zip(document_ids, documents))
    found, out = {}, {"pylate_maxsim": {}, "heads": {}}
    for count in config.candidates:
        tick = time.perf_counter()
        found[count] = index_candidates(index, queries, count, config.k_token)
        seconds = (time.perf_counter() - tick) / len(queries)
        out["pylate_maxsim"][str(count)] = {"ndcg@10": _ndcg(qrels, _run(found[count], query_ids)), "s_per_query": seconds}
    for head in config.heads:
        tick = time.perf_counter()
        values = score(queries, documents, head)
        exhaustive_seconds = (time.perf_counter() - tick) / len(queries)
        entry = {"exhaustive": {"ndcg@10": _ndcg(qrels, run_from_scores(values, query_ids, document_ids)),
                                "s_per_query": exhaustive_seconds}, "index": {}}
        for count in config.candidates:
            ids = [[hit["id"] for hit in hits] for hits in found[count]]
            tick = time.perf_counter()
            ranked = rerank(ids, queries, [[store[docid] for docid in row] for row in ids], head)
            rerank_seconds = (time.perf_counter() - tick) / len(queries)
            entry["index"][str(count)] = {
                "ndcg@10": _ndcg(qrels, _run(ranked, query_ids)),
                "s_per_query": out["pylate_maxsim"][str(count)]["s_per_query"] + rerank_seconds,
                "rerank_s_per_query": rerank_seconds,
            }
            entry["index"][str(count)]["difference"] = entry["index"][str(count)]["ndcg@10"] - entry["exhaustive"]["ndcg@10"]
        out["heads"][head] = entry
        logger.info("%s: exhaustive %.4f, index %s", head, entry["exhaustive"]["ndcg@10"],
                    {c: round(v["ndcg@10"], 4) for c, v in entry["index"].items()})
    return out


def _attacked(config, index, folder, query_ids, queries, document_ids, documents, corpus, gold, qrels, show_progress):
    """Per kind, head and candidate count: nDCG@10 through index + rerank with the kind's K patches indexed, clean
    nDCG@10 on the same queries, retained share."""
    settings = InjectionSettings(seed=config.seed, spike_tokens=config.spike_tokens)
    count_max = max(config.candidates)
    out: dict[str, Any] = {}
    for kind in config.kinds:
        source = PatchSource(kind, [config.budget], settings, queries, corpus, gold, show_progress=show_progress)
        runs = {(head, count): {} for head in config.heads for count in config.candidates}
        tick, short_rows = time.perf_counter(), 0
        for row in tqdm(range(len(queries)), desc=f"{kind} K={config.budget} through the index", disable=not show_progress):
            patches = source.query_patches(row)[: config.budget]
            golden = {document_ids[index_] for index_ in gold[row]}
            targets = {docid: patches for docid in document_ids if docid not in golden}
            attacked = with_patches(index, folder, targets)
            found = index_candidates(attacked, [queries[row]], count_max, config.k_token)[0]
            short_rows += attacked.index.short_rows
            for count in config.candidates:
                ids = [hit["id"] for hit in found[:count]]
                vectors = [torch.cat([documents[document_ids.index(docid)], patches]) if docid in targets
                           else documents[document_ids.index(docid)] for docid in ids]
                for head in config.heads:
                    runs[(head, count)][query_ids[row]] = {hit["id"]: hit["score"] for hit in rerank([ids], [queries[row]], [vectors], head)[0]}
        seconds = time.perf_counter() - tick
        # query tokens for which the attacked index reached fewer than k_token stored vectors (pylate_search)
        out[kind] = {"seconds": seconds, "short_token_searches": short_rows, "heads": {}}
        for head in config.heads:
            out[kind]["heads"][head] = {str(count): {"ndcg@10": _ndcg(qrels, runs[(head, count)])} for count in config.candidates}
    return out


def _sweep(config: IndexSearchConfig, queries: int, out_dir: Path, show_progress: bool) -> dict[str, Any]:
    """The exhaustive sweep over the attack's queries (the first ``queries`` judged ones): per head and kind, nDCG@10
    at K = 0 and K, and retained."""
    sweep = SweepConfig(model=config.model, data=config.data, data_root=config.data_root, heads=list(config.heads),
                        kinds=list(config.kinds), ks=[0, config.budget], seed=config.seed, spike_tokens=config.spike_tokens,
                        max_queries=queries, cache_dir=config.cache_dir)
    results = run_length_sweep(sweep, out_dir, show_progress=show_progress)
    out = {}
    for head in config.heads:
        spec = parse_head(head).spec()
        out[head] = {kind: {"clean": results["metrics"][spec][kind]["by_k"]["0"]["mean"]["ndcg@10"],
                            "attacked": results["metrics"][spec][kind]["by_k"][str(config.budget)]["mean"]["ndcg@10"],
                            "retained": results["metrics"][spec][kind]["by_k"][str(config.budget)]["retained"]["ndcg@10"]}
                     for kind in config.kinds}
    return out


def _table(results: dict[str, Any]) -> str:
    config, clean = results["config"], results["clean"]
    lines = [f"# Index + head rerank: {config['data']} ({results['evaluated_queries']} queries), {config['model']}, "
             f"{config['index']} {config['index_options']}", ""]
    lines += table_header(["head", "candidates", "nDCG@10 exhaustive", "nDCG@10 index+head", "difference",
                           "PyLate MaxSim (index)", "ms/query exhaustive", "ms/query index+head"])
    for head, entry in clean["heads"].items():
        for count, value in entry["index"].items():
            lines.append(table_row([head, count, number(entry["exhaustive"]["ndcg@10"], digits=4), number(value["ndcg@10"], digits=4),
                                    number(value["difference"], digits=4), number(clean["pylate_maxsim"][count]["ndcg@10"], digits=4),
                                    number(1000 * entry["exhaustive"]["s_per_query"], digits=1),
                                    number(1000 * value["s_per_query"], digits=1)]))
    attack = results.get("attack")
    if attack:
        lines += ["", f"Attack (K = {config['budget']} per non-gold document, {attack['queries']} queries): retained "
                  "nDCG@10 = attacked / clean", ""]
        lines += table_header(["kind", "head", "candidates", "index+head clean", "index+head attacked", "retained (index)",
                               "sweep clean", "sweep attacked", "retained (sweep)"])
        for kind, by_kind in attack["kinds"].items():
            for head, by_count in by_kind["heads"].items():
                sweep = attack["sweep"][head][kind]
                for count, value in by_count.items():
                    lines.append(table_row([kind, head, count, number(value["clean"], digits=4), number(value["ndcg@10"], digits=4),
                                            number(value["retained"], digits=3), number(sweep["clean"], digits=4),
                                            number(sweep["attacked"], digits=4), number(sweep["retained"], digits=3)]))
        short = {kind: by_kind.get("short_token_searches", 0) for kind, by_kind in attack["kinds"].items()}
        if any(short.values()):
            lines += ["", "Query-token searches in which the attacked index reached fewer than k_token stored vectors "
                      "(equal injected vectors cut Voyager's graph; PyLate alone stops with voyager's RecallError): "
                      + ", ".join(f"{kind} {count}" for kind, count in short.items())]
    return "\n".join(lines) + "\n"


def run_index_search(config: IndexSearchConfig, out_dir, show_progress: bool = True) -> dict[str, Any]:
    """Measure and write ``results.json`` + ``table.md`` into ``out_dir`` (the index in ``out_dir/index``)."""
    from lir_robust.encoders.load import load_encoder

    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = load_retrieval_set(config.data, root=config.data_root).subset(config.max_queries)
    encoder = load_encoder(config.model, show_progress=show_progress)
    query_embeddings, corpus = encode_retrieval_set(encoder, data, EmbeddingCache(config.cache_dir))
    query_ids, queries, document_ids, gold = judged_queries(data, query_embeddings)
    documents = [corpus.document(index).float() for index in range(len(corpus))]
    qrels = {qid: data.qrels[qid] for qid in query_ids}
    timings["load_and_encode"] = time.perf_counter() - started

    tick = time.perf_counter()
    index = build_index(out_dir / "index" / "clean", document_ids, documents, config.index, **config.index_options)
    timings["index_build"] = time.perf_counter() - tick

    tick = time.perf_counter()
    clean = _clean(config, index, query_ids, queries, document_ids, documents, qrels)
    timings["clean"] = time.perf_counter() - tick
    results: dict[str, Any] = {"config": config.to_dict(), "data": data.summary(), "evaluated_queries": len(query_ids),
                               "documents": len(document_ids), "stored_vectors": int(corpus.lengths.sum()),
                               "versions": library_versions(), "clean": clean, "timings_s": timings}
    if config.kinds:
        attacked_count = len(query_ids) if config.attack_queries is None else min(config.attack_queries, len(query_ids))
        subset_qrels = {qid: qrels[qid] for qid in query_ids[:attacked_count]}
        tick = time.perf_counter()
        kinds = _attacked(config, index, out_dir / "index" / "attacked", query_ids[:attacked_count], queries[:attacked_count],
                          document_ids, documents, corpus, gold[:attacked_count], subset_qrels, show_progress)
        timings["attack"] = time.perf_counter() - tick
        store = dict(zip(document_ids, documents))
        for count in config.candidates:  # clean index + head on the attacked queries: the retained share's baseline
            found = index_candidates(index, queries[:attacked_count], count, config.k_token)
            ids = [[hit["id"] for hit in hits] for hits in found]
            for head in config.heads:
                ranked = rerank(ids, queries[:attacked_count], [[store[docid] for docid in row] for row in ids], head)
                baseline = _ndcg(subset_qrels, _run(ranked, query_ids[:attacked_count]))
                for kind in config.kinds:
                    value = kinds[kind]["heads"][head][str(count)]
                    value.update(clean=baseline, retained=retained_share(value["ndcg@10"], baseline))
        tick = time.perf_counter()
        sweep = _sweep(config, attacked_count, out_dir / "sweep", show_progress)
        timings["sweep"] = time.perf_counter() - tick
        results["attack"] = {"queries": attacked_count, "kinds": kinds, "sweep": sweep}
    timings["total"] = time.perf_counter() - started
    write_json_atomic(out_dir / "results.json", results)
    write_text_atomic(out_dir / "table.md", _table(results))
    logger.info("wrote %s", out_dir / "results.json")
    return results
