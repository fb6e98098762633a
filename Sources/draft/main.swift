// draft: sample N sequences from a checkpoint into a `samples` stream (tokens + snapshot confidence +
// unmask step per token). All logic is in BlockDiffusion/Sampling; this file only parses arguments.
import ArgumentParser
import BlockDiffusion
import Foundation

extension SamplerKind: ExpressibleByArgument {}
extension SEDDPredictor: ExpressibleByArgument {}
extension WeightDType: ExpressibleByArgument {}

struct Draft: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "draft",
        abstract: "Sample sequences from a BD3-LM / MDLM / AR checkpoint.",
        discussion: """
        BD3-LM checkpoints sample block by block with an exact KV cache of the finished blocks; a block size \
        ≥ the length samples the whole sequence as one block (MDLM); AR checkpoints sample token by token. \
        Every record carries per-token confidence (post-nucleus probability of the chosen token when it was \
        unmasked) and unmask step (forward index; 0 = prompt/BOS).

        Examples:
          draft -m run/best.safetensors -n 8 --length 1024 --block-size 4 --nucleus 0.9 -o drafts.tok
          draft -m mdlm.safetensors -n 4 --length 256 --sampler ddpm --steps 256 -o mdlm.tok
          draft -m sedd.safetensors -n 4 --length 256 --steps 1000 -o sedd.tok     (SEDD: analytic sampler, NFE = T)
          draft -m sedd.safetensors -n 4 --length 256 --steps 128 --predictor euler -o sedd-euler.tok
          draft -m run/last.safetensors -n 2 --max-length 2048 --prompt-tokens prompt.tok -o long.tok
          draft -m run/best.safetensors -n 16 --length 1024 --dtype bf16 -o drafts.tok     (bf16 weights)
        """)

    @Option(name: [.customShort("m"), .customLong("model")], help: "Checkpoint (safetensors written by train).")
    var model: String

    @Option(name: .customShort("n"), help: "Number of samples (per prompt).")
    var samples: Int = 1

    @Option(help: "Fixed total length in tokens (BOS and prompt included).")
    var length: Int?

    @Option(name: .customLong("max-length"), help: "Variable-length mode: stop at EOS or low entropy, at most this many tokens.")
    var maxLength: Int?

    @Option(name: .customLong("block-size"), help: "Block size L' (default: the checkpoint's).")
    var blockSize: Int?

    @Option(help: "Nucleus (top-p) threshold in (0, 1]; 1 = off.")
    var nucleus: Double = 1.0

    @Option(help: "first-hitting (one token per forward) or ddpm (--steps per block).")
    var sampler: SamplerKind = .firstHitting

    @Option(help: "DDPM steps per block; for SEDD checkpoints the number of sampling steps T.")
    var steps: Int = 1000

    @Option(help: "SEDD checkpoints: analytic (Tweedie τ-leaping, default) or euler.")
    var predictor: SEDDPredictor?

    @Option(help: "Prompt text (needs -t tokenizer.json).")
    var prompt: String?

    @Option(name: [.customShort("t"), .customLong("tokenizer")], help: "tokenizer.json for --prompt.")
    var tokenizer: String?

    @Option(name: .customLong("prompt-tokens"), help: "Token stream of prompts (each record is one prompt; -n samples each).")
    var promptTokens: String?

    @Option(help: "Random seed.")
    var seed: UInt64 = 0

    @Option(help: "Samples per batched forward (default: as many as fit in half the free memory, at most 32 and -n; the samples do not depend on it).")
    var batch: Int?

    @Option(help: "Weights of the sampling engine: fp32 or bf16 (half the memory and bytes per forward; accumulation stays fp32).")
    var dtype: WeightDType = .fp32

    @Option(help: "Only the samples with id % n == i (format i/n).")
    var shard: String?

    @Flag(name: .customLong("no-entropy-stop"), help: "Disable the low-entropy (< 4 nats over 256 tokens) stop/regenerate rule.")
    var noEntropyStop = false

    @Option(name: .customLong("mask-id"), help: "Mask id if the checkpoint metadata lacks it.")
    var maskId: Int32?
    @Option(name: .customLong("bos-id"), help: "BOS id if the checkpoint metadata lacks it.")
    var bosId: Int32?
    @Option(name: .customLong("eos-id"), help: "EOS id if the checkpoint metadata lacks it.")
    var eosId: Int32?

    @Flag(name: .customLong("no-kv-cache"), help: "No KV cache: every forward runs the window of finished blocks + the current block (at most the model length) through the block-causal mask (the reference's kv_cache=False; slower, for comparison).")
    var noKVCache = false

    @Option(name: [.short, .long], help: "Output samples stream ('-' = stdout).")
    var output: String = "-"

    @Flag(help: "Write binary output even to a terminal.")
    var force = false

    func parsedShard() throws -> (Int, Int) {
        guard let shard else { return (0, 1) }
        let parts = shard.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else {
            throw ValidationError("--shard must be i/n with 0 ≤ i < n (got \(shard))")
        }
        return (i, n)
    }

    func validate() throws {
        guard (length == nil) != (maxLength == nil) else { throw ValidationError("give exactly one of --length and --max-length") }
        if let l = length ?? maxLength, l < 1 { throw ValidationError("the length must be at least 1") }
        guard samples >= 1 else { throw ValidationError("-n must be at least 1") }
        if let batch, batch < 1 { throw ValidationError("--batch must be at least 1") }
        if noKVCache && dtype != .fp32 { throw ValidationError("--no-kv-cache runs the fp32 model (the reference's comparison path); use --dtype fp32 with it") }
        guard nucleus > 0 && nucleus <= 1 else { throw ValidationError("--nucleus must be in (0, 1] (got \(nucleus))") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
        if let b = blockSize, b < 1 { throw ValidationError("--block-size must be at least 1") }
        if prompt != nil && promptTokens != nil { throw ValidationError("give either --prompt or --prompt-tokens, not both") }
        if prompt != nil && tokenizer == nil { throw ValidationError("--prompt TEXT needs -t tokenizer.json (the checkpoint's tokenizer)") }
        if tokenizer != nil && prompt == nil { throw ValidationError("-t/--tokenizer is only used with --prompt") }
        _ = try parsedShard()
    }

    func run() throws {
        let ck = try SamplingCheckpoint.load(path: model, maskId: maskId, bosId: bosId, eosId: eosId)
        var prompts: [[Int32]] = []
        if let promptTokens {
            let (h, p) = try readPromptStream(path: promptTokens)
            try ck.requireCompatible(h, source: promptTokens)
            prompts = p
        } else if let prompt, let tokenizer {
            let tok = try BPETokenizer.load(path: tokenizer)
            if ck.fingerprint != 0 && tok.fingerprint != ck.fingerprint {
                throw ToolError("\(tokenizer): tokenizer fingerprint \(String(format: "%016llx", tok.fingerprint)) differs from the checkpoint's \(String(format: "%016llx", ck.fingerprint)); pass the tokenizer the model was trained with")
            }
            prompts = [tok.encode(Array(prompt.utf8))]
        }
        var o = DraftOptions()
        o.samples = samples; o.length = length ?? maxLength!; o.variableLength = maxLength != nil
        o.blockSize = blockSize; o.sampler = sampler; o.steps = steps; o.nucleus = nucleus; o.seed = seed
        o.batch = batch; o.entropyStop = !noEntropyStop; o.shard = try parsedShard(); o.kvCache = !noKVCache
        o.seddPredictor = predictor; o.dtype = dtype
        // bf16: the weights are converted once and the fp32 parameters released before sampling starts.
        let weights = try { () throws -> InferenceWeights? in
            do { return noKVCache ? nil : try prepareInference(ck, dtype: dtype) } catch let e as SamplingUsageError { throw ValidationError(e.description) }
        }()
        let bs = ck.config.causal ? 1 : (blockSize ?? ck.blockSize)
        var attrs = ["block_size": "\(bs)", "sampler": sampler.rawValue, "nucleus": "\(nucleus)", "seed": "\(seed)",
                     "length": "\(o.length)", "var_length": "\(o.variableLength)"]
        if let shard { attrs["shard"] = shard }
        if noKVCache { attrs["kv_cache"] = "false" }
        if dtype != .fp32 { attrs["dtype"] = dtype.rawValue }
        if ck.algorithm == "sedd" { attrs["sampler"] = "sedd-" + (predictor ?? .analytic).rawValue; attrs["steps"] = "\(steps)" }
        do {
            try withSamplesOutput(path: output, header: ck.samplesHeader(tool: "draft", attributes: attrs), allowTerminal: force) { w in
                try runDraft(checkpoint: ck, options: o, prompts: prompts, writer: w, weights: weights) { line in
                    FileHandle.standardError.write(Data(("draft: " + line + "\n").utf8))
                }
            }
        } catch let e as SamplingUsageError { throw ValidationError(e.description) }
    }
}

Runtime.prepareTool()
Draft.main()
