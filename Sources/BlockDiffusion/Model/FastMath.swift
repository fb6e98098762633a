// Vectorised exp (SIMD8, Cephes expf polynomial, max relative error ≈ 1.2e-7 on [-87, 88]) and the row
// primitives built on it. Scalar glibc expf/tanhf dominated softmax, loss and GELU time; this is ~4.7× faster.
// Inputs below −87.3 (including −inf) give ≈ 1e-38 rather than 0: callers that need exact zeros (masked
// attention entries, the SUBS mask column) never pass those entries, or overwrite them.
// Twins: `expf` (tests compare), naive GELU/softmax/loss in NaiveLayers.swift.
import Foundation

/// SIMD paths on (release) or scalar expf loops (debug: unspecialised SIMD8 code is ~40× slower at -Onone,
/// which made the gradient tests crawl). Tests switch it on explicitly to check the SIMD path in debug too.
#if DEBUG
nonisolated(unsafe) var fastMathSIMD = false
#else
nonisolated(unsafe) var fastMathSIMD = true
#endif

@inline(__always)
func expSIMD(_ xin: SIMD8<Float>) -> SIMD8<Float> {
    var x = pointwiseMin(pointwiseMax(xin, SIMD8(repeating: -87.33)), SIMD8(repeating: 88.72))
    let magic = SIMD8<Float>(repeating: 12582912)           // 1.5·2^23: adding it rounds to an integer
    let fx = (x * 1.44269504088896341 + magic) - magic       // n = round(x / ln 2)
    x = x - fx * 0.693359375
    x = x + fx * 2.12194440e-4                               // r = x − n ln 2 (two-part ln 2)
    let z = x * x
    var y = SIMD8<Float>(repeating: 1.9875691500E-4)
    y = y * x + 1.3981999507E-3
    y = y * x + 8.3334519073E-3
    y = y * x + 4.1665795894E-2
    y = y * x + 1.6666665459E-1
    y = y * x + 5.0000001201E-1
    y = y * z + x + 1
    let n = unsafeBitCast(fx + magic, to: SIMD8<Int32>.self) &- 0x4B40_0000
    return y * unsafeBitCast((n &+ 127) &<< 23, to: SIMD8<Float>.self)    // · 2^n
}

/// p[i] = exp(p[i] − shift) for i < n; returns Σ p[i].
@inline(__always)
func expShiftSum(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ shift: Float) -> Float {
    if !fastMathSIMD {
        var s: Float = 0
        for i in 0..<n { let e = expf(p[i] - shift); p[i] = e; s += e }
        return s
    }
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    let raw = UnsafeMutableRawPointer(p)
    while i + 8 <= n {
        let v = expSIMD(raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) - shift)
        raw.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD8<Float>.self)
        acc += v
        i += 8
    }
    var s = acc.sum()
    while i < n { let e = expf(p[i] - shift); p[i] = e; s += e; i += 1 }
    return s
}

/// max of p[0..<n] (n ≥ 1).
@inline(__always)
func maxOf(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var i = 0
    var m = -Float.infinity
    if n >= 8 && fastMathSIMD {
        let raw = UnsafeRawPointer(p)
        var acc = SIMD8<Float>(repeating: -.infinity)
        while i + 8 <= n { acc = pointwiseMax(acc, raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)); i += 8 }
        m = acc.max()
    }
    while i < n { m = max(m, p[i]); i += 1 }
    return m
}

/// p[i] *= s
@inline(__always)
func scaleInPlace(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ s: Float) {
    var i = 0
    if !fastMathSIMD { while i < n { p[i] *= s; i += 1 }; return }
    let raw = UnsafeMutableRawPointer(p)
    while i + 8 <= n {
        raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) * s, toByteOffset: 4 * i, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { p[i] *= s; i += 1 }
}

/// GELU-tanh of 8 lanes, optionally with its derivative (tanh u = 1 − 2/(1 + e^{2u})).
@inline(__always)
func geluSIMD(_ x: SIMD8<Float>) -> (value: SIMD8<Float>, derivative: SIMD8<Float>) {
    let k = SIMD8<Float>(repeating: 0.7978845608028654)
    let one = SIMD8<Float>(repeating: 1), half = SIMD8<Float>(repeating: 0.5), c = SIMD8<Float>(repeating: 0.044715)
    let x2: SIMD8<Float> = x * x
    let u: SIMD8<Float> = k * (x + c * x2 * x)
    let e: SIMD8<Float> = expSIMD(u + u)
    let t: SIMD8<Float> = one - (one + one) / (one + e)
    let value: SIMD8<Float> = half * x * (one + t)
    let sech2: SIMD8<Float> = one - t * t
    let du: SIMD8<Float> = k * (one + 3 * c * x2)
    let derivative: SIMD8<Float> = half * (one + t) + half * x * sech2 * du
    return (value, derivative)
}
