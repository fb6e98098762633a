// `score gen --scorer-cmd CMD`: an external scorer process speaking the line protocol of
// docs/scorer-protocol.md.
//
//   request  (our stdout → its stdin), one line per sample:   {"id":<u64>,"text":"<sample text>"}
//   response (its stdout → us), one line per request, in order: {"id":<u64>,"nll":<sum of token NLLs, nats>,"tokens":<count>}
//
// The command runs under `/bin/sh -c CMD` with stderr inherited. Requests are written by one thread
// while the calling thread reads responses, so neither side blocks on a full pipe whatever the sizes
// (a scorer may answer while we are still writing). Every failure — the command dies or exits
// non-zero, prints a line that is not such an object, answers another id, a non-finite or negative
// NLL or token count — throws a ToolError naming the sample id concerned.
//
// Timeouts (so a stuck scorer cannot make `score gen` wait forever):
//   reply timeout: the clock runs while a request is unanswered and we wait on the scorer alone — the writer
//     is not waiting for the next sample from our own input (a slow `refine | score gen` upstream is not the
//     scorer's fault, and a scorer may read everything before answering). It restarts whenever the scorer
//     prints anything or a request is written. On expiry the scorer is killed and the error names the
//     oldest unanswered sample. The reader polls the pipe (poll()) in short slices to watch the clock.
//   exit grace: once its stdout is closed, the scorer must exit within min(10 s, reply timeout) (10 s with no
//     timeout); otherwise it is killed and the error says so (it closed its output but kept running).
//   After the last answer (stdin closed), the scorer likewise has the exit grace to close its output and exit.
// The command runs in its own process group (dash forks rather than execs `sh -c 'sh script'` and the like), so
// killing means SIGKILL to the whole group; SIGINT/SIGTERM/SIGHUP received by the tool are passed on to it.
//
// Public API:
//   ScorerRequest { id, text }, ScorerResponse { id, nll, tokens }
//   ScorerCommand.run(command:replyTimeout:next:handle:)   next() runs on the writer thread and returns the next
//                                             request with caller data (nil = no more); handle(response, data)
//                                             runs on the calling thread, in order. replyTimeout seconds
//                                             (default 600; 0 = none).
//   ScorerCommand.exitGrace(replyTimeout:)     seconds a scorer may take to exit after closing its stdout
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct ScorerRequest: Sendable {
    public var id: UInt64
    public var text: String
    public init(id: UInt64, text: String) { self.id = id; self.text = text }

    /// One protocol line (with its newline): {"id":…,"text":…}; the text JSON-escaped.
    public var line: [UInt8] {
        let d = try! JSONSerialization.data(withJSONObject: ["id": NSNumber(value: id), "text": text], options: [.sortedKeys, .withoutEscapingSlashes])
        return Array(d) + [0x0A]
    }
}

public struct ScorerResponse: Codable, Equatable, Sendable {
    public var id: UInt64
    public var nll: Double
    public var tokens: Int
    public init(id: UInt64, nll: Double, tokens: Int) { self.id = id; self.nll = nll; self.tokens = tokens }
}

/// State shared by the writer thread and the reader (the calling thread).
private final class ScorerChannel<Meta>: @unchecked Sendable {
    let cond = NSCondition()
    var pending: [(UInt64, Meta)] = []   // requests written (or being written), not yet answered
    var writerDone = false
    var writerError: Error?
    var abort = false
    /// The writer is inside next() (waiting for our own input): the reply clock is paused.
    var inNext = false
    /// Uptime (ns) of the writer's last progress: a request produced or written, or the end of the requests.
    var progress = DispatchTime.now().uptimeNanoseconds
    let next: () throws -> (ScorerRequest, Meta)?
    let fd: Int32
    init(fd: Int32, next: @escaping () throws -> (ScorerRequest, Meta)?) { self.fd = fd; self.next = next }

    /// Writer thread body: produce, enqueue, write; closes the scorer's stdin at the end.
    func writeAll() {
        // A dead scorer makes write() fail with EPIPE; block SIGPIPE in this thread so it cannot kill
        // the process (the tools ignore it anyway; tests and library users may not).
        var set = sigset_t()
        sigemptyset(&set); sigaddset(&set, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        defer {
            close(fd)
            cond.lock(); writerDone = true; inNext = false; progress = DispatchTime.now().uptimeNanoseconds; cond.broadcast(); cond.unlock()
        }
        do {
            while true {
                cond.lock(); let stop = abort; inNext = true; cond.unlock()
                if stop { return }
                guard let (req, meta) = try next() else { return }
                cond.lock()
                pending.append((req.id, meta)); inNext = false; progress = DispatchTime.now().uptimeNanoseconds
                cond.broadcast(); cond.unlock()
                let bytes = req.line
                var off = 0
                while off < bytes.count {
                    let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, bytes.count - off) }
                    if n < 0 {
                        if errno == EINTR { continue }
                        return   // EPIPE: the scorer is gone; the reader reports it with the sample id
                    }
                    off += n
                }
                cond.lock(); progress = DispatchTime.now().uptimeNanoseconds; cond.unlock()
            }
        } catch {
            cond.lock(); writerError = error; cond.unlock()
        }
    }
}

/// Buffered line reader over a descriptor.
final class FDLineReader {
    let fd: Int32
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    var start = 0, end = 0
    var eof = false
    /// Uptime (ns) of the last read that returned data.
    var lastData = DispatchTime.now().uptimeNanoseconds
    /// Called each `idleSlice` ms without data while waiting; it may throw (a timeout). nil = block in read().
    var idle: (() throws -> Void)?
    var idleSlice: Int32 = 100
    static let maxLine = 1 << 24
    init(fd: Int32) { self.fd = fd }

    /// The next line without its newline; nil at end of input. A last line without newline is returned.
    func readLine() throws -> [UInt8]? {
        var line: [UInt8] = []
        while true {
            if start < end {
                if let nl = buffer[start..<end].firstIndex(of: 0x0A) {
                    line += buffer[start..<nl]; start = nl + 1
                    return line
                }
                line += buffer[start..<end]; start = end
                if line.count > FDLineReader.maxLine { throw ToolError("scorer command printed a line longer than \(FDLineReader.maxLine) bytes") }
            }
            if eof { return line.isEmpty ? nil : line }
            if let idle {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let r = poll(&p, 1, idleSlice)
                if r < 0 {
                    if errno == EINTR { continue }
                    throw ToolError("waiting for the scorer command's output failed: \(String(cString: strerror(errno)))")
                }
                if r == 0 { try idle(); continue }
            }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ToolError("reading the scorer command's output failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { eof = true } else { start = 0; end = n; lastData = DispatchTime.now().uptimeNanoseconds }
        }
    }
}

public enum ScorerCommand {
    public static let defaultReplyTimeout = 600.0

    /// Seconds a scorer may take to exit once its stdout is closed: min(10, replyTimeout), 10 without a timeout.
    public static func exitGrace(replyTimeout: Double) -> Double { replyTimeout > 0 ? min(10, replyTimeout) : 10 }

    /// Runs `command` and exchanges one request/response per sample (see the file header).
    /// `replyTimeout`: seconds to wait for an answer while nothing else is pending (0 = wait forever).
    public static func run<Meta>(command: String, replyTimeout: Double = defaultReplyTimeout,
                                 next: @escaping () throws -> (ScorerRequest, Meta)?,
                                 handle: (ScorerResponse, Meta) throws -> Void) throws {
        precondition(replyTimeout >= 0 && replyTimeout.isFinite, "the reply timeout must be ≥ 0 seconds")
        let (pid, toChild, fromChild) = try spawn(command)
        let groupSlot = ChildGroupRegistry.register(pid)
        let channel = ScorerChannel<Meta>(fd: toChild, next: next)
        let writer = Thread { channel.writeAll() }
        writer.stackSize = 1 << 22
        writer.start()
        let lines = FDLineReader(fd: fromChild)
        let seconds = { (t: Double) in t == t.rounded() ? "\(Int(t)) s" : "\(t) s" }
        var reaped = false
        var lastID: UInt64? = nil
        let grace = exitGrace(replyTimeout: replyTimeout)
        let graceNanos = UInt64(grace * 1e9), replyNanos = UInt64(replyTimeout * 1e9)
        lines.idleSlice = Int32(max(1, min(100, grace * 1000 / 10, replyTimeout > 0 ? replyTimeout * 1000 / 10 : 100)))
        lines.idle = { [unowned lines] in
            channel.cond.lock()
            let waiting = channel.pending.first.map(\.0)
            let running = waiting != nil && !channel.inNext
            let finished = waiting == nil && channel.writerDone
            let since = max(channel.progress, lines.lastData)
            channel.cond.unlock()
            let elapsed = DispatchTime.now().uptimeNanoseconds &- since
            if finished && elapsed >= graceNanos {
                throw ToolError("scorer command `\(command)` answered every sample\(lastID.map { " (last: \($0))" } ?? ""), then neither closed its output nor exited within \(seconds(grace)) and was killed; it must exit once its stdin is closed")
            }
            if replyTimeout > 0, running, let id = waiting, elapsed >= replyNanos {
                throw ToolError("scorer command `\(command)` did not answer sample \(id) within \(seconds(replyTimeout)) (--scorer-timeout) and was killed; check that it answers every request and flushes each answer line (flush=True), or give a larger --scorer-timeout (0 = no limit)")
            }
        }
        /// Its exit status, waiting at most `grace` seconds: nil when it had to be killed.
        func status() -> String? {
            var st: Int32 = 0
            let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(grace * 1e9)
            while true {
                let r = waitpid(pid, &st, WNOHANG)
                if r == pid { reaped = true; return describeStatus(st) }
                if r < 0 && errno != EINTR { reaped = true; return "vanished (\(String(cString: strerror(errno))))" }
                if DispatchTime.now().uptimeNanoseconds >= deadline { break }
                usleep(10_000)
            }
            kill(-pid, SIGKILL)
            while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
            reaped = true
            return nil
        }
        let stillRunning = "closed its output but did not exit within \(seconds(grace)) and was killed"
        defer {
            channel.cond.lock(); channel.abort = true; channel.cond.unlock()
            if !reaped { kill(-pid, SIGKILL); var st: Int32 = 0; while waitpid(pid, &st, 0) < 0 && errno == EINTR {} }
            ChildGroupRegistry.unregister(groupSlot)
            close(fromChild)
        }
        let decoder = JSONDecoder()
        while true {
            let line = try lines.readLine()
            // Which request does this line answer? Wait until the writer has sent one or finished.
            channel.cond.lock()
            while channel.pending.isEmpty && !channel.writerDone { channel.cond.wait() }
            let expected = channel.pending.first
            if expected != nil { channel.pending.removeFirst() }
            channel.cond.unlock()

            guard let line else {
                if let (id, _) = expected {
                    guard let s = status() else {
                        throw ToolError("scorer command `\(command)` \(stillRunning) before answering sample \(id); run it by hand on that sample's request (see docs/scorer-protocol.md)")
                    }
                    throw ToolError("scorer command `\(command)` \(s == "exited with status 0" ? "closed its output" : s) before answering sample \(id); run it by hand on that sample's request (see docs/scorer-protocol.md)")
                }
                break
            }
            guard let (id, meta) = expected else {
                throw ToolError("scorer command `\(command)` printed an extra line after the last sample\(lastID.map { " (\($0))" } ?? ""): \(preview(line)); it must print exactly one JSON line per request (log to stderr)")
            }
            let r: ScorerResponse
            do { r = try decoder.decode(ScorerResponse.self, from: Data(line)) } catch {
                let s = String(decoding: line, as: UTF8.self)
                // Shaped like an answer but not decodable: a number is the problem (NaN, 1e999, 2.5 tokens).
                let shaped = s.hasPrefix("{") && s.contains("\"id\"") && s.contains("\"nll\"") && s.contains("\"tokens\"")
                if shaped || s.contains("NaN") || s.contains("Infinity") {
                    throw ToolError("scorer command `\(command)` answered sample \(id) with a non-finite or invalid number: \(preview(line)); nll must be a finite float, tokens an integer")
                }
                throw ToolError("scorer command `\(command)` printed garbage for sample \(id): \(preview(line)); expected {\"id\": \(id), \"nll\": <nats>, \"tokens\": <count>} (log to stderr, not stdout)")
            }
            guard r.id == id else {
                throw ToolError("scorer command `\(command)` answered id \(r.id) where sample \(id) was expected; responses must come one per request, in order")
            }
            guard r.nll.isFinite, r.nll >= 0 else {
                throw ToolError("scorer command `\(command)` answered sample \(id) with NLL \(r.nll); it must be a finite sum of token NLLs ≥ 0 (nats)")
            }
            guard r.tokens >= 0, r.tokens > 0 || r.nll == 0 else {
                throw ToolError("scorer command `\(command)` answered sample \(id) with \(r.tokens) tokens and NLL \(r.nll); tokens must be ≥ 0 (and NLL 0 when it is 0)")
            }
            try handle(r, meta)
            lastID = id
        }
        // All answers are in: the writer has finished (pending was empty and writerDone).
        let exit = status()
        channel.cond.lock(); let werr = channel.writerError; channel.cond.unlock()
        if let werr { throw werr }
        guard let s = exit else {
            throw ToolError("scorer command `\(command)` answered every sample\(lastID.map { " (last: \($0))" } ?? ""), then \(stillRunning); it must exit once its stdin is closed")
        }
        if s != "exited with status 0" {
            throw ToolError("scorer command `\(command)` \(s) after answering every sample\(lastID.map { " (last: \($0))" } ?? ""); check its stderr")
        }
    }

    static func preview(_ line: [UInt8]) -> String {
        let s = String(decoding: line.prefix(120), as: UTF8.self)
        return "'" + s + (line.count > 120 ? "…" : "") + "'"
    }

    static func describeStatus(_ st: Int32) -> String {
        let sig = st & 0x7f
        if sig == 0 { return "exited with status \((st >> 8) & 0xff)" }
        return "was killed by signal \(sig)"
    }

    /// /bin/sh -c command, its stdin and stdout on pipes (our ends close-on-exec), stderr inherited,
    /// SIGPIPE back to its default action and no blocked signals in the child, in a new process group (pgid = pid).
    static func spawn(_ command: String) throws -> (pid_t, Int32, Int32) {
        var inPipe: [Int32] = [-1, -1], outPipe: [Int32] = [-1, -1]
        guard pipe(&inPipe) == 0 else { throw ToolError("cannot create a pipe: \(String(cString: strerror(errno)))") }
        guard pipe(&outPipe) == 0 else {
            close(inPipe[0]); close(inPipe[1])
            throw ToolError("cannot create a pipe: \(String(cString: strerror(errno)))")
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
            throw ToolError("cannot start /bin/sh for the scorer command: \(String(cString: strerror(rc)))")
        }
        return (pid, inPipe[1], outPipe[0])
    }
}
