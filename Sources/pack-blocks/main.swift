// pack-blocks: a documents stream -> fixed-length training rows (sequences streams), one per split.
// All logic is in BlockDiffusion/Packing/Packer.swift; this file only parses arguments.

import ArgumentParser
import BlockDiffusion
import Foundation
import ToolOptions

struct PackBlocks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pack-blocks",
        abstract: "Pack a tokenized documents stream into fixed-length training rows.",
        discussion: """
        Modes: wrap concatenates documents (each followed by EOS) and cuts rows of L tokens, dropping \
        the final partial row (the OpenWebText recipe); pad puts one document per row, truncated and \
        padded with PAD (EOS if the tokenizer has no PAD). --bos makes every row [BOS] + L-2 tokens + \
        [EOS] (the LM1B recipe). Documents are assigned to splits by a hash of their tokens and --seed, \
        and rows are shuffled with --seed: the same input and seed give the same bytes.

        Examples:
          pack-blocks -L 1024 --block-size 4 --block-size 16 -i owt.docs.tok \\
              --split train=0.98,valid=0.01,test=0.01 --out-prefix data/owt
          pack-blocks -L 128 --bos --mode pad -i lm1b.docs.tok -o lm1b.tok
        """)

    @Option(name: [.customShort("L"), .customLong("seq-len")], parsing: .unconditional, help: "Row length in tokens.")
    var seqLen: Int

    @Option(name: .customLong("block-size"), parsing: .unconditionalSingleValue, help: "A block size the rows will be trained with; L must be a multiple of each (repeatable).")
    var blockSizes: [Int] = []

    @Option(help: "wrap or pad.")
    var mode: PackMode = .wrap

    @Flag(help: "Make every row [BOS] + content + [EOS].")
    var bos = false

    @Option(help: "Split fractions, e.g. train=0.98,valid=0.01,test=0.01 (needs --out-prefix).")
    var split: String?

    @Option(name: .customLong("out-prefix"), help: "With --split: write PREFIX.NAME.tok for every split.")
    var outPrefix: String?

    @Option(name: [.short, .long], help: "Output stream without --split ('-' = stdout).")
    var output: String?

    @Option(name: [.short, .long], help: "Input documents stream ('-' = stdin).")
    var input: String = "-"

    @Option(parsing: .unconditional, help: "Seed for the split assignment and the row shuffle.")
    var seed: UInt64 = 0

    @Flag(name: .customLong("no-shuffle"), help: "Keep packing order and write rows as they are made (constant memory, streams through pipes).")
    var noShuffle = false

    @Option(parsing: .unconditional, help: "zstd compression level (1-19).")
    var level: Int32 = 3

    @Flag(help: "Write binary output even to a terminal.")
    var force = false

    func options() throws -> PackOptions {
        let splits = try split.map(parseSplits) ?? []
        return PackOptions(seqLen: seqLen, blockSizes: blockSizes, mode: mode, bos: bos, splits: splits, seed: seed,
                           shuffle: !noShuffle)
    }

    func validate() throws {
        try usage { try options().validate() }
        if split != nil {
            guard outPrefix != nil else { throw ValidationError("--split needs --out-prefix PREFIX (outputs PREFIX.NAME.tok)") }
            guard output == nil else { throw ValidationError("give either --split with --out-prefix, or -o, not both") }
        } else if outPrefix != nil {
            throw ValidationError("--out-prefix needs --split (e.g. --split train=0.98,valid=0.01,test=0.01)")
        }
        guard (1...19).contains(level) else { throw ValidationError("--level must be in 1...19 (got \(level))") }
    }

    func run() throws {
        let destination: PackDestination = outPrefix.map { .prefix($0) } ?? .single(output ?? "-")
        try runPackBlocks(options: try options(), input: input, destination: destination, level: level,
                          allowTerminal: force) { line in
            FileHandle.standardError.write(Data(("pack-blocks: " + line + "\n").utf8))
        }
    }
}

runTool(PackBlocks.self)
