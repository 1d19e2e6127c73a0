"""Pushing the folder to the Hub, and the whole publish command (a dry run, or build then push).

    publish("runs/finetune-topk", "alice/robust-topk", license="mit", dry_run="out/topk")   # folder, no network
    publish("runs/finetune-topk", "alice/robust-topk", license="mit", private=True)         # the commit's URL

The token comes from ``huggingface_hub.get_token()`` only (HF_TOKEN, then the login cache), never from a command
line, and is never logged. ``HF_HUB_OFFLINE=1``, a missing token, or an unreachable Hub each end in one
:class:`HubError` naming the fix (the Hub is probed within ``timeout`` seconds before anything is uploaded); nothing local is changed by a failed push.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from lir_robust.core.huggingface import DEFAULT_TIMEOUT_S, HubError, endpoint, hub_call, hub_offline, no_network
from lir_robust.hub.folder import check_publish_options, prepare_publish_folder
from lir_robust.scoring.pooling import load_pooling_json

__all__ = ["check_can_push", "check_hub", "push_folder", "publish"]

logger = logging.getLogger(__name__)


def check_can_push() -> str:
    """The token (from huggingface_hub.get_token()); HubError at once when offline or not logged in."""
    from huggingface_hub import get_token

    if hub_offline():
        raise HubError(
            "cannot push: HF_HUB_OFFLINE is set. Unset it (`make publish` does, unless you set it yourself), or write "
            "the folder that would be uploaded with --dry-run OUT"
        )
    token = get_token()
    if not token:
        raise HubError("cannot push: no Hugging Face token; log in with `hf auth login` (or set HF_TOKEN in the environment)")
    return token


def check_hub(repo_id: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """Everything a push needs from the Hub, asked before anything is built: not offline, a token, and the Hub
    reachable within ``timeout`` seconds with that token. Returns the token; one HubError line otherwise."""
    token = check_can_push()
    user = _probe(token, timeout, repo_id)
    logger.info("reached %s as %s", endpoint(), user)
    return token


def _probe(token: str, timeout: float, repo_id: str) -> str:
    """Reach the Hub once with a bounded wait and check the token; returns the user name."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    def call():
        response = get_session().get(f"{endpoint()}/api/whoami-v2", headers=build_hf_headers(token=token), timeout=timeout)
        hf_raise_for_status(response)
        return response.json().get("name", "?")

    return hub_call("reach the Hub", call, token, repo_id)


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    token: str | None = None,
) -> str:
    """Upload ``folder`` (already validated) to the model repo ``repo_id``; returns the commit or pull-request URL.

    Creates the repo (``private``) and the branch ``revision`` when missing. The repo then mirrors the folder: files
    it no longer holds are deleted in the same commit (``.gitattributes`` is kept). The token comes from
    ``huggingface_hub.get_token()`` (HF_TOKEN, then the login cache) and is never logged. ``token``: one
    :func:`check_hub` already checked (the Hub is then not probed again).
    """
    from huggingface_hub import HfApi

    token = token or check_hub(repo_id, timeout)
    api = HfApi(token=token)
    hub_call(f"create {repo_id}", lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"), token, repo_id)
    if revision and revision != "main":
        hub_call(f"create the branch {revision}", lambda: api.create_branch(repo_id, branch=revision, exist_ok=True), token, repo_id)
    info = hub_call(
        f"upload to {repo_id}",
        lambda: api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision, create_pr=create_pr,
            commit_message=commit_message or f"Publish with lir-robust ({load_pooling_json(folder).spec()} head)",
            delete_patterns=["*"],
        ),
        token, repo_id,
    )
    url = str(getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or f"{endpoint()}/{repo_id}")
    logger.info("published %s: %s", repo_id, url)
    return url


def publish(
    checkpoint: str | os.PathLike,
    repo_id: str,
    *,
    license: str,
    dry_run: str | os.PathLike | None = None,
    base_model: str | None = None,
    results: str | os.PathLike | None = "auto",
    study: str | os.PathLike | None = None,
    project_url: str | None = None,
    language: list[str] | str | None = None,
    mteb: str | os.PathLike | None = "auto",
    attacks: str | os.PathLike | None = "auto",
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> str:
    """``dry_run``: write the folder there and return its path, with huggingface_hub offline (no network). Else
    check the options, then the Hub (offline flag, token, reachable: :func:`check_hub`), and only then build the
    folder in a temporary folder, push it and return the URL: a push that cannot happen stops before anything is
    built, with one line."""
    license, project_url = check_publish_options(repo_id, license, project_url)
    folder_options = dict(repo_id=repo_id, license=license, base_model=base_model, results=results, study=study,
                          project_url=project_url, language=language, mteb=mteb, attacks=attacks)
    if dry_run is not None:
        with no_network():
            return str(prepare_publish_folder(checkpoint, dry_run, **folder_options))
    token = check_hub(repo_id, timeout)
    with tempfile.TemporaryDirectory(prefix="lir-robust-publish-") as scratch:
        folder = prepare_publish_folder(checkpoint, Path(scratch) / "repo", **folder_options)
        return push_folder(folder, repo_id, private=private, revision=revision, commit_message=commit_message,
                           create_pr=create_pr, timeout=timeout, token=token)
