/*
 * engine/executor.c: a range of a model's layers on one device (see
 * executor.h).
 *
 * Memory: the range's parameters, gradients and two optimizer slots are
 * flat buffers holding the model's parameter elements [p0, p1) (a layer's
 * views subtract p0: mpt__pass_t.param_base); with micro-batches a second
 * gradient buffer takes each micro-batch's gradients before they are added
 * to the first.  Per micro-batch slot: every layer's input is kept from
 * forward to backward in one activation region (a view layer shares its
 * input's), plus saved state (maxpool argmax, layernorm statistics), labels
 * and per-sample losses.  Gradients of activations flow through two
 * ping-pong buffers shared by the slots (one backward runs at a time), and
 * one scratch (conv columns) serves every layer.  Everything is allocated
 * once, for the largest micro-batch.
 *
 * Options (mpt__stage_create_with): ZeRO-1 makes the optimizer slots for
 * the replica's shards only, packed (the engine maps them).  ZeRO-2 also
 * holds no whole gradient buffer: one buffer serves first as the backward's
 * window, where each layer writes its gradients (a tied embedding's at the
 * window's start, since its head writes there early in the backward; every
 * other layer's after it) and whence the engine reads them to the host
 * before the in-order queue lets the next layer overwrite them, then, once
 * the replicas' sums are back, as the replica's packed shard of the
 * gradients that the update reads.  Its size is the larger of the two
 * uses, and nothing accumulates micro-batches on the device (the engine
 * sums them on the host).  Recomputation
 * keeps per slot only the stage input and one shared region for the rest
 * of the activations and saved state, refilled by a forward at the start
 * of each backward (act_at, saved_at).  The second optimizer slot (Adam's
 * v) is made on first use.
 *
 * Tied copy: a range that runs a tied layer (lm_head) without the layer
 * that owns its weight (the embedding, on an earlier pipeline stage) holds
 * a copy of that weight after its own parameters, at buffer index np, in
 * every flat buffer (parameters, gradients, micro-batch gradients, optimizer
 * slots): the update, clipping and accumulation treat it as one of the
 * range's, while its state I/O, gradient norm and all-reduce segments do
 * not (the owner's elements count once).  The engine sums the copy's
 * gradient with the owner's every step, so both update alike.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "device/device.h"
#include "engine/executor.h"

struct mpt__executor {
    const mpt__model_t *m;
    mpt_device_t *dev;
    size_t first, last;   /* the layers */
    size_t p0, np;        /* the parameter elements [p0, p0 + np) */
    size_t tied_first, nt; /* the tied copy: model elements [tied_first, + nt), at np */
    int tied_head;        /* the layer reading the copy, -1 when nt is 0 */
    size_t max_batch, slots;
    uint64_t seed, step;
    uint64_t updates;     /* optimizer updates applied before this step: the step,
                           * less the steps skipped as non-finite (AdamW's bias
                           * correction and SGD's first step count updates) */
    mpt_buffer_t *params, *grads, *gmb, *slot[2];
    mpt_buffer_t *acts, *dbuf[2], *saved, *scratch, *labels, *loss_rows, *correct;
    mpt_buffer_t *addend; /* host gradients to add (mpt__stage_add_grads_at) */
    size_t slot_floats;   /* floats of each optimizer slot: np + nt, or under ZeRO the
                           * replica's shard (mpt__stage_shard_slots) */
    size_t grad_floats;   /* floats of grads: np + nt, or under ZeRO-2 the larger of
                           * the window and the shard */
    int zero2;            /* ZeRO-2: grads is the window, then the packed shard */
    size_t pin_lo, pin_n; /* ZeRO-2: the tied embedding's elements (model offset,
                           * count) at the window's start; pin_n 0: none */
    size_t window;        /* ZeRO-2: floats of the window (pin_n + largest other layer) */
    size_t act_stride, saved_stride; /* floats per slot */
    int recompute;     /* keep only each slot's stage input; the forward runs again
                        * before each backward, in one shared activation region */
    size_t in_stride;  /* floats of a slot's stage input (max_batch samples) */
    size_t *act_off;   /* layer i's input at act_off[i - first], i in first..last + 1 */
    size_t *saved_off; /* layer i's saved state at saved_off[i - first] */
    int dx_in;         /* dbuf holding the stage input's gradient after backward */
    mpt__layer_hook_fn hook; /* called after each layer's backward */
    void *hook_arg;
    float *host_rows;  /* max_batch x labels per sample, per slot */
    cl_event *loss_read; /* per slot: a read of its loss rows under way, or NULL */
    size_t *slot_sample; /* per slot: its first sample's index in the step's batch (dropout) */
};

static mpt__tensor_t flat(mpt_buffer_t *b, size_t n)
{
    size_t dims[1] = {n ? n : 1};
    return mpt__tensor(b, 0, 1, dims);
}

static mpt__tensor_t region(mpt_buffer_t *b, size_t off, size_t n)
{
    size_t dims[1] = {n};
    return mpt__tensor(b, off, 1, dims);
}

/* Layer l's parameter elements: the first (model offset) and how many
 * (they are contiguous); 0 for none. */
static size_t layer_span(const mpt__layer_t *l, size_t *lo)
{
    size_t hi = 0;
    *lo = l->nparams ? l->params[0].offset : 0;
    for (int q = 0; q < l->nparams; q++) {
        size_t a = l->params[q].offset, z = a + l->params[q].numel;
        *lo = a < *lo ? a : *lo;
        hi = z > hi ? z : hi;
    }
    return l->nparams ? hi - *lo : 0;
}

/* Whether layer i owns a weight that a later layer of the range reads
 * (the embedding and its head): its head writes that gradient first. */
static int pinned(const mpt__executor_t *ex, size_t i)
{
    for (size_t j = i + 1; ex->m->layers[i].nparams && ex->m->layers[i].params[0].shared &&
                           j <= ex->last;
         j++)
        if (ex->m->layers[j].tied_layer == (int)i)
            return 1;
    return 0;
}

/* ZeRO-2's window: the pinned embedding at its start, every other
 * layer's gradients after it (one at a time: the engine reads them away
 * before the next layer's backward, in queue order). */
static void lay_out_window(mpt__executor_t *ex)
{
    size_t widest = 0;
    for (size_t i = ex->first; i <= ex->last; i++) {
        size_t lo, n = layer_span(&ex->m->layers[i], &lo);
        if (pinned(ex, i))
            ex->pin_lo = lo, ex->pin_n = n;
        else
            widest = n > widest ? n : widest;
    }
    ex->window = ex->pin_n + widest;
}

/* Model parameter offset of grads[0] for layer i's backward. */
static size_t grad_base(const mpt__executor_t *ex, size_t i)
{
    const mpt__layer_t *l = &ex->m->layers[i];
    size_t lo;
    if (!ex->zero2)
        return ex->p0;
    if (l->tied_layer >= 0 || pinned(ex, i)) /* the head writes where its owner adds */
        return ex->pin_lo;
    return layer_span(l, &lo) ? lo - ex->pin_n : ex->p0;
}

size_t mpt__stage_grads_at(const mpt__executor_t *ex, size_t layer)
{
    size_t lo;
    layer_span(&ex->m->layers[layer], &lo);
    return lo - grad_base(ex, layer);
}

void mpt__executor_free(mpt__executor_t *ex)
{
    if (!ex)
        return;
    mpt_buffer_t *all[] = {ex->params,  ex->grads,   ex->gmb,       ex->slot[0],
                           ex->slot[1], ex->acts,    ex->dbuf[0],   ex->dbuf[1],
                           ex->saved,   ex->scratch, ex->labels,    ex->loss_rows,
                           ex->correct, ex->addend};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        mpt_buffer_free(all[i]);
    free(ex->act_off);
    free(ex->saved_off);
    for (size_t j = 0; ex->loss_read && j < ex->slots; j++)
        if (ex->loss_read[j])
            clReleaseEvent(ex->loss_read[j]);
    free(ex->loss_read);
    free(ex->host_rows);
    free(ex->slot_sample);
    free(ex);
}

/* A buffer of floats set to zero; `what` names it when the device's cap
 * refuses it. */
static int zeroed(mpt_device_t *dev, size_t floats, const char *what, mpt_buffer_t **out)
{
    int status = mpt__buffer_create(dev, (floats ? floats : 1) * sizeof(float), what, out);
    if (status == MPT_OK) {
        mpt__tensor_t t = flat(*out, floats);
        status = mpt__op_fill(&t, floats ? floats : 1, 0.0f);
    }
    return status;
}

/* The second optimizer slot, made zeroed on first use (AdamW's update,
 * or state written into it). */
static int second_slot(mpt__executor_t *ex)
{
    return ex->slot[1] ? MPT_OK
                       : zeroed(ex->dev, ex->slot_floats, "optimizer state (second slot)",
                                &ex->slot[1]);
}

/* Whether writing n floats into slot `slot` changes nothing: zeros into a
 * second slot not made yet, which holds zeros as it is (an SGD
 * checkpoint's second slot: loading it must not make the slot that SGD
 * never pays for, and that a memory cap may have no room for). */
static int writes_nothing(const mpt__executor_t *ex, int slot, const float *in, size_t n)
{
    if (!(slot & 1) || ex->slot[1])
        return 0;
    for (size_t i = 0; i < n; i++)
        if (in[i] != 0.0f)
            return 0;
    return 1;
}

int mpt__stage_create_with(const mpt__model_t *m, mpt_device_t *dev, size_t first, size_t last,
                           size_t max_batch, size_t slots, int accumulates, uint64_t seed,
                           const float *init, unsigned flags, mpt__executor_t **out)
{
    int zero = (flags & MPT__STAGE_ZERO) != 0;
    size_t lps = m->labels_per_sample; /* labels and loss rows per sample */
    int status = MPT_OK;
    mpt__executor_t *ex = NULL;
    *out = NULL;
    if (first > last || last >= m->nlayers || max_batch == 0 || slots == 0)
        return mpt__fail(MPT_ERR_INVALID, "a stage of layers %zu..%zu of %zu, batch %zu, %zu slots",
                         first, last, m->nlayers, max_batch, slots);
    size_t nl = last - first + 1;
    if (!(ex = calloc(1, sizeof *ex)) || !(ex->act_off = calloc(nl + 1, sizeof *ex->act_off)) ||
        !(ex->saved_off = calloc(nl, sizeof *ex->saved_off)) ||
        !(ex->host_rows = calloc(max_batch * lps * slots, sizeof *ex->host_rows)) ||
        !(ex->loss_read = calloc(slots, sizeof *ex->loss_read)) ||
        !(ex->slot_sample = calloc(slots, sizeof *ex->slot_sample))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    ex->m = m, ex->dev = dev, ex->first = first, ex->last = last;
    ex->max_batch = max_batch, ex->slots = slots, ex->seed = seed;

    mpt__model_param_range(m, first, last, &ex->p0, &ex->np);
    ex->tied_head = -1;
    for (size_t i = first; i <= last; i++) {
        int owner = m->layers[i].tied_layer;
        if (owner >= 0 && (size_t)owner < first) {
            ex->tied_head = (int)i;
            ex->tied_first = m->layers[i].tied.offset, ex->nt = m->layers[i].tied.numel;
        }
    }

    /* Lay out one slot's activations and saved state, and the scratch. */
    size_t act = mpt__shape_numel(&m->layers[first].in) * max_batch, saved = 0, scratch = 1;
    size_t widest = mpt__shape_numel(&m->layers[first].in);
    for (size_t i = first; i <= last; i++) {
        const mpt__layer_t *l = &m->layers[i];
        ex->saved_off[i - first] = saved;
        saved += l->saved_per_sample * max_batch;
        if (l->kind->scratch_floats) {
            size_t s = l->kind->scratch_floats(l, max_batch);
            scratch = s > scratch ? s : scratch;
        }
        if (!l->kind->is_loss && mpt__shape_numel(&l->out) > widest)
            widest = mpt__shape_numel(&l->out);
        if (l->kind->is_view || l->kind->is_loss) {
            ex->act_off[i + 1 - first] = ex->act_off[i - first];
            continue;
        }
        ex->act_off[i + 1 - first] = act;
        act += mpt__shape_numel(&l->out) * max_batch;
    }
    ex->act_stride = act, ex->saved_stride = saved;
    ex->in_stride = mpt__shape_numel(&m->layers[first].in) * max_batch;
    ex->recompute = (flags & MPT__STAGE_RECOMPUTE) != 0;
    /* Recomputing: each slot's input, then one region of the layers'
     * activations and one of their saved state (act_at, saved_at). */
    size_t acts_floats = ex->recompute ? slots * ex->in_stride + act - ex->in_stride
                                       : act * slots;
    size_t saved_floats = ex->recompute ? saved : saved * slots;
    size_t held = ex->np + ex->nt;
    MPT_TRY(zeroed(dev, held, "parameters", &ex->params));
    /* ZeRO-2: the gradients wait for the shard's size (mpt__stage_shard_slots). */
    if ((ex->zero2 = (flags & MPT__STAGE_ZERO2) != 0)) {
        if (accumulates) {
            status = mpt__fail(MPT_ERR_INVALID, "ZeRO-2 sums micro-batches on the host: a "
                               "stage under it does not accumulate");
            goto out;
        }
        lay_out_window(ex);
    } else {
        ex->grad_floats = held;
        MPT_TRY(zeroed(dev, held, "gradients", &ex->grads));
    }
    if (!zero) {
        ex->slot_floats = held;
        MPT_TRY(zeroed(dev, held, "optimizer state", &ex->slot[0]));
    }
    /* The second slot (Adam's v) is made by the first use that needs it
     * (second_slot): SGD never pays for it, as the planner assumes. */
    if (accumulates)
        MPT_TRY(zeroed(dev, held, "micro-batch gradients", &ex->gmb));
    MPT_TRY(zeroed(dev, acts_floats, "activations", &ex->acts));
    MPT_TRY(zeroed(dev, widest * max_batch, "activation gradients", &ex->dbuf[0]));
    MPT_TRY(zeroed(dev, widest * max_batch, "activation gradients", &ex->dbuf[1]));
    MPT_TRY(zeroed(dev, saved_floats, "saved layer state", &ex->saved));
    MPT_TRY(zeroed(dev, scratch, "scratch", &ex->scratch));
    MPT_TRY(zeroed(dev, max_batch * lps * slots, "loss rows", &ex->loss_rows));
    MPT_TRY(zeroed(dev, max_batch * lps, "accuracy counts", &ex->correct));
    MPT_TRY(mpt__buffer_create(dev, max_batch * lps * slots * sizeof(int32_t), "labels",
                                &ex->labels));
    if (init && ex->np)
        MPT_TRY(mpt__executor_write_params(ex, init + ex->p0));
    if (init && ex->nt)
        MPT_TRY(mpt__stage_write_tied(ex, -1, init + ex->tied_first));
out:
    if (status < 0) {
        mpt__executor_free(ex);
        ex = NULL;
    }
    *out = ex;
    return status;
}

int mpt__stage_create(const mpt__model_t *m, mpt_device_t *dev, size_t first, size_t last,
                      size_t max_batch, size_t slots, int accumulates, uint64_t seed,
                      const float *init, mpt__executor_t **out)
{
    return mpt__stage_create_with(m, dev, first, last, max_batch, slots, accumulates, seed, init,
                                  0, out);
}

int mpt__stage_shard_slots(mpt__executor_t *ex, size_t floats)
{
    if (ex->slot[0])
        return mpt__fail(MPT_ERR_INVALID, "the optimizer state of this stage is already made");
    if (ex->nt)
        return mpt__fail(MPT_ERR_UNSUPPORTED, "ZeRO with a tied weight copied across stages");
    ex->slot_floats = floats;
    if (ex->zero2) {
        ex->grad_floats = floats > ex->window ? floats : ex->window;
        int status = zeroed(ex->dev, ex->grad_floats, "gradients (ZeRO-2 window and shard)",
                            &ex->grads);
        if (status < 0)
            return status;
    }
    return zeroed(ex->dev, floats, "optimizer state (ZeRO shard)", &ex->slot[0]);
}

int mpt__stage_update_range(mpt__executor_t *ex, const mpt__optim_cfg_t *o, float lr, size_t at,
                            size_t count, size_t slot_at)
{
    int status;
    if (count == 0)
        return MPT_OK;
    if (at + count > ex->np + ex->nt || slot_at + count > ex->slot_floats || !ex->slot[0])
        return mpt__fail(MPT_ERR_INVALID, "update of elements %zu..%zu (slots from %zu) of a "
                         "stage of %zu, %zu slot floats", at, at + count, slot_at, ex->np,
                         ex->slot_floats);
    if (o->kind == MPT_OPTIM_ADAMW && (status = second_slot(ex)) < 0)
        return status;
    /* ZeRO-2's gradients are packed like the slots */
    mpt__tensor_t p = region(ex->params, at, count);
    mpt__tensor_t g = region(ex->grads, ex->zero2 ? slot_at : at, count);
    mpt__tensor_t s0 = region(ex->slot[0], slot_at, count);
    if (o->kind == MPT_OPTIM_ADAMW) {
        mpt__tensor_t s1 = region(ex->slot[1], slot_at, count);
        return mpt__op_adamw_update(&p, &g, &s0, &s1, count, lr, o->beta1, o->beta2, o->eps,
                                    o->weight_decay, (int)(ex->updates + 1));
    }
    return mpt__op_sgd_update(&p, &g, &s0, count, lr, o->momentum, o->weight_decay,
                              ex->updates == 0);
}

int mpt__stage_slot_io(mpt__executor_t *ex, int slot, size_t slot_at, size_t count, float *out,
                       const float *in)
{
    int status = MPT_OK;
    mpt_buffer_t *b = ex->slot[slot & 1];
    if (count == 0)
        return MPT_OK;
    if (slot_at + count > ex->slot_floats)
        return mpt__fail(MPT_ERR_INVALID, "optimizer state %zu..%zu of %zu floats", slot_at,
                         slot_at + count, ex->slot_floats);
    if (out && !b) { /* never made: zeros, as it would hold */
        memset(out, 0, count * sizeof *out);
        return MPT_OK;
    }
    if (in && writes_nothing(ex, slot, in, count))
        return MPT_OK;
    if (in && (slot & 1) && (status = second_slot(ex)) < 0)
        return status;
    b = ex->slot[slot & 1];
    return out ? mpt_buffer_read(b, slot_at * sizeof *out, out, count * sizeof *out)
               : mpt_buffer_write(b, slot_at * sizeof *in, in, count * sizeof *in);
}

mpt_buffer_t *mpt__executor_params_buffer(mpt__executor_t *ex)
{
    return ex->params;
}

int mpt__executor_create(const mpt__model_t *m, mpt_device_t *dev, size_t max_batch,
                         uint64_t seed, mpt__executor_t **out)
{
    float *init = malloc((m->param_floats ? m->param_floats : 1) * sizeof *init);
    if (!init)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    mpt__model_init_params(m, seed, init);
    int status = mpt__stage_create(m, dev, 0, m->nlayers - 1, max_batch, 1, 0, seed, init, out);
    free(init);
    return status;
}

size_t mpt__stage_param_first(const mpt__executor_t *ex) { return ex->p0; }
size_t mpt__stage_max_batch(const mpt__executor_t *ex) { return ex->max_batch; }
const mpt__model_t *mpt__stage_model(const mpt__executor_t *ex) { return ex->m; }
size_t mpt__stage_param_count(const mpt__executor_t *ex) { return ex->np; }
int mpt__stage_is_last(const mpt__executor_t *ex) { return ex->last + 1 == ex->m->nlayers; }

size_t mpt__stage_in_floats(const mpt__executor_t *ex)
{
    return mpt__shape_numel(&ex->m->layers[ex->first].in);
}

size_t mpt__stage_out_floats(const mpt__executor_t *ex)
{
    const mpt__layer_t *l = &ex->m->layers[ex->last];
    return l->kind->is_loss ? 0 : mpt__shape_numel(&l->out);
}

/* The pass of layer i on slot `slot` for `batch` samples. */
/* Where slot `slot`'s input of the range's k-th layer lies in acts (floats):
 * its own region per slot, or with recomputation the slot's stage input
 * (offset 0 of a slot's layout) or the one shared region of the rest. */
static size_t act_at(const mpt__executor_t *ex, size_t slot, size_t k)
{
    if (!ex->recompute)
        return slot * ex->act_stride + ex->act_off[k];
    return ex->act_off[k] == 0 ? slot * ex->in_stride
                               : ex->slots * ex->in_stride + ex->act_off[k] - ex->in_stride;
}

static size_t saved_at(const mpt__executor_t *ex, size_t slot, size_t k)
{
    return (ex->recompute ? 0 : slot * ex->saved_stride) + ex->saved_off[k];
}

static mpt__pass_t pass_of(mpt__executor_t *ex, size_t i, size_t slot, size_t batch,
                           int training)
{
    size_t lps = ex->m->labels_per_sample;
    const mpt__layer_t *l = &ex->m->layers[i];
    size_t k = i - ex->first;
    mpt__pass_t p;
    memset(&p, 0, sizeof p);
    p.batch = batch;
    p.x = region(ex->acts, act_at(ex, slot, k), mpt__shape_numel(&l->in) * batch);
    p.y = region(ex->acts, act_at(ex, slot, k + 1), mpt__shape_numel(&l->out) * batch);
    p.params = flat(ex->params, ex->np + ex->nt);
    p.grads = flat(ex->grads, ex->grad_floats);
    p.param_base = ex->p0;
    p.grad_base = grad_base(ex, i);
    p.tied_at = SIZE_MAX;
    if (l->tied_layer >= 0) {
        if ((int)i == ex->tied_head)
            p.tied_at = ex->np;
        else if (l->tied.offset >= ex->p0 && l->tied.offset + l->tied.numel <= ex->p0 + ex->np)
            p.tied_at = l->tied.offset - ex->p0;
    }
    /* The owner of a shared weight adds to the gradient its reader wrote,
     * when that reader is in this range (it is later, so its backward ran). */
    for (size_t j = i + 1; l->nparams && l->params[0].shared && j <= ex->last; j++)
        p.shared_written |= ex->m->layers[j].tied_layer == (int)i;
    p.saved = region(ex->saved, saved_at(ex, slot, k),
                     l->saved_per_sample * batch);
    /* A layer running the activation after it (in this range): that
     * layer's output region is where the activation goes. */
    if ((p.act = mpt__model_fused_act(ex->m, i, ex->last)) > 0)
        p.a = region(ex->acts, act_at(ex, slot, k + 2),
                     mpt__shape_numel(&ex->m->layers[i + 1].out) * batch);
    p.scratch = flat(ex->scratch, 1);
    p.training = training;
    p.seed = ex->seed;
    p.step = ex->step;
    p.sample_first = ex->slot_sample[slot];
    p.labels = ex->labels;
    p.labels_off = slot * ex->max_batch * lps;
    p.loss_scale = 1.0f / (float)(batch * lps);
    p.loss_rows = region(ex->loss_rows, slot * ex->max_batch * lps, batch * lps);
    return p;
}

static int check_batch(const mpt__executor_t *ex, size_t slot, size_t batch)
{
    if (batch == 0 || batch > ex->max_batch)
        return mpt__fail(MPT_ERR_INVALID, "batch of %zu samples: must be 1 to %zu", batch,
                         ex->max_batch);
    if (slot >= ex->slots)
        return mpt__fail(MPT_ERR_INVALID, "micro-batch slot %zu of %zu", slot, ex->slots);
    return MPT_OK;
}

int mpt__stage_put_input(mpt__executor_t *ex, size_t slot, const float *x, size_t batch)
{
    int status = check_batch(ex, slot, batch);
    if (status == MPT_OK)
        status = mpt_buffer_write(ex->acts, act_at(ex, slot, 0) * sizeof(float), x,
                                  batch * mpt__stage_in_floats(ex) * sizeof *x);
    return status;
}

int mpt__stage_put_labels(mpt__executor_t *ex, size_t slot, const int32_t *y, size_t batch)
{
    size_t lps = ex->m->labels_per_sample;
    int status = check_batch(ex, slot, batch);
    if (status == MPT_OK)
        status = mpt_buffer_write(ex->labels, slot * ex->max_batch * lps * sizeof *y, y,
                                  batch * lps * sizeof *y);
    return status;
}

int mpt__stage_set_first_sample(mpt__executor_t *ex, size_t slot, size_t sample)
{
    if (slot >= ex->slots)
        return mpt__fail(MPT_ERR_INVALID, "micro-batch slot %zu of %zu", slot, ex->slots);
    ex->slot_sample[slot] = sample;
    return MPT_OK;
}

int mpt__stage_forward(mpt__executor_t *ex, size_t slot, size_t batch, int training)
{
    int status = check_batch(ex, slot, batch);
    for (size_t i = ex->first; status == MPT_OK && i <= ex->last; i++) {
        mpt__layer_t *l = &ex->m->layers[i];
        if (mpt__model_is_fused(ex->m, i, ex->first, ex->last))
            continue; /* the layer before ran it */
        mpt__pass_t p = pass_of(ex, i, slot, batch, training);
        if ((status = l->kind->forward(l, &p)) < 0)
            return mpt__fail_context(status, "forward of layer %zu (%s)", i, l->kind->name);
    }
    return status;
}

int mpt__stage_get_output(mpt__executor_t *ex, size_t slot, float *y, size_t batch)
{
    size_t n = mpt__stage_out_floats(ex);
    if (n == 0)
        return mpt__fail(MPT_ERR_INVALID, "the last stage has no output but the loss");
    return mpt_buffer_read(ex->acts,
                           act_at(ex, slot, ex->last + 1 - ex->first) * sizeof(float),
                           y, batch * n * sizeof *y);
}

int mpt__stage_loss_start(mpt__executor_t *ex, size_t slot, size_t batch)
{
    size_t lps = ex->m->labels_per_sample, at = slot * ex->max_batch * lps;
    int status = check_batch(ex, slot, batch);
    if (status < 0 || ex->loss_read[slot])
        return status;
    cl_int err = clEnqueueReadBuffer(ex->dev->queue, ex->loss_rows->mem, CL_FALSE,
                                     at * sizeof(float), batch * lps * sizeof(float),
                                     ex->host_rows + at, 0, NULL, &ex->loss_read[slot]);
    if (err != CL_SUCCESS) {
        ex->loss_read[slot] = NULL;
        return mpt__fail_cl(err, "reading the loss rows of micro-batch slot %zu", slot);
    }
    return MPT_OK;
}

int mpt__stage_loss_sum(mpt__executor_t *ex, size_t slot, size_t batch, double *sum)
{
    size_t lps = ex->m->labels_per_sample, at = slot * ex->max_batch * lps;
    int status = check_batch(ex, slot, batch);
    *sum = 0;
    if (status < 0)
        return status;
    if (ex->loss_read[slot]) { /* started: wait for that read alone */
        cl_int err = clWaitForEvents(1, &ex->loss_read[slot]);
        clReleaseEvent(ex->loss_read[slot]);
        ex->loss_read[slot] = NULL;
        if (err != CL_SUCCESS)
            return mpt__fail_cl(err, "waiting for the loss rows of micro-batch slot %zu", slot);
    } else {
        MPT_TRY(mpt_buffer_read(ex->loss_rows, at * sizeof(float), ex->host_rows + at,
                                batch * lps * sizeof(float)));
    }
    for (size_t i = 0; i < batch * lps; i++)
        *sum += ex->host_rows[at + i];
out:
    return status;
}

int mpt__stage_get_logits(mpt__executor_t *ex, size_t slot, float *logits, size_t batch)
{
    size_t row = ex->m->labels_per_sample * (size_t)ex->m->classes;
    int status = check_batch(ex, slot, batch);
    if (status == MPT_OK && !mpt__stage_is_last(ex))
        status = mpt__fail(MPT_ERR_INVALID, "logits are on the last stage");
    if (status == MPT_OK)
        status = mpt_buffer_read(ex->acts,
                                 act_at(ex, slot, ex->last - ex->first) * sizeof(float),
                                 logits, batch * row * sizeof *logits);
    return status;
}

int mpt__stage_correct(mpt__executor_t *ex, size_t slot, size_t batch, double *correct)
{
    size_t lps = ex->m->labels_per_sample;
    int status;
    size_t k = ex->last - ex->first;
    mpt__tensor_t logits = region(ex->acts, act_at(ex, slot, k),
                                  batch * lps * (size_t)ex->m->classes);
    mpt__tensor_t hits = flat(ex->correct, batch * lps);
    *correct = 0;
    MPT_TRY(mpt__op_argmax_correct(&logits, ex->labels, slot * ex->max_batch * lps, batch * lps,
                                   (size_t)ex->m->classes, &hits));
    MPT_TRY(mpt_buffer_read(ex->correct, 0, ex->host_rows, batch * lps * sizeof(float)));
    for (size_t i = 0; i < batch * lps; i++)
        *correct += ex->host_rows[i];
out:
    return status;
}

int mpt__stage_put_dy(mpt__executor_t *ex, const float *dy, size_t batch)
{
    return mpt_buffer_write(ex->dbuf[0], 0, dy, batch * mpt__stage_out_floats(ex) * sizeof *dy);
}

int mpt__stage_backward(mpt__executor_t *ex, size_t slot, size_t batch, float loss_scale,
                        int accumulate, int want_dx)
{
    int cur = 0, status = check_batch(ex, slot, batch);
    size_t first = ex->first; /* the first layer that is not a view of its input */
    if (status < 0)
        return status;
    if (accumulate && !ex->gmb)
        return mpt__fail(MPT_ERR_INVALID, "this stage cannot add micro-batch gradients (made with accumulates = 0)");
    /* Recomputation: the slot's activations again, from its input (dropout
     * draws the same masks: they are keyed by step and sample). */
    if (ex->recompute && (status = mpt__stage_forward(ex, slot, batch, 1)) < 0)
        return mpt__fail_context(status, "recomputing the forward of micro-batch slot %zu", slot);
    while (first < ex->last && ex->m->layers[first].kind->is_view)
        first++;
    for (size_t i = ex->last + 1; i-- > ex->first;) {
        mpt__layer_t *l = &ex->m->layers[i];
        if (l->kind->is_view || mpt__model_is_fused(ex->m, i, ex->first, ex->last))
            continue; /* its gradient is its output's, unchanged (a view), or the
                       * layer before takes it (a fused activation) */
        mpt__pass_t p = pass_of(ex, i, slot, batch, 1);
        size_t out_n = mpt__shape_numel(&l->out) * batch, in_n = mpt__shape_numel(&l->in) * batch;
        p.loss_scale = loss_scale;
        if (accumulate)
            p.grads = flat(ex->gmb, ex->np + ex->nt);
        p.dy = region(ex->dbuf[cur], 0, out_n);
        /* The first computing layer's input gradient is wanted only when a
         * stage before this one is waiting for it. */
        if (i > first || want_dx)
            p.dx = region(ex->dbuf[1 - cur], 0, in_n);
        if ((status = l->kind->backward(l, &p)) < 0)
            return mpt__fail_context(status, "backward of layer %zu (%s)", i, l->kind->name);
        /* Add this layer's gradients now rather than the range's at the
         * end, so that the hook sees them final. */
        for (int q = 0; accumulate && q < l->nparams; q++) {
            const mpt__param_t *pr = &l->params[q];
            mpt__tensor_t g = region(ex->grads, pr->offset - ex->p0, pr->numel);
            mpt__tensor_t mb = region(ex->gmb, pr->offset - ex->p0, pr->numel);
            if ((status = mpt__op_axpy(pr->numel, 1.0f, &mb, &g)) < 0)
                return mpt__fail_context(status, "accumulating the gradients of layer %zu", i);
        }
        if (accumulate && (int)i == ex->tied_head) {
            mpt__tensor_t g = region(ex->grads, ex->np, ex->nt);
            mpt__tensor_t mb = region(ex->gmb, ex->np, ex->nt);
            if ((status = mpt__op_axpy(ex->nt, 1.0f, &mb, &g)) < 0)
                return mpt__fail_context(status, "accumulating the tied gradients of layer %zu", i);
        }
        if (ex->hook)
            ex->hook(ex->hook_arg, i);
        cur = 1 - cur;
    }
    ex->dx_in = cur;
    return status;
}

void mpt__stage_set_layer_hook(mpt__executor_t *ex, mpt__layer_hook_fn fn, void *arg)
{
    ex->hook = fn, ex->hook_arg = arg;
}

mpt_buffer_t *mpt__executor_grads_buffer(mpt__executor_t *ex)
{
    return ex->grads;
}

size_t mpt__executor_device_bytes(const mpt__executor_t *ex)
{
    const mpt_buffer_t *all[] = {ex->params,  ex->grads,   ex->gmb,     ex->slot[0],
                                 ex->slot[1], ex->acts,    ex->dbuf[0], ex->dbuf[1],
                                 ex->saved,   ex->scratch, ex->labels,  ex->loss_rows,
                                 ex->correct,     ex->addend};
    size_t total = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        total += all[i] ? all[i]->size : 0;
    return total;
}

int mpt__stage_get_dx(mpt__executor_t *ex, float *dx, size_t batch)
{
    return mpt_buffer_read(ex->dbuf[ex->dx_in], 0, dx,
                           batch * mpt__stage_in_floats(ex) * sizeof *dx);
}

/* The squared norm of the gradient elements [at, at + count). */
static int sumsq_run(mpt__executor_t *ex, size_t at, size_t count, double *sumsq)
{
    float n = 0;
    mpt__tensor_t g = region(ex->grads, at, count);
    int status = count ? mpt__op_nrm2(&g, count, &n) : MPT_OK;
    *sumsq += (double)n * (double)n;
    return status;
}

/* One nrm2 over the range's parameters; a tensor-parallel member's range
 * holding replicas counted by member 0 (counted_elsewhere) sums the runs
 * between them instead. */
int mpt__stage_grad_sumsq(mpt__executor_t *ex, double *sumsq)
{
    int replicas = 0, status = MPT_OK;
    *sumsq = 0;
    for (size_t i = ex->first; i <= ex->last; i++)
        for (int q = 0; q < ex->m->layers[i].nparams; q++)
            replicas |= ex->m->layers[i].params[q].counted_elsewhere;
    if (!replicas)
        return sumsq_run(ex, 0, ex->np, sumsq);
    size_t run = 0, count = 0; /* the run being gathered, relative to p0 */
    for (size_t i = ex->first; i <= ex->last && status == MPT_OK; i++)
        for (int q = 0; q < ex->m->layers[i].nparams && status == MPT_OK; q++) {
            const mpt__param_t *pr = &ex->m->layers[i].params[q];
            if (pr->counted_elsewhere)
                continue;
            if (pr->offset - ex->p0 != run + count) {
                status = sumsq_run(ex, run, count, sumsq);
                run = pr->offset - ex->p0, count = 0;
            }
            count += pr->numel;
        }
    return status == MPT_OK ? sumsq_run(ex, run, count, sumsq) : status;
}

int mpt__stage_scale_grads(mpt__executor_t *ex, float coef)
{
    size_t n = ex->zero2 ? ex->slot_floats : ex->np + ex->nt;
    mpt__tensor_t g = flat(ex->grads, n);
    return n ? mpt__op_scale(&g, n, coef) : MPT_OK;
}

/* The second optimizer slot, made zeroed on first use (AdamW's update,
 * or state written into it). */

int mpt__stage_update(mpt__executor_t *ex, const mpt__optim_cfg_t *o, float lr)
{
    size_t n = ex->np + ex->nt;
    int status;
    if (n == 0)
        return MPT_OK;
    if (o->kind == MPT_OPTIM_ADAMW && (status = second_slot(ex)) < 0)
        return status;
    mpt__tensor_t p = flat(ex->params, n), g = flat(ex->grads, n);
    mpt__tensor_t s0 = flat(ex->slot[0], n), s1 = flat(ex->slot[1], n);
    if (o->kind == MPT_OPTIM_ADAMW)
        return mpt__op_adamw_update(&p, &g, &s0, &s1, n, lr, o->beta1, o->beta2, o->eps,
                                    o->weight_decay, (int)(ex->updates + 1));
    return mpt__op_sgd_update(&p, &g, &s0, n, lr, o->momentum, o->weight_decay, ex->updates == 0);
}

/* Host copies of a flat state buffer of the range (nothing for a range
 * without parameters). */
static int read_flat(mpt__executor_t *ex, mpt_buffer_t *b, float *out)
{
    return ex->np ? mpt_buffer_read(b, 0, out, ex->np * sizeof *out) : MPT_OK;
}

static int write_flat(mpt__executor_t *ex, mpt_buffer_t *b, const float *in)
{
    return ex->np ? mpt_buffer_write(b, 0, in, ex->np * sizeof *in) : MPT_OK;
}

int mpt__executor_read_params(mpt__executor_t *ex, float *out) { return read_flat(ex, ex->params, out); }
int mpt__executor_write_params(mpt__executor_t *ex, const float *in) { return write_flat(ex, ex->params, in); }
int mpt__executor_read_grads(mpt__executor_t *ex, float *out) { return read_flat(ex, ex->grads, out); }
int mpt__executor_write_grads(mpt__executor_t *ex, const float *in) { return write_flat(ex, ex->grads, in); }

int mpt__executor_read_slot(mpt__executor_t *ex, int slot, float *out)
{
    if (!ex->slot[slot & 1]) { /* never made: all zeros, as it would hold */
        memset(out, 0, ex->np * sizeof *out);
        return MPT_OK;
    }
    return read_flat(ex, ex->slot[slot & 1], out);
}

int mpt__executor_write_slot(mpt__executor_t *ex, int slot, const float *in)
{
    if (writes_nothing(ex, slot, in, ex->np))
        return MPT_OK;
    int status = (slot & 1) ? second_slot(ex) : MPT_OK;
    return status < 0 ? status : write_flat(ex, ex->slot[slot & 1], in);
}

/* ---- the tied copy ------------------------------------------------------------- */

size_t mpt__stage_tied_copy(const mpt__executor_t *ex, size_t *model_first)
{
    if (model_first)
        *model_first = ex->tied_first;
    return ex->nt;
}

int mpt__stage_write_tied(mpt__executor_t *ex, int what, const float *in)
{
    int status = what >= 0 && (what & 1) && ex->nt ? second_slot(ex) : MPT_OK;
    if (status < 0)
        return status;
    mpt_buffer_t *b = what < 0 ? ex->params : ex->slot[what & 1];
    return ex->nt ? mpt_buffer_write(b, ex->np * sizeof *in, in, ex->nt * sizeof *in) : MPT_OK;
}

int mpt__stage_read_tied_grads(mpt__executor_t *ex, float *out)
{
    return ex->nt ? mpt_buffer_read(ex->grads, ex->np * sizeof *out, out, ex->nt * sizeof *out)
                  : MPT_OK;
}

int mpt__stage_write_tied_grads(mpt__executor_t *ex, const float *in)
{
    return ex->nt ? mpt_buffer_write(ex->grads, ex->np * sizeof *in, in, ex->nt * sizeof *in)
                  : MPT_OK;
}

int mpt__stage_read_grads_at(mpt__executor_t *ex, size_t model_first, size_t count, float *out)
{
    if (model_first < ex->p0 || model_first + count > ex->p0 + ex->np)
        return mpt__fail(MPT_ERR_INVALID, "gradient elements %zu..%zu are not this stage's",
                         model_first, model_first + count);
    return mpt_buffer_read(ex->grads, (model_first - ex->p0) * sizeof *out, out,
                           count * sizeof *out);
}

int mpt__stage_reserve_addend(mpt__executor_t *ex, size_t count)
{
    if (!ex->addend)
        return mpt__buffer_create(ex->dev, count * sizeof(float), "tied gradients",
                                  &ex->addend);
    if (ex->addend->size < count * sizeof(float))
        return mpt__fail(MPT_ERR_INVALID, "gradients to add: %zu floats, more than reserved",
                         count);
    return MPT_OK;
}

int mpt__stage_add_grads_at(mpt__executor_t *ex, size_t model_first, size_t count,
                            const float *in)
{
    int status;
    if (model_first < ex->p0 || model_first + count > ex->p0 + ex->np)
        return mpt__fail(MPT_ERR_INVALID, "gradient elements %zu..%zu are not this stage's",
                         model_first, model_first + count);
    MPT_TRY(mpt__stage_reserve_addend(ex, count));
    MPT_TRY(mpt_buffer_write(ex->addend, 0, in, count * sizeof *in));
    mpt__tensor_t a = region(ex->addend, 0, count), g = region(ex->grads, model_first - ex->p0, count);
    status = mpt__op_axpy(count, 1.0f, &a, &g);
out:
    return status;
}

uint64_t mpt__executor_step(const mpt__executor_t *ex)
{
    return ex->step;
}

void mpt__executor_set_step(mpt__executor_t *ex, uint64_t step)
{
    ex->step = step, ex->updates = step;
}

void mpt__executor_set_updates(mpt__executor_t *ex, uint64_t updates)
{
    ex->updates = updates;
}
