"""Tests for lir_robust.reporting (one formatter, one figure module) and lir_robust.core.naming (CPU, seconds)."""

import json
import math
from pathlib import Path

import pytest

from lir_robust.core.naming import head_folder_name
from lir_robust.reporting import format as fmt
from lir_robust.reporting.figures import plot_study_retained
from lir_robust.reporting.sweep_report import markdown_table, write_sweep_report

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "results" / "study" / "summary.json"


def test_formatter_forms():
    assert fmt.percent(0.4523) == "45.2 %" and fmt.percent(0.4523, 0.0031) == "45.2 ± 0.3 %"
    assert fmt.percent(0.4523, math.nan) == "45.2 %"  # a spread that is not a number is left out
    assert fmt.percent(None) == fmt.percent(math.nan) == fmt.percent("x") == fmt.percent(True) == "n/a"
    assert fmt.number(0.34712) == "0.347" and fmt.number(0.34712, 0.0041, digits=2) == "0.35 ± 0.00"
    assert fmt.percent_stats({"mean": 0.4523, "std": 0.0031, "n": 3}) == "45.2 ± 0.3 %"
    assert fmt.percent_stats({"mean": 0.4523, "std": 0.0031, "n": 1}) == "45.2 %"  # one seed: no spread
    assert fmt.percent_stats({"mean": 0.4523, "std": 0.0031}) == "45.2 %"  # no n: one value
    assert fmt.number_stats(None) == fmt.percent_stats({}) == "n/a"
    assert fmt.budget(32 / 3) == "10.7" and fmt.budget(16.0) == "16" and fmt.budget(100) == "100"
    assert fmt.budget(math.inf) == "never" and fmt.budget(math.inf, never="> 400") == "> 400" and fmt.budget(None) == "n/a"
    assert fmt.budget_stats({"mean": 32 / 3, "std": 1.0, "n": 3}) == "10.7"
    assert fmt.paired({"mean": 0.0789, "se": 0.008, "n": 90}) == "+0.0789 ± 0.0080"
    assert fmt.paired({"mean": 0.0789, "se": 0.008, "n": 0}) == fmt.paired(None) == "-"
    assert fmt.signed(-0.0337) == "-0.034" and fmt.signed(None) == "n/a"
    assert fmt.table_header(["a", "b"]) == ["| a | b |", "|---|---|"] and fmt.table_row([1, "x"]) == "| 1 | x |"


@pytest.mark.skipif(not SUMMARY.is_file(), reason="needs the committed results/study/summary.json")
def test_the_card_and_results_doc_print_the_study_alike(tmp_path):
    """The same summary.json row reads the same on the model card and in docs/RESULTS.md (a budget of 32/3 is 10.7 in
    both, never 10.6667 on the card)."""
    from lir_robust.hub.study_results import study_section
    from lir_robust.studies.results_doc import render_results

    summary = json.loads(SUMMARY.read_text())
    card = study_section(SUMMARY, head="softmax:tau=1.0")
    docs = render_results(summary, None, None)
    target = "-0.034 no | 45.2 % no | 94.5 % (65.4 %) ok | 100 (8) ok | 10.7 (1) ok | no |"
    assert f"| cranfield | {target}" in card
    assert f"| cranfield | softmax-tau1.0 | {target}" in docs
    assert "10.6667" not in card
    # a retrained row: nDCG@10 at K = 0 (± std over seeds), the paired difference, retained at K = 4, budgets
    assert "| trained with `softmax:tau=1.0` | 3 | 0.347 ± 0.004 | 94.5 ± 0.7 % |" in card
    assert "| 100 | 10.7 |" in card
    assert "| softmax:tau=1.0 | 3 | 0.347 ± 0.004 | -0.0337 ± 0.0071 | 94.5 ± 0.7 % | 45.2 ± 0.3 % |" in docs


def _sweep_results():
    kinds, ks, heads = ["gaussian", "hard"], [0, 4, 100], ["maxsim", "topk:k=4"]
    metrics = {}
    for h, head in enumerate(heads):
        metrics[head] = {}
        for kind in kinds:
            by_k = {str(k): {"mean": {"ndcg@10": 0.4}, "retained": {"ndcg@10": 1.0 - (h + 1) * k / 1000}} for k in ks}
            for k in ks[1:]:
                by_k[str(k)]["hijack_rate_top10"] = 0.25 * (h + 1)
            metrics[head][kind] = {"target": "non-gold" if kind == "hard" else "all", "by_k": by_k,
                                   "hijack_budget": {"median": math.inf if h else 4.0}}
    return {"ks": ks, "heads": heads, "config": {"kinds": kinds, "model": "minilm"}, "metrics": metrics,
            "data": {"name": "tiny", "documents": 30}, "evaluated_queries": 5, "embedding_dim": 16,
            "gradient_concentration_gold_pairs": {"maxsim": {"gini": 0.9}, "topk:k=4": {"gini": math.nan}}}


def test_sweep_table_and_report_files(tmp_path):
    results = _sweep_results()
    text = markdown_table(results, report_k=100)
    assert "targets: gaussian -> all, hard -> non-gold." in text
    assert "| maxsim | 0.400 | 90.0 % | 90.0 % | 0.25 | 0.25 | 4 | 4 | 0.900 |" in text
    assert "| topk:k=4 | 0.400 | 80.0 % | 80.0 % | 0.50 | 0.50 | > 100 | > 100 | n/a |" in text  # never: beyond the grid
    assert "| topk:k=4 | hard | 100.0 % | 99.2 % | 80.0 % |" in text
    assert "retained = nDCG@10 at K = 100 /" in markdown_table(results, report_k=50)  # K not measured: the largest
    write_sweep_report(results, tmp_path, report_k=100)
    assert (tmp_path / "table.md").read_text() == text
    assert (tmp_path / "retained_ndcg10.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_study_figure(tmp_path):
    curve = {str(k): {"mean": 1.0 - k / 200, "std": 0.01} for k in (0, 4, 100)}
    row = {"variant": "maxsim", "retained": {"hard": curve, "spike": curve, "other": curve}}
    assert plot_study_retained([], "none", tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    path = plot_study_retained([("maxsim", row), ("maxsim + injected negatives", {**row, "variant": "maxsim+defence"})],
                               "tiny, protocol swap", tmp_path / "study.png")
    assert path == tmp_path / "study.png" and path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("spec, name", [("maxsim", "maxsim"), ("topk:k=4", "topk-k4"), ("softmax:tau=0.1", "softmax-tau0.1"),
                                        ("exclusive:capacity=1,candidates=8", "exclusive-capacity1-candidates8")])
def test_head_folder_name_is_the_spelling_of_existing_run_folders(spec, name):
    from lir_robust.studies.retraining import variant_name
    from lir_robust.studies.synthetic import run_path

    assert head_folder_name(spec) == name
    assert variant_name(spec) == name  # the study's models/<collection>/<variant>/ and summary.json's variants
    assert run_path(Path("out"), spec, 0) == Path("out") / "runs" / f"{name}__seed0.json"
