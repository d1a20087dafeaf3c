/*
 * tests/fuzz/fuzz_tokens.c: libFuzzer harness for the token reader
 * (mpt_tokens_load, lib/train/tokens.c): llm.c shards, raw uint16 ".bin"
 * files and text.  The reader chooses by content and by the name's
 * ending, so the first input byte chooses the name (even: "tokens.bin",
 * odd: "tokens.txt") and the rest is the file.  An accepted set is then
 * split and cut into windows as training does.  Properties: every id is
 * below the set's vocabulary, and the windows' labels are the next token.
 */
#include <stdint.h>
#include <stdlib.h>

#include "mpt.h"
#include "fuzz_util.h"

#define CONTEXT 4
#define BATCH 3

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[4096];
    mpt_tokens_t *t = NULL, *train = NULL, *val = NULL;
    float x[BATCH * CONTEXT];
    int32_t y[BATCH * CONTEXT];
    if (size < 1)
        return 0;
    fuzz_file(data[0] % 2 ? "tokens.txt" : "tokens.bin", data + 1, size - 1, path, sizeof path);
    if (mpt_tokens_load(path, &t) != MPT_OK) {
        FUZZ_CHECK(t == NULL);
        return 0;
    }
    size_t count = mpt_tokens_count(t), vocab = mpt_tokens_vocab(t);
    FUZZ_CHECK(count > 0 && vocab >= 1 && vocab <= 65536);
    FUZZ_CHECK(mpt_tokens_check_vocab(t, vocab) == MPT_OK);
    FUZZ_CHECK(mpt_tokens_split(t, 0.1, &train, &val) == MPT_OK);
    FUZZ_CHECK(mpt_tokens_count(train) + mpt_tokens_count(val) == count);
    if (mpt_tokens_batch(train, CONTEXT, BATCH, 1234, 5, x, y) == MPT_OK) {
        FUZZ_CHECK(mpt_tokens_count(train) > CONTEXT);
        for (int i = 0; i < BATCH * CONTEXT; i++)
            FUZZ_CHECK(x[i] >= 0 && x[i] < (float)vocab && y[i] >= 0 && (size_t)y[i] < vocab);
        for (int b = 0; b < BATCH; b++)
            for (int i = 0; i + 1 < CONTEXT; i++)
                FUZZ_CHECK((float)y[b * CONTEXT + i] == x[b * CONTEXT + i + 1]);
    }
    size_t windows = mpt_tokens_windows(t, CONTEXT);
    if (windows > 0)
        FUZZ_CHECK(mpt_tokens_sequential(t, CONTEXT, windows - 1, 1, x, y) == MPT_OK);
    FUZZ_CHECK(mpt_tokens_sequential(t, CONTEXT, windows, 1, x, y) != MPT_OK);
    mpt_tokens_free(val);
    mpt_tokens_free(train);
    mpt_tokens_free(t);
    return 0;
}
