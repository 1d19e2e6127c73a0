"""Fine-tune MiniLM ColBERT on Cranfield pseudo-queries once per pooling head; nDCG@10 before / after.

    python eval/finetune_all.py                       # = make finetune-all; results under results/finetune/
    python eval/finetune_all.py --heads maxsim topk:k=4 --max-steps 50
    python -m lir_robust.commands.finetune_all ...    # the same, without a checkout

For every head (lir_robust.studies.variants): train with `accelerate launch -m lir_robust.commands.finetune` (timed; its summary holds the median step time and
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

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lir_robust.commands import cli, finetune  # noqa: E402
from lir_robust.core.naming import head_folder_name  # noqa: E402
from lir_robust.studies.variants import RECIPE, check_recipe, recipe_of, run_variants, train_arguments  # noqa: E402
from lir_robust.training import pairs  # noqa: E402


def build_parser() -> cli.ArgumentParser:
    """The options; each ``type=`` checks its value (cross-checks in parse_args)."""
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", nargs="+", type=cli.head_spec, default=["maxsim", "topk:k=4", "softmax:tau=0.1", "lse:tau=0.1"])
    parser.add_argument("--data", default="cranfield", help="a BEIR collection (folder or name under $LIR_ROBUST_DATA_ROOT) with qrels/test.tsv")
    parser.add_argument("--out", type=cli.output_folder, default="results/finetune")
    parser.add_argument("--max-steps", type=cli.positive_int, default=RECIPE["max_steps"])
    parser.add_argument("--batch-size", type=cli.positive_int, default=RECIPE["batch_size"])
    parser.add_argument("--lr", type=cli.positive_float, default=RECIPE["lr"])
    parser.add_argument("--temperature", type=cli.positive_float, default=RECIPE["temperature"])
    parser.add_argument("--train-document-max-length", type=cli.int_at_least(2), default=RECIPE["train_document_max_length"])
    parser.add_argument("--projection-dim", type=cli.positive_int, default=RECIPE["projection_dim"])
    parser.add_argument("--projection-init", choices=["svd", "identity", "random"], default=RECIPE["projection_init"])
    parser.add_argument("--pseudo-queries", choices=sorted(pairs.PSEUDO_QUERIES), default=RECIPE["pseudo_queries"])
    parser.add_argument("--bench-rounds", type=cli.positive_int, default=5)
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--skip-start", action="store_true", help="skip evaluating the untrained start")
    parser.add_argument("finetune_args", nargs="*", help="extra arguments for train/finetune.py / lir_robust.commands.finetune (after --)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.heads = list(dict.fromkeys(args.heads))
    cli.check_data(args.data, data_format="beir", split="test")
    for head in args.heads:  # every run's options, checked by the fine-tuning command's own parser before anything trains
        try:
            finetune.parse_args(train_arguments(args, head, Path(args.out) / head_folder_name(head)))
        except cli.UserError as error:
            reason = str(error).split(" (see ")[0]  # finetune.py's own --help, not this script's
            raise cli.UserError(
                f"the training options of {head} are refused by train/finetune.py: {reason} (see train/finetune.py --help)"
            ) from None
    check_recipe(Path(args.out), recipe_of(args), write=False)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(run_variants(args))


if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
