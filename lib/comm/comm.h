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
 * `mpi` (comm/mpi.c) serves endpoints in other ranks with the same ops
 * table, so nothing above this header knows which one it talks to.
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
    /* Marks the transport failed (never the process: the library does not
     * end it) and wakes every waiter; mpt__transport_abort calls it. */
    void (*cancel)(mpt__transport_t *t, int status, const char *why);
    void (*destroy)(mpt__transport_t *t);
} mpt__transport_ops_t;

struct mpt__transport {
    const mpt__transport_ops_t *ops;
    int nendpoints;
    /* A wait on another process that lasts longer fails (MPT_ERR_TIMEOUT,
     * naming the rank): a stopped or hung rank ends the job instead of
     * holding it forever.  0: no deadline.  Threads of one process need
     * none (a hung device is not a silent peer), so the local transport
     * ignores it. */
    double timeout_s;
};

/* A transport for `nendpoints` threads of this process. */
int mpt__transport_local_create(int nendpoints, mpt__transport_t **out);
/* A transport over the ranks of MPI_COMM_WORLD (comm/mpi.c), `per_rank`
 * endpoints in each: endpoint e lives in rank e / per_rank, and a rank may
 * post only for its own.  MPI must be initialised with
 * MPI_THREAD_MULTIPLE.  Collective over MPI_COMM_WORLD (every rank calls
 * it, and destroy).  MPT_ERR_UNSUPPORTED when mpt was built without MPI
 * (configure --with-mpi). */
int mpt__transport_mpi_create(int per_rank, mpt__transport_t **out);
/* The same with any placement: endpoint e lives in rank rank_of[e] (every
 * rank passes the same map).  Each pair of local endpoint indices gets a
 * communicator, so the cost grows with the most endpoints one rank has. */
int mpt__transport_mpi_create_mapped(int nendpoints, const int *rank_of, mpt__transport_t **out);

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
/* Where the calling thread's waits on requests went since its last call
 * (then reset): blocked before the peer's side of a message was posted
 * (wait_s), and moving bytes once it was (transfer_s), the copies this
 * thread made for its partners included.  The local transport tells the
 * two apart exactly; MPI does not say when a peer's message began to
 * arrive, so under the mpi transport the whole wait is wait_s.  Per
 * thread, so that a worker and its reducer, which share an endpoint, keep
 * theirs apart. */
typedef struct {
    double wait_s, transfer_s;
} mpt__comm_times_t;
mpt__comm_times_t mpt__comm_take_times(void);
/* For the transports: adds to the calling thread's times. */
void mpt__comm_add_times(double wait_s, double transfer_s);

/* Blocking forms. */
int mpt__send(mpt__transport_t *t, int src, int dst, int tag, const void *buf, size_t bytes);
int mpt__recv(mpt__transport_t *t, int dst, int src, int tag, void *buf, size_t bytes);
/* Aborts (see above); the first abort's reason is the one reported. */
void mpt__transport_abort(mpt__transport_t *t, int status, const char *why);
void mpt__transport_destroy(mpt__transport_t *t);

/* ---- the job's processes (comm/world.c, public as mpt_world_t) ----------- */

/* Collectives on bytes for setting a job up (train/world.c gives them
 * their meaning).  Each is called by every rank; with one process they
 * work on it alone.  A failure on rank 0 fails every rank's call (no rank
 * is left waiting). */
/* *out = the largest of every rank's `mine`, on every rank, waiting at
 * most timeout_s (0: no deadline) for the others: MPT_ERR_TIMEOUT naming
 * the rank that never came (a stopped or hung process). */
int mpt__world_agree_max(mpt_world_t *w, int mine, double timeout_s, int *out);
/* all[r] = rank r's `mine`, on every rank (all holds size ints). */
int mpt__world_allgather_int(mpt_world_t *w, int mine, int *all);
/* Rank 0 gets (*texts)[r] = rank r's NUL-terminated text, each under 1 GiB,
 * in one allocation (free(*texts)); the other ranks get NULL. */
int mpt__world_gather_texts(mpt_world_t *w, const char *mine, char ***texts);
/* Rank 0's *text (or, with failed < 0, its failure) reaches every rank,
 * whose *text is replaced (freed) by its own copy of it. */
int mpt__world_bcast_text(mpt_world_t *w, int failed, char **text);
/* Rank 0 gets offset[r], how far rank r's mpt__now() runs ahead of its
 * own, error[r], the bound of that estimate (half the shortest of
 * `rounds` MPI ping-pongs, or of up to 8 x rounds while none was under
 * 100 us), and at[r], when (on its clock) the estimate holds; offset and
 * error 0 for rank 0 and in one process.  Other ranks' offsets and errors
 * are zeroed.  Each array holds size doubles. */
int mpt__world_clock_offsets(mpt_world_t *w, int rounds, double *offset, double *error,
                             double *at);
/* This host's name (MPI's processor name under MPI), for telling which
 * ranks share a host. */
int mpt__world_host_name(char *buf, size_t size);
/* Records how many devices each rank opened (count[size]): the job's
 * devices are rank 0's first, then rank 1's... */
int mpt__world_set_devices(mpt_world_t *w, const int *count);
/* How many devices the job has (0 before mpt__world_set_devices), and per
 * rank its first device among them and how many it opened. */
int mpt__world_devices(const mpt_world_t *w, const int **first, const int **count);

/* ---- groups and collectives (comm/ring.c) -------------------------------- */

typedef struct {
    mpt__transport_t *t;
    const int *members; /* endpoints in ring order */
    int size;
    int self;           /* this caller's position in members */
    int tag;            /* distinguishes this group's messages from others':
                         * 0..MPT__GROUP_TAG_MAX */
    const int *node;    /* NULL, or per member the node (process) it lives in:
                         * then allreduce is hierarchical (below) */
} mpt__group_t;

/* Collectives send with the transport tag MPT__COLL_TAG(group tag, phase):
 * bit 30 set, so that they never match a point-to-point tag below 2^30
 * that the engine uses on the same transport, the group tag above a 3-bit
 * phase (MPT__PHASE_*), so that two groups, or the parts of an allreduce,
 * never match each other's messages.
 * Back-to-back collectives of one group need no more: each pair of
 * neighbours matches its messages in posting order. */
#define MPT__GROUP_TAG_MAX ((1 << 27) - 1)
#define MPT__COLL_TAG(group_tag, phase) ((1 << 30) | ((group_tag) << 3) | (phase))
enum {
    MPT__PHASE_REDUCE_SCATTER = 0, MPT__PHASE_ALLGATHER = 1, MPT__PHASE_BROADCAST = 2,
    /* the hierarchical allreduce's four parts */
    MPT__PHASE_NODE_REDUCE_SCATTER = 3, MPT__PHASE_CROSS_REDUCE_SCATTER = 4,
    MPT__PHASE_CROSS_ALLGATHER = 5, MPT__PHASE_NODE_ALLGATHER = 6
};

/* ---- tags (comm/tags.c) ----------------------------------------------------- */

/* The one allocator of a transport's tags: point-to-point tags (1 to
 * MPT__P2P_TAG_MAX, below the collectives' bit 30) and group tags (0 to
 * MPT__GROUP_TAG_MAX), each handed out in disjoint ranges, so that users of
 * one transport (the engine, its tensor-parallel groups, its control
 * group) cannot pick colliding tags by convention.  Every process of a job
 * must allocate in the same order to get the same numbers. */
#define MPT__P2P_TAG_MAX ((1 << 30) - 1)
typedef struct {
    int next_p2p, next_group;
} mpt__tags_t;

void mpt__tags_init(mpt__tags_t *a);
/* count consecutive point-to-point tags from *first; MPT_ERR_RANGE naming
 * `what` when the space is spent. */
int mpt__tags_p2p(mpt__tags_t *a, int count, const char *what, int *first);
/* count consecutive group tags from *first (as above). */
int mpt__tags_group(mpt__tags_t *a, int count, const char *what, int *first);

/* Collective statistics of the last call, for metrics and mpt-bench. */
typedef struct {
    double seconds;     /* wall time of the collective on this member */
    size_t bytes;       /* the whole buffer's size */
} mpt__coll_stats_t;

/* In place: every member's buf[0..count) becomes the element-wise sum.
 *
 * Flat (g->node NULL): one ring over all members.  Hierarchical (g->node
 * set, members of two or more nodes, the same number m > 1 on each): a
 * reduce-scatter inside each node (its m members, in group order) leaves
 * local member j with shard j of the node's sum; a ring allreduce of
 * shard j across the nodes' j-th members; an all-gather inside each node.
 * The network then carries 2 (k - 1) / k of the buffer per node in
 * 2 (k - 1) steps for k nodes, against 2 (km - 1) steps of the flat ring,
 * and the rest moves over the fast local transport.  Any other layout of
 * nodes falls back to the flat ring.  Sums are in a fixed order either
 * way (not the same order: the two differ in the last bits), and every
 * member gets the same bits. */
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

/* Member `root`'s bytes (root: a position in the group) reach every
 * member, along a pipelined chain root, root+1, ... */
int mpt__broadcast(const mpt__group_t *g, void *buf, size_t bytes, int root,
                   mpt__coll_stats_t *stats);

/* Allreduce with callbacks into the owner of the memory (device_ring.c):
 * `need` before the ring first reads or adds into floats [first,
 * first + count) of buf, `done` once they hold the final sum.  Either may
 * be NULL; a failure they return aborts the transport. */
typedef struct {
    int (*need)(void *ctx, size_t first, size_t count);
    int (*done)(void *ctx, size_t first, size_t count);
    void *ctx;
} mpt__ring_hooks_t;
int mpt__allreduce_hooked(const mpt__group_t *g, float *buf, size_t count,
                          const mpt__ring_hooks_t *hooks, mpt__coll_stats_t *stats);
/* Whether mpt__allreduce on g runs hierarchically (see above); the number
 * of nodes and members per node in *nodes, *per_node when it does. */
int mpt__allreduce_is_hierarchical(const mpt__group_t *g, int *nodes, int *per_node);

/* Between the collectives' files (ring.c, hier.c): the sharded ring with
 * the reduce-scatter under tag phase rs_phase and the all-gather under
 * ag_phase (a negative phase skips that half); near-equal shards of count
 * over n members with 64-byte aligned starts; the hierarchical allreduce,
 * which sets *ran to 0 (and does nothing) when g's layout is not
 * hierarchical, so that the caller runs the flat ring. */
int mpt__ring_phased(const mpt__group_t *g, float *buf, const size_t *counts, int rs_phase,
                     int ag_phase, const mpt__ring_hooks_t *hooks);
void mpt__ring_even_counts(size_t count, int n, size_t *counts);
int mpt__allreduce_hier(const mpt__group_t *g, float *buf, size_t count,
                        const mpt__ring_hooks_t *hooks, int *ran);

/* ---- device buffers (comm/device_ring.c) ---------------------------------- */

/* Floats [offset, offset + count) of a device buffer summed in place
 * across the group.  Called by the thread that owns the device's queue,
 * after it enqueued the kernels producing the values (the queue is in
 * order, so the read follows them); returns once the sums are back in the
 * buffer.  Unified-memory devices (PoCL CPU devices) are mapped, not
 * copied; others are staged through host memory in pieces, the read of
 * the next piece overlapping the ring's work on the current one.  An
 * OpenCL failure aborts the transport (the other members return
 * MPT_ERR_ABORTED) and is returned. */
int mpt__allreduce_device(const mpt__group_t *g, mpt_buffer_t *buf, size_t offset,
                          size_t count, mpt__coll_stats_t *stats);
/* The staged path whatever the device, so that tests reach it on PoCL. */
int mpt__allreduce_device_staged(const mpt__group_t *g, mpt_buffer_t *buf, size_t offset,
                                 size_t count, mpt__coll_stats_t *stats);

#endif
