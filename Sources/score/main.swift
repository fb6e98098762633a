// score: evaluate models and samples. `score ppl` is the likelihood evaluation (test PPL, BPD, Var-NELBO).
import ArgumentParser
import BlockDiffusion
import Foundation
import ToolOptions

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score a model on token streams.",
        discussion: """
        Examples:
          score ppl -m runs/bd3-4/best.safetensors -i owt.test.tok > ppl.json
          score gen --scorer runs/ar/best.safetensors -i samples.tok > gen.json
        """,
        subcommands: [PPL.self, Gen.self, Merge.self])
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
          score ppl -m runs/ar/best.safetensors -i owt.test.tok --dtype bf16
        """)

    @OptionGroup(title: "Checkpoint") var checkpoint: CheckpointOptions
    @Option(name: .shortAndLong, help: "Test sequences (pack-blocks output).") var input: String
    @Option(parsing: .unconditional, help: "Monte-Carlo draws of t per block (diffusion NELBO).") var samples: Int = 1
    @Option(parsing: .unconditional, help: "Sequences per batch.") var batch: Int = 8
    @Option(parsing: .unconditionalSingleValue, help: "Clip interval 'a,b' (0 ≤ a ≤ b ≤ 1) whose Var. NELBO to report (repeatable).") var clip: [String] = []
    @Option(parsing: .unconditional, help: "Random seed.") var seed: UInt64 = 1
    @Option(parsing: .unconditional, help: "Evaluate a bd3 checkpoint at this block size L' (must divide the sequence length; default: the checkpoint's, the draft size of a mixed-scale model).") var blockSize: Int?
    @OptionGroup var sharding: ShardOptions
    @Option(help: "Weights: fp32, or bf16 = the checkpoint's matrices rounded to bf16 (the values draft/refine --dtype bf16 compute with), scored by the same fp32 forward: the NLL of the bf16 model, not a faster run.")
    var dtype: WeightDType = .fp32

    func options() throws -> PerplexityOptions {
        var o = PerplexityOptions()
        o.samples = samples; o.batch = batch; o.seed = seed; o.blockSize = blockSize
        o.clips = try clip.map { try ClipInterval.parse($0) }
        o.shard = try Shard.parse(sharding.shard)
        o.dtype = dtype
        return o
    }

    func validate() throws { try usage { try options().validate() } }

    func run() throws {
        let o = try options()
        let overrides = try checkpoint.facts.overrides(blockSize: nil, ids: nil)
        var loaded: (DiT, CheckpointInfo, SequenceData)?
        try usage { loaded = try Perplexity.load(checkpoint: checkpoint.model, data: input, batch: batch, blockSize: blockSize, overrides: overrides) }
        let (m, info, data) = loaded!
        try usage { try Perplexity.checkShard(o, sequences: data.count, algorithm: info.algorithm) }
        let r = Perplexity.evaluate(model: m, info: info, data: data, options: o)
        FileHandle.standardError.write(Data(r.table.utf8))
        print(r.json)
    }
}

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge the JSON reports of the score ppl or score gen --shard i/n runs of one command into the report of the whole stream.",
        discussion: """
        score ppl: the aggregate (NLL, PPL, BPD, Var. NELBO) is recomputed from the shards' sums, not averaged. score gen: the shards' per-sample data is put back in stream order and every metric recomputed (distinct-n over all samples), equal to the unsharded report. Every shard 0..n-1 must be given once; reports of both kinds, of other inputs or other settings are refused.

        Examples:
          for i in 0 1 2 3; do score ppl -m ck.safetensors -i test.tok --shard $i/4 > ppl.$i.json; done
          score merge ppl.*.json > ppl.json
          for i in 0 1 2; do score gen --scorer ar.safetensors -i samples.tok --shard $i/3 > gen.$i.json; done
          score merge gen.0.json gen.1.json gen.2.json > gen.json
        """)

    @Argument(help: "The shards' JSON reports.") var reports: [String]

    func run() throws {
        guard !reports.isEmpty else { throw ValidationError("give the shards' JSON reports") }
        let texts = try reports.map { path -> (name: String, text: String) in
            guard let d = FileManager.default.contents(atPath: path) else { throw ToolError("cannot read \(path)") }
            return (path, String(decoding: d, as: UTF8.self))
        }
        var merged: MergedReport?
        try usage { merged = try ScoreMerge.mergeReports(texts) }
        let r = merged!
        FileHandle.standardError.write(Data(r.table.utf8))
        print(r.json)
    }
}

runTool(Score.self)
