/*
 * plan/plan.c: the lifetime of a plan (plan.h).  Building a plan is the
 * planner's work (planner.c), writing and reading it plan_json.c's; this
 * file only releases one.
 */
#include <stdlib.h>

#include "plan/plan.h"

/* Frees the plan and everything it owns.  It accepts a plan left half built
 * by a failure (NULL arrays whatever their counts say, as calloc leaves
 * them), so that every builder can free on its error path without tracking
 * how far it got. */
void mpt__plan_free(mpt__plan_t *p)
{
    if (!p)
        return;
    for (size_t r = 0; p->replicas && r < p->nreplicas; r++) {
        mpt__plan_replica_t *rep = &p->replicas[r];
        for (size_t s = 0; rep->stages && s < rep->nstages; s++) {
            free(rep->stages[s].devices);
            free(rep->stages[s].roles.steps);
        }
        free(rep->stages);
    }
    free(p->replicas);
    for (size_t i = 0; p->alternatives && i < p->nalternatives; i++) {
        free(p->alternatives[i].description);
        free(p->alternatives[i].rejected);
    }
    free(p->alternatives);
    free(p->idle);
    free(p);
}

int mpt__plan_single(size_t nlayers, size_t batch, mpt__plan_t **out)
{
    mpt__plan_t *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p || !(p->replicas = calloc(1, sizeof *p->replicas)) ||
        !(p->replicas[0].stages = calloc(1, sizeof *p->replicas[0].stages)) ||
        !(p->replicas[0].stages[0].devices = calloc(1, sizeof *p->replicas[0].stages[0].devices))) {
        mpt__plan_free(p);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    p->dp = p->pp = p->tp = p->microbatches = p->nreplicas = 1;
    p->batch = batch;
    p->schedule = MPT__PIPE_GPIPE;
    p->allreduce = MPT_ALLREDUCE_RING;
    p->predicted_step_s = -1; /* nothing was predicted: no cluster was costed */
    p->replicas[0].batch_share = 1;
    p->replicas[0].nstages = 1;
    mpt__plan_stage_t *st = &p->replicas[0].stages[0];
    st->first = 0, st->last = nlayers ? nlayers - 1 : 0;
    st->ndevices = 1;
    st->devices[0] = (mpt__plan_device_t){0, 1.0, 0};
    *out = p;
    return MPT_OK;
}
