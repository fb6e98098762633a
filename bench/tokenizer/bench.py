#!/usr/bin/env python3
"""Side-by-side timings of our `tokenize` and HF `tokenizers` (called by run.sh).

Encode: documents = non-empty lines of the corpus. Ours: `tokenize encode --report` (time spent
encoding, without loading the tokenizer, reading the file or writing the stream; the wall time of
the whole command is shown too). HF: `Tokenizer.encode_batch(lines)` timed around the call, with
RAYON_NUM_THREADS = 1 or 2. Token counts must agree.
Training: vocab 8192 (ours: --vocab-size 8195 = 8192 + 3 specials) on the same lines. Ours: wall
time of the whole `tokenize train` command (read, count, merge, write JSON). HF:
`train_from_iterator(lines)` timed around the call. The learnt merges must be identical.
Each measurement is the best of --repeat runs (the machine is shared). Besides wall time, CPU
time (all threads, user+sys) is measured for both sides — ours from getrusage of the child or the
tool's own CPU clock, HF from time.process_time() — because on a shared machine whose CPUs are
taken by others, wall time measures the neighbours; "per CPU-second" is the per-core speed.
"""
import argparse, json, os, re, resource, subprocess, sys, time

HF_ENCODE = r'''
import sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
lines = [l for l in open(sys.argv[2], "rb").read().decode("utf-8").split("\n") if l]
t, c = time.perf_counter(), time.process_time()
enc = tok.encode_batch(lines)
dt, dc = time.perf_counter() - t, time.process_time() - c
print(dt, sum(len(e.ids) for e in enc), dc)
'''
TIKTOKEN_ENCODE = r'''
import sys, time, base64, tiktoken
ranks = {base64.b64decode(t): int(r) for t, r in (l.split() for l in open(sys.argv[1], "rb"))}
pat = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
enc = tiktoken.Encoding("gpt2", pat_str=pat, mergeable_ranks=ranks, special_tokens={})
lines = [l for l in open(sys.argv[2], "rb").read().decode("utf-8").split("\n") if l]
t, c = time.perf_counter(), time.process_time()
out = enc.encode_ordinary_batch(lines, num_threads=int(sys.argv[3]))
dt, dc = time.perf_counter() - t, time.process_time() - c
print(dt, sum(map(len, out)), dc)
'''
HF_TRAIN = r'''
import sys, time
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
lines = [l for l in open(sys.argv[1], "rb").read().decode("utf-8").split("\n") if l]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
tok.decoder = decoders.ByteLevel()
tr = trainers.BpeTrainer(vocab_size=int(sys.argv[2]), min_frequency=0, show_progress=False,
                         special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
t, c = time.perf_counter(), time.process_time()
tok.train_from_iterator(lines, tr)
dt, dc = time.perf_counter() - t, time.process_time() - c
tok.save(sys.argv[3])
print(dt, dc)
'''


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd, env=None):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenize", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=8192)
    a = ap.parse_args()
    corpus = os.path.join(a.work, "corpus.txt")
    nbytes = sum(len(l) for l in open(corpus, "rb").read().split(b"\n") if l)
    load0 = os.getloadavg()
    rows = []

    def env(n):
        e = dict(os.environ, RAYON_NUM_THREADS=str(n))
        e.pop("TOKENIZERS_PARALLELISM", None)
        return e

    # Training (first, so the trained tokenizer can be used for encoding too).
    ours_json, hf_json = os.path.join(a.work, "ours8k.json"), os.path.join(a.work, "hf8k.json")
    for threads in (1, 2):
        best_o = best_h = cpu_o = cpu_h = float("inf")
        for _ in range(a.repeat):
            t, c = time.perf_counter(), child_cpu()
            run([a.tokenize, "train", "--vocab-size", str(a.vocab + 3), "--input-format", "lines",
                 "--threads", str(threads), "-o", ours_json, corpus])
            best_o, cpu_o = min(best_o, time.perf_counter() - t), min(cpu_o, child_cpu() - c)
            out = run([sys.executable, "-c", HF_TRAIN, corpus, str(a.vocab), hf_json], env(threads)).stdout.split()
            best_h, cpu_h = min(best_h, float(out[0])), min(cpu_h, float(out[1]))
        mo = json.load(open(ours_json))["model"]["merges"]
        mh = [" ".join(m) if isinstance(m, list) else m for m in json.load(open(hf_json))["model"]["merges"]]
        same = "identical" if mo == mh else f"DIFFER ({len(mo)} vs {len(mh)})"
        rows.append(f"| train vocab {a.vocab}, {threads} thread(s) | {best_o:.2f} s wall, {cpu_o:.2f} s CPU | {best_h:.2f} s wall, {cpu_h:.2f} s CPU | time ours/HF: wall {best_o / best_h:.2f}, CPU {cpu_o / cpu_h:.2f} | merges {same} |")

    for name, tj in (("GPT-2", os.path.join(a.work, "gpt2.json")), (f"ours-{a.vocab}", ours_json)):
        for threads in (1, 2):
            best_o = best_h = best_wall = cpu_o = cpu_h = float("inf")
            for _ in range(a.repeat):
                t = time.perf_counter()
                r = run([a.tokenize, "encode", "-t", tj, "--input-format", "lines", "--threads", str(threads),
                         "--report", "-o", os.path.join(a.work, "enc.docs"), corpus])
                best_wall = min(best_wall, time.perf_counter() - t)
                m = re.search(r"→ (\d+) tokens; encoding ([\d.]+) s.*CPU ([\d.]+) s", r.stderr)
                ours_tokens, dt = int(m.group(1)), float(m.group(2))
                best_o, cpu_o = min(best_o, dt), min(cpu_o, float(m.group(3)))
                out = run([sys.executable, "-c", HF_ENCODE, tj, corpus], env(threads)).stdout.split()
                best_h, cpu_h = min(best_h, float(out[0])), min(cpu_h, float(out[2]))
                hf_tokens = int(out[1])
            same = "same token count" if ours_tokens == hf_tokens else f"TOKEN COUNT DIFFERS {ours_tokens} vs {hf_tokens}"
            mb = nbytes / 1e6
            rows.append(f"| encode {name}, {threads} thread(s) | {mb / best_o:.1f} MB/s wall, {mb / cpu_o:.1f} MB per CPU-s (whole command {mb / best_wall:.1f} MB/s) | {mb / best_h:.1f} MB/s wall, {mb / cpu_h:.1f} MB per CPU-s | speed ours/HF: wall {best_h / best_o:.1f}×, per CPU-s {cpu_h / cpu_o:.1f}× | {same} |")

    # Context: tiktoken (not the target baseline) on GPT-2.
    tk = os.path.join(a.work, "gpt2.tiktoken")
    for threads in (1, 2):
        best = cpu = float("inf")
        for _ in range(a.repeat):
            out = run([sys.executable, "-c", TIKTOKEN_ENCODE, tk, corpus, str(threads)]).stdout.split()
            best, cpu = min(best, float(out[0])), min(cpu, float(out[2]))
        rows.append(f"| (context) tiktoken encode GPT-2, {threads} thread(s) | | {nbytes / 1e6 / best:.1f} MB/s wall, {nbytes / 1e6 / cpu:.1f} MB per CPU-s (tiktoken) | | {out[1]} tokens |")

    load1 = os.getloadavg()
    print(f"corpus: {nbytes / 1e6:.1f} MB in non-empty lines ({corpus}); best of {a.repeat}; "
          f"load average before {load0[0]:.2f}, after {load1[0]:.2f}; {os.cpu_count()} CPUs\n")
    print("| task | ours (`tokenize`) | HF tokenizers | ratio | check |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
