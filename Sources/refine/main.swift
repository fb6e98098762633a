// refine: fill the masked positions of a samples stream with block diffusion of block size B (B ≥ the
// length = global bidirectional refinement). All logic is in BlockDiffusion/Sampling/Refine.swift.
import ArgumentParser
import BlockDiffusion
import Foundation

extension SamplerKind: ExpressibleByArgument {}
extension InfillFormat: ExpressibleByArgument {}

struct Refine: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refine",
        abstract: "Re-denoise the MASK positions of a samples stream; kept tokens stay fixed.",
        discussion: """
        Blocks go left to right over an exact KV cache; only masked positions are sampled. \
        Chains: refine | remask | refine.

        Example:
          remask --ratio 0.5 -i drafts.tok | refine -m ck.safetensors --block-size 1024 --nucleus 0.9 -o refined.tok
          refine -m ck.safetensors -t tokenizer.json --infill holes.txt --block-size 128 -o - | tokenize decode
              (holes.txt: "The [MASK:8] sat on the mat", one record per line)
        """)

    @Option(name: [.customShort("m"), .customLong("model")], help: "Checkpoint (safetensors written by train).")
    var model: String

    @Option(name: .customLong("block-size"), help: "Block size (default: the checkpoint's; ≥ length = global).")
    var blockSize: Int?

    @Option(help: "first-hitting or ddpm.")
    var sampler: SamplerKind = .firstHitting

    @Option(help: "DDPM steps per block.")
    var steps: Int = 1000

    @Option(help: "Nucleus (top-p) threshold in (0, 1].")
    var nucleus: Double = 1.0

    @Option(help: "Random seed.")
    var seed: UInt64 = 0

    @Option(help: "Records of equal length per batched forward.")
    var batch: Int = 1

    @Option(name: [.short, .long], help: "Input samples stream ('-' = stdin).")
    var input: String = "-"

    @Flag(name: .customLong("no-kv-cache"), help: "No KV cache: every forward runs the window of finished blocks + the current block (at most the model length) through the block-causal mask (the reference's kv_cache=False; slower, for comparison).")
    var noKVCache = false

    // MARK: decoding options (unmasking policy, infill from text, traces); checked by DecodeOptions / runRefine
    @Option(help: "Which masked positions a step fills: random (default), confidence, margin, entropy, threshold:τ, eb:γ (see draft --help).")
    var unmask: String = "random"

    @Option(help: "Fill [MASK] / [MASK:n] spans of a text file (one record per line) instead of reading a stream; needs -t.")
    var infill: String?

    @Option(name: .customLong("infill-format"), help: "text (a line is a record) or jsonl (objects with \"text\").")
    var infillFormat: InfillFormat = .text

    @Option(name: [.customShort("t"), .customLong("tokenizer")], help: "tokenizer.json for --infill (and text in --visual).")
    var tokenizer: String?

    @Option(help: "Write one JSON line per sampling step (record, block, step, positions, confidence, nfe, tokens) to FILE.")
    var trace: String?

    @Flag(help: "Redraw the block being denoised on the terminal (stderr); with -t as text.")
    var visual = false

    @Flag(help: "Also record each token's snapshot margin (top-1 − top-2 probability; stream format v2) for remask --policy margin. Kept when the input has margins.")
    var margins = false
    // MARK: end of decoding options

    @Option(name: [.short, .long], help: "Output stream ('-' = stdout).")
    var output: String = "-"

    @Flag(help: "Write binary output even to a terminal.")
    var force = false

    func validate() throws {
        if let b = blockSize, b < 1 { throw ValidationError("--block-size must be at least 1") }
        guard nucleus > 0 && nucleus <= 1 else { throw ValidationError("--nucleus must be in (0, 1] (got \(nucleus))") }
        guard steps >= 1, batch >= 1 else { throw ValidationError("--steps and --batch must be at least 1") }
        if infill != nil && tokenizer == nil { throw ValidationError("--infill FILE needs -t tokenizer.json (the checkpoint's tokenizer)") }
        if infill != nil && input != "-" { throw ValidationError("give either --infill FILE or -i STREAM, not both") }
        do { _ = try DecodeOptions(unmask: unmask, trace: trace, visual: visual) } catch let e as SamplingUsageError { throw ValidationError(e.description) }
    }

    func run() throws {
        let ck = try SamplingCheckpoint.load(path: model)
        let tok = try tokenizer.map { try BPETokenizer.load(path: $0) }
        if let tok, let tokenizer, ck.fingerprint != 0 && tok.fingerprint != ck.fingerprint {
            throw ToolError("\(tokenizer): tokenizer fingerprint \(String(format: "%016llx", tok.fingerprint)) differs from the checkpoint's \(String(format: "%016llx", ck.fingerprint)); pass the tokenizer the model was trained with")
        }
        var o = RefineOptions()
        o.blockSize = blockSize; o.sampler = sampler; o.steps = steps; o.nucleus = nucleus; o.seed = seed; o.batch = batch; o.kvCache = !noKVCache
        do {
            let decoding = try DecodeOptions(unmask: unmask, trace: trace, visual: visual)
            o.unmask = decoding.unmask
            let text: ([Int32]) -> String = { ids in tok.map { String(decoding: $0.decode(ids), as: UTF8.self) } ?? ids.map(String.init).joined(separator: " ") + " " }
            try decoding.withObservers(decode: text, maskId: ck.special.mask) { observer in
                if let infill, let tok {
                    _ = try openInput(infill)   // existence / directory checks with their messages
                    guard let data = FileManager.default.contents(atPath: infill) else { throw ToolError("cannot read \(infill): check its permissions") }
                    let body = String(decoding: data, as: UTF8.self)
                    var lines = body.components(separatedBy: "\n")
                    if lines.last == "" { lines.removeLast() }
                    let records = try infillRecords(lines: lines, format: infillFormat, encode: { tok.encode($0) }, special: ck.special)
                    var it = records.makeIterator()
                    var attrs = ["infill": infill]
                    if o.unmask != .random { attrs["unmask"] = "\(o.unmask)" }
                    var header = ck.samplesHeader(tool: "refine", attributes: attrs)
                    if margins { header.fields.insert(.margin) }
                    try withSamplesOutput(path: output, header: header, allowTerminal: force) { w in
                        try runRefine(checkpoint: ck, options: o, next: { it.next() }, writer: w, source: infill, observer: observer)
                    }
                    return
                }
                let name = input == "-" ? "stdin" : input
                let reader = try TokenStreamReader(source: try openInput(input), name: name)
                var h = reader.header
                h.kind = .samples
                h.fields = [.confidence, .unmaskStep]
                if margins || reader.header.fields.contains(.margin) { h.fields.insert(.margin) }
                if h.special.mask < 0 { h.special = ck.special }
                h.attributes["tool"] = "refine"
                try withSamplesOutput(path: output, header: h, allowTerminal: force) { w in
                    try runRefine(checkpoint: ck, options: o, reader: reader, writer: w, source: name, observer: observer)
                }
            }
        } catch let e as SamplingUsageError { throw ValidationError(e.description) }
    }
}

Runtime.prepareTool()
Refine.main()
