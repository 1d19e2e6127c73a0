"""The synthetic concept study (PAPER.md's environment, :mod:`lir_robust.studies.concepts`): train every pooling head
on several seeds, aggregate, plot, and compare with the paper. Its command: ``lir_robust.commands.synthetic``
(``make synth``); docs/RESULTS.md shows its table and figures.

``run_study(StudySettings(...))`` writes under ``out/``:

- ``runs/<head>__seed<k>.json``   one finished (head, seed) run; a rerun skips runs whose file exists with the same
                                  configuration (resumable), and reruns those whose configuration changed;
- ``results.json``                full configuration, heads, seeds, per-seed values, mean and std, library versions;
- ``gini_vs_epoch.png``, ``recall1_vs_epoch.png``, ``recall1_vs_length.png``, ``retained_vs_injection.png``;
- ``table.md``                    our numbers (mean +- std over seeds) beside the paper's.

Every file is written to a temporary name first and moved into place with ``os.replace``.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from lir_robust.core.naming import head_folder_name
from lir_robust.reporting.format import number as format_number, percent as format_percent
from lir_robust.reporting.figures import synthetic_figures
from lir_robust.scoring.pooling import parse_head
from lir_robust.studies.concepts import SyntheticConfig, train_and_evaluate

__all__ = ["StudySettings", "PRESETS", "preset", "run_study", "aggregate", "write_table", "write_figures", "PAPER"]

logger = logging.getLogger(__name__)

DEFAULT_HEADS = ("maxsim", "topk:k=4", "softmax:tau=1.0", "softmax:tau=0.1", "lse:tau=0.1")

# What PAPER.md states, keyed by our head specs. Synthetic numbers are read off the paper's text; the injection and
# hijack numbers are the paper's REAL-data ones (ColQwen2.5 on ViDoRe, no synthetic injection numbers are stated).
PAPER = {
    "gini": {"maxsim": "~0.78", "topk:k=4": "~0.45", "softmax:tau=1.0": "~0.18"},
    "recall@1": {"maxsim": "~0.33-0.38", "topk:k=4": "~0.33-0.38", "softmax:tau=1.0": "clearly lower"},
    "length": "every head degrades as M grows; maxsim falls fastest; top-4 beats maxsim at large M",
    "retained_at_100_real": {"maxsim": "27.8 %", "topk:k=4": "29.3 %", "softmax:tau=1.0": "67.6 %"},
    "gaussian_control_real": "~97 % retained, hijack < 0.15",
    "hijack_real": "~0.70 for maxsim and top-k",
}


@dataclass
class StudySettings:
    """What to run: the environment configuration, the heads and the seeds."""

    config: SyntheticConfig = field(default_factory=SyntheticConfig)
    heads: tuple[str, ...] = DEFAULT_HEADS
    seeds: tuple[int, ...] = (0, 1, 2)
    out: Path = Path("results/synthetic")
    progress: bool = True

    def __post_init__(self):
        self.heads = tuple(parse_head(head).spec() for head in self.heads)
        self.seeds = tuple(int(seed) for seed in self.seeds)
        self.out = Path(self.out)
        if not self.heads or not self.seeds:
            raise ValueError("a study needs at least one head and one seed")


PRESETS: dict[str, dict[str, Any]] = {
    # The full study (the paper's set-up plus our stated defaults); about 1 minute of one free CPU core per run.
    # Three seeds keep it under 30 minutes on a shared 2-core machine; add seeds with --seeds 0 1 2 3 4 (resumes).
    "full": {"config": {}, "seeds": (0, 1, 2)},
    # A smoke run: short training, a small pool, a reduced sweep; well under 2 minutes on 2 cores.
    "quick": {
        "config": {
            "epochs": 4, "eval_every": 2, "num_train_queries": 256, "num_eval_queries": 48, "hard_negatives": 2,
            "lengths": (32, 64, 128), "injection_budgets": (0, 25, 100),
        },
        "seeds": (0, 1),
    },
}


def preset(name: str, **config_overrides: Any) -> tuple[SyntheticConfig, tuple[int, ...]]:
    """The configuration and seeds of a named preset (``full`` or ``quick``), with config fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {sorted(PRESETS)}")
    values = {**PRESETS[name]["config"], **{k: v for k, v in config_overrides.items() if v is not None}}
    return SyntheticConfig(**values), tuple(PRESETS[name]["seeds"])


# ------------------------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    from lir_robust.core.files import write_bytes_atomic

    write_bytes_atomic(path, data)


def _atomic_write_json(path: Path, value: Any) -> None:
    _atomic_write_bytes(path, (json.dumps(value, indent=1, allow_nan=True) + "\n").encode())


def run_path(out: Path, head: str, seed: int) -> Path:
    """``out/runs/<head>__seed<k>.json`` with the head spec made file-name safe (``topk-k4``)."""
    return Path(out) / "runs" / f"{head_folder_name(head)}__seed{seed}.json"


def versions() -> dict[str, str]:
    """Versions of Python and the libraries the study depends on."""
    import matplotlib
    import numpy
    import torch

    import lir_robust

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "matplotlib": matplotlib.__version__, "lir_robust": lir_robust.__version__}


# ------------------------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------------------------


def run_study(settings: StudySettings) -> dict[str, Any]:
    """Run (or resume) every (head, seed), then write results.json, the figures and the table. Returns the results."""
    out = settings.out
    config_dict = settings.config.to_dict()
    started = time.perf_counter()
    jobs = [(head, seed) for seed in settings.seeds for head in settings.heads]  # seed-major: every head early
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for head, seed in jobs:
        path = run_path(out, head, seed)
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("config") == config_dict:
                runs[(head, seed)] = stored
                continue
            logger.warning("%s was made with another configuration; running it again", path)
        todo.append((head, seed))
    if len(todo) < len(jobs):
        logger.info("resuming: %d of %d runs already done", len(jobs) - len(todo), len(jobs))
    bar = tqdm(todo, desc="synthetic study", unit="run", disable=not settings.progress)
    for head, seed in bar:
        bar.set_postfix(head=head, seed=seed)
        run_started = time.perf_counter()
        result = train_and_evaluate(settings.config, head, seed, progress=settings.progress)
        result["config"] = config_dict
        result["seconds"] = time.perf_counter() - run_started
        _atomic_write_json(run_path(out, head, seed), result)
        runs[(head, seed)] = result
    bar.close()

    results = {
        "config": config_dict,
        "heads": list(settings.heads),
        "seeds": list(settings.seeds),
        "versions": versions(),
        "seconds_this_invocation": time.perf_counter() - started,
        "run_seconds": {f"{head}|{seed}": runs[(head, seed)].get("seconds") for head, seed in jobs},
        "aggregate": aggregate(settings, runs),
        "per_seed": {head: {str(seed): runs[(head, seed)] for seed in settings.seeds} for head in settings.heads},
        "paper": PAPER,
    }
    _atomic_write_json(out / "results.json", results)
    write_figures(results, out)
    write_table(results, out)
    return results


# ------------------------------------------------------------------------------------------------------------------
# aggregation
# ------------------------------------------------------------------------------------------------------------------


def _stats(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    mean = statistics.fmean(finite) if finite else math.nan
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0 if finite else math.nan
    return {"mean": mean, "std": std, "values": values}


def aggregate(settings: StudySettings, runs: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std over seeds of every reported number, per head.

    ``{head: {"history": {metric: [stats per evaluated epoch]}, "epochs": [...], "final": {metric: stats},
    "length_sweep": {M: {metric: stats}}, "injection": {kind: {K: {metric: stats}}}}}`` where stats is
    ``{"mean", "std", "values"}`` (values in seed order).
    """
    summary: dict[str, Any] = {}
    for head in settings.heads:
        per_seed = [runs[(head, seed)] for seed in settings.seeds]
        first = per_seed[0]
        metrics = [key for key in first["history"] if key != "epoch"]
        history = {
            metric: [_stats([run["history"][metric][i] for run in per_seed]) for i in range(len(first["history"]["epoch"]))]
            for metric in metrics
        }
        final = {metric: history[metric][-1] for metric in metrics}
        length_sweep = {
            length: {metric: _stats([run["length_sweep"][length][metric] for run in per_seed]) for metric in values}
            for length, values in first["length_sweep"].items()
        }
        injection = {
            kind: {
                budget: {metric: _stats([run["injection"][kind][budget][metric] for run in per_seed]) for metric in values}
                for budget, values in per_budget.items()
            }
            for kind, per_budget in first["injection"].items()
        }
        summary[head] = {"epochs": first["history"]["epoch"], "history": history, "final": final,
                         "length_sweep": length_sweep, "injection": injection}
    return summary


# ------------------------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------------------------


def _fmt(stats: dict[str, Any], percent: bool = False) -> str:
    """Mean ± sample std over seeds (the std shown whatever the number of seeds)."""
    return (format_percent if percent else format_number)(stats["mean"], stats["std"])


def write_table(results: dict[str, Any], out: Path) -> str:
    """``table.md`` (:func:`render_table`); returns its text."""
    text = render_table(results)
    _atomic_write_bytes(Path(out) / "table.md", text.encode())
    return text


def render_table(results: dict[str, Any], title: str = "# Synthetic study: ours vs the paper") -> str:
    """Markdown: per head, our final Gini / Recall@1 / length sweep / retained share beside the paper's numbers."""
    config = results["config"]
    summary = results["aggregate"]
    heads = results["heads"]
    seeds = results["seeds"]
    lines = [
        title,
        "",
        f"Mean ± sample std over {len(seeds)} seeds ({', '.join(map(str, seeds))}); after {config['epochs']} epochs; "
        f"training and per-epoch evaluation at M = {config['train_length']}; pool = {config['num_eval_queries']} "
        f"evaluation queries' gold documents + {config['hard_negatives']} hard negatives each.",
        "",
        "## Gradient concentration and retrieval after training (M = %d)" % config["train_length"],
        "",
        "| head | Gini (pair) | Gini paper | Gini (batch loss) | top-1 share | eff. patches | Recall@1 | Recall@1 paper | Recall@5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for head in heads:
        final = summary[head]["final"]
        lines.append(
            f"| {head} | {_fmt(final['gini'])} | {PAPER['gini'].get(head, '-')} | {_fmt(final['gini_batch'])} | "
            f"{_fmt(final['top1_share'])} | {format_number(final['effective_patches']['mean'], digits=1)} | {_fmt(final['recall@1'])} | "
            f"{PAPER['recall@1'].get(head, '-')} | {_fmt(final['recall@5'])} |"
        )
    lengths = list(summary[heads[0]]["length_sweep"])
    lines += ["", "## Recall@1 per document length M (trained at M = %d)" % config["train_length"], "",
              f"Paper: {PAPER['length']}.", "",
              "| head | " + " | ".join(f"M = {m}" for m in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for head in heads:
        sweep = summary[head]["length_sweep"]
        lines.append(f"| {head} | " + " | ".join(_fmt(sweep[m]["recall@1"]) for m in lengths) + " |")
    lines += ["", "Gini (pair) per M:", "", "| head | " + " | ".join(f"M = {m}" for m in lengths) + " |",
              "|---|" + "---|" * len(lengths)]
    for head in heads:
        sweep = summary[head]["length_sweep"]
        lines.append(f"| {head} | " + " | ".join(_fmt(sweep[m]["gini"]) for m in lengths) + " |")

    injection_length = config["injection_length"] or config["train_length"]
    for kind in summary[heads[0]]["injection"]:
        budgets = list(summary[heads[0]]["injection"][kind])
        title = {"hard": "token-targeted hard patches", "spike": "spike patches (averages of query concepts)",
                 "gaussian": "Gaussian control (random directions)"}.get(kind, kind)
        lines += ["", f"## Retained Recall@1 (R@1 at K / R@1 at K = 0), {title}, injected into non-gold documents "
                      f"of length M = {injection_length}", ""]
        if kind == "hard":
            lines += ["Paper (REAL data, ColQwen2.5 on ViDoRe, K = 100): maxsim 27.8 %, top-4 29.3 %, softmax 67.6 %; "
                      "hijack ~0.70 for maxsim and top-k.", ""]
        if kind == "gaussian":
            lines += [f"Paper (REAL data): {PAPER['gaussian_control_real']}.", ""]
        lines += ["| head | " + " | ".join(f"K = {k}" for k in budgets) + " | hijack at K = %s |" % budgets[min(3, len(budgets) - 1)],
                  "|---|" + "---|" * (len(budgets) + 1)]
        for head in heads:
            per_budget = summary[head]["injection"][kind]
            hijack_budget = budgets[min(3, len(budgets) - 1)]
            lines.append(f"| {head} | " + " | ".join(_fmt(per_budget[k]["retained_recall@1"], percent=True) for k in budgets)
                         + f" | {_fmt(per_budget[hijack_budget]['hijack_rate'])} |")
    return "\n".join(lines) + "\n"


def write_figures(results: dict[str, Any], out: Path) -> list[Path]:
    """The four PNG figures (mean line, shaded ± std band over seeds): :func:`lir_robust.reporting.figures.synthetic_figures`."""
    return synthetic_figures(results, out)
