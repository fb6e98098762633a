// Unmasking policies: which masked positions of the current block get a token at a step (`--unmask`).
//
//   random        today's samplers: first-hitting picks one uniformly random masked position per forward, DDPM
//                 unmasks each masked position with probability 1 − s/t (BlockSampler's own loops).
//   confidence    the k positions with the largest top-1 probability max_v p(v)
//   margin        the k positions with the largest top-1 − top-2 probability gap
//   entropy       the k positions with the smallest entropy H(p) = −Σ p ln p
//   threshold:τ   every position whose top-1 probability exceeds τ; at least the most confident one (parallel
//                 decoding of Fast-dLLM: NFE adapts to how sure the model is)
//   eb:γ          entropy-bounded: positions in order of increasing entropy, the largest prefix U with
//                 Σ_U H − max_U H ≤ γ (Ben-Hamu et al.'s EB-sampler; the first position always qualifies)
//
// Scores are taken on p after the SUBS softmax and nucleus, the distribution the token is drawn from. Ties rank
// the lower position first. k comes from the step schedule (`stepCounts`): first-hitting → 1 per forward,
// DDPM with T steps → the block's n masks split as evenly as possible over T steps (steps with k = 0 cost no
// forward). threshold/eb ignore the schedule. The chosen positions then draw their tokens by Gumbel-max from
// p in position order, from the canvas's own generator (so results do not depend on the batch), and the
// recorded snapshot confidence is p(chosen token), the same as for `random`.
//
// Public API:
//   UnmaskPolicy (.random, .confidence, .margin, .entropy, .threshold(τ), .entropyBounded(γ)), UnmaskPolicy.parse
//   PositionScore(p:) (top1, margin, entropy), topTwoMargin(_:), selectPositions(_:policy:k:) -> [Int], stepCounts(masked:steps:)
import Foundation

public enum UnmaskPolicy: Equatable, Sendable, CustomStringConvertible {
    case random, confidence, margin, entropy
    case threshold(Double)
    case entropyBounded(Double)

    /// `random|confidence|margin|entropy|threshold:τ|eb:γ`; τ in [0, 1), γ ≥ 0.
    public static func parse(_ s: String) throws -> UnmaskPolicy {
        switch s {
        case "random": return .random
        case "confidence": return .confidence
        case "margin": return .margin
        case "entropy": return .entropy
        default: break
        }
        let parts = s.split(separator: ":", maxSplits: 1).map(String.init)
        if parts.count == 2, let x = Double(parts[1]), x.isFinite {
            if parts[0] == "threshold" {
                guard x >= 0 && x < 1 else { throw UsageError("--unmask threshold:τ needs 0 ≤ τ < 1 (got \(parts[1]))") }
                return .threshold(x)
            }
            if parts[0] == "eb" {
                guard x >= 0 else { throw UsageError("--unmask eb:γ needs γ ≥ 0 (got \(parts[1]))") }
                return .entropyBounded(x)
            }
        }
        throw UsageError("--unmask must be random, confidence, margin, entropy, threshold:τ or eb:γ (got '\(s)')")
    }

    public var description: String {
        switch self {
        case .random: return "random"
        case .confidence: return "confidence"
        case .margin: return "margin"
        case .entropy: return "entropy"
        case .threshold(let t): return "threshold:\(t)"
        case .entropyBounded(let g): return "eb:\(g)"
        }
    }

    /// Adaptive policies choose how many positions per step themselves (no step schedule).
    public var isAdaptive: Bool {
        switch self { case .threshold, .entropyBounded: return true; default: return false }
    }
}

/// What the policies rank one masked position by.
public struct PositionScore: Equatable, Sendable {
    public var position: Int
    public var top1: Double
    public var margin: Double
    public var entropy: Double

    public init(position: Int, top1: Double, margin: Double, entropy: Double) {
        self.position = position; self.top1 = top1; self.margin = margin; self.entropy = entropy
    }

    /// Scores of a probability vector (zeros contribute nothing to the entropy).
    public init(position: Int, p: [Double]) {
        var a = 0.0, b = 0.0, h = 0.0
        for x in p where x > 0 {
            if x > a { b = a; a = x } else if x > b { b = x }
            h -= x * log(x)
        }
        self.init(position: position, top1: a, margin: a - b, entropy: h)
    }
}

/// top-1 − top-2 of p (the snapshot margin), without the entropy's logarithms.
public func topTwoMargin(_ p: [Double]) -> Double {
    var a = 0.0, b = 0.0
    for x in p { if x > a { b = a; a = x } else if x > b { b = x } }
    return a - b
}

/// The positions to unmask this step (sorted ascending). `k` is the schedule's count (clamped to 1 ... n);
/// adaptive policies ignore it. Never empty when `scores` is not; never called with `.random`.
public func selectPositions(_ scores: [PositionScore], policy: UnmaskPolicy, k: Int) -> [Int] {
    guard !scores.isEmpty else { return [] }
    // "better first": a strict order with the lower position winning ties.
    func ranked(_ better: (PositionScore, PositionScore) -> Bool?) -> [PositionScore] {
        scores.sorted { x, y in better(x, y) ?? (x.position < y.position) }
    }
    let n = max(1, min(k, scores.count))
    var chosen: [PositionScore]
    switch policy {
    case .random:
        preconditionFailure("the random policy is sampled by BlockSampler's own loops")
    case .confidence:
        chosen = Array(ranked { $0.top1 != $1.top1 ? $0.top1 > $1.top1 : nil }.prefix(n))
    case .margin:
        chosen = Array(ranked { $0.margin != $1.margin ? $0.margin > $1.margin : nil }.prefix(n))
    case .entropy:
        chosen = Array(ranked { $0.entropy != $1.entropy ? $0.entropy < $1.entropy : nil }.prefix(n))
    case .threshold(let tau):
        let order = ranked { $0.top1 != $1.top1 ? $0.top1 > $1.top1 : nil }
        chosen = order.filter { $0.top1 > tau }
        if chosen.isEmpty { chosen = [order[0]] }
    case .entropyBounded(let gamma):
        let order = ranked { $0.entropy != $1.entropy ? $0.entropy < $1.entropy : nil }
        chosen = [order[0]]
        var sum = order[0].entropy
        for s in order.dropFirst() {
            // Sorted ascending, so the newcomer is the maximum: Σ H − max H = the sum before it.
            if sum > gamma { break }
            chosen.append(s); sum += s.entropy
        }
    }
    return chosen.map(\.position).sorted()
}

/// Tokens unmasked at each step of a block holding `masked` masks: `steps` = nil (first-hitting) → one per step;
/// T steps → ⌊n(i+1)/T⌋ − ⌊n·i/T⌋ (n spread evenly; when T > n some steps are 0 and cost nothing).
public func stepCounts(masked n: Int, steps: Int?) -> [Int] {
    guard n > 0 else { return [] }
    guard let T = steps, T >= 1 else { return [Int](repeating: 1, count: n) }
    return (0..<T).map { i in n * (i + 1) / T - n * i / T }
}
