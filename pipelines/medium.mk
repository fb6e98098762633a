# The medium recipe: models with visible word order, trained on the corpora mix (make corpora) in about
# 2 hours of two cores, and the Diffusion-In-Diffusion evaluation that controls for entropy (~2 hours).
#
#   make -j2 medium-train    corpus -> tokenizer -> rows (L = 256) -> pre (MDLM), then its BD3 fine-tunes:
#                         plain (L' = 4), mix (L' ~ {4: 0.9, 256: 0.1}), uni (L' uniform over {4, 16, 64, 256})
#                         and half (L' ~ {4: 0.9, 128: 0.1}) — seed 003's Table 3 — and ar (the AR scorer)
#   make -j2 medium       + the frontier (results/medium/did-frontier.md + .png: nucleus sweep of stage 1,
#                         the DiD cells of MED_FRONTIER_CELLS*, 3 seeds x 64 samples, the Table 3 comparison)
#   make -j2 medium-ship  the fine-tunes and ar as F16 (MED_SHIP_DTYPE=bf16 for BF16) + tokenizer into
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
#                   the same size (the strongest scorer the budget allows; the shipped set is 56 MB).
#   steps           budget: two single-threaded trainings side by side (`make -j2`, MED_THREADS=1): measured
#                   on two idle cores at L = 256, batch 16, one thread each: MDLM 1,950 + AR 2,130 tokens/s
#                   together (one 2-thread MDLM run: 3,470 — the pair gets 18 % more out of the cores), BD3
#                   fine-tunes 1,280 tokens/s each. pre 1,400 steps ‖ ar 1,500 (~50 min), then plain 650 ‖
#                   mix 650 (~35 min), then uni 650 ‖ half 650 (~35 min): ~2 h of wall time.
#                   Without -j2 give MED_THREADS=2. MED_PRECISION=bf16 adds `train --precision bf16`.
#   evaluation      64 samples x 256 tokens per cell, 3 seeds. A global refine (B = L) of γ = 0.25 costs 64
#                   forwards of the whole window per sample — ~5.5 min of one core per cell, 30x a B = 4
#                   draft; γ = 0.75 three times that. Stage 1 at 6 nuclei; DiD at nucleus 0.9: snapshot
#                   γ = 0.25 with B = L on every model and B = 4 (the equal-NFE baseline) on plain and mix;
#                   on mix also post-hoc and random, the stage-2 block sweep (B 16, 64) and the γ sweep
#                   (0.1, 0.5, 0.75) — about 4 h of two cores for all of it at 3 seeds.

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
MED_PRE_STEPS ?= 1400
MED_STEPS ?= 650
MED_AR_STEPS ?= 1500
MED_THREADS ?= 1
MED_VAL_EVERY ?= 250
MED_PRECISION ?=
MED_MODELS ?= plain mix uni half
MED_SAMPLES ?= 64
MED_SEEDS ?= 1 2 3
# the frontier: DiD cells at MED_NUCLEI, stage 1 at those and MED_STAGE1_NUCLEI
MED_NUCLEI ?= 0.9
MED_STAGE1_NUCLEI ?= 0.3 0.5 0.7 0.8 1.0
# DiD cells (POLICY-γ-B<block>, pipelines/did.mk) of every model; MED_FRONTIER_CELLS_<model> and
# MED_FRONTIER_CELLS_<model>_s<seed> override them per model and per seed
MED_FRONTIER_CELLS ?= snapshot-0.25-B4 snapshot-0.25-BL
# mix: the remasking policies, the stage-2 block sweep and the γ sweep
MED_FRONTIER_CELLS_mix ?= $(foreach p,snapshot posthoc random,$(p)-0.25-B4 $(p)-0.25-BL) snapshot-0.25-B16 \
    snapshot-0.25-B64 $(foreach g,0.1 0.5 0.75,snapshot-$(g)-B4 snapshot-$(g)-BL)
# uni and half: Table 3's stage 2 over the stage-2 block size
MED_FRONTIER_CELLS_uni ?= $(foreach b,4 16 64 L,snapshot-0.25-B$(b))
MED_FRONTIER_CELLS_half ?= $(foreach b,4 16 64 L,snapshot-0.25-B$(b))
# the DiD curve: snapshot γ 0.25 B = L of plain and mix (mix: post-hoc and random too) also at these nuclei
MED_CURVE_NUCLEI ?= 0.7 1.0
MED_FRONTIER_CURVE_CELLS_plain ?= snapshot-0.25-BL
MED_FRONTIER_CURVE_CELLS_mix ?= snapshot-0.25-BL posthoc-0.25-BL random-0.25-BL
MED_BOOTSTRAP ?= 2000
MED_BIN ?= .build/release
MED_BUILD ?= $(SWIFT) build -c release
MED_SHIP ?= data/medium
MED_SHIP_DTYPE ?= f16
MED_SHIP_MAX_MB ?= 60
SWIFT ?= swift

# Everything is pipelines/did.mk with these variables.
MED_DID = BD3_THREADS=$(MED_THREADS) OPENBLAS_NUM_THREADS=$(MED_THREADS) $(MAKE) -f $(MED_HERE)/did.mk BIN=$(MED_BIN) DID_BUILD='$(MED_BUILD)' DID=$(MED) DID_RESULTS=$(MED_RESULTS) \
    DID_CORPUS=$(MED_CORPUS) DID_VOCAB=$(MED_VOCAB) DID_L=$(MED_L) DID_CONFIG=$(MED_CONFIG) DID_SET='$(MED_SET)' \
    DID_AR_SET='$(MED_AR_SET)' DID_BATCH=$(MED_BATCH) DID_LR=$(MED_LR) DID_WARMUP=$(MED_WARMUP) \
    DID_PRE_STEPS=$(MED_PRE_STEPS) DID_STEPS=$(MED_STEPS) DID_AR_STEPS=$(MED_AR_STEPS) DID_VAL_EVERY=$(MED_VAL_EVERY) \
    DID_TRAIN_FLAGS='$(if $(MED_PRECISION),--precision $(MED_PRECISION))' DID_MODELS='$(MED_MODELS)' \
    DID_FRONTIER_MODELS='$(MED_MODELS)' DID_STAGE1_NUCLEI='$(MED_STAGE1_NUCLEI)' \
    DID_SAMPLES=$(MED_SAMPLES) DID_FRONTIER_SAMPLES=$(MED_SAMPLES) DID_FRONTIER_SEEDS='$(MED_SEEDS)' DID_NUCLEI='$(MED_NUCLEI)' DID_CURVE_NUCLEI='$(MED_CURVE_NUCLEI)' \
    $(foreach v,$(filter MED_FRONTIER_CELLS% MED_FRONTIER_CURVE_CELLS%,$(.VARIABLES)),$(v:MED_%=DID_%)='$($(v))') \
    DID_JUDGE_FIT='$(MED_JUDGE_FIT)' DID_BOOTSTRAP=$(MED_BOOTSTRAP)
MED_CKPTS = $(foreach m,pre ar $(MED_MODELS),$(MED)/$(m)/best.safetensors)

.PHONY: medium medium-train medium-ship medium-clean medium-deps
# the corpora (make corpora) and the report's dependencies before any training
medium-deps:
	@$(MED_HERE)/deps.sh figures
medium-train: medium-deps $(MED_CORPUS)
	+$(MED_DID) $(MED_CKPTS)
medium: medium-deps $(MED_CORPUS) $(MED_JUDGE_FIT)
	+$(MED_DID) did-frontier

# F16 (or BF16) copies of the shipped models, the tokenizer, the size check and the commands that made them.
medium-ship: medium-train
	@$(MED_HERE)/deps.sh export
	@mkdir -p $(MED_SHIP)
	$(foreach m,ar $(MED_MODELS),python3 $(MED_HERE)/did/to_f16.py --dtype $(MED_SHIP_DTYPE) $(MED)/$(m)/best.safetensors $(MED_SHIP)/$(m).safetensors &&) true
	cp $(MED)/tokenizer.json $(MED_SHIP)/tokenizer.json
	@total=$$(du -cb $(MED_SHIP)/*.safetensors | tail -1 | cut -f1); echo "medium-ship: $$total bytes in $(MED_SHIP)"; \
	  [ $$total -le $$(( $(MED_SHIP_MAX_MB) * 1000000 )) ] || { echo "medium-ship: over $(MED_SHIP_MAX_MB) MB" >&2; exit 1; }
	{ echo "# Commands that made $(MED_SHIP)/ (make -j2 medium-ship; printed by make -n -B; each train ran with"; \
	  echo "# BD3_THREADS=$(MED_THREADS) OPENBLAS_NUM_THREADS=$(MED_THREADS), pre beside ar, plain beside mix, uni beside half)"; \
	  $(MED_DID) -s -n -B $(MED_CKPTS) | grep -vE '^(mkdir|touch|pipelines/deps.sh|$(SWIFT) build)'; } > $(MED_SHIP)/COMMANDS.txt.tmp
	mv $(MED_SHIP)/COMMANDS.txt.tmp $(MED_SHIP)/COMMANDS.txt

medium-clean:
	rm -rf $(MED)
