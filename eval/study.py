"""The retraining study: heads x seeds x collections, resumable: `python eval/study.py [options]` = `lir-robust study [options]`.

The options and the logic live in lir_robust.commands.study (`python eval/study.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.study import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
