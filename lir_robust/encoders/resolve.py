"""Hub ids, the local Hub cache, and loading a published checkpoint back by name.

    resolve_model_spec("alice/robust-topk")   # -> ".../models--alice--robust-topk/snapshots/<commit>" (load_encoder)
    resolve_model_spec("runs/finetune-topk")  # -> unchanged: a folder, "minilm" or another Hub id pass through

A published lir-robust repo is one holding ``pooling.json``. Offline, its snapshot in the local Hub cache loads (an
adapter's base model must be cached too); online, the Hub is asked for its current revision within ``timeout``
seconds, and a cached snapshot is used (with a warning) when the Hub cannot be reached.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lir_robust.core.huggingface import (
    DEFAULT_TIMEOUT_S,
    HubError,
    cache_dir,
    cached_file,
    endpoint,
    hub_call,
    hub_offline,
    is_hub_id,
    one_line,
)
from lir_robust.scoring.pooling import POOLING_FILE

__all__ = ["is_hub_id", "is_published_id", "cached_file", "cached_snapshot", "resolve_model_spec"]

logger = logging.getLogger(__name__)


def is_published_id(spec: str) -> bool:
    """``owner/name`` exactly (a bare name such as ``minilm`` is never resolved on the Hub here)."""
    return is_hub_id(spec, with_owner=True)


def cached_snapshot(repo_id: str, filename: str = POOLING_FILE) -> Path | None:
    """The snapshot folder of ``repo_id``'s main revision in the local Hub cache when it holds ``filename``, else None."""
    found = cached_file(repo_id, filename)
    return found.parent if found is not None else None


def _adapter_base(folder: Path) -> str | None:
    """An adapter folder's ``base_model_name_or_path`` (None for a folder that is no adapter)."""
    adapter = folder / "adapter_config.json"
    return json.loads(adapter.read_text()).get("base_model_name_or_path") if adapter.is_file() else None


def _ensure_base_config(folder: Path, timeout: float) -> None:
    """An adapter's Hub base: its config.json must be in the local Hub cache (fetched when online) so that the
    family can be read and the base loaded; HubError when offline and it is not cached."""
    base = _adapter_base(folder)
    if not base or Path(base).is_dir() or not is_hub_id(base) or cached_file(base, "config.json") is not None:
        return
    if hub_offline():
        raise HubError(
            f"{folder} is an adapter on the base model {base}, which is not in the local Hugging Face cache "
            f"({cache_dir()}) while HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE on a machine with Hub access (or "
            f"`hf download {base}` there first)"
        )
    from huggingface_hub import hf_hub_download

    hub_call(f"fetch the base model {base}", lambda: hf_hub_download(base, "config.json", etag_timeout=timeout), "", base)


MODEL_FILES = ("config.json", "adapter_config.json", "modules.json")  # one of them: a model is in the local Hub cache


def resolve_model_spec(spec: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """A model spec for load_encoder: a published lir-robust id (``owner/name`` whose repo holds pooling.json) becomes
    the local folder of its snapshot; anything else (a folder, ``minilm``, another Hub id) comes back unchanged.

    Offline, an id whose snapshot is in the local Hub cache resolves (for an adapter, its base must be cached too); an
    id that is not cached is left to the family's loader, which says so. Online, the Hub is asked (within ``timeout``
    seconds) for the repo's current revision: a lir-robust repo is downloaded (or found cached at that revision); when
    the Hub cannot be reached, a cached snapshot is used (with a warning), else one HubError says what to do.
    """
    text = str(spec).strip()
    if not is_published_id(text) or Path(text).expanduser().exists():
        return spec
    cached = cached_snapshot(text)
    if hub_offline():
        if cached is None:
            return spec
        _ensure_base_config(cached, timeout)
        logger.info("%s: the cached snapshot %s", text, cached)
        return str(cached)
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    # any other model of the local Hub cache (a colpali-engine or PyLate id): its own loader reads the cache
    in_cache = cached is None and any(cached_file(text, name) is not None for name in MODEL_FILES)
    try:
        info = HfApi().model_info(text, timeout=timeout)
    except (GatedRepoError, RepositoryNotFoundError) as error:
        if cached is not None:
            logger.warning("%s: the Hub refused it (%s); using the cached snapshot %s", text, type(error).__name__, cached)
            return str(cached)
        if in_cache:
            logger.warning("%s: the Hub refused it (%s); loading the copy in the local Hub cache", text, type(error).__name__)
            return spec
        if isinstance(error, GatedRepoError):
            raise HubError(f"{text} is gated on the Hub: accept its terms on huggingface.co and log in (`hf auth login`)") from None
        raise HubError(f"{text} is neither a local folder nor a model on the Hub (or it is private and you are not logged in)") from None
    except Exception as error:  # noqa: BLE001 - network failures: one message
        if cached is not None:
            logger.warning("%s: the Hub is unreachable (%s); using the cached snapshot %s", text, one_line(error), cached)
            return str(cached)
        if in_cache:
            logger.warning("%s: the Hub is unreachable (%s); loading the copy in the local Hub cache", text, one_line(error))
            return spec
        raise HubError(
            f"cannot load {text}: not in the local Hugging Face cache ({cache_dir()}) and the Hub at {endpoint()} is "
            f"unreachable ({one_line(error)}); pass a local folder, or retry with network access"
        ) from None
    if POOLING_FILE not in {sibling.rfilename for sibling in info.siblings or []}:
        return spec  # not a lir-robust checkpoint: the family's own loader fetches what it needs
    folder = Path(hub_call(f"download {text}", lambda: snapshot_download(text, revision=info.sha, etag_timeout=timeout), "", text))
    _ensure_base_config(folder, timeout)
    logger.info("%s: the snapshot %s", text, folder)
    return str(folder)
