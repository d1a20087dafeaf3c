/*
 * plan/calibrate.c: the cost model corrected by measurement.  A plan's
 * step as the cost model predicts it with the cluster's current
 * calibration (mpt__plan_predict_calibrated), and new calibration factors
 * from the times a training run measured under that plan
 * (mpt__calibrate).
 *
 * The factors, per device and kind of work (mpt_calibration_t):
 *   forward   measured forward wall time / predicted forward time;
 *   backward  measured backward + optimizer update / predicted backward
 *             (the model has no update term: the factor carries it);
 *   allreduce the least wait after the backward among the ring's members
 *             / the predicted ring (the simulator does not overlap the
 *             all-reduce with the backward pass; the engine does, so the
 *             factor is what remains exposed; the others' longer waits
 *             are the replicas' imbalance, which the simulator models);
 *             a device whose GEMMs are queued (CLBlast, native host calls) shows its
 *             kernels where the host waits for them: its wait beyond the
 *             predicted ring counts as its backward;
 *   transfer  the wait for neighbouring stages mixes transfers with the
 *             pipeline's bubbles, which the simulator already models, so
 *             it is not divided directly: the transfer factor of the plan's
 *             devices is fitted so that the simulated step equals the
 *             measured one (a few fixed-point rounds).
 * Each new factor is the old one times measured / predicted-with-the-old,
 * clamped to a sane range, so calibrating twice converges rather than
 * compounds.  Predictions price every device as it works in the plan's
 * company (share.c), as the planner does, so a factor measured under
 * shared cores corrects the shared figure; a CPU device that ran beside
 * others on its cores has its forward and backward factors stored as its
 * factors in company (mpt_calibration_t.company_*), which plans that run it
 * in company read (and plans that run it alone, until it is measured
 * alone), so a calibration alone does not overwrite them (a pair's
 * data-parallel row once was, before the re-plan read it).
 *
 * Re-planning after a calibration compares devices measured in this run
 * with devices never measured (idle in the plan that ran), whose figures
 * are the profile's alone.  On a busy machine the measured ones look
 * slower than their profiles, so an unmeasured device would win on that
 * alone (a quick start once moved from PoCL to Intel's runtime on the same
 * cores that way).  mpt__calibration_borrowed prices each unmeasured
 * device with the factors of the measured devices most like it: the same
 * kind of device (type and name), else those on its cores (the same load
 * and host), else the worst measured factor above 1 (the model may err on
 * it as much as on any measured device, so a move onto it must win by
 * that much).
 *
 * Left out: per-layer factors (one per kind of work and device), and the
 * tensor-parallel collectives, which the measured forward and backward
 * include and the factors absorb.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "plan/search.h"
#include "profile/profile.h"

/* Factors outside this range are a broken measurement, not a device. */
#define FACTOR_MIN 0.01
#define FACTOR_MAX 100.0

static double clampf(double f)
{
    return !(f > FACTOR_MIN) ? FACTOR_MIN : f > FACTOR_MAX ? FACTOR_MAX : f;
}

/* The cluster devices the plan uses, each once, into used (room for every
 * cluster device); returns their number. */
static size_t plan_devices(const mpt__plan_t *p, size_t n, size_t *used)
{
    size_t k = 0;
    for (size_t r = 0; r < p->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++)
            for (size_t g = 0; g < p->replicas[r].stages[s].ndevices; g++) {
                size_t d = p->replicas[r].stages[s].devices[g].device, i = 0;
                while (i < k && used[i] != d)
                    i++;
                if (d < n && i == k)
                    used[k++] = d;
            }
    return k;
}

int mpt__plan_company(const mpt__plan_t *p, const mpt_cluster_t *c, mpt_cluster_device_t **eff)
{
    size_t n = mpt_cluster_device_count(c);
    size_t *used = malloc((n ? n : 1) * sizeof *used);
    *eff = malloc((n ? n : 1) * sizeof **eff);
    if (!used || !*eff) {
        free(used), free(*eff);
        *eff = NULL;
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    mpt__cost_shared(c, used, plan_devices(p, n, used), *eff);
    free(used);
    return MPT_OK;
}

/* Samples per micro-batch of replica r. */
static double mb_samples(const mpt__plan_t *p, size_t batch, size_t r)
{
    return (double)batch * p->replicas[r].batch_share / (double)p->microbatches;
}

/* The tensor-parallel collectives of stage st per micro-batch (0 for one device). */
static double tp_comm(const mpt__model_cost_t *mc, const mpt_cluster_t *c,
                      const mpt__plan_stage_t *st, double samples, size_t *group)
{
    double comm = 0;
    if (st->ndevices < 2)
        return 0;
    for (size_t g = 0; g < st->ndevices; g++)
        group[g] = st->devices[g].device;
    for (size_t l = st->first; l <= st->last; l++)
        comm += mpt__tp_allreduces(mc, c, group, st->ndevices, l, samples);
    return comm;
}

int mpt__plan_predict_calibrated(const mpt__plan_t *p, const mpt__model_cost_t *mc,
                                 const mpt_cluster_t *c, size_t batch, mpt__plan_t *out_times)
{
    mpt_cluster_device_t *eff = NULL;
    mpt__plan_t q = *p; /* the same plan with its own stage times */
    size_t *group = NULL, made = 0;
    int status;
    MPT_TRY(mpt__plan_company(p, c, &eff));
    q.replicas = calloc(p->nreplicas, sizeof *q.replicas);
    group = malloc((mpt_cluster_device_count(c) + 1) * sizeof *group);
    if (!q.replicas || !group) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t r = 0; r < p->nreplicas; r++, made++) {
        mpt__plan_replica_t *rep = &q.replicas[r];
        *rep = p->replicas[r];
        if (!(rep->stages = malloc(rep->nstages * sizeof *rep->stages))) {
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        memcpy(rep->stages, p->replicas[r].stages, rep->nstages * sizeof *rep->stages);
        double samples = mb_samples(p, batch, r);
        for (size_t s = 0; s < rep->nstages; s++) {
            mpt__plan_stage_t *st = &rep->stages[s];
            /* As the planner times a stage: the slowest member, with the
             * group's collectives half forward, half backward. */
            double comm = tp_comm(mc, c, st, samples, group);
            st->fwd_s = st->bwd_s = 0;
            for (size_t g = 0; g < st->ndevices; g++) {
                const mpt_cluster_device_t *d = &eff[st->devices[g].device];
                double f = st->devices[g].fraction;
                st->fwd_s = fmax(st->fwd_s, comm / 2 + mpt__cost_layers(mc, st->first, st->last,
                                                                          d, samples, f, 0));
                st->bwd_s = fmax(st->bwd_s, comm / 2 + mpt__cost_layers(mc, st->first, st->last,
                                                                          d, samples, f, 1));
            }
        }
    }
    MPT_TRY(mpt__plan_predict(&q, mc, c, p->allreduce));
    if (out_times) {
        out_times->predicted_step_s = q.predicted_step_s;
        out_times->compute_s = q.compute_s, out_times->p2p_s = q.p2p_s;
        out_times->allreduce_s = q.allreduce_s, out_times->bubble_s = q.bubble_s;
    }
out:
    for (size_t r = 0; q.replicas && r < made; r++)
        free(q.replicas[r].stages);
    free(q.replicas);
    free(group);
    free(eff);
    return status;
}

/* Sets one device's factors, keeping the others it had; its compute's
 * in company (mpt__cost_in_company) when it ran in company.  A factor not
 * measured now keeps the one the cost model applied to that view before
 * (the other view's, while this one was never measured), not 1. */
static int set_factors(mpt_cluster_t *c, size_t d, const double *f, uint64_t steps,
                       int company)
{
    mpt_profile_t view = mpt_cluster_device(c, d)->profile;
    mpt_calibration_t cal = view.calibration;
    if (company)
        mpt__cal_in_company(&view.calibration);
    double *slot[4] = {company ? &cal.company_forward : &cal.forward,
                       company ? &cal.company_backward : &cal.backward, &cal.transfer,
                       &cal.allreduce};
    for (int k = 0; k < 4; k++)
        *slot[k] = f[k] > 0 ? f[k] : mpt__cal_factor(&view, (mpt__cal_kind_t)k);
    if (cal.forward <= 0) /* alone, never measured: valid numbers, not applied */
        cal.forward = cal.backward = 1.0;
    cal.steps += steps;
    if (company)
        cal.company_steps += steps;
    return mpt_cluster_set_calibration(c, d, &cal);
}

/* The engine's index of the worker of replica r, stage s, member g
 * (workers in order of replica, stage, member). */
static size_t worker_of(const mpt__plan_t *p, size_t r, size_t s, size_t g)
{
    size_t w = 0;
    for (size_t q = 0; q < p->nreplicas; q++)
        for (size_t t = 0; t < p->replicas[q].nstages; t++) {
            if (q == r && t == s)
                return w + g;
            w += p->replicas[q].stages[t].ndevices;
        }
    return w;
}

/* Whether the device's GEMMs run on the host thread (the host BLAS on
 * blocking maps): its passes' wall time is its compute.  Queued ones
 * (CLBlast, the host BLAS as a native kernel) run while the host goes on,
 * so their time shows where the host next waits. */
static int synchronous(const mpt_cluster_device_t *d)
{
    return d->info.gemm_provider && !d->info.gemm_queued;
}

int mpt__calibrate(const mpt__plan_t *p, const mpt__model_cost_t *mc, mpt_cluster_t *c,
                   size_t batch, const mpt__cal_measured_t *meas, size_t nworkers,
                   double step_s, uint64_t steps, double *predicted_step_s)
{
    mpt_cluster_device_t *eff = NULL;
    size_t n = mpt_cluster_device_count(c), w = 0, *group = NULL, *ring = NULL, *dev = NULL;
    size_t *used = NULL, nused = 0;
    unsigned char *company = NULL; /* per cluster device: ran in company */
    double (*fac)[4] = NULL; /* per worker its new factors, set once all are known */
    double measured_step = 0;
    mpt__plan_t t = {0};
    int status;
    if (steps == 0)
        return mpt__fail(MPT_ERR_INVALID, "calibration needs at least one measured step");
    MPT_TRY(mpt__plan_company(p, c, &eff));
    group = malloc((n + 1) * sizeof *group);
    ring = malloc((p->nreplicas + 1) * sizeof *ring);
    dev = malloc((nworkers + 1) * sizeof *dev);
    fac = calloc(nworkers + 1, sizeof *fac);
    used = malloc((n + 1) * sizeof *used);
    company = calloc(n + 1, 1);
    if (!group || !ring || !dev || !fac || !used || !company) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    nused = plan_devices(p, n, used);
    for (size_t k = 0; k < nused; k++)
        company[used[k]] = (unsigned char)mpt__cost_in_company(c, used, nused, used[k]);
    if (worker_of(p, p->nreplicas, 0, 0) > nworkers) {
        status = mpt__fail(MPT_ERR_INVALID, "calibration: %zu measured workers for a plan of %zu",
                           nworkers, worker_of(p, p->nreplicas, 0, 0));
        goto out;
    }
    /* 1. Compute and the all-reduce, worker by worker (engine order:
     * replica, stage, member). */
    for (size_t r = 0; r < p->nreplicas; r++) {
        double samples = mb_samples(p, batch, r), m = (double)p->microbatches;
        for (size_t s = 0; s < p->replicas[r].nstages; s++) {
            const mpt__plan_stage_t *st = &p->replicas[r].stages[s];
            double comm = tp_comm(mc, c, st, samples, group);
            for (size_t g = 0; g < st->ndevices; g++, w++) {
                if (w >= nworkers) {
                    status = mpt__fail(MPT_ERR_INVALID, "calibration: %zu measured workers for "
                                       "a plan of more", nworkers);
                    goto out;
                }
                size_t d = st->devices[g].device;
                const mpt_cluster_device_t *e = &eff[d];
                const mpt_profile_t *old = &e->profile; /* as the prediction priced it */
                double fr = st->devices[g].fraction, *f = fac[w];
                double pf = m * mpt__cost_layers(mc, st->first, st->last, e, samples, fr, 0);
                double pb = m * mpt__cost_layers(mc, st->first, st->last, e, samples, fr, 1);
                /* The collectives are in the measured passes, and priced
                 * apart (comm / 2 each way): the factors correct the rest. */
                double mf = fmax(meas[w].forward_s - m * comm / 2, 0.1 * meas[w].forward_s);
                double mb = fmax(meas[w].backward_s - m * comm / 2, 0.1 * meas[w].backward_s);
                if (p->nreplicas > 1) {
                    /* The ring's members wait for the slowest of them and
                     * then for the ring: the least wait is what the ring
                     * exposes, the rest is the imbalance the simulator
                     * models itself (it was counted twice when each
                     * member's wait made its factor).  An asynchronous
                     * member (GEMMs queued, not run on the host) shows
                     * its own kernels as a wait: the ring is then taken as
                     * predicted, and the wait beyond it is that member's
                     * backward. */
                    int async = 0;
                    double least = HUGE_VAL;
                    for (size_t q = 0; q < p->nreplicas; q++) {
                        ring[q] = p->replicas[q].stages[s].devices[g].device;
                        async |= !synchronous(mpt_cluster_device(c, ring[q]));
                        least = fmin(least, meas[worker_of(p, q, s, g)].reduce_wait_s);
                    }
                    double pa = mpt__cost_allreduce_by(
                        c, ring, p->nreplicas, mpt__cost_param_bytes(mc, st->first, st->last, fr),
                        p->allreduce);
                    double exposed = async ? pa : least;
                    if (pa > 0 && !async)
                        f[3] = clampf(mpt__cal_factor(old, MPT__CAL_ALLREDUCE) * exposed / pa);
                    if (!synchronous(mpt_cluster_device(c, d)))
                        mb += fmax(meas[w].reduce_wait_s - exposed, 0);
                }
                if (pf > 0 && mf > 0)
                    f[0] = clampf(mpt__cal_factor(old, MPT__CAL_FORWARD) * mf / pf);
                if (pb > 0 && mb > 0)
                    f[1] = clampf(mpt__cal_factor(old, MPT__CAL_BACKWARD) * mb / pb);
                measured_step = fmax(measured_step, meas[w].step_s);
                dev[w] = d; /* each device is one worker */
            }
        }
    }
    /* Set after every worker's are known: the ring's prediction reads
     * every member's factor, which must still be the old one. */
    for (size_t k = 0; k < w; k++)
        MPT_TRY(set_factors(c, dev[k], fac[k], steps, company[dev[k]]));
    /* 2. Transfers: fitted to the measured step, since the waits between
     * stages are transfers and bubbles at once.  3. What is left (the
     * host's part of a step: waking the workers, summing the loss; other
     * processes' load) scales every device's compute alike, which keeps
     * their ratios, and so the planner's choices, as measured. */
    if (step_s > 0)
        measured_step = step_s;
    for (int round = 0; round < 8; round++) {
        MPT_TRY(mpt__plan_predict_calibrated(p, mc, c, batch, &t));
        free(eff);
        MPT_TRY(mpt__plan_company(p, c, &eff)); /* the factors as now set */
        double gap = measured_step - t.predicted_step_s;
        if (!(t.predicted_step_s > 0) || fabs(gap) < 0.005 * measured_step)
            break;
        int transfers = p->pp > 1 && t.p2p_s > 0 && round < 4;
        double ratio = transfers ? (t.p2p_s + gap) / t.p2p_s : measured_step / t.predicted_step_s;
        ratio = ratio < 0.05 ? 0.05 : ratio > 20 ? 20 : ratio;
        for (size_t r = 0; r < p->nreplicas; r++)
            for (size_t s = 0; s < p->replicas[r].nstages; s++)
                for (size_t g = 0; g < p->replicas[r].stages[s].ndevices; g++) {
                    size_t d = p->replicas[r].stages[s].devices[g].device;
                    const mpt_profile_t *now = &eff[d].profile;
                    double f[4] = {0, 0, 0, 0};
                    if (transfers)
                        f[2] = clampf(mpt__cal_factor(now, MPT__CAL_TRANSFER) * ratio);
                    else {
                        f[0] = clampf(mpt__cal_factor(now, MPT__CAL_FORWARD) * ratio);
                        f[1] = clampf(mpt__cal_factor(now, MPT__CAL_BACKWARD) * ratio);
                    }
                    MPT_TRY(set_factors(c, d, f, 0, company[d]));
                }
    }
    MPT_TRY(mpt__plan_predict_calibrated(p, mc, c, batch, &t));
    if (predicted_step_s)
        *predicted_step_s = t.predicted_step_s;
out:
    free(eff);
    free(group);
    free(ring);
    free(dev);
    free(fac);
    free(used);
    free(company);
    return status;
}

/* ---- devices never measured (re-planning) --------------------------------- */

/* A device's factors as the cost model applies them: the four kinds alone,
 * then forward and backward in company. */
#define NFACTORS 6
static void factors_of(const mpt_profile_t *p, double f[NFACTORS])
{
    mpt_profile_t in_company = *p;
    mpt__cal_in_company(&in_company.calibration);
    for (int kind = 0; kind < 4; kind++)
        f[kind] = mpt__cal_factor(p, (mpt__cal_kind_t)kind);
    f[4] = mpt__cal_factor(&in_company, MPT__CAL_FORWARD);
    f[5] = mpt__cal_factor(&in_company, MPT__CAL_BACKWARD);
}

/* A calibration of factors f over the most steps any donor was measured
 * over alone and in company (their sum, as mpt_calibration_t counts). */
static void calibration_of(const double f[NFACTORS], uint64_t alone, uint64_t company,
                           mpt_calibration_t *out)
{
    *out = (mpt_calibration_t){f[0], f[1], f[2], f[3], alone + company, f[4], f[5], company};
}

static void most_steps(const mpt_calibration_t *cal, uint64_t *alone, uint64_t *company)
{
    if (mpt__cal_alone_steps(cal) > *alone)
        *alone = mpt__cal_alone_steps(cal);
    if (cal->company_steps > *company)
        *company = cal->company_steps;
}

/* Geometric mean of the factors of the calibrated devices `like` picks
 * for device u (0: none), one per kind of work; the largest steps. */
static int mean_of(const mpt_cluster_t *c, size_t u,
                   int (*like)(const mpt_cluster_device_t *, const mpt_cluster_device_t *),
                   mpt_calibration_t *out)
{
    const mpt_cluster_device_t *x = mpt_cluster_device(c, u);
    double sum[NFACTORS] = {0}, f[NFACTORS];
    uint64_t alone = 0, company = 0;
    int k = 0;
    memset(out, 0, sizeof *out);
    for (size_t d = 0; d < mpt_cluster_device_count(c); d++) {
        const mpt_cluster_device_t *y = mpt_cluster_device(c, d);
        if (d == u || y->profile.calibration.steps == 0 || (like && !like(x, y)))
            continue;
        factors_of(&y->profile, f);
        for (int i = 0; i < NFACTORS; i++)
            sum[i] += log(f[i]);
        most_steps(&y->profile.calibration, &alone, &company);
        k++;
    }
    if (k) {
        for (int i = 0; i < NFACTORS; i++)
            f[i] = exp(sum[i] / k);
        calibration_of(f, alone, company, out);
    }
    return k;
}

static int same_kind(const mpt_cluster_device_t *a, const mpt_cluster_device_t *b)
{
    return a->info.type == b->info.type && a->info.name && b->info.name &&
           !strcmp(a->info.name, b->info.name);
}

/* The worst measured factor of each kind, at least 1. */
static void worst_of(const mpt_cluster_t *c, mpt_calibration_t *out)
{
    double worst[NFACTORS] = {1, 1, 1, 1, 1, 1}, f[NFACTORS];
    uint64_t alone = 0, company = 0;
    for (size_t d = 0; d < mpt_cluster_device_count(c); d++) {
        const mpt_profile_t *p = &mpt_cluster_device(c, d)->profile;
        if (p->calibration.steps == 0)
            continue;
        factors_of(p, f);
        for (int i = 0; i < NFACTORS; i++)
            worst[i] = fmax(worst[i], f[i]);
        most_steps(&p->calibration, &alone, &company);
    }
    calibration_of(worst, alone, company, out);
}

int mpt__calibration_borrowed(const mpt_cluster_t *c, mpt_cluster_t **out)
{
    char *text = NULL;
    json_t *root = NULL;
    json_error_t jerr;
    int status;
    *out = NULL;
    MPT_TRY(mpt_cluster_to_json(c, &text));
    if (!(root = json_loads(text, 0, &jerr))) {
        status = mpt__fail(MPT_ERR_PARSE, "copying the cluster: %s", jerr.text);
        goto out;
    }
    MPT_TRY(mpt__cluster_from_json(root, "the calibrated cluster", out));
    size_t n = mpt_cluster_device_count(c), measured = 0;
    for (size_t d = 0; d < n; d++)
        measured += mpt_cluster_device(c, d)->profile.calibration.steps > 0;
    for (size_t u = 0; measured && u < n; u++) {
        mpt_calibration_t cal;
        if (mpt_cluster_device(c, u)->profile.calibration.steps > 0)
            continue;
        /* Read from c, written to the copy: borrowed factors never lend. */
        if (!mean_of(c, u, same_kind, &cal) && !mean_of(c, u, mpt__cluster_share_cores, &cal))
            worst_of(c, &cal);
        MPT_TRY(mpt_cluster_set_calibration(*out, u, &cal));
    }
out:
    if (status < 0) {
        mpt_cluster_free(*out);
        *out = NULL;
    }
    json_decref(root);
    free(text);
    return status;
}
