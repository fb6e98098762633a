// bench-train: training throughput of the Swift DiT (AR, MDLM, BD3) at the `cpu` config, with the machine's
// sgemm ceiling measured in the same run. A step = forward + loss head + backward + grad-norm clip (1.0) +
// AdamW (lr 3e-4, betas 0.9/0.999, eps 1e-8, wd 0), matching bench/torch_train.py.
//
//   swift run -c release bench-train [--algo ar|mdlm|bd3|all] [--steps 10] [--warmup 2] [--block-size 4] [--profile]
//                                    [--precision fp32|bf16] [--config cpu|small] [--batch 8] [--no-ceiling]
//
// tokens/s counts B·L per step (L, not 2L, for BD3), as the PyTorch script does.
// GFLOP/s counts useful FLOPs: 6·(matmul FLOPs of the forward) + attention on allowed (q,k) pairs only
// (forward 4·pairs·D, backward 8·pairs·D), i.e. work a dense-masked implementation would waste is not credited.
import Foundation
import BlockDiffusion
import COpenBLAS

Runtime.prepareBLAS()

var algos = ["ar", "mdlm", "bd3"]
var steps = 10, warmup = 2, blockSize = 4, profile = false, precision = Precision.fp32, configName = "cpu", ceilingRun = true, batchSize = 8
var args = CommandLine.arguments.dropFirst().makeIterator()
while let a = args.next() {
    switch a {
    case "--algo": let v = args.next()!; algos = v == "all" ? algos : [v]
    case "--steps": steps = Int(args.next()!)!
    case "--warmup": warmup = Int(args.next()!)!
    case "--block-size": blockSize = Int(args.next()!)!
    case "--profile": profile = true
    case "--precision": precision = Precision(rawValue: args.next()!)!
    case "--config": configName = args.next()!
    case "--batch": batchSize = Int(args.next()!)!
    case "--no-ceiling": ceilingRun = false   // skip the sgemm ceiling (e.g. every round but the first)
    default: FileHandle.standardError.write("unknown option \(a)\n".data(using: .utf8)!); exit(64)
    }
}

func now() -> Double { Date().timeIntervalSince1970 }

/// Peak resident set size of this process so far (MiB); run one --algo per process to attribute it.
func peakRSSMB() -> Double {
    var u = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
    return Double(u.ru_maxrss) / 1024   // KiB on Linux
}

/// sgemm ceiling: a square 2048³ product and a training-shaped one (N=4096 rows, 256 → 1024).
func sgemmCeiling() -> (square: Double, shaped: Double) {
    func measure(_ m: Int, _ n: Int, _ k: Int, reps: Int) -> Double {
        let a = UnsafeMutablePointer<Float>.allocate(capacity: m * k); a.initialize(repeating: 0.5, count: m * k)
        let b = UnsafeMutablePointer<Float>.allocate(capacity: k * n); b.initialize(repeating: 0.25, count: k * n)
        let c = UnsafeMutablePointer<Float>.allocate(capacity: m * n); c.initialize(repeating: 0, count: m * n)
        defer { a.deallocate(); b.deallocate(); c.deallocate() }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k), b, Int32(k), 0, c, Int32(n))
        let t0 = now()
        for _ in 0..<reps { cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k), b, Int32(k), 0, c, Int32(n)) }
        return 2.0 * Double(m * n * k) * Double(reps) / (now() - t0) / 1e9
    }
    return (measure(2048, 2048, 2048, reps: 5), measure(4096, 1024, 256, reps: 20))
}

struct AdamW {
    var m: [Float], v: [Float], t = 0
    init(_ n: Int) { m = [Float](repeating: 0, count: n); v = m }
    mutating func step(_ p: UnsafeMutableBufferPointer<Float>, _ g: UnsafeMutableBufferPointer<Float>, lr: Float = 3e-4) {
        t += 1
        var norm2: Double = 0
        for i in 0..<g.count { norm2 += Double(g[i]) * Double(g[i]) }
        let clip = Float(min(1, 1 / (norm2.squareRoot() + 1e-6)))
        let b1: Float = 0.9, b2: Float = 0.999
        let c1 = 1 - powf(b1, Float(t)), c2 = 1 - powf(b2, Float(t))
        m.withUnsafeMutableBufferPointer { m in v.withUnsafeMutableBufferPointer { v in
            for i in 0..<p.count {
                let gi = g[i] * clip
                m[i] = b1 * m[i] + (1 - b1) * gi
                v[i] = b2 * v[i] + (1 - b2) * gi * gi
                p[i] -= lr * (m[i] / c1) / ((v[i] / c2).squareRoot() + 1e-8)
            }
        } }
    }
}

let ceiling = ceilingRun ? sgemmCeiling() : (square: Double.nan, shaped: Double.nan)
if ceilingRun { print(String(format: "{\"impl\":\"swift\",\"what\":\"sgemm_ceiling\",\"gflops_2048cube\":%.1f,\"gflops_4096x1024x256\":%.1f,\"blas_threads\":%d,\"blas_core\":\"%@\"}",
             ceiling.square, ceiling.shaped, openblas_get_num_threads(), Runtime.blasCoreName)) }

let V = 8192, B = batchSize
for algo in algos {
    var cfg = ModelConfig.named(configName, vocabSize: V)!
    cfg.causal = algo == "ar"
    let L = cfg.length, D = cfg.hiddenSize
    let mask = Int32(V - 1)
    let T = algo == "bd3" ? 2 * L : L
    let layout: AttentionLayout = algo == "ar" ? .causal : (algo == "mdlm" ? .full : .blockDiffusion(blockSize: blockSize))
    let model = DiT(config: cfg, maxBatch: B, maxTokens: T, maxOutputTokens: L)
    model.initialize(seed: 1)
    model.precision = precision
    var opt = AdamW(model.parameterCount)
    var rng = SplitMix64(seed: 7)
    // 4 fixed batches (like the torch script).
    struct Batch { var tokens: [Int32]; var xt: [Int32]; var target: [Int32]; var w: [Float] }
    var batches: [Batch] = []
    for _ in 0..<4 {
        let x = (0..<(B * (L + 1))).map { _ in Int32(rng.next() % UInt64(V - 1)) }
        if algo == "ar" {
            var inp: [Int32] = [], tgt: [Int32] = []
            for b in 0..<B { inp += x[(b * (L + 1))..<(b * (L + 1) + L)]; tgt += x[(b * (L + 1) + 1)..<((b + 1) * (L + 1))] }
            batches.append(Batch(tokens: inp, xt: inp, target: tgt, w: [Float](repeating: 1 / Float(B * L), count: B * L)))
            continue
        }
        var x0: [Int32] = []
        for b in 0..<B { x0 += x[(b * (L + 1))..<(b * (L + 1) + L)] }
        var xt = x0, w = [Float](repeating: 0, count: B * L)
        let bs = algo == "bd3" ? blockSize : L
        for b in 0..<B { for blk in 0..<(L / bs) {
            let t = Float(0.001 + 0.999 * rng.nextDouble())
            for i in 0..<bs {
                let p = b * L + blk * bs + i
                if Float(rng.nextDouble()) <= t { xt[p] = mask }
                w[p] = 1 / (t * Float(B * L))
            }
        } }
        var tokens: [Int32] = []
        for b in 0..<B { tokens += xt[(b * L)..<((b + 1) * L)]; if algo == "bd3" { tokens += x0[(b * L)..<((b + 1) * L)] } }
        batches.append(Batch(tokens: tokens, xt: xt, target: x0, w: w))
    }
    var loss = [Float](repeating: 0, count: B * L), dl = [Float](repeating: 0, count: B * L * V)
    var lastLoss = 0.0
    var tForward = 0.0, tBackward = 0.0
    var t0 = now()
    for s in 0..<(warmup + steps) {
        if s == warmup { t0 = now(); tForward = 0; tBackward = 0; model.profiling = profile; model.phaseTimes = [:] }
        let bt = batches[s % 4]
        let ta = now()
        let logits = bt.tokens.withUnsafeBufferPointer { model.forward(tokens: $0, batch: B, layout: layout, sigma: nil, training: true, dropoutSeed: UInt64(s)) }
        lastLoss = dl.withUnsafeMutableBufferPointer { d in
            algo == "ar"
            ? LossHeads.autoregressive(logits: logits.baseAddress!, N: B * L, V: V, targets: bt.target, maskId: mask, weights: bt.w, loss: &loss, dLogits: d.baseAddress!)
            : LossHeads.subs(logits: logits.baseAddress!, N: B * L, V: V, xt: bt.xt, x0: bt.target, maskId: mask, weights: bt.w, loss: &loss, dLogits: d.baseAddress!)
        }
        let tb = now()
        model.zeroGradients()
        dl.withUnsafeBufferPointer { model.backward(dLogits: $0) }
        opt.step(model.parameters, model.gradients)
        tForward += tb - ta; tBackward += now() - tb
    }
    let elapsed = now() - t0
    if profile {
        for (k, v) in model.phaseTimes.sorted(by: { $0.value > $1.value }) {
            FileHandle.standardError.write(String(format: "  %-22@ %7.1f ms/step\n", k, v * 1000 / Double(steps)).data(using: .utf8)!)
        }
    }
    // Useful FLOPs per step.
    // BD3's last block needs only K, V of its x_0 rows (3D² of the 12D² per row) and only x_t queries.
    var pairs = 0, pairsXt = 0
    for q in 0..<T { for k in 0..<T where attentionMaskAllowed(layout, T: T, q: q, k: k) { pairs += 1; if q < L { pairsXt += 1 } } }
    let nRows = Double(B * T), nOut = Double(B * L), nl = Double(cfg.nBlocks)
    let skipped = algo == "bd3" ? Double(B * L) * 9 : 0
    let matmul = 2 * (nRows * 12 * nl - skipped) * Double(D * D) + 2 * nOut * Double(D * V)
    let lastPairs = algo == "bd3" ? pairsXt : pairs
    let attn = 4 * Double(B * D) * (Double(pairs) * (nl - 1) + Double(lastPairs))
    let flops = 3 * matmul + 3 * attn
    let perStep = elapsed / Double(steps)
    // Memory the design needs: parameters + gradients + two Adam moments + the activation buffer (fp32), plus
    // the dLogits buffer the loss head writes (B·L·V). Peak RSS also holds the process, BLAS and the batches.
    let theoryMB = Double(4 * (4 * model.parameterCount + model.activationCount + B * L * V)) / 1_048_576
    print(String(format: "{\"impl\":\"swift\",\"precision\":\"\(precision.rawValue)\",\"config\":\"\(configName)\",\"algo\":\"%@\",\"tokens_per_s\":%.1f,\"batch\":%d,\"seq_len\":%d,\"block_size\":%d,\"steps\":%d,\"sec_per_step\":%.4f,\"fwd_loss_s\":%.4f,\"bwd_adam_s\":%.4f,\"gflops\":%.1f,\"frac_of_sgemm_ceiling\":%@,\"params\":%d,\"final_loss\":%.4f,\"theory_mb\":%.1f,\"peak_rss_mb\":%.1f}",
                 algo, Double(B * L) / perStep, B, L, algo == "bd3" ? blockSize : (algo == "ar" ? 1 : L), steps, perStep,
                 tForward / Double(steps), tBackward / Double(steps), flops / perStep / 1e9, ceilingRun ? String(format: "%.2f", flops / perStep / 1e9 / ceiling.shaped) : "null",
                 model.parameterCount, lastLoss, theoryMB, peakRSSMB()))
}
