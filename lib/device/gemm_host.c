/*
 * device/gemm_host.c: the host GEMM provider: the host's BLAS (OpenBLAS
 * through CBLAS) on the host memory of a CPU device's buffers.
 *
 * Two ways to run a host call in the device's queue order:
 * - As a native kernel (clEnqueueNativeKernel, MPT_GEMM_HOST_NATIVE), on a
 *   host-unified device that runs them (PoCL's CPU devices do): the call
 *   is a command of the in-order queue like any kernel, so it runs after
 *   every earlier command and before every later one, and the caller does
 *   not wait for it.  A blocking map round trip cost PoCL's pthread driver
 *   25-75 us a call (measured alone, loaded machine); enqueueing a native
 *   kernel about 1 us, and several run back to back (docs/performance.md).
 * - Through maps (MPT_GEMM_HOST_MAP), anywhere else: a blocking
 *   clEnqueueMapBuffer returns only after every command enqueued before it
 *   has finished, so the GEMM reads what earlier kernels wrote; the unmap
 *   is enqueued before anything that follows, so later kernels read the
 *   GEMM's result.  On a device without shared memory (MPT_BLAS=host
 *   forced) the driver copies, which is slow but still correct.
 * Either way each buffer is given once per call, over the union of the
 * regions the call touches: mapping one buffer twice for writing is
 * undefined in OpenCL 1.2, and A, B and C are often views of one buffer.
 *
 * Threads.  A device's GEMMs should use as many BLAS threads as it has
 * compute units, but OpenBLAS (pthread build: Debian's 0.3.21, PyPI's 0.3.34)
 * keeps a single thread count for the whole process.  Devices that run
 * together may run GEMMs at the same time on their worker threads, so
 * every host-provider device of them gets the same count: the smallest
 * of min(compute units, usable cores / host devices), which keeps the
 * total within the cores (two one-core PoCL "basic" devices: one thread
 * each, not two each fighting over two cores).  "Together" is the
 * device set when opened, then the devices a plan runs (engine.c: a
 * plan on one of a PoCL and an Intel device on the same two cores gives
 * it both), and for the profiler each device alone or the group it
 * measures together (profile/measure.c).  The count is applied
 * before each GEMM only when it differs from OpenBLAS's current one, so
 * devices of one set never change it under each other; two sets of
 * different counts used at the same time could (a slower GEMM, never a
 * wrong one: OpenBLAS splits a GEMM by rows and columns, so results do
 * not depend on the count).  Separate processes (MPI ranks on one node)
 * each see every core; bind them (mpirun --bind-to) to share the cores.
 *
 * Left out: batched GEMM in one BLAS call (OpenBLAS 0.3.21 has no
 * cblas_sgemm_batch; the loop runs inside one host call), and a second BLAS
 * (BLIS would give per-call threads through rntm_t).
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "device/gemm.h"
#include "device/host_blas.h"

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

/* MPT_ERR_RANGE for a region past its buffer's end.  size[i]: region i's
 * buffer size when known (0: read from OpenCL and filled in). */
static int check_sizes(mpt_device_t *dev, const region_t *r, size_t nr, const char *what,
                       size_t *size)
{
    for (size_t i = 0; i < nr; i++) {
        cl_int err = size[i] ? CL_SUCCESS
                             : clGetMemObjectInfo(r[i].mem, CL_MEM_SIZE, sizeof size[i],
                                                  &size[i], NULL);
        if (err != CL_SUCCESS)
            return mpt__fail_cl(err, "%s on device %d: reading a buffer's size", what,
                                dev->info.index);
        if (r[i].hi > size[i])
            return mpt__fail(MPT_ERR_RANGE, "%s on device %d: needs bytes [%zu, %zu) of a "
                             "buffer of %zu bytes", what, dev->info.index, r[i].lo, r[i].hi,
                             size[i]);
    }
    return MPT_OK;
}

/* Maps every region (the caller checked each against its buffer's size),
 * blocking (see the header comment for why that orders the queue). */
static int map_all(mpt_device_t *dev, region_t *r, size_t nr, const char *what)
{
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

static void use_threads(int threads)
{
#if defined(HAVE_OPENBLAS_SET_NUM_THREADS) && defined(HAVE_OPENBLAS_GET_NUM_THREADS)
    if (openblas_get_num_threads() != threads)
        openblas_set_num_threads(threads);
#else
    (void)threads; /* another CBLAS: its own default */
#endif
}

int mpt__gemm_threads_for(mpt_device_t *const *devs, size_t n)
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
        return 1;
    long share = cores / (long)hosts, threads = share;
    for (size_t i = 0; i < n; i++)
        if (devs[i]->gemm_host && (long)devs[i]->info.compute_units < threads)
            threads = devs[i]->info.compute_units;
    return threads < 1 ? 1 : (int)threads;
}

void mpt__gemm_set_threads(mpt_device_t *const *devs, size_t n)
{
    int threads = mpt__gemm_threads_for(devs, n);
    for (size_t i = 0; i < n; i++)
        if (devs[i]->gemm_host)
            devs[i]->blas_threads = threads;
}

const char *mpt__gemm_host_name(void)
{
#ifdef HAVE_OPENBLAS_GET_CONFIG
    return openblas_get_config();
#else
    return "CBLAS";
#endif
}

/* ---- host calls ------------------------------------------------------------ */

/* The block a native kernel receives (OpenCL copies it at the enqueue):
 * the call, the regions, the buffers, then the caller's argument. */
typedef struct {
    void (*fn)(void *arg, float *const *ptr);
    int threads;
    size_t n;                  /* regions */
    size_t off[MAX_REGIONS];   /* each region's first float in its buffer */
    size_t slot[MAX_REGIONS];  /* its buffer's entry in mem */
    void *mem[MAX_REGIONS];    /* the buffers' handles, for OpenCL to overwrite */
    char *host[MAX_REGIONS];   /* their host addresses, mapped at the enqueue */
    max_align_t arg[];         /* the caller's argument */
} native_t;

static void run_native(void *block)
{
    native_t *h = block;
    float *ptr[MAX_REGIONS];
    for (size_t i = 0; i < h->n; i++)
        ptr[i] = (float *)h->host[h->slot[i]] + h->off[i];
    use_threads(h->threads);
    h->fn(h->arg, ptr);
}

/* Host addresses of buffers a native call has mapped once.  On a device
 * whose buffers are host memory (the only kind that runs native calls) a
 * buffer's storage never moves, so its first map's address serves every
 * later call, and the map and unmap that each call enqueued per buffer
 * (two queue commands each, most of a small GEMM's overhead: mpt-bench
 * gemm's "queued" column at 128x128x256) are left out.  An entry goes
 * when OpenCL destroys its buffer (a destructor callback), before the
 * handle can name another buffer.  One table for the process: the
 * callback may come after the device that used the buffer is gone. */
typedef struct {
    cl_mem mem;
    char *host;
    size_t size; /* the buffer's, so that a call need not ask OpenCL again */
} known_t;

static known_t *known;
static size_t nknown, capknown;
static pthread_mutex_t known_lock = PTHREAD_MUTEX_INITIALIZER;

/* mem's host address and size when known (else NULL and 0). */
static char *known_host(cl_mem mem, size_t *size)
{
    char *host = NULL;
    *size = 0;
    pthread_mutex_lock(&known_lock);
    for (size_t i = 0; i < nknown && !host; i++)
        if (known[i].mem == mem)
            host = known[i].host, *size = known[i].size;
    pthread_mutex_unlock(&known_lock);
    return host;
}

static void CL_CALLBACK forget_host(cl_mem mem, void *unused)
{
    (void)unused;
    pthread_mutex_lock(&known_lock);
    for (size_t i = 0; i < nknown; i++)
        if (known[i].mem == mem) {
            known[i] = known[--nknown];
            break;
        }
    pthread_mutex_unlock(&known_lock);
}

/* Remembers mem's host address; without room or a destructor callback it
 * is not kept (the next call maps again). */
static void remember_host(cl_mem mem, char *host, size_t size)
{
    pthread_mutex_lock(&known_lock);
    int kept = 0;
    if (nknown == capknown) {
        size_t cap = capknown ? 2 * capknown : 64;
        known_t *grown = realloc(known, cap * sizeof *grown);
        if (grown)
            known = grown, capknown = cap;
    }
    if (nknown < capknown) {
        known[nknown++] = (known_t){mem, host, size};
        kept = 1;
    }
    pthread_mutex_unlock(&known_lock);
    if (kept && clSetMemObjectDestructorCallback(mem, forget_host, NULL) != CL_SUCCESS)
        forget_host(mem, NULL);
}

/* Enqueues fn as a native kernel over regions r (merged per buffer) for
 * args; its event counts as BLAS busy time while timing is on.  host[j]:
 * region j's buffer's address as known_host found it (NULL: mapped now),
 * buffer_size[j] its size. */
static int enqueue_native(mpt_device_t *dev, const char *what, const region_t *r, size_t nr,
                          char *const *host, const size_t *buffer_size,
                          const mpt__host_arg_t *args, size_t n,
                          void (*fn)(void *arg, float *const *ptr), const void *arg,
                          size_t arg_size)
{
    size_t size = sizeof(native_t) + arg_size;
    native_t *h = calloc(1, size);
    cl_mem mems[MAX_REGIONS];
    const void *locs[MAX_REGIONS];
    if (!h)
        return mpt__fail(MPT_ERR_NOMEM, "%s on device %d: out of memory", what,
                         dev->info.index);
    h->fn = fn, h->threads = dev->blas_threads, h->n = n;
    /* Each buffer's host address from a map enqueued without waiting
     * (on a host-unified device, the buffer's own memory) and unmapped at
     * once, the first time a call uses the buffer (then host[j]); the
     * native kernel queues behind both.  The addresses OpenCL
     * writes into the block are not used: PoCL 3.1 sorts the command's
     * buffers and then writes the i-th sorted buffer's address at
     * args_mem_loc[i], so a call got another buffer's address (found by
     * ASan: a GEMM wrote past a 128-byte buffer).  mem_list still makes
     * the runtime keep the buffers alive until the call has run. */
    cl_int err = CL_SUCCESS;
    for (size_t j = 0; j < nr; j++) {
        mems[j] = r[j].mem;
        h->mem[j] = r[j].mem;
        locs[j] = &h->mem[j];
        if ((h->host[j] = host[j])) /* mapped before: the same address */
            continue;
        h->host[j] = clEnqueueMapBuffer(dev->queue, r[j].mem, CL_FALSE, r[j].flags, 0,
                                        r[j].hi, 0, NULL, NULL, &err);
        if (!h->host[j] || err != CL_SUCCESS ||
            (err = clEnqueueUnmapMemObject(dev->queue, r[j].mem, h->host[j], 0, NULL, NULL)) !=
                CL_SUCCESS) {
            free(h);
            return mpt__fail_cl(err, "%s on device %d: mapping a buffer", what, dev->info.index);
        }
        remember_host(r[j].mem, h->host[j], buffer_size[j]);
    }
    for (size_t i = 0; i < n; i++) {
        h->off[i] = args[i].off;
        for (size_t j = 0; j < nr; j++)
            if (r[j].mem == args[i].mem)
                h->slot[i] = j;
    }
    if (arg_size)
        memcpy(h->arg, arg, arg_size);
    cl_event ev = NULL;
    err = clEnqueueNativeKernel(dev->queue, run_native, h, size, (cl_uint)nr, mems, locs,
                                       0, NULL, dev->timing ? &ev : NULL);
    free(h); /* OpenCL copied it */
    if (err != CL_SUCCESS)
        return mpt__fail_cl(err, "%s on device %d: enqueueing the host call", what,
                            dev->info.index);
    dev->blas_calls++;
    mpt__device_event(dev, ev, 1);
    return MPT_OK;
}

int mpt__host_call(mpt_device_t *dev, const char *what, const mpt__host_arg_t *args, size_t n,
                   void (*fn)(void *arg, float *const *ptr), const void *arg, size_t arg_size)
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
    char *host[MAX_REGIONS] = {NULL};
    size_t size[MAX_REGIONS] = {0};
    int native = dev->gemm_host == MPT_GEMM_HOST_NATIVE;
    for (size_t j = 0; native && j < nr; j++)
        host[j] = known_host(r[j].mem, &size[j]);
    MPT_TRY(check_sizes(dev, r, nr, what, size));
    if (native)
        return enqueue_native(dev, what, r, nr, host, size, args, n, fn, arg, arg_size);
    MPT_TRY(map_all(dev, r, nr, what));
    dev->blas_calls++;
    double t0 = dev->timing ? mpt__now() : 0;
    for (size_t i = 0; i < n; i++)
        ptr[i] = at(r, nr, args[i].mem, args[i].off);
    use_threads(dev->blas_threads);
    fn((void *)arg, ptr);
    if (dev->timing)
        dev->host_seconds += mpt__now() - t0;
    status = unmap_all(dev, r, nr, MPT_OK);
out:
    return status;
}

/* ---- GEMMs and the bias gradient as host calls ------------------------------ */

/* A (batched) GEMM; off holds a_off, b_off, c_off of each GEMM, made
 * relative to the regions' first floats (lo). */
typedef struct {
    int trans_a, trans_b;
    size_t m, n, k, lda, ldb, ldc, count;
    float alpha, beta;
    size_t off[]; /* 3 x count */
} gemm_arg_t;

/* ptr: A, B, C at their regions' first floats. */
static void host_gemm(void *arg, float *const *ptr)
{
    const gemm_arg_t *g = arg;
    for (size_t i = 0; i < g->count; i++)
        mpt__host_sgemm(g->trans_a, g->trans_b, g->m, g->n, g->k, g->alpha,
                        ptr[0] + g->off[3 * i], g->lda, ptr[1] + g->off[3 * i + 1], g->ldb,
                        g->beta, ptr[2] + g->off[3 * i + 2], g->ldc);
}

int mpt__gemm_host(mpt_device_t *dev, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                   float alpha, cl_mem a, const size_t *a_off, size_t lda, cl_mem b,
                   const size_t *b_off, size_t ldb, float beta, cl_mem c, const size_t *c_off,
                   size_t ldc, size_t count)
{
    const char *what = count == 1 ? "host GEMM" : "host batched GEMM";
    size_t arows = trans_a ? k : m, acols = trans_a ? m : k;
    size_t brows = trans_b ? n : k, bcols = trans_b ? k : n;
    /* CBLAS would report these through xerbla, which prints: check first. */
    if (lda < acols || ldb < bcols || ldc < n)
        return mpt__fail(MPT_ERR_INVALID, "%s %zux%zux%zu on device %d: leading dimensions "
                         "%zu, %zu, %zu below the rows' lengths %zu, %zu, %zu", what, m, n, k,
                         dev->info.index, lda, ldb, ldc, acols, bcols, n);
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
        ldc > INT_MAX)
        return mpt__fail(MPT_ERR_RANGE, "%s %zux%zux%zu on device %d: beyond CBLAS's int sizes",
                         what, m, n, k, dev->info.index);
    size_t arg_size = sizeof(gemm_arg_t) + 3 * count * sizeof(size_t);
    gemm_arg_t *g = malloc(arg_size);
    if (!g)
        return mpt__fail(MPT_ERR_NOMEM, "%s: out of memory for %zu GEMMs", what, count);
    *g = (gemm_arg_t){trans_a, trans_b, m, n, k, lda, ldb, ldc, count, alpha, beta};
    /* the floats each matrix spans, over the batch: [lo, hi) */
    size_t lo[3] = {SIZE_MAX, SIZE_MAX, SIZE_MAX}, hi[3] = {0, 0, 0};
    for (size_t i = 0; i < count; i++) {
        size_t o[3] = {a_off[i], b_off[i], c_off[i]},
               e[3] = {a_off[i] + (arows - 1) * lda + acols, b_off[i] + (brows - 1) * ldb + bcols,
                       c_off[i] + (m - 1) * ldc + n};
        for (int j = 0; j < 3; j++) {
            lo[j] = o[j] < lo[j] ? o[j] : lo[j];
            hi[j] = e[j] > hi[j] ? e[j] : hi[j];
        }
    }
    for (size_t i = 0; i < count; i++) {
        g->off[3 * i] = a_off[i] - lo[0];
        g->off[3 * i + 1] = b_off[i] - lo[1];
        g->off[3 * i + 2] = c_off[i] - lo[2];
    }
    mpt__host_arg_t args[3] = {{a, lo[0], hi[0] - lo[0], 0},
                               {b, lo[1], hi[1] - lo[1], 0},
                               {c, lo[2], hi[2] - lo[2], 1}};
    int status = mpt__host_call(dev, what, args, 3, host_gemm, g, arg_size);
    free(g);
    return status;
}

typedef struct {
    size_t rows, cols;
    float beta;
} sum_rows_arg_t;

/* ptr: db, then dy when there are rows.  Row by row, so that the inner
 * loop runs along memory (and vectorises); beta = 0 writes without
 * reading, as BLAS does. */
static void host_sum_rows(void *arg, float *const *ptr)
{
    const sum_rows_arg_t *s = arg;
    float *sum = ptr[0];
    for (size_t j = 0; j < s->cols; j++)
        sum[j] = s->beta == 0.0f ? 0.0f : s->beta * sum[j];
    for (size_t i = 0; i < s->rows; i++) {
        const float *row = ptr[1] + i * s->cols;
        for (size_t j = 0; j < s->cols; j++)
            sum[j] += row[j];
    }
}

int mpt__gemm_host_sum_rows(mpt_device_t *dev, cl_mem dy, size_t dy_off, size_t rows,
                            size_t cols, float beta, cl_mem db, size_t db_off)
{
    sum_rows_arg_t s = {rows, cols, beta};
    mpt__host_arg_t args[2] = {{db, db_off, cols, 1}, {dy, dy_off, rows * cols, 0}};
    return mpt__host_call(dev, "host bias gradient", args, rows ? 2 : 1, host_sum_rows, &s,
                          sizeof s);
}

void mpt__host_sgemm(int trans_a, int trans_b, size_t m, size_t n,
                     size_t k, float alpha, const float *a, size_t lda, const float *b,
                     size_t ldb, float beta, float *c, size_t ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a, (int)lda,
                b, (int)ldb, beta, c, (int)ldc);
}
