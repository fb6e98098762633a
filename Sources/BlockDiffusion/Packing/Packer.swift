// pack-blocks: documents stream -> fixed-length training rows (sequences streams), one per split.
//
//   public enum PackMode: String          wrap | pad
//   public struct SplitSpec               name + fraction
//   public func parseSplits(_:) throws    "train=0.98,valid=0.01,test=0.01"
//   public struct PackOptions             seqLen, blockSizes, mode, bos, splits, seed; validate() throws UsageError
//   public final class Packer             add(document:), rows(split:), write(split:to:), stats, headers
//   public func documentHash(_:seed:)     FNV-1a 64 over the token ids (LE uint32), seed first
//   public func runPackBlocks(...)        the whole tool: read, pack, shuffle, write atomically
//
// Layouts (L = seqLen, C = content tokens per row = L, or L-2 with --bos):
//   wrap      documents of one split concatenated, each followed by EOS, cut into rows of C tokens
//             (the reference OWT recipe); the final partial row is dropped and counted.
//   pad       one document per row: doc + [EOS], truncated to C, padded with PAD to L (the
//             reference's unwrapped recipe); with no PAD id in the input, EOS pads.
//   --bos     every row is [BOS] + C content tokens + [EOS] (reference LM1B recipe), padding after
//             the EOS in pad mode.
// Empty documents are skipped (counted). A document goes to the split chosen by its content hash
// and the seed, so identical documents always land in the same split and none straddles two.
// Rows of each split are shuffled (Fisher–Yates, Diffusion/RNG.swift) with a SplitMix64 generator seeded by (seed, split name): the same
// seed and input give the same bytes. With `shuffle` off, rows are written as they are made
// (constant memory; streams through pipes); otherwise all rows are held (2 bytes per token when
// the vocabulary fits 16 bits, else 4).
// Deviation from the reference: it groups documents in batches of 1000 and drops a partial row per
// batch; we drop only the split's final partial row.

import Foundation

public enum PackMode: String, CaseIterable, Sendable { case wrap, pad }

public struct SplitSpec: Equatable, Sendable {
    public var name: String
    public var fraction: Double
    public init(name: String, fraction: Double) { self.name = name; self.fraction = fraction }
}

public func parseSplits(_ text: String) throws -> [SplitSpec] {
    var splits: [SplitSpec] = []
    for part in text.split(separator: ",", omittingEmptySubsequences: false) {
        let pieces = part.split(separator: "=", omittingEmptySubsequences: false)
        guard pieces.count == 2, let fraction = Double(pieces[1].trimmingCharacters(in: .whitespaces)) else {
            throw UsageError("--split: '\(part)' is not NAME=FRACTION (e.g. --split train=0.98,valid=0.01,test=0.01)")
        }
        splits.append(SplitSpec(name: pieces[0].trimmingCharacters(in: .whitespaces), fraction: fraction))
    }
    return splits
}

public struct PackOptions: Equatable, Sendable {
    public var seqLen: Int
    public var blockSizes: [Int]
    public var mode: PackMode
    public var bos: Bool
    /// Empty: everything goes to one output (split name "all").
    public var splits: [SplitSpec]
    public var seed: UInt64
    /// false: rows keep packing order and are written as they are made (constant memory, streams
    /// through a pipe).
    public var shuffle: Bool

    public init(seqLen: Int, blockSizes: [Int] = [], mode: PackMode = .wrap, bos: Bool = false,
                splits: [SplitSpec] = [], seed: UInt64 = 0, shuffle: Bool = true) {
        self.seqLen = seqLen; self.blockSizes = blockSizes; self.mode = mode; self.bos = bos
        self.splits = splits; self.seed = seed; self.shuffle = shuffle
    }

    /// Content tokens per row.
    public var contentLength: Int { bos ? seqLen - 2 : seqLen }
    public var splitNames: [String] { splits.isEmpty ? ["all"] : splits.map(\.name) }

    public func validate() throws {
        try checkRange(seqLen, 1...Limits.length, "-L")
        if bos && seqLen < 3 {
            throw UsageError("--bos needs -L of at least 3 (BOS + content + EOS); got \(seqLen)")
        }
        for b in blockSizes {
            try checkRange(b, 1...Limits.length, "--block-size")
            guard seqLen % b == 0 else {
                let lower = seqLen / b * b, upper = lower + b
                throw UsageError("-L \(seqLen) is not a multiple of --block-size \(b): use -L \(lower > 0 ? "\(lower) or " : "")\(upper)")
            }
        }
        var seen = Set<String>()
        for s in splits {
            guard !s.name.isEmpty, s.name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) else {
                throw UsageError("--split: name '\(s.name)' must be letters, digits, '_' or '-'")
            }
            guard seen.insert(s.name).inserted else { throw UsageError("--split: '\(s.name)' appears twice") }
            guard s.fraction.isFinite && s.fraction > 0 else {
                throw UsageError("--split: fraction of '\(s.name)' must be positive (got \(s.fraction))")
            }
        }
        if !splits.isEmpty {
            let sum = splits.reduce(0) { $0 + $1.fraction }
            guard abs(sum - 1) < 1e-6 else {
                throw UsageError("--split: fractions must sum to 1 (they sum to \(String(format: "%.6g", sum)))")
            }
        }
    }
}

public struct PackStats: Equatable, Sendable {
    public var split: String
    public var documents = 0            // non-empty documents routed here
    public var emptyDocuments = 0       // skipped
    public var rows = 0
    public var seqLen = 0
    public var paddingTokens = 0
    public var droppedTokens = 0        // wrap: final partial row; pad: truncated document tails
    public var truncatedDocuments = 0   // pad only
    public var tokens: Int { rows * seqLen }
    public var paddingFraction: Double { tokens == 0 ? 0 : Double(paddingTokens) / Double(tokens) }

    public var summary: String {
        var s = "\(split): \(documents) documents, \(rows) rows x \(seqLen) = \(tokens) tokens, "
            + String(format: "padding %.2f%%, dropped %d tokens", 100 * paddingFraction, droppedTokens)
        if truncatedDocuments > 0 { s += " (\(truncatedDocuments) documents truncated)" }
        if emptyDocuments > 0 { s += ", \(emptyDocuments) empty documents skipped" }
        return s
    }
}

/// FNV-1a 64 over the seed (8 bytes LE) then each token id as 4 LE bytes.
public func documentHash(_ tokens: [Int32], seed: UInt64) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    let prime: UInt64 = 0x0000_0100_0000_01B3
    var s = seed
    for _ in 0..<8 { h = (h ^ (s & 0xFF)) &* prime; s >>= 8 }
    tokens.withUnsafeBufferPointer { t in
        for v in t {
            var u = UInt32(bitPattern: v)
            for _ in 0..<4 { h = (h ^ UInt64(u & 0xFF)) &* prime; u >>= 8 }
        }
    }
    return h
}

public final class Packer {
    public let options: PackOptions
    public let inputHeader: StreamHeader
    /// Id used for padding in pad mode (PAD, else EOS).
    public let padId: Int32
    public let padFromEOS: Bool
    public private(set) var stats: [PackStats]
    // Kept rows per split, flattened (row r = [r*L ..< (r+1)*L]); 2 bytes per token when every id
    // fits (vocabulary ≤ 65536), else 4.
    private var rowData16: [[UInt16]]
    private var rowData32: [[Int32]]
    private let narrow: Bool
    private var row: [Int32] = []      // the row being assembled
    /// When set, each finished row goes here (split index, row) instead of being kept for the shuffle.
    public var rowHandler: ((Int, [Int32]) throws -> Void)?
    private var carry: [[Int32]]       // wrap: per split, content of the unfinished row
    private let cumulative: [Double]
    private let eos: Int32, bos: Int32

    public init(options: PackOptions, input: StreamHeader) throws {
        guard input.kind == .documents else {
            throw ToolError("pack-blocks needs a 'documents' stream but the input holds '\(input.kind)' "
                            + "(make one with `tokenize`)")
        }
        guard input.special.eos >= 0 else {
            throw ToolError("the input stream declares no EOS id, which pack-blocks puts after every document: "
                            + "re-tokenize with a tokenizer that has an end-of-text token")
        }
        if options.bos && input.special.bos < 0 {
            throw ToolError("--bos needs a BOS id but the input stream declares none: drop --bos or re-tokenize "
                            + "with a tokenizer that has a BOS token")
        }
        self.options = options
        self.inputHeader = input
        eos = input.special.eos
        bos = input.special.bos
        padFromEOS = input.special.pad < 0
        padId = padFromEOS ? input.special.eos : input.special.pad
        let names = options.splitNames
        stats = names.map { var s = PackStats(split: $0); s.seqLen = options.seqLen; return s }
        rowData16 = Array(repeating: [], count: names.count)
        rowData32 = Array(repeating: [], count: names.count)
        narrow = input.vocabSize <= 65536
        carry = Array(repeating: [], count: names.count)
        var acc = 0.0
        cumulative = options.splits.map { acc += $0.fraction; return acc }
    }

    /// Which split a document belongs to: its seeded content hash mapped to [0, 1).
    public func splitIndex(of tokens: [Int32]) -> Int {
        guard cumulative.count > 1 else { return 0 }
        // SplitMix64's finaliser whitens the FNV hash, whose low bits are weak.
        let u = Double(SplitMix64.mix(documentHash(tokens, seed: options.seed)) >> 11) / Double(1 << 53)
        for (i, c) in cumulative.enumerated() where u < c { return i }
        return cumulative.count - 1
    }

    public func add(document tokens: [Int32]) throws {
        let split = splitIndex(of: tokens)
        guard !tokens.isEmpty else { stats[split].emptyDocuments += 1; return }
        stats[split].documents += 1
        switch options.mode {
        case .wrap: try addWrapped(tokens, split: split)
        case .pad: try addPadded(tokens, split: split)
        }
    }

    private func addWrapped(_ doc: [Int32], split: Int) throws {
        let c = options.contentLength
        var i = 0
        let total = doc.count + 1   // doc then EOS
        while i < total {
            let take = min(c - carry[split].count, total - i)
            let fromDoc = min(take, max(0, doc.count - i))
            carry[split] += doc[i..<(i + fromDoc)]
            if take > fromDoc { carry[split].append(eos) }
            i += take
            if carry[split].count == c {
                try emitRow(content: carry[split], split: split)
                carry[split].removeAll(keepingCapacity: true)
            }
        }
    }

    private func addPadded(_ doc: [Int32], split: Int) throws {
        let c = options.contentLength
        var content = Array(doc.prefix(c))
        // With --bos the row's own EOS is added by emitRow; otherwise EOS ends the document if it fits.
        if !options.bos && content.count < c { content.append(eos) }
        stats[split].droppedTokens += max(0, doc.count - c)
        if doc.count > c { stats[split].truncatedDocuments += 1 }
        try emitRow(content: content, split: split)
    }

    /// Appends one row of exactly L tokens: [BOS] content [EOS] with --bos, then padding.
    private func emitRow(content: [Int32], split: Int) throws {
        row.removeAll(keepingCapacity: true)
        if options.bos { row.append(bos) }
        row += content
        if options.bos { row.append(eos) }
        let pad = options.seqLen - row.count
        if pad > 0 {
            row += repeatElement(padId, count: pad)
            stats[split].paddingTokens += pad
        }
        stats[split].rows += 1
        if let handler = rowHandler {
            try handler(split, row)
        } else if narrow {
            rowData16[split] += row.lazy.map { UInt16(truncatingIfNeeded: $0) }
        } else {
            rowData32[split] += row
        }
    }

    private func keptRow(split: Int, index: Int) -> [Int32] {
        precondition(rowHandler == nil, "rows were handed to rowHandler, none were kept")
        let l = options.seqLen, range = (index * l)..<((index + 1) * l)
        return narrow ? rowData16[split][range].map { Int32($0) } : Array(rowData32[split][range])
    }

    /// Ends packing: counts the dropped final partial rows. Call once, after the last document.
    public func finish() {
        for s in carry.indices {
            stats[s].droppedTokens += carry[s].count
            carry[s].removeAll()
        }
    }

    /// The rows of a split in output (shuffled) order.
    public func rows(split: Int) -> [[Int32]] {
        return shuffledOrder(split: split).map { keptRow(split: split, index: $0) }
    }

    /// The rows of a split in packing order (before the shuffle), for tests.
    func packedRows(split: Int) -> [[Int32]] {
        return (0..<stats[split].rows).map { keptRow(split: split, index: $0) }
    }

    func shuffledOrder(split: Int) -> [Int] {
        var order = Array(0..<stats[split].rows)
        guard options.shuffle else { return order }
        let name = options.splitNames[split]
        var rng = SplitMix64(seed: options.seed ^ documentHash(name.unicodeScalars.map { Int32($0.value) }, seed: 0x5348_5546))
        rng.fisherYates(&order)
        return order
    }

    public func outputHeader(split: Int) -> StreamHeader {
        var special = inputHeader.special
        if options.mode == .pad { special.pad = padId }
        var attributes: [String: String] = [:]
        for (k, v) in inputHeader.attributes { attributes["input." + k] = v }
        attributes["tool"] = "pack-blocks"
        attributes["seq_len"] = "\(options.seqLen)"
        attributes["mode"] = options.mode.rawValue
        attributes["bos"] = options.bos ? "1" : "0"
        attributes["split"] = options.splitNames[split]
        attributes["block_sizes"] = options.blockSizes.map(String.init).joined(separator: ",")
        attributes["seed"] = "\(options.seed)"
        attributes["shuffled"] = options.shuffle ? "1" : "0"
        if !options.splits.isEmpty {
            attributes["splits"] = options.splits.map { "\($0.name)=\($0.fraction)" }.joined(separator: ",")
        }
        return StreamHeader(kind: .sequences, vocabSize: inputHeader.vocabSize,
                            tokenizerFingerprint: inputHeader.tokenizerFingerprint,
                            special: special, fields: [], attributes: attributes)
    }

    /// Writes one split as a complete sequences stream (records id 0, 1, ... in shuffled order).
    public func write(split: Int, to sink: ByteSink, compress: Bool = true, level: Int32 = 3) throws {
        let writer = try TokenStreamWriter(sink: sink, header: outputHeader(split: split), compress: compress,
                                           level: level, flushEachRecord: false)
        for (position, row) in shuffledOrder(split: split).enumerated() {
            let tokens = keptRow(split: split, index: row)
            try writer.write(TokenRecord(id: UInt64(position), tokens: tokens))
        }
        try writer.finish()
    }
}

/// Where pack-blocks writes: one stream, or one per split named PREFIX.SPLIT.tok.
public enum PackDestination: Equatable, Sendable {
    case single(String)
    case prefix(String)
}

/// The whole tool. Outputs are opened first (bad paths fail before any work), the input is read and
/// packed, then every split is written and all outputs committed; any error aborts them all, so no
/// output file is left behind. `log` receives the notes and per-split counts (stderr in the tool).
@discardableResult
public func runPackBlocks(options: PackOptions, input: String, destination: PackDestination,
                          level: Int32 = 3, allowTerminal: Bool = false,
                          log: (String) -> Void = { _ in }) throws -> [PackStats] {
    try options.validate()
    let names = options.splitNames
    var outputs: [OutputFile] = []
    defer { for o in outputs { o.abort() } }   // no-op after commit
    switch destination {
    case .single(let path):
        outputs = [try OutputFile(path: path, allowTerminal: allowTerminal)]
    case .prefix(let prefix):
        outputs = try names.map { try OutputFile(path: "\(prefix).\($0).tok") }
    }
    guard outputs.count == names.count else {
        throw ToolError("internal error: \(names.count) splits but \(outputs.count) outputs")
    }
    let reader = try TokenStreamReader(path: input)
    let packer = try Packer(options: options, input: reader.header)
    if options.mode == .pad && packer.padFromEOS {
        log("note: the input declares no PAD id; padding with EOS (\(packer.padId))")
    }
    if options.shuffle {
        while let record = try reader.next() { try packer.add(document: record.tokens) }
        packer.finish()
        for (i, out) in outputs.enumerated() {
            try packer.write(split: i, to: out, level: level)
        }
    } else {
        // Rows go out as they are made; a pipe reader gets each one at once.
        let writers = try outputs.indices.map { i in
            try TokenStreamWriter(sink: outputs[i], header: packer.outputHeader(split: i), level: level,
                                  flushEachRecord: outputs[i].path == "-")
        }
        var ids = [UInt64](repeating: 0, count: writers.count)
        packer.rowHandler = { split, row in
            try writers[split].write(TokenRecord(id: ids[split], tokens: row))
            ids[split] += 1
        }
        while let record = try reader.next() { try packer.add(document: record.tokens) }
        packer.finish()
        for w in writers { try w.finish() }
    }
    for out in outputs { try out.commit() }
    for s in packer.stats {
        log(s.summary)
        if s.rows == 0 { log("warning: split '\(s.split)' has no rows (too few documents?)") }
    }
    return packer.stats
}
