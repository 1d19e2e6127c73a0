"""The ``lir-robust`` command (installed with the package): one entry, one subcommand per job.

    lir-robust sweep --data cranfield --kinds hard spike       # the length / injection sweep (eval/length_sweep.py)
    lir-robust finetune --pooling topk                         # LoRA fine-tuning (train/finetune.py)
    accelerate launch -m lir_robust.commands.finetune ...      # the same on several processes / GPUs
    lir-robust publish runs/x user/name --dry-run out/x        # a checkpoint and its card to the Hub (train/publish.py)
    lir-robust --help                                          # every subcommand; lir-robust NAME --help for its options

Each subcommand is a module of this package (``lir_robust.commands.<module>``) exposing ``main(argv)``; the scripts
in train/ and eval/ of a checkout are thin wrappers of the same modules, so both spellings behave alike. A user
error is one line ``lir-robust NAME: error: ...`` and exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

from lir_robust.commands import cli

# subcommand -> (module under lir_robust.commands, what it does, the script of a checkout that runs the same)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "sweep": ("sweep", "length / injection sweep of a model over a collection", "eval/length_sweep.py"),
    "attack": ("attack", "text attacks (cluster text, HotFlip passages, stuffing) on held-out queries", "eval/attack.py"),
    "attack-study": ("attack_study", "the retraining study's models under text attacks, resumable", "eval/attack_study.py"),
    "finetune": ("finetune", "LoRA fine-tuning with a pooling head (Accelerate)", "train/finetune.py"),
    "finetune-all": ("finetune_all", "fine-tune one model per head, then sweep each", "eval/finetune_all.py"),
    "study": ("study", "the retraining study: heads x seeds x collections, resumable", "eval/study.py"),
    "synthetic": ("synthetic", "the paper's synthetic concept study", "eval/synthetic_study.py"),
    "results-doc": ("results_doc", "docs/RESULTS.md and its figures from the committed results", "eval/results_doc.py"),
    "publish": ("publish", "a checkpoint and its model card to the Hugging Face Hub", "train/publish.py"),
    "mteb": ("mteb", "MTEB evaluation with the pooling head: local BEIR folders or MTEB tasks", "eval/mteb_eval.py"),
    "search": ("search", "search behind a PyLate index with a pooling head, against exhaustive scoring", "eval/search.py"),
    "export-pylate": ("export_pylate", "a text checkpoint as a PyLate model folder", "eval/export_pylate.py"),
    "bench-scoring": ("bench_scoring", "scoring speed and memory per head against maxsim", "eval/bench_scoring.py"),
    "bench-sweep": ("bench_sweep", "the full sweep against one plain evaluation", "eval/bench_sweep.py"),
    "bench-train": ("bench_train", "one fine-tuning step per head against maxsim", "eval/bench_train.py"),
    "bench-scale": ("bench_scale", "the sweep on synthetic corpora of growing size", "eval/bench_scale.py"),
    "check-pool-blocks": ("pool_blocks_check", "pooled gaussian / corpus patches against private draws", "eval/pool_blocks_check.py"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: lir-robust COMMAND [options]   (lir-robust COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what, _) in COMMANDS.items()]
    return "\n".join(lines)


def command_module(name: str):
    """The module that runs subcommand ``name`` (imported on demand, so ``--help`` of one command loads nothing else)."""
    return importlib.import_module(f"lir_robust.commands.{COMMANDS[name][0]}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from lir_robust import __version__

        print(f"lir-robust {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        sys.stderr.write(f"lir-robust: error: unknown command {name!r}; choose one of {', '.join(COMMANDS)} (see lir-robust --help)\n")
        return 2
    prog = f"lir-robust {name}"
    sys.argv[0] = prog  # argparse's prog in usage lines and errors
    return cli.run_command(command_module(name).main, argv[1:], prog=prog)


if __name__ == "__main__":
    raise SystemExit(main())
