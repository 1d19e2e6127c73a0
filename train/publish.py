"""A checkpoint and its model card to the Hugging Face Hub: `python train/publish.py [options]` = `lir-robust publish [options]`.

The options and the logic live in lir_robust.commands.publish (`python train/publish.py --help`); this file only runs it.
"""

from lir_robust.commands import cli
from lir_robust.commands.publish import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
