// score: evaluate models and samples. `score ppl` is the likelihood evaluation (test PPL, BPD, Var-NELBO).
import ArgumentParser
import BlockDiffusion
import Foundation

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score a model on token streams.",
        subcommands: [PPL.self, Gen.self])
}

struct PPL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppl",
        abstract: "Test perplexity (NELBO; exact for AR and L'=1), bits per token and Var. NELBO.",
        discussion: """
        JSON on stdout (ppl, nll, bpd, tokens, var_nelbo, …), a table on stderr. Works on any packed sequences stream made with the checkpoint's tokenizer (zero-shot), if the block size divides its length.

        Example:
          score ppl -m runs/bd3-4/best.safetensors -i owt.test.tok \\
                --samples 4 --clip 0.45,0.95 --clip 0.001,1
        """)

    @Option(name: .shortAndLong, help: "Checkpoint: a safetensors file (train's, or a reference state_dict) or a Hugging Face model directory (docs/checkpoints.md).") var model: String
    @Option(name: .shortAndLong, help: "Test sequences (pack-blocks output).") var input: String
    @Option(help: "Monte-Carlo draws of t per block (diffusion NELBO).") var samples: Int = 1
    @Option(help: "Sequences per batch.") var batch: Int = 8
    @Option(help: "Clip interval 'a,b' whose Var. NELBO to report (repeatable).") var clip: [String] = []
    @Option(help: "Random seed.") var seed: UInt64 = 1
    @Option(help: "Evaluate a bd3 checkpoint at this block size L' (must divide the sequence length; default: the checkpoint's, the draft size of a mixed-scale model).") var blockSize: Int?

    // Facts a reference checkpoint may lack (CheckpointOverrides).
    @Option(help: "Algorithm of a checkpoint that does not record it: ar, mdlm, bd3, sedd.") var algo: String?
    @Option(help: "Named size (tiny, small, cpu) for a checkpoint without a config.") var config: String?
    @Option(name: .customLong("set"), help: "Checkpoint fact key=value (n_heads, length, mask_id, bos_id, eos_id, …); repeatable.") var sets: [String] = []

    func run() throws {
        guard samples >= 1, batch >= 1 else { throw ValidationError("--samples and --batch must be ≥ 1") }
        var o = PerplexityOptions()
        o.samples = samples; o.batch = batch; o.seed = seed; o.blockSize = blockSize
        do {
            o.clips = try clip.map { try TrainSetup.parseInterval($0) }
            let overrides = try CheckpointOverrides.parse(algo: algo, blockSize: nil, config: config, sets: sets)
            let (m, info, data) = try Perplexity.load(checkpoint: model, data: input, batch: batch, blockSize: blockSize, overrides: overrides)
            let r = Perplexity.evaluate(model: m, info: info, data: data, options: o)
            FileHandle.standardError.write(Data(r.table.utf8))
            print(r.json)
        } catch let e as UsageError { throw ValidationError(e.description) }
    }
}

Runtime.prepareTool()
Score.main()
