"""lir_robust.hub on tiny fine-tuned checkpoints of each family (text / PyLate, ColQwen2, ColPali), offline.

The dry-run folder holds every file its family's loader needs; its card parses with huggingface_hub and carries the
head, the results table and the model-index; loading the folder, and the same files as a Hub-cache snapshot by id,
scores as the checkpoint did; the family's own library loads it. Loading by id fails with one clear message when
the id is neither cached nor reachable.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

from lir_robust import hub
from lir_robust.commands.cli import is_user_error
from lir_robust.scoring.scorer import score

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
IMAGE_QUERIES = ["what is the revenue growth", "show the solar energy chart", "which city map", "blue car picture"]
TEXT_QUERIES = ["what is known about shock waves ?", "heat transfer to a flat plate", "wing lift and drag"]
TEXT_DOCUMENTS = ["shock waves in supersonic flow past a blunt body .", "heat transfer in the boundary layer of a hot plate .",
                  "the wing lift and drag of an aircraft wing in a wind tunnel .", "flutter of a flat panel ."]


def _pylate_ready() -> bool:
    try:
        from lir_robust.patches import pylate as pylate_patch
    except ImportError:
        return False
    return all(hasattr(pylate_patch, name) for name in ("export_pylate", "is_pylate_folder", "pooled_scores"))


NO_PYLATE = "lir_robust.patches.pylate (export_pylate / is_pylate_folder / pooled_scores, issue 11) is not importable yet"
FAMILIES = [
    pytest.param("text", marks=pytest.mark.skipif(not _pylate_ready(), reason=NO_PYLATE)),
    "colqwen2",
    "colpali",
]
PROJECT_URL = "https://github.com/alice/lir-robust"
BASE_IDS = {"text": "tiny-org/bert-base", "colqwen2": "tiny-org/colqwen2-base", "colpali": "tiny-org/colpali-base"}
HEADS = {"text": "lse:tau=0.1", "colqwen2": "topk:k=2", "colpali": "softmax:tau=0.1"}


@pytest.fixture(autouse=True)
def project_url(monkeypatch):
    """lir-robust's public URL as the installed package's metadata would name it (the checkout's names none)."""
    import lir_robust.hub.folder as folder

    monkeypatch.setattr(folder, "installed_project_url", lambda: PROJECT_URL)
    return PROJECT_URL


# ------------------------------------------------------------------------------------------------------------------
# Tiny fine-tuned checkpoints, each with a length sweep measured on it (built once per module, on demand)
# ------------------------------------------------------------------------------------------------------------------


def _finetune_module():
    from lir_robust.commands import finetune

    return finetune


def _train(argv: list[str]) -> None:
    from accelerate.state import AcceleratorState, GradientState

    finetune = _finetune_module()
    try:
        finetune.train(finetune.parse_args(argv))
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def _sweep(model: Path, data: Path, out: Path, cache: Path, **options) -> None:
    from lir_robust.sweep.pipeline import SweepConfig, run_length_sweep

    config = SweepConfig(model=str(model), data=str(data), heads=["maxsim"], kinds=["gaussian", "hard"], ks=[0, 2],
                         cache_dir=str(cache), encode_batch_size=2, segments=1, **options)
    run_length_sweep(config, out, show_progress=False)


def _build(family: str, root: Path) -> dict:
    """A base model folder, a run fine-tuned from it (one or two steps) and its sweep in ``run/length-sweep``."""
    from retrieval_fixtures import write_beir, write_vidore_v2

    root.mkdir(parents=True, exist_ok=True)
    run = root / "run"
    if family == "text":
        from finetune_fixtures import save_dropout_bert, write_tiny_beir

        base = save_dropout_bert(root / "base", dropout=0.0)
        _train(["--model", str(base), "--data", str(write_tiny_beir(root / "train", documents=8)), "--output-dir", str(run),
                "--pooling", HEADS[family], "--max-steps", "2", "--projection-dim", "16", "--projection-init", "svd", "--lora-r", "4",
                "--lora-alpha", "8", "--batch-size", "4", "--validation-pairs", "0", "--query-max-length", "12",
                "--train-document-max-length", "24", "--document-max-length", "24", "--save-every", "0", "--lr", "5e-3"])
        _sweep(run, write_beir(root / "eval"), run / "length-sweep", root / "cache")
    else:
        import datasets
        from tiny_colpali import save_tiny_colpali, save_tiny_colqwen2, tiny_images

        base = (save_tiny_colqwen2 if family == "colqwen2" else save_tiny_colpali)(root / "base")
        features = datasets.Features({"query": datasets.Value("string"), "image": datasets.Image()})
        datasets.Dataset.from_dict({"query": IMAGE_QUERIES, "image": tiny_images(4)}, features=features).save_to_disk(root / "pairs")
        _train(["--model", str(base), "--data", str(root / "pairs"), "--output-dir", str(run), "--pooling", HEADS[family],
                "--max-steps", "1", "--batch-size", "4", "--validation-pairs", "0", "--save-every", "0", "--lr", "1e-3"])
        _sweep(run, write_vidore_v2(root / "eval", pages=4), run / "length-sweep", root / "cache", language="english")
    return {"family": family, "base": base, "run": run, "root": root}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """``checkpoints(family)``: the tiny fine-tuned run of that family (built on first use)."""
    built: dict[str, dict] = {}
    root = tmp_path_factory.mktemp("hub-checkpoints")

    def get(family: str) -> dict:
        if family not in built:
            built[family] = _build(family, root / family)
        return built[family]

    return get


@pytest.fixture(scope="module")
def dry_runs(checkpoints, tmp_path_factory):
    """``dry_runs(family)``: the dry-run folder of that family's checkpoint (repo alice/robust-<family>)."""
    made: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("hub-dry-runs")

    def get(family: str) -> Path:
        if family not in made:
            made[family] = hub.prepare_publish_folder(
                checkpoints(family)["run"], root / family, repo_id=f"alice/robust-{family}", license="mit",
                base_model=BASE_IDS[family],
            )
        return made[family]

    return get


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = COMMIT) -> Path:
    """Lay ``folder`` out as the Hub cache does for ``repo_id`` (snapshots/<commit>/..., refs/main).

    An adapter-only repo also gets the marker ``.no_exist/<commit>/config.json`` that huggingface_hub writes when the
    Hub answers 404 for it: colpali-engine's own online load probes config.json first, so a cache filled by it holds
    the marker, and transformers then knows offline that the repo has no config.json (instead of "not cached").
    """
    repository = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repository / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repository / "refs").mkdir(parents=True, exist_ok=True)
    (repository / "refs" / "main").write_text(commit)
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        (repository / ".no_exist" / commit).mkdir(parents=True, exist_ok=True)
        (repository / ".no_exist" / commit / "config.json").touch()
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hub cache in tmp, offline, used by huggingface_hub, transformers and lir_robust.hub."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _scores(spec: str | Path, family: str) -> tuple[torch.Tensor, str]:
    """Scores of a few queries against a few documents with the encoder load_encoder gives for ``spec``, and its head."""
    from lir_robust.encoders.load import load_encoder

    encoder = load_encoder(str(spec), show_progress=False, device="cpu")
    if family == "text":
        queries, documents = TEXT_QUERIES, TEXT_DOCUMENTS
    else:
        from tiny_colpali import tiny_images

        queries, documents = IMAGE_QUERIES[:3], tiny_images(3, seed=5)
    head = encoder.pooling
    return score(encoder.encode_queries(queries), encoder.encode_documents(documents), head), head.spec()


def _tree_files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


# ------------------------------------------------------------------------------------------------------------------
# The dry-run folder and its card
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_dry_run_folder_holds_every_file_and_a_card_with_head_table_and_model_index(family, checkpoints, dry_runs):
    from huggingface_hub import ModelCard

    built, folder = checkpoints(family), dry_runs(family)
    model_dir = built["run"] / "model"
    files = _tree_files(folder)
    assert {"README.md", "pooling.json", "retained_ndcg10.png"} <= files
    if family == "text":
        assert {"modules.json", "config_sentence_transformers.json", "config.json", "tokenizer_config.json"} <= files
        assert any(name.startswith("1_Dense/") for name in files)
        assert any(name in files for name in ("model.safetensors", "pytorch_model.bin"))
    else:  # adapter-only: exactly the checkpoint's files (its README replaced by the card) and the figure
        assert files == (_tree_files(model_dir) | {"README.md", "retained_ndcg10.png"})
        assert (folder / "adapter_model.safetensors").read_bytes() == (model_dir / "adapter_model.safetensors").read_bytes()
        adapter, original = (json.loads((where / "adapter_config.json").read_text()) for where in (folder, model_dir))
        assert adapter.pop("base_model_name_or_path") == BASE_IDS[family]
        assert original.pop("base_model_name_or_path") == str(built["base"])
        assert adapter == original  # only the base changed
    assert json.loads((folder / "pooling.json").read_text())["spec"] == HEADS[family]

    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.base_model == BASE_IDS[family] and data.license == "mit"
    if family == "text":
        assert data.library_name == "PyLate" and data.pipeline_tag == "sentence-similarity"
        assert {"ColBERT", "PyLate", "sentence-transformers"} <= set(data.tags)
    else:
        assert data.library_name == "colpali" and data.pipeline_tag == "visual-document-retrieval"
        assert {"colpali", "vidore"} <= set(data.tags)
    head_name = HEADS[family].split(":")[0]
    assert {"lir-robust", "late-interaction", head_name} <= set(data.tags)

    # the model-index holds, for every head of the sweep, the clean nDCG@10 and the retained share at K = 2, equal to
    # the ratio of the sweep's mean nDCG@10 at K = 2 and at K = 0 (computed here from the means)
    results = json.loads((built["run"] / "length-sweep" / "results.json").read_text())
    assert data.model_name == f"alice/robust-{family}"
    retained = {(e.metric_args["head"], e.metric_args["kind"]): e for e in data.eval_results if e.metric_type == "retained_ndcg_at_10"}
    assert set(retained) == {(head, kind) for head in results["heads"] for kind in ("gaussian", "hard")}
    assert HEADS[family] in results["heads"]  # the sweep added the checkpoint's own head
    for (head, kind), entry in retained.items():
        by_k = results["metrics"][head][kind]["by_k"]
        clean, at_two = by_k["0"]["mean"]["ndcg@10"], by_k["2"]["mean"]["ndcg@10"]
        assert entry.metric_args["K"] == 2 and entry.metric_args["clean_ndcg_at_10"] == pytest.approx(clean, abs=1e-4)
        assert entry.metric_value == pytest.approx(at_two / clean, abs=1e-4)
    clean_entries = {e.metric_args["head"]: e.metric_value for e in data.eval_results if e.metric_type == "ndcg_at_10"}
    assert clean_entries == {head: pytest.approx(results["metrics"][head]["gaussian"]["by_k"]["0"]["mean"]["ndcg@10"], abs=1e-4)
                             for head in results["heads"]}

    text = card.text
    assert f"## Pooling head: `{HEADS[family]}`" in text
    assert "| head | nDCG@10 K=0 |" in text and f"| {HEADS[family]} | " in text  # the sweep's results table
    assert "![Retained nDCG@10 against K, one line per head](retained_ndcg10.png)" in text
    assert "```bibtex" in text and "2604.05253" in text and "Spike Hijacking in Late-Interaction Retrieval" in text
    assert f'load_encoder("alice/robust-{family}")' in text
    assert ('models.ColBERT("alice/robust-text")' in text) if family == "text" else (".from_pretrained(\"alice/robust-" in text)
    # what a Hub user needs beside the numbers: the project, how to install it, the data, the language, the versions,
    # the settings a PyLate user must match, the citations, the limits, and notes on how little was measured
    from lir_robust.hub.sweep_results import is_dataset_identifier

    assert f"[lir-robust]({PROJECT_URL})" in text and f'pip install "lir-robust @ git+{PROJECT_URL}"' in text
    assert data.language == (["en"] if family == "text" else ["en"])  # the sweep's language (english) or English
    assert data.datasets and all(is_dataset_identifier(name) for name in data.datasets) and "eval" in data.datasets
    assert all(is_dataset_identifier(entry.dataset_type) for entry in data.eval_results)
    assert "## Framework versions" in text and "| torch | " in text and "## Limitations" in text
    assert "khattab2020colbert" in text and ("chaffin2025pylate" in text) == (family == "text")
    assert ("faysse2025colpali" in text) == (family != "text")
    assert "**Few queries:** this table comes from only" in text  # the fixture's sweep has a handful of queries
    assert "**Short run:**" in text  # and its training one or two steps
    if family == "text":
        assert "## Settings" in text
        for setting in ("query_prefix", "document_prefix", "query_length", "document_length", "do_query_expansion",
                        "embedding_dim"):
            assert f"| {setting} | `" in text
        assert "| embedding_dim | `16` |" in text
    else:
        assert "## Settings" not in text
    for published in ("README.md", "pooling.json"):  # no local path of this machine is published
        assert str(built["root"]) not in (folder / published).read_text() and "/tmp/" not in (folder / published).read_text()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_folder_and_its_cached_snapshot_by_id_score_as_the_checkpoint(family, checkpoints, dry_runs, hub_cache):
    built, folder = checkpoints(family), dry_runs(family)
    put_in_hub_cache(hub_cache, BASE_IDS[family], built["base"])  # an adapter's base resolves by its Hub id
    put_in_hub_cache(hub_cache, f"alice/robust-{family}", folder)
    expected, head = _scores(built["run"], family)
    assert head == HEADS[family]
    for spec in (folder, f"alice/robust-{family}"):
        scores, loaded_head = _scores(spec, family)
        assert loaded_head == head
        assert torch.allclose(scores, expected, atol=1e-5), spec


@pytest.mark.parametrize("family", [family for family in FAMILIES if getattr(family, "values", (family,))[0] != "text"])
def test_colpali_engine_loads_the_published_adapter(family, checkpoints, dry_runs, hub_cache):
    from colpali_engine import models

    from lir_robust.patches.colpali import FAMILIES as CLASSES, patch_processor
    from tiny_colpali import tiny_images

    built, folder = checkpoints(family), dry_runs(family)
    put_in_hub_cache(hub_cache, BASE_IDS[family], built["base"])
    snapshot = put_in_hub_cache(hub_cache, f"alice/robust-{family}", folder)
    model_class, processor_class, _ = (getattr(models, name) if index < 2 else name for index, name in enumerate(CLASSES[family]))
    expected, _ = _scores(built["run"], family)
    for source in (str(folder), f"alice/robust-{family}"):  # colpali-engine's own calls, as the card shows them
        model = model_class.from_pretrained(source, attn_implementation="eager").eval()
        processor = patch_processor(processor_class.from_pretrained(source), HEADS[family])
        queries, pages = processor.process_queries(IMAGE_QUERIES[:3]), processor.process_images(tiny_images(3, seed=5))
        with torch.no_grad():
            scores = processor.score(list(model(**queries)), list(model(**pages)))
        assert torch.allclose(scores, expected, atol=1e-5), source
    assert (snapshot / "adapter_config.json").is_file()


@pytest.mark.parametrize("family", [family for family in FAMILIES if getattr(family, "values", (family,))[0] != "text"])
def test_load_colpali_by_hub_id_scores_with_the_head_of_its_snapshot(family, checkpoints, dry_runs, hub_cache):
    """load_colpali("owner/name") reads pooling.json from the id's snapshot in the local Hub cache (as it does for a
    folder) instead of scoring with MaxSim; a cached repo without pooling.json (the base) still scores with MaxSim."""
    from lir_robust.patches.colpali import load_colpali
    from tiny_colpali import tiny_images

    built, folder = checkpoints(family), dry_runs(family)
    put_in_hub_cache(hub_cache, BASE_IDS[family], built["base"])
    put_in_hub_cache(hub_cache, f"alice/robust-{family}", folder)
    expected, _ = _scores(built["run"], family)
    model, processor = load_colpali(f"alice/robust-{family}", device="cpu")
    assert processor.pooling_head.spec() == HEADS[family]
    queries, pages = processor.process_queries(IMAGE_QUERIES[:3]), processor.process_images(tiny_images(3, seed=5))
    with torch.no_grad():
        query_embeddings, page_embeddings = list(model(**queries)), list(model(**pages))
    assert torch.allclose(processor.score(query_embeddings, page_embeddings), expected, atol=1e-5)
    maxsim = score(query_embeddings, page_embeddings, "maxsim")
    assert not torch.allclose(maxsim, expected, atol=1e-3)  # the head matters here: MaxSim would have scored otherwise
    _, base_processor = load_colpali(BASE_IDS[family], device="cpu")
    assert base_processor.pooling_head.spec() == "maxsim"


def test_load_colpali_downloads_a_pooling_json_it_has_not_cached(tmp_path, hub_cache, monkeypatch, caplog):
    """Online, a repo's pooling.json that is not in the cache is fetched (a stand-in for hf_hub_download); a repo
    without one (404) scores with MaxSim silently; a Hub failing now scores with MaxSim and says so."""
    import huggingface_hub
    import huggingface_hub.constants as constants

    from lir_robust.patches import colpali as colpali_patch
    from lir_robust.scoring.pooling import parse_head, save_pooling_json

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    snapshot = tmp_path / "snapshot"
    save_pooling_json(snapshot, parse_head("lse:tau=0.2"))
    calls = []

    class RemoteEntryNotFoundError(Exception):
        pass

    def hf_hub_download(repo_id, filename, revision=None, etag_timeout=None, **_):
        calls.append((repo_id, filename, revision, etag_timeout))
        if repo_id == "alice/robust":
            return str(snapshot / filename)
        raise RemoteEntryNotFoundError("404") if repo_id == "vidore/plain" else ConnectionError("refused")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    caplog.set_level("WARNING")
    assert colpali_patch._hub_head("alice/robust", "v1", 3.0).spec() == "lse:tau=0.2"
    assert colpali_patch._hub_head("vidore/plain", None, 3.0) is None and "pooling.json" not in caplog.text
    assert colpali_patch._hub_head("vidore/down", None, 3.0) is None and "scoring with maxsim" in caplog.text
    assert calls[0] == ("alice/robust", "pooling.json", "v1", 3.0)


@pytest.mark.skipif(not _pylate_ready(), reason=NO_PYLATE)
def test_pylate_loads_the_published_text_model(checkpoints, dry_runs, hub_cache):
    from pylate import models

    from lir_robust.patches.pylate import pooled_scores

    folder = dry_runs("text")
    put_in_hub_cache(hub_cache, "alice/robust-text", folder)
    expected, _ = _scores(checkpoints("text")["run"], "text")
    for source in (str(folder), "alice/robust-text"):
        model = models.ColBERT(source, device="cpu")
        queries = model.encode(TEXT_QUERIES, is_query=True, convert_to_tensor=False)
        documents = model.encode(TEXT_DOCUMENTS, is_query=False, convert_to_tensor=False)
        scores = torch.as_tensor(pooled_scores(HEADS["text"])(queries, documents)).float()
        assert torch.allclose(scores, expected, atol=1e-4), source


# ------------------------------------------------------------------------------------------------------------------
# Refusals: a local base, numbers from other weights, missing files, a used folder
# ------------------------------------------------------------------------------------------------------------------


def test_an_adapter_base_must_be_a_hub_id(checkpoints, tmp_path):
    run = checkpoints("colqwen2")["run"]
    with pytest.raises(hub.HubError, match="local folder .* pass --base-model OWNER/NAME"):
        hub.prepare_publish_folder(run, tmp_path / "a", repo_id="alice/x", license="mit")
    with pytest.raises(hub.HubError, match=r"e\.g\. vidore/colqwen2\.5-base"):  # a colpali-engine base for a ColQwen2
        hub.prepare_publish_folder(run, tmp_path / "a", repo_id="alice/x", license="mit")
    with pytest.raises(hub.HubError, match="is not a Hub id"):
        hub.prepare_publish_folder(run, tmp_path / "b", repo_id="alice/x", license="mit", base_model="./local/base")
    with pytest.raises(hub.HubError, match="OWNER/NAME"):
        hub.prepare_publish_folder(run, tmp_path / "c", repo_id="not a repo", license="mit", base_model=BASE_IDS["colqwen2"])
    copy = tmp_path / "hub-based"
    shutil.copytree(run / "model", copy)
    adapter = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**adapter, "base_model_name_or_path": "vidore/colqwen2-base"}))
    checkpoint = hub.locate_checkpoint(copy)
    assert hub.base_model_id(checkpoint) == "vidore/colqwen2-base" and checkpoint.family == "colqwen2"
    with pytest.raises(hub.HubError, match="differs from the base"):
        hub.base_model_id(checkpoint, "someone/else")
    assert not any(path.name.startswith((".a", ".b", ".c")) for path in tmp_path.iterdir())  # no staging left behind
    assert is_user_error(hub.HubError("x"))


def test_results_measured_on_other_weights_are_refused(checkpoints, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(checkpoints("colqwen2")["run"], run)
    weights = run / "model" / "adapter_model.safetensors"
    payload = bytearray(weights.read_bytes())
    payload[-1] ^= 0xFF  # the weights changed in place after the sweep
    weights.write_bytes(bytes(payload))
    with pytest.raises(hub.HubError, match="measured on other weights"):
        hub.prepare_publish_folder(run, tmp_path / "out", repo_id="alice/x", license="mit", base_model=BASE_IDS["colqwen2"])
    assert not (tmp_path / "out").exists()
    folder = hub.prepare_publish_folder(run, tmp_path / "out", repo_id="alice/x", license="mit",
                                        base_model=BASE_IDS["colqwen2"], results=None)
    assert "Robustness to document length" not in (folder / "README.md").read_text()
    assert not (folder / "retained_ndcg10.png").exists()
    shutil.copytree(run / "length-sweep", run / "another-sweep")
    assert hub.find_results(hub.locate_checkpoint(run)) == run / "length-sweep" / "results.json"  # the default place wins
    (run / "length-sweep").rename(run / "sweep-b")  # two sweeps elsewhere beside it: which one is meant?
    with pytest.raises(hub.HubError, match="several sweep results"):
        hub.find_results(hub.locate_checkpoint(run / "model"))


def test_validation_names_every_missing_file(dry_runs, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(dry_runs("colqwen2"), folder)
    hub.validate_publish_folder(folder)  # the original passes
    (folder / "adapter_model.safetensors").unlink()
    (folder / "retained_ndcg10.png").unlink()
    adapter = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**adapter, "base_model_name_or_path": "/home/alice/base"}))
    with pytest.raises(hub.HubError) as error:
        hub.validate_publish_folder(folder)
    message = str(error.value)
    assert "adapter_model.safetensors is missing" in message and "retained_ndcg10.png" in message
    assert "'/home/alice/base' is not a Hub id" in message
    (folder / "pooling.json").unlink()
    with pytest.raises(hub.HubError, match="pooling.json"):
        hub.validate_publish_folder(folder)


def test_a_dry_run_never_writes_into_a_used_folder(checkpoints, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(hub.HubError, match="not empty"):
        hub.prepare_publish_folder(checkpoints("colqwen2")["run"], used, repo_id="alice/x", license="mit",
                                   base_model=BASE_IDS["colqwen2"])
    assert [path.name for path in used.iterdir()] == ["keep.txt"]


def test_the_retained_figure_labels_every_measured_k():
    from lir_robust.reporting.figures import pyplot, retained_figure

    ks = [0, 1, 2, 4, 16, 64, 100]
    by_k = {str(k): {"retained": {"ndcg@10": 1.0 - k / 200}} for k in ks}
    results = {"ks": ks, "heads": ["maxsim"], "config": {"kinds": ["hard"], "model": "alice/x", "targets": {"hard": "non-gold"}},
               "data": {"name": "cranfield"}, "metrics": {"maxsim": {"hard": {"by_k": by_k, "target": "non-gold"}}}}
    figure = retained_figure(results)
    try:
        figure.canvas.draw()
        assert [label.get_text() for label in figure.axes[0].get_xticklabels()] == [str(k) for k in ks]
    finally:
        pyplot().close(figure)


def test_a_text_checkpoint_on_a_local_base_is_told_a_text_model_id(checkpoints, tmp_path):
    with pytest.raises(hub.HubError) as error:
        hub.prepare_publish_folder(checkpoints("text")["run"], tmp_path / "out", repo_id="alice/x", license="mit")
    assert "--base-model" in str(error.value) and "sentence-transformers/all-MiniLM-L6-v2" in str(error.value)
    assert "colqwen" not in str(error.value).lower()


def test_the_licence_must_be_one_the_hub_accepts(checkpoints, tmp_path):
    run = checkpoints("colqwen2")["run"]
    for given, close in (("apache 2", "apache-2.0"), ("MIT", "mit"), ("cc by 4.0", "cc-by-4.0")):
        with pytest.raises(hub.HubError) as error:
            hub.prepare_publish_folder(run, tmp_path / "out", repo_id="alice/x", license=given, base_model=BASE_IDS["colqwen2"])
        message = str(error.value)
        assert "not a licence identifier the Hub accepts" in message and close in message and "\n" not in message
    assert not (tmp_path / "out").exists()
    assert hub.check_license(" apache-2.0 ") == "apache-2.0" and {"mit", "other", "llama3.1"} <= set(hub.HUB_LICENSES)


def test_without_a_project_url_the_card_is_refused(checkpoints, tmp_path, monkeypatch):
    import lir_robust.hub.folder as folder

    monkeypatch.setattr(folder, "installed_project_url", lambda: None)
    with pytest.raises(hub.HubError, match="--project-url"):
        hub.prepare_publish_folder(checkpoints("colqwen2")["run"], tmp_path / "out", repo_id="alice/x", license="mit",
                                   base_model=BASE_IDS["colqwen2"])
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not _pylate_ready(), reason=NO_PYLATE)
def test_a_runs_pylate_folder_is_published_with_the_runs_sweep(checkpoints, tmp_path):
    """train/finetune.py --save-pylate writes <run>/pylate beside <run>/model; publishing that folder keeps the run's
    sweep (measured on model/, the same weights before the LoRA merge)."""
    from huggingface_hub import ModelCard

    from lir_robust.patches.pylate import export_pylate

    run = tmp_path / "run"
    shutil.copytree(checkpoints("text")["run"], run)
    export_pylate(run / "model", run / "pylate")
    checkpoint = hub.locate_checkpoint(run / "pylate")
    assert checkpoint.layout == "pylate" and checkpoint.run_dir == run
    folder = hub.prepare_publish_folder(run / "pylate", tmp_path / "out", repo_id="alice/x", license="mit",
                                        base_model=BASE_IDS["text"])
    card = ModelCard.load(folder / "README.md")
    assert "## Robustness to document length and injected patches" in card.text
    assert card.data.eval_results and (folder / "retained_ndcg10.png").is_file()


# ------------------------------------------------------------------------------------------------------------------
# The study section
# ------------------------------------------------------------------------------------------------------------------


def test_study_section_renders_the_rows_it_finds(tmp_path, checkpoints):
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"rows": [
        {"head": "topk:k=4", "protocol": "retrain", "collection": "cranfield", "kind": "hard", "K": 100,
         "retained_mean": 0.412, "retained_std": 0.0234, "seeds": 3, "clean_ndcg_at_10": 0.3712, "extra": "ignored"},
        {"head": "maxsim", "kind": "gaussian", "K": 25, "retained_mean": 0.97},
    ]}))
    section = hub.study_section(study)
    assert "| topk:k=4 | retrain | cranfield | hard | 100 | 41.2 ± 2.3 % | 3 | 0.371 |" in section  # the form of docs/RESULTS.md
    assert "| maxsim | n/a | n/a | gaussian | 25 | 97.0 % | n/a | n/a |" in section
    assert "ignored" not in section
    (tmp_path / "list.json").write_text(json.dumps([]))
    assert "no rows" in hub.study_section(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text(json.dumps({"rows": "no"}))
    with pytest.raises(hub.HubError, match="expected"):
        hub.study_section(tmp_path / "bad.json")
    folder = hub.prepare_publish_folder(checkpoints("colqwen2")["run"], tmp_path / "out", repo_id="alice/x", license="mit",
                                        base_model=BASE_IDS["colqwen2"], study=study)
    assert "## Retraining study" in (folder / "README.md").read_text()


def study_summary(head: str = "topk:k=2") -> dict:
    """A hand-made summary.json of the retraining study (the shape lir_robust.studies.retraining.summarize_study writes, as
    tests/test_study.py::_summary builds one) on two collections: ``head`` retrained with and without injected
    negatives and swapped onto the maxsim-trained model, maxsim, and another head a card of ``head`` never shows.
    Every number of a row follows from its own ``level`` (so that a wrong row shows)."""
    from lir_robust.studies.retraining import variant_name

    kinds = ("hard", "spike", "corpus", "gaussian")

    def row(collection, protocol, variant, row_head, level, seeds):
        n = len(seeds)

        def stats(mean):
            return {"mean": mean, "std": 0.01, "n": n}

        return {
            "collection": collection, "protocol": protocol, "variant": variant, "head": row_head, "seeds": list(seeds),
            "ndcg10": {kind: {"0": stats(0.3 + level / 10), "4": stats(level / 5), "100": stats(level / 10)} for kind in kinds},
            "retained": {kind: {"0": stats(1.0), "4": stats(level + index / 100), "100": stats(level / 2 + index / 100)}
                         for index, kind in enumerate(kinds)},
            "hijack_rate_top10": {kind: {"4": stats(0.5), "100": stats(0.9)} for kind in kinds},
            "budget_median": {"hard": stats(100 * level), "spike": stats(math.inf if level > 0.5 else 4.0),
                              "corpus": stats(math.inf), "gaussian": stats(math.inf)},
            "gini_before": 0.9, "gini_after": stats(0.8),
            "paired_vs_maxsim": {f"{kind}|{k}": {"mean": level - 0.5 + k / 1000, "se": 0.002, "n": 30 * n}
                                 for kind in ("hard", "spike") for k in (0, 4, 100)},
        }

    def target(collection, variant, gap, reached):
        return {"collection": collection, "variant": variant, "head": head, "clean_ndcg10_gap": gap,
                "spike_k4_retained": 0.61, "hard_k4_retained": 0.6, "hard_k4_retained_maxsim": 0.2,
                "budgets": {"hard": [60, 20], "spike": [math.inf, 4.0]},
                "checks": {"clean_within_0.01": True, "spike_k4_retained_at_least_50pct": True,
                           "hard_k4_15_points_above_maxsim": True, "budget_hard_at_least_twice_maxsim": True,
                           "budget_spike_at_least_twice_maxsim": reached}, "reached": reached}

    rows, targets = [], []
    for collection, seeds, offset in (("cranfield", (0, 1, 2), 0.0), ("med", (0,), 0.1)):
        rows += [
            row(collection, "retrained", variant_name("maxsim"), "maxsim", 0.2 + offset, seeds),
            row(collection, "retrained", variant_name(head), head, 0.6 + offset, seeds),
            row(collection, "retrained", variant_name(head, True), head, 0.75 + offset, seeds),
            row(collection, "retrained", variant_name("lse:tau=0.1"), "lse:tau=0.1", 0.45 + offset, seeds),
            row(collection, "swap", "maxsim", "maxsim", 0.2 + offset, seeds),
            row(collection, "swap", "maxsim", head, 0.4 + offset, seeds),
            row(collection, "swap", "maxsim", "lse:tau=0.1", 0.35 + offset, seeds),
            row(collection, "raw", "raw", head, 0.3 + offset, [None]),
        ]
        targets += [target(collection, variant_name(head), -0.004, True), target(collection, variant_name(head, True), -0.002, False),
                    target(collection, variant_name("lse:tau=0.1"), -0.009, False)]
    return {"plan": {"model": "minilm", "collections": {"cranfield": [0, 1, 2], "med": [0]},
                     "heads": ["maxsim", head, "lse:tau=0.1"], "defended_heads": [head], "defence": ["spike:4", "hard:4"],
                     "ks": [0, 4, 100]},
            "rows": rows, "targets": targets, "timings": {"total_s": 1.0}}


def _write_study(path: Path, head: str = "topk:k=2") -> Path:
    path.write_text(json.dumps(study_summary(head)))  # Infinity for budgets never reached, as the study writes it
    return path


CRANFIELD_RETRAINED = ("| retrained | cranfield | trained with `topk:k=2` | 3 | 0.360 ± 0.010 | 60.0 ± 1.0 % | 30.0 ± 1.0 % | "
                       "61.0 ± 1.0 % | 31.0 ± 1.0 % | 62.0 ± 1.0 % | 32.0 ± 1.0 % | 63.0 ± 1.0 % | 33.0 ± 1.0 % | 60 | never |")


def test_the_study_summary_gives_the_rows_of_the_checkpoints_head_and_defence(tmp_path):
    study = _write_study(tmp_path / "summary.json")
    section = hub.study_section(study, "topk:k=2", injected_negatives=False)
    assert CRANFIELD_RETRAINED in section  # nDCG@10 at K = 0, retained at K = 4 / 100 per kind, budgets (inf: never)
    assert ("| retrained | med | trained with `topk:k=2` | 1 | 0.370 | 70.0 % | 35.0 % | 71.0 % | 36.0 % | 72.0 % | "
            "37.0 % | 73.0 % | 38.0 % | 70 | never |") in section  # one seed: no spread
    assert ("| swap | cranfield | maxsim-trained, scored with `topk:k=2` | 3 | 0.340 ± 0.010 | 40.0 ± 1.0 % | 20.0 ± 1.0 % | "
            "41.0 ± 1.0 % | 21.0 ± 1.0 % | 42.0 ± 1.0 % | 22.0 ± 1.0 % | 43.0 ± 1.0 % | 23.0 ± 1.0 % | 40 | 4 |") in section
    assert "| retrained | cranfield | maxsim, retrained (reference) | 3 | 0.320 ± 0.010 | 20.0 ± 1.0 % |" in section
    assert ("| retrained | cranfield | trained with `topk:k=2` | +0.1000 ± 0.0020 | +0.1040 ± 0.0020 | +0.2000 ± 0.0020 | "
            "+0.1040 ± 0.0020 | +0.2000 ± 0.0020 |") in section  # paired differences against maxsim
    assert "| cranfield | -0.004 ok | 61.0 % ok | 60.0 % (20.0 %) ok | 60 (20) ok | never (4) ok | **yes** |" in section
    assert "injected negatives" not in section and "-0.002" not in section  # not the defended variant
    assert "lse" not in section and "| raw |" not in section and "-0.009" not in section  # nor another head
    defended = hub.study_section(study, "topk:k=2", injected_negatives=True)
    assert "| retrained | cranfield | trained with `topk:k=2` + injected negatives | 3 | 0.375 ± 0.010 | 75.0 ± 1.0 % |" in defended
    assert "| cranfield | -0.002 ok | 61.0 % ok | 60.0 % (20.0 %) ok | 60 (20) ok | never (4) no | no |" in defended
    assert "trained with `topk:k=2` |" not in defended and "-0.004" not in defended
    assert "maxsim-trained, scored with `topk:k=2`" in defended  # the swap rows concern the head, whatever the training

    from test_study import _summary  # the lead's hand-made summary (heads named without their parameters)

    (tmp_path / "lead.json").write_text(json.dumps(_summary()))
    lead = hub.study_section(tmp_path / "lead.json", "exclusive")
    assert "| retrained | tiny | trained with `exclusive:capacity=1,candidates=8` | 3 | 0.365 ± 0.000 | 80.0 ± 0.0 % |" in lead
    assert "| swap | tiny | maxsim-trained, scored with `exclusive:capacity=1,candidates=8` | 3 | 0.360 ± 0.000 |" in lead
    assert "| tiny | -0.005 ok | 55.0 % ok | 80.0 % (60.0 %) ok | 16 (4) ok | 16 (4) ok | **yes** |" in lead


def test_model_index_dataset_types_are_identifiers_with_the_subset_stated_in_the_name():
    """A sweep on the first 50 judged queries of a local cranfield folder: dataset.type is the plain name (never
    ``cranfield[:50q]``), the subset is stated in dataset.name and each entry's ``queries``."""
    from lir_robust.hub.sweep_results import dataset_identifier, is_dataset_identifier

    by_k = {"0": {"mean": {"ndcg@10": 0.4}, "retained": {"ndcg@10": 1.0}}, "4": {"mean": {"ndcg@10": 0.2}, "retained": {"ndcg@10": 0.5}}}
    results = {"heads": ["maxsim"], "ks": [0, 4], "evaluated_queries": 50,
               "config": {"data": "/data/shared/cranfield", "max_queries": 50, "split": "test", "kinds": ["hard"]},
               "data": {"name": "cranfield[:50q]", "documents": 1400},
               "metrics": {"maxsim": {"hard": {"by_k": by_k, "target": "non-gold"}}}}
    entries = hub.eval_results_from_sweep(results)
    assert len(entries) == 2
    for entry in entries:
        assert entry.dataset_type == "cranfield" and is_dataset_identifier(entry.dataset_type)
        assert "first 50 judged queries" in entry.dataset_name and entry.metric_args["queries"] == 50
    assert [dataset_identifier(spec) for spec in ("cranfield[:50q]", "med", "vidore/docvqa_test_subsampled", "/x/my data/")] == [
        "cranfield", "med", "vidore/docvqa_test_subsampled", "my-data"]
    assert not is_dataset_identifier("cranfield[:50q]")


def test_a_dry_run_card_carries_the_study_of_its_head_and_defence(checkpoints, tmp_path):
    from huggingface_hub import ModelCard

    study = _write_study(tmp_path / "summary.json")
    run = checkpoints("colqwen2")["run"]
    folder = hub.prepare_publish_folder(run, tmp_path / "out", repo_id="alice/x", license="mit",
                                        base_model=BASE_IDS["colqwen2"], study=study)
    card = ModelCard.load(folder / "README.md")
    assert "## Retraining study: the study's own models, not this checkpoint" in card.text and CRANFIELD_RETRAINED in card.text
    assert "not on this checkpoint's weights" in card.text
    # the model-index holds only this checkpoint's own sweep: none of the study's models under this checkpoint's name
    entries = card.data.eval_results  # parsed back from the model-index
    sweep = json.loads((run / "length-sweep" / "results.json").read_text())
    assert len(entries) == len(hub.eval_results_from_sweep(sweep)) and entries
    assert not [e for e in entries if "protocol" in (e.metric_args or {}) or "study" in (e.metric_name or "")]
    assert {e.dataset_type for e in entries} == {"eval"}

    defended_run = tmp_path / "defended"
    shutil.copytree(run, defended_run)
    pooling = json.loads((defended_run / "model" / "pooling.json").read_text())
    pooling["training"]["injected_negatives"] = ["spike:4", "hard:4"]
    (defended_run / "model" / "pooling.json").write_text(json.dumps(pooling))
    assert hub.locate_checkpoint(defended_run).injected_negatives == ["spike:4", "hard:4"]
    folder = hub.prepare_publish_folder(defended_run, tmp_path / "defended-out", repo_id="alice/x", license="mit",
                                        base_model=BASE_IDS["colqwen2"], results=None, study=study)
    text = (folder / "README.md").read_text()
    assert "| retrained | cranfield | trained with `topk:k=2` + injected negatives | 3 | 0.375 ± 0.010 |" in text
    assert "| injected negatives (defence) | ['spike:4', 'hard:4'] |" in text
    pooling["training"].pop("injected_negatives")  # an older pooling.json: the run's config.json says it
    (defended_run / "model" / "pooling.json").write_text(json.dumps(pooling))
    config = json.loads((defended_run / "config.json").read_text())
    (defended_run / "config.json").write_text(json.dumps({**config, "injected_negatives": ["spike:4"]}))
    assert hub.locate_checkpoint(defended_run).injected_negatives == ["spike:4"]
    assert hub.locate_checkpoint(run).injected_negatives == []

    other = _write_study(tmp_path / "other.json", head="softmax:tau=0.5")
    with pytest.raises(hub.HubError, match="measured no model with the head topk:k=2"):
        hub.prepare_publish_folder(run, tmp_path / "refused", repo_id="alice/x", license="mit",
                                   base_model=BASE_IDS["colqwen2"], study=other)
    assert not (tmp_path / "refused").exists()


# ------------------------------------------------------------------------------------------------------------------
# Loading by name
# ------------------------------------------------------------------------------------------------------------------


def test_specs_that_are_not_published_ids_pass_through(tmp_path, hub_cache):
    for spec in ("minilm", str(tmp_path), "a/b/c", "./x/y", "nobody/not-cached"):
        assert hub.resolve_model_spec(spec) == spec  # offline and not cached: the family loader says so


def test_an_id_neither_cached_nor_reachable_ends_with_one_clear_message(hub_cache, monkeypatch):
    from lir_robust.encoders.load import load_encoder

    started = time.perf_counter()
    with pytest.raises(Exception) as offline:
        load_encoder("nobody/not-cached", show_progress=False)
    assert is_user_error(offline.value) and "nobody/not-cached" in str(offline.value) and "HF_HUB_OFFLINE" in str(offline.value)

    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    with pytest.raises(hub.HubError, match="unreachable") as unreachable:
        load_encoder("nobody/not-cached", show_progress=False)
    assert "nobody/not-cached" in str(unreachable.value) and "\n" not in str(unreachable.value)
    assert time.perf_counter() - started < 30


def test_a_cached_adapter_whose_base_is_not_cached_says_so(dry_runs, hub_cache):
    put_in_hub_cache(hub_cache, "alice/robust-colqwen2", dry_runs("colqwen2"))
    with pytest.raises(hub.HubError, match="tiny-org/colqwen2-base, which is not in the local Hugging Face cache"):
        hub.resolve_model_spec("alice/robust-colqwen2")


def test_the_hub_id_check():
    assert hub.is_hub_id("vidore/colqwen2.5-base") and hub.is_hub_id("bert-base-uncased")
    assert not any(hub.is_hub_id(text) for text in ("/abs/path", "./rel", "~/x", "a/b/c", "", None, "bad name/x"))


def test_online_a_published_repo_is_downloaded_and_other_repos_pass_through(tmp_path, hub_cache, monkeypatch):
    """With the Hub answering (a stand-in for model_info / snapshot_download): a repo holding pooling.json resolves to
    its downloaded snapshot at the Hub's current revision; a repo without it is left to the family's loader."""
    import huggingface_hub
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    calls = []

    class Sibling:
        def __init__(self, name):
            self.rfilename = name

    def model_info(self, repo_id, timeout=None, **_):
        calls.append(("info", repo_id, timeout))
        files = ["pooling.json", "adapter_config.json"] if repo_id == "alice/robust" else ["config.json"]
        return type("Info", (), {"siblings": [Sibling(name) for name in files], "sha": "c0ffee"})()

    def snapshot_download(repo_id, revision=None, etag_timeout=None, **_):
        calls.append(("download", repo_id, revision))
        return str(downloaded)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert hub.resolve_model_spec("alice/robust", timeout=3) == str(downloaded)
    assert hub.resolve_model_spec("vidore/colqwen2.5-v0.2") == "vidore/colqwen2.5-v0.2"
    assert calls == [("info", "alice/robust", 3), ("download", "alice/robust", "c0ffee"),
                     ("info", "vidore/colqwen2.5-v0.2", hub.DEFAULT_TIMEOUT_S)]


def test_a_cached_snapshot_is_used_when_the_hub_is_unreachable(checkpoints, dry_runs, hub_cache, monkeypatch, caplog):
    import huggingface_hub.constants as constants

    put_in_hub_cache(hub_cache, BASE_IDS["colqwen2"], checkpoints("colqwen2")["base"])
    snapshot = put_in_hub_cache(hub_cache, "alice/robust-colqwen2", dry_runs("colqwen2"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    caplog.set_level("WARNING")
    assert hub.resolve_model_spec("alice/robust-colqwen2") == str(snapshot)
    assert "unreachable" in caplog.text and "using the cached snapshot" in caplog.text
    # a cached model that is no lir-robust repo goes to its family's loader, which reads the cache
    assert hub.resolve_model_spec(BASE_IDS["colqwen2"]) == BASE_IDS["colqwen2"]
    assert "loading the copy in the local Hub cache" in caplog.text
    with pytest.raises(hub.HubError, match="unreachable"):
        hub.resolve_model_spec("nobody/not-cached")


def test_the_length_sweep_command_runs_on_a_published_id_from_the_cache(checkpoints, dry_runs, hub_cache, tmp_path):
    """`make eval-length-sweep MODEL=alice/robust-colqwen2` offline: the id's cached snapshot (and its base) load, and the
    sweep adds the checkpoint's own head, as it does for the checkpoint folder."""
    from retrieval_fixtures import write_vidore_v2

    from lir_robust.commands import sweep as length_sweep

    built = checkpoints("colqwen2")
    put_in_hub_cache(hub_cache, BASE_IDS["colqwen2"], built["base"])
    put_in_hub_cache(hub_cache, "alice/robust-colqwen2", dry_runs("colqwen2"))
    out = tmp_path / "sweep"
    length_sweep.main(["--model", "alice/robust-colqwen2", "--data", str(write_vidore_v2(tmp_path / "pages", pages=4)),
                       "--language", "english", "--ks", "0", "2", "--kinds", "gaussian", "--poolings", "maxsim",
                       "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--batch-size", "2", "--quiet"])
    results = json.loads((out / "results.json").read_text())
    assert results["heads"] == ["maxsim", HEADS["colqwen2"]] and results["evaluated_queries"] == 4
    measured = json.loads((built["run"] / "length-sweep" / "results.json").read_text())
    for head in results["heads"]:  # same weights, same data: the same clean nDCG@10 as the sweep on the checkpoint
        assert results["metrics"][head]["gaussian"]["by_k"]["0"]["mean"]["ndcg@10"] == pytest.approx(
            measured["metrics"][head]["gaussian"]["by_k"]["0"]["mean"]["ndcg@10"], abs=1e-6)
