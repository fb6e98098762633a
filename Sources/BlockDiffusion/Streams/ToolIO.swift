// Small helpers shared by the draft/remask/refine executables: output stream set-up with atomic commit.
//
// Public API:
//   withSamplesOutput(path:header:allowTerminal:level:_:)   opens OutputFile, writes the stream, commits (aborts on error)
//   readPromptStream(path:) -> (header, [[Int32]])          the prompts of a token stream (one per record)
//   requireSamplesStream(_:source:tool:)                    refuses a non-`samples` input to remask/refine
import Foundation

public func withSamplesOutput(path: String, header: StreamHeader, allowTerminal: Bool = false, level: Int32 = 3,
                              _ body: (TokenStreamWriter) throws -> Void) throws {
    let out = try OutputFile(path: path, allowTerminal: allowTerminal)
    do {
        let w = try TokenStreamWriter(sink: out, header: header, compress: true, level: level)
        try body(w)
        try w.finish()
        try out.commit()
    } catch {
        out.abort()
        throw error
    }
}

public func readPromptStream(path: String) throws -> (StreamHeader, [[Int32]]) {
    let r = try TokenStreamReader(source: try openInput(path), name: path)
    var prompts: [[Int32]] = []
    while let rec = try r.next() { prompts.append(rec.tokens) }
    guard !prompts.isEmpty else { throw ToolError("\(path) holds no records; give at least one prompt") }
    return (r.header, prompts)
}

/// remask and refine read what draft, refine and remask write: refuse any other kind up front, with the fix.
public func requireSamplesStream(_ h: StreamHeader, source: String, tool: String) throws {
    guard h.kind == .samples else {
        throw ToolError("\(source) is a '\(h.kind)' stream; \(tool) reads a 'samples' stream written by draft, refine or remask (draft -m CHECKPOINT ... -o samples.tok makes one)")
    }
}
