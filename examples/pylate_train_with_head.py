"""Train a PyLate ColBERT with a lir-robust pooling head, the PyLate way: your model, trainer, loss and evaluator.

    python examples/pylate_train_with_head.py --model lightonai/GTE-ModernColBERT-v1 --head topk:k=4 --out runs/pylate-topk
    python examples/pylate_train_with_head.py --model path/to/pylate-folder --data path/to/beir-folder --max-steps 200

Two lines differ from PyLate's own contrastive training recipe: the loss's ``score_metric`` and the evaluator's
``score_functions`` take ``pooled_scores(head)``. The trained folder is a plain PyLate model; ``pooling.json`` beside
it carries the head, so ``eval/length_sweep.py --model <out>`` measures it with the head it was trained with.

Training pairs here come from a BEIR folder (its train split, else title -> text pairs of its corpus, never its
queries); put your own ``datasets.Dataset`` of (query, positive[, negative]) columns in their place.

The nDCG@10 it prints is PyLate's evaluator's (binary relevance: every judged document counts as relevant), not
comparable with eval/length_sweep.py's nDCG@10 (graded judgements, e.g. Cranfield's four grades); measure the trained
folder with the sweep to compare it with other models. A bad argument, a model that cannot be loaded and a missing
data set each end in one line (exit status 2).
"""

from __future__ import annotations

from pathlib import Path

from lir_robust.commands import cli
from lir_robust.core.errors import one_line

# what pooling.json's training record says about this recipe (the model card reads it: how the model was trained)
RECIPE = {
    "script": "examples/pylate_train_with_head.py",
    "method": "full fine-tuning (every weight, no LoRA)",
    "trainer": "PyLate's recipe: sentence-transformers' SentenceTransformerTrainer with pylate.losses.Contrastive, "
               "whose score_metric is the pooled score of the head (lir_robust.patches.pylate.pooled_scores)",
}
PROG = "pylate_train_with_head.py"
NDCG_NOTE = ("PyLate's evaluator, binary relevance: not comparable with eval/length_sweep.py's nDCG@10 on graded "
             "judgements; run the sweep on the trained folder for that")


def parse_args(argv=None):
    p = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a PyLate model (folder or Hub id), or a Hugging Face encoder PyLate turns into one")
    p.add_argument("--data", default="cranfield", help="BEIR folder, or a collection name under $LIR_ROBUST_DATA_ROOT")
    p.add_argument("--head", default="topk:k=4", type=cli.head_spec,
                   help="pooling head used by the loss, e.g. maxsim, topk:k=4, softmax:tau=0.1")
    p.add_argument("--out", required=True, help="folder of the trained PyLate model")
    p.add_argument("--max-steps", type=cli.positive_int, default=100)
    p.add_argument("--batch-size", type=cli.positive_int, default=32)
    p.add_argument("--lr", type=cli.positive_float, default=3e-6)
    p.add_argument("--temperature", type=cli.positive_float, default=1.0, help="Contrastive loss temperature (PyLate's default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    cli.check_data(args.data)  # a missing data set: one line, before any model is loaded
    cli.check_model(args.model)
    return args


def load_model(name: str):
    """``pylate.models.ColBERT(name)``; a model that cannot be loaded (no such folder, not on the Hub, offline) is one
    line naming it."""
    from pylate import models

    try:
        return models.ColBERT(model_name_or_path=name)
    except (OSError, ValueError) as error:
        raise cli.UserError(f"--model {name}: cannot load it as a PyLate / Hugging Face model ({one_line(error)}); "
                            "pass a PyLate model folder or a Hub id that is reachable or in the local cache") from None


def main(argv=None) -> dict:
    args = parse_args(argv)
    from datasets import Dataset
    from pylate import evaluation, losses, utils
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from lir_robust.data import load_retrieval_set
    from lir_robust.patches.pylate import pooled_scores
    from lir_robust.scoring.pooling import parse_head, save_pooling_json
    from lir_robust.training.pairs import load_training_pairs

    head = parse_head(args.head)
    model = load_model(args.model)

    pairs = load_training_pairs(args.data, pseudo_queries="title", seed=args.seed).pairs
    train_dataset = Dataset.from_dict({"query": [pair.query for pair in pairs], "positive": [pair.document for pair in pairs]})

    test = load_retrieval_set(args.data)
    evaluator = evaluation.PyLateInformationRetrievalEvaluator(
        queries={query: test.queries[query] for query in test.judged_query_ids},
        corpus=dict(zip(test.document_ids, test.document_texts())),
        relevant_docs={query: test.gold(query) for query in test.judged_query_ids},
        score_functions={"maxsim": pooled_scores("maxsim"), head.name: pooled_scores(head)},  # <- the head, here
        show_progress_bar=False,
    )

    loss = losses.Contrastive(model=model, score_metric=pooled_scores(head), temperature=args.temperature)  # <- and here
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(Path(args.out) / "trainer"),
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=train_dataset, loss=loss, evaluator=evaluator,
        data_collator=utils.ColBERTCollator(model.tokenize),
    )
    trainer.train()
    metrics = evaluator(model)

    model.save(args.out)
    settings = {key: value for key, value in vars(args).items() if key not in ("out", "debug")}
    save_pooling_json(args.out, head, {**RECIPE, **settings, "head": head.spec(), "pooling": head.spec(),
                                       "steps_done": trainer.state.global_step})
    return {"steps": trainer.state.global_step, "metrics": metrics, "out": args.out}


def run(argv=None) -> int:
    """The command line: prints PyLate's nDCG@10 with what it is; user errors are one line (exit status 2)."""
    def report(argv):
        result = main(argv)
        ndcg = {key: value for key, value in result["metrics"].items() if key.endswith("ndcg@10")}
        print(f"nDCG@10 ({NDCG_NOTE}): {ndcg}")

    return cli.run_command(report, argv, prog=PROG)


if __name__ == "__main__":
    raise SystemExit(run())
