import XCTest
@testable import BlockDiffusion

final class OptimizerTests: XCTestCase {
    /// Three AdamW steps against torch.optim.AdamW (foreach=False) numbers from Tests/scripts/objectives_fixtures.py.
    func testAdamWMatchesTorch() {
        let grads: [[Float]] = [[0.1, -0.2, 0.3], [-0.05, 0.4, 0.0], [1.5, -2.5, 1e-4]]
        let lrs: [Float] = [3e-4, 1e-3, 1e-3]
        let expected: [Float: [Float]] = [0: [0.49878132343292236, -1.249487042427063, 1.9985116720199585],
                                          0.1: [0.4986664056777954, -1.249199628829956, 1.9980517625808716]]
        for wd: Float in [0, 0.1] {
            var p: [Float] = [0.5, -1.25, 2.0]
            let opt = AdamW(count: 3)
            opt.weightDecay = Double(wd)
            for (g, lr) in zip(grads, lrs) {
                p.withUnsafeMutableBufferPointer { pp in g.withUnsafeBufferPointer { opt.update(parameters: pp, gradients: $0, lr: lr) } }
            }
            for i in 0..<3 { XCTAssertEqual(p[i], expected[wd]![i], accuracy: 2e-7, "wd=\(wd) i=\(i)") }
            let m: [Float] = [0.15360000729560852, -0.23020000755786896, 0.024310000240802765]
            let v: [Float] = [0.0022624775301665068, 0.006449760403484106, 8.98201105883345e-05]
            for i in 0..<3 { XCTAssertEqual(opt.m[i], m[i], accuracy: 1e-8); XCTAssertEqual(opt.v[i], v[i], accuracy: v[i] * 1e-6) }  // torch's kernel may round g² by 1 ulp differently
            XCTAssertEqual(opt.step, 3)
        }
    }

    func testAdamWFirstStepByHand() {
        // Step 1: m̂ = g, v̂ = g², so θ ← θ − lr·g/(|g| + eps) = θ − lr·sign(g) (up to eps).
        var p: [Float] = [1, 1]
        let opt = AdamW(count: 2)
        p.withUnsafeMutableBufferPointer { pp in [Float(0.5), -2].withUnsafeBufferPointer { opt.update(parameters: pp, gradients: $0, lr: 0.1) } }
        XCTAssertEqual(p[0], 0.9, accuracy: 1e-6)
        XCTAssertEqual(p[1], 1.1, accuracy: 1e-6)
        // Restore reproduces the state.
        let other = AdamW(count: 2)
        other.restore(step: opt.step, m: Array(opt.m), v: Array(opt.v))
        var p2 = p
        p.withUnsafeMutableBufferPointer { pp in [Float(0.1), 0.3].withUnsafeBufferPointer { opt.update(parameters: pp, gradients: $0, lr: 0.1) } }
        p2.withUnsafeMutableBufferPointer { pp in [Float(0.1), 0.3].withUnsafeBufferPointer { other.update(parameters: pp, gradients: $0, lr: 0.1) } }
        XCTAssertEqual(p, p2)
    }

    func testLearningRateSchedules() {
        let c = LRSchedule.constantWarmup(lr: 3e-4, warmup: 2500)
        XCTAssertEqual(c.lr(afterSteps: 0), 0)
        XCTAssertEqual(c.lr(afterSteps: 1250), 1.5e-4, accuracy: 1e-18)
        XCTAssertEqual(c.lr(afterSteps: 2500), 3e-4)
        XCTAssertEqual(c.lr(afterSteps: 100_000), 3e-4)
        XCTAssertEqual(LRSchedule.constantWarmup(lr: 1e-3, warmup: 0).lr(afterSteps: 0), 1e-3)
        let cos = LRSchedule.cosine(lr: 1e-3, totalSteps: 1000)
        XCTAssertEqual(cos.lr(afterSteps: 0), 1e-6)
        XCTAssertEqual(cos.lr(afterSteps: 50), 1e-6 + 50 * (1e-3 - 1e-6) / 100, accuracy: 1e-15)
        XCTAssertEqual(cos.lr(afterSteps: 100), 1e-3, accuracy: 1e-15)
        XCTAssertEqual(cos.lr(afterSteps: 550), 1e-6 + 0.5 * (1e-3 - 1e-6), accuracy: 1e-15)   // halfway through the cosine
        XCTAssertEqual(cos.lr(afterSteps: 1000), 1e-6)
    }

    func testGradientClipMatchesTorch() {
        var g: [Float] = [3, -4, 12]
        let n = g.withUnsafeMutableBufferPointer { GradientClipping.clip($0, maxNorm: 1.0) }
        XCTAssertEqual(n, 13)
        let torch: [Float] = [0.23076921701431274, -0.307692289352417, 0.923076868057251]
        for i in 0..<3 { XCTAssertEqual(g[i], torch[i], accuracy: 1e-7) }
        var small: [Float] = [0.1, 0.2]
        small.withUnsafeMutableBufferPointer { _ = GradientClipping.clip($0, maxNorm: 1.0) }
        XCTAssertEqual(small, [0.1, 0.2])
    }

    func testEMADecayWarmup() {
        var theta: [Float] = [0, 10]
        let ema = theta.withUnsafeBufferPointer { EMA(parameters: $0, decay: 0.9999) }
        theta = [1, 20]
        theta.withUnsafeBufferPointer { ema.update($0) }
        // n = 1: d = min(0.9999, 2/11); s = s − (1 − 2/11)(s − θ).
        let d1 = 2.0 / 11
        XCTAssertEqual(ema.shadow[0], Float(0 - (1 - d1) * (0 - 1)), accuracy: 1e-6)
        XCTAssertEqual(ema.shadow[1], Float(10 - (1 - d1) * (10 - 20)), accuracy: 1e-5)
        theta.withUnsafeBufferPointer { ema.update($0) }
        let d2 = 3.0 / 12
        let s0 = (0 - (1 - d1) * (0 - 1))
        XCTAssertEqual(ema.shadow[0], Float(s0 - (1 - d2) * (s0 - 1)), accuracy: 1e-6)
        // Far along, the cap 0.9999 applies.
        let late = EMA(parameters: UnsafeBufferPointer(start: nil, count: 0))
        late.restore(updates: 10_000_000, shadow: [])
        XCTAssertEqual(min(0.9999, Double(1 + 10_000_001) / Double(10 + 10_000_001)), 0.9999)
        // Swap twice is the identity; once exchanges.
        theta.withUnsafeMutableBufferPointer { ema.swap(with: $0) }
        XCTAssertEqual(theta[0], Float(s0 - (1 - d2) * (s0 - 1)), accuracy: 1e-6)
        theta.withUnsafeMutableBufferPointer { ema.swap(with: $0) }
        XCTAssertEqual(theta, [1, 20])
    }
}
