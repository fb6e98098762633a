// The one place draft's and refine's options are checked (exit 64 on failure). The tools call validate()
// while parsing; runDraft / runSEDDDraft / runRefine call it again, so a library caller gets the same rules.
// Checks that need the checkpoint (the block size divides the length, the prompt fits) stay in
// resolveDraftSettings / runRefine.
import Foundation

/// "i/n" with 0 ≤ i < n: the samples (or records) with id % n == i.
public func parseShard(_ text: String) throws -> (index: Int, count: Int) {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else {
        throw UsageError("--shard must be i/n with 0 ≤ i < n, e.g. 0/4 (got \(text))")
    }
    return (i, n)
}

func checkSamplerSettings(steps: Int, nucleus: Double, batch: Int?, blockSize: Int?) throws {
    try checkRange(steps, 1...Limits.steps, "--steps")
    guard nucleus > 0 && nucleus <= 1 else { throw UsageError("--nucleus must be in (0, 1]; 1 = off (got \(nucleus))") }
    if let batch { try checkRange(batch, 1...Limits.batch, "--batch") }
    if let b = blockSize { try checkRange(b, 1...Limits.length, "--block-size") }
}

extension DraftOptions {
    public func validate() throws {
        try checkRange(samples, 1...Limits.count, "-n")
        try checkRange(length, 1...Limits.length, variableLength ? "--max-length" : "--length")
        try checkSamplerSettings(steps: steps, nucleus: nucleus, batch: batch, blockSize: blockSize)
        guard shard.count >= 1 && shard.index >= 0 && shard.index < shard.count else {
            throw UsageError("--shard must be i/n with 0 ≤ i < n (got \(shard.index)/\(shard.count))")
        }
        try checkApproxCache(approxCache, kvCache: kvCache)
    }
}

/// --approx-cache K (draft and refine): 0 = off; it reuses KV-cache entries, so not with --no-kv-cache.
func checkApproxCache(_ k: Int, kvCache: Bool) throws {
    try checkRange(k, 0...Limits.steps, "--approx-cache", "0 = off: exact")
    if !kvCache && k > 0 { throw UsageError("--approx-cache reuses entries of the KV cache; it cannot run with --no-kv-cache") }
}

extension RefineOptions {
    public func validate() throws {
        try checkSamplerSettings(steps: steps, nucleus: nucleus, batch: batch, blockSize: blockSize)
        if !kvCache && dtype != .fp32 { throw UsageError("--no-kv-cache runs the fp32 model (the reference's comparison path); use --dtype fp32 with it") }
        try checkApproxCache(approxCache, kvCache: kvCache)
    }
}

/// The fraction γ of remask.
public func validateRemaskRatio(_ ratio: Double) throws {
    guard ratio >= 0 && ratio <= 1 else { throw UsageError("--ratio must be in [0, 1] (got \(ratio))") }
}
