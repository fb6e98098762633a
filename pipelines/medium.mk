# The medium recipe: models with visible word order, trained on the corpora mix (make corpora) in about
# three hours of two cores, and the Diffusion-In-Diffusion evaluation that controls for entropy.
#
#   make medium-train     corpus -> tokenizer -> rows (L = 256) -> pre (MDLM), plain (BD3 L'=4),
#                         mix (L' ~ {4: 0.9, 256: 0.1}), ar (AR scorer, same size as the generator)
#   make medium           + the DiD sweep (results/medium/did-results.md) and the frontier
#                         (results/medium/did-frontier.md + .png: nucleus sweep, 3 seeds x 64 samples)
#   make medium-ship      plain, mix, ar as F16 (MED_SHIP_DTYPE=bf16 for BF16) + tokenizer into
#                         data/medium/, at most 60 MB in all, with the exact commands in COMMANDS.txt
#
# Every step is a file target of pipelines/did.mk (run with DID=$(MED)): an interrupted `make medium`
# resumes — each train run continues exactly from the last checkpoint of its run directory.
#
# Choices (L, vocabulary, sizes, steps):
#   L = 256         twice the demo's, so a sample holds a few sentences whose order a reader can judge.
#   V = 4096        the corpora mix is ~17 MB of text (~5 M tokens at V = 4096); at hidden 256 the
#                   output layer of V = 4096 is ~1/5 of a step's FLOPs (V = 8192 would be ~1/3) and each
#                   type is seen twice as often — at this token budget the cheaper softmax buys steps.
#   cpu config      4 layers, hidden 256, 8 heads: 5.7 M parameters, 11.4 MB as F16; the AR scorer has
#                   the same size (the strongest scorer the budget allows; the shipped set is 34 MB).
#   steps           budget = 3 h of two cores. Measured: `train --config cpu` at L = 256, batch 16 runs
#                   ~1,000 tokens/s on the shared machine (load average 6-7, two other builds) and
#                   should run ~2,500 tokens/s on two idle cores (estimate: the 2-3x of the load);
#                   6,500 steps x 16 x 256 = 26.6 M tokens = ~3.0 h at 2,500 tokens/s (~7.4 h at the
#                   loaded rate; stop and rerun `make medium-train` to continue). Per model:
#                   pre 2,500 steps (~70 min), ar 2,000 (~55 min), plain 1,000 and mix 1,000 (~27 min
#                   each). MED_PRECISION=bf16 adds `train --precision bf16` (mixed precision).
#   evaluation      drafts/refines of 64 samples x 256 tokens per cell; the frontier's 2 models x 3 seeds
#                   x 6 nuclei x (1 + 3 policies x 2 γ x 2 blocks) cells are ~1,000 sampling runs: run it
#                   after training with `make -j2 medium`, it is the longer half.
#
# Tiny smoke run (make test): MED=<tmp> MED_CORPUS=data/sample.jsonl MED_L=16 MED_VOCAB=320 ... see
# pipelines/smoke.sh.

MED_HERE := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
ifndef CORPUS_SCRIPTS
include $(MED_HERE)/corpora.mk
endif

MED ?= out/medium
MED_RESULTS ?= results/medium
MED_CORPUS ?= $(CORPUS_OUT)/train-mix.jsonl
MED_JUDGE_FIT ?= $(CORPUS_OUT)/heldout-news.jsonl $(CORPUS_OUT)/heldout-encyclopedic.jsonl $(CORPUS_OUT)/heldout-narrative.jsonl
MED_VOCAB ?= 4096
MED_L ?= 256
MED_CONFIG ?= cpu
MED_SET ?=
MED_AR_SET ?=
MED_BATCH ?= 16
MED_LR ?= 1e-3
MED_WARMUP ?= 200
MED_PRE_STEPS ?= 2500
MED_STEPS ?= 1000
MED_AR_STEPS ?= 2000
MED_VAL_EVERY ?= 250
MED_PRECISION ?=
MED_MODELS ?= plain mix
MED_SAMPLES ?= 64
MED_SEEDS ?= 1 2 3
MED_NUCLEI ?= 0.5 0.6 0.7 0.8 0.9 1.0
MED_GAMMAS ?= 0.1 0.25 0.5 0.75
MED_BLOCKS ?= 4 16 64 L
MED_FRONTIER_GAMMAS ?= 0.25 0.5
MED_FRONTIER_BLOCKS ?= 4 L
MED_BOOTSTRAP ?= 2000
MED_BIN ?= .build/release
MED_BUILD ?= $(SWIFT) build -c release
MED_SHIP ?= data/medium
MED_SHIP_DTYPE ?= f16
MED_SHIP_MAX_MB ?= 60
SWIFT ?= swift

# Everything is pipelines/did.mk with these variables.
MED_DID = $(MAKE) -f $(MED_HERE)/did.mk BIN=$(MED_BIN) DID_BUILD='$(MED_BUILD)' DID=$(MED) DID_RESULTS=$(MED_RESULTS) \
    DID_CORPUS=$(MED_CORPUS) DID_VOCAB=$(MED_VOCAB) DID_L=$(MED_L) DID_CONFIG=$(MED_CONFIG) DID_SET='$(MED_SET)' \
    DID_AR_SET='$(MED_AR_SET)' DID_BATCH=$(MED_BATCH) DID_LR=$(MED_LR) DID_WARMUP=$(MED_WARMUP) \
    DID_PRE_STEPS=$(MED_PRE_STEPS) DID_STEPS=$(MED_STEPS) DID_AR_STEPS=$(MED_AR_STEPS) DID_VAL_EVERY=$(MED_VAL_EVERY) \
    DID_TRAIN_FLAGS='$(if $(MED_PRECISION),--precision $(MED_PRECISION))' DID_MODELS='$(MED_MODELS)' \
    DID_FRONTIER_MODELS='$(MED_MODELS)' DID_SAMPLES=$(MED_SAMPLES) DID_FRONTIER_SAMPLES=$(MED_SAMPLES) \
    DID_FRONTIER_SEEDS='$(MED_SEEDS)' DID_NUCLEI='$(MED_NUCLEI)' DID_GAMMAS='$(MED_GAMMAS)' DID_BLOCKS='$(MED_BLOCKS)' \
    DID_FRONTIER_GAMMAS='$(MED_FRONTIER_GAMMAS)' DID_FRONTIER_BLOCKS='$(MED_FRONTIER_BLOCKS)' \
    DID_JUDGE_FIT='$(MED_JUDGE_FIT)' DID_BOOTSTRAP=$(MED_BOOTSTRAP)
MED_CKPTS = $(foreach m,pre ar $(MED_MODELS),$(MED)/$(m)/best.safetensors)

.PHONY: medium medium-train medium-ship medium-clean medium-deps
# the corpora (make corpora) and the report's dependencies before any training
medium-deps:
	@$(MED_HERE)/deps.sh figures
medium-train: medium-deps $(MED_CORPUS)
	$(MED_DID) $(MED_CKPTS)
medium: medium-deps $(MED_CORPUS) $(MED_JUDGE_FIT)
	$(MED_DID) did did-frontier

# F16 (or BF16) copies of the shipped models, the tokenizer, the size check and the commands that made them.
medium-ship: medium-train
	@$(MED_HERE)/deps.sh export
	@mkdir -p $(MED_SHIP)
	$(foreach m,ar $(MED_MODELS),python3 $(MED_HERE)/did/to_f16.py --dtype $(MED_SHIP_DTYPE) $(MED)/$(m)/best.safetensors $(MED_SHIP)/$(m).safetensors &&) true
	cp $(MED)/tokenizer.json $(MED_SHIP)/tokenizer.json
	@total=$$(du -cb $(MED_SHIP)/*.safetensors | tail -1 | cut -f1); echo "medium-ship: $$total bytes in $(MED_SHIP)"; \
	  [ $$total -le $$(( $(MED_SHIP_MAX_MB) * 1000000 )) ] || { echo "medium-ship: over $(MED_SHIP_MAX_MB) MB" >&2; exit 1; }
	{ echo "# Commands that made $(MED_SHIP)/ (make medium-ship; printed by make -n -B)"; \
	  $(MED_DID) -s -n -B $(MED_CKPTS) | grep -vE '^(mkdir|touch|pipelines/deps.sh|$(SWIFT) build)'; } > $(MED_SHIP)/COMMANDS.txt.tmp
	mv $(MED_SHIP)/COMMANDS.txt.tmp $(MED_SHIP)/COMMANDS.txt

medium-clean:
	rm -rf $(MED)
