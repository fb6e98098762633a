#!/usr/bin/env python3
"""Diffusion In Diffusion against stage 1 at equal entropy (`make did-frontier`, pipelines/did.mk).

Reads, for every model M, seed S, nucleus P, the per-sample `score gen` JSON of
  M/front/sS/draft-pP.{gen,judge}.json                      stage 1
  M/front/sS/refined-POL-G-BN-pP.{gen,judge}.json            DiD: remask POL γ=G, refine with block N
(.gen = the AR scorer, .judge = the n-gram judge of pipelines/scorers/ngram.py) and writes
  OUT/did-frontier.md    the tables
  OUT/did-frontier.png   Gen PPL vs token entropy, stage 1 and each DiD variant over the nucleus sweep

Statistics (numpy; every number comes from the JSON files):
  mean [95% CI]        percentile bootstrap over samples (seeds pooled; resampled within each seed)
  DiD / stage 1, same p    paired: a refined sample and its draft share (seed, id); the ratio of mean
                           Gen PPLs over the same resampled pairs
  DiD / stage 1, equal H   stage 1's log Gen PPL interpolated linearly in mean entropy between the
                           nucleus points that bracket the DiD cell's mean entropy (n/a outside the
                           sweep's range); the bootstrap resamples every cell independently
An interval that contains 1 means the data do not tell the two apart.
"""
import argparse, json, math, os, re, sys

import numpy as np


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


class Cell:
    """Per-sample arrays of one cell, seeds pooled; `strata` = seed index of each sample."""

    def __init__(self, files):
        rows = []
        for s, (gen, judge) in enumerate(files):
            g, j = load(gen), load(judge)
            if g is None:
                continue
            jr = {r["id"]: r for r in (j or {}).get("per_sample", [])}
            for r in g.get("per_sample", []):
                if r.get("ppl") is None:
                    continue
                q = jr.get(r["id"], {})
                rows.append((s, r["id"], r["ppl"], r["entropy"], r.get("nfe", 0),
                             nan(r.get("order_gain")), nan(q.get("ppl")), nan(q.get("order_gain")),
                             r.get("repeats", 0), max(0, r.get("words", 0) - 1)))
        self.n = len(rows)
        a = np.array(rows, dtype=float) if rows else np.zeros((0, 10))
        self.strata, self.ids = a[:, 0].astype(int), a[:, 1]
        self.ppl, self.ent, self.nfe, self.og, self.jppl, self.jog, self.rep, self.pairs = (a[:, k] for k in range(2, 10))
        self.key = {(int(s), int(i)): k for k, (s, i) in enumerate(zip(self.strata, self.ids))}

    def boot_index(self, rng, B):
        """B × n indices resampled with replacement within each seed."""
        out = np.empty((B, self.n), dtype=int)
        for s in np.unique(self.strata):
            idx = np.flatnonzero(self.strata == s)
            cols = np.flatnonzero(self.strata == s)
            out[:, cols] = idx[rng.integers(0, len(idx), size=(B, len(idx)))]
        return out


def nan(x):
    return float("nan") if x is None else float(x)


def ci(samples):
    s = samples[np.isfinite(samples)]
    if len(s) == 0:
        return (math.nan, math.nan)
    return tuple(np.percentile(s, [2.5, 97.5]))


def fmt(x, nd=1):
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{nd}f}"


def fci(m, lo_hi, nd=1):
    lo, hi = lo_hi
    return f"{fmt(m, nd)} [{fmt(lo, nd)}, {fmt(hi, nd)}]" if math.isfinite(m) else "n/a"


def nanmean(x):
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else math.nan


POLICY_ORDER = ("snapshot", "margin", "posthoc", "random")


def cell_order(v):
    pol, g, b = v
    return (pol != "snapshot", float(g), POLICY_ORDER.index(pol) if pol in POLICY_ORDER else len(POLICY_ORDER), pol,
            math.inf if b == "L" else int(b))


def interp_log(h, hs, lp):
    """log PPL of the stage-1 curve (points hs, lp) at entropy h; NaN outside its range."""
    order = np.argsort(hs)
    hs, lp = np.asarray(hs)[order], np.asarray(lp)[order]
    if len(hs) < 2 or not (hs[0] <= h <= hs[-1]):
        return math.nan
    return float(np.interp(h, hs, lp))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k in ("dir", "out", "models", "seeds", "nuclei"):
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--cells", required=True, help="DiD cells POLICY-GAMMA-B<block>, e.g. snapshot-0.25-BL")
    ap.add_argument("--train-flags", default="", help="'model=train flags;...': the training mix of each model")
    ap.add_argument("--stage1-nuclei", default=None, help="nuclei of the stage-1 curve (default: --nuclei)")
    ap.add_argument("--length", type=int, required=True)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--scale", default="")
    a = ap.parse_args()
    D, L, B = a.dir, a.length, a.bootstrap
    seeds, nuclei = a.seeds.split(), a.nuclei.split()
    s1_nuclei = sorted(set((a.stage1_nuclei or a.nuclei).split()) | set(nuclei), key=float)
    bad = [c for c in a.cells.split() if not re.fullmatch(r"[a-z]+-[0-9.]+-B([0-9]+|L)", c)]
    if bad:
        print(f"frontier.py: --cells: {' '.join(bad)}: expected POLICY-GAMMA-B<block>, e.g. snapshot-0.25-BL", file=sys.stderr)
        sys.exit(64)
    variants = sorted({tuple(c.rsplit("-B", 1)[0].split("-", 1)) + (c.rsplit("-B", 1)[1],) for c in a.cells.split()},
                      key=cell_order)
    flags = dict(map(str.strip, x.split("=", 1)) for x in a.train_flags.split(";") if "=" in x)
    bname = lambda b: f"L={L}" if b == "L" else b
    rng = np.random.default_rng(12345)
    lines = []
    w = lines.append
    w("# Diffusion In Diffusion vs stage 1 at equal entropy (generated by `make did-frontier`)\n")
    w(f"Scale: `{a.scale}`.\n")
    w("Gen PPL = mean per-sample PPL under the AR scorer; judge = the n-gram word model of "
      "`pipelines/scorers/ngram.py` fitted on a held-out corpus; order gain = PPL of the sample's words "
      "shuffled ÷ in order (real text ≫ 1, word salad ≈ 1); H = mean unigram token entropy (nats); "
      "[a, b] = 95% bootstrap interval over samples (seeds pooled, resampled within seed). Ratios < 1 "
      f"favour DiD; an interval containing 1 does not separate the two. {B} bootstrap draws.\n")
    real = Cell([(os.path.join(D, "test-docs.gen.json"), os.path.join(D, "test-docs.judge.json"))])
    if real.n:
        w(f"Real text (test split, {real.n} rows): Gen PPL {fmt(real.ppl.mean())}, H {fmt(real.ent.mean(), 2)}, "
          f"order gain {fmt(nanmean(real.og), 2)} (AR) / {fmt(nanmean(real.jog), 2)} (judge).\n")
    figs, summary = [], {}
    for m in a.models.split():
        path = lambda s, name, ext: os.path.join(D, m, "front", f"s{s}", f"{name}.{ext}.json")
        cell = lambda name: Cell([(path(s, name, "gen"), path(s, name, "judge")) for s in seeds])
        st = {p: cell(f"draft-p{p}") for p in s1_nuclei}
        if not any(c.n for c in st.values()):
            continue
        # bootstrap replicates of stage 1's mean entropy and log PPL per nucleus (for equal-H ratios)
        st_boot = {}
        for p, c in st.items():
            if c.n:
                ix = c.boot_index(rng, B)
                st_boot[p] = (c.ent[ix].mean(1), np.log(c.ppl[ix].mean(1)))
        w(f"## Model `{m}`\n")
        w("### Stage 1 (BD3, L' = 4) over the nucleus sweep\n")
        w("| p | samples | Gen PPL [95%] | H | order gain (AR) | judge PPL | order gain (judge) | word repeats | NFE |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        curve = []
        for p in s1_nuclei:
            c = st[p]
            if not c.n:
                continue
            ix = c.boot_index(rng, B)
            rep = c.rep.sum() / max(1, c.pairs.sum()) * 100
            w(f"| {p} | {c.n} | {fci(c.ppl.mean(), ci(c.ppl[ix].mean(1)))} | {fmt(c.ent.mean(), 2)} | "
              f"{fmt(nanmean(c.og), 2)} | {fmt(nanmean(c.jppl))} | {fmt(nanmean(c.jog), 2)} | {fmt(rep, 2)} % | {fmt(c.nfe.mean(), 0)} |")
            curve.append((c.ent.mean(), c.ppl.mean(), p))
        w("")
        w("### DiD variants\n")
        w("Paired ratio: DiD ÷ its own stage-1 drafts (same seed, ids, nucleus). Equal-H ratio: DiD ÷ stage 1 "
          "interpolated at the DiD cell's entropy. NFE: mean forwards per sample, both stages "
          "(B = 4 refines are the equal-NFE baseline: stage 1 given the same extra forwards).\n")
        w("| variant | p | samples | Gen PPL [95%] | H | NFE | ÷ stage 1, same p [95%] | ÷ stage 1, equal H [95%] | judge ÷ stage 1, same p [95%] | order gain AR / judge |")
        w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        series = []
        for (pol, g, b) in variants:
            pts = []
            for p in nuclei:
                c, s1 = cell(f"refined-{pol}-{g}-B{b}-p{p}"), st[p]
                if not c.n or not s1.n:
                    continue
                ix = c.boot_index(rng, B)
                # pairs present in both
                pk = [(k, s1.key[key]) for key, k in c.key.items() if key in s1.key]
                pa, pb = np.array([x for x, _ in pk]), np.array([y for _, y in pk])
                pix = rng.integers(0, len(pk), size=(B, len(pk)))
                same = c.ppl[pa].mean() / s1.ppl[pb].mean()
                same_b = c.ppl[pa][pix].mean(1) / s1.ppl[pb][pix].mean(1)
                jsame, jsame_b = math.nan, np.array([math.nan])
                if np.isfinite(c.jppl[pa]).all() and np.isfinite(s1.jppl[pb]).all() and len(pk):
                    jsame = c.jppl[pa].mean() / s1.jppl[pb].mean()
                    jsame_b = c.jppl[pa][pix].mean(1) / s1.jppl[pb][pix].mean(1)
                hs = [st[q].ent.mean() for q in s1_nuclei if st[q].n]
                lp = [math.log(st[q].ppl.mean()) for q in s1_nuclei if st[q].n]
                eq = c.ppl.mean() / math.exp(interp_log(c.ent.mean(), hs, lp)) if lp else math.nan
                cb_ent, cb_lp = c.ent[ix].mean(1), np.log(c.ppl[ix].mean(1))
                qs = [q for q in s1_nuclei if q in st_boot]
                eq_b = np.array([math.exp(cb_lp[r] - interp_log(cb_ent[r], [st_boot[q][0][r] for q in qs],
                                                                [st_boot[q][1][r] for q in qs])) for r in range(B)])
                summary.setdefault((pol, g, b, p), {})[m] = (s1.ppl[pb], c.ppl[pa], pix, same, same_b, eq, eq_b, jsame, jsame_b)
                w(f"| {pol} γ={g} B={bname(b)} | {p} | {c.n} | {fci(c.ppl.mean(), ci(c.ppl[ix].mean(1)))} | {fmt(c.ent.mean(), 2)} | "
                  f"{fmt(c.nfe.mean(), 0)} | {fci(same, ci(same_b), 2)} | {fci(eq, ci(eq_b), 2)} | {fci(jsame, ci(jsame_b), 2)} | "
                  f"{fmt(nanmean(c.og), 2)} / {fmt(nanmean(c.jog), 2)} |")
                pts.append((c.ent.mean(), c.ppl.mean(), p))
            if pts:
                series.append((f"{pol} γ={g} B={bname(b)}", pts))
        w("")
        figs.append((m, curve, series))
    # Seed 003's Table 3: the training mix of each model, stage 1 and stage 2 side by side, per variant that
    # more than one model ran
    shared = [(k, v) for k, v in summary.items() if len(v) > 1]
    if shared:
        w("## Training mix: stage 1 and stage 2 per model (seed 003, Table 3)\n")
        w("The same DiD variant on every model that ran it; stage 1 = that model's own drafts at the same nucleus "
          "(the drafts the variant refined, paired by seed and id; intervals: the paired bootstrap). Training flags: the `train` flags of each fine-tune (`pipelines/did.mk`).\n")
        w("| variant | p | model | training | samples | stage 1 Gen PPL [95%] | stage 2 Gen PPL [95%] | ÷ stage 1, same p [95%] | ÷ stage 1, equal H [95%] | judge ÷ stage 1, same p [95%] |")
        w("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
        for (pol, g, b, p), per in shared:
            for m in a.models.split():
                if m not in per:
                    continue
                s1p, cp, pix, same, same_b, eq, eq_b, jsame, jsame_b = per[m]
                w(f"| {pol} γ={g} B={bname(b)} | {p} | {m} | `{flags.get(m, '') or 'n/a'}` | {len(cp)} | "
                  f"{fci(s1p.mean(), ci(s1p[pix].mean(1)))} | {fci(cp.mean(), ci(cp[pix].mean(1)))} | {fci(same, ci(same_b), 2)} | "
                  f"{fci(eq, ci(eq_b), 2)} | {fci(jsame, ci(jsame_b), 2)} |")
        w("")
    w("Files: per-sample JSON under the run directory (`<model>/front/s<seed>/*.gen.json`, `*.judge.json`).")
    os.makedirs(a.out, exist_ok=True)
    out_md = os.path.join(a.out, "did-frontier.md")
    with open(out_md + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(out_md + ".tmp", out_md)
    if figs:
        plot(os.path.join(a.out, "did-frontier.png"), figs, real)


def plot(out, figs, real):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(figs), figsize=(6.5 * len(figs), 4.8), squeeze=False)
    for ax, (m, curve, series) in zip(axes[0], figs):
        if curve:
            h, p, lab = zip(*sorted(curve))
            ax.plot(h, p, "k-o", lw=2, label="stage 1 (nucleus sweep)")
            for x, y, t in curve:
                ax.annotate(f"p={t}", (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
        for name, pts in series:
            h, p, _ = zip(*sorted(pts))
            ax.plot(h, p, "-.", marker=".", lw=1, label=name)
        if real.n:
            ax.axvline(real.ent.mean(), color="grey", ls=":", lw=1, label="real text entropy")
        ax.set_yscale("log")
        ax.set_xlabel("mean token entropy (nats)")
        ax.set_ylabel("Gen PPL (AR scorer)")
        ax.set_title(f"model {m}: lower-right is better")
        ax.legend(fontsize=6)
    fig.tight_layout()
    tmp = out + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
