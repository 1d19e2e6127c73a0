"""The parts of fine-tuning that are not the loop: training pairs, batching, models, gathering, checkpoints.

``train/finetune.py`` is the loop (read it top to bottom); everything it needs that is more than a few lines lives
here, so it can be tested on its own.

Training data (:func:`load_training_pairs`):

- a BEIR folder with ``qrels/train.tsv``: its training queries and their relevant documents;
- a BEIR folder without a train split: (title -> text) pairs built from the corpus, with the copy of the title that
  starts many abstracts (Cranfield's all do) stripped, empty documents skipped; or inverse-cloze pairs (one sentence
  of the abstract -> the title and the rest of it). ``queries.jsonl`` is never read, so the evaluation queries can
  never leak into training; the caveat is that every corpus document is seen in training;
- ``vidore/colpali_train_set`` (or any Hub dataset / ``datasets.save_to_disk`` folder with ``query`` and ``image``
  columns) for colpali-engine models.

Shapes: query / document embeddings are ``[B, T, D]`` with a bool mask ``[B, T]`` (True = a real token / patch).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from lir_robust.data import (
    DATA_ROOT_ENV,
    DataError,
    data_root,
    load_hub_dataset,
    load_local_dataset,
    read_beir_corpus,
    read_beir_qrels,
    read_beir_queries,
    resolve_collection,
)
from lir_robust.core.files import atomic_folder, replace_folder
from lir_robust.scoring.pooling import PoolingHead, save_pooling_json

__all__ = [
    "VIDORE_TRAIN_SET",
    "TrainingPair",
    "TrainingData",
    "DataLoadError",
    "strip_title_copy",
    "title_text_pairs",
    "split_sentences",
    "sentence_text_pairs",
    "PSEUDO_QUERIES",
    "load_training_pairs",
    "split_validation",
    "mine_hard_negatives",
    "PairDataset",
    "EpochShuffleSampler",
    "TextPairCollator",
    "ImagePairCollator",
    "TrainState",
    "model_family",
    "is_pylate_model",
    "PYLATE_DIR",
    "build_text_model",
    "build_colpali_model",
    "init_projection_svd",
    "init_projection_identity",
    "embed",
    "gather_documents",
    "save_checkpoint",
    "latest_checkpoint",
    "is_complete_checkpoint",
    "atomic_folder",
    "save_state_atomic",
    "RESULT_NEUTRAL_KEYS",
    "config_differences",
    "RunFolder",
    "inspect_run_folder",
    "clear_run_folder",
    "truncate_log",
    "text_hidden_size",
    "JsonlLog",
]

logger = logging.getLogger(__name__)

VIDORE_TRAIN_SET = "vidore/colpali_train_set"


class DataLoadError(DataError):
    """Training data could not be found or loaded; the message says what was expected and where to get it.

    A DataError, like the errors of :mod:`lir_robust.data` whose loaders it uses."""


# ----------------------------------------------------------------------------------------------------------------
# Training pairs
# ----------------------------------------------------------------------------------------------------------------


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
    kind: str  # "train-split" | "title-text" | "sentence-text" | "image-pairs"
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
    import random

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


# How training pairs are built from a corpus without a train split (load_training_pairs' pseudo_queries).
PSEUDO_QUERIES = {"title": "title -> text", "sentence": "inverse cloze: a sentence -> title + the rest"}


def resolve_beir_folder(data: str) -> Path | None:
    """A BEIR folder (holding corpus.jsonl) from a path or a collection name under the data root; None otherwise."""
    try:
        folder = resolve_collection(data)
    except DataError:
        return None
    return folder if (folder / "corpus.jsonl").is_file() else None


def _document_text(document: dict[str, Any]) -> str:
    title, text = (document.get("title") or "").strip(), (document.get("text") or "").strip()
    return f"{title} {strip_title_copy(title, text)}".strip() if title else text


def load_training_pairs(data: str, pseudo_queries: str = "title", seed: int = 0) -> TrainingData:
    """Training pairs from a BEIR folder / collection name, a Hub image dataset or a saved ``datasets`` folder.

    A BEIR folder without a train split gives pairs built from its corpus (never its queries): ``pseudo_queries``
    ``"title"`` (title -> text) or ``"sentence"`` (inverse cloze, drawn with ``seed``; see sentence_text_pairs).
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
                TrainingPair(queries[query_id], _document_text(corpus[document_id]), document_id)
                for query_id, relevant in qrels.items()
                for document_id, grade in relevant.items()
                if grade > 0 and query_id in queries and document_id in corpus and _document_text(corpus[document_id])
            ]
            kind = "train-split"
        else:
            pairs = title_text_pairs(corpus) if pseudo_queries == "title" else sentence_text_pairs(corpus, seed)
            kind = "title-text" if pseudo_queries == "title" else "sentence-text"
            if not pairs:
                raise DataLoadError(
                    f"{folder} has no qrels/train.tsv and no document with both a title and a text, so no training "
                    "pairs can be built without using its (evaluation) queries"
                )
        return TrainingData(pairs, str(folder.resolve()), kind, len({pair.document_id for pair in pairs}))
    return _load_image_pairs(data)


def _load_image_pairs(data: str) -> TrainingData:
    local = Path(data).expanduser()
    if local.is_dir() and ((local / "dataset_info.json").is_file() or (local / "state.json").is_file() or (local / "dataset_dict.json").is_file()):
        dataset = load_local_dataset(local, "train")
        source = str(local.resolve())
    elif local.exists() or data.startswith((".", "/", "~")) or "/" not in data:
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


class PairDataset(torch.utils.data.Dataset):
    """A list of :class:`TrainingPair` as a map-style dataset (items are the pairs themselves)."""

    def __init__(self, pairs: Sequence[TrainingPair]):
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> TrainingPair:
        return self.pairs[index]


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """A fresh permutation every epoch that depends only on ``(seed, epoch)``: resuming reproduces the data order.

    It draws from its own generator, never from the global RNG (dropout's stream stays the same on resume).
    """

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


# ----------------------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------------------


class TextPairCollator:
    """Tokenise a list of pairs for a TextColBERT: ``{"query": {...}, "document": {...}[, "negative": {...}]}``.

    Each part holds ``input_ids`` / ``attention_mask`` ``[B, L]``; ``negative`` is ``[B * n_neg, L]`` (each pair must
    have the same number of negatives). Training may truncate documents shorter than the model's inference length.
    """

    def __init__(self, model, query_max_length: int | None = None, document_max_length: int | None = None):
        self.model = model
        self.query_max_length = query_max_length
        self.document_max_length = document_max_length

    def _tokenize(self, texts: list[str], is_query: bool) -> dict[str, torch.Tensor]:
        limit = self.query_max_length if is_query else self.document_max_length
        return self.model.tokenize(texts, is_query=is_query, max_length=limit)

    def __call__(self, pairs: list[TrainingPair]) -> dict[str, dict[str, torch.Tensor]]:
        batch = {
            "query": self._tokenize([pair.query for pair in pairs], True),
            "document": self._tokenize([pair.document for pair in pairs], False),
        }
        if pairs[0].negatives:
            batch["negative"] = self._tokenize([negative for pair in pairs for negative in pair.negatives], False)
        return batch


class ImagePairCollator:
    """Process (query text, page image) pairs with a colpali-engine processor: ``{"query": {...}, "document": {...}}``."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, pairs: list[TrainingPair]) -> dict[str, dict[str, torch.Tensor]]:
        batch = {
            "query": dict(self.processor.process_queries([pair.query for pair in pairs])),
            "document": dict(self.processor.process_images([pair.document for pair in pairs])),
        }
        if pairs[0].negatives:
            batch["negative"] = dict(self.processor.process_images([n for pair in pairs for n in pair.negatives]))
        return batch


def embed(model: nn.Module, inputs: dict[str, torch.Tensor], is_query: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the (possibly wrapped) model on one part of a batch: ``(embeddings [B, T, D], mask [B, T] bool)``.

    A TextColBERT returns both; a colpali-engine model returns embeddings zeroed at padding, and the mask is the
    attention mask.
    """
    if "is_query" in _forward_parameters(model):
        return model(**inputs, is_query=is_query)
    return model(**inputs), inputs["attention_mask"].to(torch.bool)


def _forward_parameters(model: nn.Module) -> set[str]:
    import inspect

    inner = getattr(model, "module", model)  # DistributedDataParallel
    return set(inspect.signature(inner.forward).parameters)


def gather_documents(accelerator, embeddings: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every process's documents, with gradients: ``([P * B, T_max, D], [P * B, T_max], offset = rank * B)``.

    Documents are padded to the longest across processes (``accelerator.pad_across_processes``), then all-gathered
    with ``torch.distributed.nn.functional.all_gather`` so gradients flow back to the process that made each
    document. Every process must hold the same local batch size B. With one process this returns the inputs.
    """
    if accelerator.num_processes == 1:
        return embeddings, mask, 0
    import torch.distributed.nn.functional as distributed

    embeddings = accelerator.pad_across_processes(embeddings, dim=1)
    mask = accelerator.pad_across_processes(mask.to(torch.int64), dim=1)  # gloo gathers no bool tensors
    gathered = torch.cat(distributed.all_gather(embeddings), dim=0)
    gathered_mask = accelerator.gather(mask).to(torch.bool)
    return gathered, gathered_mask, accelerator.process_index * embeddings.shape[0]


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------

COLPALI_MODEL_TYPES = ("paligemma", "qwen2_vl", "qwen2_5_vl", "idefics3")
PYLATE_DIR = "pylate"  # a text run's PyLate model folder, beside its model/ checkpoint


def is_pylate_model(model: str) -> bool:
    """True for a PyLate model folder or Hub id (see lir_robust.patches.pylate.is_pylate_model; needs no pylate)."""
    from lir_robust.patches.pylate import is_pylate_model as check

    return check(model)
COLPALI_NAME_HINTS = ("colpali", "colqwen", "colsmol", "colidefics", "paligemma")


def model_family(model: str) -> str:
    """``"text"`` for BERT-like encoders and PyLate models (TextColBERT), else the colpali-engine family (colpali,
    colqwen2, ...)."""
    if is_pylate_model(model):
        return "text"
    local = Path(model).expanduser()
    model_type = None
    if (local / "config.json").is_file():
        model_type = json.loads((local / "config.json").read_text()).get("model_type")
    elif (local / "adapter_config.json").is_file():
        base = json.loads((local / "adapter_config.json").read_text()).get("base_model_name_or_path", "")
        return model_family(base) if base else "text"
    if model_type in COLPALI_MODEL_TYPES or any(hint in str(model).lower() for hint in COLPALI_NAME_HINTS):
        from lir_robust.patches.colpali import infer_family

        return infer_family(str(model), model_type)
    return "text"


def text_hidden_size(model: str) -> int:
    """The hidden size of a BERT-like encoder (``minilm``: 384), read from its config.json; nothing is loaded.

    The default projection of a text model is this size with identity initialisation (step 0 = the raw model)."""
    from transformers import AutoConfig

    from lir_robust.encoders.text_colbert import ModelLoadError, resolve_base_model

    location = resolve_base_model(model)
    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read the configuration of the encoder {model!r} ({location}): {error}") from None
    size = getattr(config, "hidden_size", None)
    if not isinstance(size, int):
        raise ModelLoadError(f"the encoder {model!r} has no integer hidden_size in its config; pass --projection-dim")
    return size


def build_text_model(
    model: str,
    head: PoolingHead,
    projection_dim: int | None,
    lora_r: int,
    lora_alpha: int,
    lora_dropout: float,
    lora_target_modules: Sequence[str] | str | None,
    gradient_checkpointing: bool = False,
    query_max_length: int = 32,
    document_max_length: int = 256,
):
    """A TextColBERT with a LoRA adapter on its backbone and a trainable projection (base weights frozen).

    A PyLate model (folder or Hub id) brings its own projection (its Dense layers, trained on), prefixes, lengths,
    query expansion and skiplist: ``projection_dim`` and the lengths apply to other encoders only."""
    from lir_robust.encoders.text_colbert import TextColBERT

    if is_pylate_model(model):
        from lir_robust.patches.pylate import load_pylate

        colbert = load_pylate(model, pooling=head)
        logger.info("PyLate model %s: its own Dense projection (%d-d), prefixes and lengths (query %d, document %d)",
                    model, colbert.projection.out_features, colbert.colbert_config.query_max_length,
                    colbert.colbert_config.document_max_length)
    else:
        colbert = TextColBERT.from_base(
            model, projection_dim=projection_dim, pooling=head,
            query_max_length=query_max_length, document_max_length=document_max_length,
        )
    if gradient_checkpointing:
        colbert.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    colbert.add_lora(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, target_modules=lora_target_modules)
    for parameter in colbert.projection.parameters():
        parameter.requires_grad_(True)
    return colbert


def build_colpali_model(
    model: str,
    head: PoolingHead,
    lora_r: int,
    lora_alpha: int,
    lora_dropout: float,
    lora_target_modules: Sequence[str] | str | None,
    gradient_checkpointing: bool = False,
):
    """``(peft model, processor, family)``: a colpali-engine model (via lir_robust.patches) with a LoRA adapter."""
    from peft import LoraConfig, get_peft_model

    from lir_robust.patches.colpali import load_colpali, lora_target_modules as default_targets

    family = model_family(model)
    backbone, processor = load_colpali(model, family=family, device="cpu", head=head)
    if gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = lora_target_modules or default_targets(family)
    targets = targets[0] if isinstance(targets, (list, tuple)) and len(targets) == 1 and "(" in targets[0] else targets
    config = LoraConfig(
        r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets,
        init_lora_weights="gaussian", task_type="FEATURE_EXTRACTION",
    )
    return get_peft_model(backbone.train(), config), processor, family


@torch.no_grad()
def init_projection_svd(colbert, texts: Sequence[str], batch_size: int = 32, max_vectors: int = 20_000) -> float:
    """Set a TextColBERT's linear projection ``[D, H]`` to the top-D right singular vectors of its token vectors.

    Token vectors ``[N, H]`` of ``texts`` (as documents, unprojected) are stacked (uncentred, as the dot products
    they preserve), ``X = U S V^T``; the projection is ``V[:, :D]^T``, so ``X W^T W ~ X``: the untrained projected
    model starts as the best D-dimensional approximation of the raw H-dimensional one. Returns the share of the
    squared norm kept (``sum S[:D]^2 / sum S^2``).
    """
    projection = colbert.projection
    if not isinstance(projection, nn.Linear):
        raise TypeError("init_projection_svd needs a linear projection (projection_dim set)")
    identity, colbert.projection = colbert.projection, nn.Identity()
    was_training = colbert.training
    try:
        vectors = torch.cat(colbert.encode(list(texts), is_query=False, batch_size=batch_size, show_progress=False))
    finally:
        colbert.projection = identity
        colbert.train(was_training)
    vectors = vectors[:max_vectors].double()
    _, singular, right = torch.linalg.svd(vectors, full_matrices=False)
    dim = projection.out_features
    projection.weight.copy_(right[:dim].to(projection.weight.dtype))
    return float((singular[:dim] ** 2).sum() / (singular**2).sum())


@torch.no_grad()
def init_projection_identity(colbert) -> None:
    """Set a TextColBERT's linear projection ``[H, H]`` to the identity: the untrained model IS the raw model.

    With LoRA's B matrices starting at zero, step 0 then scores exactly as the raw H-dimensional model (identity
    projection, no adapter), and training moves away from it only where the loss asks. Needs projection_dim equal
    to the hidden size.
    """
    projection = colbert.projection
    if not isinstance(projection, nn.Linear):
        raise TypeError("init_projection_identity needs a linear projection (projection_dim set)")
    if projection.in_features != projection.out_features:
        raise ValueError(
            f"an identity projection needs projection_dim = the hidden size {projection.in_features}, "
            f"got {projection.out_features} (use --projection-dim {projection.in_features}, or --projection-init svd)"
        )
    projection.weight.copy_(torch.eye(projection.out_features, dtype=projection.weight.dtype))


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints and logs
# ----------------------------------------------------------------------------------------------------------------


class TrainState:
    """Where the loop is: optimizer steps done, epoch, micro-batches done in that epoch (saved with save_state)."""

    def __init__(self):
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.epoch, self.batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])


CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
# accelerator.save_state writes this file last (the registered TrainState); a folder without it is unfinished.
CHECKPOINT_LAST_FILE = "custom_checkpoint_0.pkl"


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """True for a ``step-N`` folder that :func:`save_state_atomic` finished (renamed into place, state file inside)."""
    folder = Path(folder)
    return bool(CHECKPOINT_PATTERN.match(folder.name)) and folder.is_dir() and (folder / CHECKPOINT_LAST_FILE).is_file()


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete ``checkpoints/step-N`` folder with the largest N under ``output_dir`` (None if there is none).

    Unfinished saves (``.step-N.partial`` folders of a run killed while saving, or a ``step-N`` folder without its
    state file, left by versions that saved in place) are ignored."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    found = [(int(CHECKPOINT_PATTERN.match(path.name).group(1)), path) for path in folder.iterdir() if is_complete_checkpoint(path)]
    return max(found)[1] if found else None


def save_state_atomic(accelerator, output_dir: str | os.PathLike, step: int) -> Path:
    """``accelerator.save_state`` into ``output_dir/checkpoints/.step-N.partial``, renamed to ``step-N`` once every
    process has written its part: a run killed while saving leaves no ``step-N`` folder to resume from by mistake.

    Call it on every process (each writes its own RNG state into the same folder)."""
    import shutil

    checkpoints = Path(output_dir) / "checkpoints"
    final, temporary = checkpoints / f"step-{step}", checkpoints / f".step-{step}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        checkpoints.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_folder(temporary, final)
    accelerator.wait_for_everyone()
    return final


# Options that never change a run's numbers: a rerun that differs only in these continues (or reports) the same run.
# pooling / pool_k / pool_tau are folded into "head", which is compared.
RESULT_NEUTRAL_KEYS = frozenset(
    {"output_dir", "log_every", "eval_every", "save_every", "resume", "overwrite", "stop_after_steps", "debug",
     "pooling", "pool_k", "pool_tau"}
)
# What a fine-tuning run writes into its folder (removed by --overwrite).
RUN_FILES = ("checkpoints", "model", PYLATE_DIR, "log.jsonl", "summary.json", "config.json", "tensorboard")


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def config_differences(saved: dict[str, Any], current: dict[str, Any], keys: Iterable[str] | None = None,
                       ignore: Iterable[str] = RESULT_NEUTRAL_KEYS) -> list[str]:
    """Sorted keys whose values differ between two run configurations (compared as JSON; a key missing on one side
    differs). ``keys`` limits the comparison (default: every key of both); keys in ``ignore`` are skipped."""
    saved, current = _as_json(saved), _as_json(current)
    names = set(saved) | set(current) if keys is None else set(keys)
    missing = object()
    return sorted(
        key for key in names - set(ignore) if saved.get(key, missing) != current.get(key, missing)
    )


@dataclass
class RunFolder:
    """What an output folder holds, compared with the run about to start (see :func:`inspect_run_folder`).

    ``status``: ``"new"`` (nothing of ours), ``"started"`` (same configuration, no checkpoint yet: start over),
    ``"resumable"`` (same configuration, ``checkpoint`` to continue from), ``"finished"`` (same configuration,
    summary.json written), ``"other-config"`` (``differences`` lists the keys), ``"unknown-files"`` (run files
    without config.json)."""

    status: str
    checkpoint: Path | None = None
    differences: list[str] = field(default_factory=list)


def inspect_run_folder(output_dir: str | os.PathLike, requested: dict[str, Any]) -> RunFolder:
    """Compare ``output_dir`` with the options of the run about to start (reads file names and config.json only).

    Only the keys of ``requested`` are compared (derived values such as the training-pair count are compared again
    once the data is loaded, with :func:`config_differences`), ignoring :data:`RESULT_NEUTRAL_KEYS`."""
    output = Path(output_dir)
    present = [name for name in RUN_FILES if (output / name).exists()]
    if not present:
        return RunFolder("new")
    if not (output / "config.json").is_file():
        return RunFolder("unknown-files")
    try:
        saved = json.loads((output / "config.json").read_text())
    except ValueError:
        return RunFolder("unknown-files")
    differences = config_differences(saved, requested, keys=requested)
    if differences:
        return RunFolder("other-config", differences=differences)
    if (output / "summary.json").is_file():
        return RunFolder("finished")
    checkpoint = latest_checkpoint(output)
    return RunFolder("resumable", checkpoint=checkpoint) if checkpoint is not None else RunFolder("started")


def clear_run_folder(output_dir: str | os.PathLike) -> None:
    """Remove what a fine-tuning run wrote into ``output_dir`` (:data:`RUN_FILES`); other files are left alone."""
    import shutil

    output = Path(output_dir)
    for name in RUN_FILES:
        path = output / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def truncate_log(path: str | os.PathLike, step: int) -> None:
    """Keep the records of ``log.jsonl`` up to optimizer step ``step`` (not the final record), atomically: a run
    resumed from the checkpoint of step N logs steps N+1... once, as an uninterrupted run does."""
    from lir_robust.core.files import write_text_atomic

    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step and not record.get("final"):
            kept.append(json.dumps(record))
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def save_checkpoint(model: nn.Module, processor, directory: str | os.PathLike, head: PoolingHead, config: dict[str, Any]) -> Path:
    """Write the fine-tuned model so that the eval side reloads all of it from ``directory``.

    TextColBERT: its own ``save_pretrained`` (adapter/, projection, tokenizer/, colbert_config.json, pooling.json);
    and, when the model came from a PyLate model or ``config["save_pylate"]`` is set, a PyLate model folder (LoRA
    merged, pooling.json, card) in ``PYLATE_DIR`` beside ``directory`` (see lir_robust.patches.pylate.save_pylate).
    colpali-engine model: the PEFT adapter (adapter_config.json + weights, loadable by ``load_colpali(directory)``),
    the processor and pooling.json ``{"head", "spec", "training"}``.
    """
    directory = Path(directory)
    if hasattr(model, "colbert_config"):
        model.pooling = head
        saved = model.save_pretrained(directory, training_config=config)
        if config.get("save_pylate") or model.colbert_config.base_format == "pylate":
            from lir_robust.patches.pylate import save_pylate

            save_pylate(model, directory.parent / PYLATE_DIR, training_config=config)
        return saved
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    processor.save_pretrained(str(directory))
    save_pooling_json(directory, head, config)
    return directory


class JsonlLog:
    """Append one JSON object per line to a file (written by the main process only), flushed every record."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that require gradients (LoRA matrices and the projection)."""
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def peak_memory_mb() -> float:
    """This process's peak resident memory (ru_maxrss) in MiB."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def validation_loss(embed_fn: Callable, loss_fn: nn.Module, batches: Sequence[dict]) -> dict[str, float]:
    """Mean in-batch loss and top-1 accuracy over held-out batches (no gradient)."""
    from lir_robust.scoring.losses import pooled_logits

    losses, correct, total = [], 0, 0
    with torch.no_grad():
        for batch in batches:
            queries, query_mask = embed_fn(batch["query"], True)
            documents, document_mask = embed_fn(batch["document"], False)
            losses.append(float(loss_fn(queries, documents, query_mask=query_mask, doc_mask=document_mask)))
            logits = pooled_logits(loss_fn.head, queries, documents, query_mask=query_mask, doc_mask=document_mask)
            correct += int((logits.argmax(dim=1) == torch.arange(logits.shape[0], device=logits.device)).sum())
            total += logits.shape[0]
    return {"val_loss": sum(losses) / max(len(losses), 1), "val_top1": correct / max(total, 1)}
