/*
 * device/gemm.h: the GEMM provider of a device, for the modules below it
 * (profile, tensor, engine).  Never installed.
 *
 * Every GEMM, batched GEMM and bias-gradient GEMV of mpt goes through
 * these calls, which run it with the device's provider:
 * - CLBlast (gemm_provider.c): kernels enqueued on the device's queue; the
 *   provider of GPUs and accelerators.
 * - the host BLAS (gemm_host.c, OpenBLAS through CBLAS): on CPU devices
 *   whose buffers are host memory (PoCL), cblas_sgemm runs as a command of
 *   the device's in-order queue: a native kernel where the device runs
 *   them (the call returns at once, as CLBlast's do), else between a
 *   blocking map of the buffers and their unmap (the call returns with
 *   the GEMM done).  Queue order is kept either way.
 * The provider is chosen when the device is opened (MPT_BLAS, see
 * mpt__gemm_choose) and shown in mpt_device_info_t.gemm_provider.
 *
 * Matrices are row-major, given as buffer + offset in floats + leading
 * dimension, as CLBlast takes them.
 */
#ifndef MPT_DEVICE_GEMM_H
#define MPT_DEVICE_GEMM_H

#include "device/device.h"

/* Chooses dev's provider from MPT_BLAS (auto, clblast, host) and its type:
 * auto takes the host BLAS on a CPU device with host-unified memory.
 * MPT_ERR_PARSE for any other value of MPT_BLAS. */
int mpt__gemm_choose(mpt_device_t *dev);

/* dev->gemm_host: how the host provider runs a call (gemm_host.c). */
#define MPT_GEMM_HOST_MAP 1    /* between a blocking map and the unmap */
#define MPT_GEMM_HOST_NATIVE 2 /* as a native kernel of the queue */

/* The host-BLAS thread count of every host-provider device of devs when
 * they run GEMMs at the same time (see gemm_host.c for why they share
 * one count): min(compute units, usable cores / host devices), >= 1. */
int mpt__gemm_threads_for(mpt_device_t *const *devs, size_t n);
/* Sets that count on them.  A device set sets it when opened, for all of
 * its devices; an engine sets it again for the devices its plan runs (a
 * plan on one of two devices gives that one every core), and the
 * profiler for the devices it measures (alone: each device's own count;
 * together: the group's). */
void mpt__gemm_set_threads(mpt_device_t *const *devs, size_t n);

/* Frees what the provider keeps per device (the ones vector). */
void mpt__gemm_release(mpt_device_t *dev);

/* C(m x n) = alpha op(A) op(B) + beta C (see tensor.h's mpt__op_gemm);
 * k must be > 0 (CLBlast rejects k = 0), m or n = 0 does nothing. */
int mpt__gemm(mpt_device_t *dev, int trans_a, int trans_b, size_t m, size_t n, size_t k,
              float alpha, cl_mem a, size_t a_off, size_t lda, cl_mem b, size_t b_off,
              size_t ldb, float beta, cl_mem c, size_t c_off, size_t ldc);

/* `count` GEMMs of one shape, the i-th at float offsets a_off[i], b_off[i],
 * c_off[i] (from the buffers' start); one CLBlast launch, or a loop of
 * host GEMMs inside one host call. */
int mpt__gemm_batched(mpt_device_t *dev, int trans_a, int trans_b, size_t m, size_t n,
                      size_t k, float alpha, cl_mem a, const size_t *a_off, size_t lda,
                      cl_mem b, const size_t *b_off, size_t ldb, float beta, cl_mem c,
                      const size_t *c_off, size_t ldc, size_t count);

/* db[j] = beta db[j] + sum over r of dy[r, j] for a rows x cols dy (the
 * bias gradient): a GEMV with a persistent ones vector under CLBlast,
 * column sums on the mapped buffers under the host provider.  beta = 0
 * makes db output only. */
int mpt__gemm_sum_rows(mpt_device_t *dev, cl_mem dy, size_t dy_off, size_t rows, size_t cols,
                       float beta, cl_mem db, size_t db_off);

/* Ends a CLBlast call: its status (CLBlastSuccess = 0) becomes
 * MPT_ERR_BLAS naming `what`; its event goes to the device's timing. */
int mpt__device_blas_done(mpt_device_t *dev, int blas_status, cl_event ev, const char *what);

/* ---- the host provider (gemm_host.c) ------------------------------------ */

int mpt__gemm_host(mpt_device_t *dev, int trans_a, int trans_b, size_t m, size_t n, size_t k,
                   float alpha, cl_mem a, const size_t *a_off, size_t lda, cl_mem b,
                   const size_t *b_off, size_t ldb, float beta, cl_mem c, const size_t *c_off,
                   size_t ldc, size_t count);
int mpt__gemm_host_sum_rows(mpt_device_t *dev, cl_mem dy, size_t dy_off, size_t rows,
                            size_t cols, float beta, cl_mem db, size_t db_off);
/* ---- host calls on the buffers' host memory (gemm_host.c) --------------- */

/* Work the host provider runs as one call: a GEMM with its epilogue
 * (bias, activation) or a linear layer's whole backward (tensor/linear.c),
 * so that a layer costs the queue one command (and, through maps, one
 * blocking wait) instead of one per GEMM and per kernel around it. */
#define MPT_HOST_MAX_ARGS 8

typedef struct {
    cl_mem mem;
    size_t off, n; /* floats */
    int write;     /* the call writes some of it */
} mpt__host_arg_t;

/* Runs fn(copy of arg, ptr) in the device's queue order, ptr[i] the host
 * address of args[i]'s first float: as a native kernel (enqueued; arg's
 * arg_size bytes are copied, so arg must hold values, not pointers to the
 * caller's memory) or between a blocking map of the regions (merged per
 * buffer) and their unmap.  Counts one BLAS call, and its time as BLAS
 * busy time while timing is on.  MPT_ERR_RANGE for a region outside its
 * buffer; n <= MPT_HOST_MAX_ARGS. */
int mpt__host_call(mpt_device_t *dev, const char *what, const mpt__host_arg_t *args, size_t n,
                   void (*fn)(void *arg, float *const *ptr), const void *arg, size_t arg_size);
/* cblas_sgemm on host addresses, inside mpt__host_call's fn (which set
 * the device's thread count); sizes checked by the caller to fit int. */
void mpt__host_sgemm(int trans_a, int trans_b, size_t m, size_t n,
                     size_t k, float alpha, const float *a, size_t lda, const float *b,
                     size_t ldb, float beta, float *c, size_t ldc);

/* "OpenBLAS 0.3.21 ..." (its build configuration) or "CBLAS". */
const char *mpt__gemm_host_name(void);

#endif
