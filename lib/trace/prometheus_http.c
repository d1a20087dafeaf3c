/*
 * trace/prometheus_http.c: serves prometheus.c's text over HTTP with
 * libmicrohttpd (its own polling thread): GET or HEAD /metrics, with the
 * content type of the text format 0.0.4.  Any other path is 404, any other
 * method 405.  Each request renders the text under the figures' lock, so a
 * scrape sees one step's figures, never half of two.
 *
 * Left out: TLS and authentication (bind to localhost, the default, or put
 * a proxy in front), and compression (a few kB per scrape).  Built only
 * with libmicrohttpd (configure says so); without it mpt_prometheus_start
 * fails with MPT_ERR_UNSUPPORTED and names the package.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "trace/prometheus.h"

#ifdef MPT_HAVE_MICROHTTPD
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *type,
                             char *body, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **state)
{
    mpt_prometheus_t *s = cls;
    char *text = NULL;
    (void)version, (void)upload_data, (void)upload_size, (void)state;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "only GET and HEAD\n",
                     MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/metrics") != 0)
        return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", "mpt serves /metrics only\n",
                     MHD_RESPMEM_PERSISTENT);
    pthread_mutex_lock(&s->lock);
    int status = mpt__prometheus_render(s, &text);
    pthread_mutex_unlock(&s->lock);
    if (status < 0)
        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n",
                     MHD_RESPMEM_PERSISTENT);
    return reply(c, MHD_HTTP_OK, CONTENT_TYPE, text, MHD_RESPMEM_MUST_FREE);
}

int mpt__prometheus_listen(mpt_prometheus_t *s, int port, const char *bind_address)
{
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, bind_address, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET, v4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, bind_address, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6, v6->sin6_port = htons((uint16_t)port);
        flags |= MHD_USE_IPv6;
    } else {
        return mpt__fail(MPT_ERR_INVALID,
                         "metrics address '%s': not a numeric IPv4 or IPv6 address",
                         bind_address);
    }
    /* Scrapes are rare and small: a few connections, each dropped after
     * 10 s idle, so that a stuck client cannot hold the server. */
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)16, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)10, MHD_OPTION_END);
    if (!d)
        return mpt__fail(MPT_ERR_IO,
                         "cannot serve metrics on %s port %d (in use, or not an address "
                         "of this machine)",
                         bind_address, port);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : port;
    s->http = d;
    return MPT_OK;
}

void mpt__prometheus_unlisten(mpt_prometheus_t *s)
{
    if (s->http)
        MHD_stop_daemon(s->http);
    s->http = NULL;
}

#else /* no libmicrohttpd */

int mpt__prometheus_listen(mpt_prometheus_t *s, int port, const char *bind_address)
{
    (void)s, (void)port, (void)bind_address;
    return mpt__fail(MPT_ERR_UNSUPPORTED,
                     "libmpt was built without libmicrohttpd, so it cannot serve metrics: "
                     "install the Debian package libmicrohttpd-dev and configure again");
}

void mpt__prometheus_unlisten(mpt_prometheus_t *s)
{
    (void)s;
}

#endif
