/*
 * nn/layers_gpt.c: the kinds of a GPT-2 style language model.
 *
 * - embedding {vocab, dim}: [T] token ids (floats) -> [T, dim], the sum of
 *   a token embedding wte [vocab, dim] and a position embedding wpe
 *   [T, dim].
 * - block {heads}: a pre-norm transformer block on [T, C]:
 *     x1 = x + proj(attention(ln_1(x)));  y = x1 + fc_proj(gelu(fc(ln_2(x1))))
 *   with causal multi-head self-attention (QKV projection, scores and the
 *   weighted sum as CLBlast batched GEMMs per (sample, head), a stable
 *   masked softmax kernel) and a 4x GELU (tanh) MLP.  Its 12 parameters
 *   are named as PyTorch names a module with submodules ln_1, attn, proj,
 *   ln_2, fc, fc_proj (tests/torch_reference.py builds exactly that).
 * - lm_head: [T, C] -> [T, vocab] logits = x wte^T, with the embedding's
 *   wte (tied, as GPT-2): no parameters of its own; its weight gradient is
 *   written first in the backward pass and the embedding adds its own.
 *
 * The block keeps, per sample, every activation its backward needs (see
 * block_saved); the attention probabilities are T x T per head.  Left out:
 * dropout inside the block (GPT-2 trains without it at this size),
 * recomputation of activations, fused attention.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/layer.h"

/* GPT-2's initialisation: weights normal(0, 0.02), biases 0, layer norms
 * 1 and 0. */
#define GPT_INIT_STD 0.02f

static size_t positions(const mpt__layer_t *l)
{
    return l->in.d[0];
}

static size_t width(const mpt__layer_t *l)
{
    return l->in.d[l->in.ndim - 1];
}

static int need_sequence(const mpt__layer_t *l, const char *where)
{
    char s[64];
    if (l->in.ndim != 2)
        return mpt__fail(MPT_ERR_PARSE, "%s: needs a [positions, features] input, got %s (put "
                         "an embedding first)", where, mpt__shape_str(&l->in, s, sizeof s));
    return MPT_OK;
}

static void gpt_weight(mpt__layer_t *l, int slot, const char *name, size_t out, size_t in)
{
    size_t dims[2] = {out, in};
    mpt__set_param(l, slot, name, 2, dims, in, 0);
    l->params[slot].init_std = GPT_INIT_STD;
}

static void gpt_vector(mpt__layer_t *l, int slot, const char *name, size_t n, float value)
{
    size_t dims[1] = {n};
    mpt__set_param(l, slot, name, 1, dims, 0, value);
}

/* ---- embedding ---------------------------------------------------------- */

static int embedding_configure(mpt__layer_t *l, const json_t *spec, const char *where)
{
    int status;
    MPT_TRY(mpt__attr_size(spec, "vocab", 0, where, &l->vocab));
    MPT_TRY(mpt__attr_size(spec, "dim", 0, where, &l->units));
out:
    return status;
}

static int embedding_infer(mpt__layer_t *l, const char *where)
{
    char s[64];
    if (l->in.ndim != 1)
        return mpt__fail(MPT_ERR_PARSE, "%s: needs [positions] token ids as its input, got %s",
                         where, mpt__shape_str(&l->in, s, sizeof s));
    if (l->vocab > (1u << 24))
        return mpt__fail(MPT_ERR_PARSE, "%s: a vocabulary of %zu: token ids travel as floats, "
                         "exact up to 2^24", where, l->vocab);
    size_t T = l->in.d[0], wte[2] = {l->vocab, l->units}, wpe[2] = {T, l->units};
    l->out = (mpt__shape_t){2, {T, l->units, 0}};
    mpt__set_param(l, 0, "wte", 2, wte, 0, 0);
    mpt__set_param(l, 1, "wpe", 2, wpe, 0, 0);
    l->params[0].init_std = l->params[1].init_std = GPT_INIT_STD;
    return MPT_OK;
}

static double embedding_flops(const mpt__layer_t *l, size_t batch, int backward)
{
    (void)backward;
    return (double)batch * (double)mpt__shape_numel(&l->out);
}

static int embedding_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    mpt__tensor_t wte = mpt__param_view(p, &l->params[0], 0);
    mpt__tensor_t wpe = mpt__param_view(p, &l->params[1], 0);
    return mpt__op_embedding_forward(&p->x, &wte, &wpe, p->batch, l->in.d[0], l->units, l->vocab,
                                     &p->y);
}

static int embedding_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    mpt__tensor_t dwte = mpt__param_view(p, &l->params[0], 1);
    mpt__tensor_t dwpe = mpt__param_view(p, &l->params[1], 1);
    /* A tied head wrote its part of dwte already (it runs first). */
    int status = mpt__op_embedding_backward(&p->x, &p->dy, p->batch, l->in.d[0], l->units,
                                            l->vocab, p->shared_written ? 1.0f : 0.0f, &dwte,
                                            &dwpe);
    /* Token ids have no gradient; a stage before would get zeros. */
    if (status == MPT_OK && p->dx.buf)
        status = mpt__op_fill(&p->dx, p->batch * l->in.d[0], 0.0f);
    return status;
}

/* ---- block ---------------------------------------------------------------- */

enum { LN1_W, LN1_B, ATTN_W, ATTN_B, PROJ_W, PROJ_B, LN2_W, LN2_B, FC_W, FC_B, FCP_W, FCP_B };

static int block_configure(mpt__layer_t *l, const json_t *spec, const char *where)
{
    l->eps = 1e-5f;
    return mpt__attr_size(spec, "heads", 0, where, &l->heads);
}

/* A block's sizes.  Whole: Ca = C and U = 4 C; a tensor-parallel member's
 * slice (block_slice) computes Ca = heads x head_size features of
 * attention and U units of the MLP, on whole [T, C] input and output. */
typedef struct {
    size_t T, C, H, hs, Ca, U;
} block_dims_t;

static block_dims_t block_dims(const mpt__layer_t *l)
{
    block_dims_t d = {positions(l), width(l), l->heads, l->head_size, 0, l->mlp_units};
    d.Ca = d.H * d.hs;
    return d;
}

/* Per sample: the rows of ln_1's output, its mean and rstd, qkv, the
 * attention probabilities (heads x T x T), the heads' merged output, x1,
 * ln_2's output, mean and rstd, the MLP's pre-activation and its GELU. */
static size_t block_saved(const block_dims_t *d)
{
    return d->T * (3 * d->C + 4 * d->Ca + 2 * d->U + 4) + d->H * d->T * d->T;
}

/* The parameters of the sizes in l (heads, head_size, mlp_units). */
static void block_params(mpt__layer_t *l)
{
    block_dims_t d = block_dims(l);
    gpt_vector(l, LN1_W, "ln_1.weight", d.C, 1.0f);
    gpt_vector(l, LN1_B, "ln_1.bias", d.C, 0.0f);
    gpt_weight(l, ATTN_W, "attn.weight", 3 * d.Ca, d.C);
    gpt_vector(l, ATTN_B, "attn.bias", 3 * d.Ca, 0.0f);
    gpt_weight(l, PROJ_W, "proj.weight", d.C, d.Ca);
    gpt_vector(l, PROJ_B, "proj.bias", d.C, 0.0f);
    gpt_vector(l, LN2_W, "ln_2.weight", d.C, 1.0f);
    gpt_vector(l, LN2_B, "ln_2.bias", d.C, 0.0f);
    gpt_weight(l, FC_W, "fc.weight", d.U, d.C);
    gpt_vector(l, FC_B, "fc.bias", d.U, 0.0f);
    gpt_weight(l, FCP_W, "fc_proj.weight", d.C, d.U);
    gpt_vector(l, FCP_B, "fc_proj.bias", d.C, 0.0f);
    l->saved_per_sample = block_saved(&d);
}

static int block_infer(mpt__layer_t *l, const char *where)
{
    int status = need_sequence(l, where);
    if (status < 0)
        return status;
    size_t C = width(l);
    if (l->head_size == 0) { /* the whole block, as the model file gives it */
        if (C % l->heads != 0)
            return mpt__fail(MPT_ERR_PARSE, "%s: %zu features do not split into %zu heads",
                             where, C, l->heads);
        l->head_size = C / l->heads, l->mlp_units = 4 * C;
    }
    l->out = l->in;
    block_params(l);
    return MPT_OK;
}

static size_t block_scratch(const mpt__layer_t *l, size_t batch)
{
    block_dims_t d = block_dims(l);
    size_t qkv = 3 * d.Ca > d.C ? 3 * d.Ca : d.C; /* dqkv, then ln_1's spare dx */
    return batch * d.T * (qkv + 2 * d.C + d.U) + batch * d.H * d.T * d.T;
}

static double block_flops(const mpt__layer_t *l, size_t batch, int backward)
{
    block_dims_t d = block_dims(l);
    double R = (double)batch * (double)d.T, C = (double)d.C, Ca = (double)d.Ca;
    double f = 2.0 * R * C * (4.0 * Ca + 2.0 * (double)d.U) + 4.0 * R * (double)d.T * Ca;
    return backward ? 2 * f : f;
}

/* A block pass's views: where everything lives for this batch. */
typedef struct {
    block_dims_t d;
    size_t B, R;
    mpt__tensor_t ln1, mean1, rstd1, qkv, att, yh, x1, ln2, mean2, rstd2, h, g; /* saved */
    mpt__tensor_t dqkv, dA, dx1, dh, datt;                                      /* scratch */
    size_t *q_off, *k_off, *v_off, *att_off, *y_off; /* per (sample, head) */
} block_t;

static mpt__tensor_t sub(const mpt__tensor_t *t, size_t *at, size_t n)
{
    size_t dims[1] = {n};
    mpt__tensor_t v = mpt__tensor(t->buf, t->off + *at, 1, dims);
    *at += n;
    return v;
}

static void block_free(block_t *b)
{
    free(b->q_off);
}

static int block_open(const mpt__layer_t *l, const mpt__pass_t *p, block_t *b)
{
    memset(b, 0, sizeof *b);
    b->d = block_dims(l);
    b->B = p->batch, b->R = b->B * b->d.T;
    size_t R = b->R, C = b->d.C, Ca = b->d.Ca, U = b->d.U, T = b->d.T;
    size_t BH = b->B * b->d.H, TT = T * T, at = 0;
    b->ln1 = sub(&p->saved, &at, R * C);
    b->mean1 = sub(&p->saved, &at, R);
    b->rstd1 = sub(&p->saved, &at, R);
    b->qkv = sub(&p->saved, &at, 3 * R * Ca);
    b->att = sub(&p->saved, &at, BH * TT);
    b->yh = sub(&p->saved, &at, R * Ca);
    b->x1 = sub(&p->saved, &at, R * C);
    b->ln2 = sub(&p->saved, &at, R * C);
    b->mean2 = sub(&p->saved, &at, R);
    b->rstd2 = sub(&p->saved, &at, R);
    b->h = sub(&p->saved, &at, R * U);
    b->g = sub(&p->saved, &at, R * U);
    at = 0;
    b->dqkv = sub(&p->scratch, &at, R * (3 * Ca > C ? 3 * Ca : C));
    b->dA = sub(&p->scratch, &at, R * C);
    b->dx1 = sub(&p->scratch, &at, R * C);
    b->dh = sub(&p->scratch, &at, R * U);
    b->datt = sub(&p->scratch, &at, BH * TT);
    if (!(b->q_off = malloc(5 * BH * sizeof *b->q_off)))
        return mpt__fail(MPT_ERR_NOMEM, "transformer block: out of memory");
    b->k_off = b->q_off + BH, b->v_off = b->k_off + BH;
    b->att_off = b->v_off + BH, b->y_off = b->att_off + BH;
    for (size_t s = 0; s < b->B; s++)
        for (size_t h = 0; h < b->d.H; h++) {
            size_t i = s * b->d.H + h;
            b->q_off[i] = s * T * 3 * Ca + h * b->d.hs;
            b->k_off[i] = b->q_off[i] + Ca;
            b->v_off[i] = b->q_off[i] + 2 * Ca;
            b->att_off[i] = i * TT;
            b->y_off[i] = s * T * Ca + h * b->d.hs;
        }
    return MPT_OK;
}

/* out (R x n) = in (R x k) W^T + bias, W n x k; on a tensor-parallel
 * member (k its slice of the inputs) the partial products are summed over
 * the group before the bias, which every member then adds whole. */
static int dense(const mpt__pass_t *p, const mpt__tensor_t *in, const mpt__tensor_t *w,
                 const mpt__tensor_t *bias, size_t R, size_t n, size_t k, int sum,
                 mpt__tensor_t *out)
{
    int status;
    MPT_TRY(mpt__op_gemm(0, 1, R, n, k, 1.0f, in, k, w, k, 0.0f, out, n));
    if (sum && p->group_sum)
        MPT_TRY(p->group_sum(p->group_arg, out, R * n));
    status = mpt__op_bias_add(out, bias, R, n);
out:
    return status;
}

/* dW (n x k) = dout^T in; db = the column sums of dout; din = dout W
 * (when din is not NULL), summed over the group when `sum` (its k inputs
 * are whole, the member's n outputs a slice). */
static int dense_backward(const mpt__pass_t *p, const mpt__tensor_t *in,
                          const mpt__tensor_t *w, const mpt__tensor_t *dout, size_t R, size_t n,
                          size_t k, int sum, mpt__tensor_t *dw, mpt__tensor_t *db,
                          mpt__tensor_t *din)
{
    int status;
    MPT_TRY(mpt__op_gemm(1, 0, n, k, R, 1.0f, dout, n, in, k, 0.0f, dw, k));
    MPT_TRY(mpt__op_sum_rows(dout, R, n, 0.0f, db));
    if (din)
        MPT_TRY(mpt__op_gemm(0, 0, R, k, n, 1.0f, dout, n, w, k, 0.0f, din, k));
    if (din && sum && p->group_sum)
        MPT_TRY(p->group_sum(p->group_arg, din, R * k));
out:
    return status;
}

/* Under tensor parallelism (Megatron's pairing): qkv and fc are
 * column-parallel (the member's heads, its MLP units), proj and fc_proj
 * row-parallel; their outputs are summed over the group in the forward,
 * the input gradients of qkv and fc in the backward; the layer norms and
 * residuals run whole on every member. */
static int block_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    block_t b;
    mpt__tensor_t w[MPT_LAYER_MAX_PARAMS];
    int status = block_open(l, p, &b);
    if (status < 0)
        return status;
    for (int q = 0; q < l->nparams; q++)
        w[q] = mpt__param_view(p, &l->params[q], 0);
    size_t R = b.R, C = b.d.C, Ca = b.d.Ca, U = b.d.U, T = b.d.T, hs = b.d.hs;
    size_t BH = b.B * b.d.H;
    MPT_TRY(mpt__op_layernorm_forward(&p->x, &w[LN1_W], &w[LN1_B], R, C, l->eps, &b.ln1, &b.mean1,
                                      &b.rstd1));
    MPT_TRY(dense(p, &b.ln1, &w[ATTN_W], &w[ATTN_B], R, 3 * Ca, C, 0, &b.qkv));
    /* scores = q k^T per (sample, head), then the masked softmax */
    MPT_TRY(mpt__op_gemm_batched(0, 1, T, T, hs, 1.0f, &b.qkv, b.q_off, 3 * Ca, &b.qkv, b.k_off,
                                 3 * Ca, 0.0f, &b.att, b.att_off, T, BH));
    MPT_TRY(mpt__op_causal_softmax(&b.att, BH * T, T, 1.0f / sqrtf((float)hs)));
    /* each head's weighted sum of values, straight into the merged rows */
    MPT_TRY(mpt__op_gemm_batched(0, 0, T, hs, T, 1.0f, &b.att, b.att_off, T, &b.qkv, b.v_off,
                                 3 * Ca, 0.0f, &b.yh, b.y_off, Ca, BH));
    MPT_TRY(dense(p, &b.yh, &w[PROJ_W], &w[PROJ_B], R, C, Ca, 1, &b.x1));
    MPT_TRY(mpt__op_axpy(R * C, 1.0f, &p->x, &b.x1)); /* the residual */
    MPT_TRY(mpt__op_layernorm_forward(&b.x1, &w[LN2_W], &w[LN2_B], R, C, l->eps, &b.ln2, &b.mean2,
                                      &b.rstd2));
    MPT_TRY(dense(p, &b.ln2, &w[FC_W], &w[FC_B], R, U, C, 0, &b.h));
    MPT_TRY(mpt__op_gelu_forward(&b.h, &b.g, R * U));
    MPT_TRY(dense(p, &b.g, &w[FCP_W], &w[FCP_B], R, C, U, 1, &p->y));
    MPT_TRY(mpt__op_axpy(R * C, 1.0f, &b.x1, &p->y));
out:
    block_free(&b);
    return status;
}

static int block_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    block_t b;
    mpt__tensor_t w[MPT_LAYER_MAX_PARAMS], d[MPT_LAYER_MAX_PARAMS];
    int status = block_open(l, p, &b);
    if (status < 0)
        return status;
    for (int q = 0; q < l->nparams; q++) {
        w[q] = mpt__param_view(p, &l->params[q], 0);
        d[q] = mpt__param_view(p, &l->params[q], 1);
    }
    size_t R = b.R, C = b.d.C, Ca = b.d.Ca, U = b.d.U, T = b.d.T, hs = b.d.hs;
    size_t BH = b.B * b.d.H;
    /* MLP: dy flows into fc_proj and, unchanged, into x1 (the residual). */
    MPT_TRY(dense_backward(p, &b.g, &w[FCP_W], &p->dy, R, C, U, 0, &d[FCP_W], &d[FCP_B], &b.dh));
    MPT_TRY(mpt__op_gelu_backward(&b.h, &b.dh, &b.dh, R * U));
    MPT_TRY(dense_backward(p, &b.ln2, &w[FC_W], &b.dh, R, U, C, 1, &d[FC_W], &d[FC_B], &b.dA));
    MPT_TRY(mpt__op_layernorm_backward(&b.dA, &b.x1, &w[LN2_W], &b.mean2, &b.rstd2, R, C, 0.0f,
                                       &b.dx1, &d[LN2_W], &d[LN2_B]));
    MPT_TRY(mpt__op_axpy(R * C, 1.0f, &p->dy, &b.dx1));
    /* attention: dx1 flows into proj and, unchanged, into x; the heads'
     * merged output gradient (R x Ca) goes to dA */
    MPT_TRY(dense_backward(p, &b.yh, &w[PROJ_W], &b.dx1, R, C, Ca, 0, &d[PROJ_W], &d[PROJ_B],
                           &b.dA));
    MPT_TRY(mpt__op_gemm_batched(0, 1, T, T, hs, 1.0f, &b.dA, b.y_off, Ca, &b.qkv, b.v_off,
                                 3 * Ca, 0.0f, &b.datt, b.att_off, T, BH));
    MPT_TRY(mpt__op_gemm_batched(1, 0, T, hs, T, 1.0f, &b.att, b.att_off, T, &b.dA, b.y_off, Ca,
                                 0.0f, &b.dqkv, b.v_off, 3 * Ca, BH));
    MPT_TRY(mpt__op_causal_softmax_backward(&b.att, &b.datt, BH * T, T, 1.0f / sqrtf((float)hs)));
    MPT_TRY(mpt__op_gemm_batched(0, 0, T, hs, T, 1.0f, &b.datt, b.att_off, T, &b.qkv, b.k_off,
                                 3 * Ca, 0.0f, &b.dqkv, b.q_off, 3 * Ca, BH));
    MPT_TRY(mpt__op_gemm_batched(1, 0, T, hs, T, 1.0f, &b.datt, b.att_off, T, &b.qkv, b.q_off,
                                 3 * Ca, 0.0f, &b.dqkv, b.k_off, 3 * Ca, BH));
    MPT_TRY(dense_backward(p, &b.ln1, &w[ATTN_W], &b.dqkv, R, 3 * Ca, C, 1, &d[ATTN_W],
                           &d[ATTN_B], &b.dA));
    /* Without a dx wanted, ln_1's input gradient goes to the spent dqkv. */
    mpt__tensor_t dx = p->dx.buf ? p->dx : b.dqkv;
    MPT_TRY(mpt__op_layernorm_backward(&b.dA, &p->x, &w[LN1_W], &b.mean1, &b.rstd1, R, C, 0.0f,
                                       &dx, &d[LN1_W], &d[LN1_B]));
    MPT_TRY(mpt__op_axpy(R * C, 1.0f, &b.dx1, &dx));
out:
    block_free(&b);
    return status;
}

/* Under tensor parallelism a block splits its heads and its MLP units. */
static void block_inner_units(const mpt__layer_t *l, size_t units[MPT_INNER_PARTS])
{
    units[0] = l->heads, units[1] = l->mlp_units;
}

/* A member's slice: heads [first[0], first[0] + count[0]) and MLP units
 * [first[1], first[1] + count[1]).  The layer norms and the biases added
 * after the group's sums (proj, fc_proj) are held whole by every member. */
static int block_slice(const mpt__layer_t *whole, const size_t first[MPT_INNER_PARTS],
                       const size_t count[MPT_INNER_PARTS], int member0, size_t local_base,
                       mpt__layer_t *local, mpt__run_fn run, void *arg)
{
    block_dims_t d = block_dims(whole);
    size_t head0 = first[0], heads = count[0], unit0 = first[1], units = count[1];
    size_t hs = d.hs, Ca = heads * hs, a0 = head0 * hs, C = d.C, U = d.U;
    int status;
    if (heads == 0 || head0 + heads > d.H || units == 0 || unit0 + units > U)
        return mpt__fail(MPT_ERR_INVALID, "block %d: heads %zu..%zu of %zu, units %zu..%zu of %zu",
                         whole->index, head0, head0 + heads, d.H, unit0, unit0 + units, U);
    *local = *whole;
    local->heads = heads, local->mlp_units = units, local->nparams = 0, local->ctx = NULL;
    memset(local->params, 0, sizeof local->params);
    block_params(local);
    size_t at = local_base;
    for (int q = 0; q < local->nparams; q++)
        local->params[q].offset = at, at += local->params[q].numel;
    const mpt__param_t *W = whole->params, *L = local->params;
    static const int replicated[] = {LN1_W, LN1_B, PROJ_B, LN2_W, LN2_B, FCP_B};
    for (size_t i = 0; i < sizeof replicated / sizeof *replicated; i++) {
        int q = replicated[i];
        MPT_TRY(run(arg, W[q].offset, L[q].offset, W[q].numel));
        local->params[q].counted_elsewhere = !member0;
    }
    for (size_t part = 0; part < 3; part++) { /* q, k, v: the member's heads of each */
        MPT_TRY(run(arg, W[ATTN_W].offset + (part * C + a0) * C, L[ATTN_W].offset + part * Ca * C,
                    Ca * C));
        MPT_TRY(run(arg, W[ATTN_B].offset + part * C + a0, L[ATTN_B].offset + part * Ca, Ca));
    }
    for (size_t r = 0; r < C; r++) /* proj: the member's input features of every row */
        MPT_TRY(run(arg, W[PROJ_W].offset + r * C + a0, L[PROJ_W].offset + r * Ca, Ca));
    MPT_TRY(run(arg, W[FC_W].offset + unit0 * C, L[FC_W].offset, units * C));
    MPT_TRY(run(arg, W[FC_B].offset + unit0, L[FC_B].offset, units));
    for (size_t r = 0; r < C; r++)
        MPT_TRY(run(arg, W[FCP_W].offset + r * U + unit0, L[FCP_W].offset + r * units, units));
out:
    return status;
}

/* ---- lm_head ---------------------------------------------------------------- */

static int head_infer(mpt__layer_t *l, const char *where)
{
    int status = need_sequence(l, where);
    if (status < 0)
        return status;
    size_t V = l->tied.dims[0], C = l->tied.dims[1];
    if (width(l) != C)
        return mpt__fail(MPT_ERR_PARSE, "%s: %zu features in, but the tied embedding has %zu",
                         where, width(l), C);
    l->out = (mpt__shape_t){2, {positions(l), V, 0}};
    return MPT_OK;
}

static double head_flops(const mpt__layer_t *l, size_t batch, int backward)
{
    double f = 2.0 * (double)batch * (double)positions(l) * (double)width(l) *
               (double)l->tied.dims[0];
    return backward ? 2 * f : f;
}

/* The tied weight where the pass holds it: the embedding's own on the
 * embedding's stage, a copy on a later pipeline stage (executor.c). */
static int head_weight(const mpt__layer_t *l, const mpt__pass_t *p, int grad, mpt__tensor_t *out)
{
    const mpt__tensor_t *flat = grad ? &p->grads : &p->params;
    /* tied_at counts from params[0]; grads[0] may be another element */
    size_t at = p->tied_at == SIZE_MAX || !grad ? p->tied_at
                                                : p->tied_at + p->param_base - p->grad_base;
    if (at == SIZE_MAX || at + l->tied.numel > mpt__tensor_numel(flat))
        return mpt__fail(MPT_ERR_UNSUPPORTED, "lm_head (layer %d): this device holds neither "
                         "the embedding it is tied to (layer %d) nor a copy", l->index,
                         l->tied_layer);
    *out = mpt__tensor(flat->buf, flat->off + at, l->tied.ndim, l->tied.dims);
    return MPT_OK;
}

static int head_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    mpt__tensor_t wte;
    size_t V = l->tied.dims[0], C = width(l);
    int status = head_weight(l, p, 0, &wte);
    if (status == MPT_OK)
        status = mpt__op_gemm(0, 1, p->batch * positions(l), V, C, 1.0f, &p->x, C, &wte, C, 0.0f,
                              &p->y, V);
    return status;
}

static int head_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    mpt__tensor_t wte, dwte;
    size_t V = l->tied.dims[0], C = width(l), R = p->batch * positions(l);
    int status;
    MPT_TRY(head_weight(l, p, 0, &wte));
    MPT_TRY(head_weight(l, p, 1, &dwte));
    /* Written, not added: the head's backward runs before the embedding's,
     * which adds its part (mpt__pass_t.shared_written); on a later stage
     * than the embedding, into the copy the engine sums with it. */
    MPT_TRY(mpt__op_gemm(1, 0, V, C, R, 1.0f, &p->dy, V, &p->x, C, 0.0f, &dwte, C));
    if (p->dx.buf)
        MPT_TRY(mpt__op_gemm(0, 0, R, C, V, 1.0f, &p->dy, V, &wte, C, 0.0f, &p->dx, C));
out:
    return status;
}

/* ---- the kinds (listed in the registry of layers.c) ------------------------- */

/* Launches: one gather forward; token and position sums backward. */
const mpt__layer_kind_t mpt__kind_embedding = {
    .name = "embedding",
    .flags = MPT_KIND_TIED_OWNER,
    .launches_fwd = 1, .launches_bwd = 2,
    .configure = embedding_configure,
    .infer = embedding_infer,
    .flops = embedding_flops,
    .forward = embedding_forward,
    .backward = embedding_backward,
};

/* Launches: forward 2 layer norms (2 each), 4 dense (GEMM + bias), 2
 * batched GEMMs, the softmax, GELU, 2 residual adds = 18; backward 4
 * dense backward (4 each), GELU, 2 layer norms, 4 batched GEMMs, the
 * softmax, 2 residual adds = 28. */
const mpt__layer_kind_t mpt__kind_block = {
    .name = "block",
    .split_axes = MPT_SPLIT_INNER,
    .launches_fwd = 18, .launches_bwd = 28,
    .configure = block_configure,
    .infer = block_infer,
    .scratch_floats = block_scratch,
    .flops = block_flops,
    .inner_units = block_inner_units,
    .slice = block_slice,
    .forward = block_forward,
    .backward = block_backward,
};

/* Launches: one GEMM forward; GEMM dW and GEMM dx backward. */
const mpt__layer_kind_t mpt__kind_lm_head = {
    .name = "lm_head",
    .flags = MPT_KIND_TIED_READER,
    .launches_fwd = 1, .launches_bwd = 2,
    .infer = head_infer,
    .flops = head_flops,
    .forward = head_forward,
    .backward = head_backward,
};
