/*
 * comm/tags.c: the tag allocator of comm.h.
 */
#include "comm/comm.h"

void mpt__tags_init(mpt__tags_t *a)
{
    a->next_p2p = 1; /* 0 stays unused: a zeroed tag field is never a real tag */
    a->next_group = 0;
}

static int take(int *next, int max, int count, const char *kind, const char *what, int *first)
{
    if (count < 0 || *next > max - count + 1)
        return mpt__fail(MPT_ERR_RANGE, "%d %s tags for %s: only %d of %d are left", count,
                         kind, what, max - *next + 1, max);
    *first = *next;
    *next += count;
    return MPT_OK;
}

int mpt__tags_p2p(mpt__tags_t *a, int count, const char *what, int *first)
{
    return take(&a->next_p2p, MPT__P2P_TAG_MAX, count, "point-to-point", what, first);
}

int mpt__tags_group(mpt__tags_t *a, int count, const char *what, int *first)
{
    return take(&a->next_group, MPT__GROUP_TAG_MAX, count, "group", what, first);
}
