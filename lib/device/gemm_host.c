/*
 * device/gemm_host.c: the host GEMM provider: the host's BLAS (OpenBLAS
 * through CBLAS) on the mapped buffers of a CPU device.
 *
 * Order in the queue.  A blocking clEnqueueMapBuffer on the in-order
 * queue returns only after every command enqueued before it has finished,
 * so the GEMM reads what earlier kernels wrote; the unmap is enqueued
 * before anything that follows, so later kernels read the GEMM's result.
 * Each buffer is mapped once per call over the union of the regions the
 * call touches: mapping one buffer twice for writing is undefined in
 * OpenCL 1.2, and A, B and C are often views of one buffer.  On PoCL's
 * CPU devices a map returns the buffer's own memory (no copy); on other
 * devices (MPT_BLAS=host forced) the driver copies, which is slow but
 * still correct.
 *
 * Threads.  A device's GEMMs should use as many BLAS threads as it has
 * compute units, but OpenBLAS 0.3.21 (pthread build, Debian's default)
 * keeps a single thread count for the whole process.  Devices opened
 * together may run GEMMs at the same time on their worker threads, so
 * every host-provider device of a set gets the same count: the smallest
 * of min(compute units, usable cores / host devices), which keeps the
 * total within the cores (two one-core PoCL "basic" devices: one thread
 * each, not two each fighting over two cores).  The count is applied
 * before each GEMM only when it differs from OpenBLAS's current one, so
 * devices of one set never change it under each other; two sets of
 * different counts used at the same time could (a slower GEMM, never a
 * wrong one: OpenBLAS splits a GEMM by rows and columns, so results do
 * not depend on the count).  Separate processes (MPI ranks on one node)
 * each see every core; bind them (mpirun --bind-to) to share the cores.
 *
 * Left out: batched GEMM in one BLAS call (OpenBLAS 0.3.21 has no
 * cblas_sgemm_batch; the loop runs inside one map), and a second BLAS
 * (BLIS would give per-call threads through rntm_t).
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <limits.h>
#include <sched.h>
#include <unistd.h>

#include <cblas.h>

#include "config.h"
#include "device/gemm.h"

/* One buffer to map: the union [lo, hi) in bytes of what the call touches. */
typedef struct {
    cl_mem mem;
    size_t lo, hi;
    cl_map_flags flags;
    char *ptr; /* host address of byte lo, once mapped */
} region_t;

#define MAX_REGIONS MPT_HOST_MAX_ARGS

/* Adds bytes [lo, hi) of mem with `flags` to the set, merging by buffer. */
static void need(region_t *r, size_t *nr, cl_mem mem, size_t lo, size_t hi, cl_map_flags flags)
{
    for (size_t i = 0; i < *nr; i++)
        if (r[i].mem == mem) {
            r[i].lo = lo < r[i].lo ? lo : r[i].lo;
            r[i].hi = hi > r[i].hi ? hi : r[i].hi;
            r[i].flags |= flags;
            return;
        }
    r[(*nr)++] = (region_t){mem, lo, hi, flags, NULL};
}

/* The host address of float offset `off` of a mapped buffer. */
static float *at(const region_t *r, size_t nr, cl_mem mem, size_t off)
{
    for (size_t i = 0; i < nr; i++)
        if (r[i].mem == mem)
            return (float *)(r[i].ptr + off * sizeof(float) - r[i].lo);
    return NULL; /* not reached: every buffer was added by need() */
}

static int unmap_all(mpt_device_t *dev, region_t *r, size_t nr, int status)
{
    for (size_t i = 0; i < nr; i++) {
        if (!r[i].ptr)
            continue;
        cl_int err = clEnqueueUnmapMemObject(dev->queue, r[i].mem, r[i].ptr, 0, NULL, NULL);
        r[i].ptr = NULL;
        if (err != CL_SUCCESS && status == MPT_OK)
            status = mpt__fail_cl(err, "unmapping a buffer after a host GEMM on device %d",
                                  dev->info.index);
    }
    return status;
}

/* Checks each region against its buffer's size, then maps them all,
 * blocking (see the header comment for why that orders the queue). */
static int map_all(mpt_device_t *dev, region_t *r, size_t nr, const char *what)
{
    for (size_t i = 0; i < nr; i++) {
        size_t size = 0;
        cl_int err = clGetMemObjectInfo(r[i].mem, CL_MEM_SIZE, sizeof size, &size, NULL);
        if (err != CL_SUCCESS)
            return mpt__fail_cl(err, "%s on device %d: reading a buffer's size", what,
                                dev->info.index);
        if (r[i].hi > size)
            return mpt__fail(MPT_ERR_RANGE, "%s on device %d: needs bytes [%zu, %zu) of a "
                             "buffer of %zu bytes", what, dev->info.index, r[i].lo, r[i].hi,
                             size);
    }
    for (size_t i = 0; i < nr; i++) {
        /* Only the last map blocks: the in-order queue has completed the
         * others (and everything before them) when it returns, and one
         * wait costs PoCL one round trip instead of three. */
        cl_int err = CL_SUCCESS;
        void *p = clEnqueueMapBuffer(dev->queue, r[i].mem, i + 1 == nr ? CL_TRUE : CL_FALSE,
                                     r[i].flags, r[i].lo, r[i].hi - r[i].lo, 0, NULL, NULL,
                                     &err);
        if (!p || err != CL_SUCCESS)
            return unmap_all(dev, r, nr,
                             mpt__fail_cl(err, "%s on device %d: mapping bytes [%zu, %zu)", what,
                                          dev->info.index, r[i].lo, r[i].hi));
        r[i].ptr = p;
    }
    return MPT_OK;
}

/* Bytes spanned by a rows x cols row-major matrix of leading dimension ld
 * at float offset off: [lo, hi). */
static void span(size_t off, size_t rows, size_t cols, size_t ld, size_t *lo, size_t *hi)
{
    *lo = off * sizeof(float);
    *hi = (off + (rows - 1) * ld + cols) * sizeof(float);
}

static void use_threads(const mpt_device_t *dev)
{
#if defined(HAVE_OPENBLAS_SET_NUM_THREADS) && defined(HAVE_OPENBLAS_GET_NUM_THREADS)
    if (openblas_get_num_threads() != dev->blas_threads)
        openblas_set_num_threads(dev->blas_threads);
#else
    (void)dev; /* another CBLAS: its own default */
#endif
}

void mpt__gemm_set_threads(mpt_device_t **devs, size_t n)
{
    cpu_set_t set;
    long cores = 0;
    size_t hosts = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        cores = CPU_COUNT(&set); /* the cores this process may use (taskset, mpirun) */
    if (cores <= 0)
        cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores <= 0)
        cores = 1;
    for (size_t i = 0; i < n; i++)
        hosts += devs[i]->gemm_host != 0;
    if (hosts == 0)
        return;
    long share = cores / (long)hosts, threads = share;
    for (size_t i = 0; i < n; i++)
        if (devs[i]->gemm_host && (long)devs[i]->info.compute_units < threads)
            threads = devs[i]->info.compute_units;
    if (threads < 1)
        threads = 1;
    for (size_t i = 0; i < n; i++)
        if (devs[i]->gemm_host)
            devs[i]->blas_threads = (int)threads;
}

const char *mpt__gemm_host_name(void)
{
#ifdef HAVE_OPENBLAS_GET_CONFIG
    return openblas_get_config();
#else
    return "CBLAS";
#endif
}

int mpt__gemm_host(mpt_device_t *dev, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                   float alpha, cl_mem a, const size_t *a_off, size_t lda, cl_mem b,
                   const size_t *b_off, size_t ldb, float beta, cl_mem c, const size_t *c_off,
                   size_t ldc, size_t count)
{
    const char *what = count == 1 ? "host GEMM" : "host batched GEMM";
    size_t arows = trans_a ? k : m, acols = trans_a ? m : k;
    size_t brows = trans_b ? n : k, bcols = trans_b ? k : n;
    region_t r[MAX_REGIONS];
    size_t nr = 0;
    int status;
    /* CBLAS would report these through xerbla, which prints: check first. */
    if (lda < acols || ldb < bcols || ldc < n)
        return mpt__fail(MPT_ERR_INVALID, "%s %zux%zux%zu on device %d: leading dimensions "
                         "%zu, %zu, %zu below the rows' lengths %zu, %zu, %zu", what, m, n, k,
                         dev->info.index, lda, ldb, ldc, acols, bcols, n);
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
        ldc > INT_MAX)
        return mpt__fail(MPT_ERR_RANGE, "%s %zux%zux%zu on device %d: beyond CBLAS's int sizes",
                         what, m, n, k, dev->info.index);
    size_t lo[3] = {SIZE_MAX, SIZE_MAX, SIZE_MAX}, hi[3] = {0, 0, 0};
    for (size_t i = 0; i < count; i++) {
        size_t l, h;
        span(a_off[i], arows, acols, lda, &l, &h);
        lo[0] = l < lo[0] ? l : lo[0], hi[0] = h > hi[0] ? h : hi[0];
        span(b_off[i], brows, bcols, ldb, &l, &h);
        lo[1] = l < lo[1] ? l : lo[1], hi[1] = h > hi[1] ? h : hi[1];
        span(c_off[i], m, n, ldc, &l, &h);
        lo[2] = l < lo[2] ? l : lo[2], hi[2] = h > hi[2] ? h : hi[2];
    }
    need(r, &nr, a, lo[0], hi[0], CL_MAP_READ);
    need(r, &nr, b, lo[1], hi[1], CL_MAP_READ);
    need(r, &nr, c, lo[2], hi[2], CL_MAP_READ | CL_MAP_WRITE);
    MPT_TRY(map_all(dev, r, nr, what));
    dev->blas_calls++;
    double t0 = dev->timing ? mpt__now() : 0;
    use_threads(dev);
    for (size_t i = 0; i < count; i++)
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
                    at(r, nr, a, a_off[i]), (int)lda, at(r, nr, b, b_off[i]), (int)ldb, beta,
                    at(r, nr, c, c_off[i]), (int)ldc);
    if (dev->timing)
        dev->host_seconds += mpt__now() - t0;
    status = unmap_all(dev, r, nr, MPT_OK);
out:
    return status;
}

int mpt__gemm_host_sum_rows(mpt_device_t *dev, cl_mem dy, size_t dy_off, size_t rows,
                            size_t cols, float beta, cl_mem db, size_t db_off)
{
    region_t r[MAX_REGIONS];
    size_t nr = 0;
    int status;
    if (rows)
        need(r, &nr, dy, dy_off * sizeof(float), (dy_off + rows * cols) * sizeof(float),
             CL_MAP_READ);
    need(r, &nr, db, db_off * sizeof(float), (db_off + cols) * sizeof(float),
         CL_MAP_READ | CL_MAP_WRITE);
    MPT_TRY(map_all(dev, r, nr, "host bias gradient"));
    dev->blas_calls++;
    double t0 = dev->timing ? mpt__now() : 0;
    float *sum = at(r, nr, db, db_off);
    const float *rows0 = rows ? at(r, nr, dy, dy_off) : NULL;
    /* Row by row, so that the inner loop runs along memory (and
     * vectorises); beta = 0 writes without reading, as BLAS does. */
    for (size_t j = 0; j < cols; j++)
        sum[j] = beta == 0.0f ? 0.0f : beta * sum[j];
    for (size_t i = 0; i < rows; i++) {
        const float *row = rows0 + i * cols;
        for (size_t j = 0; j < cols; j++)
            sum[j] += row[j];
    }
    if (dev->timing)
        dev->host_seconds += mpt__now() - t0;
    status = unmap_all(dev, r, nr, MPT_OK);
out:
    return status;
}

int mpt__host_call(mpt_device_t *dev, const char *what, const mpt__host_arg_t *args, size_t n,
                   void (*fn)(void *arg, float *const *ptr), void *arg)
{
    region_t r[MAX_REGIONS];
    float *ptr[MAX_REGIONS];
    size_t nr = 0;
    int status;
    if (n > MAX_REGIONS)
        return mpt__fail(MPT_ERR_INVALID, "%s on device %d: %zu regions, at most %d", what,
                         dev->info.index, n, MAX_REGIONS);
    for (size_t i = 0; i < n; i++)
        need(r, &nr, args[i].mem, args[i].off * sizeof(float),
             (args[i].off + args[i].n) * sizeof(float),
             args[i].write ? CL_MAP_READ | CL_MAP_WRITE : CL_MAP_READ);
    MPT_TRY(map_all(dev, r, nr, what));
    dev->blas_calls++;
    double t0 = dev->timing ? mpt__now() : 0;
    for (size_t i = 0; i < n; i++)
        ptr[i] = at(r, nr, args[i].mem, args[i].off);
    use_threads(dev);
    fn(arg, ptr);
    if (dev->timing)
        dev->host_seconds += mpt__now() - t0;
    status = unmap_all(dev, r, nr, MPT_OK);
out:
    return status;
}

void mpt__host_sgemm(int trans_a, int trans_b, size_t m, size_t n,
                     size_t k, float alpha, const float *a, size_t lda, const float *b,
                     size_t ldb, float beta, float *c, size_t ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a, (int)lda,
                b, (int)ldb, beta, c, (int)ldc);
}
