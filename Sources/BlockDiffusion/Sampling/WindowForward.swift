// Sampling forwards without a KV cache: the reference's `sampling.kv_cache=False` path (spec §1.4, §4).
//
//   history[b] = the tokens committed so far (finished blocks; AR: fed tokens)
//   forward(chunk of n tokens per sequence):
//     window = the last h committed tokens + chunk,  h = the largest multiple of n ≤ capacity − n
//              (block-aligned, at most the model length, as the reference's fwd_idx = [max(end − L, 0), end))
//     logits = DiT.forward(window, .blockCausal(blockSize: n)), the last n rows (AR: .causal, rows h ..< h+n)
//     RoPE at window positions 0 ..< h+n (re-based every call, like the cached path).
//   store = true appends the chunk to the history; a store-only call (logits = false) runs no forward at all
//   (the reference's no-cache path has no store_kv forward).
//
// Same samples as CachedDiT within the model length: .blockCausal lets the noisy block see every clean block and
// itself, and each clean block sees the clean blocks ≤ itself — exactly what the cache holds (spec §1.4). The
// numbers differ only by float summation order (a whole-window sgemm vs per-block ones).
// Past the model length they differ on purpose: here every forward recomputes the window from its tokens, so
// the oldest kept block no longer sees the dropped context; the cached path keeps k/v that were computed with
// the dropped context (the reference's shifted cache). Both are what the reference does with kv_cache off / on.
//
// Cost per forward ∝ window length (up to the model length), vs ∝ n + attention over the cache for CachedDiT:
// that is what bench/sampling measures.
//
// Public API:
//   SamplingEngine (protocol: config, maxChunk, reset(), forward(tokens:batch:store:causal:logits:rows:))
//   CachedDiT and WindowDiT conform.
//   WindowDiT(model:maxBatch:maxChunk:capacity:)   an inference-only DiT sized for the window, reading model's weights in place
import Foundation

/// What the block sampler needs from a forward engine (with or without a KV cache).
public protocol SamplingEngine: AnyObject {
    var config: ModelConfig { get }
    var maxChunk: Int { get }
    /// Empties the window (a new batch of sequences).
    func reset()
    /// tokens (B, n) row-major. Returns logits (B, n, V), or (rows.count, V) for the flat rows b·n+i given, or an
    /// empty buffer when `logits` is false. A view valid until the next call.
    @discardableResult
    func forward(tokens: [Int32], batch: Int, store: Bool, causal: Bool, logits: Bool, rows: [Int]?) -> UnsafeBufferPointer<Float>
}

extension SamplingEngine {
    @discardableResult
    public func forward(tokens: [Int32], batch: Int, store: Bool, causal: Bool = false, logits: Bool = true,
                        rows: [Int]? = nil) -> UnsafeBufferPointer<Float> {
        forward(tokens: tokens, batch: batch, store: store, causal: causal, logits: logits, rows: rows)
    }
}

extension CachedDiT: SamplingEngine {}

public final class WindowDiT: SamplingEngine {
    public let config: ModelConfig
    public let maxBatch: Int
    public let maxChunk: Int
    public let capacity: Int
    let model: DiT
    var history: [[Int32]] = []
    let out: UnsafeMutableBufferPointer<Float>     // selected rows (maxBatch·maxChunk, V)
    /// Forwards run and window tokens fed since the last reset (for tests and benchmarks).
    public private(set) var forwards = 0
    public private(set) var windowTokens = 0

    public init(model source: DiT, maxBatch: Int, maxChunk: Int, capacity: Int) throws {
        let cfg = source.config
        guard !cfg.timeConditioning else {
            throw ToolError("this checkpoint is time-conditioned (SEDD); the samplers here support BD3-LM, MDLM and AR checkpoints")
        }
        precondition(maxBatch >= 1 && maxChunk >= 1 && capacity >= maxChunk, "bad window sizes")
        config = cfg; self.maxBatch = maxBatch; self.maxChunk = maxChunk; self.capacity = capacity
        // Reads the source's weights in place (no copy, no gradients), like CachedDiT.
        model = DiT(sharingWeightsOf: source, maxBatch: maxBatch, maxTokens: capacity)
        out = .allocate(capacity: maxBatch * maxChunk * cfg.vocabSize)
        out.initialize(repeating: 0)
    }

    deinit { out.deallocate() }

    public func reset() { history = []; forwards = 0; windowTokens = 0 }

    @discardableResult
    public func forward(tokens: [Int32], batch B: Int, store: Bool, causal: Bool, logits wantLogits: Bool,
                        rows: [Int]?) -> UnsafeBufferPointer<Float> {
        precondition(B >= 1 && B <= maxBatch && tokens.count % B == 0)
        let n = tokens.count / B
        precondition(n >= 1 && n <= maxChunk, "chunk of \(n) tokens exceeds \(maxChunk)")
        if history.count != B { precondition(history.allSatisfy(\.isEmpty), "batch size changed without reset()"); history = Array(repeating: [], count: B) }
        let V = config.vocabSize
        var result = UnsafeBufferPointer<Float>(start: out.baseAddress!, count: 0)
        if wantLogits {
            let h = min(history[0].count, (capacity - n) / n * n)
            let T = h + n
            var window: [Int32] = []; window.reserveCapacity(B * T)
            for b in 0..<B {
                window.append(contentsOf: history[b][(history[b].count - h)...])
                window.append(contentsOf: tokens[(b * n)..<((b + 1) * n)])
            }
            let layout: AttentionLayout = causal ? .causal : .blockCausal(blockSize: n)
            let logits = window.withUnsafeBufferPointer {
                model.forward(tokens: $0, batch: B, layout: layout, sigma: nil, training: false, dropoutSeed: 0)
            }
            forwards += 1; windowTokens += B * T
            let lout = model.outputLength(layout: layout, tokensPerSequence: T)
            let first = lout - n                                   // chunk rows inside the output rows
            let wanted = rows ?? Array(0..<(B * n))
            precondition(wanted.allSatisfy { $0 >= 0 && $0 < B * n }, "output rows outside the chunk")
            for (k, r) in wanted.enumerated() {
                let b = r / n, i = r % n
                (out.baseAddress! + k * V).update(from: logits.baseAddress! + (b * lout + first + i) * V, count: V)
            }
            result = UnsafeBufferPointer(start: out.baseAddress!, count: wanted.count * V)
        }
        if store {
            for b in 0..<B {
                history[b].append(contentsOf: tokens[(b * n)..<((b + 1) * n)])
                // Only the last `capacity` tokens can ever be in a window.
                if history[b].count > 2 * capacity { history[b].removeFirst(history[b].count - capacity) }
            }
        }
        return result
    }
}
