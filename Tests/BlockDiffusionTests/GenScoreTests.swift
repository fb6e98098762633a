import XCTest
import Foundation
@testable import BlockDiffusion

final class GenScoreTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "genscore-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    // MARK: windows

    func w(_ s: Int, _ e: Int, _ f: Int) -> ScoringWindow { ScoringWindow(start: s, end: e, scoreFrom: f) }

    func testWindowPlansByHand() {
        let plan = GenerativeWindows.plan
        // ctx 8, stride 4
        XCTAssertEqual(plan(0, 8, 4), [w(0, 0, 0)])
        XCTAssertEqual(plan(1, 8, 4), [w(0, 1, 1)])
        XCTAssertEqual(plan(5, 8, 4), [w(0, 5, 1)])
        XCTAssertEqual(plan(8, 8, 4), [w(0, 8, 1)])                                   // exactly ctx: one window
        XCTAssertEqual(plan(9, 8, 4), [w(0, 8, 1), w(4, 9, 8)])                       // ctx + 1
        XCTAssertEqual(plan(12, 8, 4), [w(0, 8, 1), w(4, 12, 8)])                     // ctx + stride
        XCTAssertEqual(plan(13, 8, 4), [w(0, 8, 1), w(4, 12, 8), w(8, 13, 12)])
        XCTAssertEqual(plan(16, 8, 4), [w(0, 8, 1), w(4, 12, 8), w(8, 16, 12)])       // multiple of stride
        // stride not ctx/2: window i scores past the previous end, [start + ctx − stride, end)
        XCTAssertEqual(plan(14, 8, 3), [w(0, 8, 1), w(3, 11, 8), w(6, 14, 11)])
        XCTAssertEqual(plan(9, 8, 7), [w(0, 8, 1), w(7, 9, 8)])
        // The reference (context 1024, stride 512).
        XCTAssertEqual(plan(1024, 1024, 512), [w(0, 1024, 1)])
        XCTAssertEqual(plan(1025, 1024, 512), [w(0, 1024, 1), w(512, 1025, 1024)])
        XCTAssertEqual(plan(2048, 1024, 512), [w(0, 1024, 1), w(512, 1536, 1024), w(1024, 2048, 1536)])
    }

    /// Every position 1..<n is scored exactly once, windows never exceed ctx, and a position past the
    /// first window has at least ctx − stride tokens of context.
    func testWindowPlansCoverEachPositionOnce() {
        for (ctx, stride) in [(2, 1), (8, 4), (8, 3), (8, 7), (5, 2)] {
            for n in 0...40 {
                var hits = [Int](repeating: 0, count: n)
                for x in GenerativeWindows.plan(length: n, context: ctx, stride: stride) {
                    XCTAssertLessThanOrEqual(x.end - x.start, ctx)
                    if x.scoreFrom < x.end { XCTAssertGreaterThanOrEqual(x.scoreFrom, x.start + 1) }
                    for p in x.scoreFrom..<max(x.scoreFrom, x.end) {
                        hits[p] += 1
                        if p >= ctx { XCTAssertGreaterThanOrEqual(p - x.start, ctx - stride) }
                    }
                }
                XCTAssertEqual(hits.dropFirst().filter { $0 != 1 }.count, 0, "ctx \(ctx) stride \(stride) n \(n)")
                if n > 0 { XCTAssertEqual(hits[0], 0) }
            }
        }
    }

    // MARK: entropy, distinct-n, aggregation

    func testUnigramEntropyByHand() {
        XCTAssertEqual(unigramEntropy([]), 0)
        XCTAssertEqual(unigramEntropy([5, 5, 5, 5, 5]), 0)
        XCTAssertEqual(unigramEntropy([1, 1, 2, 2]), log(2), accuracy: 1e-12)
        XCTAssertEqual(unigramEntropy([1, 2, 3, 4]), log(4), accuracy: 1e-12)
        XCTAssertEqual(unigramEntropy([1, 1, 1, 2]), -(0.75 * log(0.75) + 0.25 * log(0.25)), accuracy: 1e-12)
    }

    func testDistinctNByHand() {
        var d = DistinctNGrams()
        d.add([1, 2, 1, 2]); d.add([1, 2, 3])
        XCTAssertEqual(d.ratio(1), 3.0 / 7, accuracy: 1e-12)    // 7 unigrams, {1,2,3}
        XCTAssertEqual(d.ratio(2), 3.0 / 5, accuracy: 1e-12)    // 12 21 12 | 12 23
        XCTAssertEqual(d.ratio(3), 1, accuracy: 1e-12)          // 121 212 | 123
        XCTAssertEqual(d.ratio(4), 1, accuracy: 1e-12)          // 1212
        XCTAssertEqual(d.total, [7, 5, 3, 1])
        // n-grams through an excluded token (EOS = 0) are not counted, nor do they join across it.
        var e = DistinctNGrams()
        e.add([1, 0, 1, 2], excluding: 0)
        XCTAssertEqual(e.ratio(1), 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(e.ratio(2), 1, accuracy: 1e-12)
        XCTAssertEqual(e.total, [3, 1, 0, 0])
        XCTAssertTrue(e.ratio(3).isNaN)
    }

    func testAggregationMeanOfPerSampleVersusTokenWeighted() throws {
        let s = [
            SampleScore(id: 10, nll: 2, tokens: 2, length: 3, entropy: 4.5, nfe: 10, stages: ["draft"], degenerate: false),
            SampleScore(id: 11, nll: 9, tokens: 3, length: 10, entropy: 1.0, nfe: 20, stages: ["draft", "refine"], degenerate: true),
            SampleScore(id: 12, nll: 0, tokens: 0, length: 4, entropy: 0, nfe: 30, stages: ["draft"], degenerate: true),
        ]
        let r = GenerativeReport(samples: s, distinct: [0.5, 0.6, 0.7, 0.8], scorer: "test")
        XCTAssertEqual(r.genPPL, (exp(1.0) + exp(3.0)) / 2, accuracy: 1e-12)     // unscored sample left out
        XCTAssertEqual(r.genPPLTokens, exp(11.0 / 5), accuracy: 1e-12)
        XCTAssertNotEqual(r.genPPL, r.genPPLTokens, accuracy: 0.1)
        XCTAssertEqual(r.meanNFE, 20)
        XCTAssertEqual(r.meanEntropy, 5.5 / 3, accuracy: 1e-12)
        XCTAssertEqual(r.lengthMedian, 4)
        XCTAssertEqual(r.lengthMax, 10)
        XCTAssertEqual(r.degenerateIDs, [11, 12])
        XCTAssertEqual(r.stageHistories.map(\.history), [["draft"], ["draft", "refine"]])
        XCTAssertEqual(r.stageHistories.map(\.samples), [2, 1])
        let even = GenerativeReport(samples: Array(s.prefix(2)) + [SampleScore(id: 1, nll: 1, tokens: 1, length: 6, entropy: 5, nfe: 0, stages: [], degenerate: false), s[2]], distinct: [], scorer: "t")
        XCTAssertEqual(even.lengthMedian, 5)    // 3 4 6 10
        let j = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.json(perSample: true).utf8)) as? [String: Any])
        XCTAssertEqual(j["gen_ppl"] as! Double, r.genPPL, accuracy: 1e-9)
        XCTAssertEqual(j["gen_ppl_tokens"] as! Double, r.genPPLTokens, accuracy: 1e-9)
        XCTAssertEqual(j["samples"] as? Int, 3)
        XCTAssertEqual(j["unscored"] as? Int, 1)
        XCTAssertEqual(j["distinct_2"] as! Double, 0.6, accuracy: 1e-12)
        let deg = try XCTUnwrap(j["degenerate"] as? [String: Any])
        XCTAssertEqual(deg["count"] as? Int, 2)
        XCTAssertEqual((deg["ids"] as? [NSNumber])?.map(\.intValue), [11, 12])
        let rows = try XCTUnwrap(j["per_sample"] as? [[String: Any]])
        XCTAssertEqual(rows.count, 3)
        XCTAssertEqual(rows[1]["ppl"] as! Double, exp(3.0), accuracy: 1e-9)
        XCTAssertTrue(rows[2]["ppl"] is NSNull)
        XCTAssertNil(try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.json(perSample: false).utf8)) as? [String: Any])["per_sample"])
        XCTAssertTrue(r.table.contains("degenerate"))
    }

    // MARK: tokenizers

    /// Byte-level tokenizer: ids 0…255 the bytes, then `extra` merged tokens, then <|endoftext|> and [MASK].
    func byteTokenizer(merges: [(String, String)] = []) throws -> BPETokenizer {
        var tokens = (0..<256).map { [UInt8($0)] }
        var pairs: [(Int32, Int32)] = []
        for (a, b) in merges {
            let ia = tokens.firstIndex(of: Array(a.utf8))!, ib = tokens.firstIndex(of: Array(b.utf8))!
            tokens.append(Array((a + b).utf8)); pairs.append((Int32(ia), Int32(ib)))
        }
        let eos = Int32(tokens.count)
        tokens.append(Array(BPETokenizer.endOfText.utf8)); tokens.append(Array(BPETokenizer.maskName.utf8))
        return try BPETokenizer(tokens: tokens, merges: pairs, specials: [
            BPESpecialToken(name: BPETokenizer.endOfText, id: eos), BPESpecialToken(name: BPETokenizer.maskName, id: eos + 1)])
    }

    func testRetokenizerMapsSpecialNamesToSpecialIds() throws {
        let a = try byteTokenizer(), b = try byteTokenizer(merges: [("a", "b")])
        XCTAssertNotEqual(a.fingerprint, b.fingerprint)
        XCTAssertEqual(a.eosId, 256); XCTAssertEqual(b.eosId, 257)
        let r = Retokenizer(from: a, to: b)
        // BOS token, then "ab c", then "<|endoftext|>" spelled with ordinary byte tokens (HF maps it too).
        let spelled = Array(BPETokenizer.endOfText.utf8).map { Int32($0) }
        let ids: [Int32] = [256, 97, 98, 32, 99] + spelled + [120]
        XCTAssertEqual(r(ids), [257, 256, 32, 99, 257, 120])
        XCTAssertEqual(Retokenizer.encode(Array("x<|endoftext|>".utf8), with: b), [120, 257])
        // "[MASK]" text stays ordinary text: the scorer is never fed its mask id.
        XCTAssertFalse(Retokenizer.encode(Array("a[MASK]".utf8), with: b).contains(b.maskId))
    }

    // MARK: AR checkpoint scorer

    static let V = 40, eos: Int32 = 3, mask: Int32 = 39

    /// A tiny causal DiT with a random (non-zero) output layer, saved as `train --algo ar` would.
    func makeARCheckpoint(ctx: Int, fingerprint: UInt64 = 0xAB, vocab: Int = GenScoreTests.V, eos: Int32 = GenScoreTests.eos) throws -> String {
        let config = ModelConfig(vocabSize: vocab, hiddenSize: 16, nBlocks: 1, nHeads: 2, condDim: 8, length: ctx, dropout: 0, causal: true)
        let m = DiT(config: config, maxBatch: 1, maxTokens: ctx)
        m.initialize(seed: 7)
        var rng = SplitMix64(seed: 99)
        for name in ["backbone.output_layer.linear.weight", "backbone.output_layer.linear.bias"] {
            let t = m.tensor(named: name)!
            for i in t.indices { t[i] = Float(rng.nextDouble() * 2 - 1) }
        }
        let path = dir + "/ar-\(ctx)-\(vocab).safetensors"
        try m.save(safetensors: path, metadata: [
            "algo": "ar", "block_size": "1", "seq_len": "\(ctx)", "vocab_size": "\(vocab)", "mask_id": "\(vocab - 1)",
            "bos_id": "\(eos)", "eos_id": "\(eos)", "pad_id": "\(eos)",
            "tokenizer_fingerprint": String(format: "%016llx", fingerprint)])
        return path
    }

    func stream(_ records: [TokenRecord], vocab: Int = GenScoreTests.V, fingerprint: UInt64 = 0xAB, mask: Int32 = GenScoreTests.mask,
                eos: Int32 = GenScoreTests.eos) throws -> TokenStreamReader {
        let sink = MemorySink()
        let w = try TokenStreamWriter(sink: sink, header: StreamHeader(kind: .samples, vocabSize: vocab, tokenizerFingerprint: fingerprint,
                                                                       special: SpecialTokens(bos: eos, eos: eos, mask: mask, pad: eos)))
        for r in records { try w.write(r) }
        try w.finish()
        return try TokenStreamReader(source: MemorySource(sink.bytes))
    }

    /// −log p(x_p | x[start..<p]) straight from a DiT forward, in Double, mask column excluded.
    func directNLL(_ model: DiT, _ x: [Int32], start: Int, p: Int) -> Double {
        let V = model.config.vocabSize
        let input = Array(x[start..<p])
        let logits = input.withUnsafeBufferPointer {
            model.forward(tokens: $0, batch: 1, layout: .causal, sigma: nil, training: false, dropoutSeed: 0)
        }
        let row = (input.count - 1) * V
        var mx = -Double.infinity
        for j in 0..<V where j != V - 1 { mx = max(mx, Double(logits[row + j])) }
        var s = 0.0
        for j in 0..<V where j != V - 1 { s += exp(Double(logits[row + j]) - mx) }
        return mx + log(s) - Double(logits[row + Int(x[p])])
    }

    func testCheckpointScoringMatchesDirectForward() throws {
        let ctx = 8, stride = 3
        let path = try makeARCheckpoint(ctx: ctx)
        let file = try SafetensorsFile(path: path)
        let info = try CheckpointInfo.read(file)
        let direct = DiT(config: info.config, maxBatch: 1, maxTokens: ctx)
        try direct.load(file: file)
        var rng = SplitMix64(seed: 5)
        func sample(_ n: Int) -> [Int32] {
            var x = (0..<n).map { _ in Int32(4 + Int(rng.next() % UInt64(GenScoreTests.V - 5))) }
            if n > 0 { x[0] = GenScoreTests.eos }                // BOS = EOS, as the reference's samples
            if n > 6 { x[5] = GenScoreTests.eos }                // an EOS target inside: excluded
            return x
        }
        let lengths = [1, 5, 8, 9, 11, 17]                      // < ctx, = ctx, ctx+1, ctx+stride, several windows
        let records = lengths.enumerated().map { TokenRecord(id: UInt64(100 + $0.offset), tokens: sample($0.element), nfe: UInt64($0.element - 1), stages: ["draft B=1"]) }
        var o = GenerativeOptions(); o.stride = stride
        let report = try GenerativeScoring.run(input: try stream(records), scorer: .checkpoint(path), options: o)
        XCTAssertEqual(report.samples.count, records.count)
        for (r, s) in zip(records, report.samples) {
            let x = r.tokens
            var nll = 0.0, count = 0
            for p in 1..<max(1, x.count) where x[p] != GenScoreTests.eos {
                // Context start of position p by the closed form: window w = ⌊(p − ctx)/stride⌋ + 1 past the first.
                let start = p < ctx ? 0 : ((p - ctx) / stride + 1) * stride
                nll += directNLL(direct, x, start: start, p: p); count += 1
            }
            XCTAssertEqual(s.id, r.id)
            XCTAssertEqual(s.tokens, count, "sample \(r.id)")
            XCTAssertEqual(s.nll, nll, accuracy: 1e-4 * max(1, nll), "sample \(r.id)")
            XCTAssertEqual(s.length, x.count)
            XCTAssertEqual(s.entropy, unigramEntropy(x), accuracy: 1e-12)
            XCTAssertEqual(s.nfe, r.nfe)
        }
        XCTAssertEqual(report.samples[0].tokens, 0)           // a lone BOS: nothing to score
        XCTAssertGreaterThan(report.samples[5].nll, 0)
        // The default stride is ctx/2 and changes the contexts, hence the NLL of long samples.
        let def = try GenerativeScoring.run(input: try stream(records), scorer: .checkpoint(path), options: GenerativeOptions())
        XCTAssertEqual(def.samples[2].nll, report.samples[2].nll, accuracy: 1e-5)   // ≤ ctx: same single window
        XCTAssertNotEqual(def.samples[5].nll, report.samples[5].nll, accuracy: 1e-6)
    }

    func testCheckpointRefusals() throws {
        let path = try makeARCheckpoint(ctx: 8)
        let good = [TokenRecord(id: 1, tokens: [3, 4, 5, 6])]
        // Masks left in a sample.
        XCTAssertThrowsError(try GenerativeScoring.run(input: try stream([TokenRecord(id: 9, tokens: [3, 4, 39, 6])]), scorer: .checkpoint(path), options: GenerativeOptions())) {
            XCTAssertTrue("\($0)".contains("sample 9") && "\($0)".contains("[MASK]"), "\($0)")
        }
        // Another tokenizer without -t/--scorer-tokenizer: a usage error.
        XCTAssertThrowsError(try GenerativeScoring.run(input: try stream(good, fingerprint: 0xCD), scorer: .checkpoint(path), options: GenerativeOptions())) {
            XCTAssertTrue($0 is UsageError, "\($0)")
            XCTAssertTrue("\($0)".contains("--scorer-tokenizer"))
        }
        // A diffusion checkpoint is no AR scorer.
        let config = ModelConfig(vocabSize: 40, hiddenSize: 16, nBlocks: 1, nHeads: 2, condDim: 8, length: 8, dropout: 0)
        let bd3 = DiT(config: config, maxBatch: 1, maxTokens: 16)
        try bd3.save(safetensors: dir + "/bd3.safetensors", metadata: ["algo": "bd3", "block_size": "4", "seq_len": "8"])
        XCTAssertThrowsError(try GenerativeScoring.run(input: try stream(good), scorer: .checkpoint(dir + "/bd3.safetensors"), options: GenerativeOptions())) {
            XCTAssertTrue("\($0)".contains("train --algo ar"), "\($0)")
        }
        // A stride that leaves tokens without context.
        var o = GenerativeOptions(); o.stride = 8
        XCTAssertThrowsError(try GenerativeScoring.run(input: try stream(good), scorer: .checkpoint(path), options: o)) {
            XCTAssertTrue($0 is UsageError, "\($0)")
        }
    }

    /// Samples in tokenizer A scored by a checkpoint of tokenizer B: decode + re-encode, then score.
    func testCheckpointScoringRetokenises() throws {
        let a = try byteTokenizer(), b = try byteTokenizer(merges: [("a", "b"), ("c", "d")])
        let path = try makeARCheckpoint(ctx: 8, fingerprint: b.fingerprint, vocab: b.vocabSize, eos: b.eosId)
        let text = Array("<|endoftext|>abcd ab cd xy".utf8)
        let ids = [a.eosId] + a.encode(Array(text.dropFirst(13)))
        let rec = TokenRecord(id: 4, tokens: ids, nfe: 3)
        func run(_ o: GenerativeOptions) throws -> GenerativeReport {
            try GenerativeScoring.run(input: try stream([rec], vocab: a.vocabSize, fingerprint: a.fingerprint, mask: a.maskId, eos: a.eosId),
                                      scorer: .checkpoint(path), options: o)
        }
        var o = GenerativeOptions(); o.samplesTokenizer = a
        XCTAssertThrowsError(try run(o)) { XCTAssertTrue($0 is UsageError) }
        o.scorerTokenizer = a                       // not the checkpoint's tokenizer
        XCTAssertThrowsError(try run(o)) { XCTAssertTrue("\($0)".contains("scorer"), "\($0)") }
        o.scorerTokenizer = b
        let r = try run(o)
        let retok = Retokenizer.encode(text, with: b)
        XCTAssertEqual(retok.first, b.eosId)
        XCTAssertEqual(retok.count, 1 + 2 + 2 + 2 + 3)   // eos | ab cd | " " ab | " " cd | " " x y
        let scorer = try ARCheckpointScorer(path: path)
        let expected = scorer.score(retok)
        XCTAssertEqual(r.samples[0].tokens, expected.tokens)
        XCTAssertEqual(r.samples[0].tokens, retok.count - 1)
        XCTAssertEqual(r.samples[0].nll, expected.nll, accuracy: 1e-9)
        XCTAssertEqual(r.samples[0].entropy, unigramEntropy(retok), accuracy: 1e-12)
        XCTAssertEqual(r.samples[0].length, ids.count)
        o.maxTokens = 4
        XCTAssertEqual(try run(o).samples[0].tokens, 3)
    }

    // MARK: scorer command protocol

    func byteStream(_ texts: [String], tok: BPETokenizer, ids: [UInt64]? = nil) throws -> TokenStreamReader {
        let recs = texts.enumerated().map { i, t in
            TokenRecord(id: ids?[i] ?? UInt64(100 + i), tokens: [tok.eosId] + tok.encode(Array(t.utf8)), nfe: UInt64(10 * i), stages: ["draft", "refine s=\(i % 2)"])
        }
        return try stream(recs, vocab: tok.vocabSize, fingerprint: tok.fingerprint, mask: tok.maskId, eos: tok.eosId)
    }

    func script(_ name: String, _ body: String) throws -> String {
        let p = dir + "/" + name
        try body.write(toFile: p, atomically: true, encoding: .utf8)
        return "sh " + p
    }

    /// A shell scorer that answers nll = id + 0.5 over 1 token, each answer padded with 8 KB of spaces,
    /// while the requests carry 8 KB texts: both pipes overflow unless requests and answers stream.
    func testCommandProtocolStreamsBigRequestsAndAnswers() throws {
        let tok = try byteTokenizer()
        let pad = String(repeating: " ", count: 8192)
        let cmd = try script("echo.sh", """
            while IFS= read -r line; do
              id=$(printf '%s' "$line" | sed -E 's/^[{]"id":([0-9]+),.*$/\\1/')
              printf '{"id":%s,"nll":%s.5,"tokens":1\(pad)}\\n' "$id" "$id"
            done
            """)
        let texts = (0..<40).map { i in String(repeating: "sample \(i) é ", count: 700) }
        var o = GenerativeOptions(); o.samplesTokenizer = tok
        let r = try GenerativeScoring.run(input: try byteStream(texts, tok: tok), scorer: .command(cmd), options: o)
        XCTAssertEqual(r.samples.map(\.id), (0..<40).map { UInt64(100 + $0) })
        for s in r.samples { XCTAssertEqual(s.nll, Double(s.id) + 0.5); XCTAssertEqual(s.tokens, 1) }
        XCTAssertEqual(r.genPPL, r.samples.map { exp(Double($0.id) + 0.5) }.reduce(0, +) / 40, accuracy: 1e-6 * r.genPPL)
        XCTAssertEqual(r.meanNFE, 195)
    }

    /// With --scorer-tokenizer, entropy and distinct-n are over the re-tokenised sample; the text sent is unchanged.
    func testCommandEntropyUsesScorerTokenizer() throws {
        let a = try byteTokenizer(), b = try byteTokenizer(merges: [("a", "b")])
        let cmd = try script("len.sh", """
            while IFS= read -r line; do
              id=$(printf '%s' "$line" | sed -E 's/^[{]"id":([0-9]+),.*$/\\1/')
              printf '{"id":%s,"nll":%s,"tokens":1}\\n' "$id" "${#line}"
            done
            """)
        var o = GenerativeOptions(); o.samplesTokenizer = a
        let plain = try GenerativeScoring.run(input: try byteStream(["abab ab xy"], tok: a), scorer: .command(cmd), options: o)
        o.scorerTokenizer = b
        var seen = 0
        o.progress = { seen = $0 }
        let re = try GenerativeScoring.run(input: try byteStream(["abab ab xy"], tok: a), scorer: .command(cmd), options: o)
        let ids = [a.eosId] + a.encode(Array("abab ab xy".utf8))
        XCTAssertEqual(plain.samples[0].entropy, unigramEntropy(ids), accuracy: 1e-12)
        XCTAssertEqual(re.samples[0].entropy, unigramEntropy(Retokenizer(from: a, to: b)(ids)), accuracy: 1e-12)
        XCTAssertNotEqual(plain.samples[0].entropy, re.samples[0].entropy, accuracy: 1e-3)
        XCTAssertEqual(plain.samples[0].nll, re.samples[0].nll)       // same request line
        XCTAssertEqual(seen, 1)
    }

    /// The shipped unigram scorer, checked against the same model computed here.
    func testUnigramScorerAggregation() throws {
        let python = ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let python else { throw XCTSkip("python3 not installed: the unigram scorer cannot run") }
        let scorerPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("pipelines/scorers/unigram.py").path
        guard FileManager.default.fileExists(atPath: scorerPath) else { throw XCTSkip("pipelines/scorers/unigram.py not found next to the sources") }
        let fit = "the quick brown fox jumps over the lazy dog. Ünïcödé 😀 text\nand a second line\n"
        try fit.write(toFile: dir + "/fit.txt", atomically: true, encoding: .utf8)
        let tok = try byteTokenizer()
        let texts = ["hello world", "the dog", "", "zzzzzz qqq", "é😀 ok"]
        // Sample 5: invalid UTF-8 (a lone continuation byte) is sent as U+FFFD.
        var recs = try byteStream(texts, tok: tok).readAll()
        recs.append(TokenRecord(id: 200, tokens: [tok.eosId, 0x61, 0x80, 0x62], nfe: 7, stages: ["draft"]))
        let input = try stream(recs, vocab: tok.vocabSize, fingerprint: tok.fingerprint, mask: tok.maskId, eos: tok.eosId)
        var o = GenerativeOptions(); o.samplesTokenizer = tok
        let cmd = "'\(python)' '\(scorerPath)' --fit '\(dir)/fit.txt'"
        let r = try GenerativeScoring.run(input: input, scorer: .command(cmd), options: o)

        var counts = [Double](repeating: 0, count: 256)
        for b in fit.utf8 { counts[Int(b)] += 1 }
        let denom = Double(fit.utf8.count + 256)
        var total = 0.0, totalTokens = 0, pplSum = 0.0, scored = 0
        XCTAssertEqual(r.samples.count, recs.count)
        for (rec, s) in zip(recs, r.samples) {
            let bytes = Array(String(decoding: tok.decode(rec.tokens), as: UTF8.self).utf8)
            let nll = bytes.reduce(0.0) { $0 - log((counts[Int($1)] + 1) / denom) }
            XCTAssertEqual(s.id, rec.id)
            XCTAssertEqual(s.tokens, bytes.count)
            XCTAssertEqual(s.nll, nll, accuracy: 1e-9 * nll)
            XCTAssertEqual(s.nfe, rec.nfe)
            total += nll; totalTokens += bytes.count; pplSum += exp(nll / Double(bytes.count)); scored += 1
        }
        XCTAssertEqual(r.samples[5].tokens, 13 + 1 + 3 + 1)      // "<|endoftext|>" a U+FFFD(3 bytes) b
        XCTAssertEqual(r.genPPL, pplSum / Double(scored), accuracy: 1e-9 * r.genPPL)
        XCTAssertEqual(r.genPPLTokens, exp(total / Double(totalTokens)), accuracy: 1e-9 * r.genPPLTokens)
        // Entropy and distinct-n over the samples' own ids (no --scorer-tokenizer).
        XCTAssertEqual(r.samples[0].entropy, unigramEntropy(recs[0].tokens), accuracy: 1e-12)
        var d = DistinctNGrams()
        for rec in recs { d.add(rec.tokens, excluding: tok.eosId) }
        XCTAssertEqual(r.distinct[1], d.ratio(2), accuracy: 1e-12)
    }

    func assertCommandFails(_ body: String, naming: String, _ extra: String, texts: [String] = ["a", "b", "c"], timeout: Double? = nil,
                            exec: Bool = false, file: StaticString = #filePath, line: UInt = #line) throws {
        let tok = try byteTokenizer()
        let cmd = (exec ? "exec " : "") + (try script("s\(line).sh", body))
        var o = GenerativeOptions(); o.samplesTokenizer = tok
        if let timeout { o.scorerTimeout = timeout }
        XCTAssertThrowsError(try GenerativeScoring.run(input: try byteStream(texts, tok: tok), scorer: .command(cmd), options: o), file: file, line: line) { e in
            XCTAssertTrue(e is ToolError, "\(e)", file: file, line: line)
            XCTAssertTrue("\(e)".contains(naming), "\(e) should name \(naming)", file: file, line: line)
            XCTAssertTrue("\(e)".contains(extra), "\(e) should say \(extra)", file: file, line: line)
        }
    }

    func testCommandFailuresNameTheSample() throws {
        let answer = #"id=$(printf '%s' "$line" | sed -E 's/^[{]"id":([0-9]+),.*$/\1/'); echo "{\"id\":$id,\"nll\":1.5,\"tokens\":2}""#
        // Dies (non-zero exit) after answering the first sample.
        try assertCommandFails("IFS= read -r line; \(answer); exit 3", naming: "sample 101", "status 3")
        // Killed by a signal before answering anything.
        try assertCommandFails("IFS= read -r line; kill -9 $$", naming: "sample 100", "before answering")
        // Exits 0 without answering the last sample.
        try assertCommandFails("IFS= read -r line; \(answer); IFS= read -r line; \(answer)", naming: "sample 102", "before answering")
        // Garbage on stdout.
        try assertCommandFails("IFS= read -r line; \(answer); echo 'loading model...'; cat >/dev/null", naming: "sample 101", "garbage")
        // Wrong id.
        try assertCommandFails("while IFS= read -r line; do echo '{\"id\":100,\"nll\":1,\"tokens\":1}'; done", naming: "sample 101", "answered id 100")
        // Non-finite and negative numbers.
        try assertCommandFails("IFS= read -r line; echo '{\"id\":100,\"nll\":NaN,\"tokens\":1}'; cat >/dev/null", naming: "sample 100", "non-finite")
        try assertCommandFails("IFS= read -r line; echo '{\"id\":100,\"nll\":1e999,\"tokens\":1}'; cat >/dev/null", naming: "sample 100", "non-finite")
        try assertCommandFails("IFS= read -r line; echo '{\"id\":100,\"nll\":-2,\"tokens\":1}'; cat >/dev/null", naming: "sample 100", "NLL")
        try assertCommandFails("IFS= read -r line; echo '{\"id\":100,\"nll\":2,\"tokens\":-1}'; cat >/dev/null", naming: "sample 100", "tokens")
        // Non-zero exit after answering everything; an extra line.
        try assertCommandFails("while IFS= read -r line; do \(answer); done; exit 2", naming: "102", "status 2")
        try assertCommandFails("while IFS= read -r line; do \(answer); done; echo extra", naming: "102", "extra line")
        // A command that does not read its input and exits at once (requests hit a closed pipe).
        try assertCommandFails("exit 0", naming: "sample 100", "before answering", texts: (0..<50).map { String(repeating: "x", count: 5000 + $0) })
    }

    /// A scorer that stops answering, or closes its stdout but keeps running, is killed after the timeout (1 s here)
    /// and the error names the sample; the process is gone afterwards.
    func testStuckScorersAreKilled() throws {
        let answer = #"id=$(printf '%s' "$line" | sed -E 's/^[{]"id":([0-9]+),.*$/\1/'); echo "{\"id\":$id,\"nll\":1.5,\"tokens\":2}""#
        let pidFile = dir + "/scorer.pid"
        // Answers the first sample, then hangs with its stdout open (sh replaced by sleep; the outer sh -c waits
        // for it: the whole process group must be killed).
        try assertCommandFails("IFS= read -r line; \(answer); echo $$ > '\(pidFile)'; exec sleep 30", naming: "sample 101", "did not answer", timeout: 1)
        let pid = try XCTUnwrap(Int32(String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        // Gone or a zombie (its parent, the outer sh, was killed too; init reaps it). SIGKILL lands at once,
        // the loop only covers the delivery to the other group member.
        func running(_ pid: Int32) -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
        }
        var alive = running(pid)
        for _ in 0..<100 where alive { usleep(10_000); alive = running(pid) }
        XCTAssertFalse(alive, "the stuck scorer \(pid) is still running")
        // Never reads: the requests fill the pipe and the writer blocks; still the scorer's fault.
        try assertCommandFails("exec sleep 30", naming: "sample 100", "did not answer", texts: (0..<50).map { String(repeating: "x", count: 5000 + $0) }, timeout: 1)
        // Closes its stdout before answering sample 101 but keeps running (exec: no outer shell holding stdout).
        try assertCommandFails("IFS= read -r line; \(answer); exec >&-; exec sleep 30", naming: "sample 101", "did not exit within 1 s", timeout: 1, exec: true)
        // Answers everything, closes its stdout, keeps running.
        try assertCommandFails("while IFS= read -r line; do \(answer); done; exec >&-; exec sleep 30", naming: "102", "did not exit within 1 s", timeout: 1, exec: true)
        // Answers everything but keeps its stdout open and never exits, even with no reply timeout (the exit grace).
        try assertCommandFails("while IFS= read -r line; do \(answer); done; exec sleep 30", naming: "102", "neither closed its output nor exited within 1 s", timeout: 1)
        XCTAssertEqual(ScorerCommand.exitGrace(replyTimeout: 1), 1)
        XCTAssertEqual(ScorerCommand.exitGrace(replyTimeout: 600), 10)
        XCTAssertEqual(ScorerCommand.exitGrace(replyTimeout: 0), 10)
    }

    /// The reply clock is paused while the next request is still being produced (a slow upstream): a scorer that
    /// reads everything before answering is not timed out by our own input's pace.
    func testTimeoutIgnoresTheTimeSpentWaitingForInput() throws {
        var produced = 0
        var answers: [UInt64] = []
        try ScorerCommand.run(command: #"cat >/dev/null; echo '{"id":1,"nll":1,"tokens":1}'; echo '{"id":2,"nll":2,"tokens":1}'"#,
                              replyTimeout: 1, next: {
            produced += 1
            if produced == 2 { usleep(1_300_000) }      // longer than the timeout, with request 1 unanswered
            return produced <= 2 ? (ScorerRequest(id: UInt64(produced), text: "t"), produced) : nil
        }) { r, meta in
            XCTAssertEqual(r.id, UInt64(meta))
            answers.append(r.id)
        }
        XCTAssertEqual(answers, [1, 2])
    }

    /// Ids use the full u64 range on both sides of the protocol; text is escaped to one line.
    func testProtocolLinesRoundTripLargeIds() throws {
        let line = ScorerRequest(id: UInt64.max, text: "a\nb\"c/é").line
        XCTAssertEqual(line.last, 0x0A)
        XCTAssertFalse(line.dropLast().contains(0x0A))
        let s = String(decoding: line, as: UTF8.self)
        XCTAssertTrue(s.hasPrefix("{\"id\":18446744073709551615,"), s)
        let back = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
        XCTAssertEqual(back["text"] as? String, "a\nb\"c/é")
        let r = try JSONDecoder().decode(ScorerResponse.self, from: Data(#"{"id":18446744073709551615,"nll":1.25,"tokens":3,"extra":true}"#.utf8))
        XCTAssertEqual(r, ScorerResponse(id: UInt64.max, nll: 1.25, tokens: 3))
        let rep = GenerativeReport(samples: [SampleScore(id: UInt64.max, nll: 1, tokens: 1, length: 2, entropy: 0.5, nfe: 1, stages: [], degenerate: true)], distinct: [], scorer: "x")
        XCTAssertTrue(rep.json(perSample: true).contains("18446744073709551615"))
    }

    func testCommandNeedsTheSamplesTokenizer() throws {
        let tok = try byteTokenizer()
        XCTAssertThrowsError(try GenerativeScoring.run(input: try byteStream(["a"], tok: tok), scorer: .command("cat"), options: GenerativeOptions())) {
            XCTAssertTrue($0 is UsageError, "\($0)")
        }
        var o = GenerativeOptions(); o.samplesTokenizer = try byteTokenizer(merges: [("a", "b")])
        XCTAssertThrowsError(try GenerativeScoring.run(input: try byteStream(["a"], tok: tok), scorer: .command("cat"), options: o)) {
            XCTAssertTrue($0 is UsageError, "\($0)")
        }
    }

    // MARK: command line

    func testCommandLine() throws {
        let score = try cliBinary("score")
        let ckpt = try makeARCheckpoint(ctx: 8)
        let recs = [TokenRecord(id: 5, tokens: [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 4], nfe: 9, stages: ["draft"]),
                    TokenRecord(id: 6, tokens: [3, 7, 7, 7], nfe: 3, stages: ["draft"])]
        let sink = MemorySink()
        let w = try TokenStreamWriter(sink: sink, header: StreamHeader(kind: .samples, vocabSize: GenScoreTests.V, tokenizerFingerprint: 0xAB,
                                                                       special: SpecialTokens(bos: 3, eos: 3, mask: 39, pad: 3)))
        for r in recs { try w.write(r) }
        try w.finish()
        let input = dir + "/samples.tok"
        try Data(sink.bytes).write(to: URL(fileURLWithPath: input))
        let r = try runCLI(score, ["gen", "--scorer", ckpt, "-i", input, "--per-sample"])
        XCTAssertEqual(r.code, 0, r.err)
        let j = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let lib = try GenerativeScoring.run(input: try TokenStreamReader(path: input), scorer: .checkpoint(ckpt), options: GenerativeOptions())
        XCTAssertEqual(j["gen_ppl"] as! Double, lib.genPPL, accuracy: 1e-9 * lib.genPPL)
        XCTAssertEqual(j["nfe"] as! Double, 6)
        XCTAssertEqual((j["per_sample"] as? [[String: Any]])?.count, 2)
        XCTAssertTrue(r.err.contains("gen PPL"), r.err)
        // Usage errors exit 64, runtime failures 1.
        XCTAssertEqual(try runCLI(score, ["gen", "-i", input]).code, 64)
        XCTAssertEqual(try runCLI(score, ["gen", "--scorer", ckpt, "--scorer-cmd", "cat", "-i", input]).code, 64)
        XCTAssertEqual(try runCLI(score, ["gen", "--scorer-cmd", "cat", "-i", input]).code, 64)      // no -t
        XCTAssertEqual(try runCLI(score, ["gen", "--scorer", ckpt, "--scorer-timeout", "5", "-i", input]).code, 64)
        XCTAssertEqual(try runCLI(score, ["gen", "--scorer-cmd", "cat", "--scorer-timeout", "-1", "-i", input]).code, 64)
        let bad = try runCLI(score, ["gen", "--scorer", dir + "/missing.safetensors", "-i", input])
        XCTAssertEqual(bad.code, 1, bad.err)
    }
}
