#!/usr/bin/env bash
# Inference-engine benchmark (see engine.py): draft vs the reference DiT forward in PyTorch, same checkpoints.
#   BD3LMS_REF=path/to/bd3lms bench/sampling/engine.sh [--rounds 2] [--length 128] [--configs small,cpu]
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product draft
swift build -c release --product bench-sampling-ckpt
bin="$(swift build -c release --show-bin-path)"
work="${BENCH_DIR:-${TMPDIR:-/tmp}/bd3-engine-bench}"
exec env -u OPENBLAS_CORETYPE python3 bench/sampling/engine.py --bin "$bin" --work "$work" "$@"
