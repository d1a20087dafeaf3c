/*
 * mpt-plan: plans a model over the local devices or a cluster description:
 * which device runs which layers, with memory, compute, the bottleneck, the
 * pipeline bubble and the predicted step time, and every alternative it
 * considered.  Thin: parses arguments and calls the planning API.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: mpt-plan --model FILE [OPTION]...\n"
            "Decide which device runs which layers of a model: data-parallel replicas,\n"
            "pipeline stages and tensor-parallel groups sized by each device's measured\n"
            "speed and memory, with the predicted step time of a simulated step.\n"
            "\n"
            "  -m, --model FILE        model description (docs/model.md)\n"
            "  -c, --cluster FILE      plan for the devices of a cluster description\n"
            "                          (docs/cluster.md) instead of this machine's\n"
            "  -d, --devices SPEC      this machine's devices to plan for (MPT_DEVICES)\n"
            "  -b, --batch N           global batch size (128)\n"
            "      --optimizer NAME    sgd (default) or adamw: optimizer state memory\n"
            "      --device-memory SIZE  plan for at most SIZE bytes (64M, 1G) of each\n"
            "                          device (docs/memory.md)\n"
            "      --dp N              pin the data-parallel degree\n"
            "      --pp N              pin the number of pipeline stages\n"
            "      --tp N              pin the tensor-parallel group size\n"
            "      --microbatches N    pin the micro-batches per step\n"
            "      --schedule NAME     pin gpipe or 1f1b\n"
            "      --allreduce NAME    how replicas sum gradients: ring, hierarchical\n"
            "                          (inside each node, then across nodes) or auto\n"
            "                          (default: the faster by the cost model)\n"
            "      --json              print the plan as JSON (docs/plan.md)\n"
            "      --explain           list every configuration considered, with its\n"
            "                          predicted step time or why it was rejected\n"
            "      --all-devices       use every device (by default the planner leaves\n"
            "                          idle those predicted to slow the step, and says why)\n"
            "      --compare-uniform   also simulate the best uniform split (equal layers,\n"
            "                          equal batch per device) and print the speedup\n"
            "      --trace FILE        write the simulated step as a Chrome trace\n"
            "                          (open it in Perfetto or chrome://tracing)\n"
            "  -v, --verbose           log what the library does\n"
            "  -h, --help              show this help and exit\n"
            "  -V, --version           show the version and exit\n"
            "\n"
            "Local devices are profiled first (cached; see mpt-topo).\n"
            "Exit status: 0 on success, 1 on failure, 2 on a usage error.\n");
    tool_print_env(f);
}

/* The chosen plan against a baseline, in words that match the ratio:
 * "1.23x faster", "the same", "0.88x as fast (slower)". */
static const char *tool_ratio_words(double baseline, double chosen)
{
    static char buf[64];
    double r = chosen > 0 ? baseline / chosen : 0;
    if (r > 1.0005)
        snprintf(buf, sizeof buf, "%.2fx faster", r);
    else if (r >= 0.9995)
        snprintf(buf, sizeof buf, "the same");
    else
        snprintf(buf, sizeof buf, "%.2fx as fast (slower)", r);
    return buf;
}

/* The local machine as a cluster: devices, locality, (cached) profiles. */
static mpt_cluster_t *local_cluster(const char *spec)
{
    mpt_devices_t *set = NULL;
    mpt_topology_t *topo = NULL;
    tool_check(mpt_devices_open(spec, &set), "opening devices");
    mpt_cluster_t *c = tool_local_cluster(set, &topo);
    mpt_topology_free(topo);
    mpt_devices_free(set);
    return c;
}

int main(int argc, char **argv)
{
    enum { O_OPT = 256, O_DP, O_PP, O_TP, O_MB, O_SCHED, O_JSON, O_EXPLAIN, O_TRACE, O_UNIFORM,
           O_ALLREDUCE, O_ALL, O_DEVMEM };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'}, {"cluster", required_argument, NULL, 'c'},
        {"devices", required_argument, NULL, 'd'}, {"batch", required_argument, NULL, 'b'},
        {"device-memory", required_argument, NULL, O_DEVMEM},
        {"optimizer", required_argument, NULL, O_OPT}, {"dp", required_argument, NULL, O_DP},
        {"pp", required_argument, NULL, O_PP}, {"tp", required_argument, NULL, O_TP},
        {"microbatches", required_argument, NULL, O_MB},
        {"schedule", required_argument, NULL, O_SCHED}, {"json", no_argument, NULL, O_JSON},
        {"explain", no_argument, NULL, O_EXPLAIN}, {"trace", required_argument, NULL, O_TRACE},
        {"compare-uniform", no_argument, NULL, O_UNIFORM},
        {"all-devices", no_argument, NULL, O_ALL},
        {"allreduce", required_argument, NULL, O_ALLREDUCE},
        {"verbose", no_argument, NULL, 'v'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    uint64_t device_memory = 0; /* --device-memory: plan for at most this per device */
    const char *model_path = NULL, *cluster_path = NULL, *spec = NULL, *trace = NULL;
    int json = 0, explain = 0, verbose = 0, uniform = 0, c;
    mpt_plan_request_t req;

    tool_init("mpt-plan", 0);
    mpt_plan_request_default(&req);
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:c:d:b:vhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'c': cluster_path = optarg; break;
        case 'd': spec = optarg; break;
        case 'b': req.batch = (size_t)tool_parse_count("--batch", optarg, 1); break;
        case O_OPT:
            if (strcmp(optarg, "sgd") == 0)
                req.optimizer = MPT_OPTIM_SGD;
            else if (strcmp(optarg, "adamw") == 0)
                req.optimizer = MPT_OPTIM_ADAMW;
            else
                tool_usage_error("--optimizer must be sgd or adamw, got '%s'", optarg);
            break;
        case O_DP: req.dp = (size_t)tool_parse_count("--dp", optarg, 1); break;
        case O_DEVMEM: device_memory = tool_parse_size("--device-memory", optarg); break;
        case O_PP: req.pp = (size_t)tool_parse_count("--pp", optarg, 1); break;
        case O_TP: req.tp = (size_t)tool_parse_count("--tp", optarg, 1); break;
        case O_MB: req.microbatches = (size_t)tool_parse_count("--microbatches", optarg, 1); break;
        case O_ALLREDUCE: req.allreduce = tool_parse_allreduce(optarg); break;
        case O_SCHED:
            if (strcmp(optarg, "gpipe") == 0)
                req.schedule = MPT_PIPE_GPIPE;
            else if (strcmp(optarg, "1f1b") == 0)
                req.schedule = MPT_PIPE_1F1B;
            else
                tool_usage_error("--schedule must be gpipe or 1f1b, got '%s'", optarg);
            break;
        case O_JSON: json = 1; break;
        case O_EXPLAIN: explain = 1; break;
        case O_ALL: req.all_devices = 1; break;
        case O_TRACE: trace = optarg; break;
        case O_UNIFORM: uniform = 1; break;
        case 'v': verbose = 1; break;
        case 'h': usage(stdout); return TOOL_EXIT_OK;
        case 'V': printf("mpt-plan (mpt) %s\n", mpt_version()); return TOOL_EXIT_OK;
        case ':': tool_usage_error("option '%s' needs a value", argv[optind - 1]);
        default: tool_usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    const char *debug = getenv("MPT_PLAN_DEBUG");
    tool_init("mpt-plan", verbose || (debug && strcmp(debug, "1") == 0));
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (!model_path)
        tool_usage_error("--model FILE is required");
    if (cluster_path && spec)
        tool_usage_error("--cluster and --devices exclude each other");

    mpt_model_t *model = NULL;
    mpt_cluster_t *cluster = NULL;
    mpt_plan_t *plan = NULL;
    char *text = NULL;
    tool_check(mpt_model_load(model_path, &model), "loading the model");
    if (cluster_path)
        tool_check(mpt_cluster_load(cluster_path, &cluster), "loading the cluster description");
    else
        cluster = local_cluster(spec);
    for (size_t i = 0; device_memory && i < mpt_cluster_device_count(cluster); i++)
        tool_check(mpt_cluster_set_memory_limit(cluster, i, device_memory),
                   "capping device memory");
    tool_check(mpt_plan_create(model, cluster, &req, &plan), "planning");
    if (json) {
        tool_check(mpt_plan_to_json(plan, &text), "writing the plan");
        printf("%s\n", text);
    } else {
        tool_check(mpt_plan_describe(plan, model, cluster, explain, &text), "describing the plan");
        printf("%s: %s on %zu device(s) of %s\n", mpt_model_name(model), model_path,
               mpt_cluster_device_count(cluster), cluster_path ? cluster_path : "this machine");
        fputs(text, stdout);
    }
    free(text);
    if (uniform) {
        double base = 0, chosen = 0;
        tool_check(mpt_plan_uniform_step(model, cluster, &req, &base), "simulating uniform splits");
        tool_check(mpt_plan_simulate(plan, model, cluster, &chosen, NULL, NULL),
                   "simulating the plan");
        /* With --json, stdout stays one JSON document. */
        fprintf(json ? stderr : stdout,
                "Best uniform split: %.3f ms per step; this plan %.3f ms: %s\n",
                base * 1e3, chosen * 1e3, tool_ratio_words(base, chosen));
    }
    if (trace) {
        char *trace_json = NULL;
        FILE *f;
        tool_check(mpt_plan_simulate(plan, model, cluster, NULL, NULL, &trace_json),
                   "simulating the plan");
        if (!(f = fopen(trace, "w")) || fputs(trace_json, f) == EOF || fclose(f) != 0)
            tool_die("cannot write trace %s: %s", trace, strerror(errno));
        free(trace_json);
        if (!json)
            printf("Trace of the simulated step: %s\n", trace);
    }
    mpt_plan_free(plan);
    mpt_cluster_free(cluster);
    mpt_model_free(model);
    return TOOL_EXIT_OK;
}
