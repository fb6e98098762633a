#!/usr/bin/env python3
"""Turn a bd3lms Lightning checkpoint (.ckpt, a torch pickle) into a safetensors checkpoint the bd3 tools open.

    python3 pipelines/convert/lightning_to_safetensors.py IN.ckpt OUT.safetensors [--live] \
        [--algo bd3|mdlm|ar|sedd] [--block-size N] [--n-heads N] [--length N] [--unsafe-pickle]

Needs torch and safetensors (pip install torch safetensors); an optional dependency of the toolkit, which never
unpickles anything itself.

Weights: the EMA shadow (`ema.shadow_params`, what the reference evaluates and samples with, and what its
published Hugging Face models hold) by default; `--live` takes `state_dict` as trained instead. The output holds
the reference names (`backbone.*`, plus the `sampling_eps_min`/`sampling_eps_max` buffers when present) and
metadata in the toolkit's keys: algo, block_size, seq_len, model_config, mask_id (= V-1, the reference's mask
when the tokenizer has none) and, for the GPT-2 vocabulary (V = 50258), bos_id = eos_id = 50256.
Facts read from the checkpoint's hyper_parameters (algo, block_size, model.length, model.n_heads) can be given
or overridden on the command line; what is known from neither is refused, never guessed.

The pickle is read with torch.load(weights_only=True); a checkpoint whose hyper_parameters hold other objects
(e.g. an omegaconf config) needs --unsafe-pickle, which runs the pickle: only for files you trust.
"""
import argparse
import json
import os
import sys


def fail(msg):
    sys.exit(f"lightning_to_safetensors: {msg}")


def get(d, *path):
    for k in path:
        if d is None:
            return None
        try:
            d = d[k] if not hasattr(d, "get") else d.get(k)
        except (KeyError, TypeError, AttributeError):
            return None
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--live", action="store_true", help="live weights instead of the EMA shadow")
    ap.add_argument("--algo", choices=["bd3", "mdlm", "ar", "sedd"])
    ap.add_argument("--block-size", type=int)
    ap.add_argument("--n-heads", type=int)
    ap.add_argument("--length", type=int)
    ap.add_argument("--unsafe-pickle", action="store_true")
    a = ap.parse_args()
    try:
        import torch
        from safetensors.torch import save_file
    except ImportError:
        fail("needs torch and safetensors: pip install torch safetensors")

    try:
        ck = torch.load(a.input, map_location="cpu", weights_only=not a.unsafe_pickle)
    except Exception as e:  # noqa: BLE001
        fail(f"{a.input}: cannot read ({str(e).splitlines()[0]}); if you trust the file, add --unsafe-pickle")
    sd = ck.get("state_dict") if isinstance(ck, dict) else None
    if not isinstance(sd, dict):
        fail(f"{a.input}: no state_dict; not a Lightning checkpoint")
    names = [k for k in sd if k.startswith("backbone.")]
    if not names:
        fail(f"{a.input}: no backbone.* tensors in state_dict")
    params = [k for k in names if not k.endswith(".inv_freq")]   # the only buffer of the DiT backbone
    out = {}
    if a.live:
        for k in names:
            out[k] = sd[k]
    else:
        shadow = get(ck, "ema", "shadow_params")
        if shadow is None:
            fail(f"{a.input}: no ema.shadow_params (trained with training.ema = 0?); use --live for the trained weights")
        if len(shadow) != len(params):
            fail(f"{a.input}: {len(shadow)} EMA tensors for {len(params)} backbone parameters; use --live")
        for k, s in zip(params, shadow):
            if tuple(s.shape) != tuple(sd[k].shape):
                fail(f"{a.input}: EMA tensor for {k} has shape {tuple(s.shape)}, expected {tuple(sd[k].shape)}")
            out[k] = s
        for k in names:
            if k not in out:
                out[k] = sd[k]
    for k in ("sampling_eps_min", "sampling_eps_max"):
        v = ck.get(k, sd.get(k))
        if v is not None:
            out[k] = torch.as_tensor(v, dtype=torch.float32).reshape(())
    out = {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}

    hp = get(ck, "hyper_parameters", "config")
    algo_name = a.algo or get(hp, "algo", "name")
    algo = {"bd3lm": "bd3", "bd3": "bd3", "mdlm": "mdlm", "ar": "ar", "sedd": "sedd"}.get(algo_name)
    if algo is None:
        fail(f"{a.input}: the algorithm is not recorded; add --algo bd3|mdlm|ar|sedd")
    length = a.length or get(hp, "model", "length")
    heads = a.n_heads or get(hp, "model", "n_heads")
    if not length:
        fail(f"{a.input}: the model length is not recorded; add --length N (1024 for the OWT models)")
    if not heads:
        fail(f"{a.input}: the head count is not recorded; add --n-heads N (12 for the small model)")
    bs = a.block_size or get(hp, "block_size")
    if algo == "ar":
        bs = 1
    elif algo in ("mdlm", "sedd"):
        bs = length
    elif not bs:
        fail(f"{a.input}: the block size is not recorded; add --block-size N")
    emb = out["backbone.vocab_embed.embedding"]
    V, D = emb.shape
    n_blocks = sum(1 for k in out if k.endswith(".attn_qkv.weight"))
    sigma = out.get("backbone.sigma_map.mlp.0.weight")
    cond = sigma.shape[0] if sigma is not None else 128
    config = {"causal": algo == "ar", "condDim": int(cond), "dropout": 0.1, "hiddenSize": int(D), "length": int(length),
              "nBlocks": n_blocks, "nHeads": int(heads), "timeConditioning": algo == "sedd", "vocabSize": int(V)}
    meta = {"format": "pt", "algo": algo, "block_size": str(bs), "seq_len": str(length), "vocab_size": str(V),
            "mask_id": str(V - 1), "model_config": json.dumps(config, sort_keys=True, separators=(",", ":")),
            "source": os.path.basename(a.input) + (" (live)" if a.live else " (ema)")}
    if V == 50258:
        meta.update(bos_id="50256", eos_id="50256", pad_id="50256")
    if algo != "bd3":   # only bd3lm has the var_min buffers
        out.pop("sampling_eps_min", None)
        out.pop("sampling_eps_max", None)
    elif "sampling_eps_min" in out:
        meta["sampling_eps_min"] = repr(float(out["sampling_eps_min"]))
        meta["sampling_eps_max"] = repr(float(out["sampling_eps_max"]))
    tmp = a.output + ".tmp"
    save_file(out, tmp, metadata=meta)
    os.replace(tmp, a.output)
    print(f"{a.output}: {algo}, L'={bs}, L={length}, V={V}, {'live' if a.live else 'EMA'} weights", file=sys.stderr)


if __name__ == "__main__":
    main()
