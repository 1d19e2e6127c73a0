"""Text attacks made without gradients: what an attacker who knows only the TRAINING queries (and, for the ceiling,
the test query itself) can write.

- cluster passages: each cluster's training query texts concatenated (the issue's first probe);
- keyword stuffing: the T most frequent content words of the training queries appended to non-gold documents;
- the ceiling: each held-out query's own text appended to non-gold documents of that query.
"""

from __future__ import annotations

import random
from typing import Sequence

from lir_robust.attacks.text.queries import content_words
from lir_robust.core.errors import UserError

__all__ = ["cluster_passages", "stuffing_words", "appended", "non_gold_documents"]


def cluster_passages(training_texts: Sequence[str], members: Sequence[Sequence[int]]) -> list[str]:
    """One passage per cluster: its training queries' texts (``members[c]`` indexes ``training_texts``) joined."""
    return [" ".join(training_texts[index].strip() for index in cluster) for cluster in members]


def stuffing_words(training_texts: Sequence[str], count: int) -> str:
    """The ``count`` most frequent content words of the training queries, as one text (most frequent first)."""
    words = content_words(training_texts, count)
    if not words:
        raise ValueError("the training queries hold no content word to stuff")
    return " ".join(words)


def appended(document: str, extra: str) -> str:
    """A document with text appended at its end (one space between)."""
    return f"{document.rstrip()} {extra.strip()}".strip()


def non_gold_documents(document_count: int, gold: set[int], count: int, seed: int) -> list[int]:
    """``count`` distinct document indices outside ``gold``, drawn with ``random.Random(seed)`` (ascending)."""
    pool = [index for index in range(document_count) if index not in gold]
    if count > len(pool):
        raise UserError(f"cannot attack {count} non-gold documents: only {len(pool)} exist; lower --n")
    return sorted(random.Random(seed).sample(pool, count))
