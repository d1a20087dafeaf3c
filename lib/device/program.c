/*
 * device/program.c: kernel sources (embedded or from MPT_KERNEL_DIR), the
 * one function that makes build options, program builds with their logs,
 * and the per-device cache of built programs and kernels.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device.h"

typedef struct mpt__kernel_entry {
    char *name;
    cl_kernel kernel;
    struct mpt__kernel_entry *next;
} mpt__kernel_entry_t;

struct mpt__program {
    char *name;
    cl_program program;
    mpt__kernel_entry_t *kernels;
    struct mpt__program *next;
};

static int read_file(const char *path, char **text, size_t *length)
{
    FILE *f = fopen(path, "rb");
    long n;
    if (!f)
        return mpt__fail(MPT_ERR_NOT_FOUND, "kernel source %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return mpt__fail(MPT_ERR_IO, "kernel source %s: cannot size it", path);
    }
    *text = malloc((size_t)n + 1);
    if (!*text) {
        fclose(f);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory reading %s", path);
    }
    size_t got = fread(*text, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) {
        free(*text);
        return mpt__fail(MPT_ERR_IO, "kernel source %s: short read", path);
    }
    (*text)[n] = '\0';
    *length = (size_t)n;
    return MPT_OK;
}

int mpt__kernel_source(const char *name, const char **source, size_t *length, char **owned)
{
    const char *dir = mpt__env(MPT_ENV_KERNEL_DIR);
    *owned = NULL;
    if (*dir) {
        char path[4096];
        int status = mpt__snprintf(path, sizeof path, "%s/%s.cl", dir, name);
        if (status == MPT_OK)
            status = read_file(path, owned, length);
        *source = *owned;
        return status;
    }
    for (size_t i = 0; i < mpt__kernel_source_count; i++)
        if (strcmp(mpt__kernel_sources[i].name, name) == 0) {
            *source = mpt__kernel_sources[i].source;
            *length = mpt__kernel_sources[i].length;
            return MPT_OK;
        }
    return mpt__fail(MPT_ERR_NOT_FOUND, "no kernel source kernels/%s.cl is embedded in libmpt",
                     name);
}

int mpt__build_options(const mpt_device_t *dev, const char *extra, char *buf, size_t size)
{
    /* OpenCL C 1.2 everywhere (PoCL speaks no more); IEEE semantics: no
     * fast-math or -cl-mad-enable, so NaN and Inf stay visible in training.
     * A CPU device's programs carry its index (MPT_DEVICE_SLOT, used by no
     * kernel) so that two devices of one PoCL driver never share a
     * compiled kernel: PoCL 3.1 keeps one process-wide cache of loaded
     * kernels keyed by the program's hash, and releases an entry by hash
     * and local size alone, so two threads running one kernel with
     * different global sizes on two "basic" devices could release each
     * other's entry and abort on an assertion (pocl_release_dlhandle_cache,
     * 4 runs of 18 of tensor parallelism on "basic basic"; none of 26 with
     * the slot). */
    int cpu = dev->info.type == MPT_DEVICE_CPU;
    char slot[32] = "";
    if (cpu)
        snprintf(slot, sizeof slot, " -DMPT_DEVICE_SLOT=%d", dev->info.index);
    return mpt__snprintf(buf, size, "-cl-std=CL1.2 -DMPT_DEVICE_IS_CPU=%d%s %s %s", cpu, slot,
                         extra ? extra : "", mpt__env(MPT_ENV_CL_BUILD_OPTIONS));
}

int mpt__program_build_source(mpt_device_t *dev, const char *label, const char *source,
                              size_t length, const char *extra_options, cl_program *out)
{
    char options[2048];
    cl_int err;
    int status = mpt__build_options(dev, extra_options, options, sizeof options);
    *out = NULL;
    if (status < 0)
        return status;
    cl_program p = clCreateProgramWithSource(dev->context, 1, &source, &length, &err);
    if (!p)
        return mpt__fail_cl(err, "creating program %s", label);
    err = clBuildProgram(p, 1, &dev->id, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        size_t n = 0;
        char *log = NULL;
        clGetProgramBuildInfo(p, dev->id, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
        if (n && (log = calloc(n + 1, 1)))
            clGetProgramBuildInfo(p, dev->id, CL_PROGRAM_BUILD_LOG, n, log, NULL);
        status = mpt__fail(MPT_ERR_BUILD,
                           "building %s for device %d (%s) with options '%s': %s (cl_int %d); "
                           "build log:\n%s",
                           label, dev->info.index, dev->info.name, options,
                           mpt__cl_error_name(err), (int)err, log ? log : "(none)");
        free(log);
        clReleaseProgram(p);
        return status;
    }
    *out = p;
    return MPT_OK;
}

static void program_free(mpt__program_t *p)
{
    while (p->kernels) {
        mpt__kernel_entry_t *k = p->kernels;
        p->kernels = k->next;
        clReleaseKernel(k->kernel);
        free(k->name);
        free(k);
    }
    if (p->program)
        clReleaseProgram(p->program);
    free(p->name);
    free(p);
}

void mpt__device_programs_free(mpt_device_t *dev)
{
    while (dev->programs) {
        mpt__program_t *p = dev->programs;
        dev->programs = p->next;
        program_free(p);
    }
}

/* The cached program `name`, built now if needed.  Caller holds dev->lock. */
static int program_get(mpt_device_t *dev, const char *name, mpt__program_t **out)
{
    const char *source;
    size_t length;
    char *owned = NULL, label[512];
    int status;

    for (mpt__program_t *p = dev->programs; p; p = p->next)
        if (strcmp(p->name, name) == 0) {
            *out = p;
            return MPT_OK;
        }
    mpt__program_t *p = calloc(1, sizeof *p);
    if (!p)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    if (!(p->name = mpt__strdup(name))) {
        status = MPT_ERR_NOMEM;
        goto out;
    }
    MPT_TRY(mpt__kernel_source(name, &source, &length, &owned));
    MPT_TRY(mpt__snprintf(label, sizeof label, "kernels/%s.cl", name));
    MPT_TRY(mpt__program_build_source(dev, label, source, length, NULL, &p->program));
    p->next = dev->programs;
    dev->programs = p;
    *out = p;
out:
    free(owned);
    if (status < 0)
        program_free(p);
    return status;
}

int mpt__device_kernel(mpt_device_t *dev, const char *program, const char *kernel,
                       cl_kernel *out)
{
    mpt__program_t *p = NULL;
    int status;
    cl_int err;

    pthread_mutex_lock(&dev->lock);
    MPT_TRY(program_get(dev, program, &p));
    for (mpt__kernel_entry_t *k = p->kernels; k; k = k->next)
        if (strcmp(k->name, kernel) == 0) {
            *out = k->kernel;
            goto out;
        }
    mpt__kernel_entry_t *k = calloc(1, sizeof *k);
    if (!k || !(k->name = mpt__strdup(kernel))) {
        free(k);
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    k->kernel = clCreateKernel(p->program, kernel, &err);
    if (!k->kernel) {
        free(k->name);
        free(k);
        status = mpt__fail_cl(err, "kernel %s in kernels/%s.cl", kernel, program);
        goto out;
    }
    k->next = p->kernels;
    p->kernels = k;
    *out = k->kernel;
out:
    pthread_mutex_unlock(&dev->lock);
    return status;
}
