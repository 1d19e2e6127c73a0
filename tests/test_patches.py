"""lir_robust.patches.colpali against the installed colpali-engine: scoring parity, patched processors, the
ContrastiveTrainer with our losses and LoRA on a tiny random ColQwen2, the version guard, loading offline."""

from __future__ import annotations

import re
import time

import pytest
import torch

pytest.importorskip("colpali_engine")

from tiny_colpali import build_tiny_colpali, build_tiny_colqwen2, tiny_images  # noqa: E402

from lir_robust.patches import colpali as patches  # noqa: E402
from lir_robust.scoring.scorer import score  # noqa: E402

TRAINING_HEADS = ["maxsim", "topk:k=4", "softmax:tau=1.0", "lse:tau=0.1", "mean"]


def random_multi_vectors(count, low, high, dim=128, seed=0, non_negative=False):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (count,), generator=generator).tolist()
    vectors = [torch.randn(n, dim, generator=generator) for n in lengths]
    return [torch.nn.functional.normalize(v.abs() if non_negative else v, dim=-1) for v in vectors]


@pytest.mark.parametrize("non_negative", [True, False])
def test_maxsim_equals_colpali_engine_score_multi_vector(monkeypatch, non_negative):
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    monkeypatch.setenv("COLPALI_SCORES_BACKEND", "torch")
    queries = random_multi_vectors(7, 3, 20, seed=1, non_negative=non_negative)
    documents = random_multi_vectors(23, 30, 90, seed=2, non_negative=non_negative)
    theirs = BaseVisualRetrieverProcessor.score_multi_vector(queries, documents, batch_size=5, device="cpu")
    ours = score(queries, documents, "maxsim", query_batch_size=3, document_batch_size=8)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    patched = patches.patch_processor(build_tiny_colqwen2()[1], "maxsim")
    torch.testing.assert_close(patched.score(queries, documents), theirs, atol=1e-5, rtol=0)


def test_where_colpali_engine_zero_padding_differs_from_a_true_max(monkeypatch):
    """colpali-engine pads with zero vectors and masks nothing: a padded zero column beats an all-negative row."""
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    monkeypatch.setenv("COLPALI_SCORES_BACKEND", "torch")
    query = [torch.tensor([[1.0, 0.0]])]
    documents = [torch.tensor([[-1.0, 0.0]]), torch.tensor([[0.5, 0.5], [0.2, 0.1]])]
    theirs = BaseVisualRetrieverProcessor.score_multi_vector(query, documents, device="cpu")
    assert theirs.tolist() == [[0.0, 0.5]]  # the short document gets the padding's similarity 0
    assert score(query, documents, "maxsim").tolist() == [[-1.0, 0.5]]


def test_patched_processor_returns_topk_scores_and_leaves_others_alone(tiny_colqwen2):
    model, processor = tiny_colqwen2
    _, other = build_tiny_colqwen2(seed=1)
    with torch.no_grad():
        queries = model(**processor.process_queries(["what is the revenue", "red car on the road"]))
        documents = model(**processor.process_images(tiny_images(3)))
    maxsim_before = processor.score(list(queries), list(documents))
    patched = patches.patch_processor(processor, "topk:k=4")
    try:
        assert patched is processor and processor.pooling_head.spec() == "topk:k=4"
        # colpali-engine's models zero the padded rows; the patched scorer drops them, from lists and tensors alike
        valid_queries = [q[(q != 0).any(dim=-1)] for q in queries]
        valid_documents = [d[(d != 0).any(dim=-1)] for d in documents]
        expected = score(valid_queries, valid_documents, "topk:k=4")
        torch.testing.assert_close(processor.score(list(queries), list(documents)), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(processor.score(queries, documents, device="cpu"), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(processor.score_multi_vector(queries, documents, batch_size=1), expected, atol=1e-5, rtol=0)
        assert not torch.allclose(expected, maxsim_before)
        torch.testing.assert_close(other.score(list(queries), list(documents)), maxsim_before)  # another instance
        assert not hasattr(other, "pooling_head")
    finally:
        patches.patch_processor(processor, "maxsim")
    torch.testing.assert_close(processor.score(list(queries), list(documents)), maxsim_before, atol=1e-5, rtol=0)


def test_patched_processor_still_saves(tiny_colqwen2, tmp_path):
    _, processor = build_tiny_colqwen2(seed=2)
    patches.patch_processor(processor, "softmax:tau=0.1").save_pretrained(tmp_path)
    assert (tmp_path / "processor_config.json").is_file()


def test_lora_targets_match_language_model_projections_only():
    pattern = patches.lora_target_modules("colqwen2")
    assert pattern == r"(.*(model).*(down_proj|gate_proj|up_proj|k_proj|q_proj|v_proj|o_proj).*$|.*(custom_text_proj).*$)"
    model, _ = build_tiny_colqwen2()
    matched = [name for name, _ in model.named_modules() if re.fullmatch(pattern, name)]
    assert "custom_text_proj" in matched and any("language_model.layers.0.self_attn.q_proj" in n for n in matched)
    assert len(matched) == 1 + 2 * 7 and not any("visual" in name for name in matched)
    qwen25 = patches.lora_target_modules("colqwen2.5")
    assert re.fullmatch(qwen25, "language_model.layers.0.mlp.gate_proj")
    assert not re.fullmatch(qwen25, "model.visual.blocks.0.mlp.gate_proj")
    smol = patches.lora_target_modules("ColSmol")
    assert re.fullmatch(smol, "model.text_model.layers.3.self_attn.k_proj")
    assert not re.fullmatch(smol, "model.vision_model.encoder.layers.0.self_attn.k_proj")

    colpali, _ = build_tiny_colpali()
    pali = patches.lora_target_modules("colpali")
    matched = [name for name, _ in colpali.named_modules() if re.fullmatch(pali, name)]
    assert "custom_text_proj" in matched and len(matched) == 1 + 2 * 7
    assert not any("vision" in name for name in matched)
    # the ColQwen2 pattern would reach into SigLIP's attention: why ColPali uses language_model
    assert any("vision_tower" in n for n, _ in colpali.named_modules() if re.fullmatch(pattern, n))
    with pytest.raises(ValueError, match="unknown colpali-engine model family 'colbert'.*colqwen2"):
        patches.lora_target_modules("colbert")


class ListDataset(torch.utils.data.Dataset):
    """A map-style dataset over a list of ``{"query": str, "pos_target": PIL image}`` rows."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


@pytest.mark.slow
@pytest.mark.parametrize("head", TRAINING_HEADS)
def test_contrastive_trainer_runs_with_lora_and_our_loss(head, tmp_path):
    from colpali_engine.collators import VisualRetrieverCollator
    from colpali_engine.trainer.contrastive_trainer import ContrastiveTrainer
    from peft import LoraConfig, get_peft_model
    from transformers import TrainingArguments

    model, processor = build_tiny_colqwen2(seed=0)
    model = get_peft_model(
        model.train(),
        LoraConfig(r=4, lora_alpha=4, lora_dropout=0.0, init_lora_weights="gaussian", bias="none",
                   task_type="FEATURE_EXTRACTION", target_modules=patches.lora_target_modules("colqwen2")),
    )
    lora_before = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}
    assert lora_before and all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    queries = ["what is the revenue", "red car", "blue house", "solar energy"]
    rows = [{"query": q, "pos_target": image} for q, image in zip(queries, tiny_images(4, seed=3))]
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=2, learning_rate=5e-3, report_to="none",
        save_strategy="no", logging_steps=1, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0,
    )
    trainer = ContrastiveTrainer(
        model=model, args=args, train_dataset=ListDataset(rows), eval_dataset=None,
        data_collator=VisualRetrieverCollator(processor=processor), loss_func=patches.PooledColbertLoss(head),
        is_vision_model=True,
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(torch.isfinite(torch.tensor(loss)) for loss in losses), losses
    changed = [name for name, p in model.named_parameters() if "lora_" in name and not torch.equal(p, lora_before[name])]
    assert changed, "no LoRA weight changed"
    assert not list(tmp_path.glob("checkpoint-*"))


def test_colpali_losses_take_the_trainer_call_forms():
    queries = torch.nn.functional.pad(torch.nn.functional.normalize(torch.randn(2, 3, 8), dim=-1), (0, 0, 2, 0))
    documents = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
    negatives = torch.nn.functional.normalize(torch.randn(2, 3, 5, 8), dim=-1)
    for loss_class in (patches.PooledColbertLoss, patches.PooledColbertPairwiseCELoss):
        loss_func = loss_class("softmax:tau=0.1")
        keyword = loss_func(query_embeddings=queries, doc_embeddings=documents, neg_doc_embeddings=negatives, offset=0)
        torch.testing.assert_close(keyword, loss_func(queries, documents, negatives, 0))
        torch.testing.assert_close(loss_func(queries, documents), loss_func(query_embeddings=queries, doc_embeddings=documents))
        assert torch.isfinite(keyword)
    assert patches.PooledColbertLoss().temperature == 0.02 and patches.PooledColbertPairwiseCELoss().temperature == 1.0


def _installed(monkeypatch, version):
    """colpali-engine ``version`` installed (None: not installed), as importlib.metadata reports it."""
    import importlib.metadata

    real = importlib.metadata.version

    def installed(name):
        if name != "colpali_engine":
            return real(name)
        if version is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return version

    monkeypatch.setattr(importlib.metadata, "version", installed)


@pytest.mark.parametrize("version", ["0.3.16", "0.2.0", "0.4.0", "1.0.0", "garbage"])
def test_version_guard_rejects_unsupported_versions(monkeypatch, version):
    _installed(monkeypatch, version)
    with pytest.raises(patches.ColpaliVersionError) as error:
        patches.check_colpali_version()
    message = str(error.value)
    assert f"colpali-engine {version} is installed" in message
    assert ">=0.3.17,<0.4" in message and "pip install --no-deps colpali-engine==0.3.18" in message
    with pytest.raises(patches.ColpaliVersionError):
        patches.patch_processor(object(), "maxsim")


@pytest.mark.parametrize("version", ["0.3.17", "0.3.18", "0.3.99.dev1"])
def test_version_guard_accepts_supported_versions(monkeypatch, version):
    _installed(monkeypatch, version)
    assert patches.check_colpali_version() == version


def test_version_guard_when_not_installed(monkeypatch):
    _installed(monkeypatch, None)
    with pytest.raises(patches.ColpaliVersionError, match="colpali-engine is not installed.*pip install --no-deps"):
        patches.check_colpali_version()


@pytest.mark.parametrize("offline", ["1", "0"])
def test_load_colpali_fails_fast_when_the_hub_is_unreachable(monkeypatch, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    if offline == "0":  # simulate a network error whatever this machine can reach
        import huggingface_hub

        def unreachable(*args, **kwargs):
            raise ConnectionError("[Errno -2] Name or service not known")

        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    started = time.monotonic()
    with pytest.raises(patches.HubUnreachableError) as error:
        patches.load_colpali("vidore/colqwen2-v1.0-not-cached")
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "Hugging Face Hub is unreachable" in message and "local copy" in message and "load_colpali('/path" in message
    assert error.value.__cause__ is None  # one clear message, no chained traceback
    assert error.value.__context__ is None or error.value.__suppress_context__


def test_load_colpali_from_a_local_folder(tiny_colqwen2_dir):
    (tiny_colqwen2_dir / "pooling.json").write_text('{"head": {"name": "topk", "params": {"k": 2}}, "spec": "topk:k=2"}')
    try:
        model, processor = patches.load_colpali(tiny_colqwen2_dir, device="cpu")
    finally:
        (tiny_colqwen2_dir / "pooling.json").unlink()
    assert type(model).__name__ == "ColQwen2" and model.config._attn_implementation == "eager"
    assert processor.pooling_head.spec() == "topk:k=2"
    _, processor = patches.load_colpali(str(tiny_colqwen2_dir), family="colqwen2", head="lse:tau=0.1")
    assert processor.pooling_head.spec() == "lse:tau=0.1"
    with torch.no_grad():
        queries = model(**processor.process_queries(["red car"]))
        documents = model(**processor.process_images(tiny_images(2)))
    assert processor.score(list(queries), list(documents)).shape == (1, 2)


def test_family_inference():
    assert patches.infer_family("vidore/colqwen2.5-v0.2") == "colqwen2.5"
    assert patches.infer_family("vidore/colqwen2-v1.0") == "colqwen2"
    assert patches.infer_family("vidore/colpali-v1.3") == "colpali"
    assert patches.infer_family("vidore/colSmol-256M") == "colsmol"
    assert patches.infer_family("anything", model_type="qwen2_5_vl") == "colqwen2.5"
    with pytest.raises(ValueError, match="cannot tell the colpali-engine model family.*pass family="):
        patches.infer_family("someone/retriever")
