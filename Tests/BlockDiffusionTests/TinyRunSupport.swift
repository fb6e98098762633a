// Shared fixtures of the training tests (TrainTests, MixScaleTests, SEDDTrainingTests, the SEDD batch-loss
// tests) and the scoring tests: tiny streams on disk, a tiny run request, a tiny SEDD model, and the test case
// base class that writes the train/valid streams into a fresh directory.
import XCTest
import Foundation
@testable import BlockDiffusion

/// Shared helpers for the training / scoring tests: tiny streams on disk and a tiny model.
enum TinyRun {
    static let V = 24            // 0..20 text, 21 eos/bos, 22 pad, 23 mask
    static let L = 16

    static func tempDir(_ name: String) -> String {
        let d = NSTemporaryDirectory() + "bd3-objectives-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    static func header(kind: StreamKind = .sequences, fingerprint: UInt64 = 0xABCD) -> StreamHeader {
        StreamHeader(kind: kind, vocabSize: V, tokenizerFingerprint: fingerprint,
                     special: SpecialTokens(bos: 21, eos: 21, mask: 23, pad: 22), attributes: ["seq_len": "\(L)"])
    }

    /// `n` rows cycling through a few fixed patterns (learnable), row 0 of each starting with BOS.
    static func rows(_ n: Int, length: Int = L) -> [[Int32]] {
        (0..<n).map { r in
            let shift = r % 4
            return [21] + (1..<length).map { Int32((($0 * 3 + shift * 5) % 21)) }
        }
    }

    static func writeStream(_ path: String, rows: [[Int32]], header h: StreamHeader = header()) throws {
        let out = try OutputFile(path: path, allowTerminal: true)
        let w = try TokenStreamWriter(sink: out, header: h)
        for (i, r) in rows.enumerated() { try w.write(TokenRecord(id: UInt64(i), tokens: r)) }
        try w.finish()
        try out.commit()
    }

    static func request(dir: String, data: String, valid: String?, algo: Algorithm = .bd3, steps: Int = 20) -> TrainRequest {
        var r = TrainRequest()
        r.data = data; r.valid = valid; r.algorithm = algo; r.blockSize = 4; r.steps = steps; r.batch = 4
        r.lr = 3e-3; r.warmup = 0; r.runDir = dir + "/run"; r.saveEvery = 0
        r.sets = ["hidden_size=32", "n_blocks=2", "n_heads=2", "cond_dim=16"]
        return r
    }
}

extension TinyRun {
    /// The tiny time-conditioned DiT of the SEDD batch-loss tests (1 block, D = 16), reference init (zero output).
    static func seddModel(V: Int, L: Int, maxBatch: Int, seed: UInt64) -> DiT {
        let cfg = ModelConfig(vocabSize: V, hiddenSize: 16, nBlocks: 1, nHeads: 2, condDim: 8, length: L, dropout: 0,
                              causal: false, timeConditioning: true)
        let model = DiT(config: cfg, maxBatch: maxBatch, maxTokens: L)
        model.initialize(seed: seed)
        return model
    }
}

/// A test case with a fresh directory holding `train.tok` (8 rows) and `valid.tok` (4 rows) of TinyRun.rows,
/// removed after each test.
class TinyRunTestCase: XCTestCase {
    var dir = ""
    var trainPath = "", validPath = ""

    override func setUpWithError() throws {
        dir = TinyRun.tempDir(String(describing: type(of: self)))
        trainPath = dir + "/train.tok"; validPath = dir + "/valid.tok"
        try TinyRun.writeStream(trainPath, rows: TinyRun.rows(8))
        try TinyRun.writeStream(validPath, rows: TinyRun.rows(4))
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// The resume fixture: `r` trained 2n steps straight (run dir a), and n steps, checkpoint, `beforeResume`
    /// (e.g. simulate a crash), resume, n steps (run dir b; `r.runDir` is left there). Returns both trainers,
    /// their losses and the resume message.
    func trainStraightAndResumed(_ r: inout TrainRequest, steps n: Int,
                                 beforeResume: (Trainer, TrainRequest) throws -> Void = { _, _ in }) throws
        -> (straight: Trainer, resumed: Trainer, straightLosses: [Double], resumedLosses: [Double], how: String) {
        r.runDir = dir + "/a"
        let (a, _) = try TrainSetup.make(r)
        var la: [Double] = []
        for _ in 0..<(2 * n) { la.append(try a.trainStep().loss) }
        r.runDir = dir + "/b"
        let (b, _) = try TrainSetup.make(r)
        var lb: [Double] = []
        for _ in 0..<n { lb.append(try b.trainStep().loss) }
        try b.saveCheckpoint(runDir: r.runDir, best: false, valNLL: nil)
        try beforeResume(b, r)
        let (c, how) = try TrainSetup.make(r)      // finds last.optim.safetensors → resumes
        XCTAssertEqual(c.step, n)
        for _ in 0..<n { lb.append(try c.trainStep().loss) }
        return (a, c, la, lb, how)
    }
}
