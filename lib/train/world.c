/*
 * train/world.c: setting up a job of several processes (docs/mpi.md): the
 * job's cluster made of every rank's devices, and rank 0's plan shared
 * with every rank.  The bytes move through comm/world.c's collectives; the
 * meaning of those bytes (cluster descriptions, plans) lives here, above
 * profile and plan, so that comm stays pure communication.  The trainer
 * over the whole job is mpt_trainer_create_world (trainer.c).
 *
 * Startup, in order: mpt_world_init before any OpenCL call, then each rank
 * opens and profiles its own devices, mpt_world_cluster merges them (rank
 * 0's devices first, then rank 1's...), rank 0 plans and
 * mpt_world_share_plan hands the plan to every rank.  Ranks on one host
 * share a node of the cluster, so their devices' link classes come from
 * that host's topology; ranks on different hosts are `cross-node`, over
 * the cluster's network (the default of docs/cluster.md: this file
 * measures no network).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "plan/plan.h"
#include "profile/profile.h"

/* Rank 0: one cluster JSON out of every rank's (texts[r]) and host name
 * (hosts[r]). */
static int merge_clusters(int size, char **texts, char **hosts, char **merged)
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
        json_error_t jerr;
        json_t *c = json_loads(texts[r], 0, &jerr);
        if (!c) {
            status = mpt__fail(MPT_ERR_PARSE, "rank %d's devices: %s", r, jerr.text);
            goto out;
        }
        int node = -1;
        for (int q = 0; q < r && node < 0; q++)
            if (!strcmp(hosts[q], hosts[r]))
                node = node_of_rank[q];
        if (node < 0) { /* a new host: rank r's node describes it */
            json_t *n = json_array_get(json_object_get(c, "nodes"), 0);
            json_t *copy = n ? json_deep_copy(n) : json_object();
            json_object_set_new(copy, "name", json_string(hosts[r]));
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

int mpt_world_cluster(mpt_world_t *w, const mpt_cluster_t *local, mpt_cluster_t **out)
{
    char *mine = NULL, *text = NULL, **texts = NULL, **hosts = NULL, host[256] = "";
    int *count = NULL, status = MPT_OK, size = mpt_world_size(w);
    json_t *root = NULL;
    json_error_t jerr;
    if (!w || !local || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_world_cluster: NULL argument");
    *out = NULL;
    if (!(count = calloc((size_t)size, sizeof *count)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    /* Every rank takes part in each collective below, whatever failed on
     * it before: a rank that skipped one would leave the others waiting. */
    int failed = mpt_cluster_to_json(local, &mine);
    mpt__world_host_name(host, sizeof host);
    MPT_TRY(mpt__world_allgather_int(w, (int)mpt_cluster_device_count(local), count));
    MPT_TRY(mpt__world_set_devices(w, count));
    status = mpt__world_gather_texts(w, mine ? mine : "", &texts);
    if (status == MPT_OK)
        status = mpt__world_gather_texts(w, host, &hosts);
    if (failed < 0 && status == MPT_OK)
        status = failed;
    if (status == MPT_OK && mpt_world_rank(w) == 0)
        status = size == 1 ? ((text = mpt__strdup(mine)) ? MPT_OK
                                                           : mpt__fail(MPT_ERR_NOMEM, "out of memory"))
                           : merge_clusters(size, texts, hosts, &text);
    MPT_TRY(mpt__world_bcast_text(w, status, &text));
    if (!(root = json_loads(text, 0, &jerr))) {
        status = mpt__fail(MPT_ERR_PARSE, "the job's cluster: %s", jerr.text);
        goto out;
    }
    status = mpt__cluster_from_json(root, "the job's cluster", out);
out:
    json_decref(root);
    free(count);
    free(mine);
    free(text);
    free(texts);
    free(hosts);
    return status;
}

/* ---- devices of several ranks on one host, measured together ------------- */

/* Every rank has ended the phase.  Through mpt__world_agree_max, which
 * sleeps while it waits: Open MPI's blocking collectives poll, and a rank
 * polling on the shared cores slowed the other rank's device in its
 * "alone" phase (devices measured at 96-153% of their rate alone
 * together with an allgather as the wait, 63-69% with this one). */
static int end_phase(void *w)
{
    int any = 0;
    return mpt__world_agree_max(w, 0, 0, &any);
}

/* Whether any rank failed (mine < 0 here): every rank learns the same. */
static int any_failed(mpt_world_t *w, int mine)
{
    int any = 0;
    return mpt__world_agree_max(w, mine < 0, 0, &any) < 0 || any;
}

/* The rank that opened job device j. */
static int rank_of(const int *first, const int *count, int size, size_t j)
{
    for (int r = 0; r < size; r++)
        if ((int)j >= first[r] && (int)j < first[r] + count[r])
            return r;
    return -1;
}

/* Appends line (any text) to *text (NULL: empty so far). */
static int append_line(char **text, const char *line)
{
    size_t had = *text ? strlen(*text) : 0;
    char *grown = realloc(*text, had + strlen(line) + 1);
    if (!grown)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    memcpy(grown + had, line, strlen(line) + 1);
    *text = grown;
    return MPT_OK;
}

/* Measures this rank's members of the group (members[0..k), job order)
 * with the other ranks' and appends "device gemm mem count" lines for them
 * to *text; every rank drops the group when any rank failed it (the
 * others' "together" phases then ran without that rank's devices). */
static int measure_group(mpt_world_t *w, const mpt_devices_t *devs, const mpt_cluster_t *job,
                         const size_t *members, size_t k, int first, int mine, char **text)
{
    mpt_device_t **local = calloc(k, sizeof *local);
    mpt_profile_t *alone = calloc(k, sizeof *alone);
    size_t *turn = calloc(k, sizeof *turn), *index = calloc(k, sizeof *index), m = 0;
    double *gemm = calloc(k, sizeof *gemm), *mem = calloc(k, sizeof *mem);
    char *lines = NULL;
    int status = MPT_OK;
    if (!local || !alone || !turn || !index || !gemm || !mem)
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t a = 0; status == MPT_OK && a < k; a++)
        if ((int)members[a] >= first && (int)members[a] < first + mine) {
            local[m] = mpt_devices_get(devs, members[a] - (size_t)first);
            alone[m] = mpt_cluster_device(job, members[a])->profile;
            turn[m] = a, index[m++] = members[a];
        }
    /* Every rank runs the group's phases, failed or not (no rank waits for
     * calls another never makes). */
    int measured = mpt__profile_measure_shared_job(local, alone, status == MPT_OK ? m : 0, turn,
                                                   k, end_phase, w, gemm, mem);
    status = status < 0 ? status : measured;
    for (size_t i = 0; status == MPT_OK && i < m; i++) {
        char line[128];
        snprintf(line, sizeof line, "%zu %.17g %.17g %zu\n", index[i], gemm[i], mem[i],
                 mpt__cluster_on_its_cores(job, members, k, index[i]));
        status = append_line(&lines, line);
    }
    if (any_failed(w, status)) {
        if (status == MPT_OK)
            status = mpt__fail(MPT_ERR_ABORTED, "another rank could not measure its devices");
    } else if (lines) {
        status = append_line(text, lines);
    }
    free(lines);
    free(local), free(alone), free(turn), free(index), free(gemm), free(mem);
    return status;
}

/* Every rank's lines (rank 0 joins them) into the job's cluster: all read
 * first, so that a malformed text changes nothing.  A ratio outside (0, 2]
 * is a disturbed measurement (another process took the cores in an
 * "alone" phase: 3.8 once beside a parallel make check), refused as the
 * cache refuses it (profile/shared.c): that device keeps its estimate, on
 * every rank alike; plan/share.c caps the rest at the rate alone. */
static int apply_shared(mpt_cluster_t *job, const char *text)
{
    size_t n = 0, cap = 0, j, together;
    double gemm, mem;
    int used = 0, status = MPT_OK;
    struct line {
        size_t j, together;
        double gemm, mem;
    } *all = NULL;
    const char *at = text ? text : "";
    for (; sscanf(at, "%zu %lg %lg %zu%n", &j, &gemm, &mem, &together, &used) == 4; at += used) {
        if (j >= mpt_cluster_device_count(job) || together < 2) {
            free(all);
            return mpt__fail(MPT_ERR_PARSE, "a rank measured job device %zu of %zu beside %zu "
                             "devices", j, mpt_cluster_device_count(job), together);
        }
        if (!(gemm > 0 && gemm <= 2) || !(mem > 0 && mem <= 2)) {
            mpt__log(MPT_LOG_WARN, "device %zu, measured beside the devices of other ranks on "
                     "its cores at %.0f%% of its GEMM rate alone and %.0f%% of its memory "
                     "bandwidth: a disturbed measurement, the estimate stays", j, 100 * gemm,
                     100 * mem);
            continue;
        }
        if (n == cap) {
            struct line *grown = realloc(all, (cap = cap ? 2 * cap : 8) * sizeof *all);
            if (!grown) {
                free(all);
                return mpt__fail(MPT_ERR_NOMEM, "out of memory");
            }
            all = grown;
        }
        all[n++] = (struct line){j, together, gemm, mem};
    }
    at += strspn(at, " \n");
    if (*at) {
        free(all);
        return mpt__fail(MPT_ERR_PARSE, "the devices measured together: a malformed line at "
                         "\"%.40s\"", at);
    }
    for (size_t i = 0; i < n && status == MPT_OK; i++) {
        const mpt_profile_t *p = &mpt_cluster_device(job, all[i].j)->profile;
        status = mpt__cluster_set_shared(job, all[i].j, p->gemm_gflops * all[i].gemm,
                                         p->mem_gbps * all[i].mem, (double)all[i].together);
        mpt__log(MPT_LOG_INFO, "device %zu, measured beside the devices of other ranks on its "
                 "cores: GEMM rate %.0f%% of its rate alone, memory bandwidth %.0f%%",
                 all[i].j, 100 * all[i].gemm, 100 * all[i].mem);
    }
    free(all);
    return status;
}

int mpt_world_measure_shared(mpt_world_t *w, const mpt_devices_t *devs, mpt_cluster_t *job)
{
    if (!w || !devs || !job)
        return mpt__fail(MPT_ERR_INVALID, "mpt_world_measure_shared: NULL argument");
    int size = mpt_world_size(w), rank = mpt_world_rank(w), status = MPT_OK;
    const int *first = NULL, *count = NULL;
    size_t n = mpt_cluster_device_count(job);
    if (size == 1)
        return MPT_OK; /* mpt_cluster_local measured this process's groups */
    size_t *group = calloc(n ? n : 1, sizeof *group), *members = calloc(n ? n : 1, sizeof *members);
    char *text = NULL, **texts = NULL;
    if (!group || !members)
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
    else if (mpt__world_devices(w, &first, &count) != (int)n || !first || !count ||
             count[rank] != (int)mpt_devices_count(devs))
        status = mpt__fail(MPT_ERR_INVALID, "mpt_world_measure_shared: the cluster and the "
                           "devices are not the job's and this rank's (mpt_world_cluster)");
    /* Every rank goes on, or none: the loop below is collective. */
    if (any_failed(w, status)) {
        free(group), free(members);
        return status < 0 ? status
                          : mpt__fail(MPT_ERR_ABORTED, "another rank could not set up the "
                                      "measurement of devices that share cores");
    }
    /* The same groups on every rank (the same cluster), so the same
     * collectives in the same order. */
    mpt__cluster_share_groups(job, group);
    for (size_t g = 0; g < n; g++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (group[i] == g)
                members[k++] = i;
        /* One rank's (its devices are contiguous in the job's order):
         * mpt_cluster_local measured it. */
        if (k < 2 || rank_of(first, count, size, members[0]) ==
                         rank_of(first, count, size, members[k - 1]))
            continue;
        if (measure_group(w, devs, job, members, k, first[rank], count[rank], &text) < 0) {
            mpt__log(MPT_LOG_WARN, "devices %zu to %zu, which share cores across ranks, stay "
                     "estimated: %s", members[0], members[k - 1], mpt_last_error());
            mpt__clear_error();
        }
    }
    /* Rank 0 joins every rank's lines and hands them to every rank. */
    status = mpt__world_gather_texts(w, text ? text : "", &texts);
    free(text);
    text = NULL;
    if (status == MPT_OK && rank == 0) /* a text, if empty, for mpt__world_bcast_text */
        status = append_line(&text, "");
    for (int r = 0; status == MPT_OK && rank == 0 && r < size; r++)
        status = append_line(&text, texts[r]);
    status = mpt__world_bcast_text(w, status, &text);
    if (status == MPT_OK)
        status = apply_shared(job, text);
    free(texts);
    free(text);
    free(group), free(members);
    return status;
}

/* Rank 0's *plan to every rank; `failed`: rank 0 could not make it, and
 * every rank's call fails with it. */
static int share_plan(mpt_world_t *w, const mpt_model_t *model, const mpt_cluster_t *cluster,
                      int failed, mpt_plan_t **plan)
{
    char *text = NULL;
    int status = MPT_OK, rank = mpt_world_rank(w);
    if (mpt_world_size(w) == 1)
        return failed;
    if (rank == 0 && failed == MPT_OK)
        failed = mpt__plan_to_json(*plan, &text);
    MPT_TRY(mpt__world_bcast_text(w, failed, &text));
    if (rank != 0) {
        mpt_plan_free(*plan);
        *plan = NULL;
        status = mpt__plan_from_json(text, "rank 0's plan", model->nlayers,
                                     mpt_cluster_device_count(cluster), plan);
        if (status == MPT_OK)
            status = mpt__plan_roles(*plan, model);
    }
out:
    free(text);
    return status;
}

int mpt_world_share_plan(mpt_world_t *w, const mpt_model_t *model, const mpt_cluster_t *cluster,
                         mpt_plan_t **plan)
{
    if (!w || !model || !cluster || !plan || (mpt_world_rank(w) == 0 && !*plan))
        return mpt__fail(MPT_ERR_INVALID, "mpt_world_share_plan: NULL argument");
    return share_plan(w, model, cluster, MPT_OK, plan);
}

int mpt_world_plan(mpt_world_t *w, const mpt_model_t *model, const mpt_cluster_t *cluster,
                   const char *plan_file, const mpt_plan_request_t *request, mpt_plan_t **out)
{
    int failed = MPT_OK;
    if (!w || !model || !cluster || !out || (!plan_file && !request))
        return mpt__fail(MPT_ERR_INVALID, "mpt_world_plan: NULL argument");
    *out = NULL;
    if (mpt_world_rank(w) == 0)
        failed = plan_file ? mpt_plan_load(plan_file, model, cluster, out)
                           : mpt_plan_create(model, cluster, request, out);
    int status = share_plan(w, model, cluster, failed, out);
    if (status < 0) {
        mpt_plan_free(*out);
        *out = NULL;
    }
    return status;
}
