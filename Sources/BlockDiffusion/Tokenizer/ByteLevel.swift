// GPT-2 byte-level alphabet: every byte maps to one printable Unicode scalar so that a token's
// bytes can be written as a JSON string in `tokenizer.json` (vocab keys and merges).
//
// Printable Latin-1 bytes (0x21–0x7E, 0xA1–0xAC, 0xAE–0xFF) map to themselves; the other 68
// bytes (controls, space, 0x7F–0xA0, 0xAD) map to U+0100, U+0101, … in byte order. So ' ' → 'Ġ'
// (U+0120) and '\n' → 'Ċ' (U+010A), exactly as in GPT-2's `bytes_to_unicode` and HF `ByteLevel`.

public enum ByteLevel {
    /// byte → scalar value of its printable stand-in.
    public static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b) {
                table[b] = UInt32(b)
            } else {
                table[b] = next
                next += 1
            }
        }
        return table
    }()

    /// Inverse of `byteToScalar`; nil for scalars outside the 256-symbol alphabet.
    public static func byte(forScalar s: UInt32) -> UInt8? { scalarToByte[s] }

    static let scalarToByte: [UInt32: UInt8] = {
        var map = [UInt32: UInt8]()
        for b in 0..<256 { map[byteToScalar[b]] = UInt8(b) }
        return map
    }()

    /// The 256 bytes in the order HF and GPT-2 give them ids 0…255: sorted by their stand-in
    /// scalar ('!' = id 0 … '~', '¡' … 'ÿ', then 'Ā' = byte 0x00 …).
    public static let bytesInIdOrder: [UInt8] = (0..<256).map { UInt8($0) }
        .sorted { byteToScalar[Int($0)] < byteToScalar[Int($1)] }

    /// Bytes → their byte-level string (a vocab key).
    public static func string(for bytes: some Sequence<UInt8>) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(Unicode.Scalar(byteToScalar[Int(b)])!) }
        return String(s)
    }

    /// Byte-level string → bytes; nil if it holds a scalar outside the alphabet (e.g. a special
    /// token like "<|endoftext|>" is fine — all ASCII printable — but "[PAD] x" is not).
    public static func bytes(for string: String) -> [UInt8]? {
        var out = [UInt8]()
        out.reserveCapacity(string.unicodeScalars.count)
        for s in string.unicodeScalars {
            guard let b = scalarToByte[s.value] else { return nil }
            out.append(b)
        }
        return out
    }
}
