// remask: mask a fraction γ of the non-prompt tokens of a samples stream (snapshot / posthoc / random).
// All logic is in BlockDiffusion/Sampling/Refine.swift; this file only parses arguments.
import ArgumentParser
import BlockDiffusion
import Foundation

extension RemaskPolicy: ExpressibleByArgument {}

struct Remask: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remask",
        abstract: "Re-mask the lowest-confidence (or random) fraction of each sample.",
        discussion: """
        snapshot: the ⌊γ·n⌋ lowest confidences recorded when the tokens were unmasked (n = non-prompt tokens; \
        ties by position). posthoc: confidences from a fresh forward over the finished sequence (needs -m). \
        random: uniform. Prompt tokens are never re-masked; masked positions get confidence 0 and step 0.

        Example:
          draft -m ck.safetensors -n 4 --length 1024 -o - | remask --ratio 0.25 | refine -m ck.safetensors --block-size 1024 -o refined.tok
        """)

    @Option(help: "snapshot, posthoc or random.")
    var policy: RemaskPolicy = .snapshot

    @Option(help: "Fraction γ in [0, 1] of the non-prompt tokens to mask.")
    var ratio: Double

    @Option(name: [.customShort("m"), .customLong("model")], help: "Checkpoint (needed by --policy posthoc).")
    var model: String?

    // Facts a reference checkpoint may lack (CheckpointOverrides).
    @Option(help: "Algorithm of a checkpoint that does not record it: ar, mdlm, bd3, sedd.") var algo: String?
    @Option(help: "Named size (tiny, small, cpu) for a checkpoint without a config.") var config: String?
    @Option(name: .customLong("set"), help: "Checkpoint fact key=value (n_heads, length, mask_id, bos_id, eos_id, …); repeatable.") var sets: [String] = []
    @Option(name: .customLong("block-size"), help: "Block size of a bd3 checkpoint that does not record it.") var blockSize: Int?
    @Option(help: "Seed for --policy random.")
    var seed: UInt64 = 0

    @Option(name: [.short, .long], help: "Input samples stream ('-' = stdin).")
    var input: String = "-"

    @Option(name: [.short, .long], help: "Output stream ('-' = stdout).")
    var output: String = "-"

    @Flag(help: "Write binary output even to a terminal.")
    var force = false

    func validate() throws {
        guard ratio >= 0 && ratio <= 1 else { throw ValidationError("--ratio must be in [0, 1] (got \(ratio))") }
        if policy == .posthoc && model == nil { throw ValidationError("--policy posthoc needs -m CHECKPOINT") }
    }

    func run() throws {
        let ck: SamplingCheckpoint?
        do {
            let overrides = try CheckpointOverrides.parse(algo: algo, blockSize: blockSize, config: config, sets: sets)
            ck = try model.map { try SamplingCheckpoint.open(path: $0, overrides: overrides) }
        } catch let e as UsageError { throw ValidationError(e.description) }
        let reader = try TokenStreamReader(source: try openInput(input), name: input == "-" ? "stdin" : input)
        var h = reader.header
        h.attributes["tool"] = "remask"
        do {
            try withSamplesOutput(path: output, header: h, allowTerminal: force) { w in
                try runRemask(policy: policy, ratio: ratio, seed: seed, checkpoint: ck, reader: reader, writer: w,
                              source: input == "-" ? "stdin" : input)
            }
        } catch let e as SamplingUsageError { throw ValidationError(e.description) }
    }
}

Runtime.prepareTool()
Remask.main()
