#!/usr/bin/env bash
# Decoding evidence on the demo model (data/demo/mix.safetensors, scored by data/demo/ar.safetensors):
# every unmasking policy at equal NFE budgets (L' = 4 and one global block), the NFE ↔ Gen PPL curves of
# threshold:τ and eb:γ, and Diffusion In Diffusion (draft → snapshot remask γ = 0.5 → global refine) with each
# policy in stage 1 and in stage 2. Each cell writes OUT/NAME.tok (samples), OUT/NAME.cmd (the exact
# commands) and OUT/NAME.gen.json (`score gen --per-sample`); a cell whose .gen.json exists is skipped, so an
# interrupted run continues. pipelines/decode/report.py turns OUT into results/decode-*.
#
#   pipelines/decode/run.sh            (make decode-results runs it, then the report)
set -euo pipefail
BIN=${BIN:-.build/release}
OUT=${DECODE:-out/decode}
N=${DECODE_SAMPLES:-16}
SEED=${DECODE_SEED:-1}
L=${DECODE_L:-128}
M=${DECODE_MODEL:-data/demo/mix.safetensors}
S=${DECODE_SCORER:-data/demo/ar.safetensors}
TAUS=${DECODE_TAUS:-0.005 0.01 0.02 0.05 0.06 0.07 0.08 0.1 0.2 0.5}
GAMMAS=${DECODE_GAMMAS:-2 4 6 8 12 16 32}
mkdir -p "$OUT"
COMMON="-n $N --length $L --nucleus 0.9 --seed $SEED --batch $N --margins"

score() {  # NAME
    "$BIN/score" gen --scorer "$S" --per-sample -i "$OUT/$1.tok" > "$OUT/$1.gen.json.tmp" 2>/dev/null
    mv "$OUT/$1.gen.json.tmp" "$OUT/$1.gen.json"
}

draft_cell() {  # NAME DRAFT-ARGS...
    local name=$1; shift
    [ -s "$OUT/$name.gen.json" ] && return 0
    local cmd="$BIN/draft -m $M $COMMON $* -o $OUT/$name.tok"
    echo "$cmd" > "$OUT/$name.cmd"
    $cmd 2>/dev/null
    score "$name"
    echo "$name: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("gen_ppl %.1f nfe %.1f tpf %.2f" % (d["gen_ppl"], d["nfe"], d["tokens_per_forward"]))' "$OUT/$name.gen.json")"
}

did_cell() {  # NAME STAGE1-CELL REFINE-ARGS...
    local name=$1 from=$2; shift 2
    [ -s "$OUT/$name.gen.json" ] && return 0
    local masked="$OUT/$from.masked.tok"
    local rm="$BIN/remask --policy snapshot --ratio 0.5 -i $OUT/$from.tok -o $masked"
    [ -s "$masked" ] || $rm
    local cmd="$BIN/refine -m $M --block-size $L --nucleus 0.9 --seed $SEED --batch $N $* -i $masked -o $OUT/$name.tok"
    { cat "$OUT/$from.cmd"; echo "$rm"; echo "$cmd"; } > "$OUT/$name.cmd"
    $cmd 2>/dev/null
    score "$name"
    echo "$name: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("gen_ppl %.1f nfe %.1f" % (d["gen_ppl"], d["nfe"]))' "$OUT/$name.gen.json")"
}

RANKED="random confidence margin entropy"
# A global-block forward runs all 16 × 128 tokens through the model, ~30× the work of an L' = 4 forward
# with the KV cache, so the global cells keep small NFE budgets (the whole run: ~18 min of wall time on
# 2 cores shared with other jobs, 7.5 min of CPU).
# 1. Equal NFE budgets. L' = 4: first-hitting (k = 1, NFE 127) and ddpm with 2 steps per block (NFE ≤ 64).
#    One global block (L' = L): ddpm with 32 / 16 steps (ranked policies: NFE = T exactly).
for p in $RANKED; do
    draft_cell "b4-fh-$p" --block-size 4 --unmask "$p"
    draft_cell "b4-s2-$p" --block-size 4 --sampler ddpm --steps 2 --unmask "$p"
    for T in 32 16; do draft_cell "g-s$T-$p" --block-size $L --sampler ddpm --steps $T --unmask "$p"; done
done
# 2. Adaptive policies over their parameter (the NFE ↔ Gen PPL curve), L' = 4.
for t in $TAUS; do draft_cell "b4-threshold-$t" --block-size 4 --unmask "threshold:$t"; done
for g in $GAMMAS; do draft_cell "b4-eb-$g" --block-size 4 --unmask "eb:$g"; done
# 3. DiD: stage 1 = L' = 4 first-hitting drafts with each policy (and threshold:0.05); snapshot remask γ = 0.5;
#    stage 2 = global refine (B = L) with each policy at an equal budget of 16 steps (ddpm schedule: k = 4 per
#    step for the ranked policies, NFE 16; threshold adapts).
STAGE=${DECODE_DID_POLICIES:-random confidence margin entropy threshold:0.05}
for p1 in $STAGE; do
    s1="b4-fh-$p1"
    case $p1 in threshold:*) s1="b4-threshold-${p1#threshold:}"; draft_cell "$s1" --block-size 4 --unmask "$p1";; esac
    for p2 in $STAGE; do did_cell "did-${p1/:/}-${p2/:/}" "$s1" --sampler ddpm --steps 16 --unmask "$p2"; done
done
# 4. Remasking between the stages: snapshot vs margin (the stream's --margins field), each with --dilate d
#    (the same ⌊γ·n⌋ budget spent on ±d spans); stage 2 as in 3 with the random policy.
remask_cell() {  # NAME STAGE1-CELL TAG REMASK-ARGS
    local name=$1 from=$2 tag=$3 rargs=$4
    [ -s "$OUT/$name.gen.json" ] && return 0
    local masked="$OUT/$from.masked-$tag.tok"
    local rm="$BIN/remask $rargs --ratio 0.5 -i $OUT/$from.tok -o $masked"
    [ -s "$masked" ] || $rm
    local cmd="$BIN/refine -m $M --block-size $L --nucleus 0.9 --seed $SEED --batch $N --sampler ddpm --steps 16 -i $masked -o $OUT/$name.tok"
    { cat "$OUT/$from.cmd"; echo "$rm"; echo "$cmd"; } > "$OUT/$name.cmd"
    $cmd 2>/dev/null
    score "$name"
    echo "$name: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("gen_ppl %.1f nfe %.1f" % (d["gen_ppl"], d["nfe"]))' "$OUT/$name.gen.json")"
}
for p1 in random confidence; do
    for pol in snapshot margin; do
        for d in 0 1 3; do remask_cell "remask-$p1-$pol-d$d" "b4-fh-$p1" "$pol-d$d" "--policy $pol --dilate $d"; done
    done
done
