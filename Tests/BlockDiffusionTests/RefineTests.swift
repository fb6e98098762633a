// refine: only masked positions change, no MASK left, NFE accumulates, stage history, global block,
// block-size and tokenizer refusals, refine | remask | refine chain, CLI exit codes (draft + refine).
import XCTest
@testable import BlockDiffusion

final class RefineTests: XCTestCase {
    func refine(_ ck: SamplingCheckpoint, _ bytes: [UInt8], block: Int?, seed: UInt64 = 3, batch: Int = 1,
                sampler: SamplerKind = .firstHitting) throws -> [TokenRecord] {
        var o = RefineOptions(); o.blockSize = block; o.seed = seed; o.batch = batch; o.sampler = sampler; o.steps = 10
        return try pipe(bytes) { r, w in try runRefine(checkpoint: ck, options: o, reader: r, writer: w) }
    }

    func testRefineFillsOnlyMasksAndAccumulates() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 41), blockSize: 4)
        var o = DraftOptions(); o.samples = 3; o.length = 16; o.blockSize = 4; o.entropyStop = false; o.seed = 9
        let drafts = try draftRecords(ck, o)
        let masked = try drafts.map { try remaskRecord($0, policy: .snapshot, ratio: 0.5, maskId: 22, seed: 0) }
        for (block, batch) in [(4, 1), (16, 2), (64, 3)] {
            let out = try refine(ck, try samplesStream(masked), block: block, batch: batch)
            XCTAssertEqual(out.map(\.id), masked.map(\.id))
            for (m, r) in zip(masked, out) {
                XCTAssertFalse(r.tokens.contains(22))
                let holes = m.tokens.indices.filter { m.tokens[$0] == 22 }
                XCTAssertEqual(holes.count, 7)   // ⌊0.5 · 15⌋
                for i in m.tokens.indices where !holes.contains(i) {
                    XCTAssertEqual(r.tokens[i], m.tokens[i]); XCTAssertEqual(r.confidence![i], m.confidence![i]); XCTAssertEqual(r.unmaskStep![i], m.unmaskStep![i])
                }
                XCTAssertEqual(r.nfe, m.nfe + 7, "first-hitting: one forward per filled token")
                XCTAssertEqual(Set(holes.map { r.unmaskStep![$0] }), Set((m.nfe + 1)...(m.nfe + 7)).map { UInt32($0) }.reduce(into: Set<UInt32>()) { $0.insert($1) })
                for i in holes { XCTAssert(r.confidence![i] > 0 && r.confidence![i] <= 1) }
                XCTAssertEqual(r.stages.count, 3)
                XCTAssert(r.stages[2].hasPrefix("refine B=\(block) sampler=first-hitting"), r.stages[2])
            }
            XCTAssertEqual(try refine(ck, try samplesStream(masked), block: block, batch: batch), out, "deterministic by seed")
        }
        // DDPM refine as well; then a refine | remask | refine chain keeps growing the history.
        let d = try refine(ck, try samplesStream(masked), block: 4, sampler: .ddpm)
        XCTAssert(d.allSatisfy { !$0.tokens.contains(22) })
        let again = try d.map { try remaskRecord($0, policy: .snapshot, ratio: 0.25, maskId: 22, seed: 0) }
        let twice = try refine(ck, try samplesStream(again), block: 16)
        XCTAssert(twice.allSatisfy { $0.stages.count == 5 && !$0.tokens.contains(22) })
        // Nothing masked: passes through with no NFE.
        let same = try refine(ck, try samplesStream(drafts), block: 4)
        XCTAssertEqual(same.map(\.tokens), drafts.map(\.tokens)); XCTAssertEqual(same.map(\.nfe), drafts.map(\.nfe))
    }

    func testRefusals() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 42), blockSize: 4)
        let r = TokenRecord(id: 0, tokens: [21, 22, 3, 22, 5, 6], confidence: [1, 0, 0.5, 0, 0.5, 0.5], unmaskStep: [0, 0, 1, 0, 2, 3],
                            nfe: 3, promptLength: 1, stages: [])
        XCTAssertThrowsError(try refine(ck, try samplesStream([r]), block: 4)) { XCTAssert($0 is UsageError, "\($0)") }
        XCTAssertEqual(try refine(ck, try samplesStream([r]), block: 3).first?.tokens.contains(22), false)
        XCTAssertThrowsError(try refine(ck, try samplesStream([r], fingerprint: 0x99), block: 3)) { e in
            XCTAssert(e is ToolError && "\(e)".contains("fingerprint"), "\(e)")
        }
        let ar = try loadCheckpoint(makeSamplingModel(samplingConfig(causal: true), seed: 43), blockSize: 1)
        XCTAssertThrowsError(try refine(ar, try samplesStream([r]), block: 3)) { XCTAssert("\($0)".contains("AR"), "\($0)") }
    }

    func testCLIPipelineAndExitCodes() throws {
        let ckPath = try saveCheckpoint(makeSamplingModel(samplingConfig(), seed: 44), blockSize: 4)
        let dir = NSTemporaryDirectory() + "bd3-cli-\(UUID().uuidString)/"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // Usage errors → 64.
        XCTAssertEqual(try runTool("draft", ["-m", ckPath, "-n", "1", "--length", "10", "--block-size", "4", "-o", dir + "x.tok"]).0, 64)
        XCTAssertEqual(try runTool("draft", ["-m", ckPath, "-n", "1", "--length", "8", "--max-length", "8", "-o", dir + "x.tok"]).0, 64)
        XCTAssertEqual(try runTool("draft", ["-m", ckPath, "-n", "1", "--length", "8", "--nucleus", "1.5", "-o", dir + "x.tok"]).0, 64)
        XCTAssertEqual(try runTool("draft", ["-m", ckPath, "-n", "1", "--length", "8", "--shard", "2/2", "-o", dir + "x.tok"]).0, 64)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "x.tok"))
        // Corrupt checkpoint → 1 with the reason, no output left behind.
        let bad = dir + "bad.safetensors"
        let good = try Data(contentsOf: URL(fileURLWithPath: ckPath))
        try good.prefix(good.count / 2).write(to: URL(fileURLWithPath: bad))
        let (code, err) = try runTool("draft", ["-m", bad, "-n", "1", "--length", "8", "-o", dir + "y.tok"])
        XCTAssertEqual(code, 1); XCTAssert(err.contains("truncated") || err.contains("corrupt"), err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "y.tok"))
        // draft → remask → refine through files/pipes.
        XCTAssertEqual(try runTool("draft", ["-m", ckPath, "-n", "2", "--length", "16", "--block-size", "4", "--nucleus", "0.9", "--seed", "5", "-o", dir + "d.tok"]).0, 0)
        let drafts = try TokenStreamReader(source: try openInput(dir + "d.tok")).readAll()
        XCTAssertEqual(drafts.count, 2)
        XCTAssertEqual(try runTool("remask", ["--ratio", "0.5", "-i", dir + "d.tok", "-o", dir + "m.tok"]).0, 0)
        XCTAssertEqual(try runTool("refine", ["-m", ckPath, "--block-size", "3", "-i", dir + "m.tok", "-o", dir + "r.tok"]).0, 64, "3 does not divide 16")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "r.tok"))
        XCTAssertEqual(try runTool("refine", ["-m", ckPath, "--block-size", "16", "-i", dir + "m.tok", "-o", dir + "r.tok"]).0, 0)
        let refined = try TokenStreamReader(source: try openInput(dir + "r.tok")).readAll()
        XCTAssertEqual(refined.count, 2)
        for (d, r) in zip(drafts, refined) {
            XCTAssertFalse(r.tokens.contains(22)); XCTAssertEqual(r.stages.count, 3); XCTAssertEqual(r.nfe, d.nfe + 7)
        }
        // Tokenizer mismatch → 1.
        let other = try saveCheckpoint(makeSamplingModel(samplingConfig(), seed: 44), blockSize: 4, fingerprint: 0x77)
        let (c2, e2) = try runTool("refine", ["-m", other, "-i", dir + "m.tok", "-o", dir + "r2.tok"])
        XCTAssertEqual(c2, 1); XCTAssert(e2.contains("fingerprint"), e2)
    }
}
