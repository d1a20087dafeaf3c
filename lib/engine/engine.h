/*
 * engine/engine.h: executes a plan on several devices at once: one worker
 * thread per (replica, stage), each owning a pipeline stage
 * (engine/executor.h) on its device; activations forward and gradients
 * backward between stages over a transport (comm/comm.h), GPipe or 1F1B
 * over micro-batches; gradients of data-parallel replicas summed by ring
 * all-reduces in buckets as the backward pass completes them.  Never
 * installed.
 *
 * Plan invariance: every stage starts from exactly the one-device values of
 * the model's elements it owns (counter-based init), every replica sees its contiguous share of the
 * step's batch, and gradients are scaled by 1 / (the whole batch) at the
 * loss, so the summed update is the one-device update up to the order of
 * float sums.
 */
#ifndef MPT_ENGINE_ENGINE_H
#define MPT_ENGINE_ENGINE_H

#include "engine/executor.h"
#include "plan/plan.h"

typedef struct mpt__engine mpt__engine_t;

/* Where the plan's devices are when the job spans MPI ranks: device id d
 * is opened by rank device_rank[d]; this process is `rank` of `nranks`. */
typedef struct {
    int rank, nranks;
    const int *device_rank;
} mpt__engine_ranks_t;

/* Per-device figures of the last step (metrics, progress display). */
typedef mpt_device_step_t mpt__engine_device_stats_t;

/* Runs `plan` (any dp x pp x tp; tensor-parallel stages as engine/shard.h
 * splits them) on devices[plan device id], steps of `batch`
 * samples.  `topo` and `cluster` (both optional) bind each worker to its
 * device's cores. */
int mpt__engine_create(const mpt__model_t *model, mpt_device_t *const *devices, size_t ndevices,
                       const mpt__plan_t *plan, size_t batch, uint64_t seed,
                       const mpt_topology_t *topo, const mpt_cluster_t *cluster,
                       mpt__engine_t **out);
/* The same across MPI ranks (ranks NULL or one rank: as above).  Every
 * rank calls it with the same plan; devices[d] is this rank's opened
 * device for the ids it owns and NULL for the others.  Workers run only
 * for this rank's devices and talk to the others' over the MPI transport;
 * each rank also has a control endpoint (the caller's thread) that sums
 * the step's loss and statistics and gathers checkpoints.  Every engine
 * call below is then collective: each rank makes it, in the same order,
 * with the same arguments (the same batch, the whole model's state), and
 * gets the whole job's result. */
int mpt__engine_create_ranks(const mpt__model_t *model, mpt_device_t *const *devices,
                             size_t ndevices, const mpt__plan_t *plan, size_t batch,
                             uint64_t seed, const mpt_topology_t *topo,
                             const mpt_cluster_t *cluster, const mpt__engine_ranks_t *ranks,
                             mpt__engine_t **out);
void mpt__engine_free(mpt__engine_t *e);
/* The deadline of every wait on another rank (mpt__transport_t.timeout_s):
 * past it the step fails naming the rank.  In one process, also the deadline
 * of each worker's training step after the first, and of its evaluations
 * after the first (or 100 measured steps per batch of the set, when longer:
 * workers.c): a worker past it is given up as hung (its device's injected
 * hang returns; a real driver hang keeps its thread, and freeing the engine
 * then waits for it). */
void mpt__engine_set_comm_timeout(mpt__engine_t *e, double seconds);

/* One training step: the same contract as mpt__executor_train_step, the
 * optimizer having applied `updates` updates before it.  *grad_norm: the
 * global norm with clipping or opt->skip_nonfinite, else 0.  *skipped: 1
 * when opt->skip_nonfinite found the norm or the loss not finite and no
 * device updated (the step still counts: data, schedule, dropout move on). */
int mpt__engine_train_step(mpt__engine_t *e, const float *x, const int32_t *y,
                           const mpt__optim_cfg_t *opt, float lr, uint64_t updates,
                           double *loss, double *grad_norm, int *skipped);
/* Forward only through replica 0's pipeline, in chunks. */
int mpt__engine_evaluate(mpt__engine_t *e, const float *x, const int32_t *y, size_t count,
                         double *loss_sum, double *correct);

/* Forward only (dropout off) through replica 0's pipeline, in chunks of a
 * micro-batch: the logits of count samples (count x labels_per_sample x
 * classes floats) into `logits`, on every rank. */
int mpt__engine_logits(mpt__engine_t *e, const float *x, size_t count, float *logits);

/* Whole-model host copies of the state (replica 0's stages), and writes to
 * every replica; the step counter. */
int mpt__engine_read_params(mpt__engine_t *e, float *out);
int mpt__engine_write_params(mpt__engine_t *e, const float *in);
int mpt__engine_read_slot(mpt__engine_t *e, int slot, float *out);
int mpt__engine_write_slot(mpt__engine_t *e, int slot, const float *in);
uint64_t mpt__engine_step(const mpt__engine_t *e);
void mpt__engine_set_step(mpt__engine_t *e, uint64_t step);

/* After a failed job: 1 and the plan device id and the reason ("lost": the
 * device is gone, "hang": its job passed the deadline, "error": an OpenCL
 * or BLAS error) when a device of this process caused it; 0 when nothing
 * failed or no device is to blame (host memory, another rank). */
int mpt__engine_failed_device(const mpt__engine_t *e, int *device, const char **reason);

size_t mpt__engine_worker_count(const mpt__engine_t *e);
/* Worker i's device when this rank runs it, else NULL. */
mpt_device_t *mpt__engine_worker_device(const mpt__engine_t *e, size_t i);
/* Records from now on (on) every training forward, backward, receive,
 * wait for sends, all-reduce bucket, tensor-parallel collective, tied
 * weight exchange and update, for mpt__engine_trace_json: a Chrome trace
 * (pid 0), one track per device, one per reducer, one for the host. */
void mpt__engine_set_tracing(mpt__engine_t *e, int on);
int mpt__engine_trace_json(const mpt__engine_t *e, char **text);
/* A span of the caller's thread from t0 to now on the host track, while
 * tracing (name: a string literal). */
void mpt__engine_host_span(mpt__engine_t *e, const char *name, double t0);
/* mpt__now() when the trace started: its timestamps count from there. */
double mpt__engine_trace_origin(const mpt__engine_t *e);
const mpt__engine_device_stats_t *mpt__engine_device_stats(const mpt__engine_t *e, size_t i);
/* Collective across ranks (a no-op in one process): rows holds `width`
 * doubles per worker; each rank fills its own workers' rows, and after the
 * call every rank holds every worker's (figures only a device's own
 * process measures, such as its kernel time). */
int mpt__engine_share_rows(mpt__engine_t *e, double *rows, size_t width);

#endif
