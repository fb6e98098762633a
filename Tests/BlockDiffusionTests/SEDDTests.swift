// SEDD baseline: parameterisation + score-entropy loss (fixture parity with the PyTorch twin, finite
// differences, hand-computed values, fused vs naive twin), batch loss wiring, analytic sampler.
//
// Error measure for fixture parity, per tensor: rel = max_i |swift_i − torch_i| / max_i |torch_i| (the
// ∞-norm of the difference over the ∞-norm of the reference); required rel ≤ 1e-4 (fp32 model).
import XCTest
@testable import BlockDiffusion

private func seddFixture(_ name: String) throws -> SafetensorsFile {
    guard let url = Bundle.module.url(forResource: name, withExtension: "safetensors", subdirectory: "Fixtures/parity") else {
        throw ModelError("fixture \(name).safetensors missing from the test bundle")
    }
    return try SafetensorsFile(path: url.path)
}

/// F64 tensors read bit-exactly (SafetensorsFile.floats narrows to Float).
private func doubles(_ f: SafetensorsFile, _ name: String) throws -> [Double] {
    guard let e = f.entry(name), e.dtype == "F64" else { throw ModelError("\(name) missing or not F64") }
    let bytes = [UInt8](FileManager.default.contents(atPath: f.path)!)
    var n = 0
    for i in 0..<8 { n |= Int(bytes[i]) << (8 * i) }
    let start = 8 + n + e.begin
    return (0..<e.count).map { (i: Int) -> Double in
        var bits: UInt64 = 0
        for j in 0..<8 { bits |= UInt64(bytes[start + 8 * i + j]) << (8 * UInt64(j)) }
        return Double(bitPattern: bits)
    }
}

private func relErr(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count)
    var num = 0.0, den = 0.0
    for i in a.indices { num = max(num, abs(Double(a[i]) - Double(b[i]))); den = max(den, abs(Double(b[i]))) }
    return den == 0 ? num : num / den
}

private func relErr(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    var num = 0.0, den = 0.0
    for i in a.indices { num = max(num, abs(a[i] - b[i])); den = max(den, abs(b[i])) }
    return den == 0 ? num : num / den
}

/// A small time-conditioned DiT with every parameter random (so the sampler sees non-uniform scores).
private func tinySEDDModel(V: Int = 11, L: Int = 8, maxBatch: Int = 3, seed: UInt64 = 7) -> DiT {
    let cfg = ModelConfig(vocabSize: V, hiddenSize: 16, nBlocks: 1, nHeads: 2, condDim: 8, length: L, dropout: 0,
                          causal: false, timeConditioning: true)
    let model = DiT(config: cfg, maxBatch: maxBatch, maxTokens: L)
    var g = SplitMix64(seed: seed)
    for i in 0..<model.parameters.count { model.parameters[i] = Float(g.nextDouble() * 1.2 - 0.6) }
    return model
}

final class SEDDTests: XCTestCase {
    let tol = 1e-4

    func assertClose(_ a: [Float], _ b: [Float], _ what: String, tol: Double? = nil, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        guard a.count == b.count else { return }
        let e = relErr(a, b)
        if ProcessInfo.processInfo.environment["SEDD_VERBOSE"] != nil { print("SEDD-PARITY", what, a.count, e) }
        XCTAssertLessThanOrEqual(e, tol ?? self.tol, "\(what): relative error \(e)", file: file, line: line)
    }

    // MARK: fixture parity (PyTorch twin, spec §5)

    func testFixtureParity() throws {
        let f = try seddFixture("sedd")
        let meta = f.metadata
        func i(_ k: String) -> Int { Int(meta[k]!)! }
        let cfg = ModelConfig(vocabSize: i("vocab_size"), hiddenSize: i("hidden_size"), nBlocks: i("n_blocks"), nHeads: i("n_heads"),
                              condDim: i("cond_dim"), length: i("length"), dropout: 0, causal: false, timeConditioning: true)
        let B = i("batch"), L = cfg.length, V = cfg.vocabSize, m = Int32(i("mask_id"))
        let model = DiT(config: cfg, maxBatch: B, maxTokens: L)
        try model.load(file: f, ignoreUnknown: true)
        let x0 = try f.int32s("input.x0"), xt = try f.int32s("input.xt"), tTok = try f.floats("input.t")
        let t: [Double] = (0..<B).map { (b: Int) -> Double in Double(tTok[b * L]) }

        // The noise: σ(t) and dσ(t) of the bd3lms variant reproduce the fixture's inputs.
        assertClose(t.map { Float(SEDDNoise.bd3lms.sigma($0)) }, try f.floats("input.sigma"), "sigma")
        assertClose(t.map { Float(SEDDNoise.bd3lms.dsigma($0)) }, try f.floats("input.dsigma"), "dsigma")

        // DiT forward (time conditioning on σ) → logits → log-score → lp, score entropy.
        let sigmaF = try f.floats("input.sigma")
        let sigma: [Double] = sigmaF.map { Double($0) }
        let dsigma: [Double] = try f.floats("input.dsigma").map { Double($0) }
        let logits = xt.withUnsafeBufferPointer { tok in sigmaF.withUnsafeBufferPointer {
            Array(model.forward(tokens: tok, batch: B, layout: .full, sigma: $0, training: false, dropoutSeed: 0)) } }
        assertClose(logits, try f.floats("expect.logits"), "logits")
        var logScore = [Float](repeating: 0, count: B * L * V)
        logits.withUnsafeBufferPointer { lg in logScore.withUnsafeMutableBufferPointer { out in
            for r in 0..<(B * L) {
                SEDDLoss.logScoreForward(logits: lg.baseAddress! + r * V, V: V, xt: xt[r], sigma: sigma[r / L], out: out.baseAddress! + r * V)
            }
        } }
        assertClose(logScore, try f.floats("expect.log_score"), "log_score")
        let lp: [Float] = (0..<(B * L)).map { (r: Int) -> Float in logScore[r * V + Int(x0[r])] }
        assertClose(lp, try f.floats("expect.lp"), "lp")
        var loss = [Float](repeating: 0, count: B * L)
        SEDDLoss.forward(logits: logits, batch: B, length: L, V: V, xt: xt, x0: x0, maskId: m, sigma: sigma, dsigma: dsigma,
                         gradScale: 1, loss: &loss, dLogits: nil)
        let entropy: [Float] = (0..<(B * L)).map { (r: Int) -> Float in loss[r] / Float(dsigma[r / L]) }
        assertClose(entropy, try f.floats("expect.entropy"), "entropy")
        assertClose(loss, try f.floats("expect.loss_tok"), "loss_tok")
        let sum = loss.reduce(0.0) { $0 + Double($1) }
        assertClose([Float(sum / Double(B * (L - 1)))], try f.floats("expect.nelbo_eval"), "nelbo_eval")

        // Batch loss with the fixture's x_t and t (training reduction = nelbo_train), then DiT.backward:
        // every parameter gradient of nelbo_train.
        let runner = SEDDBatchLoss(model: model, length: L, maskID: m, maxBatch: B, needsGradients: true)
        model.zeroGradients()
        let s = x0.withUnsafeBufferPointer { runner.run(x0: $0, xt: xt, t: t, training: true, backward: true, dropoutSeed: 0) }
        XCTAssertEqual(s.tokenCount, B * L)
        assertClose([Float(s.tokenNLL)], try f.floats("expect.nelbo_train"), "nelbo_train")
        assertClose(runner.tokenLosses, try f.floats("expect.loss_tok"), "loss_tok (batch)")
        for tn in model.tensors {
            XCTAssertEqual(f.entry("grad." + tn.name)?.shape, tn.shape, tn.name)
            assertClose(Array(model.gradient(named: tn.name)!), try f.floats("grad." + tn.name), "grad \(tn.name)")
        }
        // Evaluation reduction: BOS left out of the denominator.
        let e = x0.withUnsafeBufferPointer { runner.run(x0: $0, xt: xt, t: t, training: false, backward: false, dropoutSeed: 0) }
        XCTAssertEqual(e.tokenCount, B * (L - 1))
        assertClose([Float(e.tokenNLL)], try f.floats("expect.nelbo_eval"), "nelbo_eval (batch)")
    }

    // MARK: loss: hand-computed, finite differences, fused vs naive

    /// V = 3 (tokens 0, 1; mask 2), σ = ln 2 so e^σ − 1 = 1, r = 1 and the shift is ln 1 + ln 2 = ln 2. Written out:
    ///   logits = [ln2 + 0, ln2 + ln3, 5]  →  log_score = [0, ln3, 0] (x_t = m), score = [1, 3, ·]
    ///   x0 = 0: ℓ = (1 + 3) − 1·0 + 1·(ln1 − 1) = 3;          dℓ/dlogits = [1 − 1, 3, 0] = [0, 3, 0]
    ///   x0 = 1: ℓ = 4 − ln3 − 1 = 3 − ln3;                     dℓ/dlogits = [1, 3 − 1, 0] = [1, 2, 0]
    ///   an unmasked row (x_t = 1): loss 0, gradient 0.
    ///   exact score (score = r·onehot(x0)): ℓ = 0.
    /// dσ = 2, gradScale = 0.5 → loss = 2ℓ, dLogits = 2·0.5·dℓ.
    func testHandComputedLoss() {
        let ln2 = log(2.0), ln3 = log(3.0)
        let row: [Float] = [Float(ln2), Float(ln2 + ln3), 5]
        var logits: [Float] = row
        logits.append(contentsOf: row); logits.append(contentsOf: row)
        let exact: [Float] = [Float(ln2), -60, 0.3]
        logits.append(contentsOf: exact)
        let xt: [Int32] = [2, 2, 1, 2], x0: [Int32] = [0, 1, 1, 0]
        var loss = [Float](repeating: -1, count: 4), dl = [Float](repeating: -1, count: 12)
        let total = SEDDLoss.forward(logits: logits, batch: 1, length: 4, V: 3, xt: xt, x0: x0, maskId: 2, sigma: [ln2], dsigma: [2],
                                     gradScale: 0.5, loss: &loss, dLogits: &dl)
        XCTAssertEqual(Double(loss[0]), 6, accuracy: 1e-5)
        XCTAssertEqual(Double(loss[1]), 2 * (3 - ln3), accuracy: 1e-5)
        XCTAssertEqual(loss[2], 0)
        XCTAssertEqual(Double(loss[3]), 0, accuracy: 1e-6)
        XCTAssertEqual(total, 6 + 2 * (3 - ln3) + Double(loss[3]), accuracy: 1e-5)
        let want: [Double] = [0, 3, 0, 1, 2, 0, 0, 0, 0]
        for j in 0..<9 { XCTAssertEqual(Double(dl[j]), want[j], accuracy: 1e-5, "dLogits[\(j)]") }
        XCTAssertEqual(Double(dl[9]), 0, accuracy: 1e-6)   // exact score: gradient e^{ls} − r = 1 − 1
        XCTAssertEqual(dl[11], 0)                            // the mask column never gets gradient
        // log(expm1 σ) switches formula at 0.5 and stays continuous.
        XCTAssertEqual(SEDDLoss.logExpm1(0.5 - 1e-12), SEDDLoss.logExpm1(0.5), accuracy: 1e-10)
        XCTAssertEqual(SEDDLoss.logExpm1(1e-8), log(1e-8), accuracy: 1e-7)
    }

    /// Random logits, mixed masked/unmasked rows, σ below and above 0.5: the fused head equals the naive
    /// twin, and its gradient equals central differences of Σ loss.
    func testFusedMatchesNaiveAndFiniteDifferences() {
        let B = 2, L = 3, V = 7, m: Int32 = 6
        var g = SplitMix64(seed: 3)
        let logits: [Float] = (0..<(B * L * V)).map { (_: Int) -> Float in Float(g.nextDouble() * 4 - 2) }
        let xt: [Int32] = [1, 6, 6, 6, 2, 6], x0: [Int32] = [1, 4, 0, 5, 2, 3]
        let sigma = [0.3, 1.7], dsigma = [1.4, 0.8], scale = 0.25
        var lf = [Float](repeating: 0, count: B * L), ln = lf
        var df = [Float](repeating: 0, count: B * L * V), dn = df
        let tf = SEDDLoss.forward(logits: logits, batch: B, length: L, V: V, xt: xt, x0: x0, maskId: m, sigma: sigma, dsigma: dsigma,
                                  gradScale: scale, loss: &lf, dLogits: &df)
        let tn = SEDDLoss.naiveForward(logits: logits, batch: B, length: L, V: V, xt: xt, x0: x0, maskId: m, sigma: sigma, dsigma: dsigma,
                                       gradScale: scale, loss: &ln, dLogits: &dn)
        XCTAssertEqual(tf, tn, accuracy: 1e-6 * abs(tn))
        XCTAssertLessThanOrEqual(relErr(lf, ln), 1e-6)
        XCTAssertLessThanOrEqual(relErr(df, dn), 1e-6)
        for r in 0..<(B * L) { XCTAssertGreaterThanOrEqual(lf[r], 0, "score entropy is ≥ 0") }
        // Central differences in Double through the naive path (logits perturbed by ±h, exact in Float).
        func total(_ lg: [Float]) -> Double {
            var l = [Float](repeating: 0, count: B * L)
            return SEDDLoss.naiveForward(logits: lg, batch: B, length: L, V: V, xt: xt, x0: x0, maskId: m, sigma: sigma, dsigma: dsigma,
                                         gradScale: 1, loss: &l, dLogits: nil)
        }
        let h: Float = 1.0 / 64
        var maxErr = 0.0, maxG = 0.0
        for j in 0..<logits.count {
            var p = logits, q = logits
            p[j] += h; q[j] -= h
            let fd = (total(p) - total(q)) / Double(p[j] - q[j]) * scale
            maxErr = max(maxErr, abs(fd - Double(df[j]))); maxG = max(maxG, abs(Double(df[j])))
        }
        XCTAssertLessThanOrEqual(maxErr / maxG, 2e-3, "finite differences vs analytic gradient")
    }

    func testNoiseVariants() {
        let eps = 1e-3
        for t in [1e-3, 0.25, 0.6, 0.998] {
            XCTAssertEqual(SEDDNoise.loglinear.sigma(t), -log1p(-(1 - eps) * t), accuracy: 1e-15)
            XCTAssertEqual(SEDDNoise.loglinear.dsigma(t), (1 - eps) / (1 - (1 - eps) * t), accuracy: 1e-12)
            XCTAssertEqual(SEDDNoise.loglinear.moveChance(t), (1 - eps) * t, accuracy: 1e-12)
            XCTAssertEqual(SEDDNoise.bd3lms.sigma(t), -log(1 - t), accuracy: 1e-12)
            XCTAssertEqual(SEDDNoise.bd3lms.dsigma(t), 1 / (1 - t), accuracy: 1e-9 / (1 - t))
            XCTAssertEqual(SEDDNoise.bd3lms.moveChance(t), t)
        }
        XCTAssertEqual(SEDDNoise.bd3lms.sigma(1), -log(1e-3), accuracy: 1e-12)
        XCTAssertEqual(SEDDNoise.bd3lms.sigma(0.9999), -log(1e-3), accuracy: 1e-12)   // clamp
        XCTAssertEqual(SEDDNoise.loglinear.sigma(1), -log(1e-3), accuracy: 1e-12)
    }

    // MARK: batch loss

    /// Zero output layer (reference init): every logit 0, so at a masked token ℓ = r·ln(V−1) and the token
    /// loss is dσ·r·ln(V−1) = ln(V−1)/t (bd3lms noise, t < 0.999); unmasked tokens lose 0. BOS never masked,
    /// t antithetic (one per stratum), the same seed draws the same batch.
    func testBatchLossZeroModelAndSampling() {
        let V = 13, L = 8, B = 4
        let model = TinyRun.seddModel(V: V, L: L, maxBatch: B, seed: 1)
        let runner = SEDDBatchLoss(model: model, length: L, maskID: Int32(V - 1), maxBatch: B, needsGradients: true)
        let x0: [Int32] = (0..<(B * L)).map { (i: Int) -> Int32 in Int32(i % (V - 1)) }
        var rng = Xoshiro256(seed: 5)
        var tRng = rng
        let t = runner.objective.sampleTimes(batch: B, interval: .base, rng: &tRng)
        let s = x0.withUnsafeBufferPointer { runner.run(x0: $0, batch: B, training: false, backward: false, dropoutSeed: 0, rng: &rng) }
        XCTAssertEqual(s.tokenCount, B * (L - 1))
        let xt = runner.lastXt, tl = runner.tokenLosses
        let strata = Set(t.map { (tk: Double) -> Int in Int((tk - 1e-3) / (1 - 1e-3) * Double(B)) })
        XCTAssertEqual(strata, Set(0..<B), "antithetic: one t per stratum")
        var masked = 0
        for k in 0..<B {
            XCTAssertEqual(xt[k * L], x0[k * L], "BOS never masked")
            for i in 0..<L {
                let r = k * L + i
                if xt[r] == Int32(V - 1) {
                    masked += 1
                    XCTAssertEqual(Double(tl[r]) * t[k], log(Double(V - 1)), accuracy: 1e-4)
                } else {
                    XCTAssertEqual(xt[r], x0[r]); XCTAssertEqual(tl[r], 0)
                }
            }
        }
        XCTAssertGreaterThan(masked, 0)
        var rng2 = Xoshiro256(seed: 5)
        let s2 = x0.withUnsafeBufferPointer { runner.run(x0: $0, batch: B, training: false, backward: false, dropoutSeed: 0, rng: &rng2) }
        XCTAssertEqual(s, s2)
        XCTAssertEqual(runner.lastXt, xt)
        // Gradients reach the (zero) output layer through the loss.
        model.zeroGradients()
        var rng3 = Xoshiro256(seed: 5)
        _ = x0.withUnsafeBufferPointer { runner.run(x0: $0, batch: B, training: true, backward: true, dropoutSeed: 0, rng: &rng3) }
        XCTAssertGreaterThan(model.gradient(named: "backbone.output_layer.linear.weight")!.reduce(0) { $0 + abs($1) }, 0)
    }

    /// SEDD perplexity of the zero-output model is about V−1 (NELBO per token ≈ ln(V−1) in expectation).
    func testPerplexityOfZeroModel() {
        let V = 13, L = 8
        let model = TinyRun.seddModel(V: V, L: L, maxBatch: 8, seed: 1)
        let header = StreamHeader(kind: .sequences, vocabSize: V, tokenizerFingerprint: 0,
                                  special: SpecialTokens(bos: 0, eos: 0, mask: Int32(V - 1), pad: -1), fields: [], attributes: [:])
        let data = SequenceData(header: header, length: L, tokens: (0..<(16 * L)).map { (i: Int) -> Int32 in Int32(i % (V - 1)) })
        let r = SEDDPerplexity.evaluate(model: model, data: data, maskID: Int32(V - 1), samples: 8, batch: 8,
                                        batchRNG: { Xoshiro256(seed: 2 &+ UInt64($0)) })
        XCTAssertEqual(r.tokens, 16 * (L - 1))
        XCTAssertFalse(r.exact)
        XCTAssertEqual(r.nll, log(Double(V - 1)), accuracy: 0.25)
    }

    // MARK: sampler pieces

    /// One analytic step on V = 4 (tokens 0,1,2; mask 3), dσ = ln 2 (e^{dσ} = 2, e^{−dσ} = ½), written out:
    ///   masked row, score s = [0.2, 0.4, 0.1, 1] (s[m] = e^0), Σs = 1.7
    ///   staggered s' = 2s, s'[m] += (1 − 2)·1.7  → [0.4, 0.8, 0.2, 0.3]
    ///   T(m, ln2) = ½·onehot(m) + ½·1 = [½, ½, ½, 1]   → probs = [0.2, 0.4, 0.1, 0.3]
    ///   final step: probs[m] = 0 → [0.2, 0.4, 0.1, 0]
    ///   unmasked row x = 1, s = [0.7, 1, 0.3, 0.9]: T = ½·onehot(1) → probs = [0, 2·1·½, 0, 0] = [0, 1, 0, 0]
    func testAnalyticStepHandComputed() {
        let ln2 = log(2.0)
        var p = [Double]()
        SEDDSampler.analyticProbabilities(score: [0.2, 0.4, 0.1, 1], x: 3, maskId: 3, dsigma: ln2, out: &p)
        for (a, b) in zip(p, [0.2, 0.4, 0.1, 0.3]) { XCTAssertEqual(a, b, accuracy: 1e-12) }
        SEDDSampler.analyticProbabilities(score: [0.7, 1, 0.3, 0.9], x: 1, maskId: 3, dsigma: ln2, out: &p)
        for (a, b) in zip(p, [0.0, 1, 0, 0]) { XCTAssertEqual(a, b, accuracy: 1e-12) }
        // From logits: choose logits so that exp(logit − shift) = s at σ_t = 1.3.
        let sigma = 1.3, c = SEDDLoss.shift(sigma: sigma, V: 4)
        let sc: [Double] = [0.2, 0.4, 0.1, 0.55]
        let lg: [Float] = sc.map { (v: Double) -> Float in Float(log(v) + c) }   // the mask entry is overwritten by log_score[m] = 0
        SEDDSampler.stepProbabilities(logits: lg, V: 4, x: 3, maskId: 3, sigma: sigma, dsigma: ln2, nucleus: 1, final: false, out: &p)
        for (a, b) in zip(p, [0.2, 0.4, 0.1, 0.3]) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        SEDDSampler.stepProbabilities(logits: lg, V: 4, x: 3, maskId: 3, sigma: sigma, dsigma: ln2, nucleus: 1, final: true, out: &p)
        for (a, b) in zip(p, [0.2, 0.4, 0.1, 0]) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        // Nucleus 0.5 on the normalised score [0.2, 0.4, 0.1, 1]/1.7: keeps m (0.588) only → s = onehot(m),
        // staggered [0, 0, 0, 2 − 1] → probs = [0, 0, 0, 1].
        SEDDSampler.stepProbabilities(logits: lg, V: 4, x: 3, maskId: 3, sigma: sigma, dsigma: ln2, nucleus: 0.5, final: false, out: &p)
        for (a, b) in zip(p, [0.0, 0, 0, 1]) { XCTAssertEqual(a, b, accuracy: 1e-9) }
    }

    /// sampler.safetensors (F64): staggered score, transition, probs; Gumbel-max indices; nucleus filter.
    func testSamplerFixture() throws {
        let f = try seddFixture("sampler")
        let V = 67
        let score = try doubles(f, "sedd.score"), ds = try doubles(f, "sedd.dsigma"), x = try f.int32s("sedd.x")
        let stag = try doubles(f, "sedd.staggered"), tr = try doubles(f, "sedd.transition"), probs = try doubles(f, "sedd.probs")
        func row(_ a: [Double], _ r: Int) -> [Double] { Array(a[(r * V)..<((r + 1) * V)]) }
        for r in 0..<x.count {
            let s = row(score, r)
            XCTAssertLessThanOrEqual(relErr(SEDDSampler.staggeredScore(s, maskId: 66, dsigma: ds[r]), row(stag, r)), 1e-12)
            XCTAssertLessThanOrEqual(relErr(SEDDSampler.transposedTransition(x: x[r], V: V, maskId: 66, sigma: ds[r]), row(tr, r)), 1e-12)
            var p = [Double]()
            SEDDSampler.analyticProbabilities(score: s, x: x[r], maskId: 66, dsigma: ds[r], out: &p)
            XCTAssertLessThanOrEqual(relErr(p, row(probs, r)), 1e-12)
        }
        let gp = try doubles(f, "gumbel.p"), gu = try doubles(f, "gumbel.u"), gi = try f.int32s("gumbel.index")
        for r in 0..<gi.count {
            XCTAssertEqual(SEDDSampler.gumbelArgmax(row(gp, r), uniforms: row(gu, r)), Int(gi[r]), "gumbel row \(r)")
        }
        let pin = try doubles(f, "nucleus.p_in"), pout = try doubles(f, "nucleus.p_out"), tp = try doubles(f, "nucleus.top_p")
        for r in 0..<tp.count {
            XCTAssertLessThanOrEqual(relErr(SEDDSampler.nucleusFilter(row(pin, r), topP: tp[r]), row(pout, r)), 1e-12, "nucleus row \(r)")
        }
    }

    // MARK: sampler invariants

    func testSamplerInvariants() throws {
        let V = 11, L = 8, B = 3, T = 6
        let model = tinySEDDModel(V: V, L: L, maxBatch: B)
        var o = SEDDSamplerOptions(steps: T, length: L, maskID: Int32(V - 1), prompt: [0])
        o.noise = .bd3lms
        let sampler = try SEDDSampler(model: model, options: o)
        var history: [(Int, [Int32])] = []
        let out = sampler.sample(batch: B, seed: 42) { history.append(($0, $1)) }
        XCTAssertEqual(history.map { $0.0 }, Array(1...(T + 1)))
        XCTAssertEqual(out.count, B)
        for (k, s) in out.enumerated() {
            XCTAssertEqual(s.nfe, T)
            XCTAssertLessThanOrEqual(s.forwardPasses, T + 1)
            XCTAssertEqual(s.tokens[0], 0, "BOS kept")
            XCTAssertEqual(s.unmaskStep[0], 0)
            XCTAssertFalse(s.tokens.contains(Int32(V - 1)), "no MASK after the final denoise")
            for i in 1..<L {
                XCTAssertTrue((1...UInt32(T + 1)).contains(s.unmaskStep[i]))
                XCTAssertGreaterThan(s.confidence[i], 0); XCTAssertLessThanOrEqual(s.confidence[i], 1 + 1e-6)
                // Absorbing: masked until its unmask step, then constant and equal to the final token.
                for (step, x) in history {
                    let v = x[k * L + i]
                    if step < Int(s.unmaskStep[i]) { XCTAssertEqual(v, Int32(V - 1)) } else { XCTAssertEqual(v, s.tokens[i]) }
                }
            }
        }
        // Some tokens are unmasked before the final denoise (the τ-leaping steps do work).
        XCTAssertTrue(out.contains { $0.unmaskStep.contains { $0 >= 1 && $0 <= UInt32(T) } })
        // Deterministic by seed; another seed gives another sample.
        XCTAssertEqual(sampler.sample(batch: B, seed: 42), out)
        XCTAssertNotEqual(sampler.sample(batch: B, seed: 43).map { $0.tokens }, out.map { $0.tokens })
        // The samples-stream record carries the same fields.
        let rec = out[0].record(id: 9, options: o)
        XCTAssertEqual(rec.tokens, out[0].tokens); XCTAssertEqual(rec.confidence, out[0].confidence)
        XCTAssertEqual(rec.unmaskStep, out[0].unmaskStep); XCTAssertEqual(rec.nfe, UInt64(T)); XCTAssertEqual(rec.promptLength, 1)
        XCTAssertEqual(rec.stages, ["draft sedd analytic T=\(T) nucleus=1.0 noise=bd3lms nfe=\(T)"])
        // With nucleus and the loglinear variant, and T = 1, the invariants still hold.
        o.nucleus = 0.9; o.noise = .loglinear; o.steps = 1; o.prompt = [0, 5]
        let s1 = try SEDDSampler(model: model, options: o).sample(batch: 2, seed: 1)
        for s in s1 {
            XCTAssertEqual(Array(s.tokens[0..<2]), [0, 5]); XCTAssertEqual(s.promptLength, 2); XCTAssertEqual(s.nfe, 1)
            XCTAssertFalse(s.tokens.contains(Int32(V - 1)))
        }
    }

    func testSamplerRefusesBadOptions() {
        let model = tinySEDDModel()
        XCTAssertThrowsError(try SEDDSampler(model: model, options: SEDDSamplerOptions(steps: 0, length: 8, maskID: 10, prompt: [0])))
        XCTAssertThrowsError(try SEDDSampler(model: model, options: SEDDSamplerOptions(steps: 4, length: 9, maskID: 10, prompt: [0])))
        XCTAssertThrowsError(try SEDDSampler(model: model, options: SEDDSamplerOptions(steps: 4, length: 8, maskID: 10, prompt: [10])))
        let cfg = ModelConfig(vocabSize: 11, hiddenSize: 16, nBlocks: 1, nHeads: 2, condDim: 8, length: 8, dropout: 0, causal: false, timeConditioning: false)
        XCTAssertThrowsError(try SEDDSampler(model: DiT(config: cfg, maxBatch: 1, maxTokens: 8),
                                             options: SEDDSamplerOptions(steps: 4, length: 8, maskID: 10, prompt: [0])))
    }
}

extension SEDDTests {
    /// Through the `LossRunner` protocol (the trainer's view) SEDD and the diffusion loss run the same call.
    func testLossRunnerProtocol() {
        let V = 13, L = 8, B = 2
        let model = tinySEDDModel(V: V, L: L, maxBatch: B)
        let runner: any LossRunner = SEDDBatchLoss(model: model, length: L, maskID: Int32(V - 1), maxBatch: B, needsGradients: true)
        let x0: [Int32] = (0..<(B * L)).map { (i: Int) -> Int32 in Int32(i % (V - 1)) }
        var r1 = Xoshiro256(seed: 11), r2 = Xoshiro256(seed: 11)
        model.zeroGradients()
        let a = x0.withUnsafeBufferPointer { runner.run(x0: $0, batch: B, interval: .base, training: true, weighted: true, backward: true,
                                                        gradScale: 0.5, dropoutSeed: 0, rng: &r1) }
        let g1 = Array(model.gradients)
        model.zeroGradients()
        let b = x0.withUnsafeBufferPointer { (runner as! SEDDBatchLoss).run(x0: $0, batch: B, training: true, backward: true,
                                                                             gradScale: 1, dropoutSeed: 0, rng: &r2) }
        XCTAssertEqual(a, b)
        XCTAssertGreaterThan(a.tokenNLL, 0)
        // gradScale scales the accumulated gradient linearly.
        let g2 = Array(model.gradients)
        var maxDiff: Float = 0, maxG: Float = 0
        for i in g1.indices { maxDiff = max(maxDiff, abs(2 * g1[i] - g2[i])); maxG = max(maxG, abs(g2[i])) }
        XCTAssertGreaterThan(maxG, 0)
        XCTAssertLessThanOrEqual(maxDiff, 1e-5 * maxG)
    }
}

extension SEDDTests {
    /// With the exact score of a known denoising distribution p (s_y = p(y)/(e^σ_t − 1), i.e. logits
    /// log p(y) + log(V−1)), one analytic step from t to s is the true reverse transition of the absorbing
    /// process: unmask to y with probability p(y)·(t−s)/t, stay masked with probability s/t (bd3lms noise,
    /// e^σ − 1 = t/(1−t)). The probabilities sum to 1 without normalisation.
    func testAnalyticStepWithExactScoreIsTheReverseProcess() {
        let p: [Double] = [0.1, 0.25, 0.05, 0.4, 0.2]   // over tokens 0…4; mask m = 5, V = 6
        let V = 6, m: Int32 = 5
        let noise = SEDDNoise.bd3lms
        for (t, s) in [(0.7, 0.4), (0.95, 0.9), (0.3, 0.001)] {
            var lg = p.map { (q: Double) -> Float in Float(log(q) + log(Double(V - 1))) }
            lg.append(3.0)   // the mask logit is irrelevant (log_score[m] = 0 at a masked row)
            var probs = [Double]()
            SEDDSampler.stepProbabilities(logits: lg, V: V, x: m, maskId: m, sigma: noise.sigma(t),
                                          dsigma: noise.sigma(t) - noise.sigma(s), nucleus: 1, final: false, out: &probs)
            for y in 0..<5 { XCTAssertEqual(probs[y], p[y] * (t - s) / t, accuracy: 1e-6, "t=\(t) s=\(s) y=\(y)") }
            XCTAssertEqual(probs[5], s / t, accuracy: 1e-6)
        }
        // Final denoise (dσ = σ(t), probs[m] = 0): every masked position unmasks, in proportion to p.
        var lg = p.map { (q: Double) -> Float in Float(log(q) + log(Double(V - 1))) }
        lg.append(0)
        var probs = [Double]()
        let t = 1e-5
        SEDDSampler.stepProbabilities(logits: lg, V: V, x: m, maskId: m, sigma: noise.sigma(t), dsigma: noise.sigma(t),
                                      nucleus: 1, final: true, out: &probs)
        let z = probs.reduce(0, +)
        for y in 0..<5 { XCTAssertEqual(probs[y] / z, p[y], accuracy: 1e-6) }
        XCTAssertEqual(probs[5], 0)
    }

    /// Euler: probs[y] = rate·s[y] off the mask, the rest stays MASK; to first order in dt it is the analytic step.
    func testEulerStepHandComputedAndFirstOrderAnalytic() {
        let sigma = 1.3, c = SEDDLoss.shift(sigma: sigma, V: 4)
        let sc: [Double] = [0.2, 0.4, 0.1]
        let lg: [Float] = sc.map { Float(log($0) + c) } + [7]   // the mask logit is ignored
        var p = [Double]()
        SEDDSampler.eulerProbabilities(logits: lg, V: 4, maskId: 3, sigma: sigma, rate: 0.1, out: &p)
        for (a, b) in zip(p, [0.02, 0.04, 0.01, 0.93]) { XCTAssertEqual(a, b, accuracy: 1e-7) }
        // Too coarse a step: the MASK entry goes negative (never wins the Gumbel-max), others keep rate·s.
        SEDDSampler.eulerProbabilities(logits: lg, V: 4, maskId: 3, sigma: sigma, rate: 2, out: &p)
        XCTAssertEqual(p[3], 1 - 2 * 0.7, accuracy: 1e-6)
        XCTAssertNotEqual(SEDDSampler.gumbelArgmax(p, uniforms: [0.5, 0.5, 0.5, 0.999]), 3)
        // Small steps: analytic (dσ = σ(t) − σ(t − dt)) and Euler (rate = dt·σ'(t)) agree to O(dt²).
        let noise = SEDDNoise.loglinear, V = 6, m: Int32 = 5
        let q: [Double] = [0.1, 0.25, 0.05, 0.4, 0.2]
        let lg2: [Float] = q.map { Float(log($0)) } + [0]
        for t in [0.3, 0.7, 0.95] {
            let dt = 1e-4
            var a = [Double](), e = [Double]()
            SEDDSampler.stepProbabilities(logits: lg2, V: V, x: m, maskId: m, sigma: noise.sigma(t),
                                          dsigma: noise.sigma(t) - noise.sigma(t - dt), nucleus: 1, final: false, out: &a)
            SEDDSampler.eulerProbabilities(logits: lg2, V: V, maskId: m, sigma: noise.sigma(t), rate: dt * noise.dsigma(t), out: &e)
            for y in 0..<5 { XCTAssertEqual(e[y] / a[y], 1, accuracy: 1e-3, "t=\(t) y=\(y)") }
            XCTAssertEqual(e[5], a[5], accuracy: 1e-7)
        }
    }

    /// The Euler sampler keeps the sampler invariants; per-row seeds make a sample independent of its batch
    /// mates; Euler refuses the nucleus heuristic.
    func testEulerSamplerInvariantsAndPerRowSeeds() throws {
        let V = 11, L = 8, T = 5
        // Reference init (output linear zero): logits 0, i.e. the score of a uniform data distribution, whose
        // Euler unmask rate per step is dt/t — a random model's score is so large that everything unmasks at once.
        let model = tinySEDDModel(V: V, L: L, maxBatch: 3)
        model.initialize(seed: 3)
        var o = SEDDSamplerOptions(steps: T, length: L, maskID: Int32(V - 1), prompt: [0])
        o.predictor = .euler
        let sampler = try SEDDSampler(model: model, options: o)
        var history: [(Int, [Int32])] = []
        let out = sampler.sample(seeds: [5, 6, 7]) { history.append(($0, $1)) }
        for (k, s) in out.enumerated() {
            XCTAssertEqual(s.tokens[0], 0); XCTAssertEqual(s.nfe, T)
            XCTAssertFalse(s.tokens.contains(Int32(V - 1)), "no MASK after the final denoise")
            for i in 1..<L {
                for (step, x) in history {
                    let v = x[k * L + i]
                    if step < Int(s.unmaskStep[i]) { XCTAssertEqual(v, Int32(V - 1)) } else { XCTAssertEqual(v, s.tokens[i]) }
                }
            }
        }
        XCTAssertTrue(out.contains { $0.unmaskStep.contains { $0 >= 2 && $0 <= UInt32(T) } }, "the Euler steps unmask gradually")
        XCTAssertEqual(out[0].record(id: 0, options: o).stages, ["draft sedd euler T=\(T) nucleus=1.0 noise=bd3lms nfe=\(T)"])
        // A row drawn alone with its seed is the same sample (up to float rounding of the batched forward,
        // which this tiny model does not reach: compare tokens and unmask steps).
        let alone = sampler.sample(seeds: [6])[0]
        XCTAssertEqual(alone.tokens, out[1].tokens); XCTAssertEqual(alone.unmaskStep, out[1].unmaskStep)
        // On the uniform score both predictors are the exact reverse process (unmask with probability dt/t, token
        // uniform), so with the same draws they give the same samples.
        o.predictor = .analytic
        let analytic = try SEDDSampler(model: model, options: o).sample(seeds: [5, 6, 7])
        XCTAssertEqual(analytic.map(\.unmaskStep), out.map(\.unmaskStep)); XCTAssertEqual(analytic.map(\.tokens), out.map(\.tokens))
        o.predictor = .euler; o.nucleus = 0.9
        XCTAssertThrowsError(try SEDDSampler(model: model, options: o)) { XCTAssertTrue("\($0)".contains("nucleus")) }
    }

    /// A few AdamW steps on one repeated batch lower the SEDD loss (the whole train path: t, q_xt, σ
    /// conditioning, score entropy, backward).
    func testTrainingStepsLowerTheLoss() {
        let V = 9, L = 8, B = 4
        let model = TinyRun.seddModel(V: V, L: L, maxBatch: B, seed: 3)
        let runner = SEDDBatchLoss(model: model, length: L, maskID: Int32(V - 1), maxBatch: B, needsGradients: true)
        let x0: [Int32] = (0..<(B * L)).map { (i: Int) -> Int32 in Int32((i % L) % 4) }   // every row 0 1 2 3 0 1 2 3
        let adam = AdamW(count: model.parameterCount)
        func evalLoss() -> Double {
            var rng = Xoshiro256(seed: 99)
            var total = 0.0
            for _ in 0..<8 {
                total += x0.withUnsafeBufferPointer { runner.run(x0: $0, batch: B, training: false, backward: false, dropoutSeed: 0, rng: &rng) }.tokenNLL
            }
            return total / 8
        }
        let before = evalLoss()
        var rng = Xoshiro256(seed: 1)
        for _ in 0..<40 {
            model.zeroGradients()
            _ = x0.withUnsafeBufferPointer { runner.run(x0: $0, batch: B, training: true, backward: true, dropoutSeed: 0, rng: &rng) }
            adam.update(parameters: model.parameters, gradients: UnsafeBufferPointer(model.gradients), lr: 1e-2)
        }
        let after = evalLoss()
        if ProcessInfo.processInfo.environment["SEDD_VERBOSE"] != nil { print("SEDD-TRAIN", before, after) }
        XCTAssertLessThan(after, 0.7 * before, "SEDD loss \(before) → \(after)")
    }
}

extension SEDDTests {
    /// draft → samples stream → reader: records in id order with tokens, confidence, unmask steps, NFE, stage.
    func testDraftWritesASamplesStream() throws {
        let V = 11, L = 8
        let model = tinySEDDModel(V: V, L: L, maxBatch: 2)
        let sampler = try SEDDSampler(model: model, options: SEDDSamplerOptions(steps: 4, length: L, maskID: Int32(V - 1), prompt: [0]))
        let sink = MemorySink()
        let header = StreamHeader(kind: .samples, vocabSize: V, tokenizerFingerprint: 0,
                                  special: SpecialTokens(bos: 0, eos: 0, mask: Int32(V - 1), pad: -1), fields: .all, attributes: ["tool": "draft"])
        let writer = try TokenStreamWriter(sink: sink, header: header)
        var direct: [TokenRecord] = []
        try sampler.draft(count: 5, batch: 2, seed: 8) { direct.append($0); try writer.write($0) }
        try writer.finish()
        let reader = try TokenStreamReader(source: MemorySource(sink.bytes))
        var back: [TokenRecord] = []
        while let r = try reader.next() { back.append(r) }
        XCTAssertEqual(back, direct)
        XCTAssertEqual(back.map { $0.id }, [0, 1, 2, 3, 4])
        for r in back {
            XCTAssertEqual(r.nfe, 4); XCTAssertEqual(r.promptLength, 1); XCTAssertEqual(r.tokens.count, L)
            XCTAssertFalse(r.tokens.contains(Int32(V - 1)))
        }
        // Same (seed, count, batch) → same stream.
        var again: [TokenRecord] = []
        sampler.draft(count: 5, batch: 2, seed: 8) { again.append($0) }
        XCTAssertEqual(again, direct)
    }
}

/// `draft` on a SEDD checkpoint goes through the analytic sampler: full length, no MASK left,
/// NFE = T, prompt kept, deterministic by seed, and the usage limits of full-sequence sampling.
final class SEDDDraftTests: XCTestCase {
    func seddCheckpoint() throws -> SamplingCheckpoint {
        var c = samplingConfig()
        c.timeConditioning = true
        let m = makeSamplingModel(c, seed: 5)
        return try SamplingCheckpoint.open(path: try saveCheckpoint(m, blockSize: 8, algo: "sedd"))
    }

    func testDraftUsesAnalyticSampler() throws {
        let ck = try seddCheckpoint()
        XCTAssertEqual(ck.algorithm, "sedd")
        var o = DraftOptions()
        o.samples = 3; o.length = 8; o.steps = 6; o.batch = 2; o.seed = 11; o.entropyStop = false
        let a = try draftRecords(ck, o, prompts: [[21, 3]])
        XCTAssertEqual(a.count, 3)
        for r in a {
            XCTAssertEqual(r.tokens.count, 8)
            XCTAssertFalse(r.tokens.contains(22), "MASK left in \(r.tokens)")
            XCTAssertEqual(Array(r.tokens.prefix(2)), [21, 3])
            XCTAssertEqual(r.promptLength, 2)
            XCTAssertEqual(r.nfe, 6)
            XCTAssertTrue(r.stages.first?.hasPrefix("draft sedd") ?? false)
        }
        XCTAssertEqual(a, try draftRecords(ck, o, prompts: [[21, 3]]))
        o.seed = 12
        XCTAssertNotEqual(a.map(\.tokens), try draftRecords(ck, o, prompts: [[21, 3]]).map(\.tokens))
    }

    /// Shards partition the ids and give the same records as one run; --predictor euler reaches the Euler
    /// sampler; --predictor on a non-SEDD checkpoint is a usage error.
    func testDraftShardsAndPredictor() throws {
        let ck = try seddCheckpoint()
        var o = DraftOptions()
        o.samples = 5; o.length = 8; o.steps = 4; o.batch = 1; o.seed = 3; o.entropyStop = false
        let all = try draftRecords(ck, o)
        var parts: [TokenRecord] = []
        for i in 0..<2 { o.shard = (i, 2); parts += try draftRecords(ck, o) }
        XCTAssertEqual(parts.sorted { $0.id < $1.id }, all)
        o.shard = (0, 1); o.seddPredictor = .euler
        let e = try draftRecords(ck, o)
        XCTAssertEqual(e.count, 5)
        XCTAssertTrue(e.allSatisfy { $0.stages.first?.hasPrefix("draft sedd euler T=4") ?? false }, "\(e.map(\.stages))")
        XCTAssertTrue(e.allSatisfy { !$0.tokens.contains(22) })
        let bd3 = try SamplingCheckpoint.open(path: try saveCheckpoint(makeSamplingModel(samplingConfig(), seed: 5), blockSize: 4))
        XCTAssertThrowsError(try draftRecords(bd3, o)) { XCTAssertTrue($0 is UsageError, "\($0)") }
    }

    func testDraftLimits() throws {
        let ck = try seddCheckpoint()
        var o = DraftOptions()
        o.samples = 1; o.length = 16; o.steps = 4
        XCTAssertThrowsError(try draftRecords(ck, o)) { XCTAssertTrue($0 is UsageError) }
        o.length = 8; o.variableLength = true
        XCTAssertThrowsError(try draftRecords(ck, o)) { XCTAssertTrue($0 is UsageError) }
    }
}
