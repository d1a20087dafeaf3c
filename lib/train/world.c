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
