// bench-engine-forward: where the time of one cached sampling forward goes (batch-1 `draft`, first-hitting, L' = 4).
//
//   bench-engine-forward -m CKPT [--dtype fp32|bf16] [--batch 1] [--context 64] [--reps 16]
//
// In one process, model load excluded, on the engine `draft` builds (CachedDiT, chunk 2L' = 8 rows per sequence):
//   forward   the sampler's pattern per block: one folded forward (the previous block's store + the first step: 8 rows
//             per sequence) and three step forwards (4 rows), each with the output layer for ONE row per sequence
//             (first-hitting needs the logits of the one position it unmasks); ms per forward, mean over --reps blocks,
//             after --context cached positions.
//   products  the same kernels (CKernels bd3_linear_*) on random matrices of every layer's shape, with the rows of
//             those forwards and the engine's split of the output columns over the workers: ms per forward by layer
//             kind (qkv, attention out, MLP in, MLP out: all layers; output layer), and their weight GB/s.
//   sampler   per unmasked token: SUBS softmax over V (float64), the Gumbel-max draw, nucleus 0.9 (draft's default
//             is 1; shown for the cost of the filter); serial (batch > 1: one canvas per worker) and with the V-long
//             loops split over the workers (batch 1).
//   rest      forward − products: norms, attention over the cache, rotary, GELU, residuals, embedding, dispatch.
// Threads: BD3_THREADS (default: the cores of the process); run single-threaded (BD3_THREADS=1) on a shared machine.
import Foundation
import ArgumentParser
import BlockDiffusion
import CKernels

Runtime.prepareBLAS()

struct Args: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench-engine-forward")
    @Option(name: .customShort("m"), help: ArgumentHelp("BD3-LM / MDLM checkpoint.", valueName: "ckpt")) var path: String
    @Option(help: "Weights: fp32 or bf16.") var dtype: WeightDType = .fp32
    @Option(help: "Sequences per forward.") var batch = 1
    @Option(help: "Cached positions before the timed blocks.") var context = 64
    @Option(help: "Timed blocks.") var reps = 16
    mutating func validate() throws {
        guard batch >= 1, reps >= 1, context >= 0 else { throw ValidationError("--batch and --reps must be ≥ 1, --context ≥ 0") }
    }
}
extension WeightDType: ExpressibleByArgument {}
let cli = Args.parseOrExit()
let path = cli.path, dtype = cli.dtype, batch = cli.batch, context = cli.context, reps = cli.reps
func fail(_ m: String) -> Never { FileHandle.standardError.write(Data((m + "\n").utf8)); exit(1) }

func now() -> Double { var t = timespec(); clock_gettime(CLOCK_MONOTONIC, &t); return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9 }
let workers: Int = {
    if let s = ProcessInfo.processInfo.environment["BD3_THREADS"], let n = Int(s), n >= 1 { return n }
    return ProcessInfo.processInfo.activeProcessorCount
}()

do {
    let ck = try SamplingCheckpoint.open(path: path, dtype: dtype)
    let cfg = ck.config
    guard !cfg.causal, !cfg.timeConditioning else { fail("a BD3-LM / MDLM checkpoint is needed") }
    guard let weights = try prepareInference(ck, dtype: dtype) else { fail("no inference weights for this checkpoint") }
    let Lb = 4, B = batch, D = cfg.hiddenSize, V = cfg.vocabSize
    let engine = try CachedDiT(weights: weights, maxBatch: B, maxChunk: 2 * Lb, capacity: cfg.length)
    guard context + 4 * Lb * (reps + 2) <= cfg.length else { Args.exit(withError: ValidationError("--context + 16·(reps + 2) must fit the model length \(cfg.length)")) }
    var rng = SplitMix64(seed: 1)
    func block() -> [Int32] { (0..<(B * Lb)).map { _ in Int32(rng.next() % UInt64(V - 3)) } }
    let mask = Int32(ck.special.mask)
    let masked = [Int32](repeating: mask, count: B * Lb)
    let rows = (0..<B).map { $0 * Lb + 1 }
    while engine.cached < context { engine.forward(tokens: block(), batch: B, store: true, logits: false) }
    // Warm-up block, then the timed blocks.
    var tFold = 0.0, tStep = 0.0
    var last = UnsafeBufferPointer<Float>(start: nil, count: 0)
    for r in 0...reps {
        let t0 = now()
        last = engine.forward(storing: block(), tokens: masked, batch: B, rows: rows)
        let t1 = now()
        for _ in 0..<3 { last = engine.forward(tokens: masked, batch: B, store: false, rows: rows) }
        let t2 = now()
        if r > 0 { tFold += t1 - t0; tStep += t2 - t1 }
    }
    let fold = tFold / Double(reps) * 1e3, step = tStep / Double(3 * reps) * 1e3
    let forward = (fold + 3 * step) / 4

    // Products by layer kind: the same kernels on random matrices of every layer's shape, laid out and called in the
    // forward's order (each matrix streamed from memory as in the engine, not left in L3 by a repeated call).
    let kinds = ["qkv", "attn out", "mlp in", "mlp out", "output"]
    let shapes = (0..<cfg.nBlocks).flatMap { _ in [(0, 3 * D, D), (1, D, D), (2, 4 * D, D), (3, D, 4 * D)] } + [(4, V, D)]
    let total = shapes.reduce(0) { $0 + $1.1 * $1.2 }
    let wf = UnsafeMutablePointer<Float>.allocate(capacity: dtype == .fp32 ? total : 1)
    let wb = UnsafeMutablePointer<UInt16>.allocate(capacity: dtype == .bf16 ? total : 1)
    DispatchQueue.concurrentPerform(iterations: 16) { c in
        let lo = total * c / 16, hi = total * (c + 1) / 16
        var chunk = [Float](repeating: 0, count: hi - lo)
        for i in lo..<hi { chunk[i - lo] = Float(Int(i % 251) - 125) * 1e-3 }
        if dtype == .fp32 { (wf + lo).update(from: chunk, count: hi - lo) } else { bd3_f32_to_bf16(wb + lo, chunk, hi - lo) }
    }
    // One product split over the workers as linearForward splits it, on the engine's worker pool.
    struct Job {
        let y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, wf: UnsafePointer<Float>, wb: UnsafePointer<UInt16>
        let oc, c, M, parts: Int, bf16: Bool
        func run(_ part: Int) {
            // Splits on multiples of 24 and bf16 in the engine's packed panels, as linearForward (the weight values are
            // a pattern: their order does not matter here).
            let o0 = Int32(part == 0 ? 0 : oc * part / parts / 24 * 24), o1 = Int32(part == parts - 1 ? oc : oc * (part + 1) / parts / 24 * 24)
            if bf16 { bd3_linear_bf16_packed(y, Int32(oc), x, Int32(c), wb, nil, Int32(M), Int32(c), Int32(oc), o0, o1) }
            else { bd3_linear_f32(y, Int32(oc), x, Int32(c), wf, nil, Int32(M), Int32(c), o0, o1) }
        }
    }
    bd3_pool_start(Int32(workers - 1))
    let x = [Float](repeating: 0.5, count: 2 * Lb * B * 4 * D)
    var y = [Float](repeating: 0, count: 2 * Lb * B * max(4 * D, V))
    var perKind = [Double](repeating: 0, count: kinds.count)
    func products(rowsPerSeq: Int) -> [Double] {
        var t = [Double](repeating: 0, count: kinds.count)
        var off = 0
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                nonisolated(unsafe) let yy = yp.baseAddress!, xx = xp.baseAddress!
                for (kind, oc, c) in shapes {
                    let M = kind == 4 ? B : rowsPerSeq * B
                    let parts = oc * c * M < (1 << 15) ? 1 : min(workers, max(1, oc / 32))
                    let o = off
                    let t0 = now()
                    var job = Job(y: yy, x: xx, wf: wf + o, wb: wb + o, oc: oc, c: c, M: M, parts: parts, bf16: dtype == .bf16)
                    if parts == 1 || bd3_pool_run(parts, { ctx, part in ctx!.assumingMemoryBound(to: Job.self).pointee.run(part) }, &job) == 0 {
                        for part in 0..<parts { job.run(part) }
                    }
                    t[kind] += now() - t0
                    off += oc * c
                }
            }
        }
        return t
    }
    _ = products(rowsPerSeq: 2 * Lb)
    for _ in 0..<reps {
        let f = products(rowsPerSeq: 2 * Lb)
        var s = [Double](repeating: 0, count: kinds.count)
        for _ in 0..<3 { let t = products(rowsPerSeq: Lb); for k in s.indices { s[k] += t[k] } }
        for k in perKind.indices { perKind[k] += (f[k] + s[k]) / 4 / Double(reps) * 1e3 }
    }
    let bytes = shapes.map { $0.1 * $0.2 * dtype.bytesPerWeight }
    let sumProducts = perKind.reduce(0, +)

    // Sampler per unmasked token: SUBS softmax (float64), Gumbel-max draw; nucleus 0.9 separately.
    let row = UnsafeMutablePointer<Float>.allocate(capacity: V)
    for i in 0..<V { row[i] = Float((i &* 7919) % 1000) * 0.01 }
    var srng = SplitMix64(seed: 2)
    var t0 = now()
    for _ in 0..<reps { let p = subsProbabilities(logits: row, count: V, maskId: Int(mask)); _ = gumbelSample(p: p, rng: &srng) }
    let sampler = (now() - t0) / Double(reps) * 1e3
    t0 = now()
    for _ in 0..<reps { var p = subsProbabilities(logits: row, count: V, maskId: Int(mask)); nucleusFilter(&p, topP: 0.9) }
    let nucleus = (now() - t0) / Double(reps) * 1e3 - sampler
    // What batch-1 first-hitting runs: the same numbers with the V-long loops split over the workers.
    t0 = now()
    for _ in 0..<reps { let p = subsProbabilitiesSplit(logits: row, count: V, maskId: Int(mask)); _ = gumbelSampleSplit(p: p, rng: &srng) }
    let samplerSplit = (now() - t0) / Double(reps) * 1e3

    print("checkpoint \(path), dtype \(dtype.rawValue), batch \(B), \(workers) worker(s), context \(context) cached positions, \(reps) blocks")
    print(String(format: "forward (mean of the sampler's pattern: 1 folded of 8 rows/seq + 3 steps of 4): %.2f ms  (folded %.2f, step %.2f)", forward, fold, step))
    print(String(format: "  = %.1f tokens/s at one token per forward and sequence (sampler excluded)", Double(B) / forward * 1e3))
    print("| part | ms per forward | share | weight GB/s |")
    print("|---|---:|---:|---:|")
    for (k, name) in kinds.enumerated() {
        let by = zip(shapes, bytes).filter { $0.0.0 == k }.reduce(0) { $0 + $1.1 }
        print(String(format: "| %@ products | %.2f | %.2f | %.1f |", name, perKind[k], perKind[k] / forward, Double(by) / (perKind[k] * 1e-3) / 1e9))
    }
    let allBytes = bytes.reduce(0, +)
    print(String(format: "| all products | %.2f | %.2f | %.1f |", sumProducts, sumProducts / forward, Double(allBytes) / (sumProducts * 1e-3) / 1e9))
    print(String(format: "| rest of the forward (norms, attention, rotary, GELU, residuals, embedding, dispatch) | %.2f | %.2f | |",
                  forward - sumProducts, (forward - sumProducts) / forward))
    print(String(format: "| sampler per token: SUBS softmax + Gumbel-max over V (float64) | %.2f | %.2f | |", sampler, sampler / forward))
    print(String(format: "| sampler per token, loops split over the workers (batch 1) | %.2f | %.2f | |", samplerSplit, samplerSplit / forward))
    print(String(format: "| (nucleus 0.9 filter, when used) | %.2f | %.2f | |", nucleus, nucleus / forward))
    print(String(format: "weights streamed per forward: %.0f MB", Double(allBytes) / 1e6))
    _ = last
} catch {
    FileHandle.standardError.write(Data("bench-engine-forward: \(error)\n".utf8))
    exit(1)
}
