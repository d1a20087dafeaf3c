#!/bin/sh
# tests/install_pkgconfig.sh: installs the built tree into a temporary
# prefix and uses it as a user would: the header, mpt.pc, the kernels and
# mpt-topo are where they belong; tests/example/hello.c builds with
# `pkg-config --cflags --libs mpt` and runs; tests/example/train_memory.c
# (docs/library.md) builds the same way and trains an MLP on data made in
# memory under an automatic plan over every device, its loss halving; the
# installed mpt-topo runs; libmpt.so exports only public mpt_ names.
#
# Environment (set by `make check`): MPT_TOP_BUILDDIR, MPT_TESTS_SRCDIR,
# MAKE, CC, and POCL_DEVICES etc. for the runs.  Works in `make distcheck`
# (read-only srcdir): everything it writes is under the build directory.

builddir=${MPT_TOP_BUILDDIR:-.}
srcdir=${MPT_TESTS_SRCDIR:-./tests}
make_cmd=${MAKE:-make}
cc=${CC:-cc}
# A sanitizer build of libmpt needs its runtime linked into the program too.
sanitizer_flags=${MPT_SANITIZER_LDFLAGS:-}

failed=0
ok() { echo "ok   $1"; }
fail() {
    echo "FAIL $1"
    failed=1
}
# die MESSAGE: a failure that makes the remaining checks pointless.
die() {
    echo "FAIL $1"
    echo "install_pkgconfig.sh: FAILED"
    exit 1
}
show() {
    if [ -s "$1" ]; then
        sed -e 's/^/     | /' "$1" | tail -n 30
    fi
}

command -v pkg-config >/dev/null 2>&1 || die "pkg-config is not installed"
command -v nm >/dev/null 2>&1 || die "nm (binutils) is not installed"
[ -f "$srcdir/example/hello.c" ] || die "$srcdir/example/hello.c not found (set MPT_TESTS_SRCDIR)"
[ -f "$srcdir/example/train_memory.c" ] ||
    die "$srcdir/example/train_memory.c not found (set MPT_TESTS_SRCDIR)"

mkdir -p "$builddir/tests/install-tmp" || die "cannot create $builddir/tests/install-tmp"
tmp=$(mktemp -d "$builddir/tests/install-tmp/run.XXXXXX") ||
    die "mktemp -d under $builddir/tests/install-tmp failed"
tmp=$(cd "$tmp" && pwd) # absolute: make -C changes directory
trap 'rm -rf "$tmp"; rmdir "$builddir/tests/install-tmp" 2>/dev/null' EXIT
trap 'exit 1' HUP INT TERM
prefix=$tmp/prefix

# ---- install -------------------------------------------------------------
# DESTDIR is cleared so that the files land in $prefix itself.
if $make_cmd -C "$builddir" install prefix="$prefix" DESTDIR= >"$tmp/install.log" 2>&1; then
    ok "make install prefix=$prefix"
else
    show "$tmp/install.log"
    die "make -C $builddir install prefix=$prefix failed (log above)"
fi

for f in include/mpt.h lib/pkgconfig/mpt.pc share/mpt/kernels/bench.cl bin/mpt-topo lib/libmpt.so; do
    if [ -e "$prefix/$f" ]; then
        ok "installed \$prefix/$f"
    else
        fail "\$prefix/$f was not installed"
    fi
done
[ -x "$prefix/bin/mpt-topo" ] || fail "\$prefix/bin/mpt-topo is not executable"
internal=$(cd "$prefix" && find . -name '*mpt-internal*' -o -name '*mpt_internal*')
if [ -n "$internal" ]; then
    fail "internal files were installed: $internal"
else
    ok "no internal library installed"
fi

# ---- exported symbols ----------------------------------------------------
if [ -e "$prefix/lib/libmpt.so" ]; then
    nm -D --defined-only "$prefix/lib/libmpt.so" >"$tmp/nm.txt" 2>&1 ||
        fail "nm -D --defined-only $prefix/lib/libmpt.so failed: $(cat "$tmp/nm.txt")"
    # Lines are "ADDRESS TYPE NAME" (NAME@VERSION where symbols are versioned).
    awk 'NF >= 3 { sub(/@.*/, "", $3); print $3 }' "$tmp/nm.txt" | sort -u >"$tmp/exports.txt"
    bad=$(grep -v -E '^mpt_[a-z0-9]' "$tmp/exports.txt" | tr '\n' ' ')
    internal=$(grep -E '^mpt__' "$tmp/exports.txt" | tr '\n' ' ')
    count=$(awk 'END { print NR }' "$tmp/exports.txt")
    if [ -n "$bad" ] || [ -n "$internal" ]; then
        fail "libmpt.so exports names outside the public mpt_ API: $bad$internal"
    elif ! grep -x mpt_version "$tmp/exports.txt" >/dev/null ||
        ! grep -x mpt_devices_open "$tmp/exports.txt" >/dev/null; then
        fail "libmpt.so does not export mpt_version and mpt_devices_open ($count names exported)"
    else
        ok "libmpt.so exports only public mpt_ names ($count)"
    fi
fi

# ---- pkg-config ------------------------------------------------------------
PKG_CONFIG_PATH=$prefix/lib/pkgconfig
export PKG_CONFIG_PATH
version=$(pkg-config --modversion mpt 2>"$tmp/pc.err") || {
    show "$tmp/pc.err"
    die "pkg-config --modversion mpt failed with PKG_CONFIG_PATH=$PKG_CONFIG_PATH"
}
ok "pkg-config finds mpt $version"
pc_prefix=$(pkg-config --variable=prefix mpt)
pc_includedir=$(pkg-config --variable=includedir mpt)
pc_libdir=$(pkg-config --variable=libdir mpt)
define=
if [ "$pc_prefix" = "$prefix" ] && [ "$pc_includedir" = "$prefix/include" ] &&
    [ "$pc_libdir" = "$prefix/lib" ]; then
    ok "mpt.pc points into the prefix it was installed to"
else
    # mpt.pc must describe where it was installed: `make install prefix=X`
    # is allowed to change the prefix after configure (generate mpt.pc at
    # make time, not with AC_CONFIG_FILES).  Go on with the prefix forced,
    # to check the rest.
    fail "installed mpt.pc says prefix=$pc_prefix includedir=$pc_includedir libdir=$pc_libdir, expected prefix=$prefix (mpt.pc is not regenerated for 'make install prefix=...')"
    define="--define-variable=prefix=$prefix --define-variable=exec_prefix=$prefix"
    define="$define --define-variable=libdir=$prefix/lib --define-variable=includedir=$prefix/include"
fi
# shellcheck disable=SC2086 # $define is a word list
flags=$(pkg-config $define --cflags --libs mpt 2>"$tmp/pc.err") || {
    show "$tmp/pc.err"
    die "pkg-config --cflags --libs mpt failed"
}

# ---- hello.c, built and run against the installed library ---------------
# The library's DT_RUNPATH names the configured libdir, not this temporary
# prefix: hence LD_LIBRARY_PATH.
# shellcheck disable=SC2086 # $cc and $flags are word lists
if $cc $sanitizer_flags -o "$tmp/hello" "$srcdir/example/hello.c" $flags >"$tmp/cc.log" 2>&1; then
    ok "hello.c builds with: $cc hello.c $flags"
else
    show "$tmp/cc.log"
    die "hello.c does not build with: $cc hello.c $flags"
fi

LD_LIBRARY_PATH=$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
if command -v ldd >/dev/null 2>&1; then
    where=$(ldd "$tmp/hello" | awk '/libmpt\.so/ { print $3 }')
    case $where in
    "$prefix"/lib/*) ok "hello loads libmpt from the prefix ($where)" ;;
    *) fail "hello loads libmpt from '$where', not from $prefix/lib" ;;
    esac
fi

timeout 300 "$tmp/hello" >"$tmp/hello.out" 2>&1 </dev/null
rc=$?
if [ "$rc" -ne 0 ]; then
    show "$tmp/hello.out"
    fail "hello exited with status $rc, expected 0"
elif ! grep -F "mpt $version" "$tmp/hello.out" >/dev/null; then
    show "$tmp/hello.out"
    fail "hello's output does not contain 'mpt $version'"
else
    ok "hello runs: $(head -n 1 "$tmp/hello.out"), $(tail -n 1 "$tmp/hello.out")"
fi

# ---- train_memory.c: the library embedded, against the installed tree ----
# -Wall -Wextra -Werror: the example is what users copy.  Profiles are
# measured quickly (MPT_PROFILE_QUICK): the plan only needs them ranked.
# shellcheck disable=SC2086 # $cc and $flags are word lists
if $cc $sanitizer_flags -std=c11 -Wall -Wextra -Werror -o "$tmp/train_memory" \
    "$srcdir/example/train_memory.c" $flags >"$tmp/cc2.log" 2>&1; then
    ok "train_memory.c builds with: $cc -std=c11 -Wall -Wextra -Werror train_memory.c $flags"
    MPT_PROFILE_QUICK=1 timeout 300 "$tmp/train_memory" >"$tmp/train_memory.out" 2>&1 </dev/null
    rc=$?
    if [ "$rc" -ne 0 ]; then
        show "$tmp/train_memory.out"
        fail "train_memory exited with status $rc, expected 0 (loss halved, accuracy > 90%)"
    elif ! grep -E '^[0-9]+ devices: loss ' "$tmp/train_memory.out" >/dev/null; then
        show "$tmp/train_memory.out"
        fail "train_memory printed no 'N devices: loss A -> B' line"
    else
        ok "train_memory trains in memory: $(head -n 1 "$tmp/train_memory.out")"
    fi
else
    show "$tmp/cc2.log"
    fail "train_memory.c does not build with: $cc train_memory.c $flags"
fi

# ---- the installed mpt-topo ----------------------------------------------
timeout 300 "$prefix/bin/mpt-topo" --no-profile --json >"$tmp/topo.out" 2>"$tmp/topo.err" </dev/null
rc=$?
if [ "$rc" -ne 0 ]; then
    show "$tmp/topo.err"
    fail "installed mpt-topo --no-profile --json exited with status $rc, expected 0"
elif ! grep -F '"devices"' "$tmp/topo.out" >/dev/null; then
    show "$tmp/topo.out"
    fail "installed mpt-topo --no-profile --json printed no \"devices\""
else
    ok "installed mpt-topo --no-profile --json runs"
fi

if [ "$failed" -ne 0 ]; then
    echo "install_pkgconfig.sh: FAILED"
    exit 1
fi
echo "install_pkgconfig.sh: all checks passed"
exit 0
