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
 * it) and uses those offsets; it
 * measures them again when the trace is written and records both in the
 * trace's otherData, so a drift over the run shows.  Left out: correcting
 * for that drift (a linear fit between the two); CLOCK_MONOTONIC of ranks
 * on one host is one clock, and across hosts it drifts by parts per
 * million, microseconds over a run of seconds.
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

/* Under a job: rank 0's estimate of every rank's clock (collective). */
static int clock_offsets(const mpt_trainer_t *t, double *offset, double *error)
{
    return mpt__world_clock_offsets(t->world, CLOCK_ROUNDS, offset, error);
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
    double *both = realloc(t->clock, 2 * n * sizeof *both);
    if (!both)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    t->clock = both;
    return clock_offsets(t, t->clock, t->clock + n);
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
 * start at 0. */
static int merge(const mpt_trainer_t *t, char **texts, char **places, const double *end_offset,
                 const double *end_error, char **out)
{
    size_t n = (size_t)t->nranks;
    double *shift = calloc(n, sizeof *shift), first = HUGE_VAL;
    char **names = calloc(n, sizeof *names);
    int status = MPT_OK;
    if (!shift || !names) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t r = 0; r < n; r++) {
        char *host = NULL;
        /* its start on rank 0's clock */
        shift[r] = strtod(places[r], &host) - t->clock[r];
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
        "{s:s,s:i,s:o,s:o,s:o,s:o}", "clock_alignment",
        "MPI ping-pong with rank 0 when tracing started: the shortest of clock_rounds round "
        "trips (up to 8 times as many while none was under 100 us); a rank's timestamps minus "
        "its clock_offset_s; error at most clock_error_s; the _end_ figures are the same "
        "estimate when the trace was written",
        "clock_rounds", CLOCK_ROUNDS, "clock_offset_s", numbers(t->clock, n), "clock_error_s",
        numbers(t->clock + n, n), "clock_offset_end_s", numbers(end_offset, n),
        "clock_error_end_s", numbers(end_error, n));
    status = mpt__trace_merge(texts, (int)n, shift, (const char *const *)names, other, out);
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
    double *end = calloc(2 * n, sizeof *end);
    if (!end)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    /* Every rank takes part in each collective, whatever failed before. */
    int failed = !t->clock ? mpt__fail(MPT_ERR_INVALID, "the trace was not started on every "
                                                        "rank (mpt_trainer_set_trace)")
                           : mpt_trainer_trace_json(t, &mine);
    mpt__world_host_name(host, sizeof host);
    snprintf(place, sizeof place, "%.9f %s", mpt__engine_trace_origin(t->eng), host);
    int status = clock_offsets(t, end, end + n);
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
        status = merge(t, texts, places, end, end + n, &merged);
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
