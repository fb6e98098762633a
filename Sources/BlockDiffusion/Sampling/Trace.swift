// Watching a sampler work: per-step JSON lines (`--trace FILE`) and a terminal view (`--visual`).
//
//   trace line (one per step that unmasked something — AR: per token, block = position — in the order the steps ran; with --batch > 1 the
//   records' steps interleave, each record's own lines stay in order):
//     {"record":7,"block":2,"step":1,"positions":[9,11],"confidence":[0.93,0.71],"nfe":9,"tokens":[412,88]}
//   record = the stream's record id, block = position / L', step = 1-based step within the block, positions =
//   absolute positions unmasked by this step's forward, confidence = their snapshot confidences (p of the drawn
//   token), tokens = the drawn ids, nfe = the record's NFE count after the forward (refine: continues the
//   input record's count).
//   The trace is an ordinary output: written to a temp file and renamed when the tool succeeds.
//
//   terminal view: after every step of the first record of each batch, the current block is redrawn on stderr
//   (text through the tokenizer when one is given, else ids; masks as "░"), then the finished record's text.
//
// Public API:
//   protocol StepObserver            step(record:_:canvas:)
//   TraceWriter(sink:)               JSON lines to a ByteSink; traceLine(record:step:canvas:) -> String
//   TerminalView(decode:maskId:out:) redraws on a file descriptor (stderr)
import Foundation

public protocol StepObserver: AnyObject {
    func step(record: UInt64, _ s: SamplerStep, canvas: Canvas)
}

/// One trace line (no newline), keys in a fixed order.
public func traceLine(record: UInt64, step s: SamplerStep, canvas c: Canvas) -> String {
    func list<T>(_ xs: [T], _ f: (T) -> String) -> String { "[" + xs.map(f).joined(separator: ",") + "]" }
    return "{\"record\":\(record),\"block\":\(s.block),\"step\":\(s.step),\"positions\":\(list(s.positions) { "\($0)" })"
        + ",\"confidence\":\(list(s.confidences) { jsonFloat($0) }),\"nfe\":\(s.nfe)"
        + ",\"tokens\":\(list(s.positions) { "\(c.tokens[$0])" })}"
}

/// Shortest round-trip decimal of a Float (JSON has no NaN/Inf: those become null).
func jsonFloat(_ x: Float) -> String { x.isFinite ? "\(x)" : "null" }

public final class TraceWriter: StepObserver {
    let sink: ByteSink
    public private(set) var lines = 0
    /// The first write error; the tool reports it when it finishes (observers cannot throw mid-sampling).
    public private(set) var error: Error? = nil
    public init(sink: ByteSink) { self.sink = sink }

    public func step(record: UInt64, _ s: SamplerStep, canvas: Canvas) {
        guard error == nil else { return }
        do {
            try sink.write(Array((traceLine(record: record, step: s, canvas: canvas) + "\n").utf8))
            lines += 1
        } catch { self.error = error }
    }

    /// Throws the first write error, if any.
    public func check() throws { if let error { throw error } }
}

/// Redraws the block being denoised of the first record of each batch on a terminal.
public final class TerminalView: StepObserver {
    let decode: ([Int32]) -> String
    let maskId: Int32
    let fd: Int32
    var current: UInt64? = nil
    var lastBlock = -1

    /// `decode` turns token ids into text (the tokenizer's, or ids when there is none).
    public init(decode: @escaping ([Int32]) -> String, maskId: Int32, fd: Int32 = 2) {
        self.decode = decode; self.maskId = maskId; self.fd = fd
    }

    public func step(record: UInt64, _ s: SamplerStep, canvas c: Canvas) {
        if current == nil || s.canvas == 0 && record != current { finishLine(); current = record; lastBlock = -1 }
        guard record == current else { return }
        let lo = s.span.lowerBound, hi = s.span.upperBound
        if s.block != lastBlock && lastBlock >= 0 { emit("\n") }
        lastBlock = s.block
        // Masks as a shaded cell each, runs of given tokens as text.
        var text = "", run: [Int32] = []
        for t in c.tokens[lo..<hi] {
            if t == maskId { if !run.isEmpty { text += decode(run); run = [] }; text += "░" } else { run.append(t) }
        }
        if !run.isEmpty { text += decode(run) }
        text = text.replacingOccurrences(of: "\n", with: "⏎")
        emit("\r\u{1B}[2K[\(record) b\(s.block) s\(s.step) nfe \(s.nfe)] " + text)
    }

    func finishLine() { if current != nil { emit("\n") } }
    func emit(_ s: String) { let b = Array(s.utf8); _ = b.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
    public func finish() { finishLine(); current = nil }
}

/// Fans one step out to several observers (trace and view together).
public final class ObserverList: StepObserver {
    let all: [StepObserver]
    public init(_ all: [StepObserver]) { self.all = all }
    public func step(record: UInt64, _ s: SamplerStep, canvas: Canvas) { for o in all { o.step(record: record, s, canvas: canvas) } }
}

/// The decoding options shared by draft and refine (`--unmask`, `--trace`, `--visual`), parsed and checked in
/// one place so the tools only declare them.
public struct DecodeOptions: Sendable {
    public var unmask: UnmaskPolicy = .random
    public var trace: String? = nil
    public var visual = false
    public init() {}

    /// Throws UsageError (exit 64) for a bad policy or an empty trace path.
    public init(unmask: String, trace: String?, visual: Bool) throws {
        self.unmask = try UnmaskPolicy.parse(unmask)
        if let trace, trace.isEmpty { throw UsageError("--trace needs a file name") }
        if trace == "-" { throw UsageError("--trace - would mix with the samples stream; give a file name") }
        self.trace = trace; self.visual = visual
    }

    /// Runs `body` with the observers asked for (nil when none). The trace file is written atomically: it
    /// appears only when `body` and every trace write succeeded. `--visual` draws only when stderr is a terminal.
    public func withObservers<T>(decode: @escaping ([Int32]) -> String, maskId: Int32,
                                 _ body: (StepObserver?) throws -> T) throws -> T {
        var list: [StepObserver] = []
        var out: OutputFile? = nil
        var writer: TraceWriter? = nil
        if let trace {
            let o = try OutputFile(path: trace)
            out = o; writer = TraceWriter(sink: o); list.append(writer!)
        }
        let view = visual && isatty(2) == 1 ? TerminalView(decode: decode, maskId: maskId) : nil
        if let view { list.append(view) }
        do {
            let r = try body(list.isEmpty ? nil : list.count == 1 ? list[0] : ObserverList(list))
            view?.finish()
            try writer?.check()
            try out?.commit()
            return r
        } catch {
            view?.finish()
            out?.abort()
            throw error
        }
    }
}
