/*
 * plan/cost.c: the cost model.  What each layer of a model costs (FLOPs,
 * memory traffic, parameters, activations, kernel launches), and from the
 * measured profiles of a cluster's devices what a range of layers costs on a
 * device, what a transfer between two devices costs, what a ring all-reduce
 * costs and how many bytes a device holds for a range of layers.
 *
 * A roofline with a launch term, per layer:
 *
 *   time = max(flops / R(gemm size), bytes / mem bandwidth) + launches * latency
 *
 * where R is the device's GEMM rate at the size of the layer's GEMMs (see
 * gemm_rate below).  Everything is in seconds, bytes and FLOPs; the
 * profiles give GFLOP/s and GB/s (1e9 per second) and microseconds.
 *
 * Left out: overlap of compute with transfers (the simulator schedules
 * those), contention of several transfers on one link, caches, the scratch
 * buffers of conv2d (im2col) and the loader's host buffers.  Nothing here
 * touches a device.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "plan/plan.h"

/* ---- per-layer costs ------------------------------------------------------ */

/* Kernel launches per micro-batch: each kind states its own, forward and
 * backward, next to the passes that issue them (nn/layers.c,
 * nn/layers_gpt.c); a view launches none, nor does an activation that the
 * layer before runs (mpt__model_fused_act), whose launches are then that
 * layer's fused counts.  The model is costed as one range: a stage
 * boundary between a layer and its activation (which unfuses them) is not
 * seen here.  A layer whose input gradient nobody needs (the model's
 * first) skips some of its backward launches; the count assumes the
 * gradient is computed, as it is for the first layer of every pipeline
 * stage but the first. */
static void launches_of(const mpt__model_t *m, size_t i, int *fwd, int *bwd)
{
    const mpt__layer_t *l = &m->layers[i];
    size_t last = m->nlayers - 1;
    *fwd = l->kind->is_view ? 0 : l->kind->launches_fwd;
    *bwd = l->kind->is_view ? 0 : l->kind->launches_bwd;
    if (mpt__model_is_fused(m, i, 0, last))
        *fwd = 0, *bwd = 0;
    else if (mpt__model_fused_act(m, i, last))
        *fwd = l->kind->launches_fused_fwd, *bwd = l->kind->launches_fused_bwd;
}

/* The collectives of each layer when tensor-parallel, from the walk of
 * engine/shard.c (mpt__tp_walk) over the whole model: a column-split layer
 * all-reduces its input gradient (not the model's first computing layer,
 * whose input gradient nobody needs), a row-split one its output, a block
 * split inside both for each of its two pairs (attention, MLP); a slice
 * gathered before a layer costs half an all-reduce of that layer's input
 * (a ring all-gather's traffic).  A stage that starts mid-way starts whole,
 * which this one walk does not see; a model the walk refuses gets no
 * collectives (the planner rejects its tensor-parallel plans anyway). */
static void tp_collectives(const mpt__model_t *m, mpt__model_cost_t *mc)
{
    int gather_after = 0;
    size_t first_computing = 0;
    mpt__tp_step_t *steps = calloc(m->nlayers ? m->nlayers : 1, sizeof *steps);
    if (!steps || m->nlayers == 0 || mpt__tp_walk(m, 0, m->nlayers - 1, steps, &gather_after) < 0) {
        free(steps);
        return;
    }
    while (first_computing + 1 < m->nlayers && m->layers[first_computing].kind->is_view)
        first_computing++;
    for (size_t i = 0; i < m->nlayers; i++) {
        const mpt__layer_t *l = &m->layers[i];
        mpt__layer_cost_t *c = &mc->layers[i];
        double in = 4.0 * (double)mpt__shape_numel(&l->in);
        c->tp_whole = steps[i].role == MPT__TP_WHOLE;
        c->tp_allreduce_bytes = steps[i].gather_before ? in / 2 : 0;
        if (steps[i].role == MPT__TP_ROW)
            c->tp_allreduce_bytes += c->out_bytes;
        else if (steps[i].role == MPT__TP_COLUMN && i > first_computing)
            c->tp_allreduce_bytes += in;
        else if (steps[i].role == MPT__TP_INNER) /* attention and MLP: a pair each */
            c->tp_allreduce_bytes += 2 * (c->out_bytes + in);
    }
    free(steps);
}

int mpt__model_cost(const mpt__model_t *m, mpt__model_cost_t *out)
{
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt__model_cost: NULL output");
    memset(out, 0, sizeof *out);
    if (!m)
        return mpt__fail(MPT_ERR_INVALID, "mpt__model_cost: NULL model");
    out->layers = calloc(m->nlayers ? m->nlayers : 1, sizeof *out->layers);
    if (!out->layers)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory for the costs of %zu layers", m->nlayers);
    out->nlayers = m->nlayers;
    out->input_bytes = 4.0 * (double)mpt__shape_numel(&m->input);
    for (size_t i = 0; i < m->nlayers; i++) {
        const mpt__layer_t *l = &m->layers[i];
        mpt__layer_cost_t *c = &out->layers[i];
        double in = (double)mpt__shape_numel(&l->in), o = (double)mpt__shape_numel(&l->out);
        for (int q = 0; q < l->nparams; q++)
            c->param_bytes += 4.0 * (double)l->params[q].numel;
        c->out_bytes = 4.0 * o; /* after a view too: the boundary sends its output */
        c->in_bytes = 4.0 * in;
        if (l->kind->scratch_floats) { /* affine in the samples: from 1 and 2 */
            double one = (double)l->kind->scratch_floats(l, 1);
            double two = (double)l->kind->scratch_floats(l, 2);
            c->scratch_bytes = 4.0 * (two - one), c->scratch_base = 4.0 * (2 * one - two);
        }
        c->split_axes = l->kind->split_axes;
        c->tied_owner = l->tied_layer;
        c->tied_bytes = l->tied_layer >= 0 ? 4.0 * (double)l->tied.numel : 0;
        launches_of(m, i, &c->launches_fwd, &c->launches_bwd);
        c->act_bytes = l->kind->is_view || l->kind->is_loss ? 0 : c->out_bytes;
        if (l->kind->is_view)
            continue; /* no kernel: no FLOPs, no traffic; its input is the next layer's */
        c->fwd_flops = l->kind->flops(l, 1, 0);
        c->bwd_flops = l->kind->flops(l, 1, 1);
        /* Forward reads x and writes y.  Backward reads dy and x and writes
         * dx: (2 in + out) floats, about twice the forward for the
         * same-shape layers that dominate the count (relu, dropout...).
         * Kernels that read x twice (layernorm's two passes) or keep it in
         * cache are not told apart. */
        c->fwd_bytes = 4.0 * (in + o);
        c->bwd_bytes = 4.0 * (2.0 * in + o);
        /* Kept for backward, as engine/executor.c lays it out: every
         * layer's input (a view's input is its output, kept once as the
         * next layer's input) plus its own saved state (layernorm's mean
         * and rstd, maxpool's argmax). */
        c->saved_bytes = 4.0 * (in + (double)l->saved_per_sample);
    }
    tp_collectives(m, out);
    return MPT_OK;
}

void mpt__model_cost_free(mpt__model_cost_t *mc)
{
    if (!mc)
        return;
    free(mc->layers);
    memset(mc, 0, sizeof *mc);
}

/* ---- calibration ------------------------------------------------------- */

uint64_t mpt__cal_alone_steps(const mpt_calibration_t *c)
{
    return c->steps > c->company_steps ? c->steps - c->company_steps : 0;
}

/* Whether some of the steps measured the device's compute alone. */
static int measured_alone(const mpt_calibration_t *c)
{
    return mpt__cal_alone_steps(c) > 0;
}

static int measured_in_company(const mpt_calibration_t *c)
{
    return c->company_steps > 0 && c->company_forward > 0 && c->company_backward > 0;
}

double mpt__cal_factor(const mpt_profile_t *p, mpt__cal_kind_t kind)
{
    const mpt_calibration_t *c = &p->calibration;
    /* Compute alone; measured only in company, the company's factors
     * serve (on a busy machine they are above 1, and the raw profile alone
     * would win every comparison with a measured plan). */
    int company = !measured_alone(c) && measured_in_company(c);
    double f = kind == MPT__CAL_FORWARD    ? (company ? c->company_forward : c->forward)
               : kind == MPT__CAL_BACKWARD ? (company ? c->company_backward : c->backward)
               : kind == MPT__CAL_TRANSFER ? c->transfer
                                           : c->allreduce;
    return c->steps > 0 && f > 0 && isfinite(f) ? f : 1.0;
}

void mpt__cal_in_company(mpt_calibration_t *c)
{
    if (!measured_in_company(c))
        return; /* the factors alone serve */
    c->forward = c->company_forward, c->backward = c->company_backward;
    c->company_steps = 0; /* the steps now all stand behind forward, backward */
}

/* ---- device rates ------------------------------------------------------- */

/* The GEMM rate (FLOP/s) a device reaches on GEMMs of `flops` FLOPs each.
 * gemm_gflops is the best of the profile's points, what large GEMMs reach;
 * small ones run far below it (an A100 measures 2150 GFLOP/s at 256^3
 * against 18900 at 2048^3), and the layers of the models here are small.
 * So when the profile has points, the rate is interpolated between them,
 * linearly in log(FLOPs of one GEMM), held at the first and last point
 * outside their span, and never above gemm_gflops.  Shapes of equal FLOPs
 * are not told apart (the tall-skinny point counts by its FLOPs).  Without
 * points, gemm_gflops for every size. */
static double gemm_rate(const mpt_profile_t *p, double flops)
{
    double f[MPT_PROFILE_GEMM_SHAPES], r[MPT_PROFILE_GEMM_SHAPES], rate;
    int n = 0;
    for (int i = 0; i < MPT_PROFILE_GEMM_SHAPES; i++) {
        const mpt_gemm_point_t *g = &p->gemm[i];
        if (g->m == 0 || g->n == 0 || g->k == 0 || !(g->gflops > 0))
            continue;
        double fi = 2.0 * g->m * g->n * (double)g->k;
        int j = n++;
        for (; j > 0 && f[j - 1] > fi; j--) { /* insertion sort by FLOPs */
            f[j] = f[j - 1];
            r[j] = r[j - 1];
        }
        f[j] = fi;
        r[j] = g->gflops;
    }
    if (n == 0)
        return p->gemm_gflops * 1e9;
    if (flops <= f[0])
        rate = r[0];
    else if (flops >= f[n - 1])
        rate = r[n - 1];
    else {
        int b = 1;
        while (f[b] < flops)
            b++;
        /* f[b - 1] < flops <= f[b], so the span is not empty */
        double t = (log(flops) - log(f[b - 1])) / (log(f[b]) - log(f[b - 1]));
        rate = r[b - 1] + t * (r[b] - r[b - 1]);
    }
    if (p->gemm_gflops > 0 && rate > p->gemm_gflops)
        rate = p->gemm_gflops;
    return rate * 1e9;
}

/* The part of layer l a tensor-parallel member at `share` computes and
 * holds: its share of a split layer, all of a replicated one. */
static double tp_part(const mpt__layer_cost_t *l, double share)
{
    return l->tp_whole ? 1.0 : share;
}

/* What layer l's pass does on a micro-batch of `samples` at tensor share
 * `share`: its FLOPs and the device memory bytes it moves. */
static void layer_work(const mpt__layer_cost_t *l, double samples, double share, int backward,
                       double *flops, double *bytes)
{
    double part = tp_part(l, share);
    *flops = part * samples * (backward ? l->bwd_flops : l->fwd_flops);
    /* Parameters: read once per micro-batch forward; read (for dx) and
     * the gradient written once backward. */
    *bytes = part * (samples * (backward ? l->bwd_bytes : l->fwd_bytes) +
                     (backward ? 2.0 : 1.0) * l->param_bytes);
}

void mpt__cost_work(const mpt__model_cost_t *mc, size_t first, size_t last, double samples,
                    double share, int backward, double *flops, double *bytes)
{
    *flops = 0, *bytes = 0;
    if (!mc || first > last || first >= mc->nlayers)
        return;
    if (last >= mc->nlayers)
        last = mc->nlayers - 1;
    for (size_t i = first; i <= last; i++) {
        double f, b;
        layer_work(&mc->layers[i], samples, share, backward, &f, &b);
        *flops += f, *bytes += b;
    }
}

double mpt__cost_layers(const mpt__model_cost_t *mc, size_t first, size_t last,
                        const mpt_cluster_device_t *d, double samples, double share,
                        int backward)
{
    const mpt_profile_t *p;
    double t = 0;
    if (!mc || !d || first > last || first >= mc->nlayers)
        return 0; /* an empty range costs nothing */
    if (last >= mc->nlayers)
        last = mc->nlayers - 1;
    p = &d->profile;
    for (size_t i = first; i <= last; i++) {
        const mpt__layer_cost_t *l = &mc->layers[i];
        double flops, bytes;
        layer_work(l, samples, share, backward, &flops, &bytes);
        /* One GEMM forward, two of half the FLOPs backward (dW and dx): the
         * size of each is exact for a linear layer, and for conv2d while
         * its micro-batch fits one chunk (tensor/conv.c). */
        double gemm = backward ? flops / 2 : flops;
        double compute = flops > 0 ? flops / gemm_rate(p, gemm) : 0;
        double memory = bytes > 0 ? bytes / (p->mem_gbps * 1e9) : 0;
        int launches = backward ? l->launches_bwd : l->launches_fwd;
        t += (compute > memory ? compute : memory) + launches * p->launch_us * 1e-6;
    }
    /* What training measured on this device against the model (mpt.h). */
    return t * mpt__cal_factor(p, backward ? MPT__CAL_BACKWARD : MPT__CAL_FORWARD);
}

/* ---- transfers ---------------------------------------------------------- */

/* A transfer as the profiles predict it, before calibration. */
static double raw_transfer(const mpt_cluster_t *c, size_t a, size_t b, double bytes)
{
    const mpt_cluster_device_t *da, *db;
    if (a == b || !(bytes > 0))
        return 0;
    da = c ? mpt_cluster_device(c, a) : NULL;
    db = c ? mpt_cluster_device(c, b) : NULL;
    if (!da || !db)
        return HUGE_VAL; /* no such device: no way there */
    mpt_link_class_t link = mpt_cluster_link(c, a, b);
    if (link == MPT_LINK_SAME_DEVICE)
        return 0; /* two entries for one device (same PCI address) */
    /* Devices never share an OpenCL context here (one per device), so even
     * two GPUs below one PCIe switch copy through host memory: a blocking
     * read from a, a blocking write to b, each paying a launch latency.
     * The closer within-node classes would matter with peer copies, which
     * OpenCL does not offer across contexts. */
    double t = bytes / (da->profile.d2h_gbps * 1e9) + bytes / (db->profile.h2d_gbps * 1e9) +
               (da->profile.launch_us + db->profile.launch_us) * 1e-6;
    int cross = link == MPT_LINK_CROSS_NODE ||
                (link == MPT_LINK_UNKNOWN && da->locality.node != db->locality.node);
    if (cross) {
        double gbps = 0, latency_us = 0;
        mpt_cluster_network(c, &gbps, &latency_us);
        t += bytes / (gbps * 1e9) + latency_us * 1e-6;
    }
    return t;
}

double mpt__cost_transfer(const mpt_cluster_t *c, size_t a, size_t b, double bytes)
{
    double t = raw_transfer(c, a, b, bytes);
    if (t <= 0 || !isfinite(t))
        return t;
    /* Both ends take part in a transfer: the mean of their factors. */
    const mpt_cluster_device_t *da = mpt_cluster_device(c, a), *db = mpt_cluster_device(c, b);
    return t * 0.5 * (mpt__cal_factor(&da->profile, MPT__CAL_TRANSFER) +
                      mpt__cal_factor(&db->profile, MPT__CAL_TRANSFER));
}

double mpt__cost_allreduce(const mpt_cluster_t *c, const size_t *devices, size_t n, double bytes)
{
    double worst = 0;
    if (n <= 1 || !devices || !(bytes > 0))
        return 0;
    /* Ring: reduce-scatter then all-gather, 2 (n - 1) steps, each moving a
     * chunk of bytes / n from every device to the next at once; a step
     * lasts as long as the slowest hop of the ring. */
    double factor = 0;
    for (size_t k = 0; k < n; k++) {
        double t = raw_transfer(c, devices[k], devices[(k + 1) % n], bytes / (double)n);
        worst = t > worst ? t : worst;
        const mpt_cluster_device_t *d = mpt_cluster_device(c, devices[k]);
        if (d) /* the ring runs at its slowest member's pace */
            factor = fmax(factor, mpt__cal_factor(&d->profile, MPT__CAL_ALLREDUCE));
    }
    return 2.0 * (double)(n - 1) * worst * (factor > 0 ? factor : 1.0);
}

static int node_of(const mpt_cluster_t *c, size_t d)
{
    const mpt_cluster_device_t *dev = mpt_cluster_device(c, d);
    return dev ? dev->locality.node : -1;
}

double mpt__cost_allreduce_hier(const mpt_cluster_t *c, const size_t *devices, size_t n,
                                double bytes)
{
    if (n < 4 || !devices || !c)
        return HUGE_VAL;
    /* The nodes in order of first appearance, as comm/hier.c takes them:
     * node x's first device is devices[first[x]]; sorted holds the devices
     * node by node, so that the j-th of node x is sorted[x * m + j]. */
    size_t *first = malloc(n * sizeof *first), *of = malloc(n * sizeof *of);
    size_t *sorted = malloc(n * sizeof *sorted), k = 0, m = 0;
    double t = HUGE_VAL;
    if (!first || !of || !sorted)
        goto out;
    for (size_t i = 0; i < n; i++) {
        size_t x = 0;
        while (x < k && node_of(c, devices[first[x]]) != node_of(c, devices[i]))
            x++;
        if (x == k)
            first[k++] = i;
        of[i] = x;
    }
    m = n / k;
    if (k < 2 || m < 2 || m * k != n)
        goto out;
    for (size_t x = 0, at = 0; x < k; x++) { /* node by node, in device order */
        size_t here = 0;
        for (size_t i = 0; i < n; i++)
            if (of[i] == x)
                sorted[at + here++] = devices[i];
        if (here != m)
            goto out; /* uneven */
        at += m;
    }
    if (!(bytes > 0)) {
        t = 0;
        goto out;
    }
    /* Inside: the slowest node's reduce-scatter plus all-gather (the full
     * ring's time).  Across: ring j joins the j-th devices; its steps move
     * bytes / (m k) per device, and the m rings of a node share its
     * network link, which therefore carries bytes / k per step. */
    double inside = 0, across = 0, gbps = 0, latency_us = 0;
    for (size_t x = 0; x < k; x++)
        inside = fmax(inside, mpt__cost_allreduce(c, &sorted[x * m], m, bytes));
    mpt_cluster_network(c, &gbps, &latency_us);
    double shared = gbps > 0 ? (double)(m - 1) * bytes / ((double)(m * k) * gbps * 1e9) : 0;
    for (size_t j = 0; j < m; j++)
        for (size_t x = 0; x < k; x++) {
            double hop = mpt__cost_transfer(c, sorted[x * m + j], sorted[(x + 1) % k * m + j],
                                            bytes / (double)(m * k));
            across = fmax(across, hop + shared);
        }
    t = inside + 2.0 * (double)(k - 1) * across;
out:
    free(first);
    free(of);
    free(sorted);
    return t;
}

double mpt__cost_allreduce_by(const mpt_cluster_t *c, const size_t *devices, size_t n,
                              double bytes, mpt_allreduce_t algo)
{
    if (algo == MPT_ALLREDUCE_HIERARCHICAL) {
        double t = mpt__cost_allreduce_hier(c, devices, n, bytes);
        if (t < HUGE_VAL)
            return t;
    }
    return mpt__cost_allreduce(c, devices, n, bytes);
}

/* ---- memory ---------------------------------------------------------------- */

double mpt__cost_param_bytes(const mpt__model_cost_t *mc, size_t first, size_t last,
                             double share)
{
    double bytes = 0;
    for (size_t i = first; mc && i <= last && i < mc->nlayers; i++)
        bytes += tp_part(&mc->layers[i], share) * mc->layers[i].param_bytes;
    return bytes;
}

double mpt__cost_scratch(const mpt__model_cost_t *mc, size_t first, size_t last,
                         double samples, double share)
{
    double most = 0;
    for (size_t i = first; i <= last && i < mc->nlayers; i++) {
        const mpt__layer_cost_t *l = &mc->layers[i];
        most = fmax(most, tp_part(l, share) * (l->scratch_base + samples * l->scratch_bytes));
    }
    return most;
}

double mpt__cost_grad_window(const mpt__model_cost_t *mc, size_t first, size_t last,
                             double share)
{
    double pin = 0, widest = 0;
    for (size_t i = first; mc && i <= last && i < mc->nlayers; i++) {
        int read_later = 0; /* a tied head of this range reads its weight */
        for (size_t j = i + 1; j <= last && j < mc->nlayers; j++)
            read_later |= mc->layers[j].tied_owner == (int)i;
        double bytes = tp_part(&mc->layers[i], share) * mc->layers[i].param_bytes;
        if (read_later)
            pin = bytes;
        else
            widest = fmax(widest, bytes);
    }
    return pin + widest;
}

double mpt__cost_memory_zero(const mpt__model_cost_t *mc, size_t first, size_t last,
                             double samples, size_t in_flight, double share,
                             int optimizer_slots, unsigned flags, int zero, double shard)
{
    if (zero == 2) /* the micro-batches are summed on the host */
        flags &= ~(unsigned)MPT__MEM_ACCUMULATES;
    double bytes = mpt__cost_memory(mc, first, last, samples, in_flight, share,
                                    optimizer_slots, flags);
    double params = mpt__cost_param_bytes(mc, first, last, share);
    if (zero >= 1)
        bytes -= params * (optimizer_slots > 0 ? optimizer_slots : 0) * (1.0 - shard);
    if (zero == 2)
        bytes += fmax(shard * params, mpt__cost_grad_window(mc, first, last, share)) - params;
    return bytes;
}

/* The activations kept for backward: every micro-batch in flight's (saved
 * bytes per sample), or recomputing, their stage inputs and one
 * micro-batch's activations past its input (the executor's one shared
 * region, which starts after the input). */
static double kept(const mpt__model_cost_t *mc, size_t first, size_t in_flight, double samples,
                   double saved, unsigned flags)
{
    if (!(flags & MPT__MEM_RECOMPUTE) || in_flight == 0)
        return (double)in_flight * samples * saved;
    return (double)(in_flight - 1) * samples * mc->layers[first].in_bytes + samples * saved;
}

/* The tied weight a later stage copies from this range's owner: the
 * buffer its gradient arrives in (mpt__stage_reserve_addend). */
static double tied_addend(const mpt__model_cost_t *mc, size_t first, size_t last)
{
    double addend = 0;
    for (size_t i = last + 1; i < mc->nlayers; i++)
        if (mc->layers[i].tied_owner >= (int)first && mc->layers[i].tied_owner <= (int)last)
            addend = fmax(addend, mc->layers[i].tied_bytes);
    return addend;
}

double mpt__cost_memory(const mpt__model_cost_t *mc, size_t first, size_t last,
                        double samples, size_t in_flight, double share, int optimizer_slots,
                        unsigned flags)
{
    int accumulates = (flags & MPT__MEM_ACCUMULATES) != 0;
    double saved = 0, largest = 0;
    if (!mc || first > last || first >= mc->nlayers)
        return 0;
    if (last >= mc->nlayers)
        last = mc->nlayers - 1;
    if (optimizer_slots < 0)
        optimizer_slots = 0;
    /* A device holds its share of each split layer's parameters and,
     * approximately, of its activations (a column-split linear layer in
     * fact keeps its whole input; we accept the undercount to keep the
     * share one number), and the whole of a replicated layer's. */
    double params = mpt__cost_param_bytes(mc, first, last, share);
    for (size_t i = first; i <= last; i++) {
        const mpt__layer_cost_t *l = &mc->layers[i];
        double part = tp_part(l, share);
        if (l->tied_owner >= 0 && (size_t)l->tied_owner < first)
            params += part * l->tied_bytes;
        saved += part * l->saved_bytes;
        largest = fmax(largest, part * l->out_bytes);
    }
    /* The owner of a weight a later stage copies receives that copy's
     * gradient through a device buffer of its size. */
    double addend = tied_addend(mc, first, last);
    /* The working buffers hold the stage's whole input too (the executor
     * does not split it). */
    largest = fmax(largest, mc->layers[first].in_bytes);
    double scratch = mpt__cost_scratch(mc, first, last, samples, share);
    return params * (2.0 + optimizer_slots + (accumulates ? 1 : 0)) +
           kept(mc, first, in_flight, samples, saved, flags) + 2.0 * samples * largest + addend +
           scratch;
}

double mpt__cost_largest_buffer(const mpt__model_cost_t *mc, size_t first, size_t last,
                                double samples, size_t in_flight, double share, unsigned flags,
                                const char **what)
{
    const char *name = "parameters"; /* gradients and each optimizer slot as large */
    if (!mc || first > last || first >= mc->nlayers) {
        *what = name;
        return 0;
    }
    if (last >= mc->nlayers)
        last = mc->nlayers - 1;
    double params = mpt__cost_param_bytes(mc, first, last, share);
    double input = mc->layers[first].in_bytes, outs = 0, state = 0, widest = input;
    for (size_t i = first; i <= last; i++) {
        const mpt__layer_cost_t *l = &mc->layers[i];
        double part = tp_part(l, share);
        if (l->tied_owner >= 0 && (size_t)l->tied_owner < first)
            params += part * l->tied_bytes;
        outs += part * l->act_bytes;
        state += part * (l->saved_bytes - l->in_bytes);
        widest = fmax(widest, part * l->act_bytes);
    }
    int recompute = (flags & MPT__MEM_RECOMPUTE) != 0;
    double sets = recompute ? 1.0 : (double)in_flight;
    double acts = recompute ? (double)in_flight * samples * input + samples * outs
                            : sets * samples * (input + outs);
    const struct {
        double bytes;
        const char *what;
    } buffers[] = {
        {params, name},
        {acts, "activations"},
        {sets * samples * state, "saved layer state"},
        {samples * widest, "activation gradients"},
        {mpt__cost_scratch(mc, first, last, samples, share), "workspace"},
        {tied_addend(mc, first, last), "tied weight's gradient"},
    };
    size_t top = 0;
    for (size_t k = 1; k < sizeof buffers / sizeof buffers[0]; k++)
        if (buffers[k].bytes > buffers[top].bytes)
            top = k;
    *what = buffers[top].what;
    return buffers[top].bytes;
}

int mpt__cost_fits_alloc(const mpt__model_cost_t *mc, size_t first, size_t last, double samples,
                         size_t in_flight, double share, unsigned flags,
                         const mpt_device_info_t *d, char *why, size_t why_size)
{
    const char *what;
    double bytes = mpt__cost_largest_buffer(mc, first, last, samples, in_flight, share, flags,
                                            &what);
    if (bytes <= (double)d->max_alloc_bytes)
        return 1;
    snprintf(why, why_size,
             "device %d (%s) would need a buffer of %.0f bytes (%s of layers %zu-%zu), over its "
             "largest allocation of %llu bytes",
             d->index, d->name, bytes, what, first, last, (unsigned long long)d->max_alloc_bytes);
    return 0;
}
