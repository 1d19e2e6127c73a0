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

from __future__ import annotations

import logging
from pathlib import Path

from lir_robust.commands import cli

__all__ = ["build_parser", "parse_args", "main"]

logger = logging.getLogger("export_pylate")


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm", help="'minilm', a Hugging Face encoder folder, or a fine-tuned text checkpoint (or train/finetune.py output) folder")
    p.add_argument("--out", required=True, type=cli.output_folder, help="the PyLate model folder to write: new, empty, or a PyLate model folder (replaced)")
    p.add_argument("--check-data", default=None, help="a BEIR folder or collection name: compare embeddings of its first texts with PyLate's")
    p.add_argument("--check-count", type=cli.positive_int, default=20, help="documents and queries compared by --check-data")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cli.check_model(args.model)
    if args.check_data:
        cli.check_data(args.check_data, option="--check-data")
    from lir_robust.patches.pylate import check_replaceable

    try:
        check_replaceable(args.out)
    except ValueError as error:
        raise cli.UserError(f"--out: {error}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from lir_robust.encoders.text import load_text_checkpoint
    from lir_robust.encoders.text_colbert import TextColBERT
    from lir_robust.patches.pylate import export_pylate, largest_difference, save_pylate

    folder = Path(args.model).expanduser()
    checkpoint = next((c for c in (folder, folder / "model") if (c / "colbert_config.json").is_file()), None)
    if checkpoint is not None:
        out = export_pylate(checkpoint, args.out)
        model = load_text_checkpoint(checkpoint)
    else:
        model = TextColBERT.from_base(None if args.model.lower() == "minilm" else args.model)
        out = save_pylate(model, args.out)
    report = {"out": str(out)}
    if args.check_data:
        from lir_robust.data import load_retrieval_set

        data = load_retrieval_set(args.check_data)
        documents = data.document_texts()[: args.check_count]
        queries = [data.queries[query] for query in data.query_ids[: args.check_count]]
        report["largest_difference_documents"] = largest_difference(model, out, documents, is_query=False)
        report["largest_difference_queries"] = largest_difference(model, out, queries, is_query=True)
    logger.info("%s", report)
    print(report)
    return report
