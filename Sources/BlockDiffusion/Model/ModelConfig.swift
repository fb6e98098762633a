// Model configuration, attention layouts, parameter table and the model's error type.
//
// Public API (see DiT.swift for the model itself):
//   ModelConfig (Codable; `ModelConfig.named("tiny"|"small"|"cpu", vocabSize:)`)
//   AttentionLayout (.causal, .full, .blockDiffusion(blockSize:), .blockCausal(blockSize:))
//   ParameterTensor (reference state_dict name, shape, offset into the flat buffer)
import Foundation

/// Hyper-parameters of the reference DiT (`configs/model/*.yaml` of bd3lms).
public struct ModelConfig: Codable, Equatable, Sendable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var nBlocks: Int
    public var nHeads: Int
    public var condDim: Int
    /// Sequence length L of the training rows (the BD3 input is 2L).
    public var length: Int
    /// Residual dropout probability (train only; both residual branches).
    public var dropout: Float
    /// AR: DDiTBlockCausal blocks, no adaLN, no sigma_map.
    public var causal: Bool
    /// SEDD: per-sequence sigma drives adaLN. Otherwise sigma ≡ 0 and the adaLN outputs are learned constants.
    public var timeConditioning: Bool

    public init(vocabSize: Int, hiddenSize: Int, nBlocks: Int, nHeads: Int, condDim: Int, length: Int,
                dropout: Float = 0.1, causal: Bool = false, timeConditioning: Bool = false) {
        self.vocabSize = vocabSize; self.hiddenSize = hiddenSize; self.nBlocks = nBlocks
        self.nHeads = nHeads; self.condDim = condDim; self.length = length
        self.dropout = dropout; self.causal = causal; self.timeConditioning = timeConditioning
    }

    /// Named sizes: `tiny` and `small` as in the reference yaml files, `cpu` a size that trains on 2 cores.
    public static func named(_ name: String, vocabSize: Int) -> ModelConfig? {
        switch name {
        case "tiny": return ModelConfig(vocabSize: vocabSize, hiddenSize: 256, nBlocks: 8, nHeads: 8, condDim: 64, length: 1024)
        case "small": return ModelConfig(vocabSize: vocabSize, hiddenSize: 768, nBlocks: 12, nHeads: 12, condDim: 128, length: 1024)
        case "cpu": return ModelConfig(vocabSize: vocabSize, hiddenSize: 256, nBlocks: 4, nHeads: 8, condDim: 64, length: 256)
        default: return nil
        }
    }
    public static let names = ["tiny", "small", "cpu"]

    enum CodingKeys: String, CodingKey {
        case vocabSize, hiddenSize, nBlocks, nHeads, condDim, length, dropout, causal, timeConditioning
    }
    /// Sizes are required; dropout (0.1), causal and timeConditioning (false) may be omitted in JSON.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vocabSize = try c.decode(Int.self, forKey: .vocabSize)
        hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
        nBlocks = try c.decode(Int.self, forKey: .nBlocks)
        nHeads = try c.decode(Int.self, forKey: .nHeads)
        condDim = try c.decode(Int.self, forKey: .condDim)
        length = try c.decode(Int.self, forKey: .length)
        dropout = try c.decodeIfPresent(Float.self, forKey: .dropout) ?? 0.1
        causal = try c.decodeIfPresent(Bool.self, forKey: .causal) ?? false
        timeConditioning = try c.decodeIfPresent(Bool.self, forKey: .timeConditioning) ?? false
    }

    public var headDim: Int { hiddenSize / nHeads }
    /// adaLN modulation and sigma_map exist for every diffusion model, never for AR (`adaLN = not causal`).
    public var hasAdaLN: Bool { !causal }

    /// Throws a readable error for sizes the model cannot run.
    public func validate() throws {
        guard vocabSize > 1, hiddenSize > 0, nBlocks > 0, nHeads > 0, condDim > 0, length > 0 else {
            throw ModelError("model config has a non-positive size: \(self)")
        }
        guard hiddenSize % nHeads == 0, headDim % 2 == 0 else {
            throw ModelError("hidden size \(hiddenSize) must split into \(nHeads) heads of even size (rotary)")
        }
        guard dropout >= 0, dropout < 1 else { throw ModelError("dropout \(dropout) must be in [0, 1)") }
    }
}

/// Which keys each query may attend to. Every layout keeps rotary positions as the reference does.
public enum AttentionLayout: Equatable, Sendable {
    /// AR: input (B, L), query i sees keys 0...i. Logits for all L positions.
    case causal
    /// MDLM / SEDD: input (B, L), bidirectional. Logits for all L positions.
    case full
    /// BD3 training/eval: input (B, 2L) = [x_t, x_0] with mask M_BD | M_OBC | M_BC; both halves use
    /// positions 0..L-1. Logits only for the x_t half: (B, L, V).
    case blockDiffusion(blockSize: Int)
    /// Sampling without cache: window of clean blocks + the current noisy block (length T, positions
    /// 0..T-1), pure block-causal mask. Logits only for the last `blockSize` positions: (B, blockSize, V).
    case blockCausal(blockSize: Int)
}

/// One named tensor inside the flat parameter (and gradient) buffer.
public struct ParameterTensor: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
}

/// Runtime failure inside the model code (bad checkpoint, bad shapes): a ToolError (exit 1) by its
/// older name. The message says what to do.
public typealias ModelError = ToolError
