"""All document patches of a corpus in one matrix (:class:`FlatCorpus`), as the embedding cache stores them and the
sweep reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["FlatCorpus"]


@dataclass
class FlatCorpus:
    """All document patches in one matrix: ``vectors [N_patches, D]``; document i owns rows ``starts[i]:starts[i+1]``.

    ``vectors`` may be memory-mapped (the embedding cache stores a corpus this way): nothing here copies the whole
    matrix; documents are views, read in float32.
    """

    vectors: torch.Tensor
    starts: torch.Tensor  # [Nd + 1] long

    @classmethod
    def from_documents(cls, documents: "Sequence[torch.Tensor] | FlatCorpus") -> "FlatCorpus":
        """One matrix from a list of ``[L_i, D]`` tensors (a copy); a FlatCorpus is returned as it is."""
        if isinstance(documents, FlatCorpus):
            return documents
        lengths = torch.tensor([document.shape[0] for document in documents], dtype=torch.long)
        starts = torch.zeros(len(documents) + 1, dtype=torch.long)
        starts[1:] = lengths.cumsum(0)
        dim = documents[0].shape[-1] if len(documents) else 0
        vectors = torch.cat([document.float() for document in documents]) if len(documents) else torch.zeros(0, dim)
        return cls(vectors, starts)

    def __len__(self) -> int:
        return len(self.starts) - 1

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        """Patches per document ``[Nd]``."""
        return self.starts[1:] - self.starts[:-1]

    def document(self, index: int) -> torch.Tensor:
        """Document ``index`` as ``[L, D]`` float32."""
        return self.vectors[int(self.starts[index]) : int(self.starts[index + 1])].float()

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"document {index} of {len(self)}")
        return self.document(index % len(self))

    def __iter__(self):
        return (self.document(index) for index in range(len(self)))

    def owner(self) -> torch.Tensor:
        """Document index of every patch ``[N_patches]``."""
        return torch.repeat_interleave(torch.arange(len(self)), self.lengths)
