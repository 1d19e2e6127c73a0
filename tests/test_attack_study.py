"""The text-attack study (lir_robust.studies.attack_study / attack_summary, `lir-robust attack-study`): its parts, its
refusals, resumption on tiny models, and the proxy correlation of its summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_fixtures import CONTENT_WORDS, save_dropout_bert, write_tiny_beir
from lir_robust.commands import attack_study as attack_study_command
from lir_robust.commands import cli
from lir_robust.encoders.text_colbert import TextColBERT
from lir_robust.scoring.pooling import parse_head
from lir_robust.studies.attack_study import (
    AttackPlan, AttackPlanError, check_plan, measured_like, most_robust_variant, parts_of, plan_steps, run_attacks,
)
from lir_robust.studies.attack_summary import (EarlierSummaryError, attack_rows, correlations, plot_proxy, render_table,
                                             spearman, summarize_attacks)
from lir_robust.studies.results_doc import render_results

EXCLUSIVE = "exclusive-capacity1-candidates8"


def _target(collection, variant, reached, checks, spike4, hard4=0.5):
    return {"collection": collection, "variant": variant, "reached": reached, "spike_k4_retained": spike4,
            "hard_k4_retained": hard4, "checks": {f"c{i}": i < checks for i in range(5)}}


def _study(folder: Path, model: str, collections, heads, defended=(), targets=(), rows=()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    plan = {"model": model, "collections": collections, "heads": list(heads), "defended_heads": list(defended)}
    (folder / "plan.json").write_text(json.dumps(plan))
    (folder / "summary.json").write_text(json.dumps({"plan": plan, "targets": list(targets), "rows": list(rows)}))
    return folder


def test_parts_are_named_per_collection_model_and_head(tmp_path):
    study = _study(tmp_path / "study", "minilm", {"a": [0, 1], "b": [1]}, ["maxsim", "exclusive"], ["maxsim"],
                   targets=[_target("a", EXCLUSIVE, False, 3, 0.4), _target("a", "maxsim+defence", False, 3, 0.6)])
    steps = plan_steps(AttackPlan(study=str(study)), tmp_path / "out", show_progress=False)
    head = "exclusive-capacity1-candidates8"
    assert parts_of(steps) == [  # b has no seed-0 models; N = 50 for raw maxsim and the most robust variant
        "a:raw", "a:raw:maxsim:hotflip", "a:raw:maxsim:insertion", "a:raw:maxsim:hotflip50",
        f"a:raw:{head}:hotflip", f"a:raw:{head}:insertion",
        "a:maxsim", "a:maxsim:hotflip", "a:maxsim:insertion",
        f"a:{EXCLUSIVE}", f"a:{EXCLUSIVE}:hotflip", f"a:{EXCLUSIVE}:insertion",
        "a:maxsim+defence", "a:maxsim+defence:hotflip", "a:maxsim+defence:insertion", "a:maxsim+defence:hotflip50"]
    assert [step.name for step in steps if step.part == "a:maxsim:hotflip"] == [
        "hotflip-n10-l32 a/maxsim", "insertion-l4 a/maxsim", "insertion-l16 a/maxsim"]
    assert [step.name for step in steps if step.part == "a:raw"] == [
        "cluster-text-n1 a/raw", "cluster-text-n10 a/raw", "stuffing-t8 a/raw", "stuffing-t32 a/raw",
        "query-text-n10 a/raw", "hotflip-n1-l32 a/raw"]
    named = plan_steps(AttackPlan(study=str(study), robust_variant=EXCLUSIVE), tmp_path / "out", show_progress=False)
    assert f"a:{EXCLUSIVE}:hotflip50" in parts_of(named) and "a:maxsim+defence:hotflip50" not in parts_of(named)
    with pytest.raises(AttackPlanError, match="unknown attack part"):
        run_attacks(AttackPlan(study=str(study)), tmp_path / "out", ["a:nope"], show_progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything is written
    with pytest.raises(AttackPlanError, match="not a variant of the study"):
        plan_steps(AttackPlan(study=str(study), robust_variant="median"), tmp_path / "out")
    with pytest.raises(AttackPlanError, match="no seed-0 models"):
        plan_steps(AttackPlan(study=str(study), collections=["b"]), tmp_path / "out")
    with pytest.raises(AttackPlanError, match="holds no retraining study"):
        plan_steps(AttackPlan(study=str(tmp_path)), tmp_path / "out")


def test_models_trained_elsewhere_are_attacked_under_the_same_plan(tmp_path):
    """--models: the study's summary (proxies, heads) from one folder, its models from another; where the models are
    read from is no setting, so a folder begun with the default resumes with --models (each run records its model)."""
    study = _study(tmp_path / "study", "minilm", {"a": [0]}, ["maxsim"])
    models = {step.part: step.model for step in plan_steps(AttackPlan(study=str(study), models=str(tmp_path / "runs" / "models")),
                                                            tmp_path / "out", show_progress=False)}
    assert models["a:maxsim:hotflip"] == str(tmp_path / "runs" / "models" / "a" / "maxsim" / "seed0")
    assert models["a:raw"] == "minilm"
    default = {step.part: step.model for step in plan_steps(AttackPlan(study=str(study)), tmp_path / "out", show_progress=False)}
    assert default["a:maxsim:hotflip"] == str(study / "models" / "a" / "maxsim" / "seed0")
    check_plan(AttackPlan(study=str(study)), tmp_path / "out")
    check_plan(AttackPlan(study=str(study), models=str(tmp_path / "runs" / "models")), tmp_path / "out")  # accepted
    assert "models" not in json.loads((tmp_path / "out" / "plan.json").read_text())
    with pytest.raises(AttackPlanError, match="differs in iterations"):
        check_plan(AttackPlan(study=str(study), models=str(tmp_path), iterations=5), tmp_path / "out")


def test_unmeasured_steps_are_estimated_from_the_same_run_measured_on_other_models(tmp_path):
    """--list-parts' estimate of a step not run yet: the median measured seconds of the same suite run with as many
    heads on the same collection, else on any collection; nothing alike measured: no estimate here (the cost model)."""
    study = _study(tmp_path / "study", "minilm", {"a": [0], "b": [0]}, ["maxsim", "topk:k=4", "softmax:tau=1.0"])
    steps = plan_steps(AttackPlan(study=str(study)), tmp_path / "out", show_progress=False)
    measured = {"hotflip-n10-l32 a/maxsim": 100.0, "hotflip-n10-l32 a/topk-k4": 300.0, "hotflip-n10-l32 a/raw/maxsim": 200.0,
                "insertion-l64 b/maxsim": 50.0, "cluster-text-n1 a/raw": 9.0}
    like = measured_like(steps, measured)
    assert like["hotflip-n10-l32 a/softmax-tau1.0"] == 200.0  # the median of a's three one-head runs
    assert like["hotflip-n10-l32 b/maxsim"] == 200.0  # none on b: the median over every collection
    assert like["insertion-l64 a/topk-k4"] == 50.0 and like["cluster-text-n1 b/raw"] == 9.0
    assert "cluster-text-n1 a/maxsim" not in like  # one head; only the three-head raw run has run: the cost model
    assert not set(like) & set(measured)


def test_the_most_robust_variant_is_the_target_first_then_checks_then_spike():
    summary = {"targets": [_target("a", "x", False, 4, 0.9), _target("a", "y", True, 5, 0.1), _target("b", "z", False, 1, 0.2)]}
    assert most_robust_variant(summary, "a") == "y"
    summary["targets"][1]["reached"] = False
    assert most_robust_variant(summary, "a") == "y"  # 5 checks passed beat 4
    summary["targets"][1]["checks"]["c4"] = False
    assert most_robust_variant(summary, "a") == "x"  # 4 checks each: spike K = 4 retained decides
    assert most_robust_variant(summary, "b") == "z" and most_robust_variant(summary, "c") is None


def test_the_command_refuses_in_one_line(tmp_path, capsys):
    study = _study(tmp_path / "study", "minilm", {"a": [0]}, ["maxsim"], targets=[_target("a", "maxsim", False, 1, 0.1)])
    write_tiny_beir(tmp_path / "data" / "a")
    common = ["--study", str(study), "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    for argv, expected in (
        ([*common, "--parts", "a:rawx"], "unknown part(s) a:rawx; parts: a:raw, a:raw:maxsim:hotflip"),
        ([*common, "--robust-variant", "topk"], "--robust-variant topk is not a variant of the study"),
        ([*common, "--list-parts", "--parts", "a:raw"], "--parts chooses what to run"),
        (["--study", str(tmp_path / "data"), "--out", str(tmp_path / "out")], "holds no retraining study"),
        ([*common, "--iterations", "0"], "argument --iterations: expected an integer >= 1, got '0'"),
        ([*common, "--collections", "b"], "collection(s) ['b'] have no seed-0 models"),
    ):
        assert cli.run_command(attack_study_command.main, argv, prog="attack_study.py") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("attack_study.py: error: ") and expected in err[0], (argv, err)
    assert not (tmp_path / "out").exists()


def _collection(folder: Path) -> Path:
    write_tiny_beir(folder, documents=16)
    queries = {f"q{i}": f"{CONTENT_WORDS[i]} {CONTENT_WORDS[i + 12]} {CONTENT_WORDS[(3 * i) % 40]} flow ?" for i in range(12)}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{i + 1}\t1\n" for i in range(12)))
    return folder


@pytest.fixture(scope="module")
def tiny_attack_study(tmp_path_factory):
    """A fake retraining study on a tiny collection: raw = a tiny BERT, two 'retrained' models (the same weights saved
    with the heads maxsim and softmax:tau=1.0 in pooling.json), a summary with proxies; the base parts run once."""
    root = tmp_path_factory.mktemp("attack-study")
    _collection(root / "data" / "tiny")
    bert = save_dropout_bert(root / "bert")
    for head, variant in (("maxsim", "maxsim"), ("softmax:tau=1.0", "softmax-tau1.0")):
        model = TextColBERT.from_base(str(bert))
        model.pooling = parse_head(head)
        model.save_pretrained(root / "study" / "models" / "tiny" / variant / "seed0" / "model")
    proxy = lambda protocol, variant, head, spike: {  # noqa: E731
        "collection": "tiny", "protocol": protocol, "variant": variant, "head": head, "seeds": [0],
        "retained": {"spike": {"4": {"mean": spike}}, "hard": {"4": {"mean": spike / 2}}}}
    _study(root / "study", str(bert), {"tiny": [0]}, ["maxsim", "softmax:tau=1.0"],
           targets=[_target("tiny", "softmax-tau1.0", False, 3, 0.7)],
           rows=[proxy("retrained", "maxsim", "maxsim", 0.1), proxy("retrained", "softmax-tau1.0", "softmax:tau=1.0", 0.7),
                 proxy("raw", "raw", "maxsim", 0.2)])
    argv = ["--study", str(root / "study"), "--data-root", str(root / "data"), "--out", str(root / "out"),
            "--iterations", "2", "--candidates", "4", "--quiet", "--parts", "tiny:raw", "tiny:softmax-tau1.0"]
    attack_study_command.main(argv)
    return root, argv


@pytest.mark.slow
def test_each_model_is_attacked_through_its_own_head_and_summarised(tiny_attack_study):
    root, argv = tiny_attack_study
    runs = root / "out" / "runs" / "tiny"
    own = json.loads((runs / "softmax-tau1.0" / "hotflip-n1-l32" / "results.json").read_text())
    assert own["heads"] == ["softmax:tau=1.0"] and own["config"]["iterations"] == 2  # the head of its pooling.json
    raw = json.loads((runs / "raw" / "stuffing-t8" / "results.json").read_text())
    assert raw["heads"] == ["maxsim", "softmax:tau=1.0"] and raw["config"]["length"] == 8
    assert sorted(path.name for path in (root / "out" / "timings").iterdir()) == ["tiny_raw.json", "tiny_softmax-tau1.0.json"]
    summary = json.loads((root / "out" / "summary.json").read_text())
    rows = {(row["model"], row["head"]): row for row in summary["rows"]}
    assert set(rows) == {("raw", "maxsim"), ("raw", "softmax:tau=1.0"), ("softmax-tau1.0", "softmax:tau=1.0")}
    row = rows[("softmax-tau1.0", "softmax:tau=1.0")]
    assert row["spike_k4_retained"] == 0.7 and row["hard_k4_retained"] == 0.35  # the study's row for this variant and head
    assert row["measures"]["hotflip N=1 success@10"] == own["results"]["softmax:tau=1.0"]["metrics"]["success@10"]
    assert row["measures"]["stuffing T=32 hijack@10"] == json.loads(
        (runs / "softmax-tau1.0" / "stuffing-t32" / "results.json").read_text())["results"]["softmax:tau=1.0"]["metrics"]["hijack@10"]
    assert rows[("raw", "softmax:tau=1.0")]["spike_k4_retained"] is None  # no such row in the study's summary
    assert "## tiny" in (root / "out" / "table.md").read_text()


@pytest.mark.slow
def test_a_rerun_skips_finished_runs_and_another_plan_stops(tiny_attack_study, caplog, monkeypatch):
    from lir_robust.studies import attack_study

    root, argv = tiny_attack_study
    caplog.set_level("INFO")
    ran = []
    monkeypatch.setattr(attack_study, "_run", lambda config, folder, show_progress: ran.append(folder.name))
    attack_study_command.main(argv)
    assert caplog.text.count("done already") == 12 and ran == []
    (root / "out" / "runs" / "tiny" / "raw" / "cluster-text-n10" / "results.json").unlink()
    attack_study_command.main(argv)
    assert ran == ["cluster-text-n10"]  # only the run whose results are gone
    other = [*argv[:argv.index("--iterations")], "--iterations", "3", *argv[argv.index("--iterations") + 2:]]
    with pytest.raises(cli.UserError, match="another plan"):
        attack_study_command.main(other)
    with pytest.raises(cli.UserError, match="another plan"):
        attack_study_command.main([arg for arg in other if arg not in ("--parts", "tiny:raw", "tiny:softmax-tau1.0")] + ["--summarize-only"])


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x: 1 2 3 4; y = (0.5, 0.1, 0.9, 0.3): ranks 3 1 4 2; d = -2 1 -1 2, sum d^2 = 10: 1 - 6 * 10 / (4 * 15) = 0
    assert spearman([0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.9, 0.3]) == pytest.approx(0.0)
    # ties share their mean rank: x ranks 1.5 1.5 3 4 5, y ranks 1 2 3 5 4 -> Pearson of the ranks
    rx, ry = [1.5, 1.5, 3, 4, 5], [1, 2, 3, 5, 4]
    mx, my = sum(rx) / 5, sum(ry) / 5
    expected = sum((a - mx) * (b - my) for a, b in zip(rx, ry)) / (
        sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    assert spearman([1, 1, 2, 3, 4], [0.1, 0.2, 0.3, 0.5, 0.4]) == pytest.approx(expected)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2, 3, None, float("nan")], [3, 2, 1, 5, 6]) == pytest.approx(-1.0)  # missing values left out


def test_correlations_over_variants_from_hand_made_rows():
    """Three retrained variants whose proxy ranks them exactly against their success@10 (rho = -1) and along their
    retained insertion nDCG (rho = +1); the raw heads are a group of their own (two: no value)."""
    def row(model, head, spike, hard, success, kept):
        return {"collection": "c", "model": model, "head": head, "spike_k4_retained": spike, "hard_k4_retained": hard,
                "measures": {"hotflip N=10 success@10": success, "insertion L=16 retained": kept}}

    rows = [row("maxsim", "maxsim", 0.1, 0.3, 0.8, 0.2), row("exclusive", "exclusive", 0.5, 0.2, 0.5, 0.6),
            row("softmax", "softmax:tau=1.0", 0.9, 0.1, 0.1, 0.9), row("raw", "maxsim", 0.2, 0.2, 0.7, 0.3),
            row("raw", "exclusive", 0.4, 0.2, 0.6, 0.5)]
    found = {(c["group"], c["proxy"], c["measure"]): c for c in correlations(rows)}
    assert found[("retrained", "spike_k4_retained", "hotflip N=10 success@10")]["spearman"] == pytest.approx(-1.0)
    assert found[("retrained", "spike_k4_retained", "insertion L=16 retained")]["spearman"] == pytest.approx(1.0)
    assert found[("retrained", "hard_k4_retained", "hotflip N=10 success@10")]["spearman"] == pytest.approx(1.0)
    assert found[("retrained", "spike_k4_retained", "hotflip N=10 success@10")]["points"] == 3
    assert found[("raw", "spike_k4_retained", "hotflip N=10 success@10")]["spearman"] is None  # two heads only


def test_rows_merge_every_run_of_a_model_and_head(tmp_path):
    """Runs of one model in several folders (one per head for the optimised kinds) become one row per head."""
    def results(folder, attack, n, length, heads):
        metrics = ({"success@1": 0.1, "success@10": 0.2, "success@100": 0.3} if attack == "hotflip"
                   else {"hijack@10": 0.4}) | {"ndcg@10_clean": 0.5, "ndcg@10_retained": 0.6}
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({
            "config": {"attack": attack, "n": n, "length": length}, "split": {"held_out_queries": 7},
            "results": {head: {"metrics": metrics} for head in heads}}))

    results(tmp_path / "c" / "raw" / "stuffing-t8", "stuffing", 10, 8, ["maxsim", "topk:k=4"])
    results(tmp_path / "c" / "raw" / "hotflip-n10-l32" / "maxsim", "hotflip", 10, 32, ["maxsim"])
    rows = {(row["model"], row["head"]): row for row in attack_rows(tmp_path, None)}
    assert set(rows) == {("raw", "maxsim"), ("raw", "topk:k=4")}
    assert rows[("raw", "maxsim")]["measures"] == {"stuffing T=8 retained": 0.6, "stuffing T=8 hijack@10": 0.4,
                                                   "hotflip N=10 success@1": 0.1, "hotflip N=10 success@10": 0.2,
                                                   "hotflip N=10 success@100": 0.3}
    assert rows[("raw", "topk:k=4")]["measures"] == {"stuffing T=8 retained": 0.6, "stuffing T=8 hijack@10": 0.4}


def _results(folder, attack, n, length, heads, success=0.2):
    metrics = ({"success@1": 0.1, "success@10": success, "success@100": 0.3} if attack == "hotflip"
               else {"hijack@10": 0.4}) | {"ndcg@10_clean": 0.5, "ndcg@10_retained": 0.6}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "config": {"attack": attack, "n": n, "length": length}, "split": {"held_out_queries": 7},
        "results": {head: {"metrics": metrics} for head in heads}}))


def test_an_earlier_summary_fills_in_only_what_the_runs_here_lack(tmp_path):
    """Runs whose folders are gone survive as an earlier summary: its measures fill the gaps, a run here wins, the
    filled cells and parts are marked, and the proxies come from this study's summary, not the earlier one's."""
    plan = {"study": "here", "iterations": 100, "candidates": 32, "max_queries": None, "seed": 0}
    out = tmp_path / "out"
    _results(out / "runs" / "c" / "raw" / "hotflip-n10-l32" / "maxsim", "hotflip", 10, 32, ["maxsim"], success=0.2)
    proxy = {"collection": "c", "protocol": "retrained", "variant": "topk-k4", "head": "topk:k=4", "seeds": [0, 1],
             "retained": {"spike": {"4": {"mean": 0.7}}, "hard": {"4": {"mean": 0.9}}}}
    study = _study(tmp_path / "study", "minilm", {"c": [0]}, ["maxsim"], rows=[proxy])
    old_row = lambda model, head, measures: {"collection": "c", "model": model, "head": head, "clean_ndcg10": 0.4,
                                             "held_out_queries": 7, "measures": measures, "spike_k4_retained": 0.01,
                                             "hard_k4_retained": 0.02, "hotflip_seconds_per_iteration": {"x": 0.5}}
    (out / "timings").mkdir()
    (out / "timings" / "c_raw_maxsim_hotflip.json").write_text(json.dumps(
        {"steps": {"hotflip-n10-l32 c/raw/maxsim": {"part": "c:raw:maxsim:hotflip", "seconds": 5.0}}}))
    (out / "earlier").mkdir()
    (out / "earlier" / "old-summary.json").write_text(json.dumps({
        "plan": {**plan, "study": "elsewhere"}, "timings": {"parts_s": {"c:topk-k4": 10.0, "c:raw:maxsim:hotflip": 99.0}},
        "rows": [old_row("raw", "maxsim", {"hotflip N=10 success@10": 0.9, "stuffing T=8 hijack@10": 0.05}),
                 old_row("topk-k4", "topk:k=4", {"hotflip N=10 success@10": 0.1})]}))
    summary = summarize_attacks(out, study, plan)
    rows = {(row["model"], row["head"]): row for row in summary["rows"]}
    raw = rows[("raw", "maxsim")]
    assert raw["measures"]["hotflip N=10 success@10"] == 0.2  # the run here, not the earlier 0.9
    assert raw["measures"]["stuffing T=8 hijack@10"] == 0.05
    assert list(raw["earlier_measures"].values()) == [["stuffing T=8 hijack@10"]]
    topk = rows[("topk-k4", "topk:k=4")]
    assert topk["measures"] == {"hotflip N=10 success@10": 0.1}
    assert (topk["spike_k4_retained"], topk["hard_k4_retained"]) == (0.7, 0.9)  # this study's proxy, not 0.01 / 0.02
    assert summary["timings"]["earlier_parts"] == ["c:topk-k4"]  # the part that ran here keeps its own seconds
    assert summary["timings"]["parts_s"] == {"c:raw:maxsim:hotflip": 5.0, "c:topk-k4": 10.0}
    table = render_table(summary)
    assert "10.0 %*" in table and "20.0 %*" not in table and "c:topk-k4 *" in table
    assert plot_proxy(summary, tmp_path / "proxy.png").stat().st_size > 0  # topk has both a proxy and HotFlip N = 10
    assert plot_proxy({"rows": [raw]}, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    with_figure = render_results(None, None, tmp_path / "figures", attack_study=summary)
    assert "(figures/attack_study_proxy.png)" in with_figure and (tmp_path / "figures" / "attack_study_proxy.png").is_file()
    section = render_results(None, None, None, attack_study=summary)  # docs/RESULTS.md nests the same table
    assert "## Text attacks on the retraining study's models\n\nGenerated from `results/attack-study/summary.json`" in section
    assert "2 parts have run" in section and "\n### c\n" in section and "\n### Time per part\n" in section
    assert table.split("## c\n", 1)[1].split("## Time")[0] in section


def test_an_earlier_summary_of_other_attack_settings_is_refused(tmp_path):
    out = tmp_path / "out"
    (out / "earlier").mkdir(parents=True)
    (out / "earlier" / "old-summary.json").write_text(json.dumps({"plan": {"iterations": 30, "candidates": 32, "seed": 0},
                                                                  "rows": []}))
    with pytest.raises(EarlierSummaryError, match="other settings .*iterations"):
        summarize_attacks(out, tmp_path, {"iterations": 100, "candidates": 32, "max_queries": None, "seed": 0})
    (out / "earlier" / "old-summary.json").write_text("{not json")
    with pytest.raises(EarlierSummaryError, match="cannot read"):
        summarize_attacks(out, tmp_path, {"iterations": 100})


@pytest.mark.slow
def test_a_model_cache_goes_once_all_its_runs_are_done(tiny_attack_study):
    root, argv = tiny_attack_study
    parts = ["tiny:softmax-tau1.0:hotflip", "tiny:softmax-tau1.0:insertion", "tiny:softmax-tau1.0:hotflip50"]
    attack_study_command.main([*argv[:argv.index("--parts")], "--parts", *parts])
    cache = root / "out" / "cache" / "tiny"
    assert not (cache / "softmax-tau1.0").exists() and (cache / "raw").is_dir()  # raw still has parts to run
    large = json.loads((root / "out" / "runs" / "tiny" / "softmax-tau1.0" / "hotflip-n50-l32" / "results.json").read_text())
    assert large["config"]["n"] == 50 and len(large["results"]["softmax:tau=1.0"]["passages"]) == 6  # 6 training queries


@pytest.mark.slow
def test_list_parts_reports_the_measured_seconds_of_parts_that_ran(tiny_attack_study, capsys):
    """Parts run in --out are listed with their measured seconds (timings/<part>.json), the others estimated."""
    root, argv = tiny_attack_study
    listing = [arg for arg in argv if arg not in ("--parts", "tiny:raw", "tiny:softmax-tau1.0", "--quiet")] + ["--list-parts"]
    capsys.readouterr()
    attack_study_command.main(listing)
    lines = {line.split(": ~")[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny:")}
    timings = json.loads((root / "out" / "timings" / "tiny_raw.json").read_text())["steps"]
    measured = sum(step["seconds"] for step in timings.values())
    assert "(measured)" in lines["tiny:raw"] and f"~{measured / 60:.0f} min" in lines["tiny:raw"]
    assert "(estimated)" in lines["tiny:maxsim"]  # never ran here
    assert "(measured)" in lines["tiny:softmax-tau1.0"]
    earlier = root / "out" / "earlier"
    earlier.mkdir(exist_ok=True)
    (earlier / "other-summary.json").write_text(json.dumps({"rows": [], "timings": {"parts_s": {"tiny:maxsim": 600.0}}}))
    try:  # a part another machine ran: its seconds, marked, and not counted as still to run
        attack_study_command.main(listing)
    finally:
        (earlier / "other-summary.json").unlink()
    lines = {line.split(": ~")[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny:")}
    assert lines["tiny:maxsim"].startswith("tiny:maxsim: ~10 min (measured earlier, earlier/other-summary.json)")
