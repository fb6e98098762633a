// A request whose buffers cannot fit in this machine's memory is refused with the option to lower, before the
// allocation (which would abort the process, or bring the machine to its knees swapping). Callers pass a lower
// bound of what they are about to allocate (e.g. the logits and one activation of a DiT), so a refusal is never
// wrong; sizes in between are left to the allocator.
import Foundation

/// Physical memory of this machine in bytes (0 if unknown).
public var physicalMemoryBytes: Double {
    let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
    return pages > 0 && size > 0 ? Double(pages) * Double(size) : 0
}

/// Throws a UsageError when `bytes` (a lower bound of what `what` needs) exceeds the machine's memory.
public func requireMemory(_ bytes: Double, for what: String, fix: String) throws {
    let ram = physicalMemoryBytes
    guard ram > 0, bytes > ram else { return }
    let gib = { (b: Double) in String(format: "%.1f GiB", b / 1_073_741_824) }
    throw UsageError("\(what) needs at least \(gib(bytes)), more than this machine's \(gib(ram)) of memory: \(fix)")
}

/// Asks for transparent huge pages (2 MB) on the whole 2 MB-aligned pages inside [p, p + bytes), before they are
/// first touched: the weights are streamed once per sampling forward, and with 4 KB pages every 4 KB of a matrix
/// costs a TLB miss (with THP in "madvise" mode, the default of many distributions, nothing is huge unless asked).
/// A hint only: without THP support, or on other systems, nothing changes.
func adviseHugePages(_ p: UnsafeMutableRawPointer, bytes: Int) {
    #if os(Linux)
    let huge = 2 << 20
    let start = (Int(bitPattern: p) + huge - 1) / huge * huge, end = (Int(bitPattern: p) + bytes) / huge * huge
    if end > start { _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, 14 /* MADV_HUGEPAGE */) }
    #endif
}

/// Zeroed floats at a 64-byte (cache-line) boundary. The vector kernels load 32 bytes at a time: from the
/// allocator's usual 16-byte boundary every other load of a row straddles two cache lines, which cost the attention
/// over the cache 12–25 % (bench/sampling/attend.c, aligned against shifted by 16 bytes). Free with freeAligned.
func alignedFloats(_ n: Int) -> UnsafeMutableBufferPointer<Float> {
    let raw = UnsafeMutableRawPointer.allocate(byteCount: max(n, 1) * MemoryLayout<Float>.stride, alignment: 64)
    let b = UnsafeMutableBufferPointer(start: raw.bindMemory(to: Float.self, capacity: max(n, 1)), count: max(n, 1))
    b.initialize(repeating: 0)
    return b
}

func freeAligned(_ b: UnsafeMutableBufferPointer<Float>) { UnsafeMutableRawPointer(b.baseAddress!).deallocate() }
