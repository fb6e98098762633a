// Options shared by several tools, declared once as ArgumentParser option groups and checked once by the
// library (each group's validate() calls the library's rule through `usage {}`).
//
//   CheckpointOptions   -m/--model --algo --config --set             draft, refine, score ppl
//   CheckpointFactOptions  --algo --config --set (without -m)           remask (-m optional)
//   SpecialIDOptions    --mask-id --bos-id --eos-id                  draft, refine (checkpoints without them)
//   SamplerOptions      --block-size --sampler --steps --nucleus --seed --batch --dtype --no-kv-cache --no-fold-store   draft, refine
//   ShardOptions        --shard i/n                                  draft
//   InputOptions        -i/--input                                   refine, remask
//   OutputOptions       -o/--output --force                          draft, refine, remask
//   DecodingOptions     --unmask --trace --visual --margins          draft, refine
//
// Every numeric option is parsed `.unconditional`ly so that a negative number reaches validation and is
// refused with the real reason (by default ArgumentParser reads "-1" as a flag and says the value is missing).
import ArgumentParser
import BlockDiffusion

extension SamplerKind: ExpressibleByArgument {}
extension SEDDPredictor: ExpressibleByArgument {}
extension RemaskPolicy: ExpressibleByArgument {}
extension PackMode: ExpressibleByArgument {}
extension DocumentFormat: ExpressibleByArgument {}
extension Algorithm: ExpressibleByArgument {}
extension WeightDType: ExpressibleByArgument {}

/// The checkpoint a tool reads, and the facts a reference checkpoint may lack (docs/checkpoints.md).
public struct CheckpointOptions: ParsableArguments {
    @Option(name: [.customShort("m"), .customLong("model")], help: "Checkpoint: a safetensors file (train's, or a reference state_dict) or a Hugging Face model directory (docs/checkpoints.md).")
    public var model: String

    @OptionGroup(title: "Checkpoint facts") public var facts: CheckpointFactOptions

    public init() {}

    /// Opens the checkpoint through the library's front door; `blockSize` is the tool's --block-size (a
    /// fact for a checkpoint without one), `ids` the special ids given on the command line, `dtype` the cached
    /// engine's weights (bf16: converted while loading, SamplingCheckpoint.open).
    public func open(blockSize: Int? = nil, ids: SpecialIDOptions? = nil, dtype: WeightDType = .fp32) throws -> SamplingCheckpoint {
        let overrides = try facts.overrides(blockSize: blockSize, ids: ids)
        var ck: SamplingCheckpoint?
        try usage { ck = try SamplingCheckpoint.open(path: model, overrides: overrides, dtype: dtype) }
        return ck!
    }
}

/// --algo, --config, --set: what a reference state_dict does not record (CheckpointOverrides).
public struct CheckpointFactOptions: ParsableArguments {
    @Option(help: "Algorithm of a checkpoint that does not record it: ar, mdlm, bd3, sedd.")
    public var algo: String?
    @Option(help: "Named size (tiny, small, cpu) for a checkpoint without a config.")
    public var config: String?
    @Option(name: .customLong("set"), help: "Checkpoint fact key=value (n_heads, length, mask_id, bos_id, eos_id, …); repeatable.")
    public var sets: [String] = []

    public init() {}

    public func validate() throws { _ = try overrides(blockSize: nil, ids: nil) }

    public func overrides(blockSize: Int?, ids: SpecialIDOptions?) throws -> CheckpointOverrides {
        var extra = sets
        if let ids {
            for (k, v) in [("mask_id", ids.maskId), ("bos_id", ids.bosId), ("eos_id", ids.eosId)] { if let v { extra.append("\(k)=\(v)") } }
        }
        var o = CheckpointOverrides()
        try usage { o = try CheckpointOverrides.parse(algo: algo, blockSize: blockSize, config: config, sets: extra) }
        return o
    }
}

/// Special-token ids for a checkpoint whose metadata lacks them.
public struct SpecialIDOptions: ParsableArguments {
    @Option(name: .customLong("mask-id"), parsing: .unconditional, help: "Mask id if the checkpoint metadata lacks it.")
    public var maskId: Int32?
    @Option(name: .customLong("bos-id"), parsing: .unconditional, help: "BOS id if the checkpoint metadata lacks it.")
    public var bosId: Int32?
    @Option(name: .customLong("eos-id"), parsing: .unconditional, help: "EOS id if the checkpoint metadata lacks it.")
    public var eosId: Int32?

    public init() {}

    public func validate() throws {
        for (name, v) in [("--mask-id", maskId), ("--bos-id", bosId), ("--eos-id", eosId)] {
            if let v { try usage { try checkRange(v, 0...Int32.max, name, "a token id") } }
        }
    }
}

/// How masked positions are filled (draft, refine).
public struct SamplerOptions: ParsableArguments {
    @Option(name: .customLong("block-size"), parsing: .unconditional,
            help: "Block size L' (default: the checkpoint's; ≥ the length = one global block).")
    public var blockSize: Int?

    @Option(help: "first-hitting (one token per forward) or ddpm (--steps per block).")
    public var sampler: SamplerKind = .firstHitting

    @Option(parsing: .unconditional, help: "DDPM steps per block; for SEDD checkpoints the number of sampling steps T.")
    public var steps: Int = 1000

    @Option(parsing: .unconditional, help: "Nucleus (top-p) threshold in (0, 1]; 1 = off.")
    public var nucleus: Double = 1.0

    @Option(parsing: .unconditional, help: "Random seed.")
    public var seed: UInt64 = 0

    @Option(parsing: .unconditional, help: "Sequences per batched forward (default: as many as fit in half the free memory, at most 32 and -n; the samples do not depend on it).")
    public var batch: Int?

    @Option(help: "Weights of the sampling engine: fp32 or bf16 (half the memory and bytes per forward; accumulation stays fp32).")
    public var dtype: WeightDType = .fp32

    @Flag(name: .customLong("no-kv-cache"), help: "No KV cache: every forward runs the window of finished blocks + the current block (at most the model length) through the block-causal mask (the reference's kv_cache=False; slower, for comparison).")
    public var noKVCache = false

    @Flag(name: .customLong("no-fold-store"), help: "Store each finished block's keys/values with a forward of its own instead of folding it into the next block's first forward (same samples, one more forward per block; for comparison).")
    public var noFoldStore = false

    public init() {}

    public func validate() throws { try usage { try refineOptions.validate() } }

    /// The dtype to load the checkpoint at: bf16 only for the cached engine (the uncached path runs the fp32 model).
    public var loadDType: WeightDType { noKVCache ? .fp32 : dtype }

    /// The settings as refine's options (draft copies the same fields into DraftOptions).
    public var refineOptions: RefineOptions {
        var o = RefineOptions()
        o.blockSize = blockSize; o.sampler = sampler; o.steps = steps; o.nucleus = nucleus; o.seed = seed
        o.batch = batch; o.kvCache = !noKVCache; o.dtype = dtype; o.foldStore = !noFoldStore
        return o
    }

    /// Copies the sampler fields into draft's options.
    public func apply(to o: inout DraftOptions) {
        o.blockSize = blockSize; o.sampler = sampler; o.steps = steps; o.nucleus = nucleus; o.seed = seed
        o.batch = batch; o.kvCache = !noKVCache; o.dtype = dtype; o.foldStore = !noFoldStore
    }
}

/// One shard of the work: the items with id % n == i.
public struct ShardOptions: ParsableArguments {
    @Option(help: "Only the items with id % n == i (format i/n), e.g. 0/4 on the first of four machines.")
    public var shard: String?

    public init() {}

    public func validate() throws { _ = try parsed() }

    /// (0, 1) without --shard.
    public func parsed() throws -> (index: Int, count: Int) {
        guard let shard else { return (0, 1) }
        var r = (index: 0, count: 1)
        try usage { r = try parseShard(shard) }
        return r
    }
}

/// The token stream a tool reads.
public struct InputOptions: ParsableArguments {
    @Option(name: [.short, .long], help: "Input samples stream ('-' = stdin).")
    public var input: String = "-"

    public init() {}

    /// The name messages use for the input.
    public var name: String { input == "-" ? "stdin" : input }
}

/// The token stream a tool writes.
public struct OutputOptions: ParsableArguments {
    @Option(name: [.short, .long], help: "Output stream ('-' = stdout).")
    public var output: String = "-"

    @Flag(help: "Write binary output even to a terminal.")
    public var force = false

    public init() {}
}

/// Which masked positions each step fills, and what is shown or recorded per step (draft, refine).
public struct DecodingOptions: ParsableArguments {
    @Option(help: "Which masked positions a step fills: random (default, the reference), confidence, margin, entropy (k per step from --sampler: first-hitting 1, ddpm the block's masks over --steps), threshold:τ (all with top-1 p > τ, at least one), eb:γ (entropy-bounded).")
    public var unmask: String = "random"

    @Option(help: "Write one JSON line per sampling step (record, block, step, positions, confidence, nfe, tokens) to FILE.")
    public var trace: String?

    @Flag(help: "Redraw the block being denoised on the terminal (stderr); with -t as text.")
    public var visual = false

    @Flag(help: "Also record each token's snapshot margin (top-1 − top-2 probability; stream format v2) for remask --policy margin.")
    public var margins = false

    public init() {}

    public func validate() throws { _ = try parsed() }

    /// The library's decoding options (policy parsed, trace path checked).
    public func parsed() throws -> DecodeOptions {
        var d = DecodeOptions()
        try usage { d = try DecodeOptions(unmask: unmask, trace: trace, visual: visual) }
        return d
    }
}
