"""Real fine-tunes timed against each other: the guard for "a head's training step costs what maxsim's costs".

``make bench-train`` times one step in one process (:func:`lir_robust.studies.variants.step_time_ratios`); it cannot
see what only a whole run shows (a kernel compiled on first use, a process that stops using every core). Here every
head runs the real command (``python -m lir_robust.commands.finetune``, what ``accelerate launch train/finetune.py``
runs) for a few steps, the heads interleaved round by round in rotating order so that drifting machine load hits them
alike. Per run: the median step (the run's own summary.json, every step timed), the wall time, and the cores the
process used = (user + system CPU time of the child) / wall time. A head whose runs use clearly fewer cores than the
reference's while their steps are slower is *serialised* (:func:`serialised`): the signature the issue reported
(exclusive runs at user time = wall time, maxsim at 1.5 cores).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from lir_robust.core.errors import UserError
from lir_robust.core.naming import head_folder_name

__all__ = ["timed_runs", "summarise", "serialised"]


def _child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_runs(heads: Sequence[str], data: str, steps: int, rounds: int, out_dir: str | os.PathLike,
               extra_args: Sequence[str] = (), show_progress: bool = True) -> list[dict]:
    """``rounds`` x every head: one real fine-tune of ``steps`` steps each (no checkpoints), interleaved; the records
    in run order. A run that fails raises UserError naming its log."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    progress = tqdm(total=rounds * len(heads), desc="timed fine-tunes", disable=not show_progress)
    for round_index in range(rounds):
        shift = round_index % len(heads)
        for head in list(heads[shift:]) + list(heads[:shift]):
            run = out_dir / f"round{round_index}-{head_folder_name(head)}"
            command = [sys.executable, "-m", "lir_robust.commands.finetune", "--data", data, "--pooling", head,
                       "--max-steps", str(steps), "--save-every", "0", "--log-every", str(steps),
                       "--validation-pairs", "0", "--output-dir", str(run), "--overwrite", *extra_args]
            cpu_before, started = _child_cpu_seconds(), time.perf_counter()
            with open(out_dir / f"{run.name}.log", "w") as log:
                finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
            wall, cpu = time.perf_counter() - started, _child_cpu_seconds() - cpu_before
            if finished.returncode != 0:
                lines = [line for line in (out_dir / f"{run.name}.log").read_text(errors="replace").splitlines() if line.strip()]
                raise UserError(f"the timed fine-tune {head} (round {round_index}) failed (exit {finished.returncode}: "
                                f"{lines[-1].strip()[:200] if lines else 'no output'}); its output: {out_dir / (run.name + '.log')}")
            summary = json.loads((run / "summary.json").read_text())
            records.append({"round": round_index, "head": head, "median_step_s": summary["median_step_time_s"],
                            "steps_timed": summary["steps_timed"], "wall_s": wall, "cpu_s": cpu,
                            "cores_used": cpu / wall if wall > 0 else None})
            progress.update(1)
    progress.close()
    return records


def summarise(records: Sequence[dict], reference: str) -> dict:
    """Per head: the median over rounds of its median step, its cores used, and per round the ratio of its median step
    to the reference's in the same round (then the median of those ratios)."""
    heads = list(dict.fromkeys(record["head"] for record in records))
    if reference not in heads:
        raise ValueError(f"the reference head {reference!r} has no run")
    by_round: dict[int, dict[str, dict]] = {}
    for record in records:
        by_round.setdefault(record["round"], {})[record["head"]] = record
    result = {}
    for head in heads:
        own = [record for record in records if record["head"] == head]
        ratios = [runs[head]["median_step_s"] / runs[reference]["median_step_s"]
                  for runs in by_round.values() if head in runs and reference in runs]
        result[head] = {
            "median_step_s": statistics.median(record["median_step_s"] for record in own),
            "cores_used": statistics.median(record["cores_used"] for record in own),
            "ratio_per_round": ratios,
            "ratio_to_reference": statistics.median(ratios),
        }
    return result


def serialised(summary: dict, reference: str, head: str, cores_share: float = 0.75, slower: float = 1.2) -> bool:
    """True when ``head``'s runs used less than ``cores_share`` of the reference's cores while their median step took
    more than ``slower`` times the reference's: the step waits on something single-threaded."""
    own, base = summary[head], summary[reference]
    return own["cores_used"] < cores_share * base["cores_used"] and own["ratio_to_reference"] > slower
