/*
 * train/loader.c: the background batch loader.  One worker thread copies
 * the samples of the next batch (in the seeded order of its epoch) into a
 * host buffer while the caller uses the previous one: double buffering,
 * with a mutex and two condition variables and no polling.
 *
 * Leaves out: several workers, augmentation, device uploads (the caller
 * copies the host batch to its devices) and datasets larger than memory.
 * One loader is driven by one thread at a time; the dataset must outlive it.
 *
 * Buffers: slot `front` belongs to the caller (the pointers the last
 * mpt__loader_next returned), slot 1 - front to the worker.  They change
 * hands only in mpt__loader_next, when the worker has finished (`ready`)
 * and so is not writing.  Every request (create, seek, next) bumps `gen`;
 * a batch finished for an older generation (a seek came while the worker
 * was busy) is discarded, and the worker starts on the newest request.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/data.h"

struct mpt__loader {
    const mpt__dataset_t *data;
    size_t batch;   /* samples per batch */
    size_t batches; /* per epoch: data->count / batch */
    uint64_t seed;
    float *x[2];   /* (batch, sample_floats) each */
    int32_t *y[2]; /* (batch) each */
    int front;     /* the caller's slot */

    /* Owned by the worker alone: the order of order_epoch, recomputed when
     * a batch of another epoch is asked for. */
    uint32_t *order;
    uint64_t order_epoch;

    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake; /* to the worker: a request or stop */
    pthread_cond_t done; /* to the caller: a batch (or an error) is ready */
    /* Guarded by mu. */
    int stop;
    int pending; /* a request the worker has not taken yet */
    int ready;   /* slot 1 - front holds the batch of the newest request */
    uint64_t gen;
    uint64_t want_epoch;
    size_t want_batch;
    uint64_t ready_epoch;
    size_t ready_batch;
    int error;           /* the status of the ready batch */
    char error_msg[512]; /* and its detail, taken from the worker's thread */
};

/* Asks the worker for (epoch, batch); the caller holds mu. */
static void request(mpt__loader_t *l, uint64_t epoch, size_t batch)
{
    l->want_epoch = epoch;
    l->want_batch = batch;
    l->gen++;
    l->pending = 1;
    l->ready = 0;
    pthread_cond_signal(&l->wake);
}

/* Fills slot `slot` with batch b of `epoch`: sample k is dataset row
 * order[b * batch + k]. */
static int fill(mpt__loader_t *l, int slot, uint64_t epoch, size_t b)
{
    const mpt__dataset_t *d = l->data;
    if (!l->order || l->order_epoch != epoch) {
        free(l->order);
        l->order = NULL;
        int status = mpt__epoch_order(l->seed, epoch, d->count, &l->order);
        if (status < 0)
            return mpt__fail_context(status, "batch loader, epoch %llu",
                                     (unsigned long long)epoch);
        l->order_epoch = epoch;
    }
    const uint32_t *rows = l->order + b * l->batch;
    for (size_t k = 0; k < l->batch; k++) {
        memcpy(l->x[slot] + k * d->sample_floats, d->x + (size_t)rows[k] * d->sample_floats,
               d->sample_floats * sizeof(float));
        l->y[slot][k] = d->y[rows[k]];
    }
    return MPT_OK;
}

static void *worker(void *arg)
{
    mpt__loader_t *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && !l->pending)
            pthread_cond_wait(&l->wake, &l->mu);
        if (l->stop)
            break;
        uint64_t epoch = l->want_epoch, gen = l->gen;
        size_t b = l->want_batch;
        int slot = 1 - l->front;
        l->pending = 0;
        pthread_mutex_unlock(&l->mu);

        int status = fill(l, slot, epoch, b);

        pthread_mutex_lock(&l->mu);
        if (gen != l->gen)
            continue; /* superseded by a seek: its request is pending */
        l->ready = 1;
        l->ready_epoch = epoch;
        l->ready_batch = b;
        l->error = status;
        l->error_msg[0] = '\0';
        if (status < 0)
            snprintf(l->error_msg, sizeof l->error_msg, "%s", mpt_last_error());
        pthread_cond_signal(&l->done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int mpt__loader_create(const mpt__dataset_t *data, size_t batch, uint64_t seed,
                       mpt__loader_t **out)
{
    mpt__loader_t *l;
    int err;
    if (!out)
        return mpt__fail(MPT_ERR_INVALID, "batch loader: no output");
    *out = NULL;
    if (!data || !data->x || !data->y || data->sample_floats == 0)
        return mpt__fail(MPT_ERR_INVALID, "batch loader: empty dataset");
    if (batch == 0 || batch > data->count)
        return mpt__fail(MPT_ERR_INVALID,
                         "batch loader: batch of %zu samples for a dataset of %zu: need 1 to %zu",
                         batch, data->count, data->count);
    if ((uint64_t)data->count > (uint64_t)UINT32_MAX + 1)
        return mpt__fail(MPT_ERR_RANGE, "batch loader: %zu samples do not fit 32-bit indices",
                         data->count);
    if (data->sample_floats > SIZE_MAX / sizeof(float) / batch)
        return mpt__fail(MPT_ERR_RANGE, "batch loader: batch of %zu x %zu floats is too large",
                         batch, data->sample_floats);

    l = calloc(1, sizeof *l);
    if (!l)
        return mpt__fail(MPT_ERR_NOMEM, "batch loader: out of memory");
    l->data = data;
    l->batch = batch;
    l->batches = data->count / batch;
    l->seed = seed;
    for (int s = 0; s < 2; s++) {
        l->x[s] = malloc(batch * data->sample_floats * sizeof(float));
        l->y[s] = malloc(batch * sizeof(int32_t));
        if (!l->x[s] || !l->y[s]) {
            for (int t = 0; t <= s; t++)
                free(l->x[t]), free(l->y[t]);
            free(l);
            return mpt__fail(MPT_ERR_NOMEM, "batch loader: out of memory for two batches of "
                                            "%zu x %zu floats",
                             batch, data->sample_floats);
        }
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->wake, NULL);
    pthread_cond_init(&l->done, NULL);
    /* The first batch is asked for before the worker exists, so it starts
     * on it at once; no lock is needed yet. */
    request(l, 0, 0);
    err = pthread_create(&l->thread, NULL, worker, l);
    if (err != 0) {
        pthread_cond_destroy(&l->done);
        pthread_cond_destroy(&l->wake);
        pthread_mutex_destroy(&l->mu);
        for (int s = 0; s < 2; s++)
            free(l->x[s]), free(l->y[s]);
        free(l);
        return mpt__fail(MPT_ERR_NOMEM, "batch loader: cannot start its thread: %s",
                         strerror(err));
    }
    *out = l;
    return MPT_OK;
}

void mpt__loader_free(mpt__loader_t *l)
{
    if (!l)
        return;
    /* The worker sees stop when it next takes the lock: at once if idle,
     * after the batch it is copying otherwise (bounded work). */
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_signal(&l->wake);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    pthread_cond_destroy(&l->done);
    pthread_cond_destroy(&l->wake);
    pthread_mutex_destroy(&l->mu);
    for (int s = 0; s < 2; s++)
        free(l->x[s]), free(l->y[s]);
    free(l->order);
    free(l);
}

size_t mpt__loader_batches(const mpt__loader_t *l)
{
    return l ? l->batches : 0;
}

int mpt__loader_seek(mpt__loader_t *l, uint64_t epoch, size_t batch_index)
{
    if (!l)
        return mpt__fail(MPT_ERR_INVALID, "batch loader: NULL loader");
    if (batch_index >= l->batches)
        return mpt__fail(MPT_ERR_RANGE, "batch loader: batch %zu of an epoch of %zu batches",
                         batch_index, l->batches);
    pthread_mutex_lock(&l->mu);
    request(l, epoch, batch_index);
    pthread_mutex_unlock(&l->mu);
    return MPT_OK;
}

int mpt__loader_next(mpt__loader_t *l, const float **x, const int32_t **y, uint64_t *epoch,
                     size_t *batch_index)
{
    uint64_t e;
    size_t b;
    if (!l || !x || !y)
        return mpt__fail(MPT_ERR_INVALID, "batch loader: NULL argument");
    pthread_mutex_lock(&l->mu);
    /* A request is always outstanding here (create, seek and every next
     * make one), so `ready` comes. */
    while (!l->ready)
        pthread_cond_wait(&l->done, &l->mu);
    if (l->error < 0) {
        /* Kept ready: the same error again on the next call, until a seek
         * asks for something else. */
        int status = l->error;
        char msg[sizeof l->error_msg];
        memcpy(msg, l->error_msg, sizeof msg);
        pthread_mutex_unlock(&l->mu);
        return mpt__fail(status, "%s", msg);
    }
    l->front = 1 - l->front;
    e = l->ready_epoch;
    b = l->ready_batch;
    if (b + 1 < l->batches)
        request(l, e, b + 1);
    else
        request(l, e + 1, 0);
    pthread_mutex_unlock(&l->mu);
    *x = l->x[l->front];
    *y = l->y[l->front];
    if (epoch)
        *epoch = e;
    if (batch_index)
        *batch_index = b;
    return MPT_OK;
}
