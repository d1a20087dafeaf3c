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
 *     and an error that says so;
 *   - a model that fits two devices only (tensor-parallel under a 12 MiB
 *     cap of each in the cluster the planner reads) loses one: no plan
 *     fits the survivor, and the run ends with the snapshot written to
 *     the checkpoint and an error naming the shortfall;
 *   - the device holding replica 0 (evaluations run there) lost in the
 *     evaluation after step FAIL_AT (eval_every 3) or at the first epoch's
 *     end, or hung in the final evaluation: the run goes back to the
 *     snapshot, trains again and evaluates again, and each epoch summary
 *     counts its steps once; the hang is given up past the evaluation's
 *     deadline (at least the step's: engine/workers.c).
 *
 * The metrics file of a recovered run holds every step once, in order, and
 * one recovered line right after the line of the step the run went back
 * to (the replay's lines replace those written before the failure); each
 * evaluation once too, and the evaluations redone on the survivor equal
 * the reference's within the same tolerance as the losses.
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

#include <jansson.h>

#include "core/rng.h"
#include "plan/plan.h"
#include "testutil.h"

/* Epochs of PER_EPOCH = 12 batches: the runs cross an epoch's end.
 * EVAL_COUNT: a small evaluation set (two batches): evaluations are quick. */
enum { COUNT = 192, EVAL_COUNT = 32, IN = 6, CLASSES = 3, BATCH = 16, SEED = 5, TOTAL = 14,
       EVERY = 4, FAIL_AT = 6, EVAL_EVERY = 3, PER_EPOCH = COUNT / BATCH };

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
    ck_assert_mpt_ok(mpt_dataset_from_memory(EVAL_COUNT, IN, CLASSES, xs, ys, &eval));
    ck_assert_mpt_ok(mpt_data_from_datasets(train, eval, w->m, BATCH, SEED, &d));
    return d;
}

/* What a run saw through its callbacks. */
typedef struct {
    double loss[TOTAL + 1]; /* per step, the last time it was trained */
    const char *env, *spec; /* the injection, set after step fail_at */
    uint64_t fail_at;
    uint64_t eval_every;    /* mpt_fit_options_t.eval_every */
    int armed, recoveries;
    uint64_t step[4], replayed[4];
    int device[4];
    char reason[4][16], plan[4][256];
    double lost[4];
    int summaries; /* on_epoch calls, and their figures */
    uint64_t summary_step[4], summary_steps[4];
    double summary_loss[4];
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

static void on_epoch(void *ctx, const mpt_epoch_summary_t *e)
{
    run *s = ctx;
    ck_assert_int_lt(s->summaries, 4);
    int k = s->summaries++;
    s->summary_step[k] = e->step, s->summary_steps[k] = e->steps;
    s->summary_loss[k] = e->train_loss;
}

static void options(mpt_fit_options_t *o, run *s)
{
    mpt_fit_options_default(o);
    o->steps = TOTAL;
    o->rebalance_after = 0; /* only the failure moves the plan */
    o->snapshot_every = EVERY;
    o->eval_every = s->eval_every;
    o->on_step = on_step, o->on_recover = on_recover, o->on_epoch = on_epoch, o->ctx = s;
}

/* The uninterrupted reference: the two-device plan to step switch_at, then
 * the one-device plan of `survivor`, evaluating every eval_every steps;
 * the second part's metrics go to `metrics` (NULL: none). */
static void reference(int survivor, uint64_t switch_at, uint64_t eval_every,
                      const char *metrics, double *loss)
{
    world w;
    run s = {.eval_every = eval_every};
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
    o.metrics = metrics;
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

/* A metrics file, line by line: the steps of the step lines and the
 * evaluations in their order, and where the recovered lines stand. */
typedef struct {
    int nsteps, nevals, nrecovered;
    uint64_t steps[2 * TOTAL], evals[2 * TOTAL], recovered[4];
    double eval_loss[2 * TOTAL];
    int recovered_after[4]; /* the number of step lines before it */
} metrics_log;

static void read_metrics(const char *path, metrics_log *log)
{
    char line[8192];
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    memset(log, 0, sizeof *log);
    while (fgets(line, sizeof line, f)) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        ck_assert_msg(j != NULL, "%s: not JSON (%s): %s", path, err.text, line);
        uint64_t step = (uint64_t)json_integer_value(json_object_get(j, "step"));
        json_t *eval = json_object_get(j, "test_loss");
        if (json_object_get(j, "recovered")) {
            ck_assert_int_lt(log->nrecovered, 4);
            log->recovered_after[log->nrecovered] = log->nsteps;
            log->recovered[log->nrecovered++] = step;
        } else if (json_object_get(j, "lr")) {
            ck_assert_int_lt(log->nsteps, 2 * TOTAL);
            log->steps[log->nsteps++] = step;
        } else if (eval) {
            ck_assert_int_lt(log->nevals, 2 * TOTAL);
            log->eval_loss[log->nevals] = json_real_value(eval);
            log->evals[log->nevals++] = step;
        }
        json_decref(j);
    }
    fclose(f);
}

/* Every step once, in order, and one recovered line, right after the
 * line of the step `back` the run went back to. */
static void assert_steps_once(const metrics_log *log, uint64_t back)
{
    ck_assert_int_eq(log->nsteps, TOTAL);
    for (int i = 0; i < TOTAL; i++)
        ck_assert_msg(log->steps[i] == (uint64_t)i + 1, "line %d of the steps is step %llu", i,
                      (unsigned long long)log->steps[i]);
    ck_assert_int_eq(log->nrecovered, 1);
    ck_assert_uint_eq(log->recovered[0], back);
    ck_assert_int_eq(log->recovered_after[0], (int)back);
}

/* The device that holds replica 0 of the two-device plan (checkpoints
 * read it, evaluations run on it). */
static int replica0_device(void)
{
    world w;
    mpt_device_step_t first;
    open_world(&w);
    mpt_trainer_t *t = new_trainer(&w, 0);
    ck_assert_mpt_ok(mpt_trainer_device_stats(t, 0, &first));
    ck_assert_int_eq(first.replica, 0);
    mpt_trainer_free(t);
    close_world(&w);
    return first.device;
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
    metrics_log log;
    read_metrics(metrics, &log);
    assert_steps_once(&log, EVERY); /* the replayed steps' first lines are gone */
    ck_assert_int_eq(log.nevals, 2); /* the first epoch's end and the final one */
    ck_assert_uint_eq(log.evals[0], PER_EPOCH);
    ck_assert_uint_eq(log.evals[1], TOTAL);
    double ref[TOTAL + 1];
    reference(0, EVERY, 0, NULL, ref);
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
    reference(0, EVERY, 0, NULL, ref);
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
    reference(0, EVERY, 0, NULL, ref);
    assert_losses(&s, ref);
}
END_TEST

START_TEST(failure_while_checkpointing)
{
    char tmp[] = "/tmp/mpt-elastic-XXXXXX", ckpt[128], cmd[160], spec[32];
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    snprintf(ckpt, sizeof ckpt, "%s/c.safetensors", tmp);
    /* The checkpoint reads replica 0's stages: lose that device. */
    int first = replica0_device();
    snprintf(spec, sizeof spec, "%d:0:lost", first);
    run s = {.env = "MPT_FAIL_DEVICE", .spec = spec, .fail_at = FAIL_AT};
    warnings[0] = '\0';
    mpt_set_log_callback(on_log, MPT_LOG_WARN, NULL);
    int status = elastic_run(&s, 0, ckpt, NULL, FAIL_AT);
    mpt_set_log_callback(NULL, MPT_LOG_WARN, NULL);
    ck_assert_mpt_ok(status);
    char failed[64];
    snprintf(failed, sizeof failed, "the checkpoint after step %d failed", FAIL_AT);
    ck_assert_msg(strstr(warnings, failed), "warnings:\n%s", warnings);
    ck_assert_int_eq(s.recoveries, 1);
    ck_assert_int_eq(s.device[0], first);
    ck_assert_uint_eq(s.step[0], EVERY);
    /* The final checkpoint is whole and at the last step. */
    world w;
    open_world(&w);
    mpt_trainer_t *t = new_trainer(&w, 0);
    mpt_data_position_t pos;
    ck_assert_mpt_ok(mpt_trainer_load(t, ckpt, &pos));
    ck_assert_uint_eq(mpt_trainer_steps(t), TOTAL);
    mpt_trainer_free(t);
    close_world(&w);
    double ref[TOTAL + 1];
    reference(1 - first, EVERY, 0, NULL, ref);
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
    ck_assert_uint_eq(pos.epoch * PER_EPOCH + pos.batch_index, EVERY);
    mpt_trainer_free(t);
    close_world(&w);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(model_no_longer_fits)
{
    /* About 1.06M parameters: with AdamW 17 MB on one device, 8.4 MB on
     * each of a tensor-parallel pair (mpt-plan --device-memory 12M). */
    static const char *wide =
        "{\"name\": \"wide\", \"input\": [6], \"layers\": [{\"kind\": \"linear\", \"units\": "
        "1024}, {\"kind\": \"relu\"}, {\"kind\": \"linear\", \"units\": 1024}, {\"kind\": "
        "\"relu\"}, {\"kind\": \"linear\", \"units\": 3}, {\"kind\": \"softmax_cross_entropy\"}]}";
    const uint64_t cap = 12u << 20;
    char tmp[] = "/tmp/mpt-elastic-XXXXXX", ckpt[128], cmd[160];
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    snprintf(ckpt, sizeof ckpt, "%s/c.safetensors", tmp);
    world w;
    memset(&w, 0, sizeof w);
    ck_assert_mpt_ok(mpt_model_from_json(wide, &w.m));
    ck_assert_mpt_ok(mpt_devices_open("0,1", &w.set));
    ck_assert_mpt_ok(mpt_cluster_local(w.set, NULL, &w.cluster));
    for (size_t i = 0; i < 2; i++)
        ck_assert_mpt_ok(mpt_cluster_set_memory_limit(w.cluster, i, cap));
    mpt_plan_request_default(&w.req);
    w.req.batch = BATCH, w.req.optimizer = MPT_OPTIM_ADAMW, w.req.all_devices = 1;
    ck_assert_mpt_ok(mpt_plan_create(w.m, w.cluster, &w.req, &w.plan));
    mpt_trainer_t *t = new_trainer(&w, 0);
    mpt_data_t *d = new_data(&w);
    ck_assert_uint_eq(mpt_trainer_device_count(t), 2); /* both devices hold the model */
    run s = {.env = "MPT_FAIL_DEVICE", .spec = "1:0:lost", .fail_at = FAIL_AT};
    mpt_fit_options_t o;
    options(&o, &s);
    o.cluster = w.cluster, o.replan = &w.req, o.checkpoint = ckpt, o.overwrite = 1;
    ck_assert_mpt_fails(mpt_trainer_fit(t, d, &o), MPT_ERR_DEVICE_MEMORY);
    unsetenv(s.env);
    ck_assert_msg(strstr(mpt_last_error(), "no plan is left") &&
                      strstr(mpt_last_error(), "bytes short") &&
                      strstr(mpt_last_error(), "snapshot is written to the checkpoint"),
                  "%s", mpt_last_error());
    ck_assert_int_eq(s.recoveries, 0);
    mpt_trainer_free(t);
    mpt_data_free(d);
    close_world(&w);
    /* The checkpoint holds the snapshot: it loads on device 0 alone,
     * without the cap. */
    mpt_model_t *m;
    mpt_devices_t *one;
    mpt_train_config_t cfg;
    mpt_data_position_t pos;
    ck_assert_mpt_ok(mpt_model_from_json(wide, &m));
    ck_assert_mpt_ok(mpt_devices_open("0", &one));
    mpt_train_config_default(&cfg);
    mpt_train_config_use_optimizer(&cfg, MPT_OPTIM_ADAMW);
    cfg.batch = BATCH, cfg.seed = SEED, cfg.lr = 3e-3, cfg.total_steps = TOTAL;
    ck_assert_mpt_ok(mpt_trainer_create(m, mpt_devices_get(one, 0), &cfg, &t));
    ck_assert_mpt_ok(mpt_trainer_load(t, ckpt, &pos));
    ck_assert_uint_eq(mpt_trainer_steps(t), EVERY);
    mpt_trainer_free(t);
    mpt_devices_free(one);
    mpt_model_free(m);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* A run whose evaluation after step fail_at finds the device of replica 0
 * failing (kind "lost" or "hang", deadline_s for the steps): it recovers
 * from the newest snapshot before that step, evaluates again on the
 * survivor, and its losses, metrics, evaluations and epoch summaries are
 * the reference's. */
static void evaluation_failure(const char *kind, uint64_t fail_at, double deadline_s)
{
    const uint64_t back = (fail_at - 1) / EVERY * EVERY;
    char tmp[] = "/tmp/mpt-elastic-XXXXXX", metrics[128], refm[128], cmd[160], spec[32],
         failed[80];
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", tmp);
    snprintf(refm, sizeof refm, "%s/ref.jsonl", tmp);
    int first = replica0_device();
    snprintf(spec, sizeof spec, "%d:0:%s", first, kind);
    run s = {.env = "MPT_FAIL_DEVICE", .spec = spec, .fail_at = fail_at,
             .eval_every = EVAL_EVERY};
    warnings[0] = '\0';
    mpt_set_log_callback(on_log, MPT_LOG_WARN, NULL);
    int status = elastic_run(&s, deadline_s, NULL, metrics, 0);
    mpt_set_log_callback(NULL, MPT_LOG_WARN, NULL);
    ck_assert_mpt_ok(status);
    ck_assert_int_eq(s.recoveries, 1);
    ck_assert_int_eq(s.device[0], first);
    ck_assert_str_eq(s.reason[0], kind);
    ck_assert_uint_eq(s.step[0], back);
    ck_assert_uint_eq(s.replayed[0], fail_at - back);
    snprintf(failed, sizeof failed, "the evaluation after step %llu failed",
             (unsigned long long)fail_at);
    ck_assert_msg(strstr(warnings, failed), "warnings:\n%s", warnings);
    if (deadline_s > 0) /* the evaluation's deadline is at least the step's */
        ck_assert_msg(s.lost[0] >= deadline_s, "seconds lost %g, under the %g s deadline",
                      s.lost[0], deadline_s);
    /* Two summaries, the first epoch's and the last steps', each of its
     * steps once: the epoch's sums went back to the snapshot's with the
     * model. */
    ck_assert_int_eq(s.summaries, 2);
    for (int k = 0; k < 2; k++) {
        uint64_t from = k ? PER_EPOCH : 0, to = k ? TOTAL : PER_EPOCH;
        double sum = 0;
        for (uint64_t i = from + 1; i <= to; i++)
            sum += s.loss[i];
        ck_assert_uint_eq(s.summary_step[k], to);
        ck_assert_uint_eq(s.summary_steps[k], to - from);
        ck_assert_msg(fabs(s.summary_loss[k] - sum / (double)(to - from)) <=
                          1e-12 * fabs(sum), /* the same sums, in the same order */
                      "summary %d: train loss %.12g, the steps' mean %.12g", k,
                      s.summary_loss[k], sum / (double)(to - from));
    }
    double ref[TOTAL + 1];
    reference(1 - first, back, EVAL_EVERY, refm, ref);
    assert_losses(&s, ref);
    metrics_log log, rlog;
    read_metrics(metrics, &log);
    read_metrics(refm, &rlog); /* the reference's steps after `back` */
    assert_steps_once(&log, back);
    /* Every evaluation once (3, 6, 9, 12 and the final one), the failed
     * one included; those on the survivor equal the reference's. */
    ck_assert_int_eq(log.nevals, TOTAL / EVAL_EVERY + 1);
    int matched = 0;
    for (int i = 0; i < log.nevals; i++) {
        ck_assert_uint_eq(log.evals[i], i + 1 < log.nevals ? (uint64_t)(i + 1) * EVAL_EVERY
                                                           : (uint64_t)TOTAL);
        for (int k = 0; k < rlog.nevals; k++)
            if (rlog.evals[k] == log.evals[i] && log.evals[i] > back) {
                double a = log.eval_loss[i], b = rlog.eval_loss[k];
                ck_assert_msg(fabs(a - b) <= 1e-5 * fmax(1.0, fabs(b)),
                              "evaluation at step %llu: %.9g, the reference's %.9g",
                              (unsigned long long)log.evals[i], a, b);
                matched++;
            }
    }
    ck_assert_int_ge(matched, 1); /* the redone one at least */
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(lost_in_evaluation)
{
    evaluation_failure("lost", FAIL_AT, 0); /* an eval_every one */
}
END_TEST

START_TEST(lost_in_epoch_end_evaluation)
{
    evaluation_failure("lost", PER_EPOCH, 0);
}
END_TEST

START_TEST(hang_in_final_evaluation)
{
    /* The evaluations at steps 3 to 12 ran: the final one is timed. */
    evaluation_failure("hang", TOTAL, 3.0);
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
    tcase_add_test(tc, model_no_longer_fits);
    tcase_add_test(tc, lost_in_evaluation);
    tcase_add_test(tc, lost_in_epoch_end_evaluation);
    tcase_add_test(tc, hang_in_final_evaluation);
    suite_add_tcase(s, tc);
    return test_run(s, 0);
}
