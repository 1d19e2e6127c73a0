"""Insertion into existing documents: a snippet placed in a document's text, appended or at a sentence boundary.

The snippet is an adversarial passage's text (:mod:`lir_robust.attacks.text.hotflip`, optimised against the
training queries through the model and the head under test); the edited document is re-encoded as a whole
(:mod:`lir_robust.attacks.text.evaluate`). A document longer than the model's document length is truncated by the
encoder as any document is, so a snippet placed past that point is cut: what an attacker who appends pays.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

__all__ = ["POSITIONS", "sentence_boundaries", "insert_snippet", "inserted_documents"]

POSITIONS = ("end", "sentence")

_SENTENCE_END = re.compile(r"[.!?](?=\s)")


def sentence_boundaries(text: str) -> list[int]:
    """Character offsets where a snippet may go between sentences: 0, just after each sentence end (``.``, ``!`` or
    ``?`` followed by white space), and ``len(text)``; ascending, no repeats."""
    return sorted({0, len(text), *(match.end() for match in _SENTENCE_END.finditer(text))})


def insert_snippet(document: str, snippet: str, position: str, rng: random.Random) -> str:
    """``document`` with ``snippet`` appended (``position="end"``) or at one of its :func:`sentence_boundaries` drawn
    by ``rng`` (``"sentence"``), with one space on each side."""
    if position not in POSITIONS:
        raise ValueError(f"insertion position must be one of {POSITIONS}, got {position!r}")
    at = len(document) if position == "end" else rng.choice(sentence_boundaries(document))
    return " ".join(part for part in (document[:at].strip(), snippet.strip(), document[at:].strip()) if part)


def inserted_documents(documents: Sequence[str], snippets: Sequence[str], position: str, seed: int) -> list[str]:
    """Snippet ``i`` inserted into document ``i``; the boundaries are drawn in order from ``random.Random(seed)``
    (the same documents, snippets and seed always give the same texts)."""
    if len(documents) != len(snippets):
        raise ValueError(f"{len(documents)} documents but {len(snippets)} snippets: one snippet per document")
    rng = random.Random(seed)
    return [insert_snippet(document, snippet, position, rng) for document, snippet in zip(documents, snippets)]
