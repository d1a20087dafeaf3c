/*
 * device/health.c: injected device faults for the tests of elastic
 * training (MPT_FAIL_DEVICE, core/env.c): a device that disappears (every
 * operation from the N+1-th on fails), hangs (the N+1-th operation never
 * finishes by itself) or slows down (every operation from the N+1-th on
 * waits SLOW_WAIT_NS first: a throttled or shared device, which the
 * planner's calibration and rebalancing must see).  Every device operation calls mpt__device_health
 * first, so the fault shows on whichever path the device is on when it
 * strikes: a kernel launch, a GEMM (CLBlast or host BLAS), a buffer read,
 * write or copy, a finish.  MPT_FAIL_LAUNCH (tensor/tensor.c) stays the
 * plain failure of kernel launches.
 *
 * Left out: a hang of a real driver cannot be interrupted from here; the
 * injected one waits on a flag that the engine's watchdog raises.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "device/device.h"

/* The longest an injected hang waits for the watchdog: a test whose
 * watchdog never comes still ends. */
#define HANG_LIMIT_S 600.0
/* What each operation of a slow device waits: long against a small
 * model's kernels on a loaded CPU, so the slowness is unmistakable. */
#define SLOW_WAIT_NS (5 * 1000 * 1000)

/* The item of spec for device `index` ("DEVICE:N:KIND", items separated
 * by commas): 1 and its N and KIND, or 0. */
static int item_for(const char *spec, int index, unsigned long *after, char *kind)
{
    for (const char *at = spec; at && *at; at = strchr(at, ',') ? strchr(at, ',') + 1 : NULL) {
        int device = -1;
        if (sscanf(at, "%d:%lu:%15[a-z]", &device, after, kind) == 3 && device == index)
            return 1;
    }
    return 0;
}

int mpt__device_health(mpt_device_t *dev, const char *what)
{
    const char *spec = mpt__env(MPT_ENV_FAIL_DEVICE);
    unsigned long after = 0;
    char kind[16] = "";
    dev->ops++;
    if (dev->lost) {
        dev->faults++;
        return mpt__fail(MPT_ERR_DEVICE_LOST, "%s on device %d (%s): the device is lost "
                         "(injected: MPT_FAIL_DEVICE=%s)", what, dev->info.index,
                         dev->info.name, spec);
    }
    if (!spec[0] || !item_for(spec, dev->info.index, &after, kind) || dev->ops <= after)
        return MPT_OK;
    if (strcmp(kind, "hang") == 0) {
        double t0 = mpt__now();
        struct timespec nap = {0, 5 * 1000 * 1000};
        while (!dev->given_up && mpt__now() - t0 < HANG_LIMIT_S)
            nanosleep(&nap, NULL);
        dev->lost = 1, dev->faults++;
        return mpt__fail(MPT_ERR_DEVICE_LOST, "%s on device %d (%s): hung for %.1f s and given "
                         "up (injected: MPT_FAIL_DEVICE=%s, operation %lu)", what,
                         dev->info.index, dev->info.name, mpt__now() - t0, spec, dev->ops);
    }
    if (strcmp(kind, "slow") == 0) {
        struct timespec wait = {0, SLOW_WAIT_NS};
        nanosleep(&wait, NULL);
        return MPT_OK;
    }
    if (strcmp(kind, "lost") != 0)
        return mpt__fail(MPT_ERR_INVALID,
                         "MPT_FAIL_DEVICE=%s: the kind must be lost, hang or slow", spec);
    dev->lost = 1, dev->faults++;
    return mpt__fail(MPT_ERR_DEVICE_LOST, "%s on device %d (%s): the device is lost "
                     "(injected: MPT_FAIL_DEVICE=%s, operation %lu)", what, dev->info.index,
                     dev->info.name, spec, dev->ops);
}

void mpt__device_give_up(mpt_device_t *dev)
{
    if (dev)
        dev->given_up = 1;
}
