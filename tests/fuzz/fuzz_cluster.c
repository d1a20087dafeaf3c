/*
 * tests/fuzz/fuzz_cluster.c: libFuzzer harness for the cluster reader
 * (lib/profile/cluster.c with the profile reader it calls).  The input is
 * the file's text; it is parsed by jansson as mpt_cluster_load does
 * (duplicate keys refused) and handed to mpt__cluster_from_json under a
 * file name whose directory does not exist, so that a relative
 * "topology_xml" resolves to nothing rather than to whatever lies in the
 * fuzzer's working directory.  Property: an accepted cluster writes JSON
 * (mpt_cluster_to_json) that reads back with the same device count.
 */
#include <stdint.h>
#include <stdlib.h>

#include "core/internal.h"
#include "profile/profile.h"
#include "fuzz_util.h"

#define WHERE "/nonexistent-mpt-fuzz/cluster.json"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t err;
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &err);
    json_t *root2 = NULL;
    mpt_cluster_t *c = NULL, *c2 = NULL;
    char *text = NULL;
    if (!root)
        return 0;
    if (mpt__cluster_from_json(root, WHERE, &c) == MPT_OK) {
        FUZZ_CHECK(c != NULL);
        FUZZ_CHECK(mpt_cluster_to_json(c, &text) == MPT_OK);
        root2 = json_loads(text, JSON_REJECT_DUPLICATES, &err);
        FUZZ_CHECK(root2 != NULL);
        FUZZ_CHECK(mpt__cluster_from_json(root2, WHERE, &c2) == MPT_OK);
        FUZZ_CHECK(mpt_cluster_device_count(c2) == mpt_cluster_device_count(c));
        FUZZ_CHECK(mpt_cluster_node_count(c2) == mpt_cluster_node_count(c));
    } else {
        FUZZ_CHECK(c == NULL);
    }
    mpt_cluster_free(c2);
    mpt_cluster_free(c);
    free(text);
    json_decref(root2);
    json_decref(root);
    return 0;
}
