/*
 * tests/check_tuning.c: CLBlast tuning per device (lib/device/tuning.h).
 * - the keep-or-drop rule: a candidate that loses (or wins by less than
 *   the margin) leaves CLBlast's defaults;
 * - the tuners' JSON is read as CLBlast 1.5.3 writes it;
 * - a stored tuning file is applied when the device opens: the kept
 *   routine only (a routine marked not kept carries parameters CLBlast
 *   would refuse, so applying it would fail the open), GEMMs through the
 *   tuned kernels still match a double-precision reference, the profile's
 *   cache key records the tuned routines, and files CLBlast refuses or of
 *   another device fail the open naming the file.
 * The end-to-end tuning run (tuners, alternating timings) is
 * tests/clblast_tune.sh.  Every case uses a cache directory of its own:
 * the suites running beside it share tests/cache.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device/gemm.h"
#include "device/tuning.h"
#include "testutil.h"

/* A parameter set CLBlast 1.5.3's Xgemm tuner found valid on PoCL's CPU
 * device (fixed-set variation, 128^3). */
static const char *xgemm_params =
    "{\"GEMMK\": 0, \"KREG\": 1, \"KWG\": 32, \"KWI\": 2, \"MDIMA\": 8, \"MDIMC\": 8, "
    "\"MWG\": 64, \"NDIMB\": 8, \"NDIMC\": 8, \"NWG\": 64, \"SA\": 1, \"SB\": 1, \"STRM\": 0, "
    "\"STRN\": 0, \"VWM\": 4, \"VWN\": 4}";

static char cache[] = "/tmp/mpt-check-tuning-XXXXXX";

static void use_own_cache(void)
{
    static int made;
    if (!made)
        ck_assert_ptr_nonnull(mkdtemp(cache));
    made = 1;
    ck_assert_int_eq(setenv("XDG_CACHE_HOME", cache, 1), 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
}

START_TEST(decide_keeps_only_a_win)
{
    const double d[3] = {1.0, 2.0, 3.0};
    const double faster[3] = {0.5, 1.0, 1.5}, same[3] = {1.0, 2.0, 3.0},
                 slower[3] = {1.1, 2.1, 3.1}, barely[3] = {0.99, 1.98, 2.97};
    ck_assert_int_eq(mpt__tuning_decide(d, faster, 3, 0.02), 1);
    ck_assert_int_eq(mpt__tuning_decide(d, same, 3, 0.02), 0);
    ck_assert_int_eq(mpt__tuning_decide(d, slower, 3, 0.02), 0); /* loses: defaults stay */
    ck_assert_int_eq(mpt__tuning_decide(d, barely, 3, 0.02), 0); /* 1% is inside the margin */
    ck_assert_int_eq(mpt__tuning_decide(d, barely, 3, 0.0), 1);
    /* the total decides: a step spends the sum, whatever one shape does */
    const double d2[2] = {1.0, 1.0}, mixed[2] = {1.2, 0.5};
    ck_assert_int_eq(mpt__tuning_decide(d2, mixed, 2, 0.02), 1);
    ck_assert_int_eq(mpt__tuning_decide(d2, mixed, 0, 0.02), 0); /* nothing measured */
}
END_TEST

START_TEST(reads_tuner_json)
{
    char path[256];
    mpt__clblast_params_t p;
    use_own_cache();
    snprintf(path, sizeof path, "%s/clblast_xgemm_1_32.json", cache);
    write_file(path,
               "{\"kernel_family\": \"xgemm_1\", \"precision\": \"32\", \"best_kernel\": \"Xgemm\","
               " \"best_time\": \"0.15\", \"best_parameters\": \"GEMMK=0 KREG=1 KWG=32 KWI=2 "
               "MDIMA=8 MDIMC=8 MWG=64 NDIMB=8 NDIMC=8 NWG=64 PRECISION=32 SA=1 SB=1 STRM=0 "
               "STRN=0 VWM=4 VWN=4\", \"results\": []}");
    ck_assert_mpt_ok(mpt__tuning_read_tuner_json(path, "Xgemm", &p));
    ck_assert_str_eq(p.routine, "Xgemm");
    ck_assert_uint_eq(p.count, 16); /* PRECISION is the tuner's, not the kernel's */
    ck_assert_str_eq(p.names[0], "GEMMK");
    ck_assert_uint_eq(p.values[0], 0);
    ck_assert_str_eq(p.names[15], "VWN");
    ck_assert_uint_eq(p.values[15], 4);
    ck_assert_double_eq_tol(p.tuner_ms, 0.15, 1e-12);
    ck_assert_str_eq(p.source, "clblast_xgemm_1_32.json");
    /* the direct tuner names its kernel with the layout */
    snprintf(path, sizeof path, "%s/clblast_xgemm_direct_1_32.json", cache);
    write_file(path, "{\"best_kernel\": \"XgemmDirectTN\", \"best_time\": \"0.10\", "
                     "\"best_parameters\": \"KWID=2 MDIMAD=16 PRECISION=32 WGD=32\"}");
    ck_assert_mpt_ok(mpt__tuning_read_tuner_json(path, "XgemmDirect", &p));
    ck_assert_uint_eq(p.count, 3);
    ck_assert_mpt_fails(mpt__tuning_read_tuner_json(path, "Xgemm", &p), MPT_ERR_PARSE);
    write_file(path, "{\"best_kernel\": \"XgemmDirectNN\", \"best_time\": \"0.10\", "
                     "\"best_parameters\": \"KWID=two\"}");
    ck_assert_mpt_fails(mpt__tuning_read_tuner_json(path, "XgemmDirect", &p), MPT_ERR_PARSE);
}
END_TEST

/* c = a b^T (m x n, k) on dev through its GEMM provider, against a double
 * reference.  Tolerance: an fp32 sum of k products errs by at most about
 * k 2^-24 sum|a b|; 4x that bound plus 1e-6 absolute. */
static void gemm_matches_reference(mpt_device_t *dev, size_t m, size_t n, size_t k)
{
    float *a = malloc(m * k * sizeof *a), *b = malloc(n * k * sizeof *b),
          *c = malloc(m * n * sizeof *c);
    mpt_buffer_t *ba = NULL, *bb = NULL, *bc = NULL;
    ck_assert(a && b && c);
    for (size_t i = 0; i < m * k; i++)
        a[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    for (size_t i = 0; i < n * k; i++)
        b[i] = (float)((i * 53) % 97) / 48.0f - 1.0f;
    ck_assert_mpt_ok(mpt_buffer_create(dev, m * k * sizeof *a, &ba));
    ck_assert_mpt_ok(mpt_buffer_create(dev, n * k * sizeof *b, &bb));
    ck_assert_mpt_ok(mpt_buffer_create(dev, m * n * sizeof *c, &bc));
    ck_assert_mpt_ok(mpt_buffer_write(ba, 0, a, m * k * sizeof *a));
    ck_assert_mpt_ok(mpt_buffer_write(bb, 0, b, n * k * sizeof *b));
    ck_assert_mpt_ok(mpt__gemm(dev, 0, 1, m, n, k, 1.0f, ba->mem, 0, k, bb->mem, 0, k, 0.0f,
                               bc->mem, 0, n));
    ck_assert_mpt_ok(mpt_buffer_read(bc, 0, c, m * n * sizeof *c));
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double ref = 0, mag = 0;
            for (size_t p = 0; p < k; p++) {
                ref += (double)a[i * k + p] * b[j * k + p];
                mag += fabs((double)a[i * k + p] * b[j * k + p]);
            }
            double tol = 4.0 * (double)k * 0x1p-24 * mag + 1e-6;
            ck_assert_msg(fabs(c[i * n + j] - ref) <= tol,
                          "%zux%zux%zu: c[%zu,%zu] = %.9g, reference %.9g (tolerance %.3g)", m,
                          n, k, i, j, c[i * n + j], ref, tol);
        }
    mpt_buffer_free(ba), mpt_buffer_free(bb), mpt_buffer_free(bc);
    free(a), free(b), free(c);
}

/* Writes a tuning file (at mpt__tuning_path's path) with the given
 * routines object. */
static void write_tuning(const char *path, const char *identity, const char *routines)
{
    char dir[4200], *text;
    snprintf(dir, sizeof dir, "%s/mpt", cache);
    ck_assert_mpt_ok(mpt__mkdir_p(dir));
    json_t *r = json_loads(routines, 0, NULL);
    ck_assert_ptr_nonnull(r);
    json_t *root = json_pack("{s:i,s:s,s:o}", "mpt_clblast_tuning", 1, "identity", identity,
                             "routines", r);
    ck_assert_ptr_nonnull(text = json_dumps(root, 0));
    write_file(path, text);
    free(text);
    json_decref(root);
}

static mpt_devices_t *open_clblast(void)
{
    mpt_devices_t *set = NULL;
    ck_assert_int_eq(setenv("MPT_BLAS", "clblast", 1), 0);
    int status = mpt_devices_open("0", &set);
    unsetenv("MPT_BLAS");
    ck_assert_msg(status == MPT_OK, "opening device 0: %s", mpt_last_error());
    return set;
}

/* The identity string inside the only profile-*.json of the cache. */
static int profile_identity_has(const char *needle)
{
    char dir[4200], path[4500];
    int found = 0;
    snprintf(dir, sizeof dir, "%s/mpt", cache);
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (strncmp(e->d_name, "profile-", 8) != 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        json_t *root = json_load_file(path, 0, NULL);
        const char *id = json_string_value(json_object_get(root, "identity"));
        found |= id && strstr(id, needle) != NULL;
        json_decref(root);
    }
    closedir(d);
    return found;
}

START_TEST(stored_tuning_applied_at_open)
{
    char routines[2048];
    use_own_cache();
    mpt_devices_t *set = open_clblast();
    mpt_device_t *dev = mpt_devices_get(set, 0);
    char *identity = strdup(mpt_device_identity(dev)), path[4096];
    ck_assert_mpt_ok(mpt__tuning_path(dev, path, sizeof path));
    ck_assert_str_eq(mpt_device_info(dev)->clblast_tuning, ""); /* no file: defaults */
    /* Xgemm kept; XgemmDirect lost its measurement: its parameters, one of
     * ten, would make CLBlast refuse the override if they were applied. */
    snprintf(routines, sizeof routines,
             "{\"Xgemm\": {\"kept\": true, \"parameters\": %s},"
             " \"XgemmDirect\": {\"kept\": false, \"parameters\": {\"WGD\": 8}}}",
             xgemm_params);
    write_tuning(path, identity, routines);
    mpt_devices_free(set);

    set = open_clblast();
    dev = mpt_devices_get(set, 0);
    ck_assert_str_eq(mpt_device_info(dev)->clblast_tuning, "Xgemm");
    gemm_matches_reference(dev, 512, 512, 512); /* CLBlast's indirect kernel: Xgemm */
    gemm_matches_reference(dev, 16, 24, 40);    /* its direct kernel: defaults */
    /* the profile is measured anew under the tuned kernels and says so */
    ck_assert_int_eq(setenv("MPT_PROFILE_QUICK", "1", 1), 0);
    mpt_profile_t prof;
    int cached = 1;
    ck_assert_mpt_ok(mpt_profile_get(dev, MPT_PROFILE_USE_CACHE, &prof, &cached));
    unsetenv("MPT_PROFILE_QUICK");
    ck_assert_int_eq(cached, 0);
    ck_assert(profile_identity_has("|gemm=clblast|clblast_tuned=Xgemm|"));
    mpt_devices_free(set);

    /* off: not applied, and shown so (CLBlast keeps what this process
     * applied above: it has no call to restore its defaults; a new
     * process with MPT_CLBLAST_TUNING=off runs them) */
    ck_assert_int_eq(setenv("MPT_CLBLAST_TUNING", "off", 1), 0);
    set = open_clblast();
    ck_assert_str_eq(mpt_device_info(mpt_devices_get(set, 0))->clblast_tuning, "");
    mpt_devices_free(set);
    unsetenv("MPT_CLBLAST_TUNING");
    /* the host provider runs no CLBlast GEMM: nothing to show */
    ck_assert_int_eq(setenv("MPT_BLAS", "host", 1), 0);
    ck_assert_mpt_ok(mpt_devices_open("0", &set));
    unsetenv("MPT_BLAS");
    ck_assert_ptr_null(mpt_device_info(mpt_devices_get(set, 0))->clblast_tuning);
    mpt_devices_free(set);
    free(identity);
}
END_TEST

START_TEST(bad_tuning_files_fail_the_open)
{
    mpt_devices_t *set = NULL;
    use_own_cache();
    set = open_clblast();
    mpt_device_t *dev = mpt_devices_get(set, 0);
    char *identity = strdup(mpt_device_identity(dev));
    char path[4096];
    ck_assert_mpt_ok(mpt__tuning_path(dev, path, sizeof path));
    mpt_devices_free(set);
    ck_assert_int_eq(setenv("MPT_BLAS", "clblast", 1), 0);
    /* a kept routine CLBlast refuses: the override reaches CLBlast */
    write_tuning(path, identity, "{\"Xgemm\": {\"kept\": true, \"parameters\": {\"MWG\": 64}}}");
    ck_assert_mpt_fails(mpt_devices_open("0", &set), MPT_ERR_BLAS);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), path));
    /* another device's file */
    write_tuning(path, "another|device", "{}");
    ck_assert_mpt_fails(mpt_devices_open("0", &set), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "another device"));
    /* an unknown routine */
    write_tuning(path, identity, "{\"Xgemv\": {\"kept\": true, \"parameters\": {}}}");
    ck_assert_mpt_fails(mpt_devices_open("0", &set), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "Xgemv"));
    /* not JSON */
    write_file(path, "{\"mpt_clblast_tuning\": 1,");
    ck_assert_mpt_fails(mpt_devices_open("0", &set), MPT_ERR_PARSE);
    unsetenv("MPT_BLAS");
    unlink(path);
    free(identity);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tuning");
    TCase *tc = tcase_create("tuning");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, decide_keeps_only_a_win);
    tcase_add_test(tc, reads_tuner_json);
    tcase_add_test(tc, bad_tuning_files_fail_the_open);
    tcase_add_test(tc, stored_tuning_applied_at_open);
    suite_add_tcase(s, tc);
    return test_run(s, 0);
}
