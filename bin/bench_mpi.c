/*
 * mpt-bench mpi: mpt's ring allreduce across processes, over its MPI
 * transport (lib/comm/mpi.c), against MPI_Allreduce, both measured by the
 * same mpirun launch of mpt-bench-mpi-peer --mpt on the same buffers:
 * for each rank count and each Open MPI byte transfer layer (shared
 * memory: vader; TCP loopback: tcp), every size from --min to --max in
 * steps of 4x; median of --iters iterations, each the slowest rank's
 * time.  Prints bus bandwidth (bytes/time x 2(n-1)/n) of both and their
 * ratio.  With --endpoints E > 1 each rank runs E endpoints (threads, one
 * per device as in training) and the rows compare mpt's hierarchical
 * allreduce (inside each rank, then across ranks) with its flat ring over
 * all ranks x E endpoints instead.
 */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

enum { MAX_SIZES = 32, MAX_RANKS = 8 };

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: mpt-bench mpi [OPTION]...\n"
            "mpt's ring allreduce across MPI ranks (one process per rank, its MPI\n"
            "transport) against MPI_Allreduce, measured in the same mpirun launch.\n"
            "\n"
            "      --ranks LIST   rank counts (2,3)\n"
            "      --btl LIST     Open MPI transports: vader (shared memory), tcp\n"
            "                     (loopback) (vader,tcp)\n"
            "      --min BYTES    smallest size (1024)\n"
            "      --max BYTES    largest size (268435456); sizes go up 4x\n"
            "      --iters N      timed iterations per size (10)\n"
            "      --endpoints E  endpoints (threads) per rank; E > 1 compares the\n"
            "                     hierarchical allreduce with the flat ring over\n"
            "                     ranks x E endpoints instead (1)\n"
            "  -h, --help         show this help and exit\n");
}

static double busbw(size_t bytes, double seconds, int n)
{
    return seconds > 0 ? (double)bytes / seconds * 2.0 * (n - 1) / n / 1e9 : 0;
}

/* One launch: fills mpi[] and mpt[] (seconds, < 0 when missing); NULL on
 * success, else why. */
static const char *launch(const char *peer, int ranks, const char *btl, size_t iters,
                          size_t endpoints, const size_t *sizes, size_t nsizes, double *mpi,
                          double *mpt, char *why, size_t why_size)
{
    char cmd[3 * PATH_MAX], mode[32] = "--mpt";
    if (endpoints > 1)
        snprintf(mode, sizeof mode, "--hier %zu", endpoints);
    int used = snprintf(cmd, sizeof cmd,
                        "'%s' -np %d --oversubscribe %s --mca btl self,%s '%s' %s %zu",
                        MPT_MPIRUN, ranks, geteuid() == 0 ? "--allow-run-as-root" : "", btl,
                        peer, mode, iters);
    for (size_t i = 0; i < nsizes && (size_t)used < sizeof cmd - 64; i++) {
        used += snprintf(cmd + used, sizeof cmd - (size_t)used, " %zu", sizes[i]);
        mpi[i] = mpt[i] = -1;
    }
    snprintf(cmd + used, sizeof cmd - (size_t)used, " 2>&1");
    FILE *p = popen(cmd, "r");
    if (!p)
        return "cannot run mpirun";
    char line[1024], last[1024] = "";
    size_t got = 0;
    while (fgets(line, sizeof line, p)) {
        size_t bytes;
        double t;
        int n;
        char which[16];
        if (sscanf(line, "%15[a-z]-allreduce %zu %lf %d", which, &bytes, &t, &n) == 4) {
            for (size_t i = 0; i < nsizes; i++)
                if (sizes[i] == bytes) {
                    if (!strcmp(which, "mpi") || !strcmp(which, "flat"))
                        mpi[i] = t;
                    else
                        mpt[i] = t;
                    got++;
                }
            if (tool_stderr_is_tty())
                fprintf(stderr, "\r%d ranks over %s: %s %zu bytes done   ", ranks, btl, which,
                        bytes);
        } else if (line[0] && line[0] != '\n') {
            snprintf(last, sizeof last, "%s", line);
        }
    }
    if (tool_stderr_is_tty())
        fprintf(stderr, "\r%60s\r", "");
    int rc = pclose(p);
    if (got < 2 * nsizes) {
        last[strcspn(last, "\n")] = '\0';
        snprintf(why, why_size, "mpirun failed (status %d)%s%s", rc, last[0] ? ": " : "", last);
        return why;
    }
    return NULL;
}

int bench_mpi_main(int argc, char **argv)
{
    enum { O_RANKS = 256, O_BTL, O_MIN, O_MAX, O_ITERS, O_ENDPOINTS };
    static const struct option longopts[] = {
        {"ranks", required_argument, NULL, O_RANKS}, {"btl", required_argument, NULL, O_BTL},
        {"min", required_argument, NULL, O_MIN},     {"max", required_argument, NULL, O_MAX},
        {"iters", required_argument, NULL, O_ITERS}, {"help", no_argument, NULL, 'h'},
        {"endpoints", required_argument, NULL, O_ENDPOINTS},
        {NULL, 0, NULL, 0}};
    int ranks[MAX_RANKS] = {2, 3}, nranks = 2, opt;
    char btls[64] = "vader,tcp";
    size_t min = 1024, max = (size_t)256 << 20, iters = 10, endpoints = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case O_RANKS: {
            nranks = 0;
            char list[256];
            snprintf(list, sizeof list, "%s", optarg);
            for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
                if (nranks == MAX_RANKS)
                    tool_usage_error("--ranks: at most %d counts", MAX_RANKS);
                ranks[nranks++] = (int)tool_parse_count("--ranks", tok, 2);
            }
            break;
        }
        case O_BTL:
            snprintf(btls, sizeof btls, "%s", optarg);
            break;
        case O_MIN: min = tool_parse_count("--min", optarg, 4); break;
        case O_MAX: max = tool_parse_count("--max", optarg, 4); break;
        case O_ITERS: iters = tool_parse_count("--iters", optarg, 1); break;
        case O_ENDPOINTS:
            if ((endpoints = tool_parse_count("--endpoints", optarg, 1)) > 64)
                tool_usage_error("--endpoints: at most 64 per rank");
            break;
        case 'h': usage(stdout); return TOOL_EXIT_OK;
        default: usage(stderr); return TOOL_EXIT_USAGE;
        }
    }
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (min > max)
        tool_usage_error("--min %zu is above --max %zu", min, max);
    for (char *c = btls; *c; c++)
        if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789,", *c))
            tool_usage_error("--btl: names of Open MPI transports separated by commas, got '%s'",
                             btls);
    char peer[2 * PATH_MAX];
    if (!MPT_MPIRUN[0] || access(MPT_MPIRUN, X_OK) != 0)
        tool_die("mpirun not found (install openmpi-bin and run configure again)");
    if (!bench_find_mpi_peer(peer, sizeof peer))
        tool_die("mpt was built without MPI (configure --with-mpi, Debian libopenmpi-dev)");
    size_t sizes[MAX_SIZES], nsizes = 0;
    for (size_t s = min; s <= max && nsizes < MAX_SIZES; s *= 4)
        sizes[nsizes++] = s / sizeof(float) * sizeof(float);

    if (endpoints > 1) {
        printf("allreduce across MPI ranks of %zu endpoints (threads) each, mpt's MPI "
               "transport:\nhierarchical (inside each rank, then across) against the flat "
               "ring over all endpoints,\nsame launch; busbw = bytes/time * 2(n-1)/n in GB/s, "
               "n endpoints, time = median of %zu\n", endpoints, iters);
        printf("%6s %6s %10s %10s %10s %9s\n", "btl", "ranks", "bytes", "flat", "hier",
               "hier/flat");
    } else {
        printf("ring allreduce across MPI ranks: mpt (its MPI transport) against "
               "MPI_Allreduce,\nsame launch, same buffers; busbw = bytes/time * 2(n-1)/n in "
               "GB/s, time = median of %zu\n", iters);
        printf("%6s %6s %10s %10s %10s %9s\n", "btl", "ranks", "bytes", "MPI", "mpt",
               "mpt/MPI");
    }
    int failed = 0;
    char list[64];
    snprintf(list, sizeof list, "%s", btls);
    for (char *btl = strtok(list, ","); btl; btl = strtok(NULL, ",")) {
        for (int r = 0; r < nranks; r++) {
            double mpi[MAX_SIZES], mpt[MAX_SIZES];
            char why[1200];
            const char *err = launch(peer, ranks[r], btl, iters, endpoints, sizes, nsizes, mpi,
                                     mpt, why, sizeof why);
            int n = ranks[r] * (int)endpoints;
            if (err) {
                printf("%6s %6d: %s\n", btl, ranks[r], err);
                failed = 1;
                continue;
            }
            for (size_t i = 0; i < nsizes; i++)
                printf("%6s %6d %10zu %10.3f %10.3f %8.2fx\n", btl, ranks[r], sizes[i],
                       busbw(sizes[i], mpi[i], n), busbw(sizes[i], mpt[i], n),
                       mpt[i] > 0 ? mpi[i] / mpt[i] : 0);
            fflush(stdout);
        }
    }
    if (failed)
        tool_die("an mpirun launch failed (see above)");
    return TOOL_EXIT_OK;
}
