"""Fine-tune a late-interaction retriever with any pooling head: LoRA + in-batch InfoNCE + Accelerate.

    accelerate launch train/finetune.py                                    # the recipe: exclusive head, MiniLM ColBERT on Cranfield
    accelerate launch train/finetune.py --pooling topk
    accelerate launch train/finetune.py --pooling softmax --pool-tau 0.1 --max-steps 200
    accelerate launch train/finetune.py --pooling exclusive --injected-negatives spike:4 hard:4   # + the defence
    accelerate launch --multi_gpu --num_processes 4 train/finetune.py --model vidore/colqwen2-v1.0 \
        --data vidore/colpali_train_set --pooling topk:k=4 --batch-size 64 --mixed-precision bf16

The defaults are the best measured recipe (README, "Fine-tuning"; eval/finetune_all.py records it as RECIPE): the
exclusive head (the retraining study's best trade: maxsim's clean nDCG@10, several times its share under spike
injection), the encoder's hidden size with an identity projection (step 0 is the raw model), inverse-cloze pairs from the corpus
(--pseudo-queries sentence), lr 4e-4, 40 steps of global batch 32, temperature 0.02, training documents of 96
tokens, LoRA r 32 / alpha 32 / dropout 0.1 on query / key / value.

The file reads top to bottom: settings, model, data, optimiser, then the loop. Accelerate places the model and the
batches, wraps the model for several processes, handles mixed precision, gradient accumulation and checkpoints;
everything else is written out below. With several processes every query sees the whole global batch of documents
as negatives (gathered with gradients); each process's queries stay local. --injected-negatives adds, for each
query, copies of non-gold batch documents carrying injected patches (lir_robust.training.defence) to its negatives.

Writes to --output-dir: the model (save_pretrained folder: LoRA adapter, projection, tokenizer / processor,
pooling.json with the head and this run's configuration), log.jsonl (loss, lr, gradient Gini on gold pairs, ...),
config.json, summary.json, checkpoints/step-N (accelerator.save_state, renamed into place once complete) and
TensorBoard logs if it is installed. Rerunning the same command continues from the last checkpoint (and ends with
the weights of an uninterrupted run); a finished run is reported, not retrained; another configuration in the same
folder stops with a message (--overwrite replaces it).
"""

from lir_robust.commands import cli
from lir_robust.commands.finetune import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
