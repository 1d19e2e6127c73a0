"""Fine-tune MiniLM ColBERT on Cranfield pseudo-queries once per pooling head; nDCG@10 before / after.

    python eval/finetune_all.py                       # = make finetune-all; results under results/finetune/
    python eval/finetune_all.py --heads maxsim topk:k=4 --max-steps 50

For every head: train with `accelerate launch train/finetune.py` (timed; its summary holds the median step time and
peak memory), reload the saved folder with TextColBERT.from_pretrained and evaluate on the judged test queries with
the head it was trained with. The baseline is the raw MiniLM (identity projection, no adapter) under the same head;
the untrained start (MiniLM + the recipe's projection, no adapter: the raw model itself under the default identity
start, the best 128-d approximation under --projection-init svd) is also scored, to separate what the projection
costs from what training changes.

nDCG@10 is reported on all judged queries and on two halves (judged query ids in numeric order, every second one):
the DEV half (positions 0, 2, 4, ...) on which the default recipe was chosen, and the HELD-OUT half (1, 3, 5, ...)
on which it was not. The test queries never enter training (the pairs come from the corpus).

Step-time ratios between heads are measured again in ONE process with interleaved steps on the same batch (the CPU
is shared, so separate runs' timings are noisy). Every stage writes its JSON and is skipped when re-run; delete a
file to redo it. recipe.json records the training options: re-running into the same --out with other options stops
with a message instead of mixing runs. A user error (a bad option, a missing collection, another recipe in --out)
is one line and exit status 2, before anything loads (--debug shows the traceback).
"""

from lir_robust.commands import cli
from lir_robust.commands.finetune_all import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
