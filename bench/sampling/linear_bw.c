// Weight-streaming rate of the CKernels small-M products (bd3_linear_f32 / bd3_linear_bf16) on one matrix far larger
// than the caches, against a plain read of the same bytes: how close a product of M rows comes to the bandwidth.
//
//   clang -O2 -I Sources/CKernels/include bench/sampling/linear_bw.c Sources/CKernels/kernels.c Sources/CKernels/pool.c \
//      -lpthread -lm -o linear_bw
//   ./linear_bw M THREADS [bf16 | packed] [huge] [K] [N]   M = 0: the plain read (fp32); defaults K = 768, N = 150774
//   packed: bf16 in the 3-row panels the engine stores (bd3_linear_bf16_packed)
//
// The default matrix (150774 × 768, 463 MB fp32) has the inference model's weight bytes; output columns split over
// THREADS threads as the engine splits them; best of 5 calls. `huge` asks for transparent huge pages on the matrix.
// Another version of the kernels: build with its kernels.c (e.g. `git show REV:Sources/CKernels/kernels.c > k.c`).
#include "bd3kernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include <immintrin.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
typedef struct { float *y; const float *x; const void *w; int M, K, N, n0, n1, bf16; float sink; } job;   // bf16: 1 row-major, 2 packed

__attribute__((target("avx2")))
static void *run(void *p) {
    job *j = p;
    if (j->M == 0) {                                         // plain read of the rows n0 ..< n1
        const float *w = j->w; __m256 a = _mm256_setzero_ps(), b = a;
        for (size_t i = (size_t)j->n0 * j->K; i + 16 <= (size_t)j->n1 * j->K; i += 16) {
            a = _mm256_add_ps(a, _mm256_loadu_ps(w + i)); b = _mm256_add_ps(b, _mm256_loadu_ps(w + i + 8));
        }
        float t[8]; _mm256_storeu_ps(t, _mm256_add_ps(a, b)); j->sink = t[0];
    } else if (j->bf16 == 2) bd3_linear_bf16_packed(j->y, j->N, j->x, j->K, j->w, NULL, j->M, j->K, j->N, j->n0, j->n1);
    else if (j->bf16) bd3_linear_bf16(j->y, j->N, j->x, j->K, j->w, NULL, j->M, j->K, j->n0, j->n1);
    else bd3_linear_f32(j->y, j->N, j->x, j->K, j->w, NULL, j->M, j->K, j->n0, j->n1);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s M THREADS [bf16 | packed] [huge] [K] [N]\n", argv[0]); return 64; }
    int M = atoi(argv[1]), th = atoi(argv[2]), bf16 = 0, huge = 0, K = 768, N = 150774, pos = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "bf16")) bf16 = 1; else if (!strcmp(argv[i], "packed")) bf16 = 2; else if (!strcmp(argv[i], "huge")) huge = 1;
        else if (pos++ == 0) K = atoi(argv[i]); else N = atoi(argv[i]);
    }
    if (M < 0 || th < 1 || th > 8 || K < 8 || N < th || (M == 0 && bf16)) { fprintf(stderr, "bad arguments\n"); return 64; }
    size_t bytes = (size_t)N * K * (bf16 ? 2 : 4);
    void *w = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED) { perror("mmap"); return 1; }
    if (huge) madvise(w, bytes, MADV_HUGEPAGE);
    memset(w, 0x3c, bytes);
    float *x = malloc(sizeof(float) * ((size_t)(M ? M : 1) * K)), *y = malloc(sizeof(float) * (size_t)(M ? M : 1) * N);
    for (size_t i = 0; i < (size_t)(M ? M : 1) * K; i++) x[i] = 1;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        pthread_t t[8]; job j[8];
        double t0 = now();
        for (int i = 0; i < th; i++) j[i] = (job){ y, x, w, M, K, N, (int)((long)N * i / th / 24 * 24), i == th - 1 ? N : (int)((long)N * (i + 1) / th / 24 * 24), bf16, 0 };
        for (int i = 1; i < th; i++) pthread_create(&t[i], NULL, run, &j[i]);
        run(&j[0]);
        for (int i = 1; i < th; i++) pthread_join(t[i], NULL);
        double dt = now() - t0; if (dt < best) best = dt;
    }
    printf("M=%d %s threads=%d K=%d N=%d%s: %.1f ms, %.1f GB/s of weights, %.1f GFLOP/s\n", M, bf16 == 2 ? "bf16 packed" : bf16 ? "bf16" : "fp32", th, K, N,
           huge ? " huge pages" : "", best * 1e3, bytes / best / 1e9, 2.0 * M * K * N / best / 1e9);
    return 0;
}
