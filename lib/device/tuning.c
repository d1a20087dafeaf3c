/*
 * device/tuning.c: CLBlast tuning stored per device and applied at open;
 * the models' GEMM shapes, timing them, and the keep-or-drop decision.
 * Running the tuners and the alternating measurement is tuning_run.c.
 * See device/tuning.h for the method.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <clblast_c.h>

#include "device/gemm.h"
#include "device/tuning.h"

#define TUNING_FORMAT 1

/* The models' GEMMs: linear layers compute y = x W^T (0,1), dW = dy^T x
 * (1,0) and dx = dy W (0,0) (lib/nn/layers.c); gpt-mini at batch 8 x 256
 * tokens has 2048 rows, C = 384, 6 heads of 64 (lib/nn/layers_gpt.c).
 * The first four (MLP batch 128) are the quick set: small enough that a
 * test times them in a second on a loaded CPU. */
static const mpt__gemm_shape_t shapes[] = {
    {"mlp b128 fc1 forward", 0, 1, 128, 256, 784, 1},
    {"mlp b128 fc1 weight grad", 1, 0, 256, 784, 128, 1},
    {"mlp b128 fc2 forward", 0, 1, 128, 128, 256, 1},
    {"mlp b128 fc2 input grad", 0, 0, 128, 256, 128, 1},
    {"mlp b1024 fc1 forward", 0, 1, 1024, 256, 784, 1},
    {"square 1024", 0, 0, 1024, 1024, 1024, 1},
    {"gpt-mini qkv forward", 0, 1, 2048, 1152, 384, 1},
    {"gpt-mini mlp fc forward", 0, 1, 2048, 1536, 384, 1},
    {"gpt-mini mlp proj weight grad", 1, 0, 384, 1536, 2048, 1},
    {"gpt-mini lm head forward", 0, 1, 2048, 256, 384, 1},
    {"gpt-mini attention q k^T x48", 0, 1, 256, 256, 64, 48},
    {"gpt-mini attention p v x48", 0, 0, 256, 64, 256, 48},
};

const mpt__gemm_shape_t *mpt__tuning_shapes(int quick, size_t *count)
{
    *count = quick ? 4 : sizeof shapes / sizeof *shapes;
    return shapes;
}

int mpt__tuning_decide(const double *d, const double *c, size_t nshapes, double margin)
{
    double td = 0, tc = 0;
    for (size_t i = 0; i < nshapes; i++)
        td += d[i], tc += c[i];
    return nshapes > 0 && td > 0 && tc < td * (1.0 - margin);
}

int mpt__tuning_override(mpt_device_t *dev, const mpt__clblast_params_t *p)
{
    const char *names[MPT_TUNING_MAX_PARAMS];
    for (size_t i = 0; i < p->count; i++)
        names[i] = p->names[i];
    CLBlastStatusCode s = CLBlastOverrideParameters(dev->id, p->routine, CLBlastPrecisionSingle,
                                                    p->count, names, p->values);
    if (s != CLBlastSuccess)
        return mpt__fail(MPT_ERR_BLAS,
                         "CLBlast refused %zu parameters for %s on device %d (%s): status %d%s",
                         p->count, p->routine, dev->info.index, dev->info.name, (int)s,
                         s == CLBlastMissingOverrideParameter ? " (a parameter is missing)" : "");
    return MPT_OK;
}

/* ---- timing mpt's GEMM at a shape ---------------------------------------- */

static int make_buffer(mpt_device_t *dev, size_t floats, float value, cl_mem *out)
{
    cl_int err;
    *out = clCreateBuffer(dev->context, CL_MEM_READ_WRITE, floats * sizeof(float), NULL, &err);
    if (!*out)
        return mpt__fail_cl(err, "allocating %zu floats on device %d", floats, dev->info.index);
    err = clEnqueueFillBuffer(dev->queue, *out, &value, sizeof value, 0, floats * sizeof(float), 0,
                              NULL, NULL);
    if (err != CL_SUCCESS)
        return mpt__fail_cl(err, "filling a buffer on device %d", dev->info.index);
    return MPT_OK;
}

/* One call of the shape, to the end of its work (a CLBlast call is only
 * enqueued when it returns). */
static int run_shape(mpt_device_t *dev, const mpt__gemm_shape_t *sh, cl_mem a, cl_mem b, cl_mem c,
                     const size_t *offs)
{
    size_t lda = sh->ta ? sh->m : sh->k, ldb = sh->tb ? sh->k : sh->n, ldc = sh->n;
    int status;
    if (sh->count == 1)
        MPT_TRY(mpt__gemm(dev, sh->ta, sh->tb, sh->m, sh->n, sh->k, 1.0f, a, 0, lda, b, 0, ldb,
                          0.0f, c, 0, ldc));
    else
        MPT_TRY(mpt__gemm_batched(dev, sh->ta, sh->tb, sh->m, sh->n, sh->k, 1.0f, a, offs, lda, b,
                                  offs + sh->count, ldb, 0.0f, c, offs + 2 * sh->count, ldc,
                                  sh->count));
    MPT_TRY(mpt_device_finish(dev));
out:
    return status;
}

static int time_shape(mpt_device_t *dev, const mpt__gemm_shape_t *sh, double min_s,
                      double *seconds)
{
    size_t na = sh->m * sh->k, nb = sh->k * sh->n, nc = sh->m * sh->n;
    cl_mem a = NULL, b = NULL, c = NULL;
    size_t *offs = malloc(3 * sh->count * sizeof *offs);
    int status = MPT_OK;
    if (!offs)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory timing a GEMM");
    for (size_t g = 0; g < sh->count; g++)
        offs[g] = g * na, offs[sh->count + g] = g * nb, offs[2 * sh->count + g] = g * nc;
    MPT_TRY(make_buffer(dev, na * sh->count, 0.25f, &a));
    MPT_TRY(make_buffer(dev, nb * sh->count, 0.5f, &b));
    MPT_TRY(make_buffer(dev, nc * sh->count, 0.0f, &c));
    MPT_TRY(run_shape(dev, sh, a, b, c, offs)); /* compiles the kernels, pages memory in */
    size_t calls = 0;
    double t0 = mpt__now(), dt;
    do {
        MPT_TRY(run_shape(dev, sh, a, b, c, offs));
        calls++;
    } while ((dt = mpt__now() - t0) < min_s);
    *seconds = dt / (double)calls;
out:
    if (a)
        clReleaseMemObject(a);
    if (b)
        clReleaseMemObject(b);
    if (c)
        clReleaseMemObject(c);
    free(offs);
    return status;
}

int mpt__tuning_time_shapes(mpt_device_t *dev, int quick, double min_s, double *seconds)
{
    size_t n;
    const mpt__gemm_shape_t *sh = mpt__tuning_shapes(quick, &n);
    for (size_t i = 0; i < n; i++)
        MPT_TRY_RETURN(time_shape(dev, &sh[i], min_s, &seconds[i]));
    return MPT_OK;
}

/* ---- the stored file ----------------------------------------------------- */

int mpt__tuning_path(const mpt_device_t *dev, char *buf, size_t size)
{
    /* The directory of the profiles (profile/cache.c): this layer cannot
     * call up into profile, so the two lines of its rule are repeated. */
    const char *xdg = mpt__env(MPT_ENV_CACHE_HOME), *home = getenv("HOME");
    uint64_t h = 1469598103934665603ull; /* FNV-1a of the identity, as profiles */
    for (const unsigned char *s = (const unsigned char *)dev->identity; *s; s++)
        h = (h ^ *s) * 1099511628211ull;
    if (*xdg)
        return mpt__snprintf(buf, size, "%s/mpt/clblast-%016llx.json", xdg, (unsigned long long)h);
    if (home && *home)
        return mpt__snprintf(buf, size, "%s/.cache/mpt/clblast-%016llx.json", home,
                             (unsigned long long)h);
    return mpt__fail(MPT_ERR_NOT_FOUND, "neither XDG_CACHE_HOME nor HOME is set: no cache directory");
}

/* A parameters object {"NAME": value...} into p. */
static int params_from_json(const json_t *obj, const char *routine, const char *where,
                            mpt__clblast_params_t *p)
{
    const char *key;
    json_t *v;
    memset(p, 0, sizeof *p);
    if (mpt__snprintf(p->routine, sizeof p->routine, "%s", routine) < 0 || !json_is_object(obj))
        return mpt__fail(MPT_ERR_PARSE, "%s: %s.parameters must be an object", where, routine);
    json_object_foreach((json_t *)obj, key, v) {
        if (p->count == MPT_TUNING_MAX_PARAMS || !json_is_integer(v) ||
            json_integer_value(v) < 0 || strlen(key) >= sizeof p->names[0])
            return mpt__fail(MPT_ERR_PARSE, "%s: %s.parameters.%s must be a non-negative integer "
                             "(at most %d short names)", where, routine, key,
                             MPT_TUNING_MAX_PARAMS);
        strcpy(p->names[p->count], key);
        p->values[p->count++] = (size_t)json_integer_value(v);
    }
    return MPT_OK;
}

static const char *tuned_word(int xgemm, int direct)
{
    return xgemm && direct ? "Xgemm,XgemmDirect" : xgemm ? "Xgemm" : direct ? "XgemmDirect" : "";
}

int mpt__tuning_apply_stored(mpt_device_t *dev)
{
    char path[4096];
    json_t *root = NULL, *routines, *r;
    const char *ident = NULL, *name;
    json_int_t format = 0;
    int status, xgemm = 0, direct = 0;
    dev->info.clblast_tuning = NULL;
    if (dev->gemm_host)
        return MPT_OK; /* CLBlast runs none of its GEMMs */
    if (!strcmp(mpt__env(MPT_ENV_CLBLAST_TUNING), "off")) {
        dev->info.clblast_tuning = "";
        return MPT_OK;
    }
    if (strcmp(mpt__env(MPT_ENV_CLBLAST_TUNING), "auto") != 0)
        return mpt__fail(MPT_ERR_PARSE, "MPT_CLBLAST_TUNING='%s': expected auto or off",
                         mpt__env(MPT_ENV_CLBLAST_TUNING));
    MPT_TRY(mpt__tuning_path(dev, path, sizeof path));
    if (access(path, F_OK) != 0) { /* never tuned: CLBlast's database decides */
        dev->info.clblast_tuning = "";
        return MPT_OK;
    }
    MPT_TRY(mpt__json_load_file(path, &root));
    if (json_unpack(root, "{s:I,s:s,s:o}", "mpt_clblast_tuning", &format, "identity", &ident,
                    "routines", &routines) != 0 || format != TUNING_FORMAT ||
        !json_is_object(routines)) {
        status = mpt__fail(MPT_ERR_PARSE, "%s: not an mpt CLBlast tuning file of format %d "
                           "(needs mpt_clblast_tuning, identity, routines)", path, TUNING_FORMAT);
        goto out;
    }
    if (strcmp(ident, dev->identity) != 0) {
        status = mpt__fail(MPT_ERR_PARSE, "%s: tuning of another device (%s)", path, ident);
        goto out;
    }
    json_object_foreach(routines, name, r) {
        mpt__clblast_params_t p;
        if (strcmp(name, "Xgemm") != 0 && strcmp(name, "XgemmDirect") != 0) {
            status = mpt__fail(MPT_ERR_PARSE, "%s: routines.%s: expected Xgemm or XgemmDirect",
                               path, name);
            goto out;
        }
        if (!json_is_true(json_object_get(r, "kept")))
            continue; /* tuning lost on the measured shapes: the defaults stay */
        MPT_TRY(params_from_json(json_object_get(r, "parameters"), name, path, &p));
        status = mpt__tuning_override(dev, &p);
        if (status < 0) {
            mpt__fail_context(status, "%s: ", path);
            goto out;
        }
        if (!strcmp(name, "Xgemm"))
            xgemm = 1;
        else
            direct = 1;
    }
    dev->info.clblast_tuning = tuned_word(xgemm, direct);
    if (xgemm || direct)
        mpt__log(MPT_LOG_INFO, "device %d (%s): CLBlast %s tuned (%s)", dev->info.index,
                 dev->info.name, dev->info.clblast_tuning, path);
out:
    json_decref(root);
    return status;
}
