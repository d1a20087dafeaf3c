/*
 * tests/check_fit.c: the data source (mpt_data_t) and the training loop
 * every program shares (mpt_trainer_fit): batches and positions against
 * the loader and the token windows they stand for, the evaluation set,
 * errors that name what is wrong; a fitted run's callbacks, metrics and
 * epochs; a run stopped at a checkpoint and resumed equals an
 * uninterrupted one bit for bit.
 * Runs without fork (OpenCL).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "testutil.h"

enum { COUNT = 100, IN = 6, CLASSES = 3, BATCH = 8, SEED = 5 };

static const char *mlp =
    "{\"name\": \"fit\", \"input\": [6], \"layers\": [{\"kind\": \"linear\", \"units\": 8}, "
    "{\"kind\": \"relu\"}, {\"kind\": \"dropout\", \"p\": 0.1}, "
    "{\"kind\": \"linear\", \"units\": 3}, {\"kind\": \"softmax_cross_entropy\"}]}";

static float xs[COUNT * IN];
static int32_t ys[COUNT];

/* Two datasets of the same samples, owned by the caller until handed over. */
static void make_sets(mpt_dataset_t **train, mpt_dataset_t **eval)
{
    mpt__rng_uniform(3, 0, 0, 1.0f, xs, COUNT * IN); /* in [-1, 1) */
    for (int i = 0; i < COUNT; i++)
        ys[i] = (xs[i * IN] > 0.3f) + (xs[i * IN] > -0.3f); /* learnable: 3 bands of x0 */
    ck_assert_mpt_ok(mpt_dataset_from_memory(COUNT, IN, CLASSES, xs, ys, train));
    ck_assert_mpt_ok(mpt_dataset_from_memory(COUNT, IN, CLASSES, xs, ys, eval));
}

/* Batches and positions of a classifier's data are the loader's, over
 * epochs and after a seek; the evaluation set is the eval dataset. */
START_TEST(data_from_datasets_is_the_loader)
{
    mpt_model_t *m = NULL;
    mpt_dataset_t *train, *eval, *ref;
    mpt_data_t *d = NULL;
    mpt_loader_t *l = NULL;
    ck_assert_mpt_ok(mpt_model_from_json(mlp, &m));
    make_sets(&train, &eval);
    ck_assert_mpt_ok(mpt_dataset_from_memory(COUNT, IN, CLASSES, xs, ys, &ref));
    ck_assert_mpt_ok(mpt_data_from_datasets(train, eval, m, BATCH, SEED, &d));
    ck_assert_mpt_ok(mpt_loader_create(ref, BATCH, SEED, &l));
    ck_assert_uint_eq(mpt_data_batches_per_epoch(d), COUNT / BATCH);
    ck_assert_uint_eq(mpt_data_batch(d), BATCH);
    for (uint64_t step = 0; step < 3 * (COUNT / BATCH); step++) {
        const float *x, *rx;
        const int32_t *y, *ry;
        mpt_data_position_t at;
        uint64_t epoch;
        size_t bi;
        ck_assert_mpt_ok(mpt_data_next(d, step, &x, &y, &at));
        ck_assert_mpt_ok(mpt_loader_next(l, &rx, &ry, &epoch, &bi));
        ck_assert_uint_eq(at.epoch, epoch);
        ck_assert_uint_eq(at.batch_index, bi);
        ck_assert_uint_eq(at.epoch, step / (COUNT / BATCH));
        ck_assert_mem_eq(x, rx, sizeof(float) * BATCH * IN);
        ck_assert_mem_eq(y, ry, sizeof(int32_t) * BATCH);
    }
    mpt_data_position_t pos = {1, 7};
    const float *x, *rx;
    const int32_t *y, *ry;
    ck_assert_mpt_ok(mpt_data_seek(d, &pos));
    ck_assert_mpt_ok(mpt_loader_seek(l, 1, 7));
    ck_assert_mpt_ok(mpt_data_next(d, 19, &x, &y, &pos));
    ck_assert_mpt_ok(mpt_loader_next(l, &rx, &ry, NULL, NULL));
    ck_assert_mem_eq(x, rx, sizeof(float) * BATCH * IN);
    ck_assert_uint_eq(pos.epoch, 1);
    ck_assert_uint_eq(pos.batch_index, 7);
    pos.batch_index = COUNT / BATCH;
    ck_assert_mpt_fails(mpt_data_seek(d, &pos), MPT_ERR_RANGE);

    size_t n;
    const char *name;
    mpt_data_eval_set(d, &x, &y, &n, &name);
    ck_assert_uint_eq(n, COUNT);
    ck_assert_str_eq(name, "test");
    ck_assert_mem_eq(x, xs, sizeof xs);
    ck_assert_mem_eq(y, ys, sizeof ys);
    mpt_data_free(d);
    mpt_loader_free(l);
    mpt_dataset_free(ref);

    /* Samples that are not the model's inputs; a language model's data
     * asked of images.  The sets are the source's (freed) either way. */
    mpt_dataset_t *wide;
    float *big = calloc(COUNT * (IN + 1), sizeof *big);
    ck_assert_mpt_ok(mpt_dataset_from_memory(COUNT, IN + 1, CLASSES, big, ys, &wide));
    make_sets(&train, &eval);
    mpt_dataset_free(train);
    ck_assert_mpt_fails(mpt_data_from_datasets(wide, eval, m, BATCH, SEED, &d), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "takes 6 inputs per sample, the training set has 7"),
                  "%s", mpt_last_error());
    free(big);
    mpt_model_free(m);
}
END_TEST

/* A language model's batches are windows of the first 90% of the tokens
 * with their next tokens as labels; its evaluation set is consecutive
 * windows of the last 10%; the same step gives the same batch. */
START_TEST(data_from_tokens_are_windows)
{
    enum { N = 4000, VOCAB = 50, CTX = 8, B = 4 };
    char json[512];
    snprintf(json, sizeof json,
             "{\"name\": \"lm\", \"input\": [%d], \"layers\": [{\"kind\": \"embedding\", "
             "\"vocab\": %d, \"dim\": 8}, {\"kind\": \"layernorm\"}, {\"kind\": \"lm_head\"}, "
             "{\"kind\": \"softmax_cross_entropy\"}]}",
             CTX, VOCAB);
    mpt_model_t *m = NULL;
    ck_assert_mpt_ok(mpt_model_from_json(json, &m));
    ck_assert_uint_eq(mpt_model_labels_per_sample(m), CTX);
    int32_t *ids = malloc(sizeof *ids * N);
    for (int i = 0; i < N; i++)
        ids[i] = (i * 7 + i / 13) % VOCAB;
    mpt_tokens_t *tokens = NULL;
    mpt_data_t *d = NULL;
    ck_assert_mpt_ok(mpt_tokens_from_memory(ids, N, VOCAB, &tokens));
    ck_assert_mpt_ok(mpt_data_from_tokens(tokens, m, B, SEED, &d));
    size_t train_n = N - (size_t)(N * 0.1); /* the split's training part */
    ck_assert_uint_eq(mpt_data_batches_per_epoch(d), train_n / (B * CTX));
    float first[B * CTX];
    for (uint64_t step = 0; step < 5; step++) {
        const float *x;
        const int32_t *y;
        mpt_data_position_t at;
        ck_assert_mpt_ok(mpt_data_next(d, step, &x, &y, &at));
        ck_assert_uint_eq(at.batch_index, step % mpt_data_batches_per_epoch(d));
        if (step == 0)
            memcpy(first, x, sizeof first);
        for (int w = 0; w < B; w++) {
            /* find the window's start in the training part: ids are a
             * known sequence, so check continuity and the labels */
            for (int j = 0; j < CTX; j++) {
                int32_t tok = (int32_t)x[w * CTX + j];
                ck_assert(tok >= 0 && tok < VOCAB);
                if (j + 1 < CTX)
                    ck_assert_int_eq(y[w * CTX + j], (int32_t)x[w * CTX + j + 1]);
            }
        }
    }
    const float *x;
    const int32_t *y;
    ck_assert_mpt_ok(mpt_data_next(d, 0, &x, &y, NULL)); /* by step: again the first */
    ck_assert_mem_eq(x, first, sizeof first);
    size_t n;
    const char *name;
    mpt_data_eval_set(d, &x, &y, &n, &name);
    ck_assert_str_eq(name, "val");
    ck_assert_uint_eq(n, ((size_t)(N * 0.1) - 1) / CTX < 64 ? ((size_t)(N * 0.1) - 1) / CTX : 64);
    for (size_t j = 0; j < n * CTX; j++) { /* consecutive: the validation part in order */
        ck_assert_int_eq((int32_t)x[j], ids[train_n + j]);
        ck_assert_int_eq(y[j], ids[train_n + j + 1]);
    }
    mpt_data_free(d);

    /* A classifier's data asked of tokens: refused, the tokens freed. */
    mpt_model_t *clf = NULL;
    ck_assert_mpt_ok(mpt_model_from_json(mlp, &clf));
    ck_assert_mpt_ok(mpt_tokens_from_memory(ids, N, VOCAB, &tokens));
    ck_assert_mpt_fails(mpt_data_from_tokens(tokens, clf, B, SEED, &d), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "is a classifier"), "%s", mpt_last_error());
    /* Too few tokens for a window in each part. */
    ck_assert_mpt_ok(mpt_tokens_from_memory(ids, 40, VOCAB, &tokens));
    ck_assert_mpt_fails(mpt_data_from_tokens(tokens, m, B, SEED, &d), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "too few"), "%s", mpt_last_error());
    free(ids);
    mpt_model_free(clf);
    mpt_model_free(m);
}
END_TEST

/* ---- the loop ------------------------------------------------------------- */

typedef struct {
    int epochs, steps, partial;
    uint64_t last_step;
    double eval_loss;
} seen;

static void on_step(void *ctx, const mpt_step_report_t *r, uint64_t epoch,
                    const mpt_device_step_t *devices, size_t n)
{
    seen *s = ctx;
    ck_assert_uint_eq(r->step, s->last_step + 1); /* every step, in order */
    ck_assert(epoch >= 1 && n == 1 && devices[0].device == 0);
    s->last_step = r->step, s->steps++;
}

static void on_epoch(void *ctx, const mpt_epoch_summary_t *e)
{
    seen *s = ctx;
    s->epochs++;
    s->partial += e->partial;
    s->eval_loss = e->eval_loss;
    ck_assert_str_eq(e->eval_name, "test");
    ck_assert(isfinite(e->train_loss) && e->samples_per_s > 0 && e->eval_accuracy >= 0);
}

static mpt_trainer_t *new_trainer(const mpt_model_t *m, mpt_devices_t *set, uint64_t total)
{
    mpt_train_config_t cfg;
    mpt_trainer_t *t = NULL;
    mpt_train_config_default(&cfg);
    cfg.batch = BATCH, cfg.seed = SEED, cfg.lr = 0.1, cfg.total_steps = total;
    ck_assert_mpt_ok(mpt_trainer_create(m, mpt_devices_get(set, 0), &cfg, &t));
    return t;
}

static mpt_data_t *new_data(const mpt_model_t *m)
{
    mpt_dataset_t *train, *eval;
    mpt_data_t *d = NULL;
    make_sets(&train, &eval);
    ck_assert_mpt_ok(mpt_data_from_datasets(train, eval, m, BATCH, SEED, &d));
    return d;
}

static int count_lines(const char *path, const char *needle)
{
    char line[4096];
    int n = 0;
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* Two and a half epochs: every step called back, three summaries (the
 * last partial), one metrics line per step and per evaluation; stopped at
 * a checkpoint and resumed, the same parameters bit for bit (the same
 * evaluation loss) and the metrics of the steps after the checkpoint not
 * doubled. */
START_TEST(fit_resumes_bit_for_bit)
{
    char tmp[] = "/tmp/mpt-fit-XXXXXX", metrics[128], ckpt[128], cmd[160];
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", tmp);
    snprintf(ckpt, sizeof ckpt, "%s/c.safetensors", tmp);
    mpt_model_t *m = NULL;
    mpt_devices_t *set = NULL;
    ck_assert_mpt_ok(mpt_model_from_json(mlp, &m));
    ck_assert_mpt_ok(mpt_devices_open("0", &set));
    const uint64_t per_epoch = COUNT / BATCH, total = 2 * per_epoch + per_epoch / 2;

    /* uninterrupted */
    seen a = {0};
    mpt_fit_options_t o;
    mpt_fit_options_default(&o);
    ck_assert_uint_eq(o.epochs, 10);
    ck_assert_uint_eq(o.log_every, 1);
    o.steps = total, o.metrics = metrics, o.on_step = on_step, o.on_epoch = on_epoch,
    o.ctx = &a;
    mpt_data_t *d = new_data(m);
    ck_assert_uint_eq(mpt_fit_total_steps(&o, d), total);
    mpt_trainer_t *t = new_trainer(m, set, total);
    ck_assert_mpt_ok(mpt_trainer_fit(t, d, &o));
    ck_assert_int_eq(a.steps, (int)total);
    ck_assert_int_eq(a.epochs, 3);
    ck_assert_int_eq(a.partial, 1);
    ck_assert_int_eq(count_lines(metrics, "\"loss\""), (int)total);
    ck_assert_int_eq(count_lines(metrics, "test_loss"), 3);
    mpt_trainer_free(t);
    mpt_data_free(d);

    /* stopped after 13 steps (mid-epoch 2) with a checkpoint every 13 */
    seen b = {0};
    o.ctx = &b, o.steps = 13, o.checkpoint = ckpt, o.checkpoint_every = 13;
    d = new_data(m);
    t = new_trainer(m, set, total); /* the schedule of the whole run */
    ck_assert_mpt_ok(mpt_trainer_fit(t, d, &o));
    ck_assert_uint_eq(mpt_trainer_steps(t), 13);
    mpt_trainer_free(t);
    mpt_data_free(d);

    /* resumed to the end */
    seen c = {.last_step = 13};
    o.ctx = &c, o.steps = total, o.resume = 1, o.checkpoint_every = 0;
    d = new_data(m);
    t = new_trainer(m, set, total);
    ck_assert_mpt_ok(mpt_trainer_fit(t, d, &o));
    ck_assert_int_eq(c.steps, (int)(total - 13));
    ck_assert_msg(c.eval_loss == a.eval_loss, "resumed %.17g, uninterrupted %.17g", c.eval_loss,
                  a.eval_loss);
    ck_assert_int_eq(count_lines(metrics, "\"loss\""), (int)total); /* none doubled */
    mpt_trainer_free(t);
    mpt_data_free(d);

    /* bad use: another batch size, resume without a checkpoint */
    d = new_data(m);
    mpt_train_config_t cfg;
    mpt_train_config_default(&cfg);
    cfg.batch = BATCH * 2;
    ck_assert_mpt_ok(mpt_trainer_create(m, mpt_devices_get(set, 0), &cfg, &t));
    ck_assert_mpt_fails(mpt_trainer_fit(t, d, &o), MPT_ERR_INVALID);
    ck_assert_msg(strstr(mpt_last_error(), "hold 8 samples, the trainer's 16"), "%s",
                  mpt_last_error());
    mpt_trainer_free(t);
    t = new_trainer(m, set, total);
    o.checkpoint = NULL;
    ck_assert_mpt_fails(mpt_trainer_fit(t, d, &o), MPT_ERR_INVALID);
    mpt_trainer_free(t);
    mpt_data_free(d);

    mpt_devices_free(set);
    mpt_model_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fit");
    TCase *tc = tcase_create("fit");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, data_from_datasets_is_the_loader);
    tcase_add_test(tc, data_from_tokens_are_windows);
    tcase_add_test(tc, fit_resumes_bit_for_bit);
    suite_add_tcase(s, tc);
    return test_run(s, 0);
}
