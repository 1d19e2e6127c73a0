"""Benchmark (not a test): the cost of one fine-tuning step per head, and of the training-side defence, against maxsim.

    python eval/bench_train.py                          # the recipe's batch (32 Cranfield inverse-cloze pairs)
    python eval/bench_train.py --rounds 3 --threads 1   # quicker, one thread (as accelerate launch gives a CPU process)
    python -m lir_robust.commands.bench_train ...       # the same, without a checkout
    python eval/bench_train.py --real-runs 3 --data med # real fine-tunes instead (maxsim, softmax:tau=1.0 and blend,
                                                        # 20 steps each, interleaved 3 times): median step, cores used

One process, one fixed batch, the fine-tuning recipe's model (RECIPE in lir_robust.studies.variants): a whole step (encode
queries and documents, the defence's injected negatives when the variant has them, the pooled InfoNCE loss, backward,
AdamW) per variant, the variants interleaved round by round (round 0 warms up and is not counted) so that drifting
machine load hits them alike (lir_robust.studies.variants.step_time_ratios). Reports the median step per variant and its ratio
to the first variant (maxsim), and the loss alone per head (lir_robust.studies.variants.head_loss_cost). Writes
results/bench-train/bench.json.

``--real-runs N`` times whole fine-tunes instead (lir_robust.studies.run_timing: ``python -m lir_robust.commands.finetune``
per head, ``--real-steps`` steps, N interleaved rounds): the median step, its ratio to the first head's in the same
round, and the cores each run used; it stops with exit status 1 when a head is serialised (fewer cores than maxsim's
and slower steps). Writes results/bench-train/real-runs.json.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from lir_robust.commands import cli
from lir_robust.core.files import write_json_atomic
from lir_robust.studies import run_timing
from lir_robust.studies.variants import RECIPE, head_loss_cost, step_time_ratios
from lir_robust.training import defence

DEFAULT_VARIANTS = [
    "maxsim", "topk:k=4", "softmax:tau=0.1", "lse:tau=0.1", "exclusive",
    "maxsim+spike:4,hard:4", "exclusive+spike:4,hard:4",
]


def variant_option(text: str) -> str:
    """``HEAD`` or ``HEAD+KIND:K,KIND:K`` (the defence's --injected-negatives), checked (argparse type)."""
    head, _, negatives = text.partition("+")
    head = cli.head_spec(head)
    if not negatives:
        return head
    items = [cli.injected_negative(item) for item in negatives.split(",")]
    if any(item.startswith("hard-corpus") for item in items):
        raise argparse.ArgumentTypeError(f"{text!r}: hard-corpus needs the fine-tuning loop's corpus bank; time spike "
                                         "and hard here (or a whole fine-tune with --real-runs)")
    try:
        defence.InjectedNegatives.parse(items)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return f"{head}+{','.join(items)}"


def build_parser() -> cli.ArgumentParser:
    """The options; each ``type=`` checks its value (cross-checks in parse_args)."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", type=variant_option, default=DEFAULT_VARIANTS,
                        help="heads, optionally with the defence (HEAD+spike:4,hard:4); the first is the reference")
    parser.add_argument("--data", default="cranfield", help="BEIR folder or name under the data root (training pairs)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=RECIPE["batch_size"])
    parser.add_argument("--rounds", type=cli.positive_int, default=5, help="counted rounds (one step per variant each)")
    parser.add_argument("--threads", type=cli.positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=cli.output_folder, default="results/bench-train")
    parser.add_argument("--real-runs", type=cli.non_negative_int, default=0,
                        help="time whole fine-tunes instead: this many interleaved rounds of --real-heads (0: off)")
    parser.add_argument("--real-heads", nargs="+", type=cli.head_spec, default=["maxsim", "softmax:tau=1.0", "blend"],
                        help="heads of the real runs; the first is the reference (default: maxsim against the recipe's "
                             "training head, softmax:tau=1.0, and blend, whose exclusive half is the head whose steps issue 20 saw "
                             "serialised)")
    parser.add_argument("--real-steps", type=cli.positive_int, default=20, help="steps of each real run")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.variants = list(dict.fromkeys(args.variants))
    if args.real_runs and len(set(args.real_heads)) < 2:
        raise cli.UserError(f"--real-heads {' '.join(args.real_heads)}: the real runs compare at least two different "
                            "heads (the first is the reference), e.g. --real-heads maxsim exclusive")
    cli.check_data(args.data, data_format="beir", split="test")
    args.out = Path(args.out)
    args.recipe = RECIPE
    return args


def bench(args) -> dict:
    recipe = args.recipe
    steps = step_time_ratios(args.variants, args.data, args.batch_size, args.rounds, recipe["train_document_max_length"],
                             recipe["projection_dim"], recipe["pseudo_queries"], recipe["temperature"])
    heads = list(dict.fromkeys(variant.partition("+")[0] for variant in args.variants))
    loss = head_loss_cost(heads, rounds=args.rounds, dim=recipe["projection_dim"],
                          document_length=recipe["train_document_max_length"], temperature=recipe["temperature"])
    return {**steps, **loss, "threads": torch.get_num_threads(), "recipe": recipe, "data": args.data}


def real_runs(args) -> int:
    """Whole fine-tunes timed against the first head (run_timing); exit status 1 when a head is serialised."""
    records = run_timing.timed_runs(args.real_heads, args.data, args.real_steps, args.real_runs, args.out / "runs")
    reference = args.real_heads[0]
    summary = run_timing.summarise(records, reference)
    flagged = [head for head in args.real_heads[1:] if run_timing.serialised(summary, reference, head)]
    write_json_atomic(args.out / "real-runs.json", {"data": args.data, "steps": args.real_steps, "runs": records,
                                                    "summary": summary, "serialised": flagged})
    print(f"| round | head | median step (s) | wall (s) | cores used |\n|---|---|---|---|---|")
    for record in records:
        print(f"| {record['round']} | {record['head']} | {record['median_step_s']:.3f} | {record['wall_s']:.1f} | "
              f"{record['cores_used']:.2f} |")
    print(f"\n| head | median step (s) | ratio to {reference} (per round) | cores used |\n|---|---|---|---|")
    for head, row in summary.items():
        rounds = ", ".join(f"{ratio:.2f}" for ratio in row["ratio_per_round"])
        print(f"| {head} | {row['median_step_s']:.3f} | {row['ratio_to_reference']:.2f}x ({rounds}) | {row['cores_used']:.2f} |")
    print(f"wrote {args.out / 'real-runs.json'}")
    if flagged:
        print(f"serialised: {', '.join(flagged)} used fewer cores than {reference} with slower steps")
        return 1
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.real_runs:
        args.out.mkdir(parents=True, exist_ok=True)
        return real_runs(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench(args)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "bench.json", result)
    reference = args.variants[0]
    print(f"| variant | median step (s) | ratio to {reference} |\n|---|---|---|")
    for variant in args.variants:
        print(f"| {variant} | {result['median_step_s'][variant]:.2f} | {result[f'ratio_to_{reference}'][variant]:.3f}x |")
    print("loss forward + backward alone (s): "
          + ", ".join(f"{h} {s:.3f}" for h, s in result["loss_forward_backward_median_s"].items()))
    print(f"wrote {args.out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
