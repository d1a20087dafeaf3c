/*
 * mpt-bench allreduce: ring allreduce bus bandwidth on the local transport
 * (one thread per participant, host buffers, or device buffers with
 * --device), against MPI_Allreduce on 2 ranks and memcpy, all measured in
 * this invocation.
 *
 * Bus bandwidth as nccl-tests defines it: busbw = bytes / time * 2(n-1)/n,
 * time = the median over --iters iterations (after one warm-up) of the
 * slowest participant's time.  The MPI figure comes from
 * mpt-bench-mpi-peer (bench/mpi_allreduce_peer.c), run once for all sizes
 * under `mpirun -np 2 --oversubscribe`; it is looked for next to this
 * program (the build tree) and then in the installed libexec directory.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"
#include "comm/comm.h"
#include "device/device.h"

#define MAX_SIZES 64
#define MAX_PARTS 8
#define PEER_NAME "mpt-bench-mpi-peer"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: mpt-bench allreduce [OPTION]...\n"
            "Ring allreduce bus bandwidth on threads of this process, against\n"
            "MPI_Allreduce on 2 ranks and memcpy, measured in the same run.\n"
            "\n"
            "      --participants LIST  participant counts, comma-separated, 1..8 (2,4)\n"
            "      --min BYTES          smallest size; K, M, G suffixes (1K)\n"
            "      --max BYTES          largest size; sizes go x4 from --min (256M)\n"
            "      --iters N            timed iterations per size, after one warm-up\n"
            "                           (default: 5 to 50, fewer for larger sizes)\n"
            "      --device             device buffers on the OpenCL devices, one per\n"
            "                           participant (counts above the devices are skipped)\n"
            "      --no-mpi             skip the MPI_Allreduce measurement\n"
            "      --json               one JSON document on stdout instead of the table\n"
            "  -h, --help               show this help and exit\n"
            "\nbusbw = bytes / time * 2(n-1)/n (nccl-tests), time = median iteration.\n");
}

static size_t parse_bytes(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10, end++;
    else if (*end == 'M' || *end == 'm')
        shift = 20, end++;
    else if (*end == 'G' || *end == 'g')
        shift = 30, end++;
    if (end == s || *end || errno || v == 0 || v > (1ull << 40) >> shift)
        tool_usage_error("%s: '%s' is not a size in bytes (e.g. 4096, 64K, 256M)", opt, s);
    return (size_t)(v << shift);
}

static int parse_list(const char *s, int *out)
{
    int n = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        long v = strtol(tok, &end, 10);
        if (*end || v < 1 || v > MAX_PARTS || n == MAX_PARTS)
            tool_usage_error("--participants: '%s' is not a list of counts 1..%d", s, MAX_PARTS);
        out[n++] = (int)v;
    }
    free(copy);
    if (n == 0)
        tool_usage_error("--participants: empty list");
    return n;
}

static size_t auto_iters(size_t bytes)
{
    size_t it = ((size_t)256 << 20) / (bytes ? bytes : 1);
    return it < 5 ? 5 : it > 50 ? 50 : it;
}

static void progress(const char *fmt, const char *what, size_t bytes)
{
    if (tool_stderr_is_tty()) {
        fprintf(stderr, "\r\033[K");
        fprintf(stderr, fmt, what, bytes);
        fflush(stderr);
    }
}

static void progress_clear(void)
{
    if (tool_stderr_is_tty())
        fprintf(stderr, "\r\033[K");
}

/* ---- mpt: a team of n threads doing allreduce after allreduce ----------- */

typedef struct {
    int n;
    mpt__transport_t *t;
    atomic_int arrived, generation; /* the spinning barrier */
    float **host;           /* per participant (host mode) */
    mpt_buffer_t **dev;     /* per participant (device mode) */
    size_t count, iters;
    double *seconds;        /* [iter * n + rank] */
    int *status;
} team_t;

typedef struct {
    team_t *tm;
    int rank;
} part_t;

/* A spinning barrier, as MPI_Barrier spins in the peer: a futex barrier
 * would add a sleeping thread's wake-up (tens of microseconds on this VM)
 * to the start of every timed iteration. */
static void spin_barrier(team_t *tm)
{
    int gen = atomic_load(&tm->generation);
    if (atomic_fetch_add(&tm->arrived, 1) == tm->n - 1) {
        atomic_store(&tm->arrived, 0);
        atomic_fetch_add(&tm->generation, 1);
        return;
    }
    for (unsigned i = 0; atomic_load(&tm->generation) == gen; i++)
        if (i % 64 == 63)
            sched_yield(); /* more participants than cores */
}

static const int ring_members[MAX_PARTS] = {0, 1, 2, 3, 4, 5, 6, 7};

static void *participant(void *p)
{
    part_t *pt = p;
    team_t *tm = pt->tm;
    mpt__group_t g = {.t = tm->t, .members = ring_members, .size = tm->n, .self = pt->rank};
    for (size_t k = 0; k <= tm->iters; k++) { /* k = 0: warm-up */
        mpt__coll_stats_t st = {0};
        spin_barrier(tm);
        int s = tm->dev ? mpt__allreduce_device(&g, tm->dev[pt->rank], 0, tm->count, &st)
                        : mpt__allreduce(&g, tm->host[pt->rank], tm->count, &st);
        if (s < 0) {
            tm->status[pt->rank] = s;
            fprintf(stderr, "mpt-bench allreduce: participant %d: %s\n", pt->rank,
                    mpt_last_error());
            return NULL; /* the transport is aborted: the others stop too */
        }
        if (k > 0)
            tm->seconds[(k - 1) * (size_t)tm->n + (size_t)pt->rank] = st.seconds;
    }
    return NULL;
}

/* Median over iterations of the slowest participant's seconds; < 0 on failure. */
static double mpt_time(int n, size_t bytes, size_t iters, mpt_devices_t *devs)
{
    team_t tm = {.n = n, .count = bytes / sizeof(float), .iters = iters};
    pthread_t th[MAX_PARTS];
    part_t parts[MAX_PARTS];
    double result = -1;
    tm.seconds = calloc(iters * (size_t)n, sizeof *tm.seconds);
    tm.status = calloc((size_t)n, sizeof *tm.status);
    if (devs)
        tm.dev = calloc((size_t)n, sizeof *tm.dev);
    else
        tm.host = calloc((size_t)n, sizeof *tm.host);
    if (!tm.seconds || !tm.status || (!tm.dev && !tm.host))
        tool_die("out of memory");
    tool_check(mpt__transport_local_create(n, &tm.t), "creating the local transport");
    for (int r = 0; r < n; r++) {
        if (devs) {
            tool_check(mpt_buffer_create(mpt_devices_get(devs, (size_t)r), bytes, &tm.dev[r]),
                       "allocating a device buffer");
            void *p = NULL;
            tool_check(mpt_buffer_map(tm.dev[r], 0, bytes, MPT_MAP_WRITE, &p), "mapping");
            memset(p, 0, bytes);
            tool_check(mpt_buffer_unmap(tm.dev[r], p), "unmapping");
        } else {
            tm.host[r] = malloc(bytes);
            if (!tm.host[r])
                tool_die("out of memory for %zu bytes", bytes);
            for (size_t i = 0; i < tm.count; i++) /* small values: no overflow in 50 sums */
                tm.host[r][i] = 1e-3f * (float)(i % 1000);
        }
    }
    for (int r = 0; r < n; r++) {
        parts[r] = (part_t){.tm = &tm, .rank = r};
        if (pthread_create(&th[r], NULL, participant, &parts[r]))
            tool_die("cannot start a participant thread");
    }
    for (int r = 0; r < n; r++)
        pthread_join(th[r], NULL);
    int ok = 1;
    for (int r = 0; r < n; r++)
        ok &= tm.status[r] == MPT_OK;
    if (ok) {
        double *per = malloc(iters * sizeof *per);
        for (size_t k = 0; k < iters; k++) {
            per[k] = 0;
            for (int r = 0; r < n; r++)
                if (tm.seconds[k * (size_t)n + (size_t)r] > per[k])
                    per[k] = tm.seconds[k * (size_t)n + (size_t)r];
        }
        result = bench_median(per, iters);
        free(per);
    }
    for (int r = 0; r < n; r++) {
        if (tm.dev)
            mpt_buffer_free(tm.dev[r]);
        else
            free(tm.host[r]);
    }
    mpt__transport_destroy(tm.t);
    free(tm.dev);
    free(tm.host);
    free(tm.seconds);
    free(tm.status);
    return result;
}

/* ---- the peers: memcpy and MPI_Allreduce ---------------------------------- */

static double memcpy_time(size_t bytes, size_t iters)
{
    /* The destination 2 KiB off the source modulo 4 KiB: large blocks from
     * malloc are page-aligned, and a copy between addresses with the same
     * low 12 bits runs at a fraction of its speed (4K aliasing). */
    char *a = malloc(bytes), *b_alloc = malloc(bytes + 4096), *b = b_alloc;
    if (b_alloc)
        b = b_alloc + (((uintptr_t)a + 2048 - (uintptr_t)b_alloc) & 4095);
    double *t = malloc((iters + 1) * sizeof *t);
    if (!a || !b || !t)
        tool_die("out of memory for %zu bytes", bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    /* Small copies are repeated up to 1 MiB a sample: the clock's own cost
     * (tens of nanoseconds) would otherwise be most of the figure. */
    size_t reps = bytes < ((size_t)1 << 20) ? ((size_t)1 << 20) / bytes : 1;
    for (size_t k = 0; k <= iters; k++) {
        double t0 = mpt__now();
        for (size_t r = 0; r < reps; r++) {
            memcpy(b, a, bytes);
            __asm__ __volatile__("" : : "r"(b) : "memory"); /* keep every copy */
        }
        t[k] = (mpt__now() - t0) / (double)reps;
    }
    double m = bench_median(t + 1, iters);
    free(a);
    free(b_alloc);
    free(t);
    return m;
}

/* The peer program: next to this executable (the build tree, where libtool
 * may run us from bin/.libs), else the installed one. */
int bench_find_mpi_peer(char *path, size_t size)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(path, size, "%s/%s", exe, PEER_NAME);
            if (access(path, X_OK) == 0)
                return 1;
            snprintf(path, size, "%s/../%s", exe, PEER_NAME);
            if (access(path, X_OK) == 0)
                return 1;
        }
    }
    snprintf(path, size, "%s/%s", MPT_PKGLIBEXECDIR, PEER_NAME);
    return access(path, X_OK) == 0;
}

/* Runs the peer for all sizes at once; fills mpi[] (seconds, < 0 when
 * missing).  Returns NULL on success, else why there is no MPI figure. */
static const char *mpi_times(const size_t *sizes, size_t nsizes, size_t iters_opt, double *mpi,
                             char *why, size_t why_size)
{
    char peer[2 * PATH_MAX], cmd[3 * PATH_MAX];
    for (size_t i = 0; i < nsizes; i++)
        mpi[i] = -1;
    if (!MPT_MPIRUN[0] || access(MPT_MPIRUN, X_OK) != 0)
        return "mpirun not found (configure found none, or it is gone)";
    if (!bench_find_mpi_peer(peer, sizeof peer))
        return "mpt was built without MPI (no " PEER_NAME ")";
    /* One launch for every size (mpirun takes about a second to start);
     * 20 iterations each unless --iters says otherwise. */
    size_t used = 0;
    int w = snprintf(cmd, sizeof cmd, "'%s' -np 2 --oversubscribe %s '%s' %zu", MPT_MPIRUN,
                     geteuid() == 0 ? "--allow-run-as-root" : "", peer,
                     iters_opt ? iters_opt : (size_t)20);
    used = (size_t)w;
    for (size_t i = 0; i < nsizes && used < sizeof cmd - 64; i++)
        used += (size_t)snprintf(cmd + used, sizeof cmd - used, " %zu", sizes[i]);
    snprintf(cmd + used, sizeof cmd - used, " 2>&1");
    FILE *p = popen(cmd, "r");
    if (!p)
        return "cannot run mpirun";
    char line[1024], last[1024] = "";
    size_t got = 0;
    while (fgets(line, sizeof line, p)) {
        size_t bytes;
        double t;
        int ranks;
        if (sscanf(line, "mpi-allreduce %zu %lf %d", &bytes, &t, &ranks) == 3) {
            for (size_t i = 0; i < nsizes; i++)
                if (sizes[i] == bytes)
                    mpi[i] = t, got++;
            progress("%s %zu bytes done", "MPI_Allreduce", bytes);
        } else if (line[0] && line[0] != '\n') {
            snprintf(last, sizeof last, "%s", line);
        }
    }
    int rc = pclose(p);
    if (got < nsizes) {
        last[strcspn(last, "\n")] = '\0';
        snprintf(why, why_size, "mpirun failed (status %d)%s%s", rc, last[0] ? ": " : "", last);
        return why;
    }
    return NULL;
}

static double busbw(size_t bytes, double seconds, int n)
{
    return seconds > 0 ? (double)bytes / seconds * 2.0 * (n - 1) / n / 1e9 : 0;
}

int bench_allreduce_main(int argc, char **argv)
{
    enum { O_PARTS = 256, O_MIN, O_MAX, O_ITERS, O_DEVICE, O_NO_MPI, O_JSON };
    static const struct option longopts[] = {
        {"participants", required_argument, NULL, O_PARTS},
        {"min", required_argument, NULL, O_MIN},
        {"max", required_argument, NULL, O_MAX},
        {"iters", required_argument, NULL, O_ITERS},
        {"device", no_argument, NULL, O_DEVICE},
        {"no-mpi", no_argument, NULL, O_NO_MPI},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int parts[MAX_PARTS] = {2, 4}, nparts = 2, use_device = 0, use_mpi = 1, json = 0, opt;
    size_t min = 1024, max = (size_t)256 << 20, iters_opt = 0;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case O_PARTS: nparts = parse_list(optarg, parts); break;
        case O_MIN: min = parse_bytes("--min", optarg); break;
        case O_MAX: max = parse_bytes("--max", optarg); break;
        case O_ITERS: iters_opt = (size_t)tool_parse_count("--iters", optarg, 1); break;
        case O_DEVICE: use_device = 1; break;
        case O_NO_MPI: use_mpi = 0; break;
        case O_JSON: json = 1; break;
        case 'h': usage(stdout); return TOOL_EXIT_OK;
        default: tool_usage_error("see --help");
        }
    }
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (min < sizeof(float) || min > max)
        tool_usage_error("--min %zu must be at least 4 bytes and at most --max %zu", min, max);
    if (iters_opt > 1000)
        tool_usage_error("--iters at most 1000, got %zu", iters_opt);

    size_t sizes[MAX_SIZES], nsizes = 0;
    for (size_t s = min; s <= max && nsizes < MAX_SIZES; s *= 4)
        sizes[nsizes++] = s / sizeof(float) * sizeof(float);

    mpt_devices_t *devs = NULL;
    size_t ndev = 0;
    if (use_device) {
        tool_check(mpt_devices_open(NULL, &devs), "opening the OpenCL devices");
        ndev = mpt_devices_count(devs);
    }

    /* MPI first, one mpirun for every size, while nothing else runs. */
    double mpi[MAX_SIZES];
    char why_buf[1200];
    const char *no_mpi = use_mpi ? mpi_times(sizes, nsizes, iters_opt, mpi, why_buf,
                                             sizeof why_buf)
                                 : "skipped (--no-mpi)";
    if (!use_mpi)
        for (size_t i = 0; i < nsizes; i++)
            mpi[i] = -1;

    double mpt[MAX_SIZES][MAX_PARTS], copy[MAX_SIZES];
    int failed = 0;
    for (size_t i = 0; i < nsizes; i++) {
        size_t iters = iters_opt ? iters_opt : auto_iters(sizes[i]);
        for (int p = 0; p < nparts; p++) {
            mpt[i][p] = -1;
            if (use_device && (size_t)parts[p] > ndev)
                continue;
            progress("%s %zu bytes", "mpt allreduce", sizes[i]);
            mpt[i][p] = mpt_time(parts[p], sizes[i], iters, devs);
            failed |= mpt[i][p] < 0;
        }
        progress("%s %zu bytes", "memcpy", sizes[i]);
        copy[i] = memcpy_time(sizes[i], iters);
    }
    progress_clear();

    if (json) {
        json_t *rows = json_array();
        for (size_t i = 0; i < nsizes; i++) {
            json_t *m = json_object();
            for (int p = 0; p < nparts; p++) {
                char key[16];
                snprintf(key, sizeof key, "%d", parts[p]);
                json_object_set_new(m, key, mpt[i][p] < 0 ? json_null()
                                                          : json_real(busbw(sizes[i], mpt[i][p],
                                                                            parts[p])));
            }
            json_array_append_new(
                rows, json_pack("{s:I, s:o, s:o, s:f}", "bytes", (json_int_t)sizes[i],
                                "mpt_busbw_gbs", m, "mpi_busbw_gbs",
                                mpi[i] < 0 ? json_null() : json_real(busbw(sizes[i], mpi[i], 2)),
                                "memcpy_gbs", copy[i] > 0 ? sizes[i] / copy[i] / 1e9 : 0.0));
        }
        json_t *doc = json_pack("{s:s, s:s, s:o, s:s?}", "transport", "local",
                                "buffers", use_device ? "device" : "host", "sizes", rows,
                                "mpi_missing", no_mpi);
        char *text = json_dumps(doc, JSON_INDENT(2));
        printf("%s\n", text);
        free(text);
        json_decref(doc);
    } else {
        printf("ring allreduce on the local transport (%s buffers) against MPI_Allreduce "
               "(2 ranks) and memcpy\nbusbw = bytes/time * 2(n-1)/n, GB/s; time = median "
               "iteration\n",
               use_device ? "device" : "host");
        if (no_mpi)
            printf("MPI: %s\n", no_mpi);
        printf("%10s", "bytes");
        for (int p = 0; p < nparts; p++) {
            char h[24];
            snprintf(h, sizeof h, "mpt n=%d", parts[p]);
            printf(" %9s", h);
        }
        printf(" %9s %9s %11s\n", "MPI n=2", "memcpy", "mpt/MPI n=2");
        int two = -1;
        for (int p = 0; p < nparts; p++)
            if (parts[p] == 2)
                two = p;
        for (size_t i = 0; i < nsizes; i++) {
            printf("%10zu", sizes[i]);
            for (int p = 0; p < nparts; p++)
                if (mpt[i][p] < 0)
                    printf(" %9s", "-");
                else
                    printf(" %9.3f", busbw(sizes[i], mpt[i][p], parts[p]));
            if (mpi[i] < 0)
                printf(" %9s", "-");
            else
                printf(" %9.3f", busbw(sizes[i], mpi[i], 2));
            printf(" %9.3f", copy[i] > 0 ? sizes[i] / copy[i] / 1e9 : 0);
            if (two >= 0 && mpi[i] > 0 && mpt[i][two] > 0)
                printf(" %10.2fx", mpi[i] / mpt[i][two]);
            else
                printf(" %11s", "-");
            printf("\n");
        }
    }
    mpt_devices_free(devs);
    if (failed)
        tool_die("an allreduce failed (see above)");
    return TOOL_EXIT_OK;
}
