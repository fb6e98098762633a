// The weights an inference forward reads, fp32 or bf16, taken from a loaded model (whatever file format and dtype
// it was loaded from: F32, F16 and BF16 checkpoints all arrive as the model's fp32 parameters).
//
//   fp32: views into the model's parameter buffer (no copy; the model is kept alive).
//   bf16: every matrix (embedding, attention, MLP, output layer) rounded to bf16 (nearest even) into owned
//         storage, the product matrices in CKernels' 3-row panels (the embedding, gathered by rows, row-major);
//         LayerNorm weights, biases and the adaLN outputs stay fp32 (a few KB). The model is NOT kept:
//         drop it after the conversion and only the bf16 copy (half the bytes) stays in memory.
//   Non-time-conditioned models have σ ≡ 0, so every adaLN output is a constant computed here once.
//   BF16Matrices: the same rounding done while the checkpoint loads, matrix by matrix, each fp32 matrix's pages
//         returned to the OS right after (DiT.releasePages): the whole fp32 model is never resident next to the
//         bf16 weights (peak ≈ bf16 weights + the largest tensor twice, instead of fp32 model + bf16 weights).
//         Same conversion of the same values: bit-identical weights (EngineTests).
//
// Public API:
//   InferenceWeights(model:dtype:matrices:) throws   (time-conditioned SEDD models are refused: their adaLN depends on σ;
//                                        matrices: the bf16 ones made at load, used instead of converting)
//   BF16Matrices(config:), take(model, tensor)   the loader's per-tensor hook
//   config, dtype, bytes (weight bytes held)
//   InferenceWeights.roundMatricesToBF16(model)   the same matrices rounded in the model itself (score ppl --dtype bf16)
import Foundation
import CKernels

public final class InferenceWeights {
    public let config: ModelConfig
    public let dtype: WeightDType
    let embed: LinearWeight                 // (V, D), rows gathered
    let blocks: [BlockWeights]
    let normF: UnsafePointer<Float>
    let lin: LinearWeight                   // (V, D)
    let linBias: UnsafePointer<Float>
    /// adaLN outputs at σ = 0: (nBlocks, 6D) and (2D); nil for AR (no adaLN).
    let mods: UnsafeMutableBufferPointer<Float>?
    let modF: UnsafeMutableBufferPointer<Float>?
    /// fp32 copies of the vectors (norms, biases) when the matrices are bf16.
    let vectors: UnsafeMutableBufferPointer<Float>?
    /// The model read in place (fp32 only).
    let source: DiT?

    /// Bytes of weights this object reads (matrices at their dtype, vectors fp32).
    public var bytes: Int {
        blocks.reduce(embed.bytes + lin.bytes) { $0 + $1.qkv.bytes + $1.attnOut.bytes + $1.fc.bytes + $1.proj.bytes }
            + 4 * (config.nBlocks * 8 * config.hiddenSize + config.vocabSize + config.hiddenSize)
    }

    public init(model: DiT, dtype: WeightDType, matrices: BF16Matrices? = nil) throws {
        let cfg = model.config
        precondition(matrices == nil || (dtype == .bf16 && matrices!.complete), "bf16 matrices from an incomplete load")
        guard !cfg.timeConditioning else {
            throw ToolError("this checkpoint is time-conditioned (SEDD); the samplers here support BD3-LM, MDLM and AR checkpoints")
        }
        guard !model.parametersReleased else {
            throw ToolError("this checkpoint was loaded for bf16 inference (its fp32 parameters were released); open it again for --dtype \(dtype.rawValue)")
        }
        config = cfg; self.dtype = dtype
        let D = cfg.hiddenSize, V = cfg.vocabSize, C = cfg.condDim
        func t(_ name: String) -> UnsafePointer<Float> {
            guard let t = model.tensor(named: "backbone." + name) else { preconditionFailure("model has no tensor \(name)") }
            return UnsafePointer(t.baseAddress!)
        }
        // Vectors: in place for fp32, copied for bf16 (so the model can be released).
        let vectorNames = (0..<cfg.nBlocks).flatMap { i in
            ["blocks.\(i).norm1.weight", "blocks.\(i).norm2.weight", "blocks.\(i).mlp.0.bias", "blocks.\(i).mlp.2.bias"]
        } + ["output_layer.norm_final.weight", "output_layer.linear.bias"]
        var vec: [String: UnsafePointer<Float>] = [:]
        if dtype == .fp32 {
            for n in vectorNames { vec[n] = t(n) }
            vectors = nil; source = model
        } else {
            let sizes = vectorNames.map { model.tensor(named: "backbone." + $0)!.count }
            let buf = UnsafeMutableBufferPointer<Float>.allocate(capacity: sizes.reduce(0, +))
            var off = 0
            for (n, k) in zip(vectorNames, sizes) {
                (buf.baseAddress! + off).initialize(from: t(n), count: k)
                vec[n] = UnsafePointer(buf.baseAddress! + off); off += k
            }
            vectors = buf; source = nil
        }
        func m(_ name: String, _ r: Int, _ c: Int) -> LinearWeight {
            if let w = matrices?.made["backbone." + name] { precondition(w.rows == r && w.cols == c); return w }
            return dtype == .fp32 ? LinearWeight(fp32: t(name), rows: r, cols: c)
                : LinearWeight(bf16From: t(name), rows: r, cols: c, packed: name != Self.embeddingName)
        }
        embed = m(Self.embeddingName, V, D)
        blocks = (0..<cfg.nBlocks).map { i in
            BlockWeights(norm1: vec["blocks.\(i).norm1.weight"]!, qkv: m("blocks.\(i).attn_qkv.weight", 3 * D, D),
                         attnOut: m("blocks.\(i).attn_out.weight", D, D), norm2: vec["blocks.\(i).norm2.weight"]!,
                         fc: m("blocks.\(i).mlp.0.weight", 4 * D, D), fcBias: vec["blocks.\(i).mlp.0.bias"]!,
                         proj: m("blocks.\(i).mlp.2.weight", D, 4 * D), projBias: vec["blocks.\(i).mlp.2.bias"]!)
        }
        normF = vec["output_layer.norm_final.weight"]!
        lin = m("output_layer.linear.weight", V, D); linBias = vec["output_layer.linear.bias"]!
        if cfg.hasAdaLN {
            // c = silu(W2 silu(W1 temb(0) + b1) + b2); mod_l = Ada_l c + b_l (fp32 from the model's weights).
            var freq = [Float](repeating: 0, count: timestepFrequencySize)
            var t1 = [Float](repeating: 0, count: C), t3 = t1, c = t1
            freq.withUnsafeMutableBufferPointer { timestepEmbedding($0.baseAddress!, 0) }
            matmulForward(&t1, freq, t("sigma_map.mlp.0.weight"), t("sigma_map.mlp.0.bias"), 1, timestepFrequencySize, C)
            for i in 0..<C { t1[i] = t1[i] / (1 + expf(-t1[i])) }
            matmulForward(&t3, t1, t("sigma_map.mlp.2.weight"), t("sigma_map.mlp.2.bias"), 1, C, C)
            for i in 0..<C { c[i] = t3[i] / (1 + expf(-t3[i])) }
            let ms = UnsafeMutableBufferPointer<Float>.allocate(capacity: cfg.nBlocks * 6 * D)
            for i in 0..<cfg.nBlocks {
                matmulForward(ms.baseAddress! + i * 6 * D, c, t("blocks.\(i).adaLN_modulation.weight"), t("blocks.\(i).adaLN_modulation.bias"), 1, C, 6 * D)
            }
            mods = ms
            let mf = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2 * D)
            matmulForward(mf.baseAddress!, c, t("output_layer.adaLN_modulation.weight"), t("output_layer.adaLN_modulation.bias"), 1, C, 2 * D)
            modF = mf
        } else { mods = nil; modF = nil }
    }

    deinit { mods?.deallocate(); modF?.deallocate(); vectors?.deallocate() }

    /// adaLN row of block l (nil for AR).
    func mod(_ l: Int) -> UnsafePointer<Float>? { mods.map { UnsafePointer($0.baseAddress! + l * 6 * config.hiddenSize) } }

    /// out (N, D) = E[tokens] (bf16 rows widened).
    func embed(_ out: FloatPtr, _ tokens: UnsafePointer<Int32>, _ N: Int) {
        let D = config.hiddenSize
        parallelChunks(N, grain: 64) { rows in for r in rows { embed.row(Int(tokens[r]), into: out + r * D) } }
    }
}

extension InferenceWeights {
    /// The one matrix whose rows are gathered (kept row-major in bf16; the others are packed for the products).
    static let embeddingName = "vocab_embed.embedding"

    /// The matrices (names under "backbone.") the bf16 engine stores as bf16; everything else stays fp32.
    static func matrixNames(_ cfg: ModelConfig) -> [String] {
        [embeddingName, "output_layer.linear.weight"] + (0..<cfg.nBlocks).flatMap { i in
            ["attn_qkv", "attn_out"].map { "blocks.\(i).\($0).weight" } + ["mlp.0", "mlp.2"].map { "blocks.\(i).\($0).weight" }
        }
    }

    /// Rounds, in place, the model's matrices that the bf16 engine stores as bf16 (nearest even), so the model's
    /// own fp32 forward computes with exactly the values bf16 inference reads (score ppl --dtype bf16). Vectors,
    /// adaLN and σ maps stay as they are, as in the engine. Idempotent.
    public static func roundMatricesToBF16(_ model: DiT) {
        for name in matrixNames(model.config) {
            guard let t = model.tensor(named: "backbone." + name) else { continue }
            let n = t.count
            let tmp = UnsafeMutablePointer<UInt16>.allocate(capacity: max(1, n))
            defer { tmp.deallocate() }
            parallelChunks(n, grain: 1 << 16) { r in
                bd3_f32_to_bf16(tmp + r.lowerBound, t.baseAddress! + r.lowerBound, r.count)
                bd3_bf16_to_f32(t.baseAddress! + r.lowerBound, tmp + r.lowerBound, r.count)
            }
        }
    }
}

/// The bf16 matrices of a model made while it loads (Checkpoint.model(each:)): `take` is called after every tensor
/// is in place; a matrix the bf16 engine stores is rounded at once and its fp32 pages go back to the OS.
public final class BF16Matrices {
    let names: Set<String>
    var made: [String: LinearWeight] = [:]
    /// Every matrix was converted (the load ran to the end).
    var complete: Bool { made.count == names.count }

    public init(config: ModelConfig) { names = Set(InferenceWeights.matrixNames(config).map { "backbone." + $0 }) }

    public func take(_ model: DiT, _ t: ParameterTensor) {
        guard names.contains(t.name), t.shape.count == 2 else { return }
        made[t.name] = LinearWeight(bf16From: model.parameters.baseAddress! + t.offset, rows: t.shape[0], cols: t.shape[1],
                                    packed: t.name != "backbone." + InferenceWeights.embeddingName)
        model.releasePages(t.offset, t.count)
    }
}
