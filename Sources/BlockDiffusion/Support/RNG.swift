// Seedable, serialisable random numbers for training and scoring.
//
// xoshiro256** (Blackman & Vigna): 256 bits of state, period 2^256−1, passes BigCrush, and its whole
// state is four UInt64 — so a checkpoint can store it and a resumed run draws exactly the numbers an
// uninterrupted run would have drawn. Seeding runs SplitMix64 over the user's seed (the authors'
// recommendation) so nearby seeds give unrelated streams.
//
// Also here, shared by every tool: SplitMix64 (model init, samplers, pack-blocks' shuffle and split hash)
// and, for any generator, uniformInt (unbiased bounded integers) and fisherYates (the shuffle used by
// pack-blocks and the trainer's epoch order).

/// SplitMix64 (Steele, Lea & Flood): one UInt64 of state; small, fast, deterministic.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    /// SplitMix64's output function: a bijective 64-bit finaliser (also whitens weak hashes).
    @inline(__always) public static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return SplitMix64.mix(state)
    }
    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextDouble() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}

extension RandomNumberGenerator {
    /// Uniform integer in [0, n) without modulo bias (Lemire's multiply-shift with rejection).
    public mutating func uniformInt(_ n: Int) -> Int {
        precondition(n > 0)
        let bound = UInt64(n)
        var m = next().multipliedFullWidth(by: bound)
        if m.low < bound {
            let threshold = (0 &- bound) % bound
            while m.low < threshold { m = next().multipliedFullWidth(by: bound) }
        }
        return Int(m.high)
    }

    /// Fisher–Yates from the end: element i swaps with uniformInt(i + 1). The order is a function of the
    /// generator's stream only (unlike the standard library's shuffle(using:), which may change).
    public mutating func fisherYates<T>(_ a: inout [T]) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) { a.swapAt(i, uniformInt(i + 1)) }
    }
}

/// xoshiro256** generator. `state` is public so checkpoints can save and restore it.
public struct Xoshiro256: RandomNumberGenerator, Equatable, Sendable {
    public var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var sm = SplitMix64(seed: seed)
        state = (sm.next(), sm.next(), sm.next(), sm.next())
    }

    /// Restores a saved state (four words, as returned by `words`).
    public init(words: [UInt64]) {
        precondition(words.count == 4, "xoshiro256 state is 4 words")
        state = (words[0], words[1], words[2], words[3])
        if words.allSatisfy({ $0 == 0 }) { state.0 = 1 }  // the all-zero state is a fixed point
    }

    public var words: [UInt64] { [state.0, state.1, state.2, state.3] }

    public static func == (a: Xoshiro256, b: Xoshiro256) -> Bool { a.words == b.words }

    @inline(__always) static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public mutating func next() -> UInt64 {
        let result = Xoshiro256.rotl(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = Xoshiro256.rotl(state.3, 45)
        return result
    }

    /// Uniform in [0, 1) with 24 random bits (every Float32 multiple of 2^-24).
    public mutating func uniformFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func uniformDouble() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// A child seed for a sub-stream (e.g. dropout), drawn from this stream.
    public mutating func split() -> UInt64 { next() }
}
