// Training / evaluation rows read from a `sequences` token stream (pack-blocks output): every
// record one row of L tokens. Kept in memory as one flat Int32 buffer.
import Foundation

public struct SequenceData: Sendable {
    public let header: StreamHeader
    public let length: Int
    public let tokens: [Int32]
    public var count: Int { length == 0 ? 0 : tokens.count / length }

    /// Reads the whole stream. Refuses other stream kinds, rows of unequal length, tokens outside
    /// [0, vocab) and the mask token (data must be clean x0).
    public static func load(path: String) throws -> SequenceData {
        let reader = try TokenStreamReader(source: try openInput(path), name: path)
        let h = reader.header
        guard h.kind == .sequences else {
            throw ToolError("\(path): is a \(h.kind) stream, training and scoring need a sequences stream; run pack-blocks on it first")
        }
        var flat: [Int32] = []
        var L = 0
        var n = 0
        while let r = try reader.next() {
            if L == 0 { L = r.tokens.count }
            guard r.tokens.count == L, L > 0 else {
                throw ToolError("\(path): record \(n) has \(r.tokens.count) tokens, earlier records \(L); rows must have one length (pack-blocks --seq-len)")
            }
            for tok in r.tokens where tok < 0 || Int(tok) >= h.vocabSize || (h.special.mask >= 0 && tok == h.special.mask) {
                throw ToolError("\(path): record \(n) holds token \(tok), outside the data vocabulary or the mask token; re-tokenize the data")
            }
            flat += r.tokens
            n += 1
        }
        guard n > 0 else { throw ToolError("\(path): the stream holds no sequences") }
        return SequenceData(header: h, length: L, tokens: flat)
    }

    public init(header: StreamHeader, length: Int, tokens: [Int32]) {
        self.header = header; self.length = length; self.tokens = tokens
    }

    /// Rows `rows` copied into `out` (B·L).
    public func gather(_ rows: [Int], into out: inout [Int32]) {
        out.removeAll(keepingCapacity: true)
        for r in rows { out += tokens[(r * length)..<((r + 1) * length)] }
    }
}

/// Shuffled epochs over N rows, resumable: the order of epoch e is a Fisher–Yates shuffle seeded by
/// (seed, e), so the state is just (epoch, position).
public struct BatchOrder: Equatable, Sendable {
    public let rows: Int
    public let seed: UInt64
    public private(set) var epoch = 0
    public private(set) var position = 0
    private var order: [Int] = []

    public init(rows: Int, seed: UInt64, epoch: Int = 0, position: Int = 0) {
        self.rows = rows; self.seed = seed; self.epoch = epoch; self.position = position
        order = BatchOrder.permutation(rows: rows, seed: seed, epoch: epoch)
    }

    static func permutation(rows: Int, seed: UInt64, epoch: Int) -> [Int] {
        var rng = Xoshiro256(seed: seed &+ 0x5851_F42D_4C95_7F2D &* UInt64(epoch + 1))
        var p = Array(0..<rows)
        rng.fisherYates(&p)
        return p
    }

    /// The next `n` row indices, continuing into the next epoch when one runs out.
    public mutating func next(_ n: Int) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(n)
        while out.count < n {
            if position == rows { epoch += 1; position = 0; order = BatchOrder.permutation(rows: rows, seed: seed, epoch: epoch) }
            out.append(order[position]); position += 1
        }
        return out
    }
}
