/*
 * tests/fuzz/fuzz_util.h: what the libFuzzer harnesses share: a scratch
 * directory for readers that take a path, a NUL-terminated copy of the
 * input for readers that take text, and a check that stops the run (a
 * finding) when a property fails.  Test code only, never in libmpt.
 */
#ifndef MPT_FUZZ_UTIL_H
#define MPT_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The input as a C string (freed by the caller); NULL when out of memory. */
char *fuzz_text(const uint8_t *data, size_t size);

/* Writes data to "<scratch dir>/<name>" (replacing it) and returns that
 * path, kept in path[cap] (4096 bytes are plenty); the directory is
 * made once per process (mkdtemp under $TMPDIR, else /dev/shm or /tmp)
 * and removed at exit.  Aborts when the file cannot be written: that is
 * the machine, not the reader under test. */
const char *fuzz_file(const char *name, const uint8_t *data, size_t size, char *path,
                      size_t cap);

/* Aborts with a message naming the property: libFuzzer records the input. */
#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            fuzz_fail(__FILE__, __LINE__, #cond);                              \
    } while (0)
void fuzz_fail(const char *file, int line, const char *what) __attribute__((noreturn));

#endif
