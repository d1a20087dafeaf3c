/*
 * mpt-bench train: training throughput on several devices against one,
 * and the measured step against the planner's prediction, all in one run.
 *
 * Runs the model (default: the Fashion-MNIST MLP) for --steps timed steps
 * after --warmup steps under: one device (the first selected), data
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
            "      --steps N        timed steps per configuration (20)\n"
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

/* Seconds per step, median over `steps` after `warmup`. */
static double time_steps(mpt_trainer_t *t, const data_t *d, size_t batch, size_t warmup,
                         size_t steps)
{
    double *dt = calloc(steps + 1, sizeof *dt);
    if (!dt)
        tool_die("out of memory");
    size_t per_epoch = d->count / batch;
    for (size_t s = 0; s < warmup + steps; s++) {
        size_t b = s % per_epoch;
        mpt_step_stats_t st;
        double t0 = tool_now();
        tool_check(mpt_trainer_step(t, d->x + b * batch * d->in, d->y + b * batch, &st),
                   "training");
        if (s >= warmup)
            dt[s - warmup] = tool_now() - t0;
        if (tool_stderr_is_tty())
            fprintf(stderr, "\r  step %zu of %zu\033[K", s + 1, warmup + steps);
    }
    if (tool_stderr_is_tty())
        fprintf(stderr, "\r\033[K");
    double m = steps ? bench_median(dt, steps) : 0;
    free(dt);
    return m;
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
    const mpt_calibration_t none = {0, 0, 0, 0, 0};
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

    printf("mpt-bench train: %s, batch %zu, %zu devices (%s), median of %zu steps after %zu\n",
           mpt_model_name(model), batch, n, mpt_device_info(mpt_devices_get(devs, 0))->name,
           steps, warmup);
    printf("predicted: the cost model before calibration (for \"auto, calibrated\": with the\n"
           "calibration of the rows above), measured: the median step, then calibrated on\n"
           "those steps (mpt_trainer_calibrate) and measured again; ratio: predicted /\n"
           "measured; load average %s at the start\n", load_average());
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
            time_steps(t, &d, batch, warmup, 0);
            /* Forget the warm-up's steps (kernel builds): calibrate on the timed ones. */
            tool_check(mpt_trainer_calibrate(t, cluster), "calibrating");
            clear_calibration(cluster);
            double step = time_steps(t, &d, batch, 0, steps);
            tool_check(mpt_trainer_calibrate(t, cluster), "calibrating");
            calibrated = mpt_trainer_predicted_step(t);
            for (size_t i = 0; kind < 5 && i < n; i++) { /* each device's latest */
                const mpt_calibration_t *cal = &mpt_cluster_device(cluster, i)->profile.calibration;
                if (cal->steps > 0)
                    carried[i] = *cal;
            }
            double again = time_steps(t, &d, batch, 0, steps);
            mpt_trainer_free(t);
            if (kind == 0)
                one = step;
            char *json = NULL;
            tool_check(mpt_plan_to_json(plan, &json), "plan JSON");
            snprintf(names[kind], sizeof names[kind], "%s (%s)", kinds[kind], plan_summary(json));
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
