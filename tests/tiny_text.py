"""A tiny random BERT with a small WordPiece vocabulary, saved as a Hugging Face folder (no download).

For tests only: ``save_tiny_bert(folder)`` -> a folder that ``TextColBERT.from_base(folder)`` loads.
"""

from __future__ import annotations

import string
from pathlib import Path

__all__ = ["save_tiny_bert"]

WORDS = """the a an of and in on at to for from by with is are was what known about study results method value data
wing lift drag aircraft wind tunnel buckling thin cylindrical shells under axial load heat transfer boundary layer hot
plate shock waves supersonic flow past blunt body noise jet engine exhaust high speed flutter flat panel""".split()


def save_tiny_bert(folder, hidden_size: int = 32, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]"]
    vocab += list(string.punctuation) + [str(digit) for digit in range(10)] + WORDS
    vocab += [f"##{letter}" for letter in string.ascii_lowercase] + list(string.ascii_lowercase)
    vocab = list(dict.fromkeys(vocab))
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden_size, max_position_embeddings=512)
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
