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
    @discardableResult
    public static func subs(logits: UnsafePointer<Float>, N: Int, V: Int, xt: UnsafePointer<Int32>, x0: UnsafePointer<Int32>,
                            maskId: Int32, weights: UnsafePointer<Float>, loss: UnsafeMutablePointer<Float>,
                            dLogits: UnsafeMutablePointer<Float>?) -> Double {
        let m = Int(maskId)
        return forEachRow(N: N, V: V, loss: loss, dLogits: dLogits) { r, e in
            let w = weights[r]
            if xt[r] != maskId {
                // Carry-over: logp[x0] is 0 if x0 == x_t, else −1e6; constant in the logits.
                if dLogits != nil { e.update(repeating: 0, count: V) }
                return x0[r] == xt[r] ? 0 : -w * subsNegInfinity
            }
            // logits'[m] = logits[m] − 1e6 (a shift: the mask logit keeps its gradient).
            e.update(from: logits + r * V, count: V)
            e[m] += subsNegInfinity
            return maskedCrossEntropy(e, V, mask: m, target: Int(x0[r]), weight: w, gradient: dLogits != nil, maskHasGradient: true)
        }
    }

    /// AR loss: mask column set to −1e6, log-softmax, −weight · logp[target]. Same outputs as `subs`.
    @discardableResult
    public static func autoregressive(logits: UnsafePointer<Float>, N: Int, V: Int, targets: UnsafePointer<Int32>, maskId: Int32,
                                      weights: UnsafePointer<Float>, loss: UnsafeMutablePointer<Float>,
                                      dLogits: UnsafeMutablePointer<Float>?) -> Double {
        let m = Int(maskId)
        return forEachRow(N: N, V: V, loss: loss, dLogits: dLogits) { r, e in
            e.update(from: logits + r * V, count: V)
            if m >= 0 { e[m] = subsNegInfinity } // overwritten: the mask logit has no gradient (no mask id: none)
            return maskedCrossEntropy(e, V, mask: m, target: Int(targets[r]), weight: weights[r], gradient: dLogits != nil,
                                      maskHasGradient: false)
        }
    }

    /// The rows of a head, in parallel: loss[r] = row(r, e) where e (V) is row r of dLogits when given (the head
    /// writes its gradient there) or a per-thread scratch row. Returns Σ loss (Double).
    @inline(__always)
    static func forEachRow(N: Int, V: Int, loss: UnsafeMutablePointer<Float>, dLogits: UnsafeMutablePointer<Float>?,
                           _ row: (Int, UnsafeMutablePointer<Float>) -> Float) -> Double {
        parallelChunks(N, grain: 4) { rows in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: V) { scratch in
                for r in rows { loss[r] = row(r, dLogits.map { $0 + r * V } ?? scratch.baseAddress!) }
            }
        }
        var total: Double = 0
        for r in 0..<N { total += Double(loss[r]) }
        return total
    }

    /// −w · log softmax(e)[t] for a row e (V) whose mask column m is already at ≈ −1e6, that column's probability
    /// taken as exactly 0 (exp(≈ −1e6) is 0 in the reference). e is overwritten: with `gradient`,
    /// e = w·(softmax − onehot(t)) and 0 in the mask column; `maskHasGradient` false drops the onehot there too.
    @inline(__always)
    static func maskedCrossEntropy(_ e: UnsafeMutablePointer<Float>, _ V: Int, mask m: Int, target t: Int, weight w: Float,
                                   gradient: Bool, maskHasGradient: Bool) -> Float {
        let target = e[t]
        let mx = maxOf(e, V)
        var s = expShiftSum(e, V, mx)            // e = exp(e − max)
        if m >= 0 { s -= e[m]; e[m] = 0 }
        if gradient {
            scaleInPlace(e, V, w / s)
            if maskHasGradient || t != m { e[t] -= w }
        }
        return -w * (target - mx - logf(s))
    }
}
