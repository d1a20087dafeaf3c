/*
 * trace/chrome.c: see chrome.h.
 */
#include <stdlib.h>

#include "core/internal.h"
#include "trace/chrome.h"

struct mpt__trace {
    json_t *root, *events;
    double origin;
    int failed; /* an event could not be made: the trace is incomplete */
};

void mpt__spans_add(mpt__spans_t *s, const char *name, int mb, double t0, double t1)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        mpt__span_t *grown = realloc(s->v, cap * sizeof *grown);
        if (!grown)
            return;
        s->v = grown, s->cap = cap;
    }
    s->v[s->n++] = (mpt__span_t){name, mb, t0, t1};
}

void mpt__spans_clear(mpt__spans_t *s)
{
    s->n = 0;
}

void mpt__spans_free(mpt__spans_t *s)
{
    free(s->v);
    *s = (mpt__spans_t){0};
}

int mpt__trace_new(double origin_s, mpt__trace_t **out)
{
    mpt__trace_t *t = calloc(1, sizeof *t);
    *out = NULL;
    if (!t || !(t->root = json_object()) || !(t->events = json_array()) ||
        json_object_set(t->root, "traceEvents", t->events) < 0 ||
        json_object_set_new(t->root, "displayTimeUnit", json_string("ms")) < 0) {
        mpt__trace_free(t);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory starting a trace");
    }
    t->origin = origin_s;
    *out = t;
    return MPT_OK;
}

void mpt__trace_free(mpt__trace_t *t)
{
    if (!t)
        return;
    json_decref(t->events);
    json_decref(t->root);
    free(t);
}

static int append(mpt__trace_t *t, json_t *event)
{
    if (!event || json_array_append_new(t->events, event) < 0) {
        t->failed = 1;
        return mpt__fail(MPT_ERR_NOMEM, "out of memory writing a trace");
    }
    return MPT_OK;
}

int mpt__trace_track(mpt__trace_t *t, int pid, int tid, const char *process_name,
                     const char *track_name)
{
    int status = MPT_OK;
    if (process_name)
        status = append(t, json_pack("{s:s,s:s,s:i,s:i,s:{s:s}}", "name", "process_name", "ph",
                                     "M", "pid", pid, "tid", 0, "args", "name", process_name));
    if (status == MPT_OK)
        status = append(t, json_pack("{s:s,s:s,s:i,s:i,s:{s:s}}", "name", "thread_name", "ph",
                                     "M", "pid", pid, "tid", tid, "args", "name", track_name));
    return status;
}

int mpt__trace_span(mpt__trace_t *t, int pid, int tid, const char *name, const char *cat,
                    double t0, double t1, json_t *args)
{
    /* dur as the difference of the scaled ends keeps ts + dur on the next
     * span's ts, so that back-to-back work does not seem to overlap. */
    double ts = (t0 - t->origin) * 1e6, end = (t1 - t->origin) * 1e6;
    json_t *ev = json_pack("{s:s,s:s,s:s,s:f,s:f,s:i,s:i}", "name", name, "cat", cat, "ph", "X",
                           "ts", ts, "dur", end - ts, "pid", pid, "tid", tid);
    if (ev && args && json_object_set_new(ev, "args", args) < 0) {
        json_decref(ev);
        ev = NULL;
    } else if (!ev) {
        json_decref(args);
    }
    return append(t, ev);
}

int mpt__trace_spans(mpt__trace_t *t, int pid, int tid, const char *cat, const mpt__spans_t *s)
{
    int status = MPT_OK;
    for (size_t k = 0; k < s->n && status == MPT_OK; k++) {
        const mpt__span_t *sp = &s->v[k];
        status = mpt__trace_span(t, pid, tid, sp->name, cat, sp->t0, sp->t1,
                                 sp->mb >= 0 ? json_pack("{s:i}", "microbatch", sp->mb) : NULL);
    }
    return status;
}

int mpt__trace_dump(const mpt__trace_t *t, char **text)
{
    *text = NULL;
    if (t->failed)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory writing a trace");
    if (!(*text = json_dumps(t->root, JSON_COMPACT)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory writing a trace");
    return MPT_OK;
}

/* Rank r's events (pid 0) on pid r, their times t become shift + scale t. */
static int merge_one(json_t *into, const char *text, int r, double shift_us, double scale,
                     const char *name)
{
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr), *ev;
    json_t *events = root ? json_object_get(root, "traceEvents") : NULL;
    size_t k;
    int status = MPT_OK;
    if (!json_is_array(events)) {
        json_decref(root);
        return mpt__fail(MPT_ERR_PARSE, "rank %d's trace: %s", r,
                         root ? "no traceEvents array" : jerr.text);
    }
    json_t *named = json_pack("{s:s,s:s,s:i,s:i,s:{s:s}}", "name", "process_name", "ph", "M",
                              "pid", r, "tid", 0, "args", "name", name);
    json_t *order = json_pack("{s:s,s:s,s:i,s:i,s:{s:i}}", "name", "process_sort_index", "ph",
                              "M", "pid", r, "tid", 0, "args", "sort_index", r);
    int failed = json_array_append_new(into, named) < 0; /* steals even on failure */
    if (json_array_append_new(into, order) < 0 || failed)
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory merging traces");
    json_array_foreach(events, k, ev) {
        json_t *ts = json_object_get(ev, "ts"), *dur = json_object_get(ev, "dur");
        if (status < 0)
            break;
        if (json_object_set_new(ev, "pid", json_integer(r)) < 0 ||
            (json_is_number(ts) &&
             json_object_set_new(ev, "ts",
                                 json_real(shift_us + scale * json_number_value(ts))) < 0) ||
            (json_is_number(dur) &&
             json_object_set_new(ev, "dur", json_real(scale * json_number_value(dur))) < 0) ||
            json_array_append(into, ev) < 0)
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory merging traces");
    }
    json_decref(root);
    return status;
}

int mpt__trace_merge(char *const *texts, int n, const double *shift_s, const double *scale,
                     const char *const *process_names, json_t *other, char **out)
{
    mpt__trace_t *t = NULL;
    int status;
    *out = NULL;
    if ((status = mpt__trace_new(0, &t)) < 0) {
        json_decref(other);
        return status;
    }
    for (int r = 0; r < n && status == MPT_OK; r++)
        status = merge_one(t->events, texts[r], r, shift_s[r] * 1e6, scale[r],
                           process_names[r]);
    if (status == MPT_OK && other && json_object_set(t->root, "otherData", other) < 0)
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory merging traces");
    if (status == MPT_OK)
        status = mpt__trace_dump(t, out);
    json_decref(other);
    mpt__trace_free(t);
    return status;
}
