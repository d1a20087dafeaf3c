/*
 * comm/world.c: the processes of one job (mpt_world_t): joining it under
 * mpirun, and the few collectives on bytes that setting the job up needs
 * (gather texts to rank 0, broadcast rank 0's text, all-gather an int),
 * plus the job's device numbering (how many devices each rank opened).
 * What those texts mean (cluster descriptions, plans) is train/world.c's:
 * this file knows nothing of clusters or plans, so comm stays below them.
 *
 * mpt_world_init comes before any OpenCL call: it gives each rank of a
 * host its own PoCL kernel cache (concurrent processes sharing one can
 * crash, pocl issue 1480).
 *
 * Without MPI (not built with it, or not started by mpirun) the world is
 * this one process, and every function works on it.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "comm/comm.h"

#include <time.h>

#ifdef MPT_HAVE_MPI
#include <mpi.h>
#endif

struct mpt_world {
    int rank, size;
    int mpi_here;    /* MPI_Init_thread was called by mpt_world_init */
    int *dev_first;  /* per rank: its first device in the job's cluster */
    int *dev_count;  /* per rank: how many devices it opened */
    int ndevices;    /* in the job's cluster; 0 before mpt_world_cluster */
#ifdef MPT_HAVE_MPI
    MPI_Comm agree;  /* mpt__world_agree_max's own messages (MPI_COMM_NULL: one rank) */
#endif
};

/* The launcher's word for how many processes the job has (Open MPI, or a
 * PMI-based launcher), 0 when no launcher started this one. */
static int launched_size(void)
{
    const char *v = getenv("OMPI_COMM_WORLD_SIZE");
    if (!v)
        v = getenv("PMI_SIZE");
    return v ? atoi(v) : 0;
}

/* $POCL_CACHE_DIR for this rank unless the user set one: one directory
 * per local rank beside the profiles, kept between runs, so that a rank's
 * kernels compile once.  Without a cache directory PoCL keeps its default. */
static void own_pocl_cache(void)
{
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    char base[3072], dir[4096];
    if (*mpt__env(MPT_ENV_POCL_CACHE_DIR) || !local ||
        mpt_profile_cache_dir(base, sizeof base) < 0)
        return;
    snprintf(dir, sizeof dir, "%s/pocl-local-rank-%s", base, local);
    if (mpt__mkdir_p(dir) == MPT_OK)
        setenv("POCL_CACHE_DIR", dir, 0);
}

int mpt_world_init(int *argc, char ***argv, mpt_world_t **out)
{
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_world_init: NULL argument");
    *out = NULL;
    mpt_world_t *w = calloc(1, sizeof *w);
    if (!w)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    w->size = 1;
    int launched = launched_size();
#ifdef MPT_HAVE_MPI
    w->agree = MPI_COMM_NULL;
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (launched > 1 || initialised) {
        int provided = 0;
        if (!initialised) {
            own_pocl_cache();
            if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
                free(w);
                return mpt__fail(MPT_ERR_INVALID, "MPI_Init_thread failed");
            }
            w->mpi_here = 1;
        }
        MPI_Query_thread(&provided);
        MPI_Comm_rank(MPI_COMM_WORLD, &w->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &w->size);
        if (provided < MPI_THREAD_MULTIPLE && w->size > 1) {
            mpt_world_free(w);
            return mpt__fail(MPT_ERR_UNSUPPORTED, "MPI provides thread level %d: mpt's workers "
                             "need MPI_THREAD_MULTIPLE", provided);
        }
        if (w->size > 1)
            MPI_Comm_dup(MPI_COMM_WORLD, &w->agree);
    }
#else
    (void)argc, (void)argv;
    if (launched > 1) {
        free(w);
        return mpt__fail(MPT_ERR_UNSUPPORTED, "started as one of %d processes, but this mpt "
                         "was built without MPI: install libopenmpi-dev and run configure "
                         "--with-mpi", launched);
    }
#endif
    *out = w;
    return MPT_OK;
}

void mpt_world_free(mpt_world_t *w)
{
    if (!w)
        return;
#ifdef MPT_HAVE_MPI
    if (w->agree != MPI_COMM_NULL)
        MPI_Comm_free(&w->agree);
    if (w->mpi_here)
        MPI_Finalize();
#endif
    free(w->dev_first);
    free(w->dev_count);
    free(w);
}

int mpt_world_rank(const mpt_world_t *w) { return w ? w->rank : 0; }
int mpt_world_size(const mpt_world_t *w) { return w ? w->size : 1; }

/* ---- collectives on bytes ------------------------------------------------------ */

#ifdef MPT_HAVE_MPI
/* Counts of at most 2^30 bytes per MPI call: MPI counts are ints. */
#define PIECE (1L << 30)
#endif

int mpt__world_allgather_int(mpt_world_t *w, int mine, int *all)
{
    if (w->size == 1) {
        all[0] = mine;
        return MPT_OK;
    }
#ifdef MPT_HAVE_MPI
    MPI_Allgather(&mine, 1, MPI_INT, all, 1, MPI_INT, MPI_COMM_WORLD);
#endif
    return MPT_OK;
}

#ifdef MPT_HAVE_MPI
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Waits for one request until the deadline (0: none); cancels it then. */
static int wait_until(MPI_Request *req, double deadline)
{
    int done = 0;
    for (long spins = 0; !done; spins++) {
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done)
            break;
        if (deadline > 0 && now_s() > deadline) {
            MPI_Cancel(req);
            MPI_Request_free(req);
            return 0;
        }
        if (spins > 2000) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
    }
    return 1;
}
#endif

int mpt__world_agree_max(mpt_world_t *w, int mine, double timeout_s, int *out)
{
    *out = mine;
    if (!w || w->size == 1)
        return MPT_OK;
#ifdef MPT_HAVE_MPI
    /* Point to point through rank 0 rather than MPI_Allreduce, so that a
     * rank that never comes is named, and no rank waits past the deadline. */
    enum { TAG_VALUE = 1, TAG_RESULT = 2 };
    double deadline = timeout_s > 0 ? now_s() + timeout_s : 0;
    if (w->rank == 0) {
        for (int r = 1; r < w->size; r++) {
            int v = 0;
            MPI_Request req;
            MPI_Irecv(&v, 1, MPI_INT, r, TAG_VALUE, w->agree, &req);
            if (!wait_until(&req, deadline))
                return mpt__fail(MPT_ERR_TIMEOUT,
                                 "rank %d did not reach the end of the step within %.0f s: it "
                                 "is stopped, hung or dead (the deadline is --comm-timeout)",
                                 r, timeout_s);
            *out = v > *out ? v : *out;
        }
        for (int r = 1; r < w->size; r++)
            MPI_Send(out, 1, MPI_INT, r, TAG_RESULT, w->agree); /* one int: never blocks long */
        return MPT_OK;
    }
    MPI_Request req;
    MPI_Send(&mine, 1, MPI_INT, 0, TAG_VALUE, w->agree);
    MPI_Irecv(out, 1, MPI_INT, 0, TAG_RESULT, w->agree, &req);
    if (!wait_until(&req, deadline))
        return mpt__fail(MPT_ERR_TIMEOUT,
                         "rank 0 did not answer at the end of the step within %.0f s: it is "
                         "stopped, hung or dead (the deadline is --comm-timeout)",
                         timeout_s);
#endif
    return MPT_OK;
}

int mpt__world_gather_texts(mpt_world_t *w, const char *mine, char ***out)
{
    size_t n = strlen(mine);
    *out = NULL;
    if (w->size == 1) {
        char **texts = malloc(sizeof *texts + n + 1);
        if (!texts)
            return mpt__fail(MPT_ERR_NOMEM, "out of memory");
        texts[0] = (char *)(texts + 1);
        memcpy(texts[0], mine, n + 1);
        *out = texts;
        return MPT_OK;
    }
    int status = MPT_OK;
#ifdef MPT_HAVE_MPI
    int len = n > (size_t)PIECE ? -1 : (int)n, ok = 1;
    int *lens = NULL, *displs = NULL;
    char **texts = NULL;
    if (w->rank == 0 && (!(lens = calloc((size_t)w->size, sizeof *lens)) ||
                         !(displs = calloc((size_t)w->size, sizeof *displs)))) {
        free(lens), free(displs);
        lens = displs = NULL;
    }
    /* Rank 0 says whether it has room for the lengths before any is sent. */
    if (w->rank == 0)
        ok = lens != NULL;
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok)
        return w->rank == 0 ? mpt__fail(MPT_ERR_NOMEM, "out of memory")
                            : mpt__fail(MPT_ERR_ABORTED, "rank 0 ran out of memory");
    MPI_Gather(&len, 1, MPI_INT, lens, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (w->rank == 0) {
        size_t total = 0;
        for (int r = 0; r < w->size && status == MPT_OK; r++) {
            if (lens[r] < 0)
                status = mpt__fail(MPT_ERR_RANGE, "rank %d's text is over 1 GiB", r);
            displs[r] = (int)total, total += (size_t)(lens[r] < 0 ? 0 : lens[r]) + 1;
        }
        if (status == MPT_OK && (total > (size_t)PIECE ||
                                 !(texts = calloc(1, (size_t)w->size * sizeof *texts + total))))
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory for %zu bytes of texts", total);
        ok = status == MPT_OK;
    }
    /* Every rank learns whether rank 0 can receive before anyone sends:
     * a send that rank 0 does not expect would abort the whole job. */
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (ok) {
        char *base = texts ? (char *)(texts + w->size) : NULL;
        MPI_Gatherv(mine, len, MPI_CHAR, base, lens, displs, MPI_CHAR, 0, MPI_COMM_WORLD);
        if (w->rank == 0) {
            for (int r = 0; r < w->size; r++)
                texts[r] = base + displs[r]; /* calloc'd: each ends in a NUL */
            *out = texts, texts = NULL;
        }
    } else if (w->rank != 0) {
        status = mpt__fail(MPT_ERR_ABORTED, "rank 0 could not gather the ranks' texts");
    }
    free(texts), free(lens), free(displs);
#else
    (void)mine;
#endif
    return status;
}

int mpt__world_clock_offsets(mpt_world_t *w, int rounds, double *offset, double *error,
                             double *at)
{
    for (int r = 0; r < w->size; r++)
        offset[r] = 0, error[r] = 0, at[r] = mpt__now();
#ifdef MPT_HAVE_MPI
    enum { TAG_CLOCK = 3 }; /* on agree's communicator, apart from its two tags */
    /* Rank 0 and rank r in turn, ping-pongs: rank 0 notes its clock before
     * (a) and after (b) the round trip, rank r its own between; offset =
     * r's - (a + b) / 2, wrong by at most (b - a) / 2 (the reply may have
     * been read anywhere in the round trip).  The shortest round trip is
     * kept.  On a loaded machine a process is often descheduled mid-trip
     * (milliseconds): past `rounds`, up to 8 times as many in all until one
     * trip is under `good`.  A NaN ping tells rank r it is done. */
    const double good = 100e-6, stop = NAN;
    for (int r = 1; r < w->size; r++) {
        if (w->rank == 0) {
            for (int k = 0; k < 8 * rounds && (k < rounds || error[r] > good / 2); k++) {
                double a = mpt__now(), v = 0;
                MPI_Send(&a, 1, MPI_DOUBLE, r, TAG_CLOCK, w->agree);
                MPI_Recv(&v, 1, MPI_DOUBLE, r, TAG_CLOCK, w->agree, MPI_STATUS_IGNORE);
                double b = mpt__now();
                if (k == 0 || (b - a) / 2 < error[r])
                    offset[r] = v - (a + b) / 2, error[r] = (b - a) / 2, at[r] = (a + b) / 2;
            }
            MPI_Send(&stop, 1, MPI_DOUBLE, r, TAG_CLOCK, w->agree);
        } else if (w->rank == r) {
            for (;;) {
                double v = 0;
                MPI_Recv(&v, 1, MPI_DOUBLE, 0, TAG_CLOCK, w->agree, MPI_STATUS_IGNORE);
                if (isnan(v))
                    break;
                v = mpt__now();
                MPI_Send(&v, 1, MPI_DOUBLE, 0, TAG_CLOCK, w->agree);
            }
        }
    }
#else
    (void)rounds;
#endif
    return MPT_OK;
}

int mpt__world_bcast_text(mpt_world_t *w, int failed, char **text)
{
    if (w->size == 1)
        return failed < 0 ? failed : MPT_OK;
#ifdef MPT_HAVE_MPI
    /* Rank 0 sends -1 for its failure: the others fail too instead of
     * waiting for a text that never comes. */
    long n = w->rank == 0 ? (failed < 0 || !*text ? -1 : (long)strlen(*text)) : 0;
    MPI_Bcast(&n, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    if (n < 0)
        return w->rank == 0 ? (failed < 0 ? failed : mpt__fail(MPT_ERR_INVALID, "no text"))
                            : mpt__fail(MPT_ERR_ABORTED, "rank 0 failed setting the job up "
                                        "(its error says why)");
    char *buf = malloc((size_t)n + 1);
    int ok = buf != NULL, all_ok = 0;
    /* Each rank's allocation is agreed on before the bytes move. */
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all_ok) {
        free(buf);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory for a text of %ld bytes", n);
    }
    if (w->rank == 0)
        memcpy(buf, *text, (size_t)n);
    for (long off = 0; off < n; off += PIECE) {
        long piece = n - off < PIECE ? n - off : PIECE;
        MPI_Bcast(buf + off, (int)piece, MPI_CHAR, 0, MPI_COMM_WORLD);
    }
    buf[n] = '\0';
    free(*text);
    *text = buf;
#else
    (void)text;
#endif
    return MPT_OK;
}

int mpt__world_host_name(char *buf, size_t size)
{
#ifdef MPT_HAVE_MPI
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (initialised && size > MPI_MAX_PROCESSOR_NAME) {
        int len = 0;
        MPI_Get_processor_name(buf, &len);
        buf[len] = '\0';
        return MPT_OK;
    }
#endif
    if (gethostname(buf, size - 1) != 0)
        snprintf(buf, size, "localhost");
    buf[size - 1] = '\0';
    return MPT_OK;
}

/* ---- the job's devices ---------------------------------------------------------- */

int mpt__world_set_devices(mpt_world_t *w, const int *count)
{
    int *first = calloc((size_t)w->size, sizeof *first);
    int *copy = calloc((size_t)w->size, sizeof *copy);
    if (!first || !copy) {
        free(first), free(copy);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    memcpy(copy, count, (size_t)w->size * sizeof *copy);
    for (int r = 1; r < w->size; r++)
        first[r] = first[r - 1] + copy[r - 1];
    free(w->dev_first), free(w->dev_count);
    w->dev_first = first, w->dev_count = copy;
    w->ndevices = first[w->size - 1] + copy[w->size - 1];
    return MPT_OK;
}

int mpt_world_first_device(const mpt_world_t *w)
{
    return w && w->dev_first ? w->dev_first[w->rank] : 0;
}

int mpt__world_devices(const mpt_world_t *w, const int **first, const int **count)
{
    *first = w->dev_first, *count = w->dev_count;
    return w->ndevices;
}
