/*
 * bin/bench.h: the subcommands of mpt-bench, one file each
 * (bench_<name>.c).  Each parses its own options after the subcommand's
 * name, prints its figure beside a peer measured in the same run and the
 * ratio between them, and returns the tool's exit status.
 */
#ifndef MPT_BENCH_H
#define MPT_BENCH_H

#include "tool.h"

typedef struct {
    const char *name;
    const char *summary; /* one line for mpt-bench --help */
    int (*main)(int argc, char **argv);
} bench_command_t;

int bench_plan_main(int argc, char **argv);
int bench_allreduce_main(int argc, char **argv);
int bench_train_main(int argc, char **argv);
int bench_mpi_main(int argc, char **argv);
int bench_gemm_main(int argc, char **argv);

/* The MPI peer program (bench/mpi_allreduce_peer.c), mpt-bench-mpi-peer:
 * its path into path; 0 when it is not there (built without MPI). */
int bench_find_mpi_peer(char *path, size_t size);

/* The median of n values (sorts them). */
double bench_median(double *v, size_t n);

#endif
