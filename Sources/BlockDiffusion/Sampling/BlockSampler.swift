// Block-by-block sampling over "canvases": sequences whose MASK positions are to be filled (spec §4).
// Used by draft (prompt/BOS prefix + masks), refine (partially masked drafts) and MDLM (one block = L).
//
//   for each block of L' positions, left to right (one block when L' ≥ length: global, bidirectional):
//     while the block has masks: forward(block | cache) → p_x0 = SUBS softmax (float64) → nucleus → update
//       first-hitting: one uniformly chosen masked position per forward gets a Gumbel-max draw from p_x0
//       ddpm (T steps per block, t_i = 1 − i/T, s = t − 1/T): every masked position draws from
//            q = p_x0(1 − s/t), q[m] = s/t (as the mixture: stays masked w.p. s/t, else Gumbel-max from p_x0);
//            p_x0 is reused without a forward (and without an NFE) while
//            nothing in the block changed. The last step has s = 0 (t = 1/T), so every mask is filled and
//            the reference's linspace(1,0,T) t=0 step (mask_prob = −inf → NaN, spec §10.3) never happens.
//     store_kv forward of the finished block (not an NFE); stop rules (draft) after each block.
//   AR (causal checkpoint): prefix fed causally into the cache, then one token per forward.
//
// Records per filled position: confidence = post-nucleus p_x0 of the chosen token at its write step, as Float
// (the "snapshot confidence" of Diffusion-in-Diffusion); unmaskStep = the canvas's NFE count after that forward
// (1-based global forward index; 0 = given token). First-hitting draws the Gumbel-max only at the picked position:
// the reference samples every position and keeps one, which has the same distribution.
//
// Public API:
//   SamplerKind (.firstHitting, .ddpm), SamplerSettings, Canvas
//   BlockSampler(model:settings:maskId:maxBatch:maxLength:kvCache:weights:)   run(_:stop:) fills every MASK of equal-length
//       canvases; kvCache = false uses WindowDiT (no cache, the window through .blockCausal; see WindowForward.swift)
//   BlockSampler.engineShape(config:blockSize:maxLength:)
import Foundation

public enum SamplerKind: String, CaseIterable, Sendable {
    case firstHitting = "first-hitting"
    case ddpm
}

public struct SamplerSettings: Sendable {
    public var kind: SamplerKind
    public var steps: Int          // DDPM steps per block
    public var nucleus: Double     // top-p; 1 = off
    public var blockSize: Int      // L'; ≥ the length = one global block
    public init(kind: SamplerKind = .firstHitting, steps: Int = 1000, nucleus: Double = 1, blockSize: Int) {
        self.kind = kind; self.steps = steps; self.nucleus = nucleus; self.blockSize = blockSize
    }
    public var summary: String {
        "B=\(blockSize) sampler=\(kind.rawValue)" + (kind == .ddpm ? " steps=\(steps)" : "") + " nucleus=\(nucleus)"
    }
}

/// One sequence being filled. `active = false` stops sampling it (a stop rule fired); it still rides along in
/// the batched forwards.
public struct Canvas {
    public var tokens: [Int32]
    public var confidence: [Float]
    public var unmaskStep: [UInt32]
    public var nfe: UInt64
    public var promptLength: Int
    public var rng: SplitMix64
    public var active = true
    public var finalLength: Int? = nil
    public var degenerate = false
    /// Stop rules may flag this canvas but must not deactivate it (the last regeneration attempt).
    public var mustFinish = false
    public init(tokens: [Int32], confidence: [Float], unmaskStep: [UInt32], nfe: UInt64, promptLength: Int, seed: UInt64) {
        self.tokens = tokens; self.confidence = confidence; self.unmaskStep = unmaskStep
        self.nfe = nfe; self.promptLength = promptLength; rng = SplitMix64(seed: seed)
    }
}

/// Seed of one canvas from the run seed and the canvas's identity (independent of batching).
public func canvasSeed(_ seed: UInt64, _ id: UInt64, _ attempt: UInt64 = 0) -> UInt64 {
    var r = SplitMix64(seed: seed ^ 0x5DEE_CE66_D1CE_B00C)
    _ = r.next()
    var s = SplitMix64(seed: r.next() &+ id &* 0x9E37_79B9_7F4A_7C15 &+ attempt &* 0xC2B2_AE3D_27D4_EB4F)
    return s.next()
}

public final class BlockSampler {
    public let engine: SamplingEngine
    public let settings: SamplerSettings
    public let maskId: Int32
    public let causal: Bool
    let arChunk = 64

    /// maxLength: the longest canvas (sets the window when one block covers it). kvCache = false: every forward
    /// runs the whole window through `.blockCausal` (WindowDiT, the reference's kv_cache=False path).
    /// weights: what the cached engine reads (nil = the model's fp32 parameters in place); the no-cache path runs
    /// the model itself and takes fp32 only.
    public init(model: DiT, settings: SamplerSettings, maskId: Int32, maxBatch: Int, maxLength: Int, kvCache: Bool = true,
                weights: InferenceWeights? = nil) throws {
        self.settings = settings; self.maskId = maskId; causal = model.config.causal
        let block = causal ? 1 : min(settings.blockSize, maxLength)
        let capacity = max(model.config.length, block)
        let chunk = causal ? min(arChunk, capacity) : block
        if kvCache {
            engine = try CachedDiT(weights: weights ?? InferenceWeights(model: model, dtype: .fp32), maxBatch: maxBatch, maxChunk: chunk, capacity: capacity)
        } else {
            guard weights == nil || weights!.dtype == .fp32 else {
                throw SamplingUsageError("--no-kv-cache runs the fp32 model (the reference's comparison path); use --dtype fp32 with it")
            }
            engine = try WindowDiT(model: model, maxBatch: maxBatch, maxChunk: chunk, capacity: capacity)
        }
    }

    /// Window and chunk of the engine a sampler with these settings builds (for sizing the batch).
    public static func engineShape(config: ModelConfig, blockSize: Int, maxLength: Int) -> (window: Int, chunk: Int) {
        let block = config.causal ? 1 : min(blockSize, maxLength)
        let capacity = max(config.length, block)
        return (capacity, config.causal ? min(64, capacity) : block)
    }

    /// Fills every MASK of the canvases (all of equal length). `stop(&canvas, end)` runs after each finished
    /// block (AR: after each token) for active canvases; it may set `active = false`.
    public func run(_ cs: inout [Canvas], stop: ((inout Canvas, Int) -> Void)? = nil) {
        guard !cs.isEmpty else { return }
        let len = cs[0].tokens.count
        precondition(cs.allSatisfy { $0.tokens.count == len }, "canvases of a batch must have equal length")
        engine.reset()
        if causal { runAR(&cs, stop: stop); return }
        let bs = min(settings.blockSize, len)
        precondition(len % bs == 0, "block size \(bs) must divide the length \(len)")
        for start in stride(from: 0, to: len, by: bs) {
            let range = start..<(start + bs)
            switch settings.kind {
            case .firstHitting: firstHittingBlock(&cs, range)
            case .ddpm: ddpmBlock(&cs, range)
            }
            if let stop { for b in cs.indices where cs[b].active { stop(&cs[b], range.upperBound) } }
            if !cs.contains(where: { $0.active }) { break }
            if range.upperBound < len { engine.forward(tokens: gather(cs, range), batch: cs.count, store: true, logits: false) }
        }
    }

    func gather(_ cs: [Canvas], _ r: Range<Int>) -> [Int32] {
        var t: [Int32] = []; t.reserveCapacity(cs.count * r.count)
        for c in cs { t.append(contentsOf: c.tokens[r]) }
        return t
    }

    func hasMask(_ c: Canvas, _ r: Range<Int>) -> Bool { r.contains { c.tokens[$0] == maskId } }

    func maskedPositions(_ c: Canvas, _ r: Range<Int>) -> [Int] { r.filter { c.tokens[$0] == maskId } }

    func probabilities(_ logits: UnsafeBufferPointer<Float>, row: Int) -> [Double] {
        let V = engine.config.vocabSize
        var p = subsProbabilities(logits: logits.baseAddress! + row * V, count: V, maskId: Int(maskId))
        nucleusFilter(&p, topP: settings.nucleus)
        return p
    }

    func write(_ c: inout Canvas, _ pos: Int, _ tok: Int, _ p: [Double]) {
        c.tokens[pos] = Int32(tok)
        c.confidence[pos] = Float(p[tok])
        c.unmaskStep[pos] = UInt32(truncatingIfNeeded: c.nfe)
    }

    func firstHittingBlock(_ cs: inout [Canvas], _ r: Range<Int>) {
        while true {
            let todo = cs.indices.filter { b in cs[b].active && hasMask(cs[b], r) }
            if todo.isEmpty { return }
            // The position does not depend on the logits: pick first, then compute only those rows.
            var picks: [Int] = []
            for b in todo {
                let masked = maskedPositions(cs[b], r)
                let draw = min(masked.count - 1, Int(cs[b].rng.nextDouble() * Double(masked.count)))
                picks.append(masked[draw])
            }
            let rows = zip(todo, picks).map { b, pos in b * r.count + pos - r.lowerBound }
            let logits = engine.forward(tokens: gather(cs, r), batch: cs.count, store: false, rows: rows)
            for (k, b) in todo.enumerated() {
                cs[b].nfe += 1
                let pos = picks[k]
                let p = probabilities(logits, row: k)
                let tok = gumbelSample(p: p, rng: &cs[b].rng)
                write(&cs[b], pos, tok, p)
            }
        }
    }

    func ddpmBlock(_ cs: inout [Canvas], _ r: Range<Int>) {
        let T = settings.steps
        var cache = [[Int: [Double]]?](repeating: nil, count: cs.count)
        for i in 0..<T {
            let todo = cs.indices.filter { b in cs[b].active && hasMask(cs[b], r) }
            if todo.isEmpty { return }
            let t = 1 - Double(i) / Double(T)
            let s = i == T - 1 ? 0 : t - 1 / Double(T)
            let need = todo.filter { cache[$0] == nil }
            if !need.isEmpty {
                let wanted = need.map { b in maskedPositions(cs[b], r) }
                let rows = zip(need, wanted).flatMap { b, ps in ps.map { b * r.count + $0 - r.lowerBound } }
                let logits = engine.forward(tokens: gather(cs, r), batch: cs.count, store: false, rows: rows)
                var k = 0
                for (b, ps) in zip(need, wanted) {
                    cs[b].nfe += 1
                    var m: [Int: [Double]] = [:]
                    for pos in ps { m[pos] = probabilities(logits, row: k); k += 1 }
                    cache[b] = m
                }
            }
            for b in todo {
                var changed = false
                for pos in maskedPositions(cs[b], r) {
                    // Categorical on q = p(1 − s/t) ⊕ [mask: s/t] drawn as its mixture: stay masked with
                    // probability s/t, else a Gumbel-max draw from p (same distribution, no V-sized q per step).
                    let u = cs[b].rng.nextDouble()
                    if u < s / t { continue }
                    let p = cache[b]![pos]!
                    let tok = gumbelSample(p: p, rng: &cs[b].rng)
                    write(&cs[b], pos, tok, p); changed = true
                }
                if changed { cache[b] = nil }
            }
        }
        precondition(!cs.contains { c in c.active && hasMask(c, r) }, "DDPM left masks after its last step")
    }

    /// AR: the prefix (≥ 1 token) goes through the cache causally; each further forward yields one token.
    func runAR(_ cs: inout [Canvas], stop: ((inout Canvas, Int) -> Void)?) {
        let len = cs[0].tokens.count, B = cs.count
        let prefix = cs[0].promptLength
        precondition(prefix >= 1 && cs.allSatisfy { $0.promptLength == prefix }, "AR sampling needs a common non-empty prefix")
        if prefix >= len { return }
        let V = engine.config.vocabSize
        var logits = UnsafeBufferPointer<Float>(start: nil, count: 0)   // (B, V): next-token logits per canvas
        var s = 0
        while s < prefix {
            let e = min(prefix, s + engine.maxChunk)
            let n = e - s
            logits = engine.forward(tokens: gather(cs, s..<e), batch: B, store: true, causal: true,
                                    logits: e == prefix, rows: (0..<B).map { $0 * n + n - 1 })
            s = e
        }
        for pos in prefix..<len {
            for b in cs.indices where cs[b].active {
                cs[b].nfe += 1
                var p = subsProbabilities(logits: logits.baseAddress! + b * V, count: V, maskId: Int(maskId))
                nucleusFilter(&p, topP: settings.nucleus)
                let tok = gumbelSample(p: p, rng: &cs[b].rng)
                write(&cs[b], pos, tok, p)
                stop?(&cs[b], pos + 1)
            }
            if !cs.contains(where: { $0.active }) || pos + 1 == len { break }
            logits = engine.forward(tokens: gather(cs, pos..<(pos + 1)), batch: B, store: true, causal: true)
        }
    }
}
