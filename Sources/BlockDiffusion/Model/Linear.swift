// Inference linear layers over weights stored fp32 or bf16: out (N, OC) = inp (N, C) · W (OC, C)ᵀ + bias.
//
// Which code runs is decided by measurement on the 2-core development machine (bench/sampling, docs/benchmarks.md):
//   fp32, N ≤ 8 rows   CKernels bd3_linear_f32: every weight row streamed once for all N rows (OpenBLAS sgemm
//                      reads at ≈ 5–12 GB/s there, this at ≈ 20–60 GB/s), output columns split across the workers
//   fp32, N > 8        OpenBLAS sgemm (matmulForward), which wins from about 16 rows on
//   bf16, N ≤ 8        CKernels bd3_linear_bf16 (half the bytes of fp32; widened to fp32 in registers)
//   bf16, N > 8        per worker, panels of 64 weight rows widened to fp32 into a scratch buffer, then sgemm
//                      (the conversion is amortised over the N rows; sgemm speed at compute-bound sizes)
// Accumulation is fp32 everywhere; bf16 changes only the stored weights (round to nearest even).
//
// Public API:
//   WeightDType (.fp32 | .bf16; parses "fp32" / "bf16")
//   LinearWeight: one (OC, C) matrix, fp32 (pointer into other storage) or bf16 (owned); bytes
//   linearForward(_:_:_:_:_:_:_:)        the product above
//   smallRowLimit                        rows up to which the CKernels products are used
import Foundation
import COpenBLAS
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

    /// Reads `data` in place (the caller keeps it alive).
    init(fp32 data: UnsafePointer<Float>, rows: Int, cols: Int, alwaysBLAS: Bool = false) {
        self.rows = rows; self.cols = cols; dtype = .fp32; f32 = data; bf16 = nil; self.alwaysBLAS = alwaysBLAS
    }
    /// Owns a bf16 copy of `data` (rounded to nearest even).
    init(bf16From data: UnsafePointer<Float>, rows: Int, cols: Int) {
        self.rows = rows; self.cols = cols; dtype = .bf16; f32 = nil; alwaysBLAS = false
        let b = UnsafeMutablePointer<UInt16>.allocate(capacity: max(1, rows * cols))
        // Split across workers: the conversion of a 170 M-parameter model is otherwise a visible pause.
        let n = rows * cols
        parallelChunks(n, grain: 1 << 16) { r in bd3_f32_to_bf16(b + r.lowerBound, data + r.lowerBound, r.count) }
        bf16 = b
    }
    deinit { bf16?.deallocate() }

    public var bytes: Int { rows * cols * dtype.bytesPerWeight }

    /// Row r widened to fp32 (embedding gathers).
    func row(_ r: Int, into dst: FloatPtr) {
        if let f32 { dst.update(from: f32 + r * cols, count: cols) } else { bd3_bf16_to_f32(dst, bf16! + r * cols, cols) }
    }
}

/// Rows up to which the bandwidth kernels beat sgemm (measured; see the header comment).
let smallRowLimit = 8
/// Weight rows per widened panel in the bf16 path for many rows.
let bf16PanelRows = 64

/// out (N, OC) = inp (N, C) · Wᵀ + bias. Rows of inp/out are C/OC apart.
func linearForward(_ out: FloatPtr, _ inp: UnsafePointer<Float>, _ w: LinearWeight, _ bias: UnsafePointer<Float>?,
                   _ N: Int, _ C: Int, _ OC: Int) {
    precondition(w.rows == OC && w.cols == C, "weight is \(w.rows)×\(w.cols), the product needs \(OC)×\(C)")
    if N == 0 { return }
    if w.alwaysBLAS { matmulForward(out, inp, w.f32!, bias, N, C, OC); return }
    if N <= smallRowLimit {
        // Split the output columns: each worker streams its own share of the weights.
        let parts = OC * C * N < (1 << 15) ? 1 : min(workerCount, max(1, OC / 32))
        parallelFor(parts) { part in
            let o0 = OC * part / parts, o1 = OC * (part + 1) / parts
            if let f = w.f32 {
                bd3_linear_f32(out, Int32(OC), inp, Int32(C), f, bias, Int32(N), Int32(C), Int32(o0), Int32(o1))
            } else {
                bd3_linear_bf16(out, Int32(OC), inp, Int32(C), w.bf16!, bias, Int32(N), Int32(C), Int32(o0), Int32(o1))
            }
        }
        return
    }
    if let f = w.f32 { matmulForward(out, inp, f, bias, N, C, OC); return }
    let parts = min(workerCount, max(1, OC / bf16PanelRows))
    parallelFor(parts) { part in
        let o0 = OC * part / parts, o1 = OC * (part + 1) / parts
        let panel = UnsafeMutablePointer<Float>.allocate(capacity: bf16PanelRows * C)
        defer { panel.deallocate() }
        var p0 = o0
        while p0 < o1 {
            let pr = min(bf16PanelRows, o1 - p0)
            bd3_bf16_to_f32(panel, w.bf16! + p0 * C, pr * C)
            var beta: Float = 0
            if let bias {
                for r in 0..<N { (out + r * OC + p0).update(from: bias + p0, count: pr) }
                beta = 1
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(N), Int32(pr), Int32(C),
                        1, inp, Int32(C), panel, Int32(C), beta, out + p0, Int32(OC))
            p0 += pr
        }
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
