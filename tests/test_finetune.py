"""lir_robust.commands.finetune / lir_robust.training.loop (train/finetune.py) end to end on tiny random models: every head trains, loss falls, save / reload, resume, 2 processes."""

from __future__ import annotations

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
from lir_robust.scoring.scorer import score

from lir_robust.commands import cli, finetune

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train" / "finetune.py"  # the wrapper `accelerate launch train/finetune.py` runs
HEADS = ["maxsim", "topk:k=2", "softmax:tau=0.1", "lse:tau=0.1", "mean"]


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # conftest.py


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
        "--save-every", "0", "--lr", "5e-3", "--projection-init", "svd", "--pseudo-queries", "title", *extra,
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


@pytest.mark.parametrize("defence", [[], ["--injected-negatives", "spike:2", "hard:2"],
                                     ["--injected-negatives", "spike:2", "hard-corpus:2", "--corpus-bank-refresh", "3"]],
                         ids=["plain", "injected-negatives", "hard-corpus"])
def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(defence, tiny_bert, tiny_beir, tmp_path):
    # 8 pairs, batch 4: 2 steps per epoch, so the run crosses epochs; stopping after step 3 stops mid-epoch.
    common = ["--pooling", "softmax:tau=0.1", "--max-steps", "6", "--save-every", "3", "--lora-dropout", "0.1", *defence]
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


@pytest.mark.parametrize("defence", [[], ["--injected-negatives", "spike:2", "hard:2"]], ids=["plain", "injected-negatives"])
def test_two_processes_match_one_process_on_the_same_global_batch(defence, tiny_bert_no_dropout, tiny_beir, tmp_path):
    if not shutil.which("torchrun", path=str(Path(sys.executable).parent)):
        pytest.skip("torchrun is not installed beside this Python")
    common = _args(
        tiny_bert_no_dropout, tiny_beir, "OUT", "--pooling", "topk:k=2", "--max-steps", "3", "--lora-dropout", "0",
        "--max-grad-norm", "1000", *defence,
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
    from lir_robust.commands.cli import UserError
    from lir_robust.data import HubUnreachableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match="vidore/colpali_train_set.*HF_HUB_OFFLINE.*split='train'"):
        finetune.parse_args(["--model", str(tiny_image_pairs), "--data", "vidore/colpali_train_set", "--output-dir", str(tmp_path)])
    with pytest.raises(UserError, match="not in the local Hugging Face cache while HF_HUB_OFFLINE is set"):
        finetune.parse_args(["--model", "vidore/colqwen2-v1.0", "--data", str(tiny_image_pairs), "--validation-pairs", "0", "--output-dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # refused before anything was written


def _first_batch_losses_by_hand(model_dir, data, head: str, temperature: float, hard_negatives: int,
                                injected: tuple[str, ...] = ()) -> float:
    """The step-1 loss of _args' run, computed apart from the loss module: the untrained model (LoRA's B = 0, so the
    base encoder + the SVD projection), the sampler's first batch, each logit by a loop over (query, candidate), then
    the cross-entropy written out. Candidates of query i: the batch's documents, then its own hard negatives, then
    its injected negatives (``injected``: --injected-negatives, built by lir_robust.training.defence for the first
    micro-batch, key (seed 0, epoch 0, batch 0); test_defence checks how they are built)."""
    from lir_robust.training import defence
    import lir_robust.training as training
    from lir_robust.scoring.pooling import parse_head

    pairs = training.load_training_pairs(str(data), "title", 0).pairs
    if hard_negatives:
        pairs = training.mine_hard_negatives(pairs, hard_negatives)
    colbert = TextColBERT.from_base(str(model_dir), projection_dim=16, query_max_length=12, document_max_length=24)
    training.init_projection_svd(colbert, [pair.document for pair in pairs[:64]])
    colbert.eval()
    order = list(training.EpochShuffleSampler(len(pairs), seed=0))[:4]
    batch = [pairs[index] for index in order]
    collate = training.TextPairCollator(colbert, 12, 24)
    inputs = collate(batch)
    with torch.no_grad():
        queries, query_mask = colbert(**inputs["query"], is_query=True)
        documents, document_mask = colbert(**inputs["document"], is_query=False)
        negatives, negative_mask = colbert(**inputs["negative"], is_query=False) if hard_negatives else (None, None)
        plan = defence.InjectedNegatives.parse(injected) if injected else None
        planted, planted_mask = defence.injected_negatives(queries, query_mask, documents, document_mask, 0, plan, (0, 0, 0)) if plan else (None, None)
    pooling = parse_head(head)

    def logit(q: int, embeddings, mask) -> float:
        tokens = queries[q][query_mask[q]]
        patches = embeddings[mask]
        per_token = pooling(tokens @ patches.T, torch.ones(patches.shape[0], dtype=torch.bool))
        return float(per_token.sum()) / tokens.shape[0]

    total = 0.0
    for q in range(len(batch)):
        candidates = [logit(q, documents[d], document_mask[d]) for d in range(len(batch))]
        candidates += [logit(q, negatives[q * hard_negatives + n], negative_mask[q * hard_negatives + n]) for n in range(hard_negatives)]
        candidates += [logit(q, planted[q, n], planted_mask[q, n]) for n in range(plan.per_query)] if plan else []
        scaled = [value / temperature for value in candidates]
        peak = max(scaled)
        total += peak + math.log(sum(math.exp(value - peak) for value in scaled)) - scaled[q]
    return total / len(batch)


def test_hard_negatives_raise_the_loss_as_computed_by_hand(tiny_bert_no_dropout, tiny_beir, tmp_path):
    first_losses = {}
    for count in (0, 2):
        output = tmp_path / f"negatives-{count}"
        finetune.train(finetune.parse_args(_args(
            tiny_bert_no_dropout, tiny_beir, output, "--pooling", "topk:k=2", "--max-steps", "1", "--lora-dropout", "0",
            "--hard-negatives", str(count),
        )))
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        assert json.loads((output / "config.json").read_text())["hard_negatives"] == count
        first_losses[count] = next(r["loss"] for r in _log(output) if r["step"] == 1 and "loss" in r)
        expected = _first_batch_losses_by_hand(tiny_bert_no_dropout, tiny_beir, "topk:k=2", 0.02, count)
        assert first_losses[count] == pytest.approx(expected, rel=1e-4, abs=1e-5), count
    # the same batch with two more candidates per query: the log-sum-exp can only grow, and here it does
    assert first_losses[2] > first_losses[0] + 1e-3


def test_injected_negatives_raise_the_loss_as_computed_by_hand(tiny_bert_no_dropout, tiny_beir, tmp_path):
    first_losses = {}
    for injected in ((), ("spike:2", "hard:3")):
        output = tmp_path / ("-".join(injected) or "none")
        finetune.train(finetune.parse_args(_args(
            tiny_bert_no_dropout, tiny_beir, output, "--pooling", "topk:k=2", "--max-steps", "1", "--lora-dropout", "0",
            "--hard-negatives", "1", *(["--injected-negatives", *injected] if injected else []),
        )))
        _reset_accelerate()
        config = json.loads((output / "config.json").read_text())
        assert (config["injected_negatives"], config["injected_negative_documents"]) == ((list(injected), 1) if injected else ([], None))
        first_losses[injected] = next(r["loss"] for r in _log(output) if r["step"] == 1 and "loss" in r)
        expected = _first_batch_losses_by_hand(tiny_bert_no_dropout, tiny_beir, "topk:k=2", 0.02, 1, injected)
        assert first_losses[injected] == pytest.approx(expected, rel=1e-4, abs=1e-5), injected
    assert first_losses[("spike:2", "hard:3")] > first_losses[()] + 1e-3


@pytest.mark.parametrize("head", ["maxsim", "exclusive"])
def test_injected_negatives_train_maxsim_and_the_joint_head_and_the_model_reloads(head, tiny_bert, tiny_beir, tmp_path):
    arguments = _args(tiny_bert, tiny_beir, tmp_path, "--pooling", head, "--max-steps", "2",
                      "--injected-negatives", "spike:2", "hard:2", "--injected-negative-documents", "2")
    model, _ = finetune.train(finetune.parse_args(arguments))
    records = [record for record in _log(tmp_path) if "loss" in record]
    assert [r["step"] for r in records] == [1, 2] and all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in records)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["injected_negatives"] == ["spike:2", "hard:2"] and config["injected_negative_documents"] == 2
    reloaded = TextColBERT.from_pretrained(tmp_path / "model")
    assert reloaded.pooling.spec() == finetune.parse_head(head).spec()
    assert json.loads((tmp_path / "model" / "pooling.json").read_text())["training"]["injected_negatives"] == ["spike:2", "hard:2"]
    texts = ["shock wave drag on a cone .", "heat transfer to a flat plate ."]
    model.eval()
    scores = [score(m.encode(texts, is_query=True, show_progress=False), m.encode(texts, is_query=False, show_progress=False), reloaded.pooling)
              for m in (model, reloaded)]
    assert torch.allclose(scores[0], scores[1], atol=1e-6)
    _reset_accelerate()
    with pytest.raises(finetune.cli.UserError, match=r"another configuration \(differs in injected_negative_documents\)"):
        finetune.main(arguments[:-1] + ["1"])  # the option changes the result: not a result-neutral key


@pytest.mark.parametrize("extra, message", [
    (["--injected-negatives", "gaussian:2"], "KIND one of spike, hard"),
    (["--injected-negatives", "spike:0"], "K an integer >= 1"),
    (["--injected-negatives", "spike:2", "spike:4"], "give each kind once"),
    (["--injected-negatives"], "expected at least one argument"),
    (["--injected-negative-documents", "2"], "give --injected-negatives too"),
    (["--injected-negatives", "hard:2", "--injected-negative-documents", "4"], "micro-batch of 4 documents"),
    (["--injected-negatives", "hard:2", "--injected-negative-documents", "2", "--gradient-accumulation", "2"], "micro-batch of 2 documents"),
    (["--injected-negatives", "hard-corpus:0"], "K an integer >= 1"),
    (["--corpus-bank-refresh", "5"], "give --injected-negatives hard-corpus:K too"),
    (["--injected-negatives", "spike:2", "--corpus-bank-refresh", "5"], "give --injected-negatives hard-corpus:K too"),
    (["--injected-negatives", "hard-corpus:2", "--save-every", "15"], "--save-every 15 must be a multiple of --corpus-bank-refresh 10"),
    (["--injected-negatives", "hard-corpus:2", "--corpus-bank-refresh", "4", "--save-every", "6"], "multiple of --corpus-bank-refresh 4"),
    (["--injected-negatives", "hard-corpus:2", "--corpus-bank-refresh", "0"], "integer >= 1"),
])
def test_bad_injected_negative_options_are_refused_before_anything_loads(extra, message, tiny_bert, tiny_beir, tmp_path):
    from lir_robust.commands.cli import UserError, run_command

    with pytest.raises(UserError, match=message):
        finetune.parse_args(_args(tiny_bert, tiny_beir, tmp_path / "run", *extra))
    assert run_command(finetune.main, _args(tiny_bert, tiny_beir, tmp_path / "run", *extra)) == 2
    assert not any(tmp_path.iterdir())


def test_identity_projection_and_sentence_pseudo_queries(tiny_bert, tiny_beir, tmp_path):
    arguments = _args(tiny_bert, tiny_beir, tmp_path, "--pooling", "maxsim", "--max-steps", "1", "--pseudo-queries", "sentence")
    arguments[arguments.index("--projection-dim") + 1] = "32"  # the tiny BERT's hidden size
    finetune.train(finetune.parse_args([*arguments, "--projection-init", "identity"]))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["projection_init"] == "identity" and config["data_kind"] == "sentence-text"
    from lir_robust.commands.cli import UserError

    with pytest.raises(UserError, match="projection-init identity needs --projection-dim = the hidden size 32"):
        finetune.parse_args([*_args(tiny_bert, tiny_beir, tmp_path / "b"), "--projection-init", "identity"])


# ------------------------------------------------------------------ rerunning a command: resume, finished, another configuration


def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _kill_args(model, data, output):
    return _args(model, data, output, "--pooling", "softmax:tau=0.1", "--max-steps", "30", "--save-every", "1",
                 "--validation-pairs", "4", "--lora-dropout", "0.1")


def test_a_killed_run_continues_on_rerun_and_ends_as_an_uninterrupted_run(tiny_bert, tmp_path):
    import signal
    import time

    data = write_tiny_beir(tmp_path / "data", documents=16)  # 12 training pairs, batch 4: 3 steps an epoch
    finetune.main(_kill_args(tiny_bert, data, tmp_path / "uninterrupted"))
    _reset_accelerate()

    killed = tmp_path / "killed"
    threads = str(torch.get_num_threads())  # as many as this process: the same float summation order
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen([sys.executable, str(SCRIPT), *_kill_args(tiny_bert, data, killed)], cwd=ROOT,
                               env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (killed / "checkpoints" / "step-4").is_dir() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "summary.json").exists() and not (killed / "model").exists()
    done = sorted(path.name for path in (killed / "checkpoints").iterdir())
    assert "step-4" in done and "step-30" not in done

    summary = finetune.main(_kill_args(tiny_bert, data, killed))  # the same command again
    expected = json.loads((tmp_path / "uninterrupted" / "summary.json").read_text())
    for key in ("step", "val_loss", "val_top1"):
        assert summary[key] == pytest.approx(expected[key], abs=1e-6), key
    got, want = (_trained_weights(TextColBERT.from_pretrained(tmp_path / name / "model")) for name in ("killed", "uninterrupted"))
    assert got.keys() == want.keys() and any("lora_B" in name for name in got)
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-6, rtol=0), name
    steps = [r["step"] for r in _log(killed) if "loss" in r]
    assert steps == list(range(1, 31))  # every step logged once, as in the uninterrupted run
    losses = [[r["loss"] for r in _log(tmp_path / name) if "loss" in r] for name in ("killed", "uninterrupted")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)


def test_rerun_of_a_finished_run_reports_it_and_another_configuration_stops(tiny_bert, tiny_beir, tmp_path, caplog):
    from lir_robust.commands.cli import UserError, run_command

    arguments = _args(tiny_bert, tiny_beir, tmp_path, "--pooling", "maxsim", "--max-steps", "2")
    first = finetune.main(arguments)
    _reset_accelerate()
    log_before, weights_before = (tmp_path / "log.jsonl").read_text(), (tmp_path / "model").stat().st_mtime_ns
    caplog.set_level("INFO")
    model, summary = finetune.train(finetune.parse_args(arguments + ["--log-every", "5"]))  # a neutral option differs
    assert model is None and summary == first and "already holds a finished run" in caplog.text
    assert (tmp_path / "log.jsonl").read_text() == log_before and (tmp_path / "model").stat().st_mtime_ns == weights_before

    with pytest.raises(UserError, match=r"holds a run of another configuration \(differs in lr\).*--output-dir.*--overwrite"):
        finetune.main(arguments + ["--lr", "1e-3"])
    assert (tmp_path / "log.jsonl").read_text() == log_before  # nothing written
    assert run_command(finetune.main, arguments + ["--lr", "1e-3"]) == 2

    again = finetune.main(arguments + ["--lr", "1e-3", "--overwrite"])
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 1e-3 and again["step"] == 2
    assert [r["step"] for r in _log(tmp_path) if "loss" in r] == [1, 2]

    # a run saved before --injected-negatives existed is a run without the defence
    _reset_accelerate()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["injected_negatives"] == [] and saved["injected_negative_documents"] is None
    del saved["injected_negatives"], saved["injected_negative_documents"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert finetune.train(finetune.parse_args(arguments + ["--lr", "1e-3"]))[0] is None  # reported as finished
    with pytest.raises(UserError, match=r"differs in injected_negative_documents, injected_negatives"):
        finetune.main(arguments + ["--lr", "1e-3", "--injected-negatives", "spike:1"])


def test_latest_checkpoint_ignores_unfinished_saves(tmp_path):
    import lir_robust.training as training

    for name, complete in (("step-3", True), ("step-7", False), (".step-9.partial", True), ("step-x", True)):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        if complete:
            (tmp_path / "checkpoints" / name / training.CHECKPOINT_LAST_FILE).write_bytes(b"")
    assert training.latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-3"
    assert training.latest_checkpoint(tmp_path / "nowhere") is None


def test_the_command_defaults_are_the_recorded_recipe(tiny_bert, tiny_beir, tmp_path):
    from lir_robust.studies import variants as finetune_all

    args = finetune.parse_args(["--data", str(tiny_beir), "--output-dir", str(tmp_path / "run")])  # MiniLM: 384-d
    assert {key: getattr(args, key) for key in finetune_all.RECIPE} == finetune_all.RECIPE
    assert (args.lora_r, args.lora_alpha, args.lora_dropout, args.warmup_steps) == (32, 32, 0.1, 4)
    other = finetune.parse_args(["--model", str(tiny_bert), "--data", str(tiny_beir), "--output-dir", str(tmp_path / "b")])
    assert (other.projection_dim, other.projection_init) == (32, "identity")  # any BERT-like model: its hidden size
    assert not any(tmp_path.iterdir())


def test_the_saved_model_scores_with_the_scoring_head_and_records_the_training_head(tiny_bert, tiny_beir, tmp_path):
    """--scoring-pooling: trained through one head, saved to score with another (pooling.json's head, what every
    reader loads), the training head kept in its training record; a rerun with another scoring head is another run."""
    args = _args(tiny_bert, tiny_beir, tmp_path, "--pooling", "softmax:tau=1.0", "--scoring-pooling", "blend",
                 "--max-steps", "2")
    finetune.train(finetune.parse_args(args))
    saved = json.loads((tmp_path / "model" / "pooling.json").read_text())
    assert saved["spec"] == finetune.parse_head("blend").spec()
    assert saved["training"]["head"] == "softmax:tau=1.0" and saved["training"]["pooling"] == "softmax:tau=1.0"
    assert TextColBERT.from_pretrained(tmp_path / "model").pooling.spec() == finetune.parse_head("blend").spec()
    with pytest.raises(cli.UserError, match="scoring_pooling"):
        finetune.train(finetune.parse_args([*args[:-4], "--scoring-pooling", "maxsim", "--max-steps", "2"]))
