"""MTEB integration: a lir-robust checkpoint as an MTEB model that scores with its pooling head; BEIR folders as tasks.

This is the only module of lir-robust that imports ``mteb``, and it does so lazily, after :func:`check_mteb_version`
(supported: ``>=2.26,<2.27``: the encoder protocol, ``ModelMeta`` and the retrieval task layout it was written for).

- :class:`HeadScoredModel` implements mteb's encoder protocol for a multi-vector model, as mteb's own late-interaction
  wrappers do (``MultiVectorModel`` for PyLate, ``ColPaliEngineWrapper`` whose ``similarity`` is the processor's
  score): ``encode`` returns one ``[L_i, D]`` float32 tensor per input (valid rows only; mteb's search keeps ragged
  lists as they are), ``similarity(queries, documents)`` -> ``[Nq, Nd]`` is
  :func:`lir_robust.scoring.scorer.score` with the head (masked; a padded ``[N, L, D]`` tensor is read with the
  colpali-engine rule, zero or NaN rows are padding, so padding never changes a score), ``similarity_pairwise`` ->
  ``[N]``. The head is the checkpoint's own (pooling.json) unless one is named; ``mteb_model_meta`` names it in
  ``experiment_kwargs`` (``{"head": "topk:k=4"}``), so mteb files each head's results in its own folder.
- :func:`retrieval_task` turns a :class:`~lir_robust.data.collection.RetrievalSet` (a local BEIR folder, or page
  images such as a local ViDoRe copy) into an MTEB retrieval task (corpus ``title + " " + text`` as the project
  encodes it, or ViDoRe's schema: an ``image`` column of PIL pages, category t2i; the judged queries, the graded
  qrels) that runs through mteb's own evaluation and result files, offline.
- :func:`named_task` returns an MTEB task by name (``VidoreArxivQARetrieval``); an unknown name, or a task whose data
  is on the Hub while the Hub is offline, ends in one line (:class:`~lir_robust.core.errors.MtebIntegrationError`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Sequence

import torch

from lir_robust.core.errors import HubUnreachableError, MtebIntegrationError, MtebVersionError
from lir_robust.core.huggingface import check_version, hub_offline
from lir_robust.data.collection import RetrievalSet
from lir_robust.scoring.pooling import PoolingHead, parse_head
from lir_robust.scoring.scorer import as_multi_vectors, paired_scores, pad_with_mask, score

__all__ = [
    "MINIMUM_VERSION",
    "BELOW_VERSION",
    "check_mteb_version",
    "HeadScoredModel",
    "retrieval_task",
    "named_task",
    "load_task_data",
]

logger = logging.getLogger(__name__)

MINIMUM_VERSION = (2, 26)
BELOW_VERSION = (2, 27)
INSTALL_FIX = "pip install 'mteb>=2.26,<2.27'"


def check_mteb_version() -> str:
    """Return the installed mteb version; raise MtebVersionError if it is missing or outside >=2.26,<2.27."""
    return check_version(
        "mteb", MINIMUM_VERSION, BELOW_VERSION, MtebVersionError, INSTALL_FIX,
        "the encoder protocol, ModelMeta and the retrieval task layout this module implements",
        needed_by="lir_robust.patches.mteb",
    )


def _mteb():
    check_mteb_version()
    import mteb

    return mteb


class HeadScoredModel:
    """A lir-robust encoder (``lir_robust.encoders.load.load_encoder``: minilm, folders, PyLate models, published
    ids, colpali-engine models) in mteb's encoder protocol, scoring with a pooling head.

    Embeddings are kept per (query or document, text) for the model's life, so evaluating several heads
    (:meth:`with_head`) encodes each text once.
    """

    def __init__(self, encoder: Any, head: str | PoolingHead | None = None, *, name: str = "minilm",
                 query_batch_size: int = 64, document_batch_size: int = 128):
        self.encoder = encoder
        self.head = parse_head(head) if head is not None else (encoder.pooling or parse_head("maxsim"))
        self.name = name
        self.query_batch_size = query_batch_size
        self.document_batch_size = document_batch_size
        self._memo: dict[tuple[bool, str], torch.Tensor] = {}

    def with_head(self, head: str | PoolingHead) -> "HeadScoredModel":
        """The same encoder (and its stored embeddings) scoring with another head."""
        other = HeadScoredModel(self.encoder, head, name=self.name, query_batch_size=self.query_batch_size,
                                document_batch_size=self.document_batch_size)
        other._memo = self._memo
        return other

    # -- mteb's encoder protocol
    def encode(self, inputs, *, task_metadata=None, hf_split: str = "", hf_subset: str = "", prompt_type=None,
               **kwargs: Any) -> list[torch.Tensor]:
        """A DataLoader of mteb batches -> one ``[L_i, D]`` float32 CPU tensor per item, in order."""
        is_query = str(getattr(prompt_type, "value", prompt_type)) == "query"
        features = getattr(getattr(inputs, "dataset", None), "features", {}) or {}
        if not is_query and "image" in features and getattr(self.encoder, "modality", "text") == "image":
            images = [image for batch in inputs for image in batch["image"]]
            return self.encoder.encode_documents(images)
        return self.embeddings([text for batch in inputs for text in batch["text"]], is_query=is_query)

    def embeddings(self, texts: Sequence[str], *, is_query: bool) -> list[torch.Tensor]:
        """``[L_i, D]`` embeddings of ``texts`` from the model's memo, encoding (once) the texts not in it yet."""
        missing = list(dict.fromkeys(text for text in texts if (is_query, text) not in self._memo))
        if missing:
            encode = self.encoder.encode_queries if is_query else self.encoder.encode_documents
            for text, vectors in zip(missing, encode(missing)):
                self._memo[(is_query, text)] = vectors
        return [self._memo[(is_query, text)] for text in texts]

    def similarity(self, queries: Sequence[torch.Tensor] | torch.Tensor,
                   documents: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Queries (list of ``[Tq_i, D]`` or padded ``[Nq, Tq, D]``) x documents -> float32 ``[Nq, Nd]``, by the head."""
        return score(_as_tensors(queries), _as_tensors(documents), self.head,
                     query_batch_size=self.query_batch_size, document_batch_size=self.document_batch_size)

    def similarity_pairwise(self, queries: Sequence[torch.Tensor] | torch.Tensor,
                            documents: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Query i with document i -> float32 ``[N]``, by the head (masked)."""
        query_items = as_multi_vectors(_as_tensors(queries), what="queries").items
        document_items = as_multi_vectors(_as_tensors(documents), what="documents", allow_empty=True).items
        if len(query_items) != len(document_items):
            raise ValueError(f"{len(query_items)} queries but {len(document_items)} documents: pairs need as many of each")
        query_block, query_mask = pad_with_mask(query_items)
        document_block, document_mask = pad_with_mask(document_items)
        with torch.no_grad():
            return paired_scores(query_block.float(), query_mask, document_block.float(), document_mask, self.head)

    @property
    def mteb_model_meta(self):
        """mteb's ModelMeta: the model's name, a revision from its settings, the head in ``experiment_kwargs``."""
        from mteb.models.model_meta import ModelMeta, ScoringFunction

        _mteb()
        settings = json.dumps(self.encoder.config, sort_keys=True, default=str)
        name = self.name if "/" in self.name else f"lir-robust/{self.name}"
        return ModelMeta(
            loader=None, name=name, revision=hashlib.sha256(settings.encode()).hexdigest()[:12],
            release_date=None, languages=None, n_parameters=None, memory_usage_mb=None, max_tokens=None,
            embed_dim=None, license=None, open_weights=None, public_training_code=None, public_training_data=None,
            framework=["PyTorch"], reference=None,
            similarity_fn_name=ScoringFunction.MAX_SIM if str(self.head) == "maxsim" else ScoringFunction.CUSTOM,
            use_instructions=False, training_datasets=None, model_type=["late-interaction"],
            modalities=["text", "image"] if getattr(self.encoder, "modality", "text") == "image" else ["text"],
            experiment_kwargs={"head": str(self.head)},
        )


def _as_tensors(embeddings: Any) -> Any:
    """A list (or numpy array) of per-item arrays -> float32 tensors; a padded tensor as it is."""
    if isinstance(embeddings, torch.Tensor):
        return embeddings.float()
    return [torch.as_tensor(item).float() for item in embeddings]


def retrieval_task(data: RetrievalSet, name: str | None = None):
    """An MTEB retrieval task holding ``data``: documents as the project encodes them (text: ``title + " " + text``;
    page images: ViDoRe's schema, an ``image`` column of PIL images, category t2i as mteb's ViDoRe tasks), the judged
    queries (at least one document with grade > 0, the ones the project evaluates), the graded qrels. ``name``: the
    task's name in mteb's result files (default ``Local<Name>Retrieval``)."""
    mteb = _mteb()
    from datasets import Dataset, Features, Image, Value
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    task_name = name or "Local" + "".join(part.capitalize() for part in _words(data.name)) + "Retrieval"
    judged = data.judged_query_ids
    if data.modality == "text":
        corpus = Dataset.from_dict({"id": data.document_ids, "text": data.document_texts()})
    else:
        corpus = Dataset.from_dict({"id": data.document_ids, "image": data.document_images()},
                                   features=Features({"id": Value("string"), "image": Image()}))
    split = {
        "corpus": corpus,
        "queries": Dataset.from_dict({"id": judged, "text": [data.queries[qid] for qid in judged]}),
        "relevant_docs": {qid: {docid: int(grade) for docid, grade in data.qrels[qid].items()} for qid in judged},
        "top_ranked": None,
    }

    class LocalBeirRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=task_name, description=f"{data.name}: a local BEIR folder ({data.source or 'in memory'})",
            dataset={"path": data.source or data.name, "revision": data.fingerprint()},
            type="Retrieval", category="t2t" if data.modality == "text" else "t2i",
            modalities=["text"] if data.modality == "text" else ["text", "image"], eval_splits=["test"], eval_langs=["eng-Latn"],
            main_score="ndcg_at_10", is_public=True,
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            self.dataset = {"default": {"test": dict(split)}}
            self.data_loaded = True

    logger.debug("mteb %s: task %s", mteb.__version__, task_name)
    return LocalBeirRetrieval()


def _words(text: str) -> list[str]:
    return [word for word in "".join(c if c.isalnum() else " " for c in text).split() if word]


def named_task(name: str):
    """An MTEB task by name (``VidoreArxivQARetrieval``); MtebIntegrationError (one line) for a name mteb does not
    know. Its data loads on first use (:func:`load_task_data`)."""
    mteb = _mteb()
    try:
        return mteb.get_task(name)
    except (KeyError, ValueError) as error:
        first = str(error).strip().strip("'\"").splitlines()[0] if str(error).strip() else ""
        raise MtebIntegrationError(
            f"--tasks {name}: neither a local BEIR folder / collection name nor an MTEB task name ({first[:160]}); "
            "pass a BEIR folder or a name from `mteb.get_tasks()`"
        ) from None


def load_task_data(task) -> None:
    """Load a named task's data from the Hub, or raise HubUnreachableError in one line when offline / unreachable."""
    name = task.metadata.name
    path = task.metadata.dataset.get("path", "?")
    if hub_offline(datasets=True):
        raise HubUnreachableError(
            f"MTEB task {name} reads its data set {path} from the Hugging Face Hub, but the Hub is offline "
            "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); run it with Hub access, or pass a local BEIR folder to --tasks"
        )
    try:
        task.load_data()
    except (ConnectionError, OSError, TimeoutError) as error:
        raise HubUnreachableError(
            f"MTEB task {name}: its data set {path} could not be fetched from the Hub ({type(error).__name__}); "
            "check the connection, or pass a local BEIR folder to --tasks"
        ) from None
