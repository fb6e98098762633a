// SEDD samplers with the final denoising step (spec §5): the analytic (Tweedie τ-leaping) predictor of bd3lms
// (`_analytic_sampler`, `_analytic_update`, `_denoiser_update`) and the Euler predictor of the SEDD repository
// (`EulerPredictor`, its config default). Full sequence, layout .full, the prompt (by default just BOS) fixed
// at the front, everything else starts as MASK.
//
//   timesteps t_i = linspace(1, ε=1e-5, T+1), dt = (1−ε)/T
//   step i = 0..<T:  σ_t = σ(t_i)
//       s  = exp(log_score(x, σ_t))                                 (SEDDLoss parameterisation, float64)
//            with nucleus p < 1: s = nucleus(softmax(log_score))     (bd3lms heuristic; renormalised; analytic only)
//     analytic, dσ = σ(t_i) − σ(t_i − dt):
//       s' = s·e^{dσ};  s'[m] += (1 − e^{dσ})·Σ s                    (staggered score)
//       probs = s' ⊙ T(x, dσ),  T(i,σ) = e^{−σ}·onehot(i) + [i==m](1 − e^{−σ})·1
//     Euler, rate σ'(t_i) (SEDD `reverse_rate` of the absorbing graph, then `sample_rate`):
//       probs[y] = dt·σ'(t_i)·s[y] for y ≠ m,  probs[m] = 1 − Σ_{y≠m} probs[y]   (onehot(m) + rate)
//       (probs[m] < 0 when the step is too coarse: then it never wins the Gumbel-max, as in the reference)
//     x ← argmax(probs / (1e-10 − log(U + 1e-10))),  U ~ U[0,1) per entry   (Gumbel-max, float64)
//   final denoise (both):  the analytic step with dσ := σ(t_T) and probs[m] = 0.
//
// NFE is reported as T, the reference's count (spec §3.3); the final denoise is one more forward
// (`forwardPasses` ≤ T + 1: a step with no MASK left skips its forward).
//
// Every row has its own generator (seeded per sample by the caller), so a sample depends on its seed only,
// not on which other samples share its batch: `draft --batch` and `--shard` give the same samples.
//
// Rows already unmasked are not resampled: for them probs = onehot(x) exactly (s[x] = 1, T = e^{−dσ}·onehot),
// so the reference always keeps x too — except with nucleus < 1, where the reference can filter x's own
// entry out of the normalised score, leaving an all-zero row whose argmax is token 0. We keep x
// (absorbing), which is the intent; this is the only deviation.
//
// Confidence of a token = probs[c] / Σ_{y≠m} max(probs[y], 0) at the step where it left MASK, i.e. the
// probability of c given that the position is unmasked in that step. Unmask step = i+1 for the analytic
// steps (1…T), T+1 for the final denoise, 0 for prompt tokens.
import Foundation

/// The predictor of the T sampling steps (the final denoise is the same for both).
public enum SEDDPredictor: String, Sendable, CaseIterable {
    /// Tweedie τ-leaping (bd3lms, SEDD `run_sample.py`).
    case analytic
    /// Euler step of the reverse rate (SEDD's config default).
    case euler
}

public struct SEDDSamplerOptions: Sendable {
    public var steps: Int
    public var length: Int
    public var maskID: Int32
    /// Fixed leading tokens (never resampled); bd3lms puts BOS at position 0.
    public var prompt: [Int32]
    /// Nucleus p on the normalised score; 1 = off (bd3lms scripts use 0.99 for SEDD).
    public var nucleus: Double = 1
    public var eps: Double = 1e-5
    public var noise: SEDDNoise = .bd3lms
    public var predictor: SEDDPredictor = .analytic

    public init(steps: Int, length: Int, maskID: Int32, prompt: [Int32]) {
        self.steps = steps; self.length = length; self.maskID = maskID; self.prompt = prompt
    }
}

public struct SEDDSample: Equatable, Sendable {
    public var tokens: [Int32]
    public var confidence: [Float]
    public var unmaskStep: [UInt32]
    public var promptLength: Int
    /// Function evaluations as the reference counts them (T).
    public var nfe: Int
    /// The samples-stream record (fields confidence + unmaskStep), with stage text
    /// "draft sedd T=… nucleus=… nfe=…".
    public func record(id: UInt64, options o: SEDDSamplerOptions) -> TokenRecord {
        TokenRecord(id: id, tokens: tokens, confidence: confidence, unmaskStep: unmaskStep, nfe: UInt64(nfe),
                    promptLength: promptLength,
                    stages: ["draft sedd \(o.predictor.rawValue) T=\(o.steps) nucleus=\(o.nucleus) noise=\(o.noise.rawValue) nfe=\(nfe)"])
    }
    /// Forwards actually run: T + 1 (final denoise included), fewer if every position was unmasked early
    /// (the forward is skipped when no MASK is left; the reference would still run it).
    public var forwardPasses: Int
}

public final class SEDDSampler {
    public let model: DiT
    public let options: SEDDSamplerOptions

    public init(model: DiT, options: SEDDSamplerOptions) throws {
        let c = model.config
        guard c.timeConditioning && c.hasAdaLN else { throw ToolError("SEDD sampling needs a time-conditioned checkpoint (algo sedd)") }
        guard options.steps >= 1 else { throw ToolError("SEDD sampling needs at least 1 step (got \(options.steps))") }
        guard options.length >= 1, options.length <= model.maxTokens else {
            throw ToolError("sample length \(options.length) must be in 1...\(model.maxTokens) (the model's maxTokens)")
        }
        guard options.prompt.count < options.length else { throw ToolError("prompt of \(options.prompt.count) tokens leaves nothing to sample in length \(options.length)") }
        guard options.maskID >= 0, Int(options.maskID) < c.vocabSize else { throw ToolError("mask id \(options.maskID) outside the vocabulary") }
        for p in options.prompt where p < 0 || Int(p) >= c.vocabSize || p == options.maskID {
            throw ToolError("prompt token \(p) is outside the vocabulary or the mask token")
        }
        guard options.nucleus > 0, options.nucleus <= 1 else { throw ToolError("nucleus p must be in (0, 1] (got \(options.nucleus))") }
        // The nucleus heuristic renormalises the score to a distribution, which has no meaning as a rate.
        guard options.nucleus == 1 || options.predictor == .analytic else {
            throw ToolError("nucleus p < 1 is the analytic predictor's heuristic; the Euler predictor needs the unnormalised score (use nucleus 1)")
        }
        self.model = model; self.options = options
    }

    /// Timesteps linspace(1, ε, T+1).
    public static func timesteps(steps T: Int, eps: Double) -> [Double] {
        (0...T).map { $0 == T ? eps : 1 + Double($0) * (eps - 1) / Double(T) }
    }

    /// Samples B sequences with seeds canvasSeed(seed, 0..<B) (as `draft` seeds sample ids 0..<B).
    public func sample(batch B: Int, seed: UInt64, onStep: ((Int, [Int32]) -> Void)? = nil) -> [SEDDSample] {
        sample(seeds: (0..<B).map { canvasSeed(seed, UInt64($0)) }, onStep: onStep)
    }

    /// One sequence per seed, sampled together (one forward per step for the whole batch); sample k depends
    /// only on seeds[k]. `onStep(i, x)` sees the batch tokens (B·L) after step i (1…T, T+1 = final denoise).
    public func sample(seeds: [UInt64], onStep: ((Int, [Int32]) -> Void)? = nil) -> [SEDDSample] {
        let B = seeds.count
        precondition(B >= 1 && B <= model.maxBatch, "batch \(B) must be in 1...\(model.maxBatch)")
        let o = options, L = o.length, V = model.config.vocabSize, m = o.maskID, P = o.prompt.count
        var rngs = seeds.map { Xoshiro256(seed: $0) }
        var x = [Int32](repeating: m, count: B * L)
        var conf = [Float](repeating: 0, count: B * L)
        var when = [UInt32](repeating: 0, count: B * L)
        for k in 0..<B { for i in 0..<P { x[k * L + i] = o.prompt[i]; conf[k * L + i] = 1 } }
        let ts = SEDDSampler.timesteps(steps: o.steps, eps: o.eps)
        let dt = (1 - o.eps) / Double(o.steps)
        var probs = [Double](repeating: 0, count: V)
        var forwards = 0
        for i in 0...o.steps {
            let final = i == o.steps
            let sigmaT = o.noise.sigma(ts[i])
            let dsig = final ? sigmaT : sigmaT - o.noise.sigma(ts[i] - dt)
            let euler = !final && o.predictor == .euler
            let rate = euler ? dt * o.noise.dsigma(ts[i]) : 0
            if !x.contains(m) { onStep?(i + 1, x); continue }   // nothing left to sample: skip the forward
            let sig = [Float](repeating: Float(sigmaT), count: B)
            let logits = x.withUnsafeBufferPointer { tok in sig.withUnsafeBufferPointer {
                model.forward(tokens: tok, batch: B, layout: .full, sigma: $0, training: false, dropoutSeed: 0)
            } }
            forwards += 1
            for row in 0..<(B * L) where x[row] == m {
                let lg = UnsafePointer(logits.baseAddress! + row * V)
                if euler {
                    SEDDSampler.eulerProbabilities(logits: lg, V: V, maskId: m, sigma: sigmaT, rate: rate, out: &probs)
                } else {
                    SEDDSampler.stepProbabilities(logits: lg, V: V, x: m, maskId: m, sigma: sigmaT, dsigma: dsig,
                                                  nucleus: o.nucleus, final: final, out: &probs)
                }
                let c = SEDDSampler.gumbelArgmax(probs, rng: &rngs[row / L])
                guard c != Int(m) else { continue }
                x[row] = Int32(c)
                var z = 0.0
                for y in 0..<V where y != Int(m) { z += max(probs[y], 0) }
                conf[row] = z > 0 ? Float(probs[c] / z) : 0
                when[row] = UInt32(i + 1)
            }
            onStep?(i + 1, x)
        }
        return (0..<B).map { k in
            SEDDSample(tokens: Array(x[(k * L)..<((k + 1) * L)]), confidence: Array(conf[(k * L)..<((k + 1) * L)]),
                       unmaskStep: Array(when[(k * L)..<((k + 1) * L)]), promptLength: P, nfe: o.steps, forwardPasses: forwards)
        }
    }

    /// `draft` on a SEDD checkpoint: the samples `ids`, in batches of at most `batch`, handed to `write` in the
    /// given order as samples-stream records (header fields `TokenFields.all`). Sample `id` is drawn with seed
    /// canvasSeed(seed, id), as `draft` seeds BD3 samples: the output depends on (seed, id) only, so batching
    /// and sharding (`--shard i/n` = the ids ≡ i mod n) give the same records.
    public func draft<S: Sequence>(ids: S, batch: Int, seed: UInt64, write: (TokenRecord) throws -> Void) rethrows where S.Element == UInt64 {
        precondition(batch >= 1 && batch <= model.maxBatch)
        var pending: [UInt64] = []
        func flush() throws {
            for (id, s) in zip(pending, sample(seeds: pending.map { canvasSeed(seed, $0) })) {
                try write(s.record(id: id, options: options))
            }
            pending.removeAll()
        }
        for id in ids {
            pending.append(id)
            if pending.count == batch { try flush() }
        }
        if !pending.isEmpty { try flush() }
    }

    /// Samples 0..<count (see `draft(ids:batch:seed:write:)`).
    public func draft(count: Int, batch: Int, seed: UInt64, write: (TokenRecord) throws -> Void) rethrows {
        try draft(ids: (0..<UInt64(max(count, 0))), batch: batch, seed: seed, write: write)
    }

    // MARK: one step, one row (float64)

    /// Transition probabilities of one row from its logits: score → (nucleus) → staggered → ⊙ T(x, dσ),
    /// and probs[m] = 0 when `final`. out (V).
    public static func stepProbabilities(logits: UnsafePointer<Float>, V: Int, x: Int32, maskId: Int32, sigma: Double, dsigma: Double,
                                         nucleus: Double, final: Bool, out: inout [Double]) {
        let c = SEDDLoss.shift(sigma: sigma, V: V)
        var score = [Double](repeating: 0, count: V)
        for y in 0..<V { score[y] = Double(logits[y]) - c }
        score[Int(x)] = 0
        if nucleus < 1 {
            var mx = -Double.infinity
            for y in 0..<V { mx = max(mx, score[y]) }
            var z = 0.0
            for y in 0..<V { score[y] = exp(score[y] - mx); z += score[y] }
            for y in 0..<V { score[y] /= z }
            score = nucleusFilter(score, topP: nucleus)
        } else {
            for y in 0..<V { score[y] = exp(score[y]) }
        }
        analyticProbabilities(score: score, x: x, maskId: maskId, dsigma: dsigma, out: &out)
        if final { out[Int(maskId)] = 0 }
    }

    /// Euler step of a masked row (SEDD `EulerPredictor` on the absorbing graph): with s = exp(log_score),
    /// probs[y] = rate·s[y] for y ≠ m and probs[m] = 1 − Σ_{y≠m} probs[y], where rate = dt·σ'(t). out (V).
    public static func eulerProbabilities(logits: UnsafePointer<Float>, V: Int, maskId: Int32, sigma: Double, rate: Double,
                                          out: inout [Double]) {
        let c = SEDDLoss.shift(sigma: sigma, V: V)
        if out.count != V { out = [Double](repeating: 0, count: V) }
        var total = 0.0
        for y in 0..<V where y != Int(maskId) {
            out[y] = rate * exp(Double(logits[y]) - c)
            total += out[y]
        }
        out[Int(maskId)] = 1 - total
    }

    /// Staggered score s' = s·e^{dσ}, s'[m] += (1 − e^{dσ})·Σ s.
    public static func staggeredScore(_ s: [Double], maskId: Int32, dsigma: Double) -> [Double] {
        let e = exp(dsigma)
        var total = 0.0
        for v in s { total += v }
        var out = s.map { $0 * e }
        out[Int(maskId)] += (1 - e) * total
        return out
    }

    /// T(x, σ) = e^{−σ}·onehot(x) + [x==m](1 − e^{−σ})·1, (V).
    public static func transposedTransition(x: Int32, V: Int, maskId: Int32, sigma: Double) -> [Double] {
        var out = [Double](repeating: x == maskId ? -expm1(-sigma) : 0, count: V)
        out[Int(x)] += exp(-sigma)
        return out
    }

    /// probs = staggered(score) ⊙ T(x, dσ); out (V).
    public static func analyticProbabilities(score: [Double], x: Int32, maskId: Int32, dsigma: Double, out: inout [Double]) {
        let s = staggeredScore(score, maskId: maskId, dsigma: dsigma)
        let tr = transposedTransition(x: x, V: score.count, maskId: maskId, sigma: dsigma)
        if out.count != score.count { out = [Double](repeating: 0, count: score.count) }
        for y in 0..<score.count { out[y] = s[y] * tr[y] }
    }

    /// Nucleus filtering of a distribution: sort descending, keep cumsum ≤ p, always keep the top-1, zero the
    /// rest, renormalise. p = 1 returns the input unchanged (as the reference short-circuits). Stable sort so
    /// ties keep index order.
    public static func nucleusFilter(_ p: [Double], topP: Double) -> [Double] {
        if topP >= 1 { return p }
        let order = p.indices.sorted { p[$0] > p[$1] || (p[$0] == p[$1] && $0 < $1) }
        var out = [Double](repeating: 0, count: p.count)
        var cum = 0.0, kept = 0.0
        for (rank, j) in order.enumerated() {
            cum += p[j]
            guard rank == 0 || cum <= topP else { break }
            out[j] = p[j]; kept += p[j]
        }
        if kept > 0 { for j in out.indices { out[j] /= kept } }
        return out
    }

    /// Gumbel-max: argmax_y probs[y] / (1e-10 − log(U_y + 1e-10)), first index on ties, U_y drawn in index order.
    public static func gumbelArgmax(_ probs: [Double], uniforms: [Double]) -> Int {
        var best = 0, bestV = -Double.infinity
        for y in probs.indices {
            // g > 0 for U in [0, 1) up to rounding at U → 1; keep it positive so a zero prob never beats the others.
            let g = max(1e-10 - log(uniforms[y] + 1e-10), Double.leastNonzeroMagnitude)
            let v = probs[y] / g
            if v > bestV { bestV = v; best = y }
        }
        return best
    }

    static func gumbelArgmax(_ probs: [Double], rng: inout Xoshiro256) -> Int {
        var u = [Double](repeating: 0, count: probs.count)
        for y in u.indices { u[y] = rng.uniformDouble() }
        return gumbelArgmax(probs, uniforms: u)
    }
}
