"""Write the model parity fixtures (Tests/BlockDiffusionTests/Fixtures/parity/*.safetensors).

    python3 Tests/scripts/make_model_fixtures.py            # from the package root; writes the fixtures
    python3 Tests/scripts/make_model_fixtures.py --check    # only run the assertions, write nothing

Layout of every file: see Tests/scripts/README.md. Everything is float32 CPU except the sampler/schedule
fixtures (float64). Integer tensors are I64, boolean masks U8 (0/1).
"""
import argparse
import dataclasses
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_dit as td  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "BlockDiffusionTests", "Fixtures", "parity"))

# tiny parity config
V, D, H, COND, NBLK, L, BATCH, BS = 67, 48, 4, 16, 2, 16, 2, 4
MASK = V - 1
SEED_WEIGHTS, SEED_DATA = 0, 1234


def make_cfg(algo):
    common = dict(vocab_size=V, hidden_size=D, n_blocks=NBLK, n_heads=H, cond_dim=COND, length=L, dropout=0.0)
    if algo == "bd3":
        return td.DiTConfig(block_size=BS, cross_attn=True, **common)
    if algo == "mdlm":
        return td.DiTConfig(block_size=L, **common)
    if algo == "sedd":
        return td.DiTConfig(block_size=L, time_conditioning=True, **common)
    if algo == "ar":
        return td.DiTConfig(block_size=1, causal=True, **common)
    raise ValueError(algo)


def build(algo):
    model = td.DiT(make_cfg(algo))
    td.reinit_random(model, SEED_WEIGHTS)
    model.eval()
    return model


def metadata(cfg, algo, reduction, extra=None):
    m = {
        "algo": algo, "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "n_blocks": cfg.n_blocks,
        "n_heads": cfg.n_heads, "cond_dim": cfg.cond_dim, "length": cfg.length, "block_size": cfg.block_size,
        "mask_id": MASK, "batch": BATCH, "mlp_hidden": 4 * cfg.hidden_size, "dropout": 0.0,
        "causal": cfg.causal, "cross_attn": cfg.cross_attn, "time_conditioning": cfg.time_conditioning,
        "loss_reduction": reduction, "int_dtype": "I64", "bool_dtype": "U8",
        "weights_init": f"torch.manual_seed({SEED_WEIGHTS}); Linear weight N(0,1/fan_in), bias N(0,0.02^2), embedding N(0,1), LN weight 1+N(0,0.1^2)",
        "generator": "Tests/scripts/make_model_fixtures.py", "torch": torch.__version__,
    }
    if extra:
        m.update(extra)
    return {k: (json.dumps(v) if not isinstance(v, str) else v) for k, v in m.items()}


def capture(model):
    """Forward hooks on every block: stores block outputs."""
    outs = {}
    hooks = [blk.register_forward_hook(lambda mod, inp, out, i=i: outs.__setitem__(i, out.detach().clone()))
             for i, blk in enumerate(model.blocks)]
    return outs, hooks


def weights_and_grads(model):
    t = {k: v.detach().clone().contiguous() for k, v in model.reference_state_dict().items()}
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        t["grad.backbone." + name] = p.grad.detach().clone().contiguous()
    return t


def activations(model, outs, tensors):
    if model.last_c is not None:
        tensors["expect.c"] = model.last_c.detach().clone()
        for i, blk in enumerate(model.blocks):
            tensors[f"expect.block{i}.ada"] = torch.stack(blk.last_ada).detach().clone()   # (6, B, D)
        tensors["expect.final.ada"] = torch.stack(model.output_layer.last_ada).detach().clone()  # (2, B, D)
    for i, o in outs.items():
        tensors[f"expect.block{i}.out"] = o


def noised_inputs(gen, per_block):
    """x0 in [0, V-1); t per block (bd3) or per sequence; move = u <= t; x_t[:,0] = x0[:,0]."""
    x0 = torch.randint(0, V - 1, (BATCH, L), generator=gen)
    nb = L // BS if per_block else 1
    tb = 0.15 + 0.8 * torch.rand(BATCH, nb, generator=gen)
    t = tb.repeat_interleave(L // nb, dim=-1)
    u = torch.rand(BATCH, L, generator=gen)
    move = u <= t
    xt = torch.where(move, torch.full_like(x0, MASK), x0)
    xt[:, 0] = x0[:, 0]
    n_masked = int((xt == MASK).sum())
    assert 4 <= n_masked <= BATCH * L - 4, n_masked
    return x0, xt, t, u


def scalar(x):
    return x.detach().reshape(1).clone()


def clone_model(model, **changes):
    m = td.DiT(dataclasses.replace(model.cfg, **changes))
    m.load_state_dict(model.state_dict())
    return m.eval()


def check_zero_output(model, xt, x0, t, mode, sigma):
    """Zero output linear -> logits 0 -> every masked token has -log p = ln(V-1), loss (1/t) ln(V-1)."""
    z = clone_model(model)
    with torch.no_grad():
        z.output_layer.linear.weight.zero_()
        z.output_layer.linear.bias.zero_()
        inp = torch.cat([xt, x0], -1) if mode == "bd3" else xt
        logp = td.subs_logp(z(inp, sigma, mode), xt, MASK)
        lp, loss = td.diffusion_loss(logp, x0, t)
    masked = xt == MASK
    want = math.log(V - 1)
    assert torch.allclose(-lp[masked], torch.full_like(lp[masked], want), atol=1e-5), "zero-output -logp != ln(V-1)"
    assert torch.allclose(loss[masked] * t[masked], torch.full_like(lp[masked], want), atol=1e-4)
    assert torch.all(lp[~masked] == 0) and torch.all(loss[~masked] == 0)


def check_zero_output_gpt2_vocab():
    """Spec 11.7 known value: reference init (zero output layer) with V=50258 gives -log p = ln(50257) = 10.824905
    at every masked token."""
    torch.manual_seed(0)
    v = 50258
    m = td.DiT(td.DiTConfig(v, 16, 1, 2, 8, 8, 4, cross_attn=True)).eval()
    x0 = torch.randint(0, v - 1, (1, 8))
    xt = x0.clone()
    xt[0, 1::2] = v - 1
    with torch.no_grad():
        logp = td.subs_logp(m(torch.cat([xt, x0], -1)), xt, v - 1)
    lp = logp.gather(-1, x0[..., None]).squeeze(-1)
    assert abs(math.log(v - 1) - 10.824905) < 1e-6
    assert torch.allclose(-lp[0, 1::2], torch.full((4,), 10.824905), atol=1e-5), lp


def check_naive_attention(model, inp, sigma, mode, logits):
    m2 = clone_model(model, attn_impl="naive")
    with torch.no_grad():
        l2 = m2(inp, sigma, mode)
    err = (l2 - logits).abs().max().item()
    assert err < 1e-5, f"naive vs sdpa attention differ by {err}"


def diffusion_case(algo):
    model = build(algo)
    cfg = model.cfg
    gen = torch.Generator().manual_seed(SEED_DATA + {"bd3": 0, "mdlm": 1, "sedd": 2}[algo])
    x0, xt, t, u = noised_inputs(gen, per_block=(algo == "bd3"))
    mode = "bd3" if algo == "bd3" else "full"
    if algo == "sedd":
        sigma, dsigma = td.sedd_sigma(t[:, 0])
        assert float(sigma.min()) > 0.1
    else:
        sigma, dsigma = torch.zeros(BATCH), None
    inp = torch.cat([xt, x0], -1) if mode == "bd3" else xt

    outs, hooks = capture(model)
    emb = model.vocab_embed(inp).detach().clone()
    logits = model(inp, sigma, mode)
    for h in hooks:
        h.remove()
    T = {}
    if algo == "sedd":
        log_score = td.sedd_log_score(logits, xt, sigma)
        ent = td.sedd_score_entropy(log_score, sigma, xt, x0, MASK)
        loss_tok = dsigma[:, None] * ent
        lp = log_score.gather(-1, x0[..., None]).squeeze(-1)
        T["expect.log_score"] = log_score.detach().clone()
        T["expect.entropy"] = ent.detach().clone()
        T["input.dsigma"] = dsigma.float().clone()
        assert float(ent.detach().min()) >= -1e-5   # score entropy is a Bregman divergence: >= 0
    else:
        logp = td.subs_logp(logits, xt, MASK)
        lp, loss_tok = td.diffusion_loss(logp, x0, t)
        T["expect.logp"] = logp.detach().clone()
        check_zero_output(model, xt, x0, t, mode, sigma)
    nelbo_train = td.reduce_train(loss_tok)
    nelbo_eval = td.reduce_eval(loss_tok)
    assert torch.all(loss_tok[xt != MASK] == 0)
    nelbo_train.backward()
    check_naive_attention(model, inp, sigma, mode, logits.detach())

    T.update(weights_and_grads(model))
    T.update({"input.x0": x0, "input.xt": xt, "input.t": t.float(), "input.u": u.float(),
              "input.sigma": sigma.float().clone(), "expect.embed": emb,
              "expect.logits": logits.detach().clone(), "expect.lp": lp.detach().clone(),
              "expect.loss_tok": loss_tok.detach().clone(),
              "expect.nelbo_train": scalar(nelbo_train), "expect.nelbo_eval": scalar(nelbo_eval)})
    if mode == "bd3":
        T["expect.mask"] = model.bd_mask.to(torch.uint8).clone()
    activations(model, outs, T)
    if algo == "sedd":
        red = "loss_tok = dsigma[b] * score_entropy; nelbo_train = sum(loss_tok)/(B*L); nelbo_eval = sum(loss_tok)/(B*(L-1))"
    else:
        red = "loss_tok = -(1/t)*lp (0 where x_t != mask); nelbo_train = sum(loss_tok)/(B*L); nelbo_eval = sum(loss_tok)/(B*(L-1))"
    meta = metadata(cfg, algo, red, {"model_input": "cat(x_t, x_0) (B,2L)" if mode == "bd3" else "x_t (B,L)",
                                      "grad_of": "nelbo_train"})
    return T, meta, model


def ar_case():
    model = build("ar")
    gen = torch.Generator().manual_seed(SEED_DATA + 3)
    x0 = torch.randint(0, V - 1, (BATCH, L), generator=gen)
    inp, tgt = x0[:, :-1], x0[:, 1:]
    outs, hooks = capture(model)
    emb = model.vocab_embed(inp).detach().clone()
    logits = model(inp, None, "causal")
    for h in hooks:
        h.remove()
    logp = td.ar_logp(logits, MASK)
    lp, loss_tok = td.ar_loss(logp, tgt)
    nll = loss_tok.mean()
    nll.backward()
    check_naive_attention(model, inp, None, "causal", logits.detach())
    # causality: changing the last input token must not change earlier logits
    with torch.no_grad():
        inp2 = inp.clone()
        inp2[:, -1] = (inp2[:, -1] + 1) % (V - 1)
        l2 = model(inp2, None, "causal")
        assert torch.allclose(l2[:, :-1], logits[:, :-1].detach(), atol=1e-6)
    T = weights_and_grads(model)
    T.update({"input.x0": x0, "expect.embed": emb, "expect.logits": logits.detach().clone(),
              "expect.logp": logp.detach().clone(), "expect.lp": lp.detach().clone(),
              "expect.loss_tok": loss_tok.detach().clone(),
              "expect.nelbo_train": scalar(nll), "expect.nelbo_eval": scalar(nll)})
    activations(model, outs, T)
    meta = metadata(model.cfg, "ar",
                    "input = x0[:, :-1], target = x0[:, 1:]; loss_tok = -lp (B,L-1); nll = sum(loss_tok)/(B*(L-1)) (train = eval)",
                    {"model_input": "x0[:, :-1] (B,L-1)", "grad_of": "nelbo_train (AR NLL)"})
    return T, meta


def kv_cache_logits(model, window, bs):
    """Emulates the reference KV-cache sampler (spec 1.4): blocks are fed one at a time; each layer keeps the
    pre-rotary k, v of finished blocks; the current block attends (no mask) to cache + itself, with RoPE applied at
    absolute positions 0..idx+L'-1. Returns the logits of the last block."""
    B, S = window.shape
    caches = [None] * len(model.blocks)
    sigma = torch.zeros(B)
    c = torch.nn.functional.silu(model.sigma_map(sigma))
    out = None
    for s in range(0, S, bs):
        x = model.vocab_embed(window[:, s:s + bs])
        cos, sin = model.rotary_emb.cos_sin(s + bs)
        for li, blk in enumerate(model.blocks):
            sh1, sc1, g1, sh2, sc2, g2 = blk.adaLN_modulation(c)[:, None].chunk(6, dim=-1)
            h = blk.norm1(x) * (1 + sc1) + sh1
            qkv = blk.attn_qkv(h).view(B, bs, 3, blk.n_heads, -1)
            full = qkv if caches[li] is None else torch.cat([caches[li], qkv], 1)
            caches[li] = full                                  # "store_kv": this block becomes cached context
            q = td.apply_rotary(full[:, :, 0], cos, sin)[:, -bs:]
            k = td.apply_rotary(full[:, :, 1], cos, sin)
            qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), full[:, :, 2].transpose(1, 2)
            att = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1]), -1) @ vh
            a = att.transpose(1, 2).reshape(B, bs, -1)
            x = x + g1 * blk.attn_out(a)
            x = x + g2 * blk.mlp(blk.norm2(x) * (1 + sc2) + sh2)
        out = model.output_layer(x, c)
    return out


def window_case(bd3_model):
    """Sampling without KV cache: window = k-1 clean blocks + 1 noisy block, k = 1..L/L'.
    Its last L' logits must equal the training-mode logits of the x_t half on cat(x_t', x_0') (spec 11.5)."""
    model = bd3_model
    model.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(SEED_DATA + 4)
    x0 = torch.randint(0, V - 1, (BATCH, L), generator=gen)
    sigma = torch.zeros(BATCH)
    T = {"input.x0": x0}
    with torch.no_grad():
        for k in range(1, L // BS + 1):
            s, e = (k - 1) * BS, k * BS
            noisy = x0[:, s:e].clone()
            drop = torch.rand(BATCH, BS, generator=gen) < 0.6
            drop[:, 0] = True                     # at least one mask per row
            noisy[drop] = MASK
            if k == 1:
                noisy[:, 0] = x0[:, 0]           # BOS stays clean, as in the sampler
            win = torch.cat([x0[:, :s], noisy], dim=-1)
            wl = model(win, sigma, "window")
            # training-mode equivalent: noisy block in the x_t half at the same positions, clean x_0 half
            xt_train = x0.clone()
            xt_train[:, s:e] = noisy
            tl = model(torch.cat([xt_train, x0], -1), sigma, "bd3")
            err = (wl[:, -BS:] - tl[:, s:e]).abs().max().item()
            assert err < 1e-5, f"window k={k}: sample-mode logits differ from training-mode by {err}"
            # KV-cache path (clean blocks cached one by one, then the noisy block) gives the same last-block logits
            kv = kv_cache_logits(model, win, BS)
            err = (wl[:, -BS:] - kv).abs().max().item()
            assert err < 1e-5, f"window k={k}: KV-cache emulation differs from sample-mode logits by {err}"
            T[f"input.window{k}"] = win
            T[f"expect.window{k}.mask"] = td.window_mask(L, BS, win.shape[1]).to(torch.uint8)
            T[f"expect.window{k}.logits"] = wl.clone()
            T[f"expect.window{k}.train_logits"] = tl[:, s:e].clone()
    for k_, v in model.reference_state_dict().items():
        T[k_] = v.detach().clone()
    meta = metadata(model.cfg, "bd3_window", "none (forward only)",
                    {"model_input": "window{k} = cat(x0[:, :(k-1)L'], noisy block k-1) (B, k*L'), positions 0..kL'-1",
                     "windows": L // BS})
    return T, meta


def check_param_counts():
    """Spec 1.5 table: parameter counts (untied, buffers excluded)."""
    want = {("tiny", 50258): 32_941_010, ("small", 50258): 169_627_218, ("medium", 50258): 424_477_010,
            ("tiny", 30522): 22_816_442, ("small", 30522): 139_292_986, ("medium", 30522): 384_037_946}
    sizes = {"tiny": (256, 8, 8, 64), "small": (768, 12, 12, 128), "medium": (1024, 24, 16, 128)}
    with torch.device("meta"):
        for (name, vocab), n in want.items():
            d, nb, nh, cd = sizes[name]
            m = td.DiT(td.DiTConfig(vocab, d, nb, nh, cd, 1024, 16, cross_attn=False))
            got = td.count_parameters(m)
            assert got == n, f"{name} V={vocab}: {got} != {n}"
        d, nb, nh, cd = sizes["small"]
        ar = td.DiT(td.DiTConfig(50258, d, nb, nh, cd, 1024, 1, causal=True))
        assert td.count_parameters(ar) == 162_246_482, td.count_parameters(ar)
    print("parameter counts match spec 1.5 (tiny 32,941,010; small 169,627,218; AR small 162,246,482)")


def check_tiny_state_dict_names():
    with torch.device("meta"):
        m = td.DiT(td.DiTConfig(50258, 256, 8, 8, 64, 1024, 16, cross_attn=False))
    sd = m.reference_state_dict()
    assert tuple(sd["backbone.blocks.0.attn_qkv.weight"].shape) == (768, 256)
    assert tuple(sd["backbone.blocks.7.adaLN_modulation.weight"].shape) == (1536, 64)
    assert tuple(sd["backbone.output_layer.adaLN_modulation.weight"].shape) == (512, 64)
    assert tuple(sd["backbone.rotary_emb.inv_freq"].shape) == (16,)
    assert tuple(sd["backbone.sigma_map.mlp.0.weight"].shape) == (64, 256)
    assert tuple(sd["backbone.vocab_embed.embedding"].shape) == (50258, 256)


def check_mask_example():
    """Spec 1.4 example, n=6, L'=2."""
    rows = ["110000000000", "110000000000", "001100110000", "001100110000", "000011111100", "000011111100",
            "000000110000", "000000110000", "000000111100", "000000111100", "000000111111", "000000111111"]
    want = torch.tensor([[c == "1" for c in r] for r in rows])
    assert torch.equal(td.block_diff_mask(6, 2), want)


def save(name, tensors, meta, check_only):
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    if check_only:
        return
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    size = os.path.getsize(path)
    assert size < 1_000_000, f"{name} is {size} bytes"
    print(f"wrote {name}: {len(tensors)} tensors, {size} bytes")


def weights_only(model, with_eps_buffers):
    """A plain reference-style checkpoint: only the backbone state_dict (incl. rotary inv_freq) and, like a BD3-LM
    Lightning state_dict with algo.var_min, the scalar buffers sampling_eps_min/max (shape ())."""
    T = {k: v.detach().clone() for k, v in model.reference_state_dict().items()}
    if with_eps_buffers:
        T["sampling_eps_min"] = torch.tensor(0.45)
        T["sampling_eps_max"] = torch.tensor(0.95)
    return T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="run the assertions only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    check_mask_example()
    check_tiny_state_dict_names()
    check_param_counts()
    check_zero_output_gpt2_vocab()
    bd3_model = None
    for algo in ("bd3", "mdlm", "sedd"):
        T, meta, model = diffusion_case(algo)
        save(f"{algo}.safetensors", T, meta, args.check)
        if algo == "bd3":
            bd3_model = model
            save("bd3.weights.safetensors", weights_only(model, True), {"format": "pt"}, args.check)
    T, meta = ar_case()
    save("ar.safetensors", T, meta, args.check)
    save("ar.weights.safetensors", weights_only(build("ar"), False), {"format": "pt"}, args.check)
    T, meta = window_case(bd3_model)
    save("bd3_window.safetensors", T, meta, args.check)
    import make_sampler_fixtures
    make_sampler_fixtures.main(args.check)
    print("all model checks passed")


if __name__ == "__main__":
    main()
