"""The errors a user can fix, at the bottom of the package: every layer raises them, the command line turns each
into one line (the problem and the fix) with exit status 2 (``isinstance(error, UserError)`` is the whole test).

    UserError                                   a mistake the user can fix (an option, a path, a folder's state)
        HubError                                publishing or loading by Hub id cannot go on (not found, no token)
            HubUnreachableError                 a data set or model named by Hub id, and the Hub cannot be reached
        DataError (ValueError)                  a data set is missing or malformed
            DataNotFoundError                   neither a local folder nor a data set on the Hub
        ModelLoadError (RuntimeError)           a text model could not be loaded
        ColpaliIntegrationError (RuntimeError)  colpali-engine models: not found, gated, a missing file
            ColpaliVersionError                 colpali-engine missing or outside the supported range
            ModelNotFoundError                  neither a local folder nor a model on the Hub
        PylateIntegrationError (RuntimeError)   PyLate models and folders
            PylateVersionError                  pylate missing or outside the supported range
        MtebIntegrationError (RuntimeError)     MTEB models and tasks (an unknown task, a task's data offline)
            MtebVersionError                    mteb missing or outside the supported range

The builtin bases (ValueError, RuntimeError) are the ones each error had before it joined the family, so that
``except ValueError`` around a data load keeps catching it. :class:`HubUnreachableError` is a DataError too (a data
set's loader raised it first and ``except DataError`` clauses rely on it) and a RuntimeError (as the model loaders'
was).

:func:`one_line` is the one way to quote an error: ``"ErrorType: first line"`` with any secret scrubbed.
"""

from __future__ import annotations

__all__ = [
    "UserError",
    "HubError",
    "HubUnreachableError",
    "DataError",
    "DataNotFoundError",
    "ModelLoadError",
    "ColpaliIntegrationError",
    "ColpaliVersionError",
    "ModelNotFoundError",
    "PylateIntegrationError",
    "PylateVersionError",
    "MtebIntegrationError",
    "MtebVersionError",
    "one_line",
]


class UserError(Exception):
    """A mistake the user can fix (an option, a path, a folder's state); the message names the problem and the fix."""


class HubError(UserError):
    """Publishing or loading by Hub id cannot go on; the message names the problem and the fix (exit status 2)."""


class DataError(UserError, ValueError):
    """A data set is missing or malformed; the message names the file, line or ids at fault."""


class DataNotFoundError(DataError):
    """Neither a local folder nor (read as a Hub name) a data set on the Hub; the message names both readings."""


class HubUnreachableError(HubError, DataError, RuntimeError):
    """A data set or a model was named by its Hub id but the Hugging Face Hub cannot be reached (or HF_HUB_OFFLINE is
    set) and there is no local copy; the message says how to use one."""


class ModelLoadError(UserError, RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


class ColpaliIntegrationError(UserError, RuntimeError):
    """lir_robust.patches.colpali's errors; the message alone says what went wrong and what to do."""


class ColpaliVersionError(ColpaliIntegrationError):
    """colpali-engine is missing or outside the supported version range."""


class ModelNotFoundError(ColpaliIntegrationError):
    """Neither a local folder nor a model (or revision) on the Hub; the message names both readings."""


class PylateIntegrationError(UserError, RuntimeError):
    """lir_robust.patches.pylate's errors; the message alone says what went wrong and what to do."""


class PylateVersionError(PylateIntegrationError):
    """pylate is missing or outside the supported version range."""


class MtebIntegrationError(UserError, RuntimeError):
    """lir_robust.patches.mteb's errors; the message alone says what went wrong and what to do."""


class MtebVersionError(MtebIntegrationError):
    """mteb is missing or outside the supported version range."""


def one_line(error: BaseException, secret: str | None = None) -> str:
    """``"ErrorType: first line of its message"`` (200 characters at most), with ``secret`` replaced by ``***``."""
    message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text.replace(secret, "***") if secret else text
