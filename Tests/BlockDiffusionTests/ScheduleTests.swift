import XCTest
import Foundation
@testable import BlockDiffusion

final class ScheduleTests: XCTestCase {
    let times: [Double] = [1e-3, 0.05, 0.25, 0.5, 0.73, 0.95]

    func testNormalQuantileMatchesTorchNdtri() {
        // torch.special.ndtri in float64 (Tests/scripts/objectives_fixtures.py).
        let cases: [(Double, Double)] = [(1e-10, -6.361340902404056), (0.001, -3.090232306167813),
                                         (0.025, -1.9599639845400545), (0.3, -0.5244005127080409), (0.5, 0),
                                         (0.975, 1.959963984540054), (1 - 1e-10, 6.361340889697422)]
        for (v, z) in cases { XCTAssertEqual(Normal.quantile(v), z, accuracy: 1e-12 * max(1, abs(z)), "v=\(v)") }
        XCTAssertEqual(Normal.quantile(0), -.infinity)
        XCTAssertTrue(Normal.quantile(1.5).isNaN)
    }

    func testQuantileInvertsCDFAndErfinvInvertsErf() {
        for x in stride(from: -8.0, through: 5.0, by: 0.37) {  // above 5, 1 − Φ(x) has too few bits in Double
            XCTAssertEqual(Normal.quantile(Normal.cdf(x)), x, accuracy: 1e-9 * max(1, abs(x)))
        }
        for y in [-0.999, -0.5, -1e-3, 0.2, 0.9, 0.999999] {
            XCTAssertEqual(erf(Normal.erfinv(y)), y, accuracy: 1e-13)
        }
        XCTAssertEqual(Normal.cdf(0), 0.5)
        XCTAssertEqual(Normal.pdf(0), 1 / (2 * Double.pi).squareRoot(), accuracy: 1e-16)
    }

    func testClassicSchedulesClosedForms() {
        let e = 1e-3, ln2 = M_LN2
        for t in times {
            XCTAssertEqual(NoiseSchedule.loglinear.p(t), t)
            XCTAssertEqual(NoiseSchedule.loglinear.lossScale(t), -1 / t, accuracy: 1e-12)
            XCTAssertEqual(NoiseSchedule.square.p(t), max(t * t, e))
            XCTAssertEqual(NoiseSchedule.square.lossScale(t), -2 * t / max(t * t, e), accuracy: 1e-9)
            XCTAssertEqual(NoiseSchedule.squareRoot.p(t), max(t.squareRoot(), e))
            XCTAssertEqual(NoiseSchedule.squareRoot.lossScale(t), -0.5 * pow(t, -0.5) / max(t.squareRoot(), e), accuracy: 1e-9)
            XCTAssertEqual(NoiseSchedule.log.p(t), log1p(t) / ln2, accuracy: 1e-15)
            XCTAssertEqual(NoiseSchedule.log.lossScale(t), -1 / (log1p(t) / ln2 * ln2 * (1 + t)), accuracy: 1e-9)
            let pc = 1 - (1 - e) * cos(Double.pi * t / 2)
            XCTAssertEqual(NoiseSchedule.cosine.p(t), pc, accuracy: 1e-15)
            XCTAssertEqual(NoiseSchedule.cosine.lossScale(t), -(1 - e) * sin(Double.pi * t / 2) * (Double.pi / 2) / (pc + e), accuracy: 1e-9)
        }
    }

    func testLogLinearTableValues() {
        // Spec §2.2/§11.7: sigma_max = total_noise(1) = −ln(1e-3) = 6.907755; sigma_min = ε + total_noise(0).
        let s = NoiseSchedule.loglinear
        XCTAssertEqual(s.sigmaMax, 6.907755, accuracy: 1e-6)
        XCTAssertEqual(1e-3 + s.totalNoise(0), 1e-3)
        for t in [1e-3, 0.25, 0.5, 1.0] {
            XCTAssertEqual(s.totalNoise(t), -log1p(-(1 - 1e-3) * t), accuracy: 1e-15)
            XCTAssertEqual(s.rateNoise(t), (1 - 1e-3) / (1 - (1 - 1e-3) * t), accuracy: 1e-12)
        }
        XCTAssertEqual(s.lossScale(0.25), -4)
        // mdlm_loss_scale form: −rate/expm1(total) = −1/t analytically.
        for t in [0.1, 0.5, 0.9] { XCTAssertEqual(-s.rateNoise(t) / expm1(s.totalNoise(t)), -1 / t, accuracy: 1e-9) }
        XCTAssertEqual(NoiseSchedule.cosine.sigmaMax, .infinity)
        XCTAssertEqual(s.sigma(fromP: 1.0), 6.907755, accuracy: 1e-6)  // clamped
        XCTAssertEqual(s.sigma(fromP: 0.5), M_LN2, accuracy: 1e-15)
    }

    /// dp/dt against central differences, and loss_scale = −p'/p, for every schedule with a smooth interior.
    func testDerivativesMatchFiniteDifferences() {
        var bimodalLate = NoiseSchedule.BimodalParameters(); bimodalLate.tau = 1.3
        let schedules: [NoiseSchedule] = [.loglinear, .square, .squareRoot, .log, .cosine,
                                          .gaussian(.init()), .gaussian(.init(mu: 0.7, sigma: 0.2)),
                                          .bimodal(.init()), .bimodal(bimodalLate)]
        for s in schedules {
            for t in [0.1, 0.3, 0.45, 0.62, 0.8, 0.9] {
                if case .square = s, t * t < 1e-3 { continue }
                let h = 1e-6
                let num = (s.p(t + h) - s.p(t - h)) / (2 * h)
                let (p, d) = s.evaluate(t)
                XCTAssertEqual(d, num, accuracy: 1e-5 * max(1, abs(num)), "\(s.name) t=\(t)")
                if case .cosine = s { continue }
                XCTAssertEqual(s.lossScale(t), -d / p, accuracy: 1e-12 * max(1, abs(d / p)))
            }
        }
    }

    func testGaussianScheduleClosedForm() {
        // Seed eq. (3): z = Φ⁻¹(Φ(α) + t·Z), p = μ + σz; eq. (4): loss = −σZ/(φ(z) p).
        let mu = 0.5, s = 0.1
        let g = NoiseSchedule.gaussian(.init(mu: mu, sigma: s))
        let a = -mu / s, b = (1 - mu) / s
        let Z = Normal.cdf(b) - Normal.cdf(a)
        for t in [0.02, 0.5, 0.77, 0.98] {
            let z = Normal.quantile(Normal.cdf(a) + t * Z)
            XCTAssertEqual(g.p(t), mu + s * z, accuracy: 1e-12)
            XCTAssertEqual(g.lossScale(t), -s * Z / (Normal.pdf(z) * (mu + s * z)), accuracy: 1e-9)
        }
        // Symmetric around μ = 0.5: p(0.5) = 0.5, p(t) + p(1−t) = 1; monotone.
        XCTAssertEqual(g.p(0.5), 0.5, accuracy: 1e-12)
        XCTAssertEqual(g.p(0.2) + g.p(0.8), 1, accuracy: 1e-12)
        XCTAssertLessThan(g.p(0.3), g.p(0.31))
        // Clamps: p never leaves [p_min, 1 − p_min]; sigma_max = −ln(p_min) = 11.513.
        XCTAssertGreaterThanOrEqual(g.p(0), 1e-5)
        XCTAssertLessThanOrEqual(g.p(1), 1 - 1e-5)
        XCTAssertEqual(g.sigmaMax, 11.512925, accuracy: 1e-6)
        XCTAssertEqual(g.rateNoise(0.3), g.evaluate(0.3).dpdt / (1 - g.p(0.3)), accuracy: 1e-12)
    }

    func testBimodalSplitsTimeAndMovesSecondMode() {
        var b = NoiseSchedule.BimodalParameters()
        let s0 = NoiseSchedule.bimodal(b)
        // First component on u < w1, with t1 = t/w1; second on t2 = (t − w1)/(1 − w1), μ2 = m_start at τ = 0.
        let g1 = NoiseSchedule.gaussian(.init(mu: b.mu1, sigma: b.sigma1))
        let g2 = NoiseSchedule.gaussian(.init(mu: b.mStart, sigma: b.sigma2))
        for t in [0.1, 0.35, 0.69] {
            XCTAssertEqual(s0.p(t), g1.p(t / b.w1), accuracy: 1e-12)
            XCTAssertEqual(s0.evaluate(t).dpdt, g1.evaluate(t / b.w1).dpdt / b.w1, accuracy: 1e-9)
        }
        for t in [0.71, 0.85, 0.99] {
            let t2 = (t - b.w1) / (1 - b.w1)
            XCTAssertEqual(s0.p(t), g2.p(t2), accuracy: 1e-12)
            XCTAssertEqual(s0.evaluate(t).dpdt, g2.evaluate(t2).dpdt / (1 - b.w1), accuracy: 1e-9)
        }
        // Progress hook: τ = tau_scale·clip(step/max, 0, 1); μ2 = m_start + (m_end − m_start)(1 − e^{−τ}).
        var s = s0
        s.setTrainingProgress(step: 50, maxSteps: 100)
        guard case .bimodal(let moved) = s else { return XCTFail() }
        XCTAssertEqual(moved.tau, 1.5, accuracy: 1e-15)
        XCTAssertEqual(moved.mu2, 0.4 + 0.45 * (1 - exp(-1.5)), accuracy: 1e-15)
        s.setTrainingProgress(step: 500, maxSteps: 100)
        guard case .bimodal(let capped) = s else { return XCTFail() }
        XCTAssertEqual(capped.tau, 3.0)
        XCTAssertGreaterThan(s.p(0.85), s0.p(0.85))   // the second mode moved up
        b.tau = 0
        XCTAssertEqual(NoiseSchedule.bimodal(b), s0)
        var other = NoiseSchedule.loglinear
        other.setTrainingProgress(step: 3, maxSteps: 10)
        XCTAssertEqual(other, .loglinear)
    }

    func testNamesRoundTrip() {
        for n in ["loglinear", "square", "square_root", "log", "cosine", "gaussian", "bimodal_gaussian"] {
            XCTAssertEqual(NoiseSchedule.named(n)?.name, n)
        }
        XCTAssertNil(NoiseSchedule.named("linear"))
    }

    func testReweightingClosedForms() {
        // With α = 1 − p, λ = log(α/(1−α)).
        let ll = NoiseSchedule.loglinear
        for t in [0.05, 0.3, 0.5, 0.8, 0.97] {
            let (p, d) = ll.evaluate(t)
            let a = 1 - p
            XCTAssertEqual(Reweighting.iddpm.weight(p: p, dpdt: d), 2 * (a * (1 - a)).squareRoot(), accuracy: 1e-12)
            XCTAssertEqual(Reweighting.sigmoid(k: 0).weight(p: p, dpdt: d), 1 - a, accuracy: 1e-12)
            XCTAssertEqual(Reweighting.fm.weight(p: p, dpdt: d), ((1 - a) / a).squareRoot(), accuracy: 1e-12)
            XCTAssertEqual(Reweighting.simple.weight(p: p, dpdt: d), t, accuracy: 1e-12)
            let lam = log(a / (1 - a))
            let edm = exp(-(lam - 2.4) * (lam - 2.4) / (2 * 2.4 * 2.4)) / (2.4 * (2 * Double.pi).squareRoot()) * (exp(-lam) + 0.25) / 0.25
            XCTAssertEqual(Reweighting.edm.weight(p: p, dpdt: d), edm, accuracy: 1e-12)
            XCTAssertEqual(Reweighting.none.weight(p: p, dpdt: d), 1)
            // sigmoid(−λ + k) with k = 2: 1/(1 + e^{λ−2}).
            XCTAssertEqual(Reweighting.sigmoid(k: 2).weight(p: p, dpdt: d), 1 / (1 + exp(lam - 2)), accuracy: 1e-12)
        }
        // `simple` makes w·loss_scale = −1 for any schedule (computed per block, not from block 0).
        for s in [NoiseSchedule.square, .log, .gaussian(.init()), .bimodal(.init())] {
            for t in [0.2, 0.6, 0.9] {
                let (p, d) = s.evaluate(t)
                XCTAssertEqual(Reweighting.simple.weight(p: p, dpdt: d) * s.lossScale(t), -1, accuracy: 1e-12)
            }
        }
        XCTAssertEqual(Reweighting.named("sigmoid:1.5"), .sigmoid(k: 1.5))
        XCTAssertEqual(Reweighting.named("edm"), .edm)
        XCTAssertNil(Reweighting.named("bogus"))
    }
}
