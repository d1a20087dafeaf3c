/* tests/no_cl/CL/opencl.h: stands in for the real header when Makefile.am
 * compiles lib/plan without OpenCL (tests/libplan_nocl.la), so that an
 * include of it from a plan file fails the build. */
#error "lib/plan must build without OpenCL: include nn/layer_desc.h, not nn/layer.h, tensor/ or device/ headers"
