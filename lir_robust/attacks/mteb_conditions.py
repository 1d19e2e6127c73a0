"""The sweep's injection conditions inside an MTEB evaluation (``spike``, ``hard``, ``gaussian``, ``corpus``: K
patches appended to documents, the sweep's own patches), so robustness lands in mteb's result files.

A spike or hard patch depends on the query, so the injected corpus differs per query: the condition cannot be a
fixed corpus, and it lives in the model's ``similarity`` instead. :class:`InjectedModel` knows the task's collection
(the :class:`~lir_robust.data.collection.RetrievalSet` given to :func:`lir_robust.patches.mteb.retrieval_task`),
tags the query and document embeddings it hands to mteb with their positions, and scores query i against a document
with the patches that document gets for query i in the sweep. The patches come from the sweep's own
:class:`~lir_robust.attacks.sources.PatchSource` (the same seed, spike tokens, pool blocks and targets:
:data:`~lir_robust.attacks.kinds.DEFAULT_TARGETS`, hard / spike into non-gold documents, gaussian / corpus into all),
built at the first similarity call over every judged query (the sweep's order, ``data.judged_query_ids``) and the
whole corpus, encoded through the model's memo (so mteb's own encode passes cost nothing more). So the patches are
the sweep's by construction: nDCG@10 through mteb equals a sweep run with ``--ks 0 K`` (``grid``: the sweep's budget
grid, which places gaussian / corpus blocks; hard and spike take the first K patches of any grid).

Scoring stays vectorised per query: a query-level kind (hard, spike) is one ``[K, D]`` block scored once against the
query and appended to every targeted document (masked for gold documents); a document-level kind (gaussian, corpus)
gives each document its ``[K, D]`` block, drawn once for the model's life. The few-document attacks (``KIND@N``) are
refused in one line. mteb files the results under ``experiments/head_<head>__injection_<kind>__k_<K>``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from lir_robust.attacks.kinds import DOCUMENT_LEVEL_KINDS, KINDS, InjectionSettings, parse_injection
from lir_robust.attacks.sources import PatchSource
from lir_robust.core.errors import MtebIntegrationError
from lir_robust.data.collection import RetrievalSet
from lir_robust.encoders.flat_corpus import FlatCorpus
from lir_robust.patches.mteb import HeadScoredModel
from lir_robust.scoring.scorer import pad_with_mask

__all__ = ["InjectedModel", "parse_condition"]


def parse_condition(text: str) -> tuple[str, int]:
    """``"hard:4"`` -> ``("hard", 4)``; ValueError (one line) for an unknown kind, a few-document attack ``KIND@N``
    or K not an integer >= 1."""
    kind, colon, count = str(text).strip().lower().partition(":")
    if not colon or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"{text!r}: an injection condition is KIND:K with K an integer >= 1 (e.g. hard:4)")
    kind, attacked = parse_injection(kind)
    if attacked is not None:
        raise ValueError(f"{text!r}: the few-document attacks (KIND@N) are not MTEB conditions; use one of "
                         f"{', '.join(KINDS)}")
    return kind, int(count)


class InjectedModel(HeadScoredModel):
    """:class:`HeadScoredModel` under the sweep's ``kind`` injection at budget ``k`` on ``data``'s judged queries.

    ``settings``: the sweep's :class:`InjectionSettings` (seed, spike tokens, targets, pool blocks); ``grid``: the
    sweep's budgets (default ``[0, k]``; gaussian / corpus blocks are placed per budget interval).
    """

    def __init__(self, encoder: Any, data: RetrievalSet, kind: str, k: int, head=None, *,
                 settings: InjectionSettings | None = None, grid: Sequence[int] | None = None, **options: Any):
        super().__init__(encoder, head, **options)
        try:
            kind, attacked = parse_injection(kind)
        except ValueError as error:
            raise MtebIntegrationError(str(error)) from None
        if attacked is not None:
            raise MtebIntegrationError(f"{kind}@{attacked}: the few-document attacks are not MTEB conditions; use one "
                                       f"of {', '.join(KINDS)}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise MtebIntegrationError(f"injection budget K must be an integer >= 0, got {k!r}")
        self.data, self.kind, self.k = data, kind, k
        self.settings = settings or InjectionSettings()
        self.grid = sorted({0, k, *(int(budget) for budget in grid or [])})
        self._query_of_text: dict[str, list[int]] = {}
        for i, qid in enumerate(data.judged_query_ids):
            self._query_of_text.setdefault(data.queries[qid], []).append(i)
        self._document_position = {docid: j for j, docid in enumerate(data.document_ids)}
        self._gold = [sorted(self._document_position[docid] for docid in data.gold(qid)) for qid in data.judged_query_ids]
        self._tags: dict[int, tuple[str, int, torch.Tensor]] = {}  # id(view) -> (role, position, the view: keeps the id)
        self._source: PatchSource | None = None
        self._query_patches: dict[int, torch.Tensor] = {}
        self._document_patches: torch.Tensor | None = None  # [Nd, k, D] for document-level kinds

    @classmethod
    def from_model(cls, model: HeadScoredModel, data: RetrievalSet, kind: str, k: int, head=None, **options: Any
                   ) -> "InjectedModel":
        """``model`` (its encoder and stored embeddings) under the condition; ``head`` default: model's."""
        injected = cls(model.encoder, data, kind, k, head if head is not None else model.head, name=model.name,
                       query_batch_size=model.query_batch_size, document_batch_size=model.document_batch_size,
                       **options)
        injected._memo = model._memo
        return injected

    def with_head(self, head) -> "InjectedModel":
        """The same condition (patches, embeddings) scored with another head."""
        other = InjectedModel.from_model(self, self.data, self.kind, self.k, head, settings=self.settings, grid=self.grid)
        other._source, other._query_patches, other._document_patches = self._source, self._query_patches, self._document_patches
        return other

    @property
    def target(self) -> str:
        return self.settings.target(self.kind)

    # -- the sweep's patches
    def source(self) -> PatchSource:
        """The sweep's PatchSource over every judged query and the whole corpus (built once, through the memo)."""
        if self._source is None:
            judged = self.data.judged_query_ids
            queries = [q.float() for q in self.embeddings([self.data.queries[qid] for qid in judged], is_query=True)]
            corpus = FlatCorpus.from_documents(self.embeddings(self.data.document_texts(), is_query=False))
            self._source = PatchSource(self.kind, self.grid, self.settings, queries, corpus, self._gold)
        return self._source

    def query_patches(self, query: int) -> torch.Tensor:
        """Query ``query``'s ``[k, D]`` patches (hard, spike), the same for every targeted document."""
        if query not in self._query_patches:
            self._query_patches[query] = self.source().query_patches(query)[: self.k].float()
        return self._query_patches[query]

    def document_patches(self) -> torch.Tensor:
        """Every document's ``[k, D]`` patches (gaussian, corpus) as ``[Nd, k, D]``, drawn once."""
        if self._document_patches is None:
            source = self.source()
            self._document_patches = torch.stack(
                [source.document_patches(j)[: self.k].float() for j in range(len(self.data.document_ids))])
        return self._document_patches

    # -- mteb's encoder protocol
    def encode(self, inputs, *, prompt_type=None, **kwargs: Any) -> list[torch.Tensor]:
        vectors = super().encode(inputs, prompt_type=prompt_type, **kwargs)
        is_query = str(getattr(prompt_type, "value", prompt_type)) == "query"
        texts = [text for batch in inputs for text in batch["text"]]
        ids = [row["id"] for row in inputs.dataset] if not is_query and hasattr(inputs, "dataset") else None
        seen: dict[str, int] = {}
        tagged = []
        for index, (text, vector) in enumerate(zip(texts, vectors)):
            view = vector.view_as(vector)  # a tensor object of its own, so the tag is this item's
            if is_query:
                positions = self._query_of_text.get(text)
                if positions is None:
                    raise MtebIntegrationError("the injection condition scores the judged queries of the task built "
                                               "from its own collection (lir_robust.patches.mteb.retrieval_task)")
                position = positions[seen.get(text, 0) % len(positions)]
                seen[text] = seen.get(text, 0) + 1
            else:
                position = self._document_position[ids[index]]
            self._tags[id(view)] = ("query" if is_query else "document", position, view)
            tagged.append(view)
        return tagged

    def _positions(self, items: Sequence[torch.Tensor], role: str) -> list[int]:
        tags = [] if isinstance(items, torch.Tensor) else [self._tags.get(id(item)) for item in items]
        if not tags or any(tag is None or tag[0] != role or tag[2] is not item for tag, item in zip(tags, items)):
            raise MtebIntegrationError("the injection condition scores the embeddings this model encoded for a "
                                       "full-corpus retrieval task; reranking tasks (top_ranked) are not supported")
        return [tag[1] for tag in tags]

    def similarity(self, queries: Sequence[torch.Tensor], documents: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.k == 0:
            return super().similarity(queries, documents)
        query_positions = self._positions(queries, "query")
        columns = torch.tensor(self._positions(documents, "document"), dtype=torch.long)
        padded, mask = pad_with_mask([document.float() for document in documents])  # [Nd, Td, D], [Nd, Td]
        document_level = self.kind in DOCUMENT_LEVEL_KINDS
        patches = self.document_patches()[columns] if document_level else None  # [Nd, k, D]
        is_gold = torch.zeros(len(self.data.document_ids), dtype=torch.bool)
        rows = []
        with torch.no_grad():
            for query, i in zip(queries, query_positions):
                query = query.float()
                clean = torch.matmul(padded, query.T).transpose(1, 2)  # [Nd, Tq, Td]
                if document_level:
                    injected = torch.einsum("td,nkd->ntk", query, patches)  # [Nd, Tq, k]
                else:
                    injected = (query @ self.query_patches(i).T).expand(len(documents), -1, -1)  # [Nd, Tq, k]
                targeted = torch.ones(len(documents), dtype=torch.bool)
                if self.target == "non-gold":
                    is_gold[self._gold[i]] = True
                    targeted = ~is_gold[columns]
                    is_gold[self._gold[i]] = False
                document_mask = torch.cat([mask, targeted.unsqueeze(1).expand(-1, self.k)], dim=1)
                query_mask = torch.ones(len(documents), query.shape[0], dtype=torch.bool)
                per_token = self.head.pool(torch.cat([clean, injected], dim=2), document_mask, query_mask)  # [Nd, Tq]
                rows.append(per_token.sum(dim=1))
        return torch.stack(rows)

    @property
    def mteb_model_meta(self):
        meta = super().mteb_model_meta
        return meta.model_copy(update={"experiment_kwargs": {"head": str(self.head), "injection": self.kind, "k": self.k}})
