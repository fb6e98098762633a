#!/usr/bin/env python3
"""check_fingerprint.py "$(tokenize stats docs.tok)" CKPT... : every checkpoint's tokenizer_fingerprint
metadata must equal the fingerprint of the tokenizer that encoded docs.tok (exit 1 otherwise)."""
import json, re, struct, sys

m = re.search(r"tokenizer ([0-9a-f]+)", sys.argv[1])
if not m:
    sys.exit(f"error: no tokenizer fingerprint in: {sys.argv[1]!r}")
want = int(m.group(1), 16)
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(n)).get("__metadata__", {})
    got = int(meta.get("tokenizer_fingerprint", "0"), 16)
    if got != want:
        sys.exit(f"error: {path} was trained with tokenizer {got:016x}, the demo's is {want:016x}; "
                 f"retrain it (data/README.md) or run with DEMO_SHIPPED= to train one here")
    print(f"{path}: tokenizer {got:016x} matches")
