/*
 * device/gemm_provider.c: which provider runs a device's GEMMs, and the
 * CLBlast side of every call in device/gemm.h.  The host side is in
 * gemm_host.c.
 *
 * Why a CPU device takes the host BLAS: CLBlast's kernels compiled by
 * PoCL reach 8-15 GFLOP/s on this kind of CPU where OpenBLAS reaches
 * ~240 on the same cores (docs/performance.md), and a PoCL buffer is host
 * memory, so mapping it costs no copy.  The choice is made from what the
 * device reports (CPU type, host-unified memory), never from the vendor
 * name: another CPU OpenCL runtime gets the same treatment.
 *
 * Left out: choosing per shape (CLBlast never wins on a CPU device here)
 * and a host provider for GPUs (their buffers are not host memory).
 */
#include <stdlib.h>
#include <string.h>

#include <clblast_c.h>

#include "device/gemm.h"

int mpt__gemm_choose(mpt_device_t *dev)
{
    const char *v = mpt__env(MPT_ENV_BLAS);
    int shared = dev->info.type == MPT_DEVICE_CPU && dev->info.unified_memory;
    cl_device_exec_capabilities caps = 0;
    if (!strcmp(v, "clblast"))
        dev->gemm_host = 0;
    else if (!strcmp(v, "host"))
        dev->gemm_host = MPT_GEMM_HOST_MAP; /* forced: correct anywhere, maps copy where memory is not shared */
    else if (!v[0] || !strcmp(v, "auto"))
        dev->gemm_host = shared ? MPT_GEMM_HOST_MAP : 0;
    else
        return mpt__fail(MPT_ERR_PARSE, "MPT_BLAS='%s': expected auto, clblast or host", v);
    /* Native kernels where they run on the buffers' own memory: on a
     * device without shared memory the runtime would copy every buffer. */
    if (dev->gemm_host && shared &&
        clGetDeviceInfo(dev->id, CL_DEVICE_EXECUTION_CAPABILITIES, sizeof caps, &caps, NULL) ==
            CL_SUCCESS &&
        (caps & CL_EXEC_NATIVE_KERNEL))
        dev->gemm_host = MPT_GEMM_HOST_NATIVE;
    dev->info.gemm_provider = dev->gemm_host ? "host" : "clblast";
    dev->info.gemm_queued = dev->gemm_host != MPT_GEMM_HOST_MAP;
    dev->blas_threads = dev->info.compute_units ? (int)dev->info.compute_units : 1;
    return MPT_OK;
}

void mpt__gemm_release(mpt_device_t *dev)
{
    if (dev->blas_mark)
        clReleaseEvent(dev->blas_mark);
    dev->blas_mark = NULL;
    if (dev->scalar)
        clReleaseMemObject(dev->scalar);
    dev->scalar = NULL;
    if (dev->ones)
        clReleaseMemObject(dev->ones); /* OpenCL keeps it until queued GEMVs end */
    dev->ones = NULL;
    dev->ones_len = 0;
}

int mpt__device_blas_done(mpt_device_t *dev, int blas_status, cl_event ev, const char *what)
{
    dev->blas_calls++;
    mpt__device_blas_leave(dev, blas_status == 0);
    if (blas_status != 0) {
        if (ev)
            clReleaseEvent(ev);
        mpt__device_blas_event(dev, NULL); /* drops the begin marker */
        return mpt__fail(MPT_ERR_BLAS, "CLBlast %s on device %d (%s): status %d", what,
                         dev->info.index, dev->info.name, blas_status);
    }
    mpt__device_blas_event(dev, ev); /* the in-order queue orders what follows */
    return MPT_OK;
}

static CLBlastTranspose tr(int t)
{
    return t ? CLBlastTransposeYes : CLBlastTransposeNo;
}

int mpt__gemm(mpt_device_t *dev, int trans_a, int trans_b, size_t m, size_t n, size_t k,
              float alpha, cl_mem a, size_t a_off, size_t lda, cl_mem b, size_t b_off,
              size_t ldb, float beta, cl_mem c, size_t c_off, size_t ldc)
{
    cl_event ev = NULL;
    if (m == 0 || n == 0)
        return MPT_OK;
    if (k == 0)
        return mpt__fail(MPT_ERR_INVALID, "GEMM %zux%zux0 on device %d: k must be > 0", m, n,
                         dev->info.index);
    int health = mpt__device_health(dev, "GEMM");
    if (health < 0)
        return health;
    if (dev->gemm_host)
        return mpt__gemm_host(dev, trans_a, trans_b, m, n, k, alpha, a, &a_off, lda, b, &b_off,
                              ldb, beta, c, &c_off, ldc, 1);
    mpt__device_blas_begin(dev, MPT__BLAS_SGEMM);
    CLBlastStatusCode s = CLBlastSgemm(CLBlastLayoutRowMajor, tr(trans_a), tr(trans_b), m, n, k,
                                       alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc,
                                       &dev->queue, &ev);
    return mpt__device_blas_done(dev, s, ev, "Sgemm");
}

int mpt__gemm_batched(mpt_device_t *dev, int trans_a, int trans_b, size_t m, size_t n,
                      size_t k, float alpha, cl_mem a, const size_t *a_off, size_t lda,
                      cl_mem b, const size_t *b_off, size_t ldb, float beta, cl_mem c,
                      const size_t *c_off, size_t ldc, size_t count)
{
    cl_event ev = NULL;
    if (count == 0 || m == 0 || n == 0)
        return MPT_OK;
    if (k == 0)
        return mpt__fail(MPT_ERR_INVALID, "batched GEMM on device %d: k must be > 0",
                         dev->info.index);
    int health = mpt__device_health(dev, "batched GEMM");
    if (health < 0)
        return health;
    if (dev->gemm_host)
        return mpt__gemm_host(dev, trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off,
                              ldb, beta, c, c_off, ldc, count);
    float *ab = malloc(2 * count * sizeof *ab);
    if (!ab)
        return mpt__fail(MPT_ERR_NOMEM, "batched GEMM: out of memory for %zu factors", count);
    for (size_t i = 0; i < count; i++)
        ab[i] = alpha, ab[count + i] = beta;
    /* CLBlast copies the offsets and factors into device buffers before
     * returning. */
    mpt__device_blas_begin(dev, MPT__BLAS_SGEMM_BATCHED);
    CLBlastStatusCode s = CLBlastSgemmBatched(CLBlastLayoutRowMajor, tr(trans_a), tr(trans_b), m,
                                              n, k, ab, a, a_off, lda, b, b_off, ldb, ab + count,
                                              c, c_off, ldc, count, &dev->queue, &ev);
    free(ab);
    return mpt__device_blas_done(dev, s, ev, "SgemmBatched");
}

/* dev->ones holding at least n ones: grown (never shrunk) so that the bias
 * gradient of every layer shares one vector and no step allocates once
 * the largest batch has been seen. */
static int ones(mpt_device_t *dev, size_t n)
{
    cl_int err;
    if (dev->ones_len >= n)
        return MPT_OK;
    mpt__gemm_release(dev);
    cl_mem mem = clCreateBuffer(dev->context, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
    if (!mem)
        return mpt__fail_cl(err, "allocating %zu ones on device %d", n, dev->info.index);
    const cl_float one = 1.0f;
    err = clEnqueueFillBuffer(dev->queue, mem, &one, sizeof one, 0, n * sizeof one, 0, NULL,
                              NULL);
    if (err != CL_SUCCESS) {
        clReleaseMemObject(mem);
        return mpt__fail_cl(err, "filling %zu ones on device %d", n, dev->info.index);
    }
    dev->ones = mem, dev->ones_len = n;
    return MPT_OK;
}

int mpt__gemm_sum_rows(mpt_device_t *dev, cl_mem dy, size_t dy_off, size_t rows, size_t cols,
                       float beta, cl_mem db, size_t db_off)
{
    cl_event ev = NULL;
    int status;
    if (cols == 0)
        return MPT_OK;
    if (dev->gemm_host)
        return mpt__gemm_host_sum_rows(dev, dy, dy_off, rows, cols, beta, db, db_off);
    MPT_TRY(ones(dev, rows ? rows : 1));
    /* db(cols) = dy^T (cols x rows) * ones(rows) + beta db */
    mpt__device_blas_begin(dev, MPT__BLAS_SGEMV);
    CLBlastStatusCode s = CLBlastSgemv(CLBlastLayoutRowMajor, CLBlastTransposeYes, rows, cols,
                                       1.0f, dy, dy_off, cols, dev->ones, 0, 1, beta, db, db_off,
                                       1, &dev->queue, &ev);
    status = mpt__device_blas_done(dev, s, ev, "Sgemv");
out:
    return status;
}
