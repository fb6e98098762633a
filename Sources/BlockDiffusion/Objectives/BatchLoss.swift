// One batch through the model and the loss, shared by `train` and `score ppl`.
//
//   ar   : input x0[:, :-1] (causal), targets x0[:, 1:], ℓ = −log p, denominator B·(L−1)   (spec §2.5)
//   mdlm : one t per sequence, x_t (B, L), full attention, SUBS
//   bd3  : one t per block, input [x_t, x0] (B, 2L), block-diffusion mask, SUBS on the x_t half
//
// The SUBS / AR heads are the model's (`LossHeads`): they compute row loss −w_i·log p_i and
// dLogits = w_i(softmax − onehot). We pass w_i = −c_b·s with s = gradScale/denominator, so the
// head's gradient is already that of (token NELBO)·gradScale; row losses are divided by s again to
// report unnormalised token losses.
import Foundation

/// What every batch loss (BatchLoss, SEDDBatchLoss) holds and does the same way: the model and objective,
/// buffers allocated once for `maxBatch` sequences of L tokens — x_t and per-token losses (B·L), dLogits
/// (B·L·V) only when gradients are needed — the draw of t and x_t, the loss denominator, the backward hand-off.
public class BatchLossCore {
    public let model: DiT
    public var objective: DiffusionObjective
    public let maxBatch: Int
    let L: Int, V: Int
    let xt: UnsafeMutableBufferPointer<Int32>
    let rowLoss: UnsafeMutableBufferPointer<Float>
    let dLogits: UnsafeMutableBufferPointer<Float>
    let name: String

    init(name: String, model: DiT, objective: DiffusionObjective, maxBatch: Int, needsGradients: Bool) {
        precondition(!needsGradients || !model.isInference, "\(name) with gradients needs a trainable DiT (built with inference: false)")
        self.name = name; self.model = model; self.objective = objective; self.maxBatch = maxBatch
        L = objective.length; V = model.config.vocabSize
        xt = .allocate(capacity: maxBatch * L); xt.initialize(repeating: 0)
        rowLoss = .allocate(capacity: maxBatch * L); rowLoss.initialize(repeating: 0)
        dLogits = .allocate(capacity: needsGradients ? maxBatch * L * V : 0)
        if needsGradients { dLogits.initialize(repeating: 0) }
    }
    deinit { xt.deallocate(); rowLoss.deallocate(); dLogits.deallocate() }

    func requireGradients(_ backward: Bool) {
        precondition(!backward || dLogits.count > 0, "\(name) built without gradient buffers")
    }

    /// t per block (B, nb) from the objective's sampler and x_t masking block b with probability moveChance(t)_b.
    func drawNoise(x0: UnsafeBufferPointer<Int32>, batch B: Int, interval: ClipInterval,
                   moveChance: ([Double]) -> [Double], rng: inout Xoshiro256) -> (t: [Double], xt: [Int32]) {
        let t = objective.sampleTimes(batch: B, interval: interval, rng: &rng)
        let masked = objective.maskTokens(x0: Array(x0), batch: B, p: moveChance(t), interval: interval, rng: &rng)
        return (t, masked)
    }

    /// Position 0 (BOS) is left out of the evaluation loss (ignore_bos); training counts every token.
    func excludesFirst(training: Bool) -> Bool { objective.ignoreBOS && !training }
    /// The loss denominator: B·L, or B·(L−1) when position 0 is left out.
    func tokenCount(batch B: Int, training: Bool) -> Int { B * L - (excludesFirst(training: training) ? B : 0) }

    /// DiT.backward on the first `rows` logit rows of dLogits.
    func backward(rows: Int) {
        model.backward(dLogits: UnsafeBufferPointer(rebasing: dLogits[0..<(rows * V)]))
    }
}

public final class BatchLoss: BatchLossCore {
    public let algorithm: Algorithm
    let input: UnsafeMutableBufferPointer<Int32>
    let weights: UnsafeMutableBufferPointer<Float>
    let targets: UnsafeMutableBufferPointer<Int32>

    /// `objective.blockSize` must be 1 for AR and L for MDLM. Buffers sized for `maxBatch` sequences.
    public init(model: DiT, algorithm: Algorithm, objective: DiffusionObjective, maxBatch: Int, needsGradients: Bool) {
        self.algorithm = algorithm
        let L = objective.length
        input = .allocate(capacity: maxBatch * 2 * L); input.initialize(repeating: 0)
        weights = .allocate(capacity: maxBatch * L); weights.initialize(repeating: 0)
        targets = .allocate(capacity: maxBatch * L); targets.initialize(repeating: 0)
        super.init(name: "BatchLoss", model: model, objective: objective, maxBatch: maxBatch, needsGradients: needsGradients)
    }
    deinit { input.deallocate(); weights.deallocate(); targets.deallocate() }

    /// Model input length per sequence for this algorithm.
    public static func inputLength(_ a: Algorithm, length L: Int) -> Int {
        switch a { case .ar: return L - 1; case .mdlm, .sedd: return L; case .bd3: return 2 * L }
    }

    /// Runs the batch `x0` (B, L). `training` selects the denominator (all tokens) and dropout;
    /// `weighted` applies the reweighting (training loss only). With `backward`, gradients of
    /// tokenNLL·gradScale are accumulated into the model. Draws t and masks from `rng`.
    public func run(x0: UnsafeBufferPointer<Int32>, batch B: Int, interval: ClipInterval, training: Bool,
                    weighted: Bool, backward: Bool, gradScale: Double = 1, dropoutSeed: UInt64,
                    rng: inout Xoshiro256) -> LossSummary {
        precondition(B <= maxBatch && x0.count == B * L)
        requireGradients(backward)
        precondition(algorithm != .sedd, "SEDD batches run through SEDDBatchLoss")
        if algorithm == .ar { return runAR(x0: x0, batch: B, training: training, backward: backward, gradScale: gradScale, dropoutSeed: dropoutSeed) }
        let (t, masked) = drawNoise(x0: x0, batch: B, interval: interval, moveChance: objective.moveChance, rng: &rng)
        return evaluate(x0: x0, xt: masked, blockTimes: t, batch: B, interval: interval, training: training, weighted: weighted,
                        backward: backward, gradScale: gradScale, dropoutSeed: dropoutSeed)
    }

    /// The deterministic part of `run` for diffusion: given x_t (B, L) and one t per block (B, nb).
    public func evaluate(x0: UnsafeBufferPointer<Int32>, xt masked: [Int32], blockTimes t: [Double], batch B: Int,
                         interval: ClipInterval, training: Bool, weighted: Bool, backward: Bool, gradScale: Double = 1,
                         dropoutSeed: UInt64) -> LossSummary {
        let obj = objective
        let nb = obj.blocksPerSequence
        precondition(algorithm != .ar && masked.count == B * L && t.count == B * nb)
        let coef = obj.coefficients(t, interval: interval, weighted: weighted)
        let excludeFirst = excludesFirst(training: training)
        let count = tokenCount(batch: B, training: training)
        let s = backward ? gradScale / Double(count) : 1
        for k in 0..<B {
            for i in 0..<L {
                let idx = k * L + i
                xt[idx] = masked[idx]
                weights[idx] = (excludeFirst && i == 0) ? 0 : Float(-coef[k * nb + i / obj.blockSize] * s)
            }
        }
        let layout: AttentionLayout
        let T: Int
        if algorithm == .bd3 {
            T = 2 * L
            for k in 0..<B {
                for i in 0..<L { input[k * T + i] = masked[k * L + i]; input[k * T + L + i] = x0[k * L + i] }
            }
            layout = .blockDiffusion(blockSize: obj.blockSize)
        } else {
            T = L
            for i in 0..<(B * L) { input[i] = masked[i] }
            layout = .full
        }
        let logits = model.forward(tokens: UnsafeBufferPointer(rebasing: input[0..<(B * T)]), batch: B, layout: layout,
                                   sigma: nil, training: training, dropoutSeed: dropoutSeed)
        LossHeads.subs(logits: UnsafePointer(logits.baseAddress!), N: B * L, V: V, xt: UnsafePointer(xt.baseAddress!),
                       x0: x0.baseAddress!, maskId: obj.maskID, weights: UnsafePointer(weights.baseAddress!),
                       loss: rowLoss.baseAddress!, dLogits: backward ? dLogits.baseAddress! : nil)
        if backward { self.backward(rows: B * L) }
        return summarize(batch: B, perSequence: L, blockSize: obj.blockSize, count: count, scale: s)
    }

    /// Switches the block size L' of the diffusion objective (bd3); the buffers do not depend on it.
    public func setBlockSize(_ b: Int) {
        precondition(algorithm == .bd3 && b >= 1 && L % b == 0, "block size \(b) must divide \(L) (bd3 only)")
        objective.blockSize = b
    }

    /// Mixed-scale training micro-batch (seed 003 §3.3): sequence k uses block size `sizes[k]`.
    /// Sequences are grouped by size (groups in the order of `order`, the mix's sizes); each group is
    /// one forward/backward with its own times, masks, dropout seed (`rng.split()`) and interval
    /// `intervals[size]`, and gradient scale gradScale·n_g/B, so the accumulated gradient is that of
    /// the per-token mean over the whole micro-batch. Returns the summed losses (nllSum, tokenCount
    /// over all groups; blockMeans concatenated group by group). With every draw equal this is
    /// exactly `run` after one `rng.split()` for the dropout seed, as the single-size trainer does.
    public func runMixed(x0: UnsafeBufferPointer<Int32>, batch B: Int, sizes: [Int], order: [Int],
                         intervals: [Int: ClipInterval], weighted: Bool, gradScale: Double,
                         rng: inout Xoshiro256) -> LossSummary {
        precondition(algorithm == .bd3 && sizes.count == B && x0.count == B * L)
        let saved = objective.blockSize
        defer { objective.blockSize = saved }
        var total = LossSummary(nllSum: 0, tokenCount: 0, blockMeans: [])
        var rows: [Int32] = []
        for size in order {
            let members = (0..<B).filter { sizes[$0] == size }
            guard !members.isEmpty else { continue }
            rows.removeAll(keepingCapacity: true)
            for k in members { rows += x0[(k * L)..<((k + 1) * L)] }
            setBlockSize(size)
            let n = members.count
            let seed = rng.split()
            let s = rows.withUnsafeBufferPointer {
                run(x0: $0, batch: n, interval: intervals[size] ?? .base, training: true, weighted: weighted, backward: true,
                    gradScale: gradScale * (Double(n) / Double(B)), dropoutSeed: seed, rng: &rng)
            }
            total.nllSum += s.nllSum; total.tokenCount += s.tokenCount; total.blockMeans += s.blockMeans
        }
        precondition(total.tokenCount == B * L, "a drawn block size is not in the mix's order list")
        return total
    }

    /// Per-token losses of the last run/evaluate (B, L) — (B, L−1) for AR — unnormalised.
    public func tokenLosses(batch B: Int, scale s: Double = 1) -> [Float] {
        let n = algorithm == .ar ? L - 1 : L
        return (0..<(B * n)).map { Float(Double(rowLoss[$0]) / s) }
    }

    func runAR(x0: UnsafeBufferPointer<Int32>, batch B: Int, training: Bool, backward: Bool, gradScale: Double,
               dropoutSeed: UInt64) -> LossSummary {
        let T = L - 1
        let count = B * T
        let s = backward ? gradScale / Double(count) : 1
        for k in 0..<B {
            for i in 0..<T {
                input[k * T + i] = x0[k * L + i]
                targets[k * T + i] = x0[k * L + i + 1]
                weights[k * T + i] = Float(s)
            }
        }
        let logits = model.forward(tokens: UnsafeBufferPointer(rebasing: input[0..<(B * T)]), batch: B, layout: .causal,
                                   sigma: nil, training: training, dropoutSeed: dropoutSeed)
        LossHeads.autoregressive(logits: UnsafePointer(logits.baseAddress!), N: B * T, V: V, targets: UnsafePointer(targets.baseAddress!),
                                 maskId: objective.maskID, weights: UnsafePointer(weights.baseAddress!),
                                 loss: rowLoss.baseAddress!, dLogits: backward ? dLogits.baseAddress! : nil)
        if backward { self.backward(rows: B * T) }
        return summarize(batch: B, perSequence: T, blockSize: T, count: count, scale: s)
    }

    /// Token losses (row loss / s), their sum, and per-block means over the block's slots.
    func summarize(batch B: Int, perSequence n: Int, blockSize: Int, count: Int, scale s: Double) -> LossSummary {
        let nb = n / blockSize
        var sum = 0.0
        var means = [Double](repeating: 0, count: B * nb)
        for k in 0..<B {
            for i in 0..<n {
                let l = Double(rowLoss[k * n + i]) / s
                sum += l
                means[k * nb + i / blockSize] += l
            }
        }
        for j in means.indices { means[j] /= Double(blockSize) }
        return LossSummary(nllSum: sum, tokenCount: count, blockMeans: means)
    }
}
