"""Search with a pooling head behind a PyLate index: candidates from the index, then the head over their vectors.

PyLate's token indexes (Voyager) and ``pylate.retrieve.ColBERT`` rank with MaxSim only. Here the index keeps its job
(approximate nearest-token search, then PyLate's MaxSim over the documents it reached) and hands each query's best
``candidates`` documents to the pooling head, which reranks them with the same masked scorer as exhaustive scoring
(:func:`lir_robust.scoring.scorer.score`)::

    from pylate import models
    from lir_robust.patches.pylate_search import build_index, search

    model = models.ColBERT("results/pylate-minilm")
    index = build_index("indexes/cranfield", ids, model.encode(texts, is_query=False))
    results = search(model, index, ["what is a boundary layer"], head="exclusive", k=10, candidates=100)
    # results[0] == [{"id": "184", "score": 21.3}, ...]: PyLate's RerankResult lists, ranked by the head

Conventions are PyLate 1.6.0's: document ids are strings, embeddings are lists of ``[L, H]`` arrays / tensors, the
results are ``pylate.rank.RerankResult`` dicts (``id``, ``score``) best first. With ``candidates`` = every document
(and ``k_token`` reaching every vector) the ranking is the exhaustive head's; with fewer it is the head's ranking
restricted to the index's candidates (tests/test_pylate_search.py).

The index (:data:`INDEX_KINDS`): PyLate's ``Voyager``. PLAID needs fast-plaid, whose builds pin older torches;
ScaNN, WARP and Tachiom need packages that are not installed. voyager 2.2 accepts only numpy arrays where PyLate
1.6.0 passes lists of vectors (``add_items``, ``query``) and refuses a search depth ``query_ef`` below ``k`` (PyLate
passes its ``ef_search`` whatever ``k``); :class:`_ArrayArguments` converts the one and deepens the other.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from lir_robust.core.errors import PylateIntegrationError, UserError
from lir_robust.patches.pylate import _pylate
from lir_robust.scoring.pooling import PoolingHead, parse_head
from lir_robust.scoring.scorer import score

__all__ = ["INDEX_KINDS", "build_index", "index_candidates", "rerank", "search", "search_embeddings", "with_patches"]

logger = logging.getLogger(__name__)

INDEX_KINDS = ("voyager",)
Vectors = Union[torch.Tensor, np.ndarray]


class _ArrayArguments:
    """A voyager ``Index`` as PyLate 1.6.0's Voyager calls it: voyager >= 2.2 takes only float32 numpy arrays in
    ``add_items`` and ``query`` and needs ``query_ef >= k``. Everything else goes to the index unchanged."""

    def __init__(self, index):
        self.wrapped = index
        self.short_rows = 0  # query vectors that reached fewer than k neighbours (see query)

    def add_items(self, vectors, *args, **kwargs):
        return self.wrapped.add_items(np.array(vectors, dtype=np.float32, ndmin=2), *args, **kwargs)

    def query(self, vectors, k: int = 1, query_ef: int = -1, **kwargs):
        # voyager 2.2 refuses query_ef < k (PyLate passes its ef_search whatever k): search at least k deep
        query_ef = max(query_ef, k) if query_ef > 0 else query_ef
        from voyager import RecallError

        vectors = np.array(vectors, dtype=np.float32, ndmin=2)
        try:
            return self.wrapped.query(vectors, k, query_ef=query_ef, **kwargs)
        except RecallError:  # fewer than k neighbours reachable for some vector
            pass
        # Many equal vectors (an injection appends the same patches to every document) cut the graph: some query
        # vectors reach fewer than k stored vectors, at any depth. PyLate would stop there; instead each such vector
        # keeps the neighbours it reaches (k halved until voyager answers), the last one repeated to fill the row
        # (the same document again: PyLate's candidate set is unchanged by it). Counted in ``short_rows``.
        deep = max(query_ef, 4 * k)
        indices = np.empty((len(vectors), k), dtype=np.uint64)
        distances = np.empty((len(vectors), k), dtype=np.float32)
        for row, vector in enumerate(vectors):
            want = k
            while True:
                try:
                    found, far = self.wrapped.query(vector[None], want, query_ef=max(deep, want), **kwargs)
                    break
                except RecallError:
                    if want == 1:
                        raise PylateIntegrationError(
                            "the Voyager index returned no neighbour for a query vector; fix: rebuild it with a "
                            "larger M (--index-m)") from None
                    want //= 2
            if want < k:
                self.short_rows += 1
                logger.warning("Voyager reached only %d of %d neighbours of a query vector (equal vectors cut the "
                               "graph); the row is padded with its last neighbour", want, k)
            indices[row, :want], distances[row, :want] = found[0], far[0]
            indices[row, want:], distances[row, want:] = found[0, -1], far[0, -1]
        return indices, distances

    def __getattr__(self, name):
        return getattr(self.wrapped, name)


def _numpy(vectors: Vectors) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        return vectors.detach().float().cpu().numpy()
    return np.asarray(vectors, dtype=np.float32)


def _voyager(folder: Union[str, os.PathLike], embedding_size: int, override: bool, **options):
    pylate = _pylate()
    import pylate.indexes  # noqa: F401

    try:
        import voyager  # noqa: F401
    except ImportError:
        raise PylateIntegrationError("the Voyager index needs the voyager package; fix: pip install voyager==2.2.3") from None
    folder = os.fspath(folder)
    index = pylate.indexes.Voyager(index_folder=os.path.dirname(folder) or ".", index_name=os.path.basename(folder),
                                   override=override, embedding_size=embedding_size, **options)
    index.index = _ArrayArguments(index.index)
    return index


def build_index(
    folder: Union[str, os.PathLike],
    documents_ids: Sequence[str],
    documents_embeddings: Sequence[Vectors],
    kind: str = "voyager",
    **options: Any,
):
    """A new PyLate index in ``folder`` (replaced) holding ``documents_embeddings[i] [L_i, H]`` under
    ``documents_ids[i]``. ``options`` go to the index (Voyager: ``M``, ``ef_construction``, ``ef_search``)."""
    if kind not in INDEX_KINDS:
        raise UserError(f"unknown index {kind!r}; fix: choose one of {', '.join(INDEX_KINDS)}")
    if len(documents_ids) != len(documents_embeddings) or not len(documents_ids):
        raise ValueError(f"{len(documents_ids)} document ids for {len(documents_embeddings)} documents (need as many, >= 1)")
    arrays = [_numpy(item) for item in documents_embeddings]
    index = _voyager(folder, arrays[0].shape[-1], override=True, **options)
    index.add_documents(documents_ids=[str(docid) for docid in documents_ids], documents_embeddings=arrays)
    return index


def with_patches(index, folder: Union[str, os.PathLike], patches: Mapping[str, Vectors]):
    """A copy of ``index`` in ``folder`` whose documents ``patches`` names also hold the injected patches
    ``patches[id] [K, H]`` (indexed like their own vectors: they can be found by the nearest-token search and they
    are part of the documents' stored vectors). ``index`` itself is unchanged."""
    stored = getattr(index, "_lir_robust_bytes", None)
    if stored is None:  # serialised once per index: every attacked copy starts from the same bytes
        buffer = io.BytesIO()
        index.index.wrapped.save(buffer)
        stored = index._lir_robust_bytes = buffer.getvalue()
    import voyager

    copy = _voyager(folder, index.index.num_dimensions, override=True)
    copy.index = _ArrayArguments(voyager.Index.load(io.BytesIO(stored)))
    copy.ef_search = index.ef_search
    to_vectors, to_documents = index._load_documents_ids_to_embeddings(), index._load_embeddings_to_documents_ids()
    names = list(patches)
    if names:
        arrays = [_numpy(patches[name]) for name in names]
        added = copy.index.add_items(np.concatenate(arrays))
        offset = 0
        for name, array in zip(names, arrays):
            new = list(added[offset : offset + len(array)])
            offset += len(array)
            to_vectors[name] = list(to_vectors[name]) + new
            to_documents.update(dict.fromkeys(new, name))
    copy._save_mappings(to_vectors, to_documents)
    return copy


def index_candidates(index, queries_embeddings: Sequence[Vectors], candidates: int, k_token: Optional[int] = None,
                     batch_size: int = 4) -> list[list[dict]]:
    """Each query's ``candidates`` best documents by PyLate's own path (``retrieve.ColBERT``: the ``k_token`` nearest
    stored vectors of each query token, then MaxSim over the documents they belong to): RerankResult lists.

    ``batch_size`` queries at a time (PyLate's default is 50): PyLate fetches every vector of every document a batch
    reaches at once, and on a small corpus the ``k_token`` hits of 32 query tokens reach most of it (Cranfield, 50
    queries: more than 8 million vectors, which voyager refused)."""
    pylate = _pylate()
    import pylate.retrieve  # noqa: F401

    k_token = max(candidates, k_token or pylate.retrieve.ColBERT.default_k_token)
    retriever = pylate.retrieve.ColBERT(index=index)
    retriever._show_progress = lambda: False
    return retriever.retrieve(queries_embeddings=[_numpy(query) for query in queries_embeddings], k=candidates,
                              k_token=k_token, device="cpu", batch_size=batch_size)


def rerank(
    documents_ids: Sequence[Sequence[str]],
    queries_embeddings: Sequence[Vectors],
    documents_embeddings: Sequence[Sequence[Vectors]],
    head: Union[str, PoolingHead, dict] = "maxsim",
) -> list[list[dict]]:
    """``pylate.rank.rerank`` with a pooling head: per query ``[Tq, H]``, its candidates' ids and ``[L, H]``
    embeddings -> RerankResult lists ranked by the head (score descending, ties by id descending, as trec_eval).
    The scores are :func:`lir_robust.scoring.scorer.score`'s (masked, float32): those exhaustive scoring gives."""
    head = parse_head(head)
    results = []
    for query, ids, documents in zip(queries_embeddings, documents_ids, documents_embeddings):
        if not len(ids):
            results.append([])
            continue
        values = score([torch.as_tensor(_numpy(query))], [torch.as_tensor(_numpy(item)) for item in documents], head)[0]
        ranked = sorted(zip(values.tolist(), ids), key=lambda pair: (pair[0], pair[1]), reverse=True)
        results.append([{"id": docid, "score": value} for value, docid in ranked])
    return results


def search_embeddings(
    index,
    queries_embeddings: Sequence[Vectors],
    head: Union[str, PoolingHead, dict] = "maxsim",
    k: int = 10,
    candidates: int = 100,
    documents_embeddings: Optional[Mapping[str, Vectors]] = None,
    k_token: Optional[int] = None,
) -> list[list[dict]]:
    """Per query ``[Tq, H]``: its ``k`` best documents by ``head`` among the index's ``candidates`` (RerankResult
    lists). The candidates' vectors are ``documents_embeddings[id]`` when given (e.g. the embedding cache, exactly
    what exhaustive scoring reads), else the index's stored vectors (Voyager keeps them L2-normalised)."""
    if k < 1 or candidates < 1:
        raise ValueError(f"k and candidates must be >= 1, got {k} and {candidates}")
    found = index_candidates(index, queries_embeddings, candidates, k_token)
    ids = [[result["id"] for result in query_results] for query_results in found]
    if documents_embeddings is None:
        vectors = index.get_documents_embeddings(ids)
    else:
        vectors = [[documents_embeddings[docid] for docid in query_ids] for query_ids in ids]
    return [ranked[:k] for ranked in rerank(ids, queries_embeddings, vectors, head)]


def _query_encoder(model) -> Callable[[Sequence[str]], list]:
    if hasattr(model, "encode_queries"):  # a lir-robust encoder (lir_robust.encoders.load.load_encoder)
        return model.encode_queries
    if hasattr(model, "encode"):  # a PyLate model
        return lambda texts: model.encode(list(texts), is_query=True, show_progress_bar=False)
    raise TypeError(f"expected a PyLate model or a lir-robust encoder, got {type(model).__name__}")


def search(
    model,
    index,
    queries: Sequence[str],
    head: Union[str, PoolingHead, dict] = "maxsim",
    k: int = 10,
    candidates: int = 100,
    documents_embeddings: Optional[Mapping[str, Vectors]] = None,
    k_token: Optional[int] = None,
) -> list[list[dict]]:
    """Query texts -> each query's ``k`` best documents by ``head`` among the index's ``candidates``: the queries are
    encoded by ``model`` (a PyLate model, or a lir-robust encoder), then :func:`search_embeddings`."""
    if isinstance(queries, str):
        queries = [queries]
    return search_embeddings(index, _query_encoder(model)(queries), head, k, candidates, documents_embeddings, k_token)
