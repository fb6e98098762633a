#!/usr/bin/env python3
"""Var. NELBO of every clip-search grid interval (the last validation of each run's --metrics JSONL, the
quantity --clip-search minimises) as a log-scale bar chart, one series per run.

    varplot.py --out fig.png LABEL=metrics.jsonl ...
"""
import argparse, json, os, sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

from atomic import save_figure


def last_grid(path):
    grid, step, clip = None, None, None
    for line in open(path):
        if '"var_nelbo"' not in line:
            continue
        r = json.loads(line)
        if isinstance(r.get("var_nelbo"), dict):
            grid, step, clip = r["var_nelbo"], r["step"], r.get("clip")
    return grid, step, clip


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="Var. NELBO per clip interval (validation, last clip search)")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    series = []
    for spec in a.runs:
        label, _, path = spec.rpartition("=")
        grid, step, clip = last_grid(path)
        if grid is None:
            sys.exit(f"varplot.py: no clip-search grid in {path}")
        series.append((label, grid, step, clip))
    keys = sorted({k for _, g, _, _ in series for k in g}, key=lambda k: tuple(float(x) for x in k.split("-")))
    fig, ax = plt.subplots(figsize=(13, 4.5))
    w = 0.8 / len(series)
    for i, (label, g, step, clip) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * w for j in range(len(keys))]
        ys = [g.get(k, float("nan")) for k in keys]
        chosen = f" → U[{clip[0]:.2g}, {clip[1]:.2g}]" if clip else ""
        ax.bar(xs, ys, width=w, label=f"{label} (step {step}){chosen}")
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"[{k.replace('-', ',')}]" for k in keys], rotation=70, fontsize=7)
    ax.set_ylabel("Var. NELBO (log)")
    ax.set_title(a.title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, a.out)


if __name__ == "__main__":
    main()
