#!/usr/bin/env python3
"""Sampling benchmark driver (bench/sampling/run.sh builds the tools and calls this).

1. KV cache vs none: `draft` BD3 L'=4 first-hitting, fixed length (--no-entropy-stop), --batch 1, with and
   without `--no-kv-cache`, at each length; tokens/s = generated tokens (length − 1 per sample: the BOS is given)
   / wall time of the whole command (checkpoint load included; it is ~0.1 s). ms/token = the inverse.
2. Pipe vs files: `draft | remask | refine | score gen` as one shell pipeline vs the same four commands one
   after another through files; wall time of each, and the final metrics JSON must be byte-identical.

Wall time and CPU time (user+sys of the children) are both reported: on a shared machine wall time measures
the neighbours too. Python's only job is to start processes and read clocks.
"""
import argparse, json, os, resource, subprocess, sys, time


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, shell=False):
    c0, t0 = children_cpu(), time.perf_counter()
    subprocess.run(cmd, shell=shell, check=True, executable="/bin/bash" if shell else None)
    return time.perf_counter() - t0, children_cpu() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory with draft, remask, refine, score, bench-sampling-ckpt")
    ap.add_argument("--work", required=True, help="scratch directory (checkpoints, streams)")
    ap.add_argument("--lengths", default="256,1024,4096")
    ap.add_argument("--samples", default="4,2,1", help="samples per length (same order as --lengths)")
    ap.add_argument("--no-cache-lengths", default=None, help="lengths also run without the cache (default: all)")
    ap.add_argument("--model-length", type=int, default=1024)
    ap.add_argument("--pipe-samples", type=int, default=8)
    ap.add_argument("--pipe-length", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-pipe", action="store_true", help="only the KV-cache measurements")
    a = ap.parse_args()
    b, w = a.bin, a.work
    os.makedirs(w, exist_ok=True)
    lengths = [int(x) for x in a.lengths.split(",")]
    samples = [int(x) for x in a.samples.split(",")]
    assert len(samples) == len(lengths), "--samples needs one count per length"
    nocache = lengths if a.no_cache_lengths is None else [int(x) for x in a.no_cache_lengths.split(",") if x]
    load0 = os.getloadavg()
    subprocess.run([f"{b}/bench-sampling-ckpt", "--out", w, "--length", str(a.model_length), "--seed", str(a.seed)], check=True)
    bd3, ar = f"{w}/bd3.safetensors", f"{w}/ar.safetensors"

    rows = []
    for L, n in zip(lengths, samples):
        for cache in ([True, False] if L in nocache else [True]):
            out = f"{w}/draft-{L}-{'cache' if cache else 'nocache'}.tok"
            cmd = [f"{b}/draft", "-m", bd3, "-n", str(n), "--length", str(L), "--block-size", "4", "--no-entropy-stop",
                   "--seed", str(a.seed), "--batch", "1", "-o", out] + ([] if cache else ["--no-kv-cache"])
            wall, cpu = timed(cmd)
            toks = n * (L - 1)
            r = {"bench": "draft", "kv_cache": cache, "length": L, "samples": n, "tokens": toks, "wall_s": round(wall, 3),
                 "cpu_s": round(cpu, 3), "tokens_per_s": round(toks / wall, 1), "ms_per_token": round(1000 * wall / toks, 3),
                 "cpu_ms_per_token": round(1000 * cpu / toks, 3), "loadavg_1m": os.getloadavg()[0]}
            rows.append(r); print(json.dumps(r), flush=True)

    if a.skip_pipe:
        print_table(rows)
        return
    # Pipe vs files: same commands, same seeds.
    n, L = a.pipe_samples, a.pipe_length
    draft = f"{b}/draft -m {bd3} -n {n} --length {L} --block-size 4 --no-entropy-stop --seed {a.seed} --batch 1"
    remask = f"{b}/remask --policy snapshot --ratio 0.25"
    refine = f"{b}/refine -m {bd3} --block-size 4 --seed {a.seed + 1}"
    # score gen's unigram entropy sums over a Swift Dictionary, whose order changes per process (random hash
    # seed), so its last digit varies run to run; deterministic hashing makes the JSON comparable byte for byte.
    score = f"SWIFT_DETERMINISTIC_HASHING=1 {b}/score gen --scorer {ar} --per-sample"
    pipe_cmd = f"set -o pipefail; {draft} -o - | {remask} | {refine} | {score} > {w}/pipe.json 2>/dev/null"
    files_cmd = (f"set -e; {draft} -o {w}/f-draft.tok; {remask} -i {w}/f-draft.tok -o {w}/f-remask.tok; "
                 f"{refine} -i {w}/f-remask.tok -o {w}/f-refine.tok; {score} -i {w}/f-refine.tok > {w}/files.json 2>/dev/null")
    pipe = []
    for kind, cmd in [("files", files_cmd), ("pipe", pipe_cmd), ("files", files_cmd), ("pipe", pipe_cmd)]:
        wall, cpu = timed(cmd, shell=True)
        pipe.append((kind, wall, cpu))
        print(json.dumps({"bench": kind, "samples": n, "length": L, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                          "loadavg_1m": os.getloadavg()[0]}), flush=True)
    same = open(f"{w}/pipe.json", "rb").read() == open(f"{w}/files.json", "rb").read()
    print(json.dumps({"bench": "pipe_vs_files_same_metrics", "identical": same}), flush=True)
    print(json.dumps({"bench": "loadavg", "before": load0, "after": os.getloadavg()}), flush=True)

    print_table(rows)
    best = {k: min((p for p in pipe if p[0] == k), key=lambda p: p[1]) for k in ("files", "pipe")}
    print(f"\npipe vs files ({n} × {L} tokens, best of 2): files {best['files'][1]:.2f} s wall / {best['files'][2]:.2f} s CPU, "
          f"pipe {best['pipe'][1]:.2f} s wall / {best['pipe'][2]:.2f} s CPU, wall ratio files/pipe "
          f"{best['files'][1] / best['pipe'][1]:.2f}; metrics JSON identical: {same}")
    if not same:
        sys.exit("pipe and files gave different metrics")


def print_table(rows):
    print("\n| length | samples | KV cache | wall s | tokens/s | ms/token | CPU ms/token | speed-up (cache / none) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        other = [o for o in rows if o["length"] == r["length"] and o["kv_cache"] != r["kv_cache"]]
        sp = f"{r['tokens_per_s'] / other[0]['tokens_per_s']:.1f}×" if r["kv_cache"] and other else ""
        print(f"| {r['length']} | {r['samples']} | {'yes' if r['kv_cache'] else 'no'} | {r['wall_s']} | {r['tokens_per_s']} | "
              f"{r['ms_per_token']} | {r['cpu_ms_per_token']} | {sp} |")


if __name__ == "__main__":
    main()
