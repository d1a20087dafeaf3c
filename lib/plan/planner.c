/*
 * plan/planner.c: the planner, a pure function (model, cluster, request)
 * -> plan, written as numbered passes.  With MPT_PLAN_DEBUG=1 every
 * configuration considered and its outcome goes to the log (INFO).
 *
 *   1. Costs     every layer's FLOPs, bytes and parameters (cost.c).
 *   2. Order     devices sorted by locality (node, package, NUMA node, PCI
 *                address), so that consecutive devices, which become
 *                tensor-parallel groups and neighbouring stages, share the
 *                fastest links.
 *   3. Shapes    every (dp, pp, tp) with dp * pp * tp = devices (pinned
 *                dimensions fixed), pp <= layers; every micro-batch count
 *                (powers of two up to a replica's batch) and schedule.
 *   4. Place     replica r takes the r-th block of pp * tp devices in that
 *                order, stage s the s-th group of tp; split fractions
 *                inside a group and batch shares across replicas are
 *                proportional to measured GEMM speed.
 *   5. Partition layers over each replica's stages by dynamic programming
 *                on the bottleneck (partition.c), each stage's cost its
 *                forward + backward time plus its outgoing transfer, ranges
 *                that do not fit a device's memory, or whose largest buffer
 *                does not fit its largest allocation (max_alloc_bytes),
 *                excluded.
 *                Tensor-parallel plans the engine cannot run (a member left
 *                no unit, replicas split unlike, a tied weight across a
 *                tensor-parallel stage) are rejected with the reason.
 *   6. Simulate  the plan's step (simulate.c) gives the predicted time.
 *   7. Choose    the fastest; every configuration is kept as an
 *                alternative with its time or the reason it was rejected.
 *
 *   0. Subsets  passes 2-7 run on each candidate set of devices
 *                (subsets.c: all of them, every subset of a few, else the
 *                faster kinds, each kind alone, one node), each device
 *                priced in that company (share.c: shared cores), and every
 *                shape also split uniformly (uniform.c): the chosen plan is
 *                by its own prediction never slower than any of them.  The
 *                devices it leaves idle are named with the reason
 *                (mpt__plan_t.idle).
 *
 * Left out (stated, not hidden): unequal tensor-parallel degrees per
 * stage, and recomputation.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/search.h"

static int plan_debug(void)
{
    return strcmp(mpt__env(MPT_ENV_PLAN_DEBUG), "1") == 0;
}

/* ---- pass 2: locality order ---------------------------------------------- */

/* Sorts indices with a comparison that takes a context (qsort has none,
 * and a global would make planning unsafe from two threads): insertion
 * sort, stable, fine for the thousands of devices and candidates here. */
void mpt__sort_indices(size_t *idx, size_t n, mpt__cmp_fn cmp, const void *ctx)
{
    for (size_t i = 1; i < n; i++) {
        size_t v = idx[i], j = i;
        while (j > 0 && cmp(ctx, idx[j - 1], v) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
}

int mpt__by_locality(const void *ctx, size_t ia, size_t ib)
{
    const mpt_cluster_t *c = ctx;
    const mpt_cluster_device_t *a = mpt_cluster_device(c, ia), *b = mpt_cluster_device(c, ib);
    int d;
    if ((d = a->locality.node - b->locality.node) != 0)
        return d;
    if ((d = a->locality.package - b->locality.package) != 0)
        return d;
    if ((d = a->locality.numa_node - b->locality.numa_node) != 0)
        return d;
    if ((d = strcmp(a->info.pci_address, b->info.pci_address)) != 0)
        return d;
    return ia < ib ? -1 : ia > ib;
}

/* Whether two devices are interchangeable for planning: same profile and
 * memory (then two replicas of such devices partition alike). */
static int same_kind(const mpt_cluster_t *c, const mpt_cluster_device_t *eff, size_t a, size_t b)
{
    const mpt_cluster_device_t *x = &eff[a], *y = &eff[b];
    return x->info.global_mem_bytes == y->info.global_mem_bytes &&
           x->profile.gemm_gflops == y->profile.gemm_gflops &&
           x->profile.mem_gbps == y->profile.mem_gbps && x->profile.h2d_gbps == y->profile.h2d_gbps &&
           x->profile.d2h_gbps == y->profile.d2h_gbps && x->profile.launch_us == y->profile.launch_us &&
           memcmp(x->profile.gemm, y->profile.gemm, sizeof x->profile.gemm) == 0 &&
           memcmp(&x->profile.calibration, &y->profile.calibration,
                  sizeof x->profile.calibration) == 0 &&
           mpt_cluster_link(c, a, a) == mpt_cluster_link(c, b, b);
}

/* ---- passes 4 and 5: one configuration ------------------------------------ */

/* Per-layer times of one kind of device at one tensor fraction and
 * micro-batch size, as prefix sums: fwd[l], bwd[l], time[l] = forward,
 * backward and both of layers < l.  Kept for the whole planning run:
 * shapes share micro-batch sizes, groups share kinds and fractions, so a
 * thousand devices need a few hundred rows, not a million cost calls. */
typedef struct {
    size_t kind;
    double fraction, samples;
    double *fwd, *bwd, *time;
} rows_t;

typedef struct {
    const size_t *kind_of; /* per device: the index of its kind */
    const mpt_cluster_device_t *eff; /* per device: as it works in this company */
    rows_t **e; /* each allocated alone: stage contexts keep pointers across growth */
    size_t n, cap;
} rows_cache_t;

static void rows_cache_free(rows_cache_t *rc)
{
    for (size_t i = 0; i < rc->n; i++) {
        free(rc->e[i]->fwd);
        free(rc->e[i]);
    }
    free(rc->e);
    rc->e = NULL, rc->n = rc->cap = 0;
}

/* The rows of device `dev` at `fraction` and `samples` per micro-batch,
 * computed on first use; NULL when out of memory. */
static const rows_t *rows_get(rows_cache_t *rc, const mpt__model_cost_t *mc,
                              const mpt_cluster_t *c, size_t dev, double fraction, double samples)
{
    size_t kind = rc->kind_of[dev], L = mc->nlayers;
    for (size_t i = rc->n; i-- > 0;) /* the latest first: a shape asks for the same again */
        if (rc->e[i]->kind == kind && rc->e[i]->fraction == fraction &&
            rc->e[i]->samples == samples)
            return rc->e[i];
    if (rc->n == rc->cap) {
        size_t cap = rc->cap ? 2 * rc->cap : 64;
        rows_t **grown = realloc(rc->e, cap * sizeof *grown);
        if (!grown)
            return NULL;
        rc->e = grown, rc->cap = cap;
    }
    rows_t *r = malloc(sizeof *r);
    double *mem = malloc(3 * (L + 1) * sizeof *mem);
    if (!mem || !r) {
        free(r), free(mem);
        return NULL;
    }
    rc->e[rc->n] = r;
    *r = (rows_t){kind, fraction, samples, mem, mem + L + 1, mem + 2 * (L + 1)};
    const mpt_cluster_device_t *d = &rc->eff[dev];
    (void)c;
    r->fwd[0] = r->bwd[0] = r->time[0] = 0;
    for (size_t l = 0; l < L; l++) {
        double f = mpt__cost_layers(mc, l, l, d, samples, fraction, 0),
               b = mpt__cost_layers(mc, l, l, d, samples, fraction, 1);
        r->fwd[l + 1] = r->fwd[l] + f;
        r->bwd[l + 1] = r->bwd[l] + b;
        r->time[l + 1] = r->time[l] + f + b;
    }
    rc->n++;
    return r;
}

/* Everything a stage cost needs, as prefix sums over the layers so that
 * the partition's O(pp * L^2) cost calls take O(tp) each:
 *   rows[g]     the times of group member g (rows_t)
 *   tpc[s][l]   tensor-parallel all-reduces of layers < l in stage s
 *   params[w][l], saved[w][l]  parameter and saved-activation bytes of
 *               layers < l that a tensor-parallel member holds a fraction
 *               of (w = 0) or whole (w = 1, mpt__layer_cost_t.tp_whole)
 *   outmax[w]   sparse tables of the per-layer output bytes (range maximum)
 * Member g of stage s is group[s * tp + g]. */
typedef struct {
    const mpt__model_cost_t *mc;
    const mpt_cluster_t *c;
    const size_t *group;
    const double *fraction;
    size_t tp, pp, microbatches, nlayers, levels;
    double samples;        /* per micro-batch */
    mpt__pipe_schedule_t schedule;
    int slots;
    double slot_share;     /* of the optimizer state a member holds: 1, or under ZeRO-1
                            * and 2 its replica's batch share (engine/data_parallel.c),
                            * under ZeRO-2 of the gradients too */
    int zero;              /* the ZeRO stage */
    rows_cache_t *cache;
    const rows_t **rows;
    double *tpc, *params, *saved, *outmax;
    double *xfer;          /* [s][l]: both ways across boundary s after layer l */
    size_t tied_head, tied_owner; /* a layer reading another's weight (lm_head), and
                                   * that one; tied_head = nlayers: none */
    double tied_bytes;     /* the weight, copied onto a stage without its owner */
    unsigned char *roomy;  /* [s][g]: the whole model fits, no check needed */
    char why[256];         /* the first memory shortfall seen */
} stage_ctx;

static void stage_ctx_free(stage_ctx *x)
{
    free(x->rows), free(x->tpc), free(x->params), free(x->saved), free(x->outmax);
    free(x->xfer), free(x->roomy);
    x->tpc = x->params = x->saved = x->outmax = x->xfer = NULL;
    x->rows = NULL, x->roomy = NULL;
}

/* The tensor-parallel collectives of layer l on a group of tp devices
 * (mpt__layer_cost_t.tp_allreduce_bytes: one all-reduce per Megatron pair
 * each way, all-gathers where a slice must become whole). */
double mpt__tp_allreduces(const mpt__model_cost_t *mc, const mpt_cluster_t *c,
                          const size_t *group, size_t tp, size_t l, double samples)
{
    if (tp < 2 || mc->layers[l].tp_allreduce_bytes <= 0)
        return 0;
    return mpt__cost_allreduce(c, group, tp, mc->layers[l].tp_allreduce_bytes * samples);
}

static double tp_comm(const stage_ctx *x, size_t s, size_t l)
{
    return mpt__tp_allreduces(x->mc, x->c, x->group + s * x->tp, x->tp, l, x->samples);
}

static double stage_memory(const stage_ctx *x, size_t s, size_t g, size_t first, size_t last,
                           int recompute);
static int stage_fits_alloc(const stage_ctx *x, size_t s, size_t g, size_t first, size_t last,
                            int recompute, char *why, size_t why_size);

static int stage_ctx_init(stage_ctx *x)
{
    size_t L = x->nlayers, n = x->pp * x->tp;
    x->levels = 1;
    while ((1u << x->levels) <= L)
        x->levels++;
    x->rows = malloc(n * sizeof *x->rows);
    x->tpc = malloc(x->pp * (L + 1) * sizeof *x->tpc);
    x->params = malloc(2 * (L + 1) * sizeof *x->params);
    x->saved = malloc(2 * (L + 1) * sizeof *x->saved);
    x->outmax = malloc(2 * x->levels * L * sizeof *x->outmax);
    x->xfer = malloc(x->pp * L * sizeof *x->xfer);
    x->roomy = malloc(n);
    if (!x->rows || !x->tpc || !x->params || !x->saved || !x->outmax || !x->xfer || !x->roomy) {
        stage_ctx_free(x);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    for (size_t g = 0; g < n; g++) {
        /* Neighbours are usually alike: skip the cache's search then. */
        if (g > 0 && x->fraction[g] == x->fraction[g - 1] &&
            x->cache->kind_of[x->group[g]] == x->cache->kind_of[x->group[g - 1]])
            x->rows[g] = x->rows[g - 1];
        else if (!(x->rows[g] = rows_get(x->cache, x->mc, x->c, x->group[g], x->fraction[g],
                                         x->samples))) {
            stage_ctx_free(x);
            return mpt__fail(MPT_ERR_NOMEM, "out of memory");
        }
    }
    for (size_t s = 0; s < x->pp; s++) {
        double *t = x->tpc + s * (L + 1);
        t[0] = 0;
        for (size_t l = 0; l < L; l++)
            t[l + 1] = t[l] + tp_comm(x, s, l);
    }
    x->params[0] = x->saved[0] = x->params[L + 1] = x->saved[L + 1] = 0;
    x->tied_head = L;
    for (size_t l = 0; l < L; l++) {
        const mpt__layer_cost_t *lc = &x->mc->layers[l];
        int w = lc->tp_whole;
        if (lc->tied_owner >= 0 && lc->tied_bytes > 0 && x->tied_head == L) {
            x->tied_head = l, x->tied_owner = (size_t)lc->tied_owner;
            x->tied_bytes = lc->tied_bytes;
        }
        for (int v = 0; v < 2; v++) {
            size_t o = (size_t)v * (L + 1);
            x->params[o + l + 1] = x->params[o + l] + (v == w ? lc->param_bytes : 0);
            x->saved[o + l + 1] = x->saved[o + l] + (v == w ? lc->saved_bytes : 0);
            x->outmax[(size_t)v * x->levels * L + l] = v == w ? lc->out_bytes : 0;
        }
    }
    for (size_t v = 0; v < 2; v++) {
        double *t = x->outmax + v * x->levels * L;
        for (size_t k = 1; k < x->levels; k++)
            for (size_t l = 0; l + (1u << k) <= L; l++)
                t[k * L + l] = fmax(t[(k - 1) * L + l], t[(k - 1) * L + l + (1u << (k - 1))]);
    }
    for (size_t s = 0; s < x->pp; s++)
        for (size_t l = 0; l < L; l++)
            x->xfer[s * L + l] =
                s + 1 < x->pp ? 2 * mpt__cost_transfer(x->c, x->group[s * x->tp + x->tp - 1],
                                                       x->group[(s + 1) * x->tp],
                                                       x->mc->layers[l].out_bytes * x->samples)
                              : 0;
    for (size_t g = 0; g < n; g++) {
        char why[8];
        x->roomy[g] = stage_memory(x, g / x->tp, g % x->tp, 0, L - 1, 0) <=
                          (double)mpt_cluster_device(x->c, x->group[g])->info.global_mem_bytes &&
                      stage_fits_alloc(x, g / x->tp, g % x->tp, 0, L - 1, 0, why, sizeof why);
    }
    return MPT_OK;
}

static double range_outmax(const stage_ctx *x, int whole, size_t first, size_t last)
{
    size_t k = 0, len = last - first + 1;
    const double *t = x->outmax + (size_t)whole * x->levels * x->nlayers;
    while ((2u << k) <= len)
        k++;
    return fmax(t[k * x->nlayers + first], t[k * x->nlayers + last + 1 - (1u << k)]);
}

/* In-flight micro-batches of stage s: GPipe keeps all of them, 1F1B at
 * most the stages after it plus one. */
static size_t in_flight(const stage_ctx *x, size_t s)
{
    size_t k = x->schedule == MPT__PIPE_GPIPE ? x->microbatches : x->pp - s;
    return k < x->microbatches ? k : x->microbatches;
}

/* Bytes member g of stage s holds for layers [first, last]: the same sum
 * as mpt__cost_memory, from the prefix sums. */
static double stage_memory(const stage_ctx *x, size_t s, size_t g, size_t first, size_t last,
                           int recompute)
{
    /* Recomputing keeps one micro-batch's activations, and the inputs of
     * the others (mpt__cost_memory's `kept`). */
    double sets = recompute ? 1.0 : (double)in_flight(x, s);
    double share = x->fraction[s * x->tp + g], bytes = 0, largest = 0, held = 0;
    /* Whole gradients, and a micro-batch's copy when they accumulate;
     * ZeRO-2 has neither but one buffer for its shard or its window. */
    double grads = x->zero == 2 ? 0 : 1 + (x->microbatches > 1);
    for (int w = 0; w < 2; w++) {
        size_t o = (size_t)w * (x->nlayers + 1);
        double part = w ? 1.0 : share;
        double params = x->params[o + last + 1] - x->params[o + first];
        if (first <= x->tied_head && x->tied_head <= last && x->tied_owner < first &&
            x->mc->layers[x->tied_head].tp_whole == w)
            params += x->tied_bytes;
        double saved = x->saved[o + last + 1] - x->saved[o + first];
        bytes += part * (params * (1 + grads + x->slots * x->slot_share) +
                         sets * x->samples * saved);
        held += part * params;
        largest = fmax(largest, part * range_outmax(x, w, first, last));
    }
    if (x->zero == 2)
        bytes += fmax(x->slot_share * held, mpt__cost_grad_window(x->mc, first, last, share));
    if (x->tied_head < x->nlayers && first <= x->tied_owner && x->tied_owner <= last &&
        x->tied_head > last)
        bytes += x->tied_bytes; /* the owner's buffer for the copy's gradient */
    if (recompute && in_flight(x, s) > 0)
        bytes += (double)(in_flight(x, s) - 1) * x->samples * x->mc->layers[first].in_bytes;
    largest = fmax(largest, x->mc->layers[first].in_bytes); /* the whole stage input */
    /* two ping-pong working buffers, and the largest workspace (a loop:
     * only stages that may not fit get here, see roomy) */
    return bytes + 2 * x->samples * largest +
           mpt__cost_scratch(x->mc, first, last, x->samples, x->fraction[s * x->tp + g]);
}

/* Whether every buffer member g of stage s makes for layers [first, last]
 * fits its device's largest allocation (mpt__cost_fits_alloc; else why
 * says which does not).  The engine's micro-batches are whole samples, the
 * largest rounded up. */
static int stage_fits_alloc(const stage_ctx *x, size_t s, size_t g, size_t first, size_t last,
                            int recompute, char *why, size_t why_size)
{
    return mpt__cost_fits_alloc(x->mc, first, last, ceil(x->samples), in_flight(x, s),
                                x->fraction[s * x->tp + g], recompute ? MPT__MEM_RECOMPUTE : 0,
                                &mpt_cluster_device(x->c, x->group[s * x->tp + g])->info, why,
                                why_size);
}

/* Whether stage s recomputes layers [first, last]: where the engine can
 * (no tensor-parallel group) and only when a member would not hold it
 * otherwise, in its memory or its largest allocation (recomputation costs
 * a second forward). */
static int stage_recomputes(const stage_ctx *x, size_t s, size_t first, size_t last)
{
    if (x->tp > 1)
        return 0;
    const mpt_cluster_device_t *d = mpt_cluster_device(x->c, x->group[s * x->tp]);
    char why[8];
    return !x->roomy[s * x->tp] &&
           (stage_memory(x, s, 0, first, last, 0) > (double)d->info.global_mem_bytes ||
            !stage_fits_alloc(x, s, 0, first, last, 0, why, sizeof why));
}

/* Forward + backward of layers [first, last] on stage s (the slowest group
 * member), its tensor-parallel all-reduces and its outgoing activation
 * transfer; -1 when a member cannot hold it. */
static double stage_cost(void *ctx, size_t s, size_t first, size_t last)
{
    stage_ctx *x = ctx;
    size_t L = x->nlayers;
    const size_t *dev = x->group + s * x->tp;
    double slowest = 0;
    for (size_t g = 0; g < x->tp; g++) {
        const mpt_cluster_device_t *d = mpt_cluster_device(x->c, dev[g]);
        const rows_t *rw = x->rows[s * x->tp + g];
        int roomy = x->roomy[s * x->tp + g];
        int recompute = !roomy && stage_recomputes(x, s, first, last);
        double need = roomy ? 0 : stage_memory(x, s, g, first, last, recompute);
        /* recomputation's second forward */
        double extra = recompute ? rw->fwd[last + 1] - rw->fwd[first] : 0;
        if (need > (double)d->info.global_mem_bytes) {
            if (!x->why[0])
                snprintf(x->why, sizeof x->why,
                         "device %d (%s) would need %.0f bytes for layers %zu-%zu, has %llu: "
                         "%.0f bytes short",
                         d->info.index, d->info.name, need, first, last,
                         (unsigned long long)d->info.global_mem_bytes,
                         need - (double)d->info.global_mem_bytes);
            return -1;
        }
        char why[sizeof x->why];
        if (!roomy && !stage_fits_alloc(x, s, g, first, last, recompute, why, sizeof why)) {
            if (!x->why[0])
                snprintf(x->why, sizeof x->why, "%s", why);
            return -1;
        }
        const double *t = rw->time, here = t[last + 1] - t[first] + extra;
        slowest = here > slowest ? here : slowest; /* the hottest line: no libm call */
    }
    slowest += x->tpc[s * (L + 1) + last + 1] - x->tpc[s * (L + 1) + first];
    return slowest + x->xfer[s * L + last];
}

/* What batch shares and tensor fractions follow: the measured GEMM rate,
 * in the company of the candidate's other devices (rows_cache_t.eff). */
static double speed(const rows_cache_t *rc, size_t d)
{
    double g = rc->eff[d].profile.gemm_gflops;
    return g > 0 ? g : 1e-9;
}

typedef mpt__plan_shape_t shape_t;

/* What a replica's batch share (and under ZeRO its optimizer-state
 * shard) is proportional to: its devices' speed, or, when that share
 * leaves a fast device short of memory, their memory (DESIGN.md: shard
 * sizes proportional to speed and bounded by memory). */
typedef enum { SHARE_BY_SPEED, SHARE_BY_MEMORY } share_basis_t;

static double share_weight(const mpt_cluster_t *c, const rows_cache_t *rc, size_t d,
                           share_basis_t basis)
{
    if (basis == SHARE_BY_SPEED)
        return speed(rc, d);
    double m = (double)mpt_cluster_device(c, d)->info.global_mem_bytes;
    return m > 0 ? m : 1;
}

/* Builds the plan of one configuration over the ordered devices. */
static int place(const mpt__model_cost_t *mc, const mpt_cluster_t *c, const size_t *order,
                 rows_cache_t *cache, size_t batch, int slots, int zero, share_basis_t basis,
                 const shape_t *sh, mpt__plan_t **out, char *why, size_t why_size)
{
    int status = MPT_OK;
    size_t per_replica = sh->pp * sh->tp, L = mc->nlayers;
    double total_weight = 0, *rest = NULL;
    size_t *samples = NULL;
    mpt__plan_t *p = calloc(1, sizeof *p);
    double *fraction = calloc(per_replica, sizeof *fraction);
    size_t *first = calloc(sh->pp + 1, sizeof *first);
    const size_t *prev_group = NULL;
    double prev_share = -1;
    stage_ctx x = {0}; /* the last replica's costs, reused by replicas alike */
    *out = NULL;
    if (!p || !fraction || !first || !(p->replicas = calloc(sh->dp, sizeof *p->replicas))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    p->dp = sh->dp, p->pp = sh->pp, p->tp = sh->tp, p->microbatches = sh->microbatches;
    p->batch = batch, p->schedule = sh->schedule, p->optimizer_slots = slots;
    p->zero = zero;
    p->nreplicas = sh->dp;
    for (size_t i = 0; i < sh->dp * per_replica; i++)
        total_weight += share_weight(c, cache, order[i], basis);
    /* Whole samples per replica, proportional to its weight (largest
     * remainder), and at least one per micro-batch. */
    if (!(samples = calloc(sh->dp, sizeof *samples)) || !(rest = calloc(sh->dp, sizeof *rest))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t given = 0;
    for (size_t r = 0; r < sh->dp; r++) {
        double rep_weight = 0;
        for (size_t i = 0; i < per_replica; i++)
            rep_weight += share_weight(c, cache, order[r * per_replica + i], basis);
        double ideal = (double)batch * rep_weight / total_weight;
        samples[r] = (size_t)ideal;
        rest[r] = ideal - (double)samples[r];
        given += samples[r];
    }
    while (given < batch) {
        size_t top = 0;
        for (size_t r = 1; r < sh->dp; r++)
            if (rest[r] > rest[top])
                top = r;
        samples[top]++, rest[top] = -1, given++;
    }
    for (size_t r = 0; r < sh->dp; r++)
        if (samples[r] < sh->microbatches) {
            snprintf(why, why_size, "replica %zu would get %zu of the %zu samples, fewer than its "
                     "%zu micro-batches", r, samples[r], batch, sh->microbatches);
            status = MPT_ERR_INVALID;
            goto out;
        }
    for (size_t r = 0; r < sh->dp; r++) {
        const size_t *group = order + r * per_replica;
        mpt__plan_replica_t *rep = &p->replicas[r];
        rep->batch_share = (double)samples[r] / (double)batch;
        for (size_t s = 0; s < sh->pp; s++) {
            double group_speed = 0;
            for (size_t g = 0; g < sh->tp; g++)
                group_speed += speed(cache, group[s * sh->tp + g]);
            for (size_t g = 0; g < sh->tp; g++)
                fraction[s * sh->tp + g] = speed(cache, group[s * sh->tp + g]) / group_speed;
        }
        /* A replica of the same kinds of devices as the previous one, with
         * the same batch share, partitions alike: reuse its split.  (Only
         * the links inside differ, and only when the replicas straddle
         * nodes differently, which the simulator still sees.) */
        int reuse = prev_group && rep->batch_share == prev_share;
        for (size_t i = 0; reuse && i < per_replica; i++)
            reuse = cache->kind_of[group[i]] == cache->kind_of[prev_group[i]] &&
                    (i + 1 == per_replica ||
                     mpt_cluster_link(c, group[i], group[i + 1]) ==
                         mpt_cluster_link(c, prev_group[i], prev_group[i + 1]));
        if (!reuse) {
            stage_ctx_free(&x);
            x = (stage_ctx){.mc = mc, .c = c, .group = group, .fraction = fraction,
                            .tp = sh->tp, .pp = sh->pp, .microbatches = sh->microbatches,
                            .nlayers = L,
                            .samples = (double)batch * rep->batch_share / (double)sh->microbatches,
                            .schedule = sh->schedule, .slots = slots,
                            .slot_share = zero ? rep->batch_share : 1.0, .zero = zero,
                            .cache = cache};
            if ((status = stage_ctx_init(&x)) < 0)
                goto out;
            double bottleneck = 0;
            status = mpt__partition(L, sh->pp, stage_cost, &x, first, &bottleneck);
            if (status < 0) {
                snprintf(why, why_size, "%s", x.why[0] ? x.why : mpt_last_error());
                goto out;
            }
        }
        x.group = group; /* a reused context describes this replica's devices alike */
        prev_group = group, prev_share = rep->batch_share;
        if (!(rep->stages = calloc(sh->pp, sizeof *rep->stages))) {
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        rep->nstages = sh->pp;
        for (size_t s = 0; s < sh->pp && status == MPT_OK; s++) {
            mpt__plan_stage_t *st = &rep->stages[s];
            st->first = first[s], st->last = first[s + 1] - 1;
            st->ndevices = sh->tp;
            if (!(st->devices = calloc(sh->tp, sizeof *st->devices))) {
                status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
                break;
            }
            /* The simulator takes the group's times as given: the
             * tensor-parallel all-reduces are folded in, half forward and
             * half backward. */
            double comm = x.tpc[s * (L + 1) + st->last + 1] - x.tpc[s * (L + 1) + st->first];
            st->recompute = stage_recomputes(&x, s, st->first, st->last);
            for (size_t g = 0; g < sh->tp; g++) {
                size_t dev = group[s * sh->tp + g];
                const rows_t *rw = x.rows[s * sh->tp + g];
                double f = fraction[s * sh->tp + g];
                st->devices[g] =
                    (mpt__plan_device_t){dev, f, stage_memory(&x, s, g, st->first, st->last,
                                                              st->recompute)};
                st->fwd_s = fmax(st->fwd_s, rw->fwd[st->last + 1] - rw->fwd[st->first] + comm / 2);
                st->bwd_s = fmax(st->bwd_s, rw->bwd[st->last + 1] - rw->bwd[st->first] + comm / 2 +
                                                (st->recompute ? rw->fwd[st->last + 1] -
                                                                     rw->fwd[st->first]
                                                               : 0));
            }
        }
        if (status < 0)
            goto out;
    }
out:
    stage_ctx_free(&x);
    free(samples);
    free(rest);
    free(fraction);
    free(first);
    if (status < 0)
        mpt__plan_free(p);
    else
        *out = p;
    return status;
}

typedef struct {
    shape_t sh;
    size_t subset;     /* the devices: index in the search's subsets */
    int uniform;       /* the uniform split of the shape, not the planned one */
    int viable;        /* a shape worth placing (not rejected outright) */
    mpt__plan_t *plan; /* once placed; NULL when rejected or pruned */
    double lb, step;   /* lower bound, simulated step */
    int simulated;     /* step holds its prediction */
    char why[512];     /* why rejected */
} candidate_t;

/* Viable shapes by lower bound, the others last. */
static int by_bound(const void *ctx, size_t ia, size_t ib)
{
    const candidate_t *a = (const candidate_t *)ctx + ia, *b = (const candidate_t *)ctx + ib;
    if (!a->viable || !b->viable)
        return !a->viable - !b->viable;
    return a->lb < b->lb ? -1 : a->lb > b->lb ? 1 : 0;
}

/* A lower bound of a shape's step before placing it: every layer runs
 * somewhere, at best on the fastest kind of device, split over tp devices
 * (a device's share f of a layer takes at least f of its whole time: GEMM
 * rates only fall with size), so a replica's stages add up to at least W
 * per micro-batch and its slowest to W / pp; a pipeline takes at least its
 * stages' sum plus m - 1 times its slowest. */
typedef struct {
    double samples, work; /* W for that micro-batch size, on one device */
} bound_memo_t;

static double shape_bound(const mpt__model_cost_t *mc, const mpt_cluster_device_t *eff,
                          const size_t *kinds, size_t nkinds, const shape_t *sh, size_t batch,
                          bound_memo_t *memo, size_t *nmemo)
{
    double samples = (double)batch / (double)sh->dp / (double)sh->microbatches, w = 0;
    size_t i = 0;
    /* Shapes share few micro-batch sizes (batch / dp / m): W is computed
     * once per size (memo holds one entry per shape at most). */
    while (i < *nmemo && memo[i].samples != samples)
        i++;
    if (i == *nmemo) {
        for (size_t l = 0; l < mc->nlayers; l++) {
            double best = HUGE_VAL;
            for (size_t k = 0; k < nkinds; k++) {
                const mpt_cluster_device_t *d = &eff[kinds[k]];
                best = fmin(best, mpt__cost_layers(mc, l, l, d, samples, 1.0, 0) +
                                      mpt__cost_layers(mc, l, l, d, samples, 1.0, 1));
            }
            w += best;
        }
        memo[(*nmemo)++] = (bound_memo_t){samples, w};
    }
    w = memo[i].work / (double)sh->tp;
    return w * (1.0 + (double)(sh->microbatches - 1) / (double)sh->pp);
}

/* A lower bound of a plan's step: per replica, the sum of its stages'
 * micro-batch times plus m - 1 times the slowest (the pipeline's fill,
 * drain and steady state, transfers left out), then the all-reduce of the
 * first stage, which can only start after the last backward of all. */
static double lower_bound(const mpt__plan_t *p, const mpt__model_cost_t *mc,
                          const mpt_cluster_t *c, mpt_allreduce_t algo, size_t *scratch)
{
    double lb = 0, bytes = 0;
    for (size_t r = 0; r < p->nreplicas; r++) {
        double sum = 0, worst = 0;
        for (size_t s = 0; s < p->replicas[r].nstages; s++) {
            double t = p->replicas[r].stages[s].fwd_s + p->replicas[r].stages[s].bwd_s;
            sum += t;
            worst = fmax(worst, t);
        }
        lb = fmax(lb, sum + (double)(p->microbatches - 1) * worst);
        scratch[r] = p->replicas[r].stages[0].devices[0].device;
    }
    const mpt__plan_stage_t *st = &p->replicas[0].stages[0];
    bytes = mpt__cost_param_bytes(mc, st->first, st->last, st->devices[0].fraction);
    double ring = mpt__cost_allreduce(c, scratch, p->nreplicas, bytes);
    double hier = mpt__cost_allreduce_hier(c, scratch, p->nreplicas, bytes);
    switch (algo) {
    case MPT_ALLREDUCE_RING: return lb + ring;
    case MPT_ALLREDUCE_HIERARCHICAL: return lb + (hier < HUGE_VAL ? hier : ring);
    default: return lb + fmin(ring, hier);
    }
}

/* Simulates the plan under its all-reduce and records the prediction. */
static int predict(mpt__plan_t *p, const mpt__model_cost_t *mc, const mpt_cluster_t *c)
{
    mpt__sim_result_t sim = {0};
    int status = mpt__simulate(p, mc, c, &sim, NULL);
    if (status < 0)
        return status;
    p->predicted_step_s = sim.step_s;
    p->compute_s = sim.compute_s;
    p->p2p_s = sim.p2p_s;
    p->allreduce_s = sim.allreduce_s;
    p->bubble_s = sim.bubble_fraction * sim.step_s;
    mpt__sim_result_free(&sim);
    return MPT_OK;
}

/* The requested all-reduce, or (AUTO) the faster of the two in the
 * simulation: hierarchical only when it is strictly faster, so that one
 * node, where the two are the same ring, keeps the flat one, and never
 * under ZeRO (the engine shards over the ring only). */
int mpt__plan_predict(mpt__plan_t *p, const mpt__model_cost_t *mc, const mpt_cluster_t *c,
                      mpt_allreduce_t algo)
{
    int status;
    p->allreduce = algo == MPT_ALLREDUCE_HIERARCHICAL ? algo : MPT_ALLREDUCE_RING;
    MPT_TRY(predict(p, mc, c));
    if (algo != MPT_ALLREDUCE_AUTO || p->nreplicas < 4 || p->zero)
        return MPT_OK;
    mpt__plan_t ring = *p; /* its predictions, to restore */
    p->allreduce = MPT_ALLREDUCE_HIERARCHICAL;
    MPT_TRY(predict(p, mc, c));
    if (!(p->predicted_step_s < ring.predicted_step_s)) {
        p->allreduce = MPT_ALLREDUCE_RING;
        p->predicted_step_s = ring.predicted_step_s, p->compute_s = ring.compute_s;
        p->p2p_s = ring.p2p_s, p->allreduce_s = ring.allreduce_s, p->bubble_s = ring.bubble_s;
    }
out:
    return status;
}


static int add_alternative(mpt__plan_alt_t **alts, size_t *n, const shape_t *sh,
                           const char *tag, double step, const char *rejected)
{
    char desc[256];
    mpt__plan_alt_t *grown = realloc(*alts, (*n + 1) * sizeof *grown);
    if (!grown)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    *alts = grown;
    snprintf(desc, sizeof desc, "dp=%zu pp=%zu tp=%zu m=%zu %s%s", sh->dp, sh->pp, sh->tp,
             sh->microbatches, sh->schedule == MPT__PIPE_GPIPE ? "gpipe" : "1f1b", tag);
    grown[*n].description = mpt__strdup(desc);
    grown[*n].step_s = step;
    grown[*n].rejected = rejected ? mpt__strdup(rejected) : NULL;
    if (!grown[*n].description || (rejected && !grown[*n].rejected))
        return MPT_ERR_NOMEM;
    (*n)++;
    if (plan_debug())
        mpt__log(MPT_LOG_INFO, "plan: %s -> %s%s", desc,
                 rejected ? "rejected: " : "", rejected ? rejected : "");
    if (plan_debug() && !rejected)
        mpt__log(MPT_LOG_INFO, "plan: %s predicted %.6f s per step", desc, step);
    return MPT_OK;
}

/* Uniform splits are tried on sets of at most this many devices: on
 * 1,024 they would double the planning time (mpt-bench plan). */
#define UNIFORM_MAX 64

/* The search's state across the candidate subsets. */
typedef struct {
    const mpt__model_t *m;
    const mpt__model_cost_t *mc;
    const mpt_cluster_t *c;
    const mpt_plan_request_t *req;
    int slots;
    mpt__subset_t *subsets;
    size_t nsubsets;
    mpt_cluster_device_t *eff; /* per cluster device, priced for the current subset */
    size_t *kind_of, *kinds, nkinds, *order, *scratch;
    rows_cache_t rows;
    candidate_t *cand;
    size_t ncand, cap;
    mpt__plan_t *best;
    size_t best_subset;
    char first_why[512];
} search_t;

static void keep_why(search_t *S, const char *why)
{
    /* Keep the first reason, but a memory shortfall beats any other: it
     * is what the user must hear when nothing fits. */
    if (!S->first_why[0] || (strstr(why, "would need") && !strstr(S->first_why, "would need")))
        snprintf(S->first_why, sizeof S->first_why, "%s", why);
}

/* Whether the engine would run shape sh with ZeRO (engine.c, check_zero). */
static int zero_allowed(const search_t *S, const shape_t *sh)
{
    int tied = 0;
    for (size_t i = 0; i < S->mc->nlayers; i++)
        tied |= S->mc->layers[i].tied_owner >= 0;
    return sh->dp > 1 && S->req->allreduce != MPT_ALLREDUCE_HIERARCHICAL && !(tied && sh->pp > 1);
}

/* Places (or splits uniformly), checks, bounds and simulates candidate k;
 * keeps it when it beats the best so far. */
static int try_candidate(search_t *S, candidate_t *k, size_t n)
{
    int status = MPT_OK;
    if (S->best && k->lb >= S->best->predicted_step_s) {
        snprintf(k->why, sizeof k->why, "pruned: at least %.6g s per step, the best takes %.6g s",
                 k->lb, S->best->predicted_step_s);
        return MPT_OK;
    }
    /* 4-5. Place and partition (or split uniformly). */
    status = k->uniform ? mpt__plan_uniform(S->mc, S->c, S->eff, S->order, &k->sh, S->req->batch,
                                            S->slots, &k->plan, k->why, sizeof k->why)
                        : place(S->mc, S->c, S->order, &S->rows, S->req->batch, S->slots, 0,
                                SHARE_BY_SPEED, &k->sh, &k->plan, k->why, sizeof k->why);
    /* 4b. A shape whose replicas do not fit with the whole optimizer state
     * each may fit with ZeRO-1 (a replica holds its batch share of it),
     * and failing that with ZeRO-2 (and of the gradients, but for one
     * layer's window), where the engine runs ZeRO: replicas without a tied
     * weight across stages, over the ring.  ZeRO-1's reduce-scatter and all-gather move
     * what the ring all-reduce moves (that is their sum), so its step is
     * costed alike; ZeRO-2 reduce-scatters every micro-batch (the
     * simulator's allreduce node grows to match).  Tried only when memory
     * calls for it, neither displaces a plan that fits without it.
     * Each stage is tried with batch shares by speed, then, when the
     * faster replicas' larger shares are what does not fit, by memory:
     * a slower step beats none, and a lower stage beats a higher one. */
    for (int zero = 0; zero <= 2 && status == MPT_ERR_DEVICE_MEMORY && !k->uniform &&
                       (zero == 0 ? k->sh.dp > 1 : zero_allowed(S, &k->sh));
         zero++)
        for (share_basis_t basis = zero ? SHARE_BY_SPEED : SHARE_BY_MEMORY;
             basis <= SHARE_BY_MEMORY && status == MPT_ERR_DEVICE_MEMORY; basis++) {
            char why0[sizeof k->why];
            snprintf(why0, sizeof why0, "%s", k->why);
            k->why[0] = 0;
            status = place(S->mc, S->c, S->order, &S->rows, S->req->batch, S->slots, zero, basis,
                           &k->sh, &k->plan, k->why, sizeof k->why);
            if (status < 0 && !k->why[0]) /* the shortfall before says enough */
                memcpy(k->why, why0, sizeof why0);
        }
    if (status == MPT_ERR_NOMEM)
        return status;
    if (status < 0) {
        if (!k->why[0])
            snprintf(k->why, sizeof k->why, "%s", mpt_last_error());
        keep_why(S, k->why);
        k->plan = NULL;
        return MPT_OK;
    }
    if (mpt__plan_unrunnable(S->m, k->plan, k->why, sizeof k->why)) {
        keep_why(S, k->why);
        mpt__plan_free(k->plan);
        k->plan = NULL;
        return MPT_OK;
    }
    (void)n;
    k->lb = fmax(k->lb, lower_bound(k->plan, S->mc, S->c, S->req->allreduce, S->scratch));
    if (S->best && k->lb >= S->best->predicted_step_s) {
        snprintf(k->why, sizeof k->why, "pruned: at least %.6g s per step, the best takes %.6g s",
                 k->lb, S->best->predicted_step_s);
        mpt__plan_free(k->plan);
        k->plan = NULL;
        return MPT_OK;
    }
    MPT_TRY(mpt__plan_predict(k->plan, S->mc, S->c, S->req->allreduce));
    k->step = k->plan->predicted_step_s;
    k->simulated = 1;
    /* 7. Choose: strictly faster only, so that on a tie the earlier
     * candidate (more devices, planned before uniform) stays. */
    if (!S->best || k->step < S->best->predicted_step_s) {
        mpt__plan_free(S->best);
        S->best = k->plan;
        S->best_subset = k->subset;
    } else
        mpt__plan_free(k->plan);
    k->plan = NULL;
out:
    if (status < 0) {
        mpt__plan_free(k->plan);
        k->plan = NULL;
    }
    return status;
}

/* Passes 2-7 on the devices of subset si. */
static int search_subset(search_t *S, size_t si)
{
    int status = MPT_OK;
    const mpt__subset_t *sub = &S->subsets[si];
    size_t n = sub->n, nshapes = 0, first = S->ncand;
    shape_t *shapes = NULL;
    size_t *rank = NULL;
    bound_memo_t *memo = NULL;
    size_t nmemo = 0;
    /* 2. Order by locality; price the devices in each other's company. */
    memcpy(S->order, sub->devices, n * sizeof *S->order);
    mpt__sort_indices(S->order, n, mpt__by_locality, S->c);
    mpt__cost_shared(S->c, S->order, n, S->eff);
    /* One device of each kind, for the bounds and the rows cache. */
    S->nkinds = 0;
    for (size_t a = 0; a < n; a++) {
        size_t i = S->order[a], j = 0;
        while (j < S->nkinds && !same_kind(S->c, S->eff, S->kinds[j], i))
            j++;
        if (j == S->nkinds)
            S->kinds[S->nkinds++] = i;
        S->kind_of[i] = j;
    }
    rows_cache_free(&S->rows);
    /* 3. Shapes, planned and (several devices) uniform, each bounded. */
    MPT_TRY(mpt__plan_shapes(S->c, S->order, n, S->req, &shapes, &nshapes));
    size_t want = S->ncand + 2 * nshapes;
    if (want > S->cap) {
        candidate_t *grown = realloc(S->cand, want * sizeof *grown);
        if (!grown) {
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        S->cand = grown, S->cap = want;
    }
    if (!(memo = malloc((nshapes ? nshapes : 1) * sizeof *memo))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nshapes; i++)
        for (int u = 0; u < (n > 1 && n <= UNIFORM_MAX ? 2 : 1); u++) {
            candidate_t *k = &S->cand[S->ncand++];
            memset(k, 0, sizeof *k);
            k->sh = shapes[i], k->subset = si, k->uniform = u;
            if (k->sh.pp > S->mc->nlayers) {
                snprintf(k->why, sizeof k->why, "%zu stages for %zu layers", k->sh.pp,
                         S->mc->nlayers);
                keep_why(S, k->why);
            } else {
                k->viable = 1;
                k->lb = shape_bound(S->mc, S->eff, S->kinds, S->nkinds, &k->sh, S->req->batch,
                                    memo, &nmemo);
            }
        }
    /* 6. Simulate, most promising first: a pipeline cannot beat its
     * stages' sum plus m - 1 bottleneck micro-batches, so once that bound
     * exceeds the best simulated step the rest need no simulation. */
    size_t count = S->ncand - first;
    if (!(rank = malloc((count ? count : 1) * sizeof *rank))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < count; i++)
        rank[i] = i;
    mpt__sort_indices(rank, count, by_bound, S->cand + first);
    for (size_t i = 0; i < count; i++)
        if (S->cand[first + rank[i]].viable)
            MPT_TRY(try_candidate(S, &S->cand[first + rank[i]], n));
out:
    free(rank);
    free(memo);
    free(shapes);
    return status;
}

/* " uniform", and " on devices 0,2-3 (why)" for a subset of the devices. */
static void candidate_tag(const search_t *S, const candidate_t *k, char *tag, size_t size)
{
    const mpt__subset_t *sub = &S->subsets[k->subset];
    size_t at = (size_t)snprintf(tag, size, "%s", k->uniform ? " uniform" : "");
    if (k->subset == 0 || at >= size)
        return; /* subset 0 is every allowed device */
    at += (size_t)snprintf(tag + at, size - at, " on %s", sub->n > 1 ? "devices " : "device ");
    for (size_t i = 0; i < sub->n && at < size; i++) {
        size_t j = i;
        while (j + 1 < sub->n && sub->devices[j + 1] == sub->devices[j] + 1)
            j++;
        at += (size_t)(j > i ? snprintf(tag + at, size - at, "%s%zu-%zu", i ? "," : "",
                                        sub->devices[i], sub->devices[j])
                             : snprintf(tag + at, size - at, "%s%zu", i ? "," : "",
                                        sub->devices[i]));
        i = j;
    }
    if (at < size)
        snprintf(tag + at, size - at, " (%s)", sub->why);
}

/* Why each device the chosen plan leaves idle is left out: the best step
 * of the candidates that used it, against the chosen one. */
static int idle_notes(search_t *S, const size_t *allowed, size_t nallowed)
{
    const mpt__subset_t *chosen = &S->subsets[S->best_subset];
    char *text = NULL;
    size_t len = 0;
    for (size_t a = 0; a < nallowed; a++) {
        size_t d = allowed[a], in = 0;
        for (size_t i = 0; i < chosen->n && !in; i++)
            in = chosen->devices[i] == d;
        if (in)
            continue;
        double with = HUGE_VAL;
        for (size_t i = 0; i < S->ncand; i++) {
            const candidate_t *k = &S->cand[i];
            const mpt__subset_t *sub = &S->subsets[k->subset];
            for (size_t j = 0; k->simulated && j < sub->n; j++)
                if (sub->devices[j] == d)
                    with = fmin(with, k->step);
        }
        const mpt_cluster_device_t *dev = mpt_cluster_device(S->c, d);
        char line[512];
        if (with < HUGE_VAL)
            snprintf(line, sizeof line, "device %zu (%s) left idle: the best plan using it takes "
                     "%.3f ms per step, %.2fx the chosen %.3f ms\n", d, dev->info.name,
                     with * 1e3, with / S->best->predicted_step_s,
                     S->best->predicted_step_s * 1e3);
        else
            snprintf(line, sizeof line, "device %zu (%s) left idle: every plan using it is "
                     "predicted slower than the chosen %.3f ms (pruned by its bound) or "
                     "does not fit\n", d, dev->info.name, S->best->predicted_step_s * 1e3);
        size_t l = strlen(line);
        char *grown = realloc(text, len + l + 1);
        if (!grown) {
            free(text);
            return mpt__fail(MPT_ERR_NOMEM, "out of memory");
        }
        text = grown;
        memcpy(text + len, line, l + 1);
        len += l;
    }
    S->best->idle = text;
    return MPT_OK;
}

/* Predicted time of the whole model per sample on each device alone:
 * how the subsets rank kinds (GEMM rate alone misranks small layers). */
static int device_speeds(const mpt__model_cost_t *mc, const mpt_cluster_t *c, size_t batch,
                         double *speed)
{
    size_t n = mpt_cluster_device_count(c);
    for (size_t i = 0; i < n; i++) {
        const mpt_cluster_device_t *d = mpt_cluster_device(c, i);
        double s = (double)batch / (double)(n ? n : 1);
        s = s < 1 ? 1 : s;
        double t = mpt__cost_layers(mc, 0, mc->nlayers - 1, d, s, 1.0, 0) +
                   mpt__cost_layers(mc, 0, mc->nlayers - 1, d, s, 1.0, 1);
        speed[i] = t > 0 ? s / t : 0;
    }
    return MPT_OK;
}

int mpt__plan_make(const mpt__model_t *m, const mpt_cluster_t *c, const mpt_plan_request_t *req,
                   mpt__plan_t **out)
{
    return mpt__plan_make_excluding(m, c, req, NULL, out);
}

int mpt__plan_make_excluding(const mpt__model_t *m, const mpt_cluster_t *c,
                             const mpt_plan_request_t *req, const unsigned char *excluded,
                             mpt__plan_t **out)
{
    int status = MPT_OK;
    mpt__model_cost_t mc = {0};
    size_t n = mpt_cluster_device_count(c), nalts = 0, nallowed = 0;
    mpt__plan_alt_t *alts = NULL;
    search_t S = {0};
    size_t *allowed = malloc((n ? n : 1) * sizeof *allowed);
    double *speed = malloc((n ? n : 1) * sizeof *speed);
    S.m = m, S.mc = &mc, S.c = c, S.req = req;
    S.eff = malloc((n ? n : 1) * sizeof *S.eff);
    S.kind_of = malloc((n ? n : 1) * sizeof *S.kind_of);
    S.kinds = malloc((n ? n : 1) * sizeof *S.kinds);
    S.order = malloc((n ? n : 1) * sizeof *S.order);
    S.scratch = malloc((n ? n : 1) * sizeof *S.scratch);
    S.rows = (rows_cache_t){S.kind_of, S.eff, NULL, 0, 0};

    *out = NULL;
    if (!allowed || !speed || !S.eff || !S.kind_of || !S.kinds || !S.order || !S.scratch) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (req->batch == 0) {
        status = mpt__fail(MPT_ERR_INVALID, "planning needs a batch size > 0");
        goto out;
    }
    S.slots = req->optimizer == MPT_OPTIM_ADAMW ? 2 : 1;
    /* 1. Costs. */
    MPT_TRY(mpt__model_cost(m, &mc));
    /* 0. Which devices: the request's (all by default), then the subsets
     * worth trying (subsets.c), all of them first. */
    for (size_t i = 0; i < n; i++)
        if (!excluded || !excluded[i])
            allowed[nallowed++] = i;
    if (nallowed == 0) {
        status = mpt__fail(MPT_ERR_NO_DEVICE, "no device of the %zu left to plan on (every one "
                           "excluded)", n);
        goto out;
    }
    MPT_TRY(device_speeds(&mc, c, req->batch, speed));
    if (req->all_devices) {
        if (!(S.subsets = calloc(1, sizeof *S.subsets)) ||
            !(S.subsets[0].devices = malloc((n ? n : 1) * sizeof *S.subsets[0].devices))) {
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        memcpy(S.subsets[0].devices, allowed, nallowed * sizeof *allowed);
        S.subsets[0].n = nallowed, S.nsubsets = 1;
        snprintf(S.subsets[0].why, sizeof S.subsets[0].why, "all devices");
    } else
        MPT_TRY(mpt__plan_subsets(c, allowed, nallowed, speed, &S.subsets, &S.nsubsets));
    for (size_t si = 0; si < S.nsubsets; si++) {
        double t0 = mpt__now();
        size_t before = S.ncand;
        MPT_TRY(search_subset(&S, si));
        if (plan_debug())
            mpt__log(MPT_LOG_INFO, "plan: subset %zu (%s, %zu devices): %zu candidates in %.3f s",
                     si, S.subsets[si].why, S.subsets[si].n, S.ncand - before, mpt__now() - t0);
    }
    for (size_t i = 0; i < S.ncand; i++) {
        char tag[160];
        candidate_tag(&S, &S.cand[i], tag, sizeof tag);
        MPT_TRY(add_alternative(&alts, &nalts, &S.cand[i].sh, tag,
                                S.cand[i].simulated ? S.cand[i].step : -1,
                                S.cand[i].simulated ? NULL : S.cand[i].why));
    }
    if (!S.best) {
        int memory = strstr(S.first_why, "would need") != NULL;
        status = nalts ? mpt__fail(memory ? MPT_ERR_DEVICE_MEMORY : MPT_ERR_INVALID,
                                   "no configuration of the %zu device(s) works: %s", n,
                                   S.first_why)
                       : mpt__fail(MPT_ERR_INVALID,
                                   "no configuration matches the pinned dimensions (dp x pp x "
                                   "tp must equal the %zu device(s), micro-batches at most the "
                                   "batch per replica)",
                                   n);
        goto out;
    }
    MPT_TRY(idle_notes(&S, allowed, nallowed));
    if (plan_debug() && S.best->idle)
        mpt__log(MPT_LOG_INFO, "plan: %s", S.best->idle);
    S.best->alternatives = alts, S.best->nalternatives = nalts;
    alts = NULL, nalts = 0;
    *out = S.best;
    S.best = NULL;
out:
    mpt__plan_free(S.best);
    free(S.cand);
    for (size_t i = 0; i < nalts; i++) {
        free(alts[i].description);
        free(alts[i].rejected);
    }
    free(alts);
    mpt__plan_subsets_free(S.subsets, S.nsubsets);
    mpt__model_cost_free(&mc);
    free(allowed);
    free(speed);
    free(S.eff);
    free(S.kind_of);
    free(S.kinds);
    free(S.order);
    free(S.scratch);
    rows_cache_free(&S.rows);
    return status;
}
