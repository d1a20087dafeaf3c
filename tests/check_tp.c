/*
 * tests/check_tp.c: tensor parallelism (engine/shard.c) trains the same
 * model as one device.
 *
 * Split arithmetic: mpt__tp_split on sizes that divide, that do not, with
 * unnormalised fractions, and with a member that would get nothing (a
 * clear error naming it); shard layouts of the MLP (every parameter
 * element owned by exactly one member of a group), the same from the roles
 * a plan keeps as from none, and a shard cut by the roles it is given
 * (all whole: every member holds the whole model); a layer norm between
 * splits replicated on both members; dropout on a slice runs there, told
 * where its slice sits (check_dropout.c trains it).
 *
 * Plan invariance: 20 SGD steps (momentum 0.9, lr 0.05) of the
 * Fashion-MNIST MLP (batch 64) and of a small CNN (tests/fixtures/
 * cnn-tp.json, odd widths, batch 32) under TP=2 with even fractions,
 * TP=2 with 0.7 / 0.3, TP=2 x PP=2 (1F1B, 2 micro-batches) and DP=2 x
 * TP=2 on four PoCL devices, against the one-device executor; the MLP also
 * with stages of one then two devices (and the reverse), and under AdamW
 * with global-norm clipping.  After the 20 steps, the accuracy on 500
 * further samples (evaluation through the groups) within 0.5 points of
 * one device's.
 *
 * Tolerance, per step: |loss - loss_1device| <= 1e-5 * max(1, loss), as
 * for the other plans (check_engine.c).  Splitting a layer changes only
 * the order of float sums: a row-parallel layer's output is two partial
 * GEMMs added by the ring instead of one dot product, a column-parallel
 * layer's input gradient likewise.  Each element then differs by a few
 * ulps (~1e-7 relative), and 20 steps of SGD with momentum carry that into
 * the weights without amplifying it much: measured differences (printed
 * by each test) are at most 1.5e-7 relative, two orders below the
 * tolerance, while a real error (a bias added by both members, a slice in
 * the wrong place, a gradient not reduced) moved the step-1 loss by 3e-4
 * to 3e-2 when tried.
 *
 * Checkpoints: 10 steps under TP=2, saved, then restored under PP=2 and
 * under one device: the next 10 losses equal the uninterrupted one-device
 * run within the same tolerance.
 *
 * Runs without fork (OpenCL), with four one-core PoCL devices.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rng.h"
#include "engine/shard.h"
#include "plan/plan.h"
#include "train/trainer.h"
#include "testutil.h"

enum { STEPS = 20, CLASSES = 10 };
#define LOSS_TOL 1e-5

static const char *fashion_dir = "/usr/share/datasets/fashion-mnist";

typedef struct {
    const char *path;
    size_t batch;
    int adamw_clipped;  /* AdamW with global-norm clipping instead of SGD */
    mpt_model_t *model;
    double ref_loss[STEPS], ref_acc;
    int have_ref;
} net_t;

static net_t MLP = {"../models/mlp-fashion.json", 64, 0, NULL, {0}, 0, 0};
static net_t CNN = {"fixtures/cnn-tp.json", 32, 0, NULL, {0}, 0, 0};
/* The MLP again under AdamW and clipping (the norm sums every member's
 * slice; the optimizer state lives in the slices). */
static net_t MLP_ADAMW = {"../models/mlp-fashion.json", 64, 1, NULL, {0}, 0, 0};

/* Accuracy on these held-out samples after the 20 steps (images after the
 * training ones): evaluation runs through the groups too. */
enum { EVAL_FIRST = STEPS * 64, EVAL_COUNT = 500 };

static struct {
    mpt_devices_t *devs;
    mpt_dataset_t *train;
    float *x;
    int32_t *y;
    int loaded;
} W;

enum { IMAGE = 784 };

static void load_world(void)
{
    if (W.loaded)
        return;
    ck_assert_mpt_ok(mpt_devices_open(NULL, &W.devs));
    ck_assert_uint_ge(mpt_devices_count(W.devs), 4);
    struct stat st;
    if (stat(fashion_dir, &st) == 0 &&
        mpt_dataset_load_idx(fashion_dir, "train", &W.train) == MPT_OK) {
        W.x = (float *)mpt_dataset_images(W.train);
        W.y = (int32_t *)mpt_dataset_labels(W.train);
    } else { /* no dataset: random images and labels, counter-based */
        size_t n = EVAL_FIRST + EVAL_COUNT;
        W.x = malloc(n * IMAGE * sizeof *W.x);
        W.y = malloc(n * sizeof *W.y);
        ck_assert_ptr_nonnull(W.x);
        ck_assert_ptr_nonnull(W.y);
        for (size_t i = 0; i < n * IMAGE; i++)
            W.x[i] = (float)mpt__u01(mpt__rng_u32(7, 1, i));
        for (size_t i = 0; i < n; i++)
            W.y[i] = (int32_t)(mpt__rng_u32(7, 2, i) % CLASSES);
    }
    W.loaded = 1;
}

static void load_net(net_t *n)
{
    load_world();
    if (!n->model)
        ck_assert_mpt_ok(mpt_model_load(test_path(n->path), &n->model));
}

static void config(const net_t *n, mpt_train_config_t *c)
{
    mpt_train_config_default(c);
    c->batch = n->batch;
    c->seed = 5;
    if (n->adamw_clipped) {
        c->optimizer = MPT_OPTIM_ADAMW;
        c->lr = 1e-3f;
        c->clip_norm = 0.5f;
    }
}

static double accuracy(mpt_trainer_t *t)
{
    double loss = 0, acc = 0;
    ck_assert_mpt_ok(mpt_trainer_evaluate(t, W.x + (size_t)EVAL_FIRST * IMAGE, W.y + EVAL_FIRST,
                                          EVAL_COUNT, &loss, &acc));
    return acc;
}

/* Steps [from, to) of the data, losses into losses[from..]. */
static void train(const net_t *n, mpt_trainer_t *t, int from, int to, double *losses)
{
    for (int s = from; s < to; s++) {
        mpt_step_stats_t st;
        ck_assert_mpt_ok(mpt_trainer_step(t, W.x + (size_t)s * n->batch * IMAGE,
                                          W.y + (size_t)s * n->batch, &st));
        losses[s] = st.loss;
    }
}

static void reference(net_t *n)
{
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    load_net(n);
    if (n->have_ref)
        return;
    config(n, &c);
    ck_assert_mpt_ok(mpt_trainer_create(n->model, mpt_devices_get(W.devs, 0), &c, &t));
    train(n, t, 0, STEPS, n->ref_loss);
    n->ref_acc = accuracy(t);
    mpt_trainer_free(t);
    n->have_ref = 1;
}

/* A plan: dp replicas of pp stages of tp devices, stage s taking layers
 * [cuts[s], cuts[s + 1] - 1], member g of replica r's stage s on device
 * devs[(r * pp + s) * tp + g] with fraction fractions[g]; equal batch
 * shares. */
static mpt_plan_t *make_plan(const net_t *n, size_t dp, size_t pp, size_t tp, size_t m,
                             const size_t *cuts, const int *devs, const double *fractions)
{
    char text[8192];
    size_t len = 0;
    len += (size_t)snprintf(text + len, sizeof text - len,
                            "{\"mpt_plan\": 1, \"dp\": %zu, \"pp\": %zu, \"tp\": %zu, "
                            "\"microbatches\": %zu, \"batch\": %zu, \"schedule\": \"1f1b\", "
                            "\"optimizer_slots\": 1, \"predicted_step_s\": 0.001, "
                            "\"breakdown\": {\"compute_s\": 0, \"bubble_s\": 0, \"p2p_s\": 0, "
                            "\"allreduce_s\": 0}, \"replicas\": [",
                            dp, pp, tp, m, n->batch);
    for (size_t r = 0; r < dp; r++) {
        len += (size_t)snprintf(text + len, sizeof text - len, "%s{\"batch_share\": %.17g, "
                                "\"stages\": [", r ? ", " : "", 1.0 / (double)dp);
        for (size_t s = 0; s < pp; s++) {
            len += (size_t)snprintf(text + len, sizeof text - len,
                                    "%s{\"layers\": [%zu, %zu], \"fwd_s\": 0, \"bwd_s\": 0, "
                                    "\"devices\": [", s ? ", " : "", cuts[s], cuts[s + 1] - 1);
            for (size_t g = 0; g < tp; g++)
                len += (size_t)snprintf(text + len, sizeof text - len,
                                        "%s{\"device\": %d, \"fraction\": %.17g, "
                                        "\"memory_bytes\": 0}", g ? ", " : "",
                                        devs[(r * pp + s) * tp + g], fractions[g]);
            len += (size_t)snprintf(text + len, sizeof text - len, "]}");
        }
        len += (size_t)snprintf(text + len, sizeof text - len, "]}");
    }
    snprintf(text + len, sizeof text - len, "], \"alternatives\": []}");
    mpt_plan_t *p = NULL;
    ck_assert_mpt_ok(mpt__plan_from_json(text, "test plan", n->model->nlayers,
                                         mpt_devices_count(W.devs), &p));
    ck_assert_mpt_ok(mpt__plan_roles(p, n->model)); /* as mpt_plan_load */
    return p;
}

static void expect_losses(const char *name, const double *losses, const double *ref, int from,
                          int to)
{
    double worst = 0;
    for (int s = from; s < to; s++) {
        double diff = fabs(losses[s] - ref[s]);
        worst = fmax(worst, diff / fmax(1.0, ref[s]));
        ck_assert_msg(diff <= LOSS_TOL * fmax(1.0, ref[s]),
                      "%s: step %d loss %.9g, one device %.9g", name, s + 1, losses[s], ref[s]);
    }
    printf("# %s: losses of steps %d-%d within %.2g relative of one device (last %.6f vs "
           "%.6f)\n", name, from + 1, to, worst, losses[to - 1], ref[to - 1]);
    fflush(stdout);
}

static void expect_invariant(net_t *n, const char *name, mpt_plan_t *plan)
{
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    double losses[STEPS];
    reference(n);
    config(n, &c);
    ck_assert_mpt_ok(mpt_trainer_create_planned(n->model, W.devs, plan, &c, NULL, NULL, &t));
    train(n, t, 0, STEPS, losses);
    expect_losses(name, losses, n->ref_loss, 0, STEPS);
    double acc = accuracy(t);
    ck_assert_msg(fabs(acc - n->ref_acc) <= 0.005, "%s: accuracy %.4f, one device %.4f", name,
                  acc, n->ref_acc);
    /* Every device of the plan ran its slice and moved data with its group. */
    size_t ndev = 0;
    for (size_t i = 0; i < plan->nreplicas; i++)
        for (size_t st = 0; st < plan->replicas[i].nstages; st++)
            ndev += plan->replicas[i].stages[st].ndevices;
    ck_assert_uint_eq(mpt_trainer_device_count(t), ndev);
    for (size_t i = 0, k = 0; i < plan->nreplicas; i++)
        for (size_t st = 0; st < plan->replicas[i].nstages; st++)
            for (size_t g = 0; g < plan->replicas[i].stages[st].ndevices; g++, k++) {
                mpt_device_step_t ds;
                ck_assert_mpt_ok(mpt_trainer_device_stats(t, k, &ds));
                ck_assert_msg((ds.tp_bytes > 0) == (plan->replicas[i].stages[st].ndevices > 1),
                              "%s: device %d moved %zu bytes of tensor-parallel data", name,
                              ds.device, ds.tp_bytes);
            }
    mpt_trainer_free(t);
    mpt_plan_free(plan);
}

static const double even[] = {0.5, 0.5}, uneven[] = {0.7, 0.3};
static const int devs01[] = {0, 1}, devs0123[] = {0, 1, 2, 3};

/* ---- split arithmetic ----------------------------------------------------------- */

START_TEST(split_arithmetic)
{
    size_t c[4];
    ck_assert_mpt_ok(mpt__tp_split(10, uneven, 2, c));
    ck_assert_uint_eq(c[0], 7);
    ck_assert_uint_eq(c[1], 3);
    ck_assert_mpt_ok(mpt__tp_split(7, even, 2, c)); /* odd: the tie to member 0 */
    ck_assert_uint_eq(c[0], 4);
    ck_assert_uint_eq(c[1], 3);
    double thirds[] = {1, 1, 1};
    ck_assert_mpt_ok(mpt__tp_split(5, thirds, 3, c)); /* unnormalised, does not divide */
    ck_assert_uint_eq(c[0] + c[1] + c[2], 5);
    ck_assert_uint_eq(c[0], 2);
    ck_assert_uint_eq(c[1], 2);
    ck_assert_uint_eq(c[2], 1);
    double f[] = {0.6, 0.4};
    ck_assert_mpt_ok(mpt__tp_split(1000003, f, 2, c));
    ck_assert_uint_eq(c[0] + c[1], 1000003);
    ck_assert_uint_eq(c[0], 600002); /* 600001.8 rounds up: the larger remainder */
    double speeds[] = {3, 2, 1, 1};
    ck_assert_mpt_ok(mpt__tp_split(13, speeds, 4, c));
    ck_assert_uint_eq(c[0] + c[1] + c[2] + c[3], 13);
    ck_assert_uint_ge(c[0], c[1]);
    /* A member that would get no unit is an error naming it. */
    double skewed[] = {0.95, 0.05};
    ck_assert_mpt_fails(mpt__tp_split(10, skewed, 2, c), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "member 1") && strstr(mpt_last_error(), "none"),
                  "%s", mpt_last_error());
    double bad[] = {1.0, 0.0};
    ck_assert_mpt_fails(mpt__tp_split(10, bad, 2, c), MPT_ERR_INVALID);
}
END_TEST

/* A shard for layers first..last by the roles the plan would record
 * (mpt__tp_walk, as mpt__plan_roles): the shard reads roles, never derives
 * them. */
static int shard_walked(const mpt__model_t *m, size_t first, size_t last, const double *f,
                        size_t tp, size_t rank, const mpt__group_t *grp, mpt__shard_t **s)
{
    mpt__tp_roles_t roles = {calloc(last - first + 1, sizeof *roles.steps), 0};
    ck_assert_ptr_nonnull(roles.steps);
    int status = mpt__tp_walk(m, first, last, roles.steps, &roles.gather_after);
    if (status == MPT_OK)
        status = mpt__shard_create(m, first, last, &roles, f, tp, rank, grp, 8, s);
    free(roles.steps);
    return status;
}

/* Every parameter element of the MLP is owned by exactly one member. */
START_TEST(shards_own_every_element_once)
{
    load_net(&MLP);
    const mpt__model_t *m = MLP.model;
    unsigned char *owners = calloc(m->param_floats, 1);
    ck_assert_ptr_nonnull(owners);
    mpt__transport_t *t = NULL;
    ck_assert_mpt_ok(mpt__transport_local_create(3, &t));
    int members[] = {0, 1, 2};
    double f[] = {0.5, 0.3, 0.2};
    size_t local_total = 0;
    for (size_t g = 0; g < 3; g++) {
        mpt__group_t grp = {t, members, 3, (int)g, 1, NULL};
        mpt__shard_t *s = NULL;
        /* Without the plan's roles: refused, never derived here. */
        ck_assert_mpt_fails(mpt__shard_create(m, 0, m->nlayers - 1, NULL, f, 3, g, &grp, 8, &s),
                            MPT_ERR_INVALID);
        ck_assert_msg(strstr(mpt_last_error(), "without its layers' roles"), "%s",
                      mpt_last_error());
        ck_assert_mpt_ok(shard_walked(m, 0, m->nlayers - 1, f, 3, g, &grp, &s));
        size_t np = 0;
        const mpt__piece_t *pc = mpt__shard_pieces(s, &np);
        /* The roles a plan stage keeps (mpt__plan_roles) cut it alike. */
        mpt__tp_roles_t roles = {calloc(m->nlayers, sizeof *roles.steps), 0};
        mpt__shard_t *kept = NULL;
        ck_assert_ptr_nonnull(roles.steps);
        ck_assert_mpt_ok(mpt__tp_walk(m, 0, m->nlayers - 1, roles.steps, &roles.gather_after));
        ck_assert_mpt_ok(mpt__shard_create(m, 0, m->nlayers - 1, &roles, f, 3, g, &grp, 8, &kept));
        ck_assert(mpt__shard_same_layout(s, kept));
        mpt__shard_free(kept);
        /* Told every layer runs whole, it holds the whole model. */
        for (size_t i = 0; i < m->nlayers; i++)
            roles.steps[i] = (mpt__tp_step_t){MPT__TP_WHOLE, 0};
        roles.gather_after = 0;
        ck_assert_mpt_ok(mpt__shard_create(m, 0, m->nlayers - 1, &roles, f, 3, g, &grp, 8, &kept));
        ck_assert_uint_eq(mpt__shard_model(kept)->param_floats, m->param_floats);
        mpt__shard_free(kept);
        free(roles.steps);
        for (size_t i = 0; i < np; i++)
            for (size_t k = 0; k < pc[i].count; k++)
                owners[pc[i].model + k]++;
        local_total += mpt__shard_model(s)->param_floats;
        mpt__shard_free(s);
    }
    size_t wrong = 0;
    for (size_t i = 0; i < m->param_floats; i++)
        wrong += owners[i] != 1;
    ck_assert_uint_eq(wrong, 0);
    ck_assert_uint_eq(local_total, m->param_floats); /* no replicated parameter */
    free(owners);
    mpt__transport_destroy(t);
}
END_TEST

/* A layer norm between the splits is replicated: both members hold all of
 * its parameters (member 1's copy left out of the gradient norm), so the
 * elements held add up to the model plus one copy of them.  Dropout on a
 * slice and a member given no unit are refused, naming the layer. */
START_TEST(replicated_and_unsplittable_layers)
{
    mpt_model_t *m = NULL;
    char path[] = "/tmp/mpt-tp-ln-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *json = "{\"name\": \"ln\", \"input\": [16], \"layers\": [{\"kind\": \"linear\", "
                       "\"units\": 8}, {\"kind\": \"layernorm\"}, {\"kind\": "
                       "\"softmax_cross_entropy\"}]}";
    ck_assert_int_eq(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    ck_assert_mpt_ok(mpt_model_load(path, &m));
    unlink(path);
    mpt__transport_t *t = NULL;
    ck_assert_mpt_ok(mpt__transport_local_create(2, &t));
    int members[] = {0, 1};
    size_t held = 0;
    for (int g = 0; g < 2; g++) {
        mpt__group_t grp = {t, members, 2, g, 1, NULL};
        mpt__shard_t *s = NULL;
        ck_assert_mpt_ok(shard_walked(m, 0, 2, even, 2, (size_t)g, &grp, &s));
        const mpt__model_t *local = mpt__shard_model(s);
        held += local->param_floats;
        /* linear (column), all-gather, layernorm, loss */
        ck_assert_uint_eq(local->nlayers, 4);
        ck_assert_str_eq(local->layers[2].kind->name, "layernorm");
        for (int q = 0; q < local->layers[2].nparams; q++)
            ck_assert_int_eq(local->layers[2].params[q].counted_elsewhere, g != 0);
        mpt__shard_free(s);
    }
    ck_assert_uint_eq(held, m->param_floats + 2 * 8);
    double skewed[] = {0.95, 0.05};
    mpt__group_t grp = {t, members, 2, 1, 1, NULL};
    mpt__shard_t *s = NULL;
    /* The 8 units of layer 0 at 0.95 / 0.05: member 1 gets none. */
    ck_assert_mpt_fails(shard_walked(m, 0, 0, skewed, 2, 1, &grp, &s), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "layer 0 (linear)"), "%s", mpt_last_error());
    mpt_model_free(m);
    const char *drop = "{\"name\": \"drop\", \"input\": [16], \"layers\": [{\"kind\": "
                       "\"linear\", \"units\": 8}, {\"kind\": \"dropout\"}, {\"kind\": "
                       "\"linear\", \"units\": 4}, {\"kind\": \"softmax_cross_entropy\"}]}";
    char drop_path[] = "/tmp/mpt-tp-drop-XXXXXX";
    fd = mkstemp(drop_path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, drop, strlen(drop)), (ssize_t)strlen(drop));
    close(fd);
    ck_assert_mpt_ok(mpt_model_load(drop_path, &m));
    unlink(drop_path);
    /* linear (column), dropout on the slice, linear (row), loss */
    ck_assert_mpt_ok(shard_walked(m, 0, 3, even, 2, 1, &grp, &s));
    ck_assert_uint_eq(mpt__shard_model(s)->nlayers, 4);
    ck_assert_str_eq(mpt__shard_model(s)->layers[1].kind->name, "sliced");
    ck_assert_str_eq(mpt__shard_model(s)->layers[2].kind->name, "row-parallel");
    mpt__shard_free(s);
    mpt__transport_destroy(t);
    mpt_model_free(m);
}
END_TEST

/* ---- plan invariance --------------------------------------------------------------- */

static const size_t mlp_pp1[] = {0, 8}, mlp_pp2[] = {0, 3, 8};
static const size_t cnn_pp1[] = {0, 11}, cnn_pp2[] = {0, 6, 11};

START_TEST(mlp_tp2_even)
{
    load_net(&MLP);
    expect_invariant(&MLP, "MLP TP=2 0.5/0.5", make_plan(&MLP, 1, 1, 2, 1, mlp_pp1, devs01, even));
}
END_TEST

START_TEST(mlp_tp2_uneven)
{
    load_net(&MLP);
    expect_invariant(&MLP, "MLP TP=2 0.7/0.3",
                     make_plan(&MLP, 1, 1, 2, 1, mlp_pp1, devs01, uneven));
}
END_TEST

START_TEST(mlp_tp2_pp2)
{
    load_net(&MLP);
    expect_invariant(&MLP, "MLP TP=2 x PP=2 1F1B m=2",
                     make_plan(&MLP, 1, 2, 2, 2, mlp_pp2, devs0123, uneven));
}
END_TEST

START_TEST(mlp_dp2_tp2)
{
    load_net(&MLP);
    expect_invariant(&MLP, "MLP DP=2 x TP=2",
                     make_plan(&MLP, 2, 1, 2, 1, mlp_pp1, devs0123, uneven));
}
END_TEST

START_TEST(cnn_tp2_even)
{
    load_net(&CNN);
    expect_invariant(&CNN, "CNN TP=2 0.5/0.5", make_plan(&CNN, 1, 1, 2, 1, cnn_pp1, devs01, even));
}
END_TEST

START_TEST(cnn_tp2_uneven)
{
    load_net(&CNN);
    expect_invariant(&CNN, "CNN TP=2 0.7/0.3",
                     make_plan(&CNN, 1, 1, 2, 1, cnn_pp1, devs01, uneven));
}
END_TEST

START_TEST(cnn_tp2_pp2)
{
    load_net(&CNN);
    expect_invariant(&CNN, "CNN TP=2 x PP=2 1F1B m=2",
                     make_plan(&CNN, 1, 2, 2, 2, cnn_pp2, devs0123, even));
}
END_TEST

START_TEST(cnn_dp2_tp2)
{
    load_net(&CNN);
    expect_invariant(&CNN, "CNN DP=2 x TP=2",
                     make_plan(&CNN, 2, 1, 2, 1, cnn_pp1, devs0123, uneven));
}
END_TEST

/* Stages of different group sizes: one device, then two (activations fan
 * out to both members, gradients come back from member 0), and the
 * reverse (both members send to the one device).  Plan files give every
 * stage the plan's tp (docs/plan.md), so the plan is made with two-device
 * groups and one group is then shrunk in memory: the engine takes any
 * group sizes. */
START_TEST(mlp_groups_of_one_then_two)
{
    load_net(&MLP);
    for (int order = 0; order < 2; order++) {
        static const int devs[] = {0, 3, 1, 2};
        mpt_plan_t *p = make_plan(&MLP, 1, 2, 2, 2, mlp_pp2, devs, (const double[]){0.6, 0.4});
        mpt__plan_stage_t *st = &p->replicas[0].stages[order];
        st->ndevices = 1;
        st->devices[0].fraction = 1;
        expect_invariant(&MLP, order == 0 ? "MLP stages of 1 then 2 devices"
                                          : "MLP stages of 2 then 1 devices", p);
    }
}
END_TEST

START_TEST(mlp_tp2_adamw_clipped)
{
    load_net(&MLP_ADAMW);
    expect_invariant(&MLP_ADAMW, "MLP TP=2 0.7/0.3, AdamW, clipping at 0.5",
                     make_plan(&MLP_ADAMW, 1, 1, 2, 1, mlp_pp1, devs01, uneven));
}
END_TEST

/* ---- checkpoints are plan-independent ------------------------------------------------ */

START_TEST(checkpoint_from_tp2_resumes_anywhere)
{
    enum { HALF = STEPS / 2 };
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    double losses[STEPS];
    char path[] = "/tmp/mpt-tp-ckpt-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    reference(&MLP);
    config(&MLP, &c);
    mpt_plan_t *tp2 = make_plan(&MLP, 1, 1, 2, 1, mlp_pp1, devs01, uneven);
    ck_assert_mpt_ok(mpt_trainer_create_planned(MLP.model, W.devs, tp2, &c, NULL, NULL, &t));
    train(&MLP, t, 0, HALF, losses);
    mpt_data_position_t pos = {0, HALF};
    ck_assert_mpt_ok(mpt_trainer_save(t, path, &pos));
    mpt_trainer_free(t);
    mpt_plan_free(tp2);

    /* Under PP=2 (two devices), then on one device. */
    mpt_plan_t *pp2 = make_plan(&MLP, 1, 2, 1, 1, mlp_pp2, devs01, (const double[]){1.0});
    ck_assert_mpt_ok(mpt_trainer_create_planned(MLP.model, W.devs, pp2, &c, NULL, NULL, &t));
    ck_assert_mpt_ok(mpt_trainer_load(t, path, &pos));
    ck_assert_uint_eq(pos.batch_index, HALF);
    train(&MLP, t, HALF, STEPS, losses);
    expect_losses("checkpoint TP=2 -> PP=2", losses, MLP.ref_loss, HALF, STEPS);
    mpt_trainer_free(t);
    mpt_plan_free(pp2);

    ck_assert_mpt_ok(mpt_trainer_create(MLP.model, mpt_devices_get(W.devs, 0), &c, &t));
    ck_assert_mpt_ok(mpt_trainer_load(t, path, &pos));
    train(&MLP, t, HALF, STEPS, losses);
    expect_losses("checkpoint TP=2 -> one device", losses, MLP.ref_loss, HALF, STEPS);
    mpt_trainer_free(t);
    unlink(path);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tp");
    TCase *tc = tcase_create("tensor parallel");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, split_arithmetic);
    tcase_add_test(tc, shards_own_every_element_once);
    tcase_add_test(tc, replicated_and_unsplittable_layers);
    tcase_add_test(tc, mlp_tp2_even);
    tcase_add_test(tc, mlp_tp2_uneven);
    tcase_add_test(tc, mlp_tp2_pp2);
    tcase_add_test(tc, mlp_dp2_tp2);
    tcase_add_test(tc, cnn_tp2_even);
    tcase_add_test(tc, cnn_tp2_uneven);
    tcase_add_test(tc, cnn_tp2_pp2);
    tcase_add_test(tc, cnn_dp2_tp2);
    tcase_add_test(tc, mlp_groups_of_one_then_two);
    tcase_add_test(tc, mlp_tp2_adamw_clipped);
    tcase_add_test(tc, checkpoint_from_tp2_resumes_anywhere);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    setenv("POCL_DEVICES", "pthread pthread pthread pthread", 1);
    setenv("POCL_MAX_PTHREAD_COUNT", "1", 1);
    int failed = test_run(suite(), 0);
    if (W.loaded) {
        if (W.train) {
            mpt_dataset_free(W.train);
        } else {
            free(W.x);
            free(W.y);
        }
        mpt_devices_free(W.devs);
    }
    mpt_model_free(MLP.model);
    mpt_model_free(MLP_ADAMW.model);
    mpt_model_free(CNN.model);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
