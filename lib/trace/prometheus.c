/*
 * trace/prometheus.c: the figures of mpt_trainer_fit's reports in the
 * Prometheus text exposition format 0.0.4 (mpt_prometheus_* of mpt.h):
 * gauges for what a step is (loss, rate, busy fraction, memory), counters
 * for what steps add up to (steps, all-reduce seconds and bytes).
 *
 * Every metric is one row of a table below (name, type, help, where its
 * value is): a new field of mpt_step_report_t or mpt_device_step_t is one
 * more row.  Names follow Prometheus's conventions: the mpt_ prefix, base
 * units (seconds, bytes, ratio) in the name, _total on counters.
 *
 * Device metrics carry the labels device (the plan's id, unique in a job),
 * rank, replica, stage and member.  Left out: the HTTP server
 * (prometheus_http.c).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace/prometheus.h"

/* Where a metric's value is: a field of a struct by kind, or a function. */
typedef enum { F_DOUBLE, F_U64, F_SIZE, F_ULONG } field_kind;

typedef struct {
    const char *name, *type, *help;
    field_kind kind;
    size_t offset;                      /* in the struct, when get is NULL */
    double (*get)(const void *, const void *); /* (the struct, its totals or NULL) */
} metric;

static double field_value(const metric *m, const void *base)
{
    const char *p = (const char *)base + m->offset;
    switch (m->kind) {
    case F_DOUBLE: return *(const double *)p;
    case F_U64: return (double)*(const uint64_t *)p;
    case F_SIZE: return (double)*(const size_t *)p;
    case F_ULONG: return (double)*(const unsigned long *)p;
    }
    return NAN;
}

static double value_of(const metric *m, const void *base, const void *totals)
{
    return m->get ? m->get(base, totals) : field_value(m, base);
}

/* ---- the run's metrics (mpt_step_report_t) ------------------------------ */

#define REPORT(n, t, field, k, h) {n, t, h, k, offsetof(mpt_step_report_t, field), NULL}

/* Zero means "unknown" for these two: no sample rather than a false 0. */
static double report_total_steps(const void *r, const void *unused)
{
    (void)unused;
    uint64_t n = ((const mpt_step_report_t *)r)->total_steps;
    return n ? (double)n : NAN;
}

static double report_tokens(const void *r, const void *unused)
{
    (void)unused;
    double v = ((const mpt_step_report_t *)r)->tokens_per_s;
    return v > 0 ? v : NAN;
}

static const metric report_metrics[] = {
    REPORT("mpt_steps_total", "counter", step, F_U64, "Training steps done."),
    {"mpt_total_steps", "gauge", "Steps the run trains to.", F_U64, 0, report_total_steps},
    REPORT("mpt_loss", "gauge", loss, F_DOUBLE, "Training loss of the last step."),
    REPORT("mpt_learning_rate", "gauge", lr, F_DOUBLE, "Learning rate of the last step."),
    REPORT("mpt_grad_norm", "gauge", grad_norm, F_DOUBLE,
           "Gradient norm of the last step (with clipping or --on-nonfinite skip)."),
    REPORT("mpt_skipped_steps_total", "counter", skipped_steps, F_U64,
           "Steps that applied no update: their loss or gradient norm was not finite."),
    REPORT("mpt_samples_per_second", "gauge", samples_per_s, F_DOUBLE,
           "Training samples per second over the last report's window."),
    {"mpt_tokens_per_second", "gauge", "Tokens per second (language models).", F_DOUBLE, 0,
     report_tokens},
    REPORT("mpt_step_seconds", "gauge", step_s, F_DOUBLE,
           "Mean wall time of a step over the last report's window."),
    REPORT("mpt_predicted_step_seconds", "gauge", predicted_step_s, F_DOUBLE,
           "The cost model's step for the plan (calibrated once calibration ran)."),
    REPORT("mpt_busy_ratio", "gauge", device_busy, F_DOUBLE,
           "Mean fraction of the window the job's devices ran kernels (timing on)."),
    REPORT("mpt_blas_busy_ratio", "gauge", blas_busy, F_DOUBLE,
           "Of which in BLAS routines (GEMMs)."),
    REPORT("mpt_eta_seconds", "gauge", eta_s, F_DOUBLE,
           "Time to the last step at the window's rate."),
};

/* ---- per device (mpt_device_step_t, and its running totals) ------------- */

#define DEVICE(n, t, field, k, h) {n, t, h, k, offsetof(mpt_device_step_t, field), NULL}
#define TOTAL(n, field, h) {n, "counter", h, F_DOUBLE, 0, total_##field}
#define TOTAL_GETTER(field)                                                                   \
    static double total_##field(const void *d, const void *t)                                \
    {                                                                                          \
        (void)d;                                                                               \
        return ((const mpt__prom_totals_t *)t)->field;                                         \
    }
TOTAL_GETTER(allreduce_s)
TOTAL_GETTER(allreduce_bytes)
TOTAL_GETTER(tp_s)
TOTAL_GETTER(tp_bytes)
TOTAL_GETTER(peer_wait_s)
TOTAL_GETTER(transfer_s)
TOTAL_GETTER(allreduce_wait_s)
TOTAL_GETTER(allreduce_transfer_s)

/* Launch counts are known for the devices whose busy fraction is known
 * (every rank's, gathered; NaN otherwise, as mpt_metrics_step leaves them
 * out). */
static double device_kernels(const void *d, const void *t)
{
    (void)t;
    const mpt_device_step_t *dev = d;
    return isnan(dev->busy) ? NAN : (double)dev->kernels;
}

static double device_blas_calls(const void *d, const void *t)
{
    (void)t;
    const mpt_device_step_t *dev = d;
    return isnan(dev->busy) ? NAN : (double)dev->blas_calls;
}

/* Rates in base units (per second), from the struct's 1e9 units; zero
 * capacity and predicted memory mean unknown. */
#define GIGA_GETTER(field)                                                                    \
    static double giga_##field(const void *d, const void *t)                                 \
    {                                                                                          \
        (void)t;                                                                               \
        return ((const mpt_device_step_t *)d)->field * 1e9;                                    \
    }
GIGA_GETTER(gflops)
GIGA_GETTER(profile_gflops)
GIGA_GETTER(mem_gbps)
GIGA_GETTER(profile_mem_gbps)

static double device_capacity(const void *d, const void *t)
{
    (void)t;
    uint64_t v = ((const mpt_device_step_t *)d)->memory_capacity_bytes;
    return v ? (double)v : NAN;
}

static double device_predicted_memory(const void *d, const void *t)
{
    (void)t;
    double v = ((const mpt_device_step_t *)d)->predicted_memory_bytes;
    return v > 0 ? v : NAN;
}

static const metric device_metrics[] = {
    DEVICE("mpt_device_busy_ratio", "gauge", busy, F_DOUBLE,
           "Fraction of the last report's window the device ran kernels."),
    DEVICE("mpt_device_memory_bytes", "gauge", memory_bytes, F_SIZE,
           "Device memory its stage holds."),
    DEVICE("mpt_device_peak_memory_bytes", "gauge", peak_memory_bytes, F_SIZE,
           "The most device memory mpt held at once on the device since the trainer was made."),
    {"mpt_device_predicted_memory_bytes", "gauge", "What the plan predicted the device holds.",
     F_DOUBLE, 0, device_predicted_memory},
    {"mpt_device_memory_capacity_bytes", "gauge",
     "Device memory mpt may use: its global memory or the cap set on it.", F_DOUBLE, 0,
     device_capacity},
    {"mpt_device_flops_per_second", "gauge",
     "Achieved: the cost model's FLOPs of its steps in the window over its kernel time.",
     F_DOUBLE, 0, giga_gflops},
    {"mpt_device_profile_flops_per_second", "gauge",
     "Its profile's best GEMM rate (what large GEMMs reach).", F_DOUBLE, 0,
     giga_profile_gflops},
    {"mpt_device_memory_bandwidth_bytes_per_second", "gauge",
     "Achieved: the cost model's device-memory bytes of its steps over its kernel time.",
     F_DOUBLE, 0, giga_mem_gbps},
    {"mpt_device_profile_memory_bandwidth_bytes_per_second", "gauge",
     "Its profile's memory bandwidth (copy kernel).", F_DOUBLE, 0, giga_profile_mem_gbps},
    DEVICE("mpt_device_step_seconds", "gauge", step_s, F_DOUBLE,
           "Wall time of the device's part of the last step."),
    {"mpt_device_kernel_launches", "gauge", "mpt kernels the device launched in the last step.",
     F_DOUBLE, 0, device_kernels},
    {"mpt_device_blas_calls", "gauge", "BLAS routines the device ran in the last step.",
     F_DOUBLE, 0, device_blas_calls},
    DEVICE("mpt_device_forward_seconds", "gauge", forward_s, F_DOUBLE,
           "Its forward passes in the last step, waits for activations excluded."),
    DEVICE("mpt_device_backward_seconds", "gauge", backward_s, F_DOUBLE,
           "Its backward passes in the last step, waits for gradients excluded."),
    DEVICE("mpt_device_p2p_seconds", "gauge", p2p_s, F_DOUBLE,
           "Waiting for and sending activations and gradients in the last step."),
    DEVICE("mpt_device_reduce_wait_seconds", "gauge", reduce_wait_s, F_DOUBLE,
           "After its backward, waiting for its all-reduces in the last step."),
    DEVICE("mpt_device_update_seconds", "gauge", update_s, F_DOUBLE,
           "Clipping, the optimizer update and reading the losses in the last step."),
    DEVICE("mpt_device_allreduce_seconds", "gauge", allreduce_s, F_DOUBLE,
           "Wall time of the device's gradient all-reduces in the last step."),
    DEVICE("mpt_device_allreduce_wait_seconds", "gauge", allreduce_wait_s, F_DOUBLE,
           "Of its all-reduces in the last step, blocked before the peers' messages came."),
    DEVICE("mpt_device_allreduce_transfer_seconds", "gauge", allreduce_transfer_s, F_DOUBLE,
           "Of its all-reduces in the last step, moving bytes once the peers' messages came."),
    DEVICE("mpt_device_peer_wait_seconds", "gauge", peer_wait_s, F_DOUBLE,
           "Its worker blocked before a peer's side of a message came, in the last step."),
    DEVICE("mpt_device_transfer_seconds", "gauge", transfer_s, F_DOUBLE,
           "Its worker moving message bytes once the peer's side came, in the last step."),
    TOTAL("mpt_device_allreduce_seconds_total", allreduce_s,
          "Wall time of the device's gradient all-reduces, summed over steps."),
    TOTAL("mpt_device_allreduce_bytes_total", allreduce_bytes,
          "Bytes the device all-reduced, summed over steps."),
    TOTAL("mpt_device_tp_comm_seconds_total", tp_s,
          "Wall time of the device's tensor-parallel collectives, summed over steps."),
    TOTAL("mpt_device_tp_comm_bytes_total", tp_bytes,
          "Bytes its tensor-parallel collectives moved, summed over steps."),
    TOTAL("mpt_device_peer_wait_seconds_total", peer_wait_s,
          "Its worker blocked before a peer's side of a message came, summed over steps."),
    TOTAL("mpt_device_transfer_seconds_total", transfer_s,
          "Its worker moving message bytes once the peer's side came, summed over steps."),
    TOTAL("mpt_device_allreduce_wait_seconds_total", allreduce_wait_s,
          "Of its all-reduces, blocked before the peers' messages came, summed over steps."),
    TOTAL("mpt_device_allreduce_transfer_seconds_total", allreduce_transfer_s,
          "Of its all-reduces, moving bytes once the peers' messages came, summed over steps."),
};

#define COUNT(a) (sizeof(a) / sizeof *(a))

/* Help text in the format's escaping: backslash and newline. */
static void put_help(FILE *f, const metric *m)
{
    fprintf(f, "# HELP %s ", m->name);
    for (const char *c = m->help; *c; c++)
        if (*c == '\\')
            fputs("\\\\", f);
        else if (*c == '\n')
            fputs("\\n", f);
        else
            fputc(*c, f);
    fprintf(f, "\n# TYPE %s %s\n", m->name, m->type);
}

/* A value as the format writes floats: %.17g round-trips a double. */
static void put_value(FILE *f, double v)
{
    fprintf(f, " %.17g\n", v);
}

static void put_report(FILE *f, const mpt_prometheus_t *s)
{
    fprintf(f, "# HELP mpt_epoch The epoch the last step belongs to (1-based).\n"
               "# TYPE mpt_epoch gauge\nmpt_epoch %llu\n",
            (unsigned long long)s->epoch);
    for (size_t k = 0; k < COUNT(report_metrics); k++) {
        const metric *m = &report_metrics[k];
        double v = value_of(m, &s->report, NULL);
        if (!isfinite(v)) /* unknown (timing off, no clipping): no sample */
            continue;
        put_help(f, m);
        fputs(m->name, f);
        put_value(f, v);
    }
}

static void put_devices(FILE *f, const mpt_prometheus_t *s)
{
    for (size_t k = 0; k < COUNT(device_metrics); k++) {
        const metric *m = &device_metrics[k];
        int header = 0;
        for (size_t i = 0; i < s->ndevices; i++) {
            const mpt_device_step_t *d = &s->devices[i];
            double v = value_of(m, d, &s->totals[i]);
            if (!isfinite(v))
                continue;
            if (!header++)
                put_help(f, m);
            fprintf(f, "%s{device=\"%d\",rank=\"%d\",replica=\"%d\",stage=\"%d\",member=\"%d\"}",
                    m->name, d->device, d->rank, d->replica, d->stage, d->member);
            put_value(f, v);
        }
    }
}

int mpt__prometheus_render(const mpt_prometheus_t *s, char **text)
{
    size_t len = 0;
    FILE *f = open_memstream(text, &len);
    if (!f)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory rendering the metrics");
    fprintf(f, "# HELP mpt_info The mpt library serving these metrics.\n"
               "# TYPE mpt_info gauge\nmpt_info{version=\"%s\"} 1\n",
            mpt_version());
    if (s->have_report) {
        put_report(f, s);
        put_devices(f, s);
    }
    if (ferror(f) | (fclose(f) != 0)) {
        free(*text);
        *text = NULL;
        return mpt__fail(MPT_ERR_NOMEM, "out of memory rendering the metrics");
    }
    return MPT_OK;
}

int mpt_prometheus_create(mpt_prometheus_t **out)
{
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_prometheus_create: NULL argument");
    mpt_prometheus_t *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!s)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s);
        return mpt__fail(MPT_ERR_NOMEM, "cannot create the metrics lock");
    }
    s->port = -1;
    *out = s;
    return MPT_OK;
}

int mpt_prometheus_start(int port, const char *bind_address, mpt_prometheus_t **out)
{
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_prometheus_start: NULL argument");
    if (port < 0 || port > 65535)
        return mpt__fail(MPT_ERR_RANGE, "metrics port %d: not in 0..65535", port);
    MPT_TRY_RETURN(mpt_prometheus_create(out));
    int status = mpt__prometheus_listen(*out, port, bind_address ? bind_address : "127.0.0.1");
    if (status < 0) {
        mpt_prometheus_stop(*out);
        *out = NULL;
    }
    return status;
}

/* A device's totals grow by what its last measured step did, once per step
 * since the previous update: exact when every step is reported (log_every
 * 1), the last report's step repeated otherwise. */
static void add_step(mpt__prom_totals_t *t, const mpt_device_step_t *d, double steps)
{
    if (isfinite(d->allreduce_s))
        t->allreduce_s += d->allreduce_s * steps;
    t->allreduce_bytes += (double)d->allreduce_bytes * steps;
    if (isfinite(d->tp_s))
        t->tp_s += d->tp_s * steps;
    t->tp_bytes += (double)d->tp_bytes * steps;
    if (isfinite(d->peer_wait_s))
        t->peer_wait_s += d->peer_wait_s * steps;
    if (isfinite(d->transfer_s))
        t->transfer_s += d->transfer_s * steps;
    if (isfinite(d->allreduce_wait_s))
        t->allreduce_wait_s += d->allreduce_wait_s * steps;
    if (isfinite(d->allreduce_transfer_s))
        t->allreduce_transfer_s += d->allreduce_transfer_s * steps;
}

int mpt_prometheus_update(mpt_prometheus_t *s, const mpt_step_report_t *report, uint64_t epoch,
                          const mpt_device_step_t *devices, size_t ndevices)
{
    if (!s || !report || (ndevices && !devices))
        return mpt__fail(MPT_ERR_INVALID, "mpt_prometheus_update: NULL argument");
    int status = MPT_OK;
    pthread_mutex_lock(&s->lock);
    /* Another device set (a re-plan) or a step back (another run through
     * the same server): the totals start again, as a restarted exporter's. */
    int restart = ndevices != s->ndevices || !s->have_report || report->step < s->report.step;
    if (restart && (ndevices != s->ndevices || !s->totals)) {
        mpt_device_step_t *d = realloc(s->devices, (ndevices ? ndevices : 1) * sizeof *d);
        if (d)
            s->devices = d;
        mpt__prom_totals_t *t = realloc(s->totals, (ndevices ? ndevices : 1) * sizeof *t);
        if (t)
            s->totals = t;
        if (!d || !t) {
            s->ndevices = 0, s->have_report = 0;
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory updating the metrics");
            goto out;
        }
    }
    if (restart)
        memset(s->totals, 0, (ndevices ? ndevices : 1) * sizeof *s->totals);
    /* The first update after a (re)start counts its own step only: a
     * resumed run's earlier steps were another process's. */
    double steps = restart ? 1.0 : (double)(report->step - s->report.step);
    for (size_t i = 0; i < ndevices; i++)
        add_step(&s->totals[i], &devices[i], steps);
    if (ndevices)
        memcpy(s->devices, devices, ndevices * sizeof *devices);
    s->ndevices = ndevices;
    s->report = *report;
    s->epoch = epoch;
    s->have_report = 1;
out:
    pthread_mutex_unlock(&s->lock);
    return status;
}

int mpt_prometheus_text(mpt_prometheus_t *s, char **text)
{
    if (!s || !text)
        return mpt__fail(MPT_ERR_INVALID, "mpt_prometheus_text: NULL argument");
    pthread_mutex_lock(&s->lock);
    int status = mpt__prometheus_render(s, text);
    pthread_mutex_unlock(&s->lock);
    return status;
}

int mpt_prometheus_port(const mpt_prometheus_t *s)
{
    return s ? s->port : -1;
}

void mpt_prometheus_stop(mpt_prometheus_t *s)
{
    if (!s)
        return;
    mpt__prometheus_unlisten(s); /* no request is served after this */
    pthread_mutex_destroy(&s->lock);
    free(s->devices);
    free(s->totals);
    free(s);
}
