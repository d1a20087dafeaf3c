/*
 * bench/mpi_allreduce_peer.c: the MPI_Allreduce figure that mpt-bench
 * allreduce puts beside its own, measured in the same invocation.  Run by
 * mpt-bench under `mpirun -np 2`; not meant to be run by hand.
 *
 *   mpt-bench-mpi-peer [--mpt | --hier E] ITERS BYTES...
 *
 * For each size: one warm-up allreduce, then ITERS timed ones (float sum,
 * in place), each between barriers; an iteration's time is the slowest
 * rank's.  Rank 0 prints one line per size:
 *
 *   mpi-allreduce BYTES MEDIAN_SECONDS RANKS
 *
 * With --mpt, mpt's ring allreduce over its MPI transport (one endpoint
 * per rank) is measured the same way right after, on the same buffer:
 *
 *   mpt-allreduce BYTES MEDIAN_SECONDS RANKS
 *
 * With --hier E, each rank runs E endpoints (threads, as the engine runs
 * one per device) of one mpt MPI transport, and mpt's flat ring over all
 * RANKS x E endpoints is measured against its hierarchical allreduce
 * (inside each rank over its threads, then across ranks):
 *
 *   flat-allreduce BYTES MEDIAN_SECONDS ENDPOINTS
 *   hier-allreduce BYTES MEDIAN_SECONDS ENDPOINTS
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "comm/comm.h"

static mpt__transport_t *transport; /* --mpt, --hier */
static int *members;

/* --hier: E threads per rank, started together by `start`, waited for by
 * `end`; what they run is set by the main thread in between. */
static struct {
    int per_rank, quit, hierarchical;
    size_t count;
    float **bufs;
    int *node; /* per endpoint: its rank */
    pthread_barrier_t start, end;
} team;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Iteration k's time is the slowest rank's (k < 0: the warm-up). */
static void record(double *times, int k, double t)
{
    double slowest = 0;
    MPI_Allreduce(&t, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (k >= 0)
        times[k] = slowest;
}

static double median(double *times, int iters)
{
    qsort(times, (size_t)iters, sizeof *times, cmp_double);
    return iters % 2 ? times[iters / 2] : (times[iters / 2 - 1] + times[iters / 2]) / 2;
}

static double measure(float *buf, size_t count, int iters, double *times, int use_mpt)
{
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    for (int k = -1; k < iters; k++) { /* k = -1: warm-up */
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        if (use_mpt) {
            mpt__group_t g = {transport, members, size, rank, 1, NULL};
            if (mpt__allreduce(&g, buf, count, NULL) < 0) {
                fprintf(stderr, "mpt-bench-mpi-peer: %s\n", mpt_last_error());
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
        } else {
            MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
        record(times, k, MPI_Wtime() - t0);
    }
    return median(times, iters);
}

static void *endpoint_main(void *arg)
{
    int rank = 0, size = 1, e = (int)(size_t)arg;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int self = rank * team.per_rank + e;
    for (;;) {
        pthread_barrier_wait(&team.start);
        if (team.quit)
            break;
        mpt__group_t g = {transport, members, size * team.per_rank, self, 1,
                          team.hierarchical ? team.node : NULL};
        if (mpt__allreduce(&g, team.bufs[e], team.count, NULL) < 0) {
            fprintf(stderr, "mpt-bench-mpi-peer: %s\n", mpt_last_error());
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        pthread_barrier_wait(&team.end);
    }
    return NULL;
}

/* Median time of the E-endpoint allreduce, flat or hierarchical. */
static double measure_team(size_t count, int iters, double *times, int hierarchical)
{
    team.count = count, team.hierarchical = hierarchical;
    for (int k = -1; k < iters; k++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        pthread_barrier_wait(&team.start);
        pthread_barrier_wait(&team.end);
        record(times, k, MPI_Wtime() - t0);
    }
    return median(times, iters);
}

static int run_hier(int per_rank, int iters, int nsizes, char **sizes)
{
    int rank = 0, size = 1, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    n = size * per_rank;
    pthread_t th[64];
    double *times = malloc((size_t)iters * sizeof *times);
    team.per_rank = per_rank;
    team.bufs = calloc((size_t)per_rank, sizeof *team.bufs);
    team.node = malloc((size_t)n * sizeof *team.node);
    members = malloc((size_t)n * sizeof *members);
    if (per_rank < 1 || per_rank > 64 || iters < 1 || iters > 10000 || !times || !team.bufs || !team.node || !members ||
        mpt__transport_mpi_create(per_rank, &transport) < 0) {
        fprintf(stderr, "mpt-bench-mpi-peer: --hier %d: %s\n", per_rank, mpt_last_error());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (int i = 0; i < n; i++)
        members[i] = i, team.node[i] = i / per_rank;
    pthread_barrier_init(&team.start, NULL, (unsigned)per_rank + 1);
    pthread_barrier_init(&team.end, NULL, (unsigned)per_rank + 1);
    for (int e = 0; e < per_rank; e++)
        pthread_create(&th[e], NULL, endpoint_main, (void *)(size_t)e);
    for (int a = 0; a < nsizes; a++) {
        size_t bytes = strtoull(sizes[a], NULL, 10), count = bytes / sizeof(float);
        for (int e = 0; e < per_rank; e++) {
            if (!(team.bufs[e] = malloc(count ? count * sizeof(float) : 1))) {
                fprintf(stderr, "mpt-bench-mpi-peer: cannot allreduce %zu bytes\n", bytes);
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            for (size_t i = 0; i < count; i++)
                team.bufs[e][i] = 1e-3f * (float)(i % 1000);
        }
        for (int hierarchical = 0; hierarchical <= 1; hierarchical++) {
            double t = measure_team(count, iters, times, hierarchical);
            if (rank == 0) {
                printf("%s-allreduce %zu %.9f %d\n", hierarchical ? "hier" : "flat", bytes, t, n);
                fflush(stdout);
            }
        }
        for (int e = 0; e < per_rank; e++)
            free(team.bufs[e]);
    }
    team.quit = 1;
    pthread_barrier_wait(&team.start);
    for (int e = 0; e < per_rank; e++)
        pthread_join(th[e], NULL);
    mpt__transport_destroy(transport);
    free(members);
    free(team.node);
    free(team.bufs);
    free(times);
    MPI_Finalize();
    return 0;
}

int main(int argc, char **argv)
{
    int rank = 0, size = 1, provided = 0, use_mpt = argc > 1 && !strcmp(argv[1], "--mpt");
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc > 4 && !strcmp(argv[1], "--hier"))
        return run_hier(atoi(argv[2]), atoi(argv[3]), argc - 4, argv + 4);
    if (use_mpt) {
        argc--, argv++;
        if (mpt__transport_mpi_create(1, &transport) < 0 ||
            !(members = malloc((size_t)size * sizeof *members))) {
            fprintf(stderr, "mpt-bench-mpi-peer: %s\n", mpt_last_error());
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        for (int i = 0; i < size; i++)
            members[i] = i;
    }
    int iters = argc > 1 ? atoi(argv[1]) : 0;
    if (argc < 3 || iters < 1 || iters > 10000) {
        if (rank == 0)
            fprintf(stderr, "usage: %s [--mpt] ITERS BYTES...\n", argv[0]);
        MPI_Finalize();
        return 2;
    }
    double *times = malloc((size_t)iters * sizeof *times);
    for (int a = 2; a < argc; a++) {
        size_t bytes = strtoull(argv[a], NULL, 10), count = bytes / sizeof(float);
        float *buf = malloc(count ? count * sizeof(float) : 1);
        if (!buf || !times || count > (size_t)0x7fffffff) {
            fprintf(stderr, "mpt-bench-mpi-peer: cannot allreduce %zu bytes\n", bytes);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        for (size_t i = 0; i < count; i++)
            buf[i] = 1e-3f * (float)(i % 1000);
        double t = measure(buf, count, iters, times, 0);
        if (rank == 0) {
            printf("mpi-allreduce %zu %.9f %d\n", bytes, t, size);
            fflush(stdout);
        }
        if (use_mpt) {
            t = measure(buf, count, iters, times, 1);
            if (rank == 0) {
                printf("mpt-allreduce %zu %.9f %d\n", bytes, t, size);
                fflush(stdout);
            }
        }
        free(buf);
    }
    free(times);
    mpt__transport_destroy(transport);
    free(members);
    MPI_Finalize();
    return 0;
}
