"""Default training mix, held-out sets and the tokenizer-benchmark text, from the per-source corpora.

usage: mix.py train OUT.jsonl IN.jsonl...                 # every document not held out
       mix.py heldout-{news,encyclopedic,narrative} OUT.jsonl IN.jsonl...
       mix.py bench OUT.txt IN.jsonl...                   # >= BENCH_BYTES of plain text

Which set a document belongs to depends only on its "source" id, never on argument order:
  news          all ABC (Australian) news articles, abc/*
  encyclopedic  Wikipedia articles whose title hashes to 0 mod 4 (about a quarter)
  narrative     Shakespeare's The Tempest and Julius Caesar; the books of Ruth, Jonah and Tobit
  train         everything else given (WEB, Shakespeare, BBC, Wikipedia by default)
The training mix is ordered by a hash of the source id, so genres interleave (any contiguous
slice, e.g. a validation split, is a fair sample) and the order is the same on every machine.
"""
import hashlib
import os
import sys
import tempfile

from common import read_jsonl, write_jsonl

HELDOUT_WORKS = {"tempest", "julius_caesar"}
HELDOUT_BOOKS = {"Ruth", "Jonah", "Tobit"}
BENCH_BYTES = 10 * 1024 * 1024


def _hash(s):
    return int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:8], "big")


def heldout(source):
    """The held-out set a document belongs to, or None for training."""
    kind, _, rest = source.partition("/")
    if kind == "abc":
        return "news"
    if kind == "wikipedia" and _hash(rest) % 4 == 0:
        return "encyclopedic"
    if kind == "shakespeare" and rest.split("/")[0] in HELDOUT_WORKS:
        return "narrative"
    if kind == "web" and rest.rsplit(" ", 1)[0] in HELDOUT_BOOKS:
        return "narrative"
    return None


def documents(paths):
    for path in paths:
        for doc in read_jsonl(path):
            yield doc["source"], doc["text"]


def bench(out, paths):
    """Whole documents of the training mix, blank-line separated, until BENCH_BYTES is reached."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out)), prefix=".tmp-")
    size = 0
    with os.fdopen(fd, "wb") as f:
        for _, text in documents(paths):
            if size >= BENCH_BYTES:
                break
            piece = (text + "\n\n").encode("utf-8")
            f.write(piece)
            size += len(piece)
    if size < BENCH_BYTES:
        os.unlink(tmp)
        sys.exit(f"error: only {size} bytes of text for {out}; need {BENCH_BYTES}")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    print(f"{out}: {size} bytes", file=sys.stderr)


def main(role, out, paths):
    if role == "bench":
        return bench(out, paths)
    if role == "train":
        docs = sorted((d for d in documents(paths) if heldout(d[0]) is None), key=lambda d: _hash(d[0]))
    elif role.startswith("heldout-"):
        docs = [d for d in documents(paths) if heldout(d[0]) == role[len("heldout-"):]]
    else:
        sys.exit(f"usage: mix.py train|heldout-news|heldout-encyclopedic|heldout-narrative|bench OUT IN...")
    write_jsonl(out, docs)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
