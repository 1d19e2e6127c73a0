"""The "Text attacks" section of docs/RESULTS.md (issue 19), generated from committed text-attack results.

Input: ``results/text-attacks/<name>/results.json``, each the compact form
(:func:`lir_robust.attacks.text.results.compact_results`) of one ``lir-robust attack`` run, put there by
``lir-robust results-doc --add-text-attack RUN_FOLDER`` (the README beside them names the command of each run). A
missing folder leaves the section out (logged); a file that is not a text attack's results stops with one line.

Per collection and model (weights): one table of passage attacks (cluster-text, HotFlip: clean nDCG@10,
success@1/10/100, retained nDCG@10, the run's settings) and one of edit attacks (insertion, stuffing, query-text:
retained nDCG@10, hijack@10), each row with the embedding-level proxy beside it (spike / hard K = 4 retained of the
same model and head: :func:`lir_robust.studies.text_attack_proxy.proxy_summary`); a figure of success@10 against the
passages used, per head, for the runs that hold those values; statements computed from the numbers by the rules
they state (:func:`_findings`); and the rank correlation over variants between the proxy and the text attacks
(:func:`lir_robust.studies.text_attack_proxy.correlation_lines`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

from lir_robust.attacks.text.results import (EDIT_KINDS, PASSAGE_KINDS, RESULTS_FILE, AttackResultsError, attack_settings,
                                             compact_results, find_attack_results, read_attack_results)
from lir_robust.core.files import write_json_atomic
from lir_robust.reporting.figures import plot_success_panels
from lir_robust.reporting.format import number, percent, table_header, table_row
from lir_robust.studies.attack_summary import study_proxy
from lir_robust.studies.text_attack_proxy import correlation_lines, study_row

__all__ = ["read_text_attacks", "text_attack_runs", "add_text_attacks", "text_attack_section", "TEXT_ATTACKS_FOLDER"]

logger = logging.getLogger(__name__)

TEXT_ATTACKS_FOLDER = Path("results/text-attacks")
_ORDER = PASSAGE_KINDS + EDIT_KINDS
FEW_QUERIES = 50  # fewer held-out queries than this: the findings say how far one query moves a share
_FIX = "put the compact results of a `lir-robust attack` run there with `lir-robust results-doc --add-text-attack RUN`"


def read_text_attacks(folder: str | os.PathLike | None) -> list[tuple[str, dict[str, Any]]]:
    """``[(name, report), ...]`` of every results.json under ``folder`` (name: its folder relative to ``folder``),
    sorted by name; [] with a logged note when ``folder`` is missing; AttackResultsError (one line) for a bad file."""
    if folder is None or not Path(folder).is_dir():
        logger.info("no text-attack results in %s: the Text attacks section is left out", folder)
        return []
    folder = Path(folder)
    runs = [(path.parent.relative_to(folder).as_posix(), read_attack_results(path, "--text-attacks", _FIX))
            for path in find_attack_results(folder)]
    if not runs:
        logger.info("no results.json under %s: the Text attacks section is left out", folder)
    return runs


def text_attack_runs(run: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """``[(name, report), ...]`` of ``run``: a ``lir-robust attack`` --out folder (or its results.json), named by
    its folder; or a folder of runs (``make attack``'s ``runs/``: ``<collection>/<variant>/<run>[/<head>]``), each
    named by its path below it. AttackResultsError (one line) for a file that is not a text attack's results."""
    run = Path(run)
    fix = "pass the --out folder of a finished `lir-robust attack` run, or a folder of them"
    if run.is_file() or (run / RESULTS_FILE).is_file():
        path = run if run.is_file() else run / RESULTS_FILE
        found = [(path.parent.name, path)]
    else:
        found = [(path.parent.relative_to(run).as_posix(), path) for path in find_attack_results(run)]
        if not found:
            raise AttackResultsError(f"--add-text-attack {run}: no results.json in or under it; {fix}")
    return [(name, read_attack_results(path, "--add-text-attack", fix)) for name, path in found]


def add_text_attacks(runs: Sequence[tuple[str, dict[str, Any]]], folder: str | os.PathLike) -> list[Path]:
    """Each run's compact form (:func:`~lir_robust.attacks.text.results.compact_results`) written to
    ``folder/<name>/results.json``; returns the paths."""
    written = []
    for name, report in runs:
        written.append(Path(folder) / name / RESULTS_FILE)
        write_json_atomic(written[-1], compact_results(report), indent=1)
    return written


def _model_label(name: str, report: dict[str, Any]) -> str:
    weights = (report.get("encoder") or {}).get("weights")
    row = study_row(name, report)
    model = row[1] if row and row[0] == "retrained" else report["config"]["model"]
    return f"{model} (" + ("untrained" if weights == "base" else f"weights {weights}") + ")"


def _groups(runs: Sequence[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str], list[tuple[str, dict[str, Any]]]]:
    """Runs by (collection, model label), each group in the suite's order (kind, N, length, name)."""
    groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for name, report in runs:
        groups.setdefault((report["data"]["name"], _model_label(name, report)), []).append((name, report))
    for members in groups.values():
        members.sort(key=lambda item: (_ORDER.index(item[1]["config"]["attack"]), item[1]["config"]["n"],
                                       item[1]["config"]["length"], item[0]))
    return groups


def _proxy(study: dict[str, Any] | None, name: str, report: dict[str, Any], head: str) -> list[str]:
    """The embedding-level proxy cells (spike, hard K = 4 retained): the study's row of the same model and head
    (:func:`~lir_robust.studies.text_attack_proxy.study_row`); ``-`` when the run does not say which model of the study it attacked."""
    row = study_row(name, report)
    if row is None:
        return ["-", "-"]
    values = study_proxy(study, report["data"]["name"], row[0], row[1], head)
    return [percent(values["spike_k4_retained"]), percent(values["hard_k4_retained"])]


def _seconds_per_iteration(entry: dict[str, Any]) -> str:
    hotflip = entry.get("hotflip")
    if isinstance(hotflip, list) and hotflip:  # a full results.json: one entry per passage
        return f"{sum(stat.get('seconds_per_iteration', 0) for stat in hotflip) / len(hotflip):.2f}"
    if isinstance(hotflip, dict) and "mean_seconds_per_iteration" in hotflip:
        return f"{hotflip['mean_seconds_per_iteration']:.2f}"
    return "-"


def _passage_table(members, study) -> list[str]:
    lines = table_header(["run", "attack", "settings", "head", "queries", "clean nDCG@10", "success@1", "success@10",
                          "success@100", "retained nDCG@10", "proxy: spike K=4 kept", "proxy: hard K=4 kept",
                          "s / HotFlip iteration"])
    for name, report in members:
        config = report["config"]
        for head, entry in report["results"].items():
            metrics = entry["metrics"]
            lines.append(table_row([name, config["attack"], attack_settings(config, report["split"]), head,
                                    report["split"]["held_out_queries"],
                                    number(metrics.get("ndcg@10_clean")), percent(metrics.get("success@1")),
                                    percent(metrics.get("success@10")), percent(metrics.get("success@100")),
                                    percent(metrics.get("ndcg@10_retained")), *_proxy(study, name, report, head),
                                    _seconds_per_iteration(entry)]))
    return lines


def _edit_table(members, study) -> list[str]:
    lines = table_header(["run", "attack", "settings", "head", "queries", "clean nDCG@10", "retained nDCG@10",
                          "hijack@10", "over length", "proxy: spike K=4 kept", "proxy: hard K=4 kept"])
    for name, report in members:
        config = report["config"]
        for head, entry in report["results"].items():
            metrics = entry["metrics"]
            lines.append(table_row([name, config["attack"], attack_settings(config, report["split"]), head,
                                    report["split"]["held_out_queries"],
                                    number(metrics.get("ndcg@10_clean")), percent(metrics.get("ndcg@10_retained")),
                                    percent(metrics.get("hijack@10")),
                                    percent(metrics["over_length"]) if "over_length" in metrics else "-",
                                    *_proxy(study, name, report, head)]))
    return lines


def _findings(members) -> list[str]:
    """Statements computed from the numbers: per passage kind, the largest success@10 with N = 10 passages and the
    head it was measured on; issue 19's target (untrained maxsim, N = 10: success@10 >= 50 %) checked on every
    measured maxsim row; per edit kind, the largest hijack@10; and, with fewer than :data:`FEW_QUERIES` held-out
    queries, how far one query moves a share."""
    lines = []
    held_out = sorted({report["split"]["held_out_queries"] for _, report in members})
    if held_out and held_out[0] < FEW_QUERIES:
        lines.append(f"- Few held-out queries ({', '.join(map(str, held_out))}): one query moves a success@k or hijack "
                     f"share by {100 / held_out[0]:.1f} points.")
    for kind in PASSAGE_KINDS:
        rows = [(entry["metrics"]["success@10"], head, name, report) for name, report in members
                if report["config"]["attack"] == kind and report["config"]["n"] == 10 for head, entry in report["results"].items()]
        if rows:
            value, head, name, report = max(rows, key=lambda row: row[0])
            lines.append(f"- {kind}, N = 10: the largest success@10 is {percent(value)} ({head}, run {name}: "
                         f"{attack_settings(report['config'])}); the smallest {percent(min(row[0] for row in rows))}.")
    maxsim = [(entry["metrics"]["success@10"], name) for name, report in members
              if report["config"]["attack"] in PASSAGE_KINDS and report["config"]["n"] == 10
              and (report.get("encoder") or {}).get("weights") == "base" for head, entry in report["results"].items()
              if head == "maxsim"]
    if maxsim:
        value, name = max(maxsim)
        collection = members[0][1]["data"]["name"]
        where = "" if collection == "cranfield" else f"; the issue sets it on Cranfield, the same rule here on {collection}"
        lines.append(f"- Issue 19's target (untrained maxsim, N = 10 passages in the top 10 for >= 50 % of held-out "
                     f"queries{where}): {'reached' if value >= 0.5 else 'not reached'}; the best run is {name} ({percent(value)}).")
    for kind in EDIT_KINDS:
        rows = [(entry["metrics"]["hijack@10"], head, name) for name, report in members
                if report["config"]["attack"] == kind for head, entry in report["results"].items()]
        if rows and max(row[0] for row in rows) == 0:
            lines.append(f"- {kind}: hijack@10 is 0.0 % in every run and head measured ({len(rows)} rows).")
        elif rows:
            value, head, name = max(rows, key=lambda row: row[0])
            lines.append(f"- {kind}: the largest hijack@10 is {percent(value)} ({head}, run {name}).")
    return lines


def _figure(members, title: str, path: Path) -> Path | None:
    panels = [(f"{report['config']['attack']}, {attack_settings(report['config'])}",
               {head: entry["success@10_by_n"] for head, entry in report["results"].items() if entry.get("success@10_by_n")})
              for _, report in members if report["config"]["attack"] in PASSAGE_KINDS and report["config"]["n"] > 1]
    return plot_success_panels([panel for panel in panels if panel[1]], title, path)


def text_attack_section(runs: Sequence[tuple[str, dict[str, Any]]], study: dict[str, Any] | None = None,
                        figures: Path | None = None, figures_link: str = "figures") -> list[str]:
    """The section's Markdown lines ([] without runs); its figures (PNG) go into ``figures`` when given. ``study``:
    the proxy rows in the study summary's shape (the study's summary.json, or
    :func:`~lir_robust.studies.text_attack_proxy.proxy_summary` of it and the recipe search's files)."""
    if not runs:
        return []
    lines = ["## Text attacks (issue 19): adversarial text, re-encoded", "",
             "Attacks an adversary can carry out: text written into the collection and encoded by the model under test "
             "(`lir-robust attack`, lir_robust/attacks/text/). The judged queries are split 50/50 (seed in each run); "
             "attacks read only the training half, every number is on the held-out half. Passage attacks add N new "
             "passages (cluster-text: a k-means cluster's training queries concatenated, no gradients; hotflip: L "
             "tokens optimised by HotFlip against one cluster, through the model and the head of the row): success@k = "
             "share of held-out queries with a passage in their top k. Edit attacks change N non-gold documents "
             "(insertion: a HotFlip snippet of L tokens; stuffing: the T most frequent content words of the training "
             "queries; query-text: each held-out query's own text, the ceiling): hijack@10 = share of held-out queries "
             "whose top 10 gains an edited document; over length = share of edited documents longer than the model's "
             "document length (cut there: an appended snippet may be lost). Retained = attacked / clean nDCG@10. The proxy columns are the "
             "embedding-level attack of the same head on the same model (spike / hard K = 4 retained nDCG@10: the "
             "retraining study's raw rows for the untrained model, else the recipe search's untrained screens; for a run "
             "kept as `<collection>/<variant>/<run>`, that variant of the study's recipe retrained, from the study, the "
             "recipe search or the coherence direction; `-` when the run does not name the model, n/a where no source "
             "has the row). Inputs: `results/text-attacks/<run>/results.json` (the README there gives the command of "
             "each run).", ""]
    for (collection, model), members in _groups(runs).items():
        lines += [f"### {collection}, {model}", ""]
        findings = _findings(members)
        if findings:
            lines += findings + [""]
        passages = [item for item in members if item[1]["config"]["attack"] in PASSAGE_KINDS]
        edits = [item for item in members if item[1]["config"]["attack"] in EDIT_KINDS]
        if passages:
            lines += ["Passage attacks:", "", *_passage_table(passages, study), ""]
        if edits:
            lines += ["Edit attacks:", "", *_edit_table(edits, study), ""]
        if figures is not None:
            name = "text_attacks_" + re.sub(r"[^A-Za-z0-9.]+", "-", f"{collection} {model}").strip("-") + ".png"
            if _figure(passages, f"success@10 against passages used: {collection}, {model}", figures / name) is not None:
                lines += [f"![success@10 against adversarial passages used, {collection}, {model}]({figures_link}/{name})", ""]
    return lines + correlation_lines(runs, study)
