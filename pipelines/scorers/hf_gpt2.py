#!/usr/bin/env python3
"""Scorer adapter for `score gen --scorer-cmd` (protocol: docs/scorer-protocol.md): a Hugging Face
`transformers` causal LM, by default GPT-2 Large — the generative-perplexity scorer of the BD3-LM and
MDLM papers (bd3lms `Metrics.record_generative_perplexity`):

  * the text is tokenised with the model's tokenizer (special-token text such as "<|endoftext|>" maps
    to its id, as the reference's re-tokenisation does); optional truncation to --max-length tokens
    (the reference truncates to the diffusion model's length);
  * context 1024 (GPT-2's n_positions), stride 512: the first window [0, ctx) scores positions
    1..ctx-1; window i starts at i*stride, ends at min(start+ctx, n) and scores only the positions
    [start+ctx-stride, end) (the ones past the previous window);
  * every target token equal to EOS is excluded (the reference excludes all tokens == eos_token_id);
  * answer: {"id": <id>, "nll": <sum of the scored tokens' NLL, nats, float64>, "tokens": <count>}.

Any local or hub causal LM works with --model (a path or hub name); --context defaults to the model's
maximum positions capped at 1024. Diagnostics go to stderr; stdout carries only protocol lines.

    score gen --scorer-cmd 'python3 pipelines/scorers/hf_gpt2.py --model gpt2-large' -t tokenizer.json -i samples.tok
"""
import argparse
import json
import sys


def window_plan(n, ctx, stride):
    """(start, end, score_from) triples; the same arithmetic as GenerativeWindows.plan in Swift."""
    if n <= ctx:
        return [(0, n, min(1, n))]
    count = -(-(n - ctx + stride) // stride)
    plan = [(0, ctx, 1)]
    for i in range(1, count):
        start = i * stride
        plan.append((start, min(start + ctx, n), start + ctx - stride))
    return plan


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gpt2-large", help="causal LM: hub name or local directory (default gpt2-large)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer name/path if not the model's")
    ap.add_argument("--context", type=int, default=None, help="window size in tokens (default min(model max positions, 1024))")
    ap.add_argument("--stride", type=int, default=None, help="window stride (default context // 2)")
    ap.add_argument("--max-length", type=int, default=None, help="truncate each text to this many tokens first")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tok = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    model = model.to(device=device, dtype=getattr(torch, args.dtype)).eval()
    cfg = model.config
    max_pos = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1024
    ctx = args.context or min(max_pos, 1024)
    stride = args.stride or ctx // 2
    if not (ctx >= 2 and 1 <= stride < ctx and ctx <= max_pos):
        sys.exit(f"hf_gpt2.py: need 1 <= stride < context <= {max_pos} (got context {ctx}, stride {stride})")
    eos = tok.eos_token_id
    print(f"hf_gpt2.py: {args.model} on {device}, context {ctx}, stride {stride}, eos {eos}", file=sys.stderr)

    out = sys.stdout
    for raw in iter(sys.stdin.buffer.readline, b""):
        req = json.loads(raw)
        enc = tok(req["text"], truncation=args.max_length is not None, max_length=args.max_length)
        ids = enc["input_ids"]
        nll, count = 0.0, 0
        with torch.inference_mode():
            for start, end, score_from in window_plan(len(ids), ctx, stride):
                if score_from >= end:
                    continue
                x = torch.tensor([ids[start:end]], device=device)
                logits = model(input_ids=x).logits[0, :-1].float()      # row r predicts position start+r+1
                targets = x[0, 1:]
                token_nll = F.cross_entropy(logits, targets, reduction="none")
                lo = score_from - start - 1
                token_nll, targets = token_nll[lo:], targets[lo:]
                valid = targets != eos if eos is not None else torch.ones_like(targets, dtype=torch.bool)
                nll += token_nll[valid].double().sum().item()
                count += int(valid.sum().item())
        out.write(json.dumps({"id": req["id"], "nll": nll, "tokens": count}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
