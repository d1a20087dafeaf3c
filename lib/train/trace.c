/*
 * train/trace.c: the trainer's Chrome trace (mpt_trainer_set_trace,
 * mpt_trainer_trace_json, mpt_trainer_write_trace).  In one process the
 * engine's trace is written as it is.  Under a job each rank records its
 * own devices, and the file is one trace that rank 0 writes, a process
 * per rank, every rank's timestamps moved onto rank 0's clock.
 *
 * Clock alignment: when tracing starts, rank 0 estimates each rank's
 * clock offset with MPI ping-pongs (the shortest of CLOCK_ROUNDS round
 * trips, more while none was under 100 us; the error bound is half of
 * it), and again when the trace is written.  A rank's offset is the line
 * through the two estimates when they differ by more than their bounds
 * (its clock drifts: parts per million across hosts, milliseconds over
 * an hour), else the first estimate (CLOCK_MONOTONIC of ranks on one host
 * is one clock).  Both estimates, their bounds and the drift used are in
 * the trace's otherData.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "trace/chrome.h"
#include "train/trainer.h"

#define CLOCK_ROUNDS 8

/* Under a job: rank 0's estimate of every rank's clock (collective):
 * per rank its offset, the bound and when it holds, in est (3 x ranks). */
static int clock_offsets(const mpt_trainer_t *t, double *est)
{
    size_t n = (size_t)t->nranks;
    return mpt__world_clock_offsets(t->world, CLOCK_ROUNDS, est, est + n, est + 2 * n);
}

static int in_job(const mpt_trainer_t *t)
{
    return t->world && t->nranks > 1;
}

int mpt_trainer_set_trace(mpt_trainer_t *t, int on)
{
    if (!t)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_set_trace: NULL argument");
    mpt__engine_set_tracing(t->eng, on);
    t->tracing = on;
    if (!on || !in_job(t))
        return MPT_OK;
    size_t n = (size_t)t->nranks;
    double *all = realloc(t->clock, 3 * n * sizeof *all);
    if (!all)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    t->clock = all;
    return clock_offsets(t, t->clock);
}

int mpt_trainer_trace_json(const mpt_trainer_t *t, char **json)
{
    return mpt__engine_trace_json(t->eng, json);
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    int bad = !f || fputs(text, f) < 0;
    if (f && fclose(f) != 0)
        bad = 1;
    return bad ? mpt__fail(MPT_ERR_IO, "cannot write trace %s: %s", path,
                           strerror(errno ? errno : EIO))
               : MPT_OK;
}

/* A JSON array of n doubles. */
static json_t *numbers(const double *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

/* Rank 0: the ranks' traces (texts[r]) and where each started ("origin
 * host" in places[r], on its own clock) onto rank 0's clock, the earliest
 * start at 0.  end holds the estimates made now (as t->clock those made
 * at the start).  Rank r's clock reads rank 0's plus o(t) = o0 + drift
 * (t - a0); its time u is rank 0's (u - o0 + drift a0) / (1 + drift): a
 * trace time x (from its origin) becomes shift + scale x. */
static int merge(const mpt_trainer_t *t, char **texts, char **places, const double *end,
                 char **out)
{
    size_t n = (size_t)t->nranks;
    const double *o0 = t->clock, *e0 = t->clock + n, *at0 = t->clock + 2 * n;
    const double *o1 = end, *e1 = end + n, *at1 = end + 2 * n;
    double first = HUGE_VAL;
    double *shift = calloc(3 * n, sizeof *shift), *scale = shift + n, *drift = shift + 2 * n;
    char **names = calloc(n, sizeof *names);
    int status = MPT_OK;
    if (!shift || !names) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t r = 0; r < n; r++) {
        char *host = NULL;
        double origin = strtod(places[r], &host);
        /* a drift the two estimates' bounds cannot explain */
        drift[r] = fabs(o1[r] - o0[r]) > e0[r] + e1[r] && at1[r] > at0[r]
                       ? (o1[r] - o0[r]) / (at1[r] - at0[r]) : 0;
        scale[r] = 1 / (1 + drift[r]);
        shift[r] = (origin - o0[r] + drift[r] * at0[r]) * scale[r]; /* its start, rank 0's */
        first = shift[r] < first ? shift[r] : first;
        size_t len = strlen(host) + 32;
        if (!(names[r] = malloc(len))) {
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        snprintf(names[r], len, "rank %zu%s%s", r, *host ? " on" : "", host);
    }
    for (size_t r = 0; r < n; r++)
        shift[r] -= first;
    json_t *other = json_pack(
        "{s:s,s:i,s:o,s:o,s:o,s:o,s:f,s:o}", "clock_alignment",
        "MPI ping-pong with rank 0 when tracing started and when the trace was written "
        "(_end_): the shortest of clock_rounds round trips (up to 8 times as many while none "
        "was under 100 us); a rank's clock runs clock_offset_s ahead of rank 0's, wrong by at "
        "most clock_error_s, plus clock_drift seconds per second since then (0 unless the two "
        "estimates differ by more than their bounds)",
        "clock_rounds", CLOCK_ROUNDS, "clock_offset_s", numbers(o0, n), "clock_error_s",
        numbers(e0, n), "clock_offset_end_s", numbers(o1, n), "clock_error_end_s",
        numbers(e1, n), "clock_estimates_apart_s", at1[n - 1] - at0[n - 1], "clock_drift",
        numbers(drift, n));
    status = mpt__trace_merge(texts, (int)n, shift, scale, (const char *const *)names, other,
                              out);
out:
    for (size_t r = 0; names && r < n; r++)
        free(names[r]);
    free(names);
    free(shift);
    return status;
}

/* Collective: every rank's trace to rank 0, which writes one file. */
static int write_merged(const mpt_trainer_t *t, const char *path)
{
    size_t n = (size_t)t->nranks;
    char *mine = NULL, *merged = NULL, **texts = NULL, **places = NULL, place[320], host[256];
    double *end = calloc(3 * n, sizeof *end);
    if (!end)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    /* Every rank takes part in each collective, whatever failed before. */
    int failed = !t->clock ? mpt__fail(MPT_ERR_INVALID, "the trace was not started on every "
                                                        "rank (mpt_trainer_set_trace)")
                           : mpt_trainer_trace_json(t, &mine);
    mpt__world_host_name(host, sizeof host);
    snprintf(place, sizeof place, "%.9f %s", mpt__engine_trace_origin(t->eng), host);
    int status = clock_offsets(t, end);
    if (status == MPT_OK)
        status = mpt__world_gather_texts(t->world, mine ? mine : "", &texts);
    if (status == MPT_OK)
        status = mpt__world_gather_texts(t->world, place, &places);
    int any = 0; /* a rank without its trace fails the file, named by its own error */
    if (status == MPT_OK)
        status = mpt__world_agree_max(t->world, failed < 0, t->comm_timeout_s, &any);
    if (status == MPT_OK && failed < 0)
        status = failed;
    else if (status == MPT_OK && any)
        status = mpt__fail(MPT_ERR_ABORTED, "trace %s: another rank has no trace (its error "
                           "says why)", path);
    if (status == MPT_OK && t->rank == 0)
        status = merge(t, texts, places, end, &merged);
    if (status == MPT_OK && t->rank == 0)
        status = write_file(path, merged);
    free(mine);
    free(merged);
    free(texts);
    free(places);
    free(end);
    return status;
}

int mpt_trainer_write_trace(const mpt_trainer_t *t, const char *path)
{
    if (!t || !path)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_write_trace: NULL argument");
    if (in_job(t))
        return write_merged(t, path);
    char *json = NULL;
    MPT_TRY_RETURN(mpt_trainer_trace_json(t, &json));
    int status = write_file(path, json);
    free(json);
    return status;
}

int mpt_trainer_write_predicted_trace(const mpt_trainer_t *t, const char *path)
{
    char *json = NULL;
    if (!t || !path)
        return mpt__fail(MPT_ERR_INVALID, "mpt_trainer_write_predicted_trace: NULL argument");
    if (!t->cluster)
        return mpt__fail(MPT_ERR_INVALID, "predicted trace %s: a trainer on one device without "
                         "a cluster has no prediction to draw", path);
    if (t->rank != 0)
        return MPT_OK;
    /* the plan it runs now (a rebalance may have moved it), on the cluster
     * as calibrated so far */
    MPT_TRY_RETURN(mpt_plan_simulate(t->plan, t->model, t->cluster, NULL, NULL, &json));
    int status = write_file(path, json);
    free(json);
    return status;
}
