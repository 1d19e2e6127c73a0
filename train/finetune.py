"""Fine-tune a late-interaction retriever with any pooling head: LoRA + in-batch InfoNCE + Accelerate.

    accelerate launch train/finetune.py --pooling topk                     # MiniLM ColBERT on Cranfield titles -> text
    accelerate launch train/finetune.py --pooling softmax --pool-tau 0.1 --max-steps 200
    accelerate launch --multi_gpu --num_processes 4 train/finetune.py --model vidore/colqwen2-v1.0 \
        --data vidore/colpali_train_set --pooling topk:k=4 --batch-size 64 --mixed-precision bf16

The file reads top to bottom: settings, model, data, optimiser, then the loop. Accelerate places the model and the
batches, wraps the model for several processes, handles mixed precision, gradient accumulation and checkpoints;
everything else is written out below. With several processes every query sees the whole global batch of documents
as negatives (gathered with gradients); each process's queries stay local.

Writes to --output-dir: the model (save_pretrained folder: LoRA adapter, projection, tokenizer / processor,
pooling.json with the head and this run's configuration), log.jsonl (loss, lr, gradient Gini on gold pairs, ...),
summary.json, checkpoints/step-N (accelerator.save_state, for --resume) and TensorBoard logs if it is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from lir_robust import training  # noqa: E402
from lir_robust.diagnostics import gold_pair_gradient_concentration  # noqa: E402
from lir_robust.losses import PooledInfoNCELoss  # noqa: E402
from lir_robust.pooling import available_heads, parse_head  # noqa: E402

logger = logging.getLogger("finetune")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="minilm", help="'minilm' (offline default), a BERT-like encoder, or a colpali-engine model (Hub id or local folder)")
    p.add_argument("--data", default="cranfield", help=f"BEIR folder or collection name under $LIR_ROBUST_DATA_ROOT; {training.VIDORE_TRAIN_SET} or a save_to_disk folder (query, image) for colpali-engine models")
    p.add_argument("--pooling", default="maxsim", help=f"pooling head, e.g. topk or topk:k=4; heads: {available_heads()}")
    p.add_argument("--pool-k", type=int, default=None, help="k of the topk head (overrides the text form)")
    p.add_argument("--pool-tau", type=float, default=None, help="tau of the softmax / lse heads (overrides the text form)")
    # model
    p.add_argument("--projection-dim", type=int, default=128, help="text models: token vector size after the projection")
    p.add_argument("--projection-init", choices=["svd", "identity", "random"], default="svd", help="text models: svd = top singular directions of training-document token vectors (starts close to the raw model); identity = the identity matrix, needs --projection-dim = hidden size (starts AS the raw model); random = nn.Linear default")
    p.add_argument("--query-max-length", type=int, default=32, help="text models: query tokens (inference and training)")
    p.add_argument("--document-max-length", type=int, default=256, help="text models: document tokens at inference (saved in the checkpoint)")
    p.add_argument("--train-document-max-length", type=int, default=128, help="text models: document tokens in training batches")
    p.add_argument("--lora-r", type=int, default=32)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--lora-target-modules", nargs="+", default=None, help="default: query key value (BERT-like) or colpali-engine's regex of the model family")
    p.add_argument("--gradient-checkpointing", action="store_true")
    # loss and data
    p.add_argument("--temperature", type=float, default=0.02, help="InfoNCE temperature (scores are divided by query length first)")
    p.add_argument("--pseudo-queries", default="title", choices=sorted(training.PSEUDO_QUERIES), help="text data without a train split: the query of each corpus pair: title (title -> text) or sentence (inverse cloze: one sentence of the abstract -> title + the rest)")
    p.add_argument("--hard-negatives", type=int, default=0, help="text data: TF-IDF-mined hard negatives per query (0 = in-batch only)")
    p.add_argument("--validation-pairs", type=int, default=64, help="pairs held out of training for the validation loss")
    # optimisation
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine", "constant_with_warmup"])
    p.add_argument("--warmup-steps", type=int, default=None, help="default: 10%% of the steps")
    p.add_argument("--epochs", type=float, default=1.0, help="used when --max-steps is not given")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32, help="global batch: queries per optimizer step over all processes and accumulation steps")
    p.add_argument("--gradient-accumulation", type=int, default=1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "fp16", "bf16"], help="auto: bf16 on a GPU that supports it, else no")
    p.add_argument("--seed", type=int, default=0)
    # output
    p.add_argument("--output-dir", default=None, help="default: runs/finetune-<head>, e.g. runs/finetune-topk-k4")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=0, help="validation loss every N steps (0: only at the end)")
    p.add_argument("--save-every", type=int, default=50, help="accelerator.save_state every N steps (0: never)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, help="continue from the last checkpoint of --output-dir (or from a given checkpoint folder)")
    p.add_argument("--stop-after-steps", type=int, default=None, help="leave the loop after this many steps without saving the model, as if interrupted (to test --resume)")
    args = p.parse_args(argv)
    args.head = parse_head(args.pooling, k=args.pool_k, tau=args.pool_tau).spec()
    if args.output_dir is None:
        args.output_dir = "runs/finetune-" + args.head.replace(":", "-").replace("=", "").replace(",", "-")
    return args


def train(args: argparse.Namespace):
    """Run the fine-tuning described by ``args`` (see parse_args); returns ``(unwrapped model, summary dict)``."""
    head = parse_head(args.head)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    # ---------------------------------------------------------------- Accelerate
    precision = args.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # without a GPU, processes started by torchrun form a gloo (multi-CPU) group
        gradient_accumulation_steps=args.gradient_accumulation,
        mixed_precision=precision,
        step_scheduler_with_optimizer=False,  # the loop steps the scheduler once per optimizer step
        log_with="tensorboard" if has_tensorboard else None,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(Path(args.output_dir) / "tensorboard")),
    )
    micro_batches = accelerator.num_processes * args.gradient_accumulation
    if args.batch_size % micro_batches:
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of processes x accumulation = {micro_batches}")
    local_batch_size = args.batch_size // micro_batches
    set_seed(args.seed)

    # ---------------------------------------------------------------- training pairs (never the evaluation queries)
    family = training.model_family(args.model)
    data = training.load_training_pairs(args.data, args.pseudo_queries, args.seed)
    train_pairs, validation_pairs = training.split_validation(data.pairs, args.validation_pairs, args.seed)
    if args.hard_negatives:
        train_pairs = training.mine_hard_negatives(train_pairs, args.hard_negatives)

    # ---------------------------------------------------------------- model: frozen base + LoRA (+ projection)
    if family == "text":
        model = training.build_text_model(
            args.model, head, args.projection_dim, args.lora_r, args.lora_alpha, args.lora_dropout,
            args.lora_target_modules, args.gradient_checkpointing, args.query_max_length, args.document_max_length,
        )
        if args.projection_init == "svd" and args.projection_dim:
            kept = training.init_projection_svd(model, [pair.document for pair in train_pairs[:64]])
            logger.info("projection initialised from the SVD of training-document token vectors (%.3f of the energy kept)", kept)
        elif args.projection_init == "identity" and args.projection_dim:
            try:
                training.init_projection_identity(model)
            except ValueError as error:  # projection_dim is not the hidden size
                raise SystemExit(f"--projection-init identity: {error}") from None
            logger.info("projection initialised to the identity: step 0 is the raw model")
        processor = None
        collate = training.TextPairCollator(model, args.query_max_length, args.train_document_max_length)
    else:
        model, processor, family = training.build_colpali_model(
            args.model, head, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules,
            args.gradient_checkpointing,
        )
        collate = training.ImagePairCollator(processor)
    model.train()

    # ---------------------------------------------------------------- batches
    sampler = training.EpochShuffleSampler(len(train_pairs), seed=args.seed)
    loader = torch.utils.data.DataLoader(
        training.PairDataset(train_pairs), batch_size=local_batch_size, sampler=sampler, collate_fn=collate,
        drop_last=True, generator=torch.Generator().manual_seed(args.seed),
    )
    steps_per_epoch = len(train_pairs) // args.batch_size
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(train_pairs)} training pairs are fewer than one global batch of {args.batch_size}")
    max_steps = args.max_steps or math.ceil(args.epochs * steps_per_epoch)
    warmup_steps = args.warmup_steps if args.warmup_steps is not None else int(0.1 * max_steps)
    validation_batches = [collate(validation_pairs[i : i + args.batch_size]) for i in range(0, len(validation_pairs), args.batch_size)]

    # ---------------------------------------------------------------- optimiser
    optimizer = torch.optim.AdamW(training.trainable_parameters(model), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_scheduler(args.schedule, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max_steps)
    loss_fn = PooledInfoNCELoss(head, temperature=args.temperature)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    state = training.TrainState()
    accelerator.register_for_checkpointing(state)

    config = {
        **{key: value for key, value in vars(args).items() if key != "resume"},
        "family": family, "data_source": data.source, "data_kind": data.kind, "training_pairs": len(train_pairs),
        "validation_pairs_held_out": len(validation_pairs), "documents_seen_in_training": data.documents_seen,
        "local_batch_size": local_batch_size, "num_processes": accelerator.num_processes,
        "mixed_precision": precision, "max_steps": max_steps, "warmup_steps": warmup_steps,
        "steps_per_epoch": steps_per_epoch,
    }
    if args.resume:
        checkpoint = training.latest_checkpoint(args.output_dir) if args.resume == "latest" else Path(args.resume)
        if checkpoint is None:
            raise SystemExit(f"--resume: no checkpoint under {Path(args.output_dir) / 'checkpoints'}")
        accelerator.load_state(str(checkpoint))
        logger.info("resumed from %s at step %d", checkpoint, state.step)
    output = Path(args.output_dir)
    log = training.JsonlLog(output / "log.jsonl", enabled=accelerator.is_main_process)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
        if has_tensorboard:
            accelerator.init_trackers("finetune", config={k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))})

    def encode(inputs, is_query):
        return training.embed(model, inputs, is_query)

    def evaluate() -> dict:
        model.eval()
        result = training.validation_loss(encode, loss_fn, validation_batches) if validation_batches else {}
        model.train()
        return result

    # ---------------------------------------------------------------- the loop
    progress = tqdm(total=max_steps, initial=state.step, desc=f"fine-tuning ({head})", disable=not accelerator.is_main_process)
    step_started, step_times, loss_sum, loss_count = time.perf_counter(), [], 0.0, 0
    while state.step < max_steps:
        batches = accelerator.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
        sampler.set_epoch(state.epoch)  # the data order depends on (seed, epoch) only, so a resumed run sees the same
        batches.set_epoch(state.epoch)  # batches; Accelerate's loaders reset the sampler's epoch to their own counter
        for batch in batches:
            with accelerator.accumulate(model):
                queries, query_mask = encode(batch["query"], True)
                documents, document_mask = encode(batch["document"], False)
                negatives, negative_mask = encode(batch["negative"], False) if "negative" in batch else (None, None)
                if negatives is not None:  # [B * n, T, D] -> [B, n, T, D]
                    negatives = negatives.view(queries.shape[0], -1, *negatives.shape[1:])
                    negative_mask = negative_mask.view(queries.shape[0], -1, negative_mask.shape[-1])
                all_documents, all_document_mask, offset = training.gather_documents(accelerator, documents, document_mask)
                loss = loss_fn(
                    queries, all_documents, negatives, offset,
                    query_mask=query_mask, doc_mask=all_document_mask, neg_doc_mask=negative_mask,
                )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(training.trainable_parameters(model), args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
            state.batch_in_epoch += 1
            loss_sum, loss_count = loss_sum + float(accelerator.reduce(loss.detach(), "mean")), loss_count + 1
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            step_times.append(time.perf_counter() - step_started)
            progress.update(1)

            if state.step % args.log_every == 0 or state.step == max_steps or state.step == 1:
                concentration = gold_pair_gradient_concentration(
                    queries, documents, head, query_mask=query_mask, document_mask=document_mask,
                    temperature=args.temperature, normalize_scores=True,
                ).mean()
                record = {
                    "step": state.step, "epoch": state.epoch + state.batch_in_epoch / max(len(loader), 1),
                    "loss": loss_sum / loss_count, "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                    "gold_gini": concentration["gini"], "gold_top1_share": concentration["top1_share"],
                    "step_time_s": step_times[-1],
                }
                log.write(record)
                accelerator.log({key: value for key, value in record.items() if key != "step"}, step=state.step)
                progress.set_postfix(loss=f"{record['loss']:.4f}", gini=f"{record['gold_gini']:.3f}")
                loss_sum, loss_count = 0.0, 0
            if args.eval_every and state.step % args.eval_every == 0:
                record = {"step": state.step, **evaluate()}
                log.write(record)
                accelerator.log({key: value for key, value in record.items() if key != "step"}, step=state.step)
            if args.save_every and state.step % args.save_every == 0:
                accelerator.save_state(str(output / "checkpoints" / f"step-{state.step}"))
            step_started = time.perf_counter()
            if state.step >= max_steps or state.step == args.stop_after_steps:
                break
        else:  # the epoch ran out
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if state.step == args.stop_after_steps:
            break
    progress.close()
    if state.step == args.stop_after_steps and state.step < max_steps:
        logger.info("stopped after step %d as asked (--stop-after-steps); continue with --resume", state.step)
        accelerator.end_training()
        return accelerator.unwrap_model(model), {"step": state.step, "stopped": True}

    # ---------------------------------------------------------------- save
    final = {"step": state.step, **evaluate()}
    accelerator.wait_for_everyone()
    summary = {
        **final,
        "median_step_time_s": sorted(step_times)[len(step_times) // 2] if step_times else None,
        "steps_timed": len(step_times),
        "peak_memory_mb": training.peak_memory_mb(),
    }
    if accelerator.is_main_process:
        training.save_checkpoint(accelerator.unwrap_model(model), processor, output / "model", head, config)
        log.write(final)
        (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        logger.info("saved the model to %s (%s)", output / "model", json.dumps(summary))
    accelerator.end_training()
    return accelerator.unwrap_model(model), summary


def main(argv=None) -> dict:
    _, summary = train(parse_args(argv))
    return summary


if __name__ == "__main__":
    main()
