// Spinning worker pool (include/bd3pool.h).
//
// One job at a time. The job word `state` packs (generation << 32 | n << 16 | next index); a thread claims index i
// of generation g by a compare-and-swap that requires the word to still hold g with next = i < n, and only then
// reads the job's function and context: while an index of g is claimed and unfinished the caller cannot finish g
// and publish another job, so what it reads is g's. The caller publishes a job (function, context, then the word,
// release), takes indices itself, and waits until `done` reaches n.
// Sleeping: a worker that saw no new generation for the spin time registers in `sleeping` and re-checks the word
// under `sleep_m` before waiting; the caller stores the word and then reads `sleeping` (both sequentially
// consistent), and broadcasts under `sleep_m`: one of the two sees the other, so no wake-up is lost.
#include "bd3pool.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <sched.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define relax() _mm_pause()
#else
#define relax() ((void)0)
#endif

static struct {
    pthread_mutex_t lock;                // held by the caller of the job in progress
    pthread_mutex_t sleep_m;
    pthread_cond_t sleep_c;
    _Atomic uint64_t state;
    _Atomic long done;
    _Atomic int sleeping;
    bd3_task_fn fn;
    void *ctx;
    uint32_t gen;
    _Atomic int threads;
    long spin_ns;
} P = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER };

static _Thread_local int in_job;

static long now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000L + t.tv_nsec; }

// Claims and runs indices of generation g until none is left; s = the job word last read.
static void take(uint32_t g, uint64_t s) {
    for (;;) {
        uint32_t n = (uint32_t)(s >> 16) & 0xffff, i = (uint32_t)s & 0xffff;
        if ((uint32_t)(s >> 32) != g || i >= n) return;
        if (atomic_compare_exchange_weak_explicit(&P.state, &s, s + 1, memory_order_acq_rel, memory_order_acquire)) {
            P.fn(P.ctx, (long)i);
            atomic_fetch_add_explicit(&P.done, 1, memory_order_release);
            s = atomic_load_explicit(&P.state, memory_order_acquire);
        }
    }
}

static void *worker(void *arg) {
    (void)arg;
    in_job = 1;                          // a parallel loop inside a job runs another way (no nesting here)
    uint32_t seen = 0;
    for (;;) {
        uint64_t s = atomic_load_explicit(&P.state, memory_order_acquire);
        if ((uint32_t)(s >> 32) == seen) {
            long t0 = now_ns();
            for (int k = 1;; k++) {
                relax();
                s = atomic_load_explicit(&P.state, memory_order_acquire);
                if ((uint32_t)(s >> 32) != seen) break;
                if ((k & 63) == 0 && now_ns() - t0 > P.spin_ns) {
                    pthread_mutex_lock(&P.sleep_m);
                    atomic_fetch_add(&P.sleeping, 1);
                    while ((uint32_t)((s = atomic_load(&P.state)) >> 32) == seen) pthread_cond_wait(&P.sleep_c, &P.sleep_m);
                    atomic_fetch_sub(&P.sleeping, 1);
                    pthread_mutex_unlock(&P.sleep_m);
                    break;
                }
            }
        }
        uint32_t g = (uint32_t)(s >> 32);
        take(g, s);
        seen = g;
    }
    return NULL;
}

void bd3_pool_start(int threads) {
    pthread_mutex_lock(&P.lock);
    if (atomic_load(&P.threads) == 0 && threads > 0) {
        const char *e = getenv("BD3_POOL_SPIN_US");
        P.spin_ns = (e ? atol(e) : 300) * 1000L;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        for (int i = 0; i < threads; i++) {
            pthread_t t;
            if (pthread_create(&t, &a, worker, NULL) == 0) atomic_fetch_add(&P.threads, 1);
        }
        pthread_attr_destroy(&a);
    }
    pthread_mutex_unlock(&P.lock);
}

int bd3_pool_run(long n, bd3_task_fn fn, void *ctx) {
    if (in_job || n > 0xffff || n < 1 || atomic_load_explicit(&P.threads, memory_order_relaxed) == 0) return 0;
    if (pthread_mutex_trylock(&P.lock) != 0) return 0;
    P.fn = fn; P.ctx = ctx;
    atomic_store_explicit(&P.done, 0, memory_order_relaxed);
    uint32_t g = ++P.gen;
    if (g == 0) g = ++P.gen;             // 0 is the workers' initial "seen"
    uint64_t s = ((uint64_t)g << 32) | ((uint64_t)n << 16);
    atomic_store(&P.state, s);           // sequentially consistent: ordered before the read of `sleeping`
    if (atomic_load(&P.sleeping) > 0) {
        pthread_mutex_lock(&P.sleep_m);
        pthread_cond_broadcast(&P.sleep_c);
        pthread_mutex_unlock(&P.sleep_m);
    }
    in_job = 1;
    take(g, s);
    in_job = 0;
    for (int k = 1; atomic_load_explicit(&P.done, memory_order_acquire) < n; k++) {
        relax();
        if ((k & 1023) == 0) sched_yield();  // a worker holding an index was preempted (shared machine)
    }
    pthread_mutex_unlock(&P.lock);
    return 1;
}
