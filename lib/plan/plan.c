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
    free(p);
}
