/*
 * tests/check_device.c: enumeration and selection on two PoCL devices
 * (POCL_DEVICES="pthread pthread", set by make check), buffers, embedded
 * kernels, build errors with their log, and MPT_KERNEL_DIR.
 *
 * Runs without fork: a forked child of a process that initialised OpenCL
 * hangs.  Each test opens and frees its own devices.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "device/device.h"
#include "device/gemm.h"
#include "tensor/tensor.h"
#include "testutil.h"

static mpt_devices_t *open_all(void)
{
    mpt_devices_t *set = NULL;
    ck_assert_mpt_ok(mpt_devices_open("", &set));
    return set;
}

START_TEST(enumerates_two_pocl_devices)
{
    mpt_devices_t *set = open_all();
    ck_assert_uint_eq(mpt_devices_count(set), 2);
    ck_assert_uint_eq(mpt_devices_total(set), 2);
    for (size_t i = 0; i < 2; i++) {
        const mpt_device_info_t *d = mpt_device_info(mpt_devices_get(set, i));
        ck_assert_int_eq(d->index, (int)i);
        ck_assert_str_eq(d->vendor_word, "pocl");
        ck_assert_int_eq(d->type, MPT_DEVICE_CPU);
        ck_assert(strlen(d->name) > 0 && strlen(d->driver_version) > 0);
        ck_assert_uint_eq(d->compute_units, 1); /* POCL_MAX_PTHREAD_COUNT=1 */
        ck_assert(d->global_mem_bytes >= d->max_alloc_bytes && d->max_alloc_bytes > 0);
        ck_assert_int_eq(d->unified_memory, 1);
        ck_assert_str_eq(d->pci_address, ""); /* PoCL CPU devices have none */
        ck_assert_ptr_nonnull(strstr(mpt_device_identity(mpt_devices_get(set, i)), d->name));
    }
    ck_assert_ptr_null(mpt_devices_get(set, 2));
    mpt_devices_free(set);
}
END_TEST

static size_t count_selected(const char *spec, int expect_index)
{
    mpt_devices_t *set = NULL;
    ck_assert_mpt_ok(mpt_devices_open(spec, &set));
    size_t n = mpt_devices_count(set);
    if (expect_index >= 0)
        ck_assert_int_eq(mpt_device_info(mpt_devices_get(set, 0))->index, expect_index);
    mpt_devices_free(set);
    return n;
}

START_TEST(selection_by_index_range_and_word)
{
    ck_assert_uint_eq(count_selected("1", 1), 1);
    ck_assert_uint_eq(count_selected("0", 0), 1);
    ck_assert_uint_eq(count_selected("1,0", 1), 2); /* the spec's order, as CUDA_VISIBLE_DEVICES */
    ck_assert_uint_eq(count_selected("1,pocl,0", 1), 2); /* each device once */
    ck_assert_uint_eq(count_selected("0-1", 0), 2);
    ck_assert_uint_eq(count_selected("cpu", 0), 2);
    ck_assert_uint_eq(count_selected("POCL", 0), 2);
    ck_assert_uint_eq(count_selected(" 1 ,", 1), 1);
    setenv("MPT_DEVICES", "1", 1);
    ck_assert_uint_eq(count_selected(NULL, 1), 1);
    unsetenv("MPT_DEVICES");
    ck_assert_uint_eq(count_selected(NULL, 0), 2);
}
END_TEST

START_TEST(selection_errors_name_the_item)
{
    mpt_devices_t *set = (mpt_devices_t *)1;
    ck_assert_mpt_fails(mpt_devices_open("7", &set), MPT_ERR_NO_DEVICE);
    ck_assert_ptr_null(set);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "'7'"));
    ck_assert_mpt_fails(mpt_devices_open("0,gpu", &set), MPT_ERR_NO_DEVICE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "'gpu'"));
    ck_assert_mpt_fails(mpt_devices_open("nvidia", &set), MPT_ERR_NO_DEVICE);
    ck_assert_mpt_fails(mpt_devices_open("2-5", &set), MPT_ERR_NO_DEVICE);
    ck_assert_mpt_fails(mpt_devices_open("fastest", &set), MPT_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "'fastest'"));
    ck_assert_mpt_fails(mpt_devices_open("0", NULL), MPT_ERR_INVALID);
}
END_TEST

START_TEST(buffers_round_trip)
{
    enum { N = 4096 };
    static float a[N], b[N];
    mpt_devices_t *set = open_all();
    mpt_device_t *d0 = mpt_devices_get(set, 0), *d1 = mpt_devices_get(set, 1);
    mpt_buffer_t *x = NULL, *y = NULL, *z = NULL;
    for (int i = 0; i < N; i++)
        a[i] = (float)i * 0.5f - 7.0f;
    ck_assert_mpt_ok(mpt_buffer_create(d0, sizeof a, &x));
    ck_assert_mpt_ok(mpt_buffer_create(d0, sizeof a, &y));
    ck_assert_mpt_ok(mpt_buffer_create(d1, sizeof a, &z));
    ck_assert_uint_eq(mpt_buffer_size(x), sizeof a);
    ck_assert_mpt_ok(mpt_buffer_write(x, 0, a, sizeof a));
    ck_assert_mpt_ok(mpt_buffer_read(x, 0, b, sizeof b));
    ck_assert_mem_eq(a, b, sizeof a);

    /* Offsets, a same-device copy and a cross-device copy (via the host). */
    ck_assert_mpt_ok(mpt_buffer_copy(y, 0, x, 100 * sizeof(float), 200 * sizeof(float)));
    ck_assert_mpt_ok(mpt_buffer_copy(z, 16, y, 0, 200 * sizeof(float)));
    memset(b, 0, sizeof b);
    ck_assert_mpt_ok(mpt_buffer_read(z, 16, b, 200 * sizeof(float)));
    ck_assert_mem_eq(a + 100, b, 200 * sizeof(float));

    /* Map for writing, then read back through the queue. */
    float *p = NULL;
    ck_assert_mpt_ok(mpt_buffer_map(y, 0, 8 * sizeof(float), MPT_MAP_WRITE, (void **)&p));
    for (int i = 0; i < 8; i++)
        p[i] = 100.0f + (float)i;
    ck_assert_mpt_ok(mpt_buffer_unmap(y, p));
    ck_assert_mpt_ok(mpt_buffer_read(y, 0, b, 8 * sizeof(float)));
    for (int i = 0; i < 8; i++)
        ck_assert_float_eq(b[i], 100.0f + (float)i);
    ck_assert_mpt_ok(mpt_buffer_map(x, 4, 4, MPT_MAP_READ, (void **)&p));
    ck_assert_float_eq(p[0], a[1]);
    ck_assert_mpt_ok(mpt_buffer_unmap(x, p));

    /* Out of range and impossible sizes. */
    ck_assert_mpt_fails(mpt_buffer_read(x, sizeof a - 4, b, 8), MPT_ERR_RANGE);
    ck_assert_mpt_fails(mpt_buffer_write(x, sizeof a + 1, a, 0), MPT_ERR_RANGE);
    ck_assert_mpt_fails(mpt_buffer_map(x, 0, 4, 0, (void **)&p), MPT_ERR_INVALID);
    mpt_buffer_t *huge = NULL;
    ck_assert_mpt_fails(mpt_buffer_create(d0, (size_t)mpt_device_info(d0)->max_alloc_bytes + 1,
                                          &huge),
                        MPT_ERR_DEVICE_MEMORY);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "largest allocation"));
    ck_assert_mpt_fails(mpt_buffer_create(d0, 0, &huge), MPT_ERR_INVALID);
    mpt_buffer_free(x);
    mpt_buffer_free(y);
    mpt_buffer_free(z);
    mpt_buffer_free(NULL);
    mpt_devices_free(set);
}
END_TEST

/* Runs kernels/bench.cl's mpt_triad on a device: a = b + s * c. */
static void run_triad(mpt_device_t *dev, const float *b, const float *c, float s, float *a,
                      cl_uint n)
{
    mpt_buffer_t *ba = NULL, *bb = NULL, *bc = NULL;
    cl_kernel k = NULL, again = NULL;
    size_t global = n;
    ck_assert_mpt_ok(mpt_buffer_create(dev, n * sizeof(float), &ba));
    ck_assert_mpt_ok(mpt_buffer_create(dev, n * sizeof(float), &bb));
    ck_assert_mpt_ok(mpt_buffer_create(dev, n * sizeof(float), &bc));
    ck_assert_mpt_ok(mpt_buffer_write(bb, 0, b, n * sizeof(float)));
    ck_assert_mpt_ok(mpt_buffer_write(bc, 0, c, n * sizeof(float)));
    ck_assert_mpt_ok(mpt__device_kernel(dev, "bench", "mpt_triad", &k));
    ck_assert_mpt_ok(mpt__device_kernel(dev, "bench", "mpt_triad", &again));
    ck_assert_ptr_eq(k, again); /* built once, cached */
    clSetKernelArg(k, 0, sizeof(cl_mem), &ba->mem);
    clSetKernelArg(k, 1, sizeof(cl_mem), &bb->mem);
    clSetKernelArg(k, 2, sizeof(cl_mem), &bc->mem);
    clSetKernelArg(k, 3, sizeof s, &s);
    clSetKernelArg(k, 4, sizeof n, &n);
    ck_assert_int_eq(clEnqueueNDRangeKernel(dev->queue, k, 1, NULL, &global, NULL, 0, NULL, NULL),
                     CL_SUCCESS);
    ck_assert_mpt_ok(mpt_device_finish(dev));
    ck_assert_mpt_ok(mpt_buffer_read(ba, 0, a, n * sizeof(float)));
    mpt_buffer_free(ba);
    mpt_buffer_free(bb);
    mpt_buffer_free(bc);
}

START_TEST(embedded_kernel_gives_the_right_numbers)
{
    enum { N = 1000 };
    static float a[N], b[N], c[N];
    const float s = 3.25f;
    mpt_devices_t *set = open_all();
    for (int i = 0; i < N; i++) {
        b[i] = 1.0f + (float)i / 7.0f;
        c[i] = 0.5f + (float)(i % 13);
    }
    for (size_t d = 0; d < mpt_devices_count(set); d++) {
        run_triad(mpt_devices_get(set, d), b, c, s, a, N);
        for (int i = 0; i < N; i++) {
            /* b, c, s > 0: no cancellation.  The device may contract
             * b + s*c into one fma (OpenCL allows it), which differs from
             * the two roundings here by at most one ulp of each: 2^-22
             * relative bounds both. */
            float ref = b[i] + s * c[i];
            ck_assert_msg(fabsf(a[i] - ref) <= 2.4e-7f * ref, "a[%d] = %.9g, expected %.9g", i,
                          a[i], ref);
        }
    }
    mpt_devices_free(set);
}
END_TEST

START_TEST(timing_counts_kernel_and_blas_time)
{
    enum { M = 96 };
    double busy = -1, blas = -1;
    mpt_devices_t *set = open_all();
    mpt_device_t *dev = mpt_devices_get(set, 0);
    mpt__tensor_t t;
    size_t dims[1] = {3 * M * M};
    ck_assert_mpt_ok(mpt__tensor_alloc(dev, 1, dims, &t));
    /* Off: nothing is kept. */
    ck_assert_mpt_ok(mpt__op_fill(&t, 3 * M * M, 0.5f));
    ck_assert_mpt_ok(mpt_device_busy_seconds(dev, &busy, &blas));
    ck_assert(busy == 0 && blas == 0);
    /* On: a kernel of kernels/ counts as busy, not as CLBlast... */
    ck_assert_mpt_ok(mpt_device_set_timing(dev, 1));
    ck_assert_mpt_ok(mpt__op_fill(&t, 3 * M * M, 0.5f));
    ck_assert_mpt_ok(mpt_device_busy_seconds(dev, &busy, &blas));
    ck_assert_msg(busy > 0 && blas == 0, "busy %g, blas %g", busy, blas);
    /* ...a GEMM counts as both; reading again starts from zero. */
    mpt__tensor_t ta = t, tb = t, tc = t;
    tb.off = M * M, tc.off = 2 * M * M;
    ck_assert_mpt_ok(mpt__op_gemm(0, 0, M, M, M, 1.0f, &ta, M, &tb, M, 0.0f, &tc, M));
    ck_assert_mpt_ok(mpt_device_busy_seconds(dev, &busy, &blas));
    ck_assert_msg(blas > 0 && busy >= blas, "busy %g, blas %g", busy, blas);
    ck_assert_mpt_ok(mpt_device_busy_seconds(dev, &busy, NULL));
    ck_assert(busy == 0);
    ck_assert_mpt_ok(mpt_device_set_timing(dev, 0));
    mpt_buffer_free(t.buf);
    mpt_devices_free(set);
}
END_TEST

START_TEST(build_error_carries_the_log)
{
    const char *bad = "__kernel void broken(__global float *x) { x[0] = undeclared_thing; }";
    cl_program p = NULL;
    mpt_devices_t *set = open_all();
    ck_assert_mpt_fails(mpt__program_build_source(mpt_devices_get(set, 0), "broken.cl", bad,
                                                  strlen(bad), NULL, &p),
                        MPT_ERR_BUILD);
    ck_assert_ptr_null(p);
    const char *detail = mpt_last_error();
    ck_assert_ptr_nonnull(strstr(detail, "broken.cl"));
    ck_assert_ptr_nonnull(strstr(detail, "CL_BUILD_PROGRAM_FAILURE"));
    ck_assert_ptr_nonnull(strstr(detail, "build log"));
    ck_assert_ptr_nonnull(strstr(detail, "undeclared_thing")); /* from the compiler's log */
    mpt_devices_free(set);
}
END_TEST

START_TEST(kernel_dir_overrides_embedded_sources)
{
    char dir[] = "/tmp/mpt-kernels-XXXXXX", path[256], cmd[300];
    cl_kernel k = NULL;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/bench.cl", dir);
    FILE *f = fopen(path, "w");
    fputs("__kernel void mpt_triad(__global float *a) { a[0] = 1.0f +; }\n", f);
    fclose(f);
    setenv("MPT_KERNEL_DIR", dir, 1);
    mpt_devices_t *set = open_all();
    ck_assert_mpt_fails(mpt__device_kernel(mpt_devices_get(set, 0), "bench", "mpt_triad", &k),
                        MPT_ERR_BUILD);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "kernels/bench.cl"));
    ck_assert_mpt_fails(mpt__device_kernel(mpt_devices_get(set, 0), "absent", "x", &k),
                        MPT_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "absent.cl"));
    unsetenv("MPT_KERNEL_DIR");
    ck_assert_mpt_fails(mpt__device_kernel(mpt_devices_get(set, 0), "absent", "x", &k),
                        MPT_ERR_NOT_FOUND);
    ck_assert_mpt_fails(mpt__device_kernel(mpt_devices_get(set, 0), "bench", "no_such_kernel", &k),
                        MPT_ERR_OPENCL);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "CL_INVALID_KERNEL_NAME"));
    mpt_devices_free(set);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(no_platform_is_a_clear_error)
{
    char dir[] = "/tmp/mpt-icd-XXXXXX";
    mpt_devices_t *set = NULL;
    ck_assert_ptr_nonnull(mkdtemp(dir));
    /* The ICD loader reads OCL_ICD_VENDORS when it first loads, so this
     * only holds in a process that has not used OpenCL yet: run it first. */
    setenv("OCL_ICD_VENDORS", dir, 1);
    ck_assert_mpt_fails(mpt_devices_open(NULL, &set), MPT_ERR_NO_PLATFORM);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), dir));
    unsetenv("OCL_ICD_VENDORS");
    rmdir(dir);
}
END_TEST

/* Host-BLAS threads (device/gemm_host.c): a device alone gets its compute
 * units up to the usable cores; host-BLAS devices that run together share
 * the cores, however many compute units each has; CLBlast devices do not
 * count.  Devices made by hand: the counts depend only on these fields. */
START_TEST(blas_threads_share_the_cores)
{
    cpu_set_t set;
    ck_assert_int_eq(sched_getaffinity(0, sizeof set, &set), 0);
    int cores = CPU_COUNT(&set);
    mpt_device_t a = {0}, b = {0}, gpu = {0};
    a.gemm_host = b.gemm_host = 1;
    a.info.compute_units = b.info.compute_units = 64, gpu.info.compute_units = 80;
    mpt_device_t *one[1] = {&a}, *two[2] = {&a, &b}, *mixed[2] = {&a, &gpu};
    ck_assert_int_eq(mpt__gemm_threads_for(one, 1), cores < 64 ? cores : 64);
    int half = cores / 2 < 1 ? 1 : cores / 2;
    ck_assert_int_eq(mpt__gemm_threads_for(two, 2), half < 64 ? half : 64);
    ck_assert_int_eq(mpt__gemm_threads_for(mixed, 2), cores < 64 ? cores : 64);
    a.info.compute_units = 1; /* a one-core device: one thread, alone or not */
    ck_assert_int_eq(mpt__gemm_threads_for(one, 1), 1);
    ck_assert_int_eq(mpt__gemm_threads_for(two, 2), 1);
    mpt__gemm_set_threads(two, 2);
    ck_assert_int_eq(a.blas_threads, 1);
    ck_assert_int_eq(b.blas_threads, 1);
    ck_assert_int_eq(gpu.blas_threads, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("device");
    TCase *tc = tcase_create("device");
    tcase_set_timeout(tc, 300); /* cold PoCL compiles take seconds each */
    if (getenv("MPT_TEST_NO_PLATFORM"))
        tcase_add_test(tc, no_platform_is_a_clear_error);
    else {
        tcase_add_test(tc, enumerates_two_pocl_devices);
        tcase_add_test(tc, selection_by_index_range_and_word);
        tcase_add_test(tc, selection_errors_name_the_item);
        tcase_add_test(tc, buffers_round_trip);
        tcase_add_test(tc, embedded_kernel_gives_the_right_numbers);
        tcase_add_test(tc, build_error_carries_the_log);
        tcase_add_test(tc, timing_counts_kernel_and_blas_time);
        tcase_add_test(tc, kernel_dir_overrides_embedded_sources);
        tcase_add_test(tc, blas_threads_share_the_cores);
    }
    suite_add_tcase(s, tc);
    return test_run(s, 0);
}
