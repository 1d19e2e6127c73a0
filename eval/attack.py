"""Text attacks on one model over one collection: `python eval/attack.py [options]` = `lir-robust attack [options]`.

The options and the logic live in lir_robust.commands.attack (`python eval/attack.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.attack import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
