// One SEDD batch through the time-conditioned DiT and the score-entropy head, for `train --algo sedd`
// and SEDD test perplexity. Shares BatchLossCore (buffers, draw, denominator) with Training/BatchLoss.swift:
//
//   t_k       one per sequence, antithetic over the batch: u_k = (u + k)/B mod 1, t = u(ω−β)+β; the base
//             interval (1e-3, 1) gives t = (1−ε)u + ε.                       (DiffusionObjective.sampleTimes)
//   x_t       q(x_t | x0): mask where U ≤ moveChance(t_k); BOS (position 0) never masked.  (…maskTokens)
//   σ_k       fed to the DiT (time conditioning on): the model needs config.timeConditioning = true.
//   loss      token loss dσ_k·ℓ (score entropy, SEDDLoss); reduction Σ / count with count = B·L in training
//             and B·(L−1) at evaluation (BOS left out, ignore_bos), exactly as the diffusion NELBO (spec §2.5).
//   backward  dLogits = gradScale/count · ∂(Σ token loss)/∂logits, then DiT.backward (accumulates).
//
// The per-token mean of dσ·ℓ over t ~ U[ε, 1) is a Monte-Carlo estimate of the SEDD NELBO per token,
// so `SEDDPerplexity` reports exp(mean) as an upper bound on the perplexity, like the diffusion models.
//
// `LossRunner` is the batch-loss interface the trainer needs; `BatchLoss` (diffusion/AR) and
// `SEDDBatchLoss` both conform, so `Trainer` can hold `any LossRunner` and pick by --algo.
import Foundation

/// What the trainer and the scorer need from a batch loss, so `Trainer` can hold either the diffusion/AR
/// `BatchLoss` or `SEDDBatchLoss` (`let loss: any LossRunner`). `weighted` selects the reweighting of the
/// diffusion objective; SEDD has none, so SEDDBatchLoss accepts and ignores it.
public protocol LossRunner: AnyObject {
    var objective: DiffusionObjective { get set }
    func run(x0: UnsafeBufferPointer<Int32>, batch B: Int, interval: ClipInterval, training: Bool,
             weighted: Bool, backward: Bool, gradScale: Double, dropoutSeed: UInt64,
             rng: inout Xoshiro256) -> LossSummary
}

extension BatchLoss: LossRunner {}

/// Time sampling and masking (antithetic, BOS rule) are the diffusion objective's with one block per sequence.
public final class SEDDBatchLoss: BatchLossCore, LossRunner {
    public var noise: SEDDNoise
    /// σ and dσ of the last batch (B), for inspection.
    public private(set) var sigma: [Double] = []
    public private(set) var dsigma: [Double] = []

    public init(model: DiT, noise: SEDDNoise = .bd3lms, length: Int, maskID: Int32, maxBatch: Int, needsGradients: Bool) {
        precondition(model.config.timeConditioning && model.config.hasAdaLN, "SEDD needs a time-conditioned (non-causal) DiT")
        self.noise = noise
        super.init(name: "SEDDBatchLoss", model: model, objective: DiffusionObjective(blockSize: length, length: length, maskID: maskID),
                   maxBatch: maxBatch, needsGradients: needsGradients)
    }

    /// Per-token losses dσ·ℓ of the last batch (B·L).
    public var tokenLosses: [Float] { Array(rowLoss[0..<(sigma.count * L)]) }
    /// x_t of the last batch (B·L).
    public var lastXt: [Int32] { Array(xt[0..<(sigma.count * L)]) }

    /// Runs the batch x0 (B, L): draws t and x_t from `rng`, forward (+ backward with gradients of
    /// tokenNLL·gradScale accumulated into the model). `training` selects dropout and the denominator.
    /// `weighted` is ignored (no reweighting for SEDD; it exists for `LossRunner`).
    public func run(x0: UnsafeBufferPointer<Int32>, batch B: Int, interval: ClipInterval = .base, training: Bool,
                    weighted: Bool = false, backward: Bool, gradScale: Double = 1, dropoutSeed: UInt64,
                    rng: inout Xoshiro256) -> LossSummary {
        precondition(B <= maxBatch && x0.count == B * L)
        let (t, masked) = drawNoise(x0: x0, batch: B, interval: interval, moveChance: { $0.map(self.noise.moveChance) }, rng: &rng)
        return run(x0: x0, xt: masked, t: t, training: training, backward: backward, gradScale: gradScale, dropoutSeed: dropoutSeed)
    }

    /// The deterministic part: given x_t (B·L) and t (B).
    public func run(x0: UnsafeBufferPointer<Int32>, xt masked: [Int32], t: [Double], training: Bool, backward: Bool,
                    gradScale: Double = 1, dropoutSeed: UInt64) -> LossSummary {
        let B = t.count
        precondition(B <= maxBatch && x0.count == B * L && masked.count == B * L)
        requireGradients(backward)
        sigma = t.map { noise.sigma($0) }
        dsigma = t.map { noise.dsigma($0) }
        for i in 0..<(B * L) { xt[i] = masked[i] }
        let excludeFirst = excludesFirst(training: training)
        let count = tokenCount(batch: B, training: training)
        let sigmaF = sigma.map { Float($0) }
        let logits = sigmaF.withUnsafeBufferPointer {
            model.forward(tokens: UnsafeBufferPointer(rebasing: xt[0..<(B * L)]), batch: B, layout: .full,
                          sigma: $0, training: training, dropoutSeed: dropoutSeed)
        }
        sigma.withUnsafeBufferPointer { sg in dsigma.withUnsafeBufferPointer { ds in
            _ = SEDDLoss.forward(logits: UnsafePointer(logits.baseAddress!), batch: B, length: L, V: V,
                                 xt: UnsafePointer(xt.baseAddress!), x0: x0.baseAddress!, maskId: objective.maskID,
                                 sigma: sg.baseAddress!, dsigma: ds.baseAddress!, gradScale: gradScale / Double(count),
                                 loss: rowLoss.baseAddress!, dLogits: backward ? dLogits.baseAddress! : nil)
        } }
        if backward { self.backward(rows: B * L) }
        var sum = 0.0
        var means = [Double](repeating: 0, count: B)
        for k in 0..<B {
            for i in 0..<L where !(excludeFirst && i == 0) {
                let l = Double(rowLoss[k * L + i])
                sum += l; means[k] += l
            }
            means[k] /= Double(L)
        }
        return LossSummary(nllSum: sum, tokenCount: count, blockMeans: means)
    }
}

/// SEDD test perplexity (`score ppl` on a SEDD checkpoint): K Monte-Carlo draws of t per sequence
/// (antithetic across the batch), NELBO per token over the stream, BOS excluded. PPL = exp(NELBO) ≥ true PPL.
public enum SEDDPerplexity {
    /// The NELBO over `data`'s batches b ≡ shard (mod n). Batch b draws its t and masks from `batchRNG(b)`, its own
    /// generator, so a shard's sums do not depend on the batches it skips and `score merge` of the shards gives the
    /// unsharded numbers. (Before per-batch generators one generator ran through the whole stream: the numbers of
    /// that version differ from these by Monte-Carlo noise.)
    public static func evaluate(model: DiT, data: SequenceData, maskID: Int32, noise: SEDDNoise = .bd3lms,
                                samples: Int = 1, batch: Int = 8, shard: Shard = .whole,
                                batchRNG: (Int) -> Xoshiro256) -> PerplexityResult {
        let runner = SEDDBatchLoss(model: model, noise: noise, length: data.length, maskID: maskID, maxBatch: batch, needsGradients: false)
        let K = max(1, samples)
        var nll = 0.0, count = 0, batches = 0, sequences = 0
        var rows: [Int32] = []
        var lo = 0, b = 0
        while lo < data.count {
            let hi = min(data.count, lo + batch)
            defer { lo = hi; b += 1 }
            guard shard.contains(b) else { continue }
            batches += 1; sequences += hi - lo
            var rng = batchRNG(b)
            data.gather(Array(lo..<hi), into: &rows)
            for _ in 0..<K {
                let s = rows.withUnsafeBufferPointer {
                    runner.run(x0: $0, batch: hi - lo, training: false, backward: false, dropoutSeed: 0, rng: &rng)
                }
                nll += s.nllSum; count += s.tokenCount
            }
        }
        var r = PerplexityResult(nll: nll / Double(count), tokens: count / K, sequences: sequences, samples: K,
                                 interval: .base, exact: false, varNELBO: [])
        r.sums = PerplexitySums(shard: shard, nllSum: nll, count: count, batches: batches)
        r.note = note
        return r
    }

    /// In the JSON: why these numbers differ from an older version's.
    public static let note = "sedd: per-batch generators (seed, batch index) since score ppl --shard; estimates differ from earlier versions by Monte-Carlo noise"
}
