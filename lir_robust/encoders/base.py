"""One interface over every multi-vector encoder, with length-sorted batching and multi-process corpus encoding.

An encoder turns queries (texts) and documents (texts or page images) into lists of ``[L_i, D]`` float32 CPU tensors
holding only valid token / patch vectors::

    encoder.encode_queries(["what is ...", ...])      -> [tensor [Tq_0, D], tensor [Tq_1, D], ...]
    encoder.encode_documents([doc_or_image, ...])    -> [tensor [L_0, D], ...]

Subclasses implement ``_sizes`` (a length per item, for sorting) and ``_encode_batch`` (one batch -> list of
tensors). Batches hold items of similar length (less padding) and show a tqdm progress bar.

Several processes (``torchrun --nproc_per_node N`` or ``accelerate launch --multi_gpu --num_processes N``): when
``torch.distributed`` is initialised (see :func:`init_distributed`), the length-sorted batches are dealt out round
robin to the processes and every process receives all results (``all_gather_object``). Each batch is the same batch
a single process would build, so the embeddings equal the single-process ones.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

__all__ = ["MultiVectorEncoder", "init_distributed", "world", "is_main_process", "barrier"]

logger = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` without torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by torchrun / accelerate (``WORLD_SIZE`` > 1): gloo on CPU, nccl on GPU.

    Returns ``(rank, world size)``; a no-op returning ``(0, 1)`` for a plain single process.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not torch.distributed.is_available():
        return 0, 1
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(backend=backend)
        logger.info("joined process group: rank %d of %d (%s)", torch.distributed.get_rank(), size, backend)
    return world()


class MultiVectorEncoder(ABC):
    """Queries and documents -> lists of ``[L, D]`` float32 CPU tensors (valid rows only)."""

    #: number of items (queries + documents) this encoder has run through the model (the cache test reads it)
    items_encoded: int = 0

    def __init__(self, batch_size: int = 32, show_progress: bool = True):
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.items_encoded = 0

    # -- what subclasses provide
    @property
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able settings that identify the embeddings this encoder makes (model, weights, lengths, ...)."""

    @property
    def modality(self) -> str:
        """'text' or 'image': what documents it encodes."""
        return "text"

    @property
    def pooling(self):
        """The pooling head the model was trained with (a PoolingHead) or None."""
        return None

    @abstractmethod
    def _sizes(self, items: Sequence[Any], is_query: bool) -> list[int]:
        """A length per item (tokens, pixels): batches group similar sizes."""

    @abstractmethod
    def _encode_batch(self, items: Sequence[Any], is_query: bool) -> list[torch.Tensor]:
        """One batch -> ``[L_i, D]`` float32 CPU tensors (valid rows only)."""

    # -- the interface
    def encode_queries(self, queries: Sequence[str]) -> list[torch.Tensor]:
        """Query texts -> list of ``[Tq_i, D]``."""
        return self._encode(list(queries), is_query=True)

    def encode_documents(self, documents: Sequence[Any]) -> list[torch.Tensor]:
        """Document texts (or PIL images for page models) -> list of ``[L_i, D]``."""
        return self._encode(list(documents), is_query=False)

    def _encode(self, items: list[Any], is_query: bool) -> list[torch.Tensor]:
        if not items:
            return []
        sizes = self._sizes(items, is_query)
        order = sorted(range(len(items)), key=lambda index: sizes[index])
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        rank, size = world()
        mine = batches[rank::size]
        what = "queries" if is_query else "documents"
        done: list[tuple[list[int], list[torch.Tensor]]] = []
        progress = tqdm(total=sum(map(len, mine)), desc=f"encoding {what}" + (f" [rank {rank}/{size}]" if size > 1 else ""),
                        disable=not self.show_progress)
        with torch.inference_mode():
            for batch in mine:
                vectors = self._encode_batch([items[index] for index in batch], is_query)
                done.append((batch, [vector.float().cpu().contiguous() for vector in vectors]))
                self.items_encoded += len(batch)
                progress.update(len(batch))
        progress.close()
        if size > 1:
            gathered: list[Any] = [None] * size
            torch.distributed.all_gather_object(gathered, done)
            done = [pair for part in gathered for pair in part]
        outputs: list[torch.Tensor | None] = [None] * len(items)
        for batch, vectors in done:
            for index, vector in zip(batch, vectors):
                outputs[index] = vector
        return outputs  # type: ignore[return-value]
