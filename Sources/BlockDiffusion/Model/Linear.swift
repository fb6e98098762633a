// Inference linear layers over weights stored fp32 or bf16: out (N, OC) = inp (N, C) · W (OC, C)ᵀ + bias.
//
// Inference weights (fp32 or bf16) always go through CKernels bd3_linear_f32 / bd3_linear_bf16, output columns
// split across the workers: each weight row is streamed once per call for up to 48 rows (OpenBLAS sgemm reads a
// weight matrix at ≈ 5–12 GB/s for 1–4 rows, these at ≈ 20–60 GB/s on the development machine; bench/sampling),
// and a row's result does not depend on the other rows of the call, so samples do not depend on --batch.
// bf16 weights are stored in 3-row panels (one contiguous stream per tile; bd3_pack_bf16) and widened to fp32 in
// registers; accumulation is fp32 everywhere.
// The training model's fp32 weights (alwaysBLAS) go through matmulForward (OpenBLAS), as the training forward
// always did.
//
// Public API:
//   WeightDType (.fp32 | .bf16; parses "fp32" / "bf16")
//   LinearWeight: one (OC, C) matrix, fp32 (pointer into other storage) or bf16 (owned); bytes
//   linearForward(_:_:_:_:_:_:_:)        the product above
import Foundation
import CKernels

public enum WeightDType: String, CaseIterable, Sendable {
    case fp32, bf16
    public var bytesPerWeight: Int { self == .fp32 ? 4 : 2 }
}

/// One weight matrix (rows = output features, cols = input features), row-major.
public final class LinearWeight {
    public let rows: Int, cols: Int
    public let dtype: WeightDType
    let f32: UnsafePointer<Float>?
    let bf16: UnsafeMutablePointer<UInt16>?
    /// Every product through matmulForward (the training model's weights: its own dispatch lives there and the
    /// training forward's numbers must not depend on the row count).
    let alwaysBLAS: Bool
    /// bf16 stored in panels of 3 rows (bd3_pack_bf16), not row-major.
    let packed: Bool

    /// Reads `data` in place (the caller keeps it alive).
    init(fp32 data: UnsafePointer<Float>, rows: Int, cols: Int, alwaysBLAS: Bool = false) {
        self.rows = rows; self.cols = cols; dtype = .fp32; f32 = data; bf16 = nil; self.alwaysBLAS = alwaysBLAS; packed = false
    }
    /// Owns a bf16 copy of `data` (rounded to nearest even). packed: stored in CKernels' panels of 3 rows for the
    /// products (a tile streams one contiguous run instead of 3 rows; same outputs bit for bit); the embedding, whose
    /// rows are gathered, stays row-major.
    init(bf16From data: UnsafePointer<Float>, rows: Int, cols: Int, packed: Bool = true) {
        self.rows = rows; self.cols = cols; dtype = .bf16; f32 = nil; alwaysBLAS = false; self.packed = packed
        let b = UnsafeMutablePointer<UInt16>.allocate(capacity: max(1, rows * cols))
        adviseHugePages(b, bytes: rows * cols * 2)
        // Split across workers: the conversion of a 170 M-parameter model is otherwise a visible pause.
        if packed {
            parallelChunks(rows, grain: max(1, (1 << 16) / max(1, cols))) { r in
                bd3_pack_bf16(b, data, Int32(rows), Int32(cols), Int32(r.lowerBound), Int32(r.upperBound))
            }
        } else {
            let n = rows * cols
            parallelChunks(n, grain: 1 << 16) { r in bd3_f32_to_bf16(b + r.lowerBound, data + r.lowerBound, r.count) }
        }
        bf16 = b
    }
    deinit { bf16?.deallocate() }

    public var bytes: Int { rows * cols * dtype.bytesPerWeight }

    /// Row r widened to fp32 (embedding gathers).
    func row(_ r: Int, into dst: FloatPtr) {
        if let f32 { dst.update(from: f32 + r * cols, count: cols) }
        else if packed { bd3_unpack_bf16_row(dst, bf16!, Int32(rows), Int32(cols), Int32(r)) }
        else { bd3_bf16_to_f32(dst, bf16! + r * cols, cols) }
    }
}

/// out (N, OC) = inp (N, C) · Wᵀ + bias. Rows of inp/out are C/OC apart.
/// gelu: also geluOut = gelu(out), each worker on the columns it just computed (inference: no separate pass over
/// the activations, no extra wait for the other worker; the same numbers as geluForward over whole rows when the
/// split falls on multiples of 8 columns, as it does here).
func linearForward(_ out: FloatPtr, _ inp: UnsafePointer<Float>, _ w: LinearWeight, _ bias: UnsafePointer<Float>?,
                   _ N: Int, _ C: Int, _ OC: Int, gelu geluOut: FloatPtr? = nil) {
    precondition(w.rows == OC && w.cols == C, "weight is \(w.rows)×\(w.cols), the product needs \(OC)×\(C)")
    if N == 0 { return }
    if w.alwaysBLAS {
        matmulForward(out, inp, w.f32!, bias, N, C, OC)
        if let geluOut { geluForward(geluOut, out, N * OC) }
        return
    }
    // Split the output columns on multiples of 24 (whole 3-row panels of packed bf16, and 8-column runs for the
    // fused GELU): each worker streams its own share of the weights.
    let parts = OC * C * N < (1 << 15) ? 1 : min(workerCount, max(1, OC / 32))
    parallelFor(parts) { part in
        let o0 = part == 0 ? 0 : OC * part / parts / 24 * 24, o1 = part == parts - 1 ? OC : OC * (part + 1) / parts / 24 * 24
        if let f = w.f32 {
            bd3_linear_f32(out, Int32(OC), inp, Int32(C), f, bias, Int32(N), Int32(C), Int32(o0), Int32(o1))
        } else if w.packed {
            bd3_linear_bf16_packed(out, Int32(OC), inp, Int32(C), w.bf16!, bias, Int32(N), Int32(C), Int32(OC), Int32(o0), Int32(o1))
        } else {
            bd3_linear_bf16(out, Int32(OC), inp, Int32(C), w.bf16!, bias, Int32(N), Int32(C), Int32(o0), Int32(o1))
        }
        if let geluOut { for r in 0..<N { geluRun(geluOut + r * OC, out + r * OC, o0..<o1) } }
    }
}

/// Naive twin of `linearForward` (Double accumulation, weights as stored) for the tests.
func naiveLinearForward(_ inp: [Float], _ w: LinearWeight, _ bias: [Float]?, _ N: Int) -> [Float] {
    let C = w.cols, OC = w.rows
    var wf = [Float](repeating: 0, count: OC * C)
    for r in 0..<OC { wf.withUnsafeMutableBufferPointer { w.row(r, into: $0.baseAddress! + r * C) } }
    var out = [Float](repeating: 0, count: N * OC)
    for n in 0..<N {
        for o in 0..<OC {
            var acc = Double(bias?[o] ?? 0)
            for c in 0..<C { acc += Double(inp[n * C + c]) * Double(wf[o * C + c]) }
            out[n * OC + o] = Float(acc)
        }
    }
    return out
}
