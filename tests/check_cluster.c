/*
 * tests/check_cluster.c: cluster description files (docs/cluster.md):
 * loading one whose node has an hwloc XML (links from the PCI tree), one of
 * two nodes without XML (links from NUMA node and node, a "links" override,
 * the network), defaults, malformed files (each names the file and the
 * key), the JSON round trip, the example clusters in models/clusters/, and
 * the job's cluster of a one-process world (train/world.c).  Opens no
 * OpenCL device, so it runs forked.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

/* Asserts that the last error mentions `needle`. */
#define ck_assert_error_mentions(needle)                                       \
    ck_assert_msg(strstr(mpt_last_error(), (needle)) != NULL,                  \
                  "last error \"%s\" does not mention \"%s\"", mpt_last_error(), \
                  (needle))

static mpt_cluster_t *load(const char *path)
{
    mpt_cluster_t *c = NULL;
    ck_assert_mpt_ok(mpt_cluster_load(path, &c));
    ck_assert_ptr_nonnull(c);
    return c;
}

static const char *model_path(const char *name)
{
    static char buf[4096];
    const char *dir = getenv("MPT_TESTS_SRCDIR");
    snprintf(buf, sizeof buf, "%s/../models/clusters/%s", dir ? dir : "tests", name);
    return buf;
}

static const mpt_cluster_device_t *device(const mpt_cluster_t *c, size_t i)
{
    const mpt_cluster_device_t *d = mpt_cluster_device(c, i);
    ck_assert_msg(d != NULL, "no device %zu", i);
    ck_assert_int_eq(d->info.index, (int)i);
    return d;
}

/* Asserts the whole link matrix: `expected` lists the upper triangle,
 * row by row; the diagonal is same-device and the matrix symmetric. */
static void assert_links(const mpt_cluster_t *c, const mpt_link_class_t *expected)
{
    size_t n = mpt_cluster_device_count(c), k = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(mpt_cluster_link(c, i, i), MPT_LINK_SAME_DEVICE);
        for (size_t j = i + 1; j < n; j++, k++) {
            ck_assert_msg(mpt_cluster_link(c, i, j) == expected[k], "link %zu-%zu: %s, expected %s",
                          i, j, mpt_link_class_name(mpt_cluster_link(c, i, j)),
                          mpt_link_class_name(expected[k]));
            ck_assert_int_eq(mpt_cluster_link(c, j, i), expected[k]);
        }
    }
}

START_TEST(node_with_topology_xml)
{
    mpt_cluster_t *c = load(test_path("fixtures/cluster-xml.json"));
    double gbps = 0, latency = 0;
    ck_assert_str_eq(mpt_cluster_name(c), "two-socket-gpus");
    ck_assert_uint_eq(mpt_cluster_node_count(c), 1);
    ck_assert_uint_eq(mpt_cluster_device_count(c), 6);
    mpt_cluster_network(c, &gbps, &latency); /* the defaults */
    ck_assert_double_eq(gbps, 12.5);
    ck_assert_double_eq(latency, 5.0);
    mpt_cluster_network(c, NULL, NULL);

    /* Every field of a fully described device. */
    const mpt_cluster_device_t *d = device(c, 0);
    ck_assert_str_eq(d->info.name, "NVIDIA A100-PCIE-40GB");
    ck_assert_str_eq(d->info.vendor, "NVIDIA Corporation");
    ck_assert_str_eq(d->info.vendor_word, "nvidia");
    ck_assert_str_eq(d->info.platform, "NVIDIA CUDA");
    ck_assert_str_eq(d->info.device_version, "");
    ck_assert_str_eq(d->info.driver_version, "");
    ck_assert_str_eq(d->info.pci_address, "0000:03:00.0");
    ck_assert_int_eq(d->info.type, MPT_DEVICE_GPU);
    ck_assert_uint_eq(d->info.global_mem_bytes, 42297786368ull);
    ck_assert_uint_eq(d->info.max_alloc_bytes, 10574446592ull);
    ck_assert_uint_eq(d->info.local_mem_bytes, 49152);
    ck_assert_uint_eq(d->info.compute_units, 108);
    ck_assert_uint_eq(d->info.clock_mhz, 1410);
    ck_assert_int_eq(d->info.unified_memory, 0);
    ck_assert_int_eq(d->info.fp16, 1);
    ck_assert_int_eq(d->info.fp64, 1);
    ck_assert_double_eq(d->profile.gemm_gflops, 18500.0);
    ck_assert_double_eq(d->profile.mem_gbps, 1320.0);
    ck_assert_double_eq(d->profile.h2d_gbps, 11.5);
    ck_assert_double_eq(d->profile.d2h_gbps, 12.25);
    ck_assert_double_eq(d->profile.launch_us, 7.5);
    ck_assert_double_eq(d->profile.measured_at, 1700000000.0);
    ck_assert_uint_eq(d->profile.gemm[3].m, 4096);
    ck_assert_uint_eq(d->profile.gemm[3].n, 64);
    ck_assert_uint_eq(d->profile.gemm[3].k, 1024);
    ck_assert_double_eq(d->profile.gemm[3].gflops, 5400.25);
    ck_assert_double_eq(d->profile.gemm[0].gflops, 2100.5);

    /* Locality comes from the XML.  Device 1 claims NUMA node 1 in the file
     * and is given with the short PCI form: the XML wins and the locality's
     * address is normalised. */
    static const struct {
        const char *pci, *osdev, *cpus;
        int numa_node, package;
    } where[] = {
        {"0000:03:00.0", "opencl0d0", "0-3", 0, 0}, {"0000:04:00.0", "opencl0d1", "0-3", 0, 0},
        {"0000:05:00.0", "opencl1d0", "0-3", 0, 0}, {"0000:11:00.0", "opencl1d1", "0-3", 0, 0},
        {"0000:81:00.0", "opencl0d2", "4-7", 1, 1},
    };
    for (size_t i = 0; i < 5; i++) {
        const mpt_locality_t *l = &device(c, i)->locality;
        ck_assert_int_eq(l->node, 0);
        ck_assert_str_eq(l->pci_address, where[i].pci);
        ck_assert_str_eq(l->osdev, where[i].osdev);
        ck_assert_str_eq(l->cpus, where[i].cpus);
        ck_assert_int_eq(l->numa_node, where[i].numa_node);
        ck_assert_int_eq(l->package, where[i].package);
        ck_assert_uint_eq(l->cores, 4);
        ck_assert_uint_eq(l->pus, 4);
    }
    ck_assert_str_eq(device(c, 1)->info.pci_address, "04:00.0"); /* as written */

    /* Defaults of a device that gives only the required fields. */
    d = device(c, 1);
    ck_assert_uint_eq(d->info.max_alloc_bytes, d->info.global_mem_bytes);
    ck_assert_uint_eq(d->info.local_mem_bytes, 0);
    ck_assert_uint_eq(d->info.compute_units, 1);
    ck_assert_uint_eq(d->info.clock_mhz, 0);
    ck_assert_int_eq(d->info.fp16, 0);
    ck_assert_int_eq(d->info.fp64, 0);
    ck_assert_double_eq(d->profile.launch_us, 0);
    ck_assert_double_eq(d->profile.measured_at, 0);
    ck_assert_uint_eq(d->profile.gemm[0].m, 2048);
    ck_assert_double_eq(d->profile.gemm[0].gflops, 18400.0);
    ck_assert_uint_eq(d->profile.gemm[1].m, 0); /* points not given stay empty */
    d = device(c, 2);
    ck_assert_str_eq(d->info.vendor_word, "amd");
    d = device(c, 3);
    ck_assert_str_eq(d->info.platform, "AMD Accelerated Parallel Processing");

    /* A CPU device (no PCI address) keeps the locality written in the file. */
    d = device(c, 5);
    ck_assert_int_eq(d->info.type, MPT_DEVICE_CPU);
    ck_assert_str_eq(d->info.vendor_word, "pocl");
    ck_assert_int_eq(d->info.unified_memory, 1);
    ck_assert_int_eq(d->locality.numa_node, -1);
    ck_assert_int_eq(d->locality.package, -1);
    ck_assert_str_eq(d->locality.cpus, "0-7");
    ck_assert_uint_eq(d->locality.cores, 8);
    ck_assert_uint_eq(d->locality.pus, 8);
    ck_assert_str_eq(d->locality.pci_address, "");

    const mpt_link_class_t S = MPT_LINK_PCI_SWITCH, H = MPT_LINK_HOST_BRIDGE,
                           N = MPT_LINK_SAME_NUMA, X = MPT_LINK_CROSS_SOCKET;
    const mpt_link_class_t expected[15] = {
        S, H, N, X, X, /* 0: 03:00.0 with 04, 05, 11, 81, cpu */
        H, N, X, X,    /* 1: 04:00.0 */
        N, X, X,       /* 2: 05:00.0 */
        X, X,          /* 3: 11:00.0 */
        X,             /* 4: 81:00.0 with the CPU spanning both sockets */
    };
    assert_links(c, expected);
    ck_assert_int_eq(mpt_cluster_link(c, 0, 6), MPT_LINK_UNKNOWN);
    ck_assert_int_eq(mpt_cluster_link(c, 6, 6), MPT_LINK_UNKNOWN);
    ck_assert_ptr_null(mpt_cluster_device(c, 6));
    mpt_cluster_free(c);
    mpt_cluster_free(NULL);
}
END_TEST

START_TEST(two_nodes_without_xml)
{
    mpt_cluster_t *c = load(test_path("fixtures/cluster-two-nodes.json"));
    double gbps = 0, latency = 0;
    ck_assert_str_eq(mpt_cluster_name(c), "two-nodes");
    ck_assert_uint_eq(mpt_cluster_node_count(c), 2);
    ck_assert_uint_eq(mpt_cluster_device_count(c), 5);
    mpt_cluster_network(c, &gbps, &latency);
    ck_assert_double_eq(gbps, 25.0);
    ck_assert_double_eq(latency, 2.5);

    const mpt_locality_t *l = &device(c, 2)->locality;
    ck_assert_int_eq(l->node, 0);
    ck_assert_int_eq(l->numa_node, 1);
    ck_assert_int_eq(l->package, 1);
    ck_assert_str_eq(l->cpus, "16-31");
    ck_assert_uint_eq(l->cores, 16);
    ck_assert_uint_eq(l->pus, 16);
    ck_assert_str_eq(l->pci_address, "0000:b1:00.0");
    ck_assert_str_eq(l->osdev, "");
    l = &device(c, 4)->locality;
    ck_assert_int_eq(l->node, 1);
    ck_assert_uint_eq(l->pus, 64);
    ck_assert_str_eq(device(c, 4)->info.vendor_word, "pocl");

    const mpt_link_class_t S = MPT_LINK_PCI_SWITCH, X = MPT_LINK_CROSS_SOCKET,
                           R = MPT_LINK_CROSS_NODE;
    const mpt_link_class_t expected[10] = {
        S, X, R, R, /* 0 with 1 (same NUMA node, overridden as "b": 1, "a": 0), 2, 3, 4 */
        X, R, R,    /* 1 */
        R, R,       /* 2 */
        X,          /* 3 with 4 on node 1: a NUMA-0 GPU and a CPU spanning both */
    };
    assert_links(c, expected);
    /* Devices 0 and 3 share a PCI address, but on different hosts. */
    ck_assert_str_eq(device(c, 0)->info.pci_address, device(c, 3)->info.pci_address);
    mpt_cluster_free(c);
}
END_TEST

START_TEST(minimal_file_defaults)
{
    mpt_cluster_t *c = load(test_path("fixtures/cluster-minimal.json"));
    double gbps = 0, latency = 0;
    ck_assert_str_eq(mpt_cluster_name(c), "");
    ck_assert_uint_eq(mpt_cluster_node_count(c), 1);
    ck_assert_uint_eq(mpt_cluster_device_count(c), 2);
    mpt_cluster_network(c, &gbps, &latency);
    ck_assert_double_eq(gbps, 12.5);
    ck_assert_double_eq(latency, 5.0);
    const mpt_cluster_device_t *d = device(c, 0);
    ck_assert_str_eq(d->info.vendor, "unknown");
    ck_assert_str_eq(d->info.vendor_word, "other");
    ck_assert_str_eq(d->info.platform, "");
    ck_assert_str_eq(d->info.pci_address, "");
    ck_assert_int_eq(d->info.type, MPT_DEVICE_ACCELERATOR);
    ck_assert_int_eq(d->locality.node, 0);
    ck_assert_int_eq(d->locality.numa_node, -1);
    ck_assert_int_eq(d->locality.package, -1);
    ck_assert_uint_eq(d->locality.cores, 0);
    ck_assert_str_eq(d->locality.cpus, "");
    ck_assert_int_eq(device(c, 1)->info.type, MPT_DEVICE_OTHER);
    ck_assert_ptr_null(d->info.gemm_provider); /* not given: unknown */
    /* Reals that take 17 digits; the round trip test expects them back
     * bit for bit. */
    const mpt_profile_t *p = &device(c, 1)->profile;
    ck_assert_double_eq(p->gemm_gflops, 0.1);
    ck_assert_double_eq(p->mem_gbps, 10.0 / 3.0);
    ck_assert_double_eq(p->h2d_gbps, 1234.5678901234567);
    ck_assert_double_eq(p->d2h_gbps, 0.0010000000000000002); /* 17 digits, within bounds */
    ck_assert_double_eq(p->launch_us, 2.2250738585072014e-308);
    /* Nothing known about where they sit: the conservative class. */
    ck_assert_int_eq(mpt_cluster_link(c, 0, 1), MPT_LINK_CROSS_SOCKET);

    char *text = NULL;
    ck_assert_mpt_ok(mpt_cluster_to_json(c, &text));
    ck_assert_ptr_nonnull(strstr(text, "\"mpt_cluster\": 1"));
    ck_assert_ptr_nonnull(strstr(text, "\"name\": \"node0\"")); /* the default node name */
    free(text);
    mpt_cluster_free(c);
}
END_TEST

/* ---- malformed files ---------------------------------------------------- */

static const struct {
    const char *file;
    int code;
    const char *key; /* what the detail must mention besides the file */
} bad_files[] = {
    {"cluster-bad-not-json.json", MPT_ERR_PARSE, "malformed JSON"},
    {"cluster-bad-no-devices.json", MPT_ERR_PARSE, "devices"},
    {"cluster-bad-no-name.json", MPT_ERR_PARSE, "devices[1].name"},
    {"cluster-bad-type.json", MPT_ERR_PARSE, "devices[0].type"},
    {"cluster-bad-zero-mem.json", MPT_ERR_PARSE, "devices[0].global_mem_bytes"},
    {"cluster-bad-negative-mem.json", MPT_ERR_PARSE, "devices[1].global_mem_bytes"},
    {"cluster-bad-max-alloc.json", MPT_ERR_PARSE, "devices[1].max_alloc_bytes"},
    {"cluster-bad-max-alloc.json", MPT_ERR_PARSE, "above global_mem_bytes"},
    /* found by fuzzing: 2^32 wrapped to 0 in the unsigned field (tests/fuzz) */
    {"cluster-bad-compute-units.json", MPT_ERR_PARSE, "devices[0].compute_units"},
    {"cluster-bad-gemm-shape.json", MPT_ERR_PARSE, "devices[0].profile.gemm[0]"},
    {"cluster-bad-no-gemm.json", MPT_ERR_PARSE, "gemm_gflops"},
    {"cluster-bad-no-gemm.json", MPT_ERR_PARSE, "devices[0].profile"},
    /* what mpt-topo --json --no-profile writes: planning needs figures */
    {"cluster-bad-null-profile.json", MPT_ERR_PARSE, "devices[0].profile"},
    {"cluster-bad-node.json", MPT_ERR_PARSE, "devices[2].node"},
    {"cluster-bad-link-class.json", MPT_ERR_PARSE, "links[0].class"},
    {"cluster-bad-link-class.json", MPT_ERR_PARSE, "nvlink"},
    {"cluster-bad-link-index.json", MPT_ERR_PARSE, "links[1]"},
    {"cluster-bad-network.json", MPT_ERR_PARSE, "network"},
    {"cluster-bad-missing-xml.json", MPT_ERR_TOPOLOGY, "nodes[0].topology_xml"},
    {"cluster-bad-missing-xml.json", MPT_ERR_TOPOLOGY, "no-such-topology.xml"},
    {"cluster-bad-pci.json", MPT_ERR_NOT_FOUND, "devices[1].pci_address"},
    {"cluster-bad-pci.json", MPT_ERR_NOT_FOUND, "0000:42:00.0"},
    {"cluster-bad-gemm-provider.json", MPT_ERR_PARSE, "devices[0].gemm_provider"},
    {"no-such-cluster.json", MPT_ERR_NOT_FOUND, "no-such-cluster.json"},
};

START_TEST(malformed_files_name_file_and_key)
{
    char path[4096], name[256];
    snprintf(name, sizeof name, "fixtures/%s", bad_files[_i].file);
    snprintf(path, sizeof path, "%s", test_path(name));
    mpt_cluster_t *c = (mpt_cluster_t *)1;
    int status = mpt_cluster_load(path, &c);
    ck_assert_msg(status == bad_files[_i].code, "%s: %s, expected %s (detail: %s)",
                  bad_files[_i].file, mpt_status_name(status),
                  mpt_status_name(bad_files[_i].code), mpt_last_error());
    ck_assert_ptr_null(c);
    ck_assert_error_mentions(path);
    ck_assert_error_mentions(bad_files[_i].key);
    ck_assert_msg(strchr(mpt_last_error(), '\n') == NULL, "detail is not one line: %s",
                  mpt_last_error());
}
END_TEST

START_TEST(null_arguments)
{
    mpt_cluster_t *c = NULL;
    ck_assert_mpt_fails(mpt_cluster_load(NULL, &c), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt_cluster_load(test_path("fixtures/cluster-minimal.json"), NULL),
                        MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt_cluster_local(NULL, NULL, &c), MPT_ERR_INVALID);
}
END_TEST

/* ---- round trip --------------------------------------------------------- */

static void assert_same_devices(const mpt_cluster_t *a, const mpt_cluster_t *b)
{
    double ga, la, gb, lb;
    ck_assert_str_eq(mpt_cluster_name(a), mpt_cluster_name(b));
    ck_assert_uint_eq(mpt_cluster_node_count(a), mpt_cluster_node_count(b));
    mpt_cluster_network(a, &ga, &la);
    mpt_cluster_network(b, &gb, &lb);
    ck_assert_double_eq(ga, gb); /* exact: jansson prints reals round-trippably */
    ck_assert_double_eq(la, lb);
    size_t n = mpt_cluster_device_count(a);
    ck_assert_uint_eq(mpt_cluster_device_count(b), n);
    for (size_t i = 0; i < n; i++) {
        const mpt_cluster_device_t *x = device(a, i), *y = device(b, i);
        /* the GEMM provider: absent stays absent, a word stays that word */
        ck_assert_int_eq(!x->info.gemm_provider, !y->info.gemm_provider);
        if (x->info.gemm_provider)
            ck_assert_str_eq(x->info.gemm_provider, y->info.gemm_provider);
        ck_assert_str_eq(x->info.vendor, y->info.vendor);
        ck_assert_str_eq(x->info.vendor_word, y->info.vendor_word);
        ck_assert_str_eq(x->info.name, y->info.name);
        ck_assert_str_eq(x->info.platform, y->info.platform);
        ck_assert_str_eq(x->info.device_version, y->info.device_version);
        ck_assert_str_eq(x->info.driver_version, y->info.driver_version);
        ck_assert_str_eq(x->info.pci_address, y->info.pci_address);
        ck_assert_int_eq(x->info.type, y->info.type);
        ck_assert_uint_eq(x->info.global_mem_bytes, y->info.global_mem_bytes);
        ck_assert_uint_eq(x->info.max_alloc_bytes, y->info.max_alloc_bytes);
        ck_assert_uint_eq(x->info.local_mem_bytes, y->info.local_mem_bytes);
        ck_assert_uint_eq(x->info.compute_units, y->info.compute_units);
        ck_assert_uint_eq(x->info.clock_mhz, y->info.clock_mhz);
        ck_assert_int_eq(x->info.unified_memory, y->info.unified_memory);
        ck_assert_int_eq(x->info.fp16, y->info.fp16);
        ck_assert_int_eq(x->info.fp64, y->info.fp64);

        ck_assert_int_eq(x->locality.node, y->locality.node);
        ck_assert_int_eq(x->locality.numa_node, y->locality.numa_node);
        ck_assert_int_eq(x->locality.package, y->locality.package);
        ck_assert_uint_eq(x->locality.cores, y->locality.cores);
        ck_assert_uint_eq(x->locality.pus, y->locality.pus);
        ck_assert_str_eq(x->locality.cpus, y->locality.cpus);
        ck_assert_str_eq(x->locality.pci_address, y->locality.pci_address);
        ck_assert_str_eq(x->locality.osdev, y->locality.osdev);

        const mpt_profile_t *p = &x->profile, *q = &y->profile;
        ck_assert_double_eq(p->gemm_gflops, q->gemm_gflops);
        ck_assert_double_eq(p->mem_gbps, q->mem_gbps);
        ck_assert_double_eq(p->h2d_gbps, q->h2d_gbps);
        ck_assert_double_eq(p->d2h_gbps, q->d2h_gbps);
        ck_assert_double_eq(p->launch_us, q->launch_us);
        ck_assert_double_eq(p->measured_at, q->measured_at);
        for (int k = 0; k < MPT_PROFILE_GEMM_SHAPES; k++) {
            ck_assert_uint_eq(p->gemm[k].m, q->gemm[k].m);
            ck_assert_uint_eq(p->gemm[k].n, q->gemm[k].n);
            ck_assert_uint_eq(p->gemm[k].k, q->gemm[k].k);
            ck_assert_double_eq(p->gemm[k].gflops, q->gemm[k].gflops);
        }
        for (size_t j = 0; j < n; j++)
            ck_assert_msg(mpt_cluster_link(a, i, j) == mpt_cluster_link(b, i, j),
                          "link %zu-%zu: %s became %s", i, j,
                          mpt_link_class_name(mpt_cluster_link(a, i, j)),
                          mpt_link_class_name(mpt_cluster_link(b, i, j)));
    }
}

/* Loads `path`, writes it with mpt_cluster_to_json into `dir`, loads that
 * and compares; then writes the copy again and expects the same text. */
static void round_trip(const char *path, const char *dir)
{
    char copy[4096];
    char *text = NULL, *again = NULL;
    mpt_cluster_t *a = load(path);
    ck_assert_mpt_ok(mpt_cluster_to_json(a, &text));
    ck_assert_ptr_nonnull(text);
    snprintf(copy, sizeof copy, "%s/round-trip.json", dir);
    FILE *f = fopen(copy, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);

    mpt_cluster_t *b = load(copy);
    assert_same_devices(a, b);
    ck_assert_mpt_ok(mpt_cluster_to_json(b, &again));
    ck_assert_str_eq(text, again); /* a fixed point after one trip */
    free(text);
    free(again);
    mpt_cluster_free(a);
    mpt_cluster_free(b);
    ck_assert_int_eq(unlink(copy), 0);
}

static const char *const round_trip_files[] = {
    "fixtures/cluster-two-nodes.json",
    "fixtures/cluster-minimal.json",  /* profiles without GEMM points */
    "fixtures/cluster-xml.json",      /* topology_xml relative to the file */
    "fixtures/cluster-gemm-provider.json", /* each device's GEMM provider */
    "node-2nvidia-2amd.json",
    "cluster-4x8.json",
    "node-gpus-cpu.json",
};

/* The copies go to a directory of their own, made once in the parent
 * process (an unchecked fixture) so that a failing test leaves nothing. */
static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s", "/tmp/mpt-check-cluster-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char copy[128];
    snprintf(copy, sizeof copy, "%s/round-trip.json", tmpdir);
    unlink(copy);
    rmdir(tmpdir);
}

START_TEST(json_round_trip)
{
    const char *file = round_trip_files[_i];
    /* The copy is written to another directory than the original: a
     * topology_xml relative to the original must still be found. */
    round_trip(strncmp(file, "fixtures/", 9) == 0 ? test_path(file) : model_path(file), tmpdir);
}
END_TEST

/* ---- the example clusters of models/clusters/ ---------------------------- */

static size_t count_vendor(const mpt_cluster_t *c, const char *word)
{
    size_t n = 0;
    for (size_t i = 0; i < mpt_cluster_device_count(c); i++)
        n += strcmp(device(c, i)->info.vendor_word, word) == 0;
    return n;
}

static void assert_plausible(const mpt_cluster_t *c)
{
    for (size_t i = 0; i < mpt_cluster_device_count(c); i++) {
        const mpt_cluster_device_t *d = device(c, i);
        const mpt_profile_t *p = &d->profile;
        ck_assert(d->info.global_mem_bytes >= (1ull << 30));
        ck_assert(d->info.max_alloc_bytes <= d->info.global_mem_bytes);
        ck_assert(p->gemm_gflops > 100 && p->gemm_gflops < 100000);
        ck_assert(p->mem_gbps > 10 && p->mem_gbps < 5000);
        ck_assert(p->h2d_gbps > 1 && p->h2d_gbps < 100);
        ck_assert(p->d2h_gbps > 1 && p->d2h_gbps < 100);
        /* gemm_gflops is the best of the measured points. */
        double best = 0;
        for (int k = 0; k < MPT_PROFILE_GEMM_SHAPES; k++) {
            ck_assert_uint_gt(p->gemm[k].m, 0);
            best = p->gemm[k].gflops > best ? p->gemm[k].gflops : best;
        }
        ck_assert_double_eq(best, p->gemm_gflops);
        ck_assert_str_ne(d->locality.cpus, "");
        ck_assert_uint_gt(d->locality.cores, 0);
    }
}

/* A job of one process (no mpirun): the job's cluster is the process's
 * own, through the same path as several ranks' (texts gathered, then
 * broadcast and parsed), and its devices start at 0. */
START_TEST(world_of_one_process)
{
    mpt_world_t *w = NULL;
    mpt_cluster_t *local = NULL, *job = NULL;
    ck_assert_mpt_ok(mpt_world_init(NULL, NULL, &w));
    ck_assert_int_eq(mpt_world_size(w), 1);
    ck_assert_int_eq(mpt_world_rank(w), 0);
    ck_assert_mpt_ok(mpt_cluster_load(test_path("fixtures/cluster-two-nodes.json"), &local));
    ck_assert_mpt_ok(mpt_world_cluster(w, local, &job));
    assert_same_devices(local, job);
    ck_assert_int_eq(mpt_world_first_device(w), 0);
    ck_assert_mpt_fails(mpt_world_cluster(w, NULL, &job), MPT_ERR_INVALID);
    mpt_cluster_free(job);
    mpt_cluster_free(local);
    mpt_world_free(w);
}
END_TEST

START_TEST(example_node_2nvidia_2amd)
{
    mpt_cluster_t *c = load(model_path("node-2nvidia-2amd.json"));
    ck_assert_uint_eq(mpt_cluster_node_count(c), 1);
    ck_assert_uint_eq(mpt_cluster_device_count(c), 4);
    ck_assert_uint_eq(count_vendor(c, "nvidia"), 2);
    ck_assert_uint_eq(count_vendor(c, "amd"), 2);
    assert_plausible(c);
    /* Of different speeds, the A100 fastest. */
    for (size_t i = 0; i < 4; i++)
        for (size_t j = i + 1; j < 4; j++)
            ck_assert_double_ne(device(c, i)->profile.gemm_gflops,
                                device(c, j)->profile.gemm_gflops);
    for (size_t i = 1; i < 4; i++)
        ck_assert_double_gt(device(c, 0)->profile.gemm_gflops, device(c, i)->profile.gemm_gflops);
    const mpt_link_class_t H = MPT_LINK_HOST_BRIDGE, X = MPT_LINK_CROSS_SOCKET;
    const mpt_link_class_t expected[6] = {H, X, X, X, X, H};
    assert_links(c, expected);
    mpt_cluster_free(c);
}
END_TEST

START_TEST(example_cluster_4x8)
{
    mpt_cluster_t *c = load(model_path("cluster-4x8.json"));
    double gbps = 0, latency = 0;
    ck_assert_uint_eq(mpt_cluster_node_count(c), 4);
    ck_assert_uint_eq(mpt_cluster_device_count(c), 32);
    mpt_cluster_network(c, &gbps, &latency);
    ck_assert_double_eq(gbps, 12.5);
    ck_assert_double_eq(latency, 5.0);
    ck_assert_uint_eq(count_vendor(c, "nvidia"), 16);
    ck_assert_uint_eq(count_vendor(c, "amd"), 16);
    assert_plausible(c);
    for (size_t i = 0; i < 32; i++) {
        ck_assert_int_eq(device(c, i)->locality.node, (int)(i / 8));
        for (size_t j = 0; j < 32; j++) {
            mpt_link_class_t l = mpt_cluster_link(c, i, j), want;
            if (i == j)
                want = MPT_LINK_SAME_DEVICE;
            else if (i / 8 != j / 8)
                want = MPT_LINK_CROSS_NODE;
            else if (i / 2 == j / 2)
                want = MPT_LINK_PCI_SWITCH; /* the pairs the file names */
            else if (i % 8 / 4 == j % 8 / 4)
                want = MPT_LINK_SAME_NUMA;
            else
                want = MPT_LINK_CROSS_SOCKET;
            ck_assert_msg(l == want, "link %zu-%zu: %s, expected %s", i, j,
                          mpt_link_class_name(l), mpt_link_class_name(want));
        }
    }
    mpt_cluster_free(c);
}
END_TEST

START_TEST(example_node_gpus_cpu)
{
    mpt_cluster_t *c = load(model_path("node-gpus-cpu.json"));
    ck_assert_uint_eq(mpt_cluster_node_count(c), 1);
    ck_assert_uint_eq(mpt_cluster_device_count(c), 3);
    assert_plausible(c);
    size_t cpus = 0;
    for (size_t i = 0; i < 3; i++) {
        const mpt_cluster_device_t *d = device(c, i);
        if (d->info.type == MPT_DEVICE_CPU) {
            cpus++;
            ck_assert_int_eq(d->info.unified_memory, 1);
            ck_assert_str_eq(d->info.pci_address, "");
            ck_assert_int_eq(d->locality.numa_node, -1);
            ck_assert_str_eq(d->info.vendor_word, "pocl");
        } else {
            ck_assert_int_eq(d->info.type, MPT_DEVICE_GPU);
            ck_assert_str_ne(d->info.pci_address, "");
        }
    }
    ck_assert_uint_eq(cpus, 1);
    const mpt_link_class_t X = MPT_LINK_CROSS_SOCKET;
    const mpt_link_class_t expected[3] = {X, X, X};
    assert_links(c, expected);
    mpt_cluster_free(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("files");
    tcase_add_test(tc, node_with_topology_xml);
    tcase_add_test(tc, two_nodes_without_xml);
    tcase_add_test(tc, minimal_file_defaults);
    tcase_add_loop_test(tc, malformed_files_name_file_and_key, 0,
                        sizeof bad_files / sizeof bad_files[0]);
    tcase_add_test(tc, null_arguments);
    tcase_add_test(tc, world_of_one_process);
    suite_add_tcase(s, tc);
    TCase *rt = tcase_create("round-trip");
    tcase_add_unchecked_fixture(rt, make_tmpdir, remove_tmpdir);
    tcase_add_loop_test(rt, json_round_trip, 0,
                        sizeof round_trip_files / sizeof round_trip_files[0]);
    suite_add_tcase(s, rt);
    TCase *ex = tcase_create("examples");
    tcase_add_test(ex, example_node_2nvidia_2amd);
    tcase_add_test(ex, example_cluster_4x8);
    tcase_add_test(ex, example_node_gpus_cpu);
    suite_add_tcase(s, ex);
    return test_run(s, 1);
}
