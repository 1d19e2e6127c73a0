"""One text attack of one model on one collection, every head: ``TextAttackConfig`` + ``run_text_attack(config, out)``.

The judged queries are split 50/50 by ``seed`` (:func:`~lir_robust.attacks.text.queries.split_queries`); attacks
read only the training half; every number is measured on the held-out half (at most ``max_queries`` of them).
Kinds (``attack``):

- ``cluster-text``: N passages, each a k-means cluster's training query texts concatenated (no gradients);
- ``hotflip``: N passages of ``length`` tokens optimised by HotFlip against one cluster each, through the model and
  each head (adaptive: one set of passages per head);
- ``insertion``: N HotFlip snippets of ``length`` tokens (as ``hotflip``, one per cluster, against each head), snippet
  i inserted into non-gold document i (``position``: appended, or at a seeded random sentence boundary), re-encoded;
- ``stuffing``: the ``length`` most frequent content words of the training queries appended to N non-gold documents;
- ``query-text``: the ceiling: each held-out query's own text appended to N of its non-gold documents.

Each head's result is written to ``out/partial/<run key>/<head>.json`` as soon as it is done, and each HotFlip
passage to ``out/partial/passages-<passage key>/<head>-passage-<cluster>.json`` (a rerun resumes from them; the
passage key leaves out what passages do not depend on: the attack kind, the insertion position, the held-out cut, so
``hotflip`` and ``insertion`` runs with the same HotFlip settings in one folder share their passages);
``results.json``, ``table.md`` and, for passages, ``success_at_10.png`` (success@10 against the number of passages
used, per head) are written atomically at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lir_robust.attacks.text.blackbox import appended, cluster_passages, non_gold_documents, stuffing_words
from lir_robust.attacks.text.evaluate import edit_metrics, ndcg10, passage_metrics, score_each, success_by_count
from lir_robust.attacks.text.hotflip import HotFlipSettings, candidate_vocabulary, hotflip_passage
from lir_robust.attacks.text.insertion import POSITIONS, inserted_documents
from lir_robust.attacks.text.queries import cluster_members, content_words, kmeans, mean_vectors, split_queries
from lir_robust.core.errors import DataError, UserError
from lir_robust.core.files import write_json_atomic, write_text_atomic
from lir_robust.core.naming import head_folder_name
from lir_robust.data import load_retrieval_set
from lir_robust.reporting.figures import plot_success
from lir_robust.encoders.cache import EmbeddingCache, encode_retrieval_set
from lir_robust.encoders.text_colbert import TextColBERT
from lir_robust.scoring.pooling import parse_head
from lir_robust.scoring.scorer import score

__all__ = ["ATTACKS", "TextAttackConfig", "run_text_attack", "QuerySplit", "make_split"]

logger = logging.getLogger(__name__)

ATTACKS = ("cluster-text", "hotflip", "insertion", "stuffing", "query-text")
PASSAGE_ATTACKS = ("cluster-text", "hotflip")
OPTIMISED_ATTACKS = ("hotflip", "insertion")  # the kinds that run HotFlip


@dataclass
class TextAttackConfig:
    """Everything that defines one run (saved in results.json)."""

    model: str = "minilm"
    data: str = "cranfield"
    attack: str = "cluster-text"
    n: int = 10  # passages (cluster-text, hotflip) or attacked documents (insertion, stuffing, query-text)
    length: int = 32  # HotFlip passage / insertion snippet tokens; stuffing: the number of words T
    heads: list[str] = field(default_factory=lambda: ["maxsim"])
    max_queries: int | None = None  # held-out queries measured (the first ones of the held-out half)
    iterations: int = 100
    candidates: int = 32
    positions: int = 1  # HotFlip positions per iteration (the candidates shared out among them)
    init: str = "queries"
    objective: str = "mean"
    position: str = "end"  # insertion: "end" (appended) or "sentence" (a seeded random sentence boundary)
    seed: int = 0
    data_root: str | None = None
    split: str = "test"
    cache_dir: str | None = None
    use_cache: bool = True

    def __post_init__(self):
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.attack!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hotflip(self) -> HotFlipSettings:
        return HotFlipSettings(length=self.length, iterations=self.iterations, candidates=self.candidates,
                               positions=self.positions, init=self.init, objective=self.objective, seed=self.seed)


@dataclass
class QuerySplit:
    """Training / held-out query ids, their embeddings' positions, and the training clusters."""

    training: list[str]
    held_out: list[str]
    members: list[list[int]]  # per cluster, indices into ``training``


def make_split(query_ids: list[str], training_embeddings_of, clusters: int, seed: int,
               max_queries: int | None = None) -> QuerySplit:
    """Split ``query_ids`` 50/50 by ``seed``, cut the held-out half to ``max_queries``, and cluster the training
    half's mean vectors (``training_embeddings_of(ids)`` -> their ``[Tq, D]`` embeddings) into ``clusters`` groups."""
    training, held_out = split_queries(query_ids, seed)
    held_out = held_out[:max_queries] if max_queries else held_out
    if clusters > len(training):
        logger.warning("%d adversarial passages asked for, but the training half holds %d queries: one passage per "
                       "training query, %d in all (the results' split.cluster_sizes)", clusters, len(training),
                       len(training))
        clusters = len(training)
    labels = kmeans(mean_vectors(training_embeddings_of(training)), clusters, seed)
    return QuerySplit(training, held_out, cluster_members(labels))


def _run_key(config: TextAttackConfig, encoder_config: dict, data_fingerprint: str,
             ignored: tuple[str, ...] = ()) -> str:
    leave_out = ("heads", "cache_dir", "use_cache") + ignored
    payload = {key: value for key, value in config.to_dict().items() if key not in leave_out}
    payload.update(encoder=encoder_config, data=data_fingerprint)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_text_attack(config: TextAttackConfig, out_dir: str | os.PathLike, show_progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the attack for every head and write ``results.json`` + ``table.md`` into ``out_dir``."""
    from lir_robust.encoders.load import load_encoder

    started = time.perf_counter()
    out_dir = Path(out_dir)
    heads = [parse_head(head).spec() for head in config.heads]
    data = load_retrieval_set(config.data, split=config.split, root=config.data_root)
    if data.modality != "text":
        raise DataError(f"{data.name} holds page images; the text attacks need a text collection (a BEIR folder)")
    encoder = load_encoder(config.model, show_progress=show_progress)
    if config.attack in OPTIMISED_ATTACKS and not isinstance(getattr(encoder, "model", None), TextColBERT):
        raise UserError(f"{config.attack} runs HotFlip, which needs a text ColBERT model (minilm, a text checkpoint, a "
                        f"PyLate model); {config.model} is a {type(encoder).__name__}: attack it with cluster-text, "
                        "stuffing or query-text")
    query_embeddings, corpus = encode_retrieval_set(encoder, data, EmbeddingCache(config.cache_dir), use_cache=config.use_cache)
    position = {qid: index for index, qid in enumerate(data.queries)}
    embeddings_of = lambda ids: [query_embeddings[position[qid]] for qid in ids]  # noqa: E731
    split = make_split(data.judged_query_ids, embeddings_of, config.n, config.seed, config.max_queries)
    document_ids, texts = data.document_ids, data.document_texts()
    index_of = {docid: index for index, docid in enumerate(document_ids)}
    held_out, qrels = split.held_out, {qid: data.qrels[qid] for qid in split.held_out}
    held_embeddings = embeddings_of(held_out)
    training_texts = [data.queries[qid] for qid in split.training]
    timings = {"load_and_encode": time.perf_counter() - started}

    key = _run_key(config, encoder.config, data.fingerprint())
    partial = out_dir / "partial" / key
    partial.mkdir(parents=True, exist_ok=True)
    passage_folder = out_dir / "partial" / ("passages-" + _run_key(config, encoder.config, data.fingerprint(),
                                                                   ("attack", "position", "max_queries")))
    shared: dict[str, Any] = {}  # head-independent attacked texts, encoded once
    results: dict[str, Any] = {}
    for head in heads:
        path = partial / f"{head_folder_name(head)}.json"
        if path.is_file():
            results[head] = json.loads(path.read_text())
            logger.info("%s: resumed from %s", head, path)
            continue
        tick = time.perf_counter()
        clean = score(held_embeddings, corpus, head)
        clean_ndcg = ndcg10(clean, held_out, document_ids, qrels)
        entry: dict[str, Any] = {}
        if config.attack in PASSAGE_ATTACKS:
            if config.attack == "cluster-text":
                if "passages" not in shared:
                    shared["passages"] = cluster_passages(training_texts, split.members)
                    shared["passage_embeddings"] = encoder.encode_documents(shared["passages"])
                passages, passage_embeddings = shared["passages"], shared["passage_embeddings"]
            else:
                passages, entry["hotflip"] = _hotflip_passages(encoder.model, config, head, split, embeddings_of, corpus,
                                                               training_texts, passage_folder, show_progress)
                passage_embeddings = encoder.encode_documents(passages)  # the TEXT, re-encoded
            passage_scores = score(held_embeddings, passage_embeddings, head)
            entry["passages"] = passages
            entry["metrics"] = passage_metrics(clean, passage_scores, held_out, document_ids, qrels, clean_ndcg)
            entry["success@10_by_n"] = success_by_count(clean, passage_scores, 10)
            entry["scores"] = passage_scores.tolist()  # [held-out query][passage]
        elif config.attack == "insertion":  # snippets optimised against this head: edited texts per head
            snippets, entry["hotflip"] = _hotflip_passages(encoder.model, config, head, split, embeddings_of, corpus,
                                                           training_texts, passage_folder, show_progress)
            gold = {index_of[docid] for qid in held_out for docid in data.gold(qid)}
            chosen = non_gold_documents(len(texts), gold, len(snippets), config.seed)
            edited_texts = inserted_documents([texts[index] for index in chosen], snippets, config.position, config.seed)
            encoded = encoder.encode_documents(edited_texts)  # only the edited documents, as whole texts
            targets = torch.tensor([chosen] * len(held_out))
            edited = score_each(held_embeddings, [encoded] * len(held_out), head)
            entry["metrics"] = edit_metrics(clean, targets, edited, held_out, document_ids, qrels, clean_ndcg)
            entry["metrics"]["over_length"] = _over_length(encoder.model, edited_texts)
            entry.update(snippets=snippets, position=config.position, edited_texts=edited_texts,
                         targets=[[document_ids[index] for index in chosen]] * len(held_out), scores=edited.tolist())
        else:
            if "targets" not in shared:
                shared.update(_edits(config, data, split, texts, index_of, training_texts))
                flat = [text for row in shared["edited_texts"] for text in row]
                encoded = encoder.encode_documents(flat)  # only the changed documents
                width, rows = len(shared["edited_texts"][0]), len(shared["edited_texts"])
                per_row = [encoded[row * width : (row + 1) * width] for row in range(rows)]
                shared["edited_embeddings"] = per_row if rows == len(held_out) else per_row * len(held_out)
            edited = score_each(held_embeddings, shared["edited_embeddings"], head)
            entry["metrics"] = edit_metrics(clean, shared["targets"], edited, held_out, document_ids, qrels, clean_ndcg)
            entry["appended"] = shared.get("appended")
            entry["targets"] = [[document_ids[index] for index in row] for row in shared["targets"].tolist()]
            entry["scores"] = edited.tolist()  # [held-out query][edited document], the re-encoded documents' scores
        entry["seconds"] = time.perf_counter() - tick
        write_json_atomic(path, entry)
        results[head] = entry
        logger.info("%s %s: %s", config.attack, head, {k: round(v, 4) for k, v in entry["metrics"].items()})
    timings["total"] = time.perf_counter() - started
    report = {
        "config": config.to_dict(), "heads": heads, "data": data.summary(), "encoder": encoder.config,
        "split": {"seed": config.seed, "training_queries": len(split.training), "held_out_queries": len(held_out),
                  "cluster_sizes": [len(members) for members in split.members]},
        "held_out_query_ids": held_out, "results": results, "timings_s": timings,
        "notes": {
            "success@k": "share of held-out queries with at least one adversarial passage in the top k "
                         "(ties go to the real document)",
            "hijack@10": "share of held-out queries whose top 10 holds an edited document that was not in the clean top 10",
            "over_length": "insertion: share of edited documents longer than the model's document length (cut there)",
            "ndcg@10_retained": "nDCG@10 under attack / clean nDCG@10, held-out queries",
            "re-encoding": "attacked documents are text encoded by the model's document encoder; the rest of the "
                           "corpus is the cached clean embeddings",
        },
    }
    write_json_atomic(out_dir / "results.json", report)
    write_text_atomic(out_dir / "table.md", table(report))
    if config.attack in PASSAGE_ATTACKS:
        plot_success(report, out_dir / "success_at_10.png")
    return report


def _over_length(model: TextColBERT, texts: list[str]) -> float:
    """Share of ``texts`` longer than the model's document length (the encoder cuts them: a late snippet is lost)."""
    limit = model.colbert_config.document_max_length - (model._marker_ids[False] is not None)
    lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    return sum(length > limit for length in lengths) / max(1, len(lengths))


def _thresholds(embeddings: list[torch.Tensor], corpus, head: str, depth: int = 10) -> torch.Tensor:
    """``[Nq]``: each query's ``depth``-th best clean document score under ``head`` (what success@depth must beat)."""
    clean = score(embeddings, corpus, head)
    return clean.topk(min(depth, clean.shape[1]), dim=1).values[:, -1]


def _hotflip_passages(model, config: TextAttackConfig, head: str, split: QuerySplit, embeddings_of, corpus,
                      training_texts, folder: Path, show_progress: bool) -> tuple[list[str], list[dict]]:
    """One HotFlip passage per cluster against ``head``: (texts, per-passage statistics); each passage is saved in
    ``folder`` when done, and a rerun takes it from there."""
    folder.mkdir(parents=True, exist_ok=True)
    settings, allowed = config.hotflip(), candidate_vocabulary(model)
    thresholds = _thresholds(embeddings_of(split.training), corpus, head) if settings.objective == "margin" else None
    texts, stats = [], []
    for cluster, members in enumerate(split.members):
        path = folder / f"{head_folder_name(head)}-passage-{cluster}.json"
        if path.is_file():
            done = json.loads(path.read_text())
            texts.append(done["text"])
            stats.append(done)
            continue
        ids = [split.training[index] for index in members]
        cluster_texts = [training_texts[index] for index in members]
        result = hotflip_passage(model, embeddings_of(ids), head, dataclasses.replace(settings, seed=settings.seed + cluster),
                                 words=content_words(cluster_texts, settings.length), allowed=allowed,
                                 show_progress=show_progress, texts=cluster_texts,
                                 thresholds=None if thresholds is None else thresholds[members],
                                 description=f"hotflip {head} passage {cluster + 1}/{len(split.members)}")
        texts.append(result.text)
        stats.append(result.to_dict())
        write_json_atomic(path, stats[-1])
    return texts, stats


def _edits(config: TextAttackConfig, data, split: QuerySplit, texts: list[str], index_of: dict[str, int],
           training_texts: list[str]) -> dict[str, Any]:
    """The edited documents of stuffing / query-text: targets ``[Nq, M]`` and their texts ``[Nq][M]`` (stuffing:
    ``[1][M]``, the same documents for every query)."""
    if config.attack == "stuffing":  # the same N documents for every query, none of them gold for a held-out query
        extra = stuffing_words(training_texts, config.length)
        gold = {index_of[docid] for qid in split.held_out for docid in data.gold(qid)}
        chosen = non_gold_documents(len(texts), gold, config.n, config.seed)
        return {"targets": torch.tensor([chosen] * len(split.held_out)), "appended": extra,
                "edited_texts": [[appended(texts[index], extra) for index in chosen]]}  # one row, shared by every query
    rows, edited = [], []
    for number, qid in enumerate(split.held_out):  # ceiling: the query's own text in N of its non-gold documents
        gold = {index_of[docid] for docid in data.gold(qid)}
        row = non_gold_documents(len(texts), gold, config.n, config.seed + number)
        rows.append(row)
        edited.append([appended(texts[index], data.queries[qid]) for index in row])
    return {"targets": torch.tensor(rows), "edited_texts": edited, "appended": "each held-out query's own text"}


def table(report: dict[str, Any]) -> str:
    """table.md: one row per head."""
    config = report["config"]
    first = next(iter(report["results"].values()))["metrics"]
    names = [name for name in first if name != "median_passage_rank"]
    lines = [f"# {config['attack']} on {report['data']['name']} ({config['model']}), N = {config['n']}, "
             f"L = {config['length']}" + (f" ({config['position']})" if config["attack"] == "insertion" else "")
             + f", {report['split']['held_out_queries']} held-out queries (seed {config['seed']})", "",
             "| head | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for head, entry in report["results"].items():
        lines.append(f"| {head} | " + " | ".join(f"{entry['metrics'][name]:.3f}" for name in names) + " |")
    costs = [(head, entry["hotflip"]) for head, entry in report["results"].items() if entry.get("hotflip")]
    if costs:
        lines += ["", "HotFlip cost per passage (mean over the passages):", ""]
        for head, stats in costs:
            mean = lambda key: sum(stat.get(key, 0) for stat in stats) / len(stats)  # noqa: E731
            lines.append(f"- {head}: {mean('seconds_per_iteration'):.2f} s per iteration, {config['iterations']} "
                         f"iterations, {mean('swaps'):.1f} swaps kept, the last at iteration {mean('last_swap'):.1f}, "
                         f"objective {mean('initial_objective'):.3f} -> {mean('objective'):.3f}")
    return "\n".join(lines) + "\n"
