/*
 * comm/comm.h: moving host buffers between endpoints, and the ring
 * collectives built on that, for the engine (and the benchmarks).  Never
 * installed.
 *
 * An endpoint is one participant: (rank, local device), numbered 0..n-1
 * across the whole job.  A transport moves bytes from one endpoint to
 * another with MPI-like non-blocking point-to-point operations (isend,
 * irecv, wait), matched by (source, destination, tag) in posting order.
 * `local` (comm/local.c) serves endpoints that are threads of one process;
 * `mpi` (a later issue) serves endpoints in other ranks with the same ops
 * table, so nothing above this header changes when it lands.
 *
 * A group (mpt__group_t) is an ordered list of endpoints that take part in
 * one collective; each member calls the collective from its own thread
 * with its position in the group.  Collectives are host-side rings
 * (allreduce = reduce-scatter + all-gather), chunked and pipelined, with
 * uneven shards (counts[i] elements owned by member i).  Sums are float32,
 * accumulated in ring order: every member gets bitwise the same result.
 *
 * Failure: any member that fails calls mpt__transport_abort; every pending
 * and later operation on that transport returns MPT_ERR_ABORTED at once
 * (no hang), and the detail names who aborted and why.
 */
#ifndef MPT_COMM_COMM_H
#define MPT_COMM_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

typedef struct mpt__transport mpt__transport_t;
typedef struct mpt__request mpt__request_t; /* one posted isend or irecv */

/* What a transport implements.  Every function is thread-safe: each
 * endpoint's thread calls them concurrently with the others'. */
typedef struct {
    const char *name; /* "local", "mpi" */
    /* Posts a send of `bytes` from `buf` (which must stay valid and
     * unchanged until the request completes). */
    int (*isend)(mpt__transport_t *t, int src, int dst, int tag, const void *buf, size_t bytes,
                 mpt__request_t **req);
    /* Posts a receive of exactly `bytes` into `buf`; a message of another
     * size is an MPT_ERR_INVALID failure of the wait. */
    int (*irecv)(mpt__transport_t *t, int dst, int src, int tag, void *buf, size_t bytes,
                 mpt__request_t **req);
    /* Waits for a request to complete and frees it; MPT_ERR_ABORTED when
     * the transport was aborted meanwhile. */
    int (*wait)(mpt__transport_t *t, mpt__request_t *req);
    /* Marks the transport failed: wakes every waiter. */
    void (*abort)(mpt__transport_t *t, int status, const char *why);
    void (*destroy)(mpt__transport_t *t);
} mpt__transport_ops_t;

struct mpt__transport {
    const mpt__transport_ops_t *ops;
    int nendpoints;
};

/* A transport for `nendpoints` threads of this process. */
int mpt__transport_local_create(int nendpoints, mpt__transport_t **out);

static inline int mpt__isend(mpt__transport_t *t, int src, int dst, int tag, const void *buf,
                             size_t bytes, mpt__request_t **req)
{
    return t->ops->isend(t, src, dst, tag, buf, bytes, req);
}
static inline int mpt__irecv(mpt__transport_t *t, int dst, int src, int tag, void *buf,
                             size_t bytes, mpt__request_t **req)
{
    return t->ops->irecv(t, dst, src, tag, buf, bytes, req);
}
static inline int mpt__wait(mpt__transport_t *t, mpt__request_t *req)
{
    return t->ops->wait(t, req);
}
/* Blocking forms. */
int mpt__send(mpt__transport_t *t, int src, int dst, int tag, const void *buf, size_t bytes);
int mpt__recv(mpt__transport_t *t, int dst, int src, int tag, void *buf, size_t bytes);
/* Aborts (see above); the first abort's reason is the one reported. */
void mpt__transport_abort(mpt__transport_t *t, int status, const char *why);
void mpt__transport_destroy(mpt__transport_t *t);

/* ---- groups and collectives (comm/ring.c) -------------------------------- */

typedef struct {
    mpt__transport_t *t;
    const int *members; /* endpoints in ring order */
    int size;
    int self;           /* this caller's position in members */
    int tag;            /* distinguishes this group's messages from others' */
} mpt__group_t;

/* Collective statistics of the last call, for metrics and mpt-bench. */
typedef struct {
    double seconds;     /* wall time of the collective on this member */
    size_t bytes;       /* the whole buffer's size */
} mpt__coll_stats_t;

/* In place: every member's buf[0..count) becomes the element-wise sum. */
int mpt__allreduce(const mpt__group_t *g, float *buf, size_t count, mpt__coll_stats_t *stats);

/* Member i ends up with the sum of its shard: elements
 * [offset(i), offset(i) + counts[i]) of buf, offset(i) = sum of counts
 * before i.  Other elements of buf are scratch. */
int mpt__reduce_scatter(const mpt__group_t *g, float *buf, const size_t *counts,
                        mpt__coll_stats_t *stats);

/* Member i contributes its shard (as above); every member ends up with
 * all shards. */
int mpt__allgather(const mpt__group_t *g, float *buf, const size_t *counts,
                   mpt__coll_stats_t *stats);

/* Member `root`'s bytes reach every member. */
int mpt__broadcast(const mpt__group_t *g, void *buf, size_t bytes, int root,
                   mpt__coll_stats_t *stats);

#endif
