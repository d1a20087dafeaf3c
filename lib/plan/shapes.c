/*
 * plan/shapes.c: the planner's pass 3 (every shape a set of devices may
 * take) and what the engine can run of a plan (tensor-parallel groups
 * whose members each get a unit, replicas split alike, tied weights on
 * single-device stages).  Shared by the passes (planner.c), the uniform
 * splits (uniform.c) and the search over subsets (search.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/search.h"

typedef mpt__plan_shape_t shape_t;

/* Whether a pipeline cut separates a layer from the one whose weight it
 * reads (lm_head and its embedding) with either stage tensor-parallel,
 * which the engine cannot run: it sums the tied weight's gradient between
 * two single-device stages (engine.c). */
static int tied_split(const mpt__model_t *m, const mpt__plan_t *p, char *why, size_t size)
{
    for (size_t r = 0; r < p->nreplicas; r++) {
        const mpt__plan_replica_t *rep = &p->replicas[r];
        for (size_t s = 0; s < rep->nstages; s++) {
            const mpt__plan_stage_t *st = &rep->stages[s];
            for (size_t i = st->first; i <= st->last && i < m->nlayers; i++) {
                int tied = m->layers[i].tied_layer;
                if (tied < 0 || (size_t)tied >= st->first)
                    continue;
                size_t o = 0;
                while (o < s && rep->stages[o].last < (size_t)tied)
                    o++;
                if (st->ndevices > 1 || rep->stages[o].ndevices > 1) {
                    snprintf(why, size, "pipeline stage %zu would run %s (layer %zu) apart "
                             "from the %s it is tied to (layer %d) with tensor parallelism: a "
                             "tied weight across stages needs both stages on one device each",
                             s, m->layers[i].kind->name, i, m->layers[tied].kind->name, tied);
                    return 1;
                }
            }
        }
    }
    return 0;
}

/* What the engine cannot run of a plan with tensor-parallel groups
 * (engine/shard.c), as a reason in why; 0 when it can.  The split axes of
 * a group's layers (outputs, inputs, a block's heads and MLP units) must
 * leave every member at least one unit at the group's fractions (layers
 * without one are replicated); replicas must be cut and split alike (their
 * slices are all-reduced as they are). */
static int tp_unrunnable(const mpt__model_t *m, mpt__plan_t *p, char *why, size_t size)
{
    double f[64];
    size_t counts[64];
    if (mpt__plan_roles(p, m) < 0) { /* kept in the plan: engine/shard.c reads them */
        snprintf(why, size, "%s", mpt_last_error());
        return 1;
    }
    for (size_t r = 0; r < p->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++) {
            const mpt__plan_stage_t *st = &p->replicas[r].stages[s];
            size_t tp = st->ndevices;
            if (tp < 2)
                continue;
            if (tp > 64) {
                snprintf(why, size, "tensor-parallel groups of more than 64 devices");
                return 1;
            }
            const mpt__plan_stage_t *st0 =
                s < p->replicas[0].nstages ? &p->replicas[0].stages[s] : NULL;
            for (size_t g = 0; g < tp; g++) {
                f[g] = st->devices[g].fraction;
                if (r > 0 && (!st0 || st0->first != st->first || st0->last != st->last ||
                              st0->ndevices != tp || st0->devices[g].fraction != f[g])) {
                    snprintf(why, size, "replica %zu is cut or split differently from replica "
                             "0, and data parallelism over tensor-parallel groups needs alike "
                             "replicas", r);
                    return 1;
                }
            }
            /* Row-parallel inputs are the slices of a column split before;
             * a layer split inside splits each of its parts' units. */
            for (size_t i = st->first; i <= st->last; i++) {
                const mpt__layer_t *l = &m->layers[i];
                mpt__tp_role_t role = st->roles.steps[i - st->first].role;
                size_t units[MPT_INNER_PARTS] = {0};
                int bad = role == MPT__TP_COLUMN && mpt__tp_split(l->out.d[0], f, tp, counts) < 0;
                if (role == MPT__TP_INNER && l->kind->inner_units) {
                    l->kind->inner_units(l, units);
                    for (int k = 0; k < MPT_INNER_PARTS && !bad; k++)
                        bad = mpt__tp_split(units[k], f, tp, counts) < 0;
                }
                if (bad) {
                    snprintf(why, size, "layer %zu (%s): %s", i, l->kind->name,
                             mpt_last_error());
                    return 1;
                }
            }
        }
    return 0;
}

/* Whether every consecutive group of tp devices (in locality order) lies in
 * one node. */
static int group_in_nodes(const mpt_cluster_t *c, const size_t *order, size_t n, size_t tp)
{
    for (size_t i = 0; i < n; i += tp)
        for (size_t g = 1; g < tp; g++)
            if (mpt_cluster_device(c, order[i + g])->locality.node !=
                mpt_cluster_device(c, order[i])->locality.node)
                return 0;
    return 1;
}

/* Pass 3: every shape the request allows, in a fixed order: dp * pp * tp
 * = devices (pinned dimensions fixed), tensor-parallel groups inside a
 * node unless tp is pinned (its all-reduce of every layer's output never
 * pays across nodes), micro-batch counts in powers of two up to the
 * replica's batch and 4 per stage (more shrinks the bubble below 1/5 while
 * each micro-batch gets smaller and slower) or the pinned count, one
 * micro-batch for one stage, and both schedules (one when they coincide).
 * Stage counts above the layers are listed: the planner says why it drops
 * them. */
int mpt__plan_shapes(const mpt_cluster_t *c, const size_t *order, size_t n,
                       const mpt_plan_request_t *req, shape_t **out, size_t *count)
{
    shape_t *list = NULL;
    size_t k = 0;
    *out = NULL, *count = 0;
    for (size_t dp = 1; dp <= n; dp++) {
        if (n % dp || (req->dp && dp != req->dp) || dp > req->batch)
            continue;
        for (size_t tp = 1; tp <= n / dp; tp++) {
            size_t pp = n / dp / tp;
            if ((n / dp) % tp || (req->tp && tp != req->tp) || (req->pp && pp != req->pp) ||
                (!req->tp && tp > 1 && !group_in_nodes(c, order, n, tp)))
                continue;
            size_t mb_last = req->microbatches ? req->microbatches : pp == 1 ? 1 : 4 * pp;
            for (size_t mb = req->microbatches ? req->microbatches : 1;
                 mb <= mb_last && mb <= req->batch / dp; mb *= 2)
                for (int sched = 0; sched < 2; sched++) {
                    if ((req->schedule >= 0 && sched != req->schedule) ||
                        (pp == 1 && sched == MPT__PIPE_1F1B))
                        continue;
                    shape_t *grown = realloc(list, (k + 1) * sizeof *grown);
                    if (!grown) {
                        free(list);
                        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
                    }
                    list = grown;
                    list[k++] = (shape_t){dp, pp, tp, mb, (mpt__pipe_schedule_t)sched};
                }
        }
    }
    *out = list, *count = k;
    return MPT_OK;
}


int mpt__plan_unrunnable(const mpt__model_t *m, mpt__plan_t *p, char *why, size_t size)
{
    return (p->tp > 1 && tp_unrunnable(m, p, why, size)) ||
           (p->pp > 1 && tied_split(m, p, why, size));
}
