/*
 * device/tuning_run.c: a tuning run (device/tuning.h): CLBlast's tuners
 * as processes, then the candidates against CLBlast's defaults on mpt's
 * own GEMM calls, each sample in a fresh process, alternating.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "device/tuning.h"

#define TUNING_FORMAT 1

/* ---- processes ----------------------------------------------------------- */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs argv in `dir` with stdout and stderr to `log`, and with env_set
 * ("NAME=value" pairs, NULL-terminated) added.  When `done` is given, the
 * process is ended as soon as done(ctx) says its work is complete (a
 * tuner's wanted variations: it has no option to run only some).
 * *code: its exit status, -1 when ended by us or by a signal. */
extern char **environ;

static int run_process(char *const argv[], const char *dir, const char *log,
                       const char *const *env_set, int (*done)(void *ctx), void *ctx,
                       int *code)
{
    /* The child's environment is built here: between fork and exec only
     * async-signal-safe calls are allowed (OpenCL's threads may hold the
     * allocator's lock). */
    char **envp = NULL;
    if (env_set) {
        size_t ne = 0, na = 0;
        while (environ[ne])
            ne++;
        while (env_set[na])
            na++;
        if (!(envp = calloc(ne + na + 1, sizeof *envp)))
            return mpt__fail(MPT_ERR_NOMEM, "out of memory starting %s", argv[0]);
        size_t k = 0;
        for (size_t i = 0; i < na; i++)
            envp[k++] = (char *)env_set[i];
        for (size_t i = 0; i < ne; i++) {
            size_t j = 0; /* a variable set here replaces the inherited one */
            while (j < na && strncmp(environ[i], env_set[j], strcspn(env_set[j], "=") + 1) != 0)
                j++;
            if (j == na)
                envp[k++] = environ[i];
        }
    }
    unlink(log); /* an earlier run's log must not count as this one's */
    pid_t pid = fork();
    if (pid < 0) {
        free(envp);
        return mpt__fail(MPT_ERR_IO, "starting %s: %s", argv[0], strerror(errno));
    }
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || chdir(dir) != 0)
            _exit(126);
        dup2(fd, 1), dup2(fd, 2), close(fd);
        if (envp)
            execve(argv[0], argv, envp); /* a path: the caller's own program */
        else
            execvp(argv[0], argv);
        _exit(127);
    }
    free(envp);
    int st = 0, stopped = 0;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR)
            return mpt__fail(MPT_ERR_IO, "waiting for %s: %s", argv[0], strerror(errno));
        if (!stopped && done && done(ctx)) {
            kill(pid, SIGKILL); /* its finished variations are on disk already */
            stopped = 1;
        }
        sleep_ms(100);
    }
    *code = !stopped && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return MPT_OK;
}

/* ---- the tuners ---------------------------------------------------------- */

/* A tuner's result files, in the order it writes them: clblast_xgemm_1_32,
 * _2_, _11_, _12_; clblast_xgemm_direct_1_32, _2_. */
static const int xgemm_v[] = {1, 2, 11, 12}, direct_v[] = {1, 2};

static int result_path(const char *workdir, int direct, size_t i, char *buf, size_t size)
{
    return mpt__snprintf(buf, size, "%s/clblast_xgemm%s_%d_32.json", workdir,
                         direct ? "_direct" : "", direct ? direct_v[i] : xgemm_v[i]);
}

typedef struct {
    const char *workdir;
    int direct, variants;
} tuner_watch_t;

/* Whether the tuner has written `variants` complete result files: the
 * tuner closes each before going on, so a file that parses is whole (its
 * log says as much, but its stdout is block-buffered into the file). */
static int tuner_done(void *ctx)
{
    const tuner_watch_t *w = ctx;
    char path[4096];
    int whole = 0;
    for (size_t i = 0; i < (w->direct ? 2u : 4u); i++) {
        json_t *j;
        if (result_path(w->workdir, w->direct, i, path, sizeof path) < 0)
            return 0;
        if ((j = json_load_file(path, 0, NULL)) != NULL)
            whole++;
        json_decref(j);
    }
    mpt__clear_error();
    return whole >= w->variants;
}

/* The tuner's -platform and -device: dev's position in OpenCL's lists. */
static int cl_indices(const mpt_device_t *dev, unsigned *plat, unsigned *devi)
{
    cl_platform_id ps[32];
    cl_uint np = 0;
    if (clGetPlatformIDs(32, ps, &np) != CL_SUCCESS)
        return mpt__fail(MPT_ERR_OPENCL, "listing OpenCL platforms");
    for (cl_uint p = 0; p < np && p < 32; p++) {
        cl_device_id ds[64];
        cl_uint nd = 0;
        if (ps[p] != dev->platform ||
            clGetDeviceIDs(ps[p], CL_DEVICE_TYPE_ALL, 64, ds, &nd) != CL_SUCCESS)
            continue;
        for (cl_uint d = 0; d < nd && d < 64; d++)
            if (ds[d] == dev->id) {
                *plat = p, *devi = d;
                return MPT_OK;
            }
    }
    return mpt__fail(MPT_ERR_NOT_FOUND, "device %d (%s) is not in OpenCL's platform list",
                     dev->info.index, dev->info.name);
}

/* The direct tuner names its kernel by layout ("XgemmDirectTN"); the
 * parameters are the routine's all the same. */
static int same_kernel(const char *kernel, const char *routine)
{
    size_t n = strlen(routine);
    return !strncmp(kernel, routine, n) &&
           (kernel[n] == 0 || !strcmp(routine, "XgemmDirect"));
}

int mpt__tuning_read_tuner_json(const char *path, const char *routine,
                                mpt__clblast_params_t *out)
{
    json_t *root = NULL;
    const char *best = NULL, *kernel = NULL, *time = NULL;
    int status;
    memset(out, 0, sizeof *out);
    MPT_TRY(mpt__json_load_file(path, &root));
    if (json_unpack(root, "{s:s,s:s,s:s}", "best_kernel", &kernel, "best_parameters", &best,
                    "best_time", &time) != 0 || !same_kernel(kernel, routine)) {
        status = mpt__fail(MPT_ERR_PARSE, "%s: not a CLBlast %s tuner result (needs "
                           "best_kernel, best_parameters, best_time)", path, routine);
        goto out;
    }
    MPT_TRY(mpt__snprintf(out->routine, sizeof out->routine, "%s", routine));
    out->tuner_ms = atof(time);
    /* "GEMMK=0 KREG=1 ... PRECISION=32 ...": PRECISION is the tuner's, not
     * a kernel parameter. */
    for (const char *s = best; *s;) {
        char name[32];
        unsigned long long v;
        int used = 0;
        if (sscanf(s, " %31[A-Z_0-9]=%llu%n", name, &v, &used) != 2) {
            status = mpt__fail(MPT_ERR_PARSE, "%s: best_parameters '%s' is not NAME=value pairs",
                               path, best);
            goto out;
        }
        s += used;
        if (!strcmp(name, "PRECISION"))
            continue;
        if (out->count == MPT_TUNING_MAX_PARAMS || strlen(name) >= sizeof out->names[0]) {
            status = mpt__fail(MPT_ERR_PARSE, "%s: too many or too long parameter names", path);
            goto out;
        }
        strcpy(out->names[out->count], name);
        out->values[out->count++] = (size_t)v;
    }
    const char *base = strrchr(path, '/');
    snprintf(out->source, sizeof out->source, "%s", base ? base + 1 : path);
out:
    json_decref(root);
    return status;
}

static int by_tuner_time(const void *a, const void *b)
{
    double x = ((const mpt__clblast_params_t *)a)->tuner_ms,
           y = ((const mpt__clblast_params_t *)b)->tuner_ms;
    return (x > y) - (x < y);
}

int mpt__tuning_run_tuner(mpt_device_t *dev, const char *routine, const mpt__tuning_opts_t *o,
                          mpt__clblast_params_t *out, size_t max, size_t *count)
{
    int direct = !strcmp(routine, "XgemmDirect"), code = 0, status;
    unsigned plat = 0, devi = 0;
    char args[8][32], log[4096], path[4096];
    /* Tuner shapes: the indirect kernel at a square 1024 (128 for tests;
     * its tuner wants m and n multiples of 128), the direct one at the
     * MLP's first layer (64^3 for tests), the small shapes it runs. */
    size_t m = direct ? (o->quick ? 64 : 128) : (o->quick ? 128 : 1024);
    size_t n = direct ? (o->quick ? 64 : 256) : m, k = direct ? (o->quick ? 64 : 784) : m;
    /* The fixed-set variation has 578 Xgemm and 46 XgemmDirect
     * configurations (CLBlast 1.5.3): defaults explore about 145 and 46;
     * quick ones 5 and 2. */
    double fraction = o->fraction > 0 ? o->fraction
                      : direct      ? (o->quick ? 20 : 1)
                                    : (o->quick ? 100 : 4);
    const char *tuner = direct ? "clblast_tuner_xgemm_direct" : "clblast_tuner_xgemm";
    *count = 0;
    MPT_TRY(cl_indices(dev, &plat, &devi));
    snprintf(args[0], sizeof args[0], "%u", plat);
    snprintf(args[1], sizeof args[1], "%u", devi);
    snprintf(args[2], sizeof args[2], "%zu", m);
    snprintf(args[3], sizeof args[3], "%zu", n);
    snprintf(args[4], sizeof args[4], "%zu", k);
    snprintf(args[5], sizeof args[5], "%g", fraction);
    snprintf(args[6], sizeof args[6], "%d", o->quick ? 1 : 2);
    char *argv[] = {(char *)tuner, "-platform", args[0], "-device", args[1], "-precision", "32",
                    "-m", args[2], "-n", args[3], "-k", args[4], "-fraction", args[5], "-runs",
                    args[6], NULL};
    MPT_TRY(mpt__snprintf(log, sizeof log, "%s/%s.log", o->workdir, tuner));
    if (o->progress) {
        char line[256];
        snprintf(line, sizeof line, "device %d: %s -m %zu -n %zu -k %zu -fraction %g "
                 "(%d variation(s))", dev->info.index, tuner, m, n, k, fraction, o->variants);
        o->progress(o->progress_ctx, line);
    }
    size_t nv = direct ? 2 : 4;
    for (size_t i = 0; i < nv; i++) { /* results of an earlier run must not pass for ours */
        MPT_TRY(result_path(o->workdir, direct, i, path, sizeof path));
        unlink(path);
    }
    tuner_watch_t watch = {o->workdir, direct, o->variants};
    MPT_TRY(run_process(argv, o->workdir, log, NULL, tuner_done, &watch, &code));
    if (code == 127)
        return mpt__fail(MPT_ERR_NOT_FOUND, "%s not found: CLBlast's tuners are in Debian's "
                         "clblast-utils (scripts/install-deps.sh)", tuner);
    for (size_t i = 0; i < nv && *count < max; i++) {
        struct stat sb;
        MPT_TRY(result_path(o->workdir, direct, i, path, sizeof path));
        if (stat(path, &sb) != 0)
            continue;
        json_t *root = NULL;
        const char *name = NULL;
        MPT_TRY(mpt__json_load_file(path, &root));
        /* the tuner found the device by index: check it is this one */
        int same = json_unpack(root, "{s:s}", "device", &name) == 0 &&
                   !strcmp(name, dev->info.name);
        json_decref(root);
        if (!same)
            return mpt__fail(MPT_ERR_INVALID, "%s: tuned device '%s', not device %d (%s)", path,
                             name ? name : "?", dev->info.index, dev->info.name);
        MPT_TRY(mpt__tuning_read_tuner_json(path, routine, &out[*count]));
        (*count)++;
    }
    if (*count == 0)
        return mpt__fail(MPT_ERR_BLAS, "%s wrote no result (exit %d): see %s", tuner, code, log);
    qsort(out, *count, sizeof *out, by_tuner_time);
out:
    return status;
}

/* ---- arms: the defaults or one candidate, timed in a fresh process --------- */

static json_t *params_json(const mpt__clblast_params_t *p)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < p->count; i++)
        json_object_set_new(o, p->names[i], json_integer((json_int_t)p->values[i]));
    return o;
}

int mpt__tuning_measure_arm(mpt_device_t *dev, const char *arm_path, const char *out_path)
{
    json_t *arm = NULL, *params = NULL, *res = NULL, *secs;
    const char *ident = NULL, *routine = NULL;
    int quick = 0, status;
    double min_ms = 0, seconds[32];
    size_t nshapes;
    MPT_TRY(mpt__json_load_file(arm_path, &arm));
    if (json_unpack(arm, "{s:s,s:b,s:F,s?s,s?o}", "identity", &ident, "quick", &quick, "min_ms",
                    &min_ms, "routine", &routine, "parameters", &params) != 0) {
        status = mpt__fail(MPT_ERR_PARSE, "%s: not a tuning arm", arm_path);
        goto out;
    }
    if (strcmp(ident, dev->identity) != 0) {
        status = mpt__fail(MPT_ERR_INVALID, "%s: arm for another device (%s)", arm_path, ident);
        goto out;
    }
    if (dev->gemm_host) {
        status = mpt__fail(MPT_ERR_INVALID, "timing CLBlast on device %d needs MPT_BLAS=clblast",
                           dev->info.index);
        goto out;
    }
    if (routine && params) {
        mpt__clblast_params_t p;
        const char *key;
        json_t *v;
        memset(&p, 0, sizeof p);
        snprintf(p.routine, sizeof p.routine, "%s", routine);
        json_object_foreach(params, key, v) {
            if (p.count == MPT_TUNING_MAX_PARAMS || strlen(key) >= sizeof p.names[0] ||
                !json_is_integer(v)) {
                status = mpt__fail(MPT_ERR_PARSE, "%s: bad parameter %s", arm_path, key);
                goto out;
            }
            strcpy(p.names[p.count], key);
            p.values[p.count++] = (size_t)json_integer_value(v);
        }
        MPT_TRY(mpt__tuning_override(dev, &p));
    }
    mpt__tuning_shapes(quick, &nshapes);
    MPT_TRY(mpt__tuning_time_shapes(dev, quick, min_ms * 1e-3, seconds));
    secs = json_array();
    for (size_t i = 0; secs && i < nshapes; i++)
        json_array_append_new(secs, json_real(seconds[i]));
    res = json_pack("{s:o*}", "seconds", secs);
    if (!res) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    MPT_TRY(mpt__json_save_file(out_path, res));
out:
    json_decref(res);
    json_decref(arm);
    return status;
}

/* One sample of an arm: `self --tune-measure ARM -d INDEX` with CLBlast
 * forced and stored tuning off, so that only the arm's parameters apply. */
static int sample_arm(mpt_device_t *dev, const mpt__tuning_opts_t *o, const char *arm,
                      size_t nshapes, double *seconds)
{
    char out[4096], log[4096], index[16];
    json_t *root = NULL, *a;
    int code = 0, status;
    static const char *const env[] = {"MPT_BLAS=clblast", "MPT_CLBLAST_TUNING=off", NULL};
    snprintf(index, sizeof index, "%d", dev->info.index);
    MPT_TRY(mpt__snprintf(out, sizeof out, "%s.out", arm));
    MPT_TRY(mpt__snprintf(log, sizeof log, "%s.log", arm));
    unlink(out);
    char *argv[] = {(char *)o->self, "--tune-measure", (char *)arm, "--devices", index, NULL};
    MPT_TRY(run_process(argv, o->workdir, log, env, NULL, NULL, &code));
    if (code != 0) {
        status = mpt__fail(MPT_ERR_BLAS, "timing %s failed (exit %d): see %s", arm, code, log);
        goto out;
    }
    MPT_TRY(mpt__json_load_file(out, &root));
    a = json_object_get(root, "seconds");
    if (!json_is_array(a) || json_array_size(a) != nshapes) {
        status = mpt__fail(MPT_ERR_PARSE, "%s: needs %zu seconds", out, nshapes);
        goto out;
    }
    for (size_t i = 0; i < nshapes; i++)
        seconds[i] = json_number_value(json_array_get(a, i));
out:
    json_decref(root);
    return status;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, by_value);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Rounds in which the candidate's total beat the defaults' total.  The
 * two arms of a round run back to back, so they share the machine's load
 * of that moment: counting paired wins is robust to a load that swings
 * between rounds, where a spread or a mean is not. */
static size_t paired_wins(const double *t, size_t rounds, size_t narms, size_t arm,
                          size_t nshapes)
{
    size_t wins = 0;
    for (size_t r = 0; r < rounds; r++) {
        double d = 0, c = 0;
        for (size_t s = 0; s < nshapes; s++)
            d += t[(r * narms) * nshapes + s], c += t[(r * narms + arm) * nshapes + s];
        wins += c < d;
    }
    return wins;
}

/* The per-routine record of the tuning file. */
static json_t *routine_json(const mpt__clblast_params_t *p, int kept, size_t wins,
                            size_t rounds, const double *d, const double *c, size_t nshapes,
                            int quick)
{
    const mpt__gemm_shape_t *sh = mpt__tuning_shapes(quick, &nshapes);
    json_t *shapes = json_array();
    double td = 0, tc = 0;
    for (size_t i = 0; shapes && i < nshapes; i++) {
        td += d[i], tc += c[i];
        json_array_append_new(shapes, json_pack("{s:s,s:I,s:I,s:I,s:I,s:f,s:f}", "what",
                                                sh[i].what, "m", (json_int_t)sh[i].m, "n",
                                                (json_int_t)sh[i].n, "k", (json_int_t)sh[i].k,
                                                "count", (json_int_t)sh[i].count, "default_ms",
                                                d[i] * 1e3, "tuned_ms", c[i] * 1e3));
    }
    return json_pack("{s:b,s:I,s:I,s:o*,s:s,s:f,s:f,s:f,s:o*}", "kept", kept, "rounds_won",
                     (json_int_t)wins, "rounds", (json_int_t)rounds,
                     "parameters", params_json(p), "tuner_result", p->source, "tuner_ms",
                     p->tuner_ms, "default_ms", td * 1e3, "tuned_ms", tc * 1e3, "shapes",
                     shapes);
}

int mpt__tuning_tune(mpt_device_t *dev, const mpt__tuning_opts_t *o, json_t **result)
{
    static const char *const routines[] = {"Xgemm", "XgemmDirect"};
    mpt__clblast_params_t cand[2 * MPT_TUNING_MAX_CANDIDATES];
    size_t per[2], ncand = 0, nshapes, narms;
    double *t = NULL, *med = NULL;
    json_t *root = NULL, *rj = NULL;
    char path[4096], arm[4096];
    int status = MPT_OK;
    *result = NULL;
    mpt__tuning_shapes(o->quick, &nshapes);
    /* 1. candidates: the best of each tuner variation, best two a routine */
    for (int r = 0; r < 2; r++) {
        MPT_TRY(mpt__tuning_run_tuner(dev, routines[r], o, cand + ncand,
                                      MPT_TUNING_MAX_CANDIDATES, &per[r]));
        if (per[r] > 2)
            per[r] = 2;
        ncand += per[r];
    }
    /* 2. arms: 0 = CLBlast's defaults, 1.. = the candidates; rounds of
     * D C1 C2 ..., each sample a fresh process */
    narms = 1 + ncand;
    t = calloc(narms * nshapes * (size_t)o->rounds, sizeof *t);
    med = calloc(narms * nshapes, sizeof *med);
    if (!t || !med) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t a = 0; a < narms; a++) {
        json_t *aj = json_pack("{s:s,s:b,s:f}", "identity", dev->identity, "quick", o->quick,
                               "min_ms", o->min_ms);
        if (aj && a > 0) {
            json_object_set_new(aj, "routine", json_string(cand[a - 1].routine));
            json_object_set_new(aj, "parameters", params_json(&cand[a - 1]));
        }
        status = mpt__snprintf(arm, sizeof arm, "%s/arm-%zu.json", o->workdir, a);
        if (status == MPT_OK)
            status = aj ? mpt__json_save_file(arm, aj) : mpt__fail(MPT_ERR_NOMEM, "out of memory");
        json_decref(aj);
        if (status < 0)
            goto out;
    }
    for (int r = 0; r < o->rounds; r++)
        for (size_t a = 0; a < narms; a++) {
            if (o->progress) {
                char line[160];
                snprintf(line, sizeof line, "device %d: timing %s, round %d of %d",
                         dev->info.index, a ? cand[a - 1].routine : "CLBlast's defaults", r + 1,
                         o->rounds);
                o->progress(o->progress_ctx, line);
            }
            MPT_TRY(mpt__snprintf(arm, sizeof arm, "%s/arm-%zu.json", o->workdir, a));
            MPT_TRY(sample_arm(dev, o, arm, nshapes,
                               t + ((size_t)r * narms + a) * nshapes));
        }
    for (size_t a = 0; a < narms; a++)
        for (size_t s = 0; s < nshapes; s++) {
            double v[64];
            size_t nr = (size_t)o->rounds < 64 ? (size_t)o->rounds : 64;
            for (size_t r = 0; r < nr; r++)
                v[r] = t[(r * narms + a) * nshapes + s];
            med[a * nshapes + s] = median(v, nr);
        }
    /* 3. per routine: its fastest candidate in total, kept only if it
     * beats the defaults */
    rj = json_object();
    for (size_t r = 0, first = 1; r < 2; first += per[r], r++) {
        size_t best = first;
        double best_total = 0;
        for (size_t a = first; a < first + per[r]; a++) {
            double total = 0;
            for (size_t s = 0; s < nshapes; s++)
                total += med[a * nshapes + s];
            if (a == first || total < best_total)
                best = a, best_total = total;
        }
        /* Kept when the medians' totals win by the margin and the
         * candidate won most rounds against the defaults run beside it: a
         * lucky round on a loaded machine is not enough. */
        size_t wins = paired_wins(t, (size_t)o->rounds, narms, best, nshapes);
        int kept = mpt__tuning_decide(med, med + best * nshapes, nshapes, o->margin) &&
                   2 * wins > (size_t)o->rounds;
        json_object_set_new(rj, routines[r],
                            routine_json(&cand[best - 1], kept, wins, (size_t)o->rounds, med,
                                         med + best * nshapes, nshapes, o->quick));
    }
    /* 4. stored beside the profiles */
    root = json_pack("{s:i,s:s,s:s,s:f,s:b,s:i,s:f,s:o}", "mpt_clblast_tuning", TUNING_FORMAT,
                     "identity", dev->identity, "device", dev->info.name, "tuned_at",
                     mpt__wall_time(), "quick", o->quick, "rounds", o->rounds, "margin",
                     o->margin, "routines", rj);
    rj = NULL;
    if (!root) {
        status = mpt__fail(MPT_ERR_NOMEM, "out of memory building the tuning JSON");
        goto out;
    }
    MPT_TRY(mpt__tuning_path(dev, path, sizeof path));
    char *slash = strrchr(path, '/');
    *slash = 0;
    MPT_TRY(mpt__mkdir_p(path));
    *slash = '/';
    MPT_TRY(mpt__json_save_file(path, root));
    *result = root;
    root = NULL;
out:
    json_decref(rj);
    json_decref(root);
    free(t);
    free(med);
    return status;
}
