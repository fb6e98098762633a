// Parallel helpers for the loops that are not BLAS: 2 cores, so work is split into a few chunks, one per
// worker, and each chunk runs sequentially.
import Foundation

/// Number of workers for non-BLAS loops.
let workerCount = max(1, min(ProcessInfo.processInfo.activeProcessorCount, 8))

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

