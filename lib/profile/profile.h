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

#endif
