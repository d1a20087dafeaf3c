/*
 * trace/chrome.h: timelines in the Chrome Trace Event format (the JSON that
 * chrome://tracing and Perfetto open): a span recorder that worker threads
 * append to while they run, and one writer that turns tracks of spans into
 * the JSON.  The engine writes measured steps with them and the simulator
 * predicted ones, so both timelines read alike.  Never installed.
 *
 * Layering: this part of trace/ uses only core/ and jansson, so that every
 * module may record spans (DESIGN.md lists trace/ last for its metrics and
 * progress parts, which sit on the trainer's public types only).
 */
#ifndef MPT_TRACE_CHROME_H
#define MPT_TRACE_CHROME_H

#include <jansson.h>
#include <stddef.h>

/* One timed piece of work on one track. */
typedef struct {
    const char *name; /* a string literal: "forward", "allreduce"... */
    int mb;           /* micro-batch, or -1 */
    double t0, t1;    /* seconds, mpt__now() or simulated */
} mpt__span_t;

/* A growing list of spans, owned by one thread at a time. */
typedef struct {
    mpt__span_t *v;
    size_t n, cap;
} mpt__spans_t;

/* Appends a span; a failed allocation drops it (a trace is diagnostic,
 * never a reason to fail a step). */
void mpt__spans_add(mpt__spans_t *s, const char *name, int mb, double t0, double t1);
void mpt__spans_clear(mpt__spans_t *s);
void mpt__spans_free(mpt__spans_t *s);

/* A trace being written: processes (pid) hold tracks (tid), each named
 * once; events are complete spans ("ph": "X") in microseconds from the
 * trace's origin. */
typedef struct mpt__trace mpt__trace_t;

int mpt__trace_new(double origin_s, mpt__trace_t **out);
void mpt__trace_free(mpt__trace_t *t);
/* Names process pid (process_name NULL: leave it) and its track tid. */
int mpt__trace_track(mpt__trace_t *t, int pid, int tid, const char *process_name,
                     const char *track_name);
/* A span [t0, t1] (seconds) on track (pid, tid), in category `cat`, with
 * `args` (a JSON object, stolen; NULL for none). */
int mpt__trace_span(mpt__trace_t *t, int pid, int tid, const char *name, const char *cat,
                    double t0, double t1, json_t *args);
/* Every span of a recorder on one track; a span's micro-batch, when it has
 * one, becomes its "microbatch" argument. */
int mpt__trace_spans(mpt__trace_t *t, int pid, int tid, const char *cat, const mpt__spans_t *s);
/* The trace as compact JSON (freed by the caller). */
int mpt__trace_dump(const mpt__trace_t *t, char **text);
/* One trace out of n processes' (texts[r]: JSON of mpt__trace_dump with
 * every event on pid 0): process r's events on pid r, named
 * process_names[r], each time t (from its trace's origin) onto one clock
 * as shift_s[r] + scale[r] t (durations times scale[r]); `other` (a JSON
 * object, stolen; NULL for none) becomes the trace's "otherData" (how the
 * clocks were aligned). */
int mpt__trace_merge(char *const *texts, int n, const double *shift_s, const double *scale,
                     const char *const *process_names, json_t *other, char **out);

#endif
