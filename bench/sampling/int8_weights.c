// Would int8 weights pay? The engine's packed-panel product (3 weight rows × up to 4 rows of x, 8-lane FMA chains;
// CKernels tile_bf16p) run with its weights stored as bf16 (widened by a shift) or as int8 with one fp32 scale per
// output (widened by a sign extension and a conversion; W8A32, the activations stay fp32), on one matrix of the
// `small` inference model's size (150774 × 768), split over 2 threads, best of 7 calls.
//
//   clang -O2 bench/sampling/int8_weights.c -lpthread -o int8_weights     (clang, as SwiftPM builds CKernels: gcc
//   compiles these tiles to code up to 2× slower)
//   ./int8_weights M                 M = rows of x (1: the output layer at batch 1; 4, 8: a sampling step, folded step)
//
// It prints ms, GB/s of weights and GFLOP/s for both. A probe, not an engine path: the int8 numbers are not checked.
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
#define AVX2 __attribute__((target("avx2,fma")))
AVX2 static inline __m256 load_i8(const int8_t *p) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p))); }
AVX2 static inline __m256 load_bf16(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// Panels p0 ..< p1 of 3 rows, [K/8][3][8] each (K a multiple of 32 here), as the engine packs bf16.
#define PANELS(NAME, WT, LOAD)                                                                             \
AVX2 static void NAME(float *y, int ldy, const float *x, int ldx, const WT *wp, const float *scale,       \
                      int M, int K, int p0, int p1) {                                                     \
    for (int p = p0; p < p1; p++) {                                                                       \
        const WT *w = wp + (size_t)p * 3 * K;                                                             \
        for (int m = 0; m < M; m += 4) {                                                                  \
            int mr = M - m < 4 ? M - m : 4;                                                               \
            __m256 acc[4][3];                                                                             \
            for (int i = 0; i < 4; i++) for (int j = 0; j < 3; j++) acc[i][j] = _mm256_setzero_ps();     \
            const float *xr[4];                                                                           \
            for (int i = 0; i < 4; i++) xr[i] = x + (size_t)(m + (i < mr ? i : 0)) * ldx;                \
            for (int k = 0; k < K; k += 32) {                                                             \
                const WT *ws = w + (size_t)k * 3;                                                         \
                for (int l = 0; l < 3 * 32 * (int)sizeof(WT); l += 64) _mm_prefetch((const char *)ws + 8192 + l, _MM_HINT_T0); \
                for (int u = 0; u < 4; u++) {                                                             \
                    __m256 wv[3];                                                                         \
                    for (int j = 0; j < 3; j++) wv[j] = LOAD(ws + 24 * u + 8 * j);                        \
                    if (mr == 4) {                                                                        \
                        for (int i = 0; i < 4; i++) {                                                     \
                            __m256 xv = _mm256_loadu_ps(xr[i] + k + 8 * u);                               \
                            for (int j = 0; j < 3; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]); \
                        }                                                                                 \
                    } else {                                                                              \
                        for (int i = 0; i < mr; i++) {                                                    \
                            __m256 xv = _mm256_loadu_ps(xr[i] + k + 8 * u);                               \
                            for (int j = 0; j < 3; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]); \
                        }                                                                                 \
                    }                                                                                     \
                }                                                                                         \
            }                                                                                             \
            for (int i = 0; i < mr; i++) for (int j = 0; j < 3; j++)                                      \
                y[(size_t)(m + i) * ldy + 3 * p + j] = hsum(acc[i][j]) * (scale ? scale[3 * p + j] : 1.f); \
        }                                                                                                 \
    }                                                                                                     \
}
PANELS(panels_i8, int8_t, load_i8)
PANELS(panels_bf16, uint16_t, load_bf16)

typedef struct { float *y; const float *x; const void *w; const float *scale; int M, K, N, p0, p1, int8; } job;
static void *run(void *arg) {
    job *j = arg;
    if (j->int8) panels_i8(j->y, j->N, j->x, j->K, j->w, j->scale, j->M, j->K, j->p0, j->p1);
    else panels_bf16(j->y, j->N, j->x, j->K, j->w, NULL, j->M, j->K, j->p0, j->p1);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2 || atoi(argv[1]) < 1 || atoi(argv[1]) > 64) { fprintf(stderr, "usage: %s M (1 … 64)\n", argv[0]); return 64; }
    int M = atoi(argv[1]), K = 768, N = 150774 / 3 * 3, P = N / 3;
    float *x = malloc(sizeof(float) * M * K), *y = malloc(sizeof(float) * (size_t)M * N), *scale = malloc(sizeof(float) * N);
    if (!x || !y || !scale) { fprintf(stderr, "out of memory\n"); return 1; }
    for (int i = 0; i < M * K; i++) x[i] = 0.01f * (float)(i % 5);
    for (int i = 0; i < N; i++) scale[i] = 0.01f;
    for (int int8 = 0; int8 < 2; int8++) {
        size_t bytes = (size_t)N * K * (int8 ? 1 : 2);
        void *w = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (w == MAP_FAILED) { perror("mmap"); return 1; }
        madvise(w, bytes, MADV_HUGEPAGE);
        for (size_t i = 0; i < bytes; i++) ((uint8_t *)w)[i] = (uint8_t)((i * 7 + 3) & 0x3f);
        double best = 1e30;
        for (int r = 0; r < 7; r++) {
            pthread_t t; job j[2];
            for (int i = 0; i < 2; i++) j[i] = (job){ y, x, w, scale, M, K, N, P * i / 2, P * (i + 1) / 2, int8 };
            double t0 = now();
            pthread_create(&t, NULL, run, &j[1]); run(&j[0]); pthread_join(t, NULL);
            double dt = now() - t0; if (dt < best) best = dt;
        }
        printf("M=%d %s: %.2f ms, %.1f GB/s of weights, %.1f GFLOP/s\n", M, int8 ? "int8" : "bf16", best * 1e3,
               bytes / best / 1e9, 2.0 * M * K * N / best / 1e9);
        munmap(w, bytes);
    }
    return 0;
}
