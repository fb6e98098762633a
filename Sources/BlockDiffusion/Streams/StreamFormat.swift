// Token stream format v1: the value types and the byte layout (docs/stream-format.md).
//
//   public enum StreamKind: UInt8            documents / sequences / samples
//   public struct TokenFields: OptionSet     .confidence (f32 per token), .unmaskStep (u32 per token), .margin (f32, v2)
//   public struct SpecialTokens              bos, eos, mask, pad (Int32, -1 = absent)
//   public struct StreamHeader               kind, vocabSize, tokenizerFingerprint, special, fields, attributes
//   public struct TokenRecord                id, tokens, confidence?, unmaskStep?, nfe, promptLength, stages
//   public enum StreamFormat                 version, magic, tokenWidth(vocabSize:)
//   public func crc32c(...)                  the checksum used by the format

import Foundation

public enum StreamKind: UInt8, CustomStringConvertible, CaseIterable, Sendable {
    case documents = 1, sequences = 2, samples = 3
    public var description: String {
        switch self {
        case .documents: return "documents"
        case .sequences: return "sequences"
        case .samples: return "samples"
        }
    }
}

public struct TokenFields: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let confidence = TokenFields(rawValue: 1)
    public static let unmaskStep = TokenFields(rawValue: 2)
    /// Snapshot margin: top-1 − top-2 probability when the token was unmasked (format v2; `remask --policy margin`).
    public static let margin = TokenFields(rawValue: 4)
    /// The fields a sampler writes by default.
    public static let all: TokenFields = [.confidence, .unmaskStep]
    /// Every field this build knows.
    public static let known: TokenFields = [.confidence, .unmaskStep, .margin]
}

public struct SpecialTokens: Equatable, Sendable {
    public var bos, eos, mask, pad: Int32
    public init(bos: Int32 = -1, eos: Int32 = -1, mask: Int32 = -1, pad: Int32 = -1) {
        self.bos = bos; self.eos = eos; self.mask = mask; self.pad = pad
    }
    public static let none = SpecialTokens()
}

public struct StreamHeader: Equatable, Sendable {
    public var kind: StreamKind
    public var vocabSize: Int
    public var tokenizerFingerprint: UInt64
    public var special: SpecialTokens
    public var fields: TokenFields
    public var attributes: [String: String]

    public init(kind: StreamKind, vocabSize: Int, tokenizerFingerprint: UInt64 = 0,
                special: SpecialTokens = .none, fields: TokenFields = [], attributes: [String: String] = [:]) {
        self.kind = kind; self.vocabSize = vocabSize; self.tokenizerFingerprint = tokenizerFingerprint
        self.special = special; self.fields = fields; self.attributes = attributes
    }

    /// Same kind, vocabulary, tokenizer, specials and fields (attributes ignored): streams that may be concatenated.
    public func isCompatible(with other: StreamHeader) -> Bool {
        kind == other.kind && vocabSize == other.vocabSize && tokenizerFingerprint == other.tokenizerFingerprint
            && special == other.special && fields == other.fields
    }
}

public struct TokenRecord: Equatable, Sendable {
    public var id: UInt64
    public var tokens: [Int32]
    public var confidence: [Float]?     // iff header.fields has .confidence; count == tokens.count
    public var unmaskStep: [UInt32]?    // iff header.fields has .unmaskStep
    public var nfe: UInt64
    public var promptLength: Int
    public var stages: [String]
    public var margin: [Float]?         // iff header.fields has .margin (format v2)

    public init(id: UInt64, tokens: [Int32], confidence: [Float]? = nil, unmaskStep: [UInt32]? = nil,
                nfe: UInt64 = 0, promptLength: Int = 0, stages: [String] = [], margin: [Float]? = nil) {
        self.id = id; self.tokens = tokens; self.confidence = confidence; self.unmaskStep = unmaskStep
        self.nfe = nfe; self.promptLength = promptLength; self.stages = stages; self.margin = margin
    }

    /// Bitwise comparison for confidence (NaN-safe), used by tests; `==` uses Float equality.
    public func isBitwiseEqual(to other: TokenRecord) -> Bool {
        guard id == other.id, tokens == other.tokens, unmaskStep == other.unmaskStep, nfe == other.nfe,
              promptLength == other.promptLength, stages == other.stages else { return false }
        func same(_ x: [Float]?, _ y: [Float]?) -> Bool {
            switch (x, y) {
            case (nil, nil): return true
            case let (a?, b?): return a.map(\.bitPattern) == b.map(\.bitPattern)
            default: return false
            }
        }
        return same(confidence, other.confidence) && same(margin, other.margin)
    }
}

public enum StreamFormat {
    /// The newest version this build reads and writes. v2 = v1 + the margin field (bit 2); a writer uses v1
    /// unless the stream declares a field only v2 has, so v1 readers still read everything they can.
    public static let version: UInt16 = 2
    static func version(for fields: TokenFields) -> UInt16 { fields.contains(.margin) ? 2 : 1 }
    /// "\x89BD3TOK\n": the high byte catches 7-bit mangling, the newline catches CRLF conversion.
    public static let magic: [UInt8] = [0x89, 0x42, 0x44, 0x33, 0x54, 0x4F, 0x4B, 0x0A]
    static let recordTag: UInt8 = 0x52   // "R"
    static let endTag: UInt8 = 0x45      // "E"
    /// Fixed part of a record body: id, nfe, prompt length, token count, stage count.
    static let recordFixedBytes = 8 + 8 + 4 + 4 + 4
    static let maxVocab = 1 << 31

    /// Bytes per token id: 2 when every id fits in a UInt16.
    public static func tokenWidth(vocabSize: Int) -> Int { vocabSize <= 65536 ? 2 : 4 }

    static func isZstdMagic(_ b: [UInt8]) -> Bool {
        guard b.count >= 4 else { return false }
        if b[0] == 0x28 && b[1] == 0xB5 && b[2] == 0x2F && b[3] == 0xFD { return true }
        return (b[0] & 0xF0) == 0x50 && b[1] == 0x2A && b[2] == 0x4D && b[3] == 0x18   // skippable frame
    }
}

// MARK: - CRC-32C (Castagnoli), slicing-by-8

private let crcTables: [UInt32] = {
    var t = [UInt32](repeating: 0, count: 8 * 256)
    for i in 0..<256 {
        var c = UInt32(i)
        for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        t[i] = c
    }
    for i in 0..<256 {
        for k in 1..<8 { t[k * 256 + i] = (t[(k - 1) * 256 + i] >> 8) ^ t[Int(t[(k - 1) * 256 + i] & 0xFF)] }
    }
    return t
}()

/// Continues a CRC-32C over `bytes`; start with `crc = 0`.
public func crc32c(_ bytes: UnsafeRawBufferPointer, crc: UInt32 = 0) -> UInt32 {
    var c = ~crc
    guard var p = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return crc }
    var n = bytes.count
    crcTables.withUnsafeBufferPointer { t in
        let t0 = t.baseAddress!
        while n >= 8 {
            let lo = UInt32(littleEndian: UnsafeRawPointer(p).loadUnaligned(as: UInt32.self)) ^ c
            let hi = UInt32(littleEndian: UnsafeRawPointer(p + 4).loadUnaligned(as: UInt32.self))
            c = t0[7 * 256 + Int(lo & 0xFF)] ^ t0[6 * 256 + Int((lo >> 8) & 0xFF)]
              ^ t0[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t0[4 * 256 + Int(lo >> 24)]
              ^ t0[3 * 256 + Int(hi & 0xFF)] ^ t0[2 * 256 + Int((hi >> 8) & 0xFF)]
              ^ t0[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t0[Int(hi >> 24)]
            p += 8; n -= 8
        }
        while n > 0 {
            c = t0[Int((c ^ UInt32(p.pointee)) & 0xFF)] ^ (c >> 8)
            p += 1; n -= 1
        }
    }
    return ~c
}

public func crc32c(_ bytes: [UInt8], crc: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { crc32c($0, crc: crc) }
}

/// The naive bit-at-a-time twin of `crc32c`, for tests.
func crc32cNaive(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
    }
    return ~c
}

// MARK: - Little-endian append helpers

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }
    mutating func appendString(_ s: String) {
        let u = Array(s.utf8)
        appendLE(UInt32(u.count))
        append(contentsOf: u)
    }
}

func loadLE<T: FixedWidthInteger>(_ bytes: [UInt8], at offset: Int, as: T.Type) -> T {
    bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
}

/// Reads little-endian values from a byte buffer; the caller checks bounds first.
struct LEParser {
    let base: UnsafeRawPointer
    let count: Int
    var pos = 0
    init(_ buf: UnsafeRawBufferPointer) { base = buf.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!; count = buf.count }
    var remaining: Int { count - pos }
    mutating func take<T: FixedWidthInteger>(_: T.Type) -> T? {
        guard remaining >= MemoryLayout<T>.size else { return nil }
        let v = T(littleEndian: base.loadUnaligned(fromByteOffset: pos, as: T.self))
        pos += MemoryLayout<T>.size
        return v
    }
    mutating func string() -> String? {
        guard let n = take(UInt32.self), remaining >= Int(n) else { return nil }
        let bytes = UnsafeRawBufferPointer(start: base + pos, count: Int(n))
        pos += Int(n)
        return String(decoding: bytes, as: UTF8.self)
    }
}
