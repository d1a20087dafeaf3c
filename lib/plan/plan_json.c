/*
 * plan/plan_json.c: plans as JSON (docs/plan.md).  Writing spells out every
 * field in a fixed order; reading checks the text against itself (dp
 * replicas of pp stages of tp devices, fractions and batch shares summing
 * to 1) and against the model and cluster it is meant for (every layer
 * covered once, in order; every device known and used once), so that what
 * the engine receives can be trusted.  Each refusal is one line naming the
 * file, the JSON path and the reason.
 *
 * Left out: whether the plan fits memory or is any good (the planner's and
 * the simulator's questions), and reading files (the caller loads the text,
 * so that a plan may also come from a string).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "plan/plan.h"

#define PLAN_FORMAT 1
/* How far fractions and batch shares may sum from 1: the planner divides
 * speeds by their sum, which leaves a few ulps of rounding per term, and a
 * person editing a plan writes decimals such as 0.333333. */
#define SUM_TOLERANCE 1e-6
/* The most micro-batches a plan may ask for.  The simulator (and its
 * trace, ~60 kB per micro-batch of a 2 x 2 plan) grows with stages x
 * micro-batches, so a count read from a file must not ask for terabytes
 * (10^15, found by tests/fuzz/fuzz_plan).  16384 (micro-batches of one
 * sample in a batch of 16k) simulates in seconds and 1 GB; the planner
 * never goes near it (powers of two up to the batch, 128 by default). */
#define MAX_MICROBATCHES 16384
/* The largest time (s) or size (bytes) a plan may state: sums of a few
 * near DBL_MAX overflowed to infinity and the simulator then found its
 * schedule deadlocked (fwd_s 1e308, found by tests/fuzz/fuzz_plan); 1e18
 * seconds or bytes is beyond any real plan and far from overflow. */
#define MAX_REAL 1e18

static const char *const schedule_names[] = {"gpipe", "1f1b"};

/* ---- writing ------------------------------------------------------------ */

typedef struct {
    int status;     /* the first failure, or MPT_OK */
    char path[256]; /* the JSON path of the object being written, for messages */
} writer;

/* Sets o[key] = v, taking v; a NULL v is an allocation that failed. */
static void put(writer *w, json_t *o, const char *key, json_t *v)
{
    if (w->status < 0 || !v || json_object_set_new(o, key, v) < 0) {
        if (w->status == MPT_OK)
            w->status = mpt__fail(MPT_ERR_NOMEM, "out of memory writing plan JSON");
        else
            json_decref(v);
    }
}

static void append(writer *w, json_t *a, json_t *v)
{
    if (w->status < 0 || !v || json_array_append_new(a, v) < 0) {
        if (w->status == MPT_OK)
            w->status = mpt__fail(MPT_ERR_NOMEM, "out of memory writing plan JSON");
        else
            json_decref(v);
    }
}

/* jansson writes reals with 17 significant digits, so that reading the text
 * gives the same double; JSON has no NaN or infinity, so those are the
 * caller's bug, named rather than written as something else. */
static void put_real(writer *w, json_t *o, const char *key, double v)
{
    if (w->status < 0)
        return;
    if (!isfinite(v)) {
        w->status = mpt__fail(MPT_ERR_INVALID, "plan: %s%s%s: %g is not a finite number",
                              w->path, w->path[0] ? "." : "", key, v);
        return;
    }
    put(w, o, key, json_real(v));
}

static json_t *stage_json(writer *w, const mpt__plan_stage_t *st)
{
    json_t *o = json_object(), *devices = json_array();
    size_t len = strlen(w->path);
    put(w, o, "layers", json_pack("[I,I]", (json_int_t)st->first, (json_int_t)st->last));
    put_real(w, o, "fwd_s", st->fwd_s);
    put_real(w, o, "bwd_s", st->bwd_s);
    if (st->recompute) /* absent: false, as in plans written before recomputation */
        put(w, o, "recompute", json_true());
    for (size_t k = 0; k < st->ndevices; k++) {
        const mpt__plan_device_t *d = &st->devices[k];
        json_t *dj = json_object();
        snprintf(w->path + len, sizeof w->path - len, ".devices[%zu]", k);
        put(w, dj, "device", json_integer((json_int_t)d->device));
        put_real(w, dj, "fraction", d->fraction);
        put_real(w, dj, "memory_bytes", d->memory_bytes);
        append(w, devices, dj);
    }
    w->path[len] = '\0';
    put(w, o, "devices", devices);
    return o;
}

int mpt__plan_to_json(const mpt__plan_t *p, char **text)
{
    writer w = {MPT_OK, ""};
    *text = NULL;
    if (p->schedule != MPT__PIPE_GPIPE && p->schedule != MPT__PIPE_1F1B)
        return mpt__fail(MPT_ERR_INVALID, "plan: schedule: unknown schedule %d", (int)p->schedule);
    json_t *root = json_object(), *breakdown = json_object(), *replicas = json_array(),
           *alts = json_array();
    put(&w, root, "mpt_plan", json_integer(PLAN_FORMAT));
    put(&w, root, "dp", json_integer((json_int_t)p->dp));
    put(&w, root, "pp", json_integer((json_int_t)p->pp));
    put(&w, root, "tp", json_integer((json_int_t)p->tp));
    put(&w, root, "microbatches", json_integer((json_int_t)p->microbatches));
    if (p->batch > 0)
        put(&w, root, "batch", json_integer((json_int_t)p->batch));
    if (p->model_id[0])
        put(&w, root, "model", json_string(p->model_id));
    put(&w, root, "schedule", json_string(schedule_names[p->schedule]));
    put(&w, root, "allreduce",
        json_string(p->allreduce == MPT_ALLREDUCE_HIERARCHICAL ? "hierarchical" : "ring"));
    put(&w, root, "optimizer_slots", json_integer(p->optimizer_slots));
    if (p->zero) /* absent: 0, as in plans written before ZeRO */
        put(&w, root, "zero", json_integer(p->zero));
    put_real(&w, root, "predicted_step_s", p->predicted_step_s);
    snprintf(w.path, sizeof w.path, "breakdown");
    put_real(&w, breakdown, "compute_s", p->compute_s);
    put_real(&w, breakdown, "bubble_s", p->bubble_s);
    put_real(&w, breakdown, "p2p_s", p->p2p_s);
    put_real(&w, breakdown, "allreduce_s", p->allreduce_s);
    put(&w, root, "breakdown", breakdown);
    for (size_t r = 0; r < p->nreplicas; r++) {
        const mpt__plan_replica_t *rep = &p->replicas[r];
        json_t *rj = json_object(), *stages = json_array();
        snprintf(w.path, sizeof w.path, "replicas[%zu]", r);
        put_real(&w, rj, "batch_share", rep->batch_share);
        for (size_t s = 0; s < rep->nstages; s++) {
            snprintf(w.path, sizeof w.path, "replicas[%zu].stages[%zu]", r, s);
            append(&w, stages, stage_json(&w, &rep->stages[s]));
        }
        put(&w, rj, "stages", stages);
        append(&w, replicas, rj);
    }
    put(&w, root, "replicas", replicas);
    for (size_t i = 0; i < p->nalternatives; i++) {
        const mpt__plan_alt_t *a = &p->alternatives[i];
        json_t *aj = json_object();
        snprintf(w.path, sizeof w.path, "alternatives[%zu]", i);
        put(&w, aj, "description", json_string(a->description ? a->description : ""));
        if (a->step_s < 0)
            put(&w, aj, "predicted_step_s", json_null());
        else
            put_real(&w, aj, "predicted_step_s", a->step_s);
        put(&w, aj, "rejected", a->rejected ? json_string(a->rejected) : json_null());
        append(&w, alts, aj);
    }
    put(&w, root, "alternatives", alts);
    if (w.status == MPT_OK && !(*text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER)))
        w.status = mpt__fail(MPT_ERR_NOMEM, "out of memory writing plan JSON");
    json_decref(root);
    return w.status;
}

/* ---- reading ------------------------------------------------------------ */

typedef struct {
    int used;
    size_t r, s, k; /* where it was first used */
} owner_t;

typedef struct {
    const char *where; /* the file, for messages */
    char path[256];    /* the JSON path of the object being read */
    size_t nlayers, ndevices;
    owner_t *owners;   /* per cluster device */
} reader;

/* Fails with "<where>: <path>.<key>: <reason>"; key may be NULL. */
static int bad(const reader *r, const char *key, const char *fmt, ...) MPT__PRINTF(3, 4);
static int bad(const reader *r, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!r->path[0] && !key) /* the top level itself */
        return mpt__fail(MPT_ERR_PARSE, "%s: %s", r->where, msg);
    return mpt__fail(MPT_ERR_PARSE, "%s: %s%s%s: %s", r->where, r->path,
                     r->path[0] && key ? "." : "", key ? key : "", msg);
}

/* Appends "[i]" or ".key[i]" to the path; returns the old length, to cut
 * it back with unwind(). */
static size_t descend(reader *r, const char *key, size_t i)
{
    size_t len = strlen(r->path);
    snprintf(r->path + len, sizeof r->path - len, "%s%s[%zu]", len && key[0] ? "." : "", key, i);
    return len;
}

static void unwind(reader *r, size_t len)
{
    r->path[len] = '\0';
}

static int get_size(const reader *r, const json_t *o, const char *key, size_t min, size_t *out)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return bad(r, key, "missing (an integer >= %zu)", min);
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min)
        return bad(r, key, "must be an integer >= %zu", min);
    *out = (size_t)json_integer_value(v);
    return MPT_OK;
}

/* A number >= 0, or with `unit` a number in (0, 1]. */
static int get_real(const reader *r, const json_t *o, const char *key, int unit, double *out)
{
    const json_t *v = json_object_get(o, key);
    const char *want = unit ? "a number in (0, 1]" : "a number >= 0";
    if (!v)
        return bad(r, key, "missing (%s)", want);
    double x = json_number_value(v);
    if (!json_is_number(v) || (unit ? !(x > 0 && x <= 1) : !(x >= 0)))
        return bad(r, key, "must be %s", want);
    if (!unit && x > MAX_REAL)
        return bad(r, key, "%g is beyond any real plan (at most %g)", x, MAX_REAL);
    *out = x;
    return MPT_OK;
}

/* The array o[key], required; `what` names its entries for messages. */
static int get_array(const reader *r, const json_t *o, const char *key, const char *what,
                     const json_t **out)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return bad(r, key, "missing (an array of %s)", what);
    if (!json_is_array(v))
        return bad(r, key, "must be an array of %s", what);
    *out = v;
    return MPT_OK;
}

static int read_device(reader *r, const json_t *dj, size_t rep, size_t s, size_t k,
                       mpt__plan_device_t *d)
{
    size_t dev;
    if (!json_is_object(dj))
        return bad(r, NULL, "must be an object {device, fraction, memory_bytes}");
    int status = get_size(r, dj, "device", 0, &dev);
    if (status < 0)
        return status;
    if (dev >= r->ndevices)
        return bad(r, "device", "%zu is not a device of the cluster (it has %zu)", dev,
                   r->ndevices);
    const owner_t *o = &r->owners[dev];
    if (o->used)
        return bad(r, "device", "device %zu is used twice (also by replicas[%zu].stages[%zu]"
                   ".devices[%zu])", dev, o->r, o->s, o->k);
    r->owners[dev] = (owner_t){1, rep, s, k};
    d->device = dev;
    if ((status = get_real(r, dj, "fraction", 1, &d->fraction)) < 0)
        return status;
    return get_real(r, dj, "memory_bytes", 0, &d->memory_bytes);
}

/* `next` is the first layer this stage must start at; on return, the one
 * after it. */
static int read_stage(reader *r, const json_t *sj, size_t tp, size_t rep, size_t s,
                      mpt__plan_stage_t *st, size_t *next)
{
    const json_t *layers, *devices;
    double sum = 0;
    int status = MPT_OK;
    if (!json_is_object(sj))
        return bad(r, NULL, "must be an object {layers, fwd_s, bwd_s, devices}");
    MPT_TRY(get_array(r, sj, "layers", "two layer indices [first, last]", &layers));
    const json_t *f = json_array_get(layers, 0), *l = json_array_get(layers, 1);
    if (json_array_size(layers) != 2 || !json_is_integer(f) || !json_is_integer(l) ||
        json_integer_value(f) < 0 || json_integer_value(l) < 0)
        return bad(r, "layers", "must be [first, last], two layer indices");
    st->first = (size_t)json_integer_value(f);
    st->last = (size_t)json_integer_value(l);
    if (st->first > st->last)
        return bad(r, "layers", "first layer %zu is after last layer %zu", st->first, st->last);
    if (st->first != *next)
        return bad(r, "layers", "starts at layer %zu, but layer %zu is the next one not covered "
                   "(a replica's stages take contiguous layers, in order, from 0)",
                   st->first, *next);
    if (st->last >= r->nlayers)
        return bad(r, "layers", "ends at layer %zu, but the model has %zu layers (0..%zu)",
                   st->last, r->nlayers, r->nlayers ? r->nlayers - 1 : 0);
    *next = st->last + 1;
    MPT_TRY(get_real(r, sj, "fwd_s", 0, &st->fwd_s));
    MPT_TRY(get_real(r, sj, "bwd_s", 0, &st->bwd_s));
    const json_t *rc = json_object_get(sj, "recompute");
    if (rc && !json_is_boolean(rc))
        return bad(r, "recompute", "must be true or false");
    st->recompute = rc && json_is_true(rc);
    MPT_TRY(get_array(r, sj, "devices", "devices", &devices));
    if (json_array_size(devices) != tp)
        return bad(r, "devices", "has %zu devices, but tp is %zu", json_array_size(devices), tp);
    if (!(st->devices = calloc(tp, sizeof *st->devices)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    st->ndevices = tp;
    for (size_t k = 0; k < tp; k++) {
        size_t len = descend(r, "devices", k);
        MPT_TRY(read_device(r, json_array_get(devices, k), rep, s, k, &st->devices[k]));
        sum += st->devices[k].fraction;
        unwind(r, len);
    }
    if (fabs(sum - 1) > SUM_TOLERANCE)
        return bad(r, "devices", "fractions sum to %.9g, not 1", sum);
out:
    return status;
}

static int read_replica(reader *r, const json_t *rj, const mpt__plan_t *p, size_t rep,
                        mpt__plan_replica_t *out)
{
    const json_t *stages;
    size_t next = 0;
    int status = MPT_OK;
    if (!json_is_object(rj))
        return bad(r, NULL, "must be an object {batch_share, stages}");
    MPT_TRY(get_real(r, rj, "batch_share", 1, &out->batch_share));
    MPT_TRY(get_array(r, rj, "stages", "stages", &stages));
    if (json_array_size(stages) != p->pp)
        return bad(r, "stages", "has %zu stages, but pp is %zu", json_array_size(stages), p->pp);
    if (!(out->stages = calloc(p->pp, sizeof *out->stages)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    out->nstages = p->pp;
    for (size_t s = 0; s < p->pp; s++) {
        size_t len = descend(r, "stages", s);
        MPT_TRY(read_stage(r, json_array_get(stages, s), p->tp, rep, s, &out->stages[s], &next));
        if (s + 1 == p->pp && next != r->nlayers)
            return bad(r, "layers", "the last stage ends at layer %zu, but the model has %zu "
                       "layers (every layer must be covered)", next - 1, r->nlayers);
        unwind(r, len);
    }
out:
    return status;
}

static int read_alternative(reader *r, const json_t *aj, mpt__plan_alt_t *a)
{
    const json_t *desc = json_object_get(aj, "description"),
                 *step = json_object_get(aj, "predicted_step_s"),
                 *why = json_object_get(aj, "rejected");
    if (!json_is_object(aj))
        return bad(r, NULL, "must be an object {description, predicted_step_s, rejected}");
    if (!json_is_string(desc))
        return bad(r, "description", desc ? "must be a string" : "missing (a string)");
    if (step && !json_is_null(step) && !(json_is_number(step) && json_number_value(step) >= 0))
        return bad(r, "predicted_step_s", "must be a number >= 0, or null when rejected");
    if (why && !json_is_null(why) && !json_is_string(why))
        return bad(r, "rejected", "must be a string (the reason), or null");
    /* Rejected configurations have no step time: -1 in memory, as the
     * planner records them. */
    a->step_s = step && json_is_number(step) ? json_number_value(step) : -1;
    if (!(a->description = mpt__strdup(json_string_value(desc))))
        return MPT_ERR_NOMEM;
    if (json_is_string(why) && !(a->rejected = mpt__strdup(json_string_value(why))))
        return MPT_ERR_NOMEM;
    return MPT_OK;
}

/* The scalar fields: format, shape, schedule and predictions. */
static int read_header(reader *r, const json_t *root, mpt__plan_t *p)
{
    const json_t *v = json_object_get(root, "mpt_plan");
    const json_t *sched = json_object_get(root, "schedule");
    const json_t *bd = json_object_get(root, "breakdown");
    size_t slots;
    int status = MPT_OK;
    if (!v)
        return bad(r, "mpt_plan", "missing (the format version, %d): is this a plan file?",
                   PLAN_FORMAT);
    if (!json_is_integer(v) || json_integer_value(v) != PLAN_FORMAT)
        return bad(r, "mpt_plan", "unsupported format version (this mpt reads %d)", PLAN_FORMAT);
    MPT_TRY(get_size(r, root, "dp", 1, &p->dp));
    MPT_TRY(get_size(r, root, "pp", 1, &p->pp));
    MPT_TRY(get_size(r, root, "tp", 1, &p->tp));
    MPT_TRY(get_size(r, root, "microbatches", 1, &p->microbatches));
    const json_t *model = json_object_get(root, "model");
    if (model) {
        if (!json_is_string(model) || json_string_length(model) >= sizeof p->model_id)
            return bad(r, "model", "must be the model's CRC-32 as a hex string");
        snprintf(p->model_id, sizeof p->model_id, "%s", json_string_value(model));
    }
    if (p->microbatches > MAX_MICROBATCHES)
        return bad(r, "microbatches", "%zu micro-batches, more than the %d a plan may have",
                   p->microbatches, MAX_MICROBATCHES);
    if (json_object_get(root, "batch")) {
        MPT_TRY(get_size(r, root, "batch", 1, &p->batch));
        if (p->microbatches > p->batch)
            return bad(r, "microbatches", "%zu micro-batches is more than the batch of %zu "
                       "samples", p->microbatches, p->batch);
    }
    if (!json_is_string(sched))
        return bad(r, "schedule", sched ? "must be a string (gpipe or 1f1b)"
                                        : "missing (gpipe or 1f1b)");
    if (!strcmp(json_string_value(sched), "gpipe"))
        p->schedule = MPT__PIPE_GPIPE;
    else if (!strcmp(json_string_value(sched), "1f1b"))
        p->schedule = MPT__PIPE_1F1B;
    else
        return bad(r, "schedule", "unknown schedule '%s' (gpipe or 1f1b)",
                   json_string_value(sched));
    const json_t *algo = json_object_get(root, "allreduce");
    p->allreduce = MPT_ALLREDUCE_RING; /* absent in plans of earlier versions */
    if (algo && !json_is_string(algo))
        return bad(r, "allreduce", "must be a string (ring or hierarchical)");
    if (algo && !strcmp(json_string_value(algo), "hierarchical"))
        p->allreduce = MPT_ALLREDUCE_HIERARCHICAL;
    else if (algo && strcmp(json_string_value(algo), "ring"))
        return bad(r, "allreduce", "unknown all-reduce '%s' (ring or hierarchical)",
                   json_string_value(algo));
    MPT_TRY(get_size(r, root, "optimizer_slots", 0, &slots));
    if (slots > 16)
        return bad(r, "optimizer_slots", "%zu optimizer slots is not a real optimizer (at most 16)",
                   slots);
    p->optimizer_slots = (int)slots;
    const json_t *zero = json_object_get(root, "zero");
    if (zero && (!json_is_integer(zero) || json_integer_value(zero) < 0 ||
                 json_integer_value(zero) > 2))
        return bad(r, "zero", "must be 0, 1 (sharded optimizer state) or 2 (and gradients); "
                   "ZeRO-3 (sharded parameters) is not implemented: docs/memory.md");
    p->zero = zero ? (int)json_integer_value(zero) : 0;
    MPT_TRY(get_real(r, root, "predicted_step_s", 0, &p->predicted_step_s));
    if (!json_is_object(bd))
        return bad(r, "breakdown", bd ? "must be an object {compute_s, bubble_s, p2p_s, "
                                        "allreduce_s}"
                                      : "missing (an object {compute_s, bubble_s, p2p_s, "
                                        "allreduce_s})");
    snprintf(r->path, sizeof r->path, "breakdown");
    MPT_TRY(get_real(r, bd, "compute_s", 0, &p->compute_s));
    MPT_TRY(get_real(r, bd, "bubble_s", 0, &p->bubble_s));
    MPT_TRY(get_real(r, bd, "p2p_s", 0, &p->p2p_s));
    MPT_TRY(get_real(r, bd, "allreduce_s", 0, &p->allreduce_s));
    r->path[0] = '\0';
out:
    return status;
}

/* Reads a parsed plan into p; returns the first problem found. */
static int read_plan(reader *r, const json_t *root, mpt__plan_t *p)
{
    const json_t *replicas, *alts = json_object_get(root, "alternatives");
    double shares = 0;
    int status = MPT_OK;
    if (!json_is_object(root))
        return bad(r, NULL, "the top level must be an object (a plan)");
    MPT_TRY(read_header(r, root, p));
    MPT_TRY(get_array(r, root, "replicas", "replicas", &replicas));
    if (json_array_size(replicas) != p->dp)
        return bad(r, "replicas", "has %zu replicas, but dp is %zu", json_array_size(replicas),
                   p->dp);
    if (!(p->replicas = calloc(p->dp, sizeof *p->replicas)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    p->nreplicas = p->dp;
    for (size_t i = 0; i < p->dp; i++) {
        size_t len = descend(r, "replicas", i);
        MPT_TRY(read_replica(r, json_array_get(replicas, i), p, i, &p->replicas[i]));
        shares += p->replicas[i].batch_share;
        unwind(r, len);
    }
    if (fabs(shares - 1) > SUM_TOLERANCE)
        return bad(r, "replicas", "batch shares sum to %.9g, not 1", shares);
    if (alts && !json_is_array(alts))
        return bad(r, "alternatives", "must be an array");
    if (json_array_size(alts) &&
        !(p->alternatives = calloc(json_array_size(alts), sizeof *p->alternatives)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    p->nalternatives = json_array_size(alts);
    for (size_t i = 0; i < p->nalternatives; i++) {
        size_t len = descend(r, "alternatives", i);
        MPT_TRY(read_alternative(r, json_array_get(alts, i), &p->alternatives[i]));
        unwind(r, len);
    }
out:
    return status;
}

int mpt__plan_from_json(const char *text, const char *where, size_t nlayers, size_t ndevices,
                        mpt__plan_t **out)
{
    reader r = {where ? where : "plan", "", nlayers, ndevices, NULL};
    json_error_t err;
    json_t *root = NULL;
    mpt__plan_t *p = NULL;
    int status;
    *out = NULL;
    if (!text)
        return mpt__fail(MPT_ERR_INVALID, "mpt__plan_from_json: NULL text");
    if (!(root = json_loads(text, JSON_REJECT_DUPLICATES, &err)))
        return mpt__fail(MPT_ERR_PARSE, "%s:%d:%d: malformed JSON: %s", r.where, err.line,
                         err.column, err.text);
    p = calloc(1, sizeof *p);
    r.owners = calloc(ndevices ? ndevices : 1, sizeof *r.owners);
    if (!p || !r.owners) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    status = read_plan(&r, root, p);
    if (status == MPT_ERR_NOMEM)
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory reading %s", r.where);
out:
    free(r.owners);
    json_decref(root);
    if (status < 0)
        mpt__plan_free(p);
    else
        *out = p;
    return status;
}
