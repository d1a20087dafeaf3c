/*
 * comm/ring.c: the collectives of comm.h as rings over any transport.
 *
 * Reduce-scatter: n-1 steps; at step s member r sends shard (r-s-1) to its
 * right neighbour and adds the shard (r-s-2) coming from its left into its
 * own copy, so that shard j is summed in the fixed order j+1, j+2, ..., j:
 * the same bits on every run whatever the timing.  All-gather: n-1 steps
 * passing the finished shards on; the bits are copied, so every member
 * ends with the same values.  Allreduce is the two, on shards of count/n
 * elements cut at 64-byte boundaries.  Broadcast is a pipelined chain.
 *
 * Each step is cut into chunks of RING_CHUNK_BYTES.  The receive of chunk
 * i+1 is posted (into the other half of a double buffer) before chunk i is
 * waited for and added, and the send of chunk i+1 before the send of chunk
 * i is waited for, so that on the local transport one thread adds while
 * its neighbour copies the next chunk in.  Deadlock freedom: at iteration
 * i every member posts its chunk-i send and receive before it blocks on
 * anything of chunk i-1, so the member furthest behind can always proceed.
 *
 * On failure a member aborts the transport (unless the failure is that
 * abort) and waits out its posted requests before returning, so that no
 * request outlives the buffers it points into.
 *
 * Deliberately left out: overlap of one step's sends with the previous
 * step's adds (a step ends with a wait on all its requests; the cost is
 * one chunk of latency per step), tree algorithms for small messages.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"

/* 256 KiB: two receive halves (512 KiB) stay within this machine's 512 KiB
 * L2 per core, so the add reads the received chunk from cache, while a
 * chunk is still large enough (64 Ki floats) that the per-message cost
 * (a lock, a match, a wake-up: a few microseconds) stays under 5% of the
 * copy at ~10 GB/s.  A multiple of 64 bytes, so chunks of a shard that
 * starts 64-byte aligned stay aligned. */
#ifndef RING_CHUNK_BYTES
#define RING_CHUNK_BYTES ((size_t)256 * 1024)
#endif

/* Allreduce shards start at multiples of this many floats (64 bytes). */
#define SHARD_ALIGN 16

typedef struct {
    const mpt__group_t *g;
    int self, left, right; /* endpoints */
    char *base;            /* the collective's buffer */
    char *scratch[2];      /* receive halves for the adds */
    char *scratch_alloc;
    const mpt__ring_hooks_t *hooks;
    int rs_phase, ag_phase; /* MPT__PHASE_* of the two halves */
} ring_t;

/* dst[i] += src[i] for i < n, as blocks of 16: gcc -O2 uses the "very
 * cheap" vectoriser cost model, which only vectorises loops whose trip
 * count is a known multiple of the vector width, and a fixed 16-trip inner
 * loop is one.  restrict: the two never overlap (src is a receive buffer).
 * Element-wise, so the order of the sum over members is untouched. */
static void add_floats(float *restrict dst, const float *restrict src, size_t n)
{
    size_t blocks = n / 16;
    for (size_t b = 0; b < blocks; b++, dst += 16, src += 16)
        for (int k = 0; k < 16; k++)
            dst[k] += src[k];
    for (size_t k = 0; k < n % 16; k++)
        dst[k] += src[k];
}

static size_t nchunks(size_t bytes)
{
    return (bytes + RING_CHUNK_BYTES - 1) / RING_CHUNK_BYTES;
}

static size_t chunk_bytes(size_t bytes, size_t i)
{
    size_t rest = bytes - i * RING_CHUNK_BYTES;
    return rest < RING_CHUNK_BYTES ? rest : RING_CHUNK_BYTES;
}

static int mod(int a, int n)
{
    return ((a % n) + n) % n;
}

static int check_group(const mpt__group_t *g, const char *what)
{
    if (!g || !g->t || !g->members || g->size < 1 || g->self < 0 || g->self >= g->size)
        return mpt__fail(MPT_ERR_INVALID, "%s: need a group with a transport, members and "
                         "0 <= self < size", what);
    if (g->tag < 0 || g->tag > MPT__GROUP_TAG_MAX)
        return mpt__fail(MPT_ERR_INVALID, "%s: group tag %d outside 0..%d", what, g->tag,
                         MPT__GROUP_TAG_MAX);
    for (int i = 0; i < g->size; i++)
        if (g->members[i] < 0 || g->members[i] >= g->t->nendpoints)
            return mpt__fail(MPT_ERR_INVALID, "%s: member %d is endpoint %d, but the %s "
                             "transport has endpoints 0..%d", what, i, g->members[i],
                             g->t->ops->name, g->t->nendpoints - 1);
    return MPT_OK;
}

/* Waits for the request in *slot, if any, and empties the slot. */
static int wait_take(mpt__transport_t *t, mpt__request_t **slot)
{
    mpt__request_t *q = *slot;
    *slot = NULL;
    return q ? mpt__wait(t, q) : MPT_OK;
}

/* The failure path of every collective: tell the others (unless the
 * failure is their abort), wait out what is posted, keep the detail. */
static int ring_fail(const ring_t *r, int status, mpt__request_t **reqs, size_t nreqs)
{
    char why[1024];
    snprintf(why, sizeof why, "%s", mpt_last_error());
    if (status != MPT_ERR_ABORTED) {
        char reason[1200];
        snprintf(reason, sizeof reason, "endpoint %d: %s", r->self, why);
        mpt__transport_abort(r->g->t, status, reason);
    }
    for (size_t i = 0; i < nreqs; i++)
        wait_take(r->g->t, &reqs[i]); /* returns at once now: aborted */
    return mpt__fail(status, "%s", why);
}

static int hook(const ring_t *r, int done, size_t byte_off, size_t bytes)
{
    if (!r->hooks || bytes == 0)
        return MPT_OK;
    int (*f)(void *, size_t, size_t) = done ? r->hooks->done : r->hooks->need;
    return f ? f(r->hooks->ctx, byte_off / sizeof(float), bytes / sizeof(float)) : MPT_OK;
}

/* One ring step: send bytes [soff, soff + sbytes) of the buffer to the
 * right, receive [roff, roff + rbytes) from the left: added into the
 * buffer (reduce) or straight into place (finished values, then `done`). */
static int ring_step(const ring_t *r, int tag, size_t soff, size_t sbytes, size_t roff,
                     size_t rbytes, int reduce)
{
    mpt__transport_t *t = r->g->t;
    mpt__request_t *reqs[4] = {NULL, NULL, NULL, NULL}; /* sends 0, 1; receives 2, 3 */
    size_t ns = nchunks(sbytes), nr = nchunks(rbytes), n = ns > nr ? ns : nr;
    int status = MPT_OK;
    for (size_t i = 0; i <= n; i++) {
        if (i < ns) {
            size_t off = soff + i * RING_CHUNK_BYTES, len = chunk_bytes(sbytes, i);
            MPT_TRY(hook(r, 0, off, len));
            MPT_TRY(mpt__isend(t, r->self, r->right, tag, r->base + off, len, &reqs[i % 2]));
        }
        if (i < nr) {
            size_t off = roff + i * RING_CHUNK_BYTES, len = chunk_bytes(rbytes, i);
            void *into = reduce ? r->scratch[i % 2] : r->base + off;
            MPT_TRY(mpt__irecv(t, r->self, r->left, tag, into, len, &reqs[2 + i % 2]));
        }
        if (i >= 1 && i - 1 < nr) {
            size_t k = i - 1, off = roff + k * RING_CHUNK_BYTES, len = chunk_bytes(rbytes, k);
            MPT_TRY(wait_take(t, &reqs[2 + k % 2]));
            if (reduce) {
                MPT_TRY(hook(r, 0, off, len));
                add_floats((float *)(r->base + off), (const float *)r->scratch[k % 2],
                           len / sizeof(float));
            } else {
                MPT_TRY(hook(r, 1, off, len));
            }
        }
        if (i >= 1 && i - 1 < ns)
            MPT_TRY(wait_take(t, &reqs[(i - 1) % 2]));
    }
out:
    return status < 0 ? ring_fail(r, status, reqs, 4) : MPT_OK;
}

/* Sets up the ring of g over buf; scratch for adds when `reduce_bytes`
 * (the largest shard) is not 0. */
static int ring_open(ring_t *r, const mpt__group_t *g, void *buf, size_t reduce_bytes,
                     const mpt__ring_hooks_t *hooks)
{
    *r = (ring_t){.g = g, .self = g->members[g->self],
                  .left = g->members[mod(g->self - 1, g->size)],
                  .right = g->members[mod(g->self + 1, g->size)], .base = buf, .hooks = hooks,
                  .rs_phase = MPT__PHASE_REDUCE_SCATTER, .ag_phase = MPT__PHASE_ALLGATHER};
    size_t half = reduce_bytes < RING_CHUNK_BYTES ? reduce_bytes : RING_CHUNK_BYTES;
    if (half == 0)
        return MPT_OK;
    r->scratch_alloc = malloc(2 * half + 2 * 4096);
    if (!r->scratch_alloc)
        return mpt__fail(MPT_ERR_NOMEM, "ring collective: out of memory for %zu bytes of "
                         "receive buffers", 2 * half);
    /* Half a page away from the buffer modulo 4 KiB: when the add's loads
     * (scratch) and stores (buffer) share their low 12 address bits, the
     * CPU takes the loads for dependent on the stores ("4K aliasing"), and
     * large buffers and this scratch are both page-aligned by malloc. */
    uintptr_t skew = ((uintptr_t)buf + 2048 - (uintptr_t)r->scratch_alloc) & 4095;
    r->scratch[0] = r->scratch_alloc + skew;
    r->scratch[1] = r->scratch[0] + half + 4096;
    return MPT_OK;
}

static void ring_close(ring_t *r)
{
    free(r->scratch_alloc);
}

/* Shard offsets (in bytes) from counts; the largest shard in *max_bytes. */
static int shard_offsets(const size_t *counts, int n, size_t **out, size_t *max_bytes)
{
    size_t *off = malloc(((size_t)n + 1) * sizeof *off);
    if (!off)
        return mpt__fail(MPT_ERR_NOMEM, "ring collective: out of memory");
    off[0] = 0;
    *max_bytes = 0;
    for (int i = 0; i < n; i++) {
        size_t bytes = counts[i] * sizeof(float);
        off[i + 1] = off[i] + bytes;
        if (bytes > *max_bytes)
            *max_bytes = bytes;
    }
    *out = off;
    return MPT_OK;
}

static int reduce_scatter_steps(const ring_t *r, const size_t *off)
{
    int n = r->g->size, me = r->g->self, status = MPT_OK;
    for (int s = 0; s < n - 1; s++) {
        int send = mod(me - s - 1, n), recv = mod(me - s - 2, n);
        MPT_TRY(ring_step(r, MPT__COLL_TAG(r->g->tag, r->rs_phase), off[send],
                          off[send + 1] - off[send], off[recv], off[recv + 1] - off[recv], 1));
    }
out:
    return status;
}

static int allgather_steps(const ring_t *r, const size_t *off)
{
    int n = r->g->size, me = r->g->self, status = MPT_OK;
    for (int s = 0; s < n - 1; s++) {
        int send = mod(me - s, n), recv = mod(me - s - 1, n);
        MPT_TRY(ring_step(r, MPT__COLL_TAG(r->g->tag, r->ag_phase), off[send],
                          off[send + 1] - off[send], off[recv], off[recv + 1] - off[recv], 0));
    }
out:
    return status;
}

static void set_stats(mpt__coll_stats_t *stats, double t0, size_t bytes)
{
    if (stats)
        *stats = (mpt__coll_stats_t){.seconds = mpt__now() - t0, .bytes = bytes};
}

/* The collectives that take counts: RS (rs_phase >= 0), AG (ag_phase >=
 * 0) or both (allreduce), with those phases' tags. */
int mpt__ring_phased(const mpt__group_t *g, float *buf, const size_t *counts, int rs_phase,
                     int ag_phase, const mpt__ring_hooks_t *hooks)
{
    ring_t r;
    size_t *off = NULL, max_bytes = 0;
    int status = MPT_OK, rs = rs_phase >= 0, ag = ag_phase >= 0;
    MPT_TRY(shard_offsets(counts, g->size, &off, &max_bytes));
    MPT_TRY(ring_open(&r, g, buf, rs ? max_bytes : 0, hooks));
    r.rs_phase = rs_phase, r.ag_phase = ag_phase;
    if (rs)
        status = reduce_scatter_steps(&r, off);
    if (status == MPT_OK && hooks) { /* this member's shard is final now */
        status = hook(&r, 0, off[g->self], off[g->self + 1] - off[g->self]);
        if (status == MPT_OK)
            status = hook(&r, 1, off[g->self], off[g->self + 1] - off[g->self]);
        if (status < 0)
            status = ring_fail(&r, status, NULL, 0);
    }
    if (status == MPT_OK && ag)
        status = allgather_steps(&r, off);
    ring_close(&r);
out:
    free(off);
    return status;
}

static int run_sharded(const mpt__group_t *g, float *buf, const size_t *counts, int rs, int ag,
                       const mpt__ring_hooks_t *hooks)
{
    return mpt__ring_phased(g, buf, counts, rs ? MPT__PHASE_REDUCE_SCATTER : -1,
                            ag ? MPT__PHASE_ALLGATHER : -1, hooks);
}

void mpt__ring_even_counts(size_t count, int n, size_t *counts)
{
    size_t prev = 0;
    for (int i = 0; i < n; i++) { /* near-equal shards, 64-byte aligned starts */
        size_t end = i + 1 == n ? count
                                : count / SHARD_ALIGN * (size_t)(i + 1) / (size_t)n * SHARD_ALIGN;
        counts[i] = end - prev;
        prev = end;
    }
}

int mpt__reduce_scatter(const mpt__group_t *g, float *buf, const size_t *counts,
                        mpt__coll_stats_t *stats)
{
    double t0 = mpt__now();
    int status = check_group(g, "reduce-scatter");
    if (status < 0)
        return status;
    if (!counts || !buf)
        return mpt__fail(MPT_ERR_INVALID, "reduce-scatter: need a buffer and counts");
    size_t total = 0;
    for (int i = 0; i < g->size; i++)
        total += counts[i];
    if (g->size > 1)
        status = run_sharded(g, buf, counts, 1, 0, NULL);
    set_stats(stats, t0, total * sizeof(float));
    return status;
}

int mpt__allgather(const mpt__group_t *g, float *buf, const size_t *counts,
                   mpt__coll_stats_t *stats)
{
    double t0 = mpt__now();
    int status = check_group(g, "all-gather");
    if (status < 0)
        return status;
    if (!counts || !buf)
        return mpt__fail(MPT_ERR_INVALID, "all-gather: need a buffer and counts");
    size_t total = 0;
    for (int i = 0; i < g->size; i++)
        total += counts[i];
    if (g->size > 1)
        status = run_sharded(g, buf, counts, 0, 1, NULL);
    set_stats(stats, t0, total * sizeof(float));
    return status;
}

int mpt__allreduce_hooked(const mpt__group_t *g, float *buf, size_t count,
                          const mpt__ring_hooks_t *hooks, mpt__coll_stats_t *stats)
{
    double t0 = mpt__now();
    int status = check_group(g, "allreduce");
    if (status < 0)
        return status;
    if (!buf && count > 0)
        return mpt__fail(MPT_ERR_INVALID, "allreduce: NULL buffer of %zu floats", count);
    int ran = 0;
    if (g->size > 1 && count > 0 && g->node)
        status = mpt__allreduce_hier(g, buf, count, hooks, &ran);
    if (ran || status < 0) {
        /* done, hierarchically */
    } else if (g->size > 1 && count > 0) {
        size_t *counts = malloc((size_t)g->size * sizeof *counts);
        if (!counts)
            return mpt__fail(MPT_ERR_NOMEM, "allreduce: out of memory");
        mpt__ring_even_counts(count, g->size, counts);
        status = run_sharded(g, buf, counts, 1, 1, hooks);
        free(counts);
    } else if (hooks) { /* nothing to exchange, but the owner still reads and writes */
        ring_t r = {.g = g, .base = (char *)buf, .hooks = hooks, .self = g->members[g->self]};
        if ((status = hook(&r, 0, 0, count * sizeof(float))) == MPT_OK)
            status = hook(&r, 1, 0, count * sizeof(float));
    }
    set_stats(stats, t0, count * sizeof(float));
    return status;
}

int mpt__allreduce(const mpt__group_t *g, float *buf, size_t count, mpt__coll_stats_t *stats)
{
    return mpt__allreduce_hooked(g, buf, count, NULL, stats);
}

/* Broadcast: the chain root, root+1, ..., root-1; each link forwards chunk
 * i as soon as it has it, so all links work at once on different chunks. */
int mpt__broadcast(const mpt__group_t *g, void *buf, size_t bytes, int root,
                   mpt__coll_stats_t *stats)
{
    double t0 = mpt__now();
    int status = check_group(g, "broadcast");
    if (status < 0)
        return status;
    if (root < 0 || root >= g->size)
        return mpt__fail(MPT_ERR_INVALID, "broadcast: root %d outside the group of %d", root,
                         g->size);
    if (!buf && bytes > 0)
        return mpt__fail(MPT_ERR_INVALID, "broadcast: NULL buffer of %zu bytes", bytes);
    if (g->size > 1 && bytes > 0) {
        ring_t r;
        mpt__request_t *reqs[4] = {NULL, NULL, NULL, NULL}; /* sends 0, 1; receives 2, 3 */
        mpt__transport_t *t = g->t;
        int tag = MPT__COLL_TAG(g->tag, MPT__PHASE_BROADCAST);
        int pos = mod(g->self - root, g->size); /* place in the chain */
        int sends = pos < g->size - 1, recvs = pos > 0;
        size_t n = nchunks(bytes);
        MPT_TRY(ring_open(&r, g, buf, 0, NULL));
        for (size_t i = 0; i <= n && status == MPT_OK; i++) {
            if (recvs && i < n)
                status = mpt__irecv(t, r.self, r.left, tag, r.base + i * RING_CHUNK_BYTES,
                                    chunk_bytes(bytes, i), &reqs[2 + i % 2]);
            if (status == MPT_OK && i >= 1 && recvs) /* chunk i-1 has to be here to go on */
                status = wait_take(t, &reqs[2 + (i - 1) % 2]);
            if (status == MPT_OK && sends && i >= 1) {
                size_t k = i - 1;
                status = wait_take(t, &reqs[k % 2]); /* chunk k-2's send, in the same slot */
                if (status == MPT_OK)
                    status = mpt__isend(t, r.self, r.right, tag, r.base + k * RING_CHUNK_BYTES,
                                        chunk_bytes(bytes, k), &reqs[k % 2]);
            }
        }
        for (int k = 0; k < 2 && status == MPT_OK; k++) /* the last sends */
            status = wait_take(t, &reqs[k]);
        if (status < 0)
            status = ring_fail(&r, status, reqs, 4);
        ring_close(&r);
    }
out:
    set_stats(stats, t0, bytes);
    return status;
}
