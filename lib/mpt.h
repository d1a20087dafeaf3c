/*
 * mpt.h: the one public header of libmpt, model-parallel training across
 * every OpenCL device of a machine or a cluster.
 *
 * Rules that hold for the whole API, stated once:
 *
 * Errors.  Every function that can fail returns an int status: MPT_OK (0)
 *   on success, a negative MPT_ERR_* code otherwise.  mpt_strerror() turns a
 *   code into a fixed sentence; mpt_last_error() returns the detail of the
 *   last failure on the calling thread (the file and reason, the OpenCL build
 *   log, the raw cl_int...).  The library never prints, aborts or exits: it
 *   reports through return codes and, if installed, the log callback.
 *
 * Ownership.  An object returned through an out-pointer by a create, open or
 *   load function belongs to the caller, who releases it with the matching
 *   free function.
 *   Strings and structs returned by accessors belong to the object they were
 *   read from and live as long as it.  Freeing NULL is a no-op.
 *
 * Threads.  Distinct objects may be used from distinct threads at once.  One
 *   object is used by one thread at a time, except where a function says
 *   otherwise (a device set may be shared read-only once opened; each device
 *   is meant to be driven by one worker thread).  mpt_last_error() is
 *   per-thread.  The log callback may be called from any thread.
 */
#ifndef MPT_H
#define MPT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MPT_API __attribute__((visibility("default")))
#else
#define MPT_API
#endif

/* ------------------------------------------------------------------------ */
/* Status codes: one list generates the enum, mpt_strerror and names.       */

#define MPT_STATUS_LIST(X)                                                      \
    X(OK, 0, "success")                                                         \
    X(ERR_INVALID, -1, "invalid argument")                                      \
    X(ERR_NOMEM, -2, "out of host memory")                                      \
    X(ERR_IO, -3, "input/output error")                                         \
    X(ERR_PARSE, -4, "malformed input")                                         \
    X(ERR_NOT_FOUND, -5, "not found")                                           \
    X(ERR_NO_PLATFORM, -6, "no OpenCL platform found")                          \
    X(ERR_NO_DEVICE, -7, "no matching OpenCL device")                           \
    X(ERR_OPENCL, -8, "OpenCL call failed")                                     \
    X(ERR_BUILD, -9, "OpenCL program build failed")                             \
    X(ERR_DEVICE_MEMORY, -10, "out of device memory")                           \
    X(ERR_BLAS, -11, "BLAS call failed")                                     \
    X(ERR_TOPOLOGY, -12, "topology discovery or loading failed")                \
    X(ERR_UNSUPPORTED, -13, "operation not supported here")                     \
    X(ERR_RANGE, -14, "value out of range")                                     \
    X(ERR_ABORTED, -15, "aborted because another worker failed")             \
    X(ERR_DIVERGED, -16, "training diverged: a loss or gradient is not finite") \
    X(ERR_EXISTS, -17, "would replace existing work")                          \
    X(ERR_STOPPED, -18, "stopped by a signal")                                 \
    X(ERR_TIMEOUT, -19, "a peer did not answer in time")                       \
    X(ERR_DEVICE_LOST, -20, "a device was lost or hung")

typedef enum {
#define MPT__STATUS_ENUM(name, code, text) MPT_##name = code,
    MPT_STATUS_LIST(MPT__STATUS_ENUM)
#undef MPT__STATUS_ENUM
} mpt_status_t;

/** \return a fixed sentence for a status code ("unknown status" if none). */
MPT_API const char *mpt_strerror(int status);
/** \return the code's symbolic name, e.g. "MPT_ERR_BUILD". */
MPT_API const char *mpt_status_name(int status);
/** \return the detail of the calling thread's last failure, "" if none. */
MPT_API const char *mpt_last_error(void);
/** \return the library version string, e.g. "0.1.0". */
MPT_API const char *mpt_version(void);

/* ------------------------------------------------------------------------ */
/* Logging.  Without a callback the library is silent.                      */

typedef enum {
    MPT_LOG_ERROR = 0,
    MPT_LOG_WARN = 1,
    MPT_LOG_INFO = 2,
    MPT_LOG_DEBUG = 3
} mpt_log_level_t;

typedef void (*mpt_log_fn)(mpt_log_level_t level, const char *message, void *user);

/** Installs (or, with fn NULL, removes) the log callback; messages above
 *  max_level are dropped before formatting.  Not thread-safe against
 *  concurrent logging: install it before starting work. */
MPT_API void mpt_set_log_callback(mpt_log_fn fn, mpt_log_level_t max_level, void *user);

/* ------------------------------------------------------------------------ */
/* Environment tunables, declared in one table (see README).                */

typedef struct {
    const char *name;          /* e.g. "MPT_DEVICES" */
    const char *default_value; /* "" when unset means "off" or "all" */
    const char *help;          /* one line */
} mpt_env_var_t;

/** \return the number of environment tunables mpt reads. */
MPT_API size_t mpt_env_count(void);
/** \return the i-th tunable's description, NULL when i is out of range. */
MPT_API const mpt_env_var_t *mpt_env_get(size_t i);

/* ------------------------------------------------------------------------ */
/* Devices: every OpenCL device of every installed ICD.                     */

typedef enum {
    MPT_DEVICE_CPU = 1,
    MPT_DEVICE_GPU = 2,
    MPT_DEVICE_ACCELERATOR = 4,
    MPT_DEVICE_OTHER = 8
} mpt_device_type_t;

/* What identifies and describes a device.  Strings belong to the device. */
typedef struct {
    int index;                  /* position among all devices, in enumeration order */
    const char *vendor;         /* CL_DEVICE_VENDOR as reported */
    const char *vendor_word;    /* "nvidia", "amd", "intel", "pocl" or "other" */
    const char *name;           /* CL_DEVICE_NAME */
    const char *platform;       /* CL_PLATFORM_NAME */
    const char *device_version; /* CL_DEVICE_VERSION */
    const char *driver_version; /* CL_DRIVER_VERSION */
    const char *pci_address;    /* "dddd:bb:dd.f", or "" when the driver does not tell */
    mpt_device_type_t type;
    uint64_t global_mem_bytes;
    uint64_t max_alloc_bytes;
    uint64_t local_mem_bytes;
    unsigned compute_units;
    unsigned clock_mhz;
    int unified_memory; /* device memory is host memory (CPU, integrated GPU) */
    int fp16, fp64;
    /* who runs the device's GEMMs: "clblast" (OpenCL kernels) or "host" (the
     * host's BLAS on mapped buffers, CPU devices); MPT_BLAS overrides.  NULL
     * for a device described by a cluster file. */
    const char *gemm_provider;
    /* 1 when the GEMMs are queued and run while the host goes on (CLBlast;
     * the host BLAS as a native kernel of the queue), 0 when the calling
     * thread runs them (the host BLAS on blocking maps; a "host" device of
     * a cluster file).  Where a device's time shows: in the passes, or at
     * the next wait for the queue. */
    int gemm_queued;
    /* CLBlast kernels running parameters tuned for this device (mpt-topo
     * --tune): "Xgemm", "XgemmDirect", "Xgemm,XgemmDirect", or "" for
     * CLBlast's built-in ones; NULL when CLBlast runs no GEMM here (host
     * provider) or for a device described by a cluster file. */
    const char *clblast_tuning;
} mpt_device_info_t;

typedef struct mpt_device mpt_device_t;   /* one device: context, queue, programs */
typedef struct mpt_devices mpt_devices_t; /* an ordered set of opened devices */

/** Enumerates every device of every platform and opens those selected by
 *  spec: NULL means the MPT_DEVICES environment variable, and an empty or
 *  unset selection means all.  A spec is a comma-separated list of indices
 *  ("0,2"), ranges ("0-3") or words (gpu, cpu, accelerator, nvidia, amd,
 *  intel, pocl); a device is selected if any item matches, in enumeration
 *  order.  Fails with MPT_ERR_NO_PLATFORM when no ICD is installed and
 *  MPT_ERR_NO_DEVICE when an item matches nothing. */
MPT_API int mpt_devices_open(const char *spec, mpt_devices_t **out);
MPT_API void mpt_devices_free(mpt_devices_t *set);
/** \return the number of opened devices. */
MPT_API size_t mpt_devices_count(const mpt_devices_t *set);
/** \return the i-th opened device, NULL when i is out of range. */
MPT_API mpt_device_t *mpt_devices_get(const mpt_devices_t *set, size_t i);
/** \return the number of devices enumerated before selection. */
MPT_API size_t mpt_devices_total(const mpt_devices_t *set);

/** \return the identity and capabilities of a device. */
MPT_API const mpt_device_info_t *mpt_device_info(const mpt_device_t *dev);
/** \return a stable text key (vendor, name, driver, PCI address, units). */
MPT_API const char *mpt_device_identity(const mpt_device_t *dev);
/** Waits until everything queued on the device has finished. */
MPT_API int mpt_device_finish(mpt_device_t *dev);

/** Turns kernel timing on or off: with it on, the device keeps every op's
 *  OpenCL profiling event until mpt_device_busy_seconds reads them. */
MPT_API int mpt_device_set_timing(mpt_device_t *dev, int on);
/** Waits for the device, then returns the seconds its ops ran (sum of
 *  END - START of their profiling events, plus the host BLAS's time on a
 *  device whose GEMM provider is "host") since the last call, and of
 *  those the seconds in BLAS routines (GEMMs..., CLBlast's or the host's;
 *  may be NULL). */
MPT_API int mpt_device_busy_seconds(mpt_device_t *dev, double *seconds, double *blas_seconds);

/** Caps the bytes of mpt buffers alive on the device (0: no cap, the
 *  default): a buffer past it is refused with MPT_ERR_DEVICE_MEMORY naming
 *  the device, what the buffer was for and the shortfall.  What it counts:
 *  every mpt_buffer_t (parameters, gradients, optimizer state,
 *  activations, workspaces); not what OpenCL or CLBlast allocate inside
 *  (their temporaries, the driver's own).  Lowering it below what is in
 *  use frees nothing; the next allocation fails. */
MPT_API int mpt_device_set_memory_limit(mpt_device_t *dev, uint64_t bytes);
/** \return the cap (0: none). */
MPT_API uint64_t mpt_device_memory_limit(const mpt_device_t *dev);
/** The bytes of mpt buffers alive on the device now, and the most alive at
 *  once since it was opened or since mpt_device_reset_peak (either pointer
 *  may be NULL). */
MPT_API void mpt_device_memory(const mpt_device_t *dev, uint64_t *used, uint64_t *peak);
/** Restarts the peak from what is in use now. */
MPT_API void mpt_device_reset_peak(mpt_device_t *dev);

/* Device buffers.  Transfers are blocking; offsets and sizes in bytes. */
typedef struct mpt_buffer mpt_buffer_t;

MPT_API int mpt_buffer_create(mpt_device_t *dev, size_t bytes, mpt_buffer_t **out);
MPT_API void mpt_buffer_free(mpt_buffer_t *buf);
/** \return the size of the buffer in bytes. */
MPT_API size_t mpt_buffer_size(const mpt_buffer_t *buf);
MPT_API int mpt_buffer_write(mpt_buffer_t *buf, size_t offset, const void *src, size_t bytes);
MPT_API int mpt_buffer_read(const mpt_buffer_t *buf, size_t offset, void *dst, size_t bytes);
/** Copies between two buffers: on the device when both share a context,
 *  through host memory otherwise. */
MPT_API int mpt_buffer_copy(mpt_buffer_t *dst, size_t dst_offset, const mpt_buffer_t *src,
                            size_t src_offset, size_t bytes);

typedef enum { MPT_MAP_READ = 1, MPT_MAP_WRITE = 2 } mpt_map_flags_t;
/** Maps a range into host memory (zero-copy on unified-memory devices). */
MPT_API int mpt_buffer_map(mpt_buffer_t *buf, size_t offset, size_t bytes, int flags, void **ptr);
MPT_API int mpt_buffer_unmap(mpt_buffer_t *buf, void *ptr);

/* ------------------------------------------------------------------------ */
/* Topology: hwloc, live or from an XML file, and device locality.          */

typedef enum {
    MPT_LINK_SAME_DEVICE = 0, /* the same device */
    MPT_LINK_PCI_SWITCH = 1,  /* below a common PCI switch/bridge */
    MPT_LINK_HOST_BRIDGE = 2, /* below a common PCI host bridge */
    MPT_LINK_SAME_NUMA = 3,   /* same NUMA node (or same package), other bridges */
    MPT_LINK_CROSS_SOCKET = 4,
    MPT_LINK_CROSS_NODE = 5,
    MPT_LINK_UNKNOWN = 6
} mpt_link_class_t;

/** \return "same-device", "pci-switch", "host-bridge", "same-numa",
 *  "cross-socket", "cross-node" or "unknown". */
MPT_API const char *mpt_link_class_name(mpt_link_class_t c);
/** Parses such a name. \return MPT_OK or MPT_ERR_PARSE. */
MPT_API int mpt_link_class_parse(const char *name, mpt_link_class_t *out);

/* Where a device sits.  Plain data: it may be copied and compared. */
typedef struct {
    int node;              /* host (cluster node) index, 0 on a live machine */
    int numa_node;         /* logical index of its NUMA node, -1 if several/unknown */
    int package;           /* logical index of its package, -1 if several/unknown */
    unsigned cores;        /* cores in its cpuset */
    unsigned pus;          /* hardware threads in its cpuset */
    char cpus[128];        /* its cpuset as an OS-index list, e.g. "0-3,8-11" */
    char pci_address[16];  /* "dddd:bb:dd.f" or "" (CPU devices) */
    char osdev[32];        /* hwloc OS device name, e.g. "opencl0d1", or "" */
} mpt_locality_t;

typedef struct mpt_topology mpt_topology_t;

/** Loads a topology: from xml_path, else from MPT_TOPOLOGY_XML, else the
 *  live machine (PCI devices included).  MPT_ERR_TOPOLOGY with the file and
 *  reason when an XML file is unreadable or malformed. */
MPT_API int mpt_topology_load(const char *xml_path, mpt_topology_t **out);
MPT_API void mpt_topology_free(mpt_topology_t *topo);
/** \return 1 when the topology describes the machine we run on. */
MPT_API int mpt_topology_is_live(const mpt_topology_t *topo);
/** \return the number of packages, NUMA nodes, cores and PUs. */
MPT_API void mpt_topology_counts(const mpt_topology_t *topo, unsigned *packages,
                                 unsigned *numa_nodes, unsigned *cores, unsigned *pus);

/** Locality of an opened device: for a device with a PCI address, its PCI
 *  object in the topology (cpuset and NUMA node of its non-I/O ancestor);
 *  for a CPU device, the whole machine it runs on. */
MPT_API int mpt_topology_locate_device(const mpt_topology_t *topo, const mpt_device_t *dev,
                                       mpt_locality_t *out);
/** Locality of a PCI device given its address ("0000:03:00.0" or "03:00.0"),
 *  for topologies of other machines.  MPT_ERR_NOT_FOUND if absent. */
MPT_API int mpt_topology_locate_pci(const mpt_topology_t *topo, const char *pci_address,
                                    mpt_locality_t *out);
/** Locality of a CPU device that runs on every core of the machine. */
MPT_API int mpt_topology_locate_host(const mpt_topology_t *topo, mpt_locality_t *out);
/** \return the link class between two localities of this topology. */
MPT_API mpt_link_class_t mpt_topology_link(const mpt_topology_t *topo, const mpt_locality_t *a,
                                           const mpt_locality_t *b);
/** \return the number of GPU-like PCI devices in the topology (PCI class
 *  display controller or processing accelerator), in hwloc's order. */
MPT_API size_t mpt_topology_gpu_count(const mpt_topology_t *topo);
/** Locality of the i-th of them.  MPT_ERR_RANGE when i is out of range. */
MPT_API int mpt_topology_gpu(const mpt_topology_t *topo, size_t i, mpt_locality_t *out);
/** Binds the calling thread to the cores of a locality (live topology only). */
MPT_API int mpt_topology_bind_thread(const mpt_topology_t *topo, const mpt_locality_t *loc);

/* ------------------------------------------------------------------------ */
/* Profiles: what each device measures at, cached per device identity.      */

#define MPT_PROFILE_GEMM_SHAPES 4

typedef struct {
    unsigned m, n, k;
    double gflops;
} mpt_gemm_point_t;

/* Calibration (docs/planning.md): per kind of work, the device's measured
 * time over the cost model's prediction for the same work, from training
 * steps (mpt_trainer_calibrate).  The cost model multiplies its figures by
 * them.  A factor of 0 (or steps 0) means "not calibrated": 1 is used.
 * A CPU device's compute is corrected apart for the plans that run devices
 * on its cores beside it ("in company"): the cost model's figure for
 * shared cores errs differently from its figure alone (a device's BLAS
 * threads drop to one in company, for one).  Each of the two falls back
 * on the other while it has not been measured. */
typedef struct {
    double forward;   /* forward passes of its layers, alone */
    double backward;  /* backward passes, with the optimizer update (not modelled apart) */
    double transfer;  /* activations and gradients between pipeline stages */
    double allreduce; /* the data-parallel all-reduce the step waits for */
    uint64_t steps;   /* training steps they were measured over, alone or in
                       * company; 0: none */
    double company_forward;  /* forward and backward while devices on its */
    double company_backward; /* cores ran beside it */
    uint64_t company_steps;  /* of the steps, those in company; 0: none */
} mpt_calibration_t;

typedef struct {
    mpt_gemm_point_t gemm[MPT_PROFILE_GEMM_SHAPES]; /* 256^3, 1024^3, 2048^3, tall-skinny */
    double gemm_gflops; /* best of the points: the rate large GEMMs reach */
    double mem_gbps;    /* device memory bandwidth, copy kernel (read + write bytes) */
    double h2d_gbps;    /* host to device, blocking write of pageable memory */
    double d2h_gbps;    /* device to host, blocking read into pageable memory */
    double launch_us;   /* enqueue + finish of an empty kernel */
    double measured_at; /* seconds since the epoch */
    double noise;       /* relative spread of the repeats: (max - min) / median of the
                         * noisiest figure; 0 when not measured (cluster files) */
    double shared_gemm_gflops; /* GEMM rate while every device sharing its cores
                                * ran at once (mpt_cluster_local), 0: not measured */
    double shared_mem_gbps;    /* memory bandwidth likewise, 0: not measured */
    double shared_devices;     /* how many devices ran on its cores at once for the
                                * two figures above, this one included; 0: not
                                * known (the figures then apply as they are) */
    mpt_calibration_t calibration; /* what training measured against the cost model */
} mpt_profile_t;

typedef enum {
    MPT_PROFILE_USE_CACHE = 0, /* measure only when no cached profile exists */
    MPT_PROFILE_REFRESH = 1    /* measure again and rewrite the cache */
} mpt_profile_mode_t;

/** Measures a device (a few seconds; longer when kernels compile cold). */
MPT_API int mpt_profile_measure(mpt_device_t *dev, mpt_profile_t *out);
/** Cached profile of the device if present, else measures and caches it.
 *  *from_cache tells which (may be NULL). */
MPT_API int mpt_profile_get(mpt_device_t *dev, mpt_profile_mode_t mode, mpt_profile_t *out,
                            int *from_cache);
/** The cache directory: $XDG_CACHE_HOME/mpt, else ~/.cache/mpt. Writes at
 *  most size bytes including the NUL; MPT_ERR_RANGE if it does not fit. */
MPT_API int mpt_profile_cache_dir(char *buf, size_t size);
/** Reads/writes a profile as JSON in file `path`, keyed by identity:
 *  loading fails with MPT_ERR_NOT_FOUND when the file holds another key. */
MPT_API int mpt_profile_save(const char *path, const char *identity, const mpt_profile_t *p);
MPT_API int mpt_profile_load(const char *path, const char *identity, mpt_profile_t *p);
/** Stores a calibration with the device's cached profile (measuring the
 *  profile first when none is cached), so that mpt_cluster_local, and so
 *  every later plan, prices the device with it. */
MPT_API int mpt_profile_save_calibration(mpt_device_t *dev, const mpt_calibration_t *cal);

/* ------------------------------------------------------------------------ */
/* Clusters: the devices a plan is made for, here (mpt_cluster_local) or   */
/* not (a cluster file, for offline planning; docs/cluster.md).             */

typedef struct {
    mpt_device_info_t info; /* index = position in the cluster */
    mpt_locality_t locality;
    mpt_profile_t profile;
} mpt_cluster_device_t;

typedef struct mpt_cluster mpt_cluster_t;

/** Loads a cluster description JSON.  MPT_ERR_PARSE naming the file, the
 *  JSON path and the reason on malformed input. */
MPT_API int mpt_cluster_load(const char *path, mpt_cluster_t **out);
/** Describes the live machine (opened devices, their locality and profiles)
 *  in the same structures. */
MPT_API int mpt_cluster_from_devices(const mpt_devices_t *set, const mpt_topology_t *topo,
                                     const mpt_profile_t *profiles, mpt_cluster_t **out);
MPT_API void mpt_cluster_free(mpt_cluster_t *cluster);
/** Writes the cluster as cluster-description JSON into *text, which the
 *  caller releases with free().  Devices never profiled get "profile": null;
 *  mpt_cluster_load accepts the text back once every device has a profile. */
MPT_API int mpt_cluster_to_json(const mpt_cluster_t *cluster, char **text);
/** Caps what the planner may use of device i (its global_mem_bytes and
 *  largest allocation become at most bytes; 0 changes nothing): the
 *  planner's side of --device-memory, and of a cluster file's per-device
 *  "memory_limit_bytes".  MPT_ERR_RANGE when i is out of range. */
MPT_API int mpt_cluster_set_memory_limit(mpt_cluster_t *cluster, size_t i, uint64_t bytes);
/** \return the cluster's name ("" when none). */
MPT_API const char *mpt_cluster_name(const mpt_cluster_t *cluster);
/** \return the number of nodes (hosts) and of devices. */
MPT_API size_t mpt_cluster_node_count(const mpt_cluster_t *cluster);
MPT_API size_t mpt_cluster_device_count(const mpt_cluster_t *cluster);
/** \return the i-th device, NULL when out of range. */
MPT_API const mpt_cluster_device_t *mpt_cluster_device(const mpt_cluster_t *cluster, size_t i);
/** \return the link class between devices i and j. */
MPT_API mpt_link_class_t mpt_cluster_link(const mpt_cluster_t *cluster, size_t i, size_t j);
/** Network between nodes: bandwidth in GB/s and latency in microseconds. */
MPT_API void mpt_cluster_network(const mpt_cluster_t *cluster, double *gbps, double *latency_us);
/** Sets device i's calibration (mpt_profile_t.calibration): later plans
 *  and simulations on the cluster use it.  MPT_ERR_RANGE when i is out of
 *  range, MPT_ERR_INVALID for a negative or non-finite factor. */
MPT_API int mpt_cluster_set_calibration(mpt_cluster_t *cluster, size_t i,
                                        const mpt_calibration_t *cal);

/* ------------------------------------------------------------------------ */
/* Models (docs/model.md): a sequence of layers read from JSON (a file or  */
/* a string: see "Embedding" below for the string and the builder).        */

typedef struct mpt_model mpt_model_t;

/** Reads a model description; MPT_ERR_PARSE naming the file, the layer and
 *  the reason when a kind is unknown, a field missing or shapes do not chain. */
MPT_API int mpt_model_load(const char *path, mpt_model_t **out);
MPT_API void mpt_model_free(mpt_model_t *model);
/** \return the model's name. */
MPT_API const char *mpt_model_name(const mpt_model_t *model);
/** \return the number of trainable parameters. */
MPT_API size_t mpt_model_param_count(const mpt_model_t *model);
/** \return the floats of one input sample and the number of classes. */
MPT_API size_t mpt_model_input_floats(const mpt_model_t *model);
MPT_API int mpt_model_classes(const mpt_model_t *model);
/** \return the labels of one sample: 1 for a classifier; for a language
 *  model (docs/model.md: embedding ... lm_head), its positions, each
 *  labelled with the next token, so that a step takes batch x positions
 *  labels and its loss is the mean over all of them. */
MPT_API size_t mpt_model_labels_per_sample(const mpt_model_t *model);
/** Writes a table of the layers (kind, output shape, parameters, forward
 *  MFLOP per sample) into *text, released by the caller with free(). */
MPT_API int mpt_model_describe(const mpt_model_t *model, char **text);

/* ------------------------------------------------------------------------ */
/* Datasets: IDX (MNIST, Fashion-MNIST), plain or gzip; or arrays in       */
/* memory (mpt_dataset_from_memory, under "Embedding" below).               */

typedef struct mpt_dataset mpt_dataset_t;

/** Loads split "train" or "t10k" of an IDX directory (files
 *  <split>-images-idx3-ubyte[.gz] and <split>-labels-idx1-ubyte[.gz]),
 *  pixels normalised with Fashion-MNIST's mean and deviation. */
MPT_API int mpt_dataset_load_idx(const char *dir, const char *split, mpt_dataset_t **out);
MPT_API void mpt_dataset_free(mpt_dataset_t *data);
/** \return samples, floats per sample, classes; and the data itself
 *  (count x sample_floats floats, count labels). */
MPT_API size_t mpt_dataset_count(const mpt_dataset_t *data);
MPT_API size_t mpt_dataset_sample_floats(const mpt_dataset_t *data);
MPT_API int mpt_dataset_classes(const mpt_dataset_t *data);
MPT_API const float *mpt_dataset_images(const mpt_dataset_t *data);
MPT_API const int32_t *mpt_dataset_labels(const mpt_dataset_t *data);

/* ------------------------------------------------------------------------ */
/* Token data for language models (docs/data.md).                           */

typedef struct mpt_tokens mpt_tokens_t;

/** Loads a token file: an llm.c shard (a header of 256 little-endian int32,
 *  magic 20240520, version 1, the token count, then that many uint16
 *  tokens), a raw uint16 file (nanoGPT's .bin: the name ends in .bin and it
 *  has no llm.c magic), or anything else as text, one token per byte
 *  (vocabulary 256).  The magic decides first, then the name.  A shard's
 *  size must be exactly 1024 + 2 * count.  MPT_ERR_NOT_FOUND or
 *  MPT_ERR_IO for a missing or unreadable file; MPT_ERR_PARSE naming the
 *  file and the numbers when a shard is shorter than its header, has
 *  another version or a count that does not match its size, a raw file
 *  has an odd size, or a file holds no token. */
MPT_API int mpt_tokens_load(const char *path, mpt_tokens_t **out);
/** Frees a set; views made by mpt_tokens_split must be freed first. */
MPT_API void mpt_tokens_free(mpt_tokens_t *tokens);
/** \return the tokens; the vocabulary (256 for text, else the largest id
 *  + 1); "text", "llm.c shard" or "uint16". */
MPT_API size_t mpt_tokens_count(const mpt_tokens_t *tokens);
MPT_API size_t mpt_tokens_vocab(const mpt_tokens_t *tokens);
MPT_API const char *mpt_tokens_format(const mpt_tokens_t *tokens);
/** MPT_ERR_PARSE naming the file, the first position and the id when a
 *  token is not below vocab (a model's vocabulary). */
MPT_API int mpt_tokens_check_vocab(const mpt_tokens_t *tokens, size_t vocab);
/** Views of the tokens sharing all's memory, nothing copied: *val is the
 *  last floor(count * val_fraction) tokens (NULL when that is 0, e.g.
 *  val_fraction 0), *train the rest (never empty).  `all` must outlive
 *  both views: free them before it.  val_fraction in [0, 1), else
 *  MPT_ERR_INVALID. */
MPT_API int mpt_tokens_split(mpt_tokens_t *all, double val_fraction, mpt_tokens_t **train,
                             mpt_tokens_t **val);
/** `batch` windows of context + 1 tokens at random starts: x[b*context + i]
 *  = token[start_b + i] (as a float), y[...] = token[start_b + i + 1].
 *  start_b, uniform in [0, count - context), is drawn from (seed, index, b)
 *  alone (stream MPT_RNG_WINDOWS keyed by index, docs/data.md): every
 *  process, any batch size and a resumed run read the same window b of
 *  batch `index`.  x and y hold batch * context values.  MPT_ERR_INVALID
 *  naming the file when it has fewer than context + 1 tokens ("FILE: 10
 *  tokens, shorter than the context of 16 plus one"); MPT_ERR_RANGE when
 *  index >= 2^56. */
MPT_API int mpt_tokens_batch(const mpt_tokens_t *tokens, size_t context, size_t batch,
                             uint64_t seed, uint64_t index, float *x, int32_t *y);
/** \return the consecutive, non-overlapping windows of context tokens
 *  (each with its next-token labels) the set holds. */
MPT_API size_t mpt_tokens_windows(const mpt_tokens_t *tokens, size_t context);
/** Windows first .. first + count - 1 of those, as mpt_tokens_batch lays
 *  them out: window w is tokens w*context .. w*context + context, so all of
 *  them cover the set but its last (count - 1) % context tokens
 *  (validation over the whole set).  MPT_ERR_RANGE beyond the last one. */
MPT_API int mpt_tokens_sequential(const mpt_tokens_t *tokens, size_t context, size_t first,
                                  size_t count, float *x, int32_t *y);

/* A batch loader over any dataset (IDX or from memory): a seeded shuffle
 * per epoch (a pure function of the seed and the epoch), batches assembled
 * on a background thread. */
typedef struct mpt_loader mpt_loader_t;

MPT_API int mpt_loader_create(const mpt_dataset_t *data, size_t batch, uint64_t seed,
                              mpt_loader_t **out);
MPT_API void mpt_loader_free(mpt_loader_t *loader);
/** \return the full batches in one epoch (the last partial one is dropped). */
MPT_API size_t mpt_loader_batches(const mpt_loader_t *loader);
/** Continues from batch batch_index of epoch (on resume). */
MPT_API int mpt_loader_seek(mpt_loader_t *loader, uint64_t epoch, size_t batch_index);
/** The next batch; pointers valid until the next call. */
MPT_API int mpt_loader_next(mpt_loader_t *loader, const float **images, const int32_t **labels,
                            uint64_t *epoch, size_t *batch_index);

/* ------------------------------------------------------------------------ */
/* Training: the configuration every trainer takes, and a trainer on one  */
/* device.                                                                  */

typedef enum { MPT_OPTIM_SGD = 0, MPT_OPTIM_ADAMW = 1 } mpt_optimizer_t;
typedef enum { MPT_SCHEDULE_CONSTANT = 0, MPT_SCHEDULE_COSINE = 1 } mpt_schedule_t;
/* What a step whose loss or global gradient norm is NaN or infinite does. */
typedef enum {
    MPT_NONFINITE_STOP = 0, /* nothing in the step: mpt_trainer_fit ends the run there
                             * (MPT_ERR_DIVERGED) */
    MPT_NONFINITE_SKIP = 1  /* the step applies no update (see on_nonfinite) */
} mpt_nonfinite_t;

typedef struct {
    size_t batch;        /* samples per step (128); a planned trainer's must be
                          * the plan's (mpt_plan_request_t.batch) */
    uint64_t seed;       /* parameters, data order, dropout (1) */
    mpt_optimizer_t optimizer;
    double lr;           /* peak learning rate (0.05, SGD's; for AdamW
                          * mpt_train_config_use_optimizer sets 1e-3) */
    double momentum;     /* SGD (0.9) */
    double weight_decay; /* SGD: L2 added to the gradient; AdamW: decoupled (0) */
    double beta1, beta2, eps; /* AdamW (0.9, 0.999, 1e-8) */
    double clip_norm;    /* clip the global gradient norm to this; 0: off (0) */
    mpt_schedule_t schedule; /* (cosine) */
    uint64_t warmup_steps; /* linear warm-up, cosine schedule only (0) */
    uint64_t total_steps;  /* cosine decays to min_lr at this step; 0, the
                            * default: the run's length is not known, and
                            * the rate stays at lr after the warm-up (set
                            * it, as mpt-train does, for the decay) */
    double min_lr;         /* (0) */
    double comm_timeout_s; /* under a job: a wait on another rank longer than this
                            * fails the step naming that rank (a stopped or hung
                            * process); 0, the default: 300 s, or 100 predicted
                            * steps when longer.  Not part of a checkpoint's
                            * configuration. */
    /* MPT_NONFINITE_SKIP: every step reduces its global gradient norm and
     * loss before the optimizer runs; when either is not finite, no device
     * updates (parameters and optimizer state stay as they were, the
     * optimizer's update count too: AdamW's bias correction and SGD's first
     * step count updates), mpt_step_stats_t.skipped says so, and the step
     * still counts (data, schedule and dropout move on).  The step after
     * max_skips skipped steps in a row fails with MPT_ERR_DIVERGED.  Costs
     * a norm every step and the loss read before the update.  Neither is
     * part of a checkpoint's configuration; the ranks of a job must agree. */
    mpt_nonfinite_t on_nonfinite; /* (MPT_NONFINITE_STOP) */
    uint64_t max_skips;           /* (10); at least 1 with MPT_NONFINITE_SKIP */
} mpt_train_config_t;

/** Fills the defaults shown above: SGD, and the cosine schedule, whose
 *  decay starts once total_steps is set (mpt-train's defaults too). */
MPT_API void mpt_train_config_default(mpt_train_config_t *config);
/** \return the learning rate of a configuration at step (0-based). */
MPT_API double mpt_train_lr_at(const mpt_train_config_t *config, uint64_t step);

typedef struct {
    uint64_t step;    /* steps done, this one included */
    double loss;      /* mean loss of the batch */
    double lr;        /* learning rate used */
    double grad_norm; /* global gradient norm before clipping (0 unless clipping
                       * or MPT_NONFINITE_SKIP) */
    int skipped;      /* MPT_NONFINITE_SKIP: the loss or the norm was not finite,
                       * no update was applied */
} mpt_step_stats_t;

/* Where the data stood when a checkpoint was written. */
typedef struct {
    uint64_t epoch;
    uint64_t batch_index; /* the next batch to train on, within epoch */
} mpt_data_position_t;

typedef struct mpt_trainer mpt_trainer_t;

/** A trainer for the model on one device: the plan of one replica, one
 *  stage, one device, run by the same engine as every plan, so that every
 *  trainer call below works alike on it.  Parameters initialised from the
 *  seed by a counter-based RNG (identical on every device and plan).  The
 *  model must outlive the trainer. */
MPT_API int mpt_trainer_create(const mpt_model_t *model, mpt_device_t *dev,
                               const mpt_train_config_t *config, mpt_trainer_t **out);
MPT_API void mpt_trainer_free(mpt_trainer_t *trainer);
/** One step on config.batch samples (images: batch x input floats;
 *  labels: batch x mpt_model_labels_per_sample, a language model's next
 *  tokens position by position). */
MPT_API int mpt_trainer_step(mpt_trainer_t *trainer, const float *images, const int32_t *labels,
                             mpt_step_stats_t *stats);
/** Mean loss and accuracy over count samples, dropout off (a language
 *  model's: per token, next-token accuracy). */
MPT_API int mpt_trainer_evaluate(mpt_trainer_t *trainer, const float *images,
                                 const int32_t *labels, size_t count, double *mean_loss,
                                 double *accuracy);
/** The logits of count samples (dropout off): count x labels_per_sample x
 *  classes floats into logits, e.g. to sample text from a language model.
 *  Under any plan (through replica 0's pipeline; on every rank of a job). */
MPT_API int mpt_trainer_logits(mpt_trainer_t *trainer, const float *inputs, size_t count,
                               float *logits);
/** \return the steps done. */
MPT_API uint64_t mpt_trainer_steps(const mpt_trainer_t *trainer);

/** Writes a checkpoint (safetensors: parameters as "<layer>.<name>",
 *  optimizer state, metadata: model, the whole configuration, step, data
 *  position, CRC-32 of the metadata and the data) atomically: temporary
 *  file, fsync, rename.  A crash mid-write leaves the previous file intact. */
MPT_API int mpt_trainer_save(mpt_trainer_t *trainer, const char *path,
                             const mpt_data_position_t *position);
/** Restores parameters, optimizer state and step from a checkpoint of the
 *  same model and configuration; MPT_ERR_PARSE naming the file and reason
 *  (the differing setting, the failed checksum...) when it is truncated,
 *  corrupted, edited, of another model or configuration, and then the
 *  trainer is unchanged; MPT_ERR_INVALID naming the first non-finite float
 *  when it holds NaN or infinite values, unless they are allowed
 *  (mpt_trainer_allow_nonfinite_checkpoint).  A device error while
 *  restoring leaves it part restored: free it. */
MPT_API int mpt_trainer_load(mpt_trainer_t *trainer, const char *path,
                             mpt_data_position_t *position);
/** Lets mpt_trainer_load take a checkpoint holding NaN or infinite values
 *  (allow not 0), logging a warning that names how many: to inspect a
 *  diverged run's state.  Such a state is still never written. */
MPT_API void mpt_trainer_allow_nonfinite_checkpoint(mpt_trainer_t *trainer, int allow);

/* ------------------------------------------------------------------------ */
/* Plans (docs/plan.md): which device runs which layers, decided from the   */
/* devices' measured costs; predicted by a step simulator.                  */

typedef struct mpt_plan mpt_plan_t;

typedef enum { MPT_PIPE_AUTO = -1, MPT_PIPE_GPIPE = 0, MPT_PIPE_1F1B = 1 } mpt_pipe_schedule_t;

/** How data-parallel replicas sum their gradients: one ring over all of
 *  them, or hierarchically (inside each process, then a ring across
 *  processes, then back inside: docs/mpi.md). */
typedef enum {
    MPT_ALLREDUCE_AUTO = -1,
    MPT_ALLREDUCE_RING = 0,
    MPT_ALLREDUCE_HIERARCHICAL = 1
} mpt_allreduce_t;

typedef struct {
    size_t batch;                 /* global batch (128): the trainer's config.batch
                                   * must be the same (else MPT_ERR_INVALID) */
    mpt_optimizer_t optimizer;    /* decides the optimizer state's memory (SGD) */
    size_t dp, pp, tp;            /* data, pipeline, tensor parallel degrees; 0: choose */
    size_t microbatches;          /* 0: choose */
    mpt_pipe_schedule_t schedule; /* MPT_PIPE_AUTO: choose */
    mpt_allreduce_t allreduce;    /* MPT_ALLREDUCE_AUTO: the faster by the cost model */
    int all_devices;              /* 1: use every device of the cluster; 0: the planner
                                   * may leave devices idle when that is predicted
                                   * faster (mpt_plan_describe says which and why) */
} mpt_plan_request_t;

/** Fills the defaults shown above (batch: mpt_train_config_default's). */
MPT_API void mpt_plan_request_default(mpt_plan_request_t *request);
/** Plans the model over the devices of the cluster, leaving idle those
 *  whose company is predicted to slow the step (unless
 *  request->all_devices): the fastest
 *  configuration by simulated step time, every other one kept as an
 *  alternative.  MPT_ERR_DEVICE_MEMORY naming the device and bytes when the
 *  model fits nowhere. */
MPT_API int mpt_plan_create(const mpt_model_t *model, const mpt_cluster_t *cluster,
                            const mpt_plan_request_t *request, mpt_plan_t **out);
/** Reads a plan JSON and checks it against the model and the cluster. */
MPT_API int mpt_plan_load(const char *path, const mpt_model_t *model,
                          const mpt_cluster_t *cluster, mpt_plan_t **out);
MPT_API void mpt_plan_free(mpt_plan_t *plan);
/** The plan as JSON (docs/plan.md); the caller frees *text. */
MPT_API int mpt_plan_to_json(const mpt_plan_t *plan, char **text);
/** A human summary: per stage the devices, layers, memory used/available
 *  and compute time; the bottleneck, bubble, predicted step time and
 *  samples/s; why it beat the runner-up; with explain, every alternative. */
MPT_API int mpt_plan_describe(const mpt_plan_t *plan, const mpt_model_t *model,
                              const mpt_cluster_t *cluster, int explain, char **text);
/** The simulated step time of the best uniform split (equal layers per
 *  stage, equal batch per replica, equal tensor fractions; memory not
 *  checked) for the same request: the baseline of a speed-blind planner. */
MPT_API int mpt_plan_uniform_step(const mpt_model_t *model, const mpt_cluster_t *cluster,
                                  const mpt_plan_request_t *request, double *step_s);
/** Simulates one step: its time and bubble fraction, and (trace_json not
 *  NULL) the timeline as Chrome Trace Event JSON, freed by the caller. */
MPT_API int mpt_plan_simulate(const mpt_plan_t *plan, const mpt_model_t *model,
                              const mpt_cluster_t *cluster, double *step_s, double *bubble,
                              char **trace_json);

/* ------------------------------------------------------------------------ */
/* Embedding: everything a program needs without files (docs/library.md).  */
/* The text forms are the file formats, parsed by the same code with the   */
/* same messages (naming "model text", "plan text", "model builder").      */

/** A model from the text of a model description (docs/model.md). */
MPT_API int mpt_model_from_json(const char *text, mpt_model_t **out);
/** The model's description as JSON text (what a file would hold), freed
 *  by the caller: a built model can be saved and loaded back. */
MPT_API int mpt_model_to_json(const mpt_model_t *model, char **text);

/* A model built layer by layer in C.  The builder writes the description
 * docs/model.md defines and mpt_model_builder_build parses it like a
 * file's, so kinds, attributes and shapes follow one set of rules. */
typedef struct mpt_model_builder mpt_model_builder_t;

/** Starts a model called name (NULL: "model") whose samples have the shape
 *  dims[0..ndims) ([features] or [channels, height, width]). */
MPT_API int mpt_model_builder_new(const char *name, size_t ndims, const size_t *dims,
                                  mpt_model_builder_t **out);
/** Appends a layer: its kind and its attributes as "key=value" items
 *  separated by spaces or commas, values numbers (NULL or "": none), e.g.
 *  ("linear", "units=64"), ("conv2d", "channels=16 kernel=3 padding=1").
 *  MPT_ERR_INVALID for an item that is not key=number or a key given twice
 *  (the builder is then unchanged); unknown kinds, attributes and shapes
 *  that do not chain are reported by mpt_model_builder_build. */
MPT_API int mpt_model_builder_add(mpt_model_builder_t *builder, const char *kind,
                                  const char *attrs);
/** The model of the layers added so far (the last must be the loss):
 *  MPT_ERR_PARSE naming "model builder: layers[i] (kind)" and the reason,
 *  as mpt_model_load.  The builder stays usable and must be freed. */
MPT_API int mpt_model_builder_build(const mpt_model_builder_t *builder, mpt_model_t **out);
MPT_API void mpt_model_builder_free(mpt_model_builder_t *builder);

/** A dataset from the caller's arrays: count samples of sample_floats
 *  floats (images, count x sample_floats) with labels in [0, classes).
 *  Both arrays are copied: the caller may free them on return.
 *  MPT_ERR_INVALID naming the sample when a label is out of range or a
 *  float is not finite.  mpt_loader_create then batches it with the same
 *  seeded shuffle as a file's. */
MPT_API int mpt_dataset_from_memory(size_t count, size_t sample_floats, int classes,
                                    const float *images, const int32_t *labels,
                                    mpt_dataset_t **out);
/** A token set from the caller's ids (copied), format "memory": vocab is
 *  the model's vocabulary (0: the largest id + 1), at most 65536 (ids are
 *  stored as uint16, as in llm.c shards).  MPT_ERR_INVALID naming the
 *  position when an id is negative or not below vocab.  mpt_tokens_split,
 *  mpt_tokens_batch and mpt_tokens_sequential work on it as on a file's. */
MPT_API int mpt_tokens_from_memory(const int32_t *ids, size_t count, size_t vocab,
                                   mpt_tokens_t **out);

/** A plan from its JSON text (what mpt_plan_to_json writes, docs/plan.md),
 *  checked against the model and the cluster as mpt_plan_load checks a
 *  file. */
MPT_API int mpt_plan_from_json(const char *text, const mpt_model_t *model,
                               const mpt_cluster_t *cluster, mpt_plan_t **out);

/** The opened devices of this machine as a cluster, ready for
 *  mpt_plan_create: their locality in topo (NULL: the live topology,
 *  loaded and released here) and their profiles from the cache, each
 *  measured once first (seconds per device; mpt_profile_get).  What
 *  mpt-train and mpt-plan plan for. */
MPT_API int mpt_cluster_local(const mpt_devices_t *devices, const mpt_topology_t *topo,
                              mpt_cluster_t **out);

/** Sets the optimizer and the peak learning rate mpt uses for it (SGD
 *  0.05, AdamW 1e-3; mpt-train's when --lr is not given). */
MPT_API void mpt_train_config_use_optimizer(mpt_train_config_t *config,
                                            mpt_optimizer_t optimizer);

/* ------------------------------------------------------------------------ */
/* Training a plan on several devices.                                      */

/** A trainer that runs a plan (mpt_plan_create, mpt_plan_load) on several
 *  devices at once: pipeline stages exchange activations and gradients,
 *  data-parallel replicas sum their gradients with ring all-reduces, one
 *  worker thread per device.  The plan's device ids index `devices` (as in
 *  a cluster made by mpt_cluster_local or mpt_cluster_from_devices of the
 *  same set).  `topo` and
 *  `cluster` (both optional) bind each worker to its device's cores.
 *  Every plan, tensor-parallel ones included, trains the same model as one
 *  device, up to the order of float sums.  MPT_ERR_INVALID when the plan
 *  was made for another batch than config->batch (one batch size: give
 *  mpt_plan_request_t.batch and mpt_train_config_t.batch the same value).
 *  MPT_ERR_UNSUPPORTED for a model with dropout split into micro-batches or
 *  replicas, for data-parallel replicas whose tensor-parallel stages are
 *  sliced differently, and for a tied weight (lm_head) across stages when
 *  one of them is tensor-parallel.  The model,
 *  devices, plan, topology and cluster must outlive the trainer.  After a
 *  device error (reported with the device) the trainer refuses further
 *  steps: free it. */
MPT_API int mpt_trainer_create_planned(const mpt_model_t *model, mpt_devices_t *devices,
                                       const mpt_plan_t *plan, const mpt_train_config_t *config,
                                       const mpt_topology_t *topo, const mpt_cluster_t *cluster,
                                       mpt_trainer_t **out);

/* ------------------------------------------------------------------------ */
/* Jobs of several processes (mpirun -np N, one rank per node or per        */
/* device; docs/mpi.md).  Without MPI, or outside mpirun, the world is this */
/* one process and each function below does what one process needs.        */

typedef struct mpt_world mpt_world_t;

/** Joins the job: under mpirun (mpt built --with-mpi) initialises MPI with
 *  MPI_THREAD_MULTIPLE (unless the program did already) and, unless
 *  POCL_CACHE_DIR is set, gives each rank of a host its own PoCL kernel
 *  cache under $XDG_CACHE_HOME/mpt (processes sharing one can crash).
 *  Call it first, before any OpenCL use.  MPT_ERR_UNSUPPORTED when started
 *  by mpirun but built without MPI. */
MPT_API int mpt_world_init(int *argc, char ***argv, mpt_world_t **out);
/** Leaves the job (MPI_Finalize when mpt_world_init initialised MPI). */
MPT_API void mpt_world_free(mpt_world_t *world);
/** \return this process's rank (0 outside mpirun) and the job's size. */
MPT_API int mpt_world_rank(const mpt_world_t *world);
MPT_API int mpt_world_size(const mpt_world_t *world);
/** Collective: every rank's cluster of its own devices (mpt_cluster_local)
 *  merged into the job's cluster, rank 0's devices first, then rank 1's...;
 *  ranks on one host share its node, other hosts are cross-node.  Every
 *  rank gets the same cluster; a failure on rank 0 fails every rank's call
 *  (MPT_ERR_ABORTED on the others) rather than leaving them waiting. */
MPT_API int mpt_world_cluster(mpt_world_t *world, const mpt_cluster_t *local,
                              mpt_cluster_t **out);
/** Collective, after mpt_world_cluster: devices of different ranks on one
 *  host that share cores (one process's PoCL CPU device beside another's)
 *  are measured running together, as mpt_cluster_local measures the
 *  devices of one process (each device alone, then the group at once, in
 *  alternating rounds), and their concurrent figures set in the job's
 *  `cluster` on every rank.  `devices` are this rank's.  A few seconds per
 *  group; nothing to do in one process or without such devices.  A group
 *  that any rank fails to measure keeps the estimate on every rank
 *  (logged). */
MPT_API int mpt_world_measure_shared(mpt_world_t *world, const mpt_devices_t *devices,
                                     mpt_cluster_t *cluster);
/** \return the job's-cluster index of this rank's first device (its
 *  device i is cluster device first + i), after mpt_world_cluster. */
MPT_API int mpt_world_first_device(const mpt_world_t *world);
/** Collective: rank 0's *plan (made or loaded there for the job's cluster)
 *  replaces *plan on every other rank (whatever they passed is freed). */
MPT_API int mpt_world_share_plan(mpt_world_t *world, const mpt_model_t *model,
                                 const mpt_cluster_t *cluster, mpt_plan_t **plan);
/** Collective: the job's plan for the job's cluster.  Rank 0 loads
 *  plan_file (mpt-plan --json output) or, when it is NULL, plans by request
 *  (mpt_plan_create); every rank gets rank 0's plan.  A failure on rank 0
 *  fails every rank's call (MPT_ERR_ABORTED on the others). */
MPT_API int mpt_world_plan(mpt_world_t *world, const mpt_model_t *model,
                           const mpt_cluster_t *cluster, const char *plan_file,
                           const mpt_plan_request_t *request, mpt_plan_t **out);
/** A planned trainer over the whole job: `devices` are this rank's (as
 *  given to mpt_world_cluster), the plan's device ids index the job's
 *  cluster.  Each rank runs the workers of its own devices; activations,
 *  gradients and all-reduces between ranks go over MPI.  Every call on the
 *  trainer is then collective: every rank steps, evaluates, saves and
 *  loads in the same order with the same data, and gets the job's loss,
 *  accuracy and per-device statistics; mpt_trainer_save writes the file on
 *  rank 0 only.  A device error on a rank fails that rank's call with an
 *  error naming the rank and the device, while the other ranks keep waiting
 *  for it (MPI has no way to tell them): the program must then end the
 *  process with a non-zero status, as mpt-train does, and mpirun ends every
 *  other rank.  With one rank: mpt_trainer_create_planned. */
MPT_API int mpt_trainer_create_world(const mpt_model_t *model, mpt_devices_t *devices,
                                     const mpt_plan_t *plan, const mpt_train_config_t *config,
                                     const mpt_topology_t *topo, const mpt_cluster_t *cluster,
                                     mpt_world_t *world, mpt_trainer_t **out);

/* What one device of a trainer did in the last step. */
typedef struct {
    int device;             /* the plan's device id (the index in the device set) */
    int replica, stage;
    double step_s;          /* wall time of its part of the step */
    double allreduce_s;     /* wall time of its gradient all-reduces */
    size_t allreduce_bytes; /* bytes it all-reduced */
    size_t memory_bytes;    /* device memory in mpt buffers on its device at the end
                             * of the last step (mpt_device_memory) */
    int member;             /* its position in the stage's tensor-parallel group */
    double tp_s;            /* wall time of its tensor-parallel collectives */
    size_t tp_bytes;        /* bytes they moved */
    double busy;            /* fraction of the last report's window its kernels ran
                             * (mpt_trainer_set_timing); NaN when unknown (timing
                             * off).  Under a job each rank measures its own and
                             * every rank's report gathers them all */
    unsigned long kernels;  /* mpt's own kernels it launched in the last step */
    unsigned long blas_calls; /* BLAS routines it ran in the last step: CLBlast
                             * calls, or host-BLAS calls on mapped buffers (one
                             * per map: a linear layer's GEMMs, bias and
                             * activation make one); with busy, for every rank's */
    /* The last step's phases on its worker, host wall-clock (on a device
     * that runs asynchronously the time shows where the host waits for
     * it): what mpt_trainer_calibrate compares with the cost model. */
    double forward_s;       /* its forward passes, waits for activations excluded */
    double backward_s;      /* its backward passes, waits for gradients excluded */
    double p2p_s;           /* waiting for and sending activations and gradients */
    double reduce_wait_s;   /* after its backward, waiting for its all-reduces */
    double update_s;        /* clipping, the optimizer update, reading the losses */
    size_t peak_memory_bytes; /* the most device memory in mpt buffers at once on its
                             * device since the trainer was made (mpt_device_memory) */
    double predicted_memory_bytes; /* what the plan predicted for it (0: unknown) */
    int rank;               /* the process (MPI rank) that runs it; 0 in one process */
    /* Achieved rates over the last report's window: the FLOPs and device
     * memory bytes the cost model counts for its part of the window's
     * steps (forward, backward, a recomputed forward; the optimizer update
     * is not counted) over the time its kernels ran.  NaN when that time
     * is unknown (timing off). */
    double gflops;          /* GFLOP/s (1e9 per second) */
    double mem_gbps;        /* GB/s of device memory traffic */
    double profile_gflops;  /* what its profile measured: the best GEMM rate, and */
    double profile_mem_gbps; /* the copy kernel's bandwidth; NaN without a profile */
    uint64_t memory_capacity_bytes; /* what it may hold: its global memory or the
                             * cap set on it (--device-memory); 0 when unknown */
    /* Its time blocked on other devices in the last step, split where the
     * peer's side of each message came: before, waiting for the peer;
     * after, moving the bytes.  Point-to-point messages, tensor-parallel
     * collectives, the tied weight and the norm on its worker's thread;
     * the data-parallel all-reduce buckets on its reducer's.  Across MPI
     * ranks the whole wait is waiting (MPI does not say when a message
     * began to arrive). */
    double peer_wait_s, transfer_s;
    double allreduce_wait_s, allreduce_transfer_s;
} mpt_device_step_t;

/** Records the timeline of every following step of a trainer (forward and
 *  backward per micro-batch, waits for a neighbour's data and for sends,
 *  gradient all-reduce buckets and the wait for them, tensor-parallel
 *  collectives, the tied-weight exchange, the update; on a host track the
 *  training loop's batch loads, evaluations and checkpoints);
 *  mpt_trainer_trace_json returns this rank's as Chrome Trace Event JSON
 *  (freed by the caller), one track per device.  Under a job it is
 *  collective: rank 0 then estimates each rank's clock offset
 *  (mpt_trainer_write_trace). */
MPT_API int mpt_trainer_set_trace(mpt_trainer_t *trainer, int on);
MPT_API int mpt_trainer_trace_json(const mpt_trainer_t *trainer, char **json);
/** \return the devices (workers) of a trainer: 1 for mpt_trainer_create. */
MPT_API size_t mpt_trainer_device_count(const mpt_trainer_t *trainer);
MPT_API int mpt_trainer_device_stats(const mpt_trainer_t *trainer, size_t i,
                                     mpt_device_step_t *out);

/* ------------------------------------------------------------------------ */
/* Per-step figures, metrics files and the progress line.                   */
/*                                                                          */
/* A trainer keeps a window of the steps since its last report; a report    */
/* closes it.  mpt-train logs one report every --log-every steps with       */
/* mpt_metrics_step and draws mpt_progress_line on a terminal: a program    */
/* that links libmpt gets the same figures the same way.                    */

typedef struct {
    uint64_t step;          /* steps done */
    uint64_t total_steps;   /* of the run (the configuration's), 0: unknown */
    uint64_t steps;         /* in the window */
    double seconds;         /* the window's wall time */
    double loss;            /* mean loss of the window's steps that updated (NaN:
                             * none did) */
    double lr;              /* of the last step */
    double grad_norm;       /* of the last step; NaN without clipping or
                             * MPT_NONFINITE_SKIP */
    double samples_per_s;
    double tokens_per_s;    /* a language model's (samples x context); 0 for a classifier */
    double device_busy;     /* mean busy fraction of the job's devices over the
                             * window, NaN when timing is off */
    double blas_busy;       /* of which in BLAS routines (GEMMs) */
    double eta_s;           /* to total_steps at the window's rate; NaN: unknown */
    double step_s;          /* measured: the window's mean wall time per step */
    double predicted_step_s; /* the cost model's step for the trainer's plan (after
                              * calibration, the calibrated one); NaN without a
                              * prediction (a one-device trainer) */
    int skipped;            /* the last step applied no update (MPT_NONFINITE_SKIP) */
    uint64_t skipped_steps; /* steps skipped so far in the run, resumes included */
} mpt_step_report_t;

/** Turns on (or off) kernel timing on the trainer's devices of this rank,
 *  so that reports carry busy fractions (OpenCL profiling events: a few
 *  percent slower). */
MPT_API int mpt_trainer_set_timing(mpt_trainer_t *trainer, int on);
/** Closes the window of steps since the last report (or the trainer's
 *  creation) into *report, and sets each device's busy fraction and
 *  achieved rates over it (mpt_trainer_device_stats).  Waits for the
 *  devices when timing is on.  Under a job it is collective (each rank's
 *  devices' figures reach every rank). */
MPT_API int mpt_trainer_report(mpt_trainer_t *trainer, mpt_step_report_t *report);

/** A JSON Lines metrics file (docs/training.md): one object per report,
 *  one per evaluation, each line flushed as it is written. */
typedef struct mpt_metrics mpt_metrics_t;

/** Opens path for a run: a new run truncates it; a run resumed at step
 *  `resume_step` (resume not 0) keeps the lines of steps up to it (those
 *  after were logged by the interrupted run and will be logged again) and
 *  appends.  MPT_ERR_IO naming the file and the reason. */
MPT_API int mpt_metrics_open(const char *path, int resume, uint64_t resume_step,
                             mpt_metrics_t **out);
/** One line for a report, `epoch` (1-based) and the trainer's devices
 *  (devices may be NULL when ndevices is 0): step, epoch, loss, lr,
 *  samples/s, tokens/s (a language model), grad_norm (clipping or
 *  skipping), "skipped": "nonfinite" when the last step applied no update
 *  and skipped_steps (the run's count) once any was,
 *  device_busy and blas_busy (timing), and per device its rank, replica,
 *  stage, member, busy, achieved and profile GFLOP/s and memory GB/s,
 *  memory (held, peak, predicted, capacity), all-reduce time and bus
 *  bandwidth (nccl-tests: bytes / time x 2(n-1)/n over n replicas),
 *  tensor-parallel traffic, the step's phases and its waits for peers
 *  apart from transfers (docs/metrics.md lists every field).
 *  MPT_ERR_IO when the write fails. */
MPT_API int mpt_metrics_step(mpt_metrics_t *metrics, const mpt_step_report_t *report,
                             uint64_t epoch, const mpt_device_step_t *devices,
                             size_t ndevices);
/** One line for an evaluation: "<name>_loss" and "<name>_accuracy" (name
 *  "test" or "val"). */
MPT_API int mpt_metrics_eval(mpt_metrics_t *metrics, uint64_t step, uint64_t epoch,
                             const char *name, double loss, double accuracy);
/** Closes the file; MPT_ERR_IO when what was written did not reach it.
 *  NULL is a no-op. */
MPT_API int mpt_metrics_close(mpt_metrics_t *metrics);

/** The progress line of a report (no newline): "epoch E step S/T  loss L
 *  N samples/s  skipped K  busy a% b%  ETA 1m05s", skipped once a step was
 *  (MPT_NONFINITE_SKIP), busy per device when known.  Truncated to size. */
MPT_API void mpt_progress_line(const mpt_step_report_t *report, uint64_t epoch,
                               const mpt_device_step_t *devices, size_t ndevices, char *buf,
                               size_t size);

/* ------------------------------------------------------------------------ */
/* Live metrics: a Prometheus endpoint (docs/metrics.md lists the metrics).  */
/*                                                                          */
/* Feed it each report (mpt_fit_options_t.on_step) and a Prometheus server  */
/* scrapes http://ADDRESS:PORT/metrics.  Updates come from the training     */
/* thread, scrapes from the server's own: the two may run at once.          */

typedef struct mpt_prometheus mpt_prometheus_t;

/** Serves GET /metrics, text format 0.0.4, from a thread of its own
 *  (libmicrohttpd), on bind_address (a numeric IPv4 or IPv6 address; NULL:
 *  "127.0.0.1", this machine only) and port (0: a free port, see
 *  mpt_prometheus_port).  MPT_ERR_IO naming the address when it cannot
 *  listen; MPT_ERR_UNSUPPORTED when libmpt was built without
 *  libmicrohttpd. */
MPT_API int mpt_prometheus_start(int port, const char *bind_address, mpt_prometheus_t **out);
/** The same figures without a listener: only mpt_prometheus_text (for a
 *  node_exporter textfile, or a test). */
MPT_API int mpt_prometheus_create(mpt_prometheus_t **out);
/** The figures of a step (mpt_fit_options_t.on_step's arguments): gauges
 *  take them, counters add the devices' last measured step once per step
 *  since the previous update.  A new device count or a smaller step starts
 *  the counters again. */
MPT_API int mpt_prometheus_update(mpt_prometheus_t *server, const mpt_step_report_t *report,
                                  uint64_t epoch, const mpt_device_step_t *devices,
                                  size_t ndevices);
/** The exposition text a scrape gets now (freed by the caller). */
MPT_API int mpt_prometheus_text(mpt_prometheus_t *server, char **text);
/** \return the port it listens on, -1 without a listener. */
MPT_API int mpt_prometheus_port(const mpt_prometheus_t *server);
/** Stops serving (requests in flight finish first) and frees; NULL: no-op. */
MPT_API void mpt_prometheus_stop(mpt_prometheus_t *server);

/* ------------------------------------------------------------------------ */
/* Running: a data source and the training loop mpt-train runs.             */

/** A run's data: each step's batch and the set to evaluate on. */
typedef struct mpt_data mpt_data_t;

/** Opens the data of a model: a classifier's IDX directory
 *  ({train,t10k}-*-ubyte[.gz], mpt_dataset_load_idx), or a language
 *  model's token file (mpt_tokens_load), as mpt_data_from_datasets and
 *  mpt_data_from_tokens describe.  Errors name the path. */
MPT_API int mpt_data_open(const char *path, const mpt_model_t *model, size_t batch,
                          uint64_t seed, mpt_data_t **out);
/** A classifier's data in memory: batches of train by the seeded shuffling
 *  loader (mpt_loader_create; the last partial batch of an epoch dropped),
 *  eval to evaluate on.  Takes ownership of both sets, also on failure;
 *  MPT_ERR_INVALID when their samples are not the model's inputs or their
 *  labels exceed its classes. */
MPT_API int mpt_data_from_datasets(mpt_dataset_t *train, mpt_dataset_t *eval,
                                   const mpt_model_t *model, size_t batch, uint64_t seed,
                                   mpt_data_t **out);
/** A language model's data: the first 90% of the tokens to train on, as
 *  random windows of the model's context chosen by (seed, step, window)
 *  alone (mpt_tokens_batch), and the first 64 consecutive windows of the
 *  last 10% to evaluate on (docs/data.md).  Takes ownership of tokens,
 *  also on failure. */
MPT_API int mpt_data_from_tokens(mpt_tokens_t *tokens, const mpt_model_t *model, size_t batch,
                                 uint64_t seed, mpt_data_t **out);
MPT_API void mpt_data_free(mpt_data_t *data);
/** \return batches per epoch (>= 1), and samples per batch. */
MPT_API uint64_t mpt_data_batches_per_epoch(const mpt_data_t *data);
MPT_API size_t mpt_data_batch(const mpt_data_t *data);
/** The batch of step (0-based; pointers valid until the next call) and,
 *  when position is not NULL, its epoch and index in the epoch. */
MPT_API int mpt_data_next(mpt_data_t *data, uint64_t step, const float **inputs,
                          const int32_t **labels, mpt_data_position_t *position);
/** Moves the data to a position (a checkpoint's): the next mpt_data_next
 *  returns that batch. */
MPT_API int mpt_data_seek(mpt_data_t *data, const mpt_data_position_t *position);
/** What the data is, in a line ("images 60000 x 784, 10 classes, crc32
 *  1a2b3c4d"): sizes and a CRC-32 of its first MB, which checkpoints
 *  record so that a run is not resumed on other data. */
MPT_API const char *mpt_data_identity(const mpt_data_t *data);
/** The evaluation set: count samples, and its name ("test" or "val"). */
MPT_API void mpt_data_eval_set(const mpt_data_t *data, const float **inputs,
                               const int32_t **labels, size_t *count, const char **name);

/* What one epoch of mpt_trainer_fit did (or the part of it a run did). */
typedef struct {
    uint64_t epoch;        /* 1-based */
    uint64_t step;         /* steps done at its end */
    uint64_t steps;        /* steps this run trained in it */
    int partial;           /* the run ended before the epoch's last batch */
    int resumed;           /* the run resumed in it: steps counts from there */
    double train_loss;     /* mean over those steps */
    double eval_loss, eval_accuracy;
    const char *eval_name; /* "test" or "val" */
    double seconds, samples_per_s;
    double tokens_per_s;   /* a language model's; 0 for a classifier */
    double device_busy_s;  /* summed over the reports; NaN when timing is off */
    double blas_busy_s;    /* of which in BLAS routines */
    const mpt_device_step_t *devices; /* the last report's, per device (valid
                                       * during the callback) */
    size_t ndevices;
} mpt_epoch_summary_t;

typedef struct {
    uint64_t epochs;           /* passes over the data (10) ... */
    uint64_t steps;            /* ... unless this is set: train to this step (0) */
    uint64_t log_every;        /* a report (mpt_trainer_report) every N steps (1) */
    uint64_t eval_every;       /* evaluate every N steps too; 0: at each epoch's end only */
    const char *metrics;       /* JSON Lines file of the reports and evaluations (NULL) */
    const char *checkpoint;    /* checkpoint file, written at the end (NULL: none) */
    uint64_t checkpoint_every; /* and every N steps (0) */
    int resume;                /* continue from the checkpoint first (0) */
    int overwrite;             /* a new run may replace an existing checkpoint (0: refused) */
    int allow_other_data;      /* resume although the checkpoint names other data (0) */
    int allow_no_steps;        /* resume at or past the last step is not an error (0) */
    int allow_nonfinite_checkpoint; /* resume from a checkpoint holding NaN or infinite
                               * values (refused otherwise), with a warning: to
                               * inspect a diverged run's state (0) */
    /* Checked after every step: when it holds a signal number the run
     * stops there (every rank at the same step), writes the checkpoint
     * and mpt_trainer_fit returns MPT_ERR_STOPPED ("stopped by signal N
     * at step S").  Set it from a signal handler. */
    const volatile sig_atomic_t *stop;
    /* Called after every step with the last report's figures at this
     * step (for a progress line: mpt_progress_line), and at each epoch's
     * end; on every rank of a job.  NULL: not called. */
    void (*on_step)(void *ctx, const mpt_step_report_t *report, uint64_t epoch,
                    const mpt_device_step_t *devices, size_t ndevices);
    void (*on_epoch)(void *ctx, const mpt_epoch_summary_t *summary);
    void *ctx;
    /* Rebalancing (docs/planning.md): with `cluster` and `replan` set, after
     * rebalance_after steps of this run the trainer calibrates the cost
     * model on the cluster's devices (mpt_trainer_calibrate), plans again
     * with replan, and moves to the new plan (mpt_trainer_replan) when it is
     * predicted faster than the current one, calibrated, by more than
     * rebalance_margin; logged (INFO), in the metrics ({"step": N,
     * "replan": {...}}) and through on_replan.  The loss curve stays the
     * one plan's within the plan-invariance tolerance. */
    uint64_t rebalance_after;  /* (20); 0: never */
    double rebalance_margin;   /* (0.10); in (-1, 1): a negative one moves even to a
                                * plan predicted slower by up to it (tests) */
    mpt_cluster_t *cluster;    /* the trainer's plan's cluster, calibrated in place (NULL) */
    const mpt_plan_request_t *replan; /* NULL: no rebalancing (a plan given by file) */
    int save_calibration;      /* also store the factors with the profiles in the
                                * cache (mpt_profile_save_calibration) (0) */
    void (*on_replan)(void *ctx, uint64_t step, const char *old_plan, double old_step_s,
                      const char *new_plan, double new_step_s, int moved);
    /* Elastic training in one process (docs/elastic.md): when a step, or
     * the checkpoint or evaluation after it, fails because of a device (an
     * OpenCL error, a lost device, a job past the deadline
     * config.comm_timeout_s, scaled for evaluations), the trainer drops the
     * device, plans on the survivors with `replan` (or a default request)
     * over `cluster`, restores the newest in-memory snapshot, moves the
     * data back to its step (the metrics drop their lines of later steps,
     * which the replay logs again) and goes on; a device whose first
     * failure was a plain OpenCL error is tried once more, a second failure
     * (or a loss or hang) drops it for the rest of the run.  Logged (WARN),
     * in the metrics ({"step": N, "recovered": {...}}) and through
     * on_recover.  When no device survives, or the model fits none of the
     * survivors, the run ends with the snapshot written to the checkpoint
     * (when set) and the error. */
    int elastic;               /* 0: on when the plan has more than one device and
                                * `cluster` is set (default); 1: on; -1: off */
    uint64_t snapshot_every;   /* host snapshot every N steps; 0: chosen so that the
                                * copy costs under 2% of the step time (default) */
    void (*on_recover)(void *ctx, uint64_t step, int device, const char *reason,
                       const char *new_plan, uint64_t replayed, double seconds_lost);
} mpt_fit_options_t;

/** Fills the defaults shown above. */
MPT_API void mpt_fit_options_default(mpt_fit_options_t *options);
/** \return the step a run of these options ends at: set the trainer's
 *  config.total_steps to it, so that the cosine schedule decays over it. */
MPT_API uint64_t mpt_fit_total_steps(const mpt_fit_options_t *options, const mpt_data_t *data);
/** Trains to mpt_fit_total_steps: each step's batch from data, a report
 *  every log_every steps into the metrics, evaluation at each epoch's end
 *  (and every eval_every steps), checkpoints.  With resume, first restores
 *  the checkpoint and moves the data to its position (MPT_ERR_PARSE when
 *  the two disagree: other data or batch size).  Under a job every rank
 *  calls it; rank 0 alone writes the metrics and checkpoints.  The data's
 *  batch must be the trainer's. */
MPT_API int mpt_trainer_fit(mpt_trainer_t *trainer, mpt_data_t *data,
                            const mpt_fit_options_t *options);
/** Calibrates the cost model on the trainer's steps since its creation,
 *  its last calibration or its last move to a plan (at least one): per
 *  device of the plan, each kind of work's measured time over the
 *  prediction (forward; backward with the update; the all-reduce the step
 *  waits for; transfers fitted so that the simulated step is the measured
 *  one) times the factor the cluster had, set into `cluster` (the one the
 *  plan was made for).  The plan's prediction is then recomputed with
 *  them (mpt_step_report_t.predicted_step_s).  Collective under a job:
 *  every rank computes the same factors from the gathered statistics.
 *  MPT_ERR_INVALID without steps or for a one-device trainer. */
MPT_API int mpt_trainer_calibrate(mpt_trainer_t *trainer, mpt_cluster_t *cluster);
/** Whether the steps that follow count towards the next calibration (on
 *  from the trainer's creation): off leaves out steps that do not run at
 *  the plan's own speed (beside an evaluation, a checkpoint, another job's
 *  burst), or keeps steps apart to test a calibration against (mpt-bench
 *  train deals its steps between the two).  Under a job, every
 *  rank alike. */
MPT_API void mpt_trainer_set_calibrating(mpt_trainer_t *trainer, int on);
/** Stores the calibration of this rank's devices of the trainer, as
 *  `cluster` holds it, with their cached profiles. */
MPT_API int mpt_trainer_save_calibration(const mpt_trainer_t *trainer,
                                         const mpt_cluster_t *cluster);
/** Moves the trainer to `plan` (made for the same devices, batch and
 *  model) in memory, at its current step: parameters and optimizer state
 *  are read out, the engine is rebuilt on the new plan and they are
 *  written in.  The trainer keeps its own copy of the plan.  If the new
 *  plan cannot be built the trainer stays on the old one and the error is
 *  returned.  Collective under a job. */
MPT_API int mpt_trainer_replan(mpt_trainer_t *trainer, const mpt_plan_t *plan);
/** \return the predicted step of the trainer's plan (calibrated once
 *  mpt_trainer_calibrate ran), NaN without a prediction. */
MPT_API double mpt_trainer_predicted_step(const mpt_trainer_t *trainer);
/** One line for a re-plan (mpt_trainer_fit's rebalancing): {"step": N,
 *  "replan": {"old": ..., "new": ..., "old_predicted_step_s": ...,
 *  "new_predicted_step_s": ..., "moved": true|false}}. */
MPT_API int mpt_metrics_replan(mpt_metrics_t *metrics, uint64_t step, const char *old_plan,
                               double old_step_s, const char *new_plan, double new_step_s,
                               int moved);

/** One line for an elastic recovery (mpt_trainer_fit): {"step": N,
 *  "recovered": {"device": D, "reason": ..., "plan": ..., "replayed": K,
 *  "seconds_lost": S}}: N is the step the run went back to, K the steps
 *  trained again, S the wall time from the failure to the restored state
 *  plus the time of the steps thrown away. */
MPT_API int mpt_metrics_recovered(mpt_metrics_t *metrics, uint64_t step, int device,
                                  const char *reason, const char *plan, uint64_t replayed,
                                  double seconds_lost);

/** Writes the trainer's trace (mpt_trainer_set_trace) to path.  Under a
 *  job it is collective: rank 0 writes one trace with a process per rank
 *  (pid = rank), every rank's timestamps on rank 0's clock (the offsets
 *  estimated when tracing started, and their error bounds, in its
 *  "otherData"); the other ranks write nothing.  MPT_ERR_IO naming the
 *  file. */
MPT_API int mpt_trainer_write_trace(const mpt_trainer_t *trainer, const char *path);
/** Writes the simulator's timeline of one step of the plan the trainer
 *  runs (after a rebalance, the new one), priced on its cluster as
 *  calibrated so far: the prediction to set beside the measured trace (as
 *  mpt_plan_simulate's trace_json).  Rank 0 writes; other ranks do
 *  nothing.  MPT_ERR_INVALID for a trainer without a cluster. */
MPT_API int mpt_trainer_write_predicted_trace(const mpt_trainer_t *trainer, const char *path);

#ifdef __cplusplus
}
#endif
#endif /* MPT_H */
