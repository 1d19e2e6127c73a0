"""How lir-robust talks to the Hugging Face Hub: the one error every failure becomes, the offline switch, the
endpoint, the local Hub cache folder, and one Hub call whose failure becomes one line.

    value = hub_call("upload to alice/x", lambda: api.upload_folder(...), token, "alice/x")   # HubError on failure

The token never appears in a message: :func:`one_line` replaces it with ``***`` in anything quoted from an error.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator

from lir_robust.core.errors import HubError

__all__ = ["HubError", "env_flag", "DEFAULT_TIMEOUT_S", "hub_offline", "endpoint", "cache_dir", "one_line", "hub_call", "no_network"]

DEFAULT_TIMEOUT_S = 10.0


def env_flag(*names: str) -> bool:
    """True when any of these environment variables is set to 1 / on / yes / true (any case), as huggingface_hub
    reads HF_HUB_OFFLINE; read at each call, so a flag set after import counts."""
    return any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE") for name in names)


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set (in the environment, or in huggingface_hub's constants)."""
    from huggingface_hub import constants

    return env_flag("HF_HUB_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def endpoint() -> str:
    """The Hub's address (``https://huggingface.co`` unless HF_ENDPOINT says otherwise), without a trailing slash."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def cache_dir() -> str:
    """The local Hub cache folder (HF_HUB_CACHE)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def one_line(error: BaseException, secret: str | None = None) -> str:
    """``"ErrorType: first line of its message"`` (200 characters at most), with ``secret`` replaced by ``***``."""
    message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text.replace(secret, "***") if secret else text


def hub_call(what: str, call: Callable[[], Any], token: str, repo_id: str) -> Any:
    """Run one Hub call; its failure becomes one HubError line ``cannot <what>: ...`` (the token scrubbed)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        return call()
    except OfflineModeIsEnabled:
        raise HubError(f"cannot {what}: HF_HUB_OFFLINE is set; unset it, or use --dry-run OUT") from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            raise HubError(f"cannot {what}: the Hub rejected the token (401); log in again with `hf auth login`") from None
        if status == 403:
            raise HubError(
                f"cannot {what}: the token may not write to {repo_id} (403); use a token with write access to that "
                "user or organisation"
            ) from None
        raise HubError(f"cannot {what}: the Hub answered {status} ({one_line(error, token)})") from None
    except HubError:
        raise
    except Exception as error:  # noqa: BLE001 - connection refused, DNS, proxy, timeout: the same to the user
        raise HubError(
            f"cannot {what}: the Hugging Face Hub at {endpoint()} is unreachable ({one_line(error, token)}); check "
            "the network (HF_ENDPOINT, proxy), or write the folder with --dry-run OUT and upload it later with "
            "`hf upload`"
        ) from None


@contextlib.contextmanager
def no_network() -> Iterator[None]:
    """huggingface_hub, and transformers through it, offline while the block runs: a dry run reaches no server (a
    text checkpoint's base weights must then be local or cached, and the message says so if they are not)."""
    from huggingface_hub import constants

    flag, variable = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE, os.environ["HF_HUB_OFFLINE"] = True, "1"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = flag
        if variable is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = variable


# ----------------------------------------------------------------------------------------------------------------
# TEMP (superseded by H1): lir_robust.training's copies of the "path or Hub id" and model-family rules, verbatim, so
# that the training branch runs before H1's consolidated versions land.
# ----------------------------------------------------------------------------------------------------------------

COLPALI_MODEL_TYPES = ("paligemma", "qwen2_vl", "qwen2_5_vl", "idefics3")
COLPALI_NAME_HINTS = ("colpali", "colqwen", "colsmol", "colidefics", "paligemma")


def looks_like_path(text: str) -> bool:
    """True when ``text`` can only be a local path or a collection name, never a Hub id: it exists here, starts with
    ``.``, ``/`` or ``~``, or holds no ``/`` (training's rule for its data)."""
    from pathlib import Path

    return Path(text).expanduser().exists() or text.startswith((".", "/", "~")) or "/" not in text


def is_pylate_model(model: str) -> bool:
    """True for a PyLate model folder or Hub id (see lir_robust.patches.pylate.is_pylate_model; needs no pylate)."""
    from lir_robust.patches.pylate import is_pylate_model as check

    return check(model)


def model_family(model: str) -> str:
    """``"text"`` for BERT-like encoders and PyLate models (TextColBERT), else the colpali-engine family (colpali,
    colqwen2, ...)."""
    import json
    from pathlib import Path

    if is_pylate_model(model):
        return "text"
    local = Path(model).expanduser()
    model_type = None
    if (local / "config.json").is_file():
        model_type = json.loads((local / "config.json").read_text()).get("model_type")
    elif (local / "adapter_config.json").is_file():
        base = json.loads((local / "adapter_config.json").read_text()).get("base_model_name_or_path", "")
        return model_family(base) if base else "text"
    if model_type in COLPALI_MODEL_TYPES or any(hint in str(model).lower() for hint in COLPALI_NAME_HINTS):
        from lir_robust.patches.colpali import infer_family

        return infer_family(str(model), model_type)
    return "text"
