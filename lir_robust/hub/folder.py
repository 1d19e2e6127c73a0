"""The folder that is uploaded: the checkpoint's files in its family's convention, pooling.json, the figure and the
model card, built beside its destination and renamed into place once it validates.

    prepare_publish_folder("runs/finetune-topk", "out/topk", repo_id="alice/robust-topk", license="apache-2.0",
                           base_model="vidore/colqwen2-base", results="auto", study="results/study/summary.json")

colpali-engine checkpoints are copied adapter-only (``adapter_config.json`` naming the base by its Hub id); text
ColBERT checkpoints are exported as a whole PyLate model (LoRA merged). Touches no network.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from lir_robust.core.files import usual_permissions, write_json_atomic, write_text_atomic
from lir_robust.hub.attack_results import (AttackResults, check_attacks_match, copy_attack_results,
                                           find_checkpoint_attacks, load_checkpoint_attacks)
from lir_robust.hub.card import build_model_card, installed_project_url
from lir_robust.hub.checkpoint import TEXT, Checkpoint, base_model_id, locate_checkpoint, public_value, pylate_module
from lir_robust.hub.licenses import check_license
from lir_robust.hub.mteb_results import MtebResults, check_mteb_match, copy_mteb_results, find_mteb_results, load_mteb_results
from lir_robust.core.huggingface import HubError
from lir_robust.encoders.resolve import is_hub_id
from lir_robust.hub.study_results import check_study_for
from lir_robust.hub.sweep_results import check_results_match, find_results, load_sweep_results, public_results
from lir_robust.hub.validate import CARD_FILE, validate_publish_folder
from lir_robust.reporting.figures import plot_retained
from lir_robust.reporting.sweep_report import FIGURE_FILE
from lir_robust.scoring.pooling import POOLING_FILE

__all__ = ["prepare_publish_folder", "check_publish_options", "FIGURE_FILE"]

logger = logging.getLogger(__name__)



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
        pylate_module().export_pylate(checkpoint.model_dir, target)
        return
    target.mkdir(parents=True)
    _copy_tree(checkpoint.model_dir, target, skip=(CARD_FILE, POOLING_FILE))
    if checkpoint.layout == "colpali-adapter":
        adapter = json.loads((target / "adapter_config.json").read_text())
        adapter["base_model_name_or_path"] = base_model
        write_json_atomic(target / "adapter_config.json", adapter, indent=2)


def _write_pooling(checkpoint: Checkpoint, target: Path) -> None:
    """pooling.json as saved, its training configuration with local paths shortened."""
    saved = json.loads((checkpoint.model_dir / POOLING_FILE).read_text())
    saved["training"] = public_value(saved.get("training") or {})
    write_json_atomic(target / POOLING_FILE, saved, indent=2)


def _write_figure(results: dict[str, Any], target: Path) -> str:
    """The sweep's figure (retained nDCG@10 against K), drawn again from the public results so that its title names
    the repo, not a local folder; returns its file name."""
    plot_retained(results, target / FIGURE_FILE)
    return FIGURE_FILE


def _check_new_folder_place(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HubError(
            f"--dry-run {out}: {'a file' if not out.is_dir() else 'a folder that is not empty'}; pass a new or empty "
            "folder (nothing already there is overwritten)"
        )


def check_publish_options(repo_id: str, license: str, project_url: str | None = None) -> tuple[str, str]:
    """The options every publish needs, checked before anything else (no file read, no network): the repo id, the
    licence (one the Hub accepts) and lir-robust's public URL (``project_url``, else the installed package's
    ``[project.urls]``). Returns ``(licence, project URL)``; HubError naming the fix otherwise."""
    if not is_hub_id(repo_id) or repo_id.count("/") != 1:
        raise HubError(f"--repo {repo_id!r}: expected a Hub id OWNER/NAME (your user or organisation, and a name)")
    license = check_license(license)
    url = (project_url or installed_project_url() or "").strip()
    if not url:
        raise HubError(
            "no project URL for the card's link and install line: pass --project-url https://github.com/OWNER/lir-robust "
            "(where lir-robust's code is public), or name it in pyproject.toml's [project.urls] Repository"
        )
    if not url.startswith(("https://", "http://")) or any(character.isspace() for character in url):
        raise HubError(f"--project-url {url!r}: expected the https:// address of lir-robust's public repository")
    return license, url


def _sweep_for_card(checkpoint: Checkpoint, results: str | os.PathLike | None, repo_id: str) -> dict[str, Any] | None:
    """The sweep results the card shows (``results``: a path, ``"auto"`` or None), checked against the checkpoint's
    weights and named by ``repo_id``; None when there are none."""
    path = find_results(checkpoint) if results == "auto" else (Path(results).expanduser() if results else None)
    if path is None:
        return None
    sweep = load_sweep_results(path)
    check_results_match(sweep, checkpoint, path)
    logger.info("results from %s", path)
    return public_results(sweep, repo_id)


def _mteb_for_card(checkpoint: Checkpoint, mteb: str | os.PathLike | None) -> MtebResults | None:
    """The mteb results the folder carries (``mteb``: a ``lir-robust mteb --out`` folder, ``"auto"`` for
    ``<run>/mteb`` when there, or None), read and checked (weights not yet); None when there are none."""
    folder = find_mteb_results(checkpoint) if mteb == "auto" else mteb
    if folder is None:
        return None
    results = load_mteb_results(folder)
    logger.info("mteb results from %s (%d runs)", results.folder, len(results.rows))
    return results


def _attacks_for_card(checkpoint: Checkpoint, attacks: str | os.PathLike | None) -> AttackResults | None:
    """The text-attack runs the folder carries (``attacks``: a folder of ``lir-robust attack --out`` folders,
    ``"auto"`` for ``<run>/attack`` when there, or None), read and checked (weights not yet); None when none."""
    folder = find_checkpoint_attacks(checkpoint) if attacks == "auto" else attacks
    if folder is None:
        return None
    results = load_checkpoint_attacks(folder)
    logger.info("text-attack results from %s (%d runs)", results.folder, len(results.runs))
    return results


def prepare_publish_folder(
    checkpoint: str | os.PathLike | Checkpoint,
    out: str | os.PathLike,
    *,
    repo_id: str,
    license: str,
    base_model: str | None = None,
    results: str | os.PathLike | None = "auto",
    study: str | os.PathLike | None = None,
    project_url: str | None = None,
    language: list[str] | str | None = None,
    mteb: str | os.PathLike | None = "auto",
    attacks: str | os.PathLike | None = "auto",
) -> Path:
    """Write into ``out`` (new or empty) exactly the folder that would be uploaded, validated; returns ``out``.

    ``results``: a sweep results.json, ``"auto"`` (the one beside the checkpoint, if any) or None. ``study``: the
    retraining study's summary.json (or a plain table, see :func:`lir_robust.hub.study_section`). ``base_model``: the
    Hub id of the base when the checkpoint was trained on a local folder. ``mteb``: a ``lir-robust mteb --out``
    folder measured on the checkpoint, ``"auto"`` (``<run>/mteb`` when there) or None: its result files go under
    ``mteb/`` and its table into the card's text. ``attacks``: a folder of ``lir-robust attack`` runs measured on
    the checkpoint, ``"auto"`` (``<run>/attack`` when there) or None: compact copies under ``attacks/`` and the
    text-attack rows in the card's text. ``project_url``: lir-robust's public
    repository (default: the installed package's); ``language``: the card's ISO codes. Touches no network. The folder is built
    beside ``out`` and renamed into place only once it validates, so ``out`` is either complete or absent.
    """
    license, project_url = check_publish_options(repo_id, license, project_url)
    out = Path(out).expanduser()
    _check_new_folder_place(out)
    checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else locate_checkpoint(checkpoint)
    base = base_model_id(checkpoint, base_model)
    mteb_results = _mteb_for_card(checkpoint, mteb)  # a bad folder stops here, before any model is loaded
    attack_results = _attacks_for_card(checkpoint, attacks)
    sweep = _sweep_for_card(checkpoint, results, repo_id)
    if mteb_results is not None:
        check_mteb_match(mteb_results, checkpoint)
    if attack_results is not None:
        check_attacks_match(attack_results, checkpoint)
    if study is not None:  # a bad study file stops here, before anything is written
        study = check_study_for(study, checkpoint.head, bool(checkpoint.injected_negatives))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging_parent = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    staging = staging_parent / "repo"
    try:
        _write_model_files(checkpoint, staging, base)
        _write_pooling(checkpoint, staging)
        figure = _write_figure(sweep, staging) if sweep is not None else None
        if mteb_results is not None:
            copy_mteb_results(mteb_results, staging, repo_id)
        if attack_results is not None:
            copy_attack_results(attack_results, staging, repo_id)
        settings = pylate_module().pylate_settings(staging) if checkpoint.family == TEXT else None
        card = build_model_card(checkpoint, repo_id=repo_id, base_model=base, license=license, project_url=project_url,
                                results=sweep, figure=figure, study=study, settings=settings, language=language,
                                mteb=mteb_results, attacks=attack_results)
        write_text_atomic(staging / CARD_FILE, str(card))
        validate_publish_folder(staging)
        usual_permissions(staging)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging_parent, ignore_errors=True)
    logger.info("wrote %s (%d files)", out, sum(1 for path in out.rglob("*") if path.is_file()))
    return out
