/*
 * tensor/tensor.h: f32 device tensors (views into device buffers) and the
 * op launchers that run on a device's in-order queue.  Never installed.
 *
 * Conventions for every op below:
 * - A tensor is a view: buffer + offset (in floats) + up to 4 dims,
 *   row-major, contiguous.  Ops never allocate or free the buffers.
 * - Ops enqueue on the tensor's device queue and return at once
 *   (asynchronous); results are ready after mpt_device_finish() or any
 *   blocking read.  All tensors of one op live on the same device.
 * - IEEE semantics: no fast-math; NaN in, NaN out.
 * - Counts are size_t and must fit in cl_uint for custom kernels (checked:
 *   MPT_ERR_RANGE otherwise).
 * - Shapes: N = batch, C = channels, H/W = height/width (NCHW layout).
 */
#ifndef MPT_TENSOR_TENSOR_H
#define MPT_TENSOR_TENSOR_H

#include <stdint.h>

#include "device/device.h"

#define MPT_TENSOR_MAX_DIMS 4

typedef struct {
    mpt_buffer_t *buf; /* not owned */
    size_t off;        /* offset in floats */
    int ndim;
    size_t dims[MPT_TENSOR_MAX_DIMS];
} mpt__tensor_t;

/* A view of `ndim` dims at float offset `off` of `buf`. */
mpt__tensor_t mpt__tensor(mpt_buffer_t *buf, size_t off, int ndim, const size_t *dims);
/* Number of elements (product of dims; 1 for ndim 0). */
size_t mpt__tensor_numel(const mpt__tensor_t *t);
/* The device of a tensor. */
mpt_device_t *mpt__tensor_device(const mpt__tensor_t *t);
/* A tensor with its own new buffer (freed with mpt_buffer_free(t->buf)). */
int mpt__tensor_alloc(mpt_device_t *dev, int ndim, const size_t *dims, mpt__tensor_t *out);
/* Blocking host <-> device copies of a whole tensor. */
int mpt__tensor_write(mpt__tensor_t *t, const float *src);
int mpt__tensor_read(const mpt__tensor_t *t, float *dst);

/* ---- kernel launching (tensor.c) ----------------------------------------- */

typedef struct {
    size_t size;
    const void *ptr;
} mpt__arg_t;

/* A kernel argument by value: MPT_ARG(x) for any lvalue x (cl_mem, cl_uint,
 * float...). */
#define MPT_ARG(x) ((mpt__arg_t){sizeof(x), &(x)})

/* Sets the arguments of kernels/<program>.cl's `kernel` and enqueues it
 * over `global` work-items in one dimension (local = 0 lets the driver
 * choose; otherwise global is rounded up to a multiple of local).  Kernels
 * guard their index against the real count. */
int mpt__launch(mpt_device_t *dev, const char *program, const char *kernel, size_t global,
                size_t local, int nargs, const mpt__arg_t *args);

/* Checks that n elements of elem bytes from element offset off lie inside
 * buf, which is on dev, and that off + n fits the kernels' 32-bit indexing;
 * sets *uoff.  MPT_ERR_INVALID (missing, other device) or MPT_ERR_RANGE,
 * naming the op and the argument.  Every launcher checks its arguments so:
 * the device would not. */
int mpt__check_range(const mpt_buffer_t *buf, size_t off, size_t n, size_t elem,
                     mpt_device_t *dev, const char *op, const char *name, cl_uint *uoff);
/* The same for n floats of a tensor view. */
int mpt__check_view(const mpt__tensor_t *t, size_t n, mpt_device_t *dev, const char *op,
                    const char *name, cl_uint *off);

/* Ends a CLBlast call: its status (CLBlastSuccess = 0) becomes
 * MPT_ERR_BLAS naming `what`; its event goes to the device's timing. */
int mpt__blas_done(mpt_device_t *dev, int blas_status, cl_event ev, const char *what);

/* The float offset as a kernel argument (cl_uint); MPT_ERR_RANGE if too big. */
int mpt__u32(size_t v, cl_uint *out);

/* ---- GEMM and BLAS (blas_ops.c, CLBlast) -------------------------------- */

/* C(m x n) = alpha * op(A) * op(B) + beta * C, row-major; op(A) is m x k
 * (A stored k x m when trans_a), op(B) is k x n (B stored n x k when
 * trans_b).  Leading dimensions are the stored row lengths. */
int mpt__op_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                 const mpt__tensor_t *a, size_t lda, const mpt__tensor_t *b, size_t ldb,
                 float beta, mpt__tensor_t *c, size_t ldc);
/* db[c] = beta * db[c] + sum over rows of dy[r, c]  (bias gradient; GEMV). */
int mpt__op_sum_rows(const mpt__tensor_t *dy, size_t rows, size_t cols, float beta,
                     mpt__tensor_t *db);
/* Euclidean norm of the first n elements of x, read back to the host
 * (blocking). */
int mpt__op_nrm2(const mpt__tensor_t *x, size_t n, float *out);
/* x *= alpha over n elements. */
int mpt__op_scale(mpt__tensor_t *x, size_t n, float alpha);
/* y += alpha * x over n elements. */
int mpt__op_axpy(size_t n, float alpha, const mpt__tensor_t *x, mpt__tensor_t *y);

/* ---- a linear layer with the activation after it (linear.c) ------------ */

/* The activations a linear layer can run in its own passes (the values
 * kernels/elementwise.cl's fused kernels take). */
typedef enum { MPT_ACT_NONE = 0, MPT_ACT_RELU = 1, MPT_ACT_GELU = 2, MPT_ACT_SILU = 3 } mpt__act_t;

/* z = x W^T + b (x batch x in, W out x in, b out floats or NULL), then
 * y = act(z) unless act is NONE (z is kept: the backward reads it; with
 * NONE, y is not touched and may be NULL).  CLBlast provider: one GEMM and
 * one kernel for bias + activation; host provider: one host call on the
 * mapped buffers (GEMM, bias and activation), the queue's only wait. */
int mpt__op_linear_forward(const mpt__tensor_t *x, const mpt__tensor_t *w,
                           const mpt__tensor_t *b, mpt__act_t act, size_t batch, size_t in,
                           size_t out, mpt__tensor_t *z, mpt__tensor_t *y);
/* Its backward.  dy is the gradient of y (of z when act is NONE); with an
 * activation it is overwritten in place by dz = act'(z) dy.  dw = dz^T x;
 * db = the column sums of dz (db NULL: no bias); dx = dz W (dx NULL: not
 * wanted).  Gradients are overwritten, not added.  CLBlast provider: one
 * kernel (activation backward + bias gradient; a GEMV without activation)
 * and the GEMMs; host provider: one host call. */
int mpt__op_linear_backward(const mpt__tensor_t *x, const mpt__tensor_t *w,
                            const mpt__tensor_t *z, mpt__act_t act, size_t batch, size_t in,
                            size_t out, mpt__tensor_t *dy, mpt__tensor_t *dw,
                            mpt__tensor_t *db, mpt__tensor_t *dx);

/* ---- elementwise and activations (elementwise.c, kernels/elementwise.cl) */

/* x[i] = value for i < n. */
int mpt__op_fill(mpt__tensor_t *x, size_t n, float value);
/* y[r, c] += bias[c] for a rows x cols matrix. */
int mpt__op_bias_add(mpt__tensor_t *y, const mpt__tensor_t *bias, size_t rows, size_t cols);
/* y[n, c, p] += bias[c] for N x C x P (P = H*W), the conv2d bias. */
int mpt__op_bias_add_channels(mpt__tensor_t *y, const mpt__tensor_t *bias, size_t n, size_t c,
                              size_t p);
/* db[c] = beta * db[c] + sum over n, p of dy[n, c, p]. */
int mpt__op_bias_grad_channels(const mpt__tensor_t *dy, size_t n, size_t c, size_t p, float beta,
                               mpt__tensor_t *db);
/* y = max(x, 0) (NaN stays NaN); dx = x <= 0 ? 0 : dy, a select as in torch
 * (x is the forward input). */
int mpt__op_relu_forward(const mpt__tensor_t *x, mpt__tensor_t *y, size_t n);
int mpt__op_relu_backward(const mpt__tensor_t *x, const mpt__tensor_t *dy, mpt__tensor_t *dx,
                          size_t n);
/* GELU, tanh approximation (PyTorch approximate="tanh"):
 * y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); dx = dy * y'(x). */
int mpt__op_gelu_forward(const mpt__tensor_t *x, mpt__tensor_t *y, size_t n);
int mpt__op_gelu_backward(const mpt__tensor_t *x, const mpt__tensor_t *dy, mpt__tensor_t *dx,
                          size_t n);

/* Any activation of kernels/elementwise.cl by its kernels' names:
 * kernel(x, xo, y, yo, n) computes y = f(x), and the backward kernel(x, xo,
 * dy, dyo, dx, dxo, n) dx = dy f'(x) (x the forward input), so that an
 * elementwise layer kind needs no launcher of its own (nn/layers.c). */
int mpt__op_activation(const char *kernel, const mpt__tensor_t *x, mpt__tensor_t *y, size_t n);
int mpt__op_activation_backward(const char *kernel, const mpt__tensor_t *x,
                                const mpt__tensor_t *dy, mpt__tensor_t *dx, size_t n);

/* ---- loss (loss.c, kernels/loss.cl) ------------------------------------- */

/* Fused, numerically stable softmax cross-entropy over rows x cols logits
 * with int32 labels (a buffer of `rows` cl_int at int offset labels_off):
 *   loss_rows[r] = logsumexp(logits[r,:]) - logits[r, label[r]]
 *   dlogits[r,c] = scale * (softmax(logits[r,:])[c] - (c == label[r]))
 * (scale = 1/global batch for a mean loss; dlogits may be NULL for
 * evaluation).  A label outside [0, cols) gives loss NaN for its row. */
int mpt__op_softmax_xent(const mpt__tensor_t *logits, mpt_buffer_t *labels, size_t labels_off,
                         size_t rows, size_t cols, float scale, mpt__tensor_t *loss_rows,
                         mpt__tensor_t *dlogits);
/* correct[r] = 1.0f if argmax(logits[r,:]) == label[r] else 0.0f (first
 * maximum wins, as torch.argmax). */
int mpt__op_argmax_correct(const mpt__tensor_t *logits, mpt_buffer_t *labels, size_t labels_off,
                           size_t rows, size_t cols, mpt__tensor_t *correct);

/* ---- optimizers (optim.c, kernels/optim.cl) ----------------------------- */

/* SGD with momentum and decoupled-as-in-PyTorch weight decay, over n
 * elements, exactly as torch.optim.SGD(momentum, weight_decay, dampening=0,
 * nesterov=False):  g' = g + wd * p;  buf = first ? g' : momentum * buf + g';
 * p -= lr * (momentum > 0 ? buf : g').  momentum_buf may be NULL when
 * momentum is 0. */
int mpt__op_sgd_update(mpt__tensor_t *p, const mpt__tensor_t *g, mpt__tensor_t *momentum_buf,
                       size_t n, float lr, float momentum, float weight_decay, int first_step);
/* AdamW exactly as torch.optim.AdamW (amsgrad=False), step t >= 1:
 *   p *= 1 - lr * wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). */
int mpt__op_adamw_update(mpt__tensor_t *p, const mpt__tensor_t *g, mpt__tensor_t *m,
                         mpt__tensor_t *v, size_t n, float lr, float beta1, float beta2,
                         float eps, float weight_decay, int step);

/* ---- normalisation, pooling, dropout (norm.c, pool.c, dropout.c) ------- */

/* Layer norm over the last dim (cols) of rows x cols, as torch LayerNorm:
 * y = (x - mean) * rstd * gamma + beta, rstd = 1/sqrt(var + eps) with the
 * biased variance.  mean and rstd (rows floats each) are saved for
 * backward.  Backward writes dx and accumulates dgamma, dbeta
 * (dgamma = beta_acc * dgamma + sum ..., same for dbeta). */
int mpt__op_layernorm_forward(const mpt__tensor_t *x, const mpt__tensor_t *gamma,
                              const mpt__tensor_t *beta, size_t rows, size_t cols, float eps,
                              mpt__tensor_t *y, mpt__tensor_t *mean, mpt__tensor_t *rstd);
int mpt__op_layernorm_backward(const mpt__tensor_t *dy, const mpt__tensor_t *x,
                               const mpt__tensor_t *gamma, const mpt__tensor_t *mean,
                               const mpt__tensor_t *rstd, size_t rows, size_t cols,
                               float beta_acc, mpt__tensor_t *dx, mpt__tensor_t *dgamma,
                               mpt__tensor_t *dbeta);
/* Max pooling over N x C x H x W with a k x k window, stride s, padding pad
 * (padding never wins: as torch MaxPool2d).  Output N x C x OH x OW,
 * OH = (H + 2 pad - k) / s + 1.  argmax (as floats holding the input index
 * within its H x W plane, exact below 2^24) is saved for backward; backward
 * zeroes dx then adds dy to the argmax positions. */
int mpt__op_maxpool_forward(const mpt__tensor_t *x, size_t n, size_t c, size_t h, size_t w,
                            size_t k, size_t s, size_t pad, mpt__tensor_t *y,
                            mpt__tensor_t *argmax);
int mpt__op_maxpool_backward(const mpt__tensor_t *dy, const mpt__tensor_t *argmax, size_t n,
                             size_t c, size_t h, size_t w, size_t k, size_t s, size_t pad,
                             mpt__tensor_t *dx);
/* Inverted dropout: keep with probability 1 - p, scale kept values by
 * 1/(1-p).  The mask of an element is drawn from Philox4x32-10 keyed by
 * (seed, stream) at a counter (mpt__rng_u32 in core/rng.h), so backward
 * regenerates it instead of storing it, and whoever holds an element
 * draws its number.
 *
 * The counter is the element's place in the whole step's activation:
 * the tensor holds n / cols samples of cols elements each, its sample r
 * being sample first_sample + r of the whole batch and its elements
 * [first_col, first_col + cols) of a whole sample of row elements, so
 * element (r, j) draws counter (first_sample + r) * row + first_col + j.
 * A replica's share, a micro-batch or a tensor-parallel slice therefore
 * draws exactly the numbers the whole batch draws on one device.  at NULL:
 * one run from counter 0 (first_sample 0, cols = row = n). */
typedef struct {
    uint64_t first_sample; /* the tensor's first sample in the step's batch */
    size_t cols;           /* elements per sample held here (divides n) */
    size_t row;            /* elements of one whole sample (>= first_col + cols) */
    size_t first_col;      /* where the held elements start in a whole sample */
} mpt__dropout_at_t;
int mpt__op_dropout_forward(const mpt__tensor_t *x, mpt__tensor_t *y, size_t n,
                            const mpt__dropout_at_t *at, float p, uint64_t seed,
                            uint64_t stream);
int mpt__op_dropout_backward(const mpt__tensor_t *dy, mpt__tensor_t *dx, size_t n,
                             const mpt__dropout_at_t *at, float p, uint64_t seed,
                             uint64_t stream);

/* ---- transformer (attention.c, kernels/transformer.cl) ------------------ */

/* y[b, t, :] = wte[x[b, t], :] + wpe[t, :] for batch x T token ids held as
 * floats in x; an id outside [0, V) or not an integer gives a NaN row. */
int mpt__op_embedding_forward(const mpt__tensor_t *x, const mpt__tensor_t *wte,
                              const mpt__tensor_t *wpe, size_t batch, size_t T, size_t C,
                              size_t V, mpt__tensor_t *y);
/* dwte = beta * dwte + the sum of dy's rows per token; dwpe = the sum of
 * dy over the batch.  Deterministic: fixed order, no atomics. */
int mpt__op_embedding_backward(const mpt__tensor_t *x, const mpt__tensor_t *dy, size_t batch,
                               size_t T, size_t C, size_t V, float beta, mpt__tensor_t *dwte,
                               mpt__tensor_t *dwpe);
/* In place over rows x T scores, row r the query position r % T: the
 * softmax of scale * s over positions <= r % T, 0 beyond (causal). */
int mpt__op_causal_softmax(mpt__tensor_t *s, size_t rows, size_t T, float scale);
/* In place: d (dL/dp) becomes dL/ds for p = mpt__op_causal_softmax(s). */
int mpt__op_causal_softmax_backward(const mpt__tensor_t *p, mpt__tensor_t *d, size_t rows,
                                    size_t T, float scale);
/* `count` GEMMs as mpt__op_gemm, the i-th on the matrices at float
 * offsets a_off[i], b_off[i], c_off[i] from the tensors' own (CLBlast's
 * SgemmBatched: one launch for every (sample, head) of attention). */
int mpt__op_gemm_batched(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                         const mpt__tensor_t *a, const size_t *a_off, size_t lda,
                         const mpt__tensor_t *b, const size_t *b_off, size_t ldb, float beta,
                         mpt__tensor_t *c, const size_t *c_off, size_t ldc, size_t count);

/* ---- convolution (conv.c, kernels/conv.cl + GEMM) ---------------------- */

/* conv2d for N x C x H x W input, weight K x C x kh x kw (PyTorch layout),
 * one stride and one padding on both axes, output N x K x OH x OW. */
typedef struct {
    size_t n, c, h, w;    /* input */
    size_t k, kh, kw;     /* output channels, kernel size */
    size_t stride, pad;   /* same on both axes */
    size_t oh, ow;        /* output size, set by mpt__conv_shape */
    size_t chunk;         /* images per GEMM; 0 lets mpt__conv_chunk choose */
} mpt__conv_t;

/* Fills oh, ow; MPT_ERR_INVALID when the kernel does not fit the padded input. */
int mpt__conv_shape(mpt__conv_t *cv);
/* Images per GEMM: cv->chunk, else as many as a 4 MiB workspace holds
 * (conv.c says why); at least 1, at most n; 0 for a bad shape or n = 0. */
size_t mpt__conv_chunk(const mpt__conv_t *cv);
/* Workspace floats forward and backward need (one chunk's columns, and
 * its K x chunk*OH*OW output block when the chunk holds several images);
 * 0 for a bad shape or n = 0. */
size_t mpt__conv_workspace_floats(const mpt__conv_t *cv);
/* y = conv(x, weight) + bias (bias may be NULL).  `ws` is a workspace of
 * mpt__conv_workspace_floats() floats. */
int mpt__op_conv2d_forward(const mpt__conv_t *cv, const mpt__tensor_t *x,
                           const mpt__tensor_t *weight, const mpt__tensor_t *bias,
                           mpt__tensor_t *ws, mpt__tensor_t *y);
/* dweight = beta_acc * dweight + sum over images of dy_i * col(x_i)^T;
 * dx = col2im(weight^T * dy_i), overwritten (dx may be NULL for the first
 * layer).  The bias gradient is mpt__op_bias_grad_channels. */
int mpt__op_conv2d_backward(const mpt__conv_t *cv, const mpt__tensor_t *x,
                            const mpt__tensor_t *weight, const mpt__tensor_t *dy,
                            float beta_acc, mpt__tensor_t *ws, mpt__tensor_t *dweight,
                            mpt__tensor_t *dx);

#endif
