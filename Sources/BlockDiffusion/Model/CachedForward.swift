// Inference-only DiT forward with an exact KV cache (the reference's `sampling.kv_cache=True` path, spec §1.4).
//
//   per layer l the cache holds ROTATED k and the v of the positions already committed (B, H, capacity, d each:
//   a head's keys are contiguous, so attention streams them in order instead of one 4 KB page per few keys)
//   forward(chunk of n tokens per sequence), the block body shared with training (Model/Block.swift):
//     x = E[chunk] ; per block: qkv = (LN1(x)(1+sc1)+sh1) Wqkvᵀ ; q, k rotated at window positions cached+i ;
//     k, v → cache[cached ..< cached+n] ; a = softmax(q Kᵀ/√d) V over cache + chunk, no mask (AR: causal
//     inside the chunk) ; x = x + g1 (a Woutᵀ) ; x = x + g2 MLP(LN2(x)(1+sc2)+sh2)
//   logits = (LNf(x)(1+scf)+shf) Wlinᵀ + b   (B, n, V)
//   store = true commits the chunk's k, v (the reference's store_kv forward on a finished clean block);
//   store = false leaves `cached` unchanged, so the next call overwrites the chunk's slots.
//   forward(storing: clean, tokens:) = forward(clean, store: true) then forward(tokens, store: false) in one chunk of
//   2n rows (the weights streamed once; the samplers fold each finished block's store into the next block's first step).
//   Keys are rotated once, when they enter the cache. When cached + n would exceed `capacity` (the model length),
//   the oldest positions are dropped first (the reference slides by L' once idx reaches the model length) and
//   the kept keys are rotated back by the number dropped, so positions stay 0 ..< cached+n as in the reference
//   (RoPE scores depend only on position differences; kept k/v were computed with the dropped context, exactly as
//   the reference's shifted cache).
//   Weights are fp32 or bf16 (InferenceWeights); chunks of ≤ 8 rows per call use the bandwidth kernels.
//   It lives in Model, next to the weights it reads, because the samplers (Sampling) and the bf16 AR scorer of
//   score gen (Scoring) both run on it.
//
// Why exact: in the block-diffusion mask clean blocks never attend to noisy ones and a clean block sees the
// clean blocks ≤ itself, which is what a store_kv forward of that block on top of the cache computes; the
// noisy block sees every clean block plus itself (full), which is a forward with no mask over cache + chunk.
//
// Public API:
//   CachedDiT(model:maxBatch:maxChunk:capacity:)     fp32, model weights read in place (never written)
//   CachedDiT(weights:maxBatch:maxChunk:capacity:)   any InferenceWeights (fp32 or bf16)
//   forward(tokens:batch:store:causal:logits:rows:) -> UnsafeBufferPointer<Float>  (B, n, V), or (rows.count, V)
//       for the given flat rows b·n+i only; empty when logits=false
//   forward(storing:tokens:batch:rows:) -> the logits of `tokens`; canFold(n)
//   reset(), cached (positions in the window), dropped (positions slid out so far), forwards, weights, memoryBytes
import Foundation
import CKernels

public final class CachedDiT {
    public let weights: InferenceWeights
    public let config: ModelConfig
    public let maxBatch: Int
    public let maxChunk: Int
    public let capacity: Int
    public private(set) var cached = 0
    public private(set) var dropped = 0
    /// Forwards run so far (weight passes: a folded store + step counts once).
    public private(set) var forwards = 0

    let kCache: [UnsafeMutableBufferPointer<Float>]   // rotated keys (B, H, capacity, d) per layer
    let vCache: [UnsafeMutableBufferPointer<Float>]
    let rotary: RotaryTable
    // Scratch (max N = maxBatch * maxChunk rows): one set of block activations shared by every block.
    let x, xOut, h, xhat, rstd, qkv, att, attProj, resid2, xhat2, rstd2, h2, fc, gelu, fcProj, logitsBuf: UnsafeMutableBufferPointer<Float>
    let scores: UnsafeMutableBufferPointer<Float>     // per worker (min(maxChunk, 8) × capacity)
    let workers: Int

    /// Bytes of the buffers this engine allocated (cache + scratch; the weights are counted by InferenceWeights).
    public var memoryBytes: Int {
        4 * ((kCache.first?.count ?? 0) * 2 * kCache.count
             + [x, xOut, h, xhat, rstd, qkv, att, attProj, resid2, xhat2, rstd2, h2, fc, gelu, fcProj, logitsBuf, scores].reduce(0) { $0 + $1.count })
    }

    public convenience init(model: DiT, maxBatch: Int, maxChunk: Int, capacity: Int) throws {
        try self.init(weights: InferenceWeights(model: model, dtype: .fp32), maxBatch: maxBatch, maxChunk: maxChunk, capacity: capacity)
    }

    public init(weights: InferenceWeights, maxBatch: Int, maxChunk: Int, capacity: Int) throws {
        let cfg = weights.config
        precondition(maxBatch >= 1 && maxChunk >= 1 && capacity >= maxChunk, "bad cache sizes")
        self.weights = weights; config = cfg; self.maxBatch = maxBatch; self.maxChunk = maxChunk; self.capacity = capacity
        let D = cfg.hiddenSize
        func buf(_ n: Int) -> UnsafeMutableBufferPointer<Float> { alignedFloats(n) }   // cache-line aligned rows
        kCache = (0..<cfg.nBlocks).map { _ in buf(maxBatch * capacity * D) }
        vCache = (0..<cfg.nBlocks).map { _ in buf(maxBatch * capacity * D) }
        rotary = RotaryTable(headDim: cfg.headDim, maxPositions: capacity)
        let N = maxBatch * maxChunk
        x = buf(N * D); xOut = buf(N * D); h = buf(N * D); xhat = buf(N * D); rstd = buf(N); qkv = buf(N * 3 * D)
        att = buf(N * D); attProj = buf(N * D); resid2 = buf(N * D); xhat2 = buf(N * D); rstd2 = buf(N); h2 = buf(N * D)
        fc = buf(N * 4 * D); gelu = buf(N * 4 * D); fcProj = buf(N * D); logitsBuf = buf(N * cfg.vocabSize)
        workers = max(1, min(workerCount, maxBatch * cfg.nHeads))
        scores = buf(workers * min(maxChunk, 8) * capacity)
        startWorkerPool()
    }

    deinit {
        for b in kCache { freeAligned(b) }
        for b in vCache { freeAligned(b) }
        for b in [x, xOut, h, xhat, rstd, qkv, att, attProj, resid2, xhat2, rstd2, h2, fc, gelu, fcProj, logitsBuf, scores] { freeAligned(b) }
    }

    /// Empties the window (a new batch of sequences).
    public func reset() { cached = 0; dropped = 0 }

    var activations: BlockActivations {
        BlockActivations(xhat1: xhat.baseAddress!, rstd1: rstd.baseAddress!, h1: h.baseAddress!, qkv: qkv.baseAddress!, att: att.baseAddress!,
                         attProj: attProj.baseAddress!, resid2: resid2.baseAddress!, xhat2: xhat2.baseAddress!, rstd2: rstd2.baseAddress!,
                         h2: h2.baseAddress!, fc: fc.baseAddress!, gelu: gelu.baseAddress!, fcProj: fcProj.baseAddress!)
    }

    /// tokens (B, n) row-major. Returns logits (B, n, V) (a view valid until the next call), or an empty
    /// buffer when `logits` is false (a store-only forward skips the output layer).
    @discardableResult
    public func forward(tokens: [Int32], batch B: Int, store: Bool, causal: Bool = false, logits wantLogits: Bool = true,
                        rows: [Int]? = nil) -> UnsafeBufferPointer<Float> {
        precondition(B >= 1 && B <= maxBatch && tokens.count % B == 0)
        let n = tokens.count / B
        precondition(n >= 1 && n <= maxChunk, "chunk of \(n) tokens exceeds \(maxChunk)")
        if cached + n > capacity { slide(by: cached + n - capacity, batch: B) }
        let p0 = cached
        return run(tokens: tokens, batch: B, parts: [Part(first: 0, n: n, position: p0, keys: p0 + n, causal: causal)],
                   commit: store ? n : 0, logits: wantLogits, outputFirst: 0, rows: rows)
    }

    /// Whether `forward(storing:tokens:)` can take a clean block and a step of n tokens each now: 2n rows fit the
    /// chunk and the window without sliding (a slide between the two would drop context the store forward saw).
    public func canFold(_ n: Int) -> Bool { 2 * n <= maxChunk && cached + 2 * n <= capacity }

    /// The store forward of a finished clean block folded into the next block's first step: one chunk of 2n rows
    /// per sequence through the weights once. `clean` (B, n) sits at window positions cached ..< cached+n, attends
    /// to the cache and itself, and its k/v are committed — what forward(tokens: clean, store: true) computes;
    /// `tokens` (B, n) sits at the next n positions, attends to the cache, the clean block and itself, and is not
    /// committed — what the following forward(tokens:, store: false) computes (the block-diffusion mask: a clean
    /// block never sees the noisy one). Every row's numbers are those of the two forwards (the products, norms and
    /// attention kernels are row-independent), so the logits and the cache are bit-identical (EngineTests).
    /// Returns the logits of `tokens` (rows: flat indices b·n+i of `tokens`).
    public func forward(storing clean: [Int32], tokens: [Int32], batch B: Int, rows: [Int]? = nil) -> UnsafeBufferPointer<Float> {
        precondition(B >= 1 && B <= maxBatch && tokens.count % B == 0 && clean.count == tokens.count)
        let n = tokens.count / B
        precondition(n >= 1 && canFold(n), "a clean block and a step of \(n) tokens do not fit the chunk or the window")
        let p0 = cached
        // Rows: every sequence's clean block first, then every sequence's step (each part is (B, n) row-major).
        return run(tokens: clean + tokens, batch: B,
                   parts: [Part(first: 0, n: n, position: p0, keys: p0 + n, causal: false),
                           Part(first: B * n, n: n, position: p0 + n, keys: p0 + 2 * n, causal: false)],
                   commit: n, logits: true, outputFirst: B * n, rows: rows)
    }

    /// Rows [first, first + B·n) of a chunk: (B, n) tokens at window positions position ..< position+n, attending
    /// to the keys 0 ..< `keys` of their sequence (causal: query i sees keys ≤ keys−n+i).
    struct Part { let first, n, position, keys: Int; let causal: Bool }

    /// The forward of a chunk made of parts; `commit` positions become cached; logits for the rows from
    /// `outputFirst` (B·n of them, or the given `rows` relative to it).
    func run(tokens: [Int32], batch B: Int, parts: [Part], commit: Int, logits wantLogits: Bool, outputFirst: Int,
             rows: [Int]?) -> UnsafeBufferPointer<Float> {
        let D = config.hiddenSize, V = config.vocabSize, H = config.nHeads, d = config.headDim
        let N = tokens.count
        precondition(N <= maxBatch * maxChunk)
        for t in tokens { precondition(t >= 0 && Int(t) < V, "token \(t) outside the vocabulary") }
        forwards += 1
        var X = x.baseAddress!, Y = xOut.baseAddress!
        let a = activations, QKV = a.qkv
        tokens.withUnsafeBufferPointer { weights.embed(X, $0.baseAddress!, N) }
        let none = Dropout(p: 0, seed: 0, stream: 0)

        // The rows whose final hidden state is read: the output rows (all from outputFirst, or the requested ones),
        // none for a store-only forward. The other rows matter at the last block only through their k and v, so
        // there their attention, projection and MLP are skipped (`kept` compacts the rows that go on).
        let kept: [Int] = !wantLogits ? [] : rows.map { $0.map { outputFirst + $0 } } ?? Array(outputFirst..<N)
        if let rows { precondition(rows.allSatisfy { $0 >= 0 && $0 < N - outputFirst }, "output rows outside the chunk") }
        precondition(kept.count <= maxBatch * maxChunk, "more output rows than the chunk buffers hold")
        let pruned = !kept.elementsEqual(0..<N)

        for l in 0..<config.nBlocks {
            let w = weights.blocks[l], m = weights.mod(l)
            blockAttentionInput(x: X, w: w, mod: m, rowsPerCond: N, a: a, N, D)
            // Rotate q and k at their window positions; rotated k and v into the cache.
            let kc = kCache[l].baseAddress!, vc = vCache[l].baseAddress!
            for part in parts {
                let n = part.n, p0 = part.position
                parallelChunks(B * n, grain: 8) { rs in
                    for r in rs {
                        let b = r / n, i = r % n, row = QKV + (part.first + r) * 3 * D
                        rotateHeads(row, position: p0 + i, table: rotary, nHeads: H)
                        rotateHeads(row + D, position: p0 + i, table: rotary, nHeads: H)
                        storeKV(kc, vc, row: row, b: b, position: p0 + i)
                    }
                }
            }
            if l == config.nBlocks - 1 && pruned {
                // Last block, only the kept rows: attention row by row into att[k], their inputs gathered into h1
                // (free after the qkv product), then the block's second half on the compacted rows. Each row's
                // numbers are the full forward's (the kernels are row-independent: KVCacheTests, KernelTests).
                if kept.isEmpty { break }
                let queries = kept.map { r -> AttentionRow in
                    let part = parts.last { $0.first <= r }!, b = (r - part.first) / part.n, i = (r - part.first) % part.n
                    return AttentionRow(q: r, b: b, keys: part.causal ? part.keys - part.n + i + 1 : part.keys)
                }
                cachedAttention(rows: queries, out: a.att, qkv: QKV, keys: kc, values: vc, capacity: capacity, nHeads: H, headDim: d,
                                scratch: scores.baseAddress!, workers: workers)
                for (k, r) in kept.enumerated() { (a.h1 + k * D).update(from: X + r * D, count: D) }
                blockAttentionOutput(out: Y, x: a.h1, w: w, mod: m, rowsPerCond: max(N, kept.count), a: a, dropAttn: none, dropMLP: none,
                                     keepGeluDerivative: false, kept.count, D)
                swap(&X, &Y)
                break
            }
            for part in parts {
                cachedAttention(out: a.att + part.first * D, q: QKV + part.first * 3 * D, qStride: 3 * D, keys: kc, values: vc,
                                capacity: capacity, B: B, n: part.n, S: part.keys, nHeads: H, headDim: d,
                                causal: part.causal, scratch: scores.baseAddress!, workers: workers)
            }
            blockAttentionOutput(out: Y, x: X, w: w, mod: m, rowsPerCond: N, a: a, dropAttn: none, dropMLP: none,
                                 keepGeluDerivative: false, N, D)
            swap(&X, &Y)
        }
        cached += commit
        guard wantLogits, !kept.isEmpty else { return UnsafeBufferPointer(start: logitsBuf.baseAddress!, count: 0) }
        // Output layer for the kept rows only (the sampler needs few of them; the output product over V is a large
        // share of a forward): X's first rows, in order (compacted by the last block unless they are all rows).
        let src = UnsafePointer(X), nOut = kept.count
        let mf: UnsafePointer<Float>? = weights.modF.map { UnsafePointer($0.baseAddress!) }
        normModulateForward(h: a.h1, xhat: a.xhat1, rstd: a.rstd1, x: src, weight: weights.normF,
                            shift: mf, scale: mf.map { $0 + D }, modStride: 2 * D, rowsPerCond: nOut, nOut, D)
        linearForward(logitsBuf.baseAddress!, a.h1, weights.lin, weights.linBias, nOut, D, V)
        return UnsafeBufferPointer(start: logitsBuf.baseAddress!, count: nOut * V)
    }

    /// Drops the oldest `k` cached positions of every layer and sequence; the kept keys are rotated back by k
    /// positions (to window positions 0 ..< cached−k, where the reference's shifted cache puts them).
    func slide(by k: Int, batch B: Int) {
        precondition(k <= cached, "chunk larger than the cache capacity")
        let H = config.nHeads, half = config.headDim / 2
        let inv = RotaryTable.invFreq(headDim: config.headDim)
        let cs = inv.map { Float(Foundation.cos(-Double(k) * Double($0))) }, sn = inv.map { Float(Foundation.sin(-Double(k) * Double($0))) }
        let keep = cached - k, d = 2 * half
        for l in 0..<config.nBlocks {
            for c in [kCache[l].baseAddress!, vCache[l].baseAddress!] {
                for bh in 0..<(B * H) {
                    let base = c + bh * capacity * d
                    memmove(base, base + k * d, keep * d * MemoryLayout<Float>.stride)
                }
            }
            let kc = kCache[l].baseAddress!
            parallelChunks(B * H * keep, grain: 64 * H) { rs in
                for r in rs {
                    let v = kc + ((r / keep) * capacity + r % keep) * d
                    for i in 0..<half {
                        let x1 = v[i], x2 = v[i + half]
                        v[i] = x1 * cs[i] - x2 * sn[i]; v[i + half] = x2 * cs[i] + x1 * sn[i]
                    }
                }
            }
        }
        cached -= k; dropped += k
    }
}

extension CachedDiT {
    /// Offset of (sequence b, head h, window position p) in a layer's k or v cache (B, H, capacity, d).
    @inline(__always)
    func slot(_ b: Int, _ h: Int, _ p: Int) -> Int { ((b * config.nHeads + h) * capacity + p) * config.headDim }

    /// The (rotated) k and the v of one qkv row (q, k, v; each D = H·d, head-major) into position p of sequence b.
    @inline(__always)
    func storeKV(_ kc: FloatPtr, _ vc: FloatPtr, row: UnsafePointer<Float>, b: Int, position p: Int) {
        let D = config.hiddenSize, d = config.headDim
        for hh in 0..<config.nHeads {
            (kc + slot(b, hh, p)).update(from: row + D + hh * d, count: d)
            (vc + slot(b, hh, p)).update(from: row + 2 * D + hh * d, count: d)
        }
    }

    /// Layer l's cached key (values: false) or value of sequence b at window position p, as a D-vector (tests).
    func cacheRow(_ l: Int, values: Bool = false, b: Int = 0, position p: Int) -> [Float] {
        let c = (values ? vCache : kCache)[l].baseAddress!, d = config.headDim
        return (0..<config.nHeads).flatMap { hh in Array(UnsafeBufferPointer(start: c + slot(b, hh, p), count: d)) }
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
/// q rows are `qStride` apart (packed qkv); keys/values are (B, H, capacity, d): a head's rows d apart.
/// causal: query i (window position S-n+i) sees keys ≤ S-n+i. CKernels bd3_attend per (sequence, head): for a
/// chunk of a few rows sgemm's packing of every key costs more than the products. scratch: min(n, 8)·S floats per worker.
func cachedAttention(out: FloatPtr, q: UnsafePointer<Float>, qStride: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                     capacity: Int, B: Int, n: Int, S: Int, nHeads H: Int, headDim d: Int, causal: Bool,
                     scratch: FloatPtr, workers: Int) {
    let D = H * d
    let scale = 1 / Float(d).squareRoot()
    parallelFor(workers) { wk in
        let sc = scratch + wk * min(n, 8) * S
        for pair in stride(from: wk, to: B * H, by: workers) {
            let b = pair / H, hh = pair % H
            let kv = (b * H + hh) * capacity * d
            bd3_attend(out + b * n * D + hh * d, Int32(D), q + b * n * qStride + hh * d, Int32(qStride),
                       keys + kv, values + kv, Int32(d),
                       Int32(n), Int32(S), Int32(d), scale, causal ? 1 : 0, sc)
        }
    }
}

/// One query row of a chunk for `cachedAttention(rows:)`: its flat row q, its sequence b, the keys 0 ..< keys it sees.
struct AttentionRow { let q, b, keys: Int }

/// Attention for chosen rows only: out row k (D wide) = the attention of queries[k] (its q in the packed qkv row
/// queries[k].q) over its sequence's cache, every head; (row, head) pairs spread over the workers. A row's numbers are
/// those of the same row in a chunk call (bd3_attend rows are independent, bit for bit: KVCacheTests).
func cachedAttention(rows queries: [AttentionRow], out: FloatPtr, qkv: UnsafePointer<Float>, keys: UnsafePointer<Float>,
                     values: UnsafePointer<Float>, capacity: Int, nHeads H: Int, headDim d: Int, scratch: FloatPtr, workers: Int) {
    let D = H * d, scale = 1 / Float(d).squareRoot(), S = queries.map(\.keys).max() ?? 0
    let jobs = min(workers, queries.count * H)
    queries.withUnsafeBufferPointer { qb in
        let qs = qb.baseAddress!
        parallelFor(jobs) { wk in
            let sc = scratch + wk * S              // one row: S floats (the engine keeps ≥ capacity per worker)
            for pair in stride(from: wk, to: qb.count * H, by: jobs) {
                let k = pair / H, hh = pair % H, row = qs[k]
                let kv = (row.b * H + hh) * capacity * d
                bd3_attend(out + k * D + hh * d, Int32(D), qkv + row.q * 3 * D + hh * d, Int32(3 * D), keys + kv, values + kv,
                           Int32(d), 1, Int32(row.keys), Int32(d), scale, 0, sc)
            }
        }
    }
}

/// Naive twin of `cachedAttention` (Double loops, same layout) for the tests.
func naiveCachedAttention(q: [Float], qStride: Int, keys: [Float], values: [Float], capacity: Int,
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
                    for c in 0..<d { acc += Double(q[b * n * qStride + i * qStride + hh * d + c]) * Double(keys[((b * H + hh) * capacity + j) * d + c]) }
                    s[j] = acc / Double(d).squareRoot()
                }
                let mx = s.max()!
                let e = s.map { exp($0 - mx) }
                let z = e.reduce(0, +)
                for c in 0..<d {
                    var acc = 0.0
                    for j in 0...last { acc += e[j] / z * Double(values[((b * H + hh) * capacity + j) * d + c]) }
                    out[(b * n + i) * D + hh * d + c] = Float(acc)
                }
            }
        }
    }
    return out
}
