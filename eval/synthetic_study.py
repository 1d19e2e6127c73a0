"""The paper's synthetic concept study: `python eval/synthetic_study.py [options]` = `lir-robust synthetic [options]`.

The options and the logic live in lir_robust.commands.synthetic (`python eval/synthetic_study.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.synthetic import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
