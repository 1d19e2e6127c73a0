"""The model card of a published checkpoint: a huggingface_hub ``ModelCard`` whose metadata comes from
``ModelCardData`` (never YAML written by hand) and whose body is Markdown, section by section.

    card = build_model_card(checkpoint, repo_id="alice/robust-topk", base_model="vidore/colqwen2-base",
                            license="mit", results=sweep, figure="retained_ndcg10.png", study="summary.json")

Metadata: base model, data sets, licence, library (colpali / PyLate), pipeline tag, tags (the family's, lir-robust,
late-interaction, the head's name), model-index entries (the sweep's and the study's). Body: what the model is, the
pooling head and why it matters, the checkpoint's own length / injection results (table and figure), the retraining
study's rows for its head, the training configuration, how to load and score with it, and the paper's BibTeX.
"""

from __future__ import annotations

import json
import os
from typing import Any

from lir_robust.core.files import is_finite_number
from lir_robust.hub.checkpoint import TEXT, Checkpoint, public_value
from lir_robust.encoders.resolve import is_hub_id
from lir_robust.hub.study_results import StudyFile, eval_results_from_study, study_section
from lir_robust.hub.sweep_results import eval_results_from_sweep, report_k
from lir_robust.reporting.sweep_report import markdown_table
from lir_robust.scoring.pooling import PoolingHead

__all__ = ["build_model_card", "PAPER_BIBTEX"]

PAPER_BIBTEX = """@misc{spike_hijacking_2026,
  title         = {Spike Hijacking in Late-Interaction Retrieval},
  note          = {LIR 2026 workshop at ECIR 2026},
  year          = {2026},
  eprint        = {2604.05253},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2604.05253}
}"""

_WHY_IT_MATTERS = (
    "Late-interaction retrievers (ColBERT, ColPali, ColQwen) score a document by summing, over query tokens, the "
    "hard maximum similarity to any document patch (MaxSim). MaxSim sends all of a query token's gradient to one "
    "patch and lets a single planted patch take over (\"hijack\") a query token: a document padded with patches that "
    "look like the query's words outranks the relevant one (Spike Hijacking in Late-Interaction Retrieval, "
    "arXiv 2604.05253). A pooling head that looks at more than the single best patch spreads the gradient and the "
    "score over several patches. This checkpoint was fine-tuned with this head and scores with it: the head is part "
    "of the model, saved in `pooling.json`; scoring it with MaxSim instead measures another model."
)

_TRAINING_KEYS = (
    ("head", "pooling head"), ("family", "model family"), ("data", "training data"), ("data_kind", "pairs"),
    ("training_pairs", "training pairs"), ("hard_negatives", "hard negatives"),
    ("injected_negatives", "injected negatives (defence)"),
    ("lora_r", "LoRA r"), ("lora_alpha", "LoRA alpha"), ("lora_dropout", "LoRA dropout"),
    ("lora_target_modules", "LoRA target modules"), ("projection_dim", "projection size"),
    ("projection_init", "projection start"), ("temperature", "temperature"), ("lr", "learning rate"),
    ("schedule", "schedule"), ("warmup_steps", "warm-up steps"), ("epochs", "epochs"), ("max_steps", "max steps"),
    ("batch_size", "global batch"), ("gradient_accumulation", "gradient accumulation"),
    ("mixed_precision", "mixed precision"), ("seed", "seed"),
)


def _head_section(head: PoolingHead) -> str:
    formula = (type(head).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    params = head.to_dict().get("params") or {}
    lines = [f"## Pooling head: `{head.spec()}`", ""]
    if formula:
        lines += [f"`{head.name}`: {' '.join(formula.split())}", ""]
    if params:
        lines += ["| parameter | value |", "|---|---|"] + [f"| {name} | {value} |" for name, value in params.items()] + [""]
    lines += [_WHY_IT_MATTERS, ""]
    return "\n".join(lines)


def _training_section(checkpoint: Checkpoint, base_model: str) -> str:
    training = public_value(dict(checkpoint.training))
    summary_path = checkpoint.run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    lines = ["## Training", "", f"LoRA fine-tuning of [{base_model}](https://huggingface.co/{base_model}) with "
             "lir-robust's `train/finetune.py` (in-batch InfoNCE over the pooled scores)."]
    if checkpoint.layout == "text-colbert":
        lines[-1] += " Published as a PyLate model: the LoRA adapter is merged into the transformer weights."
    lines += ["", "| setting | value |", "|---|---|", f"| base model | {base_model} |"]
    text_only = ("projection_dim", "projection_init")  # colpali-engine models keep their own custom_text_proj
    for key, label in _TRAINING_KEYS:
        if training.get(key) not in (None, "", []) and (checkpoint.family == TEXT or key not in text_only):
            lines.append(f"| {label} | {training[key]} |")
    for key, label in (("step", "steps done"), ("val_loss", "validation loss"), ("val_top1", "validation top-1")):
        if is_finite_number(summary.get(key)):
            lines.append(f"| {label} | {summary[key]:.4g} |")
    lines += ["", "The full training configuration is in `pooling.json` (`training`).", ""]
    return "\n".join(lines)


def _results_section(results: dict[str, Any], head: PoolingHead, figure: str | None) -> str:
    data = results.get("data") or {}
    lines = [
        "## Robustness to document length and injected patches", "",
        f"Measured on this checkpoint by lir-robust's length / injection sweep (`eval/length_sweep.py`) on "
        f"{data.get('name', 'the collection')} ({results.get('evaluated_queries', '?')} queries, "
        f"{data.get('documents', '?')} documents): K distractor patches are appended to documents (gaussian / corpus "
        "patches model longer documents, hard / spike patches an attack), and every listed head scores the same "
        f"embeddings. The row `{head.spec()}` is this checkpoint's own head. Retained = nDCG@10 at K / nDCG@10 at "
        "K = 0.", "",
        markdown_table(results, report_k=report_k(results)).strip(), "",
    ]
    if figure:
        lines += [f"![Retained nDCG@10 against K, one line per head]({figure})", ""]
    return "\n".join(lines)


def _lir_robust_usage(checkpoint: Checkpoint, repo_id: str) -> list[str]:
    spec = checkpoint.head.spec()
    lines = [
        "### With lir-robust", "",
        "```python",
        "from lir_robust import score",
        "from lir_robust.encoders.load import load_encoder",
        "",
        f'encoder = load_encoder("{repo_id}")   # a local snapshot of the repo; scores with the saved head ({spec})',
        'queries = encoder.encode_queries(["what limits the lift of a thin wing?"])',
    ]
    if checkpoint.family == TEXT:
        lines += ['documents = encoder.encode_documents(["the lift of thin wings ...", "heat transfer ..."])']
    else:
        lines += ["documents = encoder.encode_documents(pages)      # PIL images of document pages"]
    return lines + [
        "scores = score(queries, documents, encoder.pooling)   # [queries, documents]",
        "```", "",
        f"Length / injection sweep: `make eval-length-sweep MODEL={repo_id} HF_HUB_OFFLINE=0` (the Makefile runs "
        "offline unless told otherwise; a cached snapshot loads offline).", "",
    ]


def _pylate_usage(spec: str, repo_id: str) -> list[str]:
    return [
        "### With PyLate", "",
        "```python",
        "from pylate import models",
        "from lir_robust.patches.pylate import pooled_scores",
        "",
        f'model = models.ColBERT("{repo_id}")',
        'queries = model.encode(["what limits the lift of a thin wing?"], is_query=True)',
        'documents = model.encode(["the lift of thin wings ...", "heat transfer ..."], is_query=False)',
        f'scores = pooled_scores("{spec}")(queries, documents)   # [queries, documents], the head it was trained with',
        "```", "",
        "PyLate's own `colbert_scores`, `rank.rerank` and indexes score with MaxSim; pass the pooled score as "
        f"`score_metric=pooled_scores(\"{spec}\")` to PyLate's losses and `score_functions` to its evaluator.", "",
    ]


def _colpali_usage(family: str, spec: str, repo_id: str) -> list[str]:
    from lir_robust.patches.colpali import FAMILIES

    model_class, processor_class, _ = FAMILIES[family]
    return [
        "### With colpali-engine", "",
        "```python",
        "import torch",
        f"from colpali_engine.models import {model_class}, {processor_class}",
        "from lir_robust.patches.colpali import patch_processor",
        "",
        f'model = {model_class}.from_pretrained("{repo_id}").eval()   # the adapter on its base model',
        f'processor = {processor_class}.from_pretrained("{repo_id}")',
        f'patch_processor(processor, "{spec}")   # score with the head it was trained with (processor.score is MaxSim otherwise)',
        'queries = processor.process_queries(["what is the revenue growth?"]).to(model.device)',
        "pages = processor.process_images(images).to(model.device)   # PIL images",
        "with torch.no_grad():",
        "    scores = processor.score(list(model(**queries)), list(model(**pages)))   # [queries, pages]",
        "```", "",
    ]


def _usage_section(checkpoint: Checkpoint, repo_id: str) -> str:
    spec = checkpoint.head.spec()
    own = _pylate_usage(spec, repo_id) if checkpoint.family == TEXT else _colpali_usage(checkpoint.family, spec, repo_id)
    return "\n".join(["## Usage", ""] + _lir_robust_usage(checkpoint, repo_id) + own)


def _hub_dataset_ids(*specs: Any) -> list[str]:
    """The specs that are Hub data set ids (``owner/name``), each once, in order."""
    found = []
    for spec in specs:
        if isinstance(spec, str) and spec.count("/") == 1 and is_hub_id(spec) and spec not in found:
            found.append(spec)
    return found


def build_model_card(
    checkpoint: Checkpoint,
    *,
    repo_id: str,
    base_model: str,
    license: str,
    results: dict[str, Any] | None = None,
    figure: str | None = None,
    study: str | os.PathLike | StudyFile | None = None,
):
    """The model card (a huggingface_hub ``ModelCard``): metadata from ``ModelCardData``, the body in Markdown.

    ``results``: a sweep's results.json measured on the checkpoint (already public: named by ``repo_id``);
    ``figure``: the file name of its figure in the folder; ``study``: a ``--study`` file (the study's summary.json,
    whose rows for the checkpoint's head and defence become a section and model-index entries, or a plain table).
    """
    from huggingface_hub import ModelCard, ModelCardData

    family_tags = ["ColBERT", "PyLate", "sentence-transformers"] if checkpoint.family == TEXT else ["colpali", "vidore"]
    tags = list(dict.fromkeys(family_tags + ["lir-robust", "late-interaction", checkpoint.head.name]))
    datasets = _hub_dataset_ids(checkpoint.training.get("data"), (results or {}).get("config", {}).get("data"))
    defended = bool(checkpoint.injected_negatives)
    eval_results = eval_results_from_sweep(results) if results else []
    if study is not None:
        eval_results += eval_results_from_study(study, checkpoint.head, defended)
    data = ModelCardData(
        base_model=base_model,
        datasets=datasets or None,
        eval_results=eval_results or None,
        library_name=checkpoint.library,
        license=license,
        model_name=repo_id,
        pipeline_tag=checkpoint.pipeline_tag,
        tags=tags,
    )
    what = "text ColBERT model (PyLate format)" if checkpoint.family == TEXT else f"{checkpoint.family} LoRA adapter (colpali-engine)"
    body = [
        f"# {repo_id.split('/')[-1]}", "",
        f"A late-interaction {what} fine-tuned from [{base_model}](https://huggingface.co/{base_model}) with the "
        f"**{checkpoint.head.spec()}** pooling head by lir-robust, which swaps MaxSim for other pooling heads and "
        "measures how retrieval holds up when documents grow or carry injected patches.", "",
        _head_section(checkpoint.head),
    ]
    if results:
        body.append(_results_section(results, checkpoint.head, figure))
    if study is not None:
        body.append(study_section(study, checkpoint.head, defended))
    body += [_training_section(checkpoint, base_model), _usage_section(checkpoint, repo_id)]
    body += ["## Citation", "", "```bibtex", PAPER_BIBTEX, "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
