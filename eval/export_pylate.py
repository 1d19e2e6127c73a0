"""A text checkpoint as a PyLate model folder: `python eval/export_pylate.py [options]` = `lir-robust export-pylate [options]`.

The options and the logic live in lir_robust.commands.export_pylate (`python eval/export_pylate.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.export_pylate import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
