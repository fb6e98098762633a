// draft: sample N sequences from a checkpoint into a `samples` stream (tokens + snapshot confidence +
// unmask step per token). All logic is in BlockDiffusion/Sampling; this file only parses arguments.
import ArgumentParser
import BlockDiffusion
import Foundation
import ToolOptions

struct Draft: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "draft",
        abstract: "Sample sequences from a BD3-LM / MDLM / AR checkpoint.",
        discussion: """
        BD3-LM checkpoints sample block by block with an exact KV cache of the finished blocks; a block size \
        ≥ the length samples the whole sequence as one block (MDLM); AR checkpoints sample token by token. \
        Every record carries per-token confidence (post-nucleus probability of the chosen token when it was \
        unmasked) and unmask step (forward index; 0 = prompt/BOS).

        A SEDD checkpoint samples with the analytic (Tweedie τ-leaping) predictor by default, in --steps \
        steps (NFE = T), or with --predictor euler.

        Examples:
          draft -m run/best.safetensors -n 8 --length 1024 --block-size 4 \\
                --nucleus 0.9 -o drafts.tok
          draft -m mdlm.safetensors -n 4 --length 256 --sampler ddpm \\
                --steps 256 -o mdlm.tok
          draft -m sedd.safetensors -n 4 --length 256 --steps 1000 -o sedd.tok
          draft -m sedd.safetensors -n 4 --length 256 --steps 128 \\
                --predictor euler -o sedd-euler.tok
          draft -m run/last.safetensors -n 2 --max-length 2048 \\
                --prompt-tokens prompt.tok -o long.tok
          draft -m run/best.safetensors -t tokenizer.json --prompt "Once upon" \\
                -n 4 --max-length 256 -o prompted.tok
          draft -m run/best.safetensors -n 8 --length 128 --unmask threshold:0.9 \\
                --trace steps.jsonl -o fast.tok
          draft -m run/best.safetensors -t tokenizer.json --prompt "Once" \\
                --suffix "The end." --length 128 -o - | tokenize decode
          draft -m run/best.safetensors -n 16 --length 1024 --dtype bf16 -o drafts.tok
          draft -m mdlm.safetensors -n 4 --length 1024 --block-size 1024 \\
                --approx-cache 4 -o approx.tok
        """)

    @OptionGroup(title: "Checkpoint") var checkpoint: CheckpointOptions
    @OptionGroup(title: "Special ids") var ids: SpecialIDOptions

    @Option(name: .customShort("n"), parsing: .unconditional, help: "Number of samples (per prompt).")
    var samples: Int = 1

    @Option(parsing: .unconditional, help: "Fixed total length in tokens (BOS and prompt included).")
    var length: Int?

    @Option(name: .customLong("max-length"), parsing: .unconditional, help: "Variable-length mode: stop at EOS or low entropy, at most this many tokens.")
    var maxLength: Int?

    @OptionGroup(title: "Sampler") var sampling: SamplerOptions

    @Option(help: "SEDD checkpoints: analytic (Tweedie τ-leaping, default) or euler.")
    var predictor: SEDDPredictor?

    @Option(parsing: .unconditional, help: "Prompt text (needs -t tokenizer.json); may start with a dash.")
    var prompt: String?

    @Option(name: [.customShort("t"), .customLong("tokenizer")], help: "tokenizer.json for --prompt, --suffix and --visual.")
    var tokenizer: String?

    @Option(name: .customLong("prompt-tokens"), help: "Token stream of prompts (each record is one prompt; -n samples each).")
    var promptTokens: String?

    @OptionGroup var sharding: ShardOptions

    @Flag(name: .customLong("no-entropy-stop"), help: "Disable the low-entropy (< 4 nats over 256 tokens) stop/regenerate rule.")
    var noEntropyStop = false

    @Option(parsing: .unconditional, help: "Text the sample ends with (needs -t); clean context, never resampled. Fixed --length only.")
    var suffix: String?

    @OptionGroup(title: "Decoding") var decoding: DecodingOptions

    @Option(name: .customLong("approx-cache"), parsing: .unconditional,
            help: "Approximate k/v reuse inside the block being denoised (dKV-Cache): a full forward every K steps of a sample, in between only its masked rows and the rows decoded since its previous step are recomputed, over the reused keys/values of the others. 0 = off (exact, the default); 1 = exact; K ≥ 2 is faster and not exact (docs/sampling.md). BD3-LM/MDLM checkpoints; recorded in the stage entry.")
    var approxCache = 0

    @OptionGroup(title: "Output") var out: OutputOptions

    /// The library's options (validated by DraftOptions.validate()).
    func options() throws -> DraftOptions {
        var o = DraftOptions()
        o.samples = samples; o.length = length ?? maxLength ?? 0; o.variableLength = maxLength != nil
        sampling.apply(to: &o)
        o.entropyStop = !noEntropyStop; o.shard = try sharding.parsed()
        o.seddPredictor = predictor
        o.unmask = try decoding.parsed().unmask
        o.approxCache = approxCache
        return o
    }

    func validate() throws {
        guard (length == nil) != (maxLength == nil) else { throw ValidationError("give exactly one of --length and --max-length") }
        if prompt != nil && promptTokens != nil { throw ValidationError("give either --prompt or --prompt-tokens, not both") }
        if prompt != nil && tokenizer == nil { throw ValidationError("--prompt TEXT needs -t tokenizer.json (the checkpoint's tokenizer)") }
        if suffix != nil && tokenizer == nil { throw ValidationError("--suffix TEXT needs -t tokenizer.json (the checkpoint's tokenizer)") }
        if tokenizer != nil && prompt == nil && suffix == nil && !decoding.visual {
            throw ValidationError("-t/--tokenizer is only used with --prompt, --suffix or --visual")
        }
        try usage { try options().validate() }
    }

    func run() throws {
        let ck = try checkpoint.open(blockSize: sampling.blockSize, ids: ids, dtype: sampling.loadDType)
        if promptTokens == nil && prompt == nil { try ck.requireBOS() }
        var prompts: [[Int32]] = []
        let tok = try tokenizer.map { try BPETokenizer.load(path: $0) }
        if let tok, let tokenizer, ck.fingerprint != 0 && tok.fingerprint != ck.fingerprint {
            throw ToolError("\(tokenizer): tokenizer fingerprint \(hex(tok.fingerprint)) differs from the checkpoint's \(hex(ck.fingerprint)); pass the tokenizer the model was trained with")
        }
        if let promptTokens {
            let (h, p) = try readPromptStream(path: promptTokens)
            try ck.requireCompatible(h, source: promptTokens)
            prompts = p
        } else if let prompt, let tok {
            prompts = [tok.encode(Array(prompt.utf8))]
        }
        var o = try options()
        if let suffix, let tok { o.suffix = tok.encode(Array(suffix.utf8)) }
        let dec = try decoding.parsed()
        // bf16: the weights were converted while loading and the fp32 parameters released (SamplingCheckpoint.open).
        var weights: InferenceWeights?
        if o.kvCache { try usage { weights = try prepareInference(ck, dtype: o.dtype) } }
        let bs = ck.config.causal ? 1 : (o.blockSize ?? ck.blockSize)
        let rows = Double(min(o.batch ?? 1, o.samples)), c = ck.config
        // Lower bound: the KV cache of a window of at most the model length, and one block's logits.
        try requireMemory(rows * Double(min(o.length, c.length)) * Double(2 * c.hiddenSize * c.nBlocks) * 4
                          + rows * Double(min(bs, o.length)) * Double(c.vocabSize) * 4,
                          for: "sampling \(Int(rows)) sequences of \(o.length) tokens at once (KV cache and logits)",
                          fix: "lower --batch (or --length)")
        var attrs = ["block_size": "\(bs)", "sampler": o.sampler.rawValue, "nucleus": "\(o.nucleus)", "seed": "\(o.seed)",
                     "length": "\(o.length)", "var_length": "\(o.variableLength)"]
        if let shard = sharding.shard { attrs["shard"] = shard }
        if !o.kvCache { attrs["kv_cache"] = "false" }
        if o.dtype != .fp32 { attrs["dtype"] = o.dtype.rawValue }
        if dec.unmask != .random { attrs["unmask"] = "\(dec.unmask)" }
        if ck.algorithm == "sedd" { attrs["sampler"] = "sedd-" + (predictor ?? .analytic).rawValue; attrs["steps"] = "\(o.steps)" }
        var header = ck.samplesHeader(tool: "draft", attributes: attrs)
        if decoding.margins {
            if ck.algorithm == "sedd" { throw UsageError("--margins is for BD3-LM/MDLM/AR checkpoints; SEDD records no margins") }
            header.fields.insert(.margin)
        }
        let text: ([Int32]) -> String = { ids in tok.map { String(decoding: $0.decode(ids), as: UTF8.self) } ?? ids.map(String.init).joined(separator: " ") + " " }
        try dec.withObservers(decode: text, maskId: ck.special.mask) { observer in
            try withSamplesOutput(path: out.output, header: header, allowTerminal: out.force) { w in
                try runDraft(checkpoint: ck, options: o, prompts: prompts, writer: w, observer: observer, weights: weights) { line in
                    FileHandle.standardError.write(Data(("draft: " + line + "\n").utf8))
                }
            }
        }
    }
}

runTool(Draft.self)
