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

deps:
	@pipelines/deps.sh

build: deps
	$(SWIFT) build -c release

test: deps
	$(SWIFT) build
	$(SWIFT) test 2>&1 | tee .build/test.log | grep -vE "^Test Case .* (started|passed)" ; exit $${PIPESTATUS[0]}

include pipelines/demo.mk
include pipelines/corpora.mk
include pipelines/paper.mk

.PHONY: help deps build test
