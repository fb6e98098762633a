// draft: N samples from a checkpoint (BD3-LM block by block with the KV cache, MDLM as one global block,
// AR token by token), streamed out as a `samples` stream with confidence + unmaskStep.
//
//   canvas = [BOS] + prompt + MASK… + suffix   (length L, or M in variable-length mode); promptLength counts the BOS
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
//   DraftOptions (… unmask, suffix; validate() in SamplingValidation.swift), runDraft(checkpoint:options:prompts:writer:observer:log:)
//   Stage entries end with generated= tpf= finish=length | finish=stop rule=eos|entropy (finishFields).
import Foundation

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
    /// false: each finished block's k/v stored by a forward of its own (SamplerSettings.foldStore; same samples).
    public var foldStore = true
    /// `--approx-cache K`: approximate k/v reuse inside the block being denoised (0 = off, exact; see
    /// SamplerSettings.approxCache and ReuseForward.swift). BD3-LM/MDLM checkpoints, KV cache on.
    public var approxCache = 0
    /// SEDD checkpoints only: the predictor of the T steps (nil = analytic); refused for other checkpoints.
    public var seddPredictor: SEDDPredictor? = nil
    // --- decoding options (Unmasking.swift, Trace.swift) ---
    /// Which masked positions each step fills (`--unmask`); random = the reference's samplers.
    public var unmask: UnmaskPolicy = .random
    /// Tokens the sample ends with (`--suffix`): clean context, never resampled, never checked for EOS.
    public var suffix: [Int32] = []
    public init() {}
}

/// Settings after resolving defaults against the checkpoint; throws UsageError for bad combinations.
public func resolveDraftSettings(_ o: DraftOptions, checkpoint ck: SamplingCheckpoint, promptLengths: [Int]) throws -> SamplerSettings {
    try o.validate()
    if !o.kvCache && o.dtype != .fp32 { throw UsageError("--no-kv-cache runs the fp32 model (the reference's comparison path); use --dtype fp32 with it") }
    let bs = ck.config.causal ? 1 : (o.blockSize ?? ck.blockSize)
    guard bs >= 1 else { throw UsageError("--block-size must be at least 1") }
    if !ck.config.causal && bs < o.length && o.length % bs != 0 {
        throw UsageError("block size \(bs) does not divide the length \(o.length)")
    }
    for p in promptLengths where p > o.length {
        throw UsageError("the prompt (\(p) tokens with BOS) is longer than the length \(o.length)")
    }
    if ck.config.causal && promptLengths.contains(0) {
        throw UsageError("AR sampling needs a BOS id (--bos-id) or a prompt")
    }
    if o.approxCache > 0 && (ck.config.causal || ck.algorithm == "sedd") {
        throw UsageError("--approx-cache reuses k/v inside a diffusion block; it is for BD3-LM/MDLM checkpoints (this one is \(ck.algorithm))")
    }
    if ck.config.causal && o.unmask != .random {
        throw UsageError("--unmask \(o.unmask) needs a diffusion checkpoint; an AR checkpoint writes one token per forward, left to right")
    }
    if !o.suffix.isEmpty {
        if ck.config.causal { throw UsageError("--suffix needs a diffusion checkpoint (an AR model cannot condition on what follows)") }
        if o.variableLength { throw UsageError("--suffix needs a fixed --length (a variable-length sample would cut the suffix off)") }
        for p in promptLengths where p + o.suffix.count > o.length {
            throw UsageError("prompt (\(p) tokens with BOS) + suffix (\(o.suffix.count)) are longer than the length \(o.length)")
        }
    }
    var s = SamplerSettings(kind: o.sampler, steps: o.steps, nucleus: o.nucleus, blockSize: bs, unmask: o.unmask,
                            approxCache: o.approxCache)
    s.foldStore = o.foldStore
    return s
}

/// Runs draft. `prompts` are token prefixes (without BOS); [] means one empty prompt. Records go to `writer`
/// as each batch finishes. Returns the number of records written. `weights`: from prepareInference (nil = built
/// here at o.dtype without releasing the checkpoint's parameters).
@discardableResult
public func runDraft(checkpoint ck: SamplingCheckpoint, options opts: DraftOptions, prompts: [[Int32]],
                     writer: TokenStreamWriter, observer: StepObserver? = nil, weights: InferenceWeights? = nil,
                     log: (String) -> Void = { _ in }) throws -> Int {
    var o = opts
    let sp = ck.special
    let prefixes: [[Int32]] = (prompts.isEmpty ? [[]] : prompts).map { p in
        if sp.bos >= 0 && p.first != sp.bos { return [sp.bos] + p }
        return p
    }
    for p in prefixes where p.contains(where: { $0 < 0 || Int($0) >= ck.vocabSize || $0 == sp.mask }) {
        throw UsageError("the prompt holds a token outside the vocabulary or the mask id")
    }
    if o.suffix.contains(where: { $0 < 0 || Int($0) >= ck.vocabSize || $0 == sp.mask }) {
        throw UsageError("the suffix holds a token outside the vocabulary or the mask id")
    }
    if ck.algorithm == "sedd" {
        if o.unmask != .random || !o.suffix.isEmpty || observer != nil {
            throw UsageError("--unmask, --suffix, --trace and --visual are for BD3-LM/MDLM checkpoints; this is a SEDD checkpoint")
        }
        guard o.dtype == .fp32 else { throw UsageError("--dtype bf16 is for BD3-LM, MDLM and AR checkpoints (this one is SEDD)") }
        return try runSEDDDraft(checkpoint: ck, options: o, prefixes: prefixes, writer: writer)
    }
    if let p = o.seddPredictor {
        throw UsageError("--predictor \(p.rawValue) is for SEDD checkpoints; this is a \(ck.algorithm) checkpoint (use --sampler)")
    }
    let settings = try resolveDraftSettings(o, checkpoint: ck, promptLengths: prefixes.map(\.count))
    if o.batch == nil {
        let shape = BlockSampler.engineShape(config: ck.config, blockSize: settings.blockSize, maxLength: o.length)
        o.batch = automaticBatch(config: ck.config, window: shape.window, chunk: shape.chunk,
                                 limit: (o.samples + o.shard.count - 1) / o.shard.count)
    }
    let batchSize = o.batch!
    let w = try weights ?? (o.kvCache ? ck.inferenceWeights(dtype: o.dtype) : nil)
    if let w, w.dtype != o.dtype { throw UsageError("internal: weights prepared as \(w.dtype.rawValue), options say \(o.dtype.rawValue)") }
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
                for (k, v) in o.suffix.enumerated() { t[o.length - o.suffix.count + k] = v; conf[o.length - o.suffix.count + k] = 1 }
                var c = Canvas(tokens: t, confidence: conf, unmaskStep: [UInt32](repeating: 0, count: o.length), nfe: 0,
                               promptLength: prefix.count, seed: canvasSeed(o.seed, item.id, item.attempt))
                c.suffixLength = o.suffix.count
                return c
            }
            for k in cs.indices where batch[k].attempt == 9 { cs[k].mustFinish = true }
            if let observer {
                let ids = batch.map(\.id)
                sampler.onStep = { step, c in observer.step(record: ids[step.canvas], step, canvas: c) }
            }
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
                var stage = stageBase + " nfe=\(c.nfe)" + finishFields(c, length: n)
                if item.attempt > 0 { stage += " attempt=\(item.attempt + 1)" }
                if c.degenerate { stage += " degenerate"; log("sample \(item.id): still degenerate after 10 attempts; kept") }
                try writer.write(TokenRecord(id: item.id, tokens: tokens, confidence: Array(c.confidence[0..<n]),
                                             unmaskStep: Array(c.unmaskStep[0..<n]), nfe: c.nfe,
                                             promptLength: c.promptLength, stages: [stage],
                                             margin: writer.header.fields.contains(.margin) ? Array(c.margin[0..<n]) : nil))
                written += 1
                progress.advance(items: 1, tokens: n - c.promptLength)
            }
        }
    }
    return written
}

/// The per-record finish fields of a stage entry: tokens generated (positions written by a forward; prompt,
/// suffix and BOS are given), tokens per forward, and why sampling ended: `finish=length` (the length was
/// reached) or `finish=stop rule=eos|entropy` (a stop rule ended it early).
func finishFields(_ c: Canvas, length n: Int) -> String {
    let generated = c.unmaskStep[0..<n].reduce(0) { $0 + ($1 > 0 ? 1 : 0) }
    let tpf = c.nfe > 0 ? Double(generated) / Double(c.nfe) : 0
    return " generated=\(generated) tpf=\(String(format: "%.3f", tpf))"
        + (c.stopRule.map { " finish=stop rule=\($0)" } ?? " finish=length")
}

/// The reference's stop rules (spec §3.4) applied after a finished block ending at `end`. Only generated
/// positions are looked at: an EOS in the prompt (or the suffix) never ends a sample.
func draftStop(_ c: inout Canvas, end: Int, options o: DraftOptions, eos: Int32) {
    if o.variableLength && eos >= 0 {
        let genEnd = min(end, c.tokens.count - c.suffixLength)
        if c.promptLength < genEnd, let k = (c.promptLength..<genEnd).first(where: { c.tokens[$0] == eos }) {
            c.finalLength = k + 1; c.active = false; c.stopRule = "eos"; return
        }
    }
    if o.entropyStop && end > 256 && tailEntropy(c.tokens[0..<end]) < 4 {
        if o.variableLength { c.finalLength = max(c.promptLength, end - 256); c.active = false; c.stopRule = "entropy"; return }
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
    guard !o.variableLength else { throw UsageError("SEDD samples a fixed length: use --length, not --max-length") }
    guard o.length <= ck.config.length else {
        throw UsageError("SEDD samples the whole sequence at once: --length must be at most the model length \(ck.config.length)")
    }
    try o.validate()
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
        do { sampler = try SEDDSampler(model: model, options: so) } catch { throw UsageError("\(error)") }
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
