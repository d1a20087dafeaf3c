#!/bin/sh
# install-intel-opencl.sh: installs Intel's OpenCL CPU runtime from PyPI
# (intel-opencl-rt, intel-cmplr-lib-rt) as a second OpenCL vendor beside
# PoCL, so that `make check` can run mixed-vendor plans on a CPU-only
# machine.  Called by install-deps.sh; safe to repeat.  Run as root.
#
# Layout, and why:
#   $PREFIX/                 a Python venv (pip installs the wheels' data
#                            files, i.e. the libraries, into $PREFIX/lib;
#                            `pip --target` drops them and Debian's
#                            `pip --prefix` moves them under local/)
#   $PREFIX/lib/libintelocl.so   named by full path in $ICD, so the ICD
#                            loader needs no LD_LIBRARY_PATH
# libintelocl.so carries RUNPATH=$ORIGIN, so it finds libsvml, libimf,
# libtbb and libcommon_clang beside it by itself.  $PREFIX/lib also holds
# the wheel's own libOpenCL.so* and libhwloc.so*: that folder is never put
# on a loader path (no ld.so.conf entry, no LD_LIBRARY_PATH), so they
# cannot shadow the system's ICD loader and hwloc.
#
# Leaves out: the wheel's FPGA emulator ICD (not a device mpt can use) and
# any system-wide environment change.
#
# A failure prints a warning and exits 0: the second vendor is optional,
# the tests that need it skip (exit 77) and say why.
#
# Environment: MPT_INTEL_OPENCL_PREFIX (default /opt/mpt-intel-opencl),
# MPT_INTEL_OPENCL_VERSION (the wheels' version, default below: the one
# checked; "latest" for the newest), MPT_OPENCL_VENDORS (the ICD folder,
# default /etc/OpenCL/vendors).
set -u

prefix=${MPT_INTEL_OPENCL_PREFIX:-/opt/mpt-intel-opencl}
version=${MPT_INTEL_OPENCL_VERSION:-2026.2.0}
vendors=${MPT_OPENCL_VENDORS:-/etc/OpenCL/vendors}
icd=$vendors/intel-cpu-mpt.icd
lib=$prefix/lib/libintelocl.so

warn() {
    echo "install-intel-opencl.sh: warning: $*; the cross-vendor tests will skip" >&2
    exit 0
}

# Debian's own python3 (a pyenv or conda one on PATH may lack venv).
python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3) || warn "no python3"

if [ -f "$lib" ]; then
    echo "install-intel-opencl.sh: $lib already installed"
else
    if [ "$version" = latest ]; then pin=""; else pin="==$version"; fi
    echo "install-intel-opencl.sh: installing intel-opencl-rt$pin into $prefix (about 800 MB)"
    "$python" -m venv "$prefix" ||
        warn "could not create a venv in $prefix (is python3-venv installed?)"
    "$prefix/bin/python" -m pip install -q --disable-pip-version-check \
        "intel-opencl-rt$pin" "intel-cmplr-lib-rt$pin" ||
        warn "pip could not install intel-opencl-rt$pin"
    [ -f "$lib" ] || warn "the wheel did not provide $lib"
fi

# Every library it needs must resolve from its own folder, with no
# environment variable: ldd shows "not found" otherwise.
if command -v ldd >/dev/null 2>&1; then
    missing=$(env -u LD_LIBRARY_PATH ldd "$lib" 2>&1 | grep "not found")
    [ -z "$missing" ] || warn "$lib lacks libraries: $missing"
fi

mkdir -p "$vendors" || warn "cannot create $vendors"
if [ "$(cat "$icd" 2>/dev/null)" != "$lib" ]; then
    echo "$lib" > "$icd.tmp" && mv "$icd.tmp" "$icd" || warn "cannot write $icd"
    echo "install-intel-opencl.sh: wrote $icd"
fi

if command -v clinfo >/dev/null 2>&1; then
    if clinfo -l 2>/dev/null | grep -q "Intel(R) OpenCL"; then
        echo "install-intel-opencl.sh: clinfo -l lists Intel(R) OpenCL:"
        clinfo -l
    else
        warn "clinfo -l does not list Intel(R) OpenCL after writing $icd"
    fi
fi
exit 0
