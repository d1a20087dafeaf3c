/*
 * device/device.h: the OpenCL side of a device, for the modules below it
 * (topo, profile, tensor, engine).  Never installed.
 */
#ifndef MPT_DEVICE_DEVICE_H
#define MPT_DEVICE_DEVICE_H

#include <pthread.h>

#include <CL/cl.h>

#include "core/internal.h"

typedef struct mpt__program mpt__program_t; /* a built program and its kernels */

struct mpt_device {
    mpt_device_info_t info;
    char *strings[7]; /* storage behind info's strings */
    char *identity;
    cl_platform_id platform;
    cl_device_id id;
    cl_context context;
    cl_command_queue queue; /* in order, profiling enabled */
    pthread_mutex_t lock;   /* guards the program cache */
    mpt__program_t *programs;
    int timing;             /* keep op events for mpt_device_busy_seconds */
    unsigned long launches; /* kernels launched (MPT_FAIL_LAUNCH counts them) */
    unsigned long blas_calls; /* BLAS routines called: CLBlast's, or host calls on
                               * mapped buffers (one per map); the engine reports
                               * both counts per step (mpt_device_step_t) */
    cl_event *events;
    cl_event *event_start;     /* a marker enqueued before events[i], or NULL: the op
                                * ran from that marker's end to events[i]'s end */
    unsigned char *event_blas; /* 1 where events[i] is a CLBlast routine's */
    cl_event blas_mark;        /* mpt__device_blas_begin's marker, until blas_done */
    unsigned blas_warm;        /* 1 << routine: CLBlast routines already called here */
    int blas_first;            /* 1 + the routine whose first call holds the
                                * process-wide first-call lock (blas.c); 0: none */
    size_t nevents, cap_events;
    /* The GEMM provider (device/gemm.h), chosen at open. */
    int gemm_host;       /* 0: CLBlast; else the host BLAS, MPT_GEMM_HOST_* (gemm.h) */
    int blas_threads;    /* host BLAS threads for this device's GEMMs */
    cl_mem ones;         /* CLBlast's GEMV vector of ones for sum_rows, grown as needed */
    size_t ones_len;
    cl_mem scalar;       /* one float for results read back (nrm2), made on first use */
    double host_seconds; /* host GEMM time, counted like events while timing is on */
    /* Health (health.c): device operations counted for MPT_FAIL_DEVICE, a
     * device found lost fails every later operation, and a hung one waits
     * until the engine's watchdog gives it up. */
    unsigned long ops;
    unsigned long faults; /* injected failures so far (MPT_FAIL_DEVICE, MPT_FAIL_LAUNCH) */
    int lost;
    _Atomic int given_up;
    /* Memory accounting (buffer.c): bytes of mpt_buffer_t alive on the
     * device, their high-water mark since the last reset, and the cap
     * (--device-memory; 0: none) that mpt__buffer_create refuses past.
     * Updated with atomics: buffers are made and freed by the engine's
     * threads and by the caller's.  OpenCL's own allocations (CLBlast
     * temporaries, the driver's) are not counted: mpt cannot see them. */
    size_t mem_used, mem_peak, mem_cap;
};

struct mpt_devices {
    mpt_device_t **devices; /* the selected ones, opened */
    size_t count;
    size_t total; /* enumerated before selection */
};

struct mpt_buffer {
    mpt_device_t *dev;
    cl_mem mem;
    size_t size;
};

/* mpt_buffer_create with a name for what the buffer holds ("parameters",
 * "activations"...): an allocation past the device's cap (mem_cap) fails
 * with MPT_ERR_DEVICE_MEMORY naming the device, `what`, the bytes asked,
 * in use and allowed, and the shortfall. */
int mpt__buffer_create(mpt_device_t *dev, size_t bytes, const char *what, mpt_buffer_t **out);

/* A kernel source: embedded at build time (kernels_embedded.c). */
typedef struct {
    const char *name; /* file stem: kernels/<name>.cl */
    const char *source;
    size_t length;
} mpt__kernel_source_t;

extern const mpt__kernel_source_t mpt__kernel_sources[];
extern const size_t mpt__kernel_source_count;

/* The name of an OpenCL error code, e.g. "CL_OUT_OF_RESOURCES". */
const char *mpt__cl_error_name(cl_int err);
/* Records an OpenCL failure (raw code and its name in the detail) and
 * returns MPT_ERR_DEVICE_MEMORY for allocation failures, else MPT_ERR_OPENCL. */
int mpt__fail_cl(cl_int err, const char *fmt, ...) MPT__PRINTF(2, 3);

/* The driver family of a device: "pocl" for PoCL whatever the CPU, else
 * "nvidia", "amd", "intel" or "other" from the vendor string. */
const char *mpt__vendor_word(const char *vendor, const char *platform);

/* Whether the device matches one selection item (index, range or word);
 * MPT_ERR_PARSE for an item that is none of these. */
int mpt__device_matches(const mpt_device_info_t *info, const char *item, int *match);

/* Source of kernels/<name>.cl: from MPT_KERNEL_DIR when set, else embedded.
 * *owned is set when the caller must free the returned text. */
int mpt__kernel_source(const char *name, const char **source, size_t *length, char **owned);

/* The build options used for every program on this device, plus `extra`
 * (tunables such as "-DTILE=16") and MPT_CL_BUILD_OPTIONS. */
int mpt__build_options(const mpt_device_t *dev, const char *extra, char *buf, size_t size);

/* Builds source text for the device; MPT_ERR_BUILD with the build log in
 * the detail on failure.  `label` names the source in messages. */
int mpt__program_build_source(mpt_device_t *dev, const char *label, const char *source,
                              size_t length, const char *extra_options, cl_program *out);

/* A kernel of kernels/<program>.cl built for the device, cached: built on
 * first use, then shared.  The cl_kernel belongs to the device; only the
 * device's one worker thread may set its arguments and launch it. */
int mpt__device_kernel(mpt_device_t *dev, const char *program, const char *kernel,
                       cl_kernel *out);

/* Runs CLBlast's GEMM paths once on the device so that its process-wide
 * caches are filled before several threads use CLBlast at once (blas.c).
 * Call it for every device, from one thread, before starting workers. */
int mpt__device_blas_warmup(mpt_device_t *dev);

/* Applies the CLBlast parameters tuned for the device, if any (blas.c,
 * device/tuning.h); called when the device is opened, before any GEMM. */
int mpt__device_blas_tuning(mpt_device_t *dev);

/* The CLBlast routines mpt calls, for mpt__device_blas_begin. */
typedef enum {
    MPT__BLAS_SGEMM,
    MPT__BLAS_SGEMM_BATCHED,
    MPT__BLAS_SGEMV,
    MPT__BLAS_SNRM2,
    MPT__BLAS_SSCAL,
    MPT__BLAS_SAXPY
} mpt__blas_routine_t;

/* CLBlast fills process-wide caches (its parameter database, compiled
 * programs) on a routine's first call on a device, and that is not safe
 * from two threads at once: Debian's CLBlast 1.5 crashed copying a
 * database entry when two devices' threads made their first SGEMM
 * together (tests/check_profile, about one run in ten; CLBlast issue
 * #486).  So a routine's first call on a device runs alone, under one
 * process-wide lock taken here and released by leave; later calls take
 * no lock (blas.c).  The device's own thread calls both. */
void mpt__device_blas_enter(mpt_device_t *dev, mpt__blas_routine_t routine);
/* Releases what enter took, if anything; ok: the call succeeded, so the
 * routine is warm on the device. */
void mpt__device_blas_leave(mpt_device_t *dev, int ok);

/* Takes an op's event (blas: from a CLBlast routine): kept for timing when
 * it is on, else released. */
void mpt__device_event(mpt_device_t *dev, cl_event ev, int blas);
/* Called before a CLBlast routine: takes the first-call lock when it is
 * the routine's first call on the device (mpt__device_blas_enter), and
 * with timing on, enqueues a marker that mpt__device_blas_done pairs
 * with a marker after the routine, so that a routine of several kernels
 * (pad, transpose, GEMM) counts whole, not just the last kernel whose
 * event CLBlast returns.  mpt__device_blas_done must follow. */
void mpt__device_blas_begin(mpt_device_t *dev, mpt__blas_routine_t routine);
/* The routine's event (NULL when it failed): timed from the begin marker
 * when there is one, else alone. */
void mpt__device_blas_event(mpt_device_t *dev, cl_event ev);

/* health.c: the fault injection of MPT_FAIL_DEVICE=DEVICE:N:KIND, called
 * by every device operation (kernel launch, GEMM, buffer read, write,
 * copy, finish) before it runs.  KIND lost: from the operation after the
 * N-th on, every operation on device index DEVICE fails with
 * MPT_ERR_DEVICE_LOST; hang: that operation blocks, as a driver that never
 * returns would, until mpt__device_give_up (the engine's watchdog), then
 * fails with MPT_ERR_DEVICE_LOST.  Several items separated by commas.
 * MPT_OK when nothing is injected. */
int mpt__device_health(mpt_device_t *dev, const char *what);
/* Gives a hung device up: its blocked operation returns (an injected hang
 * only; a real driver hang keeps its thread). */
void mpt__device_give_up(mpt_device_t *dev);

/* Frees the program cache of a device. */
void mpt__device_programs_free(mpt_device_t *dev);

#endif
