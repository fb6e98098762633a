#!/usr/bin/env python3
"""Inference-engine benchmark: `draft` (first-hitting, KV cache) against the reference DiT forward in PyTorch.

Matrix: model (`small` = 12 x 768 official BD3 shape, V = 50258, 169.6 M parameters; `cpu` = 4 x 256, V = 8192,
7.8 M) x dtype (fp32, bf16) x batch (1, 16) x sampler first-hitting x cache on. Random-weight checkpoints from
bench-sampling-ckpt (sampling speed does not depend on what the weights learned).

Ours: wall time of `draft -n K*B --batch B --length LEN --dtype D` (K = --samples, default 1; model load excluded: a
run of 4 tokens is timed and subtracted; each the fastest of --ours-reps runs). Every sample yields one token per forward (BOS given): each
finished block's store is folded into the next block's first forward (docs/sampling.md); the difference of the two
runs is LEN - 4 tokens and forwards per sample (the reference: 4 sampling forwards and one store forward per block,
LEN - 1 tokens per pass).

Baseline (same run, same checkpoint): the reference `models/dit.py` `DIT` (attn_backend sdpa, cross_attn,
sampling.kv_cache) imported from --ref (or $BD3LMS_REF), weights loaded from the checkpoint, on CPU in fp32 and
under torch.autocast(cpu, bfloat16), eager, the faster of 1 and 2 threads per measurement. The reference allocates its KV cache on CUDA (`reset_kv_cache`); this script
allocates the same tensors on the CPU instead and otherwise calls the reference forward unchanged: per block, 4
`sample_mode` forwards of the noisy block over the cache and one `store_kv` forward. Only forwards are timed
(the sampler's arithmetic over V is not), which favours the baseline.

Limits measured in the run: memory read bandwidth (numpy sum over 1 GB, 2 threads via torch) and sgemm GFLOP/s
(torch.mm 2048^2 fp32). Reported per configuration: tokens/s, ms per forward, tokens per forward, and the share
of the bandwidth bound (weight bytes streamed per forward: every matrix but the embedding and the adaLN / sigma
map, which the engine folds into constants at load / bandwidth) reached at batch 1.

  bench/sampling/engine.sh [--rounds 2] [--length 64] [--configs cpu,small] [--batches 1,16]
Progress and every measurement go to stderr as they are taken; the table to stdout at the end.
"""
import argparse, json, os, subprocess, sys, time

# The reference wraps its fused helpers in torch.compile; on the CPU every new cache length is a new shape and a
# recompilation, which makes it far slower than eager mode. Eager is what the baseline runs unless --compile.
if "--compile" not in sys.argv:
    os.environ["TORCHDYNAMO_DISABLE"] = "1"


def limits(torch):
    import numpy as np
    a = np.ones(1 << 28, dtype=np.float32)          # 1 GiB
    t = torch.from_numpy(a)
    best_bw = 0.0
    for _ in range(3):
        t0 = time.perf_counter(); s = float(t.sum()); dt = time.perf_counter() - t0
        best_bw = max(best_bw, a.nbytes / dt / 1e9)
    x = torch.randn(2048, 2048); y = torch.randn(2048, 2048)
    torch.mm(x, y)
    best_gf = 0.0
    for _ in range(3):
        t0 = time.perf_counter(); torch.mm(x, y); dt = time.perf_counter() - t0
        best_gf = max(best_gf, 2 * 2048 ** 3 / dt / 1e9)
    return best_bw, best_gf


def run_ours(bin_dir, ckpt, batch, length, dtype, reps=3, samples=1):
    def once(n_len):
        cmd = [os.path.join(bin_dir, "draft"), "-m", ckpt, "-n", str(batch * samples), "--batch", str(batch), "--length", str(n_len),
               "--dtype", dtype, "--no-entropy-stop", "--seed", "1", "-o", os.devnull]
        t0 = time.perf_counter(); subprocess.run(cmd, check=True); return time.perf_counter() - t0
    # The fastest of `reps` runs of each length: the model load (~1 s for `small`, varying by ±0.3 s with the page
    # cache) is as long as the sampling of 64 tokens at batch 1, so one subtraction of single runs is mostly noise.
    setup = min(once(4) for _ in range(reps))
    return max(1e-6, min(once(length) for _ in range(reps)) - setup)


def reference_model(ref, ckpt, batch, block_size=4):
    sys.path.insert(0, ref)
    import torch, omegaconf
    from safetensors.torch import load_file
    import models.dit as refdit
    from safetensors import safe_open
    with safe_open(ckpt, "pt") as f:
        meta = f.metadata()
    mc = json.loads(meta["model_config"])
    cfg = omegaconf.OmegaConf.create({
        "model": {"length": mc["length"], "hidden_size": mc["hiddenSize"], "cond_dim": mc["condDim"],
                  "n_heads": mc["nHeads"], "n_blocks": mc["nBlocks"], "dropout": 0.0, "attn_backend": "sdpa",
                  "tie_word_embeddings": False, "causal_attention": False, "adaln": True},
        "algo": {"parameterization": "subs", "cross_attn": True},
        "block_size": block_size,
        "sampling": {"kv_cache": True},
        "loader": {"eval_batch_size": batch}})
    model = refdit.DIT(cfg, vocab_size=mc["vocabSize"])
    sd = {k[len("backbone."):]: v for k, v in load_file(ckpt).items() if k.startswith("backbone.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    if missing:
        raise SystemExit(f"reference model: missing tensors {missing[:5]}")
    model.eval()
    return model, mc


def cpu_kv_reset(model, batch, dtype):
    """The reference's reset_kv_cache with the cache on the CPU (it hard-codes device='cuda')."""
    import torch
    for block in model.blocks:
        block.kv_cache = torch.zeros(batch, model.max_seqlen, model.config.model.hidden_size * 3, dtype=dtype)
        block.cache_idx = 0


def run_reference(model, mc, batch, length, bf16, block_size=4, threads=2):
    import torch
    torch.set_num_threads(threads)
    V = mc["vocabSize"]
    cpu_kv_reset(model, batch, torch.bfloat16 if bf16 else torch.float32)
    sigma = torch.zeros(batch)
    blocks = length // block_size
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    g = torch.Generator().manual_seed(1)
    fwd = 0
    with torch.no_grad(), ctx:
        # Warm-up (the reference torch.compiles its fused helpers on first use), then a fresh cache.
        x = torch.randint(0, V - 1, (batch, block_size), generator=g)
        model(x, sigma, sample_mode=True, store_kv=False); model(x, sigma, sample_mode=True, store_kv=True)
        cpu_kv_reset(model, batch, torch.bfloat16 if bf16 else torch.float32)
        t0 = time.perf_counter()
        for _ in range(blocks):
            x = torch.randint(0, V - 1, (batch, block_size), generator=g)
            for _ in range(block_size):
                model(x, sigma, sample_mode=True, store_kv=False); fwd += 1
            model(x, sigma, sample_mode=True, store_kv=True); fwd += 1
        dt = time.perf_counter() - t0
    return dt, fwd


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--ref", default=os.environ.get("BD3LMS_REF"), help="checkout of kuleshov-group/bd3lms (or $BD3LMS_REF)")
    ap.add_argument("--configs", default="cpu,small")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--length", type=int, default=64, help="tokens per sample (BOS included)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ours-reps", type=int, default=3, help="runs of ours per length and measurement (the fastest counts)")
    ap.add_argument("--samples", type=int, default=1,
                    help="ours draws this many batches per run (--batch B, -n samples x B): a short length at batch 1 on a "
                         "small model is otherwise tens of ms, within the noise of the model load subtracted from it")
    ap.add_argument("--json", default=None)
    ap.add_argument("--ref-threads", default="1,2", help="thread counts tried for the reference (the fastest counts)")
    ap.add_argument("--compile", action="store_true", help="keep the reference's torch.compile (slower on the CPU)")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    os.makedirs(a.work, exist_ok=True)
    vocab = {"small": 50258, "cpu": 8192, "tiny": 50258}
    ckpts = {}
    for c in a.configs.split(","):
        d = os.path.join(a.work, c)
        if not os.path.exists(os.path.join(d, "bd3.safetensors")):
            subprocess.run([os.path.join(a.bin, "bench-sampling-ckpt"), "--out", d, "--config", c, "--vocab", str(vocab[c]),
                            "--length", "1024"], check=True, stdout=subprocess.DEVNULL)
        ckpts[c] = os.path.join(d, "bd3.safetensors")
    rows = {}
    bw, gf = [], []
    for r in range(a.rounds):
        b, g = limits(torch); bw.append(b); gf.append(g)
        print(f"round {r + 1}: bandwidth {b:.1f} GB/s, sgemm {g:.0f} GFLOP/s", file=sys.stderr, flush=True)
        for c in a.configs.split(","):
            for batch in map(int, a.batches.split(",")):
                ref = reference_model(a.ref, ckpts[c], batch) if a.ref else None
                for dt in a.dtypes.split(","):
                    # Alternate ours and the baseline within the round (the machine is shared).
                    secs = run_ours(a.bin, ckpts[c], batch, a.length, dt, a.ours_reps, a.samples)
                    # The difference of the two runs: LEN - 4 tokens (forwards) per sample (the stores are folded into the
                    # next block's first forward).
                    fwd = a.samples * (a.length - 4)
                    rows.setdefault((c, dt, batch, "ours"), []).append((secs, fwd, batch * fwd))
                    print(f"round {r + 1}: {c} {dt} batch {batch} ours {secs:.2f} s / {fwd} forwards", file=sys.stderr, flush=True)
                    if ref is not None:
                        model, mc = ref
                        # The faster of 1 and 2 threads: on a loaded machine PyTorch's OpenMP threads wait for each
                        # other at every operator (≈ 25 ms each), so one thread can be much faster.
                        best = None
                        for th in map(int, a.ref_threads.split(",")):
                            secs, fwd = run_reference(model, mc, batch, a.length, dt == "bf16", threads=th)
                            print(f"round {r + 1}: {c} {dt} batch {batch} reference ({th} thread{'s' if th > 1 else ''}) {secs:.2f} s / {fwd} forwards",
                                  file=sys.stderr, flush=True)
                            best = secs if best is None else min(best, secs)
                        rows.setdefault((c, dt, batch, "reference"), []).append((best, fwd, batch * (a.length - 1)))
    params = {}
    for c, p in ckpts.items():
        from safetensors import safe_open
        with safe_open(p, "np") as f:
            n = 0; emb = 0
            for k in f.keys():
                s = f.get_slice(k).get_shape(); m = 1
                for x in s: m *= x
                n += m
                # Not streamed per forward: the embedding (rows gathered) and the adaLN / sigma-map weights (their
                # outputs at sigma = 0 are constants computed once at load).
                if "vocab_embed" in k or "adaLN_modulation" in k or "sigma_map" in k: emb += m
        params[c] = (n, emb)
    print(f"limits (range over {a.rounds} rounds): bandwidth {min(bw):.1f}-{max(bw):.1f} GB/s, sgemm {min(gf):.0f}-{max(gf):.0f} GFLOP/s")
    print("| model | dtype | batch | engine | tokens/s | ms/forward | tokens/forward | bandwidth share (batch 1) |")
    print("|---|---|---|---|---|---|---|---|")
    out = []
    for (c, dt, batch, who), v in sorted(rows.items()):
        tps = [t / s for s, _, t in v]; msf = [s / f * 1e3 for s, f, _ in v]
        n, emb = params[c]
        wbytes = (n - emb) * (2 if dt == "bf16" else 4)   # weights streamed per forward (see above)
        share = ""
        if batch == 1:
            share = f"{min(wbytes / (m * 1e-3) / 1e9 / max(bw) for m in msf):.2f}-{max(wbytes / (m * 1e-3) / 1e9 / min(bw) for m in msf):.2f}"
        tpf = v[0][2] / v[0][1]
        print(f"| {c} | {dt} | {batch} | {who} | {min(tps):.0f}-{max(tps):.0f} | {min(msf):.1f}-{max(msf):.1f} | {tpf:.2f} | {share} |")
        out.append({"model": c, "dtype": dt, "batch": batch, "engine": who, "tokens_per_s": tps, "ms_per_forward": msf})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"limits": {"bandwidth_gbs": bw, "sgemm_gflops": gf}, "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
