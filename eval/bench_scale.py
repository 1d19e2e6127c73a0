"""The sweep on synthetic corpora of growing size: `python eval/bench_scale.py [options]` = `lir-robust bench-scale [options]`.

The options and the logic live in lir_robust.commands.bench_scale (`python eval/bench_scale.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.bench_scale import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
