#!/usr/bin/env bash
# Tokenizer benchmark: our `tokenize` against HF `tokenizers` (PyPI) on the same text, the same
# vocabulary and the same machine, in one run. Results: a markdown table on stdout (paste into
# docs/benchmarks.md, section "Tokenizer").
#
#   bench/tokenizer/run.sh            # corpus and GPT-2 ranks are made in $BENCH_DIR on first use
#   BENCH_CORPUS=out/corpora/bench-10mb.txt bench/tokenizer/run.sh   # any other text file (≥ 10 MB)
#
# Needs: Debian packages sword-text-web + diatheke (World English Bible) and python3-doc (the
# Python 3 documentation sources) for ≈18 MB of real English text; pip (openai-whisper sdist for
# gpt2.tiktoken); python3 with tokenizers.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-${TMPDIR:-/tmp}/bd3-tokenizer-bench}
mkdir -p "$WORK"

if [ -n "${BENCH_CORPUS:-}" ]; then
    cp "$BENCH_CORPUS" "$WORK/corpus.txt"
elif [ ! -s "$WORK/corpus.txt" ]; then
    command -v diatheke >/dev/null || { echo "install diatheke and sword-text-web (apt-get install diatheke sword-text-web)" >&2; exit 1; }
    docs=$(ls -d /usr/share/doc/python3*/html/_sources 2>/dev/null | head -1)
    [ -n "$docs" ] || { echo "install python3-doc (apt-get install python3-doc)" >&2; exit 1; }
    diatheke -b engWEB2015eb -f plain -k "Genesis 1:1-Revelation 22:21" > "$WORK/web.txt"
    { cat "$WORK/web.txt"; find "$docs" -name '*.txt' | LC_ALL=C sort | xargs cat; } > "$WORK/corpus.txt"
fi
if [ ! -s "$WORK/gpt2.tiktoken" ]; then
    pip download --no-deps --no-binary :all: openai-whisper -d "$WORK/pip" >&2
    tar -xzf "$WORK"/pip/openai_whisper-*.tar.gz -C "$WORK/pip"
    cp "$WORK"/pip/openai_whisper-*/whisper/assets/gpt2.tiktoken "$WORK/gpt2.tiktoken"
fi

(cd "$ROOT" && swift build -c release >&2)
TOK="$ROOT/.build/release/tokenize"
"$TOK" import --tiktoken "$WORK/gpt2.tiktoken" -o "$WORK/gpt2.json" 2>/dev/null
python3 "$ROOT/bench/tokenizer/bench.py" --tokenize "$TOK" --work "$WORK" "$@"
