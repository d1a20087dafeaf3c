/*
 * mpt-train: trains a model description on an IDX dataset on one OpenCL
 * device or, with a plan, on several at once (pipeline stages and
 * data-parallel replicas), with a live progress line on a terminal, per-epoch summaries,
 * JSON Lines metrics and atomic checkpoints that resume bit for bit.
 * Thin: parses arguments and drives the public training API.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <math.h>
#include <signal.h>

#include "sample.h"
#include "tool.h"

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define DEFAULT_MODEL "mlp-fashion.json"

typedef struct {
    const char *model, *data, *devices, *checkpoint_dir, *plan, *trace, *trace_predicted;
    int timing, data_given;
    uint64_t sample, top_k; /* --sample N tokens after training, from the top k (0: all) */
    const char *prompt;
    double temperature;
    uint64_t device_memory; /* --device-memory: cap per device, 0: none */
    mpt_plan_request_t pins; /* --dp, --pp, --tp, --microbatches, pipeline --schedule */
    mpt_train_config_t cfg;
    mpt_fit_options_t fit; /* epochs, steps, cadences, metrics, resume */
    int metrics_port;      /* --metrics-port, -1: no Prometheus endpoint */
    const char *metrics_address;
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: mpt-train [OPTION]...\n"
            "Train a model on an IDX (Fashion-)MNIST dataset, or a language model on a\n"
            "text or token file, on one OpenCL device, or on several at once following\n"
            "a plan (pipeline stages, data-parallel replicas).\n"
            "Without --model and --data: models/mlp-fashion.json on " DEFAULT_DATA ".\n"
            "\n"
            "  -m, --model FILE          model description (docs/model.md)\n"
            "      --data DIR|FILE       a classifier: directory of {train,t10k}-*-ubyte[.gz];\n"
            "                            a language model (models/gpt-mini.json): a text\n"
            "                            file (bytes are tokens), an llm.c token shard or a\n"
            "                            uint16 .bin file; the last 10%% of its tokens are\n"
            "                            the validation set (docs/data.md)\n"
            "      --sample N            after training, write N tokens of text sampled from\n"
            "                            the language model (one device); with --resume and\n"
            "                            --steps at the checkpoint's step: from it alone\n"
            "      --prompt TEXT         the text the sample continues (a newline)\n"
            "      --temperature X       sampling temperature (1.0; lower is more certain)\n"
            "      --top-k K             sample among the K likeliest tokens (0: all)\n"
            "      --epochs N            passes over the training set (default 10)\n"
            "      --steps N             train exactly N steps instead of epochs\n"
            "  -b, --batch N             samples per step (128)\n"
            "      --optimizer NAME      sgd (default) or adamw\n"
            "      --lr X                peak learning rate (sgd 0.05, adamw 0.001)\n"
            "      --momentum X          SGD momentum (0.9)\n"
            "      --weight-decay X      weight decay (0)\n"
            "      --clip-norm X         clip the global gradient norm to X (off)\n"
            "      --on-nonfinite WHAT   a step whose loss or gradient norm is NaN or\n"
            "                            infinite: stop (default: the run ends there, exit\n"
            "                            1) or skip (no device updates; the metrics mark\n"
            "                            and count it; a norm is computed every step)\n"
            "      --max-skips N         skip: at most N skipped steps in a row; the next\n"
            "                            bad one ends the run (10)\n"
            "      --lr-schedule NAME    cosine (default: decays from --lr towards 0 over\n"
            "                            the run) or constant\n"
            "      --schedule NAME       cosine or constant as --lr-schedule; gpipe or 1f1b\n"
            "                            pins the pipeline schedule of the plan\n"
            "      --warmup N            linear warm-up steps of the cosine schedule (0)\n"
            "      --seed N              parameters, data order and dropout (1)\n"
            "  -d, --devices SPEC        device selection as MPT_DEVICES (default: all); with\n"
            "                            one device it trains alone, with several it plans\n"
            "      --plan auto|FILE      train on a plan: made for the selected devices from\n"
            "                            their profiles (auto, the default with several\n"
            "                            devices), or read from mpt-plan --json output\n"
            "      --dp N                pin the data-parallel replicas of the plan\n"
            "      --pp N                pin the pipeline stages of the plan\n"
            "      --tp N                pin the tensor-parallel group size (each layer split\n"
            "                            over N devices in proportion to their speed)\n"
            "      --microbatches N      pin the micro-batches per step\n"
            "      --allreduce NAME      how replicas sum gradients: ring, hierarchical\n"
            "                            (inside each process, then across processes) or\n"
            "                            auto (default: the faster by the cost model)\n"
            "      --device-memory SIZE  use at most SIZE bytes (64M, 1G) of each device:\n"
            "                            the planner plans for it and the allocator refuses\n"
            "                            past it (docs/memory.md)\n"
            "      --rebalance-after N   with --plan auto: after N steps, calibrate the cost\n"
            "                            model on them, plan again and move to the new plan\n"
            "                            when it is predicted 10%% faster (20; 0: never)\n"
            "      --save-calibration    store that calibration with the devices' profiles,\n"
            "                            for later plans (docs/planning.md)\n"
            "      --trace FILE          write the run's timeline as a Chrome trace (one\n"
            "                            track per device; open it in Perfetto)\n"
            "      --trace-predicted FILE  write the simulator's timeline of a step of the\n"
            "                            plan the run ends on, for mpt-report beside --trace\n"
            "      --metrics FILE        append JSON Lines: one object per logged step and\n"
            "                            per evaluation\n"
            "      --metrics-port N      serve Prometheus metrics at http://ADDR:N/metrics\n"
            "                            while training (0: a free port, printed on stderr)\n"
            "      --metrics-address ADDR  the address to serve them on (127.0.0.1: this\n"
            "                            machine only; 0.0.0.0: every interface)\n"
            "      --log-every N         log a metrics line every N steps (1)\n"
            "      --eval-every N        evaluate on the test set every N steps (at the end\n"
            "                            of each epoch in any case)\n"
            "      --checkpoint DIR      write DIR/checkpoint.safetensors at the end (and\n"
            "                            every --checkpoint-every N steps)\n"
            "      --checkpoint-every N  checkpoint every N steps\n"
            "      --resume              continue from DIR/checkpoint.safetensors (repeat\n"
            "                            the interrupted command: same steps, seed, batch)\n"
            "      --overwrite           a new run may replace DIR's checkpoint (refused\n"
            "                            otherwise: it is another run's work)\n"
            "      --allow-other-data    resume although the checkpoint was written for\n"
            "                            other data (checked by size and a CRC-32)\n"
            "      --allow-nonfinite-checkpoint  resume from a checkpoint holding NaN or\n"
            "                            infinite values (refused otherwise), with a\n"
            "                            warning: to inspect a diverged run\n"
            "      --comm-timeout S      under mpirun: a rank that does not answer for S\n"
            "                            seconds (stopped, hung) ends the job, naming it;\n"
            "                            a device whose step (or evaluation: 100 measured\n"
            "                            steps per batch if longer) takes longer is hung\n"
            "                            (--elastic) (default 300, or 100 predicted steps\n"
            "                            if longer)\n"
            "      --elastic             when a device fails (an OpenCL error, a lost device,\n"
            "                            a job past --comm-timeout), drop it, plan again on\n"
            "                            the others, restore the last snapshot and go on\n"
            "                            (default with a plan of several devices in one\n"
            "                            process; docs/elastic.md)\n"
            "      --no-elastic          end the run at a device failure instead\n"
            "      --snapshot-every N    elastic: copy the state to host memory every N steps\n"
            "                            (default: chosen so that it costs under 2%% of a step)\n"
            "      --timing              measure the device's busy time (OpenCL profiling\n"
            "                            events) and report it per epoch and in metrics\n"
            "                            (always on with several devices)\n"
            "  -v, --verbose             log what the library does\n"
            "  -h, --help                show this help and exit\n"
            "  -V, --version             show the version and exit\n"
            "\n"
            "On a terminal a progress line shows epoch, step, loss, samples/s and ETA;\n"
            "otherwise only the per-epoch summaries are printed.\n"
            "\n"
            "Across processes: mpirun -np N mpt-train [OPTION]... takes the same options;\n"
            "each rank opens its own devices (--devices applies per rank), rank 0 plans\n"
            "over all of them, and rank 0 alone prints, writes --metrics, the checkpoint\n"
            "and --trace (one file: a process per rank, clocks aligned). Every rank reads\n"
            "--data and, with --resume, the checkpoint. If a rank dies, mpirun ends the\n"
            "job; --resume continues on any number of ranks (docs/mpi.md).\n"
            "Exit status: 0 on success, 1 on failure, 2 on a usage error.\n");
    tool_print_env(f);
}

static void parse(int argc, char **argv, options *o)
{
    enum { O_DATA = 256, O_EPOCHS, O_STEPS, O_OPT, O_LR, O_MOM, O_WD, O_CLIP, O_SCHED, O_WARM,
           O_SEED, O_METRICS, O_LOG, O_EVAL, O_CKPT, O_CKPT_EVERY, O_RESUME, O_TIMING, O_PLAN,
           O_DP, O_PP, O_TP, O_MB, O_LR_SCHED, O_TRACE, O_TRACE_PREDICTED, O_ALLREDUCE,
           O_SAMPLE, O_PROMPT, O_TEMP, O_TOPK, O_OVERWRITE, O_OTHER_DATA, O_COMM_TIMEOUT,
           O_REBALANCE, O_SAVE_CAL, O_ELASTIC, O_NO_ELASTIC, O_SNAPSHOT, O_METRICS_PORT,
           O_METRICS_ADDRESS, O_DEVMEM, O_NONFINITE, O_MAX_SKIPS, O_ALLOW_NONFINITE };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'}, {"data", required_argument, NULL, O_DATA},
        {"epochs", required_argument, NULL, O_EPOCHS}, {"steps", required_argument, NULL, O_STEPS},
        {"batch", required_argument, NULL, 'b'}, {"optimizer", required_argument, NULL, O_OPT},
        {"lr", required_argument, NULL, O_LR}, {"momentum", required_argument, NULL, O_MOM},
        {"weight-decay", required_argument, NULL, O_WD},
        {"clip-norm", required_argument, NULL, O_CLIP},
        {"on-nonfinite", required_argument, NULL, O_NONFINITE},
        {"max-skips", required_argument, NULL, O_MAX_SKIPS},
        {"allow-nonfinite-checkpoint", no_argument, NULL, O_ALLOW_NONFINITE},
        {"schedule", required_argument, NULL, O_SCHED}, {"warmup", required_argument, NULL, O_WARM},
        {"seed", required_argument, NULL, O_SEED}, {"devices", required_argument, NULL, 'd'},
        {"metrics", required_argument, NULL, O_METRICS},
        {"metrics-port", required_argument, NULL, O_METRICS_PORT},
        {"metrics-address", required_argument, NULL, O_METRICS_ADDRESS},
        {"log-every", required_argument, NULL, O_LOG},
        {"eval-every", required_argument, NULL, O_EVAL},
        {"checkpoint", required_argument, NULL, O_CKPT},
        {"checkpoint-every", required_argument, NULL, O_CKPT_EVERY},
        {"resume", no_argument, NULL, O_RESUME}, {"timing", no_argument, NULL, O_TIMING},
        {"overwrite", no_argument, NULL, O_OVERWRITE},
        {"comm-timeout", required_argument, NULL, O_COMM_TIMEOUT},
        {"allow-other-data", no_argument, NULL, O_OTHER_DATA},
        {"plan", required_argument, NULL, O_PLAN}, {"dp", required_argument, NULL, O_DP},
        {"pp", required_argument, NULL, O_PP}, {"tp", required_argument, NULL, O_TP},
        {"microbatches", required_argument, NULL, O_MB},
        {"allreduce", required_argument, NULL, O_ALLREDUCE},
        {"device-memory", required_argument, NULL, O_DEVMEM},
        {"sample", required_argument, NULL, O_SAMPLE}, {"prompt", required_argument, NULL, O_PROMPT},
        {"temperature", required_argument, NULL, O_TEMP}, {"top-k", required_argument, NULL, O_TOPK},
        {"lr-schedule", required_argument, NULL, O_LR_SCHED},
        {"trace", required_argument, NULL, O_TRACE},
        {"trace-predicted", required_argument, NULL, O_TRACE_PREDICTED},
        {"rebalance-after", required_argument, NULL, O_REBALANCE},
        {"save-calibration", no_argument, NULL, O_SAVE_CAL},
        {"elastic", no_argument, NULL, O_ELASTIC}, {"no-elastic", no_argument, NULL, O_NO_ELASTIC},
        {"snapshot-every", required_argument, NULL, O_SNAPSHOT},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    int c, lr_given = 0, verbose = 0, max_skips_given = 0;

    memset(o, 0, sizeof *o);
    mpt_train_config_default(&o->cfg);
    mpt_plan_request_default(&o->pins);
    o->data = DEFAULT_DATA;
    o->prompt = "\n";
    o->temperature = 1.0;
    mpt_fit_options_default(&o->fit);
    o->metrics_port = -1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:b:d:vhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case O_DATA: o->data = optarg, o->data_given = 1; break;
        case O_SAMPLE: o->sample = tool_parse_count("--sample", optarg, 1); break;
        case O_PROMPT: o->prompt = optarg; break;
        case O_TEMP:
            o->temperature = tool_parse_real("--temperature", optarg);
            if (!(o->temperature > 0))
                tool_usage_error("--temperature must be above 0, got '%s'", optarg);
            break;
        case O_TOPK: o->top_k = tool_parse_count("--top-k", optarg, 0); break;
        case O_EPOCHS: o->fit.epochs = tool_parse_count("--epochs", optarg, 1); break;
        case O_STEPS: o->fit.steps = tool_parse_count("--steps", optarg, 1); break;
        case 'b': o->cfg.batch = tool_parse_count("--batch", optarg, 1); break;
        case O_OPT:
            if (strcmp(optarg, "sgd") == 0)
                o->cfg.optimizer = MPT_OPTIM_SGD;
            else if (strcmp(optarg, "adamw") == 0)
                o->cfg.optimizer = MPT_OPTIM_ADAMW;
            else
                tool_usage_error("--optimizer must be sgd or adamw, got '%s'", optarg);
            break;
        case O_LR: o->cfg.lr = tool_parse_real("--lr", optarg), lr_given = 1; break;
        case O_MOM: o->cfg.momentum = tool_parse_real("--momentum", optarg); break;
        case O_WD: o->cfg.weight_decay = tool_parse_real("--weight-decay", optarg); break;
        case O_CLIP: o->cfg.clip_norm = tool_parse_real("--clip-norm", optarg); break;
        case O_NONFINITE:
            if (strcmp(optarg, "stop") == 0)
                o->cfg.on_nonfinite = MPT_NONFINITE_STOP;
            else if (strcmp(optarg, "skip") == 0)
                o->cfg.on_nonfinite = MPT_NONFINITE_SKIP;
            else
                tool_usage_error("--on-nonfinite must be stop or skip, got '%s'", optarg);
            break;
        case O_MAX_SKIPS:
            o->cfg.max_skips = tool_parse_count("--max-skips", optarg, 1);
            max_skips_given = 1;
            break;
        case O_ALLOW_NONFINITE: o->fit.allow_nonfinite_checkpoint = 1; break;
        case O_SCHED:
        case O_LR_SCHED:
            /* --schedule takes either kind: the names do not overlap. */
            if (strcmp(optarg, "constant") == 0)
                o->cfg.schedule = MPT_SCHEDULE_CONSTANT;
            else if (strcmp(optarg, "cosine") == 0)
                o->cfg.schedule = MPT_SCHEDULE_COSINE;
            else if (c == O_SCHED && strcmp(optarg, "gpipe") == 0)
                o->pins.schedule = MPT_PIPE_GPIPE;
            else if (c == O_SCHED && strcmp(optarg, "1f1b") == 0)
                o->pins.schedule = MPT_PIPE_1F1B;
            else if (c == O_SCHED)
                tool_usage_error("--schedule must be constant, cosine, gpipe or 1f1b, got '%s'",
                                 optarg);
            else
                tool_usage_error("--lr-schedule must be constant or cosine, got '%s'", optarg);
            break;
        case O_PLAN: o->plan = optarg; break;
        case O_TRACE: o->trace = optarg; break;
        case O_TRACE_PREDICTED: o->trace_predicted = optarg; break;
        case O_DP: o->pins.dp = tool_parse_count("--dp", optarg, 1); break;
        case O_PP: o->pins.pp = tool_parse_count("--pp", optarg, 1); break;
        case O_TP: o->pins.tp = tool_parse_count("--tp", optarg, 1); break;
        case O_ALLREDUCE: o->pins.allreduce = tool_parse_allreduce(optarg); break;
        case O_DEVMEM: o->device_memory = tool_parse_size("--device-memory", optarg); break;
        case O_MB: o->pins.microbatches = tool_parse_count("--microbatches", optarg, 1); break;
        case O_WARM: o->cfg.warmup_steps = tool_parse_count("--warmup", optarg, 0); break;
        case O_SEED: o->cfg.seed = tool_parse_count("--seed", optarg, 0); break;
        case 'd': o->devices = optarg; break;
        case O_METRICS: o->fit.metrics = optarg; break;
        case O_METRICS_PORT:
            if (tool_parse_count("--metrics-port", optarg, 0) > 65535)
                tool_usage_error("--metrics-port must be a port, 0 to 65535, got '%s'", optarg);
            o->metrics_port = (int)tool_parse_count("--metrics-port", optarg, 0);
            break;
        case O_METRICS_ADDRESS: o->metrics_address = optarg; break;
        case O_LOG: o->fit.log_every = tool_parse_count("--log-every", optarg, 1); break;
        case O_EVAL: o->fit.eval_every = tool_parse_count("--eval-every", optarg, 1); break;
        case O_CKPT: o->checkpoint_dir = optarg; break;
        case O_CKPT_EVERY: o->fit.checkpoint_every = tool_parse_count("--checkpoint-every", optarg, 1); break;
        case O_RESUME: o->fit.resume = 1; break;
        case O_OVERWRITE: o->fit.overwrite = 1; break;
        case O_COMM_TIMEOUT:
            o->cfg.comm_timeout_s = tool_parse_real("--comm-timeout", optarg);
            if (!(o->cfg.comm_timeout_s > 0))
                tool_usage_error("--comm-timeout must be above 0 seconds, got '%s'", optarg);
            break;
        case O_OTHER_DATA: o->fit.allow_other_data = 1; break;
        case O_TIMING: o->timing = 1; break;
        case O_REBALANCE:
            o->fit.rebalance_after = tool_parse_count("--rebalance-after", optarg, 0);
            break;
        case O_SAVE_CAL: o->fit.save_calibration = 1; break;
        case O_ELASTIC: o->fit.elastic = 1; break;
        case O_NO_ELASTIC: o->fit.elastic = -1; break;
        case O_SNAPSHOT:
            o->fit.snapshot_every = tool_parse_count("--snapshot-every", optarg, 1);
            break;
        case 'v': verbose = 1; break;
        case 'h': usage(stdout); exit(TOOL_EXIT_OK);
        case 'V': printf("mpt-train (mpt) %s\n", mpt_version()); exit(TOOL_EXIT_OK);
        case ':': tool_usage_error("option '%s' needs a value", argv[optind - 1]);
        default: tool_usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    tool_init("mpt-train", verbose);
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (o->plan && strcmp(o->plan, "auto") != 0 &&
        (o->pins.dp || o->pins.pp || o->pins.tp || o->pins.microbatches ||
         o->pins.schedule != MPT_PIPE_AUTO || o->pins.allreduce != MPT_ALLREDUCE_AUTO))
        tool_usage_error("--dp, --pp, --tp, --microbatches, --schedule gpipe|1f1b and "
                         "--allreduce pin an automatic plan: edit the plan file instead");
    if ((o->fit.resume || o->fit.checkpoint_every || o->fit.overwrite) && !o->checkpoint_dir)
        tool_usage_error("--resume, --overwrite and --checkpoint-every need --checkpoint DIR");
    if (o->fit.allow_nonfinite_checkpoint && !o->fit.resume)
        tool_usage_error("--allow-nonfinite-checkpoint applies to the checkpoint --resume loads");
    if (max_skips_given && o->cfg.on_nonfinite != MPT_NONFINITE_SKIP)
        tool_usage_error("--max-skips bounds --on-nonfinite skip");
    if (o->fit.resume && o->fit.overwrite)
        tool_usage_error("--resume continues the checkpoint, --overwrite replaces it: not both");
    o->fit.allow_no_steps = o->sample > 0; /* --sample from a checkpoint alone */
    if (!o->model)
        o->model = tool_data_path("models/" DEFAULT_MODEL);
    if (!lr_given) /* the optimizer's own rate, as the library's */
        mpt_train_config_use_optimizer(&o->cfg, o->cfg.optimizer);
}

/* The first SIGINT, SIGTERM or SIGHUP: the run stops after the current
 * step (on every device and rank), writes its checkpoint and exits 128 +
 * the signal; the handler is then reset, so a second one ends it at once. */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static void catch_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* An output file the run writes at its end, tried before the first step:
 * a wrong path fails now, not after hours of training. */
static void check_writable(const char *path, const char *what)
{
    struct stat st;
    int existed = stat(path, &st) == 0;
    FILE *f = fopen(path, "a");
    if (!f)
        tool_die("cannot write %s %s: %s", what, path, strerror(errno));
    fclose(f);
    if (!existed)
        remove(path);
}

/* What the loop's callbacks print with. */
typedef struct {
    int tty, timing;
    double last_draw;
    mpt_prometheus_t *prom; /* --metrics-port's endpoint, or NULL */
} printer;

/* The progress line on a terminal, at most ten times a second. */
static void on_step(void *ctx, const mpt_step_report_t *report, uint64_t epoch,
                    const mpt_device_step_t *devices, size_t ndevices)
{
    printer *p = ctx;
    double t = tool_now();
    if (p->prom)
        tool_check(mpt_prometheus_update(p->prom, report, epoch, devices, ndevices),
                   "updating the metrics endpoint");
    if (!p->tty || (t - p->last_draw <= 0.1 && report->step != report->total_steps))
        return;
    char line[512];
    mpt_progress_line(report, epoch, devices, ndevices, line, sizeof line);
    fprintf(stderr, "\r%s\033[K", line);
    p->last_draw = t;
}

static void on_replan(void *ctx, uint64_t step, const char *old_plan, double old_s,
                      const char *new_plan, double new_s, int moved)
{
    printer *p = ctx;
    if (p->tty)
        fprintf(stderr, "\r\033[K");
    printf("step %" PRIu64 ": calibrated %s predicted %.2f ms; re-planned %s predicted %.2f ms: "
           "%s\n", step, old_plan, old_s * 1e3, new_plan, new_s * 1e3,
           moved ? "moved" : "kept the plan");
    fflush(stdout);
}

static void on_recover(void *ctx, uint64_t step, int device, const char *reason,
                       const char *plan, uint64_t replayed, double seconds_lost)
{
    printer *p = ctx;
    if (p->tty)
        fprintf(stderr, "\r\033[K");
    printf("device %d failed (%s): recovered on %s from the snapshot of step %" PRIu64
           ", %" PRIu64 " step(s) to train again, %.2f s lost\n",
           device, reason, plan, step, replayed, seconds_lost);
    fflush(stdout);
}

static void on_epoch(void *ctx, const mpt_epoch_summary_t *s)
{
    printer *p = ctx;
    if (p->tty)
        fprintf(stderr, "\r\033[K");
    printf("epoch %" PRIu64 "%s: step %" PRIu64 ", train loss %.4f, %s loss %.4f, "
           "%s accuracy %.4f, %.0f samples/s",
           s->epoch, s->resumed ? " (resumed mid-epoch)" : s->partial ? " (partial)" : "",
           s->step, s->train_loss, s->eval_name, s->eval_loss, s->eval_name, s->eval_accuracy,
           s->samples_per_s);
    if (s->tokens_per_s > 0)
        printf(" (%.0f tokens/s)", s->tokens_per_s);
    printf(", %.1f s", s->seconds);
    if (p->timing && !isnan(s->device_busy_s))
        printf(", device busy %.1f s (%.0f%%; BLAS %.0f%%)", s->device_busy_s,
               100 * s->device_busy_s / s->seconds, 100 * s->blas_busy_s / s->seconds);
    for (size_t i = 0, shown = 0; p->timing && i < s->ndevices; i++) /* every rank's */
        if (!isnan(s->devices[i].busy))
            printf("%s device %d %lu kernels + %lu BLAS calls", shown++ ? "," : "; a step:",
                   s->devices[i].device, s->devices[i].kernels, s->devices[i].blas_calls);
    printf("\n");
    fflush(stdout);
}

/* A trainer on the job's devices under its plan, printing the plan; or on
 * one device alone when nothing asks for a plan. */
static mpt_trainer_t *create_trainer(options *o, const mpt_model_t *model, mpt_devices_t *devs,
                                     mpt_world_t *world, mpt_cluster_t **cluster,
                                     mpt_topology_t **topo, mpt_plan_t **plan)
{
    mpt_trainer_t *t = NULL;
    int nranks = mpt_world_size(world);
    int planned = mpt_devices_count(devs) > 1 || nranks > 1 || o->plan || o->trace ||
                  o->trace_predicted || o->pins.dp || o->pins.pp || o->pins.tp ||
                  o->pins.microbatches || o->pins.schedule != MPT_PIPE_AUTO || o->pins.allreduce != MPT_ALLREDUCE_AUTO;
    if (!planned) {
        tool_check(mpt_trainer_create(model, mpt_devices_get(devs, 0), &o->cfg, &t),
                   "creating the trainer");
        return t;
    }
    mpt_cluster_t *local = tool_local_cluster(devs, topo);
    for (size_t i = 0; o->device_memory && i < mpt_cluster_device_count(local); i++)
        tool_check(mpt_cluster_set_memory_limit(local, i, o->device_memory),
                   "capping device memory");
    tool_check(mpt_world_cluster(world, local, cluster), "gathering the job's devices");
    tool_check(mpt_world_measure_shared(world, devs, *cluster),
               "measuring the devices that share cores with other ranks'");
    mpt_cluster_free(local);
    o->pins.batch = o->cfg.batch;
    o->pins.optimizer = o->cfg.optimizer;
    const char *file = o->plan && strcmp(o->plan, "auto") != 0 ? o->plan : NULL;
    tool_check(mpt_world_plan(world, model, *cluster, file, &o->pins, plan), "planning");
    if (!file) /* an automatic plan may be rebalanced (--rebalance-after) */
        o->fit.cluster = *cluster, o->fit.replan = &o->pins;
    /* The plan is printed once the trainer accepted it: never a plan that
     * does not run. */
    tool_check(mpt_trainer_create_world(model, devs, *plan, &o->cfg, *topo, *cluster, world, &t),
               "creating the trainer");
    char *text = NULL;
    tool_check(mpt_plan_describe(*plan, model, *cluster, 0, &text), "describing the plan");
    if (nranks > 1)
        printf("%d ranks: the plan's device ids number every rank's devices in rank "
               "order, rank 0's first\n", nranks);
    fputs(text, stdout);
    free(text);
    o->timing = 1; /* per-device busy figures for the progress line and metrics */
    if (o->trace)
        tool_check(mpt_trainer_set_trace(t, 1), "recording the trace");
    return t;
}

static void print_header(const options *o, const mpt_model_t *model, const mpt_trainer_t *t,
                         const mpt_devices_t *devs, int nranks, uint64_t total, uint64_t per_epoch)
{
    char *table = NULL, where[256];
    tool_check(mpt_model_describe(model, &table), "describing the model");
    if (nranks > 1)
        snprintf(where, sizeof where, "%zu devices of %d ranks", mpt_trainer_device_count(t),
                 nranks);
    else if (mpt_trainer_device_count(t) > 1)
        snprintf(where, sizeof where, "%zu devices", mpt_trainer_device_count(t));
    else {
        mpt_device_step_t first = {0}; /* the plan's device: not the first opened when it
                                        * leaves that one idle */
        tool_check(mpt_trainer_device_stats(t, 0, &first), "reading the plan's devices");
        const mpt_device_info_t *info =
            mpt_device_info(mpt_devices_get(devs, (size_t)first.device));
        snprintf(where, sizeof where, "device %d (%s)", info->index, info->name);
    }
    printf("mpt-train: %s (%zu parameters) on %s, batch %zu, %s lr %g, %" PRIu64
           " steps (%" PRIu64 " per epoch)%s\n",
           mpt_model_name(model), mpt_model_param_count(model), where, o->cfg.batch,
           o->cfg.optimizer == MPT_OPTIM_ADAMW ? "adamw" : "sgd", o->cfg.lr, total, per_epoch,
           o->fit.resume ? ", resumed" : "");
    fputs(table, stdout);
    free(table);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    options o;
    mpt_model_t *model = NULL;
    mpt_data_t *data = NULL;
    mpt_devices_t *devs = NULL;
    mpt_cluster_t *cluster = NULL;
    mpt_topology_t *topo = NULL;
    mpt_plan_t *plan = NULL;
    mpt_world_t *world = NULL;
    char path[4096];

    tool_init("mpt-train", 0);
    parse(argc, argv, &o);
    /* Under mpirun every rank runs this program: each opens its own
     * devices, rank 0 plans for the job's cluster, and rank 0 alone prints,
     * writes metrics, checkpoints and the trace (docs/mpi.md). */
    tool_check(mpt_world_init(&argc, &argv, &world), "joining the job");
    int rank = mpt_world_rank(world), nranks = mpt_world_size(world);
    if (rank != 0 && !freopen("/dev/null", "w", stdout))
        tool_die("cannot silence rank %d's output: %s", rank, strerror(errno));
    mpt_prometheus_t *prom = NULL; /* --metrics-port: before the long set-up, to fail early */
    if (o.metrics_port >= 0 && rank == 0) { /* rank 0 has every rank's figures */
        tool_check(mpt_prometheus_start(o.metrics_port, o.metrics_address, &prom),
                   "starting the metrics endpoint");
        fprintf(stderr, "mpt-train: metrics at http://%s:%d/metrics\n",
                o.metrics_address ? o.metrics_address : "127.0.0.1", mpt_prometheus_port(prom));
    }
    tool_check(mpt_model_load(o.model, &model), "loading the model");
    int lm = mpt_model_labels_per_sample(model) > 1;
    if (lm && !o.data_given)
        tool_die("model %s is a language model: give it --data FILE (a text file, an llm.c "
                 "token shard or a uint16 .bin token file)", o.model);
    if (!lm && o.sample)
        tool_die("--sample writes text from a language model; model %s is a classifier",
                 o.model);
    tool_check(mpt_data_open(o.data, model, o.cfg.batch, o.cfg.seed, &data), "loading the data");
    tool_check(mpt_devices_open(o.devices, &devs), "opening devices");
    for (size_t i = 0; o.device_memory && i < mpt_devices_count(devs); i++)
        tool_check(mpt_device_set_memory_limit(mpt_devices_get(devs, i), o.device_memory),
                   "capping device memory");
    uint64_t total = mpt_fit_total_steps(&o.fit, data);
    o.cfg.total_steps = total;
    mpt_trainer_t *t = create_trainer(&o, model, devs, world, &cluster, &topo, &plan);
    if (o.checkpoint_dir) {
        /* every rank: ranks on other hosts read it there to resume */
        if (mkdir(o.checkpoint_dir, 0755) != 0 && errno != EEXIST)
            tool_die("cannot create checkpoint directory %s: %s", o.checkpoint_dir,
                     strerror(errno));
        snprintf(path, sizeof path, "%s/checkpoint.safetensors", o.checkpoint_dir);
        o.fit.checkpoint = path;
    }
    print_header(&o, model, t, devs, nranks, total, mpt_data_batches_per_epoch(data));
    if (o.timing) /* per-device busy figures for the progress line and metrics */
        tool_check(mpt_trainer_set_timing(t, 1), "turning on device timing");

    if (o.trace && rank == 0) /* rank 0 writes the job's one trace */
        check_writable(o.trace, "trace");
    if (o.trace_predicted && rank == 0)
        check_writable(o.trace_predicted, "predicted trace");
    printer p = {.tty = rank == 0 && tool_stderr_is_tty(), .timing = o.timing, .prom = prom};
    o.fit.on_step = on_step, o.fit.on_epoch = on_epoch, o.fit.ctx = &p;
    o.fit.on_replan = on_replan, o.fit.on_recover = on_recover;
    o.fit.stop = &stop_signal;
    catch_stop_signals();
    int status = mpt_trainer_fit(t, data, &o.fit);
    if (status == MPT_ERR_STOPPED) {
        if (p.tty)
            fprintf(stderr, "\r\033[K");
        fprintf(stderr, "mpt-train: %s\n", mpt_last_error());
        exit(128 + (int)stop_signal);
    }
    tool_check(status, "training");
    if (o.sample)
        sample_text(t, model, o.sample, o.prompt, o.temperature, o.top_k, o.cfg.seed, stdout);
    if (o.trace) /* collective: every rank's devices, in one file */
        tool_check(mpt_trainer_write_trace(t, o.trace), "writing the trace");
    if (o.trace_predicted)
        tool_check(mpt_trainer_write_predicted_trace(t, o.trace_predicted),
                   "writing the predicted trace");
    mpt_prometheus_stop(p.prom);
    mpt_trainer_free(t);
    mpt_plan_free(plan);
    mpt_cluster_free(cluster);
    mpt_topology_free(topo);
    mpt_devices_free(devs);
    mpt_data_free(data);
    mpt_model_free(model);
    mpt_world_free(world);
    return TOOL_EXIT_OK;
}
