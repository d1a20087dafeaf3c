/*
 * tests/check_comm.c: the local transport (matching, ordering, rendezvous
 * rings, abort) and the ring collectives on it (allreduce, reduce-scatter,
 * all-gather, broadcast) with 1..8 member threads, uneven and empty
 * shards, back to back and two groups at once; the hierarchical allreduce
 * over node layouts (with the bytes that cross nodes); the device allreduce on the
 * two PoCL devices, mapped and staged, and its failure path.
 *
 * Assertions stay out of per-element loops: in no-fork mode each passing
 * ck_assert writes its location to a pipe (a system call).
 *
 * Members are threads; they never call ck_assert (Check's no-fork mode
 * longjmps out of the test, which is undefined from another thread): they
 * record statuses and results, and the test's thread checks them after a
 * join with a deadline, so that a hang fails the test instead of the run.
 * Runs without fork because of the OpenCL tests (ENVIRONMENT.md).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/comm.h"
#include "device/device.h"
#include "testutil.h"

/* ---- a team of member threads with a watchdog ----------------------------- */

typedef struct team team_t;
typedef struct {
    team_t *team;
    int rank; /* the thread's index, 0..nthreads-1 */
    int status;
    char detail[1024];
    double finished; /* mpt__now() when it returned */
} member_t;

struct team {
    mpt__transport_t *t;
    int nthreads;
    void (*fn)(member_t *m);
    void *arg; /* the test's data */
    member_t *m;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
};

static void *member_main(void *p)
{
    member_t *m = p;
    m->status = MPT_OK;
    m->detail[0] = '\0';
    m->team->fn(m);
    if (m->status < 0 && !m->detail[0])
        snprintf(m->detail, sizeof m->detail, "%s", mpt_last_error());
    m->finished = mpt__now();
    pthread_mutex_lock(&m->team->lock);
    m->team->done++;
    pthread_cond_signal(&m->team->cond);
    pthread_mutex_unlock(&m->team->lock);
    return NULL;
}

/* Runs fn on n threads; fails the test if they are not all back within
 * `seconds` (the watchdog: a hang becomes a failure, not a stuck run). */
static void team_run(team_t *tm, int n, void (*fn)(member_t *), void *arg, double seconds)
{
    pthread_t *th = calloc((size_t)n, sizeof *th);
    tm->m = calloc((size_t)n, sizeof *tm->m);
    ck_assert(th && tm->m);
    tm->nthreads = n, tm->fn = fn, tm->arg = arg, tm->done = 0;
    pthread_mutex_init(&tm->lock, NULL);
    pthread_cond_init(&tm->cond, NULL);
    for (int i = 0; i < n; i++) {
        tm->m[i].team = tm, tm->m[i].rank = i;
        ck_assert_int_eq(pthread_create(&th[i], NULL, member_main, &tm->m[i]), 0);
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)seconds;
    pthread_mutex_lock(&tm->lock);
    while (tm->done < n)
        if (pthread_cond_timedwait(&tm->cond, &tm->lock, &deadline) != 0)
            break;
    int done = tm->done;
    pthread_mutex_unlock(&tm->lock);
    ck_assert_msg(done == n, "watchdog: only %d of %d members returned within %.0f s (a hang)",
                  done, n, seconds);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    free(th);
}

static void team_free(team_t *tm)
{
    free(tm->m);
    tm->m = NULL;
    pthread_cond_destroy(&tm->cond);
    pthread_mutex_destroy(&tm->lock);
}

static void assert_all_ok(const team_t *tm, const char *what)
{
    for (int i = 0; i < tm->nthreads; i++)
        ck_assert_msg(tm->m[i].status == MPT_OK, "%s: member %d returned %s: %s", what, i,
                      mpt_status_name(tm->m[i].status), tm->m[i].detail);
}

/* ---- data and the reference ---------------------------------------------- */

/* A value of member r at element i with all 24 mantissa bits in use and
 * mixed signs and exponents, so that a different order of the sum would
 * round differently (and a missing or doubled term shows). */
static float value(int r, size_t i)
{
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + (uint64_t)(r + 1) * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    float m = (float)(x & 0xFFFFFF) / (float)0x1000000 - 0.5f; /* [-0.5, 0.5) */
    return ldexpf(m, (int)((x >> 24) % 7) - 3);
}

static void fill(float *buf, int r, size_t first, size_t count)
{
    for (size_t i = 0; i < count; i++)
        buf[i] = value(r, first + i);
}

/* Checks got[i] (element first + i) against the sum over members in
 * double.  Tolerance: a float32 sum of n terms in any order is within
 * (n-1) * 2^-24 * sum |x_k| of the exact sum (each of the n-1 additions
 * rounds by at most half an ulp of a partial sum bounded by sum |x_k|);
 * we allow n * 2^-24 * sum |x_k|. */
static int check_sum(const float *got, int n, size_t first, size_t count, char *why,
                     size_t size)
{
    for (size_t i = 0; i < count; i++) {
        double exact = 0, mag = 0;
        for (int r = 0; r < n; r++) {
            double v = value(r, first + i);
            exact += v, mag += fabs(v);
        }
        double tol = n * ldexp(1, -24) * mag;
        if (fabs(got[i] - exact) > tol) {
            snprintf(why, size, "element %zu: %.9g, exact %.9g, tolerance %.3g", first + i,
                     (double)got[i], exact, tol);
            return 0;
        }
    }
    return 1;
}

static mpt__group_t group_of(mpt__transport_t *t, const int *members, int size, int self, int tag)
{
    return (mpt__group_t){.t = t, .members = members, .size = size, .self = self, .tag = tag};
}

static const int identity8[8] = {0, 1, 2, 3, 4, 5, 6, 7};

/* ---- point to point ------------------------------------------------------ */

START_TEST(p2p_matches_by_tag_in_posting_order)
{
    mpt__transport_t *t = NULL;
    ck_assert_mpt_ok(mpt__transport_local_create(2, &t));
    /* One thread can do it all: the ops never block. Sends first for tag
     * 1, receives first for tag 2, interleaved. */
    int out[6] = {10, 20, 11, 21, 12, 22}, in[6] = {0};
    int tags[6] = {1, 2, 1, 2, 1, 2};
    mpt__request_t *rq[12];
    ck_assert_mpt_ok(mpt__irecv(t, 1, 0, 2, &in[3], sizeof(int), &rq[0])); /* tag 2 #1 */
    ck_assert_mpt_ok(mpt__irecv(t, 1, 0, 2, &in[4], sizeof(int), &rq[1])); /* tag 2 #2 */
    for (int k = 0; k < 6; k++)
        ck_assert_mpt_ok(mpt__isend(t, 0, 1, tags[k], &out[k], sizeof(int), &rq[2 + k]));
    ck_assert_mpt_ok(mpt__irecv(t, 1, 0, 1, &in[0], sizeof(int), &rq[8]));
    ck_assert_mpt_ok(mpt__irecv(t, 1, 0, 1, &in[1], sizeof(int), &rq[9]));
    ck_assert_mpt_ok(mpt__irecv(t, 1, 0, 1, &in[2], sizeof(int), &rq[10]));
    ck_assert_mpt_ok(mpt__irecv(t, 1, 0, 2, &in[5], sizeof(int), &rq[11]));
    for (int k = 0; k < 12; k++)
        ck_assert_mpt_ok(mpt__wait(t, rq[k]));
    int expect[6] = {10, 11, 12, 20, 21, 22};
    for (int k = 0; k < 6; k++)
        ck_assert_int_eq(in[k], expect[k]);
    /* A size mismatch fails both waits, naming the sizes. */
    char small[4], big[8] = {0};
    ck_assert_mpt_ok(mpt__isend(t, 0, 1, 7, big, sizeof big, &rq[0]));
    ck_assert_mpt_ok(mpt__irecv(t, 1, 0, 7, small, sizeof small, &rq[1]));
    ck_assert_mpt_fails(mpt__wait(t, rq[0]), MPT_ERR_INVALID);
    ck_assert_mpt_fails(mpt__wait(t, rq[1]), MPT_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(mpt_last_error(), "8 bytes"));
    ck_assert_mpt_fails(mpt__isend(t, 0, 2, 0, big, 1, &rq[0]), MPT_ERR_INVALID);
    mpt__transport_destroy(t);
}
END_TEST

/* Every member posts isend right and irecv left, then waits: must not
 * deadlock, whoever comes first. */
static void ring_exchange(member_t *m)
{
    int n = m->team->nthreads, r = m->rank;
    for (int round = 0; round < 200 && m->status == MPT_OK; round++) {
        int out = r * 1000 + round, in = -1;
        mpt__request_t *s = NULL, *q = NULL;
        if ((m->status = mpt__isend(m->team->t, r, (r + 1) % n, 5, &out, sizeof out, &s)) < 0 ||
            (m->status = mpt__irecv(m->team->t, r, (r + n - 1) % n, 5, &in, sizeof in, &q)) < 0 ||
            (m->status = mpt__wait(m->team->t, s)) < 0 ||
            (m->status = mpt__wait(m->team->t, q)) < 0)
            return;
        if (in != ((r + n - 1) % n) * 1000 + round) {
            m->status = MPT_ERR_INVALID;
            snprintf(m->detail, sizeof m->detail, "round %d: got %d", round, in);
        }
    }
}

START_TEST(p2p_ring_of_isends_never_deadlocks)
{
    for (int n = 1; n <= 8; n++) {
        team_t tm = {0};
        ck_assert_mpt_ok(mpt__transport_local_create(n, &tm.t));
        team_run(&tm, n, ring_exchange, NULL, 20);
        assert_all_ok(&tm, "ring exchange");
        team_free(&tm);
        mpt__transport_destroy(tm.t);
    }
}
END_TEST

/* ---- collectives --------------------------------------------------------- */

typedef struct {
    size_t count;
    float **bufs;     /* per member */
    size_t *counts;   /* shards, for RS and AG */
    int root;
    int repeat;       /* allreduce: run twice and compare bitwise */
    const int *node;  /* allreduce: the group's node map, or NULL */
} coll_arg_t;

static void do_allreduce(member_t *m)
{
    coll_arg_t *a = m->team->arg;
    mpt__group_t g = group_of(m->team->t, identity8, m->team->nthreads, m->rank, 3);
    g.node = a->node;
    float *buf = a->bufs[m->rank];
    float *first = NULL;
    for (int k = 0; k < (a->repeat ? 2 : 1); k++) {
        fill(buf, m->rank, 0, a->count);
        mpt__coll_stats_t st = {0};
        if ((m->status = mpt__allreduce(&g, buf, a->count, &st)) < 0)
            break;
        if (st.bytes != a->count * sizeof(float) || st.seconds < 0) {
            m->status = MPT_ERR_INVALID;
            snprintf(m->detail, sizeof m->detail, "stats: %zu bytes, %g s", st.bytes, st.seconds);
            break;
        }
        if (a->repeat && k == 0) {
            first = malloc(a->count * sizeof(float) + 1);
            memcpy(first, buf, a->count * sizeof(float));
        } else if (a->repeat && memcmp(first, buf, a->count * sizeof(float))) {
            m->status = MPT_ERR_INVALID;
            snprintf(m->detail, sizeof m->detail, "a second run gave other bits");
        }
    }
    free(first);
}

/* All members' buffers hold bitwise the same values, close to the sum. */
static void assert_allreduced(const team_t *tm, float **bufs, size_t count)
{
    char why[256];
    int n = tm->nthreads;
    for (int r = 1; r < n; r++)
        ck_assert_msg(!memcmp(bufs[0], bufs[r], count * sizeof(float)),
                      "n=%d count=%zu: member %d differs from member 0", n, count, r);
    ck_assert_msg(check_sum(bufs[0], n, 0, count, why, sizeof why), "n=%d count=%zu: %s", n,
                  count, why);
}

static float **alloc_bufs(int n, size_t count)
{
    float **bufs = calloc((size_t)n, sizeof *bufs);
    for (int r = 0; r < n; r++) {
        bufs[r] = malloc(count * sizeof(float) + 1);
        ck_assert_ptr_nonnull(bufs[r]);
    }
    return bufs;
}

static void free_bufs(float **bufs, int n)
{
    for (int r = 0; r < n; r++)
        free(bufs[r]);
    free(bufs);
}

/* Allreduce of count floats by n members over t (node map `node`, or
 * NULL): every member ok, the same bits everywhere, close to the sum (and
 * the same bits on a second run with `repeat`). */
static void run_allreduce_on(mpt__transport_t *t, int n, size_t count, int repeat,
                             const int *node)
{
    team_t tm = {.t = t};
    coll_arg_t a = {.count = count, .bufs = alloc_bufs(n, count), .repeat = repeat, .node = node};
    team_run(&tm, n, do_allreduce, &a, 60);
    assert_all_ok(&tm, node ? "hierarchical allreduce" : "allreduce");
    assert_allreduced(&tm, a.bufs, count);
    team_free(&tm);
    free_bufs(a.bufs, n);
}

static void run_allreduce(int n, size_t count, int repeat)
{
    mpt__transport_t *t = NULL;
    ck_assert_mpt_ok(mpt__transport_local_create(n, &t));
    run_allreduce_on(t, n, count, repeat, NULL);
    mpt__transport_destroy(t);
}

START_TEST(allreduce_small_sizes_all_group_sizes)
{
    /* Around the 16-float shard alignment and the 64 Ki-float chunk. */
    static const size_t sizes[] = {0, 1, 2, 15, 16, 17, 100, 1000, 65536 - 1, 65536 + 3, 200001};
    for (int n = 1; n <= 8; n++)
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
            run_allreduce(n, sizes[k], 0);
}
END_TEST

START_TEST(allreduce_large_is_deterministic)
{
    /* 32 MB on 2 and 3 members (twice each, compared bitwise), 8 MB on 8. */
    run_allreduce(2, (size_t)8 << 20, 1);
    run_allreduce(3, ((size_t)8 << 20) + 7, 1);
    run_allreduce(8, ((size_t)2 << 20) + 5, 1);
}
END_TEST

/* ---- the hierarchical allreduce -------------------------------------------- */

/* A transport that forwards to a local one and counts the bytes sent
 * between endpoints of different nodes: the network's share. */
typedef struct {
    mpt__transport_t base;
    mpt__transport_t *inner;
    const int *node; /* per endpoint */
    size_t cross_bytes;
} counting_t;

static int counting_isend(mpt__transport_t *t, int src, int dst, int tag, const void *buf,
                          size_t bytes, mpt__request_t **req)
{
    counting_t *c = (counting_t *)t;
    if (c->node[src] != c->node[dst])
        __atomic_fetch_add(&c->cross_bytes, bytes, __ATOMIC_RELAXED);
    return mpt__isend(c->inner, src, dst, tag, buf, bytes, req);
}
static int counting_irecv(mpt__transport_t *t, int dst, int src, int tag, void *buf,
                          size_t bytes, mpt__request_t **req)
{
    return mpt__irecv(((counting_t *)t)->inner, dst, src, tag, buf, bytes, req);
}
static int counting_wait(mpt__transport_t *t, mpt__request_t *req)
{
    return mpt__wait(((counting_t *)t)->inner, req);
}
static void counting_cancel(mpt__transport_t *t, int status, const char *why)
{
    mpt__transport_abort(((counting_t *)t)->inner, status, why);
}
static void counting_destroy(mpt__transport_t *t)
{
    (void)t; /* the test owns both */
}
static const mpt__transport_ops_t counting_ops = {"counting", counting_isend, counting_irecv,
                                                  counting_wait, counting_cancel,
                                                  counting_destroy};

/* Allreduce of count floats over members placed on nodes node[0..n):
 * correct, the same bits everywhere and on a second run; returns the
 * bytes that crossed nodes. */
static size_t run_hier(const int *node, int n, size_t count)
{
    counting_t c = {.base = {&counting_ops, n}, .node = node};
    ck_assert_mpt_ok(mpt__transport_local_create(n, &c.inner));
    run_allreduce_on(&c.base, n, count, 1, node);
    mpt__transport_destroy(c.inner);
    return c.cross_bytes / 2; /* two runs */
}

START_TEST(hierarchical_allreduce_node_layouts)
{
    static const struct {
        int n, nodes, per_node; /* per_node 0: not hierarchical */
        int node[8];
    } layouts[] = {
        {4, 2, 2, {0, 0, 1, 1}},          {4, 2, 2, {5, 9, 5, 9}}, /* interleaved */
        {6, 3, 2, {0, 0, 1, 1, 2, 2}},    {6, 2, 3, {0, 0, 0, 1, 1, 1}},
        {8, 4, 2, {3, 3, 2, 2, 1, 1, 0, 0}}, {8, 2, 4, {0, 1, 0, 1, 0, 1, 0, 1}},
        {4, 0, 0, {0, 0, 0, 1}},          {4, 0, 0, {0, 0, 0, 0}}, /* uneven; one node */
        {4, 0, 0, {0, 1, 2, 3}},          {5, 0, 0, {0, 0, 1, 1, 2}},
    };
    static const size_t sizes[] = {0, 1, 17, 33, 1000, 65536 + 3, 200001, ((size_t)2 << 20) + 9};
    for (size_t l = 0; l < sizeof layouts / sizeof *layouts; l++) {
        int n = layouts[l].n, k = -1, m = -1;
        mpt__group_t g = group_of(NULL, identity8, n, 0, 0);
        g.node = layouts[l].node;
        int hier = mpt__allreduce_is_hierarchical(&g, &k, &m);
        ck_assert_int_eq(hier, layouts[l].per_node > 0);
        if (hier) {
            ck_assert_int_eq(k, layouts[l].nodes);
            ck_assert_int_eq(m, layouts[l].per_node);
        }
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            size_t cross = run_hier(layouts[l].node, n, sizes[s]);
            /* Hierarchical: each cross-node ring over shard j moves
             * 2 (k - 1) times the shard, so the network carries exactly
             * 2 (k - 1) buffers, against 2 (n - 1) / n buffers per
             * cross-node hop of a flat ring. */
            if (hier)
                ck_assert_msg(cross == 2 * (size_t)(k - 1) * sizes[s] * sizeof(float),
                              "layout %zu, %zu floats: %zu bytes crossed nodes, expected %zu",
                              l, sizes[s], cross, 2 * (size_t)(k - 1) * sizes[s] * sizeof(float));
        }
    }
}
END_TEST

static void do_reduce_scatter(member_t *m)
{
    coll_arg_t *a = m->team->arg;
    mpt__group_t g = group_of(m->team->t, identity8, m->team->nthreads, m->rank, 9);
    fill(a->bufs[m->rank], m->rank, 0, a->count);
    m->status = mpt__reduce_scatter(&g, a->bufs[m->rank], a->counts, NULL);
}

static void do_allgather(member_t *m)
{
    coll_arg_t *a = m->team->arg;
    mpt__group_t g = group_of(m->team->t, identity8, m->team->nthreads, m->rank, 9);
    float *buf = a->bufs[m->rank];
    size_t off = 0;
    for (int i = 0; i < m->rank; i++)
        off += a->counts[i];
    for (size_t i = 0; i < a->count; i++) /* garbage outside the own shard */
        buf[i] = (float)NAN;
    fill(buf + off, 0, off, a->counts[m->rank]); /* member 0's values: one source of truth */
    m->status = mpt__allgather(&g, buf, a->counts, NULL);
}

/* Uneven shards with empty ones: counts[i] = pattern over the members. */
static void run_sharded(int n, const size_t *pattern, size_t npattern)
{
    size_t counts[8], total = 0;
    for (int i = 0; i < n; i++)
        total += counts[i] = pattern[i % npattern];
    team_t tm = {0};
    coll_arg_t a = {.count = total, .bufs = alloc_bufs(n, total), .counts = counts};
    char why[256];
    ck_assert_mpt_ok(mpt__transport_local_create(n, &tm.t));

    team_run(&tm, n, do_reduce_scatter, &a, 60);
    assert_all_ok(&tm, "reduce-scatter");
    size_t off = 0;
    for (int r = 0; r < n; r++) {
        ck_assert_msg(check_sum(a.bufs[r] + off, n, off, counts[r], why, sizeof why),
                      "reduce-scatter n=%d, member %d's shard of %zu: %s", n, r, counts[r], why);
        off += counts[r];
    }
    team_free(&tm);

    team_run(&tm, n, do_allgather, &a, 60);
    assert_all_ok(&tm, "all-gather");
    for (int r = 0; r < n; r++) {
        size_t i = 0;
        while (i < total && a.bufs[r][i] == value(0, i))
            i++;
        ck_assert_msg(i == total, "all-gather n=%d: member %d element %zu", n, r, i);
    }
    team_free(&tm);
    mpt__transport_destroy(tm.t);
    free_bufs(a.bufs, n);
}

START_TEST(reduce_scatter_and_allgather_uneven_shards)
{
    static const size_t p1[] = {0, 5, 70000, 3}, p2[] = {1}, p3[] = {300000, 0, 0, 17, 65536};
    static const size_t p4[] = {0};
    for (int n = 1; n <= 8; n++) {
        run_sharded(n, p1, 4);
        run_sharded(n, p2, 1);
        run_sharded(n, p3, 5);
        run_sharded(n, p4, 1);
    }
}
END_TEST

static void do_broadcast(member_t *m)
{
    coll_arg_t *a = m->team->arg;
    mpt__group_t g = group_of(m->team->t, identity8, m->team->nthreads, m->rank, 11);
    unsigned char *buf = (unsigned char *)a->bufs[m->rank];
    for (size_t i = 0; i < a->count; i++)
        buf[i] = m->rank == a->root ? (unsigned char)(i * 31 + 7) : 0;
    m->status = mpt__broadcast(&g, buf, a->count, a->root, NULL);
}

START_TEST(broadcast_from_every_root)
{
    static const size_t sizes[] = {0, 1, 1000, (size_t)3 << 20 | 1};
    for (int n = 1; n <= 8; n++)
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
            for (int root = 0; root < n; root += 3) {
                team_t tm = {0};
                coll_arg_t a = {.count = sizes[k], .bufs = alloc_bufs(n, sizes[k] / 4 + 1),
                                .root = root};
                ck_assert_mpt_ok(mpt__transport_local_create(n, &tm.t));
                team_run(&tm, n, do_broadcast, &a, 60);
                assert_all_ok(&tm, "broadcast");
                for (int r = 0; r < n; r++) {
                    const unsigned char *b = (const unsigned char *)a.bufs[r];
                    size_t i = 0;
                    while (i < sizes[k] && b[i] == (unsigned char)(i * 31 + 7))
                        i++;
                    ck_assert_msg(i == sizes[k], "n=%d root=%d bytes=%zu: member %d byte %zu", n,
                                  root, sizes[k], r, i);
                }
                team_free(&tm);
                mpt__transport_destroy(tm.t);
                free_bufs(a.bufs, n);
            }
}
END_TEST

/* Back to back, and two groups over the same four endpoints at once (one
 * thread per endpoint and group; the second group's ring runs backwards):
 * every result is checked, so crossed messages would show. */
typedef struct {
    int ngroups;
    size_t count;
    float **bufs; /* per thread */
} multi_arg_t;

static void do_many(member_t *m)
{
    multi_arg_t *a = m->team->arg;
    static const int fwd[4] = {0, 1, 2, 3}, bwd[4] = {3, 2, 1, 0};
    int grp = m->rank / 4, ep = m->rank % 4;
    const int *members = grp ? bwd : fwd;
    int self = grp ? 3 - ep : ep; /* position of endpoint ep in the ring */
    mpt__group_t g = group_of(m->team->t, members, 4, self, 100 + grp);
    float *buf = a->bufs[m->rank];
    size_t counts[4] = {a->count / 2, 0, a->count / 4, a->count - a->count / 2 - a->count / 4};
    char why[256];
    for (int it = 0; it < 4 && m->status == MPT_OK; it++) {
        size_t count = a->count >> it; /* a different size each time */
        fill(buf, self, 0, count);
        if ((m->status = mpt__allreduce(&g, buf, count, NULL)) < 0)
            return;
        if (!check_sum(buf, 4, 0, count, why, sizeof why)) {
            m->status = MPT_ERR_INVALID;
            snprintf(m->detail, sizeof m->detail, "group %d allreduce %d: %s", grp, it, why);
            return;
        }
        fill(buf, self, 0, a->count);
        if ((m->status = mpt__reduce_scatter(&g, buf, counts, NULL)) < 0)
            return;
        size_t off = 0;
        for (int i = 0; i < self; i++)
            off += counts[i];
        if (!check_sum(buf + off, 4, off, counts[self], why, sizeof why)) {
            m->status = MPT_ERR_INVALID;
            snprintf(m->detail, sizeof m->detail, "group %d reduce-scatter %d: %s", grp, it, why);
            return;
        }
        if ((m->status = mpt__allgather(&g, buf, counts, NULL)) < 0)
            return;
        if (!check_sum(buf, 4, 0, a->count, why, sizeof why)) {
            m->status = MPT_ERR_INVALID;
            snprintf(m->detail, sizeof m->detail, "group %d all-gather %d: %s", grp, it, why);
            return;
        }
        if ((m->status = mpt__broadcast(&g, buf, 1000, it % 4, NULL)) < 0)
            return;
    }
}

START_TEST(back_to_back_and_two_groups_at_once)
{
    for (int ngroups = 1; ngroups <= 2; ngroups++) {
        team_t tm = {0};
        multi_arg_t a = {.ngroups = ngroups, .count = 300007};
        a.bufs = alloc_bufs(4 * ngroups, a.count);
        ck_assert_mpt_ok(mpt__transport_local_create(4, &tm.t));
        team_run(&tm, 4 * ngroups, do_many, &a, 60);
        assert_all_ok(&tm, "collectives");
        team_free(&tm);
        mpt__transport_destroy(tm.t);
        free_bufs(a.bufs, 4 * ngroups);
    }
}
END_TEST

START_TEST(group_arguments_checked)
{
    mpt__transport_t *t = NULL;
    float x = 1;
    mpt__coll_stats_t st = {0};
    ck_assert_mpt_ok(mpt__transport_local_create(2, &t));
    int bad[2] = {0, 2};
    mpt__group_t g = group_of(t, bad, 2, 0, 0);
    ck_assert_mpt_fails(mpt__allreduce(&g, &x, 1, NULL), MPT_ERR_INVALID);
    g = group_of(t, identity8, 2, 0, -1);
    ck_assert_mpt_fails(mpt__allreduce(&g, &x, 1, NULL), MPT_ERR_INVALID);
    g = group_of(t, identity8, 2, 0, 0);
    ck_assert_mpt_fails(mpt__broadcast(&g, &x, 4, 2, NULL), MPT_ERR_INVALID);
    g = group_of(t, identity8, 1, 0, 0); /* size 1: nothing to do, stats set */
    ck_assert_mpt_ok(mpt__allreduce(&g, &x, 1, &st));
    ck_assert(x == 1 && st.bytes == 4 && st.seconds >= 0);
    mpt__transport_destroy(t);
}
END_TEST

/* ---- abort --------------------------------------------------------------- */

typedef struct {
    size_t count;
    float **bufs;
    double aborted_at;
} abort_arg_t;

static void do_abort(member_t *m)
{
    abort_arg_t *a = m->team->arg;
    mpt__group_t g = group_of(m->team->t, identity8, m->team->nthreads, m->rank, 1);
    if (m->rank == 2) { /* the failing member: gives up while the others are inside */
        fill(a->bufs[2], 2, 0, a->count);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        a->aborted_at = mpt__now();
        mpt__transport_abort(m->team->t, MPT_ERR_OPENCL, "member 2 lost its device");
        mpt__transport_abort(m->team->t, MPT_ERR_IO, "a second abort, not reported");
        m->status = MPT_ERR_OPENCL;
        return;
    }
    for (int k = 0; k < 1000 && m->status == MPT_OK; k++) {
        fill(a->bufs[m->rank], m->rank, 0, a->count);
        m->status = mpt__allreduce(&g, a->bufs[m->rank], a->count, NULL);
    }
}

START_TEST(abort_mid_collective_releases_everyone)
{
    team_t tm = {0};
    int n = 4;
    abort_arg_t a = {.count = (size_t)4 << 20, .bufs = alloc_bufs(n, (size_t)4 << 20)};
    ck_assert_mpt_ok(mpt__transport_local_create(n, &tm.t));
    team_run(&tm, n, do_abort, &a, 10);
    for (int r = 0; r < n; r++) {
        if (r == 2)
            continue;
        ck_assert_msg(tm.m[r].status == MPT_ERR_ABORTED, "member %d returned %s", r,
                      mpt_status_name(tm.m[r].status));
        ck_assert_msg(strstr(tm.m[r].detail, "member 2 lost its device") &&
                          strstr(tm.m[r].detail, "MPT_ERR_OPENCL"),
                      "member %d: %s", r, tm.m[r].detail);
        ck_assert_msg(tm.m[r].finished - a.aborted_at < 1.0, "member %d took %.3f s", r,
                      tm.m[r].finished - a.aborted_at);
    }
    /* Every later call fails too. */
    float x = 0;
    ck_assert_mpt_fails(mpt__send(tm.t, 0, 1, 0, &x, sizeof x), MPT_ERR_ABORTED);
    team_free(&tm);
    mpt__transport_destroy(tm.t);
    free_bufs(a.bufs, n);
}
END_TEST

/* ---- device allreduce ---------------------------------------------------- */

typedef struct {
    mpt_devices_t *set;
    mpt_buffer_t *bufs[2];
    size_t offset, count, total; /* floats */
    int staged;
    int broken; /* member 1 passes a buffer with no memory object */
} dev_arg_t;

static void do_device(member_t *m)
{
    dev_arg_t *a = m->team->arg;
    mpt__group_t g = group_of(m->team->t, identity8, 2, m->rank, 4);
    mpt_buffer_t *buf = a->bufs[m->rank];
    /* A non-blocking write stands for the kernels that made the gradients:
     * the allreduce must see its values (in-order queue). */
    float *host = malloc(a->total * sizeof(float));
    for (size_t i = 0; i < a->total; i++)
        host[i] = i < a->offset || i >= a->offset + a->count ? -1.0f
                                                              : value(m->rank, i - a->offset);
    cl_int err = clEnqueueWriteBuffer(buf->dev->queue, buf->mem, CL_FALSE, 0,
                                      a->total * sizeof(float), host, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        m->status = mpt__fail_cl(err, "test write");
        mpt__transport_abort(g.t, m->status, "test write failed");
        free(host);
        return;
    }
    mpt_buffer_t broken = {.dev = buf->dev, .mem = NULL, .size = buf->size};
    if (a->broken && m->rank == 1)
        buf = &broken;
    mpt__coll_stats_t st = {0};
    m->status = a->staged ? mpt__allreduce_device_staged(&g, buf, a->offset, a->count, &st)
                          : mpt__allreduce_device(&g, buf, a->offset, a->count, &st);
    clFinish(a->bufs[m->rank]->dev->queue); /* the write has read `host` */
    free(host);
}

static void run_device(dev_arg_t *a, size_t offset, size_t count, int staged)
{
    team_t tm = {0};
    char why[256];
    a->offset = offset, a->count = count, a->total = offset + count + 5, a->staged = staged;
    for (int r = 0; r < 2; r++)
        ck_assert_mpt_ok(mpt_buffer_create(mpt_devices_get(a->set, (size_t)r),
                                           a->total * sizeof(float), &a->bufs[r]));
    ck_assert_mpt_ok(mpt__transport_local_create(2, &tm.t));
    team_run(&tm, 2, do_device, a, 60);
    float *got[2];
    if (a->broken) {
        ck_assert_msg(tm.m[1].status == MPT_ERR_OPENCL, "member 1: %s %s",
                      mpt_status_name(tm.m[1].status), tm.m[1].detail);
        ck_assert_msg(tm.m[0].status == MPT_ERR_ABORTED, "member 0: %s %s",
                      mpt_status_name(tm.m[0].status), tm.m[0].detail);
        ck_assert_ptr_nonnull(strstr(tm.m[0].detail, "CL_INVALID_MEM_OBJECT"));
    } else {
        assert_all_ok(&tm, staged ? "staged device allreduce" : "device allreduce");
        for (int r = 0; r < 2; r++) {
            got[r] = malloc(a->total * sizeof(float));
            ck_assert_mpt_ok(mpt_buffer_read(a->bufs[r], 0, got[r], a->total * sizeof(float)));
            size_t changed = 0; /* elements outside the range that changed */
            for (size_t i = 0; i < a->total; i++)
                changed += (i < offset || i >= offset + count) && got[r][i] != -1.0f;
            ck_assert_msg(changed == 0, "member %d: %zu elements outside the range changed", r,
                          changed);
        }
        ck_assert_msg(!memcmp(got[0], got[1], a->total * sizeof(float)),
                      "the two devices differ (count %zu)", count);
        ck_assert_msg(check_sum(got[0] + offset, 2, 0, count, why, sizeof why), "count %zu: %s",
                      count, why);
        free(got[0]);
        free(got[1]);
    }
    team_free(&tm);
    mpt__transport_destroy(tm.t);
    mpt_buffer_free(a->bufs[0]);
    mpt_buffer_free(a->bufs[1]);
}

START_TEST(device_allreduce_on_two_pocl_devices)
{
    dev_arg_t a = {0};
    ck_assert_mpt_ok(mpt_devices_open(NULL, &a.set));
    ck_assert_uint_eq(mpt_devices_count(a.set), 2); /* POCL_DEVICES="pthread pthread" */
    ck_assert_int_eq(mpt_device_info(mpt_devices_get(a.set, 0))->unified_memory, 1);
    static const size_t counts[] = {0, 1, 1000, 1000003, (size_t)4 << 20};
    for (int staged = 0; staged <= 1; staged++)
        for (size_t k = 0; k < sizeof counts / sizeof *counts; k++)
            run_device(&a, 3, counts[k], staged);
    a.broken = 1;
    run_device(&a, 0, 1000, 0);
    run_device(&a, 0, 1000, 1);
    mpt_devices_free(a.set);
}
END_TEST

static Suite *suite(void)
{
    /* One case per test, so that CK_RUN_CASE runs one alone. */
    const struct {
        const char *name;
        const TTest *test;
    } tests[] = {
        {"p2p_matches_by_tag_in_posting_order", p2p_matches_by_tag_in_posting_order},
        {"p2p_ring_of_isends_never_deadlocks", p2p_ring_of_isends_never_deadlocks},
        {"group_arguments_checked", group_arguments_checked},
        {"allreduce_small_sizes_all_group_sizes", allreduce_small_sizes_all_group_sizes},
        {"allreduce_large_is_deterministic", allreduce_large_is_deterministic},
        {"hierarchical_allreduce_node_layouts", hierarchical_allreduce_node_layouts},
        {"reduce_scatter_and_allgather_uneven_shards", reduce_scatter_and_allgather_uneven_shards},
        {"broadcast_from_every_root", broadcast_from_every_root},
        {"back_to_back_and_two_groups_at_once", back_to_back_and_two_groups_at_once},
        {"abort_mid_collective_releases_everyone", abort_mid_collective_releases_everyone},
        {"device_allreduce_on_two_pocl_devices", device_allreduce_on_two_pocl_devices},
    };
    Suite *s = suite_create("comm");
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        TCase *tc = tcase_create(tests[i].name);
        tcase_set_timeout(tc, 300);
        tcase_add_test(tc, tests[i].test);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    return test_run(suite(), 0);
}
