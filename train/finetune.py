"""Fine-tune a late-interaction retriever with any pooling head: LoRA + in-batch InfoNCE + Accelerate.

    accelerate launch train/finetune.py                                    # the recipe: exclusive head, MiniLM ColBERT on Cranfield
    accelerate launch train/finetune.py --pooling topk
    accelerate launch train/finetune.py --pooling softmax --pool-tau 0.1 --max-steps 200
    accelerate launch train/finetune.py --pooling exclusive --injected-negatives spike:4 hard:4   # + the defence
    accelerate launch --multi_gpu --num_processes 4 train/finetune.py --model vidore/colqwen2-v1.0 \
        --data vidore/colpali_train_set --pooling topk:k=4 --batch-size 64 --mixed-precision bf16

The defaults are the best measured recipe (README, "Fine-tuning"; eval/finetune_all.py records it as RECIPE): the
exclusive head (the retraining study's best trade: maxsim's clean nDCG@10, several times its share under spike
injection), the encoder's hidden size with an identity projection (step 0 is the raw model), inverse-cloze pairs from the corpus
(--pseudo-queries sentence), lr 4e-4, 40 steps of global batch 32, temperature 0.02, training documents of 96
tokens, LoRA r 32 / alpha 32 / dropout 0.1 on query / key / value.

The file reads top to bottom: settings, model, data, optimiser, then the loop. Accelerate places the model and the
batches, wraps the model for several processes, handles mixed precision, gradient accumulation and checkpoints;
everything else is written out below. With several processes every query sees the whole global batch of documents
as negatives (gathered with gradients); each process's queries stay local. --injected-negatives adds, for each
query, copies of non-gold batch documents carrying injected patches (lir_robust.training.defence) to its negatives.

Writes to --output-dir: the model (save_pretrained folder: LoRA adapter, projection, tokenizer / processor,
pooling.json with the head and this run's configuration), log.jsonl (loss, lr, gradient Gini on gold pairs, ...),
config.json, summary.json, checkpoints/step-N (accelerator.save_state, renamed into place once complete) and
TensorBoard logs if it is installed. Rerunning the same command continues from the last checkpoint (and ends with
the weights of an uninterrupted run); a finished run is reported, not retrained; another configuration in the same
folder stops with a message (--overwrite replaces it).
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

from lir_robust.commands import cli  # noqa: E402

from lir_robust.training import defence

from lir_robust.training import common as training
from lir_robust.data import locate_data  # noqa: E402
from lir_robust.scoring.diagnostics import gold_pair_gradient_concentration  # noqa: E402
from lir_robust.core.files import write_json_atomic  # noqa: E402
from lir_robust.scoring.losses import PooledInfoNCELoss  # noqa: E402
from lir_robust.scoring.pooling import HEADS, available_heads, parse_head  # noqa: E402

logger = logging.getLogger("finetune")

DEFAULT_MAX_STEPS = 40  # the recipe: 40 steps of global batch 32 (about one epoch of Cranfield's 1,334 pairs)
WARMUP_SHARE = 0.1


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm", help="'minilm' (offline default), a BERT-like encoder, a PyLate model (folder or Hub id: its own projection, prefixes, lengths and query expansion; a PyLate folder comes back in <output-dir>/pylate), or a colpali-engine model (Hub id or local folder)")
    p.add_argument("--data", default="cranfield", help=f"BEIR folder or collection name under $LIR_ROBUST_DATA_ROOT; {training.VIDORE_TRAIN_SET} or a save_to_disk folder (query, image) for colpali-engine models")
    p.add_argument("--pooling", default="exclusive", type=cli.head_spec, help=f"pooling head, e.g. topk or topk:k=4; heads: {available_heads()}. Default exclusive (capacity-limited matching): in the retraining study (docs/RESULTS.md) it kept retrained maxsim's nDCG@10 within 0.01 on Cranfield and MED and 4-8x its share under spike injection")
    p.add_argument("--pool-k", type=cli.positive_int, default=None, help="k of the topk head (overrides the text form)")
    p.add_argument("--pool-tau", type=cli.positive_float, default=None, help="tau of the softmax / lse heads (overrides the text form)")
    # model
    p.add_argument("--projection-dim", type=cli.positive_int, default=None, help="text models: token vector size after the projection (default: the encoder's hidden size, 384 for MiniLM)")
    p.add_argument("--projection-init", choices=["svd", "identity", "random"], default=None, help="text models (default identity): identity = the identity matrix, needs --projection-dim = hidden size (starts AS the raw model); svd = top singular directions of training-document token vectors (starts close to the raw model); random = nn.Linear default")
    p.add_argument("--query-max-length", type=cli.int_at_least(2), default=32, help="text models: query tokens (inference and training)")
    p.add_argument("--document-max-length", type=cli.int_at_least(2), default=256, help="text models: document tokens at inference (saved in the checkpoint)")
    p.add_argument("--train-document-max-length", type=cli.int_at_least(2), default=96, help="text models: document tokens in training batches")
    p.add_argument("--lora-r", type=cli.positive_int, default=32)
    p.add_argument("--lora-alpha", type=cli.positive_int, default=32)
    p.add_argument("--lora-dropout", type=cli.dropout_probability, default=0.1)
    p.add_argument("--lora-target-modules", nargs="+", default=None, help="default: query key value (BERT-like) or colpali-engine's regex of the model family")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--save-pylate", action="store_true", help="text models: also write a PyLate model folder (LoRA merged, pooling.json, card) to <output-dir>/pylate (always done for a PyLate --model)")
    # loss and data
    p.add_argument("--temperature", type=cli.positive_float, default=0.02, help="InfoNCE temperature (scores are divided by query length first)")
    p.add_argument("--pseudo-queries", default="sentence", choices=sorted(training.PSEUDO_QUERIES), help="text data without a train split: the query of each corpus pair: sentence (inverse cloze: one sentence of the abstract -> title + the rest) or title (title -> text)")
    p.add_argument("--hard-negatives", type=cli.non_negative_int, default=0, help="text data: TF-IDF-mined hard negatives per query (0 = in-batch only)")
    p.add_argument("--injected-negatives", nargs="+", type=cli.injected_negative_or_none, default=[], metavar="KIND:K", help="the training-side defence: for every query, non-gold documents of the batch with K injected patches appended join its negatives; KIND spike (from the query's current embeddings) or hard (nearest patches of other batch documents), e.g. spike:4 hard:4; none: no defence (default: none)")
    p.add_argument("--injected-negative-documents", type=cli.positive_int, default=None, help="with --injected-negatives: injected copies per query and kind (default 1)")
    p.add_argument("--validation-pairs", type=cli.non_negative_int, default=64, help="pairs held out of training for the validation loss")
    # optimisation
    p.add_argument("--lr", type=cli.positive_float, default=4e-4)
    p.add_argument("--weight-decay", type=cli.non_negative_float, default=0.0)
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine", "constant_with_warmup"])
    p.add_argument("--warmup-steps", type=cli.non_negative_int, default=None, help="default: 10%% of the steps")
    p.add_argument("--max-steps", type=cli.positive_int, default=None, help=f"optimizer steps (default {DEFAULT_MAX_STEPS}, unless --epochs is given)")
    p.add_argument("--epochs", type=cli.positive_float, default=None, help="train for this many passes over the pairs instead of --max-steps")
    p.add_argument("--batch-size", type=cli.positive_int, default=32, help="global batch: queries per optimizer step over all processes and accumulation steps")
    p.add_argument("--gradient-accumulation", type=cli.positive_int, default=1)
    p.add_argument("--max-grad-norm", type=cli.positive_float, default=1.0)
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "fp16", "bf16"], help="auto: bf16 on a GPU that supports it, else no")
    p.add_argument("--seed", type=cli.non_negative_int, default=0)
    # output
    p.add_argument("--output-dir", type=cli.output_folder, default=None, help="default: runs/finetune-<head>, e.g. runs/finetune-topk-k4")
    p.add_argument("--log-every", type=cli.positive_int, default=10)
    p.add_argument("--eval-every", type=cli.non_negative_int, default=0, help="validation loss every N steps (0: only at the end)")
    p.add_argument("--save-every", type=cli.non_negative_int, default=50, help="accelerator.save_state every N steps (0: never)")
    p.add_argument("--overwrite", action="store_true", help="replace what --output-dir holds (a run of another configuration, or a finished run) instead of stopping")
    p.add_argument("--resume", nargs="?", const="latest", default=None, help="kept for old commands: rerunning the same command resumes from the last checkpoint anyway; --resume PATH continues from that checkpoint folder")
    p.add_argument("--stop-after-steps", type=cli.positive_int, default=None, help="leave the loop after this many steps without saving the model, as if interrupted (to test resuming)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """The options, every one checked before anything loads (a bad one raises cli.UserError or a DataError)."""
    args = build_parser().parse_args(argv)
    check_args(args)
    return args


def _head_from_options(args: argparse.Namespace) -> str:
    """The head of --pooling with --pool-k / --pool-tau applied; refuses an option the head has no parameter for."""
    import dataclasses

    name = parse_head(args.pooling).name
    fields = {field.name for field in dataclasses.fields(HEADS[name])}
    for option, parameter, value in (("--pool-k", "k", args.pool_k), ("--pool-tau", "tau", args.pool_tau)):
        if value is not None and parameter not in fields:
            having = [head for head, cls in HEADS.items() if parameter in {f.name for f in dataclasses.fields(cls)}]
            raise cli.UserError(
                f"{option} sets the {parameter} of the {' / '.join(having)} heads, but --pooling {args.pooling} has no "
                f"{parameter}; drop {option} or pass e.g. --pooling {having[0]}:{parameter}={value}"
            )
    try:
        return parse_head(args.pooling, k=args.pool_k, tau=args.pool_tau).spec()
    except ValueError as error:
        raise cli.UserError(str(error)) from None


def check_args(args: argparse.Namespace) -> None:
    """Cross-checks of the options, reading nothing but small config files; fills in the defaults that depend on
    others (head, max_steps, warmup_steps, projection_dim / projection_init, mixed_precision, output_dir)."""
    args.head = _head_from_options(args)
    cli.check_model(args.model)
    try:
        family = training.model_family(args.model)
    except ValueError as error:  # a colpali-looking name whose family cannot be told
        raise cli.UserError(f"--model {args.model}: {error}") from None
    located = locate_data(args.data, split=None)
    if family == "text" and located.data_format != "beir":
        raise cli.UserError(
            f"--data {args.data} is a {located.data_format} image data set, but --model {args.model} is a text "
            "encoder: text models train on a BEIR folder (corpus.jsonl [+ qrels/train.tsv])"
        )
    if family != "text" and located.data_format == "beir":
        raise cli.UserError(
            f"--data {args.data} is a BEIR text collection, but --model {args.model} is a colpali-engine model: pass "
            f"(query, image) pairs such as {training.VIDORE_TRAIN_SET} or a save_to_disk folder"
        )
    if family == "text" and training.is_pylate_model(args.model):
        for option, value in (("--projection-dim", args.projection_dim), ("--projection-init", args.projection_init)):
            if value is not None:
                raise cli.UserError(f"{option}: --model {args.model} is a PyLate model, whose own Dense projection is trained on: drop {option}")
        args.projection_init = "pylate"  # the model's own projection: nothing to initialise
    elif family == "text":
        hidden = training.text_hidden_size(args.model)
        args.projection_dim = args.projection_dim or hidden
        args.projection_init = args.projection_init or "identity"
        if args.projection_init == "identity" and args.projection_dim != hidden:
            raise cli.UserError(
                f"--projection-init identity needs --projection-dim = the hidden size {hidden} of {args.model}, got "
                f"{args.projection_dim}; drop --projection-dim, or pass --projection-init svd"
            )
    else:
        for option, value in (("--projection-dim", args.projection_dim), ("--projection-init", args.projection_init)):
            if value is not None:
                raise cli.UserError(f"{option} applies to text models only; --model {args.model} is a colpali-engine model: drop it")
        if args.hard_negatives:
            raise cli.UserError("--hard-negatives mines text documents; colpali-engine models train on images: drop it")
    if args.mixed_precision == "auto":
        args.mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if args.max_steps is not None and args.epochs is not None:
        raise cli.UserError(f"--max-steps {args.max_steps} and --epochs {args.epochs:g} both set the length of the run; give one")
    if args.epochs is None and args.max_steps is None:
        args.max_steps = DEFAULT_MAX_STEPS
    if args.max_steps is not None and args.warmup_steps is None:
        args.warmup_steps = int(WARMUP_SHARE * args.max_steps)
    if args.max_steps is not None and args.warmup_steps > args.max_steps:
        raise cli.UserError(f"--warmup-steps {args.warmup_steps} exceeds the {args.max_steps} steps of the run; lower it")
    if args.batch_size % args.gradient_accumulation:
        raise cli.UserError(
            f"--batch-size {args.batch_size} (the global batch) must be a multiple of --gradient-accumulation "
            f"{args.gradient_accumulation}"
        )
    if "none" in args.injected_negatives:
        if len(args.injected_negatives) > 1:
            raise cli.UserError(f"--injected-negatives {' '.join(args.injected_negatives)}: none means no defence; give "
                                "none alone or KIND:K items")
        args.injected_negatives = []
    if not args.injected_negatives and args.injected_negative_documents is not None:
        raise cli.UserError("--injected-negative-documents sets how many documents carry --injected-negatives; give "
                            "--injected-negatives too (e.g. spike:4 hard:4) or drop it")
    if args.injected_negatives:
        kinds = [item.split(":")[0] for item in args.injected_negatives]
        if len(set(kinds)) != len(kinds):
            raise cli.UserError(f"--injected-negatives {' '.join(args.injected_negatives)}: give each kind once")
        args.injected_negative_documents = args.injected_negative_documents or 1
        documents = args.batch_size // args.gradient_accumulation  # documents of one micro-batch, all processes
        if args.injected_negative_documents >= documents:
            raise cli.UserError(
                f"--injected-negative-documents {args.injected_negative_documents} needs more non-gold documents than a "
                f"micro-batch of {documents} documents holds (batch size / accumulation); lower it"
            )
    if args.output_dir is None:
        args.output_dir = "runs/finetune-" + args.head.replace(":", "-").replace("=", "").replace(",", "-")
        try:
            cli.output_folder(args.output_dir)
        except argparse.ArgumentTypeError as error:
            raise cli.UserError(f"--output-dir (default {args.output_dir}): {error}") from None
    if args.resume not in (None, "latest") and not training.is_complete_checkpoint(Path(args.resume).expanduser()):
        raise cli.UserError(
            f"--resume {args.resume}: not a complete checkpoint folder (checkpoints/step-N holding "
            f"{training.CHECKPOINT_LAST_FILE}); pass one, or plain --resume (rerunning resumes anyway)"
        )


def requested_options(args: argparse.Namespace) -> dict:
    """The options a run folder's config.json is compared with before anything loads (values that are only known
    once the data is loaded -- max_steps / warmup_steps under --epochs -- are compared later)."""
    options = {key: value for key, value in vars(args).items() if not (key in ("max_steps", "warmup_steps") and value is None)}
    if not args.injected_negatives:  # a run without the defence, also one saved before these options existed
        options.pop("injected_negatives"), options.pop("injected_negative_documents")
    return options


def _check_run_folder(args: argparse.Namespace) -> training.RunFolder:
    folder = training.inspect_run_folder(args.output_dir, requested_options(args))
    if args.overwrite:
        return folder
    if folder.status == "other-config":
        raise cli.UserError(
            f"{args.output_dir} holds a run of another configuration (differs in {', '.join(folder.differences)}); "
            "pass a new --output-dir, or --overwrite to replace that run"
        )
    if folder.status == "unknown-files":
        raise cli.UserError(
            f"{args.output_dir} holds fine-tuning files but no readable config.json (an older or foreign run); pass a "
            "new --output-dir, or --overwrite to replace them"
        )
    return folder


def train(args: argparse.Namespace):
    """Run the fine-tuning described by ``args`` (see parse_args); returns ``(unwrapped model, summary dict)``.

    ``--output-dir`` decides how it starts: empty -> a new run; the same configuration with checkpoints -> continue
    from the last complete one; a finished run of the same configuration -> ``(None, its summary)`` without
    training; another configuration -> cli.UserError (unless --overwrite, which starts over)."""
    head = parse_head(args.head)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    output = Path(args.output_dir)
    folder = _check_run_folder(args)  # before anything loads
    if folder.status == "finished" and not args.overwrite:
        summary = json.loads((output / "summary.json").read_text())
        logger.info("%s already holds a finished run of this configuration (summary.json): nothing to do; pass "
                    "--overwrite to train again", output)
        return None, summary

    # ---------------------------------------------------------------- Accelerate
    precision = args.mixed_precision  # "auto" was resolved by parse_args
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
        raise cli.UserError(
            f"--batch-size {args.batch_size} must be a multiple of processes x accumulation = {micro_batches}; "
            "change --batch-size or the number of processes"
        )
    local_batch_size = args.batch_size // micro_batches
    if accelerator.is_main_process and (args.overwrite or folder.status == "started") and folder.status != "new":
        training.clear_run_folder(output)  # --overwrite, or a run killed before its first checkpoint: start over
        logger.info("cleared %s (%s)", output, "--overwrite" if args.overwrite else "no checkpoint to continue from")
    accelerator.wait_for_everyone()
    set_seed(args.seed)

    # ---------------------------------------------------------------- training pairs (never the evaluation queries)
    family = training.model_family(args.model)
    data = training.load_training_pairs(args.data, args.pseudo_queries, args.seed)
    if args.validation_pairs >= len(data.pairs):
        raise cli.UserError(
            f"--validation-pairs {args.validation_pairs} holds out all {len(data.pairs)} training pairs of {args.data}; "
            "lower it (0: no validation loss)"
        )
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
            training.init_projection_identity(model)  # parse_args checked projection_dim = the hidden size
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
        raise cli.UserError(
            f"{len(train_pairs)} training pairs are fewer than one global batch of {args.batch_size}; lower --batch-size"
        )
    max_steps = args.max_steps or math.ceil(args.epochs * steps_per_epoch)
    warmup_steps = args.warmup_steps if args.warmup_steps is not None else int(WARMUP_SHARE * max_steps)
    validation_batches = [collate(validation_pairs[i : i + args.batch_size]) for i in range(0, len(validation_pairs), args.batch_size)]

    # ---------------------------------------------------------------- optimiser
    optimizer = torch.optim.AdamW(training.trainable_parameters(model), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_scheduler(args.schedule, optimizer, num_warmup_steps=warmup_steps, num_training_steps=max_steps)
    loss_fn = PooledInfoNCELoss(head, temperature=args.temperature)
    injected = defence.InjectedNegatives.parse(args.injected_negatives, args.injected_negative_documents) if args.injected_negatives else None
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    state = training.TrainState()
    accelerator.register_for_checkpointing(state)

    config = {
        **{key: value for key, value in vars(args).items() if key not in ("resume", "overwrite", "debug")},
        "family": family, "data_source": data.source, "data_kind": data.kind, "training_pairs": len(train_pairs),
        "validation_pairs_held_out": len(validation_pairs), "documents_seen_in_training": data.documents_seen,
        "local_batch_size": local_batch_size, "num_processes": accelerator.num_processes,
        "mixed_precision": precision, "max_steps": max_steps, "warmup_steps": warmup_steps,
        "steps_per_epoch": steps_per_epoch,
    }
    checkpoint = None
    if args.resume not in (None, "latest"):
        checkpoint = Path(args.resume).expanduser()
    elif folder.status == "resumable" and not args.overwrite:
        saved = json.loads((output / "config.json").read_text())
        changed = training.config_differences(saved, config)
        if changed:
            raise cli.UserError(
                f"{output} holds checkpoints of the same options but the data or the set-up changed since (differs "
                f"in {', '.join(changed)}); pass a new --output-dir, or --overwrite to start over"
            )
        checkpoint = folder.checkpoint
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        logger.info("resumed from %s at step %d", checkpoint, state.step)
    elif args.resume:
        logger.info("--resume: no checkpoint under %s, starting from step 0", output / "checkpoints")
    log = training.JsonlLog(output / "log.jsonl", enabled=accelerator.is_main_process)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        training.truncate_log(output / "log.jsonl", state.step)  # a resumed run logs each step once
        write_json_atomic(output / "config.json", config, indent=2)
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
                negatives, negative_mask = defence.with_injected_negatives(  # the defence (None: unchanged)
                    negatives, negative_mask, queries, query_mask, all_documents, all_document_mask, offset, injected,
                    key=(args.seed, state.epoch, state.batch_in_epoch),
                )
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
                training.save_state_atomic(accelerator, output, state.step)
            step_started = time.perf_counter()
            if state.step >= max_steps or state.step == args.stop_after_steps:
                break
        else:  # the epoch ran out
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if state.step == args.stop_after_steps:
            break
    progress.close()
    if state.step == args.stop_after_steps and state.step < max_steps:
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
        "peak_memory_mb": training.peak_memory_mb(),
    }
    if accelerator.is_main_process:  # the model folder, then summary.json: its presence marks a finished run
        with training.atomic_folder(output / "model") as folder_being_written:
            training.save_checkpoint(accelerator.unwrap_model(model), processor, folder_being_written, head, config)
        log.write({**final, "final": True})
        write_json_atomic(output / "summary.json", summary, indent=2)
        logger.info("saved the model to %s (%s)", output / "model", json.dumps(summary))
    accelerator.end_training()
    return accelerator.unwrap_model(model), summary


def main(argv=None) -> dict:
    _, summary = train(parse_args(argv))
    return summary


if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
