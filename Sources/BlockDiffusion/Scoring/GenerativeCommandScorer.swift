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
// The command runs in its own process group (Support/ChildProcess.swift: spawn, group kill, reaping, exit
// status), so killing means SIGKILL to the whole group; SIGINT/SIGTERM/SIGHUP received by the tool are passed on.
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
final class ScorerChannel<Meta>: @unchecked Sendable {
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
        let child = try ChildProcess.spawnShell(command, what: "the scorer command")
        let channel = ScorerChannel<Meta>(fd: child.stdinFD, next: next)
        let writer = Thread { channel.writeAll() }
        writer.stackSize = 1 << 22
        writer.start()
        let lines = LineReader(fd: child.stdoutFD, name: "the scorer command's output")
        let grace = exitGrace(replyTimeout: replyTimeout)
        var lastID: UInt64? = nil
        let said = Said(command: command, grace: grace, replyTimeout: replyTimeout)
        watch(lines, channel, grace: grace, replyTimeout: replyTimeout, said: said) { lastID }
        defer {
            channel.cond.lock(); channel.abort = true; channel.cond.unlock()
            child.killGroup()
            close(child.stdoutFD)
        }
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
                    guard let s = child.exitStatus(within: grace) else {
                        throw ToolError("scorer command `\(command)` \(said.stillRunning) before answering sample \(id); run it by hand on that sample's request (see docs/scorer-protocol.md)")
                    }
                    throw ToolError("scorer command `\(command)` \(s.succeeded ? "closed its output" : s.description) before answering sample \(id); run it by hand on that sample's request (see docs/scorer-protocol.md)")
                }
                break
            }
            guard let (id, meta) = expected else {
                throw ToolError("scorer command `\(command)` printed an extra line after the last sample\(said.last(lastID)): \(preview(line)); it must print exactly one JSON line per request (log to stderr)")
            }
            try handle(try answer(line, for: id, command: command), meta)
            lastID = id
        }
        // All answers are in: the writer has finished (pending was empty and writerDone).
        let exit = child.exitStatus(within: grace)
        channel.cond.lock(); let werr = channel.writerError; channel.cond.unlock()
        if let werr { throw werr }
        guard let s = exit else {
            throw ToolError("scorer command `\(command)` answered every sample\(said.last(lastID)), then \(said.stillRunning); it must exit once its stdin is closed")
        }
        if !s.succeeded {
            throw ToolError("scorer command `\(command)` \(s) after answering every sample\(said.last(lastID)); check its stderr")
        }
    }

    /// Pieces of the messages shared by the checks.
    struct Said {
        let command: String, grace: Double, replyTimeout: Double
        static func seconds(_ t: Double) -> String { t == t.rounded() ? "\(Int(t)) s" : "\(t) s" }
        var stillRunning: String { "closed its output but did not exit within \(Said.seconds(grace)) and was killed" }
        func last(_ id: UInt64?) -> String { id.map { " (last: \($0))" } ?? "" }
    }

    /// The watchdog run while the reader waits: the exit grace after the last answer, the reply timeout while a
    /// request is unanswered and the writer is not waiting on our own input (see the file header).
    static func watch<Meta>(_ lines: LineReader, _ channel: ScorerChannel<Meta>, grace: Double, replyTimeout: Double,
                            said: Said, lastID: @escaping () -> UInt64?) {
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
                throw ToolError("scorer command `\(said.command)` answered every sample\(said.last(lastID())), then neither closed its output nor exited within \(Said.seconds(grace)) and was killed; it must exit once its stdin is closed")
            }
            if replyTimeout > 0, running, let id = waiting, elapsed >= replyNanos {
                throw ToolError("scorer command `\(said.command)` did not answer sample \(id) within \(Said.seconds(replyTimeout)) (--scorer-timeout) and was killed; check that it answers every request and flushes each answer line (flush=True), or give a larger --scorer-timeout (0 = no limit)")
            }
        }
    }

    /// The answer `line` to request `id`, checked: JSON of the right shape, the same id, finite NLL ≥ 0, tokens ≥ 0.
    static func answer(_ line: [UInt8], for id: UInt64, command: String) throws -> ScorerResponse {
        let r: ScorerResponse
        do { r = try JSONDecoder().decode(ScorerResponse.self, from: Data(line)) } catch {
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
        return r
    }

    static func preview(_ line: [UInt8]) -> String {
        let s = String(decoding: line.prefix(120), as: UTF8.self)
        return "'" + s + (line.count > 120 ? "…" : "") + "'"
    }
}
