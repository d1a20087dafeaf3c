#!/bin/sh
# install-host-blas.sh: installs a current OpenBLAS from PyPI (the
# scipy-openblas32 wheel, which NumPy and SciPy build against) for the
# GEMMs of mpt's CPU devices, and writes a pkg-config file for
# ./configure --with-host-blas=scipy-openblas (configure.ac).  Optional,
# not run by install-deps.sh; safe to repeat.  Run as root.
#
# Why: called alone, Debian 12's OpenBLAS 0.3.21 runs the MLP's GEMMs at
# 0.7x of OpenBLAS 0.3.34 on the same two cores (7.2 against 5.1 ms for the
# eight GEMMs of a batch-1024 step; 103 against 202 GFLOP/s at
# 1024x128x256).  In training it measured +10-15% on the MLP at batch 128,
# a tie at batch 1024 and -15% on the CNN (docs/performance.md), so it is
# not the default.
#
# Layout, and why:
#   $PREFIX/                  a Python venv (pip, Debian's python3-venv)
#   $PREFIX/lib/pkgconfig/scipy-openblas.pc
#                             the wheel's own file with its paths made
#                             absolute: the wheel's file names them from
#                             ${pcfiledir}, and configure reads this copy
# The library is self-contained (ldd: libc, libm, libpthread) and every
# symbol carries the prefix scipy_ (the .pc file's Cflags say so through
# -DBLAS_SYMBOL_PREFIX; lib/device/host_blas.h maps the names), so it
# cannot clash with Debian's OpenBLAS in one process.  libmpt finds it
# by the RUNPATH the .pc file's Libs give, with no environment variable.
#
# A failure prints a warning and exits 0: build with Debian's OpenBLAS
# (the default), the same results.
#
# Environment: MPT_HOST_BLAS_PREFIX (default /opt/mpt-openblas),
# MPT_HOST_BLAS_VERSION (the wheel's version, default below: the one
# measured; "latest" for the newest).
set -u

prefix=${MPT_HOST_BLAS_PREFIX:-/opt/mpt-openblas}
version=${MPT_HOST_BLAS_VERSION:-0.3.34.481.3}
pc=$prefix/lib/pkgconfig/scipy-openblas.pc

warn() {
    echo "install-host-blas.sh: warning: $*; build with Debian's OpenBLAS (the default)" >&2
    exit 0
}

python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3) || warn "no python3"

if [ "$version" = latest ]; then pin=""; else pin="==$version"; fi
installed=$("$prefix/bin/python" -c 'import importlib.metadata as m; print(m.version("scipy-openblas32"))' 2>/dev/null || true)
if [ -n "$installed" ] && { [ -z "$pin" ] || [ "$installed" = "$version" ]; }; then
    echo "install-host-blas.sh: scipy-openblas32 $installed already installed in $prefix"
else
    echo "install-host-blas.sh: installing scipy-openblas32$pin into $prefix (about 30 MB)"
    "$python" -m venv "$prefix" ||
        warn "could not create a venv in $prefix (is python3-venv installed?)"
    "$prefix/bin/python" -m pip install -q --disable-pip-version-check \
        "scipy-openblas32$pin" || warn "pip could not install scipy-openblas32$pin"
fi

wheel=$("$prefix/bin/python" -c 'import scipy_openblas32 as s; print(s.get_lib_dir())' 2>/dev/null) ||
    warn "scipy_openblas32 does not import from $prefix"
lib=$wheel/libscipy_openblas.so
[ -f "$lib" ] || warn "the wheel did not provide $lib"
if command -v ldd >/dev/null 2>&1; then
    missing=$(env -u LD_LIBRARY_PATH ldd "$lib" 2>&1 | grep "not found")
    [ -z "$missing" ] || warn "$lib lacks libraries: $missing"
fi

# The wheel's .pc file, its ${pcfiledir}/../.. made the wheel's folder,
# and the library given as -L/-l (libtool moves a library named by its
# full path before the archives that need it, where ld drops it).
mkdir -p "$prefix/lib/pkgconfig" || warn "cannot create $prefix/lib/pkgconfig"
top=$(dirname "$wheel")
sed -e "s|\${pcfiledir}/../..|$top|g" \
    -e 's|^Libs: \${libdir}/libscipy_openblas.so |Libs: -L${libdir} -lscipy_openblas |' \
    "$wheel/pkgconfig/scipy-openblas.pc" >"$pc.tmp" && mv "$pc.tmp" "$pc" || warn "cannot write $pc"
grep -q '^Libs: -L' "$pc" || warn "$pc: Libs not as expected: $(grep '^Libs' "$pc")"
grep -q "$top" "$pc" || warn "$pc does not name $top"
echo "install-host-blas.sh: wrote $pc ($("$prefix/bin/python" -c 'import scipy_openblas32 as s; print(s.get_openblas_config())' 2>/dev/null))"
exit 0
