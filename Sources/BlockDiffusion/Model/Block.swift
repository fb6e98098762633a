// One DiT transformer block, shared by the training forward (DiT.forward: attention with the layout's mask over
// the whole input) and the cached inference forward (Model/CachedForward.swift: attention over a KV cache).
// The attention back-end runs between the two halves:
//
//   blockAttentionInput:   h1 = LN1(x)(1+sc1)+sh1 ; qkv = h1 Wqkvᵀ                           x (N, D) → qkv (N, 3D)
//   (back-end: rotary on q, k and attention → att (N, D))
//   blockAttentionOutput:  r = x + g1 drop(att Woutᵀ) ; out = r + g2 drop(W2 gelu_tanh(W1 LN2(r)(1+sc2)+sh2 + b1) + b2)
//
// mod points at the block's adaLN row (sh1,sc1,g1,sh2,sc2,g2; successive conditioning rows 6D apart, one per
// rowsPerCond rows), nil for AR (no adaLN, gates 1). Weights are fp32 or bf16 (LinearWeight); the training
// model's are fp32 views that always use sgemm, so its numbers are those of the layer functions alone.
//
// Public API: none (BlockWeights, BlockActivations, blockAttentionInput, blockAttentionOutput are internal).
import Foundation

/// The weights of one block as the forward reads them.
struct BlockWeights {
    var norm1: UnsafePointer<Float>, qkv: LinearWeight, attnOut: LinearWeight, norm2: UnsafePointer<Float>
    var fc: LinearWeight, fcBias: UnsafePointer<Float>, proj: LinearWeight, projBias: UnsafePointer<Float>
}

/// Where one block's activations go (row r of each buffer belongs to input row r). The training model keeps one
/// set per block (its backward reads them); inference reuses one set for every block.
struct BlockActivations {
    var xhat1, rstd1, h1, qkv, att, attProj, resid2, xhat2, rstd2, h2, fc, gelu, fcProj: FloatPtr
    /// The same buffers from row r0 on.
    func rows(from r0: Int, _ D: Int) -> BlockActivations {
        BlockActivations(xhat1: xhat1 + r0 * D, rstd1: rstd1 + r0, h1: h1 + r0 * D, qkv: qkv + r0 * 3 * D, att: att + r0 * D,
                         attProj: attProj + r0 * D, resid2: resid2 + r0 * D, xhat2: xhat2 + r0 * D, rstd2: rstd2 + r0,
                         h2: h2 + r0 * D, fc: fc + r0 * 4 * D, gelu: gelu + r0 * 4 * D, fcProj: fcProj + r0 * D)
    }
}

/// h1 = LN1(x)(1+sc1)+sh1 ; a.qkv = h1 Wqkvᵀ (pre-rotary).   x (N, D) → a.qkv (N, 3D)
func blockAttentionInput(x: UnsafePointer<Float>, w: BlockWeights, mod: UnsafePointer<Float>?, rowsPerCond: Int,
                         a: BlockActivations, _ N: Int, _ D: Int) {
    normModulateForward(h: a.h1, xhat: a.xhat1, rstd: a.rstd1, x: x, weight: w.norm1,
                        shift: mod, scale: mod.map { $0 + D }, modStride: 6 * D, rowsPerCond: rowsPerCond, N, D)
    linearForward(a.qkv, a.h1, w.qkv, nil, N, D, 3 * D)
}

/// The block after attention, on n rows: a.att (n, D) and the block input x (n, D) → out (n, D).
/// keepGeluDerivative: a.fc then holds gelu'(pre-activation) (the training backward needs only that).
func blockAttentionOutput(out: FloatPtr, x: UnsafePointer<Float>, w: BlockWeights, mod: UnsafePointer<Float>?, rowsPerCond: Int,
                          a: BlockActivations, dropAttn: Dropout, dropMLP: Dropout, keepGeluDerivative: Bool, _ n: Int, _ D: Int) {
    linearForward(a.attProj, a.att, w.attnOut, nil, n, D, D)
    dropoutForward(a.attProj, n * D, dropAttn)
    gateResidualForward(out: a.resid2, resid: x, branch: a.attProj, gate: mod.map { $0 + 2 * D }, modStride: 6 * D, rowsPerCond: rowsPerCond, n, D)
    normModulateForward(h: a.h2, xhat: a.xhat2, rstd: a.rstd2, x: a.resid2, weight: w.norm2,
                        shift: mod.map { $0 + 3 * D }, scale: mod.map { $0 + 4 * D }, modStride: 6 * D, rowsPerCond: rowsPerCond, n, D)
    if keepGeluDerivative {
        linearForward(a.fc, a.h2, w.fc, w.fcBias, n, D, 4 * D)
        geluForward(a.gelu, a.fc, n * 4 * D, derivative: a.fc)
    } else {
        linearForward(a.fc, a.h2, w.fc, w.fcBias, n, D, 4 * D, gelu: a.gelu)
    }
    linearForward(a.fcProj, a.gelu, w.proj, w.projBias, n, 4 * D, D)
    dropoutForward(a.fcProj, n * D, dropMLP)
    gateResidualForward(out: out, resid: a.resid2, branch: a.fcProj, gate: mod.map { $0 + 5 * D }, modStride: 6 * D, rowsPerCond: rowsPerCond, n, D)
}
