"""Evaluate a checkpoint in MTEB with its pooling head: local BEIR folders or MTEB tasks by name, mteb's result files.

    lir-robust mteb --model minilm --tasks cranfield --head maxsim topk:k=4 --out results/mteb-minilm
    lir-robust mteb --model runs/finetune-topk-k4 --tasks /data/med --out results/mteb-topk     # the checkpoint's head
    lir-robust mteb --model vidore/colqwen2.5-v0.2 --tasks VidoreArxivQARetrieval --out results/mteb-colqwen

``--tasks``: a BEIR folder, a collection name under the data root (``cranfield``), a local ViDoRe copy (page images,
for colpali-engine models), or an MTEB task name (its data comes from the Hub; offline that ends in one line). Each head is one MTEB model (the head is in its
``experiment_kwargs``), so mteb writes ``OUT/results/<model>/<revision>/experiments/head_<head>/<Task>.json``;
``OUT/summary.json`` lists nDCG@10 per task and head. The model is loaded once and each text encoded once.
``--inject spike:4 hard:4 gaussian:16`` adds the sweep's injection conditions on local tasks (K patches of a kind
appended to documents, the sweep's own patches and targets: lir_robust.attacks.mteb_conditions; the budgets of one
kind form the sweep's grid, so the numbers equal ``lir-robust sweep --kinds KIND --ks 0 K ...``), each filed as
``head_<head>__injection_<kind>__k_<K>``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from lir_robust.commands import cli

__all__ = ["build_parser", "parse_args", "main"]

logger = logging.getLogger("mteb")


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm", help="'minilm', a fine-tuned or PyLate model folder, a published Hub id, or a colpali-engine model")
    p.add_argument("--tasks", nargs="+", required=True, help="BEIR folders, collection names under the data root, or MTEB task names")
    p.add_argument("--head", nargs="+", type=cli.head_spec, default=None,
                   help="pooling heads to score with (text forms, e.g. maxsim topk:k=4); default: the checkpoint's own (pooling.json), else maxsim")
    p.add_argument("--out", required=True, type=cli.output_folder, help="folder for mteb's result files and summary.json")
    p.add_argument("--data-root", default=None, help="folder that bare collection names resolve in")
    p.add_argument("--inject", nargs="+", type=cli.injection_condition, default=[], metavar="KIND:K",
                   help="also evaluate local tasks under the sweep's injection conditions (spike, hard, gaussian, corpus), e.g. spike:4 hard:4")
    p.add_argument("--seed", type=cli.non_negative_int, default=0, help="the injections' seed (the sweep's --seed)")
    p.add_argument("--batch-size", type=cli.positive_int, default=None, help="encoding batch size (default: the encoder's)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def _resolve_tasks(specs: list[str], root: str | None) -> list[tuple[str, str]]:
    """Each ``--tasks`` value -> ("local", spec) (a BEIR folder), ("pages", spec) (a local ViDoRe copy of page
    images) or ("named", spec), checked without loading anything large."""
    from lir_robust.data import DataError, locate_data
    from lir_robust.patches.mteb import load_task_data, named_task

    resolved = []
    for spec in specs:
        try:
            located = locate_data(spec, root=root)
        except DataError:
            located = None
        if located is not None and located.folder is not None:
            resolved.append(("local" if located.data_format == "beir" else "pages", spec))
            continue
        if Path(spec).expanduser().exists():
            cli.check_data(spec, root=root, option="--tasks")  # a folder of another layout: its own one-line error
            raise cli.UserError(f"--tasks {spec}: local tasks must be BEIR folders (corpus.jsonl, queries.jsonl, "
                                "qrels/test.tsv) or local ViDoRe copies")
        task = named_task(spec)
        load_task_data(task)  # offline: one line, before the model loads
        resolved.append(("named", spec))
    return resolved


def main(argv=None) -> dict:
    args = parse_args(argv)
    cli.check_model(args.model)
    from lir_robust.patches.mteb import check_mteb_version

    tasks = _resolve_tasks(args.tasks, args.data_root)
    version = check_mteb_version()
    if args.inject and any(kind != "local" for kind, _ in tasks):
        other = next(spec for kind, spec in tasks if kind != "local")
        raise cli.UserError(f"--inject applies to local text BEIR tasks only (the conditions need the qrels and the "
                            f"texts), not {other}; run that task without --inject")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import mteb

    from lir_robust.core.files import write_json_atomic
    from lir_robust.data import load_retrieval_set
    from lir_robust.encoders.load import load_encoder
    from lir_robust.attacks.kinds import InjectionSettings
    from lir_robust.attacks.mteb_conditions import InjectedModel
    from lir_robust.patches.mteb import HeadScoredModel, named_task, retrieval_task

    started = time.perf_counter()
    encoder = load_encoder(args.model, batch_size=args.batch_size)
    name = "minilm" if args.model.lower() in cli.MINILM_NAMES else Path(args.model).name if Path(args.model).exists() else args.model
    base = HeadScoredModel(encoder, args.head[0] if args.head else None, name=name)
    heads = args.head or [str(base.head)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = mteb.ResultCache(out)
    summary: dict = {"model": args.model, "mteb_version": version, "encoder": encoder.config, "heads": heads,
                     "ndcg@10": {}, "result_files": [], "runs": []}
    conditions = list(dict.fromkeys(tuple(condition) for condition in args.inject))
    grids = {kind: sorted({0, *(k for other, k in conditions if other == kind)}) for kind, _ in conditions}
    settings = InjectionSettings(seed=args.seed)
    if conditions:
        summary["injection"] = {"settings": settings.to_dict(), "grids": grids, "ndcg@10": {}}

    def run(model, task, condition: str = "clean") -> float:
        result = mteb.evaluate(model, task, cache=cache, overwrite_strategy="always")
        ndcg = result.task_results[0].scores["test"][0]["ndcg_at_10"]
        path = cache.get_task_result_path(task.metadata.name, model.mteb_model_meta)
        summary["result_files"].append(str(path))
        summary["runs"].append({"task": task.metadata.name, "head": str(model.head), "condition": condition,
                                "ndcg@10": ndcg, "file": Path(os.path.relpath(path, out)).as_posix()})
        logger.info("%s %s: nDCG@10 %.5f (%s)", task.metadata.name, model.mteb_model_meta.experiment_name, ndcg, path)
        return ndcg

    for kind, spec in tasks:
        data = load_retrieval_set(spec, root=args.data_root) if kind != "named" else None
        if data is not None and data.modality != encoder.modality:
            raise cli.UserError(f"--tasks {spec} holds {data.modality} documents but --model {args.model} encodes "
                                f"{encoder.modality}: pair text models with BEIR folders, colpali-engine models with page images")
        task = retrieval_task(data) if data is not None else named_task(spec)
        injections: dict = {}  # (kind, K) -> its model: the patches are drawn once for every head
        for head in heads:
            summary["ndcg@10"].setdefault(task.metadata.name, {})[head] = run(base.with_head(head), task)
            for injection, k in conditions if data is not None else []:
                injected = injections.get((injection, k))
                injected = injected.with_head(head) if injected is not None else InjectedModel.from_model(
                    base, data, injection, k, head, settings=settings, grid=grids[injection])
                injections[(injection, k)] = injected
                by_head = summary["injection"]["ndcg@10"].setdefault(task.metadata.name, {}).setdefault(head, {})
                by_head[f"{injection}:{k}"] = run(injected, task, f"{injection}:{k}")
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    write_json_atomic(out / "summary.json", summary)
    print(summary)
    return summary
