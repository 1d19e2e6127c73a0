# lir-robust. `make setup` once, then `make test`. Every heavy job is a target of its own.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DATA_ROOT ?= ../shared/data
export LIR_ROBUST_DATA_ROOT ?= $(abspath $(DATA_ROOT))
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# Length sweep (the main job); override any of these on the command line.
MODEL ?= minilm
DATA ?= cranfield
POOLINGS ?= maxsim blend:tau=1.0,weight=0.5,capacity=1,candidates=8 exclusive:capacity=1,candidates=8 topk:k=4 softmax:tau=1.0 softmax:tau=0.1 lse:tau=0.1
KINDS ?= gaussian corpus hard spike
KS ?= 0 1 4 16 25 50 100 200 400
OUT ?= results

# Fine-tuning (FINETUNE_ARGS: any extra train/finetune.py options, e.g. "--max-steps 200 --batch-size 64";
# FINETUNE_ALL_ARGS: eval/finetune_all.py options, e.g. "--projection-dim 128 --projection-init svd --out results/ft-svd")
POOLING ?=
FINETUNE_ARGS ?=
FINETUNE_ALL_ARGS ?=

# Publishing (make publish CHECKPOINT=runs/x REPO=user/name PUBLISH_ARGS="--license apache-2.0 --private";
# PUBLISH_ARGS: any train/publish.py options, e.g. --dry-run out/x, --base-model ID, --results PATH, --mteb FOLDER,
# --revision B; <run>/mteb, written by make mteb OUT=<run>, is attached by default)
CHECKPOINT ?=
REPO ?=
PUBLISH_ARGS ?=

.PHONY: setup test synth synth-quick eval-length-sweep attack-one attack mteb check-pool-blocks bench bench-scoring bench-sweep bench-train bench-train-runs bench-scale finetune finetune-all study results-doc publish clean search

setup:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# 1. torch + torchvision first: the only pair whose torchvision imports on this machine (see README).
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	# 2. the project and its pinned dependencies.
	$(PIP) install -e ".[dev]"
	# 3. colpali-engine without its dependencies: its metadata caps torch < 2.14, it runs on 2.14.1.
	$(PIP) install --no-deps colpali-engine==0.3.18
	# 4. pylate without its dependencies: its metadata pins transformers <= 5.3.0 and fast-plaid builds that pin older
	#    torches; it runs on the set above (sentence-transformers 5.3.0, its own pin). Only the PLAID index is missing.
	$(PIP) install --no-deps pylate==1.6.0
	$(PY) -c "import lir_robust.patches.colpali as c, lir_robust.patches.pylate as p; c.check_colpali_version(); p.check_pylate_version(); print('setup ok')"

test:
	$(PY) -m pytest -q

synth:
	$(PY) eval/synthetic_study.py --preset full --out $(OUT)/synthetic

synth-quick:
	$(PY) eval/synthetic_study.py --preset quick --out $(OUT)/synthetic-quick

eval-length-sweep:
	$(PY) eval/length_sweep.py --model $(MODEL) --data $(DATA) --poolings $(POOLINGS) --kinds $(KINDS) --ks $(KS) --out $(OUT)/length-sweep

# One text attack of one model, every head (ATTACK: cluster-text hotflip insertion stuffing query-text; ATTACK_ARGS: any
# eval/attack.py options, e.g. "--n 10 --iterations 30 --heads maxsim exclusive softmax:tau=1.0" or, for insertion,
# "--length 16 --position sentence").
ATTACK ?= cluster-text
ATTACK_ARGS ?=
attack-one:
	$(PY) eval/attack.py --model $(MODEL) --data $(DATA) --attack $(ATTACK) $(ATTACK_ARGS) --out $(OUT)/attack/$(ATTACK)

# MTEB with the pooling head (TASKS: BEIR folders, collection names or MTEB task names; HEADS: empty = the
# checkpoint's own head; INJECT: the sweep's injection conditions on local tasks, KIND:K, e.g. "spike:4 hard:4"),
# mteb's result files under $(OUT)/mteb.
TASKS ?= $(DATA)
HEADS ?=
INJECT ?=
mteb:
	$(PY) eval/mteb_eval.py --model $(MODEL) --tasks $(TASKS) $(if $(HEADS),--head $(HEADS)) $(if $(INJECT),--inject $(INJECT)) --out $(OUT)/mteb
# PyLate's Voyager index + the head's rerank against exhaustive scoring, clean and with spike / hard K = 4 indexed.
SEARCH_ARGS ?= --head maxsim exclusive softmax:tau=1.0 --candidates 50 100 200
search:
	$(PY) eval/search.py --model $(MODEL) --data $(DATA) $(SEARCH_ARGS) --out $(OUT)/search-$(DATA)

# Pooled gaussian / corpus patches (the sweep's default) against private draws per document, two seeds each.
check-pool-blocks:
	$(PY) eval/pool_blocks_check.py --out $(OUT)/pool-blocks-check

bench: bench-scoring bench-sweep bench-train

bench-scoring:
	$(PY) eval/bench_scoring.py

bench-sweep:
	$(PY) eval/bench_sweep.py

# One fine-tuning step per head and with the training-side defence (--injected-negatives), against maxsim.
bench-train:
	$(PY) eval/bench_train.py --out $(OUT)/bench-train

# Whole fine-tunes (maxsim against the recipe's training head softmax:tau=1.0 and blend, 20 steps, 3 interleaved rounds)
# on DATA: median step and cores used; fails when a head is serialised (fewer cores than maxsim and slower steps). Nine
# fine-tunes of about 35 s each on an idle 2-core machine (two heads, six fine-tunes, took 3 min 42 s).
bench-train-runs:
	$(PY) eval/bench_train.py --real-runs 3 --data $(DATA) --out $(OUT)/bench-train-$(DATA)

# Time and peak RSS of the full default sweep grid on synthetic memory-mapped corpora of 10k, 30k and 100k documents,
# 1 and 2 processes (long: run it on an idle machine). BENCH_SCALE_ARGS: e.g. "--sizes 500 1500 --queries 20".
BENCH_SCALE_ARGS ?=
bench-scale:
	$(PY) eval/bench_scale.py --out $(OUT)/bench-scale $(BENCH_SCALE_ARGS)

# Writes runs/finetune-<head> (e.g. runs/finetune-topk-k4; the recipe, without POOLING:
# runs/finetune-softmax-tau1.0-scored-blend-...), as the command alone does; FINETUNE_ARGS="--output-dir X" to change.
finetune:
	$(VENV)/bin/accelerate launch train/finetune.py $(if $(POOLING),--pooling $(POOLING)) $(FINETUNE_ARGS)

# One fine-tuning run per head on Cranfield pseudo-queries (the recipe: RECIPE in eval/finetune_all.py), nDCG@10
# before / after on the dev / held-out halves of the test queries (results/finetune/report.md).
finetune-all:
	$(PY) eval/finetune_all.py --out $(OUT)/finetune $(FINETUNE_ALL_ARGS)

# The retraining study (issue 10): one model per head and seed (+ defended heads), swept in both protocols; resumable,
# in named parts (python eval/study.py --list-parts). STUDY_ARGS: e.g. "--parts raw:cranfield cranfield:seed0".
# Then results-doc rebuilds docs/RESULTS.md from results/study/summary.json and results/synthetic/results.json.
STUDY_ARGS ?=
study:
	$(PY) eval/study.py --out $(OUT)/study $(STUDY_ARGS)

# Text attacks on every model of the study (seed 0; issue 19): resumable, in named parts (make attack LIST=1 lists them
# with an estimated cost). PARTS: e.g. "cranfield:raw cranfield:maxsim:hotflip"; ATTACK_STUDY_ARGS: e.g. "--iterations 50".
PARTS ?=
LIST ?=
ATTACK_STUDY_ARGS ?=
attack:
	$(PY) eval/attack_study.py --study $(OUT)/study --out $(OUT)/attack-study $(if $(LIST),--list-parts) $(if $(PARTS),--parts $(PARTS)) $(ATTACK_STUDY_ARGS)

results-doc:
	$(PY) eval/results_doc.py --study $(OUT)/study/summary.json --synthetic $(OUT)/synthetic/results.json \
		--recipe-search $(OUT)/recipe-search/summary.json --corpus-hard $(OUT)/recipe-search/corpus-hard \
		--coherence $(OUT)/recipe-search/coherence --text-defence $(OUT)/text-defence/summary.json \
		--text-attacks $(OUT)/text-attacks --attack-study $(OUT)/attack-study/summary.json --out docs/RESULTS.md

# Publishing goes online although every other target defaults to HF_HUB_OFFLINE=1: unless you set HF_HUB_OFFLINE
# yourself (environment or command line), this target runs with HF_HUB_OFFLINE=0; set to 1, a push stops at once
# with a message. --dry-run OUT never touches the network. The token comes from `hf auth login` or HF_TOKEN.
publish:
	@test -n "$(CHECKPOINT)" -a -n "$(REPO)" || { echo "make publish: set CHECKPOINT=<fine-tuned run or model folder> REPO=<owner/name> (and PUBLISH_ARGS=\"--license ...\")" >&2; exit 2; }
	HF_HUB_OFFLINE=$(if $(filter file,$(origin HF_HUB_OFFLINE)),0,$(HF_HUB_OFFLINE)) $(PY) train/publish.py --checkpoint $(CHECKPOINT) --repo $(REPO) $(PUBLISH_ARGS)

clean:
	rm -rf .pytest_cache build *.egg-info
