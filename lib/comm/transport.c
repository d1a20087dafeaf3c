/*
 * comm/transport.c: what every transport shares: the blocking send and
 * receive built on the non-blocking ops, abort and destroy.
 */
#include "config.h"

#include "comm/comm.h"

static _Thread_local mpt__comm_times_t thread_times;

mpt__comm_times_t mpt__comm_take_times(void)
{
    mpt__comm_times_t t = thread_times;
    thread_times = (mpt__comm_times_t){0, 0};
    return t;
}

void mpt__comm_add_times(double wait_s, double transfer_s)
{
    thread_times.wait_s += wait_s, thread_times.transfer_s += transfer_s;
}

int mpt__send(mpt__transport_t *t, int src, int dst, int tag, const void *buf, size_t bytes)
{
    mpt__request_t *req = NULL;
    int status = mpt__isend(t, src, dst, tag, buf, bytes, &req);
    return status < 0 ? status : mpt__wait(t, req);
}

int mpt__recv(mpt__transport_t *t, int dst, int src, int tag, void *buf, size_t bytes)
{
    mpt__request_t *req = NULL;
    int status = mpt__irecv(t, dst, src, tag, buf, bytes, &req);
    return status < 0 ? status : mpt__wait(t, req);
}

void mpt__transport_abort(mpt__transport_t *t, int status, const char *why)
{
    if (t)
        t->ops->cancel(t, status, why);
}

void mpt__transport_destroy(mpt__transport_t *t)
{
    if (t)
        t->ops->destroy(t);
}

#ifndef MPT_HAVE_MPI
int mpt__transport_mpi_create(int per_rank, mpt__transport_t **out)
{
    (void)per_rank;
    *out = NULL;
    return mpt__fail(MPT_ERR_UNSUPPORTED, "this mpt was built without MPI: install "
                     "libopenmpi-dev and run configure --with-mpi");
}

int mpt__transport_mpi_create_mapped(int nendpoints, const int *rank_of, mpt__transport_t **out)
{
    (void)nendpoints, (void)rank_of;
    return mpt__transport_mpi_create(1, out);
}
#endif
