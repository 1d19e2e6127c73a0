"""Scoring speed and memory per head against maxsim: `python eval/bench_scoring.py [options]` = `lir-robust bench-scoring [options]`.

The options and the logic live in lir_robust.commands.bench_scoring (`python eval/bench_scoring.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.bench_scoring import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
