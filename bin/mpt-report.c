/*
 * mpt-report: one self-contained HTML page of a training run, from its
 * JSON Lines metrics (mpt-train --metrics), and optionally its Chrome trace
 * (--trace) and plan (mpt-plan --json): loss and accuracy curves,
 * throughput and step time, per-device utilisation, bandwidth and memory
 * over the steps, the plan as a Gantt chart of the traced spans, and the
 * run's configuration.
 *
 * The page needs no network: Chart.js (Debian's libjs-chart.js) is copied
 * into it.  Chart.js is chosen because it is maintained, packaged by
 * Debian, one 200 kB file with no dependency, and draws line charts and
 * floating bars (the Gantt chart) on a canvas; plotly is not packaged for
 * Debian 12 and d3 (3.5 there) would mean writing the charts by hand.
 *
 * Written in C with jansson, as the other tools: no interpreter to find at
 * run time, the same --help/--version/exit codes (and so its man page).
 * This file only reads, thins and embeds the data; what is drawn, and
 * how, is the template's (report/template.html), which reads the lines'
 * fields by name: a new metrics field needs no change here.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tool.h"

/* Step lines kept for the curves (evenly thinned beyond): more would only
 * slow the page, not show more on a screen-wide chart. */
#define MAX_STEP_LINES 4000
/* Trace spans in the Gantt chart: the last ones of the run, a few steps of
 * a pipeline (24 spans a step for 2 stages of 4 micro-batches), few enough
 * that each span is seen. */
#define MAX_SPANS 240

/* Traces drawn side by side: a run's and the planner's prediction of it
 * (mpt-plan --trace), or several ranks'. */
#define MAX_TRACES 8

typedef struct {
    const char *metrics, *plan, *out, *title, *chartjs;
    const char *traces[MAX_TRACES];
    int ntraces;
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: mpt-report RUN.jsonl [--trace FILE] [--plan FILE] -o REPORT.html\n"
            "Write one self-contained HTML page (no network needed to open it) of a\n"
            "training run: loss and accuracy curves, throughput and step time\n"
            "(measured and predicted), per-device utilisation, all-reduce bandwidth\n"
            "and memory over the steps, the plan as a Gantt chart of the traced\n"
            "spans, and the run's configuration.\n"
            "\n"
            "  RUN.jsonl                 the run's metrics (mpt-train --metrics FILE)\n"
            "      --trace FILE          a Chrome trace: the run's (mpt-train --trace FILE)\n"
            "                            or the planner's prediction (mpt-plan --trace FILE);\n"
            "                            repeat it to draw them one above the other. The\n"
            "                            Gantt chart shows each one's last %d spans, one\n"
            "                            row per track, each from its own time 0\n"
            "      --plan FILE           the plan it ran (mpt-plan --json), shown in full\n"
            "      --title TEXT          the page's title (default: the metrics file's name)\n"
            "  -o, --output FILE         the HTML file to write (required)\n"
            "      --chartjs FILE        Chart.js 3 to copy into the page (default:\n"
            "                            " MPT_CHARTJS ", Debian package libjs-chart.js)\n"
            "  -h, --help                show this help and exit\n"
            "  -V, --version             show the version and exit\n"
            "\n"
            "Open the page in any browser. docs/metrics.md describes every field.\n"
            "Exit status: 0 on success, 1 on failure, 2 on a usage error.\n",
            MAX_SPANS);
}

static void parse(int argc, char **argv, options *o)
{
    enum { O_TRACE = 256, O_PLAN, O_TITLE, O_CHARTJS };
    static const struct option longopts[] = {
        {"trace", required_argument, NULL, O_TRACE}, {"plan", required_argument, NULL, O_PLAN},
        {"title", required_argument, NULL, O_TITLE}, {"output", required_argument, NULL, 'o'},
        {"chartjs", required_argument, NULL, O_CHARTJS}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    int c;
    memset(o, 0, sizeof *o);
    o->chartjs = MPT_CHARTJS;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:hV", longopts, NULL)) != -1) {
        switch (c) {
        case O_TRACE:
            if (o->ntraces == MAX_TRACES)
                tool_usage_error("at most %d --trace files", MAX_TRACES);
            o->traces[o->ntraces++] = optarg;
            break;
        case O_PLAN: o->plan = optarg; break;
        case O_TITLE: o->title = optarg; break;
        case O_CHARTJS: o->chartjs = optarg; break;
        case 'o': o->out = optarg; break;
        case 'h': usage(stdout); exit(TOOL_EXIT_OK);
        case 'V': printf("mpt-report (mpt) %s\n", mpt_version()); exit(TOOL_EXIT_OK);
        case ':': tool_usage_error("option '%s' needs a value", argv[optind - 1]);
        default: tool_usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        tool_usage_error("which run? give its metrics file (mpt-train --metrics FILE)");
    o->metrics = argv[optind++];
    if (optind < argc)
        tool_usage_error("unexpected argument '%s'", argv[optind]);
    if (!o->out)
        tool_usage_error("give the page to write: -o REPORT.html");
}

/* A whole file, NUL-terminated; exits naming it when it cannot be read. */
static char *slurp(const char *path, const char *what, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        tool_die("cannot read %s %s: %s", what, path, strerror(errno));
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0)
        if ((n += got) == cap) {
            char *grown = realloc(buf, 2 * cap + 1);
            if (!grown)
                free(buf);
            buf = grown, cap *= 2;
        }
    if (!buf)
        tool_die("out of memory reading %s %s", what, path);
    if (ferror(f))
        tool_die("cannot read %s %s: %s", what, path, strerror(errno));
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* The metrics file's lines as an array of objects.  A bad line is an error
 * naming it, except a last line without its newline: what a killed writer
 * left half written (as mpt_metrics_open drops it on resume). */
static json_t *read_lines(const char *path)
{
    size_t len;
    char *text = slurp(path, "metrics file", &len);
    json_t *lines = json_array();
    size_t lineno = 0;
    for (char *p = text; *p; lineno++) {
        char *nl = strchr(p, '\n');
        int torn = !nl;
        if (nl)
            *nl = '\0';
        json_error_t err;
        json_t *v = *p ? json_loads(p, 0, &err) : NULL;
        if (*p && (!v || !json_is_object(v))) {
            if (torn) {
                fprintf(stderr, "mpt-report: %s: line %zu is cut short (a killed run?): "
                        "left out\n", path, lineno + 1);
                json_decref(v);
                break;
            }
            tool_die("%s line %zu: %s", path, lineno + 1,
                     v ? "not a JSON object" : err.text);
        }
        if (v)
            json_array_append_new(lines, v);
        p = nl ? nl + 1 : p + strlen(p);
    }
    free(text);
    if (json_array_size(lines) == 0)
        tool_die("%s holds no metrics line: nothing to draw", path);
    return lines;
}

/* Step lines (those with a "loss") thinned evenly to MAX_STEP_LINES, the
 * last one always kept; every other line (evaluations, re-plans) kept. */
static json_t *thin(json_t *lines, size_t *steps_in, size_t *steps_kept)
{
    size_t nsteps = 0, k = 0, i;
    json_t *v, *out = json_array();
    json_array_foreach(lines, i, v) nsteps += json_object_get(v, "loss") != NULL;
    size_t stride = nsteps > MAX_STEP_LINES ? (nsteps + MAX_STEP_LINES - 1) / MAX_STEP_LINES : 1;
    *steps_in = nsteps, *steps_kept = 0;
    json_array_foreach(lines, i, v)
    {
        if (json_object_get(v, "loss")) {
            int keep = k % stride == 0 || k == nsteps - 1;
            k++;
            if (!keep)
                continue;
            ++*steps_kept;
        }
        json_array_append(out, v);
    }
    return out;
}

/* What a span is drawn as (its colour): its name ("forward", "allreduce"),
 * unless that is only a letter and a micro-batch ("F0", "B3": the
 * planner's), when its category ("forward", "p2p") says more. */
static const char *span_kind(json_t *e)
{
    const char *name = json_string_value(json_object_get(e, "name"));
    const char *cat = json_string_value(json_object_get(e, "cat"));
    size_t letters = strcspn(name, "0123456789");
    return letters <= 2 && name[letters] && cat ? cat : name;
}

static int span_end_cmp(const void *a, const void *b)
{
    double x = json_number_value(json_object_get(*(json_t *const *)a, "ts")) +
               json_number_value(json_object_get(*(json_t *const *)a, "dur"));
    double y = json_number_value(json_object_get(*(json_t *const *)b, "ts")) +
               json_number_value(json_object_get(*(json_t *const *)b, "dur"));
    return (x > y) - (x < y);
}

/* Whether a span is a step's: the host track's evaluations and checkpoints
 * (category "host", other than the batch loads) last as long as a hundred
 * steps and would squeeze the steps in the Gantt chart to slivers. */
static int step_span(json_t *ev, const char *name)
{
    const char *cat = json_string_value(json_object_get(ev, "cat"));
    return !cat || strcmp(cat, "host") != 0 || strcmp(name, "batch load") == 0;
}

/* The trace's track names ("pid:tid" -> "process / thread") and its last
 * MAX_SPANS complete ("X") spans of steps as {track, name, start, end} in
 * ms. */
static json_t *read_trace(const char *path)
{
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root)
        tool_die("trace %s line %d: %s", path, err.line, err.text);
    /* Both forms of the format: {"traceEvents": [...]} or a bare array. */
    json_t *events = json_is_array(root) ? root : json_object_get(root, "traceEvents");
    if (!json_is_array(events))
        tool_die("trace %s: no traceEvents array (not a Chrome trace)", path);
    json_t *procs = json_object(), *threads = json_object(), *spans = json_array(), *ev;
    size_t i, n = 0;
    json_t **x = calloc(json_array_size(events) + 1, sizeof *x);
    if (!x)
        tool_die("out of memory reading trace %s", path);
    json_array_foreach(events, i, ev)
    {
        const char *ph = json_string_value(json_object_get(ev, "ph"));
        const char *name = json_string_value(json_object_get(ev, "name"));
        char pid[32], key[64];
        snprintf(pid, sizeof pid, "%lld", (long long)json_integer_value(json_object_get(ev, "pid")));
        snprintf(key, sizeof key, "%s:%lld", pid,
                 (long long)json_integer_value(json_object_get(ev, "tid")));
        if (ph && name && strcmp(ph, "M") == 0) {
            json_t *label = json_object_get(json_object_get(ev, "args"), "name");
            if (json_is_string(label) && strcmp(name, "process_name") == 0)
                json_object_set(procs, pid, label);
            else if (json_is_string(label) && strcmp(name, "thread_name") == 0)
                json_object_set(threads, key, label);
        } else if (ph && name && strcmp(ph, "X") == 0 &&
                   json_is_number(json_object_get(ev, "ts")) &&
                   json_is_number(json_object_get(ev, "dur")) && step_span(ev, name)) {
            x[n++] = ev;
        }
    }
    qsort(x, n, sizeof *x, span_end_cmp);
    for (i = n > MAX_SPANS ? n - MAX_SPANS : 0; i < n; i++) {
        json_t *e = x[i];
        double ts = json_number_value(json_object_get(e, "ts"));
        double dur = json_number_value(json_object_get(e, "dur"));
        char key[64];
        long long pid = json_integer_value(json_object_get(e, "pid"));
        snprintf(key, sizeof key, "%lld", pid);
        const char *proc = json_string_value(json_object_get(procs, key));
        snprintf(key, sizeof key, "%lld:%lld", pid,
                 (long long)json_integer_value(json_object_get(e, "tid")));
        const char *thread = json_string_value(json_object_get(threads, key));
        char track[512];
        snprintf(track, sizeof track, "%s%s%s", proc ? proc : "", proc ? " / " : "",
                 thread ? thread : key);
        json_array_append_new(spans, json_pack("{s:s,s:s,s:f,s:f}", "track", track, "name",
                                               span_kind(e), "start", ts / 1e3, "end",
                                               (ts + dur) / 1e3));
    }
    free(x);
    json_t *out = json_pack("{s:s,s:o,s:I}", "file", path, "spans", spans, "total", (json_int_t)n);
    json_decref(procs);
    json_decref(threads);
    json_decref(root);
    return out;
}

/* Copies the template to out, its line "@CHARTJS@" replaced by Chart.js
 * and "@DATA@" by the data (JSON, "/" escaped so that no "</script>" can
 * end the script early). */
static void write_page(const options *o, json_t *data)
{
    char *template = slurp(tool_data_path("report/template.html"), "report template", NULL);
    char *chartjs = slurp(o->chartjs, "Chart.js (apt-get install libjs-chart.js)", NULL);
    char *json = json_dumps(data, JSON_COMPACT | JSON_ESCAPE_SLASH);
    if (!json)
        tool_die("out of memory writing %s", o->out);
    if (!strstr(template, "\n@CHARTJS@\n") || !strstr(template, "\n@DATA@\n"))
        tool_die("report template %s lacks its @CHARTJS@ and @DATA@ lines",
                 tool_data_path("report/template.html"));
    FILE *f = fopen(o->out, "w");
    if (!f)
        tool_die("cannot write %s: %s", o->out, strerror(errno));
    for (char *p = template, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl)
            nl = p + strlen(p) - 1;
        size_t n = (size_t)(nl - p) + 1;
        if (strncmp(p, "@CHARTJS@\n", n) == 0)
            fputs(chartjs, f), fputc('\n', f);
        else if (strncmp(p, "@DATA@\n", n) == 0)
            fputs(json, f), fputc('\n', f);
        else
            fwrite(p, 1, n, f);
    }
    if (ferror(f) | (fclose(f) != 0))
        tool_die("writing %s: %s", o->out, strerror(errno ? errno : EIO));
    free(json);
    free(chartjs);
    free(template);
}

int main(int argc, char **argv)
{
    options o;
    tool_init("mpt-report", 0);
    parse(argc, argv, &o);
    json_t *lines = read_lines(o.metrics);
    size_t steps_in, steps_kept;
    json_t *kept = thin(lines, &steps_in, &steps_kept);
    const char *base = strrchr(o.metrics, '/');
    json_t *data = json_pack("{s:s,s:s,s:s,s:o,s:I,s:I}", "title",
                             o.title ? o.title : base ? base + 1 : o.metrics, "metrics",
                             o.metrics, "version", mpt_version(), "lines", kept, "steps_logged",
                             (json_int_t)steps_in, "steps_drawn", (json_int_t)steps_kept);
    if (!data)
        tool_die("out of memory");
    json_t *traces = json_array();
    for (int i = 0; i < o.ntraces; i++)
        json_array_append_new(traces, read_trace(o.traces[i]));
    json_object_set_new(data, "traces", traces);
    if (o.plan) {
        json_error_t err;
        json_t *plan = json_load_file(o.plan, 0, &err);
        if (!plan)
            tool_die("plan %s line %d: %s", o.plan, err.line, err.text);
        json_object_set_new(data, "plan", plan);
    }
    write_page(&o, data);
    json_decref(data);
    json_decref(lines);
    return TOOL_EXIT_OK;
}
