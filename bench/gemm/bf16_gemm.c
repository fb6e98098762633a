// Which GEMM for `train --precision bf16`? Times, on the shapes of a `cpu`-config BD3 step (N = B·2L rows),
//   sgemm     OpenBLAS fp32 (what --precision fp32 runs),
//   round     bf16 rounding of both operands + OpenBLAS sgemm (what --precision bf16 runs),
//   onednn    oneDNN matmul primitive, bf16 src/weights, f32 dst (created once per shape, as a cache would),
// alternating rounds, one thread. Build and run (see docs/training.md):
//   cc -O2 -march=native bench/gemm/bf16_gemm.c -o /tmp/bf16_gemm $(pkg-config --cflags --libs openblas) -ldnnl
//   OMP_NUM_THREADS=1 /tmp/bf16_gemm
#include <dnnl.h>
#include <libxsmm.h>
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

static uint16_t to_bf16(float x) {
    uint32_t b; memcpy(&b, &x, 4);
    return (uint16_t)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
}
static void round_bf16(float *d, const float *s, size_t n) {
    for (size_t i = 0; i < n; i++) { uint32_t b; memcpy(&b, &s[i], 4); b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000u; memcpy(&d[i], &b, 4); }
}
#define CHECK(x) do { dnnl_status_t s_ = (x); if (s_ != dnnl_success) { fprintf(stderr, "oneDNN error %d at %s\n", s_, #x); exit(1); } } while (0)

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 3;
    libxsmm_init();
    libxsmm_bmmfunction xb16 = libxsmm_bmmdispatch(64, 64, 64, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    printf("libxsmm %s: bf16-in/f32-out kernel %s\n", libxsmm_get_target_arch(), xb16 ? "available" : "not available on this CPU");
    openblas_set_num_threads(1);
    // (N, C, OC): qkv, fc, proj, output layer of the cpu config (D = 256, V = 8192), B = 8, 2L = 512.
    int shapes[][3] = {{4096, 256, 768}, {4096, 256, 1024}, {4096, 1024, 256}, {2048, 256, 8192}};
    dnnl_engine_t eng; CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    dnnl_stream_t st; CHECK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
    printf("shape N x C x OC        sgemm GF/s   round+sgemm GF/s   oneDNN bf16 GF/s (impl)\n"); fflush(stdout);
    for (int si = 0; si < 4; si++) {
        int N = shapes[si][0], C = shapes[si][1], OC = shapes[si][2];
        float *x = malloc(sizeof(float) * N * C), *w = malloc(sizeof(float) * OC * C), *y = malloc(sizeof(float) * N * OC);
        float *xr = malloc(sizeof(float) * N * C), *wr = malloc(sizeof(float) * OC * C);
        uint16_t *xb = malloc(2 * (size_t)N * C), *wb = malloc(2 * (size_t)OC * C);
        for (size_t i = 0; i < (size_t)N * C; i++) { x[i] = (float)rand() / RAND_MAX - 0.5f; xb[i] = to_bf16(x[i]); }
        for (size_t i = 0; i < (size_t)OC * C; i++) { w[i] = (float)rand() / RAND_MAX - 0.5f; wb[i] = to_bf16(w[i]); }
        // oneDNN: src (N, C) bf16, weights (C, OC) given as the transposed view of w (OC, C), dst (N, OC) f32.
        dnnl_dims_t sd = {N, C}, wd = {C, OC}, dd = {N, OC};
        dnnl_dims_t ws = {1, C};   // strides of the (C, OC) view of row-major (OC, C)
        dnnl_memory_desc_t smd, wmd, dmd;
        CHECK(dnnl_memory_desc_init_by_tag(&smd, 2, sd, dnnl_bf16, dnnl_ab));
        CHECK(dnnl_memory_desc_init_by_strides(&wmd, 2, wd, dnnl_bf16, ws));
        CHECK(dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab));
        dnnl_matmul_desc_t md; CHECK(dnnl_matmul_desc_init(&md, &smd, &wmd, NULL, &dmd));
        // oneDNN 2.6 implements bf16 matmul only with AVX512 (avx512_core and up); elsewhere it says "unimplemented".
        dnnl_primitive_desc_t pd = NULL; dnnl_primitive_t prim = NULL;
        const char *impl = "unimplemented on this CPU";
        dnnl_memory_t sm = NULL, wm = NULL, dm = NULL;
        dnnl_exec_arg_t args[3];
        if (dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL) == dnnl_success) {
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
            CHECK(dnnl_primitive_create(&prim, pd));
            CHECK(dnnl_memory_create(&sm, &smd, eng, xb)); CHECK(dnnl_memory_create(&wm, &wmd, eng, wb)); CHECK(dnnl_memory_create(&dm, &dmd, eng, y));
            args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, sm}; args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, wm}; args[2] = (dnnl_exec_arg_t){DNNL_ARG_DST, dm};
        }
        double flops = 2.0 * N * C * OC, best[3] = {0, 0, 0};
        for (int r = 0; r < rounds; r++) {
            double t = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1, x, C, w, C, 0, y, OC);
            double g = flops / (now() - t) / 1e9; if (g > best[0]) best[0] = g;
            t = now();
            round_bf16(xr, x, (size_t)N * C); round_bf16(wr, w, (size_t)OC * C);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1, xr, C, wr, C, 0, y, OC);
            g = flops / (now() - t) / 1e9; if (g > best[1]) best[1] = g;
            if (!prim) continue;
            t = now();
            CHECK(dnnl_primitive_execute(prim, st, 3, args)); CHECK(dnnl_stream_wait(st));
            g = flops / (now() - t) / 1e9; if (g > best[2]) best[2] = g;
        }
        printf("%5d x %4d x %4d   %10.1f   %16.1f   %16.2f (%s)\n", N, C, OC, best[0], best[1], best[2], impl);
        fflush(stdout);
        if (prim) {
            dnnl_primitive_destroy(prim); dnnl_primitive_desc_destroy(pd);
            dnnl_memory_destroy(sm); dnnl_memory_destroy(wm); dnnl_memory_destroy(dm);
        }
        free(x); free(w); free(y); free(xr); free(wr); free(xb); free(wb);
    }
    dnnl_stream_destroy(st); dnnl_engine_destroy(eng);
    return 0;
}
