"""The models fine-tuning trains: a frozen encoder with a LoRA adapter (a TextColBERT for BERT-like encoders and
PyLate models, or a colpali-engine model), and the starting value of a text model's projection.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from lir_robust.core.huggingface import is_pylate_model, model_family
from lir_robust.scoring.pooling import PoolingHead

__all__ = [
    "text_hidden_size",
    "build_text_model",
    "build_colpali_model",
    "init_projection_svd",
    "init_projection_identity",
    "trainable_parameters",
]

logger = logging.getLogger(__name__)


def text_hidden_size(model: str) -> int:
    """The hidden size of a BERT-like encoder (``minilm``: 384), read from its config.json; nothing is loaded.

    The default projection of a text model is this size with identity initialisation (step 0 = the raw model)."""
    from transformers import AutoConfig

    from lir_robust.encoders.text_colbert import ModelLoadError, resolve_base_model

    location = resolve_base_model(model)
    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read the configuration of the encoder {model!r} ({location}): {error}") from None
    size = getattr(config, "hidden_size", None)
    if not isinstance(size, int):
        raise ModelLoadError(f"the encoder {model!r} has no integer hidden_size in its config; pass --projection-dim")
    return size


def build_text_model(
    model: str,
    head: PoolingHead,
    projection_dim: int | None,
    lora_r: int,
    lora_alpha: int,
    lora_dropout: float,
    lora_target_modules: Sequence[str] | str | None,
    gradient_checkpointing: bool = False,
    query_max_length: int = 32,
    document_max_length: int = 256,
):
    """A TextColBERT with a LoRA adapter on its backbone and a trainable projection (base weights frozen).

    A PyLate model (folder or Hub id) brings its own projection (its Dense layers, trained on), prefixes, lengths,
    query expansion and skiplist: ``projection_dim`` and the lengths apply to other encoders only."""
    from lir_robust.encoders.text_colbert import TextColBERT

    if is_pylate_model(model):
        from lir_robust.patches.pylate import load_pylate

        colbert = load_pylate(model, pooling=head)
        logger.info("PyLate model %s: its own Dense projection (%d-d), prefixes and lengths (query %d, document %d)",
                    model, colbert.projection.out_features, colbert.colbert_config.query_max_length,
                    colbert.colbert_config.document_max_length)
    else:
        colbert = TextColBERT.from_base(
            model, projection_dim=projection_dim, pooling=head,
            query_max_length=query_max_length, document_max_length=document_max_length,
        )
    if gradient_checkpointing:
        colbert.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    colbert.add_lora(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, target_modules=lora_target_modules)
    for parameter in colbert.projection.parameters():
        parameter.requires_grad_(True)
    return colbert


def build_colpali_model(
    model: str,
    head: PoolingHead,
    lora_r: int,
    lora_alpha: int,
    lora_dropout: float,
    lora_target_modules: Sequence[str] | str | None,
    gradient_checkpointing: bool = False,
):
    """``(peft model, processor, family)``: a colpali-engine model (via lir_robust.patches) with a LoRA adapter."""
    from peft import LoraConfig, get_peft_model

    from lir_robust.patches.colpali import load_colpali, lora_target_modules as default_targets

    family = model_family(model)
    backbone, processor = load_colpali(model, family=family, device="cpu", head=head)
    if gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = lora_target_modules or default_targets(family)
    targets = targets[0] if isinstance(targets, (list, tuple)) and len(targets) == 1 and "(" in targets[0] else targets
    config = LoraConfig(
        r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=targets,
        init_lora_weights="gaussian", task_type="FEATURE_EXTRACTION",
    )
    return get_peft_model(backbone.train(), config), processor, family


@torch.no_grad()
def init_projection_svd(colbert, texts: Sequence[str], batch_size: int = 32, max_vectors: int = 20_000) -> float:
    """Set a TextColBERT's linear projection ``[D, H]`` to the top-D right singular vectors of its token vectors.

    Token vectors ``[N, H]`` of ``texts`` (as documents, unprojected) are stacked (uncentred, as the dot products
    they preserve), ``X = U S V^T``; the projection is ``V[:, :D]^T``, so ``X W^T W ~ X``: the untrained projected
    model starts as the best D-dimensional approximation of the raw H-dimensional one. Returns the share of the
    squared norm kept (``sum S[:D]^2 / sum S^2``).
    """
    projection = colbert.projection
    if not isinstance(projection, nn.Linear):
        raise TypeError("init_projection_svd needs a linear projection (projection_dim set)")
    identity, colbert.projection = colbert.projection, nn.Identity()
    was_training = colbert.training
    try:
        vectors = torch.cat(colbert.encode(list(texts), is_query=False, batch_size=batch_size, show_progress=False))
    finally:
        colbert.projection = identity
        colbert.train(was_training)
    vectors = vectors[:max_vectors].double()
    _, singular, right = torch.linalg.svd(vectors, full_matrices=False)
    dim = projection.out_features
    projection.weight.copy_(right[:dim].to(projection.weight.dtype))
    return float((singular[:dim] ** 2).sum() / (singular**2).sum())


@torch.no_grad()
def init_projection_identity(colbert) -> None:
    """Set a TextColBERT's linear projection ``[H, H]`` to the identity: the untrained model IS the raw model.

    With LoRA's B matrices starting at zero, step 0 then scores exactly as the raw H-dimensional model (identity
    projection, no adapter), and training moves away from it only where the loss asks. Needs projection_dim equal
    to the hidden size.
    """
    projection = colbert.projection
    if not isinstance(projection, nn.Linear):
        raise TypeError("init_projection_identity needs a linear projection (projection_dim set)")
    if projection.in_features != projection.out_features:
        raise ValueError(
            f"an identity projection needs projection_dim = the hidden size {projection.in_features}, "
            f"got {projection.out_features} (use --projection-dim {projection.in_features}, or --projection-init svd)"
        )
    projection.weight.copy_(torch.eye(projection.out_features, dtype=projection.weight.dtype))



def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that require gradients (LoRA matrices and the projection)."""
    return [parameter for parameter in model.parameters() if parameter.requires_grad]

