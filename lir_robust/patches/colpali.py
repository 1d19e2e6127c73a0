"""colpali-engine integration: pooling heads in processors and in colpali-engine's trainer; loading checkpoints.

This is the only module of lir-robust that imports ``colpali_engine``, and it does so lazily, after
:func:`check_colpali_version` (supported: ``>=0.3.17,<0.4``).

- :func:`patch_processor` makes one processor instance's ``score`` / ``score_multi_vector`` use a pooling head.
- :class:`PooledColbertLoss` / :class:`PooledColbertPairwiseCELoss` are ``loss_func`` objects for
  ``ContrastiveTrainer(loss_func=...)`` / ``ColModelTrainingConfig(loss_func=...)``.
- :func:`load_colpali` loads ColPali / ColQwen2 / ColQwen2.5 / ColSmol (Idefics3) from the Hub or a local folder and
  patches its processor; :func:`lora_target_modules` gives colpali-engine's LoRA target regex of each family.

Embedding shapes follow colpali-engine: queries ``[Nq, Tq, D]`` (or a list of ``[Tq_i, D]``), documents
``[Nd, Td, D]`` (or a list of ``[Td_i, D]``), zero rows are padding.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from lir_robust.core.errors import (
    ColpaliIntegrationError,
    ColpaliVersionError,
    HubUnreachableError,
    ModelNotFoundError,
    one_line,
)
from lir_robust.core.huggingface import (
    cached_file,
    check_version,
    colpali_family,
    hub_offline,
    in_hub_cache,
    infer_family,
    looks_like_path,
    version_range,
)
from lir_robust.scoring.losses import PooledInfoNCELoss, PooledPairwiseCELoss
from lir_robust.scoring.pooling import POOLING_FILE, PoolingHead, load_pooling_json, parse_head
from lir_robust.scoring.scorer import padding_mask_from_values, score

__all__ = [
    "SUPPORTED_RANGE",
    "FAMILIES",
    "ColpaliIntegrationError",
    "ColpaliVersionError",
    "ModelNotFoundError",
    "HubUnreachableError",
    "check_colpali_version",
    "patch_processor",
    "PooledColbertLoss",
    "PooledColbertPairwiseCELoss",
    "load_colpali",
    "lora_target_modules",
    "infer_family",
]

logger = logging.getLogger(__name__)

MINIMUM_VERSION = (0, 3, 17)
BELOW_VERSION = (0, 4)
SUPPORTED_RANGE = version_range(MINIMUM_VERSION, BELOW_VERSION)  # ">=0.3.17,<0.4"
INSTALL_FIX = "pip install --no-deps colpali-engine==0.3.18"


# ---------------------------------------------------------------------------------------------------------------
# Version guard
# ---------------------------------------------------------------------------------------------------------------


def check_colpali_version() -> str:
    """Return the installed colpali-engine version; raise ColpaliVersionError if missing or outside >=0.3.17,<0.4."""
    return check_version(
        "colpali_engine", MINIMUM_VERSION, BELOW_VERSION, ColpaliVersionError, INSTALL_FIX,
        "0.3.16 and older crash in ContrastiveTrainer.compute_loss with transformers 5; 0.4 is untested",
        name="colpali-engine", needed_by="lir_robust.patches",
        fix_note="after `make setup`'s other dependencies; --no-deps because its metadata caps torch below 2.14",
    )


def _colpali_models():
    check_colpali_version()
    import colpali_engine.models as models

    return models


# ---------------------------------------------------------------------------------------------------------------
# Scoring through a processor
# ---------------------------------------------------------------------------------------------------------------


def _without_padding(embeddings: Union[torch.Tensor, Sequence[torch.Tensor]]) -> Union[torch.Tensor, list]:
    """colpali-engine's inputs with zero / NaN rows dropped from list items (a padded tensor keeps its zeros: the
    scorer masks them). Lists made with ``list(padded_batch)`` carry the model's zero padding rows."""
    if isinstance(embeddings, torch.Tensor):
        return embeddings
    items = list(embeddings)
    stripped = []
    for index, item in enumerate(items):
        if not isinstance(item, torch.Tensor) or item.dim() != 2:
            stripped.append(item)  # the scorer raises the clear error
            continue
        valid = padding_mask_from_values(item.unsqueeze(0))[0]
        stripped.append(item if bool(valid.all()) else item[valid])
    return stripped


def patch_processor(processor: Any, head: Union[str, PoolingHead, dict] = "maxsim") -> Any:
    """Make ``processor.score`` and ``processor.score_multi_vector`` score with ``head``; return the processor.

    Only this instance changes (the methods are replaced on the instance, not on the class). Inputs are as
    colpali-engine accepts them: lists of ``[L_i, D]`` tensors or zero-padded ``[N, L, D]`` tensors; zero or NaN
    rows are padding. Output: float32 ``[Nq, Nd]`` on the CPU. The head is kept as ``processor.pooling_head``.
    """
    check_colpali_version()
    head = parse_head(head)
    if not hasattr(processor, "score_multi_vector"):
        raise TypeError(
            f"{type(processor).__name__} has no score_multi_vector: patch_processor expects a colpali-engine "
            "processor (ColPaliProcessor, ColQwen2Processor, ...)"
        )

    def score_multi_vector(qs, ps, batch_size: int = 128, device=None, **_ignored) -> torch.Tensor:
        """Late-interaction scores with the pooling head ``head``: float32 ``[Nq, Nd]`` on the CPU."""
        if len(qs) == 0:
            raise ValueError("No queries provided")
        if len(ps) == 0:
            raise ValueError("No passages provided")
        return score(
            _without_padding(qs),
            _without_padding(ps),
            head,
            query_batch_size=batch_size,
            document_batch_size=batch_size,
            device=device,
        )

    def score_with_head(qs, ps, device=None, **kwargs) -> torch.Tensor:
        """``processor.score`` with the pooling head: float32 ``[Nq, Nd]`` on the CPU."""
        return score_multi_vector(qs, ps, device=device, **kwargs)

    processor.score_multi_vector = score_multi_vector
    processor.score = score_with_head
    processor.pooling_head = head
    return processor


# ---------------------------------------------------------------------------------------------------------------
# Losses for colpali-engine's trainer
# ---------------------------------------------------------------------------------------------------------------


class PooledColbertLoss(PooledInfoNCELoss):
    """colpali-engine ``loss_func``: in-batch InfoNCE over pooled scores (ColbertLoss with a pooling head).

    ``forward(query_embeddings [B, Tq, D], doc_embeddings [N, Td, D], neg_doc_embeddings=None, offset=0)``, keyword
    or positional, as ContrastiveTrainer calls it; zero rows (model padding, padding across processes) are masked.
    Defaults follow colpali-engine's ColbertLoss: temperature 0.02, scores divided by query length.
    """

    def __init__(self, head: Union[str, PoolingHead] = "maxsim", temperature: float = 0.02, normalize_scores: bool = True):
        check_colpali_version()
        super().__init__(head=head, temperature=temperature, normalize_scores=normalize_scores)


class PooledColbertPairwiseCELoss(PooledPairwiseCELoss):
    """colpali-engine ``loss_func``: softplus(hardest negative - positive) over pooled scores.

    Same call signature as :class:`PooledColbertLoss`; defaults follow ColbertPairwiseCELoss (temperature 1.0).
    """

    def __init__(self, head: Union[str, PoolingHead] = "maxsim", temperature: float = 1.0, normalize_scores: bool = True):
        check_colpali_version()
        super().__init__(head=head, temperature=temperature, normalize_scores=normalize_scores)


# ---------------------------------------------------------------------------------------------------------------
# Model families, LoRA targets, loading
# ---------------------------------------------------------------------------------------------------------------

_PROJECTIONS = "(down_proj|gate_proj|up_proj|k_proj|q_proj|v_proj|o_proj)"

# family -> (model class, processor class, LoRA target regex as in colpali-engine's training configs)
FAMILIES: dict[str, tuple[str, str, str]] = {
    "colpali": ("ColPali", "ColPaliProcessor", rf"(.*(language_model).*{_PROJECTIONS}.*$|.*(custom_text_proj).*$)"),
    "colqwen2": ("ColQwen2", "ColQwen2Processor", rf"(.*(model).*{_PROJECTIONS}.*$|.*(custom_text_proj).*$)"),
    "colqwen2.5": (
        "ColQwen2_5",
        "ColQwen2_5_Processor",
        rf"(.*(model)(?!.*visual).*{_PROJECTIONS}.*$|.*(custom_text_proj).*$)",
    ),
    "colsmol": ("ColIdefics3", "ColIdefics3Processor", rf"(.*(model.text_model).*{_PROJECTIONS}.*$|.*(custom_text_proj).*$)"),
}


def _family(name: str) -> str:
    key = colpali_family(name)  # the aliases live in lir_robust.core.huggingface
    if key not in FAMILIES:
        raise ValueError(f"unknown colpali-engine model family {name!r}; valid families: {', '.join(FAMILIES)}")
    return key


def lora_target_modules(family: str) -> str:
    """colpali-engine's LoRA ``target_modules`` regex for a family (colpali, colqwen2, colqwen2.5, colsmol).

    Language-model attention / MLP projections and ``custom_text_proj``; never the vision tower.
    """
    return FAMILIES[_family(family)][2]


def _local_model_type(directory: Path) -> Optional[str]:
    config = directory / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("model_type")
    adapter = directory / "adapter_config.json"
    if adapter.is_file():  # a LoRA adapter: the base model's name says the family
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if base and not Path(base).is_dir() and in_hub_cache(base):  # a Hub id: its config.json in the local Hub cache
            cached = cached_file(base, "config.json")
            base = str(cached.parent) if cached is not None else None
        return _local_model_type(Path(base)) if base and Path(base).is_dir() else None
    return None


def _local_head(directory: Path) -> Optional[PoolingHead]:
    """The head saved in ``directory/pooling.json`` (see :func:`lir_robust.scoring.pooling.load_pooling_json`)."""
    return load_pooling_json(directory)


def _hub_head(repo_id: str, revision: Optional[str], timeout: float) -> Optional[PoolingHead]:
    """The head in a Hub repo's pooling.json (a published lir-robust checkpoint), read from its snapshot: the local Hub
    cache, else downloaded when the Hub may be reached; None for a repo without one (it scores with MaxSim)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, POOLING_FILE, revision=revision)  # a path, "known missing", or None
    if found is None and not hub_offline():
        try:
            found = hf_hub_download(repo_id, POOLING_FILE, revision=revision, etag_timeout=timeout)
        except Exception as error:  # noqa: BLE001 - no pooling.json in the repo (404), or the Hub failing now
            if type(error).__name__ not in _MISSING_FILE_ERRORS:
                logger.warning("%s: could not read its pooling.json (%s); scoring with maxsim", repo_id, type(error).__name__)
            return None
    return _local_head(Path(found).parent) if isinstance(found, str) else None


def _unreachable(model_name_or_path: str, reason: str) -> HubUnreachableError:
    return HubUnreachableError(
        f"cannot load {model_name_or_path!r}: the Hugging Face Hub is unreachable ({reason}) and the checkpoint is "
        "not in the local cache. Point at a local copy instead: load_colpali('/path/to/folder') with a folder holding "
        "config.json (or adapter_config.json), the weights and the processor files, e.g. one made elsewhere with "
        f"`hf download {model_name_or_path} --local-dir /path/to/folder`; or unset HF_HUB_OFFLINE on a "
        "machine with Hub access."
    )


def _not_found(model_name_or_path: str, reason: str) -> ModelNotFoundError:
    folder = Path(model_name_or_path).expanduser().absolute()
    return ModelNotFoundError(
        f"model {model_name_or_path!r} not found: there is no folder {str(folder)!r}, and the Hugging Face Hub has no "
        f"such model or revision ({reason}). Check the spelling of the folder or of the Hub id (owner/name), or log "
        "in (`hf auth login`) if it is private."
    )


_NOT_FOUND_ERRORS = {"RepositoryNotFoundError", "RevisionNotFoundError"}
_MISSING_FILE_ERRORS = {"EntryNotFoundError", "RemoteEntryNotFoundError"}


def _hub_error_kind(error: Optional[BaseException]) -> str:
    """``"gated"``, ``"not found"``, ``"missing file"`` or ``"unreachable"`` for an error raised while fetching from
    the Hub (the error itself or one it was raised from: transformers wraps huggingface_hub's errors in an OSError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        names = {cls.__name__ for cls in type(error).__mro__}
        if "GatedRepoError" in names:
            return "gated"
        if names & _NOT_FOUND_ERRORS:
            return "not found"
        if names & _MISSING_FILE_ERRORS:
            return "missing file"
        error = error.__cause__ or error.__context__
    return "unreachable"


def _classified(repo_id: str, error: BaseException) -> ColpaliIntegrationError:
    """The one-message error for a failed Hub fetch of ``repo_id``: gated, not found, a missing file, unreachable."""
    kind = _hub_error_kind(error)
    if kind == "gated":
        return _gated(repo_id)
    if kind == "not found":
        return _not_found(repo_id, one_line(error))
    if kind == "missing file":
        return ColpaliIntegrationError(
            f"{repo_id!r} on the Hub lacks a file the loader needs ({one_line(error)}): is it a colpali-engine "
            "checkpoint (config.json or adapter_config.json, weights, processor files)?"
        )
    return _unreachable(repo_id, one_line(error))


def _gated(repo_id: str) -> ColpaliIntegrationError:
    return ColpaliIntegrationError(
        f"{repo_id!r} is gated on the Hub: accept its licence on huggingface.co and log in (`hf auth login`), "
        "or point at a local copy"
    )


def _probe_hub(repo_id: str, timeout: float, revision: Optional[str] = None) -> None:
    """Raise a one-message error when the Hub cannot be reached (HubUnreachableError) or does not know ``repo_id``
    or its ``revision`` (ModelNotFoundError)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError

    try:
        HfApi().model_info(repo_id, revision=revision, timeout=timeout)
    except HFValidationError:
        raise ModelNotFoundError(
            f"{repo_id!r} is neither an existing local folder nor a valid Hub id (owner/name)"
        ) from None
    except Exception as error:  # connection refused, DNS, proxy, timeout, ... all mean "unreachable" to the user
        raise _classified(repo_id, error) from None


def _restore_tied_output_embeddings(model: torch.nn.Module) -> None:
    """Re-tie language-model heads that loading left on the meta device.

    A saved ColPali (PaliGemma) checkpoint stores the tied ``lm_head`` only through ``embed_tokens``; on transformers
    5.23 ``from_pretrained`` then leaves ``lm_head.weight`` on the meta device (``model.to`` fails). ColPali never uses
    that head (it projects hidden states with ``custom_text_proj``), but the module must hold real tensors.
    """
    for module in model.modules():
        head = getattr(module, "lm_head", None)
        if isinstance(head, torch.nn.Linear) and head.weight.is_meta and hasattr(module, "get_input_embeddings"):
            embeddings = module.get_input_embeddings().weight
            if embeddings.shape == head.weight.shape and not embeddings.is_meta:
                head.weight = embeddings
    left = [name for name, parameter in model.named_parameters() if parameter.is_meta]
    if left:
        raise RuntimeError(f"these weights were not in the checkpoint and could not be restored: {left[:5]}")


def load_colpali(
    model_name_or_path: Union[str, os.PathLike],
    family: Optional[str] = None,
    device: Optional[Union[str, torch.device]] = None,
    torch_dtype: Optional[torch.dtype] = None,
    head: Optional[Union[str, PoolingHead, dict]] = None,
    *,
    attn_implementation: Optional[str] = None,
    hub_timeout: float = 10.0,
    **model_kwargs: Any,
) -> tuple[Any, Any]:
    """Load a colpali-engine model and its processor (patched with ``head``): ``(model, processor)``.

    ``model_name_or_path``: a local folder or a Hub id (``vidore/colqwen2.5-v0.2``). ``family`` (colpali, colqwen2,
    colqwen2.5, colsmol) is inferred from the config's model_type or else from the name. ``head``: defaults to the
    pooling.json of the folder (or of the Hub id's snapshot: cached, else downloaded), else maxsim.
    ``attn_implementation`` defaults to "eager" on the CPU (sdpa gave NaN on left-padded rows). When the Hub is
    unreachable (HF_HUB_OFFLINE=1 or any network error) and the checkpoint is not cached, raises
    :class:`HubUnreachableError` at once, with a message saying how to use a local copy; a Hub id (or ``revision=``)
    the Hub does not know raises :class:`ModelNotFoundError`, naming both readings.
    """
    check_colpali_version()
    name = str(model_name_or_path)
    local = Path(name).expanduser()
    load_kwargs: dict[str, Any] = dict(model_kwargs)
    if local.is_dir():
        source = str(local)
        family = _family(family) if family else infer_family(name, _local_model_type(local))
        if head is None:
            head = _local_head(local)
    else:
        if local.exists() or looks_like_path(name):
            raise ColpaliIntegrationError(f"{name!r} is not a folder: pass a checkpoint folder or a Hub id (owner/name)")
        source = name
        if in_hub_cache(name):
            load_kwargs.setdefault("local_files_only", True)
        elif hub_offline():
            raise _unreachable(name, "HF_HUB_OFFLINE is set")
        else:
            _probe_hub(name, hub_timeout, revision=model_kwargs.get("revision"))
        family = _family(family) if family else infer_family(name)
    models = _colpali_models()
    model_class_name, processor_class_name, _ = FAMILIES[family]
    model_class, processor_class = getattr(models, model_class_name), getattr(models, processor_class_name)

    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if attn_implementation is None and device.type == "cpu":
        attn_implementation = "eager"
    if attn_implementation is not None:
        load_kwargs["attn_implementation"] = attn_implementation
    if torch_dtype is not None:
        load_kwargs["dtype"] = torch_dtype
    processor_kwargs = {"local_files_only": True} if load_kwargs.get("local_files_only") else {}
    try:
        model = model_class.from_pretrained(source, **load_kwargs)
        processor = processor_class.from_pretrained(source, **processor_kwargs)
    except OSError as error:
        if local.is_dir():
            raise
        raise _classified(name, error) from None
    _restore_tied_output_embeddings(model)
    model = model.to(device).eval()
    if head is None and not local.is_dir():  # a Hub id: the head its snapshot's pooling.json names, as for folders
        head = _hub_head(name, model_kwargs.get("revision"), hub_timeout)
    processor = patch_processor(processor, "maxsim" if head is None else head)
    logger.info("loaded %s as %s on %s, pooling head %s", name, family, device, processor.pooling_head)
    return model, processor
