/*
 * engine/tied.c: a tied weight across pipeline stages (lm_head on a later
 * stage than its embedding).  The head's stage holds a copy (executor.c);
 * after its backward it sends the copy's gradient to the embedding's
 * stage, which adds it to its own before that gradient leaves for the
 * data-parallel all-reduce (or, without replicas, before the update); the
 * embedding's stage then sends the summed, reduced gradient back, so both
 * apply the same update to the same values and the copy stays equal to the
 * owner's weight.
 */
#include <stdlib.h>

#include "engine/engine_impl.h"

/* ---- tied weights across stages ---------------------------------------------- */

/* The copy's side, after its backward: its gradient to the owner. */
int mpt__eng_tied_send_copy(worker_t *w)
{
    int status = mpt__stage_read_tied_grads(w->ex, w->tied_buf);
    return status < 0 ? status : mpt__eng_send_async(w, w->tied_peer, w->e->tags.tied, w->tied_buf, w->tied_count);
}

/* The owner's side, once its own gradient of the tied weight is final: the
 * copy's added to it (once a step). */
int mpt__eng_tied_take_copy(worker_t *w)
{
    int status;
    double t0 = mpt__now();
    if (w->tied_peer < 0 || w->tied_copy || w->tied_added)
        return MPT_OK;
    MPT_TRY(mpt__recv(w->e->t, w->index, w->tied_peer, w->e->tags.tied, w->tied_buf,
                      w->tied_count * sizeof(float)));
    MPT_TRY(mpt__stage_add_grads_at(w->ex, w->tied_first, w->tied_count, w->tied_buf));
    w->tied_added = 1;
    span_add(w->e, &w->spans, "tied", -1, t0);
out:
    return status;
}

/* The owner, after the data-parallel all-reduce: the summed gradient back
 * to the copy (from the host copy the all-reduce left, or read now). */
int mpt__eng_tied_send_sum(worker_t *w)
{
    int status = MPT_OK;
    const float *g = w->tied_buf;
    if (w->nsegs)
        g = w->gbuf + (w->tied_first - w->p0);
    else
        MPT_TRY(mpt__stage_read_grads_at(w->ex, w->tied_first, w->tied_count, w->tied_buf));
    status = mpt__eng_send_async(w, w->tied_peer, w->e->tags.tied, g, w->tied_count);
out:
    return status;
}

/* The copy, after its own sends completed (tied_buf is free again): the
 * summed gradient replaces its own. */
int mpt__eng_tied_take_sum(worker_t *w)
{
    int status;
    double t0 = mpt__now();
    MPT_TRY(mpt__recv(w->e->t, w->index, w->tied_peer, w->e->tags.tied, w->tied_buf,
                      w->tied_count * sizeof(float)));
    MPT_TRY(mpt__stage_write_tied_grads(w->ex, w->tied_buf));
    span_add(w->e, &w->spans, "tied", -1, t0);
out:
    return status;
}

/* Pairs each worker running a tied layer (lm_head) without the layer that
 * owns its weight with the worker of the same replica that runs the owner. */
int mpt__eng_pair_tied(mpt__engine_t *e)
{
    for (size_t i = 0; i < e->nworkers; i++) {
        worker_t *w = &e->w[i];
        const mpt__plan_stage_t *st = &e->plan->replicas[w->replica].stages[w->stage];
        for (size_t l = st->first; l <= st->last; l++) {
            int owner = e->m->layers[l].tied_layer;
            if (owner < 0 || (size_t)owner >= st->first)
                continue;
            worker_t *o = NULL;
            for (size_t j = 0; j < e->nworkers && !o; j++) {
                const mpt__plan_stage_t *sj =
                    &e->plan->replicas[e->w[j].replica].stages[e->w[j].stage];
                if (e->w[j].replica == w->replica && sj->first <= (size_t)owner &&
                    (size_t)owner <= sj->last)
                    o = &e->w[j];
            }
            if (!o)
                return mpt__fail(MPT_ERR_INVALID, "replica %d: no stage runs layer %d", w->replica,
                                 owner);
            if (w->tp > 1 || o->tp > 1)
                return mpt__fail(MPT_ERR_UNSUPPORTED, "replica %d: %s (layer %zu) and the %s it "
                                 "is tied to (layer %d) are on different stages, one of them "
                                 "tensor-parallel: a tied weight across stages needs both stages "
                                 "on one device each", w->replica, e->m->layers[l].kind->name, l,
                                 e->m->layers[owner].kind->name, owner);
            if (w->tied_peer >= 0 || o->tied_peer >= 0)
                return mpt__fail(MPT_ERR_UNSUPPORTED, "replica %d: a stage with more than one "
                                 "tied weight across stages", w->replica);
            const mpt__param_t *pr = &e->m->layers[l].tied;
            size_t copy_first = 0;
            /* The executor laid the copy out from the same model: a local
             * copy's range must be the weight's, or the exchange would
             * move the wrong elements. */
            if (w->local && (mpt__stage_tied_copy(w->ex, &copy_first) != pr->numel ||
                             copy_first != pr->offset))
                return mpt__fail(MPT_ERR_INVALID, "replica %d stage %d: the executor's copy of "
                                 "the tied weight is not layer %d's", w->replica, w->stage,
                                 owner);
            w->tied_peer = o->index, w->tied_copy = 1;
            o->tied_peer = w->index, o->tied_copy = 0, o->tied_owner_layer = owner;
            w->tied_first = o->tied_first = pr->offset;
            w->tied_count = o->tied_count = pr->numel;
            if (o->local) {
                int status = mpt__stage_reserve_addend(o->ex, pr->numel);
                if (status < 0)
                    return status;
                o->stats.memory_bytes = mpt__executor_device_bytes(o->ex);
            }
            worker_t *both[2] = {w, o};
            for (int q = 0; q < 2; q++)
                if (both[q]->local &&
                    !(both[q]->tied_buf = malloc(pr->numel * sizeof *both[q]->tied_buf)))
                    return mpt__fail(MPT_ERR_NOMEM, "out of memory");
        }
    }
    return MPT_OK;
}
