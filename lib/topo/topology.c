/*
 * topo/topology.c: the hwloc topology (live, or from an XML file of another
 * machine), where each device sits in it, the link class between two
 * devices, and binding a thread to a device's cores.
 *
 * Deliberately left out: distances between NUMA nodes (hwloc's distance
 * matrices) and network topology; the cluster file carries the latter.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hwloc.h>
#include <hwloc/linux.h>

#include "device/device.h"

struct mpt_topology {
    hwloc_topology_t t;
    int live;
};

static const char *const link_names[] = {
    [MPT_LINK_SAME_DEVICE] = "same-device", [MPT_LINK_PCI_SWITCH] = "pci-switch",
    [MPT_LINK_HOST_BRIDGE] = "host-bridge", [MPT_LINK_SAME_NUMA] = "same-numa",
    [MPT_LINK_CROSS_SOCKET] = "cross-socket", [MPT_LINK_CROSS_NODE] = "cross-node",
    [MPT_LINK_UNKNOWN] = "unknown",
};

const char *mpt_link_class_name(mpt_link_class_t c)
{
    return (unsigned)c <= MPT_LINK_UNKNOWN ? link_names[c] : "unknown";
}

int mpt_link_class_parse(const char *name, mpt_link_class_t *out)
{
    for (int c = 0; c <= MPT_LINK_UNKNOWN; c++)
        if (strcmp(name, link_names[c]) == 0) {
            *out = (mpt_link_class_t)c;
            return MPT_OK;
        }
    return mpt__fail(MPT_ERR_PARSE,
                     "unknown link class '%s' (same-device, pci-switch, host-bridge, same-numa, "
                     "cross-socket, cross-node)",
                     name);
}

int mpt_topology_load(const char *xml_path, mpt_topology_t **out)
{
    mpt_topology_t *topo;
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "mpt_topology_load: out is NULL");
    *out = NULL;
    if (!xml_path && *mpt__env(MPT_ENV_TOPOLOGY_XML))
        xml_path = mpt__env(MPT_ENV_TOPOLOGY_XML);
    if (xml_path) {
        FILE *f = fopen(xml_path, "r");
        if (!f)
            return mpt__fail(MPT_ERR_TOPOLOGY, "topology XML %s: %s", xml_path, strerror(errno));
        fclose(f);
    }
    if (!(topo = calloc(1, sizeof *topo)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    if (hwloc_topology_init(&topo->t) != 0) {
        free(topo);
        return mpt__fail(MPT_ERR_TOPOLOGY, "hwloc_topology_init: %s", strerror(errno));
    }
    /* Keep GPUs, the bridges above them and their OS devices; mpt finds
     * devices by PCI address, so hwloc's own GPU backends (which would
     * initialise OpenCL/CUDA in this process) stay off. */
    hwloc_topology_set_io_types_filter(topo->t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    static const char *const gpu_backends[] = {"opencl", "cuda", "nvml", "rsmi", "levelzero", "gl"};
    for (size_t i = 0; i < sizeof gpu_backends / sizeof gpu_backends[0]; i++)
        hwloc_topology_set_components(topo->t, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST,
                                      gpu_backends[i]); /* one name per call */
    if (xml_path && hwloc_topology_set_xml(topo->t, xml_path) != 0) {
        int e = errno;
        hwloc_topology_destroy(topo->t);
        free(topo);
        return mpt__fail(MPT_ERR_TOPOLOGY, "topology XML %s: hwloc cannot read it (%s)", xml_path,
                         strerror(e));
    }
    if (hwloc_topology_load(topo->t) != 0) {
        int e = errno;
        hwloc_topology_destroy(topo->t);
        free(topo);
        return mpt__fail(MPT_ERR_TOPOLOGY, "%s%s: hwloc cannot load it: malformed or not an hwloc "
                         "topology (%s)",
                         xml_path ? "topology XML " : "live topology", xml_path ? xml_path : "",
                         strerror(e));
    }
    topo->live = hwloc_topology_is_thissystem(topo->t) && !xml_path;
    *out = topo;
    return MPT_OK;
}

void mpt_topology_free(mpt_topology_t *topo)
{
    if (!topo)
        return;
    hwloc_topology_destroy(topo->t);
    free(topo);
}

int mpt_topology_is_live(const mpt_topology_t *topo)
{
    return topo->live;
}

void mpt_topology_counts(const mpt_topology_t *topo, unsigned *packages, unsigned *numa_nodes,
                         unsigned *cores, unsigned *pus)
{
    int n;
    if (packages)
        *packages = (n = hwloc_get_nbobjs_by_type(topo->t, HWLOC_OBJ_PACKAGE)) > 0 ? n : 1;
    if (numa_nodes)
        *numa_nodes = (unsigned)hwloc_get_nbobjs_by_type(topo->t, HWLOC_OBJ_NUMANODE);
    if (cores)
        *cores = (unsigned)hwloc_get_nbobjs_by_type(topo->t, HWLOC_OBJ_CORE);
    if (pus)
        *pus = (unsigned)hwloc_get_nbobjs_by_type(topo->t, HWLOC_OBJ_PU);
}

/* The one object of `type` whose cpuset meets `set`, as a logical index;
 * -1 when several (or none) do. */
static int single_within(hwloc_topology_t t, hwloc_obj_type_t type, hwloc_const_cpuset_t set)
{
    int found = -1;
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_obj_by_type(t, type, o)) != NULL) {
        if (!hwloc_bitmap_intersects(o->cpuset, set))
            continue;
        if (found >= 0)
            return -1;
        found = (int)o->logical_index;
    }
    return found;
}

/* Fills the cpuset-derived fields of a locality. */
static int fill_from_cpuset(const mpt_topology_t *topo, hwloc_const_cpuset_t set,
                            mpt_locality_t *loc)
{
    loc->numa_node = single_within(topo->t, HWLOC_OBJ_NUMANODE, set);
    loc->package = single_within(topo->t, HWLOC_OBJ_PACKAGE, set);
    loc->cores = (unsigned)hwloc_get_nbobjs_inside_cpuset_by_type(topo->t, set, HWLOC_OBJ_CORE);
    loc->pus = (unsigned)hwloc_get_nbobjs_inside_cpuset_by_type(topo->t, set, HWLOC_OBJ_PU);
    if (hwloc_bitmap_list_snprintf(loc->cpus, sizeof loc->cpus, set) >= (int)sizeof loc->cpus)
        return mpt__fail(MPT_ERR_RANGE, "cpuset list longer than %zu characters",
                         sizeof loc->cpus);
    return MPT_OK;
}

static int parse_pci(const char *s, unsigned *domain, unsigned *bus, unsigned *dev,
                     unsigned *func)
{
    /* Hex digits and separators only: sscanf's %x alone would also take
     * blanks, signs and 0x prefixes; %n makes sure nothing follows. */
    size_t len = strlen(s);
    int end = -1;
    *domain = 0;
    if (len == strspn(s, "0123456789abcdefABCDEF:.") &&
        ((sscanf(s, "%x:%x:%x.%x%n", domain, bus, dev, func, &end) == 4 && (size_t)end == len) ||
         (*domain = 0, end = -1,
          sscanf(s, "%x:%x.%x%n", bus, dev, func, &end) == 3 && (size_t)end == len)))
        return MPT_OK;
    return mpt__fail(MPT_ERR_PARSE, "PCI address '%s' is not of the form dddd:bb:dd.f", s);
}

static hwloc_obj_t find_pci(const mpt_topology_t *topo, const char *address)
{
    unsigned domain, bus, dev, func;
    if (parse_pci(address, &domain, &bus, &dev, &func) < 0)
        return NULL;
    return hwloc_get_pcidev_by_busid(topo->t, domain, bus, dev, func);
}

int mpt_topology_locate_pci(const mpt_topology_t *topo, const char *pci_address,
                            mpt_locality_t *out)
{
    unsigned domain, bus, dev, func;
    int status = parse_pci(pci_address, &domain, &bus, &dev, &func);
    if (status < 0)
        return status;
    hwloc_obj_t pci = hwloc_get_pcidev_by_busid(topo->t, domain, bus, dev, func);
    if (!pci)
        return mpt__fail(MPT_ERR_NOT_FOUND, "PCI device %s is not in the topology", pci_address);
    memset(out, 0, sizeof *out);
    snprintf(out->pci_address, sizeof out->pci_address, "%04x:%02x:%02x.%01x", domain, bus, dev,
             func);
    for (hwloc_obj_t c = pci->io_first_child; c; c = c->next_sibling)
        if (c->type == HWLOC_OBJ_OS_DEVICE && c->name) {
            snprintf(out->osdev, sizeof out->osdev, "%s", c->name);
            if (c->attr->osdev.type == HWLOC_OBJ_OSDEV_COPROC)
                break; /* the OpenCL/CUDA name beats a DRM card name */
        }
    return fill_from_cpuset(topo, hwloc_get_non_io_ancestor_obj(topo->t, pci)->cpuset, out);
}

int mpt_topology_locate_host(const mpt_topology_t *topo, mpt_locality_t *out)
{
    hwloc_bitmap_t set = hwloc_bitmap_dup(hwloc_topology_get_topology_cpuset(topo->t));
    if (!set)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    /* A CPU driver's threads inherit this process's binding (taskset,
     * mpirun --bind-to): the device runs where the process may run. */
    if (topo->live) {
        hwloc_bitmap_t bound = hwloc_bitmap_alloc();
        if (bound && hwloc_get_cpubind(topo->t, bound, HWLOC_CPUBIND_PROCESS) == 0 &&
            hwloc_bitmap_intersects(bound, set))
            hwloc_bitmap_and(set, set, bound);
        hwloc_bitmap_free(bound);
    }
    memset(out, 0, sizeof *out);
    int status = fill_from_cpuset(topo, set, out);
    hwloc_bitmap_free(set);
    return status;
}

int mpt_topology_locate_device(const mpt_topology_t *topo, const mpt_device_t *dev,
                               mpt_locality_t *out)
{
    const mpt_device_info_t *info = &dev->info;
    if (info->pci_address[0] && find_pci(topo, info->pci_address))
        return mpt_topology_locate_pci(topo, info->pci_address, out);
    if (info->pci_address[0] && topo->live) {
        /* PCI discovery unavailable (no libhwloc-plugins): sysfs still
         * tells the GPU's local cores.  Read from the address the device
         * reported (its extension checked), not through
         * hwloc_opencl_get_device_cpuset, which asks the AMD and NVIDIA
         * attributes unchecked (CL_INVALID_VALUE elsewhere, see
         * device.c's query_pci). */
        char path[96];
        hwloc_bitmap_t set = hwloc_bitmap_alloc();
        int status = MPT_ERR_NOMEM;
        memset(out, 0, sizeof *out);
        snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/local_cpus", info->pci_address);
        if (set && (hwloc_linux_read_path_as_cpumask(path, set) < 0 || hwloc_bitmap_iszero(set)))
            hwloc_bitmap_copy(set, hwloc_topology_get_complete_cpuset(topo->t));
        if (set)
            status = fill_from_cpuset(topo, set, out);
        hwloc_bitmap_free(set);
        snprintf(out->pci_address, sizeof out->pci_address, "%s", info->pci_address);
        return status;
    }
    return mpt_topology_locate_host(topo, out);
}

/* The i-th PCI device of class display (0x03) or processing accelerator
 * (0x12), NULL past the end. */
static hwloc_obj_t nth_gpu(const mpt_topology_t *topo, size_t i)
{
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_pcidev(topo->t, o)) != NULL) {
        unsigned cls = o->attr->pcidev.class_id >> 8;
        if ((cls == 0x03 || cls == 0x12) && i-- == 0)
            return o;
    }
    return NULL;
}

size_t mpt_topology_gpu_count(const mpt_topology_t *topo)
{
    size_t n = 0;
    while (nth_gpu(topo, n))
        n++;
    return n;
}

int mpt_topology_gpu(const mpt_topology_t *topo, size_t i, mpt_locality_t *out)
{
    char address[16];
    hwloc_obj_t o = nth_gpu(topo, i);
    if (!o)
        return mpt__fail(MPT_ERR_RANGE, "no GPU number %zu in the topology", i);
    snprintf(address, sizeof address, "%04x:%02x:%02x.%01x", o->attr->pcidev.domain & 0xffff,
             o->attr->pcidev.bus, o->attr->pcidev.dev, o->attr->pcidev.func);
    return mpt_topology_locate_pci(topo, address, out);
}

/* First common ancestor of two objects by parent pointers.  Not hwloc's
 * hwloc_get_common_ancestor_obj: in 2.9 it compares depths, which are
 * negative for I/O objects, and walks off the root. */
static hwloc_obj_t common_ancestor(hwloc_obj_t a, hwloc_obj_t b)
{
    for (hwloc_obj_t x = a; x; x = x->parent)
        for (hwloc_obj_t y = b; y; y = y->parent)
            if (x == y)
                return x;
    return NULL;
}

mpt_link_class_t mpt_topology_link(const mpt_topology_t *topo, const mpt_locality_t *a,
                                   const mpt_locality_t *b)
{
    if (a->node != b->node)
        return MPT_LINK_CROSS_NODE;
    if (a->pci_address[0] && strcmp(a->pci_address, b->pci_address) == 0)
        return MPT_LINK_SAME_DEVICE;
    if (topo && a->pci_address[0] && b->pci_address[0]) {
        hwloc_obj_t pa = find_pci(topo, a->pci_address), pb = find_pci(topo, b->pci_address);
        hwloc_obj_t c = pa && pb ? common_ancestor(pa, pb) : NULL;
        if (c && c->type == HWLOC_OBJ_BRIDGE)
            return c->attr->bridge.upstream_type == HWLOC_OBJ_BRIDGE_HOST ? MPT_LINK_HOST_BRIDGE
                                                                          : MPT_LINK_PCI_SWITCH;
    }
    if (a->numa_node >= 0 && a->numa_node == b->numa_node)
        return MPT_LINK_SAME_NUMA;
    if (a->package >= 0 && a->package == b->package)
        return MPT_LINK_SAME_NUMA;
    /* Different sockets, or a device spanning several: the conservative
     * class, since part of the traffic crosses the inter-socket link. */
    return MPT_LINK_CROSS_SOCKET;
}

int mpt_topology_bind_thread(const mpt_topology_t *topo, const mpt_locality_t *loc)
{
    if (!topo->live)
        return mpt__fail(MPT_ERR_UNSUPPORTED,
                         "cannot bind a thread using the topology of another machine");
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    int status = MPT_OK;
    if (hwloc_bitmap_list_sscanf(set, loc->cpus) != 0 || hwloc_bitmap_iszero(set))
        status = mpt__fail(MPT_ERR_PARSE, "cpuset list '%s' is empty or malformed", loc->cpus);
    else if (hwloc_set_cpubind(topo->t, set, HWLOC_CPUBIND_THREAD) != 0)
        status = mpt__fail(MPT_ERR_TOPOLOGY, "binding a thread to cpus %s: %s", loc->cpus,
                           strerror(errno));
    hwloc_bitmap_free(set);
    return status;
}
