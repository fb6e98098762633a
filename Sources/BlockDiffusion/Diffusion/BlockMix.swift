// Mixed-scale training (seed paper 003 §3.3, Eq. 7–8): the block size L' is a random variable drawn
// per training sequence, so one model learns to draft with small blocks and to refine with the
// global one. L_Mixed(θ) = E_{L'~P}[L_BD(x; θ, L')].
//
//   bimodal:D[,G[,λ]]   P(D) = 1−λ, P(G) = λ; G defaults to the sequence length L (one global block,
//                       MDLM-like), λ to 0.1 (the paper's setting).
//   uniform:S1,S2,…     equal probability for each listed size.
//
// Every size must divide L. A size equal to L uses the block-diffusion layout with one block: the
// noisy half then sees only itself (M_OBC is empty), which is exactly MDLM's full attention over x_t.
//
// Drawing uses the trainer's RNG (saved in checkpoints), one draw per sequence, so a resumed run
// draws the same sizes as an uninterrupted one.
import Foundation

public struct BlockMix: Equatable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable { case bimodal, uniform }
    public let kind: Kind
    /// Distinct sizes; for bimodal [draft, global].
    public let sizes: [Int]
    /// P(sizes[i]); sums to 1.
    public let probabilities: [Double]

    public init(bimodal draft: Int, global: Int, lambda: Double) {
        kind = .bimodal; sizes = [draft, global]; probabilities = [1 - lambda, lambda]
    }
    public init(uniform sizes: [Int]) {
        kind = .uniform; self.sizes = sizes
        probabilities = [Double](repeating: 1 / Double(sizes.count), count: sizes.count)
    }

    /// The drafting size: the bimodal draft size, or the first listed uniform size. It is the
    /// checkpoint's `block_size` (the default of the sampling tools).
    public var draftSize: Int { sizes[0] }
    public var lambda: Double { kind == .bimodal ? probabilities[1] : .nan }

    /// Canonical spelling, stored in checkpoint metadata (`block_mix`) and parsed back by `parse`.
    public var description: String {
        switch kind {
        case .bimodal: return "bimodal:\(sizes[0]),\(sizes[1]),\(exact(probabilities[1]))"
        case .uniform: return "uniform:" + sizes.map(String.init).joined(separator: ",")
        }
    }

    /// Parses `bimodal:D[,G[,λ]]` or `uniform:S1,S2,…` for sequences of `length` tokens.
    /// Usage mistakes (syntax, a size not dividing L, λ outside [0,1], repeated sizes) throw `UsageError`.
    public static func parse(_ spec: String, length L: Int) throws -> BlockMix {
        let usage = "--block-mix takes 'bimodal:DRAFT[,GLOBAL[,LAMBDA]]' (e.g. bimodal:4,\(L),0.1) or 'uniform:S1,S2,...' (e.g. uniform:4,16)"
        guard let colon = spec.firstIndex(of: ":") else { throw UsageError("\(usage); got '\(spec)'") }
        let name = spec[..<colon].lowercased()
        let args = spec[spec.index(after: colon)...].split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        func size(_ s: String) throws -> Int {
            guard let n = Int(s), n >= 1 else { throw UsageError("\(usage); '\(s)' is not a block size ≥ 1") }
            guard L % n == 0 else { throw UsageError("--block-mix: block size \(n) does not divide the sequence length \(L)") }
            return n
        }
        let mix: BlockMix
        switch name {
        case "bimodal":
            guard (1...3).contains(args.count) else { throw UsageError("\(usage); got '\(spec)'") }
            let d = try size(args[0])
            let g = args.count >= 2 ? try size(args[1]) : L
            var lambda = 0.1
            if args.count == 3 {
                guard let x = Double(args[2]), x >= 0, x <= 1 else {
                    throw UsageError("--block-mix: λ '\(args[2])' must be a number in [0, 1]")
                }
                lambda = x
            }
            guard d != g else { throw UsageError("--block-mix: draft and global sizes are both \(d); use --block-size \(d)") }
            mix = BlockMix(bimodal: d, global: g, lambda: lambda)
        case "uniform":
            let s = try args.map(size)
            guard s.count >= 2 else { throw UsageError("--block-mix uniform needs at least two sizes; for one size use --block-size") }
            guard Set(s).count == s.count else { throw UsageError("--block-mix: a size is listed twice in '\(spec)'") }
            mix = BlockMix(uniform: s)
        default:
            throw UsageError("\(usage); unknown distribution '\(name)'")
        }
        return mix
    }

    /// One block size drawn from the mix with `rng` (one uniform double per draw, inverse CDF).
    public func draw(_ rng: inout Xoshiro256) -> Int {
        let u = rng.uniformDouble()
        var c = 0.0
        for (s, p) in zip(sizes, probabilities) {
            c += p
            if u < c { return s }
        }
        // u ≥ Σp only by rounding (or λ = 1 with the last size): the last size with p > 0.
        return sizes[probabilities.lastIndex { $0 > 0 }!]
    }

    /// One draw per sequence of a micro-batch.
    public func draw(count: Int, _ rng: inout Xoshiro256) -> [Int] { (0..<count).map { _ in draw(&rng) } }
}
