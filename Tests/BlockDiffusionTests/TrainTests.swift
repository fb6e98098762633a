import XCTest
import Foundation
@testable import BlockDiffusion

final class TrainTests: TinyRunTestCase {
    func testTinyModelLearnsRepeatedSequences() throws {
        for algo in [Algorithm.bd3, .ar] {
            var r = TinyRun.request(dir: dir, data: trainPath, valid: nil, algo: algo, steps: 60)
            r.runDir = dir + "/learn-\(algo.rawValue)"
            let (t, _) = try TrainSetup.make(r)
            var losses: [Double] = []
            for _ in 0..<60 { losses.append(try t.trainStep().loss) }
            let first = losses.prefix(10).reduce(0, +) / 10, last = losses.suffix(10).reduce(0, +) / 10
            XCTAssertLessThan(last, 0.7 * first, "\(algo): loss \(first) → \(last)")
        }
    }

    func testResumeIsBitExact() throws {
        var r = TinyRun.request(dir: dir, data: trainPath, valid: validPath, steps: 6)
        r.sets.append("dropout=0.1")
        r.schedule = "bimodal_gaussian"   // exercises the training-progress hook too
        // beforeResume: a kill between the two writes of a later save — last.safetensors is from step 5,
        // last.optim from step 3. The optimizer file alone is the resume state, so the run still continues from step 3.
        let (a, c, la, lb, how) = try trainStraightAndResumed(&r, steps: 3) { b, r in
            for _ in 0..<2 { _ = try b.trainStep() }
            try b.saveCheckpoint(runDir: self.dir + "/b5", best: false, valNLL: nil)
            try FileManager.default.removeItem(atPath: r.runDir + "/last.safetensors")
            try FileManager.default.copyItem(atPath: self.dir + "/b5/last.safetensors", toPath: r.runDir + "/last.safetensors")
        }
        XCTAssertTrue(how.hasPrefix("resuming"), how)
        XCTAssertEqual(la, lb)
        XCTAssertTrue(Array(a.model.parameters) == Array(c.model.parameters))
        XCTAssertTrue(Array(a.ema.shadow) == Array(c.ema.shadow))
        // A run that did not resume would differ (the check can fail).
        let (fresh, _) = try TrainSetup.make({ var q = r; q.runDir = dir + "/c"; return q }())
        XCTAssertNotEqual(try fresh.trainStep().loss, la[3])
    }

    func testRunLoopWritesCheckpointsMetricsAndStopsOnSignal() throws {
        var r = TinyRun.request(dir: dir, data: trainPath, valid: validPath, steps: 4)
        r.valEvery = 2; r.clipSearch = true
        let (t, _) = try TrainSetup.make(r)
        let metricsPath = dir + "/m.jsonl"
        var lines: [String] = []
        let out = try t.run(runDir: r.runDir, metrics: try MetricsLog(path: metricsPath), logEvery: 1) { lines.append($0) }
        XCTAssertEqual(out.step, 4)
        XCTAssertNil(out.stoppedBySignal)
        for f in ["last.safetensors", "best.safetensors", "last.optim.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: r.runDir + "/" + f), f)
        }
        let metrics = try String(contentsOfFile: metricsPath, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(metrics.filter { $0.contains("\"loss\"") }.count, 4)
        XCTAssertTrue(metrics.contains { $0.contains("var_nelbo") && $0.contains("\"clip\"") })
        XCTAssertTrue(lines.contains { $0.hasPrefix("step 1/4") && $0.contains("tok/s") && $0.contains("ETA") })
        // Weights file: reference names, clip buffers, metadata the reference and `score` need.
        let f = try SafetensorsFile(path: r.runDir + "/best.safetensors")
        XCTAssertNotNil(f.entry("backbone.vocab_embed.embedding"))
        XCTAssertNotNil(f.entry("sampling_eps_min")); XCTAssertNotNil(f.entry("sampling_eps_max"))
        XCTAssertNil(f.entry("adam_m"))
        let info = try CheckpointInfo.read(f)
        XCTAssertEqual(info.algorithm, .bd3); XCTAssertEqual(info.blockSize, 4); XCTAssertEqual(info.fingerprint, 0xABCD)
        XCTAssertEqual(info.step, 4)
        // The saved clip interval is one of the grid's.
        XCTAssertTrue(ClipSearch.grid(blockSize: 4).contains { abs($0.min - info.interval.min) < 1e-7 && abs($0.max - info.interval.max) < 1e-7 })

        // A pending SIGTERM: checkpoint at the current step and report the signal.
        var r2 = r; r2.runDir = dir + "/sig"; r2.steps = 10; r2.valEvery = 0
        let (t2, _) = try TrainSetup.make(r2)
        _ = try t2.trainStep()
        StopSignal.raiseForTesting(SIGTERM)
        defer { StopSignal.reset() }
        let o2 = try t2.run(runDir: r2.runDir, metrics: nil) { _ in }
        XCTAssertEqual(o2.stoppedBySignal, SIGTERM)
        XCTAssertEqual(o2.step, 1)
        let meta = try SafetensorsFile(path: r2.runDir + "/last.optim.safetensors").metadata
        XCTAssertEqual(meta["step"], "1")
    }

    func testNonFiniteLossStopsNamingTheStep() throws {
        let (t, _) = try TrainSetup.make(TinyRun.request(dir: dir, data: trainPath, valid: nil))
        _ = try t.trainStep()
        for i in 0..<t.model.parameterCount { t.model.parameters[i] = .nan }
        XCTAssertThrowsError(try t.trainStep()) { e in
            XCTAssertTrue("\(e)".contains("at step 2"), "\(e)")
            XCTAssertEqual((e as? TrainingDiverged)?.step, 2)
        }
        XCTAssertEqual(t.step, 1, "a diverged step is not applied")
        // Through run(): the divergence is recorded in the run directory and the metrics, then rethrown.
        let runDir = dir + "/diverged"
        try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
        XCTAssertThrowsError(try t.run(runDir: runDir, metrics: try MetricsLog(path: dir + "/d.jsonl")) { _ in }) {
            XCTAssertTrue($0 is TrainingDiverged) }
        let rec = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: runDir + "/diverged.json"))) as! [String: Any]
        XCTAssertEqual(rec["step"] as? Int, 2)
        XCTAssertEqual(rec["loss"] as? String, "nan")
        XCTAssertTrue((rec["reason"] as? String ?? "").contains("lower --lr"))
        let m = try String(contentsOfFile: dir + "/d.jsonl", encoding: .utf8)
        XCTAssertTrue(m.contains("\"diverged\""), m)
    }

    func testRefusesDocumentsStreamAndForeignTokenizer() throws {
        let docs = dir + "/docs.tok"
        try TinyRun.writeStream(docs, rows: TinyRun.rows(2), header: TinyRun.header(kind: .documents))
        XCTAssertThrowsError(try SequenceData.load(path: docs)) { XCTAssertTrue("\($0)".contains("sequences stream")) }
        // Train a checkpoint, then try to fine-tune / score on data from another tokenizer.
        var r = TinyRun.request(dir: dir, data: trainPath, valid: nil, steps: 1)
        let (t, _) = try TrainSetup.make(r)
        _ = try t.run(runDir: r.runDir, metrics: nil) { _ in }
        let other = dir + "/other.tok"
        try TinyRun.writeStream(other, rows: TinyRun.rows(8), header: TinyRun.header(fingerprint: 0x1234))
        var r2 = r; r2.data = other; r2.runDir = dir + "/ft"; r2.initPath = r.runDir + "/last.safetensors"
        XCTAssertThrowsError(try TrainSetup.make(r2)) { e in
            XCTAssertTrue(e is ToolError); XCTAssertTrue("\(e)".contains("fingerprint"), "\(e)") }
        XCTAssertThrowsError(try Perplexity.load(checkpoint: r.runDir + "/last.safetensors", data: other, batch: 2)) {
            XCTAssertTrue("\($0)".contains("fingerprint")) }
        // Usage errors: block size not dividing L, unknown names.
        r.runDir = dir + "/bad"; r.blockSize = 5
        XCTAssertThrowsError(try TrainSetup.make(r)) { XCTAssertTrue($0 is UsageError) }
        r.blockSize = 4; r.schedule = "linear"
        XCTAssertThrowsError(try TrainSetup.make(r)) { XCTAssertTrue($0 is UsageError) }
        r.schedule = "loglinear"; r.sets = ["bogus=1"]
        XCTAssertThrowsError(try TrainSetup.make(r)) { XCTAssertTrue($0 is UsageError) }
        r.sets = []; r.clipSearch = true        // clip search without validation data
        XCTAssertThrowsError(try TrainSetup.make(r)) { XCTAssertTrue($0 is UsageError) }
        r.valid = trainPath; r.algorithm = .ar  // clip search is bd3-only
        XCTAssertThrowsError(try TrainSetup.make(r)) { XCTAssertTrue($0 is UsageError) }
    }

    func testInitFromOtherBlockSizeFineTunes() throws {
        // Pretrain at L' = L (mdlm-style bd3 with block 16), fine-tune at L' = 4 from its weights.
        var r = TinyRun.request(dir: dir, data: trainPath, valid: nil, steps: 2)
        r.blockSize = 16; r.runDir = dir + "/pre"
        let (pre, _) = try TrainSetup.make(r)
        _ = try pre.run(runDir: r.runDir, metrics: nil) { _ in }
        var f = r; f.blockSize = 4; f.runDir = dir + "/ft"; f.initPath = r.runDir + "/last.safetensors"
        let (ft, how) = try TrainSetup.make(f)
        XCTAssertTrue(how.hasPrefix("initialised"), how)
        XCTAssertTrue(Array(ft.model.parameters) == Array(pre.ema.shadow))
        XCTAssertEqual(ft.loss.objective.blockSize, 4)
        _ = try ft.trainStep()
    }
}

final class BatchLossGradientTests: XCTestCase {
    /// The loss wiring (coefficients → head weights → backward) gives the gradient of the token NELBO:
    /// central differences on a few parameters, with the same t / mask draws on every evaluation.
    func testGradientMatchesFiniteDifferences() throws {
        let dir = TinyRun.tempDir("grad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = dir + "/t.tok"
        try TinyRun.writeStream(data, rows: TinyRun.rows(4))
        for algo in [Algorithm.bd3, .ar] {
            var r = TinyRun.request(dir: dir, data: data, valid: nil, algo: algo, steps: 3)
            r.sets.append("dropout=0"); r.runDir = dir + "/\(algo.rawValue)"
            let (t, _) = try TrainSetup.make(r)
            for _ in 0..<3 { _ = try t.trainStep() }     // move away from the zero output layer
            let x0 = t.train.tokens
            let seed = Xoshiro256(seed: 77)
            func lossAt(backward: Bool, scale: Double = 1) -> Double {
                var rng = seed
                return x0.withUnsafeBufferPointer {
                    t.loss.run(x0: $0, batch: 4, interval: .base, training: true, weighted: true, backward: backward,
                               gradScale: scale, dropoutSeed: 0, rng: &rng).tokenNLL
                }
            }
            t.model.zeroGradients()
            _ = lossAt(backward: true)
            let grad = Array(t.model.gradients)
            // Accumulation: two half-scaled passes give the same gradient.
            t.model.zeroGradients()
            _ = lossAt(backward: true, scale: 0.5); _ = lossAt(backward: true, scale: 0.5)
            for i in stride(from: 0, to: grad.count, by: 97) { XCTAssertEqual(t.model.gradients[i], grad[i], accuracy: 1e-6 + 1e-4 * abs(grad[i])) }
            // Finite differences on the largest-gradient coordinates.
            let top = grad.indices.sorted { abs(grad[$0]) > abs(grad[$1]) }.prefix(4)
            for i in top {
                let keep = t.model.parameters[i], h: Float = 1e-2
                t.model.parameters[i] = keep + h; let up = lossAt(backward: false)
                t.model.parameters[i] = keep - h; let dn = lossAt(backward: false)
                t.model.parameters[i] = keep
                let num = (up - dn) / Double(2 * h)
                XCTAssertEqual(Double(grad[i]), num, accuracy: 0.05 * abs(num) + 1e-3, "\(algo) param \(i)")
            }
        }
    }
}
