// Loss heads on logits rows (N, V), forward + backward (writes dLogits).
//
// SUBS (MDLM/BD3 `_subs_parameterization`, spec §2.4):
//   masked row (x_t == m):   logits[m] += -1e6 ; logp = logits − logsumexp(logits)
//   unmasked row:            logp = −1e6 everywhere except 0 at x_t (carry-over)
//   loss_i = −weight_i · logp_i[x0_i]   (weight = −loss_scale, e.g. 1/t, times any normalisation)
// AR: logits[m] = −1e6 (set), logp = log_softmax, loss_i = −weight_i · logp_i[target_i].
// dLogits_i = weight_i · (softmax_i − onehot(target)) on rows that depend on the logits; 0 elsewhere
// (including the mask column, whose value never reaches the loss in a way that has a gradient).
import Foundation

public let subsNegInfinity: Float = -1_000_000

public enum LossHeads {
    /// SUBS log-probabilities of one row (for parity tests and samplers): out (V).
    public static func subsLogProbs(_ logits: UnsafePointer<Float>, V: Int, xt: Int32, maskId: Int32, out: UnsafeMutablePointer<Float>) {
        if xt != maskId {
            for j in 0..<V { out[j] = subsNegInfinity }
            out[Int(xt)] = 0
            return
        }
        for j in 0..<V { out[j] = logits[j] }
        out[Int(maskId)] += subsNegInfinity
        var mx = -Float.infinity
        for j in 0..<V { mx = max(mx, out[j]) }
        var s: Double = 0
        for j in 0..<V { s += Double(expf(out[j] - mx)) }
        let lse = mx + Float(Foundation.log(s))
        for j in 0..<V { out[j] -= lse }
    }

    /// SUBS loss over N rows. Writes per-row loss into `loss` (N), dLogits (N, V) if given, returns Σ loss (Double).
    /// SUBS loss over N rows. Writes per-row loss into `loss` (N), dLogits (N, V) if given, returns Σ loss (Double).
    @discardableResult
    public static func subs(logits: UnsafePointer<Float>, N: Int, V: Int, xt: UnsafePointer<Int32>, x0: UnsafePointer<Int32>,
                            maskId: Int32, weights: UnsafePointer<Float>, loss: UnsafeMutablePointer<Float>,
                            dLogits: UnsafeMutablePointer<Float>?) -> Double {
        let m = Int(maskId)
        parallelChunks(N, grain: 4) { rows in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: V) { scratch in
                for r in rows {
                    let w = weights[r]
                    if xt[r] != maskId {
                        // Carry-over: logp[x0] is 0 if x0 == x_t, else −1e6; constant in the logits.
                        loss[r] = x0[r] == xt[r] ? 0 : -w * subsNegInfinity
                        if let dLogits { (dLogits + r * V).update(repeating: 0, count: V) }
                        continue
                    }
                    // e = exp(logits' − max) with logits'[m] = logits[m] − 1e6, written where the gradient goes.
                    let e = dLogits.map { $0 + r * V } ?? scratch.baseAddress!
                    e.update(from: logits + r * V, count: V)
                    e[m] += subsNegInfinity
                    let t = Int(x0[r])
                    let target = e[t]
                    let mx = maxOf(e, V)
                    var s = expShiftSum(e, V, mx)
                    s -= e[m]; e[m] = 0                  // exp(≈ −1e6) is exactly 0 in the reference
                    loss[r] = -w * (target - mx - logf(s))
                    if dLogits != nil {
                        scaleInPlace(e, V, w / s)
                        e[t] -= w
                    }
                }
            }
        }
        var total: Double = 0
        for r in 0..<N { total += Double(loss[r]) }
        return total
    }

    /// AR loss: mask column set to −1e6, log-softmax, −weight · logp[target]. Same outputs as `subs`.
    @discardableResult
    public static func autoregressive(logits: UnsafePointer<Float>, N: Int, V: Int, targets: UnsafePointer<Int32>, maskId: Int32,
                                      weights: UnsafePointer<Float>, loss: UnsafeMutablePointer<Float>,
                                      dLogits: UnsafeMutablePointer<Float>?) -> Double {
        let m = Int(maskId)
        parallelChunks(N, grain: 4) { rows in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: V) { scratch in
                for r in rows {
                    let w = weights[r]
                    let e = dLogits.map { $0 + r * V } ?? scratch.baseAddress!
                    e.update(from: logits + r * V, count: V)
                    e[m] = subsNegInfinity
                    let t = Int(targets[r])
                    let target = e[t]
                    let mx = maxOf(e, V)
                    var s = expShiftSum(e, V, mx)
                    s -= e[m]; e[m] = 0
                    loss[r] = -w * (target - mx - logf(s))
                    if dLogits != nil {
                        scaleInPlace(e, V, w / s)
                        e[m] = 0       // the mask logit is overwritten, so it has no gradient
                        if t != m { e[t] -= w }
                    }
                }
            }
        }
        var total: Double = 0
        for r in 0..<N { total += Double(loss[r]) }
        return total
    }
}
