/*
 * comm/mpi.c: the `mpi` transport: endpoints spread over the ranks of
 * MPI_COMM_WORLD, endpoint e living in rank rank_of[e] (the engine: a
 * worker on the rank that owns its device, and one control endpoint per
 * rank), or e / per_rank (the benchmarks and tests).
 *
 * Threads: every worker thread posts its own sends and receives, so MPI
 * must provide MPI_THREAD_MULTIPLE (Open MPI does; the caller initialises
 * MPI with it and create checks).  A dedicated communication thread would
 * serialise every worker's messages through one queue and add a hand-off
 * per message; with MPI_THREAD_MULTIPLE the library's own progress engine
 * does that work.
 *
 * Matching: the transport contract matches by (source endpoint,
 * destination endpoint, tag) in posting order.  MPI matches by
 * (communicator, source rank, tag) in posting order, so each pair of local
 * endpoint indices (a, b) gets its own duplicate of the world
 * communicator: a message from endpoint (rank r, index a) to (rank s,
 * index b) travels on comm[a][b] from rank r to rank s with the
 * transport's tag.  Tags reach 2^31 - 1 (the collectives' bit 30):
 * create checks MPI_TAG_UB.
 *
 * Sizes: MPI counts are ints, so a message over MAX_PIECE bytes travels
 * as several MPI messages, posted in order on both sides (they match in
 * order).  A receive whose size differs from the send's fails its wait
 * with MPT_ERR_INVALID, as on the local transport (the communicators
 * return errors instead of aborting, so MPI's truncation error is seen).
 *
 * Waiting (all of it counted as waiting for the peer, comm.h): MPI_Test in
 * a loop (a short spin, then 50 us sleeps), checking
 * the abort flag between tests, and the transport's deadline: a wait past
 * it aborts the transport naming the peer's rank (MPT_ERR_TIMEOUT).  Abort: the local flag wakes this rank's
 * waiters, whose operations fail with the reason, and that is all: other
 * ranks cannot be told without fault-tolerant MPI (Open MPI 4.1 has no
 * ULFM), and the library never ends the process.  The error reaches the
 * program, which exits non-zero; mpirun then ends every other rank, as it
 * does when a rank dies.
 */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mpi.h>

#include "comm/comm.h"

#define MAX_PIECE ((size_t)1 << 30)
#define SPIN_TESTS 2000

struct mpt__request {
    int is_send, src, dst, tag;
    size_t bytes;
    int npieces;
    MPI_Request *reqs;
};

typedef struct {
    mpt__transport_t base;
    int rank, nranks;
    int *rank_of, *local_of; /* per endpoint: its rank, its index among that rank's */
    int per_rank;            /* the most endpoints any rank has */
    MPI_Comm *comms;         /* per_rank x per_rank */
    atomic_int aborted;
    pthread_mutex_t abort_lock;
    int abort_status;
    char abort_why[512];
} mpi_t;

static int fail_aborted(mpi_t *mt)
{
    pthread_mutex_lock(&mt->abort_lock);
    int status = mt->abort_status == MPT_ERR_TIMEOUT
                     ? mpt__fail(MPT_ERR_TIMEOUT, "%s", mt->abort_why)
                     : mpt__fail(MPT_ERR_ABORTED, "mpi transport aborted (%s): %s",
                                 mpt_status_name(mt->abort_status), mt->abort_why);
    pthread_mutex_unlock(&mt->abort_lock);
    return status;
}

/* The first reason wins: every later wait fails with it. */
static void mpi_cancel_reason(mpi_t *mt, int status, const char *why)
{
    pthread_mutex_lock(&mt->abort_lock);
    if (!atomic_load(&mt->aborted)) {
        mt->abort_status = status;
        snprintf(mt->abort_why, sizeof mt->abort_why, "%s", why ? why : "no reason given");
        atomic_store(&mt->aborted, 1);
    }
    pthread_mutex_unlock(&mt->abort_lock);
}

static int mpi_error(int err, const char *what)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(err, text, &len);
    return mpt__fail(MPT_ERR_INVALID, "%s: %s", what, text);
}

static int post(mpt__transport_t *t, int is_send, int self, int peer, int tag, void *buf,
                size_t bytes, mpt__request_t **out)
{
    mpi_t *mt = (mpi_t *)t;
    *out = NULL;
    if (self < 0 || self >= t->nendpoints || peer < 0 || peer >= t->nendpoints ||
        mt->rank_of[self] != mt->rank || tag < 0)
        return mpt__fail(MPT_ERR_INVALID, "mpi transport: %s endpoint %d -> %d (tag %d) from "
                         "rank %d of %d endpoints", is_send ? "send" : "receive",
                         is_send ? self : peer, is_send ? peer : self, tag, mt->rank,
                         t->nendpoints);
    if (atomic_load(&mt->aborted))
        return fail_aborted(mt);
    int npieces = bytes ? (int)((bytes + MAX_PIECE - 1) / MAX_PIECE) : 1;
    mpt__request_t *r = calloc(1, sizeof *r);
    if (!r || !(r->reqs = calloc((size_t)npieces, sizeof *r->reqs))) {
        free(r);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    r->is_send = is_send, r->tag = tag, r->bytes = bytes, r->npieces = npieces;
    r->src = is_send ? self : peer, r->dst = is_send ? peer : self;
    MPI_Comm comm = mt->comms[mt->local_of[r->src] * mt->per_rank + mt->local_of[r->dst]];
    int peer_rank = mt->rank_of[peer];
    for (int k = 0; k < npieces; k++) {
        size_t off = (size_t)k * MAX_PIECE, n = bytes - off < MAX_PIECE ? bytes - off : MAX_PIECE;
        int count = (int)n;
        int err = is_send ? MPI_Isend((char *)buf + off, (int)n, MPI_BYTE, peer_rank, tag, comm,
                                      &r->reqs[k])
                          : MPI_Irecv((char *)buf + off, count, MPI_BYTE, peer_rank, tag, comm,
                                      &r->reqs[k]);
        if (err != MPI_SUCCESS) {
            for (int j = 0; j < k; j++)
                MPI_Cancel(&r->reqs[j]), MPI_Request_free(&r->reqs[j]);
            free(r->reqs);
            free(r);
            return mpi_error(err, is_send ? "MPI_Isend" : "MPI_Irecv");
        }
    }
    *out = r;
    return MPT_OK;
}

static int mpi_isend(mpt__transport_t *t, int src, int dst, int tag, const void *buf,
                     size_t bytes, mpt__request_t **req)
{
    return post(t, 1, src, dst, tag, (void *)buf, bytes, req);
}

static int mpi_irecv(mpt__transport_t *t, int dst, int src, int tag, void *buf, size_t bytes,
                     mpt__request_t **req)
{
    return post(t, 0, dst, src, tag, buf, bytes, req);
}

static void pause_briefly(void)
{
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int mpi_wait(mpt__transport_t *t, mpt__request_t *r)
{
    mpi_t *mt = (mpi_t *)t;
    int status = MPT_OK;
    size_t received = 0;
    double entered = now_s(), deadline = t->timeout_s > 0 ? entered + t->timeout_s : 0;
    for (int k = 0; k < r->npieces; k++) {
        MPI_Status st;
        int done = 0;
        for (long spins = 0; !done; spins++) {
            if (deadline > 0 && spins > SPIN_TESTS && (spins & 255) == 0 && now_s() > deadline &&
                !atomic_load(&mt->aborted)) {
                int peer = mt->rank_of[r->is_send ? r->dst : r->src];
                char why[256];
                snprintf(why, sizeof why,
                         "rank %d %s for %.0f s (tag %d, endpoint %d -> %d): it is stopped, "
                         "hung or dead (the deadline is --comm-timeout)",
                         peer, r->is_send ? "took nothing" : "sent nothing", t->timeout_s, r->tag,
                         r->src, r->dst);
                mpi_cancel_reason(mt, MPT_ERR_TIMEOUT, why);
            }
            if (atomic_load(&mt->aborted)) {
                for (int j = k; j < r->npieces; j++) {
                    MPI_Cancel(&r->reqs[j]);
                    MPI_Request_free(&r->reqs[j]);
                }
                free(r->reqs);
                free(r);
                return fail_aborted(mt);
            }
            int err = MPI_Test(&r->reqs[k], &done, &st), cls = 0;
            if (err != MPI_SUCCESS) {
                /* The communicators return errors rather than abort: a
                 * longer message than the receive expected is a size
                 * mismatch like any other. */
                MPI_Error_class(err, &cls);
                if (status == MPT_OK)
                    status = cls == MPI_ERR_TRUNCATE
                                 ? mpt__fail(MPT_ERR_INVALID,
                                             "message from endpoint %d to %d (tag %d): more "
                                             "bytes sent than the %zu the receive expected",
                                             r->src, r->dst, r->tag, r->bytes)
                                 : mpi_error(err, "MPI_Test");
                done = 1;
            }
            if (!done && spins > SPIN_TESTS)
                pause_briefly();
        }
        if (!r->is_send && status == MPT_OK) {
            int count = 0;
            MPI_Get_count(&st, MPI_BYTE, &count);
            received += (size_t)count;
        }
    }
    if (!r->is_send && status == MPT_OK && received != r->bytes)
        status = mpt__fail(MPT_ERR_INVALID,
                           "message from endpoint %d to %d (tag %d): %s bytes sent, the receive "
                           "expected %zu", r->src, r->dst, r->tag,
                           received > r->bytes ? "more" : "fewer", r->bytes);
    free(r->reqs);
    free(r);
    /* MPI does not say when the peer's message began to arrive: all of
     * it counts as waiting for the peer (comm.h). */
    mpt__comm_add_times(now_s() - entered, 0);
    return status;
}

static void mpi_cancel(mpt__transport_t *t, int status, const char *why)
{
    mpi_cancel_reason((mpi_t *)t, status, why);
}

static void mpi_destroy(mpt__transport_t *t)
{
    mpi_t *mt = (mpi_t *)t;
    for (int i = 0; mt->comms && i < mt->per_rank * mt->per_rank; i++)
        if (mt->comms[i] != MPI_COMM_NULL)
            MPI_Comm_free(&mt->comms[i]);
    free(mt->comms);
    free(mt->rank_of);
    free(mt->local_of);
    pthread_mutex_destroy(&mt->abort_lock);
    free(mt);
}

static const mpt__transport_ops_t mpi_ops = {
    .name = "mpi",
    .isend = mpi_isend,
    .irecv = mpi_irecv,
    .wait = mpi_wait,
    .cancel = mpi_cancel,
    .destroy = mpi_destroy,
};

int mpt__transport_mpi_create(int per_rank, mpt__transport_t **out)
{
    int nranks = 1, initialised = 0;
    *out = NULL;
    MPI_Initialized(&initialised);
    if (initialised)
        MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (per_rank < 1 || (long)per_rank * nranks > INT_MAX / 2)
        return mpt__fail(MPT_ERR_INVALID, "mpi transport: %d endpoints per rank", per_rank);
    int n = per_rank * nranks, *rank_of = malloc((size_t)n * sizeof *rank_of);
    if (!rank_of)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (int e = 0; e < n; e++)
        rank_of[e] = e / per_rank;
    int status = mpt__transport_mpi_create_mapped(n, rank_of, out);
    free(rank_of);
    return status;
}

int mpt__transport_mpi_create_mapped(int nendpoints, const int *rank_of, mpt__transport_t **out)
{
    int initialised = 0, provided = 0, nranks = 1, rank = 0, flag = 0;
    void *tag_ub = NULL;
    *out = NULL;
    MPI_Initialized(&initialised);
    if (!initialised)
        return mpt__fail(MPT_ERR_INVALID, "mpi transport: MPI is not initialised (call "
                         "MPI_Init_thread with MPI_THREAD_MULTIPLE first)");
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_MULTIPLE)
        return mpt__fail(MPT_ERR_UNSUPPORTED, "mpi transport: MPI provides thread level %d, "
                         "every worker thread sends and receives: MPI_THREAD_MULTIPLE is needed",
                         provided);
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &flag);
    if (!flag || *(int *)tag_ub < INT_MAX)
        return mpt__fail(MPT_ERR_UNSUPPORTED, "mpi transport: MPI_TAG_UB is %d, tags up to "
                         "2^31 - 1 are needed", flag ? *(int *)tag_ub : -1);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (nendpoints < 1 || nendpoints > INT_MAX / 2)
        return mpt__fail(MPT_ERR_INVALID, "mpi transport: %d endpoints", nendpoints);
    mpi_t *mt = calloc(1, sizeof *mt);
    int *count = calloc((size_t)nranks, sizeof *count);
    if (!mt || !count || !(mt->rank_of = malloc((size_t)nendpoints * sizeof *mt->rank_of)) ||
        !(mt->local_of = malloc((size_t)nendpoints * sizeof *mt->local_of))) {
        if (mt)
            free(mt->rank_of);
        free(mt);
        free(count);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    for (int e = 0; e < nendpoints; e++) {
        if (rank_of[e] < 0 || rank_of[e] >= nranks) {
            int bad = rank_of[e];
            free(count), free(mt->rank_of), free(mt->local_of), free(mt);
            return mpt__fail(MPT_ERR_INVALID, "mpi transport: endpoint %d in rank %d of %d", e,
                             bad, nranks);
        }
        mt->rank_of[e] = rank_of[e];
        mt->local_of[e] = count[rank_of[e]]++;
        if (count[rank_of[e]] > mt->per_rank)
            mt->per_rank = count[rank_of[e]];
    }
    free(count);
    pthread_mutex_init(&mt->abort_lock, NULL);
    atomic_init(&mt->aborted, 0);
    mt->rank = rank, mt->nranks = nranks;
    mt->base.ops = &mpi_ops;
    mt->base.nendpoints = nendpoints;
    if (!(mt->comms = malloc((size_t)mt->per_rank * (size_t)mt->per_rank * sizeof *mt->comms))) {
        mpi_destroy(&mt->base);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < mt->per_rank * mt->per_rank; i++)
        mt->comms[i] = MPI_COMM_NULL;
    for (int i = 0; i < mt->per_rank * mt->per_rank; i++) { /* collective: every rank, same order */
        int err = MPI_Comm_dup(MPI_COMM_WORLD, &mt->comms[i]);
        if (err == MPI_SUCCESS)
            err = MPI_Comm_set_errhandler(mt->comms[i], MPI_ERRORS_RETURN);
        if (err != MPI_SUCCESS) {
            int status = mpi_error(err, "MPI_Comm_dup");
            mpi_destroy(&mt->base);
            return status;
        }
    }
    *out = &mt->base;
    return MPT_OK;
}
