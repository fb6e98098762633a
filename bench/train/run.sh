#!/usr/bin/env bash
# Training-step throughput, ours against the reference DiT, measured in the same run in alternating rounds.
#   BD3LMS_REF=/path/to/bd3lms bench/train/run.sh [ROUNDS] [ALGOS] [CONFIG] [BATCH]
#     ROUNDS  rounds (default 3); each round runs every line below once, back to back
#     ALGOS   "ar mdlm bd3" (default "bd3")
#     CONFIG  cpu (default) or small
#     BATCH   sequences per step (default 8)
#   REF_BF16=1 also times the reference under torch.autocast("cpu", bfloat16) (on CPUs without AVX512-BF16
#   PyTorch's bf16 matmul is a slow fallback: budget minutes per step). STEPS / WARMUP override 3 / 1.
# One JSON line per measurement on stdout (impl, precision, algo, tokens_per_s, …), then a summary on stderr.
# Needs: swift build -c release --product bench-train; python3 with torch, einops, omegaconf, huggingface_hub.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}; algos=${2:-bd3}; config=${3:-cpu}; batch=${4:-8}
steps=${STEPS:-3}; warmup=${WARMUP:-1}
: "${BD3LMS_REF:?set BD3LMS_REF to a checkout of https://github.com/kuleshov-group/bd3lms}"
bin=.build/release/bench-train
[ -x "$bin" ] || { echo "run: swift build -c release --product bench-train" >&2; exit 1; }
out=$(mktemp); trap 'rm -f "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  ceiling=""   # the sgemm ceiling once per round, in its first measurement of ours
  for a in $algos; do
    python3 bench/train/reference_train.py --ref "$BD3LMS_REF" --algo "$a" --config "$config" --batch "$batch" \
      --precision fp32 --steps "$steps" --warmup "$warmup" 2>/dev/null | sed "s/^{/{\"round\": $r, /" | tee -a "$out"
    if [ "${REF_BF16:-0}" = 1 ]; then
      python3 bench/train/reference_train.py --ref "$BD3LMS_REF" --algo "$a" --config "$config" --batch "$batch" \
        --precision bf16 --steps 1 --warmup 0 2>/dev/null | sed "s/^{/{\"round\": $r, /" | tee -a "$out"
    fi
    for p in fp32 bf16; do
      "$bin" --algo "$a" --config "$config" --batch "$batch" --precision "$p" --steps "$steps" --warmup "$warmup" $ceiling \
        | sed "s/^{/{\"round\":$r,/" | tee -a "$out"
      ceiling=--no-ceiling
    done
  done
done
python3 - "$out" >&2 <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in rows:
    if r.get("what") == "sgemm_ceiling":
        print(f"round {r['round']}: sgemm ceiling {r['gflops_2048cube']} GFLOP/s (2048^3, {r['blas_threads']} threads)")
by = collections.defaultdict(list)
for r in rows:
    if "tokens_per_s" in r:
        by[(r["algo"], r["impl"], r.get("precision", "fp32"))].append(r["tokens_per_s"])
for algo in sorted({k[0] for k in by}):
    print(f"{algo}:")
    for k in sorted(k for k in by if k[0] == algo):
        v = by[k]
        print(f"  {k[1]:9} {k[2]}: tokens/s {min(v):.0f}-{max(v):.0f} over {len(v)} rounds")
    rounds = collections.defaultdict(dict)
    for r in rows:
        if r.get("algo") == algo and "tokens_per_s" in r:
            rounds[r["round"]][(r["impl"], r.get("precision", "fp32"))] = r["tokens_per_s"]
    for name, a, b in [("ours bf16 / ours fp32", ("swift", "bf16"), ("swift", "fp32")),
                       ("ours fp32 / reference fp32", ("swift", "fp32"), ("reference", "fp32")),
                       ("ours bf16 / reference fp32", ("swift", "bf16"), ("reference", "fp32")),
                       ("ours bf16 / reference bf16 autocast", ("swift", "bf16"), ("reference", "bf16"))]:
        ratios = [v[a] / v[b] for v in rounds.values() if a in v and b in v]
        if ratios:
            print(f"  {name}: " + " / ".join(f"{x:.2f}x" for x in ratios) + " (per round)")
PY
