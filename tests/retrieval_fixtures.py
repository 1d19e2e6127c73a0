"""Tiny retrieval collections written into a folder, in the real schemas (BEIR, ViDoRe v1 QA, ViDoRe v2 BEIR).

For tests only. Import from a test (``tests/conftest.py`` puts this folder on ``sys.path``)::

    from retrieval_fixtures import write_beir, write_vidore_v1, write_vidore_v2
"""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["TOPICS", "write_beir", "write_vidore_v1", "write_vidore_v2", "tiny_pages"]

# Six topics; document i is about topic i % 6; query j asks about topic j and its gold documents are that topic's.
TOPICS = [
    ("wing", "the wing lift and drag of an aircraft wing in a wind tunnel"),
    ("shell", "buckling of thin cylindrical shells under axial load"),
    ("heat", "heat transfer in the boundary layer of a hot plate"),
    ("shock", "shock waves in supersonic flow past a blunt body"),
    ("jet", "noise of a jet engine exhaust at high speed"),
    ("panel", "flutter of a flat panel in supersonic flow"),
]


def write_beir(folder, documents_per_topic: int = 3, grades: tuple[int, ...] = (2, 1)) -> Path:
    """A BEIR folder: ``6 * documents_per_topic`` documents, 6 queries, graded qrels; returns the folder."""
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    with (folder / "corpus.jsonl").open("w") as corpus:
        for index in range(6 * documents_per_topic):
            word, sentence = TOPICS[index % 6]
            filler = " ".join(rng.choice(["results", "method", "a", "study", "value", "data"]) for _ in range(3 + index))
            corpus.write(json.dumps({"_id": f"d{index}", "title": f"{word} study {index}", "text": f"{sentence} . {filler}"}) + "\n")
    with (folder / "queries.jsonl").open("w") as queries:
        for index, (word, sentence) in enumerate(TOPICS):
            queries.write(json.dumps({"_id": f"q{index}", "text": f"what is known about {sentence.split(' of ')[0]} ?"}) + "\n")
    with (folder / "qrels" / "test.tsv").open("w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for topic in range(6):
            for rank, index in enumerate(range(topic, 6 * documents_per_topic, 6)):
                qrels.write(f"q{topic}\td{index}\t{grades[min(rank, len(grades) - 1)]}\n")
    return folder


def tiny_pages(count: int, seed: int = 0, size: tuple[int, int] = (40, 32)):
    """``count`` small RGB PIL images of coloured blocks."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    pages = []
    for _ in range(count):
        image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        x, y = rng.randrange(size[0] // 2), rng.randrange(size[1] // 2)
        draw.rectangle([x, y, x + 8, y + 8], fill=tuple(rng.randrange(256) for _ in range(3)))
        pages.append(image)
    return pages


def write_vidore_v1(folder, pages: int = 5) -> Path:
    """A ViDoRe v1 (QA format) split saved with ``save_to_disk``: one row per (query, page); one page has no query,
    one query appears twice (same page) to exercise deduplication."""
    import datasets

    images = tiny_pages(pages)
    rows = {"query": [], "image": [], "image_filename": [], "answer": []}
    for index in range(pages):
        rows["query"].append(None if index == pages - 1 else f"what does page {index} show ?")
        rows["image"].append(images[index])
        rows["image_filename"].append(f"page_{index}.png")
        rows["answer"].append(f"answer {index}")
    rows["query"].append("what does page 0 show ?")
    rows["image"].append(images[0])
    rows["image_filename"].append("page_0.png")
    rows["answer"].append("answer 0")
    features = datasets.Features(
        {"query": datasets.Value("string"), "image": datasets.Image(), "image_filename": datasets.Value("string"),
         "answer": datasets.Value("string")}
    )
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(folder))
    return Path(folder)


def write_vidore_v2(folder, pages: int = 4) -> Path:
    """A ViDoRe v2 (BEIR format) copy: ``corpus/``, ``queries/``, ``qrels/`` saved with ``save_to_disk``; queries in
    english and french (one per page and language), page i gold for both of its queries."""
    import datasets

    folder = Path(folder)
    corpus = datasets.Dataset.from_dict(
        {"corpus-id": list(range(pages)), "image": tiny_pages(pages, seed=1)},
        features=datasets.Features({"corpus-id": datasets.Value("int64"), "image": datasets.Image()}),
    )
    query_ids, texts, languages, qrel_rows = [], [], [], {"query-id": [], "corpus-id": [], "score": []}
    for page in range(pages):
        for language, template in (("english", "what is on page {}"), ("french", "que montre la page {}")):
            qid = len(query_ids)
            query_ids.append(qid)
            texts.append(template.format(page))
            languages.append(language)
            qrel_rows["query-id"].append(qid)
            qrel_rows["corpus-id"].append(page)
            qrel_rows["score"].append(2 if page % 2 == 0 else 1)
    queries = datasets.Dataset.from_dict({"query-id": query_ids, "query": texts, "language": languages})
    corpus.save_to_disk(str(folder / "corpus"))
    queries.save_to_disk(str(folder / "queries"))
    datasets.Dataset.from_dict(qrel_rows).save_to_disk(str(folder / "qrels"))
    return folder
