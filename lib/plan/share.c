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
 * measured by mpt_cluster_local: profile/shared.c) is used as it is when the
 * plan runs the device beside as many devices on its cores as ran there
 * when it was measured (shared_devices, this one included).  A plan on fewer
 * of them (two of three PoCL devices on the same cores) splits what the
 * group achieved together among fewer: each gets min(1, together / alone
 * x shared_devices / running) of its rate alone, running being the devices
 * on its cores that the plan runs, itself included.  Without the count (a
 * cluster file from before it), the figure is used as it is.  Without a measured
 * figure, an estimate: each sharer wants min(compute units, common cores) cores (a
 * GPU one, the thread that feeds it), and when the wants exceed the
 * device's cores, each gets cores / wants of what it measured alone.
 *
 * A device in company is also corrected by what training measured of it
 * in company (mpt_calibration_t.company_*, applied here through
 * mpt__cal_in_company), not by its calibration alone: the concurrent
 * figures come from GEMMs and copies of one size run back to back, not
 * from a training step's mix of sizes and waits, and err differently
 * from the figures alone (the pthread device of "pthread basic" is
 * priced 1.2x slow alone and 1.3-1.45x slow beside the basic one).
 *
 * Left out: a PCIe switch or host memory bandwidth shared by transfers
 * (transfers rarely coincide outside the all-reduce, and the profile has
 * no concurrent transfer figure yet), and hyper-threads (cores, not PUs,
 * are counted).
 */
#include <string.h>

#include "core/internal.h"
#include "plan/plan.h"
#include "profile/profile.h"

int mpt__cost_share_cores(const mpt_cluster_t *c, size_t a, size_t b)
{
    const mpt_cluster_device_t *x = mpt_cluster_device(c, a), *y = mpt_cluster_device(c, b);
    return x && y && a != b && mpt__cluster_share_cores(x, y);
}

static void scale_rates(mpt_profile_t *p, double gemm, double mem)
{
    p->gemm_gflops *= gemm;
    for (int i = 0; i < MPT_PROFILE_GEMM_SHAPES; i++)
        p->gemm[i].gflops *= gemm;
    p->mem_gbps *= mem;
}

int mpt__cost_in_company(const mpt_cluster_t *c, const size_t *used, size_t n, size_t d)
{
    const mpt_cluster_device_t *dev = mpt_cluster_device(c, d);
    if (!dev || dev->info.type != MPT_DEVICE_CPU || mpt__cluster_common_cpus(dev, dev) <= 0)
        return 0;
    for (size_t j = 0; j < n; j++) {
        const mpt_cluster_device_t *x = mpt_cluster_device(c, used[j]);
        if (used[j] != d && x && mpt__cluster_common_cpus(dev, x) > 0)
            return 1;
    }
    return 0;
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
        int cores = mpt__cluster_common_cpus(dev, dev);
        if (cores <= 0)
            continue;
        double wants = dev->info.compute_units && (int)dev->info.compute_units < cores
                           ? (double)dev->info.compute_units
                           : (double)cores;
        int cpu_sharer = 0, sharers = 0;
        for (size_t j = 0; j < n; j++) {
            const mpt_cluster_device_t *x = mpt_cluster_device(c, used[j]);
            int common = used[j] == d || !x ? 0 : mpt__cluster_common_cpus(dev, x);
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
        /* What training measured of it in company (mpt_calibration_t). */
        mpt__cal_in_company(&eff[d].profile.calibration);
        const mpt_profile_t *p = &dev->profile;
        if (cpu_sharer && p->shared_gemm_gflops > 0 && p->gemm_gflops > 0) {
            /* Fewer running than were measured split the cores among fewer. */
            double fewer = p->shared_devices > sharers + 1 ? p->shared_devices / (sharers + 1) : 1;
            double gemm = p->shared_gemm_gflops / p->gemm_gflops;
            double g = gemm * fewer;
            double m = (p->shared_mem_gbps > 0 && p->mem_gbps > 0
                            ? p->shared_mem_gbps / p->mem_gbps
                            : gemm) *
                       fewer;
            scale_rates(&eff[d].profile, g < 1 ? g : 1, m < 1 ? m : 1);
        } else if (wants > cores) {
            double s = (double)cores / wants;
            scale_rates(&eff[d].profile, s, s);
        }
    }
}
