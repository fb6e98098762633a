// GPT-2 pre-tokenization, hand-written: splits bytes into the pieces the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// would match (the pattern of GPT-2, tiktoken's "gpt2" and HF's ByteLevel pre-tokenizer).
// No regex engine: one left-to-right pass over Unicode scalars decoded from UTF-8 in place.
//
// Character classes (what `regex`/fancy-regex/Oniguruma use with Unicode on):
//   \p{L} = general category L* (Lu Ll Lt Lm Lo),  \p{N} = N* (Nd Nl No),
//   \s    = the White_Space property.  Everything else is "other".
//
// Invalid UTF-8: each byte that is not part of a well-formed scalar is classed "other" — the
// class U+FFFD (category So) has. So the pieces are those HF would produce on the text decoded
// with errors="replace" (or tiktoken/`regex` on errors="surrogateescape", whose lone surrogates
// are category Cs, also "other"), but each piece keeps its original bytes, so decoding the ids
// gives back the input byte for byte. HF `tokenizers` itself only accepts valid Unicode strings.
//
// How the alternatives resolve, for a scan position i (the regex tries them in order):
//  1. `'` followed by s|t|m|d|re|ve|ll (lower case only) → that contraction.
//  2. U+0020 followed by a non-space scalar of class C → the space plus the run of class C.
//     A letter/number/other scalar at i → the run of its class.
//  3. A whitespace run [i, j): if it reaches the end → all of it. Otherwise `\s+(?!\S)` backs
//     off one scalar: [i, last) where `last` is the start of the run's final scalar (if
//     non-empty); the final scalar is then either a U+0020 that prefixes the next piece (rule 2)
//     or a piece of its own (`\s+` on one scalar).

public enum PreTokenizer {
    // Scalar classes.
    static let other: UInt8 = 0, letter: UInt8 = 1, number: UInt8 = 2, space: UInt8 = 3

    static func computeClass(_ v: UInt32) -> UInt8 {
        guard let s = Unicode.Scalar(v) else { return other }  // surrogate code points
        let p = s.properties
        if p.isWhitespace { return space }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return number
        default:
            return other
        }
    }

    /// Classes of scalars U+0000…U+3FFFF (BMP, SMP with emoji, SIP with CJK extensions) in one
    /// table; the rare planes above are looked up on demand.
    static let tableLimit: UInt32 = 0x40000
    static let classTable: [UInt8] = (0..<tableLimit).map { computeClass($0) }

    @inline(__always)
    static func classOf(_ v: UInt32, _ table: UnsafePointer<UInt8>) -> UInt8 {
        v < tableLimit ? table[Int(v)] : computeClass(v)
    }

    /// Class and byte length of the scalar starting at `i` (an invalid byte: class other, length 1).
    @inline(__always)
    static func scalar(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int,
                       _ table: UnsafePointer<UInt8>) -> (cls: UInt8, len: Int) {
        let b0 = p[i]
        if b0 < 0x80 { return (table[Int(b0)], 1) }
        @inline(__always) func cont(_ k: Int) -> UInt32? {
            guard k < n else { return nil }
            let b = p[k]
            return b & 0xC0 == 0x80 ? UInt32(b & 0x3F) : nil
        }
        if b0 >= 0xC2 && b0 <= 0xDF {
            guard let c1 = cont(i + 1) else { return (other, 1) }
            return (table[Int((UInt32(b0 & 0x1F) << 6) | c1)], 2)
        }
        if b0 >= 0xE0 && b0 <= 0xEF {
            guard let c1 = cont(i + 1), let c2 = cont(i + 2) else { return (other, 1) }
            let v = (UInt32(b0 & 0x0F) << 12) | (c1 << 6) | c2
            if v < 0x800 || (v >= 0xD800 && v <= 0xDFFF) { return (other, 1) }  // overlong / surrogate
            return (table[Int(v)], 3)
        }
        if b0 >= 0xF0 && b0 <= 0xF4 {
            guard let c1 = cont(i + 1), let c2 = cont(i + 2), let c3 = cont(i + 3) else { return (other, 1) }
            let v = (UInt32(b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3
            if v < 0x10000 || v > 0x10FFFF { return (other, 1) }
            return (classOf(v, table), 4)
        }
        return (other, 1)
    }

    /// Calls `piece(start, end)` for each pre-token of `bytes[0..<n]`, in order; the pieces tile
    /// the input exactly.
    @inline(__always)
    public static func split(_ p: UnsafePointer<UInt8>, count n: Int, _ piece: (Int, Int) -> Void) {
        classTable.withUnsafeBufferPointer { tb in
            let table = tb.baseAddress!
            var i = 0
            while i < n {
                let b = p[i]
                // 1. Contractions.
                if b == 0x27 && i + 1 < n {
                    let c = p[i + 1]
                    if c == 0x73 || c == 0x74 || c == 0x6D || c == 0x64 {  // s t m d
                        piece(i, i + 2); i += 2; continue
                    }
                    if i + 2 < n {
                        let d = p[i + 2]
                        if (c == 0x72 && d == 0x65) || (c == 0x76 && d == 0x65) || (c == 0x6C && d == 0x6C) {  // re ve ll
                            piece(i, i + 3); i += 3; continue
                        }
                    }
                }
                var (cls, len) = scalar(p, i, n, table)
                var j = i + len
                // 2. Optional U+0020 then a run of one class.
                if b == 0x20 && j < n {
                    let (c2, l2) = scalar(p, j, n, table)
                    if c2 != space { cls = c2; j += l2 }
                }
                if cls != space {
                    while j < n {
                        let (c, l) = scalar(p, j, n, table)
                        if c != cls { break }
                        j += l
                    }
                    piece(i, j); i = j; continue
                }
                // 3. Whitespace run.
                var last = i
                while j < n {
                    let (c, l) = scalar(p, j, n, table)
                    if c != space { break }
                    last = j
                    j += l
                }
                if j == n { piece(i, n); i = n; continue }
                if last > i { piece(i, last); i = last; continue }
                piece(i, j); i = j
            }
        }
    }

    /// Convenience: the pieces as byte ranges.
    public static func split(_ bytes: [UInt8]) -> [Range<Int>] {
        var out = [Range<Int>]()
        bytes.withUnsafeBufferPointer { bp in
            guard let base = bp.baseAddress else { return }
            split(base, count: bp.count) { out.append($0..<$1) }
        }
        return out
    }
}
