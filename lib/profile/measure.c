/*
 * profile/measure.c: measures what the planner needs to know of a device:
 * SGEMM rate at a few shapes (through the device's GEMM provider), device
 * memory bandwidth (copy kernel), host<->device transfer rates and kernel
 * launch latency.
 *
 * Every figure is the median of at least five repetitions after a warm-up
 * (the first call also compiles the kernels), and the profile's noise is
 * the largest relative spread (max - min) / median of any figure.
 *
 * mpt__profile_measure_shared times devices that share cores (shared.c
 * finds them) alone and all at once, in alternating rounds, and gives each
 * device's together / alone rate: the machine's load drifts between
 * rounds, and the ratio of neighbouring phases cancels the drift that two
 * separate measurements would keep.
 *
 * Host-BLAS threads: a device alone is measured with its own count (all
 * the cores its compute units cover, device/gemm_host.c), whatever other
 * devices the process opened; in the shared measurement each device runs
 * its alone phases with that count and its together phases with the
 * group's, as a plan runs them.  Left out: fp16 rates, pinned host memory
 * and peer-to-peer copies.
 */
#define _POSIX_C_SOURCE 200809L /* pthread barriers */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <clblast_c.h>

#include "device/device.h"
#include "device/gemm.h"
#include "profile/profile.h"

#define MIN_SECONDS 0.3 /* time each figure for at least this long... */
#define MAX_REPS 20     /* ...or at most this many repetitions */
#define MIN_REPS 5      /* and at least this many, for a median and a spread */

int mpt__profile_quick(void)
{
    return strcmp(mpt__env(MPT_ENV_PROFILE_QUICK), "1") == 0;
}

typedef int (*run_fn)(void *ctx);

/* Median seconds of one run of fn, after one untimed warm-up, over at
 * least MIN_REPS runs; *noise (may be NULL) is raised to the runs' spread
 * (max - min) / median when that is larger.  The median, not the best: on
 * a busy machine the best run is luck, and plans made from it promise
 * more than the device delivers; the spread says how far to trust it. */
static int best_time_noise(run_fn fn, void *ctx, double *best, double *noise)
{
    double t[MAX_REPS], spent = 0;
    int status = fn(ctx), n = 0;
    *best = 1e30;
    for (; status == MPT_OK && n < MAX_REPS && (spent < MIN_SECONDS || n < MIN_REPS); n++) {
        double t0 = mpt__now();
        status = fn(ctx);
        t[n] = mpt__now() - t0;
        spent += t[n];
    }
    if (status < 0 || n == 0)
        return status;
    for (int i = 1; i < n; i++) /* insertion sort: at most MAX_REPS */
        for (int j = i; j > 0 && t[j - 1] > t[j]; j--) {
            double x = t[j];
            t[j] = t[j - 1], t[j - 1] = x;
        }
    *best = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    if (noise && *best > 0 && (t[n - 1] - t[0]) / *best > *noise)
        *noise = (t[n - 1] - t[0]) / *best;
    return MPT_OK;
}

typedef struct {
    mpt_device_t *dev;
    unsigned m, n, k;
    cl_mem a, b, c;
} gemm_ctx;

/* Through the device's GEMM provider, so that the profile (and the plans
 * made from it) measure the GEMMs training will run. */
static int run_gemm(void *p)
{
    gemm_ctx *g = p;
    int status = mpt__gemm(g->dev, 0, 0, g->m, g->n, g->k, 1.0f, g->a, 0, g->k, g->b, 0, g->n,
                           0.0f, g->c, 0, g->n);
    return status < 0 ? status : mpt_device_finish(g->dev);
}

static int make_filled(mpt_device_t *dev, size_t floats, cl_mem *out)
{
    mpt_buffer_t *buf = NULL;
    float *host = malloc(floats * sizeof *host);
    int status = host ? mpt_buffer_create(dev, floats * sizeof *host, &buf)
                      : mpt__fail(MPT_ERR_NOMEM, "out of memory");
    if (status == MPT_OK) {
        for (size_t i = 0; i < floats; i++)
            host[i] = (float)(i % 7) * 0.25f - 0.75f;
        status = mpt_buffer_write(buf, 0, host, floats * sizeof *host);
    }
    free(host);
    *out = NULL;
    if (status == MPT_OK) {
        *out = buf->mem; /* keep the cl_mem, drop the wrapper */
        clRetainMemObject(*out);
    }
    mpt_buffer_free(buf);
    return status;
}

static int measure_gemm(mpt_device_t *dev, mpt_gemm_point_t *pt, double *noise)
{
    gemm_ctx g = {dev, pt->m, pt->n, pt->k, NULL, NULL, NULL};
    double t;
    int status;
    MPT_TRY(make_filled(dev, (size_t)pt->m * pt->k, &g.a));
    MPT_TRY(make_filled(dev, (size_t)pt->k * pt->n, &g.b));
    MPT_TRY(make_filled(dev, (size_t)pt->m * pt->n, &g.c));
    MPT_TRY(best_time_noise(run_gemm, &g, &t, noise));
    pt->gflops = 2.0 * pt->m * pt->n * pt->k / t * 1e-9;
out:
    if (g.a)
        clReleaseMemObject(g.a);
    if (g.b)
        clReleaseMemObject(g.b);
    if (g.c)
        clReleaseMemObject(g.c);
    return status;
}

typedef struct {
    mpt_device_t *dev;
    cl_kernel kernel;
    size_t global;
    cl_mem dst, src;
    void *host;
    size_t bytes;
} io_ctx;

static int run_kernel(void *p)
{
    io_ctx *c = p;
    cl_int err = clEnqueueNDRangeKernel(c->dev->queue, c->kernel, 1, NULL, &c->global, NULL, 0,
                                        NULL, NULL);
    if (err == CL_SUCCESS)
        err = clFinish(c->dev->queue);
    return err == CL_SUCCESS ? MPT_OK : mpt__fail_cl(err, "running a profiling kernel");
}

static int run_write(void *p)
{
    io_ctx *c = p;
    cl_int err =
        clEnqueueWriteBuffer(c->dev->queue, c->dst, CL_TRUE, 0, c->bytes, c->host, 0, NULL, NULL);
    return err == CL_SUCCESS ? MPT_OK : mpt__fail_cl(err, "host-to-device transfer");
}

static int run_read(void *p)
{
    io_ctx *c = p;
    cl_int err =
        clEnqueueReadBuffer(c->dev->queue, c->src, CL_TRUE, 0, c->bytes, c->host, 0, NULL, NULL);
    return err == CL_SUCCESS ? MPT_OK : mpt__fail_cl(err, "device-to-host transfer");
}

/* Copy bandwidth, transfers both ways, and the launch latency. */
static int measure_memory(mpt_device_t *dev, mpt_profile_t *out)
{
    size_t bytes = (mpt__profile_quick() ? 8u : 64u) << 20;
    if (bytes > dev->info.max_alloc_bytes / 2)
        bytes = (size_t)(dev->info.max_alloc_bytes / 2) & ~(size_t)15;
    io_ctx c = {dev, NULL, bytes / 16, NULL, NULL, NULL, bytes};
    cl_uint n4 = (cl_uint)(bytes / 16);
    double t;
    int status;

    MPT_TRY(make_filled(dev, bytes / sizeof(float), &c.src));
    MPT_TRY(make_filled(dev, bytes / sizeof(float), &c.dst));
    if (!(c.host = calloc(1, bytes))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    MPT_TRY(mpt__device_kernel(dev, "bench", "mpt_copy4", &c.kernel));
    clSetKernelArg(c.kernel, 0, sizeof c.dst, &c.dst);
    clSetKernelArg(c.kernel, 1, sizeof c.src, &c.src);
    clSetKernelArg(c.kernel, 2, sizeof n4, &n4);
    MPT_TRY(best_time_noise(run_kernel, &c, &t, &out->noise));
    out->mem_gbps = 2.0 * (double)bytes / t * 1e-9; /* read + write */
    MPT_TRY(best_time_noise(run_write, &c, &t, &out->noise));
    out->h2d_gbps = (double)bytes / t * 1e-9;
    MPT_TRY(best_time_noise(run_read, &c, &t, &out->noise));
    out->d2h_gbps = (double)bytes / t * 1e-9;

    MPT_TRY(mpt__device_kernel(dev, "bench", "mpt_noop", &c.kernel));
    clSetKernelArg(c.kernel, 0, sizeof c.dst, &c.dst);
    c.global = 1;
    MPT_TRY(best_time_noise(run_kernel, &c, &t, NULL));
    out->launch_us = t * 1e6; /* no part of the noise: microseconds jitter by nature */
out:
    free(c.host);
    if (c.src)
        clReleaseMemObject(c.src);
    if (c.dst)
        clReleaseMemObject(c.dst);
    return status;
}

/* mpt_profile_measure, with dev's BLAS threads set. */
static int measure(mpt_device_t *dev, mpt_profile_t *out)
{
    /* Square GEMMs of three sizes, and the tall-skinny shape of a weight
     * gradient with a small batch. */
    static const unsigned shapes[MPT_PROFILE_GEMM_SHAPES][3] = {
        {256, 256, 256}, {1024, 1024, 1024}, {2048, 2048, 2048}, {4096, 64, 1024}};
    unsigned div = mpt__profile_quick() ? 4 : 1;
    int status = MPT_OK;
    for (int i = 0; i < MPT_PROFILE_GEMM_SHAPES; i++) {
        mpt_gemm_point_t *pt = &out->gemm[i];
        pt->m = shapes[i][0] / div, pt->n = shapes[i][1], pt->k = shapes[i][2] / div;
        if (shapes[i][1] > 64)
            pt->n /= div;
        if ((status = measure_gemm(dev, pt, &out->noise)) < 0)
            return mpt__fail_context(status, "profiling device %d (%s)", dev->info.index,
                                     dev->info.name);
        if (pt->gflops > out->gemm_gflops)
            out->gemm_gflops = pt->gflops;
    }
    if ((status = measure_memory(dev, out)) < 0)
        return mpt__fail_context(status, "profiling device %d (%s)", dev->info.index,
                                 dev->info.name);
    out->measured_at = mpt__wall_time();
    return MPT_OK;
}

int mpt_profile_measure(mpt_device_t *dev, mpt_profile_t *out)
{
    if (!dev || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_profile_measure: NULL argument");
    memset(out, 0, sizeof *out);
    int threads = dev->blas_threads; /* the device's own count, then back */
    mpt__gemm_set_threads(&dev, 1);
    int status = measure(dev, out);
    dev->blas_threads = threads;
    return status;
}

/* ---- devices together (shared.c) ------------------------------------------ */

#define SHARED_ROUNDS 5        /* alone, together, alone, together... */
#define SHARED_PHASE_S 0.04    /* each device's share of a phase, seconds */
#define SHARED_MAX_REPS 4096   /* a profile that overstates the device ten-thousandfold
                                * must not make a phase last minutes */

typedef struct {
    gemm_ctx g;
    io_ctx c;
    int reps[2];                  /* calls per phase: GEMM, copy */
    int threads_alone, threads_together; /* its host-BLAS threads in each phase */
    double alone[2][SHARED_ROUNDS], together[2][SHARED_ROUNDS];
    size_t me;
    struct shared_run *run;
    int status;
} shared_dev;

typedef struct shared_run {
    shared_dev *devs;
    size_t n;
    const size_t *turn; /* device i's turn among nturns (the job's group); NULL: i */
    size_t nturns;
    pthread_barrier_t bar; /* the devices' threads and the caller's */
    /* the gate: threads start when every one exists (go), or leave (stop) */
    pthread_mutex_t lock;
    pthread_cond_t open;
    int go, stop;
} shared_run;

static int timed(run_fn fn, void *ctx, int reps, double *seconds)
{
    int status = MPT_OK;
    double t0 = mpt__now();
    for (int i = 0; i < reps && status == MPT_OK; i++)
        status = fn(ctx);
    *seconds = mpt__now() - t0;
    return status;
}

/* One device's thread: every phase starts and ends at the barrier, so a
 * "together" phase has every device working and an "alone" phase one (of
 * the whole group: under a job the caller's thread holds each phase
 * until every rank ended the one before). */
static void *shared_main(void *arg)
{
    shared_dev *d = arg;
    shared_run *r = d->run;
    run_fn fns[2] = {run_gemm, run_kernel};
    void *ctx[2] = {&d->g, &d->c};
    pthread_mutex_lock(&r->lock);
    while (!r->go && !r->stop)
        pthread_cond_wait(&r->open, &r->lock);
    int stop = r->stop;
    pthread_mutex_unlock(&r->lock);
    if (stop)
        return NULL;
    for (int round = 0; round < SHARED_ROUNDS; round++)
        for (int k = 0; k < 2; k++) {
            for (size_t who = 0; who < r->nturns; who++) {
                pthread_barrier_wait(&r->bar);
                d->g.dev->blas_threads = d->threads_alone;
                if (who == (r->turn ? r->turn[d->me] : d->me) && d->status == MPT_OK)
                    d->status = timed(fns[k], ctx[k], d->reps[k], &d->alone[k][round]);
                pthread_barrier_wait(&r->bar);
            }
            d->g.dev->blas_threads = d->threads_together;
            pthread_barrier_wait(&r->bar);
            if (d->status == MPT_OK)
                d->status = timed(fns[k], ctx[k], d->reps[k], &d->together[k][round]);
            pthread_barrier_wait(&r->bar);
        }
    return NULL;
}

static double median5(double *t)
{
    for (int i = 1; i < SHARED_ROUNDS; i++)
        for (int j = i; j > 0 && t[j - 1] > t[j]; j--) {
            double x = t[j];
            t[j] = t[j - 1], t[j - 1] = x;
        }
    return t[SHARED_ROUNDS / 2];
}

/* Buffers, kernel and repetitions of device d; gemm_gflops and mem_gbps
 * (its profile's) size the repetitions to SHARED_PHASE_S. */
static int shared_prepare(mpt_device_t *dev, double gemm_gflops, double mem_gbps, shared_dev *d)
{
    unsigned s = mpt__profile_quick() ? 256 : 512;
    size_t bytes = (mpt__profile_quick() ? 4u : 16u) << 20;
    cl_uint n4 = (cl_uint)(bytes / 16);
    int status;
    d->g = (gemm_ctx){dev, s, s, s, NULL, NULL, NULL};
    d->c = (io_ctx){dev, NULL, bytes / 16, NULL, NULL, NULL, bytes};
    MPT_TRY(make_filled(dev, (size_t)s * s, &d->g.a));
    MPT_TRY(make_filled(dev, (size_t)s * s, &d->g.b));
    MPT_TRY(make_filled(dev, (size_t)s * s, &d->g.c));
    MPT_TRY(make_filled(dev, bytes / sizeof(float), &d->c.src));
    MPT_TRY(make_filled(dev, bytes / sizeof(float), &d->c.dst));
    MPT_TRY(mpt__device_kernel(dev, "bench", "mpt_copy4", &d->c.kernel));
    clSetKernelArg(d->c.kernel, 0, sizeof d->c.dst, &d->c.dst);
    clSetKernelArg(d->c.kernel, 1, sizeof d->c.src, &d->c.src);
    clSetKernelArg(d->c.kernel, 2, sizeof n4, &n4);
    double gemm_s = 2.0 * s * s * s / (gemm_gflops * 1e9), copy_s = 2.0 * bytes / (mem_gbps * 1e9);
    double want[2] = {gemm_s > 0 ? SHARED_PHASE_S / gemm_s : 1,
                      copy_s > 0 ? SHARED_PHASE_S / copy_s : 1};
    for (int k = 0; k < 2; k++)
        d->reps[k] = want[k] < 1 ? 1 : want[k] > SHARED_MAX_REPS ? SHARED_MAX_REPS : (int)want[k];
    /* The first calls build the kernels: one at a time (CLBlast 1.5.3
     * races on concurrent first calls, ENVIRONMENT.md). */
    MPT_TRY(run_gemm(&d->g));
    MPT_TRY(run_kernel(&d->c));
out:
    return status;
}

static void shared_release(shared_dev *d)
{
    cl_mem m[5] = {d->g.a, d->g.b, d->g.c, d->c.src, d->c.dst};
    for (int i = 0; i < 5; i++)
        if (m[i])
            clReleaseMemObject(m[i]);
}

/* The caller's part in every phase: the start and end barriers, then the
 * job's (sync: every rank has ended the phase), and one sync before the
 * first (every rank has built its kernels, which would otherwise run
 * beside another rank's first phase); sync is called as often whether or
 * not this rank's devices run, so that no rank waits for a call another
 * never makes. */
static int shared_phases(shared_run *r, int with_devices, int (*sync)(void *), void *sync_ctx)
{
    int status = sync ? sync(sync_ctx) : MPT_OK;
    size_t phases = (size_t)SHARED_ROUNDS * 2 * (r->nturns + 1);
    for (size_t i = 0; i < phases; i++) {
        if (with_devices) {
            pthread_barrier_wait(&r->bar);
            pthread_barrier_wait(&r->bar);
        }
        int s = sync ? sync(sync_ctx) : MPT_OK;
        status = status < 0 ? status : s;
    }
    return status;
}

int mpt__profile_measure_shared(mpt_device_t **devs, const mpt_profile_t *alone, size_t n,
                                double *gemm_ratio, double *mem_ratio)
{
    return mpt__profile_measure_shared_job(devs, alone, n, NULL, n, NULL, NULL, gemm_ratio,
                                           mem_ratio);
}

int mpt__profile_measure_shared_job(mpt_device_t **devs, const mpt_profile_t *alone, size_t n,
                                    const size_t *turn, size_t nturns, int (*sync)(void *),
                                    void *sync_ctx, double *gemm_ratio, double *mem_ratio)
{
    shared_run r = {.devs = calloc(n ? n : 1, sizeof(shared_dev)), .n = n, .turn = turn,
                    .nturns = nturns, .lock = PTHREAD_MUTEX_INITIALIZER,
                    .open = PTHREAD_COND_INITIALIZER};
    pthread_t *threads = calloc(n ? n : 1, sizeof *threads);
    int *kept = calloc(n ? n : 1, sizeof *kept); /* the devices' BLAS threads before */
    size_t started = 0;
    int status = MPT_OK, barrier = 0, ran = 0;
    if (!r.devs || !threads || !kept) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        kept[i] = devs[i]->blas_threads;
    int together = mpt__gemm_threads_for(devs, n);
    for (size_t i = 0; i < n; i++) {
        r.devs[i].me = i, r.devs[i].run = &r;
        r.devs[i].threads_alone = mpt__gemm_threads_for(&devs[i], 1);
        r.devs[i].threads_together = together;
        if ((status = shared_prepare(devs[i], alone[i].gemm_gflops, alone[i].mem_gbps,
                                     &r.devs[i])) < 0) {
            status = mpt__fail_context(status, "profiling device %d (%s) beside the devices "
                                       "that share its cores", devs[i]->info.index,
                                       devs[i]->info.name);
            goto out;
        }
    }
    if (pthread_barrier_init(&r.bar, NULL, (unsigned)n + 1) != 0) {
        status = mpt__fail(MPT_ERR_NOMEM, "no barrier for the shared profile");
        goto out;
    }
    barrier = 1;
    for (; started < n; started++)
        if (pthread_create(&threads[started], NULL, shared_main, &r.devs[started]) != 0)
            break;
    /* Without every thread the barriers would wait forever: then none runs. */
    if (started < n)
        status = mpt__fail(MPT_ERR_NOMEM, "no thread for the shared profile");
    pthread_mutex_lock(&r.lock);
    r.go = started == n, r.stop = started < n;
    pthread_cond_broadcast(&r.open);
    pthread_mutex_unlock(&r.lock);
    ran = 1;
    int synced = shared_phases(&r, started == n, sync, sync_ctx);
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    status = status < 0 ? status : synced;
    for (size_t i = 0; i < n && status == MPT_OK; i++) {
        shared_dev *d = &r.devs[i];
        if ((status = d->status) < 0)
            break;
        double *ratio[2] = {gemm_ratio, mem_ratio};
        for (int k = 0; k < 2; k++) {
            double a = median5(d->alone[k]), t = median5(d->together[k]);
            ratio[k][i] = a > 0 && t > 0 ? a / t : 1.0;
        }
    }
out:
    if (!ran && sync) /* the other ranks' phases go on without this one's devices */
        shared_phases(&r, 0, sync, sync_ctx);
    if (barrier)
        pthread_barrier_destroy(&r.bar);
    for (size_t i = 0; r.devs && i < n; i++)
        shared_release(&r.devs[i]);
    for (size_t i = 0; kept && i < n; i++)
        devs[i]->blas_threads = kept[i];
    free(kept);
    free(r.devs);
    free(threads);
    return status;
}
