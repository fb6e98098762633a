// `score gen --shard i/n` + `score merge` = the unsharded `score gen` report, every field, with the checkpoint
// scorer and with a scorer command; and the merges that must be refused.
import XCTest
import Foundation
@testable import BlockDiffusion

extension GenScoreTests {
    /// Texts with repeats, shared n-grams across samples (distinct-n over ALL samples differs from per-shard),
    /// varied lengths (the median), stage histories and NFEs; ids out of stream order.
    func shardTexts() -> (texts: [String], ids: [UInt64]) {
        (["the cat sat on the mat", "the cat sat on the the mat", "a dog a dog a dog", "zz", "on the mat the cat sat",
          "sat sat sat", "the mat", "one two three four five six seven"],
         [7, 2, 11, 4, 30, 9, 1, 6])
    }

    /// Merges shards n = 1, 2, 3 (given in reverse order) and checks the merged JSON equals the whole run's, field by field.
    func assertShardsMerge(_ run: (Shard?) throws -> GenerativeReport, file: StaticString = #filePath, line: UInt = #line) throws {
        let whole = try run(nil)
        XCTAssertNil(whole.shard, file: file, line: line)
        for perSample in [false, true] {
            let want = whole.json(perSample: perSample)
            let w = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(want.utf8)) as? [String: Any])
            XCTAssertNil(w["shard_data"], file: file, line: line)
            for n in 1...3 {
                var reports: [(name: String, text: String)] = []
                for i in (0..<n).reversed() {
                    let part = try run(Shard(index: i, count: n))
                    XCTAssertTrue(part.samples.allSatisfy { Int($0.id % UInt64(n)) == i }, file: file, line: line)
                    reports.append(("gen.\(i).json", part.json(perSample: perSample)))
                }
                guard case .gen(let merged, let p) = try ScoreMerge.mergeReports(reports) else { return XCTFail("not a gen merge", file: file, line: line) }
                XCTAssertEqual(p, perSample, file: file, line: line)
                let got = merged.json(perSample: p)
                let g = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(got.utf8)) as? [String: Any])
                XCTAssertEqual(Set(g.keys), Set(w.keys), "n = \(n)", file: file, line: line)
                for (k, v) in w { XCTAssertTrue(ScoreMerge.same(g[k], v), "n = \(n): \(k) is \(g[k] ?? "nil"), unsharded \(v)", file: file, line: line) }
                XCTAssertEqual(got, want, "n = \(n): the merged report is the unsharded one, byte for byte", file: file, line: line)
                XCTAssertEqual(merged.table, whole.table, file: file, line: line)
            }
        }
    }

    func testGenShardsMergeToWholeReportWithCheckpointScorer() throws {
        let tok = try byteTokenizer(merges: [("t", "h"), ("th", "e")])
        let path = try makeARCheckpoint(ctx: 16, fingerprint: tok.fingerprint, vocab: tok.vocabSize, eos: tok.eosId)
        let (texts, ids) = shardTexts()
        try assertShardsMerge { shard in
            var o = GenerativeOptions(); o.samplesTokenizer = tok; o.orderShuffles = 2; o.stride = 5; o.shard = shard
            o.degenerateBelow = 2.5
            return try GenerativeScoring.run(input: try byteStream(texts, tok: tok, ids: ids), scorer: .checkpoint(path), options: o)
        }
        // Sanity: the metrics that only a whole-set merge gets right are present and not trivial.
        var o = GenerativeOptions(); o.samplesTokenizer = tok; o.stride = 5
        let r = try GenerativeScoring.run(input: try byteStream(texts, tok: tok, ids: ids), scorer: .checkpoint(path), options: o)
        XCTAssertTrue(r.distinct[1] > 0 && r.distinct[1] < 1)
        XCTAssertTrue(r.orderGain.isFinite && r.repeatRate > 0)
    }

    func testGenShardsMergeToWholeReportWithScorerCommand() throws {
        let tok = try byteTokenizer()
        // NLL = the request line's length / 7 (not a whole number), 3 tokens: per-sample PPLs with every bit used.
        let cmd = try script("len7.sh", """
            while IFS= read -r line; do
              id=$(printf '%s' "$line" | sed -E 's/^[{]"id":([0-9]+),.*$/\\1/')
              printf '{"id":%s,"nll":%s,"tokens":3}\\n' "$id" "$(awk -v n=${#line} 'BEGIN { printf "%.17g", n / 7 }')"
            done
            """)
        let (texts, ids) = shardTexts()
        try assertShardsMerge { shard in
            var o = GenerativeOptions(); o.samplesTokenizer = tok; o.orderShuffles = 3; o.shard = shard
            return try GenerativeScoring.run(input: try byteStream(texts, tok: tok, ids: ids), scorer: .command(cmd), options: o)
        }
    }

    /// A job array's shards each score their own part (the output of draft/refine --shard i/n, only ids ≡ i): the merge
    /// equals the unsharded run over the parts concatenated in shard order, byte for byte.
    func testGenShardsOfTheirOwnPartsMergeToTheConcatenatedRun() throws {
        let tok = try byteTokenizer(merges: [("t", "h"), ("th", "e")])
        let path = try makeARCheckpoint(ctx: 16, fingerprint: tok.fingerprint, vocab: tok.vocabSize, eos: tok.eosId)
        let (texts, ids) = shardTexts()
        let recs = try byteStream(texts, tok: tok, ids: ids).readAll()
        func input(_ r: [TokenRecord]) throws -> TokenStreamReader {
            try stream(r, vocab: tok.vocabSize, fingerprint: tok.fingerprint, mask: tok.maskId, eos: tok.eosId)
        }
        var o = GenerativeOptions(); o.samplesTokenizer = tok; o.orderShuffles = 2; o.stride = 5
        for n in 2...3 {
            let parts = (0..<n).map { i in recs.filter { Int($0.id % UInt64(n)) == i } }
            let whole = try GenerativeScoring.run(input: try input(parts.flatMap { $0 }), scorer: .checkpoint(path), options: o)
            var reports: [(name: String, text: String)] = []
            for i in (0..<n).reversed() {
                var so = o; so.shard = Shard(index: i, count: n)
                reports.append(("part\(i)", try GenerativeScoring.run(input: try input(parts[i]), scorer: .checkpoint(path), options: so).json(perSample: true)))
            }
            guard case .gen(let merged, _) = try ScoreMerge.mergeReports(reports) else { return XCTFail() }
            XCTAssertEqual(merged.json(perSample: true), whole.json(perSample: true), "n = \(n)")
            // A part read by one shard and the whole stream by another: refused.
            var so = o; so.shard = Shard(index: 0, count: n)
            let full = ("full0", try GenerativeScoring.run(input: try input(recs), scorer: .checkpoint(path), options: so).json(perSample: true))
            XCTAssertThrowsError(try ScoreMerge.mergeReports(reports.filter { $0.name != "part0" } + [full])) { e in
                XCTAssertTrue("\(e)".contains("belong to other shards"), "\(e)")
            }
        }
    }

    /// Mixed kinds, missing and duplicate shards, other inputs, other settings, unsharded or edited reports: exit 1 (ToolError) with the reason.
    func testGenMergeRefusals() throws {
        let tok = try byteTokenizer()
        let cmd = try script("len.sh", """
            while IFS= read -r line; do
              id=$(printf '%s' "$line" | sed -E 's/^[{]"id":([0-9]+),.*$/\\1/')
              printf '{"id":%s,"nll":%s,"tokens":2}\\n' "$id" "${#line}"
            done
            """)
        let (texts, ids) = shardTexts()
        func run(_ shard: Shard?, texts: [String] = texts, shuffles: Int = 1, command: String = cmd) throws -> (name: String, text: String) {
            var o = GenerativeOptions(); o.samplesTokenizer = tok; o.orderShuffles = shuffles; o.shard = shard
            let r = try GenerativeScoring.run(input: try byteStream(texts, tok: tok, ids: ids), scorer: .command(command), options: o)
            return ("gen.\(shard?.description ?? "whole")", r.json(perSample: false))
        }
        let a = try run(Shard(index: 0, count: 2)), b = try run(Shard(index: 1, count: 2))
        func refused(_ reports: [(name: String, text: String)], _ says: String, line: UInt = #line) {
            XCTAssertThrowsError(try ScoreMerge.mergeReports(reports), line: line) { e in
                XCTAssertTrue(e is ToolError, "\(e)", line: line)
                XCTAssertTrue("\(e)".contains(says), "\(e) should say \(says)", line: line)
            }
        }
        XCTAssertNoThrow(try ScoreMerge.mergeReports([b, a]))
        refused([a], "missing shard 1/2")
        refused([a, b, a], "given twice")
        refused([a, try run(Shard(index: 1, count: 3))], "is one of 2")
        refused([a, ("ppl.json", #"{"ppl": 3.5, "nll": 1.25, "shard": "1/2", "sums": {"nll": 2.5, "count": 2, "batches": 1, "var": []}}"#)], "cannot merge a score gen report")
        XCTAssertThrowsError(try ScoreMerge.merge([a, b])) { XCTAssertTrue("\($0)".contains("is a score gen report"), "\($0)") }
        refused([a, try run(nil)], "without shard data")
        var other = texts; other[5] += " x"
        refused([a, try run(Shard(index: 1, count: 2), texts: other)], "another samples stream")
        refused([a, try run(Shard(index: 1, count: 2), shuffles: 2)], "order_shuffles")
        refused([a, try run(Shard(index: 1, count: 2), command: cmd + " ")], "scorer")
        // An edited report: a sample moved to the wrong shard, or data cut off.
        refused([a, (b.name, b.text.replacingOccurrences(of: #""id":"9""#, with: #""id":"8""#))], "does not belong to shard 1/2")
        refused([a, (b.name, b.text.replacingOccurrences(of: #""records":8"#, with: #""records":"8""#))], "'records' is malformed")
        // An empty shard still reports (so the set is complete) and merges.
        let few = Array(texts.prefix(2)), fewIDs: [UInt64] = [0, 1]
        var parts: [(name: String, text: String)] = []
        for i in 0..<3 {
            var o = GenerativeOptions(); o.samplesTokenizer = tok; o.shard = Shard(index: i, count: 3)
            let r = try GenerativeScoring.run(input: try byteStream(few, tok: tok, ids: fewIDs), scorer: .command(cmd), options: o)
            XCTAssertEqual(r.samples.count, i < 2 ? 1 : 0)
            parts.append(("p\(i)", r.json(perSample: false)))
        }
        guard case .gen(let m, _) = try ScoreMerge.mergeReports(parts) else { return XCTFail() }
        XCTAssertEqual(m.samples.map(\.id), [0, 1])
    }
}

extension ShardCLITests {
    /// The command line: `score gen --shard i/3` three times + `score merge` prints the unsharded JSON byte for byte
    /// (exit 0); a malformed --shard is exit 64; merging a gen with a ppl report, or an incomplete set, is exit 1.
    func testScoreGenShardsMergeOnTheCommandLine() throws {
        let score = try cliBinary("score")
        var req = TinyRun.request(dir: dir, data: trainPath, valid: nil, algo: .ar, steps: 2)
        req.runDir = dir + "/ar"
        let (t, _) = try TrainSetup.make(req)
        _ = try t.run(runDir: req.runDir, metrics: nil) { _ in }
        let ck = req.runDir + "/last.safetensors"
        let samples = dir + "/samples.tok"
        try TinyRun.writeStream(samples, rows: TinyRun.rows(7).enumerated().map { Array($0.element.prefix(6 + $0.offset)) },
                                header: TinyRun.header(kind: .samples))
        let whole = try runCLI(score, ["gen", "--scorer", ck, "-i", samples, "--per-sample"])
        XCTAssertEqual(whole.code, 0, whole.err)
        var paths: [String] = []
        for i in 0..<3 {
            let r = try runCLI(score, ["gen", "--scorer", ck, "-i", samples, "--per-sample", "--shard", "\(i)/3"])
            XCTAssertEqual(r.code, 0, r.err); XCTAssertTrue(r.err.contains("shard \(i)/3"), r.err)
            paths.append(dir + "/gen.\(i).json")
            try r.out.write(toFile: paths[i], atomically: true, encoding: .utf8)
        }
        let merged = try runCLI(score, ["merge"] + paths.reversed())
        XCTAssertEqual(merged.code, 0, merged.err)
        XCTAssertEqual(merged.out, whole.out)
        let bad = try runCLI(score, ["gen", "--scorer", ck, "-i", samples, "--shard", "3/3"])
        XCTAssertEqual(bad.code, 64, bad.err); XCTAssertTrue(bad.err.contains("--shard must be i/n"), bad.err)
        let ppl = try runCLI(score, ["ppl", "-m", ck, "-i", trainPath, "--batch", "2", "--shard", "1/3"])
        XCTAssertEqual(ppl.code, 0, ppl.err)
        try ppl.out.write(toFile: dir + "/ppl.1.json", atomically: true, encoding: .utf8)
        let mixed = try runCLI(score, ["merge", paths[0], dir + "/ppl.1.json", paths[2]])
        XCTAssertEqual(mixed.code, 1, mixed.err); XCTAssertTrue(mixed.err.contains("cannot merge a score gen report"), mixed.err)
        let missing = try runCLI(score, ["merge", paths[0], paths[2]])
        XCTAssertEqual(missing.code, 1, missing.err); XCTAssertTrue(missing.err.contains("missing shard 1/3"), missing.err)
    }
}
