/*
 * engine/executor.c: one model on one device (see executor.h).
 *
 * Memory: parameters, gradients and two optimizer slots are flat buffers
 * in the model's parameter layout; every layer's input is kept from
 * forward to backward in one activation buffer (a view layer shares its
 * input's region); gradients flow through two ping-pong buffers; saved
 * state (maxpool argmax, layernorm statistics) and one shared scratch
 * (conv columns) complete it.  Everything is allocated once, for the
 * largest batch.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/executor.h"

struct mpt__executor {
    const mpt__model_t *m;
    mpt_device_t *dev;
    size_t max_batch;
    uint64_t seed, step;
    mpt_buffer_t *params, *grads, *slot[2];
    mpt_buffer_t *acts, *dbuf[2], *saved, *scratch, *labels, *loss_rows, *correct;
    size_t *act_off;   /* nlayers + 1: input of layer i; [nlayers] unused */
    size_t *saved_off; /* nlayers */
    float *host_rows;  /* max_batch */
};

static mpt__tensor_t flat(mpt_buffer_t *b, size_t n)
{
    size_t dims[1] = {n};
    return mpt__tensor(b, 0, 1, dims);
}

static mpt__tensor_t region(mpt_buffer_t *b, size_t off, size_t n)
{
    size_t dims[1] = {n};
    return mpt__tensor(b, off, 1, dims);
}

void mpt__executor_free(mpt__executor_t *ex)
{
    if (!ex)
        return;
    mpt_buffer_t *all[] = {ex->params, ex->grads,   ex->slot[0], ex->slot[1],  ex->acts,
                           ex->dbuf[0], ex->dbuf[1], ex->saved,   ex->scratch,  ex->labels,
                           ex->loss_rows, ex->correct};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        mpt_buffer_free(all[i]);
    free(ex->act_off);
    free(ex->saved_off);
    free(ex->host_rows);
    free(ex);
}

static int zeroed(mpt_device_t *dev, size_t floats, mpt_buffer_t **out)
{
    int status = mpt_buffer_create(dev, (floats ? floats : 1) * sizeof(float), out);
    if (status == MPT_OK) {
        mpt__tensor_t t = flat(*out, floats ? floats : 1);
        status = mpt__op_fill(&t, floats ? floats : 1, 0.0f);
    }
    return status;
}

int mpt__executor_create(const mpt__model_t *m, mpt_device_t *dev, size_t max_batch,
                         uint64_t seed, mpt__executor_t **out)
{
    int status = MPT_OK;
    mpt__executor_t *ex = calloc(1, sizeof *ex);
    float *init = NULL;
    *out = NULL;
    if (!ex || !(ex->act_off = calloc(m->nlayers + 1, sizeof *ex->act_off)) ||
        !(ex->saved_off = calloc(m->nlayers, sizeof *ex->saved_off)) ||
        !(ex->host_rows = calloc(max_batch, sizeof *ex->host_rows)) ||
        !(init = malloc((m->param_floats ? m->param_floats : 1) * sizeof *init))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    ex->m = m, ex->dev = dev, ex->max_batch = max_batch, ex->seed = seed;

    /* Lay out activations, saved state and scratch. */
    size_t act = mpt__shape_numel(&m->input) * max_batch, saved = 0, scratch = 1;
    for (size_t i = 0; i < m->nlayers; i++) {
        const mpt__layer_t *l = &m->layers[i];
        ex->saved_off[i] = saved;
        saved += l->saved_per_sample * max_batch;
        if (l->kind->scratch_floats) {
            size_t s = l->kind->scratch_floats(l, max_batch);
            scratch = s > scratch ? s : scratch;
        }
        if (l->kind->is_view || l->kind->is_loss) {
            ex->act_off[i + 1] = ex->act_off[i];
            continue;
        }
        ex->act_off[i + 1] = act;
        act += mpt__shape_numel(&l->out) * max_batch;
    }
    size_t grad_floats = mpt__model_max_activation(m) * max_batch;
    MPT_TRY(zeroed(dev, m->param_floats, &ex->params));
    MPT_TRY(zeroed(dev, m->param_floats, &ex->grads));
    MPT_TRY(zeroed(dev, m->param_floats, &ex->slot[0]));
    MPT_TRY(zeroed(dev, m->param_floats, &ex->slot[1]));
    MPT_TRY(zeroed(dev, act, &ex->acts));
    MPT_TRY(zeroed(dev, grad_floats, &ex->dbuf[0]));
    MPT_TRY(zeroed(dev, grad_floats, &ex->dbuf[1]));
    MPT_TRY(zeroed(dev, saved, &ex->saved));
    MPT_TRY(zeroed(dev, scratch, &ex->scratch));
    MPT_TRY(zeroed(dev, max_batch, &ex->loss_rows));
    MPT_TRY(zeroed(dev, max_batch, &ex->correct));
    MPT_TRY(mpt_buffer_create(dev, max_batch * sizeof(int32_t), &ex->labels));
    mpt__model_init_params(m, seed, init);
    MPT_TRY(mpt__executor_write_params(ex, init));
out:
    free(init);
    if (status < 0) {
        mpt__executor_free(ex);
        ex = NULL;
    }
    *out = ex;
    return status;
}

/* The pass of layer i for `batch` samples. */
static mpt__pass_t pass_of(mpt__executor_t *ex, size_t i, size_t batch, int training)
{
    const mpt__layer_t *l = &ex->m->layers[i];
    mpt__pass_t p;
    memset(&p, 0, sizeof p);
    p.batch = batch;
    p.x = region(ex->acts, ex->act_off[i], mpt__shape_numel(&l->in) * batch);
    p.y = region(ex->acts, ex->act_off[i + 1], mpt__shape_numel(&l->out) * batch);
    p.params = flat(ex->params, ex->m->param_floats);
    p.grads = flat(ex->grads, ex->m->param_floats);
    p.saved = region(ex->saved, ex->saved_off[i], l->saved_per_sample * batch);
    p.scratch = flat(ex->scratch, 1);
    p.training = training;
    p.seed = ex->seed;
    p.step = ex->step;
    p.labels = ex->labels;
    p.loss_scale = 1.0f / (float)batch;
    p.loss_rows = flat(ex->loss_rows, batch);
    return p;
}

static int upload(mpt__executor_t *ex, const float *x, const int32_t *y, size_t batch)
{
    int status;
    if (batch == 0 || batch > ex->max_batch)
        return mpt__fail(MPT_ERR_INVALID, "batch of %zu samples: must be 1 to %zu", batch,
                         ex->max_batch);
    MPT_TRY(mpt_buffer_write(ex->acts, 0, x, batch * mpt__shape_numel(&ex->m->input) * sizeof *x));
    MPT_TRY(mpt_buffer_write(ex->labels, 0, y, batch * sizeof *y));
out:
    return status;
}

static int forward(mpt__executor_t *ex, size_t batch, int training)
{
    for (size_t i = 0; i < ex->m->nlayers; i++) {
        mpt__layer_t *l = &ex->m->layers[i];
        mpt__pass_t p = pass_of(ex, i, batch, training);
        int status = l->kind->forward(l, &p);
        if (status < 0)
            return mpt__fail_context(status, "forward of layer %zu (%s)", i, l->kind->name);
    }
    return MPT_OK;
}

static int backward(mpt__executor_t *ex, size_t batch)
{
    int cur = 0;
    size_t first = 0; /* the first layer that is not a view of its input */
    while (first < ex->m->nlayers && ex->m->layers[first].kind->is_view)
        first++;
    for (size_t i = ex->m->nlayers; i-- > 0;) {
        mpt__layer_t *l = &ex->m->layers[i];
        if (l->kind->is_view)
            continue; /* its gradient is its output's, unchanged */
        mpt__pass_t p = pass_of(ex, i, batch, 1);
        size_t out_n = mpt__shape_numel(&l->out) * batch, in_n = mpt__shape_numel(&l->in) * batch;
        p.dy = region(ex->dbuf[cur], 0, out_n);
        /* The first computing layer's input gradient is wanted by nobody. */
        if (i > first)
            p.dx = region(ex->dbuf[1 - cur], 0, in_n);
        int status = l->kind->backward(l, &p);
        if (status < 0)
            return mpt__fail_context(status, "backward of layer %zu (%s)", i, l->kind->name);
        cur = 1 - cur;
    }
    return MPT_OK;
}

static int read_loss(mpt__executor_t *ex, size_t batch, double *sum)
{
    int status = mpt_buffer_read(ex->loss_rows, 0, ex->host_rows, batch * sizeof(float));
    *sum = 0;
    for (size_t i = 0; status == MPT_OK && i < batch; i++)
        *sum += ex->host_rows[i];
    return status;
}

static int clip(mpt__executor_t *ex, float max_norm, double *norm)
{
    mpt__tensor_t g = flat(ex->grads, ex->m->param_floats);
    float n = 0;
    int status = mpt__op_nrm2(&g, ex->m->param_floats, &n);
    *norm = n;
    /* As torch.nn.utils.clip_grad_norm_: scale by max / (norm + 1e-6)
     * when that is below one. */
    double coef = (double)max_norm / ((double)n + 1e-6);
    if (status == MPT_OK && coef < 1.0)
        status = mpt__op_scale(&g, ex->m->param_floats, (float)coef);
    return status;
}

static int update(mpt__executor_t *ex, const mpt__optim_cfg_t *o, float lr)
{
    size_t n = ex->m->param_floats;
    mpt__tensor_t p = flat(ex->params, n), g = flat(ex->grads, n);
    mpt__tensor_t s0 = flat(ex->slot[0], n), s1 = flat(ex->slot[1], n);
    if (o->kind == MPT_OPTIM_ADAMW)
        return mpt__op_adamw_update(&p, &g, &s0, &s1, n, lr, o->beta1, o->beta2, o->eps,
                                    o->weight_decay, (int)(ex->step + 1));
    return mpt__op_sgd_update(&p, &g, &s0, n, lr, o->momentum, o->weight_decay, ex->step == 0);
}

int mpt__executor_train_step(mpt__executor_t *ex, const float *x, const int32_t *y, size_t batch,
                             const mpt__optim_cfg_t *opt, float lr, double *loss,
                             double *grad_norm)
{
    int status;
    double sum = 0;
    *grad_norm = 0;
    MPT_TRY(upload(ex, x, y, batch));
    MPT_TRY(forward(ex, batch, 1));
    MPT_TRY(backward(ex, batch));
    MPT_TRY(read_loss(ex, batch, &sum));
    *loss = sum / (double)batch;
    if (opt->clip_norm > 0)
        MPT_TRY(clip(ex, opt->clip_norm, grad_norm));
    MPT_TRY(update(ex, opt, lr));
    ex->step++;
out:
    return status;
}

int mpt__executor_gradients(mpt__executor_t *ex, const float *x, const int32_t *y, size_t batch,
                            double *loss, float *logits, float *grads)
{
    int status;
    double sum = 0;
    size_t last = ex->m->nlayers - 1;
    MPT_TRY(upload(ex, x, y, batch));
    MPT_TRY(forward(ex, batch, 1));
    MPT_TRY(backward(ex, batch));
    MPT_TRY(read_loss(ex, batch, &sum));
    *loss = sum / (double)batch;
    if (logits)
        MPT_TRY(mpt_buffer_read(ex->acts, ex->act_off[last] * sizeof(float), logits,
                                batch * (size_t)ex->m->classes * sizeof(float)));
    if (grads)
        MPT_TRY(mpt_buffer_read(ex->grads, 0, grads, ex->m->param_floats * sizeof(float)));
out:
    return status;
}

int mpt__executor_evaluate(mpt__executor_t *ex, const float *x, const int32_t *y, size_t count,
                           double *loss_sum, double *correct)
{
    size_t in = mpt__shape_numel(&ex->m->input), last = ex->m->nlayers - 1;
    int status = MPT_OK;
    *loss_sum = 0, *correct = 0;
    for (size_t first = 0; first < count; first += ex->max_batch) {
        size_t batch = count - first < ex->max_batch ? count - first : ex->max_batch;
        double sum = 0;
        mpt__tensor_t logits = region(ex->acts, ex->act_off[last], batch * ex->m->classes);
        mpt__tensor_t hits = flat(ex->correct, batch);
        MPT_TRY(upload(ex, x + first * in, y + first, batch));
        MPT_TRY(forward(ex, batch, 0));
        MPT_TRY(read_loss(ex, batch, &sum));
        *loss_sum += sum;
        MPT_TRY(mpt__op_argmax_correct(&logits, ex->labels, 0, batch, (size_t)ex->m->classes,
                                       &hits));
        MPT_TRY(mpt_buffer_read(ex->correct, 0, ex->host_rows, batch * sizeof(float)));
        for (size_t i = 0; i < batch; i++)
            *correct += ex->host_rows[i];
    }
out:
    return status;
}

int mpt__executor_read_params(mpt__executor_t *ex, float *out)
{
    return mpt_buffer_read(ex->params, 0, out, ex->m->param_floats * sizeof *out);
}

int mpt__executor_write_params(mpt__executor_t *ex, const float *in)
{
    return mpt_buffer_write(ex->params, 0, in, ex->m->param_floats * sizeof *in);
}

int mpt__executor_read_slot(mpt__executor_t *ex, int slot, float *out)
{
    return mpt_buffer_read(ex->slot[slot & 1], 0, out, ex->m->param_floats * sizeof *out);
}

int mpt__executor_write_slot(mpt__executor_t *ex, int slot, const float *in)
{
    return mpt_buffer_write(ex->slot[slot & 1], 0, in, ex->m->param_floats * sizeof *in);
}

uint64_t mpt__executor_step(const mpt__executor_t *ex)
{
    return ex->step;
}

void mpt__executor_set_step(mpt__executor_t *ex, uint64_t step)
{
    ex->step = step;
}
