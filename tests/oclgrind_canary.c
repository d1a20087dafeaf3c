/*
 * tests/oclgrind_canary.c: four deliberate errors that `make check-kernels`
 * (tests/check_kernels.sh) runs under the same preloads and variables as
 * the tests, and expects Oclgrind to report, one of each check: an
 * optional device query without its extension (API check), a read past a
 * buffer (out-of-bounds), a read of memory nothing wrote (uninitialised,
 * through tests/oclgrind_whole_writes.so, which must not hide it) and two
 * work-items writing one element (data race).  So "0 findings" in the
 * tests means the checks ran and found nothing, not that they were off.
 * Prints nothing itself; exits 0 unless the OpenCL set-up fails.
 */
#define CL_TARGET_OPENCL_VERSION 120
#include <stdio.h>

#include <CL/cl.h>

static const char *source =
    "__kernel void past_the_end(__global float *out, __global const float *in)\n"
    "{ out[get_global_id(0)] = in[get_global_id(0) + 1]; }\n"
    "__kernel void never_written(__global float *out, __global const float *in)\n"
    "{ out[get_global_id(0)] = in[get_global_id(0)]; }\n"
    "__kernel void race(__global float *out) { out[0] = (float)get_global_id(0); }\n";

static int launch(cl_command_queue q, cl_program p, const char *name, cl_mem a, cl_mem b)
{
    cl_int err;
    size_t n = 4;
    cl_kernel k = clCreateKernel(p, name, &err);
    if (!k)
        return 1;
    clSetKernelArg(k, 0, sizeof a, &a);
    if (b)
        clSetKernelArg(k, 1, sizeof b, &b);
    err = clEnqueueNDRangeKernel(q, k, 1, NULL, &n, &n, 0, NULL, NULL);
    clFinish(q);
    clReleaseKernel(k);
    return err != CL_SUCCESS;
}

int main(void)
{
    cl_platform_id platform;
    cl_device_id dev;
    cl_int err;
    cl_uint topology[8];
    float host[4] = {1, 2, 3, 4};
    if (clGetPlatformIDs(1, &platform, NULL) != CL_SUCCESS ||
        clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &dev, NULL) != CL_SUCCESS)
        return 1;
    /* CL_DEVICE_TOPOLOGY_AMD (0x4037), which only cl_amd_device_attribute_query has */
    clGetDeviceInfo(dev, 0x4037, sizeof topology, topology, NULL);
    cl_context ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    cl_command_queue q = ctx ? clCreateCommandQueue(ctx, dev, 0, &err) : NULL;
    cl_program p = q ? clCreateProgramWithSource(ctx, 1, &source, NULL, &err) : NULL;
    if (!p || clBuildProgram(p, 1, &dev, "", NULL, NULL) != CL_SUCCESS)
        return 1;
    cl_mem written = clCreateBuffer(ctx, CL_MEM_READ_WRITE, sizeof host, NULL, &err);
    cl_mem unwritten = clCreateBuffer(ctx, CL_MEM_READ_WRITE, sizeof host, NULL, &err);
    cl_mem out = clCreateBuffer(ctx, CL_MEM_READ_WRITE, sizeof host, NULL, &err);
    if (!written || !unwritten || !out ||
        clEnqueueWriteBuffer(q, written, CL_TRUE, 0, sizeof host, host, 0, NULL, NULL) !=
            CL_SUCCESS)
        return 1;
    int failed = launch(q, p, "past_the_end", out, written) |
                 launch(q, p, "never_written", out, unwritten) | launch(q, p, "race", out, NULL);
    clReleaseMemObject(written), clReleaseMemObject(unwritten), clReleaseMemObject(out);
    clReleaseProgram(p), clReleaseCommandQueue(q), clReleaseContext(ctx);
    return failed;
}
