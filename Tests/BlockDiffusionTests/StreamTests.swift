import CZstd
import Foundation
import XCTest
@testable import BlockDiffusion

/// Deterministic generator for test data: the library's SplitMix64, with the (slightly biased, cheap) `below`
/// the generated test data was made with.
struct TestRNG {
    var base: SplitMix64
    init(_ seed: UInt64) { base = SplitMix64(seed: seed) }
    mutating func next() -> UInt64 { base.next() }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

func makeRecord(_ rng: inout TestRNG, id: UInt64, length: Int, vocab: Int, fields: TokenFields) -> TokenRecord {
    let tokens = (0..<length).map { _ in Int32(rng.below(vocab)) }
    let confidence = fields.contains(.confidence)
        ? (0..<length).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) } : nil
    let steps = fields.contains(.unmaskStep) ? (0..<length).map { _ in UInt32(truncatingIfNeeded: rng.next()) } : nil
    let stages = (0..<rng.below(3)).map { "stage \($0) é nfe=\(rng.below(1000))" }
    return TokenRecord(id: id, tokens: tokens, confidence: confidence, unmaskStep: steps,
                       nfe: rng.next(), promptLength: length == 0 ? 0 : rng.below(length + 1), stages: stages)
}

func makeHeader(kind: StreamKind = .samples, vocab: Int, fields: TokenFields) -> StreamHeader {
    StreamHeader(kind: kind, vocabSize: vocab, tokenizerFingerprint: 0xDEAD_BEEF_0123_4567,
                 special: SpecialTokens(bos: Int32(vocab - 3), eos: Int32(vocab - 3), mask: Int32(vocab - 1), pad: -1),
                 fields: fields, attributes: ["tool": "test", "seq_len": "256", "note": "ünïcode ✓"])
}

func encodeStream(_ header: StreamHeader, _ records: [TokenRecord], compress: Bool, flushEach: Bool = true) throws -> [UInt8] {
    let sink = MemorySink()
    let writer = try TokenStreamWriter(sink: sink, header: header, compress: compress, flushEachRecord: flushEach)
    for r in records { try writer.write(r) }
    try writer.finish()
    return sink.bytes
}

func decodeStream(_ bytes: [UInt8], maxRead: Int = Int.max) throws -> (StreamHeader, [TokenRecord]) {
    let reader = try TokenStreamReader(source: MemorySource(bytes, maxRead: maxRead))
    return (reader.header, try reader.readAll())
}

func assertSameRecords(_ a: [TokenRecord], _ b: [TokenRecord], file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (x, y) in zip(a, b) where !x.isBitwiseEqual(to: y) {
        XCTFail("record \(x.id) differs after the round trip", file: file, line: line)
        return
    }
}

final class StreamTests: XCTestCase {
    func testCRC32CKnownValueAndNaiveTwin() {
        XCTAssertEqual(crc32c(Array("123456789".utf8)), 0xE306_9283)
        var rng = TestRNG(7)
        for length in [0, 1, 7, 8, 9, 15, 16, 17, 100, 1000] {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            XCTAssertEqual(crc32c(bytes), crc32cNaive(bytes), "length \(length)")
            // Incremental = one shot.
            let cut = length / 3
            XCTAssertEqual(crc32c(Array(bytes[cut...]), crc: crc32c(Array(bytes[..<cut]))), crc32c(bytes))
        }
    }

    func testRoundTripEveryFieldCombinationWidthAndCompression() throws {
        var rng = TestRNG(1)
        let fieldSets: [TokenFields] = [[], [.confidence], [.unmaskStep], [.confidence, .unmaskStep]]
        for vocab in [2, 1000, 65536, 65537, 1 << 31] {
            for fields in fieldSets {
                for compress in [true, false] {
                    let header = makeHeader(vocab: vocab, fields: fields)
                    var records = [makeRecord(&rng, id: 0, length: 0, vocab: vocab, fields: fields),
                                   makeRecord(&rng, id: 1, length: 1, vocab: vocab, fields: fields)]
                    for i in 2..<6 { records.append(makeRecord(&rng, id: UInt64(i), length: rng.below(300), vocab: vocab, fields: fields)) }
                    // Extreme ids must survive the width choice.
                    records.append(TokenRecord(id: .max, tokens: [0, Int32(vocab - 1)],
                                               confidence: fields.contains(.confidence) ? [.nan, -.infinity] : nil,
                                               unmaskStep: fields.contains(.unmaskStep) ? [0, .max] : nil,
                                               nfe: .max, promptLength: 2, stages: [""]))
                    let bytes = try encodeStream(header, records, compress: compress)
                    let (h, back) = try decodeStream(bytes)
                    XCTAssertEqual(h, header)
                    assertSameRecords(records, back)
                    if !compress {
                        // Width decided from the header: check the raw token bytes of the 1-token record.
                        XCTAssertEqual(StreamFormat.tokenWidth(vocabSize: vocab), vocab <= 65536 ? 2 : 4)
                    }
                }
            }
        }
    }

    func testEmptyStreamRoundTrips() throws {
        for compress in [true, false] {
            let header = StreamHeader(kind: .documents, vocabSize: 10)
            let (h, back) = try decodeStream(try encodeStream(header, [], compress: compress))
            XCTAssertEqual(h, header)
            XCTAssertEqual(back, [])
        }
    }

    func testMillionTokenRecord() throws {
        var rng = TestRNG(3)
        for vocab in [100_000] {
            let header = makeHeader(vocab: vocab, fields: [.confidence, .unmaskStep])
            let record = makeRecord(&rng, id: 9, length: 1_000_000, vocab: vocab, fields: [.confidence, .unmaskStep])
            let bytes = try encodeStream(header, [record], compress: true)
            let (_, back) = try decodeStream(bytes)
            assertSameRecords([record], back)
        }
    }

    func testTokenWidthOnTheWire() throws {
        // A 1-token record in a raw stream: body = 28 fixed bytes + width.
        for (vocab, width) in [(65536, 2), (65537, 4)] {
            let header = StreamHeader(kind: .documents, vocabSize: vocab)
            let empty = try encodeStream(header, [], compress: false)
            let one = try encodeStream(header, [TokenRecord(id: 0, tokens: [Int32(vocab - 1)])], compress: false)
            XCTAssertEqual(one.count - empty.count, 1 + 4 + 28 + width + 4)
        }
    }

    func testOneByteReads() throws {
        var rng = TestRNG(4)
        let header = makeHeader(vocab: 300, fields: [.confidence])
        let records = (0..<20).map { makeRecord(&rng, id: UInt64($0), length: rng.below(50), vocab: 300, fields: [.confidence]) }
        for compress in [true, false] {
            let (h, back) = try decodeStream(try encodeStream(header, records, compress: compress), maxRead: 1)
            XCTAssertEqual(h, header)
            assertSameRecords(records, back)
        }
    }

    func testWriterFlushesEveryRecord() throws {
        let sink = MemorySink()
        let writer = try TokenStreamWriter(sink: sink, header: makeHeader(vocab: 100, fields: []))
        let afterHeader = sink.flushCount
        XCTAssertGreaterThan(afterHeader, 0, "the header must be flushed at once")
        // What has been written so far must already decode to the header and the first record.
        try writer.write(TokenRecord(id: 5, tokens: [1, 2, 3]))
        XCTAssertEqual(sink.flushCount, afterHeader + 1)
        let partial = try TokenStreamReader(source: MemorySource(sink.bytes))
        XCTAssertEqual(try partial.next()?.tokens, [1, 2, 3])
        XCTAssertThrowsError(try partial.next())   // no end marker yet: truncated, not "end"
    }

    /// A real pipe with a writer thread that waits until the reader has each record before writing
    /// the next: passes only if every record reaches the reader as soon as it is written.
    func testRealPipeDeliversEachRecordAtOnce() throws {
        Runtime.ignoreSIGPIPE()
        for compress in [true, false] {
            var fds: [Int32] = [0, 0]
            XCTAssertEqual(pipe(&fds), 0)
            let readEnd = fds[0], writeEnd = fds[1]
            let count = 30
            let received = DispatchSemaphore(value: 0)
            let writerDone = DispatchSemaphore(value: 0)
            final class Box: @unchecked Sendable { var error: Error?; var stalled = false }
            let box = Box()
            let header = makeHeader(vocab: 70000, fields: [.unmaskStep])
            Thread.detachNewThread {
                do {
                    let sink = FileSink(fd: writeEnd, name: "pipe", owns: true)
                    let writer = try TokenStreamWriter(sink: sink, header: header, compress: compress)
                    for i in 0..<count {
                        try writer.write(TokenRecord(id: UInt64(i), tokens: Array(repeating: Int32(i), count: i),
                                                     unmaskStep: Array(repeating: UInt32(i), count: i)))
                        if received.wait(timeout: .now() + 20) == .timedOut { box.stalled = true; break }
                    }
                    try writer.finish()
                } catch { box.error = error }
                writerDone.signal()
            }
            let reader = try TokenStreamReader(source: FileSource(fd: readEnd, name: "pipe", owns: true))
            var got = 0
            while let r = try reader.next() {
                XCTAssertEqual(r.id, UInt64(got))
                XCTAssertEqual(r.tokens, Array(repeating: Int32(got), count: got))
                got += 1
                received.signal()
            }
            writerDone.wait()
            XCTAssertNil(box.error)
            XCTAssertFalse(box.stalled, "a record did not reach the reader until later ones were written")
            XCTAssertEqual(got, count)
        }
    }

    func testTruncationAtEveryOffsetIsAnError() throws {
        var rng = TestRNG(5)
        let header = makeHeader(vocab: 1000, fields: [.confidence, .unmaskStep])
        let records = (0..<3).map { makeRecord(&rng, id: UInt64($0), length: 4 + $0, vocab: 1000, fields: [.confidence, .unmaskStep]) }
        for compress in [true, false] {
            let bytes = try encodeStream(header, records, compress: compress)
            XCTAssertNoThrow(try decodeStream(bytes))
            for cut in 0..<bytes.count {
                XCTAssertThrowsError(try decodeStream(Array(bytes[..<cut])),
                                     "a stream cut at \(cut) of \(bytes.count) (compressed: \(compress)) read without error") { error in
                    XCTAssertTrue(error is ToolError)
                }
            }
        }
    }

    func testErrorsAreSticky() throws {
        var bytes = try encodeStream(StreamHeader(kind: .documents, vocabSize: 10),
                                     [TokenRecord(id: 0, tokens: [1, 2]), TokenRecord(id: 1, tokens: [3])], compress: false)
        let headerSize = try encodeStream(StreamHeader(kind: .documents, vocabSize: 10), [], compress: false).count - 13
        bytes[headerSize + 10] ^= 1   // inside the first record
        let reader = try TokenStreamReader(source: MemorySource(bytes))
        XCTAssertThrowsError(try reader.next())
        XCTAssertThrowsError(try reader.next(), "a reader must not resume after corruption")
    }

    func testTruncationMessageNamesTheOffset() throws {
        let bytes = try encodeStream(StreamHeader(kind: .documents, vocabSize: 10),
                                     [TokenRecord(id: 0, tokens: [1, 2]), TokenRecord(id: 1, tokens: [3])], compress: false)
        XCTAssertThrowsError(try decodeStream(Array(bytes.dropLast(13)))) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("truncated"), message)
            XCTAssertTrue(message.contains("byte \(bytes.count - 13)"), message)
            XCTAssertTrue(message.contains("regenerate"), message)
        }
    }

    func testBitFlipsNeverGiveDifferentData() throws {
        var rng = TestRNG(6)
        let header = makeHeader(vocab: 5000, fields: [.confidence])
        let records = (0..<4).map { makeRecord(&rng, id: UInt64($0), length: 20, vocab: 5000, fields: [.confidence]) }
        for compress in [true, false] {
            let bytes = try encodeStream(header, records, compress: compress)
            var errors = 0
            for _ in 0..<300 {
                var damaged = bytes
                let bit = rng.below(bytes.count * 8)
                damaged[bit / 8] ^= UInt8(1 << (bit % 8))
                do {
                    let (h, back) = try decodeStream(damaged)
                    // Only acceptable if the flip changed nothing the format covers (e.g. unused zstd bits).
                    XCTAssertTrue(compress, "an uncompressed stream with a flipped bit \(bit) read without error")
                    XCTAssertEqual(h, header, "bit \(bit)")
                    assertSameRecords(records, back)
                } catch {
                    XCTAssertTrue(error is ToolError, "bit \(bit): \(error)")
                    errors += 1
                }
            }
            XCTAssertGreaterThan(errors, 250)
        }
    }

    func testUnknownVersionIsRefusedWithUpgradeHint() throws {
        var bytes = try encodeStream(StreamHeader(kind: .documents, vocabSize: 10), [], compress: false)
        bytes[8] = UInt8(StreamFormat.version + 1); bytes[9] = 0
        for candidate in [bytes, zstdCompress(bytes)] {
            XCTAssertThrowsError(try decodeStream(candidate)) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains("newer bd3"), message)
                XCTAssertTrue(message.contains("upgrade"), message)
            }
        }
    }

    func testConcatenatedStreams() throws {
        var rng = TestRNG(8)
        let header = makeHeader(vocab: 400, fields: [])
        var shard2Header = header
        shard2Header.attributes["shard"] = "2/2"
        let a = (0..<3).map { makeRecord(&rng, id: UInt64($0), length: 10, vocab: 400, fields: []) }
        let b = (3..<5).map { makeRecord(&rng, id: UInt64($0), length: 10, vocab: 400, fields: []) }
        for compress in [true, false] {
            let joined = try encodeStream(header, a, compress: compress) + encodeStream(shard2Header, b, compress: compress)
            let (h, back) = try decodeStream(joined)
            XCTAssertEqual(h, header)
            assertSameRecords(a + b, back)
            // A second part with another vocabulary cannot be joined.
            let other = try encodeStream(makeHeader(vocab: 500, fields: []), b, compress: compress)
            XCTAssertThrowsError(try decodeStream(try encodeStream(header, a, compress: compress) + other)) { error in
                XCTAssertTrue("\(error)".contains("different headers"), "\(error)")
            }
        }
    }

    func testTrailingGarbageIsAnError() throws {
        let header = StreamHeader(kind: .documents, vocabSize: 10)
        for compress in [true, false] {
            for garbage in [[0x00], [0x89], Array("hello".utf8)] as [[UInt8]] {
                let bytes = try encodeStream(header, [TokenRecord(id: 0, tokens: [1])], compress: compress) + garbage
                XCTAssertThrowsError(try decodeStream(bytes), "garbage \(garbage), compressed \(compress)")
            }
        }
    }

    func testNotAStreamAndEmptyInput() {
        XCTAssertThrowsError(try decodeStream([])) { XCTAssertTrue("\($0)".contains("empty"), "\($0)") }
        XCTAssertThrowsError(try decodeStream(Array("hello world\n".utf8))) {
            XCTAssertTrue("\($0)".contains("not a bd3 token stream"), "\($0)")
        }
    }

    func testKindRefusal() throws {
        let bytes = try encodeStream(StreamHeader(kind: .samples, vocabSize: 10), [], compress: true)
        let reader = try TokenStreamReader(source: MemorySource(bytes), name: "'x.tok'")
        XCTAssertThrowsError(try reader.require(kind: .documents, tool: "pack-blocks")) {
            XCTAssertTrue("\($0)".contains("'documents'") && "\($0)".contains("tokenize"), "\($0)")
        }
        XCTAssertNoThrow(try reader.require(kind: .samples, tool: "refine"))
        XCTAssertNoThrow(try reader.require(tokenizerFingerprint: 0, vocabSize: 10, tool: "score"))
        XCTAssertThrowsError(try reader.require(tokenizerFingerprint: 0, vocabSize: 11, tool: "score"))
        let fingerprinted = try TokenStreamReader(source: MemorySource(try encodeStream(
            StreamHeader(kind: .samples, vocabSize: 10, tokenizerFingerprint: 5), [], compress: false)))
        XCTAssertNoThrow(try fingerprinted.require(tokenizerFingerprint: 5, vocabSize: 10, tool: "score"))
        XCTAssertThrowsError(try fingerprinted.require(tokenizerFingerprint: 6, vocabSize: 10, tool: "score")) {
            XCTAssertTrue("\($0)".contains("another tokenizer"), "\($0)")
        }
    }

    func testWriterRejectsInconsistentRecords() throws {
        let writer = try TokenStreamWriter(sink: MemorySink(), header: makeHeader(vocab: 10, fields: [.confidence]))
        XCTAssertThrowsError(try writer.write(TokenRecord(id: 0, tokens: [1])))                        // confidence missing
        let w2 = try TokenStreamWriter(sink: MemorySink(), header: makeHeader(vocab: 10, fields: []))
        XCTAssertThrowsError(try w2.write(TokenRecord(id: 0, tokens: [10])))                           // out of vocabulary
        let w3 = try TokenStreamWriter(sink: MemorySink(), header: makeHeader(vocab: 10, fields: []))
        XCTAssertThrowsError(try w3.write(TokenRecord(id: 0, tokens: [-1])))
        let w4 = try TokenStreamWriter(sink: MemorySink(), header: makeHeader(vocab: 10, fields: []))
        XCTAssertThrowsError(try w4.write(TokenRecord(id: 0, tokens: [1], promptLength: 2)))
        XCTAssertThrowsError(try TokenStreamWriter(sink: MemorySink(),
                                                   header: StreamHeader(kind: .documents, vocabSize: 10, special: SpecialTokens(bos: 10))))
    }

    func testStreamsAreDeterministicAndFlushModesDecodeAlike() throws {
        var rng = TestRNG(9)
        let header = makeHeader(vocab: 300, fields: [.unmaskStep])
        let records = (0..<50).map { makeRecord(&rng, id: UInt64($0), length: 40, vocab: 300, fields: [.unmaskStep]) }
        XCTAssertEqual(try encodeStream(header, records, compress: true), try encodeStream(header, records, compress: true))
        let (_, back) = try decodeStream(try encodeStream(header, records, compress: true, flushEach: false))
        assertSameRecords(records, back)
    }

    /// The fixture was written by Tests/scripts/make_stream_fixture.py from docs/stream-format.md
    /// alone: the Swift reader must read it and the Swift writer must reproduce it byte for byte.
    func testFixtureMatchesDocumentedLayout() throws {
        let url = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/stream-v1.raw.tok")
        let fixture = try [UInt8](Data(contentsOf: url))
        let header = StreamHeader(kind: .samples, vocabSize: 70000, tokenizerFingerprint: 0x0123_4567_89AB_CDEF,
                                  special: SpecialTokens(bos: 69997, eos: 69997, mask: 69999, pad: -1),
                                  fields: [.confidence, .unmaskStep], attributes: ["tool": "fixture", "seq_len": "4"])
        let records = [
            TokenRecord(id: 7, tokens: [1, 69999, 65536], confidence: [0.5, 1.0, -2.0], unmaskStep: [3, 0, .max],
                        nfe: 12, promptLength: 1, stages: ["draft B=4", "remask conf<0.5"]),
            TokenRecord(id: 8, tokens: [], confidence: [], unmaskStep: [], nfe: 0, promptLength: 0, stages: []),
        ]
        let (h, back) = try decodeStream(fixture)
        XCTAssertEqual(h, header)
        XCTAssertEqual(back, records)
        XCTAssertEqual(try encodeStream(header, records, compress: false), fixture)
    }

    func testZstdCommandLineDecompresses() throws {
        guard let zstd = findExecutable("zstd") else { throw XCTSkip("zstd command not installed") }
        var rng = TestRNG(10)
        let header = makeHeader(vocab: 2000, fields: [.confidence, .unmaskStep])
        let records = (0..<10).map { makeRecord(&rng, id: UInt64($0), length: rng.below(200), vocab: 2000, fields: [.confidence, .unmaskStep]) }
        let compressed = try encodeStream(header, records, compress: true)
        let raw = try encodeStream(header, records, compress: false)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bd3-stream-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("s.tok")
        try Data(compressed).write(to: file)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: zstd)
        process.arguments = ["-d", "-c", "-q", file.path]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let decompressed = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        XCTAssertEqual([UInt8](decompressed), raw)
    }
}

func zstdCompress(_ bytes: [UInt8]) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.count))
    let n = out.withUnsafeMutableBytes { o in
        bytes.withUnsafeBytes { ZSTD_compress(o.baseAddress, o.count, $0.baseAddress, $0.count, 1) }
    }
    precondition(ZSTD_isError(n) == 0)
    return Array(out[..<n])
}

func findExecutable(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}
