"""A training-side defence against text attacks: adversarial PASSAGES as negatives (adversarial training).

The text attacks (lir_robust.attacks.text) publish new passages crafted against clusters of queries. Fine-tuning
with ``--adversarial-passages cluster-text:10 hotflip:10`` crafts such passages against the defender's OWN training
queries (the pseudo-queries of the training pairs: never an evaluation query) and adds every passage, as text
re-encoded through the current encoder at each step, to the negatives of every query of the batch. Passages are
documents: their embeddings keep their gradient, as any negative document's do; what is held fixed is their TEXT,
the attack's solution (Danskin's theorem, as for the injected negatives of lir_robust.training.defence).

How the passages are made (the attack code itself, no copy):

- the pool: at most ``pool`` training-pair queries, drawn once by ``seed``;
- clusters: the pool's query embeddings under the model at the first build, k-means (one clustering per kind, with
  its N clusters; :func:`lir_robust.attacks.text.queries.kmeans`), kept for the whole run;
- ``cluster-text:N``: each cluster's query texts concatenated (:func:`lir_robust.attacks.text.blackbox.cluster_passages`;
  no gradients: built once);
- ``hotflip:N``: one passage of ``length`` tokens per cluster, optimised by HotFlip
  (:func:`lir_robust.attacks.text.hotflip.hotflip_passage`) against the CURRENT model and the head being trained,
  ``iterations`` swaps per build; rebuilt every ``refresh`` steps, each build continuing from the previous build's
  tokens (so the passages keep up with the model: 40 steps with refresh 10 give 4 builds).

Passage negatives are tokenised at the model's inference document length (as the attack's passages are encoded).

Files: each build is saved in ``<output-dir>/adversarial-passages/step-<S>.json`` (texts, HotFlip token ids,
clusters as pool positions, the pool's queries, costs) and ``step-<S>.txt`` (the texts, one per line). A resumed run
loads the build its step needs, or rebuilds it from the build before (the same texts: the model is restored from the
checkpoint, HotFlip draws its positions from its own seeded generator and never from the global one).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from lir_robust.attacks.text.blackbox import cluster_passages
from lir_robust.attacks.text.hotflip import HotFlipSettings, candidate_vocabulary, hotflip_passage
from lir_robust.attacks.text.queries import cluster_members, kmeans, mean_vectors
from lir_robust.core.files import write_json_atomic, write_text_atomic
from lir_robust.scoring.pooling import PoolingHead
from lir_robust.training.defence import parse_kind_count

__all__ = ["ADVERSARIAL_PASSAGE_KINDS", "PASSAGE_FOLDER", "AdversarialPassages", "parse_adversarial_passage",
           "PassageBank"]

logger = logging.getLogger(__name__)

ADVERSARIAL_PASSAGE_KINDS = ("cluster-text", "hotflip")
PASSAGE_FOLDER = "adversarial-passages"


def parse_adversarial_passage(text: str) -> tuple[str, int]:
    """``"hotflip:10"`` -> ``("hotflip", 10)``: a passage kind (cluster-text or hotflip) and its number of passages
    N >= 1 (one per cluster of training queries)."""
    return parse_kind_count(text, ADVERSARIAL_PASSAGE_KINDS, "N", "passages, one per query cluster", "hotflip:10")


@dataclass(frozen=True)
class AdversarialPassages:
    """What the defence crafts: ``kinds`` ((kind, N) pairs, each kind once); HotFlip's ``length`` tokens,
    ``iterations`` per build, ``candidates`` and ``positions`` swapped per iteration (the attack's ``--positions``);
    ``refresh``: steps between HotFlip builds (0: built once, at step 0);
    ``pool``: training queries clustered; ``seed``: the pool, the clusters and HotFlip's positions."""

    kinds: tuple[tuple[str, int], ...]
    refresh: int = 10
    length: int = 32
    iterations: int = 10
    candidates: int = 32
    positions: int = 1
    pool: int = 256
    seed: int = 0

    def __post_init__(self):
        names = [kind for kind, _ in self.kinds]
        if not names:
            raise ValueError("AdversarialPassages needs at least one (kind, N)")
        if len(set(names)) != len(names):
            raise ValueError(f"give each adversarial-passage kind once, got {list(self.spec())}")
        for kind, count in self.kinds:
            parse_adversarial_passage(f"{kind}:{count}")
        for name, least in (("refresh", 0), ("length", 1), ("iterations", 0), ("candidates", 1), ("positions", 1), ("pool", 1),
                            ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"AdversarialPassages.{name} must be an integer >= {least}, got {value!r}")

    @classmethod
    def parse(cls, items: Sequence[str], **settings: Any) -> "AdversarialPassages":
        """From their text forms: ``AdversarialPassages.parse(["cluster-text:10", "hotflip:10"], refresh=10)``."""
        return cls(tuple(parse_adversarial_passage(item) for item in items), **settings)

    def spec(self) -> tuple[str, ...]:
        return tuple(f"{kind}:{count}" for kind, count in self.kinds)

    @property
    def optimised(self) -> bool:
        """Whether any kind runs HotFlip (and so is rebuilt every ``refresh`` steps)."""
        return any(kind == "hotflip" for kind, _ in self.kinds)

    def build_step(self, step: int) -> int:
        """The step of the build that the negatives of optimizer step ``step`` (0-based: steps done) come from."""
        if not self.optimised or not self.refresh:
            return 0
        return step - step % self.refresh

    def hotflip(self, build: int, cluster: int) -> HotFlipSettings:
        return HotFlipSettings(length=self.length, iterations=self.iterations, candidates=self.candidates,
                               positions=self.positions, init="queries", seed=self.seed + 1_000 * build + cluster)


class PassageBank:
    """The run's passages: built, saved and reloaded by step (see the module docstring)."""

    def __init__(self, plan: AdversarialPassages, training_queries: Sequence[str], folder: str | Path,
                 show_progress: bool = True):
        self.plan, self.folder = plan, Path(folder)
        order = sorted(random.Random(plan.seed).sample(range(len(training_queries)), min(plan.pool, len(training_queries))))
        self.pool = [training_queries[index] for index in order]
        self.build: dict[str, Any] | None = None  # the build in use
        self.show_progress = show_progress

    @property
    def texts(self) -> list[str]:
        """Every passage of the build in use, kind by kind (in the order of the plan's kinds)."""
        return [text for kind, _ in self.plan.kinds for text in self.build["passages"][kind]]

    def path(self, build: int) -> Path:
        return self.folder / f"step-{build:05d}.json"

    def prepare(self, model, head: PoolingHead, step: int, is_main_process: bool = True) -> list[str]:
        """The passage texts for optimizer step ``step`` (steps done so far): the build in use, a saved one, or a
        new build against ``model`` (a TextColBERT, unwrapped) and ``head``."""
        wanted = self.plan.build_step(step)
        if self.build is None or self.build["step"] != wanted:
            self.build = self._load_or_make(model, head, wanted, is_main_process)
        return self.texts

    def _load_or_make(self, model, head: PoolingHead, build: int, is_main_process: bool) -> dict[str, Any]:
        if self.path(build).is_file():
            saved = json.loads(self.path(build).read_text())
            if saved.get("plan") == _plan_dict(self.plan) and saved.get("pool") == self.pool:
                logger.info("adversarial passages of step %d loaded from %s", build, self.path(build))
                return saved
            logger.warning("%s holds passages of another plan or pool: rebuilding them", self.path(build))
        previous = None
        if build > 0:  # continue from the build before (loaded or rebuilt in turn)
            previous = self.build if self.build is not None and self.build["step"] == build - self.plan.refresh \
                else self._load_or_make(model, head, build - self.plan.refresh, is_main_process)
        made = self._make(model, head, build, previous)
        if is_main_process:
            write_json_atomic(self.path(build), made, indent=1)
            lines = [f"# {kind} {number}: {text}" for kind, _ in self.plan.kinds
                     for number, text in enumerate(made["passages"][kind])]
            write_text_atomic(self.path(build).with_suffix(".txt"), "\n".join(lines) + "\n")
        return made

    def _make(self, model, head: PoolingHead, build: int, previous: dict[str, Any] | None) -> dict[str, Any]:
        started = time.perf_counter()
        queries = model.encode(self.pool, is_query=True, show_progress=False)  # [Tq, D] each, eval mode, no gradient
        if previous is None:
            points = mean_vectors(queries)
            members = {kind: cluster_members(kmeans(points, min(count, len(self.pool)), self.plan.seed))
                       for kind, count in self.plan.kinds}
        else:
            members = previous["members"]
        passages: dict[str, list[str]] = {}
        token_ids: dict[str, list[list[int]]] = {}
        costs: dict[str, float] = {}
        for kind, _ in self.plan.kinds:
            tick = time.perf_counter()
            if kind == "cluster-text":
                passages[kind] = cluster_passages(self.pool, members[kind])
            else:
                allowed = candidate_vocabulary(model)
                passages[kind], token_ids[kind] = [], []
                clusters = tqdm(list(enumerate(members[kind])), desc=f"hotflip passages of step {build}", leave=False,
                                disable=not self.show_progress)
                for cluster, indices in clusters:
                    start = previous["token_ids"][kind][cluster] if previous is not None else None
                    result = hotflip_passage(
                        model, [queries[index] for index in indices], head, self.plan.hotflip(build, cluster),
                        allowed=allowed, show_progress=False, texts=[self.pool[index] for index in indices],
                        start_tokens=start,
                    )
                    passages[kind].append(result.text)
                    token_ids[kind].append(result.token_ids)
            costs[kind] = time.perf_counter() - tick
        logger.info("adversarial passages of step %d built in %.1f s (%s)", build, time.perf_counter() - started,
                    ", ".join(f"{kind} {seconds:.1f} s" for kind, seconds in costs.items()))
        return {"step": build, "plan": _plan_dict(self.plan), "passages": passages, "token_ids": token_ids,
                "members": members, "pool": self.pool, "seconds": costs}

    def negatives(self, embed, tokenize, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The passages of the build in use as every query's extra negatives, encoded now (with gradients):
        ``([batch, P, T, D], bool [batch, P, T])``. ``tokenize(texts)`` gives document inputs; ``embed(inputs)``
        their ``([P, T, D], [P, T])``."""
        vectors, mask = embed(tokenize(self.texts))
        return (vectors.unsqueeze(0).expand(batch, *vectors.shape),
                mask.to(torch.bool).unsqueeze(0).expand(batch, *mask.shape))


def _plan_dict(plan: AdversarialPassages) -> dict[str, Any]:
    found = {"kinds": [list(item) for item in plan.kinds], "refresh": plan.refresh, "length": plan.length,
             "iterations": plan.iterations, "candidates": plan.candidates, "pool": plan.pool, "seed": plan.seed}
    if plan.positions != 1:  # one position per iteration: saved as before the setting existed (those builds load)
        found["positions"] = plan.positions
    return found
