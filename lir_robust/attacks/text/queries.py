"""What an attacker may know: the TRAINING half of the queries (seeded 50/50 split), their clusters and their words.

Held-out queries are only ever scored, never read by an attack: every function here takes training queries alone.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Sequence

import torch

__all__ = ["split_queries", "mean_vectors", "kmeans", "cluster_members", "content_words", "STOPWORDS"]

# English function words (and Cranfield's question words) that carry no topic: never stuffed as keywords.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers him his
how i if in into is it its itself just me more most my no nor not now of off on once only or other our out over own
same she should so some such than that the their them then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours
anything available been being can does done exist existing etc give given known made make obtained one two used using
""".split())


def split_queries(query_ids: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out): a seeded shuffle cut in half (the training half gets the extra query of an odd count);
    each list keeps the input order. The same ids and seed always give the same split."""
    if len(query_ids) < 2:
        raise ValueError(f"splitting queries into training and held-out halves needs at least 2 queries, got {len(query_ids)}")
    order = list(range(len(query_ids)))
    random.Random(seed).shuffle(order)
    cut = (len(order) + 1) // 2
    training = set(order[:cut])
    return ([qid for index, qid in enumerate(query_ids) if index in training],
            [qid for index, qid in enumerate(query_ids) if index not in training])


def mean_vectors(queries: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[Tq_i, D]`` query embeddings -> ``[Nq, D]``: each query's mean token vector, L2-normalised."""
    return torch.nn.functional.normalize(torch.stack([query.float().mean(dim=0) for query in queries]), dim=-1)


def kmeans(points: torch.Tensor, clusters: int, seed: int, iterations: int = 50) -> torch.Tensor:
    """Cluster ``[N, D]`` points into ``clusters`` groups: int64 labels ``[N]``, every cluster non-empty.

    Plain k-means (squared Euclidean) seeded by k-means++ from ``torch.Generator().manual_seed(seed)``; an emptied
    cluster takes the point farthest from its centre. Deterministic for a seed.
    """
    points = points.float()
    count = points.shape[0]
    if not 1 <= clusters <= count:
        raise ValueError(f"k-means needs 1 <= clusters <= points, got {clusters} clusters for {count} points")
    generator = torch.Generator().manual_seed(seed)
    centres = points[torch.randint(count, (1,), generator=generator)]
    while centres.shape[0] < clusters:  # k-means++: next centre drawn in proportion to the squared distance
        distance = torch.cdist(points, centres).min(dim=1).values.pow(2)
        weights = distance if float(distance.sum()) > 0 else torch.ones(count)
        centres = torch.cat([centres, points[torch.multinomial(weights, 1, generator=generator)]])
    labels = torch.full((count,), -1, dtype=torch.long)
    for _ in range(iterations):
        distance = torch.cdist(points, centres)
        new_labels = distance.argmin(dim=1)
        for cluster in range(clusters):
            if not bool((new_labels == cluster).any()):  # an empty cluster takes the worst-served point
                worst = int(distance.gather(1, new_labels.unsqueeze(1)).squeeze(1).argmax())
                new_labels[worst] = cluster
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
        centres = torch.stack([points[labels == cluster].mean(dim=0) for cluster in range(clusters)])
    return labels


def cluster_members(labels: torch.Tensor) -> list[list[int]]:
    """Labels ``[N]`` -> for each cluster, the indices of its points (ascending)."""
    return [torch.nonzero(labels == cluster).flatten().tolist() for cluster in range(int(labels.max()) + 1)]


def content_words(texts: Sequence[str], count: int) -> list[str]:
    """The ``count`` most frequent content words of ``texts`` (lowercased letters, >= 3 characters, no stopword);
    ties by first appearance."""
    counter: Counter[str] = Counter()
    for text in texts:
        counter.update(word for word in re.findall(r"[a-z]+", text.lower()) if len(word) >= 3 and word not in STOPWORDS)
    return [word for word, _ in counter.most_common(count)]
