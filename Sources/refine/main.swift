// refine: fill the masked positions of a samples stream with block diffusion of block size B (B ≥ the
// length = global bidirectional refinement). All logic is in BlockDiffusion/Sampling/Refine.swift.
import ArgumentParser
import BlockDiffusion
import Foundation
import ToolOptions

extension InfillFormat: ExpressibleByArgument {}

struct Refine: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refine",
        abstract: "Re-denoise the MASK positions of a samples stream; kept tokens stay fixed.",
        discussion: """
        Blocks go left to right over an exact KV cache; only masked positions are sampled. \
        Chains: refine | remask | refine. With --infill, the records come from a text file whose \
        [MASK] / [MASK:n] spans are the positions to fill (one record per line).

        Examples:
          refine -m ck.safetensors --block-size 1024 -i masked.tok -o refined.tok
          refine -m ck.safetensors --block-size 1024 --approx-cache 4 \\
                 -i masked.tok -o refined.tok
          remask --ratio 0.5 -i drafts.tok \\
                 | refine -m ck.safetensors --nucleus 0.9 -o refined.tok
          refine -m ck.safetensors -t tokenizer.json --infill holes.txt \\
                 --block-size 128 -o - | tokenize decode
        """)

    @OptionGroup(title: "Checkpoint") var checkpoint: CheckpointOptions
    @OptionGroup(title: "Special ids") var ids: SpecialIDOptions
    @OptionGroup(title: "Sampler") var sampling: SamplerOptions
    @OptionGroup(title: "Decoding") var decoding: DecodingOptions
    @OptionGroup var input: InputOptions

    @Option(help: "Fill [MASK] / [MASK:n] spans of a text file (one record per line) instead of reading a stream; needs -t.")
    var infill: String?

    @Option(name: .customLong("infill-format"), help: "text (a line is a record) or jsonl (objects with \"text\").")
    var infillFormat: InfillFormat = .text

    @Option(name: [.customShort("t"), .customLong("tokenizer")], help: "tokenizer.json for --infill (and text in --visual).")
    var tokenizer: String?

    @Option(name: .customLong("approx-cache"), parsing: .unconditional,
            help: "Approximate k/v reuse inside the block being denoised (dKV-Cache): a full forward every K steps of a record, in between only its masked rows and the rows decoded since its previous step are recomputed, over the reused keys/values of the others. 0 = off (exact, the default); 1 = exact; K ≥ 2 is faster and not exact (docs/sampling.md: measured divergence). Recorded in the stage entry.")
    var approxCache = 0

    @OptionGroup(title: "Output") var out: OutputOptions

    @OptionGroup var sharding: ShardOptions

    func validate() throws {
        if infill != nil && tokenizer == nil { throw ValidationError("--infill FILE needs -t tokenizer.json (the checkpoint's tokenizer)") }
        if infill != nil && input.input != "-" { throw ValidationError("give either --infill FILE or -i STREAM, not both") }
        try usage { var o = sampling.refineOptions; o.approxCache = approxCache; try o.validate() }
    }

    func run() throws {
        let ck = try checkpoint.open(blockSize: sampling.blockSize, ids: ids, dtype: sampling.loadDType)
        let tok = try tokenizer.map { try BPETokenizer.load(path: $0) }
        if let tok, let tokenizer, ck.fingerprint != 0 && tok.fingerprint != ck.fingerprint {
            throw ToolError("\(tokenizer): tokenizer fingerprint \(hex(tok.fingerprint)) differs from the checkpoint's \(hex(ck.fingerprint)); pass the tokenizer the model was trained with")
        }
        let dec = try decoding.parsed()
        var o = sampling.refineOptions
        o.unmask = dec.unmask
        o.approxCache = approxCache
        try usage { o.shard = try Shard.parse(sharding.shard) }
        // bf16: the weights were converted while loading and the fp32 parameters released (SamplingCheckpoint.open).
        var weights: InferenceWeights?
        if o.kvCache { try usage { weights = try prepareInference(ck, dtype: o.dtype) } }
        let text: ([Int32]) -> String = { ids in tok.map { String(decoding: $0.decode(ids), as: UTF8.self) } ?? ids.map(String.init).joined(separator: " ") + " " }
        try dec.withObservers(decode: text, maskId: ck.special.mask) { observer in
            if let infill, let tok {
                _ = try openInput(infill)   // existence / directory checks with their messages
                guard let data = FileManager.default.contents(atPath: infill) else { throw ToolError("cannot read \(infill): check its permissions") }
                var lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
                if lines.last == "" { lines.removeLast() }
                let records = try infillRecords(lines: lines, format: infillFormat, encode: { tok.encode($0) }, special: ck.special)
                var it = records.makeIterator()
                var attrs = ["infill": infill]
                if o.unmask != .random { attrs["unmask"] = "\(o.unmask)" }
                var header = ck.samplesHeader(tool: "refine", attributes: attrs)
                if decoding.margins { header.fields.insert(.margin) }
                try withSamplesOutput(path: out.output, header: header, allowTerminal: out.force) { w in
                    try runRefine(checkpoint: ck, options: o, next: { it.next() }, writer: w, source: infill, observer: observer, weights: weights)
                }
                return
            }
            let reader = try TokenStreamReader(source: try openInput(input.input), name: input.name)
            try requireSamplesStream(reader.header, source: input.name, tool: "refine")
            var h = reader.header
            h.kind = .samples
            h.fields = [.confidence, .unmaskStep]
            if decoding.margins || reader.header.fields.contains(.margin) { h.fields.insert(.margin) }
            if h.special.mask < 0 { h.special = ck.special }
            h.attributes["tool"] = "refine"
            try withSamplesOutput(path: out.output, header: h, allowTerminal: out.force) { w in
                try runRefine(checkpoint: ck, options: o, reader: reader, writer: w, source: input.name, observer: observer, weights: weights)
            }
        }
    }
}

runTool(Refine.self)
