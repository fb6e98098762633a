// Sampler pieces (hand-computed cases + the RNG-free PyTorch fixture Fixtures/parity/sampler.safetensors) and
// draft behaviour on tiny random models: no MASK left, prompt kept, NFE/unmask-step bookkeeping, determinism
// by seed, DDPM, MDLM (one global block), AR, the sliding window, stop rules, sharding.
import XCTest
@testable import BlockDiffusion

// MARK: - Shared helpers for the sampling tests

/// Tiny diffusion (or AR) config: V=23 (mask 22, bos=eos=21), D=32, 4 heads, 2 blocks, L=8.
func samplingConfig(causal: Bool = false, length: Int = 8) -> ModelConfig {
    ModelConfig(vocabSize: 23, hiddenSize: 32, nBlocks: 2, nHeads: 4, condDim: 16, length: length, dropout: 0, causal: causal)
}

/// Reference init, then every tensor perturbed so nothing is zero (adaLN and the output layer included).
func makeSamplingModel(_ config: ModelConfig, seed: UInt64) -> DiT {
    let m = DiT(config: config, maxBatch: 2, maxTokens: 2 * config.length)
    m.initialize(seed: seed)
    var rng = SplitMix64(seed: seed &+ 77)
    for t in m.tensors {
        let p = m.parameters.baseAddress! + t.offset
        let fan = t.shape.count == 2 ? t.shape[1] : 16
        let bound = 1.5 / Double(fan).squareRoot()
        for i in 0..<t.count { p[i] += Float((rng.nextDouble() * 2 - 1) * bound) }
    }
    return m
}

let testSpecial = SpecialTokens(bos: 21, eos: 21, mask: 22, pad: -1)

/// Saves a model as a checkpoint with train-style metadata; returns the path.
func saveCheckpoint(_ m: DiT, blockSize: Int, fingerprint: UInt64 = 0xABCD, algo: String? = nil, extra: [String: String] = [:]) throws -> String {
    let path = NSTemporaryDirectory() + "bd3-sampling-\(UUID().uuidString).safetensors"
    var meta = ["algo": algo ?? (m.config.causal ? "ar" : "bd3"), "block_size": "\(blockSize)", "seq_len": "\(m.config.length)",
                "mask_id": "22", "bos_id": "21", "eos_id": "21", "pad_id": "-1",
                "tokenizer_fingerprint": String(format: "%016llx", fingerprint)]
    for (k, v) in extra { meta[k] = v }
    try m.save(safetensors: path, metadata: meta)
    return path
}

func loadCheckpoint(_ m: DiT, blockSize: Int, extra: [String: String] = [:]) throws -> SamplingCheckpoint {
    try SamplingCheckpoint.open(path: try saveCheckpoint(m, blockSize: blockSize, extra: extra))
}

/// Runs draft into memory; returns the records.
func draftRecords(_ ck: SamplingCheckpoint, _ o: DraftOptions, prompts: [[Int32]] = []) throws -> [TokenRecord] {
    let sink = MemorySink()
    let w = try TokenStreamWriter(sink: sink, header: ck.samplesHeader(tool: "draft", attributes: [:]))
    try runDraft(checkpoint: ck, options: o, prompts: prompts, writer: w)
    try w.finish()
    return try TokenStreamReader(source: MemorySource(sink.bytes)).readAll()
}

func fixtureURL(_ name: String) throws -> URL {
    guard let url = Bundle.module.url(forResource: name, withExtension: "safetensors", subdirectory: "Fixtures/parity") else {
        throw XCTSkip("fixture \(name) missing")   // never reached in a checkout: the fixtures are committed
    }
    return url
}

/// Minimal safetensors reader for float64/int64 fixture tensors (SafetensorsFile converts F64 to Float).
struct F64Fixture {
    let header: [String: Any]
    let data: [UInt8]
    let start: Int
    init(_ url: URL) throws {
        data = [UInt8](try Data(contentsOf: url))
        var n = 0
        for i in 0..<8 { n |= Int(data[i]) << (8 * i) }
        header = try JSONSerialization.jsonObject(with: Data(data[8..<(8 + n)])) as! [String: Any]
        start = 8 + n
    }
    func entry(_ name: String) -> (String, [Int], Int) {
        let e = header[name] as! [String: Any]
        let offs = e["data_offsets"] as! [Int]
        return (e["dtype"] as! String, e["shape"] as! [Int], start + offs[0])
    }
    func doubles(_ name: String) -> [Double] {
        let (dt, shape, off) = entry(name)
        precondition(dt == "F64")
        let n = shape.reduce(1, *)
        return (0..<n).map { i in
            var b: UInt64 = 0
            for k in 0..<8 { b |= UInt64(data[off + 8 * i + k]) << (8 * UInt64(k)) }
            return Double(bitPattern: b)
        }
    }
    func ints(_ name: String) -> [Int] {
        let (dt, shape, off) = entry(name)
        let n = shape.reduce(1, *)
        let w = dt == "I64" ? 8 : 1
        return (0..<n).map { i in
            var b: UInt64 = 0
            for k in 0..<w { b |= UInt64(data[off + w * i + k]) << (8 * UInt64(k)) }
            return w == 8 ? Int(Int64(bitPattern: b)) : Int(b)
        }
    }
    func shape(_ name: String) -> [Int] { entry(name).1 }
}

final class SamplerTests: XCTestCase {

    // MARK: Hand-computed pieces

    func testNucleusHandCases() {
        var p = [0.5, 0.3, 0.15, 0.05]
        nucleusFilter(&p, topP: 0.85)                    // cumsum 0.5, 0.8 ≤ 0.85; 0.95 crosses → dropped
        XCTAssertEqual(p[0], 0.625, accuracy: 1e-15); XCTAssertEqual(p[1], 0.375, accuracy: 1e-15)
        XCTAssertEqual(p[2], 0); XCTAssertEqual(p[3], 0)
        var q = [0.1, 0.6, 0.3]
        nucleusFilter(&q, topP: 0.2)                      // top-1 always kept
        XCTAssertEqual(q, [0, 1, 0])
        var r = [0.1, 0.6, 0.3]
        nucleusFilter(&r, topP: 1.0)                      // short-circuit: unchanged
        XCTAssertEqual(r, [0.1, 0.6, 0.3])
    }

    func testNucleusMatchesItsFullSortTwin() {
        var rng = SplitMix64(seed: 4)
        for trial in 0..<200 {
            let V = 1 + Int(rng.next() % 300)
            // Mixtures of peaked, flat, tiny and exactly-zero entries, with ties.
            var p = (0..<V).map { _ -> Double in
                switch rng.next() % 5 {
                case 0: return 0
                case 1: return 1e-300 * rng.nextDouble()
                case 2: return 0.25
                default: return pow(rng.nextDouble(), 8)
                }
            }
            if p.allSatisfy({ $0 == 0 }) { p[0] = 1 }
            let z = p.reduce(0, +); p = p.map { $0 / z }
            let top = [0.05, 0.5, 0.9, 0.99, 0.999999][trial % 5]
            var a = p, b = p
            nucleusFilter(&a, topP: top); naiveNucleusFilter(&b, topP: top)
            XCTAssertEqual(a, b, "trial \(trial)")
        }
    }

    func testGumbelArgmaxFixedU() {
        // 0.2/−ln 0.9 = 1.898, 0.5/−ln 0.1 = 0.217, 0.3/−ln 0.5 = 0.433 → index 0 though p[1] is largest.
        XCTAssertEqual(gumbelArgmax(p: [0.2, 0.5, 0.3], u: [0.9, 0.1, 0.5]), 0)
        // Equal u: the largest p wins; a zero p never wins.
        XCTAssertEqual(gumbelArgmax(p: [0.2, 0.5, 0.3], u: [0.5, 0.5, 0.5]), 1)
        XCTAssertEqual(gumbelArgmax(p: [0, 1e-9], u: [0.999999, 0.000001]), 1)
    }

    /// gumbelSample skips the log of keys that cannot win (gumbelKey's bound); it must pick the index the full
    /// computation picks (gumbelArgmax over the same uniforms, zero entries drawing none), for flat, peaked and tied
    /// p, and uniforms at the extremes (u = 0, u → 1: the bound is then loose or infinite), serial and split.
    func testGumbelSkippedLogsPickTheFullComputationsIndex() {
        var rng = SplitMix64(seed: 23)
        var skipped = 0, total = 0
        for trial in 0..<400 {
            let V = [5, 100, 8192, 20000][trial % 4]
            let spread = [0.1, 3.0, 30.0, 300.0][(trial / 4) % 4]
            var p = (0..<V).map { _ in exp((rng.nextDouble() * 2 - 1) * spread) }
            if trial % 5 == 1 { for i in stride(from: 0, to: V, by: 3) { p[i] = p[0] } }     // exact ties
            if trial % 7 == 2 { for i in stride(from: 1, to: V, by: 4) { p[i] = 0 } }        // zeros draw no uniform
            let z = p.reduce(0, +); p = p.map { $0 / z }
            let seed = rng.next()
            var g = SplitMix64(seed: seed), h = g, k = g
            var u = [Double](repeating: 0, count: V)
            for i in 0..<V where p[i] > 0 {
                u[i] = Double(h.next() >> 11) * 0x1.0p-53
                if trial % 11 == 3 && i % 13 == 0 { u[i] = i % 26 == 0 ? 0 : 1 - 0x1p-53 }   // extremes
            }
            if trial % 11 == 3 {   // the extremes replace draws: compare against the full loop on these u
                var best = 0, bv = -Double.infinity
                for i in 0..<V where p[i] > 0 {
                    let v = gumbelKey(p[i], u[i], best: bv)
                    if v > bv { bv = v; best = i }
                }
                XCTAssertEqual(best, gumbelArgmax(p: p, u: u), "trial \(trial) extremes")
                continue
            }
            XCTAssertEqual(gumbelSample(p: p, rng: &g), gumbelArgmax(p: p, u: u), "trial \(trial) V \(V) spread \(spread)")
            XCTAssertEqual(gumbelSampleSplit(p: p, rng: &k), gumbelArgmax(p: p, u: u), "split trial \(trial)")
            var bv = -Double.infinity
            for i in 0..<V where p[i] > 0 {
                total += 1
                let v = gumbelKey(p[i], u[i], best: bv)
                if v == -.infinity { skipped += 1 } else if v > bv { bv = v }
            }
        }
        XCTAssertGreaterThan(skipped, total / 2, "the bound should skip most logs on these distributions")
    }

    func testFirstHittingPickAndDDPMTransition() {
        let m: Int32 = 9
        XCTAssertEqual(maskedPosition([5, m, 3, m, m], mask: m, draw: 0), 1)
        XCTAssertEqual(maskedPosition([5, m, 3, m, m], mask: m, draw: 2), 4)
        let q = ddpmTransition([0.6, 0.4, 0], t: 0.5, s: 0.25, maskId: 2)   // unmask prob (t−s)/t = 0.5
        XCTAssertEqual(q[0], 0.3, accuracy: 1e-15); XCTAssertEqual(q[1], 0.2, accuracy: 1e-15); XCTAssertEqual(q[2], 0.5, accuracy: 1e-15)
        XCTAssertEqual(tailEntropy([1, 1, 2, 2][...]), log(2), accuracy: 1e-15)
        // Only the last 256 tokens count.
        let tail = [Int32](repeating: 7, count: 100) + [Int32](0..<256)
        XCTAssertEqual(tailEntropy(tail[...]), log(256), accuracy: 1e-12)
    }

    func testSubsProbabilitiesExcludeMask() {
        let logits: [Float] = [1, 2, 50, 0]
        let p = logits.withUnsafeBufferPointer { subsProbabilities(logits: $0.baseAddress!, count: 4, maskId: 2) }
        XCTAssertEqual(p[2], 0)
        let z = exp(1.0) + exp(2.0) + 1
        XCTAssertEqual(p[0], exp(1.0) / z, accuracy: 1e-15); XCTAssertEqual(p[3], 1 / z, accuracy: 1e-15)
    }

    // MARK: PyTorch fixture (float64, RNG-free)

    func testSamplerFixture() throws {
        let f = try F64Fixture(try fixtureURL("sampler"))
        let V = f.shape("gumbel.p")[1]
        let gp = f.doubles("gumbel.p"), gu = f.doubles("gumbel.u"), gi = f.ints("gumbel.index")
        for r in 0..<gi.count {
            XCTAssertEqual(gumbelArgmax(p: Array(gp[r * V..<(r + 1) * V]), u: Array(gu[r * V..<(r + 1) * V])), gi[r], "gumbel row \(r)")
        }
        let pin = f.doubles("nucleus.p_in"), top = f.doubles("nucleus.top_p"), pout = f.doubles("nucleus.p_out")
        for r in 0..<top.count {
            var p = Array(pin[r * V..<(r + 1) * V])
            nucleusFilter(&p, topP: top[r])
            for i in 0..<V { XCTAssertEqual(p[i], pout[r * V + i], accuracy: 1e-12 * max(1, abs(pout[r * V + i])), "nucleus row \(r) col \(i)") }
        }
        let ft = f.doubles("first_hitting.t"), fu = f.doubles("first_hitting.u"), fn = f.ints("first_hitting.n"), fnext = f.doubles("first_hitting.t_next")
        for r in 0..<ft.count { XCTAssertEqual(firstHittingTime(t: ft[r], u: fu[r], n: fn[r]), fnext[r], accuracy: 1e-12 * fnext[r]) }
        let block = f.ints("pick.block"), draw = f.ints("pick.draw"), pos = f.ints("pick.position")
        let w = f.shape("pick.block")[1]
        for r in 0..<draw.count {
            XCTAssertEqual(maskedPosition(block[r * w..<(r + 1) * w].map { Int32($0) }, mask: 66, draw: draw[r]), pos[r])
        }
        let dp = f.doubles("ddpm.p_x0"), dt = f.doubles("ddpm.t"), ds = f.doubles("ddpm.s"), dq = f.doubles("ddpm.q")
        for r in 0..<dt.count {
            let q = ddpmTransition(Array(dp[r * V..<(r + 1) * V]), t: dt[r], s: ds[r], maskId: 66)
            for i in 0..<V { XCTAssertEqual(q[i], dq[r * V + i], accuracy: 1e-12 * max(1e-300, abs(dq[r * V + i])) + 1e-300) }
        }
        let et = f.ints("entropy.tokens"), ev = f.doubles("entropy.value"), es = f.ints("entropy.stop")
        let n = f.shape("entropy.tokens")[1]
        for r in 0..<ev.count {
            let h = tailEntropy(et[r * n..<(r + 1) * n].map { Int32($0) }[...])
            XCTAssertEqual(h, ev[r], accuracy: 1e-12 * max(1, ev[r]), "entropy row \(r)")
            XCTAssertEqual(h < 4, es[r] == 1)
        }
    }

    // MARK: draft on tiny models

    func options(_ n: Int, length: Int, block: Int? = nil, seed: UInt64 = 1) -> DraftOptions {
        var o = DraftOptions(); o.samples = n; o.length = length; o.blockSize = block; o.seed = seed; o.entropyStop = false
        return o
    }

    func testFirstHittingDraftInvariants() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 3), blockSize: 4)
        var o = options(3, length: 16, block: 4); o.nucleus = 0.9; o.batch = 2
        let recs = try draftRecords(ck, o)
        XCTAssertEqual(recs.map(\.id), [0, 1, 2])
        for r in recs {
            XCTAssertEqual(r.tokens.count, 16)
            XCTAssertFalse(r.tokens.contains(22), "MASK left")
            XCTAssertEqual(r.tokens[0], 21); XCTAssertEqual(r.promptLength, 1)
            XCTAssertEqual(r.confidence![0], 1); XCTAssertEqual(r.unmaskStep![0], 0)
            XCTAssertEqual(r.nfe, 15, "first-hitting: one forward per generated token")
            XCTAssertEqual(Set(r.unmaskStep![1...]), Set(1...15), "each forward writes exactly one token")
            for c in r.confidence![1...] { XCTAssert(c > 0 && c <= 1) }
            XCTAssert(r.stages[0].hasPrefix("draft B=4 sampler=first-hitting nucleus=0.9 seed=1"), r.stages[0])
        }
        // Unmask steps increase block by block: every token of block b is written before any of block b+1.
        for r in recs {
            for b in 0..<3 { XCTAssertLessThan(r.unmaskStep![(b * 4)..<(b * 4 + 4)].max()!, r.unmaskStep![((b + 1) * 4)..<((b + 1) * 4 + 4)].min()!) }
        }
        // Determinism by seed; another seed differs.
        XCTAssertEqual(try draftRecords(ck, o), recs)
        var o2 = o; o2.seed = 2
        XCTAssertNotEqual(try draftRecords(ck, o2).map(\.tokens), recs.map(\.tokens))
    }

    func testConfidenceIsTheModelProbabilityAtTheWriteStep() throws {
        // Block size = length = 8 (one block, no cache): replay each step with the plain DiT forward.
        let model = makeSamplingModel(samplingConfig(), seed: 5)
        let ck = try loadCheckpoint(model, blockSize: 8)
        let r = try draftRecords(ck, options(1, length: 8, block: 8))[0]
        let order = (1..<8).sorted { r.unmaskStep![$0] < r.unmaskStep![$1] }
        var x = [Int32](repeating: 22, count: 8); x[0] = 21
        for pos in order {
            let logits = x.withUnsafeBufferPointer { model.forward(tokens: $0, batch: 1, layout: .full, sigma: nil, training: false, dropoutSeed: 0) }
            let p = subsProbabilities(logits: logits.baseAddress! + pos * 23, count: 23, maskId: 22)
            XCTAssertEqual(Double(r.confidence![pos]), p[Int(r.tokens[pos])], accuracy: 1e-5)
            x[pos] = r.tokens[pos]
        }
    }

    func testMultiBlockDraftReplaysWithTheNonCachedWindowForward() throws {
        // Every write of a 4-block draft (prompt spanning into block 1) replayed with the model's own
        // .blockCausal window forward: the confidences must be the window probabilities of the chosen tokens.
        let model = makeSamplingModel(samplingConfig(length: 16), seed: 15)
        let ck = try loadCheckpoint(model, blockSize: 4)
        var o = options(2, length: 16, block: 4); o.batch = 2; o.nucleus = 0.95
        let ref = DiT(config: model.config, maxBatch: 1, maxTokens: 16)
        ref.parameters.update(from: UnsafeBufferPointer(model.parameters))
        for r in try draftRecords(ck, o, prompts: [[7, 8, 9, 10, 11]]) {
            let order = (r.promptLength..<16).sorted { r.unmaskStep![$0] < r.unmaskStep![$1] }
            var x = [Int32](repeating: 22, count: 16)
            for i in 0..<r.promptLength { x[i] = r.tokens[i] }
            for pos in order {
                let blk = pos / 4
                let win = Array(x[0..<((blk + 1) * 4)])
                let logits = win.withUnsafeBufferPointer { ref.forward(tokens: $0, batch: 1, layout: .blockCausal(blockSize: 4), sigma: nil, training: false, dropoutSeed: 0) }
                var p = subsProbabilities(logits: logits.baseAddress! + (pos % 4) * 23, count: 23, maskId: 22)
                nucleusFilter(&p, topP: 0.95)
                XCTAssertEqual(Double(r.confidence![pos]), p[Int(r.tokens[pos])], accuracy: 1e-4, "pos \(pos)")
                XCTAssertGreaterThan(p[Int(r.tokens[pos])], 0, "a token outside the nucleus was drawn")
                x[pos] = r.tokens[pos]
            }
        }
    }

    func testPromptStreamGivesNSamplesPerPrompt() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 16), blockSize: 4)
        let recs = try draftRecords(ck, options(2, length: 8, block: 4), prompts: [[1], [2, 3]])
        XCTAssertEqual(recs.map(\.id), [0, 1, 2, 3])
        XCTAssertEqual(recs.map { Array($0.tokens[0..<$0.promptLength]) }, [[21, 1], [21, 1], [21, 2, 3], [21, 2, 3]])
    }

    func testDDPMDraftAndReuseWithoutNFE() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 4), blockSize: 4)
        var o = options(2, length: 16, block: 4); o.sampler = .ddpm; o.steps = 50
        let recs = try draftRecords(ck, o)
        for r in recs {
            XCTAssertFalse(r.tokens.contains(22))
            // NFE counts only forwards after a change: at most one per masked token, at least one per block.
            XCTAssert(r.nfe >= 4 && r.nfe <= 15, "nfe \(r.nfe)")
            XCTAssertEqual(r.unmaskStep![1...].max().map(UInt64.init), r.nfe)
            XCTAssert(r.stages[0].contains("sampler=ddpm steps=50"))
        }
        // T = 1: the single step has s = 0, so every mask fills from one forward per block (no NaN step).
        o.steps = 1
        for r in try draftRecords(ck, o) { XCTAssertEqual(r.nfe, 4); XCTAssertFalse(r.tokens.contains(22)) }
    }

    func testMDLMGlobalBlockAndAR() throws {
        let mdlm = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 6), blockSize: 8, extra: ["algo": "mdlm"])
        var o = options(2, length: 8)
        o.sampler = .ddpm; o.steps = 4
        for r in try draftRecords(mdlm, o) { XCTAssertFalse(r.tokens.contains(22)); XCTAssert(r.nfe <= 4) }
        let ar = try loadCheckpoint(makeSamplingModel(samplingConfig(causal: true), seed: 7), blockSize: 1)
        var oa = options(2, length: 20); oa.batch = 2
        let recs = try draftRecords(ar, oa, prompts: [[3, 4, 5]])
        for r in recs {
            XCTAssertEqual(Array(r.tokens[0..<4]), [21, 3, 4, 5]); XCTAssertEqual(r.promptLength, 4)
            XCTAssertEqual(r.nfe, 16); XCTAssertEqual(Array(r.unmaskStep![4...]), (1...16).map { UInt32($0) })
            XCTAssertFalse(r.tokens.contains(22), "AR never emits the mask")
        }
        // AR with the cache equals the plain causal forward: replay the probabilities.
        let arModel = DiT(config: ar.config, maxBatch: 1, maxTokens: 8)
        arModel.parameters.update(from: UnsafeBufferPointer(ar.model.parameters))
        let r = recs[0]
        let logits = r.tokens.withUnsafeBufferPointer { arModel.forward(tokens: UnsafeBufferPointer(rebasing: $0[0..<8]), batch: 1, layout: .causal, sigma: nil, training: false, dropoutSeed: 0) }
        for pos in 4..<8 {
            let p = subsProbabilities(logits: logits.baseAddress! + (pos - 1) * 23, count: 23, maskId: 22)
            XCTAssertEqual(Double(r.confidence![pos]), p[Int(r.tokens[pos])], accuracy: 1e-5)
        }
    }

    func testPromptAndSlidingWindowPastTheModelLength() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 8), blockSize: 4)
        var o = options(2, length: 40, block: 4); o.batch = 2    // model length 8: the window slides 8 times
        let prompt: [Int32] = [1, 2, 3, 4, 5]                     // BOS + 5 = 6 tokens: block 1 is half prompt
        let recs = try draftRecords(ck, o, prompts: [prompt])
        for r in recs {
            XCTAssertEqual(Array(r.tokens[0..<6]), [21] + prompt); XCTAssertEqual(r.promptLength, 6)
            XCTAssertEqual(r.confidence![0..<6].allSatisfy { $0 == 1 }, true); XCTAssert(r.unmaskStep![0..<6].allSatisfy { $0 == 0 })
            XCTAssertEqual(r.nfe, 34); XCTAssertFalse(r.tokens.contains(22))
        }
    }

    func testVariableLengthStopsAtEOSAndEntropyRule() throws {
        let model = makeSamplingModel(samplingConfig(), seed: 9)
        // Make EOS (21) overwhelmingly likely everywhere.
        model.tensor(named: "backbone.output_layer.linear.bias")![21] = 50
        let ck = try loadCheckpoint(model, blockSize: 4)
        var o = options(2, length: 32, block: 4); o.variableLength = true
        for r in try draftRecords(ck, o) {
            XCTAssertEqual(r.tokens, [21, 21], "truncated just after the second EOS (BOS counts as the first)")
        }
        // Entropy rule with a vocabulary of 23 (entropy < ln 23 < 4): variable length → len − 256 at the first check.
        let ck2 = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 10), blockSize: 4, extra: ["eos_id": "-1"])
        var o2 = options(1, length: 272, block: 8); o2.variableLength = true; o2.entropyStop = true; o2.sampler = .ddpm; o2.steps = 1
        let eosFree = try draftRecords(ck2, o2)[0]
        XCTAssertEqual(eosFree.tokens.count, 8, "len − 256 at the first check (block ending at 264)")
        // Fixed length: regenerated up to 10 times, then kept and flagged.
        var o3 = options(1, length: 264, block: 8); o3.entropyStop = true; o3.sampler = .ddpm; o3.steps = 1
        let kept = try draftRecords(ck2, o3)[0]
        XCTAssertEqual(kept.tokens.count, 264); XCTAssertFalse(kept.tokens.contains(22))
        XCTAssert(kept.stages[0].contains("attempt=10") && kept.stages[0].contains("degenerate"), kept.stages[0])
    }

    func testShardsPartitionTheSamples() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 11), blockSize: 4)
        let all = try draftRecords(ck, options(5, length: 8, block: 4))
        var parts: [TokenRecord] = []
        for i in 0..<2 { var o = options(5, length: 8, block: 4); o.shard = (i, 2); parts += try draftRecords(ck, o) }
        XCTAssertEqual(parts.sorted { $0.id < $1.id }, all)
    }

    func testUsageErrors() throws {
        let ck = try loadCheckpoint(makeSamplingModel(samplingConfig(), seed: 12), blockSize: 4)
        XCTAssertThrowsError(try draftRecords(ck, options(1, length: 10, block: 4))) { XCTAssert($0 is UsageError) }
        XCTAssertThrowsError(try draftRecords(ck, options(1, length: 4, block: 4), prompts: [[1, 2, 3, 4]])) { XCTAssert($0 is UsageError) }
        var o = options(1, length: 8, block: 4); o.nucleus = 0
        XCTAssertThrowsError(try draftRecords(ck, o)) { XCTAssert($0 is UsageError) }
    }

    func testCorruptCheckpointRefusedWithReason() throws {
        let path = try saveCheckpoint(makeSamplingModel(samplingConfig(), seed: 13), blockSize: 4)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let truncated = path + ".short"
        try Data(bytes[0..<(bytes.count - 100)]).write(to: URL(fileURLWithPath: truncated))
        XCTAssertThrowsError(try SamplingCheckpoint.open(path: truncated)) { e in
            XCTAssert("\(e)".contains("truncated") || "\(e)".contains("corrupt"), "\(e)")
        }
        bytes[3] = 0xFF   // header length absurd
        try Data(bytes).write(to: URL(fileURLWithPath: truncated))
        XCTAssertThrowsError(try SamplingCheckpoint.open(path: truncated)) { e in XCTAssert("\(e)".contains(truncated), "\(e)") }
        XCTAssertThrowsError(try SamplingCheckpoint.open(path: path + ".missing")) { e in XCTAssert("\(e)".contains("missing"), "\(e)") }
    }
}

/// The batch-1 sampler's split loops (SamplerMath: subsProbabilitiesSplit, gumbelSampleSplit) give the serial
/// functions' numbers bit for bit, the same token and the same generator state afterwards (zeros in p skipped as
/// the serial loop skips them, ties to the first index).
final class SplitSamplerTests: XCTestCase {
    func testSplitSoftmaxAndGumbelEqualTheSerialOnes() {
        var rng = SplitMix64(seed: 9)
        for (V, spread) in [(30000, 4.0), (50258, 40.0), (20000, 2000.0), (100, 4.0)] {
            let maskId = V - 1
            for trial in 0..<4 {
                var logits = (0..<V).map { _ in Float((rng.nextDouble() * 2 - 1) * spread) }
                if trial == 1 { for i in 0..<(V / 2) { logits[i] = -1e4 } }          // zeros in p across a whole chunk
                if trial == 2 { for i in stride(from: 0, to: V, by: 7) { logits[i] = 3 } }   // ties
                let serial = logits.withUnsafeBufferPointer { subsProbabilities(logits: $0.baseAddress!, count: V, maskId: maskId) }
                let split = logits.withUnsafeBufferPointer { subsProbabilitiesSplit(logits: $0.baseAddress!, count: V, maskId: maskId) }
                XCTAssertEqual(serial.map(\.bitPattern), split.map(\.bitPattern), "V=\(V) trial \(trial)")
                if trial == 1 { XCTAssertTrue(serial.contains(0)) }
                var a = SplitMix64(seed: rng.next()), b = a
                for draw in 0..<5 {
                    XCTAssertEqual(gumbelSample(p: serial, rng: &a), gumbelSampleSplit(p: split, rng: &b), "V=\(V) trial \(trial) draw \(draw)")
                    XCTAssertEqual(a.next(), b.next(), "generator state after V=\(V) trial \(trial) draw \(draw)")
                }
            }
        }
    }
}
