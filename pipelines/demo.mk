# The main job on the shipped data, end to end: tokenizer -> documents -> packed sequences, then
# Diffusion In Diffusion generation with a shipped checkpoint: draft (BD3, L' = 4) -> snapshot remask
# -> global refine (B = L) -> `score gen` under the shipped AR scorer, decoded samples and a table.
# Two shipped sets (data/README.md has the exact commands that made them):
#   DEMO_SET=medium (the default)  data/medium/: trained by `make -j2 medium-ship` on the corpora mix,
#                                  L = 256, its own tokenizer (copied, not retrained)
#   DEMO_SET=small                 data/demo/: the small models of pipelines/did.mk, L = 128, tokenizer
#                                  trained here on data/sample.jsonl (deterministic, so it matches)
# Everything lands in $(DEMO)/; `make demo` re-runs only what changed. Without the shipped checkpoint
# (DEMO_SHIPPED=) it trains a small model and scorer instead (a few minutes; poor text).
DEMO_SET ?= $(if $(wildcard data/medium/mix.safetensors),medium,small)
ifeq ($(DEMO_SET),medium)
DEMO ?= out/demo
DEMO_SHIPPED ?= data/medium
DEMO_L := 256
DEMO_GAMMA ?= 0.25
DEMO_TOKENIZER ?= data/medium/tokenizer.json
else
DEMO ?= out/demo-small
DEMO_SHIPPED ?= data/demo
DEMO_L := 128
DEMO_GAMMA ?= 0.5
DEMO_TOKENIZER ?=
endif
DEMO_SAMPLES ?= 8
DEMO_SEED ?= 1
DEMO_QUICK_STEPS ?= 150
DEMO_CKPT := $(if $(wildcard $(DEMO_SHIPPED)/mix.safetensors),$(DEMO_SHIPPED)/mix.safetensors,$(DEMO)/quick-mix/best.safetensors)
DEMO_SCORER := $(if $(wildcard $(DEMO_SHIPPED)/ar.safetensors),$(DEMO_SHIPPED)/ar.safetensors,$(DEMO)/quick-ar/best.safetensors)
DEMO_PY := python3
DEMO_DID := pipelines/did

demo: build $(DEMO)/seq.train.tok $(DEMO)/table.md
	@echo "== streams"
	@$(BIN)/tokenize stats $(DEMO)/docs.tok $(DEMO)/seq.train.tok $(DEMO)/seq.valid.tok $(DEMO)/seq.test.tok
	@echo "== first packed training row, decoded"
	@$(BIN)/tokenize decode -t $(DEMO)/tokenizer.json -i $(DEMO)/seq.train.tok --jsonl > $(DEMO)/seq.train.decoded.jsonl
	@head -n 1 $(DEMO)/seq.train.decoded.jsonl | cut -c1-600
	@echo
	@echo "== round trip: documents -> text -> documents"
	@$(BIN)/tokenize decode -t $(DEMO)/tokenizer.json -i $(DEMO)/docs.tok --jsonl > $(DEMO)/docs.decoded.jsonl
	@cmp <($(DEMO_PY) -c 'import json,sys; [print(json.loads(l)["text"]) for l in open(sys.argv[1])]' data/sample.jsonl) \
	     <($(DEMO_PY) -c 'import json,sys; [print(json.loads(l)["text"]) for l in open(sys.argv[1])]' $(DEMO)/docs.decoded.jsonl) \
	  && echo "byte-exact"
	@echo "== Diffusion In Diffusion: model $(DEMO_CKPT), scorer $(DEMO_SCORER)"
	@echo "-- stage 1 drafts (BD3, L'=4), first 2 of $(DEMO_SAMPLES)"
	@$(DEMO_PY) $(DEMO_DID)/show.py $(DEMO)/draft.txt.jsonl 2 400
	@echo "-- after snapshot remask γ=$(DEMO_GAMMA) and global refine (B=$(DEMO_L)), same 2 samples"
	@$(DEMO_PY) $(DEMO_DID)/show.py $(DEMO)/refined-snapshot.txt.jsonl 2 400
	@echo "-- Gen PPL under the AR scorer (lower is better; $(DEMO_SAMPLES) samples of $(DEMO_L) tokens)"
	@cat $(DEMO)/table.md

# the shipped set's tokenizer, or one trained on the shipped text
$(DEMO)/tokenizer.json: data/sample.jsonl $(DEMO_TOKENIZER) | build
	@mkdir -p $(DEMO)
	$(if $(DEMO_TOKENIZER),cp $(DEMO_TOKENIZER) $@,$(BIN)/tokenize train --vocab-size 4096 --input-format jsonl -o $@ $<)

$(DEMO)/docs.tok: data/sample.jsonl $(DEMO)/tokenizer.json
	$(BIN)/tokenize encode -t $(DEMO)/tokenizer.json --input-format jsonl -o $@ $<

$(DEMO)/seq.train.tok: $(DEMO)/docs.tok
	$(BIN)/pack-blocks -L $(DEMO_L) --block-size 4 --block-size 16 -i $< \
	    --split train=0.9,valid=0.05,test=0.05 --out-prefix $(DEMO)/seq --seed 1
$(DEMO)/seq.valid.tok $(DEMO)/seq.test.tok: $(DEMO)/seq.train.tok ;

# Fallback when no checkpoint is shipped: mixed-scale BD3 and a small AR scorer, trained here.
$(DEMO)/quick-mix/best.safetensors: $(DEMO)/seq.train.tok
	$(BIN)/train --data $< --valid $(DEMO)/seq.valid.tok --algo bd3 --block-mix bimodal:4,$(DEMO_L),0.1 \
	    --config cpu --batch 16 --lr 1e-3 --warmup 20 --steps $(DEMO_QUICK_STEPS) --val-batches 4 --log-every 50 -o $(@D)
$(DEMO)/quick-ar/best.safetensors: $(DEMO)/seq.train.tok
	$(BIN)/train --data $< --valid $(DEMO)/seq.valid.tok --algo ar --config cpu --set hidden_size=128 --set n_heads=4 \
	    --batch 16 --lr 1e-3 --warmup 20 --steps $(DEMO_QUICK_STEPS) --val-batches 4 --log-every 50 -o $(@D)

# The checkpoint must have been trained with this tokenizer (tokenize train is deterministic).
$(DEMO)/fingerprint.ok: $(DEMO_CKPT) $(DEMO_SCORER) $(DEMO)/docs.tok
	@$(DEMO_PY) $(DEMO_DID)/check_fingerprint.py "$$($(BIN)/tokenize stats $(DEMO)/docs.tok)" $(DEMO_CKPT) $(DEMO_SCORER)
	@touch $@

$(DEMO)/draft.tok: $(DEMO_CKPT) $(DEMO)/fingerprint.ok
	$(BIN)/draft -m $(DEMO_CKPT) -n $(DEMO_SAMPLES) --length $(DEMO_L) --block-size 4 --nucleus 0.9 \
	    --seed $(DEMO_SEED) --batch $(DEMO_SAMPLES) -o $@ 2>/dev/null
$(DEMO)/masked-%.tok: $(DEMO)/draft.tok
	$(BIN)/remask --policy $* --ratio $(DEMO_GAMMA) --seed $(DEMO_SEED) $(if $(filter posthoc,$*),-m $(DEMO_CKPT)) -i $< -o $@
$(DEMO)/refined-%.tok: $(DEMO)/masked-%.tok
	$(BIN)/refine -m $(DEMO_CKPT) --block-size $(DEMO_L) --nucleus 0.9 --seed $(DEMO_SEED) \
	    --batch $(DEMO_SAMPLES) -i $< -o $@ 2>/dev/null
$(DEMO)/%.gen.json: $(DEMO)/%.tok $(DEMO_SCORER) $(DEMO)/tokenizer.json
	$(BIN)/score gen --scorer $(DEMO_SCORER) -t $(DEMO)/tokenizer.json --per-sample -i $< > $@.tmp 2>/dev/null && mv $@.tmp $@
# the second scorer: a word trigram judge fitted on held-out text the models never saw (pipelines/scorers/ngram.py)
DEMO_JUDGE_FIT ?= data/heldout-narrative.jsonl
DEMO_JUDGE ?= $(DEMO_PY) pipelines/scorers/ngram.py --fit $(DEMO_JUDGE_FIT)
$(DEMO)/%.judge.json: $(DEMO)/%.tok $(DEMO)/tokenizer.json $(DEMO_JUDGE_FIT)
	$(BIN)/score gen --scorer-cmd '$(DEMO_JUDGE)' -t $(DEMO)/tokenizer.json --per-sample -i $< > $@.tmp 2>/dev/null && mv $@.tmp $@
$(DEMO)/%.txt.jsonl: $(DEMO)/%.tok $(DEMO)/tokenizer.json
	$(BIN)/tokenize decode -t $(DEMO)/tokenizer.json -i $< --jsonl > $@.tmp && mv $@.tmp $@
# real held-out rows (test split) under the same scorer, as a reference point
$(DEMO)/test-docs.tok: $(DEMO)/seq.test.tok
	$(BIN)/tokenize decode -t $(DEMO)/tokenizer.json -i $< --jsonl > $(DEMO)/test-docs.jsonl
	$(BIN)/tokenize encode -t $(DEMO)/tokenizer.json --input-format jsonl -o $@ $(DEMO)/test-docs.jsonl

DEMO_ROWS := "real text (test split)=$(DEMO)/test-docs.gen.json" \
    "stage 1: draft B=4=$(DEMO)/draft.gen.json" \
    "two-stage: random remask γ=$(DEMO_GAMMA), refine B=$(DEMO_L)=$(DEMO)/refined-random.gen.json" \
    "two-stage: snapshot remask γ=$(DEMO_GAMMA), refine B=$(DEMO_L)=$(DEMO)/refined-snapshot.gen.json"
$(DEMO)/table.md: $(DEMO)/test-docs.gen.json $(DEMO)/draft.gen.json $(DEMO)/refined-random.gen.json \
                  $(DEMO)/refined-snapshot.gen.json $(DEMO)/draft.txt.jsonl $(DEMO)/refined-snapshot.txt.jsonl
	$(DEMO_PY) $(DEMO_DID)/table.py $(DEMO_ROWS) > $@.tmp && mv $@.tmp $@

# Order gain of real held-out text vs the shipped model's drafts and refinements under both scorers:
#   make demo-order-gain DEMO=out/demo64 DEMO_SAMPLES=64      -> results/demo-order-gain.md
DEMO_ORDER_OUT ?= results/demo-order-gain.md
DEMO_KINDS := test-docs draft refined-random refined-snapshot
demo-order-gain: build $(foreach k,$(DEMO_KINDS),$(DEMO)/$(k).gen.json $(DEMO)/$(k).judge.json)
	@mkdir -p $(dir $(DEMO_ORDER_OUT))
	{ echo "# Word order of real text vs generated samples (generated by \`make demo-order-gain DEMO=$(DEMO) DEMO_SAMPLES=$(DEMO_SAMPLES)\`)"; echo; \
	  echo "Model $(DEMO_CKPT), nucleus 0.9, seed $(DEMO_SEED), $(DEMO_SAMPLES) samples of $(DEMO_L) tokens; real text = the test split's rows."; \
	  echo "AR scorer: $(DEMO_SCORER) (trained on the same corpus). Judge: word trigram Kneser-Ney fitted on $(DEMO_JUDGE_FIT) (text no model saw)."; \
	  echo "Order gain = PPL of the words shuffled (3 seeded shuffles) ÷ PPL of the same words in order."; echo; \
	  echo "## AR scorer"; echo; $(DEMO_PY) $(DEMO_DID)/table.py $(foreach k,$(DEMO_KINDS),"$(k)=$(DEMO)/$(k).gen.json"); echo; \
	  echo "## n-gram judge"; echo; $(DEMO_PY) $(DEMO_DID)/table.py $(foreach k,$(DEMO_KINDS),"$(k)=$(DEMO)/$(k).judge.json"); } > $(DEMO_ORDER_OUT).tmp
	mv $(DEMO_ORDER_OUT).tmp $(DEMO_ORDER_OUT)
	tar -C $(DEMO) -cf - $(foreach k,$(DEMO_KINDS),$(k).gen.json $(k).judge.json) | zstd -q -19 -f -o $(DEMO_ORDER_OUT:.md=.json.tar.zst)
	@cat $(DEMO_ORDER_OUT)

# Test NELBO PPL of the shipped model on the demo's test split at L' = 4, 8 draws of t per block
# (data/README.md quotes it):  make demo-ppl  -> results/demo-mix-ppl.json
DEMO_PPL_OUT ?= results/demo-mix-ppl.json
demo-ppl: build $(DEMO)/seq.test.tok
	@mkdir -p $(dir $(DEMO_PPL_OUT))
	$(BIN)/score ppl -m $(DEMO_CKPT) -i $(DEMO)/seq.test.tok --block-size 4 --samples 8 --seed 1 > $(DEMO_PPL_OUT).tmp 2>/dev/null
	mv $(DEMO_PPL_OUT).tmp $(DEMO_PPL_OUT)
	@cat $(DEMO_PPL_OUT)

.PHONY: demo demo-order-gain demo-ppl
.SECONDARY: $(DEMO)/test-docs.gen.json $(DEMO)/test-docs.judge.json $(DEMO)/masked-snapshot.tok $(DEMO)/masked-random.tok $(DEMO)/refined-snapshot.tok $(DEMO)/refined-random.tok \
    $(DEMO)/draft.tok $(DEMO)/test-docs.tok
