import Foundation
import XCTest
@testable import BlockDiffusion

private let vocab = 100
private let eos: Int32 = 99, bos: Int32 = 97, pad: Int32 = 98

private func docsHeader(pad padId: Int32 = pad, kind: StreamKind = .documents) -> StreamHeader {
    StreamHeader(kind: kind, vocabSize: vocab, tokenizerFingerprint: 42,
                 special: SpecialTokens(bos: bos, eos: eos, mask: 96, pad: padId), attributes: ["source": "unit"])
}

private func pack(_ docs: [[Int32]], _ options: PackOptions, header: StreamHeader = docsHeader()) throws -> Packer {
    let packer = try Packer(options: options, input: header)
    for d in docs { try packer.add(document: d) }
    packer.finish()
    return packer
}

final class PackTests: XCTestCase {
    // MARK: Layouts, hand-computed

    func testWrapLayout() throws {
        let p = try pack([[1, 2, 3], [4, 5], [6]], PackOptions(seqLen: 4))
        // Stream: 1 2 3 E 4 5 E 6 E -> two rows, the final E dropped.
        XCTAssertEqual(p.packedRows(split: 0), [[1, 2, 3, eos], [4, 5, eos, 6]])
        XCTAssertEqual(p.stats[0].rows, 2)
        XCTAssertEqual(p.stats[0].documents, 3)
        XCTAssertEqual(p.stats[0].droppedTokens, 1)
        XCTAssertEqual(p.stats[0].paddingTokens, 0)
    }

    func testWrapLayoutWithLongDocumentAndBOS() throws {
        let p = try pack([[1, 2, 3, 4, 5, 6, 7], [8]], PackOptions(seqLen: 5, bos: true))
        // Content 3 per row from: 1 2 3 4 5 6 7 E 8 E -> [1 2 3] [4 5 6] [7 E 8], E dropped.
        XCTAssertEqual(p.packedRows(split: 0), [[bos, 1, 2, 3, eos], [bos, 4, 5, 6, eos], [bos, 7, eos, 8, eos]])
        XCTAssertEqual(p.stats[0].droppedTokens, 1)
    }

    func testWideVocabularyRowsKeepTheirIds() throws {
        let header = StreamHeader(kind: .documents, vocabSize: 200_000, special: SpecialTokens(eos: 199_999))
        let docs: [[Int32]] = [[65535, 65536, 199_998], [70000]]
        let p = try pack(docs, PackOptions(seqLen: 3, seed: 1), header: header)
        XCTAssertEqual(p.packedRows(split: 0), [[65535, 65536, 199_998], [199_999, 70000, 199_999]])
        let narrow = try pack([[65535, 1, 2]], PackOptions(seqLen: 4), header: StreamHeader(kind: .documents, vocabSize: 65536, special: SpecialTokens(eos: 65535)))
        XCTAssertEqual(narrow.packedRows(split: 0), [[65535, 1, 2, 65535]])
    }

    func testPadLayout() throws {
        let p = try pack([[1, 2], [3, 4, 5], [6, 7, 8, 9, 10], []], PackOptions(seqLen: 4, mode: .pad))
        XCTAssertEqual(p.packedRows(split: 0), [[1, 2, eos, pad], [3, 4, 5, eos], [6, 7, 8, 9]])
        XCTAssertEqual(p.stats[0].paddingTokens, 1)
        XCTAssertEqual(p.stats[0].droppedTokens, 1)
        XCTAssertEqual(p.stats[0].truncatedDocuments, 1)
        XCTAssertEqual(p.stats[0].emptyDocuments, 1)
        XCTAssertEqual(p.stats[0].paddingFraction, 1.0 / 12.0, accuracy: 1e-12)
    }

    func testPadLayoutWithBOS() throws {
        let p = try pack([[1, 2], [3, 4, 5], [6, 7, 8, 9, 10]], PackOptions(seqLen: 5, mode: .pad, bos: true))
        XCTAssertEqual(p.packedRows(split: 0), [[bos, 1, 2, eos, pad], [bos, 3, 4, 5, eos], [bos, 6, 7, 8, eos]])
        XCTAssertEqual(p.stats[0].droppedTokens, 2)
        XCTAssertEqual(p.stats[0].paddingTokens, 1)
    }

    func testPadWithoutPadIdUsesEOS() throws {
        let p = try pack([[1]], PackOptions(seqLen: 4, mode: .pad), header: docsHeader(pad: -1))
        XCTAssertTrue(p.padFromEOS)
        XCTAssertEqual(p.packedRows(split: 0), [[1, eos, eos, eos]])
        XCTAssertEqual(p.outputHeader(split: 0).special.pad, eos)
    }

    func testOutputHeader() throws {
        let p = try pack([[1]], PackOptions(seqLen: 8, blockSizes: [4, 8], mode: .wrap, bos: true,
                                            splits: [SplitSpec(name: "train", fraction: 1)], seed: 5))
        let h = p.outputHeader(split: 0)
        XCTAssertEqual(h.kind, .sequences)
        XCTAssertEqual(h.vocabSize, vocab)
        XCTAssertEqual(h.tokenizerFingerprint, 42)
        XCTAssertEqual(h.attributes["seq_len"], "8")
        XCTAssertEqual(h.attributes["mode"], "wrap")
        XCTAssertEqual(h.attributes["bos"], "1")
        XCTAssertEqual(h.attributes["split"], "train")
        XCTAssertEqual(h.attributes["block_sizes"], "4,8")
        XCTAssertEqual(h.attributes["input.source"], "unit")
    }

    func testRefusesOtherKindsAndMissingSpecials() {
        XCTAssertThrowsError(try Packer(options: PackOptions(seqLen: 4), input: docsHeader(kind: .samples))) {
            XCTAssertTrue("\($0)".contains("'documents'"), "\($0)")
        }
        var noEOS = docsHeader(); noEOS.special.eos = -1
        XCTAssertThrowsError(try Packer(options: PackOptions(seqLen: 4), input: noEOS))
        var noBOS = docsHeader(); noBOS.special.bos = -1
        XCTAssertThrowsError(try Packer(options: PackOptions(seqLen: 4, bos: true), input: noBOS))
        XCTAssertNoThrow(try Packer(options: PackOptions(seqLen: 4), input: noBOS))
    }

    // MARK: Splits and shuffle

    /// Document i is `length` copies of token i+1, so every row token names its document.
    private func taggedDocs(_ count: Int) -> [[Int32]] {
        var rng = TestRNG(11)
        return (0..<count).map { Array(repeating: Int32($0 + 1), count: 1 + rng.below(9)) }
    }

    func testSplitsAreDeterministicAndNeverStraddle() throws {
        let docs = taggedDocs(3000)
        let splits = [SplitSpec(name: "train", fraction: 0.8), SplitSpec(name: "valid", fraction: 0.1),
                      SplitSpec(name: "test", fraction: 0.1)]
        let header = StreamHeader(kind: .documents, vocabSize: 5000, special: SpecialTokens(eos: 4999))
        let options = PackOptions(seqLen: 16, blockSizes: [4], splits: splits, seed: 7)
        let p = try pack(docs, options, header: header)
        let again = try pack(docs, options, header: header)
        var assigned: [Int] = []
        for (i, d) in docs.enumerated() {
            let s = p.splitIndex(of: d)
            XCTAssertEqual(s, again.splitIndex(of: d))
            XCTAssertEqual(s, p.splitIndex(of: Array(d)), "same content, same split")
            assigned.append(s)
            _ = i
        }
        // Roughly the asked fractions (deterministic, so not flaky).
        for (s, spec) in splits.enumerated() {
            let share = Double(assigned.filter { $0 == s }.count) / Double(docs.count)
            XCTAssertEqual(share, spec.fraction, accuracy: 0.03, spec.name)
        }
        // Every token of every row comes from a document assigned to that row's split.
        var content = 0
        for s in splits.indices {
            for row in p.rows(split: s) {
                for t in row where t != 4999 {
                    XCTAssertEqual(assigned[Int(t) - 1], s, "document \(t - 1) straddles splits")
                    content += 1
                }
            }
            XCTAssertEqual(p.stats[s].documents, assigned.filter { $0 == s }.count)
        }
        // Nothing lost: content tokens + EOS = rows + dropped.
        let total = docs.reduce(0) { $0 + $1.count + 1 }
        XCTAssertEqual(p.stats.reduce(0) { $0 + $1.tokens + $1.droppedTokens }, total)
        XCTAssertLessThanOrEqual(content, docs.reduce(0) { $0 + $1.count })
        // Another seed moves some documents.
        let other = try pack(docs, PackOptions(seqLen: 16, splits: splits, seed: 8), header: header)
        XCTAssertTrue(docs.contains { other.splitIndex(of: $0) != p.splitIndex(of: $0) })
    }

    /// pack-blocks' row order is part of its output: pinned to Tests/scripts/rng_golden.py (seed 1, split "all").
    func testShuffleOrderGolden() throws {
        let p = try pack((1...12).map { [Int32($0)] }, PackOptions(seqLen: 2, seed: 1))
        XCTAssertEqual(p.packedRows(split: 0), (1...12).map { [Int32($0), eos] })
        XCTAssertEqual(p.shuffledOrder(split: 0), [8, 4, 3, 9, 1, 6, 10, 7, 5, 11, 0, 2])
        XCTAssertEqual(p.rows(split: 0).map { $0[0] }, [9, 5, 4, 10, 2, 7, 11, 8, 6, 12, 1, 3])
    }

    func testShuffleIsADeterministicPermutation() throws {
        let docs = taggedDocs(500)
        let header = StreamHeader(kind: .documents, vocabSize: 5000, special: SpecialTokens(eos: 4999))
        func bytes(seed: UInt64) throws -> ([UInt8], Packer) {
            let p = try pack(docs, PackOptions(seqLen: 8, seed: seed), header: header)
            let sink = MemorySink()
            try p.write(split: 0, to: sink)
            return (sink.bytes, p)
        }
        let (a, p) = try bytes(seed: 1)
        let (b, _) = try bytes(seed: 1)
        let (c, _) = try bytes(seed: 2)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
        let shuffled = p.rows(split: 0), packed = p.packedRows(split: 0)
        XCTAssertNotEqual(shuffled, packed)
        XCTAssertEqual(shuffled.sorted { $0.lexicographicallyPrecedes($1) }, packed.sorted { $0.lexicographicallyPrecedes($1) })
        // The written stream holds exactly the shuffled rows, ids 0..<n.
        let reader = try TokenStreamReader(source: MemorySource(a))
        XCTAssertEqual(reader.header.kind, .sequences)
        let records = try reader.readAll()
        XCTAssertEqual(records.map(\.tokens), shuffled)
        XCTAssertEqual(records.map(\.id), (0..<UInt64(shuffled.count)).map { $0 })
    }

    func testNoShuffleStreamsRowsInPackingOrder() throws {
        let docs = taggedDocs(300)
        let dir = try makeTempDir("noshuffle")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeDocs(docs, to: dir + "/docs.tok")
        let options = PackOptions(seqLen: 8, splits: try parseSplits("a=0.5,b=0.5"), shuffle: false)
        try runPackBlocks(options: options, input: dir + "/docs.tok", destination: .prefix(dir + "/o"))
        let header = StreamHeader(kind: .documents, vocabSize: 5000, special: SpecialTokens(bos: 4998, eos: 4999))
        let expected = try pack(docs, options, header: header)
        for (i, name) in ["a", "b"].enumerated() {
            let reader = try TokenStreamReader(path: "\(dir)/o.\(name).tok")
            XCTAssertEqual(reader.header.attributes["shuffled"], "0")
            XCTAssertEqual(try reader.readAll().map(\.tokens), expected.packedRows(split: i))
        }
    }

    // MARK: Validation

    func testValidation() throws {
        XCTAssertNoThrow(try PackOptions(seqLen: 256, blockSizes: [4, 8, 16]).validate())
        XCTAssertThrowsError(try PackOptions(seqLen: 100, blockSizes: [4, 8]).validate()) {
            XCTAssertTrue("\($0)".contains("multiple of --block-size 8"), "\($0)")
        }
        XCTAssertThrowsError(try PackOptions(seqLen: 0).validate())
        XCTAssertThrowsError(try PackOptions(seqLen: 2, bos: true).validate())
        XCTAssertThrowsError(try PackOptions(seqLen: 8, blockSizes: [0]).validate())
        func splitsError(_ text: String) -> Bool {
            do { try PackOptions(seqLen: 8, splits: try parseSplits(text)).validate(); return false } catch { return error is UsageError }
        }
        XCTAssertFalse(splitsError("train=0.98,valid=0.01,test=0.01"))
        XCTAssertTrue(splitsError("train=0.9,valid=0.2"))
        XCTAssertTrue(splitsError("train=1.1,valid=-0.1"))
        XCTAssertTrue(splitsError("train=1,valid=0"))
        XCTAssertTrue(splitsError("train=0.5,train=0.5"))
        XCTAssertTrue(splitsError("train"))
        XCTAssertTrue(splitsError("tr/ain=1"))
        XCTAssertTrue(splitsError("train=nan"))
    }

    // MARK: In-process end to end

    func testRunPackBlocksWritesEverySplit() throws {
        let dir = try makeTempDir("pack")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let input = dir + "/docs.tok"
        try writeDocs(taggedDocs(400), to: input)
        var lines: [String] = []
        let stats = try runPackBlocks(options: PackOptions(seqLen: 8, splits: try parseSplits("train=0.8,valid=0.1,test=0.1")),
                                      input: input, destination: .prefix(dir + "/out"), log: { lines.append($0) })
        XCTAssertEqual(directoryEntries(dir), ["docs.tok", "out.test.tok", "out.train.tok", "out.valid.tok"])
        XCTAssertEqual(lines.count, 3)
        for s in stats {
            let reader = try TokenStreamReader(source: try openInput(dir + "/out.\(s.split).tok"))
            XCTAssertEqual(reader.header.attributes["split"], s.split)
            XCTAssertEqual(try reader.readAll().count, s.rows)
        }
    }

    // MARK: The executable

    private func packBlocksBinary() throws -> String {
        var candidates: [URL] = []
        if let dir = ProcessInfo.processInfo.environment["BD3_BIN_DIR"] { candidates.append(URL(fileURLWithPath: dir)) }
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        candidates.append(Bundle(for: PackTests.self).bundleURL.deletingLastPathComponent())
        candidates.append(URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "/")
                            .deletingLastPathComponent())
        for dir in candidates {
            let path = dir.appendingPathComponent("pack-blocks").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        XCTFail("pack-blocks executable not found next to the tests (looked in \(candidates.map(\.path))); run `swift build` first")
        throw XCTSkip("no binary")
    }

    private func run(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try packBlocksBinary())
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        let errPipe = Pipe()
        process.standardError = errPipe
        try process.run()
        let err = errPipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: err, as: UTF8.self))
    }

    private func writeDocs(_ docs: [[Int32]], to path: String, kind: StreamKind = .documents) throws {
        let out = try OutputFile(path: path)
        let writer = try TokenStreamWriter(sink: out, header: StreamHeader(kind: kind, vocabSize: 5000,
                                           special: SpecialTokens(bos: 4998, eos: 4999)))
        for (i, d) in docs.enumerated() { try writer.write(TokenRecord(id: UInt64(i), tokens: d)) }
        try writer.finish()
        try out.commit()
    }

    func testCLISucceedsAndIsDeterministic() throws {
        let dir = try makeTempDir("cli-ok")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeDocs(taggedDocs(300), to: dir + "/docs.tok")
        let args = ["-L", "16", "--block-size", "4", "--block-size", "8", "--bos", "-i", dir + "/docs.tok",
                    "--split", "train=0.9,valid=0.1", "--seed", "3", "--out-prefix"]
        let first = try run(args + [dir + "/a"])
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertTrue(first.stderr.contains("train:") && first.stderr.contains("valid:"), first.stderr)
        let second = try run(args + [dir + "/b"])
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertEqual(directoryEntries(dir), ["a.train.tok", "a.valid.tok", "b.train.tok", "b.valid.tok", "docs.tok"])
        for name in ["train", "valid"] {
            XCTAssertEqual(FileManager.default.contents(atPath: "\(dir)/a.\(name).tok"),
                           FileManager.default.contents(atPath: "\(dir)/b.\(name).tok"))
        }
        let single = try run(["-L", "16", "-i", dir + "/docs.tok", "-o", dir + "/all.tok"])
        XCTAssertEqual(single.status, 0, single.stderr)
        let reader = try TokenStreamReader(source: try openInput(dir + "/all.tok"))
        XCTAssertEqual(reader.header.attributes["split"], "all")
        XCTAssertTrue(try reader.readAll().allSatisfy { $0.tokens.count == 16 })
    }

    func testCLIUsageErrorsExit64() throws {
        let dir = try makeTempDir("cli-usage")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeDocs(taggedDocs(10), to: dir + "/docs.tok")
        let input = ["-i", dir + "/docs.tok"]
        let cases: [[String]] = [
            ["-L", "100", "--block-size", "8", "-o", dir + "/x.tok"],                        // not a multiple
            ["-L", "16", "--split", "train=0.9,valid=0.2", "--out-prefix", dir + "/x"],       // sum != 1
            ["-L", "16", "--split", "train=1.0,valid=0", "--out-prefix", dir + "/x"],         // zero fraction
            ["-L", "16", "--split", "train=1.0"],                                             // no prefix
            ["-L", "16", "--out-prefix", dir + "/x"],                                         // prefix without split
            ["-L", "16", "--mode", "zigzag", "-o", dir + "/x.tok"],                           // bad mode
            ["--block-size", "4", "-o", dir + "/x.tok"],                                      // no -L
        ]
        for args in cases {
            let result = try run(args + input)
            XCTAssertEqual(result.status, 64, "\(args): \(result.stderr)")
            XCTAssertFalse(result.stderr.isEmpty)
        }
        XCTAssertEqual(directoryEntries(dir), ["docs.tok"])
    }

    func testCLIBrokenPipeIsAnErrorNotAKill() throws {
        let dir = try makeTempDir("cli-pipe")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeDocs(taggedDocs(2000), to: dir + "/docs.tok")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try packBlocksBinary())
        process.arguments = ["-L", "8", "-i", dir + "/docs.tok", "-o", "-"]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        try out.fileHandleForReading.close()   // the "next command" exits at once
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .exit, "killed by SIGPIPE instead of reporting it")
        XCTAssertEqual(process.terminationStatus, 1, message)
        XCTAssertTrue(message.contains("pipe was closed"), message)
    }

    func testCLIRefusesToWriteBinaryToATerminal() throws {
        // A pseudo-terminal by hand (posix_openpt is not exported to Swift): unlock, then ask its number.
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        guard master >= 0 else { throw XCTSkip("no pseudo-terminal available") }
        defer { close(master) }
        var unlock: Int32 = 0, number: UInt32 = 0
        guard ioctl(master, 0x4004_5431 /* TIOCSPTLCK */, &unlock) == 0,
              ioctl(master, 0x8004_5430 /* TIOCGPTN */, &number) == 0 else {
            throw XCTSkip("cannot set up a pseudo-terminal")
        }
        let name = "/dev/pts/\(number)"
        let probe = open(name, O_RDWR | O_NOCTTY)
        XCTAssertEqual(isatty(probe), 1)
        close(probe)
        let slave = open(name, O_RDWR | O_NOCTTY)
        XCTAssertGreaterThanOrEqual(slave, 0)
        let dir = try makeTempDir("cli-tty")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeDocs(taggedDocs(5), to: dir + "/docs.tok")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try packBlocksBinary())
        process.arguments = ["-L", "8", "-i", dir + "/docs.tok"]
        process.standardOutput = FileHandle(fileDescriptor: slave, closeOnDealloc: true)
        let err = Pipe()
        process.standardError = err
        try process.run()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 1, message)
        XCTAssertTrue(message.contains("terminal"), message)
    }

    func testCLIInterruptedLeavesNoTempFile() throws {
        let dir = try makeTempDir("cli-term")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try packBlocksBinary())
        process.arguments = ["-L", "8", "-i", "-", "-o", dir + "/out.tok"]
        let stdin = Pipe()   // kept open and empty: the tool blocks reading its input
        process.standardInput = stdin
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Wait until the output's temp file exists (the tool opens outputs before reading).
        var sawTemp = false
        for _ in 0..<1000 where !sawTemp {
            sawTemp = directoryEntries(dir).contains { $0.hasPrefix(".out.tok.tmp-") }
            if !sawTemp { usleep(10_000) }
        }
        XCTAssertTrue(sawTemp, "pack-blocks never created its temp file")
        process.terminate()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .uncaughtSignal)
        XCTAssertEqual(directoryEntries(dir), [], "SIGTERM must remove the temp file")
        try? stdin.fileHandleForWriting.close()
    }

    func testCLIRuntimeErrorsExit1AndLeaveNoOutput() throws {
        let dir = try makeTempDir("cli-fail")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeDocs(taggedDocs(200), to: dir + "/docs.tok")
        let good = FileManager.default.contents(atPath: dir + "/docs.tok")!
        // Truncated input.
        try good.prefix(good.count - 5).write(to: URL(fileURLWithPath: dir + "/cut.tok"))
        // Corrupted input (a flipped bit in the middle of the zstd frame).
        var flipped = [UInt8](good)
        flipped[flipped.count / 2] ^= 0x10
        try Data(flipped).write(to: URL(fileURLWithPath: dir + "/flip.tok"))
        // Wrong kind.
        try writeDocs(taggedDocs(5), to: dir + "/samples.tok", kind: .samples)
        let inputs = ["cut.tok", "flip.tok", "samples.tok", "missing.tok"]
        for name in inputs {
            let result = try run(["-L", "8", "-i", dir + "/" + name, "--split", "train=0.5,test=0.5", "--out-prefix", dir + "/out"])
            XCTAssertEqual(result.status, 1, "\(name): \(result.stderr)")
            XCTAssertFalse(result.stderr.isEmpty, name)
            let single = try run(["-L", "8", "-i", dir + "/" + name, "-o", dir + "/single.tok"])
            XCTAssertEqual(single.status, 1, "\(name): \(single.stderr)")
        }
        XCTAssertEqual(directoryEntries(dir), ["cut.tok", "docs.tok", "flip.tok", "samples.tok"],
                       "a failed run must leave no output or temp file")
    }
}
