#!/usr/bin/env python3
"""NLL vs step curves from `train --metrics` JSON lines (as Fig. 1 of the BD3-LM reproduction report).

    curves.py --out fig.png [--title T] [--val-only] [--offset LABEL=STEPS ...] LABEL=metrics.jsonl ...

Left panel: training loss per logged step (moving average over 10 points; for bd3 it is the NELBO at the
training interval, for AR the NLL). Right panel: validation NLL (EMA weights, unweighted NELBO) per validation.
`--offset LABEL=N` shifts a run's steps by N (a fine-tune drawn after its pretrain). A resumed run may repeat
steps in its metrics file; the last line for a step wins.
"""
import argparse, json, math, os, sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

from atomic import save_figure


def read(path):
    train, val = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if "val_nll" in r and r["val_nll"] is not None:
                val[r["step"]] = r["val_nll"]
            elif "loss" in r and r["loss"] is not None:
                train[r["step"]] = r["loss"]
    return sorted(train.items()), sorted(val.items())


def smooth(ys, k=10):
    out, acc = [], []
    for y in ys:
        acc.append(y)
        if len(acc) > k:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    ap.add_argument("--val-only", action="store_true")
    ap.add_argument("--offset", action="append", default=[])
    ap.add_argument("runs", nargs="+", help="LABEL=metrics.jsonl")
    a = ap.parse_args()
    offsets = {}
    for o in a.offset:
        label, _, n = o.rpartition("=")
        offsets[label] = int(n)
    runs = []
    for spec in a.runs:
        label, _, path = spec.rpartition("=")
        if not label or not os.path.exists(path):
            sys.exit(f"curves.py: expected LABEL=metrics.jsonl with an existing file, got {spec!r}")
        runs.append((label, path))

    panels = 1 if a.val_only else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    axes = axes[0]
    for label, path in runs:
        train, val = read(path)
        off = offsets.get(label, 0)
        if not a.val_only and train:
            ax = axes[0]
            xs = [s + off for s, _ in train]
            ys = [y for _, y in train if math.isfinite(y)]
            ax.plot(xs[:len(ys)], smooth(ys), label=label, lw=1.2)
        if val:
            ax = axes[-1]
            ax.plot([s + off for s, _ in val], [y for _, y in val], marker="o", ms=3, label=label, lw=1.2)
    if not a.val_only:
        axes[0].set_title("training loss (NELBO / NLL, moving avg 10)")
        axes[0].set_xlabel("step"); axes[0].set_ylabel("nats / token")
        axes[0].legend(fontsize=8)
    axes[-1].set_title("validation NLL (EMA weights)")
    axes[-1].set_xlabel("step"); axes[-1].set_ylabel("nats / token")
    axes[-1].legend(fontsize=8)
    if a.title:
        fig.suptitle(a.title)
    fig.tight_layout()
    save_figure(fig, a.out)


if __name__ == "__main__":
    main()
