/*
 * tests/check_parity.c: mpt against PyTorch, as llm.c's test does.  The
 * fixtures tests/fixtures/torch/<model>.safetensors were written by
 * tests/torch_reference.py from the same model JSON: given weights, inputs
 * and labels, PyTorch's logits, loss, every parameter gradient, and the
 * losses of 5 SGD and 5 AdamW steps (10 each for the tiny GPT: 2 blocks of
 * 2 heads, 32 wide, context 16, vocabulary 64, head tied to the token
 * embedding), computed in float64.
 *
 * Tolerances, all |got - want| <= abs + rel |want|, against a float64
 * reference of the same float32 inputs:
 * - logits, loss: abs 2e-5, rel 1e-4.  Each logit is a chain of a few
 *   fp32 dot products of <= 200 terms of magnitude ~1: accumulated rounding
 *   stays below ~200 * 2^-24 ~ 1.2e-5 relative per layer.
 * - gradients: abs 5e-5, rel 1e-3.  Gradients are differences of such
 *   quantities (softmax - onehot, layer-norm centring) and lose relative
 *   precision where they are small; the absolute term covers those.
 * - training losses: abs 1e-4, rel 1e-3 after 5 steps, as each step adds
 *   the update's rounding (lr * gradient error) to the parameters.
 */
#define _POSIX_C_SOURCE 200809L /* setenv, in testutil.h */
#include <stdio.h>
#include <string.h>

#include "core/safetensors.h"
#include "whole_model.h"
#include "reference.h"
#include "testutil.h"

typedef struct {
    mpt__model_t *model;
    mpt__st_file_t *fx;
    mpt_devices_t *set;
    float *params; /* flat, from the fixture */
} fixture;

static const float *tensor(const fixture *f, const char *name, size_t floats)
{
    const mpt__st_tensor_t *t = mpt__st_get(f->fx, name);
    ck_assert_msg(t != NULL, "fixture lacks %s", name);
    ck_assert_uint_eq(t->bytes, floats * sizeof(float));
    return t->data;
}

static void open_fixture(fixture *f, const char *stem)
{
    char path[256];
    memset(f, 0, sizeof *f);
    snprintf(path, sizeof path, "fixtures/torch/%s.json", stem);
    ck_assert_mpt_ok(mpt__model_load(test_path(path), &f->model));
    snprintf(path, sizeof path, "fixtures/torch/%s.safetensors", stem);
    ck_assert_mpt_ok(mpt__st_read(test_path(path), &f->fx));
    ck_assert_mpt_ok(mpt_devices_open("0", &f->set));
    /* The warm-up compiles CLBlast's programs with a 512^3 GEMM; a simulator
     * (MPT_TEST_SMALL) takes many minutes over it, and one device has no
     * concurrent first GEMMs for it to keep apart. */
    if (!test_small())
        ck_assert_mpt_ok(mpt__device_blas_warmup(mpt_devices_get(f->set, 0)));
    f->params = malloc(f->model->param_floats * sizeof(float));
    for (size_t i = 0; i < f->model->nlayers; i++)
        for (int q = 0; q < f->model->layers[i].nparams; q++) {
            const mpt__param_t *p = &f->model->layers[i].params[q];
            char name[64];
            snprintf(name, sizeof name, "param.%zu.%s", i, p->name);
            memcpy(f->params + p->offset, tensor(f, name, p->numel), p->numel * sizeof(float));
        }
}

static void close_fixture(fixture *f)
{
    free(f->params);
    mpt_devices_free(f->set);
    mpt__st_free(f->fx);
    mpt__model_free(f->model);
}

static size_t batch_of(const fixture *f)
{
    return mpt__st_get(f->fx, "labels")->shape[0];
}

static mpt__executor_t *executor(const fixture *f)
{
    mpt__executor_t *ex = NULL;
    ck_assert_mpt_ok(mpt__executor_create(f->model, mpt_devices_get(f->set, 0), batch_of(f), 0,
                                          &ex));
    ck_assert_mpt_ok(mpt__executor_write_params(ex, f->params));
    return ex;
}

static void check_forward_backward(const char *stem)
{
    fixture f;
    open_fixture(&f, stem);
    /* A language model has a row of logits and a label per position. */
    size_t batch = batch_of(&f), classes = (size_t)f.model->classes * f.model->labels_per_sample;
    const float *x = tensor(&f, "input", batch * mpt__shape_numel(&f.model->input));
    const int32_t *y = mpt__st_get(f.fx, "labels")->data;
    float *logits = malloc(batch * classes * sizeof(float));
    float *grads = malloc(f.model->param_floats * sizeof(float));
    double loss = 0;
    mpt__executor_t *ex = executor(&f);
    ck_assert_mpt_ok(whole_gradients(ex, x, y, batch, &loss, logits, grads));
    ck_assert_close_f(logits, tensor(&f, "logits", batch * classes), batch * classes, 2e-5, 1e-4,
                      "logits");
    float got_loss = (float)loss;
    ck_assert_close_f(&got_loss, tensor(&f, "loss", 1), 1, 2e-5, 1e-4, "loss");
    for (size_t i = 0; i < f.model->nlayers; i++)
        for (int q = 0; q < f.model->layers[i].nparams; q++) {
            const mpt__param_t *p = &f.model->layers[i].params[q];
            char name[64];
            snprintf(name, sizeof name, "grad.%zu.%s", i, p->name);
            ck_assert_close_f(grads + p->offset, tensor(&f, name, p->numel), p->numel, 5e-5, 1e-3,
                              name);
        }
    mpt__executor_free(ex);
    free(logits);
    free(grads);
    close_fixture(&f);
}

/* The fixture's steps (5; 10 for a language model) with the optimizer
 * settings of tests/torch_reference.py. */
static void check_training(const char *stem, mpt_optimizer_t kind)
{
    fixture f;
    open_fixture(&f, stem);
    size_t batch = batch_of(&f);
    const float *x = tensor(&f, "input", batch * mpt__shape_numel(&f.model->input));
    const int32_t *y = mpt__st_get(f.fx, "labels")->data;
    mpt__optim_cfg_t sgd = {MPT_OPTIM_SGD, 0.9f, 0.01f, 0, 0, 0, 0, 0};
    mpt__optim_cfg_t adamw = {MPT_OPTIM_ADAMW, 0, 0.01f, 0.9f, 0.999f, 1e-8f, 0, 0};
    const mpt__optim_cfg_t *opt = kind == MPT_OPTIM_SGD ? &sgd : &adamw;
    const char *which = kind == MPT_OPTIM_SGD ? "sgd_losses" : "adamw_losses";
    /* MPT_TEST_SMALL: the first 2 steps (a simulator takes tens of seconds
     * a CNN step); they run every kernel the later ones do, the momentum's
     * first step and a later one included. */
    size_t all = mpt__st_get(f.fx, which)->shape[0], steps = test_small() && all > 2 ? 2 : all;
    const float *want = tensor(&f, which, all);
    float lr = kind == MPT_OPTIM_SGD ? 0.1f : 0.01f, got[16];
    ck_assert_uint_le(steps, 16);
    mpt__executor_t *ex = executor(&f);
    for (size_t s = 0; s < steps; s++) {
        double loss, norm;
        ck_assert_mpt_ok(whole_train_step(ex, x, y, batch, opt, lr, &loss, &norm));
        got[s] = (float)loss;
    }
    ck_assert_close_f(got, want, steps, 1e-4, 1e-3, which);
    mpt__executor_free(ex);
    close_fixture(&f);
}

START_TEST(mlp_forward_backward) { check_forward_backward("mlp-tiny"); }
END_TEST
START_TEST(cnn_forward_backward) { check_forward_backward("cnn-tiny"); }
END_TEST
START_TEST(mlp_sgd) { check_training("mlp-tiny", MPT_OPTIM_SGD); }
END_TEST
START_TEST(mlp_adamw) { check_training("mlp-tiny", MPT_OPTIM_ADAMW); }
END_TEST
START_TEST(cnn_sgd) { check_training("cnn-tiny", MPT_OPTIM_SGD); }
END_TEST
START_TEST(cnn_adamw) { check_training("cnn-tiny", MPT_OPTIM_ADAMW); }
END_TEST
START_TEST(gpt_forward_backward) { check_forward_backward("gpt-tiny"); }
END_TEST
START_TEST(gpt_sgd) { check_training("gpt-tiny", MPT_OPTIM_SGD); }
END_TEST
START_TEST(gpt_adamw) { check_training("gpt-tiny", MPT_OPTIM_ADAMW); }
END_TEST

int main(void)
{
    Suite *s = suite_create("parity");
    TCase *tc = tcase_create("pytorch");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, mlp_forward_backward);
    tcase_add_test(tc, cnn_forward_backward);
    tcase_add_test(tc, mlp_sgd);
    tcase_add_test(tc, mlp_adamw);
    tcase_add_test(tc, cnn_sgd);
    tcase_add_test(tc, cnn_adamw);
    suite_add_tcase(s, tc);
    /* The GPT in two cases, so that make check-kernels can run its forward
     * and backward (every transformer kernel) without its training steps
     * (minutes each under the simulator; their optimizer kernels run in the
     * cases above). */
    tc = tcase_create("gpt");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, gpt_forward_backward);
    suite_add_tcase(s, tc);
    tc = tcase_create("gpt_training");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, gpt_sgd);
    tcase_add_test(tc, gpt_adamw);
    suite_add_tcase(s, tc);
    return test_run(s, 0);
}
