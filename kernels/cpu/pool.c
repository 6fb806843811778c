/*
 * pool.c: the persistent thread pool behind pi_parallel_for.
 *
 * The caller is thread 0; workers 1..T-1 wait for a new generation number. After a job each
 * worker spins for a short while (a token issues ~300 kernel calls back to back, so the next
 * job usually arrives within microseconds) and then sleeps on a condition variable, so an idle
 * process costs no CPU. Chunk k of a job always runs on thread k: which thread computes what
 * depends only on (n, grain, thread count).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "pi_internal.h"

/* Spin iterations (each a pause) before a waiting thread sleeps: roughly 50-200 us. */
#define SPIN_ITERS 20000

static inline void cpu_relax(void) {
#if PI_X86
    _mm_pause();
#endif
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* workers sleep here for a new generation */
    pthread_cond_t done;      /* the caller sleeps here for pending == 0 */
    atomic_uint_fast64_t gen; /* bumped once per job */
    atomic_int pending;       /* workers still running the current job */
    atomic_int sleepers;      /* workers (or the caller) inside a cond wait */
    atomic_int stop;
    /* the current job (written before gen is bumped) */
    pi_task_fn fn;
    void *ctx;
    int64_t n, grain;
    int n_threads; /* including the caller */
    pthread_t *threads;
} pool_t;

static pool_t pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
};
static int pool_started = 0;
/* gen when the workers were created: a worker that starts late must still run job gen+1 */
static uint_fast64_t pool_start_gen = 0;
static int pool_size_wanted = 0; /* 0: not decided yet (physical cores) */
/* Serializes jobs and resizes; a second caller that finds it taken runs inline. */
static pthread_mutex_t dispatch_mu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int in_task = 0;

/* Chunk k of n_threads over [0, n) in units of grain. */
static void chunk_range(int64_t n, int64_t grain, int n_threads, int k, int64_t *i0,
                        int64_t *i1) {
    const int64_t n_units = (n + grain - 1) / grain;
    const int64_t u0 = n_units * k / n_threads;
    const int64_t u1 = n_units * (k + 1) / n_threads;
    *i0 = u0 * grain < n ? u0 * grain : n;
    *i1 = u1 * grain < n ? u1 * grain : n;
}

static void run_chunk(int k) {
    int64_t i0, i1;
    chunk_range(pool.n, pool.grain, pool.n_threads, k, &i0, &i1);
    if (i1 > i0) {
        in_task = 1;
        pool.fn(pool.ctx, i0, i1, k);
        in_task = 0;
    }
}

static void *worker_main(void *arg) {
    const int k = (int)(intptr_t)arg;
    uint_fast64_t seen = pool_start_gen;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&pool.gen, memory_order_acquire) == seen &&
               !atomic_load(&pool.stop) && spins < SPIN_ITERS) {
            cpu_relax();
            spins++;
        }
        if (atomic_load(&pool.gen) == seen && !atomic_load(&pool.stop)) {
            pthread_mutex_lock(&pool.mu);
            atomic_fetch_add(&pool.sleepers, 1);
            while (atomic_load(&pool.gen) == seen && !atomic_load(&pool.stop)) {
                pthread_cond_wait(&pool.wake, &pool.mu);
            }
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.mu);
        }
        if (atomic_load(&pool.stop)) break;
        seen = atomic_load_explicit(&pool.gen, memory_order_acquire);
        run_chunk(k);
        if (atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_acq_rel) == 1) {
            /* last one out wakes the caller if it went to sleep */
            pthread_mutex_lock(&pool.mu);
            pthread_cond_broadcast(&pool.done);
            pthread_mutex_unlock(&pool.mu);
        }
    }
    return NULL;
}

static void pool_stop_locked(void) {
    if (!pool_started) return;
    pthread_mutex_lock(&pool.mu);
    atomic_store(&pool.stop, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    for (int k = 1; k < pool.n_threads; k++) pthread_join(pool.threads[k], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.n_threads = 1;
    atomic_store(&pool.stop, 0);
    pool_started = 0;
}

/* Starts the workers for the wanted size; with dispatch_mu held. */
static int pool_start_locked(void) {
    if (pool_started) return PI_OK;
    int n = pool_size_wanted > 0 ? pool_size_wanted : pi_physical_cores();
    if (n < 1) n = 1;
    pool.threads = calloc((size_t)n, sizeof(pthread_t));
    if (!pool.threads) return PI_FAIL(PI_ERR_NOMEM, "Cannot allocate the thread pool");
    pool.n_threads = 1;
    pool_start_gen = atomic_load(&pool.gen);
    for (int k = 1; k < n; k++) {
        if (pthread_create(&pool.threads[k], NULL, worker_main, (void *)(intptr_t)k) != 0) {
            break; /* fewer threads than asked is still correct */
        }
        pool.n_threads = k + 1;
    }
    pool_started = 1;
    return PI_OK;
}

static void pool_shutdown(void) {
    if (pthread_mutex_trylock(&dispatch_mu) == 0) {
        pool_stop_locked();
        pthread_mutex_unlock(&dispatch_mu);
    }
}

__attribute__((destructor)) static void pool_fini(void) { pool_shutdown(); }

int pi_pool_resize(int n) {
    pthread_mutex_lock(&dispatch_mu);
    if (n != pool_size_wanted || !pool_started) {
        pool_stop_locked();
        pool_size_wanted = n;
    }
    const int rc = pool_start_locked();
    pthread_mutex_unlock(&dispatch_mu);
    return rc;
}

int pi_pool_size(void) {
    pthread_mutex_lock(&dispatch_mu);
    pool_start_locked();
    const int n = pool.n_threads;
    pthread_mutex_unlock(&dispatch_mu);
    return n;
}

int pi_thread_count(void) { return pi_pool_size(); }

void pi_parallel_for(int64_t n, int64_t grain, pi_task_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (n <= grain || in_task || pthread_mutex_trylock(&dispatch_mu) != 0) {
        fn(ctx, 0, n, 0);
        return;
    }
    if (pool_start_locked() != PI_OK || pool.n_threads == 1) {
        pthread_mutex_unlock(&dispatch_mu);
        fn(ctx, 0, n, 0);
        return;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.grain = grain;
    atomic_store(&pool.pending, pool.n_threads - 1);
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_seq_cst);
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.mu);
    }
    run_chunk(0);
    int spins = 0;
    while (atomic_load_explicit(&pool.pending, memory_order_acquire) != 0 &&
           spins < SPIN_ITERS) {
        cpu_relax();
        spins++;
    }
    if (atomic_load(&pool.pending) != 0) {
        pthread_mutex_lock(&pool.mu);
        while (atomic_load(&pool.pending) != 0) pthread_cond_wait(&pool.done, &pool.mu);
        pthread_mutex_unlock(&pool.mu);
    }
    pthread_mutex_unlock(&dispatch_mu);
}
