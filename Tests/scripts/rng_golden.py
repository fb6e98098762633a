"""Golden values for ObjectiveTests.testSharedGeneratorsGoldenValues and PackTests.testShuffleOrderGolden.

An independent re-implementation of SplitMix64, Lemire's unbiased bounded integers, the Fisher-Yates
shuffle of Diffusion/RNG.swift and pack-blocks' split-name seed (FNV-1a 64, Packing/Packer.swift).
Run: python3 Tests/scripts/rng_golden.py
"""
M = (1 << 64) - 1


def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


class SplitMix64:
    def __init__(self, seed):
        self.s = seed

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M
        return mix(self.s)


def uniform_int(r, n):
    m = r.next() * n
    if m & M < n:
        threshold = ((1 << 64) - n) % n
        while m & M < threshold:
            m = r.next() * n
    return m >> 64


def fisher_yates(r, a):
    for i in range(len(a) - 1, 0, -1):
        j = uniform_int(r, i + 1)
        a[i], a[j] = a[j], a[i]
    return a


def document_hash(tokens, seed):
    h, p = 0xCBF29CE484222325, 0x100000001B3
    for _ in range(8):
        h = ((h ^ (seed & 0xFF)) * p) & M
        seed >>= 8
    for v in tokens:
        u = v & 0xFFFFFFFF
        for _ in range(4):
            h = ((h ^ (u & 0xFF)) * p) & M
            u >>= 8
    return h


r = SplitMix64(0)
print("SplitMix64(seed: 0):", [hex(r.next()) for _ in range(3)])
r = SplitMix64(42)
print("Xoshiro256(seed: 42).words:", [r.next() for _ in range(4)])
print("fisherYates(0..<10), SplitMix64(seed: 12345):", fisher_yates(SplitMix64(12345), list(range(10))))
name_hash = document_hash([ord(c) for c in "all"], 0x53485546)
print("pack-blocks order, seed 1, split 'all', 12 rows:", fisher_yates(SplitMix64(1 ^ name_hash), list(range(12))))
