"""Local BEIR folders: ``corpus.jsonl`` (``{"_id", "title", "text"}``), ``queries.jsonl`` (``{"_id", "text"}``),
``qrels/<split>.tsv`` (header ``query-id  corpus-id  score``), e.g. ``../shared/data/cranfield``; every bad line is a
DataError naming the file and the line."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from lir_robust.core.errors import DataError
from lir_robust.data.collection import BEIR_LAYOUT, RetrievalSet

__all__ = ["read_beir_corpus", "read_beir_queries", "read_beir_qrels", "load_beir"]

logger = logging.getLogger(__name__)


def _read_jsonl(path: Path, required: Iterable[str]) -> Iterable[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(f"missing file {path} (expected BEIR layout: {BEIR_LAYOUT})")
    required = tuple(required)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path} line {number}: invalid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
            missing = [key for key in required if key not in record]
            if missing:
                raise DataError(f"{path} line {number}: missing field(s) {missing} (has {sorted(record)})")
            yield number, record


def _read_qrels_tsv(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        available = sorted(p.name for p in path.parent.glob("*.tsv")) if path.parent.is_dir() else []
        raise DataError(
            f"missing file {path} (expected BEIR layout: {BEIR_LAYOUT}); qrels files present: {available or 'none'}"
        )
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty (expected a header: query-id, corpus-id, score)")
        if [column.strip().lower() for column in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise DataError(f"{path} line 1: expected the header 'query-id<TAB>corpus-id<TAB>score', got {header!r}")
        for number, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise DataError(f"{path} line {number}: expected 3 tab-separated columns, got {row!r}")
            qid, docid, grade_text = row[0].strip(), row[1].strip(), row[2].strip()
            try:
                grade = int(float(grade_text))
            except ValueError:
                raise DataError(f"{path} line {number}: score must be a number, got {grade_text!r}") from None
            qrels.setdefault(qid, {})[docid] = grade
    return qrels


def read_beir_corpus(folder: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``<folder>/corpus.jsonl`` -> ``{doc id: {"title", "text"}}`` (clear errors on bad lines and duplicate ids)."""
    folder = Path(folder).expanduser()
    corpus: dict[str, dict[str, str]] = {}
    for number, record in _read_jsonl(folder / "corpus.jsonl", ("_id",)):
        docid = str(record["_id"])
        if docid in corpus:
            raise DataError(f"{folder / 'corpus.jsonl'} line {number}: duplicate _id {docid!r}")
        corpus[docid] = {"title": str(record.get("title") or ""), "text": str(record.get("text") or "")}
    return corpus


def read_beir_queries(folder: str | os.PathLike) -> dict[str, str]:
    """``<folder>/queries.jsonl`` -> ``{query id: text}``."""
    folder = Path(folder).expanduser()
    queries: dict[str, str] = {}
    for number, record in _read_jsonl(folder / "queries.jsonl", ("_id", "text")):
        qid = str(record["_id"])
        if qid in queries:
            raise DataError(f"{folder / 'queries.jsonl'} line {number}: duplicate _id {qid!r}")
        queries[qid] = str(record["text"])
    return queries


def read_beir_qrels(folder: str | os.PathLike, split: str = "test") -> dict[str, dict[str, int]]:
    """``<folder>/qrels/<split>.tsv`` -> ``{query id: {doc id: grade}}``."""
    return _read_qrels_tsv(Path(folder).expanduser() / "qrels" / f"{split}.tsv")


def load_beir(folder: str | os.PathLike, split: str = "test", name: str | None = None) -> RetrievalSet:
    """A local BEIR folder -> RetrievalSet (ids as strings, grades as ints)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder (expected BEIR layout: {BEIR_LAYOUT})")
    corpus = read_beir_corpus(folder)
    queries = read_beir_queries(folder)
    qrels = read_beir_qrels(folder, split)
    # BEIR query files often hold queries of every split: keep those of this split's qrels (all if none match).
    judged = [qid for qid in queries if qid in qrels]
    if judged and len(judged) < len(queries):
        logger.info("%s: keeping the %d of %d queries that appear in qrels/%s.tsv", folder.name, len(judged), len(queries), split)
        queries = {qid: queries[qid] for qid in judged}
    return RetrievalSet(
        name=name or folder.name, corpus=corpus, queries=queries, qrels=qrels, modality="text",
        source=f"beir:{folder}:{split}",
    )
