"""Retrieval data sets: one type (corpus, queries, graded qrels) and loaders for BEIR folders and ViDoRe.

Sources, all giving a :class:`RetrievalSet`:

- a local BEIR folder: ``corpus.jsonl`` (``{"_id", "title", "text"}``), ``queries.jsonl`` (``{"_id", "text"}``),
  ``qrels/<split>.tsv`` (header ``query-id  corpus-id  score``), e.g. ``../shared/data/cranfield``;
- ViDoRe v1 (QA format, e.g. ``vidore/docvqa_test_subsampled``): one split with columns ``query``, ``image``,
  ``image_filename`` (and ``answer``); pages are keyed by ``image_filename``, queries are deduplicated;
- ViDoRe v2 (BEIR format, e.g. ``vidore/biomedical_lectures_v2``): configs ``corpus`` (``corpus-id``, ``image``),
  ``queries`` (``query-id``, ``query``, ``language``), ``qrels`` (``query-id``, ``corpus-id``, ``score``), with an
  optional language filter.

ViDoRe loads by Hub name through ``datasets`` or from a local copy written with ``save_to_disk`` (v1: the split's
dataset folder; v2: a folder holding ``corpus/``, ``queries/`` and ``qrels/``). :func:`load_retrieval_set` picks the
loader; a bare name such as ``cranfield`` resolves under the data root (``LIR_ROBUST_DATA_ROOT`` or ``data_root=``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from lir_robust.core.huggingface import env_flag

__all__ = [
    "RetrievalSet",
    "DataError",
    "DataNotFoundError",
    "HubUnreachableError",
    "DataLocation",
    "locate_data",
    "DATA_ROOT_ENV",
    "data_root",
    "load_beir",
    "load_vidore_v1",
    "load_vidore_v2",
    "load_retrieval_set",
    "document_text",
]

logger = logging.getLogger(__name__)

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


class DataError(ValueError):
    """A data set is missing or malformed; the message names the file, line or ids at fault."""


class DataNotFoundError(DataError):
    """Neither a local folder nor (read as a Hub name) a data set on the Hub; the message names both readings."""


class HubUnreachableError(DataError):
    """A data set was named by its Hub id but the Hugging Face Hub cannot be reached."""


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


# ---------------------------------------------------------------------------------------------------------------
# Data root and name resolution
# ---------------------------------------------------------------------------------------------------------------


# In this project the collections lie in ../shared/data beside the repository; used when nothing else is set.
PROJECT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """The folder bare collection names resolve in: ``root``, else ``$LIR_ROBUST_DATA_ROOT``, else the project's
    ``../shared/data`` when it exists, else None."""
    value = root if root is not None else os.environ.get(DATA_ROOT_ENV)
    if value:
        return Path(value).expanduser()
    return PROJECT_DATA_ROOT if PROJECT_DATA_ROOT.is_dir() else None


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
        else f"no data root is set (set {DATA_ROOT_ENV}=/path/to/collections or pass --data-root / data_root=)"
    )
    public = PUBLIC_COPIES.get(name.lower(), GENERIC_PUBLIC_COPIES)
    return DataNotFoundError(
        f"collection {name!r} not found: {where}. Expected BEIR layout: {BEIR_LAYOUT}. "
        f"Public copies: {public}. You can also pass the folder's path directly."
    )


# ---------------------------------------------------------------------------------------------------------------
# BEIR
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# ViDoRe (through `datasets`)
# ---------------------------------------------------------------------------------------------------------------


def _hub_offline() -> bool:
    return env_flag("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _no_folder(name: str) -> str:
    return f"there is no folder {str(Path(name).expanduser().absolute())!r}"


def _unreachable(name: str, reason: str, how: str) -> HubUnreachableError:
    return HubUnreachableError(
        f"data set {name!r} not found here: {_no_folder(name)}, and read as a Hub name it cannot be fetched: the "
        f"Hugging Face Hub is unreachable ({reason}). Point at a local copy instead: on a machine with Hub access run "
        f"{how}, copy that folder here and pass its path (--data /path/to/copy)."
    )


def _not_on_hub(name: str, reason: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"data set {name!r} not found: {_no_folder(name)}, and the Hugging Face Hub has no data set of that name "
        f"({reason}). Check the spelling of the folder or of the Hub name (owner/name), or log in "
        "(`hf auth login`) if it is private or gated."
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:200]}" if text else type(error).__name__


def _is_not_found(error: BaseException) -> bool:
    """True when a Hub error (or one it was raised from) says the data set / revision / file does not exist."""
    from datasets.exceptions import FileNotFoundDatasetsError

    names = ("RepositoryNotFoundError", "RevisionNotFoundError")
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, FileNotFoundDatasetsError) or type(error).__name__ in names:
            return True
        error = error.__cause__ or error.__context__
    return False


def _v1_how(name: str, split: str) -> str:
    return f"`datasets.load_dataset({name!r}, split={split!r}).save_to_disk('copy')`"


def _v2_how(name: str, split: str) -> str:
    return (
        f"`for c in ('corpus', 'queries', 'qrels'): datasets.load_dataset({name!r}, c, split={split!r})"
        ".save_to_disk(f'copy/{c}')`"
    )


def load_hub_dataset(name: str, config: str | None, split: str, how: str):
    """``datasets.load_dataset(name, config, split=split)``; offline or unreachable -> HubUnreachableError at once,
    whose message ends with ``how`` (the command that makes a local copy); a name the Hub does not know (or a
    revision / file it does not have) -> DataNotFoundError naming both readings (local folder and Hub name)."""
    if _hub_offline():
        raise _unreachable(name, "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set", how)
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except (ConnectionError, TimeoutError, OSError) as error:  # DatasetNotFoundError is an OSError too: tell them apart
        if _is_not_found(error):
            raise _not_on_hub(name, _first_line(error)) from None
        raise _unreachable(name, _first_line(error), how) from None


def load_local_dataset(path: Path, split: str):
    """A ``datasets.save_to_disk`` folder (Dataset, or DatasetDict holding ``split``)."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{path} holds splits {sorted(loaded)}, not {split!r}")
        loaded = loaded[split]
    return loaded


def _columns(dataset, needed: Iterable[str], where: str) -> None:
    missing = [column for column in needed if column not in dataset.column_names]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing} (has {dataset.column_names})")


def _as_image(value: Any, where: str):
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and value.get("bytes") is not None:
        return Image.open(io.BytesIO(value["bytes"]))
    raise DataError(f"{where}: expected an image, got {type(value).__name__}")


def load_vidore_v1(name_or_path: str | os.PathLike, split: str = "test", name: str | None = None) -> RetrievalSet:
    """ViDoRe v1 (QA format) by Hub name or local ``save_to_disk`` folder -> RetrievalSet of page images.

    Pages are keyed by ``image_filename`` (first occurrence kept); identical query texts become one query
    (``q0``, ``q1``, ... in order of appearance) whose gold pages are all the rows it appears with; rows without a
    query only add their page to the corpus.
    """
    path = Path(str(name_or_path)).expanduser()
    label = name or (path.name if path.exists() else str(name_or_path))
    if path.exists():
        dataset = load_local_dataset(path, split)
        source = f"vidore-v1:{path}:{split}"
    else:
        dataset = load_hub_dataset(str(name_or_path), None, split, _v1_how(str(name_or_path), split))
        source = f"vidore-v1:{name_or_path}:{split}"
    _columns(dataset, ("query", "image", "image_filename"), source)
    corpus: dict[str, dict[str, Any]] = {}
    queries: dict[str, str] = {}
    by_text: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for row_number, row in enumerate(dataset):
        filename = str(row["image_filename"])
        if filename not in corpus:
            corpus[filename] = {"image": _as_image(row["image"], f"{source} row {row_number}")}
        query = row["query"]
        if query is None or not str(query).strip():
            continue
        query = str(query)
        if query not in by_text:
            by_text[query] = f"q{len(by_text)}"
            queries[by_text[query]] = query
        qrels.setdefault(by_text[query], {})[filename] = 1
    return RetrievalSet(name=label, corpus=corpus, queries=queries, qrels=qrels, modality="image", source=source)


def load_vidore_v2(
    name_or_path: str | os.PathLike, language: str | None = None, split: str = "test", name: str | None = None
) -> RetrievalSet:
    """ViDoRe v2 (BEIR format: configs corpus / queries / qrels) by Hub name or local folder -> RetrievalSet.

    ``language`` keeps only queries whose ``language`` column equals it (e.g. "english"); qrels follow the queries.
    A local copy is a folder with ``corpus/``, ``queries/`` and ``qrels/``, each written by ``save_to_disk``.
    """
    path = Path(str(name_or_path)).expanduser()
    label = name or (path.name if path.exists() else str(name_or_path))
    parts = {}
    for config in ("corpus", "queries", "qrels"):
        if path.exists():
            if not (path / config).exists():
                raise DataError(
                    f"{path} is not a ViDoRe v2 copy: missing {path / config} (expected corpus/, queries/ and qrels/, "
                    "each written by datasets' save_to_disk)"
                )
            parts[config] = load_local_dataset(path / config, split)
        else:
            parts[config] = load_hub_dataset(str(name_or_path), config, split, _v2_how(str(name_or_path), split))
    source = f"vidore-v2:{name_or_path}:{split}" + (f":{language}" if language else "")
    _columns(parts["corpus"], ("corpus-id", "image"), f"{source} corpus")
    _columns(parts["queries"], ("query-id", "query"), f"{source} queries")
    _columns(parts["qrels"], ("query-id", "corpus-id", "score"), f"{source} qrels")
    corpus = {
        str(row["corpus-id"]): {"image": _as_image(row["image"], f"{source} corpus row {number}")}
        for number, row in enumerate(parts["corpus"])
    }
    query_rows = parts["queries"]
    if language is not None:
        if "language" not in query_rows.column_names:
            raise DataError(f"{source}: a language filter was given but the queries have no 'language' column")
        languages = sorted(set(query_rows["language"]))
        query_rows = query_rows.filter(lambda row: row["language"] == language)
        if len(query_rows) == 0:
            raise DataError(f"{source}: no query in language {language!r}; languages present: {languages}")
    queries = {str(row["query-id"]): str(row["query"]) for row in query_rows}
    qrels: dict[str, dict[str, int]] = {}
    for row in parts["qrels"]:
        qid = str(row["query-id"])
        if qid in queries:
            qrels.setdefault(qid, {})[str(row["corpus-id"])] = int(row["score"])
    return RetrievalSet(name=label, corpus=corpus, queries=queries, qrels=qrels, modality="image", source=source)


# ---------------------------------------------------------------------------------------------------------------
# One entry point
# ---------------------------------------------------------------------------------------------------------------

Format = Literal["auto", "beir", "vidore-v1", "vidore-v2"]


def _local_format(path: Path) -> str:
    if (path / "corpus.jsonl").exists():
        return "beir"
    if (path / "corpus").exists() and (path / "queries").exists():
        return "vidore-v2"
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        return "vidore-v1"
    raise DataError(
        f"cannot tell the format of {path}: expected a BEIR folder ({BEIR_LAYOUT}), a ViDoRe v2 copy (corpus/, "
        "queries/, qrels/ written by save_to_disk) or a ViDoRe v1 save_to_disk folder"
    )


@dataclass(frozen=True)
class DataLocation:
    """Where a data spec points: a local ``folder`` or a ``hub_name``, and the format it will be read in."""

    spec: str
    data_format: str  # beir | vidore-v1 | vidore-v2
    folder: Path | None = None
    hub_name: str | None = None


def _looks_like_path(text: str) -> bool:
    """A spec that can only be a path (``./x``, ``/x``, ``~/x``, ``a/b/c``, ``x/``), never a Hub name (owner/name)."""
    return text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1 or text.endswith("/")


def locate_data(
    spec: str | os.PathLike,
    *,
    data_format: Format = "auto",
    split: str | None = "test",
    root: str | os.PathLike | None = None,
) -> DataLocation:
    """Decide what ``spec`` names, reading nothing but file names (commands call it before loading anything).

    - an existing path is a folder, whatever it looks like (``data/mycoll`` relative to the working folder too);
      its format is detected (BEIR, ViDoRe v2 copy, ViDoRe v1 copy) unless ``data_format`` says; a BEIR folder must
      hold corpus.jsonl, and when ``split`` is given queries.jsonl and qrels/<split>.tsv (``split=None``: training
      data, which needs the corpus only);
    - a bare name without ``/`` (``cranfield``): the folder ``<data root>/<name>``, or DataError naming both;
    - a missing path that cannot be a Hub name (``./x``, ``/x``, ``a/b/c``): DataNotFoundError;
    - ``owner/name`` that is no folder here: a Hub name (ViDoRe v2 when ``data_format="vidore-v2"`` or the name ends
      in ``_v2``, else v1); offline this raises HubUnreachableError at once, naming both readings.
    """
    text = str(spec)
    path = Path(text).expanduser()
    if not text.strip():
        raise DataError("expected a folder, a collection name or a Hub name, got an empty string")
    if not path.exists() and ("/" in text or "\\" in text):
        if _looks_like_path(text):
            raise DataNotFoundError(f"{text!r} not found: {_no_folder(text)} (expected BEIR layout: {BEIR_LAYOUT})")
        chosen = data_format if data_format != "auto" else ("vidore-v2" if text.rstrip("/").endswith("_v2") else "vidore-v1")
        if chosen == "beir":
            raise DataNotFoundError(
                f"{text!r} not found: {_no_folder(text)}; BEIR collections load from a local folder only (download it "
                "and pass its path)"
            )
        if _hub_offline():
            hub_split = split or "train"  # no split: training data, whose Hub data sets have a train split
            how = _v2_how(text, hub_split) if chosen == "vidore-v2" else _v1_how(text, hub_split)
            raise _unreachable(text, "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set", how)
        return DataLocation(text, chosen, hub_name=text)
    folder = resolve_collection(text, root)
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not a folder (expected BEIR layout: {BEIR_LAYOUT})")
    chosen = _local_format(folder) if data_format == "auto" else data_format
    if chosen not in ("beir", "vidore-v1", "vidore-v2"):
        raise DataError(f"unknown data format {data_format!r}; choose auto, beir, vidore-v1 or vidore-v2")
    if chosen == "beir":
        needed = [folder / "corpus.jsonl"]
        if split is not None:
            needed += [folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"]
        missing = [str(file) for file in needed if not file.is_file()]
        if missing:
            present = sorted(p.name for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
            raise DataError(
                f"missing file(s) {missing} (expected BEIR layout: {BEIR_LAYOUT}); qrels files present: {present or 'none'}"
            )
    return DataLocation(text, chosen, folder=folder)


def load_retrieval_set(
    spec: str | os.PathLike,
    *,
    data_format: Format = "auto",
    split: str = "test",
    language: str | None = None,
    root: str | os.PathLike | None = None,
) -> RetrievalSet:
    """Load by path, bare name (under the data root) or Hub name (what each names: :func:`locate_data`).

    - an existing folder: its format is detected (BEIR, ViDoRe v2 copy, ViDoRe v1 copy) unless ``data_format`` says;
    - a bare name without ``/`` (``cranfield``): the folder ``<data root>/<name>``; a clear error when absent;
    - ``owner/name`` that is no folder here: a ViDoRe data set on the Hub (v2 when ``data_format="vidore-v2"`` or the
      name ends in ``_v2``, else v1); offline this fails at once, saying how to use a local copy; a name the Hub does
      not know gives DataNotFoundError, an unreachable Hub HubUnreachableError.
    """
    located = locate_data(spec, data_format=data_format, split=split, root=root)
    chosen, target = located.data_format, located.folder if located.folder is not None else located.hub_name
    if chosen == "beir":
        if language is not None:
            raise DataError("a language filter applies to ViDoRe v2 only")
        return load_beir(target, split=split)
    if chosen == "vidore-v1":
        if language is not None:
            raise DataError("a language filter applies to ViDoRe v2 only (v1 is English)")
        return load_vidore_v1(target, split=split)
    return load_vidore_v2(target, language=language, split=split)
