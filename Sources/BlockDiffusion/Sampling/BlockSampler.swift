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
//       other --unmask policies (Unmasking.swift): one forward over the block's masked rows, the policy picks
//            which positions get a Gumbel-max draw (k from the schedule, or adaptive: threshold / eb)
//     store_kv of the finished block (not an NFE); stop rules (draft) after each block. With the KV cache the store
//       is folded into the next block's first forward (CachedDiT.forward(storing:tokens:): one chunk of 2L' rows,
//       the same numbers bit for bit, one weight pass fewer per block); foldStore = false keeps the separate
//       store forward (the unfused twin). A block with no forward (nothing masked) is stored on its own.
//     approxCache K > 0 (refine/draft --approx-cache, off by default): the block's forwards of a canvas are full every K
//       (the refresh), in between only its masked and just-changed rows are recomputed over reused k/v
//       (stepForward, ReuseForward.swift). Approximate for K ≥ 2; K = 1 is the exact sampler.
//   AR (causal checkpoint): prefix fed causally into the cache, then one token per forward.
//
// Records per filled position: confidence = post-nucleus p_x0 of the chosen token at its write step, as Float
// (the "snapshot confidence" of Diffusion-in-Diffusion); unmaskStep = the canvas's NFE count after that forward
// (1-based global forward index; 0 = given token). First-hitting draws the Gumbel-max only at the picked position:
// the reference samples every position and keeps one, which has the same distribution.
//
// Public API:
//   SamplerKind (.firstHitting, .ddpm), SamplerSettings (… unmask, approxCache, foldStore), Canvas (… suffixLength, stopRule, margin),
//   SamplerStep + BlockSampler.onStep (per-step hook for traces)
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
    public var unmask: UnmaskPolicy = .random   // which masked positions a step fills (Unmasking.swift)
    /// refine/draft --approx-cache K: 0 = exact (every forward runs the whole block); K ≥ 1 = a full forward of a
    /// canvas's block every K of its forwards, in between only its masked and just-changed rows (ReuseForward.swift).
    public var approxCache = 0
    /// Fold each finished block's store forward into the next block's first forward (cached engine only; the
    /// samples are bit-identical either way). false = the unfused sampler (--no-fold-store), for comparison.
    public var foldStore = true
    public init(kind: SamplerKind = .firstHitting, steps: Int = 1000, nucleus: Double = 1, blockSize: Int,
                unmask: UnmaskPolicy = .random, approxCache: Int = 0) {
        self.kind = kind; self.steps = steps; self.nucleus = nucleus; self.blockSize = blockSize; self.unmask = unmask
        self.approxCache = approxCache
    }
    public var summary: String {
        "B=\(blockSize) sampler=\(kind.rawValue)" + (kind == .ddpm && !unmask.isAdaptive ? " steps=\(steps)" : "")
            + " nucleus=\(nucleus)" + (unmask == .random ? "" : " unmask=\(unmask)")
            + (approxCache > 0 ? " approx-cache=\(approxCache)" : "")
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
    /// Trailing given tokens (draft --suffix): clean context like the prompt, never resampled, never stop-checked.
    public var suffixLength = 0
    /// Why sampling ended (set by the stop rules): nil = the length was reached.
    public var stopRule: String? = nil
    /// Snapshot margin per position: top-1 − top-2 of p when the token was written (given tokens: their
    /// confidence, 1 for prompt/BOS). Written to streams that declare the margin field.
    public var margin: [Float]
    public init(tokens: [Int32], confidence: [Float], unmaskStep: [UInt32], nfe: UInt64, promptLength: Int, seed: UInt64) {
        self.tokens = tokens; self.confidence = confidence; self.unmaskStep = unmaskStep
        self.nfe = nfe; self.promptLength = promptLength; rng = SplitMix64(seed: seed)
        margin = confidence
    }
}

/// Seed of one canvas from the run seed and the canvas's identity (independent of batching).
public func canvasSeed(_ seed: UInt64, _ id: UInt64, _ attempt: UInt64 = 0) -> UInt64 {
    var r = SplitMix64(seed: seed ^ 0x5DEE_CE66_D1CE_B00C)
    _ = r.next()
    var s = SplitMix64(seed: r.next() &+ id &* 0x9E37_79B9_7F4A_7C15 &+ attempt &* 0xC2B2_AE3D_27D4_EB4F)
    return s.next()
}

/// One step of one canvas, for traces (`--trace`) and the terminal view (`--visual`): the positions unmasked
/// by the forward, their snapshot confidences, and the canvas's NFE count after it.
public struct SamplerStep: Sendable {
    public var canvas: Int          // index in the batch handed to run
    public var block: Int           // block index (0-based, position / L')
    public var span: Range<Int>     // the block's positions
    public var step: Int            // step within the block (1-based: forwards that unmasked something)
    public var positions: [Int]
    public var confidences: [Float]
    public var nfe: UInt64
}

public final class BlockSampler {
    public let engine: SamplingEngine
    /// Called after every step that unmasked positions (AR: every token, block = position); nil = no tracing.
    public var onStep: ((SamplerStep, Canvas) -> Void)? = nil
    var blockSteps: [Int] = []
    // --approx-cache: per canvas, its forwards in the current block and the block's tokens at its last forward.
    var forwardsInBlock: [Int] = []
    var lastSeen: [[Int32]] = []
    /// The finished block whose k/v are not in the cache yet (folded into the next forward), nil = none.
    var pendingStore: [Int32]? = nil
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
        // The cached engine takes 2 blocks per chunk to fold the store into the next step.
        let chunk = causal ? min(arChunk, capacity) : (kvCache && settings.foldStore && 2 * block <= capacity ? 2 * block : block)
        guard settings.approxCache == 0 || kvCache else {
            throw UsageError("--approx-cache reuses entries of the KV cache; it cannot run with --no-kv-cache")
        }
        if kvCache {
            engine = try CachedDiT(weights: weights ?? InferenceWeights(model: model, dtype: .fp32), maxBatch: maxBatch, maxChunk: chunk, capacity: capacity)
        } else {
            guard weights == nil || weights!.dtype == .fp32 else {
                throw UsageError("--no-kv-cache runs the fp32 model (the reference's comparison path); use --dtype fp32 with it")
            }
            guard !model.parametersReleased else {
                throw ToolError("--no-kv-cache runs the fp32 model, and this checkpoint was loaded for bf16 inference; open it again at fp32")
            }
            engine = try WindowDiT(model: model, maxBatch: maxBatch, maxChunk: chunk, capacity: capacity)
        }
    }

    /// Window and chunk of the engine a sampler with these settings builds (for sizing the batch).
    public static func engineShape(config: ModelConfig, blockSize: Int, maxLength: Int) -> (window: Int, chunk: Int) {
        let block = config.causal ? 1 : min(blockSize, maxLength)
        let capacity = max(config.length, block)
        return (capacity, config.causal ? min(64, capacity) : 2 * block <= capacity ? 2 * block : block)
    }

    /// Fills every MASK of the canvases (all of equal length). `stop(&canvas, end)` runs after each finished
    /// block (AR: after each token) for active canvases; it may set `active = false`.
    public func run(_ cs: inout [Canvas], stop: ((inout Canvas, Int) -> Void)? = nil) {
        guard !cs.isEmpty else { return }
        let len = cs[0].tokens.count
        precondition(cs.allSatisfy { $0.tokens.count == len }, "canvases of a batch must have equal length")
        engine.reset()
        pendingStore = nil
        if causal { runAR(&cs, stop: stop); return }
        let bs = min(settings.blockSize, len)
        precondition(len % bs == 0, "block size \(bs) must divide the length \(len)")
        for start in stride(from: 0, to: len, by: bs) {
            let range = start..<(start + bs)
            blockSteps = [Int](repeating: 0, count: cs.count)
            forwardsInBlock = [Int](repeating: 0, count: cs.count); lastSeen = [[Int32]](repeating: [], count: cs.count)
            if settings.unmask != .random { policyBlock(&cs, range) } else {
                switch settings.kind {
                case .firstHitting: firstHittingBlock(&cs, range)
                case .ddpm: ddpmBlock(&cs, range)
                }
            }
            if let stop { for b in cs.indices where cs[b].active { stop(&cs[b], range.upperBound) } }
            if !cs.contains(where: { $0.active }) { break }
            if range.upperBound < len { store(gather(cs, range), batch: cs.count) }
        }
        pendingStore = nil
    }

    /// Stores a finished block's k/v: kept pending for the next forward to fold in (cached engine, foldStore), else
    /// a forward of its own. A still pending earlier block (its successor had no forward) is stored first.
    func store(_ block: [Int32], batch: Int) {
        flushStore(batch: batch)
        if settings.foldStore, engine is CachedDiT { pendingStore = block; return }
        engine.forward(tokens: block, batch: batch, store: true, logits: false)
    }

    /// The pending block's own store forward (before a forward that cannot fold it).
    func flushStore(batch: Int) {
        guard let p = pendingStore else { return }
        pendingStore = nil
        engine.forward(tokens: p, batch: batch, store: true, logits: false)
    }

    /// The exact step forward of the block's tokens, with the pending store folded in when it fits.
    func exactForward(_ tokens: [Int32], batch: Int, rows: [Int]) -> UnsafeBufferPointer<Float> {
        if let p = pendingStore, let cache = engine as? CachedDiT, cache.canFold(p.count / batch) {
            pendingStore = nil
            return cache.forward(storing: p, tokens: tokens, batch: batch, rows: rows)
        }
        flushStore(batch: batch)
        return engine.forward(tokens: tokens, batch: batch, store: false, rows: rows)
    }

    /// Over any forward engine (tests drive the policies with hand-set logits).
    init(engine: SamplingEngine, settings: SamplerSettings, maskId: Int32) {
        self.engine = engine; self.settings = settings; self.maskId = maskId; causal = engine.config.causal
    }

    func gather(_ cs: [Canvas], _ r: Range<Int>) -> [Int32] {
        var t: [Int32] = []; t.reserveCapacity(cs.count * r.count)
        for c in cs { t.append(contentsOf: c.tokens[r]) }
        return t
    }

    func hasMask(_ c: Canvas, _ r: Range<Int>) -> Bool { r.contains { c.tokens[$0] == maskId } }

    func maskedPositions(_ c: Canvas, _ r: Range<Int>) -> [Int] { r.filter { c.tokens[$0] == maskId } }

    func probabilities(_ logits: UnsafeBufferPointer<Float>, row: Int, split: Bool = false) -> [Double] {
        let V = engine.config.vocabSize
        var p = split ? subsProbabilitiesSplit(logits: logits.baseAddress! + row * V, count: V, maskId: Int(maskId))
                      : subsProbabilities(logits: logits.baseAddress! + row * V, count: V, maskId: Int(maskId))
        nucleusFilter(&p, topP: settings.nucleus)
        return p
    }

    func write(_ c: inout Canvas, _ pos: Int, _ tok: Int, _ p: [Double]) {
        write(&c, pos, Draw(token: tok, confidence: Float(p[tok]), margin: Float(topTwoMargin(p))))
    }

    /// A drawn token with what is recorded of its distribution.
    struct Draw { var token = 0; var confidence: Float = 0; var margin: Float = 0 }

    func write(_ c: inout Canvas, _ pos: Int, _ d: Draw) {
        c.tokens[pos] = Int32(d.token)
        c.confidence[pos] = d.confidence
        c.margin[pos] = d.margin
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
            let logits = stepForward(cs, r, todo, rows: rows)
            // Each canvas's draw reads only its own logits row and generator: the draws (softmax and Gumbel-max over
            // V, float64: ~1 ms per canvas at V = 50258) run in parallel, then are written in canvas order, so the
            // canvases and the step hooks see exactly what a serial loop gives.
            // One canvas (batch 1): its V-long loops are split over the workers instead, with the same numbers.
            var draws = [Draw](repeating: Draw(), count: todo.count)
            var rngs = todo.map { cs[$0].rng }
            let split = todo.count == 1
            draws.withUnsafeMutableBufferPointer { dp in
                rngs.withUnsafeMutableBufferPointer { gp in
                    let d = dp.baseAddress!, g = gp.baseAddress!
                    parallelChunks(todo.count, grain: 1) { ks in
                        for k in ks {
                            let p = probabilities(logits, row: k, split: split)
                            let tok = split ? gumbelSampleSplit(p: p, rng: &g[k]) : gumbelSample(p: p, rng: &g[k])
                            d[k] = Draw(token: tok, confidence: Float(p[tok]), margin: Float(topTwoMargin(p)))
                        }
                    }
                }
            }
            for (k, b) in todo.enumerated() {
                cs[b].nfe += 1
                cs[b].rng = rngs[k]
                write(&cs[b], picks[k], draws[k])
                report(cs, b, r, [picks[k]])
            }
        }
    }

    /// The forward of one step of the canvases `stepping` (ascending) over block r; rows: the flat output rows.
    /// Exact unless --approx-cache K: then a canvas gets a full forward of its block at its 1st, (K+1)-th, …
    /// forward in the block (the refresh) and in between only its rows that are masked or whose token changed
    /// since its previous forward (their k/v recomputed; the other rows' k/v reused from the cache). One canvas's
    /// numbers never depend on another's schedule: the exact batched forward runs only when every canvas that
    /// still has masks in the block refreshes (it rewrites every canvas's slots).
    func stepForward(_ cs: [Canvas], _ r: Range<Int>, _ stepping: [Int], rows: [Int]) -> UnsafeBufferPointer<Float> {
        let K = settings.approxCache, tokens = gather(cs, r)
        guard K > 0, let cache = engine as? CachedDiT else {
            return exactForward(tokens, batch: cs.count, rows: rows)
        }
        defer { for b in stepping { forwardsInBlock[b] += 1; lastSeen[b] = Array(cs[b].tokens[r]) } }
        let refresh = stepping.filter { forwardsInBlock[$0] % K == 0 }
        let pending = cs.indices.filter { cs[$0].active && hasMask(cs[$0], r) }
        if refresh.count == stepping.count && Set(pending).isSubset(of: refresh) {
            return exactForward(tokens, batch: cs.count, rows: rows)
        }
        flushStore(batch: cs.count)
        let n = r.count
        var compute: [Int] = []
        for b in stepping {
            let full = forwardsInBlock[b] % K == 0
            for i in 0..<n {
                let t = cs[b].tokens[r.lowerBound + i]
                if full || t == maskId || t != lastSeen[b][i] { compute.append(b * n + i) }
            }
        }
        return cache.forwardReusing(tokens: tokens, batch: cs.count, compute: compute, rows: rows)
    }

    func report(_ cs: [Canvas], _ b: Int, _ r: Range<Int>, _ positions: [Int]) {
        guard let onStep else { return }
        blockSteps[b] += 1
        onStep(SamplerStep(canvas: b, block: r.lowerBound / r.count, span: r, step: blockSteps[b], positions: positions,
                           confidences: positions.map { cs[b].confidence[$0] }, nfe: cs[b].nfe), cs[b])
    }

    /// Non-random policies (Unmasking.swift): one forward over the block's masked rows, score every masked
    /// position, unmask the ones the policy selects (k from the step schedule fixed at the block's start).
    func policyBlock(_ cs: inout [Canvas], _ r: Range<Int>) {
        let policy = settings.unmask
        let scheduleSteps: Int? = settings.kind == .ddpm ? settings.steps : nil
        var plans = cs.map { c in stepCounts(masked: maskedPositions(c, r).count, steps: scheduleSteps)[...] }
        while true {
            let todo = cs.indices.filter { b in cs[b].active && hasMask(cs[b], r) }
            if todo.isEmpty { return }
            var ks: [Int] = []
            for b in todo {
                while let k = plans[b].first, k == 0 { plans[b].removeFirst() }   // empty steps cost no forward
                ks.append(plans[b].popFirst() ?? Int.max)                        // past the plan: the rest at once
            }
            let wanted = todo.map { b in maskedPositions(cs[b], r) }
            let rows = zip(todo, wanted).flatMap { b, ps in ps.map { b * r.count + $0 - r.lowerBound } }
            let logits = stepForward(cs, r, todo, rows: rows)
            var row = 0
            for (j, b) in todo.enumerated() {
                cs[b].nfe += 1
                var ps: [Int: [Double]] = [:]
                var scores: [PositionScore] = []
                for pos in wanted[j] {
                    let p = probabilities(logits, row: row); row += 1
                    ps[pos] = p
                    scores.append(PositionScore(position: pos, p: p))
                }
                let chosen = selectPositions(scores, policy: policy, k: ks[j])
                for pos in chosen {
                    let p = ps[pos]!
                    write(&cs[b], pos, gumbelSample(p: p, rng: &cs[b].rng), p)
                }
                report(cs, b, r, chosen)
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
                let logits = stepForward(cs, r, need, rows: rows)
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
                var done: [Int] = []
                for pos in maskedPositions(cs[b], r) {
                    // Categorical on q = p(1 − s/t) ⊕ [mask: s/t] drawn as its mixture: stay masked with
                    // probability s/t, else a Gumbel-max draw from p (same distribution, no V-sized q per step).
                    let u = cs[b].rng.nextDouble()
                    if u < s / t { continue }
                    let p = cache[b]![pos]!
                    let tok = gumbelSample(p: p, rng: &cs[b].rng)
                    write(&cs[b], pos, tok, p); changed = true; done.append(pos)
                }
                if changed { cache[b] = nil; report(cs, b, r, done) }
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
            blockSteps = [Int](repeating: 0, count: cs.count)   // AR: every token is its own block (L' = 1)
            for b in cs.indices where cs[b].active {
                cs[b].nfe += 1
                var p = subsProbabilities(logits: logits.baseAddress! + b * V, count: V, maskId: Int(maskId))
                nucleusFilter(&p, topP: settings.nucleus)
                let tok = gumbelSample(p: p, rng: &cs[b].rng)
                write(&cs[b], pos, tok, p)
                report(cs, b, pos..<(pos + 1), [pos])
                stop?(&cs[b], pos + 1)
            }
            if !cs.contains(where: { $0.active }) || pos + 1 == len { break }
            logits = engine.forward(tokens: gather(cs, pos..<(pos + 1)), batch: B, store: true, causal: true)
        }
    }
}
