"""Benchmark (not a test): the cost of one fine-tuning step per head, and of the training-side defence, against maxsim.

    python eval/bench_train.py                          # the recipe's batch (32 Cranfield inverse-cloze pairs)
    python eval/bench_train.py --rounds 3 --threads 1   # quicker, one thread (as accelerate launch gives a CPU process)

One process, one fixed batch, the fine-tuning recipe's model (MiniLM ColBERT, 384-d projection, LoRA r 32 on query /
key / value; RECIPE in eval/finetune_all.py): a whole step (encode queries and documents, the defence's injected
negatives when the variant has them, the pooled InfoNCE loss, backward, AdamW) per variant, the variants interleaved
round by round (round 0 warms up and is not counted) so that drifting machine load hits them alike. Reports the
median step per variant and its ratio to the first variant (maxsim), and the loss alone (forward + backward on the
batch's embeddings, detached from the encoder) per head. Writes results/bench-train/bench.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # a checkout, finetune_all

from lir_robust import cli, defence, training  # noqa: E402
from lir_robust.files import write_json_atomic  # noqa: E402
from lir_robust.losses import PooledInfoNCELoss  # noqa: E402
from lir_robust.pooling import parse_head  # noqa: E402

DEFAULT_VARIANTS = [
    "maxsim", "topk:k=4", "softmax:tau=0.1", "lse:tau=0.1", "exclusive",
    "maxsim+spike:4,hard:4", "exclusive+spike:4,hard:4",
]


def variant_option(text: str) -> str:
    """``HEAD`` or ``HEAD+KIND:K,KIND:K`` (the defence's --injected-negatives), checked (argparse type)."""
    head, _, negatives = text.partition("+")
    head = cli.head_spec(head)
    if negatives:
        items = [cli.injected_negative(item) for item in negatives.split(",")]
        if len({item.split(":")[0] for item in items}) < len(items):
            raise argparse.ArgumentTypeError(f"{text!r}: give each injected-negative kind once")
        return f"{head}+{','.join(items)}"
    return head


def parse_args(argv=None) -> argparse.Namespace:
    from finetune_all import RECIPE

    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", type=variant_option, default=DEFAULT_VARIANTS,
                        help="heads, optionally with the defence (HEAD+spike:4,hard:4); the first is the reference")
    parser.add_argument("--data", default="cranfield", help="BEIR folder or name under the data root (training pairs)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=RECIPE["batch_size"])
    parser.add_argument("--rounds", type=cli.positive_int, default=5, help="counted rounds (one step per variant each)")
    parser.add_argument("--threads", type=cli.positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=cli.output_folder, default="results/bench-train")
    args = parser.parse_args(argv)
    args.variants = list(dict.fromkeys(args.variants))
    cli.check_data(args.data, data_format="beir", split="test")
    args.out = Path(args.out)
    args.recipe = RECIPE
    return args


def _split(variant: str):
    head, _, negatives = variant.partition("+")
    return head, (defence.InjectedNegatives.parse(negatives.split(",")) if negatives else None)


def bench(args) -> dict:
    recipe = args.recipe
    torch.manual_seed(0)
    model = training.build_text_model("minilm", parse_head("maxsim"), recipe["projection_dim"], 32, 32, 0.1, None)
    model.train()
    pairs = training.load_training_pairs(args.data, recipe["pseudo_queries"]).pairs[: args.batch_size]
    batch = training.TextPairCollator(model, 32, recipe["train_document_max_length"])(pairs)
    optimizer = torch.optim.AdamW(training.trainable_parameters(model), lr=1e-5)
    plans = {variant: _split(variant) for variant in args.variants}
    losses = {variant: PooledInfoNCELoss(head, temperature=recipe["temperature"]) for variant, (head, _) in plans.items()}
    times: dict[str, list[float]] = {variant: [] for variant in args.variants}
    for round_index in range(args.rounds + 1):
        shift = round_index % len(args.variants)
        for variant in args.variants[shift:] + args.variants[:shift]:
            _, plan = plans[variant]
            started = time.perf_counter()
            queries, query_mask = training.embed(model, batch["query"], True)
            documents, document_mask = training.embed(model, batch["document"], False)
            negatives, negative_mask = defence.with_injected_negatives(
                None, None, queries, query_mask, documents, document_mask, 0, plan, key=(0, round_index),
            )
            loss = losses[variant](queries, documents, negatives, 0, query_mask=query_mask, doc_mask=document_mask,
                                   neg_doc_mask=negative_mask)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if round_index:  # round 0 warms up
                times[variant].append(time.perf_counter() - started)
            logging.info("round %d %s: %.2f s", round_index, variant, time.perf_counter() - started)
    medians = {variant: sorted(values)[len(values) // 2] for variant, values in times.items()}
    reference = args.variants[0]
    with torch.no_grad():
        queries, query_mask = training.embed(model, batch["query"], True)
        documents, document_mask = training.embed(model, batch["document"], False)
    loss_only: dict[str, float] = {}
    for head in dict.fromkeys(head for head, _ in plans.values()):
        loss_fn = PooledInfoNCELoss(head, temperature=recipe["temperature"])
        samples = []
        for _ in range(args.rounds + 1):
            q, d = queries.clone().requires_grad_(True), documents.clone().requires_grad_(True)
            started = time.perf_counter()
            loss_fn(q, d, query_mask=query_mask, doc_mask=document_mask).backward()
            samples.append(time.perf_counter() - started)
        loss_only[head] = sorted(samples[1:])[len(samples[1:]) // 2]
    return {
        "median_step_s": medians,
        f"ratio_to_{reference}": {variant: medians[variant] / medians[reference] for variant in args.variants},
        "loss_forward_backward_s": loss_only,
        "rounds": args.rounds, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "recipe": args.recipe, "data": args.data,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench(args)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "bench.json", result)
    reference = args.variants[0]
    print(f"| variant | median step (s) | ratio to {reference} |\n|---|---|---|")
    for variant in args.variants:
        print(f"| {variant} | {result['median_step_s'][variant]:.2f} | {result[f'ratio_to_{reference}'][variant]:.3f}x |")
    print("loss forward + backward alone (s): " + ", ".join(f"{h} {s:.3f}" for h, s in result["loss_forward_backward_s"].items()))
    print(f"wrote {args.out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
