// The inference engine: samples independent of --batch (draft, refine, remask --policy posthoc), bf16 weights
// against fp32 (documented tolerance), a BF16 checkpoint round trip, released fp32 parameters.
//
// bf16 tolerance: weights rounded to 8 significant bits (relative error ≤ 2⁻⁸ each) with fp32 activations and
// accumulation; on the tiny test model the per-step probabilities move by max |Δp| ≈ 1.4e-3, mean ≈ 1.1e-4.
// The tests assert max |Δp| ≤ 0.01 and mean |Δp| ≤ 1e-3 (docs/benchmarks.md quotes the same bound).
import XCTest
import CKernels
@testable import BlockDiffusion

let bf16ConfidenceMaxError: Float = 0.01
let bf16ConfidenceMeanError: Float = 0.001

final class EngineTests: XCTestCase {
    func options(_ n: Int, length: Int, block: Int?, batch: Int, seed: UInt64 = 7) -> DraftOptions {
        var o = DraftOptions(); o.samples = n; o.length = length; o.blockSize = block; o.seed = seed
        o.entropyStop = false; o.batch = batch
        return o
    }

    func assertIdentical(_ a: [TokenRecord], _ b: [TokenRecord], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        for (x, y) in zip(a, b) {
            XCTAssertEqual(x.id, y.id, what, file: file, line: line)
            XCTAssertEqual(x.tokens, y.tokens, "\(what): record \(x.id)", file: file, line: line)
            XCTAssertEqual(x.confidence?.map(\.bitPattern), y.confidence?.map(\.bitPattern), "\(what): record \(x.id)", file: file, line: line)
            XCTAssertEqual(x.unmaskStep, y.unmaskStep, what, file: file, line: line)
            XCTAssertEqual(x.nfe, y.nfe, what, file: file, line: line)
        }
    }

    func testDraftIsIndependentOfTheBatchSize() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 31), blockSize: 4)
        for dtype in WeightDType.allCases {
            // BD3 first-hitting with a prompt, DDPM, and a global (MDLM) block.
            var o1 = options(16, length: 16, block: 4, batch: 1), o16 = options(16, length: 16, block: 4, batch: 16)
            o1.dtype = dtype; o16.dtype = dtype
            assertIdentical(try draftRecords(ck, o1, prompts: [[3, 4, 5]]), try draftRecords(ck, o16, prompts: [[3, 4, 5]]), "first-hitting \(dtype)")
            o1.sampler = .ddpm; o16.sampler = .ddpm; o1.steps = 5; o16.steps = 5
            assertIdentical(try draftRecords(ck, o1), try draftRecords(ck, o16), "ddpm \(dtype)")
            o1.blockSize = 16; o16.blockSize = 16; o16.batch = 5
            assertIdentical(try draftRecords(ck, o1), try draftRecords(ck, o16), "global block \(dtype)")
        }
        let ar = try loadCheckpoint(makeSamplingModel(samplingConfig(causal: true, length: 16), seed: 32), blockSize: 1)
        assertIdentical(try draftRecords(ar, options(16, length: 16, block: nil, batch: 1), prompts: [[3, 4]]),
                        try draftRecords(ar, options(16, length: 16, block: nil, batch: 16), prompts: [[3, 4]]), "ar")
        // The automatic batch (nil) gives the same samples too.
        assertIdentical(try draftRecords(ck, options(6, length: 16, block: 4, batch: 1)),
                        try draftRecords(ck, { var o = options(6, length: 16, block: 4, batch: 1); o.batch = nil; return o }()), "automatic")
    }

    /// The folded forward (a clean block stored + the next block's step in one chunk) is the store forward followed
    /// by the step forward, bit for bit: the same logits (all rows, or chosen ones), the same cache, the same `cached`.
    func testFoldedStoreForwardEqualsStoreThenStep() throws {
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 40)
        var rng = SplitMix64(seed: 9)
        func block(_ B: Int) -> [Int32] { (0..<(B * 4)).map { _ in Int32(rng.next() % 23) } }
        for dtype in WeightDType.allCases {
            let w = try InferenceWeights(model: model, dtype: dtype)
            let B = 3
            let a = try CachedDiT(weights: w, maxBatch: B, maxChunk: 8, capacity: 16)
            let f = try CachedDiT(weights: w, maxBatch: B, maxChunk: 8, capacity: 16)
            var clean = block(B)
            for k in 0..<3 {
                let noisy = block(B)
                let rows: [Int]? = k == 1 ? nil : [0, 5, 6, 11]
                a.forward(tokens: clean, batch: B, store: true, logits: false)
                let x = Array(a.forward(tokens: noisy, batch: B, store: false, rows: rows))
                XCTAssertTrue(f.canFold(4))
                let y = Array(f.forward(storing: clean, tokens: noisy, batch: B, rows: rows))
                XCTAssertEqual(x.count, (rows?.count ?? B * 4) * 23)
                XCTAssertEqual(x.map(\.bitPattern), y.map(\.bitPattern), "\(dtype) block \(k) logits")
                XCTAssertEqual(a.cached, f.cached)
                for l in 0..<model.config.nBlocks {
                    XCTAssertEqual(Array(a.kCache[l]).map(\.bitPattern), Array(f.kCache[l]).map(\.bitPattern), "\(dtype) block \(k) keys")
                    XCTAssertEqual(Array(a.vCache[l]).map(\.bitPattern), Array(f.vCache[l]).map(\.bitPattern), "\(dtype) block \(k) values")
                }
                clean = block(B)
            }
            XCTAssertEqual(f.cached, 12)
            XCTAssertFalse(f.canFold(4), "a fold past the window would slide between the store and the step")
            XCTAssertEqual(a.forwards, 6)
            XCTAssertEqual(f.forwards, 3)
        }
    }

    /// At the last block only the rows whose logits are read go through attention, projection and MLP (the others
    /// matter there only through their k and v): the logits of the chosen rows — a subset, a permutation with
    /// repeats, a folded chunk's step rows — and the cache after a store-only forward are those of the full forward,
    /// bit for bit, for BD3 (fp32, bf16) and a causal AR chunk.
    func testPrunedLastBlockGivesTheFullForwardsRowsAndCache() throws {
        var rng = SplitMix64(seed: 21)
        for causal in [false, true] {
            let model = makeSamplingModel(samplingConfig(causal: causal, length: 16), seed: causal ? 44 : 43)
            let V = model.config.vocabSize
            func chunk(_ B: Int) -> [Int32] { (0..<(B * 4)).map { _ in Int32(rng.next() % UInt64(V - 1)) } }
            for dtype in WeightDType.allCases {
                let w = try InferenceWeights(model: model, dtype: dtype)
                let B = 3
                let full = try CachedDiT(weights: w, maxBatch: B, maxChunk: 8, capacity: 16)
                let part = try CachedDiT(weights: w, maxBatch: B, maxChunk: 8, capacity: 16)
                func sameCache(_ what: String) {
                    XCTAssertEqual(full.cached, part.cached, what)
                    for l in 0..<model.config.nBlocks {
                        XCTAssertEqual(Array(full.kCache[l]).map(\.bitPattern), Array(part.kCache[l]).map(\.bitPattern), "\(what) keys \(l)")
                        XCTAssertEqual(Array(full.vCache[l]).map(\.bitPattern), Array(part.vCache[l]).map(\.bitPattern), "\(what) values \(l)")
                    }
                }
                func rowsOf(_ all: [Float], _ rows: [Int]) -> [UInt32] { rows.flatMap { all[($0 * V)..<(($0 + 1) * V)].map(\.bitPattern) } }
                let what = "\(causal ? "ar" : "bd3") \(dtype)"
                // A store-only forward (no logits: no row goes past the last block's k and v).
                let first = chunk(B)
                full.forward(tokens: first, batch: B, store: true, causal: causal, logits: true)
                part.forward(tokens: first, batch: B, store: true, causal: causal, logits: false)
                sameCache("\(what) store")
                // Steps with chosen rows.
                for rows in [[0, 5, 6, 11], [11], [3, 3, 0], Array(0..<12)] {
                    let t = chunk(B)
                    let all = Array(full.forward(tokens: t, batch: B, store: false, causal: causal))
                    let some = Array(part.forward(tokens: t, batch: B, store: false, causal: causal, rows: rows))
                    XCTAssertEqual(some.map(\.bitPattern), rowsOf(all, rows), "\(what) rows \(rows)")
                }
                sameCache("\(what) steps")
                // The folded store and step (BD3 only: its parts are not causal).
                if !causal {
                    let clean = chunk(B), noisy = chunk(B)
                    let all = Array(full.forward(storing: clean, tokens: noisy, batch: B))
                    let some = Array(part.forward(storing: clean, tokens: noisy, batch: B, rows: [2, 7, 1]))
                    XCTAssertEqual(some.map(\.bitPattern), rowsOf(all, [2, 7, 1]), "\(what) folded")
                    sameCache("\(what) folded")
                }
            }
        }
    }

    /// Folding the store into the next block's first forward changes no sample: tokens, confidences, unmask steps and
    /// NFE identical to the unfused sampler at batch 1 and 16, fp32 and bf16, for first-hitting, DDPM and the
    /// --unmask policies, with and without prompts; refine (also with --approx-cache) likewise. One forward per
    /// block fewer (the store part was never an NFE).
    func testFoldedStoreSamplesEqualTheUnfusedSampler() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 41), blockSize: 4)
        for dtype in WeightDType.allCases {
            for batch in [1, 16] {
                var o = options(16, length: 16, block: 4, batch: batch); o.dtype = dtype
                func check(_ o: DraftOptions, prompts: [[Int32]] = [], _ what: String) throws {
                    var u = o; u.foldStore = false
                    assertIdentical(try draftRecords(ck, u, prompts: prompts), try draftRecords(ck, o, prompts: prompts), "\(what) \(dtype) batch \(batch)")
                }
                try check(o, "first-hitting")
                try check(o, prompts: [[3, 4, 5], [6, 7, 8, 9, 10, 11]], "first-hitting prompted")
                var d = o; d.sampler = .ddpm; d.steps = 5
                try check(d, "ddpm")
                try check(d, prompts: [[3, 4, 5, 6, 7]], "ddpm prompted")
                for policy: UnmaskPolicy in [.confidence, .threshold(0.3)] {
                    var p = o; p.unmask = policy
                    try check(p, prompts: [[3, 4]], "\(policy)")
                    p.sampler = .ddpm; p.steps = 3
                    try check(p, "ddpm \(policy)")
                }
            }
        }
        // Refine, exact and with approximate k/v reuse (which stores the pending block before a reusing forward).
        let drafts = try draftRecords(ck, options(5, length: 16, block: 4, batch: 5))
        let masked = drafts.map { r -> TokenRecord in var r = r; for i in stride(from: 2, to: 16, by: 3) { r.tokens[i] = 22 }; return r }
        for approx in [0, 2] {
            func refine(fold: Bool) throws -> [TokenRecord] {
                var o = RefineOptions(); o.blockSize = 4; o.seed = 4; o.batch = 2; o.approxCache = approx; o.foldStore = fold
                let out = MemorySink()
                let ow = try TokenStreamWriter(sink: out, header: ck.samplesHeader(tool: "refine", attributes: [:]))
                try runRefine(checkpoint: ck, options: o, reader: try stream(ck, masked), writer: ow)
                try ow.finish()
                return try TokenStreamReader(source: MemorySource(out.bytes)).readAll()
            }
            assertIdentical(try refine(fold: false), try refine(fold: true), "refine approx-cache \(approx)")
        }
        // Forwards: 4 blocks of 4, first-hitting, one step per masked position. BOS only: 15 steps; unfused + 3
        // store forwards, folded + 0. A 9-token prompt: 7 steps; blocks 0 and 1 have no step, so block 0 is stored
        // on its own when block 1 ends (folded: 7 + 1), unfused 7 + 3.
        for (prompt, folded, unfused) in [(1, 15, 18), (9, 8, 10)] {
            for (fold, want) in [(false, unfused), (true, folded)] {
                var s = SamplerSettings(blockSize: 4); s.foldStore = fold
                let sampler = try BlockSampler(model: ck.model, settings: s, maskId: 22, maxBatch: 1, maxLength: 16)
                var cs = [Canvas(tokens: (0..<16).map { $0 < prompt ? Int32($0 + 1) : 22 }, confidence: [Float](repeating: 1, count: 16),
                                 unmaskStep: [UInt32](repeating: 0, count: 16), nfe: 0, promptLength: prompt, seed: 3)]
                sampler.run(&cs)
                XCTAssertFalse(cs[0].tokens.contains(22))
                XCTAssertEqual(cs[0].nfe, UInt64(16 - prompt))
                XCTAssertEqual((sampler.engine as! CachedDiT).forwards, want, "prompt \(prompt), fold \(fold)")
            }
        }
    }

    func stream(_ ck: SamplingCheckpoint, _ records: [TokenRecord]) throws -> TokenStreamReader {
        let src = MemorySink()
        let w = try TokenStreamWriter(sink: src, header: ck.samplesHeader(tool: "draft", attributes: [:]))
        for r in records { try w.write(r) }
        try w.finish()
        return try TokenStreamReader(source: MemorySource(src.bytes))
    }

    func testRefineAndPosthocRemaskAreIndependentOfTheBatchSize() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 33), blockSize: 4)
        let drafts = try draftRecords(ck, options(9, length: 16, block: 4, batch: 9))
        func remask(_ batch: Int, _ dtype: WeightDType = .fp32) throws -> [TokenRecord] {
            let out = MemorySink()
            let w = try TokenStreamWriter(sink: out, header: ck.samplesHeader(tool: "remask", attributes: [:]))
            let weights = try InferenceWeights(model: ck.model, dtype: dtype)
            try runRemask(policy: .posthoc, ratio: 0.5, seed: 1, checkpoint: ck, reader: try stream(ck, drafts), writer: w,
                          batch: batch, weights: weights)
            try w.finish()
            return try TokenStreamReader(source: MemorySource(out.bytes)).readAll()
        }
        let masked = try remask(1)
        assertIdentical(masked, try remask(4), "posthoc")
        XCTAssertEqual(masked.map { $0.tokens.filter { $0 == 22 }.count }, drafts.map { _ in 7 })   // ⌊0.5 · 15⌋ non-BOS positions
        func refine(_ batch: Int, block: Int) throws -> [TokenRecord] {
            var o = RefineOptions(); o.blockSize = block; o.seed = 4; o.batch = batch
            let out = MemorySink()
            let ow = try TokenStreamWriter(sink: out, header: ck.samplesHeader(tool: "refine", attributes: [:]))
            try runRefine(checkpoint: ck, options: o, reader: try stream(ck, masked), writer: ow)
            try ow.finish()
            return try TokenStreamReader(source: MemorySource(out.bytes)).readAll()
        }
        for block in [4, 16] { assertIdentical(try refine(1, block: block), try refine(9, block: block), "refine B=\(block)") }
    }

    /// Per-step confidences of bf16 weights against fp32 on the same sequences (teacher forcing: each forward sees
    /// the fp32 run's canvas), within the documented tolerance; and bf16 really differs (it is not fp32 in disguise).
    func testBF16ConfidencesWithinTolerance() throws {
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 34)
        let f32 = try CachedDiT(weights: InferenceWeights(model: model, dtype: .fp32), maxBatch: 4, maxChunk: 16, capacity: 16)
        let b16 = try CachedDiT(weights: InferenceWeights(model: model, dtype: .bf16), maxBatch: 4, maxChunk: 16, capacity: 16)
        var rng = SplitMix64(seed: 8)
        var maxErr: Float = 0, sumErr: Float = 0, count = 0
        for _ in 0..<8 {
            // A canvas: clean prefix blocks in the cache, then a partly masked block (the sampler's forward).
            let seqs = (0..<4).map { _ in (0..<16).map { i -> Int32 in i >= 12 && rng.next() % 2 == 0 ? 22 : Int32(rng.next() % 21) } }
            for e in [f32, b16] {
                e.reset()
                for blk in 0..<3 { e.forward(tokens: seqs.flatMap { Array($0[(blk * 4)..<(blk * 4 + 4)]) }, batch: 4, store: true, logits: false) }
            }
            let last = seqs.flatMap { Array($0[12..<16]) }
            let a = Array(f32.forward(tokens: last, batch: 4, store: false)), b = Array(b16.forward(tokens: last, batch: 4, store: false))
            let V = model.config.vocabSize
            for r in 0..<16 {
                let pa = a.withUnsafeBufferPointer { subsProbabilities(logits: $0.baseAddress! + r * V, count: V, maskId: 22) }
                let pb = b.withUnsafeBufferPointer { subsProbabilities(logits: $0.baseAddress! + r * V, count: V, maskId: 22) }
                for v in 0..<V { let e = Float(abs(pa[v] - pb[v])); maxErr = max(maxErr, e); sumErr += e; count += 1 }
            }
        }
        XCTAssertLessThanOrEqual(maxErr, bf16ConfidenceMaxError)
        XCTAssertLessThanOrEqual(sumErr / Float(count), bf16ConfidenceMeanError)
        XCTAssertGreaterThan(maxErr, 0, "bf16 weights gave bit-identical probabilities: the bf16 path did not run")
        // Whole drafts with bf16 weights say so in their stage entry.
        let ck = try loadCheckpoint(model, blockSize: 4)
        var o = options(4, length: 16, block: 4, batch: 4); o.dtype = .bf16
        let drafts = try draftRecords(ck, o)
        XCTAssert(drafts[0].stages[0].contains("dtype=bf16"), drafts[0].stages[0])
        XCTAssertEqual(drafts.count, 4)
    }

    /// A checkpoint stored as BF16 loads to the bf16-rounded parameters, and its bf16 inference weights are
    /// bit-identical to converting the fp32 model (bf16 → fp32 → bf16 is exact).
    func testBF16CheckpointRoundTrip() throws {
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 35)
        let f32Path = try saveCheckpoint(model, blockSize: 4)
        let bf16Path = try bf16Copy(of: f32Path)
        let ck = try SamplingCheckpoint.open(path: bf16Path)
        XCTAssertEqual(try SafetensorsFile(path: bf16Path).entry("backbone.vocab_embed.embedding")?.dtype, "BF16")
        var rounded = [UInt16](repeating: 0, count: model.parameters.count)
        bd3_f32_to_bf16(&rounded, model.parameters.baseAddress!, rounded.count)
        for i in 0..<rounded.count { XCTAssertEqual(ck.model.parameters[i].bitPattern, UInt32(rounded[i]) << 16); if ck.model.parameters[i].bitPattern != UInt32(rounded[i]) << 16 { break } }
        let a = try InferenceWeights(model: model, dtype: .bf16), b = try InferenceWeights(model: ck.model, dtype: .bf16)
        for (x, y) in zip([a.embed, a.lin] + a.blocks.flatMap { [$0.qkv, $0.attnOut, $0.fc, $0.proj] },
                          [b.embed, b.lin] + b.blocks.flatMap { [$0.qkv, $0.attnOut, $0.fc, $0.proj] }) {
            XCTAssertEqual(x.dtype, .bf16)
            XCTAssertEqual(Array(UnsafeBufferPointer(start: x.bf16!, count: x.rows * x.cols)), Array(UnsafeBufferPointer(start: y.bf16!, count: y.rows * y.cols)))
        }
        // The bf16 file samples like any checkpoint; the bf16 weights hold < 0.6 of the fp32 bytes.
        var o = options(3, length: 16, block: 4, batch: 3); o.dtype = .bf16
        let fromFile = try draftRecords(ck, o)
        XCTAssertEqual(fromFile.count, 3)
        XCTAssertLessThan(a.bytes, model.parameters.count * 4 * 6 / 10)
    }

    /// prepareInference(bf16) releases the fp32 parameters; sampling still works and gives the same samples.
    func testReleasedParametersStillSampleFromBF16Weights() throws {
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 36)
        var o = options(4, length: 16, block: 4, batch: 2); o.dtype = .bf16
        let before = try draftRecords(try loadCheckpoint(model, blockSize: 4), o)
        let ck = try loadCheckpoint(model, blockSize: 4)
        let w = try prepareInference(ck, dtype: .bf16)!
        XCTAssertTrue(ck.model.parametersReleased)
        let sink = MemorySink()
        let wr = try TokenStreamWriter(sink: sink, header: ck.samplesHeader(tool: "draft", attributes: [:]))
        try runDraft(checkpoint: ck, options: o, prompts: [], writer: wr, weights: w)
        try wr.finish()
        assertIdentical(before, try TokenStreamReader(source: MemorySource(sink.bytes)).readAll(), "released")
        // bf16 runs on the cached engine only.
        var bad = o; bad.kvCache = false
        XCTAssertThrowsError(try draftRecords(try loadCheckpoint(model, blockSize: 4), bad)) { XCTAssert($0 is UsageError) }
    }

    /// Opening for bf16 converts each matrix as it loads and returns its fp32 pages at once: the weights are
    /// bit-identical to converting the whole loaded model (the earlier path), drafts give the same tokens and
    /// confidences, and the fp32 open is untouched (parameters bit for bit, nothing converted or released).
    func testBF16LoadConvertsMatrixByMatrix() throws {
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 38)
        let path = try saveCheckpoint(model, blockSize: 4)
        let f32 = try SamplingCheckpoint.open(path: path)
        XCTAssertNil(f32.weights)
        XCTAssertFalse(f32.model.parametersReleased)
        XCTAssertEqual(f32.model.parameters.map(\.bitPattern), model.parameters.map(\.bitPattern))
        let whole = try InferenceWeights(model: f32.model, dtype: .bf16)
        let ck = try SamplingCheckpoint.open(path: path, dtype: .bf16)
        XCTAssertTrue(ck.model.parametersReleased)
        let w = try XCTUnwrap(ck.weights)
        XCTAssertEqual(w.dtype, .bf16)
        for (x, y) in zip([whole.embed, whole.lin] + whole.blocks.flatMap { [$0.qkv, $0.attnOut, $0.fc, $0.proj] },
                          [w.embed, w.lin] + w.blocks.flatMap { [$0.qkv, $0.attnOut, $0.fc, $0.proj] }) {
            XCTAssertEqual(Array(UnsafeBufferPointer(start: x.bf16!, count: x.rows * x.cols)), Array(UnsafeBufferPointer(start: y.bf16!, count: y.rows * y.cols)))
        }
        XCTAssertEqual(Array(whole.mods!).map(\.bitPattern), Array(w.mods!).map(\.bitPattern))
        XCTAssertEqual(Array(whole.modF!).map(\.bitPattern), Array(w.modF!).map(\.bitPattern))
        XCTAssertEqual(Array(whole.vectors!).map(\.bitPattern), Array(w.vectors!).map(\.bitPattern))
        // Same drafts as the whole-model conversion (runDraft converts f32's model), prompted and not, batch 1 and 3.
        for batch in [1, 3] {
            var o = options(3, length: 16, block: 4, batch: batch); o.dtype = .bf16
            assertIdentical(try draftRecords(f32, o), try draftRecords(ck, o), "bf16 load, batch \(batch)")
            let prompts: [[Int32]] = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
            assertIdentical(try draftRecords(f32, o, prompts: prompts), try draftRecords(ck, o, prompts: prompts), "bf16 load, prompted, batch \(batch)")
        }
        XCTAssertTrue(try prepareInference(ck, dtype: .bf16)! === w)
        // The released model does not run: fp32 from it is an error that says what to do, never zeros.
        XCTAssertThrowsError(try prepareInference(ck, dtype: .fp32)) { XCTAssert("\($0)".contains("open it again"), "\($0)") }
        var o = options(2, length: 16, block: 4, batch: 2)
        XCTAssertThrowsError(try draftRecords(ck, o)) { XCTAssert("\($0)".contains("open it again"), "\($0)") }
        o.kvCache = false
        XCTAssertThrowsError(try draftRecords(ck, o)) { XCTAssert("\($0)".contains("open it again"), "\($0)") }
        // An AR checkpoint (no adaLN) converts the same way.
        let arPath = try saveCheckpoint(makeSamplingModel(samplingConfig(causal: true, length: 16), seed: 42), blockSize: 1)
        var ao = options(3, length: 16, block: nil, batch: 3); ao.dtype = .bf16
        let arBF16 = try SamplingCheckpoint.open(path: arPath, dtype: .bf16)
        XCTAssertNotNil(arBF16.weights)
        assertIdentical(try draftRecords(try SamplingCheckpoint.open(path: arPath), ao, prompts: [[3, 4]]),
                        try draftRecords(arBF16, ao, prompts: [[3, 4]]), "AR bf16 load")
    }

    /// The per-matrix release returns exactly the whole pages inside each matrix: they read zero afterwards, and
    /// every other float (the matrices' partial end pages, vectors, adaLN) keeps its value.
    func testMatrixPageReleaseKeepsNeighbours() throws {
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 39)
        let path = try saveCheckpoint(model, blockSize: 4)
        let conv = BF16Matrices(config: model.config)
        let m = try Checkpoint.open(path).model(maxBatch: 1, maxTokens: 1, each: { conv.take($0, $1) })
        XCTAssertTrue(conv.complete)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var released = Set<Int>()
        for t in m.tensors where conv.names.contains(t.name) {
            let base = Int(bitPattern: m.parameters.baseAddress!)
            let start = (base + 4 * t.offset + page - 1) / page * page, end = (base + 4 * (t.offset + t.count)) / page * page
            if end > start { for i in ((start - base) / 4)..<((end - base) / 4) { released.insert(i) } }
        }
        XCTAssertGreaterThan(released.count, 0, "the test model has no whole page inside a matrix")
        for i in 0..<m.parameters.count {
            let want = released.contains(i) ? 0 : model.parameters[i].bitPattern
            if m.parameters[i].bitPattern != want { XCTFail("float \(i): \(m.parameters[i]) (released: \(released.contains(i)))"); break }
        }
    }

    /// The CLI: a bad --dtype and bf16 without the cache are usage errors (exit 64); a bf16 draft writes a stream
    /// whose header records the dtype.
    func testDraftCommandLineDtype() throws {
        let draft = try cliBinary("draft")
        let ckpt = try saveCheckpoint(makeSamplingModel(samplingConfig(length: 16), seed: 37), blockSize: 4)
        let out = NSTemporaryDirectory() + "bd3-engine-\(UUID().uuidString).tok"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let bad = try runCLI(draft, ["-m", ckpt, "-n", "2", "--length", "16", "--dtype", "fp16", "-o", out])
        XCTAssertEqual(bad.code, 64, bad.err)
        let noCache = try runCLI(draft, ["-m", ckpt, "-n", "2", "--length", "16", "--dtype", "bf16", "--no-kv-cache", "-o", out])
        XCTAssertEqual(noCache.code, 64, noCache.err)
        XCTAssert(noCache.err.contains("--no-kv-cache"), noCache.err)
        let ok = try runCLI(draft, ["-m", ckpt, "-n", "3", "--length", "16", "--dtype", "bf16", "--no-entropy-stop", "-o", out])
        XCTAssertEqual(ok.code, 0, ok.err)
        let r = try TokenStreamReader(path: out)
        XCTAssertEqual(r.header.attributes["dtype"], "bf16")
        XCTAssertEqual(try r.readAll().count, 3)
    }

    /// Rewrites an F32 safetensors file with every F32 tensor as BF16 (round to nearest even), metadata kept.
    func bf16Copy(of path: String) throws -> String {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var n = 0
        for i in 0..<8 { n |= Int(bytes[i]) << (8 * i) }
        let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + n)])) as! [String: Any]
        var out: [String: Any] = [:], data: [UInt8] = []
        for (name, v) in header.sorted(by: { $0.key < $1.key }) {
            guard name != "__metadata__" else { out[name] = v; continue }
            let e = v as! [String: Any]
            // The rotary inv_freq buffer is checked exactly against the head size on load: it stays F32.
            let keepF32 = name.contains("rotary")
            let offs = e["data_offsets"] as! [Int]
            let begin = 8 + n + offs[0], count = (offs[1] - offs[0]) / 4
            var f = [Float](repeating: 0, count: count)
            for i in 0..<count {
                var u: UInt32 = 0
                for k in 0..<4 { u |= UInt32(bytes[begin + 4 * i + k]) << (8 * UInt32(k)) }
                f[i] = Float(bitPattern: u)
            }
            let start = data.count
            if keepF32 {
                data += bytes[begin..<(begin + 4 * count)]
            } else {
                var h = [UInt16](repeating: 0, count: count)
                bd3_f32_to_bf16(&h, f, count)
                for x in h { data.append(UInt8(x & 0xff)); data.append(UInt8(x >> 8)) }
            }
            out[name] = ["dtype": keepF32 ? "F32" : "BF16", "shape": e["shape"]!, "data_offsets": [start, data.count]]
        }
        var json = [UInt8](try JSONSerialization.data(withJSONObject: out))
        while json.count % 8 != 0 { json.append(0x20) }
        var file: [UInt8] = (0..<8).map { UInt8((json.count >> (8 * $0)) & 0xff) }
        file += json + data
        let dst = NSTemporaryDirectory() + "bd3-bf16-\(UUID().uuidString).safetensors"
        try Data(file).write(to: URL(fileURLWithPath: dst))
        return dst
    }
}
