/*
 * tests/check_gpt.c: the GPT kinds beyond PyTorch parity (check_parity.c
 * compares the numbers with PyTorch): plans on several PoCL devices train
 * the tiny GPT as one device does, and what is not supported yet says so.
 *
 * Plan invariance: 6 AdamW steps (lr 1e-2) of tests/fixtures/torch/gpt-tiny.json
 * (2 blocks, 2 heads, 32 wide, context 16, vocabulary 64), batch 8, on
 * a learnable counter-based token stream, labels the next tokens, under one
 * device, DP=2 (4 + 4 samples), DP=2 with 5:3 shares and 2 micro-batches
 * per replica, and DP=4.  Tolerance per step: 1e-5 relative, as
 * tests/check_engine.c argues for the MLP: a plan only reorders float sums
 * (micro-batch and replica gradients added one after another instead of
 * inside one GEMM); a lost sample or a wrong loss scale (1 / (batch x
 * positions)) moves the loss by 1e-2 or more.
 *
 * A pipeline that puts lm_head and the embedding it is tied to on
 * different devices is refused at the first step with the reason (the
 * tied weight's gradient is not summed between stages yet).
 *
 * Model JSON: positions are the input, one label per position
 * (mpt_model_labels_per_sample), the loss the mean over batch x positions.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "plan/plan.h"
#include "testutil.h"

enum { STEPS = 6, BATCH = 8, T = 16, V = 64 };
#define LOSS_TOL 1e-5

static mpt_model_t *model;
static mpt_devices_t *devs;
static float x[STEPS * BATCH * T];
static int32_t y[STEPS * BATCH * T];
static double ref[STEPS];

static void config(mpt_train_config_t *c)
{
    mpt_train_config_default(c);
    c->batch = BATCH;
    c->seed = 3;
    c->optimizer = MPT_OPTIM_ADAMW;
    c->lr = 1e-2;
    c->schedule = MPT_SCHEDULE_CONSTANT;
}

static void train(mpt_trainer_t *t, double *losses)
{
    for (int s = 0; s < STEPS; s++) {
        mpt_step_stats_t st;
        ck_assert_mpt_ok(mpt_trainer_step(t, x + (size_t)s * BATCH * T,
                                          y + (size_t)s * BATCH * T, &st));
        losses[s] = st.loss;
    }
}

static void setup(void)
{
    if (model)
        return;
    ck_assert_mpt_ok(mpt_model_load(test_path("fixtures/torch/gpt-tiny.json"), &model));
    ck_assert_uint_eq(mpt_model_labels_per_sample(model), T);
    ck_assert_int_eq(mpt_model_classes(model), V);
    ck_assert_mpt_ok(mpt_devices_open(NULL, &devs));
    ck_assert_uint_ge(mpt_devices_count(devs), 4);
    /* A token stream that can be learnt (each token but one in 8 follows
     * from the one before), each sample a window of it, labelled with the
     * next tokens. */
    uint32_t stream[STEPS * BATCH * T + 1];
    stream[0] = 1;
    for (size_t i = 1; i < sizeof stream / sizeof *stream; i++)
        stream[i] = mpt__rng_u32(11, 1, i) % 8 ? (stream[i - 1] * 5 + 1) % V
                                               : mpt__rng_u32(11, 2, i) % V;
    for (size_t i = 0; i < STEPS * BATCH * T; i++)
        x[i] = (float)stream[i], y[i] = (int32_t)stream[i + 1];
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    config(&c);
    ck_assert_mpt_ok(mpt_trainer_create(model, mpt_devices_get(devs, 0), &c, &t));
    train(t, ref);
    mpt_trainer_free(t);
    /* The first loss of a model at GPT-2's init is about log(V). */
    ck_assert_msg(fabs(ref[0] - log((double)V)) < 0.5, "first loss %.4f, log(V) %.4f", ref[0],
                  log((double)V));
    ck_assert_msg(ref[STEPS - 1] < ref[0], "AdamW did not lower the loss: %.4f -> %.4f", ref[0],
                  ref[STEPS - 1]);
}

/* A plan of dp replicas of `pp` stages cut at cuts[], batch shares, m
 * micro-batches; replica r stage s on device r * pp + s. */
static mpt_plan_t *make_plan(size_t dp, size_t pp, size_t m, const double *shares,
                             const size_t *cuts)
{
    char text[4096];
    size_t len = (size_t)snprintf(text, sizeof text,
                                  "{\"mpt_plan\": 1, \"dp\": %zu, \"pp\": %zu, \"tp\": 1, "
                                  "\"microbatches\": %zu, \"batch\": %d, \"schedule\": "
                                  "\"gpipe\", \"optimizer_slots\": 2, \"predicted_step_s\": "
                                  "0.001, \"breakdown\": {\"compute_s\": 0, \"bubble_s\": 0, "
                                  "\"p2p_s\": 0, \"allreduce_s\": 0}, \"replicas\": [",
                                  dp, pp, m, BATCH);
    for (size_t r = 0; r < dp; r++) {
        len += (size_t)snprintf(text + len, sizeof text - len,
                                "%s{\"batch_share\": %.17g, \"stages\": [", r ? ", " : "",
                                shares[r]);
        for (size_t s = 0; s < pp; s++)
            len += (size_t)snprintf(text + len, sizeof text - len,
                                    "%s{\"layers\": [%zu, %zu], \"fwd_s\": 0, \"bwd_s\": 0, "
                                    "\"devices\": [{\"device\": %zu, \"fraction\": 1.0, "
                                    "\"memory_bytes\": 0}]}",
                                    s ? ", " : "", cuts[s], cuts[s + 1] - 1, r * pp + s);
        len += (size_t)snprintf(text + len, sizeof text - len, "]}");
    }
    snprintf(text + len, sizeof text - len, "], \"alternatives\": []}");
    mpt_plan_t *p = NULL;
    ck_assert_mpt_ok(mpt__plan_from_json(text, "test plan", model->nlayers,
                                         mpt_devices_count(devs), &p));
    return p;
}

static void expect_invariant(const char *name, mpt_plan_t *plan)
{
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    double losses[STEPS], worst = 0;
    config(&c);
    ck_assert_mpt_ok(mpt_trainer_create_planned(model, devs, plan, &c, NULL, NULL, &t));
    train(t, losses);
    for (int s = 0; s < STEPS; s++) {
        double diff = fabs(losses[s] - ref[s]);
        worst = fmax(worst, diff / ref[s]);
        ck_assert_msg(diff <= LOSS_TOL * ref[s], "%s: step %d loss %.9g, one device %.9g", name,
                      s + 1, losses[s], ref[s]);
    }
    printf("# %s: %d losses within %.2g relative of one device (last %.6f vs %.6f)\n", name,
           STEPS, worst, losses[STEPS - 1], ref[STEPS - 1]);
    mpt_trainer_free(t);
    mpt_plan_free(plan);
}

static const size_t whole[] = {0, 6};

START_TEST(dp2)
{
    setup();
    const double shares[] = {0.5, 0.5};
    expect_invariant("DP=2", make_plan(2, 1, 1, shares, whole));
}
END_TEST

START_TEST(dp2_uneven_microbatches)
{
    setup();
    const double shares[] = {0.625, 0.375};
    expect_invariant("DP=2 5:3, 2 micro-batches", make_plan(2, 1, 2, shares, whole));
}
END_TEST

START_TEST(dp4)
{
    setup();
    const double shares[] = {0.25, 0.25, 0.25, 0.25};
    expect_invariant("DP=4", make_plan(4, 1, 1, shares, whole));
}
END_TEST

START_TEST(tied_head_across_stages_is_refused)
{
    setup();
    const double one[] = {1.0};
    const size_t cuts[] = {0, 2, 6}; /* embedding, block | block, layernorm, lm_head, loss */
    mpt_plan_t *plan = make_plan(1, 2, 2, one, cuts);
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    config(&c);
    int status = mpt_trainer_create_planned(model, devs, plan, &c, NULL, NULL, &t);
    if (status == MPT_OK) {
        mpt_step_stats_t st;
        status = mpt_trainer_step(t, x, y, &st);
    }
    ck_assert_int_lt(status, 0);
    ck_assert_msg(strstr(mpt_last_error(), "tied") != NULL, "%s", mpt_last_error());
    mpt_trainer_free(t);
    mpt_plan_free(plan);
}
END_TEST

int main(void)
{
    setenv("POCL_DEVICES", "pthread pthread pthread pthread", 1);
    setenv("POCL_MAX_PTHREAD_COUNT", "1", 1);
    Suite *s = suite_create("gpt");
    TCase *tc = tcase_create("plans");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, dp2);
    tcase_add_test(tc, dp2_uneven_microbatches);
    tcase_add_test(tc, dp4);
    tcase_add_test(tc, tied_head_across_stages_is_refused);
    suite_add_tcase(s, tc);
    int failed = test_run(s, 0);
    mpt_devices_free(devs);
    mpt_model_free(model);
    return failed;
}
