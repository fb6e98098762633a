// Small-M linear products (see include/bd3kernels.h). The AVX2 path is compiled with a per-function target
// attribute so the library builds for any x86-64 (and any other CPU: the portable path is plain C) and the
// choice is made at run time.
#include "bd3kernels.h"
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define BD3_X86 1
#include <immintrin.h>
#endif

// MARK: conversions

static inline bd3_bf16 f32_to_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bd3_bf16)((u >> 16) | 0x0040u);   // NaN: keep it quiet
    u += 0x7fffu + ((u >> 16) & 1u);                                                 // round to nearest even
    return (bd3_bf16)(u >> 16);
}
static inline float bf16_to_f32(bd3_bf16 h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }

void bd3_f32_to_bf16(bd3_bf16 *dst, const float *src, size_t n) { for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]); }
void bd3_bf16_to_f32(float *dst, const bd3_bf16 *src, size_t n) { for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]); }

void bd3_f16_to_f32(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t h = src[i], sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
        if (e == 0x1f) u = sign | 0x7f800000u | (m << 13);                    // inf / NaN
        else if (e != 0) u = sign | ((e + 112) << 23) | (m << 13);            // normal
        else if (m == 0) u = sign;                                            // ±0
        else {                                                                // subnormal: normalise
            e = 113;
            while (!(m & 0x400)) { m <<= 1; e--; }
            u = sign | (e << 23) | ((m & 0x3ff) << 13);
        }
        memcpy(dst + i, &u, 4);
    }
}

// MARK: bf16 panels
// An (N, K) bf16 matrix packed for the products: P = ⌊N/3⌋ panels of 3 rows; panel p at offset 3pK holds, for each
// step s < ⌊K/8⌋, the 8 weights k = 8s ..< 8s+8 of its rows 0, 1, 2 in turn (24 at 3pK + 24s), then the K mod 8 last
// weights of row 0, 1, 2 (at 3pK + 3·8⌊K/8⌋ + j·(K mod 8)); rows 3P ..< N follow row-major (row n at nK).
static inline size_t packed_at(int N, int K, int n, int k) {
    int P3 = N / 3 * 3, K8 = K / 8 * 8;
    if (n >= P3) return (size_t)n * K + k;
    size_t base = (size_t)(n / 3) * 3 * K; int j = n % 3;
    if (k < K8) return base + (size_t)(k / 8) * 24 + (size_t)j * 8 + k % 8;
    return base + (size_t)K8 * 3 + (size_t)j * (K - K8) + (k - K8);
}
void bd3_pack_bf16(bd3_bf16 *dst, const float *src, int N, int K, int n0, int n1) {
    for (int n = n0; n < n1; n++) for (int k = 0; k < K; k++) dst[packed_at(N, K, n, k)] = f32_to_bf16(src[(size_t)n * K + k]);
}
void bd3_unpack_bf16_row(float *dst, const bd3_bf16 *w, int N, int K, int n) {
    for (int k = 0; k < K; k++) dst[k] = bf16_to_f32(w[packed_at(N, K, n, k)]);
}

// MARK: portable path (also the reference order for the tails of the vector paths)

static void linear_f32_portable(float *y, int ldy, const float *x, int ldx, const float *w, const float *b,
                                int M, int K, int n0, int n1) {
    for (int n = n0; n < n1; n++) {
        const float *wr = w + (size_t)n * K;
        for (int m = 0; m < M; m++) {
            const float *xr = x + (size_t)m * ldx;
            float acc = 0;
            for (int k = 0; k < K; k++) acc += xr[k] * wr[k];
            y[(size_t)m * ldy + n] = acc + (b ? b[n] : 0.f);
        }
    }
}

static void linear_bf16_portable(float *y, int ldy, const float *x, int ldx, const bd3_bf16 *w, const float *b,
                                 int M, int K, int n0, int n1) {
    float row[4096];
    for (int n = n0; n < n1; n++) {
        const bd3_bf16 *wr = w + (size_t)n * K;
        for (int k0 = 0; k0 < K; k0 += 4096) {
            int kc = K - k0 < 4096 ? K - k0 : 4096;
            for (int k = 0; k < kc; k++) row[k] = bf16_to_f32(wr[k0 + k]);
            for (int m = 0; m < M; m++) {
                const float *xr = x + (size_t)m * ldx + k0;
                float acc = 0;
                for (int k = 0; k < kc; k++) acc += xr[k] * row[k];
                float *yy = y + (size_t)m * ldy + n;
                *yy = (k0 == 0 ? (b ? b[n] : 0.f) : *yy) + acc;
            }
        }
    }
}

// MARK: AVX2 + FMA path
// A tile is NR weight rows × MR rows of x over k in steps of 8 (NR·MR accumulators; the tiles used keep every
// accumulator, weight vector and x vector in the 16 ymm registers: 3 × 4 for M ≥ 4, 4 × ≤ 2, 8 × 1), each weight
// vector loaded (for bf16 widened) once per MR rows of x. While a tile runs, the next tile's weight rows (the
// NR rows that follow: weights are row-major, so they are contiguous) are prefetched a cache line per step:
// a tile's rows are short interleaved streams that the hardware prefetchers pick up too late, and with 4 rows
// of x the loads otherwise stall on memory (measured: 13.7 GB/s on one core for M = 4 before, bench/sampling).

#ifdef BD3_X86
#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline __m256 load_w_f32(const float *p) { return _mm256_loadu_ps(p); }
AVX2 static inline __m256 load_w_bf16(const bd3_bf16 *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// One tile: NR weight rows (n .. n+NR) × MR rows of x (m .. m+MR); NR ≤ 8, MR ≤ 4 are compile-time after inlining.
// LINE = weight elements per 64-byte cache line (the prefetch stride).
#define TILE_STEP(LOADW, kk) {                                                                            \
        __m256 wv[8];                                                                                     \
        for (int j = 0; j < NR; j++) wv[j] = LOADW(wr[j] + (kk));                                         \
        for (int i = 0; i < MR; i++) {                                                                    \
            __m256 xv = _mm256_loadu_ps(xr[i] + (kk));                                                    \
            for (int j = 0; j < NR; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);               \
        }                                                                                                 \
    }
#define TILE_BODY(LOADW, WT, LINE)                                                                        \
    __m256 acc[4][8];                                                                                     \
    for (int i = 0; i < MR; i++) for (int j = 0; j < NR; j++) acc[i][j] = _mm256_setzero_ps();           \
    const WT *wr[8]; for (int j = 0; j < NR; j++) wr[j] = w + (size_t)(n + j) * K;                        \
    const float *xr[4]; for (int i = 0; i < MR; i++) xr[i] = x + (size_t)(m + i) * ldx;                   \
    const size_t ahead = (size_t)NR * K;                                                                  \
    int k = 0;                                                                                            \
    for (; k + LINE <= K; k += LINE) {                  /* one cache line of each weight row per pass */  \
        for (int j = 0; j < NR; j++) _mm_prefetch((const char *)(wr[j] + ahead + k), _MM_HINT_T0);        \
        for (int u = 0; u < LINE; u += 8) TILE_STEP(LOADW, k + u)                                         \
    }                                                                                                     \
    for (; k + 8 <= K; k += 8) TILE_STEP(LOADW, k)                                                        \
    for (int i = 0; i < MR; i++) for (int j = 0; j < NR; j++) {                                           \
        float s = hsum(acc[i][j]);                                                                        \
        for (int kk = k; kk < K; kk++) s += xr[i][kk] * WCONV(wr[j][kk]);                                 \
        y[(size_t)(m + i) * ldy + n + j] = s + (b ? b[n + j] : 0.f);                                      \
    }

#define WCONV(v) (v)
AVX2 static inline __attribute__((always_inline)) void tile_f32(float *y, int ldy, const float *x, int ldx, const float *w,
        const float *b, int K, int n, int m, const int NR, const int MR) { TILE_BODY(load_w_f32, float, 16) }
#undef WCONV
#define WCONV(v) bf16_to_f32(v)
AVX2 static inline __attribute__((always_inline)) void tile_bf16(float *y, int ldy, const float *x, int ldx, const bd3_bf16 *w,
        const float *b, int K, int n, int m, const int NR, const int MR) { TILE_BODY(load_w_bf16, bd3_bf16, 32) }
#undef WCONV

// Rows of x are taken MB at a time (MB rows of x stay in L2 while the weights stream past them): the weights are
// read from memory once per call for M ≤ MB. Every output is the same chain of 8-lane FMAs over k, reduced the
// same way, whatever the tile or block: a row's result does not depend on the other rows (batch-size independent
// sampling), nor on the tile shapes (these tiles give the bits the earlier 4 × 3 tiles gave).
#define MB 48
#define LINEAR_AVX2(NAME, TILE, WT)                                                                        \
AVX2 static void NAME(float *y, int ldy, const float *x, int ldx, const WT *w, const float *b,             \
                      int M, int K, int n0, int n1) {                                                      \
    for (int mb = 0; mb < M; mb += MB) {                                                                   \
    int me = M - mb < MB ? M : mb + MB, rows = me - mb, n = n0;                                            \
    if (rows == 1) {                                                                                       \
        for (; n + 8 <= n1; n += 8) TILE(y, ldy, x, ldx, w, b, K, n, mb, 8, 1);                            \
        for (; n < n1; n++) TILE(y, ldy, x, ldx, w, b, K, n, mb, 1, 1);                                    \
    } else if (rows == 2) {                                                                                \
        for (; n + 4 <= n1; n += 4) TILE(y, ldy, x, ldx, w, b, K, n, mb, 4, 2);                            \
        for (; n < n1; n++) TILE(y, ldy, x, ldx, w, b, K, n, mb, 1, 2);                                    \
    } else {                                                                                               \
        for (; n + 3 <= n1; n += 3) {                                                                      \
            int m = mb;                                                                                    \
            for (; m + 4 <= me; m += 4) TILE(y, ldy, x, ldx, w, b, K, n, m, 3, 4);                         \
            if (me - m == 3) TILE(y, ldy, x, ldx, w, b, K, n, m, 3, 3);                                    \
            else if (me - m == 2) TILE(y, ldy, x, ldx, w, b, K, n, m, 3, 2);                               \
            else if (me - m == 1) TILE(y, ldy, x, ldx, w, b, K, n, m, 3, 1);                               \
        }                                                                                                  \
        for (; n < n1; n++) {                                                                              \
            int m = mb;                                                                                    \
            for (; m + 4 <= me; m += 4) TILE(y, ldy, x, ldx, w, b, K, n, m, 1, 4);                         \
            for (; m < me; m++) TILE(y, ldy, x, ldx, w, b, K, n, m, 1, 1);                                 \
        }                                                                                                  \
    }                                                                                                      \
    }                                                                                                      \
}
LINEAR_AVX2(linear_f32_avx2, tile_f32, float)
// bf16: every weight vector widened in registers, once per tile of up to 4 rows of x. (Widening groups of rows
// into an fp32 panel first, for many rows, measured slower in the engine at batch 16: 148–156 against 136–139 ms
// per forward, bench-engine-forward.)
LINEAR_AVX2(linear_bf16_avx2, tile_bf16, bd3_bf16)


// bf16 weights packed in panels of 3 rows (see bd3_pack_bf16): a tile of the 3 rows of a panel reads one
// contiguous stream (24 weights per step of 8 over k) instead of 3 rows 2K bytes apart, so the hardware and software
// prefetches run ahead of a single sequential stream. Measured on a 150774 × 768 matrix, 2 threads: 1 row of x
// 24.7 → 33–38 GB/s, 4 rows 23.5 → 27–33 GB/s (bench/sampling/linear_bw.c `packed`). The arithmetic of every
// output is the row-major tile's (same 8-lane chain over k, same reduction, same tail order): bit-identical.
#define PK_AHEAD 4096                   /* weights prefetched ahead in the packed stream (8 KB) */
// One panel (3 rows, bf16 in the packed step order) × MR rows of x; the K mod 8 tail from the packed tail. pf: prefetch
// PK_AHEAD weights ahead in the stream. (Widening a panel once into fp32 for more than 4 rows of x measured slower:
// 8 rows 12.9 → 18–23 ms, 64 rows 98 → 101 ms on the matrix of bench/sampling/linear_bw.c.)
#define TILE_P(NAME, WT, LOADW)                                                                            \
AVX2 static inline __attribute__((always_inline)) void NAME(float *y, int ldy, const float *x, int ldx,   \
        const WT *panel, const bd3_bf16 *tail, const float *b, int K, int n, int m, const int MR, const int pf) { \
    const int K8 = K / 8 * 8, kt = K - K8;                                                                \
    __m256 acc[4][3];                                                                                     \
    for (int i = 0; i < MR; i++) for (int j = 0; j < 3; j++) acc[i][j] = _mm256_setzero_ps();            \
    const float *xr[4]; for (int i = 0; i < MR; i++) xr[i] = x + (size_t)(m + i) * ldx;                   \
    int k = 0;                                                                                            \
    for (; k + 32 <= K8; k += 32) {      /* 4 steps: 96 weights, 3 cache lines of a bf16 stream */         \
        const WT *ws = panel + (size_t)k * 3;                                                             \
        if (pf) for (int l = 0; l < 3; l++) _mm_prefetch((const char *)(ws + PK_AHEAD + 32 * l), _MM_HINT_T0); \
        for (int u = 0; u < 4; u++) {                                                                     \
            __m256 wv[3];                                                                                 \
            for (int j = 0; j < 3; j++) wv[j] = LOADW(ws + 24 * u + 8 * j);                               \
            for (int i = 0; i < MR; i++) {                                                                \
                __m256 xv = _mm256_loadu_ps(xr[i] + k + 8 * u);                                           \
                for (int j = 0; j < 3; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);            \
            }                                                                                             \
        }                                                                                                 \
    }                                                                                                     \
    for (; k < K8; k += 8) {                                                                              \
        const WT *ws = panel + (size_t)k * 3;                                                             \
        __m256 wv[3];                                                                                     \
        for (int j = 0; j < 3; j++) wv[j] = LOADW(ws + 8 * j);                                            \
        for (int i = 0; i < MR; i++) {                                                                    \
            __m256 xv = _mm256_loadu_ps(xr[i] + k);                                                       \
            for (int j = 0; j < 3; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);                \
        }                                                                                                 \
    }                                                                                                     \
    for (int i = 0; i < MR; i++) for (int j = 0; j < 3; j++) {                                            \
        float s = hsum(acc[i][j]);                                                                        \
        for (int kk = K8; kk < K; kk++) s += xr[i][kk] * bf16_to_f32(tail[j * kt + kk - K8]);             \
        y[(size_t)(m + i) * ldy + n + j] = s + (b ? b[n + j] : 0.f);                                      \
    }                                                                                                     \
}
TILE_P(tile_bf16p, bd3_bf16, load_w_bf16)

// Columns n0 ..< n1 (n0 on a panel boundary or in the row-major rows after the last panel).
AVX2 static void linear_bf16p_avx2(float *y, int ldy, const float *x, int ldx, const bd3_bf16 *w, const float *b,
                                   int M, int K, int N, int n0, int n1) {
    const int P3 = N / 3 * 3, K8 = K / 8 * 8;
    for (int mb = 0; mb < M; mb += MB) {
        int me = M - mb < MB ? M : mb + MB, n = n0;
        for (; n + 3 <= n1 && n + 3 <= P3; n += 3) {
            const bd3_bf16 *panel = w + (size_t)n * K, *tail = panel + (size_t)K8 * 3;
            int m = mb;
            for (; m + 4 <= me; m += 4) tile_bf16p(y, ldy, x, ldx, panel, tail, b, K, n, m, 4, 1);
            if (me - m == 3) tile_bf16p(y, ldy, x, ldx, panel, tail, b, K, n, m, 3, 1);
            else if (me - m == 2) tile_bf16p(y, ldy, x, ldx, panel, tail, b, K, n, m, 2, 1);
            else if (me - m == 1) tile_bf16p(y, ldy, x, ldx, panel, tail, b, K, n, m, 1, 1);
        }
        for (; n < n1; n++) {             /* the row-major rows after the last panel */
            int m = mb;
            for (; m + 4 <= me; m += 4) tile_bf16(y, ldy, x, ldx, w, b, K, n, m, 1, 4);
            for (; m < me; m++) tile_bf16(y, ldy, x, ldx, w, b, K, n, m, 1, 1);
        }
    }
}
#endif

// MARK: attention over a cache (one sequence, one head)
// Dot products over d and the weighted sum of values are short loops the compiler vectorises; the AVX2 copy is
// the same source compiled for AVX2 + FMA (sums may be reassociated into vector lanes: deterministic for a build,
// and each query row's result depends only on that row and the cache). For the few query rows of a sampling chunk this avoids sgemm's packing
// of every key, which costs more than the products.
#include <math.h>
#define ATTEND_BODY                                                                                        \
    _Pragma("clang fp reassociate(on)")                                                                    \
    for (int i = 0; i < n; i++) {                                                                          \
        const float *qi = q + (size_t)i * ldq;                                                             \
        int last = causal ? S - n + i : S - 1;                                                             \
        float mx = -INFINITY;                                                                              \
        for (int j = 0; j <= last; j++) {                                                                  \
            const float *kj = k + (size_t)j * ldkv;                                                        \
            float s = 0;                                                                                   \
            for (int c = 0; c < d; c++) s += qi[c] * kj[c];                                                \
            s *= scale; scratch[j] = s; if (s > mx) mx = s;                                                \
        }                                                                                                  \
        float sum = 0;                                                                                     \
        for (int j = 0; j <= last; j++) { float e = expf(scratch[j] - mx); scratch[j] = e; sum += e; }      \
        float inv = 1.f / sum;                                                                             \
        float *oi = out + (size_t)i * ldo;                                                                 \
        for (int c = 0; c < d; c++) oi[c] = 0;                                                             \
        for (int j = 0; j <= last; j++) {                                                                  \
            const float *vj = v + (size_t)j * ldkv; float p = scratch[j] * inv;                            \
            for (int c = 0; c < d; c++) oi[c] += p * vj[c];                                                \
        }                                                                                                  \
    }

static void attend_portable(float *out, int ldo, const float *q, int ldq, const float *k, const float *v, int ldkv,
                            int n, int S, int d, float scale, int causal, float *scratch) { ATTEND_BODY }
#ifdef BD3_X86
AVX2 static void attend_avx2_any(float *out, int ldo, const float *q, int ldq, const float *k, const float *v, int ldkv,
                                 int n, int S, int d, float scale, int causal, float *scratch) { ATTEND_BODY }

// exp on 8 lanes: x = m·ln2 + r (|r| ≤ ln2/2, ln2 split in two for the reduction), e^r by its degree-6 Taylor
// polynomial (relative error ≤ 2.3e-7 against exp in double over [−87, 0]), times 2^m through the exponent bits; inputs
// are ≤ 0 here (scores minus their max), below −87.3 the result is 0 as expf's rounds to (or below) the denormals.
AVX2 static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 m = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(m, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(m, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(m), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// Head size a multiple of 8 (the models' 32, 64, 128): the scores of 8 keys at a time, their 8 lane-sums reduced
// together by a tree of horizontal adds (not one reduction per key), exp on 8 lanes, and the values accumulated
// in d/8 registers per query with the normalisation applied once at the end.
// The query rows of a chunk (up to ATT_ROWS at a time) share every key and value load: each 8-key group of k is read
// once from L2 and reused from L1 by all rows, and values go through in blocks of ATT_KEYS keys, for groups of
// rows whose accumulators fit the registers together (2 rows at d = 32: 8 independent chains instead of 4, which
// were bound by the FMA latency). Each row's arithmetic — every product, every sum and its order — is the one a
// single-row call performs, so a row's result depends only on that row and the cache (bit for bit: tested).
#define ATT_ROWS 8
#define ATT_KEYS 64
AVX2 static inline __m256 scores8(const __m256 *qv, int dv, const float *k, int ldkv, __m256 vs) {
    // Each key's sum runs over c in order; the 8 keys advance together (8 independent chains: one key at a time
    // waited on the FMA latency).
    __m256 a[8];
    for (int t = 0; t < 8; t++) a[t] = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k + (size_t)t * ldkv));
    for (int c = 1; c < dv; c++) {
        __m256 qc = qv[c];
        for (int t = 0; t < 8; t++) a[t] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(k + (size_t)t * ldkv + 8 * c), a[t]);
    }
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    __m256 sc = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
    return _mm256_mul_ps(sc, vs);
}

// o[r][c] += p_r[j] v_j[c] for j in [j0, j1), rows r < G (G·dv accumulators in registers; G, DV compile-time).
#define ATT_PV(G, DV)                                                                                      \
    AVX2 static inline void pv_##G##_##DV(float *const *o, const float *const *p, const float *v, int ldkv, int j0, int j1) { \
        __m256 acc[G][DV];                                                                                 \
        for (int r = 0; r < G; r++) for (int c = 0; c < DV; c++) acc[r][c] = _mm256_loadu_ps(o[r] + 8 * c); \
        for (int j = j0; j < j1; j++) {                                                                    \
            const float *vj = v + (size_t)j * ldkv;                                                        \
            __m256 vv[DV];                                                                                 \
            for (int c = 0; c < DV; c++) vv[c] = _mm256_loadu_ps(vj + 8 * c);                             \
            for (int r = 0; r < G; r++) {                                                                  \
                __m256 pr = _mm256_broadcast_ss(p[r] + j);                                                 \
                for (int c = 0; c < DV; c++) acc[r][c] = _mm256_fmadd_ps(pr, vv[c], acc[r][c]);            \
            }                                                                                              \
        }                                                                                                  \
        for (int r = 0; r < G; r++) for (int c = 0; c < DV; c++) _mm256_storeu_ps(o[r] + 8 * c, acc[r][c]); \
    }
ATT_PV(1, 1) ATT_PV(4, 1) ATT_PV(1, 2) ATT_PV(2, 2) ATT_PV(1, 4) ATT_PV(2, 4) ATT_PV(1, 8)

// Any row count and head size: one row at a time, d/8 accumulators (d ≤ 128).
AVX2 static void pv_any(float *o, const float *p, const float *v, int ldkv, int j0, int j1, int dv) {
    __m256 acc[16];
    for (int c = 0; c < dv; c++) acc[c] = _mm256_loadu_ps(o + 8 * c);
    for (int j = j0; j < j1; j++) {
        const float *vj = v + (size_t)j * ldkv;
        __m256 pr = _mm256_broadcast_ss(p + j);
        for (int c = 0; c < dv; c++) acc[c] = _mm256_fmadd_ps(pr, _mm256_loadu_ps(vj + 8 * c), acc[c]);
    }
    for (int c = 0; c < dv; c++) _mm256_storeu_ps(o + 8 * c, acc[c]);
}

// Rows [i0, i0 + m) of the chunk (m ≤ ATT_ROWS); scratch holds m·S floats (row r's scores/weights at r·S).
// dv = d/8 is a compile-time constant for the models' head sizes 32 and 64 (the query vectors then stay in registers
// and the loops over d unroll: 10–20 % faster in bench/sampling/attend.c; the same instructions per row, same bits).
AVX2 static inline __attribute__((always_inline)) void attend_rows_dv(float *out, int ldo, const float *q, int ldq,
        const float *k, const float *v, int ldkv, int n, int S, int d, float scale, int causal, float *scratch,
        int i0, int m, const int dv) {
    const __m256 vs = _mm256_set1_ps(scale);
    int cnt[ATT_ROWS], cmax = 0;
    __m256 mx8[ATT_ROWS], sum8[ATT_ROWS];
    for (int r = 0; r < m; r++) {
        cnt[r] = (causal ? S - n + i0 + r : S - 1) + 1;
        if (cnt[r] > cmax) cmax = cnt[r];
        mx8[r] = _mm256_set1_ps(-INFINITY);
    }
    // Scores: 8 keys at a time for every row that has all 8 (the rest below, one key at a time as before).
    for (int j = 0; j + 8 <= cmax; j += 8) {
        for (int r = 0; r < m; r++) {
            if (j + 8 > cnt[r]) continue;
            const float *qi = q + (size_t)(i0 + r) * ldq;
            __m256 qv[16];
            for (int c = 0; c < dv; c++) qv[c] = _mm256_loadu_ps(qi + 8 * c);
            __m256 sc = scores8(qv, dv, k + (size_t)j * ldkv, ldkv, vs);
            _mm256_storeu_ps(scratch + (size_t)r * S + j, sc);
            mx8[r] = _mm256_max_ps(mx8[r], sc);
        }
    }
    for (int r = 0; r < m; r++) {
        float *sr = scratch + (size_t)r * S;
        const float *qi = q + (size_t)(i0 + r) * ldq;
        float t[8]; _mm256_storeu_ps(t, mx8[r]);
        float mr = -INFINITY;
        for (int u = 0; u < 8; u++) if (t[u] > mr) mr = t[u];
        for (int j = cnt[r] / 8 * 8; j < cnt[r]; j++) {
            const float *kj = k + (size_t)j * ldkv;
            __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(qi), _mm256_loadu_ps(kj));
            for (int c = 1; c < dv; c++) acc = _mm256_fmadd_ps(_mm256_loadu_ps(qi + 8 * c), _mm256_loadu_ps(kj + 8 * c), acc);
            float s = hsum(acc) * scale;
            sr[j] = s; if (s > mr) mr = s;
        }
        // Weights: exp(s − max) on 8 lanes, unnormalised; their sum.
        const __m256 vmx = _mm256_set1_ps(mr);
        __m256 s8 = _mm256_setzero_ps();
        int j = 0;
        for (; j + 8 <= cnt[r]; j += 8) {
            __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sr + j), vmx));
            _mm256_storeu_ps(sr + j, e);
            s8 = _mm256_add_ps(s8, e);
        }
        if (j < cnt[r]) {
            float tt[8] = {0};
            for (int u = 0; u < cnt[r] - j; u++) tt[u] = sr[j + u] - mr;
            __m256 e = exp8(_mm256_loadu_ps(tt));
            __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(cnt[r] - j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
            e = _mm256_and_ps(e, keep);
            _mm256_storeu_ps(tt, e);
            for (int u = 0; u < cnt[r] - j; u++) sr[j + u] = tt[u];
            s8 = _mm256_add_ps(s8, e);
        }
        sum8[r] = s8;
        float *oi = out + (size_t)(i0 + r) * ldo;
        for (int c = 0; c < d; c++) oi[c] = 0;
    }
    // Weighted values: keys in blocks of ATT_KEYS (the block's values stay in L1 for every group of rows), rows in
    // groups of G; within a group the keys every row has go together, then each row's own remaining keys.
    const int G = dv == 1 ? 4 : dv <= 4 ? 2 : 1;
    for (int jb = 0; jb < cmax; jb += ATT_KEYS) {
        int je = jb + ATT_KEYS < cmax ? jb + ATT_KEYS : cmax;
        for (int r0 = 0; r0 < m; r0 += G) {
            int g = m - r0 < G ? m - r0 : G;
            int common = je;
            for (int r = r0; r < r0 + g; r++) if (cnt[r] < common) common = cnt[r];
            if (common < jb) common = jb;
            float *o[4]; const float *p[4];
            for (int r = 0; r < g; r++) { o[r] = out + (size_t)(i0 + r0 + r) * ldo; p[r] = scratch + (size_t)(r0 + r) * S; }
            if (g == G && common > jb) {
                if (G == 4) pv_4_1(o, p, v, ldkv, jb, common);
                else if (G == 2 && dv == 2) pv_2_2(o, p, v, ldkv, jb, common);
                else if (G == 2 && dv == 4) pv_2_4(o, p, v, ldkv, jb, common);
                else if (G == 2) { for (int r = 0; r < 2; r++) pv_any(o[r], p[r], v, ldkv, jb, common, dv); }
                else if (dv == 8) pv_1_8(o, p, v, ldkv, jb, common);
                else pv_any(o[0], p[0], v, ldkv, jb, common, dv);
            } else common = jb;
            for (int r = 0; r < g; r++) {
                int end = cnt[r0 + r] < je ? cnt[r0 + r] : je;
                if (end <= common) continue;
                if (dv == 1) pv_1_1(o + r, p + r, v, ldkv, common, end);
                else if (dv == 2) pv_1_2(o + r, p + r, v, ldkv, common, end);
                else if (dv == 4) pv_1_4(o + r, p + r, v, ldkv, common, end);
                else if (dv == 8) pv_1_8(o + r, p + r, v, ldkv, common, end);
                else pv_any(o[r], p[r], v, ldkv, common, end, dv);
            }
        }
    }
    for (int r = 0; r < m; r++) {
        __m256 inv = _mm256_set1_ps(1.f / hsum(sum8[r]));
        float *oi = out + (size_t)(i0 + r) * ldo;
        for (int c = 0; c < dv; c++) _mm256_storeu_ps(oi + 8 * c, _mm256_mul_ps(_mm256_loadu_ps(oi + 8 * c), inv));
    }
}

AVX2 static void attend_avx2_d8(float *out, int ldo, const float *q, int ldq, const float *k, const float *v, int ldkv,
                                int n, int S, int d, float scale, int causal, float *scratch) {
    for (int i0 = 0; i0 < n; i0 += ATT_ROWS) {
        int m = n - i0 < ATT_ROWS ? n - i0 : ATT_ROWS;
        if (d == 32) attend_rows_dv(out, ldo, q, ldq, k, v, ldkv, n, S, d, scale, causal, scratch, i0, m, 4);
        else if (d == 64) attend_rows_dv(out, ldo, q, ldq, k, v, ldkv, n, S, d, scale, causal, scratch, i0, m, 8);
        else attend_rows_dv(out, ldo, q, ldq, k, v, ldkv, n, S, d, scale, causal, scratch, i0, m, d / 8);
    }
}

AVX2 static void attend_avx2(float *out, int ldo, const float *q, int ldq, const float *k, const float *v, int ldkv,
                             int n, int S, int d, float scale, int causal, float *scratch) {
    if (d % 8 == 0 && d <= 128) attend_avx2_d8(out, ldo, q, ldq, k, v, ldkv, n, S, d, scale, causal, scratch);
    else attend_avx2_any(out, ldo, q, ldq, k, v, ldkv, n, S, d, scale, causal, scratch);
}
#endif

// MARK: GELU (tanh form) for inference
// The numbers of Model/Layers.swift geluRun without a derivative, bit for bit: in blocks of 8 from the start the lane
// formula of FastMath.swift geluSIMD / expSIMD (Cephes expf polynomial), the last n mod 8 through expf; every
// product and sum in the same order and none contracted into an FMA. The Swift SIMD8 code compiles to SSE (the
// module targets baseline x86-64), one 8-lane GELU as two 4-lane halves and a division each; here it runs on AVX2.
#pragma clang fp contract(off)
static inline float gelu_lane(float x) {                 // geluSIMD's arithmetic on one lane
    float x2 = x * x, u = 0.7978845608028654f * (x + 0.044715f * x2 * x), v = u + u;
    v = v < -87.33f ? -87.33f : v; v = v > 88.72f ? 88.72f : v;
    const float magic = 12582912.f;
    float fx = (v * 1.44269504088896341f + magic) - magic;
    float r = v - fx * 0.693359375f;
    r = r + fx * 2.12194440e-4f;
    float z = r * r, y = 1.9875691500E-4f;
    y = y * r + 1.3981999507E-3f; y = y * r + 8.3334519073E-3f; y = y * r + 4.1665795894E-2f;
    y = y * r + 1.6666665459E-1f; y = y * r + 5.0000001201E-1f;
    y = y * z + r + 1.f;
    float m = fx + magic; int32_t n; memcpy(&n, &m, 4); n -= 0x4B400000;
    int32_t eb = (n + 127) << 23; float e; memcpy(&e, &eb, 4);
    float t = 1.f - 2.f / (1.f + y * e);
    return 0.5f * x * (1.f + t);
}
static inline float gelu_scalar(float x) {               // geluRun's tail (fastTanh through expf)
    float t = 1.f - 2.f / (1.f + expf(2.f * (0.7978845608028654f * (x + 0.044715f * x * x * x))));
    return 0.5f * x * (1.f + t);
}
#ifdef BD3_X86
AVX2 static void gelu_avx2(float *out, const float *in, long n8) {
    const __m256 k = _mm256_set1_ps(0.7978845608028654f), c = _mm256_set1_ps(0.044715f), one = _mm256_set1_ps(1.f);
    const __m256 half = _mm256_set1_ps(0.5f), two = _mm256_set1_ps(2.f), magic = _mm256_set1_ps(12582912.f);
    for (long i = 0; i < n8; i += 8) {
        __m256 x = _mm256_loadu_ps(in + i), x2 = _mm256_mul_ps(x, x);
        __m256 u = _mm256_mul_ps(k, _mm256_add_ps(x, _mm256_mul_ps(_mm256_mul_ps(c, x2), x)));
        __m256 v = _mm256_add_ps(u, u);
        v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-87.33f)), _mm256_set1_ps(88.72f));
        __m256 fx = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)), magic), magic);
        __m256 r = _mm256_sub_ps(v, _mm256_mul_ps(fx, _mm256_set1_ps(0.693359375f)));
        r = _mm256_add_ps(r, _mm256_mul_ps(fx, _mm256_set1_ps(2.12194440e-4f)));
        __m256 z = _mm256_mul_ps(r, r), y = _mm256_set1_ps(1.9875691500E-4f);
        y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(1.3981999507E-3f));
        y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(8.3334519073E-3f));
        y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(4.1665795894E-2f));
        y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(1.6666665459E-1f));
        y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(5.0000001201E-1f));
        y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y, z), r), one);
        __m256i nn = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(fx, magic)), _mm256_set1_epi32(0x4B400000));
        __m256 e = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(nn, _mm256_set1_epi32(127)), 23));
        __m256 t = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(one, _mm256_mul_ps(y, e))));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, t)));
    }
}
#endif
void bd3_gelu(float *out, const float *in, long n, int lanes) {
    long n8 = lanes ? n / 8 * 8 : 0, i = 0;
#ifdef BD3_X86
    if (n8 > 0 && bd3_isa() == BD3_ISA_AVX2) { gelu_avx2(out, in, n8); i = n8; }
#endif
    for (; i < n8; i++) out[i] = gelu_lane(in[i]);
    for (; i < n; i++) out[i] = gelu_scalar(in[i]);
}
#pragma clang fp contract(on)

// MARK: dispatch

static int chosen = -1;

// The portable product on packed weights: each row widened (as linear_bf16_portable does from row-major) and the
// same sums in the same order.
static void linear_bf16p_portable(float *y, int ldy, const float *x, int ldx, const bd3_bf16 *w, const float *b,
                                  int M, int K, int N, int n0, int n1) {
    float row[4096];
    for (int n = n0; n < n1; n++) {
        for (int k0 = 0; k0 < K; k0 += 4096) {
            int kc = K - k0 < 4096 ? K - k0 : 4096;
            for (int k = 0; k < kc; k++) row[k] = bf16_to_f32(w[packed_at(N, K, n, k0 + k)]);
            for (int m = 0; m < M; m++) {
                const float *xr = x + (size_t)m * ldx + k0;
                float acc = 0;
                for (int k = 0; k < kc; k++) acc += xr[k] * row[k];
                float *yy = y + (size_t)m * ldy + n;
                *yy = (k0 == 0 ? (b ? b[n] : 0.f) : *yy) + acc;
            }
        }
    }
}

int bd3_isa_available(void) {
#ifdef BD3_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return BD3_ISA_AVX2;
#endif
    return BD3_ISA_PORTABLE;
}
int bd3_isa(void) { if (chosen < 0) chosen = bd3_isa_available(); return chosen; }
void bd3_set_isa(int isa) {
    int best = bd3_isa_available();
    chosen = isa < 0 ? best : (isa > best ? best : isa);
}

void bd3_linear_f32(float *y, int ldy, const float *x, int ldx, const float *w, const float *b, int M, int K, int n0, int n1) {
    if (M <= 0 || n1 <= n0) return;
#ifdef BD3_X86
    if (bd3_isa() == BD3_ISA_AVX2) { linear_f32_avx2(y, ldy, x, ldx, w, b, M, K, n0, n1); return; }
#endif
    linear_f32_portable(y, ldy, x, ldx, w, b, M, K, n0, n1);
}
void bd3_attend(float *out, int ldo, const float *q, int ldq, const float *k, const float *v, int ldkv,
                int n, int S, int d, float scale, int causal, float *scratch) {
    if (n <= 0 || S <= 0) return;
#ifdef BD3_X86
    if (bd3_isa() == BD3_ISA_AVX2) { attend_avx2(out, ldo, q, ldq, k, v, ldkv, n, S, d, scale, causal, scratch); return; }
#endif
    attend_portable(out, ldo, q, ldq, k, v, ldkv, n, S, d, scale, causal, scratch);
}

void bd3_linear_bf16(float *y, int ldy, const float *x, int ldx, const bd3_bf16 *w, const float *b, int M, int K, int n0, int n1) {
    if (M <= 0 || n1 <= n0) return;
#ifdef BD3_X86
    if (bd3_isa() == BD3_ISA_AVX2) { linear_bf16_avx2(y, ldy, x, ldx, w, b, M, K, n0, n1); return; }
#endif
    linear_bf16_portable(y, ldy, x, ldx, w, b, M, K, n0, n1);
}
void bd3_linear_bf16_packed(float *y, int ldy, const float *x, int ldx, const bd3_bf16 *w, const float *b,
                            int M, int K, int N, int n0, int n1) {
    if (M <= 0 || n1 <= n0) return;
#ifdef BD3_X86
    if (bd3_isa() == BD3_ISA_AVX2) { linear_bf16p_avx2(y, ldy, x, ldx, w, b, M, K, N, n0, n1); return; }
#endif
    linear_bf16p_portable(y, ldy, x, ldx, w, b, M, K, N, n0, n1);
}
