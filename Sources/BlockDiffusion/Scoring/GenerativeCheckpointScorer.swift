// The default `score gen` scorer: an AR checkpoint written by `train --algo ar` (a causal DiT),
// and the re-tokenisation of samples made with another tokenizer.
//
// Public API:
//   ARCheckpointScorer(path:stride:overrides:dtype:)  opened by Checkpoint.open as every tool does; context = the
//                                         checkpoint's seq_len (the AR model reads ctx − 1 tokens)
//       dtype fp32: the model's own causal forward; bf16: the inference engine (CachedDiT, one causal chunk per
//       window, nothing stored) over bf16 matrices (InferenceWeights, made matrix by matrix while loading, each
//       matrix's fp32 pages released at once, then the rest of the parameters) — the
//       storage and kernels of draft/refine --dtype bf16; accumulation stays fp32.
//   scorer.score(_ tokens:) -> (nll: Double, tokens: Int)   sliding windows, EOS targets excluded
//   Retokenizer(from:to:)                 decode with one tokenizer, encode with another; special-token
//                                         names in the text become the target's special ids (as HF does)
import Foundation

public final class ARCheckpointScorer {
    public let path: String
    public let info: CheckpointInfo
    public let model: DiT
    /// Scorer context in tokens (a window holds up to `context` tokens: ctx − 1 inputs predicting ctx − 1 targets).
    public let context: Int
    public let stride: Int
    public let dtype: WeightDType
    /// The bf16 path: the engine over bf16 weights (nil at fp32).
    let engine: CachedDiT?
    /// Targets equal to this id are not scored (the reference excludes every EOS); −1 = none.
    public var eos: Int32
    var input: [Int32]
    var targets: [Int32]
    var weights: [Float]
    var rowLoss: [Float]

    /// `stride` defaults to context / 2 (the reference: 1024 / 512).
    public init(path: String, stride: Int? = nil, overrides: CheckpointOverrides = .init(), dtype: WeightDType = .fp32) throws {
        self.path = path
        let ck = try Checkpoint.open(path, overrides: overrides)
        info = ck.info
        guard info.algorithm == .ar, info.config.causal else {
            throw ToolError("\(path) is a \(info.algorithm.rawValue) checkpoint; generative perplexity needs an autoregressive scorer: train one with `train --algo ar` or use --scorer-cmd")
        }
        context = info.length
        guard context >= 2 else { throw ToolError("\(path): sequence length \(context) is too short to score anything") }
        let s = stride ?? max(1, context / 2)
        guard s >= 1 && s < context else {
            throw UsageError("--stride \(s) must be in 1…\(context - 1) (the scorer's context is \(context))")
        }
        self.stride = s
        // bf16: each matrix is converted as soon as it is loaded and its fp32 pages released (as draft/refine
        // --dtype bf16 open a checkpoint), so the peak never holds the fp32 model and the bf16 weights together.
        let convert = dtype == .bf16 ? BF16Matrices(config: info.config) : nil
        // (At bf16 the model never runs — the engine has its own buffers — so it gets no activations for a window.)
        model = try ck.model(maxBatch: 1, maxTokens: convert == nil ? context - 1 : 1, each: convert.map { c in { c.take($0, $1) } })
        self.dtype = dtype
        if let convert {
            engine = try CachedDiT(weights: InferenceWeights(model: model, dtype: .bf16, matrices: convert), maxBatch: 1, maxChunk: context - 1, capacity: context)
            model.releaseParameters()
        } else { engine = nil }
        eos = info.special.eos
        input = []; targets = []; weights = []; rowLoss = []
    }

    public var vocabSize: Int { info.vocabSize }
    public var description: String {
        "AR checkpoint \((path as NSString).lastPathComponent) (context \(context), stride \(stride)\(dtype == .fp32 ? "" : ", \(dtype.rawValue) weights"))"
    }

    /// Sum of −log p(x_p | window tokens before p) over the scored positions, and their count.
    /// Ids must be in 0..<vocabSize (checked by the caller).
    public func score(_ tokens: [Int32]) -> (nll: Double, tokens: Int) {
        let V = info.config.vocabSize
        var nll = 0.0, count = 0
        for w in GenerativeWindows.plan(length: tokens.count, context: context, stride: stride) where w.scoreFrom < w.end {
            let T = w.end - w.start - 1            // inputs x[start..<end−1] predict x[start+1..<end]
            input = Array(tokens[w.start..<(w.end - 1)])
            targets = Array(tokens[(w.start + 1)..<w.end])
            weights = [Float](repeating: 0, count: T)
            for p in w.scoreFrom..<w.end where tokens[p] != eos { weights[p - w.start - 1] = 1; count += 1 }
            rowLoss = [Float](repeating: 0, count: T)
            let logits: UnsafeBufferPointer<Float>
            if let engine {
                engine.reset()
                logits = engine.forward(tokens: input, batch: 1, store: false, causal: true)
            } else {
                logits = UnsafeBufferPointer(input.withUnsafeBufferPointer {
                    model.forward(tokens: $0, batch: 1, layout: .causal, sigma: nil, training: false, dropoutSeed: 0)
                })
            }
            // Same head as training and `score ppl`: the mask column is excluded from the softmax.
            nll += targets.withUnsafeBufferPointer { t in
                weights.withUnsafeBufferPointer { wt in
                    rowLoss.withUnsafeMutableBufferPointer { l in
                        LossHeads.autoregressive(logits: UnsafePointer(logits.baseAddress!), N: T, V: V, targets: t.baseAddress!,
                                                 maskId: info.special.mask, weights: wt.baseAddress!, loss: l.baseAddress!, dLogits: nil)
                    }
                }
            }
        }
        return (nll, count)
    }
}

/// Samples' ids → text → the scorer's ids. The text keeps special tokens by name (a BOS decodes to
/// "<|endoftext|>", like the reference's `batch_decode`); those names are then mapped to the scorer's
/// special ids instead of being encoded as ordinary text — what an HF tokenizer does with added tokens.
public struct Retokenizer {
    public let from: BPETokenizer
    public let to: BPETokenizer
    let names: [([UInt8], Int32)]

    public init(from: BPETokenizer, to: BPETokenizer) {
        self.from = from; self.to = to
        names = Retokenizer.specialNames(to)
    }

    public func text(_ ids: [Int32]) -> [UInt8] { from.decode(ids) }

    public func callAsFunction(_ ids: [Int32]) -> [Int32] { Retokenizer.split(text(ids), with: to, specials: names) }

    /// Splits `bytes` at special-token names, encoding the pieces in between as ordinary text.
    public static func encode(_ bytes: [UInt8], with tok: BPETokenizer) -> [Int32] {
        return split(bytes, with: tok, specials: specialNames(tok))
    }

    /// The specials matched in text, longest first (a name that is a prefix of another never wins).
    /// Not [MASK]: a scorer must never be fed its mask id (its logit is excluded: NLL would be 1e6),
    /// and the literal text "[MASK]" can only come from ordinary tokens (masked samples are refused).
    static func specialNames(_ tok: BPETokenizer) -> [([UInt8], Int32)] {
        tok.specialTokens.filter { $0.id != tok.maskId && !$0.name.isEmpty }.map { (Array($0.name.utf8), $0.id) }
            .sorted { $0.0.count > $1.0.count }
    }

    static func split(_ bytes: [UInt8], with tok: BPETokenizer, specials names: [([UInt8], Int32)]) -> [Int32] {
        var out: [Int32] = []
        var pieceStart = 0, i = 0
        let n = bytes.count
        while i < n {
            var matched: ([UInt8], Int32)? = nil
            for s in names where s.0.first == bytes[i] && s.0.count <= n - i {
                if bytes[i..<(i + s.0.count)].elementsEqual(s.0) { matched = s; break }
            }
            if let m = matched {
                if pieceStart < i { out += tok.encode(Array(bytes[pieceStart..<i])) }
                out.append(m.1)
                i += m.0.count
                pieceStart = i
            } else { i += 1 }
        }
        if pieceStart < n { out += tok.encode(Array(bytes[pieceStart..<n])) }
        return out
    }
}
