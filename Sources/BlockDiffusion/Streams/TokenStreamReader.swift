// Reads a token stream v1 (docs/stream-format.md), compressed or not.
//
//   public init(source: ByteSource, name: String = "input") throws   reads + validates the header
//   public let header: StreamHeader
//   public func next() throws -> TokenRecord?    nil only after a valid end marker, a complete zstd
//                                                frame (checksum verified) and nothing after it
//   public convenience init(path: String) throws "-" = stdin
//   public func require(kind:tool:) throws        one-line refusal of the wrong kind of stream
//   public func require(tokenizerFingerprint:vocabSize:tool:) throws   ... or of another tokenizer
//   public func readAll() throws -> [TokenRecord]
//
// Truncation and corruption always throw a ToolError naming the record number and byte offset;
// a damaged stream never reads as a shorter one. Decompression uses ZSTD_decompressStream and
// only asks the source for more bytes when it needs them, so records arrive as soon as the
// writer flushed them, even through a pipe that delivers one byte at a time.

import CZstd
import Foundation

public final class TokenStreamReader {
    public private(set) var header = StreamHeader(kind: .documents, vocabSize: 1)
    public let isCompressed: Bool
    /// Records returned so far (over all concatenated streams).
    public private(set) var recordsRead: UInt64 = 0

    private let source: ByteSource
    private let name: String
    // Raw (possibly compressed) input.
    private var raw: [UInt8]
    private var rawPos = 0, rawEnd = 0
    private var rawBase: UInt64 = 0        // source offset of raw[0]
    private var rawEOF = false
    // Decoded payload.
    private var dctx: OpaquePointer?
    private var dec: [UInt8]
    private var decPos = 0, decEnd = 0
    private var payloadOffset: UInt64 = 0  // payload bytes handed to the parser
    private var frameOpen = false          // inside a zstd frame that has not ended yet
    private var afterEnd = false           // an end marker was read; only another stream may follow
    private var done = false
    private var failure: Error?
    private var segmentRecords: UInt64 = 0
    private var body: [UInt8] = []
    private var width = 0

    public init(source: ByteSource, name: String = "input") throws {
        self.source = source
        self.name = name
        var peek = [UInt8](repeating: 0, count: 1 << 17)
        var peeked = 0, eof = false
        // Peek at the first 4 bytes to choose zstd or raw.
        while peeked < 4 {
            let n = try peek.withUnsafeMutableBytes { try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[peeked...])) }
            if n == 0 { eof = true; break }
            peeked += n
        }
        raw = peek
        rawEnd = peeked
        rawEOF = eof
        dec = [UInt8](repeating: 0, count: 1 << 17)
        if rawEnd == 0 {
            throw ToolError("\(name) is empty, not a token stream (did the command producing it fail?)")
        }
        isCompressed = StreamFormat.isZstdMagic(Array(raw[0..<rawEnd]))
        if isCompressed {
            guard let d = ZSTD_createDCtx() else { throw ToolError("out of memory creating a zstd decompressor") }
            dctx = d
        } else if Array(raw[0..<min(rawEnd, 8)]) != Array(StreamFormat.magic.prefix(min(rawEnd, 8))) {
            let shown = raw[0..<min(rawEnd, 4)].map { String(format: "%02x", $0) }.joined(separator: " ")
            throw ToolError("\(name) is not a bd3 token stream (starts with \(shown); expected a zstd frame or "
                            + "the BD3TOK magic): give a file written by tokenize, pack-blocks, draft, remask or refine")
        }
        header = try TokenStreamReader.readHeader(self, first: true)
        width = StreamFormat.tokenWidth(vocabSize: header.vocabSize)
    }

    /// Opens a file ("-" = stdin) and reads its header; messages name the file.
    public convenience init(path: String) throws {
        try self.init(source: try openInput(path), name: path == "-" ? "stdin" : "'\(path)'")
    }

    deinit { if let d = dctx { ZSTD_freeDCtx(d) } }

    /// Refuses a stream made with another tokenizer (fingerprint 0 on either side = unknown, accepted)
    /// or another vocabulary size, with a one-line reason.
    public func require(tokenizerFingerprint: UInt64, vocabSize: Int, tool: String) throws {
        if header.vocabSize != vocabSize {
            throw ToolError("\(tool): \(name) has vocabulary size \(header.vocabSize) but the model expects \(vocabSize): "
                            + "re-tokenize the data with the model's tokenizer")
        }
        if tokenizerFingerprint != 0 && header.tokenizerFingerprint != 0 && header.tokenizerFingerprint != tokenizerFingerprint {
            throw ToolError("\(tool): \(name) was tokenized with another tokenizer (fingerprint "
                            + String(format: "%016llx", header.tokenizerFingerprint) + ", expected "
                            + String(format: "%016llx", tokenizerFingerprint) + "): re-tokenize it with the model's tokenizer")
        }
    }

    /// Refuses a stream of another kind with a one-line reason.
    public func require(kind: StreamKind, tool: String) throws {
        guard header.kind == kind else {
            throw ToolError("\(tool) needs a '\(kind)' stream but \(name) holds '\(header.kind)'"
                            + TokenStreamReader.kindHint(kind))
        }
    }

    static func kindHint(_ kind: StreamKind) -> String {
        switch kind {
        case .documents: return " (make one with `tokenize`)"
        case .sequences: return " (make one with `pack-blocks`)"
        case .samples: return " (make one with `draft`)"
        }
    }

    /// Reads every remaining record.
    public func readAll() throws -> [TokenRecord] {
        var all: [TokenRecord] = []
        while let r = try next() { all.append(r) }
        return all
    }

    /// The next record; nil only at the verified end. After an error every call rethrows it.
    public func next() throws -> TokenRecord? {
        if let error = failure { throw error }
        do {
            return try nextRecord()
        } catch {
            failure = error
            throw error
        }
    }

    private func nextRecord() throws -> TokenRecord? {
        while !done {
            let start = payloadOffset
            var tag: UInt8 = 0
            if try readPayload(into: &tag, count: 1) == 0 {
                if afterEnd { done = true; return nil }
                throw ToolError("\(name) is truncated: it ends at byte \(start)\(offsetNote) after \(recordsRead) records "
                                + "without an end marker (the writer was interrupted or the file was cut short); "
                                + "regenerate it")
            }
            if afterEnd {
                // Only another complete stream may follow an end marker (concatenated shards).
                guard tag == StreamFormat.magic[0] else {
                    throw ToolError("\(name) has unexpected bytes after the end of the stream (byte \(start)\(offsetNote)): "
                                    + "the file was appended to or corrupted; regenerate it")
                }
                let next = try TokenStreamReader.readHeader(self, first: false, firstByteRead: true)
                guard next.isCompatible(with: header) else {
                    throw ToolError("\(name) concatenates streams with different headers (at byte \(start)\(offsetNote)): "
                                    + "kind, vocabulary, tokenizer, special ids and fields must match; "
                                    + "write the parts into separate files")
                }
                afterEnd = false
                segmentRecords = 0
                continue
            }
            switch tag {
            case StreamFormat.recordTag:
                let r = try readRecord(start: start)
                recordsRead += 1
                segmentRecords += 1
                return r
            case StreamFormat.endTag:
                var bytes = [UInt8](repeating: 0, count: 12)
                try readExact(&bytes, count: 12, what: "the end marker")
                let count = loadLE(bytes, at: 0, as: UInt64.self), crc = loadLE(bytes, at: 8, as: UInt32.self)
                guard crc32c([tag] + bytes[0..<8]) == crc else {
                    throw corrupt("checksum mismatch in the end marker at byte \(start)")
                }
                guard count == segmentRecords else {
                    throw corrupt("the end marker at byte \(start) counts \(count) records but \(segmentRecords) were read")
                }
                afterEnd = true
            default:
                throw corrupt("unexpected byte 0x\(String(format: "%02x", tag)) at byte \(start) where record "
                              + "\(recordsRead) or the end marker should start")
            }
        }
        return nil
    }

    // MARK: Parsing

    private func corrupt(_ what: String) -> ToolError {
        ToolError("\(name) is corrupted: \(what)\(isCompressed ? " (byte offsets are in the decompressed stream)" : ""); "
                  + "regenerate it")
    }

    private var offsetNote: String { isCompressed ? " of the decompressed stream" : "" }

    private static func readHeader(_ r: TokenStreamReader, first: Bool, firstByteRead: Bool = false) throws -> StreamHeader {
        let start = r.payloadOffset - (firstByteRead ? 1 : 0)
        var fixed = [UInt8](repeating: 0, count: 14)
        if firstByteRead {
            fixed[0] = StreamFormat.magic[0]
            try fixed.withUnsafeMutableBytes { try r.readExact($0.baseAddress! + 1, count: 13, what: "the header") }
        } else {
            try r.readExact(&fixed, count: 14, what: "the header")
        }
        guard Array(fixed[0..<8]) == StreamFormat.magic else {
            throw r.corrupt("bad magic at byte \(start): not a bd3 token stream header")
        }
        let version = loadLE(fixed, at: 8, as: UInt16.self)
        let bodyLength = Int(loadLE(fixed, at: 10, as: UInt32.self))
        if version > StreamFormat.version {
            throw ToolError("\(r.name) was written by a newer bd3 (token stream format v\(version); this build "
                            + "reads v\(StreamFormat.version)): upgrade bd3")
        }
        guard version >= 1 else { throw r.corrupt("format version 0 at byte \(start + 8)") }
        guard bodyLength >= 36 && bodyLength <= 1 << 26 else {
            throw r.corrupt("implausible header length \(bodyLength) at byte \(start + 10)")
        }
        var rest = [UInt8](repeating: 0, count: bodyLength + 4)
        try r.readExact(&rest, count: bodyLength + 4, what: "the header")
        var crc = crc32c(fixed)
        crc = rest.withUnsafeBytes { crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<bodyLength]), crc: crc) }
        let stored = rest.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: bodyLength, as: UInt32.self)) }
        guard crc == stored else { throw r.corrupt("header checksum mismatch (header at byte \(start))") }

        return try rest.withUnsafeBytes { buf -> StreamHeader in
            var b = LEParser(UnsafeRawBufferPointer(rebasing: buf[0..<bodyLength]))
            let kindByte = b.take(UInt8.self)!, fieldBits = b.take(UInt8.self)!
            let widthByte = b.take(UInt8.self)!, reserved = b.take(UInt8.self)!
            guard let kind = StreamKind(rawValue: kindByte) else {
                throw ToolError("\(r.name) has unknown stream kind \(kindByte): written by a newer bd3? upgrade bd3")
            }
            guard fieldBits & ~TokenFields.known.rawValue == 0 else {
                throw ToolError("\(r.name) declares unknown per-token fields (bits 0x\(String(fieldBits, radix: 16))): "
                                + "written by a newer bd3? upgrade bd3")
            }
            guard version == StreamFormat.version(for: TokenFields(rawValue: fieldBits)) else {
                throw r.corrupt("header of format v\(version) declares fields 0x\(String(fieldBits, radix: 16)) (margins need v2, v1 otherwise)")
            }
            let vocab = Int(b.take(UInt32.self)!)
            guard vocab >= 1 && vocab <= StreamFormat.maxVocab else { throw r.corrupt("vocabulary size \(vocab) in the header") }
            guard Int(widthByte) == StreamFormat.tokenWidth(vocabSize: vocab), reserved == 0 else {
                throw r.corrupt("token width \(widthByte) does not match vocabulary size \(vocab)")
            }
            let fingerprint = b.take(UInt64.self)!
            var ids: [Int32] = []
            for _ in 0..<4 {
                let id = b.take(Int32.self)!
                guard id == -1 || (id >= 0 && Int(id) < vocab) else {
                    throw r.corrupt("special token id \(id) outside the vocabulary (size \(vocab))")
                }
                ids.append(id)
            }
            let count = Int(b.take(UInt32.self)!)
            var attributes: [String: String] = [:]
            for _ in 0..<count {
                guard let key = b.string(), let value = b.string(), !key.isEmpty, attributes[key] == nil else {
                    throw r.corrupt("malformed attributes in the header at byte \(start)")
                }
                attributes[key] = value
            }
            guard b.remaining == 0 else { throw r.corrupt("\(b.remaining) unexpected bytes at the end of the header") }
            return StreamHeader(kind: kind, vocabSize: vocab, tokenizerFingerprint: fingerprint,
                                special: SpecialTokens(bos: ids[0], eos: ids[1], mask: ids[2], pad: ids[3]),
                                fields: TokenFields(rawValue: fieldBits), attributes: attributes)
        }
    }

    private func readRecord(start: UInt64) throws -> TokenRecord {
        let number = recordsRead
        let what = "record \(number)"
        var lengthBytes: [UInt8] = [0, 0, 0, 0]
        try readExact(&lengthBytes, count: 4, what: what)
        let length = Int(lengthBytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) })
        guard length >= StreamFormat.recordFixedBytes else {
            throw corrupt("record \(number) at byte \(start) has impossible length \(length)")
        }
        // Grow the buffer only as bytes actually arrive, so a corrupted length cannot allocate gigabytes.
        var filled = 0
        while filled < length {
            let want = min(length - filled, max(1 << 20, filled))
            if body.count < filled + want { body.append(contentsOf: repeatElement(0, count: filled + want - body.count)) }
            try body.withUnsafeMutableBytes { try readExact($0.baseAddress! + filled, count: want, what: what) }
            filled += want
        }
        var crcBytes: [UInt8] = [0, 0, 0, 0]
        try readExact(&crcBytes, count: 4, what: what)
        let stored = crcBytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
        var crc = crc32c([StreamFormat.recordTag] + lengthBytes)
        crc = body.withUnsafeBytes { crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<length]), crc: crc) }
        guard crc == stored else { throw corrupt("checksum mismatch in record \(number) (at byte \(start))") }

        let fields = header.fields, vocab = UInt32(header.vocabSize), width = self.width
        return try body.withUnsafeBytes { all -> TokenRecord in
            let buf = UnsafeRawBufferPointer(rebasing: all[0..<length])
            var p = LEParser(buf)
            let id = p.take(UInt64.self)!, nfe = p.take(UInt64.self)!
            let prompt = Int(p.take(UInt32.self)!), n = Int(p.take(UInt32.self)!), stageCount = Int(p.take(UInt32.self)!)
            var stages: [String] = []
            for _ in 0..<stageCount {
                guard let s = p.string() else { throw corrupt("record \(number) (at byte \(start)): stage strings overrun the record") }
                stages.append(s)
            }
            var perToken = width
            if fields.contains(.confidence) { perToken += 4 }
            if fields.contains(.unmaskStep) { perToken += 4 }
            if fields.contains(.margin) { perToken += 4 }
            guard p.remaining == n * perToken else {
                throw corrupt("record \(number) (at byte \(start)) declares \(n) tokens but holds \(p.remaining) bytes of token data")
            }
            guard prompt <= n else { throw corrupt("record \(number): prompt length \(prompt) exceeds its \(n) tokens") }
            let src = p.base + p.pos
            var badToken: UInt32?
            let tokens = [Int32](unsafeUninitializedCapacity: n) { t, count in
                if width == 2 {
                    for i in 0..<n {
                        let v = UInt32(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                        if v >= vocab { badToken = v }
                        t[i] = Int32(v)
                    }
                } else {
                    for i in 0..<n {
                        let v = UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                        if v >= vocab { badToken = v }
                        t[i] = Int32(bitPattern: v)
                    }
                }
                count = n
            }
            if let t = badToken { throw corrupt("record \(number) (at byte \(start)) holds token id \(t) outside the vocabulary (size \(vocab))") }
            var offset = width * n
            var confidence: [Float]?
            if fields.contains(.confidence) {
                let o = offset
                confidence = [Float](unsafeUninitializedCapacity: n) { c, count in
                    for i in 0..<n {
                        c[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: o + 4 * i, as: UInt32.self)))
                    }
                    count = n
                }
                offset += 4 * n
            }
            var steps: [UInt32]?
            if fields.contains(.unmaskStep) {
                let o = offset
                steps = [UInt32](unsafeUninitializedCapacity: n) { s, count in
                    for i in 0..<n { s[i] = UInt32(littleEndian: src.loadUnaligned(fromByteOffset: o + 4 * i, as: UInt32.self)) }
                    count = n
                }
                offset += 4 * n
            }
            var margin: [Float]?
            if fields.contains(.margin) {
                let o = offset
                margin = (0..<n).map { Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: o + 4 * $0, as: UInt32.self))) }
            }
            return TokenRecord(id: id, tokens: tokens, confidence: confidence, unmaskStep: steps,
                               nfe: nfe, promptLength: prompt, stages: stages, margin: margin)
        }
    }

    // MARK: Payload bytes

    private func readExact(_ dst: UnsafeMutableRawPointer, count: Int, what: String) throws {
        let start = payloadOffset
        let got = try readPayload(into: dst, count: count)
        if got < count {
            throw ToolError("\(name) is truncated: it ends at byte \(start + UInt64(got))\(offsetNote) inside \(what) "
                            + "(after \(recordsRead) complete records); the writer was interrupted or the file was "
                            + "cut short: regenerate it")
        }
    }

    private func readExact(_ dst: inout [UInt8], count: Int, what: String) throws {
        try dst.withUnsafeMutableBytes { try readExact($0.baseAddress!, count: count, what: what) }
    }

    /// Copies up to `count` payload bytes; fewer only at the end of the input.
    private func readPayload(into dst: UnsafeMutableRawPointer, count: Int) throws -> Int {
        var got = 0
        while got < count {
            if decPos == decEnd {
                if try !fillDecoded() { break }
            }
            let n = min(count - got, decEnd - decPos)
            dec.withUnsafeBytes { (dst + got).copyMemory(from: $0.baseAddress! + decPos, byteCount: n) }
            decPos += n
            got += n
        }
        payloadOffset += UInt64(got)
        return got
    }

    /// Refills `dec`; false at the clean end of the input. Throws on a truncated or corrupt zstd frame.
    private func fillDecoded() throws -> Bool {
        decPos = 0; decEnd = 0
        guard let d = dctx else {
            if rawPos < rawEnd {
                let n = rawEnd - rawPos
                raw.withUnsafeBytes { r in dec.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: r.baseAddress! + rawPos, byteCount: n) } }
                rawPos = rawEnd
                decEnd = n
                return true
            }
            if rawEOF { return false }
            let n = try dec.withUnsafeMutableBytes { try source.read(into: $0) }
            if n == 0 { rawEOF = true; return false }
            decEnd = n
            return true
        }
        while true {
            if rawPos == rawEnd {
                if !rawEOF {
                    rawBase += UInt64(rawEnd)
                    rawPos = 0
                    rawEnd = try raw.withUnsafeMutableBytes { try source.read(into: $0) }
                    if rawEnd == 0 { rawEOF = true }
                    continue
                }
                if frameOpen {
                    throw ToolError("\(name) is truncated: the zstd frame ends early at compressed byte \(rawBase + UInt64(rawEnd)) "
                                    + "(after \(recordsRead) complete records); the writer was interrupted or the "
                                    + "file was cut short: regenerate it")
                }
                return false
            }
            let inputStart = rawBase + UInt64(rawPos)
            var produced = 0, consumed = 0
            let ret = raw.withUnsafeBytes { r in
                dec.withUnsafeMutableBytes { o -> Int in
                    var input = ZSTD_inBuffer(src: r.baseAddress! + rawPos, size: rawEnd - rawPos, pos: 0)
                    var output = ZSTD_outBuffer(dst: o.baseAddress, size: o.count, pos: 0)
                    let ret = ZSTD_decompressStream(d, &output, &input)
                    produced = output.pos; consumed = input.pos
                    return ret
                }
            }
            if ZSTD_isError(ret) != 0 {
                let code = ZSTD_getErrorCode(ret)
                if code == ZSTD_error_prefix_unknown && !frameOpen {
                    if afterEnd {
                        throw ToolError("\(name) has unexpected bytes after the end of the stream (compressed byte "
                                        + "\(inputStart)): they are not a zstd frame; the file was appended to or "
                                        + "corrupted: regenerate it")
                    }
                    throw ToolError("\(name) is corrupted: compressed byte \(inputStart) does not start a zstd frame; regenerate it")
                }
                if code == ZSTD_error_checksum_wrong {
                    throw ToolError("\(name) is corrupted: the zstd checksum of the frame ending near compressed byte "
                                    + "\(inputStart + UInt64(consumed)) does not match; regenerate it")
                }
                throw ToolError("\(name) is corrupted near compressed byte \(inputStart): zstd says "
                                + "\"\(String(cString: ZSTD_getErrorName(ret)))\"; regenerate it")
            }
            rawPos += consumed
            frameOpen = ret != 0
            decEnd = produced
            if produced > 0 { return true }
            if consumed == 0 && rawPos < rawEnd {
                throw ToolError("internal error: zstd made no progress at compressed byte \(inputStart)")
            }
        }
    }
}
