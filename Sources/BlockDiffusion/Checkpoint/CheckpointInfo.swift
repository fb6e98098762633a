// What a weights file says about itself: the model config, algorithm, block size(s), special ids,
// tokenizer fingerprint, clip interval(s) and noise schedule (metadata keys listed in Training/TrainCheckpoint.swift).
import Foundation

public struct CheckpointInfo: Sendable {
    public var config: ModelConfig
    public var algorithm: Algorithm
    public var blockSize: Int
    public var length: Int
    public var vocabSize: Int
    public var special: SpecialTokens
    public var fingerprint: UInt64
    public var interval: ClipInterval
    public var schedule: String
    public var step: Int
    public var metadata: [String: String]
    /// The mix a mixed-scale checkpoint was trained with (nil for a single block size).
    public var blockMix: BlockMix? = nil
    /// Per-block-size clip intervals of a mixed-scale checkpoint (empty otherwise).
    public var intervals: [Int: ClipInterval] = [:]

    /// The learned interval for sampling at block size `b`: the mix's own for a trained size, else the
    /// checkpoint's (draft) interval.
    public func interval(forBlockSize b: Int) -> ClipInterval { intervals[b] ?? interval }

    /// The training noise schedule with its parameters (`noise`, `noise_params`); checkpoints written before
    /// `noise_params` existed get the schedule's default parameters.
    public var noiseSchedule: NoiseSchedule {
        NoiseSchedule.named(schedule, parameters: metadata["noise_params"] ?? "") ?? NoiseSchedule.named(schedule) ?? .loglinear
    }

    /// The metadata of a file written by `train` (or by the converter), parsed strictly: a key that is present but
    /// unreadable is an error naming it, never a default. `path` names the file in messages.
    /// The σ(t) names of `SEDDNoise` (Objectives/, above this folder; a test keeps the two lists equal).
    public static let seddNoises = ["bd3lms", "loglinear"]

    public static func read(_ file: SafetensorsFile, overrides: CheckpointOverrides = .init()) throws -> CheckpointInfo {
        try read(metadata: file.metadata, path: file.path, overrides: overrides)
    }

    public static func read(metadata m: [String: String], path: String, overrides o: CheckpointOverrides = .init()) throws -> CheckpointInfo {
        func bad(_ key: String, _ why: String) -> ToolError {
            ToolError("\(path): metadata key '\(key)' \(why); the checkpoint is corrupt — re-export it (or convert it again)")
        }
        func int(_ key: String) throws -> Int? {
            guard let v = m[key] else { return nil }
            guard let n = Int(v) else { throw bad(key, "is '\(v.prefix(40))', not a whole number") }
            return n
        }
        func double(_ key: String) throws -> Double? {
            guard let v = m[key] else { return nil }
            guard let d = Double(v), d.isFinite else { throw bad(key, "is '\(v.prefix(40))', not a finite number") }
            return d
        }
        guard let cj = m["model_config"] else {
            throw ToolError("\(path): no model_config in the checkpoint metadata; not a file written by train (a reference state_dict needs a config.json beside it or --config/--set)")
        }
        let config: ModelConfig
        do { config = try JSONDecoder().decode(ModelConfig.self, from: Data(cj.utf8)) } catch {
            throw bad("model_config", "is not a model config (JSON with vocabSize, hiddenSize, nBlocks, nHeads, condDim, length)")
        }
        try CheckpointLimits.check(config, path: path, key: "model_config")
        let algo: Algorithm
        if let a = m["algo"] {
            guard let x = Algorithm(rawValue: a) else { throw bad("algo", "is '\(a.prefix(40))', not one of ar, mdlm, bd3, sedd") }
            algo = x
        } else if let x = o.algorithm {
            algo = x
        } else {
            algo = config.causal ? .ar : (config.timeConditioning ? .sedd : .bd3)
        }
        if let x = o.algorithm, x != algo, !o.forWeights {
            throw UsageError("--algo \(x.rawValue) contradicts \(path), a \(algo.rawValue) checkpoint; drop --algo")
        }
        guard config.causal == (algo == .ar) else { throw bad("algo", "(\(algo.rawValue)) does not match model_config.causal (\(config.causal))") }
        guard config.timeConditioning == (algo == .sedd) else {
            throw bad("algo", "(\(algo.rawValue)) does not match model_config.timeConditioning (\(config.timeConditioning))")
        }
        let L = try int("seq_len") ?? config.length
        guard L == config.length else { throw bad("seq_len", "(\(L)) differs from model_config.length (\(config.length))") }
        let V = try int("vocab_size") ?? config.vocabSize
        guard V == config.vocabSize else { throw bad("vocab_size", "(\(V)) differs from model_config.vocabSize (\(config.vocabSize))") }
        // The block size is never guessed: an L'=4 model read as L'=L would be scored and sampled as MDLM.
        let bs: Int
        switch algo {
        case .ar: bs = 1
        case .mdlm, .sedd: bs = try int("block_size") ?? L
        case .bd3:
            guard let b = try int("block_size") ?? o.blockSize ?? (o.forWeights ? L : nil) else {
                throw ToolError("\(path): a bd3 checkpoint without the metadata key 'block_size'; give the block size it was trained with: --block-size N")
            }
            bs = b
        }
        guard bs >= 1, bs <= L, L % bs == 0 else { throw bad("block_size", "(\(bs)) must be ≥ 1 and divide the length \(L)") }
        var special = SpecialTokens(bos: -1, eos: -1, mask: Int32(V - 1), pad: -1)
        for (key, path) in [("bos_id", \SpecialTokens.bos), ("eos_id", \SpecialTokens.eos), ("mask_id", \SpecialTokens.mask), ("pad_id", \SpecialTokens.pad)] {
            if let v = try int(key) {
                guard v >= -1, v < V else { throw bad(key, "(\(v)) is outside the vocabulary of \(V)") }
                special[keyPath: path] = Int32(v)
            }
            if let v = o.sets[key] {
                guard v < V else { throw UsageError("--set \(key)=\(v) is outside the vocabulary of \(V)") }
                special[keyPath: path] = Int32(v)
            }
        }
        // Every loss head excludes the mask column (AR too, as the reference does): it must be a real id.
        if special.mask < 0 {
            throw ToolError("\(path): metadata key 'mask_id' is -1; the loss heads need the mask column: give it with --set mask_id=N (the reference's is V−1 = \(V - 1))")
        }
        var fingerprint: UInt64 = 0
        if let f = m["tokenizer_fingerprint"] {
            guard f.count == 16, let x = UInt64(f, radix: 16) else { throw bad("tokenizer_fingerprint", "is '\(f.prefix(40))', not 16 hex digits") }
            fingerprint = x
        }
        let lo = try double("sampling_eps_min") ?? 1e-3, hi = try double("sampling_eps_max") ?? 1
        guard lo >= 0, hi >= lo, hi <= 2 else { throw bad("sampling_eps_min", "and sampling_eps_max (\(lo), \(hi)) are not an interval in [0, 1]") }
        let schedule = m["noise"] ?? "loglinear"
        guard NoiseSchedule.named(schedule) != nil else { throw bad("noise", "names no known schedule ('\(schedule.prefix(40))')") }
        if let p = m["noise_params"], NoiseSchedule.named(schedule, parameters: p) == nil {
            throw bad("noise_params", "('\(p.prefix(60))') are not parameters of the \(schedule) schedule")
        }
        if let n = m["sedd_noise"], !CheckpointInfo.seddNoises.contains(n) { throw bad("sedd_noise", "is '\(n.prefix(40))', not bd3lms or loglinear") }
        if let t = m["training"], (try? JSONSerialization.jsonObject(with: Data(t.utf8))) as? [String: String] == nil {
            throw bad("training", "is not a JSON object of strings")
        }
        let step = try int("step") ?? 0
        guard step >= 0 else { throw bad("step", "(\(step)) is negative") }
        var info = CheckpointInfo(config: config, algorithm: algo, blockSize: bs, length: L, vocabSize: V, special: special,
                                  fingerprint: fingerprint, interval: ClipInterval(lo, hi), schedule: schedule, step: step, metadata: m)
        if let spec = m["block_mix"] {
            do { info.blockMix = try BlockMix.parse(spec, length: L) } catch { throw bad("block_mix", "('\(spec.prefix(60))') is unreadable (\(error))") }
        }
        if let cj = m["clip_by_block"] {
            guard let d = (try? JSONSerialization.jsonObject(with: Data(cj.utf8))) as? [String: [Double]] else {
                throw bad("clip_by_block", "is not a JSON object of [min, max] pairs")
            }
            for (k, v) in d {
                guard let b = Int(k), b >= 1, L % b == 0, v.count == 2, v[0] >= 0, v[1] >= v[0], v[1] <= 2 else {
                    throw bad("clip_by_block", "has an invalid entry '\(k.prefix(20))'")
                }
                info.intervals[b] = ClipInterval(v[0], v[1])
            }
        }
        return info
    }

    /// Refuses data whose tokenizer differs from the one the checkpoint was trained with.
    public func requireCompatible(_ h: StreamHeader, path: String) throws {
        if fingerprint != 0 && h.tokenizerFingerprint != fingerprint {
            throw ToolError("\(path): tokenizer fingerprint \(hex(h.tokenizerFingerprint)) differs from the checkpoint's \(hex(fingerprint)); tokenize the data with the checkpoint's tokenizer")
        }
        if h.vocabSize != vocabSize {
            throw ToolError("\(path): vocabulary size \(h.vocabSize) differs from the checkpoint's \(vocabSize); tokenize the data with the checkpoint's tokenizer")
        }
        if h.special.mask >= 0 && h.special.mask != special.mask {
            throw ToolError("\(path): mask id \(h.special.mask) differs from the checkpoint's \(special.mask); tokenize with the checkpoint's tokenizer or give --set mask_id=\(h.special.mask)")
        }
    }
}
