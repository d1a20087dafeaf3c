/*
 * mpt-bench plan: the planner's two targets.
 *
 *   1. Planning time: a deep MLP (--layers, default 96: linear 4096 + ReLU
 *      pairs, a 1000-way head) on a cluster of --devices devices (default
 *      1,024), made by repeating the first node of a template cluster
 *      (default models/clusters/cluster-4x8.json, 8 mixed GPUs a node) with
 *      its links.  The median of --repeat runs of mpt_plan_create, against
 *      the 1 s target.
 *   2. Plan quality: on every shipped cluster (or the --cluster files), the
 *      simulated step of the chosen plan against the best uniform split
 *      (equal layers per stage, equal batch per replica, equal tensor
 *      fractions, the same shapes, every device) and against the best
 *      plan on a proper subset of the devices (the planner's own
 *      alternatives), for that deep MLP and the shipped models.  The
 *      cluster files and models come from the installed data directory
 *      when there is one (tool_data_path).
 *
 * The generated model and cluster are written to a temporary directory and
 * loaded like any user's files.
 */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <math.h>

#include <jansson.h>

#include "bench.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: mpt-bench plan [OPTION]...\n"
            "Time the planner on a large model and cluster, and compare each planned\n"
            "step with the best uniform split of the same devices.\n"
            "\n"
            "      --layers N      layers of the generated MLP (96)\n"
            "      --devices N     devices of the generated cluster (1024), a multiple of\n"
            "                      the template's first node\n"
            "      --template FILE cluster whose first node is repeated\n"
            "                      (models/clusters/cluster-4x8.json)\n"
            "      --batch N       batch of the timing run (1024)\n"
            "      --repeat N      timing runs; the median is reported (3)\n"
            "      --cluster FILE  compare on this cluster (repeatable; default: the\n"
            "                      shipped models/clusters/*.json)\n"
            "      --no-compare    only the timing\n"
            "  -h, --help          show this help and exit\n");
}

static void save_json(json_t *value, const char *path)
{
    if (!value || json_dump_file(value, path, JSON_COMPACT) != 0)
        tool_die("cannot write %s", path);
    json_decref(value);
}

/* An MLP of `layers` layers: linear 4096 + ReLU pairs, then linear 1000 and
 * the loss (so `layers` must be even, at least 2). */
static void write_mlp(const char *path, size_t layers)
{
    json_t *list = json_array();
    for (size_t i = 0; i + 2 < layers; i += 2) {
        json_array_append_new(list, json_pack("{s:s, s:i}", "kind", "linear", "units", 4096));
        json_array_append_new(list, json_pack("{s:s}", "kind", "relu"));
    }
    json_array_append_new(list, json_pack("{s:s, s:i}", "kind", "linear", "units", 1000));
    json_array_append_new(list, json_pack("{s:s}", "kind", "softmax_cross_entropy"));
    char name[64];
    snprintf(name, sizeof name, "mlp-%zu", layers);
    save_json(json_pack("{s:s, s:[i], s:o}", "name", name, "input", 4096, "layers", list), path);
}

/* The template's node 0 (its devices and the links among them) repeated
 * until `devices` devices; returns the node count. */
static size_t write_cluster(const char *template_path, const char *path, size_t devices,
                            size_t *per_node_out)
{
    json_error_t err;
    json_t *t = json_load_file(template_path, 0, &err);
    if (!t)
        tool_die("%s:%d: %s", template_path, err.line, err.text);
    json_t *devs = json_object_get(t, "devices"), *links = json_object_get(t, "links");
    size_t per_node = 0, i;
    json_t *d, *l;
    json_array_foreach(devs, i, d)
        if (json_integer_value(json_object_get(d, "node")) == 0)
            per_node = i + 1; /* node 0's devices come first in a cluster file */
    if (per_node == 0 || devices % per_node)
        tool_usage_error("--devices %zu is not a multiple of the %zu devices of %s's first node",
                         devices, per_node, template_path);
    size_t nodes = devices / per_node;
    json_t *new_devs = json_array(), *new_links = json_array(), *new_nodes = json_array();
    for (size_t n = 0; n < nodes; n++) {
        char nm[32];
        snprintf(nm, sizeof nm, "node%zu", n);
        json_array_append_new(new_nodes, json_pack("{s:s}", "name", nm));
        for (size_t k = 0; k < per_node; k++) {
            json_t *copy = json_deep_copy(json_array_get(devs, k));
            json_object_set_new(copy, "node", json_integer((json_int_t)n));
            json_array_append_new(new_devs, copy);
        }
        json_array_foreach(links, i, l) {
            json_int_t a = json_integer_value(json_object_get(l, "a")),
                       b = json_integer_value(json_object_get(l, "b"));
            if (a < (json_int_t)per_node && b < (json_int_t)per_node)
                json_array_append_new(
                    new_links, json_pack("{s:I, s:I, s:O}", "a", (json_int_t)(n * per_node) + a,
                                         "b", (json_int_t)(n * per_node) + b, "class",
                                         json_object_get(l, "class")));
        }
    }
    char name[64];
    snprintf(name, sizeof name, "%s-x%zu", json_string_value(json_object_get(t, "name")), nodes);
    json_object_set_new(t, "name", json_string(name));
    json_object_set_new(t, "devices", new_devs);
    json_object_set_new(t, "nodes", new_nodes);
    json_object_set_new(t, "links", new_links);
    save_json(t, path);
    *per_node_out = per_node;
    return nodes;
}

/* The fastest simulated alternative of the plan that uses a proper subset
 * of the devices (the planner names them " on device(s) ..."), or -1. */
static double best_subset(const json_t *plan)
{
    double best = -1;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(plan, "alternatives"), i, a) {
        const char *d = json_string_value(json_object_get(a, "description"));
        json_t *step = json_object_get(a, "predicted_step_s");
        if (d && strstr(d, " on device") && json_is_number(step) &&
            (best < 0 || json_number_value(step) < best))
            best = json_number_value(step);
    }
    return best;
}

/* "1.23x faster", "1.00x (the same)" or "0.88x (slower)": baseline time
 * over the chosen plan's time, so above 1 the chosen plan wins. */
static const char *ratio(double baseline, double chosen, char *buf, size_t size)
{
    if (!(baseline > 0) || !(chosen > 0))
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.2fx", baseline / chosen);
    return buf;
}

/* One comparison row: the chosen plan against the best uniform split of
 * every device and the best plan on a proper subset of them, all by the
 * planner's own prediction. */
static void compare(const char *model_path, const char *cluster_path, size_t batch,
                    double *worst)
{
    mpt_model_t *m = NULL;
    mpt_cluster_t *c = NULL;
    mpt_plan_t *plan = NULL;
    mpt_plan_request_t req;
    double planned = 0, uniform = 0, bubble = 0;
    tool_check(mpt_model_load(model_path, &m), model_path);
    tool_check(mpt_cluster_load(cluster_path, &c), cluster_path);
    mpt_plan_request_default(&req);
    req.batch = batch;
    tool_check(mpt_plan_create(m, c, &req, &plan), "planning");
    tool_check(mpt_plan_simulate(plan, m, c, &planned, &bubble, NULL), "simulating");
    if (mpt_plan_uniform_step(m, c, &req, &uniform) < 0)
        uniform = -1; /* no uniform split fits: shown as "-" */
    char *text = NULL, shape[96] = "?", r1[32], r2[32];
    tool_check(mpt_plan_to_json(plan, &text), "plan JSON");
    json_t *j = json_loads(text, 0, NULL);
    double subset = j ? best_subset(j) : -1;
    size_t used = 0, r, s, g;
    json_t *rep, *st, *dv;
    if (j) {
        json_array_foreach(json_object_get(j, "replicas"), r, rep)
            json_array_foreach(json_object_get(rep, "stages"), s, st)
                json_array_foreach(json_object_get(st, "devices"), g, dv) used++;
        snprintf(shape, sizeof shape, "dp=%d pp=%d tp=%d m=%d %s, %zu/%zu dev",
                 (int)json_integer_value(json_object_get(j, "dp")),
                 (int)json_integer_value(json_object_get(j, "pp")),
                 (int)json_integer_value(json_object_get(j, "tp")),
                 (int)json_integer_value(json_object_get(j, "microbatches")),
                 json_string_value(json_object_get(j, "schedule")), used,
                 mpt_cluster_device_count(c));
    }
    char u[32] = "-", sb[32] = "-"; /* none fits / every subset pruned by its bound */
    if (uniform > 0)
        snprintf(u, sizeof u, "%.3f", uniform * 1e3);
    if (subset > 0)
        snprintf(sb, sizeof sb, "%.3f", subset * 1e3);
    printf("%-18s %-12s %5zu  %-38s %9.3f %9s %9s  %8s %8s\n", mpt_cluster_name(c),
           mpt_model_name(m), batch, shape, planned * 1e3, u, sb,
           ratio(uniform, planned, r1, sizeof r1), ratio(subset, planned, r2, sizeof r2));
    if (uniform > 0 && uniform / planned < *worst)
        *worst = uniform / planned;
    if (subset > 0 && subset / planned < *worst)
        *worst = subset / planned;
    json_decref(j);
    free(text);
    mpt_plan_free(plan);
    mpt_cluster_free(c);
    mpt_model_free(m);
}

int bench_plan_main(int argc, char **argv)
{
    enum { O_LAYERS = 256, O_DEVICES, O_TEMPLATE, O_BATCH, O_REPEAT, O_CLUSTER, O_NO_COMPARE };
    static const struct option longopts[] = {
        {"layers", required_argument, NULL, O_LAYERS},
        {"devices", required_argument, NULL, O_DEVICES},
        {"template", required_argument, NULL, O_TEMPLATE},
        {"batch", required_argument, NULL, O_BATCH},
        {"repeat", required_argument, NULL, O_REPEAT},
        {"cluster", required_argument, NULL, O_CLUSTER},
        {"no-compare", no_argument, NULL, O_NO_COMPARE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    size_t layers = 96, devices = 1024, batch = 1024, repeat = 3, nclusters = 0;
    const char *clusters[32];
    char template_path[4096];
    int do_compare = 1, opt;
    snprintf(template_path, sizeof template_path, "%s",
             tool_data_path("models/clusters/cluster-4x8.json"));
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case O_LAYERS: layers = (size_t)tool_parse_count("--layers", optarg, 2); break;
        case O_DEVICES: devices = (size_t)tool_parse_count("--devices", optarg, 1); break;
        case O_TEMPLATE: snprintf(template_path, sizeof template_path, "%s", optarg); break;
        case O_BATCH: batch = (size_t)tool_parse_count("--batch", optarg, 1); break;
        case O_REPEAT: repeat = (size_t)tool_parse_count("--repeat", optarg, 1); break;
        case O_CLUSTER:
            if (nclusters == sizeof clusters / sizeof *clusters)
                tool_usage_error("at most %zu --cluster files", nclusters);
            clusters[nclusters++] = optarg;
            break;
        case O_NO_COMPARE: do_compare = 0; break;
        case 'h': usage(stdout); return TOOL_EXIT_OK;
        default: tool_usage_error("see --help");
        }
    }
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (layers % 2)
        tool_usage_error("--layers must be even (linear + ReLU pairs), got %zu", layers);
    if (repeat > 101)
        tool_usage_error("--repeat at most 101, got %zu", repeat);

    char dir[] = "/tmp/mpt-bench-plan-XXXXXX", model_path[64], cluster_path[64];
    if (!mkdtemp(dir))
        tool_die("cannot create a temporary directory");
    snprintf(model_path, sizeof model_path, "%s/mlp.json", dir);
    snprintf(cluster_path, sizeof cluster_path, "%s/cluster.json", dir);
    write_mlp(model_path, layers);
    size_t per_node = 0, nodes = write_cluster(template_path, cluster_path, devices, &per_node);

    /* 1. Planning time. */
    mpt_model_t *m = NULL;
    mpt_cluster_t *c = NULL;
    double times[101];
    mpt_plan_request_t req;
    tool_check(mpt_model_load(model_path, &m), model_path);
    tool_check(mpt_cluster_load(cluster_path, &c), "the generated cluster");
    mpt_plan_request_default(&req);
    req.batch = batch;
    double step = 0;
    for (size_t r = 0; r < repeat; r++) {
        mpt_plan_t *plan = NULL;
        double t0 = tool_now();
        tool_check(mpt_plan_create(m, c, &req, &plan), "planning");
        times[r] = tool_now() - t0;
        tool_check(mpt_plan_simulate(plan, m, c, &step, NULL, NULL), "simulating");
        mpt_plan_free(plan);
    }
    double median = bench_median(times, repeat);
    printf("planning %zu layers on %zu devices (%zu nodes x %zu, from %s), batch %zu:\n"
           "  mpt_plan_create median %.3f s of %zu (min %.3f, max %.3f); target 1 s: %.2fx "
           "%s; predicted step %.3f ms\n",
           layers, devices, nodes, per_node, template_path, batch, median, repeat, times[0],
           times[repeat - 1], median > 0 ? (median < 1 ? 1 / median : median) : 0,
           median < 1 ? "under" : "OVER", step * 1e3);
    printf("  (a 2-core machine shared with other work: times vary run to run)\n");
    mpt_cluster_free(c);
    mpt_model_free(m);
    fflush(stdout);

    /* 2. Planned against uniform on each cluster. */
    if (do_compare) {
        static const char *shipped[] = {"models/clusters/node-2nvidia-2amd.json",
                                         "models/clusters/cluster-4x8.json",
                                         "models/clusters/node-gpus-cpu.json"};
        char shipped_paths[3][4096];
        if (nclusters == 0)
            for (size_t i = 0; i < 3; i++) {
                snprintf(shipped_paths[i], sizeof shipped_paths[i], "%s",
                         tool_data_path(shipped[i]));
                clusters[nclusters++] = shipped_paths[i];
            }
        char mlp_fashion[4096], cnn_fashion[4096];
        snprintf(mlp_fashion, sizeof mlp_fashion, "%s", tool_data_path("models/mlp-fashion.json"));
        snprintf(cnn_fashion, sizeof cnn_fashion, "%s", tool_data_path("models/cnn-fashion.json"));
        char gpt_micro[4096];
        snprintf(gpt_micro, sizeof gpt_micro, "%s", tool_data_path("models/gpt-micro.json"));
        double worst = HUGE_VAL;
        printf("\npredicted step (ms) of the chosen plan, the best uniform split of every\n"
               "device and the best plan on a proper subset of them; the ratios are the\n"
               "other's time over the chosen plan's (above 1: the chosen plan is faster):\n"
               "%-18s %-12s %5s  %-38s %9s %9s %9s  %8s %8s\n",
               "cluster", "model", "batch", "chosen plan", "chosen", "uniform", "subset",
               "vs unif", "vs subs");
        for (size_t i = 0; i < nclusters; i++) {
            compare(model_path, clusters[i], 512, &worst);
            compare(mlp_fashion, clusters[i], 128, &worst);
            compare(cnn_fashion, clusters[i], 128, &worst);
            compare(gpt_micro, clusters[i], 64, &worst);
            fflush(stdout);
        }
        if (worst < HUGE_VAL)
            printf("lowest ratio: %.2fx (target: at least 1.00x on every row)\n", worst);
    }
    unlink(model_path);
    unlink(cluster_path);
    rmdir(dir);
    return TOOL_EXIT_OK;
}
