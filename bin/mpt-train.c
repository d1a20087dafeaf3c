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
#include <time.h>

#include "sample.h"
#include "tool.h"
#include "train_data.h"

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define DEFAULT_MODEL "mlp-fashion.json"

typedef struct {
    const char *model, *data, *devices, *metrics, *checkpoint_dir, *plan, *trace;
    uint64_t epochs, steps, checkpoint_every, eval_every, log_every;
    int resume, timing, data_given;
    uint64_t sample, top_k; /* --sample N tokens after training, from the top k (0: all) */
    const char *prompt;
    double temperature;
    mpt_plan_request_t pins; /* --dp, --pp, --tp, --microbatches, pipeline --schedule */
    mpt_train_config_t cfg;
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
            "      --trace FILE          write the run's timeline as a Chrome trace (one\n"
            "                            track per device; open it in Perfetto)\n"
            "      --metrics FILE        append JSON Lines: one object per logged step and\n"
            "                            per evaluation\n"
            "      --log-every N         log a metrics line every N steps (1)\n"
            "      --eval-every N        evaluate on the test set every N steps (at the end\n"
            "                            of each epoch in any case)\n"
            "      --checkpoint DIR      write DIR/checkpoint.safetensors at the end (and\n"
            "                            every --checkpoint-every N steps)\n"
            "      --checkpoint-every N  checkpoint every N steps\n"
            "      --resume              continue from DIR/checkpoint.safetensors (repeat\n"
            "                            the interrupted command: same steps, seed, batch)\n"
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
            "and --trace (other ranks write FILE.rankK). Every rank reads --data and, with\n"
            "--resume, the checkpoint. If a rank dies, mpirun ends the job; --resume\n"
            "continues on any number of ranks (docs/mpi.md).\n"
            "Exit status: 0 on success, 1 on failure, 2 on a usage error.\n");
    tool_print_env(f);
}

static void parse(int argc, char **argv, options *o)
{
    enum { O_DATA = 256, O_EPOCHS, O_STEPS, O_OPT, O_LR, O_MOM, O_WD, O_CLIP, O_SCHED, O_WARM,
           O_SEED, O_METRICS, O_LOG, O_EVAL, O_CKPT, O_CKPT_EVERY, O_RESUME, O_TIMING, O_PLAN,
           O_DP, O_PP, O_TP, O_MB, O_LR_SCHED, O_TRACE, O_ALLREDUCE,
           O_SAMPLE, O_PROMPT, O_TEMP, O_TOPK };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'}, {"data", required_argument, NULL, O_DATA},
        {"epochs", required_argument, NULL, O_EPOCHS}, {"steps", required_argument, NULL, O_STEPS},
        {"batch", required_argument, NULL, 'b'}, {"optimizer", required_argument, NULL, O_OPT},
        {"lr", required_argument, NULL, O_LR}, {"momentum", required_argument, NULL, O_MOM},
        {"weight-decay", required_argument, NULL, O_WD},
        {"clip-norm", required_argument, NULL, O_CLIP},
        {"schedule", required_argument, NULL, O_SCHED}, {"warmup", required_argument, NULL, O_WARM},
        {"seed", required_argument, NULL, O_SEED}, {"devices", required_argument, NULL, 'd'},
        {"metrics", required_argument, NULL, O_METRICS},
        {"log-every", required_argument, NULL, O_LOG},
        {"eval-every", required_argument, NULL, O_EVAL},
        {"checkpoint", required_argument, NULL, O_CKPT},
        {"checkpoint-every", required_argument, NULL, O_CKPT_EVERY},
        {"resume", no_argument, NULL, O_RESUME}, {"timing", no_argument, NULL, O_TIMING},
        {"plan", required_argument, NULL, O_PLAN}, {"dp", required_argument, NULL, O_DP},
        {"pp", required_argument, NULL, O_PP}, {"tp", required_argument, NULL, O_TP},
        {"microbatches", required_argument, NULL, O_MB},
        {"allreduce", required_argument, NULL, O_ALLREDUCE},
        {"sample", required_argument, NULL, O_SAMPLE}, {"prompt", required_argument, NULL, O_PROMPT},
        {"temperature", required_argument, NULL, O_TEMP}, {"top-k", required_argument, NULL, O_TOPK},
        {"lr-schedule", required_argument, NULL, O_LR_SCHED},
        {"trace", required_argument, NULL, O_TRACE},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    int c, lr_given = 0, verbose = 0;

    memset(o, 0, sizeof *o);
    mpt_train_config_default(&o->cfg);
    mpt_plan_request_default(&o->pins);
    o->data = DEFAULT_DATA;
    o->prompt = "\n";
    o->temperature = 1.0;
    o->epochs = 10;
    o->log_every = 1;
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
        case O_EPOCHS: o->epochs = tool_parse_count("--epochs", optarg, 1); break;
        case O_STEPS: o->steps = tool_parse_count("--steps", optarg, 1); break;
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
        case O_DP: o->pins.dp = tool_parse_count("--dp", optarg, 1); break;
        case O_PP: o->pins.pp = tool_parse_count("--pp", optarg, 1); break;
        case O_TP: o->pins.tp = tool_parse_count("--tp", optarg, 1); break;
        case O_ALLREDUCE: o->pins.allreduce = tool_parse_allreduce(optarg); break;
        case O_MB: o->pins.microbatches = tool_parse_count("--microbatches", optarg, 1); break;
        case O_WARM: o->cfg.warmup_steps = tool_parse_count("--warmup", optarg, 0); break;
        case O_SEED: o->cfg.seed = tool_parse_count("--seed", optarg, 0); break;
        case 'd': o->devices = optarg; break;
        case O_METRICS: o->metrics = optarg; break;
        case O_LOG: o->log_every = tool_parse_count("--log-every", optarg, 1); break;
        case O_EVAL: o->eval_every = tool_parse_count("--eval-every", optarg, 1); break;
        case O_CKPT: o->checkpoint_dir = optarg; break;
        case O_CKPT_EVERY: o->checkpoint_every = tool_parse_count("--checkpoint-every", optarg, 1); break;
        case O_RESUME: o->resume = 1; break;
        case O_TIMING: o->timing = 1; break;
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
    if ((o->resume || o->checkpoint_every) && !o->checkpoint_dir)
        tool_usage_error("--resume and --checkpoint-every need --checkpoint DIR");
    if (!o->model)
        o->model = tool_data_path("models/" DEFAULT_MODEL);
    if (!lr_given) /* the optimizer's own rate, as the library's */
        mpt_train_config_use_optimizer(&o->cfg, o->cfg.optimizer);
}

typedef struct {
    mpt_trainer_t *trainer;
    const train_data_t *data;
    mpt_metrics_t *metrics;
} run_ctx;

/* On the test set (a classifier) or the validation windows (a language
 * model: the mean loss per token, and next-token accuracy). */
static double evaluate(run_ctx *r, uint64_t step, uint64_t epoch, double *loss)
{
    double acc = 0;
    tool_check(mpt_trainer_evaluate(r->trainer, r->data->eval_x, r->data->eval_y,
                                    r->data->eval_count, loss, &acc),
               "evaluating");
    if (r->metrics)
        tool_check(mpt_metrics_eval(r->metrics, step, epoch + 1, r->data->eval_name, *loss, acc),
                   "logging the evaluation");
    return acc;
}

/* The trainer's devices' figures of the last step (this rank's busy
 * fractions; the others' NaN), into devices[0..n). */
static size_t device_stats(const mpt_trainer_t *t, mpt_device_step_t *devices, size_t cap)
{
    size_t n = mpt_trainer_device_count(t);
    for (size_t i = 0; i < n && i < cap; i++)
        tool_check(mpt_trainer_device_stats(t, i, &devices[i]), "reading device figures");
    return n < cap ? n : cap;
}

static void checkpoint(mpt_trainer_t *t, const char *dir, uint64_t epoch, uint64_t next_batch)
{
    char path[4096];
    mpt_data_position_t pos = {epoch, next_batch};
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
    tool_check(mpt_trainer_save(t, path, &pos), "writing the checkpoint");
}

int main(int argc, char **argv)
{
    options o;
    mpt_model_t *model = NULL;
    train_data_t data;
    mpt_devices_t *devs = NULL;
    run_ctx r = {0};
    mpt_data_position_t pos = {0, 0};
    char path[4096];
    mpt_cluster_t *cluster = NULL;
    mpt_topology_t *topo = NULL;
    mpt_plan_t *plan = NULL;
    mpt_world_t *world = NULL;

    tool_init("mpt-train", 0);
    parse(argc, argv, &o);
    /* Under mpirun every rank runs this program: each opens its own
     * devices, rank 0 plans for the job's cluster, and rank 0 alone prints,
     * writes metrics, checkpoints and the trace (docs/mpi.md). */
    tool_check(mpt_world_init(&argc, &argv, &world), "joining the job");
    int rank = mpt_world_rank(world), nranks = mpt_world_size(world);
    if (rank != 0) {
        if (!freopen("/dev/null", "w", stdout))
            tool_die("cannot silence rank %d's output: %s", rank, strerror(errno));
        o.metrics = NULL;
    }
    tool_check(mpt_model_load(o.model, &model), "loading the model");
    size_t context = mpt_model_labels_per_sample(model); /* 1: a classifier */
    if (context > 1 && !o.data_given)
        tool_die("model %s is a language model: give it --data FILE (a text file, an llm.c "
                 "token shard or a uint16 .bin token file)", o.model);
    if (context == 1 && o.sample)
        tool_die("--sample writes text from a language model; model %s is a classifier",
                 o.model);
    train_data_open(&data, o.data, model, o.model, o.cfg.batch, o.cfg.seed);
    tool_check(mpt_devices_open(o.devices, &devs), "opening devices");
    mpt_device_t *dev = mpt_devices_get(devs, 0);
    uint64_t per_epoch = data.per_epoch;
    uint64_t total = o.steps ? o.steps : o.epochs * per_epoch;
    o.cfg.total_steps = total;
    int planned = mpt_devices_count(devs) > 1 || nranks > 1 || o.plan || o.trace || o.pins.dp ||
                  o.pins.pp || o.pins.tp || o.pins.microbatches ||
                  o.pins.schedule != MPT_PIPE_AUTO || o.pins.allreduce != MPT_ALLREDUCE_AUTO;
    if (planned) {
        cluster = tool_local_cluster(devs, &topo);
        if (nranks > 1) { /* every rank's devices, rank by rank */
            mpt_cluster_t *job = NULL;
            tool_check(mpt_world_cluster(world, cluster, &job), "gathering the job's devices");
            mpt_cluster_free(cluster);
            cluster = job;
        }
        if (rank == 0 && (!o.plan || strcmp(o.plan, "auto") == 0)) {
            o.pins.batch = o.cfg.batch;
            o.pins.optimizer = o.cfg.optimizer;
            tool_check(mpt_plan_create(model, cluster, &o.pins, &plan), "planning");
        } else if (rank == 0) {
            tool_check(mpt_plan_load(o.plan, model, cluster, &plan), "loading the plan");
        }
        tool_check(mpt_world_share_plan(world, model, cluster, &plan), "sharing the plan");
        char *text = NULL;
        tool_check(mpt_plan_describe(plan, model, cluster, 0, &text), "describing the plan");
        if (nranks > 1)
            printf("%d ranks: the plan's device ids number every rank's devices in rank "
                   "order, rank 0's first\n", nranks);
        fputs(text, stdout);
        free(text);
        tool_check(mpt_trainer_create_world(model, devs, plan, &o.cfg, topo, cluster, world,
                                            &r.trainer),
                   "creating the trainer");
        o.timing = 1; /* per-device busy figures for the progress line and metrics */
        if (o.trace)
            tool_check(mpt_trainer_set_trace(r.trainer, 1), "recording the trace");
    } else {
        tool_check(mpt_trainer_create(model, dev, &o.cfg, &r.trainer), "creating the trainer");
    }
    r.data = &data;
    if (o.checkpoint_dir) {
        if (rank == 0 && mkdir(o.checkpoint_dir, 0755) != 0 && errno != EEXIST)
            tool_die("cannot create checkpoint directory %s: %s", o.checkpoint_dir,
                     strerror(errno));
        snprintf(path, sizeof path, "%s/checkpoint.safetensors", o.checkpoint_dir);
    }
    if (o.resume) {
        tool_check(mpt_trainer_load(r.trainer, path, &pos), "resuming");
        if (pos.epoch * per_epoch + pos.batch_index != mpt_trainer_steps(r.trainer))
            tool_die("checkpoint %s: step %" PRIu64 " does not match its data position (epoch %"
                     PRIu64 ", batch %" PRIu64 ") at %" PRIu64 " batches per epoch",
                     path, mpt_trainer_steps(r.trainer), pos.epoch, pos.batch_index, per_epoch);
        train_data_seek(&data, pos.epoch, pos.batch_index);
    }
    if (o.metrics)
        tool_check(mpt_metrics_open(o.metrics, o.resume, mpt_trainer_steps(r.trainer), &r.metrics),
                   "opening the metrics file");

    char *table = NULL, where[256];
    tool_check(mpt_model_describe(model, &table), "describing the model");
    if (planned && nranks > 1)
        snprintf(where, sizeof where, "%zu devices of %d ranks",
                 mpt_trainer_device_count(r.trainer), nranks);
    else if (planned)
        snprintf(where, sizeof where, "%zu devices", mpt_trainer_device_count(r.trainer));
    else
        snprintf(where, sizeof where, "device %d (%s)", mpt_device_info(dev)->index,
                 mpt_device_info(dev)->name);
    printf("mpt-train: %s (%zu parameters) on %s, batch %zu, %s lr %g, %" PRIu64
           " steps (%" PRIu64 " per epoch)%s\n",
           mpt_model_name(model), mpt_model_param_count(model), where, o.cfg.batch,
           o.cfg.optimizer == MPT_OPTIM_ADAMW ? "adamw" : "sgd", o.cfg.lr, total, per_epoch,
           o.resume ? ", resumed" : "");
    fputs(table, stdout);
    free(table);
    fflush(stdout);

    if (o.timing) /* per-device busy figures for the progress line and metrics */
        tool_check(mpt_trainer_set_timing(r.trainer, 1), "turning on device timing");
    size_t ndev = mpt_trainer_device_count(r.trainer);
    mpt_device_step_t *devices = calloc(ndev, sizeof *devices);
    if (!devices)
        tool_die("out of memory");
    double busy_epoch = 0, blas_epoch = 0;
    int tty = rank == 0 && tool_stderr_is_tty();
    double t_epoch = tool_now(), last_draw = 0, loss_sum = 0;
    uint64_t epoch_steps = 0;
    mpt_step_report_t report = {0};
    uint64_t first_step = mpt_trainer_steps(r.trainer);
    for (uint64_t step = first_step; step < total; step++) {
        const float *x;
        const int32_t *y;
        uint64_t epoch;
        size_t bi;
        mpt_step_stats_t st;
        train_data_next(&data, step, &x, &y, &epoch, &bi);
        tool_check(mpt_trainer_step(r.trainer, x, y, &st), "training");
        loss_sum += st.loss, epoch_steps++;
        if (st.step % o.log_every == 0 || st.step == total) {
            tool_check(mpt_trainer_report(r.trainer, &report), "reading the step's figures");
            size_t n = device_stats(r.trainer, devices, ndev);
            if (!isnan(report.device_busy)) {
                busy_epoch += report.device_busy * report.seconds;
                blas_epoch += report.blas_busy * report.seconds;
            }
            if (r.metrics)
                tool_check(mpt_metrics_step(r.metrics, &report, epoch + 1, devices, n),
                           "logging the step");
        }
        double t = tool_now();
        if (tty && (t - last_draw > 0.1 || st.step == total)) {
            /* the figures of the last report, at this step */
            mpt_step_report_t now = report;
            char line[512];
            now.step = st.step, now.loss = st.loss;
            mpt_progress_line(&now, epoch + 1, devices, ndev, line, sizeof line);
            fprintf(stderr, "\r%s\033[K", line);
            last_draw = t;
        }
        int epoch_end = bi + 1 == per_epoch, last = st.step == total;
        uint64_t next_epoch = epoch_end ? epoch + 1 : epoch, next_batch = epoch_end ? 0 : bi + 1;
        int saved = o.checkpoint_every && st.step % o.checkpoint_every == 0;
        if (saved)
            checkpoint(r.trainer, o.checkpoint_dir, next_epoch, next_batch);
        if (epoch_end || last || (o.eval_every && st.step % o.eval_every == 0)) {
            double test_loss, acc = evaluate(&r, st.step, epoch, &test_loss);
            if (tty)
                fprintf(stderr, "\r\033[K");
            if (epoch_end || last) {
                double secs = tool_now() - t_epoch;
                int resumed_here = st.step - epoch_steps == first_step && first_step > 0 &&
                                   first_step % per_epoch != 0;
                printf("epoch %" PRIu64 "%s: step %" PRIu64 ", train loss %.4f, %s loss %.4f, "
                       "%s accuracy %.4f, %.0f samples/s",
                       epoch + 1,
                       resumed_here ? " (resumed mid-epoch)" : epoch_end ? "" : " (partial)", st.step,
                       loss_sum / (double)epoch_steps, data.eval_name, test_loss, data.eval_name,
                       acc, (double)(epoch_steps * o.cfg.batch) / secs);
                if (context > 1)
                    printf(" (%.0f tokens/s)",
                           (double)(epoch_steps * o.cfg.batch * context) / secs);
                printf(", %.1f s", secs);
                if (o.timing)
                    printf(", device busy %.1f s (%.0f%%; BLAS %.0f%%)", busy_epoch,
                           100 * busy_epoch / secs, 100 * blas_epoch / secs);
                for (size_t i = 0; o.timing && i < ndev; i++) /* this rank's, last step */
                    if (!isnan(devices[i].busy))
                        printf("%s device %d %lu kernels + %lu BLAS calls", i ? "," : "; a step:",
                               devices[i].device, devices[i].kernels, devices[i].blas_calls);
                printf("\n");
                busy_epoch = 0, blas_epoch = 0;
                fflush(stdout);
                loss_sum = 0, epoch_steps = 0, t_epoch = tool_now();
            }
        }
        if (last && o.checkpoint_dir && !saved)
            checkpoint(r.trainer, o.checkpoint_dir, next_epoch, next_batch);
    }
    tool_check(mpt_metrics_close(r.metrics), "closing the metrics file");
    if (o.sample)
        sample_text(r.trainer, model, o.sample, o.prompt, o.temperature, o.top_k, o.cfg.seed,
                    stdout);
    if (o.trace) { /* each rank's own devices: FILE, then FILE.rank1... */
        char *json = NULL, trace[4096];
        FILE *f = NULL;
        if (rank == 0)
            snprintf(trace, sizeof trace, "%s", o.trace);
        else
            snprintf(trace, sizeof trace, "%s.rank%d", o.trace, rank);
        tool_check(mpt_trainer_trace_json(r.trainer, &json), "writing the trace");
        if (!(f = fopen(trace, "w")))
            tool_die("cannot write trace %s: %s", trace, strerror(errno));
        int bad = fputs(json, f) < 0;
        if (fclose(f) != 0 || bad)
            tool_die("cannot write trace %s: %s", trace, strerror(errno));
        free(json);
    }
    free(devices);
    mpt_trainer_free(r.trainer);
    mpt_plan_free(plan);
    mpt_cluster_free(cluster);
    mpt_topology_free(topo);
    mpt_devices_free(devs);
    train_data_free(&data);
    mpt_model_free(model);
    mpt_world_free(world);
    return TOOL_EXIT_OK;
}
