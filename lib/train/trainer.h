/*
 * train/trainer.h: the trainer object behind the public API, shared by
 * trainer.c and checkpoint.c.  Never installed.
 */
#ifndef MPT_TRAIN_TRAINER_H
#define MPT_TRAIN_TRAINER_H

#include "engine/engine.h"
#include "train/data.h"

/* Every trainer runs a plan on the engine; one device is the 1x1x1 plan
 * (mpt__plan_single), which the trainer then owns. */
#define MPT__CAL_HISTORY 64

/* A host copy of the whole model's state (elastic.c): what a rebuilt
 * engine restores after a device failure, and what the checkpoint holds
 * when no engine is left. */
typedef struct {
    float *state[3];          /* parameters, optimizer slots 0 and 1 (param_floats each) */
    uint64_t step;            /* the trainer's step when taken */
    uint64_t skipped, skipped_in_row; /* and its counts of skipped steps */
    mpt_data_position_t next; /* the batch that step trains on */
    int valid;
} mpt__snapshot_t;

struct mpt_trainer {
    const mpt__model_t *model;
    mpt_train_config_t cfg;
    mpt__optim_cfg_t opt;
    mpt__engine_t *eng;
    mpt__plan_t *own_plan; /* mpt_trainer_create's one-device plan, or the copy of
                            * the plan mpt_trainer_replan moved to */
    const mpt__plan_t *plan; /* the plan the engine runs */
    /* what a new engine is made of (mpt_trainer_replan) */
    mpt_device_t **devs;   /* per plan device id, NULL for another rank's */
    size_t ndevs;
    int *rank_of;          /* per plan device id its rank; NULL in one process */
    int nranks;
    const mpt_topology_t *topo;
    const mpt_cluster_t *cluster; /* may be NULL (one device) */
    int tracing;
    double *clock;         /* tracing under a job (trace.c): per rank the offset of its
                            * clock from rank 0's, then the bound of each (rank 0's) */
    double predicted_s;    /* the plan's predicted step (calibrated), NaN: none */
    /* calibration: the last MPT__CAL_HISTORY steps' measured phases since
     * the last calibration or move, per step nworkers rows then the step's
     * wall time in the extra row's step_s (mpt_trainer_calibrate takes
     * medians: the machine may be busy with other work) */
    mpt__cal_measured_t *cal_sum;
    uint64_t cal_steps;
    int cal_paused; /* mpt_trainer_set_calibrating(t, 0): steps not kept */
    /* the report window (mpt_trainer_report) */
    double window_t0, window_loss;
    uint64_t window_steps, window_updates; /* steps, and those not skipped (the loss's) */
    mpt_step_stats_t last;
    int timing;
    double *window;        /* per worker WIN_COUNT: the last report's (figures.c) */
    double *fixed;         /* per worker FX_COUNT: its step's work and its device */
    int rank; /* in the job (mpt_trainer_create_world): only rank 0 writes checkpoints */
    mpt_world_t *world; /* the job's, NULL in one process */
    double comm_timeout_s; /* the deadline of waits on other ranks */
    /* what checkpoints record as the data (mpt_trainer_fit sets it), and
     * whether a checkpoint of other data may be loaded */
    char data_id[160];
    int allow_other_data;
    int allow_nonfinite;   /* a checkpoint with non-finite values loads, with a warning */
    /* non-finite steps (config.on_nonfinite skip): skipped so far in the run
     * (a checkpoint records it: the optimizer's update count is the step
     * less these), and how many of the last steps in a row */
    uint64_t skipped, skipped_in_row;
    /* elastic training (elastic.c): per plan device id its failures and
     * whether it is dropped for good; the newest snapshot */
    int *failures;
    unsigned char *excluded;
    mpt__snapshot_t snap;
};

/* The training configuration as compact JSON with every double exact
 * (checkpoint.c): what a checkpoint records and ranks compare.  NULL when
 * out of memory; the caller frees it. */
char *mpt__train_config_json(const mpt_train_config_t *c);
/* Collective under a job: every rank's `mine` must equal rank 0's, or every
 * rank's call fails (rank 0's naming the first rank and, for JSON objects,
 * the first key that differs; "what" says what was compared). */
int mpt__trainer_agree_text(mpt_trainer_t *t, const char *what, const char *mine);
/* Collective under a job: the largest of every rank's value (a stop
 * signal, so that every rank stops at the same step); the value itself in
 * one process. */
int mpt__trainer_agree_max(mpt_trainer_t *t, int mine, int *out);

/* figures.c: per worker, the figures of the last report's window (busy
 * and BLAS fractions, the last step's launches, achieved GFLOP/s and GB/s)
 * and those fixed by its plan and device (a step's FLOPs and bytes by the
 * cost model, its profile's rates, its memory capacity). */
enum { WIN_BUSY, WIN_BLAS, WIN_KERNELS, WIN_BLAS_CALLS, WIN_GFLOPS, WIN_GBPS, WIN_COUNT };
enum { FX_FLOPS, FX_BYTES, FX_GFLOPS, FX_GBPS, FX_CAPACITY, FX_COUNT };
/* Sizes both for the trainer's engine, the window's unknown. */
int mpt__figures_size(mpt_trainer_t *t);
/* Closes the window (seconds, steps) on this rank's devices and, under a
 * job, shares every rank's (collective); the mean busy and BLAS fractions
 * of the devices whose time is known, NaN when none is. */
int mpt__figures_window(mpt_trainer_t *t, double seconds, uint64_t steps, double *busy,
                        double *blas);
/* Worker i's figures into its statistics. */
void mpt__figures_apply(const mpt_trainer_t *t, size_t i, mpt_device_step_t *out);

/* The per-worker arrays (busy fractions, calibration sums) sized for the
 * trainer's engine and cleared: after creating it or moving to a plan. */
int mpt__trainer_size_arrays(mpt_trainer_t *t);

/* Forgets the phases measured so far: calibration starts from the next step. */
void mpt__trainer_reset_calibration(mpt_trainer_t *t);

/* rebalance.c: a plan in a line ("dp=2 pp=1 tp=1 m=1 gpipe on devices 0,1"). */
void mpt__plan_summary(const mpt__plan_t *p, char *buf, size_t size);

/* What a rebalance decided (mpt__trainer_rebalance). */
typedef struct {
    char old_plan[256], new_plan[256];
    double old_s, new_s; /* predicted steps, both calibrated */
    int moved;
} mpt__replan_t;

/* Calibrates on the steps so far (and stores the factors with the
 * profiles when save), plans again by request on the calibrated cluster,
 * and moves the trainer to the new plan when it is predicted faster than
 * the current one by more than margin (a fraction); logs the decision.
 * Collective under a job. */
int mpt__trainer_rebalance(mpt_trainer_t *t, mpt_cluster_t *cluster,
                           const mpt_plan_request_t *request, double margin, int save,
                           mpt__replan_t *out);

/* rebalance.c: the trainer moved to plan p (copied) with the whole-model
 * state at step, its engine (failed or not) freed first.  On failure the
 * trainer has no engine (steps refused) and keeps its plan. */
int mpt__trainer_rebuild(mpt_trainer_t *t, const mpt__plan_t *p, uint64_t step,
                         float *const state[3]);

/* State reads come from the snapshot when the trainer has no engine. */
int mpt__trainer_read_params(mpt_trainer_t *t, float *out);
int mpt__trainer_write_params(mpt_trainer_t *t, const float *in);
int mpt__trainer_read_slot(mpt_trainer_t *t, int slot, float *out);
int mpt__trainer_write_slot(mpt_trainer_t *t, int slot, const float *in);
void mpt__trainer_set_step(mpt_trainer_t *t, uint64_t step);

#endif
