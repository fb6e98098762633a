#!/usr/bin/env bash
# bf16 weights against fp32 on a trained checkpoint (the shipped demo model by default), with draft's samplers:
#   Gen PPL: the same draft (nucleus NUCLEUS) in fp32 and bf16 with seed 1, and in fp32 with seed 2 (the sampling
#     error), each scored by the shipped AR scorer in fp32;
#   per-step confidences: fp32 and bf16 at nucleus 1 with seed 1 and --trace (without a nucleus every draw uses the
#     same number of uniforms, so the two runs stay on the same canvases until a draw falls the other way).
# Writes results/bf16-demo.md and results/bf16-demo.json (see compare.py).
#   bench/sampling/bf16/run.sh [N samples, default 256]
#   MODEL=… SCORER=… LENGTH=256 NUCLEUS=0.9 OUT=out/bf16-demo RESULTS=results BIN=… bench/sampling/bf16/run.sh 256
set -euo pipefail
cd "$(dirname "$0")/../../.."
N="${1:-256}"
MODEL="${MODEL:-data/medium/mix.safetensors}"
SCORER="${SCORER:-data/medium/ar.safetensors}"
NUCLEUS="${NUCLEUS:-0.9}"
LENGTH="${LENGTH:-256}"
OUT="${OUT:-out/bf16-demo}"
RESULTS="${RESULTS:-results}"
if [ -n "${BIN:-}" ]; then bin="$BIN"; else   # BIN=.build/debug: tools already built (the smoke run)
    swift build -c release --product draft >/dev/null
    swift build -c release --product score >/dev/null
    bin="$(swift build -c release --show-bin-path)"
fi
mkdir -p "$OUT"
run() {  # dtype seed nucleus name
    "$bin/draft" -m "$MODEL" -n "$N" --length "$LENGTH" --nucleus "$3" --seed "$2" --dtype "$1" --trace "$OUT/$4.trace.jsonl" -o "$OUT/$4.tok"
    "$bin/score" gen --scorer "$SCORER" --per-sample -i "$OUT/$4.tok" > "$OUT/$4.gen.json"
}
run fp32 1 "$NUCLEUS" fp32
run bf16 1 "$NUCLEUS" bf16
run fp32 2 "$NUCLEUS" fp32-seed2
run fp32 1 1 fp32-p1
run bf16 1 1 bf16-p1
python3 bench/sampling/bf16/compare.py --dir "$OUT" --model "$MODEL" --scorer "$SCORER" --nucleus "$NUCLEUS" --samples "$N" \
    --command "bench/sampling/bf16/run.sh $N" --out "$RESULTS/bf16-demo"
