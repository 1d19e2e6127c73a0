"""Pooled gaussian / corpus patches against private draws: `python eval/pool_blocks_check.py [options]` = `lir-robust check-pool-blocks [options]`.

The options and the logic live in lir_robust.commands.pool_blocks_check (`python eval/pool_blocks_check.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.pool_blocks_check import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
