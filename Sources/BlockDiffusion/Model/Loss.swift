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
        parallelChunks(N, grain: 4) { rows in
            for r in rows {
                let lg = logits + r * V
                let w = weights[r]
                if xt[r] != maskId {
                    // Carry-over: logp[x0] is 0 if x0 == x_t, else −1e6; constant in the logits.
                    loss[r] = x0[r] == xt[r] ? 0 : -w * subsNegInfinity
                    if let dLogits { (dLogits + r * V).update(repeating: 0, count: V) }
                    continue
                }
                let m = Int(maskId)
                var mx = -Float.infinity
                for j in 0..<V { mx = max(mx, lg[j]) }
                // The mask logit is pushed down by 1e6: it only matters if it is the sole finite logit.
                if lg[m] == mx { mx = -Float.infinity; for j in 0..<V { mx = max(mx, j == m ? lg[j] + subsNegInfinity : lg[j]) } }
                // One expf per entry: the exponentials go straight into the gradient row (or a scratch row).
                var s: Float = 0
                let t = Int(x0[r])
                if let dLogits {
                    let dl = dLogits + r * V
                    for j in 0..<V { let e = expf((j == m ? lg[j] + subsNegInfinity : lg[j]) - mx); dl[j] = e; s += e }
                    let lse = mx + logf(s)
                    loss[r] = -w * ((t == m ? lg[t] + subsNegInfinity : lg[t]) - lse)
                    let scale = w / s
                    for j in 0..<V { dl[j] *= scale }
                    dl[t] -= w
                } else {
                    for j in 0..<V { s += expf((j == m ? lg[j] + subsNegInfinity : lg[j]) - mx) }
                    let lse = mx + logf(s)
                    loss[r] = -w * ((t == m ? lg[t] + subsNegInfinity : lg[t]) - lse)
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
            for r in rows {
                let lg = logits + r * V
                let w = weights[r]
                var mx = -Float.infinity
                for j in 0..<V { mx = max(mx, j == m ? subsNegInfinity : lg[j]) }
                var s: Float = 0
                let t = Int(targets[r])
                if let dLogits {
                    let dl = dLogits + r * V
                    for j in 0..<V { let e = expf((j == m ? subsNegInfinity : lg[j]) - mx); dl[j] = e; s += e }
                    let scale = w / s
                    for j in 0..<V { dl[j] *= scale }
                    dl[m] = 0       // the mask logit is overwritten, so it has no gradient
                    if t != m { dl[t] -= w }
                } else {
                    for j in 0..<V { s += expf((j == m ? subsNegInfinity : lg[j]) - mx) }
                }
                let lse = mx + logf(s)
                loss[r] = -w * ((t == m ? subsNegInfinity : lg[t]) - lse)
            }
        }
        var total: Double = 0
        for r in 0..<N { total += Double(loss[r]) }
        return total
    }
}
