/*
 * plan/planner.c: the planner, a pure function (model, cluster, request)
 * -> plan, written as numbered passes.  With MPT_PLAN_DEBUG=1 every
 * configuration considered and its outcome goes to the log (INFO).
 *
 *   1. Costs     every layer's FLOPs, bytes and parameters (cost.c).
 *   2. Order     devices sorted by locality (node, package, NUMA node, PCI
 *                address), so that consecutive devices, which become
 *                tensor-parallel groups and neighbouring stages, share the
 *                fastest links.
 *   3. Shapes    every (dp, pp, tp) with dp * pp * tp = devices (pinned
 *                dimensions fixed), pp <= layers; every micro-batch count
 *                (powers of two up to a replica's batch) and schedule.
 *   4. Place     replica r takes the r-th block of pp * tp devices in that
 *                order, stage s the s-th group of tp; split fractions
 *                inside a group and batch shares across replicas are
 *                proportional to measured GEMM speed.
 *   5. Partition layers over each replica's stages by dynamic programming
 *                on the bottleneck (partition.c), each stage's cost its
 *                forward + backward time plus its outgoing transfer, ranges
 *                that do not fit a device's memory excluded.
 *   6. Simulate  the plan's step (simulate.c) gives the predicted time.
 *   7. Choose    the fastest; every configuration is kept as an
 *                alternative with its time or the reason it was rejected.
 *
 * Left out (stated, not hidden): using a subset of the devices, unequal
 * tensor-parallel degrees per stage, and recomputation.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/plan.h"

static int plan_debug(void)
{
    return strcmp(mpt__env(MPT_ENV_PLAN_DEBUG), "1") == 0;
}

/* ---- pass 2: locality order ---------------------------------------------- */

static const mpt_cluster_t *sort_cluster; /* qsort has no context argument */

static int by_locality(const void *pa, const void *pb)
{
    const mpt_cluster_device_t *a = mpt_cluster_device(sort_cluster, *(const size_t *)pa);
    const mpt_cluster_device_t *b = mpt_cluster_device(sort_cluster, *(const size_t *)pb);
    int d;
    if ((d = a->locality.node - b->locality.node) != 0)
        return d;
    if ((d = a->locality.package - b->locality.package) != 0)
        return d;
    if ((d = a->locality.numa_node - b->locality.numa_node) != 0)
        return d;
    if ((d = strcmp(a->info.pci_address, b->info.pci_address)) != 0)
        return d;
    return *(const size_t *)pa < *(const size_t *)pb ? -1 : 1;
}

/* ---- passes 4 and 5: one configuration ------------------------------------ */

typedef struct {
    const mpt__model_cost_t *mc;
    const mpt_cluster_t *c;
    const size_t *group;   /* the stage devices of this replica, tp per stage */
    const double *fraction;
    size_t tp, pp, microbatches;
    double samples;        /* per micro-batch */
    mpt__pipe_schedule_t schedule;
    int slots;
    char why[256];         /* the first memory shortfall seen */
} stage_ctx;

/* In-flight micro-batches of stage s: GPipe keeps all of them, 1F1B at
 * most the stages after it plus one. */
static size_t in_flight(const stage_ctx *x, size_t s)
{
    size_t k = x->schedule == MPT__PIPE_GPIPE ? x->microbatches : x->pp - s;
    return k < x->microbatches ? k : x->microbatches;
}

/* Forward + backward of layers [first, last] on stage s, its outgoing
 * activation transfer, and, for tp > 1, one all-reduce of the output per
 * layer forward and one backward (Megatron pairs need one per pair: this
 * over-counts the row-parallel half, on purpose until the engine's TP
 * kernels exist to measure); -1 when a device cannot hold it. */
static double stage_cost(void *ctx, size_t s, size_t first, size_t last)
{
    stage_ctx *x = ctx;
    const size_t *dev = x->group + s * x->tp;
    double slowest = 0;
    for (size_t g = 0; g < x->tp; g++) {
        const mpt_cluster_device_t *d = mpt_cluster_device(x->c, dev[g]);
        double need = mpt__cost_memory(x->mc, first, last, x->samples, in_flight(x, s),
                                       x->fraction[s * x->tp + g], x->slots);
        if (need > (double)d->info.global_mem_bytes) {
            if (!x->why[0])
                snprintf(x->why, sizeof x->why,
                         "device %d (%s) would need %.0f bytes for layers %zu-%zu, has %llu",
                         d->info.index, d->info.name, need, first, last,
                         (unsigned long long)d->info.global_mem_bytes);
            return -1;
        }
        double t = mpt__cost_layers(x->mc, first, last, d, x->samples, x->fraction[s * x->tp + g], 0) +
                   mpt__cost_layers(x->mc, first, last, d, x->samples, x->fraction[s * x->tp + g], 1);
        if (t > slowest)
            slowest = t;
    }
    if (x->tp > 1)
        for (size_t l = first; l <= last; l++)
            if (x->mc->layers[l].param_bytes > 0)
                slowest += 2 * mpt__cost_allreduce(x->c, dev, x->tp,
                                                   x->mc->layers[l].out_bytes * x->samples);
    if (s + 1 < x->pp)
        slowest += 2 * mpt__cost_transfer(x->c, dev[x->tp - 1], dev[x->tp],
                                          x->mc->layers[last].out_bytes * x->samples);
    return slowest;
}

static double speed(const mpt_cluster_t *c, size_t d)
{
    double g = mpt_cluster_device(c, d)->profile.gemm_gflops;
    return g > 0 ? g : 1e-9;
}

typedef struct {
    size_t dp, pp, tp, microbatches;
    mpt__pipe_schedule_t schedule;
} shape_t;

/* Builds the plan of one configuration over the ordered devices. */
static int place(const mpt__model_cost_t *mc, const mpt_cluster_t *c, const size_t *order,
                 size_t batch, int slots, const shape_t *sh, mpt__plan_t **out, char *why,
                 size_t why_size)
{
    int status = MPT_OK;
    size_t per_replica = sh->pp * sh->tp;
    double total_speed = 0;
    mpt__plan_t *p = calloc(1, sizeof *p);
    double *fraction = calloc(per_replica, sizeof *fraction);
    size_t *first = calloc(sh->pp + 1, sizeof *first);
    *out = NULL;
    if (!p || !fraction || !first || !(p->replicas = calloc(sh->dp, sizeof *p->replicas))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    p->dp = sh->dp, p->pp = sh->pp, p->tp = sh->tp, p->microbatches = sh->microbatches;
    p->batch = batch, p->schedule = sh->schedule, p->optimizer_slots = slots;
    p->nreplicas = sh->dp;
    for (size_t i = 0; i < sh->dp * per_replica; i++)
        total_speed += speed(c, order[i]);
    for (size_t r = 0; r < sh->dp; r++) {
        const size_t *group = order + r * per_replica;
        mpt__plan_replica_t *rep = &p->replicas[r];
        double rep_speed = 0;
        for (size_t i = 0; i < per_replica; i++)
            rep_speed += speed(c, group[i]);
        rep->batch_share = rep_speed / total_speed;
        for (size_t s = 0; s < sh->pp; s++) {
            double group_speed = 0;
            for (size_t g = 0; g < sh->tp; g++)
                group_speed += speed(c, group[s * sh->tp + g]);
            for (size_t g = 0; g < sh->tp; g++)
                fraction[s * sh->tp + g] = speed(c, group[s * sh->tp + g]) / group_speed;
        }
        stage_ctx x = {mc, c, group, fraction, sh->tp, sh->pp, sh->microbatches,
                       (double)batch * rep->batch_share / (double)sh->microbatches,
                       sh->schedule, slots, ""};
        double bottleneck = 0;
        status = mpt__partition(mc->nlayers, sh->pp, stage_cost, &x, first, &bottleneck);
        if (status < 0) {
            snprintf(why, why_size, "%s", x.why[0] ? x.why : mpt_last_error());
            goto out;
        }
        if (!(rep->stages = calloc(sh->pp, sizeof *rep->stages))) {
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        rep->nstages = sh->pp;
        for (size_t s = 0; s < sh->pp; s++) {
            mpt__plan_stage_t *st = &rep->stages[s];
            st->first = first[s], st->last = first[s + 1] - 1;
            st->ndevices = sh->tp;
            if (!(st->devices = calloc(sh->tp, sizeof *st->devices))) {
                status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
                goto out;
            }
            for (size_t g = 0; g < sh->tp; g++) {
                size_t dev = group[s * sh->tp + g];
                const mpt_cluster_device_t *d = mpt_cluster_device(c, dev);
                double f = fraction[s * sh->tp + g];
                st->devices[g] = (mpt__plan_device_t){
                    dev, f, mpt__cost_memory(mc, st->first, st->last, x.samples, in_flight(&x, s),
                                             f, slots)};
                st->fwd_s = fmax(st->fwd_s, mpt__cost_layers(mc, st->first, st->last, d,
                                                             x.samples, f, 0));
                st->bwd_s = fmax(st->bwd_s, mpt__cost_layers(mc, st->first, st->last, d,
                                                             x.samples, f, 1));
            }
        }
    }
out:
    free(fraction);
    free(first);
    if (status < 0)
        mpt__plan_free(p);
    else
        *out = p;
    return status;
}

/* ---- passes 3, 6 and 7 ------------------------------------------------------ */

static int add_alternative(mpt__plan_alt_t **alts, size_t *n, const shape_t *sh, double step,
                           const char *rejected)
{
    char desc[128];
    mpt__plan_alt_t *grown = realloc(*alts, (*n + 1) * sizeof *grown);
    if (!grown)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    *alts = grown;
    snprintf(desc, sizeof desc, "dp=%zu pp=%zu tp=%zu m=%zu %s", sh->dp, sh->pp, sh->tp,
             sh->microbatches, sh->schedule == MPT__PIPE_GPIPE ? "gpipe" : "1f1b");
    grown[*n].description = mpt__strdup(desc);
    grown[*n].step_s = step;
    grown[*n].rejected = rejected ? mpt__strdup(rejected) : NULL;
    if (!grown[*n].description || (rejected && !grown[*n].rejected))
        return MPT_ERR_NOMEM;
    (*n)++;
    if (plan_debug())
        mpt__log(MPT_LOG_INFO, "plan: %s -> %s%s", desc,
                 rejected ? "rejected: " : "", rejected ? rejected : "");
    if (plan_debug() && !rejected)
        mpt__log(MPT_LOG_INFO, "plan: %s predicted %.6f s per step", desc, step);
    return MPT_OK;
}

int mpt__plan_make(const mpt__model_t *m, const mpt_cluster_t *c, const mpt_plan_request_t *req,
                   mpt__plan_t **out)
{
    int status = MPT_OK;
    mpt__model_cost_t mc = {0};
    size_t n = mpt_cluster_device_count(c), nalts = 0;
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    mpt__plan_t *best = NULL;
    mpt__plan_alt_t *alts = NULL;
    char first_why[512] = "";

    *out = NULL;
    if (!order)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    if (req->batch == 0) {
        status = mpt__fail(MPT_ERR_INVALID, "planning needs a batch size > 0");
        goto out;
    }
    int slots = req->optimizer == MPT_OPTIM_ADAMW ? 2 : 1;
    /* 1. Costs. */
    MPT_TRY(mpt__model_cost(m, &mc));
    /* 2. Order by locality. */
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    sort_cluster = c;
    qsort(order, n, sizeof *order, by_locality);
    /* 3. Shapes. */
    for (size_t dp = 1; dp <= n; dp++) {
        if (n % dp || (req->dp && dp != req->dp) || dp > req->batch)
            continue;
        for (size_t tp = 1; tp <= n / dp; tp++) {
            size_t pp = n / dp / tp;
            if ((n / dp) % tp || (req->tp && tp != req->tp) || (req->pp && pp != req->pp))
                continue;
            size_t rep_batch = req->batch / dp;
            /* Powers of two up to the replica's batch, or the pinned count. */
            size_t mb_first = req->microbatches ? req->microbatches : 1;
            size_t mb_last = req->microbatches ? req->microbatches : rep_batch;
            for (size_t mb = mb_first; mb <= mb_last && mb <= rep_batch; mb *= 2) {
                for (int sched = 0; sched < 2; sched++) {
                    if (req->schedule >= 0 && sched != req->schedule)
                        continue;
                    if (pp == 1 && sched == MPT__PIPE_1F1B)
                        continue; /* one stage: the schedules coincide */
                    shape_t sh = {dp, pp, tp, mb, (mpt__pipe_schedule_t)sched};
                    char why[512] = "";
                    mpt__plan_t *p = NULL;
                    mpt__sim_result_t sim = {0};
                    /* 4-5. Place and partition. */
                    if (pp > mc.nlayers) {
                        snprintf(why, sizeof why, "%zu stages for %zu layers", pp, mc.nlayers);
                    } else if (place(&mc, c, order, req->batch, slots, &sh, &p, why,
                                     sizeof why) == MPT_OK) {
                        /* 6. Simulate. */
                        MPT_TRY(mpt__simulate(p, &mc, c, &sim, NULL));
                        p->predicted_step_s = sim.step_s;
                        p->compute_s = sim.compute_s;
                        p->p2p_s = sim.p2p_s;
                        p->allreduce_s = sim.allreduce_s;
                        p->bubble_s = sim.bubble_fraction * sim.step_s;
                        mpt__sim_result_free(&sim);
                    } else if (!why[0]) {
                        snprintf(why, sizeof why, "%s", mpt_last_error());
                    }
                    if (why[0] && !first_why[0])
                        snprintf(first_why, sizeof first_why, "%s", why);
                    MPT_TRY(add_alternative(&alts, &nalts, &sh, p ? p->predicted_step_s : -1,
                                            why[0] ? why : NULL));
                    /* 7. Choose. */
                    if (p && (!best || p->predicted_step_s < best->predicted_step_s)) {
                        mpt__plan_free(best);
                        best = p;
                    } else {
                        mpt__plan_free(p);
                    }
                }
            }
        }
    }
    if (!best) {
        status = mpt__fail(nalts ? MPT_ERR_DEVICE_MEMORY : MPT_ERR_INVALID,
                           nalts ? "the model fits no configuration of the %zu device(s): %s"
                                 : "no configuration matches the pinned dimensions "
                                   "(dp * pp * tp must equal the %zu device(s))%s",
                           n, first_why);
        goto out;
    }
    best->alternatives = alts, best->nalternatives = nalts;
    alts = NULL, nalts = 0;
    *out = best;
    best = NULL;
out:
    for (size_t i = 0; i < nalts; i++) {
        free(alts[i].description);
        free(alts[i].rejected);
    }
    free(alts);
    mpt__plan_free(best);
    mpt__model_cost_free(&mc);
    free(order);
    return status;
}
