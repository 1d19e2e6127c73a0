"""The retrieval collection type (corpus, queries, graded qrels), a document's text, and where bare collection
names resolve: the data root (``--data-root`` / ``data_root=``, else ``$LIR_ROBUST_DATA_ROOT``, else
``../shared/data`` relative to the current folder when it exists).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lir_robust.core.errors import DataError, DataNotFoundError

__all__ = [
    "RetrievalSet",
    "document_text",
    "DATA_ROOT_ENV",
    "DEFAULT_DATA_ROOT",
    "BEIR_LAYOUT",
    "data_root",
    "resolve_collection",
]

DATA_ROOT_ENV = "LIR_ROBUST_DATA_ROOT"
BEIR_LAYOUT = (
    "<name>/corpus.jsonl ({\"_id\", \"title\", \"text\"} per line), <name>/queries.jsonl ({\"_id\", \"text\"} per line), "
    "<name>/qrels/<split>.tsv (tab-separated with header: query-id, corpus-id, score)"
)
PUBLIC_COPIES = {
    "cranfield": "http://ir.dcs.gla.ac.uk/resources/test_collections/cran/ (converted to BEIR layout as described in "
    "../shared/data/cranfield/SOURCE.md); ir_datasets also serves it as 'cranfield'",
    "med": "http://ir.dcs.gla.ac.uk/resources/test_collections/medl/ (converted to BEIR layout as described in "
    "../shared/data/med/SOURCE.md)",
}
GENERIC_PUBLIC_COPIES = (
    "BEIR collections: https://github.com/beir-cellar/beir (zip files) or the Hugging Face Hub datasets BeIR/<name> "
    "and BeIR/<name>-qrels; ViDoRe: the Hub datasets vidore/<name> (pass the Hub name, or a local save_to_disk copy)"
)


@dataclass
class RetrievalSet:
    """A retrieval test collection.

    ``corpus``: document id -> ``{"title": str, "text": str}`` (text) or ``{"image": PIL.Image.Image}`` (pages);
    ``queries``: query id -> text; ``qrels``: query id -> {document id: grade} (graded, higher = more relevant; grade
    <= 0 means judged not relevant). Dict order is kept and defines the order of documents / queries everywhere.
    """

    name: str
    corpus: dict[str, dict[str, Any]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    modality: Literal["text", "image"] = "text"
    source: str = ""
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ views
    @property
    def document_ids(self) -> list[str]:
        return list(self.corpus)

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    @property
    def judged_query_ids(self) -> list[str]:
        """Queries with at least one relevant (grade > 0) document, in query order: the ones evaluated."""
        return [qid for qid in self.queries if any(grade > 0 for grade in self.qrels.get(qid, {}).values())]

    def gold(self, query_id: str) -> set[str]:
        """Relevant (grade > 0) document ids of a query."""
        return {docid for docid, grade in self.qrels.get(query_id, {}).items() if grade > 0}

    def document_texts(self) -> list[str]:
        """Text of every document in corpus order (``title + " " + text``; title omitted when empty)."""
        if self.modality != "text":
            raise DataError(f"{self.name} holds images, not text")
        return [document_text(document) for document in self.corpus.values()]

    def document_images(self) -> list[Any]:
        """PIL images of every page in corpus order."""
        if self.modality != "image":
            raise DataError(f"{self.name} holds text, not images")
        return [document["image"] for document in self.corpus.values()]

    def subset(self, max_queries: int | None = None) -> "RetrievalSet":
        """The first ``max_queries`` judged queries (all documents kept): for quick runs."""
        if max_queries is None:
            return self
        keep = self.judged_query_ids[:max_queries]
        return RetrievalSet(
            name=f"{self.name}[:{max_queries}q]",
            corpus=self.corpus,
            queries={qid: self.queries[qid] for qid in keep},
            qrels={qid: self.qrels[qid] for qid in keep},
            modality=self.modality,
            source=self.source,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "modality": self.modality,
            "documents": len(self.corpus),
            "queries": len(self.queries),
            "judged_queries": len(self.judged_query_ids),
            "qrel_rows": sum(len(row) for row in self.qrels.values()),
            "fingerprint": self.fingerprint(),
        }

    # ------------------------------------------------------------------ checks and identity
    def validate(self) -> None:
        """Raise DataError for an empty corpus / query set or qrels that name unknown ids."""
        if not self.corpus:
            raise DataError(f"{self.name}: the corpus is empty ({self.source or 'no source'})")
        if not self.queries:
            raise DataError(f"{self.name}: there are no queries ({self.source or 'no source'})")
        unknown_queries = [qid for qid in self.qrels if qid not in self.queries]
        unknown_documents = sorted({docid for row in self.qrels.values() for docid in row if docid not in self.corpus})
        if unknown_queries or unknown_documents:
            parts = []
            if unknown_queries:
                parts.append(f"{len(unknown_queries)} unknown query ids (e.g. {unknown_queries[:5]})")
            if unknown_documents:
                parts.append(f"{len(unknown_documents)} unknown corpus ids (e.g. {unknown_documents[:5]})")
            raise DataError(f"{self.name}: the qrels name {' and '.join(parts)} ({self.source or 'no source'})")
        if not self.judged_query_ids:
            raise DataError(f"{self.name}: no query has a relevant document (grade > 0) in the qrels")

    def fingerprint(self) -> str:
        """sha256 (16 hex) of the documents, queries and qrels in order: identifies the data in cache keys."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for docid, document in self.corpus.items():
                digest.update(b"\x00d" + docid.encode())
                if "image" in document:
                    image = document["image"]
                    digest.update(f"{image.mode}{image.size}".encode())
                    digest.update(image.tobytes())
                else:
                    digest.update(b"\x00" + document.get("title", "").encode() + b"\x00" + document.get("text", "").encode())
            for qid, text in self.queries.items():
                digest.update(b"\x00q" + qid.encode() + b"\x00" + text.encode())
            for qid in sorted(self.qrels):
                for docid, grade in sorted(self.qrels[qid].items()):
                    digest.update(f"\x00r{qid}\x00{docid}\x00{grade}".encode())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint


def document_text(document: dict[str, Any]) -> str:
    """``title + " " + text`` (the title alone or the text alone when the other is empty)."""
    title, text = (document.get("title") or "").strip(), (document.get("text") or "").strip()
    return f"{title} {text}".strip() if title else text


# In this project the collections lie in ../shared/data beside the checkout: the default when the command runs in the
# checkout's root (as `make` and the tests do) and nothing else is set. Relative to the current folder, read at each call.
DEFAULT_DATA_ROOT = Path("..") / "shared" / "data"


def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """The folder bare collection names resolve in: ``root`` (--data-root), else ``$LIR_ROBUST_DATA_ROOT``, else
    ``../shared/data`` relative to the current folder when it exists, else None."""
    value = root if root is not None else os.environ.get(DATA_ROOT_ENV)
    if value:
        return Path(value).expanduser()
    default = Path.cwd() / DEFAULT_DATA_ROOT
    return default.resolve() if default.is_dir() else None


def resolve_collection(spec: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A local folder from a path or a bare collection name under the data root; DataError naming both if absent."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    text = str(spec)
    if "/" in text or "\\" in text:
        raise DataError(f"{text} does not exist (expected BEIR layout: {BEIR_LAYOUT})")
    base = data_root(root)
    if base is None or not (base / text).exists():
        raise _missing_collection(text, base)
    return base / text


def _missing_collection(name: str, root: Path | None) -> DataError:
    where = (
        f"looked for the folder {root / name} (set {DATA_ROOT_ENV} or pass --data-root / data_root= to look elsewhere)"
        if root is not None
        else f"no data root is set (set {DATA_ROOT_ENV}=/path/to/collections or pass --data-root / data_root=; "
        f"without them {DEFAULT_DATA_ROOT.as_posix()} relative to the current folder is used when it exists)"
    )
    public = PUBLIC_COPIES.get(name.lower(), GENERIC_PUBLIC_COPIES)
    return DataNotFoundError(
        f"collection {name!r} not found: {where}. Expected BEIR layout: {BEIR_LAYOUT}. "
        f"Public copies: {public}. You can also pass the folder's path directly."
    )
