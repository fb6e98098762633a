// Speed of the CKernels attention over a cache (bd3_attend) for one (sequence, head) at a time, as the engine calls
// it: n query rows over S cached keys and values of head size d, cycling through `heads` separate caches so that
// heads × 2·S·d·4 bytes decide where the cache sits (1 head: L1/L2; 16 × 512 × 32: 2 MB, L3; 64 × 512 × 64: DRAM).
//
//   clang -O2 -I Sources/CKernels/include bench/sampling/attend.c Sources/CKernels/kernels.c Sources/CKernels/pool.c \
//      -lpthread -lm -o attend
//   ./attend d n S heads [shift]  e.g. ./attend 32 4 512 16   (the `cpu` config at 512 cached positions)
//   k and v start on 64-byte boundaries, as the engine allocates them; `shift` moves them 16 bytes off (the allocator's
//   usual boundary, where every other 32-byte load of a row straddles two cache lines)
//
// One thread, best of 5; GFLOP/s counts 4·n·S·d (q·k and p·v). Another version of the kernels: build with its
// kernels.c (`git show REV:Sources/CKernels/kernels.c > k.c`).
#include "bd3kernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) { fprintf(stderr, "usage: %s d n S heads [shift]\n", argv[0]); return 64; }
    int d = atoi(argv[1]), n = atoi(argv[2]), S = atoi(argv[3]), heads = atoi(argv[4]);
    if (d < 1 || d > 128 || n < 1 || n > 64 || S < n || heads < 1) { fprintf(stderr, "bad arguments\n"); return 64; }
    size_t per = (size_t)S * d;
    int shift = argc == 6 ? 4 : 0;
    size_t bytes = (sizeof(float) * (per * heads + 16) + 63) / 64 * 64;
    float *kb = aligned_alloc(64, bytes), *vb = aligned_alloc(64, bytes), *k = kb ? kb + shift : NULL, *v = vb ? vb + shift : NULL;
    float *q = malloc(sizeof(float) * n * 3 * d), *o = malloc(sizeof(float) * n * d), *sc = malloc(sizeof(float) * 8 * S);
    if (!k || !v || !q || !o || !sc) { fprintf(stderr, "out of memory\n"); return 1; }
    for (size_t i = 0; i < per * heads; i++) { k[i] = (float)(i % 31) * 0.01f - 0.15f; v[i] = (float)(i % 17) * 0.02f; }
    for (int i = 0; i < n * 3 * d; i++) q[i] = (float)(i % 7) * 0.1f;
    long reps = (long)(2e9 / (4.0 * n * S * d * heads)); if (reps < 3) reps = 3;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        for (long i = 0; i < reps; i++)
            for (int h = 0; h < heads; h++) bd3_attend(o, d, q, 3 * d, k + h * per, v + h * per, d, n, S, d, 0.17f, 0, sc);
        double dt = now() - t0; if (dt < best) best = dt;
    }
    printf("d=%d n=%d S=%d heads=%d%s (%.1f MB of k and v): %.1f GFLOP/s, %.2f us per head\n", d, n, S, heads, shift ? " shifted 16 B" : "",
           2.0 * 4 * per * heads / 1e6, 4.0 * n * S * d * heads * reps / best / 1e9, best / reps / heads * 1e6);
    return 0;
}
