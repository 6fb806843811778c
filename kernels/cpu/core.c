/*
 * core.c: ABI version, the thread-local last-error message, thread-count settings, physical
 * core detection, CPU feature detection and aligned allocation.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pi_internal.h"

static _Thread_local char last_error[512];

void pi_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

PI_API uint32_t pi_abi_version(void) { return PI_ABI_VERSION; }

PI_API const char *pi_last_error(void) { return last_error; }

PI_API void pi_noop(void) {}

int pi_has_avx2(void) {
#if PI_X86 && (defined(__GNUC__) || defined(__clang__))
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                 __builtin_cpu_supports("f16c");
        /* PI_FORCE_SCALAR=1 exercises the portable paths on an AVX2 machine. */
        const char *force = getenv("PI_FORCE_SCALAR");
        if (force && force[0] == '1') cached = 0;
    }
    return cached;
#else
    return 0;
#endif
}

PI_API int32_t pi_cpu_features(void) { return pi_has_avx2() ? 7 : 0; }

/* Reads one small integer from a sysfs file; -1 when it cannot. */
static long read_long_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    if (fscanf(f, "%ld", &v) != 1) v = -1;
    fclose(f);
    return v;
}

/* Distinct (package, core) pairs among the CPUs this process may run on; 0 when unknown. */
static int count_physical_cores(void) {
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    enum { MAX_PAIRS = 1024 };
    static long pairs[MAX_PAIRS];
    int n_pairs = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set)) continue;
        char path[128];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        const long core = read_long_file(path);
        snprintf(path, sizeof path,
                 "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
        const long pkg = read_long_file(path);
        if (core < 0 || pkg < 0) return 0;
        const long key = pkg * 1000000L + core;
        int seen = 0;
        for (int i = 0; i < n_pairs; i++) {
            if (pairs[i] == key) {
                seen = 1;
                break;
            }
        }
        if (!seen) {
            if (n_pairs == MAX_PAIRS) break;
            pairs[n_pairs++] = key;
        }
    }
    return n_pairs;
#else
    return 0;
#endif
}

PI_API int32_t pi_physical_cores(void) {
    static int cached = 0;
    if (cached == 0) {
        int n = count_physical_cores();
        if (n <= 0) {
            const long online = sysconf(_SC_NPROCESSORS_ONLN);
            n = online > 0 ? (int)online : 1;
        }
        cached = n;
    }
    return cached;
}

/* pool.c owns the workers; these forward the setting. */
int pi_pool_resize(int n);
int pi_pool_size(void);

PI_API int32_t pi_threads_set(int32_t n) {
    if (n < 0 || n > 1024) return PI_FAIL(PI_ERR_ARG, "Thread count %d: expected 0..1024", n);
    return pi_pool_resize(n == 0 ? pi_physical_cores() : n);
}

PI_API int32_t pi_threads_get(void) { return pi_pool_size(); }

PI_API void *pi_aligned_alloc(uint64_t n_bytes, uint64_t alignment) {
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) {
        pi_set_error("Alignment %llu: expected a power of two >= %zu",
                     (unsigned long long)alignment, sizeof(void *));
        return NULL;
    }
    void *p = NULL;
    const int rc = posix_memalign(&p, (size_t)alignment, n_bytes ? (size_t)n_bytes : 1);
    if (rc != 0) {
        pi_set_error("Cannot allocate %llu bytes: %s", (unsigned long long)n_bytes,
                     strerror(rc));
        return NULL;
    }
    return p;
}

PI_API void pi_aligned_free(void *p) { free(p); }
