/*
 * tests/fuzz/fuzz_util.c: the scratch files and checks of fuzz_util.h.
 * Files are rewritten for every input (open, write, close): on tmpfs that
 * costs microseconds, and the readers see a real regular file, as they do
 * in use.  A memfd would do too, but the token reader decides the format
 * by the file name's ending, so names must be chosen freely.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_util.h"

static char scratch[4096];

void fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: property failed: %s\n", file, line, what);
    abort();
}

char *fuzz_text(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = '\0';
    }
    return s;
}

/* Removes the scratch directory and what the harnesses (or a reader's
 * temporary files) left in it; one level deep is all there is. */
static void remove_scratch(void)
{
    DIR *d = opendir(scratch);
    struct dirent *e;
    char path[8192];
    if (!d)
        return;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", scratch, e->d_name);
            unlink(path);
        }
    closedir(d);
    rmdir(scratch);
}

static void make_scratch(void)
{
    const char *base = getenv("TMPDIR");
    struct stat st;
    if (!base || !*base)
        base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                   ? "/dev/shm"
                   : "/tmp";
    snprintf(scratch, sizeof scratch, "%s/mpt-fuzz-XXXXXX", base);
    if (!mkdtemp(scratch)) {
        perror(scratch);
        abort();
    }
    atexit(remove_scratch);
}

const char *fuzz_file(const char *name, const uint8_t *data, size_t size, char *path,
                      size_t cap)
{
    if (!scratch[0])
        make_scratch();
    if ((size_t)snprintf(path, cap, "%s/%s", scratch, name) >= cap) {
        fprintf(stderr, "fuzz_file: %s/%s: name too long\n", scratch, name);
        abort();
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    size_t done = 0;
    while (fd >= 0 && done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    if (fd < 0 || done != size || close(fd) != 0) {
        perror(path);
        abort();
    }
    return path;
}
