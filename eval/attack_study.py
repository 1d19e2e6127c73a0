"""The text-attack study over the retraining study's models: `python eval/attack_study.py [options]` = `lir-robust attack-study [options]`.

The options and the logic live in lir_robust.commands.attack_study (`python eval/attack_study.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.attack_study import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
