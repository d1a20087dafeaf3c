/*
 * plan/subsets.c: which sets of devices the planner tries (its pass 0).
 * Using every device is not always fastest: a slow device in a pipeline
 * is its bottleneck, in data parallelism it waits on the all-reduce, and
 * devices that share cores slow each other.  The candidates:
 *
 *   - every allowed device (first: on large clusters it usually wins, and
 *     its best step prunes the rest by their bounds);
 *   - with at most MPT__SUBSETS_EXHAUSTIVE devices, every other non-empty
 *     subset (63 at most), so that small machines get the true best;
 *   - above that, the heterogeneity-aware ones: the devices at least as
 *     fast as each kind (the slowest kinds dropped one at a time, speed
 *     being the model's predicted samples per second on the device alone),
 *     each of those restricted to the first node that has the fastest
 *     kind (no network), and one device of each kind alone; past 64
 *     devices, of the multi-node sets only the fastest kind (each set
 *     costs a search as long as the whole cluster's, and planning 1,024
 *     devices must stay under a second).
 *
 * Left out: subsets that mix kinds other than by speed order (dropping a
 * fast kind to keep a slow one never helps a pipeline or a replica), and
 * more than one device count per kind.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/search.h"

#define MPT__SUBSETS_LARGE 64

void mpt__plan_subsets_free(mpt__subset_t *s, size_t count)
{
    for (size_t i = 0; s && i < count; i++)
        free(s[i].devices);
    free(s);
}

typedef struct {
    mpt__subset_t *list;
    size_t n, cap;
} subsets_t;

/* Appends the devices flagged in take (of `allowed`) unless that set is
 * empty or already listed. */
static int add(subsets_t *S, const size_t *allowed, size_t n, const unsigned char *take,
               const char *why)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += take[i] != 0;
    if (k == 0)
        return MPT_OK;
    for (size_t s = 0; s < S->n; s++) {
        if (S->list[s].n != k)
            continue;
        size_t j = 0, same = 1;
        for (size_t i = 0; i < n && same; i++)
            if (take[i])
                same = S->list[s].devices[j++] == allowed[i];
        if (same)
            return MPT_OK;
    }
    if (S->n == S->cap) {
        size_t cap = S->cap ? 2 * S->cap : 16;
        mpt__subset_t *grown = realloc(S->list, cap * sizeof *grown);
        if (!grown)
            return mpt__fail(MPT_ERR_NOMEM, "out of memory");
        S->list = grown, S->cap = cap;
    }
    mpt__subset_t *sub = &S->list[S->n];
    if (!(sub->devices = malloc(k * sizeof *sub->devices)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    sub->n = 0;
    for (size_t i = 0; i < n; i++)
        if (take[i])
            sub->devices[sub->n++] = allowed[i];
    snprintf(sub->why, sizeof sub->why, "%s", why);
    S->n++;
    return MPT_OK;
}

/* Devices of equal speed (within 1e-9) are one kind here. */
static int same_speed(double a, double b)
{
    return a == b || (a > 0 && b > 0 && (a > b ? a / b : b / a) - 1 < 1e-9);
}

int mpt__plan_subsets(const mpt_cluster_t *c, const size_t *allowed, size_t n,
                      const double *speed, mpt__subset_t **out, size_t *count)
{
    subsets_t S = {0};
    unsigned char *take = calloc(n ? n : 1, 1);
    double *kinds = malloc((n ? n : 1) * sizeof *kinds);
    size_t nkinds = 0;
    int status = MPT_OK;
    char why[96];
    *out = NULL, *count = 0;
    if (!take || !kinds) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    memset(take, 1, n);
    MPT_TRY(add(&S, allowed, n, take, "all devices"));
    if (n <= MPT__SUBSETS_EXHAUSTIVE) {
        for (size_t mask = (1u << n) - 2; mask > 0; mask--) {
            for (size_t i = 0; i < n; i++)
                take[i] = (mask >> i) & 1;
            MPT_TRY(add(&S, allowed, n, take, "a subset"));
        }
        goto done;
    }
    /* The kinds by speed, fastest first. */
    for (size_t i = 0; i < n; i++) {
        double v = speed[allowed[i]];
        size_t k = 0;
        while (k < nkinds && !same_speed(kinds[k], v))
            k++;
        if (k < nkinds)
            continue;
        for (k = nkinds++; k > 0 && kinds[k - 1] < v; k--)
            kinds[k] = kinds[k - 1];
        kinds[k] = v;
    }
    int node = -1;
    for (size_t i = 0; i < n && node < 0; i++)
        if (same_speed(speed[allowed[i]], kinds[0]))
            node = mpt_cluster_device(c, allowed[i])->locality.node;
    for (size_t k = 0; k < nkinds; k++) {
        for (size_t i = 0; i < n; i++)
            take[i] = speed[allowed[i]] >= kinds[k] || same_speed(speed[allowed[i]], kinds[k]);
        snprintf(why, sizeof why, "the %zu fastest kind(s)", k + 1);
        /* Past MPT__SUBSETS_LARGE devices only the fastest kind: each
         * larger set costs a search as long as all of them. */
        if (n <= MPT__SUBSETS_LARGE || k == 0)
            MPT_TRY(add(&S, allowed, n, take, why));
        for (size_t i = 0; i < n; i++)
            take[i] = take[i] && mpt_cluster_device(c, allowed[i])->locality.node == node;
        snprintf(why, sizeof why, "the %zu fastest kind(s) of node %d", k + 1, node);
        MPT_TRY(add(&S, allowed, n, take, why));
    }
    for (size_t k = 0; k < nkinds; k++) {
        size_t one = 0;
        while (!same_speed(speed[allowed[one]], kinds[k]))
            one++;
        memset(take, 0, n);
        take[one] = 1;
        snprintf(why, sizeof why, "alone");
        MPT_TRY(add(&S, allowed, n, take, why));
    }
done:
    *out = S.list, *count = S.n;
    S.list = NULL, S.n = 0;
out:
    mpt__plan_subsets_free(S.list, S.n);
    free(take);
    free(kinds);
    return status;
}
