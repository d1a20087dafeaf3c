/*
 * device/buffer.c: device buffers and blocking transfers, and the memory
 * accounting of each device (bytes in use, their peak, the cap that
 * --device-memory sets).  Asynchronous, event-chained transfers belong to
 * the engine; this is the plain layer.
 */
#include <stdint.h>
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

/* Reserves bytes against the device's cap: the sum in use grows by bytes
 * unless that passes the cap; the peak follows.  Atomics, not the device
 * lock: the lock guards the program cache and may be held across builds. */
static int reserve(mpt_device_t *dev, size_t bytes, const char *what)
{
    size_t used = __atomic_load_n(&dev->mem_used, __ATOMIC_RELAXED), cap;
    do {
        cap = __atomic_load_n(&dev->mem_cap, __ATOMIC_RELAXED);
        if (cap && (used > cap || bytes > cap - used))
            return mpt__fail(MPT_ERR_DEVICE_MEMORY,
                             "device %d (%s): %s need %zu bytes, %zu are in use of the %zu "
                             "allowed (--device-memory): %zu bytes short",
                             dev->info.index, dev->info.name, what, bytes, used, cap,
                             used + bytes - cap);
    } while (!__atomic_compare_exchange_n(&dev->mem_used, &used, used + bytes, 0,
                                          __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    size_t now = used + bytes, peak = __atomic_load_n(&dev->mem_peak, __ATOMIC_RELAXED);
    while (now > peak && !__atomic_compare_exchange_n(&dev->mem_peak, &peak, now, 0,
                                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    return MPT_OK;
}

int mpt__buffer_create(mpt_device_t *dev, size_t bytes, const char *what, mpt_buffer_t **out)
{
    cl_int err;
    int status;
    if (!dev || !out || bytes == 0)
        return mpt__fail(MPT_ERR_INVALID, "mpt_buffer_create: need a device and bytes > 0");
    *out = NULL;
    if (!what)
        what = "a buffer";
    if (bytes > dev->info.max_alloc_bytes)
        return mpt__fail(MPT_ERR_DEVICE_MEMORY,
                         "%s: %zu bytes exceed the largest allocation of device %d (%s): "
                         "%llu bytes",
                         what, bytes, dev->info.index, dev->info.name,
                         (unsigned long long)dev->info.max_alloc_bytes);
    if ((status = reserve(dev, bytes, what)) < 0)
        return status;
    mpt_buffer_t *b = calloc(1, sizeof *b);
    if (!b) {
        __atomic_sub_fetch(&dev->mem_used, bytes, __ATOMIC_RELAXED);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    b->mem = clCreateBuffer(dev->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!b->mem) {
        free(b);
        __atomic_sub_fetch(&dev->mem_used, bytes, __ATOMIC_RELAXED);
        return mpt__fail_cl(err, "allocating %zu bytes for %s on device %d (%s)", bytes, what,
                            dev->info.index, dev->info.name);
    }
    b->dev = dev;
    b->size = bytes;
    *out = b;
    return MPT_OK;
}

int mpt_buffer_create(mpt_device_t *dev, size_t bytes, mpt_buffer_t **out)
{
    return mpt__buffer_create(dev, bytes, NULL, out);
}

void mpt_buffer_free(mpt_buffer_t *buf)
{
    if (!buf)
        return;
    clReleaseMemObject(buf->mem);
    __atomic_sub_fetch(&buf->dev->mem_used, buf->size, __ATOMIC_RELAXED);
    free(buf);
}

int mpt_device_set_memory_limit(mpt_device_t *dev, uint64_t bytes)
{
    if (!dev)
        return mpt__fail(MPT_ERR_INVALID, "mpt_device_set_memory_limit: no device");
    if (bytes > SIZE_MAX)
        bytes = SIZE_MAX;
    __atomic_store_n(&dev->mem_cap, (size_t)bytes, __ATOMIC_RELAXED);
    return MPT_OK;
}

uint64_t mpt_device_memory_limit(const mpt_device_t *dev)
{
    return dev ? __atomic_load_n(&dev->mem_cap, __ATOMIC_RELAXED) : 0;
}

void mpt_device_memory(const mpt_device_t *dev, uint64_t *used, uint64_t *peak)
{
    if (used)
        *used = dev ? __atomic_load_n(&dev->mem_used, __ATOMIC_RELAXED) : 0;
    if (peak)
        *peak = dev ? __atomic_load_n(&dev->mem_peak, __ATOMIC_RELAXED) : 0;
}

void mpt_device_reset_peak(mpt_device_t *dev)
{
    if (dev)
        __atomic_store_n(&dev->mem_peak, __atomic_load_n(&dev->mem_used, __ATOMIC_RELAXED),
                         __ATOMIC_RELAXED);
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
