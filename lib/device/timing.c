/*
 * device/timing.c: how long a device was busy, from OpenCL profiling
 * events (every queue is created with CL_QUEUE_PROFILING_ENABLE).  With
 * timing on, each op hands its event here; reading the busy time waits for
 * the queue, sums END - START of every event and releases them.  Off, the
 * events are released at once and cost nothing.
 */
#include <stdlib.h>

#include "device/device.h"

int mpt_device_set_timing(mpt_device_t *dev, int on)
{
    double ignored;
    int status = MPT_OK;
    if (!on && dev->timing)
        status = mpt_device_busy_seconds(dev, &ignored, NULL); /* releases what is held */
    dev->timing = on != 0;
    return status;
}

void mpt__device_event(mpt_device_t *dev, cl_event ev, int blas)
{
    if (!ev)
        return;
    if (!dev->timing) {
        clReleaseEvent(ev);
        return;
    }
    if (dev->nevents == dev->cap_events) {
        size_t cap = dev->cap_events ? 2 * dev->cap_events : 256;
        cl_event *grown = realloc(dev->events, cap * sizeof *grown);
        unsigned char *tags = grown ? realloc(dev->event_blas, cap) : NULL;
        if (grown)
            dev->events = grown;
        if (!tags) { /* timing is best effort: drop the event, never fail the op */
            clReleaseEvent(ev);
            return;
        }
        dev->event_blas = tags, dev->cap_events = cap;
    }
    dev->event_blas[dev->nevents] = blas != 0;
    dev->events[dev->nevents++] = ev;
}

int mpt_device_busy_seconds(mpt_device_t *dev, double *seconds, double *blas_seconds)
{
    int status = mpt_device_finish(dev);
    double ns = 0, blas_ns = 0;
    for (size_t i = 0; i < dev->nevents; i++) {
        cl_ulong start = 0, end = 0;
        if (status == MPT_OK &&
            clGetEventProfilingInfo(dev->events[i], CL_PROFILING_COMMAND_START, sizeof start,
                                    &start, NULL) == CL_SUCCESS &&
            clGetEventProfilingInfo(dev->events[i], CL_PROFILING_COMMAND_END, sizeof end, &end,
                                    NULL) == CL_SUCCESS &&
            end > start) {
            ns += (double)(end - start);
            if (dev->event_blas[i])
                blas_ns += (double)(end - start);
        }
        clReleaseEvent(dev->events[i]);
    }
    dev->nevents = 0;
    /* Host-provider GEMMs ran between a map and an unmap, outside any
     * event: their measured time counts as busy BLAS time. */
    *seconds = ns * 1e-9 + dev->host_seconds;
    if (blas_seconds)
        *blas_seconds = blas_ns * 1e-9 + dev->host_seconds;
    dev->host_seconds = 0;
    return status;
}
