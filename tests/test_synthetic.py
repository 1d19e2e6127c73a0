"""Tests for lir_robust.studies.concepts and the synthetic study (CPU, seconds)."""

import json
import math

import pytest
import torch

from lir_robust.scoring.diagnostics import hijack_rates
from lir_robust.scoring.losses import PooledInfoNCELoss
from lir_robust.scoring.pooling import parse_head
from lir_robust.studies.concepts import (
    SyntheticConfig,
    evaluate_gradient_concentration,
    evaluate_injection,
    evaluate_retrieval,
    make_encoder,
    make_environment,
    train_and_evaluate,
)
from lir_robust.studies.synthetic import StudySettings, preset, run_path, run_study

TINY = dict(
    epochs=2, eval_every=1, batch_size=16, num_train_queries=32, num_eval_queries=12, hard_negatives=2,
    lengths=(32, 64), injection_budgets=(0, 5, 20), hidden_width=16,
)


def test_paper_defaults():
    config = SyntheticConfig()
    assert (config.num_concepts, config.dim, config.query_tokens, config.noise_std) == (100, 16, 16, 0.1)
    assert (config.batch_size, config.epochs, config.eval_every) == (64, 100, 5)
    assert config.lengths == (32, 64, 128, 256)
    assert config.injection_budgets == (0, 25, 50, 100, 200, 400)
    assert SyntheticConfig.from_dict(config.to_dict()) == config


def test_environment_is_deterministic_per_seed_and_differs_across_seeds():
    config = SyntheticConfig(**TINY)
    first, again, other = make_environment(config, 7), make_environment(config, 7), make_environment(config, 8)
    for name in ("concepts", "train_queries", "train_documents", "eval_queries", "eval_documents", "eval_negatives"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert not torch.equal(first.concepts, other.concepts)
    for kind in ("hard", "spike", "gaussian"):
        assert torch.equal(first.injection_banks[kind], again.injection_banks[kind])
    encoder_a, encoder_b = make_encoder(config, 7), make_encoder(config, 7)
    for a, b in zip(encoder_a.parameters(), encoder_b.parameters()):
        assert torch.equal(a, b)


def test_environment_structure():
    config = SyntheticConfig(**TINY)
    env = make_environment(config, 0)
    assert env.train_queries.shape == (32, 16, 16)
    assert env.eval_documents.shape == (12, 64, 16) and env.eval_negatives.shape == (12, 2, 64, 16)
    assert env.eval_corpus(32).shape == (12 * 3, 32, 16)
    assert torch.allclose(env.eval_queries.norm(dim=-1), torch.ones(12, 16), atol=1e-5)
    assert all(len(set(row.tolist())) == 16 for row in env.eval_query_concepts)  # distinct concepts per query
    # the gold document's first `support` patches sit near query concepts; filler patches mostly do not
    similarity = torch.einsum("qtd,qmd->qtm", env.eval_queries, env.eval_documents).amax(dim=1)  # [E, M]
    assert similarity[:, : config.support].mean() > 0.85
    assert similarity[:, config.support :].mean() < similarity[:, : config.support].mean() - 0.2


def test_training_history_and_sweeps_are_complete():
    config = SyntheticConfig(**TINY)
    result = train_and_evaluate(config, "topk:k=4", 0)
    assert result["history"]["epoch"] == [0, 1, 2]
    assert set(result["length_sweep"]) == {"32", "64"}
    assert set(result["injection"]) == {"hard", "spike", "gaussian"}
    hard = result["injection"]["hard"]
    assert hard["20"]["retained_recall@1"] == pytest.approx(hard["20"]["recall@1"] / hard["0"]["recall@1"])
    assert 0.0 <= hard["20"]["hijack_rate"] <= 1.0


def test_training_lowers_the_loss_and_raises_recall_over_the_untrained_encoder():
    """Epoch 0 of the history is the seed-matched untrained encoder (checked by evaluating it apart); 20 epochs later
    the in-batch loss is well below that encoder's loss on the training pairs, and Recall@1 has risen."""
    config = SyntheticConfig(**{**TINY, "epochs": 20, "eval_every": 10, "num_train_queries": 128, "num_eval_queries": 48,
                                "learning_rate": 3e-3})
    result = train_and_evaluate(config, "maxsim", 0)
    history = result["history"]
    assert history["epoch"] == [0, 10, 20]

    env, untrained = make_environment(config, 0), make_encoder(config, 0)
    untrained.eval()
    head = parse_head("maxsim")
    start = {**evaluate_retrieval(untrained, env, head, config.train_length),
             **evaluate_gradient_concentration(untrained, env, head, config.train_length)}
    assert history["recall@1"][0] == pytest.approx(start["recall@1"]) and history["gini"][0] == pytest.approx(start["gini"])
    loss_fn = PooledInfoNCELoss("maxsim", temperature=config.temperature, normalize_scores=config.normalize_scores)
    with torch.no_grad():
        batches = range(0, config.num_train_queries, config.batch_size)
        untrained_loss = sum(
            float(loss_fn(untrained(env.train_queries[i : i + config.batch_size]), untrained(env.train_documents[i : i + config.batch_size])))
            for i in batches
        ) / len(batches)
    assert untrained_loss == pytest.approx(math.log(config.batch_size), rel=0.05)  # near chance: 16 candidates
    assert history["loss"][2] < history["loss"][1] < 0.8 * untrained_loss
    assert history["recall@1"][2] >= history["recall@1"][0] + 0.1
    assert history["gini"][2] != pytest.approx(history["gini"][0], abs=1e-3)


def test_injection_hijack_matches_diagnostics_definition():
    config = SyntheticConfig(**{**TINY, "injection_kinds": ("hard",), "injection_budgets": (0, 5)})
    env = make_environment(config, 3)
    encoder = make_encoder(config, 3)
    result = evaluate_injection(encoder, env, parse_head("maxsim"))
    with torch.no_grad():
        queries = encoder(env.eval_queries)
        corpus = encoder(env.eval_corpus(config.train_length))
        bank = encoder(env.injection_banks["hard"][:, :5])
    rates = []
    for query_index in range(queries.shape[0]):
        others = [d for d in range(corpus.shape[0]) if d != query_index]
        documents = torch.cat([corpus[others], bank[query_index].expand(len(others), 5, 16)], dim=1)
        injected = torch.zeros(documents.shape[:2], dtype=torch.bool)
        injected[:, -5:] = True
        rates.append(hijack_rates(queries[query_index].expand(len(others), 16, 16), documents, injected).mean())
    assert result["hard"]["5"]["hijack_rate"] == pytest.approx(float(torch.stack(rates).mean()), abs=1e-5)


def test_quick_study_writes_every_artefact_and_resumes(tmp_path):
    config, _ = preset("quick", **{key: value for key, value in TINY.items()})
    settings = StudySettings(config=config, heads=("maxsim", "softmax:tau=1.0"), seeds=(0, 1), out=tmp_path,
                             progress=False)
    run_study(settings)
    for name in ("results.json", "table.md", "gini_vs_epoch.png", "recall1_vs_epoch.png", "recall1_vs_length.png",
                 "retained_vs_injection.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["seeds"] == [0, 1] and "torch" in results["versions"]
    stats = results["aggregate"]["maxsim"]["final"]["gini"]
    assert set(stats) == {"mean", "std", "values"} and len(stats["values"]) == 2
    assert "~0.78" in (tmp_path / "table.md").read_text()
    assert not list(tmp_path.glob("**/*.tmp"))

    # resume: a finished run is not trained again (mark it, rerun, the mark survives)
    path = run_path(tmp_path, "maxsim", 0)
    stored = json.loads(path.read_text())
    stored["marker"] = "kept"
    path.write_text(json.dumps(stored))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    run_study(settings)
    assert json.loads(path.read_text())["marker"] == "kept"
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()} == before


def test_cli_quick_preset_with_small_override(tmp_path):
    from lir_robust.commands import synthetic as module

    threads = torch.get_num_threads()
    try:
        module.main(["--preset", "quick", "--out", str(tmp_path), "--heads", "maxsim", "--seeds", "0",
                     "--epochs", "1", "--train-queries", "64", "--eval-queries", "8", "--lengths", "32",
                     "--budgets", "0", "25", "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "results.json").exists() and (tmp_path / "table.md").exists()
