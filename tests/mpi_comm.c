/*
 * tests/mpi_comm.c: the MPI transport and the ring collectives across
 * processes, run by tests/mpi_comm.sh under `mpirun -np N` (not a Check
 * suite: Check's fork mode and MPI do not mix, and every rank must run
 * every step).
 *
 *   mpi_comm PER_RANK
 *
 * PER_RANK endpoints in each rank, each served by its own thread (as the
 * engine's workers are).  Checks, each on every endpoint:
 *   - allreduce of 0, 1, 1000, 65,537 and 1,048,579 floats (uneven shards
 *     of the ring, chunks of 256 KiB) against a serial double-precision sum
 *     of every endpoint's inputs (counter-based, so each endpoint computes
 *     all of them): |got - sum| <= n * 2^-24 * sum|x| (fp32 summation of n
 *     terms, with n the endpoint count); and bitwise the same on every
 *     endpoint (compared through a second allreduce of a checksum);
 *   - allgather and reduce-scatter with uneven counts, one of them 0;
 *   - broadcast from the last endpoint;
 *   - point-to-point: every endpoint to every other with one tag and
 *     pair-dependent sizes, received in reverse order (matching by
 *     endpoint, not only by rank); a message of the wrong size fails the
 *     receive with MPT_ERR_INVALID.
 * Prints "ok"/"FAIL" lines from rank 0 and exits non-zero on any failure
 * (every rank reports its own failures on stderr).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "comm/comm.h"
#include "core/rng.h"

static int rank, nranks, per_rank, nendpoints;
static mpt__transport_t *T;
static int *members;

typedef struct {
    int self;
    int failures;
} ep_t;

static float input(int endpoint, size_t i)
{
    return (float)(mpt__u01(mpt__rng_u32(11, (uint64_t)endpoint, i)) * 2.0 - 1.0);
}

static void fail(ep_t *ep, const char *what)
{
    fprintf(stderr, "mpi_comm: rank %d endpoint %d: FAIL %s: %s\n", rank, ep->self, what,
            mpt_last_error());
    ep->failures++;
}

static void check_allreduce(ep_t *ep, size_t n, int tag)
{
    mpt__group_t g = {T, members, nendpoints, ep->self, tag, NULL};
    float *buf = malloc((n ? n : 1) * sizeof *buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = input(ep->self, i);
    if (mpt__allreduce(&g, buf, n, NULL) < 0) {
        fail(ep, "allreduce");
        free(buf);
        return;
    }
    size_t bad = 0;
    double checksum = 0;
    for (size_t i = 0; i < n; i++) {
        double sum = 0, mag = 0;
        for (int e = 0; e < nendpoints; e++) {
            double x = input(e, i);
            sum += x, mag += fabs(x);
        }
        bad += fabs(buf[i] - sum) > nendpoints * ldexp(1.0, -24) * mag + 1e-30;
        checksum += (double)buf[i] * (double)((i % 7) + 1);
    }
    if (bad) {
        char what[96];
        snprintf(what, sizeof what, "allreduce of %zu floats: %zu elements off the serial sum", n,
                 bad);
        fprintf(stderr, "mpi_comm: rank %d endpoint %d: FAIL %s\n", rank, ep->self, what);
        ep->failures++;
    }
    /* Bitwise equal on every endpoint: the spread of the checksums is 0. */
    float mine = (float)checksum, lo = mine, hi = mine;
    float all[64];
    memset(all, 0, sizeof all);
    if (nendpoints <= 64) {
        size_t counts[64];
        for (int e = 0; e < nendpoints; e++)
            counts[e] = 1;
        all[ep->self] = mine;
        mpt__group_t g2 = {T, members, nendpoints, ep->self, tag + 1, NULL};
        if (mpt__allgather(&g2, all, counts, NULL) < 0)
            fail(ep, "allgather of checksums");
        for (int e = 0; e < nendpoints; e++)
            lo = fminf(lo, all[e]), hi = fmaxf(hi, all[e]);
        if (lo != hi) {
            fprintf(stderr, "mpi_comm: rank %d endpoint %d: FAIL allreduce of %zu floats differs "
                    "between endpoints\n", rank, ep->self, n);
            ep->failures++;
        }
    }
    free(buf);
}

static void check_gather_scatter(ep_t *ep)
{
    size_t counts[64], total = 0;
    for (int e = 0; e < nendpoints; e++)
        total += counts[e] = e == 1 ? 0 : (size_t)(1000 + 333 * e);
    float *buf = calloc(total, sizeof *buf);
    size_t off = 0;
    for (int e = 0; e < ep->self; e++)
        off += counts[e];
    for (size_t i = 0; i < counts[ep->self]; i++)
        buf[off + i] = input(ep->self, i);
    mpt__group_t g = {T, members, nendpoints, ep->self, 100, NULL};
    if (mpt__allgather(&g, buf, counts, NULL) < 0)
        fail(ep, "allgather");
    size_t bad = 0;
    for (int e = 0, o = 0; e < nendpoints; o += (int)counts[e], e++)
        for (size_t i = 0; i < counts[e]; i++)
            bad += buf[(size_t)o + i] != input(e, i);
    /* Reduce-scatter: every endpoint contributes its inputs over the whole
     * buffer; member e keeps the sum of its shard. */
    for (size_t i = 0; i < total; i++)
        buf[i] = input(ep->self, i);
    mpt__group_t g2 = {T, members, nendpoints, ep->self, 101, NULL};
    if (mpt__reduce_scatter(&g2, buf, counts, NULL) < 0)
        fail(ep, "reduce_scatter");
    for (size_t i = 0; i < counts[ep->self]; i++) {
        double sum = 0, mag = 0;
        for (int e = 0; e < nendpoints; e++)
            sum += input(e, off + i), mag += fabs(input(e, off + i));
        bad += fabs(buf[off + i] - sum) > nendpoints * ldexp(1.0, -24) * mag + 1e-30;
    }
    if (bad) {
        fprintf(stderr, "mpi_comm: rank %d endpoint %d: FAIL allgather / reduce-scatter with "
                "uneven counts: %zu elements wrong\n", rank, ep->self, bad);
        ep->failures++;
    }
    free(buf);
}

static void check_broadcast_and_sizes(ep_t *ep)
{
    char text[64] = "";
    int root = nendpoints - 1;
    if (ep->self == root)
        snprintf(text, sizeof text, "from endpoint %d", root);
    mpt__group_t g = {T, members, nendpoints, ep->self, 102, NULL};
    if (mpt__broadcast(&g, text, sizeof text, root, NULL) < 0)
        fail(ep, "broadcast");
    char want[64];
    snprintf(want, sizeof want, "from endpoint %d", root);
    if (strcmp(text, want) != 0) {
        fprintf(stderr, "mpi_comm: rank %d endpoint %d: FAIL broadcast gave '%s'\n", rank,
                ep->self, text);
        ep->failures++;
    }
    /* A message of the wrong size: endpoint 0 sends 8 floats to the last,
     * which expects 4. */
    float v[8] = {0};
    if (ep->self == 0 && mpt__send(T, 0, root, 7, v, sizeof v) < 0)
        fail(ep, "send of 8 floats");
    if (ep->self == root) {
        int status = mpt__recv(T, root, 0, 7, v, 4 * sizeof(float));
        if (status != MPT_ERR_INVALID) {
            fprintf(stderr, "mpi_comm: rank %d endpoint %d: FAIL a receive of the wrong size "
                    "returned %d, expected MPT_ERR_INVALID\n", rank, ep->self, status);
            ep->failures++;
        }
    }
}

/* Every endpoint sends every other one a message naming both, of a size
 * that depends on the pair, all with the same tag, and receives from the
 * others in reverse order: only matching by (source endpoint, destination
 * endpoint, tag) delivers each to its own receive (endpoints of one rank
 * share the MPI rank). */
static void check_all_pairs(ep_t *ep)
{
    enum { TAG = 50 };
    int n = nendpoints, bad = 0;
    mpt__request_t **sends = calloc((size_t)n, sizeof *sends);
    int32_t *out = calloc((size_t)n * 64, sizeof *out), *in = calloc(64, sizeof *in);
    for (int d = 0; d < n; d++) {
        size_t len = 2 + (size_t)((ep->self * 7 + d * 3) % 50);
        for (size_t i = 0; i < len; i++)
            out[d * 64 + (int)i] = ep->self * 1000 + d;
        if (d != ep->self &&
            mpt__isend(T, ep->self, d, TAG, out + d * 64, len * sizeof *out, &sends[d]) < 0)
            fail(ep, "isend to every endpoint");
    }
    for (int src = n - 1; src >= 0; src--) {
        if (src == ep->self)
            continue;
        size_t len = 2 + (size_t)((src * 7 + ep->self * 3) % 50);
        if (mpt__recv(T, ep->self, src, TAG, in, len * sizeof *in) < 0) {
            fail(ep, "receive from every endpoint");
            continue;
        }
        for (size_t i = 0; i < len; i++)
            bad += in[i] != src * 1000 + ep->self;
    }
    for (int d = 0; d < n; d++)
        if (sends[d] && mpt__wait(T, sends[d]) < 0)
            fail(ep, "wait for a send");
    if (bad) {
        fprintf(stderr, "mpi_comm: rank %d endpoint %d: FAIL %d elements of messages from "
                "other endpoints were meant for someone else\n", rank, ep->self, bad);
        ep->failures++;
    }
    free(sends);
    free(out);
    free(in);
}

static void *endpoint_main(void *arg)
{
    ep_t *ep = arg;
    check_all_pairs(ep);
    static const size_t sizes[] = {0, 1, 1000, 65537, 1048579};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
        check_allreduce(ep, sizes[k], (int)(2 * k + 1));
    check_gather_scatter(ep);
    check_broadcast_and_sizes(ep);
    return NULL;
}

int main(int argc, char **argv)
{
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    per_rank = argc > 1 ? atoi(argv[1]) : 1;
    if (per_rank < 1 || per_rank > 8) {
        fprintf(stderr, "usage: mpi_comm PER_RANK (1 to 8)\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (mpt__transport_mpi_create(per_rank, &T) < 0) {
        fprintf(stderr, "mpi_comm: rank %d: %s\n", rank, mpt_last_error());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    nendpoints = T->nendpoints;
    members = malloc((size_t)nendpoints * sizeof *members);
    for (int e = 0; e < nendpoints; e++)
        members[e] = e;
    ep_t eps[8];
    pthread_t threads[8];
    for (int i = 0; i < per_rank; i++) {
        eps[i] = (ep_t){rank * per_rank + i, 0};
        pthread_create(&threads[i], NULL, endpoint_main, &eps[i]);
    }
    int failures = 0, all = 0;
    for (int i = 0; i < per_rank; i++) {
        pthread_join(threads[i], NULL);
        failures += eps[i].failures;
    }
    MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%s %d ranks x %d endpoints: all pairs, allreduce (0 to 1,048,579 "
               "floats), uneven allgather / reduce-scatter, broadcast, size mismatch%s\n",
               all ? "FAIL" : "ok  ", nranks, per_rank, all ? " (see stderr)" : "");
    mpt__transport_destroy(T);
    free(members);
    MPI_Finalize();
    return all ? 1 : 0;
}
