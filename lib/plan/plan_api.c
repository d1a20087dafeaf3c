/*
 * plan/plan_api.c: the public planning API over the planner, plan JSON
 * (from files and strings) and the simulator, and the human summary of a
 * plan that mpt-plan prints.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "plan/plan.h"

void mpt_plan_request_default(mpt_plan_request_t *r)
{
    memset(r, 0, sizeof *r);
    r->batch = 128;
    r->optimizer = MPT_OPTIM_SGD;
    r->schedule = MPT_PIPE_AUTO;
    r->allreduce = MPT_ALLREDUCE_AUTO;
}

/* The identity a plan records of its model: CRC-32 of its description. */
static void model_id(const mpt_model_t *model, char *buf, size_t size)
{
    uLong crc = crc32(0L, (const Bytef *)model->json, (uInt)strlen(model->json));
    snprintf(buf, size, "%08lx", (unsigned long)crc);
}

/* A plan that records another model is refused: the same layer count is
 * not the same model (shapes, kinds and costs differ). */
static int check_model(const mpt_plan_t *p, const mpt_model_t *model, const char *where)
{
    char id[12];
    model_id(model, id, sizeof id);
    if (p->model_id[0] && strcmp(p->model_id, id) != 0)
        return mpt__fail(MPT_ERR_INVALID,
                         "%s was made for another model (its model CRC-32 %s, this model's %s "
                         "(%s)): plan again for this model",
                         where, p->model_id, id, model->name);
    return MPT_OK;
}

/* A plan whose buffers would not fit a device's largest allocation
 * (max_alloc_bytes) is refused naming the device, the buffer and both
 * sizes: the planner never makes one (planner.c), a hand-edited or
 * foreign plan may hold one.  The engine's allocator checks again. */
static int check_allocations(const mpt_plan_t *p, const mpt_model_t *model,
                             const mpt_cluster_t *cluster, const char *where)
{
    mpt__model_cost_t mc;
    int status = mpt__model_cost(model, &mc);
    for (size_t r = 0; status == MPT_OK && r < p->nreplicas; r++) {
        const mpt__plan_replica_t *rep = &p->replicas[r];
        double samples = ceil((double)p->batch * rep->batch_share / (double)p->microbatches);
        for (size_t s = 0; status == MPT_OK && s < rep->nstages; s++) {
            const mpt__plan_stage_t *st = &rep->stages[s];
            size_t in_flight = p->schedule == MPT__PIPE_1F1B && rep->nstages - s < p->microbatches
                                   ? rep->nstages - s
                                   : p->microbatches;
            for (size_t g = 0; status == MPT_OK && g < st->ndevices; g++) {
                char why[512];
                if (!mpt__cost_fits_alloc(&mc, st->first, st->last, samples, in_flight,
                                          st->devices[g].fraction,
                                          st->recompute ? MPT__MEM_RECOMPUTE : 0,
                                          &mpt_cluster_device(cluster, st->devices[g].device)->info,
                                          why, sizeof why))
                    status = mpt__fail(MPT_ERR_DEVICE_MEMORY,
                                       "%s: replica %zu stage %zu: %s: plan again for these "
                                       "devices", where, r, s, why);
            }
        }
    }
    mpt__model_cost_free(&mc);
    return status;
}

int mpt_plan_create(const mpt_model_t *model, const mpt_cluster_t *cluster,
                    const mpt_plan_request_t *request, mpt_plan_t **out)
{
    if (!model || !cluster || !request || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_plan_create: NULL argument");
    int status = mpt__plan_make(model, cluster, request, out);
    if (status == MPT_OK)
        model_id(model, (*out)->model_id, sizeof (*out)->model_id);
    return status;
}

int mpt_plan_uniform_step(const mpt_model_t *model, const mpt_cluster_t *cluster,
                          const mpt_plan_request_t *request, double *step_s)
{
    if (!model || !cluster || !request || !step_s)
        return mpt__fail(MPT_ERR_INVALID, "mpt_plan_uniform_step: NULL argument");
    return mpt__plan_uniform_step(model, cluster, request, step_s);
}

int mpt_plan_from_json(const char *text, const mpt_model_t *model, const mpt_cluster_t *cluster,
                       mpt_plan_t **out)
{
    if (!text || !model || !cluster || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_plan_from_json: NULL argument");
    *out = NULL;
    int status = mpt__plan_from_json(text, "plan text", model->nlayers,
                                     mpt_cluster_device_count(cluster), out);
    if (status == MPT_OK && ((status = check_model(*out, model, "plan text")) < 0 ||
                             (status = check_allocations(*out, model, cluster, "plan text")) < 0 ||
                             (status = mpt__plan_roles(*out, model)) < 0)) {
        mpt__plan_free(*out);
        *out = NULL;
    }
    return status;
}

int mpt_plan_load(const char *path, const mpt_model_t *model, const mpt_cluster_t *cluster,
                  mpt_plan_t **out)
{
    if (!path || !model || !cluster || !out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_plan_load: NULL argument");
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t n = 0, cap = 0;
    int status;
    *out = NULL;
    if (!f)
        return mpt__fail(MPT_ERR_NOT_FOUND, "plan %s: %s", path, strerror(errno));
    /* Read to the end, whatever the file is (a pipe: --plan /dev/stdin). */
    for (;;) {
        if (cap - n < 4096) {
            char *grown = realloc(text, cap = 2 * cap + 65536);
            if (!grown) {
                fclose(f);
                free(text);
                return mpt__fail(MPT_ERR_NOMEM, "plan %s: out of memory", path);
            }
            text = grown;
        }
        size_t got = fread(text + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        int err = errno;
        fclose(f);
        free(text);
        return mpt__fail(MPT_ERR_IO, "plan %s: %s", path, strerror(err));
    }
    fclose(f);
    text[n] = '\0';
    status = mpt__plan_from_json(text, path, model->nlayers, mpt_cluster_device_count(cluster),
                                 out);
    free(text);
    if (status == MPT_OK && (status = check_model(*out, model, path)) < 0) {
        mpt__plan_free(*out);
        *out = NULL;
        return mpt__fail_context(MPT_ERR_INVALID, "plan ");
    }
    if (status == MPT_OK && (status = check_allocations(*out, model, cluster, path)) < 0) {
        mpt__plan_free(*out);
        *out = NULL;
        return status;
    }
    /* The layers' tensor-parallel roles, once, for the engine to read. */
    if (status == MPT_OK && (status = mpt__plan_roles(*out, model)) < 0) {
        status = mpt__fail_context(status, "plan %s", path);
        mpt__plan_free(*out);
        *out = NULL;
    }
    return status;
}

void mpt_plan_free(mpt_plan_t *plan)
{
    mpt__plan_free(plan);
}

int mpt_plan_to_json(const mpt_plan_t *plan, char **text)
{
    if (!plan || !text)
        return mpt__fail(MPT_ERR_INVALID, "mpt_plan_to_json: NULL argument");
    return mpt__plan_to_json(plan, text);
}

int mpt_plan_simulate(const mpt_plan_t *plan, const mpt_model_t *model,
                      const mpt_cluster_t *cluster, double *step_s, double *bubble,
                      char **trace_json)
{
    mpt__model_cost_t mc = {0};
    mpt__sim_result_t sim = {0};
    int status;
    MPT_TRY(mpt__model_cost(model, &mc));
    MPT_TRY(mpt__simulate(plan, &mc, cluster, &sim, trace_json));
    if (step_s)
        *step_s = sim.step_s;
    if (bubble)
        *bubble = sim.bubble_fraction;
out:
    mpt__sim_result_free(&sim);
    mpt__model_cost_free(&mc);
    return status;
}

/* ---- the human summary ------------------------------------------------------ */

typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} text_t;

static void put(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text_t *t, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if (t->s && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = 2 * (t->cap + (size_t)n + 256);
        char *grown = realloc(t->s, cap);
        if (!grown) {
            t->failed = 1;
            return;
        }
        t->s = grown, t->cap = cap;
    }
}

static const char *layer_name(const mpt_model_t *m, size_t i)
{
    return m->layers[i].kind->name;
}

/* The plan's devices that share cores and the share of their GEMM rate
 * alone that the cost model gives them in this company (share.c):
 * measured together (the profile's concurrent figure) or estimated. */
static void put_shared(text_t *t, const mpt_plan_t *p, const mpt_cluster_t *c)
{
    mpt_cluster_device_t *eff = NULL;
    if (mpt__plan_company(p, c, &eff) < 0) {
        t->failed = 1;
        return;
    }
    int any = 0;
    for (size_t d = 0; d < mpt_cluster_device_count(c); d++) {
        const mpt_profile_t *alone = &mpt_cluster_device(c, d)->profile;
        double share = alone->gemm_gflops > 0 ? eff[d].profile.gemm_gflops / alone->gemm_gflops : 1;
        if (share > 1 - 1e-9) /* not in the plan, or alone on its cores */
            continue;
        put(t, "%s device %zu %.0f%% (%s)",
            any ? "," : "Shared cores, the GEMM rate of each device over its rate alone:", d,
            100 * share, alone->shared_gemm_gflops > 0 ? "measured together" : "estimated");
        any = 1;
    }
    if (any)
        put(t, "\n");
    free(eff);
}

int mpt_plan_describe(const mpt_plan_t *p, const mpt_model_t *m, const mpt_cluster_t *c,
                      int explain, char **text)
{
    text_t t = {0};
    double step = 0, bubble = 0;
    int status = mpt_plan_simulate(p, m, c, &step, &bubble, NULL);
    *text = NULL;
    if (status < 0)
        return status;
    put(&t, "Plan: dp=%zu pp=%zu tp=%zu, %zu micro-batch(es), %s, batch %zu\n", p->dp, p->pp,
        p->tp, p->microbatches, p->schedule == MPT__PIPE_GPIPE ? "GPipe" : "1F1B", p->batch);
    if (p->dp > 1)
        put(&t, "Gradients: %s all-reduce across the %zu replicas\n",
            p->allreduce == MPT_ALLREDUCE_HIERARCHICAL ? "hierarchical (inside each node, then "
                                                         "across nodes)"
                                                       : "ring",
            p->dp);
    for (size_t r = 0; r < p->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++)
            if (p->replicas[r].stages[s].recompute)
                put(&t, "Recomputation: replica %zu stage %zu keeps only its input per "
                        "micro-batch and runs its forward again before each backward\n", r, s);
    if (p->dp > 1 && p->zero == 1)
        put(&t, "Optimizer state: ZeRO-1, each replica holds the state of its batch share of "
                "the parameters (reduce-scatter, update, all-gather)\n");
    else if (p->dp > 1 && p->zero == 2)
        put(&t, "Optimizer state and gradients: ZeRO-2, each replica holds the state and the "
                "gradients of its batch share of the parameters (reduce-scatter per "
                "micro-batch, update, all-gather)\n");
    size_t bottleneck_r = 0, bottleneck_s = 0;
    double worst = -1;
    for (size_t r = 0; r < p->nreplicas; r++) {
        const mpt__plan_replica_t *rep = &p->replicas[r];
        put(&t, "\nReplica %zu (%.1f%% of the batch)\n", r, 100 * rep->batch_share);
        put(&t, "  %-6s %-30s %-18s %21s %12s\n", "stage", "device", "layers",
            "memory used / avail", "compute ms");
        for (size_t s = 0; s < rep->nstages; s++) {
            const mpt__plan_stage_t *st = &rep->stages[s];
            double compute = (st->fwd_s + st->bwd_s) * (double)p->microbatches;
            if (compute > worst)
                worst = compute, bottleneck_r = r, bottleneck_s = s;
            for (size_t g = 0; g < st->ndevices; g++) {
                const mpt_cluster_device_t *d = mpt_cluster_device(c, st->devices[g].device);
                char dev[64], layers[64];
                snprintf(dev, sizeof dev, "%d %.20s%s", d->info.index, d->info.name,
                         st->ndevices > 1 ? "" : "");
                snprintf(layers, sizeof layers, "%zu-%zu (%s..%s)", st->first, st->last,
                         layer_name(m, st->first), layer_name(m, st->last));
                put(&t, "  %-6zu %-30s %-18.18s %8.1f / %6.1f MiB %12.3f", s, dev, layers,
                    st->devices[g].memory_bytes / 1048576.0,
                    (double)d->info.global_mem_bytes / 1048576.0, compute * 1e3);
                if (st->ndevices > 1)
                    put(&t, "  (%.0f%% of each layer)", 100 * st->devices[g].fraction);
                put(&t, "\n");
            }
        }
    }
    put(&t, "\nBottleneck: replica %zu stage %zu (%.3f ms of compute per step)\n", bottleneck_r,
        bottleneck_s, worst * 1e3);
    put(&t, "Bubble: %.1f%% of the pipeline devices' time\n", 100 * bubble);
    put_shared(&t, p, c);
    put(&t, "Predicted: %.3f ms per step, %.0f samples/s (compute %.3f, transfers %.3f, "
            "all-reduce %.3f ms)\n",
        step * 1e3, step > 0 ? (double)p->batch / step : 0, p->compute_s * 1e3, p->p2p_s * 1e3,
        p->allreduce_s * 1e3);
    /* Why this plan: the runner-up among the alternatives. */
    const mpt__plan_alt_t *runner = NULL;
    for (size_t i = 0; i < p->nalternatives; i++) {
        const mpt__plan_alt_t *a = &p->alternatives[i];
        if (a->rejected || a->step_s <= p->predicted_step_s * (1 + 1e-12))
            continue;
        if (!runner || a->step_s < runner->step_s)
            runner = a;
    }
    if (runner)
        put(&t, "Runner-up: %s at %.3f ms per step: this plan is %.1f%% faster\n",
            runner->description, runner->step_s * 1e3,
            100 * (runner->step_s / p->predicted_step_s - 1));
    else {
        int pruned = 0;
        for (size_t i = 0; i < p->nalternatives; i++)
            pruned |= p->alternatives[i].rejected &&
                      strncmp(p->alternatives[i].rejected, "pruned:", 7) == 0;
        put(&t, pruned ? "Runner-up: none simulated (the others were pruned by their lower "
                         "bound; --explain lists them)\n"
                       : "Runner-up: none (no other configuration fits)\n");
    }
    if (p->idle)
        put(&t, "\n%s", p->idle); /* the devices left idle, and why */
    if (explain) {
        put(&t, "\nAlternatives (%zu considered)\n", p->nalternatives);
        for (size_t i = 0; i < p->nalternatives; i++) {
            const mpt__plan_alt_t *a = &p->alternatives[i];
            if (a->rejected)
                put(&t, "  %-28s rejected: %s\n", a->description, a->rejected);
            else
                put(&t, "  %-28s %10.3f ms\n", a->description, a->step_s * 1e3);
        }
    }
    if (t.failed) {
        free(t.s);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory describing a plan");
    }
    *text = t.s;
    return MPT_OK;
}
