// remask: mask a fraction γ of the non-prompt tokens of a samples stream (snapshot / posthoc / random).
// All logic is in BlockDiffusion/Sampling/Refine.swift; this file only parses arguments.
import ArgumentParser
import BlockDiffusion
import Foundation
import ToolOptions

struct Remask: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remask",
        abstract: "Re-mask the lowest-confidence (or random) fraction of each sample.",
        discussion: """
        snapshot: the ⌊γ·n⌋ lowest confidences recorded when the tokens were unmasked (n = non-prompt tokens; \
        ties by position). margin: the lowest recorded top-1 − top-2 margins (draft/refine --margins; \
        ties by position). posthoc: confidences from a fresh forward over the finished sequence (needs -m). \
        random: uniform. Prompt tokens are never re-masked; masked positions get confidence 0 and step 0.

        Examples:
          remask --ratio 0.25 -i drafts.tok -o masked.tok
          remask --policy posthoc -m ck.safetensors --ratio 0.25 -i drafts.tok \\
                 -o masked.tok
          draft -m ck.safetensors -n 4 --length 1024 -o - | remask --ratio 0.25 \\
                 | refine -m ck.safetensors --block-size 1024 -o refined.tok
        """)

    @Option(help: "snapshot, margin (needs a stream written with --margins), posthoc or random.")
    var policy: RemaskPolicy = .snapshot

    @Option(parsing: .unconditional, help: "Fraction γ in [0, 1] of the non-prompt tokens to mask.")
    var ratio: Double

    @Option(name: [.customShort("m"), .customLong("model")], help: "Checkpoint (needed by --policy posthoc).")
    var model: String?

    @OptionGroup(title: "Checkpoint facts (with -m)") var facts: CheckpointFactOptions
    @Option(name: .customLong("block-size"), parsing: .unconditional, help: "Block size of a bd3 checkpoint that does not record it.")
    var blockSize: Int?

    @Option(parsing: .unconditional, help: "--policy posthoc: records of equal length per batched forward (default: as many as fit in half the free memory, at most 32; the scores do not depend on it).")
    var batch: Int?

    @Option(help: "--policy posthoc: weights of the forward, fp32 or bf16.")
    var dtype: WeightDType = .fp32

    @Option(parsing: .unconditional, help: "Seed for --policy random.")
    var seed: UInt64 = 0

    @Option(parsing: .unconditional, help: "Grow each selected position into its ±k neighbours (nearest first) within the same ⌊γ·n⌋ budget: spans instead of isolated holes.")
    var dilate: Int = 0

    @OptionGroup var input: InputOptions
    @OptionGroup(title: "Output") var out: OutputOptions

    @OptionGroup var sharding: ShardOptions

    func validate() throws {
        try usage { try validateRemaskRatio(ratio) }
        guard dilate >= 0 else { throw ValidationError("--dilate must be at least 0 (got \(dilate))") }
        if policy == .posthoc && model == nil { throw ValidationError("--policy posthoc needs -m CHECKPOINT") }
        if let batch, batch < 1 { throw ValidationError("--batch must be at least 1") }
    }

    func run() throws {
        var part = Shard.whole
        try usage { part = try Shard.parse(sharding.shard) }
        var ck: SamplingCheckpoint?
        if let model {
            let overrides = try facts.overrides(blockSize: blockSize, ids: nil)
            try usage { ck = try SamplingCheckpoint.open(path: model, overrides: overrides, dtype: policy == .posthoc ? dtype : .fp32) }
        }
        let reader = try TokenStreamReader(source: try openInput(input.input), name: input.name)
        try requireSamplesStream(reader.header, source: input.name, tool: "remask")
        var h = reader.header
        h.attributes["tool"] = "remask"
        var weights: InferenceWeights?
        if policy == .posthoc, let ck { try usage { weights = try prepareInference(ck, dtype: dtype) } }
        try withSamplesOutput(path: out.output, header: h, allowTerminal: out.force) { w in
            try runRemask(policy: policy, ratio: ratio, seed: seed, checkpoint: ck, reader: reader, writer: w,
                          source: input.name, dilate: dilate, shard: part, batch: batch, weights: weights)
        }
    }
}

runTool(Remask.self)
