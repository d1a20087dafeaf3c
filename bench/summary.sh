# Sourced by the peer scripts (bench/*_vs_*.sh): the summary over rounds.
# This machine's speed comes in spells (docs/performance.md, "Two speeds"):
# mpt and its peer each switch between a fast and a slow mode, sometimes
# within one run, and not always together, so one round's ratio can say
# either.  The median over the rounds, printed with the range, is the
# figure to quote.
#
#   summary_add LABEL MPT PEER   record one round (in $tmp/summary)
#   summary_print PEER_NAME      the medians and ranges of each label

summary_add() {
    echo "$1 $2 $3" >>"$tmp/summary"
}

summary_print() {
    [ -s "$tmp/summary" ] || return 0
    for label in $(awk '{ print $1 }' "$tmp/summary" | sort -u); do
        awk -v label="$label" -v peer="$1" '
            function median(v, n,    i, j, t) {
                for (i = 2; i <= n; i++)
                    for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
                return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
            }
            $1 == label && $3 > 0 { n++; m[n] = $2; p[n] = $3; r[n] = $2 / $3 }
            END {
                mm = median(m, n); pm = median(p, n); rm = median(r, n)
                printf "over %d rounds, %s: mpt median %.0f (%.0f-%.0f); %s median %.0f (%.0f-%.0f); median mpt / %s %.2f (%.2f-%.2f)\n",
                    n, label, mm, m[1], m[n], peer, pm, p[1], p[n], peer, rm, r[1], r[n]
            }' "$tmp/summary"
    done
}
