/*
 * device/blas.c: CLBlast start-up on a device.
 *
 * CLBlast 1.5.3 fills process-wide caches (its tuning database entries and
 * compiled programs) on the first call of each routine on each device, and
 * filling them from two threads at once corrupts them (CLBlast issue 486,
 * fixed in 1.6.1; seen here under AddressSanitizer as a use-after-free in
 * clblast::Database, and as a segfault in tests/check_profile on devices
 * that had not been warmed).  So each routine's first call on a device
 * runs alone, under a process-wide lock (mpt__device_blas_enter), and every
 * device runs its GEMM paths once when opened, so that the costly first
 * GEMMs (program builds) happen before worker threads start.
 */
#include <pthread.h>

#include <clblast_c.h>

#include "device/device.h"
#include "device/tuning.h"

static pthread_mutex_t first_call = PTHREAD_MUTEX_INITIALIZER;

void mpt__device_blas_enter(mpt_device_t *dev, mpt__blas_routine_t routine)
{
    if (dev->blas_first || (dev->blas_warm & (1u << routine)))
        return;
    pthread_mutex_lock(&first_call);
    dev->blas_first = 1 + (int)routine;
}

void mpt__device_blas_leave(mpt_device_t *dev, int ok)
{
    if (!dev->blas_first)
        return;
    if (ok)
        dev->blas_warm |= 1u << (dev->blas_first - 1);
    dev->blas_first = 0;
    pthread_mutex_unlock(&first_call);
}

int mpt__device_blas_warmup(mpt_device_t *dev)
{
    /* 8^3 takes CLBlast's direct kernel, 512^3 its indirect one: both
     * programs get compiled and cached here. */
    static const size_t sizes[] = {8, 512};
    int status = MPT_OK;
    if (dev->gemm_host)
        return MPT_OK; /* its GEMMs never reach CLBlast: nothing to fill */
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0] && status == MPT_OK; s++) {
        size_t n = sizes[s];
        mpt_buffer_t *buf = NULL;
        cl_event ev = NULL;
        MPT_TRY(mpt_buffer_create(dev, 3 * n * n * sizeof(float), &buf));
        /* A, B and C are three regions of one zeroed buffer. */
        cl_float zero = 0;
        cl_int err = clEnqueueFillBuffer(dev->queue, buf->mem, &zero, sizeof zero, 0,
                                         3 * n * n * sizeof(float), 0, NULL, NULL);
        /* Under the first-call lock, each size: the direct and the
         * indirect kernels' first calls alike. */
        dev->blas_warm &= ~(1u << MPT__BLAS_SGEMM);
        mpt__device_blas_enter(dev, MPT__BLAS_SGEMM);
        CLBlastStatusCode bs = CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo,
                                            CLBlastTransposeNo, n, n, n, 1.0f, buf->mem, 0, n,
                                            buf->mem, n * n, n, 0.0f, buf->mem, 2 * n * n, n,
                                            &dev->queue, &ev);
        mpt__device_blas_leave(dev, bs == CLBlastSuccess);
        if (err != CL_SUCCESS)
            status = mpt__fail_cl(err, "clearing a warm-up buffer on device %d", dev->info.index);
        else if (bs != CLBlastSuccess)
            status = mpt__fail(MPT_ERR_BLAS, "CLBlast warm-up GEMM %zux%zux%zu on device %d (%s): "
                               "status %d", n, n, n, dev->info.index, dev->info.name, (int)bs);
        else if ((err = clWaitForEvents(1, &ev)) != CL_SUCCESS)
            status = mpt__fail_cl(err, "waiting for the warm-up GEMM on device %d", dev->info.index);
        if (ev)
            clReleaseEvent(ev);
        mpt_buffer_free(buf);
    }
out:
    return status;
}

/* CLBlast keeps the parameters in a process-wide cache keyed by device, so
 * applying them once, here at open and from the opening thread, covers
 * every later GEMM of the process (and comes before the warm-up's). */
int mpt__device_blas_tuning(mpt_device_t *dev)
{
    return mpt__tuning_apply_stored(dev);
}
