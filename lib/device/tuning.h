/*
 * device/tuning.h: CLBlast's GEMM kernels tuned per device (issue 20, part
 * 2).  Never installed.
 *
 * CLBlast picks each kernel's parameters (tile sizes, vector widths...)
 * from a database compiled into it; a device newer than the database, or
 * a CPU under PoCL, gets generic ones.  Tuning here:
 * 1. runs CLBlast's own tuners (clblast_tuner_xgemm, ..._xgemm_direct from
 *    Debian's clblast-utils) as processes and reads their JSON: each result
 *    file's best parameters are a candidate;
 * 2. times mpt's own GEMM calls at the models' shapes with each candidate
 *    and with CLBlast's defaults, alternating D C1 C2 D C1 C2 ..., every
 *    sample in a fresh process (CLBlast 1.5.3 can override parameters but
 *    never restore its defaults inside one process, and has no C call to
 *    read them back);
 * 3. keeps a routine's best candidate only when it beats the defaults on
 *    the measured shapes (mpt__tuning_decide: medians' totals, by more
 *    than the margin) and won most rounds against the defaults timed
 *    beside it, Xgemm and XgemmDirect decided separately;
 * 4. stores the result beside the profiles ($XDG_CACHE_HOME/mpt/
 *    clblast-<hash of the device identity>.json), and every later open of
 *    the device applies the kept parameters with CLBlastOverrideParameters
 *    before its first GEMM (blas.c).  MPT_CLBLAST_TUNING=off skips that;
 *    parameters once applied stay for the rest of the process, as CLBlast
 *    keeps them per device and cannot restore its own.
 */
#ifndef MPT_DEVICE_TUNING_H
#define MPT_DEVICE_TUNING_H

#include "device/device.h"

#define MPT_TUNING_MAX_PARAMS 24
#define MPT_TUNING_MAX_CANDIDATES 8

/* One parameter set of one CLBlast kernel ("Xgemm" or "XgemmDirect"). */
typedef struct {
    char routine[16];
    size_t count;
    char names[MPT_TUNING_MAX_PARAMS][12];
    size_t values[MPT_TUNING_MAX_PARAMS];
    double tuner_ms; /* the tuner's time for the kernel alone, at its shape */
    char source[40]; /* the tuner result file it came from */
} mpt__clblast_params_t;

/* One GEMM shape of the shipped models (also mpt-bench gemm's list). */
typedef struct {
    const char *what;
    int ta, tb;
    size_t m, n, k;
    size_t count; /* > 1: a batched GEMM of `count` products */
} mpt__gemm_shape_t;

/* The models' GEMM shapes; quick: the four small MLP batch-128 shapes. */
const mpt__gemm_shape_t *mpt__tuning_shapes(int quick, size_t *count);

/* What a tuning run does.  fraction: the tuners' -fraction (explore one
 * configuration in `fraction`); variants: how many of a tuner's variations
 * to let finish (the first is CLBlast's fixed parameter set, later ones
 * random searches of far larger sets); quick: small tuner sizes and the
 * quick shapes (tests). */
typedef struct {
    int quick;
    double fraction;
    int variants;
    int rounds;        /* D C1 C2 ... repeated this many times */
    double min_ms;     /* each sample repeats a shape's call for at least this */
    double margin;     /* a candidate must be this much faster in total (0.02 = 2%) */
    const char *self;  /* program that measures an arm: self --tune-measure ARMFILE */
    const char *workdir; /* scratch directory (tuner JSON, logs, arm files) */
    void (*progress)(void *ctx, const char *line); /* optional */
    void *progress_ctx;
} mpt__tuning_opts_t;

/* Runs `routine`'s tuner for dev; candidates (best first by the tuner's
 * time) go to out.  MPT_ERR_NOT_FOUND when the tuner is not installed. */
int mpt__tuning_run_tuner(mpt_device_t *dev, const char *routine, const mpt__tuning_opts_t *o,
                          mpt__clblast_params_t *out, size_t max, size_t *count);

/* Reads one tuner result file: its best parameters (PRECISION dropped). */
int mpt__tuning_read_tuner_json(const char *path, const char *routine,
                                mpt__clblast_params_t *out);

/* Applies a parameter set to dev's CLBlast (single precision). */
int mpt__tuning_override(mpt_device_t *dev, const mpt__clblast_params_t *p);

/* Seconds per call of each shape on dev with its current parameters:
 * each call repeated for at least min_s, to the end of its work. */
int mpt__tuning_time_shapes(mpt_device_t *dev, int quick, double min_s, double *seconds);

/* The decision for one candidate: given per-shape medians of the defaults
 * (d) and of the candidate (c) over nshapes shapes, whether the candidate
 * wins: its total time is below the defaults' by more than margin.  The
 * total is what a training step spends in these GEMMs. */
int mpt__tuning_decide(const double *d, const double *c, size_t nshapes, double margin);

/* The whole run for one device (see the header comment); the result is
 * saved in the device's tuning file and returned (new reference). */
int mpt__tuning_tune(mpt_device_t *dev, const mpt__tuning_opts_t *o, json_t **result);

/* The child side of step 2: reads ARMFILE, opens nothing itself (dev is
 * opened by the caller with MPT_CLBLAST_TUNING=off), applies the arm's
 * parameters, times the shapes, writes {"seconds": [...]} to out_path. */
int mpt__tuning_measure_arm(mpt_device_t *dev, const char *arm_path, const char *out_path);

/* $XDG_CACHE_HOME/mpt/clblast-<hash>.json for dev. */
int mpt__tuning_path(const mpt_device_t *dev, char *buf, size_t size);

/* At open (blas.c): applies the stored parameters of every kept routine
 * and sets dev->info.clblast_tuning.  A missing file means defaults; a
 * malformed one or one CLBlast refuses is an error naming the file. */
int mpt__tuning_apply_stored(mpt_device_t *dev);

#endif
