// safetensors reader/writer (format: 8-byte little-endian header length N, N bytes of JSON header,
// then the data region; each header entry {"dtype","shape","data_offsets":[begin,end]} is relative to
// the data region; "__metadata__" is an optional string→string map).
//
// Public API:
//   SafetensorsFile(path:) throws / SafetensorsFile(bytes:) throws   — strict validation of the header; a file's
//     tensors are read one at a time when asked for (peak memory of a load: the model + its largest tensor)
//     .metadata, .names, .entry(name), .floats(name) -> [Float], .int32s(name) -> [Int32]
//   SafetensorsWriter: add(name:shape:floats:), add(name:shape:int32s:), add(name:shape:int64s:),
//     add(name:shape:bools:), write(path:metadata:) (atomic), serialize(metadata:) -> [UInt8]
import Foundation

public struct SafetensorsEntry: Equatable, Sendable {
    public let name: String
    public let dtype: String
    public let shape: [Int]
    public let begin: Int   // byte offset within the data region
    public let end: Int
    /// Element count; the reader checked it for overflow.
    public var count: Int { shape.reduce(1, *) }
    /// Floating-point dtypes: the only ones weights may have.
    public var isFloat: Bool { ["F32", "F16", "BF16", "F64"].contains(dtype) }
}

public final class SafetensorsFile {
    public let metadata: [String: String]
    public let entries: [String: SafetensorsEntry]
    /// Where the tensor bytes are: in memory, or in the open file, read one tensor at a time (so loading a
    /// model holds the model's buffers plus one tensor, never the whole file).
    private enum Storage { case memory([UInt8]), file(Int32) }
    private let storage: Storage
    private let dataStart: Int
    public let path: String

    public var names: [String] { entries.keys.sorted() }
    public func entry(_ name: String) -> SafetensorsEntry? { entries[name] }

    /// Opens the file and validates its header; the tensors are read when asked for.
    public init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ModelError("cannot read safetensors file \(path): missing or unreadable (\(String(cString: strerror(errno))))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { close(fd); throw ModelError("cannot read safetensors file \(path): \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) != S_IFDIR else { close(fd); throw ModelError("\(path) is a directory, not a safetensors file") }
        do {
            let (m, e, start) = try Self.layout(size: Int(st.st_size), path: path) { try Self.pread(fd, at: $0, count: $1, path: path) }
            metadata = m; entries = e; dataStart = start
        } catch { close(fd); throw error }
        self.path = path
        storage = .file(fd)
    }

    deinit { if case .file(let fd) = storage { close(fd) } }

    static let elementSize: [String: Int] = ["F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4,
                                             "I16": 2, "I8": 1, "U8": 1, "BOOL": 1]

    public init(bytes: [UInt8], path: String = "<memory>") throws {
        self.path = path
        (metadata, entries, dataStart) = try Self.layout(size: bytes.count, path: path) { Array(bytes[$0..<($0 + $1)]) }
        storage = .memory(bytes)
    }

    static func corrupt(_ path: String, _ why: String) -> ModelError {
        ModelError("\(path): corrupt or truncated safetensors file: \(why); copy or download it again (or use an earlier checkpoint)")
    }

    /// `count` bytes at `offset` of the file, all of them or an error (a file cut short after it was opened).
    static func pread(_ fd: Int32, at offset: Int, count: Int, into p: UnsafeMutableRawPointer, path: String) throws {
        var done = 0
        while done < count {
            let r = Foundation.pread(fd, p + done, count - done, off_t(offset + done))
            if r < 0 && errno == EINTR { continue }
            guard r > 0 else {
                throw r == 0 ? corrupt(path, "it ends at byte \(offset + done), before the \(count) bytes at \(offset) (shortened while in use?)")
                             : ModelError("cannot read \(path): \(String(cString: strerror(errno)))")
            }
            done += r
        }
    }

    static func pread(_ fd: Int32, at offset: Int, count: Int, path: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { if count > 0 { try pread(fd, at: offset, count: count, into: $0.baseAddress!, path: path) } }
        return out
    }

    /// Validates the header of a file of `size` bytes (`read(offset, count)` gives its bytes): every entry's dtype,
    /// shape and offsets, and that the tensors tile the data region exactly. Nothing is sized from the file before
    /// its numbers are checked against the file's size.
    static func layout(size: Int, path: String, read: (Int, Int) throws -> [UInt8]) throws -> ([String: String], [String: SafetensorsEntry], Int) {
        func bad(_ why: String) -> ModelError { corrupt(path, why) }
        guard size >= 8 else { throw bad("shorter than the 8-byte header length") }
        let head = try read(0, 8)
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(head[i]) << (8 * UInt64(i)) }
        guard n >= 2, n <= UInt64(size - 8), n < 100_000_000 else {
            if head[0] == 0x50 && head[1] == 0x4B && head[2] == 0x03 && head[3] == 0x04 {
                throw ModelError("\(path) is a zip archive (a torch/Lightning .ckpt pickle), not a safetensors file; convert it first: python3 pipelines/convert/lightning_to_safetensors.py \(path) \((path as NSString).deletingPathExtension).safetensors")
            }
            throw bad("header length \(n) does not fit in the file of \(size) bytes")
        }
        let headerEnd = 8 + Int(n)
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: Data(try read(8, Int(n)))) }
        catch let e as ModelError { throw e }
        catch { throw bad("header is not valid JSON") }
        guard let dict = json as? [String: Any] else { throw bad("header is not a JSON object") }
        var meta: [String: String] = [:]
        var entries: [String: SafetensorsEntry] = [:]
        for (key, value) in dict {
            if key == "__metadata__" {
                guard let m = value as? [String: Any] else { throw bad("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw bad("__metadata__[\(k)] is not a string") }
                    meta[k] = s
                }
                continue
            }
            guard let e = value as? [String: Any], let dtype = e["dtype"] as? String,
                  let shapeAny = e["shape"] as? [Any], let offs = e["data_offsets"] as? [Any], offs.count == 2
            else { throw bad("entry \(key) lacks dtype/shape/data_offsets") }
            guard let esize = SafetensorsFile.elementSize[dtype] else { throw bad("entry \(key) has unsupported dtype \(dtype)") }
            guard entries.count < 1_000_000, shapeAny.count <= 8 else { throw bad("entry \(key): too many tensors or dimensions") }
            // Every dimension and the element count checked for overflow before anything is sized from them.
            var shape: [Int] = []
            var count = 1
            for s in shapeAny {
                guard let num = s as? NSNumber, let v = Int64(exactly: num.doubleValue),
                      v >= 0, v < (1 << 40) else { throw bad("entry \(key) has a bad shape") }
                let (c, o) = count.multipliedReportingOverflow(by: Int(v))
                guard !o, c <= size else { throw bad("entry \(key): shape \(shapeAny.map { "\($0)" }) holds more elements than the file has bytes") }
                count = c
                shape.append(Int(v))
            }
            guard let bn = offs[0] as? NSNumber, let enn = offs[1] as? NSNumber,
                  let b = Int64(exactly: bn.doubleValue), let en = Int64(exactly: enn.doubleValue),
                  b >= 0, en >= b, en <= Int64(size) else { throw bad("entry \(key) has bad data_offsets") }
            guard Int(en - b) == count * esize else {
                throw bad("entry \(key): \(en - b) bytes for \(count) elements of \(dtype)")
            }
            entries[key] = SafetensorsEntry(name: key, dtype: dtype, shape: shape, begin: Int(b), end: Int(en))
        }
        // Offsets must tile the data region exactly: in range, non-overlapping, no trailing bytes.
        let dataSize = size - headerEnd
        let sorted = entries.values.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var cursor = 0
        for e in sorted {
            guard e.end <= dataSize else { throw bad("entry \(e.name) ends at \(e.end), past the data region of \(dataSize) bytes (truncated?)") }
            guard e.begin >= cursor else { throw bad("entry \(e.name) overlaps the previous tensor") }
            guard e.begin == cursor else { throw bad("gap of \(e.begin - cursor) bytes before entry \(e.name)") }
            cursor = e.end
        }
        guard cursor == dataSize else { throw bad("data region is \(dataSize) bytes but tensors cover \(cursor)") }
        return (meta, entries, headerEnd)
    }

    /// The raw bytes of one tensor for the duration of `body`: in place in memory, or read from the file into a
    /// buffer released afterwards.
    private func withData<R>(_ e: SafetensorsEntry, _ body: (UnsafeRawPointer) throws -> R) throws -> R {
        switch storage {
        case .memory(let bytes):
            return try bytes.withUnsafeBytes { try body($0.baseAddress! + dataStart + e.begin) }
        case .file(let fd):
            let n = e.end - e.begin
            let buf = UnsafeMutableRawPointer.allocate(byteCount: max(n, 1), alignment: 16)
            defer { buf.deallocate() }
            try Self.pread(fd, at: dataStart + e.begin, count: n, into: buf, path: path)
            return try body(UnsafeRawPointer(buf))
        }
    }

    private func require(_ name: String) throws -> SafetensorsEntry {
        guard let e = entries[name] else { throw ModelError("\(path): no tensor named \(name)") }
        return e
    }

    /// Any float or integer dtype converted to Float.
    public func floats(_ name: String) throws -> [Float] {
        let e = try require(name)
        var out = [Float](repeating: 0, count: e.count)
        try withData(e) { p in
            for i in 0..<e.count {
                switch e.dtype {
                case "F32": out[i] = Float(bitPattern: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian)
                case "F64": out[i] = Float(Double(bitPattern: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self).littleEndian))
                case "F16": out[i] = Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian))
                case "BF16": out[i] = Float(bitPattern: UInt32(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16)
                case "I64": out[i] = Float(Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                case "I32": out[i] = Float(Int32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                case "I16": out[i] = Float(Int16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)))
                case "I8": out[i] = Float(p.load(fromByteOffset: i, as: Int8.self))
                default: out[i] = Float(p.load(fromByteOffset: i, as: UInt8.self))   // U8, BOOL
                }
            }
        }
        return out
    }

    /// A weight tensor into `out` (its element count): F32, F16, BF16 and F64 read as what they are; integer and
    /// bool dtypes are refused, and so is any non-finite value (a corrupt or diverged checkpoint).
    public func weights(_ name: String, into out: UnsafeMutableBufferPointer<Float>) throws {
        let e = try require(name)
        guard e.isFloat else {
            throw ModelError("\(path): tensor \(name) has dtype \(e.dtype); weights must be F32, F16, BF16 or F64")
        }
        precondition(out.count == e.count)
        var bad = -1
        try withData(e) { p in
            for i in 0..<e.count {
                let v: Float
                switch e.dtype {
                case "F32": v = Float(bitPattern: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian)
                case "F16": v = Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian))
                case "BF16": v = Float(bitPattern: UInt32(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16)
                default: v = Float(Double(bitPattern: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self).littleEndian))
                }
                if !v.isFinite && bad < 0 { bad = i }
                out[i] = v
            }
        }
        if bad >= 0 {
            throw ModelError("\(path): tensor \(name) holds a non-finite value at element \(bad); the checkpoint is corrupt or the run diverged — use an earlier checkpoint")
        }
    }

    /// Feeds the tensors in name order (name, dtype, shape, raw data) to `feed`: the bytes a content checksum covers,
    /// equal to `SafetensorsWriter.digest` of the writer that made the file. One tensor in memory at a time.
    public func digest(_ feed: (UnsafeRawBufferPointer) -> Void) throws {
        for name in names {
            let e = entries[name]!
            SafetensorsWriter.feedIndex(name: name, dtype: e.dtype, shape: e.shape, feed)
            try withData(e) { feed(UnsafeRawBufferPointer(start: $0, count: e.end - e.begin)) }
        }
    }

    /// Integer (or bool) dtypes converted to Int32; values outside Int32 are an error, floats are refused.
    public func int32s(_ name: String) throws -> [Int32] {
        let e = try require(name)
        var out = [Int32](repeating: 0, count: e.count)
        var overflow = false
        try withData(e) { p in
            for i in 0..<e.count {
                switch e.dtype {
                case "I64":
                    let v = Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
                    if v < Int64(Int32.min) || v > Int64(Int32.max) { overflow = true } else { out[i] = Int32(v) }
                case "I32": out[i] = Int32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))
                case "I16": out[i] = Int32(Int16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)))
                case "I8": out[i] = Int32(p.load(fromByteOffset: i, as: Int8.self))
                case "U8", "BOOL": out[i] = Int32(p.load(fromByteOffset: i, as: UInt8.self))
                default: throw ModelError("\(path): tensor \(name) has dtype \(e.dtype), expected an integer dtype")
                }
            }
        }
        if overflow { throw ModelError("\(path): tensor \(name) has values outside the Int32 range") }
        return out
    }
}

public struct SafetensorsWriter {
    private var items: [(name: String, dtype: String, shape: [Int], data: [UInt8])] = []
    public init() {}

    /// One tensor of fixed-width integers (or float bit patterns), stored little-endian.
    private mutating func addLittleEndian<T: FixedWidthInteger>(name: String, dtype: String, shape: [Int], count: Int, _ value: (Int) -> T) {
        precondition(shape.reduce(1, *) == count, "shape \(shape) does not match \(count) values for \(name)")
        let w = MemoryLayout<T>.size
        var d = [UInt8](repeating: 0, count: w * count)
        d.withUnsafeMutableBytes { raw in
            for i in 0..<count { raw.storeBytes(of: value(i).littleEndian, toByteOffset: w * i, as: T.self) }
        }
        items.append((name, dtype, shape, d))
    }

    public mutating func add(name: String, shape: [Int], floats: UnsafeBufferPointer<Float>) {
        addLittleEndian(name: name, dtype: "F32", shape: shape, count: floats.count) { floats[$0].bitPattern }
    }
    public mutating func add(name: String, shape: [Int], floats: [Float]) {
        floats.withUnsafeBufferPointer { add(name: name, shape: shape, floats: $0) }
    }
    public mutating func add(name: String, shape: [Int], int32s: [Int32]) {
        addLittleEndian(name: name, dtype: "I32", shape: shape, count: int32s.count) { int32s[$0] }
    }
    public mutating func add(name: String, shape: [Int], int64s: [Int64]) {
        addLittleEndian(name: name, dtype: "I64", shape: shape, count: int64s.count) { int64s[$0] }
    }
    public mutating func add(name: String, shape: [Int], bools: [Bool]) {
        precondition(shape.reduce(1, *) == bools.count)
        items.append((name, "BOOL", shape, bools.map { $0 ? 1 : 0 }))
    }

    static func feedIndex(name: String, dtype: String, shape: [Int], _ feed: (UnsafeRawBufferPointer) -> Void) {
        let s = Array("\(name)\u{0}\(dtype)\u{0}\(shape.map(String.init).joined(separator: ","))\u{0}".utf8)
        s.withUnsafeBytes { feed($0) }
    }

    /// The same bytes as `SafetensorsFile.digest` of the file this writer makes.
    public func digest(_ feed: (UnsafeRawBufferPointer) -> Void) {
        for it in items.sorted(by: { $0.name < $1.name }) {
            Self.feedIndex(name: it.name, dtype: it.dtype, shape: it.shape, feed)
            it.data.withUnsafeBytes { feed($0) }
        }
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }

    /// The whole file as bytes. Tensors are laid out in the order added; header padded with spaces to 8 bytes.
    public func serialize(metadata: [String: String] = [:]) -> [UInt8] {
        var parts: [String] = []
        if !metadata.isEmpty {
            let m = metadata.keys.sorted().map { "\(Self.jsonString($0)):\(Self.jsonString(metadata[$0]!))" }
            parts.append("\"__metadata__\":{\(m.joined(separator: ","))}")
        }
        var offset = 0
        for it in items {
            let shape = it.shape.map(String.init).joined(separator: ",")
            parts.append("\(Self.jsonString(it.name)):{\"dtype\":\"\(it.dtype)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + it.data.count)]}")
            offset += it.data.count
        }
        var header = Array("{\(parts.joined(separator: ","))}".utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + header.count + offset)
        let n = UInt64(header.count)
        for i in 0..<8 { out.append(UInt8((n >> (8 * UInt64(i))) & 0xff)) }
        out += header
        for it in items { out += it.data }
        return out
    }

    /// Atomic write: temp file in the same directory, fsync, rename.
    public func write(path: String, metadata: [String: String] = [:]) throws {
        let bytes = serialize(metadata: metadata)
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = (dir.isEmpty ? "." : dir) + "/.\((path as NSString).lastPathComponent).tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw ModelError("cannot create \(tmp): \(String(cString: strerror(errno))); check the output directory") }
        var ok = true
        bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let w = Foundation.write(fd, raw.baseAddress! + done, raw.count - done)
                if w <= 0 { ok = false; break }
                done += w
            }
        }
        if ok && fsync(fd) != 0 { ok = false }
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw ModelError("cannot write \(path): \(String(cString: strerror(errno))); check disk space and permissions")
        }
    }
}
