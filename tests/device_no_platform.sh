#!/bin/sh
# The device suite's no-platform case, in a process of its own: the OpenCL
# ICD loader reads OCL_ICD_VENDORS once, on first use, so this cannot share
# a process with the tests that need devices.
exec env MPT_TEST_NO_PLATFORM=1 "${MPT_TOP_BUILDDIR:-.}/tests/check_device"
