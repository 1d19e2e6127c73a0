"""Publishing attaches a checkpoint's text-attack runs (`lir-robust attack`): compact copies under attacks/, rows
(success@10 at N = 10, retained nDCG@10 at L = 16) beside the sweep's in the card's robustness section, the
model-index unchanged; runs of other weights, or a folder that holds none, end in one line; without runs the card is
the same as before. Tiny fine-tuned text run, real tiny attacks on it, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lir_robust import hub
from lir_robust.attacks.text.pipeline import TextAttackConfig, run_text_attack
from lir_robust.commands import cli
from lir_robust.hub.attack_results import AttackResults, attack_section, card_rows
from lir_robust.scoring.pooling import parse_head

from test_hub import BASE_IDS, NO_PYLATE, PROJECT_URL, _build, _pylate_ready

REPO = "alice/robust-text"
needs_pylate = pytest.mark.skipif(not _pylate_ready(), reason=NO_PYLATE)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny text run (with its sweep) and, as `make attack-one OUT=<run>` leaves them, <run>/attack/<name>:
    cluster-text N = 10 (two heads), insertion L = 16 and cluster-text N = 1 (no card row)."""
    built = _build("text", tmp_path_factory.mktemp("publish-attacks"))
    data, cache = str(built["root"] / "eval"), str(built["root"] / "attack-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        for name, options in (("cluster-text", dict(attack="cluster-text", n=10, heads=["lse:tau=0.1", "maxsim"])),
                              ("insertion", dict(attack="insertion", n=2, length=16, iterations=1, candidates=4,
                                                 heads=["lse:tau=0.1"])),
                              ("cluster-text-n1", dict(attack="cluster-text", n=1, heads=["lse:tau=0.1"]))):
            run_text_attack(TextAttackConfig(model=str(built["run"]), data=data, cache_dir=cache, **options),
                            built["run"] / "attack" / name, show_progress=False)
    return built


def _publish(run: Path, out: Path, **options):
    return hub.prepare_publish_folder(run, out, repo_id=REPO, license="mit", base_model=BASE_IDS["text"],
                                      project_url=PROJECT_URL, **options)


def _entries(card) -> list:
    return [entry.to_dict() if hasattr(entry, "to_dict") else vars(entry) for entry in card.data.eval_results]


@needs_pylate
def test_the_runs_text_attacks_are_rows_beside_the_sweep_and_files_under_attacks(run, tmp_path):
    from huggingface_hub import ModelCard

    folder = _publish(run["run"], tmp_path / "with")
    without = _publish(run["run"], tmp_path / "without", attacks=None)
    card, plain = ModelCard.load(folder / "README.md"), ModelCard.load(without / "README.md")
    reports = {name: json.loads((run["run"] / "attack" / name / "results.json").read_text())
               for name in ("cluster-text", "insertion", "cluster-text-n1")}
    robustness = card.text[card.text.index("## Robustness to document length"):]
    robustness = robustness[: robustness.index("\n## ", 1)]  # the sweep's section, up to the next one
    assert "### Text attacks" in robustness and "The row `lse:tau=0.1` is this checkpoint's own head" in robustness
    for head in ("lse:tau=0.1", "maxsim"):
        success = reports["cluster-text"]["results"][head]["metrics"]["success@10"]
        assert f"| {head} | cluster-text | N = 10 (3 clusters) | 3 | {100 * success:.1f} % | - | - |" in robustness
    insertion = reports["insertion"]["results"]["lse:tau=0.1"]["metrics"]
    assert (f"| lse:tau=0.1 | insertion | N = 2, L = 16, 1 iterations, init queries, appended | 3 | - | "
            f"{100 * insertion['ndcg@10_retained']:.1f} % | {100 * insertion['hijack@10']:.1f} % |") in robustness
    assert "N = 1 |" not in robustness  # N = 1 gives no card row
    assert "Text attacks" not in plain.text and not (without / "attacks").exists()
    assert _entries(card) == _entries(plain)  # never model-index entries
    summary = json.loads((folder / "attacks" / "summary.json").read_text())
    assert summary["model"] == REPO and {row["file"] for row in summary["runs"]} == {
        "cluster-text/results.json", "insertion/results.json", "cluster-text-n1/results.json"}
    copied = (folder / "attacks" / "insertion" / "results.json").read_text()
    assert json.loads(copied)["results"]["lse:tau=0.1"]["metrics"] == insertion
    assert str(run["root"]) not in copied and "edited_texts" not in copied and '"scores"' not in copied
    hub.validate_publish_folder(folder)


@needs_pylate
def test_attacks_none_and_no_attack_folder_give_the_card_of_before(run, tmp_path):
    """--attacks none, and a run with no attack/ folder (auto), give the same card byte for byte: the card without
    text attacks is the one publishing made before they existed."""
    bare = tmp_path / "copy" / "run"
    shutil.copytree(run["run"], bare, ignore=shutil.ignore_patterns("attack"))
    none = _publish(run["run"], tmp_path / "none", attacks=None)
    auto = _publish(bare, tmp_path / "auto")
    assert (none / "README.md").read_bytes() == (auto / "README.md").read_bytes()
    text = (none / "README.md").read_text()
    assert "Text attacks" not in text and "text attacks" not in text and "attacks/" not in text
    assert not (auto / "attacks").exists() and not (none / "attacks").exists()


@needs_pylate
def test_text_attacks_of_other_weights_are_refused_in_one_line(run, tmp_path, capsys):
    from lir_robust.commands import publish

    folder = tmp_path / "attacks"
    shutil.copytree(run["run"] / "attack", folder)
    path = folder / "insertion" / "results.json"
    report = json.loads(path.read_text())
    report["encoder"]["weights"] = "base"  # the untrained model's numbers
    path.write_text(json.dumps(report))
    with pytest.raises(hub.HubError, match="was measured on other weights"):
        _publish(run["run"], tmp_path / "out", attacks=folder)
    out = tmp_path / "out-cli"
    status = cli.run_command(publish.main, ["--checkpoint", str(run["run"]), "--repo", REPO, "--license", "mit",
                                            "--base-model", BASE_IDS["text"], "--project-url", PROJECT_URL,
                                            "--attacks", str(folder), "--dry-run", str(out)], prog="publish.py")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Loading weights" not in line]  # model loads' bars
    assert status == 2 and len(lines) == 1 and lines[0].startswith(f"publish.py: error: --attacks {path} was measured "
                                                                    "on other weights") and "--attacks none" in lines[0], lines
    assert not (tmp_path / "out").exists() and not out.exists()


@needs_pylate
@pytest.mark.parametrize("damage, expected", [("missing", "no such folder"), ("empty", "no results.json under it"),
                                              ("not-an-attack", "not a text attack's results.json")])
def test_a_folder_without_text_attack_runs_is_one_line(run, tmp_path, damage, expected):
    folder = tmp_path / "attacks"
    if damage != "missing":
        folder.mkdir()
    if damage == "not-an-attack":
        (folder / "sweep").mkdir()
        (folder / "sweep" / "results.json").write_text(json.dumps({"metrics": {}, "heads": [], "ks": [], "config": {}}))
    with pytest.raises(hub.HubError, match=expected) as error:
        _publish(run["run"], tmp_path / "out", attacks=folder)
    assert "\n" not in str(error.value) and str(error.value).startswith("--attacks ")
    assert not (tmp_path / "out").exists()


def _report(attack: str, n: int, length: int, metrics: dict, heads=("maxsim",)) -> dict:
    return {"config": {"attack": attack, "n": n, "length": length, "iterations": 5, "init": "queries", "position": "end"},
            "split": {"held_out_queries": 7}, "data": {"name": "tiny"},
            "results": {head: {"metrics": metrics} for head in heads}}


def test_only_n10_passages_and_l16_snippets_become_card_rows_and_nothing_is_filled_in():
    passage = {"success@10": 0.25, "ndcg@10_clean": 0.5, "ndcg@10_retained": 0.9}
    edit = {"hijack@10": 0.125, "ndcg@10_retained": 0.75}
    runs = [("h1", _report("hotflip", 1, 32, passage)), ("h10", _report("hotflip", 10, 32, passage, ("maxsim", "topk:k=4"))),
            ("i4", _report("insertion", 10, 4, edit)), ("i16", _report("insertion", 10, 16, edit)),
            ("s", _report("stuffing", 10, 16, edit))]
    rows = card_rows(AttackResults(Path("x"), runs))
    assert [(row["run"], row["head"]) for row in rows] == [("h10", "maxsim"), ("h10", "topk:k=4"), ("i16", "maxsim")]
    assert rows[0]["success@10"] == 0.25 and rows[0]["ndcg@10_retained"] is None and rows[0]["hijack@10"] is None
    assert rows[2]["success@10"] is None and rows[2]["ndcg@10_retained"] == 0.75
    text = attack_section(AttackResults(Path("x"), runs), parse_head("maxsim"), nested=False)
    assert text.startswith("## Robustness to text attacks")
    assert "| maxsim | insertion | N = 10, L = 16, 5 iterations, init queries, appended | 7 | - | 75.0 % | 12.5 % |" in text
    assert attack_section(AttackResults(Path("x"), runs[:1] + runs[2:3]), parse_head("maxsim"), nested=True) == ""
