"""The real-run timing guard (lir_robust.studies.run_timing): whole fine-tunes interleaved, cores used, the verdict."""

from __future__ import annotations

import json

import pytest

from finetune_fixtures import save_dropout_bert, write_tiny_beir
from lir_robust.core.errors import UserError
from lir_robust.studies import run_timing


def _record(round_index, head, step, cores):
    return {"round": round_index, "head": head, "median_step_s": step, "wall_s": 10.0, "cpu_s": 10.0 * cores,
            "cores_used": cores, "steps_timed": 5}


def test_ratios_are_taken_round_by_round_and_a_serialised_head_is_flagged():
    records = [
        _record(0, "maxsim", 1.0, 1.6), _record(0, "exclusive", 3.0, 1.0),
        _record(1, "exclusive", 5.0, 1.0), _record(1, "maxsim", 2.0, 1.5),
        _record(2, "maxsim", 1.0, 1.7), _record(2, "exclusive", 2.0, 1.1),
    ]
    summary = run_timing.summarise(records, "maxsim")
    assert summary["exclusive"]["ratio_per_round"] == [3.0, 2.5, 2.0]
    assert summary["exclusive"]["ratio_to_reference"] == 2.5
    assert summary["maxsim"]["median_step_s"] == 1.0 and summary["exclusive"]["cores_used"] == 1.0
    assert run_timing.serialised(summary, "maxsim", "exclusive")
    # as many cores as maxsim: slower, but not serialised
    even = [dict(record, cores_used=1.6) for record in records]
    assert not run_timing.serialised(run_timing.summarise(even, "maxsim"), "maxsim", "exclusive")
    # fewer cores but as fast: not serialised either
    fast = [dict(record, median_step_s=1.0) for record in records]
    assert not run_timing.serialised(run_timing.summarise(fast, "maxsim"), "maxsim", "exclusive")
    with pytest.raises(ValueError, match="reference head 'topk'"):
        run_timing.summarise(records, "topk")


def test_real_fine_tunes_are_timed_interleaved(tmp_path):
    model = save_dropout_bert(tmp_path / "bert")
    data = write_tiny_beir(tmp_path / "beir")
    extra = ["--model", str(model), "--projection-dim", "32", "--batch-size", "4", "--pseudo-queries", "title"]
    records = run_timing.timed_runs(["maxsim", "exclusive"], str(data), 2, 2, tmp_path / "runs", extra,
                                    show_progress=False)
    assert [(record["round"], record["head"]) for record in records] == [
        (0, "maxsim"), (0, "exclusive"), (1, "exclusive"), (1, "maxsim")]  # the order rotates every round
    for record in records:
        assert record["steps_timed"] == 2 and record["median_step_s"] > 0
        assert 0 < record["cpu_s"] and 0 < record["cores_used"] <= 64
        run = tmp_path / "runs" / f"round{record['round']}-{record['head']}"
        assert json.loads((run / "summary.json").read_text())["median_step_time_s"] == record["median_step_s"]
    with pytest.raises(UserError, match=r"timed fine-tune maxsim \(round 0\) failed \(exit 2: .*missing.*round0-maxsim.log"):
        run_timing.timed_runs(["maxsim"], str(tmp_path / "missing"), 2, 1, tmp_path / "bad", extra, show_progress=False)
