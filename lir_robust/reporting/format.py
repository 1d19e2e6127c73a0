"""Numbers and table lines as every report prints them: docs/RESULTS.md, the sweep's and the synthetic study's
table.md and the model card. One place, so that one number reads the same everywhere (a budget is 10.7 in the docs
and on the card alike).

Statistics over seeds come as ``{"mean", "std", "n"}`` (``n`` absent: one value), paired differences as
``{"mean", "se", "n"}`` over queries. A missing, non-numeric or NaN value prints ``n/a`` (``-`` for a paired
difference); the spread is shown only when there are several values and it is a finite number.

    percent(0.4523, 0.0031)                                   # '45.2 ± 0.3 %'  (retained shares are fractions)
    percent_stats({"mean": 0.4523, "std": 0.0031, "n": 3})    # '45.2 ± 0.3 %'; with n = 1: '45.2 %'
    number_stats({"mean": 0.3471, "std": 0.004, "n": 3})      # '0.347 ± 0.004'
    budget(32 / 3)                                            # '10.7' (a mean over seeds of medians); 16.0 -> '16'; inf -> 'never'
    paired({"mean": 0.0789, "se": 0.008, "n": 90})            # '+0.0789 ± 0.0080'
    table_header(["head", "nDCG@10"]) + [table_row(["maxsim", "0.347"])]   # Markdown table lines
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

__all__ = ["real_value", "spread", "percent", "number", "budget", "percent_stats", "number_stats", "budget_stats",
           "paired", "signed", "table_header", "table_row", "target_cells", "injection_target"]

Stats = Mapping[str, Any]


def real_value(value: Any) -> float | None:
    """``value`` as a float when it is a real number that is not NaN (infinity kept), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def spread(stats: Stats | None) -> float | None:
    """The standard deviation of ``stats`` when it is over several values (``n`` > 1) and finite, else None."""
    if not stats or stats.get("n", 1) <= 1:
        return None
    std = real_value(stats.get("std"))
    return std if std is not None and math.isfinite(std) else None


def percent(mean: Any, std: Any = None, digits: int = 1) -> str:
    """A fraction as a percentage, ``45.2 %``, or ``45.2 ± 0.3 %`` when ``std`` is a finite number."""
    mean, std = real_value(mean), real_value(std)
    if mean is None:
        return "n/a"
    if std is not None and math.isfinite(std):
        return f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f} %"
    return f"{100 * mean:.{digits}f} %"


def number(mean: Any, std: Any = None, digits: int = 3) -> str:
    """A number, ``0.347``, or ``0.347 ± 0.004`` when ``std`` is a finite number."""
    mean, std = real_value(mean), real_value(std)
    if mean is None:
        return "n/a"
    if std is not None and math.isfinite(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def budget(value: Any, never: str = "never") -> str:
    """A hijack budget (K, or a mean over seeds of median K): whole numbers as they are (``16``), others to one
    decimal (``10.7``); infinity (not reached within the K measured) as ``never``."""
    value = real_value(value)
    if value is None:
        return "n/a"
    if math.isinf(value):
        return never
    return f"{value:g}" if value.is_integer() else f"{value:.1f}"


def percent_stats(stats: Stats | None, digits: int = 1) -> str:
    """:func:`percent` of ``{"mean", "std", "n"}``, the spread shown over several seeds only."""
    return percent((stats or {}).get("mean"), spread(stats), digits)


def number_stats(stats: Stats | None, digits: int = 3) -> str:
    """:func:`number` of ``{"mean", "std", "n"}``, the spread shown over several seeds only."""
    return number((stats or {}).get("mean"), spread(stats), digits)


def budget_stats(stats: Stats | None, never: str = "never") -> str:
    """:func:`budget` of ``{"mean", ...}``."""
    return budget((stats or {}).get("mean"), never)


def paired(stats: Stats | None) -> str:
    """A paired difference ``{"mean", "se", "n"}`` as ``+0.0789 ± 0.0080``; ``-`` when missing or over no query."""
    if not stats or real_value(stats.get("mean")) is None or not stats.get("n"):
        return "-"
    return f"{stats['mean']:+.4f} ± {stats['se']:.4f}"


def table_row(cells: Iterable[Any]) -> str:
    """One Markdown table row: ``| a | b |``."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table_header(columns: Iterable[Any]) -> list[str]:
    """The header row and the separator of a Markdown table."""
    columns = list(columns)
    return [table_row(columns), "|---" * len(columns) + "|"]


def signed(value: Any, digits: int = 3) -> str:
    """A difference with its sign, ``-0.034``."""
    value = real_value(value)
    return "n/a" if value is None else f"{value:+.{digits}f}"


def _check(target: Mapping[str, Any], name: str) -> str:
    value = (target.get("checks") or {}).get(name)
    return "" if value is None else " ok" if value else " no"


def target_cells(target: Mapping[str, Any]) -> list[str]:
    """The cells of one row of the retraining study's target check (a ``targets`` entry of its summary.json), as
    docs/RESULTS.md and the model card print it: nDCG@10 gap, spike K=4 retained, hard K=4 retained (maxsim), budget
    hard (maxsim), budget spike (maxsim), reached; each check marked ok / no."""
    budgets = target.get("budgets") or {}

    def budget_pair(kind: str) -> str:
        ours, maxsim = (list(budgets.get(kind) or []) + [None, None])[:2]
        return f"{budget(ours)} ({budget(maxsim)})"

    return [
        signed(target.get("clean_ndcg10_gap")) + _check(target, "clean_within_0.01"),
        percent(target.get("spike_k4_retained")) + _check(target, "spike_k4_retained_at_least_50pct"),
        f"{percent(target.get('hard_k4_retained'))} ({percent(target.get('hard_k4_retained_maxsim'))})"
        + _check(target, "hard_k4_15_points_above_maxsim"),
        budget_pair("hard") + _check(target, "budget_hard_at_least_twice_maxsim"),
        budget_pair("spike") + _check(target, "budget_spike_at_least_twice_maxsim"),
        "**yes**" if target.get("reached") else "no",
    ]


def injection_target(results: Mapping[str, Any], injection: str) -> str:
    """Where a sweep's injection put its patches (non-gold, all, attacked:N), as its results.json records it."""
    return results["metrics"][results["heads"][0]][injection].get("target", "?")
