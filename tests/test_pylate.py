"""lir_robust.patches.pylate against the installed pylate: pooled scores in every PyLate score contract (parity with
pylate's MaxSim, padding invariance for every head), PyLate training and evaluation with a head, PyLate folders read
as TextColBERT (embeddings equal pylate's own), written back (save -> reload in PyLate -> same embeddings and scores),
and the sweep / fine-tuning / example entries on PyLate folders. Tiny models built from configs; offline."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("pylate")

from retrieval_fixtures import write_beir  # noqa: E402
from tiny_text import save_tiny_bert  # noqa: E402

from lir_robust.core.errors import UserError  # noqa: E402
from lir_robust.encoders.text import load_text_checkpoint  # noqa: E402
from lir_robust.encoders.text_colbert import TextColBERT  # noqa: E402
from lir_robust.patches import pylate as patches  # noqa: E402
from lir_robust.scoring.pooling import parse_head  # noqa: E402
from lir_robust.scoring.scorer import pad_with_mask, score  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEADS = ["maxsim", "topk:k=4", "softmax:tau=0.1", "lse:tau=0.1", "mean"]
QUERIES = ["what is the wing lift ?", "  heat transfer of a hot plate, boundary layer", "shock"]
DOCUMENTS = [
    "the wing lift and drag of an aircraft wing in a wind tunnel .",
    "heat transfer in the boundary layer of a hot plate ; results",
    "zz",
    "noise of a jet engine exhaust at high speed , flutter of a flat panel",
]


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def random_items(count, low, high, dim=8, seed=0, non_negative=False):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (count,), generator=generator).tolist()
    vectors = [torch.randn(n, dim, generator=generator) for n in lengths]
    return [F.normalize(v.abs() if non_negative else v, dim=-1) for v in vectors]


def reference(head, query, document):
    """The head applied by hand to one (query, document) pair of valid rows: sum over query tokens."""
    similarities = query @ document.T
    return parse_head(head)(similarities, torch.ones(document.shape[0], dtype=torch.bool)).sum()


def garbage_padded(items, extra=3, seed=0):
    """Items padded with ``extra`` rows of random values beyond their length, and the mask that marks them."""
    generator = torch.Generator().manual_seed(seed)
    longest = max(item.shape[0] for item in items) + extra
    padded = torch.randn(len(items), longest, items[0].shape[1], generator=generator) * 5
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for index, item in enumerate(items):
        padded[index, : item.shape[0]] = item
        mask[index, : item.shape[0]] = True
    return padded, mask


def zero_padded(items, extra=5):
    padded, _ = pad_with_mask(items)
    return F.pad(padded, (0, 0, 0, extra))


def grouped(items, groups):
    """``groups * n`` items -> a padded ``[groups, n, T, H]`` tensor and mask (item g * n + k at [g, k])."""
    padded, mask = pad_with_mask(items)
    return padded.view(groups, -1, *padded.shape[1:]), mask.view(groups, -1, mask.shape[-1])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


def save_tiny_pylate(bert, folder, **settings):
    """A tiny PyLate model built by pylate from the tiny BERT (Dense 32 -> 16, PyLate's default settings unless
    given), saved as a PyLate folder."""
    from pylate import models

    torch.manual_seed(0)
    models.ColBERT(model_name_or_path=str(bert), device="cpu", embedding_size=16, **settings).save(str(folder))
    return Path(folder)


@pytest.fixture(scope="module")
def tiny_pylate(tiny_bert, tmp_path_factory):
    return save_tiny_pylate(tiny_bert, tmp_path_factory.mktemp("pylate") / "model")


def pylate_model(folder):
    from pylate import models

    return models.ColBERT(model_name_or_path=str(folder), device="cpu")


def assert_same_embeddings(theirs, ours, atol=1e-5):
    assert len(theirs) == len(ours)
    for a, b in zip(theirs, ours):
        a = torch.as_tensor(a)
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# version guard
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("installed, accepted", [
    ("1.6.0", True), ("1.6.9", True), ("1.6.0rc1", True), ("v1.6.2", True),
    ("1.5.9", False), ("1.7.0", False), ("1.7", False), ("2.0.0", False), ("0.1", False), ("dev", False),
])
def test_the_version_guard_accepts_exactly_the_supported_range(monkeypatch, installed, accepted):
    """check_pylate_version (and every public entry, through it) takes >=1.6.0,<1.7, whatever is installed here."""
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed if name == "pylate" else real(name))
    if accepted:
        assert patches.check_pylate_version() == installed
        return
    with pytest.raises(patches.PylateVersionError) as error:
        patches.pooled_scores("maxsim")
    assert str(error.value) == (
        f"pylate {installed} is installed, but lir_robust.patches.pylate supports pylate >=1.6.0,<1.7 (the stacked "
        "ColBERTScores contract of its losses and its model folder layout). Fix: pip install --no-deps pylate==1.6.0"
    )


def test_the_version_guard_says_how_to_install_a_missing_pylate(monkeypatch):
    import importlib.metadata

    def version(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(patches.PylateVersionError) as error:
        patches.check_pylate_version()
    assert str(error.value).startswith("pylate is not installed; lir_robust.patches.pylate needs pylate >=1.6.0,<1.7. "
                                       "Fix: pip install --no-deps pylate==1.6.0 (after `make setup`")
    assert isinstance(error.value, UserError) and isinstance(error.value, RuntimeError)


# ---------------------------------------------------------------------------------------------------------------
# scores in every contract
# ---------------------------------------------------------------------------------------------------------------


def test_maxsim_equals_pylate_in_every_contract_on_non_negative_similarities(monkeypatch):
    from pylate.scores import ColBERTScores, colbert_kd_scores, colbert_scores, colbert_scores_pairwise

    monkeypatch.setenv("PYLATE_SCORES_BACKEND", "torch")
    ours = patches.pooled_scores("maxsim")
    queries = random_items(4, 2, 9, seed=1, non_negative=True)
    documents = random_items(12, 3, 15, seed=2, non_negative=True)
    padded_queries, query_mask = pad_with_mask(queries)
    padded_documents, document_mask = pad_with_mask(documents)

    # [Q, D]: with masks, and zero-padded without masks (as the evaluator passes them)
    theirs = colbert_scores(padded_queries, padded_documents, query_mask.float(), document_mask.float())
    torch.testing.assert_close(ours(padded_queries, padded_documents, query_mask, document_mask), theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(padded_queries, padded_documents), colbert_scores(padded_queries, padded_documents), atol=1e-5, rtol=0)
    # stacked [Qd, N, Td, H] -> [Q, Qd * N] (the contrastive losses' default, ColBERTScores)
    stacked, stacked_mask = grouped(documents, groups=4)
    theirs = ColBERTScores()(padded_queries, stacked, query_mask.float(), stacked_mask.float())
    assert theirs.shape == (4, 12)
    torch.testing.assert_close(ours(padded_queries, stacked, query_mask, stacked_mask), theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(padded_queries, stacked), ColBERTScores()(padded_queries, stacked), atol=1e-5, rtol=0)
    # kd: each query against its own 3 candidates
    theirs = colbert_kd_scores(padded_queries, stacked, query_mask.float(), stacked_mask.float())
    torch.testing.assert_close(ours.kd(padded_queries, stacked, query_mask, stacked_mask), theirs, atol=1e-5, rtol=0)
    # pairwise: query i against document i
    torch.testing.assert_close(ours.pairwise(padded_queries, padded_documents[:4]), colbert_scores_pairwise(padded_queries, padded_documents[:4]), atol=1e-5, rtol=0)


def test_where_pylate_masking_differs_from_a_true_max():
    """pylate multiplies by the mask: a masked document token scores 0 and beats an all-negative row; ours does not."""
    from pylate.scores import colbert_scores

    query = torch.tensor([[[1.0, 0.0]]])
    document = torch.tensor([[[-1.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1.0, 0.0]])
    assert colbert_scores(query, document, documents_mask=mask).tolist() == [[0.0]]
    assert patches.pooled_scores("maxsim")(query, document, documents_mask=mask).tolist() == [[-1.0]]


@pytest.mark.parametrize("head", HEADS)
def test_padding_never_changes_a_score_in_any_contract(head):
    ours = patches.pooled_scores(head)
    queries = random_items(3, 2, 7, seed=3)
    documents = random_items(6, 1, 9, seed=4)  # a document of one token: top-k with k > length
    expected = torch.stack([torch.stack([reference(head, q, d) for d in documents]) for q in queries])
    # [Q, D]: tight padding with masks, extra zero rows without masks, garbage rows hidden by masks
    padded_queries, query_mask = pad_with_mask(queries)
    padded_documents, document_mask = pad_with_mask(documents)
    torch.testing.assert_close(ours(padded_queries, padded_documents, query_mask, document_mask), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(zero_padded(queries), zero_padded(documents)), expected, atol=1e-5, rtol=0)
    garbage_queries, garbage_query_mask = garbage_padded(queries, seed=5)
    garbage_documents, garbage_document_mask = garbage_padded(documents, seed=6)
    torch.testing.assert_close(ours(garbage_queries, garbage_documents, garbage_query_mask, garbage_document_mask), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(list(queries), list(documents)), expected, atol=1e-5, rtol=0)  # ragged lists
    # stacked: column d * N + k holds document d * N + k
    stacked, stacked_mask = grouped(documents, groups=3)
    torch.testing.assert_close(ours(padded_queries, stacked, query_mask, stacked_mask), expected, atol=1e-5, rtol=0)
    zero_stacked = F.pad(stacked, (0, 0, 0, 4))
    torch.testing.assert_close(ours(zero_padded(queries), zero_stacked), expected, atol=1e-5, rtol=0)
    # kd: query i against documents 2i, 2i + 1
    kd_expected = torch.stack([expected[i, 2 * i : 2 * i + 2] for i in range(3)])
    torch.testing.assert_close(ours.kd(padded_queries, stacked, query_mask, stacked_mask), kd_expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.kd(zero_padded(queries), zero_stacked), kd_expected, atol=1e-5, rtol=0)
    # pairwise: query i against document i
    pair_expected = torch.stack([expected[i, i] for i in range(3)])
    torch.testing.assert_close(ours.pairwise(padded_queries, padded_documents[:3]), pair_expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pairwise(zero_padded(queries), zero_padded(documents[:3])), pair_expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", HEADS)
def test_training_path_equals_evaluation_path_and_has_gradients(head):
    ours = patches.pooled_scores(head)
    padded_queries, query_mask = pad_with_mask(random_items(3, 2, 7, seed=7))
    stacked, stacked_mask = grouped(random_items(6, 2, 9, seed=8), groups=3)
    with torch.no_grad():
        evaluation = ours(padded_queries, stacked, query_mask, stacked_mask)
    queries = padded_queries.clone().requires_grad_(True)
    training = ours(queries, stacked, query_mask, stacked_mask)
    torch.testing.assert_close(training.detach(), evaluation, atol=1e-5, rtol=0)
    training.sum().backward()
    assert queries.grad is not None and bool(queries.grad[query_mask].abs().sum() > 0)
    assert bool((queries.grad[~query_mask] == 0).all())  # padded query rows get no gradient


# ---------------------------------------------------------------------------------------------------------------
# PyLate's losses, trainer and evaluator with a head
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", HEADS)
def test_pylate_contrastive_training_step_with_each_head(head, tiny_pylate):
    from pylate import losses
    from pylate.losses.contrastive import extract_skiplist_mask

    model = pylate_model(tiny_pylate).eval()  # the tiny BERT has dropout: eval mode, so the loss can be recomputed
    features = [
        model.tokenize(QUERIES, is_query=True),
        model.tokenize(DOCUMENTS[:3], is_query=False, pad=True),  # as PyLate's collator: padded to the document length
        model.tokenize(DOCUMENTS[1:], is_query=False, pad=True),
    ]
    loss_fn = losses.Contrastive(model=model, score_metric=patches.pooled_scores(head), temperature=0.5)
    loss = loss_fn(features)
    # the same loss by hand: the head on each (query, document) pair of valid rows, cross-entropy, positive at i * N
    with torch.no_grad():
        embeddings = [F.normalize(model(dict(f))["token_embeddings"], dim=-1) for f in features]
        masks = extract_skiplist_mask(features, model.skiplist)
        queries = [embeddings[0][i] for i in range(3)]  # query expansion: every query position is kept
        documents = [[embeddings[part][d][masks[part][d]] for part in (1, 2)] for d in range(3)]
        scores = torch.stack([torch.stack([reference(head, q, documents[d][k]) for d in range(3) for k in range(2)]) for q in queries])
        expected = F.cross_entropy(scores / 0.5, torch.arange(3) * 2)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=0)
    loss.backward()
    dense = model[1].linear.weight
    assert dense.grad is not None and bool(dense.grad.abs().sum() > 0)
    before = dense.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert not torch.equal(before, dense.detach())


def test_pylate_cached_contrastive_with_a_head_behaves_as_with_pylates_own_scores(tiny_pylate):
    """CachedContrastive (GradCache) with a head: the loss of Contrastive; its gradients are batch-size times
    Contrastive's, exactly as with PyLate's own ColBERTScores (pylate 1.6.0 returns the mean loss but back-propagates
    the per-chunk sums)."""
    from pylate import losses

    model = pylate_model(tiny_pylate).eval()
    features = [model.tokenize(QUERIES, is_query=True), model.tokenize(DOCUMENTS[:3], is_query=False, pad=True)]

    def loss_and_gradient(loss_class, metric, **options):
        model.zero_grad()
        loss = loss_class(model=model, score_metric=metric, **options)([dict(f) for f in features])
        loss.backward()
        return loss.detach(), model[1].linear.weight.grad.clone()

    for metric in (None, patches.pooled_scores("topk:k=4")):  # None: PyLate's ColBERTScores
        plain, plain_gradient = loss_and_gradient(losses.Contrastive, metric)
        cached, cached_gradient = loss_and_gradient(losses.CachedContrastive, metric, mini_batch_size=2)
        torch.testing.assert_close(cached, plain, atol=1e-5, rtol=0)
        torch.testing.assert_close(cached_gradient, len(QUERIES) * plain_gradient, atol=1e-4, rtol=1e-4)


def test_pylate_distillation_with_the_kd_contract(tiny_pylate):
    from pylate import losses

    model = pylate_model(tiny_pylate)
    features = [model.tokenize(QUERIES[:2], is_query=True), model.tokenize(DOCUMENTS, is_query=False)]
    loss = losses.Distillation(model=model, score_metric=patches.pooled_scores("softmax:tau=0.1").kd)(
        features, torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    )
    assert torch.isfinite(loss)
    loss.backward()
    assert model[1].linear.weight.grad is not None


def test_pylate_evaluator_takes_pooled_score_functions(tiny_pylate):
    from pylate import evaluation

    model = pylate_model(tiny_pylate)
    corpus = {f"d{i}": text for i, text in enumerate(DOCUMENTS)}
    evaluator = evaluation.PyLateInformationRetrievalEvaluator(
        queries={"q0": QUERIES[0], "q1": QUERIES[1]}, corpus=corpus, relevant_docs={"q0": {"d0"}, "q1": {"d1"}},
        score_functions={"maxsim": patches.pooled_scores("maxsim"), "topk": patches.pooled_scores("topk:k=4")},
        show_progress_bar=False,
    )
    metrics = evaluator(model)
    assert 0.0 <= metrics["maxsim_ndcg@10"] <= 1.0 and 0.0 <= metrics["topk_ndcg@10"] <= 1.0
    # the evaluator's top-k ranking is the project scorer's ranking
    queries = model.encode([QUERIES[0], QUERIES[1]], is_query=True, convert_to_tensor=True)
    documents = model.encode(DOCUMENTS, is_query=False, convert_to_tensor=True)
    ranks = score(list(queries), list(documents), "topk:k=4").argsort(dim=1, descending=True)
    reciprocal = [1.0 / (ranks[i].tolist().index(i) + 1) for i in range(2)]
    assert metrics["topk_mrr@10"] == pytest.approx(sum(reciprocal) / 2)


def test_the_example_trains_two_steps_and_saves_a_pylate_folder_with_its_head(tiny_pylate, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("pylate_example", ROOT / "examples" / "pylate_train_with_head.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    data = write_beir(tmp_path / "beir")
    before = pylate_model(tiny_pylate)[1].linear.weight.detach().clone()
    out = tmp_path / "trained"
    assert example.run(["--model", str(tiny_pylate), "--data", str(data), "--head", "topk:k=4", "--out", str(out),
                        "--max-steps", "2", "--batch-size", "4", "--lr", "1e-2"]) == 0
    printed = capsys.readouterr().out
    assert "topk_ndcg@10" in printed and "binary relevance: not comparable with eval/length_sweep.py" in printed
    after = pylate_model(out)[1].linear.weight.detach()
    assert not torch.allclose(before, after)
    assert patches.is_pylate_folder(out)
    assert patches.load_pylate(out).pooling.spec() == "topk:k=4"
    # pooling.json says how the model was trained, and the card a Hub user reads says the same
    training = json.loads((out / "pooling.json").read_text())["training"]
    assert training["script"] == "examples/pylate_train_with_head.py" and training["steps_done"] == 2
    assert "no LoRA" in training["method"]
    from lir_robust import hub

    folder = hub.prepare_publish_folder(out, tmp_path / "card", repo_id="alice/x", license="mit", results=None,
                                        base_model="tiny-org/bert-base", project_url="https://github.com/alice/lir-robust")
    card = (folder / "README.md").read_text()
    assert "Full fine-tuning (every weight, no LoRA) of [tiny-org/bert-base]" in card
    assert "`examples/pylate_train_with_head.py`: PyLate's recipe" in card
    assert "LoRA fine-tuning" not in card and "train/finetune.py" not in card and "| steps done | 2 |" in card

    # a bad head, a model that cannot be loaded and a missing data set: one line each, exit status 2, nothing written
    capsys.readouterr()
    for argv, expected in (
        (["--model", str(tiny_pylate), "--data", str(data), "--head", "topk:q=1"], "--head"),
        (["--model", str(tmp_path / "no-model"), "--data", str(data)], "--model"),
        (["--model", str(data), "--data", str(data)], "cannot load it"),  # a folder that holds no model
        (["--model", str(tiny_pylate), "--data", str(tmp_path / "no-data")], "--data"),
    ):
        assert example.run([*argv, "--out", str(tmp_path / "refused")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "refused").exists()


# ---------------------------------------------------------------------------------------------------------------
# PyLate folders in: the same embeddings as pylate
# ---------------------------------------------------------------------------------------------------------------

SETTINGS = {
    "defaults": {},  # "[Q] " / "[D] " added tokens, query expansion, punctuation skiplist, lengths 32 / 180
    "no-expansion": {"do_query_expansion": False},
    "attend-to-expansion": {"attend_to_expansion_tokens": True},
    "no-prefixes": {"query_prefix": "", "document_prefix": ""},
    "markers-and-skiplist": {"query_prefix": "[unused0]", "document_prefix": "[unused1]", "skiplist_words": [".", "zzz"]},
    "short": {"query_length": 8, "document_length": 10},
}


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_a_pylate_folder_encodes_as_pylate_does(setting, tiny_bert, tmp_path):
    folder = save_tiny_pylate(tiny_bert, tmp_path / "model", **SETTINGS[setting])
    theirs = pylate_model(folder)
    ours = patches.load_pylate(folder)
    assert ours.colbert_config.base_format == "pylate"
    for is_query, texts in ((True, QUERIES), (False, DOCUMENTS)):
        assert_same_embeddings(theirs.encode(texts, is_query=is_query, convert_to_tensor=True),
                               ours.encode(texts, is_query=is_query, show_progress=False))


def test_the_sweep_encoder_reads_a_pylate_folder_with_its_head(tiny_pylate, tmp_path):
    import shutil

    from lir_robust.encoders.load import load_encoder
    from lir_robust.scoring.pooling import save_pooling_json

    folder = tmp_path / "with-head"
    shutil.copytree(tiny_pylate, folder)
    save_pooling_json(folder, parse_head("softmax:tau=0.1"))
    encoder = load_encoder(str(folder), show_progress=False)
    assert type(encoder).__name__ == "TextEncoder" and encoder.pooling.spec() == "softmax:tau=0.1"
    theirs = pylate_model(folder)
    assert_same_embeddings(theirs.encode(QUERIES, is_query=True, convert_to_tensor=True), encoder.encode_queries(QUERIES))
    assert_same_embeddings(theirs.encode(DOCUMENTS, is_query=False, convert_to_tensor=True), encoder.encode_documents(DOCUMENTS))
    assert encoder.config["base_format"] == "pylate" and len(encoder.config["base_weights"]) == 16


def test_pylate_folders_are_told_from_other_folders(tiny_bert, tiny_pylate, tmp_path):
    from lir_robust.encoders.text_colbert import default_model_path

    assert patches.is_pylate_folder(tiny_pylate) and patches.is_pylate_model(str(tiny_pylate))
    assert not patches.is_pylate_folder(tiny_bert)  # a plain Hugging Face folder
    assert not patches.is_pylate_folder(default_model_path())  # a sentence-transformers folder (MiniLM)
    assert not patches.is_pylate_model("minilm") and not patches.is_pylate_folder(tmp_path / "missing")


def test_a_pylate_hub_id_in_the_local_cache_is_a_pylate_model(tiny_pylate, tmp_path, monkeypatch):
    """Offline, a Hub id whose snapshot is in the Hugging Face cache is recognised and loads (through pylate)."""
    import shutil

    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-colbert"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_pylate, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert patches.is_pylate_model("someone/tiny-colbert")
    assert not patches.is_pylate_model("someone/not-cached")
    by_id = patches.load_pylate("someone/tiny-colbert")
    assert_same_embeddings(patches.load_pylate(tiny_pylate).encode(QUERIES, is_query=True, show_progress=False),
                           by_id.encode(QUERIES, is_query=True, show_progress=False))


# ---------------------------------------------------------------------------------------------------------------
# PyLate folders out: save -> reload in PyLate -> the same embeddings and scores
# ---------------------------------------------------------------------------------------------------------------


def _trained_looking(model: TextColBERT, seed: int = 1) -> TextColBERT:
    """Give the LoRA B matrices non-zero values, as training would (so merging them changes the weights)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model.eval()


@pytest.mark.parametrize("projection_dim", [None, 16])
def test_save_pylate_then_pylate_encodes_as_our_model_did(projection_dim, tiny_bert, tmp_path):
    from huggingface_hub import ModelCard

    model = TextColBERT.from_base(str(tiny_bert), projection_dim=projection_dim, pooling="topk:k=2")
    if projection_dim:
        model = _trained_looking(model.add_lora(r=2, alpha=4))
    ours_queries = model.encode(QUERIES, is_query=True, show_progress=False)
    ours_documents = model.encode(DOCUMENTS, is_query=False, show_progress=False)
    previous_mask = os.umask(0o022)
    try:
        out = patches.save_pylate(model, tmp_path / "pylate", training_config={"lr": 0.001, "pooling": "topk:k=2"})
    finally:
        os.umask(previous_mask)
    assert patches.is_pylate_folder(out) and not list(tmp_path.glob(".pylate.partial-*"))
    # the usual permissions under umask 022 (safetensors writes its weights 0600, mkdtemp its folder 0700)
    modes = {str(path.relative_to(out)): stat.S_IMODE(path.stat().st_mode) for path in [out, *out.rglob("*")]}
    assert modes["model.safetensors"] == 0o644 and modes["1_Dense/model.safetensors"] == 0o644
    assert all(mode == (0o755 if (out / name).is_dir() else 0o644) for name, mode in modes.items()), modes
    theirs = pylate_model(out)
    atol = 1e-5 if projection_dim else 0.0  # merged LoRA: other float rounding; identity and no adapter: exact
    theirs_queries = theirs.encode(QUERIES, is_query=True, convert_to_tensor=True)
    theirs_documents = theirs.encode(DOCUMENTS, is_query=False, convert_to_tensor=True)
    assert_same_embeddings(theirs_queries, ours_queries, atol=atol)
    assert_same_embeddings(theirs_documents, ours_documents, atol=atol)
    torch.testing.assert_close(
        patches.pooled_scores("topk:k=2")(list(theirs_queries), list(theirs_documents)),
        score(ours_queries, ours_documents, "topk:k=2"), atol=1e-5, rtol=0,
    )
    # the head, the card, and the folder read back as our model
    saved = json.loads((out / "pooling.json").read_text())
    assert saved["spec"] == "topk:k=2" and saved["training"]["lr"] == 0.001
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "PyLate" and card.data.pipeline_tag == "sentence-similarity"
    assert {"ColBERT", "PyLate", "sentence-transformers", "topk"} <= set(card.data.tags)
    back = patches.load_pylate(out)
    assert back.pooling.spec() == "topk:k=2"
    assert_same_embeddings(ours_documents, back.encode(DOCUMENTS, is_query=False, show_progress=False), atol=atol)


def test_export_pylate_turns_a_checkpoint_folder_into_a_pylate_folder(tiny_pylate, tmp_path):
    """A TextColBERT checkpoint on a PyLate base (LoRA + its Dense) -> export_pylate -> pylate encodes the same."""
    model = _trained_looking(patches.load_pylate(tiny_pylate, pooling="lse:tau=0.1").add_lora(r=2, alpha=4))
    checkpoint = model.save_pretrained(tmp_path / "checkpoint", training_config={"pooling": "lse:tau=0.1"})
    reloaded = load_text_checkpoint(checkpoint)
    assert reloaded.colbert_config.query_expansion and reloaded.config == model.config
    expected = model.encode(QUERIES, is_query=True, show_progress=False)
    assert_same_embeddings(expected, reloaded.encode(QUERIES, is_query=True, show_progress=False))
    out = patches.export_pylate(checkpoint, tmp_path / "exported")
    assert out == tmp_path / "exported"
    assert_same_embeddings(pylate_model(out).encode(QUERIES, is_query=True, convert_to_tensor=True), expected)
    assert json.loads((out / "pooling.json").read_text())["spec"] == "lse:tau=0.1"
    with pytest.raises(Exception, match="not a fine-tuned text checkpoint"):
        patches.export_pylate(tmp_path, tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------------------------
# the sweep and fine-tuning take a PyLate folder
# ---------------------------------------------------------------------------------------------------------------


def test_length_sweep_on_a_pylate_folder(tiny_pylate, tmp_path):
    from lir_robust.commands import sweep as length_sweep

    out = tmp_path / "out"
    length_sweep.main(["--model", str(tiny_pylate), "--data", str(write_beir(tmp_path / "tiny")), "--ks", "0", "2",
                       "--kinds", "gaussian", "hard", "--poolings", "maxsim", "topk:k=4", "--out", str(out),
                       "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    results = json.loads((out / "results.json").read_text())
    assert results["encoder"]["base_format"] == "pylate" and results["embedding_dim"] == 16
    assert results["heads"] == ["maxsim", "topk:k=4"]
    assert 0.0 <= results["metrics"]["maxsim"]["hard"]["by_k"]["0"]["mean"]["ndcg@10"] <= 1.0


def _finetune_script():
    from lir_robust.commands import finetune

    return finetune


@pytest.mark.parametrize("base", ["pylate", "bert"])
def test_finetune_gives_a_pylate_folder_that_encodes_as_the_trained_model(base, tiny_pylate, tiny_bert, tmp_path):
    """A PyLate --model comes back as a PyLate folder; any text model does with --save-pylate."""
    from accelerate.state import AcceleratorState, GradientState

    finetune = _finetune_script()
    output = tmp_path / "run"
    model_options = ["--model", str(tiny_pylate)] if base == "pylate" else [
        "--model", str(tiny_bert), "--save-pylate", "--projection-dim", "16", "--projection-init", "random"]
    try:
        model, _ = finetune.train(finetune.parse_args([
            *model_options, "--data", str(write_beir(tmp_path / "tiny")), "--output-dir", str(output),
            "--pooling", "topk:k=4", "--max-steps", "2", "--batch-size", "4", "--lora-r", "2", "--lora-alpha", "4",
            "--validation-pairs", "0", "--save-every", "0", "--lr", "5e-3", "--train-document-max-length", "24",
        ]))
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    expected_queries = model.encode(QUERIES, is_query=True, show_progress=False)
    expected_documents = model.encode(DOCUMENTS, is_query=False, show_progress=False)
    folder = output / "pylate"
    theirs = pylate_model(folder)
    assert_same_embeddings(theirs.encode(QUERIES, is_query=True, convert_to_tensor=True), expected_queries)
    assert_same_embeddings(theirs.encode(DOCUMENTS, is_query=False, convert_to_tensor=True), expected_documents)
    saved = json.loads((folder / "pooling.json").read_text())
    assert saved["spec"] == "topk:k=4" and saved["training"]["max_steps"] == 2
    # the checkpoint in model/ reloads to the same model
    reloaded = load_text_checkpoint(output / "model")
    assert_same_embeddings(expected_documents, reloaded.encode(DOCUMENTS, is_query=False, show_progress=False))
    if base == "pylate":  # its own Dense layer was trained on, not replaced
        assert json.loads((output / "config.json").read_text())["projection_init"] == "pylate"
        assert not torch.allclose(theirs[1].linear.weight, pylate_model(tiny_pylate)[1].linear.weight)


def test_finetune_refuses_a_projection_option_for_a_pylate_model(tiny_pylate, tmp_path):
    finetune = _finetune_script()
    with pytest.raises(Exception, match="PyLate model, whose own Dense projection"):
        finetune.parse_args(["--model", str(tiny_pylate), "--data", str(write_beir(tmp_path / "tiny")),
                             "--projection-dim", "8", "--output-dir", str(tmp_path / "run")])


def test_export_command_writes_a_base_encoder_that_pylate_reads_identically(tiny_bert, tmp_path, capsys):
    """lir_robust.commands.export_pylate (eval/export_pylate.py; the MiniLM command, here on the tiny BERT): identity Dense, checked against PyLate."""
    from lir_robust.commands import export_pylate as command
    report = command.main(["--model", str(tiny_bert), "--out", str(tmp_path / "pylate"),
                           "--check-data", str(write_beir(tmp_path / "tiny")), "--check-count", "5"])
    assert report["largest_difference_documents"] == 0.0 and report["largest_difference_queries"] == 0.0
    dense = json.loads((tmp_path / "pylate" / "1_Dense" / "config.json").read_text())
    assert dense["in_features"] == dense["out_features"] == 32
    settings = json.loads((tmp_path / "pylate" / "config_sentence_transformers.json").read_text())
    assert settings["query_prefix"] == "[unused0]" and settings["do_query_expansion"] is False
    assert settings["document_length"] == 256
    from lir_robust.commands.cli import run_command

    assert run_command(command.main, ["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
    # the PyLate folder just written is replaced on a rerun; a folder of other files never is
    assert command.main(["--model", str(tiny_bert), "--out", str(tmp_path / "pylate")])["out"] == str(tmp_path / "pylate")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me\n")
    assert run_command(command.main, ["--model", str(tiny_bert), "--out", str(tmp_path / "mine")]) == 2
    assert "is not a PyLate model folder" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me\n"
    assert run_command(command.main, ["--model", str(tiny_bert), "--out", str(tmp_path / "y"), "--check-data",
                                      str(tmp_path / "no-data")]) == 2
    assert "--check-data" in capsys.readouterr().err and not (tmp_path / "y").exists()
