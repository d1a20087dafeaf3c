/*
 * tensor/attention.c: launchers of kernels/transformer.cl (token and
 * position embedding, the causal softmax) and the batched GEMM that
 * attention runs per (sample, head) through the device's GEMM provider
 * (device/gemm.h).
 *
 * Each launcher checks its views as the others do (tensor.h).  Left out:
 * a fused attention kernel (flash attention): the scores are materialised,
 * T x T per head, which is what the saved activations of the model are
 * sized for.
 */
#include <stdlib.h>

#include "device/gemm.h"
#include "tensor/tensor.h"

#define LOCAL 64

int mpt__op_embedding_forward(const mpt__tensor_t *x, const mpt__tensor_t *wte,
                              const mpt__tensor_t *wpe, size_t batch, size_t T, size_t C,
                              size_t V, mpt__tensor_t *y)
{
    const char *op = "mpt__op_embedding_forward";
    cl_uint xo, wteo, wpeo, yo, uT, uC, uV, utotal;
    int status;
    if (!y || !y->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor y is missing", op);
    mpt_device_t *dev = mpt__tensor_device(y);
    MPT_TRY(mpt__check_view(x, batch * T, dev, op, "x", &xo));
    MPT_TRY(mpt__check_view(wte, V * C, dev, op, "wte", &wteo));
    MPT_TRY(mpt__check_view(wpe, T * C, dev, op, "wpe", &wpeo));
    MPT_TRY(mpt__check_view(y, batch * T * C, dev, op, "y", &yo));
    MPT_TRY(mpt__u32(T, &uT));
    MPT_TRY(mpt__u32(C, &uC));
    MPT_TRY(mpt__u32(V, &uV));
    MPT_TRY(mpt__u32(batch * T * C, &utotal));
    mpt__arg_t args[] = {MPT_ARG(x->buf->mem),   MPT_ARG(xo),   MPT_ARG(wte->buf->mem),
                         MPT_ARG(wteo),          MPT_ARG(wpe->buf->mem), MPT_ARG(wpeo),
                         MPT_ARG(y->buf->mem),   MPT_ARG(yo),   MPT_ARG(uT),
                         MPT_ARG(uC),            MPT_ARG(uV),   MPT_ARG(utotal)};
    status = mpt__launch(dev, "transformer", "mpt_embedding_forward", batch * T * C, LOCAL, 12,
                         args);
out:
    return status;
}

int mpt__op_embedding_backward(const mpt__tensor_t *x, const mpt__tensor_t *dy, size_t batch,
                               size_t T, size_t C, size_t V, float beta, mpt__tensor_t *dwte,
                               mpt__tensor_t *dwpe)
{
    const char *op = "mpt__op_embedding_backward";
    cl_uint xo, dyo, dwteo, dwpeo, urows, ubatch, uT, uC, uV;
    int status;
    if (!dwte || !dwte->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor dwte is missing", op);
    mpt_device_t *dev = mpt__tensor_device(dwte);
    MPT_TRY(mpt__check_view(x, batch * T, dev, op, "x", &xo));
    MPT_TRY(mpt__check_view(dy, batch * T * C, dev, op, "dy", &dyo));
    MPT_TRY(mpt__check_view(dwte, V * C, dev, op, "dwte", &dwteo));
    MPT_TRY(mpt__check_view(dwpe, T * C, dev, op, "dwpe", &dwpeo));
    MPT_TRY(mpt__u32(batch * T, &urows));
    MPT_TRY(mpt__u32(batch, &ubatch));
    MPT_TRY(mpt__u32(T, &uT));
    MPT_TRY(mpt__u32(C, &uC));
    MPT_TRY(mpt__u32(V, &uV));
    mpt__arg_t wte_args[] = {MPT_ARG(x->buf->mem),    MPT_ARG(xo),    MPT_ARG(dy->buf->mem),
                             MPT_ARG(dyo),            MPT_ARG(dwte->buf->mem),
                             MPT_ARG(dwteo),          MPT_ARG(urows), MPT_ARG(uC),
                             MPT_ARG(uV),             MPT_ARG(beta)};
    MPT_TRY(mpt__launch(dev, "transformer", "mpt_embedding_backward_wte", C, LOCAL, 10,
                        wte_args));
    mpt__arg_t wpe_args[] = {MPT_ARG(dy->buf->mem), MPT_ARG(dyo), MPT_ARG(dwpe->buf->mem),
                             MPT_ARG(dwpeo),        MPT_ARG(ubatch), MPT_ARG(uT), MPT_ARG(uC)};
    status = mpt__launch(dev, "transformer", "mpt_embedding_backward_wpe", T * C, LOCAL, 7,
                         wpe_args);
out:
    return status;
}

int mpt__op_causal_softmax(mpt__tensor_t *s, size_t rows, size_t T, float scale)
{
    const char *op = "mpt__op_causal_softmax";
    cl_uint so, urows, uT;
    int status;
    if (!s || !s->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor s is missing", op);
    mpt_device_t *dev = mpt__tensor_device(s);
    MPT_TRY(mpt__check_view(s, rows * T, dev, op, "s", &so));
    MPT_TRY(mpt__u32(rows, &urows));
    MPT_TRY(mpt__u32(T, &uT));
    mpt__arg_t args[] = {MPT_ARG(s->buf->mem), MPT_ARG(so), MPT_ARG(urows), MPT_ARG(uT),
                         MPT_ARG(scale)};
    status = mpt__launch(dev, "transformer", "mpt_causal_softmax", rows, LOCAL, 5, args);
out:
    return status;
}

int mpt__op_causal_softmax_backward(const mpt__tensor_t *p, mpt__tensor_t *d, size_t rows,
                                    size_t T, float scale)
{
    const char *op = "mpt__op_causal_softmax_backward";
    cl_uint po, dof, urows, uT;
    int status;
    if (!d || !d->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor d is missing", op);
    mpt_device_t *dev = mpt__tensor_device(d);
    MPT_TRY(mpt__check_view(p, rows * T, dev, op, "p", &po));
    MPT_TRY(mpt__check_view(d, rows * T, dev, op, "d", &dof));
    MPT_TRY(mpt__u32(rows, &urows));
    MPT_TRY(mpt__u32(T, &uT));
    mpt__arg_t args[] = {MPT_ARG(p->buf->mem), MPT_ARG(po),    MPT_ARG(d->buf->mem),
                         MPT_ARG(dof),         MPT_ARG(urows), MPT_ARG(uT), MPT_ARG(scale)};
    status = mpt__launch(dev, "transformer", "mpt_causal_softmax_backward", rows, LOCAL, 7, args);
out:
    return status;
}

int mpt__op_gemm_batched(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                         const mpt__tensor_t *a, const size_t *a_off, size_t lda,
                         const mpt__tensor_t *b, const size_t *b_off, size_t ldb, float beta,
                         mpt__tensor_t *c, const size_t *c_off, size_t ldc, size_t count)
{
    mpt_device_t *dev = mpt__tensor_device(c);
    if (count == 0 || m == 0 || n == 0)
        return MPT_OK;
    if (k == 0)
        return mpt__fail(MPT_ERR_INVALID, "mpt__op_gemm_batched: k = 0");
    size_t *offs = malloc(3 * count * sizeof *offs);
    if (!offs)
        return mpt__fail(MPT_ERR_NOMEM, "mpt__op_gemm_batched: out of memory for %zu offsets",
                         count);
    for (size_t i = 0; i < count; i++) {
        offs[i] = a->off + a_off[i];
        offs[count + i] = b->off + b_off[i];
        offs[2 * count + i] = c->off + c_off[i];
    }
    int status = mpt__gemm_batched(dev, trans_a, trans_b, m, n, k, alpha, a->buf->mem, offs, lda,
                                   b->buf->mem, offs + count, ldb, beta, c->buf->mem,
                                   offs + 2 * count, ldc, count);
    free(offs);
    return status;
}
