"""Publishing fine-tuned checkpoints to the Hugging Face Hub, and loading them back by name.

    folder = prepare_publish_folder("runs/finetune-topk", "out/topk", repo_id="user/name", license="apache-2.0")
    push_folder(folder, "user/name", private=True)     # the token comes from huggingface_hub.get_token() only
    resolve_model_spec("user/name")                    # a published id -> its local snapshot folder (load_encoder)

One module per concern:

- :mod:`~lir_robust.core.huggingface`: the HubError every failure becomes, the offline switch, the endpoint, one Hub
  call whose failure is one line (the token scrubbed).
- :mod:`~lir_robust.encoders.resolve`: Hub ids, the local Hub cache, a published id -> its snapshot folder.
- :mod:`~lir_robust.hub.checkpoint`: a checkpoint on disk (family, layout, head, training configuration, base model).
- :mod:`~lir_robust.hub.sweep_results`: the checkpoint's own sweep (found, checked, model-index entries).
- :mod:`~lir_robust.hub.mteb_results`: the checkpoint's ``lir-robust mteb`` results (found, checked, copied under
  ``mteb/``, a labelled table in the text).
- :mod:`~lir_robust.hub.attack_results`: the checkpoint's ``lir-robust attack`` runs (found, checked, compact copies
  under ``attacks/``, text-attack rows beside the sweep's in the text).
- :mod:`~lir_robust.hub.study_results`: the retraining study's rows for the checkpoint's head (section, entries).
- :mod:`~lir_robust.hub.card`: the model card (``ModelCard`` / ``ModelCardData``).
- :mod:`~lir_robust.hub.licenses`: the licence identifiers the Hub accepts, and the check.
- :mod:`~lir_robust.hub.validate`, :mod:`~lir_robust.hub.folder`: the folder that is uploaded, checked and built.
- :mod:`~lir_robust.hub.push`: the push and the publish command.

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
``ModelCardData`` (never YAML written by hand): base model, data sets, licence, library, pipeline tag, tags, the
checkpoint's own length / injection results (from a sweep ``results.json``) as a table, a figure and model-index
entries (``retained_ndcg_at_10`` with ``metric_args`` {head, kind, K, clean nDCG@10}: only the checkpoint's own
measurements), and, given the retraining study's summary.json, its rows for the checkpoint's head as a section of
the text labelled as the study's own models (never model-index entries); the checkpoint's ``lir-robust mteb``
results (``<run>/mteb`` or ``--mteb``): mteb's result files under ``mteb/`` and a labelled table in the text; its
text-attack runs (``<run>/attack`` or ``--attacks``): compact copies under ``attacks/`` and rows (success@10 at N =
10, retained nDCG@10 at L = 16) beside the sweep's, in the text only.

Network: only :func:`push_folder` and :func:`resolve_model_spec` (for an id that is not in the local Hub cache) reach
the Hub. ``HF_HUB_OFFLINE=1``, a missing token, or an unreachable Hub each end in one :class:`HubError` naming the fix,
within ``timeout`` seconds, before the folder is built; nothing local is changed by a failed push. The token is never logged or written.
"""

from lir_robust.hub.card import PAPER_BIBTEX, build_model_card, installed_project_url
from lir_robust.hub.checkpoint import (
    COLPALI_LIBRARY,
    MINILM_HUB_ID,
    PYLATE_LIBRARY,
    TEXT,
    Checkpoint,
    base_model_id,
    locate_checkpoint,
)
from lir_robust.core.huggingface import DEFAULT_TIMEOUT_S, HubError
from lir_robust.hub.folder import FIGURE_FILE, check_publish_options, prepare_publish_folder
from lir_robust.hub.licenses import HUB_LICENSES, check_license
from lir_robust.hub.push import check_can_push, check_hub, publish, push_folder
from lir_robust.encoders.resolve import cached_snapshot, is_hub_id, resolve_model_spec
from lir_robust.hub.mteb_results import MtebResults, find_mteb_results, load_mteb_results
from lir_robust.hub.attack_results import AttackResults, find_checkpoint_attacks, load_checkpoint_attacks
from lir_robust.hub.study_results import (
    STUDY_COLUMNS,
    StudyFile,
    read_study,
    study_rows_for,
    study_section,
)
from lir_robust.hub.sweep_results import check_results_match, eval_results_from_sweep, find_results, load_sweep_results
from lir_robust.hub.validate import CARD_FILE, validate_publish_folder
from lir_robust.scoring.pooling import POOLING_FILE

__all__ = [
    "HubError",
    "Checkpoint",
    "locate_checkpoint",
    "is_hub_id",
    "base_model_id",
    "find_results",
    "load_sweep_results",
    "check_results_match",
    "eval_results_from_sweep",
    "MtebResults",
    "find_mteb_results",
    "load_mteb_results",
    "AttackResults",
    "find_checkpoint_attacks",
    "load_checkpoint_attacks",
    "StudyFile",
    "read_study",
    "study_rows_for",
    "study_section",
    "build_model_card",
    "prepare_publish_folder",
    "validate_publish_folder",
    "check_can_push",
    "check_hub",
    "check_license",
    "check_publish_options",
    "installed_project_url",
    "HUB_LICENSES",
    "push_folder",
    "publish",
    "cached_snapshot",
    "resolve_model_spec",
    "PAPER_BIBTEX",
    "DEFAULT_TIMEOUT_S",
    "POOLING_FILE",
    "CARD_FILE",
    "FIGURE_FILE",
    "STUDY_COLUMNS",
    "TEXT",
    "PYLATE_LIBRARY",
    "COLPALI_LIBRARY",
    "MINILM_HUB_ID",
]
