// The block-diffusion training objective (spec §2.1, §2.3, §2.5): per-block time sampling,
// the forward masking process q(x_t | x_0), and the assembly of the per-token NELBO from the
// model's SUBS log-probabilities.
//
// Shapes: a batch is B sequences of L tokens, split into nb = L/L' blocks of L' tokens; a block
// quantity is stored (B, nb) row-major, a token quantity (B, L). MDLM is L' = L (nb = 1).
//
// Decision on the reference quirk §10.5 (`if sampling_eps_min > 0.5: loss_scale = −1`): by default
// (`TunedRule.exact`) the unit loss scale is used only for β ≥ 1, the U[1,1] "tuned" case where
// every token is masked and −1 is the exact NLL weight. For 0.5 < β < 1 we keep the NELBO weight
// loss_scale(t), so a clipped interval stays a (biased-in-t) ELBO term and the clip search compares
// like with like. `TunedRule.reference` reproduces the reference (any β > 0.5 → −1) for parity.
import Foundation

/// Everything that defines the diffusion loss apart from the model.
public struct DiffusionObjective: Equatable, Sendable {
    public var schedule: NoiseSchedule = .loglinear
    public var reweighting: Reweighting = .none
    public var blockSize: Int
    public var length: Int
    public var maskID: Int32
    public var antithetic = true
    /// `training.resample`: redraw blocks whose masked fraction falls outside the clip interval.
    public var resample = true
    /// `algo.ignore_bos`: position 0 is never masked, and is left out of the eval denominator.
    public var ignoreBOS = true
    public var tunedRule: TunedRule = .exact

    public init(blockSize: Int, length: Int, maskID: Int32) {
        precondition(blockSize > 0 && length % blockSize == 0, "block size must divide the length")
        self.blockSize = blockSize; self.length = length; self.maskID = maskID
    }

    public var blocksPerSequence: Int { length / blockSize }

    // MARK: time sampling (§2.1)

    /// One t per block, (B, nb). Antithetic: stratum j = k·nb + b gets (u + j)/(B·nb).
    /// Then t = u(ω−β)+β, or t ≡ 1 for the U[1,1] interval.
    public func sampleTimes(batch: Int, interval: ClipInterval, rng: inout Xoshiro256) -> [Double] {
        let n = batch * blocksPerSequence
        var t = [Double](repeating: 0, count: n)
        for j in 0..<n {
            var u = rng.uniformDouble()
            if antithetic { u = (u / Double(n) + Double(j) / Double(n)).truncatingRemainder(dividingBy: 1) }
            t[j] = u
        }
        if interval.isTuned { return [Double](repeating: 1, count: n) }
        for j in 0..<n { t[j] = t[j] * (interval.max - interval.min) + interval.min }
        return t
    }

    // MARK: forward process (§2.3)

    /// x_t = where(u ≤ p_b, mask, x0), with the resampling of violating blocks and the BOS rule.
    /// `p` is per block (B, nb). Returns x_t (B, L).
    public func maskTokens(x0: [Int32], batch: Int, p: [Double], interval: ClipInterval,
                           rng: inout Xoshiro256) -> [Int32] {
        let L = length
        var u = [Float](repeating: 0, count: batch * L)
        for i in u.indices { u[i] = rng.uniformFloat() }
        return maskTokens(x0: x0, batch: batch, p: p, interval: interval, uniforms: u, rng: &rng)
    }

    /// As above with the first-round uniforms given (B, L) — `move = u ≤ p` — e.g. from a parity fixture.
    /// `rng` is used only for resampling.
    public func maskTokens(x0: [Int32], batch: Int, p: [Double], interval: ClipInterval, uniforms u: [Float],
                           rng: inout Xoshiro256) -> [Int32] {
        let L = length, Lb = blockSize, nb = blocksPerSequence
        precondition(x0.count == batch * L && p.count == batch * nb && u.count == batch * L)
        var xt = x0
        if Lb == 1 && interval.min == 1.0 {
            for i in xt.indices { xt[i] = maskID }
        } else {
            for i in 0..<(batch * L) where u[i] <= Float(p[i / Lb]) { xt[i] = maskID }
            if resample && interval != .base { resampleBlocks(x0: x0, xt: &xt, batch: batch, p: p, interval: interval, rng: &rng) }
        }
        if ignoreBOS { for k in 0..<batch { xt[k * L] = x0[k * L] } }
        return xt
    }

    /// The reference's `_resample_q_xt`: while some block's masked fraction lies outside the
    /// checked side(s) of [β, ω] (a side equal to 1e-3 or 1 is not checked, exactly as upstream,
    /// which compares with `==`), redraw that block's whole pattern with `u < p`. Upstream loops
    /// forever on an unreachable interval; we stop after `maxRounds` and keep the last draw.
    func resampleBlocks(x0: [Int32], xt: inout [Int32], batch: Int, p: [Double], interval: ClipInterval,
                        rng: inout Xoshiro256, maxRounds: Int = 1000) {
        let Lb = blockSize, nb = blocksPerSequence
        let checkLow = interval.min != 1e-3, checkHigh = interval.max != 1.0
        func fraction(_ blk: Int) -> Double {
            var c = 0
            for i in (blk * Lb)..<((blk + 1) * Lb) where xt[i] == maskID { c += 1 }
            return Double(Float(c) / Float(Lb))
        }
        for _ in 0..<maxRounds {
            var any = false
            for blk in 0..<(batch * nb) {
                let f = fraction(blk)
                let bad = (checkLow && f < interval.min) || (checkHigh && f > interval.max)
                guard bad else { continue }
                any = true
                let pb = Float(p[blk])
                for i in (blk * Lb)..<((blk + 1) * Lb) { xt[i] = rng.uniformFloat() < pb ? maskID : x0[i] }
            }
            if !any { return }
        }
    }

    // MARK: loss weights

    /// Per-block move chance p(t_b).
    public func moveChance(_ t: [Double]) -> [Double] { t.map { schedule.p($0) } }

    /// Per-block coefficient c_b with token loss = c_b · log p_θ(x0) (c_b ≤ 0): loss_scale(t_b),
    /// times the reweighting w(λ_b) when `weighted` (training only), or −1 under the tuned rule.
    public func coefficients(_ t: [Double], interval: ClipInterval, weighted: Bool) -> [Double] {
        let unit = interval.min >= 1 || (tunedRule == .reference && interval.min > 0.5)
        let sigmaMax = schedule.sigmaMax
        return t.map { tb in
            let p = schedule.p(tb)
            let ls = schedule.lossScale(tb)
            let base = unit ? -1 : ls
            if !weighted || reweighting == .none { return base }
            // As the fork: w from the schedule's own loss scale, applied after the tuned-rule override.
            return base * reweighting.weight(p: p, lossScale: ls, sigmaMax: sigmaMax)
        }
    }
}

/// The assembled loss of one batch.
public struct LossSummary: Equatable, Sendable {
    /// Σ token losses (the numerator).
    public var nllSum: Double
    /// The denominator: all B·L tokens in training; position 0 left out at eval when ignore_bos.
    public var tokenCount: Int
    /// nllSum / tokenCount: the per-token NELBO (the training loss when training).
    public var tokenNLL: Double { tokenCount > 0 ? nllSum / Double(tokenCount) : 0 }
    /// Per-block mean loss (B, nb) over the L' slots of a block, zeros included (the Var-NELBO statistic).
    public var blockMeans: [Double]
}

public enum LossAssembly {
    /// Diffusion loss: `logp` (B, L) = log p_θ(x0_i | x_t) after SUBS (exactly 0 on unmasked tokens),
    /// `coefficients` (B, nb). Token loss ℓ_i = c_b · logp_i. If `dLogp` is given it receives
    /// ∂(tokenNLL)/∂logp_i = c_b / tokenCount, the seed for the SUBS/model backward.
    public static func diffusion(logp: UnsafeBufferPointer<Float>, coefficients: [Double], batch: Int, length: Int,
                                 blockSize: Int, ignoreBOS: Bool, training: Bool,
                                 dLogp: UnsafeMutableBufferPointer<Float>? = nil) -> LossSummary {
        let nb = length / blockSize
        precondition(logp.count >= batch * length && coefficients.count == batch * nb)
        let excludeFirst = ignoreBOS && !training
        let count = batch * length - (excludeFirst ? batch : 0)
        var sum = 0.0
        var means = [Double](repeating: 0, count: batch * nb)
        for k in 0..<batch {
            for i in 0..<length {
                let idx = k * length + i
                let blk = k * nb + i / blockSize
                let excluded = excludeFirst && i == 0
                let loss = excluded ? 0 : coefficients[blk] * Double(logp[idx])
                sum += loss
                means[blk] += loss
                if let d = dLogp { d[idx] = excluded ? 0 : Float(coefficients[blk] / Double(count)) }
            }
        }
        for j in means.indices { means[j] /= Double(blockSize) }
        return LossSummary(nllSum: sum, tokenCount: count, blockMeans: means)
    }

    /// AR loss: `logp` (B, L−1) = log p_θ(x_{i+1} | x_≤i). ℓ = −logp over B·(L−1) targets
    /// (the reference drops the first token's slot: input x[:, :-1], targets x[:, 1:]).
    /// Block means are per sequence (one block of L−1 targets each).
    public static func autoregressive(logp: UnsafeBufferPointer<Float>, batch: Int, targets: Int,
                                      dLogp: UnsafeMutableBufferPointer<Float>? = nil) -> LossSummary {
        precondition(logp.count >= batch * targets)
        let count = batch * targets
        var sum = 0.0
        var means = [Double](repeating: 0, count: batch)
        for k in 0..<batch {
            for i in 0..<targets {
                let loss = -Double(logp[k * targets + i])
                sum += loss; means[k] += loss
                if let d = dLogp { d[k * targets + i] = Float(-1.0 / Double(count)) }
            }
            means[k] /= Double(targets)
        }
        return LossSummary(nllSum: sum, tokenCount: count, blockMeans: means)
    }
}
