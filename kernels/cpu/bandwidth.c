/*
 * bandwidth.c: read kernels that measure the memory read roofline (bench only). The streaming
 * read: each pool thread sums its contiguous slice of the buffer as u64 words (wrapping). The
 * gathered read: listed rows of a matrix, as the sparse FFN reads its active neurons' rows (each
 * thread a run of the list, the row 4 ahead prefetched). The checksums keep the compiler from
 * dropping the loads.
 */
#include "pi_internal.h"

#include <string.h>

typedef struct {
    const uint8_t *buf;
    int64_t n_words; /* 8-byte words */
    int32_t n_iters;
    uint64_t partial[1024];
    int simd;
} bw_job;

#if PI_X86
PI_TARGET_AVX2 static uint64_t sum_avx2(const uint64_t *p, int64_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_epi64(a0, _mm256_loadu_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_loadu_si256((const __m256i *)(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_loadu_si256((const __m256i *)(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_loadu_si256((const __m256i *)(p + i + 12)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, a0);
    uint64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    for (; i < n; i++) s += p[i];
    return s;
}
#endif

static uint64_t sum_ref(const uint64_t *p, int64_t n) {
    uint64_t s = 0;
    for (int64_t i = 0; i < n; i++) s += p[i];
    return s;
}

static void bw_task(void *ctx, int64_t i0, int64_t i1, int thread_index) {
    bw_job *j = ctx;
    const uint64_t *p = (const uint64_t *)j->buf + i0;
    uint64_t s = 0;
    for (int32_t it = 0; it < j->n_iters; it++) {
#if PI_X86
        s += j->simd ? sum_avx2(p, i1 - i0) : sum_ref(p, i1 - i0);
#else
        s += sum_ref(p, i1 - i0);
#endif
    }
    j->partial[thread_index] += s;
}

PI_API int pi_bandwidth_read(const void *buf, int64_t n_bytes, int32_t n_iters,
                             uint64_t *checksum) {
    if (n_bytes < 0 || n_iters < 0) {
        return PI_FAIL(PI_ERR_ARG, "pi_bandwidth_read: n_bytes %lld, n_iters %d: expected >= 0",
                       (long long)n_bytes, n_iters);
    }
    if (!checksum || (n_bytes > 0 && !buf)) {
        return PI_FAIL(PI_ERR_ARG, "pi_bandwidth_read: NULL argument");
    }
    bw_job j = {0};
    j.buf = buf;
    j.n_words = n_bytes / 8;
    j.n_iters = n_iters;
    j.simd = pi_has_avx2();
    /* 64 KiB grains: every thread streams its own contiguous slice */
    pi_parallel_for(j.n_words, 8192, bw_task, &j);
    uint64_t s = 0;
    for (int i = 0; i < 1024; i++) s += j.partial[i];
    const uint8_t *tail = (const uint8_t *)buf + j.n_words * 8;
    for (int64_t i = 0; i < n_bytes % 8; i++) s += tail[i] * (uint64_t)n_iters;
    *checksum = s;
    return PI_OK;
}

typedef struct {
    const uint8_t *buf;
    int64_t row_bytes;
    const int64_t *offsets;
    int32_t n_iters;
    uint64_t partial[1024];
    int simd;
} gather_job;

/* One row: its u64 words (unaligned ones through memcpy), then its last row_bytes % 8 bytes. */
static uint64_t sum_row(const uint8_t *p, int64_t n, int simd) {
    const int64_t words = n / 8;
    uint64_t s = 0;
    if ((uintptr_t)p % 8 == 0) {
#if PI_X86
        s = simd ? sum_avx2((const uint64_t *)p, words) : sum_ref((const uint64_t *)p, words);
#else
        (void)simd;
        s = sum_ref((const uint64_t *)p, words);
#endif
    } else {
        for (int64_t w = 0; w < words; w++) {
            uint64_t v;
            memcpy(&v, p + w * 8, 8);
            s += v;
        }
    }
    for (int64_t i = words * 8; i < n; i++) s += p[i];
    return s;
}

static void gather_task(void *ctx, int64_t i0, int64_t i1, int thread_index) {
    gather_job *j = ctx;
    uint64_t s = 0;
    for (int32_t it = 0; it < j->n_iters; it++) {
        for (int64_t i = i0; i < i1; i++) {
            if (i + 4 < i1) {
                const uint8_t *p = j->buf + j->offsets[i + 4];
                for (int64_t off = 0; off < j->row_bytes; off += 64) {
                    __builtin_prefetch(p + off, 0, 3);
                }
            }
            const uint8_t *row = j->buf + j->offsets[i];
            s += sum_row(row, j->row_bytes, j->simd);
        }
    }
    j->partial[thread_index] += s;
}

PI_API int pi_bandwidth_gather(const void *buf, int64_t n_bytes, int64_t row_bytes,
                               const int64_t *offsets, int64_t n_rows, int32_t n_iters,
                               uint64_t *checksum) {
    const char *name = "pi_bandwidth_gather";
    if (n_bytes < 0 || row_bytes <= 0 || n_rows < 0 || n_iters < 0) {
        return PI_FAIL(PI_ERR_ARG, "%s: n_bytes %lld, row_bytes %lld, n_rows %lld, n_iters %d",
                       name, (long long)n_bytes, (long long)row_bytes, (long long)n_rows, n_iters);
    }
    if (!checksum || (n_rows > 0 && (!buf || !offsets))) {
        return PI_FAIL(PI_ERR_ARG, "%s: NULL argument", name);
    }
    for (int64_t i = 0; i < n_rows; i++) {
        if (offsets[i] < 0 || offsets[i] > n_bytes - row_bytes) {
            return PI_FAIL(PI_ERR_SHAPE, "%s: row %lld at byte %lld: its %lld bytes end outside "
                           "the %lld-byte buffer", name, (long long)i, (long long)offsets[i],
                           (long long)row_bytes, (long long)n_bytes);
        }
    }
    gather_job j = {0};
    j.buf = buf;
    j.row_bytes = row_bytes;
    j.offsets = offsets;
    j.n_iters = n_iters;
    j.simd = pi_has_avx2();
    pi_parallel_for(n_rows, 16, gather_task, &j);
    uint64_t s = 0;
    for (int i = 0; i < 1024; i++) s += j.partial[i];
    *checksum = s;
    return PI_OK;
}
