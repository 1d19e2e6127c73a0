"""The fine-tuning loop: LoRA on a frozen encoder, in-batch InfoNCE over pooled scores, Accelerate.

    from lir_robust.training.loop import FinetuneConfig, run_finetune

    summary = run_finetune(FinetuneConfig(pooling="topk:k=4", head="topk:k=4", output_dir="runs/finetune-topk"))

:func:`train` reads top to bottom: the run folder, Accelerate, the training pairs, the model, the batches, the
optimiser, then the loop and the save. Accelerate places the model and the batches, wraps the model for several
processes, handles mixed precision, gradient accumulation and checkpoints; everything else is written out here.
With several processes every query sees the whole global batch of documents as negatives (gathered with gradients);
each process's queries stay local. ``injected_negatives`` adds, for each query, copies of non-gold batch documents
carrying injected patches (lir_robust.training.defence) to its negatives; ``adversarial_passages`` adds adversarial
passages crafted against the training queries (text, re-encoded at every step; lir_robust.training.adversarial_passages); with ``hard-corpus:K`` the loop keeps a bank
of the training corpus's token vectors (lir_robust.training.corpus_bank), rebuilt every ``corpus_bank_refresh`` steps.

The configuration is the command's options (``lir_robust.commands.finetune`` parses and checks them, and fills in
the values that depend on others: ``head``, ``max_steps`` / ``warmup_steps``, ``projection_dim`` /
``projection_init``, ``mixed_precision``, ``output_dir``); the run folder's config.json holds
``FinetuneConfig.to_dict()`` (less ``resume`` / ``overwrite``) plus what the run found out.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from lir_robust.core.errors import UserError
from lir_robust.core.files import write_json_atomic
from lir_robust.core.huggingface import model_family
from lir_robust.scoring.diagnostics import gold_pair_gradient_concentration
from lir_robust.scoring.losses import PooledInfoNCELoss
from lir_robust.scoring.pooling import parse_head
from lir_robust.training import batching, corpus_bank, defence, models, pairs, runs
from lir_robust.training.adversarial_passages import PASSAGE_FOLDER, AdversarialPassages, PassageBank

__all__ = ["DEFAULT_MAX_STEPS", "WARMUP_SHARE", "FinetuneConfig", "requested_options", "bank_refresh", "check_run_folder", "train", "run_finetune"]

logger = logging.getLogger(__name__)

ADVERSARIAL_PASSAGE_OPTIONS = ("adversarial_passages", "adversarial_passage_refresh", "adversarial_passage_iterations",
                               "adversarial_passage_length", "adversarial_passage_positions")
# The recipe's heads (issue 20, docs/RESULTS.md "Directions tried"): trained through softmax:tau=1.0, scored with blend.
RECIPE_POOLING = "softmax:tau=1.0"
RECIPE_SCORING_POOLING = "blend:tau=1.0,weight=0.5,capacity=1,candidates=8"
DEFAULT_MAX_STEPS = 40  # the recipe: 40 steps of global batch 32 (about one epoch of Cranfield's 1,334 pairs)
WARMUP_SHARE = 0.1


@dataclass
class FinetuneConfig:
    """Every option of ``lir_robust.commands.finetune``, with its defaults (see its ``--help`` for each).

    ``head`` is the pooling head's full text form (``pooling`` with ``pool_k`` / ``pool_tau`` applied; None: from
    ``pooling``); ``None`` in ``max_steps`` / ``warmup_steps`` / ``mixed_precision="auto"`` are resolved as the
    command resolves them."""

    model: str = "minilm"
    data: str = "cranfield"
    pooling: str = RECIPE_POOLING
    pool_k: int | None = None
    pool_tau: float | None = None
    # the head the saved model scores with (pooling.json); None: the training head. The defaults are the recipe
    # (trained through softmax, scored with blend); a caller that changes ``pooling`` sets this too, or None.
    scoring_pooling: str | None = RECIPE_SCORING_POOLING
    # model
    projection_dim: int | None = None
    projection_init: str | None = None  # identity | svd | random | pylate (a PyLate model's own projection)
    query_max_length: int = 32
    document_max_length: int = 256
    train_document_max_length: int = 96
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | None = None
    gradient_checkpointing: bool = False
    save_pylate: bool = False
    # loss and data
    temperature: float = 0.02
    pseudo_queries: str = "sentence"
    hard_negatives: int = 0
    injected_negatives: list[str] = field(default_factory=list)
    injected_negative_documents: int | None = None
    adversarial_passages: list[str] = field(default_factory=list)  # KIND:N items; empty: off
    adversarial_passage_refresh: int | None = None  # None: AdversarialPassages' defaults (10, 10, 32)
    adversarial_passage_iterations: int | None = None
    adversarial_passage_length: int | None = None
    adversarial_passage_positions: int | None = None
    corpus_bank_refresh: int | None = None  # with hard-corpus injected negatives (None: corpus_bank.DEFAULT_REFRESH)
    validation_pairs: int = 64
    # optimisation
    lr: float = 4e-4
    weight_decay: float = 0.0
    schedule: str = "linear"
    warmup_steps: int | None = None
    max_steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32
    gradient_accumulation: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"
    seed: int = 0
    # output
    output_dir: str | None = None
    log_every: int = 10
    eval_every: int = 0
    save_every: int = 50
    overwrite: bool = False
    resume: str | None = None
    stop_after_steps: int | None = None
    head: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "FinetuneConfig":
        """The configuration of a dict such as a run's config.json (keys that are no option are ignored)."""
        names = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})


def requested_options(config: FinetuneConfig) -> dict:
    """The options a run folder's config.json is compared with before anything loads (values that are only known
    once the data is loaded -- max_steps / warmup_steps under --epochs -- are compared later)."""
    options = {key: value for key, value in config.to_dict().items() if not (key in ("max_steps", "warmup_steps") and value is None)}
    if not config.injected_negatives:  # a run without the defence, also one saved before these options existed
        options.pop("injected_negatives"), options.pop("injected_negative_documents")
    if not config.adversarial_passages:  # likewise: a run without passages compares as before these options
        for key in ADVERSARIAL_PASSAGE_OPTIONS:
            options.pop(key)
    if config.adversarial_passage_positions in (None, 1):  # one position: as a run saved before the option
        options.pop("adversarial_passage_positions", None)
    if config.scoring_pooling is None:  # saved with the training head, also a run saved before the option
        options.pop("scoring_pooling")
    refresh = bank_refresh(config)
    if refresh is None:  # no hard-corpus negatives, also a run saved before the option
        options.pop("corpus_bank_refresh", None)
    else:
        options["corpus_bank_refresh"] = refresh
    return options


def bank_refresh(config: FinetuneConfig) -> int | None:
    """Steps between two rebuilds of the corpus bank: ``corpus_bank_refresh`` or its default with ``hard-corpus``
    injected negatives, None without them."""
    if not any(str(item).startswith("hard-corpus") for item in config.injected_negatives):
        return None
    return config.corpus_bank_refresh or corpus_bank.DEFAULT_REFRESH


def check_run_folder(config: FinetuneConfig) -> runs.RunFolder:
    """What ``output_dir`` holds; UserError when it holds another run (unless ``overwrite``)."""
    folder = runs.inspect_run_folder(config.output_dir, requested_options(config))
    if config.overwrite:
        return folder
    if folder.status == "other-config":
        raise UserError(
            f"{config.output_dir} holds a run of another configuration (differs in {', '.join(folder.differences)}); "
            "pass a new --output-dir, or --overwrite to replace that run"
        )
    if folder.status == "unknown-files":
        raise UserError(
            f"{config.output_dir} holds fine-tuning files but no readable config.json (an older or foreign run); pass a "
            "new --output-dir, or --overwrite to replace them"
        )
    return folder


def run_finetune(config: FinetuneConfig) -> dict:
    """Run the fine-tuning ``config`` describes; returns its summary (as summary.json holds it). See :func:`train`."""
    return train(config)[1]


def train(config: FinetuneConfig):
    """Run the fine-tuning described by ``config``; returns ``(unwrapped model, summary dict)``.

    ``output_dir`` decides how it starts: empty -> a new run; the same configuration with checkpoints -> continue
    from the last complete one; a finished run of the same configuration -> ``(None, its summary)`` without
    training; another configuration -> UserError (unless ``overwrite``, which starts over)."""
    head = parse_head(config.head or config.pooling)
    output = Path(config.output_dir)
    folder = check_run_folder(config)  # before anything loads
    if folder.status == "finished" and not config.overwrite:
        summary = json.loads((output / "summary.json").read_text())
        logger.info("%s already holds a finished run of this configuration (summary.json): nothing to do; pass "
                    "--overwrite to train again", output)
        return None, summary

    # ---------------------------------------------------------------- Accelerate
    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    has_tensorboard = importlib.util.find_spec("tensorboard") is not None
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # without a GPU, processes started by torchrun form a gloo (multi-CPU) group
        gradient_accumulation_steps=config.gradient_accumulation,
        mixed_precision=precision,
        step_scheduler_with_optimizer=False,  # the loop steps the scheduler once per optimizer step
        log_with="tensorboard" if has_tensorboard else None,
        project_config=ProjectConfiguration(project_dir=config.output_dir, logging_dir=str(Path(config.output_dir) / "tensorboard")),
    )
    micro_batches = accelerator.num_processes * config.gradient_accumulation
    if config.batch_size % micro_batches:
        raise UserError(
            f"--batch-size {config.batch_size} must be a multiple of processes x accumulation = {micro_batches}; "
            "change --batch-size or the number of processes"
        )
    local_batch_size = config.batch_size // micro_batches
    if accelerator.is_main_process and (config.overwrite or folder.status == "started") and folder.status != "new":
        runs.clear_run_folder(output)  # --overwrite, or a run killed before its first checkpoint: start over
        logger.info("cleared %s (%s)", output, "--overwrite" if config.overwrite else "no checkpoint to continue from")
    accelerator.wait_for_everyone()
    set_seed(config.seed)

    # ---------------------------------------------------------------- training pairs (never the evaluation queries)
    family = model_family(config.model)
    data = pairs.load_training_pairs(config.data, config.pseudo_queries, config.seed)
    if config.validation_pairs >= len(data.pairs):
        raise UserError(
            f"--validation-pairs {config.validation_pairs} holds out all {len(data.pairs)} training pairs of {config.data}; "
            "lower it (0: no validation loss)"
        )
    train_pairs, validation_pairs = pairs.split_validation(data.pairs, config.validation_pairs, config.seed)
    if config.hard_negatives:
        train_pairs = pairs.mine_hard_negatives(train_pairs, config.hard_negatives)

    # ---------------------------------------------------------------- model: frozen base + LoRA (+ projection)
    if family == "text":
        model = models.build_text_model(
            config.model, head, config.projection_dim, config.lora_r, config.lora_alpha, config.lora_dropout,
            config.lora_target_modules, config.gradient_checkpointing, config.query_max_length, config.document_max_length,
        )
        if config.projection_init == "svd" and config.projection_dim:
            kept = models.init_projection_svd(model, [pair.document for pair in train_pairs[:64]])
            logger.info("projection initialised from the SVD of training-document token vectors (%.3f of the energy kept)", kept)
        elif config.projection_init == "identity" and config.projection_dim:
            models.init_projection_identity(model)  # the command checked projection_dim = the hidden size
            logger.info("projection initialised to the identity: step 0 is the raw model")
        processor = None
        collate = batching.TextPairCollator(model, config.query_max_length, config.train_document_max_length)
    else:
        model, processor, family = models.build_colpali_model(
            config.model, head, config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules,
            config.gradient_checkpointing,
        )
        collate = batching.ImagePairCollator(processor)
    model.train()

    # ---------------------------------------------------------------- the defence, and its corpus bank (hard-corpus)
    injected = defence.InjectedNegatives.parse(config.injected_negatives, config.injected_negative_documents) if config.injected_negatives else None
    bank_source, bank_inputs, bank, train_collate = None, [], None, collate
    refresh = bank_refresh(config)
    if injected is not None and injected.corpus_patches:
        if family != "text":
            raise UserError("--injected-negatives hard-corpus:K needs a text model (its bank encodes corpus texts); "
                            "use hard:K with an image model")
        bank_source = corpus_bank.BankSource(data.pairs)  # every training document, held-out pairs' too
        bank_inputs = [model.tokenize(bank_source.texts[i : i + 64], is_query=False, max_length=config.train_document_max_length)
                       for i in range(0, len(bank_source.texts), 64)]
        train_collate = bank_source.collator(collate)
        logger.info("hard-corpus negatives: a bank of %d training documents, rebuilt every %d steps",
                    len(bank_source.texts), refresh)

    # ---------------------------------------------------------------- batches
    sampler = batching.EpochShuffleSampler(len(train_pairs), seed=config.seed)
    loader = torch.utils.data.DataLoader(
        batching.PairDataset(train_pairs), batch_size=local_batch_size, sampler=sampler, collate_fn=train_collate,
        drop_last=True, generator=torch.Generator().manual_seed(config.seed),
    )
    steps_per_epoch = len(train_pairs) // config.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"{len(train_pairs)} training pairs are fewer than one global batch of {config.batch_size}; lower --batch-size"
        )
    max_steps = config.max_steps or (math.ceil(config.epochs * steps_per_epoch) if config.epochs else DEFAULT_MAX_STEPS)
    warmup_steps = config.warmup_steps if config.warmup_steps is not None else int(WARMUP_SHARE * max_steps)
    validation_batches = [collate(validation_pairs[i : i + config.batch_size]) for i in range(0, len(validation_pairs), config.batch_size)]

    # ---------------------------------------------------------------- optimiser
    optimizer = torch.optim.AdamW(models.trainable_parameters(model), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_scheduler(config.schedule, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max_steps)
    loss_fn = PooledInfoNCELoss(head, temperature=config.temperature)
    passages = None  # adversarial passages, re-encoded as every query's negatives (text models)
    if config.adversarial_passages:
        if family != "text":
            raise UserError(f"--adversarial-passages crafts text passages; {config.model} is a {family} model: drop it")
        settings = {"refresh": config.adversarial_passage_refresh, "length": config.adversarial_passage_length,
                    "iterations": config.adversarial_passage_iterations, "positions": config.adversarial_passage_positions}
        plan = AdversarialPassages.parse(config.adversarial_passages, seed=config.seed,
                                         **{key: value for key, value in settings.items() if value is not None})
        passages = PassageBank(plan, [pair.query for pair in train_pairs], output / PASSAGE_FOLDER,
                               show_progress=accelerator.is_main_process)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    state = runs.TrainState()
    accelerator.register_for_checkpointing(state)

    # ---------------------------------------------------------------- run folder: config.json, resume, log
    run_config = {
        **{key: value for key, value in config.to_dict().items() if key not in ("resume", "overwrite")
           and (config.adversarial_passages or key not in ADVERSARIAL_PASSAGE_OPTIONS)},
        "family": family, "data_source": data.source, "data_kind": data.kind, "training_pairs": len(train_pairs),
        "validation_pairs_held_out": len(validation_pairs), "documents_seen_in_training": data.documents_seen,
        "local_batch_size": local_batch_size, "num_processes": accelerator.num_processes,
        "mixed_precision": precision, "max_steps": max_steps, "warmup_steps": warmup_steps,
        "steps_per_epoch": steps_per_epoch,
    }
    if bank_source is None:
        run_config.pop("corpus_bank_refresh")  # as requested_options: absent without hard-corpus negatives
    else:
        run_config.update(corpus_bank_refresh=refresh, corpus_bank_documents=len(bank_source.texts))
    checkpoint = None
    if config.resume not in (None, "latest"):
        checkpoint = Path(config.resume).expanduser()
    elif folder.status == "resumable" and not config.overwrite:
        saved = json.loads((output / "config.json").read_text())
        changed = runs.config_differences(saved, run_config)
        if changed:
            raise UserError(
                f"{output} holds checkpoints of the same options but the data or the set-up changed since (differs "
                f"in {', '.join(changed)}); pass a new --output-dir, or --overwrite to start over"
            )
        checkpoint = folder.checkpoint
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        logger.info("resumed from %s at step %d", checkpoint, state.step)
    elif config.resume:
        logger.info("--resume: no checkpoint under %s, starting from step 0", output / "checkpoints")
    log = runs.JsonlLog(output / "log.jsonl", enabled=accelerator.is_main_process)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        runs.truncate_log(output / "log.jsonl", state.step)  # a resumed run logs each step once
        write_json_atomic(output / "config.json", run_config, indent=2)
        if has_tensorboard:
            accelerator.init_trackers("finetune", config={k: v for k, v in run_config.items() if isinstance(v, (int, float, str, bool))})

    def encode(inputs, is_query):
        return batching.embed(model, inputs, is_query)

    def passage_negatives(batch_size: int):
        """The adversarial passages of this step as every query's negatives: ``([B, P, T, D], [B, P, T])``."""
        colbert = accelerator.unwrap_model(model)
        passages.prepare(colbert, head, state.step, accelerator.is_main_process)  # loaded, kept or built
        tokenize = lambda texts: {key: value.to(accelerator.device) for key, value in colbert.tokenize(texts, is_query=False).items()}  # noqa: E731
        return passages.negatives(lambda inputs: encode(inputs, False), tokenize, batch_size)

    def evaluate() -> dict:
        model.eval()
        result = batching.validation_loss(encode, loss_fn, validation_batches) if validation_batches else {}
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
            if bank_source is not None and (bank is None or (state.step % refresh == 0 and bank.built_at != state.step)):
                model.eval()  # at step 0, every `refresh` steps and at a (re)start: see corpus_bank
                bank = corpus_bank.encode_bank(lambda inputs: encode(inputs, False), bank_inputs, state.step,
                                               accelerator.device, accelerator.is_main_process)
                model.train()
            with accelerator.accumulate(model):
                queries, query_mask = encode(batch["query"], True)
                documents, document_mask = encode(batch["document"], False)
                negatives, negative_mask = encode(batch["negative"], False) if "negative" in batch else (None, None)
                if negatives is not None:  # [B * n, T, D] -> [B, n, T, D]
                    negatives = negatives.view(queries.shape[0], -1, *negatives.shape[1:])
                    negative_mask = negative_mask.view(queries.shape[0], -1, negative_mask.shape[-1])
                all_documents, all_document_mask, offset = batching.gather_documents(accelerator, documents, document_mask)
                negatives, negative_mask = defence.with_injected_negatives(  # the defence (None: unchanged)
                    negatives, negative_mask, queries, query_mask, all_documents, all_document_mask, offset, injected,
                    key=(config.seed, state.epoch, state.batch_in_epoch),
                    corpus_patches=corpus_bank.nearest_bank_patches(bank, queries, query_mask, batch["bank_gold"],
                                                                    injected.corpus_patches) if bank_source else None,
                )
                if passages is not None:  # the text defence: adversarial passages, encoded now (with gradients)
                    negatives, negative_mask = defence.concatenate_negatives(negatives, negative_mask, *passage_negatives(queries.shape[0]))
                loss = loss_fn(
                    queries, all_documents, negatives, offset,
                    query_mask=query_mask, doc_mask=all_document_mask, neg_doc_mask=negative_mask,
                )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(models.trainable_parameters(model), config.max_grad_norm)
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

            if state.step % config.log_every == 0 or state.step == max_steps or state.step == 1:
                concentration = gold_pair_gradient_concentration(
                    queries, documents, head, query_mask=query_mask, document_mask=document_mask,
                    temperature=config.temperature, normalize_scores=True,
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
            if config.eval_every and state.step % config.eval_every == 0:
                record = {"step": state.step, **evaluate()}
                log.write(record)
                accelerator.log({key: value for key, value in record.items() if key != "step"}, step=state.step)
            if config.save_every and state.step % config.save_every == 0:
                runs.save_state_atomic(accelerator, output, state.step)
            step_started = time.perf_counter()
            if state.step >= max_steps or state.step == config.stop_after_steps:
                break
        else:  # the epoch ran out
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if state.step == config.stop_after_steps:
            break
    progress.close()
    if state.step == config.stop_after_steps and state.step < max_steps:
        logger.info("stopped after step %d as asked (--stop-after-steps); rerun the command to continue", state.step)
        accelerator.end_training()
        return accelerator.unwrap_model(model), {"step": state.step, "stopped": True}

    # ---------------------------------------------------------------- save
    final = {"step": state.step, **evaluate()}
    accelerator.wait_for_everyone()
    summary = {
        **final,
        "median_step_time_s": sorted(step_times)[len(step_times) // 2] if step_times else None,
        "steps_timed": len(step_times),
        "peak_memory_mb": runs.peak_memory_mb(),
    }
    if accelerator.is_main_process:  # the model folder, then summary.json: its presence marks a finished run
        with runs.atomic_folder(output / "model") as folder_being_written:
            # the head it scores with: --scoring-pooling, else the one it was trained with (run_config["head"])
            saved_head = parse_head(config.scoring_pooling) if config.scoring_pooling else head
            runs.save_checkpoint(accelerator.unwrap_model(model), processor, folder_being_written, saved_head, run_config)
        log.write({**final, "final": True})
        write_json_atomic(output / "summary.json", summary, indent=2)
        logger.info("saved the model to %s (%s)", output / "model", json.dumps(summary))
    accelerator.end_training()
    return accelerator.unwrap_model(model), summary
