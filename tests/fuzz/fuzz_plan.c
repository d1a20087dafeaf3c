/*
 * tests/fuzz/fuzz_plan.c: libFuzzer harness for the plan reader
 * (mpt_plan_from_json -> lib/plan/plan_json.c, then the tensor-parallel
 * roles against the model).  The model and the cluster are fixed, copied
 * here so that the harness needs no file: models/mlp-fashion.json (8
 * layers) and models/clusters/node-2nvidia-2amd.json (4 devices), the pair
 * the seed plans in seeds/plan/ were written for (mpt-plan --json
 * --all-devices with pinned dp/pp/tp, alternatives trimmed).
 * Properties: an accepted plan can be described and simulated without a
 * crash, and writes JSON (mpt_plan_to_json) that reads back.
 */
#include <stdint.h>
#include <stdlib.h>

#include "mpt.h"
#include "core/internal.h"
#include "profile/profile.h"
#include "fuzz_util.h"

static const char model_json[] =
    "{\"name\":\"mlp-fashion\",\"comment\":\"784-256-128-100-10 multilayer perceptron with R"
    "eLU, for Fashion-MNIST (published: 0.8833 test accuracy)\",\"input\":[784],\"layers\""
    ":[{\"kind\":\"linear\",\"units\":256},{\"kind\":\"relu\"},{\"kind\":\"linear\",\"units\":128},{\""
    "kind\":\"relu\"},{\"kind\":\"linear\",\"units\":100},{\"kind\":\"relu\"},{\"kind\":\"linear\",\"un"
    "its\":10},{\"kind\":\"softmax_cross_entropy\"}]}";

static const char cluster_json[] =
    "{\"mpt_cluster\":1,\"name\":\"node-2nvidia-2amd\",\"network\":{\"gbps\":12.5,\"latency_us\":"
    "5.0},\"nodes\":[{\"name\":\"mixed0\"}],\"devices\":[{\"name\":\"NVIDIA A100-PCIE-40GB\",\"ven"
    "dor\":\"NVIDIA Corporation\",\"platform\":\"NVIDIA CUDA\",\"type\":\"gpu\",\"device_version\""
    ":\"OpenCL 3.0 CUDA\",\"driver_version\":\"535.154.05\",\"pci_address\":\"0000:17:00.0\",\"g"
    "lobal_mem_bytes\":42298834944,\"max_alloc_bytes\":10574708736,\"local_mem_bytes\":491"
    "52,\"compute_units\":108,\"clock_mhz\":1410,\"unified_memory\":false,\"fp16\":false,\"fp6"
    "4\":true,\"node\":0,\"numa_node\":0,\"package\":0,\"cores\":16,\"pus\":32,\"cpus\":\"0-15,32-4"
    "7\",\"profile\":{\"gemm_gflops\":18900.0,\"gemm\":[{\"m\":256,\"n\":256,\"k\":256,\"gflops\":21"
    "50.0},{\"m\":1024,\"n\":1024,\"k\":1024,\"gflops\":14300.0},{\"m\":2048,\"n\":2048,\"k\":2048,"
    "\"gflops\":18900.0},{\"m\":4096,\"n\":64,\"k\":1024,\"gflops\":6100.0}],\"mem_gbps\":1340.0,"
    "\"h2d_gbps\":10.5,\"d2h_gbps\":11.8,\"launch_us\":7.0,\"measured_at\":1717171717.0}},{\"n"
    "ame\":\"NVIDIA RTX A4000\",\"vendor\":\"NVIDIA Corporation\",\"platform\":\"NVIDIA CUDA\",\""
    "type\":\"gpu\",\"device_version\":\"OpenCL 3.0 CUDA\",\"driver_version\":\"535.154.05\",\"pc"
    "i_address\":\"0000:31:00.0\",\"global_mem_bytes\":16889610240,\"max_alloc_bytes\":42224"
    "02560,\"local_mem_bytes\":49152,\"compute_units\":48,\"clock_mhz\":1560,\"unified_memor"
    "y\":false,\"fp16\":false,\"fp64\":true,\"node\":0,\"numa_node\":0,\"package\":0,\"cores\":16,"
    "\"pus\":32,\"cpus\":\"0-15,32-47\",\"profile\":{\"gemm_gflops\":10400.0,\"gemm\":[{\"m\":256,\""
    "n\":256,\"k\":256,\"gflops\":1650.0},{\"m\":1024,\"n\":1024,\"k\":1024,\"gflops\":8900.0},{\"m"
    "\":2048,\"n\":2048,\"k\":2048,\"gflops\":10400.0},{\"m\":4096,\"n\":64,\"k\":1024,\"gflops\":33"
    "00.0}],\"mem_gbps\":385.0,\"h2d_gbps\":11.2,\"d2h_gbps\":12.4,\"launch_us\":6.5,\"measure"
    "d_at\":1717171717.0}},{\"name\":\"gfx90a:sramecc+:xnack-\",\"vendor\":\"Advanced Micro D"
    "evices, Inc.\",\"platform\":\"AMD Accelerated Parallel Processing\",\"type\":\"gpu\",\"dev"
    "ice_version\":\"OpenCL 2.0\",\"driver_version\":\"3581.0 (HSA1.1,LC)\",\"pci_address\":\"0"
    "000:b1:00.0\",\"global_mem_bytes\":68702699520,\"max_alloc_bytes\":58397294592,\"local"
    "_mem_bytes\":65536,\"compute_units\":104,\"clock_mhz\":1700,\"unified_memory\":false,\"f"
    "p16\":true,\"fp64\":true,\"node\":0,\"numa_node\":1,\"package\":1,\"cores\":16,\"pus\":32,\"cp"
    "us\":\"16-31,48-63\",\"profile\":{\"gemm_gflops\":16800.0,\"gemm\":[{\"m\":256,\"n\":256,\"k\":"
    "256,\"gflops\":1400.0},{\"m\":1024,\"n\":1024,\"k\":1024,\"gflops\":11900.0},{\"m\":2048,\"n\""
    ":2048,\"k\":2048,\"gflops\":16800.0},{\"m\":4096,\"n\":64,\"k\":1024,\"gflops\":4800.0}],\"me"
    "m_gbps\":1270.0,\"h2d_gbps\":12.1,\"d2h_gbps\":12.6,\"launch_us\":9.5,\"measured_at\":171"
    "7171717.0}},{\"name\":\"gfx1030\",\"vendor\":\"Advanced Micro Devices, Inc.\",\"platform\""
    ":\"AMD Accelerated Parallel Processing\",\"type\":\"gpu\",\"device_version\":\"OpenCL 2.0"
    "\",\"driver_version\":\"3581.0 (HSA1.1,LC)\",\"pci_address\":\"0000:ca:00.0\",\"global_mem"
    "_bytes\":17163091968,\"max_alloc_bytes\":14588628992,\"local_mem_bytes\":65536,\"compu"
    "te_units\":30,\"clock_mhz\":2105,\"unified_memory\":false,\"fp16\":true,\"fp64\":true,\"no"
    "de\":0,\"numa_node\":1,\"package\":1,\"cores\":16,\"pus\":32,\"cpus\":\"16-31,48-63\",\"profil"
    "e\":{\"gemm_gflops\":9100.0,\"gemm\":[{\"m\":256,\"n\":256,\"k\":256,\"gflops\":1350.0},{\"m\":"
    "1024,\"n\":1024,\"k\":1024,\"gflops\":7600.0},{\"m\":2048,\"n\":2048,\"k\":2048,\"gflops\":910"
    "0.0},{\"m\":4096,\"n\":64,\"k\":1024,\"gflops\":2900.0}],\"mem_gbps\":455.0,\"h2d_gbps\":12."
    "3,\"d2h_gbps\":12.9,\"launch_us\":9.0,\"measured_at\":1717171717.0}}],\"links\":[{\"a\":0,"
    "\"b\":1,\"class\":\"host-bridge\"},{\"a\":2,\"b\":3,\"class\":\"host-bridge\"}]}";

static mpt_model_t *model;
static mpt_cluster_t *cluster;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    json_error_t err;
    json_t *root = json_loads(cluster_json, 0, &err);
    (void)argc, (void)argv;
    FUZZ_CHECK(mpt_model_from_json(model_json, &model) == MPT_OK);
    FUZZ_CHECK(root && mpt__cluster_from_json(root, "fuzz_plan cluster", &cluster) == MPT_OK);
    json_decref(root);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size), *again = NULL, *desc = NULL, *trace = NULL;
    mpt_plan_t *p = NULL, *p2 = NULL;
    double step_s = -1, bubble = -1;
    if (!text)
        return 0;
    if (mpt_plan_from_json(text, model, cluster, &p) == MPT_OK) {
        FUZZ_CHECK(p != NULL);
        FUZZ_CHECK(mpt_plan_to_json(p, &again) == MPT_OK);
        FUZZ_CHECK(mpt_plan_from_json(again, model, cluster, &p2) == MPT_OK);
        FUZZ_CHECK(mpt_plan_describe(p, model, cluster, 1, &desc) == MPT_OK);
        if (mpt_plan_simulate(p, model, cluster, &step_s, &bubble, &trace) == MPT_OK)
            FUZZ_CHECK(step_s >= 0 && bubble >= 0 && trace != NULL);
    } else {
        FUZZ_CHECK(p == NULL);
    }
    mpt_plan_free(p2);
    mpt_plan_free(p);
    free(trace);
    free(desc);
    free(again);
    free(text);
    return 0;
}
