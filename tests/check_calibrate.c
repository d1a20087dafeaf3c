/*
 * tests/check_calibrate.c: calibration and rebalancing (docs/planning.md).
 * Calibration on a fake engine report against the cost model's own
 * figures; the factors in profile JSON, out of bounds refused; a cluster
 * whose device is calibrated slow is planned without it; a device's
 * compute in company calibrated apart from its compute alone; a trainer moved
 * to another plan at step k equals one that never moved, and steps kept
 * out of calibration are not calibrated on; devices never
 * measured priced with the measured ones' factors when re-planning; mpt_trainer_fit
 * rebalancing mid-run (forced by a negative margin) equals an
 * uninterrupted run, with the re-plan in the metrics; devices that share
 * cores (two PoCL devices of one process) profiled together by
 * mpt_cluster_local, the figures cached and read back.
 * Runs without fork (OpenCL).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "plan/plan.h"
#include "profile/profile.h"
#include "testutil.h"

/* Plan invariance (tests/check_engine.c): fp32 sums in another order. */
#define LOSS_RTOL 1e-5

static const char *mlp =
    "{\"name\": \"cal\", \"input\": [6], \"layers\": [{\"kind\": \"linear\", \"units\": 16}, "
    "{\"kind\": \"relu\"}, {\"kind\": \"linear\", \"units\": 8}, {\"kind\": \"relu\"}, "
    "{\"kind\": \"linear\", \"units\": 3}, {\"kind\": \"softmax_cross_entropy\"}]}";

enum { COUNT = 96, IN = 6, CLASSES = 3, BATCH = 16 };

/* The forward, backward and their sum of a one-device plan, measured 3x
 * and 2x slower than predicted: the factors are 3 and 2 (exact up to
 * rounding), and the calibrated prediction is the measured step. */
START_TEST(calibration_from_fake_report)
{
    mpt_model_t *m = NULL;
    mpt_cluster_t *c = NULL;
    mpt_plan_t *p = NULL;
    mpt__model_cost_t mc = {0};
    ck_assert_mpt_ok(mpt_model_from_json(mlp, &m));
    ck_assert_mpt_ok(mpt_cluster_load(test_path("../models/clusters/node-2nvidia-2amd.json"), &c));
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.batch = 64, req.dp = req.pp = req.tp = 1;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    const mpt__plan_stage_t *st = &p->replicas[0].stages[0];
    size_t d = st->devices[0].device;
    const mpt_cluster_device_t *dev = mpt_cluster_device(c, d);
    double pf = mpt__cost_layers(&mc, st->first, st->last, dev, 64, 1.0, 0);
    double pb = mpt__cost_layers(&mc, st->first, st->last, dev, 64, 1.0, 1);
    mpt__cal_measured_t meas = {3 * pf, 2 * pb, 0, 3 * pf + 2 * pb};
    double predicted = 0;
    ck_assert_mpt_ok(mpt__calibrate(p, &mc, c, 64, &meas, 1, 0, 7, &predicted));
    const mpt_calibration_t *cal = &mpt_cluster_device(c, d)->profile.calibration;
    ck_assert_double_eq_tol(cal->forward, 3.0, 1e-9);
    ck_assert_double_eq_tol(cal->backward, 2.0, 1e-9);
    ck_assert_uint_eq(cal->steps, 7);
    /* The simulator adds nothing to one device's compute: the same sum. */
    ck_assert_double_eq_tol(predicted / (3 * pf + 2 * pb), 1.0, 1e-9);
    double again = 0;
    ck_assert_mpt_ok(mpt_plan_simulate(p, m, c, &again, NULL, NULL)); /* the plan's own times */
    ck_assert_double_eq_tol(again / (pf + pb), 1.0, 1e-9);
    /* A host's share of the step (wall 10% above the workers'): spread
     * over the compute, so the prediction meets the wall time. */
    mpt_calibration_t none = {0};
    ck_assert_mpt_ok(mpt_cluster_set_calibration(c, d, &none));
    ck_assert_mpt_ok(mpt__calibrate(p, &mc, c, 64, &meas, 1, 1.1 * (3 * pf + 2 * pb), 7,
                                    &predicted));
    ck_assert_double_eq_tol(predicted / (1.1 * (3 * pf + 2 * pb)), 1.0, 0.005);
    mpt__model_cost_free(&mc);
    mpt_plan_free(p);
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

/* Two CPU devices, GEMMs through `provider0` and the host BLAS, on
 * cores of their own (no cpus given: nothing shared). */
static mpt_cluster_t *pair(const char *provider0)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"mpt_cluster\": 1, \"devices\": [{\"name\": \"a\", \"type\": \"cpu\", "
             "\"gemm_provider\": \"%s\", \"global_mem_bytes\": 1000000000, \"profile\": "
             "{\"gemm_gflops\": 50, \"mem_gbps\": 20, \"h2d_gbps\": 10, \"d2h_gbps\": 10}}, "
             "{\"name\": \"b\", \"type\": \"cpu\", \"gemm_provider\": \"host\", "
             "\"global_mem_bytes\": 1000000000, \"profile\": {\"gemm_gflops\": 50, "
             "\"mem_gbps\": 20, \"h2d_gbps\": 10, \"d2h_gbps\": 10}}]}",
             provider0);
    return test_cluster_from_text(text);
}

/* DP=2 on a fake report.  Host BLAS on both: replica 0 waits 5x the
 * predicted ring (for replica 1, 3x slower), replica 1 2x: the ring's
 * factor is the least wait's, 2, on both (each member's own wait made
 * it 5 and 2 before: the imbalance counted twice), and the compute
 * factors keep the measured 1 : 3.  CLBlast on device 0, whose passes
 * only queue its kernels (0.1 of the time) and whose wait holds them:
 * the ring stays as predicted and the wait beyond it is device 0's
 * compute, so its forward and backward together cost what it ran. */
START_TEST(calibration_of_a_ring)
{
    mpt_model_t *m = NULL;
    mpt__model_cost_t mc = {0};
    ck_assert_mpt_ok(mpt_model_from_json(mlp, &m));
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    for (int async = 0; async < 2; async++) {
        mpt_cluster_t *c = pair(async ? "clblast" : "host");
        mpt_plan_t *p = NULL;
        mpt_plan_request_t req;
        mpt_plan_request_default(&req);
        req.batch = 64, req.dp = 2, req.pp = req.tp = 1, req.all_devices = 1;
        ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
        double pf[2], pb[2], samples[2];
        size_t dev[2], ring[2] = {0, 1};
        for (int r = 0; r < 2; r++) {
            const mpt__plan_stage_t *st = &p->replicas[r].stages[0];
            dev[r] = st->devices[0].device;
            samples[r] = 64 * p->replicas[r].batch_share;
            const mpt_cluster_device_t *d = mpt_cluster_device(c, dev[r]);
            pf[r] = mpt__cost_layers(&mc, st->first, st->last, d, samples[r], 1.0, 0);
            pb[r] = mpt__cost_layers(&mc, st->first, st->last, d, samples[r], 1.0, 1);
        }
        const mpt__plan_stage_t *st0 = &p->replicas[0].stages[0];
        double pa = mpt__cost_allreduce_by(
            c, ring, 2, mpt__cost_param_bytes(&mc, st0->first, st0->last, 1.0), p->allreduce);
        mpt__cal_measured_t meas[2];
        if (!async) {
            meas[0] = (mpt__cal_measured_t){pf[0], pb[0], 5 * pa, 0};
            meas[1] = (mpt__cal_measured_t){3 * pf[1], 3 * pb[1], 2 * pa, 0};
        } else { /* device 0 (replica of dev 0) queues, device 1 runs */
            int r0 = dev[0] == 0 ? 0 : 1, r1 = 1 - r0;
            meas[r0] = (mpt__cal_measured_t){0.1 * pf[r0], 0.1 * pb[r0],
                                             0.9 * (pf[r0] + pb[r0]) + pa, 0};
            meas[r1] = (mpt__cal_measured_t){pf[r1], pb[r1], pa, 0};
        }
        for (int r = 0; r < 2; r++)
            meas[r].step_s = meas[r].forward_s + meas[r].backward_s + meas[r].reduce_wait_s;
        ck_assert_mpt_ok(mpt__calibrate(p, &mc, c, 64, meas, 2, 0, 5, NULL));
        const mpt_calibration_t *k0 = &mpt_cluster_device(c, dev[0])->profile.calibration;
        const mpt_calibration_t *k1 = &mpt_cluster_device(c, dev[1])->profile.calibration;
        if (!async) {
            ck_assert_double_eq_tol(k0->allreduce, 2.0, 1e-9);
            ck_assert_double_eq_tol(k1->allreduce, 2.0, 1e-9);
            /* the last fit scales every device's compute alike */
            ck_assert_double_eq_tol(k1->forward / k0->forward, 3.0, 1e-9);
            ck_assert_double_eq_tol(k1->backward / k0->backward, 3.0, 1e-9);
        } else {
            const mpt_calibration_t *ka = dev[0] == 0 ? k0 : k1, *kb = dev[0] == 0 ? k1 : k0;
            int ra = dev[0] == 0 ? 0 : 1, rb = 1 - ra;
            ck_assert_double_eq_tol(ka->allreduce, 1.0, 1e-12);
            ck_assert_double_eq_tol(kb->allreduce, 1.0, 1e-12);
            /* both devices cost what they ran, up to the common scale */
            double a = ka->forward * pf[ra] + ka->backward * pb[ra];
            double b = kb->forward * pf[rb] + kb->backward * pb[rb];
            ck_assert_double_eq_tol((a / (pf[ra] + pb[ra])) / (b / (pf[rb] + pb[rb])), 1.0, 1e-9);
        }
        mpt_plan_free(p);
        mpt_cluster_free(c);
    }
    mpt__model_cost_free(&mc);
    mpt_model_free(m);
}
END_TEST

/* The factors travel in profile JSON; out of bounds, refused by name. */
START_TEST(calibration_in_profile_json)
{
    mpt_profile_t p = {0}, q;
    p.gemm_gflops = 100, p.mem_gbps = 10, p.h2d_gbps = 5, p.d2h_gbps = 5;
    p.calibration = (mpt_calibration_t){1.5, 2.5, 0.5, 3.0, 42, 0.75, 1.25, 12};
    json_t *o = mpt__profile_to_json(&p);
    ck_assert_ptr_nonnull(o);
    ck_assert_mpt_ok(mpt__profile_from_json(o, "test", &q));
    ck_assert_double_eq(q.calibration.forward, 1.5);
    ck_assert_double_eq(q.calibration.backward, 2.5);
    ck_assert_double_eq(q.calibration.transfer, 0.5);
    ck_assert_double_eq(q.calibration.allreduce, 3.0);
    ck_assert_uint_eq(q.calibration.steps, 42);
    ck_assert_double_eq(q.calibration.company_forward, 0.75);
    ck_assert_double_eq(q.calibration.company_backward, 1.25);
    ck_assert_uint_eq(q.calibration.company_steps, 12);
    /* More steps in company than in all is a broken file. */
    json_object_set_new(json_object_get(json_object_get(o, "calibration"), "company"), "steps",
                        json_integer(43));
    ck_assert_mpt_fails(mpt__profile_from_json(o, "test", &q), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "test.calibration.company"));
    json_object_set_new(json_object_get(json_object_get(o, "calibration"), "company"), "steps",
                        json_integer(12));
    json_object_set_new(json_object_get(json_object_get(o, "calibration"), "company"), "forward",
                        json_real(0));
    ck_assert_mpt_fails(mpt__profile_from_json(o, "test", &q), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "test.calibration.company.forward"));
    json_object_set_new(json_object_get(o, "calibration"), "forward", json_real(1e9));
    ck_assert_mpt_fails(mpt__profile_from_json(o, "test", &q), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "test.calibration.forward"));
    json_decref(o);
    mpt_calibration_t bad = {NAN, 1, 1, 1, 1, 0, 0, 0};
    mpt_calibration_t too_many = {1, 1, 1, 1, 1, 1, 1, 2};
    mpt_calibration_t no_company_factor = {1, 1, 1, 1, 2, 0, 1, 1};
    mpt_calibration_t zero_factor = {1, 0, 1, 1, 2, 0, 0, 0};
    mpt_cluster_t *c = NULL;
    ck_assert_mpt_ok(mpt_cluster_load(test_path("../models/clusters/node-2nvidia-2amd.json"), &c));
    ck_assert_mpt_fails(mpt_cluster_set_calibration(c, 0, &bad), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt_cluster_set_calibration(c, 0, &too_many), MPT_ERR_INVALID);
    /* Factors of 0 with steps: what a cluster file could not read back. */
    ck_assert_mpt_fails(mpt_cluster_set_calibration(c, 0, &no_company_factor), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt_cluster_set_calibration(c, 0, &zero_factor), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt_cluster_set_calibration(c, 99, &p.calibration), MPT_ERR_RANGE);
    mpt_cluster_free(c);
}
END_TEST

static int uses(const mpt_plan_t *p, size_t d)
{
    for (size_t r = 0; r < p->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++)
            for (size_t g = 0; g < p->replicas[r].stages[s].ndevices; g++)
                if (p->replicas[r].stages[s].devices[g].device == d)
                    return 1;
    return 0;
}

/* Two CPU devices on the same cores (a node described by hwloc XML), each
 * measured at 50 of its 100 GFLOP/s while both ran. */
static mpt_cluster_t *pair_on_same_cores(void)
{
    char text[2048];
    size_t len = (size_t)snprintf(text, sizeof text,
                                  "{\"mpt_cluster\": 1, \"nodes\": [{\"name\": \"h\", "
                                  "\"topology_xml\": \"%s\"}], \"devices\": [",
                                  test_path("fixtures/two-socket-gpus.xml"));
    for (int i = 0; i < 2; i++)
        len += (size_t)snprintf(
            text + len, sizeof text - len,
            "%s{\"name\": \"cpu\", \"type\": \"cpu\", \"gemm_provider\": \"host\", "
            "\"global_mem_bytes\": 1000000000, \"compute_units\": 4, \"cpus\": \"0-3\", "
            "\"cores\": 4, \"numa_node\": 0, \"package\": 0, \"profile\": {\"gemm_gflops\": "
            "100, \"mem_gbps\": 20, \"h2d_gbps\": 10, \"d2h_gbps\": 10, "
            "\"shared_gemm_gflops\": 50, \"shared_devices\": 2}}",
            i ? ", " : "");
    snprintf(text + len, sizeof text - len, "]}");
    return test_cluster_from_text(text);
}

/* A plan of batch 64 on the pair: DP over both, or one device alone. */
static mpt_plan_t *pair_plan(const mpt_model_t *m, const mpt_cluster_t *c, int both)
{
    mpt_plan_t *p = NULL;
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.batch = 64, req.dp = both ? 2 : 1, req.pp = req.tp = 1, req.all_devices = both;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
    return p;
}

/* Each worker of plan p measured at `slow` times its predicted forward
 * and backward (the devices priced in the plan's company), the ring as
 * predicted; calibrated over `steps` steps. */
static void calibrate_slow(const mpt_plan_t *p, const mpt__model_cost_t *mc, mpt_cluster_t *c,
                           double slow, uint64_t steps)
{
    mpt_cluster_device_t *eff = NULL;
    mpt__cal_measured_t meas[2];
    size_t ring[2] = {0, 1};
    ck_assert_uint_le(p->nreplicas, 2);
    ck_assert_mpt_ok(mpt__plan_company(p, c, &eff));
    for (size_t r = 0; r < p->nreplicas; r++) {
        const mpt__plan_stage_t *st = &p->replicas[r].stages[0];
        double samples = 64 * p->replicas[r].batch_share;
        const mpt_cluster_device_t *d = &eff[st->devices[0].device];
        double pa = p->nreplicas < 2 ? 0
                                     : mpt__cost_allreduce_by(
                                           c, ring, 2,
                                           mpt__cost_param_bytes(mc, st->first, st->last, 1.0),
                                           p->allreduce);
        meas[r].forward_s = slow * mpt__cost_layers(mc, st->first, st->last, d, samples, 1.0, 0);
        meas[r].backward_s = slow * mpt__cost_layers(mc, st->first, st->last, d, samples, 1.0, 1);
        meas[r].reduce_wait_s = pa;
        meas[r].step_s = meas[r].forward_s + meas[r].backward_s + pa;
    }
    free(eff);
    ck_assert_mpt_ok(mpt__calibrate(p, mc, c, 64, meas, p->nreplicas, 0, steps, NULL));
}

static double predicted(const mpt_plan_t *p, const mpt__model_cost_t *mc, const mpt_cluster_t *c)
{
    mpt__plan_t t = {0};
    ck_assert_mpt_ok(mpt__plan_predict_calibrated(p, mc, c, 64, &t));
    return t.predicted_step_s;
}

/* A device's compute in company is calibrated apart from its compute
 * alone (mpt_calibration_t.company_*): a pair's DP plan measured 2x slow
 * in company keeps its prediction after the device is calibrated alone
 * at 0.5 (one calibration served both before, and the later one-device
 * rows overwrote what DP measured before the re-plan read it); a device
 * measured only in company is priced alone with its company factors, not
 * with its raw profile.  Tolerances: a prediction from unchanged factors
 * is the same sum again, exact but for rounding (1e-9), and factors copied
 * or borrowed are the same numbers (1e-12); the calibration's final fit
 * stops within 0.5% of the measured step, so a fitted factor is within
 * 0.5% of the slowdown measured, and a one-device prediction, the sum of
 * the forward and backward each fitted so, within 1% of it. */
START_TEST(calibration_in_company_kept_apart)
{
    mpt_model_t *m = NULL;
    mpt__model_cost_t mc = {0};
    ck_assert_mpt_ok(mpt_model_from_json(mlp, &m));
    ck_assert_mpt_ok(mpt__model_cost(m, &mc));
    mpt_cluster_t *c = pair_on_same_cores();
    mpt_plan_t *dp = pair_plan(m, c, 1), *one = pair_plan(m, c, 0);
    double one_raw = predicted(one, &mc, c), dp_raw = predicted(dp, &mc, c);
    size_t d = one->replicas[0].stages[0].devices[0].device;
    calibrate_slow(dp, &mc, c, 2.0, 5);
    const mpt_calibration_t *cal = &mpt_cluster_device(c, d)->profile.calibration;
    ck_assert_uint_eq(cal->company_steps, 5);
    ck_assert_uint_eq(cal->steps, 5);
    ck_assert_double_eq_tol(cal->company_forward, 2.0, 0.005 * 2);
    ck_assert_double_eq_tol(cal->company_backward, 2.0, 0.005 * 2);
    double dp_in_company = predicted(dp, &mc, c);
    ck_assert_double_gt(dp_in_company, 1.5 * dp_raw);
    /* Measured only in company: alone it is priced with those factors. */
    ck_assert_double_eq_tol(predicted(one, &mc, c) / one_raw, cal->company_forward, 0.01);
    /* Calibrated alone at 0.5: the one-device plan follows, DP keeps its
     * company factors. */
    calibrate_slow(one, &mc, c, 0.5 / cal->company_forward, 3);
    cal = &mpt_cluster_device(c, d)->profile.calibration;
    ck_assert_uint_eq(cal->steps, 8);
    ck_assert_uint_eq(cal->company_steps, 5);
    ck_assert_double_eq_tol(cal->forward, 0.5, 0.005 * 0.5);
    ck_assert_double_eq_tol(predicted(one, &mc, c) / one_raw, 0.5, 0.01);
    ck_assert_double_eq_tol(predicted(dp, &mc, c) / dp_in_company, 1.0, 1e-9);
    /* A device never measured borrows both: alone and in company. */
    size_t other = 1 - d;
    mpt_calibration_t none = {0};
    mpt_cluster_t *b = NULL;
    ck_assert_mpt_ok(mpt_cluster_set_calibration(c, other, &none));
    ck_assert_mpt_ok(mpt__calibration_borrowed(c, &b));
    const mpt_calibration_t *lent = &mpt_cluster_device(b, other)->profile.calibration;
    ck_assert_double_eq_tol(lent->forward, cal->forward, 1e-12);
    ck_assert_double_eq_tol(lent->company_forward, cal->company_forward, 1e-12);
    ck_assert_double_eq_tol(lent->company_backward, cal->company_backward, 1e-12);
    ck_assert_uint_eq(lent->steps, 8);
    ck_assert_uint_eq(lent->company_steps, 5);
    mpt_cluster_free(b);
    mpt_cluster_free(c);
    /* Measured only alone: in company it is priced with those factors. */
    c = pair_on_same_cores();
    calibrate_slow(one, &mc, c, 0.5, 3);
    ck_assert_uint_eq(mpt_cluster_device(c, d)->profile.calibration.company_steps, 0);
    mpt_cluster_device_t *eff = NULL;
    ck_assert_mpt_ok(mpt__plan_company(dp, c, &eff)); /* d as DP runs it, in company */
    ck_assert_double_eq_tol(mpt__cal_factor(&eff[d].profile, MPT__CAL_FORWARD),
                            mpt_cluster_device(c, d)->profile.calibration.forward, 1e-12);
    ck_assert_double_lt(mpt_cluster_device(c, d)->profile.calibration.forward, 0.6);
    free(eff);
    mpt_plan_free(dp);
    mpt_plan_free(one);
    mpt_cluster_free(c);
    mpt__model_cost_free(&mc);
    mpt_model_free(m);
}
END_TEST

/* The decision: a device calibrated 50x slow than its profile says is
 * left out of the next plan, which was using it before. */
START_TEST(calibrated_slow_device_left_out)
{
    mpt_model_t *m = NULL;
    mpt_cluster_t *c = NULL;
    mpt_plan_t *before = NULL, *after = NULL;
    ck_assert_mpt_ok(mpt_model_load(test_path("../models/mlp-fashion.json"), &m));
    ck_assert_mpt_ok(mpt_cluster_load(test_path("../models/clusters/node-2nvidia-2amd.json"), &c));
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.batch = 512;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &before));
    size_t slow = before->replicas[0].stages[0].devices[0].device;
    ck_assert(uses(before, slow));
    mpt_calibration_t cal = {50, 50, 1, 1, 20, 0, 0, 0};
    ck_assert_mpt_ok(mpt_cluster_set_calibration(c, slow, &cal));
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &after));
    ck_assert(!uses(after, slow));
    mpt_plan_free(before);
    mpt_plan_free(after);
    mpt_cluster_free(c);
    mpt_model_free(m);
}
END_TEST

/* Re-planning never prefers a device for having never been measured
 * (calibrate.c, mpt__calibration_borrowed): an uncalibrated device borrows
 * the factors of a calibrated one of its kind, else of one on its cores,
 * else the worst measured factor (at least 1); the measured keep theirs. */
START_TEST(unmeasured_devices_borrow_calibration)
{
    mpt_model_t *m = NULL;
    mpt_cluster_t *c = NULL, *b = NULL, *mixed = NULL, *mb = NULL;
    mpt_plan_t *raw = NULL, *fair = NULL;
    ck_assert_mpt_ok(mpt_model_load(test_path("../models/mlp-fashion.json"), &m));
    /* Two A100s and a CPU on the cores of both. */
    ck_assert_mpt_ok(mpt_cluster_load(test_path("../models/clusters/node-gpus-cpu.json"), &c));
    mpt_calibration_t slow = {3, 3, 1, 1, 10, 0, 0, 0};
    ck_assert_mpt_ok(mpt_cluster_set_calibration(c, 0, &slow));
    ck_assert_mpt_ok(mpt__calibration_borrowed(c, &b));
    for (size_t d = 0; d < 3; d++) { /* device 1 by kind, device 2 by its cores */
        const mpt_calibration_t *cal = &mpt_cluster_device(b, d)->profile.calibration;
        ck_assert_msg(cal->steps == 10 && fabs(cal->forward - 3) < 1e-12 &&
                      fabs(cal->backward - 3) < 1e-12, "device %zu: %g %g", d, cal->forward,
                      cal->backward);
    }
    ck_assert_uint_eq(mpt_cluster_device(c, 1)->profile.calibration.steps, 0); /* c unchanged */
    /* One device: uncalibrated, the other A100 looks 3x faster than the
     * measured one and would win; borrowed, it is priced the same. */
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.batch = 512, req.dp = req.pp = req.tp = 1;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &raw));
    ck_assert_mpt_ok(mpt_plan_create(m, b, &req, &fair));
    double s_raw = 0, s_fair = 0;
    ck_assert_mpt_ok(mpt_plan_simulate(raw, m, c, &s_raw, NULL, NULL));
    ck_assert_mpt_ok(mpt_plan_simulate(fair, m, b, &s_fair, NULL, NULL));
    ck_assert(!uses(raw, 0));
    ck_assert_double_eq_tol(s_fair / s_raw, 3.0, 1e-6);
    /* No kind and no cores in common: the worst measured factor. */
    ck_assert_mpt_ok(mpt_cluster_load(test_path("../models/clusters/node-2nvidia-2amd.json"), &mixed));
    mpt_calibration_t fast = {0.5, 0.5, 1, 1, 10, 0, 0, 0};
    ck_assert_mpt_ok(mpt_cluster_set_calibration(mixed, 0, &slow));
    ck_assert_mpt_ok(mpt_cluster_set_calibration(mixed, 2, &fast));
    ck_assert_mpt_ok(mpt__calibration_borrowed(mixed, &mb));
    const double want[4] = {3, 3, 0.5, 3};
    for (size_t d = 0; d < 4; d++)
        ck_assert_double_eq_tol(mpt_cluster_device(mb, d)->profile.calibration.forward, want[d],
                                1e-12);
    mpt_plan_free(raw);
    mpt_plan_free(fair);
    mpt_cluster_free(c);
    mpt_cluster_free(b);
    mpt_cluster_free(mixed);
    mpt_cluster_free(mb);
    mpt_model_free(m);
}
END_TEST

static float xs[COUNT * IN];
static int32_t ys[COUNT];

static void make_data(mpt_model_t *m, mpt_data_t **out)
{
    mpt_dataset_t *train = NULL, *eval = NULL;
    mpt__rng_uniform(3, 0, 0, 1.0f, xs, COUNT * IN); /* in [-1, 1) */
    for (int i = 0; i < COUNT; i++)
        ys[i] = (xs[i * IN] > 0.3f) + (xs[i * IN] > -0.3f);
    ck_assert_mpt_ok(mpt_dataset_from_memory(COUNT, IN, CLASSES, xs, ys, &train));
    ck_assert_mpt_ok(mpt_dataset_from_memory(COUNT, IN, CLASSES, xs, ys, &eval));
    ck_assert_mpt_ok(mpt_data_from_datasets(train, eval, m, BATCH, 9, out));
}

typedef struct {
    double loss[64];
    uint64_t steps;
    int replans, moved;
    char new_plan[256];
} record_t;

static void on_step(void *ctx, const mpt_step_report_t *r, uint64_t epoch,
                    const mpt_device_step_t *d, size_t n)
{
    record_t *rec = ctx;
    (void)epoch, (void)d, (void)n;
    if (r->step >= 1 && r->step <= 64)
        rec->loss[r->step - 1] = r->loss, rec->steps = r->step;
}

static void on_replan(void *ctx, uint64_t step, const char *old_plan, double old_s,
                      const char *new_plan, double new_s, int moved)
{
    record_t *rec = ctx;
    (void)step, (void)old_plan, (void)old_s, (void)new_s;
    rec->replans++, rec->moved += moved;
    snprintf(rec->new_plan, sizeof rec->new_plan, "%s", new_plan);
}

static mpt_plan_t *plan_of(const mpt_model_t *m, const mpt_cluster_t *c, size_t dp, size_t pp)
{
    mpt_plan_request_t req;
    mpt_plan_t *p = NULL;
    mpt_plan_request_default(&req);
    req.batch = BATCH, req.dp = dp, req.pp = pp, req.tp = 1, req.all_devices = 1;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &p));
    return p;
}

/* The test model, the PoCL devices (at least two: the suite runs under
 * two, Makefile.am) and their local cluster. */
static void open_pair(mpt_model_t **m, mpt_devices_t **devs, mpt_cluster_t **c)
{
    ck_assert_mpt_ok(mpt_model_from_json(mlp, m));
    ck_assert_mpt_ok(mpt_devices_open("pocl", devs));
    ck_assert_uint_ge(mpt_devices_count(*devs), 2);
    ck_assert_mpt_ok(mpt_cluster_local(*devs, NULL, c));
}

/* The mechanism: 3 steps under DP=2 (AdamW: two optimizer slots to
 * carry), a move to a PP=2 pipeline, 3 more: every loss equals the
 * unmoved run's within the plan-invariance tolerance. */
START_TEST(replan_at_step_equals_unmoved)
{
    mpt_model_t *m = NULL;
    mpt_devices_t *devs = NULL;
    mpt_cluster_t *c = NULL;
    open_pair(&m, &devs, &c);
    mpt_plan_t *dp2 = plan_of(m, c, 2, 1), *pp2 = plan_of(m, c, 1, 2);
    mpt_train_config_t cfg;
    mpt_train_config_default(&cfg);
    cfg.batch = BATCH, cfg.schedule = MPT_SCHEDULE_CONSTANT;
    mpt_train_config_use_optimizer(&cfg, MPT_OPTIM_ADAMW); /* two optimizer slots to carry */
    mpt_trainer_t *a = NULL, *b = NULL;
    ck_assert_mpt_ok(mpt_trainer_create_planned(m, devs, dp2, &cfg, NULL, c, &a));
    ck_assert_mpt_ok(mpt_trainer_create_planned(m, devs, dp2, &cfg, NULL, c, &b));
    mpt_trainer_set_calibrating(a, 0); /* a's steps are kept out of calibration */
    for (int step = 0; step < 6; step++) {
        mpt_step_stats_t sa, sb;
        const float *x = xs + (size_t)(step % (COUNT / BATCH)) * BATCH * IN;
        const int32_t *y = ys + (size_t)(step % (COUNT / BATCH)) * BATCH;
        if (step == 3) {
            ck_assert_mpt_ok(mpt_trainer_calibrate(b, c)); /* on 3 measured steps */
            ck_assert(mpt_trainer_predicted_step(b) > 0);
            ck_assert_mpt_ok(mpt_trainer_replan(b, pp2));
            ck_assert_uint_eq(mpt_trainer_steps(b), 3);
        }
        ck_assert_mpt_ok(mpt_trainer_step(a, x, y, &sa));
        ck_assert_mpt_ok(mpt_trainer_step(b, x, y, &sb));
        ck_assert_msg(fabs(sa.loss - sb.loss) <= LOSS_RTOL * fabs(sa.loss),
                      "step %d: unmoved %.9g, moved %.9g", step + 1, sa.loss, sb.loss);
    }
    /* Six steps, none counted: nothing to calibrate on; one counted: one. */
    ck_assert_mpt_fails(mpt_trainer_calibrate(a, c), MPT_ERR_INVALID);
    mpt_trainer_set_calibrating(a, 1);
    ck_assert_mpt_ok(mpt_trainer_step(a, xs, ys, NULL));
    uint64_t before = mpt_cluster_device(c, 0)->profile.calibration.steps;
    ck_assert_mpt_ok(mpt_trainer_calibrate(a, c));
    ck_assert_uint_eq(mpt_cluster_device(c, 0)->profile.calibration.steps, before + 1);
    mpt_device_step_t st;
    ck_assert_mpt_ok(mpt_trainer_device_stats(b, 1, &st));
    ck_assert_int_eq(st.stage, 1); /* it runs the pipeline now */
    ck_assert(st.forward_s > 0 && st.backward_s > 0);
    mpt_trainer_free(a);
    mpt_trainer_free(b);
    mpt_plan_free(dp2);
    mpt_plan_free(pp2);
    mpt_cluster_free(c);
    mpt_devices_free(devs);
    mpt_model_free(m);
}
END_TEST

/* A move onto a device the old plan left idle keeps kernel timing on for
 * it: after the move every worker reports busy time (a device new to
 * the plan reported none, its timing never turned on). */
START_TEST(busy_after_move_to_idle_device)
{
    mpt_model_t *m = NULL;
    mpt_devices_t *devs = NULL;
    mpt_cluster_t *c = NULL;
    mpt_plan_t *one = NULL;
    open_pair(&m, &devs, &c);
    mpt_plan_request_t req;
    mpt_plan_request_default(&req);
    req.batch = BATCH, req.dp = req.pp = req.tp = 1;
    ck_assert_mpt_ok(mpt_plan_create(m, c, &req, &one));
    mpt_plan_t *dp2 = plan_of(m, c, 2, 1);
    mpt_train_config_t cfg;
    mpt_train_config_default(&cfg);
    cfg.batch = BATCH;
    mpt_trainer_t *t = NULL;
    mpt_step_report_t r;
    ck_assert_mpt_ok(mpt_trainer_create_planned(m, devs, one, &cfg, NULL, c, &t));
    ck_assert_mpt_ok(mpt_trainer_set_timing(t, 1));
    ck_assert_mpt_ok(mpt_trainer_step(t, xs, ys, NULL));
    ck_assert_mpt_ok(mpt_trainer_report(t, &r));
    ck_assert_mpt_ok(mpt_trainer_replan(t, dp2));
    for (int step = 0; step < 2; step++)
        ck_assert_mpt_ok(mpt_trainer_step(t, xs + (size_t)step * BATCH * IN,
                                          ys + (size_t)step * BATCH, NULL));
    ck_assert_mpt_ok(mpt_trainer_report(t, &r));
    ck_assert_uint_eq(mpt_trainer_device_count(t), 2);
    for (size_t i = 0; i < 2; i++) {
        mpt_device_step_t st;
        ck_assert_mpt_ok(mpt_trainer_device_stats(t, i, &st));
        ck_assert_msg(st.busy > 0, "worker %zu (device %d): busy %g after the move", i, st.device,
                      st.busy);
    }
    mpt_trainer_free(t);
    mpt_plan_free(one);
    mpt_plan_free(dp2);
    mpt_cluster_free(c);
    mpt_devices_free(devs);
    mpt_model_free(m);
}
END_TEST

/* The loop: mpt_trainer_fit rebalancing at step 4 of 10 (forced to move
 * by a negative margin, onto a pinned pipeline) equals the run without
 * rebalancing; the metrics carry the re-plan and both step figures. */
START_TEST(fit_rebalances_mid_run)
{
    mpt_model_t *m = NULL;
    mpt_devices_t *devs = NULL;
    mpt_cluster_t *c = NULL;
    char metrics[] = "/tmp/check_calibrate_XXXXXX";
    int fd = mkstemp(metrics);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_mpt_ok(mpt_model_from_json(mlp, &m));
    ck_assert_mpt_ok(mpt_devices_open("pocl", &devs));
    if (mpt_devices_count(devs) < 2) {
        mpt_devices_free(devs);
        mpt_model_free(m);
        unlink(metrics);
        return;
    }
    ck_assert_mpt_ok(mpt_cluster_local(devs, NULL, &c));
    mpt_plan_t *dp2 = plan_of(m, c, 2, 1);
    mpt_plan_request_t to_pp;
    mpt_plan_request_default(&to_pp);
    to_pp.batch = BATCH, to_pp.dp = 1, to_pp.pp = 2, to_pp.tp = 1, to_pp.all_devices = 1;
    record_t rec[2];
    memset(rec, 0, sizeof rec);
    for (int run = 0; run < 2; run++) {
        mpt_train_config_t cfg;
        mpt_train_config_default(&cfg);
        cfg.batch = BATCH, cfg.schedule = MPT_SCHEDULE_CONSTANT;
        mpt_trainer_t *t = NULL;
        mpt_data_t *data = NULL;
        make_data(m, &data);
        ck_assert_mpt_ok(mpt_trainer_create_planned(m, devs, dp2, &cfg, NULL, c, &t));
        mpt_fit_options_t o;
        mpt_fit_options_default(&o);
        o.steps = 10, o.on_step = on_step, o.on_replan = on_replan, o.ctx = &rec[run];
        o.rebalance_after = run ? 4 : 0;
        o.cluster = c, o.replan = &to_pp, o.rebalance_margin = -0.99;
        o.metrics = run ? metrics : NULL;
        ck_assert_mpt_ok(mpt_trainer_fit(t, data, &o));
        mpt_trainer_free(t);
        mpt_data_free(data);
    }
    ck_assert_int_eq(rec[0].replans, 0);
    ck_assert_int_eq(rec[1].replans, 1);
    ck_assert_int_eq(rec[1].moved, 1);
    ck_assert_ptr_nonnull(strstr(rec[1].new_plan, "pp=2"));
    ck_assert_uint_eq(rec[1].steps, 10);
    for (int s = 0; s < 10; s++)
        ck_assert_msg(fabs(rec[0].loss[s] - rec[1].loss[s]) <= LOSS_RTOL * fabs(rec[0].loss[s]),
                      "step %d: uninterrupted %.9g, rebalanced %.9g", s + 1, rec[0].loss[s],
                      rec[1].loss[s]);
    /* The calibration the move was decided with is on the cluster. */
    ck_assert_uint_gt(mpt_cluster_device(c, 0)->profile.calibration.steps, 0);
    FILE *f = fopen(metrics, "r");
    char line[8192];
    int replan_lines = 0, predicted_lines = 0;
    while (f && fgets(line, sizeof line, f)) {
        replan_lines += strstr(line, "{\"step\": 4, \"replan\": {\"old\": \"dp=2") != NULL &&
                        strstr(line, "\"moved\": true") != NULL;
        predicted_lines += strstr(line, "\"step_s\": 0.") && strstr(line, "\"predicted_step_s\": 0.");
    }
    if (f)
        fclose(f);
    unlink(metrics);
    ck_assert_int_eq(replan_lines, 1);
    ck_assert_int_eq(predicted_lines, 10); /* every step's report */
    mpt_plan_free(dp2);
    mpt_cluster_free(c);
    mpt_devices_free(devs);
    mpt_model_free(m);
}
END_TEST

/* Two PoCL devices of one process share the machine's cores: the local
 * cluster measures them together (profile/shared.c).  Each gets concurrent
 * figures in (0, 2x its rate alone] (no timed bound: the machine's load
 * decides the value), one group file is cached, and a second cluster
 * reads the same figures back exactly instead of measuring again. */
START_TEST(shared_cores_measured_together)
{
    mpt_devices_t *devs = NULL;
    mpt_cluster_t *a = NULL, *b = NULL;
    char dir[] = "/tmp/check_cal_cache_XXXXXX", old[4096] = "", cmd[4200];
    const char *was = getenv("XDG_CACHE_HOME");
    snprintf(old, sizeof old, "%s", was ? was : "");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    setenv("XDG_CACHE_HOME", dir, 1);
    setenv("MPT_PROFILE_QUICK", "1", 1);
    ck_assert_mpt_ok(mpt_devices_open("pocl", &devs));
    ck_assert_uint_ge(mpt_devices_count(devs), 2); /* the suite runs under two (Makefile.am) */
    ck_assert_mpt_ok(mpt_cluster_local(devs, NULL, &a));
    ck_assert_mpt_ok(mpt_cluster_local(devs, NULL, &b));
    for (size_t i = 0; i < mpt_cluster_device_count(a); i++) {
        const mpt_profile_t *p = &mpt_cluster_device(a, i)->profile;
        const mpt_profile_t *q = &mpt_cluster_device(b, i)->profile;
        ck_assert_msg(p->shared_gemm_gflops > 0 && p->shared_gemm_gflops <= 2 * p->gemm_gflops,
                      "device %zu: %g GFLOP/s together, %g alone", i, p->shared_gemm_gflops,
                      p->gemm_gflops);
        ck_assert_msg(p->shared_mem_gbps > 0 && p->shared_mem_gbps <= 2 * p->mem_gbps,
                      "device %zu: %g GB/s together, %g alone", i, p->shared_mem_gbps,
                      p->mem_gbps);
        ck_assert_double_eq(p->shared_gemm_gflops, q->shared_gemm_gflops);
        ck_assert_double_eq(p->shared_mem_gbps, q->shared_mem_gbps);
        /* Both ran at once, and the count survives the cluster's JSON. */
        ck_assert_double_eq(p->shared_devices, (double)mpt_devices_count(devs));
        ck_assert_double_eq(q->shared_devices, p->shared_devices);
    }
    char *json = NULL;
    ck_assert_mpt_ok(mpt_cluster_to_json(a, &json));
    mpt_cluster_t *back = test_cluster_from_text(json);
    ck_assert_double_eq(mpt_cluster_device(back, 0)->profile.shared_devices,
                        mpt_cluster_device(a, 0)->profile.shared_devices);
    mpt_cluster_free(back);
    free(json);
    snprintf(cmd, sizeof cmd, "test \"$(ls %s/mpt/shared-*.json | wc -l)\" -eq 1", dir);
    ck_assert_msg(system(cmd) == 0, "not one shared-*.json in %s/mpt", dir);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    if (*old)
        setenv("XDG_CACHE_HOME", old, 1);
    else
        unsetenv("XDG_CACHE_HOME");
    unsetenv("MPT_PROFILE_QUICK");
    mpt_cluster_free(a);
    mpt_cluster_free(b);
    mpt_devices_free(devs);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("calibrate");
    TCase *tc = tcase_create("calibrate");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, calibration_from_fake_report);
    tcase_add_test(tc, calibration_of_a_ring);
    tcase_add_test(tc, calibration_in_profile_json);
    tcase_add_test(tc, calibrated_slow_device_left_out);
    tcase_add_test(tc, calibration_in_company_kept_apart);
    tcase_add_test(tc, unmeasured_devices_borrow_calibration);
    tcase_add_test(tc, replan_at_step_equals_unmoved);
    tcase_add_test(tc, fit_rebalances_mid_run);
    tcase_add_test(tc, busy_after_move_to_idle_device);
    tcase_add_test(tc, shared_cores_measured_together);
    suite_add_tcase(s, tc);
    return test_run(s, 0);
}
