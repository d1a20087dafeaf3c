/*
 * plan/uniform.c: the uniform split, what a planner blind to speed would
 * do: equal layers per stage, whole samples per replica as equal as they
 * go, equal tensor fractions.  The planner tries it for every shape next
 * to its own placement (so it never predicts a plan slower than the
 * uniform one), and mpt-bench plan reports the best of it as the baseline.
 * Plans that do not fit a device's memory or its largest allocation are
 * rejected, as the planner's own are: a baseline nobody can run is no
 * baseline.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/search.h"

int mpt__plan_uniform(const mpt__model_cost_t *mc, const mpt_cluster_t *c,
                      const mpt_cluster_device_t *eff, const size_t *order,
                      const mpt__plan_shape_t *sh, size_t batch, int slots, mpt__plan_t **out,
                      char *why, size_t why_size)
{
    size_t dp = sh->dp, pp = sh->pp, tp = sh->tp, mb = sh->microbatches, L = mc->nlayers;
    mpt__plan_t *p = NULL;
    *out = NULL;
    if (pp > L) {
        snprintf(why, why_size, "%zu stages for %zu layers", pp, L);
        return MPT_ERR_RANGE;
    }
    if (batch / dp < mb) {
        snprintf(why, why_size, "a replica would get fewer samples than its %zu micro-batches",
                 mb);
        return MPT_ERR_INVALID;
    }
    if (!(p = calloc(1, sizeof *p)) || !(p->replicas = calloc(dp, sizeof *p->replicas))) {
        free(p);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    p->dp = dp, p->pp = pp, p->tp = tp, p->microbatches = mb, p->batch = batch;
    p->schedule = sh->schedule, p->optimizer_slots = slots, p->nreplicas = dp;
    int status = MPT_OK;
    for (size_t r = 0; r < dp && status == MPT_OK; r++) {
        mpt__plan_replica_t *rep = &p->replicas[r];
        size_t mine = batch / dp + (r < batch % dp);
        double samples = (double)mine / (double)mb;
        rep->batch_share = (double)mine / (double)batch;
        if (!(rep->stages = calloc(pp, sizeof *rep->stages))) {
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            break;
        }
        rep->nstages = pp;
        for (size_t s = 0; s < pp; s++) {
            mpt__plan_stage_t *st = &rep->stages[s];
            const size_t *group = order + (r * pp + s) * tp;
            size_t in_flight = sh->schedule == MPT__PIPE_GPIPE ? mb : pp - s < mb ? pp - s : mb;
            st->first = s * L / pp;
            st->last = (s + 1) * L / pp - 1;
            st->ndevices = tp;
            if (!(st->devices = calloc(tp, sizeof *st->devices))) {
                status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
                break;
            }
            /* The tensor-parallel all-reduces, half forward, half backward
             * (as the planner folds them in). */
            double comm = 0;
            for (size_t l = st->first; l <= st->last; l++)
                comm += mpt__tp_allreduces(mc, c, group, tp, l, samples);
            for (size_t g = 0; g < tp; g++) {
                const mpt_cluster_device_t *d = &eff[group[g]];
                double share = 1.0 / (double)tp;
                double mem = mpt__cost_memory(mc, st->first, st->last, samples, in_flight, share,
                                              slots, mb > 1);
                if (mem > (double)d->info.global_mem_bytes) {
                    snprintf(why, why_size,
                             "device %d (%s) would need %.0f bytes for layers %zu-%zu, has %llu: "
                             "%.0f bytes short",
                             d->info.index, d->info.name, mem, st->first, st->last,
                             (unsigned long long)d->info.global_mem_bytes,
                             mem - (double)d->info.global_mem_bytes);
                    status = MPT_ERR_DEVICE_MEMORY;
                    break;
                }
                if (!mpt__cost_fits_alloc(mc, st->first, st->last, ceil(samples), in_flight,
                                          share, 0, &d->info, why, why_size)) {
                    status = MPT_ERR_DEVICE_MEMORY;
                    break;
                }
                st->devices[g] = (mpt__plan_device_t){group[g], share, mem};
                st->fwd_s = fmax(st->fwd_s, comm / 2 + mpt__cost_layers(mc, st->first, st->last,
                                                                          d, samples, share, 0));
                st->bwd_s = fmax(st->bwd_s, comm / 2 + mpt__cost_layers(mc, st->first, st->last,
                                                                          d, samples, share, 1));
            }
            if (status < 0)
                break;
        }
    }
    if (status < 0) {
        mpt__plan_free(p);
        return status;
    }
    *out = p;
    return MPT_OK;
}

int mpt__plan_uniform_step(const mpt__model_t *m, const mpt_cluster_t *c,
                           const mpt_plan_request_t *req, double *step_s)
{
    int status = MPT_OK;
    mpt__model_cost_t mc = {0};
    size_t n = mpt_cluster_device_count(c), nshapes = 0;
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    mpt_cluster_device_t *eff = malloc((n ? n : 1) * sizeof *eff);
    mpt__plan_shape_t *shapes = NULL;
    char why[512] = "";
    *step_s = -1;
    if (!order || !eff) {
        free(order), free(eff);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    MPT_TRY(mpt__model_cost(m, &mc));
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    mpt__sort_indices(order, n, mpt__by_locality, c);
    mpt__cost_shared(c, order, n, eff);
    MPT_TRY(mpt__plan_shapes(c, order, n, req, &shapes, &nshapes));
    for (size_t i = 0; i < nshapes; i++) {
        mpt__plan_t *p = NULL;
        char here[512] = "";
        status = mpt__plan_uniform(&mc, c, eff, order, &shapes[i], req->batch,
                                   req->optimizer == MPT_OPTIM_ADAMW ? 2 : 1, &p, here,
                                   sizeof here);
        if (status == MPT_ERR_NOMEM)
            goto out;
        if (status < 0 || mpt__plan_unrunnable(m, p, here, sizeof here)) {
            if (!why[0])
                snprintf(why, sizeof why, "%s", here);
            mpt__plan_free(p);
            status = MPT_OK;
            continue;
        }
        status = mpt__plan_predict(p, &mc, c, req->allreduce);
        double step = p->predicted_step_s;
        mpt__plan_free(p);
        if (status < 0)
            goto out;
        if (*step_s < 0 || step < *step_s)
            *step_s = step;
    }
    if (*step_s < 0)
        status = mpt__fail(MPT_ERR_INVALID, "no uniform split of the %zu device(s) works%s%s", n,
                           why[0] ? ": " : "", why);
out:
    mpt__model_cost_free(&mc);
    free(shapes);
    free(order);
    free(eff);
    return status;
}
