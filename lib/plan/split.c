/*
 * plan/split.c: how many units (output features, input features,
 * channels) of a layer each member of a tensor-parallel group gets, for
 * the planner (which refuses fractions that leave a member nothing) and
 * the engine (engine/shard.c, which cuts the layers).
 */
#include "plan/plan.h"

int mpt__tp_split(size_t n, const double *fractions, size_t tp, size_t *counts)
{
    double sum = 0;
    size_t given = 0;
    for (size_t i = 0; i < tp; i++) {
        if (!(fractions[i] > 0))
            return mpt__fail(MPT_ERR_INVALID, "tensor-parallel member %zu has fraction %g: "
                             "every member needs a positive share", i, fractions[i]);
        sum += fractions[i];
    }
    for (size_t i = 0; i < tp; i++) {
        double exact = (double)n * fractions[i] / sum;
        counts[i] = (size_t)exact;
        if (counts[i] > n - given) /* rounding up of a share near n */
            counts[i] = n - given;
        given += counts[i];
    }
    /* What is left (fewer than tp units) goes one each to the largest
     * remainders: a member already given one has remainder below 0. */
    while (given < n) {
        size_t top = 0;
        double best = -2;
        for (size_t i = 0; i < tp; i++) {
            double rest = (double)n * fractions[i] / sum - (double)counts[i];
            if (rest > best)
                top = i, best = rest;
        }
        counts[top]++, given++;
    }
    for (size_t i = 0; i < tp; i++)
        if (counts[i] == 0)
            return mpt__fail(MPT_ERR_INVALID,
                             "%zu units over %zu members with fraction %.4g for member %zu "
                             "give it none", n, tp, fractions[i] / sum, i);
    return MPT_OK;
}
