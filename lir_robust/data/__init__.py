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
loader; a bare name such as ``cranfield`` resolves under the data root (``data_root=`` / ``--data-root``, else
``LIR_ROBUST_DATA_ROOT``, else ``../shared/data`` relative to the current folder when it exists).

    collection.py   RetrievalSet, document_text, the data root and bare-name resolution
    beir.py         local BEIR folders
    vidore.py       ViDoRe v1 / v2 through ``datasets`` (Hub name or save_to_disk copy)
    locate.py       locate_data (what a spec names) and load_retrieval_set (the one entry point)
"""

from __future__ import annotations

from lir_robust.core.errors import DataError, DataNotFoundError, HubUnreachableError
from lir_robust.data.beir import load_beir, read_beir_corpus, read_beir_qrels, read_beir_queries
from lir_robust.data.collection import (
    BEIR_LAYOUT,
    DATA_ROOT_ENV,
    DEFAULT_DATA_ROOT,
    RetrievalSet,
    data_root,
    document_text,
    resolve_collection,
)
from lir_robust.data.locate import DataLocation, Format, load_retrieval_set, locate_data
from lir_robust.data.vidore import load_hub_dataset, load_local_dataset, load_vidore_v1, load_vidore_v2

__all__ = [
    "RetrievalSet",
    "DataError",
    "DataNotFoundError",
    "HubUnreachableError",
    "DataLocation",
    "Format",
    "locate_data",
    "DATA_ROOT_ENV",
    "DEFAULT_DATA_ROOT",
    "BEIR_LAYOUT",
    "data_root",
    "resolve_collection",
    "load_beir",
    "read_beir_corpus",
    "read_beir_queries",
    "read_beir_qrels",
    "load_hub_dataset",
    "load_local_dataset",
    "load_vidore_v1",
    "load_vidore_v2",
    "load_retrieval_set",
    "document_text",
]
