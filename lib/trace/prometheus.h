/*
 * trace/prometheus.h: what the exposition text (prometheus.c) and its
 * HTTP server (prometheus_http.c) share.  The server only serves the text;
 * the text knows nothing of HTTP, so that it is tested, and usable, on a
 * build without libmicrohttpd.
 */
#ifndef MPT_TRACE_PROMETHEUS_H
#define MPT_TRACE_PROMETHEUS_H

#include <pthread.h>

#include "core/internal.h"

/* The running totals of one device (counters are sums over steps). */
typedef struct {
    double allreduce_s, allreduce_bytes, tp_s, tp_bytes;
    double peer_wait_s, transfer_s, allreduce_wait_s, allreduce_transfer_s;
} mpt__prom_totals_t;

struct mpt_prometheus {
    pthread_mutex_t lock; /* the training thread updates, the server's thread reads */
    int have_report;
    mpt_step_report_t report;
    uint64_t epoch;
    mpt_device_step_t *devices;
    mpt__prom_totals_t *totals;
    size_t ndevices;
    void *http;           /* struct MHD_Daemon *, NULL without a listener */
    int port;
};

/* The exposition text of the figures held (caller holds s->lock); *text is
 * malloc'ed, freed by the caller. */
int mpt__prometheus_render(const mpt_prometheus_t *s, char **text);
/* Listens on bind_address:port and serves the text (prometheus_http.c). */
int mpt__prometheus_listen(mpt_prometheus_t *s, int port, const char *bind_address);
void mpt__prometheus_unlisten(mpt_prometheus_t *s);

#endif
