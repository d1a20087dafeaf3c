/*
 * core/env.c: every environment variable mpt reads, declared once with its
 * default and a line of explanation.  Tools print this table in --help.
 */
#include <stdlib.h>

#include "core/internal.h"

static const mpt_env_var_t env_table[MPT_ENV__COUNT] = {
    [MPT_ENV_DEVICES] = {"MPT_DEVICES", "",
                         "devices to use: indices (0,2), ranges (0-3) or words "
                         "(gpu, cpu, nvidia, amd, intel, pocl), in the order given; "
                         "empty = all"},
    [MPT_ENV_KERNEL_DIR] = {"MPT_KERNEL_DIR", "",
                            "read kernels/*.cl from this directory instead of the "
                            "copies embedded in libmpt (development)"},
    [MPT_ENV_CL_BUILD_OPTIONS] = {"MPT_CL_BUILD_OPTIONS", "",
                                  "extra options appended to every OpenCL program build"},
    [MPT_ENV_TOPOLOGY_XML] = {"MPT_TOPOLOGY_XML", "",
                              "hwloc XML file to use instead of discovering this machine"},
    [MPT_ENV_CACHE_HOME] = {"XDG_CACHE_HOME", "",
                            "profiles are cached in $XDG_CACHE_HOME/mpt (default ~/.cache/mpt)"},
    [MPT_ENV_PROFILE_QUICK] = {"MPT_PROFILE_QUICK", "",
                               "1 = profile with small sizes only (tests; figures are rough)"},
    [MPT_ENV_PLAN_DEBUG] = {"MPT_PLAN_DEBUG", "",
                            "1 = the planner logs every configuration it considers and why"},
    [MPT_ENV_FAIL_LAUNCH] = {"MPT_FAIL_LAUNCH", "",
                             "testing: DEVICE:N makes every kernel launch on device index "
                             "DEVICE fail after its first N launches"},
    [MPT_ENV_FAIL_DEVICE] = {"MPT_FAIL_DEVICE", "",
                             "testing: DEVICE:N:lost makes every operation (launch, GEMM, "
                             "buffer read/write/copy, finish) on device index DEVICE fail "
                             "after its first N as a lost device; DEVICE:N:hang makes the "
                             "N+1-th block until the engine's deadline gives it up; "
                             "DEVICE:N:slow makes every operation after the first N wait "
                             "5 ms first; several items separated by commas"},
    [MPT_ENV_FAIL_NONFINITE] = {"MPT_FAIL_NONFINITE", "",
                                "testing: STEP[,STEP...] makes every gradient of these "
                                "training steps (1-based) NaN before the update, as a "
                                "diverging step would (mpt-train --on-nonfinite)"},
    [MPT_ENV_POCL_CACHE_DIR] = {"POCL_CACHE_DIR", "",
                                "PoCL's kernel cache; under mpirun, when unset, each local rank "
                                "gets $XDG_CACHE_HOME/mpt/pocl-local-rank-K"},
    [MPT_ENV_BLAS] = {"MPT_BLAS", "auto",
                      "GEMM provider of every device: auto (the host BLAS on CPU devices "
                      "whose memory is host memory, CLBlast elsewhere), clblast or host"},
    [MPT_ENV_CLBLAST_TUNING] = {"MPT_CLBLAST_TUNING", "auto",
                                "auto = apply the CLBlast parameters mpt-topo --tune stored for "
                                "the device; off = CLBlast's built-in ones"},
    [MPT_ENV_CLOCK_SKEW] = {"MPT_CLOCK_SKEW_S", "0",
                            "testing: seconds added to this process's clock (its trace "
                            "timestamps), as if its host's clock were set apart"},
    [MPT_ENV_CLOCK_DRIFT] = {"MPT_CLOCK_DRIFT", "0",
                             "testing: this process's clock runs this fraction fast (0.01: "
                             "1%), as if its host's clock drifted"},
};

size_t mpt_env_count(void)
{
    return MPT_ENV__COUNT;
}

const mpt_env_var_t *mpt_env_get(size_t i)
{
    return i < MPT_ENV__COUNT ? &env_table[i] : NULL;
}

const char *mpt__env(mpt__env_id_t id)
{
    const char *v = getenv(env_table[id].name);
    return v ? v : env_table[id].default_value;
}
