/*
 * engine/shard.c: a tensor-parallel member's shard model (see shard.h).
 *
 * A split layer keeps its own kind's forward and backward, run on the
 * member's local shapes (fewer units, input features or channels), behind
 * a thin wrapper kind that adds the collective the split needs: the
 * column wrapper all-reduces the input gradient after the backward, the
 * row wrapper the output after the forward.  Both all-reduce in place on
 * the device buffer (comm/device_ring.c).  A transformer block sums
 * inside its own passes: its wrapper hands them the group's all-reduce as
 * mpt__pass_t.group_sum.  A slice that must become whole
 * passes through an all-gather layer (host staging: each member's slice
 * is batch x its width, the whole activation batch x the full width).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "engine/shard.h"
#include "plan/plan.h"

typedef struct {
    const mpt__layer_kind_t *base; /* the split layer's own kind */
    mpt__shard_t *shard;
    size_t *cut;                   /* all-gather: member i's floats per sample are
                                    * [cut[i], cut[i + 1]) of the whole row */
    size_t *counts;                /* all-gather: per-member counts of one call */
    size_t slice_first, slice_whole; /* a layer on a slice: where the member's elements
                                      * start in a whole sample, and its elements */
} tp_ctx_t;

struct mpt__shard {
    mpt__model_t model;
    mpt__piece_t *pieces;
    size_t npieces, cap;
    tp_ctx_t *ctx;
    size_t nctx;
    mpt__group_t group;
    int *members;
    size_t tp, rank, max_batch, widest; /* widest: floats per sample of a gathered row */
    float *host_a, *host_b;
    double comm_s;
    size_t comm_bytes;
    mpt__spans_t *spans; /* the worker's trace, while tracing; else NULL */
};

/* Its time and, while tracing, its span (named by a string literal). */
static void comm_done(mpt__shard_t *s, const char *name, double t0)
{
    double now = mpt__now();
    s->comm_s += now - t0;
    if (s->spans)
        mpt__spans_add(s->spans, name, -1, t0, now);
}

/* ---- the wrapper kinds ----------------------------------------------------------- */

static int allreduce_region(tp_ctx_t *c, mpt_buffer_t *buf, size_t off, size_t count)
{
    mpt__shard_t *s = c->shard;
    double t0 = mpt__now();
    int status = mpt__allreduce_device(&s->group, buf, off, count, NULL);
    comm_done(s, "tp-allreduce", t0);
    s->comm_bytes += count * sizeof(float);
    return status;
}

static size_t wrap_scratch(const mpt__layer_t *l, size_t batch)
{
    const tp_ctx_t *c = l->ctx;
    return c->base->scratch_floats ? c->base->scratch_floats(l, batch) : 0;
}

static double wrap_flops(const mpt__layer_t *l, size_t batch, int backward)
{
    const tp_ctx_t *c = l->ctx;
    return c->base->flops(l, batch, backward);
}

static int column_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    const tp_ctx_t *c = l->ctx;
    return c->base->forward(l, p);
}

/* Each member's input gradient sums over its own output units only. */
static int column_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    tp_ctx_t *c = l->ctx;
    int status = c->base->backward(l, p);
    if (status == MPT_OK && p->dx.buf)
        status = allreduce_region(c, p->dx.buf, p->dx.off, p->batch * mpt__shape_numel(&l->in));
    return status;
}

/* Each member's output sums over its own input features only. */
static int row_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    tp_ctx_t *c = l->ctx;
    int status = c->base->forward(l, p);
    if (status == MPT_OK)
        status = allreduce_region(c, p->y.buf, p->y.off, p->batch * mpt__shape_numel(&l->out));
    return status;
}

static int row_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    const tp_ctx_t *c = l->ctx;
    return c->base->backward(l, p);
}

static int gather_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    tp_ctx_t *c = l->ctx;
    mpt__shard_t *s = c->shard;
    size_t b = p->batch, full = mpt__shape_numel(&l->out);
    size_t own = c->cut[s->rank + 1] - c->cut[s->rank];
    int status;
    double t0 = mpt__now();
    /* Member-major in host_a (member i's batch x width block at b * cut[i]),
     * then row-major in host_b. */
    MPT_TRY(mpt_buffer_read(p->x.buf, p->x.off * sizeof(float), s->host_a + b * c->cut[s->rank],
                            b * own * sizeof(float)));
    for (size_t i = 0; i < s->tp; i++)
        c->counts[i] = b * (c->cut[i + 1] - c->cut[i]);
    MPT_TRY(mpt__allgather(&s->group, s->host_a, c->counts, NULL));
    for (size_t i = 0; i < s->tp; i++) {
        size_t w = c->cut[i + 1] - c->cut[i];
        const float *src = s->host_a + b * c->cut[i];
        for (size_t r = 0; r < b; r++)
            memcpy(s->host_b + r * full + c->cut[i], src + r * w, w * sizeof(float));
    }
    MPT_TRY(mpt_buffer_write(p->y.buf, p->y.off * sizeof(float), s->host_b,
                             b * full * sizeof(float)));
    s->comm_bytes += b * full * sizeof(float);
out:
    comm_done(s, "tp-allgather", t0);
    return status;
}

/* The gradient of a slice is the slice of the whole gradient. */
static int gather_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    tp_ctx_t *c = l->ctx;
    mpt__shard_t *s = c->shard;
    size_t b = p->batch, full = mpt__shape_numel(&l->out);
    size_t lo = c->cut[s->rank], w = c->cut[s->rank + 1] - lo;
    int status;
    if (!p->dx.buf)
        return MPT_OK;
    MPT_TRY(mpt_buffer_read(p->dy.buf, p->dy.off * sizeof(float), s->host_b,
                            b * full * sizeof(float)));
    for (size_t r = 0; r < b; r++)
        memcpy(s->host_a + r * w, s->host_b + r * full + lo, w * sizeof(float));
    MPT_TRY(mpt_buffer_write(p->dx.buf, p->dx.off * sizeof(float), s->host_a,
                             b * w * sizeof(float)));
out:
    return status;
}

/* A block split inside (MPT_SPLIT_INNER): its own passes call back for
 * the group's sums (nn/layer.h mpt__pass_t.group_sum). */
static int group_sum(void *arg, const mpt__tensor_t *t, size_t count)
{
    return allreduce_region(arg, t->buf, t->off, count);
}

static int inner_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    tp_ctx_t *c = l->ctx;
    mpt__pass_t q = *p;
    q.group_sum = group_sum, q.group_arg = c;
    return c->base->forward(l, &q);
}

static int inner_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    tp_ctx_t *c = l->ctx;
    mpt__pass_t q = *p;
    q.group_sum = group_sum, q.group_arg = c;
    return c->base->backward(l, &q);
}

/* A layer on the member's slice (relu, maxpool2d, dropout...) runs its
 * own kind told where the slice sits in a whole sample, so that dropout
 * draws the whole activation's numbers for the elements it holds. */
static int sliced_forward(mpt__layer_t *l, mpt__pass_t *p)
{
    const tp_ctx_t *c = l->ctx;
    mpt__pass_t q = *p;
    q.slice_first = c->slice_first, q.slice_whole = c->slice_whole;
    return c->base->forward(l, &q);
}

static int sliced_backward(mpt__layer_t *l, mpt__pass_t *p)
{
    const tp_ctx_t *c = l->ctx;
    mpt__pass_t q = *p;
    q.slice_first = c->slice_first, q.slice_whole = c->slice_whole;
    return c->base->backward(l, &q);
}

static double no_flops(const mpt__layer_t *l, size_t batch, int backward)
{
    (void)l, (void)batch, (void)backward;
    return 0;
}

/* The wrappers run the split layer's own kind (tp_ctx_t.base) on local
 * shapes; they are never in the registry and never reach the planner. */
static const mpt__layer_kind_t column_kind = {
    .name = "column-parallel",
    .scratch_floats = wrap_scratch,
    .flops = wrap_flops,
    .forward = column_forward,
    .backward = column_backward,
};
static const mpt__layer_kind_t row_kind = {
    .name = "row-parallel",
    .scratch_floats = wrap_scratch,
    .flops = wrap_flops,
    .forward = row_forward,
    .backward = row_backward,
};
static const mpt__layer_kind_t inner_kind = {
    .name = "block-parallel",
    .scratch_floats = wrap_scratch,
    .flops = wrap_flops,
    .forward = inner_forward,
    .backward = inner_backward,
};
static const mpt__layer_kind_t sliced_kind = {
    .name = "sliced",
    .scratch_floats = wrap_scratch,
    .flops = wrap_flops,
    .forward = sliced_forward,
    .backward = sliced_backward,
};
static const mpt__layer_kind_t gather_kind = {
    .name = "all-gather",
    .flops = no_flops,
    .forward = gather_forward,
    .backward = gather_backward,
};

/* ---- building the shard model ------------------------------------------------------ */

static int add_piece(mpt__shard_t *s, size_t model, size_t local, size_t count)
{
    if (count == 0)
        return MPT_OK;
    if (s->npieces && s->pieces[s->npieces - 1].model + s->pieces[s->npieces - 1].count == model &&
        s->pieces[s->npieces - 1].local + s->pieces[s->npieces - 1].count == local) {
        s->pieces[s->npieces - 1].count += count;
        return MPT_OK;
    }
    if (s->npieces == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        mpt__piece_t *grown = realloc(s->pieces, cap * sizeof *grown);
        if (!grown)
            return mpt__fail(MPT_ERR_NOMEM, "out of memory");
        s->pieces = grown, s->cap = cap;
    }
    s->pieces[s->npieces++] = (mpt__piece_t){model, local, count};
    return MPT_OK;
}

/* The walk's state: whole, or sliced along the first dimension of the
 * current (whole) shape, member i holding units [cut[i], cut[i + 1]). */
typedef struct {
    int sliced;
    size_t *cut;
} walk_t;

static mpt__shape_t local_shape(const mpt__shard_t *s, const walk_t *st, mpt__shape_t whole)
{
    if (st->sliced)
        whole.d[0] = st->cut[s->rank + 1] - st->cut[s->rank];
    return whole;
}

static tp_ctx_t *new_ctx(mpt__shard_t *s, const mpt__layer_kind_t *base)
{
    tp_ctx_t *c = &s->ctx[s->nctx++];
    c->base = base, c->shard = s;
    return c;
}

/* Appends a local layer: a copy of `like` with input `in`, the kind's
 * shape inference run on it, parameters laid out after the previous
 * layers'. */
static int append_layer(mpt__shard_t *s, const mpt__layer_t *like, mpt__shape_t in,
                        const char *where, mpt__layer_t **out)
{
    mpt__layer_t *l = &s->model.layers[s->model.nlayers];
    *l = *like;
    l->in = in, l->nparams = 0, l->ctx = NULL;
    memset(l->params, 0, sizeof l->params);
    int status = like->kind->infer(l, where);
    if (status < 0)
        return status;
    for (int q = 0; q < l->nparams; q++) {
        l->params[q].offset = s->model.param_floats;
        s->model.param_floats += l->params[q].numel;
    }
    s->model.nlayers++;
    *out = l;
    return MPT_OK;
}

/* The slices become whole: an all-gather layer. */
static int append_gather(mpt__shard_t *s, walk_t *st, mpt__shape_t whole, int index)
{
    mpt__layer_t *l = &s->model.layers[s->model.nlayers++];
    size_t per_unit = mpt__shape_numel(&whole) / whole.d[0];
    memset(l, 0, sizeof *l);
    l->kind = &gather_kind, l->index = index;
    l->in = local_shape(s, st, whole), l->out = whole;
    tp_ctx_t *c = new_ctx(s, NULL);
    if (!(c->cut = malloc((s->tp + 1) * sizeof *c->cut)) ||
        !(c->counts = malloc(s->tp * sizeof *c->counts)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i <= s->tp; i++)
        c->cut[i] = st->cut[i] * per_unit;
    l->ctx = c;
    if (mpt__shape_numel(&whole) > s->widest)
        s->widest = mpt__shape_numel(&whole);
    st->sliced = 0;
    return MPT_OK;
}

static int slice_units(const mpt__shard_t *s, walk_t *st, size_t n, const double *fractions,
                       const char *where)
{
    size_t *counts = malloc(s->tp * sizeof *counts);
    if (!counts)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    int status = mpt__tp_split(n, fractions, s->tp, counts);
    if (status < 0) {
        free(counts);
        return mpt__fail_context(status, "%s, split over %zu devices", where, s->tp);
    }
    st->cut[0] = 0;
    for (size_t i = 0; i < s->tp; i++)
        st->cut[i + 1] = st->cut[i] + counts[i];
    free(counts);
    st->sliced = 1;
    return MPT_OK;
}

/* A layer split over its outputs (MPT_SPLIT_COLUMN: linear's units,
 * MPT_SPLIT_CHANNELS: conv2d's channels) on a whole input: the member's
 * outputs.  Such weights are (outputs x the rest) in the model, so the
 * member's rows and its bias are one run each. */
static int split_columns(mpt__shard_t *s, walk_t *st, const mpt__layer_t *L,
                         const double *fractions, const char *where)
{
    int by_channels = (L->kind->split_axes & MPT_SPLIT_CHANNELS) != 0;
    size_t outputs = L->out.d[0];
    int status;
    MPT_TRY(slice_units(s, st, outputs, fractions, where));
    size_t lo = st->cut[s->rank], n = st->cut[s->rank + 1] - lo;
    mpt__layer_t like = *L, *l;
    if (by_channels)
        like.channels = n;
    else
        like.units = n;
    MPT_TRY(append_layer(s, &like, L->in, where, &l));
    size_t row = L->params[0].numel / outputs;
    MPT_TRY(add_piece(s, L->params[0].offset + lo * row, l->params[0].offset, n * row));
    MPT_TRY(add_piece(s, L->params[1].offset + lo, l->params[1].offset, n));
    l->kind = &column_kind;
    l->ctx = new_ctx(s, L->kind);
out:
    return status;
}

/* linear on a sliced input: the member's input features of every row of
 * the weight; the bias belongs to member 0, which adds it once. */
static int split_rows(mpt__shard_t *s, walk_t *st, const mpt__layer_t *L, const char *where)
{
    size_t lo = st->cut[s->rank], n = st->cut[s->rank + 1] - lo, in = L->in.d[0];
    mpt__layer_t *l;
    int status;
    MPT_TRY(append_layer(s, L, local_shape(s, st, L->in), where, &l));
    for (size_t u = 0; u < L->units; u++)
        MPT_TRY(add_piece(s, L->params[0].offset + u * in + lo, l->params[0].offset + u * n, n));
    if (s->rank == 0) {
        MPT_TRY(add_piece(s, L->params[1].offset, l->params[1].offset, L->units));
    } else {
        s->model.param_floats -= l->params[1].numel; /* the bias was laid out last */
        l->nparams = 1;
    }
    l->kind = &row_kind;
    l->ctx = new_ctx(s, L->kind);
    st->sliced = 0;
out:
    return status;
}

static int add_run(void *arg, size_t model, size_t local, size_t count)
{
    return add_piece(arg, model, local, count);
}

/* A layer split inside (a transformer block) on a whole input: the
 * member's units of each of the kind's parts (a block's heads and MLP
 * units), each split by the fractions as units are; the kind cuts its
 * own parameters (mpt__layer_kind_t.slice). */
static int split_inner(mpt__shard_t *s, const mpt__layer_t *L, const double *fractions,
                       const char *where)
{
    size_t units[MPT_INNER_PARTS], first[MPT_INNER_PARTS] = {0}, count[MPT_INNER_PARTS];
    size_t *counts = malloc(s->tp * sizeof *counts);
    int status = MPT_OK;
    if (!counts)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    if (!L->kind->inner_units || !L->kind->slice) {
        status = mpt__fail(MPT_ERR_UNSUPPORTED, "%s: its kind splits inside but cannot slice "
                           "itself", where);
        goto out;
    }
    L->kind->inner_units(L, units);
    for (int k = 0; k < MPT_INNER_PARTS; k++) {
        if ((status = mpt__tp_split(units[k], fractions, s->tp, counts)) < 0) {
            status = mpt__fail_context(status, "%s, split over %zu devices", where, s->tp);
            goto out;
        }
        for (size_t i = 0; i < s->rank; i++)
            first[k] += counts[i];
        count[k] = counts[s->rank];
    }
    mpt__layer_t *l = &s->model.layers[s->model.nlayers];
    MPT_TRY(L->kind->slice(L, first, count, s->rank == 0, s->model.param_floats, l, add_run, s));
    for (int q = 0; q < l->nparams; q++)
        s->model.param_floats += l->params[q].numel;
    s->model.nlayers++;
    l->kind = &inner_kind;
    l->ctx = new_ctx(s, L->kind);
out:
    free(counts);
    return status;
}

/* A layer every member runs whole: each holds all of its parameters
 * (member 0's copy enters the gradient norm) and computes the same
 * gradient.  A head tied to an embedding reads the member's own copy of
 * that embedding, which must be in the stage. */
static int replicate(mpt__shard_t *s, const mpt__layer_t *L, size_t first,
                     const int *local_of, const char *where)
{
    mpt__layer_t *l;
    int status;
    MPT_TRY(append_layer(s, L, L->in, where, &l));
    for (int q = 0; q < l->nparams; q++) {
        MPT_TRY(add_piece(s, L->params[q].offset, l->params[q].offset, L->params[q].numel));
        l->params[q].shared = L->params[q].shared;
        l->params[q].counted_elsewhere = s->rank != 0;
    }
    if (L->tied_layer >= 0) {
        if ((size_t)L->tied_layer < first)
            return mpt__fail(MPT_ERR_UNSUPPORTED, "%s: a tensor-parallel stage without the "
                             "embedding it is tied to (layer %d)", where, L->tied_layer);
        l->tied_layer = local_of[(size_t)L->tied_layer - first];
        /* model.c ties an lm_head to its embedding's first parameter (wte) */
        l->tied = s->model.layers[l->tied_layer].params[0];
    }
out:
    return status;
}

int mpt__shard_create(const mpt__model_t *m, size_t first, size_t last,
                      const mpt__tp_roles_t *roles, const double *fractions, size_t tp,
                      size_t rank, const mpt__group_t *group, size_t max_batch,
                      mpt__shard_t **out)
{
    int status = MPT_OK;
    size_t nl = last - first + 1, cap = 2 * nl + 2;
    walk_t st = {0, NULL};
    const mpt__tp_step_t *steps = NULL;
    int *local_of = NULL; /* model layer first + k is local layer local_of[k] */
    int gather_after = 0;
    mpt__shard_t *s = NULL;
    *out = NULL;
    if (first > last || last >= m->nlayers || tp == 0 || rank >= tp || max_batch == 0)
        return mpt__fail(MPT_ERR_INVALID, "member %zu of %zu for layers %zu..%zu of %zu", rank,
                         tp, first, last, m->nlayers);
    if (!(s = calloc(1, sizeof *s)) || !(s->model.layers = calloc(cap, sizeof *s->model.layers)) ||
        !(s->ctx = calloc(cap, sizeof *s->ctx)) ||
        !(s->members = malloc((size_t)group->size * sizeof *s->members)) ||
        !(st.cut = calloc(tp + 1, sizeof *st.cut))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(s->members, group->members, (size_t)group->size * sizeof *s->members);
    s->group = *group;
    s->group.members = s->members;
    s->tp = tp, s->rank = rank, s->max_batch = max_batch;
    s->model.input = m->layers[first].in;
    s->model.classes = m->classes;
    s->model.labels_per_sample = m->labels_per_sample;

    if (!(local_of = calloc(nl, sizeof *local_of))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* The plan's roles, recorded once (mpt__plan_roles) and checked there:
     * the shard reads them, never recomputes them. */
    if (!roles || !roles->steps) {
        status = mpt__fail(MPT_ERR_INVALID, "layers %zu..%zu: a tensor-parallel stage without "
                           "its layers' roles (the plan was not given its model: "
                           "mpt__plan_roles)", first, last);
        goto out;
    }
    steps = roles->steps;
    gather_after = roles->gather_after;
    for (size_t i = first; i <= last; i++) {
        const mpt__layer_t *L = &m->layers[i];
        const mpt__tp_step_t *step = &steps[i - first];
        char where[96];
        mpt__layer_t *l;
        snprintf(where, sizeof where, "layer %zu (%s)", i, L->kind->name);
        if (step->gather_before)
            MPT_TRY(append_gather(s, &st, L->in, L->index));
        local_of[i - first] = (int)s->model.nlayers;
        switch (step->role) {
        case MPT__TP_ROW:
            MPT_TRY(split_rows(s, &st, L, where));
            break;
        case MPT__TP_COLUMN:
            MPT_TRY(split_columns(s, &st, L, fractions, where));
            break;
        case MPT__TP_SLICE:
            MPT_TRY(append_layer(s, L, local_shape(s, &st, L->in), where, &l));
            if (!L->kind->is_view) { /* a view (flatten) runs nothing to tell */
                size_t per_unit = mpt__shape_numel(&L->in) / L->in.d[0];
                tp_ctx_t *c = new_ctx(s, L->kind);
                c->slice_first = st.cut[s->rank] * per_unit;
                c->slice_whole = mpt__shape_numel(&L->in);
                l->kind = &sliced_kind, l->ctx = c;
            }
            if (L->in.ndim == 3 && L->out.ndim == 1) /* flatten: channels -> features */
                for (size_t k = 0; k <= tp; k++)
                    st.cut[k] *= L->in.d[1] * L->in.d[2];
            break;
        case MPT__TP_INNER:
            MPT_TRY(split_inner(s, L, fractions, where));
            break;
        case MPT__TP_WHOLE:
            MPT_TRY(replicate(s, L, first, local_of, where));
            break;
        }
    }
    if (gather_after) /* a stage hands on the whole activation */
        MPT_TRY(append_gather(s, &st, m->layers[last].out, m->layers[last].index));
    if (s->widest &&
        (!(s->host_a = malloc(max_batch * s->widest * sizeof(float))) ||
         !(s->host_b = malloc(max_batch * s->widest * sizeof(float))))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
out:
    free(st.cut);
    free(local_of);
    if (status < 0) {
        mpt__shard_free(s);
        s = NULL;
    }
    *out = s;
    return status;
}

void mpt__shard_free(mpt__shard_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; s->ctx && i < s->nctx; i++) {
        free(s->ctx[i].cut);
        free(s->ctx[i].counts);
    }
    free(s->ctx);
    free(s->model.layers);
    free(s->pieces);
    free(s->members);
    free(s->host_a);
    free(s->host_b);
    free(s);
}

const mpt__model_t *mpt__shard_model(const mpt__shard_t *s)
{
    return &s->model;
}

const mpt__piece_t *mpt__shard_pieces(const mpt__shard_t *s, size_t *npieces)
{
    *npieces = s->npieces;
    return s->pieces;
}

void mpt__shard_gather(const mpt__shard_t *s, const float *model_array, float *local)
{
    for (size_t i = 0; i < s->npieces; i++)
        memcpy(local + s->pieces[i].local, model_array + s->pieces[i].model,
               s->pieces[i].count * sizeof(float));
}

void mpt__shard_scatter(const mpt__shard_t *s, const float *local, float *model_array)
{
    for (size_t i = 0; i < s->npieces; i++)
        memcpy(model_array + s->pieces[i].model, local + s->pieces[i].local,
               s->pieces[i].count * sizeof(float));
}

int mpt__shard_same_layout(const mpt__shard_t *a, const mpt__shard_t *b)
{
    return a->npieces == b->npieces && a->model.param_floats == b->model.param_floats &&
           memcmp(a->pieces, b->pieces, a->npieces * sizeof *a->pieces) == 0;
}

void mpt__shard_set_spans(mpt__shard_t *s, mpt__spans_t *spans)
{
    s->spans = spans;
}

void mpt__shard_take_comm(mpt__shard_t *s, double *seconds, size_t *bytes)
{
    *seconds = s->comm_s, *bytes = s->comm_bytes;
    s->comm_s = 0, s->comm_bytes = 0;
}
