/*
 * device/timing.c: how long a device was busy, from OpenCL profiling
 * events (every queue is created with CL_QUEUE_PROFILING_ENABLE).  With
 * timing on, each op hands its event here; reading the busy time waits for
 * the queue, sums END - START of every event and releases them.  Off, the
 * events are released at once and cost nothing.
 *
 * A CLBlast routine may run several kernels and return only the last
 * one's event; with timing on it is bracketed by markers
 * (clEnqueueMarkerWithWaitList) instead, and timed from the end of the
 * marker before it (when the in-order queue reached the routine) to the
 * end of the marker after it.  Left out: the gaps inside that span where
 * the queue waited for the host to enqueue the routine's next kernel count
 * as busy (CLBlast enqueues them back to back, so they are short).
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

/* Keeps (start, ev) for the busy time: start NULL times ev alone. */
static void keep(mpt_device_t *dev, cl_event start, cl_event ev, int blas)
{
    if (!dev->timing) {
        if (start)
            clReleaseEvent(start);
        clReleaseEvent(ev);
        return;
    }
    if (dev->nevents == dev->cap_events) {
        size_t cap = dev->cap_events ? 2 * dev->cap_events : 256;
        cl_event *grown = realloc(dev->events, cap * sizeof *grown);
        if (grown)
            dev->events = grown;
        cl_event *starts = grown ? realloc(dev->event_start, cap * sizeof *starts) : NULL;
        if (starts)
            dev->event_start = starts;
        unsigned char *tags = starts ? realloc(dev->event_blas, cap) : NULL;
        if (!tags) { /* timing is best effort: drop the event, never fail the op */
            if (start)
                clReleaseEvent(start);
            clReleaseEvent(ev);
            return;
        }
        dev->event_blas = tags, dev->cap_events = cap;
    }
    dev->event_blas[dev->nevents] = blas != 0;
    dev->event_start[dev->nevents] = start;
    dev->events[dev->nevents++] = ev;
}

void mpt__device_event(mpt_device_t *dev, cl_event ev, int blas)
{
    if (ev)
        keep(dev, NULL, ev, blas);
}

void mpt__device_blas_begin(mpt_device_t *dev, mpt__blas_routine_t routine)
{
    mpt__device_blas_enter(dev, routine);
    if (dev->blas_mark)
        clReleaseEvent(dev->blas_mark); /* a begin without its done (an error path) */
    dev->blas_mark = NULL;
    if (dev->timing && clEnqueueMarkerWithWaitList(dev->queue, 0, NULL, &dev->blas_mark) !=
                           CL_SUCCESS)
        dev->blas_mark = NULL; /* best effort: the routine's own event then */
}

void mpt__device_blas_event(mpt_device_t *dev, cl_event ev)
{
    cl_event start = dev->blas_mark, end = NULL;
    dev->blas_mark = NULL;
    if (!ev) {
        if (start)
            clReleaseEvent(start);
        return;
    }
    if (start && dev->timing &&
        clEnqueueMarkerWithWaitList(dev->queue, 0, NULL, &end) == CL_SUCCESS) {
        clReleaseEvent(ev);
        keep(dev, start, end, 1);
        return;
    }
    if (start)
        clReleaseEvent(start);
    keep(dev, NULL, ev, 1);
}

int mpt_device_busy_seconds(mpt_device_t *dev, double *seconds, double *blas_seconds)
{
    int status = mpt_device_finish(dev);
    double ns = 0, blas_ns = 0;
    for (size_t i = 0; i < dev->nevents; i++) {
        cl_ulong start = 0, end = 0;
        cl_event from = dev->event_start[i];
        if (status == MPT_OK &&
            clGetEventProfilingInfo(from ? from : dev->events[i],
                                    from ? CL_PROFILING_COMMAND_END : CL_PROFILING_COMMAND_START,
                                    sizeof start, &start, NULL) == CL_SUCCESS &&
            clGetEventProfilingInfo(dev->events[i], CL_PROFILING_COMMAND_END, sizeof end, &end,
                                    NULL) == CL_SUCCESS &&
            end > start) {
            ns += (double)(end - start);
            if (dev->event_blas[i])
                blas_ns += (double)(end - start);
        }
        clReleaseEvent(dev->events[i]);
        if (from)
            clReleaseEvent(from);
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
