// A small pool of spinning worker threads for the engine's many short parallel loops.
//
// A cached sampling forward runs ~75 parallel loops of 10–500 µs (products, attention, GELU per layer); waking a
// sleeping worker for each (libdispatch's concurrentPerform) costs tens of µs per loop. Here the workers spin on
// an atomic job word for a short while after each job (BD3_POOL_SPIN_US, default 300) before they sleep on a
// condition variable, so the next loop of the same forward starts on them at once.
//
//   bd3_pool_start(threads)   threads workers besides the caller (0 = no pool); once, before the first run
//   bd3_pool_run(n, fn, ctx)  fn(ctx, i) for i < n across the caller and the workers, returns when all are done;
//                             returns 0 without running anything when the pool cannot take the job (not started,
//                             n > 65535, called from inside a job, or another thread's job in progress): the
//                             caller then runs it another way.
#ifndef BD3_POOL_H
#define BD3_POOL_H
#ifdef __cplusplus
extern "C" {
#endif

typedef void (*bd3_task_fn)(void *ctx, long i);

void bd3_pool_start(int threads);
int bd3_pool_run(long n, bd3_task_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
