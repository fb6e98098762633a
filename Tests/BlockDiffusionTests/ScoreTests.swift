import XCTest
import Foundation
@testable import BlockDiffusion

final class ScoreTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws { dir = TinyRun.tempDir("score") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// A freshly initialised model has a zero output layer, so every masked token gets
    /// −log p = ln(V−1) (mask column excluded): exact for AR and L' = 1, and in expectation for the NELBO.
    func testZeroOutputModelGivesLogVMinusOne() throws {
        let data = dir + "/test.tok"
        try TinyRun.writeStream(data, rows: TinyRun.rows(16))
        let expected = log(Double(TinyRun.V - 1))
        for (algo, bs) in [(Algorithm.ar, 1), (.bd3, 1), (.bd3, 4), (.mdlm, 16)] {
            var r = TinyRun.request(dir: dir, data: data, valid: nil, algo: algo, steps: 0)
            r.blockSize = bs; r.runDir = dir + "/\(algo.rawValue)\(bs)"
            let (t, _) = try TrainSetup.make(r)
            _ = try t.run(runDir: r.runDir, metrics: nil) { _ in }      // 0 steps: writes the initial weights
            let (m, info, d) = try Perplexity.load(checkpoint: r.runDir + "/last.safetensors", data: data, batch: 4)
            var o = PerplexityOptions(); o.batch = 4; o.samples = 8; o.clips = [.base, ClipInterval(0.45, 0.95)]
            let res = Perplexity.evaluate(model: m, info: info, data: d, options: o)
            if algo == .ar || bs == 1 {
                XCTAssertTrue(res.exact)
                XCTAssertEqual(res.nll, expected, accuracy: 1e-5, "\(algo) \(bs)")
                XCTAssertEqual(res.tokens, 16 * 15)   // AR: L−1 targets; L'=1: position 0 (BOS) excluded
            } else {
                XCTAssertFalse(res.exact)
                XCTAssertEqual(res.nll, expected, accuracy: 0.1 * expected, "\(algo) \(bs)")
                XCTAssertEqual(res.tokens, 16 * 15)
            }
            XCTAssertEqual(res.bpd, res.nll / M_LN2, accuracy: 1e-12)
            // The reported interval first (from the main draws), then the other requested ones; none for AR.
            XCTAssertEqual(res.varNELBO.map(\.0), algo == .ar ? [] : [res.interval!] + [ClipInterval.base, ClipInterval(0.45, 0.95)].filter { $0 != res.interval })
            if algo == .bd3 && bs == 4 {
                // Clipping t away from 0 removes the large 1/t weights: lower variance than U[1e-3, 1].
                XCTAssertLessThan(res.varNELBO[1].1, res.varNELBO[0].1)
            }
            let json = try JSONSerialization.jsonObject(with: Data(res.json.utf8)) as! [String: Any]
            for k in ["ppl", "nll", "bpd", "tokens", "var_nelbo"] { XCTAssertNotNil(json[k], k) }
        }
    }

    // MARK: command-line tools

    /// A Gaussian-schedule checkpoint keeps its parameters (noise_params) and is scored under loglinear: the same
    /// NELBO draws as a loglinear checkpoint of the same weights, with the training schedule's own NELBO next to it.
    /// On the zero-output model every masked token costs c = ln(V−1), so the NELBO at t ≥ 1e-3 is c·(p(1) − p(1e-3)):
    /// ≈ c under loglinear, ≈ 0.71·c under Gaussian μ = 0.6 (p(1e-3) ≈ 0.29) — the cut-off bias the loglinear
    /// evaluation removes.
    func testNonLoglinearScheduleIsScoredUnderLoglinear() throws {
        let data = dir + "/test.tok"
        try TinyRun.writeStream(data, rows: TinyRun.rows(4))
        var r = TinyRun.request(dir: dir, data: data, valid: nil, steps: 0)
        r.schedule = "gaussian"; r.sets.append("mu=0.6"); r.runDir = dir + "/gauss"
        let (t, _) = try TrainSetup.make(r)
        _ = try t.run(runDir: r.runDir, metrics: nil) { _ in }
        let (m, info, d) = try Perplexity.load(checkpoint: r.runDir + "/last.safetensors", data: data, batch: 4)
        XCTAssertEqual(info.noiseSchedule, .gaussian(.init(mu: 0.6)))
        var o = PerplexityOptions(); o.batch = 4; o.samples = 16; o.clips = [ClipInterval(0.3, 0.8)]
        let g = Perplexity.evaluate(model: m, info: info, data: d, options: o)
        var plain = info
        plain.schedule = "loglinear"; plain.metadata["noise_params"] = nil
        let l = Perplexity.evaluate(model: m, info: plain, data: d, options: o)
        XCTAssertEqual(g.nll, l.nll, "one batch: the same loglinear draws")
        XCTAssertNil(l.schedule)
        let c = log(Double(TinyRun.V - 1))
        XCTAssertEqual(g.nll, c, accuracy: 0.1 * c)
        let own = try XCTUnwrap(g.schedule)
        XCTAssertEqual(own.name, "gaussian"); XCTAssertTrue(own.parameters.contains("mu=0.6"), own.parameters)
        // Its expectation is c·(p(1) − p(1e-3)) ≈ 0.71·c: the cut-off bias. A finite sample scatters widely around
        // it (near u = 1 the truncated Gaussian's weight dp/du spikes, φ(z) at z ≈ 4: a sliver of u holding ~10% of
        // the integral), so the draw is checked loosely and the bias exactly through the schedule.
        let gauss = NoiseSchedule.gaussian(.init(mu: 0.6))
        XCTAssertEqual(gauss.p(1) - gauss.p(1e-3), 0.71, accuracy: 0.02)
        XCTAssertTrue(own.nll.isFinite); XCTAssertGreaterThan(own.nll, 0.3 * c); XCTAssertNotEqual(own.nll, g.nll)
        XCTAssertNotEqual(g.varNELBO.map(\.1), l.varNELBO.map(\.1), "Var. NELBO under the training schedule")
        let json = try JSONSerialization.jsonObject(with: Data(g.json.utf8)) as! [String: Any]
        XCTAssertEqual(json["schedule"] as? String, "gaussian")
        XCTAssertEqual(json["schedule_ppl"] as? Double ?? 0, exp(own.nll), accuracy: 1e-9)
    }

    func testScheduleParametersRoundTrip() {
        var b = NoiseSchedule.BimodalParameters(); b.mu1 = 0.1; b.w1 = 0.6; b.tau = 1.7
        for s in [NoiseSchedule.gaussian(.init(mu: 0.7, sigma: 0.05)), .bimodal(b), .loglinear, .squareRoot] {
            XCTAssertEqual(NoiseSchedule.named(s.name, parameters: s.parameterString), s, s.name)
        }
        XCTAssertNil(NoiseSchedule.named("gaussian", parameters: "nu=1"))
        XCTAssertNil(NoiseSchedule.named("loglinear", parameters: "mu=0.5"))
        XCTAssertNil(NoiseSchedule.named("gaussian", parameters: "mu=x"))
    }

    func testCommandLineTrainAndScore() throws {
        let train = try cliBinary("train"), score = try cliBinary("score")
        let data = dir + "/train.tok", valid = dir + "/valid.tok"
        try TinyRun.writeStream(data, rows: TinyRun.rows(8))
        try TinyRun.writeStream(valid, rows: TinyRun.rows(4))
        let common = ["--data", data, "--valid", valid, "--config", "cpu", "--set", "hidden_size=32", "--set", "n_blocks=1",
                      "--set", "n_heads=2", "--set", "cond_dim=16", "--batch", "4", "--warmup", "0", "--lr", "1e-3"]
        // Usage errors → 64.
        var r = try runCLI(train, common + ["--block-size", "5", "-o", dir + "/bad"])
        XCTAssertEqual(r.code, 64, r.err); XCTAssertTrue(r.err.contains("does not divide"), r.err)
        r = try runCLI(train, common + ["--algo", "gpt", "-o", dir + "/bad"])
        XCTAssertEqual(r.code, 64, r.err)
        // Runtime error → 1 (missing data file).
        r = try runCLI(train, ["--data", dir + "/missing.tok", "-o", dir + "/bad"])
        XCTAssertEqual(r.code, 1, r.err)
        // A diverging run stops with exit 1 naming the step.
        r = try runCLI(train, common + ["--steps", "5", "--lr", "1e30", "-o", dir + "/nan"])
        XCTAssertEqual(r.code, 1, r.err); XCTAssertTrue(r.err.contains("at step"), r.err)
        // A real run with metrics and the clip search.
        let run = dir + "/run"
        r = try runCLI(train, common + ["--steps", "3", "--val-every", "2", "--clip-search", "--metrics", dir + "/m.jsonl",
                                        "--log-every", "1", "-o", run])
        XCTAssertEqual(r.code, 0, r.err)
        XCTAssertTrue(r.err.contains("step 3/3"), r.err)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/best.safetensors"))
        // Rerun resumes (and has nothing left to do).
        r = try runCLI(train, common + ["--steps", "3", "-o", run])
        XCTAssertEqual(r.code, 0, r.err); XCTAssertTrue(r.err.contains("resuming"), r.err)
        // score ppl: JSON on stdout, table on stderr.
        r = try runCLI(score, ["ppl", "-m", run + "/best.safetensors", "-i", valid, "--batch", "2", "--clip", "0.45,0.95"])
        XCTAssertEqual(r.code, 0, r.err)
        let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(json["tokens"] as? Int, 4 * 15)
        XCTAssertGreaterThan(json["ppl"] as! Double, 1)
        XCTAssertTrue(r.err.contains("Var. NELBO"), r.err)
        // score usage / runtime errors.
        r = try runCLI(score, ["ppl", "-m", run + "/best.safetensors", "-i", valid, "--clip", "0.9,0.1"])
        XCTAssertEqual(r.code, 64, r.err)
        r = try runCLI(score, ["ppl", "-m", dir + "/nope.safetensors", "-i", valid])
        XCTAssertEqual(r.code, 1, r.err)
    }

    func losses(_ path: String) throws -> [Double] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").compactMap {
            (try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["loss"] as? Double }
    }

    /// CLI-level exact resume: 4 steps in one go vs 2 steps, then the same command with --steps 4.
    func testCommandLineResumeMatchesUninterruptedRun() throws {
        let train = try cliBinary("train")
        let data = dir + "/train.tok"
        try TinyRun.writeStream(data, rows: TinyRun.rows(8))
        let common = ["--data", data, "--set", "hidden_size=32", "--set", "n_blocks=1", "--set", "n_heads=2",
                      "--set", "cond_dim=16", "--batch", "2", "--accumulate", "2", "--warmup", "2", "--lr", "1e-3", "--log-every", "1"]
        var r = try runCLI(train, common + ["--steps", "4", "--metrics", dir + "/a.jsonl", "-o", dir + "/a"])
        XCTAssertEqual(r.code, 0, r.err)
        r = try runCLI(train, common + ["--steps", "2", "--metrics", dir + "/b.jsonl", "-o", dir + "/b"])
        XCTAssertEqual(r.code, 0, r.err)
        r = try runCLI(train, common + ["--steps", "4", "--metrics", dir + "/b.jsonl", "-o", dir + "/b"])
        XCTAssertEqual(r.code, 0, r.err)
        let a = try losses(dir + "/a.jsonl"), b = try losses(dir + "/b.jsonl")
        XCTAssertEqual(a.count, 4)
        XCTAssertEqual(a, b)
        let wa = try SafetensorsFile(path: dir + "/a/last.safetensors"), wb = try SafetensorsFile(path: dir + "/b/last.safetensors")
        XCTAssertEqual(try wa.floats("backbone.vocab_embed.embedding"), try wb.floats("backbone.vocab_embed.embedding"))
    }

    /// SIGINT: the run writes a checkpoint, exits 130, and the same command resumes from it.
    func testCommandLineInterruptCheckpointsAndResumes() throws {
        let train = try cliBinary("train")
        let data = dir + "/train.tok"
        try TinyRun.writeStream(data, rows: TinyRun.rows(8))
        let args = ["--data", data, "--set", "hidden_size=32", "--set", "n_blocks=1", "--set", "n_heads=2",
                    "--set", "cond_dim=16", "--batch", "2", "--steps", "1000000", "--log-every", "1", "-o", dir + "/run"]
        let p = cliProcess(train, args)
        let e = Pipe()
        p.standardError = e
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        var seen = ""
        while !seen.contains("step 2/") {
            let d = e.fileHandleForReading.availableData
            if d.isEmpty { break }
            seen += String(decoding: d, as: UTF8.self)
        }
        p.interrupt()
        seen += String(decoding: e.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 130, seen)
        XCTAssertTrue(seen.contains("stopped by signal"), seen)
        let meta = try SafetensorsFile(path: dir + "/run/last.optim.safetensors").metadata
        let step = Int(meta["step"] ?? "") ?? 0
        XCTAssertGreaterThanOrEqual(step, 2)
        let r = try runCLI(train, args.map { $0 == "1000000" ? "\(step + 1)" : $0 })
        XCTAssertEqual(r.code, 0, r.err)
        XCTAssertTrue(r.err.contains("resuming \(dir)/run at step \(step)"), r.err)
        XCTAssertTrue(r.err.contains("step \(step + 1)/\(step + 1)"), r.err)
    }
}
