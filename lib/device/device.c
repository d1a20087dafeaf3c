/*
 * device/device.c: enumerates every OpenCL platform and device, reads each
 * device's identity, and opens the selected ones (context + in-order queue
 * with profiling).  Selection parsing is in select.c, buffers in buffer.c,
 * programs in program.c.
 */
#define _GNU_SOURCE /* strcasestr */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CL/cl_ext.h>
#include <hwloc.h>
#include <hwloc/opencl.h>

#include "device/device.h"
#include "device/gemm.h"

enum { S_VENDOR, S_NAME, S_PLATFORM, S_DEVICE_VERSION, S_DRIVER_VERSION, S_PCI, S_COUNT };

static int query_string(cl_device_id id, cl_device_info what, char **out)
{
    size_t n = 0;
    cl_int err = clGetDeviceInfo(id, what, 0, NULL, &n);
    if (err != CL_SUCCESS)
        return mpt__fail_cl(err, "clGetDeviceInfo(0x%x)", (unsigned)what);
    if (!(*out = calloc(n + 1, 1)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory reading device info");
    err = clGetDeviceInfo(id, what, n, *out, NULL);
    if (err != CL_SUCCESS)
        return mpt__fail_cl(err, "clGetDeviceInfo(0x%x)", (unsigned)what);
    /* Drivers pad names with spaces; trim them for display and keys. */
    for (size_t len = strlen(*out); len > 0 && (*out)[len - 1] == ' '; len--)
        (*out)[len - 1] = '\0';
    return MPT_OK;
}

static int query_platform_name(cl_platform_id p, char **out)
{
    size_t n = 0;
    cl_int err = clGetPlatformInfo(p, CL_PLATFORM_NAME, 0, NULL, &n);
    if (err != CL_SUCCESS)
        return mpt__fail_cl(err, "clGetPlatformInfo(CL_PLATFORM_NAME)");
    if (!(*out = calloc(n + 1, 1)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory reading platform info");
    err = clGetPlatformInfo(p, CL_PLATFORM_NAME, n, *out, NULL);
    return err == CL_SUCCESS ? MPT_OK : mpt__fail_cl(err, "clGetPlatformInfo(CL_PLATFORM_NAME)");
}

const char *mpt__vendor_word(const char *vendor, const char *platform)
{
    /* The platform decides first: PoCL reports the CPU's vendor as device
     * vendor ("AuthenticAMD"), yet users select it as "pocl". */
    if (strstr(platform, "Portable Computing Language") || strstr(platform, "pocl"))
        return "pocl";
    if (strcasestr(vendor, "nvidia"))
        return "nvidia";
    if (strcasestr(vendor, "advanced micro devices") || strcasestr(vendor, "amd"))
        return "amd";
    if (strcasestr(vendor, "intel"))
        return "intel";
    return "other";
}

static int has_extension(cl_device_id id, const char *ext)
{
    char *exts = NULL;
    int found = 0;
    if (query_string(id, CL_DEVICE_EXTENSIONS, &exts) == MPT_OK) {
        size_t n = strlen(ext);
        for (const char *p = exts; (p = strstr(p, ext)) != NULL; p += n)
            if ((p == exts || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
                found = 1;
    }
    free(exts);
    return found;
}

/* PCI address from cl_khr_pci_bus_info, else the NVIDIA/AMD extensions
 * through hwloc's helper; "" when the driver gives none (CPU devices). */
static int query_pci(cl_device_id id, char **out)
{
    unsigned domain = 0, bus = 0, dev = 0, func = 0;
    int found = 0;
    if (has_extension(id, "cl_khr_pci_bus_info")) {
        cl_device_pci_bus_info_khr info;
        if (clGetDeviceInfo(id, CL_DEVICE_PCI_BUS_INFO_KHR, sizeof info, &info, NULL) ==
            CL_SUCCESS) {
            domain = info.pci_domain, bus = info.pci_bus, dev = info.pci_device;
            func = info.pci_function;
            found = 1;
        }
    }
    /* hwloc's helper asks for the AMD, then the NVIDIA attribute without
     * checking either extension: a driver without them answers
     * CL_INVALID_VALUE, which API checkers (Oclgrind) report as misuse. */
    if (!found && (has_extension(id, "cl_amd_device_attribute_query") ||
                   has_extension(id, "cl_nv_device_attribute_query")))
        found = hwloc_opencl_get_device_pci_busid(id, &domain, &bus, &dev, &func) == 0;
    if (!(*out = calloc(16, 1)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    if (found)
        snprintf(*out, 16, "%04x:%02x:%02x.%01x", domain & 0xffff, bus & 0xff, dev & 0x1f,
                 func & 0x7);
    return MPT_OK;
}

static mpt_device_type_t device_type(cl_device_type t)
{
    if (t & CL_DEVICE_TYPE_GPU)
        return MPT_DEVICE_GPU;
    if (t & CL_DEVICE_TYPE_CPU)
        return MPT_DEVICE_CPU;
    if (t & CL_DEVICE_TYPE_ACCELERATOR)
        return MPT_DEVICE_ACCELERATOR;
    return MPT_DEVICE_OTHER;
}

static void device_free(mpt_device_t *d)
{
    if (!d)
        return;
    mpt_device_set_timing(d, 0);
    free(d->events);
    free(d->event_start);
    free(d->event_blas);
    mpt__device_programs_free(d);
    mpt__gemm_release(d);
    if (d->queue)
        clReleaseCommandQueue(d->queue);
    if (d->context)
        clReleaseContext(d->context);
    for (int i = 0; i < S_COUNT; i++)
        free(d->strings[i]);
    free(d->identity);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* Reads everything that identifies the device; opens nothing yet. */
static int device_describe(cl_platform_id p, cl_device_id id, int index, mpt_device_t **out)
{
    int status = MPT_OK;
    mpt_device_t *d = calloc(1, sizeof *d);
    if (!d)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&d->lock, NULL);
    d->platform = p;
    d->id = id;
    MPT_TRY(query_string(id, CL_DEVICE_VENDOR, &d->strings[S_VENDOR]));
    MPT_TRY(query_string(id, CL_DEVICE_NAME, &d->strings[S_NAME]));
    MPT_TRY(query_platform_name(p, &d->strings[S_PLATFORM]));
    MPT_TRY(query_string(id, CL_DEVICE_VERSION, &d->strings[S_DEVICE_VERSION]));
    MPT_TRY(query_string(id, CL_DRIVER_VERSION, &d->strings[S_DRIVER_VERSION]));
    MPT_TRY(query_pci(id, &d->strings[S_PCI]));

    mpt_device_info_t *in = &d->info;
    in->index = index;
    in->vendor = d->strings[S_VENDOR];
    in->name = d->strings[S_NAME];
    in->platform = d->strings[S_PLATFORM];
    in->device_version = d->strings[S_DEVICE_VERSION];
    in->driver_version = d->strings[S_DRIVER_VERSION];
    in->pci_address = d->strings[S_PCI];
    in->vendor_word = mpt__vendor_word(in->vendor, in->platform);

    cl_device_type type = 0;
    cl_ulong global = 0, max_alloc = 0, local = 0;
    cl_uint units = 0, clock = 0;
    cl_bool unified = CL_FALSE;
    clGetDeviceInfo(id, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(id, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof global, &global, NULL);
    clGetDeviceInfo(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    clGetDeviceInfo(id, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local, &local, NULL);
    clGetDeviceInfo(id, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL);
    clGetDeviceInfo(id, CL_DEVICE_MAX_CLOCK_FREQUENCY, sizeof clock, &clock, NULL);
    clGetDeviceInfo(id, CL_DEVICE_HOST_UNIFIED_MEMORY, sizeof unified, &unified, NULL);
    in->type = device_type(type);
    in->global_mem_bytes = global;
    in->max_alloc_bytes = max_alloc;
    in->local_mem_bytes = local;
    in->compute_units = units;
    in->clock_mhz = clock;
    in->unified_memory = unified == CL_TRUE;
    in->fp16 = has_extension(id, "cl_khr_fp16");
    in->fp64 = has_extension(id, "cl_khr_fp64");

    char key[1024];
    MPT_TRY(mpt__snprintf(key, sizeof key, "%s|%s|%s|%s|%s|cu%u", in->vendor, in->name,
                          in->driver_version, in->platform, in->pci_address, in->compute_units));
    if (!(d->identity = mpt__strdup(key)))
        status = MPT_ERR_NOMEM;
out:
    if (status < 0) {
        device_free(d);
        d = NULL;
    }
    *out = d;
    return status;
}

static int device_open(mpt_device_t *d)
{
    cl_int err;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)d->platform, 0};
    d->context = clCreateContext(props, 1, &d->id, NULL, NULL, &err);
    if (!d->context)
        return mpt__fail_cl(err, "creating a context on device %d (%s)", d->info.index,
                            d->info.name);
    d->queue = clCreateCommandQueue(d->context, d->id, CL_QUEUE_PROFILING_ENABLE, &err);
    if (!d->queue)
        return mpt__fail_cl(err, "creating a queue on device %d (%s)", d->info.index,
                            d->info.name);
    MPT_TRY_RETURN(mpt__gemm_choose(d));
    return mpt__device_blas_tuning(d);
}

/* Every device of every platform, described, in enumeration order. */
/* PoCL reports no device at all when it cannot create its kernel cache
 * ($POCL_CACHE_DIR, else $XDG_CACHE_HOME/pocl/kcache, else
 * ~/.cache/pocl/kcache): say so instead of leaving "no device" alone. */
static void pocl_cache_problem(char *why, size_t size)
{
    char dir[4096];
    const char *pocl = getenv("POCL_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"),
               *home = getenv("HOME");
    why[0] = '\0';
    if (pocl && *pocl)
        snprintf(dir, sizeof dir, "%s", pocl);
    else if (xdg && *xdg)
        snprintf(dir, sizeof dir, "%s/pocl/kcache", xdg);
    else if (home && *home)
        snprintf(dir, sizeof dir, "%s/.cache/pocl/kcache", home);
    else
        return;
    if (mpt__mkdir_p(dir) < 0) {
        snprintf(why, size,
                 " (PoCL's kernel cache %.4000s cannot be created: %.1000s; PoCL then shows no device: "
                 "point POCL_CACHE_DIR or XDG_CACHE_HOME at a writable directory)",
                 dir, mpt_last_error());
        mpt__clear_error();
    }
}

static int enumerate(mpt_device_t ***out, size_t *count)
{
    int status = MPT_OK;
    cl_uint np = 0;
    cl_platform_id *platforms = NULL;
    mpt_device_t **all = NULL;
    size_t n = 0;

    cl_int err = clGetPlatformIDs(0, NULL, &np);
    if (err == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ || (err == CL_SUCCESS && np == 0)) {
        const char *dir = getenv("OCL_ICD_VENDORS");
        return mpt__fail(MPT_ERR_NO_PLATFORM,
                         "no OpenCL platform found: no ICD in %s (install pocl-opencl-icd "
                         "or a GPU vendor's OpenCL driver)",
                         dir ? dir : "/etc/OpenCL/vendors");
    }
    if (err != CL_SUCCESS)
        return mpt__fail_cl(err, "clGetPlatformIDs");
    if (!(platforms = calloc(np, sizeof *platforms)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    err = clGetPlatformIDs(np, platforms, NULL);
    if (err != CL_SUCCESS) {
        status = mpt__fail_cl(err, "clGetPlatformIDs");
        goto out;
    }
    for (cl_uint p = 0; p < np; p++) {
        cl_uint nd = 0;
        err = clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 0, NULL, &nd);
        if (err == CL_DEVICE_NOT_FOUND || nd == 0)
            continue; /* a platform with no device is not an error */
        if (err != CL_SUCCESS) {
            status = mpt__fail_cl(err, "clGetDeviceIDs on platform %u", p);
            goto out;
        }
        cl_device_id *ids = calloc(nd, sizeof *ids);
        mpt_device_t **grown = realloc(all, (n + nd) * sizeof *all);
        if (!ids || !grown) {
            free(ids);
            if (grown)
                all = grown;
            status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
            goto out;
        }
        all = grown;
        err = clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, nd, ids, NULL);
        for (cl_uint i = 0; err == CL_SUCCESS && i < nd && status == MPT_OK; i++) {
            status = device_describe(platforms[p], ids[i], (int)n, &all[n]);
            if (status == MPT_OK)
                n++;
        }
        free(ids);
        if (err != CL_SUCCESS)
            status = mpt__fail_cl(err, "clGetDeviceIDs on platform %u", p);
        if (status < 0)
            goto out;
    }
    if (n == 0) {
        char why[8192];
        pocl_cache_problem(why, sizeof why);
        status = mpt__fail(MPT_ERR_NO_DEVICE, "OpenCL platforms exist but report no device%s",
                           why);
    }
out:
    free(platforms);
    if (status < 0) {
        for (size_t i = 0; i < n; i++)
            device_free(all[i]);
        free(all);
        all = NULL;
        n = 0;
    }
    *out = all;
    *count = n;
    return status;
}

/* The devices chosen by a spec, in the spec's order (as
 * CUDA_VISIBLE_DEVICES orders devices: "3,0" makes enumerated device 3 the
 * set's first), each once; a word or range adds its matches in
 * enumeration order.  Each item must match something.  order[] gets the
 * enumeration indices, *chosen_count how many. */
static int select_devices(mpt_device_t **all, size_t n, const char *spec, size_t *order,
                          size_t *chosen_count)
{
    char *copy = mpt__strdup(spec), *save = NULL, *taken = calloc(n ? n : 1, 1);
    int status = MPT_OK, any_item = 0;
    size_t k = 0;
    if (!copy || !taken) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ')
            item++;
        for (size_t len = strlen(item); len > 0 && item[len - 1] == ' '; len--)
            item[len - 1] = '\0';
        if (!*item)
            continue;
        any_item = 1;
        int matched = 0;
        for (size_t i = 0; i < n; i++) {
            int m = 0;
            MPT_TRY(mpt__device_matches(&all[i]->info, item, &m));
            if (!m)
                continue;
            matched = 1;
            if (!taken[i])
                taken[i] = 1, order[k++] = i;
        }
        if (!matched) {
            status = mpt__fail(MPT_ERR_NO_DEVICE,
                               "device selection '%s' (MPT_DEVICES or --devices): '%s' matches "
                               "none of the %zu device(s) found",
                               spec, item, n);
            goto out;
        }
    }
    if (!any_item)
        for (k = 0; k < n; k++)
            order[k] = k;
out:
    *chosen_count = k;
    free(copy);
    free(taken);
    return status;
}

int mpt_devices_open(const char *spec, mpt_devices_t **out)
{
    int status = MPT_OK;
    mpt_device_t **all = NULL;
    size_t n = 0;
    size_t *order = NULL, chosen = 0;
    mpt_devices_t *set = NULL;

    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_devices_open: out is NULL");
    *out = NULL;
    mpt__clear_error();
    if (!spec)
        spec = mpt__env(MPT_ENV_DEVICES);
    MPT_TRY(enumerate(&all, &n));
    if (!(order = calloc(n, sizeof *order)) || !(set = calloc(1, sizeof *set)) ||
        !(set->devices = calloc(n, sizeof *set->devices))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    set->total = n;
    MPT_TRY(select_devices(all, n, spec, order, &chosen));
    for (size_t k = 0; k < chosen; k++) {
        set->devices[set->count++] = all[order[k]];
        all[order[k]] = NULL;
        MPT_TRY(device_open(set->devices[set->count - 1]));
    }
    mpt__gemm_set_threads(set->devices, set->count);
out:
    for (size_t i = 0; i < n; i++)
        device_free(all[i]);
    free(all);
    free(order);
    if (status < 0) {
        mpt_devices_free(set);
        set = NULL;
    }
    *out = set;
    return status;
}

void mpt_devices_free(mpt_devices_t *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->count; i++)
        device_free(set->devices[i]);
    free(set->devices);
    free(set);
}

size_t mpt_devices_count(const mpt_devices_t *set)
{
    return set ? set->count : 0;
}

size_t mpt_devices_total(const mpt_devices_t *set)
{
    return set ? set->total : 0;
}

mpt_device_t *mpt_devices_get(const mpt_devices_t *set, size_t i)
{
    return set && i < set->count ? set->devices[i] : NULL;
}

const mpt_device_info_t *mpt_device_info(const mpt_device_t *dev)
{
    return &dev->info;
}

const char *mpt_device_identity(const mpt_device_t *dev)
{
    return dev->identity;
}

int mpt_device_finish(mpt_device_t *dev)
{
    int status = mpt__device_health(dev, "finishing the queue");
    if (status < 0)
        return status;
    cl_int err = clFinish(dev->queue);
    return err == CL_SUCCESS ? MPT_OK
                             : mpt__fail_cl(err, "clFinish on device %d (%s)", dev->info.index,
                                            dev->info.name);
}
