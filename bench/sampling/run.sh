#!/usr/bin/env bash
# Sampling benchmark: draft with vs without the KV cache at lengths 256/1024/4096, and the
# draft | remask | refine | score pipe vs the same stages through files. Train-free (random-weight
# checkpoints). Extra arguments go to bench.py (e.g. --lengths 256,1024 --samples 2,1).
#   bench/sampling/run.sh                      # BENCH_DIR (default $TMPDIR/bd3-sampling-bench) holds checkpoints + streams
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product draft
swift build -c release --product remask
swift build -c release --product refine
swift build -c release --product score
swift build -c release --product bench-sampling-ckpt
bin="$(swift build -c release --show-bin-path)"
work="${BENCH_DIR:-${TMPDIR:-/tmp}/bd3-sampling-bench}"
# Runtime.prepareBLAS() picks the SkylakeX kernels unless OPENBLAS_CORETYPE is already set; some environments
# preset a slower one, so unset it (as bench/train does).
exec env -u OPENBLAS_CORETYPE python3 bench/sampling/bench.py --bin "$bin" --work "$work" "$@"
