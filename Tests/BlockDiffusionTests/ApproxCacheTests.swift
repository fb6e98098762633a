// refine and draft --approx-cache K (Sampling/ReuseForward.swift, BlockSampler.stepForward): the partial forward against its
// naive twin and against the exact forward; K = 1 is the exact sampler; K ≥ 2 fills every mask, does not depend on
// --batch, and its first step after a refresh stays within the stated tolerance of the exact probabilities.
//
// Tolerance (first step after a refresh, teacher-forced: both forwards see the same canvas after one token was
// written into a refreshed block): the reused k/v of the clean rows miss that one token's influence from layer 1
// on. On the tiny random test model the per-step probabilities move by max |Δp| ≈ 0.027, mean ≈ 1.4e-3 (measured
// here); the test asserts max |Δp| ≤ 0.05 and mean |Δp| ≤ 0.005 (docs/sampling.md quotes the same bound; the
// measured divergence of whole refinements with a trained model is in docs/benchmarks.md).
import XCTest
@testable import BlockDiffusion

let approxFirstStepMaxError = 0.05
let approxFirstStepMeanError = 0.005

final class ApproxCacheTests: XCTestCase {
    let V = 23, mask: Int32 = 22

    /// Canvases of length L with about a third masked (never position 0).
    func canvases(_ B: Int, _ L: Int, seed: UInt64) -> [Int32] {
        var rng = SplitMix64(seed: seed)
        return (0..<(B * L)).map { i in i % L > 0 && rng.next() % 3 == 0 ? mask : Int32(rng.next() % 21) }
    }

    func probs(_ logits: UnsafeBufferPointer<Float>, _ k: Int) -> [Double] {
        subsProbabilities(logits: logits.baseAddress! + k * V, count: V, maskId: Int(mask))
    }

    /// Computing every row of the chunk is the exact forward, bit for bit (global block, and a block over cached
    /// clean blocks); recomputing a subset with unchanged tokens gives the exact rows too.
    func testEveryRowAndUnchangedTokensEqualTheExactForward() throws {
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 51)
        for dtype in WeightDType.allCases {
            let e = try CachedDiT(weights: InferenceWeights(model: model, dtype: dtype), maxBatch: 3, maxChunk: 16, capacity: 16)
            for (prefix, n) in [(0, 16), (8, 4)] {
                let B = 3
                let ctx = canvases(B, 16, seed: 1).map { $0 == mask ? 5 : $0 }
                let chunk = canvases(B, n, seed: 2)
                e.reset()
                if prefix > 0 { e.forward(tokens: (0..<B).flatMap { b in ctx[(b * 16)..<(b * 16 + prefix)] }, batch: B, store: true, logits: false) }
                let exact = Array(e.forward(tokens: chunk, batch: B, store: false))
                let all = Array(0..<(B * n)), some = [1, n + 2, 2 * n + n - 1]
                let every = Array(e.forwardReusing(tokens: chunk, batch: B, compute: all, rows: all))
                XCTAssertEqual(every.map(\.bitPattern), exact.map(\.bitPattern), "\(dtype) prefix \(prefix): every row")
                let sub = Array(e.forwardReusing(tokens: chunk, batch: B, compute: some, rows: some.reversed()))
                for (j, r) in some.reversed().enumerated() {
                    XCTAssertEqual(sub[(j * V)..<((j + 1) * V)].map(\.bitPattern), exact[(r * V)..<((r + 1) * V)].map(\.bitPattern), "\(dtype) row \(r)")
                }
            }
        }
    }

    /// After a refresh, tokens change (two masks decoded); the partial forward over masked ∪ changed rows equals
    /// its naive twin (logits and the cache slots it rewrote), and differs from the exact forward (the others'
    /// k/v really are reused).
    func testPartialForwardMatchesNaiveTwin() throws {
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 52)
        for dtype in WeightDType.allCases {
            let w = try InferenceWeights(model: model, dtype: dtype)
            let cap = 16, B = 2, n = 12, prefix = 4
            let e = try CachedDiT(weights: w, maxBatch: B, maxChunk: n, capacity: cap)
            let ctx = canvases(B, prefix, seed: 3).map { $0 == mask ? 7 : $0 }
            var chunk = canvases(B, n, seed: 4)
            e.forward(tokens: ctx, batch: B, store: true, logits: false)
            e.forward(tokens: chunk, batch: B, store: false, logits: false)          // the refresh
            var changed: [Int] = []
            for b in 0..<B {
                for i in (0..<n).filter({ chunk[b * n + $0] == mask }).prefix(2) { chunk[b * n + i] = Int32(3 + i); changed.append(b * n + i) }
            }
            let compute = (0..<(B * n)).filter { chunk[$0] == mask || changed.contains($0) }
            let rows = compute.filter { chunk[$0] == mask }
            var kc = e.kCache.map { Array($0) }, vc = e.vCache.map { Array($0) }
            let naive = naiveForwardReusing(weights: w, kCache: &kc, vCache: &vc, capacity: cap, cached: prefix,
                                            tokens: chunk, batch: B, compute: compute, rows: rows)
            let fast = Array(e.forwardReusing(tokens: chunk, batch: B, compute: compute, rows: rows))
            XCTAssertEqual(fast.count, naive.count)
            for i in fast.indices { XCTAssertEqual(fast[i], naive[i], accuracy: 2e-4 + 2e-4 * abs(naive[i]), "\(dtype) logit \(i)") }
            for l in 0..<model.config.nBlocks {
                for i in kc[l].indices {
                    XCTAssertEqual(e.kCache[l][i], kc[l][i], accuracy: 1e-4, "\(dtype) k layer \(l)")
                    XCTAssertEqual(e.vCache[l][i], vc[l][i], accuracy: 1e-4, "\(dtype) v layer \(l)")
                }
            }
            let exact = Array(e.forward(tokens: chunk, batch: B, store: false, rows: rows))
            XCTAssertGreaterThan(zip(exact, fast).map { abs($0 - $1) }.max()!, 1e-4, "\(dtype): the reuse changed nothing")
        }
    }

    /// The first step after a refresh (teacher-forced), per-step SUBS probabilities of the masked rows.
    func testFirstStepAfterRefreshWithinTolerance() throws {
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 53)
        let e = try CachedDiT(weights: InferenceWeights(model: model, dtype: .fp32), maxBatch: 4, maxChunk: 16, capacity: 16)
        var rng = SplitMix64(seed: 9)
        var maxErr = 0.0, sum = 0.0, count = 0
        for trial in 0..<8 {
            let B = 4, n = 16
            var chunk = canvases(B, n, seed: 100 + UInt64(trial))
            e.reset()
            let all = Array(0..<(B * n))
            let first = Array(e.forward(tokens: chunk, batch: B, store: false))   // refresh
            // Each canvas decodes one masked position from the refresh's probabilities.
            var changed: [Int] = []
            for b in 0..<B {
                let masked = (0..<n).filter { chunk[b * n + $0] == mask }
                guard masked.count >= 2 else { continue }
                let pos = masked[Int(rng.next() % UInt64(masked.count))], r = b * n + pos
                let p = first.withUnsafeBufferPointer { subsProbabilities(logits: $0.baseAddress! + r * V, count: V, maskId: Int(mask)) }
                chunk[r] = Int32(gumbelSample(p: p, rng: &rng)); changed.append(r)
            }
            let compute = all.filter { chunk[$0] == mask || changed.contains($0) }
            let rows = compute.filter { chunk[$0] == mask }
            let approx = Array(e.forwardReusing(tokens: chunk, batch: B, compute: compute, rows: rows))
            e.reset()
            let exact = Array(e.forward(tokens: chunk, batch: B, store: false, rows: rows))
            for k in rows.indices {
                let pa = approx.withUnsafeBufferPointer { probs($0, k) }, pe = exact.withUnsafeBufferPointer { probs($0, k) }
                for v in 0..<V { let d = abs(pa[v] - pe[v]); maxErr = max(maxErr, d); sum += d; count += 1 }
            }
        }
        print("approx-cache first step after refresh: max |Δp| \(maxErr), mean \(sum / Double(count)) over \(count)")
        XCTAssertLessThanOrEqual(maxErr, approxFirstStepMaxError)
        XCTAssertLessThanOrEqual(sum / Double(count), approxFirstStepMeanError)
        XCTAssertGreaterThan(maxErr, 0, "the reused k/v gave the exact probabilities: nothing was reused")
    }

    func stream(_ ck: SamplingCheckpoint, _ records: [TokenRecord]) throws -> TokenStreamReader {
        let src = MemorySink()
        let w = try TokenStreamWriter(sink: src, header: ck.samplesHeader(tool: "draft", attributes: [:]))
        for r in records { try w.write(r) }
        try w.finish()
        return try TokenStreamReader(source: MemorySource(src.bytes))
    }

    func refine(_ ck: SamplingCheckpoint, _ masked: [TokenRecord], _ configure: (inout RefineOptions) -> Void) throws -> [TokenRecord] {
        var o = RefineOptions(); o.seed = 6
        configure(&o)
        let out = MemorySink()
        let w = try TokenStreamWriter(sink: out, header: ck.samplesHeader(tool: "refine", attributes: [:]))
        try runRefine(checkpoint: ck, options: o, reader: try stream(ck, masked), writer: w)
        try w.finish()
        return try TokenStreamReader(source: MemorySource(out.bytes)).readAll()
    }

    func assertSame(_ a: [TokenRecord], _ b: [TokenRecord], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        for (x, y) in zip(a, b) {
            XCTAssertEqual(x.tokens, y.tokens, "\(what): record \(x.id)", file: file, line: line)
            XCTAssertEqual(x.confidence?.map(\.bitPattern), y.confidence?.map(\.bitPattern), "\(what): record \(x.id)", file: file, line: line)
            XCTAssertEqual(x.unmaskStep, y.unmaskStep, what, file: file, line: line)
            XCTAssertEqual(x.nfe, y.nfe, what, file: file, line: line)
        }
    }

    /// K = 1 is the exact sampler (tokens and confidences bit for bit); K = 2, 4 fill every mask, record the option
    /// and give the same records at --batch 1 and 4; K ≥ 2 does change something over a run.
    func testRefineWithApproxCache() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 54), blockSize: 4)
        var d = DraftOptions(); d.samples = 6; d.length = 16; d.blockSize = 4; d.seed = 3; d.entropyStop = false; d.batch = 6
        let drafts = try draftRecords(ck, d)
        let masked = try drafts.map { try remaskRecord($0, policy: .random, ratio: 0.6, maskId: mask, seed: 2) }
        var differs = false
        for (sampler, unmask, block) in [(SamplerKind.firstHitting, UnmaskPolicy.random, 16), (.firstHitting, .random, 8),
                                          (.ddpm, .random, 16), (.firstHitting, .confidence, 16)] {
            let what = "\(sampler) \(unmask) B=\(block)"
            func run(_ K: Int, _ batch: Int) throws -> [TokenRecord] {
                try refine(ck, masked) { o in o.sampler = sampler; o.unmask = unmask; o.blockSize = block; o.steps = 6; o.approxCache = K; o.batch = batch }
            }
            let exact = try run(0, 4)
            assertSame(exact, try run(1, 4), "\(what): K=1")
            for K in [2, 4] {
                let a = try run(K, 1), b = try run(K, 4)
                assertSame(a, b, "\(what) K=\(K): batch 1 vs 4")
                for r in a {
                    XCTAssertFalse(r.tokens.contains(mask), "\(what) K=\(K): a mask is left")
                    XCTAssert(r.stages.last!.contains("approx-cache=\(K)"), r.stages.last!)
                }
                for (x, y) in zip(a, exact) where x.tokens != y.tokens || x.confidence != y.confidence { differs = true }
            }
        }
        XCTAssertTrue(differs, "--approx-cache 2/4 reproduced the exact runs everywhere: the reuse never ran")
        XCTAssertThrowsError(try refine(ck, masked) { $0.approxCache = 2; $0.kvCache = false }) { XCTAssert($0 is UsageError) }
        XCTAssertThrowsError(try refine(ck, masked) { $0.approxCache = -1 }) { XCTAssert($0 is UsageError) }
    }

    /// The CLI: a negative K and K with --no-kv-cache are usage errors (exit 64, the option named); a run records
    /// the option in its stage entry.
    func testRefineCommandLineApproxCache() throws {
        let refineTool = try cliBinary("refine")
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 55), blockSize: 4)
        var d = DraftOptions(); d.samples = 2; d.length = 16; d.blockSize = 4; d.entropyStop = false
        let masked = try draftRecords(ck, d).map { try remaskRecord($0, policy: .random, ratio: 0.5, maskId: mask, seed: 1) }
        let input = NSTemporaryDirectory() + "bd3-approx-\(UUID().uuidString).tok", out = input + ".out"
        defer { for p in [input, out] { try? FileManager.default.removeItem(atPath: p) } }
        let file = try OutputFile(path: input, allowTerminal: true)
        let w = try TokenStreamWriter(sink: file, header: ck.samplesHeader(tool: "remask", attributes: [:]))
        for r in masked { try w.write(r) }
        try w.finish(); try file.commit()
        for bad in [["--approx-cache", "-1"], ["--approx-cache", "2", "--no-kv-cache"]] {
            let r = try runCLI(refineTool, ["-m", ck.path, "--block-size", "16", "-i", input, "-o", out] + bad)
            XCTAssertEqual(r.code, 64, r.err)
            XCTAssert(r.err.contains("--approx-cache"), r.err)
        }
        let ok = try runCLI(refineTool, ["-m", ck.path, "--block-size", "16", "--approx-cache", "3", "-i", input, "-o", out])
        XCTAssertEqual(ok.code, 0, ok.err)
        let recs = try TokenStreamReader(path: out).readAll()
        XCTAssertEqual(recs.count, 2)
        for r in recs { XCTAssert(r.stages.last!.contains("approx-cache=3"), r.stages.last!); XCTAssertFalse(r.tokens.contains(mask)) }
    }

    /// draft --approx-cache K: K = 1 is the exact sampler (bit for bit); K = 2, 4 fill every position, record the
    /// option, give the same records at --batch 1 and 4 (also with a prompt and with the unfused store), and K ≥ 2
    /// changes something over the runs. Refused with --no-kv-cache, for a negative K and for an AR checkpoint.
    func testDraftWithApproxCache() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 56), blockSize: 4)
        var differs = false
        for (sampler, unmask, block) in [(SamplerKind.firstHitting, UnmaskPolicy.random, 16), (.firstHitting, .random, 8),
                                          (.ddpm, .random, 4), (.firstHitting, .confidence, 16)] {
            let what = "\(sampler) \(unmask) B=\(block)"
            func run(_ K: Int, _ batch: Int, fold: Bool = true, prompts: [[Int32]] = []) throws -> [TokenRecord] {
                var o = DraftOptions(); o.samples = 4; o.length = 16; o.blockSize = block; o.seed = 5; o.entropyStop = false
                o.sampler = sampler; o.unmask = unmask; o.steps = 6; o.approxCache = K; o.batch = batch; o.foldStore = fold
                return try draftRecords(ck, o, prompts: prompts)
            }
            assertSame(try run(0, 4), try run(1, 4), "\(what): K=1")
            let exact = try run(0, 4)
            for K in [2, 4] {
                let a = try run(K, 1), b = try run(K, 4)
                assertSame(a, b, "\(what) K=\(K): batch 1 vs 4")
                assertSame(a, try run(K, 4, fold: false), "\(what) K=\(K): unfused store")
                assertSame(try run(K, 1, prompts: [[3, 4, 5]]), try run(K, 4, prompts: [[3, 4, 5]]), "\(what) K=\(K): prompted")
                for r in a {
                    XCTAssertFalse(r.tokens.contains(mask), "\(what) K=\(K): a mask is left")
                    XCTAssert(r.stages.last!.contains("approx-cache=\(K)"), r.stages.last!)
                }
                for (x, y) in zip(a, exact) where x.tokens != y.tokens || x.confidence != y.confidence { differs = true }
            }
        }
        XCTAssertTrue(differs, "draft --approx-cache 2/4 reproduced the exact runs everywhere: the reuse never ran")
        var o = DraftOptions(); o.samples = 2; o.length = 16; o.blockSize = 4; o.entropyStop = false; o.approxCache = 2
        var noCache = o; noCache.kvCache = false
        XCTAssertThrowsError(try draftRecords(ck, noCache)) { XCTAssert($0 is UsageError && "\($0)".contains("--approx-cache"), "\($0)") }
        var negative = o; negative.approxCache = -1
        XCTAssertThrowsError(try draftRecords(ck, negative)) { XCTAssert($0 is UsageError && "\($0)".contains("--approx-cache"), "\($0)") }
        let ar = try loadCheckpoint(makeSamplingModel(samplingConfig(causal: true, length: 16), seed: 57), blockSize: 1)
        var arOptions = o; arOptions.blockSize = nil
        XCTAssertThrowsError(try draftRecords(ar, arOptions)) { XCTAssert($0 is UsageError && "\($0)".contains("--approx-cache"), "\($0)") }
    }

    /// The draft CLI: a negative K and K with --no-kv-cache exit 64 naming the option; a run records it in its
    /// stage entry; --no-fold-store writes the same bytes as the folded default.
    func testDraftCommandLineApproxCache() throws {
        let draftTool = try cliBinary("draft")
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 58), blockSize: 4)
        let out = NSTemporaryDirectory() + "bd3-approx-draft-\(UUID().uuidString).tok", out2 = out + ".2"
        defer { for p in [out, out2] { try? FileManager.default.removeItem(atPath: p) } }
        let base = ["-m", ck.path, "-n", "3", "--length", "16", "--no-entropy-stop"]
        for bad in [["--approx-cache", "-1"], ["--approx-cache", "2", "--no-kv-cache"]] {
            let r = try runCLI(draftTool, base + ["-o", out] + bad)
            XCTAssertEqual(r.code, 64, r.err)
            XCTAssert(r.err.contains("--approx-cache"), r.err)
        }
        let ok = try runCLI(draftTool, base + ["--block-size", "16", "--approx-cache", "3", "-o", out])
        XCTAssertEqual(ok.code, 0, ok.err)
        let recs = try TokenStreamReader(path: out).readAll()
        XCTAssertEqual(recs.count, 3)
        for r in recs { XCTAssert(r.stages.last!.contains("approx-cache=3"), r.stages.last!); XCTAssertFalse(r.tokens.contains(mask)) }
        let folded = try runCLI(draftTool, base + ["-o", out]), unfused = try runCLI(draftTool, base + ["--no-fold-store", "-o", out2])
        XCTAssertEqual(folded.code, 0, folded.err); XCTAssertEqual(unfused.code, 0, unfused.err)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), try Data(contentsOf: URL(fileURLWithPath: out2)))
    }
}
