#!/usr/bin/env python3
"""A word n-gram judge for `score gen --scorer-cmd` (protocol: docs/scorer-protocol.md).

Interpolated Kneser-Ney word model (Chen & Goodman 1998, one discount D per order) fitted on a
corpus the generator was NOT trained on, so its verdict on word order is independent of the
generator's and the AR scorer's training data.

  words      lower-cased `\\w+` runs and single punctuation characters; a special-token name
             (<|endoftext|>) is a document boundary
  vocabulary the fit corpus' words seen at least --min-count times, plus <unk>
  order n    P(w | previous n-1 words) interpolated down to the continuation unigram, and that with
             the uniform distribution over the vocabulary, so every word has a nonzero probability
  a request  nll = sum of -ln P over its words (each document's first word has the context <s>),
             tokens = number of words; no end-of-sentence term (samples stop anywhere)

    score gen --scorer-cmd 'python3 pipelines/scorers/ngram.py --fit data/heldout-narrative.jsonl' \\
              -t tokenizer.json -i samples.tok

--fit takes JSON Lines ({"text": ...} per line) or plain text (one document per file). Pure Python,
deterministic; fitting ~300 KB of text takes about a second.
"""
import argparse
import json
import math
import re
import sys
from collections import defaultdict

WORD = re.compile(r"\w+|[^\w\s]")
SPECIAL = re.compile(r"<\|[^|>]*\|>|\[MASK\]")
BOS, UNK = "<s>", "<unk>"


def words(text):
    """Documents of `text` (split at special-token names) as lists of lower-cased words."""
    return [WORD.findall(piece.lower()) for piece in SPECIAL.split(text)]


def read_docs(path):
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            return [json.loads(line)["text"] for line in f if line.strip()]
        return [f.read()]


class KneserNey:
    def __init__(self, docs, order=3, discount=0.75, min_count=1):
        assert order >= 1 and 0 < discount < 1
        self.n, self.d = order, discount
        freq = defaultdict(int)
        for doc in docs:
            for ws in words(doc):
                for w in ws:
                    freq[w] += 1
        self.vocab = {w for w, c in freq.items() if c >= min_count} | {UNK}
        # counts[k][context][w]: k = len(context). The highest order uses raw counts, lower orders
        # continuation counts (number of distinct words seen before context+w).
        self.counts = [defaultdict(lambda: defaultdict(int)) for _ in range(order)]
        seen = set()
        for doc in docs:
            for ws in words(doc):
                seq = [BOS] * (order - 1) + [w if w in self.vocab else UNK for w in ws]
                for i in range(order - 1, len(seq)):
                    gram = tuple(seq[i - order + 1:i + 1])
                    self.counts[order - 1][gram[:-1]][gram[-1]] += 1
                    # continuation counts of the lower orders: each distinct (left word, rest) once
                    for k in range(order - 1):
                        tail = gram[order - 1 - k - 1:]          # k+2 words: left word + context(k) + w
                        if tail in seen:
                            continue
                        seen.add(tail)
                        self.counts[k][tail[1:-1]][tail[-1]] += 1
        # per context: total and number of distinct continuations
        self.tot = [{c: sum(ws.values()) for c, ws in level.items()} for level in self.counts]
        self.types = [{c: len(ws) for c, ws in level.items()} for level in self.counts]
        self.cache = {}

    def prob(self, context, w):
        """P(w | context), context a tuple of the n-1 previous words (BOS-padded)."""
        key = (context, w)
        p = self.cache.get(key)
        if p is not None:
            return p
        p = 1.0 / len(self.vocab)
        for k in range(self.n):
            ctx = context[len(context) - k:] if k else ()
            tot = self.tot[k].get(ctx)
            if not tot:
                continue              # unseen context: keep the lower-order estimate
            c = self.counts[k][ctx].get(w, 0)
            p = max(c - self.d, 0) / tot + self.d * self.types[k][ctx] / tot * p
        if len(self.cache) < 1 << 20:
            self.cache[key] = p
        return p

    def nll(self, text):
        total, count = 0.0, 0
        for ws in words(text):
            ctx = (BOS,) * (self.n - 1)
            for w in ws:
                w = w if w in self.vocab else UNK
                total -= math.log(self.prob(ctx, w))
                count += 1
                ctx = (ctx + (w,))[1:] if self.n > 1 else ()
        return total, count


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", required=True, nargs="+", help="corpus files (.jsonl with a text field, or plain text)")
    ap.add_argument("--order", type=int, default=3, help="n of the n-gram model (default 3)")
    ap.add_argument("--discount", type=float, default=0.75, help="Kneser-Ney discount D in (0, 1) (default 0.75)")
    ap.add_argument("--min-count", type=int, default=1, help="words seen fewer times in the fit corpus are <unk>")
    args = ap.parse_args()
    if args.order < 1 or not 0 < args.discount < 1 or args.min_count < 1:
        ap.error("need --order >= 1, 0 < --discount < 1, --min-count >= 1")
    docs = []
    for path in args.fit:
        docs += read_docs(path)
    model = KneserNey(docs, args.order, args.discount, args.min_count)
    print(f"ngram: order {args.order}, vocabulary {len(model.vocab)} words from {len(docs)} documents",
          file=sys.stderr)
    out = sys.stdout
    # readline (not iteration) so each answer goes out as soon as its request arrived.
    for raw in iter(sys.stdin.buffer.readline, b""):
        req = json.loads(raw)
        nll, n = model.nll(req["text"])
        out.write(json.dumps({"id": req["id"], "nll": nll, "tokens": n}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
