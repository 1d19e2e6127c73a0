"""Search behind a PyLate index with a pooling head: `python eval/search.py [options]` = `lir-robust search [options]`.

The options and the logic live in lir_robust.commands.search (`python eval/search.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.search import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
