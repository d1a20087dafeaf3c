/*
 * tests/check_nn.c: every layer kind, run by the executor on one PoCL
 * device, against a plain-C reference of the whole model in double:
 * - forward: logits and mean loss of a batch, for small models written in
 *   this file, each built for some layer kinds (linear, relu, gelu, silu,
 *   layernorm on flat and on image inputs, conv2d with and without stride
 *   and padding, maxpool2d with and without padding, flatten, dropout in
 *   training and in evaluation, softmax cross-entropy);
 * - backward: the device's gradient of EVERY parameter element against the
 *   central finite difference of the double reference loss.  A layer's
 *   input gradient is covered by the parameter gradients of the layers
 *   before it, so each kind appears at least once after a layer with
 *   parameters (conv2d after conv2d, layernorm before and after gelu,
 *   maxpool after conv2d, dropout after linear);
 * - determinism: two executors with one seed, fed the same data, agree
 *   bit for bit over three SGD steps (losses, gradient norms, parameters);
 * - the registry: every kind found by its name and listed once, with the
 *   descriptive members the planner and the engine read (launch counts,
 *   flags, a slice entry for a kind split inside) consistent; and no
 *   source file of lib/ outside lib/nn compares a kind's name (they read
 *   the kind's members instead).
 *
 * The reference reads the same mpt__model_t (shapes and attributes), so it
 * checks the kernels and the executor's plumbing (offsets, ping-pong
 * gradients, views, saved state), not the JSON reader.  Leaves out AdamW
 * and clipping arithmetic (check_ops and check_parity test those) and the
 * input gradient of a first layer (the executor never computes it).
 *
 * Runs without fork (OpenCL in a forked child hangs); each test opens and
 * frees device 0.
 *
 * Tolerances, all |got - want| <= abs + rel |want|:
 * - logits and loss: abs 1e-5, rel 1e-4.  Each logit is a chain of at most
 *   three layers of fp32 dot products of <= 54 terms of magnitude ~1, each
 *   off by <= L u ~ 54 * 6e-8 ~ 3e-6 relative; layer norm and GELU add a
 *   few ulp, as does SiLU (x / (1 + exp(-x)): OpenCL's exp is within 3
 *   ulp, the division 2.5); the double reference is exact by comparison.
 * - gradients: abs 1e-5, rel 1e-4.  The device gradient carries fp32
 *   rounding through a backward chain of sums of <= 108 terms (a conv
 *   weight gradient sums over batch x positions = 3 x 36), each off by
 *   <= L u ~ 108 * 6e-8 ~ 6.5e-6 relative at worst, and of differences
 *   (softmax - onehot, layer-norm centring) that lose relative precision
 *   where the result is small: the absolute term covers those, the relative
 *   one the rest.  The finite difference in double with h = 1e-6 has
 *   truncation error O(h^2 L''') ~ 1e-12 and cancellation error ~
 *   1e-16 |L| / h ~ 1e-10: negligible.  Measured on PoCL
 *   (CHECK_NN_VERBOSE=1 prints it): the worst error is below 2% of this
 *   tolerance, while a GELU derivative with one of its two terms off by
 *   0.1% fails it (abs 1e-4, rel 1e-3 let that through).
 * - kinks (relu at 0, maxpool switching its argmax): an element whose finite
 *   difference changes by more than 10% (+ 1e-6) between h and h/2 straddles
 *   one and is skipped; the inputs are continuous random draws, so this is
 *   rare, and at most MAX_KINKS per model is asserted.
 */
#define _POSIX_C_SOURCE 200809L /* setenv (testutil.h), dirent */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "whole_model.h"
#include "reference.h"
#include "testutil.h"

#define LOGIT_ABS 1e-5
#define LOGIT_REL 1e-4
#define GRAD_ABS 1e-5
#define GRAD_REL 1e-4
#define FD_H 1e-6
#define MAX_KINKS 3

/* ---- the models ---------------------------------------------------------- */

/* (a) linear + relu + linear */
static const char *MODEL_A =
    "{\"name\": \"a\", \"input\": [6], \"layers\": ["
    "{\"kind\": \"linear\", \"units\": 8}, {\"kind\": \"relu\"},"
    "{\"kind\": \"linear\", \"units\": 4}, {\"kind\": \"softmax_cross_entropy\"}]}";

/* (b) linear + gelu + layernorm + linear: gelu's input gradient reaches the
 * first linear's weight through layernorm's. */
static const char *MODEL_B =
    "{\"name\": \"b\", \"input\": [6], \"layers\": ["
    "{\"kind\": \"linear\", \"units\": 8}, {\"kind\": \"gelu\"},"
    "{\"kind\": \"layernorm\", \"eps\": 1e-5}, {\"kind\": \"linear\", \"units\": 4},"
    "{\"kind\": \"softmax_cross_entropy\"}]}";

/* (c) conv2d (stride 1, padding 1) + relu + maxpool2d (kernel 2) + flatten
 * + linear */
static const char *MODEL_C =
    "{\"name\": \"c\", \"input\": [2, 6, 6], \"layers\": ["
    "{\"kind\": \"conv2d\", \"channels\": 3, \"kernel\": 3, \"stride\": 1, \"padding\": 1},"
    "{\"kind\": \"relu\"}, {\"kind\": \"maxpool2d\", \"kernel\": 2},"
    "{\"kind\": \"flatten\"}, {\"kind\": \"linear\", \"units\": 4},"
    "{\"kind\": \"softmax_cross_entropy\"}]}";

/* (d) conv2d (stride 2, no padding) + maxpool2d (kernel 3, stride 1,
 * padding 1: border windows are part padding) + flatten + linear */
static const char *MODEL_D =
    "{\"name\": \"d\", \"input\": [2, 7, 7], \"layers\": ["
    "{\"kind\": \"conv2d\", \"channels\": 3, \"kernel\": 3, \"stride\": 2, \"padding\": 0},"
    "{\"kind\": \"maxpool2d\", \"kernel\": 3, \"stride\": 1, \"padding\": 1},"
    "{\"kind\": \"flatten\"}, {\"kind\": \"linear\", \"units\": 4},"
    "{\"kind\": \"softmax_cross_entropy\"}]}";

/* (e) linear + relu + dropout + linear: dropout is layer 2, so its stream
 * is step * 1024 + 2. */
static const char *MODEL_E =
    "{\"name\": \"e\", \"input\": [6], \"layers\": ["
    "{\"kind\": \"linear\", \"units\": 8}, {\"kind\": \"relu\"},"
    "{\"kind\": \"dropout\", \"p\": 0.3}, {\"kind\": \"linear\", \"units\": 4},"
    "{\"kind\": \"softmax_cross_entropy\"}]}";

/* (f) linear + layernorm + gelu + linear: the other order of (b). */
static const char *MODEL_F =
    "{\"name\": \"f\", \"input\": [6], \"layers\": ["
    "{\"kind\": \"linear\", \"units\": 8}, {\"kind\": \"layernorm\", \"eps\": 1e-3},"
    "{\"kind\": \"gelu\"}, {\"kind\": \"linear\", \"units\": 4},"
    "{\"kind\": \"softmax_cross_entropy\"}]}";

/* (g) conv2d + gelu + layernorm (over the width of an image) + conv2d
 * (stride 2, padding 1) + flatten + linear: the input gradients of conv2d
 * and of a layernorm with rows = batch x channels x height.  (A layernorm
 * right after the conv would cancel the conv bias, constant along each
 * row, and make its gradient exactly 0.) */
static const char *MODEL_G =
    "{\"name\": \"g\", \"input\": [2, 6, 6], \"layers\": ["
    "{\"kind\": \"conv2d\", \"channels\": 3, \"kernel\": 3, \"padding\": 1},"
    "{\"kind\": \"gelu\"}, {\"kind\": \"layernorm\"},"
    "{\"kind\": \"conv2d\", \"channels\": 3, \"kernel\": 3, \"stride\": 2, \"padding\": 1},"
    "{\"kind\": \"flatten\"}, {\"kind\": \"linear\", \"units\": 4},"
    "{\"kind\": \"softmax_cross_entropy\"}]}";

/* (h) layernorm first: its input gradient goes to the scratch buffer,
 * which nobody reads, while its parameter gradients must still be right. */
static const char *MODEL_H =
    "{\"name\": \"h\", \"input\": [6], \"layers\": ["
    "{\"kind\": \"layernorm\"}, {\"kind\": \"linear\", \"units\": 4},"
    "{\"kind\": \"softmax_cross_entropy\"}]}";

/* (i) linear + silu + linear: silu's input gradient reaches the first
 * linear's weight; SiLU is smooth, so no kinks. */
static const char *MODEL_I =
    "{\"name\": \"i\", \"input\": [6], \"layers\": ["
    "{\"kind\": \"linear\", \"units\": 8}, {\"kind\": \"silu\"},"
    "{\"kind\": \"linear\", \"units\": 4}, {\"kind\": \"softmax_cross_entropy\"}]}";

static mpt__model_t *model_of(const char *text)
{
    json_error_t err;
    json_t *root = json_loads(text, 0, &err);
    ck_assert_msg(root != NULL, "bad test model JSON: %s", err.text);
    mpt__model_t *m = NULL;
    ck_assert_mpt_ok(mpt__model_from_json(root, "test model", &m));
    json_decref(root);
    return m;
}

/* ---- the double reference -------------------------------------------------- */

typedef struct {
    int training;         /* dropout on */
    uint64_t seed, step;  /* the executor's, for dropout masks */
} ref_mode_t;

static int is(const mpt__layer_t *l, const char *name)
{
    return strcmp(l->kind->name, name) == 0;
}

static double gelu(double v)
{
    return 0.5 * v * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) /* M_PI is not C11 */ * (v + 0.044715 * v * v * v)));
}

/* Does dropout layer l keep element i (over the whole batch) in this mode? */
static int dropout_keeps(const mpt__layer_t *l, const ref_mode_t *mode, size_t i)
{
    uint64_t stream = MPT_RNG_STREAM(MPT_RNG_DROPOUT, mode->step << 16 | (uint64_t)l->index);
    return mpt__u01(mpt__rng_u32(mode->seed, stream, i)) >= l->p;
}

/* y (batch x K x OH x OW) = conv(x (batch x C x H x W), w) + b: PyTorch's
 * cross-correlation, zero padding. */
static void ref_conv(const mpt__layer_t *l, const double *w, const double *b, const double *x,
                     size_t batch, double *y)
{
    size_t C = l->in.d[0], H = l->in.d[1], W = l->in.d[2];
    size_t K = l->out.d[0], OH = l->out.d[1], OW = l->out.d[2], k = l->kernel;
    for (size_t n = 0; n < batch; n++)
        for (size_t o = 0; o < K; o++)
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) {
                    double s = b[o];
                    for (size_t c = 0; c < C; c++)
                        for (size_t i = 0; i < k; i++)
                            for (size_t j = 0; j < k; j++) {
                                long r = (long)(oh * l->stride + i) - (long)l->padding;
                                long q = (long)(ow * l->stride + j) - (long)l->padding;
                                if (r < 0 || q < 0 || r >= (long)H || q >= (long)W)
                                    continue;
                                s += w[((o * C + c) * k + i) * k + j] *
                                     x[((n * C + c) * H + (size_t)r) * W + (size_t)q];
                            }
                    y[((n * K + o) * OH + oh) * OW + ow] = s;
                }
}

/* Max over the part of each window inside the input: padding never wins. */
static void ref_maxpool(const mpt__layer_t *l, const double *x, size_t batch, double *y)
{
    size_t C = l->in.d[0], H = l->in.d[1], W = l->in.d[2];
    size_t OH = l->out.d[1], OW = l->out.d[2], k = l->kernel;
    for (size_t n = 0; n < batch * C; n++)
        for (size_t oh = 0; oh < OH; oh++)
            for (size_t ow = 0; ow < OW; ow++) {
                double best = -INFINITY;
                for (size_t i = 0; i < k; i++)
                    for (size_t j = 0; j < k; j++) {
                        long r = (long)(oh * l->stride + i) - (long)l->padding;
                        long q = (long)(ow * l->stride + j) - (long)l->padding;
                        if (r < 0 || q < 0 || r >= (long)H || q >= (long)W)
                            continue;
                        double v = x[(n * H + (size_t)r) * W + (size_t)q];
                        best = v > best ? v : best;
                    }
                y[(n * OH + oh) * OW + ow] = best;
            }
}

/* Layer norm over the last dimension, biased variance. */
static void ref_layernorm(const mpt__layer_t *l, const double *g, const double *b,
                          const double *x, size_t batch, double *y)
{
    size_t cols = l->in.d[l->in.ndim - 1], rows = batch * mpt__shape_numel(&l->in) / cols;
    for (size_t r = 0; r < rows; r++) {
        const double *xr = x + r * cols;
        double mean = 0, var = 0;
        for (size_t c = 0; c < cols; c++)
            mean += xr[c];
        mean /= (double)cols;
        for (size_t c = 0; c < cols; c++)
            var += (xr[c] - mean) * (xr[c] - mean);
        var /= (double)cols;
        double rstd = 1.0 / sqrt(var + (double)l->eps);
        for (size_t c = 0; c < cols; c++)
            y[r * cols + c] = (xr[c] - mean) * rstd * g[c] + b[c];
    }
}

/* The mean softmax cross-entropy of the model over a batch, in double, with
 * parameters w (flat, the model's layout); the logits (batch x classes)
 * into logits when not NULL. */
static double ref_loss(const mpt__model_t *m, const double *w, const float *x, const int32_t *y,
                       size_t batch, const ref_mode_t *mode, double *logits)
{
    size_t most = mpt__model_max_activation(m) * batch;
    double *a = malloc(most * sizeof *a), *b = malloc(most * sizeof *b), loss = 0;
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    size_t n_in = mpt__shape_numel(&m->input) * batch;
    for (size_t i = 0; i < n_in; i++)
        a[i] = x[i];
    for (size_t li = 0; li < m->nlayers; li++) {
        const mpt__layer_t *l = &m->layers[li];
        size_t n = mpt__shape_numel(&l->in) * batch;
        const double *p0 = l->nparams > 0 ? w + l->params[0].offset : NULL;
        const double *p1 = l->nparams > 1 ? w + l->params[1].offset : NULL;
        if (is(l, "linear")) {
            size_t in = l->in.d[0], out = l->units;
            for (size_t s = 0; s < batch; s++)
                for (size_t o = 0; o < out; o++) {
                    double acc = p1[o];
                    for (size_t i = 0; i < in; i++)
                        acc += p0[o * in + i] * a[s * in + i];
                    b[s * out + o] = acc;
                }
        } else if (is(l, "relu")) {
            for (size_t i = 0; i < n; i++)
                b[i] = a[i] > 0 ? a[i] : 0;
        } else if (is(l, "gelu")) {
            for (size_t i = 0; i < n; i++)
                b[i] = gelu(a[i]);
        } else if (is(l, "silu")) {
            for (size_t i = 0; i < n; i++)
                b[i] = a[i] / (1.0 + exp(-a[i]));
        } else if (is(l, "dropout")) {
            /* The device's scale is 1/(1-p) rounded to float once. */
            double scale = (double)(1.0f / (1.0f - l->p));
            for (size_t i = 0; i < n; i++)
                b[i] = !mode->training || l->p == 0 ? a[i]
                       : dropout_keeps(l, mode, i)  ? a[i] * scale
                                                    : 0.0;
        } else if (is(l, "layernorm")) {
            ref_layernorm(l, p0, p1, a, batch, b);
        } else if (is(l, "flatten")) {
            memcpy(b, a, n * sizeof *b);
        } else if (is(l, "conv2d")) {
            ref_conv(l, p0, p1, a, batch, b);
        } else if (is(l, "maxpool2d")) {
            ref_maxpool(l, a, batch, b);
        } else if (is(l, "softmax_cross_entropy")) {
            size_t k = l->in.d[0];
            for (size_t s = 0; s < batch; s++) {
                const double *z = a + s * k;
                double top = z[0], sum = 0;
                for (size_t c = 1; c < k; c++)
                    top = z[c] > top ? z[c] : top;
                for (size_t c = 0; c < k; c++)
                    sum += exp(z[c] - top);
                loss += top + log(sum) - z[y[s]];
            }
            if (logits)
                memcpy(logits, a, batch * k * sizeof *logits);
            loss /= (double)batch;
            continue;
        } else {
            ck_abort_msg("the reference lacks layer kind %s: add it", l->kind->name);
        }
        double *t = a;
        a = b, b = t;
    }
    free(a);
    free(b);
    return loss;
}

/* ---- one model on the device ----------------------------------------------- */

typedef struct {
    mpt__model_t *m;
    mpt_devices_t *set;
    mpt__executor_t *ex;
    size_t batch, classes;
    float *params; /* what the device holds */
    double *wd;    /* the same values in double, for the reference */
    float *x;
    int32_t *y;
    ref_mode_t mode;
} case_t;

/* Parameters with activations of O(1): weights uniform with variance
 * 1/fan_in (bound sqrt(3/fan_in)), biases in [-0.5, 0.5), layer-norm gains
 * in [0.5, 1.5) and shifts in [-0.5, 0.5), so that no gradient is trivially
 * one or zero. */
static void draw_params(const mpt__model_t *m, uint64_t seed, float *out)
{
    for (size_t i = 0; i < m->nlayers; i++)
        for (int q = 0; q < m->layers[i].nparams; q++) {
            const mpt__param_t *p = &m->layers[i].params[q];
            int weight = strcmp(p->name, "weight") == 0;
            float bound = p->fan_in && weight ? (float)sqrt(3.0 / (double)p->fan_in) : 0.5f;
            mpt__rng_uniform(seed, p->stream, 0, bound, out + p->offset, p->numel);
            for (size_t j = 0; j < p->numel; j++)
                out[p->offset + j] += p->init_value; /* layernorm gain: 1 + ... */
        }
}

static void case_open(case_t *c, const char *json, size_t batch, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->m = model_of(json);
    c->batch = batch;
    c->classes = (size_t)c->m->classes;
    ck_assert_uint_lt(c->m->param_floats, 2000); /* keeps the finite differences quick */
    ck_assert_mpt_ok(mpt_devices_open("0", &c->set));
    ck_assert_uint_ge(mpt_devices_count(c->set), 1);
    /* The warm-up compiles CLBlast's programs with a 512^3 GEMM; a simulator
     * (MPT_TEST_SMALL) takes many minutes over it, and one device has no
     * concurrent first GEMMs for it to keep apart. */
    if (!test_small())
        ck_assert_mpt_ok(mpt__device_blas_warmup(mpt_devices_get(c->set, 0)));
    ck_assert_mpt_ok(mpt__executor_create(c->m, mpt_devices_get(c->set, 0), batch, seed, &c->ex));
    size_t np = c->m->param_floats, nx = batch * mpt__shape_numel(&c->m->input);
    c->params = malloc(np * sizeof *c->params);
    c->wd = malloc(np * sizeof *c->wd);
    c->x = malloc(nx * sizeof *c->x);
    c->y = malloc(batch * sizeof *c->y);
    ck_assert(c->params && c->wd && c->x && c->y);
    draw_params(c->m, 1234, c->params);
    for (size_t i = 0; i < np; i++)
        c->wd[i] = c->params[i];
    ck_assert_mpt_ok(mpt__executor_write_params(c->ex, c->params));
    mpt__rng_uniform(99, 0, 0, 1.5f, c->x, nx);
    for (size_t s = 0; s < batch; s++)
        c->y[s] = (int32_t)(mpt__rng_u32(99, 1, s) % c->classes);
    c->mode = (ref_mode_t){1, seed, 0};
}

static void case_close(case_t *c)
{
    mpt__executor_free(c->ex);
    mpt_devices_free(c->set);
    mpt__model_free(c->m);
    free(c->params);
    free(c->wd);
    free(c->x);
    free(c->y);
}

/* The parameter that flat element j belongs to, as "1.weight[5]". */
static const char *param_name(const mpt__model_t *m, size_t j, char *buf, size_t size)
{
    for (size_t i = 0; i < m->nlayers; i++)
        for (int q = 0; q < m->layers[i].nparams; q++) {
            const mpt__param_t *p = &m->layers[i].params[q];
            if (j >= p->offset && j < p->offset + p->numel) {
                snprintf(buf, size, "%zu.%s[%zu] (%s)", i, p->name, j - p->offset,
                         m->layers[i].kind->name);
                return buf;
            }
        }
    snprintf(buf, size, "?[%zu]", j);
    return buf;
}

static double central_difference(case_t *c, size_t j, double h)
{
    double keep = c->wd[j];
    c->wd[j] = keep + h;
    double plus = ref_loss(c->m, c->wd, c->x, c->y, c->batch, &c->mode, NULL);
    c->wd[j] = keep - h;
    double minus = ref_loss(c->m, c->wd, c->x, c->y, c->batch, &c->mode, NULL);
    c->wd[j] = keep;
    return (plus - minus) / (2 * h);
}

/* Steps 1 to 3 of every model: forward against the reference, then every
 * parameter gradient against finite differences.  Returns the device's
 * logits (batch x classes, caller frees). */
static float *check_case(case_t *c, const char *what)
{
    size_t np = c->m->param_floats, nl = c->batch * c->classes;
    float *logits = malloc(nl * sizeof *logits), *grads = malloc(np * sizeof *grads);
    double *want = malloc(nl * sizeof *want), loss = 0;
    ck_assert(logits && grads && want);
    ck_assert_mpt_ok(whole_gradients(c->ex, c->x, c->y, c->batch, &loss, logits, grads));

    double want_loss = ref_loss(c->m, c->wd, c->x, c->y, c->batch, &c->mode, want);
    char name[96];
    snprintf(name, sizeof name, "model (%s) logits", what);
    ck_assert_close(logits, want, nl, LOGIT_ABS, LOGIT_REL, name);
    float got_loss = (float)loss;
    snprintf(name, sizeof name, "model (%s) loss", what);
    ck_assert_close(&got_loss, &want_loss, 1, LOGIT_ABS, LOGIT_REL, name);

    /* Every parameter element, against the finite difference. */
    int kinks = 0;
    double worst = 0; /* the largest error as a fraction of its tolerance */
    for (size_t j = 0; j < np; j++) {
        double fd = central_difference(c, j, FD_H), fd2 = central_difference(c, j, FD_H / 2);
        if (fabs(fd - fd2) > 1e-6 + 0.1 * fmax(fabs(fd), fabs(fd2))) {
            kinks++; /* a relu or maxpool switch between p - h and p + h */
            continue;
        }
        double g = grads[j];
        worst = fmax(worst, fabs(g - fd) / (GRAD_ABS + GRAD_REL * fabs(fd)));
        ck_assert_msg(fabs(g - fd) <= GRAD_ABS + GRAD_REL * fabs(fd),
                      "model (%s) gradient of %s = %.9g, finite difference %.9g (abs tol %g, "
                      "rel tol %g)",
                      what, param_name(c->m, j, name, sizeof name), g, fd, GRAD_ABS, GRAD_REL);
    }
    if (getenv("CHECK_NN_VERBOSE"))
        printf("model (%s): %zu parameters, %d skipped at kinks, worst gradient error %.3g "
               "of its tolerance\n", what, np, kinks, worst);
    ck_assert_msg(kinks <= MAX_KINKS, "model (%s): %d elements straddle a kink (at most %d)",
                  what, kinks, MAX_KINKS);

    /* No parameter tensor may pass by being zero on both sides: each has a
     * gradient well above the absolute tolerance somewhere. */
    for (size_t i = 0; i < c->m->nlayers; i++)
        for (int q = 0; q < c->m->layers[i].nparams; q++) {
            const mpt__param_t *p = &c->m->layers[i].params[q];
            double top = 0;
            for (size_t j = 0; j < p->numel; j++)
                top = fmax(top, fabs(grads[p->offset + j]));
            ck_assert_msg(top > 1e-3, "model (%s): gradient of %zu.%s is all ~0 (%g)",
                          what, i, p->name, top);
        }
    free(want);
    free(grads);
    return logits;
}

static void check_model(const char *json, size_t batch, const char *what)
{
    case_t c;
    case_open(&c, json, batch, 0);
    free(check_case(&c, what));
    case_close(&c);
}

/* ---- the tests --------------------------------------------------------------- */

START_TEST(linear_relu) { check_model(MODEL_A, 4, "a"); }
END_TEST

START_TEST(linear_gelu_layernorm) { check_model(MODEL_B, 4, "b"); }
END_TEST

START_TEST(conv_same_maxpool) { check_model(MODEL_C, 3, "c"); }
END_TEST

START_TEST(conv_strided_maxpool_padded) { check_model(MODEL_D, 3, "d"); }
END_TEST

START_TEST(linear_layernorm_gelu) { check_model(MODEL_F, 4, "f"); }
END_TEST

START_TEST(conv_layernorm_conv) { check_model(MODEL_G, 3, "g"); }
END_TEST

START_TEST(layernorm_first) { check_model(MODEL_H, 4, "h"); }
END_TEST

START_TEST(linear_silu) { check_model(MODEL_I, 4, "i"); }
END_TEST

/* Every kind of the registry: found by its name, listed once in the names
 * the model reader prints, and described as the planner and the engine
 * read it (no device needed). */
START_TEST(registry)
{
    char names[1024];
    size_t n = 0, losses = 0;
    mpt__layer_kind_names(names, sizeof names);
    for (const mpt__layer_kind_t *k; (k = mpt__layer_kind_at(n)); n++) {
        ck_assert_msg(k->name && k->name[0], "kind %zu has no name", n);
        ck_assert_ptr_eq(mpt__layer_kind(k->name), k);
        ck_assert_msg(strstr(names, k->name), "%s missing from \"%s\"", k->name, names);
        ck_assert_msg(k->infer && k->flops && k->forward && k->backward, "%s: a pass missing",
                      k->name);
        /* A view runs no kernel; every other kind launches at least one
         * each way (the cost model's launch term), but the loss, whose
         * backward computes the loss rows with the gradient (its training
         * forward launches nothing). */
        if (k->is_view)
            ck_assert_int_eq(k->launches_fwd + k->launches_bwd, 0);
        else
            ck_assert_msg(k->launches_fwd >= !k->is_loss && k->launches_bwd >= 1,
                          "%s: launches %d, %d", k->name, k->launches_fwd, k->launches_bwd);
        /* A kind that runs the next activation states its fused launches;
         * an activation states its code. */
        if (k->takes_act)
            ck_assert_msg(k->launches_fused_fwd >= 1 && k->launches_fused_bwd >= 1,
                          "%s: fused launches %d, %d", k->name, k->launches_fused_fwd,
                          k->launches_fused_bwd);
        /* A kind split inside slices itself (engine/shard.c asks it). */
        ck_assert_int_eq(!!(k->split_axes & MPT_SPLIT_INNER), k->inner_units && k->slice);
        losses += k->is_loss != 0;
    }
    ck_assert_uint_eq(losses, 1);
    ck_assert_uint_ge(n, 13); /* the 12 kinds of docs/model.md and silu */
    ck_assert_ptr_null(mpt__layer_kind("no-such-kind"));
    /* Dropout runs under any plan: no flag restricts it. */
    ck_assert_uint_eq(mpt__layer_kind("dropout")->flags, 0);
    ck_assert(mpt__layer_kind("embedding")->flags & MPT_KIND_TIED_OWNER);
    ck_assert(mpt__layer_kind("lm_head")->flags & MPT_KIND_TIED_READER);
    ck_assert_int_eq(mpt__layer_kind("silu")->split_axes, MPT_SPLIT_ELEMENTWISE);
    /* Truncated, still a string. */
    ck_assert_str_eq(mpt__layer_kind_names(names, 7), "linear");
}
END_TEST

/* (e): training masks at two steps and a non-zero seed, then evaluation. */
START_TEST(dropout_train_and_eval)
{
    case_t c;
    const mpt__layer_t *drop = NULL;
    case_open(&c, MODEL_E, 4, 7);
    for (size_t i = 0; i < c.m->nlayers; i++)
        if (is(&c.m->layers[i], "dropout"))
            drop = &c.m->layers[i];
    ck_assert_ptr_nonnull(drop);
    ck_assert(drop->p > 0.25f);

    /* The mask must be neither empty nor full, or the test proves little. */
    size_t n = c.batch * mpt__shape_numel(&drop->in), dropped = 0;
    for (size_t i = 0; i < n; i++)
        dropped += !dropout_keeps(drop, &c.mode, i);
    ck_assert_msg(dropped > 0 && dropped < n, "dropped %zu of %zu", dropped, n);

    /* Step 0, then step 3: the stream moves with the step, and backward
     * regenerates the same mask as forward (the gradients check that). */
    float *train0 = check_case(&c, "e, step 0");
    mpt__executor_set_step(c.ex, 3);
    c.mode.step = 3;
    float *train3 = check_case(&c, "e, step 3");
    double differ = 0;
    for (size_t i = 0; i < c.batch * c.classes; i++)
        differ = fmax(differ, fabs((double)train0[i] - train3[i]));
    ck_assert_msg(differ > 1e-3, "steps 0 and 3 drew the same mask (logits differ by %g)",
                  differ);

    /* Evaluation: no dropout, whatever the step. */
    ref_mode_t eval = {0, c.mode.seed, 0};
    double *want = malloc(c.batch * c.classes * sizeof *want), loss_sum = 0, correct = 0;
    ck_assert_ptr_nonnull(want);
    double want_loss = ref_loss(c.m, c.wd, c.x, c.y, c.batch, &eval, want);
    double want_correct = 0;
    for (size_t s = 0; s < c.batch; s++) {
        const double *z = want + s * c.classes;
        size_t best = 0;
        for (size_t k = 1; k < c.classes; k++)
            best = z[k] > z[best] ? k : best;
        /* The runner-up trails by far more than the logit tolerance, so the
         * device's argmax must be the same. */
        for (size_t k = 0; k < c.classes; k++)
            ck_assert(k == best || z[best] - z[k] > 100 * (LOGIT_ABS + LOGIT_REL * fabs(z[k])));
        want_correct += best == (size_t)c.y[s];
    }
    ck_assert_mpt_ok(whole_evaluate(c.ex, c.x, c.y, c.batch, &loss_sum, &correct));
    float got = (float)(loss_sum / (double)c.batch);
    ck_assert_close(&got, &want_loss, 1, LOGIT_ABS, LOGIT_REL, "model (e) evaluation loss");
    ck_assert_double_eq(correct, want_correct); /* exact: no near-ties, checked above */
    /* And training really differed from evaluation. */
    differ = 0;
    for (size_t i = 0; i < c.batch * c.classes; i++)
        differ = fmax(differ, fabs(train0[i] - want[i]));
    ck_assert_msg(differ > 1e-3, "training logits equal evaluation logits (differ by %g)", differ);
    free(want);
    free(train0);
    free(train3);
    case_close(&c);
}
END_TEST

/* Two executors, one seed and the same data: three SGD steps (momentum,
 * weight decay, clipping, dropout masks that move with the step) give
 * bitwise equal losses, norms and parameters.  Anything else would mean a
 * race or uninitialised memory. */
static void check_deterministic(const char *json, size_t batch)
{
    case_t c;
    case_open(&c, json, batch, 11);
    mpt__executor_t *twin = NULL;
    ck_assert_mpt_ok(mpt__executor_create(c.m, mpt_devices_get(c.set, 0), batch, 11, &twin));
    ck_assert_mpt_ok(mpt__executor_write_params(twin, c.params));
    mpt__executor_t *both[2] = {c.ex, twin};
    mpt__optim_cfg_t sgd = {MPT_OPTIM_SGD, 0.9f, 0.01f, 0, 0, 0, 1.0f, 0};
    size_t np = c.m->param_floats;
    float *after[2];
    double loss[2][3], norm[2][3];
    for (int e = 0; e < 2; e++) {
        for (int s = 0; s < 3; s++)
            ck_assert_mpt_ok(whole_train_step(both[e], c.x, c.y, batch, &sgd, 0.1f,
                                                      &loss[e][s], &norm[e][s]));
        after[e] = malloc(np * sizeof(float));
        ck_assert_ptr_nonnull(after[e]);
        ck_assert_mpt_ok(mpt__executor_read_params(both[e], after[e]));
    }
    ck_assert_msg(memcmp(loss[0], loss[1], sizeof loss[0]) == 0,
                  "losses differ: %.17g %.17g %.17g vs %.17g %.17g %.17g", loss[0][0],
                  loss[0][1], loss[0][2], loss[1][0], loss[1][1], loss[1][2]);
    ck_assert_msg(memcmp(norm[0], norm[1], sizeof norm[0]) == 0, "gradient norms differ");
    for (size_t j = 0; j < np; j++)
        ck_assert_msg(memcmp(&after[0][j], &after[1][j], sizeof(float)) == 0,
                      "parameter %zu differs: %.9g vs %.9g", j, after[0][j], after[1][j]);
    /* And the steps did something. */
    ck_assert(loss[0][2] != loss[0][0]);
    ck_assert(norm[0][0] > 0);
    free(after[0]);
    free(after[1]);
    mpt__executor_free(twin);
    case_close(&c);
}

START_TEST(deterministic_dropout_mlp) { check_deterministic(MODEL_E, 4); }
END_TEST

START_TEST(deterministic_cnn) { check_deterministic(MODEL_C, 3); }
END_TEST

/* Lines of the C files in lib/<dir> that compare a kind's name
 * (strcmp(... kind->name ...)), counted and printed. */
static int name_compares(const char *dir)
{
    char path[4096], line[1024];
    int found = 0;
    snprintf(path, sizeof path, "%s", test_path("../lib/"));
    strncat(path, dir, sizeof path - strlen(path) - 1);
    DIR *d = opendir(path);
    ck_assert_msg(d != NULL, "cannot open %s", path);
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 3 || (strcmp(e->d_name + n - 2, ".c") && strcmp(e->d_name + n - 2, ".h")))
            continue;
        char file[4352];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        FILE *f = fopen(file, "r");
        ck_assert_msg(f != NULL, "cannot read %s", file);
        for (int at = 1; fgets(line, sizeof line, f); at++)
            if (strstr(line, "strcmp") && strstr(line, "kind->name")) {
                fprintf(stderr, "%s:%d compares a kind's name: %s", file, at, line);
                found++;
            }
        fclose(f);
    }
    closedir(d);
    return found;
}

START_TEST(no_kind_names_outside_nn)
{
    static const char *dirs[] = {"core", "device", "topo", "profile", "tensor", "plan",
                                 "comm", "engine", "train", "trace"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char path[4096];
        DIR *d;
        snprintf(path, sizeof path, "%s%s", test_path("../lib/"), dirs[i]);
        if (!(d = opendir(path)))
            continue; /* a module not built yet (lib/trace) */
        closedir(d);
        ck_assert_msg(name_compares(dirs[i]) == 0, "lib/%s compares kind names: give the kind "
                      "a flag or a member instead (nn/layer_desc.h)", dirs[i]);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("nn");
    TCase *tc = tcase_create("layers");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, linear_relu);
    tcase_add_test(tc, linear_gelu_layernorm);
    tcase_add_test(tc, conv_same_maxpool);
    tcase_add_test(tc, conv_strided_maxpool_padded);
    tcase_add_test(tc, dropout_train_and_eval);
    tcase_add_test(tc, linear_layernorm_gelu);
    tcase_add_test(tc, conv_layernorm_conv);
    tcase_add_test(tc, layernorm_first);
    tcase_add_test(tc, linear_silu);
    suite_add_tcase(s, tc);
    TCase *reg = tcase_create("registry");
    tcase_add_test(reg, registry);
    tcase_add_test(reg, no_kind_names_outside_nn);
    suite_add_tcase(s, reg);
    TCase *det = tcase_create("determinism");
    tcase_set_timeout(det, 600);
    tcase_add_test(det, deterministic_dropout_mlp);
    tcase_add_test(det, deterministic_cnn);
    suite_add_tcase(s, det);
    return test_run(s, 0);
}
