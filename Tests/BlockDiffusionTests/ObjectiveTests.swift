import XCTest
@testable import BlockDiffusion

final class ObjectiveTests: XCTestCase {
    func testRNGIsDeterministicSerialisableAndUniform() {
        var a = Xoshiro256(seed: 42), b = Xoshiro256(seed: 42), c = Xoshiro256(seed: 43)
        XCTAssertEqual(a.next(), b.next())
        XCTAssertNotEqual(a.next(), c.next())
        let saved = a.words
        let expected = (0..<10).map { _ in a.uniformDouble() }
        var restored = Xoshiro256(words: saved)
        XCTAssertEqual((0..<10).map { _ in restored.uniformDouble() }, expected)
        // Reference vector for xoshiro256** from state (1, 2, 3, 4): first outputs 11520, 0, 1509978240.
        var r = Xoshiro256(words: [1, 2, 3, 4])
        XCTAssertEqual([r.next(), r.next(), r.next()], [11520, 0, 1509978240])
        // Uniform draws stay in [0,1) and have mean ≈ 1/2, variance ≈ 1/12.
        var g = Xoshiro256(seed: 7)
        let n = 20000
        var s = 0.0, s2 = 0.0
        for _ in 0..<n { let u = Double(g.uniformFloat()); XCTAssert(u >= 0 && u < 1); s += u; s2 += u * u }
        XCTAssertEqual(s / Double(n), 0.5, accuracy: 0.01)
        XCTAssertEqual(s2 / Double(n) - (s / Double(n)) * (s / Double(n)), 1.0 / 12, accuracy: 0.005)
        var counts = [Int](repeating: 0, count: 3)
        for _ in 0..<3000 { counts[g.uniformInt(3)] += 1 }
        XCTAssert(counts.allSatisfy { $0 > 900 && $0 < 1100 })
    }

    /// The shared generators pinned to an independent implementation (Tests/scripts/rng_golden.py): SplitMix64
    /// (its published first output for seed 0), Xoshiro256's seeding, uniformInt + fisherYates.
    func testSharedGeneratorsGoldenValues() {
        var s = SplitMix64(seed: 0)
        XCTAssertEqual([s.next(), s.next(), s.next()], [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
        XCTAssertEqual(Xoshiro256(seed: 42).words, [13679457532755275413, 2949826092126892291, 5139283748462763858, 6349198060258255764])
        var r = SplitMix64(seed: 12345)
        var a = Array(0..<10)
        r.fisherYates(&a)
        XCTAssertEqual(a, [2, 5, 4, 7, 6, 3, 8, 0, 9, 1])
        var one = [7], none: [Int] = []
        r.fisherYates(&one); r.fisherYates(&none)
        XCTAssertEqual(one, [7]); XCTAssertEqual(none, [])
    }

    func testAntitheticTimesCoverEveryStratum() {
        let obj = DiffusionObjective(blockSize: 4, length: 16, maskID: 99)  // nb = 4
        var rng = Xoshiro256(seed: 1)
        let batch = 3, n = batch * 4
        let t = obj.sampleTimes(batch: batch, interval: ClipInterval(0, 1), rng: &rng)
        XCTAssertEqual(t.count, n)
        // Stratum j = k·nb + b holds exactly one time in [j/n, (j+1)/n).
        for j in 0..<n { XCTAssert(t[j] >= Double(j) / Double(n) && t[j] < Double(j + 1) / Double(n), "j=\(j) t=\(t[j])") }
        // Clipped: t = u(ω−β)+β stays in [β, ω].
        let c = obj.sampleTimes(batch: batch, interval: ClipInterval(0.45, 0.95), rng: &rng)
        XCTAssert(c.allSatisfy { $0 >= 0.45 && $0 <= 0.95 })
        XCTAssertEqual(obj.sampleTimes(batch: 2, interval: .tuned, rng: &rng), [Double](repeating: 1, count: 8))
        var plain = obj; plain.antithetic = false
        let u = plain.sampleTimes(batch: batch, interval: ClipInterval(0, 1), rng: &rng)
        XCTAssertFalse((0..<n).allSatisfy { u[$0] >= Double($0) / Double(n) && u[$0] < Double($0 + 1) / Double(n) })
    }

    func testMaskingFollowsPerBlockChanceAndKeepsBOS() {
        var obj = DiffusionObjective(blockSize: 8, length: 64, maskID: 1000)
        obj.resample = false
        let batch = 50
        let x0 = (0..<(batch * 64)).map { Int32($0 % 97) }
        // Block b of every sequence gets p = b/8 (0 … 7/8).
        let p = (0..<(batch * 8)).map { Double($0 % 8) / 8 }
        var rng = Xoshiro256(seed: 3)
        let xt = obj.maskTokens(x0: x0, batch: batch, p: p, interval: .base, rng: &rng)
        var frac = [Double](repeating: 0, count: 8)
        for k in 0..<batch {
            XCTAssertEqual(xt[k * 64], x0[k * 64])  // BOS never masked
            for i in 1..<64 {
                let idx = k * 64 + i
                XCTAssert(xt[idx] == x0[idx] || xt[idx] == 1000)
                if xt[idx] == 1000 { frac[i / 8] += 1 }
            }
        }
        XCTAssertEqual(frac[0], 0)  // p = 0 never masks
        for b in 1..<8 { XCTAssertEqual(frac[b] / Double(batch * 8 - (b == 0 ? batch : 0)), Double(b) / 8, accuracy: 0.06) }
        // ignore_bos off: position 0 can be masked; p = 1 masks everything.
        obj.ignoreBOS = false
        let all = obj.maskTokens(x0: x0, batch: batch, p: [Double](repeating: 1, count: batch * 8), interval: .base, rng: &rng)
        XCTAssert(all.allSatisfy { $0 == 1000 })
        // L' = 1 with β = 1: all masked regardless of p (then BOS restored if ignore_bos).
        var ar1 = DiffusionObjective(blockSize: 1, length: 4, maskID: 5)
        let x = [Int32](arrayLiteral: 1, 2, 3, 4)
        XCTAssertEqual(ar1.maskTokens(x0: x, batch: 1, p: [0, 0, 0, 0], interval: .tuned, rng: &rng), [1, 5, 5, 5])
        ar1.ignoreBOS = false
        XCTAssertEqual(ar1.maskTokens(x0: x, batch: 1, p: [0, 0, 0, 0], interval: .tuned, rng: &rng), [5, 5, 5, 5])
    }

    func testResampleKeepsEveryBlockInsideTheInterval() {
        var obj = DiffusionObjective(blockSize: 4, length: 32, maskID: 7)
        obj.ignoreBOS = false
        let batch = 40
        let x0 = [Int32](repeating: 1, count: batch * 32)
        var rng = Xoshiro256(seed: 11)
        let interval = ClipInterval(0.45, 0.95)
        let t = obj.sampleTimes(batch: batch, interval: interval, rng: &rng)
        let xt = obj.maskTokens(x0: x0, batch: batch, p: obj.moveChance(t), interval: interval, rng: &rng)
        for blk in 0..<(batch * 8) {
            let m = (0..<4).filter { xt[blk * 4 + $0] == 7 }.count
            XCTAssert(m == 2 || m == 3, "block \(blk) has \(m)/4 masked")  // 0.5 or 0.75 only
        }
        // Without resampling some blocks fall outside (the test can fail if resampling is a no-op).
        obj.resample = false
        let raw = obj.maskTokens(x0: x0, batch: batch, p: obj.moveChance(t), interval: interval, rng: &rng)
        XCTAssert((0..<(batch * 8)).contains { blk in
            let m = (0..<4).filter { raw[blk * 4 + $0] == 7 }.count; return m < 2 || m == 4 })
        // Only the upper side is checked when β = 1e-3.
        obj.resample = true
        let hi = obj.maskTokens(x0: x0, batch: batch, p: [Double](repeating: 0.2, count: batch * 8),
                                interval: ClipInterval(1e-3, 0.5), rng: &rng)
        for blk in 0..<(batch * 8) { XCTAssertLessThanOrEqual((0..<4).filter { hi[blk * 4 + $0] == 7 }.count, 2) }
    }

    func testCoefficientsAndTunedRule() {
        var obj = DiffusionObjective(blockSize: 4, length: 8, maskID: 0)
        let t = [0.25, 0.5, 0.8, 1.0]
        XCTAssertEqual(obj.coefficients(t, interval: .base, weighted: true), [-4, -2, -1.25, -1])
        XCTAssertEqual(obj.coefficients([1, 1], interval: .tuned, weighted: false), [-1, -1])
        // β = 0.55 > 0.5: exact rule keeps −1/t, the reference rule forces −1.
        XCTAssertEqual(obj.coefficients([0.6], interval: ClipInterval(0.55, 1.05), weighted: false)[0], -1 / 0.6, accuracy: 1e-15)
        obj.tunedRule = .reference
        XCTAssertEqual(obj.coefficients([0.6], interval: ClipInterval(0.55, 1.05), weighted: false), [-1])
        obj.tunedRule = .exact
        // Reweighting applies per block from its own t, and only when `weighted` (training).
        obj.reweighting = .simple
        XCTAssertEqual(obj.coefficients([0.2, 0.7], interval: .base, weighted: true)[0], -1, accuracy: 1e-12)
        XCTAssertEqual(obj.coefficients([0.2, 0.7], interval: .base, weighted: true)[1], -1, accuracy: 1e-12)
        XCTAssertEqual(obj.coefficients([0.2, 0.7], interval: .base, weighted: false), [-5, -1 / 0.7])
        obj.reweighting = .iddpm
        let c = obj.coefficients([0.2, 0.7], interval: .base, weighted: true)
        XCTAssertEqual(c[0], -5 * 2 * (0.2 * 0.8).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(c[1], -1 / 0.7 * 2 * (0.7 * 0.3).squareRoot(), accuracy: 1e-12)
    }

    func testLossAssemblyByHand() {
        // B = 2, L = 4, L' = 2. logp is 0 on unmasked tokens (SUBS carry-over).
        let logp: [Float] = [0, -1.0, -2.0, 0,
                             0, 0, -0.5, -3.0]
        let t = [0.5, 0.25, 1.0, 0.8]
        let coef = t.map { -1 / $0 }
        var d = [Float](repeating: 9, count: 8)
        let train = logp.withUnsafeBufferPointer { lp in d.withUnsafeMutableBufferPointer { dp in
            LossAssembly.diffusion(logp: lp, coefficients: coef, batch: 2, length: 4, blockSize: 2,
                                   ignoreBOS: true, training: true, dLogp: dp) } }
        // Token losses: 2·1 = 2, 4·2 = 8 (seq 0); block t = 1 holds only zeros; 1.25·0.5 + 1.25·3 = 4.375.
        XCTAssertEqual(train.nllSum, 14.375, accuracy: 1e-12)
        XCTAssertEqual(train.tokenCount, 8)
        XCTAssertEqual(train.tokenNLL, 14.375 / 8, accuracy: 1e-12)
        XCTAssertEqual(train.blockMeans, [1, 4, 0, 2.1875])
        XCTAssertEqual(d[1], Float(-2.0 / 8)); XCTAssertEqual(d[7], Float(-1.25 / 8)); XCTAssertEqual(d[0], Float(-2.0 / 8))
        // Eval: the BOS slot leaves the denominator (and the numerator).
        let eval = logp.withUnsafeBufferPointer {
            LossAssembly.diffusion(logp: $0, coefficients: coef, batch: 2, length: 4, blockSize: 2, ignoreBOS: true, training: false) }
        XCTAssertEqual(eval.tokenCount, 6)
        XCTAssertEqual(eval.tokenNLL, 14.375 / 6, accuracy: 1e-12)
        let noBOS = logp.withUnsafeBufferPointer {
            LossAssembly.diffusion(logp: $0, coefficients: coef, batch: 2, length: 4, blockSize: 2, ignoreBOS: false, training: false) }
        XCTAssertEqual(noBOS.tokenCount, 8)
        // AR: −mean logp over B·(L−1) targets.
        let ar: [Float] = [-1, -2, -3, -0.5, -0.5, -1]
        var dar = [Float](repeating: 0, count: 6)
        let a = ar.withUnsafeBufferPointer { lp in dar.withUnsafeMutableBufferPointer { dp in
            LossAssembly.autoregressive(logp: lp, batch: 2, targets: 3, dLogp: dp) } }
        XCTAssertEqual(a.tokenNLL, 8.0 / 6, accuracy: 1e-12)
        XCTAssertEqual(a.blockMeans, [2, 2.0 / 3])
        XCTAssertEqual(dar[0], Float(-1.0 / 6))
    }

    func testTunedL1LossEqualsExactNLL() {
        // L' = 1, U[1,1]: every token masked (BOS kept), coefficient −1 → loss = −Σ log p over L−1 positions,
        // the exact AR-style NLL −log p(x_b | m, x_<b).
        var obj = DiffusionObjective(blockSize: 1, length: 4, maskID: 9)
        obj.schedule = .cosine  // the schedule is irrelevant under U[1,1]
        var rng = Xoshiro256(seed: 5)
        let t = obj.sampleTimes(batch: 1, interval: .tuned, rng: &rng)
        let coef = obj.coefficients(t, interval: .tuned, weighted: true)
        XCTAssertEqual(coef, [-1, -1, -1, -1])
        let logp: [Float] = [0, -0.7, -1.1, -2.2]
        let s = logp.withUnsafeBufferPointer {
            LossAssembly.diffusion(logp: $0, coefficients: coef, batch: 1, length: 4, blockSize: 1, ignoreBOS: true, training: false) }
        XCTAssertEqual(s.tokenNLL, (0.7 + 1.1 + 2.2) / 3, accuracy: 1e-6)
    }

    func testClipSearchGridMatchesReference() {
        // Printed by Tests/scripts/objectives_fixtures.py from the reference's init_valid_vars.
        let expected: [(Double, Double)] = [(0.001, 1), (0.0010000000474974513, 0.5), (0.05000000074505806, 0.550000011920929), (0.10000000149011612, 0.6000000238418579), (0.15000000596046448, 0.6499999761581421), (0.20000000298023224, 0.699999988079071), (0.25, 0.75), (0.30000001192092896, 0.800000011920929), (0.3499999940395355, 0.8500000238418579), (0.4000000059604645, 0.8999999761581421), (0.44999998807907104, 0.949999988079071), (0.5, 1.0), (0.0010000000474974513, 0.6000000238418579), (0.05000000074505806, 0.6500000357627869), (0.10000000149011612, 0.7000000476837158), (0.15000000596046448, 0.75), (0.20000000298023224, 0.800000011920929), (0.25, 0.8500000238418579), (0.30000001192092896, 0.9000000357627869), (0.3499999940395355, 0.9500000476837158), (0.4000000059604645, 1.0), (0.0010000000474974513, 0.699999988079071), (0.05000000074505806, 0.75), (0.10000000149011612, 0.800000011920929), (0.15000000596046448, 0.8500000238418579), (0.20000000298023224, 0.8999999761581421), (0.25, 0.949999988079071), (0.30000001192092896, 1.0), (0.0010000000474974513, 0.800000011920929), (0.05000000074505806, 0.8500000238418579), (0.10000000149011612, 0.9000000357627869), (0.15000000596046448, 0.9500000476837158), (0.20000000298023224, 1.0), (0.0010000000474974513, 0.8999999761581421), (0.05000000074505806, 0.949999988079071), (0.10000000149011612, 1.0)]
        let g = ClipSearch.grid(blockSize: 4)
        XCTAssertEqual(g.count, expected.count)
        for (c, e) in zip(g, expected) { XCTAssertEqual(c, ClipInterval(e.0, e.1)) }
        XCTAssertEqual(ClipSearch.grid(blockSize: 1), [.base, .tuned])
    }

    func testVarianceAccumulatorAndArgmin() {
        XCTAssertEqual(VarianceAccumulator.unbiasedVariance([0.5, 1.5, 0.0, 4.0, 2.25]), 2.4875, accuracy: 1e-15)  // torch .var()
        var a = VarianceAccumulator(), b = VarianceAccumulator()
        a.add(blockMeans: [1, 2, 3]); a.add(blockMeans: [0, 0, 6])   // vars 1 and 12
        b.add(blockMeans: [1, 1, 1.5]); b.add(blockMeans: [2, 2, 2])
        XCTAssertEqual(a.varNELBO, 6.5, accuracy: 1e-12)
        XCTAssertEqual(b.varNELBO, 1.0 / 24, accuracy: 1e-12)
        XCTAssertEqual(ClipSearch.best([(.base, a), (ClipInterval(0.45, 0.95), b)]), ClipInterval(0.45, 0.95))
        XCTAssertEqual(ClipSearch.best([(.base, b), (ClipInterval(0.45, 0.95), b)]), .base)  // first on ties
    }

    /// With a "perfect" denoiser that assigns probability q to every masked target, the loglinear
    /// NELBO estimate per token is E_t[(1/t)·t·(−log q)] = −log q; the MC average over many
    /// antithetic draws must agree (a statistical check of t-sampling + masking + assembly together).
    func testMonteCarloNELBOIsUnbiased() {
        let L = 16, batch = 64
        let obj = DiffusionObjective(blockSize: 4, length: L, maskID: 50)
        var rng = Xoshiro256(seed: 9)
        let x0 = [Int32](repeating: 3, count: batch * L)
        let q = Float(0.3)
        var total = 0.0, count = 0
        for _ in 0..<20 {
            let t = obj.sampleTimes(batch: batch, interval: .base, rng: &rng)
            let xt = obj.maskTokens(x0: x0, batch: batch, p: obj.moveChance(t), interval: .base, rng: &rng)
            let logp = xt.map { $0 == 50 ? log(q) : 0 }
            let s = logp.withUnsafeBufferPointer {
                LossAssembly.diffusion(logp: $0, coefficients: obj.coefficients(t, interval: .base, weighted: false),
                                       batch: batch, length: L, blockSize: 4, ignoreBOS: true, training: false) }
            total += s.nllSum; count += s.tokenCount
        }
        XCTAssertEqual(total / Double(count), -Double(log(q)), accuracy: 0.05)
    }
}

/// BatchLoss (model heads + summarize) against the naive path: SUBS log-probs per row from the same
/// logits, gathered at x0, assembled by LossAssembly.diffusion with the same coefficients.
final class LossAssemblyTwinTests: XCTestCase {
    func testBatchLossAgreesWithNaiveAssembly() throws {
        let dir = TinyRun.tempDir("twin")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = dir + "/t.tok"
        try TinyRun.writeStream(data, rows: TinyRun.rows(4))
        var r = TinyRun.request(dir: dir, data: data, valid: nil, steps: 2)
        r.sets.append("dropout=0")
        let (t, _) = try TrainSetup.make(r)
        for _ in 0..<2 { _ = try t.trainStep() }
        let obj = t.loss.objective
        let L = obj.length, V = t.model.config.vocabSize, B = 4
        let x0 = t.train.tokens
        for training in [true, false] {
            let start = Xoshiro256(seed: 5)
            var rng = start
            let fast = x0.withUnsafeBufferPointer {
                t.loss.run(x0: $0, batch: B, interval: .base, training: training, weighted: false, backward: false, dropoutSeed: 0, rng: &rng)
            }
            // Replay the same draws by hand.
            var rng2 = start
            let times = obj.sampleTimes(batch: B, interval: .base, rng: &rng2)
            let xt = obj.maskTokens(x0: x0, batch: B, p: obj.moveChance(times), interval: .base, rng: &rng2)
            var input = [Int32]()
            for k in 0..<B { input += xt[(k * L)..<((k + 1) * L)]; input += x0[(k * L)..<((k + 1) * L)] }
            let logits = input.withUnsafeBufferPointer {
                t.model.forward(tokens: $0, batch: B, layout: .blockDiffusion(blockSize: obj.blockSize), sigma: nil, training: false, dropoutSeed: 0)
            }
            var row = [Float](repeating: 0, count: V)
            var logp = [Float](repeating: 0, count: B * L)
            for i in 0..<(B * L) {
                row.withUnsafeMutableBufferPointer { out in
                    LossHeads.subsLogProbs(logits.baseAddress! + i * V, V: V, xt: xt[i], maskId: obj.maskID, out: out.baseAddress!)
                }
                logp[i] = row[Int(x0[i])]
            }
            let naive = logp.withUnsafeBufferPointer {
                LossAssembly.diffusion(logp: $0, coefficients: obj.coefficients(times, interval: .base, weighted: false),
                                       batch: B, length: L, blockSize: obj.blockSize, ignoreBOS: obj.ignoreBOS, training: training)
            }
            XCTAssertEqual(fast.tokenCount, naive.tokenCount)
            XCTAssertEqual(fast.nllSum, naive.nllSum, accuracy: 1e-4 * max(1, naive.nllSum))
            for (a, b) in zip(fast.blockMeans, naive.blockMeans) { XCTAssertEqual(a, b, accuracy: 1e-4 * max(1, abs(b))) }
            XCTAssertGreaterThan(naive.nllSum, 0)
        }
    }
}

/// The objective wiring against the PyTorch twin's fixtures (Fixtures/parity/{bd3,mdlm,ar}.safetensors,
/// written by Tests/scripts/make_model_fixtures.py): masking from the saved uniforms (`u ≤ t`, BOS kept),
/// per-token losses, train / eval NELBO reductions and the parameter gradients of the train NELBO.
final class ObjectiveParityTests: XCTestCase {
    func model(_ f: SafetensorsFile) throws -> (DiT, Int, Int32, Int) {
        let m = f.metadata
        func i(_ k: String) -> Int { Int(m[k]!)! }
        let c = ModelConfig(vocabSize: i("vocab_size"), hiddenSize: i("hidden_size"), nBlocks: i("n_blocks"), nHeads: i("n_heads"),
                            condDim: i("cond_dim"), length: i("length"), dropout: 0, causal: m["causal"] == "true")
        let dit = DiT(config: c, maxBatch: i("batch"), maxTokens: 2 * i("length"))
        for t in dit.tensors {     // the fixture holds the weights under their reference names
            let v = try f.floats(t.name)
            for j in 0..<t.count { dit.parameters[t.offset + j] = v[j] }
        }
        return (dit, i("block_size"), Int32(i("mask_id") ), i("batch"))
    }

    func testDiffusionLossMatchesTorch() throws {
        for (name, algo) in [("bd3", Algorithm.bd3), ("mdlm", .mdlm)] {
            let f = try parityFixture(name)
            let (dit, bs, mask, B) = try model(f)
            let L = dit.config.length
            var obj = DiffusionObjective(blockSize: bs, length: L, maskID: mask)
            obj.ignoreBOS = true
            let x0 = try f.int32s("input.x0")
            let tTok = try f.floats("input.t").map(Double.init)
            let u = try f.floats("input.u")
            let blockT = (0..<(B * obj.blocksPerSequence)).map { tTok[($0 / obj.blocksPerSequence) * L + ($0 % obj.blocksPerSequence) * bs] }
            var rng = Xoshiro256(seed: 0)
            let xt = obj.maskTokens(x0: x0, batch: B, p: obj.moveChance(blockT), interval: .base, uniforms: u, rng: &rng)
            XCTAssertEqual(xt, try f.int32s("input.xt"), name)
            let runner = BatchLoss(model: dit, algorithm: algo, objective: obj, maxBatch: B, needsGradients: true)
            dit.zeroGradients()
            let train = x0.withUnsafeBufferPointer {
                runner.evaluate(x0: $0, xt: xt, blockTimes: blockT, batch: B, interval: .base, training: true, weighted: false,
                                backward: true, dropoutSeed: 0)
            }
            XCTAssertEqual(train.tokenNLL, Double(try f.floats("expect.nelbo_train")[0]), accuracy: 1e-5 * train.tokenNLL, name)
            XCTAssertLessThanOrEqual(relativeError(runner.tokenLosses(batch: B, scale: 1 / Double(train.tokenCount)),
                                                   try f.floats("expect.loss_tok")), 1e-4, name)
            XCTAssertEqual(dit.tensors.filter { f.entry("grad." + $0.name) != nil }.count, dit.tensors.count, name)
            for tensor in dit.tensors where f.entry("grad." + tensor.name) != nil {
                XCTAssertLessThanOrEqual(relativeError(Array(dit.gradient(named: tensor.name)!), try f.floats("grad." + tensor.name)), 1e-4,
                                         "\(name) grad \(tensor.name)")
            }
            let eval = x0.withUnsafeBufferPointer {
                runner.evaluate(x0: $0, xt: xt, blockTimes: blockT, batch: B, interval: .base, training: false, weighted: false,
                                backward: false, dropoutSeed: 0)
            }
            XCTAssertEqual(eval.tokenCount, B * (L - 1))
            XCTAssertEqual(eval.tokenNLL, Double(try f.floats("expect.nelbo_eval")[0]), accuracy: 1e-5 * eval.tokenNLL, name)
        }
    }

    func testARLossMatchesTorch() throws {
        let f = try parityFixture("ar")
        let (dit, _, mask, B) = try model(f)
        let L = dit.config.length
        let runner = BatchLoss(model: dit, algorithm: .ar, objective: DiffusionObjective(blockSize: 1, length: L, maskID: mask),
                               maxBatch: B, needsGradients: true)
        let x0 = try f.int32s("input.x0")
        var rng = Xoshiro256(seed: 0)
        dit.zeroGradients()
        let s = x0.withUnsafeBufferPointer {
            runner.run(x0: $0, batch: B, interval: .base, training: true, weighted: false, backward: true, dropoutSeed: 0, rng: &rng)
        }
        XCTAssertEqual(s.tokenCount, B * (L - 1))
        XCTAssertEqual(s.tokenNLL, Double(try f.floats("expect.nelbo_train")[0]), accuracy: 1e-5 * s.tokenNLL)
        XCTAssertEqual(dit.tensors.filter { f.entry("grad." + $0.name) != nil }.count, dit.tensors.count)
        for tensor in dit.tensors where f.entry("grad." + tensor.name) != nil {
            XCTAssertLessThanOrEqual(relativeError(Array(dit.gradient(named: tensor.name)!), try f.floats("grad." + tensor.name)), 1e-4,
                                     "ar grad \(tensor.name)")
        }
    }
}
