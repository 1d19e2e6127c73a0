"""The text-attack study: every model of the retraining study attacked with text, through its own head (issue 19.2).

One resumable plan (:class:`AttackPlan`) over a finished retraining study (``--study``, the folder ``make study``
writes): per collection of the study that has seed 0,

- ``raw``: the untrained model, attacked with every head of the study;
- every retrained variant of seed 0 (``models/<collection>/<variant>/seed0``), attacked through the head in its
  ``pooling.json`` (adaptive: HotFlip optimises against that head).

The suite per model and head (:data:`SUITE`): cluster-text N in {1, 10}; HotFlip passages N in {1, 10} (L = 32);
insertion of HotFlip snippets at L in {4, 16, 64} into 10 non-gold documents (at a sentence boundary); keyword
stuffing T in {8, 32} (10 documents); the query-text ceiling (10 documents); and HotFlip N = 50 for raw maxsim and
for the most robust variant (:func:`most_robust_variant`, or ``robust_variant``). Each run is one
:func:`~lir_robust.attacks.text.pipeline.run_text_attack` (resumable passage by passage) in its own folder.

Parts (``--list-parts`` prints them with an estimated cost): ``<collection>:<model>`` (the black-box runs and
HotFlip N = 1, every head of the model in one run each), ``<collection>:<model>[:<head>]:hotflip`` (HotFlip N = 10,
insertion L = 4 and 16), ``...:insertion`` (insertion L = 64), ``...:hotflip50`` (N = 50); raw MiniLM's optimised
runs are split per head (``cranfield:raw:softmax-tau1.0:hotflip``), a retrained model has one head.

Layout of the output folder::

    plan.json                                         the plan (a rerun with another plan stops)
    runs/<collection>/<model>/<run>[/<head>]/         run_text_attack's results.json, table.md, partial/
    cache/<collection>/<model>/                       embedding cache, removed once the model's runs are done
    timings/<part>.json                               seconds per finished step of each part
    earlier/*summary.json                             summaries of runs made elsewhere (same settings, folders gone):
                                                      their numbers fill the gaps, marked (attack_summary.merge_earlier)
    summary.json, table.md                            :func:`lir_robust.studies.attack_summary.summarize_attacks`
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lir_robust.core.errors import UserError
from lir_robust.core.files import write_json_atomic
from lir_robust.core.naming import head_folder_name
from lir_robust.scoring.pooling import load_pooling_json, parse_head
from lir_robust.studies.retraining import (Step, parts_of, plan_data_root, run_steps, saved_config_matches,
                                          variant_name, wanted_steps)

__all__ = ["AttackPlan", "AttackPlanError", "AttackRun", "SUITE", "AttackStep", "plan_steps", "parts_of", "run_attacks",
           "most_robust_variant", "model_head", "check_plan", "estimate_seconds", "measured_like", "SECONDS_PER_ITERATION_L32",
           "SETUP_SECONDS"]

logger = logging.getLogger(__name__)

# Cost model for --list-parts, measured on this 2-core machine, idle, torch's two threads (issue 19's seventh stop:
# HotFlip on raw MiniLM / Cranfield / maxsim, 32 candidates: 0.14 s per iteration at L = 32, 0.48 s at L = 128), so
# seconds per iteration = SECONDS_PER_ITERATION_BASE + SECONDS_PER_ITERATION_PER_TOKEN x L; a run's setup (model, cached
# embeddings, clean scores) a few seconds, a model's first run encodes the collection (SETUP_SECONDS covers both on
# average). Heads other than maxsim cost more per iteration (blend ~2x, measured on the retrained models). A part whose
# steps have run reports its measured seconds instead (timings/<part>.json).
SECONDS_PER_ITERATION_BASE = 0.027
SECONDS_PER_ITERATION_PER_TOKEN = 0.00354
SECONDS_PER_ITERATION_L32 = SECONDS_PER_ITERATION_BASE + 32 * SECONDS_PER_ITERATION_PER_TOKEN
SETUP_SECONDS = 30.0


class AttackPlanError(UserError):
    """An attack plan that cannot run as given (its study folder, its options, another plan in the same folder)."""


@dataclass(frozen=True)
class AttackRun:
    """One run of the suite: ``run_text_attack`` with these settings; ``part``: the part suffix it belongs to ("" for
    the model's base part)."""

    name: str
    attack: str
    n: int
    length: int = 32
    position: str = "end"
    part: str = ""


SUITE = (
    AttackRun("cluster-text-n1", "cluster-text", 1),
    AttackRun("cluster-text-n10", "cluster-text", 10),
    AttackRun("stuffing-t8", "stuffing", 10, 8),
    AttackRun("stuffing-t32", "stuffing", 10, 32),
    AttackRun("query-text-n10", "query-text", 10),
    AttackRun("hotflip-n1-l32", "hotflip", 1, 32),
    AttackRun("hotflip-n10-l32", "hotflip", 10, 32, part="hotflip"),
    AttackRun("insertion-l4", "insertion", 10, 4, "sentence", part="hotflip"),
    AttackRun("insertion-l16", "insertion", 10, 16, "sentence", part="hotflip"),
    AttackRun("insertion-l64", "insertion", 10, 64, "sentence", part="insertion"),
)
LARGE = AttackRun("hotflip-n50-l32", "hotflip", 50, 32, part="hotflip50")  # raw maxsim and the most robust variant


@dataclass
class AttackPlan:
    """What the attack study runs (saved as plan.json); the models and heads come from the study's own plan.json."""

    study: str = "results/study"
    collections: list[str] | None = None  # default: every collection of the study with seed 0
    iterations: int = 100
    candidates: int = 32
    robust_variant: str | None = None  # the retrained variant that also gets N = 50 (default: most_robust_variant)
    max_queries: int | None = None
    seed: int = 0  # the query split and clusters (the models are always the study's seed 0)
    data_root: str | None = None
    #: where the study's models are (default ``<study>/models``): a study trained elsewhere (``make study OUT=runs``)
    #: attacked with the proxies of the committed summary; not part of the plan's identity (the runs record each model path)
    models: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The plan as plan.json keeps it: without ``models``, which is where the models are read from, no setting."""
        found = dataclasses.asdict(self)
        del found["models"]
        return found

    def models_folder(self) -> Path:
        return Path(self.models) if self.models is not None else Path(self.study) / "models"

    def study_plan(self) -> dict[str, Any]:
        """The study's plan.json, else the plan inside its summary.json (a committed summary without the models)."""
        path, summary = Path(self.study) / "plan.json", Path(self.study) / "summary.json"
        if path.is_file():
            return json.loads(path.read_text())
        if summary.is_file():
            return json.loads(summary.read_text())["plan"]
        raise AttackPlanError(f"{self.study} holds no retraining study (no plan.json or summary.json): run `make study` "
                              "first or point --study at its output folder")

    def chosen_collections(self) -> list[str]:
        study = self.study_plan()
        with_seed0 = [name for name, seeds in study["collections"].items() if 0 in seeds]
        if self.collections is None:
            return with_seed0
        missing = [name for name in self.collections if name not in with_seed0]
        if missing:
            raise AttackPlanError(f"collection(s) {missing} have no seed-0 models in the study at {self.study}; "
                                  f"its collections with seed 0: {', '.join(with_seed0)}")
        return list(self.collections)


@dataclass
class AttackStep(Step):
    """A :class:`Step` running one suite run on one model; ``cache``: the model's embedding cache folder."""

    cache: Path | None = None
    run: AttackRun | None = None
    heads: int = 1  # how many heads the run attacks (for the estimate)
    iterations: int = 100
    collection: str = ""
    model: str = ""  # the attacked model: a model id / spec (raw) or a retrained model's folder


def model_head(model_dir: Path) -> str:
    """The head a retrained model was trained with (its ``pooling.json``, in ``model/`` of a fine-tuning folder)."""
    for folder in (Path(model_dir) / "model", Path(model_dir)):
        head = load_pooling_json(folder)
        if head is not None:
            return head.spec()
    raise AttackPlanError(f"{model_dir} holds no trained model with a pooling.json: finish its part of `make study` first")


def most_robust_variant(study_summary: dict[str, Any], collection: str) -> str | None:
    """The retrained variant the study marks most robust on ``collection``: target reached first, then the most of the
    target's checks passed, then spike K = 4 retained, then hard K = 4 retained (its ``targets`` rows)."""
    def key(target):
        checks = target.get("checks", {})
        return (bool(target.get("reached")), sum(bool(value) for value in checks.values()),
                _finite(target.get("spike_k4_retained")), _finite(target.get("hard_k4_retained")))

    targets = [target for target in study_summary.get("targets", []) if target["collection"] == collection]
    return max(targets, key=key)["variant"] if targets else None


def _finite(value: Any) -> float:
    return value if isinstance(value, (int, float)) and value == value else float("-inf")


def _robust_variants(plan: AttackPlan, collections: list[str], variants: list[str]) -> dict[str, str | None]:
    if plan.robust_variant is not None:
        if plan.robust_variant not in variants:
            raise AttackPlanError(f"--robust-variant {plan.robust_variant} is not a variant of the study; variants: "
                                  f"{', '.join(variants)}")
        return {collection: plan.robust_variant for collection in collections}
    path = Path(plan.study) / "summary.json"
    if not path.is_file():
        raise AttackPlanError(f"{path} is missing, so the most robust variant (which also gets N = 50) is unknown: run "
                              f"`lir-robust study --summarize-only --out {plan.study}` or name one with --robust-variant")
    summary = json.loads(path.read_text())
    return {collection: most_robust_variant(summary, collection) for collection in collections}


def _config(plan: AttackPlan, model: str, collection: str, run: AttackRun, heads: list[str], cache: Path):
    from lir_robust.attacks.text.pipeline import TextAttackConfig

    return TextAttackConfig(model=model, data=collection, attack=run.attack, n=run.n, length=run.length, heads=heads,
                            max_queries=plan.max_queries, iterations=plan.iterations, candidates=plan.candidates,
                            position=run.position, seed=plan.seed, data_root=_data_root(plan), cache_dir=str(cache))


def _data_root(plan: AttackPlan) -> str:
    return plan_data_root(plan.data_root, AttackPlanError, " or pass --data-root")


def _done(folder: Path, config) -> bool:
    wanted = config.to_dict()
    return saved_config_matches(folder, {key: value for key, value in wanted.items()
                                         if key not in ("cache_dir", "use_cache", "data_root")})


def _run(config, folder: Path, show_progress: bool) -> None:
    from lir_robust.attacks.text.pipeline import run_text_attack

    run_text_attack(config, folder, show_progress=show_progress)


def _step(plan: AttackPlan, part: str, model: str, collection: str, label: str, run: AttackRun, heads, folder: Path,
          cache: Path, show_progress: bool, count: int) -> AttackStep:
    """``heads``: a list of head specs, or a model folder whose pooling.json names the one head (read when needed)."""
    def config():
        chosen = [model_head(heads)] if isinstance(heads, Path) else list(heads)
        return _config(plan, model, collection, run, chosen, cache)

    def done() -> bool:
        if isinstance(heads, Path) and not any((heads / sub / "pooling.json").is_file() for sub in ("model", ".")):
            return False  # not trained yet
        return _done(folder, config())

    return AttackStep(f"{run.name} {collection}/{label}", part, lambda: _run(config(), folder, show_progress), done,
                      cache=cache, run=run, heads=count, iterations=plan.iterations, collection=collection, model=model)


def plan_steps(plan: AttackPlan, out: str | os.PathLike, show_progress: bool = True) -> list[AttackStep]:
    """Every step of the plan, in order: per collection, raw MiniLM's parts, then each retrained variant's."""
    out = Path(out)
    study = plan.study_plan()
    heads = [parse_head(head).spec() for head in study["heads"]]
    variants = [variant_name(head) for head in study["heads"]] + [variant_name(head, True) for head in study["defended_heads"]]
    collections = plan.chosen_collections()
    robust = _robust_variants(plan, collections, variants)
    steps: list[AttackStep] = []
    for collection in collections:
        cache = out / "cache" / collection / "raw"
        runs = out / "runs" / collection / "raw"
        for run in SUITE:  # raw: the base part attacks every head in one run; the optimised parts one head per part
            if not run.part:
                steps.append(_step(plan, f"{collection}:raw", study["model"], collection, "raw", run, heads,
                                   runs / run.name, cache, show_progress, len(heads)))
        for head in heads:
            name = head_folder_name(head)
            for run in SUITE + ((LARGE,) if head == "maxsim" else ()):
                if run.part:
                    steps.append(_step(plan, f"{collection}:raw:{name}:{run.part}", study["model"], collection,
                                       f"raw/{name}", run, [head], runs / run.name / name, cache, show_progress, 1))
        for variant in variants:
            model_dir = plan.models_folder() / collection / variant / "seed0"
            cache = out / "cache" / collection / variant
            for run in SUITE + ((LARGE,) if variant == robust[collection] else ()):
                part = f"{collection}:{variant}" + (f":{run.part}" if run.part else "")
                steps.append(_step(plan, part, str(model_dir), collection, variant, run, model_dir,
                                   out / "runs" / collection / variant / run.name, cache, show_progress, 1))
    return steps


def estimate_seconds(step: AttackStep, training_queries: int | None = None) -> float:
    """The step's cost by the module's cost model: one setup, plus for HotFlip kinds passages x iterations x seconds
    per iteration (measured at L = 32 and 128, linear in L between) per head; ``training_queries`` caps the passages (one per k-means cluster)."""
    run = step.run
    passages = min(run.n, training_queries) if training_queries else run.n
    if run.attack not in ("hotflip", "insertion"):
        return SETUP_SECONDS
    per_iteration = SECONDS_PER_ITERATION_BASE + SECONDS_PER_ITERATION_PER_TOKEN * run.length
    return SETUP_SECONDS + step.heads * passages * step.iterations * per_iteration


def measured_like(steps: Sequence[AttackStep], measured: dict[str, float]) -> dict[str, float]:
    """Estimates for the steps not yet measured, from the ones that were: the median seconds of the measured steps
    that run the same suite run with as many heads on the same collection, else on any collection (a HotFlip run costs
    about the same on every model of a collection; the cost model is only the fallback, for runs nothing like has run)."""
    def median(values: list[float]) -> float:
        values = sorted(values)
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

    def keys(step: AttackStep) -> tuple[tuple, tuple]:  # the same run on the same collection, then on any
        return (step.run.name, step.heads, step.collection), (step.run.name, step.heads)

    like: dict[tuple, list[float]] = {}
    for step in steps:
        if step.name in measured:
            for key in keys(step):
                like.setdefault(key, []).append(measured[step.name])
    found = {}
    for step in steps:
        if step.name not in measured:
            for key in keys(step):
                if key in like:
                    found[step.name] = median(like[key])
                    break
    return found


def check_plan(plan: AttackPlan, out: Path, write: bool = True) -> None:
    path = out / "plan.json"
    if path.is_file():
        saved, wanted = json.loads(path.read_text()), plan.to_dict()
        if saved != wanted:
            differing = sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
            raise AttackPlanError(f"{out} holds an attack study of another plan (differs in {', '.join(differing)}); use another --out")
    elif write:
        write_json_atomic(path, plan.to_dict())


def run_attacks(plan: AttackPlan, out: str | os.PathLike, parts: Sequence[str] | None = None,
                show_progress: bool = True) -> dict[str, float]:
    """Run the plan's steps (only those of ``parts`` if given), skipping finished ones; returns seconds per part spent
    in this call; step times accumulate in ``timings/<part>.json``. A model's embedding cache is removed once every
    step of that model is done."""
    out = Path(out)
    steps = plan_steps(plan, out, show_progress)
    todo = wanted_steps(steps, parts, lambda unknown, known: AttackPlanError(
        f"unknown attack part(s) {', '.join(unknown)}; parts: {', '.join(known)} (see --list-parts)"))
    out.mkdir(parents=True, exist_ok=True)
    check_plan(plan, out)

    def drop_finished_cache(step: AttackStep) -> None:
        sharing = [other for other in steps if other.cache == step.cache]
        if step.cache is not None and all(other.done() for other in sharing):
            shutil.rmtree(step.cache, ignore_errors=True)  # this model's embeddings are not needed any more

    return run_steps(todo, out, after_step=drop_finished_cache)
