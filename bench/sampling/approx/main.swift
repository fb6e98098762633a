// bench-approx-cache: how far `refine --approx-cache K` moves from the exact refine, on a trained checkpoint.
//
//   bench-approx-cache [-m data/demo/mix.safetensors] [-n 16] [--length 128] [--draft-block 4] [--ratio 0.25]
//                      [--draft-nucleus 0.9] [--nucleus 1] [--seed 1] [--ks 2,4,8] [--dtype fp32|bf16] [--batch N]
//
// The pipeline of `make demo`, in one process: draft (L' = --draft-block) → remask --policy snapshot --ratio →
// refine with one global block (B = --length) exactly, then with --approx-cache K for each K, same seed. Every
// refine starts from the same masked records with the same seed: with --nucleus 1 (the default here) every step
// draws the same number of uniforms, so the positions come in the same order with the same Gumbel noise and a
// differing token is the reuse's doing. (With a nucleus < 1 the number of draws follows the nucleus's size: one
// flipped boundary token desynchronises the rest of the record, which then differs like an independent sample.)
// The row "seed+1" is that floor: the exact refine with another seed. Per K, over the positions refine fills:
//   same      fraction of tokens identical to the exact refine's
//   dconf     mean |confidence − the exact refine's confidence| (snapshot confidence of the written token)
//   seconds   wall time of the refine alone (draft and remask excluded), and its ratio to the exact refine's
// K = 1 prints same = 1 and dconf = 0 (a full forward every step is the exact sampler).
// Per-step error without the trajectory's drift (teacher forcing): the exact refine's steps are replayed (same
// positions, same tokens written); at each step the forward K would run (full at steps 1, K+1, …; else reusing)
// is compared with the exact forward on the same canvas, at the row that step fills (post-nucleus p):
//   tv        mean total-variation distance ½Σ|p − p_exact|      top1   fraction of steps with the same argmax
// Wall times mean something only from a release build on an otherwise idle machine.
import Foundation
import ArgumentParser
import BlockDiffusion

Runtime.prepareBLAS()

struct Args: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-approx-cache")
    @Option(name: .customShort("m"), help: ArgumentHelp("Checkpoint.", valueName: "ckpt")) var path = "data/demo/mix.safetensors"
    @Option(name: .customShort("n"), help: "Drafts.") var n = 16
    @Option(help: "Tokens per draft.") var length = 128
    @Option(help: "Draft block size L'.") var draftBlock = 4
    @Option(help: "Drafts per batch (default: all).") var batch: Int? = nil
    @Option(help: "Remask ratio γ.") var ratio = 0.25
    @Option(help: "Refine nucleus.") var nucleus = 1.0
    @Option(help: "Draft nucleus.") var draftNucleus = 0.9
    @Option(help: "Seed.") var seed: UInt64 = 1
    @Option(help: "Comma-separated K values of --approx-cache.") var ks = "2,4,8"
    @Option(help: "Weights: fp32 or bf16.") var dtype: WeightDType = .fp32
    mutating func validate() throws {
        guard n >= 1, length >= 2, draftBlock >= 1, (batch ?? 1) >= 1 else { throw ValidationError("-n, --draft-block, --batch must be ≥ 1, --length ≥ 2") }
        for (name, v) in [("--ratio", ratio), ("--nucleus", nucleus), ("--draft-nucleus", draftNucleus)] where !(v > 0 && v <= 1) {
            throw ValidationError("\(name) must be in (0, 1]")
        }
        let k = ks.split(separator: ",").compactMap { Int($0) }
        guard !k.isEmpty, k.count == ks.split(separator: ",").count, k.allSatisfy({ $0 >= 1 }) else {
            throw ValidationError("--ks must be a comma-separated list of K ≥ 1")
        }
    }
}
extension WeightDType: ExpressibleByArgument {}
let cli = Args.parseOrExit()
let path = cli.path, n = cli.n, length = cli.length, draftBlock = cli.draftBlock, batch = cli.batch
let ratio = cli.ratio, nucleus = cli.nucleus, draftNucleus = cli.draftNucleus, seed = cli.seed, dtype = cli.dtype
let ks = cli.ks.split(separator: ",").compactMap { Int($0) }

func records(_ body: (TokenStreamWriter) throws -> Void, _ ck: SamplingCheckpoint) throws -> [TokenRecord] {
    let sink = MemorySink()
    let w = try TokenStreamWriter(sink: sink, header: ck.samplesHeader(tool: "bench", attributes: [:]))
    try body(w)
    try w.finish()
    return try TokenStreamReader(source: MemorySource(sink.bytes)).readAll()
}

func now() -> Double { var t = timespec(); clock_gettime(CLOCK_MONOTONIC, &t); return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9 }

do {
    let ck = try SamplingCheckpoint.open(path: path)
    let weights = try InferenceWeights(model: ck.model, dtype: dtype)
    var d = DraftOptions(); d.samples = n; d.length = length; d.blockSize = draftBlock; d.nucleus = draftNucleus; d.seed = seed
    d.entropyStop = false; d.batch = batch; d.dtype = dtype
    let drafts = try records({ try runDraft(checkpoint: ck, options: d, prompts: [], writer: $0, weights: weights) }, ck)
    let mask = ck.special.mask
    let masked = try drafts.map { try remaskRecord($0, policy: .snapshot, ratio: ratio, maskId: mask, seed: seed) }
    let filled = masked.map { r in r.tokens.indices.filter { r.tokens[$0] == mask } }
    func refine(_ K: Int, seed: UInt64 = seed) throws -> ([TokenRecord], Double) {
        var o = RefineOptions(); o.blockSize = length; o.nucleus = nucleus; o.seed = seed; o.batch = batch; o.dtype = dtype
        o.approxCache = K
        var it = masked.makeIterator()
        let t0 = now()
        let out = try records({ _ = try runRefine(checkpoint: ck, options: o, next: { it.next() }, writer: $0, weights: weights) }, ck)
        return (out, now() - t0)
    }
    let (exact, base) = try refine(0)
    let total = filled.reduce(0) { $0 + $1.count }
    print("checkpoint \(path): \(n) drafts of \(length) tokens (L'=\(draftBlock), nucleus \(draftNucleus)), snapshot remask γ=\(ratio): \(total) masked positions; refine B=\(length), nucleus \(nucleus), dtype \(dtype.rawValue)")
    // Teacher-forced replay of the exact trajectory (records one at a time).
    let V = ck.config.vocabSize
    let approxEngine = try CachedDiT(weights: weights, maxBatch: 1, maxChunk: length, capacity: max(length, ck.config.length))
    let exactEngine = try CachedDiT(weights: weights, maxBatch: 1, maxChunk: length, capacity: max(length, ck.config.length))
    func teacherForced(_ K: Int) -> (tv: Double, top1: Double) {
        var tv = 0.0, agree = 0, steps = 0
        for (i, r) in masked.enumerated() {
            let order = filled[i].sorted { exact[i].unmaskStep![$0] < exact[i].unmaskStep![$1] }
            var canvas = r.tokens, seen = r.tokens
            approxEngine.reset(); exactEngine.reset()
            for (s, pos) in order.enumerated() {
                let ex = exactEngine.forward(tokens: canvas, batch: 1, store: false, rows: [pos])
                var pe = subsProbabilities(logits: ex.baseAddress!, count: V, maskId: Int(mask))
                nucleusFilter(&pe, topP: nucleus)
                let ap: UnsafeBufferPointer<Float>
                if s % K == 0 {
                    ap = approxEngine.forward(tokens: canvas, batch: 1, store: false, rows: [pos])
                } else {
                    let compute = canvas.indices.filter { canvas[$0] == mask || canvas[$0] != seen[$0] }
                    ap = approxEngine.forwardReusing(tokens: canvas, batch: 1, compute: compute, rows: [pos])
                }
                var pa = subsProbabilities(logits: ap.baseAddress!, count: V, maskId: Int(mask))
                nucleusFilter(&pa, topP: nucleus)
                tv += 0.5 * zip(pa, pe).reduce(0) { $0 + abs($1.0 - $1.1) }
                if pa.indices.max(by: { pa[$0] < pa[$1] }) == pe.indices.max(by: { pe[$0] < pe[$1] }) { agree += 1 }
                steps += 1
                seen = canvas
                canvas[pos] = exact[i].tokens[pos]
            }
        }
        return (tv / Double(max(steps, 1)), Double(agree) / Double(max(steps, 1)))
    }
    print(String(format: "%-8@ %8@ %10@ %9@ %7@ %8@ %7@", "K", "same", "dconf", "seconds", "speedup", "tv", "top1"))
    print(String(format: "%-8@ %8.4f %10.5f %9.3f %7.2f %8.5f %7.4f", "exact", 1.0, 0.0, base, 1.0, 0.0, 1.0))
    func compare(_ out: [TokenRecord]) -> (same: Double, dconf: Double) {
        var same = 0, dconf = 0.0
        for (i, ps) in filled.enumerated() {
            for p in ps {
                if out[i].tokens[p] == exact[i].tokens[p] { same += 1 }
                dconf += Double(abs(out[i].confidence![p] - exact[i].confidence![p]))
            }
        }
        return (Double(same) / Double(max(total, 1)), dconf / Double(max(total, 1)))
    }
    let (other, _) = try refine(0, seed: seed &+ 1)
    let floor = compare(other)
    print(String(format: "%-8@ %8.4f %10.5f %9@ %7@ %8@ %7@", "seed+1", floor.same, floor.dconf, "-", "-", "-", "-"))
    for K in ks {
        let (out, secs) = try refine(K)
        let c = compare(out), tf = teacherForced(K)
        print(String(format: "%-8@ %8.4f %10.5f %9.3f %7.2f %8.5f %7.4f", "K=\(K)", c.same, c.dconf, secs, base / secs, tf.tv, tf.top1))
    }
} catch {
    FileHandle.standardError.write(Data("bench-approx-cache: \(error)\n".utf8))
    exit(1)
}
