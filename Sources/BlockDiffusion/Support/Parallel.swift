// Parallel helpers for the loops that are not BLAS: 2 cores, so work is split into a few chunks, one per
// worker, and each chunk runs sequentially.
import Foundation

/// Number of workers for non-BLAS loops (and the row split of our sgemm calls): `BD3_THREADS` if set, else the
/// cores this process may run on (its CPU affinity, so `mpirun --bind-to core` gives each rank one worker,
/// `taskset -c 0-3` four), at most 8.
let workerCount: Int = {
    if let s = ProcessInfo.processInfo.environment["BD3_THREADS"], let n = Int(s), n >= 1 { return min(n, 64) }
    return max(1, min(allowedCores(), 8))
}()

/// CPUs in this process's affinity mask, from /proc/self/status (Foundation's activeProcessorCount ignores it).
func allowedCores() -> Int {
    if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
       let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") }) {
        // "Cpus_allowed:\tff,ffffffff": a hex mask in comma-separated 32-bit groups.
        let hex = line.dropFirst("Cpus_allowed:".count).filter { $0.isHexDigit }
        let n = hex.reduce(0) { $0 + (Int(String($1), radix: 16) ?? 0).nonzeroBitCount }
        if n > 0 { return min(n, ProcessInfo.processInfo.activeProcessorCount) }
    }
    return ProcessInfo.processInfo.activeProcessorCount
}

/// Runs body(i) for i in 0..<n concurrently (n small: one task per worker, chunking done by callers).
@inline(__always)
func parallelFor(_ n: Int, _ body: (Int) -> Void) {
    if n <= 1 { if n == 1 { body(0) }; return }
    withoutActuallyEscaping(body) { b in
        nonisolated(unsafe) let task = b
        DispatchQueue.concurrentPerform(iterations: n) { i in task(i) }
    }
}

/// Splits 0..<count into ≤ workerCount contiguous chunks of at least `grain` items and runs them in parallel.
@inline(__always)
func parallelChunks(_ count: Int, grain: Int = 16, _ body: (Range<Int>) -> Void) {
    let chunks = max(1, min(workerCount, count / max(grain, 1)))
    if chunks == 1 { body(0..<count); return }
    parallelFor(chunks) { c in
        let lo = count * c / chunks, hi = count * (c + 1) / chunks
        body(lo..<hi)
    }
}

