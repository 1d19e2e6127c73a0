"""The sweep's query-level injection (``spike``: K patches appended to every non-gold document of a query) inside an
MTEB evaluation, so robustness lands in mteb's result files.

A spike depends on the query (the L2-normalised mean of 3 of its own tokens), so the injected corpus differs per
query: the condition cannot be a fixed corpus, and it lives in the model's ``similarity`` instead. The model knows
the task's collection (the same :class:`~lir_robust.data.collection.RetrievalSet` given to
:func:`lir_robust.patches.mteb.retrieval_task`), tags the query and document embeddings it hands to mteb with their
positions, and scores query i against the documents with query i's first K spikes appended to its non-gold
documents, drawn with the sweep's generator (``seed``, "spike", i) in the sweep's query order (the judged queries).
mteb files the results under ``experiments/head_<head>__injection_spike__k_<K>``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import torch

from lir_robust.attacks.generators import spike_patches
from lir_robust.core.errors import MtebIntegrationError
from lir_robust.data.collection import RetrievalSet
from lir_robust.patches.mteb import HeadScoredModel
from lir_robust.scoring.scorer import pad_with_mask

__all__ = ["SpikeInjectedModel"]


def _spike_generator(seed: int, query: int) -> torch.Generator:
    """The sweep's generator for query ``query``'s spikes (lir_robust.attacks.sources: parts seed, "spike", query)."""
    digest = hashlib.sha256("\x00".join(map(str, (seed, "spike", query))).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class SpikeInjectedModel(HeadScoredModel):
    """:class:`HeadScoredModel` under the sweep's ``spike`` injection at budget ``k`` on ``data``'s judged queries."""

    def __init__(self, encoder: Any, data: RetrievalSet, k: int, head=None, *, seed: int = 0, spike_tokens: int = 3,
                 **options: Any):
        super().__init__(encoder, head, **options)
        self.data, self.k, self.seed, self.spike_tokens = data, k, seed, spike_tokens
        query_position = {qid: i for i, qid in enumerate(data.judged_query_ids)}
        document_position = {docid: j for j, docid in enumerate(data.document_ids)}
        self._gold = [{document_position[docid] for docid in data.gold(qid)} for qid in data.judged_query_ids]
        self._query_of_text: dict[str, list[int]] = {}
        for qid, i in query_position.items():
            self._query_of_text.setdefault(data.queries[qid], []).append(i)
        self._tags: dict[int, tuple[str, int]] = {}  # id(tensor) -> ("query" | "document", position)

    @classmethod
    def from_model(cls, model: HeadScoredModel, data: RetrievalSet, k: int, head=None, *, seed: int = 0,
                   spike_tokens: int = 3) -> "SpikeInjectedModel":
        """``model`` (its encoder and stored embeddings) under the spike condition; ``head`` default: model's."""
        injected = cls(model.encoder, data, k, head if head is not None else model.head, seed=seed,
                       spike_tokens=spike_tokens, name=model.name, query_batch_size=model.query_batch_size,
                       document_batch_size=model.document_batch_size)
        injected._memo = model._memo
        return injected

    def with_head(self, head) -> "SpikeInjectedModel":
        other = SpikeInjectedModel(self.encoder, self.data, self.k, head, seed=self.seed, spike_tokens=self.spike_tokens,
                                   name=self.name, query_batch_size=self.query_batch_size,
                                   document_batch_size=self.document_batch_size)
        other._memo = self._memo
        return other

    def encode(self, inputs, *, prompt_type=None, **kwargs: Any) -> list[torch.Tensor]:
        vectors = super().encode(inputs, prompt_type=prompt_type, **kwargs)
        is_query = str(getattr(prompt_type, "value", prompt_type)) == "query"
        texts = [text for batch in inputs for text in batch["text"]]
        tagged = []
        if is_query:
            seen: dict[str, int] = {}
            for text, vector in zip(texts, vectors):
                positions = self._query_of_text[text]
                view = vector.view_as(vector)  # a tensor object of its own, so the tag is this query's
                self._tags[id(view)] = ("query", positions[seen.get(text, 0) % len(positions)])
                seen[text] = seen.get(text, 0) + 1
                tagged.append(view)
        else:
            ids = [row["id"] for row in inputs.dataset] if hasattr(inputs, "dataset") else None
            position = {docid: j for j, docid in enumerate(self.data.document_ids)}
            for index, vector in enumerate(vectors):
                view = vector.view_as(vector)
                self._tags[id(view)] = ("document", position[ids[index]])
                tagged.append(view)
        return tagged

    def spikes(self, query: int, vectors: torch.Tensor) -> torch.Tensor:
        """Query ``query``'s first ``k`` spikes ``[k, D]`` (the sweep's)."""
        return spike_patches(vectors, self.k, self.spike_tokens, _spike_generator(self.seed, query))

    def similarity(self, queries: Sequence[torch.Tensor], documents: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.k == 0:
            return super().similarity(queries, documents)
        tags = [self._tags.get(id(item)) for item in [*queries, *documents]]
        if None in tags:
            raise MtebIntegrationError("the spike condition scores the embeddings this model encoded for a full-corpus "
                                       "retrieval task; reranking tasks (top_ranked) are not supported")
        gold_mask = torch.zeros(len(queries), len(documents), dtype=torch.bool)
        for row, (_, i) in enumerate(tags[: len(queries)]):
            for column, (_, j) in enumerate(tags[len(queries):]):
                gold_mask[row, column] = j in self._gold[i]
        padded, mask = pad_with_mask([document.float() for document in documents])  # [Nd, Td, D], [Nd, Td]
        rows = []
        with torch.no_grad():
            for row, (query, (_, i)) in enumerate(zip(queries, tags)):
                query = query.float()
                patches = self.spikes(i, query)  # [k, D]
                clean = torch.matmul(padded, query.T).transpose(1, 2)  # [Nd, Tq, Td]
                spiked = (query @ patches.T).expand(len(documents), -1, -1)  # [Nd, Tq, k]
                similarities = torch.cat([clean, spiked], dim=2)
                document_mask = torch.cat([mask, ~gold_mask[row].unsqueeze(1).expand(-1, self.k)], dim=1)
                query_mask = torch.ones(len(documents), query.shape[0], dtype=torch.bool)
                per_token = self.head.pool(similarities, document_mask, query_mask)  # [Nd, Tq]
                rows.append(per_token.sum(dim=1))
        return torch.stack(rows)

    @property
    def mteb_model_meta(self):
        meta = super().mteb_model_meta
        return meta.model_copy(update={"experiment_kwargs": {"head": str(self.head), "injection": "spike", "k": self.k}})
