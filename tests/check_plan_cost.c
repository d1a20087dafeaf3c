/*
 * tests/check_plan_cost.c: the cost model (plan/cost.c) and the pipeline
 * partition (plan/partition.c).
 *
 * Partition:
 * - optimality: 300 random instances (1-8 layers, 1-4 stages, random
 *   layer costs, stage speeds and memory budgets that make some ranges
 *   not fit; every other one with a heavy first or last layer and at least
 *   3 stages, so that many splits share the bottleneck and the tie-break
 *   decides) against a brute force over every split: the same bottleneck
 *   (exactly: both take the max of the same callback values), the returned
 *   split achieves it and has the brute force's smallest sum among splits
 *   of that bottleneck; instances where nothing fits fail with
 *   MPT_ERR_DEVICE_MEMORY in both;
 * - heterogeneous stages: 40 equal layers on speeds 2:1 give the fast stage
 *   27 (26 or 27 asserted);
 * - memory: the returned split never exceeds a stage's budget (one that
 *   the unconstrained split would exceed); the error names a layer too big
 *   for every stage, the last stage when it is left too much, the first
 *   when it holds nothing; more stages than layers is MPT_ERR_RANGE;
 * - work: 96 layers over 64 and 96 stages call the cost callback at most
 *   2 S L^2 times (the O(S L^2) bound, counted instead of timed).
 *
 * Cost model:
 * - mpt__model_cost of models/mlp-fashion.json and cnn-fashion.json: the
 *   FLOPs of nn/layers.c, parameter, activation and saved bytes, launches;
 * - mpt__cost_layers on devices of a cluster file written here: the
 *   roofline formula of cost.c, share 0.5 halves all but the launch term, a
 *   device twice as fast in GEMM takes half the time of compute-bound
 *   layers and the same on memory-bound ones, and the GEMM rate follows the
 *   profile's points (interpolated in log FLOPs, held outside them);
 * - mpt__cost_transfer: 0 on one device, symmetric between equal devices,
 *   larger across nodes by the network term exactly;
 * - mpt__cost_allreduce: 0 for n <= 1, 2 (n-1)/n S/B + 2 (n-1) lat on equal
 *   devices, the slowest hop when one crosses nodes;
 * - mpt__cost_memory: AdamW holds parameters x 4 plus activations, SGD
 *   momentum one copy less, more micro-batches in flight more, accumulating
 *   micro-batches one gradient copy more, two working buffers of the widest
 *   activation.
 *
 * Tolerances: the model's figures are products of small integers, exact in
 * double: compared exactly.  Times are compared with the formula at
 * relative 1e-12: the same IEEE operations in perhaps another order, a few
 * ulp (1e-16 each) over at most a dozen terms.  Sums of stage costs of two
 * different splits of equal value may round differently: relative 1e-12.
 *
 * Touches no device: runs forked.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "plan/plan.h"
#include "testutil.h"

#define REL 1e-12

#define ck_assert_close(got, want)                                             \
    do {                                                                       \
        double g_ = (got), w_ = (want);                                        \
        ck_assert_msg(fabs(g_ - w_) <= REL * fabs(w_), "%s = %.17g, expected %.17g", #got, g_, \
                      w_);                                                     \
    } while (0)

/* ---- partition: random instances against brute force ------------------- */

#define MAXL 8
#define MAXS 4

typedef struct {
    size_t nlayers, nstages;
    double work[40], mem[40];     /* per layer */
    double speed[MAXS], budget[MAXS]; /* per stage */
    unsigned long calls;
} instance;

/* Work over speed, or -1 when the layers' memory exceeds the stage's budget. */
static double stage_cost(void *ctx, size_t s, size_t first, size_t last)
{
    instance *in = ctx;
    double w = 0, m = 0;
    in->calls++;
    ck_assert_msg(s < in->nstages && first <= last && last < in->nlayers,
                  "callback called with stage %zu layers %zu..%zu", s, first, last);
    for (size_t l = first; l <= last; l++) {
        w += in->work[l];
        m += in->mem[l];
    }
    return m > in->budget[s] ? -1 : w / in->speed[s];
}

static double uniform(uint64_t stream, uint64_t *k)
{
    return mpt__u01(mpt__rng_u32(2024, stream, (*k)++));
}

/* Brute force: every split (cut set), the smallest bottleneck and among
 * those the smallest sum.  Returns 0 when no split fits; *tied says whether
 * some split of that bottleneck has a larger sum (the tie-break matters). */
static int brute(instance *in, double *bottleneck, double *sum, int *tied)
{
    size_t L = in->nlayers, S = in->nstages, n = 0;
    double b[128], t[128]; /* at most C(7, 3) = 35 splits */
    for (unsigned mask = 0; mask < 1u << (L - 1); mask++) {
        if ((size_t)__builtin_popcount(mask) != S - 1)
            continue;
        size_t start = 0, s = 0;
        int fits = 1;
        b[n] = t[n] = 0;
        for (size_t l = 0; l < L && fits; l++)
            if (l == L - 1 || (mask >> l & 1u)) { /* a stage ends after layer l */
                double c = stage_cost(in, s++, start, l);
                fits = c >= 0;
                b[n] = c > b[n] ? c : b[n];
                t[n] += c;
                start = l + 1;
            }
        n += fits;
    }
    *tied = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || b[i] < *bottleneck || (b[i] == *bottleneck && t[i] < *sum))
            *bottleneck = b[i], *sum = t[i];
    for (size_t i = 0; i < n; i++)
        *tied |= b[i] == *bottleneck && t[i] > *sum * (1 + REL);
    return n > 0;
}

/* Checks a split's shape and returns its bottleneck and sum. */
static void evaluate(instance *in, const size_t *first, double *bottleneck, double *sum)
{
    *bottleneck = 0, *sum = 0;
    ck_assert_uint_eq(first[0], 0);
    ck_assert_uint_eq(first[in->nstages], in->nlayers);
    for (size_t s = 0; s < in->nstages; s++) {
        ck_assert_msg(first[s] < first[s + 1], "stage %zu is empty: %zu..%zu", s, first[s],
                      first[s + 1]);
        double c = stage_cost(in, s, first[s], first[s + 1] - 1);
        ck_assert_msg(c >= 0, "stage %zu takes layers %zu..%zu, which do not fit", s, first[s],
                      first[s + 1] - 1);
        *bottleneck = c > *bottleneck ? c : *bottleneck;
        *sum += c;
    }
}

START_TEST(partition_matches_brute_force)
{
    int feasible = 0, infeasible = 0, ties = 0, binding = 0;
    for (uint64_t trial = 0; trial < 300; trial++) {
        instance in = {0};
        uint64_t k = 0;
        in.nlayers = 1 + (size_t)(uniform(trial, &k) * MAXL);
        size_t smax = in.nlayers < MAXS ? in.nlayers : MAXS;
        in.nstages = 1 + (size_t)(uniform(trial, &k) * smax);
        if (trial % 2) { /* ties need 3 stages or more and room to move */
            in.nlayers = 5 + (size_t)(uniform(trial, &k) * (MAXL - 4));
            in.nstages = 3 + (size_t)(uniform(trial, &k) * (MAXS - 2));
        }
        double total_mem = 0;
        for (size_t l = 0; l < in.nlayers; l++) {
            /* Half the trials: a heavy first or last layer, alone the
             * bottleneck of every split that gives it a stage of its own,
             * so that the tie-break decides among those. */
            in.work[l] = uniform(trial, &k) * (trial % 2 ? 4 : 10);
            if (trial % 2 && l == (trial % 4 == 1 ? 0 : in.nlayers - 1))
                in.work[l] = 40;
            in.mem[l] = 1 + floor(uniform(trial, &k) * 9);
            total_mem += in.mem[l];
        }
        for (size_t s = 0; s < in.nstages; s++) {
            in.speed[s] = 0.5 + uniform(trial, &k);
            /* From 0.6 to 2.2 times a fair share of the memory: a third
             * of the instances fit nowhere, many others only some splits. */
            in.budget[s] = total_mem / in.nstages * (0.6 + 1.6 * uniform(trial, &k));
        }
        double want_b = 0, want_sum = 0, got_b = -1, b, sum;
        size_t first[MAXS + 1];
        int tied = 0, free_tied;
        int fits = brute(&in, &want_b, &want_sum, &tied);
        int status = mpt__partition(in.nlayers, in.nstages, stage_cost, &in, first, &got_b);
        if (!fits) {
            ck_assert_msg(status == MPT_ERR_DEVICE_MEMORY,
                          "trial %d: nothing fits, partition returned %s", (int)trial,
                          mpt_status_name(status));
            ck_assert_msg(strstr(mpt_last_error(), "stage") != NULL,
                          "the detail names no stage: %s", mpt_last_error());
            infeasible++;
            continue;
        }
        ck_assert_msg(status == MPT_OK, "trial %d: %s: %s", (int)trial, mpt_status_name(status),
                      mpt_last_error());
        feasible++;
        ck_assert_msg(got_b == want_b, "trial %d (%zu layers, %zu stages): bottleneck %.17g, "
                      "brute force %.17g", (int)trial, in.nlayers, in.nstages, got_b, want_b);
        evaluate(&in, first, &b, &sum);
        ck_assert_msg(b == want_b, "trial %d: the split's bottleneck %.17g is not %.17g",
                      (int)trial, b, want_b);
        ck_assert_msg(fabs(sum - want_sum) <= REL * want_sum,
                      "trial %d: the split's sum %.17g, the smallest %.17g", (int)trial, sum,
                      want_sum);
        ties += tied;
        /* Does memory change the answer?  The same without budgets. */
        instance unbounded = in;
        double free_b = 0, free_sum = 0;
        for (size_t st = 0; st < in.nstages; st++)
            unbounded.budget[st] = HUGE_VAL;
        brute(&unbounded, &free_b, &free_sum, &free_tied);
        binding += free_b < want_b;
    }
    if (getenv("CHECK_PLAN_VERBOSE"))
        printf("%d instances fit (memory binding in %d, ties broken in %d), %d do not\n",
               feasible, binding, ties, infeasible);
    /* Every case well represented (seeded: the counts are fixed). */
    ck_assert_msg(feasible >= 100 && infeasible >= 50 && binding >= 20 && ties >= 20,
                  "%d fit (memory binding in %d, ties in %d), %d do not", feasible, binding,
                  ties, infeasible);
}
END_TEST

START_TEST(partition_heterogeneous_speeds)
{
    instance in = {.nlayers = 40, .nstages = 2, .speed = {2, 1}, .budget = {1e9, 1e9}};
    size_t first[3];
    double b;
    for (size_t l = 0; l < 40; l++)
        in.work[l] = 1, in.mem[l] = 1;
    ck_assert_mpt_ok(mpt__partition(40, 2, stage_cost, &in, first, &b));
    /* 27 / 2 = 13.5 against 13: the best split. */
    ck_assert_msg(first[1] == 26 || first[1] == 27, "the fast stage got %zu of 40", first[1]);
    ck_assert_double_eq(b, 13.5);
    /* Slow stage first: it gets a third. */
    in.speed[0] = 1, in.speed[1] = 2;
    ck_assert_mpt_ok(mpt__partition(40, 2, stage_cost, &in, first, &b));
    ck_assert_msg(first[1] == 13 || first[1] == 14, "the slow stage got %zu of 40", first[1]);
}
END_TEST

START_TEST(partition_respects_memory)
{
    instance in = {.nlayers = 40, .nstages = 4};
    size_t first[5];
    double b;
    uint64_t k = 0;
    for (size_t l = 0; l < 40; l++) {
        in.work[l] = 1 + uniform(77, &k);
        in.mem[l] = 1 + floor(uniform(77, &k) * 9);
    }
    /* The fast stage has little memory: left alone it takes more. */
    double speed[4] = {4, 1, 1, 1}, budget[4] = {20, 120, 120, 120}, m0 = 0;
    memcpy(in.speed, speed, sizeof speed);
    for (size_t s = 0; s < 4; s++)
        in.budget[s] = HUGE_VAL;
    ck_assert_mpt_ok(mpt__partition(40, 4, stage_cost, &in, first, &b));
    for (size_t l = first[0]; l < first[1]; l++)
        m0 += in.mem[l];
    ck_assert_double_gt(m0, budget[0]);
    memcpy(in.budget, budget, sizeof budget);
    ck_assert_mpt_ok(mpt__partition(40, 4, stage_cost, &in, first, &b));
    for (size_t s = 0; s < 4; s++) {
        double m = 0;
        for (size_t l = first[s]; l < first[s + 1]; l++)
            m += in.mem[l];
        ck_assert_msg(m <= in.budget[s], "stage %zu holds %g > %g", s, m, in.budget[s]);
    }
    ck_assert_double_le(stage_cost(&in, 0, first[0], first[1] - 1), b);

    /* A layer too big for every stage is named. */
    in.mem[17] = 500;
    ck_assert_mpt_fails(mpt__partition(40, 4, stage_cost, &in, first, &b), MPT_ERR_DEVICE_MEMORY);
    ck_assert_msg(strstr(mpt_last_error(), "layer 17 fits no stage") != NULL, "detail: %s",
                  mpt_last_error());
    /* Everything fits a stage alone, but not all together: the last stage
     * is left too much. */
    in.mem[17] = 5;
    for (size_t s = 0; s < 4; s++)
        in.budget[s] = 30;
    ck_assert_mpt_fails(mpt__partition(40, 4, stage_cost, &in, first, &b), MPT_ERR_DEVICE_MEMORY);
    ck_assert_msg(strstr(mpt_last_error(), "stage 3") != NULL, "detail: %s", mpt_last_error());
    /* The first stage cannot hold even the first layer. */
    in.budget[0] = 0.5;
    ck_assert_mpt_fails(mpt__partition(40, 4, stage_cost, &in, first, &b), MPT_ERR_DEVICE_MEMORY);
    ck_assert_msg(strstr(mpt_last_error(), "stage 0 cannot hold even layer 0") != NULL,
                  "detail: %s", mpt_last_error());

    ck_assert_mpt_fails(mpt__partition(3, 4, stage_cost, &in, first, &b), MPT_ERR_RANGE);
    ck_assert_mpt_fails(mpt__partition(3, 0, stage_cost, &in, first, &b), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__partition(3, 1, NULL, &in, first, &b), MPT_ERR_INVALID);
}
END_TEST

/* A 96-layer instance of unit layers: 96 x 64 and 96 x 96. */
typedef struct {
    unsigned long calls;
} counter;

static double unit_cost(void *ctx, size_t s, size_t first, size_t last)
{
    ((counter *)ctx)->calls++;
    return (double)(last - first + 1) / (1.0 + (double)(s % 4));
}

START_TEST(partition_96_layers)
{
    size_t first[97];
    double b;
    size_t stages[2] = {64, 96};
    for (int t = 0; t < 2; t++) {
        counter c = {0};
        size_t S = stages[t];
        ck_assert_mpt_ok(mpt__partition(96, S, unit_cost, &c, first, &b));
        /* Monotone costs let both passes stop looking back once a range
         * costs more than the best bottleneck: about 2 * 96^2 calls in all,
         * where the plain programme would make up to 2 * S * 96^2. */
        ck_assert_msg((double)c.calls <= 2.0 * 96 * 96, "%lu calls for %zu stages", c.calls, S);
        ck_assert_uint_eq(first[S], 96);
        for (size_t s = 0; s < S; s++)
            ck_assert_uint_lt(first[s], first[s + 1]);
    }
}
END_TEST

/* ---- cost model ----------------------------------------------------------- */

static const char *models_path(const char *name)
{
    static char buf[4096];
    const char *dir = getenv("MPT_TESTS_SRCDIR");
    snprintf(buf, sizeof buf, "%s/../models/%s", dir ? dir : "tests", name);
    return buf;
}

static mpt__model_t *load_model(const char *name)
{
    mpt__model_t *m = NULL;
    ck_assert_mpt_ok(mpt__model_load(models_path(name), &m));
    return m;
}

START_TEST(model_cost_of_mlp)
{
    mpt__model_t *m = load_model("mlp-fashion.json");
    mpt__model_cost_t mc;
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    ck_assert_uint_eq(mc.nlayers, 8);
    ck_assert_double_eq(mc.input_bytes, 4.0 * 784);
    const double in[8] = {784, 256, 256, 128, 128, 100, 100, 10};
    const double out[8] = {256, 256, 128, 128, 100, 100, 10, 1};
    double params = 0;
    for (size_t i = 0; i < 8; i++) {
        const mpt__layer_cost_t *l = &mc.layers[i];
        int linear = i % 2 == 0 && i < 7;
        /* layers.c: a linear layer 2 in out per sample forward, twice that
         * backward (dW and dx) but the first, whose dx nobody computes;
         * relu and the loss one per input element. */
        double f = linear ? 2 * in[i] * out[i] : in[i];
        ck_assert_double_eq(l->fwd_flops, f);
        ck_assert_double_eq(l->bwd_flops, linear && i > 0 ? 2 * f : f);
        ck_assert_double_eq(l->param_bytes, linear ? 4 * (in[i] * out[i] + out[i]) : 0);
        ck_assert_double_eq(l->out_bytes, 4 * out[i]);
        ck_assert_double_eq(l->saved_bytes, 4 * in[i]);
        ck_assert_double_eq(l->fwd_bytes, 4 * (in[i] + out[i]));
        ck_assert_double_eq(l->bwd_bytes, 4 * (2 * in[i] + out[i]));
        /* A linear layer runs the relu after it: GEMM + bias/relu kernel
         * forward, relu/bias-gradient kernel + two GEMMs backward (the last
         * one, without relu: GEMM + bias; GEMV + two GEMMs); the relus then
         * launch nothing; the loss one kernel, in its backward. */
        ck_assert_int_eq(l->launches_fwd, linear ? 2 : 0);
        ck_assert_int_eq(l->launches_bwd, linear ? 3 : i == 7 ? 1 : 0);
        ck_assert_uint_eq(l->split_axes, m->layers[i].kind->split_axes);
        params += l->param_bytes;
    }
    ck_assert_double_eq(mc.layers[0].fwd_flops, 2.0 * 784 * 256);
    ck_assert_double_eq(mc.layers[0].param_bytes, 4.0 * (784 * 256 + 256));
    ck_assert_double_eq(params, 4.0 * (double)m->param_floats);
    mpt__model_cost_free(&mc);
    mpt__model_cost_free(&mc); /* harmless twice */
    mpt__model_free(m);
}
END_TEST

START_TEST(model_cost_of_cnn)
{
    mpt__model_t *m = load_model("cnn-fashion.json");
    mpt__model_cost_t mc;
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    ck_assert_uint_eq(mc.nlayers, 12);
    /* conv2d 1 -> 32 channels, 3x3, padding 1, on 28x28 */
    ck_assert_double_eq(mc.layers[0].fwd_flops, 2.0 * 32 * 28 * 28 * 1 * 9);
    ck_assert_double_eq(mc.layers[0].param_bytes, 4.0 * (32 * 9 + 32));
    ck_assert_int_eq(mc.layers[0].launches_fwd, 3);
    ck_assert_int_eq(mc.layers[0].launches_bwd, 6);
    /* maxpool2d keeps its argmax */
    ck_assert_double_eq(mc.layers[2].saved_bytes, 4.0 * (32 * 28 * 28 + 32 * 14 * 14));
    /* flatten runs nothing and keeps nothing; what follows it sends as much */
    const mpt__layer_cost_t *f = &mc.layers[6];
    ck_assert_double_eq(f->fwd_flops + f->bwd_flops + f->fwd_bytes + f->bwd_bytes, 0);
    ck_assert_double_eq(f->saved_bytes, 0);
    ck_assert_int_eq(f->launches_fwd + f->launches_bwd, 0);
    ck_assert_double_eq(f->out_bytes, 4.0 * 64 * 7 * 7);
    ck_assert_double_eq(mc.layers[7].saved_bytes, 4.0 * 64 * 7 * 7);
    mpt__model_cost_free(&mc);
    mpt__model_free(m);
}
END_TEST

/* Devices: 0 and 1 equal on node 0; 2 twice as fast in GEMM, node 0; 3
 * equal to 0 on node 1; 4 with GEMM points, node 0; 5 with other transfer
 * rates, node 0; 6 equal to 0 on node 1. */
static const char *CLUSTER =
    "{\"name\": \"synthetic\", \"network\": {\"gbps\": 5.0, \"latency_us\": 3.0},"
    " \"nodes\": [{\"name\": \"n0\"}, {\"name\": \"n1\"}], \"devices\": ["
    "{\"name\": \"a\", \"type\": \"gpu\", \"global_mem_bytes\": 1000000000, \"node\": 0,"
    " \"numa_node\": 0, \"profile\": {\"gemm_gflops\": 1000, \"mem_gbps\": 100,"
    " \"h2d_gbps\": 10, \"d2h_gbps\": 20, \"launch_us\": 10}},"
    "{\"name\": \"b\", \"type\": \"gpu\", \"global_mem_bytes\": 1000000000, \"node\": 0,"
    " \"numa_node\": 0, \"profile\": {\"gemm_gflops\": 1000, \"mem_gbps\": 100,"
    " \"h2d_gbps\": 10, \"d2h_gbps\": 20, \"launch_us\": 10}},"
    "{\"name\": \"fast\", \"type\": \"gpu\", \"global_mem_bytes\": 1000000000, \"node\": 0,"
    " \"numa_node\": 0, \"profile\": {\"gemm_gflops\": 2000, \"mem_gbps\": 100,"
    " \"h2d_gbps\": 10, \"d2h_gbps\": 20, \"launch_us\": 10}},"
    "{\"name\": \"far\", \"type\": \"gpu\", \"global_mem_bytes\": 1000000000, \"node\": 1,"
    " \"numa_node\": 0, \"profile\": {\"gemm_gflops\": 1000, \"mem_gbps\": 100,"
    " \"h2d_gbps\": 10, \"d2h_gbps\": 20, \"launch_us\": 10}},"
    "{\"name\": \"points\", \"type\": \"gpu\", \"global_mem_bytes\": 1000000000, \"node\": 0,"
    " \"profile\": {\"gemm_gflops\": 500, \"mem_gbps\": 100, \"h2d_gbps\": 10,"
    " \"d2h_gbps\": 20, \"gemm\": [{\"m\": 1024, \"n\": 1024, \"k\": 1024, \"gflops\": 400},"
    " {\"m\": 256, \"n\": 256, \"k\": 256, \"gflops\": 100},"
    " {\"m\": 2048, \"n\": 2048, \"k\": 2048, \"gflops\": 500}]}},"
    "{\"name\": \"odd\", \"type\": \"gpu\", \"global_mem_bytes\": 1000000000, \"node\": 0,"
    " \"profile\": {\"gemm_gflops\": 1000, \"mem_gbps\": 100,"
    " \"h2d_gbps\": 4, \"d2h_gbps\": 8, \"launch_us\": 2}},"
    "{\"name\": \"far2\", \"type\": \"gpu\", \"global_mem_bytes\": 1000000000, \"node\": 1,"
    " \"numa_node\": 0, \"profile\": {\"gemm_gflops\": 1000, \"mem_gbps\": 100,"
    " \"h2d_gbps\": 10, \"d2h_gbps\": 20, \"launch_us\": 10}}]}";

static mpt_cluster_t *synthetic_cluster(void)
{
    return test_cluster_from_text(CLUSTER);
}

/* cost.c's roofline for a profile without GEMM points, written out again. */
static double roofline(const mpt__model_cost_t *mc, size_t first, size_t last,
                       const mpt_profile_t *p, double samples, double share, int bwd)
{
    double t = 0;
    for (size_t i = first; i <= last; i++) {
        const mpt__layer_cost_t *l = &mc->layers[i];
        double part = l->tp_whole ? 1 : share;
        double flops = part * samples * (bwd ? l->bwd_flops : l->fwd_flops);
        double bytes = part * (samples * (bwd ? l->bwd_bytes : l->fwd_bytes) +
                               (bwd ? 2 : 1) * l->param_bytes);
        t += fmax(flops / (p->gemm_gflops * 1e9), bytes / (p->mem_gbps * 1e9)) +
             (bwd ? l->launches_bwd : l->launches_fwd) * p->launch_us * 1e-6;
    }
    return t;
}

static double launch_term(const mpt__model_cost_t *mc, size_t first, size_t last,
                          const mpt_profile_t *p, int bwd)
{
    double n = 0;
    for (size_t i = first; i <= last; i++)
        n += bwd ? mc->layers[i].launches_bwd : mc->layers[i].launches_fwd;
    return n * p->launch_us * 1e-6;
}

START_TEST(cost_layers_roofline)
{
    mpt__model_t *m = load_model("mlp-fashion.json");
    mpt__model_cost_t mc;
    mpt_cluster_t *c = synthetic_cluster();
    const mpt_profile_t *a = &mpt_cluster_device(c, 0)->profile;
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    /* Under tensor parallelism linear layers split (column, then row) and
     * the ReLU between them runs on the slice; the ReLU after a row layer
     * and the loss see the all-reduced whole and run whole on every
     * member. */
    const int whole[8] = {0, 0, 0, 1, 0, 0, 0, 1};
    for (size_t i = 0; i < 8; i++)
        ck_assert_int_eq(mc.layers[i].tp_whole, whole[i]);
    const double samples[3] = {1, 32, 256};
    for (int bwd = 0; bwd < 2; bwd++)
        for (int n = 0; n < 3; n++)
            for (size_t i = 0; i < mc.nlayers; i++)
                for (size_t j = i; j < mc.nlayers; j++) {
                    const mpt_cluster_device_t *d = mpt_cluster_device(c, 0);
                    double full = mpt__cost_layers(&mc, i, j, d, samples[n], 1, bwd);
                    double half = mpt__cost_layers(&mc, i, j, d, samples[n], 0.5, bwd);
                    double launches = launch_term(&mc, i, j, a, bwd);
                    ck_assert_close(full, roofline(&mc, i, j, a, samples[n], 1, bwd));
                    ck_assert_close(half, roofline(&mc, i, j, a, samples[n], 0.5, bwd));
                    /* share scales everything but the launches and the
                     * layers that run whole (to the formula's rounding,
                     * relative to the whole: the launches may dwarf the
                     * rest) */
                    double kept = launches;
                    for (size_t k = i; k <= j; k++)
                        if (whole[k])
                            kept += roofline(&mc, k, k, a, samples[n], 1, bwd) -
                                    launch_term(&mc, k, k, a, bwd);
                    ck_assert_msg(fabs((half - kept) - 0.5 * (full - kept)) <= REL * full,
                                  "share 0.5: %.17g, share 1: %.17g, kept whole %.17g", half,
                                  full, kept);
                    ck_assert_double_gt(full, launches);
                }
    /* By hand, layer 0 forward of 64 samples on device a: 64 x 2 x 784 x
     * 256 FLOPs at 1 TFLOP/s = 25.69 us against (64 x 4 x 1040 + 4 x
     * 200960) bytes at 100 GB/s = 10.7 us: compute-bound; plus 2 launches
     * of 10 us. */
    ck_assert_close(mpt__cost_layers(&mc, 0, 0, mpt_cluster_device(c, 0), 64, 1, 0),
                    64 * 2.0 * 784 * 256 / 1e12 + 20e-6);
    /* Empty and out-of-range ranges cost nothing; a range past the end is
     * cut at the last layer. */
    ck_assert_double_eq(mpt__cost_layers(&mc, 3, 2, mpt_cluster_device(c, 0), 64, 1, 0), 0);
    ck_assert_double_eq(mpt__cost_layers(&mc, 8, 9, mpt_cluster_device(c, 0), 64, 1, 0), 0);
    ck_assert_double_eq(mpt__cost_layers(&mc, 5, 99, mpt_cluster_device(c, 0), 64, 1, 0),
                        mpt__cost_layers(&mc, 5, 7, mpt_cluster_device(c, 0), 64, 1, 0));
    mpt__model_cost_free(&mc);
    mpt_cluster_free(c);
    mpt__model_free(m);
}
END_TEST

START_TEST(cost_layers_gemm_speed)
{
    mpt__model_t *m = load_model("mlp-fashion.json");
    mpt__model_cost_t mc;
    mpt_cluster_t *c = synthetic_cluster();
    const mpt_cluster_device_t *a = mpt_cluster_device(c, 0), *fast = mpt_cluster_device(c, 2);
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    for (int bwd = 0; bwd < 2; bwd++) {
        /* Linear layers at 256 samples: 2 x 784 FLOPs per byte-ish, far
         * above 1000 / 100 = 10 FLOPs per byte on either device. */
        double la = launch_term(&mc, 0, 0, &a->profile, bwd);
        double ta = mpt__cost_layers(&mc, 0, 0, a, 256, 1, bwd) - la;
        double tf = mpt__cost_layers(&mc, 0, 0, fast, 256, 1, bwd) - la;
        ck_assert_close(tf, 0.5 * ta);
        /* relu moves 8 bytes per FLOP: memory-bound, the same on both. */
        ck_assert_close(mpt__cost_layers(&mc, 1, 1, fast, 256, 1, bwd),
                        mpt__cost_layers(&mc, 1, 1, a, 256, 1, bwd));
    }
    mpt__model_cost_free(&mc);
    mpt_cluster_free(c);
    mpt__model_free(m);
}
END_TEST

/* The GEMM rate of a profile with points 256^3 (100 GFLOP/s), 1024^3 (400)
 * and 2048^3 (500), given out of order: one layer of `flops` FLOPs per
 * sample, no bytes, no launches, one sample. */
START_TEST(cost_layers_gemm_points)
{
    mpt_cluster_t *c = synthetic_cluster();
    const mpt_cluster_device_t *d = mpt_cluster_device(c, 4);
    mpt__layer_cost_t layer = {0};
    mpt__model_cost_t mc = {1, &layer, 0};
    const double f256 = 2.0 * 256 * 256 * 256, f512 = 2.0 * 512 * 512 * 512,
                 f1024 = 2.0 * 1024 * 1024 * 1024, f2048 = 2.0 * 2048 * 2048 * 2048;
    const struct {
        double flops, gflops;
    } cases[] = {
        {f256, 100},     /* at a point: its rate */
        {f256 / 64, 100}, /* below the first: held */
        {f512, 250},     /* halfway in log FLOPs between 256^3 and 1024^3 */
        {f1024, 400},
        {f2048, 500},
        {f2048 * 8, 500}, /* above the last: held */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        layer.fwd_flops = cases[i].flops;
        layer.bwd_flops = 2 * cases[i].flops; /* two GEMMs of the forward's size */
        ck_assert_close(mpt__cost_layers(&mc, 0, 0, d, 1, 1, 0),
                        cases[i].flops / (cases[i].gflops * 1e9));
        ck_assert_close(mpt__cost_layers(&mc, 0, 0, d, 1, 1, 1),
                        2 * cases[i].flops / (cases[i].gflops * 1e9));
    }
    mpt_cluster_free(c);
}
END_TEST

START_TEST(cost_transfer_links)
{
    mpt_cluster_t *c = synthetic_cluster();
    const double S = 1e6;
    /* device -> host -> device: S / 20 GB/s + S / 10 GB/s + 2 x 10 us */
    const double within = S / 20e9 + S / 10e9 + 20e-6;
    ck_assert_int_eq(mpt_cluster_link(c, 0, 1), MPT_LINK_SAME_NUMA);
    ck_assert_int_eq(mpt_cluster_link(c, 0, 3), MPT_LINK_CROSS_NODE);
    ck_assert_double_eq(mpt__cost_transfer(c, 2, 2, S), 0);
    ck_assert_double_eq(mpt__cost_transfer(c, 0, 1, 0), 0);
    ck_assert_close(mpt__cost_transfer(c, 0, 1, S), within);
    ck_assert_double_eq(mpt__cost_transfer(c, 0, 1, S), mpt__cost_transfer(c, 1, 0, S));
    /* across nodes: the same plus S / 5 GB/s + 3 us */
    ck_assert_close(mpt__cost_transfer(c, 0, 3, S), within + S / 5e9 + 3e-6);
    ck_assert_close(mpt__cost_transfer(c, 3, 0, S) - mpt__cost_transfer(c, 0, 1, S),
                    S / 5e9 + 3e-6);
    /* unequal devices: d2h of the sender, h2d of the receiver */
    ck_assert_close(mpt__cost_transfer(c, 5, 0, S), S / 8e9 + S / 10e9 + 12e-6);
    ck_assert_close(mpt__cost_transfer(c, 0, 5, S), S / 20e9 + S / 4e9 + 12e-6);
    ck_assert(isinf(mpt__cost_transfer(c, 0, 99, S)));
    mpt_cluster_free(c);
}
END_TEST

START_TEST(cost_allreduce_ring)
{
    mpt_cluster_t *c = synthetic_cluster();
    const double S = 4e6, B = 1 / (1 / 20e9 + 1 / 10e9), lat = 20e-6;
    const size_t three[3] = {0, 1, 2}, cross[3] = {0, 1, 3};
    ck_assert_double_eq(mpt__cost_allreduce(c, three, 1, S), 0);
    ck_assert_double_eq(mpt__cost_allreduce(c, three, 0, S), 0);
    for (size_t n = 2; n <= 3; n++)
        ck_assert_close(mpt__cost_allreduce(c, three, n, S),
                        2.0 * (n - 1) / n * S / B + 2.0 * (n - 1) * lat);
    /* One hop crosses nodes: every step waits for it. */
    ck_assert_close(mpt__cost_allreduce(c, cross, 3, S),
                    4 * mpt__cost_transfer(c, 1, 3, S / 3));
    ck_assert_double_gt(mpt__cost_allreduce(c, cross, 3, S),
                        mpt__cost_allreduce(c, three, 3, S));
    mpt_cluster_free(c);
}
END_TEST

/* Hierarchical: devices 0, 1 on node 0 and 3, 6 on node 1 (network 5 GB/s,
 * 3 us).  Inside: each node's full ring on S; across: two rings on S / 2,
 * steps of S / 4 per device plus the other ring's S / 4 on the shared
 * network, 2 (k - 1) = 2 steps. */
START_TEST(cost_allreduce_hierarchical)
{
    mpt_cluster_t *c = synthetic_cluster();
    const double S = 4e6;
    const size_t four[4] = {0, 3, 1, 6}, node0[2] = {0, 1}, uneven[4] = {0, 1, 2, 3},
                 local[4] = {0, 1, 2, 5};
    double inside = mpt__cost_allreduce(c, node0, 2, S);
    double across = mpt__cost_transfer(c, 0, 3, S / 4) + S / 4 / 5e9;
    ck_assert_close(mpt__cost_allreduce_hier(c, four, 4, S), inside + 2 * across);
    /* Against the flat ring over the same four, which crosses the network
     * on each of its 6 steps with S / 4. */
    ck_assert_close(mpt__cost_allreduce(c, four, 4, S), 6 * mpt__cost_transfer(c, 0, 3, S / 4));
    ck_assert_double_lt(mpt__cost_allreduce_hier(c, four, 4, S),
                        mpt__cost_allreduce(c, four, 4, S));
    /* Not spread evenly over two or more nodes: no hierarchy. */
    ck_assert(isinf(mpt__cost_allreduce_hier(c, uneven, 4, S)));
    ck_assert(isinf(mpt__cost_allreduce_hier(c, local, 4, S)));
    ck_assert(isinf(mpt__cost_allreduce_hier(c, four, 2, S)));
    ck_assert_double_eq(mpt__cost_allreduce_hier(c, four, 4, 0), 0);
    /* By name, falling back to the ring where the hierarchy does not apply. */
    ck_assert_double_eq(mpt__cost_allreduce_by(c, uneven, 4, S, MPT_ALLREDUCE_HIERARCHICAL),
                        mpt__cost_allreduce(c, uneven, 4, S));
    ck_assert_double_eq(mpt__cost_allreduce_by(c, four, 4, S, MPT_ALLREDUCE_RING),
                        mpt__cost_allreduce(c, four, 4, S));
    mpt_cluster_free(c);
}
END_TEST

START_TEST(cost_memory_optimizer_and_flight)
{
    mpt__model_t *m = load_model("mlp-fashion.json");
    mpt__model_cost_t mc;
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    const double P = 4.0 * (double)m->param_floats;
    const double saved = 4.0 * (784 + 256 + 256 + 128 + 128 + 100 + 100 + 10);
    /* the two working buffers: the widest of the input (784) and outputs */
    const double widest = 4.0 * 784;
    /* AdamW: parameters, gradients, two moments; one micro-batch of 32 */
    double adamw = mpt__cost_memory(&mc, 0, 7, 32, 1, 1, 2, 0);
    ck_assert_double_eq(adamw, P * (1 + 1 + 2) + 32 * saved + 2 * 32 * widest);
    /* SGD with momentum holds one copy less */
    ck_assert_double_eq(mpt__cost_memory(&mc, 0, 7, 32, 1, 1, 1, 0), adamw - P);
    /* micro-batches add into the gradients from a copy of their own */
    ck_assert_double_eq(mpt__cost_memory(&mc, 0, 7, 32, 1, 1, 2, 1), adamw + P);
    /* four micro-batches in flight hold three more sets of activations */
    double four = mpt__cost_memory(&mc, 0, 7, 32, 4, 1, 2, 0);
    ck_assert_double_gt(four, adamw);
    ck_assert_double_eq(four - adamw, 3 * 32 * saved);
    /* half of each split layer: half of everything but the activations
     * of the two layers that run whole (ReLU 3 on 128, the loss on 10),
     * and the working buffers, which hold the whole input */
    ck_assert_double_eq(mpt__cost_memory(&mc, 0, 7, 32, 4, 0.5, 2, 0),
                        0.5 * P * 4 + 4 * 32 * (0.5 * saved + 0.5 * 4.0 * (128 + 10)) +
                            2 * 32 * widest);
    /* a range: layers 2..3 (linear 256 -> 128, relu), its input the widest */
    ck_assert_double_eq(mpt__cost_memory(&mc, 2, 3, 8, 2, 1, 0, 0),
                        4.0 * (256 * 128 + 128) * 2 + 2 * 8 * 4.0 * (256 + 128) +
                            2 * 8 * 4.0 * 256);
    ck_assert_double_eq(mpt__cost_memory(&mc, 3, 2, 8, 2, 1, 0, 0), 0);
    mpt__model_cost_free(&mc);
    mpt__model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan_cost");
    TCase *p = tcase_create("partition");
    tcase_set_timeout(p, 600);
    tcase_add_test(p, partition_matches_brute_force);
    tcase_add_test(p, partition_heterogeneous_speeds);
    tcase_add_test(p, partition_respects_memory);
    tcase_add_test(p, partition_96_layers);
    suite_add_tcase(s, p);
    TCase *c = tcase_create("cost");
    tcase_set_timeout(c, 600);
    tcase_add_test(c, model_cost_of_mlp);
    tcase_add_test(c, model_cost_of_cnn);
    tcase_add_test(c, cost_layers_roofline);
    tcase_add_test(c, cost_layers_gemm_speed);
    tcase_add_test(c, cost_layers_gemm_points);
    tcase_add_test(c, cost_transfer_links);
    tcase_add_test(c, cost_allreduce_ring);
    tcase_add_test(c, cost_allreduce_hierarchical);
    tcase_add_test(c, cost_memory_optimizer_and_flight);
    suite_add_tcase(s, c);
    return test_run(s, 1);
}
