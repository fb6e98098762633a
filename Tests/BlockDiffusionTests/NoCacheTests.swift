// The no-KV-cache sampling path (WindowDiT, `draft/refine --no-kv-cache`) against the cached one.
//
// Within the model length both compute the same conditional p_x0 (only float summation order differs), and the
// samplers' randomness does not depend on the logits as long as the set of non-zero probabilities is the same:
// the first-hitting position is drawn before the forward, and Gumbel-max uses one U per non-zero entry. With
// nucleus = 1 every non-mask entry is non-zero, so both paths consume the RNG identically and a fixed seed gives
// the same tokens unless two Gumbel-perturbed scores tie within ~1e-6 relative (the check is deterministic
// for a fixed seed: it cannot flake, only a real difference in the conditionals changes its outcome). So the
// checks are: tokens, unmask steps and NFE identical; confidences equal within 1e-4.
// Past the model length the paths differ by design; there the no-cache path is checked against the model's own
// .blockCausal forward on the reference's sliding window.
import XCTest
@testable import BlockDiffusion

final class NoCacheTests: XCTestCase {
    func options(_ n: Int, length: Int, block: Int?, kvCache: Bool, seed: UInt64 = 3) -> DraftOptions {
        var o = DraftOptions(); o.samples = n; o.length = length; o.blockSize = block; o.seed = seed
        o.entropyStop = false; o.kvCache = kvCache; o.batch = 2
        return o
    }

    func assertSameSamples(_ a: [TokenRecord], _ b: [TokenRecord], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, file: file, line: line)
        for (x, y) in zip(a, b) {
            XCTAssertEqual(x.id, y.id, file: file, line: line)
            XCTAssertEqual(x.tokens, y.tokens, "record \(x.id): tokens differ", file: file, line: line)
            XCTAssertEqual(x.unmaskStep, y.unmaskStep, file: file, line: line)
            XCTAssertEqual(x.nfe, y.nfe, file: file, line: line)
            XCTAssertEqual(x.promptLength, y.promptLength, file: file, line: line)
            for (c, d) in zip(x.confidence!, y.confidence!) { XCTAssertEqual(c, d, accuracy: 1e-4, file: file, line: line) }
        }
    }

    func testDraftWithoutCacheEqualsCachedWithinTheModelLength() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 21), blockSize: 4)
        // BD3 L'=4, first-hitting, prompt crossing into block 1 (full window = the model length at the end).
        let cached = try draftRecords(ck, options(3, length: 16, block: 4, kvCache: true), prompts: [[5, 6, 7, 8, 9]])
        let plain = try draftRecords(ck, options(3, length: 16, block: 4, kvCache: false), prompts: [[5, 6, 7, 8, 9]])
        assertSameSamples(cached, plain)
        XCTAssert(plain[0].stages[0].contains("kv-cache=off nfe=10 "), plain[0].stages[0])
        XCTAssertFalse(cached[0].stages[0].contains("kv-cache"))
        // DDPM (p_x0 reuse without NFE), L'=2.
        var oc = options(2, length: 12, block: 2, kvCache: true); oc.sampler = .ddpm; oc.steps = 7
        var on = oc; on.kvCache = false
        assertSameSamples(try draftRecords(ck, oc), try draftRecords(ck, on))
        // MDLM-style global block and AR.
        assertSameSamples(try draftRecords(ck, options(2, length: 16, block: 16, kvCache: true)),
                          try draftRecords(ck, options(2, length: 16, block: 16, kvCache: false)))
        let ar = try loadCheckpoint(makeSamplingModel(samplingConfig(causal: true, length: 16), seed: 22), blockSize: 1)
        assertSameSamples(try draftRecords(ar, options(2, length: 16, block: nil, kvCache: true), prompts: [[3, 4]]),
                          try draftRecords(ar, options(2, length: 16, block: nil, kvCache: false), prompts: [[3, 4]]))
    }

    func testRefineWithoutCacheEqualsCached() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 23), blockSize: 4)
        let drafts = try draftRecords(ck, options(2, length: 16, block: 4, kvCache: true))
        var masked: [TokenRecord] = []
        for r in drafts { masked.append(try remaskRecord(r, policy: .random, ratio: 0.5, maskId: 22, seed: 9)) }
        func refine(_ kv: Bool, block: Int) throws -> [TokenRecord] {
            let src = MemorySink()
            let w = try TokenStreamWriter(sink: src, header: ck.samplesHeader(tool: "remask", attributes: [:]))
            for r in masked { try w.write(r) }
            try w.finish()
            var o = RefineOptions(); o.blockSize = block; o.seed = 4; o.batch = 2; o.kvCache = kv
            let out = MemorySink()
            let ow = try TokenStreamWriter(sink: out, header: ck.samplesHeader(tool: "refine", attributes: [:]))
            try runRefine(checkpoint: ck, options: o, reader: try TokenStreamReader(source: MemorySource(src.bytes)), writer: ow)
            try ow.finish()
            return try TokenStreamReader(source: MemorySource(out.bytes)).readAll()
        }
        for block in [4, 16] {
            let a = try refine(true, block: block), b = try refine(false, block: block)
            assertSameSamples(a, b)
            XCTAssertNotEqual(a.map(\.tokens), drafts.map(\.tokens), "refine changed nothing")
        }
    }

    func testWindowEngineSlidesLikeTheReferencePastTheModelLength() throws {
        // Model length 8, L' = 4: after 5 committed blocks the window is the last block + the current one.
        let model = makeSamplingModel(samplingConfig(length: 8), seed: 24)
        let win = try WindowDiT(model: model, maxBatch: 2, maxChunk: 4, capacity: 8)
        let cache = try CachedDiT(model: model, maxBatch: 2, maxChunk: 4, capacity: 8)
        var rng = SplitMix64(seed: 5)
        let seq = (0..<2).map { _ in (0..<24).map { _ in Int32(rng.next() % 22) } }
        for blk in 0..<5 {
            let t = seq.flatMap { Array($0[(blk * 4)..<(blk * 4 + 4)]) }
            win.forward(tokens: t, batch: 2, store: true, logits: false)
            cache.forward(tokens: t, batch: 2, store: true, logits: false)
        }
        XCTAssertEqual(win.forwards, 0, "a store-only call runs no forward without a cache")
        var cur = seq.flatMap { Array($0[20..<24]) }
        cur[1] = 22; cur[6] = 22                                        // a noisy block
        let w = Array(win.forward(tokens: cur, batch: 2, store: false, rows: [1, 6]))
        let c = Array(cache.forward(tokens: cur, batch: 2, store: false, rows: [1, 6]))
        XCTAssertEqual(win.forwards, 1); XCTAssertEqual(win.windowTokens, 2 * 8)
        // Reference window: [16, 24) through .blockCausal(4), last 4 rows.
        let ref = DiT(config: model.config, maxBatch: 2, maxTokens: 8)
        ref.parameters.update(from: UnsafeBufferPointer(model.parameters))
        var x = seq.flatMap { Array($0[16..<24]) }
        x[5] = 22; x[14] = 22
        let r = x.withUnsafeBufferPointer { Array(ref.forward(tokens: $0, batch: 2, layout: .blockCausal(blockSize: 4), sigma: nil, training: false, dropoutSeed: 0)) }
        let V = 23
        var maxDiffRef: Float = 0, maxDiffCache: Float = 0
        for (k, row) in [1, 4 + 2].enumerated() {
            for v in 0..<V {
                maxDiffRef = max(maxDiffRef, abs(w[k * V + v] - r[row * V + v]))
                maxDiffCache = max(maxDiffCache, abs(w[k * V + v] - c[k * V + v]))
            }
        }
        XCTAssertLessThan(maxDiffRef, 1e-4, "no-cache forward is not the reference window forward")
        // The cached path keeps k/v of block 4 computed with the dropped blocks 0–3: a different conditional.
        XCTAssertGreaterThan(maxDiffCache, 1e-3, "past the model length the two paths should differ")
    }

    func testNoCacheDraftPastTheModelLengthReplaysTheSlidingWindow() throws {
        // Length 20, model length 8, L' = 4: every write replayed with .blockCausal on the window [max(end−8, 0), end).
        let model = makeSamplingModel(samplingConfig(length: 8), seed: 25)
        let ck = try loadCheckpoint(model, blockSize: 4)
        let recs = try draftRecords(ck, options(2, length: 20, block: 4, kvCache: false))
        let ref = DiT(config: model.config, maxBatch: 1, maxTokens: 8)
        ref.parameters.update(from: UnsafeBufferPointer(model.parameters))
        for r in recs {
            XCTAssertEqual(r.nfe, 19); XCTAssertFalse(r.tokens.contains(22))
            let order = (1..<20).sorted { r.unmaskStep![$0] < r.unmaskStep![$1] }
            var x = [Int32](repeating: 22, count: 20); x[0] = 21
            for pos in order {
                let end = (pos / 4 + 1) * 4
                let win = Array(x[max(0, end - 8)..<end])
                let logits = win.withUnsafeBufferPointer { ref.forward(tokens: $0, batch: 1, layout: .blockCausal(blockSize: 4), sigma: nil, training: false, dropoutSeed: 0) }
                let p = subsProbabilities(logits: logits.baseAddress! + (pos % 4) * 23, count: 23, maskId: 22)
                XCTAssertEqual(Double(r.confidence![pos]), p[Int(r.tokens[pos])], accuracy: 1e-4, "pos \(pos)")
                x[pos] = r.tokens[pos]
            }
        }
    }
}
