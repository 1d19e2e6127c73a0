"""docs/RESULTS.md's "Directions tried" and "Text defence" parts (issue 20): the target table per collection and seed
comes from the committed files and follows them, a missing file leaves its rows out, the per-seed rows of a sweep keep
the recipe search's schema, and the checks are issue 20's bars."""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path

import pytest

from lir_robust.commands import cli
from lir_robust.commands import results_doc as results_doc_command
from lir_robust.core.errors import UserError
from lir_robust.studies.directions import checks, read_directions, sweep_seed_rows
from lir_robust.studies.results_doc import render_results

HEAD = "blend:tau=1.0,weight=0.5"
COHERENT = "coherent:inner=exclusive,beta=0.5"


def _stats(mean, n=3):
    return {"mean": mean, "std": 0.0, "n": n}


def _study():
    """Retrained maxsim (the reference: 0.40, spike 5 %, hard 60 %, budgets 1 / 8) and retrained exclusive."""
    def row(variant, head, clean, spike, hard, budgets):
        return {"collection": "tiny", "protocol": "retrained", "variant": variant, "head": head, "seeds": [0, 1, 2],
                "ndcg10": {"hard": {"0": _stats(clean)}}, "retained": {"spike": {"4": _stats(spike)}, "hard": {"4": _stats(hard)}},
                "budget_median": {"spike": _stats(budgets[0]), "hard": _stats(budgets[1])},
                "paired_vs_maxsim": {"hard|0": {"mean": clean - 0.40, "se": 0.002, "n": 90}}}

    return {"plan": {"model": "minilm", "collections": {"tiny": [0, 1, 2]}, "heads": ["maxsim", "exclusive"],
                     "defended_heads": ["exclusive"], "defence": ["spike:4", "hard:4"], "ks": [0, 4]},
            "rows": [row("maxsim", "maxsim", 0.40, 0.05, 0.60, (1, 8)), row("exclusive", "exclusive", 0.395, 0.45, 0.70, (8, 8)),
                     row("exclusive+defence", "exclusive", 0.385, 0.58, 0.72, (8, 8))]}


def _per_seed(seed, hard, spike=0.45, clean=0.41, negatives=("spike:4", "hard-corpus:4"), budgets=(8.0, 16.0)):
    return {"collection": "tiny", "seed": seed, "trained_with": HEAD, "scored_with": HEAD, "injected_negatives": list(negatives),
            "ndcg10_k0": clean, "retained_spike_k4": spike, "retained_hard_k4": hard,
            "budget_median_spike": budgets[0], "budget_median_hard": budgets[1],
            "paired_ndcg10_vs_maxsim_hard_k0": {"mean": 0.0045, "se": 0.0062, "n": 30}}


def _files(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.json" for name in ("corpus_hard", "coherence_screen", "text_defence")}
    paths["corpus_hard"].write_text(json.dumps({"plan": {"finetune_args": []}, "per_seed": [
        _per_seed(0, 0.80), _per_seed(1, 0.78), _per_seed(2, 0.76),
        {**_per_seed(0, 0.60), "trained_with": "maxsim", "scored_with": "maxsim"}]}))  # the reference re-run: no row
    paths["coherence_screen"].write_text(json.dumps({"rows": [
        {"run": "a", "data": "tiny", "queries": 30, "head": COHERENT, "ndcg10_k0": 0.391, "retained_spike_k4": 0.62,
         "retained_hard_k4": 0.90, "paired_ndcg10_k0_vs_maxsim": {"mean": -0.003, "se": 0.006}},
        {"run": "probe", "data": "tiny", "queries": 5, "head": COHERENT + ",m=2", "ndcg10_k0": 0.5,
         "retained_spike_k4": 0.9, "retained_hard_k4": 0.9}]}))  # fewer queries: a probe, left out
    paths["text_defence"].write_text(json.dumps({"models": {
        "baseline": {"finetune": {"pooling": "exclusive", "seed": 0, "adversarial_passages": None, "median_step_time_s": 3.1},
                     "clean_ndcg@10_all_queries": 0.378, "hotflip": {"success@10": 0.036, "success@100": 0.321, "held_out_queries": 112},
                     "cluster-text": {"success@10": 0.241}},
        "defended-hotflip": {"finetune": {"pooling": "exclusive", "seed": 0, "adversarial_passages": ["hotflip:10"],
                                          "median_step_time_s": 12.0},
                             "clean_ndcg@10_all_queries": 0.359, "hotflip": {"success@10": 0.0, "success@100": 0.179,
                                                                             "held_out_queries": 112},
                             "cluster-text": {"success@10": 0.277}}}}))
    return paths


def _render(paths):
    return render_results(_study(), None, None, directions=read_directions(paths))


def test_the_target_table_comes_from_the_files_and_changes_when_they_change(tmp_path):
    paths = _files(tmp_path)
    text = _render(paths)
    part = text[text.index("### Directions tried"):]
    assert "Reference, retrained maxsim (seeds 0, 1, 2): nDCG@10 0.400, spike K=4 5.0 %, hard K=4 60.0 %, budgets spike / hard 1 / 8." in part
    row = (f"| blend retrained + spike:4 hard-corpus:4 | `{HEAD}` | 0 | 0.410 (+0.010) | +0.0045 ± 0.0062 | 45.0 % | "
           "80.0 % (+20.0) | 8 / 16 | ok | no | ok | ok |")
    assert row in part
    assert "| exclusive retrained + spike:4 hard:4 (study) | `exclusive` | 0, 1, 2 (mean) | 0.385 (-0.015) | -0.0150 ± 0.0020 |" in part
    assert (f"| untrained, scored with coherent (screen) | `{COHERENT}` | - | 0.391 (-0.009) | -0.0030 ± 0.0060 | 62.0 % | "
            "90.0 % (+30.0) | not measured (K 0, 4) | ok | ok | ok | - |") in part
    assert "maxsim` | 0 |" not in part and ",m=2" not in part  # the maxsim re-run and the probe are not directions
    # what each gave: a check holds when it holds in every seed; the count and the best value otherwise
    assert (f"- tiny, blend retrained + spike:4 hard-corpus:4 (`{HEAD}`; seed 0, 1, 2): meets clean nDCG@10 within 0.01, "
            "hard K=4 >= +15 points, budgets >= 2x; misses spike K=4 >= 60 % (0 of 3 seeds; best 45.0 %).") in part
    assert "- tiny: the whole target (every check in every seed) is reached by no direction; most checks met in every seed (3 of 4)" in part
    assert "above two standard errors" not in part  # +0.0045 ± 0.0062: not a gain
    # the file changes, the table and the checks follow
    summary = json.loads(paths["corpus_hard"].read_text())
    summary["per_seed"][0].update(retained_hard_k4=0.70, retained_spike_k4=0.65)
    summary["per_seed"][1].update(retained_hard_k4=0.90, retained_spike_k4=0.70)
    summary["per_seed"][2].update(retained_hard_k4=0.90, retained_spike_k4=0.70,
                                  paired_ndcg10_vs_maxsim_hard_k0={"mean": 0.013, "se": 0.006, "n": 225})
    paths["corpus_hard"].write_text(json.dumps(summary))
    changed = _render(paths)
    assert row not in changed
    assert "| 0 | 0.410 (+0.010) | +0.0045 ± 0.0062 | 65.0 % | 70.0 % (+10.0) | 8 / 16 | ok | ok | no | ok |" in changed
    assert "misses hard K=4 >= +15 points (2 of 3 seeds; best +30.0 points); paired clean gain over maxsim above two standard errors in 1 of 3" in changed


def test_a_missing_file_leaves_its_rows_out_with_a_note(tmp_path, caplog):
    paths = _files(tmp_path)
    paths["coherence_screen"].unlink()
    with caplog.at_level(logging.INFO, logger="lir_robust.studies.directions"):
        text = _render(paths)
    assert "coherence_screen: no file at" in caplog.text
    assert "blend retrained + spike:4 hard-corpus:4" in text and "(screen)" not in text
    retrained = tmp_path / "retrained.json"  # a run not finished when the rows were written is named
    retrained.write_text(json.dumps({"plan": {}, "per_seed": [], "unfinished": ["sweep-tiny-s1"]}))
    assert "Not finished when coherence/retrained.json was written (no rows yet): sweep-tiny-s1." in _render(
        {**paths, "coherence_retrained": retrained})
    paths["text_defence"].unlink()
    assert "### Text defence" not in _render(paths)
    for path in paths.values():
        path.unlink(missing_ok=True)
    everything_missing = _render(paths)
    assert "exclusive retrained (study)" in everything_missing  # the study's rows stay
    assert "blend retrained" not in everything_missing
    # without the directions' files at all (directions=None) the part is left out: the document reads as before
    assert "Directions tried" not in render_results(_study(), None, None)


def test_the_checks_are_issue_20s_bars_against_retrained_maxsim():
    reference = {"ndcg10_k0": 0.40, "retained_spike_k4": 0.05, "retained_hard_k4": 0.50, "budget_spike": 1.0, "budget_hard": 8.0}
    row = {"ndcg10_k0": 0.3901, "retained_spike_k4": 0.60, "retained_hard_k4": 0.66, "budget_spike": 2.0, "budget_hard": 16.0}
    assert checks(row, reference) == {"clean": True, "spike": True, "hard": True, "budgets": True}
    assert checks({**row, "ndcg10_k0": 0.3899, "retained_spike_k4": 0.599, "retained_hard_k4": 0.64, "budget_hard": 15.0},
                  reference) == {"clean": False, "spike": False, "hard": False, "budgets": False}
    assert checks({**row, "budget_spike": None}, reference)["budgets"] is None  # not measured: neither met nor missed


def _sweep(heads, ks, ids=("1", "2", "3"), clean=(0.5, 0.2, 0.8), pooling=COHERENT):
    def by_k(values):
        return {str(k): {"mean": {"ndcg@10": sum(values) / len(values)}, "per_query": {"ndcg@10": list(values)},
                         "retained": {"ndcg@10": 1.0 if k == 0 else 0.5}} for k in ks}

    kinds = {kind: {"by_k": by_k(clean), "hijack_budget": {"median": 16.0}} for kind in ("spike", "hard")}
    return {"heads": list(heads), "ks": list(ks), "query_ids": list(ids), "encoder": {"pooling": pooling, "weights": "abc"},
            "metrics": {head: kinds for head in heads}}


def test_a_sweeps_rows_keep_the_recipe_search_schema_and_pair_against_maxsim():
    baseline = _sweep(["maxsim"], [0, 4], clean=(0.4, 0.3, 0.6), pooling="maxsim")
    rows = sweep_seed_rows(_sweep([COHERENT, "maxsim"], [0, 4]), "tiny", 0, [], baseline)
    committed = Path(__file__).resolve().parents[1] / "results" / "recipe-search" / "corpus-hard" / "summary.json"
    if committed.is_file():  # the schema of the committed per_seed rows
        assert set(rows[0]) == set(json.loads(committed.read_text())["per_seed"][0])
    first = rows[0]
    assert (first["trained_with"], first["scored_with"], first["weights"]) == (COHERENT, COHERENT, "abc")
    assert first["budget_median_spike"] is None and first["budget_median_hard"] is None  # K 0 and 4 only
    paired = first["paired_ndcg10_vs_maxsim_hard_k0"]  # ours minus maxsim's: 0.1, -0.1, 0.2
    assert paired["mean"] == pytest.approx(0.2 / 3) and paired["n"] == 3
    assert paired["se"] == pytest.approx(statistics.stdev([0.1, -0.1, 0.2]) / math.sqrt(3))
    assert first["retained_hard_k4"] == 0.5 and first["ndcg10_k0"] == pytest.approx(0.5)
    assert sweep_seed_rows(_sweep([COHERENT], [0, 4]), "tiny", 1, None)[0]["paired_ndcg10_vs_maxsim_hard_k0"] is None
    full = sweep_seed_rows(_sweep([COHERENT], [0, 1, 2, 4, 8, 16, 25, 50]), "tiny", 0, [])[0]
    assert full["budget_median_spike"] == 16.0  # the study's whole grid: a comparable budget
    with pytest.raises(UserError, match="different queries"):
        sweep_seed_rows(_sweep([COHERENT], [0, 4]), "tiny", 0, [], _sweep(["maxsim"], [0, 4], ids=("1", "2", "9")))


def test_the_text_defence_part_compares_each_defended_model_with_the_undefended_one(tmp_path):
    text = _render(_files(tmp_path))
    part = text[text.index("### Text defence"):]
    assert "| defended-hotflip | `exclusive` | hotflip:10 | 0 | n/a | n/a | 0.359 | 0.0 % | 17.9 % | 27.7 % | 112 | 12.0 |" in part
    assert ("- defended-hotflip: clean nDCG@10 0.378 -> 0.359 (-0.019, outside issue 20's 0.01); HotFlip success@10 "
            "3.6 % -> 0.0 %, success@100 32.1 % -> 17.9 %, cluster-text success@10 24.1 % -> 27.7 %.") in part
    assert "not checkable here: no maxsim-trained model was attacked" in part


def test_results_doc_takes_the_directions_files_from_its_options(tmp_path):
    paths = _files(tmp_path)
    corpus, coherence = tmp_path / "corpus-hard", tmp_path / "coherence"
    corpus.mkdir(), coherence.mkdir()
    paths["corpus_hard"].rename(corpus / "summary.json")
    paths["coherence_screen"].rename(coherence / "summary.json")
    probes = tmp_path / "probes"  # beside --recipe-search's file: one seed of a direction each, its own options
    probes.mkdir()
    (probes / "summary.json").write_text(json.dumps({"plan": {"finetune_args": []}, "per_seed": [
        {**_per_seed(0, 0.81, negatives=()), "injected_negatives": None, "finetune_args": ["--lora-r", "128"]},
        {**_per_seed(0, 0.70, negatives=()), "injected_negatives": None, "finetune_args": [],
         "trained_with": "softmax:tau=1.0"}]}))
    study = tmp_path / "study.json"
    study.write_text(json.dumps(_study()))
    out = tmp_path / "RESULTS.md"
    status = cli.run_command(results_doc_command.main, [
        "--study", str(study), "--synthetic", str(tmp_path / "none.json"), "--recipe-search", str(tmp_path / "search.json"),
        "--corpus-hard", str(corpus), "--coherence", str(coherence), "--text-defence", str(paths["text_defence"]),
        "--text-attacks", str(tmp_path / "none"), "--out", str(out)], prog="results_doc.py")
    text = out.read_text()
    assert status in (0, None)
    assert "## Recipe search (issue 20)" in text and "blend retrained + spike:4 hard-corpus:4" in text
    assert "(screen)" in text and "### Text defence" in text
    assert "| blend retrained (`--lora-r 128`) |" in text and "| softmax-trained, scored with blend |" in text


def _hotflip(success, length=32, iterations=20, positions=1, head="maxsim"):
    return {"head": head, "success@10": success, "success@100": 0.5, "held_out_queries": 112,
            "hotflip_settings": {"length": length, "iterations": iterations, "positions": positions}}


def test_the_text_target_is_checked_against_retrained_maxsim_under_the_same_hotflip_setting(tmp_path):
    paths = _files(tmp_path)
    trained = lambda pooling, passages=None: {"pooling": pooling, "seed": 0, "adversarial_passages": passages}  # noqa: E731
    paths["text_defence"].write_text(json.dumps({"models": {
        "strong/maxsim": {"collection": "strong", "finetune": trained("maxsim"), "clean_ndcg@10_all_queries": 0.380,
                          "hotflip": _hotflip(0.259, 128, 150, 16)},
        "strong/recipe": {"collection": "strong", "finetune": trained("softmax:tau=1.0"), "clean_ndcg@10_all_queries": 0.390,
                          "hotflip": _hotflip(0.134, 128, 150, 16, head="blend")},
        "strong/recipe-hotflip": {"collection": "strong", "finetune": trained("softmax:tau=1.0", ["hotflip:10"]),
                                  "clean_ndcg@10_all_queries": 0.385, "hotflip": _hotflip(0.06, 128, 150, 16, head="blend")},
        "strong/too-costly": {"collection": "strong", "finetune": trained("exclusive", ["hotflip:10"]),
                              "clean_ndcg@10_all_queries": 0.369, "hotflip": _hotflip(0.0, 128, 150, 16)},
        "strong/weak-attack": {"collection": "strong", "finetune": trained("exclusive"), "clean_ndcg@10_all_queries": 0.39,
                               "hotflip": _hotflip(0.0)},
        "other/recipe": {"collection": "other", "finetune": trained("softmax:tau=1.0"), "clean_ndcg@10_all_queries": 0.39,
                         "hotflip": _hotflip(0.0, 128, 150, 16)}}}))
    text = _render(paths)
    part = text[text.index("### Text defence"):]
    assert "| strong/recipe | `softmax:tau=1.0` | none | 0 | `blend` | L 128, 150 it., 16 pos. | 0.390 | 13.4 % |" in part
    line = next(line for line in part.splitlines() if line.startswith("- Issue 19's text target against strong/maxsim"))
    assert "(HotFlip L 128, 150 it., 16 pos.: success@10 25.9 %, so at most 6.5 %; clean 0.380, so at least 0.370)" in line
    assert "strong/recipe 13.4 % at clean +0.010: missed" in line  # a half, not a quarter
    assert "strong/recipe-hotflip 6.0 % at clean +0.005: met" in line
    assert "strong/too-costly 0.0 % at clean -0.011: missed" in line  # strong enough, but clean falls too far
    assert "weak-attack" not in line and "other/recipe" not in line  # another setting, another collection
    assert "- strong/recipe: clean nDCG@10 0.380 -> 0.390 (+0.010, within issue 20's 0.01); HotFlip success@10 25.9 % -> " \
           "13.4 %, success@100 50.0 % -> 50.0 %." in part  # no cluster-text run on either side: not "n/a -> n/a"


def test_each_defended_model_is_compared_with_the_undefended_one_of_its_collection(tmp_path):
    paths = _files(tmp_path)
    models = json.loads(paths["text_defence"].read_text())["models"]
    both = {f"{collection}/{name}": {**entry, "collection": collection} for collection in ("cranfield", "med")
            for name, entry in models.items()}
    both["med/baseline"]["clean_ndcg@10_all_queries"] = 0.8
    both["med/baseline"]["hotflip"] = {"success@10": 0.2, "success@100": 0.5, "held_out_queries": 15}
    paths["text_defence"].write_text(json.dumps({"models": both}))
    part = _render(paths)[_render(paths).index("### Text defence"):]
    assert "- cranfield/defended-hotflip: clean nDCG@10 0.378 -> 0.359 (-0.019, outside issue 20's 0.01); HotFlip success@10 3.6 %" in part
    assert "- med/defended-hotflip: clean nDCG@10 0.800 -> 0.359 (-0.441, outside issue 20's 0.01); HotFlip success@10 20.0 %" in part
