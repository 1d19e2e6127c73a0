"""The length-sweep CLI end to end on tiny data and tiny models (text ColBERT and colpali), and resuming."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from retrieval_fixtures import write_beir, write_vidore_v2
from tiny_text import save_tiny_bert

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
import length_sweep  # noqa: E402


def test_cli_end_to_end_text_and_resume(tmp_path, caplog):
    bert, data = save_tiny_bert(tmp_path / "bert"), write_beir(tmp_path / "tiny")
    out = tmp_path / "out"
    argv = ["--model", str(bert), "--data", str(data), "--ks", "0", "1", "4", "--kinds", "gaussian", "corpus", "hard", "spike",
            "--poolings", "maxsim", "softmax:tau=1.0", "--segments", "2", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--quiet"]
    length_sweep.main(argv)
    results = json.loads((out / "results.json").read_text())
    assert (out / "table.md").read_text().count("| maxsim |") == 1 + 4  # summary row + one row per kind
    assert (out / "retained_ndcg10.png").stat().st_size > 1000
    assert results["heads"] == ["maxsim", "softmax:tau=1.0"] and results["ks"] == [0, 1, 4]
    assert results["injection"]["targets"]["hard"] == "non-gold" and results["injection"]["targets"]["gaussian"] == "all"
    hard = results["metrics"]["maxsim"]["hard"]
    assert set(hard["by_k"]) == {"0", "1", "4"} and len(hard["by_k"]["4"]["per_query"]["ndcg@10"]) == 6
    assert hard["by_k"]["0"]["retained"]["ndcg@10"] == pytest.approx(1.0)
    assert 0.0 <= results["gradient_concentration_gold_pairs"]["maxsim"]["gini"] <= 1.0
    assert "torch" in results["versions"] and results["timings_s"]["total"] > 0

    # resume: drop one segment and the report; the other segment is reused and the numbers are unchanged
    partial = next((out / "partial").iterdir())
    segments = sorted(partial.glob("segment_*.safetensors"))
    assert len(segments) == 2
    segments[1].unlink()
    (out / "results.json").unlink()
    caplog.set_level("INFO")
    length_sweep.main(argv)
    assert "resumed" in caplog.text
    again = json.loads((out / "results.json").read_text())
    assert again["metrics"]["maxsim"]["hard"]["by_k"]["4"]["mean"] == hard["by_k"]["4"]["mean"]


def test_cli_end_to_end_tiny_colpali(tiny_colqwen2_dir, tmp_path):
    data = write_vidore_v2(tmp_path / "pages_v2", pages=4)
    out = tmp_path / "out"
    length_sweep.main(["--model", str(tiny_colqwen2_dir), "--data", str(data), "--language", "english", "--ks", "0", "2",
                       "--kinds", "gaussian", "hard", "--poolings", "maxsim", "topk:k=2", "--out", str(out),
                       "--cache-dir", str(tmp_path / "cache"), "--batch-size", "2", "--quiet"])
    results = json.loads((out / "results.json").read_text())
    assert results["evaluated_queries"] == 4 and results["embedding_dim"] == 128
    assert results["encoder"]["class"] == "ColpaliEncoder"
