"""docs/RESULTS.md from the committed results files (thin entry; the logic is lir_robust.studies.results_doc).

    python eval/results_doc.py          # = make results-doc
"""

from lir_robust.commands import cli
from lir_robust.commands.results_doc import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
