# The tables of the BD3-LM reproduction report (seed 000: Kordas et al., "Block Diffusion ... reproduction
# results and two practical extensions") regenerated at CPU scale:
#   results/paper-table<N>.md  (same rows and columns as the report's Table N)
#   results/paper-fig1-*.png   (NLL vs step curves, as the report's Fig. 1, from train --metrics)
#
#   make -f pipelines/paper.mk paper-table1 ... paper-table13     # one table
#   make -f pipelines/paper.mk paper-likelihood                   # Tables 1-4 (the likelihood evidence)
#   make -f pipelines/paper.mk -j2 paper                          # every table (+ the Var. NELBO cross-table)
#
# Run from the repository root, standalone or included from the top-level Makefile. Every product is a file
# target (runs are finished when runs/<name>/done exists; an interrupted `train` resumes bit-exactly when make
# reruns it), so `make -j2` is safe and reruns redo only what is missing. The corpora come from
# pipelines/corpora.mk (out/corpus/train-mix.jsonl + held-out sets).
#
# Scale (all variables, defaults = the CPU-scale runs reported in docs/results.md):
#   PAPER_CONFIG=cpu  PAPER_SET="hidden_size=... n_blocks=..."   model size (train --config / --set)
#   PAPER_L=128       sequence length L (pack-blocks -L); L' = L is the MDLM-equivalent pretrain
#   PAPER_STEPS=300   pretraining steps; baselines (AR, MDLM, SEDD, L'=1) train PAPER_STEPS+PAPER_FT_STEPS
#   PAPER_FT_STEPS=100  fine-tuning steps at L' < L (from the L' = L pretrain)
#   PAPER_CORPUS      training corpus (jsonl) of Tables 1-3 and 5-13; PAPER_CORPUS_ALT that of Table 4
#   PAPER_VOCAB=8192  BPE vocabulary trained on the corpus
#
# CPU budget: every train/score/draft recipe is one process using both cores (the tools split rows over 2
# threads); `make -j2` runs two such processes side by side. Per-recipe budgets are in the comments below, in
# optimizer steps (a `cpu`-config step at L=128, B=8 is ~0.3-1 s on the shared 2-core machine).

PAPER_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
PAPER_SCRIPTS := $(PAPER_MK_DIR)/paper
ifndef CORPUS_SCRIPTS
include $(PAPER_MK_DIR)/corpora.mk
endif

SWIFT ?= swift
PAPER_BIN ?= .build/release
PAPER_PYTHON ?= python3
PAPER_OUT ?= out/paper
PAPER_RESULTS ?= results
PAPER_CORPUS ?= $(CORPUS_OUT)/train-mix.jsonl
PAPER_CORPUS_ALT ?= data/sample.jsonl
PAPER_HELDOUT_SETS ?= news encyclopedic narrative
PAPER_VOCAB ?= 8192
PAPER_L ?= 128
PAPER_CONFIG ?= cpu
PAPER_SET ?=
PAPER_STEPS ?= 300
PAPER_FT_STEPS ?= 100
PAPER_BATCH ?= 8
PAPER_LR ?= 1e-3
PAPER_WARMUP ?= 50
PAPER_FT_WARMUP ?= 10
PAPER_VAL_EVERY ?= 25
PAPER_VAL_BATCHES ?= 4
# t draws per test sequence: at 2 the PPL of one run moved by 8% between seeds, so tables use 8
PAPER_SCORE_SAMPLES ?= 8
# extra intervals whose Var. NELBO every test score reports (the training interval is always added last)
PAPER_SCORE_CLIPS ?= 0.3,0.8 0.45,0.95
PAPER_SEED ?= 1
PAPER_GEN_N ?= 16
PAPER_GEN_BATCH ?= 8
PAPER_GEN_MAX ?= 1024
PAPER_NUCLEUS ?= 0.9
# block sizes of the clipping table (Table 2) and of the schedule tables (8, 10, 11)
PAPER_CLIP_BLOCKS ?= $(PAPER_L) 16 4
PAPER_SCHED_BLOCKS ?= 4 16
PAPER_BG_BLOCKS ?= $(PAPER_L) 16 4

PAPER_TOTAL_STEPS := $(shell echo $$(( $(PAPER_STEPS) + $(PAPER_FT_STEPS) )))
PAPER_SET_ARGS := $(foreach s,$(PAPER_SET),--set $(s))
PAPER_TRAIN_COMMON = --config $(PAPER_CONFIG) $(PAPER_SET_ARGS) --batch $(PAPER_BATCH) --lr $(PAPER_LR) \
  --val-every $(PAPER_VAL_EVERY) --val-batches $(PAPER_VAL_BATCHES) --seed $(PAPER_SEED) --log-every 10

# Fine-tuning variants: run `ft<L'>-<tag>` fine-tunes the L' = L pretrain at block size L' with these flags;
# `bgft<L'>-<tag>` fine-tunes the bimodal-Gaussian pretrain (Table 11).
PAPER_FT_cs       := --clip-search
PAPER_FT_u01      :=
PAPER_FT_c4595    := --clip 0.45,0.95
PAPER_FT_c3080    := --clip 0.3,0.8
PAPER_FT_c0050    := --clip 0.001,0.5
PAPER_FT_c5010    := --clip 0.5,1
PAPER_FT_log      := --schedule log
PAPER_FT_sqrt     := --schedule square_root
PAPER_FT_square   := --schedule square
PAPER_FT_cosine   := --schedule cosine
PAPER_FT_cosc3080 := --schedule cosine --clip 0.3,0.8
PAPER_FT_cosc0050 := --schedule cosine --clip 0.001,0.5
PAPER_FT_cosc5010 := --schedule cosine --clip 0.5,1
PAPER_FT_gauss50  := --schedule gaussian --set mu=0.5
PAPER_FT_gauss60  := --schedule gaussian --set mu=0.6
PAPER_FT_gauss70  := --schedule gaussian --set mu=0.7
PAPER_FT_bg30     := --schedule bimodal_gaussian --set w1=0.6 --set mu1=0.3
PAPER_FT_bg10     := --schedule bimodal_gaussian --set w1=0.6 --set mu1=0.1
PAPER_FT_rwedm    := --clip-search --reweight edm
PAPER_FT_rwiddpm  := --clip-search --reweight iddpm
PAPER_FT_rwsig    := --clip-search --reweight sigmoid:0
PAPER_FT_rwfm     := --clip-search --reweight fm
PAPER_FT_rwsimple := --clip-search --reweight simple

.PHONY: paper paper-likelihood paper-tools paper-clean paper-varnelbo $(addprefix paper-table,1 2 3 4 5 6 7 8 10 11 13)
paper: $(addprefix paper-table,1 2 3 4 5 6 7 8 10 11 13) paper-varnelbo
paper-likelihood: $(addprefix paper-table,1 2 3) paper-varnelbo
paper-clean:
	rm -rf $(PAPER_OUT)

# Release build of the tools (incremental; an order-only prerequisite, so it never forces a rerun), after
# the pipeline's dependencies (matplotlib for the figures): a missing one stops `make paper` before training.
PAPER_BUILD ?= $(SWIFT) build -c release
paper-tools: paper-deps
	$(PAPER_BUILD)
paper-deps:
	@$(PAPER_MK_DIR)/deps.sh figures
.PHONY: paper-deps

# $(call paper_dataset,NAME,CORPUS): tokenizer, streams, runs and scores of one training corpus in
# $(PAPER_OUT)/NAME/. Run names: ar, pre (MDLM = L'=L pretrain, PAPER_STEPS), mdlm (pre continued to the total),
# sedd, l1 (BD3 L'=1, U[1e-3,1]), l1tuned (BD3 L'=1, U[1,1]), prebg (pretrain with the bimodal Gaussian
# schedule), ft<L'>-<tag>, bgft<L'>-<tag>.
define paper_dataset
$(1)_D := $(PAPER_OUT)/$(1)

# CPU: ~1 min, 1 core (BPE training on the corpus)
$(PAPER_OUT)/$(1)/tokenizer.json: $(2) | paper-tools
	@mkdir -p $$(@D)
	$(PAPER_BIN)/tokenize train --vocab-size $(PAPER_VOCAB) --input-format jsonl -o $$@ $$<
# CPU: seconds, 2 threads
$(PAPER_OUT)/$(1)/docs.tok: $(2) $(PAPER_OUT)/$(1)/tokenizer.json
	$(PAPER_BIN)/tokenize encode -t $(PAPER_OUT)/$(1)/tokenizer.json --input-format jsonl --threads 2 -o $$@ $$<
$(PAPER_OUT)/$(1)/seq.train.tok $(PAPER_OUT)/$(1)/seq.valid.tok $(PAPER_OUT)/$(1)/seq.test.tok &: $(PAPER_OUT)/$(1)/docs.tok
	$(PAPER_BIN)/pack-blocks -L $(PAPER_L) -i $$< --split train=0.98,valid=0.01,test=0.01 \
	    --out-prefix $(PAPER_OUT)/$(1)/seq --seed 1
# zero-shot sets: the held-out corpora with the training tokenizer, packed like the training data (CPU: seconds)
$(PAPER_OUT)/$(1)/heldout-%.tok: $(CORPUS_OUT)/heldout-%.jsonl $(PAPER_OUT)/$(1)/tokenizer.json
	$(PAPER_BIN)/tokenize encode -t $(PAPER_OUT)/$(1)/tokenizer.json --input-format jsonl -o $$@.docs $$<
	$(PAPER_BIN)/pack-blocks -L $(PAPER_L) --no-shuffle -i $$@.docs -o $$@
	rm -f $$@.docs

$(1)_DATA := $(PAPER_OUT)/$(1)/seq.train.tok $(PAPER_OUT)/$(1)/seq.valid.tok
# A run that stops on a non-finite loss leaves runs/<name>/diverged.json (train exits 1): the sweep goes on and
# the tables print "diverged (step N)" for it (the report saw FM and Simple reweighting blow up).
$(1)_OK = || test -f $$(@D)/diverged.json
$(1)_TRAIN = $(PAPER_BIN)/train --data $(PAPER_OUT)/$(1)/seq.train.tok --valid $(PAPER_OUT)/$(1)/seq.valid.tok $(PAPER_TRAIN_COMMON)

# Baselines from scratch. CPU: PAPER_STEPS+PAPER_FT_STEPS steps each, 2 threads.
$(PAPER_OUT)/$(1)/runs/ar/done: $$($(1)_DATA) | paper-tools
	@mkdir -p $$(@D)
	$$($(1)_TRAIN) --algo ar --warmup $(PAPER_WARMUP) --steps $(PAPER_TOTAL_STEPS) --metrics $$(@D)/metrics.jsonl -o $$(@D) $$($(1)_OK)
	touch $$@
$(PAPER_OUT)/$(1)/runs/sedd/done: $$($(1)_DATA) | paper-tools
	@mkdir -p $$(@D)
	$$($(1)_TRAIN) --algo sedd --warmup $(PAPER_WARMUP) --steps $(PAPER_TOTAL_STEPS) --metrics $$(@D)/metrics.jsonl -o $$(@D) $$($(1)_OK)
	touch $$@
$(PAPER_OUT)/$(1)/runs/l1/done: $$($(1)_DATA) | paper-tools
	@mkdir -p $$(@D)
	$$($(1)_TRAIN) --algo bd3 --block-size 1 --warmup $(PAPER_WARMUP) --steps $(PAPER_TOTAL_STEPS) --metrics $$(@D)/metrics.jsonl -o $$(@D) $$($(1)_OK)
	touch $$@
$(PAPER_OUT)/$(1)/runs/l1tuned/done: $$($(1)_DATA) | paper-tools
	@mkdir -p $$(@D)
	$$($(1)_TRAIN) --algo bd3 --block-size 1 --clip 1,1 --warmup $(PAPER_WARMUP) --steps $(PAPER_TOTAL_STEPS) --metrics $$(@D)/metrics.jsonl -o $$(@D) $$($(1)_OK)
	touch $$@
# L' = L pretrain (MDLM: full attention, one t per sequence; the BD3 L'=L objective). CPU: PAPER_STEPS steps.
$(PAPER_OUT)/$(1)/runs/pre/done: $$($(1)_DATA) | paper-tools
	@mkdir -p $$(@D)
	$$($(1)_TRAIN) --algo mdlm --warmup $(PAPER_WARMUP) --steps $(PAPER_STEPS) --metrics $$(@D)/metrics.jsonl -o $$(@D) $$($(1)_OK)
	touch $$@
$(PAPER_OUT)/$(1)/runs/prebg/done: $$($(1)_DATA) | paper-tools
	@mkdir -p $$(@D)
	$$($(1)_TRAIN) --algo mdlm --schedule bimodal_gaussian --set w1=0.6 --set mu1=0.1 --warmup $(PAPER_WARMUP) \
	    --steps $(PAPER_STEPS) --metrics $$(@D)/metrics.jsonl -o $$(@D) $$($(1)_OK)
	touch $$@
# MDLM baseline = the pretrain resumed (bit-exact) up to the total step count. CPU: PAPER_FT_STEPS steps.
$(PAPER_OUT)/$(1)/runs/mdlm/done: $(PAPER_OUT)/$(1)/runs/pre/done
	rm -rf $$(@D) && cp -r $(PAPER_OUT)/$(1)/runs/pre $$(@D) && rm -f $$@
	$$($(1)_TRAIN) --algo mdlm --warmup $(PAPER_WARMUP) --steps $(PAPER_TOTAL_STEPS) --metrics $$(@D)/metrics.jsonl -o $$(@D) $$($(1)_OK)
	touch $$@
# Fine-tunes at L' = <first part of the stem> with the flags PAPER_FT_<tag>, from the pretrain PAPER_FT_FROM
# (ft: the loglinear `pre`, bgft: the bimodal `prebg`). CPU: PAPER_FT_STEPS steps (clip search adds ~20 forward
# passes over PAPER_VAL_BATCHES batches per validation).
$(1)_FT = $$($(1)_TRAIN) --init $(PAPER_OUT)/$(1)/runs/$$(PAPER_FT_FROM)/best.safetensors --algo bd3 \
    --block-size $$(word 1,$$(subst -, ,$$*)) $$(PAPER_FT_$$(word 2,$$(subst -, ,$$*))) --warmup $(PAPER_FT_WARMUP) \
    --steps $(PAPER_FT_STEPS) --metrics $$(@D)/metrics.jsonl -o $$(@D) $$($(1)_OK)
$(PAPER_OUT)/$(1)/runs/ft%/done: PAPER_FT_FROM = pre
$(PAPER_OUT)/$(1)/runs/bgft%/done: PAPER_FT_FROM = prebg
$(PAPER_OUT)/$(1)/runs/ft%/done: $(PAPER_OUT)/$(1)/runs/pre/done
	@mkdir -p $$(@D)
	$$($(1)_FT)
	touch $$@
$(PAPER_OUT)/$(1)/runs/bgft%/done: $(PAPER_OUT)/$(1)/runs/prebg/done
	@mkdir -p $$(@D)
	$$($(1)_FT)
	touch $$@

# Test PPL / Var. NELBO (one JSON object). CPU: PAPER_SCORE_SAMPLES forward passes over the test split.
$(PAPER_OUT)/$(1)/scores/%.test.json: $(PAPER_OUT)/$(1)/runs/%/done $(PAPER_OUT)/$(1)/seq.test.tok $(PAPER_SCRIPTS)/clip.py
	@mkdir -p $$(@D)
	if [ -f $(PAPER_OUT)/$(1)/runs/$$*/diverged.json ]; then \
	    { printf '{"diverged": '; cat $(PAPER_OUT)/$(1)/runs/$$*/diverged.json; printf '}\n'; } > $$@.tmp; \
	else $(PAPER_BIN)/score ppl -m $(PAPER_OUT)/$(1)/runs/$$*/best.safetensors -i $(PAPER_OUT)/$(1)/seq.test.tok \
	    --samples $(PAPER_SCORE_SAMPLES) --seed $(PAPER_SEED) $(foreach c,$(PAPER_SCORE_CLIPS),--clip $(c)) \
	    $$$$($(PAPER_PYTHON) $(PAPER_SCRIPTS)/clip.py $(PAPER_OUT)/$(1)/runs/$$*/best.safetensors) > $$@.tmp; fi
	mv $$@.tmp $$@
# Samples. Fixed length L (Gen PPL, Table 7) and variable length up to PAPER_GEN_MAX (Table 6). --steps L is
# SEDD's T (NFE = L, the diffusion bound the report quotes); first-hitting BD3/MDLM and AR ignore it.
# CPU: PAPER_GEN_N samples x L forward passes (first-hitting: one token per NFE), PAPER_GEN_BATCH per forward.
$(PAPER_OUT)/$(1)/samples/%.fixed.tok: $(PAPER_OUT)/$(1)/runs/%/done
	@mkdir -p $$(@D)
	$(PAPER_BIN)/draft -m $(PAPER_OUT)/$(1)/runs/$$*/best.safetensors -n $(PAPER_GEN_N) --length $(PAPER_L) \
	    --steps $(PAPER_L) --batch $(PAPER_GEN_BATCH) --nucleus $(PAPER_NUCLEUS) --seed $(PAPER_SEED) -o $$@
$(PAPER_OUT)/$(1)/samples/%.var.tok: $(PAPER_OUT)/$(1)/runs/%/done
	@mkdir -p $$(@D)
	$(PAPER_BIN)/draft -m $(PAPER_OUT)/$(1)/runs/$$*/best.safetensors -n $(PAPER_GEN_N) --max-length $(PAPER_GEN_MAX) \
	    --batch $(PAPER_GEN_BATCH) --nucleus $(PAPER_NUCLEUS) --seed $(PAPER_SEED) -o $$@
# Gen PPL under the AR model of the same corpus (the scorer); lengths. CPU: one AR pass per sample.
$(PAPER_OUT)/$(1)/gen/%.json: $(PAPER_OUT)/$(1)/samples/%.tok $(PAPER_OUT)/$(1)/runs/ar/done
	@mkdir -p $$(@D)
	$(PAPER_BIN)/score gen --scorer $(PAPER_OUT)/$(1)/runs/ar/best.safetensors -i $$< > $$@.tmp
	mv $$@.tmp $$@

# runs, scores and samples made by the pattern rules above are intermediate files to make: keep them
.PRECIOUS: $(PAPER_OUT)/$(1)/runs/ft%/done $(PAPER_OUT)/$(1)/runs/bgft%/done $(PAPER_OUT)/$(1)/scores/%.test.json \
  $(PAPER_OUT)/$(1)/samples/%.fixed.tok $(PAPER_OUT)/$(1)/samples/%.var.tok $(PAPER_OUT)/$(1)/gen/%.json \
  $(PAPER_OUT)/$(1)/heldout-%.tok
endef

# Zero-shot PPL of run R on held-out set S: scores/R.heldout-S.json. CPU: PAPER_SCORE_SAMPLES forward passes.
define paper_zeroshot
$(PAPER_OUT)/$(1)/scores/%.heldout-$(2).json: $(PAPER_OUT)/$(1)/runs/%/done $(PAPER_OUT)/$(1)/heldout-$(2).tok
	@mkdir -p $$(@D)
	$(PAPER_BIN)/score ppl -m $(PAPER_OUT)/$(1)/runs/$$*/best.safetensors -i $(PAPER_OUT)/$(1)/heldout-$(2).tok \
	    --samples $(PAPER_SCORE_SAMPLES) --seed $(PAPER_SEED) > $$@.tmp
	mv $$@.tmp $$@
.PRECIOUS: $(PAPER_OUT)/$(1)/scores/%.heldout-$(2).json
endef

$(eval $(call paper_dataset,main,$(PAPER_CORPUS)))
$(foreach s,$(PAPER_HELDOUT_SETS),$(eval $(call paper_zeroshot,main,$(s))))
$(eval $(call paper_dataset,alt,$(PAPER_CORPUS_ALT)))

# ---- tables -------------------------------------------------------------------------------------------
PAPER_M := $(PAPER_OUT)/main
PAPER_A := $(PAPER_OUT)/alt
PAPER_TABLE = $(PAPER_PYTHON) $(PAPER_SCRIPTS)/tables.py
PAPER_CURVES = $(PAPER_PYTHON) $(PAPER_SCRIPTS)/curves.py
PAPER_SCALE = --scale "config=$(PAPER_CONFIG) $(PAPER_SET) L=$(PAPER_L) V=$(PAPER_VOCAB) B=$(PAPER_BATCH) lr=$(PAPER_LR) pretrain=$(PAPER_STEPS) finetune=$(PAPER_FT_STEPS) corpus=$(notdir $(PAPER_CORPUS))"
PAPER_PY := $(PAPER_SCRIPTS)/atomic.py $(PAPER_SCRIPTS)/tables.py $(PAPER_SCRIPTS)/curves.py $(PAPER_SCRIPTS)/varplot.py
# $(call paper_args,DIR,KIND,RUNS): key=file arguments for tables.py
paper_args = $(foreach r,$(3),$(r)=$(1)/scores/$(r).$(2).json)

# Table 1: AR vs BD3 L'=1 vs L'=1 tuned (U[1,1]); Fig. 1: their NLL curves.
# CPU (measured, 2 cores shared by -j2): 3 runs of 400 steps (~4 min each) + 3 exact scores: ~10 min.
PAPER_T1 := ar l1 l1tuned
$(PAPER_RESULTS)/paper-table1.md: $(foreach r,$(PAPER_T1),$(PAPER_M)/scores/$(r).test.json) $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_CURVES) --out $(PAPER_RESULTS)/paper-fig1-l1.png --title "AR vs BD3-LM L'=1 ($(notdir $(PAPER_CORPUS)))" \
	    "AR=$(PAPER_M)/runs/ar/metrics.jsonl" "BD3-LM L'=1=$(PAPER_M)/runs/l1/metrics.jsonl" "BD3-LM L'=1 tuned U[1,1]=$(PAPER_M)/runs/l1tuned/metrics.jsonl"
	$(PAPER_TABLE) 1 $(PAPER_SCALE) --fig paper-fig1-l1.png -o $@ $(call paper_args,$(PAPER_M),test,$(PAPER_T1))
paper-table1: $(PAPER_RESULTS)/paper-table1.md

# Table 2: clip search vs U[0,1] per L'.
# CPU: the 300-step pretrain (~3 min) + 6 fine-tunes (~1 min each) + 6 scores (~45 s each at 8 draws): ~12 min.
PAPER_T2 := $(foreach b,$(PAPER_CLIP_BLOCKS),ft$(b)-cs ft$(b)-u01)
$(PAPER_RESULTS)/paper-table2.md: $(foreach r,$(PAPER_T2),$(PAPER_M)/scores/$(r).test.json) $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_CURVES) --out $(PAPER_RESULTS)/paper-fig2-clip.png --title "Fine-tuning: clip search vs U[0,1]" \
	    $(foreach r,$(PAPER_T2),"$(r)=$(PAPER_M)/runs/$(r)/metrics.jsonl")
	$(PAPER_PYTHON) $(PAPER_SCRIPTS)/varplot.py --out $(PAPER_RESULTS)/paper-fig2-clipgrid.png \
	    $(foreach b,$(PAPER_CLIP_BLOCKS),"BD3 L'=$(b)=$(PAPER_M)/runs/ft$(b)-cs/metrics.jsonl")
	$(PAPER_TABLE) 2 $(PAPER_SCALE) --fig paper-fig2-clip.png --fig paper-fig2-clipgrid.png -o $@ $(call paper_args,$(PAPER_M),test,$(PAPER_T2))
paper-table2: $(PAPER_RESULTS)/paper-table2.md

# Var. NELBO of every BD3 fine-tune of Tables 2-3 at several evaluation intervals (no table in the report).
PAPER_VAR := $(sort $(PAPER_T2) ft16-cs ft8-cs ft4-cs)
$(PAPER_RESULTS)/paper-varnelbo.md: $(foreach r,$(PAPER_VAR),$(PAPER_M)/scores/$(r).test.json) $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_TABLE) 0 $(PAPER_SCALE) -o $@ $(call paper_args,$(PAPER_M),test,$(PAPER_VAR))
paper-varnelbo: $(PAPER_RESULTS)/paper-varnelbo.md

# Tables 3 and 4: AR / SEDD / MDLM / BD3 L'=16,8,4 (clip search, fine-tuned from the L'=L pretrain).
# CPU per corpus: 2 runs of 400 steps + the pretrain and its 100-step continuation + 3 fine-tunes + 6 scores: ~20 min.
PAPER_T3 := ar sedd mdlm ft16-cs ft8-cs ft4-cs
$(PAPER_RESULTS)/paper-table3.md: $(foreach r,$(PAPER_T3),$(PAPER_M)/scores/$(r).test.json) $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_CURVES) --out $(PAPER_RESULTS)/paper-fig3-models.png --title "Validation NLL vs step ($(notdir $(PAPER_CORPUS)))" --val-only \
	    "AR=$(PAPER_M)/runs/ar/metrics.jsonl" "SEDD=$(PAPER_M)/runs/sedd/metrics.jsonl" "MDLM (L'=L pretrain + continued)=$(PAPER_M)/runs/mdlm/metrics.jsonl" \
	    "BD3 L'=16=$(PAPER_M)/runs/ft16-cs/metrics.jsonl" "BD3 L'=8=$(PAPER_M)/runs/ft8-cs/metrics.jsonl" "BD3 L'=4=$(PAPER_M)/runs/ft4-cs/metrics.jsonl" \
	    --offset "BD3 L'=16=$(PAPER_STEPS)" --offset "BD3 L'=8=$(PAPER_STEPS)" --offset "BD3 L'=4=$(PAPER_STEPS)"
	$(PAPER_TABLE) 3 $(PAPER_SCALE) --fig paper-fig3-models.png -o $@ $(call paper_args,$(PAPER_M),test,$(PAPER_T3))
paper-table3: $(PAPER_RESULTS)/paper-table3.md
$(PAPER_RESULTS)/paper-table4.md: $(foreach r,$(PAPER_T3),$(PAPER_A)/scores/$(r).test.json) $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_TABLE) 4 --scale "corpus=$(PAPER_CORPUS_ALT), otherwise as Table 3" -o $@ $(call paper_args,$(PAPER_A),test,$(PAPER_T3))
paper-table4: $(PAPER_RESULTS)/paper-table4.md

# Table 5: zero-shot PPL on the held-out corpora.
# CPU: Table 3's runs + 12 scores on the held-out sets (~30-60 s each): ~10 min.
PAPER_T5 := ar sedd mdlm ft4-cs
$(PAPER_RESULTS)/paper-table5.md: $(foreach s,$(PAPER_HELDOUT_SETS),$(foreach r,$(PAPER_T5),$(PAPER_M)/scores/$(r).heldout-$(s).json)) $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_TABLE) 5 $(PAPER_SCALE) -o $@ $(foreach s,$(PAPER_HELDOUT_SETS),$(foreach r,$(PAPER_T5),$(r)@$(s)=$(PAPER_M)/scores/$(r).heldout-$(s).json))
paper-table5: $(PAPER_RESULTS)/paper-table5.md

# CPU (Tables 6 and 7): Table 3's runs + 10 sample sets of PAPER_GEN_N (10 s - 1 min each) + AR scoring: ~6 min.
# Table 6: generation lengths (AR and BD3 variable length up to PAPER_GEN_MAX; SEDD and MDLM fixed length L) + train docs.
PAPER_T6 := ar.var sedd.fixed mdlm.fixed ft16-cs.var
$(PAPER_RESULTS)/paper-table6.md: $(foreach r,$(PAPER_T6),$(PAPER_M)/gen/$(r).json) $(PAPER_M)/tokenizer.json $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_TABLE) 6 $(PAPER_SCALE) --docs $(PAPER_CORPUS) --tokenizer $(PAPER_M)/tokenizer.json -o $@ $(foreach r,$(PAPER_T6),$(r)=$(PAPER_M)/gen/$(r).json)
paper-table6: $(PAPER_RESULTS)/paper-table6.md

# Table 7: Gen PPL (AR scorer of the same corpus) and NFEs of fixed-length samples.
PAPER_T7 := ar sedd mdlm ft16-cs ft8-cs ft4-cs
$(PAPER_RESULTS)/paper-table7.md: $(foreach r,$(PAPER_T7),$(PAPER_M)/gen/$(r).fixed.json) $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_TABLE) 7 $(PAPER_SCALE) -o $@ $(foreach r,$(PAPER_T7),$(r)=$(PAPER_M)/gen/$(r).fixed.json)
paper-table7: $(PAPER_RESULTS)/paper-table7.md

# CPU (Table 8): 14 fine-tunes + 14 scores: ~25 min.
# Table 8: schedules (L'=4: clipped x2, linear, log, square root; L'=16: clipped x2, linear, square, cosine).
PAPER_T8 := $(foreach b,$(PAPER_SCHED_BLOCKS),ft$(b)-c4595 ft$(b)-c3080 ft$(b)-u01 ft$(b)-log ft$(b)-sqrt ft$(b)-square ft$(b)-cosine)
$(PAPER_RESULTS)/paper-table8.md: $(foreach r,$(PAPER_T8),$(PAPER_M)/scores/$(r).test.json) $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_TABLE) 8 $(PAPER_SCALE) -o $@ $(call paper_args,$(PAPER_M),test,$(PAPER_T8))
paper-table8: $(PAPER_RESULTS)/paper-table8.md

# Table 10: implemented vs Gaussian / bimodal Gaussian schedules per L'.
# CPU: 24 fine-tunes (8 at L'=L, BD3 layout: ~1.5 min) + 24 scores: ~40 min (8 shared with Table 8).
# the report's clipped interval per L' (L: U[0,0.5], 16: U[0.3,0.8], 4: U[0.5,1]) and second Gaussian mean
paper_cliptag = $(if $(filter $(PAPER_L),$(1)),c0050,$(if $(filter 4,$(1)),c5010,c3080))
paper_gausstag = $(if $(filter 4,$(1)),gauss70,gauss60)
PAPER_T10 := $(foreach b,$(PAPER_BG_BLOCKS),ft$(b)-u01 ft$(b)-$(call paper_cliptag,$(b)) ft$(b)-cosine \
  ft$(b)-cos$(call paper_cliptag,$(b)) ft$(b)-gauss50 ft$(b)-$(call paper_gausstag,$(b)) ft$(b)-bg30 ft$(b)-bg10)
$(PAPER_RESULTS)/paper-table10.md: $(foreach r,$(PAPER_T10),$(PAPER_M)/scores/$(r).test.json) $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_TABLE) 10 $(PAPER_SCALE) --blocks "$(PAPER_BG_BLOCKS)" -o $@ $(call paper_args,$(PAPER_M),test,$(PAPER_T10))
paper-table10: $(PAPER_RESULTS)/paper-table10.md

# Table 11: loglinear vs bimodal-Gaussian pretraining; best fine-tuning schedule of each.
# CPU: the bimodal pretrain (~3 min) + 15 fine-tunes from it + 30 scores (15 shared with Table 10): ~30 min.
PAPER_T11_TAGS := u01 cosc3080 gauss50 bg30 bg10
PAPER_T11 := $(foreach b,$(PAPER_BG_BLOCKS),$(foreach t,$(PAPER_T11_TAGS),ft$(b)-$(t) bgft$(b)-$(t)))
$(PAPER_RESULTS)/paper-table11.md: $(foreach r,$(PAPER_T11),$(PAPER_M)/scores/$(r).test.json) $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_TABLE) 11 $(PAPER_SCALE) --blocks "$(PAPER_BG_BLOCKS)" -o $@ $(call paper_args,$(PAPER_M),test,$(PAPER_T11))
paper-table11: $(PAPER_RESULTS)/paper-table11.md

# Table 13: loss reweighting (PPL always the unweighted NELBO).
# CPU: 15 reweighted fine-tunes + 18 scores (3 shared with Table 3): ~30 min. Whole `make -j2 paper`: ~2 h.
PAPER_T13 := ar sedd mdlm $(foreach b,16 8 4,ft$(b)-cs ft$(b)-rwiddpm ft$(b)-rwedm ft$(b)-rwsig ft$(b)-rwfm ft$(b)-rwsimple)
$(PAPER_RESULTS)/paper-table13.md: $(foreach r,$(PAPER_T13),$(PAPER_M)/scores/$(r).test.json) $(PAPER_PY)
	@mkdir -p $(@D)
	$(PAPER_TABLE) 13 $(PAPER_SCALE) -o $@ $(call paper_args,$(PAPER_M),test,$(PAPER_T13))
paper-table13: $(PAPER_RESULTS)/paper-table13.md
