#!/bin/sh
# The man pages (generated: help2man from each tool's --help, mpt(3) from
# lib/mpt.h by man/header2man.sh):
# - each tool's page names every long option its --help lists (a page
#   older than its tool fails here);
# - mpt(3) names every MPT_API function of the header;
# - groff formats each page without a warning;
# - make install-man puts them under man1 and man3.
set -u
. "${MPT_TESTS_SRCDIR:-tests}/cli_lib.sh"
builddir=${MPT_TOP_BUILDDIR:-.}
srcdir=${MPT_TESTS_SRCDIR:-tests}/..
cli_setup man
# A page: the build's (made by make) or the source tree's (a tarball's).
page() {
    for d in "$builddir/man" "$srcdir/man"; do
        if [ -f "$d/$1" ]; then echo "$d/$1"; return; fi
    done
}
# The page's text with roff's escaped hyphens plain.
plain() { sed 's/\\-/-/g; s/\\(em/-/g' "$1"; }

for tool in mpt-topo mpt-plan mpt-train mpt-bench mpt-report mpt-run; do
    p=$(page "$tool.1")
    if [ -z "$p" ]; then
        fail "$tool.1" "no page in $builddir/man or $srcdir/man"
        continue
    fi
    "$builddir/bin/$tool" --help >"$tmp/help" 2>&1
    missing=""
    for opt in $(grep -o -- '--[a-z][a-z0-9-]*' "$tmp/help" | sort -u); do
        plain "$p" | grep -q -- "$opt" || missing="$missing $opt"
    done
    [ -z "$missing" ] && ok "$tool.1 names every option of its --help" ||
        fail "$tool.1 lacks:$missing" "remake it: rm $p; make"
done

p=$(page mpt.3)
if [ -z "$p" ]; then
    fail "mpt.3" "no page"
else
    missing=""
    for fn in $(sed -n 's/^MPT_API[^(]*[ *]\(mpt_[a-z0-9_]*\)(.*/\1/p' "$srcdir/lib/mpt.h"); do
        grep -q "$fn(" "$p" || missing="$missing $fn"
    done
    n=$(grep -c '^MPT_API' "$srcdir/lib/mpt.h")
    [ -z "$missing" ] && [ "$n" -gt 50 ] && ok "mpt.3 names all $n MPT_API functions of mpt.h" ||
        fail "mpt.3 lacks:$missing" "($n declarations)"
fi

if command -v groff >/dev/null 2>&1; then
    for f in mpt-topo.1 mpt-plan.1 mpt-train.1 mpt-bench.1 mpt-report.1 mpt-run.1 mpt.3; do
        p=$(page "$f")
        [ -n "$p" ] || continue
        groff -man -ww -z -Tutf8 "$p" >"$tmp/groff" 2>&1
        [ -s "$tmp/groff" ] && fail "groff warns on $f" "$(head -n 3 "$tmp/groff")"
    done
    [ "$failed" -eq 0 ] && ok "groff formats every page without a warning"
else
    echo "skip groff: not installed"
fi

if ${MAKE:-make} -s -C "$builddir" install-man DESTDIR="$tmp/inst" >"$out" 2>"$err"; then
    n1=$(find "$tmp/inst" -path '*/man1/mpt-*.1' | wc -l)
    n3=$(find "$tmp/inst" -path '*/man3/mpt.3' | wc -l)
    [ "$n1" -eq 6 ] && [ "$n3" -eq 1 ] && ok "make install-man installs 6 pages in man1 and mpt.3" ||
        fail "installed pages" "$n1 in man1, $n3 mpt.3"
else
    fail "make install-man" "failed"
fi
exit "$failed"
