"""One fine-tuning step per head against maxsim: `python eval/bench_train.py [options]` = `lir-robust bench-train [options]`.

The options and the logic live in lir_robust.commands.bench_train (`python eval/bench_train.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.bench_train import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
