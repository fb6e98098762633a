// Masked multi-head attention on packed qkv rows, tiled so fully masked key ranges are never computed.
//
// qkv (B, T, 3D): row = [q | k | v], each head-major (head h = columns h*d..<(h+1)*d), rotary already applied.
// out (B, T, D): 'b s h d -> b s (h d)'. lse (B, H, T): row log-sum-exp of the scaled scores, kept for the
// backward, which recomputes the probabilities (flash-attention style) instead of storing (T × T) per head.
//
// Each query row's allowed keys are a union of at most two contiguous intervals (see `rowIntervals`).
// Rows are grouped in tiles (never straddling the x_t/x_0 boundary); per tile we take the union of its rows'
// intervals as key spans, run sgemm on exactly those spans and mask element-wise only when the rows disagree.
// The dense naive twin (`naiveAttentionForward/Backward`) builds the mask from the reference formula instead.
import Foundation
import COpenBLAS

/// True iff query q may attend to key k (reference formulas; used by the naive twin and by tests).
public func attentionMaskAllowed(_ layout: AttentionLayout, T: Int, q: Int, k: Int) -> Bool {
    switch layout {
    case .full: return true
    case .causal: return k <= q
    case .blockDiffusion(let bs):
        let n = T / 2
        let x0q = q >= n, x0k = k >= n
        let bq = x0q ? (q - n) / bs : q / bs
        let bk = x0k ? (k - n) / bs : k / bs
        let bd = bq == bk && x0q == x0k
        let obc = bq > bk && x0k && !x0q
        let bc = bq >= bk && x0k && x0q
        return bd || obc || bc
    case .blockCausal(let bs):
        return q / bs >= k / bs
    }
}

/// The allowed keys of query row q as two half-open intervals (the second may be empty).
@inline(__always)
func rowIntervals(_ layout: AttentionLayout, T: Int, q: Int) -> (Int, Int, Int, Int) {
    switch layout {
    case .full: return (0, T, 0, 0)
    case .causal: return (0, q + 1, 0, 0)
    case .blockDiffusion(let bs):
        let n = T / 2
        if q < n {
            let i = q / bs
            return (i * bs, min((i + 1) * bs, n), n, n + i * bs)   // own noisy block, clean blocks < i
        } else {
            let i = (q - n) / bs
            return (n, n + min((i + 1) * bs, n), 0, 0)              // clean blocks ≤ i
        }
    case .blockCausal(let bs):
        let i = q / bs
        return (0, min((i + 1) * bs, T), 0, 0)
    }
}

/// Work plan: query tiles, each with the key spans to compute.
struct AttentionPlan {
    struct Tile {
        var q0: Int; var q1: Int; var spans: [(Int, Int)]; var width: Int; var needsMask: Bool
        /// Per row (if needsMask): the allowed columns of the tile's score matrix as sorted half-open ranges.
        var rowRanges: [[(Int, Int)]] = []
    }
    var tiles: [Tile] = []
    var maxWidth = 0
    var maxRows = 0
    let layout: AttentionLayout
    let T: Int

    /// Query rows per tile: 64 for full/causal; for the block layouts ~16 rows of whole blocks, because the
    /// rows of a tile see different key prefixes and the noisy diagonal is mostly masked (measured on the cpu
    /// config, BD3 L'=4: 16-row tiles ran the attention ~2× faster than 64-row tiles).
    init(layout: AttentionLayout, T: Int, tileRows: Int? = nil) {
        self.layout = layout; self.T = T
        var segments: [(Int, Int)] = [(0, T)]
        var step = tileRows ?? 64
        switch layout {
        case .blockDiffusion(let bs):
            segments = [(0, T / 2), (T / 2, T)]
            step = max(bs, ((tileRows ?? 16) / bs) * bs)      // whole blocks per tile
        case .blockCausal(let bs):
            step = max(bs, ((tileRows ?? 16) / bs) * bs)
        default: break
        }
        for (s0, s1) in segments {
            var q0 = s0
            while q0 < s1 {
                let q1 = min(s1, q0 + step)
                var ivs: [(Int, Int)] = []
                var rowsDiffer = false
                var first: (Int, Int, Int, Int)? = nil
                for q in q0..<q1 {
                    let iv = rowIntervals(layout, T: T, q: q)
                    if let f = first { if f != iv { rowsDiffer = true } } else { first = iv }
                    if iv.1 > iv.0 { ivs.append((iv.0, iv.1)) }
                    if iv.3 > iv.2 { ivs.append((iv.2, iv.3)) }
                }
                ivs.sort { $0.0 < $1.0 }
                var spans: [(Int, Int)] = []
                for iv in ivs {
                    if let last = spans.last, iv.0 <= last.1 { spans[spans.count - 1].1 = max(last.1, iv.1) }
                    else { spans.append(iv) }
                }
                let width = spans.reduce(0) { $0 + $1.1 - $1.0 }
                var tile = Tile(q0: q0, q1: q1, spans: spans, width: width, needsMask: rowsDiffer || layout == .causal)
                if tile.needsMask {
                    for q in q0..<q1 {
                        let iv = rowIntervals(layout, T: T, q: q)
                        var ranges: [(Int, Int)] = []
                        var co = 0
                        for (k0, k1) in spans {
                            for (lo, hi) in [(iv.0, iv.1), (iv.2, iv.3)] where hi > lo {
                                let a = max(k0, lo), b = min(k1, hi)
                                if b > a { ranges.append((co + a - k0, co + b - k0)) }
                            }
                            co += k1 - k0
                        }
                        ranges.sort { $0.0 < $1.0 }
                        tile.rowRanges.append(ranges)
                    }
                }
                tiles.append(tile)
                maxWidth = max(maxWidth, width)
                maxRows = max(maxRows, q1 - q0)
                q0 = q1
            }
        }
    }

    /// Fraction of the dense (T × T) score matrix that the tiles compute (for benchmarks/tests).
    var computedFraction: Double {
        Double(tiles.reduce(0) { $0 + ($1.q1 - $1.q0) * $1.width }) / Double(T * T)
    }
}

/// Runs `body(b, h, scratch)` over all (batch, head) pairs on the workers; each worker owns its scratch.
/// OpenBLAS is set to one thread meanwhile: the parallelism is across heads.
private func forEachHead(B: Int, H: Int, scratchCount: Int, _ body: (Int, Int, FloatPtr) -> Void) {
    let saved = openblas_get_num_threads()
    openblas_set_num_threads(1)
    let workers = min(workerCount, B * H)
    let scratch = FloatPtr.allocate(capacity: workers * scratchCount)
    parallelFor(workers) { w in
        var item = w
        while item < B * H {
            body(item / H, item % H, scratch + w * scratchCount)
            item += workers
        }
    }
    scratch.deallocate()
    openblas_set_num_threads(saved)
}

/// out (B, T, D), lse (B, H, T) from qkv (B, T, 3D).
func attentionForward(out: FloatPtr, lse: FloatPtr, qkv: UnsafePointer<Float>, plan: AttentionPlan, B: Int, nHeads H: Int, headDim d: Int) {
    let T = plan.T, D = H * d, ld = 3 * D
    let scale = 1 / Float(d).squareRoot()
    let ldS = max(plan.maxWidth, 1)
    forEachHead(B: B, H: H, scratchCount: plan.maxRows * ldS) { b, h, S in
        let base = qkv + b * T * ld
        for tile in plan.tiles {
            let m = tile.q0 < tile.q1 ? tile.q1 - tile.q0 : 0
            let Q = base + tile.q0 * ld + h * d
            var co = 0
            for (k0, k1) in tile.spans {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(k1 - k0), Int32(d),
                            scale, Q, Int32(ld), base + k0 * ld + D + h * d, Int32(ld), 0, S + co, Int32(ldS))
                co += k1 - k0
            }
            for r in 0..<m {
                let q = tile.q0 + r
                let row = S + r * ldS
                let lseIndex = (b * H + h) * T + q
                if !tile.needsMask {
                    let mx = maxOf(row, tile.width)
                    let sum = expShiftSum(row, tile.width, mx)
                    scaleInPlace(row, tile.width, 1 / sum)
                    lse[lseIndex] = mx + logf(sum)
                    continue
                }
                // Only the allowed ranges are exponentiated; everything else becomes an exact 0.
                let ranges = tile.rowRanges[r]
                var mx = -Float.infinity
                for (a, e) in ranges { mx = max(mx, maxOf(row + a, e - a)) }
                var sum: Float = 0
                for (a, e) in ranges { sum += expShiftSum(row + a, e - a, mx) }
                var c = 0
                for (a, e) in ranges {
                    if a > c { (row + c).update(repeating: 0, count: a - c) }
                    scaleInPlace(row + a, e - a, 1 / sum)
                    c = e
                }
                if c < tile.width { (row + c).update(repeating: 0, count: tile.width - c) }
                lse[lseIndex] = mx + logf(sum)
            }
            let O = out + (b * T + tile.q0) * D + h * d
            co = 0
            for (i, (k0, k1)) in tile.spans.enumerated() {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(d), Int32(k1 - k0),
                            1, S + co, Int32(ldS), base + k0 * ld + 2 * D + h * d, Int32(ld), i == 0 ? 0 : 1, O, Int32(D))
                co += k1 - k0
            }
        }
    }
}

/// dqkv (B, T, 3D) = gradient w.r.t. the (post-rotary) qkv (overwrite), from dout (B, T, D).
func attentionBackward(dqkv: FloatPtr, dout: UnsafePointer<Float>, out: UnsafePointer<Float>, lse: UnsafePointer<Float>,
                       qkv: UnsafePointer<Float>, plan: AttentionPlan, B: Int, nHeads H: Int, headDim d: Int) {
    let T = plan.T, D = H * d, ld = 3 * D
    let scale = 1 / Float(d).squareRoot()
    let ldS = max(plan.maxWidth, 1)
    dqkv.update(repeating: 0, count: B * T * ld)
    forEachHead(B: B, H: H, scratchCount: 2 * plan.maxRows * ldS + plan.maxRows) { b, h, scratch in
        let P = scratch, dP = scratch + plan.maxRows * ldS, Drow = scratch + 2 * plan.maxRows * ldS
        let base = qkv + b * T * ld, dbase = dqkv + b * T * ld
        for tile in plan.tiles {
            let m = tile.q1 - tile.q0
            let Q = base + tile.q0 * ld + h * d
            let dO = dout + (b * T + tile.q0) * D + h * d
            let O = out + (b * T + tile.q0) * D + h * d
            var co = 0
            for (k0, k1) in tile.spans {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(k1 - k0), Int32(d),
                            scale, Q, Int32(ld), base + k0 * ld + D + h * d, Int32(ld), 0, P + co, Int32(ldS))
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(k1 - k0), Int32(d),
                            1, dO, Int32(D), base + k0 * ld + 2 * D + h * d, Int32(ld), 0, dP + co, Int32(ldS))
                co += k1 - k0
            }
            for r in 0..<m {
                let q = tile.q0 + r
                let row = P + r * ldS
                let l = lse[(b * H + h) * T + q]
                if tile.needsMask {
                    var c = 0
                    for (a, e) in tile.rowRanges[r] {
                        if a > c { (row + c).update(repeating: 0, count: a - c) }
                        _ = expShiftSum(row + a, e - a, l)
                        c = e
                    }
                    if c < tile.width { (row + c).update(repeating: 0, count: tile.width - c) }
                } else {
                    _ = expShiftSum(row, tile.width, l)
                }
                var dsum: Float = 0
                for j in 0..<d { dsum += dO[r * D + j] * O[r * D + j] }
                Drow[r] = dsum
            }
            // dV += Pᵀ dO ; then dS = P ∘ (dP − D) in place of dP ; dQ += scale dS K ; dK += scale dSᵀ Q
            co = 0
            for (k0, k1) in tile.spans {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(k1 - k0), Int32(d), Int32(m),
                            1, P + co, Int32(ldS), dO, Int32(D), 1, dbase + k0 * ld + 2 * D + h * d, Int32(ld))
                co += k1 - k0
            }
            for r in 0..<m {
                let pr = P + r * ldS, dr = dP + r * ldS, dv = Drow[r]
                for j in 0..<tile.width { dr[j] = pr[j] * (dr[j] - dv) }
            }
            co = 0
            for (k0, k1) in tile.spans {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(d), Int32(k1 - k0),
                            scale, dP + co, Int32(ldS), base + k0 * ld + D + h * d, Int32(ld), 1, dbase + tile.q0 * ld + h * d, Int32(ld))
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(k1 - k0), Int32(d), Int32(m),
                            scale, dP + co, Int32(ldS), Q, Int32(ld), 1, dbase + k0 * ld + D + h * d, Int32(ld))
                co += k1 - k0
            }
        }
    }
}

// MARK: - Naive twin: dense (T × T) masked attention in Double, straight from the definition.

func naiveAttentionForward(out: FloatPtr, qkv: UnsafePointer<Float>, layout: AttentionLayout, B: Int, T: Int, nHeads H: Int, headDim d: Int) {
    let D = H * d, ld = 3 * D
    let scale = 1 / Double(d).squareRoot()
    var p = [Double](repeating: 0, count: T)
    for b in 0..<B {
        for h in 0..<H {
            for q in 0..<T {
                var mx = -Double.infinity
                for k in 0..<T {
                    if attentionMaskAllowed(layout, T: T, q: q, k: k) {
                        var s = 0.0
                        for j in 0..<d { s += Double(qkv[(b * T + q) * ld + h * d + j]) * Double(qkv[(b * T + k) * ld + D + h * d + j]) }
                        p[k] = s * scale
                        mx = max(mx, p[k])
                    } else { p[k] = -Double.infinity }
                }
                var sum = 0.0
                for k in 0..<T { p[k] = p[k] == -Double.infinity ? 0 : Foundation.exp(p[k] - mx); sum += p[k] }
                for j in 0..<d {
                    var acc = 0.0
                    for k in 0..<T where p[k] != 0 { acc += p[k] / sum * Double(qkv[(b * T + k) * ld + 2 * D + h * d + j]) }
                    out[(b * T + q) * D + h * d + j] = Float(acc)
                }
            }
        }
    }
}

func naiveAttentionBackward(dqkv: FloatPtr, dout: UnsafePointer<Float>, qkv: UnsafePointer<Float>, layout: AttentionLayout,
                            B: Int, T: Int, nHeads H: Int, headDim d: Int) {
    let D = H * d, ld = 3 * D
    let scale = 1 / Double(d).squareRoot()
    for i in 0..<(B * T * ld) { dqkv[i] = 0 }
    var p = [Double](repeating: 0, count: T), dp = p
    for b in 0..<B {
        for h in 0..<H {
            func qv(_ t: Int, _ j: Int) -> Double { Double(qkv[(b * T + t) * ld + h * d + j]) }
            func kv(_ t: Int, _ j: Int) -> Double { Double(qkv[(b * T + t) * ld + D + h * d + j]) }
            func vv(_ t: Int, _ j: Int) -> Double { Double(qkv[(b * T + t) * ld + 2 * D + h * d + j]) }
            for q in 0..<T {
                var mx = -Double.infinity
                for k in 0..<T {
                    if attentionMaskAllowed(layout, T: T, q: q, k: k) {
                        var s = 0.0
                        for j in 0..<d { s += qv(q, j) * kv(k, j) }
                        p[k] = s * scale; mx = max(mx, p[k])
                    } else { p[k] = -Double.infinity }
                }
                var sum = 0.0
                for k in 0..<T { p[k] = p[k] == -Double.infinity ? 0 : Foundation.exp(p[k] - mx); sum += p[k] }
                for k in 0..<T { p[k] /= sum }
                // dP = dO · V ; dS = P (dP − Σ P dP)
                var dot = 0.0
                for k in 0..<T {
                    var s = 0.0
                    for j in 0..<d { s += Double(dout[(b * T + q) * D + h * d + j]) * vv(k, j) }
                    dp[k] = s; dot += p[k] * s
                }
                for k in 0..<T where p[k] != 0 {
                    let ds = p[k] * (dp[k] - dot) * scale
                    for j in 0..<d {
                        dqkv[(b * T + q) * ld + h * d + j] += Float(ds * kv(k, j))
                        dqkv[(b * T + k) * ld + D + h * d + j] += Float(ds * qv(q, j))
                        dqkv[(b * T + k) * ld + 2 * D + h * d + j] += Float(p[k] * Double(dout[(b * T + q) * D + h * d + j]))
                    }
                }
            }
        }
    }
}
