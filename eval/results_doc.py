"""Docs/RESULTS.md and its figures from the committed results: `python eval/results_doc.py [options]` = `lir-robust results-doc [options]`.

The options and the logic live in lir_robust.commands.results_doc (`python eval/results_doc.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.results_doc import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
