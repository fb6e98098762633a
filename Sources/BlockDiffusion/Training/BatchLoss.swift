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

public enum Algorithm: String, CaseIterable, Sendable {
    case ar, mdlm, bd3
}

public final class BatchLoss {
    public let model: DiT
    public let algorithm: Algorithm
    public var objective: DiffusionObjective
    public let maxBatch: Int
    let L: Int, V: Int
    let input: UnsafeMutableBufferPointer<Int32>
    let weights: UnsafeMutableBufferPointer<Float>
    let rowLoss: UnsafeMutableBufferPointer<Float>
    let dLogits: UnsafeMutableBufferPointer<Float>
    let xt: UnsafeMutableBufferPointer<Int32>
    let targets: UnsafeMutableBufferPointer<Int32>

    /// `objective.blockSize` must be 1 for AR and L for MDLM. Buffers sized for `maxBatch` sequences.
    public init(model: DiT, algorithm: Algorithm, objective: DiffusionObjective, maxBatch: Int, needsGradients: Bool) {
        self.model = model; self.algorithm = algorithm; self.objective = objective; self.maxBatch = maxBatch
        L = objective.length; V = model.config.vocabSize
        input = .allocate(capacity: maxBatch * 2 * L); input.initialize(repeating: 0)
        weights = .allocate(capacity: maxBatch * L); weights.initialize(repeating: 0)
        rowLoss = .allocate(capacity: maxBatch * L); rowLoss.initialize(repeating: 0)
        xt = .allocate(capacity: maxBatch * L); xt.initialize(repeating: 0)
        targets = .allocate(capacity: maxBatch * L); targets.initialize(repeating: 0)
        dLogits = .allocate(capacity: needsGradients ? maxBatch * L * V : 0)
        if needsGradients { dLogits.initialize(repeating: 0) }
    }
    deinit { input.deallocate(); weights.deallocate(); rowLoss.deallocate(); xt.deallocate(); targets.deallocate(); dLogits.deallocate() }

    /// Model input length per sequence for this algorithm.
    public static func inputLength(_ a: Algorithm, length L: Int) -> Int {
        switch a { case .ar: return L - 1; case .mdlm: return L; case .bd3: return 2 * L }
    }

    /// Runs the batch `x0` (B, L). `training` selects the denominator (all tokens) and dropout;
    /// `weighted` applies the reweighting (training loss only). With `backward`, gradients of
    /// tokenNLL·gradScale are accumulated into the model. Draws t and masks from `rng`.
    public func run(x0: UnsafeBufferPointer<Int32>, batch B: Int, interval: ClipInterval, training: Bool,
                    weighted: Bool, backward: Bool, gradScale: Double = 1, dropoutSeed: UInt64,
                    rng: inout Xoshiro256) -> LossSummary {
        precondition(B <= maxBatch && x0.count == B * L)
        precondition(!backward || dLogits.count > 0, "BatchLoss built without gradient buffers")
        if algorithm == .ar { return runAR(x0: x0, batch: B, training: training, backward: backward, gradScale: gradScale, dropoutSeed: dropoutSeed) }
        let obj = objective
        let nb = obj.blocksPerSequence
        let t = obj.sampleTimes(batch: B, interval: interval, rng: &rng)
        let p = obj.moveChance(t)
        let masked = obj.maskTokens(x0: Array(x0), batch: B, p: p, interval: interval, rng: &rng)
        let coef = obj.coefficients(t, interval: interval, weighted: weighted)
        let excludeFirst = obj.ignoreBOS && !training
        let count = B * L - (excludeFirst ? B : 0)
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
        if backward { model.backward(dLogits: UnsafeBufferPointer(rebasing: dLogits[0..<(B * L * V)])) }
        return summarize(batch: B, perSequence: L, blockSize: obj.blockSize, count: count, scale: s)
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
        if backward { model.backward(dLogits: UnsafeBufferPointer(rebasing: dLogits[0..<(B * T * V)])) }
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
