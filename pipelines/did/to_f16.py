#!/usr/bin/env python3
"""to_f16.py IN OUT: copy a safetensors checkpoint with every F32 tensor of more than one element stored
as F16 (halves the size; our loader converts F16 back to Float). Scalars (sampling_eps_min/max), the rotary
inv_freq buffer (checked exactly by the loader) and non-float tensors are kept as they are; the __metadata__ is copied unchanged. Written atomically."""
import os, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

src, dst = sys.argv[1], sys.argv[2]
tensors = {}
with safe_open(src, framework="numpy") as f:
    meta = f.metadata() or {}
    for k in f.keys():
        t = f.get_tensor(k)
        if t.dtype == np.float32 and t.size > 1 and not k.endswith("inv_freq"):
            if np.abs(t).max() > 65504:
                sys.exit(f"error: {k} does not fit F16")
            t = t.astype(np.float16)
        tensors[k] = t
os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
tmp = dst + ".tmp"
save_file(tensors, tmp, metadata=meta)
os.replace(tmp, dst)
print(f"{src} -> {dst}: {os.path.getsize(src)} -> {os.path.getsize(dst)} bytes")
