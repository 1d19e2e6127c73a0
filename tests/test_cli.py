"""lir_robust.commands.cli and every command's front door: a bad input is refused before anything loads or is written, with
one line on stderr (the problem and the fix), exit status 2 and no traceback (unless --debug / LIR_ROBUST_DEBUG=1)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_fixtures import save_dropout_bert, write_tiny_beir
from lir_robust.commands import cli

ROOT = Path(__file__).resolve().parents[1]


# test name -> (the module of lir_robust.commands that runs it, the checkout's script wrapping it: its errors' prog)
COMMANDS = {
    "length_sweep": ("sweep", "eval/length_sweep.py"),
    "attack": ("attack", "eval/attack.py"),
    "attack_study": ("attack_study", "eval/attack_study.py"),
    "finetune": ("finetune", "train/finetune.py"),
    "synthetic_study": ("synthetic", "eval/synthetic_study.py"),
    "finetune_all": ("finetune_all", "eval/finetune_all.py"),
    "bench_scoring": ("bench_scoring", "eval/bench_scoring.py"),
    "bench_sweep": ("bench_sweep", "eval/bench_sweep.py"),
    "bench_train": ("bench_train", "eval/bench_train.py"),
    "pool_blocks_check": ("pool_blocks_check", "eval/pool_blocks_check.py"),
    "results_doc": ("results_doc", "eval/results_doc.py"),
    "bench_scale": ("bench_scale", "eval/bench_scale.py"),
    "mteb": ("mteb", "eval/mteb_eval.py"),
    "search": ("search", "eval/search.py"),
}
SCRIPTS = {name: script for name, (_, script) in COMMANDS.items()}
# Commands whose refusals are tested in their own test file instead of BAD_INPUTS below.
REFUSALS_TESTED_ELSEWHERE = {
    "study": "test_study.py", "publish": "test_publish.py", "export_pylate": "test_pylate.py",
}


@pytest.fixture(scope="module")
def scripts():
    return {name: importlib.import_module(f"lir_robust.commands.{module}") for name, (module, _) in COMMANDS.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny BEIR collection, a tiny BERT, a plain file, all outside the working folder of each test."""
    base = tmp_path_factory.mktemp("cli-fixtures")
    (base / "a-file.txt").write_text("not a folder\n")
    return {"beir": write_tiny_beir(base / "beir"), "bert": save_dropout_bert(base / "bert"), "file": base / "a-file.txt"}


def _forbid_loading(monkeypatch, scripts):
    """Anything that loads data or a model, or starts work, fails the test if a refused command reaches it."""

    def loaded(*args, **kwargs):
        raise AssertionError("the command loaded data or a model before refusing its arguments")

    from lir_robust.encoders.text_colbert import TextColBERT
    from lir_robust.studies import variants
    from lir_robust.training import models, pairs

    monkeypatch.setattr(scripts["length_sweep"], "run_length_sweep", loaded)
    monkeypatch.setattr(scripts["attack"], "run_text_attack", loaded)
    monkeypatch.setattr(scripts["attack_study"], "run_attacks", loaded)
    monkeypatch.setattr(scripts["synthetic_study"], "run_study", loaded)
    monkeypatch.setattr(scripts["bench_scoring"], "measure", loaded)
    monkeypatch.setattr(scripts["bench_train"], "bench", loaded)
    for name in ("bench_sweep", "pool_blocks_check"):
        monkeypatch.setattr(scripts[name], "load_retrieval_set", loaded)
        monkeypatch.setattr(scripts[name], "load_encoder", loaded)
    monkeypatch.setattr(scripts["bench_scale"], "make_corpus", loaded)
    monkeypatch.setattr(scripts["search"], "run_index_search", loaded)
    monkeypatch.setattr(variants, "load_collection", loaded)
    monkeypatch.setattr(pairs, "load_training_pairs", loaded)
    for name in ("build_text_model", "build_colpali_model"):
        monkeypatch.setattr(models, name, loaded)
    monkeypatch.setattr(TextColBERT, "from_base", loaded)


def _fill(argv, files):
    return [str(files[item[1:-1]]) if item.startswith("{") and item.endswith("}") else item for item in argv]


# (command, arguments, what the one line must say). {beir}, {bert}, {file} are fixture paths.
BAD_INPUTS = [
    # eval/mteb_eval.py
    ("mteb", ["--tasks", "{beir}", "--head", "median", "--out", "o"], "argument --head: unknown pooling head 'median'"),
    ("mteb", ["--model", "./nowhere", "--tasks", "{beir}", "--out", "o"], "--model ./nowhere: not found"),
    ("mteb", ["--tasks", "{file}", "--out", "o"], "--tasks "),
    ("mteb", ["--tasks", "{beir}"], "the following arguments are required: --out"),
    ("mteb", ["--tasks", "{beir}", "--inject", "spike:0", "--out", "o"], "argument --inject: 'spike:0': an injection condition is KIND:K"),
    ("mteb", ["--tasks", "{beir}", "--inject", "hard@10:4", "--out", "o"], "argument --inject: 'hard@10:4': the few-document attacks"),
    ("mteb", ["--tasks", "{beir}", "--inject", "noise:4", "--out", "o"], "argument --inject: unknown injection kind 'noise'"),
    *([("mteb", ["--tasks", "NoSuchTaskAnywhere", "--out", "o"], "--tasks NoSuchTaskAnywhere: neither a local BEIR folder"),
       ("mteb", ["--tasks", "VidoreArxivQARetrieval", "--out", "o"], "but the Hub is offline")]
      if importlib.util.find_spec("mteb") else []),  # named MTEB tasks need mteb installed
    # eval/bench_scale.py
    ("bench_scale", ["--sizes", "3000", "1000"], "--sizes 3000 1000: give distinct sizes, smallest first"),
    ("bench_scale", ["--sizes", "10"], "argument --sizes: "),
    # eval/results_doc.py
    ("results_doc", ["--study", "missing-study.json", "--synthetic", "missing-synthetic.json"],
     "neither missing-study.json nor missing-synthetic.json exists: run `make study` and / or `make synth` first"),
    ("results_doc", ["--out", "{beir}"], "argument --out: "),
    ("results_doc", ["--study", "{file}", "--add-text-attack", "{beir}", "{beir}"], "two runs share a folder name"),
    ("results_doc", ["--study", "{file}", "--add-text-attack", "./no-run"], "argument --add-text-attack: './no-run' is not an existing folder"),
    # eval/attack_study.py (more refusals, against a study folder, in test_attack_study.py)
    ("attack_study", ["--study", "{file}"], "holds no retraining study"),
    ("attack_study", [], "results/study holds no retraining study (no plan.json or summary.json): run `make study` first"),
    ("attack_study", ["--study", "{beir}"], "holds no retraining study (no plan.json or summary.json): run `make study` first"),
    ("attack_study", ["--iterations", "0"], "argument --iterations: expected an integer >= 1, got '0'"),
    ("attack_study", ["--queries", "-1"], "argument --queries: expected an integer >= 1, got '-1'"),
    # eval/attack.py
    ("attack", ["--attack", "hotflips"], "argument --attack: invalid choice: 'hotflips'"),
    ("attack", ["--n", "0"], "argument --n: expected an integer >= 1, got '0'"),
    ("attack", ["--length", "-4"], "argument --length: expected an integer >= 1, got '-4'"),
    ("attack", ["--queries", "0"], "argument --queries: expected an integer >= 1, got '0'"),
    ("attack", ["--heads", "maxsim", "topk:k=0"], "argument --heads: pooling head 'topk': k must be an integer >= 1, got 0"),
    ("attack", ["--data", "{beir}", "--heads", "maxsim", "MAXSIM"], "--heads maxsim maxsim names a head twice; give each head once"),
    ("attack", ["--data", "{beir}", "--iterations", "5"], "--iterations 5 tunes HotFlip, but --attack is cluster-text; drop --iterations or pass --attack hotflip or insertion"),
    ("attack", ["--data", "{beir}", "--attack", "stuffing", "--objective", "margin"], "--objective margin tunes HotFlip, but --attack is stuffing"),
    ("attack", ["--data", "{beir}", "--attack", "hotflip", "--position", "sentence"], "--position sentence places insertion snippets, but --attack is hotflip; drop it or pass --attack insertion"),
    ("attack", ["--position", "middle"], "argument --position: invalid choice: 'middle'"),
    ("attack", ["--data", "{beir}", "--attack", "query-text", "--length", "8"], "--length 8 has no effect on --attack query-text"),
    ("attack", ["--data", "nosuchcollection"], "collection 'nosuchcollection' not found: looked for the folder"),
    ("attack", ["--data", "{beir}", "--model", "./missing-model"], "--model ./missing-model: not found (no folder"),
    ("attack", ["--data", "{beir}", "--out", "{file}"], "argument --out: '"),
    # eval/length_sweep.py
    ("length_sweep", ["--poolings", "maxsim", "topk:k=0"], "argument --poolings: pooling head 'topk': k must be an integer >= 1, got 0"),
    ("length_sweep", ["--poolings", "median"], "argument --poolings: unknown pooling head 'median'; valid heads: maxsim"),
    ("length_sweep", ["--poolings", "topk:k=4,k=8"], "parameter 'k' is given twice; give each parameter once"),
    ("length_sweep", ["--kinds", "hrad"], "argument --kinds: unknown injection kind 'hrad'"),
    ("length_sweep", ["--kinds", "gaussian@10"], "the few-document attack KIND@N exists for hard, spike, not gaussian"),
    ("length_sweep", ["--kinds", "spike@0"], "N in KIND@N is the number of attacked documents per query, an integer >= 1"),
    ("length_sweep", ["--ks", "0", "-4"], "argument --ks: expected an integer >= 0, got '-4'"),
    ("length_sweep", ["--ks", "0", "four"], "argument --ks: expected an integer, got 'four'"),
    ("length_sweep", ["--target", "hard=everywhere"], "argument --target: expected KIND=TARGET with KIND one of gaussian, corpus, hard, spike"),
    ("length_sweep", ["--data", "{beir}", "--kinds", "gaussian", "corpus", "hard", "--target", "spike=all"], "--target spike=all names the kind spike, which --kinds (gaussian corpus hard) does not sweep"),
    ("length_sweep", ["--max-queries", "-1"], "argument --max-queries: expected an integer >= 1, got '-1'"),
    ("length_sweep", ["--segments", "0"], "argument --segments: expected 'auto' or an integer >= 1, got '0'"),
    ("length_sweep", ["--spike-tokens", "0"], "argument --spike-tokens: expected an integer >= 1, got '0'"),
    ("length_sweep", ["--pool-blocks", "0"], "argument --pool-blocks: expected an integer >= 1 or 'none', got '0'"),
    ("length_sweep", ["--data", "data/mycoll"], "'data/mycoll' not found here: there is no folder"),
    ("length_sweep", ["--data", "./nowhere/mycoll"], "'./nowhere/mycoll' not found: there is no folder"),
    ("length_sweep", ["--data", "nosuchcollection"], "collection 'nosuchcollection' not found: looked for the folder"),
    ("length_sweep", ["--data", "{beir}", "--split", "dev"], "qrels files present: ['test.tsv']"),
    ("length_sweep", ["--data", "{beir}", "--language", "english"], "--language english filters ViDoRe v2 queries, but --data"),
    ("length_sweep", ["--data", "{beir}", "--model", "someone/missing-model"], "--model someone/missing-model: not found: no folder"),
    ("length_sweep", ["--data", "{beir}", "--model", "./missing-model"], "--model ./missing-model: not found (no folder"),
    ("length_sweep", ["--data", "{beir}", "--out", "{file}"], "argument --out: '"),
    ("length_sweep", ["--data-root", "/nonexistent/collections"], "argument --data-root: '/nonexistent/collections' is not an existing folder"),
    # train/finetune.py
    ("finetune", ["--data", "{beir}", "--pooling", "maxsim", "--pool-k", "4"], "--pool-k sets the k of the topk heads, but --pooling maxsim has no k; drop --pool-k or pass e.g. --pooling topk:k=4"),
    ("finetune", ["--data", "{beir}", "--pooling", "topk:k=4,k=8"], "parameter 'k' is given twice"),
    ("finetune", ["--data", "{beir}", "--scoring-pooling", "median"], "argument --scoring-pooling: unknown pooling head 'median'"),
    ("finetune", ["--data", "{beir}", "--pooling", "softmax", "--pool-tau", "0"], "argument --pool-tau: expected a number > 0, got '0'"),
    ("finetune", ["--data", "{beir}", "--max-steps", "0"], "argument --max-steps: expected an integer >= 1, got '0'"),
    ("finetune", ["--data", "{beir}", "--lr", "-1"], "argument --lr: expected a number > 0, got '-1'"),
    ("finetune", ["--data", "{beir}", "--lora-dropout", "1.5"], "argument --lora-dropout: expected a probability in [0, 1), got '1.5'"),
    ("finetune", ["--data", "{beir}", "--max-steps", "10", "--epochs", "2"], "--max-steps 10 and --epochs 2 both set the length of the run; give one"),
    ("finetune", ["--data", "{beir}", "--warmup-steps", "50"], "--warmup-steps 50 exceeds the 40 steps of the run; lower it"),
    ("finetune", ["--data", "{beir}", "--batch-size", "30", "--gradient-accumulation", "4"], "--batch-size 30 (the global batch) must be a multiple of --gradient-accumulation 4"),
    ("finetune", ["--data", "{beir}", "--projection-dim", "128"], "--projection-init identity needs --projection-dim = the hidden size 384 of minilm, got 128; drop --projection-dim, or pass --projection-init svd"),
    ("finetune", ["--data", "{beir}", "--model", "{bert}", "--hard-negatives", "-2"], "argument --hard-negatives: expected an integer >= 0, got '-2'"),
    ("finetune", ["--data", "vidore/colpali_train_set"], "'vidore/colpali_train_set' not found here: there is no folder"),
    ("finetune", ["--data", "{beir}", "--resume", "/nonexistent/checkpoints/step-3"], "--resume /nonexistent/checkpoints/step-3: not a complete checkpoint folder"),
    ("finetune", ["--data", "{beir}", "--injected-negatives", "none", "spike:4"], "none means no defence; give none alone"),
    ("finetune", ["--data", "{beir}", "--pseudo-queries", "queries"], "argument --pseudo-queries: invalid choice: 'queries'"),
    ("finetune", ["--data", "{beir}", "--adversarial-passages", "gcg:10"], "argument --adversarial-passages: expected KIND:N with KIND one of cluster-text, hotflip, got 'gcg:10' (e.g. hotflip:10)"),
    ("finetune", ["--data", "{beir}", "--adversarial-passages", "hotflip:0"], "argument --adversarial-passages: expected KIND:N with N an integer >= 1"),
    ("finetune", ["--data", "{beir}", "--adversarial-passages", "hotflip:4", "hotflip:8"], "--adversarial-passages hotflip:4 hotflip:8: give each kind once"),
    ("finetune", ["--data", "{beir}", "--adversarial-passages", "cluster-text:10", "--adversarial-passage-refresh", "5"], "--adversarial-passage-refresh sets the HotFlip passages of --adversarial-passages; add hotflip:N"),
    ("finetune", ["--data", "{beir}", "--adversarial-passage-iterations", "5"], "--adversarial-passage-iterations sets the HotFlip passages of --adversarial-passages; add hotflip:N"),
    ("finetune", ["--data", "{beir}", "--adversarial-passages", "cluster-text:4", "--adversarial-passage-positions", "4"], "--adversarial-passage-positions sets the HotFlip passages of --adversarial-passages; add hotflip:N"),
    ("finetune", ["--data", "{beir}", "--adversarial-passages", "hotflip:4", "--adversarial-passage-length", "0"], "argument --adversarial-passage-length: expected an integer >= 1, got '0'"),
    # eval/search.py
    ("search", ["--index", "plaid"], "argument --index: invalid choice: 'plaid' (choose from 'voyager')"),
    ("search", ["--head", "maxsim", "softmax:tau=0"], "argument --head: pooling head 'softmax': tau must be a finite number > 0, got 0.0"),
    ("search", ["--candidates", "0"], "argument --candidates: expected an integer >= 1, got '0'"),
    ("search", ["--kinds", "gaussian"], "argument --kinds: invalid choice: 'gaussian' (choose from 'hard', 'spike')"),
    ("search", ["--budget", "0"], "argument --budget: expected an integer >= 1, got '0'"),
    ("search", ["--data", "nosuchcollection"], "collection 'nosuchcollection' not found: looked for the folder"),
    ("search", ["--data", "{beir}", "--model", "./missing-model"], "--model ./missing-model: not found (no folder"),
    ("search", ["--data", "{beir}", "--out", "{file}"], "argument --out: '"),
    # eval/synthetic_study.py
    ("synthetic_study", ["--lengths", "4"], "the options describe no valid study: every document length must be >= 8"),
    ("synthetic_study", ["--train-queries", "3"], "the options describe no valid study: --train-queries (3) must be >= batch_size (64)"),
    ("synthetic_study", ["--heads", "softmax:tau=0"], "argument --heads: pooling head 'softmax': tau must be a finite number > 0, got 0.0"),
    ("synthetic_study", ["--seeds", "-1"], "argument --seeds: expected an integer >= 0, got '-1'"),
    # eval/finetune_all.py
    ("finetune_all", ["--heads", "maxsim", "topk:k=x"], "argument --heads: pooling head 'topk': parameter k must be int, got 'x'"),
    ("finetune_all", ["--data", "{beir}", "--", "--lr", "0"], "the training options of maxsim are refused by train/finetune.py: argument --lr: expected a number > 0, got '0'"),
    ("finetune_all", ["--data", "{bert}"], "/bert: missing file(s)"),
    # bench scripts and the pool-block check
    ("bench_scoring", ["--documents", "0"], "argument --documents: expected an integer >= 1, got '0'"),
    ("bench_scoring", ["--methods", "floor", "topk:k=0"], "argument --methods: pooling head 'topk': k must be an integer >= 1, got 0"),
    ("bench_scoring", ["--json", "{beir}"], "is a folder: pass a file path such as"),
    ("bench_sweep", ["--kinds", "spikes"], "argument --kinds: unknown injection kind 'spikes'"),
    ("bench_sweep", ["--threads", "0"], "argument --threads: expected an integer >= 1, got '0'"),
    ("bench_train", ["--variants", "maxsim", "exclusive:capacity=0"], "argument --variants: pooling head 'exclusive': capacity must be an integer >= 1, got 0"),
    ("bench_train", ["--variants", "maxsim", "topk:k=4+spike:4,spike:2"], "give each injected-negative kind once"),
    ("bench_train", ["--variants", "maxsim", "topk:k=4+hard-corpus:4"], "hard-corpus needs the fine-tuning loop's corpus bank"),
    ("bench_train", ["--variants", "maxsim+spikes:4"], "argument --variants:"),
    ("bench_train", ["--real-runs", "2", "--real-heads", "maxsim", "maxsim"], "the real runs compare at least two different heads"),
    ("bench_train", ["--real-runs", "-1"], "argument --real-runs:"),
    ("pool_blocks_check", ["--kinds", "hard"], "argument --kinds: invalid choice: 'hard' (choose from 'gaussian', 'corpus')"),
    ("pool_blocks_check", ["--seeds", "0", "1.5"], "argument --seeds: expected an integer, got '1.5'"),
]


@pytest.mark.parametrize("command, argv, expected", BAD_INPUTS, ids=[f"{c}:{' '.join(a)}" for c, a, _ in BAD_INPUTS])
def test_a_bad_input_is_refused_in_one_line_before_anything_loads(command, argv, expected, scripts, files, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # default output folders would appear here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    _forbid_loading(monkeypatch, scripts)
    status = cli.run_command(scripts[command].main, _fill(argv, files), prog=Path(SCRIPTS[command]).name)
    captured = capsys.readouterr()
    assert status == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{Path(SCRIPTS[command]).name}: error: "), captured.err
    assert expected in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert not any(tmp_path.iterdir())  # nothing written


def test_every_installed_command_has_its_refusals_tested():
    """Each subcommand of ``lir-robust`` (lir_robust.commands.main.COMMANDS) has bad inputs in BAD_INPUTS or a refusal
    test in the file named for it: a new command added without one fails here."""
    from lir_robust.commands.main import COMMANDS as INSTALLED

    modules = {module for module, _, _ in INSTALLED.values()}
    covered = {COMMANDS[command][0] for command, _, _ in BAD_INPUTS}
    assert modules - covered == set(REFUSALS_TESTED_ELSEWHERE)
    for module, test_file in REFUSALS_TESTED_ELSEWHERE.items():
        text = (Path(__file__).parent / test_file).read_text()
        assert f"lir_robust.commands import {module}" in text or f"lir_robust.commands.{module}" in text, (module, test_file)
        assert "error: " in text or "UserError" in text, test_file


def test_debug_shows_the_traceback(scripts, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    with pytest.raises(cli.UserError, match="given twice"):
        cli.run_command(scripts["length_sweep"].main, ["--poolings", "topk:k=4,k=8", "--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(cli.UserError, match="must be >= batch_size"):
        cli.run_command(scripts["synthetic_study"].main, ["--train-queries", "3"])


def test_other_errors_keep_their_traceback(monkeypatch):
    def broken(argv):
        raise ZeroDivisionError("a bug, not a user error")

    with pytest.raises(ZeroDivisionError):
        cli.run_command(broken, [])
    assert cli.run_command(lambda argv: {"summary": 1}, []) == 0 and cli.run_command(lambda argv: 3, []) == 3


def test_the_script_itself_exits_2_with_one_line_and_no_traceback(tmp_path):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    environment.pop(cli.DEBUG_ENV, None)
    command = [sys.executable, str(ROOT / "eval" / "synthetic_study.py"), "--lengths", "4", "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "synthetic_study.py: error: the options describe no valid study: every document length must be >= 8 "
        "(support / hard negative patches)"
    )
    result = subprocess.run([*command, "--debug"], capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "Traceback" in result.stderr and "UserError" in result.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ inputs accepted on purpose


def test_inputs_accepted_on_purpose(scripts, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = scripts["length_sweep"].parse_args(["--data", str(files["beir"]), "--poolings", "TOPK:K=4", "Softmax:TAU=0.1",
                                                "--segments", "auto", "--target", "Gaussian=NON-GOLD"])
    assert sweep.poolings == ["topk:k=4", "softmax:tau=0.1"] and sweep.segments == "auto"
    assert sweep.targets["gaussian"] == "non-gold" and sweep.targets["hard"] == "non-gold"
    assert scripts["length_sweep"].parse_args(["--data", str(files["beir"]), "--segments", "3"]).segments == 3
    run = scripts["finetune"].parse_args(["--data", str(files["beir"]), "--pooling", "topk", "--pool-k", "8"])
    assert run.head == "topk:k=8" and run.output_dir == "runs/finetune-topk-k8"
    assert not any(tmp_path.iterdir())


def test_argparse_types():
    assert cli.non_negative_int("0") == 0 and cli.positive_float("1e-3") == 1e-3
    for parse, text in ((cli.positive_int, "0"), (cli.positive_float, "nan"), (cli.positive_float, "inf"),
                        (cli.dropout_probability, "1"), (cli.segments_count, "-1"), (cli.head_spec, "topk:k")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
    assert cli.head_spec("LSE:TAU=0.1,Length_Corrected=TRUE") == "lse:tau=0.1,length_corrected=true"


def test_output_paths_that_exist_are_accepted_and_rewritten(tmp_path):
    """An existing output file (docs/RESULTS.md on a rerun of make results-doc) or folder is accepted; a file where a
    folder is expected, a folder where a file is expected, or a file in place of a parent folder is refused."""
    existing = tmp_path / "RESULTS.md"
    existing.write_text("old\n")
    assert cli.output_file(str(existing)) == existing
    assert cli.output_file(str(tmp_path / "new" / "deeper" / "bench.json")) == tmp_path / "new" / "deeper" / "bench.json"
    assert cli.output_folder(str(tmp_path)) == str(tmp_path)
    for parse, text in ((cli.output_folder, existing), (cli.output_file, tmp_path), (cli.output_file, existing / "x.json")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(str(text))


# ------------------------------------------------------------------ colpali-engine models: not found vs unreachable


def _response(status: int):
    import httpx2

    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/vidore/x"))


@pytest.fixture
def online(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return huggingface_hub


def _model_info_raising(monkeypatch, hub, error):
    def model_info(*args, **kwargs):
        raise error

    monkeypatch.setattr(hub.HfApi, "model_info", model_info)


def test_a_misspelled_model_is_not_found_not_unreachable(online, monkeypatch):
    pytest.importorskip("colpali_engine")
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    import lir_robust.patches.colpali as patches

    for error in (RepositoryNotFoundError("Repository Not Found", response=_response(404)),
                  RevisionNotFoundError("Revision Not Found", response=_response(404))):
        _model_info_raising(monkeypatch, online, error)
        with pytest.raises(patches.ModelNotFoundError) as raised:
            patches.load_colpali("vidore/colqwen2-v9.9-misspelled")
        message = str(raised.value)
        assert "not found: there is no folder" in message and "has no such model or revision" in message
        assert "unreachable" not in message and cli.is_user_error(raised.value)


def test_an_unreachable_hub_is_unreachable_for_models(online, monkeypatch):
    pytest.importorskip("colpali_engine")
    import httpx2

    import lir_robust.patches.colpali as patches

    _model_info_raising(monkeypatch, online, httpx2.ConnectError("[Errno -2] Name or service not known"))
    with pytest.raises(patches.HubUnreachableError, match="Hub is unreachable.*ConnectError"):
        patches.load_colpali("vidore/colqwen2-v1.0-not-cached")


def test_from_pretrained_errors_are_classified_through_their_cause(online, monkeypatch):
    """transformers wraps huggingface_hub's errors in an OSError; the cause decides the message."""
    pytest.importorskip("colpali_engine")
    from types import SimpleNamespace

    from huggingface_hub.errors import RepositoryNotFoundError

    import lir_robust.patches.colpali as patches

    monkeypatch.setattr(online.HfApi, "model_info", lambda *args, **kwargs: None)  # the probe passes

    def from_pretrained_raising(cause):
        def from_pretrained(*args, **kwargs):
            raise OSError("vidore/x is not a local folder and is not a valid model identifier") from cause
        return from_pretrained

    for cause, expected in ((RepositoryNotFoundError("Repository Not Found", response=_response(404)), patches.ModelNotFoundError),
                            (ConnectionError("connection reset"), patches.HubUnreachableError)):
        fake = SimpleNamespace(from_pretrained=from_pretrained_raising(cause))
        monkeypatch.setattr(patches, "_colpali_models", lambda: SimpleNamespace(ColQwen2=fake, ColQwen2Processor=fake))
        with pytest.raises(expected):
            patches.load_colpali("vidore/colqwen2-x")


@pytest.mark.parametrize("value, offline", [("1", True), ("on", True), (" TRUE ", True), ("yes", True), ("0", False), ("", False), ("off", False)])
def test_every_layer_obeys_the_offline_flag_as_huggingface_hub_spells_it(monkeypatch, tmp_path, value, offline):
    """HF_HUB_OFFLINE, read at each call, stops every Hub reading of a name before any network call: the model check
    of every command, data by Hub name, colpali-engine models, weights fingerprints. Each is observed through what it
    does (refuses in one line, or goes on to the network, which is faked here), never through the flag reader."""
    import huggingface_hub
    from huggingface_hub import constants

    from lir_robust.core.errors import DataError, HubError, UserError
    from lir_robust.data import load_retrieval_set
    from lir_robust.encoders.fingerprint import model_fingerprint

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.chdir(tmp_path)
    reached = []

    def network(*args, **kwargs):
        reached.append(args)
        raise ConnectionError("no network in tests")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", network)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", network, raising=False)
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", network)

    # the commands' model check: offline, an uncached Hub id is refused at once; online it is left to the loaders
    if offline:
        with pytest.raises(UserError, match="HF_HUB_OFFLINE is set"):
            cli.check_model("someone/not-cached-model")
    else:
        cli.check_model("someone/not-cached-model")
    # data by Hub name: offline says so without asking; online it asks (and the faked network fails)
    with pytest.raises((DataError, HubError)) as raised:
        load_retrieval_set("someone/not-a-local-folder")
    assert ("HF_HUB_OFFLINE" in str(raised.value)) is offline
    # weights fingerprints of a Hub id: offline they never ask the Hub for a revision
    reached.clear()
    model_fingerprint("someone/not-cached-model")
    assert (reached == []) or not offline
