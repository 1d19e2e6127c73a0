"""Every figure the project draws, in one style: headless (Agg), a mean line with markers, a shaded ± std band over
seeds, retained shares in percent against K on a symlog axis with 100 % marked, saved atomically
(:func:`lir_robust.core.files.save_figure_atomic`) and closed.

    plot_retained(results, "out/retained_ndcg10.png")         # a sweep's results.json: sweep folders, model cards
    plot_study_retained([(label, row), ...], "cranfield, protocol swap", path)   # docs/RESULTS.md, per protocol
    synthetic_figures(results, "results/synthetic")           # the synthetic concept study's four figures
    plot_success(report, "results/attack/hotflip-n10/success_at_10.png")  # a text attack's success@10 against N
    plot_success_panels([(title, {head: curve}), ...], "cranfield, minilm", path)  # docs/RESULTS.md, text attacks
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from lir_robust.core.files import save_figure_atomic
from lir_robust.reporting.format import injection_target

__all__ = ["pyplot", "save", "mean_band", "retained_panel", "plot_retained", "retained_figure", "plot_study_retained", "synthetic_figures",
           "plot_success", "plot_success_panels", "plot_scatter_panels", "STUDY_INJECTIONS"]

# The injections a study figure shows, in this order, when the rows hold them.
STUDY_INJECTIONS = ("spike", "hard", "spike@10", "hard@10", "corpus", "gaussian")


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: str | Path, **savefig_options: Any) -> Path:
    """Write ``figure`` to ``path`` atomically and close it."""
    try:
        save_figure_atomic(figure, path, **savefig_options)
    finally:
        pyplot().close(figure)
    return Path(path)


def mean_band(axis, xs: Sequence[float], means: Sequence[float], stds: Sequence[float] | None = None, *, label: str,
              style: str = "-", color=None, markersize: float = 3, alpha: float = 0.15):
    """A mean line with markers and, given ``stds``, a shaded mean ± std band in the line's colour; returns the colour."""
    line, = axis.plot(xs, means, style, marker="o", markersize=markersize, label=label, color=color)
    if stds is not None:
        axis.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                          alpha=alpha, color=line.get_color())
    return line.get_color()


def retained_panel(axis, max_k: float, title: str, *, reference_style: str = "--", title_size: float | None = None) -> None:
    """A panel of retained share (%) against injected patches K: 100 % marked, symlog K axis from 0, grid."""
    axis.axhline(100, color="gray", linewidth=0.8, linestyle=reference_style)
    axis.set_xscale("symlog", linthresh=1)
    axis.set_xlim(0, max_k * 1.3)  # symlog would otherwise show an empty negative range
    axis.set_xlabel("injected patches K")
    if title_size is None:
        axis.set_title(title)
    else:
        axis.set_title(title, fontsize=title_size)
    axis.grid(alpha=0.3)


def plot_retained(results: dict[str, Any], path: Path) -> None:
    """PNG of a sweep (its results.json): retained nDCG@10 vs K (symlog x axis, every measured K labelled), one
    panel per kind, one line per head; 100 % marked."""
    save(retained_figure(results), path, dpi=120)


def retained_figure(results: dict[str, Any]):
    """The figure :func:`plot_retained` saves (open; the caller saves or closes it)."""
    plt = pyplot()
    kinds = results["config"]["kinds"]
    ks = results["ks"]
    figure, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), sharey=True, squeeze=False)
    for axis, kind in zip(axes[0], kinds):
        for head in results["heads"]:
            by_k = results["metrics"][head][kind]["by_k"]
            mean_band(axis, ks, [100 * by_k[str(k)]["retained"]["ndcg@10"] for k in ks], label=head)
        retained_panel(axis, max(ks[-1], 1), f"{kind} ({injection_target(results, kind)})")
        axis.set_xticks([int(k) for k in ks], [str(k) for k in ks])  # every measured K, not symlog's 0 and 1 alone
        axis.minorticks_off()
        axis.tick_params(axis="x", labelsize=7)
    axes[0][0].set_ylabel("retained nDCG@10 (%)")
    axes[0][-1].legend(fontsize=7)
    figure.suptitle(f"{results['config']['model']} on {results['data']['name']}", fontsize=10)
    figure.tight_layout()
    return figure


def plot_study_retained(rows: Sequence[tuple[str, dict[str, Any]]], title: str, path: Path) -> Path | None:
    """PNG of the retraining study's rows of one collection and protocol (``[(label, row), ...]``, rows of
    summary.json): retained nDCG@10 vs K (mean over seeds, ± std band), one panel per injection, one line per row
    (dashed: trained with injected negatives). None (nothing written) without rows."""
    if not rows:
        return None
    plt = pyplot()
    injections = [i for i in STUDY_INJECTIONS if i in rows[0][1]["retained"]]
    figure, axes = plt.subplots(1, len(injections), figsize=(3.3 * len(injections), 3.2), sharey=True, squeeze=False)
    for axis, injection in zip(axes[0], injections):
        for label, row in rows:
            curve = row["retained"][injection]
            ks = sorted(int(k) for k in curve)
            means = [100 * curve[str(k)]["mean"] for k in ks]
            stds = [100 * curve[str(k)]["std"] for k in ks]
            style = "--" if row["variant"].endswith("+defence") else "-"
            mean_band(axis, ks, means, stds, label=label, style=style, markersize=2.5, alpha=0.12)
        retained_panel(axis, max(ks), injection, reference_style=":", title_size=9)
    axes[0][0].set_ylabel("retained nDCG@10 (%)")
    axes[0][-1].legend(fontsize=6)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save(figure, path, dpi=110)


def synthetic_figures(results: dict[str, Any], out: Path) -> list[Path]:
    """The synthetic concept study's four PNG figures (its results.json; mean line, shaded ± std band over seeds):
    gini_vs_epoch, recall1_vs_epoch, recall1_vs_length, retained_vs_injection. Returns their paths."""
    plt = pyplot()
    summary, heads, config = results["aggregate"], results["heads"], results["config"]
    written = []

    def band(axis, xs, stats, label, style="-", color=None):
        return mean_band(axis, xs, [s["mean"] for s in stats], [s["std"] for s in stats], label=label, style=style,
                         color=color)

    def save_as(figure, name):
        written.append(save(figure, Path(out) / name, dpi=120, bbox_inches="tight"))

    for metric, name, ylabel in (("gini", "gini_vs_epoch.png", "gradient Gini on gold pairs"),
                                 ("recall@1", "recall1_vs_epoch.png", "Recall@1")):
        figure, axis = plt.subplots(figsize=(6, 4))
        for head in heads:
            band(axis, summary[head]["epochs"], summary[head]["history"][metric], head)
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        axis.set_title(f"{ylabel} during training (M = {config['train_length']})")
        axis.legend(fontsize=8)
        save_as(figure, name)

    figure, axis = plt.subplots(figsize=(6, 4))
    for head in heads:
        sweep = summary[head]["length_sweep"]
        band(axis, [int(m) for m in sweep], [sweep[m]["recall@1"] for m in sweep], head)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("document length M (patches)")
    axis.set_ylabel("Recall@1")
    axis.set_title(f"Recall@1 vs document length (trained at M = {config['train_length']})")
    axis.legend(fontsize=8)
    save_as(figure, "recall1_vs_length.png")

    figure, axis = plt.subplots(figsize=(6, 4))
    styles = {"hard": "-", "spike": ":", "gaussian": "--"}
    for head in heads:
        color = None
        for kind, per_budget in summary[head]["injection"].items():
            color = band(axis, [int(k) for k in per_budget], [per_budget[k]["retained_recall@1"] for k in per_budget],
                         f"{head} ({kind})", styles.get(kind, "-."), color)
    axis.set_xscale("symlog", linthresh=25)
    axis.set_xlabel("injected patches K per non-gold document")
    axis.set_ylabel("retained Recall@1 (R@1 at K / R@1 at 0)")
    axis.set_title("Injection: hard (solid), spike (dotted), Gaussian control (dashed)")
    axis.legend(fontsize=6, ncol=2)
    save_as(figure, "retained_vs_injection.png")
    return written


def plot_success(report: dict[str, Any], path: str | Path) -> Path:
    """A text passage attack's ``results.json``: success@10 (%) against the number of adversarial passages used
    (the first n of the run's N, one per cluster), one line per head."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for head, entry in report["results"].items():
        curve = entry["success@10_by_n"]
        mean_band(axis, list(range(1, len(curve) + 1)), [100 * value for value in curve], label=head)
    config = report["config"]
    axis.set_xlabel(f"adversarial passages used (of N = {config['n']}, one per cluster)")
    axis.set_ylabel("success@10 (%), held-out queries")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.set_title(f"{config['attack']}, {report['data']['name']}, {config['model']}", fontsize=9)
    axis.legend(fontsize=7)
    return save(figure, path, dpi=120, bbox_inches="tight")


def plot_success_panels(panels: Sequence[tuple[str, dict[str, Sequence[float]]]], title: str, path: str | Path) -> Path | None:
    """PNG of several passage attacks side by side (``[(panel title, {head: success@10 with the first n passages,
    n = 1..N}), ...]``): success@10 (%) against the passages used, one panel per attack, one line per head (a head
    has one colour in every panel). None (nothing written) without panels."""
    if not panels:
        return None
    plt = pyplot()
    heads = list(dict.fromkeys(head for _, curves in panels for head in curves))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {head: cycle[index % len(cycle)] for index, head in enumerate(heads)}
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), sharey=True, squeeze=False)
    for axis, (panel_title, curves) in zip(axes[0], panels):
        for head, curve in curves.items():
            mean_band(axis, list(range(1, len(curve) + 1)), [100 * value for value in curve], label=head, color=colors[head])
        axis.set_xlabel("adversarial passages used (one per cluster)")
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3)
        axis.set_title(panel_title, fontsize=8)
        axis.legend(fontsize=6)
    axes[0][0].set_ylabel("success@10 (%), held-out queries")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save(figure, path, dpi=110)


def plot_scatter_panels(panels: Sequence[tuple[str, Sequence[tuple[str, str, float, float]]]], xlabel: str, ylabel: str,
                        title: str, path: str | Path, columns: int = 2) -> Path | None:
    """PNG of labelled points in panels, ``columns`` per row (``[(panel title, [(label, group, x, y), ...]), ...]``, x
    and y shares in [0, 1], drawn in %): one marker per group (the same in every panel), each point named. None
    (nothing written) without a point."""
    if not any(points for _, points in panels):
        return None
    plt = pyplot()
    groups = list(dict.fromkeys(group for _, points in panels for _, group, _, _ in points))
    markers = {group: "os^Dv"[index % 5] for index, group in enumerate(groups)}
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.2 * rows), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    for axis, (panel_title, points) in zip(axes.flat, panels):
        for group in groups:
            chosen = [(label, 100 * x, 100 * y) for label, member, x, y in points if member == group]
            if chosen:
                axis.scatter([x for _, x, _ in chosen], [y for _, _, y in chosen], marker=markers[group], label=group, s=28)
            for label, x, y in chosen:
                axis.annotate(label, (x, y), fontsize=5, xytext=(3, 2), textcoords="offset points")
        axis.set_xlim(0, 105)
        axis.set_ylim(-3, 103)
        axis.grid(alpha=0.3)
        axis.set_xlabel(xlabel, fontsize=8)
        axis.set_title(panel_title, fontsize=8)
        axis.legend(fontsize=6)
    for row in axes:
        row[0].set_ylabel(ylabel, fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save(figure, path, dpi=110)
