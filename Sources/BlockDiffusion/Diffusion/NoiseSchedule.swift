// Noise schedules (spec §2.2 and §6). A schedule maps a time t ∈ [0,1] (one per block) to
// p(t) — the chance that a token is masked, p = 1 − α_t — and to the NELBO weight
// loss_scale(t) = −p'(t)/p(t) that multiplies log p_θ(x0) on masked tokens.
//
// Every formula follows the reference code (kuleshov-group/bd3lms `noise_schedule.py`, and the NTUA
// fork for the Gaussian schedules), including its clamps:
//  • square / square_root clamp p at 1e-3 but not the derivative (spec §10.9);
//  • cosine adds ε in the loss-scale denominator (§10.10);
//  • the Gaussian schedules clamp u, the quantile argument and p, and floor φ(z) at 1e-12.
// `dpdt` is the derivative the reference's loss scale implies (−loss_scale·p, without the cosine
// ε); the simple reweighting uses it (`Reweighting.swift`). Everything is computed in Double.
import Foundation

public enum NoiseSchedule: Equatable, Sendable {
    case loglinear                // p = t
    case square                   // p = max(t², 1e-3)
    case squareRoot               // p = max(√t, 1e-3)
    case log                      // p = log1p(t)/ln 2
    case cosine                   // p = 1 − (1−ε)cos(πt/2)
    case gaussian(GaussianParameters)
    case bimodal(BimodalParameters)

    /// ε of LogLinearNoise / ExpNoise / CosineNoise.
    public static let eps = 1e-3

    public struct GaussianParameters: Equatable, Sendable {
        public var mu = 0.5, sigma = 0.1, pMin = 1e-5, uEps = 1e-6
        public init(mu: Double = 0.5, sigma: Double = 0.1, pMin: Double = 1e-5, uEps: Double = 1e-6) {
            self.mu = mu; self.sigma = sigma; self.pMin = pMin; self.uEps = uEps
        }
    }

    public struct BimodalParameters: Equatable, Sendable {
        public var w1 = 0.7, mu1 = 0.15, sigma1 = 0.02, sigma2 = 0.08
        public var mStart = 0.4, mEnd = 0.85, tauScale = 3.0
        public var pMin = 1e-5, uEps = 1e-6
        /// Training progress τ = tau_scale·clip(step/max_steps, 0, 1); set through `settingProgress`.
        public var tau = 0.0
        public init() {}
        /// μ2(τ) = m_start + (m_end − m_start)(1 − e^{−τ}).
        public var mu2: Double { mStart + (mEnd - mStart) * (1 - exp(-tau)) }
    }

    /// Parses a schedule name as used on the command line / in checkpoint metadata.
    public static func named(_ name: String) -> NoiseSchedule? {
        switch name {
        case "loglinear": return .loglinear
        case "square": return .square
        case "square_root": return .squareRoot
        case "log": return .log
        case "cosine": return .cosine
        case "gaussian": return .gaussian(GaussianParameters())
        case "bimodal_gaussian": return .bimodal(BimodalParameters())
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .loglinear: return "loglinear"
        case .square: return "square"
        case .squareRoot: return "square_root"
        case .log: return "log"
        case .cosine: return "cosine"
        case .gaussian: return "gaussian"
        case .bimodal: return "bimodal_gaussian"
        }
    }

    /// The parameters of the Gaussian schedules as "k=v,…" (exact decimals; bimodal includes the training
    /// progress τ it was at), "" for the others. Stored in checkpoints as `noise_params`, read by `named(_:parameters:)`.
    public var parameterString: String {
        func f(_ x: Double) -> String { "\(x)" }   // shortest decimal that reads back exactly
        switch self {
        case .gaussian(let g):
            return "mu=\(f(g.mu)),sigma=\(f(g.sigma)),p_min=\(f(g.pMin)),u_eps=\(f(g.uEps))"
        case .bimodal(let b):
            return "w1=\(f(b.w1)),mu1=\(f(b.mu1)),sigma1=\(f(b.sigma1)),sigma2=\(f(b.sigma2)),m_start=\(f(b.mStart)),"
                + "m_end=\(f(b.mEnd)),tau_scale=\(f(b.tauScale)),p_min=\(f(b.pMin)),u_eps=\(f(b.uEps)),tau=\(f(b.tau))"
        default:
            return ""
        }
    }

    /// A schedule by name with the parameters `parameterString` wrote; unknown keys or values → nil.
    public static func named(_ name: String, parameters: String) -> NoiseSchedule? {
        guard var s = named(name) else { return nil }
        var kv: [String: Double] = [:]
        for item in parameters.split(separator: ",") where !item.isEmpty {
            let f = item.split(separator: "=", maxSplits: 1)
            guard f.count == 2, let v = Double(f[1]) else { return nil }
            kv[String(f[0])] = v
        }
        switch s {
        case .gaussian(var g):
            for (k, v) in kv {
                switch k { case "mu": g.mu = v; case "sigma": g.sigma = v; case "p_min": g.pMin = v; case "u_eps": g.uEps = v
                default: return nil }
            }
            s = .gaussian(g)
        case .bimodal(var b):
            for (k, v) in kv {
                switch k {
                case "w1": b.w1 = v; case "mu1": b.mu1 = v; case "sigma1": b.sigma1 = v; case "sigma2": b.sigma2 = v
                case "m_start": b.mStart = v; case "m_end": b.mEnd = v; case "tau_scale": b.tauScale = v
                case "p_min": b.pMin = v; case "u_eps": b.uEps = v; case "tau": b.tau = v
                default: return nil
                }
            }
            s = .bimodal(b)
        default:
            guard kv.isEmpty else { return nil }
        }
        return s
    }

    /// The reference's `set_training_progress(global_step, max_steps)`: moves μ2 of the bimodal
    /// schedule; a no-op for the others.
    public mutating func setTrainingProgress(step: Int, maxSteps: Int) {
        guard case .bimodal(var b) = self else { return }
        let frac = maxSteps > 0 ? min(max(Double(step) / Double(maxSteps), 0), 1) : 0
        b.tau = b.tauScale * frac
        self = .bimodal(b)
    }

    /// (p, dp/dt) at t.
    public func evaluate(_ t: Double) -> (p: Double, dpdt: Double) {
        let e = NoiseSchedule.eps
        switch self {
        case .loglinear:
            return (t, 1)
        case .square:
            return (max(t * t, e), 2 * t)
        case .squareRoot:
            return (max(t.squareRoot(), e), 0.5 / t.squareRoot())
        case .log:
            return (log1p(t) / M_LN2, 1 / (M_LN2 * (1 + t)))
        case .cosine:
            let a = Double.pi * t / 2
            return (1 - (1 - e) * cos(a), (1 - e) * sin(a) * Double.pi / 2)
        case .gaussian(let g):
            let u = min(max(t, g.uEps), 1 - g.uEps)
            return NoiseSchedule.truncatedQuantile(u: u, mu: g.mu, s: g.sigma, pMin: g.pMin, uEps: g.uEps)
        case .bimodal(let b):
            let u = min(max(t, b.uEps), 1 - b.uEps)
            if u < b.w1 {
                let u1 = min(max(u / b.w1, b.uEps), 1 - b.uEps)
                let (p, d) = NoiseSchedule.truncatedQuantile(u: u1, mu: b.mu1, s: b.sigma1, pMin: b.pMin, uEps: b.uEps)
                return (p, d / b.w1)
            } else {
                let u2 = min(max((u - b.w1) / (1 - b.w1), b.uEps), 1 - b.uEps)
                let (p, d) = NoiseSchedule.truncatedQuantile(u: u2, mu: b.mu2, s: b.sigma2, pMin: b.pMin, uEps: b.uEps)
                return (p, d / (1 - b.w1))
            }
        }
    }

    /// The truncated-normal quantile on [0,1]: p = μ + s·Φ⁻¹(Φ(α) + u·Z), dp/du = s·Z/φ(z).
    static func truncatedQuantile(u: Double, mu: Double, s: Double, pMin: Double, uEps: Double) -> (Double, Double) {
        let alpha = (0 - mu) / s, beta = (1 - mu) / s
        let phiA = Normal.cdf(alpha)
        let z0 = max(Normal.cdf(beta) - phiA, 1e-12)
        let v = min(max(phiA + u * z0, uEps), 1 - uEps)
        let z = Normal.quantile(v)
        let p = min(max(mu + s * z, pMin), 1 - pMin)
        let dpdu = s * z0 / max(Normal.pdf(z), 1e-12)
        return (p, dpdu)
    }

    /// Move (mask) chance p(t).
    public func p(_ t: Double) -> Double { evaluate(t).p }

    /// The reference's loss_scale(t) (negative): −p'/p, with the cosine schedule's ε in the denominator.
    public func lossScale(_ t: Double) -> Double {
        let (p, d) = evaluate(t)
        if case .cosine = self { return -d / (p + NoiseSchedule.eps) }
        return -d / p
    }

    /// σ_max used to clamp σ = −log(1−p): −ln ε for loglinear, −ln p_min for the Gaussians,
    /// +inf for the others (the NTUA fork's base class; upstream crashes there, spec §10.8).
    public var sigmaMax: Double {
        switch self {
        case .loglinear: return totalNoise(1)
        case .gaussian(let g): return -Foundation.log(g.pMin)
        case .bimodal(let b): return -Foundation.log(b.pMin)
        default: return .infinity
        }
    }

    /// Total noise σ(t): loglinear's −log1p(−(1−ε)t); −log1p(−p) for the others.
    public func totalNoise(_ t: Double) -> Double {
        if case .loglinear = self { return -log1p(-(1 - NoiseSchedule.eps) * t) }
        return -log1p(-p(t))
    }

    /// Rate dσ/dt: loglinear's (1−ε)/(1−(1−ε)t); p'/(1−p) for the others.
    public func rateNoise(_ t: Double) -> Double {
        if case .loglinear = self { return (1 - NoiseSchedule.eps) / (1 - (1 - NoiseSchedule.eps) * t) }
        let (p, d) = evaluate(t)
        return d / (1 - p)
    }

    /// `_sigma_from_p`: min(−log1p(−p), σ_max). (Unused by the model while time conditioning is off.)
    public func sigma(fromP p: Double) -> Double { min(-log1p(-p), sigmaMax) }
}
