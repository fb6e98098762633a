#!/usr/bin/env bash
# Smoke run of every pipeline at a tiny scale through its own variables: make did (+ did-frontier),
# make paper (every table and figure), make medium (+ medium-ship) — from the corpus to the report — and
# bench/sampling/bf16 (bf16 against fp32) on the shipped demo model,
# with 1-layer models of hidden size 16, 2 optimizer steps, a few samples. Run by `make test` with the
# debug build it has just made (BIN=.build/debug, no release build); everything is written under a
# temporary directory, never over out/ or results/. `make corpora` needs the network (apt, pip
# download), so only its rules are checked here (make -n).
#   pipelines/smoke.sh [BIN]        BIN defaults to .build/debug; SMOKE_KEEP=1 keeps the directory
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-.build/debug}
for t in tokenize pack-blocks train draft remask refine score; do
  [ -x "$BIN/$t" ] || { echo "smoke: $BIN/$t is missing: build first (swift build)" >&2; exit 1; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/bd3-smoke.XXXXXX")
[ "${SMOKE_KEEP:-0}" = 1 ] && echo "smoke: keeping $T" || trap 'rm -rf "$T"' EXIT
mkdir -p "$T/corpus"
# 200 short documents (the first 600 characters of each shipped one): enough for every split
python3 -c 'import json, sys
for line in list(open(sys.argv[1]))[:200]:
    d = json.loads(line); d["text"] = d["text"][:600]; print(json.dumps(d))' data/sample.jsonl > "$T/corpus/small.jsonl"
cp data/heldout-narrative.jsonl "$T/corpus/heldout-narrative.jsonl"
TINY_SET="hidden_size=16 n_blocks=1 n_heads=2 cond_dim=8"
MAKE_Q="make --no-print-directory -s -j2"
step() { local t0=$SECONDS; echo "smoke: $1"; shift; "$@" > "$T/log" 2>&1 || { tail -30 "$T/log"; echo "smoke: FAILED: $*" >&2; exit 1; }; echo "smoke:   ok ($((SECONDS - t0)) s)"; }

step "make did (4 fine-tunes, the DiD sweep, report and figure)" \
  $MAKE_Q -f pipelines/did.mk did BIN="$BIN" DID_BUILD=: DID="$T/did" DID_RESULTS="$T/results" \
    DID_CORPUS="$T/corpus/small.jsonl" DID_VOCAB=320 DID_L=16 DID_SET="$TINY_SET" DID_AR_SET="$TINY_SET" \
    DID_BATCH=2 DID_WARMUP=1 DID_PRE_STEPS=2 DID_STEPS=2 DID_AR_STEPS=2 DID_SAMPLES=2 DID_DDPM_STEPS=2 DID_VARLEN=2 \
    DID_MODELS="plain mix uni half" DID_POLICIES="snapshot posthoc random" DID_GAMMAS=0.5 DID_BLOCKS="4 L"
test -s "$T/results/did-results.md" && test -s "$T/results/did-gamma.png"

step "make paper (every table and figure)" \
  $MAKE_Q -f pipelines/paper.mk paper PAPER_BIN="$BIN" PAPER_BUILD=: PAPER_OUT="$T/paper" PAPER_RESULTS="$T/results" \
    CORPUS_OUT="$T/corpus" PAPER_CORPUS="$T/corpus/small.jsonl" PAPER_CORPUS_ALT="$T/corpus/small.jsonl" \
    PAPER_HELDOUT_SETS=narrative PAPER_VOCAB=320 PAPER_L=32 PAPER_SET="$TINY_SET" PAPER_STEPS=2 PAPER_FT_STEPS=2 \
    PAPER_BATCH=2 PAPER_WARMUP=1 PAPER_FT_WARMUP=1 PAPER_VAL_EVERY=1 PAPER_VAL_BATCHES=1 PAPER_SCORE_SAMPLES=1 \
    PAPER_GEN_N=2 PAPER_GEN_BATCH=2 PAPER_GEN_MAX=64
for n in 1 2 3 4 5 6 7 8 10 11 13; do test -s "$T/results/paper-table$n.md"; done
test -s "$T/results/paper-fig1-l1.png" && test -s "$T/results/paper-varnelbo.md"

MED_VARS=(MED="$T/medium" MED_RESULTS="$T/results/medium" MED_CORPUS="$T/corpus/small.jsonl"
  MED_JUDGE_FIT="$T/corpus/heldout-narrative.jsonl" MED_BIN="$BIN" MED_BUILD=: MED_VOCAB=320 MED_L=16
  MED_SET="$TINY_SET" MED_AR_SET="$TINY_SET" MED_BATCH=2 MED_WARMUP=1 MED_PRE_STEPS=2 MED_STEPS=2 MED_AR_STEPS=2
  MED_MODELS="mix plain" MED_VAL_EVERY=1 MED_SAMPLES=3 MED_SEEDS="1 2" MED_NUCLEI="0.8 1.0" MED_STAGE1_NUCLEI=0.5
  MED_FRONTIER_CELLS=snapshot-0.5-BL MED_FRONTIER_CELLS_mix="snapshot-0.5-B4 snapshot-0.5-BL random-0.5-BL"
  MED_FRONTIER_CELLS_mix_s2=snapshot-0.5-BL MED_CURVE_NUCLEI=0.5 MED_FRONTIER_CURVE_CELLS_mix=snapshot-0.5-BL
  MED_FRONTIER_CURVE_CELLS_plain= MED_BOOTSTRAP=20 MED_SHIP="$T/ship")
step "make medium (training, DiD sweep, entropy frontier with both scorers)" \
  $MAKE_Q -f pipelines/medium.mk medium "${MED_VARS[@]}"
test -s "$T/results/medium/did-frontier.md" && test -s "$T/results/medium/did-frontier.png"
grep -q "equal H" "$T/results/medium/did-frontier.md"
# the cells asked for per model and seed, and nothing else; the per-model table of the training mixes
test -s "$T/medium/mix/front/s1/refined-random-0.5-BL-p0.8.gen.json"
test ! -e "$T/medium/mix/front/s2/refined-random-0.5-BL-p0.8.tok" && test ! -e "$T/medium/plain/front/s1/refined-snapshot-0.5-B4-p0.8.tok"
grep -q "Training mix" "$T/results/medium/did-frontier.md"
# the DiD curve: mix's curve cell also at the extra nucleus, plain has none
test -s "$T/medium/mix/front/s2/refined-snapshot-0.5-BL-p0.5.judge.json" && test ! -e "$T/medium/plain/front/s1/refined-snapshot-0.5-BL-p0.5.tok"
grep -q "snapshot γ=0.5 B=L=16 | 0.5 |" "$T/results/medium/did-frontier.md"
# a misspelt cell is refused before anything runs
if $MAKE_Q -n -f pipelines/medium.mk medium "${MED_VARS[@]}" MED_FRONTIER_CELLS_mix=snapshto-0.5-BL >/dev/null 2>&1; then
  echo "smoke: a misspelt DiD cell was accepted"; exit 1; fi
if python3 -c "import numpy, safetensors" 2>/dev/null; then
  step "make medium-ship (BF16 export, size check, commands)" \
    $MAKE_Q -f pipelines/medium.mk medium-ship "${MED_VARS[@]}" MED_SHIP_DTYPE=bf16
  test -s "$T/ship/mix.safetensors" && test -s "$T/ship/tokenizer.json" && grep -q "train" "$T/ship/COMMANDS.txt"
  step "the exported model samples" "$BIN/draft" -m "$T/ship/mix.safetensors" -n 1 --length 16 -o "$T/ship/d.tok"
else
  echo "smoke: make medium-ship skipped (Python safetensors not installed: python3 -m pip install safetensors)"
fi

step "bf16 against fp32 on the shipped demo model (bench/sampling/bf16)" \
  env BIN="$BIN" OUT="$T/bf16" RESULTS="$T/results" LENGTH=16 bench/sampling/bf16/run.sh 4
test -s "$T/results/bf16-demo.md" && test -s "$T/results/bf16-demo.json"

step "make corpora (rules only: it downloads)" make -n -f pipelines/corpora.mk corpora CORPUS_OUT="$T/c"
echo "smoke: every pipeline ran"
