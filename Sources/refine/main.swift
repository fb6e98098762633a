// refine: fill the masked positions of a samples stream with block diffusion of block size B (B ≥ the
// length = global bidirectional refinement). All logic is in BlockDiffusion/Sampling/Refine.swift.
import ArgumentParser
import BlockDiffusion
import Foundation
import ToolOptions

struct Refine: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refine",
        abstract: "Re-denoise the MASK positions of a samples stream; kept tokens stay fixed.",
        discussion: """
        Blocks go left to right over an exact KV cache; only masked positions are sampled. \
        Chains: refine | remask | refine.

        Examples:
          refine -m ck.safetensors --block-size 1024 -i masked.tok -o refined.tok
          remask --ratio 0.5 -i drafts.tok \\
                 | refine -m ck.safetensors --nucleus 0.9 -o refined.tok
        """)

    @OptionGroup(title: "Checkpoint") var checkpoint: CheckpointOptions
    @OptionGroup(title: "Special ids") var ids: SpecialIDOptions
    @OptionGroup(title: "Sampler") var sampling: SamplerOptions
    @OptionGroup var input: InputOptions
    @OptionGroup(title: "Output") var out: OutputOptions

    func run() throws {
        let ck = try SamplingCheckpoint.load(path: checkpoint.model, maskId: ids.maskId, bosId: ids.bosId, eosId: ids.eosId)
        let reader = try TokenStreamReader(source: try openInput(input.input), name: input.name)
        try requireSamplesStream(reader.header, source: input.name, tool: "refine")
        var h = reader.header
        h.kind = .samples
        h.fields = [.confidence, .unmaskStep]
        if h.special.mask < 0 { h.special = ck.special }
        h.attributes["tool"] = "refine"
        try withSamplesOutput(path: out.output, header: h, allowTerminal: out.force) { w in
            try runRefine(checkpoint: ck, options: sampling.refineOptions, reader: reader, writer: w, source: input.name)
        }
    }
}

runTool(Refine.self)
