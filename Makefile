# bd3 — block discrete diffusion LMs on a CPU.
#   make demo   the main job on the shipped data (installs what it needs)
#   make test   the test suite (installs what it needs)
SHELL := /bin/bash
.DEFAULT_GOAL := help
SWIFT ?= swift
BIN := .build/release

help:
	@echo "make demo   - run the main job on the shipped data (data/)"
	@echo "make test   - build and run the tests"
	@echo "make build  - release build of the seven tools into $(BIN)/"
	@echo "make fuzz   - fuzz the checkpoint/stream/tokenizer readers (FUZZ_SECONDS per target, default 60)"

deps:
	@pipelines/deps.sh

build: deps
	$(SWIFT) build -c release

# XCTest only (the suite has no swift-testing tests); the last line is the plain "N passed, N failed" summary.
# then every pipeline at a tiny scale (pipelines/smoke.sh, ~3-7 min) and the docs' figures check.
test: deps
	@pipelines/deps.sh figures
	python3 Tests/scripts/layers.py
	$(SWIFT) build
	python3 Tests/scripts/doc_commands.py --bin .build/debug
	python3 Tests/scripts/doc_figures.py
	pipelines/smoke.sh .build/debug
	@set -o pipefail; $(SWIFT) test --disable-swift-testing 2>&1 | tee .build/test.log | grep -vE "^Test Case .* (started|passed)"; rc=$$?; \
	  total=$$(grep -oE "Executed [0-9]+ tests?, with [0-9]+ failures?" .build/test.log | tail -1); \
	  n=$$(echo "$$total" | grep -oE "[0-9]+" | head -1); f=$$(echo "$$total" | grep -oE "[0-9]+" | sed -n 2p); \
	  [ -n "$$n" ] && echo "$$((n - f)) passed, $$f failed"; exit $$rc

# Mutation fuzzing of the checkpoint, token-stream and tokenizer.json readers (Tests/BlockDiffusionTests/
# CheckpointFuzzTests.swift): FUZZ_SECONDS per target with a fresh seed; `make test` runs a short fixed-seed campaign.
FUZZ_SECONDS ?= 60
fuzz: deps
	$(SWIFT) build --build-tests
	BD3_FUZZ_SECONDS=$(FUZZ_SECONDS) BD3_FUZZ_SEED=$${BD3_FUZZ_SEED:-$$(date +%s)} BD3_FUZZ_ARTIFACTS=.build/fuzz \
	  $(SWIFT) test --skip-build --disable-swift-testing --filter CheckpointFuzzTests 2>&1 | grep -E "^fuzz |error|Executed|Fatal"; \
	  exit $${PIPESTATUS[0]}

include pipelines/demo.mk
include pipelines/corpora.mk
include pipelines/did.mk
include pipelines/paper.mk
include pipelines/decode.mk
include pipelines/medium.mk

.PHONY: help deps build test fuzz
