/*
 * comm/device_ring.c: allreduce of floats that live in a device buffer.
 *
 * Unified-memory devices (PoCL CPU devices, integrated GPUs): the range is
 * mapped (a blocking map on the in-order queue, so it waits for the
 * kernels that produced the values) and the ring works on the device's
 * own memory: no copy at all.
 *
 * Other devices: the range is staged through host memory in pieces of
 * STAGE_PIECE_BYTES.  A piece's non-blocking read is enqueued the first
 * time the ring needs it, with the next STAGE_LOOKAHEAD pieces, so the
 * device reads ahead while the ring adds and sends what has arrived (the
 * ring visits shards in descending order, pieces within a shard in
 * ascending order: one read stall per shard).  Every range the ring
 * reports final is written back at once, non-blocking; one clFinish at the
 * end waits for the last writes.
 *
 * Any OpenCL failure aborts the transport (so the other members return
 * MPT_ERR_ABORTED instead of waiting for this one) and is returned.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>

#include "comm/comm.h"
#include "device/device.h"

/* 1 MiB: four ring chunks, large enough that a read's fixed cost (tens of
 * microseconds to enqueue and complete) is small, small enough that the
 * stall at the start of each shard is short. */
#define STAGE_PIECE_BYTES ((size_t)1 << 20)
#define STAGE_LOOKAHEAD 3

typedef struct {
    mpt_buffer_t *buf;
    size_t offset; /* first float of the range in buf */
    size_t count;
    float *host;   /* the staged range */
    size_t npieces;
    cl_event *reads; /* per piece, NULL until enqueued */
    unsigned char *ready; /* per piece, 1 once its read was waited for */
} stage_t;

static int abort_with(const mpt__group_t *g, int status)
{
    char why[1200];
    snprintf(why, sizeof why, "endpoint %d: %s", g->members[g->self], mpt_last_error());
    mpt__transport_abort(g->t, status, why);
    return status;
}

static int check_args(const mpt__group_t *g, const mpt_buffer_t *buf, size_t offset,
                      size_t count)
{
    if (!g || !g->t || !g->members || g->self < 0 || g->self >= g->size)
        return mpt__fail(MPT_ERR_INVALID, "device allreduce: need a group");
    if (!buf || !buf->dev)
        return mpt__fail(MPT_ERR_INVALID, "device allreduce: need a device buffer");
    if (offset > buf->size / sizeof(float) || count > buf->size / sizeof(float) - offset)
        return mpt__fail(MPT_ERR_RANGE, "device allreduce: floats [%zu, %zu) outside a buffer "
                         "of %zu bytes on device %d", offset, offset + count, buf->size,
                         buf->dev->info.index);
    return MPT_OK;
}

static int enqueue_read(stage_t *s, size_t p)
{
    size_t first = p * STAGE_PIECE_BYTES / sizeof(float);
    size_t n = s->count - first < STAGE_PIECE_BYTES / sizeof(float)
                   ? s->count - first
                   : STAGE_PIECE_BYTES / sizeof(float);
    cl_int err = clEnqueueReadBuffer(s->buf->dev->queue, s->buf->mem, CL_FALSE,
                                     (s->offset + first) * sizeof(float), n * sizeof(float),
                                     s->host + first, 0, NULL, &s->reads[p]);
    if (err != CL_SUCCESS) {
        s->reads[p] = NULL;
        return mpt__fail_cl(err, "device allreduce: reading %zu bytes from device %d",
                            n * sizeof(float), s->buf->dev->info.index);
    }
    return MPT_OK;
}

static int stage_need(void *ctx, size_t first, size_t count)
{
    stage_t *s = ctx;
    size_t p0 = first * sizeof(float) / STAGE_PIECE_BYTES;
    size_t p1 = ((first + count) * sizeof(float) - 1) / STAGE_PIECE_BYTES;
    int status = MPT_OK;
    for (size_t p = p0; p <= p1 && p < s->npieces; p++) {
        if (s->ready[p])
            continue;
        for (size_t q = p; q <= p + STAGE_LOOKAHEAD && q < s->npieces; q++)
            if (!s->reads[q] && (status = enqueue_read(s, q)) < 0)
                return status;
        cl_int err = clWaitForEvents(1, &s->reads[p]);
        if (err != CL_SUCCESS)
            return mpt__fail_cl(err, "device allreduce: waiting for a read from device %d",
                                s->buf->dev->info.index);
        s->ready[p] = 1;
    }
    return MPT_OK;
}

static int stage_done(void *ctx, size_t first, size_t count)
{
    stage_t *s = ctx;
    cl_int err = clEnqueueWriteBuffer(s->buf->dev->queue, s->buf->mem, CL_FALSE,
                                      (s->offset + first) * sizeof(float), count * sizeof(float),
                                      s->host + first, 0, NULL, NULL);
    return err == CL_SUCCESS ? MPT_OK
                             : mpt__fail_cl(err, "device allreduce: writing %zu bytes to "
                                            "device %d", count * sizeof(float),
                                            s->buf->dev->info.index);
}

/* Waits for every read still writing into the staging memory and releases
 * the events: the memory is freed next, even after a failure. */
static void stage_free(stage_t *s)
{
    for (size_t p = 0; s->reads && p < s->npieces; p++)
        if (s->reads[p]) {
            clWaitForEvents(1, &s->reads[p]);
            clReleaseEvent(s->reads[p]);
        }
    free(s->reads);
    free(s->ready);
    free(s->host);
}

int mpt__allreduce_device_staged(const mpt__group_t *g, mpt_buffer_t *buf, size_t offset,
                                 size_t count, mpt__coll_stats_t *stats)
{
    double t0 = mpt__now();
    int status = check_args(g, buf, offset, count);
    if (status < 0)
        return g && g->t ? abort_with(g, status) : status;
    stage_t s = {.buf = buf, .offset = offset, .count = count,
                 .npieces = (count * sizeof(float) + STAGE_PIECE_BYTES - 1) / STAGE_PIECE_BYTES};
    s.host = malloc(count ? count * sizeof(float) : 1);
    s.reads = calloc(s.npieces + 1, sizeof *s.reads);
    s.ready = calloc(s.npieces + 1, 1);
    if (!s.host || !s.reads || !s.ready) {
        status = abort_with(g, mpt__fail(MPT_ERR_NOMEM, "device allreduce: out of memory "
                                         "staging %zu bytes", count * sizeof(float)));
        goto out;
    }
    mpt__ring_hooks_t hooks = {.need = stage_need, .done = stage_done, .ctx = &s};
    /* The ring aborts the transport itself when a hook fails. */
    MPT_TRY(mpt__allreduce_hooked(g, s.host, count, &hooks, NULL));
    cl_int err = clFinish(buf->dev->queue);
    if (err != CL_SUCCESS)
        status = abort_with(g, mpt__fail_cl(err, "device allreduce: finishing the writes to "
                                            "device %d", buf->dev->info.index));
out:
    stage_free(&s);
    if (stats)
        *stats = (mpt__coll_stats_t){.seconds = mpt__now() - t0, .bytes = count * sizeof(float)};
    return status;
}

int mpt__allreduce_device(const mpt__group_t *g, mpt_buffer_t *buf, size_t offset, size_t count,
                          mpt__coll_stats_t *stats)
{
    double t0 = mpt__now();
    int status = check_args(g, buf, offset, count);
    if (status < 0)
        return g && g->t ? abort_with(g, status) : status;
    if (!buf->dev->info.unified_memory)
        return mpt__allreduce_device_staged(g, buf, offset, count, stats);
    if (count == 0) /* a map of 0 bytes is invalid; the others still expect us */
        return mpt__allreduce(g, NULL, 0, stats);
    cl_int err;
    cl_command_queue q = buf->dev->queue;
    /* Blocking: the in-order queue runs it after the kernels that made the values. */
    float *host = clEnqueueMapBuffer(q, buf->mem, CL_TRUE, CL_MAP_READ | CL_MAP_WRITE,
                                     offset * sizeof(float), count * sizeof(float), 0, NULL, NULL,
                                     &err);
    if (!host)
        return abort_with(g, mpt__fail_cl(err, "device allreduce: mapping %zu bytes of device %d",
                                          count * sizeof(float), buf->dev->info.index));
    status = mpt__allreduce(g, host, count, NULL);
    err = clEnqueueUnmapMemObject(q, buf->mem, host, 0, NULL, NULL);
    if (err == CL_SUCCESS)
        err = clFinish(q);
    if (err != CL_SUCCESS && status == MPT_OK)
        status = abort_with(g, mpt__fail_cl(err, "device allreduce: unmapping %zu bytes of "
                                            "device %d", count * sizeof(float),
                                            buf->dev->info.index));
    if (stats)
        *stats = (mpt__coll_stats_t){.seconds = mpt__now() - t0, .bytes = count * sizeof(float)};
    return status;
}
