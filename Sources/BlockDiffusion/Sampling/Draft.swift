// draft: N samples from a checkpoint (BD3-LM block by block with the KV cache, MDLM as one global block,
// AR token by token), streamed out as a `samples` stream with confidence + unmaskStep.
//
//   canvas = [BOS] + prompt + MASK…   (length L, or M in variable-length mode); promptLength counts the BOS
//   stop rules after each block (spec §3.4):
//     variable length: the first EOS at a position ≥ promptLength ends the sample (truncated just after it).
//        With BOS = EOS at position 0 this is the reference's "more than one EOS, cut after the second".
//     entropy of the last 256 tokens < 4 nats, once the length is > 256 (disable with entropyStop = false):
//        variable length → truncate to len − 256 (never into the prompt) and stop;
//        fixed length → regenerate with a fresh seed, up to 10 attempts; the 10th is kept and its stage entry
//        says "degenerate" (the reference raises instead).
//   kvCache = false (`--no-kv-cache`): the reference's no-cache path (WindowDiT); same samples within the model
//   length up to float rounding, a different (recomputed) window past it; stage entries say "kv-cache=off".
//   sample i of prompt j has id j·N + i and seed canvasSeed(seed, id, attempt): results do not depend on --batch
//   except through float rounding of the batched matrix products.
//
// Public API:
//   DraftOptions, SamplingUsageError, runDraft(checkpoint:options:prompts:writer:log:)
import Foundation

/// A usage error found by the library (the CLI turns it into exit 64).
public struct SamplingUsageError: Error, CustomStringConvertible {
    public let description: String
    public init(_ m: String) { description = m }
}

public struct DraftOptions: Sendable {
    public var samples: Int = 1
    public var length: Int = 0               // fixed length, or the maximum in variable-length mode
    public var variableLength = false
    public var blockSize: Int? = nil         // nil = the checkpoint's
    public var sampler: SamplerKind = .firstHitting
    public var steps = 1000
    public var nucleus = 1.0
    public var seed: UInt64 = 0
    /// Canvases per batched forward; nil = automaticBatch (what fits, up to the number of samples).
    public var batch: Int? = nil
    /// Weights of the cached engine (bf16: half the bytes streamed per forward; see Model/InferenceWeights.swift).
    public var dtype: WeightDType = .fp32
    public var entropyStop = true
    public var shard: (index: Int, count: Int) = (0, 1)
    /// false: no KV cache, every forward runs the window through `.blockCausal` (reference kv_cache=False).
    public var kvCache = true
    /// SEDD checkpoints only: the predictor of the T steps (nil = analytic); refused for other checkpoints.
    public var seddPredictor: SEDDPredictor? = nil
    public init() {}
}

/// Settings after resolving defaults against the checkpoint; throws SamplingUsageError for bad combinations.
public func resolveDraftSettings(_ o: DraftOptions, checkpoint ck: SamplingCheckpoint, promptLengths: [Int]) throws -> SamplerSettings {
    guard o.samples >= 1 else { throw SamplingUsageError("-n must be at least 1") }
    guard o.length >= 1 else { throw SamplingUsageError("the length must be at least 1") }
    guard (o.batch ?? 1) >= 1 else { throw SamplingUsageError("--batch must be at least 1") }
    guard o.nucleus > 0 && o.nucleus <= 1 else { throw SamplingUsageError("--nucleus must be in (0, 1] (got \(o.nucleus))") }
    guard o.steps >= 1 else { throw SamplingUsageError("--steps must be at least 1") }
    guard o.shard.count >= 1 && o.shard.index >= 0 && o.shard.index < o.shard.count else {
        throw SamplingUsageError("--shard must be i/n with 0 ≤ i < n")
    }
    if !o.kvCache && o.dtype != .fp32 { throw SamplingUsageError("--no-kv-cache runs the fp32 model (the reference's comparison path); use --dtype fp32 with it") }
    let bs = ck.config.causal ? 1 : (o.blockSize ?? ck.blockSize)
    guard bs >= 1 else { throw SamplingUsageError("--block-size must be at least 1") }
    if !ck.config.causal && bs < o.length && o.length % bs != 0 {
        throw SamplingUsageError("block size \(bs) does not divide the length \(o.length)")
    }
    for p in promptLengths where p > o.length {
        throw SamplingUsageError("the prompt (\(p) tokens with BOS) is longer than the length \(o.length)")
    }
    if ck.config.causal && promptLengths.contains(0) {
        throw SamplingUsageError("AR sampling needs a BOS id (--bos-id) or a prompt")
    }
    return SamplerSettings(kind: o.sampler, steps: o.steps, nucleus: o.nucleus, blockSize: bs)
}

/// Runs draft. `prompts` are token prefixes (without BOS); [] means one empty prompt. Records go to `writer`
/// as each batch finishes. Returns the number of records written. `weights`: from prepareInference (nil = built
/// here at o.dtype without releasing the checkpoint's parameters).
@discardableResult
public func runDraft(checkpoint ck: SamplingCheckpoint, options opts: DraftOptions, prompts: [[Int32]],
                     writer: TokenStreamWriter, weights: InferenceWeights? = nil, log: (String) -> Void = { _ in }) throws -> Int {
    var o = opts
    let sp = ck.special
    let prefixes: [[Int32]] = (prompts.isEmpty ? [[]] : prompts).map { p in
        if sp.bos >= 0 && p.first != sp.bos { return [sp.bos] + p }
        return p
    }
    for p in prefixes where p.contains(where: { $0 < 0 || Int($0) >= ck.vocabSize || $0 == sp.mask }) {
        throw SamplingUsageError("the prompt holds a token outside the vocabulary or the mask id")
    }
    if ck.algorithm == "sedd" {
        guard o.dtype == .fp32 else { throw SamplingUsageError("--dtype bf16 is for BD3-LM, MDLM and AR checkpoints (this one is SEDD)") }
        return try runSEDDDraft(checkpoint: ck, options: o, prefixes: prefixes, writer: writer)
    }
    if let p = o.seddPredictor {
        throw SamplingUsageError("--predictor \(p.rawValue) is for SEDD checkpoints; this is a \(ck.algorithm) checkpoint (use --sampler)")
    }
    let settings = try resolveDraftSettings(o, checkpoint: ck, promptLengths: prefixes.map(\.count))
    if o.batch == nil {
        let shape = BlockSampler.engineShape(config: ck.config, blockSize: settings.blockSize, maxLength: o.length)
        o.batch = automaticBatch(config: ck.config, window: shape.window, chunk: shape.chunk,
                                 limit: (o.samples + o.shard.count - 1) / o.shard.count)
    }
    let batchSize = o.batch!
    let w = try weights ?? (o.kvCache ? InferenceWeights(model: ck.model, dtype: o.dtype) : nil)
    if let w, w.dtype != o.dtype { throw SamplingUsageError("internal: weights prepared as \(w.dtype.rawValue), options say \(o.dtype.rawValue)") }
    let sampler = try BlockSampler(model: ck.model, settings: settings, maskId: sp.mask,
                                   maxBatch: min(batchSize, o.samples), maxLength: o.length, kvCache: o.kvCache, weights: w)
    let stageBase = (ck.config.causal ? "draft ar nucleus=\(o.nucleus) seed=\(o.seed)"
                                      : "draft \(settings.summary) seed=\(o.seed)") + (o.kvCache ? "" : " kv-cache=off")
        + (o.dtype == .fp32 ? "" : " dtype=\(o.dtype.rawValue)")
    var written = 0
    let perPrompt = (0..<o.samples).filter { $0 % o.shard.count == o.shard.index }.count
    let progress = Progress(label: "draft", total: perPrompt * prefixes.count)
    defer { progress.finish() }
    for (j, prefix) in prefixes.enumerated() {
        // This shard's sample ids of prompt j.
        var queue: [(id: UInt64, attempt: UInt64)] = (0..<o.samples).compactMap { i in
            let id = UInt64(j * o.samples + i)
            return Int(id % UInt64(o.shard.count)) == o.shard.index ? (id, 0) : nil
        }
        while !queue.isEmpty {
            let batch = Array(queue.prefix(batchSize)); queue.removeFirst(batch.count)
            var cs = batch.map { item -> Canvas in
                var t = [Int32](repeating: sp.mask, count: o.length)
                var conf = [Float](repeating: 0, count: o.length)
                for (k, v) in prefix.enumerated() { t[k] = v; conf[k] = 1 }
                return Canvas(tokens: t, confidence: conf, unmaskStep: [UInt32](repeating: 0, count: o.length), nfe: 0,
                              promptLength: prefix.count, seed: canvasSeed(o.seed, item.id, item.attempt))
            }
            for k in cs.indices where batch[k].attempt == 9 { cs[k].mustFinish = true }
            sampler.run(&cs) { c, end in draftStop(&c, end: end, options: o, eos: sp.eos) }
            for (k, c) in cs.enumerated() {
                let item = batch[k]
                if c.degenerate && item.attempt + 1 < 10 {
                    log("sample \(item.id): degenerate (entropy of the last 256 tokens < 4), regenerating (attempt \(item.attempt + 2))")
                    queue.append((item.id, item.attempt + 1)); continue
                }
                let n = c.finalLength ?? o.length
                let tokens = Array(c.tokens[0..<n])
                guard !tokens.contains(sp.mask) else { throw ToolError("internal error: a MASK is left in sample \(item.id)") }
                var stage = stageBase + " nfe=\(c.nfe)"
                if item.attempt > 0 { stage += " attempt=\(item.attempt + 1)" }
                if c.degenerate { stage += " degenerate"; log("sample \(item.id): still degenerate after 10 attempts; kept") }
                try writer.write(TokenRecord(id: item.id, tokens: tokens, confidence: Array(c.confidence[0..<n]),
                                             unmaskStep: Array(c.unmaskStep[0..<n]), nfe: c.nfe,
                                             promptLength: c.promptLength, stages: [stage]))
                written += 1
                progress.advance(items: 1, tokens: n - c.promptLength)
            }
        }
    }
    return written
}

/// The reference's stop rules (spec §3.4) applied after a finished block ending at `end`.
func draftStop(_ c: inout Canvas, end: Int, options o: DraftOptions, eos: Int32) {
    if o.variableLength && eos >= 0 {
        if let k = (c.promptLength..<end).first(where: { c.tokens[$0] == eos }) {
            c.finalLength = k + 1; c.active = false; return
        }
    }
    if o.entropyStop && end > 256 && tailEntropy(c.tokens[0..<end]) < 4 {
        if o.variableLength { c.finalLength = max(c.promptLength, end - 256); c.active = false; return }
        c.degenerate = true
        if !c.mustFinish { c.active = false }
    }
}

/// SEDD checkpoints: the analytic (Tweedie τ-leaping) or Euler sampler over the whole sequence, `--steps` T
/// (NFE = T), with the final denoising step. Fixed length ≤ the model length; one prompt at a time. Sample i of
/// prompt j has id j·N + i and seed canvasSeed(seed, id), as for BD3 checkpoints, so `--shard` and `--batch`
/// do not change the samples.
func runSEDDDraft(checkpoint ck: SamplingCheckpoint, options o: DraftOptions, prefixes: [[Int32]],
                  writer: TokenStreamWriter) throws -> Int {
    guard !o.variableLength else { throw SamplingUsageError("SEDD samples a fixed length: use --length, not --max-length") }
    guard o.length <= ck.config.length else {
        throw SamplingUsageError("SEDD samples the whole sequence at once: --length must be at most the model length \(ck.config.length)")
    }
    guard o.samples >= 1, (o.batch ?? 1) >= 1, o.steps >= 1 else { throw SamplingUsageError("-n, --batch and --steps must be at least 1") }
    guard o.shard.count >= 1 && o.shard.index >= 0 && o.shard.index < o.shard.count else {
        throw SamplingUsageError("--shard must be i/n with 0 ≤ i < n")
    }
    let predictor = o.seddPredictor ?? .analytic
    let batch = max(1, min(o.batch ?? o.samples, o.samples, 16))
    let model = DiT(sharingWeightsOf: ck.model, maxBatch: batch, maxTokens: o.length)
    var written = 0
    for (j, prefix) in prefixes.enumerated() {
        var so = SEDDSamplerOptions(steps: o.steps, length: o.length, maskID: ck.special.mask, prompt: prefix)
        so.nucleus = o.nucleus
        so.noise = ck.seddNoise
        so.predictor = predictor
        let sampler: SEDDSampler
        do { sampler = try SEDDSampler(model: model, options: so) } catch { throw SamplingUsageError("\(error)") }
        let ids = (0..<o.samples).map { UInt64(j * o.samples + $0) }.filter { Int($0 % UInt64(o.shard.count)) == o.shard.index }
        try sampler.draft(ids: ids, batch: batch, seed: o.seed) { r in
            var r = r
            r.stages = ["draft sedd \(predictor.rawValue) T=\(o.steps) nucleus=\(o.nucleus) noise=\(ck.seddNoise.rawValue) seed=\(o.seed) nfe=\(r.nfe)"]
            try writer.write(r)
            written += 1
        }
    }
    return written
}
