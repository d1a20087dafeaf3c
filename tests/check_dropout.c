/*
 * tests/check_dropout.c: dropout draws the one-device masks under every
 * plan.
 *
 * Masks (one device): the dropout kernel with a batch cut into pieces
 * (samples from an offset, a slice of each sample's elements, both)
 * against a host reference written here from the published Philox4x32-10
 * (Salmon et al., SC'11; checked on Random123's known-answer vectors), not
 * the library's own host generator: element j of sample i must be kept or
 * dropped as in the whole batch, whichever piece holds it.  Bit-exact: the
 * keep rule is an integer function and the product one fp32 rounding.
 *
 * Plan invariance: 10 SGD steps (momentum 0.9, lr 0.05) of two models with
 * two dropout layers each (an MLP 784-48-33-10, batch 64, MLP_JSON below:
 * dropout on a tensor-parallel slice and on a whole activation;
 * tests/fixtures/cnn-dropout.json, batch 32: dropout on a channel slice of
 * an image) under
 * DP=2, DP=2 with 2:1 shares, PP=2 1F1B with 3 uneven micro-batches,
 * PP=2 x DP=2, TP=2 at 0.7 / 0.3, TP=2 x PP=2 and DP=2 x TP=2 on four
 * PoCL devices, against the one-device executor.
 *
 * Tolerance, per step: |loss - loss_1device| <= 1e-5 * max(1, loss), the
 * plan-invariance tolerance of check_engine.c and check_tp.c (plans change
 * only the order of float sums, ~1e-7 relative).  That it can fail: the
 * same models with p = 0 move the losses by far more than that from step 1
 * on (asserted: > 100 x the tolerance), so a mask drawn for the wrong
 * sample or element, which is another independent mask, cannot pass.
 *
 * Runs without fork (OpenCL), with four one-core PoCL devices.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/rng.h"
#include "plan/plan.h"
#include "tensor/tensor.h"
#include "train/trainer.h"
#include "testutil.h"

/* ---- an independent Philox4x32-10 ----------------------------------------- */

/* Written from the paper: ten rounds of two 32x32 -> 64-bit products, the
 * key bumped by the Weyl constants after each round. */
static void philox(uint32_t c[4], const uint32_t k[2])
{
    uint32_t k0 = k[0], k1 = k[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c[0], p1 = (uint64_t)0xCD9E8D57u * c[2];
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0, n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1, n3 = (uint32_t)p0;
        c[0] = n0, c[1] = n1, c[2] = n2, c[3] = n3;
        k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
    }
}

/* The keep rule of docs/model.md: counter block c / 4 of stream (seed,
 * stream), lane c % 4, top 24 bits as u in [0, 1), kept iff u >= p. */
static int ref_keeps(uint64_t seed, uint64_t stream, uint64_t c, float p)
{
    uint32_t ctr[4] = {(uint32_t)(c / 4), (uint32_t)(c / 4 >> 32), (uint32_t)stream,
                       (uint32_t)(stream >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    philox(ctr, key);
    return (float)(ctr[c % 4] >> 8) * (1.0f / 16777216.0f) >= p;
}

START_TEST(reference_philox_known_answers)
{
    /* Random123's kat_vectors, philox4x32 10: counter, key, result. */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1}};
    for (int v = 0; v < 3; v++) {
        uint32_t c[4] = {kat[v][0], kat[v][1], kat[v][2], kat[v][3]};
        philox(c, &kat[v][4]);
        for (int i = 0; i < 4; i++)
            ck_assert_msg(c[i] == kat[v][6 + i], "vector %d word %d: %08x, want %08x", v, i,
                          c[i], kat[v][6 + i]);
    }
}
END_TEST

/* ---- masks of pieces of a batch ------------------------------------------------ */

enum { B = 13, F = 37 }; /* samples and elements per sample: neither a multiple of 4 */

typedef struct {
    size_t s0, s1, c0, c1; /* samples [s0, s1), elements [c0, c1) of each */
} piece_t;

/* Runs dropout (forward, or backward) on one piece of x (B x F) and
 * scatters its result into out at the piece's place. */
static void run_piece(mpt_device_t *dev, const float *x, piece_t pc, float p, uint64_t seed,
                      uint64_t stream, int backward, float *out)
{
    size_t rows = pc.s1 - pc.s0, cols = pc.c1 - pc.c0, n = rows * cols, off = 3;
    float *h = malloc((n + off) * sizeof *h);
    ck_assert_ptr_nonnull(h);
    for (size_t r = 0; r < rows; r++)
        memcpy(h + off + r * cols, x + (pc.s0 + r) * F + pc.c0, cols * sizeof *h);
    mpt_buffer_t *a = NULL, *b = NULL;
    ck_assert_mpt_ok(mpt_buffer_create(dev, (n + off) * sizeof *h, &a));
    ck_assert_mpt_ok(mpt_buffer_create(dev, (n + off) * sizeof *h, &b));
    ck_assert_mpt_ok(mpt_buffer_write(a, 0, h, (n + off) * sizeof *h));
    size_t dims[1] = {n};
    mpt__tensor_t ta = mpt__tensor(a, off, 1, dims), tb = mpt__tensor(b, off, 1, dims);
    mpt__dropout_at_t at = {pc.s0, cols, F, pc.c0};
    if (backward)
        ck_assert_mpt_ok(mpt__op_dropout_backward(&ta, &tb, n, &at, p, seed, stream));
    else
        ck_assert_mpt_ok(mpt__op_dropout_forward(&ta, &tb, n, &at, p, seed, stream));
    ck_assert_mpt_ok(mpt_buffer_read(b, off * sizeof *h, h, n * sizeof *h));
    for (size_t r = 0; r < rows; r++)
        memcpy(out + (pc.s0 + r) * F + pc.c0, h + r * cols, cols * sizeof *h);
    mpt_buffer_free(a);
    mpt_buffer_free(b);
    free(h);
}

START_TEST(mask_does_not_depend_on_the_split)
{
    const float p = 0.4f, scale = 1.0f / (1.0f - p);
    const uint64_t seed = 0x9e3779b97f4a7c15ull, stream = MPT_RNG_STREAM(MPT_RNG_DROPOUT, 7 << 16 | 3);
    /* Splits of the B x F batch: whole; micro-batches 5, 4, 4; a replica
     * share starting at sample 6; tensor-parallel slices 10 + 27 and
     * 1 + 36; a 2 x 2 grid of both. */
    static const piece_t splits[][4] = {
        {{0, B, 0, F}},
        {{0, 5, 0, F}, {5, 9, 0, F}, {9, B, 0, F}},
        {{0, 6, 0, F}, {6, B, 0, F}},
        {{0, B, 0, 10}, {0, B, 10, F}},
        {{0, B, 0, 1}, {0, B, 1, F}},
        {{0, 7, 0, 18}, {0, 7, 18, F}, {7, B, 0, 18}, {7, B, 18, F}}};
    static const size_t npieces[] = {1, 3, 2, 2, 2, 4};
    mpt_devices_t *set = NULL;
    ck_assert_mpt_ok(mpt_devices_open("0", &set));
    mpt_device_t *dev = mpt_devices_get(set, 0);
    float x[B * F], want[B * F], got[B * F];
    size_t kept = 0;
    for (size_t i = 0; i < B * F; i++) {
        x[i] = 0.5f + mpt__u01(mpt__rng_u32(11, 1, i)); /* never 0: a drop shows */
        int keep = ref_keeps(seed, stream, i, p); /* counter = sample * F + element */
        want[i] = x[i] * (keep ? scale : 0.0f);
        kept += keep;
    }
    /* A mask at all: some kept, some dropped (B * F = 481 draws at p = 0.4). */
    ck_assert_msg(kept > 200 && kept < 380, "kept %zu of %d", kept, B * F);
    for (size_t sp = 0; sp < sizeof npieces / sizeof npieces[0]; sp++)
        for (int backward = 0; backward < 2; backward++) {
            for (size_t i = 0; i < B * F; i++)
                got[i] = NAN;
            for (size_t k = 0; k < npieces[sp]; k++)
                run_piece(dev, x, splits[sp][k], p, seed, stream, backward, got);
            for (size_t i = 0; i < B * F; i++)
                ck_assert_msg(got[i] == want[i], "split %zu (%s): sample %zu element %zu is "
                              "%g, the whole batch's %g", sp, backward ? "backward" : "forward",
                              i / F, i % F, got[i], want[i]);
        }
    /* The offset is what makes it so: sample 6 on its own, numbered from
     * 0, draws another mask. */
    piece_t alone = {0, 1, 0, F};
    run_piece(dev, x + 6 * F, alone, p, seed, stream, 0, got);
    size_t same = 0;
    for (size_t j = 0; j < F; j++)
        same += got[j] == want[6 * F + j];
    ck_assert_msg(same < F, "sample 6 numbered from 0 drew sample 6's mask");
    /* A slice that does not fit its sample is refused. */
    mpt_buffer_t *a = NULL;
    ck_assert_mpt_ok(mpt_buffer_create(dev, 64 * sizeof(float), &a));
    size_t dims[1] = {40};
    mpt__tensor_t t = mpt__tensor(a, 0, 1, dims);
    mpt__dropout_at_t bad = {0, 10, 12, 5};
    ck_assert_mpt_fails(mpt__op_dropout_forward(&t, &t, 40, &bad, p, seed, stream),
                        MPT_ERR_INVALID);
    mpt__dropout_at_t ragged = {0, 7, 12, 0};
    ck_assert_mpt_fails(mpt__op_dropout_forward(&t, &t, 40, &ragged, p, seed, stream),
                        MPT_ERR_INVALID);
    mpt_buffer_free(a);
    mpt_devices_free(set);
}
END_TEST

/* ---- plan invariance ---------------------------------------------------------- */

enum { STEPS = 10, CLASSES = 10, IMAGE = 784 };
#define LOSS_TOL 1e-5

/* Odd widths; under TP=2 the first dropout sits on the column-parallel
 * 48's slice, the second after the row-parallel 33 on the whole. */
#define MLP_JSON(p1, p2)                                                                      \
    "{\"name\": \"mlp-dropout\", \"input\": [784], \"layers\": ["                              \
    "{\"kind\": \"linear\", \"units\": 48}, {\"kind\": \"relu\"}, "                          \
    "{\"kind\": \"dropout\", \"p\": " p1 "}, {\"kind\": \"linear\", \"units\": 33}, "        \
    "{\"kind\": \"relu\"}, {\"kind\": \"dropout\", \"p\": " p2 "}, "                         \
    "{\"kind\": \"linear\", \"units\": 10}, {\"kind\": \"softmax_cross_entropy\"}]}"

typedef struct {
    const char *path; /* a fixture, or NULL: MLP_JSON */
    size_t batch;
    mpt_model_t *model;
    double ref_loss[STEPS];
    int have_ref;
} net_t;

static net_t MLP = {NULL, 64, NULL, {0}, 0};
static net_t CNN = {"fixtures/cnn-dropout.json", 32, NULL, {0}, 0};

static struct {
    mpt_devices_t *devs;
    mpt_dataset_t *train;
    float *x;
    int32_t *y;
} W;

static void load_net(net_t *n)
{
    if (!W.devs) {
        struct stat st;
        ck_assert_mpt_ok(mpt_devices_open(NULL, &W.devs));
        ck_assert_uint_ge(mpt_devices_count(W.devs), 4);
        if (stat("/usr/share/datasets/fashion-mnist", &st) == 0 &&
            mpt_dataset_load_idx("/usr/share/datasets/fashion-mnist", "train", &W.train) ==
                MPT_OK) {
            W.x = (float *)mpt_dataset_images(W.train);
            W.y = (int32_t *)mpt_dataset_labels(W.train);
        } else { /* no dataset: random images and labels, counter-based */
            size_t count = STEPS * 64;
            W.x = malloc(count * IMAGE * sizeof *W.x);
            W.y = malloc(count * sizeof *W.y);
            ck_assert_ptr_nonnull(W.x);
            ck_assert_ptr_nonnull(W.y);
            for (size_t i = 0; i < count * IMAGE; i++)
                W.x[i] = (float)mpt__u01(mpt__rng_u32(7, 1, i));
            for (size_t i = 0; i < count; i++)
                W.y[i] = (int32_t)(mpt__rng_u32(7, 2, i) % CLASSES);
        }
    }
    if (!n->model && n->path)
        ck_assert_mpt_ok(mpt_model_load(test_path(n->path), &n->model));
    else if (!n->model)
        ck_assert_mpt_ok(mpt_model_from_json(MLP_JSON("0.3", "0.2"), &n->model));
}

static void train(const net_t *n, mpt_trainer_t *t, double *losses)
{
    for (int s = 0; s < STEPS; s++) {
        mpt_step_stats_t st;
        ck_assert_mpt_ok(mpt_trainer_step(t, W.x + (size_t)s * n->batch * IMAGE,
                                          W.y + (size_t)s * n->batch, &st));
        losses[s] = st.loss;
    }
}

static void config(const net_t *n, mpt_train_config_t *c)
{
    mpt_train_config_default(c);
    c->batch = n->batch;
    c->seed = 5;
}

static void one_device(const net_t *n, mpt_model_t *m, double *losses)
{
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    config(n, &c);
    ck_assert_mpt_ok(mpt_trainer_create(m, mpt_devices_get(W.devs, 0), &c, &t));
    train(n, t, losses);
    mpt_trainer_free(t);
}

static void reference(net_t *n)
{
    load_net(n);
    if (!n->have_ref)
        one_device(n, n->model, n->ref_loss);
    n->have_ref = 1;
}

/* dp replicas (shares[r] of the batch) of pp stages (layers [cuts[s],
 * cuts[s + 1] - 1]) of tp devices: member g of replica r's stage s on
 * device (r * pp + s) * tp + g with fraction fractions[g]. */
static mpt_plan_t *make_plan(const net_t *n, size_t dp, size_t pp, size_t tp, size_t m,
                             const double *shares, const size_t *cuts, const double *fractions)
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
                                "\"stages\": [", r ? ", " : "", shares[r]);
        for (size_t s = 0; s < pp; s++) {
            len += (size_t)snprintf(text + len, sizeof text - len,
                                    "%s{\"layers\": [%zu, %zu], \"fwd_s\": 0, \"bwd_s\": 0, "
                                    "\"devices\": [", s ? ", " : "", cuts[s], cuts[s + 1] - 1);
            for (size_t g = 0; g < tp; g++)
                len += (size_t)snprintf(text + len, sizeof text - len,
                                        "%s{\"device\": %zu, \"fraction\": %.17g, "
                                        "\"memory_bytes\": 0}", g ? ", " : "",
                                        (r * pp + s) * tp + g, fractions[g]);
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

static void expect_invariant(net_t *n, const char *name, size_t dp, size_t pp, size_t tp,
                             size_t m, const double *shares, const size_t *cuts,
                             const double *fractions)
{
    mpt_train_config_t c;
    mpt_trainer_t *t = NULL;
    double losses[STEPS], worst = 0;
    reference(n);
    mpt_plan_t *plan = make_plan(n, dp, pp, tp, m, shares, cuts, fractions);
    config(n, &c);
    ck_assert_mpt_ok(mpt_trainer_create_planned(n->model, W.devs, plan, &c, NULL, NULL, &t));
    train(n, t, losses);
    for (int s = 0; s < STEPS; s++) {
        double diff = fabs(losses[s] - n->ref_loss[s]);
        worst = fmax(worst, diff / fmax(1.0, n->ref_loss[s]));
        ck_assert_msg(diff <= LOSS_TOL * fmax(1.0, n->ref_loss[s]),
                      "%s: step %d loss %.9g, one device %.9g", name, s + 1, losses[s],
                      n->ref_loss[s]);
    }
    printf("# %s: %d losses within %.2g relative of one device (last %.6f vs %.6f)\n", name,
           STEPS, worst, losses[STEPS - 1], n->ref_loss[STEPS - 1]);
    fflush(stdout);
    mpt_trainer_free(t);
    mpt_plan_free(plan);
}

static const double half[] = {0.5, 0.5}, two_one[] = {2.0 / 3.0, 1.0 / 3.0}, one[] = {1.0};
static const double uneven[] = {0.7, 0.3};
static const size_t mlp_pp1[] = {0, 8}, mlp_pp2[] = {0, 4, 8}; /* a dropout in each stage */
static const size_t cnn_pp1[] = {0, 10}, cnn_pp2[] = {0, 5, 10};

START_TEST(dropout_matters)
{
    /* The same model without dropout: far from the dropout losses, so the
     * tolerance below separates right masks from wrong ones. */
    reference(&MLP);
    mpt_model_t *plain = NULL;
    ck_assert_mpt_ok(mpt_model_from_json(MLP_JSON("0", "0"), &plain));
    double losses[STEPS];
    one_device(&MLP, plain, losses);
    for (int s = 0; s < STEPS; s++)
        ck_assert_msg(fabs(losses[s] - MLP.ref_loss[s]) > 100 * LOSS_TOL,
                      "step %d: loss %.9g without dropout, %.9g with", s + 1, losses[s],
                      MLP.ref_loss[s]);
    mpt_model_free(plain);
}
END_TEST

START_TEST(mlp_dp2) { expect_invariant(&MLP, "MLP DP=2", 2, 1, 1, 1, half, mlp_pp1, one); }
END_TEST
START_TEST(mlp_dp2_two_to_one)
{
    expect_invariant(&MLP, "MLP DP=2 2:1", 2, 1, 1, 1, two_one, mlp_pp1, one);
}
END_TEST
START_TEST(mlp_pp2_three_microbatches)
{
    expect_invariant(&MLP, "MLP PP=2 1F1B m=3", 1, 2, 1, 3, one, mlp_pp2, one);
}
END_TEST
START_TEST(mlp_pp2_dp2)
{
    expect_invariant(&MLP, "MLP PP=2 x DP=2 m=2", 2, 2, 1, 2, half, mlp_pp2, one);
}
END_TEST
START_TEST(mlp_tp2_uneven)
{
    expect_invariant(&MLP, "MLP TP=2 0.7/0.3", 1, 1, 2, 1, one, mlp_pp1, uneven);
}
END_TEST
START_TEST(mlp_tp2_pp2)
{
    expect_invariant(&MLP, "MLP TP=2 x PP=2 m=2", 1, 2, 2, 2, one, mlp_pp2, half);
}
END_TEST
START_TEST(mlp_dp2_tp2)
{
    expect_invariant(&MLP, "MLP DP=2 x TP=2", 2, 1, 2, 1, half, mlp_pp1, half);
}
END_TEST
START_TEST(cnn_tp2_uneven)
{
    expect_invariant(&CNN, "CNN TP=2 0.7/0.3", 1, 1, 2, 1, one, cnn_pp1, uneven);
}
END_TEST
START_TEST(cnn_pp2_dp2_three_microbatches)
{
    expect_invariant(&CNN, "CNN PP=2 x DP=2 m=3", 2, 2, 1, 3, half, cnn_pp2, one);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("dropout");
    TCase *masks = tcase_create("masks");
    tcase_set_timeout(masks, 120);
    tcase_add_test(masks, reference_philox_known_answers);
    tcase_add_test(masks, mask_does_not_depend_on_the_split);
    suite_add_tcase(s, masks);
    TCase *plans = tcase_create("plans");
    tcase_set_timeout(plans, 900);
    tcase_add_test(plans, dropout_matters);
    tcase_add_test(plans, mlp_dp2);
    tcase_add_test(plans, mlp_dp2_two_to_one);
    tcase_add_test(plans, mlp_pp2_three_microbatches);
    tcase_add_test(plans, mlp_pp2_dp2);
    tcase_add_test(plans, mlp_tp2_uneven);
    tcase_add_test(plans, mlp_tp2_pp2);
    tcase_add_test(plans, mlp_dp2_tp2);
    tcase_add_test(plans, cnn_tp2_uneven);
    tcase_add_test(plans, cnn_pp2_dp2_three_microbatches);
    suite_add_tcase(s, plans);
    return s;
}

int main(void)
{
    /* Four one-core devices (PoCL reads this once, at the first OpenCL call). */
    setenv("POCL_DEVICES", "pthread pthread pthread pthread", 1);
    setenv("POCL_MAX_PTHREAD_COUNT", "1", 1);
    int failed = test_run(suite(), 0);
    if (W.devs) {
        if (W.train) {
            mpt_dataset_free(W.train);
        } else {
            free(W.x);
            free(W.y);
        }
        mpt_devices_free(W.devs);
    }
    mpt_model_free(MLP.model);
    mpt_model_free(CNN.model);
    return failed;
}
