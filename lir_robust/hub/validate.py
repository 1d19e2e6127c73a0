"""Checking a folder before it is uploaded: the card parses, every file the family's loader needs is present, the
adapter's base is a Hub id, and the Hub token is in no file.

    validate_publish_folder("out/topk")   # -> {"family", "library", "head", "files"}, or HubError listing every problem
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from lir_robust.hub.checkpoint import COLPALI_LIBRARY, PYLATE_LIBRARY, TEXT
from lir_robust.core.huggingface import HubError, is_hub_id, one_line
from lir_robust.scoring.pooling import POOLING_FILE, load_pooling_json

__all__ = ["validate_publish_folder", "CARD_FILE"]

CARD_FILE = "README.md"

# each entry: one of these files must be present (colpali-engine's from_pretrained of model and processor)
_COLPALI_REQUIRED = (
    ("adapter_config.json",),
    ("adapter_model.safetensors", "adapter_model.bin"),
    ("processor_config.json", "preprocessor_config.json"),
    ("tokenizer.json", "tokenizer.model", "vocab.json"),
    ("tokenizer_config.json",),
)
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def _pylate_problems(folder: Path) -> list[str]:
    """What a PyLate model folder lacks: modules.json, config_sentence_transformers.json, each module's files."""
    problems = [f"{name} is missing" for name in ("modules.json", "config_sentence_transformers.json") if not (folder / name).is_file()]
    if problems:
        return problems
    for module in json.loads((folder / "modules.json").read_text()):
        where = folder / module.get("path", "")
        kind = str(module.get("type", ""))
        if not where.is_dir():
            problems.append(f"module folder {module.get('path')!r} ({kind}) is missing")
        elif kind.endswith("Transformer"):
            for needed in (("config.json",), _WEIGHTS, ("tokenizer_config.json",), ("tokenizer.json", "vocab.txt", "vocab.json")):
                if not any((where / name).is_file() for name in needed):
                    problems.append(f"{where.relative_to(folder) / needed[0]} (the transformer's) is missing")
        elif kind.endswith("Dense"):
            for needed in (("config.json",), _WEIGHTS):
                if not any((where / name).is_file() for name in needed):
                    problems.append(f"{where.relative_to(folder) / needed[0]} (the Dense projection's) is missing")
    return problems


def _colpali_problems(folder: Path) -> list[str]:
    """What an adapter-only colpali-engine folder lacks, and an adapter base that is not a Hub id."""
    problems = [f"{needed[0]} is missing (colpali-engine's from_pretrained needs it)"
                for needed in _COLPALI_REQUIRED if not any((folder / name).is_file() for name in needed)]
    if (folder / "adapter_config.json").is_file():
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not is_hub_id(base):
            problems.append(f"adapter_config.json's base_model_name_or_path {base!r} is not a Hub id (never a local path)")
    return problems


def _card_problems(folder: Path) -> tuple[Any, list[str]]:
    """``(card or None, problems)``: the card parses, names a Hub base model, the family's library, lir-robust's tag,
    and every image it shows is in the folder."""
    from huggingface_hub import ModelCard

    if not (folder / CARD_FILE).is_file():
        return None, [f"{CARD_FILE} (the model card) is missing"]
    try:
        card = ModelCard.load(folder / CARD_FILE)
    except Exception as error:  # noqa: BLE001 - any parse error is a problem to report
        return None, [f"{CARD_FILE} does not parse as a model card: {one_line(error)}"]
    problems = []
    if card.data.library_name not in (COLPALI_LIBRARY, PYLATE_LIBRARY):
        problems.append(f"the card's library_name is {card.data.library_name!r}, expected colpali or PyLate")
    if not is_hub_id(card.data.base_model if isinstance(card.data.base_model, str) else None):
        problems.append(f"the card's base_model {card.data.base_model!r} is not a Hub id")
    if "lir-robust" not in (card.data.tags or []):
        problems.append("the card lacks the lir-robust tag")
    for link in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", card.text):
        if "://" not in link and not (folder / link).is_file():
            problems.append(f"the card shows {link}, which is not in the folder")
    return card, problems


def _secret_in_files(folder: Path, secret: str | None) -> list[str]:
    """The files (under 64 MiB) of ``folder`` that hold ``secret`` (none for a secret shorter than 8 characters)."""
    if not secret or len(secret) < 8:
        return []
    needle = secret.encode()
    return [str(path.relative_to(folder)) for path in folder.rglob("*")
            if path.is_file() and path.stat().st_size < (64 << 20) and needle in path.read_bytes()]


def validate_publish_folder(folder: str | os.PathLike) -> dict[str, Any]:
    """Check a folder before it is uploaded; HubError listing every problem, else ``{family, library, head, files}``.

    The card parses with huggingface_hub and names a Hub base model, the family's library and lir-robust's tags;
    pooling.json names a head; every file the family's loader needs is present (colpali-engine: adapter, processor,
    tokenizer, and an adapter base that is a Hub id; PyLate: modules.json and each module's files); images the card
    links are present; the Hub token appears in no file.
    """
    from huggingface_hub import get_token

    folder = Path(folder)
    card, problems = _card_problems(folder)
    library = card.data.library_name if card is not None else None
    head = None
    try:
        head = load_pooling_json(folder)
    except ValueError as error:
        problems.append(f"{POOLING_FILE}: {error}")
    if head is None and not any(POOLING_FILE in problem for problem in problems):
        problems.append(f"{POOLING_FILE} (the pooling head) is missing or names no head")
    if (folder / "adapter_config.json").is_file() or library == COLPALI_LIBRARY:
        family = COLPALI_LIBRARY
        problems += _colpali_problems(folder)
    else:
        family = TEXT
        problems += _pylate_problems(folder)
    leaked = _secret_in_files(folder, get_token())
    if leaked:
        problems.append(f"the Hub token appears in {', '.join(leaked)}")
    if problems:
        raise HubError(f"{folder} is not ready to publish: " + "; ".join(problems))
    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    return {"family": family, "library": library, "head": head.spec(), "files": files}
