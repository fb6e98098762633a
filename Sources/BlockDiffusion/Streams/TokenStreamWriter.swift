// Writes a token stream v1 (docs/stream-format.md).
//
//   public init(sink: ByteSink, header: StreamHeader, compress: Bool = true, level: Int32 = 1,
//               flushEachRecord: Bool = true) throws
//   public func write(_ record: TokenRecord) throws
//   public func finish() throws
//
// Compression uses the zstd streaming API on one frame with the content checksum on. With
// `flushEachRecord` (the default) each record ends a zstd block (ZSTD_e_flush) and the sink is
// flushed, so a reader downstream in a pipe gets every record as soon as it is written. Writers of
// big files nobody reads concurrently (pack-blocks) turn it off for speed and ratio.
// The header is always flushed at once, so a downstream reader can check it early.
// `finish()` writes the end marker and closes the frame; a stream without it reads as truncated.
// The writer does not commit the sink: the caller commits an OutputFile after `finish()`.

import CZstd
import Foundation

public final class TokenStreamWriter {
    public let header: StreamHeader
    public private(set) var recordCount: UInt64 = 0
    private let sink: ByteSink
    private var cctx: OpaquePointer?
    private var out: [UInt8]
    private let flushEachRecord: Bool
    private let width: Int
    private var failed = false
    private var finished = false

    public init(sink: ByteSink, header: StreamHeader, compress: Bool = true, level: Int32 = 1,
                flushEachRecord: Bool = true) throws {
        try TokenStreamWriter.validate(header)
        self.header = header
        self.sink = sink
        self.flushEachRecord = flushEachRecord
        self.width = StreamFormat.tokenWidth(vocabSize: header.vocabSize)
        if compress {
            guard let c = ZSTD_createCCtx() else { throw ToolError("out of memory creating a zstd compressor") }
            cctx = c
            try TokenStreamWriter.check(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level), "set level \(level)")
            try TokenStreamWriter.check(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1), "enable checksums")
            out = [UInt8](repeating: 0, count: ZSTD_CStreamOutSize())
        } else {
            out = []
        }
        try emit(TokenStreamWriter.encodeHeader(header), flush: true)
    }

    deinit { if let c = cctx { ZSTD_freeCCtx(c) } }

    public func write(_ record: TokenRecord) throws {
        guard !finished else { throw ToolError("internal error: token stream written after finish()") }
        guard !failed else { throw ToolError("internal error: token stream written after a failed write") }
        let bytes = try encodeRecord(record)
        try emit(bytes, flush: flushEachRecord)
        recordCount += 1
    }

    /// Writes the end marker and ends the zstd frame, then flushes the sink.
    public func finish() throws {
        guard !finished else { return }
        guard !failed else { throw ToolError("internal error: finish() after a failed write") }
        var end: [UInt8] = [StreamFormat.endTag]
        end.appendLE(recordCount)
        end.appendLE(crc32c(end))
        try emit(end, flush: true, end: true)
        finished = true
    }

    // MARK: Encoding

    static func validate(_ h: StreamHeader) throws {
        guard h.vocabSize >= 1 && h.vocabSize <= StreamFormat.maxVocab else {
            throw ToolError("internal error: vocabulary size \(h.vocabSize) is outside 1...2^31")
        }
        for (name, id) in [("BOS", h.special.bos), ("EOS", h.special.eos), ("MASK", h.special.mask), ("PAD", h.special.pad)] {
            guard id == -1 || (id >= 0 && Int(id) < h.vocabSize) else {
                throw ToolError("internal error: \(name) id \(id) is outside the vocabulary (size \(h.vocabSize))")
            }
        }
        guard h.fields.rawValue & ~TokenFields.known.rawValue == 0 else {
            throw ToolError("internal error: unknown token fields \(h.fields.rawValue)")
        }
        guard !h.attributes.keys.contains("") else { throw ToolError("internal error: empty attribute key") }
    }

    static func encodeHeader(_ h: StreamHeader) -> [UInt8] {
        var body: [UInt8] = []
        body.append(h.kind.rawValue)
        body.append(h.fields.rawValue)
        body.append(UInt8(StreamFormat.tokenWidth(vocabSize: h.vocabSize)))
        body.append(0)
        body.appendLE(UInt32(h.vocabSize))
        body.appendLE(h.tokenizerFingerprint)
        for id in [h.special.bos, h.special.eos, h.special.mask, h.special.pad] { body.appendLE(id) }
        body.appendLE(UInt32(h.attributes.count))
        for key in h.attributes.keys.sorted() {
            body.appendString(key)
            body.appendString(h.attributes[key]!)
        }
        var bytes = StreamFormat.magic
        bytes.appendLE(StreamFormat.version(for: h.fields))
        bytes.appendLE(UInt32(body.count))
        bytes += body
        bytes.appendLE(crc32c(bytes))
        return bytes
    }

    func encodeRecord(_ r: TokenRecord) throws -> [UInt8] {
        let n = r.tokens.count
        let number = recordCount
        func bad(_ what: String) -> ToolError {
            ToolError("internal error: record \(number) (id \(r.id)) cannot be written: \(what) (a bug in this tool; please report it)")
        }
        if header.fields.contains(.confidence) != (r.confidence != nil) {
            throw bad(header.fields.contains(.confidence) ? "confidence missing but the stream declares it"
                                                          : "has confidence but the stream does not declare it")
        }
        if header.fields.contains(.unmaskStep) != (r.unmaskStep != nil) {
            throw bad(header.fields.contains(.unmaskStep) ? "unmask steps missing but the stream declares them"
                                                          : "has unmask steps but the stream does not declare them")
        }
        if header.fields.contains(.margin) != (r.margin != nil) {
            throw bad(header.fields.contains(.margin) ? "margins missing but the stream declares them"
                                                      : "has margins but the stream does not declare them")
        }
        if let m = r.margin, m.count != n { throw bad("\(m.count) margins for \(n) tokens") }
        if let c = r.confidence, c.count != n { throw bad("\(c.count) confidences for \(n) tokens") }
        if let s = r.unmaskStep, s.count != n { throw bad("\(s.count) unmask steps for \(n) tokens") }
        guard r.promptLength >= 0 && r.promptLength <= n else { throw bad("prompt length \(r.promptLength) > \(n) tokens") }
        guard n <= Int(UInt32.max) / 8 else { throw bad("\(n) tokens is too many for one record") }
        let stageBytes = r.stages.map { Array($0.utf8) }
        var bodySize = StreamFormat.recordFixedBytes + stageBytes.reduce(0) { $0 + 4 + $1.count } + n * width
        if r.confidence != nil { bodySize += 4 * n }
        if r.unmaskStep != nil { bodySize += 4 * n }
        if r.margin != nil { bodySize += 4 * n }
        guard bodySize <= Int(UInt32.max) else { throw bad("record body of \(bodySize) bytes exceeds 4 GiB") }
        let total = 1 + 4 + bodySize + 4
        let vocab = UInt32(header.vocabSize)
        var badToken: Int32?
        let bytes = [UInt8](unsafeUninitializedCapacity: total) { buf, count in
            let base = UnsafeMutableRawPointer(buf.baseAddress!)
            var p = 0
            func put<T: FixedWidthInteger>(_ v: T) {
                base.storeBytes(of: v.littleEndian, toByteOffset: p, as: T.self); p += MemoryLayout<T>.size
            }
            put(StreamFormat.recordTag)
            put(UInt32(bodySize))
            put(r.id); put(r.nfe); put(UInt32(r.promptLength)); put(UInt32(n)); put(UInt32(stageBytes.count))
            for s in stageBytes {
                put(UInt32(s.count))
                s.withUnsafeBytes { (base + p).copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(base), byteCount: s.count) }
                p += s.count
            }
            r.tokens.withUnsafeBufferPointer { t in
                if width == 2 {
                    let dst = (base + p)
                    for i in 0..<n {
                        let v = t[i]
                        if UInt32(bitPattern: v) >= vocab { badToken = v }
                        dst.storeBytes(of: UInt16(truncatingIfNeeded: v).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                    }
                } else {
                    for i in 0..<n where UInt32(bitPattern: t[i]) >= vocab { badToken = t[i] }
                    #if _endian(little)
                    if n > 0 { (base + p).copyMemory(from: t.baseAddress!, byteCount: 4 * n) }
                    #else
                    for i in 0..<n { (base + p).storeBytes(of: t[i].littleEndian, toByteOffset: 4 * i, as: Int32.self) }
                    #endif
                }
            }
            p += width * n
            if let c = r.confidence {
                c.withUnsafeBufferPointer { src in
                    #if _endian(little)
                    if n > 0 { (base + p).copyMemory(from: src.baseAddress!, byteCount: 4 * n) }
                    #else
                    for i in 0..<n { (base + p).storeBytes(of: src[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
                    #endif
                }
                p += 4 * n
            }
            if let s = r.unmaskStep {
                s.withUnsafeBufferPointer { src in
                    #if _endian(little)
                    if n > 0 { (base + p).copyMemory(from: src.baseAddress!, byteCount: 4 * n) }
                    #else
                    for i in 0..<n { (base + p).storeBytes(of: src[i].littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
                    #endif
                }
                p += 4 * n
            }
            if let m = r.margin {
                for i in 0..<n { (base + p).storeBytes(of: m[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
                p += 4 * n
            }
            let crc = crc32c(UnsafeRawBufferPointer(start: base, count: p))
            put(crc)
            count = p
        }
        if let t = badToken { throw bad("token id \(t) is outside the vocabulary (size \(header.vocabSize))") }
        assert(bytes.count == total)
        return bytes
    }

    // MARK: Output

    private func emit(_ bytes: [UInt8], flush: Bool, end: Bool = false) throws {
        do {
            guard let c = cctx else {
                try sink.write(bytes)
                if flush { try sink.flush() }
                return
            }
            let mode = end ? ZSTD_e_end : (flush ? ZSTD_e_flush : ZSTD_e_continue)
            try bytes.withUnsafeBytes { src in
                var input = ZSTD_inBuffer(src: src.baseAddress, size: src.count, pos: 0)
                try out.withUnsafeMutableBytes { dst in
                    while true {
                        var output = ZSTD_outBuffer(dst: dst.baseAddress, size: dst.count, pos: 0)
                        let remaining = ZSTD_compressStream2(c, &output, &input, mode)
                        try TokenStreamWriter.check(remaining, "compress")
                        if output.pos > 0 { try sink.write(UnsafeRawBufferPointer(start: dst.baseAddress, count: output.pos)) }
                        if mode == ZSTD_e_continue ? input.pos == input.size : remaining == 0 { break }
                    }
                }
            }
            if flush || end { try sink.flush() }
        } catch {
            failed = true
            throw error
        }
    }

    static func check(_ code: Int, _ what: String) throws {
        if ZSTD_isError(code) != 0 {
            throw ToolError("zstd could not \(what): \(String(cString: ZSTD_getErrorName(code)))"
                            + (what.hasPrefix("set level") ? " (use a level from 1 to 19)" : ""))
        }
    }
}
