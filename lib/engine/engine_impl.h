/*
 * engine/engine_impl.h: the engine's insides, shared by its files and by
 * nothing else.  Never installed.
 *
 *   engine.c         creation from a plan, the job calls, state I/O, traces
 *   workers.c        worker threads, posting a job, making a worker
 *   schedule.c       a worker's job: the pipeline schedule, evaluation
 *   data_parallel.c  segments, buckets and the reducer threads
 *   tied.c           a tied weight across stages
 *   ranks.c          an engine over several MPI ranks
 *
 * Threads: the caller's thread posts a job (train step, evaluation,
 * logits) and waits; one worker per (replica, stage, member) runs it on
 * its device; with data parallelism each worker has a reducer thread that
 * all-reduces gradient buckets while the worker goes on with the backward
 * pass.
 *
 * Messages (transport endpoints = worker indices, then one control
 * endpoint per rank): activations forward and their gradients backward
 * between neighbouring stages of a replica, in micro-batch order, so one
 * tag per kind matches in posting order; every tag comes from the
 * transport's one allocator (comm.h, mpt__tags_t), see engine_tags_t.
 *
 * Failure: a worker whose job fails records the error, aborts the
 * transport (every blocked peer returns MPT_ERR_ABORTED at once) and
 * finishes the job; the caller reports the first real error with the
 * device that raised it.
 */
#ifndef MPT_ENGINE_ENGINE_IMPL_H
#define MPT_ENGINE_ENGINE_IMPL_H

#include <pthread.h>

#include "comm/comm.h"
#include "device/device.h"
#include "engine/engine.h"
#include "engine/shard.h"
#include "trace/chrome.h"

/* The engine's message tags, allocated once when it is made: point-to-point
 * tags per kind of message, and group tags for its collectives (one per
 * data-parallel segment, one per tensor-parallel group). */
typedef struct {
    int act, grad, eval, gather, tied; /* point-to-point */
    int norm, ctl;                     /* groups: the gradient norm, the ranks' control */
    int segments;                      /* groups: segment k is segments + k */
    int tp;                            /* groups: the group whose first worker is w is tp + w */
} engine_tags_t;

/* Per-worker results that ranks exchange after each job (doubles). */
enum { R_LOSS, R_CORRECT, R_NORM, R_STEP_S, R_ALLREDUCE_S, R_ALLREDUCE_BYTES, R_MEMORY,
       R_TP_S, R_TP_BYTES, R_FORWARD_S, R_BACKWARD_S, R_P2P_S, R_REDUCE_WAIT_S, R_UPDATE_S,
       R_PEAK_MEMORY, R_PEER_WAIT_S, R_TRANSFER_S, R_AR_WAIT_S, R_AR_TRANSFER_S, R_COUNT };

/* Gradient buckets are handed to the reducer once this many bytes of
 * finished layers have gathered (or at a segment's end): large enough
 * that the ring's per-message latency is small against its bytes, small
 * enough that the first bucket leaves early in the backward pass. */
#define BUCKET_BYTES ((size_t)1 << 20)

typedef enum { JOB_NONE, JOB_TRAIN, JOB_EVAL, JOB_LOGITS, JOB_QUIT } job_kind_t;

typedef struct {
    size_t first, count; /* model parameter elements */
    int *members;        /* one worker per replica */
    int self, tag;
    int *node;           /* per member its rank, when the plan's all-reduce is
                          * hierarchical (comm.h); else NULL */
    /* ZeRO-1/2: member r's shard is model elements [bounds[r], bounds[r + 1]),
     * in proportion to the replicas' batch shares; this worker's optimizer
     * state (and under ZeRO-2 its gradients) for its own shard start at
     * slot_at in its packed slots. */
    size_t *bounds;
    size_t slot_at;
} segment_t;

typedef struct bucket {
    size_t first, count; /* model elements, inside one segment */
    const segment_t *seg;
    cl_event ready;      /* the read of these gradients into gbuf, or their map (owned) */
    float *data;         /* in place (mpt__eng_reduce_in_place): the mapped gradients;
                          * NULL: gbuf's */
} bucket_t;

typedef struct worker worker_t;

struct worker {
    mpt__engine_t *e;
    int index, replica, stage, device;
    int rank, local;           /* the rank that runs it; whether that is this one */
    int member, tp;            /* position in the stage's tensor-parallel group, its size */
    mpt_device_t *dev;
    mpt__shard_t *shard;       /* tp > 1: the member's slice of the stage */
    const mpt__model_t *model; /* what the executor runs: the model, or the shard's */
    mpt__executor_t *ex;
    size_t p0, np;             /* its parameter elements (of `model`) */
    size_t slots, max_mb;
    int prev, next;            /* the workers it receives activations and gradients
                                * from, -1 at the ends */
    int late_loss;             /* the last stage keeps every micro-batch's loss rows
                                * to the end of the step: read them after the
                                * update is queued, so the queue never waits on
                                * the host in the middle of a step */
    int *fwd_to, *bwd_to;      /* the workers it sends activations and gradients to */
    size_t nfwd_to, nbwd_to;
    segment_t *segs;
    size_t nsegs;
    int tied_peer;             /* the worker of this replica on the other side of a
                                * tied weight, -1 for none */
    int tied_copy;             /* 1: this one holds the copy; 0: the owner */
    int tied_owner_layer;      /* the owner: the layer whose backward finishes it */
    size_t tied_first, tied_count; /* the tied model elements */
    float *tied_buf;           /* their gradient, on the host */
    int tied_added;            /* the owner: the copy's gradient is in, this step */
    float *gbuf;               /* host copy of its gradients (np) */
    float *zgrad;              /* ZeRO-2: the sum over replicas and over the step's
                                * micro-batches so far of its shards' gradients
                                * (host, np; only the shards' places are used) */
    float *fwd_stage;          /* outgoing activations: one region per micro-batch */
    float *bwd_stage;          /* outgoing gradients: one region per micro-batch, apart
                                * from the activations, since 1F1B interleaves both and
                                * a send's buffer must stay unchanged until received */
    float *recv_stage;
    mpt__request_t **sends;
    size_t nsends;
    pthread_t thread;
    int thread_started;
    /* reducer */
    pthread_t reducer;
    int reducer_started, rquit;
    pthread_mutex_t rlock;
    pthread_cond_t rcond;
    bucket_t *queue;
    size_t qhead, qtail, qcap;
    float **maps;              /* in place: this step's mapped ranges of the gradients,
                                * unmapped once the reducer is done (qcap of them) */
    size_t nmaps;
    int rstatus;
    char rerror[512];
    mpt__spans_t spans, rspans; /* the worker's and its reducer's (tracing only): "forward",
                                 * "backward", "recv", "tied", "allreduce" */
    /* results of the job */
    unsigned long done_generation; /* the last job it finished (the watchdog's view) */
    int timed_out;             /* the watchdog gave it up in this job (a hang) */
    int status;
    char error[512];
    double loss_sum, correct, norm, step_s;
    int skipped;               /* the step applied no update: its norm or loss was not
                                * finite (opt->skip_nonfinite); alike on every worker */
    mpt__engine_device_stats_t stats;
};

struct mpt__engine {
    const mpt__model_t *m;
    const mpt__plan_t *plan;
    size_t batch, microbatches, nreplicas, nworkers;
    uint64_t step;
    int pipe_1f1b;
    mpt__transport_t *t;
    worker_t *w;
    size_t *rep_first, *rep_samples; /* per replica: offset and size of its share */
    const mpt_topology_t *topo;
    const mpt_cluster_t *cluster;
    int failed;
    /* health (workers.c): the deadline of a local worker's training step
     * (an evaluation's scales with its set and the last step's time) once
     * the engine finished a job of the kind (kernel builds are not hangs),
     * and what made the engine fail: the plan device id, or -1 when no
     * device is to blame */
    double job_deadline_s, train_job_s;
    int trained_once, evaluated_once;
    int failed_device;
    const char *failed_reason; /* "hang", "lost" or "error" */
    /* the current job */
    pthread_mutex_t lock;
    pthread_cond_t go, done;
    unsigned long generation;
    size_t finished;
    job_kind_t kind;
    const float *x;
    const int32_t *y;         /* m->labels_per_sample labels per sample */
    size_t count;
    float *logits;            /* JOB_LOGITS: count x labels_per_sample x classes */
    const mpt__optim_cfg_t *opt;
    float lr;
    uint64_t updates;         /* optimizer updates before this step (skipped steps apply none) */
    int inject_nonfinite;     /* testing (MPT_FAIL_NONFINITE): this step's gradients are NaN */
    int *all_members;
    int any_tp;               /* some stage has a tensor-parallel group */
    int zero;                 /* the ZeRO stage in force (0, 1, 2): the plan's, when
                               * there are replicas */
    engine_tags_t tags;
    int tracing;
    double trace_t0;
    mpt__spans_t host_spans;  /* the caller's thread: the training loop's host work */
    /* across ranks (nranks > 1) */
    int rank, nranks;
    size_t nlocal;            /* workers of this rank */
    int *ctl_members;         /* the ranks' control endpoints: nworkers + r */
    int *owner;               /* per model parameter element: the rank that reads it */
    size_t *owned;            /* per rank: how many elements it owns */
    double *results;          /* nworkers x R_COUNT, then as much scratch */
    float *pack;              /* the largest rank's owned elements */
};

/* Called by the executor after each layer's backward of the last
 * micro-batch (under ZeRO-2, of every micro-batch): once enough finished
 * gradients have gathered, send them. */
typedef struct {
    worker_t *w;
    size_t pending_first, pending_end; /* finished, not yet handed over */
    cl_event read;                     /* ZeRO-2: the last of their reads (each layer's
                                        * leaves the window at once), or NULL */
    int status;
} bucket_ctx_t;

/* Data parallelism on a CPU device (its buffers are host memory: PoCL,
 * Intel's CPU runtime): the reducer sums the gradients where the backward
 * left them, in mapped ranges of the device buffer, instead of a read into
 * gbuf and a write back of the sum: two copies of every gradient per step
 * saved.  A range stays mapped while the backward's later kernels write
 * other ranges of the same buffer, which OpenCL 1.2 leaves undefined and
 * CPU runtimes do as plain memory (the host provider's native kernels rely
 * on the same: device/gemm_host.c); GPUs, integrated ones included, keep
 * the copies.  Not under ZeRO (its shards and window go through gbuf and
 * zgrad) nor for either side of a tied weight (the owner sends the sum
 * from gbuf). */
static inline int mpt__eng_reduce_in_place(const worker_t *w)
{
    return w->e->zero == 0 && w->tied_peer < 0 && w->dev->info.type == MPT_DEVICE_CPU &&
           w->dev->info.unified_memory;
}

/* Records a span from t0 to now when tracing. */
static inline void span_add(const mpt__engine_t *e, mpt__spans_t *s, const char *name, int mb,
                            double t0)
{
    if (e->tracing)
        mpt__spans_add(s, name, mb, t0, mpt__now());
}

/* ---- workers.c ---- */
/* Records a worker's failure once and wakes every peer. */
int mpt__eng_worker_fail(worker_t *w, int status);
void *mpt__eng_worker_main(void *arg);
int mpt__eng_run_job(mpt__engine_t *e, job_kind_t kind);
int mpt__eng_make_worker(mpt__engine_t *e, worker_t *w, size_t r, size_t s, size_t g,
                         size_t base, size_t tp_prev, size_t tp_next, size_t max_mb,
                         mpt_device_t *const *devices, uint64_t seed, const float *init);

/* ---- schedule.c ---- */
int mpt__eng_train_job(worker_t *w);
int mpt__eng_eval_job(worker_t *w, job_kind_t kind);
int mpt__eng_send_async(worker_t *w, int peer, int tag, const float *buf, size_t floats);
int mpt__eng_wait_sends(worker_t *w);

/* ---- data_parallel.c ---- */
void *mpt__eng_reducer_main(void *arg);
int mpt__eng_reducer_drain(worker_t *w);
/* Hands b's pending gradients to the reducer (none: nothing). */
int mpt__eng_flush_grads(worker_t *w, bucket_ctx_t *b);
void mpt__eng_layer_done(void *arg, size_t layer);
int mpt__eng_make_segments(mpt__engine_t *e, worker_t *w);
int mpt__eng_make_aligned_segment(mpt__engine_t *e, worker_t *w);
int mpt__eng_check_alike(const mpt__engine_t *e);
/* ZeRO-1/2 (data_parallel.c): shard bounds of worker w's segments and its
 * packed optimizer state (ZeRO-2: and gradients); after the reducer
 * drained, the step's end: the reduced shards to the device, their part of
 * the gradient norm, the update of the shards, the all-gather of the
 * parameters; checkpoint I/O of the sharded optimizer state (whole-model
 * layout, like state_io). */
int mpt__eng_zero_setup(mpt__engine_t *e, worker_t *w);
int mpt__eng_zero_grads(worker_t *w, double *sumsq);
int mpt__eng_zero_update(worker_t *w);
int mpt__eng_zero_slot_io(worker_t *w, int slot, float *out, const float *in);

/* ---- tied.c ---- */
int mpt__eng_tied_send_copy(worker_t *w);
int mpt__eng_tied_take_copy(worker_t *w);
int mpt__eng_tied_send_sum(worker_t *w);
int mpt__eng_tied_take_sum(worker_t *w);
int mpt__eng_pair_tied(mpt__engine_t *e);

/* ---- ranks.c ---- */
mpt__group_t mpt__eng_ctl_group(const mpt__engine_t *e);
int mpt__eng_exchange_results(mpt__engine_t *e);
int mpt__eng_exchange_state(mpt__engine_t *e, float *out);
int mpt__eng_assign_owners(mpt__engine_t *e);
int mpt__eng_make_transport(mpt__engine_t *e, const mpt__engine_ranks_t *ranks);

#endif
