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

    /// Reads the metadata of a weights file written by `train` (or by the model's own save, with defaults).
    /// The training noise schedule with its parameters (`noise`, `noise_params`); checkpoints written before
    /// `noise_params` existed get the schedule's default parameters.
    public var noiseSchedule: NoiseSchedule {
        NoiseSchedule.named(schedule, parameters: metadata["noise_params"] ?? "") ?? NoiseSchedule.named(schedule) ?? .loglinear
    }

    public static func read(_ file: SafetensorsFile) throws -> CheckpointInfo {
        let m = file.metadata
        guard let cj = m["model_config"], let config = try? JSONDecoder().decode(ModelConfig.self, from: Data(cj.utf8)) else {
            throw ToolError("\(file.path): no model_config in the checkpoint metadata; was it written by train?")
        }
        let algoName = m["algo"] ?? (config.causal ? "ar" : (config.timeConditioning ? "sedd" : "bd3"))
        guard let algo = Algorithm(rawValue: algoName) else {
            throw ToolError("\(file.path): unknown algo '\(algoName)' in the checkpoint metadata (expected ar, mdlm, bd3 or sedd)")
        }
        guard config.timeConditioning == (algo == .sedd) else {
            throw ToolError("\(file.path): algo \(algo.rawValue) with a \(config.timeConditioning ? "" : "non-")time-conditioned model; the checkpoint metadata is inconsistent")
        }
        let L = Int(m["seq_len"] ?? "") ?? config.length
        func id(_ k: String) -> Int32 { Int32(m[k] ?? "") ?? -1 }
        let special = SpecialTokens(bos: id("bos_id"), eos: id("eos_id"),
                                    mask: m["mask_id"].flatMap { Int32($0) } ?? Int32(config.vocabSize - 1), pad: id("pad_id"))
        let lo = Double(m["sampling_eps_min"] ?? "") ?? 1e-3
        let hi = Double(m["sampling_eps_max"] ?? "") ?? 1
        var info = CheckpointInfo(config: config, algorithm: algo,
                              blockSize: Int(m["block_size"] ?? "") ?? (algo == .ar ? 1 : L), length: L,
                              vocabSize: Int(m["vocab_size"] ?? "") ?? config.vocabSize, special: special,
                              fingerprint: UInt64(m["tokenizer_fingerprint"] ?? "", radix: 16) ?? 0,
                              interval: ClipInterval(lo, hi), schedule: m["noise"] ?? "loglinear",
                              step: Int(m["step"] ?? "") ?? 0, metadata: m)
        if let spec = m["block_mix"] {
            do { info.blockMix = try BlockMix.parse(spec, length: L) } catch {
                throw ToolError("\(file.path): unreadable block_mix '\(spec)' in the checkpoint metadata (\(error))")
            }
        }
        if let cj = m["clip_by_block"], let d = try? JSONSerialization.jsonObject(with: Data(cj.utf8)) as? [String: [Double]] {
            for (k, v) in d { if let b = Int(k), v.count == 2 { info.intervals[b] = ClipInterval(v[0], v[1]) } }
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
    }
}
