/*
 * tests/check_ops.c: the tensor ops on one PoCL device against plain-C
 * references computed in double: fill, bias additions and the channel
 * bias gradient, ReLU and GELU (forward, backward, NaN), softmax
 * cross-entropy (large logits, bad labels, loss-only), argmax accuracy
 * (ties, NaN), SGD and AdamW over three steps, and the BLAS wrappers
 * (GEMM in all four transpose cases, batched GEMM, sum_rows, nrm2, scale,
 * axpy), and a linear layer fused with each activation (against a
 * double reference, and bitwise against the separate ops).  The GEMM tests run once per GEMM provider (CLBlast, the host
 * BLAS: lib/device/gemm.h) and check that either keeps the order of the
 * device's queue.
 *
 * Every tensor is a view at a non-zero offset of a larger buffer whose
 * other floats hold a sentinel; each read checks the sentinels, so an op
 * that ignores its offset or writes past its view fails.  Inputs come from
 * mpt__rng_uniform with fixed seeds.  Convolution, normalisation, pooling
 * and dropout have their own suites.
 *
 * Runs without fork (OpenCL in a forked child hangs); each test opens and
 * frees device 0.
 */
#define _POSIX_C_SOURCE 200809L /* setenv, in testutil.h */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "core/rng.h"
#include "device/gemm.h"
#include "reference.h"
#include "tensor/tensor.h"
#include "testutil.h"

/* ---- tolerances ----------------------------------------------------------
 * u is the unit roundoff of float (2^-24).  Each test states its bound next
 * to its assertion from these and from the arithmetic it does. */
#define U (FLT_EPSILON / 2)
/* A result of one correctly rounded float operation on float inputs (add,
 * multiply, select): within u relative of the exact double value. */
#define TOL_ONE_OP (U)
/* OpenCL 1.2's accuracy of tanh (5 ulp), exp and log (3 ulp): a ulp of a
 * value below 1 in magnitude is at most 2u. */
#define TANH_ABS (5 * 2 * U)

#define SENTINEL (-777.25f) /* fills every float outside a view */
#define GUARD 5             /* sentinel floats after each view */

static mpt_device_t *open_device(mpt_devices_t **set)
{
    ck_assert_mpt_ok(mpt_devices_open("0", set));
    ck_assert_uint_ge(mpt_devices_count(*set), 1);
    return mpt_devices_get(*set, 0);
}

/* A 1-dim view of n floats at float offset `off` of a new buffer of off + n
 * + GUARD floats; the view holds `data` (sentinels when data is NULL), the
 * rest sentinels. */
static mpt__tensor_t put(mpt_device_t *dev, size_t off, size_t n, const float *data)
{
    size_t total = off + n + GUARD;
    float *init = malloc(total * sizeof *init);
    ck_assert_ptr_nonnull(init);
    for (size_t i = 0; i < total; i++)
        init[i] = SENTINEL;
    if (data && n)
        memcpy(init + off, data, n * sizeof *data);
    mpt_buffer_t *buf = NULL;
    ck_assert_mpt_ok(mpt_buffer_create(dev, total * sizeof(float), &buf));
    ck_assert_mpt_ok(mpt_buffer_write(buf, 0, init, total * sizeof(float)));
    free(init);
    size_t dims[1] = {n};
    return mpt__tensor(buf, off, 1, dims);
}

/* Reads the view into out (may be NULL) and asserts every float outside
 * it still holds the sentinel (bitwise). */
static void get(const mpt__tensor_t *t, float *out)
{
    size_t total = mpt_buffer_size(t->buf) / sizeof(float), n = mpt__tensor_numel(t);
    float *all = malloc(total * sizeof *all), s = SENTINEL;
    ck_assert_ptr_nonnull(all);
    ck_assert_mpt_ok(mpt_buffer_read(t->buf, 0, all, total * sizeof(float)));
    for (size_t i = 0; i < total; i++)
        if (i < t->off || i >= t->off + n)
            ck_assert_msg(memcmp(&all[i], &s, sizeof s) == 0,
                          "float %zu outside the view [%zu, %zu) changed to %g", i, t->off,
                          t->off + n, all[i]);
    if (out && n)
        memcpy(out, all + t->off, n * sizeof *out);
    free(all);
}

/* n uniform floats in [-bound, bound) from stream `seed` (caller frees). */
static float *rnd(uint64_t seed, size_t n, float bound)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    mpt__rng_uniform(seed, 0, 0, bound, x, n);
    return x;
}

static double *dalloc(size_t n)
{
    double *x = malloc((n ? n : 1) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    return x;
}

static float *falloc(size_t n)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    return x;
}

/* int32 labels at int offset `off` of a new buffer (sentinel ints around). */
static mpt_buffer_t *put_labels(mpt_device_t *dev, size_t off, size_t n, const int *labels)
{
    size_t total = off + n + GUARD;
    int *init = malloc(total * sizeof *init);
    ck_assert_ptr_nonnull(init);
    for (size_t i = 0; i < total; i++)
        init[i] = -12345;
    memcpy(init + off, labels, n * sizeof *labels);
    mpt_buffer_t *buf = NULL;
    ck_assert_mpt_ok(mpt_buffer_create(dev, total * sizeof(int), &buf));
    ck_assert_mpt_ok(mpt_buffer_write(buf, 0, init, total * sizeof(int)));
    free(init);
    return buf;
}

/* ---- fill, bias ---------------------------------------------------------- */

START_TEST(fill_odd_sizes_at_offsets)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    /* MPT_TEST_SMALL: 10,003 instead of a million (still odd, several
     * work-groups and a partial last one). */
    const size_t sizes[] = {1, 7, test_small() ? 10003 : 1000003}, offs[] = {3, 1, 17};
    const float values[] = {2.5f, -0.0f, NAN};
    for (size_t k = 0; k < 3; k++) {
        size_t n = sizes[k];
        mpt__tensor_t x = put(dev, offs[k], n, NULL);
        ck_assert_mpt_ok(mpt__op_fill(&x, n, values[k]));
        float *got = falloc(n);
        get(&x, got);
        for (size_t i = 0; i < n; i++) /* exact: a store, bit for bit (NaN, -0 too) */
            ck_assert_msg(memcmp(&got[i], &values[k], sizeof(float)) == 0,
                          "fill n=%zu: x[%zu] = %g, want %g", n, i, got[i], values[k]);
        free(got);
        mpt_buffer_free(x.buf);
    }
    mpt_devices_free(set);
}
END_TEST

START_TEST(bias_add_rows)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    const size_t rows = 5, cols = 7;
    float *y0 = rnd(1, rows * cols, 1.0f), *b0 = rnd(2, cols, 1.0f), *got = falloc(rows * cols);
    double *want = dalloc(rows * cols);
    mpt__tensor_t y = put(dev, 3, rows * cols, y0), b = put(dev, 2, cols, b0);
    ck_assert_mpt_ok(mpt__op_bias_add(&y, &b, rows, cols));
    get(&y, got);
    get(&b, NULL); /* the bias is only read */
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++)
            want[r * cols + c] = (double)y0[r * cols + c] + b0[c];
    /* One float addition of two floats: correctly rounded. */
    ck_assert_close(got, want, rows * cols, 0, TOL_ONE_OP, "bias_add y");
    free(y0), free(b0), free(got), free(want);
    mpt_buffer_free(y.buf), mpt_buffer_free(b.buf);
    mpt_devices_free(set);
}
END_TEST

START_TEST(bias_add_channels_nchw)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    const size_t shapes[][3] = {{3, 4, 5}, {2, 3, 1}, {1, 1, 9}}; /* N, C, P */
    for (size_t s = 0; s < 3; s++) {
        size_t n = shapes[s][0], c = shapes[s][1], p = shapes[s][2], total = n * c * p;
        float *y0 = rnd(10 + s, total, 1.0f), *b0 = rnd(20 + s, c, 1.0f), *got = falloc(total);
        double *want = dalloc(total);
        mpt__tensor_t y = put(dev, 1 + s, total, y0), b = put(dev, 4, c, b0);
        ck_assert_mpt_ok(mpt__op_bias_add_channels(&y, &b, n, c, p));
        get(&y, got);
        for (size_t i = 0; i < total; i++)
            want[i] = (double)y0[i] + b0[(i / p) % c];
        ck_assert_close(got, want, total, 0, TOL_ONE_OP, "bias_add_channels y"); /* one add */
        free(y0), free(b0), free(got), free(want);
        mpt_buffer_free(y.buf), mpt_buffer_free(b.buf);
    }
    mpt_devices_free(set);
}
END_TEST

START_TEST(bias_grad_channels_sums_n_and_p)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    const size_t n = 3, c = 5, p = 49, total = n * c * p;
    float *dy0 = rnd(30, total, 1.0f), *db0 = rnd(31, c, 1.0f), *got = falloc(c);
    double *want = dalloc(c), *abs_sum = dalloc(c);
    for (size_t ch = 0; ch < c; ch++) {
        want[ch] = 0, abs_sum[ch] = 0;
        for (size_t img = 0; img < n; img++)
            for (size_t j = 0; j < p; j++) {
                want[ch] += dy0[(img * c + ch) * p + j];
                abs_sum[ch] += fabs(dy0[(img * c + ch) * p + j]);
            }
    }
    double worst = 0;
    for (size_t ch = 0; ch < c; ch++)
        worst = fmax(worst, abs_sum[ch] + fabs(db0[ch]));
    /* A float sum of N*P terms in any order is within (N*P) u sum|terms| of
     * the exact one (Higham, ch. 4); the beta term adds two roundings. */
    double tol = (double)(n * p + 2) * U * worst;
    mpt__tensor_t dy = put(dev, 7, total, dy0);

    /* beta = 0: db's old content is not read, so NaN there does not leak. */
    float nans[5] = {NAN, NAN, NAN, NAN, NAN};
    mpt__tensor_t db = put(dev, 2, c, nans);
    ck_assert_mpt_ok(mpt__op_bias_grad_channels(&dy, n, c, p, 0.0f, &db));
    get(&db, got);
    ck_assert_close(got, want, c, tol, 0, "bias_grad_channels beta=0");
    mpt_buffer_free(db.buf);

    /* beta = 0.5: accumulates onto db. */
    db = put(dev, 2, c, db0);
    ck_assert_mpt_ok(mpt__op_bias_grad_channels(&dy, n, c, p, 0.5f, &db));
    get(&db, got);
    for (size_t ch = 0; ch < c; ch++)
        want[ch] += 0.5 * db0[ch];
    ck_assert_close(got, want, c, tol, 0, "bias_grad_channels beta=0.5");
    get(&dy, NULL);
    free(dy0), free(db0), free(got), free(want), free(abs_sum);
    mpt_buffer_free(db.buf), mpt_buffer_free(dy.buf);
    mpt_devices_free(set);
}
END_TEST

/* ---- activations ---------------------------------------------------------- */

/* torch semantics (checked with torch 1.13): relu(nan) = nan; the backward
 * is a select, dx = x <= 0 ? 0 : dy, so x = nan passes dy through and
 * dy = nan where x <= 0 gives 0. */
static double relu_ref(double x)
{
    return (x > 0 || isnan(x)) ? x : 0.0;
}

static double relu_grad_ref(double x, double dy)
{
    return x <= 0 ? 0.0 : dy;
}

START_TEST(relu_forward_backward_odd_sizes)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    const size_t sizes[] = {1, 7, test_small() ? 10003 : 1000003}; /* as fill's */
    for (size_t k = 0; k < 3; k++) {
        size_t n = sizes[k];
        float *x0 = rnd(40 + k, n, 1.0f), *dy0 = rnd(50 + k, n, 1.0f), *got = falloc(n);
        double *want = dalloc(n);
        for (size_t i = 0; i < n; i += 97) /* some NaN and exact zeros among the inputs */
            x0[i] = (i / 97) % 3 == 1 ? NAN : (i / 97) % 3 == 2 ? 0.0f : x0[i];
        for (size_t i = 5; i < n; i += 101)
            dy0[i] = NAN;
        mpt__tensor_t x = put(dev, 1 + k, n, x0), y = put(dev, 6, n, NULL),
                      dy = put(dev, 2, n, dy0), dx = put(dev, 5 + k, n, NULL);
        ck_assert_mpt_ok(mpt__op_relu_forward(&x, &y, n));
        ck_assert_mpt_ok(mpt__op_relu_backward(&x, &dy, &dx, n));
        get(&y, got);
        for (size_t i = 0; i < n; i++)
            want[i] = relu_ref(x0[i]);
        ck_assert_close(got, want, n, 0, 0, "relu y"); /* a select: exact */
        get(&dx, got);
        for (size_t i = 0; i < n; i++)
            want[i] = relu_grad_ref(x0[i], dy0[i]);
        ck_assert_close(got, want, n, 0, 0, "relu dx"); /* a select: exact */
        get(&x, NULL), get(&dy, NULL);
        free(x0), free(dy0), free(got), free(want);
        mpt_buffer_free(x.buf), mpt_buffer_free(y.buf), mpt_buffer_free(dy.buf),
            mpt_buffer_free(dx.buf);
    }
    mpt_devices_free(set);
}
END_TEST

START_TEST(relu_nan_as_torch)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    /* torch.relu(tensor([nan, -1, 2, 0])) = [nan, 0, 2, 0]; its backward
     * with dy = [1, nan, nan, 4] gives [1, 0, nan, 0]. */
    const float x0[4] = {NAN, -1.0f, 2.0f, 0.0f}, dy0[4] = {1.0f, NAN, NAN, 4.0f};
    const double want_y[4] = {NAN, 0, 2, 0}, want_dx[4] = {1, 0, NAN, 0};
    float got[4];
    mpt__tensor_t x = put(dev, 1, 4, x0), y = put(dev, 2, 4, NULL), dy = put(dev, 3, 4, dy0),
                  dx = put(dev, 4, 4, NULL);
    ck_assert_mpt_ok(mpt__op_relu_forward(&x, &y, 4));
    ck_assert_mpt_ok(mpt__op_relu_backward(&x, &dy, &dx, 4));
    get(&y, got);
    ck_assert_close(got, want_y, 4, 0, 0, "relu y");
    get(&dx, got);
    ck_assert_close(got, want_dx, 4, 0, 0, "relu dx");
    mpt_buffer_free(x.buf), mpt_buffer_free(y.buf), mpt_buffer_free(dy.buf),
        mpt_buffer_free(dx.buf);
    mpt_devices_free(set);
}
END_TEST

#define GELU_B 0.79788456080286535588 /* sqrt(2/pi) */
#define GELU_K 0.044715

static double gelu_ref(double x)
{
    return 0.5 * x * (1 + tanh(GELU_B * (x + GELU_K * x * x * x)));
}

static double gelu_grad_ref(double x)
{
    double t = tanh(GELU_B * (x + GELU_K * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_B * (1 + 3 * GELU_K * x * x);
}

START_TEST(gelu_forward_backward)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    const size_t sizes[] = {1, 7, 4099};
    const double xmax = 6; /* inputs in [-6, 6): past the bend on both sides */
    for (size_t k = 0; k < 3; k++) {
        size_t n = sizes[k];
        float *x0 = rnd(60 + k, n, (float)xmax), *dy0 = rnd(70 + k, n, 1.0f), *got = falloc(n);
        double *want = dalloc(n);
        mpt__tensor_t x = put(dev, 3, n, x0), y = put(dev, 1 + k, n, NULL),
                      dy = put(dev, 2, n, dy0), dx = put(dev, 4, n, NULL);
        ck_assert_mpt_ok(mpt__op_gelu_forward(&x, &y, n));
        ck_assert_mpt_ok(mpt__op_gelu_backward(&x, &dy, &dx, n));
        get(&y, got);
        for (size_t i = 0; i < n; i++)
            want[i] = gelu_ref(x0[i]);
        /* y = 0.5 x (1 + t): an error e in t (tanh's 5 ulp plus the few
         * roundings of its argument, scaled by tanh' <= 1: e <= 8 * 2u)
         * costs 0.5 |x| e absolute, which 1 + t does not shrink where t
         * nears -1; the three products cost 4u relative. */
        ck_assert_close(got, want, n, 0.5 * xmax * (TANH_ABS + 6 * U), 4 * U, "gelu y");
        get(&dx, got);
        for (size_t i = 0; i < n; i++)
            want[i] = dy0[i] * gelu_grad_ref(x0[i]);
        /* dx: 1 - t^2 carries 2e absolute, multiplied by
         * 0.5 |x| sqrt(2/pi) (1 + 3 * 0.044715 x^2) <= 14 at |x| = 6, and
         * 0.5 (1 + t) carries 0.5 e; |dy| <= 1.  Ten roundings: 10u relative. */
        double g = 0.5 * xmax * GELU_B * (1 + 3 * GELU_K * xmax * xmax);
        ck_assert_close(got, want, n, (2 * g + 0.5) * (TANH_ABS + 6 * U), 10 * U, "gelu dx");
        get(&x, NULL), get(&dy, NULL);
        free(x0), free(dy0), free(got), free(want);
        mpt_buffer_free(x.buf), mpt_buffer_free(y.buf), mpt_buffer_free(dy.buf),
            mpt_buffer_free(dx.buf);
    }
    mpt_devices_free(set);
}
END_TEST

START_TEST(gelu_nan_inf_as_torch)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    /* torch 1.13, F.gelu(x, approximate="tanh") in float32 and its grad
     * with dy = 1:  x = [nan, inf, -inf, 20, -20, 0, 1e20, -1e20]
     *   y  = [nan, inf, nan, 20, -0, 0, 1e20, -0]  (-inf: -inf * (1 - 1))
     *   dx = [nan, nan, nan, 1, 0, 0.5, nan, nan]  (x^2 overflows: 0 * inf) */
    const float x0[8] = {NAN, INFINITY, -INFINITY, 20.0f, -20.0f, 0.0f, 1e20f, -1e20f};
    const float dy0[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    const double want_y[8] = {NAN, INFINITY, NAN, 20, 0, 0, 1e20f, 0};
    const double want_dx[8] = {NAN, NAN, NAN, 1, 0, 0.5, NAN, NAN};
    float got[8];
    mpt__tensor_t x = put(dev, 2, 8, x0), y = put(dev, 1, 8, NULL), dy = put(dev, 3, 8, dy0),
                  dx = put(dev, 5, 8, NULL);
    ck_assert_mpt_ok(mpt__op_gelu_forward(&x, &y, 8));
    ck_assert_mpt_ok(mpt__op_gelu_backward(&x, &dy, &dx, 8));
    get(&y, got);
    ck_assert(isinf(got[1]) && got[1] > 0); /* fabs(inf - inf) is NaN: check apart */
    got[1] = 0.0f;
    double want_y_finite[8];
    memcpy(want_y_finite, want_y, sizeof want_y);
    want_y_finite[1] = 0;
    /* tanh is exactly +-1 there (|argument| >= 301): the finite values are
     * exact, and -20 gives 0 (-0), not the -6e-7 of a tanh one ulp off. */
    ck_assert_close(got, want_y_finite, 8, 0, 0, "gelu y");
    get(&dx, got);
    ck_assert_close(got, want_dx, 8, 0, 0, "gelu dx");
    mpt_buffer_free(x.buf), mpt_buffer_free(y.buf), mpt_buffer_free(dy.buf),
        mpt_buffer_free(dx.buf);
    mpt_devices_free(set);
}
END_TEST

/* ---- softmax cross-entropy and accuracy ---------------------------------- */

/* Double reference of one row: loss and, when d is not NULL, the gradient;
 * NaN for a label outside [0, cols). */
static double xent_ref(const float *x, size_t cols, int label, double scale, double *d)
{
    int ok = label >= 0 && (size_t)label < cols;
    double m = -INFINITY, s = 0;
    for (size_t c = 0; c < cols; c++)
        m = fmax(m, x[c]);
    for (size_t c = 0; c < cols; c++)
        s += exp(x[c] - m);
    for (size_t c = 0; d && c < cols; c++)
        d[c] = ok ? scale * (exp(x[c] - m) / s - ((int)c == label)) : NAN;
    return ok ? log(s) + m - x[label] : NAN;
}

/* Runs the op (with and without gradient) and compares with xent_ref. */
static void check_xent(mpt_device_t *dev, const float *x0, const int *labels, size_t rows,
                       size_t cols, float scale, const char *what)
{
    float *got = falloc(rows * cols);
    double *want = dalloc(rows * cols), *want_loss = dalloc(rows);
    double max_abs = 0;
    for (size_t i = 0; i < rows * cols; i++)
        max_abs = fmax(max_abs, fabs(x0[i]));
    for (size_t r = 0; r < rows; r++)
        want_loss[r] = xent_ref(x0 + r * cols, cols, labels[r], scale, want + r * cols);
    mpt__tensor_t x = put(dev, 5, rows * cols, x0), loss = put(dev, 2, rows, NULL),
                  dx = put(dev, 3, rows * cols, NULL);
    mpt_buffer_t *lab = put_labels(dev, 3, rows, labels);
    ck_assert_mpt_ok(mpt__op_softmax_xent(&x, lab, 3, rows, cols, scale, &loss, &dx));
    /* loss = log(s) + m - x[label]: s, a float sum of cols exp() values of
     * 3 ulp each, is within (cols + 6) u relative, which log turns into as
     * much absolute; log adds 3 ulp of |log s| <= log(cols); the final two
     * additions round at the size of |m| + |x[label]|. */
    double tol = (cols + 6) * U + 6 * U * log((double)cols) + 4 * U * max_abs;
    get(&loss, got);
    ck_assert_close(got, want_loss, rows, tol, 0, what);
    for (size_t r = 0; r < rows; r++) /* finite wherever the label is valid */
        ck_assert_msg(isfinite(got[r]) || isnan(want_loss[r]), "%s: loss[%zu] = %g", what, r,
                      got[r]);
    get(&dx, got);
    /* softmax = exp(x - m) / s: exp 3 ulp, the division 2.5 ulp, s (cols + 6) u:
     * (cols + 14) u relative of a value <= 1; minus one-hot and times scale
     * add a rounding each, so the error is absolute at the scale of |scale|. */
    ck_assert_close(got, want, rows * cols, (cols + 16) * U * fabs(scale), 0, what);

    /* Loss alone (dlogits NULL): the same values. */
    mpt_buffer_free(loss.buf);
    loss = put(dev, 1, rows, NULL);
    ck_assert_mpt_ok(mpt__op_softmax_xent(&x, lab, 3, rows, cols, scale, &loss, NULL));
    get(&loss, got);
    ck_assert_close(got, want_loss, rows, tol, 0, what);
    get(&x, NULL);
    free(got), free(want), free(want_loss);
    mpt_buffer_free(x.buf), mpt_buffer_free(loss.buf), mpt_buffer_free(dx.buf);
    mpt_buffer_free(lab);
}

START_TEST(softmax_xent_random)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    const size_t rows = 9, cols = 10;
    float *x0 = rnd(80, rows * cols, 5.0f);
    int labels[9];
    for (size_t r = 0; r < rows; r++)
        labels[r] = (int)(mpt__rng_u32(81, 0, r) % cols);
    check_xent(dev, x0, labels, rows, cols, 1.0f / rows, "xent random");
    free(x0);
    /* One row of 1000 classes, one of one class (loss 0, gradient 0). */
    float *wide = rnd(82, 1000, 3.0f);
    int l = 997;
    check_xent(dev, wide, &l, 1, 1000, 0.25f, "xent 1000 classes");
    float one = 3.5f;
    l = 0;
    check_xent(dev, &one, &l, 1, 1, 1.0f, "xent one class");
    free(wide);
    mpt_devices_free(set);
}
END_TEST

START_TEST(softmax_xent_large_logits_stable)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    /* exp(1e4) overflows any float: only max subtraction keeps these
     * finite.  Rows: mixed +-1e4 (loss ~2e4 when the label is at -1e4), all
     * equal at 1e4 (loss log 4), all at -1e4 (log 4: no underflow to 0/0). */
    const float x0[4 * 4] = {1e4f,  -1e4f, 3.0f,  9999.0f, 1e4f,  1e4f,  1e4f,  1e4f,
                             -1e4f, -1e4f, -1e4f, -1e4f,   -1e4f, 1e4f,  -1e4f, 0.0f};
    const int labels[4] = {1, 2, 0, 1};
    check_xent(dev, x0, labels, 4, 4, 0.5f, "xent large logits");
    mpt_devices_free(set);
}
END_TEST

START_TEST(softmax_xent_bad_label_gives_nan)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    const size_t rows = 4, cols = 6;
    float *x0 = rnd(90, rows * cols, 2.0f);
    /* cols and -1 are outside [0, cols): NaN loss and gradient for their
     * rows only (the reference says NaN for those, finite elsewhere). */
    const int labels[4] = {2, (int)cols, 5, -1};
    check_xent(dev, x0, labels, rows, cols, 0.25f, "xent bad label");
    free(x0);
    mpt_devices_free(set);
}
END_TEST

START_TEST(argmax_correct_ties_and_nan)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    const size_t cols = 4;
    /* ties: the first maximum wins (torch.argmax); a row with NaN is never
     * correct; labels outside [0, cols) are never correct. */
    const float fixed[][4] = {
        {1, 3, 3, 0},   /* label 1: first of the tie -> 1 */
        {1, 3, 3, 0},   /* label 2: second of the tie -> 0 */
        {-2, -2, -2, -2}, /* label 0 -> 1 */
        {-2, -2, -2, -2}, /* label 3 -> 0 */
        {NAN, 1, 2, 0}, /* label 2 -> 0 (NaN) */
        {1, 5, NAN, 0}, /* label 1 -> 0 (NaN) */
        {1, 5, 2, 0},   /* label 4 -> 0 (out of range) */
        {1, 5, 2, 0},   /* label -1 -> 0 */
    };
    const int fixed_labels[] = {1, 2, 0, 3, 2, 1, 4, -1};
    const double fixed_want[] = {1, 0, 1, 0, 0, 0, 0, 0};
    const size_t nfixed = 8, nrand = 41, rows = nfixed + nrand;
    float *x0 = rnd(100, rows * cols, 1.0f), *got = falloc(rows);
    int labels[8 + 41];
    double want[8 + 41];
    memcpy(x0, fixed, sizeof fixed);
    memcpy(labels, fixed_labels, sizeof fixed_labels);
    memcpy(want, fixed_want, sizeof fixed_want);
    for (size_t r = nfixed; r < rows; r++) {
        labels[r] = (int)(mpt__rng_u32(101, 0, r) % cols);
        size_t best = 0;
        for (size_t c = 1; c < cols; c++)
            if (x0[r * cols + c] > x0[r * cols + best])
                best = c;
        want[r] = (size_t)labels[r] == best;
    }
    mpt__tensor_t x = put(dev, 5, rows * cols, x0), correct = put(dev, 1, rows, NULL);
    mpt_buffer_t *lab = put_labels(dev, 2, rows, labels);
    ck_assert_mpt_ok(mpt__op_argmax_correct(&x, lab, 2, rows, cols, &correct));
    get(&correct, got);
    ck_assert_close(got, want, rows, 0, 0, "argmax correct"); /* exact 0 or 1 */
    free(x0), free(got);
    mpt_buffer_free(x.buf), mpt_buffer_free(correct.buf), mpt_buffer_free(lab);
    mpt_devices_free(set);
}
END_TEST

/* ---- optimizers ----------------------------------------------------------- */

START_TEST(sgd_momentum_three_steps)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    const size_t n = 1003;
    const float lr = 0.1f, mom = 0.9f, wd = 0.01f;
    float *p0 = rnd(110, n, 1.0f), *got = falloc(n), *nans = falloc(n);
    double *p = dalloc(n), *buf = dalloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = p0[i], nans[i] = NAN;
    /* The momentum buffer starts as NaN: the first step must not read it. */
    mpt__tensor_t tp = put(dev, 1, n, p0), tg = put(dev, 2, n, NULL), tb = put(dev, 3, n, nans);
    for (int step = 1; step <= 3; step++) {
        float *g = rnd(120 + (uint64_t)step, n, 1.0f);
        ck_assert_mpt_ok(mpt__tensor_write(&tg, g));
        ck_assert_mpt_ok(mpt__op_sgd_update(&tp, &tg, &tb, n, lr, mom, wd, step == 1));
        for (size_t i = 0; i < n; i++) { /* torch.optim.SGD, dampening 0 */
            double d = g[i] + (double)wd * p[i];
            buf[i] = step == 1 ? d : (double)mom * buf[i] + d;
            p[i] -= (double)lr * buf[i];
        }
        free(g);
    }
    /* |g|, |p| <= 1 and wd = 0.01: |d| <= 1.02, |buf| <= 2.72 after three
     * steps, |p| <= 1.6.  Each step rounds d, buf (2 ops) and p (2 ops)
     * once each at those sizes: three steps stay below 1e-6 absolute
     * (~17 u); the relative term covers nothing beyond that margin. */
    get(&tp, got);
    ck_assert_close(got, p, n, 1e-6, 2 * U, "sgd p");
    get(&tb, got);
    ck_assert_close(got, buf, n, 1e-6, 2 * U, "sgd momentum buffer");
    get(&tg, NULL);
    mpt_buffer_free(tp.buf), mpt_buffer_free(tg.buf), mpt_buffer_free(tb.buf);

    /* Without momentum no buffer is needed (NULL): p -= lr (g + wd p). */
    float *g = rnd(130, n, 1.0f);
    tp = put(dev, 4, n, p0), tg = put(dev, 1, n, g);
    ck_assert_mpt_ok(mpt__op_sgd_update(&tp, &tg, NULL, n, lr, 0.0f, wd, 1));
    get(&tp, got);
    for (size_t i = 0; i < n; i++)
        p[i] = p0[i] - (double)lr * (g[i] + (double)wd * p0[i]);
    ck_assert_close(got, p, n, 4 * U, 2 * U, "sgd without momentum"); /* four roundings <= 1.1 */
    ck_assert_mpt_fails(mpt__op_sgd_update(&tp, &tg, NULL, n, -0.1f, 0.0f, wd, 1),
                        MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__op_sgd_update(&tp, &tg, NULL, n, NAN, 0.0f, wd, 1),
                        MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__op_sgd_update(&tp, &tg, NULL, n, lr, 0.9f, wd, 1),
                        MPT_ERR_INVALID); /* momentum without its buffer */
    free(g), free(p0), free(got), free(nans), free(p), free(buf);
    mpt_buffer_free(tp.buf), mpt_buffer_free(tg.buf);
    mpt_devices_free(set);
}
END_TEST

START_TEST(adamw_three_steps)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    const size_t n = 1003;
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
    float *p0 = rnd(140, n, 1.0f), *got = falloc(n);
    double *p = dalloc(n), *m = dalloc(n), *v = dalloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = p0[i], m[i] = 0, v[i] = 0;
    mpt__tensor_t tp = put(dev, 3, n, p0), tg = put(dev, 1, n, NULL), tm = put(dev, 2, n, NULL),
                  tv = put(dev, 7, n, NULL);
    ck_assert_mpt_ok(mpt__op_fill(&tm, n, 0.0f));
    ck_assert_mpt_ok(mpt__op_fill(&tv, n, 0.0f));
    for (int t = 1; t <= 3; t++) {
        float *g = rnd(150 + (uint64_t)t, n, 1.0f);
        ck_assert_mpt_ok(mpt__tensor_write(&tg, g));
        ck_assert_mpt_ok(mpt__op_adamw_update(&tp, &tg, &tm, &tv, n, lr, b1, b2, eps, wd, t));
        /* The recurrences of torch.optim.AdamW, in double, with the
         * hyper-parameters the op received (floats). */
        double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
        for (size_t i = 0; i < n; i++) {
            p[i] *= 1 - (double)lr * wd;
            m[i] = b1 * m[i] + (1 - (double)b1) * g[i];
            v[i] = b2 * v[i] + (1 - (double)b2) * g[i] * g[i];
            p[i] -= lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + eps);
        }
        free(g);
    }
    /* m and v: two products and a sum per step, 3 steps: ~9u relative
     * (all terms share the sign of v; m may cancel, hence its absolute
     * margin of 9u at the size of |g| <= 1 times (1 - b1)). */
    get(&tm, got);
    ck_assert_close(got, m, n, 9 * U * 0.1, 9 * U, "adamw m");
    get(&tv, got);
    ck_assert_close(got, v, n, 0, 9 * U, "adamw v");
    /* p: the step lr m^ / (sqrt(v^) + eps) has |m^ / sqrt(v^)| <= ~2 and a
     * relative error of ~40u (m, v above, sqrt 3 ulp, two divisions 2.5
     * ulp each, the host's rounded bias corrections); times lr = 0.01 that
     * is below 1u per step; the decay and subtraction round at |p| <= 1.1:
     * 2u per step.  Three steps: 9u absolute. */
    get(&tp, got);
    ck_assert_close(got, p, n, 9 * U, 0, "adamw p");
    get(&tg, NULL);
    ck_assert_mpt_fails(mpt__op_adamw_update(&tp, &tg, &tm, &tv, n, lr, b1, b2, eps, wd, 0),
                        MPT_ERR_INVALID); /* steps count from 1 */
    ck_assert_mpt_fails(mpt__op_adamw_update(&tp, &tg, &tm, &tv, n, lr, 1.0f, b2, eps, wd, 1),
                        MPT_ERR_INVALID); /* beta1 must be < 1 */
    free(p0), free(got), free(p), free(m), free(v);
    mpt_buffer_free(tp.buf), mpt_buffer_free(tg.buf), mpt_buffer_free(tm.buf),
        mpt_buffer_free(tv.buf);
    mpt_devices_free(set);
}
END_TEST

START_TEST(views_outside_their_buffer_are_refused)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    mpt__tensor_t x = put(dev, 2, 10, NULL), y = put(dev, 0, 4, NULL);
    /* the buffer holds 2 + 10 + GUARD = 17 floats */
    ck_assert_mpt_fails(mpt__op_fill(&x, 16, 1.0f), MPT_ERR_RANGE);
    ck_assert_mpt_fails(mpt__op_relu_forward(&x, &y, 12), MPT_ERR_RANGE);
    ck_assert_mpt_fails(mpt__op_bias_add(&x, &y, 2, 10), MPT_ERR_RANGE);
    int labels[2] = {0, 1};
    mpt_buffer_t *lab = put_labels(dev, 0, 2, labels); /* 7 ints */
    ck_assert_mpt_fails(mpt__op_softmax_xent(&x, lab, 6, 2, 5, 1.0f, &y, NULL), MPT_ERR_RANGE);
    get(&x, NULL), get(&y, NULL); /* nothing was launched */
    mpt_buffer_free(lab);
    mpt_buffer_free(x.buf), mpt_buffer_free(y.buf);
    mpt_devices_free(set);
}
END_TEST

/* ---- BLAS wrappers (blas_ops.c, attention.c's batched GEMM) ------------- */

/* C = alpha op(A) op(B) + beta C with padded leading dimensions, at
 * offsets; the padding columns of C must keep their sentinels. */
static void check_gemm(mpt_device_t *dev, int ta, int tb, size_t m, size_t n, size_t k,
                       float alpha, float beta, int c_nan)
{
    size_t arows = ta ? k : m, acols = ta ? m : k, brows = tb ? n : k, bcols = tb ? k : n;
    size_t lda = acols + 2, ldb = bcols + 1, ldc = n + 3;
    /* k = 0 leaves A or B with no rows: give them one dummy float */
    size_t asz = arows ? (arows - 1) * lda + acols : 1, bsz = brows ? (brows - 1) * ldb + bcols : 1,
           csz = (m - 1) * ldc + n;
    float *a0 = rnd(200 + 4 * ta + 2 * tb, asz, 1.0f), *b0 = rnd(300 + 4 * ta + 2 * tb, bsz, 1.0f),
          *c0 = rnd(400, csz, 1.0f), *got = falloc(csz);
    double *want = dalloc(csz), worst = 0;
    for (size_t i = 0; i < csz; i++) {
        if (i % ldc >= n)
            c0[i] = SENTINEL; /* padding between rows */
        else if (c_nan)
            c0[i] = NAN; /* beta = 0: C is not to be read (BLAS) */
        want[i] = c0[i];
    }
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0, mag = 0;
            for (size_t l = 0; l < k; l++) {
                double av = ta ? a0[l * lda + i] : a0[i * lda + l];
                double bv = tb ? b0[j * ldb + l] : b0[l * ldb + j];
                s += av * bv, mag += fabs(av * bv);
            }
            double cv = c_nan ? 0 : c0[i * ldc + j];
            want[i * ldc + j] = alpha * s + beta * cv;
            worst = fmax(worst, fabs(alpha) * mag + fabs(beta * cv));
        }
    mpt__tensor_t a = put(dev, 3, asz, a0), b = put(dev, 5, bsz, b0), c = put(dev, 2, csz, c0);
    ck_assert_mpt_ok(mpt__op_gemm(ta, tb, m, n, k, alpha, &a, lda, &b, ldb, beta, &c, ldc));
    get(&c, got);
    /* A float dot product of k terms, in whatever order CLBlast uses, is
     * within k u sum|a b| of the exact one; alpha, beta and the final sum
     * add three roundings: (k + 3) u times the largest sum|terms|. */
    char what[64];
    snprintf(what, sizeof what, "gemm ta=%d tb=%d k=%zu beta=%g C", ta, tb, k, beta);
    ck_assert_close(got, want, csz, (double)(k + 3) * U * worst, 0, what);
    get(&a, NULL), get(&b, NULL);
    free(a0), free(b0), free(c0), free(got), free(want);
    mpt_buffer_free(a.buf), mpt_buffer_free(b.buf), mpt_buffer_free(c.buf);
}

START_TEST(gemm_four_transposes)
{
    mpt_devices_t *set = test_open_with_provider("0", _i);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            check_gemm(dev, ta, tb, 13, 7, 29, 1.5f, 0.5f, 0);
    check_gemm(dev, 0, 1, 1, 5, 300, -1.0f, 1.0f, 0); /* a row vector, long k */
    mpt_devices_free(set);
}
END_TEST

START_TEST(gemm_beta_zero_ignores_c)
{
    mpt_devices_t *set = test_open_with_provider("0", _i);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    /* BLAS: with beta = 0, C is output only; a fresh buffer may hold NaN. */
    check_gemm(dev, 0, 0, 6, 5, 4, 1.0f, 0.0f, 1);
    mpt_devices_free(set);
}
END_TEST

START_TEST(gemm_k_zero_scales_c_only)
{
    mpt_devices_t *set = test_open_with_provider("0", _i);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    /* k = 0: C = beta C over the m x n block only, padding kept. */
    check_gemm(dev, 0, 0, 4, 3, 0, 1.0f, 0.5f, 0);
    mpt_devices_free(set);
}
END_TEST

START_TEST(sum_rows_beta)
{
    mpt_devices_t *set = test_open_with_provider("0", _i);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    const size_t rows = 37, cols = 11;
    float *dy0 = rnd(500, rows * cols, 1.0f), *db0 = rnd(501, cols, 1.0f), *got = falloc(cols);
    double want[11], worst = 0;
    mpt__tensor_t dy = put(dev, 4, rows * cols, dy0);
    const float betas[2] = {0.0f, 0.5f};
    for (int k = 0; k < 2; k++) {
        for (size_t c = 0; c < cols; c++) {
            double s = 0, mag = 0;
            for (size_t r = 0; r < rows; r++)
                s += dy0[r * cols + c], mag += fabs(dy0[r * cols + c]);
            want[c] = betas[k] * (double)db0[c] + s;
            worst = fmax(worst, mag + fabs(db0[c]));
        }
        mpt__tensor_t db = put(dev, 1, cols, db0);
        ck_assert_mpt_ok(mpt__op_sum_rows(&dy, rows, cols, betas[k], &db));
        get(&db, got);
        /* a sum of rows terms plus the beta term: (rows + 2) u sum|terms| */
        ck_assert_close(got, want, cols, (rows + 2) * U * worst, 0, "sum_rows db");
        mpt_buffer_free(db.buf);
    }
    get(&dy, NULL);
    free(dy0), free(db0), free(got);
    mpt_buffer_free(dy.buf);
    mpt_devices_free(set);
}
END_TEST

/* count GEMMs of one shape at offsets inside shared buffers, as attention
 * runs them, against the double reference; the gaps between the C
 * matrices must keep their sentinels. */
static void check_gemm_batched(mpt_device_t *dev, int ta, int tb)
{
    const size_t count = 5, m = 6, n = 5, k = 7, gap = 3;
    const float alpha = 0.75f, beta = 0.5f;
    size_t lda = ta ? m : k, ldb = tb ? k : n, ldc = n;
    size_t asz = m * k, bsz = k * n, csz = m * n;
    size_t a_off[5], b_off[5], c_off[5];
    size_t atot = count * (asz + gap), btot = count * (bsz + gap), ctot = count * (csz + gap);
    float *a0 = rnd(700 + 2 * ta + tb, atot, 1.0f), *b0 = rnd(710 + 2 * ta + tb, btot, 1.0f),
          *c0 = rnd(720, ctot, 1.0f), *got = falloc(ctot);
    double *want = dalloc(ctot), worst = 0;
    for (size_t i = 0; i < ctot; i++)
        want[i] = c0[i];
    for (size_t g = 0; g < count; g++) {
        /* in reverse order, so that a provider ignoring the offsets fails */
        a_off[g] = (count - 1 - g) * (asz + gap), b_off[g] = g * (bsz + gap);
        c_off[g] = (count - 1 - g) * (csz + gap);
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double sum = 0, mag = 0;
                for (size_t l = 0; l < k; l++) {
                    double av = a0[a_off[g] + (ta ? l * lda + i : i * lda + l)];
                    double bv = b0[b_off[g] + (tb ? j * ldb + l : l * ldb + j)];
                    sum += av * bv, mag += fabs(av * bv);
                }
                double cv = c0[c_off[g] + i * ldc + j];
                want[c_off[g] + i * ldc + j] = alpha * sum + beta * cv;
                worst = fmax(worst, fabs(alpha) * mag + fabs(beta * cv));
            }
    }
    mpt__tensor_t a = put(dev, 2, atot, a0), b = put(dev, 3, btot, b0), c = put(dev, 1, ctot, c0);
    ck_assert_mpt_ok(mpt__op_gemm_batched(ta, tb, m, n, k, alpha, &a, a_off, lda, &b, b_off, ldb,
                                          beta, &c, c_off, ldc, count));
    get(&c, got);
    /* as check_gemm: (k + 3) u times the largest sum of |terms|; the gaps
     * (want = c0 there) must come back bitwise, which a tolerance of this
     * size cannot tell from a write: they are checked apart. */
    char what[64];
    snprintf(what, sizeof what, "batched gemm ta=%d tb=%d C", ta, tb);
    ck_assert_close(got, want, ctot, (double)(k + 3) * U * worst, 0, what);
    for (size_t g = 0; g < count; g++)
        for (size_t i = 0; i < gap; i++)
            ck_assert_msg(memcmp(&got[c_off[g] + csz + i], &c0[c_off[g] + csz + i],
                                 sizeof(float)) == 0, "gap float %zu after C %zu changed", i, g);
    get(&a, NULL), get(&b, NULL);
    free(a0), free(b0), free(c0), free(got), free(want);
    mpt_buffer_free(a.buf), mpt_buffer_free(b.buf), mpt_buffer_free(c.buf);
}

START_TEST(gemm_batched_four_transposes)
{
    mpt_devices_t *set = test_open_with_provider("0", _i);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            check_gemm_batched(dev, ta, tb);
    mpt_devices_free(set);
}
END_TEST

/* Kernels before a GEMM, the GEMM, kernels and a second GEMM after it, all
 * enqueued without waiting: the GEMM must read what the fills wrote (not
 * the sentinels under them) and the scale and second GEMM must read its
 * result.  Every value is a small integer times a power of two, exact in
 * float whatever the order of the sums: the check is exact. */
START_TEST(gemm_keeps_queue_order)
{
    mpt_devices_t *set = test_open_with_provider("0", _i);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    /* MPT_TEST_SMALL: k = 32 and 4,096 busy floats instead of 8 M (a
     * simulator runs the 24 fills of 8 M work-items for hours); the order
     * is still what the exact values below check. */
    const size_t m = 48, k = test_small() ? 32 : 256, n = 40;
    const size_t nbusy = test_small() ? (size_t)1 << 12 : (size_t)1 << 23;
    mpt__tensor_t a = put(dev, 7, m * k, NULL), b = put(dev, 1, k * n, NULL),
                  c = put(dev, 3, m * n, NULL), d = put(dev, 2, m * m, NULL),
                  e = put(dev, 4, m * m, NULL), busy = put(dev, 0, nbusy, NULL);
    float *got = falloc(m * m);
    for (int round = 0; round < 3; round++) {
        /* tens of milliseconds of queued work first, so that a GEMM that
         * did not wait for the queue would run before the fills below */
        for (int i = 0; i < 8; i++)
            ck_assert_mpt_ok(mpt__op_fill(&busy, nbusy, (float)i));
        ck_assert_mpt_ok(mpt__op_fill(&a, m * k, 2.0f + round));
        ck_assert_mpt_ok(mpt__op_fill(&b, k * n, 0.5f));
        /* C = A B: every element k * (2 + round) * 0.5 */
        ck_assert_mpt_ok(mpt__op_gemm(0, 0, m, n, k, 1.0f, &a, k, &b, n, 0.0f, &c, n));
        ck_assert_mpt_ok(mpt__op_scale(&c, m * n, 0.125f)); /* k / 16 (2 + round) */
        /* D = C C^T: n * (k / 16 (2 + round))^2, then E = relu(D) */
        ck_assert_mpt_ok(mpt__op_gemm(0, 1, m, m, n, 1.0f, &c, n, &c, n, 0.0f, &d, m));
        ck_assert_mpt_ok(mpt__op_relu_forward(&d, &e, m * m));
        get(&e, got);
        float cij = (float)k / 16.0f * (float)(2 + round), want = (float)n * cij * cij;
        for (size_t i = 0; i < m * m; i++)
            ck_assert_msg(got[i] == want, "%s, round %d: E[%zu] = %g, want %g",
                          test_gemm_provider(_i), round, i, got[i], want);
    }
    free(got);
    mpt_buffer_free(a.buf), mpt_buffer_free(b.buf), mpt_buffer_free(c.buf);
    mpt_buffer_free(d.buf), mpt_buffer_free(e.buf), mpt_buffer_free(busy.buf);
    mpt_devices_free(set);
}
END_TEST

/* Buffers freed and made again between GEMMs, of the same size, so that
 * OpenCL may hand out a freed buffer's handle again: the host provider
 * remembers each buffer's host address after its first map
 * (device/gemm_host.c) and must forget it when the buffer goes, or a GEMM
 * would read and write the freed memory.  Integer data: exact sums. */
START_TEST(gemm_after_buffers_are_made_again)
{
    mpt_devices_t *set = test_open_with_provider("0", _i);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    const size_t m = 16, k = 8, n = 12;
    float *got = falloc(m * n);
    for (int round = 0; round < 20; round++) {
        mpt__tensor_t a = put(dev, 0, m * k, NULL), b = put(dev, 0, k * n, NULL),
                      c = put(dev, 0, m * n, NULL);
        ck_assert_mpt_ok(mpt__op_fill(&a, m * k, (float)(round + 1)));
        ck_assert_mpt_ok(mpt__op_fill(&b, k * n, 2.0f));
        ck_assert_mpt_ok(mpt__op_gemm(0, 0, m, n, k, 1.0f, &a, k, &b, n, 0.0f, &c, n));
        get(&c, got);
        for (size_t i = 0; i < m * n; i++) /* k (round + 1) 2 */
            ck_assert_msg(got[i] == (float)(k * (round + 1) * 2), "%s, round %d: C[%zu] = %g",
                          test_gemm_provider(_i), round, i, got[i]);
        mpt_buffer_free(a.buf), mpt_buffer_free(b.buf), mpt_buffer_free(c.buf);
    }
    free(got);
    mpt_devices_free(set);
}
END_TEST

/* The bias gradient allocates nothing per call: CLBlast's GEMV keeps one
 * vector of ones per device, grown to the largest row count and then
 * reused; the host provider needs none.  Integer data: sums are exact. */
START_TEST(sum_rows_keeps_one_ones_vector)
{
    mpt_devices_t *set = test_open_with_provider("0", _i);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    const size_t cols = 9, row_counts[] = {37, 64, 37, 5, 64};
    float *dy0 = falloc(64 * cols), got[9];
    for (size_t i = 0; i < 64 * cols; i++)
        dy0[i] = (float)((int)(i % 7) - 3);
    mpt__tensor_t dy = put(dev, 2, 64 * cols, dy0), db = put(dev, 1, cols, NULL);
    cl_mem first = NULL;
    for (size_t t = 0; t < sizeof row_counts / sizeof *row_counts; t++) {
        size_t rows = row_counts[t];
        ck_assert_mpt_ok(mpt__op_sum_rows(&dy, rows, cols, 0.0f, &db));
        get(&db, got);
        for (size_t j = 0; j < cols; j++) {
            float want = 0;
            for (size_t r = 0; r < rows; r++)
                want += dy0[r * cols + j];
            ck_assert_msg(got[j] == want, "rows %zu: db[%zu] = %g, want %g", rows, j, got[j],
                          want);
        }
        if (dev->gemm_host) {
            ck_assert_ptr_null(dev->ones);
        } else if (rows == 64) {
            if (!first)
                first = dev->ones; /* grown to 64 here, once */
            ck_assert_ptr_eq(dev->ones, first);
            ck_assert_uint_ge(dev->ones_len, 64);
        }
    }
    free(dy0);
    mpt_buffer_free(dy.buf), mpt_buffer_free(db.buf);
    mpt_devices_free(set);
}
END_TEST

/* OpenBLAS has one thread count per process, so the host-provider devices
 * of a set share one: never above any device's compute units, never more
 * in total than the cores, at least one; CLBlast devices are left alone. */
START_TEST(host_blas_threads_shared_by_a_set)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    mpt_device_t devs[3];
    mpt_device_t *p[3] = {&devs[0], &devs[1], &devs[2]};
    memset(devs, 0, sizeof devs);
    /* two one-unit devices ("basic basic"): one thread each */
    devs[0].gemm_host = devs[1].gemm_host = 1;
    devs[0].info.compute_units = devs[1].info.compute_units = 1;
    mpt__gemm_set_threads(p, 2);
    ck_assert_int_eq(devs[0].blas_threads, 1);
    ck_assert_int_eq(devs[1].blas_threads, 1);
    /* units 1000 and 2, plus a CLBlast device: the same count for both,
     * at most 2, at most cores / 2, at least 1; the third untouched */
    devs[0].info.compute_units = 1000, devs[1].info.compute_units = 2;
    devs[2].gemm_host = 0, devs[2].blas_threads = 99, devs[2].info.compute_units = 8;
    mpt__gemm_set_threads(p, 3);
    ck_assert_int_eq(devs[0].blas_threads, devs[1].blas_threads);
    ck_assert_int_ge(devs[0].blas_threads, 1);
    ck_assert_int_le(devs[0].blas_threads, 2);
    ck_assert_int_le(devs[0].blas_threads, cores / 2 > 1 ? cores / 2 : 1);
    ck_assert_int_eq(devs[2].blas_threads, 99);
    /* one device alone: its units, bounded by the cores */
    mpt__gemm_set_threads(p, 1);
    ck_assert_int_ge(devs[0].blas_threads, 1);
    ck_assert_int_le(devs[0].blas_threads, cores);
}
END_TEST

START_TEST(bad_mpt_blas_is_refused)
{
    mpt_devices_t *set = NULL;
    ck_assert_int_eq(setenv("MPT_BLAS", "fastest", 1), 0);
    int status = mpt_devices_open("0", &set);
    unsetenv("MPT_BLAS");
    ck_assert_int_eq(status, MPT_ERR_PARSE);
    ck_assert_ptr_null(set);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "MPT_BLAS='fastest'"));
}
END_TEST

START_TEST(nrm2_scale_axpy)
{
    mpt_devices_t *set;
    mpt_device_t *dev = open_device(&set);
    const size_t n = 4099;
    float *x0 = rnd(600, n, 1.0f), *y0 = rnd(601, n, 1.0f), *got = falloc(n), norm = -1;
    double *want = dalloc(n), ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)x0[i] * x0[i];
    mpt__tensor_t x = put(dev, 3, n, x0), y = put(dev, 6, n, y0);
    ck_assert_mpt_ok(mpt__op_nrm2(&x, n, &norm));
    /* a float sum of n positive squares is within n u relative whatever the
     * order (a tree is far better, but the bound must hold for any); sqrt
     * halves it and adds 3 ulp. */
    double want_norm = sqrt(ss);
    ck_assert_close(&norm, &want_norm, 1, 0, (n / 2.0 + 6) * U, "nrm2");
    ck_assert_mpt_ok(mpt__op_nrm2(&x, 1, &norm)); /* one element: |x0| */
    want_norm = fabs(x0[0]);
    ck_assert_close(&norm, &want_norm, 1, 0, 8 * U, "nrm2 of one");
    ck_assert_mpt_ok(mpt__op_nrm2(&x, 0, &norm));
    ck_assert(norm == 0.0f);

    ck_assert_mpt_ok(mpt__op_scale(&x, n, -0.75f));
    get(&x, got);
    for (size_t i = 0; i < n; i++)
        want[i] = -0.75 * x0[i];
    ck_assert_close(got, want, n, 0, TOL_ONE_OP, "scale x"); /* one product */

    ck_assert_mpt_ok(mpt__op_axpy(n, 0.3f, &x, &y));
    get(&y, got);
    for (size_t i = 0; i < n; i++)
        want[i] = y0[i] + 0.3 * (double)(-0.75f * x0[i]);
    /* y + a x with |a x| <= 0.3, |y| <= 1: a product and a sum round at
     * most u (0.3 + 1.3), fused or not: 2u absolute. */
    ck_assert_close(got, want, n, 2 * U, 0, "axpy y");
    free(x0), free(y0), free(got), free(want);
    mpt_buffer_free(x.buf), mpt_buffer_free(y.buf);
    mpt_devices_free(set);
}
END_TEST

/* ---- a linear layer with its activation (tensor/linear.c) ---------------- */

static double silu_ref(double x)
{
    return x / (1 + exp(-x));
}

static double silu_grad_ref(double x)
{
    double s = 1 / (1 + exp(-x));
    return s * (1 + x * (1 - s));
}

/* act(z) and act'(z) in double for the codes of mpt__act_t. */
static double act_ref(int act, double z)
{
    return act == MPT_ACT_RELU ? relu_ref(z) : act == MPT_ACT_GELU ? gelu_ref(z)
                                             : act == MPT_ACT_SILU ? silu_ref(z) : z;
}

static double act_grad_ref(int act, double z, double dy)
{
    return act == MPT_ACT_RELU ? relu_grad_ref(z, dy)
           : act == MPT_ACT_GELU ? dy * gelu_grad_ref(z)
           : act == MPT_ACT_SILU ? dy * silu_grad_ref(z) : dy;
}

/* The fused forward and backward of batch x in -> out with activation
 * `act`, each output against a double reference, and the launches each
 * provider takes: CLBlast one GEMM + one kernel forward, one kernel + two
 * GEMMs backward; the host BLAS one call each way, no kernel. */
static void check_linear(mpt_device_t *dev, int act)
{
    const size_t batch = 13, in = 29, out = 11;
    const double wb = 0.5; /* |x| <= 2, |w|, |b| <= 0.5: |z| <= 29.5, mostly a few */
    float *x0 = rnd(800 + act, batch * in, 2.0f), *w0 = rnd(810 + act, out * in, (float)wb),
          *b0 = rnd(820 + act, out, (float)wb), *dy0 = rnd(830 + act, batch * out, 1.0f);
    float *z = falloc(batch * out), *y = falloc(batch * out), *dz = falloc(batch * out),
          *dw = falloc(out * in), *db = falloc(out), *dx = falloc(batch * in);
    double *want = dalloc(batch * in + out * in), *tol = dalloc(batch * out);
    mpt__tensor_t tx = put(dev, 3, batch * in, x0), tw = put(dev, 2, out * in, w0),
                  tb = put(dev, 5, out, b0), tz = put(dev, 1, batch * out, NULL),
                  ty = put(dev, 4, batch * out, NULL), tdy = put(dev, 2, batch * out, dy0),
                  tdw = put(dev, 6, out * in, NULL), tdb = put(dev, 3, out, NULL),
                  tdx = put(dev, 2, batch * in, NULL);
    char what[64];
    unsigned long k0 = dev->launches, b0c = dev->blas_calls;
    ck_assert_mpt_ok(mpt__op_linear_forward(&tx, &tw, &tb, (mpt__act_t)act, batch, in, out, &tz,
                                            act ? &ty : NULL));
    ck_assert_uint_eq(dev->launches - k0, dev->gemm_host ? 0 : 1); /* bias or bias + act */
    ck_assert_uint_eq(dev->blas_calls - b0c, 1);
    get(&tz, z);
    /* z: a dot product of `in` terms and the bias, (in + 4) u sum|terms|. */
    double zmax = 0;
    for (size_t r = 0; r < batch; r++)
        for (size_t c = 0; c < out; c++) {
            double s = b0[c], mag = fabs(b0[c]);
            for (size_t i = 0; i < in; i++)
                s += (double)x0[r * in + i] * w0[c * in + i],
                    mag += fabs((double)x0[r * in + i] * w0[c * in + i]);
            want[r * out + c] = s, tol[r * out + c] = (double)(in + 4) * U * mag;
            zmax = fmax(zmax, fabs(s));
        }
    for (size_t i = 0; i < batch * out; i++) {
        double one = want[i];
        snprintf(what, sizeof what, "linear act %d z", act);
        ck_assert_close(&z[i], &one, 1, tol[i], 0, what);
    }
    if (act) {
        get(&ty, y);
        for (size_t i = 0; i < batch * out; i++)
            want[i] = act_ref(act, z[i]); /* of the z it kept: the activation alone */
        /* As the activation tests: tanh's 5 ulp and its argument's roundings
         * cost 0.5 |z| (TANH_ABS + 6u) absolute (GELU; SiLU's exp less), and
         * the products 10u relative; ReLU is a select, exact. */
        snprintf(what, sizeof what, "linear act %d y", act);
        ck_assert_close(y, want, batch * out, act == MPT_ACT_RELU ? 0 : 0.5 * zmax * (TANH_ABS + 6 * U),
                        act == MPT_ACT_RELU ? 0 : 10 * U, what);
    }
    k0 = dev->launches, b0c = dev->blas_calls;
    ck_assert_mpt_ok(mpt__op_linear_backward(&tx, &tw, &tz, (mpt__act_t)act, batch, in, out, &tdy,
                                             &tdw, &tdb, &tdx));
    ck_assert_uint_eq(dev->launches - k0, dev->gemm_host ? 0 : act ? 1 : 0);
    ck_assert_uint_eq(dev->blas_calls - b0c, dev->gemm_host ? 1 : act ? 2 : 3);
    /* dz (in dy's place): act'(z) dy, bounded as gelu_forward_backward
     * bounds GELU's: its 1 - t^2 carries twice tanh's error, multiplied by
     * 0.5 |z| sqrt(2/pi) (1 + 3 * 0.044715 z^2) at the largest |z| below
     * the clamp (9.1, beyond which t = +-1 exactly); SiLU's exp error is
     * smaller.  ReLU selects and no activation passes dy: exact. */
    get(&tdy, dz);
    for (size_t i = 0; i < batch * out; i++)
        want[i] = act_grad_ref(act, z[i], dy0[i]);
    double zm = fmin(zmax, 9.1), g = 0.5 * zm * GELU_B * (1 + 3 * GELU_K * zm * zm);
    snprintf(what, sizeof what, "linear act %d dz", act);
    ck_assert_close(dz, want, batch * out, act == MPT_ACT_GELU || act == MPT_ACT_SILU
                                               ? (2 * g + 0.5) * (TANH_ABS + 6 * U) : 0,
                    act == MPT_ACT_RELU || !act ? 0 : 10 * U, what);
    /* db, dW, dx from the dz it kept: sums of batch (db, dW) or out (dx)
     * products, (k + 3) u sum|terms| each. */
    get(&tdb, db);
    for (size_t c = 0; c < out; c++) {
        double s = 0, mag = 0;
        for (size_t r = 0; r < batch; r++)
            s += dz[r * out + c], mag += fabs(dz[r * out + c]);
        snprintf(what, sizeof what, "linear act %d db", act);
        ck_assert_close(&db[c], &s, 1, (double)(batch + 3) * U * mag, 0, what);
    }
    get(&tdw, dw);
    for (size_t c = 0; c < out; c++)
        for (size_t i = 0; i < in; i++) {
            double s = 0, mag = 0;
            for (size_t r = 0; r < batch; r++)
                s += (double)dz[r * out + c] * x0[r * in + i],
                    mag += fabs((double)dz[r * out + c] * x0[r * in + i]);
            snprintf(what, sizeof what, "linear act %d dW", act);
            ck_assert_close(&dw[c * in + i], &s, 1, (double)(batch + 3) * U * mag, 0, what);
        }
    get(&tdx, dx);
    for (size_t r = 0; r < batch; r++)
        for (size_t i = 0; i < in; i++) {
            double s = 0, mag = 0;
            for (size_t c = 0; c < out; c++)
                s += (double)dz[r * out + c] * w0[c * in + i],
                    mag += fabs((double)dz[r * out + c] * w0[c * in + i]);
            snprintf(what, sizeof what, "linear act %d dx", act);
            ck_assert_close(&dx[r * in + i], &s, 1, (double)(out + 3) * U * mag, 0, what);
        }
    get(&tx, NULL), get(&tw, NULL), get(&tb, NULL);
    free(x0), free(w0), free(b0), free(dy0), free(z), free(y), free(dz), free(dw), free(db),
        free(dx), free(want), free(tol);
    mpt__tensor_t *all[] = {&tx, &tw, &tb, &tz, &ty, &tdy, &tdw, &tdb, &tdx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        mpt_buffer_free(all[i]->buf);
}

START_TEST(linear_with_each_activation)
{
    mpt_devices_t *set = test_open_with_provider("0", _i);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    for (int act = MPT_ACT_NONE; act <= MPT_ACT_SILU; act++)
        check_linear(dev, act);
    mpt_devices_free(set);
}
END_TEST

/* Fusing changes the launches, not the result: under CLBlast the fused
 * forward's z and y are bitwise those of the separate GEMM, bias and
 * activation kernels (the same GEMM, the same per-element functions). */
START_TEST(fused_forward_equals_separate_ops)
{
    mpt_devices_t *set = test_open_with_provider("0", 0);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    const size_t batch = 9, in = 17, out = 23, n = batch * out;
    const char *fwd[] = {NULL, "mpt_relu_forward", "mpt_gelu_forward", "mpt_silu_forward"};
    float *x0 = rnd(850, batch * in, 3.0f), *w0 = rnd(851, out * in, 1.0f),
          *b0 = rnd(852, out, 1.0f), *a = falloc(n), *b = falloc(n);
    mpt__tensor_t tx = put(dev, 1, batch * in, x0), tw = put(dev, 2, out * in, w0),
                  tb = put(dev, 3, out, b0), tz = put(dev, 4, n, NULL), ty = put(dev, 5, n, NULL),
                  tz2 = put(dev, 6, n, NULL), ty2 = put(dev, 7, n, NULL);
    for (int act = MPT_ACT_RELU; act <= MPT_ACT_SILU; act++) {
        ck_assert_mpt_ok(mpt__op_linear_forward(&tx, &tw, &tb, (mpt__act_t)act, batch, in, out,
                                                &tz, &ty));
        ck_assert_mpt_ok(mpt__op_gemm(0, 1, batch, out, in, 1.0f, &tx, in, &tw, in, 0.0f, &tz2, out));
        ck_assert_mpt_ok(mpt__op_bias_add(&tz2, &tb, batch, out));
        ck_assert_mpt_ok(mpt__op_activation(fwd[act], &tz2, &ty2, n));
        get(&tz, a), get(&tz2, b);
        ck_assert_msg(memcmp(a, b, n * sizeof *a) == 0, "act %d: fused z differs", act);
        get(&ty, a), get(&ty2, b);
        ck_assert_msg(memcmp(a, b, n * sizeof *a) == 0, "act %d: fused y differs", act);
    }
    free(x0), free(w0), free(b0), free(a), free(b);
    mpt__tensor_t *all[] = {&tx, &tw, &tb, &tz, &ty, &tz2, &ty2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        mpt_buffer_free(all[i]->buf);
    mpt_devices_free(set);
}
END_TEST

/* --timing counts a CLBlast call whole: it is kept as a pair of markers
 * around the call (not the last kernel's event alone), which PoCL times,
 * and its time goes to the BLAS share. */
START_TEST(timing_brackets_clblast_calls)
{
    mpt_devices_t *set = test_open_with_provider("0", 0);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    /* 300: large enough for CLBlast's indirect GEMM (several kernels).
     * MPT_TEST_SMALL: 64, likely one direct kernel, since a simulator takes
     * minutes over 300^3; the bracket is still asserted around the call. */
    const size_t n = test_small() ? 64 : 300;
    float *a0 = rnd(870, n * n, 1.0f);
    mpt__tensor_t a = put(dev, 0, n * n, a0), c = put(dev, 0, n * n, NULL);
    double busy = 0, blas = 0;
    ck_assert_mpt_ok(mpt_device_set_timing(dev, 1));
    unsigned long calls = dev->blas_calls;
    ck_assert_mpt_ok(mpt__op_gemm(0, 0, n, n, n, 1.0f, &a, n, &a, n, 0.0f, &c, n));
    ck_assert_uint_eq(dev->blas_calls - calls, 1);
    ck_assert_uint_eq(dev->nevents, 1);
    ck_assert_ptr_nonnull(dev->event_start[0]); /* the marker before the call */
    ck_assert_int_eq(dev->event_blas[0], 1);
    ck_assert_mpt_ok(mpt_device_busy_seconds(dev, &busy, &blas));
    ck_assert_msg(blas > 0 && blas == busy, "busy %g s, BLAS %g s", busy, blas);
    ck_assert_uint_eq(dev->nevents, 0);
    ck_assert_mpt_ok(mpt_device_set_timing(dev, 0));
    free(a0);
    mpt_buffer_free(a.buf), mpt_buffer_free(c.buf);
    mpt_devices_free(set);
}
END_TEST

/* A test case with the timeout every case here needs: cold PoCL and
 * CLBlast compiles take seconds each. */
static TCase *tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 600);
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *ops_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase(s, "elementwise");
    tcase_add_test(tc, fill_odd_sizes_at_offsets);
    tcase_add_test(tc, bias_add_rows);
    tcase_add_test(tc, bias_add_channels_nchw);
    tcase_add_test(tc, bias_grad_channels_sums_n_and_p);
    tcase_add_test(tc, views_outside_their_buffer_are_refused);
    tc = tcase(s, "activations");
    tcase_add_test(tc, relu_forward_backward_odd_sizes);
    tcase_add_test(tc, relu_nan_as_torch);
    tcase_add_test(tc, gelu_forward_backward);
    tcase_add_test(tc, gelu_nan_inf_as_torch);
    tc = tcase(s, "loss");
    tcase_add_test(tc, softmax_xent_random);
    tcase_add_test(tc, softmax_xent_large_logits_stable);
    tcase_add_test(tc, softmax_xent_bad_label_gives_nan);
    tcase_add_test(tc, argmax_correct_ties_and_nan);
    tc = tcase(s, "optim");
    tcase_add_test(tc, sgd_momentum_three_steps);
    tcase_add_test(tc, adamw_three_steps);
    tc = tcase(s, "blas");
    tcase_add_loop_test(tc, gemm_four_transposes, 0, TEST_GEMM_PROVIDERS);
    tcase_add_loop_test(tc, gemm_beta_zero_ignores_c, 0, TEST_GEMM_PROVIDERS);
    tcase_add_loop_test(tc, gemm_k_zero_scales_c_only, 0, TEST_GEMM_PROVIDERS);
    tcase_add_loop_test(tc, sum_rows_beta, 0, TEST_GEMM_PROVIDERS);
    tcase_add_loop_test(tc, gemm_batched_four_transposes, 0, TEST_GEMM_PROVIDERS);
    tcase_add_loop_test(tc, gemm_keeps_queue_order, 0, TEST_GEMM_PROVIDERS);
    tcase_add_loop_test(tc, gemm_after_buffers_are_made_again, 0, TEST_GEMM_PROVIDERS);
    tcase_add_loop_test(tc, sum_rows_keeps_one_ones_vector, 0, TEST_GEMM_PROVIDERS);
    tcase_add_test(tc, host_blas_threads_shared_by_a_set);
    tcase_add_test(tc, bad_mpt_blas_is_refused);
    tcase_add_test(tc, nrm2_scale_axpy);
    tcase_add_loop_test(tc, linear_with_each_activation, 0, TEST_GEMM_PROVIDERS);
    tcase_add_test(tc, fused_forward_equals_separate_ops);
    tcase_add_test(tc, timing_brackets_clblast_calls);
    return s;
}

int main(void)
{
    return test_run(ops_suite(), 0);
}
