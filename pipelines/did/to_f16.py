#!/usr/bin/env python3
"""to_f16.py [--dtype f16|bf16] IN OUT: copy a safetensors checkpoint with every F32 tensor of more than one
element stored as F16 (default) or BF16 (halves the size; our loader converts both back to Float). Scalars
(sampling_eps_min/max), the rotary inv_freq buffer (checked exactly by the loader) and non-float tensors are
kept as they are; the __metadata__ is copied except `weights_crc32c` (the checksum of the F32 tensors, which no
longer describes the converted ones; the loader checks it only when present). Written atomically.

BF16 (8 exponent bits: no overflow, 3 significant digits) rounds to nearest even. numpy has no bfloat16, so the
bits are saved as U16 by the safetensors library and the header's dtype of those tensors is then renamed BF16
(the data offsets in the header are relative to the data section, so the data bytes are copied unchanged)."""
import argparse, json, os, struct, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--dtype", choices=["f16", "bf16"], default="f16")
ap.add_argument("src")
ap.add_argument("dst")
a = ap.parse_args()
src, dst = a.src, a.dst


def to_bf16_bits(t):
    u = np.ascontiguousarray(t, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


tensors, renamed = {}, set()
with safe_open(src, framework="numpy") as f:
    meta = dict(f.metadata() or {})
    meta.pop("weights_crc32c", None)   # it describes the F32 tensors; the converted file has none
    for k in f.keys():
        t = f.get_tensor(k)
        if t.dtype == np.float32 and t.size > 1 and not k.endswith("inv_freq"):
            if not np.isfinite(t).all():
                sys.exit(f"error: {k} has non-finite values")
            if a.dtype == "f16":
                if np.abs(t).max() > 65504:
                    sys.exit(f"error: {k} does not fit F16 (use --dtype bf16)")
                t = t.astype(np.float16)
            else:
                t = to_bf16_bits(t)
                renamed.add(k)
        elif t.dtype == np.uint16:
            sys.exit(f"error: {k} is already U16; refusing to guess whether it is BF16")
        tensors[k] = t
os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
tmp = dst + ".tmp"
save_file(tensors, tmp, metadata=meta)
# Rewrite the header: the BF16 renames, and every key sorted — the library writes the metadata in hash order,
# so without this the same checkpoint converts to different bytes on every run.
with open(tmp, "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    data = f.read()
for k in renamed:
    header[k]["dtype"] = "BF16"
if "__metadata__" in header:
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
h = json.dumps(dict(sorted(header.items())), separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)                  # keep the data section 8-byte aligned
with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + data)
os.replace(tmp, dst)
print(f"{src} -> {dst} ({a.dtype}): {os.path.getsize(src)} -> {os.path.getsize(dst)} bytes")
