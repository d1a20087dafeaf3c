/*
 * train/elastic.h: elastic training in one process (elastic.c), used by
 * the training loop (fit.c).  Never installed.
 */
#ifndef MPT_TRAIN_ELASTIC_H
#define MPT_TRAIN_ELASTIC_H

#include "train/trainer.h"

typedef struct {
    int on;
    mpt_plan_request_t request; /* the survivors' plans: the run's request, dimensions free */
    uint64_t every;             /* snapshot interval now (fixed, or chosen) */
    int chosen;                 /* 1: `every` follows the measured costs */
    uint64_t last;              /* the step of the newest snapshot */
    double copy_s;              /* the newest snapshot's copy time */
    double steps_s;             /* wall time of the steps since it */
    uint64_t steps;             /* and their number */
    double snapshot_s_total;    /* every snapshot's copy time, for the log */
    uint64_t snapshots;
    double failed_at;           /* mpt__now() when the failing step started, or ended
                                 * for what follows it */
    const char *after_step;     /* NULL: a training step failed; else what failed after
                                 * it ("checkpoint", "evaluation") */
} mpt__elastic_t;

/* What a recovery did (metrics, on_recover). */
typedef struct {
    int device;
    const char *reason;  /* "lost", "hang", "error" */
    char plan[256];
    uint64_t replayed;   /* steps trained again: failed step - snapshot step */
    double seconds_lost; /* failure to restored state, plus the steps thrown away */
} mpt__recovery_t;

/* Decides whether the run is elastic (options->elastic, the plan's device
 * count, a cluster to plan on, one process) and prepares the per-device
 * records.  NULL cluster: the trainer's. */
int mpt__elastic_begin(mpt__elastic_t *el, mpt_trainer_t *t, const mpt_fit_options_t *o);
/* 1 when a snapshot is due before the step `step` trains. */
int mpt__elastic_due(const mpt__elastic_t *el, uint64_t step);
/* Copies the trainer's state to the host (next: the batch about to be
 * trained), measures the copy and, when the interval is chosen, sets it so
 * that copies cost under 2% of the measured step time. */
int mpt__elastic_snapshot(mpt__elastic_t *el, mpt_trainer_t *t, const mpt_data_position_t *next);
/* A step of wall time `seconds` finished. */
void mpt__elastic_step_done(mpt__elastic_t *el, double seconds);
/* After a failed step, or a failed checkpoint or evaluation after it
 * (el->after_step; its status): when a device of this process caused
 * it and the run is elastic, drops the device (or, after a first plain
 * OpenCL error, keeps it once more), plans on the survivors, rebuilds the
 * engine from the snapshot and returns MPT_OK with the trainer at
 * snap.step (the caller moves the data to snap.next).  Devices that fail
 * while the engine is rebuilt are dropped too.  Otherwise returns a
 * failure: `status` unchanged when elastic does not apply, or the reason
 * no plan is left, with the trainer holding the snapshot (no engine). */
int mpt__elastic_recover(mpt__elastic_t *el, mpt_trainer_t *t, int status, mpt__recovery_t *out);

#endif
