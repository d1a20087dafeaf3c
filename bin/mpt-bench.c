/*
 * mpt-bench: mpt's measurements, each against a peer measured in the same
 * run (DESIGN.md section 7).  Thin: picks the subcommand; the work is in
 * bench_<name>.c and the library.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static const bench_command_t commands[] = {
    {"plan", "planning time for a large model on many devices, and each shipped "
             "cluster's planned step against the best uniform split",
     bench_plan_main},
    {"allreduce", "ring allreduce bus bandwidth on threads against MPI_Allreduce and memcpy",
     bench_allreduce_main},
    {"train", "training samples/s on several devices against one, and against the "
              "planner's prediction",
     bench_train_main},
    {"mpi", "mpt's ring allreduce across MPI ranks (its MPI transport) against "
            "MPI_Allreduce, over shared memory and TCP",
     bench_mpi_main},
    {"gemm", "mpt's GEMM under each GEMM provider (CLBlast, host BLAS) against the host "
             "BLAS called directly, at the models' shapes",
     bench_gemm_main},
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: mpt-bench COMMAND [OPTION]...\n"
               "Measure mpt against a peer measured in the same run and print the ratio.\n"
               "\nCommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`mpt-bench COMMAND --help` lists a command's options.\n"
               "  -h, --help     show this help and exit\n"
               "  -V, --version  show the version and exit\n"
               "Exit status: 0 on success, 1 on failure, 2 on a usage error.\n");
    tool_print_env(f);
}

double bench_median(double *v, size_t n)
{
    for (size_t i = 1; i < n; i++) /* insertion sort: a handful of repeats */
        for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1], v[j - 1] = t;
        }
    return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    tool_init("mpt-bench", 0);
    if (argc < 2)
        tool_usage_error("a command is required (plan, allreduce, train, mpi, gemm)");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return TOOL_EXIT_OK;
    }
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
        printf("mpt-bench (mpt) %s\n", mpt_version());
        return TOOL_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            static char name[64];
            snprintf(name, sizeof name, "mpt-bench %s", commands[i].name);
            tool_init(name, 0);
            return commands[i].main(argc - 1, argv + 1);
        }
    tool_usage_error("unknown command '%s' (plan, allreduce, train, mpi, gemm)", argv[1]);
}
