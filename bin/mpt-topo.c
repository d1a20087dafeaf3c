/*
 * mpt-topo: what a user needs to decide how to split a model: every OpenCL
 * device with its memory and compute units, where it sits in the machine
 * (NUMA node, cores, PCI address), the link class between each pair, and
 * the measured profile.  Also shows another machine's hwloc XML (--xml) or
 * a cluster description (--cluster).  Thin: parses arguments, calls libmpt.
 * --tune tunes CLBlast's GEMM kernels for the devices (lib/device/tuning.h):
 * the library times each candidate in a fresh process of this program
 * (--tune-measure, internal).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "device/tuning.h"
#include "tool.h"

/* Whether profiles can be cached in path (a plain file passes access()
 * for root, hence the directory check). */
static int writable_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode) && access(path, W_OK) == 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: mpt-topo [OPTION]...\n"
            "Show the OpenCL devices mpt would use, their place in the machine, the link\n"
            "class between each pair, and their measured profile (GEMM GFLOP/s, memory\n"
            "bandwidth, host transfers, launch latency; measured once, then cached).\n"
            "\n"
            "  -d, --devices SPEC   devices to show: indices (0,2), ranges (0-3) or words\n"
            "                       (gpu, cpu, nvidia, amd, intel, pocl); default all or\n"
            "                       $MPT_DEVICES\n"
            "      --json           print a cluster description (docs/cluster.md) as JSON\n"
            "      --no-profile     do not measure or read profiles (fast)\n"
            "      --reprofile      measure again even if a cached profile exists\n"
            "      --xml FILE       show the machine of an hwloc XML file (from lstopo\n"
            "                       --of xml on that machine) and its GPUs; opens no device\n"
            "      --cluster FILE   show a cluster description file; opens no device\n"
            "      --tune           tune CLBlast's GEMM kernels (Xgemm, XgemmDirect) for the\n"
            "                       devices with CLBlast's tuners (clblast-utils), time the\n"
            "                       candidates against CLBlast's defaults on mpt's GEMMs at\n"
            "                       the models' shapes, keep a routine's parameters only if\n"
            "                       they win, store them beside the profile; every later\n"
            "                       run applies them (MPT_CLBLAST_TUNING=off does not).\n"
            "                       Long (minutes to an hour): run it under nice -n 19\n"
            "      --tune-quick     --tune on small sizes and the four small MLP shapes\n"
            "      --tune-fraction F  the tuners explore one configuration in F (default\n"
            "                       4 for Xgemm, 1 for XgemmDirect; quick 100 and 20)\n"
            "      --tune-variants N  tuner variations to finish: 1 = CLBlast's fixed set\n"
            "                       (default), up to 4 adds random searches of larger sets\n"
            "      --tune-rounds N  samples of each candidate and the defaults, alternating\n"
            "                       (default 5, quick 3)\n"
            "      --tune-measure ARM  internal: time one candidate (used by --tune)\n"
            "  -v, --verbose        log what the library does\n"
            "  -h, --help           show this help and exit\n"
            "  -V, --version        show the version and exit\n"
            "\n"
            "Exit status: 0 on success, 1 on failure, 2 on a usage error.\n");
    tool_print_env(f);
}

static const char *type_word(mpt_device_type_t t)
{
    switch (t) {
    case MPT_DEVICE_CPU: return "cpu";
    case MPT_DEVICE_GPU: return "gpu";
    case MPT_DEVICE_ACCELERATOR: return "accel";
    default: return "other";
    }
}

static double gib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0 * 1024.0);
}

/* "-" stands for "several or unknown" (a device spanning NUMA nodes). */
static void int_or_dash(char *buf, size_t size, int v)
{
    if (v >= 0)
        snprintf(buf, size, "%d", v);
    else
        snprintf(buf, size, "-");
}

/* "default" for CLBlast's built-in parameters, the tuned routines, or "-"
 * where CLBlast runs no GEMM (host provider, cluster file). */
static const char *tuning_word(const mpt_device_info_t *d)
{
    return !d->clblast_tuning ? "-" : *d->clblast_tuning ? d->clblast_tuning : "default";
}

static void print_cluster(const mpt_cluster_t *c, int profiled)
{
    size_t n = mpt_cluster_device_count(c);
    printf("\nDevices\n  %-3s %-6s %-6s %-34s %9s %9s %5s %6s  %-7s %-17s %s\n", "#", "driver",
           "type", "name", "memory", "max-alloc", "CUs", "MHz", "GEMM", "CLBlast tuning", "PCI");
    for (size_t i = 0; i < n; i++) {
        const mpt_device_info_t *d = &mpt_cluster_device(c, i)->info;
        printf("  %-3d %-6s %-6s %-34.34s %5.1f GiB %5.1f GiB %5u %6u  %-7s %-17s %s\n",
               d->index, d->vendor_word, type_word(d->type), d->name, gib(d->global_mem_bytes),
               gib(d->max_alloc_bytes), d->compute_units, d->clock_mhz,
               d->gemm_provider ? d->gemm_provider : "-", tuning_word(d),
               *d->pci_address ? d->pci_address : "-");
    }
    printf("\nLocality\n  %-3s %-5s %-6s %-8s %5s %5s  %-16s %s\n", "#", "node", "NUMA", "package",
           "cores", "PUs", "cpus", "osdev");
    for (size_t i = 0; i < n; i++) {
        const mpt_cluster_device_t *d = mpt_cluster_device(c, i);
        const mpt_locality_t *l = &d->locality;
        char numa[12], package[12];
        int_or_dash(numa, sizeof numa, l->numa_node);
        int_or_dash(package, sizeof package, l->package);
        printf("  %-3d %-5d %-6s %-8s %5u %5u  %-16s %s\n", d->info.index, l->node, numa, package,
               l->cores, l->pus, *l->cpus ? l->cpus : "-", *l->osdev ? l->osdev : "-");
    }
    printf("\nLinks\n  %-3s", "");
    for (size_t j = 0; j < n; j++)
        printf(" %-13d", mpt_cluster_device(c, j)->info.index);
    printf("\n");
    for (size_t i = 0; i < n; i++) {
        printf("  %-3d", mpt_cluster_device(c, i)->info.index);
        for (size_t j = 0; j < n; j++)
            printf(" %-13s", mpt_link_class_name(mpt_cluster_link(c, i, j)));
        printf("\n");
    }
    if (!profiled)
        return;
    printf("\nProfile\n  %-3s %-30s %8s %9s %8s %8s %9s\n", "#", "SGEMM GFLOP/s at m,n,k",
           "best", "copy GB/s", "H2D GB/s", "D2H GB/s", "launch us");
    for (size_t i = 0; i < n; i++) {
        const mpt_cluster_device_t *d = mpt_cluster_device(c, i);
        const mpt_profile_t *p = &d->profile;
        char points[128] = "", *w = points;
        for (int k = 0; k < MPT_PROFILE_GEMM_SHAPES && p->gemm[k].m; k++)
            w += snprintf(w, sizeof points - (size_t)(w - points), "%s%.1f", k ? " / " : "",
                          p->gemm[k].gflops);
        printf("  %-3d %-30s %8.1f %9.2f %8.2f %8.2f %9.1f\n", d->info.index, points,
               p->gemm_gflops, p->mem_gbps, p->h2d_gbps, p->d2h_gbps, p->launch_us);
    }
    const mpt_profile_t *p0 = &mpt_cluster_device(c, 0)->profile;
    if (p0->gemm[0].m)
        printf("  GEMM shapes (m,n,k): %u,%u,%u / %u,%u,%u / %u,%u,%u / %u,%u,%u\n",
               p0->gemm[0].m, p0->gemm[0].n, p0->gemm[0].k, p0->gemm[1].m, p0->gemm[1].n,
               p0->gemm[1].k, p0->gemm[2].m, p0->gemm[2].n, p0->gemm[2].k, p0->gemm[3].m,
               p0->gemm[3].n, p0->gemm[3].k);
}

static void print_topology_header(const mpt_topology_t *topo, const char *source)
{
    unsigned packages, numa, cores, pus;
    mpt_topology_counts(topo, &packages, &numa, &cores, &pus);
    printf("Machine (%s): %u package(s), %u NUMA node(s), %u core(s), %u PU(s)\n", source,
           packages, numa, cores, pus);
}

/* --xml: another machine, no OpenCL: its GPUs by PCI address. */
static int show_xml(const char *path, int json)
{
    mpt_topology_t *topo = NULL;
    tool_check(mpt_topology_load(path, &topo), "loading the topology");
    size_t n = mpt_topology_gpu_count(topo);
    mpt_locality_t *locs = calloc(n ? n : 1, sizeof *locs);
    if (!locs)
        tool_die("out of memory");
    for (size_t i = 0; i < n; i++)
        tool_check(mpt_topology_gpu(topo, i, &locs[i]), "locating a GPU");
    if (json) {
        unsigned packages, numa, cores, pus;
        json_t *gpus = json_array(), *links = json_array();
        mpt_topology_counts(topo, &packages, &numa, &cores, &pus);
        for (size_t i = 0; i < n; i++)
            json_array_append_new(gpus, json_pack("{s:I,s:s,s:s,s:i,s:i,s:s}", "index",
                                                  (json_int_t)i, "pci_address",
                                                  locs[i].pci_address, "osdev", locs[i].osdev,
                                                  "numa_node", locs[i].numa_node, "package",
                                                  locs[i].package, "cpus", locs[i].cpus));
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++)
                json_array_append_new(
                    links, json_pack("{s:I,s:I,s:s}", "a", (json_int_t)i, "b", (json_int_t)j,
                                     "class",
                                     mpt_link_class_name(mpt_topology_link(topo, &locs[i], &locs[j]))));
        json_t *root = json_pack("{s:s,s:i,s:i,s:i,s:i,s:o,s:o}", "topology_xml", path, "packages",
                                 (int)packages, "numa_nodes", (int)numa, "cores", (int)cores, "pus",
                                 (int)pus, "gpus", gpus, "links", links);
        char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        if (!text)
            tool_die("out of memory writing JSON");
        printf("%s\n", text);
        free(text);
        json_decref(root);
    } else {
        print_topology_header(topo, path);
        printf("\nGPUs\n  %-3s %-14s %-12s %-6s %-8s %s\n", "#", "PCI", "osdev", "NUMA", "package",
               "cpus");
        for (size_t i = 0; i < n; i++)
            printf("  %-3zu %-14s %-12s %-6d %-8d %s\n", i, locs[i].pci_address,
                   *locs[i].osdev ? locs[i].osdev : "-", locs[i].numa_node, locs[i].package,
                   locs[i].cpus);
        printf("\nLinks\n  %-3s", "");
        for (size_t j = 0; j < n; j++)
            printf(" %-13zu", j);
        printf("\n");
        for (size_t i = 0; i < n; i++) {
            printf("  %-3zu", i);
            for (size_t j = 0; j < n; j++)
                printf(" %-13s", mpt_link_class_name(mpt_topology_link(topo, &locs[i], &locs[j])));
            printf("\n");
        }
    }
    free(locs);
    mpt_topology_free(topo);
    return TOOL_EXIT_OK;
}

static void print_json(const mpt_cluster_t *c)
{
    char *text = NULL;
    tool_check(mpt_cluster_to_json(c, &text), "writing JSON");
    printf("%s\n", text);
    free(text);
}

static int show_cluster(const char *path, int json)
{
    mpt_cluster_t *c = NULL;
    double gbps, lat;
    tool_check(mpt_cluster_load(path, &c), "loading the cluster description");
    if (json) {
        print_json(c);
    } else {
        mpt_cluster_network(c, &gbps, &lat);
        printf("Cluster %s (%s): %zu node(s), %zu device(s); network %.2f GB/s, %.1f us\n",
               mpt_cluster_name(c), path, mpt_cluster_node_count(c), mpt_cluster_device_count(c),
               gbps, lat);
        print_cluster(c, 1);
    }
    mpt_cluster_free(c);
    return TOOL_EXIT_OK;
}

static void tune_progress(void *ctx, const char *line)
{
    (void)ctx;
    if (tool_stderr_is_tty())
        fprintf(stderr, "\r\033[K%s", line);
}

/* --tune: every selected device in turn (tuners and timings use the whole
 * machine: one device at a time).  Scratch files (tuner JSON and logs, one
 * file per timed candidate) stay in the cache directory for inspection. */
static void tune_devices(const char *spec, mpt__tuning_opts_t *o, FILE *out)
{
    mpt_devices_t *set = NULL;
    char dir[4096], work[4200];
    tool_check(mpt_devices_open(spec, &set), "opening devices");
    tool_check(mpt_profile_cache_dir(dir, sizeof dir), "finding the cache directory");
    for (size_t i = 0; i < mpt_devices_count(set); i++) {
        mpt_device_t *dev = mpt_devices_get(set, i);
        const mpt_device_info_t *info = mpt_device_info(dev);
        json_t *res = NULL, *r;
        const char *name;
        snprintf(work, sizeof work, "%s/tune-%d", dir, info->index);
        tool_check(mpt__mkdir_p(work), "creating the tuning directory");
        o->workdir = work;
        tool_check(mpt__tuning_tune(dev, o, &res), "tuning CLBlast");
        if (tool_stderr_is_tty())
            fprintf(stderr, "\r\033[K");
        fprintf(out, "CLBlast tuning of device %d (%s)%s, %d round(s), scratch in %s\n",
                info->index,
               info->name, o->quick ? ", quick" : "", o->rounds, work);
        json_object_foreach(json_object_get(res, "routines"), name, r) {
            double d = json_number_value(json_object_get(r, "default_ms")),
                   t = json_number_value(json_object_get(r, "tuned_ms"));
            fprintf(out, "  %-12s %s: %.2f ms with CLBlast's defaults, %.2f ms tuned (%.2fx, "
                    "won %lld of %lld rounds) over %zu shape(s), best of %s\n", name,
                    json_is_true(json_object_get(r, "kept")) ? "kept     " : "not kept ", d, t,
                    t > 0 ? d / t : 0,
                    (long long)json_integer_value(json_object_get(r, "rounds_won")),
                    (long long)json_integer_value(json_object_get(r, "rounds")),
                    json_array_size(json_object_get(r, "shapes")),
                    json_string_value(json_object_get(r, "tuner_result")));
        }
        json_decref(res);
    }
    mpt_devices_free(set);
}

/* --tune-measure ARM: one sample for tune_devices' library call. */
static int tune_measure(const char *spec, const char *arm)
{
    mpt_devices_t *set = NULL;
    char out[4200];
    snprintf(out, sizeof out, "%s.out", arm);
    tool_check(mpt_devices_open(spec, &set), "opening the device");
    if (mpt_devices_count(set) != 1)
        tool_die("--tune-measure needs exactly one device");
    tool_check(mpt__tuning_measure_arm(mpt_devices_get(set, 0), arm, out), "timing a candidate");
    mpt_devices_free(set);
    return TOOL_EXIT_OK;
}

static int show_live(const char *spec, int json, int profile, int reprofile)
{
    mpt_devices_t *set = NULL;
    mpt_topology_t *topo = NULL;
    mpt_cluster_t *c = NULL;
    mpt_profile_t *profiles = NULL;
    int cached_all = 1;

    tool_check(mpt_devices_open(spec, &set), "opening devices");
    tool_check(mpt_topology_load(NULL, &topo), "loading the topology");
    size_t n = mpt_devices_count(set);
    if (profile) {
        if (!(profiles = calloc(n, sizeof *profiles)))
            tool_die("out of memory");
        for (size_t i = 0; i < n; i++) {
            mpt_device_t *dev = mpt_devices_get(set, i);
            int cached = 0;
            if (tool_stderr_is_tty())
                fprintf(stderr, "\rprofiling device %d (%s)...", mpt_device_info(dev)->index,
                        mpt_device_info(dev)->name);
            tool_check(mpt_profile_get(dev, reprofile ? MPT_PROFILE_REFRESH : MPT_PROFILE_USE_CACHE,
                                       &profiles[i], &cached),
                       "profiling");
            cached_all &= cached;
        }
        if (tool_stderr_is_tty())
            fprintf(stderr, "\r\033[K");
    }
    tool_check(mpt_cluster_from_devices(set, topo, profiles, &c), "describing the devices");
    if (json) {
        print_json(c);
    } else {
        char dir[4096] = "";
        const char *xml = getenv("MPT_TOPOLOGY_XML");
        print_topology_header(topo, xml && *xml ? xml : "live");
        printf("%zu of %zu OpenCL device(s) selected (MPT_DEVICES or --devices)\n", n,
               mpt_devices_total(set));
        print_cluster(c, profile);
        /* An unwritable cache was warned about while profiling; the
         * summary must not claim the opposite. */
        if (profile && mpt_profile_cache_dir(dir, sizeof dir) == MPT_OK)
            printf("  %s %s; --reprofile measures again\n",
                   cached_all                 ? "read from the cache in"
                   : writable_dir(dir)         ? "measured now, cached in"
                                              : "measured now, not cached (not writable):",
                   dir);
    }
    mpt_cluster_free(c);
    free(profiles);
    mpt_topology_free(topo);
    mpt_devices_free(set);
    return TOOL_EXIT_OK;
}

int main(int argc, char **argv)
{
    enum { OPT_JSON = 256, OPT_NO_PROFILE, OPT_REPROFILE, OPT_XML, OPT_CLUSTER, OPT_TUNE,
           OPT_TUNE_QUICK, OPT_TUNE_FRACTION, OPT_TUNE_VARIANTS, OPT_TUNE_ROUNDS,
           OPT_TUNE_MEASURE };
    static const struct option options[] = {
        {"devices", required_argument, NULL, 'd'},
        {"json", no_argument, NULL, OPT_JSON},
        {"no-profile", no_argument, NULL, OPT_NO_PROFILE},
        {"reprofile", no_argument, NULL, OPT_REPROFILE},
        {"xml", required_argument, NULL, OPT_XML},
        {"cluster", required_argument, NULL, OPT_CLUSTER},
        {"tune", no_argument, NULL, OPT_TUNE},
        {"tune-quick", no_argument, NULL, OPT_TUNE_QUICK},
        {"tune-fraction", required_argument, NULL, OPT_TUNE_FRACTION},
        {"tune-variants", required_argument, NULL, OPT_TUNE_VARIANTS},
        {"tune-rounds", required_argument, NULL, OPT_TUNE_ROUNDS},
        {"tune-measure", required_argument, NULL, OPT_TUNE_MEASURE},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    const char *spec = NULL, *xml = NULL, *cluster = NULL, *measure = NULL;
    int json = 0, profile = 1, reprofile = 0, verbose = 0, tune = 0, rounds = 0, c;
    mpt__tuning_opts_t topts = {.fraction = 0, .variants = 1, .min_ms = 20, .margin = 0.02,
                                .self = "/proc/self/exe", .progress = tune_progress};

    tool_init("mpt-topo", 0); /* names the tool in usage errors */
    opterr = 0;               /* one message of ours, not getopt's too */
    while ((c = getopt_long(argc, argv, ":d:vhV", options, NULL)) != -1) {
        switch (c) {
        case 'd': spec = optarg; break;
        case OPT_JSON: json = 1; break;
        case OPT_NO_PROFILE: profile = 0; break;
        case OPT_REPROFILE: reprofile = 1; break;
        case OPT_XML: xml = optarg; break;
        case OPT_CLUSTER: cluster = optarg; break;
        case OPT_TUNE: tune = 1; break;
        case OPT_TUNE_QUICK: tune = 1, topts.quick = 1; break;
        case OPT_TUNE_FRACTION:
            tune = 1, topts.fraction = tool_parse_real("--tune-fraction", optarg);
            if (!(topts.fraction >= 1))
                tool_usage_error("--tune-fraction must be at least 1");
            break;
        case OPT_TUNE_VARIANTS:
            tune = 1, topts.variants = (int)tool_parse_count("--tune-variants", optarg, 1);
            if (topts.variants > 4)
                tool_usage_error("--tune-variants is at most 4");
            break;
        case OPT_TUNE_ROUNDS:
            tune = 1, rounds = (int)tool_parse_count("--tune-rounds", optarg, 1);
            if (rounds > 64)
                tool_usage_error("--tune-rounds is at most 64");
            break;
        case OPT_TUNE_MEASURE: measure = optarg; break;
        case 'v': verbose = 1; break;
        case 'h': usage(stdout); return TOOL_EXIT_OK;
        case 'V': printf("mpt-topo (mpt) %s\n", mpt_version()); return TOOL_EXIT_OK;
        case ':': tool_usage_error("option '%s' needs a value", argv[optind - 1]);
        default: tool_usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    tool_init("mpt-topo", verbose);
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (xml && cluster)
        tool_usage_error("--xml and --cluster exclude each other");
    if (!profile && reprofile)
        tool_usage_error("--no-profile and --reprofile exclude each other");
    if (measure)
        return tune_measure(spec, measure);
    if (tune && (xml || cluster))
        tool_usage_error("--tune needs live devices, not --xml or --cluster");
    if (tune) {
        topts.rounds = rounds ? rounds : topts.quick ? 3 : 5;
        /* the summary goes to stderr under --json: stdout stays one document */
        tune_devices(spec, &topts, json ? stderr : stdout);
        if (!profile && !json)
            return TOOL_EXIT_OK;
        if (!json)
            printf("\n");
    }
    if (xml)
        return show_xml(xml, json);
    if (cluster)
        return show_cluster(cluster, json);
    return show_live(spec, json, profile, reprofile);
}
