"""Query x document late-interaction scoring with any pooling head: masks, padding and chunking.

Inputs are what colpali-engine's processors accept: a list of ``[L, D]`` tensors of different lengths, or a padded
``[N, L, D]`` tensor (optionally with a ``[N, L]`` mask). Masks come from the list lengths or from the given mask;
with a padded tensor and no mask, rows that are exactly zero (colpali-engine pads with zero vectors) are padding.

One rule for both forms: a row that contains NaN is dropped, with a warning (colpali-engine models multiply padded
positions by 0, and NaN * 0 stays NaN). A document left without any valid patch scores -inf under every head (it
ranks below every real document, never above); a query without any valid token is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Sequence, Union

import torch
from tqdm.auto import tqdm

from lir_robust.scoring.pooling import PoolingHead, parse_head
from lir_robust.scoring.pooling.compiled import can_compile
from lir_robust.scoring.pooling.shared import prefix_lengths

__all__ = [
    "MultiVectors",
    "as_multi_vectors",
    "late_interaction_scores",
    "paired_scores",
    "score",
]

logger = logging.getLogger(__name__)

# Largest similarity block one pooling-head call sees at inference (elements; 2^20 floats = 4 MiB, which stays in
# cache across the passes of a multi-pass head; `make bench-scoring` measures the heads with it).
HEAD_BLOCK_ELEMENTS = 1 << 20

Embeddings = Union[Sequence[torch.Tensor], torch.Tensor]


@dataclass
class MultiVectors:
    """A set of multi-vector embeddings, kept unpadded.

    ``items[i]`` is ``[L_i, D]`` holding only the valid rows of the i-th query / document.
    """

    items: list[torch.Tensor]

    @property
    def dim(self) -> int:
        return self.items[0].shape[-1]

    @property
    def lengths(self) -> torch.Tensor:
        return torch.tensor([item.shape[0] for item in self.items], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.items)

    def padded(self, indices: Sequence[int] | None = None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-padded ``[n, L_max, D]`` float tensor and bool mask ``[n, L_max]`` of the selected items."""
        chosen = self.items if indices is None else [self.items[i] for i in indices]
        return pad_with_mask(chosen, device=device)


def pad_with_mask(items: Sequence[torch.Tensor], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``[L_i, D]`` tensors with zeros: ``([n, L_max, D], mask [n, L_max])``; at least one (masked) column
    even when every item is empty."""
    lengths = torch.tensor([item.shape[0] for item in items], device=device)
    padded = torch.nn.utils.rnn.pad_sequence([item.to(device) for item in items], batch_first=True)
    if padded.shape[1] == 0:
        padded = padded.new_zeros(padded.shape[0], 1, padded.shape[2])
    mask = torch.arange(padded.shape[1], device=device).unsqueeze(0) < lengths.unsqueeze(1)
    return padded, mask


def _describe(what: str) -> str:
    return f"{what}: pass a list of [tokens, dim] tensors or a padded [n, tokens, dim] tensor"


def padding_mask_from_values(padded: torch.Tensor) -> torch.Tensor:
    """colpali-engine's convention for a padded ``[N, L, D]`` tensor without mask: zero or NaN rows are padding."""
    is_zero = (padded == 0).all(dim=-1)
    has_nan = torch.isnan(padded).any(dim=-1)
    if bool(has_nan.any()):
        logger.warning("%d embedding rows contain NaN and are treated as padding", int(has_nan.sum()))
    return ~(is_zero | has_nan)


def _drop_nan_rows(items: list[torch.Tensor], what: str) -> list[torch.Tensor]:
    """The NaN rule for unpadded items: rows containing NaN are dropped, with one warning."""
    bad = [torch.isnan(item).any(dim=-1) if item.is_floating_point() else None for item in items]
    count = sum(int(rows.sum()) for rows in bad if rows is not None)
    if not count:
        return items
    logger.warning("%s: %d embedding rows contain NaN and are dropped (treated as padding)", what, count)
    return [item if rows is None or not bool(rows.any()) else item[~rows] for item, rows in zip(items, bad)]


def as_multi_vectors(
    embeddings: Embeddings, mask: torch.Tensor | None = None, what: str = "embeddings", allow_empty: bool = False
) -> MultiVectors:
    """Normalise any accepted input to unpadded ``MultiVectors``, checking shapes; rows holding NaN are dropped.

    Raises ValueError naming the problem (a 1-D / 2-D tensor, a wrong mask shape, an item without valid rows unless
    ``allow_empty``: documents may be empty, they then score -inf).
    """
    if isinstance(embeddings, MultiVectors):
        return embeddings
    if isinstance(embeddings, torch.Tensor):
        if embeddings.dim() != 3:
            raise ValueError(
                f"{what} is a {embeddings.dim()}-D tensor of shape {tuple(embeddings.shape)}; "
                + _describe("expected 3-D")
                + " (wrap a single [tokens, dim] tensor in a list)"
            )
        if mask is None:
            mask = padding_mask_from_values(embeddings)
        elif tuple(mask.shape) != tuple(embeddings.shape[:2]):
            raise ValueError(f"{what}: mask shape {tuple(mask.shape)} does not match embeddings {tuple(embeddings.shape[:2])}")
        mask = mask.to(torch.bool)
        items = _drop_nan_rows([embeddings[i][mask[i]] for i in range(embeddings.shape[0])], what)
    else:
        if mask is not None:
            raise ValueError(f"{what}: a mask is only accepted with a padded 3-D tensor; a list carries its lengths")
        items = list(embeddings)
        if not items:
            raise ValueError(f"{what} is empty")
        for index, item in enumerate(items):
            if not isinstance(item, torch.Tensor) or item.dim() != 2:
                shape = tuple(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__
                raise ValueError(f"{what}[{index}] has shape {shape}; expected a 2-D [tokens, dim] tensor")
        items = _drop_nan_rows(items, what)
    if not items:
        raise ValueError(f"{what} is empty")
    dims = {item.shape[-1] for item in items}
    if len(dims) > 1:
        raise ValueError(f"{what} mix embedding dimensions {sorted(dims)}")
    empty = [index for index, item in enumerate(items) if item.shape[0] == 0]
    if empty and allow_empty:
        logger.warning("%s %s%s have no valid rows: they score -inf under every head", what, empty[:10], " ..." if len(empty) > 10 else "")
    elif empty:
        raise ValueError(
            f"{what} {empty[:10]}{' ...' if len(empty) > 10 else ''} have no valid tokens / patches "
            "(all rows padding); drop them or give them at least one token"
        )
    return MultiVectors(items)


def _zero_padding(embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float32 ``[N, L, D]`` with masked rows set to 0 (NaN included); no copy when nothing is masked."""
    if bool(mask.all()):
        return embeddings.float()
    return torch.where(mask.unsqueeze(-1), embeddings, 0).float()


def _similarities(queries: torch.Tensor, documents: torch.Tensor, workspace: torch.Tensor | None = None) -> torch.Tensor:
    """``[Nq, Tq, D] x [Nd, Td, D] -> [Nq, Tq, Nd, 1, Td]``: one matrix product, viewed (no copy, contiguous).

    The singleton axis lets a head see each (query token, document) pair as ``[..., 1, Td]`` with the document mask
    ``[Nd, Td]`` broadcasting over queries and query tokens, while the patches stay contiguous in memory.
    ``workspace``: a flat float32 buffer, large enough, that receives the product (inference only): the chunks of
    :func:`score` reuse one matrix instead of page-faulting a fresh one of hundreds of MB each time.
    """
    n_queries, query_tokens, dim = queries.shape
    n_documents, document_tokens, _ = documents.shape
    left = queries.reshape(n_queries * query_tokens, dim)
    right = documents.reshape(n_documents * document_tokens, dim).T
    size = left.shape[0] * right.shape[1]
    if workspace is None or torch.is_grad_enabled() or workspace.numel() < size or workspace.dtype != left.dtype:
        flat = left @ right
    else:
        flat = torch.mm(left, right, out=workspace[:size].view(left.shape[0], right.shape[1]))
    return flat.view(n_queries, query_tokens, n_documents, 1, document_tokens)


def _document_aware(head: PoolingHead, similarities: torch.Tensor, documents: torch.Tensor,
                    document_mask: torch.Tensor) -> tuple[PoolingHead, torch.Tensor]:
    """A head that needs the documents' vectors (``needs_documents``, e.g. ``coherent``; ``documents`` zero-padded):
    its per-patch offsets ``[Nd, Td]`` added to the similarities (whose last axes are ``[Nd, ..., Td]``) and the head that pools them;
    any other head and the similarities unchanged."""
    if not head.needs_documents:
        return head, similarities
    bias = head.document_bias(documents, document_mask, padding_is_zero=True).unsqueeze(-2)  # [Nd, 1, Td]
    if torch.is_grad_enabled():
        return head.inner_head, similarities + bias
    return head.inner_head, similarities.add_(bias)  # inference: the similarities are a scratch matrix


def _whole_at_inference(head: PoolingHead, similarities: torch.Tensor, document_mask: torch.Tensor) -> bool:
    """Whether ``head`` pools the whole similarity matrix at once: its compiled kernels read it in place and split its
    rows over the threads (``compiled_at_inference``), which needs the real patches of each document to come first
    (padding, as :func:`score` pads; any other mask would cost a masked copy of the whole matrix)."""
    return head.compiled_at_inference and can_compile(similarities) and prefix_lengths(document_mask) is not None


def late_interaction_scores(
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    documents: torch.Tensor,
    document_mask: torch.Tensor,
    head: PoolingHead,
    *,
    workspace: torch.Tensor | None = None,
) -> torch.Tensor:
    """All-pairs scores, differentiable: ``[Nq, Tq, D] x [Nd, Td, D] -> [Nq, Nd]`` (float32).

    ``score(q, d) = sum over valid query tokens of head(similarities to valid document patches)``.
    Padded rows may hold anything (NaN included): they are zeroed before the product and masked in the head.
    ``workspace`` (inference, optional): a flat float32 buffer of at least ``Nq*Tq*Nd*Td`` elements on the same
    device that holds the similarity matrix, reused from call to call (ignored while gradients are recorded).
    """
    documents = _zero_padding(documents, document_mask)
    similarities = _similarities(_zero_padding(queries, query_mask), documents, workspace)
    head, similarities = _document_aware(head, similarities, documents, document_mask)
    if head.joint:  # the head needs each query's tokens side by side: [Nq, Nd, Tq, Td] (a view), query mask [Nq, 1, Tq]
        per_token = head.pool(similarities.squeeze(3).permute(0, 2, 1, 3), document_mask, query_mask.unsqueeze(1))
        per_token = per_token.transpose(1, 2)  # [Nq, Tq, Nd]
    elif torch.is_grad_enabled() and similarities.requires_grad or _whole_at_inference(head, similarities, document_mask):
        per_token = head(similarities, document_mask).squeeze(-1)  # [Nq, Tq, Nd]
    else:
        # Inference: pool blocks of a few queries x documents, so that a head's temporaries (softmax: a scaled copy,
        # the exponentials, the weights) stay in the CPU's cache between its passes and are recycled by the allocator
        # instead of page-faulted (both cost more than the arithmetic). Same values.
        n_queries, query_tokens, n_documents, _, document_tokens = similarities.shape
        per_document = max(1, query_tokens * document_tokens)
        documents_per_call = max(1, min(n_documents, HEAD_BLOCK_ELEMENTS // per_document))
        rows = max(1, HEAD_BLOCK_ELEMENTS // (per_document * documents_per_call))
        per_token = similarities.new_empty(n_queries, query_tokens, n_documents)
        for start in range(0, n_queries, rows):
            for first in range(0, n_documents, documents_per_call):
                block = similarities[start : start + rows, :, first : first + documents_per_call]
                per_token[start : start + rows, :, first : first + documents_per_call] = head(
                    block, document_mask[first : first + documents_per_call]).squeeze(-1)
    if bool(query_mask.all()):
        return per_token.sum(dim=1)
    return torch.where(query_mask.unsqueeze(-1), per_token, 0).sum(dim=1)


def paired_scores(
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    documents: torch.Tensor,
    document_mask: torch.Tensor,
    head: PoolingHead,
) -> torch.Tensor:
    """Scores of aligned pairs, differentiable: ``[N, Tq, D] x [N, Td, D] -> [N]`` (query i with document i)."""
    queries = _zero_padding(queries, query_mask)
    documents = _zero_padding(documents, document_mask)
    similarities = queries @ documents.transpose(-1, -2)  # [N, Tq, Td]
    head, similarities = _document_aware(head, similarities, documents, document_mask)
    per_token = head.pool(similarities, document_mask, query_mask)
    return torch.where(query_mask, per_token, 0).sum(dim=-1)


def _length_sorted_chunks(lengths: torch.Tensor, chunk_size: int) -> Iterator[list[int]]:
    order = torch.argsort(lengths, stable=True).tolist()
    for start in range(0, len(order), chunk_size):
        yield order[start : start + chunk_size]


def score(
    queries: Embeddings,
    documents: Embeddings,
    head: str | PoolingHead = "maxsim",
    *,
    query_mask: torch.Tensor | None = None,
    document_mask: torch.Tensor | None = None,
    query_batch_size: int = 64,
    document_batch_size: int = 128,
    device: str | torch.device | None = None,
    show_progress: bool = False,
) -> torch.Tensor:
    """Score every query against every document: float32 ``[Nq, Nd]`` on the CPU.

    Items are grouped by length (less padding) and scored in chunks of ``query_batch_size x document_batch_size``, so
    peak memory is about ``4 * query_batch_size * document_batch_size * Tq * Td`` bytes whatever the corpus size.
    No gradient is kept (use :func:`late_interaction_scores` inside training).
    """
    head = parse_head(head)
    if query_batch_size < 1 or document_batch_size < 1:
        raise ValueError(f"batch sizes must be >= 1, got {query_batch_size} and {document_batch_size}")
    query_vectors = as_multi_vectors(queries, query_mask, "queries")
    document_vectors = as_multi_vectors(documents, document_mask, "documents", allow_empty=True)
    if query_vectors.dim != document_vectors.dim:
        raise ValueError(
            f"query embedding dimension {query_vectors.dim} != document embedding dimension {document_vectors.dim}: "
            "queries and documents must come from the same model / projection"
        )
    device = torch.device(device) if device is not None else query_vectors.items[0].device
    scores = torch.empty(len(query_vectors), len(document_vectors), dtype=torch.float32)
    query_lengths, document_lengths = query_vectors.lengths, document_vectors.lengths
    query_chunks = list(_length_sorted_chunks(query_lengths, query_batch_size))
    document_chunks = list(_length_sorted_chunks(document_lengths, document_batch_size))
    progress = tqdm(total=len(query_chunks) * len(document_chunks), desc=f"scoring ({head})", disable=not show_progress)
    # One similarity matrix for every chunk pair (the largest one's size): a fresh matrix per pair would be
    # page-faulted in each time, which cost more system time than the heads' arithmetic (`make bench-scoring`).
    largest = max(len(chunk) * int(query_lengths[chunk].max()) for chunk in query_chunks) * max(
        len(chunk) * max(1, int(document_lengths[chunk].max())) for chunk in document_chunks)
    workspace = torch.empty(largest, dtype=torch.float32, device=device)
    with torch.no_grad():
        for query_indices in query_chunks:
            query_block, query_block_mask = query_vectors.padded(query_indices, device=device)
            rows = torch.tensor(query_indices)
            for document_indices in document_chunks:
                document_block, document_block_mask = document_vectors.padded(document_indices, device=device)
                block = late_interaction_scores(query_block, query_block_mask, document_block, document_block_mask, head,
                                                workspace=workspace)
                scores[rows.unsqueeze(1), torch.tensor(document_indices).unsqueeze(0)] = block.cpu()
                progress.update(1)
    progress.close()
    return scores
