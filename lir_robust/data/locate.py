"""What a data spec names (a local folder, a bare collection name under the data root, a Hub name) and its format,
decided from file names alone, and the one loader that reads whichever it is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lir_robust.core.errors import DataError, DataNotFoundError
from lir_robust.core.huggingface import hub_offline, looks_like_path
from lir_robust.data.beir import load_beir
from lir_robust.data.collection import BEIR_LAYOUT, RetrievalSet, resolve_collection
from lir_robust.data.vidore import load_vidore_v1, load_vidore_v2, no_folder, unreachable, v1_how, v2_how

__all__ = ["Format", "DataLocation", "locate_data", "load_retrieval_set"]


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
        if looks_like_path(text):
            raise DataNotFoundError(f"{text!r} not found: {no_folder(text)} (expected BEIR layout: {BEIR_LAYOUT})")
        chosen = data_format if data_format != "auto" else ("vidore-v2" if text.rstrip("/").endswith("_v2") else "vidore-v1")
        if chosen == "beir":
            raise DataNotFoundError(
                f"{text!r} not found: {no_folder(text)}; BEIR collections load from a local folder only (download it "
                "and pass its path)"
            )
        if hub_offline(datasets=True):
            hub_split = split or "train"  # no split: training data, whose Hub data sets have a train split
            how = v2_how(text, hub_split) if chosen == "vidore-v2" else v1_how(text, hub_split)
            raise unreachable(text, "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set", how)
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
