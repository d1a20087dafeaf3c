/*
 * hello.c: a first program against an installed libmpt.  Lists the OpenCL
 * devices mpt sees (all of them, or those selected by MPT_DEVICES), then
 * round-trips 1 MiB through a buffer on device 0.
 *
 * Build:  cc hello.c $(pkg-config --cflags --libs mpt) -o hello
 * Exit status: 0 on success, 1 on failure (with the reason on stderr).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <mpt.h>

static int failed(const char *what, int status)
{
    const char *detail = mpt_last_error();
    fprintf(stderr, "hello: %s: %s\n", what, *detail ? detail : mpt_strerror(status));
    return 1;
}

int main(void)
{
    enum { BYTES = 1 << 20 };
    mpt_devices_t *set = NULL;
    mpt_buffer_t *buf = NULL;
    uint32_t *pattern = NULL, *back = NULL;
    const size_t words = BYTES / sizeof(uint32_t);
    int status, rc = 1;

    printf("mpt %s\n", mpt_version());

    if ((status = mpt_devices_open(NULL, &set)) != MPT_OK)
        return failed("opening devices", status);
    printf("%zu of %zu device(s) opened\n", mpt_devices_count(set), mpt_devices_total(set));
    for (size_t i = 0; i < mpt_devices_count(set); i++) {
        const mpt_device_info_t *info = mpt_device_info(mpt_devices_get(set, i));
        printf("  device %d: %s, %.1f MiB global memory\n", info->index, info->name,
               (double)info->global_mem_bytes / (1024.0 * 1024.0));
    }

    mpt_device_t *dev = mpt_devices_get(set, 0);
    if (!dev) {
        fprintf(stderr, "hello: no device opened\n");
        goto out;
    }
    if ((status = mpt_buffer_create(dev, BYTES, &buf)) != MPT_OK) {
        rc = failed("creating a 1 MiB buffer on device 0", status);
        goto out;
    }
    pattern = malloc(BYTES);
    back = calloc(words, sizeof *back);
    if (!pattern || !back) {
        fprintf(stderr, "hello: out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < words; i++)
        pattern[i] = (uint32_t)(i * 2654435761u) ^ 0xA5A5A5A5u;
    if ((status = mpt_buffer_write(buf, 0, pattern, BYTES)) != MPT_OK) {
        rc = failed("writing the buffer", status);
        goto out;
    }
    if ((status = mpt_buffer_read(buf, 0, back, BYTES)) != MPT_OK) {
        rc = failed("reading the buffer back", status);
        goto out;
    }
    for (size_t i = 0; i < words; i++) {
        if (back[i] != pattern[i]) {
            fprintf(stderr, "hello: word %zu read back as 0x%08x, wrote 0x%08x\n", i,
                    (unsigned)back[i], (unsigned)pattern[i]);
            goto out;
        }
    }
    printf("1 MiB written to device 0 and read back intact\n");
    rc = 0;

out:
    free(back);
    free(pattern);
    mpt_buffer_free(buf);
    mpt_devices_free(set);
    return rc;
}
