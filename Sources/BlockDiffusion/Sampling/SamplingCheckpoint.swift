// A checkpoint for the sampling tools, opened by `Checkpoint.open` (Checkpoint/OpenCheckpoint.swift: our files,
// Hugging Face directories, reference state_dicts). Missing special ids are given as overrides (--set bos_id=…,
// or draft's --mask-id/--bos-id/--eos-id); the mask defaults to V−1 (the reference's).
//
// Public API:
//   SamplingCheckpoint.open(path:overrides:dtype:) throws   (every refusal names the file, the key and the fix;
//     dtype bf16: the inference weights are made while loading, matrix by matrix, and the fp32 parameters released:
//     `weights`, which prepareInference returns; the model itself no longer runs)
//   model, algorithm, blockSize, special, fingerprint, vocabSize, requireCompatible(_:source:), weights
import Foundation

public struct SamplingCheckpoint {
    public let path: String
    public let model: DiT
    public let algorithm: String
    public let blockSize: Int
    public let special: SpecialTokens
    public let fingerprint: UInt64
    /// σ(t) of a SEDD checkpoint (metadata `sedd_noise`).
    public var seddNoise: SEDDNoise = .bd3lms
    /// Where the facts came from (a reference layout has no tokenizer fingerprint).
    public var layout: Checkpoint.Layout = .ours
    /// The bf16 inference weights made at load (open(dtype: .bf16)), nil otherwise.
    public var weights: InferenceWeights?
    public var vocabSize: Int { model.config.vocabSize }
    public var config: ModelConfig { model.config }

    /// Opens `path` through the one front door (`Checkpoint.open`: every layout, validated before allocation) and
    /// loads a forward-only model: no gradient buffer (it would double the weight memory). The samplers read these
    /// weights in place (CachedDiT) or through DiT(sharingWeightsOf:) sized for their window.
    /// `dtype` bf16 (for the cached engine) converts each matrix as soon as it is loaded and releases its fp32 pages,
    /// so the peak memory never holds the fp32 model and the bf16 weights together; SEDD (time-conditioned) loads
    /// as fp32 and prepareInference refuses bf16 for it as before.
    public static func open(path: String, overrides: CheckpointOverrides = .init(), dtype: WeightDType = .fp32) throws -> SamplingCheckpoint {
        let ck = try Checkpoint.open(path, overrides: overrides)
        let info = ck.info
        let convert = dtype == .bf16 && !info.config.timeConditioning ? BF16Matrices(config: info.config) : nil
        let model = try ck.model(maxBatch: 1, maxTokens: 1, each: convert.map { c in { c.take($0, $1) } })
        let seddNoise = SEDDNoise(rawValue: info.metadata["sedd_noise"] ?? SEDDNoise.bd3lms.rawValue) ?? .bd3lms
        var s = SamplingCheckpoint(path: path, model: model, algorithm: info.algorithm.rawValue, blockSize: info.blockSize,
                                   special: info.special, fingerprint: info.fingerprint, seddNoise: seddNoise, layout: ck.layout)
        if let convert {
            s.weights = try InferenceWeights(model: model, dtype: .bf16, matrices: convert)
            model.releaseParameters()
        }
        return s
    }

    /// The cached engine's weights at `dtype`: those made at load when they match, else read from the model.
    func inferenceWeights(dtype: WeightDType) throws -> InferenceWeights {
        if let weights, weights.dtype == dtype { return weights }
        return try InferenceWeights(model: model, dtype: dtype)
    }

    /// Unprompted sampling fixes BOS at position 0 as the reference does; a reference-layout checkpoint does not say
    /// which id that is unless its vocabulary is GPT-2's (V = 50258: BOS = 50256).
    public func requireBOS() throws {
        if layout != .ours && special.bos < 0 {
            throw ToolError("\(path): the checkpoint records no BOS id and draft fixes position 0 to it; give --bos-id N (GPT-2: 50256)")
        }
    }

    /// Refuses a stream written with another tokenizer (fingerprint, when both are known) or vocabulary.
    public func requireCompatible(_ h: StreamHeader, source: String) throws {
        if fingerprint != 0 && h.tokenizerFingerprint != 0 && h.tokenizerFingerprint != fingerprint {
            throw ToolError("\(source): tokenizer fingerprint \(String(format: "%016llx", h.tokenizerFingerprint)) differs from the checkpoint's \(String(format: "%016llx", fingerprint)); use streams made with the checkpoint's tokenizer")
        }
        if h.vocabSize != vocabSize {
            throw ToolError("\(source): vocabulary size \(h.vocabSize) differs from the checkpoint's \(vocabSize); use streams made with the checkpoint's tokenizer")
        }
        if h.special.mask >= 0 && h.special.mask != special.mask {
            throw ToolError("\(source): mask id \(h.special.mask) differs from the checkpoint's \(special.mask)")
        }
    }

    /// The header of the streams the sampling tools write.
    public func samplesHeader(tool: String, attributes: [String: String]) -> StreamHeader {
        var a = attributes
        a["tool"] = tool
        a["algo"] = algorithm
        a["checkpoint"] = (path as NSString).lastPathComponent
        return StreamHeader(kind: .samples, vocabSize: vocabSize, tokenizerFingerprint: fingerprint, special: special,
                            fields: [.confidence, .unmaskStep], attributes: a)
    }
}
