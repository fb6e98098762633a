#!/usr/bin/env python3
"""Self-check of hf_gpt2.py without downloading anything: builds a tiny random GPT-2 and a small BPE
tokenizer (with <|endoftext|>) in a temporary directory, runs hf_gpt2.py on a few texts with a short
context, and compares every answer with an independent re-implementation of the reference loop
(bd3lms `record_generative_perplexity`: windows of `ctx`, stride `stride`, nlls accumulated per
position, EOS targets excluded). Needs torch, tokenizers, transformers.

    python3 pipelines/scorers/check_hf_gpt2.py --text Tests/BlockDiffusionTests/Fixtures/tokenizer/sample.txt
"""
import argparse, json, math, os, subprocess, sys, tempfile

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast


def reference_nll(model, ids, ctx, stride, eos):
    n = len(ids)
    acc, val = torch.zeros(n), torch.zeros(n)
    for w in range(max(1, math.ceil((n - ctx + stride) / stride))):
        if n < 2:
            break
        start = 0 if w == 0 else w * stride
        end = min(ctx, n) if w == 0 else min(start + ctx, n)
        x = torch.tensor([ids[start:end]])
        with torch.no_grad():
            logits = model(x).logits.transpose(-1, -2)
        nll = F.cross_entropy(logits[..., :-1], x[..., 1:], reduction="none")[0]
        v = (x[0, 1:] != eos).float()
        if w == 0:
            acc[start + 1:end] += nll; val[start + 1:end] += v
        else:
            us = start + ctx - stride; uw = end - us
            acc[us:end] += nll[-uw:]; val[us:end] += v[-uw:]
    return float((acc * val).double().sum()), int(val.sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True, help="a text file (tokenizer training data and test texts)")
    ap.add_argument("--context", type=int, default=16)
    ap.add_argument("--stride", type=int, default=6)
    args = ap.parse_args()
    text = open(args.text, encoding="utf-8").read()
    with tempfile.TemporaryDirectory() as d:
        t = Tokenizer(models.BPE())
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.decoder = decoders.ByteLevel()
        t.train([args.text], trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>", bos_token="<|endoftext|>").save_pretrained(d)
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(vocab_size=t.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                   bos_token_id=t.token_to_id("<|endoftext|>"), eos_token_id=t.token_to_id("<|endoftext|>"))).save_pretrained(d)
        tok = AutoTokenizer.from_pretrained(d)
        model = AutoModelForCausalLM.from_pretrained(d).eval()
        texts = ["<|endoftext|>" + text[:300] + "<|endoftext|>" + text[300:500], text[:40], "a", ""]
        reqs = "".join(json.dumps({"id": i, "text": s}) + "\n" for i, s in enumerate(texts))
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run([sys.executable, os.path.join(here, "hf_gpt2.py"), "--model", d, "--context", str(args.context),
                              "--stride", str(args.stride), "--device", "cpu"],
                             input=reqs.encode(), capture_output=True, check=True).stdout.decode().splitlines()
        assert len(out) == len(texts), out
        for i, s in enumerate(texts):
            nll, n = reference_nll(model, tok(s)["input_ids"], args.context, args.stride, tok.eos_token_id)
            got = json.loads(out[i])
            ok = got["id"] == i and got["tokens"] == n and abs(got["nll"] - nll) <= 1e-4 * max(1.0, nll)
            print(f"text {i}: hf_gpt2.py {got}  reference nll {nll:.6f} tokens {n}  {'OK' if ok else 'MISMATCH'}")
            if not ok:
                sys.exit(1)
    print("hf_gpt2.py agrees with the reference loop")


if __name__ == "__main__":
    main()
