/*
 * trace/metrics.c: the JSON Lines metrics file of mpt.h (mpt_metrics_*).
 * Lines are printed by hand in a fixed key order, so that a line reads the
 * same in every run and tools may grep it; every write is checked and each
 * line flushed, so that a killed run keeps every line it logged.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "trace/metrics.h"

struct mpt_metrics {
    FILE *f;
    char *path;
    int failed; /* a write failed: reported once, by the call that saw it */
};

/* Keeps the lines of steps up to `step` (temporary file, rename): the
 * resumed (or recovered) run logs the later ones again.  Lines of any
 * length (getline); a last line without its newline is what a killed
 * writer left half written, and goes too. */
static int drop_after(const char *path, uint64_t step)
{
    char tmp[4096], *line = NULL;
    size_t cap = 0;
    ssize_t len;
    FILE *in = fopen(path, "r"), *out;
    int status = MPT_OK, bad = 0;
    if (!in)
        return errno == ENOENT ? MPT_OK /* nothing logged yet */
                               : mpt__fail(MPT_ERR_IO, "metrics file %s: %s", path,
                                           strerror(errno));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (!(out = fopen(tmp, "w"))) {
        fclose(in);
        return mpt__fail(MPT_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    }
    errno = 0;
    while (!bad && (len = getline(&line, &cap, in)) > 0) {
        unsigned long long s = 0;
        if (line[len - 1] != '\n')
            break;
        if (sscanf(line, "{\"step\": %llu", &s) == 1 && s > step)
            continue;
        bad = fputs(line, out) < 0;
    }
    free(line);
    bad |= ferror(in) || ferror(out);
    fclose(in);
    if (fclose(out) != 0 || bad || rename(tmp, path) != 0) {
        status = mpt__fail(MPT_ERR_IO, "cannot rewrite metrics file %s: %s", path,
                           strerror(errno ? errno : EIO));
        remove(tmp);
    }
    return status;
}

int mpt_metrics_open(const char *path, int resume, uint64_t resume_step, mpt_metrics_t **out)
{
    int status;
    if (!path || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_metrics_open: NULL argument");
    *out = NULL;
    if (resume && (status = drop_after(path, resume_step)) < 0)
        return status;
    mpt_metrics_t *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    if (!(m->f = fopen(path, resume ? "a" : "w"))) {
        status = mpt__fail(MPT_ERR_IO, "cannot write metrics file %s: %s", path, strerror(errno));
        free(m->path);
        free(m);
        return status;
    }
    *out = m;
    return MPT_OK;
}

int mpt__metrics_drop_after(mpt_metrics_t *m, uint64_t step)
{
    if (fflush(m->f) != 0)
        return mpt__fail(MPT_ERR_IO, "writing metrics file %s: %s", m->path, strerror(errno));
    MPT_TRY_RETURN(drop_after(m->path, step));
    /* The rename left m->f on the old file: append to the new one. */
    FILE *f = fopen(m->path, "a");
    if (!f)
        return mpt__fail(MPT_ERR_IO, "cannot write metrics file %s: %s", m->path,
                         strerror(errno));
    fclose(m->f);
    m->f = f;
    return MPT_OK;
}

/* ", "key": value" with the format, or null: JSON has no NaN or infinity. */
static void put_number(FILE *f, const char *key, const char *fmt, double v)
{
    fprintf(f, ", \"%s\": ", key);
    if (isfinite(v))
        fprintf(f, fmt, v);
    else
        fputs("null", f);
}

/* The line is done: flushed, and its write checked. */
static int end_line(mpt_metrics_t *m)
{
    fputs("}\n", m->f);
    if (fflush(m->f) != 0 || ferror(m->f)) {
        int err = errno ? errno : EIO;
        m->failed = 1;
        return mpt__fail(MPT_ERR_IO, "writing metrics file %s: %s", m->path, strerror(err));
    }
    return MPT_OK;
}

static void put_devices(FILE *f, const mpt_device_step_t *devices, size_t n)
{
    size_t replicas = 1;
    for (size_t i = 0; i < n; i++)
        if ((size_t)devices[i].replica + 1 > replicas)
            replicas = (size_t)devices[i].replica + 1;
    fputs(", \"devices\": [", f);
    for (size_t i = 0; i < n; i++) {
        const mpt_device_step_t *d = &devices[i];
        fprintf(f, "%s{\"device\": %d, \"rank\": %d, \"replica\": %d, \"stage\": %d, "
                   "\"member\": %d",
                i ? ", " : "", d->device, d->rank, d->replica, d->stage, d->member);
        put_number(f, "busy", "%.4f", d->busy);
        if (!isnan(d->busy)) /* its kernel time is known: so are its launches */
            fprintf(f, ", \"kernels\": %lu, \"blas_calls\": %lu", d->kernels, d->blas_calls);
        /* achieved against the profile's */
        put_number(f, "gflops", "%.3f", d->gflops);
        put_number(f, "profile_gflops", "%.3f", d->profile_gflops);
        put_number(f, "mem_gbps", "%.3f", d->mem_gbps);
        put_number(f, "profile_mem_gbps", "%.3f", d->profile_mem_gbps);
        fprintf(f, ", \"memory_bytes\": %zu", d->memory_bytes);
        fprintf(f, ", \"peak_memory_bytes\": %zu", d->peak_memory_bytes);
        put_number(f, "predicted_memory_bytes", "%.0f", d->predicted_memory_bytes);
        put_number(f, "memory_capacity_bytes", "%.0f",
                   d->memory_capacity_bytes ? (double)d->memory_capacity_bytes : NAN);
        put_number(f, "allreduce_s", "%.6f", d->allreduce_s);
        double busbw = d->allreduce_s > 0 ? (double)d->allreduce_bytes / d->allreduce_s * 2.0 *
                                                (double)(replicas - 1) / (double)replicas * 1e-9
                                          : 0;
        put_number(f, "allreduce_busbw_gbps", "%.3f", busbw);
        put_number(f, "allreduce_wait_s", "%.6f", d->allreduce_wait_s);
        put_number(f, "allreduce_transfer_s", "%.6f", d->allreduce_transfer_s);
        put_number(f, "tp_comm_s", "%.6f", d->tp_s);
        fprintf(f, ", \"tp_comm_bytes\": %zu", d->tp_bytes);
        /* the last step's phases (what calibration compares) */
        put_number(f, "step_s", "%.6f", d->step_s);
        put_number(f, "forward_s", "%.6f", d->forward_s);
        put_number(f, "backward_s", "%.6f", d->backward_s);
        put_number(f, "p2p_s", "%.6f", d->p2p_s);
        /* its blocked time split: the peer not there yet, bytes moving */
        put_number(f, "peer_wait_s", "%.6f", d->peer_wait_s);
        put_number(f, "transfer_s", "%.6f", d->transfer_s);
        put_number(f, "reduce_wait_s", "%.6f", d->reduce_wait_s);
        put_number(f, "update_s", "%.6f", d->update_s);
        fputs("}", f);
    }
    fputs("]", f);
}

int mpt_metrics_step(mpt_metrics_t *m, const mpt_step_report_t *r, uint64_t epoch,
                     const mpt_device_step_t *devices, size_t ndevices)
{
    FILE *f = m->f;
    fprintf(f, "{\"step\": %" PRIu64 ", \"epoch\": %" PRIu64, r->step, epoch);
    put_number(f, "loss", "%.9g", r->loss);
    put_number(f, "lr", "%.9g", r->lr);
    put_number(f, "samples_per_s", "%.1f", r->samples_per_s);
    /* measured and predicted step, every line (null: no prediction) */
    put_number(f, "step_s", "%.6f", r->step_s);
    put_number(f, "predicted_step_s", "%.6f", r->predicted_step_s);
    if (r->tokens_per_s > 0)
        put_number(f, "tokens_per_s", "%.1f", r->tokens_per_s);
    if (!isnan(r->grad_norm))
        put_number(f, "grad_norm", "%.6g", r->grad_norm);
    if (r->skipped) /* the last step applied no update (a non-finite loss or norm) */
        fputs(", \"skipped\": \"nonfinite\"", f);
    if (r->skipped_steps)
        fprintf(f, ", \"skipped_steps\": %" PRIu64, r->skipped_steps);
    if (!isnan(r->device_busy)) {
        put_number(f, "device_busy", "%.4f", r->device_busy);
        put_number(f, "blas_busy", "%.4f", r->blas_busy);
    }
    if (ndevices)
        put_devices(f, devices, ndevices);
    return end_line(m);
}

/* A JSON string of s (plan summaries hold no quote or backslash, but
 * the line must stay JSON whatever they hold). */
static void put_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        if ((unsigned char)*s >= 0x20)
            fputc(*s, f);
    }
    fputc('"', f);
}

int mpt_metrics_replan(mpt_metrics_t *m, uint64_t step, const char *old_plan, double old_step_s,
                       const char *new_plan, double new_step_s, int moved)
{
    FILE *f = m->f;
    fprintf(f, "{\"step\": %" PRIu64 ", \"replan\": {\"old\": ", step);
    put_string(f, old_plan);
    fputs(", \"new\": ", f);
    put_string(f, new_plan);
    put_number(f, "old_predicted_step_s", "%.6f", old_step_s);
    put_number(f, "new_predicted_step_s", "%.6f", new_step_s);
    fprintf(f, ", \"moved\": %s}", moved ? "true" : "false");
    return end_line(m);
}

int mpt_metrics_recovered(mpt_metrics_t *m, uint64_t step, int device, const char *reason,
                          const char *plan, uint64_t replayed, double seconds_lost)
{
    FILE *f = m->f;
    fprintf(f, "{\"step\": %" PRIu64 ", \"recovered\": {\"device\": %d, \"reason\": ", step,
            device);
    put_string(f, reason);
    fputs(", \"plan\": ", f);
    put_string(f, plan);
    fprintf(f, ", \"replayed\": %" PRIu64, replayed);
    put_number(f, "seconds_lost", "%.3f", seconds_lost);
    fputc('}', f);
    return end_line(m);
}

int mpt_metrics_eval(mpt_metrics_t *m, uint64_t step, uint64_t epoch, const char *name,
                     double loss, double accuracy)
{
    char key[64];
    fprintf(m->f, "{\"step\": %" PRIu64 ", \"epoch\": %" PRIu64, step, epoch);
    snprintf(key, sizeof key, "%s_loss", name);
    put_number(m->f, key, "%.6f", loss);
    snprintf(key, sizeof key, "%s_accuracy", name);
    put_number(m->f, key, "%.6f", accuracy);
    return end_line(m);
}

int mpt_metrics_close(mpt_metrics_t *m)
{
    int status = MPT_OK;
    if (!m)
        return MPT_OK;
    if (fclose(m->f) != 0 && !m->failed)
        status = mpt__fail(MPT_ERR_IO, "writing metrics file %s: %s", m->path,
                           strerror(errno ? errno : EIO));
    free(m->path);
    free(m);
    return status;
}
