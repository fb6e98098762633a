#!/usr/bin/env python3
"""Writes Tests/BlockDiffusionTests/Fixtures/stream-v1.raw.tok: an uncompressed token stream v1
built from docs/stream-format.md alone (an independent implementation of the documented layout).
StreamTests.testFixtureMatchesDocumentedLayout reads it and checks the Swift writer produces the
same bytes. Run from the repository root: python3 Tests/scripts/make_stream_fixture.py"""
import struct, sys, os

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF

assert crc32c(b"123456789") == 0xE3069283

def string(s):
    b = s.encode("utf-8")
    return struct.pack("<I", len(b)) + b

def header(kind, fields, vocab, fingerprint, bos, eos, mask, pad, attributes):
    width = 2 if vocab <= 65536 else 4
    body = struct.pack("<BBBBIQiiiiI", kind, fields, width, 0, vocab, fingerprint, bos, eos, mask, pad, len(attributes))
    for k in sorted(attributes):
        body += string(k) + string(attributes[k])
    head = b"\x89BD3TOK\n" + struct.pack("<HI", 1, len(body)) + body
    return head + struct.pack("<I", crc32c(head))

def record(vocab, fields, rid, tokens, conf, steps, nfe, prompt, stages):
    width = 2 if vocab <= 65536 else 4
    body = struct.pack("<QQIII", rid, nfe, prompt, len(tokens), len(stages))
    for s in stages:
        body += string(s)
    body += struct.pack("<%d%s" % (len(tokens), "H" if width == 2 else "I"), *tokens)
    if fields & 1:
        body += struct.pack("<%df" % len(conf), *conf)
    if fields & 2:
        body += struct.pack("<%dI" % len(steps), *steps)
    rec = b"R" + struct.pack("<I", len(body)) + body
    return rec + struct.pack("<I", crc32c(rec))

def end(count):
    e = b"E" + struct.pack("<Q", count)
    return e + struct.pack("<I", crc32c(e))

def main():
    vocab, fields = 70000, 3
    out = header(3, fields, vocab, 0x0123456789ABCDEF, 69997, 69997, 69999, -1,
                 {"tool": "fixture", "seq_len": "4"})
    out += record(vocab, fields, 7, [1, 69999, 65536], [0.5, 1.0, -2.0], [3, 0, 4294967295], 12, 1,
                  ["draft B=4", "remask conf<0.5"])
    out += record(vocab, fields, 8, [], [], [], 0, 0, [])
    out += end(2)
    root = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(root, "..", "BlockDiffusionTests", "Fixtures", "stream-v1.raw.tok")
    with open(path, "wb") as f:
        f.write(out)
    print(path, len(out), "bytes")

if __name__ == "__main__":
    main()
