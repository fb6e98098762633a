import Foundation

// Byte-level BPE tokenizer (GPT-2 family), compatible with HF `tokenizers` `tokenizer.json`.
//
// Public API:
//   BPETokenizer.load(path:)              HF tokenizer.json (byte-level BPE) → tokenizer
//   tokenizer.encode(_ bytes) -> [Int32]  pre-tokenize (PreTokenizer) + BPE; no specials added.
//                                          Special-token text such as "<|endoftext|>" in the input
//                                          is encoded as ordinary text (like tiktoken's
//                                          encode_ordinary; HF would emit the special id there).
//   tokenizer.decode(_ ids) -> [UInt8]    concatenated token bytes; a special decodes to its name.
//   tokenizer.makeEncoder()               a per-thread encoder with its own piece cache.
//   vocabSize, fingerprint, special*, merges, tokenBytes, specialTokens
//
// Id layout of tokenizers we train (`BPETrainer`) with vocab size N:
//   0…255 the 256 bytes in GPT-2/HF order (sorted by their ByteLevel stand-in character),
//   256…N-4 merge results in merge order, N-3 "<|endoftext|>" (BOS = EOS), N-2 "[PAD]",
//   N-1 "[MASK]". Imported GPT-2: ids as GPT-2, "[MASK]" appended (50257), pad = eos.
//
// BPE semantics (HF `tokenizers` BPE model): inside one pre-token, repeatedly apply the adjacent
// pair with the lowest merge rank, the leftmost one among equals, until no pair has a merge.

public struct BPESpecialToken: Equatable {
    public var name: String
    public var id: Int32
}

public final class BPETokenizer {
    /// id → bytes (for a special token: the UTF-8 of its name).
    public let tokenBytes: [[UInt8]]
    /// Merges in rank order: (left id, right id) → result id.
    public let merges: [(left: Int32, right: Int32, result: Int32)]
    public let specialTokens: [BPESpecialToken]
    public var vocabSize: Int { tokenBytes.count }
    public let bosId: Int32, eosId: Int32, padId: Int32, maskId: Int32   // -1 = absent
    public private(set) var fingerprint: UInt64 = 0
    /// The ids a token stream header records: bos = eos = "<|endoftext|>", mask, pad.
    public var special: SpecialTokens { SpecialTokens(bos: bosId, eos: eosId, mask: maskId, pad: padId) }

    public static let endOfText = "<|endoftext|>", padName = "[PAD]", maskName = "[MASK]"

    let byteToId: [Int32]
    let pairs: PairTable
    let isSpecial: [Bool]

    /// - tokens: bytes of every id (specials: name bytes); specials: which ids are special;
    ///   merges: (left, right) pairs in rank order — each result is looked up by its bytes.
    public init(tokens: [[UInt8]], merges mergePairs: [(Int32, Int32)], specials: [BPESpecialToken]) throws {
        tokenBytes = tokens
        specialTokens = specials
        var special = [Bool](repeating: false, count: tokens.count)
        for s in specials {
            guard s.id >= 0 && Int(s.id) < tokens.count else { throw ToolError("special token \(s.name) has id \(s.id) outside the vocabulary (0..<\(tokens.count))") }
            special[Int(s.id)] = true
        }
        isSpecial = special
        // Ordinary tokens by bytes.
        var table = ByteStringTable(capacity: tokens.count)
        var idOfIndex = [Int32]()
        for (id, bytes) in tokens.enumerated() where !special[id] {
            guard !bytes.isEmpty else { throw ToolError("token \(id) is empty") }
            let (index, inserted) = bytes.withUnsafeBufferPointer { b in
                table.insert(b.baseAddress!, b.count, hash: hashBytes(b.baseAddress!, b.count))
            }
            guard inserted else { throw ToolError("tokens \(idOfIndex[index]) and \(id) have the same bytes") }
            idOfIndex.append(Int32(id))
        }
        func lookup(_ bytes: [UInt8]) -> Int32? {
            bytes.withUnsafeBufferPointer { b in
                let i = table.find(b.baseAddress!, b.count, hash: hashBytes(b.baseAddress!, b.count))
                return i < 0 ? nil : idOfIndex[i]
            }
        }
        var b2i = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            guard let id = lookup([UInt8(b)]) else { throw ToolError("the vocabulary has no token for byte 0x\(String(b, radix: 16)); not a byte-level BPE vocabulary") }
            b2i[b] = id
        }
        byteToId = b2i
        var pt = PairTable(capacity: max(mergePairs.count, 1))
        var ms = [(left: Int32, right: Int32, result: Int32)]()
        ms.reserveCapacity(mergePairs.count)
        for (rank, (a, b)) in mergePairs.enumerated() {
            guard a >= 0, b >= 0, Int(a) < tokens.count, Int(b) < tokens.count, !special[Int(a)], !special[Int(b)] else {
                throw ToolError("merge \(rank) refers to an unknown or special token")
            }
            guard let r = lookup(tokens[Int(a)] + tokens[Int(b)]) else {
                throw ToolError("merge \(rank) (\(a), \(b)) produces a token missing from the vocabulary")
            }
            pt.insert(a, b, rank: Int32(rank), result: r)
            ms.append((a, b, r))
        }
        pairs = pt
        merges = ms
        func idNamed(_ name: String) -> Int32 { specials.first { $0.name == name }?.id ?? -1 }
        eosId = idNamed(BPETokenizer.endOfText)
        bosId = eosId
        let pad = idNamed(BPETokenizer.padName)
        padId = pad >= 0 ? pad : eosId
        maskId = idNamed(BPETokenizer.maskName)
        fingerprint = computeFingerprint()
    }

    // MARK: fingerprint

    /// FNV-1a 64 over a canonical serialisation: "bd3-bpe-1", vocab size, every token's
    /// (special flag, length, bytes) in id order, merges as (left, right) u32 pairs in rank
    /// order, then the specials (name length, name, id). Integers little-endian u32.
    func computeFingerprint() -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        func byte(_ b: UInt8) { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        func u32(_ v: Int) { let x = UInt32(truncatingIfNeeded: v); for k in 0..<4 { byte(UInt8(truncatingIfNeeded: x >> (8 * k))) } }
        for b in Array("bd3-bpe-1".utf8) { byte(b) }
        u32(tokenBytes.count)
        for (id, t) in tokenBytes.enumerated() {
            byte(isSpecial[id] ? 1 : 0); u32(t.count); for b in t { byte(b) }
        }
        u32(merges.count)
        for m in merges { u32(Int(m.left)); u32(Int(m.right)) }
        u32(specialTokens.count)
        for s in specialTokens { let n = Array(s.name.utf8); u32(n.count); for b in n { byte(b) }; u32(Int(s.id)) }
        return h
    }

    // MARK: encode / decode

    private let sharedLock = NSLock()
    private lazy var sharedEncoder = makeEncoder()

    /// Encodes bytes (any bytes; invalid UTF-8 included). Thread-safe; for parallel work give
    /// each thread its own `makeEncoder()`.
    public func encode(_ bytes: [UInt8]) -> [Int32] {
        sharedLock.lock(); defer { sharedLock.unlock() }
        return sharedEncoder.encode(bytes)
    }

    public func makeEncoder() -> BPEEncoder { BPEEncoder(self) }

    /// True iff every id is in 0..<vocabSize.
    public func isValid(_ ids: [Int32]) -> Bool { ids.allSatisfy { $0 >= 0 && Int($0) < tokenBytes.count } }

    /// Concatenated bytes of the ids (out-of-range ids are skipped: check with `isValid` first).
    public func decode(_ ids: [Int32]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(ids.count * 4)
        for id in ids where id >= 0 && Int(id) < tokenBytes.count { out.append(contentsOf: tokenBytes[Int(id)]) }
        return out
    }

    /// The byte-level string of an id (its vocab key), or the special's name.
    public func tokenString(_ id: Int32) -> String {
        isSpecial[Int(id)] ? String(decoding: tokenBytes[Int(id)], as: UTF8.self) : ByteLevel.string(for: tokenBytes[Int(id)])
    }
}

/// Encoder state for one thread: scratch buffers and a cache from pre-token bytes to ids.
public final class BPEEncoder {
    let tok: BPETokenizer
    private var cache = ByteStringTable(capacity: 1 << 14)
    private var cacheStart: [Int32] = [0]     // cache index → offset in cacheIds (+ sentinel)
    private var cacheIds: [Int32] = []
    private var symbols: [Int32] = []
    private var ranks: [Int32] = []
    static let cacheLimit = 1 << 18           // entries; the cache is emptied when full
    static let cacheMaxPiece = 256            // longer pieces are not cached
    static let heapThreshold = 48             // pieces with more bytes use the heap merger

    init(_ tok: BPETokenizer) { self.tok = tok }

    public func encode(_ bytes: [UInt8]) -> [Int32] {
        var out = [Int32]()
        out.reserveCapacity(bytes.count / 3 + 1)
        bytes.withUnsafeBufferPointer { bp in
            guard let base = bp.baseAddress else { return }
            encode(base, count: bp.count, into: &out)
        }
        return out
    }

    public func encode(_ p: UnsafePointer<UInt8>, count n: Int, into out: inout [Int32]) {
        PreTokenizer.split(p, count: n) { s, e in
            encodePiece(p + s, e - s, into: &out)
        }
    }

    @inline(__always)
    func encodePiece(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32]) {
        if n == 1 { out.append(tok.byteToId[Int(p[0])]); return }
        let cacheable = n <= BPEEncoder.cacheMaxPiece
        var h: UInt64 = 0
        if cacheable {
            h = hashBytes(p, n)
            let idx = cache.find(p, n, hash: h)
            if idx >= 0 {
                let s = Int(cacheStart[idx]), e = Int(cacheStart[idx + 1])
                cacheIds.withUnsafeBufferPointer { out.append(contentsOf: UnsafeBufferPointer(rebasing: $0[s..<e])) }
                return
            }
        }
        symbols.removeAll(keepingCapacity: true)
        for k in 0..<n { symbols.append(tok.byteToId[Int(p[k])]) }
        if n > BPEEncoder.heapThreshold { mergeWithHeap(&symbols) } else { mergeNaive(&symbols) }
        out.append(contentsOf: symbols)
        if cacheable {
            if cache.count >= BPEEncoder.cacheLimit {
                cache.removeAll(); cacheStart = [0]; cacheIds.removeAll(keepingCapacity: true)
            }
            _ = cache.insert(p, n, hash: h)
            cacheIds.append(contentsOf: symbols)
            cacheStart.append(Int32(cacheIds.count))
        }
    }

    /// Short pieces: keep the rank of every adjacent pair; repeatedly merge the lowest (leftmost
    /// among equals). O(n²) but n is small and only neighbours are looked up again.
    func mergeNaive(_ sym: inout [Int32]) {
        let pairs = tok.pairs
        ranks.removeAll(keepingCapacity: true)
        for i in 0..<(sym.count - 1) { ranks.append(pairs.lookup(sym[i], sym[i + 1]).rank) }
        while sym.count > 1 {
            var best = Int32.max, at = -1
            for i in 0..<ranks.count where ranks[i] < best { best = ranks[i]; at = i }
            if at < 0 { break }
            sym[at] = pairs.lookup(sym[at], sym[at + 1]).result
            sym.remove(at: at + 1)
            ranks.remove(at: at)
            if at > 0 { ranks[at - 1] = pairs.lookup(sym[at - 1], sym[at]).rank }
            if at < ranks.count { ranks[at] = pairs.lookup(sym[at], sym[at + 1]).rank }
        }
    }

    /// Long pieces: doubly linked symbols and a binary min-heap of (rank, position); stale heap
    /// entries are skipped when popped. Same result as `mergeNaive` (lowest rank, then leftmost).
    func mergeWithHeap(_ sym: inout [Int32]) {
        let pairs = tok.pairs
        let n = sym.count
        var next = [Int](0..<n).map { $0 + 1 }     // n = end
        var prev = [Int](0..<n).map { $0 - 1 }
        var alive = [Bool](repeating: true, count: n)
        var heap = [UInt64]()                       // rank << 32 | position
        heap.reserveCapacity(n)
        func push(_ v: UInt64) {
            heap.append(v)
            var i = heap.count - 1
            while i > 0 { let p = (i - 1) / 2; if heap[p] <= heap[i] { break }; heap.swapAt(p, i); i = p }
        }
        func pop() -> UInt64 {
            let top = heap[0]
            let last = heap.removeLast()
            if !heap.isEmpty {
                heap[0] = last
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var m = i
                    if l < heap.count && heap[l] < heap[m] { m = l }
                    if r < heap.count && heap[r] < heap[m] { m = r }
                    if m == i { break }
                    heap.swapAt(i, m); i = m
                }
            }
            return top
        }
        func pushPair(_ i: Int) {
            let j = next[i]
            guard j < n else { return }
            let r = pairs.lookup(sym[i], sym[j]).rank
            if r != Int32.max { push(UInt64(UInt32(r)) << 32 | UInt64(i)) }
        }
        for i in 0..<(n - 1) { pushPair(i) }
        while !heap.isEmpty {
            let top = pop()
            let rank = Int32(top >> 32), i = Int(top & 0xFFFF_FFFF)
            guard alive[i], next[i] < n else { continue }
            let j = next[i]
            let m = pairs.lookup(sym[i], sym[j])
            guard m.rank == rank else { continue }   // the pair here changed since the push
            sym[i] = m.result
            alive[j] = false
            next[i] = next[j]
            if next[j] < n { prev[next[j]] = i }
            if prev[i] >= 0 { pushPair(prev[i]) }
            pushPair(i)
        }
        var out = [Int32]()
        out.reserveCapacity(n)
        var i = 0
        while i < n { out.append(sym[i]); i = next[i] }
        sym = out
    }
}
