# The main job on the shipped data: tokenizer -> documents -> packed sequences -> text again.
# Everything lands in out/demo/; `make demo` re-runs only what changed.
DEMO := out/demo
DEMO_L := 256

demo: build $(DEMO)/seq.train.tok
	@echo "== streams"
	@$(BIN)/tokenize stats $(DEMO)/docs.tok $(DEMO)/seq.train.tok $(DEMO)/seq.valid.tok $(DEMO)/seq.test.tok
	@echo "== first packed training row, decoded"
	@$(BIN)/tokenize decode -t $(DEMO)/tokenizer.json -i $(DEMO)/seq.train.tok --jsonl | head -n 1 | cut -c1-600
	@echo
	@echo "== round trip: documents -> text -> documents"
	@$(BIN)/tokenize decode -t $(DEMO)/tokenizer.json -i $(DEMO)/docs.tok --jsonl > $(DEMO)/docs.decoded.jsonl
	@cmp <(python3 -c 'import json,sys; [print(json.loads(l)["text"]) for l in open(sys.argv[1])]' data/sample.jsonl) \
	     <(python3 -c 'import json,sys; [print(json.loads(l)["text"]) for l in open(sys.argv[1])]' $(DEMO)/docs.decoded.jsonl) \
	  && echo "byte-exact"

$(DEMO)/tokenizer.json: data/sample.jsonl | build
	@mkdir -p $(DEMO)
	$(BIN)/tokenize train --vocab-size 4096 --input-format jsonl -o $@ $<

$(DEMO)/docs.tok: data/sample.jsonl $(DEMO)/tokenizer.json
	$(BIN)/tokenize encode -t $(DEMO)/tokenizer.json --input-format jsonl -o $@ $<

$(DEMO)/seq.train.tok: $(DEMO)/docs.tok
	$(BIN)/pack-blocks -L $(DEMO_L) --block-size 4 --block-size 16 -i $< \
	    --split train=0.9,valid=0.05,test=0.05 --out-prefix $(DEMO)/seq --seed 1

.PHONY: demo
