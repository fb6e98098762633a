#!/usr/bin/env python3
"""Regenerate Tests/BlockDiffusionTests/Fixtures/tokenizer/ (parity fixtures for TokenizerTests).

Needs: tokenizers, tiktoken, regex (PyPI); a built `tokenize` binary; the GPT-2 ranks file
`gpt2.tiktoken` (in the openai-whisper sdist: `pip download --no-deps --no-binary :all:
openai-whisper`, file whisper/assets/gpt2.tiktoken); a real-text file to cut the sample from
(e.g. the World English Bible: `diatheke -b engWEB2015eb -f plain -k "Genesis 1:1-Revelation 22:21"`).

  swift build && python3 Tests/scripts/make_tokenizer_fixtures.py \
      --tokenize .build/debug/tokenize --tiktoken gpt2.tiktoken --text web.txt

Writes:
  sample.txt        ~120 KB of real text (three excerpts of --text)
  cases.json        adversarial inputs, base64 (emoji, CJK, combining marks, whitespace runs,
                    numbers, contractions, scripts, CRLF, tabs, invalid UTF-8, random bytes, ...)
  ours.json         tokenizer trained by `tokenize train --vocab-size 1003` on sample.txt
  hf.json           tokenizer trained by HF tokenizers (ByteLevel BPE, vocab 1000) on sample.txt
  gpt2_excerpt.json GPT-2 reduced to the merges the cases and sample use (ids renumbered,
                    gpt2_ids maps them back) — the full 50k-merge GPT-2 file is not committed
  expected.json     {"ours"|"hf"|"gpt2": {case: ids}} from HF tokenizers / tiktoken (reference)

Expected ids for valid UTF-8 come from HF `Tokenizer.encode` (ours, hf) and tiktoken
`encode_ordinary` (gpt2), and the script checks that HF on our imported GPT-2 agrees with tiktoken.
HF cannot take invalid UTF-8 at all; for those cases the reference is the documented rule: split
the text decoded with errors="surrogateescape" by the GPT-2 regex (`regex` module; lone surrogates
are class "other", like U+FFFD), then BPE each piece's original bytes with the HF model
(`model.tokenize`) or tiktoken (`_encode_single_piece`). The same emulation is checked against
HF/tiktoken on all valid cases first.
"""
import argparse, base64, json, os, random, subprocess, sys, tempfile

import regex
import tiktoken
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "BlockDiffusionTests", "Fixtures", "tokenizer")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, map(chr, cs)))


B2U = bytes_to_unicode()


def cases():
    ws = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
    c = {
        "empty": b"",
        "ascii": b"Hello, world! It's 2024 -- isn't it? Yes: 42.",
        "contractions": "I'm you're he's we've they'll she'd it'd 'S 'T DON'T o'clock '' 's 'll' ’s rock'n'roll 've'".encode(),
        "emoji": "Hi 👋🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 ❤️ 😀😃😄 🧑🏿‍🚀 #️⃣ a😀b".encode(),
        "cjk": "中文分词测试：你好，世界！日本語のテキスト、カタカナ。한국어 텍스트입니다. 𠀀𠀁 (ext B)".encode(),
        "combining": "e\u0301 cafe\u0301 n\u0303 Z\u0351\u0352\u0353a\u0300\u0301\u0302l\u0334g\u0335o a\u20dd \u0915\u093f".encode(),
        "whitespace_runs": ("a" + " " * 100 + "b" + "\n" * 7 + "c \n \n" + "\t\t  \t x" + " " * 3 + "\n\n\n   y   ").encode(),
        "all_whitespace": ("x" + ws + "y " + ws + " z" + ws).encode(),
        "ws_each": "".join(f"a{w}b {w}c{w}{w}d " for w in ws).encode(),
        "not_whitespace": "a\u200bb\ufeffc\u180ed\u2060e \u200b f".encode(),
        "numbers": "1234567890 3.14159 1,000,000 -42 0x1F 1e-9 ٣٤٥ ۱۲۳ ४२ Ⅻ ⅷ ½ ¾ ² ³ ① 10th 2nd".encode(),
        "scripts": "Привет мир! Γειά σου Κόσμε مرحبا بالعالم שלום עולם नमस्ते दुनिया สวัสดีชาวโลก Ελλάδα ÄÖÜ ß ǅ".encode(),
        "crlf_tabs": b"line one\r\nline two\r\n\r\n\tindented\r\n  \tmixed \t\r\n",
        "punctuation": "...!!! ??? -- --- «guillemets» „quotes“ 'single' \"double\" (paren) [br] {c} <a href='x'>y</a> ~!@#$%^&*()_+".encode(),
        "code": b"def f(x):\n    return x**2  # square\n\nif __name__ == '__main__':\n\tprint(f(3))\n",
        "long_word": b"a" * 5000 + b" " + b"ab" * 1500 + b" " + b"7" * 3000,
        "long_space": b" " * 4000 + b"x" + b"\n" * 3000,
        "invalid_bytes": b"abc \xff def \xfe\xff \x80 lone \xc0\xaf overlong \xed\xa0\x80 surrogate \xf4\x90\x80\x80 big",
        "invalid_truncated": b"it\xe2\x80s caf\xc3 na\xefve \xe4\xb8 end\xf0\x9f\x98",
        "invalid_mixed": b"'\xffs \xff's  \x80\x80 x \xff\xff\xff 12\xff34 \xffabc\xff \n\xff\n \t\xff",
        "invalid_only": bytes(range(0x80, 0x100)),
        "all_bytes": bytes(range(256)),
    }
    rng = random.Random(1234)
    c["random_bytes"] = bytes(rng.randrange(256) for _ in range(3000))
    # Sweep of assigned scalars from many blocks (letters, marks, numbers, symbols, spaces).
    sweep = []
    for _ in range(3000):
        plane = rng.choice([0, 0, 0, 1, 2])
        cp = plane * 0x10000 + rng.randrange(0x10000)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        sweep.append(chr(cp))
        if rng.random() < 0.3:
            sweep.append(rng.choice([" ", "  ", "\n", "'s", "1", "a"]))
    c["unicode_sweep"] = "".join(sweep).encode("utf-8")
    words = ["the", "The", " ", "  ", "\n", "it's", "42", "3.5", "!", "?!", "—", "é", "naïve", "日本", "\t", "can't", "'ll", "x1", "😀"]
    c["random_words"] = "".join(rng.choice(words) + rng.choice(["", " "]) for _ in range(3000)).encode()
    return c


def pieces(data: bytes):
    text = data.decode("utf-8", "surrogateescape")
    return [m.encode("utf-8", "surrogateescape") for m in regex.findall(PAT, text)]


def emulate_hf(tok: Tokenizer, data: bytes):
    ids = []
    for p in pieces(data):
        ids += [t.id for t in tok.model.tokenize("".join(B2U[b] for b in p))]
    return ids


def emulate_tiktoken(enc, data: bytes):
    ids = []
    for p in pieces(data):
        ids += enc._encode_single_piece(p)
    return ids


def bpe_trace(piece: bytes, ranks, vocab_ids):
    """Pure-Python BPE on one piece: ids and the merge ranks applied."""
    parts = [bytes([b]) for b in piece]
    used = []
    while len(parts) > 1:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get((parts[i], parts[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        r, i = best
        used.append(r)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [vocab_ids[p] for p in parts], used


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenize", required=True)
    ap.add_argument("--tiktoken", required=True)
    ap.add_argument("--text", required=True)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)

    # Sample: three ~40 KB excerpts at line boundaries.
    raw = open(a.text, "rb").read()
    sample = b""
    for frac in (0.05, 0.45, 0.85):
        s = raw.index(b"\n", int(len(raw) * frac)) + 1
        e = raw.index(b"\n", s + 40000) + 1
        sample += raw[s:e]
    open(os.path.join(OUT, "sample.txt"), "wb").write(sample)
    cs = cases()
    json.dump({k: base64.b64encode(v).decode() for k, v in cs.items()}, open(os.path.join(OUT, "cases.json"), "w"), indent=0, sort_keys=True)
    allcases = dict(cs, sample=sample)

    # (a) our trainer.
    ours_path = os.path.join(OUT, "ours.json")
    subprocess.run([a.tokenize, "train", "--vocab-size", "1003", "-o", ours_path, os.path.join(OUT, "sample.txt")], check=True)
    # (b) HF trainer on the same single document.
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator([sample.decode("utf-8")], trainers.BpeTrainer(
        vocab_size=1000, min_frequency=0, show_progress=False, special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_path = os.path.join(OUT, "hf.json")
    hf.save(hf_path)
    ours = Tokenizer.from_file(ours_path)
    m_ours = json.load(open(ours_path))["model"]["merges"]
    m_hf = [" ".join(m) if isinstance(m, list) else m for m in json.load(open(hf_path))["model"]["merges"]]
    print(f"trainer parity: ours {len(m_ours)} merges, HF {len(m_hf)}; identical: {m_ours == m_hf}")

    # GPT-2: tiktoken reference + our import (full, scratch only).
    ranks = {}
    for line in open(a.tiktoken, "rb"):
        t, r = line.split()
        ranks[base64.b64decode(t)] = int(r)
    enc = tiktoken.Encoding("gpt2", pat_str=PAT, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    tmp = tempfile.mkdtemp()
    gpt2_full = os.path.join(tmp, "gpt2.json")
    subprocess.run([a.tokenize, "import", "--tiktoken", a.tiktoken, "-o", gpt2_full], check=True)
    gpt2_hf = Tokenizer.from_file(gpt2_full)

    expected = {"ours": {}, "hf": {}, "gpt2": {}}
    for name, data in allcases.items():
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            e_ours, e_hf, e_gpt2 = ours.encode(text).ids, hf.encode(text).ids, enc.encode_ordinary(text)
            assert gpt2_hf.encode(text).ids == e_gpt2, f"HF on imported GPT-2 differs from tiktoken: {name}"
            assert emulate_hf(ours, data) == e_ours and emulate_hf(hf, data) == e_hf, f"emulation differs: {name}"
            assert emulate_tiktoken(enc, data) == e_gpt2, f"tiktoken emulation differs: {name}"
        else:
            e_ours, e_hf, e_gpt2 = emulate_hf(ours, data), emulate_hf(hf, data), emulate_tiktoken(enc, data)
            assert emulate_hf(gpt2_hf, data) == e_gpt2, f"HF/tiktoken emulations differ: {name}"
        expected["ours"][name], expected["hf"][name], expected["gpt2"][name] = e_ours, e_hf, e_gpt2

    # GPT-2 excerpt: only the merges the inputs use, same rank order; ids renumbered in GPT-2 order.
    full = json.load(open(gpt2_full))
    vocab = full["model"]["vocab"]
    u2b = {v: k for k, v in B2U.items()}
    tok_bytes = {i: bytes(u2b[ch] for ch in s) for s, i in vocab.items() if s not in ("<|endoftext|>", "[MASK]")}
    vocab_ids = {b: i for i, b in tok_bytes.items()}
    merge_list = [tuple(m.split(" ")) for m in full["model"]["merges"]]
    mranks = {}
    for r, (x, y) in enumerate(merge_list):
        mranks[(bytes(u2b[ch] for ch in x), bytes(u2b[ch] for ch in y))] = r
    used = set()
    for name, data in allcases.items():
        ids = []
        for p in pieces(data):
            pid, u = bpe_trace(p, mranks, vocab_ids)
            ids += pid; used.update(u)
        assert ids == expected["gpt2"][name], f"python BPE differs from tiktoken: {name}"
    keep = set(vocab_ids[bytes([b])] for b in range(256))
    for r in used:
        x, y = merge_list[r]
        keep.add(vocab[x + y] if (x + y) in vocab else None)
    keep.discard(None)
    old_ids = sorted(keep)
    inv = {v: k for k, v in vocab.items()}
    ex_vocab = {inv[o]: n for n, o in enumerate(old_ids)}
    n = len(old_ids)
    ex_vocab["<|endoftext|>"] = n
    ex_vocab["[MASK]"] = n + 1
    excerpt = dict(full)
    excerpt["model"] = dict(full["model"], vocab=ex_vocab, merges=[" ".join(merge_list[r]) for r in sorted(used)])
    excerpt["added_tokens"] = [dict(t, id=ex_vocab[t["content"]]) for t in full["added_tokens"]]
    json.dump(excerpt, open(os.path.join(OUT, "gpt2_excerpt.json"), "w"), ensure_ascii=False, sort_keys=True)
    json.dump(old_ids + [50256, 50257], open(os.path.join(OUT, "gpt2_ids.json"), "w"))
    # The excerpt must reproduce GPT-2 on every input (checked through HF).
    ex = Tokenizer.from_file(os.path.join(OUT, "gpt2_excerpt.json"))
    for name, data in allcases.items():
        got = [old_ids[i] for i in emulate_hf(ex, data)]
        assert got == expected["gpt2"][name], f"excerpt differs: {name}"
    json.dump(expected, open(os.path.join(OUT, "expected.json"), "w"), separators=(",", ":"), sort_keys=True)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"fixtures in {OUT}: {len(allcases)} inputs, gpt2 excerpt {n} tokens / {len(used)} merges, {total / 1e6:.2f} MB total")


if __name__ == "__main__":
    main()
