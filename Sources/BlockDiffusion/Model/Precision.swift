// Mixed precision of the matrix products (`train --precision bf16`): the operands of every Linear
// (forward and both backward products) are rounded to bfloat16, products are accumulated in fp32,
// and everything else — master weights, gradients, AdamW, LayerNorm, softmax, the loss — stays fp32.
//
// The GEMM itself is OpenBLAS sgemm on operands rounded to bf16 and stored as Float: a bf16 × bf16
// product is exact in fp32, so this is the arithmetic of a bf16-input / fp32-accumulate GEMM. On a CPU
// without AVX512-BF16 / AMX there is no bf16 dot-product instruction, and the bf16 GEMMs we measured
// (oneDNN 2.6, PyTorch's bf16 matmul) fall back to slow reference code; docs/training.md has the figures.
import Foundation

public enum Precision: String, Sendable, CaseIterable {
    case fp32, bf16
}

/// Rounds to the nearest bfloat16, ties to even, returned as a Float (low 16 bits zero). NaN stays NaN.
@inline(__always)
public func bf16Round(_ x: Float) -> Float {
    let b = x.bitPattern
    if x.isNaN { return Float(bitPattern: (b | 0x0040_0000) & 0xFFFF_0000) }
    return Float(bitPattern: (b &+ 0x7FFF &+ ((b >> 16) & 1)) & 0xFFFF_0000)
}

/// dst[i] = bf16Round(src[i]) (dst may equal src). NaNs may come out as ±inf: non-finite either way,
/// which the training loop reports.
func roundToBF16(_ dst: FloatPtr, _ src: UnsafePointer<Float>, _ count: Int) {
    parallelChunks(count, grain: 1 << 15) { range in
        let s = UnsafeRawPointer(src), d = UnsafeMutableRawPointer(dst)
        var i = range.lowerBound
        let one = SIMD8<UInt32>(repeating: 1), half = SIMD8<UInt32>(repeating: 0x7FFF), mask = SIMD8<UInt32>(repeating: 0xFFFF_0000)
        while i + 8 <= range.upperBound {
            let b = s.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<UInt32>.self)
            let r = (b &+ half &+ ((b &>> 16) & one)) & mask
            d.storeBytes(of: r, toByteOffset: 4 * i, as: SIMD8<UInt32>.self)
            i += 8
        }
        while i < range.upperBound { dst[i] = bf16Round(src[i]); i += 1 }
    }
}

/// The precision of the matmuls run on the current thread, and the scratch buffers of their rounded
/// operands. `DiT.forward` / `DiT.backward` set it from `DiT.precision` for the duration of the pass (all
/// matmuls are issued from that thread); everything else (sampling, scoring) runs in fp32.
final class MatmulContext {
    var precision: Precision = .fp32
    private var scratch: [UnsafeMutablePointer<Float>] = []
    private var sizes: [Int] = []

    /// Scratch buffer `slot` with room for `count` Floats (grow-only, kept for the thread's lifetime).
    func buffer(_ slot: Int, _ count: Int) -> FloatPtr {
        while scratch.count <= slot { scratch.append(.allocate(capacity: 1)); sizes.append(1) }
        if sizes[slot] < count {
            scratch[slot].deallocate()
            scratch[slot] = .allocate(capacity: count)
            sizes[slot] = count
        }
        return scratch[slot]
    }

    /// The operand `src` rounded to bf16 in scratch `slot`.
    func rounded(_ slot: Int, _ src: UnsafePointer<Float>, _ count: Int) -> UnsafePointer<Float> {
        let b = buffer(slot, count)
        roundToBF16(b, src, count)
        return UnsafePointer(b)
    }

    deinit { for p in scratch { p.deallocate() } }

    nonisolated(unsafe) private static var key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { p in if let p { Unmanaged<MatmulContext>.fromOpaque(p).release() } }
        return k
    }()

    static var current: MatmulContext {
        if let p = pthread_getspecific(key) { return Unmanaged<MatmulContext>.fromOpaque(p).takeUnretainedValue() }
        let c = MatmulContext()
        pthread_setspecific(key, Unmanaged.passRetained(c).toOpaque())
        return c
    }

    /// Sets this thread's matmul precision; returns the previous one (callers restore it with `defer`).
    static func enter(_ precision: Precision) -> Precision {
        let c = current, saved = c.precision
        c.precision = precision
        return saved
    }
}
