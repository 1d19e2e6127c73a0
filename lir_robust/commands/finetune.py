"""Fine-tune a late-interaction retriever with any pooling head: LoRA + in-batch InfoNCE + Accelerate.

    accelerate launch train/finetune.py                 # the recipe: trained through softmax, scored with blend; MiniLM on Cranfield
    accelerate launch train/finetune.py --pooling topk
    accelerate launch train/finetune.py --pooling softmax --pool-tau 0.1 --max-steps 200
    accelerate launch train/finetune.py --pooling exclusive --injected-negatives spike:4 hard:4   # + the defence
    accelerate launch train/finetune.py --adversarial-passages cluster-text:10 hotflip:10   # + the text defence
    accelerate launch --multi_gpu --num_processes 4 train/finetune.py --model vidore/colqwen2-v1.0 \
        --data vidore/colpali_train_set --pooling topk:k=4 --batch-size 64 --mixed-precision bf16

The defaults are the best measured recipe (README, "Fine-tuning"; eval/finetune_all.py records it as RECIPE): trained
through softmax:tau=1.0 and saved to score with blend:tau=1.0,weight=0.5 (half capacity-limited matching, half
softmax; issue 20's search: it met more of that issue's target than any other direction, 3 of 4 checks in each
Cranfield seed and on MED - clean nDCG@10 +0.009 to +0.016 over retrained maxsim, +18 points kept under hard patches
(MED +13), 2x the hijack budgets, 41-43 % / 78 % kept under spikes; blend trained and scored: 2-3 of 4), the
encoder's hidden size with an identity projection (step 0 is the raw model), inverse-cloze pairs from the corpus
(--pseudo-queries sentence), lr 4e-4, 40 steps of global batch 32, temperature 0.02, training documents of 96
tokens, LoRA r 32 / alpha 32 / dropout 0.1 on query / key / value.

This module parses and checks the options (every check before anything loads) and maps them onto
lir_robust.training.loop.FinetuneConfig; the loop itself is lir_robust.training.loop.run_finetune (read it top to
bottom). Also `python -m lir_robust.commands.finetune ...` (or `accelerate launch -m lir_robust.commands.finetune`).

Writes to --output-dir: the model (save_pretrained folder: LoRA adapter, projection, tokenizer / processor,
pooling.json with the head and this run's configuration), log.jsonl (loss, lr, gradient Gini on gold pairs, ...),
config.json, summary.json, checkpoints/step-N (accelerator.save_state, renamed into place once complete) and
TensorBoard logs if it is installed. Rerunning the same command continues from the last checkpoint (and ends with
the weights of an uninterrupted run); a finished run is reported, not retrained; another configuration in the same
folder stops with a message (--overwrite replaces it).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from lir_robust.commands import cli  # noqa: E402
from lir_robust.core.huggingface import is_pylate_model, model_family  # noqa: E402
from lir_robust.core.naming import head_folder_name  # noqa: E402
from lir_robust.data import locate_data  # noqa: E402
from lir_robust.scoring.pooling import HEADS, available_heads, parse_head  # noqa: E402
from lir_robust.training import models, pairs, runs  # noqa: E402
from lir_robust.training.corpus_bank import DEFAULT_REFRESH  # noqa: E402
from lir_robust.training.loop import (  # noqa: E402
    DEFAULT_MAX_STEPS, RECIPE_POOLING, RECIPE_SCORING_POOLING, WARMUP_SHARE, FinetuneConfig, train as train_config)


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm", help="'minilm' (offline default), a BERT-like encoder, a PyLate model (folder or Hub id: its own projection, prefixes, lengths and query expansion; a PyLate folder comes back in <output-dir>/pylate), or a colpali-engine model (Hub id or local folder)")
    p.add_argument("--data", default="cranfield", help=f"BEIR folder or collection name under $LIR_ROBUST_DATA_ROOT; {pairs.VIDORE_TRAIN_SET} or a save_to_disk folder (query, image) for colpali-engine models")
    p.add_argument("--pooling", default=None, type=cli.head_spec, help=f"the head training scores through, e.g. topk or topk:k=4; heads: {available_heads()}. Default (no --pooling): the recipe, trained through softmax:tau=1.0 and saved to score with blend:tau=1.0,weight=0.5 (--scoring-pooling's default then): in issue 20's search (docs/RESULTS.md, Directions tried) it met 3 of the 4 checks in each of 3 Cranfield seeds and on MED - clean nDCG@10 +0.009 to +0.016 over retrained maxsim, +18 points kept under 4 hard patches (MED +13), 2x the hijack budgets and more, 41-43 %% (Cranfield) / 78 %% (MED) of nDCG@10 kept under 4 spike patches (maxsim 5.5 %% / 16 %%)")
    p.add_argument("--pool-k", type=cli.positive_int, default=None, help="k of the topk head (overrides the text form)")
    p.add_argument("--pool-tau", type=cli.positive_float, default=None, help="tau of the softmax / lse heads (overrides the text form)")
    p.add_argument("--scoring-pooling", default=None, type=cli.head_spec, help="the head the saved model scores with (its pooling.json: what the sweep, the attacks, PyLate and the Hub card use); default: the training head when --pooling is given, blend:tau=1.0,weight=0.5 (the recipe) when it is not")
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
    p.add_argument("--pseudo-queries", default="sentence", choices=sorted(pairs.PSEUDO_QUERIES), help="text data without a train split: the query of each corpus pair: sentence (inverse cloze: one sentence of the abstract -> title + the rest; on a corpus where no document has a title or two sentences, crop instead, with a logged warning), title (title -> text) or crop (Contriever's independent cropping: a random span of 10-50%% of a document's words -> another such span; needs documents of 8+ words, nothing else)")
    p.add_argument("--hard-negatives", type=cli.non_negative_int, default=0, help="text data: TF-IDF-mined hard negatives per query (0 = in-batch only)")
    p.add_argument("--injected-negatives", nargs="+", type=cli.injected_negative_or_none, default=[], metavar="KIND:K", help="the training-side defence: for every query, non-gold documents of the batch with K injected patches appended join its negatives; KIND spike (from the query's current embeddings), hard (nearest patches of other batch documents) or hard-corpus (nearest patches of the whole training corpus, as the evaluation's hard attack; see --corpus-bank-refresh), e.g. spike:4 hard:4; none: no defence (default: none)")
    p.add_argument("--corpus-bank-refresh", type=cli.positive_int, default=None, metavar="R", help="with --injected-negatives hard-corpus:K: rebuild the bank of the corpus's token vectors (encoded by the current encoder) every R steps; --save-every must be a multiple of R (default 10)")
    p.add_argument("--injected-negative-documents", type=cli.positive_int, default=None, help="with --injected-negatives: injected copies per query and kind (default 1)")
    p.add_argument("--adversarial-passages", nargs="+", type=cli.adversarial_passage, default=[], metavar="KIND:N", help="the training-side defence against TEXT attacks (text models): N adversarial passages per kind, crafted against k-means clusters of the training pairs' own queries (never the evaluation queries), join every query's negatives, re-encoded through the current encoder at each step; KIND cluster-text (each cluster's query texts joined, no gradients) or hotflip (HotFlip against the current model and the head being trained, rebuilt every --adversarial-passage-refresh steps), e.g. cluster-text:10 hotflip:10; saved in <output-dir>/adversarial-passages (default: none)")
    p.add_argument("--adversarial-passage-refresh", type=cli.non_negative_int, default=None, help="with --adversarial-passages hotflip:N: steps between HotFlip builds, each continuing from the last (default 10; 0: built once, at the start). A build costs N x iterations x about 2 s on a CPU core (L = 32)")
    p.add_argument("--adversarial-passage-iterations", type=cli.non_negative_int, default=None, help="with --adversarial-passages hotflip:N: HotFlip swaps tried per passage and build (default 10)")
    p.add_argument("--adversarial-passage-length", type=cli.positive_int, default=None, help="with --adversarial-passages hotflip:N: passage tokens L (default 32, as the attack's)")
    p.add_argument("--adversarial-passage-positions", type=cli.positive_int, default=None, help="with --adversarial-passages hotflip:N: positions swapped per HotFlip iteration, as the attack's --positions (default 1)")
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
    if args.pooling is None:  # the recipe: trained through one head, scored with another
        args.pooling = RECIPE_POOLING
        args.scoring_pooling = args.scoring_pooling or RECIPE_SCORING_POOLING
    args.head = _head_from_options(args)
    cli.check_model(args.model)
    try:
        family = model_family(args.model)
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
            f"(query, image) pairs such as {pairs.VIDORE_TRAIN_SET} or a save_to_disk folder"
        )
    if family == "text" and is_pylate_model(args.model):
        for option, value in (("--projection-dim", args.projection_dim), ("--projection-init", args.projection_init)):
            if value is not None:
                raise cli.UserError(f"{option}: --model {args.model} is a PyLate model, whose own Dense projection is trained on: drop {option}")
        args.projection_init = "pylate"  # the model's own projection: nothing to initialise
    elif family == "text":
        hidden = models.text_hidden_size(args.model)
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
    _check_adversarial_passages(args, family)
    has_bank = any(item.startswith("hard-corpus") for item in args.injected_negatives)
    if args.corpus_bank_refresh is not None and not has_bank:
        raise cli.UserError("--corpus-bank-refresh sets how often the hard-corpus bank is rebuilt; give --injected-negatives "
                            "hard-corpus:K too (e.g. spike:4 hard-corpus:4) or drop it")
    if has_bank:
        args.corpus_bank_refresh = args.corpus_bank_refresh or DEFAULT_REFRESH
        if args.save_every % args.corpus_bank_refresh:
            raise cli.UserError(
                f"--save-every {args.save_every} must be a multiple of --corpus-bank-refresh {args.corpus_bank_refresh} "
                "(a resumed run rebuilds the hard-corpus bank at its checkpoint's step); change one of them"
            )
    if args.output_dir is None:
        args.output_dir = "runs/finetune-" + head_folder_name(args.head)
        if args.scoring_pooling not in (None, args.head):
            args.output_dir += "-scored-" + head_folder_name(args.scoring_pooling)
        try:
            cli.output_folder(args.output_dir)
        except argparse.ArgumentTypeError as error:
            raise cli.UserError(f"--output-dir (default {args.output_dir}): {error}") from None
    if args.resume not in (None, "latest") and not runs.is_complete_checkpoint(Path(args.resume).expanduser()):
        raise cli.UserError(
            f"--resume {args.resume}: not a complete checkpoint folder (checkpoints/step-N holding "
            f"{runs.CHECKPOINT_LAST_FILE}); pass one, or plain --resume (rerunning resumes anyway)"
        )


def _check_adversarial_passages(args: argparse.Namespace, family: str) -> None:
    """--adversarial-passages and its settings: text models only, each kind once, HotFlip settings with hotflip."""
    import dataclasses

    from lir_robust.training.adversarial_passages import AdversarialPassages

    defaults = {field.name: field.default for field in dataclasses.fields(AdversarialPassages)}
    hotflip_options = [(f"--adversarial-passage-{name}", f"adversarial_passage_{name}", defaults[name])
                       for name in ("refresh", "iterations", "length", "positions")]
    kinds = [item.split(":")[0] for item in args.adversarial_passages]
    if kinds and family != "text":
        raise cli.UserError(f"--adversarial-passages crafts text passages; --model {args.model} is a colpali-engine model: drop it")
    if len(set(kinds)) != len(kinds):
        raise cli.UserError(f"--adversarial-passages {' '.join(args.adversarial_passages)}: give each kind once")
    for option, name, default in hotflip_options:
        if getattr(args, name) is not None and "hotflip" not in kinds:
            raise cli.UserError(f"{option} sets the HotFlip passages of --adversarial-passages; add hotflip:N to "
                                "--adversarial-passages (e.g. hotflip:10) or drop it")
        if getattr(args, name) is None and "hotflip" in kinds:
            setattr(args, name, default)


def to_config(args: argparse.Namespace) -> FinetuneConfig:
    """The checked options (see parse_args) as the loop's configuration."""
    return FinetuneConfig.from_dict(vars(args))


def train(args: argparse.Namespace):
    """``(unwrapped model, summary)`` of the run ``args`` describes (parse_args' result): the loop, for callers that
    hold parsed options and want the trained model (lir_robust.training.loop.train)."""
    return train_config(to_config(args))


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _, summary = train(args)
    return summary


if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
