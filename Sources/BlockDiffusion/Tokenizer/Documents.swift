import Foundation

/// How input files are cut into documents (for `tokenize train` and `tokenize encode`):
/// Empty documents are skipped everywhere.
///   text  — the whole file is one document (bytes as they are);
///   lines — one document per line; the "\n" (and a "\r" before it) is dropped, empty lines skipped;
///   jsonl — one JSON object per line, the document is its "text" string (UTF-8); blank lines skipped.
public enum DocumentFormat: String, CaseIterable, Sendable {
    case text, lines, jsonl
}

/// Reads documents from a file (or stdin for "-") incrementally, in 1 MiB reads.
public final class DocumentReader {
    public let path: String
    public let format: DocumentFormat
    private let source: ByteSource
    private var buffer: [UInt8] = []
    private var start = 0           // first unconsumed byte in buffer
    private var eof = false
    private var done = false
    private(set) var lineNumber = 0

    public init(path: String, format: DocumentFormat) throws {
        self.path = path
        self.format = format
        source = try openInput(path)
    }

    private var name: String { path == "-" ? "stdin" : path }

    /// Reads more bytes; false at end of file.
    private func fill() throws -> Bool {
        if eof { return false }
        if start > 0 && start >= buffer.count / 2 { buffer.removeFirst(start); start = 0 }
        let chunk = 1 << 20
        let old = buffer.count
        buffer += [UInt8](repeating: 0, count: chunk)
        let got: Int
        do {
            got = try buffer.withUnsafeMutableBytes { try source.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[old...])) }
        } catch {
            buffer.removeLast(chunk); throw error
        }
        buffer.removeLast(chunk - got)
        if got == 0 { eof = true }
        return got > 0
    }

    /// Next line without its terminator, or nil at the end.
    private func nextLine() throws -> ArraySlice<UInt8>? {
        var scanFrom = start
        while true {
            if let nl = buffer[scanFrom...].firstIndex(of: 0x0A) {
                var end = nl
                if end > start && buffer[end - 1] == 0x0D { end -= 1 }
                let line = buffer[start..<end]
                start = nl + 1
                lineNumber += 1
                return line
            }
            scanFrom = buffer.count
            let before = buffer.count - start
            if try !fill() {
                if buffer.count > start {
                    var end = buffer.count
                    if buffer[end - 1] == 0x0D { end -= 1 }
                    let line = buffer[start..<end]
                    start = buffer.count
                    lineNumber += 1
                    return line
                }
                return nil
            }
            scanFrom = start + before
        }
    }

    /// The next document's bytes, nil at the end. Errors name the file and line.
    public func next() throws -> [UInt8]? {
        if done { return nil }
        switch format {
        case .text:
            while try fill() {}
            done = true
            return buffer.count > start ? Array(buffer[start...]) : nil
        case .lines:
            while let line = try nextLine() {
                if !line.isEmpty { return Array(line) }
            }
            done = true
            return nil
        case .jsonl:
            while let line = try nextLine() {
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
                let obj = try? JSONSerialization.jsonObject(with: Data(line), options: [.fragmentsAllowed])
                guard let dict = obj as? [String: Any] else {
                    throw ToolError("\(name) line \(lineNumber): not a JSON object (expected {\"text\": ...} per line)")
                }
                guard let text = dict["text"] as? String else {
                    throw ToolError("\(name) line \(lineNumber): no string field \"text\"")
                }
                if text.isEmpty { continue }
                return Array(text.utf8)
            }
            done = true
            return nil
        }
    }
}
