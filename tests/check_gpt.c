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
 * Pipelines that put lm_head on a later stage than the embedding it is
 * tied to (the head's stage holds a copy of wte, the engine sums the two
 * gradients): PP=2 with 2 micro-batches, PP=3 with 3, DP=2 x PP=2 (the
 * summed gradient then goes through the data-parallel all-reduce), each
 * also evaluated after training (the forward reads the copy: a copy that
 * drifted from the owner moves the loss), and PP=2 stopped after 3 steps,
 * saved, restored into a new trainer and run on (the copy and its Adam
 * slots are restored from the owner's).
 *
 * Tensor parallelism (each block split by heads and MLP units, the
 * embedding, final layer norm and tied head replicated): TP=2 at 0.5 / 0.5
 * and 0.7 / 0.3, DP=2 x TP=2, each to the same 1e-5 (a split only reorders
 * the sums of proj, fc_proj and the two input gradients); TP=2 with
 * clipping at 0.5, whose gradient norm must match one device's within
 * 1e-4 relative (a replica counted twice gave 1.72 for 1.27); a tied head
 * apart from its embedding with a tensor-parallel stage refused.
 *
 * Model JSON: positions are the input, one label per position
 * (mpt_model_labels_per_sample), the loss the mean over batch x positions.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "plan/plan.h"
#include "plan_text.h"
#include "testutil.h"

enum { STEPS = 6, BATCH = 8, T = 16, V = 64 };
#define LOSS_TOL 1e-5

static mpt_model_t *model;
static mpt_devices_t *devs;
static float x[STEPS * BATCH * T];
static int32_t y[STEPS * BATCH * T];
static double ref[STEPS], ref_eval;

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
    double acc;
    ck_assert_mpt_ok(mpt_trainer_evaluate(t, x, y, BATCH, &ref_eval, &acc));
    mpt_trainer_free(t);
    /* The first loss of a model at GPT-2's init is about log(V). */
    ck_assert_msg(fabs(ref[0] - log((double)V)) < 0.5, "first loss %.4f, log(V) %.4f", ref[0],
                  log((double)V));
    ck_assert_msg(ref[STEPS - 1] < ref[0], "AdamW did not lower the loss: %.4f -> %.4f", ref[0],
                  ref[STEPS - 1]);
}

/* A plan of dp replicas of `pp` stages cut at cuts[], batch shares, m
 * micro-batches, every stage on tp devices with `fractions` (NULL: one
 * device); replica r stage s member g on device (r * pp + s) * tp + g. */
static mpt_plan_t *make_tp_plan(size_t dp, size_t pp, size_t tp, const double *fractions,
                                size_t m, const double *shares, const size_t *cuts)
{
    test_plan_spec_t spec = {.dp = dp, .pp = pp, .tp = tp, .microbatches = m, .batch = BATCH,
                             .shares = shares, .cuts = cuts, .fractions = fractions,
                             .optimizer_slots = 2};
    return test_plan(&spec, model, mpt_devices_count(devs));
}

static mpt_plan_t *make_plan(size_t dp, size_t pp, size_t m, const double *shares,
                             const size_t *cuts)
{
    return make_tp_plan(dp, pp, 1, NULL, m, shares, cuts);
}

static void expect_invariant(const char *name, mpt_plan_t *plan)
{
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    double losses[STEPS], worst = 0, eval, acc;
    config(&c);
    ck_assert_mpt_ok(mpt_trainer_create_planned(model, devs, plan, &c, NULL, NULL, &t));
    train(t, losses);
    ck_assert_mpt_ok(mpt_trainer_evaluate(t, x, y, BATCH, &eval, &acc));
    ck_assert_msg(fabs(eval - ref_eval) <= LOSS_TOL * ref_eval,
                  "%s: evaluation after training %.9g, one device %.9g", name, eval, ref_eval);
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

/* embedding, block | block, layernorm, lm_head, loss */
static const size_t two[] = {0, 2, 6};

START_TEST(pp2)
{
    setup();
    const double one[] = {1.0};
    expect_invariant("PP=2, tied head on stage 1, 2 micro-batches", make_plan(1, 2, 2, one, two));
}
END_TEST

START_TEST(pp3)
{
    setup();
    const double one[] = {1.0};
    const size_t cuts[] = {0, 1, 3, 6}; /* embedding | blocks | layernorm, head, loss */
    expect_invariant("PP=3, 3 micro-batches", make_plan(1, 3, 3, one, cuts));
}
END_TEST

START_TEST(dp2_pp2)
{
    setup();
    const double shares[] = {0.5, 0.5};
    expect_invariant("DP=2 x PP=2, 2 micro-batches", make_plan(2, 2, 2, shares, two));
}
END_TEST

START_TEST(pp2_resumes_from_a_checkpoint)
{
    setup();
    const double one[] = {1.0};
    char path[] = "/tmp/check_gpt_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    mpt_train_config_t c;
    config(&c);
    mpt_plan_t *plan = make_plan(1, 2, 2, one, two);
    mpt_trainer_t *t = NULL;
    double losses[STEPS];
    ck_assert_mpt_ok(mpt_trainer_create_planned(model, devs, plan, &c, NULL, NULL, &t));
    for (int s = 0; s < STEPS / 2; s++) {
        mpt_step_stats_t st;
        ck_assert_mpt_ok(mpt_trainer_step(t, x + (size_t)s * BATCH * T,
                                          y + (size_t)s * BATCH * T, &st));
        losses[s] = st.loss;
    }
    ck_assert_mpt_ok(mpt_trainer_save(t, path, NULL));
    mpt_trainer_free(t);
    /* A new trainer starts from the initial weights: only the checkpoint
     * makes its copy of wte (and the copy's Adam moments) the trained ones. */
    ck_assert_mpt_ok(mpt_trainer_create_planned(model, devs, plan, &c, NULL, NULL, &t));
    ck_assert_mpt_ok(mpt_trainer_load(t, path, NULL));
    for (int s = STEPS / 2; s < STEPS; s++) {
        mpt_step_stats_t st;
        ck_assert_mpt_ok(mpt_trainer_step(t, x + (size_t)s * BATCH * T,
                                          y + (size_t)s * BATCH * T, &st));
        losses[s] = st.loss;
    }
    for (int s = 0; s < STEPS; s++)
        ck_assert_msg(fabs(losses[s] - ref[s]) <= LOSS_TOL * ref[s],
                      "step %d (restored after %d): loss %.9g, one device %.9g", s + 1,
                      STEPS / 2, losses[s], ref[s]);
    mpt_trainer_free(t);
    mpt_plan_free(plan);
    unlink(path);
}
END_TEST

/* Tensor parallelism: each block split by heads (attention) and MLP units
 * (Megatron's column-then-row pairs, one all-reduce each way per pair);
 * the embedding, the final layer norm and the tied head run whole on both
 * members.  0.7 / 0.3 gives the members 1 + 1 heads and 90 + 38 units. */
START_TEST(tp2)
{
    setup();
    const double one[] = {1.0}, even[] = {0.5, 0.5};
    expect_invariant("TP=2 even", make_tp_plan(1, 1, 2, even, 1, one, whole));
}
END_TEST

START_TEST(tp2_uneven)
{
    setup();
    const double one[] = {1.0}, skewed[] = {0.7, 0.3};
    expect_invariant("TP=2 0.7 / 0.3", make_tp_plan(1, 1, 2, skewed, 1, one, whole));
}
END_TEST

START_TEST(dp2_tp2)
{
    setup();
    const double shares[] = {0.5, 0.5}, skewed[] = {0.7, 0.3};
    expect_invariant("DP=2 x TP=2 0.7 / 0.3, 2 micro-batches",
                     make_tp_plan(2, 1, 2, skewed, 2, shares, whole));
}
END_TEST

/* The global gradient norm counts the replicated layers' gradients once
 * (member 0's): a norm counting them twice clips differently. */
START_TEST(tp2_clips_as_one_device)
{
    setup();
    const double one[] = {1.0}, skewed[] = {0.7, 0.3};
    mpt_train_config_t c;
    config(&c);
    c.clip_norm = 0.5;
    double norms[2][STEPS], losses[2][STEPS];
    for (int run = 0; run < 2; run++) {
        mpt_trainer_t *t = NULL;
        mpt_plan_t *plan = run ? make_tp_plan(1, 1, 2, skewed, 1, one, whole) : NULL;
        if (plan)
            ck_assert_mpt_ok(mpt_trainer_create_planned(model, devs, plan, &c, NULL, NULL, &t));
        else
            ck_assert_mpt_ok(mpt_trainer_create(model, mpt_devices_get(devs, 0), &c, &t));
        for (int s = 0; s < STEPS; s++) {
            mpt_step_stats_t st;
            ck_assert_mpt_ok(mpt_trainer_step(t, x + (size_t)s * BATCH * T,
                                              y + (size_t)s * BATCH * T, &st));
            norms[run][s] = st.grad_norm, losses[run][s] = st.loss;
        }
        mpt_trainer_free(t);
        mpt_plan_free(plan);
    }
    ck_assert_msg(norms[0][0] > c.clip_norm, "the first norm %.4f does not clip", norms[0][0]);
    for (int s = 0; s < STEPS; s++) {
        ck_assert_msg(fabs(norms[1][s] - norms[0][s]) <= 1e-4 * norms[0][s],
                      "step %d: gradient norm %.7g under TP=2, %.7g on one device", s + 1,
                      norms[1][s], norms[0][s]);
        ck_assert_msg(fabs(losses[1][s] - losses[0][s]) <= LOSS_TOL * losses[0][s],
                      "step %d: clipped loss %.9g under TP=2, %.9g on one device", s + 1,
                      losses[1][s], losses[0][s]);
    }
}
END_TEST

/* The tied head's weight crossing to a tensor-parallel stage is not
 * built: the trainer says so instead of training something else. */
START_TEST(pp2_tp2_with_the_head_apart_is_refused)
{
    setup();
    const double one[] = {1.0}, even[] = {0.5, 0.5};
    mpt_plan_t *plan = make_tp_plan(1, 2, 2, even, 2, one, two);
    mpt_train_config_t c;
    mpt_trainer_t *t = (mpt_trainer_t *)1;
    config(&c);
    ck_assert_mpt_fails(mpt_trainer_create_planned(model, devs, plan, &c, NULL, NULL, &t),
                        MPT_ERR_UNSUPPORTED);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(mpt_last_error(), "tied"), "%s", mpt_last_error());
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
    tcase_add_test(tc, pp2);
    tcase_add_test(tc, pp3);
    tcase_add_test(tc, dp2_pp2);
    tcase_add_test(tc, pp2_resumes_from_a_checkpoint);
    tcase_add_test(tc, tp2);
    tcase_add_test(tc, tp2_uneven);
    tcase_add_test(tc, dp2_tp2);
    tcase_add_test(tc, tp2_clips_as_one_device);
    tcase_add_test(tc, pp2_tp2_with_the_head_apart_is_refused);
    suite_add_tcase(s, tc);
    int failed = test_run(s, 0);
    mpt_devices_free(devs);
    mpt_model_free(model);
    return failed;
}
