/*
 * kernels/bench.cl: the kernels the profiler times (memory bandwidth and
 * launch latency) and the device tests check.  Valid OpenCL C 1.2 alone.
 */

/* dst[i] = src[i], four floats per work-item: a streaming copy. */
__kernel void mpt_copy4(__global float4 *dst, __global const float4 *src, uint n4)
{
    uint i = get_global_id(0);
    if (i < n4)
        dst[i] = src[i];
}

/* a[i] = b[i] + s * c[i]: the STREAM triad, a check with known numbers. */
__kernel void mpt_triad(__global float *a, __global const float *b, __global const float *c,
                        float s, uint n)
{
    uint i = get_global_id(0);
    if (i < n)
        a[i] = b[i] + s * c[i];
}

/* Does nothing: its enqueue-to-finish time is the launch latency. */
__kernel void mpt_noop(__global float *unused)
{
    (void)unused;
}
