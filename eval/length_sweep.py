"""Length / injection sweep of a model over a collection: `python eval/length_sweep.py [options]` = `lir-robust sweep [options]`.

The options and the logic live in lir_robust.commands.sweep (`python eval/length_sweep.py --help`); this file only runs it.

    torchrun --nproc_per_node 2 eval/length_sweep.py ...   # encoding and scoring split over processes
"""

from lir_robust.commands import cli
from lir_robust.commands.sweep import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
