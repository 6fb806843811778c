/*
 * pool.c: the persistent thread pool behind pi_parallel_for.
 *
 * A job over [0, n) is cut into T chunks (T = thread count; boundaries multiples of `grain`):
 * chunk k always covers the same range and is passed thread_index = k, so which elements a
 * task computes depends only on (n, grain, T). Chunks are *claimed* through one atomic
 * counter, by the caller and by the workers: when the machine is oversubscribed and a worker
 * is not scheduled, the caller runs the chunk itself instead of waiting for it.
 *
 * Workers wait for a new job by spinning briefly (a token issues ~300 kernel calls back to
 * back, so the next job usually comes within microseconds) and then sleep on a condition
 * variable, so an idle process costs no CPU.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "pi_internal.h"

/* Pause iterations before a waiting thread sleeps; it yields the CPU every YIELD_EVERY. */
#define SPIN_ITERS 20000
#define YIELD_EVERY 256
#define MAX_THREADS 1024

static inline void cpu_relax(int spins) {
#if PI_X86
    _mm_pause();
#endif
    if ((spins & (YIELD_EVERY - 1)) == YIELD_EVERY - 1) sched_yield();
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* workers sleep here for a new job */
    pthread_cond_t done;      /* the caller sleeps here for remaining == 0 */
    atomic_uint_fast64_t gen; /* bumped once per job */
    /* (job sequence << 16) | next chunk to claim: a claim is a CAS, so a worker that wakes
     * late can never claim a chunk of a newer job with an older job's view */
    atomic_uint_fast64_t claim;
    atomic_int remaining;     /* chunks of the current job not finished yet */
    atomic_int sleepers;      /* workers inside the cond wait */
    atomic_int stop;
    /* the current job: written before claim/gen are published, stable until it is done */
    pi_task_fn fn;
    void *ctx;
    int64_t n, grain;
    int n_chunks;
    int n_threads; /* including the caller */
    pthread_t *threads;
} pool_t;

static pool_t pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .n_threads = 1,
};
static int pool_started = 0;
static int pool_size_wanted = 0; /* 0: not decided yet (physical cores) */
static uint_fast64_t job_seq = 0;
/* gen when the workers were created: a worker that starts late must still see job gen+1 */
static uint_fast64_t pool_start_gen = 0;
/* Serializes jobs and resizes; a second caller that finds it taken runs inline. */
static pthread_mutex_t dispatch_mu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int in_task = 0;

/* Chunk k of n_chunks over [0, n) in units of grain. */
static void chunk_range(int64_t n, int64_t grain, int n_chunks, int k, int64_t *i0,
                        int64_t *i1) {
    const int64_t n_units = (n + grain - 1) / grain;
    const int64_t u0 = n_units * k / n_chunks;
    const int64_t u1 = n_units * (k + 1) / n_chunks;
    *i0 = u0 * grain < n ? u0 * grain : n;
    *i1 = u1 * grain < n ? u1 * grain : n;
}

/* Claims and runs chunks of the current job until none is left. */
static void run_claims(void) {
    for (;;) {
        uint_fast64_t v = atomic_load_explicit(&pool.claim, memory_order_acquire);
        const int k = (int)(v & 0xffffu);
        if (k >= pool.n_chunks) return;
        if (!atomic_compare_exchange_weak_explicit(&pool.claim, &v, v + 1, memory_order_acq_rel,
                                                   memory_order_acquire)) {
            continue;
        }
        int64_t i0, i1;
        chunk_range(pool.n, pool.grain, pool.n_chunks, k, &i0, &i1);
        if (i1 > i0) {
            in_task = 1;
            pool.fn(pool.ctx, i0, i1, k);
            in_task = 0;
        }
        if (atomic_fetch_sub_explicit(&pool.remaining, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool.mu);
            pthread_cond_broadcast(&pool.done);
            pthread_mutex_unlock(&pool.mu);
        }
    }
}

static void *worker_main(void *arg) {
    (void)arg;
    uint_fast64_t seen = pool_start_gen;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&pool.gen, memory_order_acquire) == seen &&
               !atomic_load(&pool.stop) && spins < SPIN_ITERS) {
            cpu_relax(spins++);
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
        run_claims();
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
    if (n > MAX_THREADS) n = MAX_THREADS;
    pool.threads = calloc((size_t)n, sizeof(pthread_t));
    if (!pool.threads) return PI_FAIL(PI_ERR_NOMEM, "Cannot allocate the thread pool");
    pool.n_threads = 1;
    pool_start_gen = atomic_load(&pool.gen);
    for (int k = 1; k < n; k++) {
        if (pthread_create(&pool.threads[k], NULL, worker_main, NULL) != 0) {
            break; /* fewer threads than asked is still correct */
        }
        pool.n_threads = k + 1;
    }
    pool_started = 1;
    return PI_OK;
}

__attribute__((destructor)) static void pool_fini(void) {
    if (pthread_mutex_trylock(&dispatch_mu) == 0) {
        pool_stop_locked();
        pthread_mutex_unlock(&dispatch_mu);
    }
}

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
    pool.n_chunks = pool.n_threads;
    atomic_store_explicit(&pool.remaining, pool.n_chunks, memory_order_relaxed);
    job_seq++;
    atomic_store_explicit(&pool.claim, (uint_fast64_t)(job_seq & 0xffffffffffffu) << 16,
                          memory_order_release);
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_seq_cst);
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.mu);
    }
    run_claims();
    int spins = 0;
    while (atomic_load_explicit(&pool.remaining, memory_order_acquire) != 0 &&
           spins < SPIN_ITERS) {
        cpu_relax(spins++);
    }
    if (atomic_load_explicit(&pool.remaining, memory_order_acquire) != 0) {
        pthread_mutex_lock(&pool.mu);
        while (atomic_load(&pool.remaining) != 0) pthread_cond_wait(&pool.done, &pool.mu);
        pthread_mutex_unlock(&pool.mu);
    }
    pthread_mutex_unlock(&dispatch_mu);
}
