// refine: fill the masked positions of a samples stream with block diffusion of block size B (B ≥ the
// length = global bidirectional refinement). All logic is in BlockDiffusion/Sampling/Refine.swift.
import ArgumentParser
import BlockDiffusion
import Foundation

extension SamplerKind: ExpressibleByArgument {}
extension WeightDType: ExpressibleByArgument {}

struct Refine: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refine",
        abstract: "Re-denoise the MASK positions of a samples stream; kept tokens stay fixed.",
        discussion: """
        Blocks go left to right over an exact KV cache; only masked positions are sampled. \
        Chains: refine | remask | refine.

        Example:
          remask --ratio 0.5 -i drafts.tok | refine -m ck.safetensors --block-size 1024 --nucleus 0.9 -o refined.tok
        """)

    @Option(name: [.customShort("m"), .customLong("model")], help: "Checkpoint (safetensors written by train).")
    var model: String

    @Option(name: .customLong("block-size"), help: "Block size (default: the checkpoint's; ≥ length = global).")
    var blockSize: Int?

    @Option(help: "first-hitting or ddpm.")
    var sampler: SamplerKind = .firstHitting

    @Option(help: "DDPM steps per block.")
    var steps: Int = 1000

    @Option(help: "Nucleus (top-p) threshold in (0, 1].")
    var nucleus: Double = 1.0

    @Option(help: "Random seed.")
    var seed: UInt64 = 0

    @Option(help: "Records of equal length per batched forward (default: as many as fit in half the free memory, at most 32; the results do not depend on it).")
    var batch: Int?

    @Option(help: "Weights of the sampling engine: fp32 or bf16 (half the memory and bytes per forward; accumulation stays fp32).")
    var dtype: WeightDType = .fp32

    @Option(name: [.short, .long], help: "Input samples stream ('-' = stdin).")
    var input: String = "-"

    @Flag(name: .customLong("no-kv-cache"), help: "No KV cache: every forward runs the window of finished blocks + the current block (at most the model length) through the block-causal mask (the reference's kv_cache=False; slower, for comparison).")
    var noKVCache = false

    @Option(name: [.short, .long], help: "Output stream ('-' = stdout).")
    var output: String = "-"

    @Flag(help: "Write binary output even to a terminal.")
    var force = false

    func validate() throws {
        if let b = blockSize, b < 1 { throw ValidationError("--block-size must be at least 1") }
        guard nucleus > 0 && nucleus <= 1 else { throw ValidationError("--nucleus must be in (0, 1] (got \(nucleus))") }
        guard steps >= 1, (batch ?? 1) >= 1 else { throw ValidationError("--steps and --batch must be at least 1") }
        if noKVCache && dtype != .fp32 { throw ValidationError("--no-kv-cache runs the fp32 model (the reference's comparison path); use --dtype fp32 with it") }
    }

    func run() throws {
        let ck = try SamplingCheckpoint.load(path: model)
        let name = input == "-" ? "stdin" : input
        let reader = try TokenStreamReader(source: try openInput(input), name: name)
        var h = reader.header
        h.kind = .samples
        h.fields = [.confidence, .unmaskStep]
        if h.special.mask < 0 { h.special = ck.special }
        h.attributes["tool"] = "refine"
        var o = RefineOptions()
        o.blockSize = blockSize; o.sampler = sampler; o.steps = steps; o.nucleus = nucleus; o.seed = seed; o.batch = batch; o.kvCache = !noKVCache
        o.dtype = dtype
        do {
            let weights = noKVCache ? nil : try prepareInference(ck, dtype: dtype)
            try withSamplesOutput(path: output, header: h, allowTerminal: force) { w in
                try runRefine(checkpoint: ck, options: o, reader: reader, writer: w, source: name, weights: weights)
            }
        } catch let e as SamplingUsageError { throw ValidationError(e.description) }
    }
}

Runtime.prepareTool()
Refine.main()
