// JSON-lines metrics file, appended to as a run goes (`train --metrics FILE`). Not atomic by design: a
// resumed run appends to the same file. Every write is checked, so a full disk stops the run with exit 1
// naming the file instead of losing lines (or crashing in Foundation's FileHandle).
import Foundation

public final class MetricsLog {
    public let path: String
    private let sink: FileSink

    public init(path: String) throws {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o666)
        guard fd >= 0 else {
            throw ToolError("cannot open metrics file \(path): \(errnoText(errno)); check the directory exists and is writable")
        }
        self.path = path
        sink = FileSink(fd: fd, name: "metrics file '\(path)'", owns: true)
    }

    /// Appends one JSON object as a line and hands it to the OS.
    public func write(_ object: [String: Any]) throws {
        // A record holding a non-finite number (a diverged step) is not JSON: it is skipped, as it always was;
        // the divergence itself is reported on stderr and in RUN_DIR/diverged.json.
        guard let d = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        try sink.write([UInt8](d) + [0x0A])
        try sink.flush()
    }
}
