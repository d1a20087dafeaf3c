/*
 * bin/mpt-run.c: the supervisor of a job across processes, in the spirit
 * of torchrun's elastic agent, built on Open MPI's mpirun (it starts no
 * process itself but mpirun): it runs `mpirun --hostfile H -np N PROGRAM
 * ARGS`, watches it, and when a rank dies (mpirun reports "process rank R
 * ... on node X exited on signal S") or a host fails to start, it restarts
 * the job from the program's last checkpoint (adding --resume) on the
 * slots still alive: one slot fewer on the node of each dead rank, none on
 * a host that failed to start.  mpt-train plans for the world it finds, so
 * the restarted job re-plans on the survivors.  Up to --max-restarts
 * restarts; one line each.  SIGINT and SIGTERM are forwarded to mpirun
 * (mpt-train stops at a step with a checkpoint) and end the supervision.
 *
 * Left out: a job that fails without a death (mpt-train's exit 1 for bad
 * input, divergence or a device error) is not restarted: it would fail
 * again; hosts that come back are not taken in again.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tool.h"

typedef struct {
    char name[256];
    int slots;
} host;

typedef struct {
    host *hosts;
    int nhosts;
} world;

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: mpt-run [OPTIONS] -- PROGRAM [ARGS...]\n"
            "Runs `mpirun --hostfile H -np N PROGRAM ARGS` and, when a rank dies or a host\n"
            "fails to start, restarts it from PROGRAM's checkpoint (ARGS must hold\n"
            "--checkpoint DIR; --resume is added) on the ranks still alive.\n\n"
            "  -f, --hostfile FILE    Open MPI host file (\"host slots=N\" lines); default:\n"
            "                         localhost with --np slots\n"
            "  -n, --np N             ranks of the first start (default: the host file's\n"
            "                         slots)\n"
            "      --max-restarts N   restarts before giving up (3)\n"
            "      --mpirun PATH      the mpirun to run (mpirun)\n"
            "      --mpirun-args S    extra mpirun options, split at spaces (e.g.\n"
            "                         \"--oversubscribe --mca btl self,vader\")\n"
            "  -h, --help             this help;  -V, --version  the version\n\n"
            "Exit status: PROGRAM's when it ends, 1 when restarts run out or a failure is\n"
            "not a death (bad input fails again), 2 for a usage error.\n");
}

/* Host file lines: "name [slots=N]", '#' comments. */
static void read_hostfile(const char *path, world *w)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    if (!f)
        tool_die("host file %s: %s", path, strerror(errno));
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#'), name[256];
        int slots = 1;
        if (hash)
            *hash = '\0';
        if (sscanf(line, "%255s", name) != 1)
            continue;
        const char *s = strstr(line, "slots=");
        if (s && (sscanf(s + 6, "%d", &slots) != 1 || slots < 1))
            tool_die("host file %s: host %s: slots must be an integer >= 1", path, name);
        host *grown = realloc(w->hosts, (size_t)(w->nhosts + 1) * sizeof *grown);
        if (!grown)
            tool_die("out of memory");
        w->hosts = grown;
        snprintf(w->hosts[w->nhosts].name, sizeof w->hosts[w->nhosts].name, "%s", name);
        w->hosts[w->nhosts++].slots = slots;
    }
    fclose(f);
    if (w->nhosts == 0)
        tool_die("host file %s names no host", path);
}

static int world_slots(const world *w)
{
    int n = 0;
    for (int i = 0; i < w->nhosts; i++)
        n += w->hosts[i].slots;
    return n;
}

/* Takes `slots` (all: -1) from the host called name; 0 when none is. */
static int drop(world *w, const char *name, int slots)
{
    for (int i = 0; i < w->nhosts; i++) {
        host *h = &w->hosts[i];
        if (strcmp(h->name, name) != 0)
            continue;
        h->slots = slots < 0 || slots > h->slots ? 0 : h->slots - slots;
        return 1;
    }
    return 0;
}

static pid_t child;
static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    stopping = sig;
    if (child > 0)
        kill(child, sig);
}

/* What mpirun said about the job's end (its stderr, echoed as it comes). */
typedef struct {
    char dead_node[256];
    int dead_rank, dead_signal;
    char failed_host[256];
} verdict;

static void scan_line(const char *line, verdict *v)
{
    const char *p;
    int rank, sig;
    char node[256];
    if ((p = strstr(line, "process rank ")) &&
        sscanf(p, "process rank %d with PID %*d on node %255s exited on signal %d", &rank, node,
               &sig) == 3 &&
        v->dead_rank < 0) {
        v->dead_rank = rank, v->dead_signal = sig;
        snprintf(v->dead_node, sizeof v->dead_node, "%s", node);
    }
    /* "ORTE was unable to reliably start one or more daemons" lists the
     * hosts below; the common one-line forms name the host after "node". */
    if ((p = strstr(line, "on node ")) && strstr(line, "daemon") &&
        sscanf(p, "on node %255s", node) == 1 && !v->failed_host[0])
        snprintf(v->failed_host, sizeof v->failed_host, "%s", node);
}

/* Runs argv with its stderr through a pipe read here: the exit status. */
static int run_job(char **argv, verdict *v)
{
    int fds[2];
    v->dead_rank = -1, v->dead_signal = 0, v->dead_node[0] = v->failed_host[0] = '\0';
    if (pipe(fds) != 0)
        tool_die("pipe: %s", strerror(errno));
    child = fork();
    if (child < 0)
        tool_die("fork: %s", strerror(errno));
    if (child == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]), close(fds[1]);
        execvp(argv[0], argv);
        fprintf(stderr, "mpt-run: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    char line[4096];
    for (;;) {
        if (in && fgets(line, sizeof line, in)) {
            fputs(line, stderr);
            scan_line(line, v);
        } else if (in && ferror(in) && errno == EINTR) {
            clearerr(in);
        } else {
            break;
        }
    }
    if (in)
        fclose(in);
    int st = 0;
    while (waitpid(child, &st, 0) < 0 && errno == EINTR)
        ;
    child = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The value of --checkpoint in the program's arguments, or NULL. */
static const char *checkpoint_dir(char **args, int n)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(args[i], "--checkpoint") == 0 && i + 1 < n)
            return args[i + 1];
        if (strncmp(args[i], "--checkpoint=", 13) == 0)
            return args[i] + 13;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"hostfile", required_argument, NULL, 'f'}, {"np", required_argument, NULL, 'n'},
        {"max-restarts", required_argument, NULL, 'r'}, {"mpirun", required_argument, NULL, 'm'},
        {"mpirun-args", required_argument, NULL, 'a'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    const char *hostfile = NULL, *mpirun = "mpirun", *extra = "";
    int np = 0, max_restarts = 3, c;
    world w = {0};
    tool_init("mpt-run", 0);
    while ((c = getopt_long(argc, argv, "+f:n:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': hostfile = optarg; break;
        case 'n': np = (int)tool_parse_count("--np", optarg, 1); break;
        case 'r': max_restarts = (int)tool_parse_count("--max-restarts", optarg, 0); break;
        case 'm': mpirun = optarg; break;
        case 'a': extra = optarg; break;
        case 'h': usage(stdout); return TOOL_EXIT_OK;
        case 'V': printf("mpt-run (mpt) %s\n", mpt_version()); return TOOL_EXIT_OK;
        default: usage(stderr); return TOOL_EXIT_USAGE;
        }
    }
    char **prog = argv + optind;
    int nprog = argc - optind;
    if (nprog < 1)
        tool_usage_error("no program to run: mpt-run [OPTIONS] -- mpt-train ARGS");
    const char *ckdir = checkpoint_dir(prog, nprog);
    if (!ckdir)
        tool_usage_error("the program's arguments need --checkpoint DIR: a restart resumes it");
    if (hostfile) {
        read_hostfile(hostfile, &w);
    } else {
        if (!np)
            tool_usage_error("give --hostfile or --np");
        if (!(w.hosts = calloc(1, sizeof *w.hosts)))
            tool_die("out of memory");
        snprintf(w.hosts[0].name, sizeof w.hosts[0].name, "localhost");
        w.hosts[0].slots = np, w.nhosts = 1;
    }
    if (!np)
        np = world_slots(&w);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART; /* the read of mpirun's stderr goes on: mpirun must not get
                               * SIGPIPE while it stops the ranks */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char tmpl[] = "/tmp/mpt-run-hosts-XXXXXX", ckpt[4096], npbuf[16];
    int fd = mkstemp(tmpl);
    if (fd < 0)
        tool_die("a host file for mpirun: %s", strerror(errno));
    close(fd);
    snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", ckdir);
    char *extra_copy = strdup(extra);
    size_t cap = (size_t)nprog + 64;
    char **args = calloc(cap, sizeof *args);
    if (!extra_copy || !args)
        tool_die("out of memory");
    int status = TOOL_EXIT_FAIL;
    for (int attempt = 0;; attempt++) {
        /* This start's hosts, ranks and command. */
        FILE *hf = fopen(tmpl, "w");
        if (!hf)
            tool_die("%s: %s", tmpl, strerror(errno));
        for (int i = 0; i < w.nhosts; i++)
            if (w.hosts[i].slots > 0)
                fprintf(hf, "%s slots=%d\n", w.hosts[i].name, w.hosts[i].slots);
        if (fclose(hf) != 0)
            tool_die("%s: %s", tmpl, strerror(errno));
        snprintf(npbuf, sizeof npbuf, "%d", np);
        int k = 0, resume = 0;
        struct stat st;
        args[k++] = (char *)mpirun;
        char *save = NULL;
        strcpy(extra_copy, extra);
        for (char *tok = strtok_r(extra_copy, " ", &save); tok && k < 40;
             tok = strtok_r(NULL, " ", &save))
            args[k++] = tok;
        args[k++] = "--hostfile", args[k++] = tmpl, args[k++] = "-np", args[k++] = npbuf;
        for (int i = 0; i < nprog; i++) {
            resume |= strcmp(prog[i], "--resume") == 0;
            /* a restart resumes the run it replaces, never overwrites it */
            if (!(attempt > 0 && strcmp(prog[i], "--overwrite") == 0))
                args[k++] = prog[i];
        }
        if (!resume && attempt > 0 && stat(ckpt, &st) == 0)
            args[k++] = "--resume";
        args[k] = NULL;

        verdict v;
        int rc = run_job(args, &v);
        if (rc == 0 || stopping) {
            status = rc;
            break;
        }
        if (v.dead_rank < 0 && !v.failed_host[0]) {
            fprintf(stderr, "mpt-run: the job failed (exit %d) without a rank dying: not "
                            "restarted (it would fail again)\n", rc);
            status = rc == TOOL_EXIT_USAGE ? TOOL_EXIT_USAGE : TOOL_EXIT_FAIL;
            break;
        }
        if (v.failed_host[0])
            drop(&w, v.failed_host, -1);
        if (v.dead_rank >= 0 && !drop(&w, v.dead_node, 1))
            drop(&w, "localhost", 1); /* ranks as "hosts" on one machine */
        np = world_slots(&w);
        if (attempt >= max_restarts || np < 1) {
            fprintf(stderr, "mpt-run: %s; giving up after %d restart(s)\n",
                    np < 1 ? "no rank left" : "out of restarts", attempt);
            break;
        }
        if (v.dead_rank >= 0)
            printf("mpt-run: rank %d on %s died (signal %d): restart %d of %d on %d rank(s) "
                   "from %s\n", v.dead_rank, v.dead_node, v.dead_signal, attempt + 1,
                   max_restarts, np, stat(ckpt, &st) == 0 ? ckpt : "the start (no checkpoint)");
        else
            printf("mpt-run: host %s failed to start: restart %d of %d on %d rank(s)\n",
                   v.failed_host, attempt + 1, max_restarts, np);
        fflush(stdout);
    }
    unlink(tmpl);
    free(args);
    free(extra_copy);
    free(w.hosts);
    return status;
}
