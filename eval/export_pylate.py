"""Write a text model as a PyLate model folder: the offline MiniLM (or any base encoder), or a fine-tuned checkpoint.

    python eval/export_pylate.py --model minilm --out results/pylate-minilm       # raw MiniLM: identity 384-d Dense
    python eval/export_pylate.py --model runs/finetune-topk-k4 --out runs/topk-pylate   # a fine-tuned text checkpoint
    make eval-length-sweep MODEL=results/pylate-minilm OUT=results/pylate-minilm-sweep    # then measure it

A base encoder is written as the sweep's default reads it (identity projection, markers [unused0] / [unused1], query
32 / document 256 tokens, no query expansion, punctuation skiplist), so its sweep gives the raw model's numbers. A
fine-tuned checkpoint (colbert_config.json, or a train/finetune.py output holding model/) goes through
lir_robust.patches.pylate.export_pylate (LoRA merged, pooling.json and card). ``--check-data`` encodes the first
``--check-count`` documents and queries of a collection with both and reports the largest difference.
"""

from lir_robust.commands import cli
from lir_robust.commands.export_pylate import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
