"""train/publish.py and `make publish`, offline: the dry run, a push with no network (HF_HUB_OFFLINE=1, an endpoint that
refuses, an endpoint that never answers) ends within 30 s with one clear message and changes nothing local, the
options reach the Hub API, and a token set in HF_TOKEN is never printed, logged or written."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lir_robust import hub


from lir_robust.commands import cli
ROOT = Path(__file__).resolve().parents[1]
FAKE_TOKEN = "hf_lirRobustFakeToken0123456789abcdefXYZ"
BASE_ID = "tiny-org/colqwen2-base"
PROJECT_URL = "https://github.com/alice/lir-robust"


from lir_robust.commands import publish  # noqa: E402 - the command behind train/publish.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A colpali-engine run folder: a LoRA adapter on a tiny random ColQwen2 saved by training.save_checkpoint."""
    pytest.importorskip("colpali_engine")
    from peft import LoraConfig, get_peft_model

    from lir_robust.core.files import write_json_atomic
    from lir_robust.patches.colpali import load_colpali, lora_target_modules
    from lir_robust.scoring.pooling import parse_head
    from lir_robust.training.runs import save_checkpoint
    from tiny_colpali import save_tiny_colqwen2

    root = tmp_path_factory.mktemp("publish")
    base = save_tiny_colqwen2(root / "base")
    model, processor = load_colpali(base, device="cpu")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_modules("colqwen2"), init_lora_weights="gaussian")
    run = root / "run"
    save_checkpoint(get_peft_model(model, lora), processor, run / "model", parse_head("topk:k=2"),
                    {"family": "colqwen2", "model": str(base), "head": "topk:k=2"})
    write_json_atomic(run / "summary.json", {"step": 0})
    return run


def _digest(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _options(checkpoint: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--repo", "alice/robust-colqwen2", "--license", "mit",
            "--base-model", BASE_ID, "--project-url", PROJECT_URL, *extra]


@pytest.fixture
def fake_token(tmp_path, monkeypatch):
    """HF_TOKEN set to a fake value; the login cache points into tmp (no real token is ever read)."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    return FAKE_TOKEN


@pytest.fixture
def online(monkeypatch):
    """huggingface_hub allowed to go online (conftest sets HF_HUB_OFFLINE=1 for every other test)."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return constants


def _no_token_anywhere(token: str, texts: list[str], folders: list[Path]) -> None:
    for text in texts:
        assert token not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert token.encode() not in path.read_bytes(), path


# ------------------------------------------------------------------------------------------------------------------


def test_dry_run_writes_the_validated_folder_without_network(checkpoint, tmp_path, fake_token, capsys, monkeypatch):
    import huggingface_hub.utils._http as http

    def no_network(*args, **kwargs):
        raise AssertionError("a dry run touched the network")

    monkeypatch.setattr(http, "get_session", no_network)
    out = tmp_path / "dry"
    assert cli.run_command(publish.main, _options(checkpoint, "--dry-run", str(out))) == 0
    assert capsys.readouterr().out.strip() == f"wrote: {out}"
    report = hub.validate_publish_folder(out)
    assert report["family"] == "colpali" and report["head"] == "topk:k=2"
    assert set(report["files"]) == {"README.md", "adapter_config.json", "adapter_model.safetensors", "pooling.json",
                                    "processor_config.json", "tokenizer.json", "tokenizer_config.json"}
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == BASE_ID
    # the same command again refuses to write into the (now used) folder, and changes nothing in it
    before = _digest(out)
    assert cli.run_command(publish.main, _options(checkpoint, "--dry-run", str(out))) == 2
    assert "not empty" in capsys.readouterr().err and _digest(out) == before


def test_user_errors_are_one_line_with_status_two(checkpoint, tmp_path, capsys):
    cases = [
        (["--checkpoint", str(checkpoint), "--repo", "alice/x", "--license", "mit", "--project-url", PROJECT_URL,
          "--dry-run", str(tmp_path / "a")], "--base-model OWNER/NAME"),
        (["--checkpoint", str(checkpoint), "--repo", "alice/x", "--license", "apache 2", "--base-model", BASE_ID,
          "--project-url", PROJECT_URL, "--dry-run", str(tmp_path / "a")], "did you mean apache-2.0?"),
        (_options(checkpoint, "--project-url", "github.com/alice", "--dry-run", str(tmp_path / "a")), "--project-url"),
        (_options(tmp_path / "missing"), "--checkpoint"),
        (_options(checkpoint, "--results", str(tmp_path / "none.json"), "--dry-run", str(tmp_path / "b")), "no such file"),
        (["--checkpoint", str(checkpoint), "--repo", "alice/x"], "--license"),
    ]
    for argv, expected in cases:
        assert cli.run_command(publish.main, argv, prog="publish.py") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("publish.py: error:") and expected in err, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _silent_server():
    """A socket that accepts connections and never answers (the kernel completes the handshake)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    return server


@pytest.mark.parametrize("network", ["offline", "refused", "silent"])
def test_a_push_without_network_ends_fast_with_one_message_and_changes_nothing(
    network, checkpoint, tmp_path, fake_token, online, monkeypatch, capsys, caplog
):
    dry = tmp_path / "dry"
    hub.prepare_publish_folder(checkpoint, dry, repo_id="alice/robust-colqwen2", license="mit", base_model=BASE_ID,
                               project_url=PROJECT_URL)
    before = {"checkpoint": _digest(checkpoint), "dry": _digest(dry)}

    def built(*args, **kwargs):
        raise AssertionError("the folder was built before the Hub was asked")

    monkeypatch.setattr(hub.push, "prepare_publish_folder", built)  # the Hub is checked first: nothing is built
    server = None
    if network == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(online, "HF_HUB_OFFLINE", True)
    elif network == "refused":
        monkeypatch.setattr(online, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    else:
        server = _silent_server()
        monkeypatch.setattr(online, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    caplog.set_level(logging.DEBUG)

    def hung(signum, frame):
        raise AssertionError("the push was still waiting after 30 s")

    previous = signal.signal(signal.SIGALRM, hung)  # a hang fails the test instead of blocking the suite
    signal.alarm(30)
    started = time.perf_counter()
    try:
        status = cli.run_command(publish.main, _options(checkpoint, "--timeout", "2"), prog="publish.py")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if server is not None:
            server.close()
    elapsed = time.perf_counter() - started
    captured = capsys.readouterr()
    assert status == 2 and elapsed < 30
    assert captured.err.count("\n") == 1 and captured.err.startswith("publish.py: error: cannot ")
    assert ("HF_HUB_OFFLINE" if network == "offline" else "unreachable") in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert {"checkpoint": _digest(checkpoint), "dry": _digest(dry)} == before
    _no_token_anywhere(fake_token, [captured.out, captured.err, caplog.text], [tmp_path, checkpoint])


def test_the_command_line_push_with_an_unreachable_hub_is_one_line_and_never_shows_the_token(checkpoint, tmp_path):
    environment = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": FAKE_TOKEN,
                   "HF_HOME": str(tmp_path / "hf-home"), "LIR_ROBUST_DEBUG": "0",
                   "PYTHONPATH": str(ROOT)}  # the wrapper imports this checkout's package
    log = tmp_path / "publish.log"
    started = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run([sys.executable, str(ROOT / "train" / "publish.py"), *_options(checkpoint)], env=environment,
                              stdout=handle, stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT)
    elapsed = time.perf_counter() - started
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()  # nothing before the error: no progress bar, log line or warning of a build
    assert len(lines) == 1 and "error:" in lines[0], done.stderr
    assert "unreachable" in lines[0] and "127.0.0.1:9" in lines[0] and "Traceback" not in done.stderr
    assert elapsed < 30 + 15  # the command's own wait is bounded by --timeout (10 s); the rest is Python start-up
    _no_token_anywhere(FAKE_TOKEN, [done.stderr, log.read_text()], [tmp_path])


def test_a_push_without_a_token_says_how_to_log_in(checkpoint, tmp_path, online, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(online, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    assert cli.run_command(publish.main, _options(checkpoint), prog="publish.py") == 2
    assert "hf auth login" in capsys.readouterr().err


def test_the_options_reach_the_hub_api(checkpoint, tmp_path, fake_token, online, monkeypatch, capsys, caplog):
    """A push against a stand-in for HfApi: the repo is created (private), the branch too, the validated folder is
    uploaded with the commit message / PR flag, and the token is the one get_token() returns."""
    import huggingface_hub

    calls: list[tuple] = []

    class FakeApi:
        def __init__(self, token=None, **_):
            calls.append(("init", token == fake_token))

        def create_repo(self, repo_id, private, exist_ok, repo_type):
            calls.append(("create_repo", repo_id, private, exist_ok, repo_type))

        def create_branch(self, repo_id, branch, exist_ok):
            calls.append(("create_branch", repo_id, branch))

        def upload_folder(self, repo_id, folder_path, repo_type, revision, create_pr, commit_message, delete_patterns):
            calls.append(("upload_folder", repo_id, revision, create_pr, commit_message, delete_patterns))
            calls.append(("files", sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())))
            return type("CommitInfo", (), {"pr_url": "https://hub.example/alice/robust-colqwen2/discussions/1", "commit_url": None})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(hub.push, "_probe", lambda token, timeout, repo_id: "alice" if token == fake_token else None)
    caplog.set_level(logging.DEBUG)
    argv = _options(checkpoint, "--private", "--revision", "robust", "--commit-message", "topk adapter", "--create-pr")
    assert cli.run_command(publish.main, argv) == 0
    assert capsys.readouterr().out.strip() == "published: https://hub.example/alice/robust-colqwen2/discussions/1"
    assert calls[:4] == [
        ("init", True),
        ("create_repo", "alice/robust-colqwen2", True, True, "model"),
        ("create_branch", "alice/robust-colqwen2", "robust"),
        ("upload_folder", "alice/robust-colqwen2", "robust", True, "topk adapter", ["*"]),
    ]
    assert "adapter_model.safetensors" in calls[4][1] and "README.md" in calls[4][1] and "pooling.json" in calls[4][1]
    assert fake_token not in caplog.text


def test_make_publish_goes_online_unless_hf_hub_offline_is_set_by_the_user(tmp_path):
    def dry(*arguments: str, **environment: str) -> str:
        env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"} | environment
        done = subprocess.run(["make", "-n", "publish", *arguments], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    assert "HF_HUB_OFFLINE=0 " in dry("CHECKPOINT=c", "REPO=u/n")
    assert "HF_HUB_OFFLINE=1 " in dry("CHECKPOINT=c", "REPO=u/n", HF_HUB_OFFLINE="1")
    assert "HF_HUB_OFFLINE=1 " in dry("CHECKPOINT=c", "REPO=u/n", "HF_HUB_OFFLINE=1")
    assert "--checkpoint c --repo u/n --license mit" in dry("CHECKPOINT=c", "REPO=u/n", "PUBLISH_ARGS=--license mit")
    done = subprocess.run(["make", "publish", "REPO=u/n"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "set CHECKPOINT=" in done.stderr


def test_validation_refuses_a_folder_that_holds_the_token(checkpoint, tmp_path, fake_token):
    folder = hub.prepare_publish_folder(checkpoint, tmp_path / "dry", repo_id="alice/x", license="mit", base_model=BASE_ID,
                                        project_url=PROJECT_URL)
    (folder / "notes.txt").write_text(f"pushed with {fake_token}")
    with pytest.raises(hub.HubError) as error:
        hub.validate_publish_folder(folder)
    assert "the Hub token appears in notes.txt" in str(error.value) and fake_token not in str(error.value)


def test_a_dry_run_with_the_study_summary_puts_its_rows_and_entries_on_the_card(checkpoint, tmp_path, capsys):
    """--study takes the study's own summary.json: the card's text shows the rows of the checkpoint's head (topk:k=2,
    trained without injected negatives), labelled as the study's own models; the model-index gains none of them."""
    from huggingface_hub import ModelCard

    from test_hub import CRANFIELD_RETRAINED, study_summary

    study = tmp_path / "summary.json"
    study.write_text(json.dumps(study_summary("topk:k=2")))
    out = tmp_path / "dry"
    assert cli.run_command(publish.main, _options(checkpoint, "--study", str(study), "--dry-run", str(out))) == 0
    assert capsys.readouterr().out.strip() == f"wrote: {out}"
    card = ModelCard.load(out / "README.md")
    assert CRANFIELD_RETRAINED in card.text and "injected negatives" not in card.text
    assert "the study's own models, not this checkpoint" in card.text
    studied = [e for e in card.data.eval_results or [] if (e.metric_args or {}).get("protocol")]
    assert studied == [] and {e.dataset_type for e in card.data.eval_results or []} <= {"eval"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"plan": {}, "rows": [{"head": "maxsim"}]}))
    assert cli.run_command(publish.main, _options(checkpoint, "--study", str(bad), "--dry-run", str(tmp_path / "no")),
                           prog="publish.py") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks" in err and not (tmp_path / "no").exists()


def test_a_card_names_the_training_head_and_the_scoring_head_when_they_differ(checkpoint, tmp_path):
    """The recipe trains through one head and scores with another (--scoring-pooling): the card's usage and limits use
    the scoring head (pooling.json), its training record names both."""
    import shutil

    from lir_robust.core.files import write_json_atomic
    from lir_robust.scoring.pooling import parse_head, save_pooling_json

    run = tmp_path / "run"
    shutil.copytree(checkpoint, run)
    save_pooling_json(run / "model", parse_head("topk:k=2"), {"family": "colqwen2", "head": "softmax:tau=1.0",
                                                               "scoring_pooling": "topk:k=2"})
    write_json_atomic(run / "summary.json", {"step": 0})
    out = tmp_path / "dry"
    assert cli.run_command(publish.main, _options(run, "--dry-run", str(out))) == 0
    card = (out / "README.md").read_text()
    assert "| pooling head (training) | softmax:tau=1.0 |" in card
    assert "| scoring head, when not the training head | topk:k=2 |" in card
    assert "scoring with `topk:k=2`" in card and "trained with `" not in card
