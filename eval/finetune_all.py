"""Fine-tune one model per head, then sweep each: `python eval/finetune_all.py [options]` = `lir-robust finetune-all [options]`.

The options and the logic live in lir_robust.commands.finetune_all (`python eval/finetune_all.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.finetune_all import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
