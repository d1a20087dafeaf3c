/*
 * bench/mpi_allreduce_peer.c: the MPI_Allreduce figure that mpt-bench
 * allreduce puts beside its own, measured in the same invocation.  Run by
 * mpt-bench under `mpirun -np 2`; not meant to be run by hand.
 *
 *   mpt-bench-mpi-peer [--mpt] ITERS BYTES...
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
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "comm/comm.h"

static mpt__transport_t *transport; /* --mpt */
static int *members;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
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
        double t = MPI_Wtime() - t0, slowest = 0;
        MPI_Allreduce(&t, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (k >= 0)
            times[k] = slowest;
    }
    qsort(times, (size_t)iters, sizeof *times, cmp_double);
    return iters % 2 ? times[iters / 2] : (times[iters / 2 - 1] + times[iters / 2]) / 2;
}

int main(int argc, char **argv)
{
    int rank = 0, size = 1, provided = 0, use_mpt = argc > 1 && !strcmp(argv[1], "--mpt");
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
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
