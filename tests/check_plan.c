/*
 * tests/check_plan.c: the planner (plan/planner.c) through the public API
 * (mpt_plan_create, mpt_plan_to_json, mpt_plan_load, mpt_plan_describe,
 * mpt_plan_simulate) and the fields of mpt__plan_t.
 *
 * - heterogeneous devices: two devices whose GEMM rates are 2:1 (every
 *   other figure equal, memory huge, transfers nearly free) and a model of
 *   24 equal linear 512 + relu pairs: with pp pinned to 2 the two stages'
 *   compute times (fwd_s + bwd_s) agree within 15% and the fast device's
 *   layers carry 2/3 of the FLOPs within 0.05; with dp pinned to 2 the
 *   batch shares are 2/3 and 1/3 within 0.01;
 * - memory: on every shipped cluster (models/clusters/) with both shipped
 *   models, no device of the chosen plan is predicted to use more than its
 *   global memory; a fast device too small for its speed share gets no
 *   more layers than fit; devices too small for the model fail with
 *   MPT_ERR_DEVICE_MEMORY naming a device and a byte count, also when the
 *   cluster has more devices than the model has layers;
 * - pins: dp, pp, tp, microbatches and schedule pinned one at a time give
 *   plans with those values; dp = 3 on 4 devices is MPT_ERR_INVALID;
 * - choice: the plan is no slower than any alternative that was not
 *   rejected, is itself among them, and every alternative has a time or a
 *   reason (all shipped clusters and models);
 * - tensor-parallel roles: a plan the planner makes and the same plan
 *   loaded back (mpt_plan_load) record each layer's role in its
 *   tensor-parallel stage (column, slice, row, whole for linear, relu,
 *   linear, the loss), as mpt__tp_walk computes them, and none for a
 *   one-device stage; the same plan for a model with dropout on the
 *   slice loads, dropout's role a slice;
 * - plan JSON written to a file and loaded back writes the same text;
 * - mpt_plan_simulate of the plan gives predicted_step_s, and so does the
 *   plan loaded back; mpt_plan_describe lists the alternatives;
 * - MPT_PLAN_DEBUG=1 makes the planner log "plan: ..." lines at INFO;
 *   unset, it logs none.
 *
 * Tolerances: layer boundaries are integers, so proportions hold only to
 * one layer: one linear layer is 1/24 (0.042) of the model's FLOPs, hence
 * 0.05 on the FLOP share, and 1 of the slow stage's 8 linear layers is
 * 12.5% of its time, hence 15% between the stages' times.  Batch shares
 * are proportional to the GEMM rates, 0.01 leaves room for rounding them to
 * whole samples (1/128 = 0.008).  The simulator is deterministic and plan
 * JSON prints 17 significant digits (doubles round-trip exactly), so the
 * simulated step is compared exactly.
 *
 * Touches no device: runs forked.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plan/plan.h"
#include <jansson.h>

#include "testutil.h"

/* ---- fixtures ----------------------------------------------------------- */

static const char *models_path(const char *name)
{
    static char buf[4096];
    const char *dir = getenv("MPT_TESTS_SRCDIR");
    snprintf(buf, sizeof buf, "%s/../models/%s", dir ? dir : "tests", name);
    return buf;
}

/* A cluster of n devices on one node, device i with GEMM rate gflops[i]
 * and mem[i] bytes; every other figure alike and fast (memory 1e5 GB/s,
 * host links 1e4 GB/s, no launch latency), so that the layers below are
 * compute-bound and stage boundaries cost next to nothing. */
static mpt_cluster_t *make_cluster(size_t n, const double *gflops, const double *mem)
{
    size_t cap = 512 * n + 256, len = 0;
    char *text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    len += (size_t)snprintf(text + len, cap - len,
                            "{\"mpt_cluster\": 1, \"name\": \"test\", \"devices\": [");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(
            text + len, cap - len,
            "%s{\"name\": \"dev%zu\", \"type\": \"gpu\", \"global_mem_bytes\": %.0f, "
            "\"node\": 0, \"numa_node\": 0, \"package\": 0, \"profile\": {\"gemm_gflops\": %g, "
            "\"mem_gbps\": 100000, \"h2d_gbps\": 10000, \"d2h_gbps\": 10000, \"launch_us\": 0}}",
            i ? ", " : "", i, mem[i], gflops[i]);
    snprintf(text + len, cap - len, "]}");
    mpt_cluster_t *c = test_cluster_from_text(text);
    free(text);
    return c;
}

static mpt_cluster_t *two_devices(double fast_mem, double slow_mem)
{
    const double gflops[2] = {2000, 1000}, mem[2] = {fast_mem, slow_mem};
    return make_cluster(2, gflops, mem);
}

#define DEEP_PAIRS 24
#define DEEP_LAYERS (2 * DEEP_PAIRS + 2)
#define HUGE 1e12

/* input [512], 24 x (linear 512, relu), linear 10, loss: 50 layers, the
 * linear 512 ones all alike. */
static mpt_model_t *deep_model(void)
{
    char text[8192];
    size_t len = (size_t)snprintf(text, sizeof text,
                                  "{\"name\": \"deep\", \"input\": [512], \"layers\": [");
    for (int i = 0; i < DEEP_PAIRS; i++)
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "{\"kind\": \"linear\", \"units\": 512}, {\"kind\": \"relu\"}, ");
    snprintf(text + len, sizeof text - len,
             "{\"kind\": \"linear\", \"units\": 10}, {\"kind\": \"softmax_cross_entropy\"}]}");
    char path[] = "/tmp/check_plan_model_XXXXXX";
    test_write_temp(path, text);
    mpt_model_t *m = NULL;
    int status = mpt_model_load(path, &m);
    unlink(path);
    ck_assert_msg(status == MPT_OK, "%s", mpt_last_error());
    ck_assert_uint_eq(m->nlayers, DEEP_LAYERS);
    return m;
}

static mpt_model_t *shipped_model(const char *name)
{
    mpt_model_t *m = NULL;
    ck_assert_mpt_ok(mpt_model_load(models_path(name), &m));
    return m;
}

/* Calls fn for every models/clusters/ JSON file with each shipped model;
 * returns the number of clusters. */
typedef void (*cluster_fn)(const char *path, const mpt_cluster_t *c, const mpt_model_t *m);

static int for_shipped(cluster_fn fn)
{
    static const char *const models[] = {"mlp-fashion.json", "cnn-fashion.json"};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", models_path("clusters"));
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        mpt_cluster_t *c = NULL;
        ck_assert_msg(mpt_cluster_load(path, &c) == MPT_OK, "%s", mpt_last_error());
        for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
            mpt_model_t *m = shipped_model(models[i]);
            fn(path, c, m);
            mpt_model_free(m);
        }
        mpt_cluster_free(c);
        n++;
    }
    closedir(d);
    return n;
}

static double stage_flops(const mpt__model_cost_t *mc, const mpt__plan_stage_t *st)
{
    double f = 0;
    for (size_t l = st->first; l <= st->last; l++)
        f += mc->layers[l].fwd_flops + mc->layers[l].bwd_flops;
    return f;
}

/* ---- heterogeneous devices ------------------------------------------------- */

START_TEST(pipeline_follows_speed)
{
    mpt_model_t *m = deep_model();
    mpt_cluster_t *c = two_devices(HUGE, HUGE);
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.pp = 2;
    mpt_plan_t *p = NULL;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
    ck_assert_uint_eq(p->dp, 1);
    ck_assert_uint_eq(p->pp, 2);
    ck_assert_uint_eq(p->tp, 1);
    const mpt__plan_replica_t *rep = &p->replicas[0];
    ck_assert_uint_eq(rep->nstages, 2);
    ck_assert_uint_eq(rep->stages[0].first, 0);
    ck_assert_uint_eq(rep->stages[0].last + 1, rep->stages[1].first);
    ck_assert_uint_eq(rep->stages[1].last, DEEP_LAYERS - 1);

    mpt__model_cost_t mc = {0};
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    double total = 0, fast = 0, t[2];
    for (size_t s = 0; s < 2; s++) {
        const mpt__plan_stage_t *st = &rep->stages[s];
        ck_assert_uint_eq(st->ndevices, 1);
        total += stage_flops(&mc, st);
        if (st->devices[0].device == 0) /* device 0 has the 2000 GFLOP/s */
            fast += stage_flops(&mc, st);
        t[s] = st->fwd_s + st->bwd_s;
        ck_assert(t[s] > 0);
    }
    /* One linear layer is 1/24 of the FLOPs: 0.05 is one layer's slack. */
    ck_assert_msg(fabs(fast / total - 2.0 / 3.0) <= 0.05,
                  "the fast device carries %.3f of the FLOPs, expected 2/3 (stages %zu-%zu, "
                  "%zu-%zu)", fast / total, rep->stages[0].first, rep->stages[0].last,
                  rep->stages[1].first, rep->stages[1].last);
    /* One of the slow stage's 8 linear layers is 12.5% of its time. */
    ck_assert_msg(fabs(t[0] - t[1]) <= 0.15 * fmax(t[0], t[1]),
                  "stage times %.6g and %.6g s differ by more than 15%%", t[0], t[1]);
    mpt__model_cost_free(&mc);
    mpt_plan_free(p);
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

START_TEST(batch_follows_speed)
{
    mpt_model_t *m = deep_model();
    mpt_cluster_t *c = two_devices(HUGE, HUGE);
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.dp = 2;
    mpt_plan_t *p = NULL;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
    ck_assert_uint_eq(p->dp, 2);
    ck_assert_uint_eq(p->nreplicas, 2);
    double share[2] = {0, 0};
    for (size_t r = 0; r < 2; r++) {
        const mpt__plan_replica_t *rep = &p->replicas[r];
        ck_assert_uint_eq(rep->nstages, 1);
        ck_assert_uint_eq(rep->stages[0].first, 0);
        ck_assert_uint_eq(rep->stages[0].last, DEEP_LAYERS - 1);
        size_t dev = rep->stages[0].devices[0].device;
        ck_assert_uint_lt(dev, 2);
        share[dev] += rep->batch_share;
    }
    /* 2:1 GEMM rates; 0.01 leaves room for whole samples (1/128). */
    ck_assert_msg(fabs(share[0] - 2.0 / 3.0) <= 0.01 && fabs(share[1] - 1.0 / 3.0) <= 0.01,
                  "batch shares %.4f (fast) and %.4f (slow), expected 2/3 and 1/3", share[0],
                  share[1]);
    ck_assert_double_eq_tol(share[0] + share[1], 1, 1e-12);
    mpt_plan_free(p);
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

/* ---- memory --------------------------------------------------------------- */

static void check_memory(const char *path, const mpt_cluster_t *c, const mpt_model_t *m)
{
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    mpt_plan_t *p = NULL;
    int status = mpt_plan_create(m, c, &req, &p);
    ck_assert_msg(status == MPT_OK, "%s with %s: %s", path, mpt_model_name(m), mpt_last_error());
    size_t used = 0;
    for (size_t r = 0; r < p->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++) {
            const mpt__plan_stage_t *st = &p->replicas[r].stages[s];
            for (size_t g = 0; g < st->ndevices; g++) {
                const mpt__plan_device_t *pd = &st->devices[g];
                const mpt_cluster_device_t *d = mpt_cluster_device(c, pd->device);
                ck_assert_ptr_nonnull(d);
                ck_assert_msg(pd->memory_bytes > 0 &&
                                  pd->memory_bytes <= (double)d->info.global_mem_bytes,
                              "%s, %s: device %zu is given %.0f bytes of its %llu", path,
                              mpt_model_name(m), pd->device, pd->memory_bytes,
                              (unsigned long long)d->info.global_mem_bytes);
                used++;
            }
        }
    /* Each device at most once; the planner may leave some idle. */
    ck_assert_uint_ge(used, 1);
    ck_assert_uint_le(used, mpt_cluster_device_count(c));
    mpt_plan_free(p);
}

START_TEST(memory_within_limits_on_shipped_clusters)
{
    ck_assert_int_ge(for_shipped(check_memory), 3);
}
END_TEST

/* The fast device holds only layers 0-11 (six linear layers of 24, where
 * its speed would earn it 16): the split must respect that. */
START_TEST(memory_binds_the_split)
{
    mpt_model_t *m = deep_model();
    mpt__model_cost_t mc = {0};
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.pp = 2, req.microbatches = 1, req.schedule = MPT_PIPE_GPIPE;
    /* One micro-batch of the whole batch in flight, SGD's one slot. */
    double fits = ceil(mpt__cost_memory(&mc, 0, 11, (double)req.batch, 1, 1.0, 1, 0));
    mpt_cluster_t *c = two_devices(fits, HUGE);
    mpt_plan_t *p = NULL;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
    const mpt__plan_stage_t *st = &p->replicas[0].stages[0];
    ck_assert_uint_eq(st->devices[0].device, 0); /* first in locality order */
    ck_assert_msg(st->devices[0].memory_bytes <= fits,
                  "device 0 is given %.0f bytes of its %.0f", st->devices[0].memory_bytes, fits);
    /* As much as fits: ending at layer 11 (relu) or 10 (its linear). */
    ck_assert_msg(st->last == 11 || st->last == 10, "the small fast device takes layers 0-%zu",
                  st->last);
    mpt_plan_free(p);
    mpt_cluster_free(c);
    mpt__model_cost_free(&mc);
    mpt_model_free(m);
}
END_TEST

static void assert_names_device_and_bytes(const char *err)
{
    ck_assert_msg(strstr(err, "device ") != NULL && strstr(err, " bytes") != NULL,
                  "the error does not name a device and bytes: %s", err);
    const char *b = strstr(err, " bytes");
    ck_assert_msg(b > err && b[-1] >= '0' && b[-1] <= '9', "no byte count before 'bytes': %s",
                  err);
}

START_TEST(too_small_devices_fail)
{
    mpt_model_t *m = deep_model();
    mpt_cluster_t *c = two_devices(1e6, 1e6); /* 1 MB: not even one linear layer's state */
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    mpt_plan_t *p = NULL;
    ck_assert_mpt_fails(mpt_plan_create(m, c, &req, &p), MPT_ERR_DEVICE_MEMORY);
    ck_assert_ptr_null(p);
    assert_names_device_and_bytes(mpt_last_error());
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

/* More devices than layers: the deepest pipeline is impossible for another
 * reason, which must not hide that the model fits nowhere. */
START_TEST(too_small_devices_fail_with_many_devices)
{
    mpt_model_t *m = shipped_model("mlp-fashion.json"); /* 8 layers */
    double gflops[10], mem[10];
    for (size_t i = 0; i < 10; i++)
        gflops[i] = 1000, mem[i] = 1000;
    mpt_cluster_t *c = make_cluster(10, gflops, mem);
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    mpt_plan_t *p = NULL;
    ck_assert_mpt_fails(mpt_plan_create(m, c, &req, &p), MPT_ERR_DEVICE_MEMORY);
    assert_names_device_and_bytes(mpt_last_error());
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

/* ---- pins --------------------------------------------------------------------- */

static mpt_cluster_t *four_device_cluster(void)
{
    mpt_cluster_t *c = NULL;
    ck_assert_mpt_ok(mpt_cluster_load(models_path("clusters/node-2nvidia-2amd.json"), &c));
    ck_assert_uint_eq(mpt_cluster_device_count(c), 4);
    return c;
}

START_TEST(pins_are_honoured)
{
    mpt_model_t *m = shipped_model("mlp-fashion.json");
    mpt_cluster_t *c = four_device_cluster();
    for (int pin = 0; pin < 8; pin++) {
        mpt_plan_request_t req;
        mpt_plan_request_default(&req);
        req.all_devices = 1; /* the pins on all four (subsets: check_plan_subsets) */
        size_t want = 0;
        switch (pin) {
        case 0: req.dp = want = 2; break;
        case 1: req.dp = want = 4; break;
        case 2: req.pp = want = 2; break;
        case 3: req.tp = want = 2; break;
        case 4: req.tp = want = 4; break;
        case 5: req.microbatches = want = 4; break;
        case 6: req.schedule = MPT_PIPE_1F1B; break;
        case 7: req.schedule = MPT_PIPE_GPIPE, req.pp = want = 4; break;
        }
        mpt_plan_t *p = NULL;
        int status = mpt_plan_create(m, c, &req, &p);
        ck_assert_msg(status == MPT_OK, "pin %d: %s", pin, mpt_last_error());
        ck_assert_uint_eq(p->dp * p->pp * p->tp, 4);
        if (req.dp)
            ck_assert_uint_eq(p->dp, want);
        if (req.pp)
            ck_assert_uint_eq(p->pp, want);
        if (req.tp)
            ck_assert_uint_eq(p->tp, want);
        if (req.microbatches)
            ck_assert_uint_eq(p->microbatches, want);
        if (req.schedule != MPT_PIPE_AUTO)
            ck_assert_int_eq((int)p->schedule, (int)req.schedule);
        /* Every alternative honours the pins too. */
        for (size_t i = 0; i < p->nalternatives; i++) {
            const char *d = p->alternatives[i].description;
            char pat[32];
            if (req.dp)
                snprintf(pat, sizeof pat, "dp=%zu ", req.dp);
            else if (req.pp)
                snprintf(pat, sizeof pat, "pp=%zu ", req.pp);
            else if (req.tp)
                snprintf(pat, sizeof pat, "tp=%zu ", req.tp);
            else if (req.microbatches)
                snprintf(pat, sizeof pat, "m=%zu ", req.microbatches);
            else
                snprintf(pat, sizeof pat, "%s", req.schedule == MPT_PIPE_1F1B ? "1f1b" : "gpipe");
            ck_assert_msg(strstr(d, pat) != NULL, "pin %d: alternative '%s' lacks '%s'", pin, d,
                          pat);
        }
        mpt_plan_free(p);
    }
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

/* Two nodes of two equal GPUs each (nodes = 2), or the four on one node
 * (nodes = 1), behind a network of `gbps`. */
static mpt_cluster_t *gpu_nodes(int nodes, double gbps)
{
    char text[2048];
    size_t len = (size_t)snprintf(text, sizeof text,
                                  "{\"mpt_cluster\": 1, \"name\": \"nodes\", \"network\": "
                                  "{\"gbps\": %g, \"latency_us\": 20}, \"nodes\": [%s], "
                                  "\"devices\": [",
                                  gbps, nodes == 2 ? "{\"name\": \"a\"}, {\"name\": \"b\"}"
                                                   : "{\"name\": \"a\"}");
    for (int i = 0; i < 4; i++)
        len += (size_t)snprintf(
            text + len, sizeof text - len,
            "%s{\"name\": \"gpu%d\", \"type\": \"gpu\", \"global_mem_bytes\": 8000000000, "
            "\"node\": %d, \"numa_node\": 0, \"package\": 0, \"profile\": {\"gemm_gflops\": "
            "5000, \"mem_gbps\": 500, \"h2d_gbps\": 20, \"d2h_gbps\": 20, \"launch_us\": 5}}",
            i ? ", " : "", i, nodes == 2 ? i / 2 : 0);
    snprintf(text + len, sizeof text - len, "]}");
    char path[] = "/tmp/check_plan_nodes_XXXXXX";
    test_write_temp(path, text);
    mpt_cluster_t *c = NULL;
    int status = mpt_cluster_load(path, &c);
    unlink(path);
    ck_assert_msg(status == MPT_OK, "%s", mpt_last_error());
    return c;
}

static mpt_plan_t *plan_dp4(const mpt_model_t *m, const mpt_cluster_t *c, mpt_allreduce_t algo)
{
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.dp = 4, req.allreduce = algo;
    mpt_plan_t *p = NULL;
    int status = mpt_plan_create(m, c, &req, &p);
    ck_assert_msg(status == MPT_OK, "%s", mpt_last_error());
    return p;
}

/* The all-reduce follows the network: across two nodes behind a slow
 * network the hierarchical one is predicted faster and chosen; on one node
 * (or with nothing to gain) the flat ring stays; pins are honoured; the
 * choice survives the plan file, and a bad name there is refused. */
START_TEST(allreduce_follows_the_network)
{
    mpt_model_t *m = shipped_model("mlp-fashion.json");
    mpt_cluster_t *slow = gpu_nodes(2, 1.0), *one = gpu_nodes(1, 1.0);
    mpt_plan_t *hier = plan_dp4(m, slow, MPT_ALLREDUCE_HIERARCHICAL);
    mpt_plan_t *ring = plan_dp4(m, slow, MPT_ALLREDUCE_RING);
    mpt_plan_t *chosen = plan_dp4(m, slow, MPT_ALLREDUCE_AUTO);
    mpt_plan_t *local = plan_dp4(m, one, MPT_ALLREDUCE_AUTO);
    ck_assert_int_eq(hier->allreduce, MPT_ALLREDUCE_HIERARCHICAL);
    ck_assert_int_eq(ring->allreduce, MPT_ALLREDUCE_RING);
    ck_assert_msg(hier->allreduce_s < ring->allreduce_s, "hierarchical %.6g s, ring %.6g s",
                  hier->allreduce_s, ring->allreduce_s);
    ck_assert_int_eq(chosen->allreduce, MPT_ALLREDUCE_HIERARCHICAL);
    ck_assert_double_eq(chosen->predicted_step_s, hier->predicted_step_s);
    ck_assert_int_eq(local->allreduce, MPT_ALLREDUCE_RING);

    char *text = NULL, *summary = NULL, *again = NULL;
    ck_assert_mpt_ok(mpt_plan_describe(chosen, m, slow, 0, &summary));
    ck_assert_msg(strstr(summary, "Gradients: hierarchical"), "%s", summary);
    ck_assert_mpt_ok(mpt_plan_to_json(chosen, &text));
    ck_assert_ptr_nonnull(strstr(text, "\"allreduce\": \"hierarchical\""));
    char file[] = "/tmp/check_plan_algo_XXXXXX";
    test_write_temp(file, text);
    mpt_plan_t *back = NULL;
    ck_assert_mpt_ok(mpt_plan_load(file, m, slow, &back));
    unlink(file);
    ck_assert_int_eq(back->allreduce, MPT_ALLREDUCE_HIERARCHICAL);
    ck_assert_mpt_ok(mpt_plan_to_json(back, &again));
    ck_assert_str_eq(text, again);
    mpt_plan_free(back);

    char *at = strstr(text, "\"hierarchical\"");
    memcpy(at, "\"tree\"        ", 14); /* same length: "tree" and spaces */
    char bad_file[] = "/tmp/check_plan_algo_XXXXXX";
    test_write_temp(bad_file, text);
    back = NULL;
    int status = mpt_plan_load(bad_file, m, slow, &back);
    unlink(bad_file);
    ck_assert_int_lt(status, 0);
    ck_assert_ptr_null(back);
    ck_assert_msg(strstr(mpt_last_error(), "allreduce") && strstr(mpt_last_error(), "tree"),
                  "%s", mpt_last_error());
    free(text);
    free(again);
    free(summary);
    mpt_plan_free(hier);
    mpt_plan_free(ring);
    mpt_plan_free(chosen);
    mpt_plan_free(local);
    mpt_cluster_free(slow);
    mpt_cluster_free(one);
    mpt_model_free(m);
}
END_TEST

/* A pipeline cut between lm_head and the embedding it is tied to: the
 * head's stage holds a copy of wte (engine.c), so its predicted memory is
 * mpt__cost_memory's, which counts the copy with its gradient and optimizer
 * slots: (2 + slots) x 4 V C bytes more than the same layers without it. */
START_TEST(tied_head_cut_from_its_embedding_holds_a_copy)
{
    mpt_model_t *m = NULL;
    ck_assert_mpt_ok(mpt_model_load(test_path("fixtures/torch/gpt-tiny.json"), &m));
    mpt_cluster_t *c = four_device_cluster();
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.dp = 2, req.pp = 2, req.batch = 8;
    mpt_plan_t *p = NULL;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
    ck_assert_uint_eq(p->pp, 2);
    mpt__model_cost_t mc;
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    size_t head = m->nlayers - 2;
    ck_assert_str_eq(m->layers[head].kind->name, "lm_head");
    double copy = 4.0 * (double)m->layers[head].tied.numel;
    ck_assert_double_eq(mc.layers[head].tied_bytes, copy);
    for (size_t r = 0; r < p->nreplicas; r++) {
        const mpt__plan_stage_t *st = &p->replicas[r].stages[1];
        ck_assert_uint_gt(st->first, 0); /* the embedding is on stage 0 */
        size_t mb = p->microbatches, in_flight = p->schedule == MPT__PIPE_GPIPE ? mb : 1;
        double samples = (double)p->batch * p->replicas[r].batch_share / (double)mb;
        double want = mpt__cost_memory(&mc, st->first, st->last, samples, in_flight, 1.0,
                                       p->optimizer_slots, mb > 1);
        ck_assert_double_eq_tol(st->devices[0].memory_bytes, want, 1e-6 * want);
        mc.layers[head].tied_bytes = 0;
        double without = mpt__cost_memory(&mc, st->first, st->last, samples, in_flight, 1.0,
                                          p->optimizer_slots, mb > 1);
        mc.layers[head].tied_bytes = copy;
        ck_assert_double_eq_tol(want - without, copy * (2 + p->optimizer_slots), 1e-3);
        /* The embedding's stage receives the copy's gradient in a device
         * buffer of the weight's size: one copy more, no slots. */
        const mpt__plan_stage_t *owner = &p->replicas[r].stages[0];
        /* in flight on stage 0: GPipe all, 1F1B the stages after it plus one */
        size_t owner_flight = p->schedule == MPT__PIPE_GPIPE ? mb : (mb < p->pp ? mb : p->pp);
        double own = mpt__cost_memory(&mc, owner->first, owner->last, samples, owner_flight,
                                      1.0, p->optimizer_slots, mb > 1);
        mc.layers[head].tied_bytes = 0;
        double own_without = mpt__cost_memory(&mc, owner->first, owner->last, samples,
                                              owner_flight, 1.0, p->optimizer_slots, mb > 1);
        mc.layers[head].tied_bytes = copy;
        ck_assert_double_eq_tol(own - own_without, copy, 1e-3);
        ck_assert_double_eq_tol(owner->devices[0].memory_bytes, own, 1e-6 * own);
    }
    mpt__model_cost_free(&mc);
    mpt_plan_free(p);
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

START_TEST(impossible_pin_fails)
{
    mpt_model_t *m = shipped_model("mlp-fashion.json");
    mpt_cluster_t *c = four_device_cluster();
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.dp = 3;
    req.all_devices = 1; /* else three of the four would do */
    mpt_plan_t *p = NULL;
    ck_assert_mpt_fails(mpt_plan_create(m, c, &req, &p), MPT_ERR_INVALID);
    ck_assert_ptr_null(p);
    ck_assert_msg(strlen(mpt_last_error()) > 0, "no detail");
    /* and the same for a batch of 0 */
    mpt_plan_request_default(&req);
    req.batch = 0;
    ck_assert_mpt_fails(mpt_plan_create(m, c, &req, &p), MPT_ERR_INVALID);
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

/* Tensor-parallel configurations the engine cannot run are rejected with
 * the reason: a member left without a unit (a 3-unit column-parallel
 * layer at a 20:1 speed ratio), a layer that cannot be
 * split (layernorm).  Row-parallel layers split their inputs, which the
 * column split before them already cut: the MLP at 20:1 runs. */
static mpt_model_t *inline_model(const char *text)
{
    char path[] = "/tmp/check_plan_tp_XXXXXX";
    mpt_model_t *m = NULL;
    test_write_temp(path, text);
    int status = mpt_model_load(path, &m);
    unlink(path);
    ck_assert_msg(status == MPT_OK, "%s", mpt_last_error());
    return m;
}

static void expect_tp_refused(const char *model_json, mpt_cluster_t *c, const char *reason)
{
    mpt_model_t *m = inline_model(model_json);
    mpt_plan_request_t req;
    mpt_plan_t *p = NULL;
    mpt_plan_request_default(&req);
    req.tp = 2;
    req.all_devices = 1; /* the tensor-parallel pair, not one device alone */
    ck_assert_mpt_fails(mpt_plan_create(m, c, &req, &p), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), reason), "'%s' does not say '%s'", mpt_last_error(),
                  reason);
    mpt_model_free(m);
}

START_TEST(unrunnable_tensor_splits_are_rejected)
{
    const double gflops[2] = {20000, 1000}, mem[2] = {HUGE, HUGE};
    mpt_cluster_t *skewed = make_cluster(2, gflops, mem), *even = two_devices(HUGE, HUGE);
    mpt_model_t *m = shipped_model("mlp-fashion.json");
    mpt_plan_request_t req;
    mpt_plan_t *p = NULL;
    mpt_plan_request_default(&req);
    req.tp = 2;
    ck_assert_mpt_ok(mpt_plan_create(m, skewed, &req, &p));
    ck_assert_uint_eq(p->tp, 2);
    mpt_plan_free(p);
    mpt_model_free(m);
    /* 3 units at 20:1 leave the slow member none: that split is rejected
     * with the reason, and the uniform split (2 + 1 units) runs instead. */
    m = inline_model("{\"name\": \"narrow\", \"input\": [16], \"layers\": [{\"kind\": "
                     "\"linear\", \"units\": 3}, {\"kind\": \"relu\"}, {\"kind\": \"linear\", "
                     "\"units\": 10}, {\"kind\": \"softmax_cross_entropy\"}]}");
    req.all_devices = 1;
    ck_assert_mpt_ok(mpt_plan_create(m, skewed, &req, &p));
    ck_assert_uint_eq(p->tp, 2);
    ck_assert_double_eq_tol(p->replicas[0].stages[0].devices[0].fraction, 0.5, 1e-12);
    int named = 0;
    for (size_t i = 0; i < p->nalternatives; i++)
        named |= p->alternatives[i].rejected &&
                 strstr(p->alternatives[i].rejected, "layer 0 (linear)") != NULL;
    ck_assert_msg(named, "the speed-proportional split's rejection is not explained");
    mpt_plan_free(p);
    mpt_model_free(m);
    /* One head cannot be shared by two members. */
    expect_tp_refused("{\"name\": \"one-head\", \"input\": [8], \"layers\": [{\"kind\": "
                      "\"embedding\", \"vocab\": 16, \"dim\": 8}, {\"kind\": \"block\", "
                      "\"heads\": 1}, {\"kind\": \"lm_head\"}, {\"kind\": "
                      "\"softmax_cross_entropy\"}]}",
                      even, "layer 1 (block)");
    /* A layer norm between the splits runs whole on every member. */
    m = inline_model("{\"name\": \"ln\", \"input\": [64], \"layers\": [{\"kind\": "
                     "\"linear\", \"units\": 64}, {\"kind\": \"layernorm\"}, {\"kind\": "
                     "\"linear\", \"units\": 10}, {\"kind\": \"softmax_cross_entropy\"}]}");
    ck_assert_mpt_ok(mpt_plan_create(m, even, &req, &p));
    ck_assert_uint_eq(p->tp, 2);
    mpt_plan_free(p);
    mpt_model_free(m);
    mpt_cluster_free(skewed);
    mpt_cluster_free(even);
}
END_TEST

static void expect_roles(const mpt_plan_t *p, const mpt_model_t *m)
{
    static const mpt__tp_role_t want[] = {MPT__TP_COLUMN, MPT__TP_SLICE, MPT__TP_ROW,
                                          MPT__TP_WHOLE};
    ck_assert_uint_eq(p->tp, 2);
    const mpt__plan_stage_t *st = &p->replicas[0].stages[0];
    ck_assert_ptr_nonnull(st->roles.steps);
    ck_assert_uint_eq(st->last - st->first + 1, 4);
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(st->roles.steps[i].role, want[i]);
        ck_assert_int_eq(st->roles.steps[i].gather_before, 0);
    }
    ck_assert_int_eq(st->roles.gather_after, 0);
    mpt__tp_step_t again[4];
    int gather_after = 1;
    ck_assert_mpt_ok(mpt__tp_walk(m, 0, 3, again, &gather_after));
    ck_assert_mem_eq(again, st->roles.steps, sizeof again);
}

START_TEST(tp_roles_are_kept_in_the_plan)
{
    mpt_cluster_t *even = two_devices(HUGE, HUGE);
    mpt_model_t *m = inline_model("{\"name\": \"mlp\", \"input\": [16], \"layers\": ["
                                  "{\"kind\": \"linear\", \"units\": 8}, {\"kind\": \"relu\"}, "
                                  "{\"kind\": \"linear\", \"units\": 10}, "
                                  "{\"kind\": \"softmax_cross_entropy\"}]}");
    mpt_plan_request_t req;
    mpt_plan_t *p = NULL, *back = NULL;
    char *text = NULL, path[] = "/tmp/check_plan_roles_XXXXXX";
    mpt_plan_request_default(&req);
    req.tp = 2;
    ck_assert_mpt_ok(mpt_plan_create(m, even, &req, &p));
    expect_roles(p, m);
    ck_assert_mpt_ok(mpt_plan_to_json(p, &text));
    test_write_temp(path, text);
    ck_assert_mpt_ok(mpt_plan_load(path, m, even, &back));
    unlink(path);
    expect_roles(back, m);
    mpt_plan_free(back);
    mpt_plan_free(p);
    /* One device per stage: nothing to record. */
    req.tp = 1, req.pp = 2;
    ck_assert_mpt_ok(mpt_plan_create(m, even, &req, &p));
    for (size_t s = 0; s < p->replicas[0].nstages; s++)
        ck_assert_ptr_null(p->replicas[0].stages[s].roles.steps);
    mpt_plan_free(p);
    mpt_model_free(m);
    /* The same plan for a model with dropout on the slice loads: dropout
     * draws the whole activation's numbers there (engine/shard.c). */
    m = inline_model("{\"name\": \"drop\", \"input\": [16], \"layers\": ["
                     "{\"kind\": \"linear\", \"units\": 8}, {\"kind\": \"dropout\"}, "
                     "{\"kind\": \"linear\", \"units\": 10}, "
                     "{\"kind\": \"softmax_cross_entropy\"}]}");
    char path2[] = "/tmp/check_plan_roles_XXXXXX";
    test_write_temp(path2, text); /* the MLP's plan: same layer count, but another model */
    ck_assert_mpt_fails(mpt_plan_load(path2, m, even, &back), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "was made for another model"), "%s", mpt_last_error());
    unlink(path2);
    /* Without the model's identity (a plan written by hand) it loads. */
    json_t *root = json_loads(text, 0, NULL);
    ck_assert_ptr_nonnull(root);
    ck_assert_int_eq(json_object_del(root, "model"), 0);
    free(text);
    text = json_dumps(root, 0);
    json_decref(root);
    char path3[] = "/tmp/check_plan_roles_XXXXXX";
    test_write_temp(path3, text);
    free(text);
    ck_assert_mpt_ok(mpt_plan_load(path3, m, even, &back));
    unlink(path3);
    expect_roles(back, m);
    mpt_plan_free(back);
    mpt_model_free(m);
    mpt_cluster_free(even);
}
END_TEST

/* ---- the choice --------------------------------------------------------------- */

static void check_choice(const char *path, const mpt_cluster_t *c, const mpt_model_t *m)
{
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    mpt_plan_t *p = NULL;
    int status = mpt_plan_create(m, c, &req, &p);
    ck_assert_msg(status == MPT_OK, "%s with %s: %s", path, mpt_model_name(m), mpt_last_error());
    ck_assert(p->predicted_step_s > 0);
    ck_assert_uint_gt(p->nalternatives, 0);
    char self[128];
    snprintf(self, sizeof self, "dp=%zu pp=%zu tp=%zu m=%zu %s", p->dp, p->pp, p->tp,
             p->microbatches, p->schedule == MPT__PIPE_GPIPE ? "gpipe" : "1f1b");
    int found = 0;
    for (size_t i = 0; i < p->nalternatives; i++) {
        const mpt__plan_alt_t *a = &p->alternatives[i];
        ck_assert_ptr_nonnull(a->description);
        if (a->rejected) {
            ck_assert_msg(a->rejected[0] != '\0', "%s: '%s' is rejected without a reason", path,
                          a->description);
            continue;
        }
        ck_assert_msg(a->step_s >= p->predicted_step_s,
                      "%s, %s: alternative '%s' takes %.17g s, the chosen '%s' %.17g s", path,
                      mpt_model_name(m), a->description, a->step_s, self, p->predicted_step_s);
        /* A subset's or a uniform split's description goes on after the
         * shape (" uniform", " on devices ..."). */
        found |= strncmp(a->description, self, strlen(self)) == 0 &&
                 a->step_s == p->predicted_step_s;
    }
    ck_assert_msg(found, "%s, %s: the chosen '%s' is not among its alternatives", path,
                  mpt_model_name(m), self);
    mpt_plan_free(p);
}

START_TEST(chosen_is_fastest)
{
    ck_assert_int_ge(for_shipped(check_choice), 3);
}
END_TEST

/* ---- JSON, simulation, description ----------------------------------------------- */

static void check_round_trip(const char *path, const mpt_cluster_t *c, const mpt_model_t *m)
{
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    mpt_plan_t *p = NULL, *back = NULL;
    char *text = NULL, *again = NULL, *summary = NULL;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
    ck_assert_mpt_ok(mpt_plan_to_json(p, &text));
    char file[] = "/tmp/check_plan_plan_XXXXXX";
    test_write_temp(file, text);
    int status = mpt_plan_load(file, m, c, &back);
    unlink(file);
    ck_assert_msg(status == MPT_OK, "%s, %s: %s", path, mpt_model_name(m), mpt_last_error());
    ck_assert_mpt_ok(mpt_plan_to_json(back, &again));
    ck_assert_msg(strcmp(text, again) == 0, "%s, %s: the plan loaded back writes other JSON",
                  path, mpt_model_name(m));

    /* The simulator is deterministic; JSON doubles round-trip exactly. */
    double step = -1, bubble = -1;
    ck_assert_mpt_ok(mpt_plan_simulate(p, m, c, &step, &bubble, NULL));
    ck_assert_msg(step == p->predicted_step_s, "%s, %s: simulated %.17g s, predicted %.17g s",
                  path, mpt_model_name(m), step, p->predicted_step_s);
    ck_assert(bubble >= 0 && bubble < 1);
    step = -1;
    ck_assert_mpt_ok(mpt_plan_simulate(back, m, c, &step, NULL, NULL));
    ck_assert_msg(step == p->predicted_step_s, "%s, %s: loaded plan simulates to %.17g s, "
                  "predicted %.17g s", path, mpt_model_name(m), step, p->predicted_step_s);

    ck_assert_mpt_ok(mpt_plan_describe(p, m, c, 1, &summary));
    ck_assert_msg(strncmp(summary, "Plan: ", 6) == 0 && strstr(summary, "Alternatives (") &&
                      strstr(summary, "Predicted: "),
                  "summary lacks its sections:\n%s", summary);
    free(summary);
    free(text);
    free(again);
    mpt_plan_free(back);
    mpt_plan_free(p);
}

START_TEST(json_round_trip_and_simulation)
{
    ck_assert_int_ge(for_shipped(check_round_trip), 3);
}
END_TEST

START_TEST(trace_of_the_plan)
{
    mpt_model_t *m = shipped_model("mlp-fashion.json");
    mpt_cluster_t *c = four_device_cluster();
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    mpt_plan_t *p = NULL;
    char *trace = NULL;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
    ck_assert_mpt_ok(mpt_plan_simulate(p, m, c, NULL, NULL, &trace));
    ck_assert_ptr_nonnull(trace);
    ck_assert_msg(strncmp(trace, "{\"traceEvents\"", 14) == 0, "trace starts %.40s", trace);
    free(trace);
    mpt_plan_free(p);
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

/* ---- MPT_PLAN_DEBUG ------------------------------------------------------------------ */

static void count_plan_lines(mpt_log_level_t level, const char *message, void *user)
{
    (void)level;
    if (strncmp(message, "plan:", 5) == 0)
        (*(int *)user)++;
}

static int plan_log_lines(void)
{
    mpt_model_t *m = shipped_model("mlp-fashion.json");
    mpt_cluster_t *c = four_device_cluster();
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    mpt_plan_t *p = NULL;
    int lines = 0;
    mpt_set_log_callback(count_plan_lines, MPT_LOG_INFO, &lines);
    int status = mpt_plan_create(m, c, &req, &p);
    mpt_set_log_callback(NULL, MPT_LOG_ERROR, NULL);
    ck_assert_msg(status == MPT_OK, "%s", mpt_last_error());
    mpt_plan_free(p);
    mpt_cluster_free(c);
    mpt_model_free(m);
    return lines;
}

START_TEST(plan_debug_logs)
{
    ck_assert_int_eq(setenv("MPT_PLAN_DEBUG", "1", 1), 0);
    int with = plan_log_lines();
    ck_assert_int_eq(unsetenv("MPT_PLAN_DEBUG"), 0);
    int without = plan_log_lines();
    ck_assert_msg(with > 0, "MPT_PLAN_DEBUG=1 logged no 'plan:' line");
    ck_assert_int_eq(without, 0);
}
END_TEST

static Suite *plan_suite(void)
{
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("planner");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, pipeline_follows_speed);
    tcase_add_test(tc, batch_follows_speed);
    tcase_add_test(tc, memory_within_limits_on_shipped_clusters);
    tcase_add_test(tc, memory_binds_the_split);
    tcase_add_test(tc, too_small_devices_fail);
    tcase_add_test(tc, too_small_devices_fail_with_many_devices);
    tcase_add_test(tc, pins_are_honoured);
    tcase_add_test(tc, allreduce_follows_the_network);
    tcase_add_test(tc, tied_head_cut_from_its_embedding_holds_a_copy);
    tcase_add_test(tc, impossible_pin_fails);
    tcase_add_test(tc, unrunnable_tensor_splits_are_rejected);
    tcase_add_test(tc, tp_roles_are_kept_in_the_plan);
    tcase_add_test(tc, chosen_is_fastest);
    tcase_add_test(tc, json_round_trip_and_simulation);
    tcase_add_test(tc, trace_of_the_plan);
    tcase_add_test(tc, plan_debug_logs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(plan_suite(), 1);
}
