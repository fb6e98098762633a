// `score gen`: generative perplexity of samples under a scorer (register `Gen.self` in Score's subcommands).
import ArgumentParser
import BlockDiffusion
import Foundation
import ToolOptions

struct Gen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gen",
        abstract: "Generative perplexity, entropy, distinct-n and NFEs of a samples stream under a scorer model.",
        discussion: """
        The scorer is an AR checkpoint (train --algo ar) or an external command speaking the line protocol of docs/scorer-protocol.md (e.g. pipelines/scorers/hf_gpt2.py, the papers' GPT-2 Large scorer). Samples made with another tokenizer than the checkpoint's are decoded with -t and re-tokenised with --scorer-tokenizer.

        Long samples are scored in sliding windows (context = the checkpoint's length, --stride default context/2); EOS targets are not scored.

        With the samples' tokenizer (-t), also the word-order metrics: order_gain (the scorer's PPL of the sample's words in K seeded shuffles ÷ its PPL of the same words in order, mean over shuffles and samples; real text is well above 1, word salad ≈ 1) and repeat_rate (immediate word repeats).

        --shard i/n scores the samples with id % n == i and adds to the JSON what score merge needs to rebuild the whole run's report exactly (every metric, distinct-n included; see docs/training.md).

        JSON on stdout: gen_ppl (mean of per-sample PPLs), gen_ppl_tokens (token-weighted), nfe, entropy, degenerate, distinct_1..4, length_median, length_max, stages, order_gain, repeat_rate; with --per-sample also "per_sample": [...]. A table on stderr. See docs/score-gen.md.

        Examples:
          score gen --scorer runs/ar/best.safetensors -i samples.tok > gen.json
          score gen --scorer runs/ar/best.safetensors -t tokenizer.json -i samples.tok
          score gen --scorer runs/ar/best.safetensors --dtype bf16 -i samples.tok
          score gen --scorer ar.safetensors -t ours.json \\
                    --scorer-tokenizer gpt2.json -i samples.tok
          score gen -t tokenizer.json --per-sample -i samples.tok \\
                    --scorer-cmd 'python3 pipelines/scorers/hf_gpt2.py'
          score gen --scorer ar.safetensors -i samples.tok --shard 0/4 > gen.0.json
        """)

    @Option(help: "AR checkpoint: train's safetensors, a reference AR state_dict or an HF directory (docs/checkpoints.md).") var scorer: String?
    @OptionGroup(title: "Scorer checkpoint facts (a reference state_dict without them)") var scorerFacts: CheckpointFactOptions
    @Option(name: .customLong("scorer-cmd"), help: "Scorer command, run with /bin/sh -c (docs/scorer-protocol.md).") var scorerCommand: String?
    @Option(name: [.customShort("t"), .customLong("tokenizer")], help: "tokenizer.json of the samples.") var tokenizer: String?
    @Option(name: .customLong("scorer-tokenizer"), help: "tokenizer.json of the scorer.") var scorerTokenizer: String?
    @Option(name: .shortAndLong, help: "Samples stream ('-' = stdin).") var input: String = "-"
    @Flag(name: .customLong("per-sample"), help: "Add per-sample rows (id, tokens, nll, ppl, entropy, nfe, degenerate) to the JSON.") var perSample = false
    @Option(parsing: .unconditional, help: "Sliding-window stride in tokens (checkpoint scorer; default: context/2).") var stride: Int?
    @Option(name: .customLong("max-tokens"), parsing: .unconditional, help: "Score only the first N scorer tokens of each sample (checkpoint scorer).") var maxTokens: Int?
    @Option(name: .customLong("scorer-timeout"), parsing: .unconditional, help: "Seconds to wait for each answer of the scorer command once it has every pending request (0 = no limit; default 600); then it is killed.") var scorerTimeout: Double?
    @Option(name: .customLong("order-shuffles"), parsing: .unconditional, help: "Shuffles of each sample's words for the order gain (needs -t; 0 = off).") var orderShuffles: Int = 3
    @Option(name: .customLong("order-seed"), parsing: .unconditional, help: "Seed of the word shuffles.") var orderSeed: UInt64 = 1
    @Option(help: "Weights of the checkpoint scorer: fp32 (its own forward), or bf16 (the inference engine over bf16 matrices, as draft/refine --dtype bf16: half the weight memory; accumulation fp32).")
    var dtype: WeightDType = .fp32
    @Option(name: .customLong("degenerate-below"), parsing: .unconditional, help: "Entropy (nats) under which a sample counts as degenerate.") var degenerateBelow: Double = 4
    @OptionGroup var sharding: ShardOptions

    /// The library's options, without the tokenizers (loaded in run()).
    func options() -> GenerativeOptions {
        var o = GenerativeOptions()
        o.stride = stride; o.maxTokens = maxTokens; o.degenerateBelow = degenerateBelow
        o.orderShuffles = orderShuffles; o.orderSeed = orderSeed; o.dtype = dtype
        if let t = scorerTimeout { o.scorerTimeout = t }
        if sharding.shard != nil, let s = try? Shard.parse(sharding.shard) { o.shard = s }
        return o
    }

    func validate() throws {
        guard (scorer == nil) != (scorerCommand == nil) else { throw ValidationError("give exactly one of --scorer CKPT and --scorer-cmd CMD") }
        if scorerTimeout != nil && scorerCommand == nil { throw ValidationError("--scorer-timeout applies to --scorer-cmd") }
        if scorerCommand != nil && (scorerFacts.algo != nil || scorerFacts.config != nil || !scorerFacts.sets.isEmpty) {
            throw ValidationError("--algo, --config and --set describe a --scorer checkpoint; a scorer command needs none")
        }
        if scorerCommand != nil && tokenizer == nil {
            throw ValidationError("--scorer-cmd sends text: give the samples' tokenizer with -t TOKENIZER.json to decode them")
        }
        try usage { try options().validate(command: scorerCommand != nil) }
    }

    func run() throws {
        var o = options()
        o.scorerOverrides = try scorerFacts.overrides(blockSize: nil, ids: nil)
        if let t = tokenizer { o.samplesTokenizer = try BPETokenizer.load(path: t) }
        if let t = scorerTokenizer { o.scorerTokenizer = try BPETokenizer.load(path: t) }
        if isatty(STDERR_FILENO) != 0 {
            o.progress = { n in FileHandle.standardError.write(Data("\rscored \(n) samples".utf8)) }
        }
        let reader = try TokenStreamReader(path: input)
        let choice: GenerativeScorerChoice = scorer.map { .checkpoint($0) } ?? .command(scorerCommand!)
        let report = try GenerativeScoring.run(input: reader, scorer: choice, options: o)
        if o.progress != nil { FileHandle.standardError.write(Data("\r".utf8)) }
        guard !report.samples.isEmpty || (report.shard?.records ?? 0) > 0 else { throw ToolError("\(input) holds no samples; nothing to score") }
        FileHandle.standardError.write(Data(report.table.utf8))
        print(report.json(perSample: perSample))
    }
}
