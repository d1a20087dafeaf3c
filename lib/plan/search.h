/*
 * plan/search.h: what the planner's passes (planner.c) share with the
 * candidates it compares them to: the device subsets (subsets.c) and the
 * uniform splits (uniform.c).  Internal to lib/plan; never installed.
 */
#ifndef MPT_PLAN_SEARCH_H
#define MPT_PLAN_SEARCH_H

#include "plan/plan.h"

/* One configuration of a set of devices. */
typedef struct {
    size_t dp, pp, tp, microbatches;
    mpt__pipe_schedule_t schedule;
} mpt__plan_shape_t;

/* Sorts indices with a comparison that takes a context (qsort has none,
 * and a global would make planning unsafe from two threads). */
typedef int (*mpt__cmp_fn)(const void *ctx, size_t a, size_t b);
void mpt__sort_indices(size_t *idx, size_t n, mpt__cmp_fn cmp, const void *ctx);
/* Cluster devices by node, package, NUMA node, PCI address (ctx: the cluster). */
int mpt__by_locality(const void *ctx, size_t a, size_t b);

/* Every shape of the n devices `order` (locality order) that the request
 * allows (planner.c, pass 3). */
int mpt__plan_shapes(const mpt_cluster_t *c, const size_t *order, size_t n,
                     const mpt_plan_request_t *req, mpt__plan_shape_t **out, size_t *count);

/* The tensor-parallel collectives of layer l on a group of tp devices. */
double mpt__tp_allreduces(const mpt__model_cost_t *mc, const mpt_cluster_t *c,
                          const size_t *group, size_t tp, size_t l, double samples);

/* 1 with the reason in why when the engine cannot run p (a tensor-parallel
 * member left no unit, replicas split unlike, a tied weight across a
 * tensor-parallel stage); records the roles of p's tensor-parallel stages. */
int mpt__plan_unrunnable(const mpt__model_t *m, mpt__plan_t *p, char *why, size_t size);

/* Simulates p under the requested all-reduce (AUTO: the faster) and
 * records the prediction in p. */
int mpt__plan_predict(mpt__plan_t *p, const mpt__model_cost_t *mc, const mpt_cluster_t *c,
                      mpt_allreduce_t algo);

/* The uniform split of shape sh over the devices `order` (equal layers per
 * stage, whole samples per replica as equal as they go, equal tensor
 * fractions), each device priced at eff[device] (mpt__cost_shared).
 * MPT_ERR_DEVICE_MEMORY with the reason in why when a device cannot hold
 * its part; MPT_ERR_RANGE when there are more stages than layers. */
int mpt__plan_uniform(const mpt__model_cost_t *mc, const mpt_cluster_t *c,
                      const mpt_cluster_device_t *eff, const size_t *order,
                      const mpt__plan_shape_t *sh, size_t batch, int slots, mpt__plan_t **out,
                      char *why, size_t why_size);

/* ---- subsets (subsets.c) ---------------------------------------------------- */

/* A set of cluster devices the planner tries on its own, and why it is
 * worth trying ("all devices", "the fastest kind", "device 3 alone"...). */
typedef struct {
    size_t n;
    size_t *devices; /* cluster indices, ascending */
    char why[96];
} mpt__subset_t;

/* The candidate subsets of the devices `allowed` (n of them, cluster
 * indices): all of them first; with at most MPT__SUBSETS_EXHAUSTIVE
 * devices every non-empty subset; above, the heterogeneity-aware ones:
 * the devices at least as fast as each kind (the slowest kinds dropped one
 * by one, by predicted time of the model per sample), one device of each
 * kind alone, and each of those restricted to one node.  `speed` gives
 * each cluster device's throughput (higher is faster). */
#define MPT__SUBSETS_EXHAUSTIVE 6
int mpt__plan_subsets(const mpt_cluster_t *c, const size_t *allowed, size_t n,
                      const double *speed, mpt__subset_t **out, size_t *count);
void mpt__plan_subsets_free(mpt__subset_t *s, size_t count);

#endif
