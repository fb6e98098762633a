// Infilling from text: `refine --infill FILE -t tokenizer.json`.
//
//   "The [MASK:8] sat on the mat"  →  [BOS] enc("The ") MASK×8 enc(" sat on the mat")
//   [MASK] alone is one masked position; [MASK:n] is n (n ≥ 1). The text between markers is encoded piece by
//   piece with the checkpoint's tokenizer (so a marker is always a token boundary). Every given token is clean
//   context (the x_0 side, confidence 1, unmask step 0) and is never resampled; promptLength = the tokens
//   before the first mask (never remasked by a later remask). One record per line: a plain line of text, or a
//   JSON object with "text" (JSON Lines, so texts may hold line breaks). Record ids are the line numbers from 0
//   (blank lines skipped, keeping the numbering).
//
// Public API:
//   InfillFormat (.text, .jsonl), parseInfill(_:) -> [InfillPiece], infillRecords(lines:format:encode:special:)
import Foundation

public enum InfillFormat: String, CaseIterable, Sendable { case text, jsonl }

public enum InfillPiece: Equatable, Sendable {
    case text(String)
    case masks(Int)
}

/// Splits a line at its [MASK] / [MASK:n] markers. Anything else in brackets is text.
public func parseInfill(_ line: String) throws -> [InfillPiece] {
    var out: [InfillPiece] = []
    var rest = Substring(line)
    var text = ""
    while let open = rest.range(of: "[MASK") {
        let after = rest[open.upperBound...]
        var count: Int? = nil, end = after.startIndex
        if after.first == "]" { count = 1; end = after.index(after: after.startIndex) }
        else if after.first == ":", let close = after.firstIndex(of: "]") {
            let digits = after[after.index(after: after.startIndex)..<close]
            guard let n = Int(digits), n >= 1, n <= 1_000_000 else {
                throw UsageError("[MASK:\(digits)]: the count must be a whole number ≥ 1")
            }
            count = n; end = after.index(after: close)
        }
        text += rest[..<open.lowerBound]
        if let count {
            if !text.isEmpty { out.append(.text(text)); text = "" }
            out.append(.masks(count))
            rest = after[end...]
        } else {
            text += "[MASK"; rest = after
        }
    }
    text += rest
    if !text.isEmpty { out.append(.text(text)) }
    return out
}

/// Records to refine from infill lines. `encode` is the tokenizer's (bytes → ids).
public func infillRecords(lines: [String], format: InfillFormat, encode: ([UInt8]) -> [Int32],
                          special sp: SpecialTokens) throws -> [TokenRecord] {
    guard sp.mask >= 0 else { throw ToolError("the checkpoint has no mask id; give --mask-id") }
    var out: [TokenRecord] = []
    for (i, raw) in lines.enumerated() {
        if raw.allSatisfy(\.isWhitespace) { continue }
        var line = raw
        if format == .jsonl {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any],
                  let t = obj["text"] as? String else {
                throw UsageError("infill line \(i + 1): expected a JSON object with a \"text\" string")
            }
            line = t
        }
        let pieces = try parseInfill(line)
        guard pieces.contains(where: { if case .masks = $0 { return true }; return false }) else {
            throw UsageError("infill line \(i + 1) has no [MASK] or [MASK:n] marker: nothing to fill")
        }
        var tokens: [Int32] = sp.bos >= 0 ? [sp.bos] : []
        for p in pieces {
            switch p {
            case .text(let s): tokens += encode(Array(s.utf8))
            case .masks(let n): tokens += [Int32](repeating: sp.mask, count: n)
            }
        }
        let prompt = tokens.firstIndex(of: sp.mask) ?? tokens.count
        out.append(TokenRecord(id: UInt64(i), tokens: tokens, confidence: tokens.map { $0 == sp.mask ? 0 : 1 },
                               unmaskStep: [UInt32](repeating: 0, count: tokens.count), nfe: 0,
                               promptLength: prompt, stages: ["infill"]))
    }
    guard !out.isEmpty else { throw UsageError("the infill file holds no text lines") }
    return out
}
