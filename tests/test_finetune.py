"""train/finetune.py end to end on tiny random models: every head trains, loss falls, save / reload, resume, 2 processes."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetune_fixtures import save_dropout_bert, write_tiny_beir
from lir_robust.encoders.text_colbert import TextColBERT
from lir_robust.scoring import score

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train" / "finetune.py"
HEADS = ["maxsim", "topk:k=2", "softmax:tau=0.1", "lse:tau=0.1", "mean"]


def _load_script():
    spec = importlib.util.spec_from_file_location("finetune_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


finetune = _load_script()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each in-process run builds its own Accelerator; forget the previous one's shared state."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_dropout_bert(tmp_path_factory.mktemp("bert"), dropout=0.1)


@pytest.fixture(scope="module")
def tiny_bert_no_dropout(tmp_path_factory):
    return save_dropout_bert(tmp_path_factory.mktemp("bert-no-dropout"), dropout=0.0)


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory):
    return write_tiny_beir(tmp_path_factory.mktemp("beir") / "tiny", documents=8)


def _args(model, data, output, *extra):
    return [
        "--model", str(model), "--data", str(data), "--output-dir", str(output), "--projection-dim", "16",
        "--lora-r", "4", "--lora-alpha", "8", "--batch-size", "4", "--validation-pairs", "0", "--log-every", "1",
        "--query-max-length", "12", "--train-document-max-length", "24", "--document-max-length", "24",
        "--save-every", "0", "--lr", "5e-3", *extra,
    ]


def _log(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def _trained_weights(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items() if "lora_" in name or name.startswith("projection.")}


@pytest.mark.parametrize("head", HEADS)
def test_every_head_trains_and_the_saved_folder_reloads_and_scores_identically(head, tiny_bert, tiny_beir, tmp_path):
    model, summary = finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path, "--pooling", head, "--max-steps", "3")))
    records = [record for record in _log(tmp_path) if "loss" in record]
    assert [record["step"] for record in records] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor([r["loss"], r["grad_norm"], r["gold_gini"]])).all() for r in records)
    assert summary["peak_memory_mb"] > 0
    reloaded = TextColBERT.from_pretrained(tmp_path / "model")
    assert reloaded.pooling.spec() == finetune.parse_head(head).spec()
    saved = json.loads((tmp_path / "model" / "pooling.json").read_text())
    assert saved["training"]["head"] == reloaded.pooling.spec() and saved["training"]["data_kind"] == "title-text"
    texts = ["shock wave drag on a cone .", "heat transfer to a flat plate ."]
    model.eval()
    scores = [
        score(m.encode(texts, is_query=True, show_progress=False), m.encode(texts, is_query=False, show_progress=False), reloaded.pooling)
        for m in (model, reloaded)
    ]
    assert torch.allclose(scores[0], scores[1], atol=1e-6)


def test_loss_decreases_on_a_repeated_tiny_batch(tiny_bert_no_dropout, tmp_path):
    data = write_tiny_beir(tmp_path / "four", documents=4)  # one global batch: the same batch every step
    finetune.train(finetune.parse_args(_args(
        tiny_bert_no_dropout, data, tmp_path / "run", "--pooling", "topk:k=2", "--max-steps", "12", "--lora-dropout", "0",
        "--warmup-steps", "0", "--schedule", "constant_with_warmup",
    )))
    losses = [record["loss"] for record in _log(tmp_path / "run") if "loss" in record]
    assert losses[-1] < 0.5 * losses[0]
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 0.7 * (len(losses) - 1)


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tiny_bert, tiny_beir, tmp_path):
    # 8 pairs, batch 4: 2 steps per epoch, so the run crosses epochs; stopping after step 3 stops mid-epoch.
    common = ["--pooling", "softmax:tau=0.1", "--max-steps", "6", "--save-every", "3", "--lora-dropout", "0.1"]
    uninterrupted, _ = finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path / "a", *common)))
    expected = _trained_weights(uninterrupted)
    from accelerate.state import AcceleratorState, GradientState

    _, stopped = finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path / "b", *common, "--stop-after-steps", "3")))
    assert stopped == {"step": 3, "stopped": True} and not (tmp_path / "b" / "model").exists()
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    resumed, _ = finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path / "b", *common, "--resume")))
    got = _trained_weights(resumed)
    assert expected.keys() == got.keys() and len(expected) > 2
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6, rtol=0), name
    assert any(not torch.equal(value, torch.zeros_like(value)) for name, value in got.items() if "lora_B" in name)
    losses_a = [r["loss"] for r in _log(tmp_path / "a") if "loss" in r]
    losses_b = [r["loss"] for r in _log(tmp_path / "b") if "loss" in r]
    assert losses_a == pytest.approx(losses_b, abs=1e-6)


def test_two_processes_match_one_process_on_the_same_global_batch(tiny_bert_no_dropout, tiny_beir, tmp_path):
    if not shutil.which("torchrun", path=str(Path(sys.executable).parent)):
        pytest.skip("torchrun is not installed beside this Python")
    common = _args(
        tiny_bert_no_dropout, tiny_beir, "OUT", "--pooling", "topk:k=2", "--max-steps", "3", "--lora-dropout", "0",
        "--max-grad-norm", "1000",
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs = {}
    for processes in (1, 2):
        output = tmp_path / f"p{processes}"
        command = [
            str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(processes), "--master_port",
            str(29500 + processes + os.getpid() % 1000), str(SCRIPT), *[str(output) if a == "OUT" else a for a in common],
        ]
        result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[processes] = output
    one, two = ([r for r in _log(runs[n]) if "loss" in r] for n in (1, 2))
    config = json.loads((runs[2] / "config.json").read_text())
    assert config["num_processes"] == 2 and config["local_batch_size"] == 2
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3]
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4, abs=1e-6)  # the averaged, gathered gradient
    weights = [TextColBERT.from_pretrained(runs[n] / "model") for n in (1, 2)]
    for (name, a), (_, b) in zip(_trained_weights(weights[0]).items(), _trained_weights(weights[1]).items()):
        assert torch.allclose(a, b, atol=1e-5), name


# ------------------------------------------------------------------ colpali-engine models (tiny, random)

IMAGE_QUERIES = [
    "what is the revenue growth", "show the solar energy chart", "which city map", "blue car picture",
    "protein gene table", "heart blood report", "market price data", "red house tree",
]


@pytest.fixture(scope="module")
def tiny_image_pairs(tmp_path_factory):
    """A datasets.save_to_disk folder with query and image columns (the schema of vidore/colpali_train_set)."""
    pytest.importorskip("colpali_engine")
    import datasets
    from tiny_colpali import tiny_images

    features = datasets.Features({"query": datasets.Value("string"), "image": datasets.Image()})
    folder = tmp_path_factory.mktemp("image-pairs")
    datasets.Dataset.from_dict({"query": IMAGE_QUERIES, "image": tiny_images(len(IMAGE_QUERIES))}, features=features).save_to_disk(folder)
    return folder


@pytest.mark.parametrize("head", ["maxsim", "topk:k=2", "softmax:tau=0.1", "lse:tau=0.1"])
def test_tiny_colqwen2_trains_with_every_head_and_reloads(head, tiny_colqwen2_dir, tiny_image_pairs, tmp_path):
    from lir_robust.patches.colpali import load_colpali
    from tiny_colpali import tiny_images

    arguments = [
        "--model", str(tiny_colqwen2_dir), "--data", str(tiny_image_pairs), "--pooling", head, "--max-steps", "2",
        "--batch-size", "4", "--validation-pairs", "0", "--log-every", "1", "--lr", "1e-3", "--save-every", "0",
        "--output-dir", str(tmp_path),
    ]
    model, _ = finetune.train(finetune.parse_args(arguments))
    records = [record for record in _log(tmp_path) if "loss" in record]
    assert len(records) == 2 and all(torch.isfinite(torch.tensor([r["loss"], r["gold_gini"]])).all() for r in records)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["family"] == "colqwen2"
    assert any("custom_text_proj" in name and "lora_A" in name for name, _ in model.named_parameters())
    reloaded, processor = load_colpali(tmp_path / "model")
    assert processor.pooling_head.spec() == finetune.parse_head(head).spec()
    queries, images = processor.process_queries(IMAGE_QUERIES[:3]), processor.process_images(tiny_images(3))
    model.eval()
    with torch.no_grad():
        trained, loaded = (processor.score(list(m(**queries)), list(m(**images))) for m in (model, reloaded))
    assert torch.allclose(trained, loaded, atol=1e-5)


def test_tiny_colpali_trains(tmp_path, tiny_image_pairs):
    from tiny_colpali import save_tiny_colpali

    model_dir = save_tiny_colpali(tmp_path / "colpali")
    arguments = [
        "--model", str(model_dir), "--data", str(tiny_image_pairs), "--pooling", "topk:k=2", "--max-steps", "2",
        "--batch-size", "4", "--validation-pairs", "0", "--log-every", "1", "--save-every", "0",
        "--output-dir", str(tmp_path / "run"),
    ]
    finetune.train(finetune.parse_args(arguments))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["family"] == "colpali"
    assert (tmp_path / "run" / "model" / "adapter_config.json").is_file()
    assert all(math.isfinite(r["loss"]) for r in _log(tmp_path / "run") if "loss" in r)


def test_hub_names_fail_fast_offline(tmp_path, monkeypatch, tiny_image_pairs):
    from lir_robust.patches.colpali import HubUnreachableError
    from lir_robust.training import DataLoadError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataLoadError, match="vidore/colpali_train_set.*HF_HUB_OFFLINE"):
        finetune.train(finetune.parse_args(["--model", "vidore/colqwen2-v1.0", "--data", "vidore/colpali_train_set", "--output-dir", str(tmp_path)]))
    with pytest.raises(HubUnreachableError, match="HF_HUB_OFFLINE"):
        finetune.train(finetune.parse_args(["--model", "vidore/colqwen2-v1.0", "--data", str(tiny_image_pairs), "--validation-pairs", "0", "--output-dir", str(tmp_path)]))


def test_hard_negatives_join_the_loss(tiny_bert, tiny_beir, tmp_path):
    finetune.train(finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path, "--pooling", "topk:k=2", "--max-steps", "2", "--hard-negatives", "2")))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["hard_negatives"] == 2
    assert all(math.isfinite(r["loss"]) for r in _log(tmp_path) if "loss" in r)


def test_identity_projection_and_sentence_pseudo_queries(tiny_bert, tiny_beir, tmp_path):
    arguments = _args(tiny_bert, tiny_beir, tmp_path, "--pooling", "maxsim", "--max-steps", "1", "--pseudo-queries", "sentence")
    arguments[arguments.index("--projection-dim") + 1] = "32"  # the tiny BERT's hidden size
    finetune.train(finetune.parse_args([*arguments, "--projection-init", "identity"]))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["projection_init"] == "identity" and config["data_kind"] == "sentence-text"
    with pytest.raises(SystemExit, match="projection-init identity.*hidden size 32"):
        finetune.train(finetune.parse_args([*_args(tiny_bert, tiny_beir, tmp_path / "b"), "--projection-init", "identity"]))
