"""The fine-tuning variants comparison behind `make finetune-all` (lir_robust.commands.finetune_all parses its options):
fine-tune MiniLM ColBERT once per pooling head with the recipe, nDCG@10 before / after on a dev and a held-out half of
the judged test queries, and the step-time cost of each head (and of the training-side defence) in one process.

    run_variants(args)        # args: lir_robust.commands.finetune_all.parse_args' result; writes results under args.out

Each head's run is a subprocess, `accelerate launch -m lir_robust.commands.finetune` (timed; its summary holds the
median step time and peak memory); the saved folder is reloaded with encoders.text.load_text_checkpoint and evaluated with
the head it was trained with. Every stage writes its JSON and is skipped when re-run.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import torch

from lir_robust.core.errors import UserError
from lir_robust.core.naming import head_folder_name
from lir_robust.core.files import write_json_atomic, write_text_atomic
from lir_robust.encoders.text_colbert import TextColBERT
from lir_robust.encoders.text import load_text_checkpoint
from lir_robust.scoring.pooling import parse_head
from lir_robust.scoring.scorer import score
from lir_robust.training import batching, models, pairs
from lir_robust.training.pairs import training_document_text
from lir_robust.training.runs import package_environment

__all__ = [
    "RECIPE", "load_collection", "dev_heldout_split", "ndcg_at_10", "split_means", "paired_gain", "evaluate",
    "step_time_ratios", "head_loss_cost", "check_recipe", "recipe_of", "train_arguments",
    "run_variants",
]
logger = logging.getLogger(__name__)


def load_collection(name: str):
    """(document ids, document texts, query ids, query texts, qrels) of a BEIR collection (lir_robust.data).

    Documents are ``title + text`` with the copy of the title that starts Cranfield's abstracts removed (the title
    once, as the fine-tuned models saw documents in training); empty documents are dropped.
    """
    from lir_robust.data import load_beir, locate_data

    located = locate_data(name)  # main() checked it is a BEIR folder with queries and qrels/test.tsv
    collection = load_beir(located.folder)
    document_ids = [doc_id for doc_id, doc in collection.corpus.items() if training_document_text(doc)]
    documents = [training_document_text(collection.corpus[doc_id]) for doc_id in document_ids]
    query_ids = collection.judged_query_ids
    return document_ids, documents, query_ids, [collection.queries[q] for q in query_ids], collection.qrels


def dev_heldout_split(query_ids) -> tuple[list[str], list[str]]:
    """``(dev, held_out)``: judged query ids in numeric order (string order when not all numeric), every second one.

    dev = positions 0, 2, 4, ... (the default recipe was chosen on these); held_out = positions 1, 3, 5, ...
    """
    ordered = sorted(query_ids, key=lambda q: (0, int(q), "") if str(q).isdigit() else (1, 0, str(q)))
    return ordered[0::2], ordered[1::2]


def ndcg_at_10(scores: torch.Tensor, document_ids, query_ids, qrels) -> dict[str, float]:
    """Per-query nDCG@10 (lir_robust.scoring.metrics, pytrec_eval) of a ``[Nq, Nd]`` score matrix."""
    from lir_robust.scoring.metrics import evaluate as evaluate_run, run_from_scores

    _, per_query = evaluate_run({q: qrels[q] for q in query_ids}, run_from_scores(scores, query_ids, document_ids))
    return {q: per_query[q]["ndcg@10"] for q in query_ids}


def split_means(per_query: dict[str, float]) -> dict[str, float]:
    """Mean nDCG@10 over all queries, the dev half and the held-out half."""
    dev, held_out = dev_heldout_split(list(per_query))
    mean = lambda ids: sum(per_query[q] for q in ids) / len(ids)  # noqa: E731
    return {"all": mean(list(per_query)), "dev": mean(dev), "held_out": mean(held_out)}


def paired_gain(after: dict[str, float], before: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Per split: (mean of after - before over its queries, standard error of that mean) -- the paired difference."""
    import statistics

    dev, held_out = dev_heldout_split(list(before))
    gains = {}
    for part, ids in (("dev", dev), ("held_out", held_out), ("all", list(before))):
        differences = [after[q] - before[q] for q in ids]
        error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else float("nan")
        gains[part] = (statistics.fmean(differences), error)
    return gains


def evaluate(model: TextColBERT, heads, collection, batch_size: int = 32) -> dict:
    """``{"ndcg@10": {head: mean over all}, "ndcg@10_split": {head: {all, dev, held_out}}, "per_query": ...}``."""
    document_ids, documents, query_ids, queries, qrels = collection
    started = time.perf_counter()
    query_vectors = model.encode(queries, is_query=True, batch_size=batch_size)
    document_vectors = model.encode(documents, is_query=False, batch_size=batch_size)
    encode_s = time.perf_counter() - started
    per_query = {head: ndcg_at_10(score(query_vectors, document_vectors, head), document_ids, query_ids, qrels) for head in heads}
    split = {head: split_means(values) for head, values in per_query.items()}
    return {
        "ndcg@10": {head: values["all"] for head, values in split.items()}, "ndcg@10_split": split,
        "per_query_ndcg@10": per_query, "encode_s": encode_s,
    }


def write_json(path: Path, value) -> None:
    """JSON through lir_robust.core.files (atomic: a killed run leaves the old file or the new one)."""
    write_json_atomic(path, value, indent=2)


def step_time_ratios(variants, data: str, batch_size: int, rounds: int, train_document_max_length: int,
                     projection_dim: int = 128, pseudo_queries: str = "title", temperature: float = 0.02) -> dict:
    """Median seconds of one training step per variant, interleaved in one process on one fixed batch. A variant is a
    head, with the training-side defence after a ``+`` if any (``maxsim+spike:4,hard:4``: its --injected-negatives join
    the step); ratios are to the first variant."""
    from lir_robust.scoring.losses import PooledInfoNCELoss
    from lir_robust.training import defence

    torch.manual_seed(0)
    model = models.build_text_model("minilm", parse_head("maxsim"), projection_dim, 32, 32, 0.1, None)
    model.train()
    batch_pairs = pairs.load_training_pairs(data, pseudo_queries).pairs[:batch_size]
    batch = batching.TextPairCollator(model, 32, train_document_max_length)(batch_pairs)
    optimizer = torch.optim.AdamW(models.trainable_parameters(model), lr=1e-5)
    steps = {}
    for variant in variants:
        head, _, negatives = variant.partition("+")
        steps[variant] = (PooledInfoNCELoss(head, temperature=temperature),
                          defence.InjectedNegatives.parse(negatives.split(",")) if negatives else None)
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for round_index in range(rounds + 1):
        order = variants[round_index % len(variants) :] + variants[: round_index % len(variants)]
        for variant in order:
            loss_fn, plan = steps[variant]
            started = time.perf_counter()
            queries, query_mask = batching.embed(model, batch["query"], True)
            documents, document_mask = batching.embed(model, batch["document"], False)
            negatives, negative_mask = defence.with_injected_negatives(
                None, None, queries, query_mask, documents, document_mask, 0, plan, key=(0, round_index))
            loss = loss_fn(queries, documents, negatives, 0, query_mask=query_mask, doc_mask=document_mask,
                           neg_doc_mask=negative_mask)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if round_index:  # round 0 warms up
                times[variant].append(time.perf_counter() - started)
    medians = {variant: sorted(values)[len(values) // 2] for variant, values in times.items()}
    reference = medians[variants[0]]
    return {"median_step_s": medians, "ratio_to_" + variants[0]: {v: m / reference for v, m in medians.items()},
            "rounds": rounds, "batch_size": batch_size}


def head_loss_cost(heads, rounds: int = 30, dim: int = 128, document_length: int = 96, temperature: float = 0.02) -> dict:
    """Median seconds of the loss forward + backward alone per head, on training shapes (queries [32, 32, dim],
    documents [32, document_length, dim]); interleaved. The encoder is the same for every head, so this is the whole
    difference."""
    from lir_robust.scoring.losses import PooledInfoNCELoss

    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(32, 32, dim, generator=generator), dim=-1)
    documents = torch.nn.functional.normalize(torch.randn(32, document_length, dim, generator=generator), dim=-1)
    query_mask, document_mask = torch.ones(32, 32, dtype=torch.bool), torch.ones(32, document_length, dtype=torch.bool)
    document_mask[:, document_length * 5 // 6 :] = False
    times: dict[str, list[float]] = {head: [] for head in heads}
    for round_index in range(rounds + 1):
        for head in heads[round_index % len(heads) :] + heads[: round_index % len(heads)]:
            q, d = queries.clone().requires_grad_(True), documents.clone().requires_grad_(True)
            started = time.perf_counter()
            PooledInfoNCELoss(head, temperature=temperature)(q, d, query_mask=query_mask, doc_mask=document_mask).backward()
            if round_index:
                times[head].append(time.perf_counter() - started)
    return {"loss_forward_backward_median_s": {head: sorted(v)[len(v) // 2] for head, v in times.items()}}


# The recipe (chosen on the dev half of the Cranfield test queries; see the README's fine-tuning section).
RECIPE = {
    "max_steps": 40,
    "batch_size": 32,
    "lr": 4e-4,
    "temperature": 0.02,
    "train_document_max_length": 96,
    "projection_dim": 384,
    "projection_init": "identity",
    "pseudo_queries": "sentence",
}


def check_recipe(out: Path, recipe: dict, write: bool = True) -> None:
    """Write ``out/recipe.json`` (unless ``write`` is False), or raise UserError when the folder already holds
    runs of another recipe."""
    file = out / "recipe.json"
    if file.exists():
        previous = json.loads(file.read_text())
        if previous != recipe:
            changed = sorted(key for key in {*previous, *recipe} if previous.get(key) != recipe.get(key))
            raise UserError(
                f"{out} holds runs of another recipe (differs in {changed}); delete the folder or pass another --out"
            )
    elif any(out.glob("*/summary.json")):
        raise UserError(f"{out} holds runs without a recipe.json (an older version); delete them or pass another --out")
    elif write:
        write_json(file, recipe)


def recipe_of(args) -> dict:
    return {key: getattr(args, key) for key in RECIPE} | {"extra": args.finetune_args}


def train_arguments(args, head: str, run: Path) -> list[str]:
    """lir_robust.commands.finetune's options for one head's run: the recipe, then the extra arguments (after --)."""
    return [
        "--pooling", head, "--data", args.data, "--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size),
        "--lr", str(args.lr), "--temperature", str(args.temperature),
        "--train-document-max-length", str(args.train_document_max_length), "--projection-dim", str(args.projection_dim),
        "--projection-init", args.projection_init, "--pseudo-queries", args.pseudo_queries, "--save-every", "10",
        "--output-dir", str(run), *args.finetune_args,
    ]


def run_variants(args) -> str:
    """Every stage of the comparison for the checked options ``args`` (lir_robust.commands.finetune_all); returns the
    report (report.md's text)."""
    out = Path(args.out)
    heads = args.heads
    recipe = recipe_of(args)
    check_recipe(out, recipe)
    baseline_heads = list(dict.fromkeys(["maxsim", *heads]))
    collection = load_collection(args.data)

    baseline_file = out / "baseline.json"
    if not baseline_file.exists() or "ndcg@10_split" not in json.loads(baseline_file.read_text()):
        logger.info("baseline: raw MiniLM, identity projection")
        write_json(baseline_file, evaluate(TextColBERT.from_base("minilm"), baseline_heads, collection))
    baseline = json.loads(baseline_file.read_text())

    start_file = out / "untrained_start.json"  # what training starts from: MiniLM + the recipe's projection, no adapter
    if not args.skip_start and not start_file.exists():
        logger.info("untrained start: MiniLM + %s-d %s projection", args.projection_dim, args.projection_init)
        torch.manual_seed(0)
        start = models.build_text_model("minilm", parse_head("maxsim"), args.projection_dim, 32, 32, 0.1, None)
        kept = None
        if args.projection_init == "svd":
            training_pairs, _ = pairs.split_validation(pairs.load_training_pairs(args.data, args.pseudo_queries).pairs, 64, 0)
            kept = models.init_projection_svd(start, [pair.document for pair in training_pairs[:64]])
        elif args.projection_init == "identity":
            models.init_projection_identity(start)
        write_json(start_file, {**evaluate(start.eval(), heads, collection), "projection": f"{args.projection_dim}-d {args.projection_init}", "kept": kept})

    accelerate = Path(sys.executable).parent / "accelerate"
    for head in heads:
        run = out / head_folder_name(head)
        if not (run / "summary.json").exists():  # a killed run continues from its last checkpoint (finetune.py)
            command = [
                str(accelerate), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "-m", "lir_robust.commands.finetune", *train_arguments(args, head, run),
            ]
            logger.info("train: %s", " ".join(command))
            started = time.perf_counter()
            finished = subprocess.run(command, env=package_environment())
            if finished.returncode == 2:  # the fine-tuning command refused (its one-line message is above)
                raise UserError(f"the training run of {head} stopped with a user error (above); nothing more was run")
            if finished.returncode:
                raise RuntimeError(f"the training run of {head} failed with exit status {finished.returncode}: {' '.join(command)}")
            write_json(run / "wall.json", {"train_wall_s": time.perf_counter() - started, "command": command})
        if not (run / "eval.json").exists():
            model = load_text_checkpoint(run / "model")
            write_json(run / "eval.json", {"head": model.pooling.spec(), **evaluate(model, [model.pooling.spec()], collection)})

    bench_file = out / "step_time_bench.json"
    if not args.skip_bench and not bench_file.exists():
        write_json(bench_file, step_time_ratios(
            heads, args.data, args.batch_size, args.bench_rounds, args.train_document_max_length,
            args.projection_dim, args.pseudo_queries, args.temperature,
        ))
    cost_file = out / "head_loss_cost.json"
    if not cost_file.exists():
        write_json(cost_file, head_loss_cost(heads, dim=args.projection_dim, document_length=args.train_document_max_length, temperature=args.temperature))

    start = json.loads(start_file.read_text())["ndcg@10_split"] if start_file.exists() else {}
    nan = {"all": float("nan"), "dev": float("nan"), "held_out": float("nan")}
    fmt = lambda values: " | ".join(f"{values[part]:.4f}" for part in ("dev", "held_out", "all"))  # noqa: E731
    rows = [
        f"Recipe: {json.dumps(recipe)}. nDCG@10 on the dev half / held-out half / all judged test queries "
        "(dev = every second judged query id in numeric order, from the first; the recipe was chosen on dev). "
        "Gain = fine-tuned - raw, mean ± standard error of the per-query paired differences.",
        "",
        "| head | raw MiniLM dev | raw held-out | raw all | untrained start dev | start held-out | start all "
        "| fine-tuned dev | fine-tuned held-out | fine-tuned all | gain dev | gain held-out | gain all "
        "| train wall (s) | median step (s) | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    report = {"recipe": recipe, "baseline": baseline, "runs": {}}
    for head in heads:
        run = out / head_folder_name(head)
        if not (run / "eval.json").exists():
            continue
        summary, evaluation = json.loads((run / "summary.json").read_text()), json.loads((run / "eval.json").read_text())
        wall = json.loads((run / "wall.json").read_text()) if (run / "wall.json").exists() else {}
        report["runs"][head] = {"summary": summary, "eval": evaluation, "wall": wall}
        gains = paired_gain(evaluation["per_query_ndcg@10"][head], baseline["per_query_ndcg@10"][head])
        report["runs"][head]["gain_over_raw"] = gains
        gain = " | ".join(f"{gains[part][0]:+.4f} ± {gains[part][1]:.4f}" for part in ("dev", "held_out", "all"))
        rows.append(
            f"| {head} | {fmt(baseline['ndcg@10_split'][head])} | {fmt(start.get(head, nan))} | "
            f"{fmt(evaluation['ndcg@10_split'][head])} | {gain} | {wall.get('train_wall_s', float('nan')):.0f} | "
            f"{summary['median_step_time_s']:.2f} | {summary['peak_memory_mb']:.0f} |"
        )
    rows.append(f"\nmaxsim baseline (raw MiniLM, all queries): {baseline['ndcg@10']['maxsim']:.4f}")
    if bench_file.exists():
        bench = json.loads(bench_file.read_text())
        report["bench"] = bench
        ratios = next(value for key, value in bench.items() if key.startswith("ratio_to_"))
        rows.append("step-time ratio to maxsim (one process, interleaved): " + ", ".join(f"{h} {r:.3f}" for h, r in ratios.items()))
    cost = json.loads(cost_file.read_text())["loss_forward_backward_median_s"]
    report["head_loss_cost"] = cost
    rows.append("loss forward + backward alone (s): " + ", ".join(f"{h} {c:.3f}" for h, c in cost.items()))
    write_json(out / "report.json", report)
    write_text_atomic(out / "report.md", "\n".join(rows) + "\n")
    return "\n".join(rows)
