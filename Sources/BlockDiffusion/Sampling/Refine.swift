// refine: fills the MASK positions of a partially masked samples stream with block diffusion of block size B
// (blocks left to right over the KV cache; B ≥ the length = one global bidirectional block). Kept tokens and
// their confidence/unmaskStep are untouched; filled tokens get fresh snapshot confidences; unmaskStep of new
// tokens continues the record's NFE count (global forward index); nfe accumulates; a stage entry is appended.
// Input records without confidences get 1 for kept tokens (0 for masks) and unmaskStep 0.
// Consecutive records of equal length are batched (up to `batch`); each record's seed is canvasSeed(seed, id).
//
// remask: ⌊γ·n⌋ of the n non-prompt positions become MASK (confidence 0, unmaskStep 0):
//   snapshot  lowest recorded confidences (ties: lower position first); needs a stream with confidences
//   margin    lowest recorded snapshot margins (top-1 − top-2 at the write step; streams written with --margins)
//   --dilate d: the ⌊γ·n⌋ budget spent on ±d neighbourhoods of the selected positions (spans, not single holes)
//   posthoc   lowest confidence from a fresh forward over the finished sequence, nothing masked, full attention:
//             p(token_i) = softmax of row i's logits without the mask token (no SUBS carry-over, which would
//             give 1 everywhere) — the paper's "another forward pass on the generated sequence to obtain
//             likelihood values". AR checkpoints: p(token_i | tokens < i) from the causal forward.
//   random    uniform choice (partial Fisher–Yates, seeded by canvasSeed(seed, id)).
//
// Public API:
//   RefineOptions (… unmask, shard, dtype, approxCache), runRefine(checkpoint:options:reader:writer:source:observer:weights:),
//   runRefine(checkpoint:options:next:writer:source:observer:weights:) (records from anywhere, e.g. infillRecords)
//   RemaskPolicy, remaskRecord(_:policy:ratio:maskId:seed:scores:dilate:), posthocConfidence(engine:tokens:maskId:),
//   posthocConfidences(engine:sequences:maskId:),
//   runRemask(policy:ratio:seed:checkpoint:reader:writer:source:dilate:shard:batch:weights:)
import Foundation

public struct RefineOptions: Sendable {
    public var blockSize: Int? = nil
    public var sampler: SamplerKind = .firstHitting
    public var steps = 1000
    public var nucleus = 1.0
    public var seed: UInt64 = 0
    /// Records of equal length per batched forward; nil = automaticBatch (what fits, up to 32).
    public var batch: Int? = nil
    /// false: no KV cache (WindowDiT, the reference's kv_cache=False path).
    public var kvCache = true
    /// false: each finished block's k/v stored by a forward of its own (SamplerSettings.foldStore; same samples).
    public var foldStore = true
    // --- decoding options (Unmasking.swift) ---
    /// Which masked positions each step fills (`--unmask`); random = the reference's samplers.
    public var unmask: UnmaskPolicy = .random
    /// `--shard i/n`: only the records with id ≡ i (mod n); each record's result depends only on its own seed.
    public var shard = Shard.whole
    /// Weights of the cached engine (see Model/InferenceWeights.swift).
    public var dtype: WeightDType = .fp32
    /// `--approx-cache K`: approximate k/v reuse inside the block being denoised (0 = off, exact; see
    /// SamplerSettings.approxCache and ReuseForward.swift).
    public var approxCache = 0
    public init() {}
}

@discardableResult
public func runRefine(checkpoint ck: SamplingCheckpoint, options o: RefineOptions, reader: TokenStreamReader,
                      writer: TokenStreamWriter, source: String = "input", observer: StepObserver? = nil,
                      weights: InferenceWeights? = nil) throws -> Int {
    try requireSamplesStream(reader.header, source: source, tool: "refine")
    try ck.requireCompatible(reader.header, source: source)
    return try runRefine(checkpoint: ck, options: o, next: { try reader.next() }, writer: writer, source: source,
                         observer: observer, weights: weights)
}

/// refine over records from `next` (a stream, or `infillRecords`); the records must fit the checkpoint.
@discardableResult
public func runRefine(checkpoint ck: SamplingCheckpoint, options o: RefineOptions, next: () throws -> TokenRecord?,
                      writer: TokenStreamWriter, source: String = "input", observer: StepObserver? = nil,
                      weights: InferenceWeights? = nil) throws -> Int {
    guard !ck.config.causal else { throw ToolError("\(ck.path) is an AR checkpoint; refine needs a diffusion (BD3-LM/MDLM) checkpoint") }
    try o.validate()
    if !o.kvCache && o.dtype != .fp32 { throw UsageError("--no-kv-cache runs the fp32 model (the reference's comparison path); use --dtype fp32 with it") }
    let w = try weights ?? (o.kvCache ? ck.inferenceWeights(dtype: o.dtype) : nil)
    let bs = o.blockSize ?? ck.blockSize
    var settings = SamplerSettings(kind: o.sampler, steps: o.steps, nucleus: o.nucleus, blockSize: bs, unmask: o.unmask,
                                   approxCache: o.approxCache)
    settings.foldStore = o.foldStore
    let mask = ck.special.mask
    var samplers: [Int: BlockSampler] = [:]   // by length (the window depends on it when one block covers it)
    // Batch size: given, or what fits for a window of the model length (records longer than that are rare).
    let batch = o.batch ?? {
        let shape = BlockSampler.engineShape(config: ck.config, blockSize: bs, maxLength: ck.config.length)
        return automaticBatch(config: ck.config, window: shape.window, chunk: shape.chunk, limit: 32)
    }()
    var written = 0
    var pending: [TokenRecord] = []

    func flush() throws {
        guard !pending.isEmpty else { return }
        let len = pending[0].tokens.count
        let key = bs >= len ? len : 0
        if samplers[key] == nil {
            samplers[key] = try BlockSampler(model: ck.model, settings: settings, maskId: mask, maxBatch: batch,
                                             maxLength: max(len, min(bs, len)), kvCache: o.kvCache, weights: w)
        }
        var cs = pending.map { r -> Canvas in
            let conf = r.confidence ?? r.tokens.map { $0 == mask ? 0 : 1 }
            let steps = r.unmaskStep ?? [UInt32](repeating: 0, count: r.tokens.count)
            var c = Canvas(tokens: r.tokens, confidence: conf, unmaskStep: steps, nfe: r.nfe,
                           promptLength: r.promptLength, seed: canvasSeed(o.seed, r.id))
            if let m = r.margin, m.count == r.tokens.count { c.margin = m }
            return c
        }
        if let observer {
            let ids = pending.map(\.id)
            samplers[key]!.onStep = { step, c in observer.step(record: ids[step.canvas], step, canvas: c) }
        }
        samplers[key]!.run(&cs)
        for (r, c) in zip(pending, cs) {
            guard !c.tokens.contains(mask) else { throw ToolError("internal error: a MASK is left in record \(r.id)") }
            var out = r
            out.tokens = c.tokens; out.confidence = c.confidence; out.unmaskStep = c.unmaskStep; out.nfe = c.nfe
            out.margin = writer.header.fields.contains(.margin) ? c.margin : nil
            let generated = r.tokens.reduce(0) { $0 + ($1 == mask ? 1 : 0) }
            let nfe = c.nfe - r.nfe
            out.stages.append("refine \(settings.summary) seed=\(o.seed)" + (o.kvCache ? "" : " kv-cache=off")
                              + (o.dtype == .fp32 ? "" : " dtype=\(o.dtype.rawValue)") + " nfe=\(nfe)"
                              + " generated=\(generated) tpf=\(String(format: "%.3f", nfe > 0 ? Double(generated) / Double(nfe) : 0))")
            try writer.write(out)
            written += 1
        }
        pending.removeAll()
    }

    while let r = try next() {
        guard o.shard.contains(r.id) else { continue }
        let len = r.tokens.count
        guard len >= 1 else {
            try flush(); var out = r; out.stages.append("refine (empty)")
            out.margin = writer.header.fields.contains(.margin) ? [] : nil
            try writer.write(out); written += 1; continue
        }
        if bs < len && len % bs != 0 {
            throw UsageError("block size \(bs) does not divide the length \(len) of record \(r.id) (give --block-size ≥ \(len) for one global block, or make the record a multiple of \(bs) tokens)")
        }
        if let bad = r.tokens.first(where: { $0 < 0 || Int($0) >= ck.vocabSize }) {
            throw ToolError("\(source): record \(r.id) holds token \(bad) outside the checkpoint's vocabulary")
        }
        if let p = pending.first, p.tokens.count != len { try flush() }
        pending.append(r)
        if pending.count == batch { try flush() }
    }
    try flush()
    return written
}

public enum RemaskPolicy: String, CaseIterable, Sendable { case snapshot, margin, posthoc, random }

/// Masks ⌊ratio·n⌋ non-prompt positions of one record. `scores` are the confidences ranked for posthoc
/// (for snapshot the record's own). Kept positions keep their values.
public func remaskRecord(_ r: TokenRecord, policy: RemaskPolicy, ratio: Double, maskId: Int32, seed: UInt64,
                         scores: [Float]? = nil, dilate: Int = 0) throws -> TokenRecord {
    let n = r.tokens.count - r.promptLength
    let k = Int((ratio * Double(max(n, 0))).rounded(.down))
    let candidates = Array(max(0, r.promptLength)..<r.tokens.count)
    var order: [Int]   // positions, the first to mask first
    switch policy {
    case .snapshot, .margin, .posthoc:
        guard let s = policy == .snapshot ? r.confidence : policy == .margin ? r.margin : scores else {
            if policy == .margin {
                throw ToolError("record \(r.id) has no margins; the margin policy needs a stream written by draft or refine with --margins")
            }
            throw ToolError("record \(r.id) has no confidences; the snapshot policy needs a stream written by draft or refine")
        }
        order = candidates.sorted { s[$0] != s[$1] ? s[$0] < s[$1] : $0 < $1 }
    case .random:
        var rng = SplitMix64(seed: canvasSeed(seed, r.id))
        var c = candidates
        for i in 0..<(dilate > 0 ? c.count : k) {   // dilation may need seeds past the k-th
            let j = i + min(c.count - i - 1, Int(rng.nextDouble() * Double(c.count - i)))
            c.swapAt(i, j)
        }
        order = c
    }
    let chosen = dilate > 0 ? dilated(order, radius: dilate, budget: k, allowed: candidates.first.map { $0..<r.tokens.count } ?? 0..<0)
                            : Array(order.prefix(k))
    var out = r
    for p in chosen {
        out.tokens[p] = maskId
        out.confidence?[p] = 0
        out.unmaskStep?[p] = 0
        out.margin?[p] = 0
    }
    out.stages.append("remask policy=\(policy.rawValue) ratio=\(ratio) masked=\(k)" + (dilate > 0 ? " dilate=\(dilate)" : "")
                      + (policy == .random ? " seed=\(seed)" : ""))
    return out
}

/// `--dilate d`: the budget of k positions is spent on neighbourhoods. Seeds are taken in the policy's order;
/// each brings itself, then p−1, p+1, …, p−d, p+d (nearest first, left before right) that are in `allowed` and
/// not yet chosen, until k positions are chosen. So γ keeps its meaning (exactly ⌊γ·n⌋ masks) while the masks
/// form spans of up to 2d+1 tokens instead of isolated single-token holes.
func dilated(_ order: [Int], radius d: Int, budget k: Int, allowed: Range<Int>) -> [Int] {
    var chosen: [Int] = [], taken = Set<Int>()
    outer: for p in order {
        if chosen.count >= k { break }
        var ring = [p]
        for j in 1...d { ring.append(p - j); ring.append(p + j) }
        for q in ring where allowed.contains(q) && !taken.contains(q) {
            chosen.append(q); taken.insert(q)
            if chosen.count >= k { break outer }
        }
    }
    return chosen
}

/// Post-hoc confidence: one forward over the whole sequence (nothing masked). Diffusion: full attention,
/// p(token_i) from row i without the mask logit. AR: p(token_i | < i) from row i−1; position 0 gets 1.
public func posthocConfidence(engine: CachedDiT, tokens: [Int32], maskId: Int32) -> [Float] {
    posthocConfidences(engine: engine, sequences: [tokens], maskId: maskId)[0]
}

/// The same for sequences of equal length in one batched forward (each row's numbers do not depend on the
/// other sequences: the inference products are row-independent).
public func posthocConfidences(engine: CachedDiT, sequences: [[Int32]], maskId: Int32) -> [[Float]] {
    engine.reset()
    let V = engine.config.vocabSize, causal = engine.config.causal, n = sequences[0].count
    precondition(sequences.allSatisfy { $0.count == n }, "posthoc batches hold sequences of equal length")
    let logits = engine.forward(tokens: sequences.flatMap { $0 }, batch: sequences.count, store: false, causal: causal)
    return sequences.enumerated().map { b, tokens in
        tokens.indices.map { i in
            let row = causal ? i - 1 : i
            if row < 0 { return 1 }
            let p = subsProbabilities(logits: logits.baseAddress! + (b * n + row) * V, count: V, maskId: Int(maskId))
            return Float(p[Int(tokens[i])])
        }
    }
}

/// batch: records of equal length per posthoc forward (nil = what fits, up to 32); weights: from prepareInference
/// (nil = the checkpoint model's fp32 parameters in place).
@discardableResult
public func runRemask(policy: RemaskPolicy, ratio: Double, seed: UInt64, checkpoint ck: SamplingCheckpoint?,
                      reader: TokenStreamReader, writer: TokenStreamWriter, source: String = "input", dilate: Int = 0,
                      shard: Shard = .whole, batch: Int? = nil, weights: InferenceWeights? = nil) throws -> Int {
    try validateRemaskRatio(ratio)
    guard dilate >= 0 else { throw UsageError("--dilate must be at least 0 (got \(dilate))") }
    guard (batch ?? 1) >= 1 else { throw UsageError("--batch must be at least 1") }
    let h = reader.header
    try requireSamplesStream(h, source: source, tool: "remask")
    guard h.special.mask >= 0 || ck != nil else {
        throw ToolError("\(source) has no mask id in its header; give -m CHECKPOINT or remask a stream written by draft")
    }
    if policy == .snapshot && !h.fields.contains(.confidence) {
        throw ToolError("\(source) has no confidences; the snapshot policy needs a stream written by draft or refine (use --policy random or posthoc)")
    }
    if policy == .margin && !h.fields.contains(.margin) {
        throw ToolError("\(source) has no margins; the margin policy needs a stream written by draft or refine with --margins (or use --policy snapshot)")
    }
    if let ck { try ck.requireCompatible(h, source: source) }
    let mask = h.special.mask >= 0 ? h.special.mask : ck!.special.mask
    var engines: [Int: CachedDiT] = [:]
    var w = weights
    var n = 0
    let progress = Progress(label: "remask", total: Int.max, unit: "records", force: false)
    defer { progress.finish() }
    var pending: [TokenRecord] = []
    func flush() throws {
        guard !pending.isEmpty else { return }
        var scores: [[Float]?] = pending.map { _ in nil }
        let len = pending[0].tokens.count
        if policy == .posthoc && len > 0, let ck {
            if w == nil { w = try ck.inferenceWeights(dtype: .fp32) }
            if engines[len] == nil {
                engines[len] = try CachedDiT(weights: w!, maxBatch: pendingLimit(len), maxChunk: len, capacity: max(len, ck.config.length))
            }
            scores = posthocConfidences(engine: engines[len]!, sequences: pending.map(\.tokens), maskId: mask)
            progress.advance(items: pending.count, tokens: pending.count * len)
        } else if policy == .posthoc {
            scores = pending.map { _ in [] }
        }
        for (r, sc) in zip(pending, scores) {
            try writer.write(remaskRecord(r, policy: policy, ratio: ratio, maskId: mask, seed: seed, scores: sc, dilate: dilate))
            n += 1
        }
        pending.removeAll()
    }
    /// Records of length len per posthoc forward.
    func pendingLimit(_ len: Int) -> Int {
        guard let ck, policy == .posthoc, len > 0 else { return 1 }
        return batch ?? automaticBatch(config: ck.config, window: max(len, ck.config.length), chunk: len, limit: 32)
    }
    if policy == .posthoc && ck == nil { throw UsageError("--policy posthoc needs -m CHECKPOINT") }
    while let r = try reader.next() {
        guard shard.contains(r.id) else { continue }   // --shard i/n: records with id ≡ i (mod n)
        if let bad = r.tokens.first(where: { $0 < 0 || Int($0) >= h.vocabSize }) {
            throw ToolError("\(source): record \(r.id) holds token \(bad) outside the vocabulary")
        }
        if let p = pending.first, p.tokens.count != r.tokens.count { try flush() }
        pending.append(r)
        if pending.count >= pendingLimit(r.tokens.count) { try flush() }
    }
    try flush()
    return n
}
