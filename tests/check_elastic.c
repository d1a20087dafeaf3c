/*
 * tests/check_elastic.c: elastic training in one process (train/elastic.c).
 * A data-parallel plan on two one-core PoCL devices trains TOTAL steps of
 * a small MLP (AdamW, so both optimizer slots travel) with a snapshot
 * every EVERY steps; a device fault is injected after step FAIL_AT from the
 * step callback (so it strikes in the next step, or in the checkpoint
 * written right after the callback):
 *
 *   - device 1 lost (MPT_FAIL_DEVICE=1:0:lost): one recovery, back to the
 *     snapshot of step EVERY (losing at most one interval), device 1
 *     dropped, the run finishes every step with no action; a metrics line
 *     records it;
 *   - device 1's kernel launches failing (MPT_FAIL_LAUNCH=1:0): its first
 *     failure keeps it for one more try, which fails again while the run
 *     recovers (a second failure during recovery), and then it is dropped;
 *   - device 1 hung (MPT_FAIL_DEVICE=1:0:hang): the 3 s deadline
 *     (config.comm_timeout_s) gives it up, reason "hang";
 *   - the device holding replica 0 lost while the checkpoint of step
 *     FAIL_AT is written: the run recovers and its final checkpoint loads;
 *   - both devices lost in one step: the recovery finds the survivor lost
 *     too while rebuilding, no device is left, and the run ends with the
 *     snapshot written to the checkpoint (it loads at the snapshot's step)
 *     and an error that says so.
 *
 * Reference: an uninterrupted run that trains the same plan to the
 * snapshot's step and then moves to the one-device plan of the survivor
 * (mpt_trainer_replan).  Every step's loss of the elastic run, replayed
 * steps included, equals the reference's within
 * |a - b| <= 1e-5 * max(1, |b|): the two runs differ only by the order of
 * float sums of data parallelism against one device, the plan-invariance
 * tolerance of check_engine.c (measured there below 1e-7).
 *
 * Runs without fork (OpenCL); the devices are opened anew by each test,
 * since an injected loss marks its device for good.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/rng.h"
#include "plan/plan.h"
#include "testutil.h"

enum { COUNT = 256, IN = 6, CLASSES = 3, BATCH = 16, SEED = 5, TOTAL = 14, EVERY = 4,
       FAIL_AT = 6 };

static const char *mlp =
    "{\"name\": \"elastic\", \"input\": [6], \"layers\": [{\"kind\": \"linear\", \"units\": 16}, "
    "{\"kind\": \"relu\"}, {\"kind\": \"linear\", \"units\": 3}, "
    "{\"kind\": \"softmax_cross_entropy\"}]}";

static float xs[COUNT * IN];
static int32_t ys[COUNT];

typedef struct {
    mpt_model_t *m;
    mpt_devices_t *set;
    mpt_cluster_t *cluster;
    mpt_plan_request_t req;
    mpt_plan_t *plan; /* data parallel over both devices */
} world;

static void open_world(world *w)
{
    mpt_plan_request_t *req = &w->req;
    memset(w, 0, sizeof *w);
    ck_assert_mpt_ok(mpt_model_from_json(mlp, &w->m));
    ck_assert_mpt_ok(mpt_devices_open("0,1", &w->set));
    ck_assert_mpt_ok(mpt_cluster_local(w->set, NULL, &w->cluster));
    mpt_plan_request_default(req);
    req->batch = BATCH, req->optimizer = MPT_OPTIM_ADAMW, req->dp = 2, req->all_devices = 1;
    ck_assert_mpt_ok(mpt_plan_create(w->m, w->cluster, req, &w->plan));
}

static void close_world(world *w)
{
    mpt_plan_free(w->plan);
    mpt_cluster_free(w->cluster);
    mpt_devices_free(w->set);
    mpt_model_free(w->m);
}

/* The plan of the survivor: the same planner, on the same cluster, with
 * the other device excluded and the dimensions free, as train/elastic.c
 * plans it. */
static mpt_plan_t *survivor_plan(const world *w, int survivor)
{
    unsigned char excluded[2] = {survivor != 0, survivor != 1};
    mpt_plan_request_t req = w->req;
    mpt_plan_t *p = NULL;
    req.dp = req.pp = req.tp = 0;
    ck_assert_mpt_ok(mpt__plan_make_excluding(w->m, w->cluster, &req, excluded, &p));
    return p;
}

static mpt_trainer_t *new_trainer(const world *w, double deadline_s)
{
    mpt_train_config_t cfg;
    mpt_trainer_t *t = NULL;
    mpt_train_config_default(&cfg);
    mpt_train_config_use_optimizer(&cfg, MPT_OPTIM_ADAMW);
    cfg.batch = BATCH, cfg.seed = SEED, cfg.lr = 3e-3, cfg.total_steps = TOTAL;
    cfg.comm_timeout_s = deadline_s;
    ck_assert_mpt_ok(mpt_trainer_create_planned(w->m, w->set, w->plan, &cfg, NULL, w->cluster,
                                                &t));
    return t;
}

static mpt_data_t *new_data(const world *w)
{
    mpt_dataset_t *train, *eval;
    mpt_data_t *d = NULL;
    mpt__rng_uniform(3, 0, 0, 1.0f, xs, COUNT * IN); /* in [-1, 1) */
    for (int i = 0; i < COUNT; i++)
        ys[i] = (xs[i * IN] > 0.3f) + (xs[i * IN] > -0.3f);
    ck_assert_mpt_ok(mpt_dataset_from_memory(COUNT, IN, CLASSES, xs, ys, &train));
    ck_assert_mpt_ok(mpt_dataset_from_memory(COUNT, IN, CLASSES, xs, ys, &eval));
    ck_assert_mpt_ok(mpt_data_from_datasets(train, eval, w->m, BATCH, SEED, &d));
    return d;
}

/* What a run saw through its callbacks. */
typedef struct {
    double loss[TOTAL + 1]; /* per step, the last time it was trained */
    const char *env, *spec; /* the injection, set after step fail_at */
    uint64_t fail_at;
    int armed, recoveries;
    uint64_t step[4], replayed[4];
    int device[4];
    char reason[4][16], plan[4][256];
    double lost[4];
} run;

static void on_step(void *ctx, const mpt_step_report_t *r, uint64_t epoch,
                    const mpt_device_step_t *devices, size_t n)
{
    run *s = ctx;
    (void)epoch, (void)devices, (void)n;
    ck_assert(r->step >= 1 && r->step <= TOTAL);
    s->loss[r->step] = r->loss;
    if (s->env && r->step == s->fail_at && !s->armed) {
        ck_assert_int_eq(setenv(s->env, s->spec, 1), 0);
        s->armed = 1;
    }
}

static void on_recover(void *ctx, uint64_t step, int device, const char *reason,
                       const char *plan, uint64_t replayed, double seconds_lost)
{
    run *s = ctx;
    ck_assert_int_lt(s->recoveries, 4);
    int k = s->recoveries++;
    s->step[k] = step, s->device[k] = device, s->replayed[k] = replayed;
    s->lost[k] = seconds_lost;
    snprintf(s->reason[k], sizeof s->reason[k], "%s", reason);
    snprintf(s->plan[k], sizeof s->plan[k], "%s", plan);
}

static void options(mpt_fit_options_t *o, run *s)
{
    mpt_fit_options_default(o);
    o->steps = TOTAL;
    o->rebalance_after = 0; /* only the failure moves the plan */
    o->snapshot_every = EVERY;
    o->on_step = on_step, o->on_recover = on_recover, o->ctx = s;
}

/* The uninterrupted reference: the two-device plan to step switch_at, then
 * the one-device plan of `survivor`. */
static void reference(int survivor, uint64_t switch_at, double *loss)
{
    world w;
    run s = {0};
    mpt_fit_options_t o;
    open_world(&w);
    mpt_trainer_t *t = new_trainer(&w, 0);
    mpt_data_t *d = new_data(&w);
    mpt_plan_t *one = survivor_plan(&w, survivor);
    options(&o, &s);
    o.elastic = -1;
    o.steps = switch_at;
    ck_assert_mpt_ok(mpt_trainer_fit(t, d, &o));
    ck_assert_mpt_ok(mpt_trainer_replan(t, one));
    o.steps = TOTAL;
    ck_assert_mpt_ok(mpt_trainer_fit(t, d, &o));
    ck_assert_uint_eq(mpt_trainer_steps(t), TOTAL);
    memcpy(loss, s.loss, sizeof s.loss);
    mpt_trainer_free(t);
    mpt_data_free(d);
    mpt_plan_free(one);
    close_world(&w);
}

/* The devices of a plan summary ("... on devices 0,1"). */
static const char *devices_of(const char *plan)
{
    const char *at = strstr(plan, "devices ");
    return at ? at + strlen("devices ") : "";
}

static void assert_losses(const run *s, const double *ref)
{
    for (int i = 1; i <= TOTAL; i++)
        ck_assert_msg(fabs(s->loss[i] - ref[i]) <= 1e-5 * fmax(1.0, fabs(ref[i])),
                      "step %d: loss %.9g, the reference's %.9g", i, s->loss[i], ref[i]);
}

/* A fitted run of the elastic trainer with the injection; the status. */
static int elastic_run(run *s, double deadline_s, const char *checkpoint, const char *metrics,
                       uint64_t checkpoint_every)
{
    world w;
    mpt_fit_options_t o;
    open_world(&w);
    mpt_trainer_t *t = new_trainer(&w, deadline_s);
    mpt_data_t *d = new_data(&w);
    options(&o, s);
    o.cluster = w.cluster, o.replan = &w.req; /* every device the run may use, as planned */
    o.checkpoint = checkpoint, o.checkpoint_every = checkpoint_every, o.overwrite = 1;
    o.metrics = metrics;
    int status = mpt_trainer_fit(t, d, &o);
    unsetenv(s->env);
    if (status == MPT_OK)
        ck_assert_uint_eq(mpt_trainer_steps(t), TOTAL); /* every step, no human action */
    mpt_trainer_free(t);
    mpt_data_free(d);
    close_world(&w);
    return status;
}

/* The library's warnings of the last run, one after the other. */
static char warnings[8192];

static void on_log(mpt_log_level_t level, const char *message, void *user)
{
    (void)user;
    size_t at = strlen(warnings);
    if (level == MPT_LOG_WARN && at + strlen(message) + 2 < sizeof warnings)
        snprintf(warnings + at, sizeof warnings - at, "%s\n", message);
}

static int count_lines(const char *path, const char *needle)
{
    char line[4096];
    int n = 0;
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

START_TEST(lost_device_is_dropped)
{
    char tmp[] = "/tmp/mpt-elastic-XXXXXX", metrics[128], cmd[160];
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", tmp);
    run s = {.env = "MPT_FAIL_DEVICE", .spec = "1:0:lost", .fail_at = FAIL_AT};
    ck_assert_mpt_ok(elastic_run(&s, 0, NULL, metrics, 0));
    ck_assert_int_eq(s.recoveries, 1);
    ck_assert_uint_eq(s.step[0], EVERY); /* the newest snapshot before the failure */
    ck_assert_uint_eq(s.replayed[0], FAIL_AT - EVERY);
    ck_assert_uint_le(s.replayed[0], EVERY); /* at most one interval lost */
    ck_assert_int_eq(s.device[0], 1);
    ck_assert_str_eq(s.reason[0], "lost");
    ck_assert_str_eq(devices_of(s.plan[0]), "0");
    ck_assert_msg(s.lost[0] > 0, "seconds lost %g", s.lost[0]);
    ck_assert_int_eq(count_lines(metrics, "\"recovered\": {\"device\": 1, \"reason\": \"lost\""),
                     1);
    double ref[TOTAL + 1];
    reference(0, EVERY, ref);
    assert_losses(&s, ref);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(error_twice_is_not_reused)
{
    run s = {.env = "MPT_FAIL_LAUNCH", .spec = "1:0", .fail_at = FAIL_AT};
    warnings[0] = '\0';
    mpt_set_log_callback(on_log, MPT_LOG_WARN, NULL);
    int status = elastic_run(&s, 0, NULL, NULL, 0);
    mpt_set_log_callback(NULL, MPT_LOG_WARN, NULL);
    ck_assert_mpt_ok(status);
    /* An OpenCL error keeps the device for one more try: the rebuild on
     * both devices, where it fails again (a second failure during the
     * recovery) and is dropped. */
    ck_assert_int_eq(s.recoveries, 1);
    ck_assert_str_eq(s.reason[0], "error");
    ck_assert_int_eq(s.device[0], 1);
    ck_assert_uint_eq(s.step[0], EVERY);
    ck_assert_str_eq(devices_of(s.plan[0]), "0");
    ck_assert_msg(strstr(warnings, "on devices 0,1: device 1 failed too") &&
                      strstr(warnings, "recovered: device 1 dropped (error)"),
                  "warnings:\n%s", warnings);
    double ref[TOTAL + 1];
    reference(0, EVERY, ref);
    assert_losses(&s, ref);
}
END_TEST

START_TEST(hang_is_given_up)
{
    const double deadline = 3.0; /* a step of this MLP takes milliseconds, even loaded */
    run s = {.env = "MPT_FAIL_DEVICE", .spec = "1:0:hang", .fail_at = FAIL_AT};
    ck_assert_mpt_ok(elastic_run(&s, deadline, NULL, NULL, 0));
    ck_assert_int_eq(s.recoveries, 1);
    ck_assert_str_eq(s.reason[0], "hang");
    ck_assert_int_eq(s.device[0], 1);
    ck_assert_msg(s.lost[0] >= deadline, "seconds lost %g, under the %g s deadline", s.lost[0],
                  deadline);
    double ref[TOTAL + 1];
    reference(0, EVERY, ref);
    assert_losses(&s, ref);
}
END_TEST

START_TEST(failure_while_checkpointing)
{
    char tmp[] = "/tmp/mpt-elastic-XXXXXX", ckpt[128], cmd[160], spec[32];
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    snprintf(ckpt, sizeof ckpt, "%s/c.safetensors", tmp);
    /* The checkpoint reads replica 0's stages: lose that device. */
    world w;
    open_world(&w);
    mpt_trainer_t *t = new_trainer(&w, 0);
    mpt_device_step_t first;
    ck_assert_mpt_ok(mpt_trainer_device_stats(t, 0, &first));
    ck_assert_int_eq(first.replica, 0);
    mpt_trainer_free(t);
    close_world(&w);
    snprintf(spec, sizeof spec, "%d:0:lost", first.device);
    run s = {.env = "MPT_FAIL_DEVICE", .spec = spec, .fail_at = FAIL_AT};
    ck_assert_mpt_ok(elastic_run(&s, 0, ckpt, NULL, FAIL_AT));
    ck_assert_int_eq(s.recoveries, 1);
    ck_assert_int_eq(s.device[0], first.device);
    ck_assert_uint_eq(s.step[0], EVERY);
    /* The final checkpoint is whole and at the last step. */
    open_world(&w);
    t = new_trainer(&w, 0);
    mpt_data_position_t pos;
    ck_assert_mpt_ok(mpt_trainer_load(t, ckpt, &pos));
    ck_assert_uint_eq(mpt_trainer_steps(t), TOTAL);
    mpt_trainer_free(t);
    close_world(&w);
    double ref[TOTAL + 1];
    reference(1 - first.device, EVERY, ref);
    assert_losses(&s, ref);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(no_survivor_ends_with_checkpoint)
{
    char tmp[] = "/tmp/mpt-elastic-XXXXXX", ckpt[128], cmd[160];
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    snprintf(ckpt, sizeof ckpt, "%s/c.safetensors", tmp);
    run s = {.env = "MPT_FAIL_DEVICE", .spec = "0:0:lost,1:0:lost", .fail_at = FAIL_AT};
    ck_assert_mpt_fails(elastic_run(&s, 0, ckpt, NULL, 0), MPT_ERR_NO_DEVICE);
    ck_assert_msg(strstr(mpt_last_error(), "no plan is left") &&
                      strstr(mpt_last_error(), "snapshot is written to the checkpoint"),
                  "%s", mpt_last_error());
    ck_assert_int_eq(s.recoveries, 0);
    /* The checkpoint holds the snapshot: step EVERY, and it trains on. */
    world w;
    open_world(&w);
    mpt_trainer_t *t = new_trainer(&w, 0);
    mpt_data_position_t pos;
    ck_assert_mpt_ok(mpt_trainer_load(t, ckpt, &pos));
    ck_assert_uint_eq(mpt_trainer_steps(t), EVERY);
    ck_assert_uint_eq(pos.epoch * (COUNT / BATCH) + pos.batch_index, EVERY);
    mpt_trainer_free(t);
    close_world(&w);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
    setenv("MPT_PROFILE_QUICK", "1", 0);
    Suite *s = suite_create("elastic");
    TCase *tc = tcase_create("elastic");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, lost_device_is_dropped);
    tcase_add_test(tc, error_twice_is_not_reused);
    tcase_add_test(tc, hang_is_given_up);
    tcase_add_test(tc, failure_while_checkpointing);
    tcase_add_test(tc, no_survivor_ends_with_checkpoint);
    suite_add_tcase(s, tc);
    return test_run(s, 0);
}
