/*
 * train/trainer.c: the public training API: the configuration and the
 * learning-rate schedule, and the trainer (step, evaluate, logits,
 * per-device figures), which runs every plan, one device included, on the
 * engine.  Models are in model_api.c, datasets and loaders in dataset.c,
 * checkpoints in checkpoint.c, the figures of reports in figures.c, traces
 * in trace.c.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device.h"
#include "comm/comm.h"
#include "train/trainer.h"

/* ---- configuration and schedule ------------------------------------------- */

void mpt_train_config_default(mpt_train_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->batch = 128;
    c->seed = 1;
    c->optimizer = MPT_OPTIM_SGD;
    c->lr = 0.05;
    c->momentum = 0.9;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    /* mpt-train's schedule: cosine over the run, which only the caller
     * knows (total_steps); until it is set the rate stays at lr. */
    c->schedule = MPT_SCHEDULE_COSINE;
    c->max_skips = 10;
}

void mpt_train_config_use_optimizer(mpt_train_config_t *c, mpt_optimizer_t optimizer)
{
    c->optimizer = optimizer;
    c->lr = optimizer == MPT_OPTIM_ADAMW ? 1e-3 : 0.05;
}

double mpt_train_lr_at(const mpt_train_config_t *c, uint64_t step)
{
    if (c->schedule == MPT_SCHEDULE_CONSTANT)
        return c->lr;
    if (step < c->warmup_steps)
        return c->lr * (double)(step + 1) / (double)c->warmup_steps;
    if (c->total_steps == 0) /* no length given: nothing to decay over */
        return c->lr;
    if (c->total_steps <= c->warmup_steps || step >= c->total_steps)
        return c->min_lr;
    double progress = (double)(step - c->warmup_steps) / (double)(c->total_steps - c->warmup_steps);
    return c->min_lr + 0.5 * (c->lr - c->min_lr) * (1.0 + cos(3.14159265358979323846 * progress));
}

/* Every setting in its range, also after the cast to float the kernels
 * use; written as !(in range) so that NaN fails too. */
static int check_config(const mpt_train_config_t *c)
{
    float lr = (float)c->lr, eps = (float)c->eps;
    if (c->batch == 0)
        return mpt__fail(MPT_ERR_INVALID, "batch size must be positive");
    if (!(lr > 0 && isfinite(lr)))
        return mpt__fail(MPT_ERR_INVALID, "learning rate must be a positive float, got %g", c->lr);
    if (c->optimizer != MPT_OPTIM_SGD && c->optimizer != MPT_OPTIM_ADAMW)
        return mpt__fail(MPT_ERR_INVALID, "unknown optimizer %d", (int)c->optimizer);
    if (!(c->momentum >= 0 && c->momentum < 1))
        return mpt__fail(MPT_ERR_INVALID, "momentum must be in [0, 1), got %g", c->momentum);
    if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
        return mpt__fail(MPT_ERR_INVALID, "betas must be in [0, 1), got %g and %g", c->beta1,
                         c->beta2);
    if (!(eps > 0 && isfinite(eps)))
        return mpt__fail(MPT_ERR_INVALID, "eps must be a positive float, got %g", c->eps);
    if (!(c->weight_decay >= 0 && isfinite((float)c->weight_decay)))
        return mpt__fail(MPT_ERR_INVALID, "weight decay must be >= 0, got %g", c->weight_decay);
    if (!(c->clip_norm >= 0 && isfinite((float)c->clip_norm)))
        return mpt__fail(MPT_ERR_INVALID, "clip norm must be >= 0 (0: off), got %g", c->clip_norm);
    if (c->schedule != MPT_SCHEDULE_CONSTANT && c->schedule != MPT_SCHEDULE_COSINE)
        return mpt__fail(MPT_ERR_INVALID, "unknown schedule %d", (int)c->schedule);
    if (c->schedule == MPT_SCHEDULE_CONSTANT && c->warmup_steps)
        return mpt__fail(MPT_ERR_INVALID, "warm-up steps need the cosine schedule");
    if (!(c->min_lr >= 0 && c->min_lr <= c->lr))
        return mpt__fail(MPT_ERR_INVALID, "min_lr must be in [0, lr], got %g", c->min_lr);
    if (c->on_nonfinite != MPT_NONFINITE_STOP && c->on_nonfinite != MPT_NONFINITE_SKIP)
        return mpt__fail(MPT_ERR_INVALID, "unknown non-finite policy %d", (int)c->on_nonfinite);
    if (c->on_nonfinite == MPT_NONFINITE_SKIP && c->max_skips == 0)
        return mpt__fail(MPT_ERR_INVALID, "skipping non-finite steps needs max_skips >= 1 (the "
                         "steps in a row skipped before the run stops)");
    return MPT_OK;
}

/* ---- the trainer ----------------------------------------------------------- */

/* A trainer with its settings checked and copied; no executor yet. */
static int trainer_new(const mpt_model_t *model, const mpt_train_config_t *config,
                       mpt_trainer_t **out)
{
    int status;
    *out = NULL;
    if ((status = check_config(config)) < 0)
        return status;
    mpt_trainer_t *t = calloc(1, sizeof *t);
    if (!t)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    t->model = model;
    t->cfg = *config;
    t->opt = (mpt__optim_cfg_t){config->optimizer, (float)config->momentum,
                                (float)config->weight_decay, (float)config->beta1,
                                (float)config->beta2, (float)config->eps,
                                (float)config->clip_norm,
                                config->on_nonfinite == MPT_NONFINITE_SKIP};
    *out = t;
    return MPT_OK;
}

/* The per-worker arrays of the trainer's engine (busy fractions, the
 * calibration's sums), sized anew for its workers and cleared. */
int mpt__trainer_size_arrays(mpt_trainer_t *t)
{
    size_t workers = mpt__engine_worker_count(t->eng);
    mpt__cal_measured_t *sum =
        realloc(t->cal_sum, MPT__CAL_HISTORY * (workers + 1) * sizeof *sum);
    if (!sum)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    t->cal_sum = sum;
    t->cal_steps = 0;
    return mpt__figures_size(t);
}

/* The deadline of waits on other ranks: the configuration's, else a few
 * minutes, or a hundred predicted steps when that is longer (a slow first
 * step, kernel builds, must not look like a dead peer). */
static void apply_comm_timeout(mpt_trainer_t *t, const mpt_train_config_t *config)
{
    t->comm_timeout_s = config->comm_timeout_s;
    if (t->comm_timeout_s <= 0) {
        double step = t->plan->predicted_step_s;
        t->comm_timeout_s = step > 0 && 100 * step > 300 ? 100 * step : 300;
    }
    mpt__engine_set_comm_timeout(t->eng, t->comm_timeout_s);
}

/* A trainer over the engine: devices[plan device id] (NULL for another
 * rank's), ranks NULL within one process. */
static int trainer_on_engine(const mpt_model_t *model, mpt_device_t *const *devices, size_t n,
                             const mpt_plan_t *plan, const mpt_train_config_t *config,
                             const mpt_topology_t *topo, const mpt_cluster_t *cluster,
                             const mpt__engine_ranks_t *ranks, mpt_trainer_t **out)
{
    mpt_trainer_t *t = NULL;
    int status = trainer_new(model, config, &t);
    if (status < 0)
        return status;
    t->rank = ranks ? ranks->rank : 0;
    t->plan = plan, t->topo = topo, t->cluster = cluster, t->ndevs = n;
    t->predicted_s = plan->predicted_step_s > 0 ? plan->predicted_step_s : NAN;
    t->nranks = ranks && ranks->nranks > 1 ? ranks->nranks : 1;
    /* Kept for a move to another plan (mpt_trainer_replan). */
    if (!(t->devs = malloc((n + 1) * sizeof *t->devs)) ||
        (t->nranks > 1 && !(t->rank_of = malloc((n + 1) * sizeof *t->rank_of)))) {
        mpt_trainer_free(t);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    memcpy(t->devs, devices, n * sizeof *t->devs);
    if (t->rank_of)
        memcpy(t->rank_of, ranks->device_rank, n * sizeof *t->rank_of);
    status = mpt__engine_create_ranks(model, devices, n, plan, config->batch, config->seed, topo,
                                      cluster, ranks, &t->eng);
    if (status == MPT_OK)
        status = mpt__trainer_size_arrays(t);
    if (status < 0) {
        mpt_trainer_free(t);
        return status;
    }
    apply_comm_timeout(t, config);
    t->window_t0 = mpt__now();
    *out = t;
    return MPT_OK;
}

int mpt_trainer_create(const mpt_model_t *model, mpt_device_t *dev,
                       const mpt_train_config_t *config, mpt_trainer_t **out)
{
    mpt__plan_t *plan = NULL;
    if (!model || !dev || !config || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_create: NULL argument");
    *out = NULL;
    int status = mpt__plan_single(model->nlayers, config->batch, &plan);
    if (status == MPT_OK)
        status = trainer_on_engine(model, &dev, 1, plan, config, NULL, NULL, NULL, out);
    if (status == MPT_OK)
        (*out)->own_plan = plan;
    else
        mpt__plan_free(plan);
    return status;
}

int mpt_trainer_create_planned(const mpt_model_t *model, mpt_devices_t *devices,
                               const mpt_plan_t *plan, const mpt_train_config_t *config,
                               const mpt_topology_t *topo, const mpt_cluster_t *cluster,
                               mpt_trainer_t **out)
{
    if (!model || !devices || !plan || !config || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_create_planned: NULL argument");
    *out = NULL;
    return trainer_on_engine(model, devices->devices, devices->count, plan, config, topo,
                             cluster, NULL, out);
}

int mpt_trainer_create_world(const mpt_model_t *model, mpt_devices_t *devices,
                             const mpt_plan_t *plan, const mpt_train_config_t *config,
                             const mpt_topology_t *topo, const mpt_cluster_t *cluster,
                             mpt_world_t *world, mpt_trainer_t **out)
{
    const int *first = NULL, *count = NULL;
    if (mpt_world_size(world) == 1)
        return mpt_trainer_create_planned(model, devices, plan, config, topo, cluster, out);
    if (!model || !devices || !plan || !config || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_create_world: NULL argument");
    *out = NULL;
    int rank = mpt_world_rank(world), size = mpt_world_size(world);
    size_t n = (size_t)mpt__world_devices(world, &first, &count);
    if (n == 0)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_create_world: call mpt_world_cluster "
                         "first (the plan's device ids index the job's cluster)");
    if ((int)devices->count != count[rank])
        return mpt__fail(MPT_ERR_INVALID, "rank %d opened %zu devices, its part of the job's "
                         "cluster has %d", rank, devices->count, count[rank]);
    mpt_device_t **all = calloc(n, sizeof *all);
    int *rank_of = calloc(n, sizeof *rank_of), status;
    if (!all || !rank_of) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
    } else {
        /* The plan's device d: rank r's device d - first[r]. */
        for (int r = 0; r < size; r++)
            for (int i = 0; i < count[r]; i++) {
                rank_of[first[r] + i] = r;
                if (r == rank)
                    all[first[r] + i] = devices->devices[i];
            }
        mpt__engine_ranks_t ranks = {rank, size, rank_of};
        status = trainer_on_engine(model, all, n, plan, config, topo, cluster, &ranks, out);
        if (status == MPT_OK) {
            /* Ranks started with other options would train wrongly or hang:
             * compare before the first step. */
            char *cfg = mpt__train_config_json(config);
            (*out)->world = world;
            status = cfg ? mpt__trainer_agree_text(*out, "model", model->json)
                         : mpt__fail(MPT_ERR_NOMEM, "out of memory");
            if (status == MPT_OK)
                status = mpt__trainer_agree_text(*out, "training configuration", cfg);
            /* Not in the checkpoint's configuration (a resume may change
             * it), but a rank that skips where another updates diverges. */
            char policy[64];
            snprintf(policy, sizeof policy, "{\"on_nonfinite\": \"%s\", \"max_skips\": %llu}",
                     config->on_nonfinite == MPT_NONFINITE_SKIP ? "skip" : "stop",
                     (unsigned long long)config->max_skips);
            if (status == MPT_OK)
                status = mpt__trainer_agree_text(*out, "non-finite policy", policy);
            free(cfg);
            if (status < 0) {
                mpt_trainer_free(*out);
                *out = NULL;
            }
        }
    }
    free(all);
    free(rank_of);
    return status;
}

/* Rank 0: where rank r's text differs from its own, as a sentence. */
static void describe_difference(const char *what, int r, const char *mine, const char *theirs,
                                char *why, size_t size)
{
    json_t *a = json_loads(mine, 0, NULL), *b = json_loads(theirs, 0, NULL);
    const char *key;
    char *x = NULL, *y = NULL;
    if (json_is_object(a) && json_is_object(b) && mpt__json_first_difference(a, b, &key, &x, &y))
        snprintf(why, size, "rank %d's %s differs from rank 0's: %s %s there, %s here", r, what,
                 key, y ? y : "?", x ? x : "?");
    else
        snprintf(why, size, "rank %d's %s differs from rank 0's", r, what);
    free(x), free(y);
    json_decref(a);
    json_decref(b);
}

int mpt__trainer_agree_text(mpt_trainer_t *t, const char *what, const char *mine)
{
    mpt_world_t *w = t->world;
    char **texts = NULL, *verdict = NULL, why[512] = "";
    if (!w || mpt_world_size(w) == 1)
        return MPT_OK;
    int status = mpt__world_gather_texts(w, mine, &texts), failed = status;
    for (int r = 1; failed == MPT_OK && texts && r < mpt_world_size(w); r++)
        if (strcmp(texts[0], texts[r]) != 0) {
            describe_difference(what, r, texts[0], texts[r], why, sizeof why);
            failed = mpt__fail(MPT_ERR_INVALID, "%s: every rank must be started alike", why);
        }
    if (mpt_world_rank(w) == 0 && failed == MPT_OK && !(verdict = mpt__strdup("same")))
        failed = mpt__fail(MPT_ERR_NOMEM, "out of memory");
    status = mpt__world_bcast_text(w, failed, &verdict);
    free(texts);
    free(verdict);
    return failed < 0 ? failed : status;
}

int mpt__trainer_agree_max(mpt_trainer_t *t, int mine, int *out)
{
    return mpt__world_agree_max(t->world, mine, t->comm_timeout_s, out);
}

void mpt_trainer_free(mpt_trainer_t *t)
{
    if (!t)
        return;
    mpt__engine_free(t->eng);
    mpt__plan_free(t->own_plan); /* after the engine, which reads it */
    free(t->window);
    free(t->fixed);
    free(t->clock);
    free(t->cal_sum);
    free(t->devs);
    free(t->rank_of);
    free(t->failures);
    free(t->excluded);
    for (int k = 0; k < 3; k++)
        free(t->snap.state[k]);
    free(t);
}

int mpt_trainer_step(mpt_trainer_t *t, const float *images, const int32_t *labels,
                     mpt_step_stats_t *stats)
{
    mpt_step_stats_t s = {0};
    if (!t->eng) /* a move to another plan failed both ways (mpt_trainer_replan) */
        return mpt__fail(MPT_ERR_ABORTED, "the trainer lost its engine in a failed re-plan: "
                         "free it");
    s.lr = mpt_train_lr_at(&t->cfg, mpt_trainer_steps(t));
    double t0 = mpt__now();
    /* Skipped steps applied no update: the optimizer counts the others. */
    uint64_t updates = mpt_trainer_steps(t) - t->skipped;
    int status = mpt__engine_train_step(t->eng, images, labels, &t->opt, (float)s.lr, updates,
                                        &s.loss, &s.grad_norm, &s.skipped);
    double wall = mpt__now() - t0;
    s.step = mpt_trainer_steps(t);
    if (status == MPT_OK) {
        if (s.skipped) {
            t->skipped++, t->skipped_in_row++;
        } else {
            t->skipped_in_row = 0;
            t->window_loss += s.loss, t->window_updates++;
        }
        t->window_steps++;
        t->last = s;
        /* Every worker's phases (every rank has them all) and the step's
         * wall time: calibration. */
        if (!t->cal_paused) {
            size_t n = mpt__engine_worker_count(t->eng);
            mpt__cal_measured_t *row = t->cal_sum + (t->cal_steps % MPT__CAL_HISTORY) * (n + 1);
            for (size_t i = 0; i < n; i++) {
                const mpt_device_step_t *d = mpt__engine_device_stats(t->eng, i);
                row[i] = (mpt__cal_measured_t){d->forward_s, d->backward_s + d->update_s,
                                               d->reduce_wait_s, d->step_s};
            }
            row[n] = (mpt__cal_measured_t){0, 0, 0, wall};
            t->cal_steps++;
        }
    }
    if (stats)
        *stats = s;
    if (status == MPT_OK && s.skipped && t->skipped_in_row > t->cfg.max_skips)
        return mpt__fail(MPT_ERR_DIVERGED,
                         "step %llu: the %s is %g, %llu steps in a row were not finite (at "
                         "most %llu are skipped): training diverged (a lower learning rate, a "
                         "warm-up or --clip-norm may help); no checkpoint written from it",
                         (unsigned long long)s.step,
                         isfinite(s.loss) ? "gradient norm" : "loss",
                         isfinite(s.loss) ? s.grad_norm : s.loss,
                         (unsigned long long)t->skipped_in_row,
                         (unsigned long long)t->cfg.max_skips);
    return status;
}

int mpt_trainer_set_timing(mpt_trainer_t *t, int on)
{
    int status = MPT_OK;
    for (size_t i = 0; i < mpt__engine_worker_count(t->eng) && status == MPT_OK; i++) {
        mpt_device_t *dev = mpt__engine_worker_device(t->eng, i);
        if (dev)
            status = mpt_device_set_timing(dev, on);
    }
    if (status == MPT_OK)
        t->timing = on;
    return status;
}

int mpt_trainer_report(mpt_trainer_t *t, mpt_step_report_t *r)
{
    double now = mpt__now();
    memset(r, 0, sizeof *r);
    r->seconds = now - t->window_t0;
    int status = mpt__figures_window(t, r->seconds, t->window_steps, &r->device_busy,
                                     &r->blas_busy);
    r->step = mpt_trainer_steps(t);
    r->total_steps = t->cfg.total_steps;
    r->steps = t->window_steps;
    r->loss = t->window_updates ? t->window_loss / (double)t->window_updates : NAN;
    r->lr = t->last.lr;
    r->grad_norm = t->cfg.clip_norm > 0 || t->opt.skip_nonfinite ? t->last.grad_norm : NAN;
    r->skipped = t->window_steps ? t->last.skipped : 0;
    r->skipped_steps = t->skipped;
    r->samples_per_s = r->seconds > 0 ? (double)(r->steps * t->cfg.batch) / r->seconds : 0;
    size_t context = t->model->labels_per_sample;
    r->tokens_per_s = context > 1 ? r->samples_per_s * (double)context : 0;
    double rate = r->seconds > 0 ? (double)r->steps / r->seconds : 0;
    r->eta_s = r->total_steps && rate > 0 && r->step <= r->total_steps
                   ? (double)(r->total_steps - r->step) / rate
                   : NAN;
    r->step_s = r->steps ? r->seconds / (double)r->steps : NAN;
    r->predicted_step_s = t->predicted_s;
    t->window_t0 = now, t->window_loss = 0, t->window_steps = 0, t->window_updates = 0;
    return status;
}

int mpt_trainer_evaluate(mpt_trainer_t *t, const float *images, const int32_t *labels,
                         size_t count, double *mean_loss, double *accuracy)
{
    double loss = 0, correct = 0;
    int status = !count ? mpt__fail(MPT_ERR_INVALID, "evaluating on 0 samples")
                        : mpt__engine_evaluate(t->eng, images, labels, count, &loss, &correct);
    if (mean_loss)
        *mean_loss = count ? loss / (double)count : 0;
    if (accuracy)
        *accuracy = count ? correct / (double)count : 0;
    return status;
}

int mpt_trainer_logits(mpt_trainer_t *t, const float *inputs, size_t count, float *logits)
{
    if (!t || !inputs || !logits)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_logits: NULL argument");
    return mpt__engine_logits(t->eng, inputs, count, logits);
}

uint64_t mpt_trainer_steps(const mpt_trainer_t *t)
{
    return t->eng ? mpt__engine_step(t->eng) : t->snap.step;
}

size_t mpt_trainer_device_count(const mpt_trainer_t *t)
{
    return t->eng ? mpt__engine_worker_count(t->eng) : 0;
}

int mpt_trainer_device_stats(const mpt_trainer_t *t, size_t i, mpt_device_step_t *out)
{
    if (i >= mpt_trainer_device_count(t))
        return mpt__fail(MPT_ERR_RANGE, "device %zu of the trainer's %zu", i,
                         mpt_trainer_device_count(t));
    *out = *mpt__engine_device_stats(t->eng, i);
    mpt__figures_apply(t, i, out);
    return MPT_OK;
}

/* ---- state, for checkpoints --------------------------------------------------- */

/* Without an engine (an elastic run that lost every device) the state is
 * the newest snapshot's: what the run's last checkpoint writes. */
static int from_snapshot(const mpt_trainer_t *t, int k, float *out)
{
    if (!t->snap.valid)
        return mpt__fail(MPT_ERR_ABORTED, "the trainer has no engine and no snapshot");
    memcpy(out, t->snap.state[k], t->model->param_floats * sizeof *out);
    return MPT_OK;
}

int mpt__trainer_read_params(mpt_trainer_t *t, float *out)
{
    return t->eng ? mpt__engine_read_params(t->eng, out) : from_snapshot(t, 0, out);
}

int mpt__trainer_write_params(mpt_trainer_t *t, const float *in)
{
    return mpt__engine_write_params(t->eng, in);
}

int mpt__trainer_read_slot(mpt_trainer_t *t, int slot, float *out)
{
    return t->eng ? mpt__engine_read_slot(t->eng, slot, out) : from_snapshot(t, 1 + slot, out);
}

int mpt__trainer_write_slot(mpt_trainer_t *t, int slot, const float *in)
{
    return mpt__engine_write_slot(t->eng, slot, in);
}

void mpt_trainer_allow_nonfinite_checkpoint(mpt_trainer_t *t, int allow)
{
    t->allow_nonfinite = allow != 0;
}

void mpt__trainer_set_step(mpt_trainer_t *t, uint64_t step)
{
    mpt__engine_set_step(t->eng, step);
}
