"""How lir-robust talks to the Hugging Face Hub, in one place each: the offline switch, "a local path or a Hub id",
the local Hub cache, a dependency's version range, a model's family (text / PyLate / colpali-engine), the endpoint,
and one Hub call whose failure becomes one line.

    value = hub_call("upload to alice/x", lambda: api.upload_folder(...), token, "alice/x")   # HubError on failure
    hub_offline()                      # HF_HUB_OFFLINE (environment or huggingface_hub.constants)
    hub_offline(datasets=True)         # ... or HF_DATASETS_OFFLINE
    looks_like_path("./x")             # True: never a Hub id
    is_hub_id("vidore/colqwen2.5-v0.2")
    cached_file("vidore/colqwen2.5-v0.2", "config.json")    # a Path in the local Hub cache, or None
    model_family("vidore/colqwen2.5-v0.2")                  # "colqwen2.5"; "text" for BERT-like and PyLate models

The token never appears in a message: :func:`one_line` replaces it with ``***`` in anything quoted from an error.
Nothing here imports colpali-engine or pylate.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from lir_robust.core.errors import HubError, one_line

__all__ = [
    "HubError",
    "env_flag",
    "DEFAULT_TIMEOUT_S",
    "hub_offline",
    "endpoint",
    "cache_dir",
    "one_line",
    "hub_call",
    "no_network",
    "looks_like_path",
    "is_hub_id",
    "cached_file",
    "in_hub_cache",
    "installed_version",
    "version_range",
    "check_version",
    "COLPALI_FAMILIES",
    "COLPALI_MODEL_TYPES",
    "colpali_family",
    "infer_family",
    "is_colpali_folder",
    "model_family",
    "MODULES_FILE",
    "PYLATE_CONFIG_FILE",
    "is_pylate_layout",
    "is_pylate_folder",
    "is_pylate_model",
]

DEFAULT_TIMEOUT_S = 10.0


def env_flag(*names: str) -> bool:
    """True when any of these environment variables is set to 1 / on / yes / true (any case), as huggingface_hub
    reads HF_HUB_OFFLINE; read at each call, so a flag set after import counts."""
    return any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE") for name in names)


def hub_offline(datasets: bool = False) -> bool:
    """True when HF_HUB_OFFLINE is set (in the environment, read at each call, or in huggingface_hub's constants);
    with ``datasets=True`` HF_DATASETS_OFFLINE counts too (the ``datasets`` library's own switch)."""
    from huggingface_hub import constants

    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if datasets else ("HF_HUB_OFFLINE",)
    return env_flag(*names) or bool(constants.HF_HUB_OFFLINE)


def endpoint() -> str:
    """The Hub's address (``https://huggingface.co`` unless HF_ENDPOINT says otherwise), without a trailing slash."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def cache_dir() -> str:
    """The local Hub cache folder (HF_HUB_CACHE)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


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


# ------------------------------------------------------------------------------------------------------------------
# A local path or a Hub id; the local Hub cache
# ------------------------------------------------------------------------------------------------------------------


def looks_like_path(text: str) -> bool:
    """True for a spec that can only be a path (``./x``, ``/x``, ``~/x``, ``a\\b``, ``a/b/c``, ``x/``), never a Hub
    id (``owner/name`` or a bare legacy ``name``). Whether the path exists is not looked at."""
    text = str(text).strip()
    return text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1 or text.endswith("/")


def is_hub_id(text: Optional[str], *, with_owner: bool = False) -> bool:
    """True for ``owner/name`` (or, unless ``with_owner``, a bare legacy ``name``) that huggingface_hub accepts and
    that is no local path (:func:`looks_like_path`, or an existing file or folder)."""
    if not text or not isinstance(text, str):
        return False
    text = text.strip()
    if looks_like_path(text) or os.path.exists(text) or (with_owner and text.count("/") != 1):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def cached_file(repo_id: str, filename: str, revision: Optional[str] = None) -> Optional[Path]:
    """``filename`` of ``repo_id``'s main revision (or ``revision``) in the local Hub cache, else None (also for an
    invalid id)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:  # noqa: BLE001 - an id huggingface_hub rejects is simply not cached
        return None
    return Path(found) if isinstance(found, str) else None


def in_hub_cache(repo_id: str, filenames: tuple[str, ...] = ("config.json", "adapter_config.json")) -> bool:
    """True when one of ``filenames`` of ``repo_id`` is in the local Hub cache (a model's config: it is cached)."""
    return any(cached_file(repo_id, filename) is not None for filename in filenames)


# ------------------------------------------------------------------------------------------------------------------
# A dependency's version range
# ------------------------------------------------------------------------------------------------------------------


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of ``distribution`` (e.g. ``"pylate"``), None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    numbers = re.match(r"^\s*v?(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in numbers.group(1).split(".")) if numbers else ()


def version_range(minimum: tuple[int, ...], below: tuple[int, ...]) -> str:
    """``(0, 3, 17), (0, 4)`` -> ``">=0.3.17,<0.4"``."""
    return f">={'.'.join(map(str, minimum))},<{'.'.join(map(str, below))}"


def check_version(distribution: str, minimum: tuple[int, ...], below: tuple[int, ...], error_class: type[Exception],
                  fix: str, why: str, *, name: Optional[str] = None, needed_by: str = "lir_robust",
                  fix_note: str = "") -> str:
    """Return the installed version of ``distribution``; raise ``error_class`` when it is missing (the message: who
    needs it, the range, ``fix`` and ``fix_note``) or outside ``minimum <= version < below`` (the message: the range,
    ``why`` that range, and ``fix``). ``name``: how the message spells the package (default ``distribution``)."""
    name = name or distribution
    supported = version_range(minimum, below)
    version = installed_version(distribution)
    if version is None:
        raise error_class(
            f"{name} is not installed; {needed_by} needs {name} {supported}. Fix: {fix}"
            + (f" ({fix_note})" if fix_note else "")
        )
    release = _release(version)
    if not release or not (tuple(minimum) <= release < tuple(below)):
        raise error_class(f"{name} {version} is installed, but {needed_by} supports {name} {supported} ({why}). Fix: {fix}")
    return version


# ------------------------------------------------------------------------------------------------------------------
# Model families: "text" (BERT-like encoders, PyLate models) or a colpali-engine family
# ------------------------------------------------------------------------------------------------------------------

COLPALI_FAMILIES = ("colpali", "colqwen2", "colqwen2.5", "colsmol")  # lir_robust.patches.colpali.FAMILIES' keys
COLPALI_MODEL_TYPES = ("paligemma", "qwen2_vl", "qwen2_5_vl", "idefics3")  # config.json model_type of each
# Names that say "a colpali-engine model" (model_family); infer_family then tells which.
COLPALI_NAME_HINTS = ("colpali", "colqwen", "colsmol", "colidefics", "paligemma")
FAMILY_ALIASES = {
    "colpali": "colpali", "paligemma": "colpali",
    "colqwen2": "colqwen2", "qwen2_vl": "colqwen2", "qwen2vl": "colqwen2",
    "colqwen2.5": "colqwen2.5", "colqwen2_5": "colqwen2.5", "colqwen25": "colqwen2.5", "qwen2_5_vl": "colqwen2.5",
    "colsmol": "colsmol", "colidefics3": "colsmol", "idefics3": "colsmol", "colsmolvlm": "colsmol",
}
# Name fragments, most specific first.
FAMILY_NAME_HINTS = [
    ("colqwen2.5", "colqwen2.5"), ("colqwen2_5", "colqwen2.5"), ("colqwen25", "colqwen2.5"),
    ("colqwen2", "colqwen2"), ("colpali", "colpali"), ("paligemma", "colpali"),
    ("colsmol", "colsmol"), ("colidefics3", "colsmol"), ("idefics3", "colsmol"), ("smolvlm", "colsmol"),
]
COLPALI_ARCHITECTURES = ("ColPali", "ColQwen", "ColIdefics", "ColSmol")


def colpali_family(name: str) -> str:
    """The canonical family for a family name or alias (``colqwen2_5`` -> ``colqwen2.5``); ValueError if unknown."""
    key = name.strip().lower().replace("-", "_") if name else ""
    key = FAMILY_ALIASES.get(key, FAMILY_ALIASES.get(key.replace("_", "."), key))
    if key not in COLPALI_FAMILIES:
        raise ValueError(f"unknown colpali-engine model family {name!r}; valid families: {', '.join(COLPALI_FAMILIES)}")
    return key


def infer_family(model_name_or_path: str, model_type: Optional[str] = None) -> str:
    """Family from a config's ``model_type`` (paligemma, qwen2_vl, qwen2_5_vl, idefics3) or else from the name."""
    if model_type and model_type.lower() in FAMILY_ALIASES:
        return FAMILY_ALIASES[model_type.lower()]
    lowered = str(model_name_or_path).lower()
    for fragment, family in FAMILY_NAME_HINTS:
        if fragment in lowered:
            return family
    raise ValueError(
        f"cannot tell the colpali-engine model family of {model_name_or_path!r}"
        + (f" (config model_type {model_type!r})" if model_type else "")
        + f"; pass family= one of {', '.join(COLPALI_FAMILIES)}"
    )


def is_colpali_folder(path: Path) -> bool:
    """True for a local colpali-engine checkpoint folder: a LoRA adapter or processor files, or a config.json whose
    architectures name a colpali-engine class."""
    config = path / "config.json"
    if (path / "adapter_config.json").is_file() or (path / "preprocessor_config.json").is_file():
        return True
    if config.is_file():
        try:
            text = json.loads(config.read_text())
        except ValueError:
            return False
        return any(name in json.dumps(text.get("architectures", [])) for name in COLPALI_ARCHITECTURES)
    return False


def model_family(model: str) -> str:
    """``"text"`` for BERT-like encoders and PyLate models (TextColBERT), else the colpali-engine family (colpali,
    colqwen2, ...): from a folder's config.json model_type (an adapter: its base's family), else from the name.
    ValueError for a colpali-looking name whose family cannot be told."""
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
        return infer_family(str(model), model_type)
    return "text"


# ------------------------------------------------------------------------------------------------------------------
# PyLate models (told from their files or the Hub's metadata; pylate itself is not needed)
# ------------------------------------------------------------------------------------------------------------------

MODULES_FILE = "modules.json"
PYLATE_CONFIG_FILE = "config_sentence_transformers.json"


def is_pylate_layout(modules: Any, settings: Any) -> bool:
    """modules.json lists a PyLate Dense module, or config_sentence_transformers.json holds PyLate's prefixes."""
    types = [str(module.get("type", "")) for module in modules] if isinstance(modules, list) else []
    if any(kind.startswith("pylate.") for kind in types):
        return True
    return isinstance(settings, dict) and "query_prefix" in settings and "document_prefix" in settings


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_pylate_folder(path: "str | os.PathLike") -> bool:
    """True for a folder holding a PyLate model (modules.json with PyLate's Dense, or PyLate's prefixes in
    config_sentence_transformers.json); a plain sentence-transformers or Hugging Face folder is not one."""
    folder = Path(path).expanduser()
    if not (folder / MODULES_FILE).is_file():
        return False
    return is_pylate_layout(_read_json(folder / MODULES_FILE), _read_json(folder / PYLATE_CONFIG_FILE))


def is_pylate_model(name_or_path: "str | os.PathLike") -> bool:
    """True for a PyLate folder, or a Hub id of a PyLate model: read from the local Hub cache when its files are
    there, else (online) from the Hub's metadata (library PyLate, or the PyLate tag). False when it cannot be told."""
    name = str(name_or_path)
    if Path(name).expanduser().is_dir():
        return is_pylate_folder(name)
    if not is_hub_id(name, with_owner=True):
        return False
    modules, settings = cached_file(name, MODULES_FILE), cached_file(name, PYLATE_CONFIG_FILE)
    if modules is not None:
        return is_pylate_layout(_read_json(modules), _read_json(settings) if settings is not None else None)
    if hub_offline():
        return False
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(name, timeout=10)
    except Exception:  # noqa: BLE001 - unreachable, not found, gated: the model loaders give the message
        return False
    return (info.library_name or "").lower() == "pylate" or "PyLate" in (info.tags or [])
