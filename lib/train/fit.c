/*
 * train/fit.c: the training loop every program shares (mpt_trainer_fit):
 * steps over a data source, a report every log_every steps into the
 * metrics file, evaluation at each epoch's end and every eval_every steps,
 * checkpoints every checkpoint_every steps and at the end, resuming from
 * the checkpoint, and per-epoch summaries.  mpt-train only parses, calls
 * this and prints what the callbacks hand it.
 *
 * Under a job (mpt_trainer_create_world) every rank runs the loop, since
 * every rank takes part in each step; rank 0 alone writes the metrics (and
 * mpt_trainer_save the checkpoint).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trace/metrics.h"
#include "train/elastic.h"
#include "train/trainer.h"

void mpt_fit_options_default(mpt_fit_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->epochs = 10;
    o->log_every = 1;
    o->rebalance_after = 20;
    o->rebalance_margin = 0.10;
    o->elastic = 0;        /* on for a plan of several devices */
    o->snapshot_every = 0; /* chosen from the measured copy and step times */
}

uint64_t mpt_fit_total_steps(const mpt_fit_options_t *o, const mpt_data_t *data)
{
    return o->steps ? o->steps : o->epochs * mpt_data_batches_per_epoch(data);
}

/* The state of one run of the loop. */
typedef struct {
    mpt_trainer_t *t;
    mpt_data_t *data;
    const mpt_fit_options_t *o;
    mpt_metrics_t *metrics;
    mpt_device_step_t *devices;
    size_t ndevices;
    mpt_step_report_t report; /* the last one */
    /* the epoch so far */
    double t0, loss_sum, busy_s, blas_s;
    uint64_t steps, updates; /* updates: the steps not skipped (the loss's) */
    /* elastic training (elastic.c) and the epoch's sums at its snapshot */
    mpt__elastic_t el;
    double snap_loss_sum;
    uint64_t snap_steps, snap_updates;
    double first_loss; /* of this run's first step that updated; 0: none yet */
    int warned;        /* the loss was far above it: said once */
} fit_run;

/* The per-device figures sized for the trainer's engine (after a move). */
static int fit_size_devices(fit_run *r)
{
    size_t n = mpt_trainer_device_count(r->t);
    mpt_device_step_t *grown = realloc(r->devices, (n + 1) * sizeof *grown);
    if (!grown)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    r->devices = grown, r->ndevices = n;
    for (size_t i = 0; i < n; i++)
        MPT_TRY_RETURN(mpt_trainer_device_stats(r->t, i, &r->devices[i]));
    return MPT_OK;
}

static int fit_report(fit_run *r, uint64_t epoch)
{
    mpt_step_report_t *rep = &r->report;
    MPT_TRY_RETURN(mpt_trainer_report(r->t, rep));
    for (size_t i = 0; i < r->ndevices; i++)
        MPT_TRY_RETURN(mpt_trainer_device_stats(r->t, i, &r->devices[i]));
    if (!isnan(rep->device_busy)) {
        r->busy_s += rep->device_busy * rep->seconds;
        r->blas_s += rep->blas_busy * rep->seconds;
    }
    if (r->metrics)
        MPT_TRY_RETURN(mpt_metrics_step(r->metrics, rep, epoch + 1, r->devices, r->ndevices));
    return MPT_OK;
}

/* Evaluates, logs the evaluation and, at an epoch's end or the run's,
 * hands the epoch's summary to the caller and starts the next. */
static int fit_evaluate(fit_run *r, uint64_t step, uint64_t epoch, int summary, int epoch_end,
                        uint64_t first_step)
{
    const float *x;
    const int32_t *y;
    size_t count;
    const char *name;
    double loss = 0, acc = 0;
    mpt_data_eval_set(r->data, &x, &y, &count, &name);
    MPT_TRY_RETURN(mpt_trainer_evaluate(r->t, x, y, count, &loss, &acc));
    if (r->metrics)
        MPT_TRY_RETURN(mpt_metrics_eval(r->metrics, step, epoch + 1, name, loss, acc));
    if (!summary)
        return MPT_OK;
    double now = mpt__now(), secs = now - r->t0;
    uint64_t per_epoch = mpt_data_batches_per_epoch(r->data);
    size_t batch = mpt_data_batch(r->data), context = r->t->model->labels_per_sample;
    mpt_epoch_summary_t s = {
        .epoch = epoch + 1,
        .step = step,
        .steps = r->steps,
        .partial = !epoch_end,
        .resumed = step - r->steps == first_step && first_step > 0 && first_step % per_epoch != 0,
        .train_loss = r->updates ? r->loss_sum / (double)r->updates : NAN,
        .eval_loss = loss,
        .eval_accuracy = acc,
        .eval_name = name,
        .seconds = secs,
        .samples_per_s = secs > 0 ? (double)(r->steps * batch) / secs : 0,
        .device_busy_s = r->t->timing ? r->busy_s : NAN,
        .blas_busy_s = r->t->timing ? r->blas_s : NAN,
        .devices = r->devices,
        .ndevices = r->ndevices,
    };
    s.tokens_per_s = context > 1 ? s.samples_per_s * (double)context : 0;
    if (r->o->on_epoch)
        r->o->on_epoch(r->o->ctx, &s);
    r->t0 = mpt__now(), r->loss_sum = 0, r->steps = 0, r->updates = 0, r->busy_s = 0;
    r->blas_s = 0;
    return MPT_OK;
}

/* Restores the trainer from the checkpoint and moves the data to where the
 * interrupted run stood. */
static int fit_resume(mpt_trainer_t *t, mpt_data_t *data, const char *path)
{
    mpt_data_position_t pos = {0, 0};
    uint64_t per_epoch = mpt_data_batches_per_epoch(data);
    MPT_TRY_RETURN(mpt_trainer_load(t, path, &pos));
    if (pos.epoch * per_epoch + pos.batch_index != mpt_trainer_steps(t))
        return mpt__fail(MPT_ERR_PARSE,
                         "checkpoint %s: step %llu does not match its data position (epoch "
                         "%llu, batch %llu) at %llu batches per epoch: resume with the "
                         "interrupted run's data and batch size",
                         path, (unsigned long long)mpt_trainer_steps(t),
                         (unsigned long long)pos.epoch, (unsigned long long)pos.batch_index,
                         (unsigned long long)per_epoch);
    return mpt_data_seek(data, &pos);
}

/* After the warm-up steps: calibrate, plan again, maybe move (rebalance.c);
 * the decision goes to the metrics and the caller. */
static int fit_rebalance(fit_run *r, uint64_t step)
{
    const mpt_fit_options_t *o = r->o;
    mpt__replan_t rp;
    if (r->t->cal_steps == 0) { /* every step kept out: mpt_trainer_set_calibrating(t, 0) */
        mpt__log(MPT_LOG_WARN, "step %llu: no rebalance: none of the steps before it counted "
                 "towards calibration (mpt_trainer_set_calibrating)", (unsigned long long)step);
        return MPT_OK;
    }
    MPT_TRY_RETURN(mpt__trainer_rebalance(r->t, o->cluster, o->replan, o->rebalance_margin,
                                          o->save_calibration, &rp));
    if (rp.moved) /* the new plan's workers */
        MPT_TRY_RETURN(fit_size_devices(r));
    if (r->metrics)
        MPT_TRY_RETURN(mpt_metrics_replan(r->metrics, step, rp.old_plan, rp.old_s, rp.new_plan,
                                          rp.new_s, rp.moved));
    if (o->on_replan)
        o->on_replan(o->ctx, step, rp.old_plan, rp.old_s, rp.new_plan, rp.new_s, rp.moved);
    return MPT_OK;
}

/* A failed step, checkpoint or evaluation (status): recovered from the
 * snapshot when the run is elastic and a device is to blame (elastic.c),
 * the metrics cut back to the snapshot's step (the replay logs the later
 * steps again) and the event recorded, the data back at the snapshot's
 * batch; *step is then the step the loop trains next.  Otherwise the
 * failure, with the snapshot written to the checkpoint when no engine is
 * left. */
static int fit_recover(fit_run *r, int status, uint64_t *step)
{
    const mpt_fit_options_t *o = r->o;
    mpt__recovery_t rec;
    status = mpt__elastic_recover(&r->el, r->t, status, &rec);
    if (status < 0) {
        if (!r->t->eng && o->checkpoint) {
            char why[1024];
            snprintf(why, sizeof why, "%s", mpt_last_error());
            int saved = mpt_trainer_save(r->t, o->checkpoint, &r->t->snap.next);
            return mpt__fail(status, "%s; %s", why,
                             saved == MPT_OK ? "the snapshot is written to the checkpoint: "
                                               "resume it on other devices"
                                             : "and writing the snapshot to the checkpoint "
                                               "failed too");
        }
        return status;
    }
    MPT_TRY_RETURN(mpt_data_seek(r->data, &r->t->snap.next));
    MPT_TRY_RETURN(fit_size_devices(r));
    r->loss_sum = r->snap_loss_sum, r->steps = r->snap_steps, r->updates = r->snap_updates;
    *step = r->t->snap.step;
    if (r->metrics) {
        MPT_TRY_RETURN(mpt__metrics_drop_after(r->metrics, *step));
        MPT_TRY_RETURN(mpt_metrics_recovered(r->metrics, *step, rec.device, rec.reason,
                                             rec.plan, rec.replayed, rec.seconds_lost));
    }
    if (o->on_recover)
        o->on_recover(o->ctx, *step, rec.device, rec.reason, rec.plan, rec.replayed,
                      rec.seconds_lost);
    return MPT_OK;
}

static int fit_loop(fit_run *r, uint64_t total)
{
    const mpt_fit_options_t *o = r->o;
    uint64_t per_epoch = mpt_data_batches_per_epoch(r->data);
    uint64_t first_step = mpt_trainer_steps(r->t);
    r->t0 = mpt__now();
    for (uint64_t step = first_step; step < total; step++) {
        const float *x;
        const int32_t *y;
        mpt_data_position_t at;
        mpt_step_stats_t st;
        double t0 = mpt__now(); /* host work on the trace's host track */
        MPT_TRY_RETURN(mpt_data_next(r->data, step, &x, &y, &at));
        mpt__engine_host_span(r->t->eng, "batch load", t0);
        /* Snapshots at their interval and at each epoch's start, so that a
         * recovery never replays an epoch's summary. */
        if (mpt__elastic_due(&r->el, step) || (r->el.on && at.batch_index == 0)) {
            MPT_TRY_RETURN(mpt__elastic_snapshot(&r->el, r->t, &at));
            r->snap_loss_sum = r->loss_sum, r->snap_steps = r->steps;
            r->snap_updates = r->updates;
        }
        r->el.failed_at = mpt__now(), r->el.after_step = NULL;
        int failed = mpt_trainer_step(r->t, x, y, &st);
        if (failed < 0) {
            MPT_TRY_RETURN(fit_recover(r, failed, &step));
            step--; /* the loop's increment brings it back */
            continue;
        }
        double done = mpt__now();
        mpt__elastic_step_done(&r->el, done - r->el.failed_at);
        r->el.failed_at = done; /* what fails after the step is lost from here */
        /* A skipped step (config.on_nonfinite) updated nothing: the
         * trainer bounds how many in a row. */
        if (!st.skipped &&
            (!isfinite(st.loss) || (r->t->cfg.clip_norm > 0 && !isfinite(st.grad_norm))))
            return mpt__fail(MPT_ERR_DIVERGED,
                             "step %llu: the %s is %g: training diverged (a lower learning "
                             "rate, a warm-up or --clip-norm may help); no checkpoint written "
                             "from it",
                             (unsigned long long)st.step,
                             isfinite(st.loss) ? "gradient norm" : "loss",
                             isfinite(st.loss) ? st.grad_norm : st.loss);
        /* A finite loss far above the first is divergence on its way
         * (--lr 10: 3351 at step 3, 2e22 at step 5, NaN at step 6). */
        if (!st.skipped && !r->warned && r->first_loss > 0 && st.loss > 100 * r->first_loss &&
            r->t->rank == 0) {
            mpt__log(MPT_LOG_WARN, "step %llu: the loss %g is over 100 times the first step's "
                     "(%g): training is diverging (a lower learning rate, a warm-up or "
                     "--clip-norm may help)", (unsigned long long)st.step, st.loss, r->first_loss);
            r->warned = 1;
        }
        if (!st.skipped && r->first_loss == 0)
            r->first_loss = st.loss;
        if (!st.skipped)
            r->loss_sum += st.loss, r->updates++;
        r->steps++;
        int signal = 0; /* every rank stops at the same step, or none does */
        MPT_TRY_RETURN(mpt__trainer_agree_max(r->t, o->stop ? (int)*o->stop : 0, &signal));
        int last = st.step == total || signal;
        if (st.step % o->log_every == 0 || last)
            MPT_TRY_RETURN(fit_report(r, at.epoch));
        if (o->on_step) { /* the figures of the last report, at this step */
            mpt_step_report_t now = r->report;
            now.step = st.step, now.loss = st.loss;
            o->on_step(o->ctx, &now, at.epoch + 1, r->devices, r->ndevices);
        }
        int epoch_end = at.batch_index + 1 == per_epoch;
        mpt_data_position_t next = {epoch_end ? at.epoch + 1 : at.epoch,
                                    epoch_end ? 0 : at.batch_index + 1};
        /* A device failing in a checkpoint (the previous one is intact:
         * atomic writes) or an evaluation is recovered like one failing in
         * a step: the replay comes back here and does it again. */
        int saved = o->checkpoint && o->checkpoint_every && st.step % o->checkpoint_every == 0;
        if (saved) {
            r->el.after_step = "checkpoint";
            t0 = mpt__now();
            failed = mpt_trainer_save(r->t, o->checkpoint, &next);
            mpt__engine_host_span(r->t->eng, "checkpoint", t0);
        }
        if (failed == MPT_OK &&
            (epoch_end || last || (o->eval_every && st.step % o->eval_every == 0))) {
            r->el.after_step = "evaluation";
            t0 = mpt__now();
            failed = fit_evaluate(r, st.step, at.epoch, epoch_end || last, epoch_end, first_step);
            mpt__engine_host_span(r->t->eng, "evaluate", t0);
        }
        if (failed == MPT_OK && last && o->checkpoint && !saved) {
            r->el.after_step = "checkpoint";
            t0 = mpt__now();
            failed = mpt_trainer_save(r->t, o->checkpoint, &next);
            mpt__engine_host_span(r->t->eng, "checkpoint", t0);
        }
        if (failed < 0) {
            MPT_TRY_RETURN(fit_recover(r, failed, &step));
            step--;
            continue;
        }
        if (o->cluster && o->replan && o->rebalance_after && !last) {
            /* The first half of the warm-up compiles kernels and fills
             * caches: calibrate on the second half only. */
            if (st.step - first_step == o->rebalance_after / 2)
                mpt__trainer_reset_calibration(r->t);
            if (st.step - first_step == o->rebalance_after)
                MPT_TRY_RETURN(fit_rebalance(r, st.step));
        }
        if (signal)
            return mpt__fail(MPT_ERR_STOPPED, "stopped by signal %d at step %llu%s", signal,
                             (unsigned long long)st.step,
                             o->checkpoint ? ", checkpoint written: resume to continue" : "");
    }
    return MPT_OK;
}

/* The checkpoint's path before training: its directory must exist and be
 * writable, and a new run must not replace another run's checkpoint
 * unless told to. */
static int check_checkpoint_path(const mpt_fit_options_t *o)
{
    char dir[4096];
    struct stat st;
    snprintf(dir, sizeof dir, "%s", o->checkpoint);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return mpt__fail(MPT_ERR_IO, "checkpoint %s: %s is not a directory", o->checkpoint, dir);
    if (access(dir, W_OK | X_OK) != 0)
        return mpt__fail(MPT_ERR_IO, "checkpoint %s: cannot write in %s: %s", o->checkpoint,
                         dir, strerror(errno));
    if (stat(o->checkpoint, &st) == 0) {
        if (!S_ISREG(st.st_mode))
            return mpt__fail(MPT_ERR_IO, "checkpoint %s is not a regular file", o->checkpoint);
        if (!o->resume && !o->overwrite)
            return mpt__fail(MPT_ERR_EXISTS,
                             "checkpoint %s exists (another run's): resume it, or overwrite "
                             "it on purpose",
                             o->checkpoint);
    } else if (o->resume) {
        return mpt__fail(MPT_ERR_NOT_FOUND, "checkpoint %s: %s: nothing to resume",
                         o->checkpoint, strerror(errno));
    }
    return MPT_OK;
}

int mpt_trainer_fit(mpt_trainer_t *t, mpt_data_t *data, const mpt_fit_options_t *o)
{
    if (!t || !data || !o)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_fit: NULL argument");
    if (mpt_data_batch(data) != t->cfg.batch)
        return mpt__fail(MPT_ERR_INVALID,
                         "the data's batches hold %zu samples, the trainer's %zu: give both "
                         "one batch size",
                         mpt_data_batch(data), t->cfg.batch);
    if (o->resume && !o->checkpoint)
        return mpt__fail(MPT_ERR_INVALID, "resuming needs the checkpoint's path");
    if (o->log_every == 0)
        return mpt__fail(MPT_ERR_INVALID, "log_every is 0: at least one step per report");
    if (!(o->rebalance_margin > -1 && o->rebalance_margin < 1))
        return mpt__fail(MPT_ERR_INVALID, "rebalance_margin must be in (-1, 1), got %g",
                         o->rebalance_margin);
    uint64_t total = mpt_fit_total_steps(o, data);
    if (total == 0)
        return mpt__fail(MPT_ERR_INVALID, "a run of 0 steps (epochs and steps both 0)");
    /* What can be checked before the first step is: no run trains for
     * minutes and then fails on a path. */
    snprintf(t->data_id, sizeof t->data_id, "%s", mpt_data_identity(data));
    t->allow_other_data = o->allow_other_data;
    mpt_trainer_allow_nonfinite_checkpoint(t, o->allow_nonfinite_checkpoint);
    MPT_TRY_RETURN(mpt__trainer_agree_text(t, "data", t->data_id));
    if (o->checkpoint) {
        /* Rank 0 writes it (every rank reads it to resume): a failure there
         * fails every rank here, before any rank waits in a step. */
        int failed = t->rank == 0 || o->resume ? check_checkpoint_path(o) : MPT_OK, any = 0;
        MPT_TRY_RETURN(mpt__trainer_agree_max(t, failed < 0, &any));
        if (failed < 0)
            return failed;
        if (any)
            return mpt__fail(MPT_ERR_ABORTED, "checkpoint %s: another rank cannot use it (its "
                             "error says why)", o->checkpoint);
    }
    if (o->resume) {
        MPT_TRY_RETURN(fit_resume(t, data, o->checkpoint));
        uint64_t at = mpt_trainer_steps(t);
        if (total < at || (total == at && !o->allow_no_steps))
            return mpt__fail(MPT_ERR_INVALID,
                             "checkpoint %s is at step %llu: a run to step %llu has nothing "
                             "to train (give more steps or epochs)",
                             o->checkpoint, (unsigned long long)at, (unsigned long long)total);
    }

    fit_run r = {.t = t, .data = data, .o = o, .ndevices = mpt_trainer_device_count(t)};
    int status = MPT_OK;
    if (!(r.devices = calloc(r.ndevices, sizeof *r.devices))) {
        status = mpt__fail(MPT_ERR_NOMEM, "mpt_trainer_fit: out of memory");
        goto out;
    }
    if (o->metrics && t->rank == 0)
        MPT_TRY(mpt_metrics_open(o->metrics, o->resume, mpt_trainer_steps(t), &r.metrics));
    /* The window of the first report starts here, not at the trainer's
     * creation or the checkpoint's load. */
    mpt_step_report_t discard;
    MPT_TRY(mpt_trainer_report(t, &discard));
    MPT_TRY(mpt__elastic_begin(&r.el, t, o));
    status = fit_loop(&r, total);
out:;
    int closed = mpt_metrics_close(r.metrics);
    free(r.devices);
    return status < 0 ? status : closed;
}
