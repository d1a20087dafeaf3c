/*
 * profile/cluster.c: a cluster description (docs/cluster.md): devices that
 * may not be here, with their identity, locality, profile and the links
 * between them, read from JSON or taken from the live machine's opened
 * devices (mpt_cluster_local adds their cached profiles).  The link
 * matrix is computed once, at load, so that the planner only looks it up.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include <libgen.h>
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device/device.h"
#include "profile/profile.h"

#define DEFAULT_NET_GBPS 12.5     /* 100 Gb/s Ethernet or InfiniBand EDR */
#define DEFAULT_NET_LATENCY_US 5.0
/* Physical bounds of what a file may claim: 1 PiB of memory (no device has
 * it), and 2^24 of anything counted (compute units, MHz, cores, NUMA
 * nodes), far beyond any machine and within an int. */
#define MAX_BYTES (1ll << 50)
#define MAX_COUNT (1ll << 24)

enum { S_VENDOR, S_NAME, S_PLATFORM, S_DEVICE_VERSION, S_DRIVER_VERSION, S_PCI, S_COUNT };

struct mpt_cluster {
    char *name;
    double net_gbps, net_latency_us;
    size_t node_count;
    char **node_names;
    char **node_xml; /* topology XML path as written in the file, or NULL */
    size_t count;
    mpt_cluster_device_t *devices;
    char *(*strings)[S_COUNT]; /* storage behind each device's info strings */
    mpt_link_class_t *links;   /* count x count */
};

static const char *const type_names[] = {"cpu", "gpu", "accelerator", "other"};
static const mpt_device_type_t type_values[] = {MPT_DEVICE_CPU, MPT_DEVICE_GPU,
                                                MPT_DEVICE_ACCELERATOR, MPT_DEVICE_OTHER};

static const char *type_name(mpt_device_type_t t)
{
    for (int i = 0; i < 4; i++)
        if (type_values[i] == t)
            return type_names[i];
    return "other";
}

void mpt_cluster_free(mpt_cluster_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->node_count; i++) {
        free(c->node_names[i]);
        free(c->node_xml[i]);
    }
    for (size_t i = 0; c->strings && i < c->count; i++)
        for (int s = 0; s < S_COUNT; s++)
            free(c->strings[i][s]);
    free(c->node_names);
    free(c->node_xml);
    free(c->strings);
    free(c->devices);
    free(c->links);
    free(c->name);
    free(c);
}

static int alloc_cluster(size_t nodes, size_t devices, mpt_cluster_t **out)
{
    mpt_cluster_t *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!c)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    c->node_count = nodes;
    c->count = devices;
    c->net_gbps = DEFAULT_NET_GBPS;
    c->net_latency_us = DEFAULT_NET_LATENCY_US;
    c->node_names = calloc(nodes, sizeof *c->node_names);
    c->node_xml = calloc(nodes, sizeof *c->node_xml);
    c->devices = calloc(devices ? devices : 1, sizeof *c->devices);
    c->strings = calloc(devices ? devices : 1, sizeof *c->strings);
    c->links = calloc(devices * devices + 1, sizeof *c->links);
    if (!c->node_names || !c->node_xml || !c->devices || !c->strings || !c->links) {
        mpt_cluster_free(c);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    *out = c;
    return MPT_OK;
}

/* Copies the strings of `src` into cluster storage and points `dst` at them. */
static int own_strings(mpt_cluster_t *c, size_t i, const mpt_device_info_t *src)
{
    const char *from[S_COUNT] = {src->vendor,         src->name,           src->platform,
                                 src->device_version, src->driver_version, src->pci_address};
    mpt_device_info_t *dst = &c->devices[i].info;
    for (int s = 0; s < S_COUNT; s++)
        if (!(c->strings[i][s] = mpt__strdup(from[s] ? from[s] : "")))
            return MPT_ERR_NOMEM;
    *dst = *src;
    dst->index = (int)i;
    dst->vendor = c->strings[i][S_VENDOR];
    dst->name = c->strings[i][S_NAME];
    dst->platform = c->strings[i][S_PLATFORM];
    dst->device_version = c->strings[i][S_DEVICE_VERSION];
    dst->driver_version = c->strings[i][S_DRIVER_VERSION];
    dst->pci_address = c->strings[i][S_PCI];
    dst->vendor_word = mpt__vendor_word(dst->vendor, dst->platform);
    return MPT_OK;
}

int mpt_cluster_from_devices(const mpt_devices_t *set, const mpt_topology_t *topo,
                             const mpt_profile_t *profiles, mpt_cluster_t **out)
{
    mpt_cluster_t *c = NULL;
    size_t n = mpt_devices_count(set);
    char host[256] = "localhost";
    int status;
    MPT_TRY(alloc_cluster(1, n, &c));
    gethostname(host, sizeof host - 1);
    if (!(c->node_names[0] = mpt__strdup(host)) || !(c->name = mpt__strdup(host))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        mpt_device_t *dev = mpt_devices_get(set, i);
        MPT_TRY(own_strings(c, i, &dev->info));
        c->devices[i].info.index = dev->info.index; /* keep the live index for --devices */
        MPT_TRY(mpt_topology_locate_device(topo, dev, &c->devices[i].locality));
        if (profiles)
            c->devices[i].profile = profiles[i];
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            c->links[i * n + j] = i == j ? MPT_LINK_SAME_DEVICE
                                         : mpt_topology_link(topo, &c->devices[i].locality,
                                                             &c->devices[j].locality);
out:
    if (status < 0) {
        mpt_cluster_free(c);
        c = NULL;
    }
    *out = c;
    return status;
}

/* The one way every tool and embedding program describes this machine:
 * profiles from the cache (measured once per device identity), locality
 * from the given topology or, without one, the live one loaded here and
 * released before returning (the cluster keeps no reference to it). */
int mpt_cluster_local(const mpt_devices_t *set, const mpt_topology_t *topo, mpt_cluster_t **out)
{
    mpt_topology_t *own = NULL;
    mpt_profile_t *profiles = NULL;
    int status = MPT_OK;
    if (!set || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_cluster_local: NULL argument");
    *out = NULL;
    size_t n = mpt_devices_count(set);
    if (n == 0)
        return mpt__fail(MPT_ERR_NO_DEVICE, "the local cluster: no device opened");
    if (!(profiles = calloc(n, sizeof *profiles)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    if (!topo) {
        MPT_TRY(mpt_topology_load(NULL, &own));
        topo = own;
    }
    for (size_t i = 0; i < n; i++)
        MPT_TRY(mpt_profile_get(mpt_devices_get(set, i), MPT_PROFILE_USE_CACHE, &profiles[i],
                                NULL));
    MPT_TRY(mpt_cluster_from_devices(set, topo, profiles, out));
    /* Devices that share cores, measured together (shared.c): the cluster
     * made again with those figures in their profiles. */
    MPT_TRY(mpt__profile_shared(set, *out, profiles));
    mpt_cluster_free(*out);
    *out = NULL;
    status = mpt_cluster_from_devices(set, topo, profiles, out);
out:
    if (status < 0) {
        mpt_cluster_free(*out);
        *out = NULL;
    }
    mpt_topology_free(own);
    free(profiles);
    return status;
}

int mpt_cluster_set_calibration(mpt_cluster_t *c, size_t i, const mpt_calibration_t *cal)
{
    if (!c || !cal)
        return mpt__fail(MPT_ERR_INVALID, "mpt_cluster_set_calibration: NULL argument");
    if (i >= c->count)
        return mpt__fail(MPT_ERR_RANGE, "device %zu of a cluster of %zu", i, c->count);
    const double f[6] = {cal->forward,   cal->backward,        cal->transfer,
                         cal->allreduce, cal->company_forward, cal->company_backward};
    for (int k = 0; k < 6; k++)
        if (!(f[k] >= 0) || !isfinite(f[k]))
            return mpt__fail(MPT_ERR_INVALID, "device %zu: calibration factor %g is not a "
                             "finite number >= 0", i, f[k]);
    /* What a cluster file or the cache would refuse to read back. */
    if (cal->steps > 0 && !(f[0] > 0 && f[1] > 0 && f[2] > 0 && f[3] > 0))
        return mpt__fail(MPT_ERR_INVALID, "device %zu: calibrated over %llu steps with a "
                         "factor of 0", i, (unsigned long long)cal->steps);
    if (cal->company_steps > 0 && !(cal->company_forward > 0 && cal->company_backward > 0))
        return mpt__fail(MPT_ERR_INVALID, "device %zu: calibrated in company over %llu steps "
                         "without factors in company", i,
                         (unsigned long long)cal->company_steps);
    if (cal->company_steps > cal->steps)
        return mpt__fail(MPT_ERR_INVALID, "device %zu: %llu of the calibration's %llu steps "
                         "in company", i, (unsigned long long)cal->company_steps,
                         (unsigned long long)cal->steps);
    c->devices[i].profile.calibration = *cal;
    return MPT_OK;
}

int mpt__cluster_set_shared(mpt_cluster_t *c, size_t i, double gemm_gflops, double mem_gbps,
                            double devices)
{
    if (!c || i >= c->count)
        return mpt__fail(MPT_ERR_RANGE, "device %zu of a cluster of %zu", i, c ? c->count : 0);
    if (!(gemm_gflops > 0) || !(mem_gbps > 0) || !(devices >= 2))
        return mpt__fail(MPT_ERR_INVALID, "device %zu: shared figures %g GFLOP/s, %g GB/s "
                         "with %g devices", i, gemm_gflops, mem_gbps, devices);
    mpt_profile_t *p = &c->devices[i].profile;
    p->shared_gemm_gflops = gemm_gflops, p->shared_mem_gbps = mem_gbps;
    p->shared_devices = devices;
    return MPT_OK;
}

int mpt_cluster_set_memory_limit(mpt_cluster_t *c, size_t i, uint64_t bytes)
{
    if (!c)
        return mpt__fail(MPT_ERR_INVALID, "mpt_cluster_set_memory_limit: no cluster");
    if (i >= c->count)
        return mpt__fail(MPT_ERR_RANGE, "device %zu of a cluster of %zu", i, c->count);
    /* The planner reads global_mem_bytes: the cap is that, when lower. */
    mpt_device_info_t *info = &c->devices[i].info;
    if (bytes && bytes < info->global_mem_bytes)
        info->global_mem_bytes = bytes;
    if (bytes && bytes < info->max_alloc_bytes)
        info->max_alloc_bytes = bytes;
    return MPT_OK;
}

/* ---- reading ------------------------------------------------------------ */

typedef struct {
    const char *path; /* the file, for messages */
    char where[256];  /* the JSON path being read */
} reader;

static int bad(const reader *r, const char *key, const char *what)
{
    return mpt__fail(MPT_ERR_PARSE, "%s: %s%s%s: %s", r->path, r->where, r->where[0] && key ? "." : "",
                     key ? key : "", what);
}

static int get_string(const reader *r, const json_t *o, const char *key, int required,
                      const char **out)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return required ? bad(r, key, "missing (a string)") : MPT_OK;
    if (!json_is_string(v))
        return bad(r, key, "must be a string");
    *out = json_string_value(v);
    return MPT_OK;
}

/* An integer in [min, max]: max keeps it within the field it is stored in
 * (compute_units is an unsigned, written back as an int) and within
 * physical sense, so that nothing wraps to a small number. */
static int get_int(const reader *r, const json_t *o, const char *key, int required,
                   long long min, long long max, long long *out)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return required ? bad(r, key, "missing (an integer)") : MPT_OK;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be an integer in [%lld, %lld]", min, max);
        return bad(r, key, msg);
    }
    *out = json_integer_value(v);
    return MPT_OK;
}

static int get_bool(const reader *r, const json_t *o, const char *key, int *out)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return MPT_OK;
    if (!json_is_boolean(v))
        return bad(r, key, "must be true or false");
    *out = json_is_true(v);
    return MPT_OK;
}

static int read_device(mpt_cluster_t *c, reader *r, size_t i, const json_t *d,
                       mpt_topology_t **topos)
{
    mpt_device_info_t info = {0};
    mpt_locality_t *loc = &c->devices[i].locality;
    const char *type = NULL;
    long long global = 0, max_alloc = -1, local = 0, cu = 1, clock = 0, node = 0, numa = -1,
              package = -1, cores = 0, pus = 0;
    const char *cpus = "", *osdev = "", *provider = NULL;
    int status;

    snprintf(r->where, sizeof r->where, "devices[%zu]", i);
    if (!json_is_object(d))
        return bad(r, NULL, "must be an object");
    info.vendor = "unknown";
    MPT_TRY(get_string(r, d, "vendor", 0, &info.vendor));
    MPT_TRY(get_string(r, d, "name", 1, &info.name));
    MPT_TRY(get_string(r, d, "platform", 0, &info.platform));
    MPT_TRY(get_string(r, d, "device_version", 0, &info.device_version));
    MPT_TRY(get_string(r, d, "driver_version", 0, &info.driver_version));
    MPT_TRY(get_string(r, d, "pci_address", 0, &info.pci_address));
    MPT_TRY(get_string(r, d, "type", 1, &type));
    info.type = 0;
    for (int t = 0; t < 4; t++)
        if (strcmp(type, type_names[t]) == 0)
            info.type = type_values[t];
    if (!info.type)
        return bad(r, "type", "must be one of cpu, gpu, accelerator, other");
    MPT_TRY(get_int(r, d, "global_mem_bytes", 1, 1, MAX_BYTES, &global));
    /* "memory_limit_bytes": what mpt may use of it (--device-memory), when
     * lower than global_mem_bytes: the planner then plans for that. */
    long long limit = 0, whole = global;
    MPT_TRY(get_int(r, d, "memory_limit_bytes", 0, 0, MAX_BYTES, &limit));
    if (limit > 0 && limit < global)
        global = limit;
    MPT_TRY(get_int(r, d, "max_alloc_bytes", 0, 1, MAX_BYTES, &max_alloc));
    if (max_alloc > whole) /* the planner would trust a buffer the device cannot hold */
        return bad(r, "max_alloc_bytes", "is above global_mem_bytes: no buffer is larger than "
                   "the device's memory");
    MPT_TRY(get_int(r, d, "local_mem_bytes", 0, 0, MAX_BYTES, &local));
    MPT_TRY(get_int(r, d, "compute_units", 0, 1, MAX_COUNT, &cu));
    MPT_TRY(get_int(r, d, "clock_mhz", 0, 0, MAX_COUNT, &clock));
    MPT_TRY(get_bool(r, d, "unified_memory", &info.unified_memory));
    MPT_TRY(get_bool(r, d, "fp16", &info.fp16));
    MPT_TRY(get_bool(r, d, "fp64", &info.fp64));
    MPT_TRY(get_int(r, d, "node", 0, 0, LLONG_MAX, &node));
    MPT_TRY(get_int(r, d, "numa_node", 0, -1, MAX_COUNT, &numa));
    MPT_TRY(get_int(r, d, "package", 0, -1, MAX_COUNT, &package));
    MPT_TRY(get_int(r, d, "cores", 0, 0, MAX_COUNT, &cores));
    MPT_TRY(get_int(r, d, "pus", 0, 0, MAX_COUNT, &pus));
    MPT_TRY(get_string(r, d, "cpus", 0, &cpus));
    MPT_TRY(get_string(r, d, "osdev", 0, &osdev));
    if ((size_t)node >= c->node_count)
        return bad(r, "node", "names a node that the \"nodes\" list does not have");
    info.global_mem_bytes = (uint64_t)global;
    /* Under a cap, as mpt_cluster_set_memory_limit: no buffer past it. */
    info.max_alloc_bytes = (uint64_t)(max_alloc > 0 && max_alloc < global ? max_alloc : global);
    info.local_mem_bytes = (uint64_t)local;
    info.compute_units = (unsigned)cu;
    info.clock_mhz = (unsigned)clock;
    /* Optional: which GEMM provider the device's profile was measured
     * with; kept as one of the library's own words, so nothing to own. */
    MPT_TRY(get_string(r, d, "gemm_provider", 0, &provider));
    if (provider && strcmp(provider, "host") && strcmp(provider, "clblast"))
        return bad(r, "gemm_provider", "must be \"host\" or \"clblast\"");
    info.gemm_provider = !provider ? NULL : !strcmp(provider, "host") ? "host" : "clblast";
    /* Not written by mpt_cluster_to_json: a host device that queues its
     * GEMMs as native kernels reads back as synchronous.  Known, left:
     * keeping it makes calibrate.c count the fast member's wait for a
     * slow one as its own backward in a ring of queued devices, and
     * tests/mpi_rebalance.sh then stays on the slow device. */
    info.gemm_queued = provider && strcmp(provider, "host") != 0;
    MPT_TRY(own_strings(c, i, &info));

    if (topos[node] && info.pci_address && *info.pci_address) {
        status = mpt_topology_locate_pci(topos[node], info.pci_address, loc);
        if (status < 0)
            return mpt__fail_context(status, "%s: %s.pci_address (node %lld topology %s)", r->path,
                                     r->where, node, c->node_xml[node]);
    } else {
        loc->numa_node = (int)numa;
        loc->package = (int)package;
        loc->cores = (unsigned)cores;
        loc->pus = (unsigned)pus;
        if (strlen(cpus) >= sizeof loc->cpus)
            return bad(r, "cpus", "too long");
        snprintf(loc->cpus, sizeof loc->cpus, "%s", cpus);
        snprintf(loc->osdev, sizeof loc->osdev, "%s", osdev);
        snprintf(loc->pci_address, sizeof loc->pci_address, "%s",
                 info.pci_address ? info.pci_address : "");
    }
    loc->node = (int)node;

    const json_t *profile = json_object_get(d, "profile");
    if (!profile || json_is_null(profile))
        return bad(r, "profile", "missing: planning needs measured figures (mpt-topo --json "
                                 "without --no-profile writes them)");
    char where[300];
    snprintf(where, sizeof where, "%s: %s.profile", r->path, r->where);
    return mpt__profile_from_json(profile, where, &c->devices[i].profile);
out:
    return status;
}

static int read_nodes(mpt_cluster_t *c, reader *r, const json_t *nodes, mpt_topology_t **topos)
{
    char dir[4096];
    int status = mpt__snprintf(dir, sizeof dir, "%s", r->path);
    if (status < 0)
        return status;
    char *base = dirname(dir);
    for (size_t i = 0; i < c->node_count; i++) {
        const json_t *n = nodes ? json_array_get(nodes, i) : NULL;
        const char *name = NULL, *xml = NULL;
        char fallback[32], path[8192];
        snprintf(r->where, sizeof r->where, "nodes[%zu]", i);
        if (n && !json_is_object(n))
            return bad(r, NULL, "must be an object");
        if (n) {
            MPT_TRY(get_string(r, n, "name", 0, &name));
            MPT_TRY(get_string(r, n, "topology_xml", 0, &xml));
        }
        snprintf(fallback, sizeof fallback, "node%zu", i);
        if (!(c->node_names[i] = mpt__strdup(name ? name : fallback)))
            return MPT_ERR_NOMEM;
        if (!xml)
            continue;
        MPT_TRY(mpt__snprintf(path, sizeof path, "%s/%s", xml[0] == '/' ? "" : base, xml));
        status = mpt_topology_load(xml[0] == '/' ? xml : path, &topos[i]);
        if (status < 0)
            return mpt__fail_context(status, "%s: %s.topology_xml", r->path, r->where);
        /* Absolute, so that mpt_cluster_to_json writes a path that still
         * resolves wherever its output is saved. */
        if (!(c->node_xml[i] = realpath(xml[0] == '/' ? xml : path, NULL)) &&
            !(c->node_xml[i] = mpt__strdup(xml)))
            return MPT_ERR_NOMEM;
    }
out:
    return status;
}

static int read_links(mpt_cluster_t *c, reader *r, const json_t *links, mpt_topology_t **topos)
{
    size_t n = c->count;
    int status = MPT_OK;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            const mpt_locality_t *a = &c->devices[i].locality, *b = &c->devices[j].locality;
            c->links[i * n + j] = i == j ? MPT_LINK_SAME_DEVICE
                                         : mpt_topology_link(a->node == b->node ? topos[a->node]
                                                                                : NULL,
                                                             a, b);
        }
    if (links && !json_is_array(links)) {
        snprintf(r->where, sizeof r->where, "links");
        return bad(r, NULL, "must be an array");
    }
    for (size_t k = 0; links && k < json_array_size(links); k++) {
        const json_t *l = json_array_get(links, k);
        long long a = -1, b = -1;
        const char *cls = NULL;
        mpt_link_class_t lc;
        snprintf(r->where, sizeof r->where, "links[%zu]", k);
        if (!json_is_object(l))
            return bad(r, NULL, "must be an object {a, b, class}");
        MPT_TRY(get_int(r, l, "a", 1, 0, LLONG_MAX, &a));
        MPT_TRY(get_int(r, l, "b", 1, 0, LLONG_MAX, &b));
        MPT_TRY(get_string(r, l, "class", 1, &cls));
        if ((size_t)a >= n || (size_t)b >= n)
            return bad(r, NULL, "a and b must be device indices of this cluster");
        if (mpt_link_class_parse(cls, &lc) < 0)
            return mpt__fail_context(MPT_ERR_PARSE, "%s: %s.class", r->path, r->where);
        c->links[a * n + b] = c->links[b * n + a] = lc;
    }
out:
    return status;
}

int mpt_cluster_load(const char *path, mpt_cluster_t **out)
{
    json_t *root = NULL;
    int status;
    if (!out || !path)
        return mpt__fail(MPT_ERR_INVALID, "mpt_cluster_load: NULL argument");
    *out = NULL;
    MPT_TRY(mpt__json_load_file(path, &root));
    status = mpt__cluster_from_json(root, path, out);
out:
    json_decref(root);
    return status;
}

int mpt__cluster_from_json(const json_t *root, const char *where, mpt_cluster_t **out)
{
    mpt_cluster_t *c = NULL;
    mpt_topology_t **topos = NULL;
    reader r = {where, ""};
    int status = MPT_OK;

    *out = NULL;
    if (!json_is_object(root)) {
        status = bad(&r, NULL, "the top level must be an object");
        goto out;
    }
    const json_t *devices = json_object_get(root, "devices");
    const json_t *nodes = json_object_get(root, "nodes");
    const json_t *net = json_object_get(root, "network");
    const char *name = "";
    if (!json_is_array(devices) || json_array_size(devices) == 0) {
        status = bad(&r, "devices", "missing or empty (an array of devices)");
        goto out;
    }
    if (nodes && (!json_is_array(nodes) || json_array_size(nodes) == 0)) {
        status = bad(&r, "nodes", "must be a non-empty array");
        goto out;
    }
    MPT_TRY(get_string(&r, root, "name", 0, &name));
    MPT_TRY(alloc_cluster(nodes ? json_array_size(nodes) : 1, json_array_size(devices), &c));
    if (!(c->name = mpt__strdup(name)) ||
        !(topos = calloc(c->node_count, sizeof *topos))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (net) {
        snprintf(r.where, sizeof r.where, "network");
        if (!json_is_object(net)) {
            status = bad(&r, NULL, "must be an object {gbps, latency_us}");
            goto out;
        }
        json_t *g = json_object_get(net, "gbps"), *l = json_object_get(net, "latency_us");
        if ((g && (!json_is_number(g) || json_number_value(g) < 1e-3 ||
                   json_number_value(g) > 1e5)) ||
            (l && (!json_is_number(l) || json_number_value(l) < 0))) {
            status = bad(&r, NULL, "gbps must be in [1e-3, 1e5] and latency_us non-negative");
            goto out;
        }
        if (g)
            c->net_gbps = json_number_value(g);
        if (l)
            c->net_latency_us = json_number_value(l);
    }
    MPT_TRY(read_nodes(c, &r, nodes, topos));
    for (size_t i = 0; i < c->count; i++)
        MPT_TRY(read_device(c, &r, i, json_array_get(devices, i), topos));
    MPT_TRY(read_links(c, &r, json_object_get(root, "links"), topos));
out:
    for (size_t i = 0; topos && c && i < c->node_count; i++)
        mpt_topology_free(topos[i]);
    free(topos);
    if (status < 0) {
        mpt_cluster_free(c);
        c = NULL;
    }
    *out = c;
    return status;
}

/* ---- writing and accessors ---------------------------------------------- */

int mpt_cluster_to_json(const mpt_cluster_t *c, char **text)
{
    json_t *root = json_object(), *nodes = json_array(), *devices = json_array(),
           *links = json_array();
    int status = MPT_OK;
    *text = NULL;
    if (!root || !nodes || !devices || !links) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < c->node_count; i++) {
        json_t *n = json_pack("{s:s}", "name", c->node_names[i]);
        if (n && c->node_xml[i])
            json_object_set_new(n, "topology_xml", json_string(c->node_xml[i]));
        json_array_append_new(nodes, n);
    }
    for (size_t i = 0; i < c->count; i++) {
        const mpt_device_info_t *d = &c->devices[i].info;
        const mpt_locality_t *l = &c->devices[i].locality;
        json_t *o = json_pack(
            "{s:i,s:i,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:i,s:i,s:b,s:b,s:b}", "index",
            d->index, "node", l->node, "vendor", d->vendor, "vendor_word", d->vendor_word, "name",
            d->name, "type", type_name(d->type), "platform", d->platform, "device_version",
            d->device_version, "driver_version", d->driver_version, "pci_address", d->pci_address,
            "global_mem_bytes", (json_int_t)d->global_mem_bytes, "max_alloc_bytes",
            (json_int_t)d->max_alloc_bytes, "local_mem_bytes", (json_int_t)d->local_mem_bytes,
            "compute_units", (int)d->compute_units, "clock_mhz", (int)d->clock_mhz,
            "unified_memory", d->unified_memory, "fp16", d->fp16, "fp64", d->fp64);
        if (o) {
            json_object_set_new(o, "numa_node", json_integer(l->numa_node));
            json_object_set_new(o, "package", json_integer(l->package));
            json_object_set_new(o, "cores", json_integer(l->cores));
            json_object_set_new(o, "pus", json_integer(l->pus));
            json_object_set_new(o, "cpus", json_string(l->cpus));
            json_object_set_new(o, "osdev", json_string(l->osdev));
            if (d->gemm_provider)
                json_object_set_new(o, "gemm_provider", json_string(d->gemm_provider));
            if (d->clblast_tuning) /* "" = CLBlast's built-in parameters */
                json_object_set_new(o, "clblast_tuning", json_string(d->clblast_tuning));
            /* A device never profiled (mpt-topo --no-profile) has no
             * figures, not figures of zero. */
            const mpt_profile_t *p = &c->devices[i].profile;
            json_object_set_new(o, "profile",
                                p->gemm_gflops > 0 ? mpt__profile_to_json(p) : json_null());
        }
        json_array_append_new(devices, o);
    }
    for (size_t i = 0; i < c->count; i++)
        for (size_t j = i + 1; j < c->count; j++)
            json_array_append_new(links, json_pack("{s:I,s:I,s:s}", "a", (json_int_t)i, "b",
                                                   (json_int_t)j, "class",
                                                   mpt_link_class_name(c->links[i * c->count + j])));
    json_object_set_new(root, "mpt_cluster", json_integer(1));
    json_object_set_new(root, "name", json_string(c->name ? c->name : ""));
    json_object_set_new(root, "network",
                        json_pack("{s:f,s:f}", "gbps", c->net_gbps, "latency_us",
                                  c->net_latency_us));
    json_object_set(root, "nodes", nodes);
    json_object_set(root, "devices", devices);
    json_object_set(root, "links", links);
    if (!(*text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER)))
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory writing cluster JSON");
out:
    json_decref(nodes);
    json_decref(devices);
    json_decref(links);
    json_decref(root);
    return status;
}

const char *mpt_cluster_name(const mpt_cluster_t *c)
{
    return c->name ? c->name : "";
}

size_t mpt_cluster_node_count(const mpt_cluster_t *c)
{
    return c->node_count;
}

size_t mpt_cluster_device_count(const mpt_cluster_t *c)
{
    return c->count;
}

const mpt_cluster_device_t *mpt_cluster_device(const mpt_cluster_t *c, size_t i)
{
    return i < c->count ? &c->devices[i] : NULL;
}

mpt_link_class_t mpt_cluster_link(const mpt_cluster_t *c, size_t i, size_t j)
{
    return i < c->count && j < c->count ? c->links[i * c->count + j] : MPT_LINK_UNKNOWN;
}

void mpt_cluster_network(const mpt_cluster_t *c, double *gbps, double *latency_us)
{
    if (gbps)
        *gbps = c->net_gbps;
    if (latency_us)
        *latency_us = c->net_latency_us;
}
