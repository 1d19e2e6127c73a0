"""Fixtures of the fine-tuning tests: a tiny random BERT (with dropout) and a tiny BEIR collection, written to folders.

    from finetune_fixtures import save_dropout_bert, write_tiny_beir

Building and saving takes well under a second; a training step on the model takes milliseconds.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"]
PUNCTUATION = list(".,;:!?()-'/")
WORDS = """
wing wings flow flows shock wave waves boundary layer layers heat transfer pressure drag lift mach number numbers
supersonic subsonic hypersonic plate plates cylinder cylinders shell shells buckling stress thermal laminar turbulent
jet nozzle cone body bodies surface theory experiment experimental results method analysis solution study measured
velocity temperature density viscous inviscid compressible incompressible airfoil blade rotor propeller slipstream
the of a an and in on at for with by to from is are was were this that these which its as be it made found
investigation effect effects distribution high low small large simple steady unsteady flat leading edge trailing
evalquery secret what how why
""".split()
CONTENT_WORDS = [word for word in WORDS if word not in ("evalquery", "secret")]


def save_dropout_bert(directory: str | os.PathLike, seed: int = 0, dropout: float = 0.1) -> Path:
    """Save a 2-layer, 32-wide random BertModel (with ``dropout``) and a WordPiece BertTokenizer; return the folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocabulary = list(dict.fromkeys([*SPECIAL, *PUNCTUATION, *WORDS]))
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(vocabulary)}, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocabulary), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_tiny_beir(directory: str | os.PathLike, documents: int = 12, with_train_split: bool = False) -> Path:
    """A BEIR folder whose abstracts start by repeating their title; evaluation queries hold 'evalquery secret'."""
    directory = Path(directory)
    (directory / "qrels").mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    corpus = []
    for index in range(documents):
        title = " ".join(rng.sample(CONTENT_WORDS, 4)) + " ."
        abstract = " ".join(rng.choice(CONTENT_WORDS) for _ in range(rng.randrange(12, 30))) + " ."
        corpus.append({"_id": str(index + 1), "title": title, "text": f"{title} {abstract}"})
    corpus.append({"_id": str(documents + 1), "title": "", "text": ""})  # empty, as Cranfield's 471 and 995
    (directory / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus))
    queries = [{"_id": f"q{i}", "text": f"evalquery secret {CONTENT_WORDS[i]} ?"} for i in range(3)]
    if with_train_split:
        queries += [{"_id": f"t{i}", "text": f"how {CONTENT_WORDS[i + 5]} {CONTENT_WORDS[i + 9]} ?"} for i in range(documents)]
        (directory / "qrels" / "train.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"t{i}\t{i + 1}\t1\n" for i in range(documents))
        )
    (directory / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries))
    (directory / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{i + 1}\t1\n" for i in range(3))
    )
    return directory
