/*
 * plan/plan.h: the cost model, the pipeline partition, plans and the step
 * simulator.  Pure functions of (model, devices and their measured costs,
 * training settings): nothing here touches a device.  Never installed.
 *
 * Units: seconds, bytes, samples.  Devices are indices into an
 * mpt_cluster_t (a cluster file, or mpt_cluster_from_devices for the live
 * machine), whose profiles give GEMM GFLOP/s, memory GB/s, host<->device
 * GB/s and launch latency, and whose link matrix gives link classes.
 */
#ifndef MPT_PLAN_PLAN_H
#define MPT_PLAN_PLAN_H

/* The description half of the layers only: the planner is built without
 * the OpenCL headers (Makefile.am: tests/libplan_nocl.la). */
#include "nn/layer_desc.h"

/* ---- cost model (cost.c) --------------------------------------------------- */

/* What one layer costs, per sample unless said otherwise. */
typedef struct {
    double fwd_flops, bwd_flops;   /* kind->flops(l, 1, 0 / 1) */
    double fwd_bytes, bwd_bytes;   /* device memory traffic: activations read and
                                    * written (+ parameters, counted per micro-batch
                                    * by mpt__cost_layers) */
    double param_bytes;            /* fp32 parameters of the layer (not per sample) */
    double out_bytes;              /* the output activation, what a stage boundary after
                                    * this layer sends forward (and its gradient back) */
    double saved_bytes;            /* kept from forward to backward: input + saved state */
    double in_bytes;               /* the input activation (a stage's first layer's is
                                    * what its working buffers must also hold) */
    double act_bytes;              /* what it writes into the stage's activation buffer:
                                    * its output, 0 for a view or the loss (the
                                    * executor gives those no region) */
    double scratch_base, scratch_bytes; /* its workspace (kind->scratch_floats) for n
                                    * samples: scratch_base + n scratch_bytes; a stage
                                    * holds its layers' largest, shared */
    int launches_fwd, launches_bwd; /* kernel launches per micro-batch (the kind's) */
    unsigned split_axes;           /* MPT_SPLIT_* of its kind */
    double tp_allreduce_bytes;     /* per sample, forward and backward, when tensor-parallel:
                                    * what its collectives move, as all-reduce bytes */
    int tp_whole;                  /* a tensor-parallel member runs it whole (replicated:
                                    * role MPT__TP_WHOLE), so its time, memory
                                    * and gradient do not shrink with the member's share */
    int tied_owner;                /* the layer whose weight it reads (lm_head), -1: none */
    double tied_bytes;             /* that weight: a stage without its owner holds a copy */
} mpt__layer_cost_t;

typedef struct {
    size_t nlayers;
    mpt__layer_cost_t *layers;
    double input_bytes; /* one input sample */
} mpt__model_cost_t;

/* The costs of every layer of a model. */
int mpt__model_cost(const mpt__model_t *m, mpt__model_cost_t *out);
void mpt__model_cost_free(mpt__model_cost_t *mc);

/* Calibration factors (mpt_calibration_t): what a device measured over
 * what this model predicted, per kind of work; 1 when not calibrated.
 * mpt__cost_layers, mpt__cost_transfer (the mean of both ends') and
 * mpt__cost_allreduce (the largest of the ring's) apply them. */
typedef enum {
    MPT__CAL_FORWARD,
    MPT__CAL_BACKWARD,
    MPT__CAL_TRANSFER,
    MPT__CAL_ALLREDUCE
} mpt__cal_kind_t;
double mpt__cal_factor(const mpt_profile_t *p, mpt__cal_kind_t kind);
/* Turns a device's calibration into the one its compute has in company
 * (forward and backward from company_forward, company_backward when those
 * were measured): what mpt__cost_shared applies to a device that a plan
 * runs beside others on its cores. */
void mpt__cal_in_company(mpt_calibration_t *c);
/* The steps that measured the device alone (steps - company_steps, 0 for
 * a calibration that counts more in company than in all). */
uint64_t mpt__cal_alone_steps(const mpt_calibration_t *c);

/* Forward (backward = 0) or backward time of layers [first, last] on device
 * d for a micro-batch of `samples`: per layer, the roofline
 * max(flops / GEMM rate, bytes / memory bandwidth) plus its launches times
 * the launch latency.  `share` in (0, 1] is the device's fraction of each
 * layer under tensor parallelism (flops and bytes of the split layers
 * scale by it, those of replicated ones (tp_whole) and the launches do
 * not). */
double mpt__cost_layers(const mpt__model_cost_t *mc, size_t first, size_t last,
                        const mpt_cluster_device_t *d, double samples, double share,
                        int backward);
/* The numerators of those rooflines: the FLOPs and device memory bytes of
 * layers [first, last] for one micro-batch of `samples` at tensor share
 * `share` (what the metrics divide by measured kernel time). */
void mpt__cost_work(const mpt__model_cost_t *mc, size_t first, size_t last, double samples,
                    double share, int backward, double *flops, double *bytes);
/* Time to move `bytes` from device a to device b of the cluster by their
 * link class: 0 on the same device; device -> host -> device (d2h of a,
 * h2d of b, one launch latency each) within a node; plus the network
 * (bytes / network bandwidth + latency) across nodes. */
double mpt__cost_transfer(const mpt_cluster_t *c, size_t a, size_t b, double bytes);
/* Ring all-reduce of `bytes` over n devices: 2 (n - 1) / n * bytes / B +
 * 2 (n - 1) * latency, B the slowest link of the ring (each hop modelled as
 * mpt__cost_transfer).  0 for n <= 1. */
double mpt__cost_allreduce(const mpt_cluster_t *c, const size_t *devices, size_t n, double bytes);
/* The hierarchical all-reduce (comm.h) over the same devices, grouped by
 * their node (mpt_cluster_device_t.locality.node): the ring inside each
 * node on bytes, then m concurrent rings across the k nodes on bytes / m
 * each, sharing the network (each cross step moves bytes / k through it),
 * then the all-gather inside.  HUGE_VAL when the devices are not spread
 * evenly over two or more nodes, two or more on each (the engine would
 * run the flat ring). */
double mpt__cost_allreduce_hier(const mpt_cluster_t *c, const size_t *devices, size_t n,
                                double bytes);
/* The one of the two that `algo` names (RING or HIERARCHICAL). */
double mpt__cost_allreduce_by(const mpt_cluster_t *c, const size_t *devices, size_t n,
                              double bytes, mpt_allreduce_t algo);

/* Parameter bytes of layers [first, last] a device holds at tensor share
 * `share` (the whole of a replicated layer's): what it all-reduces across
 * data-parallel replicas. */
double mpt__cost_param_bytes(const mpt__model_cost_t *mc, size_t first, size_t last,
                             double share);
/* Bytes a device holds for layers [first, last] at tensor share `share`,
 * as engine/executor.c allocates them: parameters (and the copy of a tied
 * weight whose owner is before first), gradients and `optimizer_slots`
 * optimizer copies (SGD with momentum 1, AdamW 2), when micro-batches
 * accumulate (2+ a step) one more gradient copy for each micro-batch's
 * own (flags MPT__MEM_ACCUMULATES); plus the saved activations of
 * `in_flight` micro-batches of `samples` each (with MPT__MEM_RECOMPUTE:
 * their stage inputs and one micro-batch's activations); plus the two working buffers activation gradients
 * ping-pong through, each one micro-batch of the widest of the stage's
 * input and its layers' outputs; plus, on the owner of a weight a later
 * stage copies, the buffer that copy's gradient arrives in; plus the
 * largest workspace of its layers (a GPT block's is megabytes).  Small
 * buffers (labels, loss rows) are left out: they were under 1% of the
 * measured peak in tests/check_memory.c. */
/* The largest workspace of layers [first, last] for `samples` at tensor
 * share `share` (the executor's one scratch buffer). */
double mpt__cost_scratch(const mpt__model_cost_t *mc, size_t first, size_t last,
                         double samples, double share);
enum { MPT__MEM_ACCUMULATES = 1, MPT__MEM_RECOMPUTE = 2 };
double mpt__cost_memory(const mpt__model_cost_t *mc, size_t first, size_t last,
                        double samples, size_t in_flight, double share, int optimizer_slots,
                        unsigned flags);
/* ZeRO-2's gradient window for layers [first, last] at tensor share
 * `share` (engine/executor.c): the largest layer's parameter bytes, plus a
 * tied embedding's when its head is in the range (its gradient stays from
 * the head's backward to its own). */
double mpt__cost_grad_window(const mpt__model_cost_t *mc, size_t first, size_t last,
                             double share);
/* mpt__cost_memory of a data-parallel replica's stage under ZeRO stage
 * `zero` holding fraction `shard` of its parameters' shards: ZeRO-1 keeps
 * `shard` of the optimizer slots; ZeRO-2 too, and instead of the whole
 * gradients (and the micro-batch copy) one buffer of the larger of its
 * shard of them and the window. */
double mpt__cost_memory_zero(const mpt__model_cost_t *mc, size_t first, size_t last,
                             double samples, size_t in_flight, double share,
                             int optimizer_slots, unsigned flags, int zero, double shard);

/* The largest single buffer of those, which must fit the device's largest
 * allocation (max_alloc_bytes) as well as the sum fits its memory: the
 * flat parameters (gradients and each optimizer slot are as large, a
 * ZeRO shard smaller), the activations of the micro-batches in flight
 * (the layers' outputs after the stage input, as the executor lays them
 * out; recomputing, every input and one micro-batch's outputs), the
 * layers' saved state, an activation-gradient buffer, the workspace, a
 * tied copy's gradient buffer.  `samples`: the largest micro-batch (the
 * executor's max_batch).  *what names the buffer. */
double mpt__cost_largest_buffer(const mpt__model_cost_t *mc, size_t first, size_t last,
                                double samples, size_t in_flight, double share, unsigned flags,
                                const char **what);
/* Whether that buffer fits device d's largest allocation: 1, or 0 with
 * the sentence that says which device, buffer, layers and sizes in why
 * ("device 1 (gpu1) would need a buffer of N bytes (...), over its
 * largest allocation of M bytes"). */
int mpt__cost_fits_alloc(const mpt__model_cost_t *mc, size_t first, size_t last, double samples,
                         size_t in_flight, double share, unsigned flags,
                         const mpt_device_info_t *d, char *why, size_t why_size);

/* Shared resources (share.c).  Whether devices a and b of the cluster
 * compete for cores: same node, overlapping cpusets, one a CPU device. */
int mpt__cost_share_cores(const mpt_cluster_t *c, size_t a, size_t b);
/* The devices as they work when the n devices `used` run together: eff
 * (one entry per cluster device) receives every device of c, the CPU
 * devices among `used` that share cores with others in `used` with their
 * GEMM rates and memory bandwidth lowered to the measured concurrent
 * figures (mpt_profile_t.shared_*) or, without them, to their share of the
 * cores.  The planner prices every candidate set of devices with it;
 * mpt__cost_layers on eff[i] is then device i's time in that company. */
void mpt__cost_shared(const mpt_cluster_t *c, const size_t *used, size_t n,
                      mpt_cluster_device_t *eff);
/* Whether device d works in company among the n devices `used`: a CPU
 * device beside another of them on its cores.  mpt__cost_shared then
 * lowers its rates and applies its calibration in company; calibrating a
 * plan stores what it measured of d there. */
int mpt__cost_in_company(const mpt_cluster_t *c, const size_t *used, size_t n, size_t d);

/* ---- pipeline partition (partition.c) ------------------------------------- */

/* The cost of giving layers [first, last] to stage s (s in 0..nstages-1),
 * or a negative number when they do not fit its memory.  Pure and
 * monotone: for fixed s and last, an earlier first never costs less and
 * never fits when a later one does not. */
typedef double (*mpt__stage_cost_fn)(void *ctx, size_t stage, size_t first, size_t last);

/* Splits layers 0..nlayers-1 into nstages contiguous, non-empty ranges,
 * stage s taking [first[s], first[s+1] - 1] (first[0] = 0,
 * first[nstages] = nlayers), minimising the largest stage cost (the
 * pipeline's bottleneck; ties broken by the smaller sum).  Dynamic
 * programming, at most O(nstages * nlayers^2) cost calls (about
 * O(nlayers^2) for the usual costs: see partition.c).  MPT_ERR_RANGE when
 * nstages > nlayers, MPT_ERR_DEVICE_MEMORY when no split fits (the detail
 * names the stage that cannot fit and what it would need). */
int mpt__partition(size_t nlayers, size_t nstages, mpt__stage_cost_fn cost, void *ctx,
                   size_t *first, double *bottleneck);

/* ---- tensor-parallel splits (split.c) -------------------------------------- */

/* Counts of n units over tp members in proportion to fractions (need not
 * be normalised): floor of each exact share, the rest one each to the
 * largest remainders (ties to the lower member).  MPT_ERR_INVALID, naming
 * the member, when a member would get no unit or a fraction is not
 * positive. */
int mpt__tp_split(size_t n, const double *fractions, size_t tp, size_t *counts);

/* What each layer of a tensor-parallel stage [first, last] does
 * (engine/shard.c): run on the whole activation (replicated, with its
 * parameters if it has any), on its member's slice, column-parallel (its
 * outputs split: units or channels), row-parallel (its inputs split) or
 * split inside on whole input and output (MPT_SPLIT_INNER: a transformer
 * block by heads and MLP units), with the slices gathered before it when
 * it needs them whole. */
typedef enum {
    MPT__TP_WHOLE,
    MPT__TP_SLICE,
    MPT__TP_COLUMN,
    MPT__TP_ROW,
    MPT__TP_INNER
} mpt__tp_role_t;
typedef struct {
    mpt__tp_role_t role;
    int gather_before;
} mpt__tp_step_t;

/* The roles of a stage's layers: steps[i - first] for every layer i, and
 * whether the stage ends sliced and gathers. */
typedef struct {
    mpt__tp_step_t *steps;
    int gather_after;
} mpt__tp_roles_t;

/* The one computation of roles, from the layers' kinds (split axes,
 * flags) walking the stage from a whole input: steps[i - first] for every
 * layer; *gather_after: the stage ends sliced and gathers.  Every
 * stage can be walked (dropout on a slice draws the whole activation's
 * numbers, engine/shard.c), so it returns MPT_OK.  Plans keep its
 * result (mpt__plan_roles); the cost model keeps it for the whole model
 * (the planner's view of each layer before any stage exists). */
int mpt__tp_walk(const mpt__model_t *m, size_t first, size_t last, mpt__tp_step_t *steps,
                 int *gather_after);

/* ---- plans (plan.c, plan_json.c) ------------------------------------------ */

typedef enum { MPT__PIPE_GPIPE = 0, MPT__PIPE_1F1B = 1 } mpt__pipe_schedule_t;

typedef struct {
    size_t device;       /* index in the cluster */
    double fraction;     /* share of each layer of the stage (tensor parallelism) */
    double memory_bytes; /* predicted */
} mpt__plan_device_t;

typedef struct {
    size_t first, last;       /* layers, inclusive */
    size_t ndevices;          /* the tensor-parallel group (tp devices) */
    mpt__plan_device_t *devices;
    double fwd_s, bwd_s;      /* per micro-batch, slowest device of the group (bwd_s
                               * with the forward again when recompute is set) */
    int recompute;            /* keep only the stage's input per micro-batch and run
                               * its forward again before each backward (docs/memory.md) */
    mpt__tp_roles_t roles;    /* tensor-parallel stages (ndevices > 1) of a plan given
                               * its model (mpt__plan_roles); steps NULL otherwise */
} mpt__plan_stage_t;

typedef struct {
    double batch_share;       /* fraction of the global batch (sums to 1) */
    size_t nstages;
    mpt__plan_stage_t *stages;
} mpt__plan_replica_t;

typedef struct {
    char *description;        /* "dp=2 pp=2 tp=1 m=4 1f1b" */
    double step_s;            /* predicted, or < 0 when rejected */
    char *rejected;           /* the reason, or NULL */
} mpt__plan_alt_t;

/* The public mpt_plan_t is this struct. */
typedef struct mpt_plan {
    size_t dp, pp, tp, microbatches, batch;
    char model_id[12];        /* CRC-32 of the model description (hex) it was made
                               * for; "" when unknown (hand-written plans) */
    mpt__pipe_schedule_t schedule;
    mpt_allreduce_t allreduce; /* RING or HIERARCHICAL, never AUTO */
    int optimizer_slots;
    int zero;                 /* ZeRO stage: 0 every replica holds the whole optimizer
                               * state; 1 each replica holds the state of its shard of
                               * every data-parallel segment (shards in proportion to
                               * the replicas' batch shares), gradients are
                               * reduce-scattered and parameters all-gathered;
                               * 2 the same, and each replica keeps the gradients
                               * of its shard only, reduce-scattered per
                               * micro-batch (docs/memory.md) */
    size_t nreplicas;         /* = dp */
    mpt__plan_replica_t *replicas;
    double predicted_step_s;
    double compute_s, bubble_s, p2p_s, allreduce_s; /* the breakdown */
    size_t nalternatives;
    mpt__plan_alt_t *alternatives;
    char *idle;               /* the planner's lines on the devices it left idle and
                               * why, or NULL (not kept in plan JSON) */
} mpt__plan_t;

void mpt__plan_free(mpt__plan_t *p);
/* The plan of one device running the whole model (layers 0..nlayers-1) on
 * batches of `batch`: dp = pp = tp = 1, one micro-batch, device id 0, no
 * prediction (predicted_step_s < 0).  What a one-device trainer runs. */
int mpt__plan_single(size_t nlayers, size_t batch, mpt__plan_t **out);

/* Records in every tensor-parallel stage of p the roles of its layers in
 * m (mpt__tp_walk), replacing any it had: the planner does it for every
 * plan it makes, mpt_plan_load for every plan it reads; the checks and
 * engine/shard.c read them.  Errors name the stage and the layer. */
int mpt__plan_roles(mpt__plan_t *p, const mpt__model_t *m);

/* Plan JSON (docs/plan.md): written by the planner, read back and checked
 * against the model and the cluster (unknown device, a device used twice,
 * layers not covered or overlapping, fractions not summing to 1 within
 * 1e-6, batch shares not summing to 1, negative memory...), each error
 * naming the file, the JSON path and the reason. */
int mpt__plan_to_json(const mpt__plan_t *p, char **text);
int mpt__plan_from_json(const char *text, const char *where, size_t nlayers, size_t ndevices,
                        mpt__plan_t **out);

/* ---- the planner (planner.c) ---------------------------------------------- */

/* The fastest plan of the model on the devices of the cluster, or on the
 * subset of them that it predicts faster (see the passes in planner.c;
 * req->all_devices: every device), with every configuration considered
 * among its alternatives.  MPT_ERR_DEVICE_MEMORY naming the device and the bytes
 * when nothing fits; MPT_ERR_INVALID when the pinned dimensions allow no
 * configuration. */
int mpt__plan_make(const mpt__model_t *m, const mpt_cluster_t *c, const mpt_plan_request_t *req,
                   mpt__plan_t **out);
/* The same on the devices of the cluster not flagged in excluded (one
 * byte per cluster device; NULL: none): re-planning onto the survivors of
 * a failed device (train/elastic.c).  MPT_ERR_NO_DEVICE when none is left. */
int mpt__plan_make_excluding(const mpt__model_t *m, const mpt_cluster_t *c,
                             const mpt_plan_request_t *req, const unsigned char *excluded,
                             mpt__plan_t **out);

/* The simulated step of the best uniform split (equal layers per stage,
 * equal batch per replica, equal tensor fractions) over the same shapes of
 * every device, among those that fit the devices' memory: the baseline a
 * speed-blind planner would reach (uniform.c). */
int mpt__plan_uniform_step(const mpt__model_t *m, const mpt_cluster_t *c,
                           const mpt_plan_request_t *req, double *step_s);

/* ---- simulator (simulate.c) ------------------------------------------------ */

typedef struct {
    double step_s;            /* makespan of one training step */
    double bubble_fraction;   /* idle share of the pipeline devices' step time,
                               * collectives excluded */
    size_t ndevices;          /* per cluster device (unused ones: 0) */
    double *busy_s;           /* computing */
    double *utilisation;      /* busy / step */
    double compute_s, p2p_s, allreduce_s; /* summed critical contributions */
} mpt__sim_result_t;

/* Replays one training step of a plan under the cost model: every
 * replica's stages run their micro-batches (GPipe: all forwards then all
 * backwards; 1F1B: warm-up forwards, then alternate, then cool-down),
 * activations and gradients cross stage boundaries with
 * mpt__cost_transfer, then each stage's gradients are all-reduced across
 * replicas (mpt__cost_allreduce).  trace_json (may be NULL) receives the
 * timeline as Chrome Trace Event JSON (one track per device); the caller
 * frees it. */
int mpt__simulate(const mpt__plan_t *p, const mpt__model_cost_t *mc, const mpt_cluster_t *c,
                  mpt__sim_result_t *out, char **trace_json);
void mpt__sim_result_free(mpt__sim_result_t *r);

/* ---- calibration (calibrate.c) --------------------------------------------- */

/* What a worker of a plan measured, mean per step (engine order: replica,
 * stage, member). */
typedef struct {
    double forward_s;     /* forward passes */
    double backward_s;    /* backward passes and the optimizer update */
    double reduce_wait_s; /* the all-reduce the step waited for */
    double step_s;        /* its whole step */
} mpt__cal_measured_t;

/* Every cluster device as it works in the plan's company (*eff, one per
 * cluster device, freed by the caller): mpt__cost_shared on the devices
 * the plan uses. */
int mpt__plan_company(const mpt__plan_t *p, const mpt_cluster_t *c, mpt_cluster_device_t **eff);
/* The plan's step predicted with the cluster's current calibration: its
 * stage times recomputed on c (as the planner prices them, each device in
 * the plan's company) and simulated on steps of `batch`.  p is not
 * changed; out_times (may be NULL) receives predicted_step_s and the
 * breakdown. */
int mpt__plan_predict_calibrated(const mpt__plan_t *p, const mpt__model_cost_t *mc,
                                 const mpt_cluster_t *c, size_t batch, mpt__plan_t *out_times);
/* New calibration factors for the plan's devices in c from what its
 * nworkers workers measured over `steps` steps and the step's wall time
 * step_s as its caller saw it (0: the slowest worker's); calibrate.c says
 * how each kind is fitted.  The plan's step predicted with them. */
int mpt__calibrate(const mpt__plan_t *p, const mpt__model_cost_t *mc, mpt_cluster_t *c,
                   size_t batch, const mpt__cal_measured_t *meas, size_t nworkers,
                   double step_s, uint64_t steps, double *predicted_step_s);
/* A copy of c (freed by the caller) in which every device without a
 * calibration borrows one from the calibrated devices (calibrate.c says
 * which), so that re-planning never prefers a device for having never
 * been measured.  Unchanged when no device is calibrated. */
int mpt__calibration_borrowed(const mpt_cluster_t *c, mpt_cluster_t **out);

#endif
