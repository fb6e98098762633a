import Foundation

/// Encodes batches of documents on several threads; the result is identical to encoding each
/// document alone, in input order, whatever the thread count.
///
/// Work is cut into pieces of roughly equal bytes: whole documents, and big documents cut at
/// "safe" points — just after a "\n" that sits between two printable ASCII non-space bytes
/// ("x\nY"). There the pre-tokenizer makes "\n" a piece of its own both in the whole document
/// and in either part (a whitespace run of one scalar before a non-space; at the end of the
/// first part the run is still just "\n"), and the next piece starts afresh after it — so the
/// cut changes no id. (After " \n" it would not be safe: at the end of a part the whole run
/// " \n" is one piece, in the whole document it is " " + "\n".)
public final class ParallelEncoder {
    public let tokenizer: BPETokenizer
    public let threads: Int
    private let encoders: [BPEEncoder]

    public init(_ tokenizer: BPETokenizer, threads: Int) {
        self.tokenizer = tokenizer
        self.threads = max(1, threads)
        encoders = (0..<max(1, threads)).map { _ in tokenizer.makeEncoder() }
    }

    /// Offsets where `doc` may be cut, about `target` bytes apart (always includes 0 and count).
    static func safeCuts(_ doc: [UInt8], target: Int) -> [Int] {
        var cuts = [0]
        var e = target
        while e < doc.count {
            while e < doc.count && !isSafeCut(doc, e) { e += 1 }
            if e < doc.count { cuts.append(e) }
            e += target
        }
        cuts.append(doc.count)
        return cuts
    }

    @inline(__always)
    static func isSafeCut(_ doc: [UInt8], _ e: Int) -> Bool {
        e >= 2 && doc[e - 1] == 0x0A && doc[e] > 0x20 && doc[e] < 0x7F && doc[e - 2] > 0x20 && doc[e - 2] < 0x7F
    }

    public func encode(_ docs: [[UInt8]]) -> [[Int32]] {
        if threads == 1 { return docs.map { encoders[0].encode($0) } }
        let total = docs.reduce(0) { $0 + $1.count }
        let target = max(64 << 10, total / (threads * 8) + 1)
        // Work items: (document, byte range).
        var items = [(doc: Int, range: Range<Int>)]()
        for (d, doc) in docs.enumerated() {
            if doc.count > 2 * target {
                let cuts = ParallelEncoder.safeCuts(doc, target: target)
                for k in 0..<(cuts.count - 1) { items.append((d, cuts[k]..<cuts[k + 1])) }
            } else {
                items.append((d, 0..<doc.count))
            }
        }
        // Contiguous runs of items of about equal bytes per thread.
        var bounds = [0]
        var acc = 0, perThread = (total + threads - 1) / threads
        if perThread == 0 { perThread = 1 }
        for (k, it) in items.enumerated() {
            acc += it.range.count
            if acc >= perThread * bounds.count && bounds.count < threads { bounds.append(k + 1) }
        }
        while bounds.count <= threads { bounds.append(items.count) }
        var parts = [[Int32]](repeating: [], count: items.count)
        parts.withUnsafeMutableBufferPointer { out in
            parallelFor(threads) { t in
                let enc = encoders[t]
                for k in bounds[t]..<bounds[t + 1] {
                    let it = items[k]
                    var ids = [Int32]()
                    ids.reserveCapacity(it.range.count / 3 + 1)
                    docs[it.doc].withUnsafeBufferPointer { bp in
                        if let base = bp.baseAddress { enc.encode(base + it.range.lowerBound, count: it.range.count, into: &ids) }
                    }
                    out[k] = ids
                }
            }
        }
        var result = [[Int32]](repeating: [], count: docs.count)
        for (k, it) in items.enumerated() { result[it.doc] += parts[k] }
        return result
    }
}
