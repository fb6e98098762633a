// The clipped noise interval U[β, ω] of the seed papers, and the rule that tunes it.
import Foundation

/// A clipped time interval U[β, ω] (`sampling_eps_min`, `sampling_eps_max`).
public struct ClipInterval: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var min: Double
    public var max: Double
    public init(_ min: Double, _ max: Double) { self.min = min; self.max = max }
    /// The unbiased interval (1e-3, 1) of training and NELBO evaluation.
    public static let base = ClipInterval(1e-3, 1)
    /// U[1,1]: all tokens masked, exact NLL for L' = 1.
    public static let tuned = ClipInterval(1, 1)
    public var isTuned: Bool { min >= 1 && max >= 1 }
    public var description: String { "U[\(ClipInterval.fmt(min)), \(ClipInterval.fmt(max))]" }
    static func fmt(_ x: Double) -> String { String(format: "%.3g", x) }

    /// "a,b" of --clip: t ~ U[a, b] with 0 ≤ a ≤ b ≤ 1 (t is a masking time; 1,1 = every token masked).
    public static func parse(_ s: String) throws -> ClipInterval {
        let parts = s.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let a = parts[0], let b = parts[1] else {
            throw UsageError("clip interval '\(s)' must be two numbers 'min,max' (e.g. 0.45,0.95)")
        }
        guard a >= 0, a <= b, b <= 1 else {
            throw UsageError("clip interval '\(s)' must satisfy 0 ≤ min ≤ max ≤ 1 (t is the fraction of masked tokens; e.g. 0.45,0.95)")
        }
        return ClipInterval(a, b)
    }
}

public enum TunedRule: String, Equatable, Sendable {
    case exact       // loss_scale = −1 only for β ≥ 1
    case reference   // loss_scale = −1 for any β > 0.5 (upstream quirk §10.5)
}
