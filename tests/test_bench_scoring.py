"""make bench-scoring's verdict lines (the measurements faked: no scoring runs)."""

from __future__ import annotations

from lir_robust.commands import bench_scoring


def test_the_default_head_is_checked_against_its_target_without_colpali_or_floor(monkeypatch, capsys):
    seconds = {"maxsim": 10.0, "exclusive:capacity=1,candidates=8": 12.0, "blend:tau=1.0,weight=0.5,capacity=1,candidates=8": 16.0,
               "mean": 11.0}
    monkeypatch.setattr(bench_scoring, "measure", lambda method, args: {
        "method": method, "seconds": seconds[method], "peak_mb": 1.0, "checksum": 0.0})
    assert bench_scoring.main(["--methods", "maxsim", "exclusive", "blend", "mean", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "targets: exclusive:capacity=1,candidates=8 / maxsim = 1.20 (target <= 1.5)" in out
    assert "blend:tau=1.0,weight=0.5,capacity=1,candidates=8 / maxsim = 1.60 (target <= 1.5)" in out
    assert "mean / maxsim = 1.10 (no target)" in out
