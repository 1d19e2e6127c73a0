"""docs/RESULTS.md's "Text attacks" section, generated from text-attack results (issue 19): its rows, findings,
proxy and figure follow the results; the compact copies keep the numbers and drop texts, scores and local paths;
missing results leave the section out, a malformed file is one line."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest

from lir_robust.attacks.text.results import AttackResultsError, compact_results
from lir_robust.commands import cli
from lir_robust.commands import results_doc as results_doc_command
from lir_robust.studies.results_doc import render_results
from lir_robust.studies.text_attack_doc import add_text_attacks, read_text_attacks, text_attack_runs, text_attack_section

ROOT = Path(__file__).resolve().parents[1]


def _hotflip(success10: float = 0.25) -> dict:
    """A full results.json of a HotFlip run (N = 2, two heads), as run_text_attack writes it."""
    def entry(success, seconds):
        return {"passages": ["adversarial text one", "adversarial text two"], "scores": [[1.0, 2.0]] * 4,
                "metrics": {"success@1": 0.0, "success@10": success, "success@100": 0.75, "median_passage_rank": 12.0,
                            "ndcg@10_clean": 0.4, "ndcg@10_attacked": 0.38, "ndcg@10_retained": 0.95},
                "success@10_by_n": [success / 2, success],
                "hotflip": [{"text": "x", "seconds_per_iteration": seconds, "swaps": 3, "iterations": 5},
                            {"text": "y", "seconds_per_iteration": seconds + 1, "swaps": 1, "iterations": 5}]}
    return {"config": {"model": "minilm", "data": "/home/someone/data/tiny", "attack": "hotflip", "n": 2, "length": 8,
                       "heads": ["maxsim", "softmax:tau=1.0"], "iterations": 5, "init": "queries", "objective": "mean",
                       "position": "end", "seed": 0, "max_queries": None, "data_root": "/home/someone/data"},
            "heads": ["maxsim", "softmax:tau=1.0"],
            "data": {"name": "tiny", "source": "beir:/home/someone/data/tiny:test", "documents": 9},
            "encoder": {"base_model": "minilm", "weights": "base"},
            "split": {"seed": 0, "training_queries": 4, "held_out_queries": 4, "cluster_sizes": [2, 2]},
            "held_out_query_ids": ["q1", "q2", "q3", "q4"],
            "results": {"maxsim": entry(success10, 0.5), "softmax:tau=1.0": entry(0.75, 1.5)}}


def _insertion() -> dict:
    report = _hotflip()
    report["config"].update(attack="insertion", n=3, length=16, position="sentence")
    report["results"] = {"maxsim": {"snippets": ["s"], "edited_texts": ["doc with s"], "scores": [[1.0]] * 4,
                                    "metrics": {"hijack@10": 0.25, "edited_in_top10": 0.5, "ndcg@10_clean": 0.4,
                                                "ndcg@10_attacked": 0.3, "ndcg@10_retained": 0.75, "over_length": 0.0}}}
    return report


STUDY = {"rows": [{"collection": "tiny", "protocol": "raw", "variant": "raw", "head": "maxsim",
                   "retained": {"spike": {"4": {"mean": 0.05}}, "hard": {"4": {"mean": 0.625}}}}]}


def _folder(tmp_path: Path, reports: dict[str, dict]) -> Path:
    """``reports`` as `lir-robust attack` would leave them, each added to ``tmp_path/text-attacks``."""
    folder = tmp_path / "text-attacks"
    for name, report in reports.items():
        (tmp_path / "runs" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "runs" / name / "results.json").write_text(json.dumps(report))
        add_text_attacks(text_attack_runs(tmp_path / "runs" / name), folder)
    return folder


def test_the_section_is_generated_from_the_results_and_follows_them(tmp_path):
    runs = read_text_attacks(_folder(tmp_path, {"hotflip-n2": _hotflip(), "insertion-l16": _insertion()}))
    text = "\n".join(text_attack_section(runs, STUDY, tmp_path / "figures"))
    assert "### tiny, minilm (untrained)" in text
    assert ("| hotflip-n2 | hotflip | N = 2, L = 8, 5 iterations, init queries | maxsim | 4 | 0.400 | 0.0 % | 25.0 % | "
            "75.0 % | 95.0 % | 5.0 % | 62.5 % | 1.00 |") in text  # the proxy from the study's raw row; mean s / iteration
    assert "| softmax:tau=1.0 | 4 | 0.400 | 0.0 % | 75.0 % | 75.0 % | 95.0 % | n/a | n/a | 2.00 |" in text
    assert ("| insertion-l16 | insertion | N = 3 (2 clusters), L = 16, 5 iterations, init queries, at a sentence boundary | maxsim | 4 "
            "| 0.400 | 75.0 % | 25.0 % | 0.0 % | 5.0 % | 62.5 % |") in text
    assert "- insertion: the largest hijack@10 is 25.0 % (maxsim, run insertion-l16)." in text
    assert "- Few held-out queries (4): one query moves a success@k or hijack share by 25.0 points." in text
    assert (tmp_path / "figures" / "text_attacks_tiny-minilm-untrained.png").is_file()
    assert "](figures/text_attacks_tiny-minilm-untrained.png)" in text
    changed = read_text_attacks(_folder(tmp_path / "b", {"hotflip-n2": _hotflip(0.125), "insertion-l16": _insertion()}))
    other = "\n".join(text_attack_section(changed, STUDY))
    assert "| 0.0 % | 12.5 % | 75.0 % |" in other and "| 0.0 % | 25.0 % | 75.0 % |" not in other
    assert "figures/" not in other  # no figures folder, no figure


def test_the_findings_state_issue_19s_target_by_its_rule(tmp_path):
    """The target line: untrained maxsim with N = 10 passages, success@10 >= 50 %; a run of N = 2 does not count."""
    reports = {}
    for success, name in ((0.5, "reached"), (0.49, "missed")):
        report = _hotflip(success)
        report["config"]["n"] = 10
        reports[name] = report
    runs = dict(read_text_attacks(_folder(tmp_path, reports)))
    reached = "\n".join(text_attack_section([("a", runs["reached"])]))
    missed = "\n".join(text_attack_section([("a", runs["missed"])]))
    assert "Issue 19's target" in reached and ": reached; the best run is a (50.0 %)." in reached
    assert ": not reached; the best run is a (49.0 %)." in missed
    assert "the issue sets it on Cranfield, the same rule here on tiny" in missed  # the issue's target is Cranfield's
    assert "Issue 19's target" not in "\n".join(text_attack_section([("a", _hotflip(0.9))]))  # N = 2


def test_render_results_places_the_section_after_the_recipe_search_and_leaves_it_out_without_runs(tmp_path):
    runs = read_text_attacks(_folder(tmp_path, {"hotflip-n2": _hotflip()}))
    with_runs = render_results(None, None, None, text_attacks=runs)
    assert "## Text attacks (issue 19)" in with_runs
    assert with_runs.index("## Text attacks") < with_runs.index("## Synthetic study")
    assert "Text attacks" not in render_results(None, None, None)


def test_the_compact_copy_keeps_the_numbers_and_drops_texts_scores_and_local_paths(tmp_path):
    full = _hotflip()
    folder = _folder(tmp_path, {"run": full})
    written = (folder / "run" / "results.json").read_text()
    small = json.loads(written)
    assert "/home/someone" not in written and "adversarial text" not in written and '"scores"' not in written
    for head in full["results"]:
        assert small["results"][head]["metrics"] == full["results"][head]["metrics"]
        assert small["results"][head]["success@10_by_n"] == full["results"][head]["success@10_by_n"]
    assert small["results"]["maxsim"]["hotflip"]["mean_seconds_per_iteration"] == 1.0
    assert text_attack_section([("run", small)], STUDY) == text_attack_section([("run", full)], STUDY)
    assert compact_results(small) == compact_results(copy.deepcopy(small))  # compact twice = once


def test_missing_text_attacks_leave_the_section_out_with_a_logged_note(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lir_robust.studies.text_attack_doc"):
        assert read_text_attacks(tmp_path / "absent") == []
    assert "Text attacks section is left out" in caplog.text
    (tmp_path / "empty").mkdir()
    assert read_text_attacks(tmp_path / "empty") == []


@pytest.mark.parametrize("content, expected", [("{not json", "not JSON"),
                                               (json.dumps({"config": {"attack": "hotflip"}}), "no integer n and length"),
                                               (json.dumps({"metrics": {}, "heads": [], "ks": [], "config": {}}),
                                                "names no text attack")])
def test_a_malformed_text_attack_file_is_one_line_and_nothing_is_written(tmp_path, content, expected, capsys):
    bad = tmp_path / "text-attacks" / "broken" / "results.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(content)
    with pytest.raises(AttackResultsError, match=expected):
        read_text_attacks(tmp_path / "text-attacks")
    out = tmp_path / "docs" / "RESULTS.md"
    status = cli.run_command(results_doc_command.main, ["--study", str(ROOT / "results" / "study" / "summary.json"),
                                                        "--text-attacks", str(tmp_path / "text-attacks"), "--out", str(out)],
                             prog="results_doc.py")
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and f"--text-attacks {bad}: " in lines[0] and expected in lines[0], lines
    assert not (tmp_path / "docs").exists()


def test_a_folder_of_study_runs_is_added_run_by_run_with_each_models_proxy(tmp_path):
    """`make attack`'s runs/<collection>/<variant>/<run>: each run kept under its path; a retrained variant's rows
    get that variant's retrained proxy and its own heading, the untrained model's the raw one."""
    study = {"rows": [*STUDY["rows"], {"collection": "tiny", "protocol": "retrained", "variant": "maxsim", "head": "maxsim",
                                       "retained": {"spike": {"4": {"mean": 0.1}}, "hard": {"4": {"mean": 0.875}}}}]}
    trained = _hotflip()
    trained["encoder"]["weights"] = "abc123"
    for variant, report in (("raw", _hotflip()), ("maxsim", trained)):
        (tmp_path / "runs" / "tiny" / variant / "hotflip-n2").mkdir(parents=True)
        (tmp_path / "runs" / "tiny" / variant / "hotflip-n2" / "results.json").write_text(json.dumps(report))
    written = add_text_attacks(text_attack_runs(tmp_path / "runs"), tmp_path / "text-attacks")
    assert sorted(path.relative_to(tmp_path / "text-attacks").as_posix() for path in written) == [
        "tiny/maxsim/hotflip-n2/results.json", "tiny/raw/hotflip-n2/results.json"]
    text = "\n".join(text_attack_section(read_text_attacks(tmp_path / "text-attacks"), study))
    assert "### tiny, maxsim (weights abc123)" in text and "### tiny, minilm (untrained)" in text
    assert "| tiny/maxsim/hotflip-n2 | hotflip | N = 2, L = 8, 5 iterations, init queries | maxsim | 4 | 0.400 | 0.0 % | 25.0 % | 75.0 % | 95.0 % | 10.0 % | 87.5 % |" in text
    assert "| tiny/raw/hotflip-n2 | hotflip | N = 2, L = 8, 5 iterations, init queries | maxsim | 4 | 0.400 | 0.0 % | 25.0 % | 75.0 % | 95.0 % | 5.0 % | 62.5 % |" in text


def test_add_text_attack_checks_every_run_before_it_writes_one(tmp_path, capsys):
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "results.json").write_text(json.dumps(_hotflip()))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps({"config": {}}))
    folder = tmp_path / "text-attacks"
    status = cli.run_command(results_doc_command.main, ["--study", str(ROOT / "results" / "study" / "summary.json"),
                                                        "--add-text-attack", str(tmp_path / "good"), str(tmp_path / "bad"),
                                                        "--text-attacks", str(folder), "--out", str(tmp_path / "R.md")],
                             prog="results_doc.py")
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and f"--add-text-attack {tmp_path / 'bad' / 'results.json'}: " in lines[0], lines
    assert not folder.exists() and not (tmp_path / "R.md").exists()
