/*
 * device/buffer.c: device buffers and blocking transfers.  Asynchronous,
 * event-chained transfers belong to the engine; this is the plain layer.
 */
#include <stdlib.h>
#include <string.h>

#include "device/device.h"

static int check_range(const mpt_buffer_t *buf, size_t offset, size_t bytes, const char *what)
{
    if (offset > buf->size || bytes > buf->size - offset)
        return mpt__fail(MPT_ERR_RANGE, "%s: bytes [%zu, %zu) outside a buffer of %zu bytes", what,
                         offset, offset + bytes, buf->size);
    return MPT_OK;
}

int mpt_buffer_create(mpt_device_t *dev, size_t bytes, mpt_buffer_t **out)
{
    cl_int err;
    if (!dev || !out || bytes == 0)
        return mpt__fail(MPT_ERR_INVALID, "mpt_buffer_create: need a device and bytes > 0");
    *out = NULL;
    if (bytes > dev->info.max_alloc_bytes)
        return mpt__fail(MPT_ERR_DEVICE_MEMORY,
                         "buffer of %zu bytes exceeds the largest allocation of device %d (%s): "
                         "%llu bytes",
                         bytes, dev->info.index, dev->info.name,
                         (unsigned long long)dev->info.max_alloc_bytes);
    mpt_buffer_t *b = calloc(1, sizeof *b);
    if (!b)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    b->mem = clCreateBuffer(dev->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!b->mem) {
        free(b);
        return mpt__fail_cl(err, "allocating %zu bytes on device %d (%s)", bytes, dev->info.index,
                            dev->info.name);
    }
    b->dev = dev;
    b->size = bytes;
    *out = b;
    return MPT_OK;
}

void mpt_buffer_free(mpt_buffer_t *buf)
{
    if (!buf)
        return;
    clReleaseMemObject(buf->mem);
    free(buf);
}

size_t mpt_buffer_size(const mpt_buffer_t *buf)
{
    return buf->size;
}

int mpt_buffer_write(mpt_buffer_t *buf, size_t offset, const void *src, size_t bytes)
{
    int status = check_range(buf, offset, bytes, "mpt_buffer_write");
    if (status < 0 || bytes == 0)
        return status;
    if ((status = mpt__device_health(buf->dev, "writing a buffer")) < 0)
        return status;
    cl_int err =
        clEnqueueWriteBuffer(buf->dev->queue, buf->mem, CL_TRUE, offset, bytes, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? MPT_OK
                             : mpt__fail_cl(err, "writing %zu bytes to device %d", bytes,
                                            buf->dev->info.index);
}

int mpt_buffer_read(const mpt_buffer_t *buf, size_t offset, void *dst, size_t bytes)
{
    int status = check_range(buf, offset, bytes, "mpt_buffer_read");
    if (status < 0 || bytes == 0)
        return status;
    if ((status = mpt__device_health(buf->dev, "reading a buffer")) < 0)
        return status;
    cl_int err =
        clEnqueueReadBuffer(buf->dev->queue, buf->mem, CL_TRUE, offset, bytes, dst, 0, NULL, NULL);
    return err == CL_SUCCESS ? MPT_OK
                             : mpt__fail_cl(err, "reading %zu bytes from device %d", bytes,
                                            buf->dev->info.index);
}

int mpt_buffer_copy(mpt_buffer_t *dst, size_t dst_offset, const mpt_buffer_t *src,
                    size_t src_offset, size_t bytes)
{
    int status;
    if ((status = check_range(dst, dst_offset, bytes, "mpt_buffer_copy (destination)")) < 0 ||
        (status = check_range(src, src_offset, bytes, "mpt_buffer_copy (source)")) < 0 ||
        bytes == 0)
        return status;
    if ((status = mpt__device_health(src->dev, "copying a buffer")) < 0 ||
        (dst->dev != src->dev && (status = mpt__device_health(dst->dev, "copying a buffer")) < 0))
        return status;
    if (dst->dev->context == src->dev->context) {
        cl_int err = clEnqueueCopyBuffer(dst->dev->queue, src->mem, dst->mem, src_offset,
                                         dst_offset, bytes, 0, NULL, NULL);
        if (err == CL_SUCCESS)
            err = clFinish(dst->dev->queue);
        return err == CL_SUCCESS ? MPT_OK
                                 : mpt__fail_cl(err, "copying %zu bytes on device %d", bytes,
                                                dst->dev->info.index);
    }
    /* Different contexts: through host memory. */
    void *host = malloc(bytes);
    if (!host)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory staging a %zu-byte copy", bytes);
    status = mpt_buffer_read(src, src_offset, host, bytes);
    if (status == MPT_OK)
        status = mpt_buffer_write(dst, dst_offset, host, bytes);
    free(host);
    return status;
}

int mpt_buffer_map(mpt_buffer_t *buf, size_t offset, size_t bytes, int flags, void **ptr)
{
    cl_map_flags f = 0;
    cl_int err;
    int status = check_range(buf, offset, bytes, "mpt_buffer_map");
    if (status < 0)
        return status;
    if (flags & MPT_MAP_READ)
        f |= CL_MAP_READ;
    if (flags & MPT_MAP_WRITE)
        f |= CL_MAP_WRITE;
    if (!f)
        return mpt__fail(MPT_ERR_INVALID, "mpt_buffer_map: flags must include READ or WRITE");
    *ptr = clEnqueueMapBuffer(buf->dev->queue, buf->mem, CL_TRUE, f, offset, bytes, 0, NULL,
                              NULL, &err);
    return *ptr ? MPT_OK
                : mpt__fail_cl(err, "mapping %zu bytes of device %d", bytes, buf->dev->info.index);
}

int mpt_buffer_unmap(mpt_buffer_t *buf, void *ptr)
{
    cl_int err = clEnqueueUnmapMemObject(buf->dev->queue, buf->mem, ptr, 0, NULL, NULL);
    if (err == CL_SUCCESS)
        err = clFinish(buf->dev->queue);
    return err == CL_SUCCESS ? MPT_OK
                             : mpt__fail_cl(err, "unmapping a buffer of device %d",
                                            buf->dev->info.index);
}
