"""Training throughput of the reference DiT (kuleshov-group/bd3lms `models/dit.py`, class `DIT`,
attn_backend sdpa), fp32 and under torch.autocast("cpu", bfloat16): the baseline of bench/train/run.sh.

The reference code is not part of this repository: point --ref (or BD3LMS_REF) at a checkout of
https://github.com/kuleshov-group/bd3lms. It is imported from there, not copied.

    python3 bench/train/reference_train.py --ref PATH --algo bd3 --precision bf16 --steps 3 --warmup 1

One JSON line per run on stdout: {"impl":"reference","algo":..,"precision":..,"tokens_per_s":..,...}.
A step = forward + loss + backward + grad-norm clip (1.0) + AdamW (lr 3e-4), as bench-train and the
reference training loop; tokens/s counts B·L (L, not 2L, for BD3). The loss head (SUBS parameterisation,
1/t-weighted masked cross-entropy; AR next-token cross-entropy) is Tests/scripts/torch_dit.py's, in fp32.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "Tests", "scripts"))
import torch_dit as td  # noqa: E402

CONFIGS = {
    # name: (hidden, layers, heads, cond, length, batch, vocab)
    "cpu": (256, 4, 8, 64, 256, 8, 8192),
    "small": (768, 12, 12, 128, 1024, 8, 8192),
}


def reference_model(ref, algo, cfg_name, block_size, dropout):
    sys.path.insert(0, ref)
    from models.dit import DIT  # the reference's class, from the given checkout
    D, nl, H, cond, L, B, V = CONFIGS[cfg_name]
    config = {
        "model": {"hidden_size": D, "n_blocks": nl, "n_heads": H, "cond_dim": cond, "length": L, "dropout": dropout,
                  "tie_word_embeddings": False, "attn_backend": "sdpa", "scale_by_sigma": True, "adaln": algo != "ar"},
        "algo": {"parameterization": "ar" if algo == "ar" else "subs", "cross_attn": algo == "bd3"},
        "block_size": {"ar": 1, "mdlm": L, "bd3": block_size}[algo],
        "loader": {"eval_batch_size": B},
        "sampling": {"kv_cache": False},
    }
    return DIT(config, vocab_size=V), B, L, V


def step(model, algo, x, opt, L, V, block_size, precision):
    m = V - 1
    B = x.shape[0]
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    if algo == "ar":
        with cast:
            logits = model(x[:, :-1], None)
        logp = td.ar_logp(logits.float(), m)
        _, loss_tok = td.ar_loss(logp, x[:, 1:])
        loss = loss_tok.mean()
    else:
        bs = block_size if algo == "bd3" else L
        nb = L // bs
        u = torch.rand(B, nb)
        u = (u / (B * nb) + torch.arange(B * nb).view(B, nb) / (B * nb)) % 1      # antithetic t per block
        t = (u * (1 - 1e-3) + 1e-3).repeat_interleave(bs, dim=-1)
        xt = torch.where(torch.rand(B, L) <= t, torch.full_like(x, m), x)
        inp = torch.cat([xt, x], -1) if algo == "bd3" else xt
        with cast:
            logits = model(inp, torch.zeros(B))
        logp = td.subs_logp(logits.float(), xt, m)
        _, loss_tok = td.diffusion_loss(logp, x, t)
        loss = td.reduce_train(loss_tok)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default=os.environ.get("BD3LMS_REF"), help="checkout of kuleshov-group/bd3lms (or BD3LMS_REF)")
    ap.add_argument("--algo", choices=["ar", "mdlm", "bd3"], default="bd3")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--block-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default: the config's, 8)")
    args = ap.parse_args()
    if not args.ref or not os.path.exists(os.path.join(args.ref, "models", "dit.py")):
        sys.exit("reference_train.py: give --ref (or BD3LMS_REF) = a checkout of kuleshov-group/bd3lms (models/dit.py)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, B, L, V = reference_model(args.ref, args.algo, args.config, args.block_size, args.dropout)
    B = args.batch or B
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    extra = 1 if args.algo == "ar" else 0
    batches = [torch.randint(0, V - 1, (B, L + extra)) for _ in range(4)]
    for i in range(args.warmup):
        step(model, args.algo, batches[i % 4], opt, L, V, args.block_size, args.precision)
    t0 = time.perf_counter()
    loss = float("nan")
    for i in range(args.steps):
        loss = step(model, args.algo, batches[i % 4], opt, L, V, args.block_size, args.precision)
    dt = time.perf_counter() - t0
    print(json.dumps({"impl": "reference", "algo": args.algo, "precision": args.precision, "config": args.config,
                      "tokens_per_s": round(args.steps * B * L / dt, 1), "sec_per_step": round(dt / args.steps, 3),
                      "batch": B, "seq_len": L, "steps": args.steps, "threads": torch.get_num_threads(),
                      "params": sum(p.numel() for p in model.parameters()), "final_loss": round(loss, 4),
                      "torch": torch.__version__}), flush=True)
    assert math.isfinite(loss)


if __name__ == "__main__":
    main()
