/*
 * plan/share.c: the cost model's view of resources that devices share.
 * Two devices of one node whose cpusets overlap, one of them a CPU device,
 * compete for those cores: PoCL CPU devices of one process, or a CPU
 * device on the cores whose threads feed the GPUs.  When a plan runs them
 * together each gets a share of the cores, and its GEMM rate and memory
 * bandwidth (a CPU device's memory is the host's) shrink with it.
 *
 * Measured figures come first: a profile taken with every sharing device
 * running at once (mpt_profile_t.shared_gemm_gflops, shared_mem_gbps,
 * written by mpt_cluster_local) is used as it is.  Without them, an
 * estimate: each sharer wants min(compute units, common cores) cores (a
 * GPU one, the thread that feeds it), and when the wants exceed the
 * device's cores, each gets cores / wants of what it measured alone.
 *
 * Left out: a PCIe switch or host memory bandwidth shared by transfers
 * (transfers rarely coincide outside the all-reduce, and the profile has
 * no concurrent transfer figure yet), and hyper-threads (cores, not PUs,
 * are counted).
 */
#include <hwloc.h>
#include <string.h>

#include "core/internal.h"
#include "plan/plan.h"

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

/* Cores of d's cpuset that x also runs on (0: none, or not known). */
static int common_cpus(const mpt_cluster_device_t *d, const mpt_cluster_device_t *x)
{
    if (d->locality.node != x->locality.node)
        return 0;
    hwloc_bitmap_t a = cpuset_of(d), b = cpuset_of(x);
    int n = 0;
    if (a && b) {
        hwloc_bitmap_and(a, a, b);
        n = hwloc_bitmap_weight(a);
    }
    hwloc_bitmap_free(a);
    hwloc_bitmap_free(b);
    return n < 0 ? 0 : n;
}

int mpt__cost_share_cores(const mpt_cluster_t *c, size_t a, size_t b)
{
    const mpt_cluster_device_t *x = mpt_cluster_device(c, a), *y = mpt_cluster_device(c, b);
    if (!x || !y || a == b)
        return 0;
    if (x->info.type != MPT_DEVICE_CPU && y->info.type != MPT_DEVICE_CPU)
        return 0; /* GPUs compute on their own silicon */
    return common_cpus(x, y) > 0;
}

static void scale_rates(mpt_profile_t *p, double gemm, double mem)
{
    p->gemm_gflops *= gemm;
    for (int i = 0; i < MPT_PROFILE_GEMM_SHAPES; i++)
        p->gemm[i].gflops *= gemm;
    p->mem_gbps *= mem;
}

void mpt__cost_shared(const mpt_cluster_t *c, const size_t *used, size_t n,
                      mpt_cluster_device_t *eff)
{
    size_t count = mpt_cluster_device_count(c);
    for (size_t i = 0; i < count; i++)
        eff[i] = *mpt_cluster_device(c, i);
    for (size_t k = 0; k < n; k++) {
        size_t d = used[k];
        const mpt_cluster_device_t *dev = mpt_cluster_device(c, d);
        if (!dev || dev->info.type != MPT_DEVICE_CPU)
            continue;
        hwloc_bitmap_t mine = cpuset_of(dev);
        int cores = mine ? hwloc_bitmap_weight(mine) : 0;
        hwloc_bitmap_free(mine);
        if (cores <= 0)
            continue;
        double wants = dev->info.compute_units && (int)dev->info.compute_units < cores
                           ? (double)dev->info.compute_units
                           : (double)cores;
        int cpu_sharer = 0, sharers = 0;
        for (size_t j = 0; j < n; j++) {
            const mpt_cluster_device_t *x = mpt_cluster_device(c, used[j]);
            int common = used[j] == d || !x ? 0 : common_cpus(dev, x);
            if (common <= 0)
                continue;
            sharers++;
            if (x->info.type == MPT_DEVICE_CPU) {
                cpu_sharer = 1;
                wants += x->info.compute_units && (int)x->info.compute_units < common
                             ? (double)x->info.compute_units
                             : (double)common;
            } else
                wants += 1; /* the host thread that feeds it */
        }
        if (!sharers)
            continue;
        const mpt_profile_t *p = &dev->profile;
        if (cpu_sharer && p->shared_gemm_gflops > 0 && p->gemm_gflops > 0) {
            double g = p->shared_gemm_gflops / p->gemm_gflops;
            double m = p->shared_mem_gbps > 0 && p->mem_gbps > 0 ? p->shared_mem_gbps / p->mem_gbps
                                                                  : g;
            scale_rates(&eff[d].profile, g < 1 ? g : 1, m < 1 ? m : 1);
        } else if (wants > cores) {
            double s = (double)cores / wants;
            scale_rates(&eff[d].profile, s, s);
        }
    }
}
