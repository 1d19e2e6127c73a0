"""Publish a fine-tuned checkpoint to the Hugging Face Hub (thin entry; the logic is lir_robust.hub).

    python train/publish.py --checkpoint runs/finetune-topk --repo user/name --license apache-2.0
    python train/publish.py --checkpoint runs/finetune-topk --repo user/name --license apache-2.0 --dry-run out/topk
    make publish CHECKPOINT=runs/finetune-topk REPO=user/name PUBLISH_ARGS="--license apache-2.0 --private"

colpali-engine checkpoints are pushed adapter-only, text checkpoints as a whole PyLate model; both with pooling.json
(the head) and a generated model card carrying the sweep results found beside the checkpoint (or --results) and,
with --study, the retraining study's rows for the checkpoint's head. The token comes from `hf auth login` or
HF_TOKEN (never from the command line). --dry-run OUT writes exactly the folder that would be uploaded, validated,
without touching the network.
"""

from lir_robust.commands import cli
from lir_robust.commands.publish import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
