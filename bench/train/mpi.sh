#!/usr/bin/env bash
# Data-parallel scaling on one machine: 2 MPI ranks × 1 core each against 1 process using both cores, the same
# global batch (16 sequences of 256 tokens per optimizer step, cpu config, BD3 L'=4), alternating rounds.
#   bench/train/mpi.sh [ROUNDS] [STEPS]        (defaults 3 rounds, 6 steps)
# Data: the shipped data/sample.jsonl, tokenised (4096 BPE) and packed to L = 256 in a temp dir.
# Prints, per round, the tokens/s `train` reports at its last step for both layouts and their ratio.
# Needs: swift build -c release --product train --product tokenize --product pack-blocks; Open MPI.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}; steps=${2:-6}
bin=.build/release
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
$bin/tokenize train --vocab-size 4096 --input-format jsonl -o "$work/tok.json" data/sample.jsonl 2>/dev/null
$bin/tokenize encode -t "$work/tok.json" --input-format jsonl -o "$work/docs.tok" data/sample.jsonl 2>/dev/null
$bin/pack-blocks -L 256 --block-size 4 -i "$work/docs.tok" -o "$work/seq.tok" 2>/dev/null
args=(--data "$work/seq.tok" --algo bd3 --block-size 4 --config cpu --steps "$steps" --warmup 0 --save-every 0 --log-every 1)
tps() { grep -o '[0-9]* tok/s' | tail -1 | cut -d' ' -f1; }
for r in $(seq 1 "$rounds"); do
  one=$($bin/train "${args[@]}" --batch 8 --accumulate 2 -o "$work/one$r" 2>&1 | tps)
  two=$(mpirun -np 2 --bind-to core $bin/train "${args[@]}" --batch 8 -o "$work/mpi$r" 2>&1 | tps)
  python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'round $r: 1 process x 2 cores {a:.0f} tok/s, 2 ranks x 1 core {b:.0f} tok/s, ratio {b / a:.2f}')" "$one" "$two"
done
