"""Atomic file writes: every file the project writes goes through here (a reader never sees half a file).

Each writer puts the content into a temporary file in the target folder (same file system), flushes it to disk and
renames it over the target with ``os.replace``, which is atomic on POSIX and Windows. A run killed part-way leaves
either the old file or the new one, never a truncated one; stray ``*.tmp-*`` files are harmless and ignored.

    write_text_atomic(path, "...")           write_json_atomic(path, {...})
    write_bytes_atomic(path, b"...")         save_figure_atomic(figure, path, dpi=120)
    with atomic_path(path) as temporary:     # for libraries that want a path (safetensors, torch.save, numpy)
        save_file(tensors, temporary)
    with atomic_folder(folder) as temporary: # a whole folder (a model, a cache entry), renamed into place at the end
        model.save_pretrained(temporary)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "atomic_path",
    "atomic_folder",
    "replace_folder",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "save_figure_atomic",
    "json_default", "usual_permissions"]


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike", suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed.

    ``suffix`` (default: the target's own suffix) keeps libraries that look at the extension (matplotlib) happy.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-", suffix=suffix if suffix is not None else path.suffix)
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
    try:
        yield temporary
        _fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def replace_folder(temporary: "str | os.PathLike", final: "str | os.PathLike") -> None:
    """Move the finished folder ``temporary`` onto ``final``: an older ``final`` is moved aside first, then removed.
    ``final`` is never half written; between the two renames it is briefly absent (a kill there leaves the old copy
    as ``.<name>.old-<pid>`` beside it)."""
    temporary, final = Path(temporary), Path(final)
    aside = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, aside)
    os.replace(temporary, final)
    shutil.rmtree(aside, ignore_errors=True)
    with contextlib.suppress(OSError):  # make the rename durable
        descriptor = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_folder(final: "str | os.PathLike") -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; once the block succeeds it replaces ``final``
    (:func:`replace_folder`); on error it is removed and ``final`` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
    try:
        yield temporary
        usual_permissions(temporary)
        replace_folder(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def usual_permissions(folder: "str | os.PathLike") -> None:
    """Give ``folder`` and everything in it the permissions a file written under the current umask gets (0755 /
    0644 under umask 022), as :func:`atomic_path` does for one file: mkdtemp makes a staging folder 0700 and libraries
    writing into it (safetensors, torch.save) may create private files."""
    mask = _umask()
    root = Path(folder)
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def write_bytes_atomic(path: "str | os.PathLike", data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def write_text_atomic(path: "str | os.PathLike", text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def json_default(value: Any) -> Any:
    """JSON for the values the project keeps in results: tensors, numpy scalars / arrays, paths, sets."""
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and scalars
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json_atomic(path: "str | os.PathLike", payload: Any, indent: int | None = 1) -> Path:
    """Write ``payload`` as JSON (NaN / inf allowed, as Python's json writes them) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=indent, default=json_default, allow_nan=True) + "\n")


def save_figure_atomic(figure: Any, path: "str | os.PathLike", **savefig_options: Any) -> Path:
    """``figure.savefig`` into ``path`` atomically (the format follows the target's suffix)."""
    path = Path(path)
    options = {"format": path.suffix.lstrip(".") or "png", **savefig_options}
    with atomic_path(path) as temporary:
        figure.savefig(temporary, **options)
    return path


def is_finite_number(value: Any) -> bool:
    """True for an int or float that is not NaN / inf (bools excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
