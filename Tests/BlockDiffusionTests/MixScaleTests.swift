import XCTest
import Foundation
@testable import BlockDiffusion

/// Mixed-scale training (`train --block-mix`, seed 003 §3.3) and `score ppl --block-size`.
final class MixScaleTests: TinyRunTestCase {
    let L = TinyRun.L   // 16

    func mixRequest(_ spec: String, steps: Int = 6) -> TrainRequest {
        var r = TinyRun.request(dir: dir, data: trainPath, valid: validPath, steps: steps)
        r.blockMix = spec
        return r
    }

    // MARK: the distribution

    func testParseAndCanonicalSpelling() throws {
        let a = try BlockMix.parse("bimodal:4", length: 16)
        XCTAssertEqual(a.sizes, [4, 16]); XCTAssertEqual(a.probabilities, [0.9, 0.1])
        let b = try BlockMix.parse("bimodal:4,8,0.25", length: 16)
        XCTAssertEqual(b.sizes, [4, 8]); XCTAssertEqual(b.lambda, 0.25); XCTAssertEqual(b.draftSize, 4)
        XCTAssertEqual(try BlockMix.parse(b.description, length: 16), b)
        let u = try BlockMix.parse("uniform:4,1,16", length: 16)
        XCTAssertEqual(u.sizes, [4, 1, 16]); XCTAssertEqual(u.probabilities.reduce(0, +), 1, accuracy: 1e-15)
        XCTAssertEqual(try BlockMix.parse(u.description, length: 16), u)
        for bad in ["bimodal:5", "bimodal:4,6", "bimodal:4,16,1.5", "bimodal:4,16,-0.1", "bimodal:4,16,x", "bimodal:4,4",
                    "bimodal:", "bimodal:0", "bimodal:4,16,0.1,3", "uniform:4", "uniform:4,4", "uniform:4,3", "gauss:4,16", "4,16"] {
            XCTAssertThrowsError(try BlockMix.parse(bad, length: 16), bad) { XCTAssertTrue($0 is UsageError, "\(bad): \($0)") }
        }
    }

    func testDrawnProportionsFollowTheMix() {
        var rng = Xoshiro256(seed: 5)
        let n = 20_000
        // Bimodal λ = 0.25: #global ~ Binomial(n, 0.25); accept within 4 standard deviations.
        let b = BlockMix(bimodal: 4, global: 16, lambda: 0.25)
        let draws = b.draw(count: n, &rng)
        XCTAssertTrue(draws.allSatisfy { $0 == 4 || $0 == 16 })
        let g = Double(draws.filter { $0 == 16 }.count)
        XCTAssertEqual(g, 0.25 * Double(n), accuracy: 4 * (Double(n) * 0.25 * 0.75).squareRoot())
        // Uniform over 4 sizes: each ~ Binomial(n, 1/4).
        let u = BlockMix(uniform: [1, 2, 4, 16])
        let ud = u.draw(count: n, &rng)
        for s in u.sizes {
            XCTAssertEqual(Double(ud.filter { $0 == s }.count), Double(n) / 4, accuracy: 4 * (Double(n) * 0.1875).squareRoot(), "\(s)")
        }
        // The ends of λ.
        XCTAssertTrue(BlockMix(bimodal: 4, global: 16, lambda: 0).draw(count: 1000, &rng).allSatisfy { $0 == 4 })
        XCTAssertTrue(BlockMix(bimodal: 4, global: 16, lambda: 1).draw(count: 1000, &rng).allSatisfy { $0 == 16 })
    }

    // MARK: loss weighting

    /// With every draw equal, the grouped micro-batch is exactly the single-size one (loss and gradients
    /// bit for bit); with two groups it is the token-weighted mean of the groups run separately.
    func testGroupedLossWeighting() throws {
        var r = TinyRun.request(dir: dir, data: trainPath, valid: nil, steps: 2)
        r.sets.append("dropout=0.1")
        let (t, _) = try TrainSetup.make(r)
        for _ in 0..<2 { _ = try t.trainStep() }      // away from the zero output layer
        let B = 4
        let x0 = Array(t.train.tokens[0..<(B * L)])
        let iv: [Int: ClipInterval] = [4: ClipInterval(0.2, 0.8), 16: .base]
        let start = Xoshiro256(seed: 99)

        // (a) all draws 4: runMixed ≡ split + run.
        t.model.zeroGradients()
        var rng = start
        let mixed = x0.withUnsafeBufferPointer {
            t.loss.runMixed(x0: $0, batch: B, sizes: [4, 4, 4, 4], order: [4, 16], intervals: iv, weighted: true, gradScale: 0.5, rng: &rng)
        }
        let gMixed = Array(t.model.gradients), rngMixed = rng
        t.model.zeroGradients()
        rng = start
        let seed = rng.split()
        let single = x0.withUnsafeBufferPointer {
            t.loss.run(x0: $0, batch: B, interval: iv[4]!, training: true, weighted: true, backward: true, gradScale: 0.5,
                       dropoutSeed: seed, rng: &rng)
        }
        XCTAssertEqual(mixed.tokenNLL, single.tokenNLL)
        XCTAssertEqual(mixed.tokenCount, B * L)
        XCTAssertTrue(gMixed == Array(t.model.gradients), "gradients differ")
        XCTAssertEqual(rngMixed, rng)
        XCTAssertEqual(t.loss.objective.blockSize, 4)

        // (b) sizes [16, 4, 16, 4]: groups in the order 4 then 16, each with its own draws.
        let sizes = [16, 4, 16, 4]
        t.model.zeroGradients()
        rng = start
        let two = x0.withUnsafeBufferPointer {
            t.loss.runMixed(x0: $0, batch: B, sizes: sizes, order: [4, 16], intervals: iv, weighted: true, gradScale: 1, rng: &rng)
        }
        XCTAssertEqual(t.loss.objective.blockSize, 4, "block size restored")
        let gTwo = Array(t.model.gradients)
        rng = start
        var parts: [(LossSummary, [Float])] = []
        for size in [4, 16] {
            let rows = (0..<B).filter { sizes[$0] == size }.flatMap { x0[($0 * L)..<(($0 + 1) * L)] }
            t.loss.setBlockSize(size)
            t.model.zeroGradients()
            let s = rng.split()
            let sum = rows.withUnsafeBufferPointer {
                t.loss.run(x0: $0, batch: 2, interval: iv[size]!, training: true, weighted: true, backward: true, gradScale: 1,
                           dropoutSeed: s, rng: &rng)
            }
            parts.append((sum, Array(t.model.gradients)))
        }
        t.loss.setBlockSize(4)
        // Each group has half of the tokens: total = ½ NELBO_4 + ½ NELBO_16, gradient likewise.
        XCTAssertEqual(two.tokenNLL, 0.5 * parts[0].0.tokenNLL + 0.5 * parts[1].0.tokenNLL, accuracy: 1e-9 * abs(two.tokenNLL))
        XCTAssertNotEqual(parts[0].0.tokenNLL, parts[1].0.tokenNLL)
        var maxErr: Float = 0, maxG: Float = 0
        for i in gTwo.indices {
            maxErr = max(maxErr, abs(gTwo[i] - 0.5 * (parts[0].1[i] + parts[1].1[i])))
            maxG = max(maxG, abs(gTwo[i]))
        }
        XCTAssertGreaterThan(maxG, 0)
        XCTAssertLessThan(maxErr, 1e-6 * max(1, maxG))
    }

    /// With L' = L the block-diffusion layout's noisy half sees only itself (M_OBC is empty): the same
    /// logits as MDLM's full attention over x_t.
    func testGlobalBlockIsMDLMAttention() throws {
        var r = TinyRun.request(dir: dir, data: trainPath, valid: nil, steps: 2)
        r.blockSize = 16
        let (t, _) = try TrainSetup.make(r)
        for _ in 0..<2 { _ = try t.trainStep() }
        let x0 = Array(t.train.tokens[0..<(2 * L)])
        var xt = x0
        for i in stride(from: 1, to: xt.count, by: 3) { xt[i] = 23 }
        var pair: [Int32] = []
        for k in 0..<2 {
            let lo = k * L, hi = (k + 1) * L
            pair.append(contentsOf: xt[lo..<hi])
            pair.append(contentsOf: x0[lo..<hi])
        }
        let bd = pair.withUnsafeBufferPointer {
            Array(t.model.forward(tokens: $0, batch: 2, layout: .blockDiffusion(blockSize: L), sigma: nil, training: false, dropoutSeed: 0))
        }
        let full = xt.withUnsafeBufferPointer {
            Array(t.model.forward(tokens: $0, batch: 2, layout: .full, sigma: nil, training: false, dropoutSeed: 0))
        }
        XCTAssertEqual(bd.count, full.count)
        var maxErr: Float = 0
        for i in bd.indices { maxErr = max(maxErr, abs(bd[i] - full[i])) }
        XCTAssertLessThan(maxErr, 1e-4)
    }

    // MARK: trainer

    func testResumeIsBitExactWithAMix() throws {
        var r = mixRequest("bimodal:4,16,0.5", steps: 6)
        r.sets.append("dropout=0.1"); r.clipSearch = true
        r.runDir = dir + "/a"
        let (a, _) = try TrainSetup.make(r)
        var la: [Double] = []
        for i in 0..<6 {
            if i == 3 { _ = a.validate() }
            la.append(try a.trainStep().loss)
        }

        r.runDir = dir + "/b"
        let (b, _) = try TrainSetup.make(r)
        var lb: [Double] = []
        for _ in 0..<3 { lb.append(try b.trainStep().loss) }
        _ = b.validate()
        try b.saveCheckpoint(runDir: r.runDir, best: false, valNLL: nil)
        let (c, how) = try TrainSetup.make(r)
        XCTAssertTrue(how.hasPrefix("resuming"), how)
        XCTAssertEqual(c.intervals, b.intervals)
        XCTAssertEqual(Set(c.intervals.keys), [4, 16])
        for _ in 0..<3 { lb.append(try c.trainStep().loss) }
        XCTAssertEqual(la, lb)
        XCTAssertTrue(Array(a.model.parameters) == Array(c.model.parameters))
        XCTAssertTrue(Array(a.ema.shadow) == Array(c.ema.shadow))
        // Another mix on the same run directory is refused.
        var other = r; other.blockMix = "bimodal:4,16,0.25"
        XCTAssertThrowsError(try TrainSetup.make(other)) { XCTAssertTrue("\($0)".contains("block mix"), "\($0)") }
        // A different mix gives a different run (the check can fail).
        var q = r; q.runDir = dir + "/d"; q.blockMix = "bimodal:4,8,0.5"
        let (d, _) = try TrainSetup.make(q)
        var ld: [Double] = []
        for _ in 0..<3 { ld.append(try d.trainStep().loss) }
        XCTAssertNotEqual(ld, Array(la.prefix(3)))
    }

    func testValidationPerBlockSizeCheckpointAndScore() throws {
        var r = mixRequest("bimodal:4,16,0.25", steps: 4)
        r.clipSearch = true; r.valEvery = 2
        let (t, _) = try TrainSetup.make(r)
        var lines: [String] = []
        let metricsPath = dir + "/m.jsonl"
        _ = try t.run(runDir: r.runDir, metrics: try MetricsLog(path: metricsPath), logEvery: 1) { lines.append($0) }
        let v = try XCTUnwrap(t.validate())
        XCTAssertEqual(v.perBlock.map(\.blockSize), [4, 16])
        XCTAssertEqual(v.nll, 0.75 * v.perBlock[0].nll + 0.25 * v.perBlock[1].nll, accuracy: 1e-12)
        XCTAssertNotEqual(v.perBlock[0].nll, v.perBlock[1].nll)
        // Each size searched its own grid (L' = L has one t per sequence).
        XCTAssertEqual(v.perBlock[0].variances.count, ClipSearch.grid(blockSize: 4).count)
        XCTAssertNotNil(v.perBlock[1].chosen)
        XCTAssertEqual(t.intervals[16], v.perBlock[1].chosen)
        XCTAssertTrue(lines.contains { $0.contains("L'=16") }, "\(lines)")
        let metrics = try String(contentsOfFile: metricsPath, encoding: .utf8)
        XCTAssertTrue(metrics.contains("val_nll_by_block") && metrics.contains("clip_by_block"))

        // Metadata: the mix, per-size intervals, draft block size.
        let f = try SafetensorsFile(path: r.runDir + "/best.safetensors")
        let info = try CheckpointInfo.read(f)
        XCTAssertEqual(info.blockSize, 4)
        XCTAssertEqual(info.blockMix, try BlockMix.parse("bimodal:4,16,0.25", length: 16))
        XCTAssertEqual(Set(info.intervals.keys), [4, 16])
        XCTAssertNotNil(f.metadata["val_nll_by_block"])
        XCTAssertEqual(info.interval(forBlockSize: 4), info.interval)

        // score ppl at the draft size (default) and at the global size.
        var o = PerplexityOptions(); o.batch = 4
        let (m4, i4, d4) = try Perplexity.load(checkpoint: r.runDir + "/best.safetensors", data: validPath, batch: 4)
        let s4 = Perplexity.evaluate(model: m4, info: i4, data: d4, options: o)
        XCTAssertEqual(s4.blockSize, 4)
        let (m16, i16, d16) = try Perplexity.load(checkpoint: r.runDir + "/best.safetensors", data: validPath, batch: 4, blockSize: 16)
        o.blockSize = 16
        let s16 = Perplexity.evaluate(model: m16, info: i16, data: d16, options: o)
        XCTAssertEqual(s16.blockSize, 16)
        XCTAssertNotEqual(s4.nll, s16.nll)
        XCTAssertTrue(s16.json.contains("\"block_size\":16"))
        XCTAssertThrowsError(try Perplexity.load(checkpoint: r.runDir + "/best.safetensors", data: validPath, batch: 4, blockSize: 5)) {
            XCTAssertTrue($0 is UsageError)
        }
        // --block-mix is bd3-only; --block-size in score likewise.
        var m = r; m.algorithm = .mdlm; m.clipSearch = false; m.runDir = dir + "/mdlm"
        XCTAssertThrowsError(try TrainSetup.make(m)) { XCTAssertTrue($0 is UsageError) }
        m.blockMix = nil
        let (mt, _) = try TrainSetup.make(m)
        _ = try mt.run(runDir: m.runDir, metrics: nil) { _ in }
        XCTAssertThrowsError(try Perplexity.load(checkpoint: m.runDir + "/last.safetensors", data: validPath, batch: 4, blockSize: 4)) {
            XCTAssertTrue($0 is UsageError)
        }
    }

    // MARK: command line

    func testCommandLineMixValidationTrainAndScore() throws {
        let train = try cliBinary("train"), score = try cliBinary("score")
        let common = ["--data", trainPath, "--valid", validPath, "--set", "hidden_size=32", "--set", "n_blocks=1",
                      "--set", "n_heads=2", "--set", "cond_dim=16", "--batch", "4", "--warmup", "0", "--lr", "1e-3"]
        for bad in [["--block-mix", "bimodal:4,5"], ["--block-mix", "bimodal:4,16,1.5"], ["--block-mix", "uniform:4"],
                    ["--block-mix", "bimodal:4", "--block-size", "4"], ["--block-mix", "bimodal:4", "--algo", "mdlm"]] {
            let r = try runCLI(train, common + bad + ["--steps", "1", "-o", dir + "/bad"])
            XCTAssertEqual(r.code, 64, "\(bad): \(r.err)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad/last.safetensors"))
        }
        let run = dir + "/run"
        var r = try runCLI(train, common + ["--block-mix", "uniform:4,16", "--steps", "2", "--log-every", "1", "-o", run])
        XCTAssertEqual(r.code, 0, r.err)
        XCTAssertTrue(r.err.contains("L'=4") && r.err.contains("L'=16"), r.err)
        r = try runCLI(score, ["ppl", "-m", run + "/best.safetensors", "-i", validPath, "--batch", "2", "--block-size", "16"])
        XCTAssertEqual(r.code, 0, r.err)
        let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(json["block_size"] as? Int, 16)
        r = try runCLI(score, ["ppl", "-m", run + "/best.safetensors", "-i", validPath, "--block-size", "3"])
        XCTAssertEqual(r.code, 64, r.err)
        // --algo sedd end to end: train (+ resume with more steps), then score ppl on the SEDD checkpoint.
        let sedd = dir + "/sedd"
        r = try runCLI(train, common + ["--algo", "sedd", "--steps", "2", "-o", sedd])
        XCTAssertEqual(r.code, 0, r.err)
        r = try runCLI(train, common + ["--algo", "sedd", "--steps", "3", "-o", sedd])
        XCTAssertEqual(r.code, 0, r.err); XCTAssertTrue(r.err.contains("resuming"), r.err)
        r = try runCLI(score, ["ppl", "-m", sedd + "/best.safetensors", "-i", validPath, "--batch", "2"])
        XCTAssertEqual(r.code, 0, r.err)
        let sj = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(sj["tokens"] as? Int, 4 * 15)
        XCTAssertGreaterThan(sj["ppl"] as! Double, 1)
        r = try runCLI(score, ["ppl", "-m", sedd + "/best.safetensors", "-i", validPath, "--block-size", "4"])
        XCTAssertEqual(r.code, 64, r.err)
        r = try runCLI(train, common + ["--algo", "sedd", "--reweight", "edm", "--steps", "1", "-o", dir + "/bad-sedd"])
        XCTAssertEqual(r.code, 64, r.err)
    }
}

/// `train --algo sedd`: the time-conditioned SEDD baseline through the trainer, validation and `score ppl`.
final class SEDDTrainingTests: TinyRunTestCase {

    func testTinySEDDModelLearns() throws {
        var r = TinyRun.request(dir: dir, data: trainPath, valid: validPath, algo: .sedd, steps: 60)
        r.runDir = dir + "/learn"
        let (t, _) = try TrainSetup.make(r)
        XCTAssertTrue(t.model.config.timeConditioning)
        XCTAssertNotNil(t.sedd)
        var losses: [Double] = []
        for _ in 0..<60 { losses.append(try t.trainStep().loss) }
        let first = losses.prefix(10).reduce(0, +) / 10, last = losses.suffix(10).reduce(0, +) / 10
        XCTAssertLessThan(last, 0.8 * first, "sedd: loss \(first) → \(last)")
        // Validation (EMA weights) and the checkpoint: a SEDD checkpoint that score ppl evaluates.
        let v = try XCTUnwrap(t.validate())
        XCTAssertTrue(v.nll.isFinite && v.nll > 0, "\(v.nll)")
        XCTAssertEqual(v.tokens, 4 * 15)
        try t.saveCheckpoint(runDir: r.runDir, best: true, valNLL: v.nll)
        let info = try CheckpointInfo.read(try SafetensorsFile(path: r.runDir + "/best.safetensors"))
        XCTAssertEqual(info.algorithm, .sedd); XCTAssertTrue(info.config.timeConditioning); XCTAssertEqual(info.blockSize, TinyRun.L)
        XCTAssertEqual(info.metadata["sedd_noise"], "bd3lms")
        let (m, i, d) = try Perplexity.load(checkpoint: r.runDir + "/best.safetensors", data: validPath, batch: 4)
        var o = PerplexityOptions(); o.batch = 4; o.samples = 16
        let s = Perplexity.evaluate(model: m, info: i, data: d, options: o)
        XCTAssertEqual(s.tokens, 4 * 15); XCTAssertEqual(s.blockSize, TinyRun.L); XCTAssertFalse(s.exact)
        XCTAssertTrue(s.json.contains("\"block_size\":16"))
        // The untrained model (same seed, step 0) scores worse with the same draws (the check can fail).
        var f = r; f.runDir = dir + "/fresh"; f.steps = 0
        let (ft, _) = try TrainSetup.make(f)
        _ = try ft.run(runDir: f.runDir, metrics: nil) { _ in }
        let (fm, fi, fd) = try Perplexity.load(checkpoint: f.runDir + "/last.safetensors", data: validPath, batch: 4)
        let fs = Perplexity.evaluate(model: fm, info: fi, data: fd, options: o)
        XCTAssertLessThan(s.nll, 0.8 * fs.nll, "trained \(s.nll) vs fresh \(fs.nll)")
    }

    func testSEDDResumeIsBitExact() throws {
        var r = TinyRun.request(dir: dir, data: trainPath, valid: nil, algo: .sedd, steps: 6)
        r.sets.append("dropout=0.1")
        let (a, c, la, lb, how) = try trainStraightAndResumed(&r, steps: 3)
        XCTAssertTrue(how.hasPrefix("resuming"), how)
        XCTAssertEqual(la, lb)
        XCTAssertTrue(Array(a.model.parameters) == Array(c.model.parameters))
        // bd3 on a SEDD run directory, and SEDD-only options elsewhere, are usage errors.
        var q = r; q.algorithm = .bd3
        XCTAssertThrowsError(try TrainSetup.make(q)) { XCTAssertTrue($0 is UsageError, "\($0)") }
        for bad in [{ (x: inout TrainRequest) in x.reweight = "edm" }, { $0.blockMix = "bimodal:4" }, { $0.schedule = "cosine" },
                    { $0.clipSearch = true; $0.valid = self.validPath }] {
            var x = r; x.runDir = dir + "/bad"; bad(&x)
            XCTAssertThrowsError(try TrainSetup.make(x)) { XCTAssertTrue($0 is UsageError, "\($0)") }
        }
        var y = r; y.algorithm = .bd3; y.runDir = dir + "/bad2"; y.sets.append("sedd_noise=loglinear")
        XCTAssertThrowsError(try TrainSetup.make(y)) { XCTAssertTrue($0 is UsageError, "\($0)") }
    }
}
