// Small-M linear products for inference (and the bf16 conversions they need), with runtime CPU dispatch.
//
//   y (M, N) = x (M, K) · W (N, K)ᵀ + b (N)      W stored fp32 or bf16, x and y fp32, M = 1 … 64
//
// One call computes the output columns n0 ..< n1 (callers split N across threads); each weight row is read
// from memory once per call for all M rows of x (the rows of x stay in cache). Products accumulate in fp32.
// The best code path the CPU supports is chosen at the first call (AVX2 + FMA, else portable C);
// bd3_set_isa forces one (tests run every path the machine has against the naive twin).
#ifndef BD3_KERNELS_H
#define BD3_KERNELS_H
#include <stddef.h>
#include <stdint.h>
#include "bd3pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t bd3_bf16;

enum { BD3_ISA_PORTABLE = 0, BD3_ISA_AVX2 = 1 };

/// The best path this CPU supports.
int bd3_isa_available(void);
/// The path in use (after bd3_set_isa or the automatic choice).
int bd3_isa(void);
/// Forces a path (clamped to what the CPU supports); -1 = automatic.
void bd3_set_isa(int isa);

/// fp32 → bf16, round to nearest even; NaN stays NaN (quiet), ±inf stays ±inf.
void bd3_f32_to_bf16(bd3_bf16 *dst, const float *src, size_t n);
/// bf16 → fp32 (exact).
void bd3_bf16_to_f32(float *dst, const bd3_bf16 *src, size_t n);
/// IEEE half → fp32 (exact; for F16 checkpoints).
void bd3_f16_to_f32(float *dst, const uint16_t *src, size_t n);

/// y[m·ldy + n] = Σ_k x[m·ldx + k] · w[n·K + k] (+ b[n]) for m < M, n0 ≤ n < n1.  b may be NULL.
void bd3_linear_f32(float *y, int ldy, const float *x, int ldx, const float *w, const float *b,
                    int M, int K, int n0, int n1);
void bd3_linear_bf16(float *y, int ldy, const float *x, int ldx, const bd3_bf16 *w, const float *b,
                     int M, int K, int n0, int n1);

/// bf16 weights packed in panels of 3 rows (the layout is in kernels.c): rows n0 ..< n1 of the row-major fp32 (N, K)
/// matrix src rounded (as bd3_f32_to_bf16) into the packed dst of N·K elements; row n of a packed matrix widened.
void bd3_pack_bf16(bd3_bf16 *dst, const float *src, int N, int K, int n0, int n1);
void bd3_unpack_bf16_row(float *dst, const bd3_bf16 *w, int N, int K, int n);
/// bd3_linear_bf16 on a packed (N, K) matrix: the same outputs, bit for bit. n0 must be a multiple of 3 or ≥ 3⌊N/3⌋.
void bd3_linear_bf16_packed(float *y, int ldy, const float *x, int ldx, const bd3_bf16 *w, const float *b,
                            int M, int K, int N, int n0, int n1);

/// out[i] = gelu(in[i]) (tanh form) with the numbers of the Swift geluRun (no derivative): lanes ≠ 0 the 8-lane
/// formula on blocks of 8 from the start and expf on the rest (fastMathSIMD), lanes = 0 expf on every element.
void bd3_gelu(float *out, const float *in, long n, int lanes);

/// Attention of n query rows over S cached keys/values, one (sequence, head):
///   out[i·ldo + c] = Σ_j softmax_j(scale · q_i·k_j) v_j[c],   j < S (causal: j ≤ S − n + i),  c < d
/// q rows ldq apart, k/v rows ldkv apart; scratch holds min(n, 8)·S floats. Softmax max-subtracted, in fp32 (the AVX2 path
/// for d a multiple of 8 computes exp on 8 lanes, relative error ≤ 2.3e-7).
void bd3_attend(float *out, int ldo, const float *q, int ldq, const float *k, const float *v, int ldkv,
                int n, int S, int d, float scale, int causal, float *scratch);

#ifdef __cplusplus
}
#endif
#endif
