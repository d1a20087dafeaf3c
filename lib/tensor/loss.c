/*
 * tensor/loss.c: launchers of kernels/loss.cl: the fused softmax
 * cross-entropy (per-row loss and, for training, the logit gradient) and
 * the per-row argmax accuracy.
 *
 * Labels are int32 in a device buffer, their offset counted in ints.  The
 * per-row losses stay on the device: reducing them to a mean (and the
 * mean over data-parallel replicas) is the training loop's business, as
 * is choosing `scale` (1 / global batch for a mean loss).  Left out:
 * label smoothing, class weights and ignore_index.
 */
#include "tensor/tensor.h"

/* Work-group size (see elementwise.c); one work-item per row here. */
#define LOCAL 64



/* The checks both ops share: logits rows x cols (within 32 bits) and
 * labels; sets the device and the offsets. */
static int common(const char *op, const mpt__tensor_t *logits, const mpt_buffer_t *labels,
                  size_t labels_off, size_t rows, size_t cols, mpt_device_t **dev, cl_uint *lo,
                  cl_uint *lbo)
{
    if (!logits || !logits->buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor logits is missing", op);
    *dev = mpt__tensor_device(logits);
    if (cols && rows > (size_t)-1 / cols)
        return mpt__fail(MPT_ERR_RANGE, "%s: %zu x %zu logits overflow", op, rows, cols);
    int status = mpt__check_view(logits, rows * cols, *dev, op, "logits", lo);
    if (status == MPT_OK)
        status = mpt__check_range(labels, labels_off, rows, sizeof(cl_int), *dev, op, "labels", lbo);
    return status;
}

int mpt__op_softmax_xent(const mpt__tensor_t *logits, mpt_buffer_t *labels, size_t labels_off,
                         size_t rows, size_t cols, float scale, mpt__tensor_t *loss_rows,
                         mpt__tensor_t *dlogits)
{
    const char *op = "mpt__op_softmax_xent";
    mpt_device_t *dev;
    cl_uint lo, lbo, losso, dlo, urows, ucols;
    int status;
    MPT_TRY(common(op, logits, labels, labels_off, rows, cols, &dev, &lo, &lbo));
    MPT_TRY(mpt__check_view(loss_rows, rows, dev, op, "loss_rows", &losso));
    MPT_TRY(mpt__u32(rows, &urows));
    MPT_TRY(mpt__u32(cols, &ucols));
    if (!dlogits) { /* evaluation: the loss alone, no gradient buffer */
        mpt__arg_t args[] = {MPT_ARG(logits->buf->mem), MPT_ARG(lo),    MPT_ARG(labels->mem),
                             MPT_ARG(lbo),              MPT_ARG(loss_rows->buf->mem),
                             MPT_ARG(losso),            MPT_ARG(urows), MPT_ARG(ucols)};
        status = mpt__launch(dev, "loss", "mpt_softmax_xent_loss", rows, LOCAL, 8, args);
        goto out;
    }
    MPT_TRY(mpt__check_view(dlogits, rows * cols, dev, op, "dlogits", &dlo));
    mpt__arg_t args[] = {MPT_ARG(logits->buf->mem),    MPT_ARG(lo),
                         MPT_ARG(labels->mem),         MPT_ARG(lbo),
                         MPT_ARG(loss_rows->buf->mem), MPT_ARG(losso),
                         MPT_ARG(dlogits->buf->mem),   MPT_ARG(dlo),
                         MPT_ARG(urows),               MPT_ARG(ucols),
                         MPT_ARG(scale)};
    status = mpt__launch(dev, "loss", "mpt_softmax_xent", rows, LOCAL, 11, args);
out:
    return status;
}

int mpt__op_argmax_correct(const mpt__tensor_t *logits, mpt_buffer_t *labels, size_t labels_off,
                           size_t rows, size_t cols, mpt__tensor_t *correct)
{
    const char *op = "mpt__op_argmax_correct";
    mpt_device_t *dev;
    cl_uint lo, lbo, co, urows, ucols;
    int status;
    MPT_TRY(common(op, logits, labels, labels_off, rows, cols, &dev, &lo, &lbo));
    MPT_TRY(mpt__check_view(correct, rows, dev, op, "correct", &co));
    MPT_TRY(mpt__u32(rows, &urows));
    MPT_TRY(mpt__u32(cols, &ucols));
    mpt__arg_t args[] = {MPT_ARG(logits->buf->mem), MPT_ARG(lo), MPT_ARG(labels->mem),
                         MPT_ARG(lbo),              MPT_ARG(correct->buf->mem),
                         MPT_ARG(co),               MPT_ARG(urows), MPT_ARG(ucols)};
    status = mpt__launch(dev, "loss", "mpt_argmax_correct", rows, LOCAL, 8, args);
out:
    return status;
}
