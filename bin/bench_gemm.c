/*
 * mpt-bench gemm: mpt's GEMM (mpt__op_gemm, and the batched GEMM of
 * attention) under each GEMM provider against the host BLAS called
 * directly on host arrays, at the shapes the shipped models run, in one
 * run.
 *
 * For each shape the three are timed in turn (CLBlast, host provider,
 * cblas_sgemm directly: A B C A B C ...), so that a machine whose load
 * drifts during the run shifts all three alike; each sample repeats the
 * call until it has run for --min-ms, and the figure is the median of
 * --repeats samples.  mpt's calls are timed to the end of the work
 * (mpt_device_finish after the call): a CLBlast GEMM is only enqueued
 * when the call returns.  That is one call's latency; a training step
 * queues its GEMMs back to back and waits once, so the host provider is
 * also timed in chains of CHAIN calls with one finish ("queued"), where
 * a provider that queues its calls (native kernels) hides its per-call
 * round trip as a step does.  The direct BLAS runs with the thread count the
 * host provider gives the device, so the ratio measures what mpt adds
 * (map, unmap, queue drain), not a different thread count.
 *
 * Uses the internal tensor and device layers (mpt-bench links the whole
 * convenience library).  Left out: the CNN's per-image GEMMs (their
 * shapes depend on the batch's images and are timed by mpt-train
 * --timing), and GPU devices' peers (a GPU has no host BLAS to compare).
 */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "config.h"
#include "device/gemm.h"
#include "device/host_blas.h"
#include "device/tuning.h"
#include "tensor/tensor.h"

/* Calls per finish in the "queued" timing: about one MLP step's GEMMs. */
#define CHAIN 16

/* The models' shapes are the library's list (lib/device/tuning.c), the
 * same that mpt-topo --tune times. */
typedef mpt__gemm_shape_t shape_t;

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: mpt-bench gemm [OPTION]...\n"
            "GFLOP/s of mpt's GEMM under each GEMM provider (CLBlast, the host BLAS on\n"
            "the device's buffers) against the host BLAS called directly, at the shapes of\n"
            "mlp-fashion (batch 128 and 1024), a square 1024 and gpt-mini (batch 8 x 256);\n"
            "each call waited for, and the host provider also in chains of 16 calls with\n"
            "one wait (\"queued\", as a training step runs them).\n"
            "\n"
            "  -d, --devices SPEC   the device to measure (default 0: the first)\n"
            "      --repeats N      samples per figure, alternating the three (5)\n"
            "      --min-ms N       each sample repeats the call for at least N ms (50)\n"
            "      --quick          only the first four shapes (tests)\n"
            "  -h, --help           show this help and exit\n");
}

/* One side of the comparison: a device set opened with one provider, or
 * (dev NULL) host arrays for the direct BLAS. */
typedef struct {
    mpt_devices_t *set;
    mpt_device_t *dev;
    mpt__tensor_t a, b, c;
    float *ha, *hb, *hc;
    size_t *offs; /* a, b, c offsets of each product of a batch */
} side_t;

/* Floats of a stored rows x cols matrix times count. */
static size_t floats(size_t rows, size_t cols, size_t count)
{
    return rows * cols * count;
}

static void side_alloc(side_t *s, const shape_t *sh)
{
    size_t na = floats(sh->ta ? sh->k : sh->m, sh->ta ? sh->m : sh->k, sh->count);
    size_t nb = floats(sh->tb ? sh->n : sh->k, sh->tb ? sh->k : sh->n, sh->count);
    size_t nc = floats(sh->m, sh->n, sh->count), sizes[3] = {na, nb, nc};
    float *host[3];
    for (int i = 0; i < 3; i++) {
        if (!(host[i] = malloc(sizes[i] * sizeof(float))))
            tool_die("out of memory for a %zu-float matrix", sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++)
            host[i][j] = (float)((j * 7 + (size_t)i) % 13) * 0.0625f - 0.375f;
    }
    if (!(s->offs = malloc(3 * sh->count * sizeof *s->offs)))
        tool_die("out of memory");
    for (size_t g = 0; g < sh->count; g++) {
        s->offs[g] = g * (na / sh->count);
        s->offs[sh->count + g] = g * (nb / sh->count);
        s->offs[2 * sh->count + g] = g * (nc / sh->count);
    }
    if (!s->dev) {
        s->ha = host[0], s->hb = host[1], s->hc = host[2];
        return;
    }
    mpt__tensor_t *t[3] = {&s->a, &s->b, &s->c};
    for (int i = 0; i < 3; i++) {
        size_t dims[1] = {sizes[i]};
        tool_check(mpt__tensor_alloc(s->dev, 1, dims, t[i]), "allocating a matrix");
        tool_check(mpt__tensor_write(t[i], host[i]), "writing a matrix");
        free(host[i]);
    }
}

static void side_free(side_t *s)
{
    if (s->dev) {
        mpt_buffer_free(s->a.buf), mpt_buffer_free(s->b.buf), mpt_buffer_free(s->c.buf);
        s->a.buf = s->b.buf = s->c.buf = NULL;
    }
    free(s->ha), free(s->hb), free(s->hc), free(s->offs);
    s->ha = s->hb = s->hc = NULL, s->offs = NULL;
}

/* One call of the shape on a side, to the end of its work when finish. */
static void run_once(side_t *s, const shape_t *sh, int threads, int finish)
{
    size_t lda = sh->ta ? sh->m : sh->k, ldb = sh->tb ? sh->k : sh->n, ldc = sh->n;
    if (!s->dev) {
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
        if (openblas_get_num_threads() != threads)
            openblas_set_num_threads(threads);
#else
        (void)threads;
#endif
        for (size_t g = 0; g < sh->count; g++)
            cblas_sgemm(CblasRowMajor, sh->ta ? CblasTrans : CblasNoTrans,
                        sh->tb ? CblasTrans : CblasNoTrans, (int)sh->m, (int)sh->n, (int)sh->k,
                        1.0f, s->ha + s->offs[g], (int)lda, s->hb + s->offs[sh->count + g],
                        (int)ldb, 0.0f, s->hc + s->offs[2 * sh->count + g], (int)ldc);
        return;
    }
    if (sh->count == 1)
        tool_check(mpt__op_gemm(sh->ta, sh->tb, sh->m, sh->n, sh->k, 1.0f, &s->a, lda, &s->b, ldb,
                                0.0f, &s->c, ldc),
                   "mpt__op_gemm");
    else
        tool_check(mpt__op_gemm_batched(sh->ta, sh->tb, sh->m, sh->n, sh->k, 1.0f, &s->a, s->offs,
                                        lda, &s->b, s->offs + sh->count, ldb, 0.0f, &s->c,
                                        s->offs + 2 * sh->count, ldc, sh->count),
                   "mpt__op_gemm_batched");
    if (finish)
        tool_check(mpt_device_finish(s->dev), "finishing the device");
}

/* Seconds per call: the call repeated for at least min_s, each to its end,
 * or (chain > 1) in chains of `chain` calls with one finish each. */
static double sample(side_t *s, const shape_t *sh, int threads, double min_s, int chain)
{
    size_t calls = 0;
    double t0 = tool_now(), dt;
    do {
        for (int c = 1; c <= chain; c++)
            run_once(s, sh, threads, c == chain);
        calls += (size_t)chain;
    } while ((dt = tool_now() - t0) < min_s);
    return dt / (double)calls;
}

static void open_side(side_t *s, const char *spec, const char *provider)
{
    if (setenv("MPT_BLAS", provider, 1) != 0)
        tool_die("setting MPT_BLAS");
    tool_check(mpt_devices_open(spec, &s->set), "opening the device");
    unsetenv("MPT_BLAS");
    if (mpt_devices_count(s->set) < 1)
        tool_die("no device selected");
    s->dev = mpt_devices_get(s->set, 0);
}

int bench_gemm_main(int argc, char **argv)
{
    enum { O_REPEATS = 256, O_MIN_MS, O_QUICK };
    static const struct option longopts[] = {
        {"devices", required_argument, NULL, 'd'}, {"repeats", required_argument, NULL, O_REPEATS},
        {"min-ms", required_argument, NULL, O_MIN_MS}, {"quick", no_argument, NULL, O_QUICK},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *spec = "0";
    size_t repeats = 5, min_ms = 50, nshapes;
    const shape_t *shapes = mpt__tuning_shapes(0, &nshapes);
    int opt;
    while ((opt = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'd': spec = optarg; break;
        case O_REPEATS: repeats = (size_t)tool_parse_count("--repeats", optarg, 1); break;
        case O_MIN_MS: min_ms = (size_t)tool_parse_count("--min-ms", optarg, 1); break;
        case O_QUICK: shapes = mpt__tuning_shapes(1, &nshapes); break;
        case 'h': usage(stdout); return TOOL_EXIT_OK;
        default: tool_usage_error("see --help");
        }
    }
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);

    /* sides[0]: CLBlast, [1]: the host provider, [2]: the BLAS directly */
    side_t sides[3];
    memset(sides, 0, sizeof sides);
    open_side(&sides[0], spec, "clblast");
    open_side(&sides[1], spec, "host");
    int threads = sides[1].dev->blas_threads;
    const mpt_device_info_t *info = mpt_device_info(sides[1].dev);
    tool_check(mpt__device_blas_warmup(sides[0].dev), "warming CLBlast up");
    printf("mpt-bench gemm: device %d (%s, %u compute units), host BLAS %s with %d thread(s), "
           "median of %zu samples of >= %zu ms, alternating\n",
           info->index, info->name, info->compute_units, mpt__gemm_host_name(), threads, repeats,
           min_ms);
    /* CLBlast's parameters: tuned ones apply in every process unless
     * MPT_CLBLAST_TUNING=off (mpt-topo --tune; docs/performance.md). */
    const char *tuned = mpt_device_info(sides[0].dev)->clblast_tuning;
    printf("CLBlast parameters: %s\n", tuned && *tuned ? tuned : "CLBlast's built-in ones");
    printf("%-30s %-4s %16s %9s %9s %9s %9s %8s %8s %8s\n", "shape", "op", "m x n x k",
           "clblast", "host", "host", "BLAS", "host/", "queued/", "clblast/");
    printf("%-30s %-4s %16s %9s %9s %9s %9s %8s %8s %8s\n", "", "", "", "GFLOP/s", "GFLOP/s",
           "queued", "GFLOP/s", "BLAS", "BLAS", "BLAS");
    /* Timings: 0 CLBlast, 1 the host provider, 2 the BLAS directly, 3 the
     * host provider in chains (sides[1] again). */
    double *t = malloc(4 * repeats * sizeof *t);
    if (!t)
        tool_die("out of memory");
    for (size_t i = 0; i < nshapes; i++) {
        const shape_t *sh = &shapes[i];
        for (int s = 0; s < 3; s++) {
            side_alloc(&sides[s], sh);
            run_once(&sides[s], sh, threads, 1); /* compiles, pages in, warms caches */
        }
        for (size_t r = 0; r < repeats; r++)
            for (int k = 0; k < 4; k++)
                t[k * repeats + r] = sample(&sides[k == 3 ? 1 : k], sh, threads,
                                            (double)min_ms * 1e-3, k == 3 ? CHAIN : 1);
        double flop = 2.0 * (double)sh->m * (double)sh->n * (double)sh->k * (double)sh->count;
        double g[4];
        for (int k = 0; k < 4; k++)
            g[k] = flop / bench_median(t + k * repeats, repeats) * 1e-9;
        for (int s = 0; s < 3; s++)
            side_free(&sides[s]);
        char dims[48], op[8];
        snprintf(dims, sizeof dims, "%zux%zux%zu", sh->m, sh->n, sh->k);
        snprintf(op, sizeof op, "%s%s", sh->ta ? "T" : "N", sh->tb ? "T" : "N");
        printf("%-30s %-4s %16s %9.1f %9.1f %9.1f %9.1f %7.2fx %7.2fx %7.2fx\n", sh->what, op,
               dims, g[0], g[1], g[3], g[2], g[1] / g[2], g[3] / g[2], g[0] / g[2]);
        fflush(stdout);
    }
    free(t);
    mpt_devices_free(sides[0].set);
    mpt_devices_free(sides[1].set);
    return TOOL_EXIT_OK;
}
