// SEDD (absorbing) baseline: noise, score parameterisation and score-entropy loss (spec §5, §2.5).
//
// Parameterisation (bd3lms `_sedd_parameterization`, SEDD `scale_by_sigma`), per row of logits (V):
//   log_score[y] = logits[y] − log(e^σ − 1) − log(V−1)        log(e^σ−1) via expm1 for σ < 0.5, else exp(σ)−1
//   log_score[x_t] = 0                                         (scatter; at a masked row that is index m)
//   backward: dLogits[y] = dLogScore[y] for y ≠ x_t, 0 at x_t (the scatter overwrote the logit there).
//
// Score entropy, only at rows with x_t = m (0 elsewhere), r = 1/(e^σ − 1):
//   ℓ = Σ_{y≠m} exp(log_score[y]) − r·log_score[x0] + r·(log r − 1)          (≥ 0, = 0 iff the score is exact)
//   token loss = dσ(t)·ℓ
//   dℓ/dlogits[y] = exp(log_score[y])·[y≠m] − r·[y=x0]   (x0 ≠ m; the mask column gets no gradient)
//
// The fused head (`SEDDLoss.forward`) does both in one pass per row; `SEDDLoss.naive*` is the unfused
// Double-precision twin the tests compare it with. The loss value is accumulated in Double because at
// small σ (r ≈ 1/σ large) ℓ is a small difference of large terms.
import Foundation

/// The SEDD noise σ(t), its rate dσ/dt as used in the loss, and the move (mask) chance of q(x_t | x_0).
public enum SEDDNoise: String, Sendable, CaseIterable {
    /// bd3lms `algo=sedd`: σ = min(−log(1−t), σ_max), dσ = expm1(σ)/t (the reference's −loss_scale·expm1(σ),
    /// = 1/(1−t) below the clamp at t = 1−1e-3), move chance p = t (the reference masks with p, not 1−e^{−σ};
    /// the two differ only above the clamp). This is the variant of the parity fixture, hence the default.
    case bd3lms
    /// SEDD repository `LogLinearNoise` (ε = 1e-3): σ = −log1p(−(1−ε)t), dσ = (1−ε)/(1−(1−ε)t),
    /// move chance 1 − e^{−σ} = (1−ε)t.
    case loglinear

    public static let eps = 1e-3
    /// −log(1e-3) = σ(1) of both variants.
    public static let sigmaMax = -Foundation.log(1e-3)

    public func sigma(_ t: Double) -> Double {
        switch self {
        case .bd3lms: return t >= 1 ? SEDDNoise.sigmaMax : Swift.min(-Foundation.log1p(-t), SEDDNoise.sigmaMax)
        case .loglinear: return -Foundation.log1p(-(1 - SEDDNoise.eps) * t)
        }
    }

    public func dsigma(_ t: Double) -> Double {
        switch self {
        case .bd3lms: return Foundation.expm1(sigma(t)) / t
        case .loglinear: return (1 - SEDDNoise.eps) / (1 - (1 - SEDDNoise.eps) * t)
        }
    }

    public func moveChance(_ t: Double) -> Double {
        switch self {
        case .bd3lms: return t
        case .loglinear: return -Foundation.expm1(-sigma(t))
        }
    }
}

public enum SEDDLoss {
    /// log(e^σ − 1) exactly as the reference: expm1 below 0.5 (accurate for small σ), exp − 1 above.
    public static func logExpm1(_ sigma: Double) -> Double {
        Foundation.log(sigma < 0.5 ? Foundation.expm1(sigma) : Foundation.exp(sigma) - 1)
    }

    /// The constant subtracted from every logit: log(e^σ − 1) + log(V − 1).
    public static func shift(sigma: Double, V: Int) -> Double { logExpm1(sigma) + Foundation.log(Double(V - 1)) }

    // MARK: parameterisation, one row (V)

    /// out (V) = log_score of one row.
    public static func logScoreForward(logits: UnsafePointer<Float>, V: Int, xt: Int32, sigma: Double,
                                       out: UnsafeMutablePointer<Float>) {
        let c = shift(sigma: sigma, V: V)
        for y in 0..<V { out[y] = Float(Double(logits[y]) - c) }
        out[Int(xt)] = 0
    }

    /// dLogits (V) = ∂/∂logits given ∂/∂log_score (V) of one row.
    public static func logScoreBackward(dLogScore: UnsafePointer<Float>, V: Int, xt: Int32, dLogits: UnsafeMutablePointer<Float>) {
        for y in 0..<V { dLogits[y] = dLogScore[y] }
        dLogits[Int(xt)] = 0
    }

    // MARK: naive twin (unfused, Double)

    /// Score entropy ℓ of one masked row from its log_score (V); writes ∂ℓ/∂log_score into `dLogScore` if given.
    public static func naiveScoreEntropy(logScore: UnsafePointer<Float>, V: Int, x0: Int32, maskId: Int32, sigma: Double,
                                         dLogScore: UnsafeMutablePointer<Float>?) -> Double {
        let r = 1 / Foundation.exp(logExpm1(sigma))
        var pos = 0.0
        for y in 0..<V where y != Int(maskId) { pos += Foundation.exp(Double(logScore[y])) }
        let neg = r * Double(logScore[Int(x0)])
        let const_ = r * (Foundation.log(r) - 1)
        if let d = dLogScore {
            for y in 0..<V { d[y] = y == Int(maskId) ? 0 : Float(Foundation.exp(Double(logScore[y]))) }
            d[Int(x0)] -= Float(r)
        }
        return pos - neg + const_
    }

    /// Unfused reference of `forward`: parameterisation, entropy, chain rule, row by row.
    /// Same arguments and outputs as `forward`.
    @discardableResult
    public static func naiveForward(logits: UnsafePointer<Float>, batch B: Int, length L: Int, V: Int,
                                    xt: UnsafePointer<Int32>, x0: UnsafePointer<Int32>, maskId: Int32,
                                    sigma: UnsafePointer<Double>, dsigma: UnsafePointer<Double>, gradScale: Double,
                                    loss: UnsafeMutablePointer<Float>, dLogits: UnsafeMutablePointer<Float>?) -> Double {
        var ls = [Float](repeating: 0, count: V), dls = [Float](repeating: 0, count: V)
        var total = 0.0
        for r in 0..<(B * L) {
            let b = r / L
            guard xt[r] == maskId else {
                loss[r] = 0
                if let dLogits { (dLogits + r * V).update(repeating: 0, count: V) }
                continue
            }
            logScoreForward(logits: logits + r * V, V: V, xt: xt[r], sigma: sigma[b], out: &ls)
            let l = dsigma[b] * naiveScoreEntropy(logScore: ls, V: V, x0: x0[r], maskId: maskId, sigma: sigma[b], dLogScore: &dls)
            loss[r] = Float(l)
            total += l
            if let dLogits {
                for y in 0..<V { dls[y] = Float(Double(dls[y]) * dsigma[b] * gradScale) }
                logScoreBackward(dLogScore: dls, V: V, xt: xt[r], dLogits: dLogits + r * V)
            }
        }
        return total
    }

    // MARK: fused head

    /// logits (B·L, V), x_t and x0 (B·L), σ and dσ per sequence (B).
    /// loss (B·L) ← dσ_b·ℓ per token (0 where x_t ≠ m); dLogits (B·L, V) ← gradScale·∂(dσ_b·ℓ)/∂logits.
    /// Returns Σ token losses. x0 must never be the mask id at masked rows (clean data).
    @discardableResult
    public static func forward(logits: UnsafePointer<Float>, batch B: Int, length L: Int, V: Int,
                               xt: UnsafePointer<Int32>, x0: UnsafePointer<Int32>, maskId: Int32,
                               sigma: UnsafePointer<Double>, dsigma: UnsafePointer<Double>, gradScale: Double,
                               loss: UnsafeMutablePointer<Float>, dLogits: UnsafeMutablePointer<Float>?) -> Double {
        let m = Int(maskId)
        parallelChunks(B * L, grain: 4) { rows in
            for row in rows {
                let b = row / L
                guard xt[row] == maskId else {
                    loss[row] = 0
                    if let dLogits { (dLogits + row * V).update(repeating: 0, count: V) }
                    continue
                }
                precondition(x0[row] != maskId, "SEDD loss: clean token x0 is the mask id")
                let lg = logits + row * V
                let c = shift(sigma: sigma[b], V: V)
                let r = 1 / Foundation.exp(logExpm1(sigma[b]))
                let w = dsigma[b] * gradScale
                var pos = 0.0
                if let dLogits {
                    let dl = dLogits + row * V
                    for y in 0..<V {
                        if y == m { dl[y] = 0; continue }
                        let e = Foundation.exp(Double(lg[y]) - c)
                        pos += e
                        dl[y] = Float(w * e)
                    }
                    dl[Int(x0[row])] -= Float(w * r)
                } else {
                    for y in 0..<V where y != m { pos += Foundation.exp(Double(lg[y]) - c) }
                }
                let ell = pos - r * (Double(lg[Int(x0[row])]) - c) + r * (Foundation.log(r) - 1)
                loss[row] = Float(dsigma[b] * ell)
            }
        }
        var total = 0.0
        for row in 0..<(B * L) { total += Double(loss[row]) }
        return total
    }
}
