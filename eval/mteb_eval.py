"""MTEB evaluation with the pooling head: `python eval/mteb_eval.py [options]` = `lir-robust mteb [options]`.

The options and the logic live in lir_robust.commands.mteb (`python eval/mteb_eval.py --help`); this file only runs it
(named mteb_eval.py: a script eval/mteb.py would shadow the mteb package it imports).
"""

from lir_robust.commands import cli
from lir_robust.commands.mteb import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
