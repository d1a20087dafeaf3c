/*
 * tests/check_topo.c: the topology module on a committed hwloc XML of a
 * two-socket server with five GPUs (tests/fixtures/two-socket-gpus.xml):
 * counts, GPU localities, every link class, PCI address forms, bad input,
 * MPT_TOPOLOGY_XML, and binding on the live machine.  Opens no OpenCL
 * device, so it runs forked.
 *
 * The fixture: package 0 = NUMA 0 = PUs 0-3, package 1 = NUMA 1 = PUs 4-7;
 * under package 0, host bridge bus 00 holds root port 00:01.0 -> PCIe switch
 * 01:00.0 -> NVIDIA 03:00.0 (opencl0d0) and 04:00.0 (opencl0d1), and root
 * port 00:02.0 -> AMD 05:00.0 (opencl1d0); a second host bridge holds AMD
 * 11:00.0 (opencl1d1); under package 1, NVIDIA 81:00.0 (opencl0d2).
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define FIXTURE "fixtures/two-socket-gpus.xml"

static mpt_topology_t *load_fixture(void)
{
    mpt_topology_t *topo = NULL;
    ck_assert_mpt_ok(mpt_topology_load(test_path(FIXTURE), &topo));
    ck_assert_ptr_nonnull(topo);
    return topo;
}

static mpt_locality_t locate(const mpt_topology_t *topo, const char *pci)
{
    mpt_locality_t loc;
    memset(&loc, 0x5a, sizeof loc); /* everything must be overwritten */
    ck_assert_mpt_ok(mpt_topology_locate_pci(topo, pci, &loc));
    return loc;
}

/* Asserts that the last error mentions `needle`. */
#define ck_assert_error_mentions(needle)                                       \
    ck_assert_msg(strstr(mpt_last_error(), (needle)) != NULL,                  \
                  "last error \"%s\" does not mention \"%s\"", mpt_last_error(), \
                  (needle))

START_TEST(counts_of_the_fixture)
{
    mpt_topology_t *topo = load_fixture();
    unsigned packages = 0, numa = 0, cores = 0, pus = 0;
    ck_assert_int_eq(mpt_topology_is_live(topo), 0);
    mpt_topology_counts(topo, &packages, &numa, &cores, &pus);
    ck_assert_uint_eq(packages, 2);
    ck_assert_uint_eq(numa, 2);
    ck_assert_uint_eq(cores, 8);
    ck_assert_uint_eq(pus, 8);
    /* Each output is optional. */
    mpt_topology_counts(topo, NULL, NULL, NULL, NULL);
    mpt_topology_counts(topo, NULL, &numa, NULL, NULL);
    ck_assert_uint_eq(numa, 2);
    mpt_topology_free(topo);
    mpt_topology_free(NULL);
}
END_TEST

static const struct {
    const char *pci, *osdev, *cpus;
    int numa_node, package;
} gpus[] = {
    {"0000:03:00.0", "opencl0d0", "0-3", 0, 0}, {"0000:04:00.0", "opencl0d1", "0-3", 0, 0},
    {"0000:05:00.0", "opencl1d0", "0-3", 0, 0}, {"0000:11:00.0", "opencl1d1", "0-3", 0, 0},
    {"0000:81:00.0", "opencl0d2", "4-7", 1, 1},
};
#define N_GPUS (sizeof gpus / sizeof gpus[0])

START_TEST(gpu_localities)
{
    mpt_topology_t *topo = load_fixture();
    mpt_locality_t loc;
    ck_assert_uint_eq(mpt_topology_gpu_count(topo), N_GPUS);
    for (size_t i = 0; i < N_GPUS; i++) {
        memset(&loc, 0x5a, sizeof loc);
        ck_assert_mpt_ok(mpt_topology_gpu(topo, i, &loc));
        ck_assert_str_eq(loc.pci_address, gpus[i].pci);
        ck_assert_str_eq(loc.osdev, gpus[i].osdev);
        ck_assert_str_eq(loc.cpus, gpus[i].cpus);
        ck_assert_int_eq(loc.numa_node, gpus[i].numa_node);
        ck_assert_int_eq(loc.package, gpus[i].package);
        ck_assert_int_eq(loc.node, 0);
        ck_assert_uint_eq(loc.cores, 4);
        ck_assert_uint_eq(loc.pus, 4);

        /* The same locality by address. */
        mpt_locality_t by_address = locate(topo, gpus[i].pci);
        ck_assert_mem_eq(&by_address, &loc, sizeof loc);
    }
    ck_assert_mpt_fails(mpt_topology_gpu(topo, N_GPUS, &loc), MPT_ERR_RANGE);
    ck_assert_mpt_fails(mpt_topology_gpu(topo, (size_t)-1, &loc), MPT_ERR_RANGE);
    mpt_topology_free(topo);
}
END_TEST

START_TEST(link_classes)
{
    mpt_topology_t *topo = load_fixture();
    mpt_locality_t g03 = locate(topo, "0000:03:00.0"), g04 = locate(topo, "0000:04:00.0"),
                   g05 = locate(topo, "0000:05:00.0"), g11 = locate(topo, "0000:11:00.0"),
                   g81 = locate(topo, "0000:81:00.0");
    static const struct {
        int a, b;
        mpt_link_class_t expected;
    } pairs[] = {
        {0, 1, MPT_LINK_PCI_SWITCH},  /* both below switch 01:00.0 */
        {0, 2, MPT_LINK_HOST_BRIDGE}, /* different root ports of host bridge 00 */
        {1, 2, MPT_LINK_HOST_BRIDGE},
        {0, 3, MPT_LINK_SAME_NUMA}, /* another host bridge of package 0 */
        {2, 3, MPT_LINK_SAME_NUMA},
        {0, 4, MPT_LINK_CROSS_SOCKET},
        {3, 4, MPT_LINK_CROSS_SOCKET},
    };
    const mpt_locality_t *all[] = {&g03, &g04, &g05, &g11, &g81};
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
        const mpt_locality_t *a = all[pairs[k].a], *b = all[pairs[k].b];
        ck_assert_msg(mpt_topology_link(topo, a, b) == pairs[k].expected, "%s-%s: %s, expected %s",
                      a->pci_address, b->pci_address,
                      mpt_link_class_name(mpt_topology_link(topo, a, b)),
                      mpt_link_class_name(pairs[k].expected));
        ck_assert_int_eq(mpt_topology_link(topo, b, a), pairs[k].expected); /* symmetric */
    }
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(mpt_topology_link(topo, all[i], all[i]), MPT_LINK_SAME_DEVICE);

    /* Another host: cross-node, whatever else they share (even the address). */
    mpt_locality_t remote = g03;
    remote.node = 1;
    ck_assert_int_eq(mpt_topology_link(topo, &g03, &remote), MPT_LINK_CROSS_NODE);
    ck_assert_int_eq(mpt_topology_link(topo, &remote, &g04), MPT_LINK_CROSS_NODE);
    ck_assert_int_eq(mpt_topology_link(NULL, &remote, &g81), MPT_LINK_CROSS_NODE);

    /* Without a topology only NUMA node and package are known. */
    ck_assert_int_eq(mpt_topology_link(NULL, &g03, &g04), MPT_LINK_SAME_NUMA);
    ck_assert_int_eq(mpt_topology_link(NULL, &g03, &g05), MPT_LINK_SAME_NUMA);
    ck_assert_int_eq(mpt_topology_link(NULL, &g03, &g81), MPT_LINK_CROSS_SOCKET);
    ck_assert_int_eq(mpt_topology_link(NULL, &g03, &g03), MPT_LINK_SAME_DEVICE);
    mpt_locality_t same_package = g03;
    same_package.numa_node = -1;
    ck_assert_int_eq(mpt_topology_link(NULL, &same_package, &g05), MPT_LINK_SAME_NUMA);

    /* A CPU device spanning both sockets: the conservative class. */
    mpt_locality_t host;
    ck_assert_mpt_ok(mpt_topology_locate_host(topo, &host));
    ck_assert_int_eq(mpt_topology_link(topo, &host, &g03), MPT_LINK_CROSS_SOCKET);
    ck_assert_int_eq(mpt_topology_link(topo, &g81, &host), MPT_LINK_CROSS_SOCKET);
    mpt_topology_free(topo);
}
END_TEST

START_TEST(pci_address_forms)
{
    mpt_topology_t *topo = load_fixture();
    mpt_locality_t full = locate(topo, "0000:03:00.0"), loc;
    mpt_locality_t short_form = locate(topo, "03:00.0");
    ck_assert_mem_eq(&short_form, &full, sizeof full);
    ck_assert_str_eq(short_form.pci_address, "0000:03:00.0"); /* normalised */
    loc = locate(topo, "0000:81:00.0");
    ck_assert_str_eq(locate(topo, "81:00.0").pci_address, loc.pci_address);

    ck_assert_mpt_fails(mpt_topology_locate_pci(topo, "0000:42:00.0", &loc), MPT_ERR_NOT_FOUND);
    ck_assert_error_mentions("0000:42:00.0");
    ck_assert_mpt_fails(mpt_topology_locate_pci(topo, "03:00.1", &loc), MPT_ERR_NOT_FOUND);
    /* A bridge is a PCI object but not a PCI device. */
    ck_assert_mpt_fails(mpt_topology_locate_pci(topo, "0000:01:00.0", &loc), MPT_ERR_NOT_FOUND);
    static const char *const malformed[] = {"",        "gpu0",    "03:00",
                                            "0000:03", "03-00-0", "0000:03:00.0 extra"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        ck_assert_mpt_fails(mpt_topology_locate_pci(topo, malformed[i], &loc), MPT_ERR_PARSE);
        ck_assert_error_mentions(malformed[i]);
    }
    mpt_topology_free(topo);
}
END_TEST

/* What sscanf's %x would let through: a 0x prefix, a sign, blanks, and a
 * trailing "x" read as an empty 0x prefix.  An address is hex digits and
 * separators only. */
START_TEST(pci_address_is_strict)
{
    mpt_topology_t *topo = load_fixture();
    mpt_locality_t loc;
    static const char *const malformed[] = {"0000:03:00.0x", "0x3:00.0", "0000:0x03:00.0",
                                            "+3:00.0",       " 03:00.0", "03: 00.0"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        int status = mpt_topology_locate_pci(topo, malformed[i], &loc);
        ck_assert_msg(status == MPT_ERR_PARSE, "'%s' gave %s, expected MPT_ERR_PARSE", malformed[i],
                      mpt_status_name(status));
    }
    mpt_topology_free(topo);
}
END_TEST

START_TEST(host_locality_and_binding_of_another_machine)
{
    mpt_topology_t *topo = load_fixture();
    mpt_locality_t host;
    memset(&host, 0x5a, sizeof host);
    ck_assert_mpt_ok(mpt_topology_locate_host(topo, &host));
    ck_assert_int_eq(host.node, 0);
    ck_assert_int_eq(host.numa_node, -1);
    ck_assert_int_eq(host.package, -1);
    ck_assert_str_eq(host.cpus, "0-7");
    ck_assert_uint_eq(host.cores, 8);
    ck_assert_uint_eq(host.pus, 8);
    ck_assert_str_eq(host.pci_address, "");
    ck_assert_str_eq(host.osdev, "");

    ck_assert_mpt_fails(mpt_topology_bind_thread(topo, &host), MPT_ERR_UNSUPPORTED);
    mpt_locality_t gpu = locate(topo, "03:00.0");
    ck_assert_mpt_fails(mpt_topology_bind_thread(topo, &gpu), MPT_ERR_UNSUPPORTED);
    mpt_topology_free(topo);
}
END_TEST

START_TEST(live_topology_binds)
{
    mpt_topology_t *topo = NULL;
    mpt_locality_t host;
    unsigned packages = 0, numa = 0, cores = 0, pus = 0;
    unsetenv("MPT_TOPOLOGY_XML");
    ck_assert_mpt_ok(mpt_topology_load(NULL, &topo));
    ck_assert_int_eq(mpt_topology_is_live(topo), 1);
    mpt_topology_counts(topo, &packages, &numa, &cores, &pus);
    ck_assert_uint_ge(packages, 1);
    ck_assert_uint_ge(cores, 1);
    ck_assert_uint_ge(pus, cores);
    ck_assert_mpt_ok(mpt_topology_locate_host(topo, &host));
    ck_assert_uint_ge(host.pus, 1);
    ck_assert_uint_le(host.pus, pus);
    ck_assert_str_ne(host.cpus, "");
    ck_assert_mpt_ok(mpt_topology_bind_thread(topo, &host));

    /* A cpuset that is empty or not a list is refused, not bound. */
    mpt_locality_t bad = host;
    snprintf(bad.cpus, sizeof bad.cpus, "%s", "");
    ck_assert_mpt_fails(mpt_topology_bind_thread(topo, &bad), MPT_ERR_PARSE);
    snprintf(bad.cpus, sizeof bad.cpus, "%s", "not-a-list");
    ck_assert_mpt_fails(mpt_topology_bind_thread(topo, &bad), MPT_ERR_PARSE);
    mpt_topology_free(topo);
}
END_TEST

/* Threads of this process, -1 where /proc cannot tell. */
static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* mpt finds GPUs by PCI address: loading the live topology must leave
 * hwloc's OpenCL (and CUDA, NVML...) backends off, since they initialise the
 * drivers in this process, which start threads (PoCL's pthread device does)
 * and make a later fork() hang. */
START_TEST(live_topology_leaves_opencl_alone)
{
    mpt_topology_t *topo = NULL;
    unsetenv("MPT_TOPOLOGY_XML");
    int before = thread_count();
    ck_assert_mpt_ok(mpt_topology_load(NULL, &topo));
    int after = thread_count();
    mpt_topology_free(topo);
    ck_assert_msg(before == after, "loading the live topology started %d threads: an OpenCL "
                  "driver was initialised", after - before);
}
END_TEST

START_TEST(environment_names_the_xml)
{
    mpt_topology_t *topo = NULL;
    char fixture[4096];
    snprintf(fixture, sizeof fixture, "%s", test_path(FIXTURE));
    ck_assert_int_eq(setenv("MPT_TOPOLOGY_XML", fixture, 1), 0);
    ck_assert_mpt_ok(mpt_topology_load(NULL, &topo));
    ck_assert_int_eq(mpt_topology_is_live(topo), 0);
    ck_assert_uint_eq(mpt_topology_gpu_count(topo), N_GPUS);
    mpt_topology_free(topo);

    /* An explicit path wins over the variable. */
    ck_assert_int_eq(setenv("MPT_TOPOLOGY_XML", "/nonexistent/mpt-topology.xml", 1), 0);
    ck_assert_mpt_ok(mpt_topology_load(fixture, &topo));
    ck_assert_uint_eq(mpt_topology_gpu_count(topo), N_GPUS);
    mpt_topology_free(topo);

    /* And a bad variable is reported with its path. */
    topo = (mpt_topology_t *)1;
    ck_assert_mpt_fails(mpt_topology_load(NULL, &topo), MPT_ERR_TOPOLOGY);
    ck_assert_ptr_null(topo);
    ck_assert_error_mentions("/nonexistent/mpt-topology.xml");

    /* Empty means unset: the live machine. */
    ck_assert_int_eq(setenv("MPT_TOPOLOGY_XML", "", 1), 0);
    ck_assert_mpt_ok(mpt_topology_load(NULL, &topo));
    ck_assert_int_eq(mpt_topology_is_live(topo), 1);
    mpt_topology_free(topo);
    unsetenv("MPT_TOPOLOGY_XML");
}
END_TEST

START_TEST(bad_topology_files)
{
    mpt_topology_t *topo = (mpt_topology_t *)1;
    char path[4096];
    unsetenv("MPT_TOPOLOGY_XML");

    snprintf(path, sizeof path, "%s", test_path("fixtures/no-such-topology.xml"));
    ck_assert_mpt_fails(mpt_topology_load(path, &topo), MPT_ERR_TOPOLOGY);
    ck_assert_ptr_null(topo);
    ck_assert_error_mentions(path);

    topo = (mpt_topology_t *)1;
    snprintf(path, sizeof path, "%s", test_path("fixtures/bad-topology.xml"));
    ck_assert_mpt_fails(mpt_topology_load(path, &topo), MPT_ERR_TOPOLOGY);
    ck_assert_ptr_null(topo);
    ck_assert_error_mentions(path);

    /* A file that is not XML at all (a cluster JSON would do; this file is
     * C source) fails the same way. */
    topo = (mpt_topology_t *)1;
    snprintf(path, sizeof path, "%s", test_path("testutil.h"));
    ck_assert_mpt_fails(mpt_topology_load(path, &topo), MPT_ERR_TOPOLOGY);
    ck_assert_ptr_null(topo);
    ck_assert_error_mentions(path);

    ck_assert_mpt_fails(mpt_topology_load(path, NULL), MPT_ERR_INVALID);
}
END_TEST

START_TEST(link_class_names_round_trip)
{
    static const struct {
        mpt_link_class_t c;
        const char *name;
    } classes[] = {
        {MPT_LINK_SAME_DEVICE, "same-device"},   {MPT_LINK_PCI_SWITCH, "pci-switch"},
        {MPT_LINK_HOST_BRIDGE, "host-bridge"},   {MPT_LINK_SAME_NUMA, "same-numa"},
        {MPT_LINK_CROSS_SOCKET, "cross-socket"}, {MPT_LINK_CROSS_NODE, "cross-node"},
        {MPT_LINK_UNKNOWN, "unknown"},
    };
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        mpt_link_class_t back = (mpt_link_class_t)-1;
        ck_assert_str_eq(mpt_link_class_name(classes[i].c), classes[i].name);
        ck_assert_mpt_ok(mpt_link_class_parse(classes[i].name, &back));
        ck_assert_int_eq(back, classes[i].c);
    }
    ck_assert_str_eq(mpt_link_class_name((mpt_link_class_t)99), "unknown");
    ck_assert_str_eq(mpt_link_class_name((mpt_link_class_t)-1), "unknown");

    mpt_link_class_t untouched = MPT_LINK_PCI_SWITCH;
    static const char *const bad[] = {"nvlink", "", "PCI-SWITCH", "pci-switch "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_mpt_fails(mpt_link_class_parse(bad[i], &untouched), MPT_ERR_PARSE);
        ck_assert_int_eq(untouched, MPT_LINK_PCI_SWITCH);
    }
    ck_assert_error_mentions("pci-switch "); /* the detail quotes the name */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("topo");
    TCase *xml = tcase_create("xml");
    tcase_add_test(xml, counts_of_the_fixture);
    tcase_add_test(xml, gpu_localities);
    tcase_add_test(xml, link_classes);
    tcase_add_test(xml, pci_address_forms);
    tcase_add_test(xml, pci_address_is_strict);
    tcase_add_test(xml, host_locality_and_binding_of_another_machine);
    tcase_add_test(xml, environment_names_the_xml);
    tcase_add_test(xml, bad_topology_files);
    tcase_add_test(xml, link_class_names_round_trip);
    suite_add_tcase(s, xml);
    TCase *live = tcase_create("live");
    tcase_add_test(live, live_topology_binds);
    tcase_add_test(live, live_topology_leaves_opencl_alone);
    suite_add_tcase(s, live);
    return test_run(s, 1);
}
