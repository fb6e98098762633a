#!/usr/bin/env python3
"""Print `--clip a,b` for `score ppl` with the interval U[a,b] a bd3 checkpoint was trained on (metadata
sampling_eps_min/max, e.g. found by --clip-search), so the score JSON has its Var. NELBO at the training
interval (tables.py looks it up by that interval); print nothing for AR, MDLM and SEDD.

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
    print(f"--clip {lo},{hi}")


if __name__ == "__main__":
    main()
