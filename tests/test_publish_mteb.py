"""Publishing attaches a checkpoint's `lir-robust mteb` results: mteb's result files under mteb/, a labelled table in
the card's text, the model-index unchanged (the checkpoint's sweep only); a folder that is not one, or results
measured on other weights, end in one line. Tiny fine-tuned text run, a real tiny mteb run on it, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("mteb")

from lir_robust import hub  # noqa: E402
from lir_robust.commands import cli  # noqa: E402

from test_hub import BASE_IDS, NO_PYLATE, PROJECT_URL, _build, _pylate_ready  # noqa: E402

pytestmark = pytest.mark.skipif(not _pylate_ready(), reason=NO_PYLATE)
REPO = "alice/robust-text"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny text run (with its sweep) and `lir-robust mteb` on it in <run>/mteb: two heads, clean and hard K = 2."""
    from lir_robust.commands.mteb import main

    built = _build("text", tmp_path_factory.mktemp("publish-mteb"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        main(["--model", str(built["run"]), "--tasks", str(built["root"] / "eval"), "--head", "maxsim", "lse:tau=0.1",
              "--inject", "hard:2", "--out", str(built["run"] / "mteb")])
    return built


def _publish(run: Path, out: Path, **options):
    return hub.prepare_publish_folder(run, out, repo_id=REPO, license="mit", base_model=BASE_IDS["text"],
                                      project_url=PROJECT_URL, **options)


def test_the_runs_mteb_results_are_attached_with_a_labelled_table_and_no_model_index_entries(run, tmp_path):
    from huggingface_hub import ModelCard

    folder = _publish(run["run"], tmp_path / "with")
    without = _publish(run["run"], tmp_path / "without", mteb=None)
    summary = json.loads((folder / "mteb" / "summary.json").read_text())
    assert summary["model"] == REPO and len(summary["runs"]) == 4
    assert {(row["head"], row["condition"]) for row in summary["runs"]} == {
        ("maxsim", "clean"), ("maxsim", "hard:2"), ("lse:tau=0.1", "clean"), ("lse:tau=0.1", "hard:2")}
    for row in summary["runs"]:  # mteb's own result file, copied at its path, holding the number in the table
        written = json.loads((folder / "mteb" / row["file"]).read_text())
        assert written["scores"]["test"][0]["ndcg_at_10"] == row["ndcg@10"] and written["task_name"] == row["task"]
        assert (folder / "mteb" / row["file"]).parent.joinpath("model_meta.json").is_file()
    assert str(run["run"]) not in (folder / "mteb" / "summary.json").read_text()  # no local paths
    card = ModelCard.load(folder / "README.md")
    assert "## MTEB" in card.text and "Measured on this checkpoint with `lir-robust mteb`" in card.text
    assert "| task | head | condition | nDCG@10 |" in card.text
    hard = next(row for row in summary["runs"] if row["head"] == "lse:tau=0.1" and row["condition"] == "hard:2")
    assert f"| {hard['task']} | lse:tau=0.1 | hard, K = 2 | {hard['ndcg@10']:.4f} |" in card.text
    assert "## MTEB" not in ModelCard.load(without / "README.md").text and not (without / "mteb").exists()
    entries = [entry.to_dict() if hasattr(entry, "to_dict") else vars(entry) for entry in card.data.eval_results]
    plain = ModelCard.load(without / "README.md").data.eval_results
    assert entries == [entry.to_dict() if hasattr(entry, "to_dict") else vars(entry) for entry in plain]
    hub.validate_publish_folder(folder)


def _copy(run: dict, tmp_path: Path) -> Path:
    copy = tmp_path / "mteb-copy"
    shutil.copytree(run["run"] / "mteb", copy)
    return copy


@pytest.mark.parametrize("damage, expected", [
    ("missing", "no such folder"),
    ("no-summary", "no summary.json"),
    ("no-runs", "lists no runs"),
    ("missing-file", "is missing"),
    ("bad-file", "is not an mteb result file"),
])
def test_a_folder_that_is_not_an_mteb_output_is_one_line(run, tmp_path, damage, expected, capsys):
    from lir_robust.commands import publish

    folder = tmp_path / "nowhere" if damage == "missing" else _copy(run, tmp_path)
    summary = folder / "summary.json"
    if damage == "no-summary":
        summary.unlink()
    elif damage == "no-runs":
        summary.write_text(json.dumps({**json.loads(summary.read_text()), "runs": []}))
    elif damage in ("missing-file", "bad-file"):
        target = folder / json.loads(summary.read_text())["runs"][0]["file"]
        target.unlink() if damage == "missing-file" else target.write_text("{}")
    out = tmp_path / "out"
    status = cli.run_command(publish.main, ["--checkpoint", str(run["run"]), "--repo", REPO, "--license", "mit",
                                            "--base-model", BASE_IDS["text"], "--project-url", PROJECT_URL,
                                            "--mteb", str(folder), "--dry-run", str(out)], prog="publish.py")
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and f"--mteb {folder}" in err and expected in err, repr(err)
    assert not out.exists()


def test_mteb_results_of_other_weights_are_refused(run, tmp_path):
    folder = _copy(run, tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    summary["encoder"] = {**summary["encoder"], "weights": "0000000000000000"}
    (folder / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(hub.HubError, match="was measured on other weights"):
        _publish(run["run"], tmp_path / "out", mteb=folder)
    assert not (tmp_path / "out").exists()
