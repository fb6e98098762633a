// Byte I/O shared by every tool.
//
//   public protocol ByteSource   read(into:) -> count, 0 = end of input
//   public protocol ByteSink     write(_:), flush()
//   public func openInput(_ path: String) throws -> ByteSource      "-" = stdin
//   public final class FileSource: ByteSource                       a POSIX file descriptor
//   public final class OutputFile: ByteSink                         atomic file or stdout
//   public final class FileSink: ByteSink                           an open descriptor (pipe), not atomic
//   public final class MemorySink / MemorySource                    for tests and in-memory pipelines
//
// OutputFile is the only way tools write results: bytes go to a temp file in the destination's
// directory (".NAME.tmp-PID-RANDOM"), `commit()` fsyncs it and renames it over NAME, `abort()`
// (or deinit without commit, or any write error) unlinks it. So NAME either holds a complete
// result or is untouched: a crash, a full disk or a closed pipe never leaves a half-written file.
// Temp files of killed processes are swept when NAME is next written (TempFiles.swift).

import Foundation

public protocol ByteSource: AnyObject {
    /// Reads up to `buffer.count` bytes; returns how many, 0 only at the end of input.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

public protocol ByteSink: AnyObject {
    func write(_ bytes: UnsafeRawBufferPointer) throws
    /// Hands buffered bytes to the OS (a pipe reader sees them). Not an fsync.
    func flush() throws
}

extension ByteSink {
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }
}

// MARK: - Input

/// Reads a file descriptor. Closes it on deinit when it owns it (not stdin).
public final class FileSource: ByteSource {
    public let fd: Int32
    public let name: String
    private let owns: Bool

    public init(fd: Int32, name: String, owns: Bool) {
        self.fd = fd; self.name = name; self.owns = owns
    }
    deinit { if owns { close(fd) } }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard buffer.count > 0 else { return 0 }
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw ToolError("cannot read \(name): \(errnoText(errno)) (check the file or device and rerun)")
        }
    }
}

/// Opens `path` for reading; "-" is stdin. Errors say what to do for the common mistakes.
public func openInput(_ path: String) throws -> ByteSource {
    if path == "-" { return FileSource(fd: 0, name: "stdin", owns: false) }
    var info = stat()
    if stat(path, &info) != 0 {
        let code = errno
        if code == ENOENT {
            throw ToolError("input '\(path)' does not exist: check the path (use '-' to read stdin)")
        }
        throw ToolError("cannot open input '\(path)': \(errnoText(code))")
    }
    if (info.st_mode & S_IFMT) == S_IFDIR {
        throw ToolError("input '\(path)' is a directory: give the path of a file inside it")
    }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 {
        let code = errno
        if code == EACCES {
            throw ToolError("cannot open input '\(path)': permission denied (check the file's permissions)")
        }
        throw ToolError("cannot open input '\(path)': \(errnoText(code))")
    }
    return FileSource(fd: fd, name: "'\(path)'", owns: true)
}

// MARK: - Output

/// Atomic output file, or stdout for "-". See the file header.
public final class OutputFile: ByteSink {
    public let path: String
    private var fd: Int32
    private let tempPath: String?      // nil for stdout
    private var buffer: [UInt8] = []
    private let bufferLimit = 1 << 20
    private var state: State = .open
    private var registrySlot = -1
    private enum State { case open, committed, aborted }

    /// Display name for messages.
    private var name: String { tempPath == nil ? "stdout" : "'\(path)'" }

    /// - Parameter allowTerminal: write to stdout even when it is a terminal (text output, or forced).
    public init(path: String, allowTerminal: Bool = false) throws {
        self.path = path
        if path == "-" {
            if !allowTerminal && isatty(1) == 1 {
                throw ToolError("refusing to write binary data to the terminal: redirect stdout "
                                + "(`> FILE` or `| next-tool`) or give -o FILE")
            }
            fd = 1
            tempPath = nil
        } else {
            if path.isEmpty { throw ToolError("output path is empty: give -o FILE or -o - for stdout") }
            var info = stat()
            if stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
                throw ToolError("output '\(path)' is a directory: give a file name, e.g. \(path)/out.tok")
            }
            let url = URL(fileURLWithPath: path)
            let dir = url.deletingLastPathComponent().path
            let base = url.lastPathComponent
            var dirInfo = stat()
            if stat(dir, &dirInfo) != 0 || (dirInfo.st_mode & S_IFMT) != S_IFDIR {
                throw ToolError("cannot write '\(path)': directory '\(dir)' does not exist (create it first)")
            }
            sweepStaleTempFiles(for: path)
            var created: (Int32, String, Int)?
            for _ in 0..<16 {
                let tmp = dir + "/." + base + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
                // Registered before it exists: a signal arriving between open() and a later registration
                // would leave the file behind (the handler unlinks what is registered, a missing file is harmless).
                let slot = TempFileRegistry.register(tmp)
                let f = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
                if f >= 0 { created = (f, tmp, slot); break }
                let err = errno
                TempFileRegistry.unregister(slot)
                errno = err
                if errno != EEXIST {
                    throw ToolError("cannot create a temporary file in '\(dir)' for '\(path)': \(errnoText(errno))"
                                    + " (check that the directory is writable)")
                }
            }
            guard let (f, tmp, slot) = created else {
                throw ToolError("cannot create a temporary file in '\(dir)': too many name collisions")
            }
            fd = f
            tempPath = tmp
            registrySlot = slot
        }
        buffer.reserveCapacity(bufferLimit)
    }

    deinit {
        if state == .open { abort() }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard state == .open else { throw ToolError("internal error: write to \(name) after commit/abort") }
        if buffer.count + bytes.count > bufferLimit {
            try drain()
            if bytes.count >= bufferLimit {       // big write: skip the copy
                try writeAll(bytes)
                return
            }
        }
        buffer.append(contentsOf: bytes)
    }

    public func flush() throws {
        guard state == .open else { return }
        try drain()
    }

    /// Flushes, fsyncs and renames the temp file to its final name. For stdout: flushes.
    public func commit() throws {
        guard state == .open else {
            if state == .committed { return }
            throw ToolError("internal error: commit of \(name) after abort")
        }
        try drain()
        guard let tmp = tempPath else { state = .committed; return }
        if fsync(fd) != 0 {
            let code = errno
            abort()
            throw ToolError("cannot write '\(path)': fsync failed: \(errnoText(code))"
                            + (code == ENOSPC ? " (free some disk space and rerun)" : ""))
        }
        if close(fd) != 0 {
            let code = errno
            fd = -1
            abort()
            throw ToolError("cannot write '\(path)': close failed: \(errnoText(code)) (is the disk full or the "
                            + "network filesystem gone? fix it and rerun)")
        }
        fd = -1
        if rename(tmp, path) != 0 {
            let code = errno
            abort()
            throw ToolError("cannot rename the finished output to '\(path)': \(errnoText(code)) (check that the "
                            + "directory is writable)")
        }
        state = .committed
        TempFileRegistry.unregister(registrySlot)
        // Make the rename itself durable; failure here is not worth failing the tool.
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// Discards the output: unlinks the temp file (stdout: drops unflushed bytes). Idempotent.
    public func abort() {
        guard state == .open else { return }
        state = .aborted
        buffer.removeAll()
        if let tmp = tempPath {
            if fd >= 0 { close(fd) }
            fd = -1
            unlink(tmp)
            TempFileRegistry.unregister(registrySlot)
        }
    }

    private func drain() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        if let code = writeFully(fd: fd, bytes) {
            abort()   // never leave a partial file, even if the caller forgets to abort
            throw ToolError(writeFailure(code, name: name))
        }
    }
}

/// Writes all of `bytes` to `fd`, retrying short writes and EINTR; returns errno on failure.
func writeFully(fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32? {
    var done = 0
    while done < bytes.count {
        let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
        if n > 0 { done += n; continue }
        if n < 0 && errno == EINTR { continue }
        return n < 0 ? errno : EIO
    }
    return nil
}

func writeFailure(_ code: Int32, name: String) -> String {
    switch code {
    case EPIPE:
        return "cannot write \(name): the reading end of the pipe was closed (the next command exited early; see its error)"
    case ENOSPC:
        return "cannot write \(name): no space left on device (free some disk space and rerun)"
    case EDQUOT:
        return "cannot write \(name): disk quota exceeded (free some space and rerun)"
    default:
        return "cannot write \(name): \(errnoText(code))"
    }
}

/// Writes to an existing file descriptor (a pipe, a socket, /dev/null), buffered until flush().
/// Not atomic: use OutputFile for results. Closes the descriptor on deinit only if `owns`.
public final class FileSink: ByteSink {
    public let fd: Int32
    public let name: String
    private let owns: Bool
    private var buffer: [UInt8] = []
    public init(fd: Int32, name: String, owns: Bool = false) {
        self.fd = fd; self.name = name; self.owns = owns
    }
    deinit { if owns { close(fd) } }
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= 1 << 20 { try flush() }
    }
    public func flush() throws {
        guard !buffer.isEmpty else { return }
        defer { buffer.removeAll(keepingCapacity: true) }
        if let code = buffer.withUnsafeBytes({ writeFully(fd: fd, $0) }) {
            throw ToolError(writeFailure(code, name: name))
        }
    }
}

// MARK: - Memory

/// Collects everything written. `flushCount` counts flush() calls (tests check record-boundary flushes).
public final class MemorySink: ByteSink {
    public var bytes: [UInt8] = []
    public private(set) var flushCount = 0
    public init() {}
    public func write(_ bytes: UnsafeRawBufferPointer) throws { self.bytes.append(contentsOf: bytes) }
    public func flush() throws { flushCount += 1 }
}

/// Serves `bytes`, at most `maxRead` per read (1 simulates a slow pipe).
public final class MemorySource: ByteSource {
    public let bytes: [UInt8]
    public let maxRead: Int
    public private(set) var position = 0
    public init(_ bytes: [UInt8], maxRead: Int = Int.max) {
        precondition(maxRead > 0)
        self.bytes = bytes; self.maxRead = maxRead
    }
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = min(buffer.count, maxRead, bytes.count - position)
        guard n > 0 else { return 0 }
        bytes.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + position, byteCount: n)
        }
        position += n
        return n
    }
}
