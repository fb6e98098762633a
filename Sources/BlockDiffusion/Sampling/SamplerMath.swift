// RNG-free sampler pieces, float64 as the reference (spec §4, §3.4). Checked against Fixtures/parity/sampler.safetensors.
//
// Public API:
//   subsProbabilities(logits:count:maskId:) -> [Double]   softmax with the mask logit at −1e6 (SUBS: p[mask] = 0)
//   nucleusFilter(_:topP:)                                 sort desc, keep cumsum ≤ p, always keep top-1, renormalise
//   gumbelArgmax(p:u:) -> Int                              argmax(p / (1e-10 − log(u + 1e-10)))  (every key computed)
//   gumbelSample(p:rng:)                                   the same with uniforms from rng; keys that cannot win
//                                                          skip their log (gumbelKey), same index
//   maskedPosition(_:mask:draw:) -> Int                    the draw-th masked index (replays randint(0, #masked))
//   subsProbabilitiesSplit, gumbelSampleSplit              the same numbers with the V-long loops split over the
//                                                          workers (one row at a time: batch-1 first-hitting)
//   ddpmTransition(_:t:s:maskId:) -> [Double]              q = p(1 − s/t), q[mask] = s/t  (loglinear)
//   tailEntropy(_:window:) -> Double                        unigram entropy (nats) of the last `window` tokens
//   firstHittingTime(t:u:n:) -> Double                      t·u^(1/n) (reference bookkeeping; sigma is unused)
import Foundation

/// SUBS probabilities of one position: logits[mask] += −1e6, softmax, in float64.
public func subsProbabilities(logits: UnsafePointer<Float>, count V: Int, maskId: Int) -> [Double] {
    var p = [Double](repeating: 0, count: V)
    var mx = -Double.infinity
    for i in 0..<V {
        let l = Double(logits[i]) + (i == maskId ? -1e6 : 0)
        p[i] = l; mx = max(mx, l)
    }
    var sum = 0.0
    for i in 0..<V { let e = exp(p[i] - mx); p[i] = e; sum += e }
    for i in 0..<V { p[i] /= sum }
    return p
}

/// subsProbabilities with the exp and the division split over the workers; the max and the sum run in the serial
/// order, so every entry is bit-identical to subsProbabilities'.
public func subsProbabilitiesSplit(logits: UnsafePointer<Float>, count V: Int, maskId: Int) -> [Double] {
    var p = [Double](repeating: 0, count: V)
    var mx = -Double.infinity
    for i in 0..<V { mx = max(mx, Double(logits[i]) + (i == maskId ? -1e6 : 0)) }
    p.withUnsafeMutableBufferPointer { pb in
        let q = pb.baseAddress!
        parallelChunks(V, grain: 4096) { r in
            for i in r { q[i] = exp(Double(logits[i]) + (i == maskId ? -1e6 : 0) - mx) }
        }
        var sum = 0.0
        for i in 0..<V { sum += q[i] }
        parallelChunks(V, grain: 4096) { r in for i in r { q[i] /= sum } }
    }
    return p
}

/// gumbelSample for SplitMix64 with the V logs split over the workers, bit-identical: SplitMix64 advances its state
/// by a constant per draw, so a chunk starts its generator at state + (non-zero entries before it) · constant and draws
/// the uniforms the serial loop would; chunks keep their first best index and are combined in order (first index on
/// ties), and the generator ends where the serial loop leaves it.
public func gumbelSampleSplit(p: [Double], rng: inout SplitMix64) -> Int {
    let V = p.count
    let chunks = max(1, min(workerCount, V / 4096))
    if chunks == 1 { return gumbelSample(p: p, rng: &rng) }
    var nonzero = [Int](repeating: 0, count: chunks)
    var best = [(value: Double, index: Int)](repeating: (-Double.infinity, 0), count: chunks)
    let base = rng.state
    p.withUnsafeBufferPointer { pb in
        let q = pb.baseAddress!
        nonzero.withUnsafeMutableBufferPointer { nb in
            let nz = nb.baseAddress!
            parallelFor(chunks) { c in
                var n = 0
                for i in (V * c / chunks)..<(V * (c + 1) / chunks) where q[i] > 0 { n += 1 }
                nz[c] = n
            }
        }
        var before = [Int](repeating: 0, count: chunks)
        for c in 1..<chunks { before[c] = before[c - 1] + nonzero[c - 1] }
        best.withUnsafeMutableBufferPointer { bb in
            let bp = bb.baseAddress!
            parallelFor(chunks) { c in
                var g = SplitMix64(seed: base &+ UInt64(before[c]) &* 0x9E37_79B9_7F4A_7C15)
                var bi = 0, bv = -Double.infinity
                for i in (V * c / chunks)..<(V * (c + 1) / chunks) where q[i] > 0 {
                    let v = gumbelKey(q[i], Double(g.next() >> 11) * 0x1.0p-53, best: bv)
                    if v > bv { bv = v; bi = i }
                }
                bp[c] = (bv, bi)
            }
        }
    }
    var bi = 0, bv = -Double.infinity
    for (v, i) in best where v > bv { bv = v; bi = i }
    rng.state = base &+ UInt64(nonzero.reduce(0, +)) &* 0x9E37_79B9_7F4A_7C15
    return bi
}

/// Reference nucleus rule, in place. top_p ≥ 1 returns the input unchanged (the reference short-circuits).
/// Only the entries that can be kept are sorted: entries are binned by binary exponent in one pass, and the
/// bins are accumulated from the top until their mass exceeds top_p; everything below that bin is smaller
/// than every candidate and comes after a cumsum > top_p, so it is dropped exactly as with a full sort.
public func nucleusFilter(_ p: inout [Double], topP: Double) {
    guard topP < 1 else { return }
    let V = p.count
    guard V > 0 else { return }
    // Bin b = −exponent (p = m·2^e, m ∈ [1, 2), so larger p → smaller bin); zeros go to the last bin.
    let nBins = 1100
    var mass = [Double](repeating: 0, count: nBins)
    @inline(__always) func bin(_ x: Double) -> Int { x > 0 ? min(nBins - 2, max(0, -Int(x.exponent))) : nBins - 1 }
    for x in p { mass[bin(x)] += x }
    var cut = nBins - 1, acc = 0.0
    for b in 0..<nBins { acc += mass[b]; if acc > topP { cut = b; break } }
    var cand: [Int] = []
    for i in 0..<V where bin(p[i]) <= cut { cand.append(i) }
    cand.sort { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }   // descending; ties by index (deterministic)
    var keep = [Bool](repeating: false, count: V)
    var cum = 0.0
    for (rank, i) in cand.enumerated() {
        cum += p[i]
        if cum <= topP || rank == 0 { keep[i] = true } else { break }   // cumsum is monotone: nothing later is kept
    }
    var sum = 0.0
    for i in 0..<V { if keep[i] { sum += p[i] } else { p[i] = 0 } }
    for i in 0..<V { p[i] /= sum }
}

/// Naive twin: full descending sort (the reference's formulation).
func naiveNucleusFilter(_ p: inout [Double], topP: Double) {
    guard topP < 1 else { return }
    let order = p.indices.sorted { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }
    var keep = [Bool](repeating: false, count: p.count)
    var cum = 0.0
    for (rank, i) in order.enumerated() {
        cum += p[i]
        keep[i] = cum <= topP || rank == 0
    }
    var sum = 0.0
    for i in p.indices { if keep[i] { sum += p[i] } else { p[i] = 0 } }
    for i in p.indices { p[i] /= sum }
}

/// Gumbel-max on unnormalised p with uniforms u: argmax(p / (1e-10 − log(u + 1e-10))); first index on ties.
public func gumbelArgmax(p: [Double], u: [Double]) -> Int {
    precondition(p.count == u.count && !p.isEmpty)
    var best = 0, bestV = -Double.infinity
    for i in p.indices {
        let v = p[i] / (1e-10 - log(u[i] + 1e-10))
        if v > bestV { bestV = v; best = i }
    }
    return best
}

/// Gumbel-max with uniforms drawn from `rng`, one per NON-ZERO entry in index order (a zero entry can never
/// win: its value is 0 while a positive entry's is > 0; skipping it changes the stream, not the distribution).
public func gumbelSample<R: RandomNumberGenerator>(p: [Double], rng: inout R) -> Int {
    var best = 0, bestV = -Double.infinity
    for i in p.indices where p[i] > 0 {
        let v = gumbelKey(p[i], Double(rng.next() >> 11) * 0x1.0p-53, best: bestV)
        if v > bestV { bestV = v; best = i }
    }
    return best
}

/// The Gumbel-max key p / (1e-10 − log(u + 1e-10)), or −∞ when it cannot exceed `best`. With a = u + 1e-10 ∈ (0, 1],
/// −log a ≥ 1 − a, so the key is at most p / (1e-10 + 1 − a); that bound, raised by 2⁻⁴⁰ (far above the rounding of
/// the log, the sum and the division, each ≤ 2⁻⁵²), below `best` means the exact key is below it too, and the log —
/// most of a draw's cost over V — is skipped. Callers keep strict `>` for the first index on ties, so the index is
/// the one the full loop finds, bit for bit (the uniforms are drawn either way). SamplerMathTests hold this.
@inline(__always)
func gumbelKey(_ p: Double, _ u: Double, best: Double) -> Double {
    let a = u + 1e-10
    if p / (1e-10 + (1 - a)) * (1 + 0x1p-40) < best { return -.infinity }
    return p / (1e-10 - log(a))
}

/// The `draw`-th index (0-based, increasing order) whose token is `mask`.
public func maskedPosition(_ block: [Int32], mask: Int32, draw: Int) -> Int {
    var k = 0
    for (i, t) in block.enumerated() where t == mask {
        if k == draw { return i }
        k += 1
    }
    preconditionFailure("draw \(draw) outside the \(k) masked positions")
}

/// Non-first-hitting update for loglinear: q = p_x0 (1 − s/t), q[mask] = s/t.
public func ddpmTransition(_ p: [Double], t: Double, s: Double, maskId: Int) -> [Double] {
    let stay = s / t
    var q = p.map { $0 * (1 - stay) }
    q[maskId] = stay
    return q
}

/// Σ −f ln f over the distinct tokens of the last `window` tokens (all tokens if fewer).
public func tailEntropy(_ tokens: ArraySlice<Int32>, window: Int = 256) -> Double {
    let tail = tokens.suffix(window)
    guard !tail.isEmpty else { return 0 }
    var counts: [Int32: Int] = [:]
    for t in tail { counts[t, default: 0] += 1 }
    let n = Double(tail.count)
    var h = 0.0
    for c in counts.values.sorted() { let f = Double(c) / n; h -= f * log(f) }
    return h
}

public func firstHittingTime(t: Double, u: Double, n: Int) -> Double { t * pow(u, 1 / Double(n)) }
