/*
 * tests/check_tools.c: mpt-topo as a program: its --json output parses
 * with jansson, lists both PoCL devices with the documented keys and
 * figures, and loads back as a cluster description; --xml shows another
 * machine's GPUs.  The tool runs as a child process (popen), so this suite
 * never initialises OpenCL itself.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include <jansson.h>

#include "testutil.h"

/* Runs mpt-topo with arguments; returns its parsed stdout (exit 0 asserted). */
static json_t *run_topo_json(const char *env, const char *args)
{
    char cmd[16384];
    json_error_t err;
    const char *topo = getenv("MPT_TOPO");
    snprintf(cmd, sizeof cmd, "%s '%s' %s", env, topo ? topo : "bin/mpt-topo", args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    json_t *root = json_loadf(p, 0, &err);
    int status = pclose(p);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: exit status %d", cmd,
                  status);
    ck_assert_msg(root != NULL, "%s: output is not JSON: %s (line %d)", cmd, err.text, err.line);
    return root;
}

static void check_device_keys(json_t *dev, size_t i, int profiled)
{
    json_int_t index = -1, mem = 0, cu = 0, numa = -2;
    const char *vendor = NULL, *name = NULL, *type = NULL;
    ck_assert_msg(json_unpack(dev, "{s:I,s:s,s:s,s:s,s:I,s:I,s:I}", "index", &index, "vendor",
                              &vendor, "name", &name, "type", &type, "global_mem_bytes", &mem,
                              "compute_units", &cu, "numa_node", &numa) == 0,
                  "device %zu lacks a documented key", i);
    ck_assert_int_eq(index, (json_int_t)i);
    ck_assert_str_eq(type, "cpu");
    ck_assert(strlen(name) > 0 && mem > 0 && cu == 1 && numa >= -1);
    json_t *profile = json_object_get(dev, "profile");
    if (!profiled) {
        ck_assert(json_is_null(profile));
        return;
    }
    double gemm = 0, h2d = 0, d2h = 0;
    ck_assert(json_unpack(profile, "{s:F,s:F,s:F}", "gemm_gflops", &gemm, "h2d_gbps", &h2d,
                          "d2h_gbps", &d2h) == 0);
    ck_assert(gemm > 0 && h2d > 0 && d2h > 0);
}

START_TEST(topo_json_lists_both_devices_with_profiles)
{
    json_t *root = run_topo_json("MPT_PROFILE_QUICK=1", "--json");
    json_t *devices = json_object_get(root, "devices");
    ck_assert_uint_eq(json_array_size(devices), 2);
    for (size_t i = 0; i < 2; i++)
        check_device_keys(json_array_get(devices, i), i, 1);
    json_t *links = json_object_get(root, "links");
    ck_assert_uint_eq(json_array_size(links), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(links, 0), "class")),
                     "same-numa");

    /* The output is a cluster description: it loads back, unchanged. */
    char path[] = "/tmp/mpt-topo-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    json_dumpf(root, f, 0);
    fclose(f);
    mpt_cluster_t *c = NULL;
    ck_assert_mpt_ok(mpt_cluster_load(path, &c));
    ck_assert_uint_eq(mpt_cluster_device_count(c), 2);
    ck_assert_int_eq(mpt_cluster_link(c, 0, 1), MPT_LINK_SAME_NUMA);
    ck_assert_double_eq(
        mpt_cluster_device(c, 1)->profile.gemm_gflops,
        json_real_value(json_object_get(
            json_object_get(json_array_get(devices, 1), "profile"), "gemm_gflops")));
    mpt_cluster_free(c);
    remove(path);
    json_decref(root);
}
END_TEST

START_TEST(topo_json_without_profile_and_with_selection)
{
    json_t *root = run_topo_json("", "--no-profile --json --devices 1");
    json_t *devices = json_object_get(root, "devices");
    ck_assert_uint_eq(json_array_size(devices), 1);
    json_int_t index = -1;
    ck_assert(json_unpack(json_array_get(devices, 0), "{s:I}", "index", &index) == 0);
    ck_assert_int_eq(index, 1); /* the live index, as --devices names it */
    ck_assert(json_is_null(json_object_get(json_array_get(devices, 0), "profile")));
    json_decref(root);
}
END_TEST

START_TEST(topo_xml_shows_another_machine)
{
    char args[8192];
    snprintf(args, sizeof args, "--json --xml '%s'", test_path("fixtures/two-socket-gpus.xml"));
    json_t *root = run_topo_json("OCL_ICD_VENDORS=/nonexistent", args);
    ck_assert_int_eq(json_integer_value(json_object_get(root, "packages")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(root, "numa_nodes")), 2);
    json_t *gpus = json_object_get(root, "gpus");
    ck_assert_uint_eq(json_array_size(gpus), 5);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(gpus, 0), "pci_address")),
                     "0000:03:00.0");
    /* 5 GPUs: 10 pairs; the first pair shares a PCIe switch. */
    json_t *links = json_object_get(root, "links");
    ck_assert_uint_eq(json_array_size(links), 10);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(links, 0), "class")),
                     "pci-switch");
    json_decref(root);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tools");
    TCase *tc = tcase_create("mpt-topo");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, topo_json_lists_both_devices_with_profiles);
    tcase_add_test(tc, topo_json_without_profile_and_with_selection);
    tcase_add_test(tc, topo_xml_shows_another_machine);
    suite_add_tcase(s, tc);
    return test_run(s, 1);
}
