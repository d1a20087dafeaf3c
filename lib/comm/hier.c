/*
 * comm/hier.c: the hierarchical allreduce (comm.h, mpt__allreduce with
 * g->node set).
 *
 * For k nodes of m members each: (1) a reduce-scatter among the m members
 * of each node leaves the j-th of them with shard j of its node's sum;
 * (2) the j-th members of all nodes allreduce shard j with a ring among
 * themselves (m such rings at once, each on 1/m of the buffer); (3) an
 * all-gather inside each node.  Members of a node are taken in group
 * order, nodes in the order their first member appears in the group.
 *
 * Why: across processes the network is the slow link.  The flat ring
 * crosses it on every one of its 2 (km - 1) steps' slowest hops; here the
 * network sees 2 (k - 1) steps, each moving 1/(km) of the buffer per
 * member, and the 2 (m - 1) local steps run over the process's own
 * transport at memory speed.  The same shards' sums are formed in a fixed
 * order, so every member gets the same bits and every run the same.
 *
 * Hooks (device staging): the node reduce-scatter calls `need` as it
 * reads, the all-gather `done` as shards arrive, and a member's own shard
 * is `done` once the cross-node ring has finished it.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

#include "comm/comm.h"

/* Nodes in order of first appearance: first[i] = the first member of the
 * i-th node; returns how many. */
static int list_nodes(const mpt__group_t *g, int *first)
{
    int k = 0;
    for (int i = 0; i < g->size; i++) {
        int seen = 0;
        for (int n = 0; n < k && !seen; n++)
            seen = g->node[first[n]] == g->node[i];
        if (!seen)
            first[k++] = i;
    }
    return k;
}

/* The layout of g's nodes (first as list_nodes fills it): 1 with *nodes
 * and *per_node when it is hierarchical (see comm.h), else 0. */
static int layout(const mpt__group_t *g, int *first, int *nodes, int *per_node)
{
    if (!g->node || g->size < 4)
        return 0;
    int k = list_nodes(g, first), m = 0;
    for (int n = 0; n < k; n++) {
        int count = 0;
        for (int i = 0; i < g->size; i++)
            count += g->node[i] == g->node[first[n]];
        if (n > 0 && count != m)
            return 0;
        m = count;
    }
    *nodes = k, *per_node = m;
    return k >= 2 && m >= 2;
}

int mpt__allreduce_is_hierarchical(const mpt__group_t *g, int *nodes, int *per_node)
{
    int k = 0, m = 0, *first = g && g->node ? malloc((size_t)g->size * sizeof *first) : NULL;
    int hier = first && layout(g, first, &k, &m);
    free(first);
    if (hier && nodes)
        *nodes = k;
    if (hier && per_node)
        *per_node = m;
    return hier;
}

int mpt__allreduce_hier(const mpt__group_t *g, float *buf, size_t count,
                        const mpt__ring_hooks_t *hooks, int *ran)
{
    int k = 0, m = 0, status = MPT_OK;
    int *first = malloc((size_t)g->size * sizeof *first), *local = NULL, *cross = NULL;
    size_t *local_counts = NULL, *cross_counts = NULL;
    /* Every member must take the same path: a member that cannot even see
     * the layout fails the collective rather than run another one. */
    *ran = 1;
    if (!first) {
        status = mpt__fail(MPT_ERR_NOMEM, "hierarchical allreduce: out of memory");
        mpt__transport_abort(g->t, status, "hierarchical allreduce: out of memory");
        return status;
    }
    if (!layout(g, first, &k, &m)) {
        *ran = 0;
        goto out;
    }
    local = malloc((size_t)m * sizeof *local), cross = malloc((size_t)k * sizeof *cross);
    local_counts = malloc((size_t)m * sizeof *local_counts);
    cross_counts = malloc((size_t)k * sizeof *cross_counts);
    if (!local || !cross || !local_counts || !cross_counts) {
        status = mpt__fail(MPT_ERR_NOMEM, "hierarchical allreduce: out of memory");
        mpt__transport_abort(g->t, status, "hierarchical allreduce: out of memory");
        goto out;
    }
    int mine = g->node[g->self], j = 0, me_node = 0, n = 0;
    for (int i = 0; i < g->size; i++) /* this node's members, and my place among them */
        if (g->node[i] == mine) {
            if (i == g->self)
                j = n;
            local[n++] = g->members[i];
        }
    for (int x = 0; x < k; x++) { /* the j-th member of every node */
        int seen = 0;
        for (int i = 0; i < g->size; i++)
            if (g->node[i] == g->node[first[x]] && seen++ == j)
                cross[x] = g->members[i];
        if (g->node[first[x]] == mine)
            me_node = x;
    }
    mpt__ring_even_counts(count, m, local_counts);
    size_t shard_first = 0;
    for (int i = 0; i < j; i++)
        shard_first += local_counts[i];
    mpt__ring_even_counts(local_counts[j], k, cross_counts);

    mpt__group_t in_node = {g->t, local, m, j, g->tag, NULL};
    mpt__group_t across = {g->t, cross, k, me_node, g->tag, NULL};
    mpt__ring_hooks_t reads = {hooks ? hooks->need : NULL, NULL, hooks ? hooks->ctx : NULL};
    mpt__ring_hooks_t writes = {NULL, hooks ? hooks->done : NULL, hooks ? hooks->ctx : NULL};
    /* Each part aborts the transport itself when it fails. */
    MPT_TRY(mpt__ring_phased(&in_node, buf, local_counts, MPT__PHASE_NODE_REDUCE_SCATTER, -1,
                             hooks ? &reads : NULL));
    MPT_TRY(mpt__ring_phased(&across, buf + shard_first, cross_counts,
                             MPT__PHASE_CROSS_REDUCE_SCATTER, MPT__PHASE_CROSS_ALLGATHER, NULL));
    /* The all-gather reports this member's own shard done first, then the
     * others' as they arrive. */
    MPT_TRY(mpt__ring_phased(&in_node, buf, local_counts, -1, MPT__PHASE_NODE_ALLGATHER,
                             hooks ? &writes : NULL));
out:
    free(first);
    free(local);
    free(cross);
    free(local_counts);
    free(cross_counts);
    return status;
}
