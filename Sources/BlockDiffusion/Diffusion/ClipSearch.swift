// Data-driven clipping (spec §2.6): a grid of intervals U[β, ω], the Var-NELBO of each measured on
// validation batches, and the argmin interval used for further training.

public enum ClipSearch {
    /// The reference grid (`Metrics.init_valid_vars`). For L' > 1: the base (1e-3, 1), then for each
    /// width w, i over torch.arange(0, 1−w+δ, δ) in float32, the interval
    /// (max(i, 1e-3), max(i+w, 1e-3)) rounded to float32 as the reference's `.item()` does.
    /// For L' = 1: {(1e-3, 1), (1, 1)}. Order is insertion order; duplicates are dropped.
    public static func grid(blockSize: Int, widths: [Double] = [0.5, 0.6, 0.7, 0.8, 0.9],
                            delta: Double = 0.05, eps: Double = 1e-3) -> [ClipInterval] {
        if blockSize == 1 { return [ClipInterval(eps, 1), .tuned] }
        var out = [ClipInterval(eps, 1)]
        for w in widths {
            // torch.arange with Python-float bounds: length ceil((end−start)/step) computed in double,
            // values start + k·step computed in double then stored as float32.
            let end = 1 - w + delta
            let n = Int((end / delta).rounded(.up))
            let eps32 = Float(eps)
            for k in 0..<n {
                let i = Float(Double(k) * delta)
                let lo = Swift.max(i, eps32)
                let hi = Swift.max(i + Float(w), eps32)
                let c = ClipInterval(Double(lo), Double(hi))
                if !out.contains(c) { out.append(c) }
            }
        }
        return out
    }

    /// The interval whose Var-NELBO is smallest (first one on ties, like the reference's strict `<`).
    public static func best(_ stats: [(ClipInterval, VarianceAccumulator)]) -> ClipInterval? {
        var best: ClipInterval? = nil
        var bestSum = Double.infinity
        for (c, acc) in stats where acc.batches > 0 && acc.sum < bestSum {
            bestSum = acc.sum; best = c
        }
        return best
    }
}

/// Σ over batches of the unbiased variance of the (B·nb) per-block mean losses; Var-NELBO = Σ/batches.
/// (The reference selects by the sum; with the same batch count per interval that is the same argmin.)
/// A batch with a single block (one sequence at L' = L, typically the last validation batch) has no
/// variance: it is left out rather than turning the whole mean into NaN (torch's `.var()` of one value).
public struct VarianceAccumulator: Equatable, Sendable {
    public var sum = 0.0
    public var batches = 0
    public init() {}

    public mutating func add(blockMeans: [Double]) {
        guard blockMeans.count > 1 else { return }
        batches += 1
        sum += VarianceAccumulator.unbiasedVariance(blockMeans)
    }

    public var varNELBO: Double { batches > 0 ? sum / Double(batches) : .nan }

    /// torch `.var()` (Bessel-corrected); NaN for fewer than 2 elements, as torch.
    public static func unbiasedVariance(_ x: [Double]) -> Double {
        guard x.count > 1 else { return .nan }
        let mean = x.reduce(0, +) / Double(x.count)
        var ss = 0.0
        for v in x { ss += (v - mean) * (v - mean) }
        return ss / Double(x.count - 1)
    }
}
