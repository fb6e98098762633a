// Decoding options: unmasking policies (hand-computed on a fixed table "model", then on tiny DiTs with the KV
// cache, without it, and at several batch sizes), the suffix / stop / finish fields, infill from text, remask
// margin and --dilate, traces, the margin stream field (format v2).
import XCTest
@testable import BlockDiffusion

/// A forward engine whose logits are a fixed table by position within the block (whatever the context):
/// p = rows[i] over tokens 0..<4, token 4 is the mask. Lets the tests compute every step by hand.
final class TableEngine: SamplingEngine {
    let config = ModelConfig(vocabSize: 5, hiddenSize: 8, nBlocks: 1, nHeads: 1, condDim: 4, length: 8, dropout: 0, causal: false)
    let maxChunk = 4
    let rows: [[Double]]
    var out: [Float] = []
    var forwards = 0
    init(_ rows: [[Double]]) { self.rows = rows }
    func reset() {}
    func forward(tokens: [Int32], batch: Int, store: Bool, causal: Bool, logits: Bool, rows want: [Int]?) -> UnsafeBufferPointer<Float> {
        guard logits else { return UnsafeBufferPointer(start: nil, count: 0) }
        forwards += 1
        let n = tokens.count / batch
        let sel = want ?? Array(0..<(batch * n))
        out = sel.flatMap { r -> [Float] in rows[r % n].map { Float(log($0)) } + [0] }
        return out.withUnsafeBufferPointer { UnsafeBufferPointer(start: $0.baseAddress, count: $0.count) }
    }
}

final class DecodingTests: XCTestCase {
    // Per position in a block: top-1 .5 .9 .7 .6 ; margin .05 .86 .42 .45 ; entropy .889 .434 .698 1.106
    //   confidence order 1,2,3,0   margin order 1,3,2,0   entropy order 1,2,0,3
    static let table: [[Double]] = [[0.50, 0.45, 0.03, 0.02], [0.90, 0.04, 0.03, 0.03],
                                    [0.70, 0.28, 0.01, 0.01], [0.60, 0.10, 0.15, 0.15]]

    /// Unmask steps of the 8 positions (two blocks of 4) and the NFE, for `policy` under `kind`/`steps`.
    func tableRun(_ policy: UnmaskPolicy, kind: SamplerKind = .firstHitting, steps: Int = 10, batch: Int = 1)
        throws -> [Canvas] {
        let settings = SamplerSettings(kind: kind, steps: steps, nucleus: 1, blockSize: 4, unmask: policy)
        let s = BlockSampler(engine: TableEngine(Self.table), settings: settings, maskId: 4)
        var cs = (0..<batch).map { i in
            Canvas(tokens: [Int32](repeating: 4, count: 8), confidence: [Float](repeating: 0, count: 8),
                   unmaskStep: [UInt32](repeating: 0, count: 8), nfe: 0, promptLength: 0, seed: canvasSeed(9, UInt64(i)))
        }
        s.run(&cs)
        return cs
    }

    func testPolicyStepsByHand() throws {
        // (policy, sampler, steps) → unmask step of positions 0..3 of block 0; block 1 repeats it after NFE0.
        let cases: [(UnmaskPolicy, SamplerKind, Int, [UInt32])] = [
            (.confidence, .firstHitting, 0, [4, 1, 2, 3]),
            (.margin, .firstHitting, 0, [4, 1, 3, 2]),
            (.entropy, .firstHitting, 0, [3, 1, 2, 4]),
            (.confidence, .ddpm, 2, [2, 1, 1, 2]),           // k = 2, 2
            (.confidence, .ddpm, 3, [3, 1, 2, 3]),           // k = ⌊4/3⌋−0, ⌊8/3⌋−1, 4−2 = 1, 1, 2
            (.entropy, .ddpm, 8, [3, 1, 2, 4]),              // T > n: empty steps cost no forward
            (.threshold(0.65), .firstHitting, 0, [3, 1, 1, 2]), // {1,2} > .65; then none: best (3); then 0
            (.threshold(0.95), .firstHitting, 0, [4, 1, 2, 3]), // never above: one per step, confidence order
            (.threshold(0), .ddpm, 2, [1, 1, 1, 1]),         // everything at once; the schedule is ignored
            (.entropyBounded(0.5), .firstHitting, 0, [2, 1, 1, 3]),  // {1: .434 ≤ .5 → +2}, {0: .889 > .5}, {3}
            (.entropyBounded(1.2), .firstHitting, 0, [1, 1, 1, 2]),  // .434+.698 = 1.132 ≤ 1.2 → +0; then 3
            (.entropyBounded(0), .firstHitting, 0, [3, 1, 2, 4]),    // one per step, entropy order
        ]
        for (policy, kind, steps, want) in cases {
            let c = try tableRun(policy, kind: kind, steps: steps)[0]
            let n0 = UInt64(want.max()!)
            XCTAssertEqual(Array(c.unmaskStep[0..<4]), want, "\(policy) \(kind) \(steps)")
            XCTAssertEqual(Array(c.unmaskStep[4..<8]), want.map { $0 + UInt32(n0) }, "\(policy) block 1")
            XCTAssertEqual(c.nfe, 2 * n0, "\(policy) \(kind) \(steps)")
            XCTAssertFalse(c.tokens.contains(4))
            // Snapshot confidence and margin recorded the same way for every policy.
            for i in 0..<8 {
                let p = Self.table[i % 4]
                XCTAssertEqual(Double(c.confidence[i]), p[Int(c.tokens[i])], accuracy: 1e-6)
                XCTAssertEqual(Double(c.margin[i]), topTwoMargin(p), accuracy: 1e-6)
            }
        }
    }

    func testPolicyRunsDoNotDependOnTheBatch() throws {
        for policy: UnmaskPolicy in [.confidence, .threshold(0.65), .entropyBounded(0.5)] {
            let alone = try (0..<3).map { i -> Canvas in
                // Canvas i of a batch of 3 has seed canvasSeed(9, i); alone it must come out the same.
                let settings = SamplerSettings(kind: .firstHitting, nucleus: 1, blockSize: 4, unmask: policy)
                let s = BlockSampler(engine: TableEngine(Self.table), settings: settings, maskId: 4)
                var cs = [Canvas(tokens: [Int32](repeating: 4, count: 8), confidence: [Float](repeating: 0, count: 8),
                                 unmaskStep: [UInt32](repeating: 0, count: 8), nfe: 0, promptLength: 0, seed: canvasSeed(9, UInt64(i)))]
                s.run(&cs)
                return cs[0]
            }
            let batched = try tableRun(policy, batch: 3)
            XCTAssertEqual(batched.map(\.tokens), alone.map(\.tokens), "\(policy)")
            XCTAssertEqual(batched.map(\.unmaskStep), alone.map(\.unmaskStep), "\(policy)")
        }
    }

    func testSelectionTiesScoresAndSchedule() throws {
        let s = PositionScore(position: 0, p: [0.5, 0.25, 0.25, 0])
        XCTAssertEqual(s.top1, 0.5); XCTAssertEqual(s.margin, 0.25)
        XCTAssertEqual(s.entropy, 1.5 * log(2.0), accuracy: 1e-12)
        // Equal scores: the lower position first.
        let tied = [7, 3, 5].map { PositionScore(position: $0, top1: 0.5, margin: 0.1, entropy: 1) }
        XCTAssertEqual(selectPositions(tied, policy: .confidence, k: 2), [3, 5])
        XCTAssertEqual(selectPositions(tied, policy: .entropy, k: 1), [3])
        XCTAssertEqual(selectPositions(tied, policy: .threshold(0.9), k: 1), [3])
        XCTAssertEqual(selectPositions(tied, policy: .confidence, k: 99), [3, 5, 7])
        XCTAssertEqual(stepCounts(masked: 5, steps: 2), [2, 3])
        XCTAssertEqual(stepCounts(masked: 3, steps: 8), [0, 0, 1, 0, 0, 1, 0, 1])
        XCTAssertEqual(stepCounts(masked: 3, steps: nil), [1, 1, 1])
        XCTAssertEqual(stepCounts(masked: 0, steps: 4), [])
    }

    func testParse() throws {
        XCTAssertEqual(try UnmaskPolicy.parse("random"), .random)
        XCTAssertEqual(try UnmaskPolicy.parse("margin"), .margin)
        XCTAssertEqual(try UnmaskPolicy.parse("threshold:0.9"), .threshold(0.9))
        XCTAssertEqual(try UnmaskPolicy.parse("eb:0.25"), .entropyBounded(0.25))
        for bad in ["", "best", "threshold", "threshold:1", "threshold:-0.1", "threshold:x", "eb:-1", "eb:nan", "confidence:2"] {
            XCTAssertThrowsError(try UnmaskPolicy.parse(bad), bad) { XCTAssert($0 is UsageError, bad) }
        }
        XCTAssertEqual(UnmaskPolicy.threshold(0.9).description, "threshold:0.9")
    }

    // MARK: on tiny DiTs

    func options(_ n: Int, length: Int, block: Int, _ policy: UnmaskPolicy) -> DraftOptions {
        var o = DraftOptions(); o.samples = n; o.length = length; o.blockSize = block; o.seed = 3
        o.entropyStop = false; o.unmask = policy; o.nucleus = 0.95
        return o
    }

    func testPoliciesWithKVCacheWithoutItAndAtAnyBatch() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 21), blockSize: 4)
        for policy: UnmaskPolicy in [.confidence, .margin, .entropy, .threshold(0.3), .entropyBounded(0.5)] {
            var o = options(3, length: 16, block: 4, policy)
            let one = try draftRecords(ck, o)
            o.batch = 3
            let three = try draftRecords(ck, o)
            o.batch = 2; o.kvCache = false
            let window = try draftRecords(ck, o)
            for (a, others) in [(one, three), (one, window)] {
                XCTAssertEqual(a.map(\.tokens), others.map(\.tokens), "\(policy)")
                XCTAssertEqual(a.map(\.unmaskStep), others.map(\.unmaskStep), "\(policy)")
                XCTAssertEqual(a.map(\.nfe), others.map(\.nfe), "\(policy)")
                for (x, y) in zip(a, others) {
                    for (u, v) in zip(x.confidence!, y.confidence!) { XCTAssertEqual(u, v, accuracy: 1e-4) }
                }
            }
            for r in one {
                XCTAssertFalse(r.tokens.contains(22))
                XCTAssert(r.stages[0].contains("unmask=\(policy)"), r.stages[0])
                XCTAssert(r.stages[0].contains("generated=15 "), r.stages[0])
                XCTAssert(r.stages[0].hasSuffix("finish=length"), r.stages[0])
            }
        }
    }

    func testConfidenceAndThresholdReplayWithThePlainForward() throws {
        // One global block of 8: replay each step with the model's own forward and recompute the selection.
        let model = makeSamplingModel(samplingConfig(), seed: 23)
        let ck = try loadCheckpoint(model, blockSize: 8)
        for policy: UnmaskPolicy in [.confidence, .threshold(0.2), .entropy] {
            var o = options(1, length: 8, block: 8, policy); o.nucleus = 1
            let r = try draftRecords(ck, o)[0]
            var x = [Int32](repeating: 22, count: 8); x[0] = 21
            for step in 1...UInt32(r.nfe) {
                let logits = x.withUnsafeBufferPointer { model.forward(tokens: $0, batch: 1, layout: .full, sigma: nil, training: false, dropoutSeed: 0) }
                let masked = (0..<8).filter { x[$0] == 22 }
                var top1: [Int: Double] = [:], ent: [Int: Double] = [:]
                for i in masked {
                    let p = subsProbabilities(logits: logits.baseAddress! + i * 23, count: 23, maskId: 22)
                    top1[i] = p.max()!
                    ent[i] = -p.filter { $0 > 0 }.reduce(0) { $0 + $1 * log($1) }
                }
                let got = Set((0..<8).filter { r.unmaskStep![$0] == step })
                let want: Set<Int>
                switch policy {
                case .confidence: want = [masked.max { top1[$0]! < top1[$1]! }!]
                case .entropy: want = [masked.min { ent[$0]! < ent[$1]! }!]
                default:
                    let above = masked.filter { top1[$0]! > 0.2 }
                    want = above.isEmpty ? [masked.max { top1[$0]! < top1[$1]! }!] : Set(above)
                }
                XCTAssertEqual(got, want, "\(policy) step \(step)")
                for i in got { x[i] = r.tokens[i] }
            }
            XCTAssertFalse(x.contains(22))
        }
    }

    func testSuffixStopOnlyOnGeneratedPositionsAndFinishFields() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 25), blockSize: 4)
        var o = options(2, length: 16, block: 4, .confidence)
        o.suffix = [5, 21, 6]                                   // an EOS inside the suffix
        for r in try draftRecords(ck, o, prompts: [[7, 21]]) { // and one inside the prompt
            XCTAssertEqual(Array(r.tokens[13...]), [5, 21, 6])
            XCTAssertEqual(Array(r.confidence![13...]), [1, 1, 1]); XCTAssertEqual(Array(r.unmaskStep![13...]), [0, 0, 0])
            XCTAssertEqual(Array(r.tokens[0..<3]), [21, 7, 21]); XCTAssertEqual(r.promptLength, 3)
            XCTAssert(r.stages[0].contains("generated=10 "), r.stages[0])
            XCTAssert(r.stages[0].hasSuffix("finish=length"), r.stages[0])
        }
        // Variable length: an EOS in the prompt must not end the sample; an EOS generated does.
        var v = options(6, length: 16, block: 4, .random); v.variableLength = true
        var sawStop = false
        for r in try draftRecords(ck, v, prompts: [[7, 21]]) {
            XCTAssertGreaterThan(r.tokens.count, 3)
            if r.stages[0].hasSuffix("finish=stop rule=eos") {
                sawStop = true
                XCTAssertEqual(r.tokens.last, 21)
                XCTAssertNil(r.tokens[3..<(r.tokens.count - 1)].firstIndex(of: 21))
            } else {
                XCTAssertEqual(r.tokens.count, 16); XCTAssert(r.stages[0].hasSuffix("finish=length"))
                XCTAssertNil(r.tokens[3...].firstIndex(of: 21))
            }
        }
        _ = sawStop   // either outcome is checked; which one occurs depends on the random model
        // Usage errors.
        var bad = options(1, length: 16, block: 4, .random); bad.suffix = [5]; bad.variableLength = true
        XCTAssertThrowsError(try draftRecords(ck, bad)) { XCTAssert($0 is UsageError) }
        bad = options(1, length: 4, block: 4, .random); bad.suffix = [5, 5, 5, 5]
        XCTAssertThrowsError(try draftRecords(ck, bad)) { XCTAssert($0 is UsageError) }
        let ar = try loadCheckpoint(makeSamplingModel(samplingConfig(causal: true), seed: 2), blockSize: 1)
        XCTAssertThrowsError(try draftRecords(ar, options(1, length: 8, block: 1, .confidence))) { XCTAssert($0 is UsageError) }
        var arSuffix = options(1, length: 8, block: 1, .random); arSuffix.suffix = [5]
        XCTAssertThrowsError(try draftRecords(ar, arSuffix)) { XCTAssert($0 is UsageError) }
    }

    func testTraceLinesCoverEveryGeneratedPosition() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 27), blockSize: 4)
        for policy: UnmaskPolicy in [.random, .threshold(0.1)] {
            let sink = MemorySink()
            let trace = TraceWriter(sink: sink)
            var o = options(2, length: 16, block: 4, policy); o.batch = 2
            let w = try TokenStreamWriter(sink: MemorySink(), header: ck.samplesHeader(tool: "draft", attributes: [:]))
            try runDraft(checkpoint: ck, options: o, prompts: [], writer: w, observer: trace)
            let recs = try draftRecords(ck, o)
            let lines = String(decoding: sink.bytes, as: UTF8.self).split(separator: "\n")
            XCTAssertEqual(lines.count, trace.lines)
            for r in recs {
                var seen: [Int] = [], lastNFE = 0
                for l in lines {
                    let j = try JSONSerialization.jsonObject(with: Data(l.utf8)) as! [String: Any]
                    guard (j["record"] as! Int) == Int(r.id) else { continue }
                    let ps = j["positions"] as! [Int], nfe = j["nfe"] as! Int, toks = j["tokens"] as! [Int]
                    XCTAssertGreaterThan(nfe, lastNFE); lastNFE = nfe
                    XCTAssertEqual(j["block"] as! Int, ps[0] / 4)
                    for (p, t) in zip(ps, toks) {
                        XCTAssertEqual(Int(r.tokens[p]), t); XCTAssertEqual(Int(r.unmaskStep![p]), nfe)
                    }
                    let cs = j["confidence"] as! [Double]
                    for (p, c) in zip(ps, cs) { XCTAssertEqual(Float(c), r.confidence![p]) }
                    seen += ps
                }
                XCTAssertEqual(seen.sorted(), Array(1..<16), "\(policy) record \(r.id)")
                XCTAssertEqual(UInt64(lastNFE), r.nfe)
            }
        }
    }

    func testTraceOfAnARDraft() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(causal: true), seed: 2), blockSize: 1)
        let sink = MemorySink()
        let trace = TraceWriter(sink: sink)
        var o = options(2, length: 8, block: 1, .random); o.batch = 2
        let w = try TokenStreamWriter(sink: MemorySink(), header: ck.samplesHeader(tool: "draft", attributes: [:]))
        try runDraft(checkpoint: ck, options: o, prompts: [], writer: w, observer: trace)
        let lines = String(decoding: sink.bytes, as: UTF8.self).split(separator: "\n")
        XCTAssertEqual(lines.count, 14, "7 tokens × 2 records")
        XCTAssert(lines[0].hasPrefix("{\"record\":0,\"block\":1,\"step\":1,\"positions\":[1],"), String(lines[0]))
    }

    // MARK: infill

    func testParseInfill() throws {
        XCTAssertEqual(try parseInfill("The [MASK:8] sat on the mat"), [.text("The "), .masks(8), .text(" sat on the mat")])
        XCTAssertEqual(try parseInfill("[MASK]a[MASK:2]"), [.masks(1), .text("a"), .masks(2)])
        XCTAssertEqual(try parseInfill("[MASKED] [MASK"), [.text("[MASKED] [MASK")])
        XCTAssertThrowsError(try parseInfill("x [MASK:0] y")) { XCTAssert($0 is UsageError) }
        XCTAssertThrowsError(try parseInfill("x [MASK:two] y")) { XCTAssert($0 is UsageError) }
    }

    func testInfillRecordsAndRefine() throws {
        // Bytes as tokens 0..<20 (a stand-in tokenizer): "ab" → [0, 1].
        let encode: ([UInt8]) -> [Int32] = { $0.map { Int32($0 - 97) } }
        let recs = try infillRecords(lines: ["ab[MASK:3]c", "", "[MASK]"], format: .text, encode: encode, special: testSpecial)
        XCTAssertEqual(recs.map(\.id), [0, 2], "blank lines are skipped, ids are line numbers")
        XCTAssertEqual(recs[0].tokens, [21, 0, 1, 22, 22, 22, 2])
        XCTAssertEqual(recs[0].confidence!, [1, 1, 1, 0, 0, 0, 1])
        XCTAssertEqual(recs[0].promptLength, 3)
        let js = try infillRecords(lines: ["{\"text\": \"[MASK:2]abcde\"}"], format: .jsonl, encode: encode, special: testSpecial)
        XCTAssertEqual(js[0].tokens, [21, 22, 22, 0, 1, 2, 3, 4]); XCTAssertEqual(js[0].promptLength, 1)
        XCTAssertThrowsError(try infillRecords(lines: ["no marker"], format: .text, encode: encode, special: testSpecial))
        XCTAssertThrowsError(try infillRecords(lines: ["not json [MASK]"], format: .jsonl, encode: encode, special: testSpecial))
        // Refine fills the masks only; given tokens (an EOS among them) stay.
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 29), blockSize: 4)
        let input = try infillRecords(lines: ["ab[MASK:2]c[MASK]d"], format: .text, encode: encode, special: testSpecial)
            + js.map { r -> TokenRecord in var r = r; r.id = 1; return r }
        let sink = MemorySink()
        let w = try TokenStreamWriter(sink: sink, header: ck.samplesHeader(tool: "refine", attributes: [:]))
        var it = input.makeIterator()
        var o = RefineOptions(); o.unmask = .confidence; o.batch = 2
        try runRefine(checkpoint: ck, options: o, next: { it.next() }, writer: w)
        try w.finish()
        let out = try TokenStreamReader(source: MemorySource(sink.bytes)).readAll()
        XCTAssertEqual(out.count, 2)
        for (a, b) in zip(input, out) {
            XCTAssertFalse(b.tokens.contains(22))
            for i in a.tokens.indices where a.tokens[i] != 22 { XCTAssertEqual(a.tokens[i], b.tokens[i]) }
            let holes = a.tokens.filter { $0 == 22 }.count
            XCTAssert(b.stages.last!.contains("generated=\(holes) "), b.stages.last!)
            XCTAssertEqual(b.stages.first, "infill")
        }
    }

    // MARK: remask margin / dilate, the margin field

    func testRemaskMarginAndDilate() throws {
        let r = TokenRecord(id: 0, tokens: Array(0..<10), confidence: [1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
                            unmaskStep: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], nfe: 9, promptLength: 1, stages: [],
                            margin: [1, 0.05, 0.9, 0.9, 0.9, 0.02, 0.9, 0.9, 0.9, 0.9])
        // margin: the two lowest margins (positions 5, 1) — not the lowest confidences (9, 8).
        let m = try remaskRecord(r, policy: .margin, ratio: 2.0 / 9, maskId: 99, seed: 0)
        XCTAssertEqual((0..<10).filter { m.tokens[$0] == 99 }, [1, 5])
        XCTAssertEqual(m.margin![5], 0); XCTAssertEqual(m.confidence![5], 0)
        // dilate 1, budget ⌊0.5·9⌋ = 4: seed 9 → 9, 8 (10 is outside); seed 8 taken, its ring adds 7; seed 7 taken →
        // 6. Snapshot order is 9, 8, 7, …
        let d = try remaskRecord(r, policy: .snapshot, ratio: 0.5, maskId: 99, seed: 0, dilate: 1)
        XCTAssertEqual((0..<10).filter { d.tokens[$0] == 99 }, [6, 7, 8, 9])
        // margin order 5, 1, …: 5 → 5, 4, 6; 1 → 1 (0 is the prompt) — exactly 4.
        let dm = try remaskRecord(r, policy: .margin, ratio: 0.5, maskId: 99, seed: 0, dilate: 1)
        XCTAssertEqual((0..<10).filter { dm.tokens[$0] == 99 }, [1, 4, 5, 6])
        XCTAssert(dm.stages.last!.contains("dilate=1"))
        // random with dilation: exactly k, never the prompt, seeded.
        let rd = try remaskRecord(r, policy: .random, ratio: 0.5, maskId: 99, seed: 4, dilate: 2)
        XCTAssertEqual(rd.tokens.filter { $0 == 99 }.count, 4); XCTAssertNotEqual(rd.tokens[0], 99)
        XCTAssertEqual(try remaskRecord(r, policy: .random, ratio: 0.5, maskId: 99, seed: 4, dilate: 2), rd)
        var noMargin = r; noMargin.margin = nil
        XCTAssertThrowsError(try remaskRecord(noMargin, policy: .margin, ratio: 0.5, maskId: 99, seed: 0))
    }

    func testMarginFieldIsFormatV2AndV1StreamsStayV1() throws {
        var h = StreamHeader(kind: .samples, vocabSize: 30, fields: [.confidence, .unmaskStep])
        let rec = TokenRecord(id: 3, tokens: [1, 2], confidence: [1, 0.5], unmaskStep: [0, 1], nfe: 1, promptLength: 1)
        for withMargin in [false, true] {
            if withMargin { h.fields.insert(.margin) }
            var r = rec
            if withMargin { r.margin = [1, 0.25] }
            let sink = MemorySink()
            let w = try TokenStreamWriter(sink: sink, header: h, compress: false)
            try w.write(r); try w.finish()
            XCTAssertEqual(sink.bytes[8], withMargin ? 2 : 1, "format version")
            let back = try TokenStreamReader(source: MemorySource(sink.bytes)).readAll()
            XCTAssertTrue(back[0].isBitwiseEqual(to: r))
            // A record without margins in a stream that declares them is a bug, refused.
            if withMargin {
                let w2 = try TokenStreamWriter(sink: MemorySink(), header: h)
                XCTAssertThrowsError(try w2.write(rec))
            }
        }
        // A v1 header declaring the margin bit is corrupt.
        let sink = MemorySink()
        let w = try TokenStreamWriter(sink: sink, header: h, compress: false)
        try w.finish()
        var bytes = sink.bytes
        bytes[8] = 1
        XCTAssertThrowsError(try TokenStreamReader(source: MemorySource(bytes)).readAll())
    }

    func testDraftMarginsThroughRemaskAndRefine() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 31), blockSize: 4)
        var h = ck.samplesHeader(tool: "draft", attributes: [:]); h.fields.insert(.margin)
        let sink = MemorySink()
        let w = try TokenStreamWriter(sink: sink, header: h)
        try runDraft(checkpoint: ck, options: options(2, length: 16, block: 4, .margin), prompts: [], writer: w)
        try w.finish()
        let drafts = try TokenStreamReader(source: MemorySource(sink.bytes)).readAll()
        for r in drafts {
            XCTAssertEqual(r.margin!.count, 16); XCTAssertEqual(r.margin![0], 1)
            for i in 1..<16 { XCTAssert(r.margin![i] >= 0 && r.margin![i] <= 1) }
        }
        let masked = try drafts.map { try remaskRecord($0, policy: .margin, ratio: 0.5, maskId: 22, seed: 0) }
        let out = MemorySink()
        let w2 = try TokenStreamWriter(sink: out, header: h)
        var it = masked.makeIterator()
        try runRefine(checkpoint: ck, options: RefineOptions(), next: { it.next() }, writer: w2)
        try w2.finish()
        for (a, b) in zip(masked, try TokenStreamReader(source: MemorySource(out.bytes)).readAll()) {
            for i in 0..<16 where a.tokens[i] != 22 { XCTAssertEqual(a.margin![i], b.margin![i]) }
            for i in 0..<16 where a.tokens[i] == 22 { XCTAssertGreaterThanOrEqual(b.margin![i], 0) }
        }
    }

    // MARK: CLI

    func testTokenizeDecodeStreamsEachRecordAsItArrives() throws {
        var words = BPETrainer.WordCounts()
        words.add(document: Array("the cat sat on the mat".utf8))
        let tok = try BPETrainer(vocabSize: 256 + 3 + 2).train(words)
        let tokPath = NSTemporaryDirectory() + "bd3-decode-\(UUID().uuidString).json"
        try tok.hfJSON().write(to: URL(fileURLWithPath: tokPath))
        let p = cliProcess(try cliBinary("tokenize"), ["decode", "-t", tokPath])
        let input = Pipe(), output = Pipe()
        p.standardInput = input; p.standardOutput = output; p.standardError = Pipe()
        try p.run()
        let sink = FileSink(fd: input.fileHandleForWriting.fileDescriptor, name: "pipe")
        let w = try TokenStreamWriter(sink: sink, header: StreamHeader(kind: .documents, vocabSize: tok.vocabSize,
                                                                       tokenizerFingerprint: tok.fingerprint))
        try w.write(TokenRecord(id: 0, tokens: tok.encode(Array("the cat".utf8))))
        // The stream is still open: the first line must arrive anyway.
        var got: [UInt8] = []
        let reader = output.fileHandleForReading
        let deadline = Date().addingTimeInterval(60)
        while !got.contains(0x0A) && Date() < deadline {
            let d = reader.availableData
            if d.isEmpty { break }
            got += d
        }
        XCTAssertEqual(String(decoding: got, as: UTF8.self), "the cat\n")
        try w.write(TokenRecord(id: 1, tokens: tok.encode(Array("sat".utf8))))
        try w.finish()
        try input.fileHandleForWriting.close()
        let rest = reader.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        XCTAssertEqual(String(decoding: rest, as: UTF8.self), "sat\n")
    }

    func testCLIUsageErrorsAndRefusals() throws {
        let ckPath = try saveCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 33), blockSize: 4)
        let draft = try cliBinary("draft"), refine = try cliBinary("refine"), remask = try cliBinary("remask")
        let out = NSTemporaryDirectory() + "bd3-decode-\(UUID().uuidString).tok"
        for args in [["--unmask", "best"], ["--unmask", "threshold:2"], ["--suffix", "x"], ["--trace", ""]] {
            let r = try runCLI(draft, ["-m", ckPath, "--length", "16", "-o", out] + args)
            XCTAssertEqual(r.code, 64, "\(args): \(r.err)")
        }
        XCTAssertEqual(try runCLI(refine, ["-m", ckPath, "--infill", "x.txt", "-o", out]).code, 64)
        // A draft with a trace and margins, then remask margin + dilate, then refine with a policy.
        let trace = out + ".trace.jsonl"
        let d = try runCLI(draft, ["-m", ckPath, "-n", "2", "--length", "16", "--unmask", "eb:0.5", "--margins",
                                   "--no-entropy-stop", "--trace", trace, "-o", out])
        XCTAssertEqual(d.code, 0, d.err)
        XCTAssertGreaterThan(try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n").count, 1)
        let m = try runCLI(remask, ["--policy", "margin", "--ratio", "0.5", "--dilate", "1", "-i", out, "-o", out + ".m"])
        XCTAssertEqual(m.code, 0, m.err)
        let f = try runCLI(refine, ["-m", ckPath, "--unmask", "threshold:0.5", "--block-size", "16", "-i", out + ".m", "-o", out + ".r"])
        XCTAssertEqual(f.code, 0, f.err)
        let recs = try TokenStreamReader(path: out + ".r").readAll()
        XCTAssertEqual(recs.count, 2)
        XCTAssertNotNil(recs[0].margin, "refine keeps the margin field of its input")
        XCTAssertEqual(recs[0].stages.count, 3)
        // Margins asked of a stream without them: a runtime refusal with what to do.
        let plain = try runCLI(draft, ["-m", ckPath, "--length", "16", "--no-entropy-stop", "-o", out + ".p"])
        XCTAssertEqual(plain.code, 0, plain.err)
        let bad = try runCLI(remask, ["--policy", "margin", "--ratio", "0.5", "-i", out + ".p", "-o", out + ".q"])
        XCTAssertEqual(bad.code, 1); XCTAssert(bad.err.contains("--margins"), bad.err)
    }

    func testTerminalViewRedrawsTheBlock() throws {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let view = TerminalView(decode: { $0.map { String(UnicodeScalar(UInt8(97 + $0))) }.joined() }, maskId: 4, fd: fds[1])
        let settings = SamplerSettings(kind: .firstHitting, nucleus: 1, blockSize: 4, unmask: .confidence)
        let s = BlockSampler(engine: TableEngine(Self.table), settings: settings, maskId: 4)
        s.onStep = { step, c in view.step(record: 5, step, canvas: c) }
        var cs = [Canvas(tokens: [Int32](repeating: 4, count: 8), confidence: [Float](repeating: 0, count: 8),
                         unmaskStep: [UInt32](repeating: 0, count: 8), nfe: 0, promptLength: 0, seed: 1)]
        s.run(&cs)
        view.finish()
        close(fds[1])
        let text = String(decoding: FileHandle(fileDescriptor: fds[0], closeOnDealloc: true).readDataToEndOfFile(), as: UTF8.self)
        // Step 1 of block 0 unmasks position 1 (confidence order 1, 2, 3, 0): "░x░░".
        let first = String(UnicodeScalar(UInt8(97 + cs[0].tokens[1])))
        XCTAssert(text.contains("[5 b0 s1 nfe 1] ░\(first)░░"), text)
        XCTAssert(text.contains("[5 b1 s4 nfe 8] "), text)
        XCTAssertEqual(text.filter { $0 == "\n" }.count, 2, "one line per block")
    }
}
