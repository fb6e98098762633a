// Inference with a KV cache of clean blocks (reference `DDiTBlock.get_qkv` with `kv_cache`/`cache_idx`,
// HF variant with capacity = model length), for BD3-LM sampling.
//
// Each layer caches the PRE-rotary k and v of the clean tokens seen so far. A call feeds one block (B, L'):
// its k, v are written at [count, count+L'), every key is rotated at its index 0..count+L'−1 (positions are
// re-based on every call, as the reference does), the block's queries at count..count+L'−1 attend to all
// count+L' keys without a mask, and the logits of the block are returned. `store: true` (a forward on a
// finished clean block) then advances count by L'; when count reaches the capacity the cache slides left
// by L' (count = capacity − L'), exactly like the reference.
//
// Public API:
//   DiT.makeKVCache(batch:capacity:) -> KVCache ; KVCache.count, .capacity, .reset()
//   DiT.forwardCached(tokens:batch:cache:store:sigma:) -> logits (B, L', V)   (no backward afterwards)
import Foundation

public final class KVCache {
    public let batch: Int
    public let capacity: Int
    public internal(set) var count = 0
    let nLayers: Int
    let dim: Int
    let kv: UnsafeMutableBufferPointer<Float>       // (layers, batch, capacity, 2D): [k | v], pre-rotary
    let packed: UnsafeMutableBufferPointer<Float>   // (batch, capacity, 3D) scratch: rotated q,k,v rows
    let attOut: UnsafeMutableBufferPointer<Float>   // (batch, capacity, D) scratch
    let lse: UnsafeMutableBufferPointer<Float>      // (batch, heads, capacity) scratch
    let positions: UnsafeMutableBufferPointer<Int32>

    init(config: ModelConfig, batch: Int, capacity: Int) {
        self.batch = batch; self.capacity = capacity; nLayers = config.nBlocks; dim = config.hiddenSize
        kv = .allocate(capacity: nLayers * batch * capacity * 2 * dim); kv.initialize(repeating: 0)
        packed = .allocate(capacity: batch * capacity * 3 * dim); packed.initialize(repeating: 0)
        attOut = .allocate(capacity: batch * capacity * dim); attOut.initialize(repeating: 0)
        lse = .allocate(capacity: batch * config.nHeads * capacity); lse.initialize(repeating: 0)
        positions = .allocate(capacity: capacity)
        for i in 0..<capacity { positions[i] = Int32(i) }
    }
    deinit { kv.deallocate(); packed.deallocate(); attOut.deallocate(); lse.deallocate(); positions.deallocate() }

    /// Forget every cached token (reference `reset_kv_cache`).
    public func reset() { count = 0 }

    @inline(__always) func layer(_ l: Int, _ b: Int) -> UnsafeMutablePointer<Float> {
        kv.baseAddress! + ((l * batch + b) * capacity) * 2 * dim
    }

    /// Slide left by `n` tokens in every layer and sequence.
    func slide(by n: Int) {
        for l in 0..<nLayers {
            for b in 0..<batch {
                let base = layer(l, b)
                memmove(base, base + n * 2 * dim, (capacity - n) * 2 * dim * MemoryLayout<Float>.stride)   // overlapping
            }
        }
    }
}

extension AttentionPlan {
    /// Queries q0..<T, each attending to all T keys (the cached-inference case).
    static func suffixQueries(T: Int, from q0: Int, tileRows: Int = 64) -> AttentionPlan {
        var plan = AttentionPlan(layout: .full, T: T, tileRows: T)   // one tile; replaced below
        plan.tiles = []
        var q = q0
        while q < T {
            let q1 = min(T, q + tileRows)
            plan.tiles.append(Tile(q0: q, q1: q1, spans: [(0, T)], width: T, needsMask: false))
            q = q1
        }
        plan.maxWidth = T
        plan.maxRows = min(tileRows, max(T - q0, 1))
        return plan
    }
}

extension DiT {
    public func makeKVCache(batch: Int, capacity: Int? = nil) -> KVCache {
        KVCache(config: config, batch: batch, capacity: capacity ?? config.length)
    }

    /// One block (B, L') against the cache; returns its logits (B, L', V). See the file header.
    @discardableResult
    public func forwardCached(tokens: UnsafeBufferPointer<Int32>, batch B: Int, cache: KVCache, store: Bool,
                              sigma: UnsafeBufferPointer<Float>?) -> UnsafeMutableBufferPointer<Float> {
        precondition(B == cache.batch && B <= maxBatch, "cache was made for batch \(cache.batch); the model holds at most \(maxBatch)")
        precondition(!config.causal, "the block KV cache is for diffusion models")
        let Lb = tokens.count / B
        let start = cache.count, n = start + Lb
        precondition(Lb >= 1 && tokens.count == B * Lb && n <= cache.capacity && B * Lb <= maxBatch * maxTokens && Lb <= maxOutputTokens,
                     "block of \(Lb) tokens does not fit (cache holds \(start) of \(cache.capacity))")
        let D = config.hiddenSize, V = config.vocabSize, H = config.nHeads, d = config.headDim
        let N = B * Lb
        for i in 0..<N {
            precondition(tokens[i] >= 0 && Int(tokens[i]) < V, "token \(tokens[i]) outside the vocabulary 0..<\(V)")
            tokenCopy[i] = tokens[i]
        }
        let nCond = config.timeConditioning ? B : 1
        last = nil   // no backward through a cached forward
        let rowsPerCond = config.timeConditioning ? Lb : N
        let table = n <= rotary.maxPositions ? rotary : RotaryTable(headDim: d, maxPositions: n)
        let plan = AttentionPlan.suffixQueries(T: n, from: start)

        embeddingForward(A(aResid[0]), tokenCopy.baseAddress!, P(pEmbed), N, D)
        computeConditioning(batch: B, nCond: nCond, sigma: sigma)
        for l in 0..<config.nBlocks {
            let s = aBlocks[l], w = pBlocks[l]
            let mod: FloatPtr? = config.hasAdaLN ? A(s.mod) : nil
            let x = A(aResid[l])
            normModulateForward(h: A(s.h1), xhat: A(s.xhat1), rstd: A(s.rstd1), x: x, weight: P(w.norm1),
                                shift: mod, scale: mod.map { $0 + D }, modStride: 6 * D, rowsPerCond: rowsPerCond, N, D)
            matmulForward(A(s.qkv), A(s.h1), P(w.qkv), nil, N, D, 3 * D)
            // Cache the block's pre-rotary k, v; pack every key (cached + block) and the block's queries.
            let packed = cache.packed.baseAddress!
            for b in 0..<B {
                let kvBase = cache.layer(l, b)
                for i in 0..<Lb {
                    let src = A(s.qkv) + (b * Lb + i) * 3 * D
                    (kvBase + (start + i) * 2 * D).update(from: src + D, count: 2 * D)
                }
                for j in 0..<n {
                    let row = packed + (b * n + j) * 3 * D
                    if j < start {
                        row.update(repeating: 0, count: D)
                        (row + D).update(from: kvBase + j * 2 * D, count: 2 * D)
                    } else {
                        row.update(from: A(s.qkv) + (b * Lb + j - start) * 3 * D, count: 3 * D)
                    }
                }
            }
            rotaryApply(packed, positions: cache.positions.baseAddress!, T: n, table: table, nHeads: H, B * n, inverse: false)
            attentionForward(out: cache.attOut.baseAddress!, lse: cache.lse.baseAddress!, qkv: packed, plan: plan, B: B, nHeads: H, headDim: d)
            for b in 0..<B {
                (A(s.att) + b * Lb * D).update(from: cache.attOut.baseAddress! + (b * n + start) * D, count: Lb * D)
            }
            matmulForward(A(s.attProj), A(s.att), P(w.attnOut), nil, N, D, D)
            gateResidualForward(out: A(aResid2), resid: x, branch: A(s.attProj), gate: mod.map { $0 + 2 * D },
                                modStride: 6 * D, rowsPerCond: rowsPerCond, N, D)
            normModulateForward(h: A(s.h2), xhat: A(s.xhat2), rstd: A(s.rstd2), x: A(aResid2), weight: P(w.norm2),
                                shift: mod.map { $0 + 3 * D }, scale: mod.map { $0 + 4 * D }, modStride: 6 * D, rowsPerCond: rowsPerCond, N, D)
            matmulForward(A(s.fc), A(s.h2), P(w.fc), P(w.fcBias), N, D, 4 * D)
            geluForward(A(s.gelu), A(s.fc), N * 4 * D)
            matmulForward(A(s.fcProj), A(s.gelu), P(w.proj), P(w.projBias), N, 4 * D, D)
            gateResidualForward(out: A(aResid[l + 1]), resid: A(aResid2), branch: A(s.fcProj), gate: mod.map { $0 + 5 * D },
                                modStride: 6 * D, rowsPerCond: rowsPerCond, N, D)
        }
        let modF: FloatPtr? = config.hasAdaLN ? A(aModF) : nil
        normModulateForward(h: A(aHf), xhat: A(aXhatF), rstd: A(aRstdF), x: A(aResid[config.nBlocks]), weight: P(pNormF),
                            shift: modF, scale: modF.map { $0 + D }, modStride: 2 * D, rowsPerCond: rowsPerCond, N, D)
        matmulForward(A(aLogits), A(aHf), P(pLin), P(pLinBias), N, D, V)
        if store {
            cache.count = n
            if cache.count >= cache.capacity {
                cache.slide(by: Lb)
                cache.count = cache.capacity - Lb
            }
        }
        return UnsafeMutableBufferPointer(start: A(aLogits), count: N * V)
    }
}
