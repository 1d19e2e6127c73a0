"""The retraining study end to end on a tiny plan (tiny BERT, tiny BEIR collection), its resumption, its summary, and
docs/RESULTS.md generated from results files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_fixtures import save_dropout_bert, write_tiny_beir

from lir_robust.commands import cli
from lir_robust.commands import study as study_command
from lir_robust.studies.directions import read_directions
from lir_robust.studies.results_doc import render_results
from lir_robust.studies.text_attack_doc import read_text_attacks
from lir_robust.studies.retraining import StudyPlan, parts_of, plan_steps, run_study, summarize_study, variant_name

ROOT = Path(__file__).resolve().parents[1]

FINETUNE = ("--projection-dim 16 --projection-init svd --lora-r 4 --lora-alpha 8 --batch-size 4 --validation-pairs 0 "
            "--query-max-length 12 --train-document-max-length 24 --document-max-length 24 --save-every 1 --lr 5e-3 "
            "--pseudo-queries title --max-steps 2")


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    write_tiny_beir(root / "data" / "tiny", documents=14)
    bert = save_dropout_bert(root / "bert")
    argv = ["--model", str(bert), "--collections", "tiny:0", "--heads", "maxsim", "exclusive", "--defended-heads",
            "--kinds", "hard", "spike", "spike@2", "corpus", "--ks", "0", "1", "4", "--finetune-args", FINETUNE,
            "--data-root", str(root / "data"), "--out", str(root / "out"), "--quiet"]
    study_command.main(argv)
    return root, argv


@pytest.mark.slow
def test_the_study_trains_sweeps_and_summarises_every_variant(tiny_study):
    root, argv = tiny_study
    out = root / "out"
    exclusive = variant_name("exclusive")  # exclusive-capacity1-candidates8
    for variant in ("maxsim", exclusive):
        assert (out / "models" / "tiny" / variant / "seed0" / "summary.json").is_file()
        results = json.loads((out / "sweeps" / "tiny" / variant / "seed0" / "results.json").read_text())
        assert results["config"]["kinds"] == ["hard", "spike", "spike@2", "corpus"]
        assert not (out / "sweeps" / "tiny" / variant / "seed0" / "partial").exists()  # removed once written
    # the maxsim model is swept with every head (swap protocol); the others with their own head
    assert json.loads((out / "sweeps" / "tiny" / "maxsim" / "seed0" / "results.json").read_text())["heads"] == ["maxsim", "exclusive:capacity=1,candidates=8"]
    assert json.loads((out / "sweeps" / "tiny" / exclusive / "seed0" / "results.json").read_text())["heads"] == ["exclusive:capacity=1,candidates=8"]
    summary = json.loads((out / "summary.json").read_text())
    protocols = {(row["protocol"], row["variant"], row["head"]) for row in summary["rows"]}
    head = "exclusive:capacity=1,candidates=8"
    assert protocols == {("raw", "raw", "maxsim"), ("raw", "raw", head), ("retrained", "maxsim", "maxsim"),
                         ("retrained", exclusive, head), ("swap", "maxsim", "maxsim"), ("swap", "maxsim", head)}
    by_key = {(row["protocol"], row["head"]): row for row in summary["rows"]}
    retrained = by_key[("retrained", head)]
    sweep = json.loads((out / "sweeps" / "tiny" / exclusive / "seed0" / "results.json").read_text())
    # the summary holds the sweep's numbers, not others
    assert retrained["ndcg10"]["spike"]["4"]["mean"] == pytest.approx(sweep["metrics"][head]["spike"]["by_k"]["4"]["mean"]["ndcg@10"])
    assert retrained["gini_after"]["mean"] == pytest.approx(sweep["gradient_concentration_gold_pairs"][head]["gini"])
    raw = json.loads((out / "sweeps" / "tiny" / "raw" / "results.json").read_text())
    assert retrained["gini_before"] == pytest.approx(raw["gradient_concentration_gold_pairs"][head]["gini"])
    # paired differences against maxsim are per-query differences, checked by hand
    maxsim = json.loads((out / "sweeps" / "tiny" / "maxsim" / "seed0" / "results.json").read_text())
    mine = sweep["metrics"][head]["spike"]["by_k"]["4"]["per_query"]["ndcg@10"]
    theirs = maxsim["metrics"]["maxsim"]["spike"]["by_k"]["4"]["per_query"]["ndcg@10"]
    differences = [a - b for a, b in zip(mine, theirs)]
    assert retrained["paired_vs_maxsim"]["spike|4"]["mean"] == pytest.approx(sum(differences) / len(differences))
    (target,) = summary["targets"]
    assert target["variant"] == exclusive and set(target["checks"]) == {
        "clean_within_0.01", "spike_k4_retained_at_least_50pct", "hard_k4_15_points_above_maxsim",
        "budget_hard_at_least_twice_maxsim", "budget_spike_at_least_twice_maxsim"}
    assert target["reached"] == all(target["checks"].values())
    assert set(summary["timings"]["parts_s"]) == {"raw:tiny", "tiny:seed0"} and summary["timings"]["steps"] == 5
    assert sorted(p.name for p in (out / "timings").iterdir()) == ["raw_tiny.json", "tiny_seed0.json"]


@pytest.mark.slow
def test_a_rerun_skips_finished_steps_and_another_plan_stops(tiny_study, caplog):
    root, argv = tiny_study
    caplog.set_level("INFO")
    study_command.main(argv)
    assert caplog.text.count("done already") == 5
    other_plan = [*argv[:argv.index("--ks")], "--ks", "0", "2", *argv[argv.index("--ks") + 4:]]
    with pytest.raises(cli.UserError, match="another plan"):
        study_command.main(other_plan)
    summary = (root / "out" / "summary.json").read_text()  # written by the rerun above
    with pytest.raises(cli.UserError, match="another plan"):  # nor a summary of this study under another plan
        study_command.main([*other_plan, "--summarize-only"])
    assert (root / "out" / "summary.json").read_text() == summary


def test_parts_are_named_and_unknown_parts_refused(tmp_path):
    write_tiny_beir(tmp_path / "data" / "a", documents=4)
    write_tiny_beir(tmp_path / "data" / "b", documents=4)
    plan = StudyPlan(collections={"a": [0, 1], "b": [0]}, heads=["maxsim", "topk:k=4"], defended_heads=["maxsim"],
                     data_root=str(tmp_path / "data"))
    steps = plan_steps(plan, tmp_path / "out", show_progress=False)
    assert parts_of(steps) == ["raw:a", "raw:b", "a:seed0", "a:seed1", "b:seed0"]
    assert [step.name for step in steps if step.part == "a:seed1"] == [
        "fine-tune a/maxsim/seed1", "sweep a/maxsim/seed1", "fine-tune a/topk-k4/seed1", "sweep a/topk-k4/seed1",
        "fine-tune a/maxsim+defence/seed1", "sweep a/maxsim+defence/seed1"]
    assert variant_name("softmax:tau=0.1") == "softmax-tau0.1" and variant_name("exclusive", True) == "exclusive-capacity1-candidates8+defence"
    with pytest.raises(ValueError, match="unknown study part"):
        run_study(plan, tmp_path / "out", ["a:seed7"], show_progress=False)
    with pytest.raises(ValueError, match="keep maxsim"):
        StudyPlan(heads=["topk:k=4"])
    with pytest.raises(ValueError, match="defended heads"):
        StudyPlan(heads=["maxsim"], defended_heads=["topk:k=4"])


def _summary(**overrides):
    """A hand-made summary with two heads on one collection: enough to render every section."""
    def stats(mean, std=0.0, n=3):
        return {"mean": mean, "std": std, "n": n}

    def row(protocol, variant, head, clean, spike4, hard4, budget):
        curve = {k: stats(v) for k, v in (("0", 1.0), ("4", spike4), ("100", spike4 / 2))}
        hard = {k: stats(v) for k, v in (("0", 1.0), ("4", hard4), ("100", hard4 / 3))}
        flat = {k: stats(1.0) for k in ("0", "4", "100")}
        return {"collection": "tiny", "protocol": protocol, "variant": variant, "head": head, "seeds": [0, 1, 2],
                "ndcg10": {"spike": {"0": stats(clean)}, "hard": {"0": stats(clean)}},
                "retained": {"spike": curve, "hard": hard, "corpus": flat, "gaussian": flat},
                "hijack_rate_top10": {"spike": {"4": stats(0.5), "100": stats(0.9)}, "hard": {"4": stats(0.4), "100": stats(0.8)}},
                "budget_median": {"spike": stats(budget), "hard": stats(budget)},
                "gini_before": 0.9, "gini_after": stats(0.8),
                "paired_vs_maxsim": {"hard|0": {"mean": clean - 0.37, "se": 0.01, "n": 30}}}
    rows = [row("retrained", "maxsim", "maxsim", 0.37, 0.04, 0.6, 4), row("retrained", "exclusive", "exclusive", 0.365, 0.55, 0.8, 16),
            row("swap", "maxsim", "maxsim", 0.37, 0.04, 0.6, 4), row("swap", "maxsim", "exclusive", 0.36, 0.4, 0.7, 16)]
    return {"plan": {"model": "minilm", "collections": {"tiny": [0, 1, 2]}, "heads": ["maxsim", "exclusive"],
                     "defended_heads": [], "defence": ["spike:4"], "ks": [0, 4, 100]},
            "rows": rows,
            "targets": [{"collection": "tiny", "variant": "exclusive", "head": "exclusive", "clean_ndcg10_gap": -0.005,
                         "spike_k4_retained": 0.55, "hard_k4_retained": 0.8, "hard_k4_retained_maxsim": 0.6,
                         "budgets": {"hard": [16, 4], "spike": [16, 4]},
                         "checks": {"clean_within_0.01": True, "spike_k4_retained_at_least_50pct": True,
                                    "hard_k4_15_points_above_maxsim": True, "budget_hard_at_least_twice_maxsim": True,
                                    "budget_spike_at_least_twice_maxsim": True}, "reached": True}],
            "timings": {"parts_s": {"tiny:seed0": 120.0}, "total_s": 120.0, "finetune_s": 80.0, "sweep_s": 40.0}, **overrides}


def test_results_doc_states_findings_from_the_numbers_whatever_the_order_of_the_rows(tmp_path):
    summary = _summary()
    text = render_results(summary, None, tmp_path / "figures")
    reordered = _summary()
    reordered["rows"] = reordered["rows"][::-1]  # summary.json's row order is not the document's
    assert render_results(reordered, None, None) == render_results(summary, None, None)
    # the retrained exclusive row, by hand from _summary: nDCG@10 0.365, paired 0.365 - 0.37, hard / spike K=4 kept
    retrained = text[text.index("### tiny, protocol retrained"):text.index("### tiny, protocol swap")]
    assert "| maxsim | 3 | 0.370 ± 0.000 | +0.0000 ± 0.0100 | 60.0 ± 0.0 % | 4.0 ± 0.0 % |" in retrained
    assert "| exclusive | 3 | 0.365 ± 0.000 | -0.0050 ± 0.0100 | 80.0 ± 0.0 % | 55.0 ± 0.0 % |" in retrained
    assert retrained.index("| maxsim | 3 |") < retrained.index("| exclusive | 3 |")  # heads in the study's order
    assert "Target (issue 10, on every collection): reached by exclusive." in text
    assert "retraining with exclusive (instead of scoring the maxsim-trained model with it) raised its retained nDCG@10 under spike K = 4: 40.0 % -> 55.0 %" in text
    assert "| tiny | exclusive | -0.005 ok | 55.0 % ok |" in text
    assert "No `results/synthetic/results.json` yet" in text
    assert (tmp_path / "figures" / "study_tiny_retrained.png").stat().st_size > 1000
    failed = _summary()
    failed["targets"][0].update(reached=False)
    assert "reached by no head" in render_results(failed, None, None)


def test_the_recipe_search_section_uses_issue_20s_spike_bar_and_lists_every_seed():
    """The recipe search's section (issue 20) appears only with its summary; the target row marks spike K=4 against
    60 % (55 % fails it, though it passes the study's 50 %), and every measured (collection, seed, head) has a row."""
    target = {**_summary()["targets"][0], "head": "blend:tau=1.0,weight=0.5", "variant": "blend"}
    target["checks"] = {**{k: v for k, v in target["checks"].items() if k != "spike_k4_retained_at_least_50pct"},
                        "spike_k4_retained_at_least_60pct": False}
    search = {"plan": {"heads": ["maxsim", "blend:tau=1.0,weight=0.5"], "collections": {"tiny": [0]}, "ks": [0, 4, 50],
                       "reference": "results/study/summary.json"},
              "raw_screen": [{"head": "softmax:tau=0.3", "ndcg10_k0": 0.371, "retained_spike_k4": 0.12, "retained_hard_k4": 0.7}],
              "targets": [dict(target, reached=False)],
              "per_seed": [{"collection": "tiny", "seed": 0, "trained_with": "blend:tau=1.0,weight=0.5",
                            "scored_with": "blend:tau=1.0,weight=0.5", "ndcg10_k0": 0.36, "retained_spike_k4": 0.55,
                            "retained_hard_k4": 0.8, "budget_median_spike": 16, "budget_median_hard": float("inf")}]}
    assert "Recipe search" not in render_results(_summary(), None, None)
    text = render_results(_summary(), None, None, recipe_search=search)
    section = text[text.index("## Recipe search (issue 20)"):]
    assert "| tiny | blend:tau=1.0,weight=0.5 | -0.005 ok | 55.0 % no | 80.0 % (60.0 %) ok |" in section
    assert "| softmax:tau=0.3 | 0.371 | 12.0 % | 70.0 % |" in section
    assert "| tiny | 0 | blend:tau=1.0,weight=0.5 | blend:tau=1.0,weight=0.5 | 0.360 | 55.0 % | 80.0 % | 16 | never |" in section
    assert "not reached within K <= 50" in section
    assert "- Untrained screen: the largest spike K=4 share is softmax:tau=0.3's (12.0 %); no head reaches 60 % before training." in section
    assert "- tiny, blend:tau=1.0,weight=0.5 (retrained): misses issue 20's target on spike K=4 >= 60 %; meets 4 of 5 checks." in section


def test_the_committed_results_doc_is_generated_from_the_committed_results(tmp_path):
    """docs/RESULTS.md is never typed by hand: regenerating it from the committed results files gives the same text."""
    committed = ROOT / "docs" / "RESULTS.md"
    study, synthetic = ROOT / "results" / "study" / "summary.json", ROOT / "results" / "synthetic" / "results.json"
    if not committed.is_file() or not (study.is_file() or synthetic.is_file()):
        pytest.skip("no committed results yet")
    study_data = json.loads(study.read_text()) if study.is_file() else None
    synthetic_data = json.loads(synthetic.read_text()) if synthetic.is_file() else None
    search = ROOT / "results" / "recipe-search" / "summary.json"
    search_data = json.loads(search.read_text()) if search.is_file() else None
    text_attacks = read_text_attacks(ROOT / "results" / "text-attacks")
    recipe = ROOT / "results" / "recipe-search"
    directions = read_directions({"corpus_hard": recipe / "corpus-hard" / "summary.json",
                                  "corpus_hard_docs4": recipe / "corpus-hard" / "docs4-summary.json",
                                  "coherence_screen": recipe / "coherence" / "summary.json",
                                  "coherence_retrained": recipe / "coherence" / "retrained.json",
                                  "probes": recipe / "probes" / "summary.json",
                                  "text_defence": ROOT / "results" / "text-defence" / "summary.json"})  # = make results-doc
    attack_study = ROOT / "results" / "attack-study" / "summary.json"
    attack_study_data = json.loads(attack_study.read_text()) if attack_study.is_file() else None
    assert render_results(study_data, synthetic_data, tmp_path, recipe_search=search_data, text_attacks=text_attacks,
                          directions=directions, attack_study=attack_study_data) == committed.read_text(), (
        "docs/RESULTS.md differs from what `make results-doc` makes of the committed results: rerun it")
