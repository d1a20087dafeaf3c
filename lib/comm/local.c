/*
 * comm/local.c: the `local` transport: endpoints are threads of one process
 * and a message is one memcpy from the sender's buffer into the receiver's.
 *
 * Rendezvous: a posted isend or irecv waits, unbuffered, in its destination
 * endpoint's port until its partner is posted; whichever side arrives
 * second does the copy (outside the lock, so that many pairs copy at once)
 * and completes both requests.  Nothing is ever buffered, so memory does
 * not grow with the number of messages in flight, and a send completes
 * exactly when its bytes are in the receiver's buffer.  Matching is by
 * (source, destination, tag) in posting order, because each port keeps its
 * unmatched sends and receives in posting order and matches the first fit.
 *
 * Waiting: a short spin, then sleep (see SPIN_SECONDS).  Of the time a
 * wait blocks, the copy itself (copy_s, timed by whichever side made it)
 * is transfer and the rest waiting: for the partner to come, and to be
 * woken once the copy is done (mpt__comm_add_times).
 *
 * Locking: one mutex and one condition variable per destination endpoint
 * (a ring touches each port from two threads only).  Abort sets a flag,
 * then locks and broadcasts every port, so a waiter that saw the flag clear
 * under its port lock cannot miss the wake-up.  A request being copied is
 * never freed under the copier: its waiter waits for the copy to end even
 * after an abort: a memcpy always ends.
 *
 * Deliberately left out: buffering of early sends (eager protocol), request
 * pools (a malloc per message is noise next to a chunk-sized copy), and
 * any notion of processes (that is the MPI transport).
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"

typedef enum { REQ_POSTED, REQ_COPYING, REQ_DONE } req_state_t;

struct mpt__request {
    struct mpt__request *next, *prev; /* in its port's send or receive list while posted */
    int is_send;
    int src, dst, tag;
    void *buf; /* const for a send */
    size_t bytes;
    atomic_int state;     /* req_state_t; written under the port lock, read by spinners */
    size_t partner_bytes; /* the partner's size, kept to name a mismatch */
    int status;           /* MPT_OK or MPT_ERR_INVALID (size mismatch) once done */
    double copy_s;        /* how long the copy of its bytes took, once done */
    int copied_here;      /* its poster made the copy, and counted it */
};

typedef struct {
    mpt__request_t *head, *tail;
} req_list_t;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* a request of this port completed, or the transport aborted */
    req_list_t sends;    /* unmatched sends to this endpoint, in posting order */
    req_list_t recvs;    /* unmatched receives at this endpoint, in posting order */
} port_t;

typedef struct {
    mpt__transport_t base;
    port_t *ports;        /* one per destination endpoint */
    atomic_int aborted;   /* set once, by the first abort */
    pthread_mutex_t abort_lock;
    int abort_status;
    char abort_why[512];
} local_t;

static void list_push(req_list_t *l, mpt__request_t *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

static void list_remove(req_list_t *l, mpt__request_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->next = r->prev = NULL;
}

/* The first request in l from `src` with `tag`: FIFO per (src, dst, tag). */
static mpt__request_t *list_match(const req_list_t *l, int src, int tag)
{
    for (mpt__request_t *r = l->head; r; r = r->next)
        if (r->src == src && r->tag == tag)
            return r;
    return NULL;
}

static int fail_aborted(local_t *lt)
{
    pthread_mutex_lock(&lt->abort_lock);
    int status = mpt__fail(MPT_ERR_ABORTED, "local transport aborted (%s): %s",
                           mpt_status_name(lt->abort_status), lt->abort_why);
    pthread_mutex_unlock(&lt->abort_lock);
    return status;
}

static int post(mpt__transport_t *t, int is_send, int src, int dst, int tag, void *buf,
                size_t bytes, mpt__request_t **req)
{
    local_t *lt = (local_t *)t;
    if (!req)
        return mpt__fail(MPT_ERR_INVALID, "local transport: no request pointer");
    *req = NULL;
    if (src < 0 || src >= t->nendpoints || dst < 0 || dst >= t->nendpoints)
        return mpt__fail(MPT_ERR_INVALID, "local transport: %s from endpoint %d to %d, but "
                         "endpoints are 0..%d", is_send ? "send" : "receive", src, dst,
                         t->nendpoints - 1);
    if (!buf && bytes > 0)
        return mpt__fail(MPT_ERR_INVALID, "local transport: NULL buffer of %zu bytes", bytes);
    if (atomic_load(&lt->aborted))
        return fail_aborted(lt);
    mpt__request_t *r = calloc(1, sizeof *r);
    if (!r)
        return mpt__fail(MPT_ERR_NOMEM, "local transport: out of memory posting a request");
    *r = (mpt__request_t){.is_send = is_send, .src = src, .dst = dst, .tag = tag, .buf = buf,
                          .bytes = bytes};
    atomic_init(&r->state, REQ_POSTED);
    port_t *p = &lt->ports[dst];
    pthread_mutex_lock(&p->lock);
    mpt__request_t *partner = list_match(is_send ? &p->recvs : &p->sends, src, tag);
    if (!partner) {
        list_push(is_send ? &p->sends : &p->recvs, r); /* first to arrive: wait there */
        pthread_mutex_unlock(&p->lock);
        *req = r;
        return MPT_OK;
    }
    /* Second to arrive: take the pair out of the port, copy without the lock. */
    list_remove(is_send ? &p->recvs : &p->sends, partner);
    mpt__request_t *s = is_send ? r : partner, *d = is_send ? partner : r;
    int mismatch = s->bytes != d->bytes;
    s->partner_bytes = d->bytes, d->partner_bytes = s->bytes;
    r->copied_here = 1;
    atomic_store(&partner->state, REQ_COPYING);
    pthread_mutex_unlock(&p->lock);
    double t0 = mpt__now();
    if (!mismatch && s->bytes > 0)
        memcpy(d->buf, s->buf, s->bytes);
    s->copy_s = d->copy_s = mpt__now() - t0;
    mpt__comm_add_times(0, s->copy_s);
    pthread_mutex_lock(&p->lock);
    s->status = d->status = mismatch ? MPT_ERR_INVALID : MPT_OK;
    /* Nothing touches s or d after this (a spinning waiter may free it). */
    atomic_store_explicit(&s->state, REQ_DONE, memory_order_release);
    atomic_store_explicit(&d->state, REQ_DONE, memory_order_release);
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    *req = r;
    return MPT_OK;
}

static int local_isend(mpt__transport_t *t, int src, int dst, int tag, const void *buf,
                       size_t bytes, mpt__request_t **req)
{
    return post(t, 1, src, dst, tag, (void *)buf, bytes, req);
}

static int local_irecv(mpt__transport_t *t, int dst, int src, int tag, void *buf, size_t bytes,
                       mpt__request_t **req)
{
    return post(t, 0, src, dst, tag, buf, bytes, req);
}

/* Polls a request for up to SPIN_SECONDS before sleeping on the port's
 * condition variable.  A sleep costs a futex wake-up and a context switch
 * (tens of microseconds measured here), as long as copying a whole 256 KiB
 * chunk, while the partner of a ring exchange usually arrives within a few
 * microseconds; past the budget the thread sleeps, so oversubscribed
 * members (more threads than cores) do not burn their neighbour's core. */
#define SPIN_SECONDS 50e-6

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int spin_until_done(local_t *lt, mpt__request_t *r)
{
    double until = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(&r->state, memory_order_acquire) == REQ_DONE)
            return 1;
        if (atomic_load(&lt->aborted))
            return 0;
        cpu_relax();
        if (i % 64 == 63) {
            double now = mpt__now();
            if (until == 0)
                until = now + SPIN_SECONDS;
            else if (now > until)
                return 0;
            sched_yield(); /* let a neighbour sharing this core run */
        }
    }
}

static int local_wait(mpt__transport_t *t, mpt__request_t *r)
{
    local_t *lt = (local_t *)t;
    if (!r)
        return MPT_OK;
    double entered = mpt__now();
    if (!spin_until_done(lt, r)) {
        port_t *p = &lt->ports[r->dst];
        pthread_mutex_lock(&p->lock);
        /* A copy in progress always finishes (the copier then touches r), so
         * it is waited for even after an abort. */
        while (atomic_load(&r->state) == REQ_COPYING ||
               (atomic_load(&r->state) == REQ_POSTED && !atomic_load(&lt->aborted)))
            pthread_cond_wait(&p->cond, &p->lock);
        if (atomic_load(&r->state) == REQ_POSTED) /* aborted before a partner came */
            list_remove(r->is_send ? &p->sends : &p->recvs, r);
        pthread_mutex_unlock(&p->lock);
    }
    int status = r->status;
    if (atomic_load(&r->state) == REQ_DONE && !r->copied_here) { /* its partner copied */
        double blocked = mpt__now() - entered;
        double copy = r->copy_s < blocked ? r->copy_s : blocked; /* a copy begun before */
        mpt__comm_add_times(blocked - copy, copy);
    }
    if (atomic_load(&r->state) == REQ_DONE && status == MPT_ERR_INVALID)
        status = mpt__fail(MPT_ERR_INVALID,
                           "local transport: endpoint %d sent %zu bytes to endpoint %d (tag %d), "
                           "which expected %zu", r->src, r->is_send ? r->bytes : r->partner_bytes,
                           r->dst, r->tag, r->is_send ? r->partner_bytes : r->bytes);
    else if (atomic_load(&lt->aborted))
        status = fail_aborted(lt); /* "every later call": even a request done meanwhile */
    free(r);
    return status;
}

static void local_cancel(mpt__transport_t *t, int status, const char *why)
{
    local_t *lt = (local_t *)t;
    pthread_mutex_lock(&lt->abort_lock);
    if (!atomic_load(&lt->aborted)) { /* the first abort's reason is the one reported */
        lt->abort_status = status;
        snprintf(lt->abort_why, sizeof lt->abort_why, "%s", why ? why : "no reason given");
        atomic_store(&lt->aborted, 1);
    }
    pthread_mutex_unlock(&lt->abort_lock);
    for (int i = 0; i < t->nendpoints; i++) {
        pthread_mutex_lock(&lt->ports[i].lock);
        pthread_cond_broadcast(&lt->ports[i].cond);
        pthread_mutex_unlock(&lt->ports[i].lock);
    }
}

static void local_destroy(mpt__transport_t *t)
{
    local_t *lt = (local_t *)t;
    for (int i = 0; i < t->nendpoints; i++) {
        port_t *p = &lt->ports[i];
        /* Requests never waited are the caller's leak; free them anyway. */
        for (req_list_t *l = &p->sends; l; l = l == &p->sends ? &p->recvs : NULL)
            while (l->head) {
                mpt__request_t *r = l->head;
                list_remove(l, r);
                free(r);
            }
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
    }
    pthread_mutex_destroy(&lt->abort_lock);
    free(lt->ports);
    free(lt);
}

static const mpt__transport_ops_t local_ops = {
    .name = "local",
    .isend = local_isend,
    .irecv = local_irecv,
    .wait = local_wait,
    .cancel = local_cancel,
    .destroy = local_destroy,
};

int mpt__transport_local_create(int nendpoints, mpt__transport_t **out)
{
    if (!out || nendpoints < 1)
        return mpt__fail(MPT_ERR_INVALID, "local transport: need at least one endpoint, got %d",
                         nendpoints);
    *out = NULL;
    local_t *lt = calloc(1, sizeof *lt);
    port_t *ports = calloc((size_t)nendpoints, sizeof *ports);
    if (!lt || !ports) {
        free(lt);
        free(ports);
        return mpt__fail(MPT_ERR_NOMEM, "local transport: out of memory for %d endpoints",
                         nendpoints);
    }
    for (int i = 0; i < nendpoints; i++) {
        pthread_mutex_init(&ports[i].lock, NULL);
        pthread_cond_init(&ports[i].cond, NULL);
    }
    pthread_mutex_init(&lt->abort_lock, NULL);
    atomic_init(&lt->aborted, 0);
    lt->base.ops = &local_ops;
    lt->base.nendpoints = nendpoints;
    lt->ports = ports;
    *out = &lt->base;
    return MPT_OK;
}
