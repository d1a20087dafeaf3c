/*
 * tests/check_ops_conv.c: layer norm, max pooling, dropout and conv2d on a
 * PoCL device against plain-C references computed in double.  Inputs are
 * drawn with mpt__rng_uniform at fixed seeds; every device tensor sits at a
 * non-zero float offset of its buffer, so offset handling is tested too.
 *
 * Tolerances follow one error model, stated once: an fp32 sum of L terms
 * a_j computed by any order of additions has, in practice, an error of
 * about u * sqrt(L) * sum |a_j| (u = 2^-24, the unit roundoff: rounding
 * errors behave like a random walk; the worst case L * u * sum|a_j| is
 * never approached with random data).  We allow a factor 16 above that
 * typical size for the product roundings, the orders CLBlast picks and the
 * tail of the distribution, i.e. about 1e-6 * sqrt(L) * sum |a_j| per
 * element ("magnitude" below).  Relative to the element itself this is
 * ~1e-5 for the lengths used here, but stated against sum |a_j| it stays
 * valid when the sum cancels to near zero.
 *
 * Runs without fork (OpenCL in a forked child hangs); each test opens its
 * own device.
 */
#define _POSIX_C_SOURCE 200809L /* setenv, in testutil.h */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "tensor/tensor.h"
#include "reference.h"
#include "testutil.h"

#define U_ROUND (FLT_EPSILON / 2) /* 2^-24 */
#define SLACK 16.0                /* see the header comment */

/* ---- helpers ------------------------------------------------------------ */

static mpt_devices_t *open_device(mpt_device_t **dev)
{
    mpt_devices_t *set = NULL;
    ck_assert_mpt_ok(mpt_devices_open("0", &set));
    *dev = mpt_devices_get(set, 0);
    return set;
}

/* A 1-D tensor of n floats at float offset `off` of its own buffer (the
 * floats before it are filled with NaN so that a kernel reading them shows);
 * src may be NULL (then the tensor is NaN too). */
static mpt__tensor_t put(mpt_device_t *dev, size_t off, size_t n, const float *src)
{
    mpt_buffer_t *b = NULL;
    size_t total = off + n + 1;
    float *fill = malloc(total * sizeof *fill);
    ck_assert_ptr_nonnull(fill);
    for (size_t i = 0; i < total; i++)
        fill[i] = NAN;
    if (src)
        memcpy(fill + off, src, n * sizeof *fill);
    ck_assert_mpt_ok(mpt_buffer_create(dev, total * sizeof *fill, &b));
    ck_assert_mpt_ok(mpt_buffer_write(b, 0, fill, total * sizeof *fill));
    free(fill);
    size_t dims[1] = {n};
    return mpt__tensor(b, off, 1, dims);
}

static float *get(const mpt__tensor_t *t)
{
    float *out = malloc((mpt__tensor_numel(t) + 1) * sizeof *out);
    ck_assert_ptr_nonnull(out);
    ck_assert_mpt_ok(mpt__tensor_read(t, out));
    return out;
}

static float *uniform(uint64_t stream, size_t n, float bound, float shift)
{
    float *v = malloc((n + 1) * sizeof *v);
    ck_assert_ptr_nonnull(v);
    mpt__rng_uniform(1234, stream, 0, bound, v, n);
    for (size_t i = 0; i < n; i++)
        v[i] += shift;
    return v;
}

/* |got - want| <= tol[i] for every i (NaN wants NaN); names the first miss. */
static void check_within(const float *got, const double *want, const double *tol, size_t n,
                         const char *what)
{
    for (size_t i = 0; i < n; i++) {
        int ok = isnan(want[i]) ? isnan(got[i]) : fabs(got[i] - want[i]) <= tol[i];
        ck_assert_msg(ok, "%s[%zu] = %.9g, want %.9g (tolerance %g)", what, i, got[i], want[i],
                      tol[i]);
    }
}

/* tol[i] = SLACK * u * sqrt(L) * mag[i] (+ a floor of a few u * mag for L=1). */
static double *sum_tol(const double *mag, size_t n, double len)
{
    double *tol = malloc((n + 1) * sizeof *tol);
    ck_assert_ptr_nonnull(tol);
    for (size_t i = 0; i < n; i++)
        tol[i] = SLACK * U_ROUND * (sqrt(len) + 2.0) * mag[i];
    return tol;
}

/* ---- layer norm --------------------------------------------------------- */

/* Forward in double; also the per-row "condition" max|x| * rstd, which
 * scales the error of xhat = (x - mean) * rstd computed in fp32 (the error
 * of the mean is ~ u sqrt(cols) max|x|, magnified by rstd). */
static void ln_ref(const float *x, const float *g, const float *b, size_t rows, size_t cols,
                   double eps, double *y, double *mean, double *rstd, double *cond)
{
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * cols;
        double m = 0, v = 0, amax = 0;
        for (size_t c = 0; c < cols; c++)
            m += row[c], amax = fmax(amax, fabs(row[c]));
        m /= (double)cols;
        for (size_t c = 0; c < cols; c++)
            v += (row[c] - m) * (row[c] - m);
        double s = 1.0 / sqrt(v / (double)cols + eps);
        for (size_t c = 0; c < cols; c++)
            y[r * cols + c] = (row[c] - m) * s * g[c] + b[c];
        mean[r] = m, rstd[r] = s;
        if (cond)
            cond[r] = amax * s;
    }
}

/* The analytic backward in double. */
static void ln_ref_backward(const float *dy, const float *x, const float *g, size_t rows,
                            size_t cols, double eps, double *dx, double *dg, double *db)
{
    double *y = malloc(rows * cols * sizeof *y), *mean = malloc(rows * sizeof *mean),
           *rstd = malloc(rows * sizeof *rstd);
    float *zero = calloc(cols, sizeof *zero);
    ln_ref(x, g, zero, rows, cols, eps, y, mean, rstd, NULL);
    for (size_t c = 0; c < cols; c++)
        dg[c] = db[c] = 0;
    for (size_t r = 0; r < rows; r++) {
        double sg = 0, sgx = 0;
        for (size_t c = 0; c < cols; c++) {
            size_t i = r * cols + c;
            double xhat = (x[i] - mean[r]) * rstd[r], gi = (double)dy[i] * g[c];
            sg += gi, sgx += gi * xhat;
            dg[c] += (double)dy[i] * xhat, db[c] += dy[i];
        }
        for (size_t c = 0; c < cols; c++) {
            size_t i = r * cols + c;
            double xhat = (x[i] - mean[r]) * rstd[r], gi = (double)dy[i] * g[c];
            dx[i] = rstd[r] * (gi - sg / (double)cols - xhat * sgx / (double)cols);
        }
    }
    free(y), free(mean), free(rstd), free(zero);
}

/* L = sum(dy * layernorm(x)) in double, with x, gamma, beta as doubles. */
static double ln_loss(const double *x, const double *g, const double *b, const double *dy,
                      size_t rows, size_t cols, double eps)
{
    double loss = 0;
    for (size_t r = 0; r < rows; r++) {
        double m = 0, v = 0;
        for (size_t c = 0; c < cols; c++)
            m += x[r * cols + c];
        m /= (double)cols;
        for (size_t c = 0; c < cols; c++)
            v += (x[r * cols + c] - m) * (x[r * cols + c] - m);
        double s = 1.0 / sqrt(v / (double)cols + eps);
        for (size_t c = 0; c < cols; c++)
            loss += dy[r * cols + c] * ((x[r * cols + c] - m) * s * g[c] + b[c]);
    }
    return loss;
}

START_TEST(layernorm_reference_backward_matches_finite_differences)
{
    enum { R = 3, C = 6 };
    const double eps = 1e-5, h = 1e-5;
    float *xf = uniform(1, R * C, 1.0f, 0.5f), *gf = uniform(2, C, 0.5f, 1.0f),
          *dyf = uniform(3, R * C, 1.0f, 0.0f);
    double x[R * C], g[C], b[C], dy[R * C], dx[R * C], dg[C], db[C];
    for (int i = 0; i < R * C; i++)
        x[i] = xf[i], dy[i] = dyf[i];
    for (int c = 0; c < C; c++)
        g[c] = gf[c], b[c] = 0.1 * c;
    ln_ref_backward(dyf, xf, gf, R, C, eps, dx, dg, db);
    /* Central differences: truncation error ~ h^2 * |L'''| ~ 1e-10 here,
     * cancellation ~ 1e-16 * |L| / h ~ 1e-11; 1e-7 leaves room for both. */
    double *params[3] = {x, g, b}, *grads[3] = {dx, dg, db};
    int counts[3] = {R * C, C, C};
    const char *names[3] = {"dx", "dgamma", "dbeta"};
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < counts[p]; i++) {
            double keep = params[p][i];
            params[p][i] = keep + h;
            double up = ln_loss(x, g, b, dy, R, C, eps);
            params[p][i] = keep - h;
            double down = ln_loss(x, g, b, dy, R, C, eps);
            params[p][i] = keep;
            double fd = (up - down) / (2 * h);
            ck_assert_msg(fabs(fd - grads[p][i]) <= 1e-7 + 1e-6 * fabs(fd),
                          "%s[%d]: analytic %.12g, finite differences %.12g", names[p], i,
                          grads[p][i], fd);
        }
    free(xf), free(gf), free(dyf);
}
END_TEST

/* One layer norm case on the device: forward (y, mean, rstd) and backward
 * (dx, dgamma, dbeta, first overwriting NaN with beta_acc = 0, then
 * accumulating with beta_acc = 1). */
static void layernorm_case(mpt_device_t *dev, size_t rows, size_t cols, float shift)
{
    const float eps = 1e-5f;
    size_t n = rows * cols;
    float *x = uniform(10 + cols, n, 1.0f, shift), *g = uniform(11, cols, 0.5f, 1.0f),
          *b = uniform(12, cols, 0.5f, 0.0f), *dy = uniform(13, n, 1.0f, 0.0f);
    double *y = malloc(n * sizeof *y), *mean = malloc(rows * sizeof *mean),
           *rstd = malloc(rows * sizeof *rstd), *cond = malloc(rows * sizeof *cond),
           *dx = malloc(n * sizeof *dx), *dg = malloc(cols * sizeof *dg),
           *db = malloc(cols * sizeof *db), *tol = calloc(n + cols, sizeof *tol);
    ln_ref(x, g, b, rows, cols, eps, y, mean, rstd, cond);
    ln_ref_backward(dy, x, g, rows, cols, eps, dx, dg, db);

    mpt__tensor_t tx = put(dev, 3, n, x), tg = put(dev, 5, cols, g), tb = put(dev, 7, cols, b),
                  ty = put(dev, 9, n, NULL), tm = put(dev, 2, rows, NULL),
                  ts = put(dev, 4, rows, NULL), tdy = put(dev, 6, n, dy),
                  tdx = put(dev, 8, n, NULL), tdg = put(dev, 1, cols, NULL),
                  tdb = put(dev, 11, cols, NULL);
    ck_assert_mpt_ok(mpt__op_layernorm_forward(&tx, &tg, &tb, rows, cols, eps, &ty, &tm, &ts));
    ck_assert_mpt_ok(mpt__op_layernorm_backward(&tdy, &tx, &tg, &tm, &ts, rows, cols, 0.0f, &tdx,
                                                &tdg, &tdb));
    float *gy = get(&ty), *gm = get(&tm), *gs = get(&ts), *gdx = get(&tdx), *gdg = get(&tdg),
          *gdb = get(&tdb);
    double sq = sqrt((double)cols) + 4, sr = sqrt((double)rows) + 2;

    /* mean: a sum of cols values, |error| ~ u sqrt(cols) max|x|. */
    for (size_t r = 0; r < rows; r++)
        tol[r] = SLACK * U_ROUND * sq * cond[r] / rstd[r];
    check_within(gm, mean, tol, rows, "mean");
    /* rstd: a sum of positive squares, relative error u sqrt(cols), then
     * sqrt and a division.  The mean's error enters only at second order
     * (sum (d - e)^2 = sum d^2 + cols e^2 when sum d = 0), so no cond here:
     * this is what a one-pass E[x^2] - E[x]^2 fails when |mean| >> std. */
    for (size_t r = 0; r < rows; r++)
        tol[r] = SLACK * U_ROUND * sq * rstd[r];
    check_within(gs, rstd, tol, rows, "rstd");
    /* y: |gamma| (|error of xhat| ~ u sqrt(cols) cond) plus the roundings
     * of the last multiply-add, ~ u |y|. */
    for (size_t i = 0; i < n; i++)
        tol[i] = SLACK * U_ROUND * (sq * cond[i / cols] * fabs(g[i % cols]) + fabs(y[i]));
    check_within(gy, y, tol, n, "y");
    /* dx = rstd (g - mean(g) - xhat mean(g xhat)): the row means carry
     * u sqrt(cols) max|g| cond, times rstd. */
    for (size_t r = 0; r < rows; r++) {
        double gmax = 0;
        for (size_t c = 0; c < cols; c++)
            gmax = fmax(gmax, fabs(dy[r * cols + c] * g[c]));
        for (size_t c = 0; c < cols; c++)
            tol[r * cols + c] = SLACK * U_ROUND * sq * cond[r] * rstd[r] * gmax;
    }
    check_within(gdx, dx, tol, n, "dx");
    /* dgamma: sum over rows of dy * xhat (length rows), each xhat off by
     * u sqrt(cols) cond; dbeta: a plain sum of rows dy. */
    for (size_t c = 0; c < cols; c++) {
        double mag_xhat = 0, mag_cond = 0;
        for (size_t r = 0; r < rows; r++) {
            double d = fabs(dy[r * cols + c]);
            mag_xhat += d * fabs((x[r * cols + c] - mean[r]) * rstd[r]);
            mag_cond += d * cond[r];
        }
        tol[c] = SLACK * U_ROUND * (sr * mag_xhat + sq * mag_cond);
    }
    check_within(gdg, dg, tol, cols, "dgamma");
    for (size_t c = 0; c < cols; c++) {
        double mag = 0;
        for (size_t r = 0; r < rows; r++)
            mag += fabs(dy[r * cols + c]);
        tol[c] = SLACK * U_ROUND * sr * mag;
    }
    check_within(gdb, db, tol, cols, "dbeta");

    /* beta_acc = 1 adds a second, identical gradient: exactly 2x the first
     * device result (x + x is exact). */
    free(gdg), free(gdb);
    float *first_dg = get(&tdg), *first_db = get(&tdb);
    ck_assert_mpt_ok(mpt__op_layernorm_backward(&tdy, &tx, &tg, &tm, &ts, rows, cols, 1.0f, &tdx,
                                                &tdg, &tdb));
    gdg = get(&tdg), gdb = get(&tdb);
    for (size_t c = 0; c < cols; c++) {
        ck_assert_float_eq(gdg[c], 2.0f * first_dg[c]);
        ck_assert_float_eq(gdb[c], 2.0f * first_db[c]);
    }
    free(first_dg), free(first_db);

    mpt__tensor_t *all[] = {&tx, &tg, &tb, &ty, &tm, &ts, &tdy, &tdx, &tdg, &tdb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        mpt_buffer_free(all[i]->buf);
    free(x), free(g), free(b), free(dy), free(y), free(mean), free(rstd), free(cond), free(dx),
        free(dg), free(db), free(tol), free(gy), free(gm), free(gs), free(gdx), free(gdg),
        free(gdb);
}

START_TEST(layernorm_matches_reference)
{
    mpt_device_t *dev;
    mpt_devices_t *set = open_device(&dev);
    layernorm_case(dev, 37, 300, 0.0f);
    /* |mean| ~ 28 std: a one-pass E[x^2] - E[x]^2 loses ~10 bits of the
     * variance to cancellation (28^2 ~ 2^10) and fails the rstd check. */
    layernorm_case(dev, 16, 257, 16.0f);
    layernorm_case(dev, 5, 3, 0.5f);
    layernorm_case(dev, 4, 1, 1.0f); /* var 0: y = beta, rstd = 1/sqrt(eps) */
    mpt_devices_free(set);
}
END_TEST

START_TEST(layernorm_rejects_bad_shapes)
{
    mpt_device_t *dev;
    mpt_devices_t *set = open_device(&dev);
    mpt__tensor_t t = put(dev, 1, 8, NULL);
    ck_assert_mpt_fails(mpt__op_layernorm_forward(&t, &t, &t, 2, 0, 1e-5f, &t, &t, &t),
                        MPT_ERR_INVALID);
    ck_assert_mpt_fails(
        mpt__op_layernorm_forward(&t, &t, &t, (size_t)1 << 20, (size_t)1 << 13, 1e-5f, &t, &t, &t),
        MPT_ERR_RANGE);
    mpt_buffer_free(t.buf);
    mpt_devices_free(set);
}
END_TEST

/* ---- max pooling ------------------------------------------------------- */

/* torch MaxPool2d: clipped windows, strict > (first maximum wins) or NaN. */
static void pool_ref(const float *x, size_t planes, size_t h, size_t w, size_t k, size_t s,
                     size_t pad, double *y, double *argmax)
{
    size_t oh = (h + 2 * pad - k) / s + 1, ow = (w + 2 * pad - k) / s + 1;
    for (size_t p = 0; p < planes; p++)
        for (size_t oy = 0; oy < oh; oy++)
            for (size_t ox = 0; ox < ow; ox++) {
                long y0 = (long)(oy * s) - (long)pad, x0 = (long)(ox * s) - (long)pad;
                long y1 = y0 + (long)k < (long)h ? y0 + (long)k : (long)h;
                long x1 = x0 + (long)k < (long)w ? x0 + (long)k : (long)w;
                y0 = y0 < 0 ? 0 : y0, x0 = x0 < 0 ? 0 : x0;
                double best = -INFINITY;
                long at = y0 * (long)w + x0;
                for (long iy = y0; iy < y1; iy++)
                    for (long ix = x0; ix < x1; ix++) {
                        double v = x[p * h * w + (size_t)(iy * (long)w + ix)];
                        if (v > best || isnan(v))
                            best = v, at = iy * (long)w + ix;
                    }
                size_t o = (p * oh + oy) * ow + ox;
                y[o] = best, argmax[o] = (double)at;
            }
}

static void pool_case(mpt_device_t *dev, size_t n, size_t c, size_t h, size_t w, size_t k,
                      size_t s, size_t pad, int kind)
{
    size_t planes = n * c, oh = (h + 2 * pad - k) / s + 1, ow = (w + 2 * pad - k) / s + 1;
    size_t ni = planes * h * w, no = planes * oh * ow;
    float *x = uniform(20 + k, ni, 1.0f, 0.0f), *dy = uniform(21, no, 1.0f, 0.0f);
    if (kind == 1) /* ties: four levels only, so most windows hold equal maxima */
        for (size_t i = 0; i < ni; i++)
            x[i] = floorf(2.0f * x[i]);
    if (kind == 2) /* all negative: a zero from padding would win if padding counted */
        for (size_t i = 0; i < ni; i++)
            x[i] = -1.0f - fabsf(x[i]);
    if (kind == 3) /* NaN propagates to every window that sees it */
        x[h * w + w + 1] = NAN;
    double *y = malloc(no * sizeof *y), *am = malloc(no * sizeof *am),
           *dx = calloc(ni, sizeof *dx), *tol = calloc(ni, sizeof *tol);
    pool_ref(x, planes, h, w, k, s, pad, y, am);
    for (size_t o = 0; o < no; o++) {
        size_t i = (o / (oh * ow)) * h * w + (size_t)am[o];
        dx[i] += dy[o];
        tol[i] += U_ROUND * SLACK * fabs(dy[o]); /* a few terms of an fp32 sum */
    }

    mpt__tensor_t tx = put(dev, 5, ni, x), ty = put(dev, 3, no, NULL), ta = put(dev, 7, no, NULL),
                  tdy = put(dev, 2, no, dy), tdx = put(dev, 9, ni, NULL);
    ck_assert_mpt_ok(mpt__op_maxpool_forward(&tx, n, c, h, w, k, s, pad, &ty, &ta));
    ck_assert_mpt_ok(mpt__op_maxpool_backward(&tdy, &ta, n, c, h, w, k, s, pad, &tdx));
    float *gy = get(&ty), *ga = get(&ta), *gdx = get(&tdx);
    ck_assert_close(gy, y, no, 0.0, 0.0, "maxpool y");        /* a maximum is exact */
    ck_assert_close(ga, am, no, 0.0, 0.0, "maxpool argmax");  /* indices exact below 2^24 */
    check_within(gdx, dx, tol, ni, "maxpool dx");
    mpt_buffer_free(tx.buf), mpt_buffer_free(ty.buf), mpt_buffer_free(ta.buf);
    mpt_buffer_free(tdy.buf), mpt_buffer_free(tdx.buf);
    free(x), free(dy), free(y), free(am), free(dx), free(tol), free(gy), free(ga), free(gdx);
}

START_TEST(maxpool_matches_reference)
{
    mpt_device_t *dev;
    mpt_devices_t *set = open_device(&dev);
    for (int kind = 0; kind < 4; kind++) {
        pool_case(dev, 2, 3, 9, 11, 3, 2, 1, kind); /* overlaps and padding */
        pool_case(dev, 2, 3, 8, 8, 2, 2, 0, kind);  /* the common 2x2 */
        pool_case(dev, 1, 2, 7, 6, 3, 1, 1, kind);  /* stride 1: up to 9 windows per input */
        pool_case(dev, 3, 1, 10, 9, 4, 3, 2, kind); /* padding = k/2, uncovered inputs */
    }
    mpt_devices_free(set);
}
END_TEST

START_TEST(maxpool_rejects_bad_shapes)
{
    mpt_device_t *dev;
    mpt_devices_t *set = open_device(&dev);
    mpt__tensor_t t = put(dev, 1, 64, NULL);
    ck_assert_mpt_fails(mpt__op_maxpool_forward(&t, 1, 1, 8, 8, 3, 1, 2, &t, &t),
                        MPT_ERR_INVALID); /* padding above k/2 */
    ck_assert_mpt_fails(mpt__op_maxpool_forward(&t, 1, 1, 8, 8, 3, 0, 1, &t, &t),
                        MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__op_maxpool_forward(&t, 1, 1, 2, 2, 5, 1, 1, &t, &t),
                        MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__op_maxpool_backward(&t, &t, 1, 1, 4097, 4097, 2, 2, 0, &t),
                        MPT_ERR_RANGE); /* argmax floats would not be exact */
    mpt_buffer_free(t.buf);
    mpt_devices_free(set);
}
END_TEST

/* ---- dropout ----------------------------------------------------------- */

/* The host rule of core/rng.h. */
static int keeps(uint64_t seed, uint64_t stream, size_t i, float p)
{
    return mpt__u01(mpt__rng_u32(seed, stream, i)) >= p;
}

START_TEST(dropout_mask_is_the_host_philox_rule)
{
    /* Not a multiple of 4: the last block is partial.  MPT_TEST_SMALL: 10,003
     * elements (the simulator interprets each work-item). */
    const size_t n = test_small() ? 10003 : 1000003;
    const float p = 0.3f, scale = 1.0f / (1.0f - p);
    const uint64_t seed = 0x0123456789abcdefull, stream = 0xfedcba9876543210ull;
    mpt_device_t *dev;
    mpt_devices_t *set = open_device(&dev);
    float *x = uniform(30, n, 0.5f, 1.0f), *dy = uniform(31, n, 1.0f, 0.0f); /* x in [0.5, 1.5) */
    mpt__tensor_t tx = put(dev, 3, n, x), ty = put(dev, 5, n, NULL), tdy = put(dev, 7, n, dy),
                  tdx = put(dev, 1, n, NULL), tz = put(dev, 2, n, NULL);
    ck_assert_mpt_ok(mpt__op_dropout_forward(&tx, &ty, n, NULL, p, seed, stream));
    ck_assert_mpt_ok(mpt__op_dropout_backward(&tdy, &tdx, n, NULL, p, seed, stream));
    ck_assert_mpt_ok(mpt__op_dropout_forward(&tx, &tz, n, NULL, p, seed, stream + 1));
    float *y = get(&ty), *dx = get(&tdx), *z = get(&tz);

    /* Bit-exact: the same keep rule and the same single fp32 product with
     * the host-rounded scale (counted, then asserted once: a million Check
     * assertions would be slow). */
    size_t kept = 0, bad_y = 0, bad_dx = 0, same_other = 0, first_bad = n;
    for (size_t i = 0; i < n; i++) {
        int keep = keeps(seed, stream, i, p);
        float wy = x[i] * (keep ? scale : 0.0f), wdx = dy[i] * (keep ? scale : 0.0f);
        kept += y[i] != 0.0f;
        if (y[i] != wy)
            bad_y++, first_bad = first_bad < i ? first_bad : i;
        if (dx[i] != wdx)
            bad_dx++, first_bad = first_bad < i ? first_bad : i;
        same_other += (z[i] != 0.0f) == keep;
    }
    ck_assert_msg(bad_y == 0 && bad_dx == 0,
                  "%zu y and %zu dx elements differ from the host rule, first at %zu", bad_y,
                  bad_dx, first_bad);
    /* Keep count ~ Binomial(n, 1 - p): within 4 standard deviations. */
    double mean = (double)n * (1.0 - p), sd = sqrt((double)n * p * (1.0 - p));
    ck_assert_msg(fabs((double)kept - mean) <= 4.0 * sd, "kept %zu of %zu, expected %.0f +- %.0f",
                  kept, n, mean, 4.0 * sd);
    /* Another stream is another mask: two independent masks agree on
     * p^2 + (1-p)^2 = 58% of elements, far from 100%: within 0.01, or 4
     * standard deviations of the fraction when n is small (0.0197 at
     * 10,003). */
    double agree = (double)same_other / (double)n;
    ck_assert_msg(fabs(agree - 0.58) < fmax(0.01, 4.0 * sqrt(0.58 * 0.42 / (double)n)),
                  "streams agree on %.4f of elements", agree);
    mpt_buffer_free(tx.buf), mpt_buffer_free(ty.buf), mpt_buffer_free(tdy.buf);
    mpt_buffer_free(tdx.buf), mpt_buffer_free(tz.buf);
    free(x), free(dy), free(y), free(dx), free(z);
    mpt_devices_free(set);
}
END_TEST

START_TEST(dropout_edge_cases)
{
    const size_t n = 7;
    const float x[7] = {1.5f, -2.0f, 0.25f, 3.0f, -0.5f, 8.0f, -1.0f};
    mpt_device_t *dev;
    mpt_devices_t *set = open_device(&dev);
    mpt__tensor_t tx = put(dev, 3, n, x), ty = put(dev, 2, n, NULL);
    float got[8];

    /* p = 0: the identity, bit for bit. */
    ck_assert_mpt_ok(mpt__op_dropout_forward(&tx, &ty, n, NULL, 0.0f, 5, 6));
    ck_assert_mpt_ok(mpt_buffer_read(ty.buf, 2 * sizeof(float), got, 8 * sizeof(float)));
    ck_assert_mem_eq(got, x, sizeof x);
    ck_assert(isnan(got[7])); /* the guard: nothing written past n */
    /* p = 1: all zeros, no division by zero. */
    ck_assert_mpt_ok(mpt__op_dropout_backward(&tx, &ty, n, NULL, 1.0f, 5, 6));
    ck_assert_mpt_ok(mpt__tensor_read(&ty, got));
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == 0.0f, "p = 1: y[%zu] = %g", i, got[i]);
    /* Small n with a partial block matches the host rule too. */
    const float p = 0.5f;
    ck_assert_mpt_ok(mpt__op_dropout_forward(&tx, &ty, n, NULL, p, 99, 1));
    ck_assert_mpt_ok(mpt__tensor_read(&ty, got));
    for (size_t i = 0; i < n; i++)
        ck_assert_float_eq(got[i], x[i] * (keeps(99, 1, i, p) ? 2.0f : 0.0f));
    /* Keep iff u >= p, not u > p: with p equal to element 3's own u, that
     * element is kept. */
    float p3 = mpt__u01(mpt__rng_u32(99, 1, 3));
    ck_assert_mpt_ok(mpt__op_dropout_forward(&tx, &ty, n, NULL, p3, 99, 1));
    ck_assert_mpt_ok(mpt__tensor_read(&ty, got));
    ck_assert_float_eq(got[3], x[3] * (1.0f / (1.0f - p3)));
    ck_assert_mpt_fails(mpt__op_dropout_forward(&tx, &ty, n, NULL, 1.5f, 1, 1), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__op_dropout_forward(&tx, &ty, n, NULL, -0.1f, 1, 1), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__op_dropout_forward(&tx, &ty, n, NULL, NAN, 1, 1), MPT_ERR_INVALID);
    mpt_buffer_free(tx.buf), mpt_buffer_free(ty.buf);
    mpt_devices_free(set);
}
END_TEST

/* ---- conv2d ------------------------------------------------------------ */

/* Direct convolution in double (cross-correlation, zero padding), with the
 * magnitude sum |terms| of every output for the tolerance. */
static void conv_ref(const mpt__conv_t *cv, const float *x, const float *wt, double *y,
                     double *ymag)
{
    for (size_t n = 0; n < cv->n; n++)
        for (size_t k = 0; k < cv->k; k++)
            for (size_t oy = 0; oy < cv->oh; oy++)
                for (size_t ox = 0; ox < cv->ow; ox++) {
                    double sum = 0, mag = 0;
                    for (size_t c = 0; c < cv->c; c++)
                        for (size_t ky = 0; ky < cv->kh; ky++)
                            for (size_t kx = 0; kx < cv->kw; kx++) {
                                long iy = (long)(oy * cv->stride + ky) - (long)cv->pad;
                                long ix = (long)(ox * cv->stride + kx) - (long)cv->pad;
                                if (iy < 0 || ix < 0 || iy >= (long)cv->h || ix >= (long)cv->w)
                                    continue;
                                double t = (double)x[((n * cv->c + c) * cv->h + (size_t)iy) *
                                                         cv->w +
                                                     (size_t)ix] *
                                           wt[((k * cv->c + c) * cv->kh + ky) * cv->kw + kx];
                                sum += t, mag += fabs(t);
                            }
                    size_t o = ((n * cv->k + k) * cv->oh + oy) * cv->ow + ox;
                    y[o] = sum, ymag[o] = mag;
                }
}

/* Backward by the same seven loops, scattering each term. */
static void conv_ref_backward(const mpt__conv_t *cv, const float *x, const float *wt,
                              const float *dy, double *dw, double *dwmag, double *dx,
                              double *dxmag)
{
    size_t nw = cv->k * cv->c * cv->kh * cv->kw, nx = cv->n * cv->c * cv->h * cv->w;
    memset(dw, 0, nw * sizeof *dw), memset(dwmag, 0, nw * sizeof *dwmag);
    memset(dx, 0, nx * sizeof *dx), memset(dxmag, 0, nx * sizeof *dxmag);
    for (size_t n = 0; n < cv->n; n++)
        for (size_t k = 0; k < cv->k; k++)
            for (size_t oy = 0; oy < cv->oh; oy++)
                for (size_t ox = 0; ox < cv->ow; ox++) {
                    double d = dy[((n * cv->k + k) * cv->oh + oy) * cv->ow + ox];
                    for (size_t c = 0; c < cv->c; c++)
                        for (size_t ky = 0; ky < cv->kh; ky++)
                            for (size_t kx = 0; kx < cv->kw; kx++) {
                                long iy = (long)(oy * cv->stride + ky) - (long)cv->pad;
                                long ix = (long)(ox * cv->stride + kx) - (long)cv->pad;
                                if (iy < 0 || ix < 0 || iy >= (long)cv->h || ix >= (long)cv->w)
                                    continue;
                                size_t xi = ((n * cv->c + c) * cv->h + (size_t)iy) * cv->w +
                                            (size_t)ix;
                                size_t wi = ((k * cv->c + c) * cv->kh + ky) * cv->kw + kx;
                                dw[wi] += d * x[xi], dwmag[wi] += fabs(d * x[xi]);
                                dx[xi] += d * wt[wi], dxmag[xi] += fabs(d * wt[wi]);
                            }
                }
}

/* One conv2d case on the device against the direct reference: forward with
 * and without the bias, backward (dweight overwritten, then accumulated;
 * dx overwritten each time, and dx = NULL). */
static void conv_case(mpt_device_t *dev, mpt__conv_t cv)
{
    ck_assert_mpt_ok(mpt__conv_shape(&cv));
    size_t patch = cv.c * cv.kh * cv.kw, pixels = cv.oh * cv.ow;
    size_t nx = cv.n * cv.c * cv.h * cv.w, nw = cv.k * patch, ny = cv.n * cv.k * pixels;
    /* The chunk: the one asked for (at most n), else the whole of these
     * small batches (far below the 4 MiB bound).  The workspace: one
     * chunk's columns, plus its K x chunk*P block when the chunk holds
     * several images (tensor/conv.c). */
    size_t chunk = mpt__conv_chunk(&cv), nws = mpt__conv_workspace_floats(&cv);
    ck_assert_uint_eq(chunk, cv.chunk ? (cv.chunk < cv.n ? cv.chunk : cv.n) : cv.n);
    ck_assert_uint_eq(nws, chunk == 1 ? patch * pixels : chunk * (patch + cv.k) * pixels);
    float *x = uniform(40, nx, 1.0f, 0.0f), *wt = uniform(41, nw, 0.5f, 0.0f),
          *dy = uniform(42, ny, 1.0f, 0.0f), *bias = uniform(43, cv.k, 1.0f, 0.0f);
    double *y = malloc(ny * sizeof *y), *ymag = malloc(ny * sizeof *ymag),
           *yb = malloc(ny * sizeof *yb), *ybmag = malloc(ny * sizeof *ybmag),
           *dw = malloc(nw * sizeof *dw), *dwmag = malloc(nw * sizeof *dwmag),
           *dx = malloc(nx * sizeof *dx), *dxmag = malloc(nx * sizeof *dxmag);
    conv_ref(&cv, x, wt, y, ymag);
    conv_ref_backward(&cv, x, wt, dy, dw, dwmag, dx, dxmag);
    for (size_t i = 0; i < ny; i++) { /* y + bias[k]: one more term of the sum */
        float b = bias[(i / pixels) % cv.k];
        yb[i] = y[i] + b, ybmag[i] = ymag[i] + fabs(b);
    }
    char what[160];
    snprintf(what, sizeof what, "N%zu C%zu %zux%zu K%zu k%zux%zu s%zu p%zu chunk %zu", cv.n,
             cv.c, cv.h, cv.w, cv.k, cv.kh, cv.kw, cv.stride, cv.pad, chunk);

    /* NaN everywhere the op must overwrite: beta = 0 must not read it. */
    mpt__tensor_t tx = put(dev, 7, nx, x), tw = put(dev, 3, nw, wt), tb = put(dev, 9, cv.k, bias),
                  tws = put(dev, 5, nws, NULL), ty = put(dev, 11, ny, NULL),
                  tdy = put(dev, 1, ny, dy), tdw = put(dev, 2, nw, NULL),
                  tdx = put(dev, 13, nx, NULL);
    ck_assert_mpt_ok(mpt__op_conv2d_forward(&cv, &tx, &tw, &tb, &tws, &ty));
    float *gyb = get(&ty);
    ck_assert_mpt_ok(mpt__op_conv2d_forward(&cv, &tx, &tw, NULL, &tws, &ty));
    ck_assert_mpt_ok(mpt__op_conv2d_backward(&cv, &tx, &tw, &tdy, 0.0f, &tws, &tdw, &tdx));
    float *gy = get(&ty), *gdw = get(&tdw), *gdx = get(&tdx);
    /* Sum lengths: y sums C*kh*kw products (+ the bias); dW sums N*OH*OW
     * (in a chunk's GEMM, then across chunks); dx at most K*kh*kw. */
    double *ty_tol = sum_tol(ymag, ny, (double)patch),
           *tyb_tol = sum_tol(ybmag, ny, (double)patch + 1),
           *tdw_tol = sum_tol(dwmag, nw, (double)(cv.n * pixels)),
           *tdx_tol = sum_tol(dxmag, nx, (double)(cv.k * cv.kh * cv.kw));
    char name[240];
    snprintf(name, sizeof name, "conv y + bias (%s)", what);
    check_within(gyb, yb, tyb_tol, ny, name);
    snprintf(name, sizeof name, "conv y (%s)", what);
    check_within(gy, y, ty_tol, ny, name);
    snprintf(name, sizeof name, "conv dweight (%s)", what);
    check_within(gdw, dw, tdw_tol, nw, name);
    snprintf(name, sizeof name, "conv dx (%s)", what);
    check_within(gdx, dx, tdx_tol, nx, name);

    /* Accumulation, and dx == NULL: beta_acc = 1 gives 2 dW, then
     * beta_acc = 0.5 without dx gives 0.5 * 2 dW + dW = 2 dW again. */
    free(gdw), free(gdx);
    ck_assert_mpt_ok(mpt__op_conv2d_backward(&cv, &tx, &tw, &tdy, 1.0f, &tws, &tdw, &tdx));
    ck_assert_mpt_ok(mpt__op_conv2d_backward(&cv, &tx, &tw, &tdy, 0.5f, &tws, &tdw, NULL));
    gdw = get(&tdw), gdx = get(&tdx);
    for (size_t i = 0; i < nw; i++)
        dw[i] *= 2, tdw_tol[i] *= 4; /* magnitude x2, sum length ~x2: 2 sqrt(2) < 4 */
    snprintf(name, sizeof name, "accumulated conv dweight (%s)", what);
    check_within(gdw, dw, tdw_tol, nw, name);
    snprintf(name, sizeof name, "conv dx, second call (%s)", what);
    check_within(gdx, dx, tdx_tol, nx, name); /* overwritten: not accumulated */

    mpt__tensor_t *all[] = {&tx, &tw, &tb, &tws, &ty, &tdy, &tdw, &tdx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        mpt_buffer_free(all[i]->buf);
    free(x), free(wt), free(dy), free(bias), free(y), free(ymag), free(yb), free(ybmag),
        free(dw), free(dwmag), free(dx), free(dxmag), free(gy), free(gyb), free(gdw), free(gdx),
        free(ty_tol), free(tyb_tol), free(tdw_tol), free(tdx_tol);
}

START_TEST(conv2d_matches_direct_reference)
{
    /* n, c, h, w, k, kh, kw, stride, pad, (oh, ow), chunk (0: the whole
     * batch here, all being far below the workspace bound) */
    static const mpt__conv_t cases[] = {
        {3, 3, 8, 7, 4, 3, 3, 1, 1, 0, 0, 0},   /* same-size output */
        {3, 1, 9, 10, 4, 5, 5, 2, 1, 0, 0, 0},  /* C = 1, kernel 5, stride 2, padding 1 */
        {3, 3, 10, 10, 4, 5, 5, 2, 1, 0, 0, 0}, /* C = 3, kernel 5, stride 2, padding 1 */
        {3, 3, 11, 9, 4, 5, 5, 2, 2, 0, 0, 0},  /* padding 2 */
        {2, 3, 6, 6, 4, 2, 2, 2, 0, 0, 0, 0},   /* non-overlapping windows */
        {3, 3, 7, 8, 4, 3, 2, 1, 0, 0, 0, 0},   /* non-square kernel */
        {3, 3, 5, 6, 4, 1, 1, 1, 0, 0, 0, 0},   /* 1x1: a plain GEMM */
        {1, 1, 5, 5, 1, 5, 5, 1, 0, 0, 0, 0},   /* one output pixel */
        {3, 3, 9, 9, 4, 3, 3, 3, 1, 0, 0, 0},   /* stride = kernel with padding */
        /* chunked: full chunks and a partial last one, at offsets into x,
         * y, dy and dx; with stride and padding */
        {5, 3, 8, 7, 4, 3, 3, 1, 1, 0, 0, 2},   /* chunks of 2, 2, 1 */
        {7, 2, 9, 10, 5, 3, 3, 2, 1, 0, 0, 3},  /* chunks of 3, 3, 1, stride 2 */
        {4, 3, 11, 9, 4, 5, 5, 2, 2, 0, 0, 1},  /* one image a chunk: the per-image path */
        {2, 3, 6, 6, 4, 3, 3, 1, 1, 0, 0, 5},   /* chunk above n: one chunk of 2 */
    };
    /* once per GEMM provider (lib/device/gemm.h) */
    mpt_devices_t *set = test_open_with_provider("0", _i);
    mpt_device_t *dev = mpt_devices_get(set, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        conv_case(dev, cases[i]);
    mpt_devices_free(set);
}
END_TEST

/* The automatic chunk keeps the workspace within its bound (2^20 floats,
 * tensor/conv.c) and takes the whole batch when it fits; no device. */
START_TEST(conv2d_chunk_bounds_the_workspace)
{
    const size_t bound = (size_t)1 << 20;
    /* cnn-fashion's second layer: 32 x 14 x 14 in, 64 out, 3x3, padding 1;
     * (288 + 64) * 196 = 68,992 floats an image, 15 images in the bound. */
    mpt__conv_t cv = {128, 32, 14, 14, 64, 3, 3, 1, 1, 0, 0, 0};
    ck_assert_uint_eq(mpt__conv_chunk(&cv), 15);
    ck_assert_uint_eq(mpt__conv_workspace_floats(&cv), 15 * 68992);
    ck_assert_uint_le(mpt__conv_workspace_floats(&cv), bound);
    /* its first layer: (9 + 32) * 784 = 32,144 floats an image, 32 fit */
    mpt__conv_t first = {128, 1, 28, 28, 32, 3, 3, 1, 1, 0, 0, 0};
    ck_assert_uint_eq(mpt__conv_chunk(&first), 32);
    cv.n = 10; /* a small batch fits whole */
    ck_assert_uint_eq(mpt__conv_chunk(&cv), 10);
    ck_assert_uint_eq(mpt__conv_workspace_floats(&cv), 10 * 68992);
    cv.chunk = 500; /* asked for more than n: n */
    ck_assert_uint_eq(mpt__conv_chunk(&cv), 10);
    cv.chunk = 0, cv.n = 0; /* no images, no workspace */
    ck_assert_uint_eq(mpt__conv_chunk(&cv), 0);
    ck_assert_uint_eq(mpt__conv_workspace_floats(&cv), 0);
    /* One image above the bound alone: chunks of one, columns only. */
    mpt__conv_t big = {4, 64, 256, 256, 64, 3, 3, 1, 1, 0, 0, 0};
    ck_assert_uint_eq(mpt__conv_chunk(&big), 1);
    ck_assert_uint_eq(mpt__conv_workspace_floats(&big), (size_t)64 * 9 * 256 * 256);
}
END_TEST

START_TEST(conv2d_rejects_bad_shapes)
{
    mpt__conv_t cv = {1, 3, 4, 4, 2, 7, 7, 1, 1, 0, 0, 0};
    ck_assert_mpt_fails(mpt__conv_shape(&cv), MPT_ERR_INVALID); /* 7 > 4 + 2 */
    ck_assert_uint_eq(mpt__conv_workspace_floats(&cv), 0);
    cv.kh = cv.kw = 3, cv.stride = 0;
    ck_assert_mpt_fails(mpt__conv_shape(&cv), MPT_ERR_INVALID);
    cv.stride = 2;
    ck_assert_mpt_ok(mpt__conv_shape(&cv));
    ck_assert_uint_eq(cv.oh, 2); /* (4 + 2 - 3) / 2 + 1 */
    ck_assert_uint_eq(cv.ow, 2);
    ck_assert_uint_eq(mpt__conv_workspace_floats(&cv), 3 * 9 * 4); /* one image: columns */

    mpt_device_t *dev;
    mpt_devices_t *set = open_device(&dev);
    mpt__tensor_t x = put(dev, 0, 48, NULL), w = put(dev, 0, 54, NULL),
                  col = put(dev, 0, 10, NULL), y = put(dev, 0, 8, NULL);
    ck_assert_mpt_fails(mpt__op_conv2d_forward(&cv, &x, &w, NULL, &col, &y), MPT_ERR_RANGE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "workspace"));
    mpt_buffer_free(x.buf), mpt_buffer_free(w.buf), mpt_buffer_free(col.buf);
    mpt_buffer_free(y.buf);
    mpt_devices_free(set);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ops_conv");
    TCase *tc = tcase_create("ops_conv");
    tcase_set_timeout(tc, 600); /* cold PoCL and CLBlast compiles take seconds each */
    tcase_add_test(tc, layernorm_reference_backward_matches_finite_differences);
    tcase_add_test(tc, layernorm_matches_reference);
    tcase_add_test(tc, layernorm_rejects_bad_shapes);
    tcase_add_test(tc, maxpool_matches_reference);
    tcase_add_test(tc, maxpool_rejects_bad_shapes);
    tcase_add_test(tc, dropout_mask_is_the_host_philox_rule);
    tcase_add_test(tc, dropout_edge_cases);
    tcase_add_loop_test(tc, conv2d_matches_direct_reference, 0, TEST_GEMM_PROVIDERS);
    tcase_add_test(tc, conv2d_chunk_bounds_the_workspace);
    tcase_add_test(tc, conv2d_rejects_bad_shapes);
    suite_add_tcase(s, tc);
    return test_run(s, 0);
}
