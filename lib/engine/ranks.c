/*
 * engine/ranks.c: an engine over several MPI ranks.  Every rank builds the
 * whole table of workers but runs threads only for its own devices;
 * endpoints are the worker indices, then one control endpoint per rank,
 * which the caller's thread uses between jobs to gather the per-worker
 * results (loss, statistics) and the model's state at rank 0 and broadcast
 * them back, so that each rank sees the job as one process does.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/engine_impl.h"

/* ---- across ranks: the caller's thread, between jobs ------------------------- */

/* The control group: one endpoint per rank, member r = rank r. */
mpt__group_t mpt__eng_ctl_group(const mpt__engine_t *e)
{
    return (mpt__group_t){e->t, e->ctl_members, e->nranks, e->rank, e->tags.ctl, NULL};
}

/* Every rank sends `bytes` of its own to rank 0 (which receives them in
 * rank order through `take`), then rank 0's `all` (of all_bytes) reaches
 * every rank. */
static int gather_then_broadcast(mpt__engine_t *e, const void *mine, size_t bytes,
                                 int (*take)(mpt__engine_t *e, int rank, void *ctx), void *ctx,
                                 void *all, size_t all_bytes)
{
    int status = MPT_OK, self = e->ctl_members[e->rank];
    if (e->rank != 0) {
        MPT_TRY(mpt__send(e->t, self, e->ctl_members[0], e->tags.gather, mine, bytes));
    } else {
        for (int r = 1; r < e->nranks; r++)
            MPT_TRY(take(e, r, ctx));
    }
    mpt__group_t g = mpt__eng_ctl_group(e);
    MPT_TRY(mpt__broadcast(&g, all, all_bytes, 0, NULL));
out:
    return status;
}

static void results_put(const worker_t *w, double *row)
{
    const mpt__engine_device_stats_t *st = &w->stats;
    row[R_LOSS] = w->loss_sum, row[R_CORRECT] = w->correct, row[R_NORM] = w->norm;
    row[R_STEP_S] = w->step_s, row[R_ALLREDUCE_S] = st->allreduce_s;
    row[R_ALLREDUCE_BYTES] = (double)st->allreduce_bytes;
    row[R_MEMORY] = (double)st->memory_bytes, row[R_TP_S] = st->tp_s;
    row[R_TP_BYTES] = (double)st->tp_bytes;
    row[R_FORWARD_S] = st->forward_s, row[R_BACKWARD_S] = st->backward_s;
    row[R_P2P_S] = st->p2p_s, row[R_REDUCE_WAIT_S] = st->reduce_wait_s;
    row[R_UPDATE_S] = st->update_s;
    row[R_PEAK_MEMORY] = (double)st->peak_memory_bytes;
    row[R_PEER_WAIT_S] = st->peer_wait_s, row[R_TRANSFER_S] = st->transfer_s;
    row[R_AR_WAIT_S] = st->allreduce_wait_s, row[R_AR_TRANSFER_S] = st->allreduce_transfer_s;
}

static void results_get(worker_t *w, const double *row)
{
    mpt__engine_device_stats_t *st = &w->stats;
    w->loss_sum = row[R_LOSS], w->correct = row[R_CORRECT], w->norm = row[R_NORM];
    w->step_s = row[R_STEP_S], st->allreduce_s = row[R_ALLREDUCE_S];
    st->allreduce_bytes = (size_t)row[R_ALLREDUCE_BYTES];
    st->memory_bytes = (size_t)row[R_MEMORY], st->tp_s = row[R_TP_S];
    st->tp_bytes = (size_t)row[R_TP_BYTES];
    st->forward_s = row[R_FORWARD_S], st->backward_s = row[R_BACKWARD_S];
    st->p2p_s = row[R_P2P_S], st->reduce_wait_s = row[R_REDUCE_WAIT_S];
    st->update_s = row[R_UPDATE_S];
    st->peak_memory_bytes = (size_t)row[R_PEAK_MEMORY];
    st->peer_wait_s = row[R_PEER_WAIT_S], st->transfer_s = row[R_TRANSFER_S];
    st->allreduce_wait_s = row[R_AR_WAIT_S], st->allreduce_transfer_s = row[R_AR_TRANSFER_S];
}

/* Rows of `width` doubles per worker: where they go, and where rank 0
 * receives another rank's before it spreads them. */
typedef struct {
    double *rows, *scratch;
    size_t width;
} rows_t;

/* Rank 0 receives rank r's rows (its workers, in index order) into the table. */
static int take_rows(mpt__engine_t *e, int r, void *ctx)
{
    rows_t *t = ctx;
    size_t n = 0;
    for (size_t i = 0; i < e->nworkers; i++)
        n += e->w[i].rank == r;
    int status = mpt__recv(e->t, e->ctl_members[0], e->ctl_members[r], e->tags.gather,
                           t->scratch, n * t->width * sizeof *t->scratch);
    for (size_t i = 0, k = 0; status == MPT_OK && i < e->nworkers; i++)
        if (e->w[i].rank == r)
            memcpy(t->rows + i * t->width, t->scratch + t->width * k++,
                   t->width * sizeof *t->rows);
    return status;
}

/* Every rank's rows of its own workers (packed into scratch, which has
 * room for every worker's), on every rank. */
static int exchange_rows(mpt__engine_t *e, rows_t *t)
{
    size_t k = 0;
    for (size_t i = 0; i < e->nworkers; i++)
        if (e->w[i].local)
            memcpy(t->scratch + t->width * k++, t->rows + i * t->width,
                   t->width * sizeof *t->rows);
    return gather_then_broadcast(e, t->scratch, k * t->width * sizeof *t->scratch, take_rows,
                                 t, t->rows, e->nworkers * t->width * sizeof *t->rows);
}

/* After a job: every worker's loss, counts and statistics on every rank,
 * so that the sums below run over all workers in index order, exactly as
 * in one process. */
int mpt__eng_exchange_results(mpt__engine_t *e)
{
    rows_t t = {e->results, e->results + e->nworkers * R_COUNT, R_COUNT};
    for (size_t i = 0; i < e->nworkers; i++)
        if (e->w[i].local)
            results_put(&e->w[i], e->results + i * R_COUNT);
    int status = exchange_rows(e, &t);
    for (size_t i = 0; status == MPT_OK && i < e->nworkers; i++)
        results_get(&e->w[i], e->results + i * R_COUNT);
    return status;
}

int mpt__engine_share_rows(mpt__engine_t *e, double *rows, size_t width)
{
    if (!e || e->nranks <= 1)
        return MPT_OK;
    rows_t t = {rows, malloc((e->nworkers * width + 1) * sizeof *rows), width};
    if (!t.scratch)
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    int status = exchange_rows(e, &t);
    free(t.scratch);
    return status;
}

/* Rank 0 receives rank r's owned state elements into the model array. */
static int take_state(mpt__engine_t *e, int r, void *ctx)
{
    float *out = ctx;
    int status = mpt__recv(e->t, e->ctl_members[0], e->ctl_members[r], e->tags.gather, e->pack,
                           e->owned[r] * sizeof *e->pack);
    for (size_t i = 0, k = 0; status == MPT_OK && i < e->m->param_floats; i++)
        if (e->owner[i] == r)
            out[i] = e->pack[k++];
    return status;
}

/* After each rank read its own workers' parts of a model array: the whole
 * array on every rank. */
int mpt__eng_exchange_state(mpt__engine_t *e, float *out)
{
    size_t k = 0;
    for (size_t i = 0; e->rank != 0 && i < e->m->param_floats; i++)
        if (e->owner[i] == e->rank)
            e->pack[k++] = out[i];
    return gather_then_broadcast(e, e->pack, k * sizeof *e->pack, take_state, out, out,
                                 e->m->param_floats * sizeof *out);
}

/* Which rank reads each model element: the first worker of replica 0 that
 * holds it (a replicated layer of a tensor-parallel group is held by every
 * member; any copy will do). */
int mpt__eng_assign_owners(mpt__engine_t *e)
{
    size_t n = e->m->param_floats, most = 0;
    if (!(e->owner = malloc((n ? n : 1) * sizeof *e->owner)) ||
        !(e->owned = calloc((size_t)e->nranks, sizeof *e->owned)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        e->owner[i] = -1;
    for (size_t i = 0; i < e->nworkers; i++) {
        const worker_t *w = &e->w[i];
        if (w->replica != 0)
            continue;
        size_t npieces = 1;
        const mpt__piece_t *pieces = w->shard ? mpt__shard_pieces(w->shard, &npieces) : NULL;
        mpt__piece_t whole = {w->p0, 0, w->np};
        for (size_t q = 0; q < npieces; q++) {
            const mpt__piece_t *pc = pieces ? &pieces[q] : &whole;
            for (size_t j = pc->model; j < pc->model + pc->count; j++)
                if (e->owner[j] < 0)
                    e->owner[j] = w->rank, e->owned[w->rank]++;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (e->owner[i] < 0)
            return mpt__fail(MPT_ERR_INVALID, "parameter element %zu is on no device of "
                             "replica 0", i);
    for (int r = 0; r < e->nranks; r++)
        most = e->owned[r] > most ? e->owned[r] : most;
    if (!(e->pack = malloc((most ? most : 1) * sizeof *e->pack)))
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    return MPT_OK;
}

/* Each worker's rank (that of its device) and whether it is this one's;
 * then, across ranks, the MPI transport over the workers and the ranks'
 * control endpoints; else the local one. */
int mpt__eng_make_transport(mpt__engine_t *e, const mpt__engine_ranks_t *ranks)
{
    if (e->nranks == 1) {
        for (size_t i = 0; i < e->nworkers; i++)
            e->w[i].local = 1;
        e->nlocal = e->nworkers;
        return mpt__transport_local_create((int)e->nworkers, &e->t);
    }
    int n = (int)e->nworkers + e->nranks, *rank_of = malloc((size_t)n * sizeof *rank_of);
    if (!rank_of || !(e->ctl_members = malloc((size_t)e->nranks * sizeof *e->ctl_members)) ||
        !(e->results = calloc(2 * e->nworkers * R_COUNT + 1, sizeof *e->results))) {
        free(rank_of);
        return mpt__fail(MPT_ERR_NOMEM, "out of memory");
    }
    /* Workers in creation order: replica, stage, member. */
    const mpt__plan_t *p = e->plan;
    for (size_t r = 0, k = 0; r < e->nreplicas; r++)
        for (size_t s = 0; s < p->replicas[r].nstages; s++)
            for (size_t g = 0; g < p->replicas[r].stages[s].ndevices; g++, k++) {
                worker_t *w = &e->w[k];
                size_t d = p->replicas[r].stages[s].devices[g].device;
                w->rank = rank_of[k] = ranks->device_rank[d];
                w->local = w->rank == e->rank;
                e->nlocal += (size_t)w->local;
            }
    for (int r = 0; r < e->nranks; r++)
        rank_of[e->nworkers + (size_t)r] = r, e->ctl_members[r] = (int)e->nworkers + r;
    int status = mpt__transport_mpi_create_mapped(n, rank_of, &e->t);
    free(rank_of);
    return status;
}

void mpt__engine_set_comm_timeout(mpt__engine_t *e, double seconds)
{
    if (e)
        e->job_deadline_s = seconds;
    if (e && e->t)
        e->t->timeout_s = seconds;
}
