// tokenize — train, import, and apply byte-level BPE tokenizers; text ⇄ `documents` token streams.
// Thin shell over BlockDiffusion's Tokenizer (BPETokenizer, BPETrainer, ParallelEncoder).
import ArgumentParser
import BlockDiffusion
import Foundation
import ToolOptions

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Byte-level BPE tokenizers (HF tokenizer.json) and text ⇄ token streams.",
        discussion: """
        Example:
          tokenize train --vocab-size 8192 -o tok.json corpus.txt
          tokenize encode -t tok.json --input-format lines corpus.txt -o docs.bd3
          tokenize decode -t tok.json -i docs.bd3 -o corpus-again.txt
        """,
        subcommands: [Train.self, Import.self, Encode.self, Decode.self, Stats.self])
}

/// Writes `data` atomically to `path` ("-" = stdout).
func writeAtomically(_ data: Data, to path: String) throws {
    let out = try OutputFile(path: path, allowTerminal: true)
    do {
        try data.withUnsafeBytes { try out.write($0) }
        try out.commit()
    } catch {
        out.abort()
        throw error
    }
}

func stderrLine(_ s: String) { FileHandle.standardError.write((s + "\n").data(using: .utf8)!) }

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Learn a byte-level BPE from text files; write an HF tokenizer.json.",
        discussion: """
        --vocab-size counts everything: ids 0-255 are the bytes, then the merges, then \
        <|endoftext|> (BOS = EOS), [PAD], [MASK] as the last three ids. Merges are learnt as HF \
        tokenizers' BpeTrainer does (highest pair count; ties: the pair of older tokens first).

        Example:
          tokenize train --vocab-size 8192 -o tok.json --input-format lines \\
                   data/train.txt
        """)

    @Option(name: .long, parsing: .unconditional, help: "Total vocabulary size, including 256 bytes and 3 specials (≥ 259).")
    var vocabSize: Int
    @Option(name: .shortAndLong, help: "Output tokenizer.json.")
    var output: String
    @Option(name: .long, help: "How files are cut into documents: text (whole file), lines, jsonl (\"text\" field).")
    var inputFormat: DocumentFormat = .text
    @Option(name: .long, parsing: .unconditional, help: "Threads for counting.")
    var threads: Int = 2
    @Argument(help: "Text files (\"-\" = stdin).")
    var files: [String] = []

    func validate() throws {
        if vocabSize < BPETrainer.minimumVocabSize {
            throw ValidationError("--vocab-size \(vocabSize) is too small: at least \(BPETrainer.minimumVocabSize) (256 byte tokens + 3 specials)")
        }
        try usage { try checkRange(vocabSize, BPETrainer.minimumVocabSize...(1 << 24), "--vocab-size") }
        if files.isEmpty { throw ValidationError("give at least one input file (\"-\" for stdin)") }
        try usage { try checkRange(threads, 1...Limits.threads, "--threads") }
    }

    func run() throws {
        var trainer = BPETrainer(vocabSize: vocabSize)
        trainer.threads = threads
        // Progress on stderr only when it is a terminal.
        let tty = isatty(2) != 0
        let words = try trainer.countWords(files: files, format: inputFormat) { bytes in
            if tty { FileHandle.standardError.write("\rtokenize train: counted \(bytes / 1_000_000) MB".data(using: .utf8)!) }
        }
        if words.distinct == 0 { throw ToolError("the input has no text: nothing to train on (check the files and --input-format)") }
        if tty { stderrLine("\rtokenize train: \(words.distinct) distinct pieces") }
        let tok = try trainer.train(words) { have, target in
            if tty && (have % 500 == 0 || have == target) {
                FileHandle.standardError.write("\rtokenize train: vocabulary \(have)/\(target) (before specials)".data(using: .utf8)!)
            }
        }
        if tty { stderrLine("") }
        if tok.vocabSize < vocabSize {
            stderrLine("tokenize train: warning: the input only supports \(tok.vocabSize - 3) merges+bytes; vocabulary is \(tok.vocabSize), not \(vocabSize) (give more text)")
        }
        try writeAtomically(tok.hfJSON(), to: output)
        stderrLine("tokenize train: vocab \(tok.vocabSize), \(tok.merges.count) merges, fingerprint \(String(tok.fingerprint, radix: 16)) → \(output)")
    }
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a tiktoken ranks file, an HF tokenizer.json, or GPT-2 vocab.json+merges.txt.",
        discussion: """
        The result is our tokenizer.json: the same ids as the source, plus <|endoftext|> and \
        [MASK] appended when missing (GPT-2: <|endoftext|> = 50256, [MASK] = 50257, pad = eos).

        Example:
          tokenize import --tiktoken gpt2.tiktoken -o gpt2.json
        """)

    @Option(help: "tiktoken ranks file (base64 token, space, rank per line).") var tiktoken: String?
    @Option(help: "HF tokenizer.json with a byte-level BPE model.") var hf: String?
    @Option(help: "GPT-2 style vocab.json (with --merges).") var vocab: String?
    @Option(help: "GPT-2 style merges.txt (with --vocab).") var merges: String?
    @Option(name: .shortAndLong, help: "Output tokenizer.json.") var output: String

    func validate() throws {
        let n = [tiktoken != nil, hf != nil, vocab != nil || merges != nil].filter { $0 }.count
        if n != 1 { throw ValidationError("give exactly one source: --tiktoken FILE, --hf FILE, or --vocab FILE --merges FILE") }
        if (vocab == nil) != (merges == nil) { throw ValidationError("--vocab and --merges go together") }
    }

    func run() throws {
        let tok: BPETokenizer
        if let t = tiktoken {
            tok = try BPETokenizer.fromTiktoken(readFile(t), source: t)
        } else if let h = hf {
            tok = try BPETokenizer.fromHFJSON(readFile(h), source: h, appendMissingSpecials: true)
        } else {
            tok = try BPETokenizer.fromVocabAndMerges(vocab: readFile(vocab!), merges: readFile(merges!), source: vocab!)
        }
        try writeAtomically(tok.hfJSON(), to: output)
        stderrLine("tokenize import: vocab \(tok.vocabSize), \(tok.merges.count) merges, fingerprint \(String(tok.fingerprint, radix: 16)) → \(output)")
    }

    func readFile(_ path: String) throws -> Data {
        let src = try openInput(path)
        var data = Data()
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = try buf.withUnsafeMutableBytes { try src.read(into: $0) }
            if n == 0 { break }
            data.append(buf, count: n)
        }
        return data
    }
}

struct Encode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encode text into a `documents` token stream (record ids 0, 1, … in input order).",
        discussion: """
        Documents: --input-format text = each file is one document; lines = one per non-empty \
        line (line break dropped); jsonl = the "text" field of each line. No specials are added; \
        special-token text in the input is encoded as ordinary text. The output does not depend \
        on --threads.

        Example:
          tokenize encode -t tok.json --input-format jsonl data/train.jsonl \\
                   -o train.docs
        """)

    @Option(name: [.customShort("t"), .long], help: "tokenizer.json") var tokenizer: String
    @Option(name: .long, help: "text, lines or jsonl") var inputFormat: DocumentFormat = .text
    @Option(name: .shortAndLong, help: "Output stream (\"-\" = stdout).") var output: String = "-"
    @Option(name: .long, parsing: .unconditional, help: "Encoding threads.") var threads: Int = 2
    @Flag(name: .long, help: "Write to stdout even if it is a terminal.") var force = false
    @Flag(name: .long, help: "Print a summary to stderr: documents, bytes, tokens, encoding time and MB/s (encoding only, without loading, reading and writing).")
    var report = false
    @Flag(name: .long, help: "Write ids as text instead of a stream: one line per document, ids separated by spaces (for inspection and parity checks).")
    var idsText = false
    @Argument(help: "Input files (none or \"-\" = stdin).") var files: [String] = []

    func validate() throws {
        try usage { try checkRange(threads, 1...Limits.threads, "--threads") }
    }

    func run() throws {
        let tok = try BPETokenizer.load(path: tokenizer)
        let header = StreamHeader(kind: .documents, vocabSize: tok.vocabSize, tokenizerFingerprint: tok.fingerprint,
                                  special: tok.special, attributes: ["tool": "tokenize encode", "tokenizer": tokenizer])
        let inputs = files.isEmpty ? ["-"] : files
        let readers = try inputs.map { try DocumentReader(path: $0, format: inputFormat) }  // fail early on bad paths
        let out = try OutputFile(path: output, allowTerminal: force || idsText)
        do {
            let writer = idsText ? nil : try TokenStreamWriter(sink: out, header: header, flushEachRecord: output == "-")
            let encoder = ParallelEncoder(tok, threads: threads)
            var nextId: UInt64 = 0
            var batch = [[UInt8]]()
            var bytes = 0
            var totalBytes = 0, totalTokens = 0
            var encodeSeconds = 0.0, encodeCPU = 0.0
            func cpuSeconds() -> Double {
                var ts = timespec()
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
                return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
            }
            func flush() throws {
                let t0 = DispatchTime.now().uptimeNanoseconds, c0 = cpuSeconds()
                let encoded = encoder.encode(batch)
                encodeSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                encodeCPU += cpuSeconds() - c0
                totalBytes += bytes
                for ids in encoded {
                    totalTokens += ids.count
                    if let w = writer {
                        try w.write(TokenRecord(id: nextId, tokens: ids))
                    } else {
                        let line = Array((ids.map { String($0) }.joined(separator: " ") + "\n").utf8)
                        try line.withUnsafeBytes { try out.write($0) }
                    }
                    nextId += 1
                }
                batch.removeAll(keepingCapacity: true); bytes = 0
            }
            for r in readers {
                while let doc = try r.next() {
                    bytes += doc.count
                    batch.append(doc)
                    if bytes >= 4 << 20 || batch.count >= 4096 { try flush() }
                }
            }
            try flush()
            try writer?.finish()
            try out.commit()
            if report {
                stderrLine("tokenize encode: \(nextId) documents, \(totalBytes) bytes → \(totalTokens) tokens; encoding \(String(format: "%.3f", encodeSeconds)) s = \(String(format: "%.2f", Double(totalBytes) / 1e6 / max(encodeSeconds, 1e-9))) MB/s on \(threads) thread(s); CPU \(String(format: "%.3f", encodeCPU)) s")
            }
        } catch {
            out.abort()
            throw error
        }
    }
}

struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode a token stream back to text.",
        discussion: """
        Default output: each record's bytes followed by "\\n" (exactly the input bytes for \
        `encode --input-format lines`). --raw: records concatenated with nothing in between (a \
        single `text` document comes back byte for byte). --jsonl: {"id": …, "text": …} per \
        record; bytes that are not valid UTF-8 become U+FFFD in "text" and the exact bytes are \
        added as "bytes_base64". Specials decode to their names ("<|endoftext|>", "[MASK]"). \
        The stream's tokenizer fingerprint must match the tokenizer's. Without -t, the tokenizer \
        path recorded in the stream by `tokenize encode` is used. On stdout every record is printed \
        as soon as it is read, so `draft … -o - | tokenize decode -t tok.json` shows samples while \
        sampling runs.

        Example:
          tokenize decode -t tok.json -i train.docs --jsonl -o train.jsonl
        """)

    @Option(name: [.customShort("t"), .long], help: "tokenizer.json (default: the one recorded in the stream)") var tokenizer: String?
    @Option(name: .shortAndLong, help: "Input stream (\"-\" = stdin).") var input: String = "-"
    @Option(name: .shortAndLong, help: "Output text (\"-\" = stdout).") var output: String = "-"
    @Flag(help: "One JSON object per record.") var jsonl = false
    @Flag(help: "No separator between records.") var raw = false

    func validate() throws {
        if jsonl && raw { throw ValidationError("--jsonl and --raw exclude each other") }
    }

    func run() throws {
        let reader = try TokenStreamReader(source: openInput(input), name: input == "-" ? "stdin" : input)
        guard let path = tokenizer ?? reader.header.attributes["tokenizer"] else {
            throw ToolError("the stream does not name its tokenizer: pass -t tokenizer.json")
        }
        let tok = try BPETokenizer.load(path: path)
        guard tok.fingerprint == reader.header.tokenizerFingerprint else {
            throw ToolError("tokenizer mismatch: the stream was encoded with tokenizer fingerprint \(String(reader.header.tokenizerFingerprint, radix: 16)), but \(path) has \(String(tok.fingerprint, radix: 16)); pass the tokenizer.json the stream was made with")
        }
        let out = try OutputFile(path: output, allowTerminal: true)
        do {
            while let rec = try reader.next() {
                guard tok.isValid(rec.tokens) else {
                    throw ToolError("record \(rec.id) has token ids outside 0..<\(tok.vocabSize); the stream is not from this tokenizer")
                }
                var bytes = tok.decode(rec.tokens)
                if jsonl {
                    var obj: [String: Any] = ["id": rec.id, "text": String(decoding: bytes, as: UTF8.self)]
                    if String(validating: bytes, as: UTF8.self) == nil { obj["bytes_base64"] = Data(bytes).base64EncodedString() }
                    bytes = Array(try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .withoutEscapingSlashes]))
                    bytes.append(0x0A)
                } else if !raw {
                    bytes.append(0x0A)
                }
                try bytes.withUnsafeBytes { try out.write($0) }
                // Streaming: on stdout each record goes out as soon as it is read (`draft | tokenize decode`
                // shows text while sampling runs); a file is still written atomically by commit().
                if output == "-" { try out.flush() }
            }
            try out.commit()
        } catch {
            out.abort()
            throw error
        }
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print record and token counts of token streams.",
        discussion: "Example:\n  tokenize stats train.docs valid.docs")

    @Argument(help: "Streams (\"-\" = stdin).") var streams: [String] = ["-"]

    func run() throws {
        for s in streams {
            let reader = try TokenStreamReader(source: openInput(s), name: s)
            var records = 0, tokens = 0, minLen = Int.max, maxLen = 0
            while let r = try reader.next() {
                records += 1; tokens += r.tokens.count
                minLen = min(minLen, r.tokens.count); maxLen = max(maxLen, r.tokens.count)
            }
            let h = reader.header
            print("\(s): kind \(h.kind), vocab \(h.vocabSize), tokenizer \(String(h.tokenizerFingerprint, radix: 16)), records \(records), tokens \(tokens), length min \(records > 0 ? minLen : 0) max \(maxLen) mean \(records > 0 ? String(format: "%.1f", Double(tokens) / Double(records)) : "0")")
        }
    }
}

runTool(Tokenize.self)
