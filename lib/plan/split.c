/*
 * plan/split.c: how many units (output features, input features,
 * channels) of a layer each member of a tensor-parallel group gets, for
 * the planner (which refuses fractions that leave a member nothing) and
 * the engine (engine/shard.c, which cuts the layers).
 */
#include <stdlib.h>
#include <string.h>

#include "plan/plan.h"

int mpt__tp_split(size_t n, const double *fractions, size_t tp, size_t *counts)
{
    double sum = 0;
    size_t given = 0;
    for (size_t i = 0; i < tp; i++) {
        if (!(fractions[i] > 0))
            return mpt__fail(MPT_ERR_INVALID, "tensor-parallel member %zu has fraction %g: "
                             "every member needs a positive share", i, fractions[i]);
        sum += fractions[i];
    }
    for (size_t i = 0; i < tp; i++) {
        double exact = (double)n * fractions[i] / sum;
        counts[i] = (size_t)exact;
        if (counts[i] > n - given) /* rounding up of a share near n */
            counts[i] = n - given;
        given += counts[i];
    }
    /* What is left (fewer than tp units) goes one each to the largest
     * remainders: a member already given one has remainder below 0. */
    while (given < n) {
        size_t top = 0;
        double best = -2;
        for (size_t i = 0; i < tp; i++) {
            double rest = (double)n * fractions[i] / sum - (double)counts[i];
            if (rest > best)
                top = i, best = rest;
        }
        counts[top]++, given++;
    }
    for (size_t i = 0; i < tp; i++)
        if (counts[i] == 0)
            return mpt__fail(MPT_ERR_INVALID,
                             "%zu units over %zu members with fraction %.4g for member %zu "
                             "give it none", n, tp, fractions[i] / sum, i);
    return MPT_OK;
}

/* The walk of engine/shard.c (see its header for the rules): the one
 * place roles are computed, so that the engine, the planner's checks and
 * the cost model agree. */
int mpt__tp_walk(const mpt__model_t *m, size_t first, size_t last, mpt__tp_step_t *steps,
                 int *gather_after)
{
    int sliced = 0;
    for (size_t i = first; i <= last; i++) {
        const mpt__layer_t *l = &m->layers[i];
        unsigned axes = l->nparams ? l->kind->split_axes : 0;
        mpt__tp_step_t *st = &steps[i - first];
        st->gather_before = 0;
        if (axes & MPT_SPLIT_INNER) {
            st->gather_before = sliced;
            st->role = MPT__TP_INNER, sliced = 0;
        } else if ((axes & MPT_SPLIT_ROW) && sliced) {
            st->role = MPT__TP_ROW, sliced = 0;
        } else if (axes & (MPT_SPLIT_COLUMN | MPT_SPLIT_CHANNELS)) {
            st->gather_before = sliced;
            st->role = MPT__TP_COLUMN, sliced = 1;
        } else if (l->nparams == 0 &&
                   (l->kind->split_axes & (MPT_SPLIT_ELEMENTWISE | MPT_SPLIT_CHANNELS))) {
            st->role = sliced ? MPT__TP_SLICE : MPT__TP_WHOLE;
        } else {
            /* Replicated: every member runs it whole, parameters and all
             * (a layer norm, an embedding), and computes the same
             * gradient from the same input and output gradient. */
            st->gather_before = sliced;
            st->role = MPT__TP_WHOLE, sliced = 0;
        }
    }
    *gather_after = sliced;
    return MPT_OK;
}

int mpt__plan_roles(mpt__plan_t *p, const mpt__model_t *m)
{
    for (size_t r = 0; r < p->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++) {
            mpt__plan_stage_t *st = &p->replicas[r].stages[s];
            free(st->roles.steps);
            st->roles.steps = NULL, st->roles.gather_after = 0;
            if (st->ndevices < 2)
                continue; /* one device runs its layers as they are */
            if (st->first > st->last || st->last >= m->nlayers)
                return mpt__fail(MPT_ERR_INVALID, "replica %zu stage %zu: layers %zu..%zu of "
                                 "a model of %zu", r, s, st->first, st->last, m->nlayers);
            if (!(st->roles.steps = calloc(st->last - st->first + 1, sizeof *st->roles.steps)))
                return mpt__fail(MPT_ERR_NOMEM, "out of memory");
            int status = mpt__tp_walk(m, st->first, st->last, st->roles.steps,
                                      &st->roles.gather_after);
            if (status < 0) {
                free(st->roles.steps);
                st->roles.steps = NULL;
                return mpt__fail_context(status, "replica %zu stage %zu", r, s);
            }
        }
    return MPT_OK;
}
