// Naive twins of the hand-written kernels in Layers.swift / Loss.swift: literal transcriptions of the
// reference expressions in Double, no parallelism, no fusion. Tests check the fast kernels against these.
import Foundation

/// torch: F.layer_norm(x, [D]) * weight, then modulate: x * (1 + scale) + shift. One row.
func naiveNormModulate(_ x: [Float], weight: [Float], shift: [Float]?, scale: [Float]?) -> [Float] {
    let D = x.count
    let mean = x.reduce(0.0) { $0 + Double($1) } / Double(D)
    let varc = x.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(D)
    return (0..<D).map { j in
        let y = (Double(x[j]) - mean) / (varc + 1e-5).squareRoot() * Double(weight[j])
        guard let shift, let scale else { return Float(y) }
        return Float(y * (1 + Double(scale[j])) + Double(shift[j]))
    }
}

/// GELU(approximate='tanh') = 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))).
func naiveGelu(_ x: Float) -> Float {
    let v = Double(x)
    return Float(0.5 * v * (1 + tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v))))
}

/// Reference rotary on one head vector: emb = cat(freqs, freqs); x*cos + rotate_half(x)*sin, rotate_half([a,b]) = [-b, a].
func naiveRotary(_ x: [Float], position: Int) -> [Float] {
    let d = x.count, half = d / 2
    let inv = RotaryTable.invFreq(headDim: d)
    let freqs = (0..<half).map { Double(Float(position) * inv[$0]) }
    let emb = freqs + freqs
    let rot = (0..<d).map { j in j < half ? -Double(x[j + half]) : Double(x[j - half]) }
    return (0..<d).map { j in Float(Double(x[j]) * cos(emb[j]) + rot[j] * sin(emb[j])) }
}

/// Reference timestep embedding (dim 256, cos first).
func naiveTimestepEmbedding(_ t: Double) -> [Double] {
    let half = 128
    let freqs = (0..<half).map { exp(-log(10000.0) * Double($0) / Double(half)) }
    return freqs.map { cos(t * $0) } + freqs.map { sin(t * $0) }
}

/// Reference SUBS log-probs of one row in Double.
func naiveSubsLogProbs(_ logits: [Float], xt: Int, mask: Int) -> [Double] {
    var l = logits.map(Double.init)
    l[mask] += -1_000_000
    let mx = l.max()!
    let lse = mx + log(l.reduce(0) { $0 + exp($1 - mx) })
    var lp = l.map { $0 - lse }
    if xt != mask { lp = [Double](repeating: -1_000_000, count: l.count); lp[xt] = 0 }
    return lp
}

/// Reference AR log-probs of one row in Double (mask logit set to −1e6).
func naiveARLogProbs(_ logits: [Float], mask: Int) -> [Double] {
    var l = logits.map(Double.init)
    l[mask] = -1_000_000
    let mx = l.max()!
    let lse = mx + log(l.reduce(0) { $0 + exp($1 - mx) })
    return l.map { $0 - lse }
}
