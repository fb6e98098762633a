#!/usr/bin/env python3
"""Markdown table from `score gen` JSON files: table.py "label=path.json" ...
Order gain = PPL of each sample's words shuffled ÷ in order (score gen -t; real text ≫ 1, word salad ≈ 1)."""
import json, sys


def f(x, nd):
    return "n/a" if x is None else f"{x:.{nd}f}"


print("| generation | Gen PPL | NFE | entropy | order gain | word repeats | samples |")
print("|---|---:|---:|---:|---:|---:|---:|")
for arg in sys.argv[1:]:
    label, path = arg.rsplit("=", 1)
    with open(path) as fh:
        r = json.load(fh)
    nfe = "" if not r.get("nfe") else f"{r['nfe']:.0f}"
    rep = "n/a" if r.get("repeat_rate") is None else f"{100 * r['repeat_rate']:.1f} %"
    print(f"| {label} | {f(r.get('gen_ppl'), 1)} | {nfe} | {r['entropy']:.2f} | {f(r.get('order_gain'), 2)} | {rep} | {r['samples']} |")
