"""ViDoRe through ``datasets``, by Hub name or from a local ``save_to_disk`` copy.

- ViDoRe v1 (QA format, e.g. ``vidore/docvqa_test_subsampled``): one split with columns ``query``, ``image``,
  ``image_filename`` (and ``answer``); pages are keyed by ``image_filename``, queries are deduplicated; a local copy is
  the split's dataset folder;
- ViDoRe v2 (BEIR format, e.g. ``vidore/biomedical_lectures_v2``): configs ``corpus`` (``corpus-id``, ``image``),
  ``queries`` (``query-id``, ``query``, ``language``), ``qrels`` (``query-id``, ``corpus-id``, ``score``), with an
  optional language filter; a local copy is a folder holding ``corpus/``, ``queries/`` and ``qrels/``.

Offline or with the Hub unreachable, a Hub name fails at once with HubUnreachableError saying how to make a local
copy; a name the Hub does not know gives DataNotFoundError naming both readings (local folder and Hub name).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Iterable

from lir_robust.core.errors import DataError, DataNotFoundError, HubUnreachableError, one_line
from lir_robust.core.huggingface import hub_offline
from lir_robust.data.collection import RetrievalSet

__all__ = ["load_hub_dataset", "load_local_dataset", "load_vidore_v1", "load_vidore_v2", "v1_how", "v2_how", "unreachable", "no_folder"]


def no_folder(name: str) -> str:
    return f"there is no folder {str(Path(name).expanduser().absolute())!r}"


def unreachable(name: str, reason: str, how: str) -> HubUnreachableError:
    return HubUnreachableError(
        f"data set {name!r} not found here: {no_folder(name)}, and read as a Hub name it cannot be fetched: the "
        f"Hugging Face Hub is unreachable ({reason}). Point at a local copy instead: on a machine with Hub access run "
        f"{how}, copy that folder here and pass its path (--data /path/to/copy)."
    )


def _not_on_hub(name: str, reason: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"data set {name!r} not found: {no_folder(name)}, and the Hugging Face Hub has no data set of that name "
        f"({reason}). Check the spelling of the folder or of the Hub name (owner/name), or log in "
        "(`hf auth login`) if it is private or gated."
    )


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


def v1_how(name: str, split: str) -> str:
    return f"`datasets.load_dataset({name!r}, split={split!r}).save_to_disk('copy')`"


def v2_how(name: str, split: str) -> str:
    return (
        f"`for c in ('corpus', 'queries', 'qrels'): datasets.load_dataset({name!r}, c, split={split!r})"
        ".save_to_disk(f'copy/{c}')`"
    )


def load_hub_dataset(name: str, config: str | None, split: str, how: str):
    """``datasets.load_dataset(name, config, split=split)``; offline or unreachable -> HubUnreachableError at once,
    whose message ends with ``how`` (the command that makes a local copy); a name the Hub does not know (or a
    revision / file it does not have) -> DataNotFoundError naming both readings (local folder and Hub name)."""
    if hub_offline(datasets=True):
        raise unreachable(name, "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set", how)
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except (ConnectionError, TimeoutError, OSError) as error:  # DatasetNotFoundError is an OSError too: tell them apart
        if _is_not_found(error):
            raise _not_on_hub(name, one_line(error)) from None
        raise unreachable(name, one_line(error), how) from None


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
        dataset = load_hub_dataset(str(name_or_path), None, split, v1_how(str(name_or_path), split))
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
            parts[config] = load_hub_dataset(str(name_or_path), config, split, v2_how(str(name_or_path), split))
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
