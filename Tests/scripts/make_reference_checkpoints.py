"""Checkpoints in every layout the reference code (kuleshov-group/bd3lms) writes, with its own outputs.

    python3 Tests/scripts/make_reference_checkpoints.py --ref PATH/TO/bd3lms          # writes the fixtures
    BD3LMS_REF=PATH/TO/bd3lms python3 Tests/scripts/make_reference_checkpoints.py
    python3 Tests/scripts/make_reference_checkpoints.py --ref ... --check-ours RUN.safetensors ...
                                    # strict=True load of our files into the reference's modules

The reference is imported from the checkout given on the command line (never copied here). Needs torch,
safetensors, omegaconf, einops, huggingface_hub and transformers (for `models/hf`); CPU float32. `--check-ours`
with from_pretrained needs the reference's pinned transformers==4.49.0 (5.x lacks what its BD3LM class expects):
    pip install --target DIR "transformers==4.49.0" "huggingface_hub<1.0" "tokenizers<0.22"; PYTHONPATH=DIR python3 ...

Output: Tests/BlockDiffusionTests/Fixtures/reference/
  v512/hf/              BD3LM.save_pretrained: config.json + model.safetensors (bd3lm, L'=4, L=16)
  v512/hf-sharded/      the same with max_shard_size: model-0000x-of-0000y.safetensors + index
  v512/bare/dit.safetensors + config.json   models/dit.py DIT.state_dict() (no `backbone.` prefix)
  v512/lightning.ckpt   torch.save of a Lightning checkpoint dict: state_dict (backbone.* + the var_min
                        buffers), ema.shadow_params, sampling_eps_min/max; live weights ≠ EMA weights
  v512/lightning.safetensors  pipelines/convert/lightning_to_safetensors.py applied to lightning.ckpt (EMA)
  v512/lightning-names.safetensors  the EMA weights under the Lightning names (backbone.*, var_min buffers), no metadata
  v50258/hf/            BD3LM.save_pretrained in bfloat16 (GPT-2 vocabulary + mask; small hidden size)
  v512/expect.safetensors, v50258/expect.safetensors   the reference's outputs on these weights:
    input.x0 (B, L) I64: BOS (V-2) then tokens in [0, V-2)
    expect.nll_l1 [1]: exact NLL at L' = 1 (every token masked, SUBS, position 0 excluded), the DIT built with
                       block_size 1 and the same weights
    input.window (B, 2L') I64: block 0 clean, block 1 with some tokens masked
    expect.window.logp (B, L', V) (V=512) or expect.window.lp_x0 / expect.window.max_logp (B, L') (V=50258):
                       log p_x0 of the last block from DIT.forward(sample_mode=True) without KV cache (the
                       sampler's conditional probabilities; mask column excluded as SUBS does)
    input.first (1, 2L'), expect.first.logp (1, L', V) (V=512): the same for block 0 of x0 then a fully masked
                       block, the state of draft's first step with block 0 as the prompt
"""
import argparse
import json
import math
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "Tests", "BlockDiffusionTests", "Fixtures", "reference")
CONVERTER = os.path.join(ROOT, "pipelines", "convert", "lightning_to_safetensors.py")

L, BS, B = 16, 4, 2


def reference(path):
    if not path or not os.path.isdir(os.path.join(path, "models")):
        sys.exit("give the bd3lms checkout with --ref PATH or BD3LMS_REF=PATH")
    sys.path.insert(0, os.path.abspath(path))
    import models.dit as dit  # noqa: E402
    from models.hf import BD3LM, BD3LMConfig  # noqa: E402
    import models.ema as ema  # noqa: E402
    return dit, BD3LM, BD3LMConfig, ema


def randomize(model, seed):
    """O(1) activations (a 0.02 init leaves tiny models nearly insensitive to the weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embedding"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif "norm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))


def dit_config(V, hidden, heads, cond, nblocks, block_size):
    import omegaconf
    return omegaconf.OmegaConf.create(dict(
        block_size=block_size,
        model=dict(length=L, hidden_size=hidden, cond_dim=cond, n_heads=heads, n_blocks=nblocks, dropout=0.0,
                   tie_word_embeddings=False, attn_backend="sdpa"),
        algo=dict(parameterization="subs", cross_attn=True, causal_attention=False),
        loader=dict(eval_batch_size=B), sampling=dict(kv_cache=False)))


def subs_logp(logits, mask):
    """SUBS log-probabilities of x0 (mask column excluded), fp64."""
    x = logits.double().clone()
    x[..., mask] = -1e6
    return x - torch.logsumexp(x, dim=-1, keepdim=True)


def make(ref, V, hidden, heads, cond, nblocks, out, dtype, layouts):
    dit, BD3LM, BD3LMConfig, ema = ref
    os.makedirs(out, exist_ok=True)
    mask, bos = V - 1, V - 2
    hc = BD3LMConfig(block_size=BS, vocab_size=V, model_length=L, hidden_dim=hidden, cond_dim=cond,
                     n_blocks=nblocks, n_heads=heads, dropout=0.0, attn_backend="sdpa",
                     sampling_eps_min=0.45, sampling_eps_max=0.95)
    hf = BD3LM(hc)
    randomize(hf, seed=V)
    if dtype == torch.bfloat16:   # weights exactly representable in bf16: the fixture is half the size
        with torch.no_grad():
            for p in hf.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    hf.eval()
    backbone = {k[len("backbone."):]: v for k, v in hf.state_dict().items() if k.startswith("backbone.")}

    # HF layouts.
    hf_save = BD3LM(hc)
    hf_save.load_state_dict(hf.state_dict(), strict=True)
    hf_save.to(dtype).save_pretrained(os.path.join(out, "hf"))
    if "sharded" in layouts:
        hf_save.save_pretrained(os.path.join(out, "hf-sharded"), max_shard_size="20KB")

    # models/dit.py DIT with the same weights at L' = 4 (windows) and L' = 1 (exact NLL).
    def dit_model(block_size):
        m = dit.DIT(dit_config(V, hidden, heads, cond, nblocks, block_size), vocab_size=V)
        m.load_state_dict(backbone, strict=True)
        return m.eval()
    d4, d1 = dit_model(BS), dit_model(1)

    from safetensors.torch import save_file
    if "bare" in layouts:
        os.makedirs(os.path.join(out, "bare"), exist_ok=True)
        save_file({k: v.contiguous() for k, v in d4.state_dict().items()}, os.path.join(out, "bare", "dit.safetensors"),
                  metadata={"format": "pt"})
        with open(os.path.join(out, "hf", "config.json")) as f:
            c = json.load(f)
        with open(os.path.join(out, "bare", "config.json"), "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
    if "lightning" in layouts:
        # A Lightning checkpoint as diffusion.py's on_save_checkpoint leaves it: live weights in state_dict, the EMA
        # shadow (here: the weights whose outputs are recorded) in ema.shadow_params, in parameters() order.
        live = {("backbone." + k): v.clone() for k, v in backbone.items()}
        g = torch.Generator().manual_seed(7)
        for k in live:
            if not k.endswith("inv_freq"):
                live[k] += 0.5 * torch.randn(live[k].shape, generator=g)
        live["sampling_eps_min"] = torch.tensor(0.45)
        live["sampling_eps_max"] = torch.tensor(0.95)
        e = ema.ExponentialMovingAverage(d4.parameters(), decay=0.9999)
        torch.save({"state_dict": live, "ema": e.state_dict(), "sampling_eps_min": torch.tensor(0.45),
                    "sampling_eps_max": torch.tensor(0.95), "global_step": 10, "epoch": 0,
                    "hyper_parameters": {"config": {"block_size": BS, "algo": {"name": "bd3lm"},
                                                    "model": {"length": L, "n_heads": heads}}}},
                   os.path.join(out, "lightning.ckpt"))
        subprocess.run([sys.executable, CONVERTER, os.path.join(out, "lightning.ckpt"),
                        os.path.join(out, "lightning.safetensors"), "--block-size", str(BS), "--algo", "bd3",
                        "--n-heads", str(heads), "--length", str(L)], check=True)
        from safetensors.torch import load_file
        conv = load_file(os.path.join(out, "lightning.safetensors"))
        for k, v in backbone.items():
            assert torch.equal(conv["backbone." + k], v), k
        named = {("backbone." + k): v.contiguous() for k, v in backbone.items()}
        named["sampling_eps_min"] = torch.tensor(0.45)
        named["sampling_eps_max"] = torch.tensor(0.95)
        save_file(named, os.path.join(out, "lightning-names.safetensors"), metadata={"format": "pt"})

    # The reference's outputs.
    g = torch.Generator().manual_seed(1000 + V)
    x0 = torch.randint(0, V - 2, (B, L), generator=g)
    x0[:, 0] = bos
    tensors = {"input.x0": x0}
    with torch.no_grad():
        xt = torch.full_like(x0, mask)
        logits = d1(torch.cat([xt, x0], dim=1), torch.zeros(B))
        lp = subs_logp(logits, mask).gather(-1, x0[..., None])[..., 0]
        nll = -(lp[:, 1:]).mean()
        tensors["expect.nll_l1"] = torch.tensor([nll.item()], dtype=torch.float64)
        window = x0[:, :2 * BS].clone()
        noisy = torch.rand((B, BS), generator=g) < 0.6
        noisy[:, 0] = True
        window[:, BS:][noisy] = mask
        tensors["input.window"] = window
        wl = d4(window, torch.zeros(B), sample_mode=True)[:, -BS:]
        logp = subs_logp(wl, mask)
        if V <= 4096:
            tensors["expect.window.logp"] = logp
        tensors["expect.window.lp_x0"] = logp.gather(-1, x0[:, BS:2 * BS, None])[..., 0]
        tensors["expect.window.max_logp"] = logp.max(dim=-1).values
        if V <= 4096:
            # The first forward of draft with block 0 as the prompt: block 1 fully masked (row 0 of x0).
            first = torch.cat([x0[:1, :BS], torch.full((1, BS), mask)], dim=1)
            tensors["input.first"] = first
            tensors["expect.first.logp"] = subs_logp(d4(first, torch.zeros(1), sample_mode=True)[:, -BS:], mask)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "expect.safetensors"),
              metadata={"vocab_size": str(V), "mask_id": str(mask), "bos_id": str(bos), "block_size": str(BS),
                        "length": str(L), "generator": "Tests/scripts/make_reference_checkpoints.py",
                        "torch": torch.__version__})
    print(f"{out}: V={V} nll_l1={nll.item():.9f}")


def check_ours(ref, paths):
    """Loads our safetensors files with strict=True into the reference's HF module (BD3LM) and into a
    Lightning-like module (backbone = models/dit.py DIT, plus the var_min buffers exactly when the algo has them)."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    import omegaconf
    dit, BD3LM, BD3LMConfig, _ = ref
    for p in paths:
        if os.path.isdir(p):
            m, info = BD3LM.from_pretrained(p, output_loading_info=True)
            bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
            assert not bad, f"{p}: {bad}"
            print(f"{p}: BD3LM.from_pretrained ok, no missing/unexpected keys ({sum(x.numel() for x in m.parameters())} parameters)")
            continue
        with safe_open(p, "pt") as f:
            meta = f.metadata()
        sd = load_file(p)
        c = json.loads(meta["model_config"])
        algo = meta["algo"]
        cfg = omegaconf.OmegaConf.create(dict(
            block_size=int(meta["block_size"]),
            model=dict(length=c["length"], hidden_size=c["hiddenSize"], cond_dim=c["condDim"], n_heads=c["nHeads"],
                       n_blocks=c["nBlocks"], dropout=0.0, tie_word_embeddings=False, attn_backend="sdpa"),
            algo=dict(parameterization={"ar": "ar", "sedd": "sedd"}.get(algo, "subs"), cross_attn=algo == "bd3",
                      causal_attention=algo == "ar"),
            loader=dict(eval_batch_size=1), sampling=dict(kv_cache=False)))

        class Lightning(torch.nn.Module):   # the state_dict layout of diffusion.py's Diffusion module
            def __init__(self):
                super().__init__()
                self.backbone = dit.DIT(cfg, vocab_size=c["vocabSize"])
                if algo == "bd3":   # algo.var_min is true only in configs/algo/bd3lm.yaml
                    self.register_buffer("sampling_eps_min", torch.tensor(0.0))
                    self.register_buffer("sampling_eps_max", torch.tensor(0.0))
        Lightning().load_state_dict(sd, strict=True)
        print(f"{p}: {algo} strict=True load into the reference modules ok")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default=os.environ.get("BD3LMS_REF"), help="bd3lms checkout (or BD3LMS_REF)")
    ap.add_argument("--check-ours", nargs="*", default=None, help="our checkpoint files / HF export directories")
    a = ap.parse_args()
    ref = reference(a.ref)
    if a.check_ours is not None:
        check_ours(ref, a.check_ours)
        return
    torch.manual_seed(0)
    make(ref, 512, 16, 2, 8, 2, os.path.join(OUT, "v512"), torch.float32, {"sharded", "bare", "lightning"})
    make(ref, 50258, 8, 2, 8, 1, os.path.join(OUT, "v50258"), torch.bfloat16, set())


if __name__ == "__main__":
    main()
