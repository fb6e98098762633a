// remask: exact ⌊γ·n⌋ count, lowest snapshot confidences with the position tie-break, prompt never masked,
// kept values untouched, random determinism, posthoc from a fresh full forward, refusals; CLI exit codes.
import XCTest
@testable import BlockDiffusion

func samplesStream(_ records: [TokenRecord], fields: TokenFields = [.confidence, .unmaskStep], fingerprint: UInt64 = 0xABCD) throws -> [UInt8] {
    let sink = MemorySink()
    let h = StreamHeader(kind: .samples, vocabSize: 23, tokenizerFingerprint: fingerprint, special: testSpecial, fields: fields)
    let w = try TokenStreamWriter(sink: sink, header: h)
    for r in records { try w.write(r) }
    try w.finish()
    return sink.bytes
}

func pipe(_ bytes: [UInt8], _ body: (TokenStreamReader, TokenStreamWriter) throws -> Void) throws -> [TokenRecord] {
    let reader = try TokenStreamReader(source: MemorySource(bytes))
    let sink = MemorySink()
    let w = try TokenStreamWriter(sink: sink, header: reader.header)
    try body(reader, w)
    try w.finish()
    return try TokenStreamReader(source: MemorySource(sink.bytes)).readAll()
}

/// Path of a built executable next to the test bundle (swift test builds every product).
func toolPath(_ name: String) -> String {
    var dir = Bundle.main.bundleURL
    for _ in 0..<3 {
        let p = dir.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: p) { return p }
        dir = dir.deletingLastPathComponent()
    }
    return Bundle(for: RemaskTests.self).bundleURL.deletingLastPathComponent().appendingPathComponent(name).path
}

/// Runs a tool; returns (exit status, stderr).
@discardableResult
func runTool(_ name: String, _ args: [String], stdin: [UInt8]? = nil, stdoutFile: String? = nil) throws -> (Int32, String) {
    let p = cliProcess(toolPath(name), args)
    let err = Pipe(); p.standardError = err
    let inFile = NSTemporaryDirectory() + "bd3-in-\(UUID().uuidString)"
    if let stdin { FileManager.default.createFile(atPath: inFile, contents: Data(stdin)); p.standardInput = FileHandle(forReadingAtPath: inFile) }
    if let stdoutFile { FileManager.default.createFile(atPath: stdoutFile, contents: nil); p.standardOutput = FileHandle(forWritingAtPath: stdoutFile) }
    else { p.standardOutput = FileHandle.nullDevice }
    try p.run()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: e, as: UTF8.self))
}

final class RemaskTests: XCTestCase {
    let rec = TokenRecord(id: 7, tokens: [21, 5, 6, 7, 8, 9, 10, 11, 12, 13], confidence: [1, 1, 0.9, 0.2, 0.5, 0.2, 0.7, 0.1, 0.95, 0.3],
                          unmaskStep: [0, 0, 3, 1, 2, 5, 4, 8, 7, 6], nfe: 8, promptLength: 2, stages: ["draft B=4"])

    func testSnapshotLowestConfidencesExactCountTieByPosition() throws {
        let out = try remaskRecord(rec, policy: .snapshot, ratio: 0.5, maskId: 22, seed: 0)
        // n = 8 non-prompt tokens → 4 masked: 0.1 (7), 0.2 (3), 0.2 (5), 0.3 (9).
        XCTAssertEqual(out.tokens, [21, 5, 6, 22, 8, 22, 10, 22, 12, 22])
        XCTAssertEqual(out.confidence!, [1, 1, 0.9, 0, 0.5, 0, 0.7, 0, 0.95, 0])
        XCTAssertEqual(out.unmaskStep!, [0, 0, 3, 0, 2, 0, 4, 0, 7, 0])
        XCTAssertEqual(out.stages, ["draft B=4", "remask policy=snapshot ratio=0.5 masked=4"])
        XCTAssertEqual(out.nfe, 8); XCTAssertEqual(out.promptLength, 2)
        // Tie-break: with ratio 0.25 → 2 masked: 0.1 at 7, then the lower-position 0.2 (3), not 5.
        XCTAssertEqual(try remaskRecord(rec, policy: .snapshot, ratio: 0.25, maskId: 22, seed: 0).tokens.indices.filter { try! remaskRecord(rec, policy: .snapshot, ratio: 0.25, maskId: 22, seed: 0).tokens[$0] == 22 }, [3, 7])
        // γ = 1 masks every non-prompt token, never the prompt; γ = 0 changes nothing but the history.
        let all = try remaskRecord(rec, policy: .snapshot, ratio: 1, maskId: 22, seed: 0)
        XCTAssertEqual(Array(all.tokens[0..<2]), [21, 5]); XCTAssert(all.tokens[2...].allSatisfy { $0 == 22 })
        XCTAssertEqual(try remaskRecord(rec, policy: .snapshot, ratio: 0, maskId: 22, seed: 0).tokens, rec.tokens)
        // ⌊γ·n⌋: 0.3 · 8 = 2.4 → 2.
        XCTAssertEqual(try remaskRecord(rec, policy: .random, ratio: 0.3, maskId: 22, seed: 1).tokens.filter { $0 == 22 }.count, 2)
    }

    func testRandomIsSeededAndAvoidsThePrompt() throws {
        var seen = Set<[Int32]>()
        for seed in 0..<20 as Range<UInt64> {
            let a = try remaskRecord(rec, policy: .random, ratio: 0.5, maskId: 22, seed: seed)
            XCTAssertEqual(a, try remaskRecord(rec, policy: .random, ratio: 0.5, maskId: 22, seed: seed))
            XCTAssertEqual(a.tokens.filter { $0 == 22 }.count, 4)
            XCTAssertEqual(Array(a.tokens[0..<2]), [21, 5])
            seen.insert(a.tokens)
        }
        XCTAssertGreaterThan(seen.count, 5, "different seeds choose different positions")
    }

    func testStreamLevelRefusalsAndPosthoc() throws {
        let noConf = TokenRecord(id: 1, tokens: [21, 3, 4, 5], nfe: 0, promptLength: 1, stages: [])
        let plain = try samplesStream([noConf], fields: [])
        XCTAssertThrowsError(try pipe(plain) { r, w in try runRemask(policy: .snapshot, ratio: 0.5, seed: 0, checkpoint: nil, reader: r, writer: w) }) { e in
            XCTAssert(e is ToolError && "\(e)".contains("no confidences"), "\(e)")
        }
        XCTAssertThrowsError(try pipe(plain) { r, w in try runRemask(policy: .random, ratio: 1.5, seed: 0, checkpoint: nil, reader: r, writer: w) }) { e in
            XCTAssert(e is UsageError)
        }
        // Posthoc: confidences from a full forward over the finished sequence.
        let model = makeSamplingModel(samplingConfig(), seed: 31)
        let ck = try loadCheckpoint(model, blockSize: 4)
        let r8 = TokenRecord(id: 2, tokens: [21, 3, 4, 5, 6, 7, 8, 9], confidence: [Float](repeating: 0.5, count: 8),
                             unmaskStep: [UInt32](repeating: 1, count: 8), nfe: 7, promptLength: 1, stages: [])
        let out = try pipe(try samplesStream([r8])) { r, w in try runRemask(policy: .posthoc, ratio: 3.0 / 7, seed: 0, checkpoint: ck, reader: r, writer: w) }[0]
        let ref = DiT(config: model.config, maxBatch: 1, maxTokens: 8)
        ref.parameters.update(from: UnsafeBufferPointer(model.parameters))
        let logits = r8.tokens.withUnsafeBufferPointer { ref.forward(tokens: $0, batch: 1, layout: .full, sigma: nil, training: false, dropoutSeed: 0) }
        let scores = (1..<8).map { i in (subsProbabilities(logits: logits.baseAddress! + i * 23, count: 23, maskId: 22)[Int(r8.tokens[i])], i) }
        let expected = Set(scores.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }.prefix(3).map(\.1))
        XCTAssertEqual(Set(out.tokens.indices.filter { out.tokens[$0] == 22 }), expected)
        XCTAssertEqual(out.confidence!.filter { $0 == 0.5 }.count, 5, "kept tokens keep their snapshot confidence")
        // A checkpoint of another tokenizer is refused.
        XCTAssertThrowsError(try pipe(try samplesStream([r8], fingerprint: 0x1234)) { r, w in
            try runRemask(policy: .posthoc, ratio: 0.5, seed: 0, checkpoint: ck, reader: r, writer: w)
        }) { e in XCTAssert("\(e)".contains("fingerprint"), "\(e)") }
    }

    func testCLIExitCodes() throws {
        let stream = try samplesStream([rec])
        let noConf = try samplesStream([TokenRecord(id: 1, tokens: [21, 3], nfe: 0, promptLength: 1, stages: [])], fields: [])
        XCTAssertEqual(try runTool("remask", ["--ratio", "1.5"], stdin: stream).0, 64)
        XCTAssertEqual(try runTool("remask", ["--ratio", "-0.1"], stdin: stream).0, 64)
        XCTAssertEqual(try runTool("remask", ["--policy", "posthoc", "--ratio", "0.5"], stdin: stream).0, 64)
        let (code, err) = try runTool("remask", ["--ratio", "0.5"], stdin: noConf)
        XCTAssertEqual(code, 1); XCTAssert(err.contains("no confidences"), err)
        let outPath = NSTemporaryDirectory() + "bd3-remask-\(UUID().uuidString).tok"
        XCTAssertEqual(try runTool("remask", ["--ratio", "0.5", "-o", outPath], stdin: stream).0, 0)
        let got = try TokenStreamReader(source: try openInput(outPath)).readAll()
        XCTAssertEqual(got, [try remaskRecord(rec, policy: .snapshot, ratio: 0.5, maskId: 22, seed: 0)])
    }
}
