// A checkpoint for the sampling tools: DiT.save weights + __metadata__ (keys as written by `train`,
// parsed by Training/TrainCheckpoint.swift's CheckpointInfo.read): model_config (JSON, required), algo (ar|mdlm|bd3),
// block_size, seq_len, mask_id, bos_id, eos_id, pad_id, tokenizer_fingerprint (16 hex digits).
// Missing special ids can be given on the command line (--mask-id/--bos-id/--eos-id); the mask defaults
// to V−1 for diffusion checkpoints (the reference's mask = V−1).
//
// Public API:
//   SamplingCheckpoint.load(path:maskId:bosId:eosId:) throws   (corrupt/short files refused with the reason)
//   model, algorithm, blockSize, special, fingerprint, vocabSize, requireCompatible(_:source:)
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
    public var vocabSize: Int { model.config.vocabSize }
    public var config: ModelConfig { model.config }

    public static func load(path: String, maskId: Int32? = nil, bosId: Int32? = nil, eosId: Int32? = nil) throws -> SamplingCheckpoint {
        let file: SafetensorsFile
        do { file = try SafetensorsFile(path: path) } catch {
            throw ToolError("cannot read checkpoint \(path): \(error)")
        }
        // The metadata is parsed once, by the trainer's reader (same keys, same defaults).
        let info = try CheckpointInfo.read(file)
        let config = info.config
        do { try config.validate() } catch { throw ToolError("\(path): invalid model_config metadata (\(error)); the checkpoint is corrupt") }
        if (info.algorithm == .ar) != config.causal {
            throw ToolError("\(path): algo '\(info.algorithm.rawValue)' does not match the model config (causal=\(config.causal))")
        }
        // Forward only: no gradient buffer (it would double the weight memory). The samplers read these weights
        // in place (CachedDiT) or through DiT(sharingWeightsOf:) sized for their window.
        let model = DiT(config: config, maxBatch: 1, maxTokens: 1, inference: true)
        do { try model.load(file: file) } catch { throw ToolError("\(path): \(error)") }
        for i in 0..<model.parameters.count where !model.parameters[i].isFinite {
            throw ToolError("\(path): parameter \(i) is not finite; the checkpoint is corrupt")
        }
        var special = info.special
        if let maskId { special.mask = maskId }
        if let bosId { special.bos = bosId }
        if let eosId { special.eos = eosId }
        for (name, v) in [("mask", special.mask), ("bos", special.bos), ("eos", special.eos)] where v >= Int32(config.vocabSize) {
            throw ToolError("\(path): \(name) id \(v) is outside the vocabulary of \(config.vocabSize)")
        }
        if !config.causal && special.mask < 0 { throw ToolError("\(path): diffusion checkpoints need a mask id (--mask-id)") }
        let seddNoise = SEDDNoise(rawValue: file.metadata["sedd_noise"] ?? SEDDNoise.bd3lms.rawValue) ?? .bd3lms
        return SamplingCheckpoint(path: path, model: model, algorithm: info.algorithm.rawValue, blockSize: max(1, info.blockSize),
                                  special: special, fingerprint: info.fingerprint, seddNoise: seddNoise)
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
