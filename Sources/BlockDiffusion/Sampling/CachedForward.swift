// Inference-only DiT forward with an exact KV cache (the reference's `sampling.kv_cache=True` path, spec §1.4).
//
//   per layer l the cache holds PRE-rotary k and v of the positions already committed (B, capacity, D each)
//   forward(chunk of n tokens per sequence):
//     x = E[chunk] ; per block: h = LN1(x)(1+sc1)+sh1 ; qkv = h Wqkvᵀ ; k,v → cache[cached ..< cached+n]
//     q, K = rope(q at cached+i), rope(K at 0 ..< cached+n)    (positions re-based to the window every call)
//     a = softmax(q Kᵀ/√d) V   over cache + chunk, no mask (or causal inside the chunk for AR)
//     x = x + g1 (a Woutᵀ) ; x = x + g2 MLP(LN2(x)(1+sc2)+sh2)
//   logits = (LNf(x)(1+scf)+shf) Wlinᵀ + b   (B, n, V)
//   store = true commits the chunk's k, v (the reference's store_kv forward on a finished clean block);
//   store = false leaves `cached` unchanged, so the next call overwrites the chunk's slots.
//   When cached + n would exceed `capacity` (the model length), the oldest positions are dropped first
//   (the reference slides by L' once idx reaches the model length). Kept k/v were computed with the dropped
//   context, exactly as the reference's shifted cache; positions are re-based to 0 ..< cached+n.
//
// Why exact: in the block-diffusion mask clean blocks never attend to noisy ones and a clean block sees the
// clean blocks ≤ itself, which is what a store_kv forward of that block on top of the cache computes; the
// noisy block sees every clean block plus itself (full), which is a forward with no mask over cache + chunk.
//
// Public API:
//   CachedDiT(model:maxBatch:maxChunk:capacity:)   model weights are read in place (never written)
//   forward(tokens:batch:store:causal:logits:rows:) -> UnsafeBufferPointer<Float>  (B, n, V), or (rows.count, V)
//       for the given flat rows b·n+i only; empty when logits=false
//   reset(), cached (positions in the window), dropped (positions slid out so far)
import Foundation
import COpenBLAS

public final class CachedDiT {
    public let model: DiT
    public let config: ModelConfig
    public let maxBatch: Int
    public let maxChunk: Int
    public let capacity: Int
    public private(set) var cached = 0
    public private(set) var dropped = 0

    struct LayerWeights {
        var norm1, qkv, attnOut, norm2, fc, fcBias, proj, projBias: UnsafePointer<Float>
    }
    let embed: UnsafePointer<Float>
    let layers: [LayerWeights]
    let normF, lin, linBias: UnsafePointer<Float>
    /// adaLN outputs: sigma ≡ 0, so they are constants computed once. nil for AR (no adaLN).
    let mods: UnsafeMutableBufferPointer<Float>?    // (nBlocks, 6D)
    let modF: UnsafeMutableBufferPointer<Float>?    // (2D)

    let kCache: [UnsafeMutableBufferPointer<Float>]
    let vCache: [UnsafeMutableBufferPointer<Float>]
    let rotary: RotaryTable
    // Scratch (max N = maxBatch * maxChunk rows).
    let x, x2, h, xhat, rstd, qkv, att, branch, fc, gelu, logitsBuf: UnsafeMutableBufferPointer<Float>
    let keys: UnsafeMutableBufferPointer<Float>       // rotated keys (B, capacity, D)
    let scores: UnsafeMutableBufferPointer<Float>     // per worker (maxChunk, capacity)
    let workers: Int

    public init(model: DiT, maxBatch: Int, maxChunk: Int, capacity: Int) throws {
        let cfg = model.config
        guard !cfg.timeConditioning else {
            throw ToolError("this checkpoint is time-conditioned (SEDD); the samplers here support BD3-LM, MDLM and AR checkpoints")
        }
        precondition(maxBatch >= 1 && maxChunk >= 1 && capacity >= maxChunk, "bad cache sizes")
        self.model = model; config = cfg; self.maxBatch = maxBatch; self.maxChunk = maxChunk; self.capacity = capacity
        func w(_ name: String) -> UnsafePointer<Float> {
            guard let t = model.tensor(named: "backbone." + name) else { preconditionFailure("model has no tensor \(name)") }
            return UnsafePointer(t.baseAddress!)
        }
        embed = w("vocab_embed.embedding")
        layers = (0..<cfg.nBlocks).map { i in
            LayerWeights(norm1: w("blocks.\(i).norm1.weight"), qkv: w("blocks.\(i).attn_qkv.weight"),
                         attnOut: w("blocks.\(i).attn_out.weight"), norm2: w("blocks.\(i).norm2.weight"),
                         fc: w("blocks.\(i).mlp.0.weight"), fcBias: w("blocks.\(i).mlp.0.bias"),
                         proj: w("blocks.\(i).mlp.2.weight"), projBias: w("blocks.\(i).mlp.2.bias"))
        }
        normF = w("output_layer.norm_final.weight"); lin = w("output_layer.linear.weight"); linBias = w("output_layer.linear.bias")
        let D = cfg.hiddenSize, C = cfg.condDim
        if cfg.hasAdaLN {
            // c = silu(W2 silu(W1 temb(0) + b1) + b2); mod_l = Ada_l c + b_l.
            var freq = [Float](repeating: 0, count: timestepFrequencySize)
            var t1 = [Float](repeating: 0, count: C), t3 = t1, c = t1
            freq.withUnsafeMutableBufferPointer { timestepEmbedding($0.baseAddress!, 0) }
            matmulForward(&t1, freq, w("sigma_map.mlp.0.weight"), w("sigma_map.mlp.0.bias"), 1, timestepFrequencySize, C)
            for i in 0..<C { t1[i] = t1[i] / (1 + expf(-t1[i])) }
            matmulForward(&t3, t1, w("sigma_map.mlp.2.weight"), w("sigma_map.mlp.2.bias"), 1, C, C)
            for i in 0..<C { c[i] = t3[i] / (1 + expf(-t3[i])) }
            let ms = UnsafeMutableBufferPointer<Float>.allocate(capacity: cfg.nBlocks * 6 * D)
            for i in 0..<cfg.nBlocks {
                matmulForward(ms.baseAddress! + i * 6 * D, c, w("blocks.\(i).adaLN_modulation.weight"), w("blocks.\(i).adaLN_modulation.bias"), 1, C, 6 * D)
            }
            mods = ms
            let mf = UnsafeMutableBufferPointer<Float>.allocate(capacity: 2 * D)
            matmulForward(mf.baseAddress!, c, w("output_layer.adaLN_modulation.weight"), w("output_layer.adaLN_modulation.bias"), 1, C, 2 * D)
            modF = mf
        } else { mods = nil; modF = nil }

        func buf(_ n: Int) -> UnsafeMutableBufferPointer<Float> {
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(n, 1)); b.initialize(repeating: 0); return b
        }
        kCache = (0..<cfg.nBlocks).map { _ in buf(maxBatch * capacity * D) }
        vCache = (0..<cfg.nBlocks).map { _ in buf(maxBatch * capacity * D) }
        rotary = RotaryTable(headDim: cfg.headDim, maxPositions: capacity)
        let N = maxBatch * maxChunk
        x = buf(N * D); x2 = buf(N * D); h = buf(N * D); xhat = buf(N * D); rstd = buf(N); qkv = buf(N * 3 * D)
        att = buf(N * D); branch = buf(N * D); fc = buf(N * 4 * D); gelu = buf(N * 4 * D); logitsBuf = buf(N * cfg.vocabSize)
        keys = buf(maxBatch * capacity * D)
        workers = max(1, min(workerCount, maxBatch * cfg.nHeads))
        scores = buf(workers * maxChunk * capacity)
    }

    deinit {
        for b in kCache { b.deallocate() }
        for b in vCache { b.deallocate() }
        for b in [x, x2, h, xhat, rstd, qkv, att, branch, fc, gelu, logitsBuf, keys, scores] { b.deallocate() }
        mods?.deallocate(); modF?.deallocate()
    }

    /// Empties the window (a new batch of sequences).
    public func reset() { cached = 0; dropped = 0 }

    /// tokens (B, n) row-major. Returns logits (B, n, V) (a view valid until the next call), or an empty
    /// buffer when `logits` is false (a store-only forward skips the output layer).
    @discardableResult
    public func forward(tokens: [Int32], batch B: Int, store: Bool, causal: Bool = false, logits wantLogits: Bool = true,
                        rows: [Int]? = nil) -> UnsafeBufferPointer<Float> {
        precondition(B >= 1 && B <= maxBatch && tokens.count % B == 0)
        let n = tokens.count / B
        precondition(n >= 1 && n <= maxChunk, "chunk of \(n) tokens exceeds \(maxChunk)")
        let D = config.hiddenSize, V = config.vocabSize, H = config.nHeads, d = config.headDim
        let N = B * n
        for t in tokens { precondition(t >= 0 && Int(t) < V, "token \(t) outside the vocabulary") }
        if cached + n > capacity { slide(by: cached + n - capacity, batch: B) }
        let p0 = cached, S = cached + n
        let X = x.baseAddress!, X2 = x2.baseAddress!, Hb = h.baseAddress!, QKV = qkv.baseAddress!
        tokens.withUnsafeBufferPointer { embeddingForward(X, $0.baseAddress!, embed, N, D) }

        for l in 0..<config.nBlocks {
            let w = layers[l]
            let m: UnsafePointer<Float>? = mods.map { UnsafePointer($0.baseAddress! + l * 6 * D) }
            normModulateForward(h: Hb, xhat: xhat.baseAddress!, rstd: rstd.baseAddress!, x: X, weight: w.norm1,
                                shift: m, scale: m.map { $0 + D }, modStride: 6 * D, rowsPerCond: N, N, D)
            matmulForward(QKV, Hb, w.qkv, nil, N, D, 3 * D)
            // Pre-rotary k, v into the cache.
            let kc = kCache[l].baseAddress!, vc = vCache[l].baseAddress!
            for b in 0..<B {
                for i in 0..<n {
                    let row = QKV + (b * n + i) * 3 * D
                    (kc + (b * capacity + p0 + i) * D).update(from: row + D, count: D)
                    (vc + (b * capacity + p0 + i) * D).update(from: row + 2 * D, count: D)
                }
            }
            // Rotated keys for the whole window, rotated queries for the chunk.
            let K = keys.baseAddress!
            for b in 0..<B { (K + b * capacity * D).update(from: kc + b * capacity * D, count: S * D) }
            parallelChunks(B * S, grain: 64) { r in
                for row in r { let b = row / S, j = row % S; rotateHeads(K + (b * capacity + j) * D, position: j, table: rotary, nHeads: H) }
            }
            for r in 0..<N { rotateHeads(QKV + r * 3 * D, position: p0 + r % n, table: rotary, nHeads: H) }
            cachedAttention(out: att.baseAddress!, q: QKV, qStride: 3 * D, keys: K, values: vc, kvBatchStride: capacity * D,
                            B: B, n: n, S: S, nHeads: H, headDim: d, causal: causal, scratch: scores.baseAddress!, workers: workers)
            matmulForward(branch.baseAddress!, att.baseAddress!, w.attnOut, nil, N, D, D)
            gateResidualForward(out: X2, resid: X, branch: branch.baseAddress!, gate: m.map { $0 + 2 * D }, modStride: 6 * D, rowsPerCond: N, N, D)
            normModulateForward(h: Hb, xhat: xhat.baseAddress!, rstd: rstd.baseAddress!, x: X2, weight: w.norm2,
                                shift: m.map { $0 + 3 * D }, scale: m.map { $0 + 4 * D }, modStride: 6 * D, rowsPerCond: N, N, D)
            matmulForward(fc.baseAddress!, Hb, w.fc, w.fcBias, N, D, 4 * D)
            geluForward(gelu.baseAddress!, fc.baseAddress!, N * 4 * D)
            matmulForward(branch.baseAddress!, gelu.baseAddress!, w.proj, w.projBias, N, 4 * D, D)
            gateResidualForward(out: X, resid: X2, branch: branch.baseAddress!, gate: m.map { $0 + 5 * D }, modStride: 6 * D, rowsPerCond: N, N, D)
        }
        if store { cached += n }
        guard wantLogits else { return UnsafeBufferPointer(start: logitsBuf.baseAddress!, count: 0) }
        // Output layer, optionally only for the requested rows (the sampler needs few of them; the output
        // matmul over V is a large share of a forward).
        var src = UnsafePointer(X), nOut = N
        if let rows {
            precondition(rows.allSatisfy { $0 >= 0 && $0 < N }, "output rows outside the chunk")
            for (k, r) in rows.enumerated() { (X2 + k * D).update(from: X + r * D, count: D) }
            src = UnsafePointer(X2); nOut = rows.count
            if nOut == 0 { return UnsafeBufferPointer(start: logitsBuf.baseAddress!, count: 0) }
        }
        let mf: UnsafePointer<Float>? = modF.map { UnsafePointer($0.baseAddress!) }
        normModulateForward(h: Hb, xhat: xhat.baseAddress!, rstd: rstd.baseAddress!, x: src, weight: normF,
                            shift: mf, scale: mf.map { $0 + D }, modStride: 2 * D, rowsPerCond: nOut, nOut, D)
        matmulForward(logitsBuf.baseAddress!, Hb, lin, linBias, nOut, D, V)
        return UnsafeBufferPointer(start: logitsBuf.baseAddress!, count: nOut * V)
    }

    /// Drops the oldest `k` cached positions of every layer and sequence.
    func slide(by k: Int, batch B: Int) {
        precondition(k <= cached, "chunk larger than the cache capacity")
        let D = config.hiddenSize
        for l in 0..<config.nBlocks {
            for c in [kCache[l].baseAddress!, vCache[l].baseAddress!] {
                for b in 0..<B {
                    let base = c + b * capacity * D
                    memmove(base, base + k * D, (cached - k) * D * MemoryLayout<Float>.stride)
                }
            }
        }
        cached -= k; dropped += k
    }
}

/// Rotate-half RoPE of one head-major D-vector (q or k; nHeads heads of size d) at `position`.
func rotateHeads(_ v: FloatPtr, position p: Int, table: RotaryTable, nHeads: Int) {
    let d = table.headDim, half = d / 2
    table.cos.withUnsafeBufferPointer { cb in
        table.sin.withUnsafeBufferPointer { sb in
            let cs = cb.baseAddress! + p * half, sn = sb.baseAddress! + p * half
            for hh in 0..<nHeads {
                let x = v + hh * d
                for i in 0..<half {
                    let x1 = x[i], x2 = x[i + half]
                    x[i] = x1 * cs[i] - x2 * sn[i]
                    x[i + half] = x2 * cs[i] + x1 * sn[i]
                }
            }
        }
    }
}

/// out (B, n, D) = softmax(q kᵀ / √d) v per head, queries = the chunk, keys/values = window 0 ..< S.
/// q rows are `qStride` apart (packed qkv); keys/values rows are D apart, sequences `kvBatchStride` apart.
/// causal: query i (window position S-n+i) sees keys ≤ S-n+i. sgemm for both products.
func cachedAttention(out: FloatPtr, q: UnsafePointer<Float>, qStride: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                     kvBatchStride: Int, B: Int, n: Int, S: Int, nHeads H: Int, headDim d: Int, causal: Bool,
                     scratch: FloatPtr, workers: Int) {
    let D = H * d
    let scale = 1 / Float(d).squareRoot()
    parallelFor(workers) { wk in
        let sc = scratch + wk * n * S
        for pair in stride(from: wk, to: B * H, by: workers) {
            let b = pair / H, hh = pair % H
            let qb = q + b * n * qStride + hh * d
            let kb = keys + b * kvBatchStride + hh * d, vb = values + b * kvBatchStride + hh * d
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(S), Int32(d),
                        scale, qb, Int32(qStride), kb, Int32(D), 0, sc, Int32(S))
            for i in 0..<n {
                let row = sc + i * S
                let last = causal ? S - n + i : S - 1
                var mx = -Float.infinity
                for j in 0...last { mx = max(mx, row[j]) }
                var sum: Float = 0
                for j in 0...last { let e = expf(row[j] - mx); row[j] = e; sum += e }
                let inv = 1 / sum
                for j in 0...last { row[j] *= inv }
                if last + 1 < S { for j in (last + 1)..<S { row[j] = 0 } }
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(d), Int32(S),
                        1, sc, Int32(S), vb, Int32(D), 0, out + b * n * D + hh * d, Int32(D))
        }
    }
}

/// Naive twin of `cachedAttention` (Double loops, same layout) for the tests.
func naiveCachedAttention(q: [Float], qStride: Int, keys: [Float], values: [Float], kvBatchStride: Int,
                          B: Int, n: Int, S: Int, nHeads H: Int, headDim d: Int, causal: Bool) -> [Float] {
    let D = H * d
    var out = [Float](repeating: 0, count: B * n * D)
    for b in 0..<B {
        for hh in 0..<H {
            for i in 0..<n {
                let last = causal ? S - n + i : S - 1
                var s = [Double](repeating: 0, count: last + 1)
                for j in 0...last {
                    var acc = 0.0
                    for c in 0..<d { acc += Double(q[b * n * qStride + i * qStride + hh * d + c]) * Double(keys[b * kvBatchStride + j * D + hh * d + c]) }
                    s[j] = acc / Double(d).squareRoot()
                }
                let mx = s.max()!
                let e = s.map { exp($0 - mx) }
                let z = e.reduce(0, +)
                for c in 0..<d {
                    var acc = 0.0
                    for j in 0...last { acc += e[j] / z * Double(values[b * kvBatchStride + j * D + hh * d + c]) }
                    out[(b * n + i) * D + hh * d + c] = Float(acc)
                }
            }
        }
    }
    return out
}
