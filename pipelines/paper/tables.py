#!/usr/bin/env python3
"""Markdown tables of the BD3-LM reproduction report (seed 000) from `score ppl` / `score gen` JSON.

    tables.py N -o results/paper-tableN.md [--scale TEXT] [--fig PNG] [--blocks "128 16 4"] KEY=FILE ...

KEY names the run as pipelines/paper.mk does: ar, sedd, mdlm, l1, l1tuned, ft<L'>-<tag>, bgft<L'>-<tag>
(Table 5: RUN@SET; Tables 6-7: RUN.fixed / RUN.var with `score gen` JSON). Rows and columns follow the
report's Table N; the best value of each group is bold. The file is written atomically.
"""
import argparse, json, math, os, struct, sys

from atomic import save_text

FT_NAMES = {
    "cs": "clip search", "u01": "Linear U[0, 1]", "c4595": "Clipped U[0.45, 0.95]", "c3080": "Clipped U[0.3, 0.8]",
    "c0050": "Loglinear U[0, 0.5]", "c5010": "Loglinear U[0.5, 1]", "log": "Logarithmic", "sqrt": "Square root",
    "square": "Square", "cosine": "Cosine", "cosc3080": "Cosine U[0.3, 0.8]", "cosc0050": "Cosine U[0, 0.5]",
    "cosc5010": "Cosine U[0.5, 1]", "gauss50": "Gaussian (μ = 0.5)", "gauss60": "Gaussian (μ = 0.6)",
    "gauss70": "Gaussian (μ = 0.7)", "bg30": "B.G. (μ1 = 0.3, w1 = 0.6)", "bg10": "B.G. (μ1 = 0.1, w1 = 0.6)",
    "rwiddpm": "IDDPM", "rwedm": "EDM", "rwsig": "Sigmoid (k = 0)", "rwfm": "FM", "rwsimple": "Simple",
}


def fmt(x, digits=None):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if digits is not None:
        return f"{x:.{digits}f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def bold_min(cells, values):
    """Bold every cell whose value equals the minimum of `values` (None ignored)."""
    vs = [v for v in values if v is not None and math.isfinite(v)]
    if not vs:
        return cells
    m = min(vs)
    return [f"**{c}**" if v is not None and math.isfinite(v) and fmt(v) == fmt(m) else c for c, v in zip(cells, values)]


def ppl(d):
    return d.get("ppl") if d else None


def ppl_var_cells(ds):
    """PPL and Var. NELBO (training interval) cells of a group of runs, the best of each bold, diverged runs named."""
    pv = [ppl(d) for d in ds]
    vv = [interval_of(d)[1] for d in ds]
    return diverged(bold_min([fmt(v) for v in pv], pv), ds), bold_min([fmt(v) for v in vv], vv)


def own_ppl(d):
    """The NELBO under the model's own training schedule (the reference's evaluation; `score ppl` reports it as
    schedule_ppl when the schedule is not loglinear — for loglinear it is the PPL itself)."""
    if not d or "diverged" in d:
        return None
    return d.get("schedule_ppl", d.get("ppl"))


def diverged(cells, ds):
    """Cells of runs that stopped on a non-finite loss (score JSON {"diverged": train's diverged.json}) say so."""
    return [f"diverged (step {d['diverged']['step']})" if d and "diverged" in d else c for c, d in zip(cells, ds)]


def checkpoint_interval(json_path):
    """The interval U[a,b] a run was trained at, from its checkpoint's metadata (runs/<name>/best.safetensors
    next to scores/<name>.<kind>.json, as pipelines/paper.mk lays them out); None if unknown."""
    name = os.path.basename(json_path).split(".")[0]
    ck = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(json_path))), "runs", name, "best.safetensors")
    try:
        with open(ck, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            m = json.loads(f.read(n)).get("__metadata__", {})
        return float(m["sampling_eps_min"]), float(m["sampling_eps_max"])
    except (OSError, KeyError, ValueError, struct.error):
        return None


def interval_of(d):
    """(interval the model was trained at, its Var. NELBO on the test split); (None, None) for AR/SEDD.
    The training interval comes from the checkpoint; `score` was asked for its Var. NELBO (clip.py)."""
    if not d or not d.get("var_nelbo"):
        return None, None
    iv = d.get("_train_interval")
    if iv is not None:
        for e in d["var_nelbo"]:
            if abs(e["min"] - iv[0]) < 1e-6 and abs(e["max"] - iv[1]) < 1e-6:
                return (e["min"], e["max"]), e["var"]
    e = d["var_nelbo"][-1]
    return (e["min"], e["max"]), e["var"]


def var_full(d):
    if not d or not d.get("var_nelbo"):
        return None
    return d["var_nelbo"][0]["var"]


def show_interval(iv):
    if iv is None:
        return "—"
    a, b = iv
    a = 0 if a <= 1e-3 + 1e-9 else a
    return f"U[{a:g}, {b:g}]"


def table(header, rows):
    out = ["", "| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


OWN_NOTE = ("\nPPL: the NELBO under the loglinear schedule at t ~ U[1e-3, 1] for every model (in continuous time the NELBO "
            "does not depend on the schedule). PPL at own schedule: the NELBO under the model's training schedule at the "
            "same t range, as the reference evaluates — it omits masking rates below p(1e-3) (square root 0.032, "
            "Gaussian ≈ 0.2–0.3) and reads low. Var. NELBO: under the training schedule at its training interval.")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--scale", default="")
    ap.add_argument("--fig", action="append", default=[])
    ap.add_argument("--blocks", default="")
    ap.add_argument("--docs", default="", help="training corpus jsonl (Table 6: its document lengths)")
    ap.add_argument("--tokenizer", default="", help="tokenizer.json of the corpus (Table 6)")
    ap.add_argument("pairs", nargs="*")
    a = ap.parse_intermixed_args()
    R = {}
    for p in a.pairs:
        k, _, path = p.partition("=")
        with open(path) as f:
            R[k] = json.load(f)
        R[k]["_train_interval"] = checkpoint_interval(path)
    g = R.get
    lines = []
    n = a.n

    if n == 0:
        lines.append("Var. NELBO of every diffusion model at several evaluation intervals (same test split; the last "
                     "column is the interval the model was trained at; PPL is the unclipped NELBO).")
        ivs = []
        for d in R.values():
            for e in (d.get("var_nelbo") or []):
                iv = (round(e["min"], 4), round(e["max"], 4))
                if iv not in ivs:
                    ivs.append(iv)
        rows = []
        for k, d in R.items():
            if not d.get("var_nelbo"):
                continue
            by = {}
            for e in d["var_nelbo"]:
                by.setdefault((round(e["min"], 4), round(e["max"], 4)), e["var"])
            tiv, tv = interval_of(d)
            rows.append([k, fmt(ppl(d))] + [fmt(by.get(iv)) for iv in ivs] + [f"{fmt(tv)} at {show_interval(tiv)}"])
        lines.append(table(["run", "PPL"] + [show_interval(iv) for iv in ivs] + ["training interval"], rows))
    elif n == 1:
        lines.append("Table 1: test perplexities for single-token generation (exact NLL for all three).")
        rows = [("Autoregressive (AR)", g("ar")), ("BD3-LM (L' = 1)", g("l1")), ("BD3-LM (L' = 1) + tuned schedule U[1, 1]", g("l1tuned"))]
        vals = [ppl(d) for _, d in rows]
        cells = bold_min([fmt(v) for v in vals], vals)
        lines.append(table(["", "PPL (↓)"], [[name, c] for (name, _), c in zip(rows, cells)]))
    elif n == 2:
        lines.append("Table 2: effect of clipped noise schedules (clip search vs U[0, 1] during fine-tuning). "
                     "PPL is the unclipped NELBO (U[1e-3, 1]); Var. NELBO at the training interval.")
        blocks = sorted({int(k[2:].split("-")[0]) for k in R if k.startswith("ft")}, reverse=True)
        rows = []
        for b in blocks:
            group = [(g(f"ft{b}-cs"), True), (g(f"ft{b}-u01"), False)]
            pv = [ppl(d) for d, _ in group]
            vv = [interval_of(d)[1] for d, _ in group]
            pc = diverged(bold_min([fmt(v) for v in pv], pv), [d for d, _ in group])
            vc = bold_min([fmt(v) for v in vv], vv)
            for i, (d, searched) in enumerate(group):
                iv = interval_of(d)[0]
                label = show_interval(iv) + (" (searched)" if searched else "")
                rows.append([str(b) if i == 0 else "", label, pc[i], vc[i]])
        lines.append(table(["L'", "Clipping", "PPL (↓)", "Var. NELBO (↓)"], rows))
    elif n in (3, 4):
        lines.append(f"Table {n}: test perplexities.")
        rows = []
        entries = [("**Autoregressive**", None), ("Transformer", "ar"), ("**Diffusion**", None), ("SEDD", "sedd"),
                   ("MDLM", "mdlm"), ("**Block diffusion**", None), ("BD3-LM L' = 16", "ft16-cs"),
                   ("BD3-LM L' = 8", "ft8-cs"), ("BD3-LM L' = 4", "ft4-cs")]
        vals = [ppl(g(k)) for _, k in entries if k]
        best = min(v for v in vals if v is not None)
        for name, k in entries:
            if k is None:
                rows.append([name, ""])
            else:
                v = ppl(g(k))
                c = fmt(v)
                rows.append([name, f"**{c}**" if v is not None and fmt(v) == fmt(best) else c])
        lines.append(table(["Model", "PPL (↓)"], rows))
        lines.append("\nSEDD's number is its score-entropy NELBO bound; MDLM/BD3 the masked-diffusion NELBO; AR exact.")
    elif n == 5:
        sets = []
        for k in R:
            s = k.split("@")[1]
            if s not in sets:
                sets.append(s)
        lines.append("Table 5: zero-shot perplexities on the held-out corpora (training tokenizer, packed like the training data).")
        models = [("AR", "ar"), ("SEDD", "sedd"), ("MDLM", "mdlm"), ("BD3-LM L' = 4", "ft4-cs")]
        cols = {s: [ppl(g(f"{k}@{s}")) for _, k in models] for s in sets}
        cells = {s: bold_min([fmt(v) for v in cols[s]], cols[s]) for s in sets}
        rows = [[name] + [cells[s][i] for s in sets] for i, (name, _) in enumerate(models)]
        lines.append(table([""] + sets, rows))
    elif n == 6:
        lines.append("Table 6: generation length statistics (tokens) of sampled documents.")
        rows = []
        if a.docs:
            med, mx = doc_lengths(a.docs, a.tokenizer)
            rows.append(["Training corpus documents", fmt(med, 0), str(mx)])
        for name, k in [("AR", "ar.var"), ("SEDD (fixed length L)", "sedd.fixed"), ("MDLM (fixed length L)", "mdlm.fixed"), ("BD3-LM L' = 16", "ft16-cs.var")]:
            d = g(k)
            rows.append([name, fmt(d.get("length_median"), 0) if d else "—", str(d.get("length_max")) if d else "—"])
        lines.append(table(["", "Median # tokens", "Max # tokens"], rows))
    elif n == 7:
        lines.append("Table 7: generative perplexity (scored by the AR model of the same corpus) and NFEs.")
        models = [("AR", "ar"), ("SEDD", "sedd"), ("MDLM", "mdlm"), ("BD3-LM L' = 16", "ft16-cs"), ("BD3-LM L' = 8", "ft8-cs"), ("BD3-LM L' = 4", "ft4-cs")]
        gv = [g(k).get("gen_ppl") if g(k) else None for _, k in models]
        gc = bold_min([fmt(v) for v in gv], gv)
        rows = [[name, gc[i], fmt(g(k).get("nfe"), 0) if g(k) else "—"] for i, (name, k) in enumerate(models)]
        lines.append(table(["Model", "Gen. PPL (↓)", "NFEs (↓)"], rows))
    elif n == 8:
        lines.append("Table 8: effect of the noise schedule on PPL (unclipped NELBO) and Var. NELBO (at the training interval).")
        blocks = [int(x) for x in a.blocks.split()] if a.blocks else sorted({int(k[2:].split("-")[0]) for k in R})
        rows = []
        for b in blocks:
            tags = [t for t in ("c4595", "c3080", "u01", "log", "sqrt", "square", "cosine") if f"ft{b}-{t}" in R]
            pc, vc = ppl_var_cells([g(f"ft{b}-{t}") for t in tags])
            rows.append([f"*L' = {b}*", "", "", ""])
            rows += [[FT_NAMES[t], pc[i], vc[i], fmt(own_ppl(g(f"ft{b}-{t}")))] for i, t in enumerate(tags)]
        lines.append(table(["Noise schedule", "PPL (↓)", "Var. NELBO (↓)", "PPL at own schedule"], rows))
        lines.append(OWN_NOTE)
    elif n == 10:
        lines.append("Table 10: implemented schedules vs Gaussian and bimodal Gaussian (B.G.) schedules.")
        blocks = [int(x) for x in a.blocks.split()]
        rows = []
        for b in blocks:
            left = [t for t in ("u01", "c0050", "c3080", "c5010", "cosine", "cosc0050", "cosc3080", "cosc5010") if f"ft{b}-{t}" in R]
            right = [t for t in ("gauss50", "gauss60", "gauss70", "bg30", "bg10") if f"ft{b}-{t}" in R]
            allt = left + right
            pc, vc = ppl_var_cells([g(f"ft{b}-{t}") for t in allt])
            cell = {t: (pc[i], vc[i]) for i, t in enumerate(allt)}
            for i in range(max(len(left), len(right))):
                row = [str(b) if i == 0 else ""]
                for side in (left, right):
                    if i < len(side):
                        t = side[i]
                        row += [FT_NAMES[t].replace("Linear U[0, 1]", "Loglinear").replace("Clipped", "Loglinear"), cell[t][0], cell[t][1],
                                fmt(own_ppl(g(f"ft{b}-{t}")))]
                    else:
                        row += ["", "", "", ""]
                rows.append(row)
        lines.append(table(["Block size", "Noise schedule", "PPL", "Var. NELBO", "PPL at own schedule",
                            "Noise schedule (new)", "PPL", "Var. NELBO", "PPL at own schedule"], rows))
        lines.append(OWN_NOTE)
    elif n == 11:
        lines.append("Table 11: loglinear vs bimodal-Gaussian pretraining; the best fine-tuning schedule (lowest PPL) of each.")
        blocks = [int(x) for x in a.blocks.split()]
        rows = []
        for b in blocks:
            best = []
            for pre, prefix in (("Loglinear", "ft"), ("Bimodal Gaussian", "bgft")):
                cands = [(ppl(d), k) for k, d in R.items() if k.startswith(f"{prefix}{b}-") and ppl(d) is not None]
                if cands:
                    v, k = min(cands)
                    best.append((pre, k.split("-", 1)[1], v, interval_of(g(k))[1]))
            pv, vv = [x[2] for x in best], [x[3] for x in best]
            pc, vc = bold_min([fmt(v) for v in pv], pv), bold_min([fmt(v) for v in vv], vv)
            for i, (pre, t, _, _) in enumerate(best):
                rows.append([str(b) if i == 0 else "", pre, FT_NAMES[t].replace("Linear U[0, 1]", "Loglinear"), pc[i], vc[i],
                             fmt(own_ppl(g(f"{'ft' if pre == 'Loglinear' else 'bgft'}{b}-{t}")))])
        lines.append(table(["Block size", "Pretraining schedule", "Fine-tuning schedule", "PPL", "Var. NELBO", "PPL at own schedule"], rows))
        lines.append(OWN_NOTE)
    elif n == 13:
        lines.append("Table 13: test perplexities under loss reweightings (PPL is always the unweighted NELBO).")
        tags = ["cs", "rwiddpm", "rwedm", "rwsig", "rwfm", "rwsimple"]
        header = ["", "Base", "IDDPM", "EDM", "Sigmoid (k = 0)", "FM", "Simple"]
        allv = [ppl(d) for d in R.values()]
        best = min(v for v in allv if v is not None)
        def c(d):
            v = ppl(d)
            s = fmt(v)
            return diverged([f"**{s}**" if v is not None and fmt(v) == fmt(best) else s], [d])[0]
        rows = [["**Autoregressive**"] + [""] * 6, ["Transformer", c(g("ar"))] + [""] * 5,
                ["**Diffusion**"] + [""] * 6, ["SEDD", c(g("sedd"))] + [""] * 5, ["MDLM", c(g("mdlm"))] + [""] * 5,
                ["**Block diffusion**"] + [""] * 6]
        for b in (16, 8, 4):
            rows.append([f"BD3-LM L' = {b}"] + [c(g(f"ft{b}-{t}")) for t in tags])
        lines.append(table(header, rows))
    else:
        sys.exit(f"tables.py: no table {n}")

    if a.scale:
        lines.append(f"\nScale: {a.scale}. Generated by `pipelines/paper.mk` (pipelines/paper/tables.py).")
    for f in a.fig:
        lines.append(f"\n![{f}]({f})")
    save_text("\n".join(lines) + "\n", a.out)


def doc_lengths(corpus, tokenizer):
    """(median, max) document length in tokens of a jsonl corpus under the training tokenizer. Uses HF
    `tokenizers` on our tokenizer.json (ids identical to `tokenize encode`, see docs/tokenizer.md)."""
    import statistics
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tokenizer)
    texts = [json.loads(l)["text"] for l in open(corpus, encoding="utf-8") if l.strip()]
    texts = [t for t in texts if t]
    lens = [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
    return statistics.median(lens), max(lens)


if __name__ == "__main__":
    main()
