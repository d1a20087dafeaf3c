#!/bin/sh
# tests/mpi_comm.sh: the MPI transport and ring collectives across real
# processes (tests/mpi_comm.c): 2 and 3 ranks of one endpoint each and 2
# ranks of 2 endpoints (threads), over shared memory (btl vader) and over
# TCP loopback (btl tcp); then a short `mpt-bench mpi`.  Skipped (77)
# when mpt was built without MPI.
. "${MPT_TESTS_SRCDIR:-$(dirname "$0")}/cli_lib.sh"
cli_setup mpi-comm

prog=${MPT_TOP_BUILDDIR:-.}/tests/mpi_comm
cli_need_mpi
for btl in vader tcp; do
    for shape in "2 1" "3 1" "2 2"; do
        set -- $shape
        run 300 mpirun --oversubscribe --mca btl "self,$btl" -np "$1" "$prog" "$2"
        if [ "$rc" -eq 0 ] && grep -q '^ok' "$out"; then
            ok "$1 ranks x $2 endpoints over $btl: $(cut -c6- "$out")"
        else
            fail "$1 ranks x $2 endpoints over $btl" "exit $rc"
        fi
    done
done

# mpt-bench mpi: a short run prints both figures for every size; a bad
# --btl is a usage error.
bench=${MPT_BENCH:-./bin/mpt-bench}
run 300 "$bench" mpi --ranks 2 --btl vader --min 1024 --max 4096 --iters 2
if [ "$rc" -eq 0 ] && [ "$(grep -c '^ *vader *2 ' "$out")" -eq 2 ]; then
    ok "mpt-bench mpi: a row per size with both figures"
else
    fail "mpt-bench mpi" "exit $rc, expected 2 rows for vader 2 ranks"
fi
run 30 "$bench" mpi --btl 'tcp;true'
[ "$rc" -eq 2 ] && ok "mpt-bench mpi --btl 'tcp;true': exit 2" ||
    fail "mpt-bench mpi --btl 'tcp;true'" "exit $rc, expected 2"
exit "$failed"
