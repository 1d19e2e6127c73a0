"""The model card of a published checkpoint: a huggingface_hub ``ModelCard`` whose metadata comes from
``ModelCardData`` (never YAML written by hand) and whose body is Markdown, section by section.

    card = build_model_card(checkpoint, repo_id="alice/robust-topk", base_model="vidore/colqwen2-base",
                            license="mit", results=sweep, figure="retained_ndcg10.png", study="summary.json",
                            project_url="https://github.com/OWNER/lir-robust")

Metadata: base model, data sets (training and evaluation), language, licence, library (colpali / PyLate), pipeline
tag, tags (the family's, lir-robust, late-interaction, the head's name), model-index entries: the checkpoint's own
sweep only (the retraining study's models are not this checkpoint and stay in the text, labelled). Body: what the
model is, with the project's link and install lines; the pooling head and why it matters; the PyLate settings
(prefixes, lengths, dimension, query expansion) of text models; the checkpoint's own length / injection results
(table and figure, with a note when they come from few queries or a short run); its ``lir-robust mteb`` results
(task, head, condition, nDCG@10; text only, the files under ``mteb/``); the retraining study's rows for its head; how the model was trained (as pooling.json records it); how to load and score with it; limitations; the
framework versions; the paper's, ColBERT's and PyLate's (or ColPali's) BibTeX.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from typing import Any

from lir_robust.core.files import is_finite_number
from lir_robust.hub.attack_results import AttackResults, attack_section
from lir_robust.hub.checkpoint import TEXT, Checkpoint, public_value
from lir_robust.hub.mteb_results import MtebResults, mteb_section
from lir_robust.hub.study_results import StudyFile, study_section
from lir_robust.hub.sweep_results import dataset_identifier, eval_results_from_sweep, evaluated_subset, report_k
from lir_robust.reporting.sweep_report import markdown_table
from lir_robust.scoring.pooling import PoolingHead

__all__ = ["build_model_card", "installed_project_url", "training_record", "PAPER_BIBTEX", "COLBERT_BIBTEX",
           "PYLATE_BIBTEX", "COLPALI_BIBTEX", "FEW_QUERIES", "SHORT_RUN_STEPS", "FINETUNE_SCRIPT"]

FEW_QUERIES = 100  # a table from fewer queries carries a note: differences of a few points are noise there
SHORT_RUN_STEPS = 500  # a model trained for fewer optimizer steps carries a note: a demonstration, not a converged model
FINETUNE_SCRIPT = "train/finetune.py"

PAPER_BIBTEX = """@misc{spike_hijacking_2026,
  title         = {Spike Hijacking in Late-Interaction Retrieval},
  note          = {LIR 2026 workshop at ECIR 2026},
  year          = {2026},
  eprint        = {2604.05253},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2604.05253}
}"""

COLBERT_BIBTEX = """@inproceedings{khattab2020colbert,
  title     = {ColBERT: Efficient and Effective Passage Search via Contextualized Late Interaction over BERT},
  author    = {Omar Khattab and Matei Zaharia},
  booktitle = {Proceedings of the 43rd International ACM SIGIR Conference on Research and Development in Information Retrieval},
  pages     = {39--48},
  year      = {2020},
  doi       = {10.1145/3397271.3401075}
}"""

PYLATE_BIBTEX = """@inproceedings{chaffin2025pylate,
  title     = {PyLate: Flexible Training and Retrieval for Late Interaction Models},
  author    = {Antoine Chaffin and Rapha{\\"{e}}l Sourty},
  booktitle = {Proceedings of the 34th ACM International Conference on Information and Knowledge Management (CIKM 2025)},
  pages     = {6334--6339},
  year      = {2025},
  doi       = {10.1145/3746252.3761608},
  url       = {https://github.com/lightonai/pylate}
}"""

COLPALI_BIBTEX = """@inproceedings{faysse2025colpali,
  title         = {ColPali: Efficient Document Retrieval with Vision Language Models},
  author        = {Manuel Faysse and Hugues Sibille and Tony Wu and Bilel Omrani and Gautier Viaud and C{\\'e}line Hudelot and Pierre Colombo},
  booktitle     = {The Thirteenth International Conference on Learning Representations (ICLR)},
  year          = {2025},
  eprint        = {2407.01449},
  archivePrefix = {arXiv}
}"""

# sweep / study language names -> the ISO 639-1 codes of a card's ``language:``
_LANGUAGE_CODES = {"english": "en", "french": "fr", "german": "de", "spanish": "es", "italian": "it", "portuguese": "pt"}
_VERSIONS_SHOWN = {
    "text": ("lir-robust", "torch", "transformers", "sentence-transformers", "pylate", "huggingface-hub"),
    "colpali": ("lir-robust", "torch", "transformers", "peft", "colpali-engine", "huggingface-hub"),
}

_WHY_IT_MATTERS = (
    "Late-interaction retrievers (ColBERT, ColPali, ColQwen) score a document by summing, over query tokens, the "
    "hard maximum similarity to any document patch (MaxSim). MaxSim sends all of a query token's gradient to one "
    "patch and lets a single planted patch take over (\"hijack\") a query token: a document padded with patches that "
    "look like the query's words outranks the relevant one (Spike Hijacking in Late-Interaction Retrieval, "
    "arXiv 2604.05253). A pooling head that looks at more than the single best patch spreads the gradient and the "
    "score over several patches. This checkpoint scores with this head: the head is part of the model, saved in "
    "`pooling.json` (the training record below names the head it was fine-tuned through, the same one unless it says "
    "otherwise); scoring it with MaxSim instead measures another model."
)

_TRAINING_KEYS = (
    ("head", "pooling head (training)"), ("scoring_pooling", "scoring head, when not the training head"),
    ("family", "model family"), ("data", "training data"), ("data_kind", "pairs"),
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


def training_record(checkpoint: Checkpoint) -> dict[str, Any]:
    """How the checkpoint was trained, as its pooling.json (``training``) and run summary record it: ``{script,
    method, trainer, steps}``. train/finetune.py records no script (LoRA fine-tuning, its own loop); other recipes
    (examples/pylate_train_with_head.py) record ``script``, ``method`` and ``trainer`` themselves."""
    training = checkpoint.training
    summary_path = checkpoint.run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    script = training.get("script") or training.get("example") or FINETUNE_SCRIPT
    steps = next((value for value in (summary.get("step"), training.get("steps_done"), training.get("max_steps"))
                  if isinstance(value, int) and not isinstance(value, bool)), None)
    if script == FINETUNE_SCRIPT:
        return {"script": script, "method": "LoRA fine-tuning", "steps": steps,
                "trainer": "lir-robust's own training loop (Accelerate; in-batch InfoNCE over the pooled scores)"}
    return {"script": script, "method": training.get("method") or "fine-tuning", "steps": steps,
            "trainer": training.get("trainer")}


def _training_section(checkpoint: Checkpoint, base_model: str) -> str:
    training = public_value(dict(checkpoint.training))
    record = training_record(checkpoint)
    summary_path = checkpoint.run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    how = f"{record['method'][0].upper()}{record['method'][1:]} of [{base_model}](https://huggingface.co/{base_model}) " \
          f"with lir-robust's `{record['script']}`" + (f": {record['trainer']}." if record["trainer"] else ".")
    lines = ["## Training", "", how]
    if checkpoint.layout == "text-colbert":
        lines[-1] += " Published as a PyLate model: the LoRA adapter is merged into the transformer weights."
    if isinstance(record["steps"], int) and record["steps"] < SHORT_RUN_STEPS:
        lines += ["", f"**Short run:** {record['steps']} optimizer steps (fewer than {SHORT_RUN_STEPS}): a demonstration "
                  "of the recipe, not a converged model; its numbers say little about what the head does when trained "
                  "to the end."]
    lines += ["", "| setting | value |", "|---|---|", f"| base model | {base_model} |"]
    text_only = ("projection_dim", "projection_init")  # colpali-engine models keep their own custom_text_proj
    for key, label in _TRAINING_KEYS:
        if training.get(key) not in (None, "", []) and (checkpoint.family == TEXT or key not in text_only):
            lines.append(f"| {label} | {training[key]} |")
    if isinstance(record["steps"], int):
        lines.append(f"| steps done | {record['steps']} |")
    for key, label in (("val_loss", "validation loss"), ("val_top1", "validation top-1")):
        if is_finite_number(summary.get(key)):
            lines.append(f"| {label} | {summary[key]:.4g} |")
    lines += ["", "The full training configuration is in `pooling.json` (`training`).", ""]
    return "\n".join(lines)


def _few_queries_note(results: dict[str, Any]) -> list[str]:
    """A note under a table measured on few queries or on a subset of the collection (``--max-queries``)."""
    queries = results.get("evaluated_queries")
    subset = evaluated_subset(results)
    if subset is None and not (isinstance(queries, int) and queries < FEW_QUERIES):
        return []
    what = f"only {queries} queries" + (f" ({subset})" if subset else "")
    return [f"**Few queries:** this table comes from {what}; nDCG@10 differences of a few points between heads are "
            "within the noise of so few queries. Rerun the sweep on every judged query before comparing heads.", ""]


def _results_section(results: dict[str, Any], head: PoolingHead, figure: str | None) -> str:
    data = results.get("data") or {}
    subset = evaluated_subset(results)
    lines = [
        "## Robustness to document length and injected patches", "",
        f"Measured on this checkpoint by lir-robust's length / injection sweep (`eval/length_sweep.py`) on "
        f"{dataset_identifier(data.get('name')) or 'the collection'} ({results.get('evaluated_queries', '?')} queries"
        f"{': the ' + subset if subset else ''}, {data.get('documents', '?')} documents): K distractor patches are "
        "appended to documents (gaussian / corpus patches model longer documents, hard / spike patches an attack), and "
        f"every listed head scores the same embeddings. The row `{head.spec()}` is this checkpoint's own head. Retained = "
        "nDCG@10 at K / nDCG@10 at K = 0 (graded relevance judgements, pytrec_eval).", "",
        *_few_queries_note(results),
        markdown_table(results, report_k=report_k(results)).strip(), "",
    ]
    if figure:
        lines += [f"![Retained nDCG@10 against K, one line per head]({figure})", ""]
    return "\n".join(lines)


def _settings_section(settings: dict[str, Any]) -> str:
    """The PyLate settings table (as the PyLate export card has it): prefixes, lengths, dimension, query expansion."""
    lines = ["## Settings", "", "As `pylate.models.ColBERT` reads them from `config_sentence_transformers.json` and "
             "`1_Dense/`:", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in settings.items()]
    return "\n".join(lines + [""])


def installed_project_url() -> str | None:
    """lir-robust's public repository as the installed package's metadata names it (``[project.urls]``: Repository,
    Source or Homepage), None when it names none."""
    try:
        entries = importlib.metadata.metadata("lir-robust").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    urls = dict(entry.split(",", 1) for entry in entries if "," in entry)
    urls = {label.strip().lower(): url.strip() for label, url in urls.items()}
    return next((urls[label] for label in ("repository", "source", "homepage") if urls.get(label)), None)


def _project_lines(checkpoint: Checkpoint, project_url: str) -> list[str]:
    library = ("PyLate", "pip install --no-deps pylate==1.6.0") if checkpoint.family == TEXT else \
        ("colpali-engine", "pip install --no-deps colpali-engine==0.3.18")
    return [
        f"Made with [lir-robust]({project_url}) (robust pooling heads for late-interaction retrieval: training, "
        "length / injection sweeps, model cards). Install it, then the library this model loads with (lir-robust's "
        f"`make setup` does both; {library[0]} goes in with `--no-deps`, see the project's README for why):", "",
        "```bash",
        f'pip install "lir-robust @ git+{project_url}"',
        library[1],
        "```", "",
    ]


def _limitations_section(checkpoint: Checkpoint, results: dict[str, Any] | None, record: dict[str, Any]) -> str:
    spec = checkpoint.head.spec()
    scorer = ("PyLate's `colbert_scores`, `rank.rerank`, `retrieve.ColBERT` and its indexes (PLAID, Voyager)"
              if checkpoint.family == TEXT else "colpali-engine's unpatched `processor.score`")
    lines = [
        "## Limitations", "",
        f"- The head is part of the model: {scorer} score with MaxSim, which measures another model than the one "
        f"scoring with `{spec}`; score with the head as shown above (an index can still give the candidates to rerank).",
        "- Robustness is measured with embedding-level injected patches (gaussian, corpus, hard, spike) appended to "
        "documents' vectors; text-level attacks, other attack budgets and other collections are not covered, and a "
        "retained share says nothing about absolute quality on your data.",
    ]
    if results:
        name = dataset_identifier((results.get("data") or {}).get("name")) or "one collection"
        lines.append(f"- The numbers come from {name} ({results.get('evaluated_queries', '?')} queries) only; data "
                     "sets named without an owner (e.g. `cranfield`, `med`) are classic test collections in BEIR "
                     "layout read from local folders, not Hub data sets.")
        if _few_queries_note(results):
            lines.append("- Few queries: see the note under the results table.")
    else:
        lines.append("- No length / injection sweep was published with this checkpoint: its robustness is not measured here.")
    if isinstance(record["steps"], int) and record["steps"] < SHORT_RUN_STEPS:
        lines.append(f"- Short run ({record['steps']} steps): a demonstration, not a converged model.")
    if checkpoint.family == TEXT:
        lines.append("- Documents longer than the document length in the settings are truncated; the model is English "
                     "unless its base model says otherwise.")
    return "\n".join(lines + [""])


def _versions_section(checkpoint: Checkpoint, results: dict[str, Any] | None) -> str:
    names = _VERSIONS_SHOWN["text" if checkpoint.family == TEXT else "colpali"]
    measured = (results or {}).get("versions") or {}
    lines = ["## Framework versions", "", "| package | published with | sweep measured with |", "|---|---|---|"]
    for name in names:
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "n/a"
        lines.append(f"| {name} | {installed} | {measured.get(name, 'n/a')} |")
    return "\n".join(lines + [""])


def _citation_section(checkpoint: Checkpoint) -> str:
    entries = [PAPER_BIBTEX, COLBERT_BIBTEX] + ([PYLATE_BIBTEX] if checkpoint.family == TEXT else [COLPALI_BIBTEX])
    library = "PyLate" if checkpoint.family == TEXT else "ColPali"
    lines = ["## Citation", "", f"The paper this model's pooling head comes from, ColBERT (late interaction) and "
             f"{library}:", ""]
    for entry in entries:
        lines += ["```bibtex", entry, "```", ""]
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
        f'scores = pooled_scores("{spec}")(queries, documents)   # [queries, documents], the head it scores with',
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
        f'patch_processor(processor, "{spec}")   # score with its head (processor.score is MaxSim otherwise)',
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


def _dataset_ids(*specs: Any) -> list[str]:
    """The identifiers of the data sets ``specs`` name (Hub ids as they are, local folders by their name), each once."""
    return list(dict.fromkeys(found for found in map(dataset_identifier, specs) if found))


def _languages(results: dict[str, Any] | None, language: list[str] | str | None) -> list[str]:
    """The card's ``language:`` codes: ``language`` when given, else the sweep's language, else English."""
    if language:
        return [language] if isinstance(language, str) else list(language)
    recorded = str(((results or {}).get("config") or {}).get("language") or "").lower()
    return [_LANGUAGE_CODES.get(recorded, recorded)] if recorded else ["en"]


def build_model_card(
    checkpoint: Checkpoint,
    *,
    repo_id: str,
    base_model: str,
    license: str,
    project_url: str,
    results: dict[str, Any] | None = None,
    figure: str | None = None,
    study: str | os.PathLike | StudyFile | None = None,
    settings: dict[str, Any] | None = None,
    language: list[str] | str | None = None,
    mteb: MtebResults | None = None,
    attacks: AttackResults | None = None,
):
    """The model card (a huggingface_hub ``ModelCard``): metadata from ``ModelCardData``, the body in Markdown.

    ``results``: a sweep's results.json measured on the checkpoint (already public: named by ``repo_id``), the only
    source of model-index entries; ``figure``: the file name of its figure in the folder; ``study``: a ``--study``
    file (the study's summary.json, whose rows for the checkpoint's head and defence become a labelled section of
    the text, or a plain table); ``settings``: a PyLate folder's settings (:func:`lir_robust.patches.pylate.
    pylate_settings`); ``project_url``: lir-robust's public repository (the link and install line); ``language``:
    ISO codes (default: the sweep's language, else en); ``mteb``: the checkpoint's ``lir-robust mteb`` results
    (:func:`lir_robust.hub.mteb_results.load_mteb_results`), a labelled section of the text, never model-index entries;
    ``attacks``: the checkpoint's text-attack runs (:func:`lir_robust.hub.attack_results.load_checkpoint_attacks`),
    rows beside the sweep's in the text (success@10 at N = 10, retained at L = 16), never model-index entries.
    """
    from huggingface_hub import ModelCard, ModelCardData

    family_tags = ["ColBERT", "PyLate", "sentence-transformers"] if checkpoint.family == TEXT else ["colpali", "vidore"]
    tags = list(dict.fromkeys(family_tags + ["lir-robust", "late-interaction", checkpoint.head.name]))
    datasets = _dataset_ids(checkpoint.training.get("data"), ((results or {}).get("config") or {}).get("data"))
    defended = bool(checkpoint.injected_negatives)
    eval_results = eval_results_from_sweep(results) if results else []
    data = ModelCardData(
        base_model=base_model,
        datasets=datasets or None,
        eval_results=eval_results or None,
        language=_languages(results, language),
        library_name=checkpoint.library,
        license=license,
        model_name=repo_id,
        pipeline_tag=checkpoint.pipeline_tag,
        tags=tags,
    )
    what = "text ColBERT model (PyLate format)" if checkpoint.family == TEXT else f"{checkpoint.family} LoRA adapter (colpali-engine)"
    record = training_record(checkpoint)
    body = [
        f"# {repo_id.split('/')[-1]}", "",
        f"A late-interaction {what} fine-tuned from [{base_model}](https://huggingface.co/{base_model}) with the "
        f"**{checkpoint.head.spec()}** pooling head by lir-robust, which swaps MaxSim for other pooling heads and "
        "measures how retrieval holds up when documents grow or carry injected patches.", "",
        *_project_lines(checkpoint, project_url),
        _head_section(checkpoint.head),
    ]
    if settings:
        body.append(_settings_section(settings))
    if results:
        body.append(_results_section(results, checkpoint.head, figure))
    if attacks is not None and attack_section(attacks, checkpoint.head, nested=bool(results)):
        body.append(attack_section(attacks, checkpoint.head, nested=bool(results)))
    if mteb is not None:
        body.append(mteb_section(mteb))
    if study is not None:
        body.append(study_section(study, checkpoint.head, defended))
    body += [_training_section(checkpoint, base_model), _usage_section(checkpoint, repo_id),
             _limitations_section(checkpoint, results, record), _versions_section(checkpoint, results),
             _citation_section(checkpoint)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
