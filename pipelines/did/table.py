#!/usr/bin/env python3
"""Markdown table from `score gen` JSON files: table.py "label=path.json" ..."""
import json, sys

print("| generation | Gen PPL | NFE | entropy | samples |")
print("|---|---:|---:|---:|---:|")
for arg in sys.argv[1:]:
    label, path = arg.rsplit("=", 1)
    with open(path) as f:
        r = json.load(f)
    ppl = "n/a" if r.get("gen_ppl") is None else f"{r['gen_ppl']:.1f}"
    nfe = "" if not r.get("nfe") else f"{r['nfe']:.0f}"
    print(f"| {label} | {ppl} | {nfe} | {r['entropy']:.2f} | {r['samples']} |")
