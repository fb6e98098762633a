import Foundation

// Byte-level BPE training, the algorithm of HF `tokenizers`' BpeTrainer, so that on the same
// documents it learns the same merges in the same order (a fixture test checks this):
//   1. Pre-tokenize every document (PreTokenizer) and count distinct pieces ("words").
//   2. Each word starts as its bytes (ids 0…255, GPT-2 order). Count every adjacent pair
//      (overlapping occurrences included), weighted by word count.
//   3. Repeat until the vocabulary is full: take the pair with the highest count; ties go to the
//      smallest (left id, right id) — ids are creation order, so older tokens win. (A rule on
//      ids rather than on byte strings, because it is HF's and makes the two trainers agree.)
//      Merge it in every word that has it, left to right without overlap; update the counts of
//      the neighbouring pairs incrementally (only words that contain the pair are touched).
//      If the merged bytes already exist as a token, that id is reused (HF does the same).
// Priority queue with lazy updates: an entry whose count is stale is re-queued with the current
// count when popped; counts of existing pairs only ever drop, so the first up-to-date entry
// popped is the true maximum. Each queue entry carries the words where its pair was formed.

public struct BPETrainer {
    public var vocabSize: Int            // total, including the 3 specials
    public var threads: Int = 2
    public static let specialNames = [BPETokenizer.endOfText, BPETokenizer.padName, BPETokenizer.maskName]
    public static var minimumVocabSize: Int { 256 + specialNames.count }

    public init(vocabSize: Int) { self.vocabSize = vocabSize }

    /// Distinct pieces and their counts.
    public struct WordCounts {
        var table = ByteStringTable(capacity: 1 << 16)
        var counts: [Int] = []

        public init() {}

        public var distinct: Int { table.count }

        public mutating func add(document bytes: [UInt8]) {
            bytes.withUnsafeBufferPointer { bp in
                guard let p = bp.baseAddress else { return }
                PreTokenizer.split(p, count: bp.count) { s, e in
                    let (idx, inserted) = table.insert(p + s, e - s, hash: hashBytes(p + s, e - s))
                    if inserted { counts.append(1) } else { counts[idx] += 1 }
                }
            }
        }

        public mutating func add(_ other: WordCounts) {
            for i in 0..<other.table.count {
                let key = Array(other.table.key(i))
                key.withUnsafeBufferPointer { b in
                    let (idx, inserted) = table.insert(b.baseAddress!, b.count, hash: hashBytes(b.baseAddress!, b.count))
                    if inserted { counts.append(other.counts[i]) } else { counts[idx] += other.counts[i] }
                }
            }
        }
    }

    /// Counts the documents of the files (in parallel over `threads` workers: documents are
    /// handed out in batches; the merged counts do not depend on the split).
    public func countWords(files: [String], format: DocumentFormat) throws -> WordCounts {
        var total = WordCounts()
        let workers = max(1, threads)
        for file in files {
            let reader = try DocumentReader(path: file, format: format)
            var batch = [[UInt8]]()
            var batchBytes = 0
            func flush() {
                if batch.isEmpty { return }
                if workers == 1 || batch.count == 1 && batch[0].count < 1 << 20 {
                    for d in batch { total.add(document: d) }
                } else {
                    total.add(countParallel(batch, workers: workers))
                }
                batch.removeAll(keepingCapacity: true); batchBytes = 0
            }
            while let doc = try reader.next() {
                batchBytes += doc.count
                batch.append(doc)
                if batchBytes >= 16 << 20 { flush() }
            }
            flush()
        }
        return total
    }

    func countParallel(_ docs: [[UInt8]], workers: Int) -> WordCounts {
        // A big document is cut where the pre-tokenizer's pieces do not change (ParallelEncoder).
        var parts = [ArraySlice<UInt8>]()
        for d in docs {
            if d.count < 1 << 20 { parts.append(d[...]); continue }
            let cuts = ParallelEncoder.safeCuts(d, target: d.count / (workers * 4) + 1)
            for k in 0..<(cuts.count - 1) { parts.append(d[cuts[k]..<cuts[k + 1]]) }
        }
        var results = [WordCounts](repeating: WordCounts(), count: workers)
        results.withUnsafeMutableBufferPointer { r in
            parallelFor(workers) { w in
                var local = WordCounts()
                var k = w
                while k < parts.count { local.add(document: Array(parts[k])); k += workers }
                r[w] = local
            }
        }
        var total = results[0]
        for w in 1..<workers { total.add(results[w]) }
        return total
    }

    /// Learns merges from word counts; returns the tokenizer with specials appended.
    public func train(_ words: WordCounts, progress: ((Int, Int) -> Void)? = nil) throws -> BPETokenizer {
        guard vocabSize >= BPETrainer.minimumVocabSize else {
            throw ToolError("vocab size \(vocabSize) is too small: need at least \(BPETrainer.minimumVocabSize) (256 bytes + 3 specials)")
        }
        let target = vocabSize - BPETrainer.specialNames.count
        // Tokens: bytes in GPT-2 order.
        var tokens: [[UInt8]] = ByteLevel.bytesInIdOrder.map { [$0] }
        var byteId = [Int32](repeating: 0, count: 256)
        for (id, b) in ByteLevel.bytesInIdOrder.enumerated() { byteId[Int(b)] = Int32(id) }
        var tokenIndex = ByteStringTable(capacity: target)
        for t in tokens { _ = t.withUnsafeBufferPointer { tokenIndex.insert($0.baseAddress!, 1, hash: hashBytes($0.baseAddress!, 1)) } }

        // Words as symbol arrays; a flat layout would be faster to build but merges shrink words
        // in place, which arrays do simply.
        let nWords = words.table.count
        var wordSyms = [[Int32]](); wordSyms.reserveCapacity(nWords)
        var wordCount = [Int](); wordCount.reserveCapacity(nWords)
        for i in 0..<nWords {
            wordSyms.append(words.table.key(i).map { byteId[Int($0)] })
            wordCount.append(words.counts[i])
        }

        // Pair statistics.
        var pairIndex = [UInt64: Int32]()          // pair key → stats slot
        var pairCount = [Int]()
        func slot(_ key: UInt64) -> Int {
            if let s = pairIndex[key] { return Int(s) }
            let s = pairCount.count
            pairIndex[key] = Int32(s); pairCount.append(0)
            return s
        }
        var initialWhere = [[Int32]]()
        for (w, syms) in wordSyms.enumerated() where syms.count > 1 {
            let c = wordCount[w]
            for k in 0..<(syms.count - 1) {
                let s = slot(PairTable.key(syms[k], syms[k + 1]))
                pairCount[s] += c
                if s == initialWhere.count { initialWhere.append([]) }
                if initialWhere[s].last != Int32(w) { initialWhere[s].append(Int32(w)) }
            }
        }
        var queue = MergeQueue()
        for (key, s) in pairIndex where pairCount[Int(s)] > 0 {
            queue.push(count: pairCount[Int(s)], pair: key, words: initialWhere[Int(s)])
        }
        initialWhere = []

        var merges = [(Int32, Int32)]()
        var stamp = [Int32](repeating: -1, count: nWords)   // word w already in the list being built
        var listId: Int32 = 0
        var formed = [UInt64: [Int32]]()                      // pairs formed at this step → words
        while tokens.count < target, let top = queue.pop() {
            let s = Int(pairIndex[top.pair]!)
            let current = pairCount[s]
            if top.count != current {
                if current > 0 { queue.push(count: current, pair: top.pair, words: top.words) }
                continue
            }
            if current < 1 { break }
            let a = Int32(truncatingIfNeeded: top.pair >> 32), b = Int32(truncatingIfNeeded: top.pair & 0xFFFF_FFFF)
            let merged = tokens[Int(a)] + tokens[Int(b)]
            let (index, inserted) = merged.withUnsafeBufferPointer { tokenIndex.insert($0.baseAddress!, $0.count, hash: hashBytes($0.baseAddress!, $0.count)) }
            if inserted { tokens.append(merged) }
            let x = Int32(index)   // token ids equal insertion indices
            merges.append((a, b))
            for w32 in top.words {
                let w = Int(w32)
                let c = wordCount[w]
                let (n, kept) = wordSyms[w].withUnsafeMutableBufferPointer { sym -> (Int, Int) in
                    let n = sym.count
                    var out = 0, i = 0
                    func change(_ l: Int32, _ r: Int32, _ d: Int) {
                        let k = PairTable.key(l, r)
                        pairCount[slot(k)] += d * c
                        if d > 0 {
                            formed[k, default: []].append(w32)
                        }
                    }
                    while i < n {
                        if i + 1 < n && sym[i] == a && sym[i + 1] == b {
                            if out > 0 { change(sym[out - 1], a, -1); change(sym[out - 1], x, 1) }
                            if i + 2 < n { change(b, sym[i + 2], -1); change(x, sym[i + 2], 1) }
                            sym[out] = x; out += 1; i += 2
                        } else {
                            sym[out] = sym[i]; out += 1; i += 1
                        }
                    }
                    return (n, out)
                }
                if kept < n { wordSyms[w].removeLast(n - kept) }
            }
            for (k, ws) in formed {
                let cnt = pairCount[Int(pairIndex[k]!)]
                if cnt > 0 {
                    // Dedupe the word list (a word forming the pair twice is listed twice).
                    var list = [Int32](); list.reserveCapacity(ws.count)
                    listId += 1
                    for w in ws where stamp[Int(w)] != listId { stamp[Int(w)] = listId; list.append(w) }
                    queue.push(count: cnt, pair: k, words: list)
                }
            }
            formed.removeAll(keepingCapacity: true)
            progress?(tokens.count, target)
        }
        let specials = BPETrainer.specialNames.enumerated().map { BPESpecialToken(name: $1, id: Int32(tokens.count + $0)) }
        return try BPETokenizer(tokens: tokens + specials.map { Array($0.name.utf8) }, merges: merges, specials: specials)
    }

    /// Counts the files and trains.
    public func train(files: [String], format: DocumentFormat, progress: ((Int, Int) -> Void)? = nil) throws -> BPETokenizer {
        try train(countWords(files: files, format: format), progress: progress)
    }
}

/// Max-heap of (count, pair) — highest count first, then the smallest pair key (left id, right id).
struct MergeQueue {
    struct Entry { var count: Int; var pair: UInt64; var words: [Int32] }
    private var heap: [Entry] = []

    @inline(__always) private static func before(_ x: Entry, _ y: Entry) -> Bool {
        x.count != y.count ? x.count > y.count : x.pair < y.pair
    }

    mutating func push(count: Int, pair: UInt64, words: [Int32]) {
        heap.append(Entry(count: count, pair: pair, words: words))
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if !MergeQueue.before(heap[i], heap[p]) { break }
            heap.swapAt(i, p); i = p
        }
    }

    mutating func pop() -> Entry? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        let n = heap.count
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < n && MergeQueue.before(heap[l], heap[m]) { m = l }
            if r < n && MergeQueue.before(heap[r], heap[m]) { m = r }
            if m == i { break }
            heap.swapAt(i, m); i = m
        }
        return top
    }
}

struct UncheckedSendable<T>: @unchecked Sendable { let value: T }

// (parallelFor: the identical one in Model/Layers.swift)
