/*
 * tensor/blas_ops.c: every GEMM and the level-1/2 BLAS the layers and
 * optimizers need, through CLBlast.  Tensors carry float offsets, which
 * CLBlast takes as element offsets.
 */
#include <clblast_c.h>

#include "tensor/tensor.h"


static CLBlastTranspose tr(int t)
{
    return t ? CLBlastTransposeYes : CLBlastTransposeNo;
}

int mpt__op_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                 const mpt__tensor_t *a, size_t lda, const mpt__tensor_t *b, size_t ldb,
                 float beta, mpt__tensor_t *c, size_t ldc)
{
    mpt_device_t *dev = mpt__tensor_device(c);
    cl_event ev = NULL;
    if (m == 0 || n == 0)
        return MPT_OK;
    if (k == 0) { /* C = beta * C, row by row (ldc may exceed n): CLBlast rejects k = 0 */
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
    CLBlastStatusCode s =
        CLBlastSgemm(CLBlastLayoutRowMajor, tr(trans_a), tr(trans_b), m, n, k, alpha, a->buf->mem,
                     a->off, lda, b->buf->mem, b->off, ldb, beta, c->buf->mem, c->off, ldc,
                     &dev->queue, &ev);
    return mpt__blas_done(dev, s, ev, "Sgemm");
}

/* A device vector of ones, cached per length in the device's program
 * cache would be neater; a small buffer per call keeps this simple and the
 * bias gradients are tiny next to the GEMMs. */
int mpt__op_sum_rows(const mpt__tensor_t *dy, size_t rows, size_t cols, float beta,
                     mpt__tensor_t *db)
{
    mpt_device_t *dev = mpt__tensor_device(db);
    mpt__tensor_t ones;
    cl_event ev = NULL;
    size_t dims[1] = {rows};
    int status = mpt__tensor_alloc(dev, 1, dims, &ones);
    if (status == MPT_OK)
        status = mpt__op_fill(&ones, rows, 1.0f);
    if (status == MPT_OK) {
        /* db(cols) = dy^T (cols x rows) * ones(rows) */
        CLBlastStatusCode s = CLBlastSgemv(CLBlastLayoutRowMajor, CLBlastTransposeYes, rows, cols,
                                           1.0f, dy->buf->mem, dy->off, cols, ones.buf->mem, 0, 1,
                                           beta, db->buf->mem, db->off, 1, &dev->queue, &ev);
        status = mpt__blas_done(dev, s, ev, "Sgemv");
    }
    mpt_buffer_free(ones.buf); /* released after the queued GEMV by OpenCL refcounting */
    return status;
}

int mpt__op_nrm2(const mpt__tensor_t *x, size_t n, float *out)
{
    mpt_device_t *dev = mpt__tensor_device(x);
    mpt_buffer_t *r = NULL;
    cl_event ev = NULL;
    *out = 0;
    if (n == 0)
        return MPT_OK;
    int status = mpt_buffer_create(dev, sizeof(float), &r);
    if (status == MPT_OK) {
        CLBlastStatusCode s =
            CLBlastSnrm2(n, r->mem, 0, x->buf->mem, x->off, 1, &dev->queue, &ev);
        status = mpt__blas_done(dev, s, ev, "Snrm2");
    }
    if (status == MPT_OK)
        status = mpt_buffer_read(r, 0, out, sizeof(float));
    mpt_buffer_free(r);
    return status;
}

int mpt__op_scale(mpt__tensor_t *x, size_t n, float alpha)
{
    mpt_device_t *dev = mpt__tensor_device(x);
    cl_event ev = NULL;
    if (n == 0)
        return MPT_OK;
    CLBlastStatusCode s = CLBlastSscal(n, alpha, x->buf->mem, x->off, 1, &dev->queue, &ev);
    return mpt__blas_done(dev, s, ev, "Sscal");
}

int mpt__op_axpy(size_t n, float alpha, const mpt__tensor_t *x, mpt__tensor_t *y)
{
    mpt_device_t *dev = mpt__tensor_device(y);
    cl_event ev = NULL;
    if (n == 0)
        return MPT_OK;
    CLBlastStatusCode s =
        CLBlastSaxpy(n, alpha, x->buf->mem, x->off, 1, y->buf->mem, y->off, 1, &dev->queue, &ev);
    return mpt__blas_done(dev, s, ev, "Saxpy");
}
