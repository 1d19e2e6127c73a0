"""LoRA fine-tuning with a pooling head (Accelerate): `python train/finetune.py [options]` = `lir-robust finetune [options]`.

The options and the logic live in lir_robust.commands.finetune (`python train/finetune.py --help`); this file only runs it.

    accelerate launch train/finetune.py --pooling topk     # = lir-robust finetune --pooling topk, on every process
"""

from lir_robust.commands import cli
from lir_robust.commands.finetune import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
