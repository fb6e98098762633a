// Parallel helpers for the loops that are not BLAS: 2 cores, so work is split into a few chunks, one per
// worker, and each chunk runs sequentially. Once an inference engine started the pool of spinning workers
// (startWorkerPool, CKernels bd3pool.h: a cached sampling forward is ~75 loops of 10–500 µs, and waking a
// sleeping thread per loop cost tens of µs each), the chunks run on it; before that (training: its workers
// would spin next to other ranks), and for a loop the pool cannot take (nested in another, or while another
// thread's loop runs), on libdispatch's concurrentPerform.
import Foundation
import CKernels

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

/// Starts the spinning workers (workerCount − 1 besides the calling thread) for every later parallel loop of the
/// process; idempotent. Called by the inference engines (CachedDiT).
func startWorkerPool() { bd3_pool_start(Int32(workerCount - 1)) }

/// Runs body(i) for i in 0..<n concurrently (n small: one task per worker, chunking done by callers).
@inline(__always)
func parallelFor(_ n: Int, _ body: (Int) -> Void) {
    if n <= 1 { if n == 1 { body(0) }; return }
    withoutActuallyEscaping(body) { b in
        var task = b
        let pooled = withUnsafeMutablePointer(to: &task) { p in
            bd3_pool_run(n, { ctx, i in ctx!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(i) }, p) != 0
        }
        if !pooled {
            nonisolated(unsafe) let t = task
            DispatchQueue.concurrentPerform(iterations: n) { i in t(i) }
        }
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

