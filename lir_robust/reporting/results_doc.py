"""docs/RESULTS.md, generated from the committed results files (never typed by hand): ``make results-doc``.

Inputs: the retraining study's ``summary.json`` (:func:`lir_robust.studies.retraining.summarize_study`) and the synthetic study's
``results.json`` (:mod:`lir_robust.studies.synthetic`); either may be missing (its section then says how to make it).
Output: the Markdown text and the PNG figures beside it. The text depends on the inputs only (no dates, no
machine), so regenerating from the same files gives the same document; a test checks the committed one is current.

Every sentence that states a finding is computed from the numbers by a stated rule (see ``_findings``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

__all__ = ["render_results", "write_results_doc", "PAPER_REAL"]

# The paper's real-data numbers (PAPER.md): ColQwen2.5 on ViDoRe v2 biomedical, heads swapped at inference time.
PAPER_REAL = {
    "retained_hard_k100": {"maxsim": 0.278, "topk:k=4": 0.293, "softmax:tau=1.0": 0.676},
    "gini": {"maxsim": 0.983, "topk:k=4": 0.951, "softmax:tau=1.0": 0.883},
    "gaussian_retained": 0.97,
}
ATTACKS = ("hard", "spike")
GROWTH = ("corpus", "gaussian")


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(stats: dict[str, Any] | None, digits: int = 1) -> str:
    if not stats or _nan(stats.get("mean")):
        return "n/a"
    if stats.get("n", 1) > 1:
        return f"{100 * stats['mean']:.{digits}f} ± {100 * stats['std']:.{digits}f} %"
    return f"{100 * stats['mean']:.{digits}f} %"


def _num(stats: dict[str, Any] | None, digits: int = 3) -> str:
    if not stats or _nan(stats.get("mean")):
        return "n/a"
    if stats.get("n", 1) > 1:
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}"


def _budget(stats: dict[str, Any] | None) -> str:
    if not stats or _nan(stats.get("mean")):
        return "n/a"
    mean = stats["mean"]
    if math.isinf(mean):
        return "never"
    return f"{mean:g}" if float(mean).is_integer() else f"{mean:.1f}"  # a mean over seeds of medians: 10.7, not 10.6667


def _paired(stats: dict[str, Any] | None) -> str:
    if not stats or _nan(stats.get("mean")) or stats.get("n", 0) == 0:
        return "-"
    return f"{stats['mean']:+.4f} ± {stats['se']:.4f}"


def _rows(summary: dict[str, Any], collection: str, protocol: str) -> list[dict[str, Any]]:
    order = {head: index for index, head in enumerate(summary["plan"]["heads"])}
    rows = [row for row in summary["rows"] if row["collection"] == collection and row["protocol"] == protocol]
    return sorted(rows, key=lambda row: (row["variant"].endswith("+defence"), order.get(row["head"], 99), row["variant"]))


def _label(row: dict[str, Any]) -> str:
    return row["head"] + (" + injected negatives" if row["variant"].endswith("+defence") else "")


def _get(row: dict[str, Any], table: str, injection: str, k: int | None = None) -> dict[str, Any] | None:
    entry = row.get(table, {}).get(injection)
    if entry is None:
        return None
    return entry.get(str(k)) if k is not None else entry


def _table_clean_and_attacks(rows: list[dict[str, Any]], k: int) -> list[str]:
    lines = ["| head | seeds | nDCG@10 K=0 | vs maxsim (paired) | " + " | ".join(f"retained {a} K={k}" for a in ATTACKS)
             + " | " + " | ".join(f"vs maxsim {a} K={k}" for a in ATTACKS) + " | " + " | ".join(f"budget {a}" for a in ATTACKS) + " |",
             "|---" * (4 + 3 * len(ATTACKS)) + "|"]
    for row in rows:
        seeds = len([seed for seed in row["seeds"] if seed is not None]) or 1
        lines.append(
            f"| {_label(row)} | {seeds} | {_num(_get(row, 'ndcg10', 'hard', 0))} | {_paired(row['paired_vs_maxsim'].get('hard|0'))} | "
            + " | ".join(_pct(_get(row, "retained", a, k)) for a in ATTACKS) + " | "
            + " | ".join(_paired(row["paired_vs_maxsim"].get(f"{a}|{k}")) for a in ATTACKS) + " | "
            + " | ".join(_budget(_get(row, "budget_median", a)) for a in ATTACKS) + " |"
        )
    return lines


def _table_far(rows: list[dict[str, Any]], k: int) -> list[str]:
    lines = ["| head | " + " | ".join(f"retained {i} K={k}" for i in (*ATTACKS, *GROWTH)) + " | "
             + " | ".join(f"hijack {a} K={k}" for a in ATTACKS) + " | Gini before | Gini after |",
             "|---" * (1 + len(ATTACKS) + len(GROWTH) + len(ATTACKS) + 2) + "|"]
    for row in rows:
        before = row.get("gini_before")
        lines.append(
            f"| {_label(row)} | " + " | ".join(_pct(_get(row, "retained", i, k)) for i in (*ATTACKS, *GROWTH)) + " | "
            + " | ".join(_num(_get(row, "hijack_rate_top10", a, k), 2) for a in ATTACKS) + " | "
            + ("n/a" if _nan(before) else f"{before:.3f}") + f" | {_num(row.get('gini_after'))} |"
        )
    return lines


def _table_few_documents(rows: list[dict[str, Any]], injections: Sequence[str], ks: Sequence[int]) -> list[str]:
    columns = [(injection, k) for injection in injections for k in ks]
    lines = ["| head | " + " | ".join(f"{i} K={k}" for i, k in columns) + " |", "|---" * (1 + len(columns)) + "|"]
    for row in rows:
        lines.append(f"| {_label(row)} | " + " | ".join(_pct(_get(row, "retained", i, k)) for i, k in columns) + " |")
    return lines


def _figure(summary: dict[str, Any], collection: str, protocol: str, path: Path) -> Path | None:
    """Retained nDCG@10 vs K (mean over seeds, ± std band), one panel per injection, one line per head."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from lir_robust.core.files import save_figure_atomic

    rows = _rows(summary, collection, protocol)
    if not rows:
        return None
    injections = [i for i in ("spike", "hard", "spike@10", "hard@10", "corpus", "gaussian") if i in rows[0]["retained"]]
    figure, axes = plt.subplots(1, len(injections), figsize=(3.3 * len(injections), 3.2), sharey=True, squeeze=False)
    for axis, injection in zip(axes[0], injections):
        for row in rows:
            curve = row["retained"][injection]
            ks = sorted(int(k) for k in curve)
            means = [100 * curve[str(k)]["mean"] for k in ks]
            stds = [100 * curve[str(k)]["std"] for k in ks]
            style = "--" if row["variant"].endswith("+defence") else "-"
            line, = axis.plot(ks, means, style, marker="o", markersize=2.5, label=_label(row))
            axis.fill_between(ks, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                              alpha=0.12, color=line.get_color())
        axis.axhline(100, color="gray", linewidth=0.8, linestyle=":")
        axis.set_xscale("symlog", linthresh=1)
        axis.set_xlim(0, max(ks) * 1.3)
        axis.set_title(injection, fontsize=9)
        axis.set_xlabel("injected patches K")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("retained nDCG@10 (%)")
    axes[0][-1].legend(fontsize=6)
    figure.suptitle(f"{collection}, protocol {protocol}", fontsize=10)
    figure.tight_layout()
    save_figure_atomic(figure, path, dpi=110)
    plt.close(figure)
    return path


def _findings(summary: dict[str, Any]) -> list[str]:
    """Plain statements, each computed from the summary by the rule it states."""
    lines = []
    for collection in summary["plan"]["collections"]:
        swap = {row["head"]: row for row in _rows(summary, collection, "swap")}
        retrained = {row["variant"]: row for row in _rows(summary, collection, "retrained")}
        if swap:
            hard100 = {head: (_get(row, "retained", "hard", 100) or {}).get("mean", math.nan) for head, row in swap.items()}
            finite = {head: value for head, value in hard100.items() if not _nan(value)}
            if finite:
                best = max(finite, key=finite.get)
                paper_order = best == "softmax:tau=1.0"
                lines.append(
                    f"- {collection}, swap protocol (the paper's): under hard injection at K = 100 the head that keeps the "
                    f"largest share is {best} ({100 * finite[best]:.1f} %); the paper's is softmax:tau=1.0 (67.6 %, "
                    f"maxsim 27.8 %, top-4 29.3 %). Ordering {'reproduced' if paper_order else 'not reproduced'}; "
                    f"levels here: maxsim {100 * finite.get('maxsim', math.nan):.1f} %, top-4 "
                    f"{100 * finite.get('topk:k=4', math.nan):.1f} %, softmax:tau=1.0 {100 * finite.get('softmax:tau=1.0', math.nan):.1f} %."
                )
            gaussian = {head: (_get(row, "retained", "gaussian", 100) or {}).get("mean", math.nan) for head, row in swap.items()}
            low = [head for head, value in gaussian.items() if not _nan(value) and value < 0.9]
            lines.append(
                f"- {collection}: Gaussian length growth (K = 100 into every document) keeps at least 90 % of nDCG@10 for "
                + ("every head (paper: ~97 %): reproduced." if not low else f"every head but {', '.join(low)} (paper: ~97 %).")
            )
            gini = {head: row.get("gini_after", {}).get("mean", math.nan) for head, row in swap.items()}
            if all(not _nan(gini.get(head, math.nan)) for head in ("maxsim", "topk:k=4", "softmax:tau=1.0")):
                ordered = gini["maxsim"] > gini["topk:k=4"] > gini["softmax:tau=1.0"]
                lines.append(
                    f"- {collection}: gradient Gini on gold pairs, maxsim {gini['maxsim']:.3f} > top-4 {gini['topk:k=4']:.3f} "
                    f"> softmax(1.0) {gini['softmax:tau=1.0']:.3f}: ordering {'reproduced' if ordered else 'not reproduced'} "
                    "(paper, real data: 0.983 > 0.951 > 0.883)."
                )
        for variant, row in retrained.items():
            head = row["head"]
            if variant.endswith("+defence") or head not in swap:
                continue
            before = (_get(swap[head], "retained", "spike", 4) or {}).get("mean", math.nan)
            after = (_get(row, "retained", "spike", 4) or {}).get("mean", math.nan)
            clean_before = (_get(swap[head], "ndcg10", "spike", 0) or {}).get("mean", math.nan)
            clean_after = (_get(row, "ndcg10", "spike", 0) or {}).get("mean", math.nan)
            if _nan(before) or _nan(after):
                continue
            change = "raised" if after > before + 0.02 else "lowered" if after < before - 0.02 else "left (within 2 points)"
            lines.append(
                f"- {collection}: retraining with {head} (instead of scoring the maxsim-trained model with it) {change} its "
                f"retained nDCG@10 under spike K = 4: {100 * before:.1f} % -> {100 * after:.1f} %; nDCG@10 at K = 0 "
                f"{clean_before:.3f} -> {clean_after:.3f}."
            )
        for variant, row in retrained.items():
            if not variant.endswith("+defence"):
                continue
            plain = retrained.get(variant[: -len("+defence")])
            if plain is None:
                continue
            values = [((_get(r, "retained", "spike", 4) or {}).get("mean", math.nan),
                       (_get(r, "retained", "hard", 4) or {}).get("mean", math.nan)) for r in (plain, row)]
            lines.append(
                f"- {collection}: injected negatives in training ({row['head']}): retained under spike K = 4 "
                f"{100 * values[0][0]:.1f} % -> {100 * values[1][0]:.1f} %, under hard K = 4 {100 * values[0][1]:.1f} % -> "
                f"{100 * values[1][1]:.1f} %."
            )
    reached = [t for t in summary.get("targets", []) if t["reached"]]
    by_variant: dict[str, list[str]] = {}
    for target in reached:
        by_variant.setdefault(target["variant"], []).append(target["collection"])
    everywhere = [v for v, c in by_variant.items() if set(c) == set(summary["plan"]["collections"])]
    lines.append("- Target (issue 10, on every collection): " + (
        f"reached by {', '.join(everywhere)}." if everywhere else "reached by no head. Closest per collection below."))
    return lines


def render_results(study: dict[str, Any] | None, synthetic: dict[str, Any] | None, figures: Path | None = None,
                   figures_link: str = "figures") -> str:
    """The Markdown of docs/RESULTS.md; figures (PNG) are written into ``figures`` when given."""
    lines = ["# Results", "",
             "Generated by `make results-doc` from `results/study/summary.json` (the retraining study, `make study`) and "
             "`results/synthetic/results.json` (the synthetic study, `make synth`). Do not edit by hand: rerun the "
             "command. Numbers are mean ± std over seeds; paired differences are per-query nDCG@10 differences against "
             "maxsim of the same protocol, collection and seed, mean ± standard error.", ""]
    if study is None:
        lines += ["## Retraining study", "", "No `results/study/summary.json` yet: run `make study`.", ""]
    else:
        plan = study["plan"]
        lines += ["## Retraining study", "",
                  f"Model: {plan['model']} fine-tuned with each head (train/finetune.py defaults, the measured recipe); "
                  f"collections and seeds: {', '.join(f'{c} {s}' for c, s in plan['collections'].items())}; defended "
                  f"variants (injected negatives {' '.join(plan['defence'])} in training): {', '.join(plan['defended_heads']) or 'none'}; "
                  f"budgets K = {', '.join(map(str, plan['ks']))}. Protocols: *retrained* (each model with the head it was "
                  "trained with), *swap* (the maxsim-trained model with every head, the paper's protocol), *raw* (the "
                  "untrained model). Attacks (hard, spike) go into non-gold documents; few-document attacks KIND@N into N "
                  "non-gold documents per query, each with its own patches; length growth (corpus, gaussian) into every "
                  "document.", "", "### What the numbers say", ""]
        lines += _findings(study) + [""]
        lines += ["### Target check (against retrained maxsim)", "",
                  "| collection | variant | nDCG@10 gap | spike K=4 retained | hard K=4 retained (maxsim) | budget hard (maxsim) "
                  "| budget spike (maxsim) | reached |", "|---|---|---|---|---|---|---|---|"]
        for target in study.get("targets", []):
            budgets = target["budgets"]
            marks = target["checks"]
            lines.append(
                f"| {target['collection']} | {target['variant']} | {target['clean_ndcg10_gap']:+.3f} "
                f"{'ok' if marks['clean_within_0.01'] else 'no'} | {100 * target['spike_k4_retained']:.1f} % "
                f"{'ok' if marks['spike_k4_retained_at_least_50pct'] else 'no'} | {100 * target['hard_k4_retained']:.1f} % "
                f"({100 * target['hard_k4_retained_maxsim']:.1f} %) {'ok' if marks['hard_k4_15_points_above_maxsim'] else 'no'} | "
                f"{_budget({'mean': budgets['hard'][0]})} ({_budget({'mean': budgets['hard'][1]})}) "
                f"{'ok' if marks['budget_hard_at_least_twice_maxsim'] else 'no'} | {_budget({'mean': budgets['spike'][0]})} "
                f"({_budget({'mean': budgets['spike'][1]})}) {'ok' if marks['budget_spike_at_least_twice_maxsim'] else 'no'} | "
                f"{'**yes**' if target['reached'] else 'no'} |"
            )
        lines.append("")
        for collection in plan["collections"]:
            for protocol in ("retrained", "swap", "raw"):
                rows = _rows(study, collection, protocol)
                if not rows:
                    continue
                lines += [f"### {collection}, protocol {protocol}", ""]
                lines += _table_clean_and_attacks(rows, 4) + [""]
                lines += _table_far(rows, 100) + [""]
                few = [i for i in ("hard@10", "spike@10", "hard@50", "spike@50") if i in rows[0]["retained"]]
                if few:
                    lines += ["Few-document attacks (retained nDCG@10):", ""] + _table_few_documents(rows, few, (4, 16)) + [""]
                if figures is not None and protocol in ("retrained", "swap"):
                    name = f"study_{collection}_{protocol}.png"
                    if _figure(study, collection, protocol, figures / name) is not None:
                        lines += [f"![retained nDCG@10 vs K, {collection}, {protocol}]({figures_link}/{name})", ""]
        timings = study.get("timings") or {}
        if timings.get("parts_s"):
            lines += ["### Cost", "", "| part | minutes |", "|---|---|"]
            lines += [f"| {part} | {seconds / 60:.1f} |" for part, seconds in timings["parts_s"].items()]
            lines += [f"| total | {timings['total_s'] / 60:.1f} (fine-tuning {timings['finetune_s'] / 60:.1f}, sweeps "
                      f"{timings['sweep_s'] / 60:.1f}) |", ""]
        lines += ["### Beside the paper", "",
                  "Paper (ColQwen2.5 on ViDoRe v2 biomedical, heads swapped at inference, hard injection K = 100): retained "
                  "recall maxsim 27.8 %, top-4 29.3 %, softmax(1.0) 67.6 %; Gaussian control ~97 %; Gini maxsim 0.983, "
                  "top-5 0.951, softmax 0.883. Ours: the swap protocol above (MiniLM ColBERT, nDCG@10, our hard patches: "
                  "the corpus patches of non-gold documents nearest to each query token).", ""]
    if synthetic is None:
        lines += ["## Synthetic study", "", "No `results/synthetic/results.json` yet: run `make synth`.", ""]
    else:
        from lir_robust.studies.synthetic import render_table, write_figures

        lines += [render_table(synthetic, title="## Synthetic study (the paper's concept environment)").rstrip(), ""]
        if figures is not None:
            for path in write_figures(synthetic, figures):
                lines += [f"![{path.stem}]({figures_link}/{path.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_results_doc(study_path: Path | None, synthetic_path: Path | None, out: Path) -> Path:
    """Read the results files (absent ones are skipped), write ``out`` (Markdown) and its figures under
    ``out.parent / 'figures'``."""
    import json

    from lir_robust.core.files import write_text_atomic

    study = json.loads(Path(study_path).read_text()) if study_path and Path(study_path).is_file() else None
    synthetic = json.loads(Path(synthetic_path).read_text()) if synthetic_path and Path(synthetic_path).is_file() else None
    figures = Path(out).parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, render_results(study, synthetic, figures))
    return Path(out)
