/*
 * nn/layers.c: the layer kinds: linear, relu, gelu, silu, dropout, layernorm,
 * flatten, conv2d, maxpool2d and the fused softmax_cross_entropy loss.
 * Each is a vtable of small functions over the ops of tensor/tensor.h,
 * filled with designated initialisers next to its functions; the registry
 * at the end (which also lists the GPT kinds of layers_gpt.c) is the only
 * list of kinds.  Adding an elementwise kind is a kernel in
 * kernels/elementwise.cl, its two passes and kind here, and a registry
 * line (silu below is the example).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/rng.h"
#include "nn/layer.h"

/* ---- shared helpers ------------------------------------------------------ */

size_t mpt__shape_numel(const mpt__shape_t *s)
{
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= s->d[i];
    return n;
}

const char *mpt__shape_str(const mpt__shape_t *s, char *buf, size_t size)
{
    if (s->ndim == 1)
        snprintf(buf, size, "[%zu]", s->d[0]);
    else if (s->ndim == 2)
        snprintf(buf, size, "[%zu, %zu]", s->d[0], s->d[1]);
    else
        snprintf(buf, size, "[%zu, %zu, %zu]", s->d[0], s->d[1], s->d[2]);
    return buf;
}

mpt__tensor_t mpt__param_view(const mpt__pass_t *p, const mpt__param_t *param, int grad)
{
    const mpt__tensor_t *flat = grad ? &p->grads : &p->params;
    size_t base = grad ? p->grad_base : p->param_base;
    return mpt__tensor(flat->buf, flat->off + param->offset - base, param->ndim, param->dims);
}

/* A positive integer attribute; `def` when absent and def > 0. */
int mpt__attr_size(const json_t *spec, const char *key, size_t def, const char *where,
                     size_t *out)
{
    json_t *v = json_object_get(spec, key);
    if (!v) {
        if (def > 0) {
            *out = def;
            return MPT_OK;
        }
        return mpt__fail(MPT_ERR_PARSE, "%s: missing \"%s\" (a positive integer)", where, key);
    }
    if (!json_is_integer(v) || json_integer_value(v) < (def == (size_t)-1 ? 0 : 1))
        return mpt__fail(MPT_ERR_PARSE, "%s: \"%s\" must be a %s integer", where, key,
                         def == (size_t)-1 ? "non-negative" : "positive");
    *out = (size_t)json_integer_value(v);
    return MPT_OK;
}

static int attr_float(const json_t *spec, const char *key, double def, double lo, double hi,
                      const char *where, float *out)
{
    json_t *v = json_object_get(spec, key);
    double x = v ? json_number_value(v) : def;
    if (v && !json_is_number(v))
        return mpt__fail(MPT_ERR_PARSE, "%s: \"%s\" must be a number", where, key);
    if (!(x >= lo && x <= hi))
        return mpt__fail(MPT_ERR_PARSE, "%s: \"%s\" = %g is outside [%g, %g]", where, key, x, lo,
                         hi);
    *out = (float)x;
    return MPT_OK;
}

void mpt__set_param(mpt__layer_t *l, int slot, const char *name, int ndim, const size_t *dims,
                      size_t fan_in, float init_value)
{
    mpt__param_t *q = &l->params[slot];
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s", name);
    q->ndim = ndim;
    q->numel = 1;
    for (int i = 0; i < ndim; i++)
        q->numel *= (q->dims[i] = dims[i]);
    q->fan_in = fan_in;
    q->init_value = init_value;
    q->stream = MPT_RNG_STREAM(MPT_RNG_INIT, (uint64_t)l->index * 16 + (uint64_t)slot);
    if (slot + 1 > l->nparams)
        l->nparams = slot + 1;
}

static int need_flat(const mpt__layer_t *l, const char *where)
{
    char s[64];
    if (l->in.ndim != 1)
        return mpt__fail(MPT_ERR_PARSE, "%s: needs a flat input, got %s (add a flatten layer)",
                         where, mpt__shape_str(&l->in, s, sizeof s));
    return MPT_OK;
}

static int need_image(const mpt__layer_t *l, const char *where)
{
    char s[64];
    if (l->in.ndim != 3)
        return mpt__fail(MPT_ERR_PARSE,
                         "%s: needs a [channels, height, width] input, got %s", where,
                         mpt__shape_str(&l->in, s, sizeof s));
    return MPT_OK;
}

static int same_shape(mpt__layer_t *l, const char *where)
{
    (void)where;
    l->out = l->in;
    return MPT_OK;
}

static double no_flops(const mpt__layer_t *l, size_t batch, int backward)
{
    (void)backward;
    return (double)batch * (double)mpt__shape_numel(&l->in); /* one op per element */
}

static size_t numel_in(const mpt__layer_t *l)
{
    return mpt__shape_numel(&l->in);
}

/* ---- linear: y = x W^T + b, W is units x in (PyTorch layout) ------------ */

static int linear_configure(mpt__layer_t *l, const json_t *spec, const char *where)
{
    return mpt__attr_size(spec, "units", 0, where, &l->units);
}

static int linear_infer(mpt__layer_t *l, const char *where)
{
    int status = need_flat(l, where);
    if (status < 0)
        return status;
    size_t in = l->in.d[0], w[2] = {l->units, in}, b[1] = {l->units};
    l->out = (mpt__shape_t){1, {l->units, 0, 0}};
    mpt__set_param(l, 0, "weight", 2, w, in, 0);
    mpt__set_param(l, 1, "bias", 1, b, in, 0);
    return MPT_OK;
}

static double linear_flops(const mpt__layer_t *l, size_t batch, int backward)
{
    double f = 2.0 * (double)batch * (double)l->in.d[0] * (double)l->units;
    /* dW and dx; the model's first computing layer has no dx to compute */
    return backward ? (l->first_computing ? f : 2 * f) : f;
}

/* y = x W^T + b, or with an activation run here (p->act, see layer.h):
 * y keeps x W^T + b and p->a gets act(y). */
static int linear_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    size_t in = l->in.d[0], out = l->units;
    mpt__tensor_t w = mpt__param_view(p, &l->params[0], 0);
    mpt__tensor_t b = l->nparams > 1 ? mpt__param_view(p, &l->params[1], 0) : w;
    /* A row-parallel shard other than the first has no bias (engine/shard.c). */
    return mpt__op_linear_forward(&p->x, &w, l->nparams > 1 ? &b : NULL, (mpt__act_t)p->act,
                                  p->batch, in, out, &p->y, &p->a);
}

static int linear_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    size_t in = l->in.d[0], out = l->units;
    mpt__tensor_t w = mpt__param_view(p, &l->params[0], 0);
    mpt__tensor_t dw = mpt__param_view(p, &l->params[0], 1);
    mpt__tensor_t db = l->nparams > 1 ? mpt__param_view(p, &l->params[1], 1) : dw;
    return mpt__op_linear_backward(&p->x, &w, &p->y, (mpt__act_t)p->act, p->batch, in, out,
                                   &p->dy, &dw, l->nparams > 1 ? &db : NULL,
                                   p->dx.buf ? &p->dx : NULL);
}

/* Launches (CLBlast provider): forward GEMM + bias; backward GEMV (bias
 * gradient), GEMM dW, GEMM dx.  Running the activation after it: forward
 * GEMM + one bias/activation kernel, backward one activation/bias-gradient
 * kernel + the two GEMMs.  The host provider makes one host call each
 * way (tensor/linear.c). */
static const mpt__layer_kind_t linear = {
    .name = "linear",
    .split_axes = MPT_SPLIT_COLUMN | MPT_SPLIT_ROW,
    .launches_fwd = 2, .launches_bwd = 3,
    .takes_act = 1, .launches_fused_fwd = 2, .launches_fused_bwd = 3,
    .configure = linear_configure,
    .infer = linear_infer,
    .flops = linear_flops,
    .forward = linear_forward,
    .backward = linear_backward,
};

/* ---- elementwise activations: one kernel each way ------------------------ */

/* y = f(x) and dx = dy f'(x) by the kernels the kind names: any split of
 * the input carries through, one launch each way.  `code` (mpt__act_t) lets
 * a linear layer just before it run it instead (tensor/linear.c; the
 * executor then skips this layer); a new activation without a fused form
 * in kernels/elementwise.cl and tensor/linear.c passes 0. */
#define ACTIVATION(kind_name, code, fwd_kernel, bwd_kernel)                                   \
    static int kind_name##_forward(mpt__layer_t *l, mpt__pass_t *p)                           \
    {                                                                                         \
        return mpt__op_activation(fwd_kernel, &p->x, &p->y, p->batch * numel_in(l));          \
    }                                                                                         \
    static int kind_name##_backward(mpt__layer_t *l, mpt__pass_t *p)                          \
    {                                                                                         \
        return p->dx.buf ? mpt__op_activation_backward(bwd_kernel, &p->x, &p->dy, &p->dx,     \
                                                       p->batch * numel_in(l))                \
                         : MPT_OK;                                                            \
    }                                                                                         \
    static const mpt__layer_kind_t kind_name = {                                              \
        .name = #kind_name,                                                                   \
        .split_axes = MPT_SPLIT_ELEMENTWISE,                                                  \
        .launches_fwd = 1, .launches_bwd = 1,                                                 \
        .act = code,                                                                          \
        .infer = same_shape,                                                                  \
        .flops = no_flops,                                                                    \
        .forward = kind_name##_forward,                                                       \
        .backward = kind_name##_backward,                                                     \
    };

ACTIVATION(relu, MPT_ACT_RELU, "mpt_relu_forward", "mpt_relu_backward")
ACTIVATION(gelu, MPT_ACT_GELU, "mpt_gelu_forward", "mpt_gelu_backward")
ACTIVATION(silu, MPT_ACT_SILU, "mpt_silu_forward", "mpt_silu_backward")

/* ---- dropout (inverted; masks regenerated from the counter-based RNG) --- */

static int dropout_configure(mpt__layer_t *l, const json_t *spec, const char *where)
{
    return attr_float(spec, "p", 0.5, 0.0, 0.999, where, &l->p);
}

static uint64_t dropout_stream(const mpt__layer_t *l, const mpt__pass_t *p)
{
    return MPT_RNG_STREAM(MPT_RNG_DROPOUT, p->step << 16 | (uint64_t)l->index);
}

/* The pass's place in the whole batch: mask counter (global sample) *
 * (whole sample's elements) + element, the one-device numbering. */
static mpt__dropout_at_t dropout_at(const mpt__layer_t *l, const mpt__pass_t *p)
{
    size_t cols = numel_in(l);
    return (mpt__dropout_at_t){.first_sample = p->sample_first, .cols = cols,
                               .row = p->slice_whole ? p->slice_whole : cols,
                               .first_col = p->slice_whole ? p->slice_first : 0};
}

static int dropout_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    mpt__dropout_at_t at = dropout_at(l, p);
    return mpt__op_dropout_forward(&p->x, &p->y, p->batch * numel_in(l), &at,
                                   p->training ? l->p : 0.0f, p->seed, dropout_stream(l, p));
}

static int dropout_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    mpt__dropout_at_t at = dropout_at(l, p);
    return p->dx.buf ? mpt__op_dropout_backward(&p->dy, &p->dx, p->batch * numel_in(l), &at,
                                                l->p, p->seed, dropout_stream(l, p))
                     : MPT_OK;
}

/* Its masks are keyed by (seed, step, layer, sample of the whole batch,
 * element of the whole sample), which every pass knows (sample_first,
 * slice_first): a replica's share, a micro-batch or a tensor-parallel
 * slice draws the one-device mask, so it needs no flag.  One kernel each
 * way. */
static const mpt__layer_kind_t dropout = {
    .name = "dropout",
    .split_axes = MPT_SPLIT_ELEMENTWISE,
    .launches_fwd = 1, .launches_bwd = 1,
    .configure = dropout_configure,
    .infer = same_shape,
    .flops = no_flops,
    .forward = dropout_forward,
    .backward = dropout_backward,
};

/* ---- layernorm over the last dimension ------------------------------------ */

static int layernorm_configure(mpt__layer_t *l, const json_t *spec, const char *where)
{
    return attr_float(spec, "eps", 1e-5, 1e-12, 1.0, where, &l->eps);
}

static size_t ln_cols(const mpt__layer_t *l)
{
    return l->in.d[l->in.ndim - 1];
}

static int layernorm_infer(mpt__layer_t *l, const char *where)
{
    size_t cols = ln_cols(l), dims[1] = {cols};
    (void)where;
    l->out = l->in;
    mpt__set_param(l, 0, "weight", 1, dims, 0, 1.0f);
    mpt__set_param(l, 1, "bias", 1, dims, 0, 0.0f);
    l->saved_per_sample = 2 * (numel_in(l) / cols); /* mean and rstd per row */
    return MPT_OK;
}

static int layernorm_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    size_t cols = ln_cols(l), rows = p->batch * numel_in(l) / cols;
    size_t dims[1] = {rows};
    mpt__tensor_t g = mpt__param_view(p, &l->params[0], 0), b = mpt__param_view(p, &l->params[1], 0);
    mpt__tensor_t mean = mpt__tensor(p->saved.buf, p->saved.off, 1, dims);
    mpt__tensor_t rstd = mpt__tensor(p->saved.buf, p->saved.off + rows, 1, dims);
    return mpt__op_layernorm_forward(&p->x, &g, &b, rows, cols, l->eps, &p->y, &mean, &rstd);
}

static int layernorm_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    size_t cols = ln_cols(l), rows = p->batch * numel_in(l) / cols;
    size_t dims[1] = {rows};
    mpt__tensor_t g = mpt__param_view(p, &l->params[0], 0);
    mpt__tensor_t dg = mpt__param_view(p, &l->params[0], 1), db = mpt__param_view(p, &l->params[1], 1);
    mpt__tensor_t mean = mpt__tensor(p->saved.buf, p->saved.off, 1, dims);
    mpt__tensor_t rstd = mpt__tensor(p->saved.buf, p->saved.off + rows, 1, dims);
    mpt__tensor_t dx = p->dx;
    if (!dx.buf) /* the kernel always writes dx: give it the scratch */
        dx = p->scratch;
    return mpt__op_layernorm_backward(&p->dy, &p->x, &g, &mean, &rstd, rows, cols, 0.0f, &dx, &dg,
                                      &db);
}

static size_t layernorm_scratch(const mpt__layer_t *l, size_t batch)
{
    return batch * numel_in(l); /* dx of a first layer, which nobody reads */
}

/* Launches: stats + apply; backward dx + parameter gradients. */
static const mpt__layer_kind_t layernorm = {
    .name = "layernorm",
    .launches_fwd = 2, .launches_bwd = 2,
    .configure = layernorm_configure,
    .infer = layernorm_infer,
    .scratch_floats = layernorm_scratch,
    .flops = no_flops,
    .forward = layernorm_forward,
    .backward = layernorm_backward,
};

/* ---- flatten: a view ----------------------------------------------------- */

static int flatten_infer(mpt__layer_t *l, const char *where)
{
    (void)where;
    l->out = (mpt__shape_t){1, {numel_in(l), 0, 0}};
    return MPT_OK;
}

static int view_pass(mpt__layer_t *l, mpt__pass_t *p)
{
    (void)l, (void)p;
    return MPT_OK; /* the model aliases the output to the input */
}

static const mpt__layer_kind_t flatten = {
    .name = "flatten",
    .split_axes = MPT_SPLIT_ELEMENTWISE,
    .is_view = 1, /* launches nothing */
    .infer = flatten_infer,
    .flops = no_flops,
    .forward = view_pass,
    .backward = view_pass,
};

/* ---- conv2d (cross-correlation, weight K x C x k x k) -------------------- */

static int conv_configure(mpt__layer_t *l, const json_t *spec, const char *where)
{
    int status;
    MPT_TRY(mpt__attr_size(spec, "channels", 0, where, &l->channels));
    MPT_TRY(mpt__attr_size(spec, "kernel", 0, where, &l->kernel));
    MPT_TRY(mpt__attr_size(spec, "stride", 1, where, &l->stride));
    MPT_TRY(mpt__attr_size(spec, "padding", (size_t)-1, where, &l->padding));
    if (!json_object_get(spec, "padding"))
        l->padding = 0;
out:
    return status;
}

static mpt__conv_t conv_of(const mpt__layer_t *l, size_t batch)
{
    mpt__conv_t cv = {batch, l->in.d[0], l->in.d[1], l->in.d[2], l->channels, l->kernel,
                      l->kernel, l->stride, l->padding, 0, 0, 0};
    mpt__conv_shape(&cv);
    return cv;
}

static int conv_infer(mpt__layer_t *l, const char *where)
{
    int status = need_image(l, where);
    if (status < 0)
        return status;
    mpt__conv_t cv = conv_of(l, 1);
    if (mpt__conv_shape(&cv) < 0)
        return mpt__fail(MPT_ERR_PARSE, "%s: a %zux%zu kernel with padding %zu does not fit a "
                         "%zux%zu input", where, l->kernel, l->kernel, l->padding, cv.h, cv.w);
    size_t fan_in = cv.c * cv.kh * cv.kw, w[4] = {cv.k, cv.c, cv.kh, cv.kw}, b[1] = {cv.k};
    l->out = (mpt__shape_t){3, {cv.k, cv.oh, cv.ow}};
    mpt__set_param(l, 0, "weight", 4, w, fan_in, 0);
    mpt__set_param(l, 1, "bias", 1, b, fan_in, 0);
    return MPT_OK;
}

static double conv_flops(const mpt__layer_t *l, size_t batch, int backward)
{
    mpt__conv_t cv = conv_of(l, batch);
    double f = 2.0 * (double)batch * cv.k * cv.oh * cv.ow * cv.c * cv.kh * cv.kw;
    return backward ? 2 * f : f;
}

static size_t conv_scratch(const mpt__layer_t *l, size_t batch)
{
    mpt__conv_t cv = conv_of(l, batch);
    return mpt__conv_workspace_floats(&cv);
}

static int conv_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    mpt__conv_t cv = conv_of(l, p->batch);
    mpt__tensor_t w = mpt__param_view(p, &l->params[0], 0), b = mpt__param_view(p, &l->params[1], 0);
    return mpt__op_conv2d_forward(&cv, &p->x, &w, &b, &p->scratch, &p->y);
}

static int conv_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    mpt__conv_t cv = conv_of(l, p->batch);
    mpt__tensor_t w = mpt__param_view(p, &l->params[0], 0);
    mpt__tensor_t dw = mpt__param_view(p, &l->params[0], 1), db = mpt__param_view(p, &l->params[1], 1);
    int status = mpt__op_conv2d_backward(&cv, &p->x, &w, &p->dy, 0.0f, &p->scratch, &dw,
                                         p->dx.buf ? &p->dx : NULL);
    if (status == MPT_OK)
        status = mpt__op_bias_grad_channels(&p->dy, p->batch, cv.k, cv.oh * cv.ow, 0.0f, &db);
    return status;
}

/* Launches per chunk of images (tensor/conv.c: as many images as 4 MiB
 * of workspace hold, cnn-fashion's 32 and 15): forward im2col, GEMM, to_images with
 * the bias fused (3; one image: im2col and GEMM, then the bias once);
 * backward im2col, from_images, the two GEMMs, col2im (5; one image: 4),
 * then bias_grad_channels once.  The counts are a one-chunk micro-batch's
 * (3 and 6): they grow with the chunks, which a count per micro-batch
 * cannot say. */
static const mpt__layer_kind_t conv2d = {
    .name = "conv2d",
    .split_axes = MPT_SPLIT_CHANNELS,
    .launches_fwd = 3, .launches_bwd = 6,
    .configure = conv_configure,
    .infer = conv_infer,
    .scratch_floats = conv_scratch,
    .flops = conv_flops,
    .forward = conv_forward,
    .backward = conv_backward,
};

/* ---- maxpool2d ------------------------------------------------------------- */

static int pool_configure(mpt__layer_t *l, const json_t *spec, const char *where)
{
    int status;
    MPT_TRY(mpt__attr_size(spec, "kernel", 0, where, &l->kernel));
    MPT_TRY(mpt__attr_size(spec, "stride", l->kernel, where, &l->stride));
    MPT_TRY(mpt__attr_size(spec, "padding", (size_t)-1, where, &l->padding));
    if (!json_object_get(spec, "padding"))
        l->padding = 0;
    if (2 * l->padding > l->kernel)
        status = mpt__fail(MPT_ERR_PARSE, "%s: padding %zu is more than half the kernel %zu "
                           "(PyTorch refuses it too)", where, l->padding, l->kernel);
out:
    return status;
}

static int pool_infer(mpt__layer_t *l, const char *where)
{
    int status = need_image(l, where);
    if (status < 0)
        return status;
    size_t h = l->in.d[1] + 2 * l->padding, w = l->in.d[2] + 2 * l->padding;
    if (h < l->kernel || w < l->kernel)
        return mpt__fail(MPT_ERR_PARSE, "%s: a %zux%zu window does not fit a %zux%zu input",
                         where, l->kernel, l->kernel, l->in.d[1], l->in.d[2]);
    l->out = (mpt__shape_t){3, {l->in.d[0], (h - l->kernel) / l->stride + 1,
                                (w - l->kernel) / l->stride + 1}};
    l->saved_per_sample = mpt__shape_numel(&l->out); /* argmax */
    return MPT_OK;
}

static int pool_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    return mpt__op_maxpool_forward(&p->x, p->batch, l->in.d[0], l->in.d[1], l->in.d[2], l->kernel,
                                   l->stride, l->padding, &p->y, &p->saved);
}

static int pool_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    return p->dx.buf ? mpt__op_maxpool_backward(&p->dy, &p->saved, p->batch, l->in.d[0],
                                                l->in.d[1], l->in.d[2], l->kernel, l->stride,
                                                l->padding, &p->dx)
                     : MPT_OK;
}

static const mpt__layer_kind_t maxpool2d = {
    .name = "maxpool2d",
    .split_axes = MPT_SPLIT_CHANNELS,
    .launches_fwd = 1, .launches_bwd = 1,
    .configure = pool_configure,
    .infer = pool_infer,
    .flops = no_flops,
    .forward = pool_forward,
    .backward = pool_backward,
};

/* ---- softmax_cross_entropy: the loss, fused with its softmax ------------- */

/* Over the last dimension: [classes] is one label per sample, [T, vocab]
 * (a language model's logits) one per position. */
static int loss_infer(mpt__layer_t *l, const char *where)
{
    int status = MPT_OK;
    if (l->in.ndim > 2)
        status = mpt__fail(MPT_ERR_PARSE, "%s: needs [classes] or [positions, classes] logits "
                           "(add a flatten layer)", where);
    else if (ln_cols(l) < 2)
        status = mpt__fail(MPT_ERR_PARSE, "%s: needs at least 2 classes", where);
    l->out = (mpt__shape_t){1, {1, 0, 0}};
    return status;
}

/* In training the backward writes the loss rows with the gradient (one
 * launch a step instead of two): read them after the backward. */
static int loss_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    if (p->training)
        return MPT_OK;
    return mpt__op_softmax_xent(&p->x, p->labels, p->labels_off,
                                p->batch * numel_in(l) / ln_cols(l), ln_cols(l), p->loss_scale,
                                &p->loss_rows, NULL);
}

/* Recomputes the softmax rather than keeping it: one cheap pass over the
 * logits, and no state between forward and backward. */
static int loss_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    return mpt__op_softmax_xent(&p->x, p->labels, p->labels_off,
                                p->batch * numel_in(l) / ln_cols(l), ln_cols(l), p->loss_scale,
                                &p->loss_rows, &p->dx);
}

/* One fused kernel: the backward in training, the forward in evaluation. */
static const mpt__layer_kind_t softmax_cross_entropy = {
    .name = "softmax_cross_entropy",
    .is_loss = 1,
    .launches_fwd = 0, .launches_bwd = 1,
    .infer = loss_infer,
    .flops = no_flops,
    .forward = loss_forward,
    .backward = loss_backward,
};

/* ---- the registry ---------------------------------------------------------- */

/* Every kind, in the order docs/model.md lists them. */
static const mpt__layer_kind_t *const registry[] = {
    &linear, &relu, &gelu, &silu, &dropout, &layernorm, &flatten, &conv2d, &maxpool2d,
    &softmax_cross_entropy, &mpt__kind_embedding, &mpt__kind_block, &mpt__kind_lm_head,
};

const mpt__layer_kind_t *mpt__layer_kind_at(size_t i)
{
    return i < sizeof registry / sizeof registry[0] ? registry[i] : NULL;
}

const mpt__layer_kind_t *mpt__layer_kind(const char *name)
{
    for (size_t i = 0; i < sizeof registry / sizeof registry[0]; i++)
        if (strcmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

const char *mpt__layer_kind_names(char *buf, size_t size)
{
    size_t at = 0;
    if (size == 0)
        return buf;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof registry / sizeof registry[0] && at < size; i++) {
        int n = snprintf(buf + at, size - at, "%s%s", i ? ", " : "", registry[i]->name);
        if (n < 0)
            break;
        at += (size_t)n;
    }
    return buf;
}
