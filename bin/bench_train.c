/*
 * mpt-bench train: training throughput on several devices against one,
 * and the measured step against the planner's prediction, all in one run.
 *
 * Runs the model (default: the Fashion-MNIST MLP) for twice --steps timed
 * steps after --warmup steps (one set calibrates the cost model, the other,
 * alternating with it pair by pair in a random order, tests the
 * calibration) under: one device (the first selected), data
 * parallelism over every selected device, a pipeline over every selected
 * device (the planner picks the micro-batches and schedule unless pinned),
 * and every layer split over every selected device (tensor parallelism),
 * each planned for this machine's profiled devices, the planner's own
 * choice, and its choice on the costs those rows calibrated.  Prints
 * samples/s, the scaling against one device, the predicted and measured
 * step and the prediction's error.  Data: Fashion-MNIST's training set
 * when installed, else random images (the speed does not depend on them).
 *
 * --rounds N repeats the whole table N times, each row scaled by that
 * round's own one-device row (so the rows alternate with it), and ends
 * with each row's median over the rounds: a shared machine's speed comes
 * in spells (docs/performance.md), and one round can land a row in a slow
 * one.
 */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: mpt-bench train [OPTION]...\n"
            "Training samples/s on the selected devices under data, pipeline and tensor\n"
            "parallelism against one device, and the planner's predicted step against the\n"
            "measured one.\n"
            "\n"
            "  -m, --model FILE     model description (models/mlp-fashion.json)\n"
            "      --data DIR       IDX dataset directory (Fashion-MNIST when installed,\n"
            "                       else random images)\n"
            "  -b, --batch N        samples per step (512)\n"
            "      --steps N        timed steps per configuration and set (20: 20 to\n"
            "                       calibrate on, 20 to test the calibration against)\n"
            "      --warmup N       untimed steps first (10: kernel builds are no steady\n"
            "                       state, and calibrating on them overstates the step)\n"
            "  -d, --devices SPEC   devices (MPT_DEVICES; default all); for two one-core\n"
            "                       devices on a CPU: POCL_DEVICES=\"pthread pthread\"\n"
            "                       POCL_MAX_PTHREAD_COUNT=1; one device: its row alone\n"
            "      --microbatches N pin the pipeline's micro-batches\n"
            "      --rounds N       repeat the table N times, then each row's median (1)\n"
            "  -h, --help           show this help and exit\n");
}

typedef struct {
    const float *x;
    const int32_t *y;
    size_t count, in;
} data_t;

/* Untimed steps: kernel builds are no steady state. */
static void warm_up(mpt_trainer_t *t, const data_t *d, size_t batch, size_t steps)
{
    size_t per_epoch = d->count / batch;
    for (size_t s = 0; s < steps; s++) {
        size_t b = s % per_epoch;
        mpt_step_stats_t st;
        tool_check(mpt_trainer_step(t, d->x + b * batch * d->in, d->y + b * batch, &st),
                   "training");
        if (tool_stderr_is_tty())
            fprintf(stderr, "\r  warm-up step %zu of %zu\033[K", s + 1, steps);
    }
    if (tool_stderr_is_tty())
        fprintf(stderr, "\r\033[K");
}

/* 2 x steps steps, alternately counted towards the next calibration
 * (mpt_trainer_set_calibrating) and kept apart: the median step of each
 * set into *counted and *apart.  Alternating, as every comparison of
 * speeds here does, so that a spell of the machine (slow memory-bound
 * work for seconds: docs/performance.md) falls on both sets alike; a
 * calibration tested on the steps after it once measured the spell
 * instead (a row calibrated at 7.14 ms measured 3.86 ms next).  Pair by
 * pair, not in blocks (with blocks of 5 a slow stretch of 15 steps put 10
 * in one set and 5 in the other: medians of 4.26 against 3.30 ms), and in
 * a random order within each pair: tensor parallelism on two one-core
 * devices once ran every other step at twice the time (3.5, 7, 3.5, 7 ms),
 * which strict alternation put all in one set. */
static void alternate_steps(mpt_trainer_t *t, const data_t *d, size_t batch, size_t steps,
                            uint32_t seed, double *counted, double *apart)
{
    double *dt[2] = {calloc(steps + 1, sizeof(double)), calloc(steps + 1, sizeof(double))};
    size_t k[2] = {0, 0}, per_epoch = d->count / batch;
    if (!dt[0] || !dt[1])
        tool_die("out of memory");
    uint32_t coin = seed ? seed : 2463534242u; /* xorshift32: fair coins, never 0 */
    for (size_t s = 0; s < 2 * steps; s++) {
        if (s % 2 == 0)
            coin ^= coin << 13, coin ^= coin >> 17, coin ^= coin << 5;
        int set = (int)((s + (coin >> 31)) % 2);
        size_t b = s % per_epoch;
        mpt_step_stats_t st;
        mpt_trainer_set_calibrating(t, set == 0);
        double t0 = tool_now();
        tool_check(mpt_trainer_step(t, d->x + b * batch * d->in, d->y + b * batch, &st),
                   "training");
        dt[set][k[set]++] = tool_now() - t0;
        if (tool_stderr_is_tty())
            fprintf(stderr, "\r  step %zu of %zu\033[K", s + 1, 2 * steps);
    }
    if (tool_stderr_is_tty())
        fprintf(stderr, "\r\033[K");
    mpt_trainer_set_calibrating(t, 1);
    *counted = steps ? bench_median(dt[0], steps) : 0;
    *apart = steps ? bench_median(dt[1], steps) : 0;
    free(dt[0]);
    free(dt[1]);
}

/* The machine's 1-minute load average ("?" where /proc has none): the
 * figures of a shared machine mean little without it. */
static const char *load_average(void)
{
    static char buf[32];
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f || !fgets(buf, sizeof buf, f))
        snprintf(buf, sizeof buf, "?");
    else
        buf[strcspn(buf, " ")] = '\0';
    if (f)
        fclose(f);
    return buf;
}

/* Back to the profiles as measured: each row starts uncalibrated. */
static void clear_calibration(mpt_cluster_t *c)
{
    const mpt_calibration_t none = {0};
    for (size_t i = 0; i < mpt_cluster_device_count(c); i++)
        tool_check(mpt_cluster_set_calibration(c, i, &none), "clearing the calibration");
}

/* "dp=2 pp=1 tp=1 m=1 gpipe" from the plan's JSON. */
static const char *plan_summary(const char *json)
{
    static char buf[64];
    const char *keys[] = {"\"dp\": ", "\"pp\": ", "\"tp\": ", "\"microbatches\": "};
    const char *names[] = {"dp", "pp", "tp", "m"};
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < 4; i++) {
        const char *k = strstr(json, keys[i]);
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%s=%d", i ? " " : "", names[i],
                               k ? atoi(k + strlen(keys[i])) : 0);
    }
    const char *sc = strstr(json, "\"schedule\": \"");
    snprintf(buf + at, sizeof buf - at, " %s", sc && !strncmp(sc + 13, "1f1b", 4) ? "1f1b" : "gpipe");
    return buf;
}

/* Folds a row's calibration of a device into what the rows so far carry
 * for the re-plan: each kind of work from the latest row that measured it
 * (compute alone, compute in company, transfers under a pipeline, the
 * all-reduce under data parallelism), as a device calibrated once per
 * kind of plan would carry them.  Before, the last row's replaced them
 * all: on "pthread basic" the one-device rows' overwrote the DP row's
 * company, and the re-plan never saw what DP measured. */
static void carry(mpt_calibration_t *carried, const mpt_calibration_t *row, const char *summary)
{
    mpt_calibration_t c = *carried;
    /* mpt_cluster_set_calibration keeps company_steps <= steps */
    uint64_t alone = c.steps - c.company_steps, row_alone = row->steps - row->company_steps;
    int dp = 1, pp = 1;
    if (row->steps == 0)
        return;
    sscanf(summary, "dp=%d pp=%d", &dp, &pp);
    c.transfer = c.transfer > 0 ? c.transfer : 1, c.allreduce = c.allreduce > 0 ? c.allreduce : 1;
    if (pp > 1)
        c.transfer = row->transfer;
    if (dp > 1)
        c.allreduce = row->allreduce;
    if (row_alone)
        c.forward = row->forward, c.backward = row->backward, alone = row_alone;
    else if (!alone)
        c.forward = row->forward, c.backward = row->backward; /* valid numbers, not used */
    if (row->company_steps)
        c.company_forward = row->company_forward, c.company_backward = row->company_backward,
        c.company_steps = row->company_steps;
    c.steps = alone + c.company_steps;
    *carried = c;
}

/* One row's figures in one round: samples/s (0: the row was not
 * runnable), the scaling against that round's one device, and predicted
 * / measured before and after calibration. */
typedef struct {
    double sps, scaling, before, after;
} figures_t;

/* The median, min and max (out[0..2]) of the figure at byte offset `at`
 * of a row's rounds that ran; how many ran (0: out untouched). */
static size_t median_of(const figures_t *f, size_t rounds, size_t at, double out[3])
{
    double *v = malloc((rounds ? rounds : 1) * sizeof *v);
    size_t ran = 0;
    if (!v)
        tool_die("out of memory");
    for (size_t r = 0; r < rounds; r++)
        if (f[r].sps > 0)
            memcpy(&v[ran++], (const char *)&f[r] + at, sizeof *v);
    if (ran) {
        out[0] = bench_median(v, ran); /* sorts v: min and max at the ends */
        out[1] = v[0], out[2] = v[ran - 1];
    }
    free(v);
    return ran;
}

int bench_train_main(int argc, char **argv)
{
    enum { O_DATA = 256, O_STEPS, O_WARMUP, O_MB, O_ROUNDS };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'}, {"data", required_argument, NULL, O_DATA},
        {"batch", required_argument, NULL, 'b'}, {"steps", required_argument, NULL, O_STEPS},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"devices", required_argument, NULL, 'd'},
        {"microbatches", required_argument, NULL, O_MB},
        {"rounds", required_argument, NULL, O_ROUNDS},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *model_path = NULL, *data_dir = "/usr/share/datasets/fashion-mnist",
               *spec = NULL;
    size_t batch = 512, steps = 20, warmup = 10, mb = 0, rounds = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "m:b:d:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'm': model_path = optarg; break;
        case O_DATA: data_dir = optarg; break;
        case 'b': batch = (size_t)tool_parse_count("--batch", optarg, 1); break;
        case O_STEPS: steps = (size_t)tool_parse_count("--steps", optarg, 1); break;
        case O_WARMUP: warmup = (size_t)tool_parse_count("--warmup", optarg, 0); break;
        case 'd': spec = optarg; break;
        case O_MB: mb = (size_t)tool_parse_count("--microbatches", optarg, 1); break;
        case O_ROUNDS:
            rounds = (size_t)tool_parse_count("--rounds", optarg, 1);
            if (rounds > 1000)
                tool_usage_error("--rounds %zu: at most 1000", rounds);
            break;
        case 'h': usage(stdout); return TOOL_EXIT_OK;
        default: tool_usage_error("see --help");
        }
    }
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    char model_buf[4096];
    if (!model_path) {
        snprintf(model_buf, sizeof model_buf, "%s", tool_data_path("models/mlp-fashion.json"));
        model_path = model_buf;
    }

    mpt_model_t *model = NULL;
    mpt_devices_t *devs = NULL;
    mpt_topology_t *topo = NULL;
    mpt_dataset_t *train = NULL;
    data_t d = {0};
    float *random_x = NULL;
    int32_t *random_y = NULL;
    tool_check(mpt_model_load(model_path, &model), model_path);
    d.in = mpt_model_input_floats(model);
    struct stat st;
    if (stat(data_dir, &st) == 0 && mpt_dataset_load_idx(data_dir, "train", &train) == MPT_OK &&
        mpt_dataset_sample_floats(train) == d.in &&
        mpt_dataset_classes(train) <= mpt_model_classes(model)) {
        d.x = mpt_dataset_images(train), d.y = mpt_dataset_labels(train);
        d.count = mpt_dataset_count(train);
    } else {
        d.count = 4 * batch;
        random_x = malloc(d.count * d.in * sizeof *random_x);
        random_y = malloc(d.count * sizeof *random_y);
        if (!random_x || !random_y)
            tool_die("out of memory");
        srand(1);
        for (size_t i = 0; i < d.count * d.in; i++)
            random_x[i] = (float)rand() / (float)RAND_MAX;
        for (size_t i = 0; i < d.count; i++)
            random_y[i] = rand() % mpt_model_classes(model);
        d.x = random_x, d.y = random_y;
    }
    if (d.count < batch)
        tool_die("the data have %zu samples, fewer than a batch of %zu", d.count, batch);
    tool_check(mpt_devices_open(spec, &devs), "opening devices");
    size_t n = mpt_devices_count(devs);
    mpt_cluster_t *cluster = tool_local_cluster(devs, &topo);
    mpt_train_config_t cfg;
    mpt_train_config_default(&cfg);
    cfg.batch = batch;

    printf("mpt-bench train: %s, batch %zu, %zu devices (%s), medians of 2 x %zu steps after "
           "%zu\n", mpt_model_name(model), batch, n,
           mpt_device_info(mpt_devices_get(devs, 0))->name, steps, warmup);
    printf("predicted: the cost model before calibration (for \"auto, calibrated\": with the\n"
           "calibration of the rows above); the timed steps alternate between a calibrating\n"
           "set and a test set: measured, the calibrating set's median step; calib., the\n"
           "prediction calibrated on it (mpt_trainer_calibrate), against the test set's\n"
           "median; ratio: predicted / measured; load average %s at the start\n",
           load_average());
    printf("%-44s %10s %8s %9s %9s %7s %9s %9s %7s\n", "configuration", "samples/s", "scaling",
           "predicted", "measured", "ratio", "calib.", "measured", "ratio");

    /* 1. The fastest single device, 2. data parallel, 3. pipeline and
     * 4. tensor parallel over every device, 5. the planner's own choice,
     * 6. its choice on the costs the rows above calibrated (what
     * rebalancing does), predicted with them: how far a calibration
     * carries to another plan.  One device selected: its row alone (the
     * others would repeat it), so that each device can be timed alone
     * against a pair (docs/vendors.md). */
    enum { KINDS = 6 };
    static const char *kinds[KINDS] = {"1 device", "DP", "PP", "TP", "auto", "auto, calibrated"};
    int nkinds = n > 1 ? KINDS : 1, rows = 0, within = 0;
    double worst = 1;
    /* Per row and round, at kind * rounds + round (sps 0: not runnable). */
    figures_t *fig = calloc(KINDS * rounds, sizeof *fig);
    char names[KINDS][96] = {{0}};
    mpt_calibration_t *carried = calloc(n, sizeof *carried);
    if (!fig || !carried)
        tool_die("out of memory");
    for (size_t round = 0; round < rounds; round++) {
        double one = 0;
        if (rounds > 1)
            printf("round %zu of %zu\n", round + 1, rounds);
        memset(carried, 0, n * sizeof *carried); /* each round calibrates afresh */
        for (int kind = 0; kind < nkinds; kind++) {
            mpt_plan_request_t req;
            mpt_plan_t *plan = NULL;
            mpt_trainer_t *t = NULL;
            mpt_plan_request_default(&req);
            req.batch = batch;
            if (kind < 4) {
                req.dp = kind == 1 ? n : 1;
                req.pp = kind == 2 ? n : 1;
                req.tp = kind == 3 ? n : 1;
                req.all_devices = kind != 0;
            }
            if (kind == 2 && mb)
                req.microbatches = mb;
            clear_calibration(cluster);
            for (size_t i = 0; kind == 5 && i < n; i++)
                tool_check(mpt_cluster_set_calibration(cluster, i, &carried[i]), "calibrating");
            if (mpt_plan_create(model, cluster, &req, &plan) < 0) {
                /* Not every model splits (layer norm, dropout on a slice): say
                 * why and keep the rows measured so far. */
                printf("%s: not runnable: %s\n", kinds[kind], mpt_last_error());
                continue;
            }
            double predicted = 0, calibrated = 0;
            tool_check(mpt_plan_simulate(plan, model, cluster, &predicted, NULL, NULL),
                       "simulating the plan");
            tool_check(mpt_trainer_create_planned(model, devs, plan, &cfg, topo, cluster, &t),
                       "creating the trainer");
            warm_up(t, &d, batch, warmup);
            /* Forget the warm-up's steps (kernel builds): calibrate on the timed ones. */
            tool_check(mpt_trainer_calibrate(t, cluster), "calibrating");
            clear_calibration(cluster);
            double step = 0, again = 0;
            /* Coins of their own per row and round: the first pair's first
             * step (the one nearest the warm-up) lands in either set. */
            alternate_steps(t, &d, batch, steps, 2654435761u * (uint32_t)(round * KINDS + kind + 1),
                            &step, &again);
            tool_check(mpt_trainer_calibrate(t, cluster), "calibrating");
            calibrated = mpt_trainer_predicted_step(t);
            char *json = NULL;
            tool_check(mpt_plan_to_json(plan, &json), "plan JSON");
            snprintf(names[kind], sizeof names[kind], "%s (%s)", kinds[kind], plan_summary(json));
            for (size_t i = 0; kind < 5 && i < n; i++)
                carry(&carried[i], &mpt_cluster_device(cluster, i)->profile.calibration,
                      plan_summary(json));
            mpt_trainer_free(t);
            if (kind == 0)
                one = step;
            printf("%-44s %10.0f %7.2fx %8.2fms %8.2fms %7.2f %8.2fms %8.2fms %7.2f\n", names[kind],
                   (double)batch / step, one / step, predicted * 1e3, step * 1e3, predicted / step,
                   calibrated * 1e3, again * 1e3, calibrated / again);
            fflush(stdout);
            figures_t *f = &fig[(size_t)kind * rounds + round];
            *f = (figures_t){(double)batch / step, one / step, predicted / step,
                             calibrated / again};
            rows++, within += fabs(f->after - 1) <= 0.15;
            worst = fabs(f->after - 1) > fabs(worst - 1) ? f->after : worst;
            free(json);
            mpt_plan_free(plan);
        }
    }
    if (rounds > 1) {
        printf("median over %zu rounds (min-max), each row's plan as it last ran:\n", rounds);
        printf("%-44s %10s %17s %17s %17s\n", "configuration", "samples/s", "scaling",
               "predicted/meas.", "after calib.");
    }
    for (int kind = 0; rounds > 1 && kind < nkinds; kind++) {
        const figures_t *f = fig + (size_t)kind * rounds;
        double m[4][3];
        if (!median_of(f, rounds, offsetof(figures_t, sps), m[0]))
            continue; /* not runnable in any round */
        median_of(f, rounds, offsetof(figures_t, scaling), m[1]);
        median_of(f, rounds, offsetof(figures_t, before), m[2]);
        median_of(f, rounds, offsetof(figures_t, after), m[3]);
        printf("%-44s %10.0f %5.2fx (%.2f-%.2f) %5.2f (%.2f-%.2f) %5.2f (%.2f-%.2f)\n", names[kind],
               m[0][0], m[1][0], m[1][1], m[1][2], m[2][0], m[2][1], m[2][2], m[3][0], m[3][1],
               m[3][2]);
    }
    printf("after calibration: %d of %d rows within 15%% of the measured step (worst ratio "
           "%.2f); load average %s at the end\n", within, rows, worst, load_average());
    /* Row 5's ratio before calibration: how far a calibration carries. */
    double carried_ratio[3];
    size_t carried_n = nkinds == KINDS ? median_of(fig + 5 * rounds, rounds,
                                                   offsetof(figures_t, before), carried_ratio)
                                       : 0;
    if (carried_n)
        printf("auto, calibrated: planned and predicted with the rows' calibration, "
               "predicted / measured %.2f%s\n", carried_ratio[0],
               carried_n > 1 ? " (median over the rounds)" : "");
    free(fig);
    free(carried);
    mpt_cluster_free(cluster);
    mpt_topology_free(topo);
    mpt_devices_free(devs);
    mpt_dataset_free(train);
    free(random_x);
    free(random_y);
    mpt_model_free(model);
    return TOOL_EXIT_OK;
}
