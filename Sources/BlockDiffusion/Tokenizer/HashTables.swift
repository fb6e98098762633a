import Foundation

// Two small open-addressing hash tables for the tokenizer's hot paths (Swift's Dictionary
// with [UInt8] keys allocates and hashes through generic code; these do neither).

/// 64-bit hash of a byte string: 8 bytes at a time, multiply–xorshift mixing.
@inline(__always)
func hashBytes(_ p: UnsafeRawPointer, _ n: Int) -> UInt64 {
    var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: n)
    var i = 0
    while i + 8 <= n {
        let w = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        h = (h ^ w) &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 32
        i += 8
    }
    if i < n {
        var w: UInt64 = 0
        var shift: UInt64 = 0
        while i < n { w |= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << shift; shift += 8; i += 1 }
        h = (h ^ w) &* 0xC4CE_B9FE_1A85_EC53
    }
    h ^= h >> 29
    h = h &* 0xFF51_AFD7_ED55_8CCD
    h ^= h >> 32
    return h
}

/// Interns byte strings: each distinct string gets the next index 0, 1, 2, …; the bytes are kept
/// in one arena. `find` / `insert` never allocate per key.
struct ByteStringTable {
    private(set) var arena: [UInt8] = []
    private(set) var starts: [Int] = []      // index → arena offset; count+1 entries (sentinel)
    private var slots: [Int32]               // -1 empty, else index
    private var hashes: [UInt64] = []        // index → hash
    private var mask: Int

    init(capacity: Int = 1024) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
        starts = [0]
    }

    var count: Int { starts.count - 1 }

    func key(_ index: Int) -> ArraySlice<UInt8> { arena[starts[index]..<starts[index + 1]] }

    @inline(__always)
    private func equal(_ index: Int, _ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        let s = starts[index]
        guard starts[index + 1] - s == n else { return false }
        return arena.withUnsafeBufferPointer { a in memcmp(a.baseAddress! + s, p, n) == 0 }
    }

    /// Index of the string, or -1.
    @inline(__always)
    func find(_ p: UnsafePointer<UInt8>, _ n: Int, hash h: UInt64) -> Int {
        var slot = Int(truncatingIfNeeded: h) & mask
        while true {
            let idx = Int(slots[slot])
            if idx < 0 { return -1 }
            if hashes[idx] == h && equal(idx, p, n) { return idx }
            slot = (slot + 1) & mask
        }
    }

    /// Index of the string, inserting it if absent; `inserted` tells which.
    @inline(__always)
    mutating func insert(_ p: UnsafePointer<UInt8>, _ n: Int, hash h: UInt64) -> (index: Int, inserted: Bool) {
        var slot = Int(truncatingIfNeeded: h) & mask
        while true {
            let idx = Int(slots[slot])
            if idx < 0 { break }
            if hashes[idx] == h && equal(idx, p, n) { return (idx, false) }
            slot = (slot + 1) & mask
        }
        let idx = count
        slots[slot] = Int32(idx)
        hashes.append(h)
        arena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        starts.append(arena.count)
        if count * 2 > mask { grow() }
        return (idx, true)
    }

    private mutating func grow() {
        let size = (mask + 1) * 2
        mask = size - 1
        slots = [Int32](repeating: -1, count: size)
        for idx in 0..<count {
            var slot = Int(truncatingIfNeeded: hashes[idx]) & mask
            while slots[slot] >= 0 { slot = (slot + 1) & mask }
            slots[slot] = Int32(idx)
        }
    }

    mutating func removeAll() {
        arena.removeAll(keepingCapacity: true)
        starts = [0]
        hashes.removeAll(keepingCapacity: true)
        for i in slots.indices { slots[i] = -1 }
    }
}

/// Map from an ordered pair of token ids to a merge: its rank and the id it produces.
struct PairTable {
    private var keys: [UInt64]
    private var ranks: [Int32]
    private var results: [Int32]
    private var mask: Int
    private(set) var count = 0
    static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: PairTable.empty, count: size)
        ranks = [Int32](repeating: 0, count: size)
        results = [Int32](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always) static func key(_ a: Int32, _ b: Int32) -> UInt64 {
        (UInt64(UInt32(bitPattern: a)) << 32) | UInt64(UInt32(bitPattern: b))
    }
    @inline(__always) static func slotHash(_ k: UInt64) -> Int {
        Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> 20)
    }

    /// Adds a merge; a pair listed twice keeps its last entry (HF collects merges into a map, so
    /// the later one overwrites).
    mutating func insert(_ a: Int32, _ b: Int32, rank: Int32, result: Int32) {
        let k = PairTable.key(a, b)
        var slot = PairTable.slotHash(k) & mask
        while keys[slot] != PairTable.empty {
            if keys[slot] == k { ranks[slot] = rank; results[slot] = result; return }
            slot = (slot + 1) & mask
        }
        keys[slot] = k; ranks[slot] = rank; results[slot] = result
        count += 1
    }

    /// (rank, result) of the pair's merge, rank = Int32.max when there is none.
    @inline(__always)
    func lookup(_ a: Int32, _ b: Int32) -> (rank: Int32, result: Int32) {
        let k = PairTable.key(a, b)
        var slot = PairTable.slotHash(k) & mask
        while true {
            let s = keys[slot]
            if s == k { return (ranks[slot], results[slot]) }
            if s == PairTable.empty { return (Int32.max, -1) }
            slot = (slot + 1) & mask
        }
    }
}
