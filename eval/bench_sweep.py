"""The full sweep against one plain evaluation: `python eval/bench_sweep.py [options]` = `lir-robust bench-sweep [options]`.

The options and the logic live in lir_robust.commands.bench_sweep (`python eval/bench_sweep.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.bench_sweep import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
