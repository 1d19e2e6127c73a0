"""A sweep's report beside its results.json: ``table.md`` (:func:`markdown_table`) and ``retained_ndcg10.png``
(:func:`lir_robust.reporting.figures.plot_retained`); the model card shows the same table.

    write_sweep_report(results, "results/length-sweep", report_k=100)   # table.md + retained_ndcg10.png
    markdown_table(results, report_k=100)                                # the Markdown alone
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lir_robust.core.files import write_text_atomic
from lir_robust.reporting.figures import plot_retained
from lir_robust.reporting.format import budget, injection_target, number, percent, table_header, table_row

__all__ = ["markdown_table", "write_sweep_report", "TABLE_FILE", "FIGURE_FILE"]

TABLE_FILE = "table.md"
FIGURE_FILE = "retained_ndcg10.png"


def markdown_table(results: dict[str, Any], report_k: int) -> str:
    """nDCG@10 at K = 0, retained nDCG@10 at K = report_k per kind (the largest K when report_k was not measured),
    hijack rate / budget, gradient Gini per head; then the retained nDCG@10 at every K."""
    ks = results["ks"]
    k = report_k if report_k in ks else ks[-1]
    kinds = results["config"]["kinds"]
    lines = [
        f"Data: {results['data']['name']} ({results['evaluated_queries']} queries, {results['data']['documents']} documents); "
        f"model: {results['config']['model']} ({results['embedding_dim']}-d); retained = nDCG@10 at K = {k} / at K = 0 "
        "(not capped); targets: " + ", ".join(f"{kind} -> {injection_target(results, kind)}" for kind in kinds) + ".",
        "",
        *table_header(["head", "nDCG@10 K=0", *(f"retained {kind} K={k}" for kind in kinds),
                       *(f"hijack {kind} K={k}" for kind in kinds), *(f"budget {kind}" for kind in kinds), "gradient Gini"]),
    ]
    for head in results["heads"]:
        by_kind = results["metrics"][head]
        base = by_kind[kinds[0]]["by_k"]["0"]["mean"]["ndcg@10"]
        retained = [percent(by_kind[kind]["by_k"][str(k)]["retained"]["ndcg@10"]) for kind in kinds]
        hijack = [number(by_kind[kind]["by_k"][str(k)].get("hijack_rate_top10"), digits=2) for kind in kinds]
        budgets = [budget(by_kind[kind]["hijack_budget"]["median"], never=f"> {ks[-1]}") for kind in kinds]
        gini = results["gradient_concentration_gold_pairs"][head]["gini"]
        lines.append(table_row([head, number(base), *retained, *hijack, *budgets, number(gini)]))
    lines += ["", "Retained nDCG@10 at every K:", ""]
    lines += table_header(["head", "kind", *(f"K={value}" for value in ks)])
    for head in results["heads"]:
        for kind in kinds:
            by_k = results["metrics"][head][kind]["by_k"]
            lines.append(table_row([head, kind, *(percent(by_k[str(value)]["retained"]["ndcg@10"]) for value in ks)]))
    return "\n".join(lines) + "\n"


def write_sweep_report(results: dict[str, Any], out_dir: str | os.PathLike, report_k: int) -> None:
    """``table.md`` and ``retained_ndcg10.png`` of a sweep into ``out_dir``, each written atomically."""
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / TABLE_FILE, markdown_table(results, report_k))
    plot_retained(results, out_dir / FIGURE_FILE)
