"""PyTorch CPU fp32 training-throughput baseline for the BD3-LM DiT (AR, MDLM, BD3).

    python3 bench/torch_train.py                       # all three algos, cpu config, 2 threads
    python3 bench/torch_train.py --algo bd3 --steps 5  # one algo, fewer steps

One JSON line per algo on stdout:
  {"impl":"torch","algo":"bd3","tokens_per_s":...,"batch":8,"seq_len":256,...}
Tokens are counted as B x L per optimizer step (the BD3 model input is 2L, but only L tokens are trained on).
A step is forward + loss + backward + grad-norm clip (1.0) + AdamW step, as in the reference training loop.
The model is Tests/scripts/torch_dit.py (the reference architecture, reference init, dropout 0.1, sdpa attention;
BD3 uses the dense (2L, 2L) boolean block-diffusion mask, the reference's attn_backend=sdpa path).
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "scripts"))
import torch_dit as td  # noqa: E402

CONFIGS = {
    # name: (hidden, layers, heads, cond, length, batch, vocab)
    "cpu": (256, 4, 8, 64, 256, 8, 8192),
}


def make_model(algo, cfg_name, block_size, dropout):
    D, nl, H, cond, L, B, V = CONFIGS[cfg_name]
    if algo == "ar":
        c = td.DiTConfig(V, D, nl, H, cond, L, 1, dropout=dropout, causal=True)
    elif algo == "mdlm":
        c = td.DiTConfig(V, D, nl, H, cond, L, L, dropout=dropout)
    elif algo == "bd3":
        c = td.DiTConfig(V, D, nl, H, cond, L, block_size, dropout=dropout, cross_attn=True)
    else:
        raise ValueError(algo)
    return td.DiT(c), B


def sample_t(B, nb, eps_min=1e-3, eps_max=1.0):
    """Antithetic t per block (spec 2.1)."""
    u = torch.rand(B, nb)
    u = (u / (B * nb) + torch.arange(B * nb).view(B, nb) / (B * nb)) % 1
    return u * (eps_max - eps_min) + eps_min


def train_step(model, algo, x, opt):
    cfg = model.cfg
    V, m, L = cfg.vocab_size, cfg.vocab_size - 1, cfg.length
    B = x.shape[0]
    if algo == "ar":
        logits = model(x[:, :-1])                              # (B, L, V); x holds L+1 tokens
        logp = td.ar_logp(logits, m)
        _, loss_tok = td.ar_loss(logp, x[:, 1:])
        loss = loss_tok.mean()
    else:
        nb = L // cfg.block_size
        t = sample_t(B, nb).repeat_interleave(L // nb, dim=-1)
        move = torch.rand(B, L) <= t
        xt = torch.where(move, torch.full_like(x, m), x)
        xt[:, 0] = x[:, 0]
        inp = torch.cat([xt, x], -1) if algo == "bd3" else xt
        logits = model(inp, torch.zeros(B))                    # sigma = 0: time conditioning off
        logp = td.subs_logp(logits, xt, m)
        _, loss_tok = td.diffusion_loss(logp, x, t)
        loss = td.reduce_train(loss_tok)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def bench(algo, args):
    torch.manual_seed(args.seed)
    model, B = make_model(algo, args.config, args.block_size, args.dropout)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    V, L = model.cfg.vocab_size, model.cfg.length
    extra = 1 if algo == "ar" else 0
    batches = [torch.randint(0, V - 1, (B, L + extra)) for _ in range(4)]
    for i in range(args.warmup):
        train_step(model, algo, batches[i % 4], opt)
    t0 = time.perf_counter()
    loss = float("nan")
    for i in range(args.steps):
        loss = train_step(model, algo, batches[i % 4], opt)
    dt = time.perf_counter() - t0
    rec = {"impl": "torch", "algo": algo, "tokens_per_s": round(args.steps * B * L / dt, 1), "batch": B,
           "seq_len": L, "block_size": model.cfg.block_size if algo == "bd3" else (1 if algo == "ar" else L),
           "steps": args.steps, "sec_per_step": round(dt / args.steps, 4), "threads": torch.get_num_threads(),
           "config": args.config, "params": td.count_parameters(model), "dropout": args.dropout,
           "final_loss": round(loss, 4), "torch": torch.__version__}
    print(json.dumps(rec), flush=True)
    assert math.isfinite(loss)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algo", choices=["ar", "mdlm", "bd3", "all"], default="all")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    ap.add_argument("--block-size", type=int, default=4, help="BD3 L' (default 4)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per algo")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for algo in (["ar", "mdlm", "bd3"] if args.algo == "all" else [args.algo]):
        bench(algo, args)


if __name__ == "__main__":
    main()
