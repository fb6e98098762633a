// remask: mask a fraction γ of the non-prompt tokens of a samples stream (snapshot / posthoc / random).
// All logic is in BlockDiffusion/Sampling/Refine.swift; this file only parses arguments.
import ArgumentParser
import BlockDiffusion
import Foundation

extension RemaskPolicy: ExpressibleByArgument {}
extension WeightDType: ExpressibleByArgument {}

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

    @Option(help: "--policy posthoc: records of equal length per batched forward (default: as many as fit in half the free memory, at most 32; the scores do not depend on it).")
    var batch: Int?

    @Option(help: "--policy posthoc: weights of the forward, fp32 or bf16.")
    var dtype: WeightDType = .fp32

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
        if let batch, batch < 1 { throw ValidationError("--batch must be at least 1") }
    }

    func run() throws {
        let ck = try model.map { try SamplingCheckpoint.load(path: $0) }
        let reader = try TokenStreamReader(source: try openInput(input), name: input == "-" ? "stdin" : input)
        var h = reader.header
        h.attributes["tool"] = "remask"
        do {
            let weights = policy == .posthoc ? try ck.flatMap { try prepareInference($0, dtype: dtype) } : nil
            try withSamplesOutput(path: output, header: h, allowTerminal: force) { w in
                try runRemask(policy: policy, ratio: ratio, seed: seed, checkpoint: ck, reader: reader, writer: w,
                              source: input == "-" ? "stdin" : input, batch: batch, weights: weights)
            }
        } catch let e as SamplingUsageError { throw ValidationError(e.description) }
    }
}

Runtime.prepareTool()
Remask.main()
