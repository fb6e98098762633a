// Loss reweighting (spec §6 table; seed 000 §7 Table 12): loss = w(λ)·loss_scale·log p_θ, with the
// log-SNR λ = log(α/(1−α)), α = 1 − p. Unlike the NTUA fork, w is computed PER BLOCK from that
// block's own t (the fork derives `simple`'s dα from block 0's σ, spec §6 caveat 1). Reweighting
// changes the training loss only; evaluation always reports the unweighted NELBO (caveat 2).
import Foundation

public enum Reweighting: Equatable, Sendable {
    case none
    case edm                  // N(λ; 2.4, 2.4²)·(e^{−λ} + 0.5²)/0.5²
    case iddpm                // sech(λ/2)
    case sigmoid(k: Double)   // sigmoid(−λ + k); the fork hard-codes k = 0
    case fm                   // e^{−λ/2}
    case simple               // −(1−α)/α' = p/p', so w·loss_scale = −1 (plain cross-entropy)

    public static func named(_ name: String) -> Reweighting? {
        switch name {
        case "none": return Reweighting.none
        case "edm": return .edm
        case "iddpm": return .iddpm
        case "sigmoid": return .sigmoid(k: 0)
        case "fm": return .fm
        case "simple": return .simple
        default:
            // "sigmoid:K" sets k.
            if name.hasPrefix("sigmoid:"), let k = Double(name.dropFirst("sigmoid:".count)) { return .sigmoid(k: k) }
            return nil
        }
    }

    public var name: String {
        switch self {
        case .none: return "none"
        case .edm: return "edm"
        case .iddpm: return "iddpm"
        case .sigmoid(let k): return k == 0 ? "sigmoid" : "sigmoid:\(k)"
        case .fm: return "fm"
        case .simple: return "simple"
        }
    }

    /// log-SNR λ = log(α/(1−α)) with α = 1 − p.
    public static func logSNR(p: Double) -> Double { Foundation.log((1 - p) / p) }

    /// w for a block with move chance p and dp/dt = dpdt.
    public func weight(p: Double, dpdt: Double) -> Double {
        let lam = Reweighting.logSNR(p: p)
        switch self {
        case .none: return 1
        case .edm:
            let mu = 2.4, s = 2.4
            let pdf = exp(-(lam - mu) * (lam - mu) / (2 * s * s)) / (2 * Double.pi * s * s).squareRoot()
            return pdf * (exp(-lam) + 0.25) / 0.25
        case .iddpm: return 1 / cosh(lam / 2)
        case .sigmoid(let k): return 1 / (1 + exp(-(-lam + k)))
        case .fm: return exp(-lam / 2)
        case .simple:
            // α' = −p', so −(1−α)/α' = p/p'.
            return p / dpdt
        }
    }
}
