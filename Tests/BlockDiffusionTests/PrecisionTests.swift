// bf16 mixed precision: the rounding, the bf16 matmul against its naive twin, per-layer and whole-model
// agreement with fp32, and a tiny run's loss curve.
import XCTest
import Foundation
@testable import BlockDiffusion

final class PrecisionTests: XCTestCase {
    func testBF16RoundingIsNearestTiesToEven() {
        XCTAssertEqual(bf16Round(1), 1)
        XCTAssertEqual(bf16Round(-2.5), -2.5)
        // Spacing of bf16 in [1, 2) is 2^-7.
        XCTAssertEqual(bf16Round(1 + 0x1p-8), 1)                  // tie → even (1.0)
        XCTAssertEqual(bf16Round(1 + 3 * 0x1p-8), 1 + 2 * 0x1p-7) // tie → even (1 + 2^-6)
        XCTAssertEqual(bf16Round(1 + 0x1p-8 + 0x1p-20), 1 + 0x1p-7)
        XCTAssertEqual(bf16Round(.infinity), .infinity)
        XCTAssertTrue(bf16Round(.nan).isNaN)
        XCTAssertEqual(bf16Round(.greatestFiniteMagnitude), .infinity)  // above bf16's largest finite value
        // The SIMD pass and the scalar agree (lengths not a multiple of 8 exercise the tail).
        var rng = Xoshiro256(seed: 5)
        let x = (0..<1003).map { _ in Float(rng.uniformDouble() * 2 - 1) * 37 }
        var y = [Float](repeating: 0, count: x.count)
        roundToBF16(&y, x, x.count)
        for i in x.indices {
            XCTAssertEqual(y[i], bf16Round(x[i]))
            XCTAssertEqual(y[i].bitPattern & 0xFFFF, 0)
            XCTAssertLessThanOrEqual(abs(y[i] - x[i]), abs(x[i]) * 0x1p-8)
        }
    }

    /// The bf16 products (forward, dinp overwrite and accumulate, dweight +=, dbias) against a Double twin
    /// on bf16-rounded operands, on ragged shapes (small ones take one sgemm, large ones the row split).
    func testBF16MatmulMatchesNaiveTwinOnRaggedShapes() {
        let saved = MatmulContext.enter(.bf16); defer { _ = MatmulContext.enter(saved) }
        var rng = Xoshiro256(seed: 11)
        func rand(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.uniformDouble() * 2 - 1) } }
        for (N, C, OC) in [(1, 1, 1), (3, 5, 7), (17, 33, 65), (129, 31, 47), (611, 73, 97), (97, 257, 129)] {
            let x = rand(N * C), w = rand(OC * C), b = rand(OC), dout = rand(N * OC)
            let xr = x.map(bf16Round), wr = w.map(bf16Round), dr = dout.map(bf16Round)
            // Forward.
            var out = [Float](repeating: 0, count: N * OC)
            matmulForward(&out, x, w, b, N, C, OC)
            for n in 0..<N { for o in 0..<OC {
                var s = Double(b[o]), mag = abs(Double(b[o]))
                for c in 0..<C { let t = Double(xr[n * C + c]) * Double(wr[o * C + c]); s += t; mag += abs(t) }
                XCTAssertEqual(Double(out[n * OC + o]), s, accuracy: 1e-6 * mag + 1e-7, "forward \(N)x\(C)x\(OC)")
            } }
            // Backward: dinp accumulates onto 1s, dweight onto 0.5s, dbias onto 0.25s.
            var dinp = [Float](repeating: 1, count: N * C), dw = [Float](repeating: 0.5, count: OC * C), db = [Float](repeating: 0.25, count: OC)
            matmulBackward(dinp: &dinp, accumulateInput: true, dweight: &dw, dbias: &db, dout: dout, inp: x, weight: w, N, C, OC)
            for n in 0..<N { for c in 0..<C {
                var s = 1.0, mag = 1.0
                for o in 0..<OC { let t = Double(dr[n * OC + o]) * Double(wr[o * C + c]); s += t; mag += abs(t) }
                XCTAssertEqual(Double(dinp[n * C + c]), s, accuracy: 1e-6 * mag, "dinp \(N)x\(C)x\(OC)")
            } }
            for o in 0..<OC {
                var sb = 0.25
                for n in 0..<N { sb += Double(dout[n * OC + o]) }   // the bias gradient sums the fp32 dout
                XCTAssertEqual(Double(db[o]), sb, accuracy: 1e-5 * Double(N) + 1e-6, "dbias")
                for c in 0..<C {
                    var s = 0.5, mag = 0.5
                    for n in 0..<N { let t = Double(dr[n * OC + o]) * Double(xr[n * C + c]); s += t; mag += abs(t) }
                    XCTAssertEqual(Double(dw[o * C + c]), s, accuracy: 1e-6 * mag, "dweight \(N)x\(C)x\(OC)")
                }
            }
            // Overwrite mode of dinp.
            var dinp2 = [Float](repeating: 9, count: N * C)
            matmulBackward(dinp: &dinp2, dweight: nil, dbias: nil, dout: dout, inp: x, weight: w, N, C, OC)
            for i in 0..<(N * C) { XCTAssertEqual(dinp2[i], dinp[i] - 1, accuracy: 1e-4 * (1 + abs(dinp[i]))) }
        }
    }

    /// Relative Frobenius distance.
    func relError(_ a: [Float], _ b: [Float]) -> Double {
        var num = 0.0, den = 0.0
        for i in a.indices { let d = Double(a[i]) - Double(b[i]); num += d * d; den += Double(b[i]) * Double(b[i]) }
        return (num / max(den, 1e-30)).squareRoot()
    }

    /// One Linear layer: bf16 vs fp32 within 1e-2 relative (operand rounding is ≤ 2^-9 relative each; random
    /// signs make the product's error ~3e-3).
    func testLinearLayerBF16WithinToleranceOfFP32() {
        var rng = Xoshiro256(seed: 3)
        func rand(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.uniformDouble() * 2 - 1) } }
        let (N, C, OC) = (64, 96, 80)
        let x = rand(N * C), w = rand(OC * C), b = rand(OC), dout = rand(N * OC)
        func run(_ p: Precision) -> ([Float], [Float], [Float]) {
            let saved = MatmulContext.enter(p); defer { _ = MatmulContext.enter(saved) }
            var out = [Float](repeating: 0, count: N * OC), dinp = [Float](repeating: 0, count: N * C), dw = [Float](repeating: 0, count: OC * C)
            matmulForward(&out, x, w, b, N, C, OC)
            matmulBackward(dinp: &dinp, dweight: &dw, dbias: nil, dout: dout, inp: x, weight: w, N, C, OC)
            return (out, dinp, dw)
        }
        let f = run(.fp32), h = run(.bf16)
        for (a, b, what) in [(h.0, f.0, "out"), (h.1, f.1, "dinp"), (h.2, f.2, "dweight")] {
            let e = relError(a, b)
            XCTAssertLessThan(e, 1e-2, what); XCTAssertGreaterThan(e, 0, "\(what): bf16 path not taken")
        }
    }

    /// The whole DiT (BD3 layout, adaLN, every layer): logits and all parameter gradients of the bf16 model
    /// within 3e-2 relative of the fp32 model with the same weights; everything but the matmuls is fp32.
    func testModelForwardBackwardBF16WithinToleranceOfFP32() {
        let V = 40, L = 16, B = 2
        let cfg = ModelConfig(vocabSize: V, hiddenSize: 32, nBlocks: 2, nHeads: 2, condDim: 16, length: L, dropout: 0,
                              causal: false, timeConditioning: false)
        let model = DiT(config: cfg, maxBatch: B, maxTokens: 2 * L)
        model.initialize(seed: 9)
        var rng = Xoshiro256(seed: 4)
        for i in 0..<model.parameterCount { model.parameters[i] += Float(rng.uniformDouble() * 2 - 1) * 0.05 }   // non-zero output layer
        let tokens = (0..<(B * 2 * L)).map { _ in Int32(rng.uniformDouble() * Double(V - 1)) }
        func run(_ p: Precision) -> ([Float], [Float]) {
            model.precision = p
            model.zeroGradients()
            let logits = tokens.withUnsafeBufferPointer {
                Array(model.forward(tokens: $0, batch: B, layout: .blockDiffusion(blockSize: 4), sigma: nil, training: false, dropoutSeed: 0))
            }
            let dl = (0..<logits.count).map { Float(sin(Double($0))) * 0.01 }
            dl.withUnsafeBufferPointer { model.backward(dLogits: $0) }
            return (logits, Array(model.gradients))
        }
        let f = run(.fp32), h = run(.bf16)
        XCTAssertLessThan(relError(h.0, f.0), 3e-2); XCTAssertGreaterThan(relError(h.0, f.0), 0)
        XCTAssertLessThan(relError(h.1, f.1), 3e-2)
        XCTAssertEqual(MatmulContext.current.precision, .fp32, "the model restores the thread's precision")
    }
}

final class PrecisionTrainingTests: TinyRunTestCase {
    /// A tiny BD3 run in bf16 follows the fp32 loss curve: mean loss over every 10 steps within 3 %.
    func testTinyRunLossCurveBF16MatchesFP32() throws {
        func curve(_ p: String) throws -> [Double] {
            var r = TinyRun.request(dir: dir, data: trainPath, valid: nil, algo: .bd3, steps: 60)
            r.runDir = dir + "/" + p; r.precision = p
            let (t, _) = try TrainSetup.make(r)
            XCTAssertEqual(t.model.precision.rawValue, p)
            return try (0..<60).map { _ in try t.trainStep().loss }
        }
        let f = try curve("fp32"), h = try curve("bf16")
        XCTAssertNotEqual(f, h)
        for k in 0..<6 {
            let a = f[(10 * k)..<(10 * k + 10)].reduce(0, +) / 10, b = h[(10 * k)..<(10 * k + 10)].reduce(0, +) / 10
            XCTAssertEqual(b, a, accuracy: 0.03 * a, "steps \(10 * k)..<\(10 * k + 10)")
        }
        XCTAssertLessThan(h.suffix(10).reduce(0, +), 0.7 * h.prefix(10).reduce(0, +), "bf16 run learns")
    }

    func testUnknownPrecisionIsAUsageError() throws {
        var r = TinyRun.request(dir: dir, data: trainPath, valid: nil)
        r.precision = "fp16"
        XCTAssertThrowsError(try TrainSetup.make(r)) { XCTAssertTrue($0 is UsageError, "\($0)") }
    }
}
