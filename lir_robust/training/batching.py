"""Batching for fine-tuning: pairs as a dataset, a resumable epoch order, collators (text and image), one forward
pass per batch part, the multi-process gather of documents, and the validation loss.

Shapes: query / document embeddings are ``[B, T, D]`` with a bool mask ``[B, T]`` (True = a real token / patch).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from lir_robust.training.pairs import TrainingPair

__all__ = [
    "PairDataset",
    "EpochShuffleSampler",
    "TextPairCollator",
    "ImagePairCollator",
    "embed",
    "gather_documents",
    "validation_loss",
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
