/*
 * tests/check_profile.c: the profile cache (JSON round trip, identity keys,
 * malformed files, cache directory), measuring a PoCL device, and CLBlast
 * GEMMs running concurrently on two devices against a CPU reference.
 * Runs without fork (OpenCL).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <clblast_c.h>

#include "device/device.h"
#include "testutil.h"

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mpt-profile-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Field by field: the struct has padding that memcmp would compare. */
static int profiles_equal(const mpt_profile_t *p, const mpt_profile_t *q)
{
    for (int i = 0; i < MPT_PROFILE_GEMM_SHAPES; i++)
        if (p->gemm[i].m != q->gemm[i].m || p->gemm[i].n != q->gemm[i].n ||
            p->gemm[i].k != q->gemm[i].k || p->gemm[i].gflops != q->gemm[i].gflops)
            return 0;
    return p->gemm_gflops == q->gemm_gflops && p->mem_gbps == q->mem_gbps &&
           p->h2d_gbps == q->h2d_gbps && p->d2h_gbps == q->d2h_gbps &&
           p->launch_us == q->launch_us && p->measured_at == q->measured_at;
}

static mpt_profile_t sample_profile(void)
{
    mpt_profile_t p = {.gemm = {{256, 256, 256, 3.5},
                                {1024, 1024, 1024, 6.25},
                                {2048, 2048, 2048, 6.75},
                                {4096, 64, 1024, 4.1}},
                       .gemm_gflops = 6.75,
                       .mem_gbps = 17.8,
                       .h2d_gbps = 12.1,
                       .d2h_gbps = 9.4,
                       .launch_us = 55.9,
                       .measured_at = 1795000000.5};
    return p;
}

START_TEST(cache_file_round_trip)
{
    char path[128];
    mpt_profile_t p = sample_profile(), q;
    make_tmpdir();
    snprintf(path, sizeof path, "%s/p.json", tmpdir);
    ck_assert_mpt_ok(mpt_profile_save(path, "vendor|dev|1.0||cu1", &p));
    ck_assert_mpt_ok(mpt_profile_load(path, "vendor|dev|1.0||cu1", &q));
    /* jansson prints doubles with 17 significant digits: exact round trip. */
    ck_assert(profiles_equal(&p, &q));
    ck_assert_mpt_fails(mpt_profile_load(path, "vendor|other|1.0||cu1", &q), MPT_ERR_NOT_FOUND);

    FILE *f = fopen(path, "w");
    fputs("{\"mpt_profile\": 2, \"identity\": \"vendor|dev|1.0||cu1\", \"profile\": "
          "{\"gemm_gflops\": -3}}",
          f);
    fclose(f);
    ck_assert_mpt_fails(mpt_profile_load(path, "vendor|dev|1.0||cu1", &q), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "gemm_gflops"));
    f = fopen(path, "w");
    fputs("not json", f);
    fclose(f);
    ck_assert_mpt_fails(mpt_profile_load(path, "x", &q), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), path));
    remove_tmpdir();
}
END_TEST

START_TEST(cache_dir_follows_xdg_then_home)
{
    char buf[256], *old = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    setenv("XDG_CACHE_HOME", "/x/cache", 1);
    ck_assert_mpt_ok(mpt_profile_cache_dir(buf, sizeof buf));
    ck_assert_str_eq(buf, "/x/cache/mpt");
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/home/u", 1);
    ck_assert_mpt_ok(mpt_profile_cache_dir(buf, sizeof buf));
    ck_assert_str_eq(buf, "/home/u/.cache/mpt");
    ck_assert_mpt_fails(mpt_profile_cache_dir(buf, 8), MPT_ERR_RANGE);
    if (old)
        setenv("XDG_CACHE_HOME", old, 1);
    free(old);
}
END_TEST

START_TEST(measure_then_read_from_cache)
{
    mpt_devices_t *set = NULL;
    mpt_profile_t p, q;
    int cached = -1;
    make_tmpdir();
    setenv("XDG_CACHE_HOME", tmpdir, 1);
    setenv("MPT_PROFILE_QUICK", "1", 1); /* small sizes: the figures are rough */
    ck_assert_mpt_ok(mpt_devices_open("0", &set));
    mpt_device_t *dev = mpt_devices_get(set, 0);
    ck_assert_mpt_ok(mpt_profile_get(dev, MPT_PROFILE_USE_CACHE, &p, &cached));
    ck_assert_int_eq(cached, 0);
    /* Plausibility, not speed: every figure measured, positive and finite,
     * and the best GEMM rate is the best of the points. */
    double best = 0;
    for (int i = 0; i < MPT_PROFILE_GEMM_SHAPES; i++) {
        ck_assert(p.gemm[i].m > 0 && p.gemm[i].gflops > 0 && isfinite(p.gemm[i].gflops));
        best = fmax(best, p.gemm[i].gflops);
    }
    ck_assert(p.gemm_gflops == best);
    ck_assert(p.mem_gbps > 0 && p.h2d_gbps > 0 && p.d2h_gbps > 0 && p.launch_us > 0);
    ck_assert(p.measured_at > 1.7e9);

    ck_assert_mpt_ok(mpt_profile_get(dev, MPT_PROFILE_USE_CACHE, &q, &cached));
    ck_assert_int_eq(cached, 1);
    ck_assert(profiles_equal(&p, &q));
    ck_assert_mpt_ok(mpt_profile_get(dev, MPT_PROFILE_REFRESH, &q, &cached));
    ck_assert_int_eq(cached, 0);
    ck_assert(q.measured_at >= p.measured_at);

    /* A quick profile never stands in for a full one: its cache key says
     * it is quick, so a full lookup cannot find it. */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "grep -q '|quick\"' %s/mpt/profile-*.json", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
    unsetenv("MPT_PROFILE_QUICK");
    mpt_devices_free(set);
    remove_tmpdir();
}
END_TEST

/* ---- concurrent CLBlast on two devices ---------------------------------- */

enum { GM = 48, GN = 40, GK = 56, REPS = 10 };

typedef struct {
    mpt_device_t *dev;
    float a[GM * GK], b[GK * GN], c[GM * GN];
    int ok;
    char why[256];
} gemm_job;

static void *gemm_worker(void *arg)
{
    gemm_job *j = arg;
    mpt_buffer_t *a = NULL, *b = NULL, *c = NULL;
    j->ok = mpt_buffer_create(j->dev, sizeof j->a, &a) == MPT_OK &&
            mpt_buffer_create(j->dev, sizeof j->b, &b) == MPT_OK &&
            mpt_buffer_create(j->dev, sizeof j->c, &c) == MPT_OK &&
            mpt_buffer_write(a, 0, j->a, sizeof j->a) == MPT_OK &&
            mpt_buffer_write(b, 0, j->b, sizeof j->b) == MPT_OK;
    for (int r = 0; j->ok && r < REPS; r++) {
        cl_event ev = NULL;
        /* As every CLBlast call of mpt is made (mpt__device_blas_begin and
         * _done): the routine's first call on the device under the
         * first-call lock. */
        mpt__device_blas_enter(j->dev, MPT__BLAS_SGEMM);
        CLBlastStatusCode s =
            CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo, GM, GN,
                         GK, 1.0f, a->mem, 0, GK, b->mem, 0, GN, 0.0f, c->mem, 0, GN,
                         &j->dev->queue, &ev);
        mpt__device_blas_leave(j->dev, s == CLBlastSuccess);
        if (s != CLBlastSuccess) {
            snprintf(j->why, sizeof j->why, "CLBlastSgemm status %d on rep %d", (int)s, r);
            j->ok = 0;
            break;
        }
        clWaitForEvents(1, &ev);
        clReleaseEvent(ev);
    }
    if (j->ok)
        j->ok = mpt_buffer_read(c, 0, j->c, sizeof j->c) == MPT_OK;
    mpt_buffer_free(a);
    mpt_buffer_free(b);
    mpt_buffer_free(c);
    return NULL;
}

START_TEST(concurrent_gemm_on_two_devices)
{
    static gemm_job jobs[2];
    pthread_t t[2];
    mpt_devices_t *set = NULL;
    ck_assert_mpt_ok(mpt_devices_open("", &set));
    ck_assert_uint_eq(mpt_devices_count(set), 2);
    for (int d = 0; d < 2; d++) {
        jobs[d].dev = mpt_devices_get(set, d);
        for (int i = 0; i < GM * GK; i++)
            jobs[d].a[i] = (float)((i * 7 + d) % 11) - 5.0f;
        for (int i = 0; i < GK * GN; i++)
            jobs[d].b[i] = (float)((i * 3 + 2 * d) % 9) * 0.25f - 1.0f;
    }
    /* As the engine will: warm CLBlast on each device from this thread
     * (nothing on a device whose GEMMs run on the host BLAS, which never
     * calls CLBlast's GEMM: then the first-call lock is what keeps the
     * two threads' first calls apart), then run GEMMs on both devices at
     * once (see lib/device/blas.c). */
    for (int d = 0; d < 2; d++)
        ck_assert_mpt_ok(mpt__device_blas_warmup(jobs[d].dev));
    for (int d = 0; d < 2; d++)
        pthread_create(&t[d], NULL, gemm_worker, &jobs[d]);
    for (int d = 0; d < 2; d++)
        pthread_join(t[d], NULL);
    for (int d = 0; d < 2; d++) {
        ck_assert_msg(jobs[d].ok, "device %d: %s %s", d, jobs[d].why, mpt_last_error());
        for (int i = 0; i < GM; i++)
            for (int j = 0; j < GN; j++) {
                double ref = 0;
                for (int k = 0; k < GK; k++)
                    ref += (double)jobs[d].a[i * GK + k] * jobs[d].b[k * GN + j];
                /* Inputs are multiples of 0.25 below 6 in magnitude: every
                 * product and partial sum (< 2^14) is exact in fp32, so the
                 * device result must equal the double reference exactly. */
                ck_assert_msg(jobs[d].c[i * GN + j] == (float)ref, "device %d c[%d,%d]=%g want %g",
                              d, i, j, jobs[d].c[i * GN + j], ref);
            }
    }
    mpt_devices_free(set);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("profile");
    TCase *tc = tcase_create("profile");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, cache_file_round_trip);
    tcase_add_test(tc, cache_dir_follows_xdg_then_home);
    tcase_add_test(tc, concurrent_gemm_on_two_devices);
    tcase_add_test(tc, measure_then_read_from_cache);
    suite_add_tcase(s, tc);
    return test_run(s, 0);
}
