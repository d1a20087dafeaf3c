/*
 * tensor/blas_ops.c: every GEMM and the level-1/2 BLAS the layers and
 * optimizers need.  GEMMs and the bias-gradient GEMV go to the device's
 * GEMM provider (device/gemm.h: CLBlast, or the host BLAS on CPU
 * devices); nrm2, scal and axpy stay on CLBlast, being bandwidth-bound
 * and cheap.  Tensors carry float offsets, which both take as element
 * offsets.
 */
#include <clblast_c.h>

#include "device/gemm.h"
#include "tensor/tensor.h"


int mpt__op_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                 const mpt__tensor_t *a, size_t lda, const mpt__tensor_t *b, size_t ldb,
                 float beta, mpt__tensor_t *c, size_t ldc)
{
    mpt_device_t *dev = mpt__tensor_device(c);
    if (m == 0 || n == 0)
        return MPT_OK;
    if (k == 0) { /* C = beta * C, row by row (ldc may exceed n): BLAS providers reject k = 0 */
        for (size_t r = 0; r < m; r++) {
            mpt__tensor_t row = *c;
            row.off += r * ldc;
            /* beta = 0 means C is output only (BLAS): zero it, NaN included */
            int status = beta == 0.0f ? mpt__op_fill(&row, n, 0.0f) : mpt__op_scale(&row, n, beta);
            if (status < 0)
                return status;
        }
        return MPT_OK;
    }
    return mpt__gemm(dev, trans_a, trans_b, m, n, k, alpha, a->buf->mem, a->off, lda,
                     b->buf->mem, b->off, ldb, beta, c->buf->mem, c->off, ldc);
}

/* The device's provider keeps what the GEMV needs (a persistent vector of
 * ones under CLBlast): nothing is allocated per call. */
int mpt__op_sum_rows(const mpt__tensor_t *dy, size_t rows, size_t cols, float beta,
                     mpt__tensor_t *db)
{
    mpt_device_t *dev = mpt__tensor_device(db);
    return mpt__gemm_sum_rows(dev, dy->buf->mem, dy->off, rows, cols, beta, db->buf->mem,
                              db->off);
}

/* The result goes through the device's persistent one-float buffer
 * (dev->scalar, freed with the provider's state): clipping every step
 * allocates nothing. */
int mpt__op_nrm2(const mpt__tensor_t *x, size_t n, float *out)
{
    mpt_device_t *dev = mpt__tensor_device(x);
    cl_event ev = NULL;
    cl_int err;
    *out = 0;
    if (n == 0)
        return MPT_OK;
    if (!dev->scalar &&
        !(dev->scalar = clCreateBuffer(dev->context, CL_MEM_READ_WRITE, sizeof(float), NULL, &err)))
        return mpt__fail_cl(err, "allocating a float on device %d", dev->info.index);
    mpt__device_blas_begin(dev, MPT__BLAS_SNRM2);
    CLBlastStatusCode s = CLBlastSnrm2(n, dev->scalar, 0, x->buf->mem, x->off, 1, &dev->queue, &ev);
    int status = mpt__blas_done(dev, s, ev, "Snrm2");
    if (status == MPT_OK &&
        (err = clEnqueueReadBuffer(dev->queue, dev->scalar, CL_TRUE, 0, sizeof(float), out, 0,
                                   NULL, NULL)) != CL_SUCCESS)
        status = mpt__fail_cl(err, "reading a norm from device %d", dev->info.index);
    return status;
}

int mpt__op_scale(mpt__tensor_t *x, size_t n, float alpha)
{
    mpt_device_t *dev = mpt__tensor_device(x);
    cl_event ev = NULL;
    if (n == 0)
        return MPT_OK;
    mpt__device_blas_begin(dev, MPT__BLAS_SSCAL);
    CLBlastStatusCode s = CLBlastSscal(n, alpha, x->buf->mem, x->off, 1, &dev->queue, &ev);
    return mpt__blas_done(dev, s, ev, "Sscal");
}

int mpt__op_axpy(size_t n, float alpha, const mpt__tensor_t *x, mpt__tensor_t *y)
{
    mpt_device_t *dev = mpt__tensor_device(y);
    cl_event ev = NULL;
    if (n == 0)
        return MPT_OK;
    mpt__device_blas_begin(dev, MPT__BLAS_SAXPY);
    CLBlastStatusCode s =
        CLBlastSaxpy(n, alpha, x->buf->mem, x->off, 1, y->buf->mem, y->off, 1, &dev->queue, &ev);
    return mpt__blas_done(dev, s, ev, "Saxpy");
}
