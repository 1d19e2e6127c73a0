"""Benchmark (not a test): the cost of one fine-tuning step per head, and of the training-side defence, against maxsim.

    python eval/bench_train.py                          # the recipe's batch (32 Cranfield inverse-cloze pairs)
    python eval/bench_train.py --rounds 3 --threads 1   # quicker, one thread (as accelerate launch gives a CPU process)

One process, one fixed batch, the fine-tuning recipe's model (RECIPE in eval/finetune_all.py): a whole step (encode
queries and documents, the defence's injected negatives when the variant has them, the pooled InfoNCE loss, backward,
AdamW) per variant, the variants interleaved round by round (round 0 warms up and is not counted) so that drifting
machine load hits them alike (eval/finetune_all.step_time_ratios). Reports the median step per variant and its ratio
to the first variant (maxsim), and the loss alone per head (eval/finetune_all.head_loss_cost). Writes
results/bench-train/bench.json.
"""

from lir_robust.commands import cli
from lir_robust.commands.bench_train import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
