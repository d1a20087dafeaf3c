/*
 * comm/world.c: the processes of one job (mpt_world_t): joining it under
 * mpirun, the job's cluster made of every rank's devices, and rank 0's
 * plan shared with every rank.  The engine then runs that plan with
 * workers on the ranks that own the devices (engine/engine.c).
 *
 * Startup, in order: mpt_world_init before any OpenCL call (it gives each
 * rank of a host its own PoCL kernel cache: concurrent processes sharing
 * one can crash, pocl issue 1480), then each rank opens and profiles its
 * own devices, mpt_world_cluster merges them (rank 0's devices first, then
 * rank 1's...), rank 0 plans and mpt_world_share_plan hands the plan to
 * every rank.  Ranks on one host share a node of the cluster, so their
 * devices' link classes come from that host's topology; ranks on
 * different hosts are `cross-node`, over the cluster's network (the
 * default of docs/cluster.md: this file measures no network).
 *
 * Without MPI (not built with it, or not started by mpirun) the world is
 * this one process, and every function works on it.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "comm/comm.h"
#include "plan/plan.h"
#include "profile/profile.h"

#ifdef MPT_HAVE_MPI
#include <mpi.h>
#endif

struct mpt_world {
    int rank, size;
    int mpi_here;    /* MPI_Init_thread was called by mpt_world_init */
    int *dev_first;  /* per rank: its first device in the job's cluster */
    int *dev_count;  /* per rank: how many devices it opened */
    int ndevices;    /* in the job's cluster; 0 before mpt_world_cluster */
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
    if (w->mpi_here)
        MPI_Finalize();
#endif
    free(w->dev_first);
    free(w->dev_count);
    free(w);
}

int mpt_world_rank(const mpt_world_t *w) { return w ? w->rank : 0; }
int mpt_world_size(const mpt_world_t *w) { return w ? w->size : 1; }

/* ---- the job's cluster ------------------------------------------------------ */

#ifdef MPT_HAVE_MPI
/* Rank 0's text (its length included) reaches every rank; *text is then
 * each rank's own copy (free it). */
static int bcast_text(char **text)
{
    long n = *text ? (long)strlen(*text) : 0;
    MPI_Bcast(&n, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    char *buf = malloc((size_t)n + 1);
    if (!buf)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0)
        memcpy(buf, *text, (size_t)n);
    for (long off = 0; off < n; off += 1L << 30) { /* int counts */
        long piece = n - off < (1L << 30) ? n - off : (1L << 30);
        MPI_Bcast(buf + off, (int)piece, MPI_CHAR, 0, MPI_COMM_WORLD);
    }
    buf[n] = '\0';
    free(*text);
    *text = buf;
    return MPT_OK;
}

/* Rank 0: one cluster JSON out of every rank's (texts[r]) and host name. */
static int merge_clusters(int size, char **texts, const char *hosts, int host_len,
                          char **merged)
{
    json_t *root = json_object(), *nodes = json_array(), *devices = json_array(),
           *links = json_array();
    int status = MPT_OK, *node_of_rank = calloc((size_t)size, sizeof *node_of_rank);
    size_t nnodes = 0, offset = 0;
    *merged = NULL;
    if (!root || !nodes || !devices || !links || !node_of_rank) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int r = 0; r < size; r++) {
        char where[64];
        json_error_t jerr;
        snprintf(where, sizeof where, "rank %d's devices", r);
        json_t *c = json_loads(texts[r], 0, &jerr);
        if (!c) {
            status = mpt__fail(MPT_ERR_PARSE, "%s: %s", where, jerr.text);
            goto out;
        }
        const char *host = hosts + (size_t)r * (size_t)host_len;
        int node = -1;
        for (int q = 0; q < r && node < 0; q++)
            if (!strcmp(hosts + (size_t)q * (size_t)host_len, host))
                node = node_of_rank[q];
        if (node < 0) { /* a new host: rank r's node describes it */
            json_t *n = json_array_get(json_object_get(c, "nodes"), 0);
            json_t *copy = n ? json_deep_copy(n) : json_object();
            json_object_set_new(copy, "name", json_string(host));
            json_array_append_new(nodes, copy);
            node = (int)nnodes++;
        }
        node_of_rank[r] = node;
        if (r == 0) {
            json_t *net = json_object_get(c, "network");
            if (net)
                json_object_set(root, "network", net);
        }
        size_t i;
        json_t *d, *l;
        json_array_foreach(json_object_get(c, "devices"), i, d) {
            json_t *copy = json_deep_copy(d);
            json_object_set_new(copy, "node", json_integer(node));
            json_array_append_new(devices, copy);
        }
        json_array_foreach(json_object_get(c, "links"), i, l) {
            json_t *copy = json_deep_copy(l);
            for (const char *end = "ab"; *end; end++) { /* this rank's device indices */
                char key[2] = {*end, '\0'};
                json_int_t v = json_integer_value(json_object_get(l, key));
                json_object_set_new(copy, key, json_integer((json_int_t)offset + v));
            }
            json_array_append_new(links, copy);
        }
        offset += json_array_size(json_object_get(c, "devices"));
        json_decref(c);
    }
    char name[64];
    snprintf(name, sizeof name, "mpirun-%d-ranks", size);
    json_object_set_new(root, "mpt_cluster", json_integer(1));
    json_object_set_new(root, "name", json_string(name));
    json_object_set(root, "nodes", nodes);
    json_object_set(root, "devices", devices);
    json_object_set(root, "links", links);
    if (!(*merged = json_dumps(root, JSON_COMPACT)))
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
out:
    json_decref(root);
    json_decref(nodes);
    json_decref(devices);
    json_decref(links);
    free(node_of_rank);
    return status;
}
#endif

int mpt_world_cluster(mpt_world_t *w, const mpt_cluster_t *local, mpt_cluster_t **out)
{
    char *mine = NULL, *text = NULL;
    json_t *root = NULL;
    json_error_t jerr;
    int status = MPT_OK, count = (int)mpt_cluster_device_count(local);
    if (!w || !local || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_world_cluster: NULL argument");
    *out = NULL;
    free(w->dev_first), free(w->dev_count);
    if (!(w->dev_first = calloc((size_t)w->size, sizeof *w->dev_first)) ||
        !(w->dev_count = calloc((size_t)w->size, sizeof *w->dev_count)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    MPT_TRY(mpt_cluster_to_json(local, &mine));
    if (w->size == 1) {
        text = mine, mine = NULL;
        w->dev_count[0] = count;
    }
#ifdef MPT_HAVE_MPI
    else {
        char host[MPI_MAX_PROCESSOR_NAME + 1] = "";
        int len = 0, n = (int)strlen(mine);
        int *lens = calloc((size_t)w->size, sizeof *lens), *displs = NULL;
        char *all = NULL, *hosts = NULL, **texts = NULL;
        MPI_Get_processor_name(host, &len);
        MPI_Allgather(&count, 1, MPI_INT, w->dev_count, 1, MPI_INT, MPI_COMM_WORLD);
        if (!lens || !(hosts = calloc((size_t)w->size, sizeof host)) ||
            !(displs = calloc((size_t)w->size, sizeof *displs))) {
            free(lens), free(hosts);
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        MPI_Gather(&n, 1, MPI_INT, lens, 1, MPI_INT, 0, MPI_COMM_WORLD);
        MPI_Gather(host, (int)sizeof host, MPI_CHAR, hosts, (int)sizeof host, MPI_CHAR, 0,
                   MPI_COMM_WORLD);
        long total = 0;
        for (int r = 0; r < w->size; r++)
            displs[r] = (int)total, total += lens[r] + 1;
        if (w->rank == 0 && !(all = calloc((size_t)total + 1, 1)))
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        MPI_Gatherv(mine, n, MPI_CHAR, all, lens, displs, MPI_CHAR, 0, MPI_COMM_WORLD);
        if (w->rank == 0 && status == MPT_OK) {
            if (!(texts = calloc((size_t)w->size, sizeof *texts)))
                status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            for (int r = 0; status == MPT_OK && r < w->size; r++)
                texts[r] = all + displs[r]; /* calloc'd: each ends in a NUL */
            if (status == MPT_OK)
                status = merge_clusters(w->size, texts, hosts, (int)sizeof host, &text);
        }
        free(texts), free(all), free(hosts), free(lens), free(displs);
        /* A failure on rank 0 must not leave the others waiting below. */
        if (status < 0 && w->rank == 0)
            goto out;
        MPT_TRY(bcast_text(&text));
    }
#endif
    for (int r = 1; r < w->size; r++)
        w->dev_first[r] = w->dev_first[r - 1] + w->dev_count[r - 1];
    w->ndevices = w->dev_first[w->size - 1] + w->dev_count[w->size - 1];
    if (!(root = json_loads(text, 0, &jerr))) {
        status = mpt__fail(MPT_ERR_PARSE, "the job's cluster: %s", jerr.text);
        goto out;
    }
    status = mpt__cluster_from_json(root, "the job's cluster", out);
out:
    json_decref(root);
    free(mine);
    free(text);
    return status;
}

int mpt_world_first_device(const mpt_world_t *w)
{
    return w && w->dev_first ? w->dev_first[w->rank] : 0;
}

/* ---- the plan ----------------------------------------------------------------- */

int mpt_world_share_plan(mpt_world_t *w, const mpt_model_t *model, const mpt_cluster_t *cluster,
                         mpt_plan_t **plan)
{
    char *text = NULL;
    int status = MPT_OK;
    if (!w || !model || !cluster || !plan || (w->rank == 0 && !*plan))
        return mpt__fail(MPT_ERR_INVALID, "mpt_world_share_plan: NULL argument");
    if (w->size == 1)
        return MPT_OK;
#ifdef MPT_HAVE_MPI
    if (w->rank == 0)
        MPT_TRY(mpt__plan_to_json(*plan, &text));
    MPT_TRY(bcast_text(&text));
    if (w->rank != 0) {
        mpt_plan_free(*plan);
        *plan = NULL;
        status = mpt__plan_from_json(text, "rank 0's plan", model->nlayers,
                                     mpt_cluster_device_count(cluster), plan);
    }
out:
#endif
    free(text);
    return status;
}

int mpt__world_devices(const mpt_world_t *w, const int **first, const int **count)
{
    *first = w->dev_first, *count = w->dev_count;
    return w->ndevices;
}
