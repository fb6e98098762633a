// `--shard i/n`: the part i of n of a job array. Records (sample ids, sequence batches) are dealt round-robin,
// item k to shard k mod n, so every shard gets an even share and the union of the shards is the whole input.
// Shard outputs combine without re-running anything: streams concatenate (`cat`), score JSONs merge with
// `score merge` (Scoring/ScoreMerge.swift).
import Foundation

public struct Shard: Equatable, Sendable, CustomStringConvertible {
    public let index: Int
    public let count: Int
    public static let whole = Shard(index: 0, count: 1)

    public init(index: Int, count: Int) {
        precondition(count >= 1 && index >= 0 && index < count)
        self.index = index; self.count = count
    }

    /// Parses "i/n" (0 ≤ i < n); nil → the whole input.
    public static func parse(_ s: String?) throws -> Shard {
        guard let s else { return .whole }
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else {
            throw UsageError("--shard must be i/n with 0 ≤ i < n (got \(s))")
        }
        return Shard(index: i, count: n)
    }

    public func contains(_ k: UInt64) -> Bool { Int(k % UInt64(count)) == index }
    public func contains(_ k: Int) -> Bool { k % count == index }
    public var description: String { "\(index)/\(count)" }
}
