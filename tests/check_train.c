/*
 * tests/check_train.c: model descriptions (errors that name the layer),
 * bitwise determinism, checkpoints (round trip, resume equals an
 * uninterrupted run bit for bit, corrupted, truncated and mismatched files
 * refused without touching the trainer), and the learning-rate schedule;
 * the embedding API: models from text and the builder, the defaults
 * shared with mpt-train, one batch size for plan and trainer, and the
 * local cluster.
 * Runs without fork (OpenCL).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "train/trainer.h"
#include "testutil.h"

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/mpt-train-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* ---- model descriptions ----------------------------------------------------- */

static void expect_model_error(const char *json, const char *needle1, const char *needle2)
{
    mpt_model_t *m = (mpt_model_t *)1;
    const char *path = write_file("bad.json", json);
    ck_assert_mpt_fails(mpt_model_load(path, &m), MPT_ERR_PARSE);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(mpt_last_error(), "bad.json") && strstr(mpt_last_error(), needle1) &&
                      (!needle2 || strstr(mpt_last_error(), needle2)),
                  "error '%s' lacks '%s' / '%s'", mpt_last_error(), needle1,
                  needle2 ? needle2 : "");
}

START_TEST(model_errors_name_the_layer)
{
    make_dir();
    expect_model_error("{\"input\": [4], \"layers\": [{\"kind\": \"linear\", \"units\": 3}, "
                       "{\"kind\": \"convolution\"}, {\"kind\": \"softmax_cross_entropy\"}]}",
                       "layers[1] (convolution)", "unknown kind");
    expect_model_error("{\"input\": [4], \"layers\": [{\"kind\": \"linear\"}, "
                       "{\"kind\": \"softmax_cross_entropy\"}]}",
                       "layers[0] (linear)", "\"units\"");
    expect_model_error("{\"input\": [1, 8, 8], \"layers\": [{\"kind\": \"conv2d\", \"channels\": "
                       "2, \"kernel\": 3}, {\"kind\": \"linear\", \"units\": 3}, "
                       "{\"kind\": \"softmax_cross_entropy\"}]}",
                       "layers[1] (linear)", "flatten");
    expect_model_error("{\"input\": [1, 4, 4], \"layers\": [{\"kind\": \"conv2d\", \"channels\": "
                       "2, \"kernel\": 7}, {\"kind\": \"flatten\"}, "
                       "{\"kind\": \"softmax_cross_entropy\"}]}",
                       "layers[0] (conv2d)", "does not fit");
    expect_model_error("{\"input\": [4], \"layers\": [{\"kind\": \"linear\", \"units\": 3}, "
                       "{\"kind\": \"relu\"}]}",
                       "layers[1] (relu)", "must be a loss");
    expect_model_error("{\"input\": [4], \"layers\": [{\"kind\": \"relu\"}, "
                       "{\"kind\": \"softmax_cross_entropy\"}]}",
                       "no parameters", NULL);
    expect_model_error("{\"input\": [4], \"layers\": [{\"kind\": \"linear\", \"units\": "
                       "4611686018427387904}, {\"kind\": \"softmax_cross_entropy\"}]}",
                       "layers[0] (linear)", "too large");
    expect_model_error("{\"input\": [4], \"layers\": [{\"kind\": \"softmax_cross_entropy\"}, "
                       "{\"kind\": \"relu\"}]}",
                       "layers[0]", "last layer");
    expect_model_error("{\"input\": [4], \"layers\": [{\"kind\": \"linear\", \"unit\": 3}, "
                       "{\"kind\": \"softmax_cross_entropy\"}]}",
                       "layers[0] (linear)", "unknown attribute \"unit\"");
    expect_model_error("{\"input\": [4], \"layers\": [{\"kind\": \"dropout\", \"p\": 1.5}, "
                       "{\"kind\": \"softmax_cross_entropy\"}]}",
                       "layers[0] (dropout)", "\"p\"");
    expect_model_error("{\"input\": [0], \"layers\": [{\"kind\": \"linear\", \"units\": 2}, "
                       "{\"kind\": \"softmax_cross_entropy\"}]}",
                       "\"input\"", NULL);
    expect_model_error("{\"input\": [4], \"layers\": [}", "malformed JSON", NULL);
    remove_dir();
}
END_TEST

START_TEST(shipped_models_load)
{
    const char *names[] = {"../models/mlp-fashion.json", "../models/cnn-fashion.json"};
    const size_t params[] = {784 * 256 + 256 + 256 * 128 + 128 + 128 * 100 + 100 + 100 * 10 + 10,
                             32 * 9 + 32 + 64 * 32 * 9 + 64 + 3136 * 128 + 128 + 128 * 10 + 10};
    for (int i = 0; i < 2; i++) {
        mpt_model_t *m = NULL;
        char *table = NULL;
        ck_assert_mpt_ok(mpt_model_load(test_path(names[i]), &m));
        ck_assert_uint_eq(mpt_model_param_count(m), params[i]);
        ck_assert_uint_eq(mpt_model_input_floats(m), 784);
        ck_assert_int_eq(mpt_model_classes(m), 10);
        ck_assert_mpt_ok(mpt_model_describe(m, &table));
        ck_assert_ptr_nonnull(strstr(table, "softmax_cross_entropy"));
        free(table);
        mpt_model_free(m);
    }
}
END_TEST

/* ---- training runs on synthetic data ---------------------------------------- */

#define BATCH 8
#define STEPS 10
#define IN 12

static const char *tiny_model =
    "{\"name\": \"tiny\", \"input\": [12], \"layers\": ["
    "{\"kind\": \"linear\", \"units\": 16}, {\"kind\": \"gelu\"}, {\"kind\": \"dropout\", \"p\": 0.2},"
    "{\"kind\": \"layernorm\"}, {\"kind\": \"linear\", \"units\": 4},"
    "{\"kind\": \"softmax_cross_entropy\"}]}";

static float xs[STEPS][BATCH * IN];
static int32_t ys[STEPS][BATCH];

static void make_data(void)
{
    for (int s = 0; s < STEPS; s++) {
        mpt__rng_uniform(99, (uint64_t)s, 0, 1.0f, xs[s], BATCH * IN);
        for (int i = 0; i < BATCH; i++)
            ys[s][i] = (int32_t)(mpt__rng_u32(98, (uint64_t)s, (uint64_t)i) % 4);
    }
}

typedef struct {
    mpt_model_t *model;
    mpt_devices_t *set;
    mpt_train_config_t cfg;
} run;

static void open_run(run *r, mpt_optimizer_t opt)
{
    make_dir();
    make_data();
    ck_assert_mpt_ok(mpt_model_load(write_file("tiny.json", tiny_model), &r->model));
    ck_assert_mpt_ok(mpt_devices_open("0", &r->set));
    mpt_train_config_default(&r->cfg);
    r->cfg.batch = BATCH;
    r->cfg.seed = 7;
    r->cfg.optimizer = opt;
    r->cfg.lr = opt == MPT_OPTIM_SGD ? 0.1 : 0.01;
    r->cfg.weight_decay = 0.01;
    r->cfg.clip_norm = 1.0;
    r->cfg.schedule = MPT_SCHEDULE_COSINE;
    r->cfg.warmup_steps = 2;
    r->cfg.total_steps = STEPS;
}

static void close_run(run *r)
{
    mpt_devices_free(r->set);
    mpt_model_free(r->model);
    remove_dir();
}

static mpt_trainer_t *trainer(run *r)
{
    mpt_trainer_t *t = NULL;
    ck_assert_mpt_ok(mpt_trainer_create(r->model, mpt_devices_get(r->set, 0), &r->cfg, &t));
    return t;
}

static void train(mpt_trainer_t *t, int from, int to, double *losses)
{
    for (int s = from; s < to; s++) {
        mpt_step_stats_t st;
        ck_assert_mpt_ok(mpt_trainer_step(t, xs[s], ys[s], &st));
        ck_assert_uint_eq(st.step, (uint64_t)s + 1);
        ck_assert(isfinite(st.loss) && st.grad_norm > 0);
        losses[s] = st.loss;
    }
}

static void resume_equals_uninterrupted(mpt_optimizer_t opt)
{
    run r;
    double whole[STEPS], again[STEPS], parts[STEPS];
    mpt_data_position_t pos = {3, 4}, back = {0, 0};
    open_run(&r, opt);
    mpt_trainer_t *a = trainer(&r), *b = trainer(&r);
    train(a, 0, STEPS, whole);
    train(b, 0, STEPS, again);
    /* Same seed, same data, same device: bitwise identical. */
    ck_assert(memcmp(whole, again, sizeof whole) == 0);
    mpt_trainer_free(b);

    b = trainer(&r);
    train(b, 0, STEPS / 2, parts);
    char path[128];
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    ck_assert_mpt_ok(mpt_trainer_save(b, path, &pos));
    mpt_trainer_free(b);
    mpt_trainer_t *c = trainer(&r);
    ck_assert_mpt_ok(mpt_trainer_load(c, path, &back));
    ck_assert_uint_eq(back.epoch, 3);
    ck_assert_uint_eq(back.batch_index, 4);
    ck_assert_uint_eq(mpt_trainer_steps(c), STEPS / 2);
    train(c, STEPS / 2, STEPS, parts);
    for (int s = 0; s < STEPS; s++)
        ck_assert_msg(parts[s] == whole[s], "step %d: resumed loss %.17g, uninterrupted %.17g", s,
                      parts[s], whole[s]);
    mpt_trainer_free(a);
    mpt_trainer_free(c);
    close_run(&r);
}

START_TEST(resume_equals_uninterrupted_sgd) { resume_equals_uninterrupted(MPT_OPTIM_SGD); }
END_TEST
START_TEST(resume_equals_uninterrupted_adamw) { resume_equals_uninterrupted(MPT_OPTIM_ADAMW); }
END_TEST

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

START_TEST(bad_checkpoints_are_refused)
{
    run r;
    double losses[STEPS], loss_before, acc_before, loss_after, acc_after;
    char good[128], bad[128], cmd[512];
    open_run(&r, MPT_OPTIM_ADAMW);
    mpt_trainer_t *t = trainer(&r);
    train(t, 0, 3, losses);
    snprintf(good, sizeof good, "%s/good.safetensors", dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
    ck_assert_mpt_ok(mpt_trainer_save(t, good, NULL));
    mpt_trainer_t *u = trainer(&r);
    ck_assert_mpt_ok(mpt_trainer_evaluate(u, xs[0], ys[0], BATCH, &loss_before, &acc_before));

    /* One flipped byte in the last tensor's data: only the checksum sees it. */
    long n = file_size(good);
    snprintf(cmd, sizeof cmd,
             "cp %s %s && printf '\\377' | dd of=%s bs=1 seek=%ld conv=notrunc status=none", good,
             bad, bad, n - 3);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_mpt_fails(mpt_trainer_load(u, bad, NULL), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "checksum"));
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "bad.safetensors"));

    /* Truncated. */
    snprintf(cmd, sizeof cmd, "head -c %ld %s > %s", n / 2, good, bad);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_mpt_fails(mpt_trainer_load(u, bad, NULL), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "bad.safetensors"));

    /* Not there. */
    ck_assert_mpt_fails(mpt_trainer_load(u, "/nonexistent/ckpt.safetensors", NULL),
                        MPT_ERR_NOT_FOUND);

    /* The trainer is untouched by the failures. */
    ck_assert_mpt_ok(mpt_trainer_evaluate(u, xs[0], ys[0], BATCH, &loss_after, &acc_after));
    ck_assert(loss_after == loss_before && acc_after == acc_before);
    ck_assert_uint_eq(mpt_trainer_steps(u), 0);
    mpt_trainer_free(u);

    /* Another seed, another optimizer, another model. */
    r.cfg.seed = 8;
    u = trainer(&r);
    ck_assert_mpt_fails(mpt_trainer_load(u, good, NULL), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "seed"));
    mpt_trainer_free(u);
    r.cfg.seed = 7;
    r.cfg.optimizer = MPT_OPTIM_SGD;
    u = trainer(&r);
    ck_assert_mpt_fails(mpt_trainer_load(u, good, NULL), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "optimizer"));
    mpt_trainer_free(u);
    mpt_model_t *other = NULL;
    ck_assert_mpt_ok(mpt_model_load(test_path("../models/mlp-fashion.json"), &other));
    r.cfg.optimizer = MPT_OPTIM_ADAMW;
    mpt_trainer_t *w = NULL;
    ck_assert_mpt_ok(mpt_trainer_create(other, mpt_devices_get(r.set, 0), &r.cfg, &w));
    ck_assert_mpt_fails(mpt_trainer_load(w, good, NULL), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "another model"));
    mpt_trainer_free(w);
    mpt_model_free(other);
    mpt_trainer_free(t);
    close_run(&r);
}
END_TEST

START_TEST(evaluation_counts_correct_predictions)
{
    run r;
    double loss, acc;
    open_run(&r, MPT_OPTIM_SGD);
    mpt_trainer_t *t = trainer(&r);
    /* 20 samples: two full batches of 8 and a partial one of 4. */
    float x[20 * IN];
    int32_t y[20];
    memcpy(x, xs[0], sizeof xs[0]);
    memcpy(x + BATCH * IN, xs[1], sizeof xs[1]);
    memcpy(x + 2 * BATCH * IN, xs[2], 4 * IN * sizeof(float));
    memcpy(y, ys[0], sizeof ys[0]);
    memcpy(y + BATCH, ys[1], sizeof ys[1]);
    memcpy(y + 2 * BATCH, ys[2], 4 * sizeof(int32_t));
    ck_assert_mpt_ok(mpt_trainer_evaluate(t, x, y, 20, &loss, &acc));
    /* An accuracy is a count over 20. */
    ck_assert(acc >= 0 && acc <= 1 && fabs(acc * 20 - round(acc * 20)) < 1e-9);
    /* An untrained 4-class model's loss is near ln 4 = 1.386. */
    ck_assert_msg(loss > 0.9 && loss < 2.0, "loss %g", loss);
    ck_assert_mpt_fails(mpt_trainer_evaluate(t, x, y, 0, &loss, &acc), MPT_ERR_INVALID);
    mpt_trainer_free(t);
    close_run(&r);
}
END_TEST

START_TEST(lr_schedule)
{
    mpt_train_config_t c;
    mpt_train_config_default(&c);
    ck_assert(mpt_train_lr_at(&c, 12345) == c.lr);
    c.schedule = MPT_SCHEDULE_COSINE, c.lr = 1.0, c.min_lr = 0.1, c.warmup_steps = 4,
    c.total_steps = 14;
    ck_assert(fabs(mpt_train_lr_at(&c, 0) - 0.25) < 1e-12);  /* warm-up: (0+1)/4 */
    ck_assert(fabs(mpt_train_lr_at(&c, 3) - 1.0) < 1e-12);
    ck_assert(fabs(mpt_train_lr_at(&c, 4) - 1.0) < 1e-12);   /* cosine starts at the peak */
    ck_assert(fabs(mpt_train_lr_at(&c, 9) - 0.55) < 1e-12);  /* halfway: (1 + 0.1) / 2 */
    ck_assert(fabs(mpt_train_lr_at(&c, 14) - 0.1) < 1e-12);
    ck_assert(fabs(mpt_train_lr_at(&c, 99) - 0.1) < 1e-12);
}
END_TEST

/* ---- the embedding API ------------------------------------------------------- */

/* A model from text equals the file's; mpt_model_to_json gives text that
 * loads back; the builder's model is the JSON one's, and its errors name
 * "model builder: layers[i] (kind)" as a file's name the file. */
START_TEST(models_from_text_and_builder)
{
    mpt_model_t *file = NULL, *text = NULL, *again = NULL, *built = NULL, *bad = NULL;
    char *json = NULL, *buf = NULL;
    FILE *f = fopen(test_path("../models/mlp-fashion.json"), "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(buf = calloc(1, 1 << 16));
    ck_assert_uint_gt(fread(buf, 1, (1 << 16) - 1, f), 0);
    fclose(f);
    ck_assert_mpt_ok(mpt_model_load(test_path("../models/mlp-fashion.json"), &file));
    ck_assert_mpt_ok(mpt_model_from_json(buf, &text));
    ck_assert_uint_eq(mpt_model_param_count(text), mpt_model_param_count(file));
    ck_assert_str_eq(mpt_model_name(text), mpt_model_name(file));
    ck_assert_mpt_ok(mpt_model_to_json(text, &json));
    ck_assert_mpt_ok(mpt_model_from_json(json, &again));
    ck_assert_uint_eq(mpt_model_param_count(again), mpt_model_param_count(file));
    free(json);
    ck_assert_mpt_fails(mpt_model_from_json("{\"input\": [4],", &bad), MPT_ERR_PARSE);
    ck_assert_msg(strstr(mpt_last_error(), "model text:1:"), "%s", mpt_last_error());
    ck_assert_ptr_null(bad);

    /* A small CNN: 2 x 9 + 2 conv parameters, 32 x 3 + 3 linear ones. */
    mpt_model_builder_t *b = NULL;
    const size_t in[] = {1, 8, 8};
    ck_assert_mpt_ok(mpt_model_builder_new("cnn-built", 3, in, &b));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "conv2d", "channels=2 kernel=3, padding=1"));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "relu", NULL));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "maxpool2d", "kernel=2"));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "flatten", ""));
    /* Refused items leave the builder as it was. */
    ck_assert_mpt_fails(mpt_model_builder_add(b, "linear", "units"), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "layers[4] (linear): attribute \"units\" is not "
                         "key=number"), "%s", mpt_last_error());
    ck_assert_mpt_fails(mpt_model_builder_add(b, "linear", "units=3 units=4"), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "given twice"), "%s", mpt_last_error());
    ck_assert_mpt_fails(mpt_model_builder_add(b, "linear", "units=three"), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt_model_builder_add(b, NULL, NULL), MPT_ERR_INVALID);
    ck_assert_mpt_ok(mpt_model_builder_add(b, "linear", "units=3"));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "dropout", "p=0.25"));
    /* No loss yet: the parser's own message. */
    ck_assert_mpt_fails(mpt_model_builder_build(b, &bad), MPT_ERR_PARSE);
    ck_assert_msg(strstr(mpt_last_error(), "model builder: layers[5] (dropout)") &&
                      strstr(mpt_last_error(), "must be a loss"), "%s", mpt_last_error());
    ck_assert_mpt_ok(mpt_model_builder_add(b, "softmax_cross_entropy", NULL));
    ck_assert_mpt_ok(mpt_model_builder_build(b, &built));
    ck_assert_uint_eq(mpt_model_param_count(built), 2 * 9 + 2 + 32 * 3 + 3);
    ck_assert_uint_eq(mpt_model_input_floats(built), 64);
    ck_assert_int_eq(mpt_model_classes(built), 3);
    ck_assert_str_eq(mpt_model_name(built), "cnn-built");
    ck_assert_mpt_ok(mpt_model_to_json(built, &json));
    ck_assert_msg(strstr(json, "\"p\": 0.25") || strstr(json, "\"p\":0.25"), "%s", json);
    ck_assert_msg(strstr(json, "\"kernel\":3") || strstr(json, "\"kernel\": 3"), "%s", json);
    free(json);
    mpt_model_builder_free(b);

    /* A typo reaches the parser, which names it. */
    const size_t flat[] = {4};
    ck_assert_mpt_ok(mpt_model_builder_new(NULL, 1, flat, &b));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "linear", "unit=3"));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "softmax_cross_entropy", NULL));
    ck_assert_mpt_fails(mpt_model_builder_build(b, &bad), MPT_ERR_PARSE);
    ck_assert_msg(strstr(mpt_last_error(), "model builder: layers[0] (linear): unknown attribute "
                         "\"unit\""), "%s", mpt_last_error());
    mpt_model_builder_free(b);
    ck_assert_mpt_fails(mpt_model_builder_new(NULL, 0, flat, &b), MPT_ERR_INVALID);
    ck_assert_ptr_null(b);

    mpt_model_free(file);
    mpt_model_free(text);
    mpt_model_free(again);
    mpt_model_free(built);
    free(buf);
}
END_TEST

/* The library's defaults are mpt-train's: SGD at 0.05 (AdamW at 1e-3 via
 * mpt_train_config_use_optimizer), momentum 0.9, seed 1, batch 128 in both
 * the configuration and the plan request, the cosine schedule, which
 * decays once total_steps is set and keeps lr until then; a trainer
 * accepts the default configuration as it is. */
START_TEST(defaults_match_the_cli)
{
    mpt_train_config_t c;
    mpt_plan_request_t req;
    mpt_train_config_default(&c);
    mpt_plan_request_default(&req);
    ck_assert_int_eq(c.schedule, MPT_SCHEDULE_COSINE);
    ck_assert_int_eq(c.optimizer, MPT_OPTIM_SGD);
    ck_assert(c.lr == 0.05 && c.momentum == 0.9 && c.seed == 1 && c.batch == 128);
    ck_assert_uint_eq(req.batch, c.batch);
    ck_assert(mpt_train_lr_at(&c, 0) == c.lr && mpt_train_lr_at(&c, 1000000) == c.lr);
    c.total_steps = 100;
    ck_assert(fabs(mpt_train_lr_at(&c, 50) - 0.025) < 1e-12); /* half way: lr / 2 */
    ck_assert(mpt_train_lr_at(&c, 100) == 0);
    mpt_train_config_use_optimizer(&c, MPT_OPTIM_ADAMW);
    ck_assert(c.optimizer == MPT_OPTIM_ADAMW && c.lr == 1e-3);
    mpt_train_config_use_optimizer(&c, MPT_OPTIM_SGD);
    ck_assert(c.optimizer == MPT_OPTIM_SGD && c.lr == 0.05);

    mpt_model_t *m = NULL;
    mpt_devices_t *set = NULL;
    mpt_trainer_t *t = NULL;
    make_dir();
    ck_assert_mpt_ok(mpt_model_load(write_file("tiny.json", tiny_model), &m));
    ck_assert_mpt_ok(mpt_devices_open("0", &set));
    mpt_train_config_default(&c);
    c.batch = BATCH;
    ck_assert_mpt_ok(mpt_trainer_create(m, mpt_devices_get(set, 0), &c, &t));
    mpt_trainer_free(t);
    mpt_devices_free(set);
    mpt_model_free(m);
    remove_dir();
}
END_TEST

/* One batch size: a planned trainer refuses a plan made for another batch,
 * naming both, and takes the plan's own.  The cluster is this machine's
 * (mpt_cluster_local: profiles measured once into the test cache, then
 * read back the same), so this is also the local cluster's test. */
START_TEST(planned_batch_must_match)
{
    mpt_model_t *m = NULL;
    mpt_devices_t *set = NULL;
    mpt_cluster_t *cluster = NULL, *again = NULL;
    mpt_plan_t *plan = NULL;
    mpt_trainer_t *t = (mpt_trainer_t *)&t;
    mpt_train_config_t c;
    mpt_plan_request_t req;
    make_dir();
    setenv("MPT_PROFILE_QUICK", "1", 1);
    ck_assert_mpt_ok(mpt_model_load(write_file("tiny.json", tiny_model), &m));
    ck_assert_mpt_ok(mpt_devices_open(NULL, &set));
    ck_assert_mpt_ok(mpt_cluster_local(set, NULL, &cluster));
    ck_assert_uint_eq(mpt_cluster_device_count(cluster), mpt_devices_count(set));
    ck_assert_mpt_ok(mpt_cluster_local(set, NULL, &again));
    for (size_t i = 0; i < mpt_devices_count(set); i++) {
        const mpt_cluster_device_t *d = mpt_cluster_device(cluster, i);
        ck_assert_str_eq(d->info.name, mpt_device_info(mpt_devices_get(set, i))->name);
        ck_assert_msg(d->profile.gemm_gflops > 0 && d->profile.mem_gbps > 0,
                      "device %zu: no profile (%g GFLOP/s)", i, d->profile.gemm_gflops);
        ck_assert(d->profile.gemm_gflops == mpt_cluster_device(again, i)->profile.gemm_gflops);
    }
    /* The plan on device 0 alone: the tiny model's dropout runs unsplit. */
    mpt_cluster_free(again);
    mpt_devices_free(set);
    mpt_cluster_free(cluster);
    ck_assert_mpt_ok(mpt_devices_open("0", &set));
    ck_assert_mpt_ok(mpt_cluster_local(set, NULL, &cluster));
    again = NULL;
    mpt_plan_request_default(&req);
    req.batch = 2 * BATCH;
    ck_assert_mpt_ok(mpt_plan_create(m, cluster, &req, &plan));
    mpt_train_config_default(&c);
    c.batch = BATCH;
    ck_assert_mpt_fails(mpt_trainer_create_planned(m, set, plan, &c, NULL, cluster, &t),
                        MPT_ERR_INVALID);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(mpt_last_error(), "batch 16") && strstr(mpt_last_error(), "is 8"),
                  "%s", mpt_last_error());
    c.batch = req.batch;
    ck_assert_mpt_ok(mpt_trainer_create_planned(m, set, plan, &c, NULL, cluster, &t));
    mpt_trainer_free(t);
    mpt_plan_free(plan);
    mpt_cluster_free(cluster);
    mpt_cluster_free(again);
    mpt_devices_free(set);
    mpt_model_free(m);
    unsetenv("MPT_PROFILE_QUICK");
    remove_dir();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, model_errors_name_the_layer);
    tcase_add_test(tc, shipped_models_load);
    tcase_add_test(tc, lr_schedule);
    tcase_add_test(tc, resume_equals_uninterrupted_sgd);
    tcase_add_test(tc, resume_equals_uninterrupted_adamw);
    tcase_add_test(tc, bad_checkpoints_are_refused);
    tcase_add_test(tc, evaluation_counts_correct_predictions);
    suite_add_tcase(s, tc);
    TCase *api = tcase_create("api");
    tcase_set_timeout(api, 600);
    tcase_add_test(api, models_from_text_and_builder);
    tcase_add_test(api, defaults_match_the_cli);
    tcase_add_test(api, planned_batch_must_match);
    suite_add_tcase(s, api);
    return test_run(s, 0);
}
