// Facts a checkpoint may lack, given on the command line: `--algo`, `--block-size`, `--config NAME`,
// `--set key=value` (model sizes and special ids). They fill what the file does not say and must agree with
// what it does say (a mismatch is refused, not silently preferred). Parsing/validation is here; the tools only
// declare the options and pass the raw values to `CheckpointOverrides.parse`.
import Foundation

public struct CheckpointOverrides: Sendable, Equatable {
    public var algorithm: Algorithm? = nil
    public var blockSize: Int? = nil
    /// A named size (`tiny`, `small`, `cpu`): head count, cond dim and length for a bare state_dict.
    public var configName: String? = nil
    /// Validated `--set` values (keys in `keys`).
    public var sets: [String: Int] = [:]
    /// The caller only takes the weights (`train --init`, which trains under its own --algo): `algorithm` is then a
    /// hint, not a claim, and a diffusion state_dict with no algorithm or block size opens as bd3 at L' = L.
    public var forWeights = false
    public init() {}

    /// `--set` keys a checkpoint can take: the sizes shapes cannot tell (n_heads, length) or may (the rest, which
    /// must then agree), and the special ids.
    public static let keys = ["n_heads", "length", "hidden_size", "n_blocks", "cond_dim", "vocab_size",
                              "mask_id", "bos_id", "eos_id", "pad_id"]

    /// Usage errors (exit 64) for malformed values; `sets` entries with other keys are skipped when
    /// `ignoreUnknown` (e.g. `train --set ema=…`, which the trainer parses), refused otherwise.
    public static func parse(algo: String?, blockSize: Int?, config: String?, sets: [String],
                             ignoreUnknown: Bool = false) throws -> CheckpointOverrides {
        var o = CheckpointOverrides()
        if let a = algo {
            guard let x = Algorithm(rawValue: a) else { throw UsageError("--algo '\(a)' is not one of ar, mdlm, bd3, sedd") }
            o.algorithm = x
        }
        if let b = blockSize {
            guard b >= 1 else { throw UsageError("--block-size must be at least 1 (got \(b))") }
            o.blockSize = b
        }
        if let c = config {
            guard ModelConfig.names.contains(c) else {
                throw UsageError("unknown --config '\(c)'; use \(ModelConfig.names.joined(separator: ", "))")
            }
            o.configName = c
        }
        for s in sets {
            guard let eq = s.firstIndex(of: "=") else { throw UsageError("--set takes key=value, got '\(s)'") }
            let k = String(s[..<eq]), v = String(s[s.index(after: eq)...])
            guard keys.contains(k) else {
                if ignoreUnknown { continue }
                throw UsageError("unknown --set key '\(k)' for a checkpoint; known: \(keys.joined(separator: ", "))")
            }
            guard let n = Int(v), n >= 0, n <= 1 << 30 else { throw UsageError("--set \(k)=\(v): expected a whole number ≥ 0") }
            o.sets[k] = n
        }
        return o
    }

    /// The named config's value for a size key (n_heads, cond_dim, length, hidden_size, n_blocks), if any.
    func named(_ key: String, vocabSize: Int) -> Int? {
        guard let n = configName, let c = ModelConfig.named(n, vocabSize: vocabSize) else { return nil }
        switch key {
        case "n_heads": return c.nHeads
        case "cond_dim": return c.condDim
        case "length": return c.length
        case "hidden_size": return c.hiddenSize
        case "n_blocks": return c.nBlocks
        default: return nil
        }
    }
}
