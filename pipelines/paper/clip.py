#!/usr/bin/env python3
"""Print `--clip a,b` for `score ppl` when a bd3 checkpoint was trained on a clipped interval U[a,b]
(metadata sampling_eps_min/max, e.g. found by --clip-search), so its Var. NELBO at the training interval is
reported next to the unclipped one; print nothing for U[1e-3, 1], AR, MDLM and SEDD checkpoints.

    clip.py runs/ft4-cs/best.safetensors
"""
import json, struct, sys


def metadata(path):
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            sys.exit(f"clip.py: {path}: truncated safetensors header")
        n = struct.unpack("<Q", head)[0]
        raw = f.read(n)
        if len(raw) != n:
            sys.exit(f"clip.py: {path}: truncated safetensors header")
    return json.loads(raw).get("__metadata__", {})


def main():
    m = metadata(sys.argv[1])
    if m.get("algo") != "bd3":
        return
    lo, hi = m.get("sampling_eps_min"), m.get("sampling_eps_max")
    if lo is None or hi is None:
        return
    if abs(float(lo) - 1e-3) < 1e-9 and abs(float(hi) - 1.0) < 1e-9:
        return
    print(f"--clip {lo},{hi}")


if __name__ == "__main__":
    main()
