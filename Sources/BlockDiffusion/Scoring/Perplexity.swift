// `score ppl` (spec §3.1): test perplexity from the NELBO, token-weighted over the whole stream.
//   bd3 / mdlm: K Monte-Carlo draws of t per block (antithetic across the batch's blocks), t ~ U[1e-3, 1),
//               weight 1/t (loss_scale), position 0 excluded when ignore_bos; NELBO ≥ NLL, so PPL is an upper bound.
//   bd3 L' = 1: U[1,1] — every token masked, exact NLL (the reference's eval_nll); K is irrelevant.
//   ar        : exact NLL of x[1:] given x[:-1].
//   sedd      : score-entropy NELBO (SEDDPerplexity), K draws of one t per sequence; no Var-NELBO. Per-batch
//               generators like the others (so it shards); its numbers moved by MC noise when they came in.
// Var-NELBO (§2.6) of the reported interval and of each requested clip interval: mean over batches
// of the unbiased variance of the per-block mean losses (not for AR).
// --dtype bf16: the model's matrices rounded to bf16 first (InferenceWeights.roundMatricesToBF16), then the same fp32
// forward: the NLL of the model bf16 inference computes with (not a faster or smaller evaluation).
import Foundation

public struct PerplexityOptions: Sendable {
    public var samples = 1
    public var batch = 8
    public var clips: [ClipInterval] = []
    public var seed: UInt64 = 1
    /// bd3 only: evaluate at this block size instead of the checkpoint's (e.g. a mixed-scale model at its global size).
    public var blockSize: Int? = nil
    /// `--shard i/n`: only the batches b ≡ i (mod n). Each batch draws from its own generators seeded by (seed, b),
    /// so the shards' sums add up to the unsharded run's (`score merge`).
    public var shard = Shard.whole
    /// bf16: the model's matrices are rounded to bf16 in place before scoring (the values `draft`/`refine --dtype
    /// bf16` compute with: InferenceWeights.roundMatricesToBF16); the NELBO forward itself stays the fp32 training
    /// forward, so this measures what bf16 weights do to the likelihood, not bf16 speed or memory.
    public var dtype: WeightDType = .fp32
    public init() {}

    /// The generator of estimate `stream` in batch b. Each estimate draws its t from its own stream, so the
    /// reported NLL does not depend on which other estimates were asked for (--clip, the training schedule's):
    /// stream 0 is the reported NELBO, 1 the training schedule's, 2+j the j-th extra clip interval.
    func batchRNG(_ b: Int, stream: UInt64 = 0) -> Xoshiro256 {
        let s = seed ^ SplitMix64.mix(UInt64(b) &+ 0x632B_E59B_D9B4_E019)
        return Xoshiro256(seed: stream == 0 ? s : SplitMix64.mix(s ^ SplitMix64.mix(stream)))
    }

    /// The checks that need no file (exit 64); `load` checks the block size against the data.
    public func validate() throws {
        try checkRange(samples, 1...Limits.count, "--samples")
        try checkRange(batch, 1...Limits.batch, "--batch")
        if let b = blockSize { try checkRange(b, 1...Limits.length, "--block-size") }
    }
}

public enum Perplexity {
    /// Scores `data` with `model` (already loaded) as described by `info`. With `o.dtype == .bf16` the model's
    /// matrices are first rounded to bf16 in place (idempotent).
    public static func evaluate(model: DiT, info: CheckpointInfo, data: SequenceData, options o: PerplexityOptions) -> PerplexityResult {
        if o.dtype == .bf16 { InferenceWeights.roundMatricesToBF16(model) }
        var r = evaluateModel(model: model, info: info, data: data, options: o)
        r.dtype = o.dtype
        return r
    }

    static func evaluateModel(model: DiT, info: CheckpointInfo, data: SequenceData, options o: PerplexityOptions) -> PerplexityResult {
        let L = data.length
        let algo = info.algorithm
        if algo == .sedd {
            // SEDD: NELBO of the score-entropy loss, K draws of one t per sequence (SEDD/SEDDBatchLoss.swift).
            let noise = SEDDNoise(rawValue: info.metadata["sedd_noise"] ?? "") ?? .bd3lms
            var r = SEDDPerplexity.evaluate(model: model, data: data, maskID: info.special.mask, noise: noise,
                                            samples: o.samples, batch: o.batch, shard: o.shard, batchRNG: { o.batchRNG($0) })
            r.blockSize = L
            r.sums?.input = identity(data); r.sums?.model = identity(info)
            return r
        }
        let bs = algo == .mdlm ? L : (algo == .ar ? 1 : (o.blockSize ?? info.blockSize))
        // The reported NLL is the NELBO under the loglinear schedule at t ~ U[1e-3, 1] for every model: in continuous
        // time the NELBO does not depend on the schedule (it only changes the estimator's variance), but its
        // t ≥ 1e-3 cut does — a schedule with p(1e-3) far from 0 (square root: 0.032, the Gaussian ones ~0.2)
        // never scores the lightly-masked region and reads low. The training schedule's own NELBO (the reference's
        // evaluation, K draws like the reported one) and every Var. NELBO are computed under the training schedule.
        var obj = DiffusionObjective(blockSize: bs, length: L, maskID: info.special.mask)
        obj.schedule = .loglinear
        obj.ignoreBOS = algo != .ar
        if let t = info.metadata["training"], let d = try? JSONSerialization.jsonObject(with: Data(t.utf8)) as? [String: String] {
            if d["ignore_bos"] == "false" { obj.ignoreBOS = false }
            if d["resample"] == "false" { obj.resample = false }
            if let r = d["tuned_rule"], let tr = TunedRule(rawValue: r) { obj.tunedRule = tr }
        }
        let runner = BatchLoss(model: model, algorithm: algo, objective: obj, maxBatch: o.batch, needsGradients: false)
        let own = algo == .ar ? NoiseSchedule.loglinear : info.noiseSchedule
        var ownObj = obj
        ownObj.schedule = own
        let ownRunner = own == .loglinear ? runner : BatchLoss(model: model, algorithm: algo, objective: ownObj, maxBatch: o.batch, needsGradients: false)
        let report: ClipInterval = algo == .bd3 && bs == 1 ? .tuned : .base
        let exact = algo == .ar || report == .tuned
        let K = exact ? 1 : max(1, o.samples)
        // Var-NELBO of the reported interval comes from the first of the K draws; the other requested
        // intervals get one extra draw per batch each.
        var reportAcc = VarianceAccumulator()
        var accs = algo == .ar ? [] : o.clips.filter { $0 != report }.map { ($0, VarianceAccumulator()) }
        var ownReport = (acc: VarianceAccumulator(), nll: 0.0, count: 0)
        var nll = 0.0, count = 0
        var rows: [Int32] = []
        var lo = 0, batchIndex = -1, batches = 0
        while lo < data.count {
            let hi = min(data.count, lo + o.batch)
            batchIndex += 1
            guard o.shard.contains(batchIndex) else { lo = hi; continue }
            batches += 1
            var rng = o.batchRNG(batchIndex)
            data.gather(Array(lo..<hi), into: &rows)
            for k in 0..<K {
                let s = rows.withUnsafeBufferPointer {
                    runner.run(x0: $0, batch: hi - lo, interval: report, training: false, weighted: false, backward: false,
                               dropoutSeed: 0, rng: &rng)
                }
                nll += s.nllSum; count += s.tokenCount
                if k == 0 { reportAcc.add(blockMeans: s.blockMeans) }
            }
            if own != .loglinear {
                // The training schedule's NELBO with the same K draws as the reported one (its Var. NELBO from the first).
                var ownRng = o.batchRNG(batchIndex, stream: 1)
                for k in 0..<K {
                    let s = rows.withUnsafeBufferPointer {
                        ownRunner.run(x0: $0, batch: hi - lo, interval: report, training: false, weighted: false, backward: false,
                                      dropoutSeed: 0, rng: &ownRng)
                    }
                    if k == 0 { ownReport.acc.add(blockMeans: s.blockMeans) }
                    ownReport.nll += s.nllSum; ownReport.count += s.tokenCount
                }
            }
            for j in accs.indices {
                var clipRng = o.batchRNG(batchIndex, stream: UInt64(2 + j))
                let s = rows.withUnsafeBufferPointer {
                    ownRunner.run(x0: $0, batch: hi - lo, interval: accs[j].0, training: false, weighted: false, backward: false,
                                  dropoutSeed: 0, rng: &clipRng)
                }
                accs[j].1.add(blockMeans: s.blockMeans)
            }
            lo = hi
        }
        let reportVar = own == .loglinear ? reportAcc.varNELBO : ownReport.acc.varNELBO
        var result = PerplexityResult(nll: nll / Double(count), tokens: count / K, sequences: sequences(data.count, o), samples: K,
                                      interval: algo == .ar ? nil : report, exact: exact,
                                      varNELBO: (algo == .ar ? [] : [(report, reportVar)]) + accs.map { ($0.0, $0.1.varNELBO) })
        result.blockSize = bs
        if own != .loglinear {
            result.schedule = (own.name, own.parameterString, ownReport.nll / Double(max(ownReport.count, 1)))
        }
        var sums = PerplexitySums(shard: o.shard, nllSum: nll, count: count, batches: batches)
        let reportSums = own == .loglinear ? reportAcc : ownReport.acc
        sums.variance = (algo == .ar ? [] : [(report, reportSums.sum, reportSums.batches)]) + accs.map { ($0.0, $0.1.sum, $0.1.batches) }
        if own != .loglinear { sums.scheduleNLLSum = ownReport.nll; sums.scheduleCount = ownReport.count }
        sums.input = identity(data); sums.model = identity(info)
        result.sums = sums
        return result
    }

    /// The test stream a report scored (in its sums: `score merge` refuses shards of different streams).
    static func identity(_ d: SequenceData) -> String {
        "\(d.count)x\(d.length) crc32c " + String(format: "%08x", d.tokens.withUnsafeBytes { crc32c($0) })
    }

    /// The model a report scored: algorithm and sizes, and the content checksum when the checkpoint records one.
    static func identity(_ i: CheckpointInfo) -> String {
        let c = i.config
        return "\(i.algorithm.rawValue) V\(c.vocabSize) D\(c.hiddenSize) N\(c.nBlocks) H\(c.nHeads) step \(i.step)"
            + (i.metadata[CheckpointDigest.key].map { " weights_crc32c \($0)" } ?? "")
    }

    /// Sequences in the shard's batches.
    static func sequences(_ n: Int, _ o: PerplexityOptions) -> Int {
        var total = 0, lo = 0, b = 0
        while lo < n { let hi = min(n, lo + o.batch); if o.shard.contains(b) { total += hi - lo }; lo = hi; b += 1 }
        return total
    }

    /// A shard must hold at least one batch.
    public static func checkShard(_ o: PerplexityOptions, sequences: Int, algorithm: Algorithm) throws {
        guard o.shard != .whole else { return }
        let batches = (sequences + o.batch - 1) / o.batch
        guard o.shard.index < batches else {
            throw UsageError("shard \(o.shard) has no batches: \(sequences) sequences make \(batches) batches of --batch \(o.batch); use at most \(batches) shards")
        }
    }

    /// Loads a checkpoint and a test stream and checks they fit together.
    /// `blockSize` overrides the checkpoint's (bd3 only; usage error otherwise or when it does not divide L).
    /// `overrides` supply what a reference state_dict lacks (Checkpoint.open).
    public static func load(checkpoint: String, data path: String, batch: Int, blockSize: Int? = nil,
                            overrides: CheckpointOverrides = .init()) throws -> (DiT, CheckpointInfo, SequenceData) {
        var o = overrides
        if o.blockSize == nil { o.blockSize = blockSize }
        let ck = try Checkpoint.open(checkpoint, overrides: o)
        let info = ck.info
        let data = try SequenceData.load(path: path)
        try info.requireCompatible(data.header, path: path)
        guard data.length >= 2 else {
            throw ToolError("\(path): rows of \(data.length) token hold nothing to score (a row is a BOS or first token plus the tokens predicted from it); repack with pack-blocks -L 2 or more")
        }
        if let b = blockSize {
            guard info.algorithm == .bd3 else {
                throw UsageError("--block-size applies to bd3 checkpoints; \(checkpoint) is \(info.algorithm.rawValue)")
            }
            guard b >= 1, data.length % b == 0 else {
                throw UsageError("--block-size \(b) does not divide the sequence length \(data.length) of \(path)")
            }
        }
        let bs = info.algorithm == .bd3 ? (blockSize ?? info.blockSize) : 1
        guard data.length % bs == 0 else {
            throw UsageError("\(path): sequence length \(data.length) is not a multiple of the checkpoint's block size \(bs); repack with pack-blocks --seq-len")
        }
        if info.algorithm == .sedd && data.length > info.length {
            throw ToolError("\(path): sequences of \(data.length) tokens are longer than the SEDD model's length \(info.length); repack with pack-blocks --seq-len \(info.length)")
        }
        let tokens = Double(batch) * Double(BatchLoss.inputLength(info.algorithm, length: data.length))
        try requireMemory(tokens * Double(info.config.vocabSize + info.config.hiddenSize) * 4,
                          for: "a batch of \(batch) rows of \(data.length) tokens (logits and activations)", fix: "lower --batch")
        let model = try ck.model(maxBatch: batch, maxTokens: BatchLoss.inputLength(info.algorithm, length: data.length), length: data.length)
        return (model, info, data)
    }
}
