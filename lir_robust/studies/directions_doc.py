"""The "Directions tried" and "Text defence" parts of docs/RESULTS.md's recipe-search section (issue 20).

Rows and checks: :mod:`lir_robust.studies.directions`. Per collection one target table (a row per direction, head and
seed; every check ok / no, ``-`` where the number was not measured), then a list of what each direction gave, each
line computed by the rule :func:`_gave` states. The text defence (issue 19's adversarial passages as negatives,
``results/text-defence/summary.json``) gets its table and the rule-based comparison of :func:`text_defence_section`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from lir_robust.reporting.format import budget, number, paired, percent, table_header, table_row
from lir_robust.studies.directions import (BUDGET_FACTOR, CHECKS, CLEAN_GAP, HARD_POINTS, SPIKE_BAR, checks, direction_rows,
                                           reference_maxsim)

__all__ = ["directions_section", "text_defence_section"]

_NAMES = {"clean": f"clean nDCG@10 within {-CLEAN_GAP:g}", "spike": f"spike K=4 >= {100 * SPIKE_BAR:.0f} %",
          "hard": f"hard K=4 >= +{100 * HARD_POINTS:.0f} points", "budgets": f"budgets >= {BUDGET_FACTOR:g}x"}


def _mark(value: bool | None) -> str:
    return "-" if value is None else "ok" if value else "no"


def _table(rows: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> list[str]:
    lines = table_header(["direction", "head", "seed", "nDCG@10 K=0 (gap)", "paired vs maxsim K=0", "spike K=4",
                          "hard K=4 (points over maxsim)", "budget spike / hard", *(_NAMES[name] for name in CHECKS)])
    for row in rows:
        marks = checks(row, reference)
        gap = row["ndcg10_k0"] - reference["ndcg10_k0"]
        points = 100 * (row["retained_hard_k4"] - reference["retained_hard_k4"])
        budgets = ("not measured (K 0, 4)" if row["budget_spike"] is None and row["budget_hard"] is None
                   else f"{budget(row['budget_spike'])} / {budget(row['budget_hard'])}")
        lines.append(table_row([row["direction"], f"`{row['head']}`", row["seed"], f"{number(row['ndcg10_k0'])} ({gap:+.3f})",
                                paired(row["paired"]), percent(row["retained_spike_k4"]),
                                f"{percent(row['retained_hard_k4'])} ({points:+.1f})", budgets,
                                *(_mark(marks[name]) for name in CHECKS)]))
    return lines


def _gave(collection: str, rows: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> tuple[str, int]:
    """One line for one direction and head over its seeds: a check is met when it holds in every seed, missed when it
    fails in at least one (with how many seeds met it and the best value), not measured when no seed has the number;
    seeds whose paired clean difference to maxsim is above two standard errors are counted. Returns the line and the
    number of checks met."""
    marks = [checks(row, reference) for row in rows]
    met, missed, unmeasured = [], [], []
    for name in CHECKS:
        values = [mark[name] for mark in marks if mark[name] is not None]
        if not values:
            unmeasured.append(_NAMES[name])
        elif all(values):
            met.append(_NAMES[name])
        else:
            best = {"clean": lambda r: f"best gap {max(x['ndcg10_k0'] for x in r) - reference['ndcg10_k0']:+.3f}",
                    "spike": lambda r: f"best {percent(max(x['retained_spike_k4'] for x in r))}",
                    "hard": lambda r: f"best {100 * (max(x['retained_hard_k4'] for x in r) - reference['retained_hard_k4']):+.1f} points",
                    "budgets": lambda r: "best " + " / ".join(
                        budget(max((x[f'budget_{kind}'] for x in r if x[f'budget_{kind}'] is not None), default=None))
                        for kind in ("spike", "hard"))}[name](rows)
            count = f"{sum(values)} of {len(values)} seeds; " if len(values) > 1 else ""
            missed.append(f"{_NAMES[name]} ({count}{best})")
    seeds = ", ".join(row["seed"] for row in rows if row["seed"] != "-")
    verdict = ("reaches the target" if not missed and not unmeasured else
               "; ".join(part for part in (f"meets {', '.join(met)}" if met else "meets no check",
                                           f"misses {', '.join(missed)}" if missed else "",
                                           f"not measured: {', '.join(unmeasured)}" if unmeasured else "") if part))
    gains = [row["paired"] for row in rows if row["paired"] and row["paired"].get("n")]
    above = [stats for stats in gains if stats["mean"] > 2 * stats["se"]]
    if above:  # issue 20's "better": a paired clean gain over maxsim larger than two standard errors
        verdict += f"; paired clean gain over maxsim above two standard errors in {len(above)} of {len(gains)}"
    where = f"; seed {seeds}" if seeds else ""
    return f"- {collection}, {rows[0]['direction']} (`{rows[0]['head']}`{where}): {verdict}.", len(met)


def directions_section(inputs: Mapping[str, Any], study: Mapping[str, Any] | None) -> list[str]:
    """The "Directions tried" part: empty when there is no direction row or no retrained maxsim to check against."""
    references = reference_maxsim(study)
    rows = [row for row in direction_rows(inputs, study) if row["collection"] in references]
    if not rows:
        return []
    lines = ["### Directions tried (issue 20): the target table per collection and seed", "",
             "Every direction measured, each row one (direction, scoring head, seed), checked against retrained maxsim "
             "(the study's, mean over its seeds, as the target check above): clean nDCG@10 at K = 0 within 0.01, "
             "spike K = 4 retained at least 60 %, hard K = 4 retained at least 15 points above maxsim's, median "
             "hijack budgets (spike and hard) at least twice maxsim's. '-': not measured (a sweep of K = 0 and 4 gives "
             "no comparable budget). Paired: per-query nDCG@10 difference at K = 0 against maxsim of the same seed "
             "(the study's rows: pooled over its seeds; the screen's: maxsim on the same untrained model), mean ± "
             "standard error; '-' where no paired run exists. The screen rows are the untrained model, checked against "
             "the retrained reference all the same. Sources: results/recipe-search/ (summary.json, corpus-hard/, "
             "coherence/) and results/study/summary.json.", ""]
    for collection, reference in references.items():
        mine = [row for row in rows if row["collection"] == collection]
        if not mine:
            continue
        seeds = ("seeds " if len(reference["seeds"]) > 1 else "seed ") + ", ".join(map(str, reference["seeds"]))
        lines += [f"#### {collection}", "",
                  f"Reference, retrained maxsim ({seeds}): nDCG@10 {number(reference['ndcg10_k0'])}, spike K=4 "
                  f"{percent(reference['retained_spike_k4'])}, hard K=4 {percent(reference['retained_hard_k4'])}, budgets "
                  f"spike / hard {budget(reference['budget_spike'])} / {budget(reference['budget_hard'])}.", ""]
        lines += _table(mine, reference) + [""]
    unfinished = (inputs.get("coherence_retrained") or {}).get("unfinished") or []
    if unfinished:
        lines += ["Not finished when coherence/retrained.json was written (no rows yet): " + ", ".join(unfinished) + ".", ""]
    lines += ["#### What each gave", ""]
    for collection, reference in references.items():
        groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for row in rows:
            if row["collection"] == collection:
                groups.setdefault((row["direction"], row["head"]), []).append(row)
        if not groups:
            continue
        counted = [_gave(collection, group, reference) for group in groups.values()]
        lines += [line for line, _ in counted]
        reached = [key for key, (line, _) in zip(groups, counted) if line.endswith("reaches the target.")]
        most = max(count for _, count in counted)
        closest = [f"{direction} (`{head}`)" for (direction, head), (_, count) in zip(groups, counted) if count == most]
        lines.append(f"- {collection}: the whole target (every check in every seed) is reached by "
                     + (", ".join(f"{d} (`{h}`)" for d, h in reached) if reached else "no direction")
                     + f"; most checks met in every seed ({most} of {len(CHECKS)}): {'; '.join(closest)}.")
    return lines + [""]


def text_defence_section(summary: Mapping[str, Any] | None) -> list[str]:
    """Issue 19's text defence (adversarial passages as fine-tuning negatives), judged by new attacks on held-out
    queries. Each defended model is compared with the model of its collection (its entry's ``collection``; one group
    when entries name none) trained without passages."""
    models = (summary or {}).get("models") or {}
    if not models:
        return []
    lines = ["### Text defence: adversarial passages as negatives (issue 19, results/text-defence/)", "",
             "Fine-tuned with the study's recipe, then judged only by NEW attacks optimised against each trained model "
             "and its head on held-out queries (HotFlip, cluster-text; N = 10 passages); clean nDCG@10 on all judged "
             "queries.", ""]
    lines += table_header(["model", "trained with", "adversarial passages", "seed", "attacked through", "HotFlip",
                           "clean nDCG@10", "HotFlip success@10", "HotFlip success@100", "cluster-text success@10",
                           "held-out queries", "median step (s)"])

    def attack(entry, name, key):
        return (entry.get(name) or {}).get(key)

    for name, entry in models.items():
        config = entry.get("finetune") or {}
        head = attack(entry, "hotflip", "head") or attack(entry, "cluster-text", "head")
        lines.append(table_row([name, f"`{config.get('pooling')}`", " ".join(config.get("adversarial_passages") or []) or "none",
                                config.get("seed"), f"`{head}`" if head else "n/a", _hotflip_setting(entry.get("hotflip")),
                                number(entry.get("clean_ndcg@10_all_queries")),
                                percent(attack(entry, "hotflip", "success@10")), percent(attack(entry, "hotflip", "success@100")),
                                percent(attack(entry, "cluster-text", "success@10")),
                                attack(entry, "hotflip", "held_out_queries") or "n/a",
                                number(config.get("median_step_time_s"), digits=1)]))
    lines += ["", "What it gave (each model against the first of its collection trained without passages):", ""]
    baselines = {entry.get("collection"): entry for entry in reversed(models.values())
                 if not (entry.get("finetune") or {}).get("adversarial_passages")}  # the first of each collection
    for name, entry in models.items():
        baseline = baselines.get(entry.get("collection"))
        if baseline is None or entry is baseline:
            continue
        clean = (baseline.get("clean_ndcg@10_all_queries"), entry.get("clean_ndcg@10_all_queries"))
        if None in clean:
            continue
        gap = clean[1] - clean[0]
        changes = [f"{label} {percent(attack(baseline, kind, key))} -> {percent(attack(entry, kind, key))}"
                   for label, kind, key in (("HotFlip success@10", "hotflip", "success@10"),
                                            ("success@100", "hotflip", "success@100"),
                                            ("cluster-text success@10", "cluster-text", "success@10"))
                   if (attack(baseline, kind, key), attack(entry, kind, key)) != (None, None)]  # neither attacked: left out
        lines.append(f"- {name}: clean nDCG@10 {clean[0]:.3f} -> {clean[1]:.3f} ({gap:+.3f}, "
                     f"{'within' if gap >= CLEAN_GAP else 'outside'} issue 20's 0.01); " + ", ".join(changes) + ".")
    return lines + _text_target_lines(models) + [""]


def _hotflip_setting(hotflip: Mapping[str, Any] | None) -> str:
    """``L 32, 20 it., 1 pos.`` from a HotFlip entry's settings (results/text-defence/summarize.py records them)."""
    settings = (hotflip or {}).get("hotflip_settings") or {}
    parts = [f"L {settings['length']}" if settings.get("length") else None,
             f"{settings['iterations']} it." if settings.get("iterations") is not None else None,
             f"{settings.get('positions') or 1} pos." if settings.get("length") else None]
    return ", ".join(part for part in parts if part) or "n/a"


def _text_target_lines(models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Issue 19's second target, per collection group: a model's HotFlip success@10 (an attack optimised against it)
    at most a quarter of the maxsim-trained model's under the same HotFlip setting, clean nDCG@10 within 0.01 of it."""
    def setting(entry):
        return _hotflip_setting(entry.get("hotflip"))

    references = [(name, entry) for name, entry in models.items() if (entry.get("finetune") or {}).get("pooling") == "maxsim"
                  and (entry.get("hotflip") or {}).get("success@10") is not None]
    if not references:
        return ["- Issue 19's text target (HotFlip success@10 at most a quarter of retrained maxsim's, clean within "
                "0.01): not checkable here: no maxsim-trained model was attacked in this run."]
    lines = []
    for reference_name, reference in references:
        quarter = reference["hotflip"]["success@10"] / 4
        clean = reference.get("clean_ndcg@10_all_queries")
        verdicts = []
        for name, entry in models.items():
            success = (entry.get("hotflip") or {}).get("success@10")
            if entry is reference or success is None or entry.get("collection") != reference.get("collection") \
                    or setting(entry) != setting(reference):
                continue
            own = entry.get("clean_ndcg@10_all_queries")
            gap = None if None in (own, clean) else own - clean
            met = success <= quarter and gap is not None and gap >= CLEAN_GAP
            verdicts.append(f"{name} {percent(success)} at clean {'n/a' if gap is None else f'{gap:+.3f}'}: "
                            f"{'met' if met else 'missed'}")
        lines.append(f"- Issue 19's text target against {reference_name} (HotFlip {setting(reference)}: success@10 "
                     f"{percent(reference['hotflip']['success@10'])}, so at most {percent(quarter)}; clean "
                     f"{number(clean)}, so at least {number(None if clean is None else clean + CLEAN_GAP)}): "
                     + ("; ".join(verdicts) if verdicts else "no other model attacked with the same setting") + ".")
    return lines
