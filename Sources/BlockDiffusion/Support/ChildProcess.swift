// Process supervision for the tools that run other programs (score gen --scorer-cmd):
//
//   ChildProcess.spawnShell(_:)   /bin/sh -c COMMAND with its stdin and stdout on pipes (our ends close-on-exec),
//                                 stderr inherited, SIGPIPE back to its default action and no blocked signals, in
//                                 a new process group (pgid = pid) registered so that SIGINT/SIGTERM/SIGHUP
//                                 received by the tool are passed on to it (Signals.swift)
//   exitStatus(within:)           waits at most that many seconds for it to exit; otherwise kills the whole group
//                                 with SIGKILL, reaps it and returns nil
//   killGroup()                   SIGKILL to the group and reap (idempotent); also what deinit does if needed
//   ExitStatus                    exited(code) / signaled(signal) / vanished(reason), described for messages
//   LineReader                    buffered lines from a descriptor, with an idle callback polled every slice
//                                 (a watchdog that may throw, e.g. a reply timeout)
//
// Killing the group, not the pid: `sh -c 'sh script'` and the like fork rather than exec, so the program that
// matters may be a grandchild.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How a child process ended.
public enum ExitStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)
    /// waitpid failed (e.g. someone else reaped it).
    case vanished(String)

    init(waitStatus st: Int32) {
        let sig = st & 0x7f
        self = sig == 0 ? .exited((st >> 8) & 0xff) : .signaled(sig)
    }

    public var succeeded: Bool { self == .exited(0) }

    public var description: String {
        switch self {
        case .exited(let c): return "exited with status \(c)"
        case .signaled(let s): return "was killed by signal \(s)"
        case .vanished(let why): return "vanished (\(why))"
        }
    }
}

/// A running /bin/sh -c COMMAND in its own process group, with pipes to its stdin and from its stdout.
public final class ChildProcess {
    public let pid: pid_t
    /// Write end of its stdin (close it to send EOF) and read end of its stdout; owned by the caller.
    public let stdinFD: Int32, stdoutFD: Int32
    public private(set) var status: ExitStatus?
    private let groupSlot: Int

    private init(pid: pid_t, stdinFD: Int32, stdoutFD: Int32) {
        self.pid = pid; self.stdinFD = stdinFD; self.stdoutFD = stdoutFD
        groupSlot = ChildGroupRegistry.register(pid)
    }

    deinit {
        if status == nil { killGroup() }
        ChildGroupRegistry.unregister(groupSlot)
    }

    /// Starts `/bin/sh -c command`; `what` names it in error messages (e.g. "the scorer command").
    public static func spawnShell(_ command: String, what: String) throws -> ChildProcess {
        var inPipe: [Int32] = [-1, -1], outPipe: [Int32] = [-1, -1]
        guard pipe(&inPipe) == 0 else { throw ToolError("cannot create a pipe for \(what): \(errnoText(errno))") }
        guard pipe(&outPipe) == 0 else {
            close(inPipe[0]); close(inPipe[1])
            throw ToolError("cannot create a pipe for \(what): \(errnoText(errno))")
        }
        // Our ends must not leak into the child (it would never see EOF on its stdin); dup2 in the
        // child clears the flag on fds 0 and 1.
        for fd in inPipe + outPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var defaults = sigset_t(), empty = sigset_t()
        sigemptyset(&defaults); sigaddset(&defaults, SIGPIPE); sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))
        let args: [String] = ["/bin/sh", "-c", command]
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        argv.append(nil)
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, environ)
        close(inPipe[0]); close(outPipe[1])
        guard rc == 0 else {
            close(inPipe[1]); close(outPipe[0])
            throw ToolError("cannot start /bin/sh for \(what): \(errnoText(rc))")
        }
        return ChildProcess(pid: pid, stdinFD: inPipe[1], stdoutFD: outPipe[0])
    }

    /// Its exit status, waiting at most `seconds`; nil when it had to be killed (SIGKILL to the group).
    public func exitStatus(within seconds: Double) -> ExitStatus? {
        if let status { return status }
        var st: Int32 = 0
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(max(0, seconds) * 1e9)
        while true {
            let r = waitpid(pid, &st, WNOHANG)
            if r == pid { status = ExitStatus(waitStatus: st); return status }
            if r < 0 && errno != EINTR { status = .vanished(errnoText(errno)); return status }
            if DispatchTime.now().uptimeNanoseconds >= deadline { break }
            usleep(10_000)
        }
        killGroup()
        return nil
    }

    /// SIGKILL to its process group, then reap it. Nothing if it has been reaped already.
    public func killGroup() {
        guard status == nil else { return }
        kill(-pid, SIGKILL)
        var st: Int32 = 0
        while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
        status = .signaled(SIGKILL)
    }
}

/// Buffered line reader over a descriptor.
public final class LineReader {
    public let fd: Int32
    /// Names the source in messages, e.g. "the scorer command's output".
    public let name: String
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    var start = 0, end = 0
    var eof = false
    /// Uptime (ns) of the last read that returned data.
    public private(set) var lastData = DispatchTime.now().uptimeNanoseconds
    /// Called each `idleSlice` ms without data while waiting; it may throw (a timeout). nil = block in read().
    public var idle: (() throws -> Void)?
    public var idleSlice: Int32 = 100
    public static let maxLine = 1 << 24

    public init(fd: Int32, name: String) { self.fd = fd; self.name = name }

    /// The next line without its newline; nil at end of input. A last line without newline is returned.
    public func readLine() throws -> [UInt8]? {
        var line: [UInt8] = []
        while true {
            if start < end {
                if let nl = buffer[start..<end].firstIndex(of: 0x0A) {
                    line += buffer[start..<nl]; start = nl + 1
                    return line
                }
                line += buffer[start..<end]; start = end
                if line.count > LineReader.maxLine { throw ToolError("\(name) has a line longer than \(LineReader.maxLine) bytes") }
            }
            if eof { return line.isEmpty ? nil : line }
            if let idle {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let r = poll(&p, 1, idleSlice)
                if r < 0 {
                    if errno == EINTR { continue }
                    throw ToolError("waiting for \(name) failed: \(errnoText(errno))")
                }
                if r == 0 { try idle(); continue }
            }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ToolError("reading \(name) failed: \(errnoText(errno))")
            }
            if n == 0 { eof = true } else { start = 0; end = n; lastData = DispatchTime.now().uptimeNanoseconds }
        }
    }
}
