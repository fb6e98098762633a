// A likelihood estimate (NLL, PPL, BPD, Var. NELBO) as every NELBO evaluator reports it.
import Foundation

public struct PerplexityResult: Sendable {
    public var nll: Double
    public var tokens: Int
    public var sequences: Int
    public var samples: Int
    /// The block size L' evaluated (1 for AR, L for MDLM).
    public var blockSize: Int = 0
    /// The t interval of the reported NLL; nil for AR.
    public var interval: ClipInterval?
    public var exact: Bool
    /// Var. NELBO per interval, under the training schedule.
    public var varNELBO: [(ClipInterval, Double)]
    /// A model trained with another schedule than loglinear: its name, parameters, and the NELBO under it at
    /// the reported interval (the reference's evaluation; the same K draws). `nll` is always loglinear.
    public var schedule: (name: String, parameters: String, nll: Double)? = nil
    /// The additive totals behind the means, for `score merge` of `--shard` runs (nil: not recorded).
    public var sums: PerplexitySums? = nil
    /// A remark printed as "note" in the JSON (e.g. why a SEDD estimate moved between versions).
    public var note: String? = nil
    /// The weights' dtype (score ppl --dtype; bf16 = matrices rounded to bf16); nil = not recorded (a merge).
    public var dtype: WeightDType? = nil
    public var ppl: Double { exp(nll) }
    public var bpd: Double { nll / M_LN2 }

    public var json: String {
        // JSON has no inf/NaN (an NLL above 709 nats overflows the PPL): those become null, never a crash.
        func n(_ x: Double) -> Any { x.isFinite ? x : NSNull() }
        var o: [String: Any] = ["ppl": n(ppl), "nll": n(nll), "bpd": n(bpd), "tokens": tokens, "sequences": sequences,
                                "samples": samples, "exact": exact, "block_size": blockSize,
                                "interval": interval.map { [$0.min, $0.max] as Any } ?? NSNull()]
        var vars: [[String: Any]] = []
        for (c, v) in varNELBO { vars.append(["min": n(c.min), "max": n(c.max), "var": n(v)]) }
        o["var_nelbo"] = vars
        if let dtype { o["dtype"] = dtype.rawValue }
        if let sc = schedule {
            o["schedule"] = sc.name; o["schedule_params"] = sc.parameters
            o["schedule_nll"] = n(sc.nll); o["schedule_ppl"] = n(exp(sc.nll))
        }
        if let note { o["note"] = note }
        if let sums {
            o["shard"] = sums.shard.description
            o["sums"] = sums.json
        }
        let d = (try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: d, as: UTF8.self)
    }

    public var table: String {
        var s = String(format: "%@ over %d tokens (%d sequences, %d sample%@, L'=%d)\n", exact ? "exact NLL" : "NELBO", tokens, sequences,
                       samples, samples == 1 ? "" : "s", blockSize)
        s += String(format: "  nll  %.6f nats/token\n  ppl  %.4f\n  bpd  %.6f\n", nll, ppl, bpd)
        if dtype == .bf16 { s += "  (weights rounded to bf16)\n" }
        if let sc = schedule {
            s += String(format: "  (loglinear evaluation; under the training schedule %@: nll %.6f, ppl %.4f)\n",
                        sc.name, sc.nll, exp(sc.nll))
        }
        if !varNELBO.isEmpty {
            s += "  Var. NELBO\n"
            for (c, v) in varNELBO { s += String(format: "    %-22@ %.6g\n", c.description, v) }
        }
        return s
    }
}

/// What a shard of `score ppl` adds up: Σ NLL over scored tokens (× draws) and their count, the batches, and per
/// Var. NELBO interval the sum of per-batch variances and the batches counted (NaN variances of 1-block batches
/// make a sum NaN, as they make the unsharded mean NaN). Means of merged shards are these sums' ratios.
public struct PerplexitySums: Sendable {
    public var shard: Shard
    public var nllSum: Double
    public var count: Int
    public var batches: Int
    public var variance: [(ClipInterval, Double, Int)] = []
    public var scheduleNLLSum: Double? = nil
    public var scheduleCount: Int? = nil
    /// What was scored, for the merge to refuse shards of different runs: the test stream (rows × length and a crc32c
    /// of its tokens) and the model (algorithm, sizes, its weights_crc32c when the checkpoint has one).
    public var input: String? = nil
    public var model: String? = nil

    public init(shard: Shard, nllSum: Double, count: Int, batches: Int) {
        self.shard = shard; self.nllSum = nllSum; self.count = count; self.batches = batches
    }

    var json: [String: Any] {
        var o: [String: Any] = ["nll": nllSum, "count": count, "batches": batches,
                                "var": variance.map { ["min": $0.0.min, "max": $0.0.max, "sum": $0.1.isFinite ? $0.1 : NSNull(), "batches": $0.2] as [String: Any] }]
        if let s = scheduleNLLSum, let c = scheduleCount { o["schedule_nll"] = s; o["schedule_count"] = c }
        if let input { o["input"] = input }
        if let model { o["model"] = model }
        return o
    }
}
