"""lir_robust.training.adversarial_passages: adversarial passages as fine-tuning negatives (``--adversarial-passages``),
end to end on a tiny random model: never the evaluation queries' text, resumable to the same passages and weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune_fixtures import save_dropout_bert, write_tiny_beir
from lir_robust.commands import finetune
from lir_robust.training.adversarial_passages import AdversarialPassages, parse_adversarial_passage
from lir_robust.training.pairs import load_training_pairs


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # conftest.py


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_dropout_bert(tmp_path_factory.mktemp("bert"), dropout=0.1)


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory):
    return write_tiny_beir(tmp_path_factory.mktemp("beir") / "tiny", documents=8)


PASSAGES = ["--adversarial-passages", "cluster-text:2", "hotflip:2", "--adversarial-passage-iterations", "2",
            "--adversarial-passage-length", "6"]


def _args(model, data, output, *extra):
    return [
        "--model", str(model), "--data", str(data), "--output-dir", str(output), "--projection-dim", "16",
        "--lora-r", "4", "--lora-alpha", "8", "--batch-size", "4", "--validation-pairs", "0", "--log-every", "1",
        "--query-max-length", "12", "--train-document-max-length", "24", "--document-max-length", "24",
        "--lr", "5e-3", "--projection-init", "svd", "--pseudo-queries", "title", "--pooling", "maxsim", *extra,
    ]


def _builds(output: Path) -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted((output / "adversarial-passages").glob("step-*.json"))}


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items() if "lora_" in name or name.startswith("projection.")}


def test_passages_come_from_training_queries_and_never_hold_an_evaluation_query(tiny_bert, tiny_beir, tmp_path):
    finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path, *PASSAGES, "--max-steps", "3",
                                             "--adversarial-passage-refresh", "2", "--save-every", "0")))
    builds = _builds(tmp_path)
    assert list(builds) == ["step-00000.json", "step-00002.json"]  # refreshed every 2 steps
    assert (tmp_path / "adversarial-passages" / "step-00002.txt").is_file()
    training = {pair.query for pair in load_training_pairs(str(tiny_beir), "title", 0).pairs}
    evaluation = [json.loads(line)["text"] for line in (tiny_beir / "queries.jsonl").read_text().splitlines()]
    for build in builds.values():
        assert set(build["pool"]) <= training and len(build["pool"]) > 2
        assert len(build["passages"]["cluster-text"]) == 2 and len(build["passages"]["hotflip"]) == 2
        assert all(len(text.split()) == 6 for text in build["passages"]["hotflip"])
        for text in build["passages"]["cluster-text"] + build["passages"]["hotflip"]:
            assert not any(query.lower().rstrip(" ?") in text.lower() for query in evaluation)
        assert not any("evalquery" in text for text in build["passages"]["cluster-text"])
    # the HotFlip passages keep up with the model: the second build continues the first
    first, second = builds["step-00000.json"], builds["step-00002.json"]
    assert first["members"] == second["members"] and first["passages"]["cluster-text"] == second["passages"]["cluster-text"]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(record["loss"])) for record in log if "loss" in record)


@pytest.mark.parametrize("stop, save", [(2, 2), (3, 3)], ids=["rebuilds-the-build-of-the-checkpoint-step", "reloads-a-saved-build"])
def test_a_resumed_run_sees_the_same_passages_and_ends_with_the_same_weights(stop, save, tiny_bert, tiny_beir, tmp_path):
    common = [*PASSAGES, "--adversarial-passage-refresh", "2", "--max-steps", "5", "--save-every", str(save),
              "--lora-dropout", "0.1"]
    uninterrupted, _ = finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path / "a", *common)))
    from accelerate.state import AcceleratorState, GradientState

    _, stopped = finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path / "b", *common, "--stop-after-steps", str(stop))))
    assert stopped["stopped"] and len(_builds(tmp_path / "b")) == 1 + (stop > 2)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    resumed, _ = finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path / "b", *common)))
    builds_a, builds_b = _builds(tmp_path / "a"), _builds(tmp_path / "b")
    assert list(builds_a) == ["step-00000.json", "step-00002.json", "step-00004.json"]
    for name in builds_a:
        assert builds_a[name]["passages"] == builds_b[name]["passages"], name
    expected, got = _weights(uninterrupted), _weights(resumed)
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6, rtol=0), name


def test_a_plan_is_parsed_checked_and_names_its_build_steps():
    """A plan is parsed and checked; a bad one is refused with the reason."""
    plan = AdversarialPassages.parse(["hotflip:3", "cluster-text:2"], refresh=4)
    assert plan.spec() == ("hotflip:3", "cluster-text:2") and [plan.build_step(s) for s in (0, 3, 4, 9)] == [0, 0, 4, 8]
    assert AdversarialPassages.parse(["cluster-text:2"], refresh=4).build_step(9) == 0  # nothing to refresh
    assert parse_adversarial_passage(" HotFlip:7 ") == ("hotflip", 7)
    with pytest.raises(ValueError, match="each adversarial-passage kind once"):
        AdversarialPassages.parse(["hotflip:3", "hotflip:2"])
    with pytest.raises(ValueError, match="refresh must be an integer >= 0"):
        AdversarialPassages.parse(["hotflip:3"], refresh=-1)


def test_positions_reach_every_hotflip_build_and_one_position_saves_as_before():
    """--adversarial-passage-positions: HotFlip's positions per iteration in each build; the default (1) leaves the
    saved plan as it was before the setting existed, so older builds still load."""
    from lir_robust.training.adversarial_passages import _plan_dict

    plan = AdversarialPassages.parse(["hotflip:3"], positions=16, iterations=50)
    assert plan.hotflip(build=10, cluster=2).positions == 16 and plan.hotflip(10, 2).iterations == 50
    assert _plan_dict(plan)["positions"] == 16 and "positions" not in _plan_dict(AdversarialPassages.parse(["hotflip:3"]))
    with pytest.raises(ValueError, match="positions must be an integer >= 1"):
        AdversarialPassages.parse(["hotflip:3"], positions=0)


def test_a_run_with_positions_records_them_in_its_builds_and_config(tiny_bert, tiny_beir, tmp_path):
    finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path, *PASSAGES, "--adversarial-passage-positions", "3",
                                             "--max-steps", "1", "--save-every", "0")))
    assert _builds(tmp_path)["step-00000.json"]["plan"]["positions"] == 3
    assert json.loads((tmp_path / "config.json").read_text())["adversarial_passage_positions"] == 3


def test_passages_are_negatives_with_gradients(tiny_bert, tiny_beir, tmp_path):
    """With the passages the loss differs from a run without them (they enter the loss) and stays finite."""
    finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path / "plain", "--max-steps", "1", "--save-every", "0")))
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path / "passages", *PASSAGES, "--max-steps", "1", "--save-every", "0")))
    loss = lambda folder: [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()][0]["loss"]  # noqa: E731
    assert loss(tmp_path / "passages") > loss(tmp_path / "plain")  # more negatives: a larger InfoNCE loss
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert "adversarial_passages" not in config  # a run without them writes the config it always did
