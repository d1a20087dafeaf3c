/*
 * tests/check_plan_json.c: plan JSON (docs/plan.md, plan/plan_json.c).
 * Plans built by hand are written, read back and written again: the text
 * is byte-identical and every field equal, doubles bit for bit.  A small
 * valid plan text, mutated one field at a time, checks that each
 * inconsistency (the shape, layer coverage, devices, fractions, batch
 * shares, memory, micro-batches, schedule, JSON types) is refused with
 * MPT_ERR_PARSE and a detail naming the file and the JSON path; text that
 * is not JSON names the line and column.  The public text form
 * (mpt_plan_from_json) round-trips a planner's plan.  Opens no OpenCL
 * device, so it runs forked.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/plan.h"
#include "testutil.h"

#define ck_assert_error_mentions(needle)                                       \
    ck_assert_msg(strstr(mpt_last_error(), (needle)) != NULL,                  \
                  "last error \"%s\" does not mention \"%s\"", mpt_last_error(), \
                  (needle))

/* Exact equality: the format promises the same doubles after a round trip. */
#define ck_assert_same_double(a, b)                                            \
    ck_assert_msg((a) == (b), "%s = %.17g, expected %.17g", #a, (double)(a), (double)(b))

/* ---- plans built by hand ------------------------------------------------- */

/* dp replicas of pp stages of tp devices over nlayers layers, device
 * indices in order; the numbers are arbitrary non-round doubles (thirds,
 * sevenths) so that a lost digit would show. */
static mpt__plan_t *make_plan(size_t dp, size_t pp, size_t tp, size_t nlayers)
{
    mpt__plan_t *p = calloc(1, sizeof *p);
    size_t dev = 0;
    ck_assert_ptr_nonnull(p);
    p->dp = dp, p->pp = pp, p->tp = tp;
    p->microbatches = 4, p->batch = 96, p->schedule = MPT__PIPE_1F1B, p->optimizer_slots = 2;
    p->predicted_step_s = 1.0 / 3.0;
    p->compute_s = 0.2 / 7.0, p->bubble_s = 1e-3 / 3.0, p->p2p_s = 2.5e-5, p->allreduce_s = 0.1;
    p->nreplicas = dp;
    ck_assert_ptr_nonnull(p->replicas = calloc(dp, sizeof *p->replicas));
    for (size_t r = 0; r < dp; r++) {
        mpt__plan_replica_t *rep = &p->replicas[r];
        /* Shares 1/3 and 2/3 for two replicas, equal otherwise. */
        rep->batch_share = dp == 2 ? (r + 1) / 3.0 : 1.0 / (double)dp;
        rep->nstages = pp;
        ck_assert_ptr_nonnull(rep->stages = calloc(pp, sizeof *rep->stages));
        for (size_t s = 0; s < pp; s++) {
            mpt__plan_stage_t *st = &rep->stages[s];
            st->first = s * nlayers / pp;
            st->last = (s + 1) * nlayers / pp - 1;
            st->fwd_s = (double)(s + 1) / 7e3;
            st->bwd_s = 2.0 * (double)(s + 1) / 7e3 + 1e-9;
            st->ndevices = tp;
            ck_assert_ptr_nonnull(st->devices = calloc(tp, sizeof *st->devices));
            for (size_t k = 0; k < tp; k++) {
                st->devices[k].device = dev++;
                st->devices[k].fraction = tp == 2 ? (k + 1) / 3.0 : 1.0 / (double)tp;
                st->devices[k].memory_bytes = 1.5e9 / 7.0 * (double)(dev + 1);
            }
        }
    }
    return p;
}

static void add_alternative(mpt__plan_t *p, const char *description, double step,
                            const char *rejected)
{
    mpt__plan_alt_t *a = realloc(p->alternatives, (p->nalternatives + 1) * sizeof *a);
    ck_assert_ptr_nonnull(a);
    p->alternatives = a;
    a += p->nalternatives++;
    ck_assert_ptr_nonnull(a->description = strdup(description));
    a->step_s = step;
    a->rejected = rejected ? strdup(rejected) : NULL;
}

static void assert_plans_equal(const mpt__plan_t *a, const mpt__plan_t *b)
{
    ck_assert_uint_eq(a->dp, b->dp);
    ck_assert_uint_eq(a->pp, b->pp);
    ck_assert_uint_eq(a->tp, b->tp);
    ck_assert_uint_eq(a->microbatches, b->microbatches);
    ck_assert_uint_eq(a->batch, b->batch);
    ck_assert_int_eq(a->schedule, b->schedule);
    ck_assert_int_eq(a->optimizer_slots, b->optimizer_slots);
    ck_assert_same_double(a->predicted_step_s, b->predicted_step_s);
    ck_assert_same_double(a->compute_s, b->compute_s);
    ck_assert_same_double(a->bubble_s, b->bubble_s);
    ck_assert_same_double(a->p2p_s, b->p2p_s);
    ck_assert_same_double(a->allreduce_s, b->allreduce_s);
    ck_assert_uint_eq(a->nreplicas, b->nreplicas);
    for (size_t r = 0; r < a->nreplicas; r++) {
        const mpt__plan_replica_t *ra = &a->replicas[r], *rb = &b->replicas[r];
        ck_assert_same_double(ra->batch_share, rb->batch_share);
        ck_assert_uint_eq(ra->nstages, rb->nstages);
        for (size_t s = 0; s < ra->nstages; s++) {
            const mpt__plan_stage_t *sa = &ra->stages[s], *sb = &rb->stages[s];
            ck_assert_uint_eq(sa->first, sb->first);
            ck_assert_uint_eq(sa->last, sb->last);
            ck_assert_same_double(sa->fwd_s, sb->fwd_s);
            ck_assert_same_double(sa->bwd_s, sb->bwd_s);
            ck_assert_uint_eq(sa->ndevices, sb->ndevices);
            for (size_t k = 0; k < sa->ndevices; k++) {
                ck_assert_uint_eq(sa->devices[k].device, sb->devices[k].device);
                ck_assert_same_double(sa->devices[k].fraction, sb->devices[k].fraction);
                ck_assert_same_double(sa->devices[k].memory_bytes, sb->devices[k].memory_bytes);
            }
        }
    }
    ck_assert_uint_eq(a->nalternatives, b->nalternatives);
    for (size_t i = 0; i < a->nalternatives; i++) {
        const mpt__plan_alt_t *x = &a->alternatives[i], *y = &b->alternatives[i];
        ck_assert_str_eq(x->description, y->description);
        ck_assert_same_double(x->step_s, y->step_s);
        ck_assert_int_eq(x->rejected == NULL, y->rejected == NULL);
        if (x->rejected)
            ck_assert_str_eq(x->rejected, y->rejected);
    }
}

/* Both keys are in the text, `a` first. */
static void assert_before(const char *text, const char *a, const char *b)
{
    const char *x = strstr(text, a), *y = strstr(text, b);
    ck_assert_msg(x && y && x < y, "%s does not come before %s", a, b);
}

/* to_json -> from_json -> to_json: the same text and the same plan.
 * Returns the first text (the caller frees it). */
static char *round_trip(const mpt__plan_t *p, size_t nlayers, size_t ndevices)
{
    char *text = NULL, *again = NULL;
    mpt__plan_t *back = NULL;
    ck_assert_mpt_ok(mpt__plan_to_json(p, &text));
    ck_assert_mpt_ok(mpt__plan_from_json(text, "plan.json", nlayers, ndevices, &back));
    assert_plans_equal(back, p);
    ck_assert_mpt_ok(mpt__plan_to_json(back, &again));
    ck_assert_str_eq(again, text);
    free(again);
    mpt__plan_free(back);
    return text;
}

START_TEST(round_trip_dp2_pp2_tp2)
{
    mpt__plan_t *p = make_plan(2, 2, 2, 10);
    char *text = round_trip(p, 10, 8);
    /* A few fields as docs/plan.md shows them. */
    ck_assert_ptr_nonnull(strstr(text, "\"mpt_plan\": 1,"));
    ck_assert_ptr_nonnull(strstr(text, "\"schedule\": \"1f1b\""));
    ck_assert_ptr_nonnull(strstr(text, "\"batch\": 96,"));
    ck_assert_ptr_nonnull(strstr(text, "\"alternatives\": []"));
    ck_assert_ptr_nonnull(strstr(text, "\"breakdown\": {"));
    /* Keys in the documented order. */
    assert_before(text, "\"mpt_plan\"", "\"dp\"");
    assert_before(text, "\"breakdown\"", "\"replicas\"");
    assert_before(text, "\"replicas\"", "\"alternatives\"");
    free(text);
    mpt__plan_free(p);
}
END_TEST

START_TEST(round_trip_alternatives)
{
    mpt__plan_t *p = make_plan(1, 1, 1, 3);
    p->schedule = MPT__PIPE_GPIPE;
    p->batch = 0; /* not stated: the key is left out */
    p->microbatches = 1;
    add_alternative(p, "dp=1 pp=1 tp=1 m=1 gpipe", 0.1 + 0.2, NULL);
    add_alternative(p, "dp=1 pp=1 tp=1 m=2 gpipe", -1,
                    "does not fit: device 0 needs 17179869184 bytes, has \"16 GiB\" \xe2\x80\x94 "
                    "5% short");
    add_alternative(p, "dp=1 pp=1 tp=1 m=4 gpipe", 2.5, "slower than the chosen plan");
    char *text = round_trip(p, 3, 1);
    ck_assert_ptr_null(strstr(text, "\"batch\""));
    ck_assert_ptr_nonnull(strstr(text, "\"schedule\": \"gpipe\""));
    ck_assert_ptr_nonnull(strstr(text, "\"predicted_step_s\": null"));
    ck_assert_ptr_nonnull(strstr(text, "\"rejected\": null"));
    free(text);
    mpt__plan_free(p);
}
END_TEST

/* Plans the JSON cannot hold are the caller's bug, named, not written. */
START_TEST(to_json_refuses_non_finite)
{
    mpt__plan_t *p = make_plan(2, 2, 2, 10);
    char *text = (char *)"untouched";
    p->replicas[1].stages[0].devices[1].memory_bytes = NAN;
    ck_assert_mpt_fails(mpt__plan_to_json(p, &text), MPT_ERR_INVALID);
    ck_assert_ptr_null(text);
    ck_assert_error_mentions("replicas[1].stages[0].devices[1].memory_bytes");
    p->replicas[1].stages[0].devices[1].memory_bytes = 1;
    p->predicted_step_s = INFINITY;
    ck_assert_mpt_fails(mpt__plan_to_json(p, &text), MPT_ERR_INVALID);
    ck_assert_error_mentions("predicted_step_s");
    mpt__plan_free(p);
    mpt__plan_free(NULL); /* a no-op, like free() */
}
END_TEST

/* ---- a valid text, and mutations of it ------------------------------------ */

/* dp=2, pp=2, tp=2 on 8 devices, 6 layers.  Every value a mutation targets
 * is unique in the text, so that each case changes exactly one field. */
static const char base_plan[] =
    "{\"mpt_plan\": 1, \"dp\": 2, \"pp\": 2, \"tp\": 2, \"microbatches\": 4, \"batch\": 32,\n"
    " \"schedule\": \"1f1b\", \"optimizer_slots\": 2, \"predicted_step_s\": 0.5,\n"
    " \"breakdown\": {\"compute_s\": 0.4, \"bubble_s\": 0.05, \"p2p_s\": 0.03, "
    "\"allreduce_s\": 0.02},\n"
    " \"replicas\": [\n"
    "  {\"batch_share\": 0.4, \"stages\": [\n"
    "    {\"layers\": [0, 2], \"fwd_s\": 0.011, \"bwd_s\": 0.021, \"devices\": [\n"
    "      {\"device\": 0, \"fraction\": 0.5, \"memory_bytes\": 1000},\n"
    "      {\"device\": 1, \"fraction\": 0.5, \"memory_bytes\": 1001}]},\n"
    "    {\"layers\": [3, 5], \"fwd_s\": 0.012, \"bwd_s\": 0.022, \"devices\": [\n"
    "      {\"device\": 2, \"fraction\": 0.25, \"memory_bytes\": 1002},\n"
    "      {\"device\": 3, \"fraction\": 0.75, \"memory_bytes\": 1003}]}]},\n"
    "  {\"batch_share\": 0.6, \"stages\": [\n"
    "    {\"layers\": [0, 1], \"fwd_s\": 0.013, \"bwd_s\": 0.023, \"devices\": [\n"
    "      {\"device\": 4, \"fraction\": 0.375, \"memory_bytes\": 1004},\n"
    "      {\"device\": 5, \"fraction\": 0.625, \"memory_bytes\": 1005}]},\n"
    "    {\"layers\": [2, 5], \"fwd_s\": 0.014, \"bwd_s\": 0.024, \"devices\": [\n"
    "      {\"device\": 6, \"fraction\": 0.125, \"memory_bytes\": 1006},\n"
    "      {\"device\": 7, \"fraction\": 0.875, \"memory_bytes\": 1007}]}]}],\n"
    " \"alternatives\": [{\"description\": \"dp=1 pp=8 tp=1 m=4 1f1b\", "
    "\"predicted_step_s\": null, \"rejected\": \"does not fit\"}]}\n";

#define BASE_LAYERS 6
#define BASE_DEVICES 8

/* base_plan with `from` (which must occur exactly once) replaced by `to`. */
static char *mutate(const char *from, const char *to)
{
    const char *at = strstr(base_plan, from);
    ck_assert_msg(at != NULL, "\"%s\" is not in the base plan", from);
    ck_assert_msg(strstr(at + 1, from) == NULL, "\"%s\" occurs twice in the base plan", from);
    size_t head = (size_t)(at - base_plan), n = strlen(base_plan) - strlen(from) + strlen(to);
    char *text = malloc(n + 1);
    ck_assert_ptr_nonnull(text);
    memcpy(text, base_plan, head);
    strcpy(text + head, to);
    strcat(text, at + strlen(from));
    return text;
}

START_TEST(base_plan_reads)
{
    mpt__plan_t *p = NULL;
    ck_assert_mpt_ok(mpt__plan_from_json(base_plan, "base.json", BASE_LAYERS, BASE_DEVICES, &p));
    ck_assert_uint_eq(p->dp, 2);
    ck_assert_uint_eq(p->batch, 32);
    ck_assert_int_eq(p->schedule, MPT__PIPE_1F1B);
    ck_assert_uint_eq(p->replicas[1].stages[1].first, 2);
    ck_assert_uint_eq(p->replicas[1].stages[1].last, 5);
    ck_assert_uint_eq(p->replicas[1].stages[1].devices[1].device, 7);
    ck_assert_same_double(p->replicas[1].stages[1].devices[1].fraction, 0.875);
    /* An integer where a real is expected is a number all the same. */
    ck_assert_same_double(p->replicas[0].stages[0].devices[0].memory_bytes, 1000.0);
    ck_assert_same_double(p->replicas[1].batch_share, 0.6);
    ck_assert_uint_eq(p->nalternatives, 1);
    ck_assert_same_double(p->alternatives[0].step_s, -1.0); /* null: rejected */
    ck_assert_str_eq(p->alternatives[0].rejected, "does not fit");
    /* What mpt writes from it reads back to the same plan and text. */
    free(round_trip(p, BASE_LAYERS, BASE_DEVICES));
    mpt__plan_free(p);
}
END_TEST

/* What a planner or a person may write that is still accepted. */
START_TEST(lenient_where_documented)
{
    static const struct {
        const char *from, *to;
    } ok[] = {
        /* Sums within 1e-6 of 1, as decimals written by hand give. */
        {"\"device\": 3, \"fraction\": 0.75", "\"device\": 3, \"fraction\": 0.7500004"},
        {"\"batch_share\": 0.6", "\"batch_share\": 0.6000009"},
        /* batch and alternatives are optional; unknown keys are ignored. */
        {" \"batch\": 32,", ""},
        {",\n \"alternatives\": [{\"description\": \"dp=1 pp=8 tp=1 m=4 1f1b\", "
         "\"predicted_step_s\": null, \"rejected\": \"does not fit\"}]",
         ", \"note\": \"edited by hand\""},
        /* An alternative may give only its description. */
        {"\"predicted_step_s\": null, \"rejected\": \"does not fit\"", "\"x\": 0"},
        /* Devices need not be in order, nor all of the cluster's used. */
        {"\"device\": 7,", "\"device\": 9,"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        char *text = mutate(ok[i].from, ok[i].to);
        mpt__plan_t *p = NULL;
        ck_assert_msg(mpt__plan_from_json(text, "ok.json", BASE_LAYERS, 12, &p) == MPT_OK,
                      "case %zu refused: %s", i, mpt_last_error());
        mpt__plan_free(p);
        free(text);
    }
}
END_TEST

static const struct {
    const char *from, *to; /* the mutation of base_plan */
    const char *detail;    /* what the error must say, after "bad.json: " */
} bad_cases[] = {
    /* format and shape */
    {"\"mpt_plan\": 1", "\"mpt_plan\": 2", "mpt_plan: unsupported format version"},
    {"\"mpt_plan\": 1, ", "", "mpt_plan: missing"},
    {"\"dp\": 2", "\"dp\": 3", "replicas: has 2 replicas, but dp is 3"},
    {"\"dp\": 2", "\"dp\": \"2\"", "dp: must be an integer >= 1"},
    {"\"dp\": 2", "\"dp\": 2.0", "dp: must be an integer >= 1"},
    {"\"pp\": 2", "\"pp\": 3", "replicas[0].stages: has 2 stages, but pp is 3"},
    {"\"tp\": 2", "\"tp\": 1", "replicas[0].stages[0].devices: has 2 devices, but tp is 1"},
    {" \"replicas\": [\n", " \"replica\": [\n", "replicas: missing"},
    {"\"batch_share\": 0.4, \"stages\"", "\"batch_share\": 0.4, \"stage\"",
     "replicas[0].stages: missing"},
    /* layers */
    {"\"layers\": [3, 5]", "\"layers\": [4, 5]",
     "replicas[0].stages[1].layers: starts at layer 4, but layer 3 is the next one"},
    {"\"layers\": [3, 5]", "\"layers\": [2, 5]",
     "replicas[0].stages[1].layers: starts at layer 2, but layer 3"},
    {"\"layers\": [0, 1]", "\"layers\": [1, 1]", "replicas[1].stages[0].layers: starts at layer 1"},
    {"\"layers\": [2, 5]", "\"layers\": [2, 4]",
     "replicas[1].stages[1].layers: the last stage ends at layer 4, but the model has 6 layers"},
    {"\"layers\": [2, 5]", "\"layers\": [2, 6]",
     "replicas[1].stages[1].layers: ends at layer 6, but the model has 6 layers"},
    {"\"layers\": [2, 5]", "\"layers\": [2, 1]",
     "replicas[1].stages[1].layers: first layer 2 is after last layer 1"},
    {"\"layers\": [0, 2]", "\"layers\": [0]", "replicas[0].stages[0].layers: must be [first, last]"},
    {"\"layers\": [0, 2]", "\"layers\": [0, -2]",
     "replicas[0].stages[0].layers: must be [first, last]"},
    {"\"layers\": [0, 2]", "\"layers\": \"0-2\"",
     "replicas[0].stages[0].layers: must be an array"},
    /* devices */
    {"\"device\": 7,", "\"device\": 8,",
     "replicas[1].stages[1].devices[1].device: 8 is not a device of the cluster (it has 8)"},
    {"\"device\": 6,", "\"device\": 1,",
     "replicas[1].stages[1].devices[0].device: device 1 is used twice "
     "(also by replicas[0].stages[0].devices[1])"},
    {"\"device\": 3,", "\"device\": 2,", "replicas[0].stages[1].devices[1].device: device 2 is "
                                         "used twice"},
    {"\"device\": 0,", "\"device\": -1,",
     "replicas[0].stages[0].devices[0].device: must be an integer >= 0"},
    {"{\"device\": 4, \"fraction\": 0.375, \"memory_bytes\": 1004}", "4",
     "replicas[1].stages[0].devices[0]: must be an object"},
    /* fractions and batch shares */
    {"\"device\": 5, \"fraction\": 0.625", "\"device\": 5, \"fraction\": 1.5",
     "replicas[1].stages[0].devices[1].fraction: must be a number in (0, 1]"},
    {"\"device\": 0, \"fraction\": 0.5", "\"device\": 0, \"fraction\": 0",
     "replicas[0].stages[0].devices[0].fraction: must be a number in (0, 1]"},
    {"\"device\": 0, \"fraction\": 0.5", "\"device\": 0",
     "replicas[0].stages[0].devices[0].fraction: missing"},
    {"\"device\": 3, \"fraction\": 0.75", "\"device\": 3, \"fraction\": 0.7499",
     "replicas[0].stages[1].devices: fractions sum to 0.9999"},
    {"\"batch_share\": 0.6", "\"batch_share\": 0.7", "replicas: batch shares sum to 1.1"},
    {"\"batch_share\": 0.6", "\"batch_share\": -0.6",
     "replicas[1].batch_share: must be a number in (0, 1]"},
    /* memory and times */
    {"\"memory_bytes\": 1003", "\"memory_bytes\": -1",
     "replicas[0].stages[1].devices[1].memory_bytes: must be a number >= 0"},
    {"\"memory_bytes\": 1004", "\"memory_bytes\": \"1004\"",
     "replicas[1].stages[0].devices[0].memory_bytes: must be a number >= 0"},
    {"\"fwd_s\": 0.011", "\"fwd_s\": true", "replicas[0].stages[0].fwd_s: must be a number >= 0"},
    /* found by fuzzing: the simulator's sums overflowed to infinity */
    {"\"fwd_s\": 0.011", "\"fwd_s\": 1e308",
     "replicas[0].stages[0].fwd_s: 1e+308 is beyond any real plan (at most 1e+18)"},
    {"\"predicted_step_s\": 0.5", "\"predicted_step_s\": -0.5",
     "predicted_step_s: must be a number >= 0"},
    {"\"p2p_s\": 0.03, ", "", "breakdown.p2p_s: missing"},
    {"\"breakdown\": {", "\"breakdown\": [{", "malformed JSON"}, /* unbalanced */
    /* micro-batches, schedule, optimizer */
    {"\"microbatches\": 4", "\"microbatches\": 0", "microbatches: must be an integer >= 1"},
    {"\"microbatches\": 4", "\"microbatches\": 64",
     "microbatches: 64 micro-batches is more than the batch of 32 samples"},
    /* found by fuzzing: the simulator allocated stages x micro-batches */
    {"\"microbatches\": 4", "\"microbatches\": 1000000000000000",
     "microbatches: 1000000000000000 micro-batches, more than the 16384 a plan may have"},
    {"\"batch\": 32", "\"batch\": 0", "batch: must be an integer >= 1"},
    {"\"schedule\": \"1f1b\"", "\"schedule\": \"zb-h1\"",
     "schedule: unknown schedule 'zb-h1' (gpipe or 1f1b)"},
    {"\"schedule\": \"1f1b\"", "\"schedule\": 1", "schedule: must be a string"},
    {"\"optimizer_slots\": 2", "\"optimizer_slots\": -1",
     "optimizer_slots: must be an integer >= 0"},
    /* alternatives */
    {"\"rejected\": \"does not fit\"", "\"rejected\": 3",
     "alternatives[0].rejected: must be a string"},
    {"\"predicted_step_s\": null", "\"predicted_step_s\": \"fast\"",
     "alternatives[0].predicted_step_s: must be a number >= 0, or null"},
    {"{\"description\": \"dp=1 pp=8 tp=1 m=4 1f1b\", ", "{",
     "alternatives[0].description: missing"},
    /* JSON itself */
    {"\"dp\": 2,", "\"dp\": 2, \"dp\": 2,", "bad.json:1:"}, /* duplicate key, line 1 */
};

START_TEST(malformed_refused)
{
    char *text = mutate(bad_cases[_i].from, bad_cases[_i].to);
    mpt__plan_t sentinel, *p = &sentinel; /* must be reset to NULL */
    int status = mpt__plan_from_json(text, "bad.json", BASE_LAYERS, BASE_DEVICES, &p);
    ck_assert_msg(status == MPT_ERR_PARSE, "case %d (%s -> %s): %s, expected MPT_ERR_PARSE (%s)",
                  _i, bad_cases[_i].from, bad_cases[_i].to, mpt_status_name(status),
                  mpt_last_error());
    ck_assert_ptr_null(p);
    /* One line, naming the file first. */
    ck_assert_msg(strncmp(mpt_last_error(), "bad.json", 8) == 0, "\"%s\" does not name the file",
                  mpt_last_error());
    ck_assert_ptr_null(strchr(mpt_last_error(), '\n'));
    ck_assert_error_mentions(bad_cases[_i].detail);
    free(text);
}
END_TEST

START_TEST(other_inputs_refused)
{
    mpt__plan_t *p = NULL;
    /* Not JSON: the line and column of the first bad character. */
    ck_assert_mpt_fails(mpt__plan_from_json("{\"dp\": 2,\n  oops}", "x.json", 6, 8, &p),
                        MPT_ERR_PARSE);
    ck_assert_error_mentions("x.json:2:");
    ck_assert_error_mentions("malformed JSON");
    ck_assert_mpt_fails(mpt__plan_from_json("", "empty.json", 6, 8, &p), MPT_ERR_PARSE);
    ck_assert_error_mentions("empty.json:1:");
    ck_assert_mpt_fails(mpt__plan_from_json("[1, 2]", "list.json", 6, 8, &p), MPT_ERR_PARSE);
    ck_assert_error_mentions("list.json: the top level must be an object");
    /* The model and cluster the plan is read against. */
    ck_assert_mpt_fails(mpt__plan_from_json(base_plan, "few.json", 7, 8, &p), MPT_ERR_PARSE);
    ck_assert_error_mentions("few.json: replicas[0].stages[1].layers: the last stage ends at "
                            "layer 5, but the model has 7 layers");
    ck_assert_mpt_fails(mpt__plan_from_json(base_plan, "small.json", 6, 4, &p), MPT_ERR_PARSE);
    ck_assert_error_mentions("small.json: replicas[1].stages[0].devices[0].device: 4 is not a "
                            "device of the cluster (it has 4)");
    ck_assert_ptr_null(p);
    /* A NULL where names a default rather than crashing. */
    ck_assert_mpt_fails(mpt__plan_from_json("[]", NULL, 6, 8, &p), MPT_ERR_PARSE);
    ck_assert_error_mentions("plan: the top level");
}
END_TEST

/* The public text form: a plan made by the planner goes to text and back
 * (mpt_plan_to_json, mpt_plan_from_json) unchanged, and a text that does
 * not fit the model or the cluster is refused as a file would be, naming
 * "plan text".  The model is built in memory, the cluster is a fixture. */
START_TEST(public_text_round_trip)
{
    mpt_model_builder_t *b = NULL;
    mpt_model_t *model = NULL;
    mpt_cluster_t *cluster = NULL;
    mpt_plan_t *plan = NULL, *back = NULL;
    mpt_plan_request_t req;
    char *text = NULL, *again = NULL;
    const size_t in[] = {16};
    ck_assert_mpt_ok(mpt_model_builder_new("six", 1, in, &b));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "linear", "units=32"));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "relu", NULL));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "linear", "units=32"));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "relu", ""));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "linear", "units=4"));
    ck_assert_mpt_ok(mpt_model_builder_add(b, "softmax_cross_entropy", NULL));
    ck_assert_mpt_ok(mpt_model_builder_build(b, &model));
    ck_assert_mpt_ok(mpt_cluster_load(test_path("fixtures/cluster-minimal.json"), &cluster));
    mpt_plan_request_default(&req);
    req.batch = 32;
    ck_assert_mpt_ok(mpt_plan_create(model, cluster, &req, &plan));
    ck_assert_mpt_ok(mpt_plan_to_json(plan, &text));
    ck_assert_mpt_ok(mpt_plan_from_json(text, model, cluster, &back));
    ck_assert_mpt_ok(mpt_plan_to_json(back, &again));
    ck_assert_str_eq(again, text);
    ck_assert_uint_eq(back->batch, 32);

    /* base_plan has 8 devices and 6 layers: this cluster has 2. */
    mpt_plan_t *bad = (mpt_plan_t *)1;
    ck_assert_mpt_fails(mpt_plan_from_json(base_plan, model, cluster, &bad), MPT_ERR_PARSE);
    ck_assert_ptr_null(bad);
    ck_assert_error_mentions("plan text: replicas[0].stages[1].devices[0].device: 2 is not a "
                             "device of the cluster (it has 2)");
    ck_assert_mpt_fails(mpt_plan_from_json("{", model, cluster, &bad), MPT_ERR_PARSE);
    ck_assert_error_mentions("plan text:1:");
    ck_assert_mpt_fails(mpt_plan_from_json(NULL, model, cluster, &bad), MPT_ERR_INVALID);
    free(text);
    free(again);
    mpt_plan_free(plan);
    mpt_plan_free(back);
    mpt_cluster_free(cluster);
    mpt_model_free(model);
    mpt_model_builder_free(b);
}
END_TEST

static Suite *plan_json_suite(void)
{
    Suite *s = suite_create("plan_json");
    TCase *tc = tcase_create("plan_json");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, round_trip_dp2_pp2_tp2);
    tcase_add_test(tc, round_trip_alternatives);
    tcase_add_test(tc, to_json_refuses_non_finite);
    tcase_add_test(tc, base_plan_reads);
    tcase_add_test(tc, lenient_where_documented);
    tcase_add_loop_test(tc, malformed_refused, 0, (int)(sizeof bad_cases / sizeof *bad_cases));
    tcase_add_test(tc, other_inputs_refused);
    tcase_add_test(tc, public_text_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(plan_json_suite(), 1);
}
