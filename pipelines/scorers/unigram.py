#!/usr/bin/env python3
"""A tiny real scorer for `score gen --scorer-cmd` (protocol: docs/scorer-protocol.md).

Add-one-smoothed byte-unigram model fitted on a text file:
    p(b) = (count(b) + 1) / (N + 256)      for every byte value b, N = bytes in the fit file
A request's text is UTF-8 encoded; every byte is one token:
    nll = sum over the text's bytes of -ln p(b),   tokens = number of bytes.
Deterministic, no dependencies; useful to test pipelines and as a floor for real scorers.

    score gen --scorer-cmd 'python3 pipelines/scorers/unigram.py --fit data/sample.txt' -t tok.json -i samples.tok
"""
import argparse
import json
import math
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", required=True, help="text file the byte frequencies are counted on")
    args = ap.parse_args()
    with open(args.fit, "rb") as f:
        data = f.read()
    counts = [0] * 256
    for b in data:
        counts[b] += 1
    denom = len(data) + 256
    neg_logp = [-math.log((c + 1) / denom) for c in counts]
    out = sys.stdout
    # readline (not iteration) so each answer goes out as soon as its request arrived.
    for raw in iter(sys.stdin.buffer.readline, b""):
        req = json.loads(raw)
        text = req["text"].encode("utf-8")
        nll = math.fsum(neg_logp[b] for b in text)
        out.write(json.dumps({"id": req["id"], "nll": nll, "tokens": len(text)}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
