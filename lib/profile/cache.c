/*
 * profile/cache.c: profiles as JSON, and their on-disk cache under
 * $XDG_CACHE_HOME/mpt (else ~/.cache/mpt), one file per device identity.
 */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/device.h"
#include "profile/profile.h"

#define PROFILE_FORMAT 2 /* bump when the measurement method changes (2: host-BLAS
                          * threads of the device alone, measure.c) */

json_t *mpt__profile_to_json(const mpt_profile_t *p)
{
    json_t *gemm = json_array();
    for (int i = 0; gemm && i < MPT_PROFILE_GEMM_SHAPES && p->gemm[i].m; i++)
        json_array_append_new(gemm, json_pack("{s:I,s:I,s:I,s:f}", "m", (json_int_t)p->gemm[i].m,
                                              "n", (json_int_t)p->gemm[i].n, "k",
                                              (json_int_t)p->gemm[i].k, "gflops",
                                              p->gemm[i].gflops));
    json_t *o = json_pack("{s:f,s:o*,s:f,s:f,s:f,s:f,s:f}", "gemm_gflops", p->gemm_gflops, "gemm",
                          gemm, "mem_gbps", p->mem_gbps, "h2d_gbps", p->h2d_gbps, "d2h_gbps",
                          p->d2h_gbps, "launch_us", p->launch_us, "measured_at", p->measured_at);
    /* Only what was measured: cluster files written by hand stay short. */
    if (o && p->noise > 0)
        json_object_set_new(o, "noise", json_real(p->noise));
    if (o && p->shared_gemm_gflops > 0)
        json_object_set_new(o, "shared_gemm_gflops", json_real(p->shared_gemm_gflops));
    if (o && p->shared_mem_gbps > 0)
        json_object_set_new(o, "shared_mem_gbps", json_real(p->shared_mem_gbps));
    if (o && p->shared_devices > 0)
        json_object_set_new(o, "shared_devices", json_integer((json_int_t)p->shared_devices));
    const mpt_calibration_t *c = &p->calibration;
    json_t *cal = NULL;
    if (o && c->steps > 0 &&
        (cal = json_pack("{s:f,s:f,s:f,s:f,s:I}", "forward", c->forward, "backward", c->backward,
                         "transfer", c->transfer, "allreduce", c->allreduce, "steps",
                         (json_int_t)c->steps))) {
        if (c->company_steps > 0)
            json_object_set_new(cal, "company",
                                json_pack("{s:f,s:f,s:I}", "forward", c->company_forward,
                                          "backward", c->company_backward, "steps",
                                          (json_int_t)c->company_steps));
        json_object_set_new(o, "calibration", cal);
    }
    return o;
}

/* Physical bounds of each figure, generous both ways: a value outside is a
 * typo or a broken measurement (a 1e-300 GFLOP/s device once gave a plan
 * of 2.6e+305 ms per step), refused with the file and field named.
 * Fastest fp32 GEMM today ~70 TFLOP/s, HBM ~5 TB/s, PCIe 6 x16 ~128 GB/s;
 * slowest: a 10 MFLOP/s, 10 MB/s device is no use to a planner. */
static const struct {
    const char *key;
    double min, max;
} bounds[] = {
    {"gemm_gflops", 1e-2, 1e6}, {"mem_gbps", 1e-2, 1e5}, {"h2d_gbps", 1e-3, 1e12},
    {"d2h_gbps", 1e-3, 1e12},    {"launch_us", 0, 1e6},   {"noise", 0, 1e3},
    {"shared_gemm_gflops", 0, 1e6}, {"shared_mem_gbps", 0, 1e5}, {"shared_devices", 0, 1e6},
    /* calibration factors: measured / predicted (plan/calibrate.c clamps
     * what it writes to [0.01, 100]) */
    {"forward", 1e-3, 1e3}, {"backward", 1e-3, 1e3}, {"transfer", 1e-3, 1e3},
    {"allreduce", 1e-3, 1e3},
};

static int in_bounds(const char *key, double v, const char *where)
{
    for (size_t i = 0; i < sizeof bounds / sizeof *bounds; i++)
        if (strcmp(bounds[i].key, key) == 0 && (v < bounds[i].min || v > bounds[i].max) &&
            !(v == 0 && bounds[i].min == 0))
            return mpt__fail(MPT_ERR_PARSE, "%s.%s: %g is outside the physical bounds [%g, %g]",
                             where, key, v, bounds[i].min, bounds[i].max);
    return MPT_OK;
}

/* A positive number at obj[key]; `required` decides whether absence fails. */
static int number(const json_t *obj, const char *key, const char *where, int required,
                  double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return mpt__fail(MPT_ERR_PARSE, "%s: missing \"%s\"", where, key);
        return MPT_OK;
    }
    if (!json_is_number(v) || json_number_value(v) < 0 ||
        (required && json_number_value(v) == 0))
        return mpt__fail(MPT_ERR_PARSE, "%s.%s: must be a %s number", where, key,
                         required ? "positive" : "non-negative");
    if (in_bounds(key, json_number_value(v), where) < 0)
        return MPT_ERR_PARSE;
    *out = json_number_value(v);
    return MPT_OK;
}

/* The optional "calibration" object: four factors and the steps, and
 * optionally "company": forward and backward in company, and the steps of
 * the whole that were taken in company. */
static int calibration_from_json(const json_t *obj, const char *where, mpt_calibration_t *c)
{
    char here[512], in_company[560];
    int status = MPT_OK;
    memset(c, 0, sizeof *c);
    if (!obj)
        return MPT_OK;
    snprintf(here, sizeof here, "%s.calibration", where);
    json_t *steps = json_object_get(obj, "steps"), *company = json_object_get(obj, "company");
    if (!json_is_object(obj) || !json_is_integer(steps) || json_integer_value(steps) < 1)
        return mpt__fail(MPT_ERR_PARSE, "%s: must be an object with factors forward, "
                         "backward, transfer, allreduce and an integer steps >= 1", here);
    MPT_TRY(number(obj, "forward", here, 1, &c->forward));
    MPT_TRY(number(obj, "backward", here, 1, &c->backward));
    MPT_TRY(number(obj, "transfer", here, 1, &c->transfer));
    MPT_TRY(number(obj, "allreduce", here, 1, &c->allreduce));
    c->steps = (uint64_t)json_integer_value(steps);
    if (!company)
        return MPT_OK;
    snprintf(in_company, sizeof in_company, "%s.company", here);
    steps = json_object_get(company, "steps");
    if (!json_is_object(company) || !json_is_integer(steps) || json_integer_value(steps) < 1 ||
        (uint64_t)json_integer_value(steps) > c->steps)
        return mpt__fail(MPT_ERR_PARSE, "%s: must be an object with factors forward, backward "
                         "and an integer steps from 1 to the calibration's %llu", in_company,
                         (unsigned long long)c->steps);
    MPT_TRY(number(company, "forward", in_company, 1, &c->company_forward));
    MPT_TRY(number(company, "backward", in_company, 1, &c->company_backward));
    c->company_steps = (uint64_t)json_integer_value(steps);
out:
    return status;
}

int mpt__profile_from_json(const json_t *obj, const char *where, mpt_profile_t *p)
{
    int status;
    memset(p, 0, sizeof *p);
    if (!json_is_object(obj))
        return mpt__fail(MPT_ERR_PARSE, "%s: must be an object", where);
    MPT_TRY(number(obj, "gemm_gflops", where, 1, &p->gemm_gflops));
    MPT_TRY(number(obj, "mem_gbps", where, 1, &p->mem_gbps));
    MPT_TRY(number(obj, "h2d_gbps", where, 1, &p->h2d_gbps));
    MPT_TRY(number(obj, "d2h_gbps", where, 1, &p->d2h_gbps));
    MPT_TRY(number(obj, "launch_us", where, 0, &p->launch_us));
    MPT_TRY(number(obj, "measured_at", where, 0, &p->measured_at));
    MPT_TRY(number(obj, "noise", where, 0, &p->noise));
    MPT_TRY(number(obj, "shared_gemm_gflops", where, 0, &p->shared_gemm_gflops));
    MPT_TRY(number(obj, "shared_mem_gbps", where, 0, &p->shared_mem_gbps));
    MPT_TRY(number(obj, "shared_devices", where, 0, &p->shared_devices));
    if (p->shared_devices != floor(p->shared_devices) || p->shared_devices == 1)
        return mpt__fail(MPT_ERR_PARSE, "%s.shared_devices: %g is not a count of 2 or more "
                         "devices", where, p->shared_devices);
    MPT_TRY(calibration_from_json(json_object_get(obj, "calibration"), where,
                                  &p->calibration));
    json_t *gemm = json_object_get(obj, "gemm");
    if (gemm && (!json_is_array(gemm) || json_array_size(gemm) > MPT_PROFILE_GEMM_SHAPES))
        return mpt__fail(MPT_ERR_PARSE, "%s.gemm: must be an array of at most %d points", where,
                         MPT_PROFILE_GEMM_SHAPES);
    for (size_t i = 0; gemm && i < json_array_size(gemm); i++) {
        json_int_t m = 0, n = 0, k = 0;
        double g = 0;
        if (json_unpack(json_array_get(gemm, i), "{s:I,s:I,s:I,s:F}", "m", &m, "n", &n, "k", &k,
                        "gflops", &g) != 0 ||
            m <= 0 || n <= 0 || k <= 0 || m > UINT_MAX || n > UINT_MAX || k > UINT_MAX ||
            g < 0 || g > 1e6)
            return mpt__fail(MPT_ERR_PARSE,
                             "%s.gemm[%zu]: needs integers m, n, k in [1, 2^32) and a number "
                             "gflops in [0, 1e6]",
                             where, i);
        p->gemm[i] = (mpt_gemm_point_t){(unsigned)m, (unsigned)n, (unsigned)k, g};
    }
out:
    return status;
}

int mpt_profile_save(const char *path, const char *identity, const mpt_profile_t *p)
{
    json_t *root = json_pack("{s:i,s:s,s:o*}", "mpt_profile", PROFILE_FORMAT, "identity",
                             identity, "profile", mpt__profile_to_json(p));
    if (!root)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory building profile JSON");
    int status = mpt__json_save_file(path, root);
    json_decref(root);
    return status;
}

int mpt_profile_load(const char *path, const char *identity, mpt_profile_t *p)
{
    json_t *root = NULL;
    json_int_t format = 0;
    const char *key = NULL;
    int status;
    MPT_TRY(mpt__json_load_file(path, &root));
    if (json_unpack(root, "{s:I,s:s}", "mpt_profile", &format, "identity", &key) != 0) {
        status = mpt__fail(MPT_ERR_PARSE, "%s: not an mpt profile (needs mpt_profile, identity)",
                           path);
        goto out;
    }
    if (format != PROFILE_FORMAT || strcmp(key, identity) != 0) {
        status = mpt__fail(MPT_ERR_NOT_FOUND, "%s: profile of another device or format", path);
        goto out;
    }
    MPT_TRY(mpt__profile_from_json(json_object_get(root, "profile"), path, p));
out:
    json_decref(root);
    return status;
}

int mpt_profile_cache_dir(char *buf, size_t size)
{
    const char *xdg = mpt__env(MPT_ENV_CACHE_HOME), *home = getenv("HOME");
    if (*xdg)
        return mpt__snprintf(buf, size, "%s/mpt", xdg);
    if (home && *home)
        return mpt__snprintf(buf, size, "%s/.cache/mpt", home);
    return mpt__fail(MPT_ERR_NOT_FOUND, "neither XDG_CACHE_HOME nor HOME is set: no cache directory");
}

/* Cache file of a key: a 64-bit FNV-1a hash of it names the file; the
 * key inside the file guards against collisions. */
int mpt__profile_cache_path(const char *prefix, const char *key, char *buf, size_t size)
{
    char dir[4000];
    uint64_t h = 1469598103934665603ull;
    int status = mpt_profile_cache_dir(dir, sizeof dir);
    if (status < 0)
        return status;
    for (const unsigned char *s = (const unsigned char *)key; *s; s++)
        h = (h ^ *s) * 1099511628211ull;
    return mpt__snprintf(buf, size, "%s/%s-%016llx.json", dir, prefix, (unsigned long long)h);
}

int mpt__profile_cache_entry(const mpt_device_t *dev, char *key, size_t key_size, char *path,
                             size_t path_size)
{
    /* Quick profiles are rough: they never stand in for full ones.  The
     * GEMM provider is part of the key (and so recorded in the file): the
     * same device measures 10-20x apart under CLBlast and the host BLAS. */
    /* So are CLBlast's tuned kernels (mpt-topo --tune): a tuned device is
     * measured anew, and its profile names the tuned routines. */
    const char *tuned = dev->info.clblast_tuning;
    int status = mpt__snprintf(key, key_size, "%s|gemm=%s%s%s%s", dev->identity,
                               dev->info.gemm_provider ? dev->info.gemm_provider : "clblast",
                               tuned && *tuned ? "|clblast_tuned=" : "", tuned ? tuned : "",
                               mpt__profile_quick() ? "|quick" : "");
    return status < 0 ? status : mpt__profile_cache_path("profile", key, path, path_size);
}

int mpt_profile_save_calibration(mpt_device_t *dev, const mpt_calibration_t *cal)
{
    char path[4096], key[2048];
    mpt_profile_t p;
    int status;
    if (!dev || !cal)
        return mpt__fail(MPT_ERR_INVALID, "mpt_profile_save_calibration: NULL argument");
    /* The profile the calibration corrects: the cached one (measured now
     * when there is none, as mpt_cluster_local would). */
    MPT_TRY(mpt_profile_get(dev, MPT_PROFILE_USE_CACHE, &p, NULL));
    MPT_TRY(mpt__profile_cache_entry(dev, key, sizeof key, path, sizeof path));
    p.calibration = *cal;
    MPT_TRY(mpt_profile_save(path, key, &p));
out:
    return status;
}

int mpt_profile_get(mpt_device_t *dev, mpt_profile_mode_t mode, mpt_profile_t *out,
                    int *from_cache)
{
    char path[4096], key[2048], dir[4000];
    int status;
    if (from_cache)
        *from_cache = 0;
    MPT_TRY(mpt__profile_cache_entry(dev, key, sizeof key, path, sizeof path));
    if (mode == MPT_PROFILE_USE_CACHE && mpt_profile_load(path, key, out) == MPT_OK) {
        if (from_cache)
            *from_cache = 1;
        return MPT_OK;
    }
    mpt__clear_error();
    MPT_TRY(mpt_profile_measure(dev, out));
    /* The measurement stands even when the cache cannot keep it (a
     * read-only home, a full disk): warn, and measure again next time. */
    if (mpt_profile_cache_dir(dir, sizeof dir) < 0 || mpt__mkdir_p(dir) < 0 ||
        mpt_profile_save(path, key, out) < 0) {
        mpt__log(MPT_LOG_WARN, "profile of %s measured but not cached: %s", dev->info.name,
                 mpt_last_error());
        mpt__clear_error();
    }
out:
    return status;
}
