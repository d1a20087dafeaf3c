/*
 * plan/partition.c: splits a sequence of layers into contiguous pipeline
 * stages, minimising the bottleneck (the largest stage cost) and, among
 * splits of equal bottleneck, the sum of stage costs.
 *
 * Two exact dynamic programmes over prefixes, each at most O(S * L^2) calls
 * of the cost callback and O(S * L) memory, no recursion:
 *
 *   1. best[s][j]: the smallest bottleneck with which stages 0..s can take
 *      layers 0..j-1.  min over i of max(best[s-1][i], cost(s, i, j-1)).
 *      The bottleneck B* is best[S-1][L].
 *   2. sum[s][j]: the smallest sum of stage costs with which stages 0..s
 *      can take layers 0..j-1 using only ranges that cost at most B*.
 *
 * One programme on the pair (bottleneck, sum) would not be exact: a prefix
 * with a larger bottleneck but a smaller sum can win once the next stage's
 * cost hides that bottleneck.  The second pass compares costs with B*
 * exactly, so the callback must be a pure function (the same arguments give
 * the same double), as a cost model is.
 *
 * The callback must also be monotone: for a fixed stage and last layer,
 * taking an earlier first layer never costs less and never fits when the
 * shorter range does not (a stage's compute, memory and all-reduces only
 * grow with its layers; its outgoing transfer depends on the last layer
 * alone).  Both passes use it to stop scanning starts early, which makes
 * them about O(L^2) calls in all rather than O(S * L^2): each stage end
 * looks back only over ranges no costlier than the best bottleneck.
 *
 * Left out: anything about what a stage is (devices, memory): the callback
 * says what a range costs and whether it fits.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "plan/plan.h"

/* The cost of a range, or -1 when it does not fit (NaN included). */
static double range_cost(mpt__stage_cost_fn cost, void *ctx, size_t s, size_t first,
                         size_t last)
{
    double c = cost(ctx, s, first, last);
    return c >= 0 ? c : -1;
}

/* Appends to a message buffer, truncating silently (a diagnostic). */
static void append(char *buf, size_t size, const char *fmt, ...) MPT__PRINTF(3, 4);
static void append(char *buf, size_t size, const char *fmt, ...)
{
    size_t used = strlen(buf);
    va_list ap;
    if (used + 1 >= size)
        return;
    va_start(ap, fmt);
    vsnprintf(buf + used, size - used, fmt, ap);
    va_end(ap);
}

/* Builds the MPT_ERR_DEVICE_MEMORY detail when no split fits.  `best` is
 * pass 1's table (row s, column j; < 0 where stages 0..s cannot take layers
 * 0..j-1).  Names the layers that fit no stage even alone, then the first
 * stage that no feasible split of the stages before it lets fit, and the
 * smallest range it would have to take. */
static int explain(size_t L, size_t S, mpt__stage_cost_fn cost, void *ctx, const double *best)
{
    char msg[1024] = "", list[256] = "";
    size_t nowhere = 0;
    append(msg, sizeof msg, "no split of %zu layer%s over %zu stage%s fits memory", L,
           L == 1 ? "" : "s", S, S == 1 ? "" : "s");

    /* 1. Layers that no stage can hold, even alone. */
    for (size_t l = 0; l < L; l++) {
        int fits = 0;
        for (size_t s = 0; s < S && !fits; s++)
            fits = range_cost(cost, ctx, s, l, l) >= 0;
        if (fits)
            continue;
        if (nowhere < 8)
            append(list, sizeof list, "%s%zu", nowhere ? ", " : "", l);
        else if (nowhere == 8)
            append(list, sizeof list, ", ...");
        nowhere++;
    }
    if (nowhere)
        append(msg, sizeof msg, ": layer%s %s fit%s no stage even alone", nowhere == 1 ? "" : "s",
               list, nowhere == 1 ? "s" : "");

    /* 2. The first stage s that cannot follow any feasible split of stages
     * 0..s-1 (the prefixes it may end: see mpt__partition). */
    for (size_t s = 0; s < S; s++) {
        size_t jlo = s + 1 == S ? L : s + 1, jhi = L - (S - 1 - s), lo = L, hi = 0;
        int any = 0;
        for (size_t j = jlo; j <= jhi; j++)
            any |= best[s * (L + 1) + j] >= 0;
        if (any)
            continue;
        /* The starts the stages before it allow: ends of their feasible
         * prefixes (just layer 0 for stage 0). */
        if (s == 0)
            lo = hi = 0;
        for (size_t i = s; s > 0 && i <= jhi - 1; i++)
            if (best[(s - 1) * (L + 1) + i] >= 0) {
                lo = i < lo ? i : lo;
                hi = i > hi ? i : hi;
            }
        if (s > 0 && lo > hi) /* cannot happen: stage s-1 had a feasible prefix */
            break;
        /* Its smallest choice: one layer, or for the last stage all the
         * layers left after the latest start. */
        if (s == 0 && s + 1 == S)
            append(msg, sizeof msg, "; stage 0, the only one, cannot hold layers 0..%zu", L - 1);
        else if (s == 0)
            append(msg, sizeof msg, "; stage 0 cannot hold even layer 0 alone");
        else if (s + 1 == S)
            append(msg, sizeof msg,
                   "; stage %zu, the last, cannot hold the layers left by any split of the "
                   "stages before it that fits (those leave layers %zu..%zu at the fewest)",
                   s, hi, L - 1);
        else
            append(msg, sizeof msg,
                   "; stage %zu cannot hold even one layer at any start that a fitting split "
                   "of the stages before it leaves (layer %zu to %zu)",
                   s, lo, hi);
        return mpt__fail(MPT_ERR_DEVICE_MEMORY, "%s", msg);
    }
    return mpt__fail(MPT_ERR_DEVICE_MEMORY, "%s", msg); /* not reached: some stage is stuck */
}

int mpt__partition(size_t nlayers, size_t nstages, mpt__stage_cost_fn cost, void *ctx,
                   size_t *first, double *bottleneck)
{
    const size_t L = nlayers, S = nstages, W = L + 1;
    double *best = NULL, *sum = NULL;
    size_t *from = NULL;
    int status = MPT_OK;

    if (!cost || !first)
        return mpt__fail(MPT_ERR_INVALID, "mpt__partition: NULL cost callback or output");
    if (L == 0 || S == 0)
        return mpt__fail(MPT_ERR_INVALID, "mpt__partition: %zu layers over %zu stages", L, S);
    if (S > L)
        return mpt__fail(MPT_ERR_RANGE,
                         "%zu pipeline stages for %zu layers: each stage needs a layer", S, L);
    if (S > SIZE_MAX / sizeof *from / W || !(best = malloc(S * W * sizeof *best)) ||
        !(sum = malloc(S * W * sizeof *sum)) || !(from = malloc(S * W * sizeof *from))) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory partitioning %zu layers over %zu stages",
                           L, S);
        goto out;
    }
    for (size_t k = 0; k < S * W; k++)
        best[k] = sum[k] = -1;

    /* Pass 1: the smallest bottleneck.  Stage s ends prefix j (it takes
     * layers i..j-1) with s + 1 <= j <= L - (S - 1 - s), leaving each later
     * stage at least one layer; the last stage ends the whole, j = L. */
    for (size_t s = 0; s < S; s++)
        for (size_t j = s + 1 == S ? L : s + 1; j <= L - (S - 1 - s); j++) {
            double b = -1;
            if (s == 0) {
                b = range_cost(cost, ctx, 0, 0, j - 1);
            } else {
                /* Grow the stage leftwards from one layer: its cost only
                 * rises, so once it alone reaches the best found (or no
                 * longer fits) no earlier start can do better. */
                for (size_t i = j; i-- > s;) {
                    double prev = best[(s - 1) * W + i], c = range_cost(cost, ctx, s, i, j - 1);
                    if (c < 0 || (b >= 0 && c >= b))
                        break;
                    if (prev < 0)
                        continue;
                    c = c > prev ? c : prev;
                    if (b < 0 || c < b)
                        b = c;
                }
            }
            best[s * W + j] = b;
        }
    const double bound = best[(S - 1) * W + L];
    if (bound < 0) {
        status = explain(L, S, cost, ctx, best);
        goto out;
    }

    /* Pass 2: the smallest sum among splits whose every stage costs at most
     * the bottleneck; `from` remembers where each stage starts. */
    for (size_t s = 0; s < S; s++)
        for (size_t j = s + 1 == S ? L : s + 1; j <= L - (S - 1 - s); j++) {
            double b = -1;
            size_t arg = 0;
            /* Stage 0 starts at layer 0; stage s > 0 after s layers at
             * least.  Growing leftwards, the first range over the
             * bottleneck (or out of memory) ends the search, as above. */
            for (size_t i = s == 0 ? 1 : j; i-- > s;) {
                double prev = s == 0 ? 0 : sum[(s - 1) * W + i], c;
                c = range_cost(cost, ctx, s, i, j - 1);
                if (c < 0 || c > bound)
                    break;
                if (prev < 0)
                    continue;
                if (b < 0 || prev + c <= b) {
                    b = prev + c;
                    arg = i;
                }
            }
            sum[s * W + j] = b;
            from[s * W + j] = arg;
        }
    if (sum[(S - 1) * W + L] < 0) { /* pass 1's split qualifies, so only a callback that
                                      * changed its mind gets here */
        status = mpt__fail(MPT_ERR_INVALID,
                           "mpt__partition: the stage cost callback is not a pure function "
                           "(a range's cost changed between two calls)");
        goto out;
    }
    first[S] = L;
    for (size_t s = S, j = L; s-- > 0;) {
        first[s] = from[s * W + j];
        j = first[s];
    }
    if (bottleneck)
        *bottleneck = bound;
out:
    free(best);
    free(sum);
    free(from);
    return status;
}
