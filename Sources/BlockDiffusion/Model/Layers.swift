// Per-layer kernels of the reference DiT, llm.c style: for each layer a forward and a backward
// function side by side, on raw row-major Float buffers. Backward functions ACCUMULATE (+=) into
// parameter gradients; input gradients are documented per function (overwrite or accumulate).
// Naive twins (straightforward Double loops) live in NaiveLayers.swift and are tested against these.
import Foundation
import CKernels
import COpenBLAS

public typealias FloatPtr = UnsafeMutablePointer<Float>

// MARK: - Matmul (Linear): out (N, OC) = inp (N, C) · weight (OC, C)ᵀ + bias (OC)

/// Matmuls are split across the workers by output rows, each piece a single-threaded sgemm (DiT.init sets
/// OpenBLAS to 1 thread): on 2 cores this avoids OpenBLAS's idle threads spinning while our own parallel
/// loops run, and keeps the work split deterministic.
@inline(__always)
func splitCount(_ rows: Int, _ work: Int) -> Int { work < (1 << 18) ? 1 : max(1, min(workerCount, rows / 16)) }

/// With `MatmulContext.current.precision == .bf16` (set by DiT for its passes) inp and weight are rounded
/// to bf16 first; the product is accumulated in fp32 either way.
func matmulForward(_ out: FloatPtr, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                   _ N: Int, _ C: Int, _ OC: Int) {
    if N == 0 { return }
    let ctx = MatmulContext.current
    if ctx.precision == .bf16 {
        sgemmForward(out, ctx.rounded(0, inp, N * C), ctx.rounded(1, weight, OC * C), bias, N, C, OC)
    } else {
        sgemmForward(out, inp, weight, bias, N, C, OC)
    }
}

func sgemmForward(_ out: FloatPtr, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
                  _ N: Int, _ C: Int, _ OC: Int) {
    let parts = splitCount(N, N * C * OC)
    parallelFor(parts) { part in
        let r0 = N * part / parts, r1 = N * (part + 1) / parts
        var beta: Float = 0
        if let bias {
            // Seed the output with the bias so sgemm adds onto it (beta = 1).
            for r in r0..<r1 { (out + r * OC).update(from: bias, count: OC) }
            beta = 1
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(r1 - r0), Int32(OC), Int32(C),
                    1, inp + r0 * C, Int32(C), weight, Int32(C), beta, out + r0 * OC, Int32(OC))
    }
}

/// dinp (N, C) = dout · weight (overwrite if `accumulateInput` is false, else +=);
/// dweight (OC, C) += doutᵀ · inp; dbias (OC) += column sums of dout.
/// In bf16 mode both products take bf16-rounded operands (dout, weight, inp); dbias sums the fp32 dout.
func matmulBackward(dinp: FloatPtr?, accumulateInput: Bool = false, dweight: FloatPtr?, dbias: FloatPtr?,
                    dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                    _ N: Int, _ C: Int, _ OC: Int) {
    if N == 0 { return }
    let ctx = MatmulContext.current
    if ctx.precision == .bf16 {
        let rd = ctx.rounded(0, dout, N * OC)
        sgemmBackward(dinp: dinp, accumulateInput: accumulateInput, dweight: dweight, dout: rd,
                      inp: dweight == nil ? inp : ctx.rounded(1, inp, N * C),
                      weight: dinp == nil ? weight : ctx.rounded(2, weight, OC * C), N, C, OC)
    } else {
        sgemmBackward(dinp: dinp, accumulateInput: accumulateInput, dweight: dweight, dout: dout, inp: inp, weight: weight, N, C, OC)
    }
    if let dbias { biasGradient(dbias, dout, N, OC) }
}

func sgemmBackward(dinp: FloatPtr?, accumulateInput: Bool, dweight: FloatPtr?,
                   dout: UnsafePointer<Float>, inp: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                   _ N: Int, _ C: Int, _ OC: Int) {
    if let dinp {
        let parts = splitCount(N, N * C * OC)
        parallelFor(parts) { part in
            let r0 = N * part / parts, r1 = N * (part + 1) / parts
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(r1 - r0), Int32(C), Int32(OC),
                        1, dout + r0 * OC, Int32(OC), weight, Int32(C), accumulateInput ? 1 : 0, dinp + r0 * C, Int32(C))
        }
    }
    if let dweight {
        let parts = splitCount(OC, N * C * OC)
        parallelFor(parts) { part in
            let o0 = OC * part / parts, o1 = OC * (part + 1) / parts
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(o1 - o0), Int32(C), Int32(N),
                        1, dout + o0, Int32(OC), inp, Int32(C), 1, dweight + o0 * C, Int32(C))
        }
    }
}

/// dbias (OC) += column sums of dout (N, OC), as sgemv with a ones vector, split over column ranges.
func biasGradient(_ dbias: FloatPtr, _ dout: UnsafePointer<Float>, _ N: Int, _ OC: Int) {
    if N * OC < (1 << 16) { columnSums(dbias, dout, N, OC); return }
    let ones = [Float](repeating: 1, count: N)
    ones.withUnsafeBufferPointer { one in
        let parts = max(1, min(workerCount, OC / 64))
        parallelFor(parts) { part in
            let c0 = OC * part / parts, c1 = OC * (part + 1) / parts
            cblas_sgemv(CblasRowMajor, CblasTrans, Int32(N), Int32(c1 - c0), 1, dout + c0, Int32(OC),
                        one.baseAddress!, 1, 1, dbias + c0, 1)
        }
    }
}

/// acc (C) += Σ_rows m (N, C), parallel over column ranges so no two workers touch the same output.
func columnSums(_ acc: FloatPtr, _ m: UnsafePointer<Float>, _ N: Int, _ C: Int) {
    parallelChunks(C, grain: 64) { cols in
        let w = cols.count
        var tmp = [Double](repeating: 0, count: w)
        tmp.withUnsafeMutableBufferPointer { t in
            for r in 0..<N {
                let row = m + r * C + cols.lowerBound
                for j in 0..<w { t[j] += Double(row[j]) }
            }
            for j in 0..<w { acc[cols.lowerBound + j] += Float(t[j]) }
        }
    }
}

// MARK: - Embedding: out (N, D) = table[tokens] (plain gather)

func embeddingForward(_ out: FloatPtr, _ tokens: UnsafePointer<Int32>, _ table: UnsafePointer<Float>, _ N: Int, _ D: Int) {
    parallelChunks(N, grain: 64) { rows in
        for r in rows { (out + r * D).update(from: table + Int(tokens[r]) * D, count: D) }
    }
}

/// dtable[tokens[r]] += dout[r]. Parallel over column ranges (tokens repeat, rows would race).
func embeddingBackward(_ dtable: FloatPtr, _ dout: UnsafePointer<Float>, _ tokens: UnsafePointer<Int32>, _ N: Int, _ D: Int) {
    parallelChunks(D, grain: 32) { cols in
        for r in 0..<N {
            let dst = dtable + Int(tokens[r]) * D, src = dout + r * D
            for j in cols { dst[j] += src[j] }
        }
    }
}

// MARK: - LayerNorm (no bias, eps 1e-5) fused with weight and adaLN modulate
//   xhat = (x - mean) * rstd ; y = xhat * w ; h = y * (1 + scale[c]) + shift[c]
//   c = row / rowsPerCond (rowsPerCond = N when the conditioning is one shared row).
//   shift/scale point at the first cond row; successive cond rows are `modStride` apart. nil = no modulation.

let layerNormEps: Float = 1e-5

func normModulateForward(h: FloatPtr, xhat: FloatPtr, rstd: FloatPtr, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                         shift: UnsafePointer<Float>?, scale: UnsafePointer<Float>?, modStride: Int, rowsPerCond: Int,
                         _ N: Int, _ D: Int) {
    parallelChunks(N, grain: 32) { rows in
        for r in rows {
            let xr = x + r * D, xh = xhat + r * D, hr = h + r * D
            var mean: Float = 0
            for j in 0..<D { mean += xr[j] }
            mean /= Float(D)
            var v: Float = 0
            for j in 0..<D { let d = xr[j] - mean; v += d * d }
            v /= Float(D)
            let rs = 1 / (v + layerNormEps).squareRoot()
            rstd[r] = rs
            for j in 0..<D { xh[j] = (xr[j] - mean) * rs }
            if let shift, let scale {
                let c = r / rowsPerCond
                let sh = shift + c * modStride, sc = scale + c * modStride
                for j in 0..<D { hr[j] = xh[j] * weight[j] * (1 + sc[j]) + sh[j] }
            } else {
                for j in 0..<D { hr[j] = xh[j] * weight[j] }
            }
        }
    }
}

/// dx (N, D) += LN backward; dweight (D) +=; dshift/dscale (per cond row, stride modStride) +=.
func normModulateBackward(dx: FloatPtr, dweight: FloatPtr, dshift: FloatPtr?, dscale: FloatPtr?,
                          dh: UnsafePointer<Float>, xhat: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                          weight: UnsafePointer<Float>, scale: UnsafePointer<Float>?, modStride: Int, rowsPerCond: Int,
                          _ N: Int, _ D: Int) {
    let nCond = (N + rowsPerCond - 1) / rowsPerCond
    // Pass 1: parameter/modulation gradients, reduced over rows (row-major sweep), parallel over column ranges.
    parallelChunks(D, grain: 32) { cols in
        let w = cols.count, j0 = cols.lowerBound
        var sumG = [Double](repeating: 0, count: w), sumGX = sumG
        for c in 0..<nCond {
            let r0 = c * rowsPerCond, r1 = min(N, r0 + rowsPerCond)
            for j in 0..<w { sumG[j] = 0; sumGX[j] = 0 }
            for r in r0..<r1 {
                let g = dh + r * D + j0, xh = xhat + r * D + j0
                for j in 0..<w { sumG[j] += Double(g[j]); sumGX[j] += Double(g[j] * xh[j]) }
            }
            for j in 0..<w {
                let s1: Double = scale.map { 1 + Double($0[c * modStride + j0 + j]) } ?? 1
                dweight[j0 + j] += Float(s1 * sumGX[j])
                if let dshift, let dscale {
                    dshift[c * modStride + j0 + j] += Float(sumG[j])
                    dscale[c * modStride + j0 + j] += Float(sumGX[j] * Double(weight[j0 + j]))
                }
            }
        }
    }
    // Pass 2: input gradient, parallel over rows.
    parallelChunks(N, grain: 32) { rows in
        for r in rows {
            let c = r / rowsPerCond
            let dhr = dh + r * D, xh = xhat + r * D, dxr = dx + r * D
            let sc = scale.map { $0 + c * modStride }
            var m1: Float = 0, m2: Float = 0
            for j in 0..<D {
                let dxh = dhr[j] * (sc.map { 1 + $0[j] } ?? 1) * weight[j]
                m1 += dxh; m2 += dxh * xh[j]
            }
            m1 /= Float(D); m2 /= Float(D)
            let rs = rstd[r]
            for j in 0..<D {
                let dxh = dhr[j] * (sc.map { 1 + $0[j] } ?? 1) * weight[j]
                dxr[j] += rs * (dxh - m1 - xh[j] * m2)
            }
        }
    }
}

// MARK: - Gated residual with dropout: out = resid + gate[c] * dropout(branch)
// Dropout is applied IN PLACE to `branch` in the forward (so the stored branch is the dropped, scaled one);
// the keep mask is a counter hash of (seed, stream, index), so the backward regenerates it without storing it.

@inline(__always)
func dropoutKeep(_ seed: UInt64, _ stream: UInt64, _ index: Int, threshold: UInt32) -> Bool {
    var z = seed &+ stream &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index) &* 0xD1B5_4A32_D192_ED03
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z = z ^ (z >> 31)
    return UInt32(truncatingIfNeeded: z >> 32) >= threshold
}

struct Dropout {
    var p: Float
    var seed: UInt64
    var stream: UInt64
    var active: Bool { p > 0 }
    var threshold: UInt32 { UInt32(min(Double(p) * 4_294_967_296.0, 4_294_967_295.0)) }
    var scale: Float { 1 / (1 - p) }
}

func dropoutForward(_ x: FloatPtr, _ count: Int, _ d: Dropout) {
    guard d.active else { return }
    let th = d.threshold, s = d.scale
    parallelChunks(count, grain: 4096) { range in
        for i in range { x[i] = dropoutKeep(d.seed, d.stream, i, threshold: th) ? x[i] * s : 0 }
    }
}

func gateResidualForward(out: FloatPtr, resid: UnsafePointer<Float>, branch: UnsafePointer<Float>, gate: UnsafePointer<Float>?,
                         modStride: Int, rowsPerCond: Int, _ N: Int, _ D: Int) {
    parallelChunks(N, grain: 32) { rows in
        for r in rows {
            let o = out + r * D, x = resid + r * D, b = branch + r * D
            if let gate {
                let g = gate + (r / rowsPerCond) * modStride
                for j in 0..<D { o[j] = x[j] + g[j] * b[j] }
            } else {
                for j in 0..<D { o[j] = x[j] + b[j] }
            }
        }
    }
}

/// dbranch (N, D) = dout * gate * dropout-mask (overwrite); dgate (per cond row) += Σ dout ∘ branch.
/// The residual's own gradient is dout itself (callers keep using the same buffer).
func gateResidualBackward(dbranch: FloatPtr, dgate: FloatPtr?, dout: UnsafePointer<Float>, branch: UnsafePointer<Float>,
                          gate: UnsafePointer<Float>?, modStride: Int, rowsPerCond: Int, dropout: Dropout, _ N: Int, _ D: Int) {
    let th = dropout.threshold, s = dropout.scale
    parallelChunks(N, grain: 32) { rows in
        for r in rows {
            let db = dbranch + r * D, g = dout + r * D
            let gt = gate.map { $0 + (r / rowsPerCond) * modStride }
            for j in 0..<D {
                var v = g[j] * (gt?[j] ?? 1)
                if dropout.active { v = dropoutKeep(dropout.seed, dropout.stream, r * D + j, threshold: th) ? v * s : 0 }
                db[j] = v
            }
        }
    }
    if let dgate {
        let nCond = (N + rowsPerCond - 1) / rowsPerCond
        parallelChunks(D, grain: 32) { cols in
            let w = cols.count, j0 = cols.lowerBound
            var acc = [Double](repeating: 0, count: w)
            for c in 0..<nCond {
                let r0 = c * rowsPerCond, r1 = min(N, r0 + rowsPerCond)
                for j in 0..<w { acc[j] = 0 }
                for r in r0..<r1 {
                    let g = dout + r * D + j0, b = branch + r * D + j0
                    for j in 0..<w { acc[j] += Double(g[j] * b[j]) }
                }
                for j in 0..<w { dgate[c * modStride + j0 + j] += Float(acc[j]) }
            }
        }
    }
}

// MARK: - GELU, tanh approximation (torch approximate='tanh')

let geluK: Float = 0.7978845608028654   // sqrt(2/pi)

/// tanh through one expf (glibc tanhf goes through expm1f and was ~10% of a training step). Absolute error
/// ~1e-7, which is all GELU needs (it multiplies by x and adds 1).
@inline(__always)
func fastTanh(_ u: Float) -> Float { 1 - 2 / (1 + expf(2 * u)) }

/// out = gelu(inp). If `derivative` is given, gelu'(inp) is stored there too (same tanh), so the backward is a
/// plain product; the model keeps it in place of the pre-activation, which nothing else needs.
func geluForward(_ out: FloatPtr, _ inp: UnsafePointer<Float>, _ count: Int, derivative: FloatPtr? = nil) {
    parallelChunks(count, grain: 4096) { range in geluRun(out, inp, range, derivative: derivative) }
}

/// gelu over inp[range] (8 lanes at a time from the range's start, the last < 8 one by one).
@inline(__always)
func geluRun(_ out: FloatPtr, _ inp: UnsafePointer<Float>, _ range: Range<Int>, derivative: FloatPtr? = nil) {
        // Without a derivative (inference): CKernels bd3_gelu, the same numbers on AVX2 (this module's SIMD8 code
        // compiles to SSE halves; GELU was 6 % of a `cpu`-config sampling profile).
        if derivative == nil {
            bd3_gelu(out + range.lowerBound, inp + range.lowerBound, range.count, fastMathSIMD ? 1 : 0)
            return
        }
        var i = range.lowerBound
        let src = UnsafeRawPointer(inp), dst = UnsafeMutableRawPointer(out), der = derivative.map { UnsafeMutableRawPointer($0) }
        while fastMathSIMD && i + 8 <= range.upperBound {
            let (v, g) = geluSIMD(src.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
            dst.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            der?.storeBytes(of: g, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            i += 8
        }
        while i < range.upperBound {
            let x = inp[i]
            let t = fastTanh(geluK * (x + 0.044715 * x * x * x))
            out[i] = 0.5 * x * (1 + t)
            if let derivative {
                derivative[i] = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * geluK * (1 + 3 * 0.044715 * x * x)
            }
            i += 1
        }
}

/// dinp = dout * gelu'(inp) (overwrite; dinp may alias dout).
func geluBackward(_ dinp: FloatPtr, _ inp: UnsafePointer<Float>, _ dout: UnsafePointer<Float>, _ count: Int) {
    parallelChunks(count, grain: 4096) { range in
        for i in range {
            let x = inp[i]
            let t = fastTanh(geluK * (x + 0.044715 * x * x * x))
            let grad = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * geluK * (1 + 3 * 0.044715 * x * x)
            dinp[i] = dout[i] * grad
        }
    }
}

/// dinp = dout * derivative (the gelu' stored by the forward); may alias.
func geluBackwardStored(_ dinp: FloatPtr, _ derivative: UnsafePointer<Float>, _ dout: UnsafePointer<Float>, _ count: Int) {
    parallelChunks(count, grain: 4096) { range in
        for i in range { dinp[i] = dout[i] * derivative[i] }
    }
}

// MARK: - SiLU

func siluForward(_ out: FloatPtr, _ inp: UnsafePointer<Float>, _ count: Int) {
    for i in 0..<count { let x = inp[i]; out[i] = x / (1 + expf(-x)) }
}

/// dinp = dout * silu'(inp) (overwrite; may alias dout).
func siluBackward(_ dinp: FloatPtr, _ inp: UnsafePointer<Float>, _ dout: UnsafePointer<Float>, _ count: Int) {
    for i in 0..<count {
        let x = inp[i], s = 1 / (1 + expf(-x))
        dinp[i] = dout[i] * s * (1 + x * (1 - s))
    }
}

// MARK: - Timestep embedding (256 frequencies, cos first then sin; max_period 10000)

let timestepFrequencySize = 256

func timestepEmbedding(_ out: FloatPtr, _ sigma: Float) {
    let half = timestepFrequencySize / 2
    for i in 0..<half {
        // torch: freqs = exp(-ln(10000) * arange(half) / half) in float32, args = t * freqs in float32.
        let f = Float(exp(-log(10000.0) * Double(Float(i)) / Double(half)))
        let a = sigma * f
        out[i] = Float(cos(Double(a)))
        out[half + i] = Float(sin(Double(a)))
    }
}

// MARK: - Rotary embedding on q and k of packed qkv rows (N, 3D), rotate-half (NeoX) style, full head dim.
//   x1 = x[:d/2], x2 = x[d/2:] ; x1' = x1 cos − x2 sin ; x2' = x2 cos + x1 sin  (v untouched)

struct RotaryTable {
    let headDim: Int
    let maxPositions: Int
    var cos: [Float]   // (maxPositions, d/2)
    var sin: [Float]
    /// inv_freq exactly as torch computes it in float32: 1 / base^(arange(0,d,2)/d).
    static func invFreq(headDim d: Int) -> [Float] {
        (0..<(d / 2)).map { i in 1 / powf(10000, Float(2 * i) / Float(d)) }
    }
    init(headDim d: Int, maxPositions: Int) {
        headDim = d; self.maxPositions = maxPositions
        let inv = RotaryTable.invFreq(headDim: d)
        cos = [Float](repeating: 0, count: maxPositions * d / 2)
        sin = cos
        for p in 0..<maxPositions {
            for i in 0..<(d / 2) {
                let a = Float(p) * inv[i]           // float32 product, as torch's einsum
                cos[p * d / 2 + i] = Float(Foundation.cos(Double(a)))
                sin[p * d / 2 + i] = Float(Foundation.sin(Double(a)))
            }
        }
    }
}

/// In place on the q and k parts of qkv (N, 3D). positions[r % T] is the rotary position of row r.
/// `inverse` applies the transposed rotation (= the backward pass, since the map is linear and orthogonal).
func rotaryApply(_ qkv: FloatPtr, positions: UnsafePointer<Int32>, T: Int, table: RotaryTable, nHeads: Int,
                 _ N: Int, inverse: Bool) {
    let d = table.headDim, half = d / 2, D = nHeads * d
    table.cos.withUnsafeBufferPointer { cosb in
        table.sin.withUnsafeBufferPointer { sinb in
            parallelChunks(N, grain: 32) { rows in
                for r in rows {
                    let p = Int(positions[r % T])
                    let cs = cosb.baseAddress! + p * half
                    let sn = sinb.baseAddress! + p * half
                    for part in 0..<2 {
                        for h in 0..<nHeads {
                            let x = qkv + r * 3 * D + part * D + h * d
                            for i in 0..<half {
                                let x1 = x[i], x2 = x[i + half]
                                let c = cs[i], s = inverse ? -sn[i] : sn[i]
                                x[i] = x1 * c - x2 * s
                                x[i + half] = x2 * c + x1 * s
                            }
                        }
                    }
                }
            }
        }
    }
}
