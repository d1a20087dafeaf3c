/*
 * profile/shared.c: devices that share cores, measured together.  Two
 * devices of one node whose cpusets overlap, one of them a CPU device
 * (PoCL CPU devices of one process; a CPU device on the cores whose
 * threads feed GPUs), compete for those cores.  A profile taken alone
 * says nothing of that: mpt_cluster_local groups such devices (the
 * connected groups of "shares cores with"), times each group's devices
 * alone and all at once (measure.c) and records each device's rate
 * together (mpt_profile_t.shared_gemm_gflops, shared_mem_gbps) as its
 * profile's rate alone times the measured together / alone ratio.  The
 * planner's cost model (plan/share.c) prices a device by them whenever a
 * plan runs it beside a device that shares its cores.
 *
 * The cache keeps one file per group, shared-HASH.json, keyed by the
 * members' profile keys in order: another company of devices is another
 * group, measured anew.
 *
 * Each member also records how many of them ran on its cores, itself
 * included (shared_devices), so that plan/share.c can price a plan on
 * some of the group's devices from the whole group's figure (the cores
 * split among fewer).
 *
 * Devices of other ranks on the same host are measured together by the
 * job (train/world.c, mpt_world_measure_shared) through
 * mpt__profile_measure_shared_job, not cached.
 *
 * Left out: a PCIe switch and host memory bandwidth shared by transfers.
 */
#include <hwloc.h>
#include <stdlib.h>
#include <string.h>

#include "device/device.h"
#include "profile/profile.h"

#define SHARED_FORMAT 2 /* bump when the measurement method changes (2: alone
                         * and together with their own BLAS threads) */

/* The device's cpuset, NULL when the cluster gave none (no sharing known). */
static hwloc_bitmap_t cpuset_of(const mpt_cluster_device_t *d)
{
    hwloc_bitmap_t b;
    if (!d->locality.cpus[0] || !(b = hwloc_bitmap_alloc()))
        return NULL;
    if (hwloc_bitmap_list_sscanf(b, d->locality.cpus) < 0 || hwloc_bitmap_iszero(b)) {
        hwloc_bitmap_free(b);
        return NULL;
    }
    return b;
}

int mpt__cluster_common_cpus(const mpt_cluster_device_t *a, const mpt_cluster_device_t *b)
{
    if (a->locality.node != b->locality.node)
        return 0;
    hwloc_bitmap_t x = cpuset_of(a), y = cpuset_of(b);
    int n = 0;
    if (x && y) {
        hwloc_bitmap_and(x, x, y);
        n = hwloc_bitmap_weight(x);
    }
    hwloc_bitmap_free(x);
    hwloc_bitmap_free(y);
    return n < 0 ? 0 : n;
}

int mpt__cluster_share_cores(const mpt_cluster_device_t *a, const mpt_cluster_device_t *b)
{
    if (a->info.type != MPT_DEVICE_CPU && b->info.type != MPT_DEVICE_CPU)
        return 0;
    return mpt__cluster_common_cpus(a, b) > 0;
}

/* The group's cache key: its members' profile keys, one a line. */
static int group_key(const mpt_devices_t *set, const size_t *members, size_t n, char **key)
{
    size_t size = 1, at = 0;
    char one[2048], path[4096];
    int status = MPT_OK;
    *key = NULL;
    for (size_t k = 0; k < n && status == MPT_OK; k++) {
        status = mpt__profile_cache_entry(mpt_devices_get(set, members[k]), one, sizeof one, path,
                                          sizeof path);
        char *grown = status == MPT_OK ? realloc(*key, size + strlen(one) + 1) : NULL;
        if (status == MPT_OK && !grown)
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        if (status == MPT_OK) {
            *key = grown;
            size += strlen(one) + 1;
            at += (size_t)sprintf(*key + at, "%s%s", k ? "\n" : "", one);
        }
    }
    if (status < 0) {
        free(*key);
        *key = NULL;
    }
    return status;
}

/* The cached ratios of a group, MPT_ERR_NOT_FOUND when none are. */
static int load_group(const char *path, const char *key, size_t n, double *gemm, double *mem)
{
    json_t *root = NULL, *g = NULL, *m = NULL;
    const char *k = NULL;
    json_int_t format = 0;
    int status = mpt__json_load_file(path, &root);
    if (status < 0)
        return MPT_ERR_NOT_FOUND;
    status = MPT_ERR_NOT_FOUND;
    if (json_unpack(root, "{s:I,s:s,s:o,s:o}", "mpt_shared_profile", &format, "key", &k,
                    "gemm_ratio", &g, "mem_ratio", &m) == 0 &&
        format == SHARED_FORMAT && !strcmp(k, key) && json_array_size(g) == n &&
        json_array_size(m) == n) {
        status = MPT_OK;
        for (size_t i = 0; i < n; i++) {
            gemm[i] = json_number_value(json_array_get(g, i));
            mem[i] = json_number_value(json_array_get(m, i));
            /* sharing never makes a device faster than 2x (noise); 0: bad */
            if (!(gemm[i] > 0 && gemm[i] <= 2) || !(mem[i] > 0 && mem[i] <= 2))
                status = mpt__fail(MPT_ERR_PARSE, "%s: ratio of member %zu outside (0, 2]", path, i);
        }
    }
    json_decref(root);
    return status;
}

static void save_group(const char *path, const char *key, size_t n, const double *gemm,
                       const double *mem)
{
    json_t *g = json_array(), *m = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(g, json_real(gemm[i]));
        json_array_append_new(m, json_real(mem[i]));
    }
    json_t *root = json_pack("{s:i,s:s,s:o,s:o}", "mpt_shared_profile", SHARED_FORMAT, "key",
                             key, "gemm_ratio", g, "mem_ratio", m);
    char dir[4000];
    /* As a profile: a cache that cannot keep it only costs a measurement. */
    if (!root || mpt_profile_cache_dir(dir, sizeof dir) < 0 || mpt__mkdir_p(dir) < 0 ||
        mpt__json_save_file(path, root) < 0) {
        mpt__log(MPT_LOG_WARN, "shared-core profile measured but not cached: %s",
                 mpt_last_error());
        mpt__clear_error();
    }
    json_decref(root);
}

/* One group: ratios from the cache or measured, then the figures. */
static int profile_group(const mpt_devices_t *set, const size_t *members, size_t n,
                         mpt_profile_t *profiles)
{
    char *key = NULL, path[4096];
    double *gemm = calloc(2 * n, sizeof *gemm), *mem = gemm + n;
    mpt_device_t **devs = calloc(n, sizeof *devs);
    mpt_profile_t *alone = calloc(n, sizeof *alone);
    int status;
    if (!gemm || !devs || !alone) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t k = 0; k < n; k++)
        devs[k] = mpt_devices_get(set, members[k]), alone[k] = profiles[members[k]];
    MPT_TRY(group_key(set, members, n, &key));
    MPT_TRY(mpt__profile_cache_path("shared", key, path, sizeof path));
    if ((status = load_group(path, key, n, gemm, mem)) < 0) {
        mpt__clear_error();
        mpt__log(MPT_LOG_INFO, "profiling %zu devices that share cores, alone and together", n);
        MPT_TRY(mpt__profile_measure_shared(devs, alone, n, gemm, mem));
        save_group(path, key, n, gemm, mem);
    }
    for (size_t k = 0; k < n; k++) {
        mpt_profile_t *p = &profiles[members[k]];
        p->shared_gemm_gflops = p->gemm_gflops * gemm[k];
        p->shared_mem_gbps = p->mem_gbps * mem[k];
    }
out:
    free(key);
    free(gemm);
    free(devs);
    free(alone);
    return status;
}

void mpt__cluster_share_groups(const mpt_cluster_t *c, size_t *group)
{
    size_t n = mpt_cluster_device_count(c);
    /* Each device joins the group of the first device it shares cores
     * with, directly or through others (labels merged as found). */
    for (size_t i = 0; i < n; i++)
        group[i] = i;
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (group[j] != group[i] &&
                mpt__cluster_share_cores(mpt_cluster_device(c, i), mpt_cluster_device(c, j))) {
                size_t from = group[j], to = group[i];
                for (size_t k = 0; k < n; k++)
                    if (group[k] == from)
                        group[k] = to;
            }
}

size_t mpt__cluster_on_its_cores(const mpt_cluster_t *c, const size_t *members, size_t k,
                                 size_t i)
{
    const mpt_cluster_device_t *d = mpt_cluster_device(c, i);
    size_t on_its_cores = 1;
    for (size_t b = 0; b < k; b++)
        on_its_cores +=
            members[b] != i && mpt__cluster_share_cores(d, mpt_cluster_device(c, members[b]));
    return on_its_cores;
}

int mpt__profile_shared(const mpt_devices_t *set, const mpt_cluster_t *c, mpt_profile_t *profiles)
{
    size_t n = mpt_cluster_device_count(c), *group = calloc(n ? n : 1, sizeof *group),
           *members = calloc(n ? n : 1, sizeof *members);
    int status = MPT_OK;
    if (!group || !members) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    mpt__cluster_share_groups(c, group);
    for (size_t g = 0; g < n && status == MPT_OK; g++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (group[i] == g)
                members[k++] = i;
        if (k < 2 || (status = profile_group(set, members, k, profiles)) < 0)
            continue;
        for (size_t a = 0; a < k; a++)
            profiles[members[a]].shared_devices =
                (double)mpt__cluster_on_its_cores(c, members, k, members[a]);
    }
out:
    free(group);
    free(members);
    return status;
}
