/*
 * tensor/tensor.c: tensor views and the one kernel launcher every op uses.
 */
#include <stdio.h>
#include <string.h>

#include "device/gemm.h"
#include "tensor/tensor.h"

mpt__tensor_t mpt__tensor(mpt_buffer_t *buf, size_t off, int ndim, const size_t *dims)
{
    mpt__tensor_t t = {buf, off, ndim, {0}};
    for (int i = 0; i < ndim && i < MPT_TENSOR_MAX_DIMS; i++)
        t.dims[i] = dims[i];
    return t;
}

size_t mpt__tensor_numel(const mpt__tensor_t *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->dims[i];
    return n;
}

mpt_device_t *mpt__tensor_device(const mpt__tensor_t *t)
{
    return t->buf->dev;
}

int mpt__tensor_alloc(mpt_device_t *dev, int ndim, const size_t *dims, mpt__tensor_t *out)
{
    mpt_buffer_t *buf = NULL;
    *out = mpt__tensor(NULL, 0, ndim, dims);
    size_t n = mpt__tensor_numel(out);
    int status = mpt_buffer_create(dev, (n ? n : 1) * sizeof(float), &buf);
    out->buf = buf;
    return status;
}

int mpt__tensor_write(mpt__tensor_t *t, const float *src)
{
    return mpt_buffer_write(t->buf, t->off * sizeof(float), src,
                            mpt__tensor_numel(t) * sizeof(float));
}

int mpt__tensor_read(const mpt__tensor_t *t, float *dst)
{
    return mpt_buffer_read(t->buf, t->off * sizeof(float), dst,
                           mpt__tensor_numel(t) * sizeof(float));
}

int mpt__u32(size_t v, cl_uint *out)
{
    if (v > 0xffffffffu)
        return mpt__fail(MPT_ERR_RANGE, "%zu does not fit a 32-bit kernel argument", v);
    *out = (cl_uint)v;
    return MPT_OK;
}

int mpt__check_range(const mpt_buffer_t *buf, size_t off, size_t n, size_t elem,
                     mpt_device_t *dev, const char *op, const char *name, cl_uint *uoff)
{
    if (!buf)
        return mpt__fail(MPT_ERR_INVALID, "%s: %s is missing", op, name);
    if (buf->dev != dev)
        return mpt__fail(MPT_ERR_INVALID, "%s: %s is on device %d, expected device %d", op, name,
                         buf->dev->info.index, dev->info.index);
    size_t count = buf->size / elem;
    if (off > count || n > count - off)
        return mpt__fail(MPT_ERR_RANGE, "%s: %s needs elements [%zu, %zu) of a buffer of %zu", op,
                         name, off, off + n, count);
    if (off + n > 0xffffffffu)
        return mpt__fail(MPT_ERR_RANGE, "%s: %s ends at element %zu, beyond 32-bit indexing", op,
                         name, off + n);
    *uoff = (cl_uint)off;
    return MPT_OK;
}

int mpt__check_view(const mpt__tensor_t *t, size_t n, mpt_device_t *dev, const char *op,
                    const char *name, cl_uint *off)
{
    if (!t)
        return mpt__fail(MPT_ERR_INVALID, "%s: tensor %s is missing", op, name);
    return mpt__check_range(t->buf, t->off, n, sizeof(float), dev, op, name, off);
}

int mpt__blas_done(mpt_device_t *dev, int blas_status, cl_event ev, const char *what)
{
    return mpt__device_blas_done(dev, blas_status, ev, what);
}

/* MPT_FAIL_LAUNCH=DEVICE:N: launches on device index DEVICE fail after N
 * of them, so that tests can watch a device error travel through the
 * engine.  Read at every launch (the test sets it mid-run); a getenv is
 * small against a kernel launch. */
static int injected_failure(mpt_device_t *dev, const char *kernel)
{
    const char *spec = mpt__env(MPT_ENV_FAIL_LAUNCH);
    int index = -1;
    unsigned long after = 0;
    dev->launches++;
    if (!spec[0] || sscanf(spec, "%d:%lu", &index, &after) != 2 || index != dev->info.index ||
        dev->launches <= after)
        return MPT_OK;
    dev->faults++; /* device/health.c: elastic training tells who failed */
    return mpt__fail(MPT_ERR_OPENCL, "launching %s on device %d: injected failure "
                     "(MPT_FAIL_LAUNCH=%s, launch %lu)", kernel, dev->info.index, spec,
                     dev->launches);
}

int mpt__launch(mpt_device_t *dev, const char *program, const char *kernel, size_t global,
                size_t local, int nargs, const mpt__arg_t *args)
{
    cl_kernel k;
    cl_int err;
    int status = mpt__device_kernel(dev, program, kernel, &k);
    if (status < 0 || (status = mpt__device_health(dev, kernel)) < 0)
        return status;
    for (int i = 0; i < nargs; i++) {
        err = clSetKernelArg(k, (cl_uint)i, args[i].size, args[i].ptr);
        if (err != CL_SUCCESS)
            return mpt__fail_cl(err, "argument %d of kernel %s (kernels/%s.cl)", i, kernel,
                                program);
    }
    if (global == 0)
        return MPT_OK; /* nothing to do: an empty tensor */
    if ((status = injected_failure(dev, kernel)) < 0)
        return status;
    if (local)
        global = (global + local - 1) / local * local;
    cl_event ev = NULL;
    err = clEnqueueNDRangeKernel(dev->queue, k, 1, NULL, &global, local ? &local : NULL, 0, NULL,
                                 dev->timing ? &ev : NULL);
    mpt__device_event(dev, ev, 0);
    if (err != CL_SUCCESS)
        return mpt__fail_cl(err, "launching %s (kernels/%s.cl) over %zu items on device %d",
                            kernel, program, global, dev->info.index);
    return MPT_OK;
}
