/*
 * train/figures.c: what a report adds to the engine's per-device
 * statistics (mpt_device_step_t): the kernel time of the window as busy
 * fractions, the launches of the last step, the achieved GFLOP/s and
 * memory bandwidth next to the device's profile, and its memory capacity;
 * under a job, every rank's devices, gathered so that each rank (rank 0
 * writes the metrics) holds them all.
 *
 * Achieved rates divide the cost model's counts (plan/cost.c: the FLOPs
 * and device-memory bytes its rooflines price) by measured kernel time,
 * so they say how near the device ran to its profile on this model, not
 * what the kernels really moved (caches and extra passes are not seen).
 * Left out: the optimizer update and evaluations, which the counts leave
 * out but whose kernel time falls in the window (an evaluation lowers the
 * rates of the window after it).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/trainer.h"

/* What one step costs worker i by the cost model, and what its device is. */
static void fixed_figures(mpt_trainer_t *t, const mpt__model_cost_t *mc, size_t i, double *row)
{
    const mpt_device_step_t *d = mpt__engine_device_stats(t->eng, i);
    const mpt__plan_replica_t *rep = &t->plan->replicas[d->replica];
    const mpt__plan_stage_t *st = &rep->stages[d->stage];
    double share = st->devices[d->member].fraction;
    double m = (double)(t->plan->microbatches ? t->plan->microbatches : 1);
    double mb = (double)t->cfg.batch * rep->batch_share / m; /* samples of a micro-batch */
    double ff = 0, fb = 0, bf = 0, bb = 0;
    mpt__cost_work(mc, st->first, st->last, mb, share, 0, &ff, &fb);
    mpt__cost_work(mc, st->first, st->last, mb, share, 1, &bf, &bb);
    double passes = st->recompute ? 2 : 1; /* a recomputed stage runs its forward twice */
    row[FX_FLOPS] = m * (passes * ff + bf);
    row[FX_BYTES] = m * (passes * fb + bb);
    row[FX_GFLOPS] = row[FX_GBPS] = NAN, row[FX_CAPACITY] = 0;
    const mpt_cluster_device_t *cd = t->cluster ? mpt_cluster_device(t->cluster, d->device)
                                                : NULL;
    mpt_device_t *dev = mpt__engine_worker_device(t->eng, i);
    if (cd) {
        row[FX_GFLOPS] = cd->profile.gemm_gflops > 0 ? cd->profile.gemm_gflops : NAN;
        row[FX_GBPS] = cd->profile.mem_gbps > 0 ? cd->profile.mem_gbps : NAN;
        row[FX_CAPACITY] = (double)cd->info.global_mem_bytes;
    } else if (dev) {
        uint64_t limit = mpt_device_memory_limit(dev);
        uint64_t global = mpt_device_info(dev)->global_mem_bytes;
        row[FX_CAPACITY] = (double)(limit && limit < global ? limit : global);
    }
}

int mpt__figures_size(mpt_trainer_t *t)
{
    size_t workers = mpt__engine_worker_count(t->eng);
    double *win = realloc(t->window, (workers * WIN_COUNT + 1) * sizeof *win);
    if (win)
        t->window = win;
    double *fx = realloc(t->fixed, (workers * FX_COUNT + 1) * sizeof *fx);
    if (fx)
        t->fixed = fx;
    if (!win || !fx)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < workers * WIN_COUNT; i++)
        t->window[i] = NAN;
    mpt__model_cost_t mc = {0};
    MPT_TRY_RETURN(mpt__model_cost(t->model, &mc));
    for (size_t i = 0; i < workers; i++)
        fixed_figures(t, &mc, i, t->fixed + i * FX_COUNT);
    mpt__model_cost_free(&mc);
    return MPT_OK;
}

int mpt__figures_window(mpt_trainer_t *t, double seconds, uint64_t steps, double *busy,
                        double *blas)
{
    size_t n = mpt__engine_worker_count(t->eng), known = 0;
    int status = MPT_OK;
    *busy = 0, *blas = 0;
    /* This rank's devices' kernel time over the window (reading it waits
     * for them); NaN rows for the others' until they are shared. */
    for (size_t i = 0; i < n; i++) {
        double *row = t->window + i * WIN_COUNT, b = 0, bl = 0;
        mpt_device_t *dev = mpt__engine_worker_device(t->eng, i);
        const mpt_device_step_t *d = mpt__engine_device_stats(t->eng, i);
        for (int k = 0; k < WIN_COUNT; k++)
            row[k] = NAN;
        if (!dev || !t->timing || status < 0)
            continue;
        status = mpt_device_busy_seconds(dev, &b, &bl);
        row[WIN_BUSY] = seconds > 0 ? b / seconds : 0;
        row[WIN_BLAS] = seconds > 0 ? bl / seconds : 0;
        row[WIN_KERNELS] = (double)d->kernels, row[WIN_BLAS_CALLS] = (double)d->blas_calls;
        const double *fx = t->fixed + i * FX_COUNT;
        row[WIN_GFLOPS] = b > 0 ? fx[FX_FLOPS] * (double)steps / b * 1e-9 : NAN;
        row[WIN_GBPS] = b > 0 ? fx[FX_BYTES] * (double)steps / b * 1e-9 : NAN;
    }
    /* Every rank takes part, whatever failed here: the others wait for it. */
    int shared = mpt__engine_share_rows(t->eng, t->window, WIN_COUNT);
    if (status == MPT_OK)
        status = shared;
    for (size_t i = 0; i < n; i++) {
        const double *row = t->window + i * WIN_COUNT;
        if (isnan(row[WIN_BUSY]))
            continue;
        *busy += row[WIN_BUSY], *blas += row[WIN_BLAS], known++;
    }
    *busy = known ? *busy / (double)known : NAN;
    *blas = known ? *blas / (double)known : NAN;
    return status;
}

void mpt__figures_apply(const mpt_trainer_t *t, size_t i, mpt_device_step_t *out)
{
    const double *row = t->window + i * WIN_COUNT, *fx = t->fixed + i * FX_COUNT;
    out->busy = row[WIN_BUSY];
    if (!isnan(row[WIN_BUSY])) /* else: the engine's own (this rank's last step) */
        out->kernels = (unsigned long)row[WIN_KERNELS],
        out->blas_calls = (unsigned long)row[WIN_BLAS_CALLS];
    out->gflops = row[WIN_GFLOPS], out->mem_gbps = row[WIN_GBPS];
    out->profile_gflops = fx[FX_GFLOPS], out->profile_mem_gbps = fx[FX_GBPS];
    out->memory_capacity_bytes = (uint64_t)fx[FX_CAPACITY];
}
