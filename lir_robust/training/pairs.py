"""Training pairs: where fine-tuning's (query, document) pairs come from, held-out validation pairs, and TF-IDF
hard negatives.

Training data (:func:`load_training_pairs`):

- a BEIR folder with ``qrels/train.tsv``: its training queries and their relevant documents;
- a BEIR folder without a train split: (title -> text) pairs built from the corpus, with the copy of the title that
  starts many abstracts (Cranfield's all do) stripped, empty documents skipped; or inverse-cloze pairs (one sentence
  of the abstract -> the title and the rest of it); or independent crops (Contriever's: two random spans of each
  document, one the query and one the positive), which any corpus of documents of a few words allows. Inverse cloze
  (the default) falls back to crops, with a logged warning, on a corpus where it builds no pair (no title, no
  document of two sentences). ``queries.jsonl`` is never read, so the evaluation queries can never leak into
  training; the caveat is that every corpus document is seen in training;
- ``vidore/colpali_train_set`` (or any Hub dataset / ``datasets.save_to_disk`` folder with ``query`` and ``image``
  columns) for colpali-engine models.
"""

from __future__ import annotations

import difflib
import logging
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from lir_robust.core.huggingface import looks_like_path
from lir_robust.data import (
    DATA_ROOT_ENV,
    DataError,
    data_root,
    document_text,
    load_hub_dataset,
    load_local_dataset,
    read_beir_corpus,
    read_beir_qrels,
    read_beir_queries,
    resolve_collection,
)

__all__ = [
    "VIDORE_TRAIN_SET",
    "DataLoadError",
    "TrainingPair",
    "TrainingData",
    "strip_title_copy",
    "title_text_pairs",
    "split_sentences",
    "sentence_text_pairs",
    "CROP_SPAN_RATIO",
    "CROP_MIN_SPAN_WORDS",
    "CROP_MIN_WORDS",
    "crop_span",
    "crop_pairs",
    "PSEUDO_QUERIES",
    "PAIR_KINDS",
    "resolve_beir_folder",
    "training_document_text",
    "load_training_pairs",
    "split_validation",
    "mine_hard_negatives",
]

VIDORE_TRAIN_SET = "vidore/colpali_train_set"

logger = logging.getLogger(__name__)


class DataLoadError(DataError):
    """Training data could not be found or loaded; the message says what was expected and where to get it.

    A DataError, like the errors of :mod:`lir_robust.data` whose loaders it uses."""



@dataclass
class TrainingPair:
    """One training example: a query (text), its positive document (text or PIL image), optional hard negatives."""

    query: str
    document: Any
    document_id: str = ""
    negatives: list[Any] = field(default_factory=list)


@dataclass
class TrainingData:
    """Pairs plus a one-line account of where they came from (saved in the training config)."""

    pairs: list[TrainingPair]
    source: str
    kind: str  # "train-split" | "title-text" | "sentence-text" | "independent-crops" | "image-pairs"
    documents_seen: int


def strip_title_copy(title: str, text: str, min_match: float = 0.8) -> str:
    """``text`` without the copy of ``title`` it starts with (if it does); otherwise ``text`` unchanged.

    Titles and texts are compared ignoring case and whitespace. An exact prefix is cut; a near copy (Cranfield has
    two, e.g. ``3.5 and 8.5`` in the title and ``3. 5 and 8 .5`` in the abstract) is cut when at least ``min_match``
    of the title's characters align with the start of the text, at the end of the word where the aligned title ends.
    """
    title_chars = "".join(title.lower().split())
    text = text.strip()
    if not title_chars or not text:
        return text
    positions = [index for index, char in enumerate(text) if not char.isspace()]  # compact index -> text index
    text_chars = "".join(text[index] for index in positions).lower()
    window = text_chars[: len(title_chars) + 10]
    if window.startswith(title_chars):
        end = len(title_chars)
    else:
        blocks = [block for block in difflib.SequenceMatcher(None, title_chars, window, autojunk=False).get_matching_blocks() if block.size]
        matched = sum(block.size for block in blocks)
        if not blocks or blocks[0].b > 2 or matched < min_match * len(title_chars):
            return text
        last = blocks[-1]
        end = min(last.b + last.size + (len(title_chars) - (last.a + last.size)), len(text_chars))
    if end >= len(text_chars):
        return ""
    cut = positions[end - 1] + 1
    while cut < len(text) and not text[cut].isspace():  # finish the word the copy ends in
        cut += 1
    rest = text[cut:].strip()
    if "".join(rest.lower().split()).startswith(title_chars):  # the title repeated twice (one Cranfield abstract)
        return strip_title_copy(title, rest, min_match)
    return rest


def title_text_pairs(corpus: dict[str, dict[str, str]]) -> list[TrainingPair]:
    """(title -> text without the title copy) pairs from a BEIR corpus ``{id: {"title", "text"}}``.

    Documents without a title or whose text is empty once the title copy is removed are skipped.
    """
    pairs = []
    for document_id, document in corpus.items():
        title = " ".join((document.get("title") or "").split())
        text = strip_title_copy(title, " ".join((document.get("text") or "").split()))
        if title and text:
            pairs.append(TrainingPair(query=title, document=text, document_id=str(document_id)))
    return pairs


def split_sentences(text: str, min_words: int = 3) -> list[str]:
    """``text`` cut after ``.``, ``?`` or ``!`` followed by whitespace; a piece with fewer than ``min_words`` words
    that hold a letter joins the previous piece (so "mach 3. 5 was ..." or "fig. 2 shows ..." stay whole)."""
    sentences: list[str] = []
    for piece in re.split(r"(?<=[.?!])\s+", " ".join(text.split())):
        if sentences and sum(any(char.isalpha() for char in word) for word in piece.split()) < min_words:
            sentences[-1] = f"{sentences[-1]} {piece}"
        elif piece:
            sentences.append(piece)
    return sentences


def sentence_text_pairs(corpus: dict[str, dict[str, str]], seed: int = 0, min_words: int = 5) -> list[TrainingPair]:
    """Inverse-cloze pairs (Lee et al., 2019): one sentence of each abstract -> the title and the rest of it.

    The sentence (drawn with ``seed`` among those of at least ``min_words`` words) is removed from its document, so
    the pair is not solved by copying; the title copy is stripped first. A sentence reads more like a question of
    a test collection than a title does. Documents with fewer than two sentences, or none long enough, give their
    title -> text pair instead (skipped without a title); empty documents are skipped.
    """
    generator = random.Random(seed)
    pairs = []
    for document_id, document in corpus.items():
        title = " ".join((document.get("title") or "").split())
        text = strip_title_copy(title, " ".join((document.get("text") or "").split()))
        sentences = split_sentences(text)
        candidates = [index for index, sentence in enumerate(sentences) if len(sentence.split()) >= min_words]
        if len(sentences) >= 2 and candidates:
            chosen = generator.choice(candidates)
            rest = " ".join(sentence for index, sentence in enumerate(sentences) if index != chosen)
            pairs.append(TrainingPair(query=sentences[chosen], document=f"{title} {rest}".strip(), document_id=str(document_id)))
        elif title and text:
            pairs.append(TrainingPair(query=title, document=text, document_id=str(document_id)))
    return pairs


# Independent cropping (Izacard et al. 2021, Contriever): each span is ratio x the document's words, the ratio drawn
# uniformly in CROP_SPAN_RATIO (Contriever's ratio_min / ratio_max, on 256-token chunks); a span has at least
# CROP_MIN_SPAN_WORDS words (10 % of a 20-word abstract would be 2 words, too few to name a topic), and a document
# needs CROP_MIN_WORDS words (twice that) to be cropped, so that a query span is at most half of its document.
CROP_SPAN_RATIO = (0.1, 0.5)
CROP_MIN_SPAN_WORDS = 4
CROP_MIN_WORDS = 8


def crop_span(words: Sequence[str], generator: random.Random, ratio: tuple[float, float] = CROP_SPAN_RATIO,
              min_words: int = CROP_MIN_SPAN_WORDS) -> tuple[int, int]:
    """``(start, end)`` of a random span of ``words``: ``max(min_words, int(len(words) * r))`` words (at most all of
    them), ``r`` uniform in ``ratio``, the start uniform over the positions where the span fits (Contriever's
    randomcrop, with a floor on the length)."""
    length = min(len(words), max(min_words, int(len(words) * generator.uniform(*ratio))))
    start = generator.randint(0, len(words) - length)
    return start, start + length


def crop_pairs(corpus: dict[str, dict[str, str]], seed: int = 0, min_words: int = CROP_MIN_WORDS) -> list[TrainingPair]:
    """Independent-cropping pairs (Contriever): two spans of each document, cropped independently with ``seed`` (see
    :func:`crop_span`), one the query and the other the positive.

    The document is :func:`training_document_text` (title + text, the title copy stripped) cut into words at
    whitespace; the spans may overlap (as in Contriever) and keep the words' order. Documents of fewer than
    ``min_words`` words (empty ones included) are skipped. Needs neither titles nor punctuation.
    """
    generator = random.Random(seed)
    pairs = []
    for document_id, document in corpus.items():
        words = training_document_text(document).split()
        if len(words) < min_words:
            continue
        (query_start, query_end), (start, end) = crop_span(words, generator), crop_span(words, generator)
        pairs.append(TrainingPair(" ".join(words[query_start:query_end]), " ".join(words[start:end]), str(document_id)))
    return pairs


# How training pairs are built from a corpus without a train split (load_training_pairs' pseudo_queries), and the
# kind each records (TrainingData.kind, the run's data_kind).
PSEUDO_QUERIES = {
    "title": "title -> text",
    "sentence": "inverse cloze: a sentence -> title + the rest (crops on a corpus where no document allows it)",
    "crop": "independent cropping (Contriever): a random span -> another random span of the same document",
}
PAIR_KINDS = {"title": "title-text", "sentence": "sentence-text", "crop": "independent-crops"}


def resolve_beir_folder(data: str) -> Path | None:
    """A BEIR folder (holding corpus.jsonl) from a path or a collection name under the data root; None otherwise."""
    try:
        folder = resolve_collection(data)
    except DataError:
        return None
    return folder if (folder / "corpus.jsonl").is_file() else None


def training_document_text(document: dict[str, Any]) -> str:
    """The text of a corpus document as fine-tuning sees it: :func:`lir_robust.data.document_text` (``title + " " +
    text``) with the copy of the title that starts the text removed (:func:`strip_title_copy`)."""
    title = (document.get("title") or "").strip()
    return document_text({"title": title, "text": strip_title_copy(title, document.get("text") or "")})


def load_training_pairs(data: str, pseudo_queries: str = "title", seed: int = 0) -> TrainingData:
    """Training pairs from a BEIR folder / collection name, a Hub image dataset or a saved ``datasets`` folder.

    A BEIR folder without a train split gives pairs built from its corpus (never its queries): ``pseudo_queries``
    ``"title"`` (title -> text), ``"sentence"`` (inverse cloze, drawn with ``seed``; see sentence_text_pairs; on a
    corpus where it builds no pair, independent crops instead, with a logged warning) or ``"crop"`` (see crop_pairs).
    Raises :class:`DataLoadError` naming what was looked for; ``vidore/colpali_train_set`` fails at once offline.
    """
    if pseudo_queries not in PSEUDO_QUERIES:
        raise ValueError(f"pseudo_queries must be one of {sorted(PSEUDO_QUERIES)}, got {pseudo_queries!r}")
    folder = resolve_beir_folder(data)
    if folder is not None:
        corpus = read_beir_corpus(folder)
        train_qrels = folder / "qrels" / "train.tsv"
        if train_qrels.is_file():
            qrels = read_beir_qrels(folder, "train")
            queries = read_beir_queries(folder)
            test_file = folder / "qrels" / "test.tsv"
            test_queries = set(read_beir_qrels(folder, "test")) if test_file.is_file() else set()
            overlap = test_queries & set(qrels)
            if overlap:
                raise DataLoadError(
                    f"{train_qrels} shares {len(overlap)} query ids with qrels/test.tsv; refusing to train on "
                    "evaluation queries"
                )
            pairs = [
                TrainingPair(queries[query_id], training_document_text(corpus[document_id]), document_id)
                for query_id, relevant in qrels.items()
                for document_id, grade in relevant.items()
                if grade > 0 and query_id in queries and document_id in corpus and training_document_text(corpus[document_id])
            ]
            kind = "train-split"
        else:
            pairs, kind = _corpus_pairs(folder, corpus, pseudo_queries, seed)
        return TrainingData(pairs, str(folder.resolve()), kind, len({pair.document_id for pair in pairs}))
    return _load_image_pairs(data)


def _corpus_census(corpus: dict[str, dict[str, str]]) -> dict[str, int]:
    """What each kind of corpus pairs can use: documents in all, empty ones, with a title and a text, that inverse
    cloze can cut (two or more sentences, one of 5+ words), of at least CROP_MIN_WORDS words, the most words in one."""
    census = dict.fromkeys(("documents", "empty", "titled", "sentences", "croppable", "most_words"), 0)
    for document in corpus.values():
        title = " ".join((document.get("title") or "").split())
        text = strip_title_copy(title, " ".join((document.get("text") or "").split()))
        sentences = split_sentences(text)
        words = len(training_document_text(document).split())  # as crop_pairs counts them
        census["documents"] += 1
        census["empty"] += words == 0
        census["titled"] += bool(title and text)
        census["sentences"] += len(sentences) >= 2 and any(len(sentence.split()) >= 5 for sentence in sentences)
        census["croppable"] += words >= CROP_MIN_WORDS
        census["most_words"] = max(census["most_words"], words)
    return census


def _census_line(census: dict[str, int]) -> str:
    return (f"of its {census['documents']} documents: {census['titled']} with a title and a text, {census['sentences']} "
            f"with two or more sentences, {census['croppable']} with {CROP_MIN_WORDS}+ words")


def _corpus_pairs(folder: Path, corpus: dict[str, dict[str, str]], pseudo_queries: str, seed: int) -> tuple[list[TrainingPair], str]:
    """``(pairs, kind)`` of a corpus without a train split. Inverse cloze (the default) that builds no pair falls back
    to crops with a logged warning; otherwise a kind that builds nothing stops, naming the counts and the kinds that
    would build pairs, or, when none would, the real reason."""
    builders = {"title": lambda: title_text_pairs(corpus), "sentence": lambda: sentence_text_pairs(corpus, seed),
                "crop": lambda: crop_pairs(corpus, seed)}
    pairs = builders[pseudo_queries]()
    if pairs and (pseudo_queries == "crop" or len(pairs) >= len(corpus) / 2):  # no census needed (it costs a pass)
        return pairs, PAIR_KINDS[pseudo_queries]
    census = _corpus_census(corpus)
    if pairs:
        if len(pairs) < census["croppable"] / 2:
            logger.warning("%s: --pseudo-queries %s builds pairs for %d documents only (%s); --pseudo-queries crop "
                           "would use %d", folder, pseudo_queries, len(pairs), _census_line(census), census["croppable"])
        return pairs, PAIR_KINDS[pseudo_queries]
    if pseudo_queries == "sentence" and census["croppable"]:
        logger.warning(
            "%s: inverse cloze (--pseudo-queries sentence) builds no training pair (%s); using independent crops of "
            "%d documents instead (--pseudo-queries crop chooses them outright)", folder, _census_line(census), census["croppable"],
        )
        return crop_pairs(corpus, seed), PAIR_KINDS["crop"]
    others = [kind for kind in builders if kind != pseudo_queries and builders[kind]()]
    if others:
        raise DataLoadError(
            f"{folder} has no qrels/train.tsv and --pseudo-queries {pseudo_queries} builds no training pair "
            f"({_census_line(census)}); pass --pseudo-queries {' or '.join(others)}"
        )
    raise DataLoadError(
        f"{folder} has no qrels/train.tsv and no training pair can be built from its corpus without its (evaluation) "
        f"queries: of its {census['documents']} documents {census['empty']} are empty, none has a title and a text or "
        f"two sentences, and the longest has {census['most_words']} words (cropping needs {CROP_MIN_WORDS}); add "
        "training queries as qrels/train.tsv (ids not in qrels/test.tsv)"
    )

def _load_image_pairs(data: str) -> TrainingData:
    local = Path(data).expanduser()
    if local.is_dir() and ((local / "dataset_info.json").is_file() or (local / "state.json").is_file() or (local / "dataset_dict.json").is_file()):
        dataset = load_local_dataset(local, "train")
        source = str(local.resolve())
    elif local.exists() or looks_like_path(data) or "/" not in data:  # a path, or a bare collection name that is not there: never a Hub id (owner/name)
        raise DataLoadError(
            f"no training data at {data!r}: expected a BEIR folder (corpus.jsonl [+ qrels/train.tsv]) given as a path "
            f"or as a collection name under the data root {data_root()} (set ${DATA_ROOT_ENV}); a folder written "
            f"by datasets' save_to_disk with query and image columns; or a Hub dataset id such as {VIDORE_TRAIN_SET}"
        )
    else:
        how = f"`datasets.load_dataset({data!r}, split='train').save_to_disk('copy')` (then pass --data copy)"
        try:
            dataset = load_hub_dataset(data, None, "train", how)
        except DataError as error:  # HubUnreachableError: same message, as this module's error
            raise DataLoadError(str(error)) from None
        source = f"hub:{data}"
    columns = set(dataset.column_names)
    if not {"query", "image"} <= columns:
        raise DataLoadError(f"{data}: image training data needs 'query' and 'image' columns, found {sorted(columns)}")
    pairs = [TrainingPair(row["query"], row["image"], str(index)) for index, row in enumerate(dataset) if row["query"]]
    return TrainingData(pairs, source, "image-pairs", len(pairs))


def split_validation(pairs: Sequence[TrainingPair], count: int, seed: int) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """``(train, validation)``: ``count`` pairs drawn with ``seed`` are held out (for the validation loss only)."""
    if count <= 0:
        return list(pairs), []
    if count >= len(pairs):
        raise ValueError(f"cannot hold out {count} validation pairs from {len(pairs)} pairs")
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    held = set(order[:count])
    return [pair for index, pair in enumerate(pairs) if index not in held], [pairs[index] for index in sorted(held)]


def mine_hard_negatives(pairs: list[TrainingPair], count: int) -> list[TrainingPair]:
    """Give every text pair the ``count`` documents (of the other pairs) most similar to its query under TF-IDF.

    A cheap lexical miner, deterministic; documents of a pair's own text are never its negatives. Returns new pairs.
    """
    if count <= 0:
        return pairs
    if any(not isinstance(pair.document, str) for pair in pairs):
        raise ValueError("hard-negative mining works on text documents only")
    documents = [pair.document for pair in pairs]
    vocabulary: dict[str, int] = {}
    rows = [[vocabulary.setdefault(word, len(vocabulary)) for word in re.findall(r"\w+", text.lower())] for text in documents]
    frequency = torch.zeros(len(vocabulary))
    for row in rows:
        frequency[list(set(row))] += 1
    idf = torch.log((1 + len(documents)) / (1 + frequency)) + 1

    def vectors(token_rows: list[list[int]]) -> torch.Tensor:
        matrix = torch.zeros(len(token_rows), len(vocabulary))
        for index, row in enumerate(token_rows):
            if row:
                matrix[index].index_add_(0, torch.tensor(row), torch.ones(len(row)))
        return nn.functional.normalize(matrix * idf, dim=-1)

    query_rows = [[vocabulary[word] for word in re.findall(r"\w+", pair.query.lower()) if word in vocabulary] for pair in pairs]
    similarity = vectors(query_rows) @ vectors(rows).T
    same = torch.tensor([[a.document == b for b in documents] for a in pairs])
    similarity = similarity.masked_fill(same, -math.inf)
    top = similarity.topk(min(count, len(pairs) - 1), dim=1).indices
    return [
        TrainingPair(pair.query, pair.document, pair.document_id, [documents[j] for j in top[i].tolist()])
        for i, pair in enumerate(pairs)
    ]

