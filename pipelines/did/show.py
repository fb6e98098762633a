#!/usr/bin/env python3
"""Print the first N decoded samples of a `tokenize decode --jsonl` file, each cut to C characters."""
import json, sys

path, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path) as f:
    for i, line in enumerate(f):
        if i >= n:
            break
        text = json.loads(line)["text"].replace("<|endoftext|>", "⏎")
        print(f"[{i}] {text[:c]}{'…' if len(text) > c else ''}\n")
