"""The retraining study: can training with a pooling head (or against injected patches) make a retriever robust?

One resumable plan (:class:`StudyPlan`), run in named parts (``raw:<collection>``, ``<collection>:seed<k>``), then
summarised (:func:`summarize_study`). For every collection and seed it fine-tunes one model per head (the command's
defaults, i.e. the measured recipe, plus the seed) and one per defended head (the same, with negatives that carry
injected patches during training), then sweeps each:

- protocol ``retrained``: each model scored with the head it was trained with;
- protocol ``swap`` (the paper's): the maxsim-trained model scored with every head;
- protocol ``raw``: the untrained model with every head (the "before training" of the gradient Gini).

Sweeps cover length growth (gaussian / corpus patches into all documents), attacks (hard / spike patches into
non-gold documents) and few-document attacks (``hard@N`` / ``spike@N``: N non-gold documents per query, each with
its own patches) over the plan's budgets K.

Layout of the output folder::

    plan.json                                  the plan (a rerun with another plan stops)
    models/<collection>/<variant>/seed<k>/     fine-tuning output folders (resumed when killed)
    sweeps/<collection>/<variant>/seed<k>/     sweep reports (results.json, table.md, PNG); raw/ for the untrained
    timings/<part>.json                        seconds per finished step of each part (parts may run in parallel
                                               processes: `--parts a` and `--parts b` side by side, one thread each)
    summary.json                               every number the report needs (committed; docs/RESULTS.md is built
                                               from it by ``make results-doc``)

Everything is resumable: a finished fine-tuning or sweep is skipped, a killed one continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from lir_robust.core.files import write_json_atomic
from lir_robust.core.naming import head_folder_name
from lir_robust.scoring.pooling import parse_head

__all__ = ["DEFENCE", "StudyPlan", "Step", "plan_steps", "parts_of", "wanted_steps", "run_steps", "step_timings",
           "part_seconds", "plan_data_root",
           "saved_config_matches", "run_study", "summarize_study", "variant_name", "STUDY_KS",
           "STUDY_KINDS", "STUDY_HEADS"]

logger = logging.getLogger(__name__)

STUDY_HEADS = ("maxsim", "topk:k=4", "softmax:tau=0.1", "softmax:tau=1.0", "lse:tau=0.1", "exclusive")
STUDY_KINDS = ("gaussian", "corpus", "hard", "spike", "hard@10", "spike@10", "hard@50", "spike@50")
STUDY_KS = (0, 1, 2, 4, 8, 16, 25, 50, 100, 400)
DEFENCE = ("spike:4", "hard:4")
# Hub ids of the offline defaults, for cards and reports (the weights are the same; only the name is local).
MODEL_HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


class StudyPlanError(ValueError):
    """A study plan that cannot run as given (its options, its data root, or another plan in the same folder)."""

@dataclass
class StudyPlan:
    """What the study trains and measures (saved as plan.json)."""

    model: str = "minilm"
    collections: dict[str, list[int]] = field(default_factory=lambda: {"cranfield": [0, 1, 2], "med": [0]})
    heads: list[str] = field(default_factory=lambda: list(STUDY_HEADS))
    defended_heads: list[str] = field(default_factory=lambda: ["maxsim", "exclusive"])
    defence: list[str] = field(default_factory=lambda: list(DEFENCE))  # train/finetune.py --injected-negatives
    kinds: list[str] = field(default_factory=lambda: list(STUDY_KINDS))
    ks: list[int] = field(default_factory=lambda: list(STUDY_KS))
    finetune_args: list[str] = field(default_factory=list)  # extra train/finetune.py options (defaults: the recipe)
    data_root: str | None = None
    # CPU threads of each fine-tuning process (OMP_NUM_THREADS), as `accelerate launch` gives a CPU process: two threads
    # were faster on an idle 2-core machine but several times slower whenever another process held a core (the
    # study's own step times, timings/<part>.json, show it)
    finetune_threads: int = 1

    def __post_init__(self):
        self.heads = [parse_head(head).spec() for head in self.heads]
        self.defended_heads = [parse_head(head).spec() for head in self.defended_heads]
        if "maxsim" not in self.heads:
            raise StudyPlanError("the study compares every head with maxsim: keep maxsim among the heads")
        unknown = set(self.defended_heads) - set(self.heads)
        if unknown:
            raise StudyPlanError(f"defended heads {sorted(unknown)} are not among the study's heads {self.heads}")
        if not self.collections or any(not seeds for seeds in self.collections.values()):
            raise StudyPlanError("the study needs at least one collection with at least one seed")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def variant_name(head: str, defended: bool = False) -> str:
    """Folder-safe name of a trained variant: ``topk-k4``, ``maxsim+defence``."""
    name = head_folder_name(parse_head(head).spec())
    return name + ("+defence" if defended else "")


@dataclass
class Step:
    """One unit of work: a fine-tuning run or a sweep, in a named part, done when ``done()`` says so."""

    name: str
    part: str
    action: Callable[[], None]
    done: Callable[[], bool]


def plan_data_root(explicit: str | None, error: type[Exception], hint: str = "") -> str:
    """The plan's data root (else $LIR_ROBUST_DATA_ROOT); ``error`` (one line, ``hint`` appended) when there is none."""
    from lir_robust.data import data_root

    root = explicit or data_root()
    if root is None:
        raise error(f"no data root: set LIR_ROBUST_DATA_ROOT (the folder holding cranfield/ and med/){hint}")
    return str(root)


def _data_root(plan: StudyPlan) -> str:
    return plan_data_root(plan.data_root, StudyPlanError)


def _finetune_command(plan: StudyPlan, collection: str, head: str, seed: int, defended: bool, out: Path) -> list[str]:
    command = [sys.executable, "-m", "lir_robust.commands.finetune", "--model", plan.model, "--data", collection,
               "--pooling", head, "--seed", str(seed), "--output-dir", str(out),
               "--save-every", "10"]  # a checkpoint every 10 of the 40 steps: a killed run continues from it
    command += ["--injected-negatives", *(plan.defence if defended else ["none"])]  # explicit, whatever the default
    return command + list(plan.finetune_args)


def _run_finetune(command: list[str], out: Path, data_root: str, threads: int) -> None:
    from lir_robust.training.runs import package_environment

    out.mkdir(parents=True, exist_ok=True)
    environment = {**package_environment(), "LIR_ROBUST_DATA_ROOT": data_root, "OMP_NUM_THREADS": str(threads),
                   "MKL_NUM_THREADS": str(threads)}
    with open(out / "finetune.log", "a") as log:
        finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    if finished.returncode != 0:
        raise RuntimeError(f"fine-tuning failed (exit {finished.returncode}); see {out / 'finetune.log'}: {' '.join(command)}")


def _sweep_config(plan: StudyPlan, model: str, collection: str, heads: Sequence[str], cache: Path):
    from lir_robust.sweep.pipeline import SweepConfig

    return SweepConfig(model=model, data=collection, data_root=_data_root(plan), heads=list(heads), kinds=list(plan.kinds),
                       ks=list(plan.ks), cache_dir=str(cache))


def saved_config_matches(folder: Path, wanted: dict[str, Any]) -> bool:
    """Whether ``folder/results.json`` exists and its ``config`` holds every item of ``wanted`` (a finished step)."""
    results = folder / "results.json"
    if not results.is_file():
        return False
    try:
        saved = json.loads(results.read_text())["config"]
    except (ValueError, KeyError):
        return False
    return all(saved.get(key) == value for key, value in wanted.items())


def _sweep_done(out: Path, config) -> bool:
    wanted = config.to_dict()
    return saved_config_matches(out, {key: wanted[key] for key in ("model", "data", "heads", "kinds", "ks", "seed")})


def _run_sweep(config, out: Path, cache: Path, show_progress: bool) -> None:
    from lir_robust.sweep.pipeline import run_length_sweep

    run_length_sweep(config, out, show_progress=show_progress)
    shutil.rmtree(cache, ignore_errors=True)  # this model's embeddings are not needed once its sweep is written
    shutil.rmtree(out / "partial", ignore_errors=True)


def plan_steps(plan: StudyPlan, out: Path, show_progress: bool = True) -> list[Step]:
    """Every step of the study, in order, with its part: ``raw:<collection>`` then ``<collection>:seed<k>``."""
    out = Path(out)
    steps: list[Step] = []
    root = _data_root(plan)
    for collection, seeds in plan.collections.items():
        sweep_out = out / "sweeps" / collection / "raw"
        cache = out / "cache" / collection / "raw"
        config = _sweep_config(plan, plan.model, collection, plan.heads, cache)
        steps.append(Step(f"sweep {collection}/raw", f"raw:{collection}",
                          lambda c=config, o=sweep_out, k=cache: _run_sweep(c, o, k, show_progress),
                          lambda c=config, o=sweep_out: _sweep_done(o, c)))
    for collection, seeds in plan.collections.items():
        for seed in seeds:
            part = f"{collection}:seed{seed}"
            variants = [(head, False) for head in plan.heads] + [(head, True) for head in plan.defended_heads]
            for head, defended in variants:
                name = variant_name(head, defended)
                model_out = out / "models" / collection / name / f"seed{seed}"
                command = _finetune_command(plan, collection, head, seed, defended, model_out)
                steps.append(Step(f"fine-tune {collection}/{name}/seed{seed}", part,
                                  lambda c=command, o=model_out: _run_finetune(c, o, root, plan.finetune_threads),
                                  lambda o=model_out: (o / "summary.json").is_file()))
                heads = plan.heads if (head == "maxsim" and not defended) else [head]  # swap protocol on maxsim's model
                sweep_out = out / "sweeps" / collection / name / f"seed{seed}"
                cache = out / "cache" / collection / name / f"seed{seed}"
                config = _sweep_config(plan, str(model_out), collection, heads, cache)
                steps.append(Step(f"sweep {collection}/{name}/seed{seed}", part,
                                  lambda c=config, o=sweep_out, k=cache: _run_sweep(c, o, k, show_progress),
                                  lambda c=config, o=sweep_out: _sweep_done(o, c)))
    return steps


def parts_of(steps: Sequence[Step]) -> list[str]:
    """The named parts, in order."""
    return list(dict.fromkeys(step.part for step in steps))


def _check_plan(plan: StudyPlan, out: Path, write: bool = True) -> None:
    path = out / "plan.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != plan.to_dict():
            differing = sorted(key for key in set(saved) | set(plan.to_dict()) if saved.get(key) != plan.to_dict().get(key))
            raise StudyPlanError(f"{out} holds a study of another plan (differs in {', '.join(differing)}); use another --out")
    elif write:
        write_json_atomic(path, plan.to_dict())


def run_study(plan: StudyPlan, out: str | os.PathLike, parts: Sequence[str] | None = None, show_progress: bool = True) -> dict[str, float]:
    """Run the plan's steps (only those of ``parts`` if given), skipping finished ones; returns seconds per part spent
    in this call. Step times accumulate in ``timings/<part>.json`` (one file per part, so several processes can run
    different parts side by side)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_plan(plan, out)
    steps = plan_steps(plan, out, show_progress)
    todo = wanted_steps(steps, parts, lambda unknown, known: StudyPlanError(
        f"unknown study part(s) {unknown}; parts: {', '.join(known)}"))
    return run_steps(todo, out)


def wanted_steps(steps: Sequence[Step], parts: Sequence[str] | None,
                 unknown_error: Callable[[list[str], list[str]], Exception]) -> list[Step]:
    """The steps of ``parts`` (every step when None), in order; ``unknown_error(unknown, known)`` is raised for a
    part no step has."""
    known = parts_of(steps)
    wanted = known if not parts else list(parts)
    unknown = [part for part in wanted if part not in known]
    if unknown:
        raise unknown_error(unknown, known)
    return [step for step in steps if step.part in wanted]


def run_steps(todo: Sequence[Step], out: Path, after_step: Callable[[Step], None] | None = None) -> dict[str, float]:
    """Run the steps not done yet, in order; seconds per part spent in this call. Step times accumulate in
    ``out/timings/<part>.json`` (one file per part, so several processes can run different parts side by side);
    ``after_step(step)`` runs after each step that ran."""
    spent: dict[str, float] = {}
    for number, step in enumerate(todo, start=1):
        if step.done():
            logger.info("[%d/%d] %s: done already", number, len(todo), step.name)
            continue
        logger.info("[%d/%d] %s (part %s)", number, len(todo), step.name, step.part)
        tick = time.perf_counter()
        step.action()
        seconds = time.perf_counter() - tick
        spent[step.part] = spent.get(step.part, 0.0) + seconds
        path = out / "timings" / f"{step.part.replace(':', '_')}.json"
        timings = json.loads(path.read_text()) if path.is_file() else {"steps": {}}
        timings["steps"][step.name] = {"part": step.part, "seconds": seconds}
        write_json_atomic(path, timings)
        if after_step is not None:
            after_step(step)
    return spent


# --------------------------------------------------------------------------------------------------------------
# Summary: every number the report needs, from the sweeps' results.json files
# --------------------------------------------------------------------------------------------------------------

SUMMARY_KS = (4, 100)  # the budgets the tables report (the curves use every K)


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    finite = [value for value in values if value is not None and not (isinstance(value, float) and math.isnan(value))]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((value - mean) ** 2 for value in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return {"mean": mean, "std": std, "n": len(finite)}


def _paired(differences: Sequence[float]) -> dict[str, float]:
    """Mean and standard error of per-query paired differences."""
    n = len(differences)
    if n == 0:
        return {"mean": math.nan, "se": math.nan, "n": 0}
    mean = sum(differences) / n
    variance = sum((value - mean) ** 2 for value in differences) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "se": math.sqrt(variance / n), "n": n}


def _record(results: dict[str, Any], head: str) -> dict[str, Any]:
    """What the summary keeps of one (sweep, head): curves, table values, per-query nDCG@10 at the reported points."""
    metrics = results["metrics"][head]
    ks = results["ks"]
    record: dict[str, Any] = {"ndcg10": {}, "retained": {}, "hijack_rate_top10": {}, "budget_median": {},
                              "per_query_ndcg10": {}, "per_query_budget": {}}
    for injection, entry in metrics.items():
        by_k = entry["by_k"]
        record["ndcg10"][injection] = {str(k): by_k[str(k)]["mean"]["ndcg@10"] for k in ks}
        record["retained"][injection] = {str(k): by_k[str(k)]["retained"]["ndcg@10"] for k in ks}
        record["hijack_rate_top10"][injection] = {str(k): by_k[str(k)].get("hijack_rate_top10") for k in ks if k > 0}
        record["budget_median"][injection] = entry["hijack_budget"]["median"]
        record["per_query_budget"][injection] = entry["hijack_budget"]["per_query"]
        for k in (0, *SUMMARY_KS):
            if str(k) in by_k:
                record["per_query_ndcg10"][f"{injection}|{k}"] = by_k[str(k)]["per_query"]["ndcg@10"]
    record["gini"] = results["gradient_concentration_gold_pairs"][head]["gini"]
    record["query_ids"] = results["query_ids"]
    return record


def summarize_study(plan: StudyPlan, out: str | os.PathLike) -> dict[str, Any]:
    """Read every finished sweep of the plan and write ``summary.json``: per (collection, protocol, variant, head, seed)
    the curves and table values, their mean / std over seeds, paired per-query differences against maxsim (same
    collection, protocol and seed), Gini before and after training, the target check and the study's cost."""
    out = Path(out)
    _check_plan(plan, out, write=False)  # never a summary of another plan's sweeps under this plan's name
    runs: list[dict[str, Any]] = []
    collections: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for collection, seeds in plan.collections.items():
        raw = out / "sweeps" / collection / "raw" / "results.json"
        if raw.is_file():
            results = json.loads(raw.read_text())
            collections[collection] = {**results["data"], "split": results["config"]["split"],
                                       "evaluated_queries": results["evaluated_queries"]}
            for head in plan.heads:
                runs.append({"collection": collection, "protocol": "raw", "variant": "raw", "head": head, "seed": None,
                             **_record(results, head)})
        for seed in seeds:
            variants = [(head, False) for head in plan.heads] + [(head, True) for head in plan.defended_heads]
            for trained, defended in variants:
                name = variant_name(trained, defended)
                path = out / "sweeps" / collection / name / f"seed{seed}" / "results.json"
                if not path.is_file():
                    continue
                results = json.loads(path.read_text())
                models[f"{collection}/{name}/seed{seed}"] = {"weights": results["encoder"].get("weights"),
                                                             "base_weights": results["encoder"].get("base_weights")}
                runs.append({"collection": collection, "protocol": "retrained", "variant": name, "head": trained,
                             "seed": seed, **_record(results, trained)})
                if trained == "maxsim" and not defended:
                    for head in plan.heads:
                        runs.append({"collection": collection, "protocol": "swap", "variant": "maxsim", "head": head,
                                     "seed": seed, **_record(results, head)})
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["collection"], run["protocol"], run["variant"], run["head"]), []).append(run)
    rows = [_aggregate(key, members, groups, plan) for key, members in groups.items()]
    summary = {
        "plan": plan.to_dict(),
        "model_hub_id": MODEL_HUB_IDS.get(plan.model, plan.model),
        "collections": collections,
        "models": models,
        "rows": rows,
        "targets": _targets(rows, plan),
        "timings": _study_timings(out),
        "notes": {
            "retained": "nDCG@10 at K / nDCG@10 at K = 0 (same model, head and seed), mean and std over seeds",
            "paired_vs_maxsim": "per-query nDCG@10 differences (this row - maxsim of the same protocol, collection and "
                                "seed), pooled over seeds: mean and standard error",
            "budget": "median over queries of the smallest K with no gold document in the top 10; inf: never in the grid",
            "gini": "standard Gini of per-patch gradient norms on (query, gold document) pairs at K = 0; before = the "
                    "untrained model with the same head",
        },
    }
    write_json_atomic(out / "summary.json", summary)
    return summary


def _aggregate(key: tuple, members: list[dict[str, Any]], groups: dict, plan: StudyPlan) -> dict[str, Any]:
    collection, protocol, variant, head = key
    injections = list(members[0]["ndcg10"])
    ks = list(members[0]["ndcg10"][injections[0]])
    row: dict[str, Any] = {"collection": collection, "protocol": protocol, "variant": variant, "head": head,
                           "seeds": [member["seed"] for member in members]}
    row["ndcg10"] = {injection: {k: _mean_std([m["ndcg10"][injection][k] for m in members]) for k in ks} for injection in injections}
    row["retained"] = {injection: {k: _mean_std([m["retained"][injection][k] for m in members]) for k in ks} for injection in injections}
    row["hijack_rate_top10"] = {injection: {k: _mean_std([m["hijack_rate_top10"][injection][k] for m in members]) for k in ks if k != "0"}
                                for injection in injections}
    row["budget_median"] = {injection: _mean_std([m["budget_median"][injection] for m in members]) for injection in injections}
    row["budget_median_per_seed"] = {injection: [m["budget_median"][injection] for m in members] for injection in injections}
    row["gini_after"] = _mean_std([m["gini"] for m in members])
    raw = groups.get((collection, "raw", "raw", head))
    row["gini_before"] = raw[0]["gini"] if raw else math.nan
    # paired per-query differences against maxsim of the same protocol / seed (retrained: maxsim's own model)
    reference_variant = "raw" if protocol == "raw" else "maxsim"
    reference = {m["seed"]: m for m in groups.get((collection, protocol, reference_variant, "maxsim"), [])}
    paired: dict[str, dict[str, float]] = {}
    for point in members[0]["per_query_ndcg10"]:
        differences = []
        for member in members:
            other = reference.get(member["seed"])
            if other is None or point not in other["per_query_ndcg10"]:
                continue
            differences += [a - b for a, b in zip(member["per_query_ndcg10"][point], other["per_query_ndcg10"][point])]
        paired[point] = _paired(differences)
    row["paired_vs_maxsim"] = paired
    return row


def _targets(rows: list[dict[str, Any]], plan: StudyPlan) -> list[dict[str, Any]]:
    """Issue 10's target, per retrained variant and collection, against retrained maxsim."""
    by_key = {(row["collection"], row["protocol"], row["variant"]): row for row in rows}
    out = []
    for row in rows:
        if row["protocol"] != "retrained" or row["variant"] == "maxsim":
            continue
        reference = by_key.get((row["collection"], "retrained", "maxsim"))
        if reference is None:
            continue

        def value(r, table, injection, k):
            entry = r[table].get(injection, {})
            return entry.get(str(k), {}).get("mean", math.nan) if k is not None else entry.get("mean", math.nan)

        clean_gap = value(row, "ndcg10", "hard", 0) - value(reference, "ndcg10", "hard", 0)
        spike4 = value(row, "retained", "spike", 4)
        hard4, hard4_maxsim = value(row, "retained", "hard", 4), value(reference, "retained", "hard", 4)
        budgets = {kind: (row["budget_median"].get(kind, {}).get("mean", math.nan),
                          reference["budget_median"].get(kind, {}).get("mean", math.nan)) for kind in ("hard", "spike")}
        checks = {
            "clean_within_0.01": clean_gap >= -0.01,
            "spike_k4_retained_at_least_50pct": spike4 >= 0.5,
            "hard_k4_15_points_above_maxsim": hard4 - hard4_maxsim >= 0.15,
            "budget_hard_at_least_twice_maxsim": budgets["hard"][0] >= 2 * budgets["hard"][1],
            "budget_spike_at_least_twice_maxsim": budgets["spike"][0] >= 2 * budgets["spike"][1],
        }
        out.append({"collection": row["collection"], "variant": row["variant"], "head": row["head"],
                    "clean_ndcg10_gap": clean_gap, "spike_k4_retained": spike4, "hard_k4_retained": hard4,
                    "hard_k4_retained_maxsim": hard4_maxsim, "budgets": {k: list(v) for k, v in budgets.items()},
                    "checks": checks, "reached": all(checks.values())})
    return out


def step_timings(out: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every finished step's ``{"part", "seconds"}`` by step name, as :func:`run_steps` keeps them in
    ``out/timings/<part>.json``."""
    steps: dict[str, dict[str, Any]] = {}
    for path in sorted((Path(out) / "timings").glob("*.json")):
        steps.update(json.loads(path.read_text()).get("steps", {}))
    return steps


def part_seconds(steps: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Seconds per part of :func:`step_timings`' steps."""
    parts: dict[str, float] = {}
    for entry in steps.values():
        parts[entry["part"]] = parts.get(entry["part"], 0.0) + entry["seconds"]
    return parts


def _study_timings(out: Path) -> dict[str, Any]:
    steps = step_timings(out)
    if not steps:
        return {}
    parts = part_seconds(steps)
    finetune = sum(e["seconds"] for name, e in steps.items() if name.startswith("fine-tune"))
    sweeps = sum(e["seconds"] for name, e in steps.items() if name.startswith("sweep"))
    return {"parts_s": parts, "total_s": sum(parts.values()), "finetune_s": finetune, "sweep_s": sweeps, "steps": len(steps)}
