/*
 * profile/profile.h: profile <-> JSON, shared by the cache, cluster files
 * and tools.  Never installed.
 */
#ifndef MPT_PROFILE_PROFILE_H
#define MPT_PROFILE_PROFILE_H

#include "core/internal.h"

/* The profile as a JSON object (new reference), NULL when out of memory. */
json_t *mpt__profile_to_json(const mpt_profile_t *p);
/* Reads a profile object; `where` names it in errors ("cluster.json:
 * devices[2].profile").  gemm_gflops, mem_gbps, h2d_gbps and d2h_gbps are
 * required and must be positive. */
int mpt__profile_from_json(const json_t *obj, const char *where, mpt_profile_t *p);
/* A cluster description already parsed (mpt_cluster_load reads the file);
 * `where` names it in errors. */
int mpt__cluster_from_json(const json_t *root, const char *where, mpt_cluster_t **out);
/* Whether MPT_PROFILE_QUICK asks for small sizes. */
int mpt__profile_quick(void);
/* The cache key of a device's profile (identity, GEMM provider, tuning,
 * quick) and its file; the file of any key in the cache directory, named
 * PREFIX-HASH.json. */
int mpt__profile_cache_entry(const mpt_device_t *dev, char *key, size_t key_size, char *path,
                             size_t path_size);
int mpt__profile_cache_path(const char *prefix, const char *key, char *buf, size_t size);

/* ---- devices that share cores (shared.c, measure.c) ---------------------- */

/* Cores (PUs of the cpusets) that devices a and b both run on: 0 when
 * they are on different nodes or a cpuset is unknown. */
int mpt__cluster_common_cpus(const mpt_cluster_device_t *a, const mpt_cluster_device_t *b);
/* Whether a and b compete for cores: one of them a CPU device, on
 * overlapping cpusets of one node (GPUs compute on their own silicon). */
int mpt__cluster_share_cores(const mpt_cluster_device_t *a, const mpt_cluster_device_t *b);
/* Times devs[0..n) alone and all at once (alone[i]: device i's profile,
 * to size the work) and gives each device's GEMM and copy rate together
 * over its rate alone. */
int mpt__profile_measure_shared(mpt_device_t **devs, const mpt_profile_t *alone, size_t n,
                                double *gemm_ratio, double *mem_ratio);
/* The same for this rank's part of a group that spans ranks of one host:
 * devs[i] takes its "alone" turn at turn[i] of nturns (the group's
 * devices in the job's order; turn NULL: at i of n), and sync (a collective every rank of the
 * job calls as often: once before the first phase and once after each,
 * whatever failed, n = 0 included) ends each phase on every rank before
 * the next begins.  Each rank's devices run with the BLAS threads this
 * rank gives them together (mpt__gemm_threads_for its own devices), as a
 * job runs them. */
int mpt__profile_measure_shared_job(mpt_device_t **devs, const mpt_profile_t *alone, size_t n,
                                    const size_t *turn, size_t nturns, int (*sync)(void *),
                                    void *sync_ctx, double *gemm_ratio, double *mem_ratio);
/* Sets device i's figures measured together (mpt_profile_t.shared_*). */
int mpt__cluster_set_shared(mpt_cluster_t *c, size_t i, double gemm_gflops, double mem_gbps,
                            double devices);
/* Groups of devices of c that share cores, directly or through others:
 * group[i] is the lowest index of device i's group. */
void mpt__cluster_share_groups(const mpt_cluster_t *c, size_t *group);
/* How many devices of the group ran on device i's cores (itself and those
 * it shares cores with directly; a chain a-b-c is one group, but a and c
 * never met), as plan/share.c counts them. */
size_t mpt__cluster_on_its_cores(const mpt_cluster_t *c, const size_t *members, size_t k,
                                 size_t i);
/* The concurrent figures of every group of devices of c (the cluster of
 * set, in its order) that share cores: profiles[i].shared_gemm_gflops and
 * shared_mem_gbps set from the cache, or measured and cached (one file
 * per group, keyed by its members' profile keys). */
int mpt__profile_shared(const mpt_devices_t *set, const mpt_cluster_t *c, mpt_profile_t *profiles);

#endif
