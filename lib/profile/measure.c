/*
 * profile/measure.c: measures what the planner needs to know of a device:
 * SGEMM rate at a few shapes (through the device's GEMM provider), device
 * memory bandwidth (copy kernel), host<->device transfer rates and kernel
 * launch latency.
 *
 * Every figure is the median of at least five repetitions after a warm-up
 * (the first call also compiles the kernels), and the profile's noise is
 * the largest relative spread (max - min) / median of any figure.  Left out: fp16 rates, pinned
 * host memory and peer-to-peer copies.
 */
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

int mpt_profile_measure(mpt_device_t *dev, mpt_profile_t *out)
{
    /* Square GEMMs of three sizes, and the tall-skinny shape of a weight
     * gradient with a small batch. */
    static const unsigned shapes[MPT_PROFILE_GEMM_SHAPES][3] = {
        {256, 256, 256}, {1024, 1024, 1024}, {2048, 2048, 2048}, {4096, 64, 1024}};
    unsigned div = mpt__profile_quick() ? 4 : 1;
    int status = MPT_OK;

    if (!dev || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_profile_measure: NULL argument");
    memset(out, 0, sizeof *out);
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
