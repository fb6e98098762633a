# Diffusion In Diffusion (seed paper 003) at CPU scale: draft with small blocks, remask, refine with
# larger blocks, score the samples under an AR model trained on the same data.
#
#   make did                      # everything below, results in $(DID_RESULTS)/did-*.md + did-*.png
#   make -j2 did DID_L=256 DID_SAMPLES=32 DID_PRE_STEPS=2000      # bigger
#   make did DID_CORPUS=out/corpus/train-mix.jsonl                # the corpora pipeline's training mix
#   make -f pipelines/did.mk did  # standalone (builds the tools itself)
#
# corpus -> tokenizer -> documents -> packed rows (train/valid/test)
#   -> pre   : MDLM pretraining (L' = L)
#   -> plain : BD3 fine-tune at L' = 4            (from pre)
#   -> mix   : BD3 mixed-scale fine-tune, L' ~ bimodal{4: 1-λ, L: λ}   (from pre)
#   -> ar    : AR scorer (train --algo ar), used by `score gen`
# per fine-tuned model M:
#   M/draft.tok                    stage 1, B = 4, first-hitting (made once, cached)
#   M/draft-ddpmK.tok              stage 1 with more NFEs (DDPM, K steps per 4-token block)
#   M/masked-POLICY-G.tok          remask of the cached draft (γ = G)
#   M/refined-POLICY-G-BN.tok      stage 2 with block size N (N = L: global)
#   M/varlen.tok                   variable-length drafts (--max-length DID_VARLEN x L)
#   X.gen.json                     `score gen` of any X.tok
# Every output is a file target, so `make -j2` works and changing a refine parameter (DID_BLOCKS,
# DID_REFINE_FLAGS) re-uses the cached drafts and masks; changed sampling/refine/score parameters are
# noticed through $(DID)/{draft,refine,score}.params. Training runs resume from their run
# directory (train's exact resume) when interrupted.

DID_HERE := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
SHELL := /bin/bash
SWIFT ?= swift
BIN ?= .build/release
# the tools' build, run before anything else (after the dependency check); DID_BUILD=: skips it
# (the smoke run of make test uses the debug build it has just made: BIN=.build/debug DID_BUILD=:)
DID_BUILD ?= $(SWIFT) build -c release

DID ?= out/did
DID_RESULTS ?= results
DID_CORPUS ?= data/sample.jsonl
DID_PY ?= python3
DID_VOCAB ?= 4096
DID_L ?= 128
DID_CONFIG ?= cpu
DID_SET ?=
# the AR scorer is smaller (it ships with the demo; data/ holds at most 16 MB of binaries)
DID_AR_SET ?= hidden_size=128 n_heads=4
DID_BATCH ?= 16
DID_LR ?= 1e-3
DID_WARMUP ?= 50
DID_PRE_STEPS ?= 300
DID_STEPS ?= 200
DID_AR_STEPS ?= 600
DID_VAL_EVERY ?= 0
DID_MIX ?= bimodal:4,$(DID_L),0.1
DID_TRAIN_FLAGS ?=
DID_SAMPLES ?= 16
DID_SEED ?= 1
DID_NUCLEUS ?= 0.9
DID_DDPM_STEPS ?= 6
DID_GAMMAS ?= 0.1 0.25 0.5 0.75
DID_POLICIES ?= snapshot posthoc random
DID_BLOCKS ?= 4 16 64 L
DID_MODELS ?= plain mix
DID_VARLEN ?= 8
DID_REFINE_FLAGS ?=
DID_SCORE_FLAGS ?= --per-sample
# ---- the entropy-controlled evaluation (did-frontier) ----
# cells: stage 1 and each DiD variant, for every nucleus p and sampling seed; DID_FRONTIER_SAMPLES each
DID_FRONTIER_MODELS ?= plain mix
DID_FRONTIER_SEEDS ?= 1 2 3
DID_FRONTIER_SAMPLES ?= 64
DID_NUCLEI ?= 0.5 0.6 0.7 0.8 0.9 1.0
# stage 1 alone is also drafted at these lower nuclei: refinement lowers entropy, and the stage-1 curve must
# reach down to a DiD cell's entropy to compare them at equal entropy
DID_STAGE1_NUCLEI ?= 0.2 0.3 0.4
DID_FRONTIER_POLICIES ?= snapshot posthoc random
# per model M, DID_FRONTIER_POLICIES_M overrides the policies (e.g. DID_FRONTIER_POLICIES_plain=snapshot)
did_front_pols = $(or $(DID_FRONTIER_POLICIES_$(1)),$(DID_FRONTIER_POLICIES))
DID_FRONTIER_GAMMAS ?= 0.25 0.5
DID_FRONTIER_BLOCKS ?= 4 L
# The DiD cells of model M and seed S, named POLICY-γ-B<block> (e.g. snapshot-0.25-BL): DID_FRONTIER_CELLS_M_sS,
# else DID_FRONTIER_CELLS_M, else DID_FRONTIER_CELLS, else every policy × γ × block of the lists above. Lists per model and seed let a
# run spend its CPU where a comparison needs the samples (pipelines/medium.mk uses them).
did_front_cells = $(or $(DID_FRONTIER_CELLS_$(1)_s$(2)),$(DID_FRONTIER_CELLS_$(1)),$(DID_FRONTIER_CELLS),$(foreach p,$(call did_front_pols,$(1)),\
    $(foreach g,$(DID_FRONTIER_GAMMAS),$(foreach b,$(DID_FRONTIER_BLOCKS),$(p)-$(g)-B$(b)))))
# The DiD curve: cells that also run at the extra nuclei DID_CURVE_NUCLEI (stage 1 is drafted there too), so a
# variant is a curve over the nucleus like stage 1, not one point: DID_FRONTIER_CURVE_CELLS_M, else
# DID_FRONTIER_CURVE_CELLS (default: none).
DID_CURVE_NUCLEI ?=
did_curve_cells = $(or $(DID_FRONTIER_CURVE_CELLS_$(1)),$(DID_FRONTIER_CURVE_CELLS))
# the DiD cells of model M, seed S at nucleus P
did_cells_at = $(sort $(if $(filter $(3),$(DID_NUCLEI)),$(call did_front_cells,$(1),$(2))) \
    $(if $(filter $(3),$(DID_CURVE_NUCLEI)),$(call did_curve_cells,$(1))))
DID_ALL_NUCLEI = $(sort $(DID_NUCLEI) $(DID_CURVE_NUCLEI))
# a cell's remask part (POLICY-γ) and its block; word k of a cell name split at '-'
did_cell_word = $(word $(2),$(subst -, ,$(1)))
did_cell_mask = $(call did_cell_word,$(1),1)-$(call did_cell_word,$(1),2)
did_cell_block = $(patsubst B%,%,$(call did_cell_word,$(1),3))
# second scorer, not trained on the training corpus: a word n-gram judge (pipelines/scorers/ngram.py)
DID_JUDGE_FIT ?= data/heldout-narrative.jsonl
DID_JUDGE ?= $(DID_PY) $(DID_HERE)/scorers/ngram.py --fit $(DID_JUDGE_FIT)
DID_BOOTSTRAP ?= 2000

did_bs = $(if $(filter L,$(1)),$(DID_L),$(1))
DID_SETS := $(foreach s,$(DID_SET),--set $(s))
DID_TRAIN = $(BIN)/train --data $(DID)/seq.train.tok --valid $(DID)/seq.valid.tok --config $(DID_CONFIG) \
    --batch $(DID_BATCH) --lr $(DID_LR) --warmup $(DID_WARMUP) --val-every $(DID_VAL_EVERY) --val-batches 8 \
    --seed $(DID_SEED) --log-every 50 $(DID_TRAIN_FLAGS)
DID_SCORER := $(DID)/ar/best.safetensors
DID_SCORE = $(BIN)/score gen --scorer $(DID_SCORER) -t $(DID)/tokenizer.json $(DID_SCORE_FLAGS)

# ---- data ---------------------------------------------------------------------------------
# Dependencies of the whole pipeline (matplotlib for the figure) checked and installed first, so a
# missing one stops `make did` before any training rather than at the report.
did-deps:
	@$(DID_HERE)/deps.sh figures
did-tools: did-deps
	$(DID_BUILD)
.PHONY: did-deps did-tools

$(DID)/tokenizer.json: $(DID_CORPUS) | did-tools
	@mkdir -p $(@D)
	$(BIN)/tokenize train --vocab-size $(DID_VOCAB) --input-format jsonl -o $@ $<

$(DID)/docs.tok: $(DID_CORPUS) $(DID)/tokenizer.json
	$(BIN)/tokenize encode -t $(DID)/tokenizer.json --input-format jsonl -o $@ $<

# one rule writes the three splits; valid/test hang off train
$(DID)/seq.train.tok: $(DID)/docs.tok
	$(BIN)/pack-blocks -L $(DID_L) --block-size 4 -i $< --split train=0.9,valid=0.05,test=0.05 \
	    --out-prefix $(DID)/seq --seed 1
$(DID)/seq.valid.tok $(DID)/seq.test.tok: $(DID)/seq.train.tok ;

# ---- models -------------------------------------------------------------------------------
DID_DATA := $(DID)/seq.train.tok $(DID)/seq.valid.tok
$(DID)/pre/best.safetensors: $(DID_DATA)
	$(DID_TRAIN) $(DID_SETS) --algo mdlm --steps $(DID_PRE_STEPS) --metrics $(@D)/metrics.jsonl -o $(@D) 2> $(@D).log || { tail -5 $(@D).log; exit 1; }
# Fine-tunes of the pretrain, one per model name M in DID_MODELS with the train flags DID_FT_M:
#   plain  BD3 at L' = 4
#   mix    mixed-scale, L' ~ bimodal{4: 1-λ, L: λ} (DID_MIX)
#   uni    mixed-scale, L' uniform over {4, 16, 64, ..., L} (seed 003 Table 3)
#   half   mixed-scale, L' ~ bimodal{4: 0.9, L/2: 0.1} (seed 003 Table 3's (4, L/2) mix)
DID_UNI_SIZES ?= $(shell s=4; while [ $$s -lt $(DID_L) ]; do printf '%s,' $$s; s=$$((s * 4)); done; echo $(DID_L))
DID_FT_plain ?= --block-size 4
DID_FT_mix ?= --block-mix $(DID_MIX)
DID_FT_uni ?= --block-mix uniform:$(DID_UNI_SIZES)
DID_FT_half ?= --block-mix bimodal:4,$(shell echo $$(( $(DID_L) / 2 ))),0.1
DID_FT_MODELS := $(sort $(DID_MODELS) $(DID_FRONTIER_MODELS))
define did_ft_rule
$(DID)/$(1)/best.safetensors: $(DID_DATA) $(DID)/pre/best.safetensors | $(DID)/.dirs
	@mkdir -p $$(@D)
	$$(DID_TRAIN) $$(DID_SETS) --algo bd3 $$(DID_FT_$(1)) --init $(DID)/pre/best.safetensors --steps $$(DID_STEPS) \
	    --metrics $$(@D)/metrics.jsonl -o $$(@D) 2> $$(@D).log || { tail -5 $$(@D).log; exit 1; }
endef
$(DID)/ar/best.safetensors: $(DID_DATA)
	$(DID_TRAIN) $(foreach x,$(DID_AR_SET),--set $(x)) --algo ar --steps $(DID_AR_STEPS) --metrics $(@D)/metrics.jsonl -o $(@D) 2> $(@D).log || { tail -5 $(@D).log; exit 1; }
# the run directory must exist for the metrics file
$(DID)/pre/best.safetensors $(DID)/ar/best.safetensors: | $(DID)/.dirs
$(DID)/.dirs:
	@mkdir -p $(addprefix $(DID)/,pre ar) && touch $@

# test-set NELBO of each fine-tune at the draft size and at the global size (score ppl --block-size)
$(DID)/%/ppl-B4.json: $(DID)/%/best.safetensors $(DID)/seq.test.tok
	$(BIN)/score ppl -m $< -i $(DID)/seq.test.tok --block-size 4 > $@.tmp 2>/dev/null && mv $@.tmp $@
$(DID)/%/ppl-BL.json: $(DID)/%/best.safetensors $(DID)/seq.test.tok
	$(BIN)/score ppl -m $< -i $(DID)/seq.test.tok --block-size $(DID_L) > $@.tmp 2>/dev/null && mv $@.tmp $@

$(foreach m,$(DID_FT_MODELS),$(eval $(call did_ft_rule,$(m))))

# ---- sampling -----------------------------------------------------------------------------
# Parameter files: make tracks files, not variables, so each stage's parameters are written to a file
# that is rewritten only when they change; the stage's outputs depend on it. A new file starts with
# an old timestamp so creating it does not invalidate outputs that exist.
DID_DRAFT_PARAMS := samples=$(DID_SAMPLES) seed=$(DID_SEED) nucleus=$(DID_NUCLEUS) L=$(DID_L) ddpm=$(DID_DDPM_STEPS) varlen=$(DID_VARLEN)
DID_REFINE_PARAMS := seed=$(DID_SEED) nucleus=$(DID_NUCLEUS) flags=$(DID_REFINE_FLAGS)
DID_SCORE_PARAMS := flags=$(DID_SCORE_FLAGS)
ifneq ($(filter did%,$(MAKECMDGOALS))$(filter $(DID)/%,$(MAKECMDGOALS)),)
did_params = $(shell mkdir -p $(DID); f=$(DID)/$(1).params; \
    if [ ! -f $$f ]; then echo '$(2)' > $$f; touch -d @0 $$f; \
    elif [ "$$(cat $$f)" != '$(2)' ]; then echo '$(2)' > $$f; fi)
$(call did_params,draft,$(DID_DRAFT_PARAMS))
$(call did_params,refine,$(DID_REFINE_PARAMS))
$(call did_params,score,$(DID_SCORE_PARAMS))
endif
DID_DRAFT = $(BIN)/draft -n $(DID_SAMPLES) --block-size 4 --nucleus $(DID_NUCLEUS) --seed $(DID_SEED) --batch $(DID_SAMPLES)

# $(call did_model_rules,M): drafts, remasks, refines of fine-tuned model M
define did_model_rules
$(DID)/$(1)/draft.tok: $(DID)/$(1)/best.safetensors $(DID)/draft.params
	$(DID_DRAFT) -m $$< --length $(DID_L) -o $$@ 2>/dev/null
$(DID)/$(1)/draft-ddpm$(DID_DDPM_STEPS).tok: $(DID)/$(1)/best.safetensors $(DID)/draft.params
	$(DID_DRAFT) -m $$< --length $(DID_L) --sampler ddpm --steps $(DID_DDPM_STEPS) -o $$@ 2>/dev/null
$(DID)/$(1)/varlen.tok: $(DID)/$(1)/best.safetensors $(DID)/draft.params
	$(DID_DRAFT) -m $$< --max-length $$$$(( $(DID_VARLEN) * $(DID_L) )) -o $$@ 2>/dev/null
endef
define did_mask_rule
$(DID)/$(1)/masked-$(2)-$(3).tok: $(DID)/$(1)/draft.tok $(if $(filter posthoc,$(2)),$(DID)/$(1)/best.safetensors)
	$(BIN)/remask --policy $(2) --ratio $(3) --seed $(DID_SEED) $(if $(filter posthoc,$(2)),-m $(DID)/$(1)/best.safetensors) -i $$< -o $$@
endef
define did_refine_rule
$(DID)/$(1)/refined-$(2)-$(3)-B$(4).tok: $(DID)/$(1)/masked-$(2)-$(3).tok $(DID)/$(1)/best.safetensors $(DID)/refine.params
	$(BIN)/refine -m $(DID)/$(1)/best.safetensors --block-size $(call did_bs,$(4)) --nucleus $(DID_NUCLEUS) \
	    --seed $(DID_SEED) --batch $(DID_SAMPLES) $(DID_REFINE_FLAGS) -i $$< -o $$@ 2>/dev/null
endef
$(foreach m,$(DID_MODELS),$(eval $(call did_model_rules,$(m))))
$(foreach m,$(DID_MODELS),$(foreach p,$(DID_POLICIES),$(foreach g,$(DID_GAMMAS),\
    $(eval $(call did_mask_rule,$(m),$(p),$(g))) \
    $(foreach b,$(DID_BLOCKS),$(eval $(call did_refine_rule,$(m),$(p),$(g),$(b)))))))

$(DID)/%.gen.json: $(DID)/%.tok $(DID_SCORER) $(DID)/score.params $(DID)/tokenizer.json
	$(DID_SCORE) -i $< > $@.tmp 2>/dev/null && mv $@.tmp $@
# reference rows: real test-split text under the same scorer (documents and packed rows)
$(DID)/test-docs.tok: $(DID)/seq.test.tok
	$(BIN)/tokenize decode -t $(DID)/tokenizer.json -i $< --jsonl > $(DID)/test-docs.jsonl
	$(BIN)/tokenize encode -t $(DID)/tokenizer.json --input-format jsonl -o $@ $(DID)/test-docs.jsonl

# record count, max and mean length of the corpus documents (for the variable-length table)
$(DID)/docs.stats.json: $(DID)/docs.tok
	$(BIN)/tokenize stats $< | sed -E 's/.*records ([0-9]+), tokens ([0-9]+), length min ([0-9]+) max ([0-9]+) mean ([0-9.]+).*/{"records": \1, "tokens": \2, "min": \3, "max": \4, "mean": \5}/' > $@.tmp && mv $@.tmp $@

# ---- entropy-controlled evaluation: make did-frontier --------------------------------------
# Stage 1 and DiD over a nucleus sweep (the Gen PPL <-> entropy frontier), DID_FRONTIER_SEEDS seeds x
# DID_FRONTIER_SAMPLES samples per cell, scored by the AR scorer and by the n-gram judge (order gain,
# repeats, entropy per sample). Equal-NFE baseline: the stage-1 draft remasked and redrafted with the
# same block size (B = 4: the cells refined-*-B4 hold it; report NFE beside every cell).
#   M/front/sS/draft-pP.tok                     stage 1, nucleus P, seed S
#   M/front/sS/refined-POL-G-BN-pP.tok          remask POL γ=G of that draft, refine with block N, nucleus P
#   X.gen.json / X.judge.json                   AR scorer / n-gram judge, per sample
# Report: $(DID_RESULTS)/did-frontier.md + did-frontier.png (pipelines/did/frontier.py: means with
# bootstrap 95% intervals over samples, paired bootstrap of DiD vs stage 1 at the same seed and ids,
# and stage 1 interpolated to each DiD cell's entropy).
DID_FRONT_DRAFT = $(BIN)/draft -n $(DID_FRONTIER_SAMPLES) --block-size 4 --batch $(DID_FRONTIER_SAMPLES)
define did_front_draft
$(DID)/$(1)/front/s$(2)/draft-p$(3).tok: $(DID)/$(1)/best.safetensors
	@mkdir -p $$(@D)
	$(DID_FRONT_DRAFT) -m $$< --length $(DID_L) --nucleus $(3) --seed $(2) -o $$@.tmp 2>/dev/null && mv $$@.tmp $$@
endef
define did_front_mask
$(DID)/$(1)/front/s$(2)/masked-$(4)-p$(3).tok: $(DID)/$(1)/front/s$(2)/draft-p$(3).tok $(DID)/$(1)/best.safetensors
	$(BIN)/remask --policy $(call did_cell_word,$(4),1) --ratio $(call did_cell_word,$(4),2) --seed $(2) \
	    $(if $(filter posthoc,$(call did_cell_word,$(4),1)),-m $(DID)/$(1)/best.safetensors) -i $$< -o $$@
endef
define did_front_refine
$(DID)/$(1)/front/s$(2)/refined-$(4)-p$(3).tok: $(DID)/$(1)/front/s$(2)/masked-$(call did_cell_mask,$(4))-p$(3).tok
	$(BIN)/refine -m $(DID)/$(1)/best.safetensors --block-size $(call did_bs,$(call did_cell_block,$(4))) --nucleus $(3) --seed $(2) \
	    --batch $(DID_FRONTIER_SAMPLES) -i $$< -o $$@.tmp 2>/dev/null && mv $$@.tmp $$@
endef
define did_front_rules
$(foreach k,$(sort $(foreach c,$(call did_cells_at,$(1),$(2),$(3)),$(call did_cell_mask,$(c)))),$(eval $(call did_front_mask,$(1),$(2),$(3),$(k))))
$(foreach c,$(call did_cells_at,$(1),$(2),$(3)),$(eval $(call did_front_refine,$(1),$(2),$(3),$(c))))
endef
DID_STAGE1_ALL := $(sort $(DID_ALL_NUCLEI) $(DID_STAGE1_NUCLEI))
$(foreach m,$(DID_FRONTIER_MODELS),$(foreach s,$(DID_FRONTIER_SEEDS),$(foreach p,$(DID_STAGE1_ALL),\
    $(eval $(call did_front_draft,$(m),$(s),$(p))))))
$(foreach m,$(DID_FRONTIER_MODELS),$(foreach s,$(DID_FRONTIER_SEEDS),$(foreach p,$(DID_ALL_NUCLEI),\
    $(eval $(call did_front_rules,$(m),$(s),$(p))))))
DID_FRONT_TOKS := $(foreach m,$(DID_FRONTIER_MODELS),$(foreach s,$(DID_FRONTIER_SEEDS),\
    $(foreach p,$(DID_STAGE1_ALL),$(DID)/$(m)/front/s$(s)/draft-p$(p).tok) $(foreach p,$(DID_ALL_NUCLEI),\
    $(foreach c,$(call did_cells_at,$(m),$(s),$(p)),$(DID)/$(m)/front/s$(s)/refined-$(c)-p$(p).tok))))
DID_FRONT_CELLS := $(sort $(foreach m,$(DID_FRONTIER_MODELS),$(foreach s,$(DID_FRONTIER_SEEDS),$(call did_front_cells,$(m),$(s)) \
    $(call did_curve_cells,$(m)))))
# a misspelt cell would otherwise surface as a remask or refine usage error deep inside a long run
did_bad_cell = $(if $(or $(filter-out 3,$(words $(subst -, ,$(1)))),$(filter-out snapshot posthoc random,$(call did_cell_word,$(1),1)),\
    $(filter-out B%,$(call did_cell_word,$(1),3))),$(1))
DID_BAD_CELLS := $(strip $(foreach c,$(DID_FRONT_CELLS),$(call did_bad_cell,$(c))))
ifneq ($(DID_BAD_CELLS),)
$(error DiD cells $(DID_BAD_CELLS): expected POLICY-GAMMA-B<block> with POLICY snapshot, posthoc or random, e.g. snapshot-0.25-BL)
endif
$(DID)/%.judge.json: $(DID)/%.tok $(DID)/tokenizer.json $(DID_JUDGE_FIT)
	$(BIN)/score gen --scorer-cmd '$(DID_JUDGE)' -t $(DID)/tokenizer.json --per-sample -i $< > $@.tmp 2>/dev/null && mv $@.tmp $@
DID_FRONT_JSONS := $(DID_FRONT_TOKS:.tok=.gen.json) $(DID_FRONT_TOKS:.tok=.judge.json) \
    $(DID)/test-docs.gen.json $(DID)/test-docs.judge.json

did-frontier: $(DID_RESULTS)/did-frontier.md $(DID_RESULTS)/did-frontier.json.tar.zst
# the per-sample JSON of every cell, compressed, so each number of the report can be re-checked
$(DID_RESULTS)/did-frontier.json.tar.zst: $(DID_FRONT_JSONS)
	@mkdir -p $(@D)
	tar -C $(DID) -cf - $(patsubst $(DID)/%,%,$(DID_FRONT_JSONS)) | zstd -q -19 -f -o $@.tmp && mv $@.tmp $@
$(DID_RESULTS)/did-frontier.md: $(DID_FRONT_JSONS) $(DID_HERE)/did/frontier.py | did-deps
	@mkdir -p $(@D)
	$(DID_PY) $(DID_HERE)/did/frontier.py --dir $(DID) --out $(DID_RESULTS) --length $(DID_L) \
	    --models "$(DID_FRONTIER_MODELS)" --seeds "$(DID_FRONTIER_SEEDS)" --nuclei "$(DID_ALL_NUCLEI)" --stage1-nuclei "$(DID_STAGE1_ALL)" \
	    --cells "$(DID_FRONT_CELLS)" --bootstrap $(DID_BOOTSTRAP) \
	    --train-flags "$(foreach m,$(DID_FRONTIER_MODELS),$(m)=$(DID_FT_$(m));)" \
	    --scale "corpus=$(DID_CORPUS) V=$(DID_VOCAB) L=$(DID_L) config=$(DID_CONFIG) $(DID_SET) pre=$(DID_PRE_STEPS) ft=$(DID_STEPS) ar=$(DID_AR_STEPS) samples=$(DID_FRONTIER_SAMPLES) seeds=$(DID_FRONTIER_SEEDS) judge=$(DID_JUDGE_FIT)"
	@cat $@
.PHONY: did-frontier
.SECONDARY: $(DID_FRONT_TOKS) $(DID_FRONT_TOKS:.tok=.gen.json) $(DID_FRONT_TOKS:.tok=.judge.json)

# ---- results ------------------------------------------------------------------------------
DID_SAMPLE_TOKS := $(foreach m,$(DID_MODELS),$(DID)/$(m)/draft.tok $(DID)/$(m)/draft-ddpm$(DID_DDPM_STEPS).tok \
    $(DID)/$(m)/varlen.tok \
    $(foreach p,$(DID_POLICIES),$(foreach g,$(DID_GAMMAS),$(foreach b,$(DID_BLOCKS),$(DID)/$(m)/refined-$(p)-$(g)-B$(b).tok))))
DID_JSONS := $(DID_SAMPLE_TOKS:.tok=.gen.json) $(DID)/test-docs.gen.json $(DID)/docs.stats.json \
    $(foreach m,$(DID_MODELS),$(DID)/$(m)/ppl-B4.json $(DID)/$(m)/ppl-BL.json)

did: $(DID_RESULTS)/did-results.md $(DID_RESULTS)/did-results.json.tar.zst
# the per-sample JSON behind every cell of the report, compressed (re-checkable without resampling)
$(DID_RESULTS)/did-results.json.tar.zst: $(DID_JSONS)
	@mkdir -p $(@D)
	tar -C $(DID) -cf - $(patsubst $(DID)/%,%,$(DID_JSONS)) | zstd -q -19 -f -o $@.tmp && mv $@.tmp $@
$(DID_RESULTS)/did-results.md: $(DID_JSONS) $(DID_HERE)/did/report.py | did-deps
	@mkdir -p $(@D)
	$(DID_PY) $(DID_HERE)/did/report.py --dir $(DID) --out $(DID_RESULTS) --length $(DID_L) \
	    --models "$(DID_MODELS)" --policies "$(DID_POLICIES)" --gammas "$(DID_GAMMAS)" --blocks "$(DID_BLOCKS)" \
	    --ddpm-steps $(DID_DDPM_STEPS) --varlen $(DID_VARLEN) \
	    --scale "corpus=$(DID_CORPUS) V=$(DID_VOCAB) L=$(DID_L) config=$(DID_CONFIG) $(DID_SET) batch=$(DID_BATCH) lr=$(DID_LR) pre=$(DID_PRE_STEPS) ft=$(DID_STEPS) ar=$(DID_AR_STEPS) mix=$(DID_MIX) samples=$(DID_SAMPLES) nucleus=$(DID_NUCLEUS) seed=$(DID_SEED)"
	@cat $@

did-clean:
	rm -rf $(DID)

.PHONY: did did-clean
.SECONDARY: $(DID_SAMPLE_TOKS)

# The demo's shipped checkpoints (data/demo/, see data/README.md): the mixed-scale fine-tune and the
# AR scorer, weights stored as F16. Only meaningful with DID_CORPUS=data/sample.jsonl, DID_VOCAB=4096,
# DID_L=128 (the demo's tokenizer and length).
DID_SHIP ?= data/demo
did-ship: $(DID)/mix/best.safetensors $(DID)/ar/best.safetensors
	@$(DID_HERE)/deps.sh export
	@mkdir -p $(DID_SHIP)
	$(DID_PY) $(DID_HERE)/did/to_f16.py $(DID)/mix/best.safetensors $(DID_SHIP)/mix.safetensors
	$(DID_PY) $(DID_HERE)/did/to_f16.py $(DID)/ar/best.safetensors $(DID_SHIP)/ar.safetensors
.PHONY: did-ship
