/*
 * tests/check_plan_sim.c: the step simulator (plan/simulate.c) on plans
 * built by hand over small cluster files written to a temporary directory:
 * the textbook pipeline figures for uniform stages (GPipe and 1F1B), a
 * bottleneck stage, a hand-worked 1F1B timeline, transfers on the critical
 * path, the per-stage all-reduce of data parallelism, per-device busy time
 * and utilisation, the Chrome trace, and bad plans.
 *
 * Expected times come from closed forms, not from the simulator.  Times are
 * a few hundred milliseconds at most, sums of at most a few hundred doubles,
 * so rounding stays below 1e-15 s; the 1e-9 s tolerance (asked of the
 * textbook formulas) leaves that far behind while a single missing or extra
 * op (>= 1e-4 s here) fails loudly.  Opens no OpenCL device: runs forked.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "plan/plan.h"
#include "testutil.h"

#define TOL 1e-9 /* seconds; see the header comment */
#define F_S 1e-3 /* forward of a uniform stage, per micro-batch */
#define B_S 2e-3 /* its backward */
#define NLAYERS 16

/* ---- fixtures ---------------------------------------------------------------- */

/* Writes a one-node cluster of n identical devices (host links of h2d_gbps
 * both ways, launch_us per copy) to a temporary file and loads it. */
static mpt_cluster_t *make_cluster(size_t n, double gbps, double launch_us)
{
    char dir[] = "/tmp/mpt-sim-XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/cluster.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"mpt_cluster\": 1, \"name\": \"sim\", \"devices\": [");
    for (size_t i = 0; i < n; i++)
        fprintf(f,
                "%s{\"name\": \"gpu%zu\", \"type\": \"gpu\", \"global_mem_bytes\": 8589934592, "
                "\"numa_node\": 0, \"profile\": {\"gemm_gflops\": 1000, \"mem_gbps\": 100, "
                "\"h2d_gbps\": %.17g, \"d2h_gbps\": %.17g, \"launch_us\": %.17g}}",
                i ? ", " : "", i, gbps, gbps, launch_us);
    fprintf(f, "]}\n");
    ck_assert_int_eq(fclose(f), 0);
    mpt_cluster_t *c = NULL;
    ck_assert_mpt_ok(mpt_cluster_load(path, &c));
    unlink(path);
    rmdir(dir);
    return c;
}

/* NLAYERS layers, each sending out_bytes per sample and holding
 * param_bytes of parameters. */
static mpt__model_cost_t make_costs(double out_bytes, double param_bytes)
{
    mpt__model_cost_t mc = {NLAYERS, calloc(NLAYERS, sizeof(mpt__layer_cost_t)), 4};
    ck_assert_ptr_nonnull(mc.layers);
    for (size_t l = 0; l < NLAYERS; l++)
        mc.layers[l].out_bytes = out_bytes, mc.layers[l].param_bytes = param_bytes;
    return mc;
}

/* dp replicas of p stages of tp devices each, replica r stage s member g on
 * device (r * p + s) * tp + g, stage s taking NLAYERS / p layers and fwd[s],
 * bwd[s] per micro-batch (uniform F_S, B_S when NULL).  The batch gives 4
 * samples per micro-batch. */
static mpt__plan_t *make_plan(size_t dp, size_t p, size_t tp, size_t m,
                              mpt__pipe_schedule_t sched, const double *fwd, const double *bwd)
{
    mpt__plan_t *pl = calloc(1, sizeof *pl);
    ck_assert_ptr_nonnull(pl);
    pl->dp = pl->nreplicas = dp, pl->pp = p, pl->tp = tp, pl->microbatches = m;
    pl->batch = 4 * m * dp, pl->schedule = sched, pl->optimizer_slots = 1;
    pl->replicas = calloc(dp, sizeof *pl->replicas);
    ck_assert_ptr_nonnull(pl->replicas);
    for (size_t r = 0; r < dp; r++) {
        mpt__plan_replica_t *rep = &pl->replicas[r];
        rep->batch_share = 1.0 / (double)dp, rep->nstages = p;
        rep->stages = calloc(p, sizeof *rep->stages);
        ck_assert_ptr_nonnull(rep->stages);
        for (size_t s = 0; s < p; s++) {
            mpt__plan_stage_t *st = &rep->stages[s];
            st->first = s * (NLAYERS / p), st->last = (s + 1) * (NLAYERS / p) - 1;
            st->fwd_s = fwd ? fwd[s] : F_S, st->bwd_s = bwd ? bwd[s] : B_S;
            st->ndevices = tp;
            st->devices = calloc(tp, sizeof *st->devices);
            ck_assert_ptr_nonnull(st->devices);
            for (size_t g = 0; g < tp; g++)
                st->devices[g] = (mpt__plan_device_t){(r * p + s) * tp + g, 1.0 / (double)tp, 0};
        }
    }
    return pl;
}

/* Frees what make_plan built (by hand, not depending on plan.c). */
static void free_plan(mpt__plan_t *pl)
{
    for (size_t r = 0; r < pl->nreplicas; r++) {
        for (size_t s = 0; s < pl->replicas[r].nstages; s++)
            free(pl->replicas[r].stages[s].devices);
        free(pl->replicas[r].stages);
    }
    free(pl->replicas);
    free(pl);
}

static mpt__sim_result_t simulate(const mpt__plan_t *pl, const mpt__model_cost_t *mc,
                                  const mpt_cluster_t *c, char **trace)
{
    mpt__sim_result_t r = {0};
    ck_assert_mpt_ok(mpt__simulate(pl, mc, c, &r, trace));
    ck_assert_uint_eq(r.ndevices, mpt_cluster_device_count(c));
    ck_assert_ptr_nonnull(r.busy_s);
    ck_assert_ptr_nonnull(r.utilisation);
    return r;
}

/* What every result satisfies: utilisation in [0, 1] and busy / step, and
 * the critical path split adding up to the step. */
static void check_invariants(const mpt__sim_result_t *r)
{
    for (size_t d = 0; d < r->ndevices; d++) {
        ck_assert_msg(r->utilisation[d] >= 0 && r->utilisation[d] <= 1 + 1e-12,
                      "device %zu utilisation %g", d, r->utilisation[d]);
        ck_assert_double_eq_tol(r->utilisation[d] * r->step_s, r->busy_s[d], TOL);
    }
    ck_assert_msg(r->bubble_fraction >= -1e-12 && r->bubble_fraction < 1,
                  "bubble %g", r->bubble_fraction);
    ck_assert_double_eq_tol(r->compute_s + r->p2p_s + r->allreduce_s, r->step_s, TOL);
}

/* Near-free transfers: 1e12 GB/s, no launch latency. */
static mpt_cluster_t *free_links(size_t n)
{
    return make_cluster(n, 1e12, 0);
}

/* ---- (a) uniform stages ------------------------------------------------------- */

START_TEST(test_uniform)
{
    static const size_t ps[] = {2, 4, 8}, ms[] = {1, 4, 16, 32};
    mpt_cluster_t *c = free_links(8);
    mpt__model_cost_t mc = make_costs(4, 100);
    /* The premise: 16-byte activations cost nothing that shows at 1e-9 s. */
    ck_assert_double_lt(mpt__cost_transfer(c, 0, 1, 16), 1e-15);
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < 4; j++) {
            size_t p = ps[i], m = ms[j];
            double step[2];
            for (int sched = 0; sched < 2; sched++) {
                mpt__plan_t *pl = make_plan(1, p, 1, m, (mpt__pipe_schedule_t)sched, NULL, NULL);
                mpt__sim_result_t r = simulate(pl, &mc, c, NULL);
                /* The textbook pipeline: m + p - 1 slots of one F and one B. */
                ck_assert_msg(fabs(r.step_s - (double)(m + p - 1) * (F_S + B_S)) < TOL,
                              "p=%zu m=%zu %s: step %.12g s, expected %.12g s", p, m,
                              sched ? "1f1b" : "gpipe", r.step_s,
                              (double)(m + p - 1) * (F_S + B_S));
                ck_assert_msg(fabs(r.bubble_fraction - (double)(p - 1) / (double)(m + p - 1)) < 1e-9,
                              "p=%zu m=%zu %s: bubble %.12g, expected %.12g", p, m,
                              sched ? "1f1b" : "gpipe", r.bubble_fraction,
                              (double)(p - 1) / (double)(m + p - 1));
                ck_assert_double_eq_tol(r.allreduce_s, 0, TOL); /* one replica */
                for (size_t d = 0; d < 8; d++)
                    ck_assert_double_eq_tol(r.busy_s[d], d < p ? (double)m * (F_S + B_S) : 0,
                                            TOL);
                check_invariants(&r);
                step[sched] = r.step_s;
                mpt__sim_result_free(&r);
                ck_assert_ptr_null(r.busy_s);
                free_plan(pl);
            }
            /* 1F1B saves activation memory, not time, on uniform stages. */
            ck_assert_double_eq_tol(step[0], step[1], TOL);
        }
    free(mc.layers);
    mpt_cluster_free(c);
}
END_TEST

/* ---- (b) a bottleneck stage ------------------------------------------------------ */

START_TEST(test_bottleneck)
{
    mpt_cluster_t *c = free_links(8);
    mpt__model_cost_t mc = make_costs(4, 100);
    for (size_t slow = 0; slow < 4; slow++) {
        double fwd[4] = {F_S, F_S, F_S, F_S}, bwd[4] = {B_S, B_S, B_S, B_S};
        fwd[slow] *= 2, bwd[slow] *= 2;
        double sum = 3 * (F_S + B_S) + 2 * (F_S + B_S), per = 2 * (F_S + B_S);
        for (size_t m = 1; m <= 16; m *= 4) {
            mpt__plan_t *pl = make_plan(1, 4, 1, m, MPT__PIPE_GPIPE, fwd, bwd);
            mpt__sim_result_t r = simulate(pl, &mc, c, NULL);
            /* GPipe: the first micro-batch's trip through every stage, then
             * the slow stage's m - 1 further F + B (stages after it keep up
             * forward, before it backward). */
            ck_assert_msg(fabs(r.step_s - ((double)(m - 1) * per + sum)) < TOL,
                          "slow=%zu m=%zu: step %.12g, expected %.12g", slow, m, r.step_s,
                          (double)(m - 1) * per + sum);
            ck_assert_double_eq_tol(r.busy_s[slow], (double)m * per, TOL);
            ck_assert_double_eq_tol(r.utilisation[slow], (double)m * per / r.step_s, 1e-12);
            check_invariants(&r);
            mpt__sim_result_free(&r);
            free_plan(pl);

            /* 1F1B overlaps the slow stage's backwards with the forwards of
             * later micro-batches: never slower here than GPipe, never
             * faster than the slow stage's own work plus the stages before
             * it on the first forward and the last backward. */
            pl = make_plan(1, 4, 1, m, MPT__PIPE_1F1B, fwd, bwd);
            r = simulate(pl, &mc, c, NULL);
            ck_assert_double_le_tol(r.step_s, (double)(m - 1) * per + sum, TOL);
            ck_assert_double_ge_tol(r.step_s, (double)m * per + (double)slow * (F_S + B_S), TOL);
            ck_assert_double_eq_tol(r.busy_s[slow], (double)m * per, TOL);
            check_invariants(&r);
            mpt__sim_result_free(&r);
            free_plan(pl);
        }
    }
    free(mc.layers);
    mpt_cluster_free(c);
}
END_TEST

/* Two stages, the first twice as slow (F 2, B 4 ms; then F 1, B 2 ms), two
 * micro-batches.  Worked by hand, in ms:
 *   GPipe  s0: F0 0-2, F1 2-4;  s1: F0 2-3, F1 4-5, B1 5-7, B0 7-9;
 *          s0: B1 7-11, B0 11-15                               -> 15 ms.
 *   1F1B   s0 (1 warm-up): F0 0-2, F1 2-4, B0 5-9, B1 9-13;
 *          s1: F0 2-3, B0 3-5, F1 5-6, B1 6-8                  -> 13 ms. */
START_TEST(test_hand_timeline)
{
    mpt_cluster_t *c = free_links(2);
    mpt__model_cost_t mc = make_costs(4, 100);
    const double fwd[2] = {2e-3, 1e-3}, bwd[2] = {4e-3, 2e-3};
    const double expected[2] = {15e-3, 13e-3};
    for (int sched = 0; sched < 2; sched++) {
        mpt__plan_t *pl = make_plan(1, 2, 1, 2, (mpt__pipe_schedule_t)sched, fwd, bwd);
        mpt__sim_result_t r = simulate(pl, &mc, c, NULL);
        ck_assert_msg(fabs(r.step_s - expected[sched]) < TOL, "%s: step %.12g, expected %.12g",
                      sched ? "1f1b" : "gpipe", r.step_s, expected[sched]);
        /* Busy 12 + 6 ms of 2 x makespan. */
        ck_assert_double_eq_tol(r.bubble_fraction, 1 - 18e-3 / (2 * expected[sched]), 1e-12);
        check_invariants(&r);
        mpt__sim_result_free(&r);
        free_plan(pl);
    }
    free(mc.layers);
    mpt_cluster_free(c);
}
END_TEST

/* ---- (c) transfers ------------------------------------------------------------ */

START_TEST(test_transfers)
{
    /* 1 GB/s each way and 10 us per copy: plan.h's within-node transfer,
     * d2h of a + h2d of b + one launch latency each, moves the 4 samples x
     * 25000 bytes of a micro-batch in 2 x 1e5 / 1e9 + 2 x 10e-6 = 0.22 ms,
     * less than a forward (1 ms), so links never queue. */
    mpt_cluster_t *c = make_cluster(8, 1.0, 10.0);
    mpt__model_cost_t mc = make_costs(25000, 100), quiet = make_costs(0, 100);
    const double t = 2 * 1e5 / 1e9 + 2 * 10e-6;
    ck_assert_double_eq_tol(mpt__cost_transfer(c, 0, 1, 1e5), t, 1e-15);
    ck_assert_double_eq_tol(mpt__cost_transfer(c, 0, 1, 0), 0, 1e-15);
    for (size_t p = 2; p <= 8; p *= 2)
        for (size_t m = 1; m <= 32; m *= 4) {
            double base = (double)(m + p - 1) * (F_S + B_S);
            mpt__plan_t *pl = make_plan(1, p, 1, m, MPT__PIPE_GPIPE, NULL, NULL);
            mpt__sim_result_t r = simulate(pl, &mc, c, NULL);
            /* GPipe: p - 1 boundaries crossed forward, and back. */
            ck_assert_msg(fabs(r.step_s - (base + 2.0 * (double)(p - 1) * t)) < TOL,
                          "p=%zu m=%zu: step %.12g, expected %.12g", p, m, r.step_s,
                          base + 2.0 * (double)(p - 1) * t);
            ck_assert_double_eq_tol(r.p2p_s, 2.0 * (double)(p - 1) * t, TOL);
            ck_assert_double_eq_tol(r.compute_s, base, TOL);
            /* Transfers occupy links, not devices. */
            for (size_t d = 0; d < p; d++)
                ck_assert_double_eq_tol(r.busy_s[d], (double)m * (F_S + B_S), TOL);
            check_invariants(&r);
            mpt__sim_result_free(&r);
            free_plan(pl);

            /* 1F1B: without transfers the last stage computes without a
             * gap, so the chain "micro-batch 0 forward through every
             * stage, the last stage's 2m ops, micro-batch m-1 backward to
             * stage 0" is base long; with transfers it gains 2 (p-1) t,
             * and the step is at least that.  No path computes more than
             * base (the makespan without transfers), so the critical
             * path's transfers make up at least the difference. */
            pl = make_plan(1, p, 1, m, MPT__PIPE_1F1B, NULL, NULL);
            mpt__sim_result_t zero = simulate(pl, &quiet, c, NULL);
            r = simulate(pl, &mc, c, NULL);
            ck_assert_double_eq_tol(zero.step_s, base, TOL);
            ck_assert_double_ge_tol(r.step_s, base + 2.0 * (double)(p - 1) * t, TOL);
            ck_assert_double_ge_tol(r.p2p_s, 2.0 * (double)(p - 1) * t, TOL);
            check_invariants(&r);
            mpt__sim_result_free(&zero);
            mpt__sim_result_free(&r);
            free_plan(pl);
        }
    free(quiet.layers);
    free(mc.layers);
    mpt_cluster_free(c);
}
END_TEST

/* ---- (d) data parallelism ------------------------------------------------------- */

START_TEST(test_allreduce)
{
    /* 10 GB/s, no latency, activations of 0 bytes: the pipelines run as
     * without links, and all-reduces of MB-sized gradients take ms. */
    enum { P = 4, M = 8 };
    mpt_cluster_t *c = make_cluster(2 * P, 10.0, 0);
    double base = (M + P - 1) * (F_S + B_S);
    for (int big_last = 0; big_last < 2; big_last++) {
        mpt__model_cost_t mc = make_costs(0, 1e6);
        if (big_last) /* stage 3 (layers 12-15) holds 10x the parameters */
            for (size_t l = 12; l < 16; l++)
                mc.layers[l].param_bytes = 1e7;
        mpt__plan_t *pl = make_plan(2, P, 1, M, MPT__PIPE_GPIPE, NULL, NULL);
        mpt__sim_result_t r = simulate(pl, &mc, c, NULL);
        /* GPipe: stage s ends with B0 at base - s * B_S; its all-reduce
         * over devices s and P + s follows, the step ends with the last. */
        double want = 0, want_ar = 0;
        for (size_t s = 0; s < P; s++) {
            size_t devs[2] = {s, P + s};
            double ar = mpt__cost_allreduce(c, devs, 2, 4 * mc.layers[4 * s].param_bytes);
            ck_assert_double_gt(ar, 1e-4); /* the test means something */
            double end = base - (double)s * B_S + ar;
            if (end > want)
                want = end, want_ar = ar;
        }
        ck_assert_msg(fabs(r.step_s - want) < TOL, "big_last=%d: step %.12g, expected %.12g",
                      big_last, r.step_s, want);
        ck_assert_double_eq_tol(r.allreduce_s, want_ar, TOL);
        /* Collectives are not bubble, and replicas run side by side. */
        ck_assert_double_eq_tol(r.bubble_fraction, (double)(P - 1) / (M + P - 1), 1e-9);
        for (size_t d = 0; d < 2 * P; d++)
            ck_assert_double_eq_tol(r.busy_s[d], M * (F_S + B_S), TOL);
        check_invariants(&r);
        mpt__sim_result_free(&r);
        free_plan(pl);
        free(mc.layers);
    }
    mpt_cluster_free(c);
}
END_TEST

/* ---- (e) busy time and tensor-parallel groups ----------------------------------- */

START_TEST(test_busy_tp)
{
    /* 2 stages of 2 devices each (tp = 2) and 4 unused devices. */
    mpt_cluster_t *c = free_links(8);
    mpt__model_cost_t mc = make_costs(4, 100);
    const double fwd[2] = {1e-3, 3e-3}, bwd[2] = {2e-3, 5e-3};
    for (int sched = 0; sched < 2; sched++) {
        mpt__plan_t *pl = make_plan(1, 2, 2, 6, (mpt__pipe_schedule_t)sched, fwd, bwd);
        mpt__sim_result_t r = simulate(pl, &mc, c, NULL);
        double busy = 0;
        for (size_t d = 0; d < 8; d++) {
            double want = d < 4 ? 6 * (fwd[d / 2] + bwd[d / 2]) : 0;
            ck_assert_double_eq_tol(r.busy_s[d], want, TOL);
            busy += r.busy_s[d];
        }
        ck_assert_double_eq(r.utilisation[5], 0);
        /* Bubble over the 4 pipeline devices only. */
        ck_assert_double_eq_tol(r.bubble_fraction, 1 - busy / (4 * r.step_s), 1e-12);
        check_invariants(&r);
        mpt__sim_result_free(&r);
        free_plan(pl);
    }
    free(mc.layers);
    mpt_cluster_free(c);
}
END_TEST

/* ---- (f) the trace ---------------------------------------------------------------- */

typedef struct {
    long long pid, tid;
    double ts, dur;
} span_t;

static int by_track(const void *a, const void *b)
{
    const span_t *x = a, *y = b;
    if (x->pid != y->pid)
        return x->pid < y->pid ? -1 : 1;
    if (x->tid != y->tid)
        return x->tid < y->tid ? -1 : 1;
    return (x->ts > y->ts) - (x->ts < y->ts);
}

START_TEST(test_trace)
{
    enum { DP = 2, P = 4, M = 6 };
    mpt_cluster_t *c = make_cluster(DP * P, 1.0, 10.0);
    mpt__model_cost_t mc = make_costs(25000, 1e6);
    for (int sched = 0; sched < 2; sched++) {
        mpt__plan_t *pl = make_plan(DP, P, 1, M, (mpt__pipe_schedule_t)sched, NULL, NULL);
        char *text = NULL;
        mpt__sim_result_t r = simulate(pl, &mc, c, &text);
        ck_assert_ptr_nonnull(text);
        json_error_t err;
        json_t *root = json_loads(text, 0, &err);
        ck_assert_msg(root != NULL, "trace is not JSON: %s (line %d)", err.text, err.line);
        json_t *events = json_object_get(root, "traceEvents");
        ck_assert(json_is_array(events));
        size_t n = json_array_size(events), compute = 0, sends = 0, allreduces = 0, named = 0;
        span_t *spans = calloc(n, sizeof *spans);
        ck_assert_ptr_nonnull(spans);
        size_t nspans = 0;
        double last_end = 0;
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(events, i);
            const char *ph = json_string_value(json_object_get(e, "ph"));
            const char *name = json_string_value(json_object_get(e, "name"));
            ck_assert_ptr_nonnull(ph);
            ck_assert_ptr_nonnull(name);
            ck_assert(json_is_integer(json_object_get(e, "pid")));
            ck_assert(json_is_integer(json_object_get(e, "tid")));
            if (strcmp(ph, "M") == 0) {
                const char *track = json_string_value(
                    json_object_get(json_object_get(e, "args"), "name"));
                ck_assert_ptr_nonnull(track);
                named += strcmp(name, "thread_name") == 0 && strncmp(track, "device ", 7) == 0;
                continue;
            }
            ck_assert_str_eq(ph, "X");
            span_t sp = {json_integer_value(json_object_get(e, "pid")),
                         json_integer_value(json_object_get(e, "tid")),
                         json_number_value(json_object_get(e, "ts")),
                         json_number_value(json_object_get(e, "dur"))};
            ck_assert(json_is_number(json_object_get(e, "ts")));
            ck_assert(json_is_number(json_object_get(e, "dur")));
            ck_assert_msg(sp.ts >= 0 && sp.dur >= 0, "event %zu: ts %g dur %g", i, sp.ts, sp.dur);
            last_end = fmax(last_end, sp.ts + sp.dur);
            spans[nspans++] = sp;
            json_t *args = json_object_get(e, "args");
            ck_assert(json_is_object(args));
            if ((name[0] == 'F' || name[0] == 'B') && name[1] >= '0' && name[1] <= '9') {
                compute++;
                ck_assert(json_is_integer(json_object_get(args, "microbatch")));
                ck_assert(json_is_integer(json_object_get(args, "first_layer")));
                ck_assert(json_is_integer(json_object_get(args, "last_layer")));
                ck_assert_int_eq(atoi(name + 1),
                                 json_integer_value(json_object_get(args, "microbatch")));
            } else if (strcmp(name, "send") == 0) {
                sends++;
            } else {
                ck_assert_str_eq(name, "allreduce");
                allreduces++;
            }
        }
        ck_assert_uint_eq(compute, 2 * M * P * DP);
        ck_assert_uint_eq(sends, 2 * M * (P - 1) * DP); /* each boundary, both ways */
        ck_assert_uint_eq(allreduces, P * DP);          /* one per stage, on each device */
        ck_assert_uint_eq(named, P * DP);               /* "device N" per device track */
        /* The last event ends with the step (µs; 1e-6 µs = 1e-12 s of rounding). */
        ck_assert_double_eq_tol(last_end, r.step_s * 1e6, 1e-6);
        /* No two events of one track overlap (same 1e-6 µs slack: ts and
         * dur are products by 1e6). */
        qsort(spans, nspans, sizeof *spans, by_track);
        for (size_t i = 1; i < nspans; i++)
            if (spans[i].pid == spans[i - 1].pid && spans[i].tid == spans[i - 1].tid)
                ck_assert_msg(spans[i].ts >= spans[i - 1].ts + spans[i - 1].dur - 1e-6,
                              "pid %lld tid %lld: event at %.9f us overlaps one ending at "
                              "%.9f us", spans[i].pid, spans[i].tid, spans[i].ts,
                              spans[i - 1].ts + spans[i - 1].dur);
        free(spans);
        json_decref(root);
        free(text);
        mpt__sim_result_free(&r);
        free_plan(pl);
    }
    free(mc.layers);
    mpt_cluster_free(c);
}
END_TEST

/* ---- bad plans -------------------------------------------------------------------- */

START_TEST(test_bad_plans)
{
    mpt_cluster_t *c = free_links(4);
    mpt__model_cost_t mc = make_costs(4, 100);
    mpt__sim_result_t r = {0};
    char *text = (char *)"untouched";
    mpt__plan_t *pl = make_plan(1, 2, 1, 2, MPT__PIPE_GPIPE, NULL, NULL);

    ck_assert_mpt_fails(mpt__simulate(NULL, &mc, c, &r, &text), MPT_ERR_INVALID);
    ck_assert_ptr_null(text); /* cleared on every path */
    ck_assert_mpt_fails(mpt__simulate(pl, NULL, c, &r, NULL), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__simulate(pl, &mc, NULL, &r, NULL), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__simulate(pl, &mc, c, NULL, NULL), MPT_ERR_INVALID);

    pl->replicas[0].stages[1].devices[0].device = 4; /* the cluster has 0-3 */
    ck_assert_mpt_fails(mpt__simulate(pl, &mc, c, &r, NULL), MPT_ERR_RANGE);
    ck_assert_ptr_null(r.busy_s);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "device 4"));
    pl->replicas[0].stages[1].devices[0].device = 1;

    pl->replicas[0].stages[1].last = NLAYERS; /* one past the model */
    ck_assert_mpt_fails(mpt__simulate(pl, &mc, c, &r, NULL), MPT_ERR_RANGE);
    pl->replicas[0].stages[1].last = NLAYERS - 1;

    pl->replicas[0].stages[0].bwd_s = -1;
    ck_assert_mpt_fails(mpt__simulate(pl, &mc, c, &r, NULL), MPT_ERR_INVALID);
    pl->replicas[0].stages[0].bwd_s = NAN;
    ck_assert_mpt_fails(mpt__simulate(pl, &mc, c, &r, NULL), MPT_ERR_INVALID);
    pl->replicas[0].stages[0].bwd_s = B_S;

    pl->microbatches = 0;
    ck_assert_mpt_fails(mpt__simulate(pl, &mc, c, &r, NULL), MPT_ERR_INVALID);
    pl->microbatches = 2;

    /* Still good after all that. */
    ck_assert_mpt_ok(mpt__simulate(pl, &mc, c, &r, NULL));
    ck_assert_double_eq_tol(r.step_s, 3 * (F_S + B_S), TOL);
    mpt__sim_result_free(&r);
    mpt__sim_result_free(&r); /* twice is harmless */
    mpt__sim_result_free(NULL);
    free_plan(pl);

    /* Replicas of different depths cannot pair their stages. */
    mpt__plan_t *two = make_plan(2, 2, 1, 2, MPT__PIPE_GPIPE, NULL, NULL);
    two->replicas[1].nstages = 1;
    ck_assert_mpt_fails(mpt__simulate(two, &mc, c, &r, NULL), MPT_ERR_INVALID);
    two->replicas[1].nstages = 2;
    free_plan(two);

    free(mc.layers);
    mpt_cluster_free(c);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("plan_sim");
    TCase *tc = tcase_create("simulate");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_uniform);
    tcase_add_test(tc, test_bottleneck);
    tcase_add_test(tc, test_hand_timeline);
    tcase_add_test(tc, test_transfers);
    tcase_add_test(tc, test_allreduce);
    tcase_add_test(tc, test_busy_tp);
    tcase_add_test(tc, test_trace);
    tcase_add_test(tc, test_bad_plans);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(suite(), 1);
}
