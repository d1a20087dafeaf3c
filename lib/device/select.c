/*
 * device/select.c: what one item of a device selection (MPT_DEVICES,
 * --devices) means: an index, a range of indices, or a word naming a type
 * or a driver family.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "device/device.h"

static int parse_index(const char *s, const char *end, long *out)
{
    char *stop;
    if (s == end || !isdigit((unsigned char)*s))
        return 0;
    *out = strtol(s, &stop, 10);
    return stop == end;
}

int mpt__device_matches(const mpt_device_info_t *info, const char *item, int *match)
{
    static const struct {
        const char *word;
        mpt_device_type_t type;
    } types[] = {{"gpu", MPT_DEVICE_GPU},
                 {"cpu", MPT_DEVICE_CPU},
                 {"accelerator", MPT_DEVICE_ACCELERATOR}};
    static const char *vendors[] = {"nvidia", "amd", "intel", "pocl"};
    const char *end = item + strlen(item);
    const char *dash = strchr(item, '-');
    long lo, hi;

    *match = 0;
    if (parse_index(item, end, &lo)) {
        *match = info->index == lo;
        return MPT_OK;
    }
    if (dash && parse_index(item, dash, &lo) && parse_index(dash + 1, end, &hi) && lo <= hi) {
        *match = info->index >= lo && info->index <= hi;
        return MPT_OK;
    }
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(item, types[i].word) == 0) {
            *match = info->type == types[i].type;
            return MPT_OK;
        }
    for (size_t i = 0; i < sizeof vendors / sizeof vendors[0]; i++)
        if (strcasecmp(item, vendors[i]) == 0) {
            *match = strcmp(info->vendor_word, vendors[i]) == 0;
            return MPT_OK;
        }
    return mpt__fail(MPT_ERR_PARSE,
                     "device selection item '%s' is not an index, a range (0-3) or one of "
                     "gpu, cpu, accelerator, nvidia, amd, intel, pocl",
                     item);
}
