"""Size table for corpus files: documents, UTF-8 bytes, whitespace words, GPT-2 tokens.

usage: stats.py FILE.jsonl|FILE.txt...

GPT-2 tokens are counted exactly when CORPUS_GPT2_TIKTOKEN names a `gpt2.tiktoken` rank file
(tiktoken cannot download it offline; the openai-whisper sdist ships one in whisper/assets/);
otherwise they are estimated as bytes / 4.0, the ratio measured on the training mix.
"""
import json
import os
import sys

BYTES_PER_TOKEN = 4.0


def gpt2_encoder():
    path = os.environ.get("CORPUS_GPT2_TIKTOKEN")
    if not path:
        return None
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    return tiktoken.Encoding(
        name="gpt2", mergeable_ranks=load_tiktoken_bpe(path), special_tokens={"<|endoftext|>": 50256},
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def texts(path):
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            for line in f:
                yield json.loads(line)["text"]
        else:
            yield f.read()


def main(paths):
    enc = gpt2_encoder()
    print(f"{'file':28} {'docs':>6} {'bytes':>11} {'words':>10} {'gpt2 tokens':>12}")
    for path in paths:
        docs = size = words = tokens = 0
        for text in texts(path):
            docs += 1
            size += len(text.encode("utf-8"))
            words += len(text.split())
            if enc:
                tokens += len(enc.encode_ordinary(text))
        shown = f"{tokens:12d}" if enc else f"{'~' + str(round(size / BYTES_PER_TOKEN)):>12}"
        print(f"{os.path.basename(path):28} {docs:6d} {size:11d} {words:10d} {shown}")


if __name__ == "__main__":
    main(sys.argv[1:])
