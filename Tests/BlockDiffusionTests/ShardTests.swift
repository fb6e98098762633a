// `--shard i/n` for refine, remask and score ppl: the shards together give exactly the unsharded output
// (streams: the same records; score ppl: `score merge` of the shards' JSON = the unsharded report).
import XCTest
import Foundation
@testable import BlockDiffusion

final class ShardTests: XCTestCase {
    func testShardParsing() throws {
        XCTAssertEqual(try Shard.parse(nil), .whole)
        XCTAssertEqual(try Shard.parse("2/3"), Shard(index: 2, count: 3))
        for bad in ["3/3", "-1/2", "1", "a/b", "1/0", "1/2/3", ""] {
            XCTAssertThrowsError(try Shard.parse(bad), bad) { XCTAssertTrue($0 is UsageError) }
        }
        let s = Shard(index: 1, count: 3)
        XCTAssertEqual((0..<9).filter { s.contains($0) }, [1, 4, 7])
        XCTAssertTrue(s.contains(UInt64(10)))
    }

    /// Concatenated shard outputs, ordered by id, equal the unsharded output.
    func assertShardsEqualWhole(_ whole: [TokenRecord], _ run: (Shard) throws -> [TokenRecord], file: StaticString = #filePath, line: UInt = #line) throws {
        var union: [TokenRecord] = []
        for i in 0..<3 {
            let part = try run(Shard(index: i, count: 3))
            XCTAssertTrue(part.allSatisfy { Int($0.id % 3) == i }, file: file, line: line)
            union += part
        }
        union.sort { $0.id < $1.id }
        XCTAssertEqual(union.map(\.id), whole.map(\.id), file: file, line: line)
        XCTAssertEqual(union.map(\.tokens), whole.map(\.tokens), file: file, line: line)
        XCTAssertEqual(union.map(\.confidence), whole.map(\.confidence), file: file, line: line)
        XCTAssertEqual(union.map(\.stages), whole.map(\.stages), file: file, line: line)
    }

    func testRemaskAndRefineShardsEqualWholeRun() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 41), blockSize: 4)
        var o = DraftOptions(); o.samples = 7; o.length = 16; o.blockSize = 4; o.entropyStop = false; o.seed = 5
        let drafts = try samplesStream(try draftRecords(ck, o))
        for policy in [RemaskPolicy.random, .snapshot] {
            func remask(_ s: Shard) throws -> [TokenRecord] {
                try pipe(drafts) { r, w in try runRemask(policy: policy, ratio: 0.5, seed: 3, checkpoint: nil, reader: r, writer: w, shard: s) }
            }
            try assertShardsEqualWhole(try remask(.whole), remask)
        }
        let masked = try samplesStream(try pipe(drafts) { r, w in
            try runRemask(policy: .snapshot, ratio: 0.5, seed: 0, checkpoint: nil, reader: r, writer: w)
        })
        func refine(_ s: Shard) throws -> [TokenRecord] {
            var ro = RefineOptions(); ro.blockSize = 4; ro.seed = 3; ro.steps = 10; ro.batch = 2; ro.shard = s
            return try pipe(masked) { r, w in try runRefine(checkpoint: ck, options: ro, reader: r, writer: w) }
        }
        let whole = try refine(.whole)
        XCTAssertEqual(whole.count, 7)
        try assertShardsEqualWhole(whole, refine)
    }

    /// score ppl over 3 shards + score merge = the unsharded report (NLL, tokens, sequences, every Var. NELBO),
    /// for an MC NELBO (bd3 L'=4 with draws and two clip intervals), an exact NLL (AR) and SEDD's score-entropy NELBO
    /// (per-batch generators like the others).
    func testScorePPLShardsMergeToWholeReport() throws {
        let dir = TinyRun.tempDir("shard-ppl")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = dir + "/test.tok"
        try TinyRun.writeStream(data, rows: TinyRun.rows(22))     // 22 rows, batch 4: 6 batches, the last short
        for algo in [Algorithm.bd3, .ar, .sedd] {
            var r = TinyRun.request(dir: dir, data: data, valid: nil, algo: algo, steps: 3)
            r.runDir = dir + "/\(algo.rawValue)"
            let (t, _) = try TrainSetup.make(r)
            _ = try t.run(runDir: r.runDir, metrics: nil) { _ in }
            let (m, info, d) = try Perplexity.load(checkpoint: r.runDir + "/last.safetensors", data: data, batch: 4)
            var o = PerplexityOptions(); o.batch = 4; o.samples = 3; o.clips = [.base, ClipInterval(0.45, 0.95)]
            let whole = Perplexity.evaluate(model: m, info: info, data: d, options: o)
            var reports: [(name: String, text: String)] = []
            for i in [2, 0, 1] {   // any order
                o.shard = Shard(index: i, count: 3)
                try Perplexity.checkShard(o, sequences: d.count, algorithm: info.algorithm)
                reports.append(("shard\(i)", Perplexity.evaluate(model: m, info: info, data: d, options: o).json))
            }
            let merged = try ScoreMerge.merge(reports)
            XCTAssertEqual(merged.nll, whole.nll, accuracy: 1e-12 * whole.nll, "\(algo)")
            XCTAssertEqual(merged.tokens, whole.tokens); XCTAssertEqual(merged.sequences, whole.sequences)
            XCTAssertEqual(merged.sequences, 22); XCTAssertEqual(merged.samples, whole.samples); XCTAssertEqual(merged.exact, whole.exact)
            XCTAssertEqual(merged.interval, whole.interval); XCTAssertEqual(merged.blockSize, whole.blockSize)
            XCTAssertEqual(merged.varNELBO.map(\.0), whole.varNELBO.map(\.0))
            for (a, b) in zip(merged.varNELBO, whole.varNELBO) { XCTAssertEqual(a.1, b.1, accuracy: 1e-12 * abs(b.1), "\(algo) \(a.0)") }
            XCTAssertEqual(merged.note, whole.note)
            XCTAssertEqual(whole.note != nil, algo == .sedd, "only SEDD's estimate carries the note on its generators")
            // Refusals: a missing shard, a shard twice, a report without sums, a shard with no batches.
            XCTAssertThrowsError(try ScoreMerge.merge(Array(reports.prefix(2)))) { XCTAssertTrue("\($0)".contains("missing shard 1/3"), "\($0)") }
            XCTAssertThrowsError(try ScoreMerge.merge(reports + [reports[0]])) { XCTAssertTrue("\($0)".contains("twice"), "\($0)") }
            XCTAssertThrowsError(try ScoreMerge.merge([("x", "{\"nll\": 1}")])) { XCTAssertTrue($0 is ToolError) }
            // Shards of another test stream or another checkpoint.
            var other = d.tokens
            other[5] = other[5] == 1 ? 2 : 1
            o.shard = Shard(index: 1, count: 3)
            let otherData = SequenceData(header: d.header, length: d.length, tokens: other)
            let foreign = ("other", Perplexity.evaluate(model: m, info: info, data: otherData, options: o).json)
            XCTAssertThrowsError(try ScoreMerge.merge([reports[0], foreign, reports[2]])) { XCTAssertTrue("\($0)".contains("another test stream"), "\($0)") }
            let moved = ("moved", reports[0].text.replacingOccurrences(of: "step 3", with: "step 4"))
            XCTAssertNotEqual(moved.1, reports[0].text)
            XCTAssertThrowsError(try ScoreMerge.merge([moved, reports[1], reports[2]])) { XCTAssertTrue("\($0)".contains("another checkpoint"), "\($0)") }
            o.shard = Shard(index: 6, count: 7)
            XCTAssertThrowsError(try Perplexity.checkShard(o, sequences: d.count, algorithm: info.algorithm)) { XCTAssertTrue($0 is UsageError) }
        }
    }
}

final class ShardCLITests: TinyRunTestCase {
    /// Exit codes of the new options: a malformed --shard or --precision is a usage error (64); score merge of an
    /// incomplete set of shards is a runtime error (1) naming the missing shard; a complete set prints one report.
    func testShardAndPrecisionExitCodes() throws {
        let train = try cliBinary("train"), score = try cliBinary("score")
        let bad = try runCLI(train, ["--data", trainPath, "--precision", "fp16", "-o", dir + "/r"])
        XCTAssertEqual(bad.code, 64, bad.err); XCTAssertTrue(bad.err.contains("--precision must be fp32 or bf16"), bad.err)
        for tool in ["refine", "remask"] {
            let r = try runCLI(try cliBinary(tool), ["-m", "x.safetensors", "--ratio", "0.5", "--shard", "2/2"].filter { tool == "remask" || $0 != "--ratio" && $0 != "0.5" })
            XCTAssertEqual(r.code, 64, "\(tool): \(r.err)"); XCTAssertTrue(r.err.contains("--shard must be i/n"), r.err)
        }
        // A tiny checkpoint, two shards, merge.
        var req = TinyRun.request(dir: dir, data: trainPath, valid: nil, algo: .ar, steps: 2)
        req.runDir = dir + "/ar"
        let (t, _) = try TrainSetup.make(req)
        _ = try t.run(runDir: req.runDir, metrics: nil) { _ in }
        let ck = req.runDir + "/last.safetensors"
        XCTAssertEqual(try runCLI(score, ["ppl", "-m", ck, "-i", trainPath, "--batch", "2", "--shard", "3/4"]).code, 0)
        let none = try runCLI(score, ["ppl", "-m", ck, "-i", trainPath, "--batch", "2", "--shard", "4/5"])
        XCTAssertEqual(none.code, 64, none.err); XCTAssertTrue(none.err.contains("has no batches"), none.err)
        var paths: [String] = []
        for i in 0..<2 {
            let r = try runCLI(score, ["ppl", "-m", ck, "-i", trainPath, "--batch", "2", "--shard", "\(i)/2"])
            XCTAssertEqual(r.code, 0, r.err)
            paths.append(dir + "/p\(i).json")
            try r.out.write(toFile: paths[i], atomically: true, encoding: .utf8)
        }
        let whole = try runCLI(score, ["ppl", "-m", ck, "-i", trainPath, "--batch", "2"])
        let merged = try runCLI(score, ["merge"] + paths)
        XCTAssertEqual(merged.code, 0, merged.err)
        let a = try JSONSerialization.jsonObject(with: Data(whole.out.utf8)) as! [String: Any]
        let b = try JSONSerialization.jsonObject(with: Data(merged.out.utf8)) as! [String: Any]
        XCTAssertEqual(a["nll"] as! Double, b["nll"] as! Double, accuracy: 1e-12)
        XCTAssertEqual(a["tokens"] as? Int, b["tokens"] as? Int)
        let missing = try runCLI(score, ["merge", paths[1]])
        XCTAssertEqual(missing.code, 1, missing.err); XCTAssertTrue(missing.err.contains("missing shard 0/2"), missing.err)
    }
}
