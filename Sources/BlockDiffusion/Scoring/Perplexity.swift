// `score ppl` (spec §3.1): test perplexity from the NELBO, token-weighted over the whole stream.
//   bd3 / mdlm: K Monte-Carlo draws of t per block (antithetic across the batch's blocks), t ~ U[1e-3, 1),
//               weight 1/t (loss_scale), position 0 excluded when ignore_bos; NELBO ≥ NLL, so PPL is an upper bound.
//   bd3 L' = 1: U[1,1] — every token masked, exact NLL (the reference's eval_nll); K is irrelevant.
//   ar        : exact NLL of x[1:] given x[:-1].
// Var-NELBO (§2.6) for each requested clip interval: mean over batches of the unbiased variance of the
// per-block mean losses.
import Foundation

public struct PerplexityOptions: Sendable {
    public var samples = 1
    public var batch = 8
    public var clips: [ClipInterval] = []
    public var seed: UInt64 = 1
    public init() {}
}

public struct PerplexityResult: Sendable {
    public var nll: Double
    public var tokens: Int
    public var sequences: Int
    public var samples: Int
    public var interval: ClipInterval
    public var exact: Bool
    public var varNELBO: [(ClipInterval, Double)]
    public var ppl: Double { exp(nll) }
    public var bpd: Double { nll / M_LN2 }

    public var json: String {
        var o: [String: Any] = ["ppl": ppl, "nll": nll, "bpd": bpd, "tokens": tokens, "sequences": sequences,
                                "samples": samples, "exact": exact, "interval": [interval.min, interval.max]]
        var vars: [[String: Any]] = []
        for (c, v) in varNELBO { vars.append(["min": c.min, "max": c.max, "var": v.isFinite ? v : NSNull()]) }
        o["var_nelbo"] = vars
        let d = try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])
        return String(decoding: d, as: UTF8.self)
    }

    public var table: String {
        var s = String(format: "%@ over %d tokens (%d sequences, %d sample%@)\n", exact ? "exact NLL" : "NELBO", tokens, sequences,
                       samples, samples == 1 ? "" : "s")
        s += String(format: "  nll  %.6f nats/token\n  ppl  %.4f\n  bpd  %.6f\n", nll, ppl, bpd)
        if !varNELBO.isEmpty {
            s += "  Var. NELBO\n"
            for (c, v) in varNELBO { s += String(format: "    %-22@ %.6g\n", c.description, v) }
        }
        return s
    }
}

public enum Perplexity {
    /// Scores `data` with `model` (already loaded) as described by `info`.
    public static func evaluate(model: DiT, info: CheckpointInfo, data: SequenceData, options o: PerplexityOptions) -> PerplexityResult {
        let L = data.length
        let algo = info.algorithm
        let bs = algo == .mdlm ? L : (algo == .ar ? 1 : info.blockSize)
        var obj = DiffusionObjective(blockSize: bs, length: L, maskID: info.special.mask)
        obj.schedule = NoiseSchedule.named(info.schedule) ?? .loglinear
        obj.ignoreBOS = algo != .ar
        if let t = info.metadata["training"], let d = try? JSONSerialization.jsonObject(with: Data(t.utf8)) as? [String: String] {
            if d["ignore_bos"] == "false" { obj.ignoreBOS = false }
            if d["resample"] == "false" { obj.resample = false }
            if let r = d["tuned_rule"], let tr = TunedRule(rawValue: r) { obj.tunedRule = tr }
        }
        let runner = BatchLoss(model: model, algorithm: algo, objective: obj, maxBatch: o.batch, needsGradients: false)
        let report: ClipInterval = algo == .bd3 && bs == 1 ? .tuned : .base
        let exact = algo == .ar || report == .tuned
        let K = exact ? 1 : max(1, o.samples)
        var rng = Xoshiro256(seed: o.seed)
        var accs = o.clips.map { ($0, VarianceAccumulator()) }
        var nll = 0.0, count = 0
        var rows: [Int32] = []
        var lo = 0
        while lo < data.count {
            let hi = min(data.count, lo + o.batch)
            data.gather(Array(lo..<hi), into: &rows)
            for _ in 0..<K {
                let s = rows.withUnsafeBufferPointer {
                    runner.run(x0: $0, batch: hi - lo, interval: report, training: false, weighted: false, backward: false,
                               dropoutSeed: 0, rng: &rng)
                }
                nll += s.nllSum; count += s.tokenCount
            }
            for j in accs.indices {
                let s = rows.withUnsafeBufferPointer {
                    runner.run(x0: $0, batch: hi - lo, interval: accs[j].0, training: false, weighted: false, backward: false,
                               dropoutSeed: 0, rng: &rng)
                }
                accs[j].1.add(blockMeans: s.blockMeans)
            }
            lo = hi
        }
        return PerplexityResult(nll: nll / Double(count), tokens: count / K, sequences: data.count, samples: K,
                                interval: report, exact: exact, varNELBO: accs.map { ($0.0, $0.1.varNELBO) })
    }

    /// Loads a checkpoint and a test stream and checks they fit together.
    public static func load(checkpoint: String, data path: String, batch: Int) throws -> (DiT, CheckpointInfo, SequenceData) {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: checkpoint) } catch { throw ToolError("\(error)") }
        let info = try CheckpointInfo.read(file)
        let data = try SequenceData.load(path: path)
        try info.requireCompatible(data.header, path: path)
        let bs = info.algorithm == .bd3 ? info.blockSize : 1
        guard data.length % bs == 0 else {
            throw TrainingUsageError("\(path): sequence length \(data.length) is not a multiple of the checkpoint's block size \(bs); repack with pack-blocks --seq-len")
        }
        var config = info.config
        config.length = data.length
        let model = DiT(config: config, maxBatch: batch, maxTokens: BatchLoss.inputLength(info.algorithm, length: data.length))
        do { try model.load(file: file) } catch { throw ToolError("\(error)") }
        return (model, info, data)
    }
}
